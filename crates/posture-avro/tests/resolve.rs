//! Schema resolution ([`ResolutionPlan`]) against the `apache-avro` crate's own
//! resolution, which is the oracle: for writer schemas derived at random from
//! ours, a plan compiles exactly when `SchemaCompatibility::can_read` accepts
//! the pair, and then decodes every random record to what
//! `from_avro_datum(writer, .., Some(reader))` decodes.
//!
//! Where apache-avro 0.21 departs from the Avro specification the generator or
//! the oracle says so (each place is marked "apache-avro 0.21"):
//! * its `can_read` ignores a reader enum's `default` (its value resolution
//!   uses it, as the spec says since Avro 1.9): the oracle checks the pair
//!   with the writer's extra symbols taken out, which is what the default
//!   makes readable;
//! * its `can_read` refuses `int` into a `timestamp-millis` reader (the spec
//!   reads logical types as their underlying types, and its value resolution
//!   accepts it): the generator never writes `observed_at` as `int`.

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value as AV;
use apache_avro::Schema;
use posture_avro::resolve::{ResolutionPlan, ResolveError};
use posture_avro::{reference, schemas, DEFAULT_MAX_ARRAY_LEN};
use posture_core::{ChangeKind, ConfigChange, ConfigSource, DeviceInfo, Setting, Value};
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestRng};
use serde_json::{json, Value as J};
use std::collections::HashMap;

// ---------------------------------------------------------------------------
// Helpers

fn reader_json() -> J {
    serde_json::from_str(schemas::CONFIG_CHANGE_AVSC).unwrap()
}

fn parse(j: &J) -> Schema {
    Schema::parse_str(&j.to_string()).unwrap_or_else(|e| panic!("{e}: {j}"))
}

fn compile(j: &J) -> Result<ResolutionPlan, ResolveError> {
    ResolutionPlan::compile(&parse(j))
}

fn fields(j: &mut J) -> &mut Vec<J> {
    j["fields"].as_array_mut().unwrap()
}

fn field<'a>(j: &'a mut J, name: &str) -> &'a mut J {
    fields(j).iter_mut().find(|f| f["name"] == name).unwrap()
}

fn remove_field(j: &mut J, name: &str) {
    fields(j).retain(|f| f["name"] != name);
}

/// The writer's `DeviceInfo` record inside the `device` union.
fn device_info(j: &mut J) -> &mut J {
    let t = &mut field(j, "device")["type"];
    if t.is_array() {
        &mut t.as_array_mut().unwrap()[1]
    } else {
        t
    }
}

fn setting(j: &mut J) -> &mut J {
    &mut field(j, "settings")["type"]["items"]
}

/// The apache-avro path: decode with the writer schema, resolve into ours, map.
fn oracle_decode(writer: &Schema, body: &[u8]) -> Result<ConfigChange, String> {
    let mut cur = body;
    let v =
        apache_avro::from_avro_datum(writer, &mut cur, Some(schemas::config_change())).map_err(|e| e.to_string())?;
    if !cur.is_empty() {
        return Err("trailing bytes".into());
    }
    reference::from_value(v).map_err(|e| e.to_string())
}

/// `ev` encoded with `writer`: its fields as our schema has them, changed by `edit` into the
/// writer's (fields added, values rewrapped).
fn encode_as(writer: &Schema, ev: &ConfigChange, edit: impl FnOnce(&mut Vec<(String, AV)>)) -> Vec<u8> {
    let AV::Record(mut fields) = reference::to_value(ev) else {
        unreachable!("an event is a record")
    };
    edit(&mut fields);
    apache_avro::to_avro_datum(writer, AV::Record(fields)).unwrap()
}

fn sample() -> ConfigChange {
    ConfigChange {
        event_id: "e-1".into(),
        tenant_id: "acme".into(),
        device_id: "laptop-7".into(),
        observed_at: 1_795_341_600_000,
        sequence: 42,
        source: ConfigSource::Mdm,
        kind: ChangeKind::Snapshot,
        device: Some(DeviceInfo {
            os_family: "windows".into(),
            os_version: "10.0.19045".into(),
            hostname: Some("fin-lt-7".into()),
            groups: vec!["finance".into(), "laptops".into()],
            tags: vec!["vip".into()],
        }),
        settings: vec![
            Setting {
                key: "windows.firewall.domain.enabled".into(),
                value: Value::Bool(false),
            },
            Setting {
                key: "windows.password.min_length".into(),
                value: Value::Long(12),
            },
            Setting {
                key: "x.ratio".into(),
                value: Value::Double(0.5),
            },
            Setting {
                key: "x.list".into(),
                value: Value::Array(vec!["a".into(), "b".into()]),
            },
            Setting {
                key: "x.name".into(),
                value: Value::String("n".into()),
            },
            Setting {
                key: "x.null".into(),
                value: Value::Null,
            },
        ],
    }
}

// ---------------------------------------------------------------------------
// Fixed cases

#[test]
fn the_reader_schema_resolves_to_itself_and_decodes_as_the_hot_path() {
    let plan = ResolutionPlan::compile(schemas::config_change()).unwrap();
    assert!(plan.summary().skipped.is_empty(), "{}", plan.summary());
    assert!(plan.summary().defaulted.is_empty(), "{}", plan.summary());
    assert!(plan.summary().converted.is_empty(), "{}", plan.summary());
    let ev = sample();
    let body = &posture_avro::encode_config_change(&ev, 1)[5..];
    assert_eq!(plan.decode(body, DEFAULT_MAX_ARRAY_LEN).unwrap(), ev);
    // Into a used event, with strings and settings to reuse, as the pipeline does.
    let mut used = sample();
    used.settings.reverse();
    used.device = None;
    plan.decode_into(body, DEFAULT_MAX_ARRAY_LEN, &mut used).unwrap();
    assert_eq!(used, ev);
    // Malformed bodies are errors, like the hot path's.
    assert!(plan.decode(&body[..body.len() - 1], DEFAULT_MAX_ARRAY_LEN).is_err());
    let mut long = body.to_vec();
    long.push(0);
    assert_eq!(
        plan.decode(&long, DEFAULT_MAX_ARRAY_LEN).unwrap_err().reason(),
        "trailing_bytes"
    );
}

#[test]
fn version_2_resolves_and_decodes_as_apache_avro_does() {
    let v2 = schemas::config_change_v2();
    let plan = ResolutionPlan::compile(v2).unwrap();
    let s = plan.summary();
    assert_eq!(
        s.skipped,
        ["agent_version", "device.serial_number", "settings.collected_at"]
    );
    assert_eq!(s.defaulted, ["device.tags"]);
    assert_eq!(s.converted, ["source"]);
    // A version-2 record with every new thing: the new symbol EDR, an agent version, a serial
    // number, a setting's collection time.
    let rec = |source: &str, source_idx: u32, agent: Option<&str>| {
        AV::Record(vec![
            ("event_id".into(), AV::String("e-9".into())),
            ("tenant_id".into(), AV::String("acme".into())),
            ("device_id".into(), AV::String("d-9".into())),
            ("observed_at".into(), AV::TimestampMillis(1_795_341_600_000)),
            ("sequence".into(), AV::Long(7)),
            (
                "agent_version".into(),
                match agent {
                    Some(a) => AV::Union(1, Box::new(AV::String(a.into()))),
                    None => AV::Union(0, Box::new(AV::Null)),
                },
            ),
            ("source".into(), AV::Enum(source_idx, source.into())),
            ("kind".into(), AV::Enum(0, "UPSERT".into())),
            (
                "device".into(),
                AV::Union(
                    1,
                    Box::new(AV::Record(vec![
                        ("os_family".into(), AV::String("macos".into())),
                        ("os_version".into(), AV::String("15.1".into())),
                        ("hostname".into(), AV::Union(0, Box::new(AV::Null))),
                        (
                            "serial_number".into(),
                            AV::Union(1, Box::new(AV::String("C02X".into()))),
                        ),
                        ("groups".into(), AV::Array(vec![AV::String("finance".into())])),
                    ])),
                ),
            ),
            (
                "settings".into(),
                AV::Array(vec![AV::Record(vec![
                    ("key".into(), AV::String("macos.firewall.enabled".into())),
                    ("value".into(), AV::Union(1, Box::new(AV::Boolean(true)))),
                    (
                        "collected_at".into(),
                        AV::Union(1, Box::new(AV::TimestampMillis(1_795_341_500_000))),
                    ),
                ])]),
            ),
        ])
    };
    for (sym, idx, agent, want) in [
        ("EDR", 6, Some("7.2.0"), ConfigSource::Other),
        ("AGENT", 0, None, ConfigSource::Agent),
    ] {
        let body = apache_avro::to_avro_datum(v2, rec(sym, idx, agent)).unwrap();
        let ours = plan.decode(&body, DEFAULT_MAX_ARRAY_LEN).unwrap();
        assert_eq!(ours, oracle_decode(v2, &body).unwrap());
        assert_eq!(ours.source, want);
        let d = ours.device.unwrap();
        assert_eq!(d.tags, Vec::<String>::new(), "tags take the reader's default");
        assert_eq!(d.groups, ["finance"]);
        assert_eq!(ours.settings[0].value, Value::Bool(true));
    }
}

#[test]
fn unreadable_writer_schemas_are_refused_naming_the_field() {
    type Change = Box<dyn Fn(&mut J)>;
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "a new kind symbol (ChangeKind has no default)",
            Box::new(|j| {
                field(j, "kind")["type"]["symbols"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("QUARANTINE"))
            }),
            "field kind: writer enum symbol QUARANTINE is not one of the reader's [UPSERT, REMOVE, SNAPSHOT, RETIRE], and the reader's enum has no default",
        ),
        (
            "a type Avro does not promote",
            Box::new(|j| field(j, "sequence")["type"] = json!("string")),
            "field sequence: writer type string cannot be read as long",
        ),
        (
            "a required field removed",
            Box::new(|j| remove_field(j, "device_id")),
            "field device_id: missing from the writer schema, and the reader's field has no default",
        ),
        (
            "a nullable writer field into a required reader field",
            Box::new(|j| field(j, "tenant_id")["type"] = json!(["null", "string"])),
            "field tenant_id: branch null of the writer's union [null, string]: writer type null cannot be read as string",
        ),
        (
            "a nested field of an unpromotable type",
            Box::new(|j| field(device_info(j), "hostname")["type"] = json!(["null", "int"])),
            "field device.hostname: writer type int cannot be read as union [null, string]",
        ),
        (
            "a setting value branch the reader cannot hold",
            Box::new(|j| {
                field(setting(j), "value")["type"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "map", "values": "string"}))
            }),
            "field settings.value: writer type map of string cannot be read as the setting value union",
        ),
        (
            "another record",
            Box::new(|j| j["name"] = json!("DeviceEvent")),
            "the record: writer record DeviceEvent cannot be read as record ConfigChange",
        ),
        (
            "a renamed enum",
            Box::new(|j| field(j, "source")["type"]["name"] = json!("Origin")),
            "field source: writer enum Origin cannot be read as enum ConfigSource",
        ),
    ];
    for (what, change, want) in cases {
        let mut j = reader_json();
        change(&mut j);
        let e = compile(&j).expect_err(what);
        assert_eq!(e.to_string(), want, "{what}");
        assert!(
            SchemaCompatibility::can_read(&parse(&j), schemas::config_change()).is_err(),
            "apache-avro refuses {what} too"
        );
    }
}

#[test]
fn recursive_and_exotic_skipped_fields_are_walked_not_built() {
    let mut j = reader_json();
    fields(&mut j).insert(
        1,
        json!({"name": "trail", "type": ["null", {"type": "record", "name": "Hop", "fields": [
            {"name": "via", "type": "string"},
            {"name": "ms", "type": "float"},
            {"name": "attrs", "type": {"type": "map", "values": ["null", "bytes", {"type": "fixed", "name": "Mac", "size": 6}]}},
            {"name": "next", "type": ["null", "Hop"]}
        ]}], "default": null}),
    );
    fields(&mut j).push(json!({"name": "day", "type": {"type": "int", "logicalType": "date"}}));
    fields(&mut j).push(json!({"name": "again", "type": ["null", "Hop"]}));
    let w = parse(&j);
    let plan = ResolutionPlan::compile(&w).unwrap();
    assert_eq!(plan.summary().skipped, ["trail", "day", "again"]);
    let hop = |via: &str, next: AV| {
        AV::Record(vec![
            ("via".into(), AV::String(via.into())),
            ("ms".into(), AV::Float(1.5)),
            (
                "attrs".into(),
                AV::Map(HashMap::from([
                    ("a".to_owned(), AV::Union(1, Box::new(AV::Bytes(vec![1, 2])))),
                    ("m".to_owned(), AV::Union(2, Box::new(AV::Fixed(6, vec![0; 6])))),
                ])),
            ),
            ("next".into(), next),
        ])
    };
    let chain = hop("a", AV::Union(1, Box::new(hop("b", AV::Union(0, Box::new(AV::Null))))));
    let ev = sample();
    let body = encode_as(&w, &ev, |rf| {
        rf.insert(1, ("trail".into(), AV::Union(1, Box::new(chain.clone()))));
        rf.push(("day".into(), AV::Date(20_000)));
        rf.push(("again".into(), AV::Union(1, Box::new(chain))));
    });
    assert_eq!(plan.decode(&body, DEFAULT_MAX_ARRAY_LEN).unwrap(), ev);
    assert_eq!(oracle_decode(&w, &body).unwrap(), ev);
}

#[test]
fn a_deeply_recursive_skipped_value_is_refused_not_a_stack_overflow() {
    let mut j = reader_json();
    fields(&mut j).push(
        json!({"name": "chain", "type": {"type": "record", "name": "Link", "fields": [
            {"name": "next", "type": ["null", "Link"]}
        ]}}),
    );
    let plan = compile(&j).unwrap();
    let mut body = posture_avro::encode_config_change(&sample(), 1)[5..].to_vec();
    // 100,000 links: union index 1 each, then null.
    body.extend(std::iter::repeat_n(2u8, 100_000));
    body.push(0);
    let e = plan.decode(&body, DEFAULT_MAX_ARRAY_LEN).unwrap_err();
    assert!(e.to_string().contains("nested deeper than"), "{e}");
}

#[test]
fn settings_whose_items_are_a_union_of_the_record_resolve() {
    // `settings: array<[Setting]>`: a one-branch union around the record (the reference
    // implementation reads it; so does apache-avro).
    let mut j = reader_json();
    let item = setting(&mut j).clone();
    field(&mut j, "settings")["type"]["items"] = json!([item]);
    let w = parse(&j);
    let plan = ResolutionPlan::compile(&w).unwrap();
    let ev = sample();
    let body = encode_as(&w, &ev, |rf| {
        for (name, v) in rf.iter_mut() {
            if name == "settings" {
                let AV::Array(items) = std::mem::replace(v, AV::Null) else {
                    unreachable!()
                };
                *v = AV::Array(items.into_iter().map(|i| AV::Union(0, Box::new(i))).collect());
            }
        }
    });
    assert_eq!(plan.decode(&body, DEFAULT_MAX_ARRAY_LEN).unwrap(), ev);
    assert_eq!(oracle_decode(&w, &body).unwrap(), ev);
}

#[test]
fn uuid_fields_are_read_by_their_encoding() {
    // A fixed(16) uuid, a string uuid skipped, and a string uuid as the event id.
    let mut j = reader_json();
    field(&mut j, "event_id")["type"] = json!({"type": "string", "logicalType": "uuid"});
    fields(&mut j)
        .push(json!({"name": "agent_uuid", "type": {"type": "fixed", "name": "U", "size": 16, "logicalType": "uuid"}}));
    fields(&mut j).push(json!({"name": "run_uuid", "type": {"type": "string", "logicalType": "uuid"}}));
    let writer = posture_avro::resolve::parse_writer_schema(&j.to_string()).unwrap();
    let plan = ResolutionPlan::compile(&writer).unwrap();
    assert_eq!(plan.summary().skipped, ["agent_uuid", "run_uuid"]);
    let mut ev = sample();
    ev.event_id = "6f1c9a52-3b7e-4d2a-9c41-8e0f5a7b2d13".into();
    let body = encode_as(&writer, &ev, |rf| {
        rf.push(("agent_uuid".into(), AV::Fixed(16, (1..=16).collect())));
        rf.push((
            "run_uuid".into(),
            AV::String("0b7e6c1e-2d4f-4a8e-9d51-3c2b1a0f9e87".into()),
        ));
    });
    assert_eq!(plan.decode(&body, DEFAULT_MAX_ARRAY_LEN).unwrap(), ev);
}

#[test]
fn skipped_arrays_of_zero_width_items_are_bounded() {
    // array<array<null>>: each inner item costs no byte, so 4 bytes can claim 100,000 of them.
    let mut j = reader_json();
    fields(&mut j)
        .push(json!({"name": "nothing", "type": {"type": "array", "items": {"type": "array", "items": "null"}}}));
    let plan = compile(&j).unwrap();
    let mut body = posture_avro::encode_config_change(&sample(), 1)[5..].to_vec();
    let varint = |out: &mut Vec<u8>, n: i64| {
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    };
    varint(&mut body, 200);
    for _ in 0..200 {
        varint(&mut body, 90_000);
        body.push(0);
    }
    body.push(0);
    let e = plan.decode(&body, DEFAULT_MAX_ARRAY_LEN).unwrap_err();
    assert_eq!(e.reason(), "array_too_long", "{e}");
    assert!(e.to_string().contains("skipped fields"), "{e}");
}

#[test]
fn skipped_arrays_and_maps_in_blocks_with_byte_sizes() {
    // A writer may end an array or map block with its size in bytes (a negative count), so a
    // reader can jump over it; the plan checks the size against the items it walks.
    let mut j = reader_json();
    fields(&mut j).push(json!({"name": "counts", "type": {"type": "array", "items": "long"}}));
    fields(&mut j).push(json!({"name": "labels", "type": {"type": "map", "values": "string"}}));
    let plan = compile(&j).unwrap();
    let v1 = posture_avro::encode_config_change(&sample(), 1)[5..].to_vec();
    // counts: one block of -3 items, 3 bytes (1, 2, 3 zig-zagged), then the end.
    // labels: one block of -1 item, 5 bytes ("a" -> "bc"), then the end.
    let mut body = v1.clone();
    body.extend([5, 6, 2, 4, 6, 0]);
    body.extend([1, 10, 2, b'a', 4, b'b', b'c', 0]);
    assert_eq!(plan.decode(&body, DEFAULT_MAX_ARRAY_LEN).unwrap(), sample());
    // The same with a byte size that does not match its items.
    let mut body = v1.clone();
    body.extend([5, 8, 2, 4, 6, 0]);
    body.extend([1, 10, 2, b'a', 4, b'b', b'c', 0]);
    let e = plan.decode(&body, DEFAULT_MAX_ARRAY_LEN).unwrap_err();
    assert_eq!(e.reason(), "malformed_avro", "{e}");
    // And apache-avro reads the well-formed one alike.
    let mut body = v1;
    body.extend([5, 6, 2, 4, 6, 0]);
    body.extend([1, 10, 2, b'a', 4, b'b', b'c', 0]);
    assert_eq!(oracle_decode(&parse(&j), &body).unwrap(), sample());
}

#[test]
fn version_2_is_full_compatible_with_version_1() {
    let (v1, v2) = (schemas::config_change(), schemas::config_change_v2());
    // BACKWARD: a version-2 reader reads version-1 records.
    SchemaCompatibility::can_read(v1, v2).unwrap();
    // FORWARD: a version-1 reader reads version-2 records: our plan, and apache-avro's check with
    // EDR taken out (apache-avro 0.21's can_read ignores the enum default that reads it as OTHER).
    ResolutionPlan::compile(v2).unwrap();
    let mut j: J = serde_json::from_str(schemas::CONFIG_CHANGE_V2_AVSC).unwrap();
    field(&mut j, "source")["type"]["symbols"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s != "EDR");
    SchemaCompatibility::can_read(&parse(&j), v1).unwrap();
}

// ---------------------------------------------------------------------------
// Random writer schemas against apache-avro

/// Proptest's own generator, seeded by a `u64` proptest draws (so a failure names one seed).
struct Rng(TestRng);

impl Rng {
    fn seeded(seed: u64) -> Rng {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Rng(TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
    }
    fn next(&mut self) -> u64 {
        self.0.random::<u64>()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            xs.swap(i, self.below(i + 1));
        }
    }
}

/// A writer type the reader does not have, for added fields.
fn extra_type(r: &mut Rng, n: &mut usize) -> J {
    *n += 1;
    match r.below(11) {
        0 => json!("int"),
        1 => json!("double"),
        2 => json!("float"),
        3 => json!(["null", "string"]),
        4 => json!({"type": "array", "items": "long"}),
        5 => json!({"type": "map", "values": ["null", "bytes"]}),
        6 => json!({"type": "enum", "name": format!("E{n}"), "symbols": ["A", "B", "C"]}),
        7 => json!({"type": "fixed", "name": format!("F{n}"), "size": 3}),
        8 => json!({"type": "long", "logicalType": "timestamp-micros"}),
        9 => json!({"type": "record", "name": format!("R{n}"), "fields": [
            {"name": "a", "type": "boolean"},
            {"name": "next", "type": ["null", format!("R{n}")]}
        ]}),
        _ => json!("boolean"),
    }
}

/// A writer type for a reader `string` field: mostly readable.
fn string_type(r: &mut Rng) -> J {
    match r.below(10) {
        0 => json!("bytes"),
        1 => json!(["string"]),
        2 => json!(["null", "string"]),
        3 => json!("int"),
        _ => json!("string"),
    }
}

fn add_fields(r: &mut Rng, rec: &mut J, n: &mut usize) {
    for _ in 0..r.below(3) {
        let t = extra_type(r, n);
        let mut f = json!({"name": format!("x{n}"), "type": t});
        if r.chance(50) && !f["type"].is_array() {
            f["type"] = json!(["null", f["type"].clone()]);
        }
        fields(rec).push(f);
    }
}

/// A writer schema derived from ours at random, and the schema the oracle's
/// `can_read` is asked about (the same but for the enum symbols a reader
/// default makes readable: apache-avro 0.21).
fn random_writer(r: &mut Rng) -> (J, J) {
    let mut j = reader_json();
    let mut oracle_source: Option<Vec<J>> = None;
    let mut n = 0;
    for name in ["event_id", "tenant_id", "device_id"] {
        if r.chance(3) {
            remove_field(&mut j, name);
        } else if r.chance(30) {
            field(&mut j, name)["type"] = string_type(r);
        }
    }
    if r.chance(30) {
        field(&mut j, "observed_at")["type"] = json!(r.pick(&["long", "string"]));
    }
    if r.chance(30) {
        field(&mut j, "sequence")["type"] = json!(r.pick(&["int", "long", "double", "string"]));
    }
    // Enums: reorder, drop, add symbols; rename rarely.
    for name in ["source", "kind"] {
        if r.chance(40) {
            let e = &mut field(&mut j, name)["type"];
            let syms = e["symbols"].as_array_mut().unwrap();
            r.shuffle(syms);
            if r.chance(30) && syms.len() > 1 {
                syms.pop();
            }
            let keep = syms.clone();
            if r.chance(40) {
                syms.push(json!("NEW_SYMBOL"));
                if name == "source" {
                    oracle_source = Some(keep);
                }
            }
            if r.chance(5) {
                e["name"] = json!("Renamed");
            }
        }
    }
    // The device: removed, not a union, or a changed DeviceInfo.
    match r.below(10) {
        0 => remove_field(&mut j, "device"),
        1 => {
            let info = device_info(&mut j).clone();
            field(&mut j, "device")["type"] = info;
        }
        _ => {}
    }
    if fields(&mut j).iter().any(|f| f["name"] == "device") {
        let d = device_info(&mut j);
        for name in ["os_family", "os_version"] {
            if r.chance(15) {
                field(d, name)["type"] = string_type(r);
            }
        }
        match r.below(8) {
            0 => remove_field(d, "hostname"),
            1 => field(d, "hostname")["type"] = json!("string"),
            2 => field(d, "hostname")["type"] = json!(["string", "null"]),
            3 => field(d, "hostname")["type"] = json!(["null", "bytes"]),
            4 if r.chance(30) => field(d, "hostname")["type"] = json!(["null", "long"]),
            _ => {}
        }
        for name in ["groups", "tags"] {
            match r.below(8) {
                0 => remove_field(d, name),
                1 => field(d, name)["type"]["items"] = json!("bytes"),
                2 if r.chance(30) => field(d, name)["type"]["items"] = json!("int"),
                _ => {}
            }
        }
        add_fields(r, d, &mut n);
        r.shuffle(fields(d));
    }
    // Settings: the value union narrowed, reordered, promoted; fields added.
    {
        let s = setting(&mut j);
        if r.chance(50) {
            let v = field(s, "value")["type"].as_array_mut().unwrap();
            r.shuffle(v);
            v.truncate(1 + r.below(v.len()));
            for b in v.iter_mut() {
                if *b == json!("long") && r.chance(50) {
                    *b = json!("int");
                } else if *b == json!("double") && r.chance(50) {
                    *b = json!("float");
                } else if *b == json!("string") && r.chance(30) {
                    *b = json!("bytes");
                }
            }
            if r.chance(10) {
                v.push(json!({"type": "enum", "name": "Level", "symbols": ["LOW", "HIGH"]}));
            }
            if v.len() == 1 && r.chance(50) {
                let only = v[0].clone();
                field(s, "value")["type"] = only;
            }
        }
        if r.chance(5) {
            field(s, "key")["type"] = string_type(r);
        }
        add_fields(r, s, &mut n);
        r.shuffle(fields(s));
    }
    add_fields(r, &mut j, &mut n);
    r.shuffle(fields(&mut j));
    // A writer's defaults play no part in resolution (only the reader's do), and after the
    // changes above some would no longer match their field's type.
    strip_defaults(&mut j);
    let mut oracle = j.clone();
    if let Some(keep) = oracle_source {
        field(&mut oracle, "source")["type"]["symbols"] = J::Array(keep);
    }
    (j, oracle)
}

fn strip_defaults(j: &mut J) {
    match j {
        J::Object(m) => {
            m.remove("default");
            m.values_mut().for_each(strip_defaults);
        }
        J::Array(a) => a.iter_mut().for_each(strip_defaults),
        _ => {}
    }
}

/// A random value of writer type `s` (recursive types end within a few levels).
fn random_value(r: &mut Rng, s: &Schema, names: &HashMap<apache_avro::schema::Name, &Schema>, depth: usize) -> AV {
    let text = |r: &mut Rng| -> String {
        let n = r.below(4);
        (0..n).map(|_| *r.pick(&['a', 'b', 'é', '7', '-', '中'])).collect()
    };
    match s {
        Schema::Null => AV::Null,
        Schema::Boolean => AV::Boolean(r.chance(50)),
        Schema::Int => AV::Int(if r.chance(50) {
            r.below(100) as i32
        } else {
            r.next() as i32
        }),
        Schema::Long => AV::Long(if r.chance(50) {
            r.below(100) as i64
        } else {
            r.next() as i64
        }),
        Schema::Float => AV::Float(r.below(1000) as f32 / 8.0),
        Schema::Double => AV::Double(r.below(1000) as f64 / 16.0),
        Schema::Bytes => AV::Bytes(if r.chance(5) {
            vec![0xff, 0xfe]
        } else {
            text(r).into_bytes()
        }),
        Schema::String => AV::String(text(r)),
        Schema::TimestampMillis => AV::TimestampMillis(r.next() as i64 >> 20),
        Schema::TimestampMicros => AV::TimestampMicros(r.next() as i64 >> 10),
        Schema::Date => AV::Date(r.below(30_000) as i32),
        Schema::Array(a) => AV::Array(
            (0..r.below(3))
                .map(|_| random_value(r, &a.items, names, depth + 1))
                .collect(),
        ),
        Schema::Map(m) => AV::Map(
            (0..r.below(3))
                .map(|i| (format!("k{i}"), random_value(r, &m.types, names, depth + 1)))
                .collect(),
        ),
        Schema::Union(u) => {
            let vs = u.variants();
            let i = if depth > 3 {
                vs.iter().position(|v| matches!(v, Schema::Null)).unwrap_or(0)
            } else {
                r.below(vs.len())
            };
            AV::Union(i as u32, Box::new(random_value(r, &vs[i], names, depth + 1)))
        }
        Schema::Record(rec) => AV::Record(
            rec.fields
                .iter()
                .map(|f| (f.name.clone(), random_value(r, &f.schema, names, depth + 1)))
                .collect(),
        ),
        Schema::Enum(e) => {
            let i = r.below(e.symbols.len());
            AV::Enum(i as u32, e.symbols[i].clone())
        }
        Schema::Fixed(f) => AV::Fixed(f.size, (0..f.size).map(|_| r.next() as u8).collect()),
        Schema::Ref { name } => random_value(r, names[name], names, depth),
        other => panic!("the generator does not write {other:?}"),
    }
}

/// What one random pair exercised: whether a plan compiled, and how many of its records both
/// sides decoded (the rest both refused, e.g. for invalid UTF-8 in `bytes`).
#[derive(Default)]
struct Seen {
    compiled: bool,
    decoded: usize,
    refused: usize,
}

fn check_random_pair(seed: u64) -> Result<Seen, TestCaseError> {
    let mut r = Rng::seeded(seed);
    let (wj, oj) = random_writer(&mut r);
    let writer = parse(&wj);
    let oracle_ok = SchemaCompatibility::can_read(&parse(&oj), schemas::config_change());
    let ours = ResolutionPlan::compile(&writer);
    prop_assert_eq!(
        ours.is_ok(),
        oracle_ok.is_ok(),
        "ours: {:?}\napache-avro: {:?}\nwriter: {}",
        ours.as_ref().err(),
        oracle_ok,
        wj
    );
    let Ok(plan) = ours else {
        return Ok(Seen::default());
    };
    let mut seen = Seen {
        compiled: true,
        ..Seen::default()
    };
    let resolved = apache_avro::schema::ResolvedSchema::try_from(&writer).unwrap();
    let names: HashMap<_, _> = resolved.get_names().iter().map(|(n, s)| (n.clone(), *s)).collect();
    // Decoded into one reused event too, as the pipeline does: it starts full of another
    // event's strings, settings of every value type and an inventory.
    let mut reused = sample();
    for _ in 0..8 {
        let v = random_value(&mut r, &writer, &names, 0);
        let body = apache_avro::to_avro_datum(&writer, v).unwrap();
        let mine = plan.decode(&body, DEFAULT_MAX_ARRAY_LEN).map_err(|e| e.to_string());
        if let Ok(fresh) = &mine {
            plan.decode_into(&body, DEFAULT_MAX_ARRAY_LEN, &mut reused).unwrap();
            prop_assert_eq!(&reused, fresh, "decoded into a used event; writer: {}", wj);
        }
        // Every strict prefix of a body is an error (never a panic, never a shorter record).
        let cut = r.below(body.len().max(1));
        prop_assert!(
            plan.decode(&body[..cut], DEFAULT_MAX_ARRAY_LEN).is_err(),
            "prefix of {} bytes",
            cut
        );
        // Any byte changed: an error or some record, never a panic.
        if !body.is_empty() {
            let mut bent = body.clone();
            let at = r.below(bent.len());
            bent[at] = r.next() as u8;
            let _ = plan.decode(&bent, DEFAULT_MAX_ARRAY_LEN);
        }
        let theirs = oracle_decode(&writer, &body);
        match (&mine, &theirs) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a, b, "writer: {}", wj);
                seen.decoded += 1;
            }
            (Err(_), Err(_)) => seen.refused += 1,
            _ => prop_assert!(false, "ours {:?}\napache-avro {:?}\nwriter: {}", mine, theirs, wj),
        }
    }
    Ok(seen)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// A plan compiles exactly when apache-avro says the pair resolves, and
    /// decodes what apache-avro's resolution decodes.
    #[test]
    fn plans_agree_with_apache_avro_resolution(seed in any::<u64>()) {
        check_random_pair(seed)?;
    }
}

/// The generator reaches both answers, often, and most records of resolvable
/// pairs decode: a property that only ever saw one outcome would prove little.
#[test]
fn the_generator_makes_both_resolvable_and_unresolvable_pairs() {
    let (mut compiled, mut refused, mut decoded, mut both_refused) = (0, 0, 0, 0);
    for seed in 1..400u64 {
        let seen = check_random_pair(seed * 7919).unwrap();
        if seen.compiled {
            compiled += 1;
        } else {
            refused += 1;
        }
        decoded += seen.decoded;
        both_refused += seen.refused;
    }
    assert!(
        compiled > 100 && refused > 100 && decoded > 8 * compiled / 2 && both_refused > 0,
        "{compiled} resolvable, {refused} refused; records: {decoded} decoded, {both_refused} refused by both"
    );
    eprintln!("{compiled} resolvable, {refused} refused; records: {decoded} decoded, {both_refused} refused by both");
}
