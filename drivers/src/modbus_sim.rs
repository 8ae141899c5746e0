//! A Modbus TCP simulator server (tokio-modbus) that hosts any simulated register device and
//! can be told to fail: stay silent, answer exceptions, answer garbage, or go offline.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_modbus::server::tcp::Server;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

/// Which register table a read addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Holding registers (function 0x03).
    Holding,
    /// Input registers (function 0x04).
    Input,
}

/// A simulated device behind the server. `Err` carries a Modbus exception code.
pub trait SimDevice: Send + 'static {
    /// Advances the device's own dynamics to `now` (called before each request).
    fn tick(&mut self, now: Instant);
    /// Reads registers.
    fn read(&mut self, table: Table, address: u16, count: u16) -> Result<Vec<u16>, u8>;
    /// Writes registers (holding table).
    fn write(&mut self, address: u16, words: &[u16], now: Instant) -> Result<(), u8>;
}

/// How the simulator misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Behaves.
    #[default]
    None,
    /// Receives requests and never answers (the client times out).
    Silent,
    /// Answers every request with this exception code.
    Exception(u8),
    /// Answers reads with the wrong number of registers.
    Garbage,
}

struct Shared<D> {
    device: D,
    fault: Fault,
    unit: u8,
    requests: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct SimService<D> {
    shared: Arc<Mutex<Shared<D>>>,
}

impl<D: SimDevice> SimService<D> {
    fn handle(&self, req: SlaveRequest<'static>) -> Result<Option<Response>, ExceptionCode> {
        let mut s = lock(&self.shared);
        s.requests += 1;
        if req.slave != s.unit && req.slave != 255 {
            return Err(ExceptionCode::GatewayTargetDevice);
        }
        match s.fault {
            Fault::Silent => return Ok(None),
            Fault::Exception(code) => return Err(ExceptionCode::new(code)),
            Fault::None | Fault::Garbage => {}
        }
        let garbage = s.fault == Fault::Garbage;
        let now = tokio::time::Instant::now().into_std();
        s.device.tick(now);
        let mangle = |mut v: Vec<u16>| {
            if garbage {
                if v.len() > 1 {
                    v.truncate(v.len() / 2)
                } else {
                    v.push(0xDEAD)
                }
            }
            v
        };
        let code = ExceptionCode::new;
        let resp = match req.request {
            Request::ReadHoldingRegisters(a, n) => Response::ReadHoldingRegisters(mangle(
                s.device.read(Table::Holding, a, n).map_err(code)?,
            )),
            Request::ReadInputRegisters(a, n) => Response::ReadInputRegisters(mangle(
                s.device.read(Table::Input, a, n).map_err(code)?,
            )),
            Request::WriteSingleRegister(a, w) => {
                s.device.write(a, &[w], now).map_err(code)?;
                Response::WriteSingleRegister(a, w)
            }
            Request::WriteMultipleRegisters(a, words) => {
                s.device.write(a, &words, now).map_err(code)?;
                Response::WriteMultipleRegisters(a, u16::try_from(words.len()).unwrap_or(0))
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        Ok(Some(resp))
    }
}

impl<D: SimDevice> tokio_modbus::server::Service for SimService<D> {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        std::future::ready(self.handle(req))
    }
}

/// Access to a running simulator's device from elsewhere; see [`ModbusSim::device_handle`].
pub struct DeviceHandle<D: SimDevice> {
    shared: Arc<Mutex<Shared<D>>>,
}

impl<D: SimDevice> Clone for DeviceHandle<D> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<D: SimDevice> DeviceHandle<D> {
    /// Runs `f` on the simulated device.
    pub fn with_device<R>(&self, f: impl FnOnce(&mut D) -> R) -> R {
        f(&mut lock(&self.shared).device)
    }
}

/// A running simulator: a real TCP listener speaking Modbus TCP.
pub struct ModbusSim<D: SimDevice> {
    shared: Arc<Mutex<Shared<D>>>,
    addr: SocketAddr,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl<D: SimDevice> std::fmt::Debug for ModbusSim<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusSim")
            .field("addr", &self.addr)
            .finish()
    }
}

impl<D: SimDevice> ModbusSim<D> {
    /// Starts serving `device` for `unit` on `addr` (use port 0 for a free port).
    pub async fn start(device: D, unit: u8, addr: SocketAddr) -> std::io::Result<Self> {
        let shared = Arc::new(Mutex::new(Shared {
            device,
            fault: Fault::None,
            unit,
            requests: 0,
        }));
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mut sim = Self {
            shared,
            addr,
            running: None,
        };
        sim.serve(listener);
        Ok(sim)
    }

    fn serve(&mut self, listener: TcpListener) {
        let (tx, rx) = oneshot::channel::<()>();
        let shared = Arc::clone(&self.shared);
        let task = tokio::spawn(async move {
            let server = Server::new(listener);
            let on_connected = move |stream, _addr| {
                let service = SimService {
                    shared: Arc::clone(&shared),
                };
                async move { Ok(Some((service, stream))) }
            };
            let on_error = |err| tracing::debug!(error = %err, "modbus sim connection ended");
            let stop = async move {
                let _ = rx.await;
            };
            if let Err(e) = server.serve_until(&on_connected, on_error, stop).await {
                tracing::warn!(error = %e, "modbus sim stopped");
            }
        });
        self.running = Some((tx, task));
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port` for a [`crate::modbus::ModbusConfig`].
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Sets the fault mode.
    pub fn set_fault(&self, fault: Fault) {
        lock(&self.shared).fault = fault;
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        lock(&self.shared).requests
    }

    /// Runs `f` on the simulated device.
    pub fn with_device<R>(&self, f: impl FnOnce(&mut D) -> R) -> R {
        f(&mut lock(&self.shared).device)
    }

    /// A cheap handle to the simulated device, for a task that drives it (e.g. a physics loop)
    /// while the simulator itself stays with its owner.
    pub fn device_handle(&self) -> DeviceHandle<D> {
        DeviceHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Goes offline: closes the listener and every connection (clients see resets and refusals).
    pub async fn stop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            let _ = task.await;
        }
    }

    /// Comes back on the same address after [`Self::stop`] (a device restart).
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }
}

impl<D: SimDevice> Drop for ModbusSim<D> {
    fn drop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            task.abort();
        }
    }
}
