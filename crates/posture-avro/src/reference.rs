//! The reference path: `ConfigChange` through `apache-avro`'s generic
//! [`apache_avro::types::Value`] and the parsed schema.
//!
//! It exists as the oracle the hand-written decoder is property-tested against,
//! as the baseline of the decode benchmark, and as the engine of container-file
//! reading (where records may need schema resolution from an older or newer
//! writer schema). [`from_value`] is strict: a value of the wrong shape is a
//! [`DecodeError::Malformed`], never a default.

use crate::binary::{kind_index, put_header, source_index};
use crate::error::DecodeError;
use crate::schemas;
use apache_avro::types::Value as AvroValue;
use posture_core::{ChangeKind, ConfigChange, ConfigSource, DeviceInfo, Setting, Value};

/// Decodes an Avro body (no wire header) written with the embedded schema,
/// through `apache_avro::from_avro_datum`, and maps it into a [`ConfigChange`].
/// Bytes left after the record are [`DecodeError::TrailingBytes`], as in the
/// hand decoder.
pub fn decode_config_change_body(body: &[u8]) -> Result<ConfigChange, DecodeError> {
    decode_with(schemas::config_change(), None, body)
}

/// Decodes an Avro body written with `writer` through `apache-avro`'s schema
/// resolution into the embedded schema: the oracle of
/// [`ResolutionPlan`](crate::resolve::ResolutionPlan).
pub fn decode_resolved_body(writer: &apache_avro::Schema, body: &[u8]) -> Result<ConfigChange, DecodeError> {
    decode_with(writer, Some(schemas::config_change()), body)
}

fn decode_with(
    writer: &apache_avro::Schema,
    reader: Option<&apache_avro::Schema>,
    body: &[u8],
) -> Result<ConfigChange, DecodeError> {
    let mut cur = std::io::Cursor::new(body);
    let v = apache_avro::from_avro_datum(writer, &mut cur, reader)
        .map_err(|e| DecodeError::malformed(cur.position() as usize, e.to_string()))?;
    let ev = from_value(v)?;
    let used = cur.position() as usize;
    if used != body.len() {
        return Err(DecodeError::TrailingBytes {
            count: body.len() - used,
        });
    }
    Ok(ev)
}

/// Encodes an event in the wire format through `apache_avro::to_avro_datum`
/// (validating it against the schema on the way). The hand-written
/// [`crate::encode_config_change`] produces the same bytes, faster.
pub fn encode_config_change(ev: &ConfigChange, schema_id: u32) -> Result<Vec<u8>, apache_avro::Error> {
    let body = apache_avro::to_avro_datum(schemas::config_change(), to_value(ev))?;
    let mut out = Vec::with_capacity(5 + body.len());
    put_header(&mut out, schema_id);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The `apache-avro` value of an event, shaped by `config_change.avsc`.
pub fn to_value(ev: &ConfigChange) -> AvroValue {
    let s = |x: &str| AvroValue::String(x.to_owned());
    let strs = |xs: &[String]| AvroValue::Array(xs.iter().map(|x| s(x)).collect());
    let device = match &ev.device {
        None => AvroValue::Union(0, Box::new(AvroValue::Null)),
        Some(d) => AvroValue::Union(
            1,
            Box::new(AvroValue::Record(vec![
                ("os_family".into(), s(&d.os_family)),
                ("os_version".into(), s(&d.os_version)),
                (
                    "hostname".into(),
                    match &d.hostname {
                        None => AvroValue::Union(0, Box::new(AvroValue::Null)),
                        Some(h) => AvroValue::Union(1, Box::new(s(h))),
                    },
                ),
                ("groups".into(), strs(&d.groups)),
                ("tags".into(), strs(&d.tags)),
            ])),
        ),
    };
    let settings = ev
        .settings
        .iter()
        .map(|st| {
            let (i, v) = match &st.value {
                Value::Null => (0, AvroValue::Null),
                Value::Bool(b) => (1, AvroValue::Boolean(*b)),
                Value::Long(n) => (2, AvroValue::Long(*n)),
                Value::Double(d) => (3, AvroValue::Double(*d)),
                Value::String(x) => (4, s(x)),
                Value::Array(a) => (5, strs(a)),
            };
            AvroValue::Record(vec![
                ("key".into(), s(&st.key)),
                ("value".into(), AvroValue::Union(i, Box::new(v))),
            ])
        })
        .collect();
    AvroValue::Record(vec![
        ("event_id".into(), s(&ev.event_id)),
        ("tenant_id".into(), s(&ev.tenant_id)),
        ("device_id".into(), s(&ev.device_id)),
        ("observed_at".into(), AvroValue::TimestampMillis(ev.observed_at)),
        ("sequence".into(), AvroValue::Long(ev.sequence)),
        (
            "source".into(),
            AvroValue::Enum(source_index(ev.source) as u32, source_symbol(ev.source).into()),
        ),
        (
            "kind".into(),
            AvroValue::Enum(kind_index(ev.kind) as u32, kind_symbol(ev.kind).into()),
        ),
        ("device".into(), device),
        ("settings".into(), AvroValue::Array(settings)),
    ])
}

/// Maps a decoded (and, if needed, resolved) `ConfigChange` value into the
/// core type. Fields are looked up by name; a missing field or a value of
/// another shape is [`DecodeError::Malformed`].
pub fn from_value(v: AvroValue) -> Result<ConfigChange, DecodeError> {
    let mut f = Fields::of(v, "ConfigChange")?;
    let event_id = string(f.take("event_id")?, "event_id")?;
    let tenant_id = string(f.take("tenant_id")?, "tenant_id")?;
    let device_id = string(f.take("device_id")?, "device_id")?;
    let observed_at = long(f.take("observed_at")?, "observed_at")?;
    let sequence = long(f.take("sequence")?, "sequence")?;
    let source = match symbol(f.take("source")?, "source")?.as_str() {
        "AGENT" => ConfigSource::Agent,
        "GROUP_POLICY" => ConfigSource::GroupPolicy,
        "MDM" => ConfigSource::Mdm,
        "INTUNE" => ConfigSource::Intune,
        "SCANNER" => ConfigSource::Scanner,
        "OTHER" => ConfigSource::Other,
        other => return Err(bad("source", format!("unknown symbol {other:?}"))),
    };
    let kind = match symbol(f.take("kind")?, "kind")?.as_str() {
        "UPSERT" => ChangeKind::Upsert,
        "REMOVE" => ChangeKind::Remove,
        "SNAPSHOT" => ChangeKind::Snapshot,
        "RETIRE" => ChangeKind::Retire,
        other => return Err(bad("kind", format!("unknown symbol {other:?}"))),
    };
    let device = match unwrap_union(f.take("device")?) {
        AvroValue::Null => None,
        v @ AvroValue::Record(_) => {
            let mut d = Fields::of(v, "device")?;
            Some(DeviceInfo {
                os_family: string(d.take("os_family")?, "device.os_family")?,
                os_version: string(d.take("os_version")?, "device.os_version")?,
                hostname: match unwrap_union(d.take("hostname")?) {
                    AvroValue::Null => None,
                    v => Some(string(v, "device.hostname")?),
                },
                groups: strings(d.take("groups")?, "device.groups")?,
                tags: strings(d.take("tags")?, "device.tags")?,
            })
        }
        v => return Err(bad("device", format!("expected null or a record, got {}", shape(&v)))),
    };
    let settings = match f.take("settings")? {
        AvroValue::Array(items) => items
            .into_iter()
            .map(|it| {
                let mut s = Fields::of(it, "settings")?;
                let key = string(s.take("key")?, "settings.key")?;
                let value = match unwrap_union(s.take("value")?) {
                    AvroValue::Null => Value::Null,
                    AvroValue::Boolean(b) => Value::Bool(b),
                    AvroValue::Long(n) => Value::Long(n),
                    AvroValue::Double(d) => Value::Double(d),
                    AvroValue::String(x) => Value::String(x),
                    v @ AvroValue::Array(_) => Value::Array(strings(v, "settings.value")?),
                    v => return Err(bad("settings.value", format!("unexpected {}", shape(&v)))),
                };
                Ok(Setting { key, value })
            })
            .collect::<Result<Vec<_>, _>>()?,
        v => return Err(bad("settings", format!("expected an array, got {}", shape(&v)))),
    };
    Ok(ConfigChange {
        event_id,
        tenant_id,
        device_id,
        observed_at,
        sequence,
        source,
        kind,
        device,
        settings,
    })
}

/// The schema symbol of a source.
pub fn source_symbol(s: ConfigSource) -> &'static str {
    match s {
        ConfigSource::Agent => "AGENT",
        ConfigSource::GroupPolicy => "GROUP_POLICY",
        ConfigSource::Mdm => "MDM",
        ConfigSource::Intune => "INTUNE",
        ConfigSource::Scanner => "SCANNER",
        ConfigSource::Other => "OTHER",
    }
}

/// The schema symbol of a change kind.
pub fn kind_symbol(k: ChangeKind) -> &'static str {
    match k {
        ChangeKind::Upsert => "UPSERT",
        ChangeKind::Remove => "REMOVE",
        ChangeKind::Snapshot => "SNAPSHOT",
        ChangeKind::Retire => "RETIRE",
    }
}

/// The fields of a record value, taken out by name.
pub(crate) struct Fields {
    what: &'static str,
    fields: Vec<(String, AvroValue)>,
}

impl Fields {
    pub(crate) fn of(v: AvroValue, what: &'static str) -> Result<Fields, DecodeError> {
        match v {
            AvroValue::Record(fields) => Ok(Fields { what, fields }),
            v => Err(bad(what, format!("expected a record, got {}", shape(&v)))),
        }
    }

    pub(crate) fn take(&mut self, name: &str) -> Result<AvroValue, DecodeError> {
        match self.fields.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => Ok(std::mem::replace(v, AvroValue::Null)),
            None => Err(bad(self.what, format!("missing field {name}"))),
        }
    }
}

pub(crate) fn bad(what: &str, detail: String) -> DecodeError {
    DecodeError::malformed(0, format!("{what}: {detail}"))
}

pub(crate) fn unwrap_union(v: AvroValue) -> AvroValue {
    match v {
        AvroValue::Union(_, inner) => *inner,
        v => v,
    }
}

pub(crate) fn string(v: AvroValue, what: &str) -> Result<String, DecodeError> {
    match v {
        AvroValue::String(s) => Ok(s),
        v => Err(bad(what, format!("expected a string, got {}", shape(&v)))),
    }
}

pub(crate) fn long(v: AvroValue, what: &str) -> Result<i64, DecodeError> {
    match v {
        AvroValue::Long(n) | AvroValue::TimestampMillis(n) => Ok(n),
        v => Err(bad(what, format!("expected a long, got {}", shape(&v)))),
    }
}

pub(crate) fn symbol(v: AvroValue, what: &str) -> Result<String, DecodeError> {
    match v {
        AvroValue::Enum(_, s) => Ok(s),
        v => Err(bad(what, format!("expected an enum, got {}", shape(&v)))),
    }
}

pub(crate) fn strings(v: AvroValue, what: &str) -> Result<Vec<String>, DecodeError> {
    match v {
        AvroValue::Array(items) => items.into_iter().map(|x| string(x, what)).collect(),
        v => Err(bad(what, format!("expected an array of strings, got {}", shape(&v)))),
    }
}

/// A short name of a value's variant, for error messages (never the value
/// itself, which may be large or sensitive).
pub(crate) fn shape(v: &AvroValue) -> &'static str {
    match v {
        AvroValue::Null => "null",
        AvroValue::Boolean(_) => "boolean",
        AvroValue::Int(_) => "int",
        AvroValue::Long(_) => "long",
        AvroValue::Float(_) => "float",
        AvroValue::Double(_) => "double",
        AvroValue::Bytes(_) => "bytes",
        AvroValue::String(_) => "string",
        AvroValue::Fixed(..) => "fixed",
        AvroValue::Enum(..) => "enum",
        AvroValue::Union(..) => "union",
        AvroValue::Array(_) => "array",
        AvroValue::Map(_) => "map",
        AvroValue::Record(_) => "record",
        _ => "logical value",
    }
}
