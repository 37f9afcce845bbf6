//! ScoreDelta and ScoreDropAlert records: encoded by hand from real engine
//! output, decoded back with apache-avro against the .avsc files, and
//! byte-identical to apache-avro's own encoding.

use apache_avro::types::Value as AvroValue;
use posture_avro::output::encode_engine_delta_into;
use posture_avro::{
    decode_alert, decode_score_delta, encode_alert, encode_score_delta, schemas, split_wire, AlertCause, DeltaNames,
    ScoreDeltaRecord, ScoreDropAlert,
};
use posture_core::engine::Output;
use posture_core::{
    Catalog, ChangeKind, ConfigChange, ConfigSource, ControlState, DeviceInfo, Engine, EngineConfig, Exception,
    ExceptionScope, Justification, Setting, SourcePos, Value,
};
use std::collections::HashSet;
use std::sync::Arc;

const BASELINE: &str = r#"
baseline: test
version: 2026.11
applies_to: { os_family: [windows] }
controls:
  - id: fw
    title: Firewall on
    category: network
    check: { key: fw.enabled, op: eq, value: true }
    on_missing: fail
  - id: pw
    title: Long passwords
    category: accounts
    points: 50
    check: { key: pw.len, op: ge, value: 14 }
    on_missing: unknown
"#;

fn ev(seq: i64, device: &str, groups: &[&str], kind: ChangeKind, settings: Vec<Setting>) -> ConfigChange {
    ConfigChange {
        event_id: format!("e{seq}-{device}"),
        tenant_id: "tenant-ü".into(),
        device_id: device.into(),
        observed_at: 1_795_341_600_000 + seq * 1000,
        sequence: seq,
        source: ConfigSource::Intune,
        kind,
        device: Some(DeviceInfo {
            os_family: "windows".into(),
            os_version: "10.0.19045".into(),
            hostname: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            tags: vec![],
        }),
        settings,
    }
}

fn set(key: &str, value: Value) -> Setting {
    Setting { key: key.into(), value }
}

/// Re-encodes the decoded generic value with apache-avro: must give the same body.
fn assert_apache_bytes(record: &[u8], schema: &apache_avro::Schema) {
    let (_, body) = split_wire(record).unwrap();
    let v: AvroValue = apache_avro::from_avro_datum(schema, &mut &body[..], None).unwrap();
    assert_eq!(apache_avro::to_avro_datum(schema, v).unwrap(), body);
}

#[test]
fn engine_transitions_round_trip() {
    let cat = Arc::new(Catalog::from_sources(&[("t.yaml", BASELINE)]).unwrap());
    let mut engine = Engine::new(cat, EngineConfig::default());
    let mut out = Output::default();
    let mut pos = 0;
    let mut apply = |engine: &mut Engine, e: ConfigChange, out: &mut Output| {
        pos += 1;
        engine
            .apply(
                &e,
                SourcePos {
                    partition: 3,
                    offset: pos,
                },
                out,
            )
            .unwrap();
    };
    apply(
        &mut engine,
        ev(
            1,
            "d1",
            &["g1", "g2"],
            ChangeKind::Snapshot,
            vec![set("fw.enabled", Value::Bool(true))],
        ),
        &mut out,
    );
    apply(
        &mut engine,
        ev(
            1,
            "d2",
            &["g2"],
            ChangeKind::Snapshot,
            vec![set("pw.len", Value::Long(8))],
        ),
        &mut out,
    );
    engine
        .add_exception(
            Exception {
                id: "x1".into(),
                tenant: "tenant-ü".into(),
                control: "fw".into(),
                scope: ExceptionScope::Device("d2".into()),
                justification: Justification::ThirdPartyControl,
                starts_at: 1_795_341_600_000,
                expires_at: None,
                author: "a".into(),
                note: "n".into(),
            },
            &mut out,
        )
        .unwrap();
    apply(
        &mut engine,
        ev(
            2,
            "d1",
            &["g1", "g2"],
            ChangeKind::Upsert,
            vec![set("fw.enabled", Value::Bool(false))],
        ),
        &mut out,
    );
    apply(
        &mut engine,
        ev(3, "d1", &["g1", "g2"], ChangeKind::Retire, vec![]),
        &mut out,
    );

    assert!(out.transitions.len() >= 6, "{}", out.transitions.len());
    let mut states = HashSet::new();
    let mut buf = Vec::new();
    for t in &out.transitions {
        let scopes = out.deltas_of(t);
        let names = DeltaNames::from_engine(&engine, t);
        let rec = encode_score_delta(&names, t, scopes, |g| engine.group_name(g).unwrap(), 99);
        buf.clear();
        encode_engine_delta_into(&engine, t, scopes, 99, &mut buf);
        assert_eq!(buf, rec);
        assert_eq!(split_wire(&rec).unwrap().0, 99);
        assert_apache_bytes(&rec, schemas::score_delta());
        let back = decode_score_delta(&rec).unwrap();
        assert_eq!(
            back,
            ScoreDeltaRecord::of(&names, t, scopes, |g| engine.group_name(g).unwrap())
        );
        assert_eq!(back.tenant, "tenant-ü");
        assert!(
            [3, -1].contains(&back.source_partition),
            "exception changes carry no Kafka position"
        );
        assert!(
            back.scopes.is_empty() || back.scopes.iter().any(|s| s.group.is_none()),
            "tenant scope"
        );
        states.insert((back.new_state, back.reason));
    }
    // The run covers an exception, a failure and a retirement.
    assert!(states.iter().any(|s| s.0 == ControlState::Excepted));
    assert!(states.iter().any(|s| s.0 == ControlState::Fail));
    assert!(states.iter().any(|s| s.1 == posture_core::engine::Reason::Retired));
    let groups: HashSet<_> = out
        .transitions
        .iter()
        .flat_map(|t| {
            decode_score_delta(&encode_engine_delta(&engine, t, &out))
                .unwrap()
                .scopes
        })
        .filter_map(|s| s.group)
        .collect();
    assert_eq!(groups, HashSet::from(["g1".to_string(), "g2".to_string()]));
}

fn encode_engine_delta(engine: &Engine, t: &posture_core::Transition, out: &Output) -> Vec<u8> {
    let mut b = Vec::new();
    encode_engine_delta_into(engine, t, out.deltas_of(t), 1, &mut b);
    b
}

#[test]
fn alerts_round_trip() {
    let alerts = [
        ScoreDropAlert {
            tenant: "t1".into(),
            group: None,
            category: None,
            old_percent: 81.25,
            new_percent: 70.5,
            window_ms: 3_600_000,
            at: 1_795_341_600_000,
            causes: vec![],
        },
        ScoreDropAlert {
            tenant: "t1".into(),
            group: Some("servers".into()),
            category: Some("network".into()),
            old_percent: 100.0,
            new_percent: 0.0,
            window_ms: -1,
            at: -5,
            causes: vec![
                AlertCause {
                    control: "fw".into(),
                    device: "d1".into(),
                    points_lost: 12.5,
                },
                AlertCause {
                    control: "pw".into(),
                    device: "d2".into(),
                    points_lost: f64::MIN_POSITIVE,
                },
            ],
        },
    ];
    for a in &alerts {
        let rec = encode_alert(a, 7);
        assert_apache_bytes(&rec, schemas::alert());
        assert_eq!(&decode_alert(&rec).unwrap(), a);
    }
    let mut rec = encode_alert(&alerts[0], 7);
    rec.push(0);
    assert_eq!(decode_alert(&rec).unwrap_err().reason(), "trailing_bytes");
}
