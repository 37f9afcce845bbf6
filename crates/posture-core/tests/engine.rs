//! Engine behaviour, one rule of SPEC sections 1-3 per test. Every test runs
//! through `Harness`, which after each step also checks that the incremental
//! aggregates equal a from-scratch recomputation and the sum of all deltas.

mod common;
use common::*;
use posture_core::engine::Reason;
use posture_core::report::{self, Selection};
use posture_core::*;
use ChangeKind::*;

const THREE: &str = r#"
baseline: seed
version: 1
controls:
  - { id: fw, title: Firewall, category: network, check: { key: fw, op: eq, value: true }, on_missing: fail }
  - { id: av, title: Antivirus, category: security_controls, check: { key: av, op: eq, value: true } }
  - { id: upd, title: Updates, category: os, remediation: software_update, check: { key: upd, op: eq, value: true } }
"#;

#[test]
fn seed_points_model_hand_worked() {
    // Seed page: each control contributes up to 100 points, the maximum is
    // controls x 100, and a recommendation shows the points gained by fixing it.
    let mut h = Harness::new(catalog(THREE));
    // 4 devices. fw: d1..d3 true, d4 false   -> f = 3/4 -> 75 points
    //            av: d1,d2 true, d3,d4 false -> f = 2/4 -> 50 points
    //            upd: all false               -> f = 0/4 ->  0 points
    for (d, fw, av) in [
        ("d1", true, true),
        ("d2", true, true),
        ("d3", true, false),
        ("d4", false, false),
    ] {
        h.send(ev(d, T0, Snapshot, &[("fw", b(fw)), ("av", b(av)), ("upd", b(false))]))
            .unwrap();
    }
    let s = h.score("t1", None);
    // score = 75 + 50 + 0 = 125; maximum = 3 controls x 100 = 300; 125/300 = 41.67%
    assert_eq!(
        (s.total.points, s.total.max_points, s.total.percent),
        (125.0, 300.0, 41.67)
    );
    assert_eq!(s.categories["network"].points, 75.0);
    assert_eq!(s.categories["security_controls"].points, 50.0);
    assert_eq!(s.categories["os"].percent, 0.0);
    assert_eq!(
        s.categories["accounts"].max_points, 0.0,
        "no control: left out of the maximum"
    );
    let sel = Selection {
        scope: h.scope("t1", None),
        category: None,
        remediation: None,
    };
    let recs = report::recommendations(&h.ledger, h.engine.catalog(), &sel);
    // points gained = 100 * (1 - f): upd 100, av 50, fw 25
    let got: Vec<_> = recs
        .iter()
        .map(|r| {
            (
                r.control.as_str(),
                r.points_gained,
                r.misconfigured_devices,
                r.applicable_devices,
            )
        })
        .collect();
    assert_eq!(got, vec![("upd", 100.0, 4, 4), ("av", 50.0, 2, 4), ("fw", 25.0, 1, 4)]);
    // Fixing av on d3 moves the score by exactly the per-device share: 100/4 = 25.
    h.send(ev("d3", T0 + MIN, Upsert, &[("av", b(true))])).unwrap();
    assert_eq!(h.points("t1"), (150 * P, 300 * P));
}

#[test]
fn three_thirds_round_exactly() {
    // 1 of 3 devices passing: 100/3 = 33.333333 points; integer micro-points
    // keep deltas summing exactly to the from-scratch value.
    let mut h = Harness::new(catalog(THREE));
    for (d, fw) in [("a", true), ("b", false), ("c", false)] {
        h.send(ev(d, T0, Upsert, &[("fw", b(fw))])).unwrap();
    }
    assert_eq!(h.points("t1").0, 33_333_333);
    h.send(ev("b", T0, Upsert, &[("fw", b(true))])).unwrap();
    assert_eq!(h.points("t1").0, 66_666_667);
    h.send(ev("c", T0, Upsert, &[("fw", b(true))])).unwrap();
    assert_eq!(h.points("t1").0, 100 * P);
}

#[test]
fn five_states_and_on_missing() {
    let cat = catalog(
        r#"
baseline: s
version: 1
controls:
  - { id: p, title: P, category: os, check: { key: k, op: eq, value: 1 } }
  - { id: f, title: F, category: os, check: { key: k, op: eq, value: 2 } }
  - { id: u, title: U, category: os, check: { key: missing, op: eq, value: 1 } }
  - { id: mf, title: MF, category: os, check: { key: missing, op: eq, value: 1 }, on_missing: fail }
  - { id: mp, title: MP, category: os, check: { key: missing, op: eq, value: 1 }, on_missing: pass }
  - { id: na, title: NA, category: os, applies_to: { os_family: [macos] }, check: { key: k, op: eq, value: 1 } }
  - { id: x, title: X, category: os, check: { key: k, op: ge, value: 0 } }
"#,
    );
    let mut h = Harness::new(cat);
    h.send(with_inventory(
        ev("d", T0, Snapshot, &[("k", Value::Long(1))]),
        "windows",
        "10.0",
        &[],
        &[],
    ))
    .unwrap();
    use ControlState::*;
    let st = |h: &Harness, c| h.state("t1", "d", c);
    assert_eq!(
        [
            st(&h, "p"),
            st(&h, "f"),
            st(&h, "u"),
            st(&h, "mf"),
            st(&h, "mp"),
            st(&h, "na")
        ],
        [Pass, Fail, Unknown, Fail, Pass, NotApplicable]
    );
    h.except(exc(
        "e",
        "x",
        ExceptionScope::Device("d".into()),
        Justification::RiskAccepted,
        T0,
        None,
    ));
    assert_eq!(st(&h, "x"), Excepted);
    // UNKNOWN and NOT_APPLICABLE are outside every sum: max = p, f, mf, mp, x
    assert_eq!(h.points("t1"), (300 * P, 500 * P));
}

#[test]
fn upsert_remove_snapshot() {
    let mut h = Harness::new(catalog(THREE));
    h.send(ev("d", T0, Upsert, &[("fw", b(true)), ("av", b(true))]))
        .unwrap();
    assert_eq!(h.state("t1", "d", "fw"), ControlState::Pass);
    // UPSERT leaves other settings alone
    h.send(ev("d", T0 + 1, Upsert, &[("upd", b(false))])).unwrap();
    assert_eq!(h.state("t1", "d", "av"), ControlState::Pass);
    assert_eq!(h.state("t1", "d", "upd"), ControlState::Fail);
    // REMOVE makes keys absent (values ignored): fw has on_missing fail, upd unknown
    let t = h
        .send(ev("d", T0 + 2, Remove, &[("fw", Value::Null), ("upd", b(true))]))
        .unwrap();
    assert_eq!(h.state("t1", "d", "fw"), ControlState::Fail);
    assert_eq!(h.state("t1", "d", "upd"), ControlState::Unknown);
    assert_eq!(t.len(), 2);
    // SNAPSHOT replaces everything: av becomes absent -> UNKNOWN
    h.send(ev("d", T0 + 3, Snapshot, &[("fw", b(true))])).unwrap();
    assert_eq!(h.state("t1", "d", "av"), ControlState::Unknown);
    assert_eq!(h.state("t1", "d", "fw"), ControlState::Pass);
    assert_eq!(h.state("t1", "d", "upd"), ControlState::Unknown);
    // a null value counts as absent
    h.send(ev("d", T0 + 4, Upsert, &[("fw", Value::Null)])).unwrap();
    assert_eq!(h.state("t1", "d", "fw"), ControlState::Fail);
}

#[test]
fn transitions_carry_states_deltas_and_lineage() {
    let mut h = Harness::new(catalog(THREE));
    h.send(with_inventory(
        ev("d1", T0, Upsert, &[("fw", b(false))]),
        "windows",
        "10",
        &["g1"],
        &[],
    ))
    .unwrap();
    let t = h.send(ev("d1", T0 + MIN, Upsert, &[("fw", b(true))])).unwrap();
    assert_eq!(t.len(), 1);
    let tr = &t[0];
    assert_eq!(
        (tr.old.state(), tr.new.state()),
        (ControlState::Fail, ControlState::Pass)
    );
    assert_eq!(tr.event_time, T0 + MIN);
    assert_eq!(tr.source, SourcePos::line(2));
    assert_eq!(tr.reason, Reason::Event);
    assert_eq!(tr.device_points, [100 * P, 100 * P]);
    assert_eq!(tr.device_max, [0, 0]);
    // one delta for the tenant scope, one for group g1
    let deltas = h.out.deltas_of(tr);
    assert_eq!(deltas.len(), 2);
    for d in deltas {
        assert_eq!(d.points, [100 * P, 100 * P]);
        assert_eq!(d.counts, [1, -1, 0, 1, -1]);
    }
    assert_eq!(h.score("t1", Some("g1")).total.points, 100.0);
}

#[test]
fn stale_and_duplicate_sequences_are_ignored_and_counted() {
    let mut h = Harness::new(catalog(THREE));
    let mut e = ev("d", T0, Upsert, &[("fw", b(true))]);
    e.sequence = 5;
    h.send(e.clone()).unwrap();
    let before = h.points("t1");
    // duplicate
    assert!(matches!(
        h.send(e.clone()),
        Err(engine::Rejected::Stale {
            sequence: 5,
            last_applied: 5
        })
    ));
    // older sequence with a different value, and a later event time
    let mut old = ev("d", T0 + DAY, Upsert, &[("fw", b(false))]);
    old.sequence = 4;
    assert!(h.send(old).is_err());
    assert_eq!(h.points("t1"), before);
    assert_eq!(h.engine.stats().events_stale, 2);
    assert_eq!(h.engine.clock(), T0, "a stale event does not move the clock");
}

#[test]
fn invalid_events_are_rejected_with_a_reason() {
    let mut h = Harness::new(catalog(THREE));
    let mut e = ev("", T0, Upsert, &[]);
    assert_eq!(
        h.send(e.clone()).unwrap_err(),
        engine::Rejected::Invalid("empty device_id".into())
    );
    e.device_id = "d".into();
    e.settings = vec![
        Setting {
            key: "fw".into(),
            value: b(true),
        },
        Setting {
            key: "fw".into(),
            value: b(false),
        },
    ];
    assert!(h.send(e.clone()).unwrap_err().to_string().contains("appears twice"));
    e.kind = Retire;
    assert!(h.send(e.clone()).unwrap_err().to_string().contains("RETIRE"));
    // Absurd times and oversized ids or values (the defaults: 2000..2100, 64 KiB).
    e.kind = Upsert;
    e.settings.clear();
    e.observed_at = 1_000; // 1970
    assert!(h
        .send(e.clone())
        .unwrap_err()
        .to_string()
        .contains("outside the accepted range"));
    e.observed_at = 4_200_000_000_000; // 2103
    assert!(h
        .send(e.clone())
        .unwrap_err()
        .to_string()
        .contains("outside the accepted range"));
    e.observed_at = T0;
    e.device_id = "d".repeat(70_000);
    assert!(h
        .send(e.clone())
        .unwrap_err()
        .to_string()
        .contains("device_id is 70000 bytes"));
    e.device_id = "d".into();
    e.settings = vec![Setting {
        key: "fw".into(),
        value: Value::Array(vec!["x".repeat(40_000), "y".repeat(40_000)]),
    }];
    assert!(h.send(e).unwrap_err().to_string().contains("more than 65536"));
    assert_eq!(h.engine.stats().events_invalid, 7);
    assert_eq!(h.engine.device_count(), 0, "nothing was created");
}

#[test]
fn retire_removes_points_until_the_next_event() {
    let mut h = Harness::new(catalog(THREE));
    h.send(ev("a", T0, Upsert, &[("fw", b(true))])).unwrap();
    h.send(ev("b", T0, Upsert, &[("fw", b(false))])).unwrap();
    assert_eq!(h.points("t1"), (50 * P, 100 * P));
    let t = h.send(ev("b", T0 + MIN, Retire, &[])).unwrap();
    assert!(t.iter().all(|t| t.reason == Reason::Retired && !t.new_counted));
    assert_eq!(h.points("t1"), (100 * P, 100 * P));
    // its configuration is kept: the next event brings the FAIL back
    h.send(ev("b", T0 + 2 * MIN, Upsert, &[("av", b(true))])).unwrap();
    assert_eq!(h.state("t1", "b", "fw"), ControlState::Fail);
    assert_eq!(h.points("t1"), (150 * P, 200 * P));
}

#[test]
fn inactive_devices_leave_at_the_exact_instant_and_come_back() {
    let cfg = EngineConfig {
        inactivity_window_ms: 10 * MIN,
        ..Default::default()
    };
    let mut h = Harness::with_config(catalog(THREE), cfg);
    h.send(ev("a", T0, Upsert, &[("fw", b(true))])).unwrap();
    h.send(ev("b", T0 + MIN, Upsert, &[("fw", b(false))])).unwrap();
    h.send(ev("a", T0 + 5 * MIN, Upsert, &[("av", b(true))])).unwrap();
    // b's deadline is T0 + 11 min; a's moved to T0 + 15 min
    let t = h.advance(T0 + 12 * MIN);
    assert!(!t.is_empty());
    assert!(t.iter().all(|t| t.reason == Reason::Inactive
        && t.event_time == T0 + 11 * MIN
        && h.engine.device_name(t.device) == "b"));
    assert_eq!(h.points("t1"), (200 * P, 200 * P));
    let t = h.advance(T0 + 15 * MIN);
    assert!(t.iter().all(|t| t.event_time == T0 + 15 * MIN));
    assert_eq!(h.points("t1"), (0, 0));
    // b comes back with its next event, configuration intact
    h.send(ev("b", T0 + 20 * MIN, Upsert, &[("upd", b(true))])).unwrap();
    assert_eq!(h.points("t1"), (100 * P, 200 * P));
    // the score at an earlier instant is the sum of deltas up to then
    // before b leaves: fw 1 of 2 passing = 50, av 1 of 1 = 100
    assert_eq!(h.points_at("t1", T0 + 11 * MIN - 1), (150 * P, 200 * P));
    assert_eq!(h.points_at("t1", T0 + 11 * MIN), (200 * P, 200 * P));
    assert_eq!(h.points_at("t1", T0 + 19 * MIN), (0, 0));
}

#[test]
fn exceptions_credit_or_hide_and_move_at_exact_instants() {
    let mut h = Harness::new(catalog(THREE));
    h.send(with_inventory(
        ev("a", T0, Upsert, &[("fw", b(false))]),
        "windows",
        "10",
        &["srv"],
        &["kiosk"],
    ))
    .unwrap();
    h.send(with_inventory(
        ev("b", T0, Upsert, &[("fw", b(false))]),
        "windows",
        "10",
        &["wks"],
        &[],
    ))
    .unwrap();
    h.send(with_inventory(
        ev("c", T0, Upsert, &[("fw", b(true))]),
        "windows",
        "10",
        &["wks"],
        &[],
    ))
    .unwrap();
    assert_eq!(h.points("t1"), (33_333_333, 100 * P));
    // third-party control on group srv, from T0+10min to T0+20min: credits a
    let t = h.except(exc(
        "x1",
        "fw",
        ExceptionScope::Group("srv".into()),
        Justification::ThirdPartyControl,
        T0 + 10 * MIN,
        Some(T0 + 20 * MIN),
    ));
    assert!(t.is_empty(), "not started yet");
    let t = h.advance(T0 + 15 * MIN);
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].event_time, t[0].reason, t[0].new.state()),
        (T0 + 10 * MIN, Reason::ExceptionStarted, ControlState::Excepted)
    );
    let s = h.score("t1", None);
    assert_eq!(s.total.points_micros, 66_666_667, "credited: counts as PASS");
    assert_eq!(
        s.without_exceptions.total.points_micros, 33_333_333,
        "without exceptions unchanged"
    );
    // risk accepted on tag kiosk does not change the score but hides a from recommendations
    // (a is already credited, so use b via device scope)
    h.except(exc(
        "x2",
        "fw",
        ExceptionScope::Device("b".into()),
        Justification::RiskAccepted,
        T0,
        None,
    ));
    assert_eq!(h.points("t1").0, 66_666_667);
    let sel = Selection {
        scope: h.scope("t1", None),
        category: None,
        remediation: None,
    };
    let recs = report::recommendations(&h.ledger, h.engine.catalog(), &sel);
    assert!(
        recs.iter().all(|r| r.control != "fw"),
        "b hidden, a credited: nothing to gain on fw"
    );
    // expiry at T0+20min takes the credit back at exactly that instant
    let t = h.advance(T0 + 30 * MIN);
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].event_time, t[0].reason), (T0 + 20 * MIN, Reason::ExceptionEnded));
    assert_eq!(h.points("t1").0, 33_333_333);
    // planned remediation and alternate mitigation behave like their families
    assert!(!Justification::PlannedRemediation.credits());
    assert!(Justification::AlternateMitigation.credits());
    // a tenant-wide alternate mitigation credits every device of the tenant
    h.except(exc(
        "x3",
        "fw",
        ExceptionScope::Tenant,
        Justification::AlternateMitigation,
        T0 + 30 * MIN,
        None,
    ));
    assert_eq!(h.points("t1").0, 100 * P);
    // a tag-scoped planned remediation on a, which is credited by x3: credit wins
    h.except(exc(
        "x4",
        "fw",
        ExceptionScope::Tag("kiosk".into()),
        Justification::PlannedRemediation,
        T0,
        None,
    ));
    assert_eq!(h.points("t1").0, 100 * P);
}

#[test]
fn a_late_exception_takes_effect_at_the_clock_and_never_rewrites_history() {
    let mut h = Harness::new(catalog(THREE));
    h.send(ev("a", T0, Upsert, &[("fw", b(true))])).unwrap();
    h.send(ev("a", T0 + 20 * MIN, Upsert, &[("fw", b(false))])).unwrap();
    // Added with the clock at T0+20min, starting at T0+10min: it credits fw from the clock on.
    let t = h.except(exc(
        "late",
        "fw",
        ExceptionScope::Tenant,
        Justification::ThirdPartyControl,
        T0 + 10 * MIN,
        None,
    ));
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].event_time, t[0].reason),
        (T0 + 20 * MIN, Reason::ExceptionStarted)
    );
    // Before the clock the history is what it was: fw passing, 100 of 100 (a backdated credit
    // would have added another 100 here, from the current FAIL).
    assert_eq!(h.points_at("t1", T0 + 15 * MIN), (100 * P, 100 * P));
    // From the clock on: failing, but credited (points, maximum with exceptions).
    assert_eq!(h.points_at("t1", T0 + 20 * MIN), (100 * P, 100 * P));
    assert_eq!(t[0].new.state(), posture_core::ControlState::Excepted);
    // An exception wholly in the past does nothing.
    let t = h.except(exc(
        "gone",
        "fw",
        ExceptionScope::Tenant,
        Justification::RiskAccepted,
        T0,
        Some(T0 + 5 * MIN),
    ));
    assert!(t.is_empty(), "{t:?}");
}

#[test]
fn score_at_time_is_the_sum_of_deltas_up_to_then() {
    let mut h = Harness::new(catalog(THREE));
    h.send(ev("a", T0, Upsert, &[("fw", b(false))])).unwrap();
    h.send(ev("a", T0 + 10 * MIN, Upsert, &[("fw", b(true))])).unwrap();
    h.send(ev("b", T0 + 20 * MIN, Upsert, &[("fw", b(false))])).unwrap();
    // before the first event nothing; each instant sees exactly the deltas up to it
    assert_eq!(h.points_at("t1", T0 - 1), (0, 0));
    assert_eq!(h.points_at("t1", T0), (0, 100 * P));
    assert_eq!(h.points_at("t1", T0 + 10 * MIN - 1), (0, 100 * P));
    assert_eq!(h.points_at("t1", T0 + 10 * MIN), (100 * P, 100 * P));
    assert_eq!(h.points_at("t1", T0 + 20 * MIN), (50 * P, 100 * P));
}

#[test]
fn applies_to_inventory_groups_tags_and_versions() {
    let cat = catalog(
        r#"
baseline: w
version: 1
applies_to: { os_family: [windows] }
controls:
  - { id: w11, title: W11 only, category: os, applies_to: { os_version: ">=10.0.22000" }, check: { key: k, op: exists } }
  - { id: srv, title: Servers, category: os, applies_to: { groups: [servers] }, check: { key: k, op: exists } }
  - { id: lap, title: Laptops, category: os, applies_to: { tags: [laptop] }, check: { key: k, op: exists } }
  - { id: all, title: All windows, category: os, check: { key: k, op: exists } }
"#,
    );
    let mut h = Harness::new(cat.clone());
    use ControlState::*;
    // no inventory yet: every control with applies_to (here all, via the baseline) is N/A
    h.send(ev("d", T0, Upsert, &[])).unwrap();
    assert_eq!(h.state("t1", "d", "all"), NotApplicable);
    h.send(with_inventory(
        ev("d", T0 + 1, Upsert, &[]),
        "windows",
        "10.0.19045",
        &["servers"],
        &[],
    ))
    .unwrap();
    let st = |h: &Harness, c| h.state("t1", "d", c);
    assert_eq!(
        [st(&h, "w11"), st(&h, "srv"), st(&h, "lap"), st(&h, "all")],
        [NotApplicable, Fail, NotApplicable, Fail]
    );
    h.send(with_inventory(
        ev("d", T0 + 2, Upsert, &[]),
        "windows",
        "10.0.22631",
        &[],
        &["laptop"],
    ))
    .unwrap();
    assert_eq!(
        [st(&h, "w11"), st(&h, "srv"), st(&h, "lap"), st(&h, "all")],
        [Fail, NotApplicable, Fail, Fail]
    );
    h.send(with_inventory(
        ev("d", T0 + 3, Upsert, &[]),
        "macos",
        "14.1",
        &[],
        &["laptop"],
    ))
    .unwrap();
    assert_eq!(
        [st(&h, "w11"), st(&h, "srv"), st(&h, "lap"), st(&h, "all")],
        [NotApplicable; 4]
    );
}

#[test]
fn inventories_are_bounded_and_group_names_valid() {
    let mut h = Harness::new(catalog(THREE));
    let send = |h: &mut Harness, groups: &[&str], tags: &[&str], hostname: Option<String>| {
        let mut e = with_inventory(ev("d", T0, Upsert, &[("fw", b(true))]), "linux", "6.1", groups, tags);
        e.device.as_mut().unwrap().hostname = hostname;
        h.send(e).map(|_| ()).map_err(|r| r.to_string())
    };
    // The defaults: 64 groups, 64 tags, 256 bytes a name.
    let many: Vec<String> = (0..65).map(|i| format!("g{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let err = send(&mut h, &many, &[], None).unwrap_err();
    assert!(
        err.contains("device.groups lists 65 names, more than the limit of 64"),
        "{err}"
    );
    let err = send(&mut h, &[], &many, None).unwrap_err();
    assert!(
        err.contains("device.tags lists 65 names, more than the limit of 64"),
        "{err}"
    );
    let long = "x".repeat(257);
    let err = send(&mut h, &[&long], &[], None).unwrap_err();
    assert!(
        err.contains("a name in device.groups") && err.contains("is 257 bytes, more than 256"),
        "{err}"
    );
    let err = send(&mut h, &[], &[], Some(long.clone())).unwrap_err();
    assert!(err.contains("device.hostname") && err.contains("257 bytes"), "{err}");
    // Names that cannot be told apart from another scope.
    for (group, why) in [
        ("", "is empty (the empty group is the whole tenant's scope)"),
        ("_overflow", "is reserved"),
        ("finance ", "white space"),
        ("fin\nance", "control character"),
    ] {
        let err = send(&mut h, &["ok", group], &[], None).unwrap_err();
        assert!(err.contains(why), "{group:?}: {err}");
    }
    let mut e = ev("d", T0, Upsert, &[]);
    e.tenant_id = "_overflow".into();
    assert!(h
        .send(e)
        .unwrap_err()
        .to_string()
        .contains("tenant_id \"_overflow\" is reserved"));
    assert_eq!(h.engine.stats().events_invalid, 9);
    assert_eq!(h.engine.device_count(), 0, "nothing was created");
    // At the limits, everything is taken; the same groups in another order are the same
    // inventory (the same scopes).
    let at_limit: Vec<String> = (0..64).map(|i| format!("g{i:02}")).collect();
    let mut groups: Vec<&str> = at_limit.iter().map(String::as_str).collect();
    send(&mut h, &groups, &groups, Some("h".repeat(256))).unwrap();
    groups.reverse();
    let mut e = with_inventory(ev("d", T0 + 1, Upsert, &[]), "linux", "6.1", &groups, &[]);
    e.sequence = AUTO_SEQ;
    let t = h.send(e).unwrap();
    assert!(t.is_empty(), "the same groups: no scope moved");
    assert_eq!(h.score("t1", Some("g63")).total.points, 100.0);
    // Bounds are settings.
    let cfg = EngineConfig {
        max_groups: 2,
        max_tags: 1,
        max_name_bytes: 5,
        ..Default::default()
    };
    let mut h = Harness::with_config(catalog(THREE), cfg);
    assert!(send(&mut h, &["a", "b", "c"], &[], None)
        .unwrap_err()
        .contains("limit of 2"));
    assert!(send(&mut h, &["a"], &["x", "y"], None)
        .unwrap_err()
        .contains("limit of 1"));
    assert!(send(&mut h, &["abcdef"], &[], None)
        .unwrap_err()
        .contains("more than 5"));
    send(&mut h, &["a", "b"], &["x"], Some("host".into())).unwrap();
}

#[test]
fn moving_between_groups_moves_the_points() {
    let mut h = Harness::new(catalog(THREE));
    h.send(with_inventory(
        ev("d", T0, Upsert, &[("fw", b(true))]),
        "linux",
        "6.1",
        &["a"],
        &[],
    ))
    .unwrap();
    assert_eq!(h.score("t1", Some("a")).total.points, 100.0);
    let t = h
        .send(with_inventory(
            ev("d", T0 + 1, Upsert, &[]),
            "linux",
            "6.1",
            &["b"],
            &[],
        ))
        .unwrap();
    assert_eq!(h.score("t1", Some("a")).total.max_points, 0.0);
    assert_eq!(h.score("t1", Some("b")).total.points, 100.0);
    assert_eq!(h.score("t1", None).total.points, 100.0);
    assert_eq!(t.len(), 1, "state unchanged, scopes changed: one transition");
    assert_eq!(h.out.deltas_of(&t[0]).len(), 2);
}

#[test]
fn tenants_are_separate() {
    let mut h = Harness::new(catalog(THREE));
    h.send(ev("d", T0, Upsert, &[("fw", b(true))])).unwrap();
    let mut e = ev("d", T0, Upsert, &[("fw", b(false))]);
    e.tenant_id = "t2".into();
    h.send(e).unwrap();
    assert_eq!(h.points("t1").0, 100 * P);
    assert_eq!(h.points("t2").0, 0);
}
