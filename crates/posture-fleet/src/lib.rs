//! # posture-fleet
//!
//! Synthetic fleets, the one generator of posture's synthetic events: `posture simulate` (the
//! demo's day), the benchmark harness (a fleet of up to millions of devices and its drift) and
//! the tests all make their devices and events here, against whatever baseline they load.
//!
//! ```text
//! Catalog ─► Fleet::new (devices: tenant, groups, OS, tags, hygiene, applicable controls)
//!         ─► day::day        a simulated day: snapshots, drift, remediation waves, retirements,
//!                            duplicates and stale copies, in arrival order   (posture simulate)
//!         ─► story::story    the demo's scripted day: the plain day with a bad policy push to
//!                            one group, a pause for the alert, and remediation waves  (demo)
//!         ─► Stream          an endless stream: each device's SNAPSHOT first, then UPSERTs of k
//!                            controls at random, and RETIREs at a set share     (bench, tests)
//! setting values ◄─ synth    synthesised from each control's check tree, so the intended
//!                            outcome (PASS or FAIL) really holds
//! ```
//!
//! Pure: no I/O, no clock. Deterministic: the same seed gives the same events.

#![warn(missing_docs)]

pub mod day;
pub mod story;
pub mod stream;
pub mod synth;

pub use day::{day, Day, DaySpec};
pub use story::{story, Story, StorySpec, Wave, STORY_HOURS};
pub use stream::{Stream, StreamSpec};
pub use synth::{settings_for, ValueTable};

use posture_core::{Catalog, ControlIdx, DeviceInfo};
use std::collections::HashMap;
use std::sync::Arc;

/// The groups devices are spread over (and `servers`, which 10% of devices are also in).
pub const GROUPS: [&str; 8] = [
    "finance",
    "engineering",
    "sales",
    "hr",
    "it-ops",
    "legal",
    "marketing",
    "support",
];

/// An operating system of the fleet's mix: its family, versions and share of devices.
pub struct Os {
    /// `os_family` of the inventory.
    pub family: &'static str,
    /// Versions, equally likely.
    pub versions: &'static [&'static str],
    /// Share of the fleet.
    pub share: f64,
}

/// The fleet's OS mix: 60% Windows, 25% macOS, 15% Linux.
pub const OS_MIX: [Os; 3] = [
    Os {
        family: "windows",
        versions: &["10.0.19045", "10.0.22631", "10.0.26100", "10.0.19044"],
        share: 0.6,
    },
    Os {
        family: "macos",
        versions: &["13.6.9", "14.7.1", "15.1"],
        share: 0.25,
    },
    Os {
        family: "linux",
        versions: &["5.15.0", "6.1.0", "6.8.0"],
        share: 0.15,
    },
];

/// One synthetic device.
pub struct Device {
    /// Its tenant (`t1`, `t2`, ...: devices are dealt to tenants in turn).
    pub tenant: String,
    /// Its id (`dev-000042`).
    pub id: String,
    /// Its inventory: OS, groups (one of [`GROUPS`], and `servers` for 10%), tags (`laptop`
    /// for 60%).
    pub info: DeviceInfo,
    /// The chance each of its controls is compliant (0.45 to 0.95).
    pub hygiene: f64,
    /// The sequence number of the last event it sent (0: none yet).
    pub seq: i64,
    /// The controls of the baseline that apply to it (shared by devices of one inventory).
    pub controls: Arc<[ControlIdx]>,
}

/// What decides which controls apply: OS family and version, groups, tags.
type Inventory = (String, String, Vec<String>, Vec<String>);

/// The devices of a synthetic fleet.
pub struct Fleet {
    /// Device `i` is `dev-{i:06}`.
    pub devices: Vec<Device>,
}

impl Fleet {
    /// `devices` devices dealt over `tenants` tenants, their inventories drawn from [`OS_MIX`],
    /// [`GROUPS`] and the tags, each with the controls of `cat` that apply to it.
    pub fn new(cat: &Catalog, devices: usize, tenants: usize, rng: &mut fastrand::Rng) -> Fleet {
        let mut applicable: HashMap<Inventory, Arc<[ControlIdx]>> = HashMap::new();
        let devices = (0..devices)
            .map(|i| {
                let roll = rng.f64();
                let mut acc = 0.0;
                let os = OS_MIX
                    .iter()
                    .find(|o| {
                        acc += o.share;
                        roll < acc
                    })
                    .unwrap_or(&OS_MIX[0]);
                let group = GROUPS[rng.usize(..GROUPS.len())];
                let mut groups = vec![group.to_string()];
                if rng.f64() < 0.1 {
                    groups.push("servers".into());
                }
                let tags = if rng.f64() < 0.6 {
                    vec!["laptop".to_string()]
                } else {
                    vec![]
                };
                let info = DeviceInfo {
                    os_family: os.family.into(),
                    os_version: os.versions[rng.usize(..os.versions.len())].into(),
                    hostname: Some(format!("{}-{:06}", &os.family[..3], i)),
                    groups,
                    tags,
                };
                let key = (
                    info.os_family.clone(),
                    info.os_version.clone(),
                    info.groups.clone(),
                    info.tags.clone(),
                );
                let controls = applicable
                    .entry(key)
                    .or_insert_with(|| {
                        (0..cat.controls.len() as ControlIdx)
                            .filter(|&c| {
                                let ctl = &cat.controls[c as usize];
                                ctl.applies_to.iter().all(|&k| {
                                    cat.conditions[k as usize].matches(
                                        &info.os_family,
                                        &info.os_version,
                                        &info.groups,
                                        &info.tags,
                                    )
                                })
                            })
                            .collect()
                    })
                    .clone();
                Device {
                    tenant: format!("t{}", 1 + i % tenants.max(1)),
                    id: format!("dev-{i:06}"),
                    info,
                    hygiene: 0.45 + 0.5 * rng.f64(),
                    seq: 0,
                    controls,
                }
            })
            .collect();
        Fleet { devices }
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether the fleet has no device.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASELINE: &str = "baseline: t\nversion: 1\ncontrols:\n  - { id: fw, title: F, category: network, check: { key: fw, op: eq, value: true } }\n  - { id: mac, title: M, category: os, applies_to: { os_family: [macos] }, check: { key: gk, op: eq, value: true } }\n";

    /// Devices get the controls that apply to their inventory, and the same seed the same fleet.
    #[test]
    fn devices_get_their_applicable_controls_deterministically() {
        let cat = Catalog::from_sources(&[("t.yaml", BASELINE)]).unwrap();
        let a = Fleet::new(&cat, 200, 3, &mut fastrand::Rng::with_seed(1));
        let b = Fleet::new(&cat, 200, 3, &mut fastrand::Rng::with_seed(1));
        assert_eq!(a.len(), 200);
        for (x, y) in a.devices.iter().zip(&b.devices) {
            assert_eq!(
                (&x.id, &x.tenant, &x.info.groups, x.hygiene),
                (&y.id, &y.tenant, &y.info.groups, y.hygiene)
            );
            let want: &[ControlIdx] = if x.info.os_family == "macos" { &[0, 1] } else { &[0] };
            assert_eq!(&*x.controls, want, "{}", x.info.os_family);
        }
        assert!(a.devices.iter().any(|d| d.info.os_family == "macos"));
        assert_eq!(a.devices[4].tenant, "t2");
    }
}
