//! The InfluxDB 2 writer: a task that sends the cycle's line-protocol lines in batches, and keeps
//! them in the on-disk buffer, in order, while the database is away.
//!
//! The cycle calls [`InfluxSink::push`], which only appends to a bounded in-memory queue and
//! wakes the task: it never waits on the network or the disk. The task sends what the disk buffer
//! holds first (oldest segment first), then what is in memory, `batch_points` lines per request.
//! When a write fails for a reason worth retrying (the database is down, slow, or refuses the
//! token), the batch and everything after it go to the disk buffer, and the task retries with a
//! growing delay; while the disk buffer is not empty, new lines join it at the end, so they
//! arrive in the order they were pushed. Beyond `buffer_max_points` the oldest lines are dropped,
//! counted ([`schema::POINTS_DROPPED`](super::schema::POINTS_DROPPED)) and logged. A batch the
//! database refuses as malformed (HTTP 400, 413, 422) would be refused forever: it is dropped,
//! counted and logged as an error.
//!
//! [`InfluxSink::shutdown`] sends what is in memory when the database is up and the disk buffer
//! empty, and otherwise leaves it on disk, where the next start finds it and sends it first.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::buffer::DiskBuffer;

/// At most this many lines wait in memory for the writer task (should the task be stalled);
/// beyond it the oldest are dropped and counted.
const MEMORY_MAX_POINTS: u64 = 50_000;

/// Everything the writer needs; see [`InfluxSettings::new`] for the defaults.
#[derive(Clone, PartialEq, Eq)]
pub struct InfluxSettings {
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    pub org: String,
    pub bucket: String,
    /// The API token itself (see [`resolve_token`]); empty sends no `Authorization` header.
    pub token: String,
    /// Where lines wait while the database is away.
    pub buffer_dir: PathBuf,
    /// Bound of the disk buffer, in lines; beyond it the oldest are dropped.
    pub buffer_max_points: u64,
    /// Lines per write request (and per buffer segment).
    pub batch_points: usize,
    /// How often lines waiting in memory are written, when fewer than a batch are waiting.
    pub flush_interval: Duration,
    /// Longest wait for one write request.
    pub request_timeout: Duration,
    /// Longest delay between two attempts while the database is away (the delay starts at
    /// `flush_interval` and doubles).
    pub retry_max: Duration,
}

impl std::fmt::Debug for InfluxSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxSettings")
            .field("url", &self.url)
            .field("org", &self.org)
            .field("bucket", &self.bucket)
            .field("token", &"<hidden>")
            .field("buffer_dir", &self.buffer_dir)
            .field("buffer_max_points", &self.buffer_max_points)
            .field("batch_points", &self.batch_points)
            .field("flush_interval", &self.flush_interval)
            .field("request_timeout", &self.request_timeout)
            .field("retry_max", &self.retry_max)
            .finish()
    }
}

impl InfluxSettings {
    /// Settings with the site file's defaults (500 points per batch, a 1,000,000-line buffer),
    /// a 1 s flush interval, a 10 s request timeout and retries at most 30 s apart. Made for
    /// command-line flags (`communalia demo --influxdb-url ...`).
    pub fn new(
        url: impl Into<String>,
        org: impl Into<String>,
        bucket: impl Into<String>,
        token: impl Into<String>,
        buffer_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            url: url.into(),
            org: org.into(),
            bucket: bucket.into(),
            token: token.into(),
            buffer_dir: buffer_dir.into(),
            buffer_max_points: 1_000_000,
            batch_points: 500,
            flush_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            retry_max: Duration::from_secs(30),
        }
    }

    /// Settings from the site file's `[influxdb]` table, with the token already resolved and a
    /// relative `buffer_dir` taken from `base_dir` (the site file's folder).
    pub fn from_config(cfg: &communalia_config::Influxdb, token: String, base_dir: &Path) -> Self {
        let mut s = Self::new(
            cfg.url.clone(),
            cfg.org.clone(),
            cfg.bucket.clone(),
            token,
            base_dir.join(&cfg.buffer_dir),
        );
        s.batch_points = usize::try_from(cfg.batch_points).unwrap_or(500);
        s.buffer_max_points = cfg.buffer_max_points;
        s
    }
}

/// Why the token could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the influxdb token file {path}: {error}")]
    File {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the influxdb token file {path} is empty")]
    EmptyFile { path: PathBuf },
    #[error("the environment variable {name} (influxdb.token_env) is not set or not unicode")]
    EnvMissing { name: String },
    #[error("the environment variable {name} (influxdb.token_env) is empty")]
    EnvEmpty { name: String },
}

/// Reads the token the site file names: from a file (relative paths from `base_dir`, the site
/// file's folder; surrounding whitespace trimmed) or from an environment variable.
pub fn resolve_token(
    token: &communalia_config::Token,
    base_dir: &Path,
) -> Result<String, TokenError> {
    match token {
        communalia_config::Token::File(name) => {
            let path = base_dir.join(name);
            let text = std::fs::read_to_string(&path).map_err(|error| TokenError::File {
                path: path.clone(),
                error,
            })?;
            let t = text.trim();
            if t.is_empty() {
                return Err(TokenError::EmptyFile { path });
            }
            Ok(t.to_owned())
        }
        communalia_config::Token::Env(name) => {
            let v =
                std::env::var(name).map_err(|_| TokenError::EnvMissing { name: name.clone() })?;
            let t = v.trim();
            if t.is_empty() {
                return Err(TokenError::EnvEmpty { name: name.clone() });
            }
            Ok(t.to_owned())
        }
    }
}

/// Why the writer could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid influxdb url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot build the http client: {0}")]
    Client(String),
    #[error("cannot open the time-series buffer in {dir}: {error}")]
    Buffer { dir: PathBuf, error: std::io::Error },
}

/// Counts for `/metrics` and the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Lines the database accepted, since start.
    pub sent: u64,
    /// Lines waiting (in memory or on disk).
    pub buffered: u64,
    /// Lines dropped since start: the buffer was full, or the database refused them as malformed.
    pub dropped: u64,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    buffered_task: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Pending {
    lines: VecDeque<String>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Set by `shutdown`: a long drain of the disk buffer stops early, the rest stays on disk.
    stopping: AtomicBool,
    wake: Notify,
    counts: Counts,
    pending_max: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Handle to the writer task; see the module documentation.
pub struct InfluxSink {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for InfluxSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxSink")
            .field("stats", &self.stats())
            .finish()
    }
}

impl InfluxSink {
    /// Opens the disk buffer (lines an earlier run left there are sent first) and starts the
    /// writer task on the current tokio runtime.
    pub fn spawn(cfg: InfluxSettings) -> Result<InfluxSink, SinkError> {
        let client = build_client(&cfg)?;
        let batch = cfg.batch_points.max(1);
        let disk = DiskBuffer::open(&cfg.buffer_dir, cfg.buffer_max_points, batch as u64).map_err(
            |error| SinkError::Buffer {
                dir: cfg.buffer_dir.clone(),
                error,
            },
        )?;
        if !disk.is_empty() {
            tracing::info!(
                points = disk.len(),
                dir = %cfg.buffer_dir.display(),
                "time-series buffer holds points from an earlier run: sending them first"
            );
        }
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            stopping: AtomicBool::new(false),
            wake: Notify::new(),
            counts: Counts::default(),
            pending_max: cfg.buffer_max_points.clamp(1, MEMORY_MAX_POINTS),
        });
        shared
            .counts
            .buffered_task
            .store(disk.len(), Ordering::Relaxed);
        shared
            .counts
            .dropped
            .store(disk.dropped(), Ordering::Relaxed);
        let (stop_tx, stop_rx) = oneshot::channel();
        let writer = Writer {
            shared: Arc::clone(&shared),
            client,
            org: cfg.org.clone(),
            bucket: cfg.bucket.clone(),
            disk,
            mem: VecDeque::new(),
            batch,
            timeout: cfg.request_timeout,
            flush_interval: cfg.flush_interval.max(Duration::from_millis(10)),
            retry_max: cfg.retry_max.max(cfg.flush_interval),
            retry_delay: cfg.flush_interval,
            next_attempt: Instant::now(),
            down: false,
            disk_failing: false,
        };
        let task = tokio::spawn(writer.run(stop_rx));
        Ok(InfluxSink {
            shared,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// Queues lines for writing; never waits. Lines containing a newline are written as one.
    pub fn push(&self, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        let dropped = {
            let mut p = lock(&self.shared.pending);
            p.lines.extend(lines);
            let over = (p.lines.len() as u64).saturating_sub(self.shared.pending_max);
            p.lines.drain(..usize::try_from(over).unwrap_or(usize::MAX));
            over
        };
        if dropped > 0 {
            self.shared
                .counts
                .dropped
                .fetch_add(dropped, Ordering::Relaxed);
            tracing::warn!(
                points = dropped,
                "time-series writer is behind: dropped the oldest points waiting in memory"
            );
        }
        self.shared.wake.notify_one();
    }

    /// Lines sent, waiting and dropped.
    pub fn stats(&self) -> SinkStats {
        let c = &self.shared.counts;
        let pending = lock(&self.shared.pending).lines.len() as u64;
        SinkStats {
            sent: c.sent.load(Ordering::Relaxed),
            buffered: c.buffered_task.load(Ordering::Relaxed) + pending,
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }

    /// Stops the task: what is waiting in memory is written when the database is up and the disk
    /// buffer is empty, otherwise it is left on disk for the next start.
    pub async fn shutdown(mut self) -> SinkStats {
        self.shared.stopping.store(true, Ordering::Relaxed);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "time-series writer task failed");
        }
        self.stats()
    }
}

impl Drop for InfluxSink {
    fn drop(&mut self) {
        // Dropping the stop sender tells the task to save what it holds and end.
        self.stop.take();
    }
}

fn build_client(cfg: &InfluxSettings) -> Result<influxdb2::Client, SinkError> {
    let bad = |reason: &str| SinkError::Url {
        url: cfg.url.clone(),
        reason: reason.to_owned(),
    };
    // influxdb2's builder panics on a URL it cannot parse: check it first.
    let parsed = url::Url::parse(&cfg.url).map_err(|e| bad(&e.to_string()))?;
    if parsed.scheme() != "http" {
        // Built without TLS: see the site file's `[influxdb] url`.
        return Err(bad(
            "the scheme must be http (this build has no TLS for InfluxDB)",
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    influxdb2::ClientBuilder::new(cfg.url.clone(), cfg.org.clone(), cfg.token.clone())
        .build()
        .map_err(|e| SinkError::Client(e.to_string()))
}

/// What a failed write means for the batch.
enum Failure {
    /// The database is away or refuses us for now: keep the batch and retry.
    Retry(String),
    /// The database will never take this batch: drop it.
    Refused(String),
}

struct Writer {
    shared: Arc<Shared>,
    client: influxdb2::Client,
    org: String,
    bucket: String,
    disk: DiskBuffer,
    /// Lines taken from `pending`, oldest first, not yet sent or saved.
    mem: VecDeque<String>,
    batch: usize,
    timeout: Duration,
    flush_interval: Duration,
    retry_max: Duration,
    retry_delay: Duration,
    next_attempt: Instant,
    down: bool,
    disk_failing: bool,
}

impl Writer {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(self.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let timed = tokio::select! {
                _ = &mut stop => break,
                _ = self.shared.wake.notified() => false,
                _ = tick.tick() => true,
            };
            self.take_pending();
            if timed || self.mem.len() >= self.batch || !self.disk.is_empty() {
                self.flush(false).await;
            }
        }
        self.take_pending();
        self.flush(true).await;
        if !self.mem.is_empty() {
            tracing::error!(
                points = self.mem.len(),
                "time-series points lost at shutdown: the disk buffer cannot be written"
            );
        }
        self.publish_buffered();
    }

    fn take_pending(&mut self) {
        let mut p = lock(&self.shared.pending);
        self.mem.extend(p.lines.drain(..));
        // Under the same lock as `stats` reads, so the lines are never counted nowhere.
        self.publish_buffered();
    }

    fn publish_buffered(&self) {
        self.shared
            .counts
            .buffered_task
            .store(self.disk.len() + self.mem.len() as u64, Ordering::Relaxed);
    }

    fn count_dropped(&self, n: u64) {
        self.shared.counts.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Sends the disk buffer, then memory; saves memory to disk when that cannot be done now.
    /// At `last` (shutdown), only memory is sent, and only when the disk buffer is empty.
    async fn flush(&mut self, last: bool) {
        let may_send = last || Instant::now() >= self.next_attempt;
        if may_send && !last {
            self.send_disk().await;
        }
        if may_send && self.disk.is_empty() {
            self.send_mem().await;
        }
        if !self.mem.is_empty() && (self.down || !self.disk.is_empty() || last) {
            self.save_mem();
        }
        self.publish_buffered();
    }

    async fn send_disk(&mut self) {
        while !self.shared.stopping.load(Ordering::Relaxed) {
            let (seq, text) = match self.disk.oldest() {
                Ok(Some(x)) => x,
                Ok(None) => return,
                Err(e) => {
                    self.disk_error(&e);
                    return;
                }
            };
            let n = text.lines().count() as u64;
            let result = if n == 0 {
                Ok(())
            } else {
                self.write(text).await
            };
            match result {
                Ok(()) => {
                    self.sent(n);
                }
                Err(Failure::Refused(why)) => {
                    self.count_dropped(n);
                    tracing::error!(points = n, error = %why, "influxdb refused buffered points: dropped");
                }
                Err(Failure::Retry(why)) => {
                    self.failed(&why);
                    return;
                }
            }
            if let Err(e) = self.disk.remove_oldest(seq) {
                self.disk_error(&e);
                return;
            }
            // Lines pushed meanwhile join the end of the buffer, so memory stays small.
            self.take_pending();
            if self.mem.len() >= self.batch {
                self.save_mem();
            }
            self.publish_buffered();
        }
    }

    async fn send_mem(&mut self) {
        while !self.mem.is_empty() {
            let n = self.mem.len().min(self.batch);
            let mut body =
                String::with_capacity(self.mem.iter().take(n).map(|l| l.len() + 1).sum());
            for l in self.mem.iter().take(n) {
                body.push_str(&l.replace('\n', " "));
                body.push('\n');
            }
            match self.write(body).await {
                Ok(()) => self.sent(n as u64),
                Err(Failure::Refused(why)) => {
                    self.count_dropped(n as u64);
                    tracing::error!(points = n, error = %why, "influxdb refused points: dropped");
                }
                Err(Failure::Retry(why)) => {
                    self.failed(&why);
                    return;
                }
            }
            self.mem.drain(..n);
        }
    }

    fn save_mem(&mut self) {
        let lines: Vec<String> = self.mem.iter().cloned().collect();
        let dropped_before = self.disk.dropped();
        match self.disk.push(&lines) {
            Ok(()) => {
                self.mem.clear();
                if self.disk_failing {
                    self.disk_failing = false;
                    tracing::info!("time-series buffer writable again");
                }
            }
            Err(e) => {
                self.disk_error(&e);
                // Keep them in memory, within the bound, and try the disk again next time.
                let over = (self.mem.len() as u64).saturating_sub(self.shared.pending_max);
                if over > 0 {
                    self.mem
                        .drain(..usize::try_from(over).unwrap_or(usize::MAX));
                    self.count_dropped(over);
                    tracing::warn!(points = over, "time-series points dropped: buffer full");
                }
            }
        }
        let dropped = self.disk.dropped() - dropped_before;
        self.count_dropped(dropped);
    }

    fn disk_error(&mut self, e: &std::io::Error) {
        if !self.disk_failing {
            self.disk_failing = true;
            tracing::error!(error = %e, "time-series buffer: disk error");
        }
    }

    fn sent(&mut self, n: u64) {
        self.shared.counts.sent.fetch_add(n, Ordering::Relaxed);
        if self.down {
            self.down = false;
            tracing::info!("influxdb reachable again: sending buffered points");
        }
        self.retry_delay = self.flush_interval;
        self.next_attempt = Instant::now();
    }

    fn failed(&mut self, why: &str) {
        if !self.down {
            self.down = true;
            tracing::warn!(error = %why, "influxdb write failed: buffering points on disk");
        } else {
            tracing::debug!(error = %why, "influxdb still unreachable");
        }
        self.next_attempt = Instant::now() + self.retry_delay;
        self.retry_delay = (self.retry_delay * 2).min(self.retry_max);
    }

    async fn write(&self, body: String) -> Result<(), Failure> {
        let req = self.client.write_line_protocol_with_precision(
            &self.org,
            &self.bucket,
            body,
            influxdb2::api::write::TimestampPrecision::Nanoseconds,
        );
        match tokio::time::timeout(self.timeout, req).await {
            Err(_) => Err(Failure::Retry(format!(
                "no answer within {:?}",
                self.timeout
            ))),
            Ok(Ok(())) => Ok(()),
            Ok(Err(influxdb2::RequestError::Http { status, text })) => {
                let why = format!("http {status}: {}", text.trim());
                match status.as_u16() {
                    400 | 413 | 422 => Err(Failure::Refused(why)),
                    _ => Err(Failure::Retry(why)),
                }
            }
            Ok(Err(e)) => Err(Failure::Retry(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_comes_from_a_file_trimmed_or_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "  secret\n").unwrap();
        let t = communalia_config::Token::File("tok".into());
        assert_eq!(resolve_token(&t, dir.path()).unwrap(), "secret");
        let missing = communalia_config::Token::File("nope".into());
        let err = resolve_token(&missing, dir.path()).unwrap_err().to_string();
        assert!(err.contains("cannot read the influxdb token file"), "{err}");
        assert!(err.contains("nope"), "{err}");
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let empty = communalia_config::Token::File("empty".into());
        assert!(matches!(
            resolve_token(&empty, dir.path()),
            Err(TokenError::EmptyFile { .. })
        ));
    }

    #[test]
    fn a_missing_token_variable_is_named_in_the_error() {
        let t = communalia_config::Token::Env("COMMUNALIA_TEST_SURELY_UNSET_TOKEN".into());
        let err = resolve_token(&t, Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("COMMUNALIA_TEST_SURELY_UNSET_TOKEN"), "{err}");
    }

    #[tokio::test]
    async fn a_bad_url_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        for url in [
            "not a url",
            "ftp://x",
            "http://",
            "http://a b:1",
            "http://x:99999",
            // No TLS in this build: refused, never sent in clear.
            "https://db:8086",
        ] {
            let s = InfluxSettings::new(url, "o", "b", "", dir.path());
            assert!(
                matches!(InfluxSink::spawn(s), Err(SinkError::Url { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn settings_from_the_site_file_keep_its_batch_and_bound_and_place_the_buffer_beside_it() {
        let cfg = communalia_config::Influxdb {
            url: "http://db:8086".into(),
            org: "village".into(),
            bucket: "communalia".into(),
            token: communalia_config::Token::Env("T".into()),
            batch_points: 250,
            buffer_dir: "influxdb-buffer".into(),
            buffer_max_points: 1234,
        };
        let s = InfluxSettings::from_config(&cfg, "tok".into(), Path::new("/etc/communalia"));
        assert_eq!(s.url, "http://db:8086");
        assert_eq!(
            (s.org.as_str(), s.bucket.as_str()),
            ("village", "communalia")
        );
        assert_eq!(s.token, "tok");
        assert_eq!(s.batch_points, 250);
        assert_eq!(s.buffer_max_points, 1234);
        assert_eq!(
            s.buffer_dir,
            PathBuf::from("/etc/communalia/influxdb-buffer")
        );
        let abs = communalia_config::Influxdb {
            buffer_dir: "/var/lib/communalia/buf".into(),
            ..cfg
        };
        let s = InfluxSettings::from_config(&abs, String::new(), Path::new("/etc/communalia"));
        assert_eq!(s.buffer_dir, PathBuf::from("/var/lib/communalia/buf"));
    }

    #[test]
    fn the_token_is_not_shown_in_debug_output() {
        let s = InfluxSettings::new("http://x", "o", "b", "hunter2", "/tmp");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
