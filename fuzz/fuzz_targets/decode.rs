//! Fuzz the hot-path Avro decoder with arbitrary record bytes (Confluent
//! wire format). It must never panic or allocate without bound; whatever it
//! accepts must re-encode to a record that decodes to the same event, and
//! applying it to an engine (inventory bounds, group names, interning) must
//! not panic either.
//!
//!     cargo +nightly fuzz run decode fuzz/corpus/decode fuzz/seeds/decode -- -max_total_time=60
//!
//! `fuzz/seeds/decode/` holds inventory-heavy records (a thousand groups,
//! long and repeated names, control characters, the reserved name) to start
//! from. A crash found here goes into fuzz/regressions/decode/, which
//! `cargo test -p posture-avro --test fuzz_regressions` replays.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posture_avro::{encode_config_change, WireDecoder};
use posture_core::{Catalog, Engine, EngineConfig, Output, SourcePos};
use std::sync::{Arc, OnceLock};

const BASELINE: &str = "baseline: fuzz\nversion: 1\ncontrols:\n  - { id: fw, title: Firewall, category: network, points: 10, check: { key: fw, op: eq, value: true }, applies_to: { groups: [g1] } }\n  - { id: os, title: OS, category: os, points: 5, check: { key: v, op: ge, value: 10 }, applies_to: { os_family: [windows] } }\n";

fn catalog() -> Arc<Catalog> {
    static CATALOG: OnceLock<Arc<Catalog>> = OnceLock::new();
    CATALOG
        .get_or_init(|| Arc::new(Catalog::from_sources(&[("fuzz.yaml", BASELINE)]).expect("the fuzz baseline")))
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let decoder = WireDecoder::new(None);
    if let Ok(ev) = decoder.decode(data) {
        // Compared as bytes: a NaN double is not equal to itself.
        let again = encode_config_change(&ev, 1);
        let back = decoder.decode(&again).expect("a decoded event re-encodes to a decodable record");
        assert_eq!(encode_config_change(&back, 1), again);
        // Twice: the second time the inventory is looked up among the interned ones.
        let mut engine = Engine::new(catalog(), EngineConfig::default());
        let mut out = Output::default();
        let _ = engine.apply(&ev, SourcePos::default(), &mut out);
        let mut later = ev;
        later.sequence = later.sequence.saturating_add(1);
        later.observed_at = later.observed_at.saturating_add(1);
        out.clear();
        let _ = engine.apply(&later, SourcePos::default(), &mut out);
    }
});
