//! The benchmark's fleet: the 300-control baseline of SPEC section 7, and a [`posture_fleet`]
//! fleet against it (the one generator of synthetic events): a SNAPSHOT per device to populate
//! the state, and drift UPSERTs (a few controls each, on random devices) encoded as
//! Confluent-framed Avro, as they arrive from Kafka.
//!
//! Deterministic: the same seed gives the same events.

use posture_core::{Catalog, ChangeKind, ConfigChange};
use posture_fleet::{Fleet, Stream, StreamSpec};
use std::sync::Arc;

/// Controls in the synthetic baseline (SPEC section 7: "300-control baseline").
pub const CONTROLS: usize = 300;
/// Event time of the first event (ms since the epoch).
pub const T0: i64 = 1_795_341_600_000;

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

/// The benchmark's fleet: [`posture_fleet`] devices (one tenant, the OS and group mix of every
/// synthetic fleet) against [`catalog`], and the stream of their drift: UPSERTs of
/// `settings_per_event` controls each on random devices, every control PASS or FAIL at even odds.
/// Event times increase, and sequence numbers per device, across calls, so phases made one after
/// another are all fresh events.
pub struct BenchFleet {
    /// The synthetic baseline, compiled.
    pub catalog: Arc<Catalog>,
    fleet: Fleet,
    stream: Stream,
}

impl BenchFleet {
    /// `devices` devices; `seed` makes the fleet and its events.
    pub fn new(devices: usize, settings_per_event: usize, seed: u64) -> BenchFleet {
        let catalog = Arc::new(catalog());
        let fleet = Fleet::new(&catalog, devices, 1, &mut fastrand::Rng::with_seed(seed));
        let spec = StreamSpec {
            start: T0,
            step_ms: 1,
            controls_per_event: settings_per_event.clamp(1, CONTROLS),
            retire_share: 0.0,
        };
        let stream = Stream::new(&catalog, spec, seed);
        BenchFleet { catalog, fleet, stream }
    }

    /// Devices in the fleet.
    pub fn devices(&self) -> usize {
        self.fleet.len()
    }

    /// Sets `ev` to device `d`'s SNAPSHOT (all 300 settings, each passing with the device's
    /// hygiene), reusing its allocations.
    pub fn snapshot_into(&mut self, d: usize, ev: &mut ConfigChange) {
        self.stream.snapshot_into(&self.catalog, &mut self.fleet, d, ev);
    }

    /// Device `d`'s SNAPSHOT as a Kafka record: (key, value).
    pub fn snapshot_record(&mut self, d: usize) -> (Vec<u8>, Vec<u8>) {
        let mut ev = empty_event();
        self.snapshot_into(d, &mut ev);
        (
            ev.device_id.clone().into_bytes(),
            posture_avro::encode_config_change(&ev, 1),
        )
    }

    /// The next `count` drift events (every device's SNAPSHOT first, where one has sent none).
    pub fn drift(&mut self, count: usize) -> Vec<ConfigChange> {
        self.stream.take(&self.catalog, &mut self.fleet, count)
    }
}

/// An empty event, to be filled by [`BenchFleet::snapshot_into`].
pub fn empty_event() -> ConfigChange {
    ConfigChange::new("", "", ChangeKind::Snapshot, T0, 0).with_event_id("")
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
    fn drift_sets_distinct_settings_in_order_and_decodes_back() {
        let drift = |seed| {
            let mut f = BenchFleet::new(100, 5, seed);
            let mut ev = empty_event();
            for d in 0..100 {
                f.snapshot_into(d, &mut ev);
            }
            f.drift(500)
        };
        let evs = drift(7);
        assert_eq!(evs.len(), 500);
        for w in evs.windows(2) {
            assert!(w[0].observed_at < w[1].observed_at);
        }
        for e in &evs {
            assert_eq!(e.kind, ChangeKind::Upsert);
            let mut keys: Vec<_> = e.settings.iter().map(|s| &s.key).collect();
            keys.sort();
            keys.dedup();
            assert!(
                (1..=10).contains(&keys.len()),
                "5 controls, one or two keys each (some shared): {keys:?}"
            );
        }
        let dec = posture_avro::WireDecoder::new(None);
        for (e, b) in evs.iter().zip(encode(&evs)) {
            assert_eq!(&dec.decode(&b).unwrap(), e);
        }
        // Deterministic.
        assert_eq!(drift(7)[..50], evs[..50]);
    }
}
