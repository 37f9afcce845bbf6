//! Decode throughput: the hand-written decoder against apache-avro, on a
//! realistic 5-setting event and a 300-setting snapshot, in the Confluent wire
//! format; also the hand decoder into a reused event (the ingest loop's
//! path). `cargo bench -p posture-avro --bench decode`; criterion reports
//! events/s as "thrpt".

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use posture_avro::{encode_config_change, WireDecoder};
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

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
