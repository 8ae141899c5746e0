//! Decoders never panic on arbitrary bytes or text, and encodings round-trip exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use communalia_ledger::fixtures::Village;
use communalia_ledger::{Day, Entry, Hash, MemStore, Millis, Params};
use proptest::prelude::*;

fn sample_entries() -> &'static [Vec<u8>] {
    static SAMPLES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SAMPLES.get_or_init(build_samples)
}

fn build_samples() -> Vec<Vec<u8>> {
    let d = Day::parse("2026-05-01").unwrap();
    let (mut l, v) = Village::found(MemStore::default(), "fuzz", 5, Params::default(), d).unwrap();
    v.traffic(&mut l, 80, d).unwrap();
    l.store().records.iter().map(|r| r.bytes.clone()).collect()
}

#[test]
fn every_stored_entry_round_trips_through_its_encoding() {
    for bytes in sample_entries() {
        let e = Entry::decode(bytes).unwrap();
        assert_eq!(&e.encode(), bytes);
    }
}

#[test]
fn truncations_and_trailing_bytes_are_refused_with_a_position() {
    for bytes in sample_entries().iter().take(20) {
        for cut in 0..bytes.len() {
            let err = Entry::decode(&bytes[..cut]).unwrap_err();
            assert!(err.offset <= cut, "{err}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let err = Entry::decode(&longer).unwrap_err();
        assert_eq!(err.offset, bytes.len());
        assert!(err.to_string().contains("unexpected bytes"), "{err}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(e) = Entry::decode(&bytes) {
            // Whatever decodes is canonical: it re-encodes to the same bytes.
            prop_assert_eq!(e.encode(), bytes);
        }
    }

    #[test]
    fn mutated_entries_never_panic_and_stay_canonical(
        pick in 0_usize..80,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let all = sample_entries();
        let mut bytes = all[pick % all.len()].clone();
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        if let Ok(e) = Entry::decode(&bytes) {
            prop_assert_eq!(e.encode(), bytes);
        }
    }

    #[test]
    fn text_parsers_never_panic(text in ".{0,40}") {
        let _ = Day::parse(&text);
        let _ = Millis::parse(&text);
        let _ = Hash::from_hex(&text);
    }

    #[test]
    fn amounts_round_trip_through_text(m in any::<i64>()) {
        prop_assume!(m != i64::MIN);
        prop_assert_eq!(Millis::parse(&Millis(m).to_string()).unwrap(), Millis(m));
    }
}
