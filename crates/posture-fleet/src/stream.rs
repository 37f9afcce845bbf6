//! An endless stream of a fleet's events, for benchmarks and tests: a random device each time;
//! its SNAPSHOT (every applicable control, each compliant with the device's hygiene) if it has
//! sent nothing yet, else a RETIRE at a set share, else an UPSERT of a few of its controls, each
//! set to PASS or FAIL at even odds (fresh drift, so most events change something).

use crate::synth::ValueTable;
use crate::Fleet;
use posture_core::{Catalog, ChangeKind, ConfigChange, ConfigSource, ControlIdx};

/// How the stream is made.
#[derive(Clone, Debug)]
pub struct StreamSpec {
    /// Event time of the snapshots [`Stream::snapshot_into`] makes; event `j` of the stream
    /// (from 0) is at `start + (j + 1) * step_ms`.
    pub start: i64,
    /// Milliseconds of event time between two events of the stream.
    pub step_ms: i64,
    /// Controls each UPSERT sets (distinct ones, at most the device's).
    pub controls_per_event: usize,
    /// Share of events (after a device's SNAPSHOT) that retire their device.
    pub retire_share: f64,
}

/// The stream (see the module's documentation). Deterministic per seed.
pub struct Stream {
    spec: StreamSpec,
    table: ValueTable,
    rng: fastrand::Rng,
    seed: u64,
    next: u64,
    picked: Vec<(ControlIdx, bool)>,
}

impl Stream {
    /// A stream of `cat`'s fleets.
    pub fn new(cat: &Catalog, spec: StreamSpec, seed: u64) -> Stream {
        let mut rng = fastrand::Rng::with_seed(seed);
        Stream {
            table: ValueTable::new(cat, &mut rng),
            spec,
            rng,
            seed,
            next: 0,
            picked: Vec::new(),
        }
    }

    /// Sets `ev` to device `d`'s SNAPSHOT (its sequence the device's next), reusing `ev`'s
    /// allocations: for populating a large fleet quickly.
    pub fn snapshot_into(&mut self, cat: &Catalog, fleet: &mut Fleet, d: usize, ev: &mut ConfigChange) {
        let dev = &mut fleet.devices[d];
        dev.seq += 1;
        self.picked.clear();
        for &c in dev.controls.iter() {
            self.picked.push((c, self.rng.f64() < dev.hygiene));
        }
        self.table.fill(cat, self.picked.iter().copied(), &mut ev.settings);
        ev.event_id.clear();
        ev.event_id.push_str("snap-");
        ev.event_id.push_str(&dev.id);
        ev.tenant_id.clone_from(&dev.tenant);
        ev.device_id.clone_from(&dev.id);
        ev.observed_at = self.spec.start;
        ev.sequence = dev.seq;
        ev.source = ConfigSource::Agent;
        ev.kind = ChangeKind::Snapshot;
        match &mut ev.device {
            Some(info) => info.clone_from(&dev.info),
            None => ev.device = Some(dev.info.clone()),
        }
    }

    /// The next event of `fleet` (see the module's documentation).
    pub fn next(&mut self, cat: &Catalog, fleet: &mut Fleet) -> ConfigChange {
        let j = self.next;
        self.next += 1;
        let d = self.rng.usize(..fleet.len());
        let at = self.spec.start + (j as i64 + 1) * self.spec.step_ms;
        let mut ev = ConfigChange::new("", "", ChangeKind::Upsert, at, 0);
        if fleet.devices[d].seq == 0 {
            self.snapshot_into(cat, fleet, d, &mut ev);
            ev.observed_at = at;
        } else {
            let dev = &mut fleet.devices[d];
            dev.seq += 1;
            ev.tenant_id.clone_from(&dev.tenant);
            ev.device_id.clone_from(&dev.id);
            ev.sequence = dev.seq;
            if self.rng.f64() < self.spec.retire_share {
                ev.kind = ChangeKind::Retire;
                ev.source = ConfigSource::Mdm;
            } else {
                let k = self.spec.controls_per_event.clamp(1, dev.controls.len().max(1));
                self.picked.clear();
                while self.picked.len() < k.min(dev.controls.len()) {
                    let c = dev.controls[self.rng.usize(..dev.controls.len())];
                    if !self.picked.iter().any(|p| p.0 == c) {
                        self.picked.push((c, self.rng.bool()));
                    }
                }
                self.table.fill(cat, self.picked.iter().copied(), &mut ev.settings);
            }
        }
        ev.event_id = format!("{:08x}-{j:012x}", self.seed as u32);
        ev
    }

    /// The next `count` events.
    pub fn take(&mut self, cat: &Catalog, fleet: &mut Fleet, count: usize) -> Vec<ConfigChange> {
        (0..count).map(|_| self.next(cat, fleet)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each device starts with its SNAPSHOT, sequences increase per device, UPSERTs set the
    /// asked number of settings, and RETIREs come at about their share.
    #[test]
    fn the_stream_starts_each_device_with_a_snapshot() {
        let yaml: String = (0..20)
            .map(|i| {
                format!("  - {{ id: c{i}, title: C, category: os, check: {{ key: k{i}, op: eq, value: true }} }}\n")
            })
            .collect();
        let cat = Catalog::from_sources(&[("t.yaml", format!("baseline: t\nversion: 1\ncontrols:\n{yaml}"))]).unwrap();
        let mut fleet = Fleet::new(&cat, 30, 1, &mut fastrand::Rng::with_seed(5));
        let spec = StreamSpec {
            start: 1_795_341_600_000,
            step_ms: 60_000,
            controls_per_event: 3,
            retire_share: 0.05,
        };
        let mut stream = Stream::new(&cat, spec, 9);
        let events = stream.take(&cat, &mut fleet, 3000);
        let mut seen = std::collections::HashMap::new();
        let mut retires = 0;
        for (j, e) in events.iter().enumerate() {
            assert_eq!(e.observed_at, 1_795_341_600_000 + (j as i64 + 1) * 60_000);
            let last = seen.insert(e.device_id.clone(), e.sequence);
            match last {
                None => {
                    assert_eq!((e.kind, e.sequence), (ChangeKind::Snapshot, 1), "{e:?}");
                    assert_eq!(e.settings.len(), 20);
                    assert!(e.device.is_some());
                }
                Some(s) => {
                    assert_eq!(e.sequence, s + 1);
                    match e.kind {
                        ChangeKind::Retire => retires += 1,
                        k => {
                            assert_eq!(k, ChangeKind::Upsert);
                            assert_eq!(e.settings.len(), 3);
                        }
                    }
                }
            }
        }
        assert!((100..200).contains(&retires), "{retires} retires in 3000 events");
        let again = Stream::new(&cat, stream.spec.clone(), 9).take(
            &cat,
            &mut Fleet::new(&cat, 30, 1, &mut fastrand::Rng::with_seed(5)),
            3000,
        );
        assert_eq!(again, events, "the same seed, the same events");
    }
}
