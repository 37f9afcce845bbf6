//! Replays the inputs of `fuzz/regressions/decode/` (hand-made hostile
//! records, and every crash `cargo +nightly fuzz run decode` ever found)
//! through the hot-path decoder: none may panic, each must be refused with a
//! reason, and anything accepted must re-encode to the same bytes.

use posture_avro::{encode_config_change, WireDecoder};

#[test]
fn fuzz_regressions_are_refused_without_panicking() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/regressions/decode");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("fuzz/regressions/decode") {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let decoder = WireDecoder::new(None);
        match decoder.decode(&bytes) {
            Err(e) => assert!(!e.reason().is_empty(), "{}: {e}", path.display()),
            Ok(ev) => {
                let again = encode_config_change(&ev, 1);
                let back = decoder.decode(&again).expect("re-encoded record decodes");
                assert_eq!(encode_config_change(&back, 1), again, "{}", path.display());
            }
        }
        n += 1;
    }
    assert!(n >= 5, "the regression corpus is there ({n} files)");
}

/// The fuzz target's seeds (`fuzz/seeds/decode/`, written by `fuzz/seeds/make_seeds.py`):
/// inventory-heavy records that decode, and that the engine then takes or refuses by its
/// inventory bounds and scope-name rules, never by panicking.
#[test]
fn inventory_heavy_seeds_decode_and_the_engine_bounds_them() {
    use posture_core::{Catalog, Engine, EngineConfig, Output, SourcePos};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds/decode");
    let catalog = std::sync::Arc::new(
        Catalog::from_sources(&[(
            "seeds.yaml",
            "baseline: s\nversion: 1\ncontrols:\n  - { id: fw, title: F, category: network, points: 10, check: { key: fw, op: eq, value: true } }\n",
        )])
        .unwrap(),
    );
    let mut seen = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("fuzz/seeds/decode") {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let ev = WireDecoder::new(None)
            .decode(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut engine = Engine::new(catalog.clone(), EngineConfig::default());
        let verdict = engine
            .apply(&ev, SourcePos::default(), &mut Output::default())
            .map(|_| "taken".to_string())
            .unwrap_or_else(|r| r.to_string());
        seen.insert(name, verdict);
    }
    let verdict = |name: &str| {
        seen.get(name)
            .unwrap_or_else(|| panic!("seed {name}: {seen:?}"))
            .clone()
    };
    assert!(verdict("groups_1000").contains("device.groups lists 1000 names"));
    assert!(verdict("tags_1000").contains("device.tags lists 1000 names"));
    assert_eq!(verdict("groups_at_limit"), "taken");
    assert_eq!(verdict("groups_repeated"), "taken");
    assert_eq!(verdict("no_hostname"), "taken");
    assert!(verdict("long_names").contains("more than 256"));
    assert!(verdict("bad_group_names").contains("is empty"));
    assert!(verdict("reserved_tenant").contains("is reserved"));
}
