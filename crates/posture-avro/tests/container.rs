//! Object container files written by apache-avro's Writer, read back with
//! `read_container`.

use apache_avro::{Codec, Schema, Writer};
use posture_avro::{is_container, read_container, reference, schemas, DecodeError};
use posture_core::{ChangeKind, ConfigChange, ConfigSource, DeviceInfo, Setting, Value};

fn events(n: usize) -> Vec<ConfigChange> {
    (0..n)
        .map(|i| ConfigChange {
            event_id: format!("e{i}"),
            tenant_id: "t1".into(),
            device_id: format!("d{}", i % 7),
            observed_at: 1_795_341_600_000 + i as i64,
            sequence: i as i64,
            source: ConfigSource::Agent,
            kind: if i % 5 == 0 {
                ChangeKind::Snapshot
            } else {
                ChangeKind::Upsert
            },
            device: (i % 3 == 0).then(|| DeviceInfo {
                os_family: "windows".into(),
                os_version: "10.0.19045".into(),
                hostname: Some(format!("host-{i}")),
                groups: vec!["g1".into(), "g2".into()],
                tags: vec![],
            }),
            settings: vec![
                Setting {
                    key: "fw.enabled".into(),
                    value: Value::Bool(i % 2 == 0),
                },
                Setting {
                    key: "pw.len".into(),
                    value: Value::Long(i as i64),
                },
                Setting {
                    key: "list".into(),
                    value: Value::Array(vec!["a".into(), "ü".into()]),
                },
                Setting {
                    key: "gone".into(),
                    value: Value::Null,
                },
            ],
        })
        .collect()
}

fn write(schema: &Schema, codec: Codec, values: impl IntoIterator<Item = apache_avro::types::Value>) -> Vec<u8> {
    let mut w = Writer::with_codec(schema, Vec::new(), codec);
    for v in values {
        w.append(v).unwrap();
    }
    w.into_inner().unwrap()
}

#[test]
fn reads_files_written_by_apache_avro() {
    let evs = events(1000);
    for codec in [Codec::Null, Codec::Deflate(Default::default()), Codec::Snappy] {
        let file = write(schemas::config_change(), codec, evs.iter().map(reference::to_value));
        assert!(is_container(&file));
        let got: Vec<_> = read_container(&file[..]).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, evs, "{codec:?}");
    }
}

#[test]
fn detects_containers() {
    assert!(is_container(b"Obj\x01rest"));
    assert!(!is_container(b"Obj"));
    assert!(!is_container(b"{\"event_id\":1}"));
    assert!(!is_container(&[0, 0, 0, 0, 1]));
}

#[test]
fn bad_header_is_one_error() {
    let items: Vec<_> = read_container(&b"Obj\x01garbage"[..]).collect();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].as_ref().unwrap_err().reason(), "bad_container");
    let items: Vec<_> = read_container(&b"{\"not\": \"avro\"}\n"[..]).collect();
    assert_eq!(items.len(), 1);
    assert!(matches!(items[0], Err(DecodeError::Container { .. })));
}

#[test]
fn truncated_file_ends_with_an_error() {
    let evs = events(50);
    let file = write(
        schemas::config_change(),
        Codec::Null,
        evs.iter().map(reference::to_value),
    );
    let items: Vec<_> = read_container(&file[..file.len() - 20]).collect();
    let last = items.last().unwrap();
    assert!(last.is_err(), "{last:?}");
    assert!(items[..items.len() - 1].iter().all(Result::is_ok));
}

#[test]
fn resolves_a_compatible_writer_schema() {
    // A newer writer schema with an extra field: resolved to ConfigChange.
    let mut json: serde_json_like::Schema = serde_json_like::parse(schemas::CONFIG_CHANGE_AVSC);
    json.add_trailing_field(r#"{"name": "extra", "type": "string", "default": ""}"#);
    let writer = Schema::parse_str(&json.0).unwrap();
    let evs = events(10);
    let values = evs.iter().map(|e| {
        let apache_avro::types::Value::Record(mut fields) = reference::to_value(e) else {
            unreachable!()
        };
        fields.push(("extra".into(), apache_avro::types::Value::String("x".into())));
        apache_avro::types::Value::Record(fields)
    });
    let file = write(&writer, Codec::Null, values);
    let got: Vec<_> = read_container(&file[..]).collect::<Result<_, _>>().unwrap();
    assert_eq!(got, evs);
}

/// Just enough text surgery to append a field to the top-level record.
mod serde_json_like {
    pub struct Schema(pub String);

    pub fn parse(text: &str) -> Schema {
        Schema(text.trim().to_owned())
    }

    impl Schema {
        pub fn add_trailing_field(&mut self, field: &str) {
            // The top-level record ends with `]\n}`: the fields array, then the record.
            let end = self.0.rfind(']').unwrap();
            self.0.insert_str(end, &format!(",\n    {field}\n  "));
        }
    }
}
