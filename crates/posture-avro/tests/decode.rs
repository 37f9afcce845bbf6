//! The hand-written ConfigChange decoder against apache-avro: identical results
//! on every valid encoding (including arrays written in several blocks, with
//! negative counts), no panic on any input, and the same accept/reject answer
//! on corrupt input except where the hand decoder is deliberately stricter.

use posture_avro::{
    decode_config_change_body, encode_config_change, reference, DecodeError, WireDecoder, DEFAULT_MAX_ARRAY_LEN,
};
use posture_core::{ChangeKind, ConfigChange, ConfigSource, DeviceInfo, Setting, Value};
use proptest::collection::vec;
use proptest::prelude::*;

/// apache-avro reserves `count` items for an array before reading them; on
/// garbage input that can be hundreds of millions. Cap it (process-wide, first
/// call wins) so the reference decoder cannot exhaust memory in these tests.
fn limit_apache() {
    apache_avro::util::max_allocation_bytes(1 << 20);
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z.]{0,12}",
        2 => any::<String>(),
        1 => "\\PC{0,40}",
        1 => "[a-z]{200,600}",
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Long),
        prop_oneof![any::<f64>(), Just(f64::NAN), Just(-0.0), Just(f64::NEG_INFINITY)].prop_map(Value::Double),
        text().prop_map(Value::String),
        vec(text(), 0..6).prop_map(Value::Array),
    ]
}

fn setting() -> impl Strategy<Value = Setting> {
    (text(), value()).prop_map(|(key, value)| Setting { key, value })
}

fn device() -> impl Strategy<Value = Option<DeviceInfo>> {
    proptest::option::of(
        (
            text(),
            text(),
            proptest::option::of(text()),
            vec(text(), 0..5),
            vec(text(), 0..4),
        )
            .prop_map(|(os_family, os_version, hostname, groups, tags)| DeviceInfo {
                os_family,
                os_version,
                hostname,
                groups,
                tags,
            }),
    )
}

fn event() -> impl Strategy<Value = ConfigChange> {
    let source = prop_oneof![
        Just(ConfigSource::Agent),
        Just(ConfigSource::GroupPolicy),
        Just(ConfigSource::Mdm),
        Just(ConfigSource::Intune),
        Just(ConfigSource::Scanner),
        Just(ConfigSource::Other),
    ];
    let kind = prop_oneof![
        Just(ChangeKind::Upsert),
        Just(ChangeKind::Remove),
        Just(ChangeKind::Snapshot),
        Just(ChangeKind::Retire),
    ];
    let settings = prop_oneof![4 => vec(setting(), 0..8), 1 => vec(setting(), 100..320)];
    (
        (text(), text(), text(), any::<i64>(), any::<i64>()),
        (source, kind, device(), settings),
    )
        .prop_map(
            |((event_id, tenant_id, device_id, observed_at, sequence), (source, kind, device, settings))| {
                ConfigChange {
                    event_id,
                    tenant_id,
                    device_id,
                    observed_at,
                    sequence,
                    source,
                    kind,
                    device,
                    settings,
                }
            },
        )
}

/// Events compared with doubles by bit pattern (NaN == NaN, -0.0 != 0.0).
fn canon(ev: &ConfigChange) -> String {
    let mut ev = ev.clone();
    for s in &mut ev.settings {
        if let Value::Double(d) = s.value {
            s.value = Value::String(format!("f64 bits {:016x}", d.to_bits()));
        }
    }
    format!("{ev:?}")
}

// --- an independent test encoder that writes arrays in several blocks ---------

fn zz(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push(0x80 | (z & 0x7f) as u8);
        z >>= 7;
    }
}

fn st(out: &mut Vec<u8>, s: &str) {
    zz(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// Blocks of at most `block` items; with `negative`, each block is written as
/// `-count, byte size, items` (what Java writers do with buffered blocks).
struct Blocked {
    block: usize,
    negative: bool,
}

impl Blocked {
    fn array<T>(&self, out: &mut Vec<u8>, items: &[T], f: impl Fn(&mut Vec<u8>, &T)) {
        for chunk in items.chunks(self.block) {
            let mut b = Vec::new();
            for it in chunk {
                f(&mut b, it);
            }
            if self.negative {
                zz(out, -(chunk.len() as i64));
                zz(out, b.len() as i64);
            } else {
                zz(out, chunk.len() as i64);
            }
            out.extend_from_slice(&b);
        }
        out.push(0);
    }

    fn strings(&self, out: &mut Vec<u8>, xs: &[String]) {
        self.array(out, xs, |o, s| st(o, s));
    }

    fn encode(&self, ev: &ConfigChange) -> Vec<u8> {
        let mut o = Vec::new();
        st(&mut o, &ev.event_id);
        st(&mut o, &ev.tenant_id);
        st(&mut o, &ev.device_id);
        zz(&mut o, ev.observed_at);
        zz(&mut o, ev.sequence);
        zz(&mut o, ev.source as i64);
        zz(&mut o, ev.kind as i64);
        match &ev.device {
            None => zz(&mut o, 0),
            Some(d) => {
                zz(&mut o, 1);
                st(&mut o, &d.os_family);
                st(&mut o, &d.os_version);
                match &d.hostname {
                    None => zz(&mut o, 0),
                    Some(h) => {
                        zz(&mut o, 1);
                        st(&mut o, h);
                    }
                }
                self.strings(&mut o, &d.groups);
                self.strings(&mut o, &d.tags);
            }
        }
        self.array(&mut o, &ev.settings, |o, s| {
            st(o, &s.key);
            match &s.value {
                Value::Null => zz(o, 0),
                Value::Bool(b) => {
                    zz(o, 1);
                    o.push(*b as u8);
                }
                Value::Long(n) => {
                    zz(o, 2);
                    zz(o, *n);
                }
                Value::Double(d) => {
                    zz(o, 3);
                    o.extend_from_slice(&d.to_le_bytes());
                }
                Value::String(x) => {
                    zz(o, 4);
                    st(o, x);
                }
                Value::Array(a) => {
                    zz(o, 5);
                    self.strings(o, a);
                }
            }
        });
        o
    }
}

/// Decodes `body` both ways. If the hand decoder accepts, apache-avro must
/// accept the same event; if apache-avro accepts and the hand decoder does not,
/// the reason must be one of its deliberate extra checks. Returns the hand
/// decoder's result.
fn agree(body: &[u8], cap: usize) -> Result<ConfigChange, DecodeError> {
    let hand = decode_config_change_body(body, cap);
    let refr = reference::decode_config_change_body(body);
    match (&hand, &refr) {
        (Ok(h), Ok(r)) => assert_eq!(canon(h), canon(r)),
        (Ok(h), Err(e)) => panic!("hand decoder accepted {h:?}, apache-avro rejected: {e}"),
        (Err(e), Ok(_)) => assert!(stricter(e), "apache-avro accepted, hand decoder rejected: {e}"),
        (Err(_), Err(_)) => {}
    }
    hand
}

/// The checks the hand decoder makes and apache-avro does not: varints longer
/// than 64 bits (apache-avro drops the extra bits), block byte sizes (apache-avro
/// ignores them) and the array cap.
fn stricter(e: &DecodeError) -> bool {
    match e {
        DecodeError::ArrayTooLong { .. } => true,
        DecodeError::Malformed { detail, .. } => {
            detail.contains("overflows 64 bits") || detail.contains("block byte size")
        }
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn hand_and_apache_decode_alike(ev in event(), block in 1usize..5, negative in any::<bool>(), id in any::<u32>()) {
        limit_apache();
        // apache-avro's encoding and ours are byte-identical.
        let ours = encode_config_change(&ev, id);
        let theirs = reference::encode_config_change(&ev, id).unwrap();
        prop_assert_eq!(&ours, &theirs);
        let want = canon(&ev);
        let dec = WireDecoder::new(Some(vec![id]));
        prop_assert_eq!(canon(&dec.decode(&theirs).unwrap()), want.clone());
        prop_assert_eq!(canon(&dec.decode_reference(&theirs).unwrap()), want.clone());
        // Several blocks per array, with positive or negative counts.
        let body = Blocked { block, negative }.encode(&ev);
        prop_assert_eq!(canon(&agree(&body, DEFAULT_MAX_ARRAY_LEN).unwrap()), want);
    }

    #[test]
    fn decoding_into_a_used_event_equals_a_fresh_decode(first in event(), second in event(), third in event()) {
        // The hot path reuses one event's strings and settings for every record: whatever the
        // previous record left there (longer or shorter settings, other value types, a device
        // or none, or a failed decode), the result is the fresh decode.
        let dec = WireDecoder::new(None);
        let mut reused = dec.decode(&encode_config_change(&first, 1)).unwrap();
        let mut corrupt = encode_config_change(&third, 1);
        corrupt.truncate(corrupt.len() / 2);
        let _ = dec.decode_into(&corrupt, &mut reused);
        for ev in [&second, &first, &third] {
            let wire = encode_config_change(ev, 1);
            dec.decode_into(&wire, &mut reused).unwrap();
            prop_assert_eq!(canon(&reused), canon(&dec.decode(&wire).unwrap()));
        }
    }

    #[test]
    fn garbage_never_panics_and_agrees(bytes in vec(any::<u8>(), 0..300)) {
        limit_apache();
        let _ = agree(&bytes, DEFAULT_MAX_ARRAY_LEN);
        let _ = WireDecoder::default().decode(&bytes);
    }

    #[test]
    fn corrupted_events_never_panic_and_agree(
        ev in event(),
        block in 1usize..4,
        negative in any::<bool>(),
        edits in vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..4),
    ) {
        limit_apache();
        let mut body = Blocked { block, negative }.encode(&ev);
        for (at, op, byte) in edits {
            if body.is_empty() {
                break;
            }
            let i = at.index(body.len());
            match op {
                0 => body[i] = byte,
                1 => body[i] ^= 1 << (byte % 8),
                2 => body.truncate(i),
                _ => body.insert(i, byte),
            }
        }
        let _ = agree(&body, DEFAULT_MAX_ARRAY_LEN);
        // A small cap turns long arrays into array_too_long, never a panic.
        let _ = agree(&body, 3);
    }
}

#[test]
fn bad_block_sizes_are_rejected_by_the_hand_decoder_only() {
    limit_apache();
    let ev = ConfigChange {
        event_id: "e".into(),
        tenant_id: "t".into(),
        device_id: "d".into(),
        observed_at: 0,
        sequence: 0,
        source: ConfigSource::Agent,
        kind: ChangeKind::Upsert,
        device: None,
        settings: vec![Setting {
            key: "k".into(),
            value: Value::Bool(true),
        }],
    };
    let mut body = Blocked {
        block: 1,
        negative: true,
    }
    .encode(&ev);
    assert_eq!(decode_config_change_body(&body, 10).unwrap(), ev);
    // 3 one-char strings (6 bytes), 5 one-byte fields (up to the device
    // union), then the block: count -1 (zig-zag 1), byte size 4 (zig-zag 8).
    assert_eq!(&body[11..13], &[1, 8]);
    body[12] = 6; // says 3 bytes, the block has 4
    let e = decode_config_change_body(&body, 10).unwrap_err();
    assert!(stricter(&e), "{e}");
    assert_eq!(reference::decode_config_change_body(&body).unwrap(), ev);
}

#[test]
fn strict_errors_name_the_problem() {
    let ev = ConfigChange {
        event_id: "é".into(),
        tenant_id: "t".into(),
        device_id: "d".into(),
        observed_at: 0,
        sequence: 0,
        source: ConfigSource::Agent,
        kind: ChangeKind::Upsert,
        device: None,
        settings: vec![],
    };
    let body = &encode_config_change(&ev, 1)[5..];
    // Invalid UTF-8: break the second byte of "é".
    let mut b = body.to_vec();
    b[2] = 0x41;
    let e = decode_config_change_body(&b, 10).unwrap_err();
    assert!(e.to_string().contains("event_id: invalid UTF-8"), "{e}");
    assert_eq!(e.reason(), "malformed_avro");
    // Negative string length.
    let mut b = body.to_vec();
    b[0] = 3; // zig-zag -2
    assert!(decode_config_change_body(&b, 10)
        .unwrap_err()
        .to_string()
        .contains("negative string length"));
    // Boolean byte other than 0/1.
    let mut ev2 = ev.clone();
    ev2.settings.push(Setting {
        key: "k".into(),
        value: Value::Bool(true),
    });
    let mut b = encode_config_change(&ev2, 1)[5..].to_vec();
    let n = b.len();
    assert_eq!(b[n - 2], 1);
    b[n - 2] = 2;
    let e = decode_config_change_body(&b, 10).unwrap_err();
    assert!(e.to_string().contains("invalid boolean byte 2"), "{e}");
    assert!(reference::decode_config_change_body(&b).is_err());
}
