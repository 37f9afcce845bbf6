//! The configuration-change event of SPEC section 1, and its JSON-lines form
//! (for replay, backfill and tests). Avro decoding lives in the ingest stage
//! and produces the same [`ConfigChange`].

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// Which system reported the change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConfigSource {
    /// An agent running on the device (`AGENT`).
    Agent,
    /// Windows Group Policy (`GROUP_POLICY`).
    GroupPolicy,
    /// A mobile device management service (`MDM`).
    Mdm,
    /// Microsoft Intune (`INTUNE`).
    Intune,
    /// A configuration scanner, e.g. XCCDF rule results (`SCANNER`).
    Scanner,
    /// Any other reporter (`OTHER`).
    Other,
}

/// How the event's settings change the device's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChangeKind {
    /// Sets the listed settings.
    Upsert,
    /// Makes the listed keys absent (values ignored).
    Remove,
    /// Replaces the whole configuration with the listed settings.
    Snapshot,
    /// Removes the device from every score until its next event.
    Retire,
}

/// A setting value: `union {null, boolean, long, double, string, array<string>}`.
/// `Null` counts as absent.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// No value (JSON `null`): leaves evaluate it as an absent setting.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer; compares numerically with doubles.
    Long(i64),
    /// A 64-bit float; JSON integers beyond the `i64` range are read as doubles.
    Double(f64),
    /// A string; compared case-sensitively, or per component as a dotted version.
    String(String),
    /// A list of strings, the value `contains` looks into.
    Array(Vec<String>),
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Long(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Long(v.into())
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Double(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::String(v)
    }
}

/// One setting of a device.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    /// Dotted setting name, e.g. `windows.firewall.domain.enabled`; non-empty. A key that
    /// no control reads is ignored (and counted).
    pub key: String,
    /// The setting's value; `null` or omitted means absent. REMOVE events ignore it.
    #[serde(default = "null_value")]
    pub value: Value,
}

fn null_value() -> Value {
    Value::Null
}

/// The device's inventory; when an event carries one it replaces the old one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceInfo {
    /// OS family in lower case (`windows`, `macos`, `linux`, ...), matched exactly by
    /// `applies_to.os_family`; non-empty.
    pub os_family: String,
    /// Dotted OS version (`10.0.19045`), compared per numeric component by
    /// `applies_to.os_version`.
    pub os_version: String,
    /// Host name, for people; not used in scoring. `None` when unknown.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Device groups: each is a score scope of the tenant, and can select controls
    /// (`applies_to.groups`) and exceptions. Names must pass [`crate::scope_name_problem`].
    #[serde(default)]
    pub groups: Vec<String>,
    /// Free-form tags: they select controls (`applies_to.tags`) and exceptions, but are not
    /// score scopes.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A configuration-change event (`posture.v1.ConfigChange`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigChange {
    /// Unique per event; non-empty. Names the event in error reports (duplicates and stale
    /// events are caught by `sequence`).
    pub event_id: String,
    /// The organisation; every score is per tenant. Must pass [`crate::scope_name_problem`].
    pub tenant_id: String,
    /// The device, unique within its tenant; the Kafka record key, so one device's events
    /// stay in one partition and in order.
    pub device_id: String,
    /// Event time, milliseconds since the epoch.
    #[serde(deserialize_with = "de_time")]
    pub observed_at: i64,
    /// Per-device, strictly increasing.
    pub sequence: i64,
    /// Which system reported the change; carried along, not used in scoring.
    pub source: ConfigSource,
    /// How `settings` change the device's configuration.
    pub kind: ChangeKind,
    /// A new inventory, replacing the device's current one; `None` keeps the current one.
    #[serde(default)]
    pub device: Option<DeviceInfo>,
    /// The settings to set (UPSERT, SNAPSHOT) or make absent (REMOVE); empty for RETIRE.
    #[serde(default)]
    pub settings: Vec<Setting>,
}

impl ConfigChange {
    /// A new event: `kind` for device `device_id` of tenant `tenant_id`, observed at
    /// `observed_at` (ms since the epoch), with the device's `sequence`. Its event id is
    /// `"{tenant}/{device}/{sequence}"`, its source AGENT, and it carries no inventory and no
    /// settings: the `with_*` methods set those (the fields stay public).
    ///
    /// ```
    /// use posture_core::{ChangeKind, ConfigChange};
    /// let ev = ConfigChange::new("t1", "d1", ChangeKind::Snapshot, 1_795_341_600_000, 1)
    ///     .with_inventory("linux", "6.1", &["servers"], &[])
    ///     .with_setting("firewall.enabled", true)
    ///     .with_setting("ssh.port", 22);
    /// assert_eq!(ev.event_id, "t1/d1/1");
    /// assert_eq!(ev.settings.len(), 2);
    /// ```
    pub fn new(
        tenant_id: impl Into<String>,
        device_id: impl Into<String>,
        kind: ChangeKind,
        observed_at: i64,
        sequence: i64,
    ) -> ConfigChange {
        let (tenant_id, device_id) = (tenant_id.into(), device_id.into());
        ConfigChange {
            event_id: format!("{tenant_id}/{device_id}/{sequence}"),
            tenant_id,
            device_id,
            observed_at,
            sequence,
            source: ConfigSource::Agent,
            kind,
            device: None,
            settings: Vec::new(),
        }
    }

    /// The event with another event id.
    pub fn with_event_id(mut self, event_id: impl Into<String>) -> ConfigChange {
        self.event_id = event_id.into();
        self
    }

    /// The event as reported by another system.
    pub fn with_source(mut self, source: ConfigSource) -> ConfigChange {
        self.source = source;
        self
    }

    /// The event carrying a new inventory (no host name).
    pub fn with_inventory(
        mut self,
        os_family: impl Into<String>,
        os_version: impl Into<String>,
        groups: &[&str],
        tags: &[&str],
    ) -> ConfigChange {
        self.device = Some(DeviceInfo {
            os_family: os_family.into(),
            os_version: os_version.into(),
            hostname: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        });
        self
    }

    /// The event carrying `device` as its inventory (`None`: it keeps the device's current one).
    pub fn with_device(mut self, device: Option<DeviceInfo>) -> ConfigChange {
        self.device = device;
        self
    }

    /// The event with `settings` added, in order.
    pub fn with_settings(mut self, settings: impl IntoIterator<Item = Setting>) -> ConfigChange {
        self.settings.extend(settings);
        self
    }

    /// The event with one more setting.
    pub fn with_setting(mut self, key: impl Into<String>, value: impl Into<Value>) -> ConfigChange {
        self.settings.push(Setting {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// One JSON line (no newline), the form `from_json` reads.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events always serialize")
    }

    /// Parses one JSON line. The error says which field is wrong.
    pub fn from_json(line: &str) -> Result<ConfigChange, String> {
        serde_json::from_str(line).map_err(|e| e.to_string())
    }
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("milliseconds since the epoch or an RFC 3339 string")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom("observed_at out of range"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            crate::time::parse_time(v).map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_none(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Long(n) => s.serialize_i64(*n),
            Value::Double(d) => s.serialize_f64(*d),
            Value::String(x) => s.serialize_str(x),
            Value::Array(a) => a.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("null, a boolean, a number, a string or an array of strings")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Long(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                Ok(i64::try_from(v).map(Value::Long).unwrap_or(Value::Double(v as f64)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Double(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value::String(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
                Ok(Value::String(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(Value::Array(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_fields() {
        let e = ConfigChange::from_json(
            r#"{"event_id":"e1","tenant_id":"t1","device_id":"d1","observed_at":"2026-11-22T10:00:00Z",
               "sequence":3,"source":"GROUP_POLICY","kind":"UPSERT",
               "device":{"os_family":"windows","os_version":"10.0.19045","hostname":null,"groups":["g"],"tags":[]},
               "settings":[{"key":"a","value":true},{"key":"b","value":5},{"key":"c","value":2.5},
                           {"key":"d","value":"x"},{"key":"e","value":["p","q"]},{"key":"f","value":null}]}"#,
        )
        .unwrap();
        assert_eq!(e.observed_at, 1_795_341_600_000);
        assert_eq!(e.source, ConfigSource::GroupPolicy);
        assert_eq!(e.device.as_ref().unwrap().groups, vec!["g"]);
        let vals: Vec<_> = e.settings.iter().map(|s| s.value.clone()).collect();
        assert_eq!(
            vals,
            vec![
                Value::Bool(true),
                Value::Long(5),
                Value::Double(2.5),
                Value::String("x".into()),
                Value::Array(vec!["p".into(), "q".into()]),
                Value::Null
            ]
        );
    }

    #[test]
    fn json_round_trip() {
        let line = r#"{"event_id":"e","tenant_id":"t","device_id":"d","observed_at":5,"sequence":1,"source":"MDM","kind":"SNAPSHOT","device":null,"settings":[{"key":"a","value":["x"]},{"key":"b","value":null},{"key":"c","value":1.5}]}"#;
        let e = ConfigChange::from_json(line).unwrap();
        assert_eq!(e.to_json(), line);
    }

    #[test]
    fn errors_name_the_field() {
        let err = ConfigChange::from_json(
            r#"{"event_id":"e1","tenant_id":"t1","device_id":"d1","observed_at":1,"sequence":1,"source":"AGENT","kind":"ZAP"}"#,
        )
        .unwrap_err();
        assert!(err.contains("ZAP"), "{err}");
        let err = ConfigChange::from_json(r#"{"event_id":"e1"}"#).unwrap_err();
        assert!(err.contains("missing field"), "{err}");
        let err = ConfigChange::from_json(
            r#"{"event_id":"e","tenant_id":"t","device_id":"d","observed_at":1,"sequence":1,"source":"AGENT","kind":"UPSERT","settings":[{"key":"k","value":{"x":1}}]}"#,
        )
        .unwrap_err();
        assert!(err.contains("array of strings"), "{err}");
    }
}
