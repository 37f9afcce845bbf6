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

use crate::day::arrival_order;
use crate::synth::settings_for;
use crate::Fleet;
use posture_core::{Catalog, Category, ChangeKind, ConfigChange, ConfigSource, ControlIdx, Setting};
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

/// The story's events in arrival order, and its script.
pub struct Story {
    /// Every event, in the order a producer sends them.
    pub events: Vec<ConfigChange>,
    /// `events[..pause_index]` come before the pause, `events[pause_index..]` after.
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

/// The story of `fleet` (whose devices have sent nothing yet) against `cat`.
pub fn story(cat: &Catalog, fleet: &mut Fleet, spec: &StorySpec, rng: &mut fastrand::Rng) -> Story {
    let start = spec.start;
    let end = start + STORY_HOURS * HOUR;
    let devs = &mut fleet.devices;
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

    // (device index, event time, kind, settings, source), made into events below.
    let mut planned: Vec<(usize, i64, ChangeKind, Vec<Setting>, ConfigSource)> = Vec::new();
    for (i, d) in devs.iter().enumerate() {
        let t = start + rng.i64(0..600_000);
        let want: Vec<(ControlIdx, bool)> = d.controls.iter().map(|&c| (c, rng.f64() < d.hygiene)).collect();
        planned.push((
            i,
            t,
            ChangeKind::Snapshot,
            settings_for(cat, &want, rng),
            ConfigSource::Agent,
        ));
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
        planned.push((i, t, ChangeKind::Upsert, settings_for(cat, &[(c, want)], rng), source));
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
    for (i, d) in devs.iter().enumerate().filter(|(i, _)| in_group[*i]) {
        let t = push_at + rng.i64(0..10 * MIN);
        let off: Vec<(ControlIdx, bool)> = d
            .controls
            .iter()
            .filter(|c| pushed.contains(c))
            .map(|&c| (c, false))
            .collect();
        if off.is_empty() || !live(i, t) {
            continue;
        }
        planned.push((
            i,
            t,
            ChangeKind::Upsert,
            settings_for(cat, &off, rng),
            ConfigSource::Intune,
        ));
        push.devices += 1;
        for (w, cs) in remediation.iter_mut().zip(&wave_controls) {
            let t = w.at + rng.i64(0..w.minutes * MIN);
            let on: Vec<(ControlIdx, bool)> = d
                .controls
                .iter()
                .filter(|c| cs.contains(c))
                .map(|&c| (c, true))
                .collect();
            if on.is_empty() || !live(i, t) {
                continue;
            }
            planned.push((
                i,
                t,
                ChangeKind::Upsert,
                settings_for(cat, &on, rng),
                ConfigSource::Intune,
            ));
            w.devices += 1;
        }
    }
    for (&i, &t) in &retired_at {
        planned.push((i, t, ChangeKind::Retire, vec![], ConfigSource::Mdm));
    }
    // Events, numbered in plan order (the retirements' order is the map's: sort them first).
    planned.sort_by_key(|p| (p.1, p.0));
    let mut next_event = 0u64;
    let events: Vec<ConfigChange> = planned
        .into_iter()
        .map(|(i, t, kind, settings, source)| {
            let d = &mut devs[i];
            d.seq += 1;
            next_event += 1;
            let info = (kind == ChangeKind::Snapshot).then(|| d.info.clone());
            ConfigChange::new(d.tenant.clone(), d.id.clone(), kind, t, d.seq)
                .with_event_id(format!("story-{next_event:010}"))
                .with_source(source)
                .with_device(info)
                .with_settings(settings)
        })
        .collect();
    let (events, duplicates, stale) = arrival_order(events, spec.duplicate_rate, spec.stale_rate, rng);
    let pause_index = events
        .iter()
        .position(|e| e.observed_at >= pause_at)
        .unwrap_or(events.len());
    Story {
        events,
        pause_index,
        pause_at,
        push,
        remediation,
        group: spec.group.clone(),
        silent: silent.iter().filter(|&&s| s).count(),
        drift,
        retirements: retired_at.len(),
        duplicates,
        stale,
        end,
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
    /// it, the pause splits the stream at its instant, and the same seed gives the same events.
    /// (What it does to the score is the stack test's: `crates/posture/tests/story.rs`.)
    #[test]
    fn the_push_reaches_the_group_and_the_waves_undo_it() {
        let cat = catalog();
        let mk = || {
            let mut rng = fastrand::Rng::with_seed(42);
            let mut fleet = Fleet::new(&cat, 2_000, 1, &mut rng);
            story(&cat, &mut fleet, &StorySpec::new(1_793_491_200_000), &mut rng)
        };
        let s = mk();
        assert_eq!(s.events, mk().events, "deterministic");
        let group_devices = s
            .events
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
        assert!(s.events[..s.pause_index]
            .iter()
            .all(|e| e.observed_at < s.pause_at + 50 * 60_000));
        assert!(s.events[s.pause_index].observed_at >= s.pause_at);
    }
}
