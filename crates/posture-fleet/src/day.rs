//! A simulated day of a fleet (`posture simulate`, the demo): each device's SNAPSHOT over the
//! first 10 minutes; then settings drift (a control flips, mostly towards the device's
//! hygiene), remediation waves fix one control across one group within 30 minutes, a few devices
//! retire, and a small share of events is re-sent (duplicates) or sent with an old sequence
//! (stale), a little later in the stream.

use crate::synth::settings_for;
use crate::{Device, Fleet, GROUPS};
use posture_core::{Catalog, ChangeKind, ConfigChange, ConfigSource, ControlIdx, DeviceInfo, Setting};
use std::collections::HashMap;

/// What the day holds.
#[derive(Clone, Debug)]
pub struct DaySpec {
    /// Event time of the first snapshot (ms since the epoch).
    pub start: i64,
    /// Hours of event time after the start.
    pub hours: f64,
    /// Drift events per device per hour.
    pub drift_per_hour: f64,
    /// Hours between remediation waves (0: none).
    pub wave_every_hours: f64,
    /// Share of devices retired during the day.
    pub retire_rate: f64,
    /// Share of events re-sent as exact duplicates.
    pub duplicate_rate: f64,
    /// Share of events followed by a stale (old-sequence) copy.
    pub stale_rate: f64,
}

/// The day's events in arrival order, and how many of each kind it made.
pub struct Day {
    /// Every event, in the order a producer sends them: by event time, sequences increasing per
    /// device, the duplicates and stale copies spliced in a little later.
    pub events: Vec<ConfigChange>,
    /// Drift events.
    pub drift: usize,
    /// Remediation waves.
    pub waves: usize,
    /// Retirements.
    pub retirements: usize,
    /// Exact duplicates.
    pub duplicates: usize,
    /// Stale copies.
    pub stale: usize,
    /// Event time of the day's end.
    pub end: i64,
}

/// The day of `fleet` (whose devices have sent nothing yet) against `cat`.
pub fn day(cat: &Catalog, fleet: &mut Fleet, spec: &DaySpec, rng: &mut fastrand::Rng) -> Day {
    let devs = &mut fleet.devices;
    let n = devs.len();
    let start = spec.start;
    let end = start + (spec.hours * 3_600_000.0) as i64;
    let mut events: Vec<ConfigChange> = Vec::new();
    let mut next_event = 0u64;
    let mut mk = |d: &mut Device,
                  t: i64,
                  kind: ChangeKind,
                  device: Option<DeviceInfo>,
                  settings: Vec<Setting>,
                  source: ConfigSource| {
        d.seq += 1;
        next_event += 1;
        ConfigChange::new(d.tenant.clone(), d.id.clone(), kind, t, d.seq)
            .with_event_id(format!("sim-{:010}", next_event))
            .with_source(source)
            .with_device(device)
            .with_settings(settings)
    };
    // Initial snapshots over the first 10 minutes.
    for d in devs.iter_mut() {
        let t = start + rng.i64(0..600_000);
        let want: Vec<(ControlIdx, bool)> = d.controls.iter().map(|&c| (c, rng.f64() < d.hygiene)).collect();
        let settings = settings_for(cat, &want, rng);
        let info = d.info.clone();
        events.push(mk(
            d,
            t,
            ChangeKind::Snapshot,
            Some(info),
            settings,
            ConfigSource::Agent,
        ));
    }
    let span = (end - start - 600_000).max(1);
    // Drift: a control flips, mostly towards the device's hygiene.
    let drift_count = if n == 0 {
        0
    } else {
        (n as f64 * spec.drift_per_hour * spec.hours) as usize
    };
    for _ in 0..drift_count {
        let d = &mut devs[rng.usize(..n)];
        if d.controls.is_empty() {
            continue;
        }
        let c = d.controls[rng.usize(..d.controls.len())];
        let want = rng.f64() < d.hygiene;
        let settings = settings_for(cat, &[(c, want)], rng);
        let t = start + 600_000 + rng.i64(0..span);
        let source = if rng.bool() {
            ConfigSource::Agent
        } else {
            ConfigSource::Mdm
        };
        events.push(mk(d, t, ChangeKind::Upsert, None, settings, source));
    }
    // Remediation waves: one control fixed across one group within 30 minutes.
    let mut waves = 0;
    if spec.wave_every_hours > 0.0 && !cat.controls.is_empty() {
        let mut t = start + (spec.wave_every_hours * 3_600_000.0) as i64;
        while t < end {
            let group = GROUPS[rng.usize(..GROUPS.len())];
            let c = rng.u32(..cat.controls.len() as u32);
            for d in devs
                .iter_mut()
                .filter(|d| d.info.groups.iter().any(|g| g == group) && d.controls.contains(&c))
            {
                let settings = settings_for(cat, &[(c, true)], rng);
                let at = t + rng.i64(0..1_800_000);
                events.push(mk(d, at, ChangeKind::Upsert, None, settings, ConfigSource::Intune));
            }
            waves += 1;
            t += (spec.wave_every_hours * 3_600_000.0) as i64;
        }
    }
    // Retirements.
    let retire_count = if n == 0 {
        0
    } else {
        (n as f64 * spec.retire_rate) as usize
    };
    for _ in 0..retire_count {
        let d = &mut devs[rng.usize(..n)];
        let t = start + 600_000 + rng.i64(0..span);
        events.push(mk(d, t, ChangeKind::Retire, None, vec![], ConfigSource::Mdm));
    }
    let (ordered, duplicates, stale) = arrival_order(events, spec.duplicate_rate, spec.stale_rate, rng);
    Day {
        events: ordered,
        drift: drift_count,
        waves,
        retirements: retire_count,
        duplicates,
        stale,
        end,
    }
}

/// What [`arrival_order`] needs of an event: its time, device, sequence, and how to make its
/// stale copy.
pub(crate) trait Arrival: Clone {
    /// What identifies the device (sequences are per device).
    type Device: std::hash::Hash + Eq;
    /// Event time.
    fn time(&self) -> i64;
    /// The device that sends it.
    fn device(&self) -> Self::Device;
    /// Its sequence number.
    fn sequence(&self) -> i64;
    /// Sets its sequence number.
    fn set_sequence(&mut self, s: i64);
    /// Turns a copy into the stale copy (an older sequence, the event id marked).
    fn make_stale(&mut self);
    /// Whether it is a stale copy.
    fn is_stale(&self) -> bool;
}

impl Arrival for ConfigChange {
    type Device = String;
    fn time(&self) -> i64 {
        self.observed_at
    }
    fn device(&self) -> String {
        self.device_id.clone()
    }
    fn sequence(&self) -> i64 {
        self.sequence
    }
    fn set_sequence(&mut self, s: i64) {
        self.sequence = s;
    }
    fn make_stale(&mut self) {
        self.sequence -= 1;
        self.event_id += "-stale";
    }
    fn is_stale(&self) -> bool {
        self.event_id.ends_with("-stale")
    }
}

/// `events` in the order a producer sends them: by event time, with sequences re-assigned per
/// device in that order (so they increase along the stream), and a share of duplicates and stale
/// (old-sequence) copies spliced in a little later. Returns the events and how many duplicates
/// and stale copies it added.
pub(crate) fn arrival_order<E: Arrival>(
    mut events: Vec<E>,
    duplicate_rate: f64,
    stale_rate: f64,
    rng: &mut fastrand::Rng,
) -> (Vec<E>, usize, usize) {
    events.sort_by_key(|e| e.time());
    let mut seqs: HashMap<E::Device, i64> = HashMap::new();
    for e in events.iter_mut() {
        let s = seqs.entry(e.device()).or_insert(0);
        *s += 1;
        e.set_sequence(*s);
    }
    let mut noise = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if rng.f64() < duplicate_rate {
            noise.push((i + 1 + rng.usize(..50), e.clone()));
        }
        if rng.f64() < stale_rate && e.sequence() > 1 {
            let mut stale = e.clone();
            stale.make_stale();
            noise.push((i + 1 + rng.usize(..50), stale));
        }
    }
    noise.sort_by_key(|(pos, _)| *pos);
    let stale = noise.iter().filter(|(_, e)| e.is_stale()).count();
    let duplicates = noise.len() - stale;
    let mut noise_iter = noise.into_iter().peekable();
    let mut ordered: Vec<E> = Vec::with_capacity(events.len() + duplicates + stale);
    for (i, e) in events.into_iter().enumerate() {
        ordered.push(e);
        while noise_iter.peek().is_some_and(|(pos, _)| *pos <= i) {
            ordered.push(noise_iter.next().expect("peeked").1);
        }
    }
    ordered.extend(noise_iter.map(|(_, e)| e));
    (ordered, duplicates, stale)
}
