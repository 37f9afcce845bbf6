//! Decode throughput: the hand-written decoder against apache-avro, on a
//! realistic 5-setting event and a 300-setting snapshot, in the Confluent wire
//! format; also the hand decoder into a reused event (the ingest loop's
//! path), and records of other writer schemas read through their resolution
//! plans (`decode_evolved/`: the canonical schema, version 2 with added and
//! removed fields, a "version 0" with fewer). `cargo bench -p posture-avro
//! --bench decode`; criterion reports events/s as "thrpt".

use apache_avro::types::Value as AV;
use apache_avro::Schema;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use posture_avro::resolve::ResolutionPlan;
use posture_avro::{encode_config_change, reference, schemas, WireDecoder};
use posture_core::{ChangeKind, ConfigChange, ConfigSource, DeviceInfo, Setting, Value};
use std::time::Duration;

fn small() -> ConfigChange {
    ConfigChange {
        event_id: "6f1c9a52-3b7e-4d2a-9c41-8e0f5a7b2d13".into(),
        tenant_id: "contoso".into(),
        device_id: "dev-000417".into(),
        observed_at: 1_795_341_600_000,
        sequence: 1042,
        source: ConfigSource::Agent,
        kind: ChangeKind::Upsert,
        device: None,
        settings: vec![
            Setting {
                key: "windows.firewall.domain.enabled".into(),
                value: Value::Bool(true),
            },
            Setting {
                key: "windows.password.min_length".into(),
                value: Value::Long(14),
            },
            Setting {
                key: "windows.os.build".into(),
                value: Value::String("10.0.19045.4651".into()),
            },
            Setting {
                key: "windows.defender.signature_age_days".into(),
                value: Value::Double(1.5),
            },
            Setting {
                key: "windows.software.installed".into(),
                value: Value::Array(vec!["7zip".into(), "chrome".into(), "office".into()]),
            },
        ],
    }
}

fn snapshot() -> ConfigChange {
    let mut ev = small();
    ev.kind = ChangeKind::Snapshot;
    ev.device = Some(DeviceInfo {
        os_family: "windows".into(),
        os_version: "10.0.19045".into(),
        hostname: Some("WS-000417.corp.contoso.com".into()),
        groups: vec!["workstations".into(), "finance".into(), "emea".into()],
        tags: vec!["laptop".into()],
    });
    ev.settings = (0..300)
        .map(|i| Setting {
            key: format!("windows.policy.section{}.setting_{i:03}", i % 17),
            value: match i % 5 {
                0 => Value::Bool(i % 2 == 0),
                1 => Value::Long(i * 37),
                2 => Value::String(format!("value-{i}")),
                3 => Value::Double(i as f64 / 3.0),
                _ => Value::Array(vec!["a".into(), "b".into()]),
            },
        })
        .collect();
    ev
}

fn bench(c: &mut Criterion) {
    let dec = WireDecoder::new(Some(vec![1]));
    for (name, ev) in [("5_settings", small()), ("300_setting_snapshot", snapshot())] {
        let rec = encode_config_change(&ev, 1);
        assert_eq!(dec.decode(&rec).unwrap(), ev);
        assert_eq!(dec.decode_reference(&rec).unwrap(), ev);
        let mut g = c.benchmark_group(format!("decode/{name}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("hand", |b| b.iter(|| dec.decode(black_box(&rec)).unwrap()));
        // The ingest loop's path: into one reused event (no allocation once warm).
        let mut reused = dec.decode(&rec).unwrap();
        g.bench_function("hand_into_reused_event", |b| {
            b.iter(|| dec.decode_into(black_box(&rec), &mut reused).unwrap())
        });
        g.bench_function("apache_avro", |b| {
            b.iter(|| dec.decode_reference(black_box(&rec)).unwrap())
        });
        g.finish();
        let mut g = c.benchmark_group(format!("encode/{name}"));
        g.throughput(Throughput::Elements(1));
        let mut buf = Vec::new();
        g.bench_function("hand", |b| {
            b.iter(|| {
                buf.clear();
                posture_avro::encode_config_change_into(black_box(&ev), 1, &mut buf);
                buf.len()
            })
        });
        g.bench_function("apache_avro", |b| {
            b.iter(|| posture_avro::reference::encode_config_change(black_box(&ev), 1).unwrap())
        });
        g.finish();
    }
}

/// An older writer schema: no `device` field (the reader defaults it to null) and no array
/// branch in the setting value union.
const V0: &str = r#"{"type": "record", "name": "ConfigChange", "namespace": "posture.v1", "fields": [
  {"name": "event_id", "type": "string"}, {"name": "tenant_id", "type": "string"},
  {"name": "device_id", "type": "string"}, {"name": "observed_at", "type": "long"},
  {"name": "sequence", "type": "long"},
  {"name": "source", "type": {"type": "enum", "name": "ConfigSource", "symbols": ["AGENT", "GROUP_POLICY", "MDM", "INTUNE", "SCANNER", "OTHER"]}},
  {"name": "kind", "type": {"type": "enum", "name": "ChangeKind", "symbols": ["UPSERT", "REMOVE", "SNAPSHOT", "RETIRE"]}},
  {"name": "settings", "type": {"type": "array", "items": {"type": "record", "name": "Setting", "fields": [
    {"name": "key", "type": "string"},
    {"name": "value", "type": ["null", "boolean", "long", "double", "string"]}]}}}
]}"#;

/// Our value of an event, reshaped for writer schema `w`: fields `w` lacks dropped, fields
/// only `w` has filled as an agent would (a string, a timestamp), union branches renumbered by
/// type.
fn project(v: AV, w: &Schema) -> AV {
    match (v, w) {
        (AV::Record(fields), Schema::Record(r)) => {
            let mut fields: std::collections::HashMap<_, _> = fields.into_iter().collect();
            AV::Record(
                r.fields
                    .iter()
                    .map(|f| {
                        let v = match fields.remove(&f.name) {
                            Some(v) => project(v, &f.schema),
                            None => filled(&f.schema),
                        };
                        (f.name.clone(), v)
                    })
                    .collect(),
            )
        }
        (AV::Array(items), Schema::Array(a)) => AV::Array(items.into_iter().map(|i| project(i, &a.items)).collect()),
        (AV::Union(_, inner), Schema::Union(u)) => {
            let kind = apache_avro::schema::SchemaKind::from(&*inner);
            let (i, b) = u
                .variants()
                .iter()
                .enumerate()
                .find(|(_, b)| {
                    apache_avro::schema::SchemaKind::from(*b) == kind
                        || matches!(b, Schema::Record(_)) && kind == apache_avro::schema::SchemaKind::Record
                })
                .expect("the writer's union has the value's type");
            AV::Union(i as u32, Box::new(project(*inner, b)))
        }
        (AV::Enum(_, sym), Schema::Enum(e)) => {
            let i = e.symbols.iter().position(|s| *s == sym).expect("symbol");
            AV::Enum(i as u32, sym)
        }
        (AV::TimestampMillis(t), Schema::Long) => AV::Long(t),
        (v, _) => v,
    }
}

/// A value for a field only the writer has: its union's string or timestamp branch.
fn filled(s: &Schema) -> AV {
    let Schema::Union(u) = s else {
        panic!("added fields are nullable unions")
    };
    for (i, b) in u.variants().iter().enumerate() {
        match b {
            Schema::String => return AV::Union(i as u32, Box::new(AV::String("7.2.0-build.4411".into()))),
            Schema::TimestampMillis => return AV::Union(i as u32, Box::new(AV::TimestampMillis(1_795_341_599_000))),
            _ => {}
        }
    }
    AV::Union(0, Box::new(AV::Null))
}

/// The plans of other writer schemas against the hot path, on the same events.
fn evolved(c: &mut Criterion) {
    let v0 = Schema::parse_str(V0).unwrap();
    let mut small_v0 = small();
    small_v0.settings.pop(); // v0 has no string-list values
    for (name, ev, ev_v0) in [
        ("5_settings", small(), small_v0),
        ("300_setting_snapshot", snapshot(), {
            let mut e = snapshot();
            e.device = None;
            e.settings.retain(|s| !matches!(s.value, Value::Array(_)));
            e
        }),
    ] {
        let mut g = c.benchmark_group(format!("decode_evolved/{name}"));
        g.throughput(Throughput::Elements(1));
        let canonical = encode_config_change(&ev, 1);
        let mut dec = WireDecoder::new(Some(vec![1]));
        for (id, writer) in [(2u32, schemas::config_change_v2()), (3, &v0)] {
            let plan = ResolutionPlan::compile(writer).unwrap();
            dec.allow_resolved(id, std::sync::Arc::new(plan));
        }
        let body = |writer: &Schema, ev: &ConfigChange, id: u8| {
            let mut rec = vec![0, 0, 0, 0, id];
            rec.extend(apache_avro::to_avro_datum(writer, project(reference::to_value(ev), writer)).unwrap());
            rec
        };
        let mut want_v2 = ev.clone();
        if let Some(d) = &mut want_v2.device {
            d.tags.clear(); // version 2 has no tags: the reader's default []
        }
        let rec_v2 = body(schemas::config_change_v2(), &ev, 2);
        let rec_v0 = body(&v0, &ev_v0, 3);
        assert_eq!(dec.decode(&rec_v2).unwrap(), want_v2);
        assert_eq!(dec.decode_reference(&rec_v2).unwrap(), want_v2);
        assert_eq!(dec.decode(&rec_v0).unwrap(), ev_v0);
        for (label, rec) in [
            ("canonical_hot_path", &canonical),
            ("v2_plan", &rec_v2),
            ("v0_plan", &rec_v0),
        ] {
            let mut reused = dec.decode(rec).unwrap();
            g.bench_function(label, |b| {
                b.iter(|| dec.decode_into(black_box(rec), &mut reused).unwrap())
            });
        }
        g.bench_function("v2_apache_avro_resolution", |b| {
            b.iter(|| dec.decode_reference(black_box(&rec_v2)).unwrap())
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench, evolved
}
criterion_main!(benches);
