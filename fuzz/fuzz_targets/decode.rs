//! Fuzz the hot-path Avro decoder with arbitrary record bytes (Confluent
//! wire format). It must never panic or allocate without bound; whatever it
//! accepts must re-encode to a record that decodes to the same event.
//!
//!     cargo +nightly fuzz run decode -- -max_total_time=60
//!
//! A crash found here goes into fuzz/regressions/decode/, which
//! `cargo test -p posture-avro --test fuzz_regressions` replays.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posture_avro::{encode_config_change, WireDecoder};

fuzz_target!(|data: &[u8]| {
    let decoder = WireDecoder::new(None);
    if let Ok(ev) = decoder.decode(data) {
        // Compared as bytes: a NaN double is not equal to itself.
        let again = encode_config_change(&ev, 1);
        let back = decoder.decode(&again).expect("a decoded event re-encodes to a decodable record");
        assert_eq!(encode_config_change(&back, 1), again);
    }
});
