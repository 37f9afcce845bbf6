//! A synthetic fleet for the evaluator figures: the 300-control baseline of
//! SPEC section 7, devices spread over 20 groups, a SNAPSHOT per device to
//! populate the state, and drift UPSERTs (a few settings each, on random
//! devices) encoded as Confluent-framed Avro, as they arrive from Kafka.
//!
//! Deterministic: the same seed gives the same events.

use posture_core::{Catalog, ChangeKind, ConfigChange, ConfigSource, DeviceInfo, Setting, Value};

/// Controls in the synthetic baseline (SPEC section 7: "300-control baseline").
pub const CONTROLS: usize = 300;
/// Event time of the first event (ms since the epoch).
pub const T0: i64 = 1_795_341_600_000;
/// Groups the devices are spread over.
pub const GROUPS: usize = 20;

/// The baseline as YAML: 200 boolean checks, 50 `all` of two numeric
/// checks, 50 dotted-version minimums; the five categories in turn.
pub fn baseline_yaml() -> String {
    let cats = ["application", "os", "network", "accounts", "security_controls"];
    let mut s = String::from("baseline: bench\nversion: 1\ncontrols:\n");
    for i in 0..CONTROLS {
        let cat = cats[i % cats.len()];
        let check = if i < 200 {
            format!("{{ key: k{i}, op: eq, value: true }}")
        } else if i < 250 {
            format!(
                "{{ all: [ {{ key: k{i}, op: ge, value: 10 }}, {{ key: k{}, op: lt, value: 100 }} ] }}",
                (i + 1) % CONTROLS
            )
        } else {
            format!("{{ key: k{i}, op: ge, value: \"10.0.19045\", version: true }}")
        };
        s += &format!(
            "  - {{ id: c{i}, title: C{i}, category: {cat}, points: {}, on_missing: fail, check: {check} }}\n",
            1 + i % 10
        );
    }
    s
}

/// The baseline, compiled.
pub fn catalog() -> Catalog {
    Catalog::from_sources(&[("bench.yaml", baseline_yaml())]).expect("the synthetic baseline is valid")
}

/// The value of setting `k{i}`, passing its check or not.
pub fn value(i: usize, good: bool) -> Value {
    if i < 200 {
        Value::Bool(good)
    } else if i < 250 {
        Value::Long(if good { 50 } else { 5 })
    } else {
        Value::String(if good { "10.0.22631".into() } else { "10.0.17763".into() })
    }
}

/// The name of device `d`.
pub fn device_id(d: usize) -> String {
    format!("device-{d:08}")
}

/// Fills `ev` with device `d`'s initial SNAPSHOT (all 300 settings, about
/// 80% passing), reusing its allocations.
pub fn snapshot_into(ev: &mut ConfigChange, d: usize, rng: &mut fastrand::Rng) {
    ev.event_id = format!("snap-{d}");
    ev.tenant_id.clear();
    ev.tenant_id.push_str("t1");
    ev.device_id = device_id(d);
    ev.observed_at = T0;
    ev.sequence = 1;
    ev.source = ConfigSource::Agent;
    ev.kind = ChangeKind::Snapshot;
    ev.device = Some(DeviceInfo {
        os_family: "windows".into(),
        os_version: "10.0.22631".into(),
        hostname: None,
        groups: vec![format!("group-{}", d % GROUPS)],
        tags: vec![],
    });
    ev.settings.resize_with(CONTROLS, || Setting {
        key: String::new(),
        value: Value::Null,
    });
    for (i, s) in ev.settings.iter_mut().enumerate() {
        if s.key.is_empty() {
            s.key = format!("k{i}");
        }
        s.value = value(i, rng.f64() < 0.8);
    }
}

/// An empty event, to be filled by [`snapshot_into`].
pub fn empty_event() -> ConfigChange {
    ConfigChange::new("", "", ChangeKind::Snapshot, T0, 0).with_event_id("")
}

/// Drift: UPSERTs on random devices, `k` distinct settings each set to a
/// random passing or failing value. Event times increase, and sequence
/// numbers increase per device (after the snapshot's 1), across calls, so
/// phases generated one after another are all fresh events.
pub struct Drift {
    rng: fastrand::Rng,
    seq: Vec<i64>,
    k: usize,
    next: u64,
    seed: u64,
}

impl Drift {
    /// Drift over `devices` devices, `k` settings per event.
    pub fn new(devices: usize, k: usize, seed: u64) -> Drift {
        Drift {
            rng: fastrand::Rng::with_seed(seed),
            seq: vec![1; devices],
            k: k.clamp(1, CONTROLS),
            next: 0,
            seed,
        }
    }

    /// The next `count` events.
    pub fn take(&mut self, count: usize) -> Vec<ConfigChange> {
        (0..count).map(|_| self.one()).collect()
    }

    fn one(&mut self) -> ConfigChange {
        let d = self.rng.usize(..self.seq.len());
        self.seq[d] += 1;
        let j = self.next;
        self.next += 1;
        let mut settings: Vec<Setting> = Vec::with_capacity(self.k);
        while settings.len() < self.k {
            let i = self.rng.usize(..CONTROLS);
            let key = format!("k{i}");
            if !settings.iter().any(|s| s.key == key) {
                settings.push(Setting {
                    key,
                    value: value(i, self.rng.bool()),
                });
            }
        }
        ConfigChange::new(
            "t1",
            device_id(d),
            ChangeKind::Upsert,
            T0 + 1000 + j as i64,
            self.seq[d],
        )
        .with_event_id(format!("{:08x}-{j:012x}", self.seed as u32))
        .with_settings(settings)
    }
}

/// `count` drift UPSERTs (see [`Drift`]).
pub fn upserts(devices: usize, count: usize, k: usize, seed: u64) -> Vec<ConfigChange> {
    Drift::new(devices, k, seed).take(count)
}

/// Device `d`'s SNAPSHOT as a Kafka record: (key, value).
pub fn snapshot_record(d: usize, rng: &mut fastrand::Rng) -> (Vec<u8>, Vec<u8>) {
    let mut ev = empty_event();
    snapshot_into(&mut ev, d, rng);
    (
        ev.device_id.clone().into_bytes(),
        posture_avro::encode_config_change(&ev, 1),
    )
}

/// Events as Kafka records: (key = device id, value).
pub fn records(events: &[ConfigChange]) -> Vec<(Vec<u8>, Vec<u8>)> {
    events
        .iter()
        .map(|e| {
            (
                e.device_id.clone().into_bytes(),
                posture_avro::encode_config_change(e, 1),
            )
        })
        .collect()
}

/// Encodes events as Kafka record values (Confluent framing, schema id 1).
pub fn encode(events: &[ConfigChange]) -> Vec<Vec<u8>> {
    events
        .iter()
        .map(|e| posture_avro::encode_config_change(e, 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_has_300_controls_in_five_categories() {
        let cat = catalog();
        assert_eq!(cat.controls.len(), CONTROLS);
        let cats: std::collections::BTreeSet<_> = cat.controls.iter().map(|c| c.category.as_str()).collect();
        assert_eq!(cats.len(), 5);
    }

    #[test]
    fn upserts_are_distinct_settings_in_order_and_decode_back() {
        let evs = upserts(100, 500, 5, 7);
        assert_eq!(evs.len(), 500);
        for w in evs.windows(2) {
            assert!(w[0].observed_at < w[1].observed_at);
        }
        for e in &evs {
            let mut keys: Vec<_> = e.settings.iter().map(|s| &s.key).collect();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), 5);
        }
        let dec = posture_avro::WireDecoder::new(None);
        for (e, b) in evs.iter().zip(encode(&evs)) {
            assert_eq!(&dec.decode(&b).unwrap(), e);
        }
        // Deterministic.
        assert_eq!(upserts(100, 50, 5, 7), upserts(100, 50, 5, 7));
    }
}
