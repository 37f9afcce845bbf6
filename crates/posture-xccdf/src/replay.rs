//! Per-device scanner results from a stream of posture events: the latest
//! value of every `xccdf:<rule id>` setting of each device, following the
//! event semantics of SPEC section 1 (SNAPSHOT replaces, UPSERT sets, REMOVE
//! unsets, RETIRE takes the device out of scores until its next event; an
//! event whose sequence is not above the device's last one is ignored).

use crate::result::{XccdfResult, SETTING_PREFIX};
use posture_core::{ChangeKind, ConfigChange, Value};
use std::collections::BTreeMap;

/// One device's current scanner results.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceResults {
    /// Rule id -> result string, as last reported.
    pub results: BTreeMap<String, String>,
    /// The last applied sequence.
    pub sequence: i64,
    /// Event time of the last applied event.
    pub last_seen: i64,
    /// Retired by its last event.
    pub retired: bool,
}

impl DeviceResults {
    /// A rule's result; strings that are not XCCDF results count as absent.
    pub fn result(&self, rule: &str) -> Option<XccdfResult> {
        self.results.get(rule).and_then(|s| XccdfResult::parse(s))
    }

    /// Result strings that are not XCCDF result values, for warnings.
    pub fn unknown_values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.results
            .iter()
            .filter(|(_, v)| XccdfResult::parse(v).is_none())
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Devices by (tenant, device id).
#[derive(Clone, Debug, Default)]
pub struct Replay {
    /// Every device seen.
    pub devices: BTreeMap<(String, String), DeviceResults>,
    /// Events ignored as stale or duplicate.
    pub stale: u64,
}

impl Replay {
    /// Applies one event.
    pub fn apply(&mut self, ev: &ConfigChange) {
        let key = (ev.tenant_id.clone(), ev.device_id.clone());
        let first = !self.devices.contains_key(&key);
        let d = self.devices.entry(key).or_default();
        if !first && ev.sequence <= d.sequence {
            self.stale += 1;
            return;
        }
        d.sequence = ev.sequence;
        d.last_seen = d.last_seen.max(ev.observed_at);
        d.retired = ev.kind == ChangeKind::Retire;
        let ours = ev.settings.iter().filter_map(|s| {
            s.key
                .strip_prefix(SETTING_PREFIX)
                .map(|rule| (rule.to_string(), &s.value))
        });
        match ev.kind {
            ChangeKind::Retire => {}
            ChangeKind::Snapshot | ChangeKind::Upsert => {
                if ev.kind == ChangeKind::Snapshot {
                    d.results.clear();
                }
                for (rule, v) in ours {
                    match v {
                        Value::Null => {
                            d.results.remove(&rule);
                        }
                        Value::String(s) => {
                            d.results.insert(rule, s.clone());
                        }
                        other => {
                            d.results.insert(rule, format!("{other:?}"));
                        }
                    }
                }
            }
            ChangeKind::Remove => {
                for (rule, _) in ours {
                    d.results.remove(&rule);
                }
            }
        }
    }

    /// The devices that count in scores at the end of the stream: not
    /// retired, and seen within `inactivity_ms` of the latest event time.
    pub fn active(&self, inactivity_ms: i64) -> impl Iterator<Item = (&(String, String), &DeviceResults)> {
        let latest = self.devices.values().map(|d| d.last_seen).max().unwrap_or(0);
        self.devices
            .iter()
            .filter(move |(_, d)| !d.retired && d.last_seen >= latest.saturating_sub(inactivity_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posture_core::{ConfigSource, Setting};

    fn ev(dev: &str, seq: i64, kind: ChangeKind, settings: &[(&str, Value)]) -> ConfigChange {
        ConfigChange::new("t", dev, kind, seq * 1000, seq)
            .with_event_id(format!("{dev}-{seq}"))
            .with_source(ConfigSource::Scanner)
            .with_settings(settings.iter().map(|(k, v)| Setting {
                key: k.to_string(),
                value: v.clone(),
            }))
    }

    fn s(x: &str) -> Value {
        Value::String(x.into())
    }

    #[test]
    fn follows_event_semantics() {
        let mut r = Replay::default();
        r.apply(&ev(
            "a",
            1,
            ChangeKind::Snapshot,
            &[("xccdf:r1", s("pass")), ("xccdf:r2", s("fail")), ("other", s("x"))],
        ));
        r.apply(&ev("a", 1, ChangeKind::Snapshot, &[]));
        assert_eq!(r.stale, 1);
        let key = ("t".to_string(), "a".to_string());
        assert_eq!(r.devices[&key].results.len(), 2, "other keys are not kept");
        r.apply(&ev(
            "a",
            2,
            ChangeKind::Upsert,
            &[("xccdf:r1", s("fail")), ("xccdf:r2", Value::Null)],
        ));
        assert_eq!(r.devices[&key].result("r1"), Some(XccdfResult::Fail));
        assert_eq!(r.devices[&key].result("r2"), None);
        r.apply(&ev("a", 3, ChangeKind::Snapshot, &[("xccdf:r3", s("weird"))]));
        assert_eq!(r.devices[&key].result("r1"), None, "snapshot replaces");
        assert_eq!(r.devices[&key].unknown_values().count(), 1);
        r.apply(&ev("a", 4, ChangeKind::Remove, &[("xccdf:r3", Value::Null)]));
        assert!(r.devices[&key].results.is_empty());
        r.apply(&ev("b", 5, ChangeKind::Snapshot, &[("xccdf:r1", s("pass"))]));
        r.apply(&ev("a", 6, ChangeKind::Retire, &[]));
        let active: Vec<_> = r.active(i64::MAX).map(|(k, _)| k.1.as_str()).collect();
        assert_eq!(active, ["b"]);
        r.apply(&ev("a", 9, ChangeKind::Upsert, &[]));
        assert_eq!(r.active(i64::MAX).count(), 2, "back with its next event");
        assert_eq!(r.active(3_000).count(), 1, "b is inactive 4 s before the latest event");
    }
}
