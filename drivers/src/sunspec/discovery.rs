//! SunSpec discovery: find the "SunS" marker and walk the model chain, over any register reader.

use std::future::Future;

use crate::error::{DriverError, Result};

use super::decode::ModelBlock;

/// The "SunS" marker registers.
pub const SUNS_MARKER: [u16; 2] = [0x5375, 0x6E53];
/// Base addresses tried, in order.
pub const BASE_ADDRESSES: [u16; 3] = [40000, 0, 50000];
/// Most registers one read may ask for.
pub const MAX_READ: u16 = 125;
/// The end-of-chain model id.
pub const END_ID: u16 = 0xFFFF;
/// Chains longer than this are taken for garbage.
pub const MAX_MODELS: usize = 64;

/// Reads holding registers; implemented by the Modbus client and by test doubles.
pub trait RegisterReader: Send {
    /// Reads `count` (at most 125) holding registers from `address`.
    fn read_holding(
        &mut self,
        address: u16,
        count: u16,
    ) -> impl Future<Output = Result<Vec<u16>>> + Send;
}

/// One model in a device's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ModelEntry {
    /// Model id.
    pub id: u16,
    /// PDU address of its ID register.
    pub address: u16,
    /// L as the device reports it.
    pub len: u16,
}

/// A discovered SunSpec map.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SunSpecMap {
    /// Base address where "SunS" was found.
    pub base: u16,
    /// Models in chain order.
    pub models: Vec<ModelEntry>,
}

impl SunSpecMap {
    /// The first model whose id is one of `ids`.
    pub fn find(&self, ids: &[u16]) -> Option<ModelEntry> {
        self.models.iter().copied().find(|m| ids.contains(&m.id))
    }

    /// Model ids in chain order.
    pub fn ids(&self) -> Vec<u16> {
        self.models.iter().map(|m| m.id).collect()
    }
}

/// Finds the marker at 40000, 0 or 50000 and walks the chain to its end.
///
/// An illegal-address (or illegal-function/value) exception at a base means "not here" and the
/// next base is tried; any other exception or a transport failure ends discovery with it. The walk steps by the L the device reports and ends at
/// id 0xFFFF, at an address the device refuses, or at the end of the address space.
pub async fn discover<R: RegisterReader>(reader: &mut R) -> Result<SunSpecMap> {
    let mut refused = Vec::new();
    for base in BASE_ADDRESSES {
        match reader.read_holding(base, 2).await {
            Ok(regs) if regs.as_slice() == SUNS_MARKER => {
                let models = walk_chain(reader, base).await?;
                return Ok(SunSpecMap { base, models });
            }
            Ok(regs) if regs.len() != 2 => {
                return Err(DriverError::Malformed(format!(
                    "asked 2 registers at {base}, got {}",
                    regs.len()
                )));
            }
            Ok(_) => refused.push(format!("{base}: no marker")),
            // "Not here": the address or the function is not served at this base.
            Err(DriverError::Exception {
                code: code @ 0x01..=0x03,
            }) => {
                refused.push(format!("{base}: exception {code}"));
            }
            Err(e) => return Err(e),
        }
    }
    Err(DriverError::Layout(format!(
        "no SunSpec marker ({})",
        refused.join(", ")
    )))
}

async fn walk_chain<R: RegisterReader>(reader: &mut R, base: u16) -> Result<Vec<ModelEntry>> {
    let mut models = Vec::new();
    let mut address = u32::from(base) + 2;
    while address < u32::from(u16::MAX) {
        if models.len() >= MAX_MODELS {
            return Err(DriverError::Malformed(format!(
                "more than {MAX_MODELS} models"
            )));
        }
        let at = address as u16;
        let header = match reader.read_holding(at, 2).await {
            Ok(h) => h,
            // Some devices end the map without an end marker: the next read is refused.
            Err(DriverError::Exception { code: 0x02 }) if !models.is_empty() => break,
            Err(e) => return Err(e),
        };
        let [id, len] = header[..] else {
            return Err(DriverError::Malformed(format!(
                "model header at {at}: {} registers",
                header.len()
            )));
        };
        if id == END_ID || id == 0 {
            break;
        }
        if models.is_empty() && id != 1 {
            tracing::debug!(id, "sunspec map does not start with the common model");
        }
        models.push(ModelEntry {
            id,
            address: at,
            len,
        });
        address += 2 + u32::from(len);
    }
    if models.is_empty() {
        return Err(DriverError::Layout("SunSpec marker but no models".into()));
    }
    Ok(models)
}

/// Reads `count` registers from `address` in reads of at most 125 registers.
pub async fn read_range<R: RegisterReader>(
    reader: &mut R,
    address: u16,
    count: u16,
) -> Result<Vec<u16>> {
    let mut out = Vec::with_capacity(usize::from(count));
    let mut done: u16 = 0;
    while done < count {
        let n = (count - done).min(MAX_READ);
        let at = address
            .checked_add(done)
            .ok_or_else(|| DriverError::Layout("read past the end of the address space".into()))?;
        let regs = reader.read_holding(at, n).await?;
        if regs.len() != usize::from(n) {
            return Err(DriverError::Malformed(format!(
                "asked {n} registers at {at}, got {}",
                regs.len()
            )));
        }
        out.extend_from_slice(&regs);
        done += n;
    }
    Ok(out)
}

/// Reads a model block: its header and up to `max_points` registers after it (`None`: all L).
pub async fn read_model<R: RegisterReader>(
    reader: &mut R,
    entry: ModelEntry,
    max_points: Option<u16>,
) -> Result<ModelBlock> {
    let body = max_points.map_or(entry.len, |m| m.min(entry.len));
    let count = body.saturating_add(2);
    let regs = read_range(reader, entry.address, count).await?;
    if regs.first() != Some(&entry.id) {
        return Err(DriverError::Malformed(format!(
            "model {} moved: found id {:?} at {}",
            entry.id,
            regs.first(),
            entry.address
        )));
    }
    Ok(ModelBlock {
        id: entry.id,
        address: entry.address,
        regs,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// An in-memory register bank answering like a device would.
    #[derive(Default)]
    pub(crate) struct Bank {
        pub regs: BTreeMap<u16, u16>,
        pub reads: usize,
    }

    impl Bank {
        pub fn load(&mut self, at: u16, words: &[u16]) {
            for (i, w) in words.iter().enumerate() {
                self.regs.insert(at + i as u16, *w);
            }
        }
    }

    impl RegisterReader for Bank {
        async fn read_holding(&mut self, address: u16, count: u16) -> Result<Vec<u16>> {
            self.reads += 1;
            assert!(count <= MAX_READ, "read of {count} registers");
            (0..count)
                .map(|i| {
                    address
                        .checked_add(i)
                        .and_then(|a| self.regs.get(&a).copied())
                        .ok_or(DriverError::Exception { code: 2 })
                })
                .collect()
        }
    }

    fn device(base: u16, chain: &[(u16, u16)], end: bool) -> Bank {
        let mut bank = Bank::default();
        bank.load(base, &SUNS_MARKER);
        let mut at = base + 2;
        for (id, len) in chain {
            bank.load(at, &[*id, *len]);
            bank.load(at + 2, &vec![0u16; usize::from(*len)]);
            at += 2 + len;
        }
        if end {
            bank.load(at, &[0xFFFF, 0]);
        }
        bank
    }

    fn run<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn discovery_walks_the_chain_stepping_by_the_reported_length() {
        let mut bank = device(
            40000,
            &[(1, 66), (103, 50), (160, 48), (160, 48), (123, 24)],
            true,
        );
        let map = run(discover(&mut bank)).unwrap();
        assert_eq!(map.base, 40000);
        assert_eq!(map.ids(), vec![1, 103, 160, 160, 123]);
        assert_eq!(map.models[1].address, 40002 + 68);
        assert_eq!(map.models[2].address, 40070 + 52);
    }

    #[test]
    fn discovery_finds_maps_at_base_zero_and_fifty_thousand() {
        let mut bank = device(0, &[(1, 66), (101, 50)], true);
        assert_eq!(run(discover(&mut bank)).unwrap().base, 0);
        let mut bank = device(50000, &[(1, 66), (101, 50)], true);
        let map = run(discover(&mut bank)).unwrap();
        assert_eq!((map.base, map.ids()), (50000, vec![1, 101]));
    }

    #[test]
    fn a_longer_length_than_the_fixed_block_is_honoured() {
        let mut bank = device(40000, &[(1, 68), (103, 60)], true);
        let map = run(discover(&mut bank)).unwrap();
        assert_eq!(map.models[1].address, 40002 + 70);
        assert_eq!(map.models[1].len, 60);
    }

    #[test]
    fn a_chain_without_end_marker_ends_where_the_device_refuses_reads() {
        let mut bank = device(40000, &[(1, 66), (103, 50)], false);
        assert_eq!(run(discover(&mut bank)).unwrap().ids(), vec![1, 103]);
    }

    #[test]
    fn a_device_without_marker_is_a_layout_error_not_a_transport_error() {
        let mut bank = Bank::default();
        bank.load(40000, &[1, 2]);
        let err = run(discover(&mut bank)).unwrap_err();
        assert!(matches!(err, DriverError::Layout(_)), "{err:?}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn read_model_splits_long_models_into_reads_of_at_most_125_registers() {
        let mut bank = device(40000, &[(1, 66), (701, 153)], true);
        let map = run(discover(&mut bank)).unwrap();
        let e = map.find(&[701]).unwrap();
        let before = bank.reads;
        let block = run(read_model(&mut bank, e, None)).unwrap();
        assert_eq!(block.regs.len(), 155);
        assert_eq!(bank.reads - before, 2);
    }

    #[test]
    fn a_chain_that_runs_to_the_end_of_the_address_space_terminates() {
        let mut bank = Bank::default();
        bank.load(50000, &SUNS_MARKER);
        let mut at: u32 = 50002;
        while at + 1 < 65536 {
            bank.load(at as u16, &[7, 100]);
            at += 102;
        }
        // Either a bounded error or a bounded chain; never a hang or a panic.
        let _ = run(discover(&mut bank));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_register_contents_never_panic_discovery(words in proptest::collection::vec(proptest::prelude::any::<u16>(), 0..400)) {
            let mut bank = Bank::default();
            bank.load(40000, &SUNS_MARKER);
            bank.load(40002, &words);
            let _ = run(discover(&mut bank));
        }
    }
}
