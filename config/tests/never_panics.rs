//! Whatever the bytes, the loader answers with a configuration or located errors, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

const VILLAGE_SITE: &str = include_str!("../examples/village/site.toml");
const VILLAGE_ASSEMBLY: &str = include_str!("../examples/village/assembly.toml");

fn run(site: Vec<u8>, assembly: Vec<u8>) -> Result<(), Vec<String>> {
    communalia_config::load("site.toml", site, move |_: &str| {
        Ok(("assembly.toml".to_owned(), assembly.clone()))
    })
    .map(|_| ())
    .map_err(|d| {
        assert!(
            !d.is_empty(),
            "an error result must carry at least one diagnostic"
        );
        d.iter()
            .map(|x| {
                assert!(x.line >= 1 && x.col >= 1, "positions are 1-based: {x}");
                x.to_string()
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_strings_never_panic(site in ".{0,400}", assembly in ".{0,400}") {
        let _ = run(site.into_bytes(), assembly.into_bytes());
    }

    #[test]
    fn arbitrary_bytes_never_panic(site in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = run(site, VILLAGE_ASSEMBLY.as_bytes().to_vec());
    }

    /// Small edits of a real file reach deep into validation rather than stopping at the syntax.
    #[test]
    fn edited_village_files_never_panic(
        at in 0usize..VILLAGE_SITE.len(),
        cut in 0usize..40,
        insert in "[a-z0-9 =\"\\[\\]{},.:_-]{0,12}",
        in_assembly in any::<bool>(),
    ) {
        let base = if in_assembly { VILLAGE_ASSEMBLY } else { VILLAGE_SITE };
        let mut at = at % base.len().max(1);
        while !base.is_char_boundary(at) { at -= 1; }
        let mut end = (at + cut).min(base.len());
        while !base.is_char_boundary(end) { end -= 1; }
        let edited = format!("{}{}{}", &base[..at], insert, &base[end..]);
        let (site, assembly) = if in_assembly {
            (VILLAGE_SITE.to_owned(), edited)
        } else {
            (edited, VILLAGE_ASSEMBLY.to_owned())
        };
        let _ = run(site.into_bytes(), assembly.into_bytes());
    }
}
