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

/// `n` events over `devices` devices (at most 1000) of tenant t1, one a minute from
/// [`T0`]: a SNAPSHOT first per device, then UPSERTs flipping settings, and
/// about 2% RETIREs. Deterministic.
pub fn fleet_events(n: u64, devices: usize) -> Vec<ConfigChange> {
    let mut rng = 11u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut seq = vec![0i64; devices];
    let mut out = Vec::new();
    for i in 0..n {
        let d = (next() % devices as u64) as usize;
        seq[d] += 1;
        let mut settings = vec![
            Setting {
                key: "fw".into(),
                value: Value::Bool(!next().is_multiple_of(3)),
            },
            Setting {
                key: "pw".into(),
                value: Value::Long(8 + (next() % 10) as i64),
            },
        ];
        if next().is_multiple_of(2) {
            settings.push(Setting {
                key: "av".into(),
                value: Value::Bool(true),
            });
        }
        if next().is_multiple_of(4) {
            let build = if next().is_multiple_of(2) {
                "10.0.22631"
            } else {
                "10.0.17763"
            };
            settings.push(Setting {
                key: "build".into(),
                value: Value::String(build.into()),
            });
        }
        let kind = match (seq[d], next() % 50) {
            (1, _) => ChangeKind::Snapshot,
            (_, 0) => ChangeKind::Retire,
            _ => ChangeKind::Upsert,
        };
        if kind == ChangeKind::Retire {
            settings.clear();
        }
        let group = if d.is_multiple_of(3) { "servers" } else { "laptops" };
        out.push(
            ConfigChange::new("t1", format!("dev-{d:03}"), kind, T0 + i as i64 * 60_000, seq[d])
                .with_event_id(format!("e{i}"))
                .with_inventory("windows", "10.0.19045", &[group], &[])
                .with_settings(settings),
        );
    }
    out
}
