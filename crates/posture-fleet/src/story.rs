//! The demo's scripted day (`posture simulate --story`, `posture demo`): a fleet's ordinary day
//! with one incident in it, so that a person watching sees the product work.
//!
//! ```text
//! 00:00-00:10  every device sends its SNAPSHOT                       (the morning baseline)
//! all day      drift (a control flips, mostly towards the device's hygiene), retirements,
//!              duplicates and stale copies, as in the plain day
//! 09:00-09:10  a bad policy push to one group (finance): every network and security-control
//!              setting of its devices turned off                        (the drop)
//! 09:30        the stream pauses here: `posture demo` waits for the pipeline's score-drop
//!              alert, opens remediation tasks and adds an exception through the API
//! 12:00, 14:00, 16:00
//!              remediation waves: the corrected policy sets a third of the pushed controls
//!              back on every device of the group, largest points first   (the recovery)
//! 25:00        the end: devices that went silent after their snapshot (1%) have been quiet
//!              for a day, so with an inactivity window of one day they have left the score
//! ```
//!
//! Pure and deterministic like the rest of the crate: the same fleet, spec and seed give the
//! same events.

use crate::day::{arrival_order, Arrival};
use crate::synth::settings_for;
use crate::Fleet;
use posture_core::{Catalog, Category, ChangeKind, ConfigChange, ConfigSource, ControlIdx};
use std::collections::HashMap;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

/// What the story's day holds. [`StorySpec::new`] gives the demo's.
#[derive(Clone, Debug)]
pub struct StorySpec {
    /// Event time of the first snapshot (ms since the epoch).
    pub start: i64,
    /// The group the bad push hits.
    pub group: String,
    /// The categories whose settings the bad push turns off.
    pub categories: Vec<Category>,
    /// Drift events per device per hour.
    pub drift_per_hour: f64,
    /// Share of devices retired during the day.
    pub retire_rate: f64,
    /// Share of devices (outside the pushed group) that send their snapshot and then nothing.
    pub silent_rate: f64,
    /// Share of events re-sent as exact duplicates.
    pub duplicate_rate: f64,
    /// Share of events followed by a stale (old-sequence) copy.
    pub stale_rate: f64,
}

impl StorySpec {
    /// The demo's story, starting at `start`: finance's network and security controls pushed
    /// off, the plain day's drift, 1% retired, 1% silent, 0.5% duplicates and 0.5% stale.
    pub fn new(start: i64) -> StorySpec {
        StorySpec {
            start,
            group: "finance".into(),
            categories: vec![Category::Network, Category::SecurityControls],
            drift_per_hour: 0.25,
            retire_rate: 0.01,
            silent_rate: 0.01,
            duplicate_rate: 0.005,
            stale_rate: 0.005,
        }
    }
}

/// A scripted change to many devices: when, which controls, how many devices.
#[derive(Clone, Debug, PartialEq)]
pub struct Wave {
    /// Event time it starts (its events spread over the next `minutes`).
    pub at: i64,
    /// How long it takes, minutes.
    pub minutes: i64,
    /// Control ids it sets (to FAIL for the push, to PASS for a remediation wave).
    pub controls: Vec<String>,
    /// Devices it reaches.
    pub devices: usize,
}

/// The story's events in arrival order (as a plan: each event is made when it is read, so a
/// million devices' day fits in memory), and its script.
pub struct Story {
    /// Every event's plan, in the order a producer sends them.
    plan: Vec<Planned>,
    /// The first `pause_index` events come before the pause, the others after.
    pub pause_index: usize,
    /// Event time of the pause: the stream waits here for the alert.
    pub pause_at: i64,
    /// The bad push.
    pub push: Wave,
    /// The remediation waves that undo it, in time order.
    pub remediation: Vec<Wave>,
    /// The group pushed.
    pub group: String,
    /// Devices that go silent after their snapshot.
    pub silent: usize,
    /// Drift events.
    pub drift: usize,
    /// Retirements.
    pub retirements: usize,
    /// Exact duplicates.
    pub duplicates: usize,
    /// Stale copies.
    pub stale: usize,
    /// Event time of the story's end (25 hours after the start).
    pub end: i64,
}

/// Hours of event time the story spans: a day, and the hour after it in which the silent
/// devices' day without an event ends.
pub const STORY_HOURS: i64 = 25;

/// The story of `fleet` against `cat` (its events are read with [`Story::events`]).
pub fn story(cat: &Catalog, fleet: &Fleet, spec: &StorySpec, rng: &mut fastrand::Rng) -> Story {
    let start = spec.start;
    let end = start + STORY_HOURS * HOUR;
    let devs = &fleet.devices;
    let n = devs.len();
    let in_group: Vec<bool> = devs.iter().map(|d| d.info.groups.contains(&spec.group)).collect();
    // Silent devices are outside the group, so the group's tasks can complete.
    let silent: Vec<bool> = in_group.iter().map(|&g| !g && rng.f64() < spec.silent_rate).collect();
    // Retirement times; a retired device sends nothing after.
    let retire_count = (n as f64 * spec.retire_rate) as usize;
    let mut retired_at: HashMap<usize, i64> = HashMap::new();
    for _ in 0..retire_count {
        let i = rng.usize(..n.max(1));
        if n == 0 || silent[i] {
            continue;
        }
        retired_at
            .entry(i)
            .or_insert(start + 10 * MIN + rng.i64(0..(end - start - 11 * MIN)));
    }
    let live = |i: usize, t: i64| !silent[i] && retired_at.get(&i).is_none_or(|&r| t < r);

    // The pushed controls: the categories' controls, largest points first (then by id).
    let mut pushed: Vec<ControlIdx> = (0..cat.controls.len() as ControlIdx)
        .filter(|&c| spec.categories.contains(&cat.controls[c as usize].category))
        .collect();
    pushed.sort_by(|&a, &b| {
        let (a, b) = (&cat.controls[a as usize], &cat.controls[b as usize]);
        b.points.cmp(&a.points).then_with(|| a.id.cmp(&b.id))
    });
    let push_at = start + 9 * HOUR;
    let pause_at = start + 9 * HOUR + 30 * MIN;
    let waves_at = [12, 14, 16].map(|h| start + h * HOUR);
    let chunk = pushed.len().div_ceil(waves_at.len()).max(1);
    let wave_controls: Vec<&[ControlIdx]> = pushed.chunks(chunk).collect();

    // Each event's plan; its settings are made from its own seed when it is read.
    let mut planned: Vec<Planned> = Vec::new();
    let mut plan = |device: usize, t: i64, change: Change, source: ConfigSource, rng: &mut fastrand::Rng| {
        planned.push(Planned {
            device: device as u32,
            t,
            change,
            source,
            seed: rng.u64(..),
            seq: 0,
            number: 0,
            stale: false,
        })
    };
    for i in 0..n {
        let t = start + rng.i64(0..600_000);
        plan(i, t, Change::Snapshot, ConfigSource::Agent, rng);
    }
    // Drift; on the group's pushed controls only before the push (the policy holds them after).
    let drift_count = (n as f64 * spec.drift_per_hour * STORY_HOURS as f64) as usize;
    let mut drift = 0;
    for _ in 0..drift_count {
        if n == 0 {
            break;
        }
        let i = rng.usize(..n);
        let d = &devs[i];
        let t = start + 10 * MIN + rng.i64(0..(end - start - 10 * MIN));
        if d.controls.is_empty() || !live(i, t) {
            continue;
        }
        let c = d.controls[rng.usize(..d.controls.len())];
        let want = rng.f64() < d.hygiene;
        if in_group[i] && t >= push_at && pushed.contains(&c) {
            continue;
        }
        let source = if rng.bool() {
            ConfigSource::Agent
        } else {
            ConfigSource::Mdm
        };
        plan(i, t, Change::Set(vec![(c, want)]), source, rng);
        drift += 1;
    }
    // The push, then the remediation waves, on the group's live devices.
    let mut push = Wave {
        at: push_at,
        minutes: 10,
        controls: pushed.iter().map(|&c| cat.controls[c as usize].id.clone()).collect(),
        devices: 0,
    };
    let mut remediation: Vec<Wave> = wave_controls
        .iter()
        .zip(waves_at)
        .map(|(cs, at)| Wave {
            at,
            minutes: 30,
            controls: cs.iter().map(|&c| cat.controls[c as usize].id.clone()).collect(),
            devices: 0,
        })
        .collect();
    // The device's controls among `of`, each with the outcome `pass`.
    let set = |d: &crate::Device, of: &[ControlIdx], pass: bool| -> Vec<(ControlIdx, bool)> {
        d.controls
            .iter()
            .filter(|c| of.contains(c))
            .map(|&c| (c, pass))
            .collect()
    };
    for (i, d) in devs.iter().enumerate().filter(|(i, _)| in_group[*i]) {
        let t = push_at + rng.i64(0..10 * MIN);
        let off = set(d, &pushed, false);
        if off.is_empty() || !live(i, t) {
            continue;
        }
        plan(i, t, Change::Set(off), ConfigSource::Intune, rng);
        push.devices += 1;
        for (w, cs) in remediation.iter_mut().zip(&wave_controls) {
            let t = w.at + rng.i64(0..w.minutes * MIN);
            let on = set(d, cs, true);
            if on.is_empty() || !live(i, t) {
                continue;
            }
            plan(i, t, Change::Set(on), ConfigSource::Intune, rng);
            w.devices += 1;
        }
    }
    let mut retirements: Vec<(usize, i64)> = retired_at.iter().map(|(&i, &t)| (i, t)).collect();
    retirements.sort_unstable();
    for &(i, t) in &retirements {
        plan(i, t, Change::Retire, ConfigSource::Mdm, rng);
    }
    // Events numbered in time order (then by device), then in arrival order.
    planned.sort_by_key(|p| (p.t, p.device));
    for (k, p) in planned.iter_mut().enumerate() {
        p.number = k as u64 + 1;
    }
    let (planned, duplicates, stale) = arrival_order(planned, spec.duplicate_rate, spec.stale_rate, rng);
    let pause_index = planned.iter().position(|p| p.t >= pause_at).unwrap_or(planned.len());
    Story {
        plan: planned,
        pause_index,
        pause_at,
        push,
        remediation,
        group: spec.group.clone(),
        silent: silent.iter().filter(|&&s| s).count(),
        drift,
        retirements: retirements.len(),
        duplicates,
        stale,
        end,
    }
}

/// What an event of the story sets.
#[derive(Clone, Debug)]
enum Change {
    /// Every control of the device, each compliant with the device's hygiene as its chance.
    Snapshot,
    /// These controls, to these outcomes (`true`: PASS).
    Set(Vec<(ControlIdx, bool)>),
    /// The device leaves.
    Retire,
}

/// One event of the story, before its settings are made.
#[derive(Clone, Debug)]
struct Planned {
    device: u32,
    t: i64,
    change: Change,
    source: ConfigSource,
    /// The seed its settings (and a snapshot's outcomes) are drawn from.
    seed: u64,
    seq: i64,
    /// Its number in the event id (`story-0000000042`).
    number: u64,
    stale: bool,
}

impl Arrival for Planned {
    type Device = u32;
    fn time(&self) -> i64 {
        self.t
    }
    fn device(&self) -> u32 {
        self.device
    }
    fn sequence(&self) -> i64 {
        self.seq
    }
    fn set_sequence(&mut self, s: i64) {
        self.seq = s;
    }
    fn make_stale(&mut self) {
        self.seq -= 1;
        self.stale = true;
    }
    fn is_stale(&self) -> bool {
        self.stale
    }
}

impl Story {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.plan.len()
    }

    /// Whether the story has no event (a fleet of no device).
    pub fn is_empty(&self) -> bool {
        self.plan.is_empty()
    }

    /// Event time of event `k` (in arrival order).
    pub fn time_of(&self, k: usize) -> i64 {
        self.plan[k].t
    }

    /// The events of `range` (in arrival order), each made as it is read; `cat` and `fleet` must
    /// be the ones the story was made for. The same story gives the same events every time.
    pub fn events<'a>(
        &'a self,
        cat: &'a Catalog,
        fleet: &'a Fleet,
        range: std::ops::Range<usize>,
    ) -> impl ExactSizeIterator<Item = ConfigChange> + 'a {
        self.plan[range].iter().map(move |p| {
            let d = &fleet.devices[p.device as usize];
            let mut rng = fastrand::Rng::with_seed(p.seed);
            let (kind, settings) = match &p.change {
                Change::Snapshot => {
                    let want: Vec<(ControlIdx, bool)> =
                        d.controls.iter().map(|&c| (c, rng.f64() < d.hygiene)).collect();
                    (ChangeKind::Snapshot, settings_for(cat, &want, &mut rng))
                }
                Change::Set(want) => (ChangeKind::Upsert, settings_for(cat, want, &mut rng)),
                Change::Retire => (ChangeKind::Retire, Vec::new()),
            };
            let info = (kind == ChangeKind::Snapshot).then(|| d.info.clone());
            let stale = if p.stale { "-stale" } else { "" };
            ConfigChange::new(d.tenant.clone(), d.id.clone(), kind, p.t, p.seq)
                .with_event_id(format!("story-{:010}{stale}", p.number))
                .with_source(p.source)
                .with_device(info)
                .with_settings(settings)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/baselines");
        let mut sources = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            sources.push((p.display().to_string(), std::fs::read_to_string(&p).unwrap()));
        }
        let refs: Vec<(&str, &str)> = sources.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        Catalog::from_sources(&refs).unwrap()
    }

    /// The story's script holds: the push reaches the group's devices, the waves undo all of
    /// it, the pause splits the stream at its instant, events made lazily are the same every
    /// time (a duplicate equals its original), sequences increase per device along the stream
    /// (but for stale copies), and the same seed gives the same events.
    /// (What it does to the score is the stack test's: `crates/posture/tests/story.rs`.)
    #[test]
    fn the_push_reaches_the_group_and_the_waves_undo_it() {
        let cat = catalog();
        let mut rng = fastrand::Rng::with_seed(42);
        let fleet = Fleet::new(&cat, 2_000, 1, &mut rng);
        let s = story(&cat, &fleet, &StorySpec::new(1_793_491_200_000), &mut rng);
        let events: Vec<ConfigChange> = s.events(&cat, &fleet, 0..s.len()).collect();
        assert_eq!(events.len(), s.len());
        assert_eq!(
            events[10..20],
            s.events(&cat, &fleet, 10..20).collect::<Vec<_>>()[..],
            "read twice, the same"
        );
        let mut first: std::collections::HashMap<&str, &ConfigChange> = std::collections::HashMap::new();
        let mut seq: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
        for e in &events {
            if let Some(orig) = first.get(e.event_id.as_str()) {
                assert_eq!(*orig, e, "a duplicate equals its original");
                continue;
            }
            first.insert(&e.event_id, e);
            if e.event_id.ends_with("-stale") {
                continue;
            }
            let last = seq.insert(&e.device_id, e.sequence).unwrap_or(0);
            assert_eq!(e.sequence, last + 1, "{}", e.event_id);
        }
        assert_eq!(first.len(), s.len() - s.duplicates, "every other event id once");
        let group_devices = events
            .iter()
            .filter(|e| {
                e.kind == ChangeKind::Snapshot && e.device.as_ref().is_some_and(|d| d.groups.contains(&s.group))
            })
            .count();
        assert!(group_devices > 150, "{group_devices}");
        assert!(
            s.push.devices > group_devices * 9 / 10,
            "{} of {group_devices}",
            s.push.devices
        );
        assert_eq!(s.remediation.len(), 3);
        let waved: Vec<&String> = s.remediation.iter().flat_map(|w| &w.controls).collect();
        assert_eq!(
            waved,
            s.push.controls.iter().collect::<Vec<_>>(),
            "the waves undo the whole push"
        );
        assert!(s.silent > 5 && s.retirements > 5, "{} {}", s.silent, s.retirements);
        // The pause splits the stream at its instant: before it, only earlier events; after it,
        // an earlier instant only on a copy (a duplicate or a stale copy spliced in late).
        assert!(0 < s.pause_index && s.pause_index < s.len());
        assert!(events[..s.pause_index].iter().all(|e| e.observed_at < s.pause_at));
        let before: std::collections::HashSet<&str> =
            events[..s.pause_index].iter().map(|e| e.event_id.as_str()).collect();
        for e in &events[s.pause_index..] {
            if e.observed_at < s.pause_at {
                assert!(
                    e.event_id.ends_with("-stale") || before.contains(e.event_id.as_str()),
                    "{} at {} after the pause",
                    e.event_id,
                    e.observed_at
                );
            }
        }
        assert!(events[s.pause_index..].iter().any(|e| e.observed_at >= s.pause_at));
        assert_eq!(s.time_of(s.pause_index), events[s.pause_index].observed_at);
    }

    /// The same seed gives the same story.
    #[test]
    fn the_same_seed_gives_the_same_story() {
        let cat = catalog();
        let mk = || {
            let mut rng = fastrand::Rng::with_seed(7);
            let fleet = Fleet::new(&cat, 300, 1, &mut rng);
            let s = story(&cat, &fleet, &StorySpec::new(0), &mut rng);
            s.events(&cat, &fleet, 0..s.len()).collect::<Vec<_>>()
        };
        assert_eq!(mk(), mk());
    }
}
