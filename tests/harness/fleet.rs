//! A small deterministic fleet for pipeline tests.

use posture_core::*;

/// Four controls over the settings [`fleet_events`] writes.
pub const BASELINE: &str = r#"
baseline: e2e
version: 1
controls:
  - { id: fw, title: Firewall, category: network, check: { key: fw, op: eq, value: true }, on_missing: fail }
  - { id: av, title: Antivirus, category: security_controls, check: { key: av, op: eq, value: true } }
  - { id: pw, title: Passwords, category: accounts, points: 50, check: { key: pw, op: ge, value: 14 } }
  - { id: os, title: Build, category: os, remediation: software_update, check: { key: build, op: ge, value: "10.0.19045", version: true } }
"#;
/// Event time of the first event (2026-11-22T10:00:00Z).
pub const T0: i64 = 1_795_341_600_000;

/// `n` events over `devices` devices of tenant t1 (a [`posture_fleet`] fleet: the one generator
/// of synthetic events), one a minute from [`T0`]: a SNAPSHOT first per device, then UPSERTs
/// setting two controls each to PASS or FAIL, and about 2% RETIREs. Deterministic.
pub fn fleet_events(n: u64, devices: usize) -> Vec<ConfigChange> {
    let cat = Catalog::from_sources(&[("e2e.yaml", BASELINE)]).expect("the test baseline compiles");
    let mut fleet = posture_fleet::Fleet::new(&cat, devices, 1, &mut fastrand::Rng::with_seed(11));
    let spec = posture_fleet::StreamSpec {
        start: T0 - 60_000,
        step_ms: 60_000,
        controls_per_event: 2,
        retire_share: 0.02,
    };
    posture_fleet::Stream::new(&cat, spec, 11).take(&cat, &mut fleet, n as usize)
}
