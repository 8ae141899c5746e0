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

#[test]
fn a_meter_credit_keeps_its_first_encoding_without_a_source_and_names_its_source_otherwise() {
    use communalia_ledger::{Body, MemberId, MeterKind, Unsigned};
    let credit = |source: &str| Entry {
        unsigned: Unsigned {
            author: MemberId(1),
            seq: 1,
            prev: Hash::ZERO,
            date: Day::parse("2026-05-01").unwrap(),
            body: Body::MeterCredit {
                member: MemberId(2),
                kind: MeterKind::Shifted,
                wh: 1020,
                source: source.into(),
            },
        },
        signature: [0; 64],
        cosigners: Vec::new(),
    };
    let plain = credit("").encode();
    let named = credit("washer_amani 09:00-10:00").encode();
    // The source follows the same fields, behind its own kind.
    assert_eq!(
        named.len(),
        plain.len() + 4 + "washer_amani 09:00-10:00".len()
    );
    assert_eq!(Entry::decode(&plain).unwrap(), credit(""));
    assert_eq!(
        Entry::decode(&named).unwrap(),
        credit("washer_amani 09:00-10:00")
    );
    // An empty source behind kind 13 is not canonical: refused.
    // The body (kind, member, meter kind, watt-hours: 14 bytes) ends before the signature and
    // the co-signer count.
    let kind_at = plain.len() - 64 - 4 - 14;
    assert_eq!(plain[kind_at], 7);
    let mut odd = plain.clone();
    odd[kind_at] = 13;
    odd.splice(odd.len() - 64 - 4..odd.len() - 64 - 4, [0u8; 4]);
    assert!(Entry::decode(&odd).is_err());
}
