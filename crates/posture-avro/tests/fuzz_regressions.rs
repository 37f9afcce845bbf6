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
