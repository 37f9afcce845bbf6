//! Property tests: random baselines and random event streams.
//!
//! 1. After every event (every prefix of the stream), the incremental scope
//!    aggregates equal a from-scratch recomputation over device state, and
//!    equal the sum of every emitted delta (checked inside `Harness`).
//! 2. Duplicates and stale events shuffled into the stream change nothing:
//!    the transitions are identical to those of the clean stream.
//! 3. Golden digests: on 256 fixed random cases the engine says exactly what it said when
//!    `engine_golden.txt` was written (the guard of work on its speed).

mod common;
use common::*;
use posture_core::*;
use proptest::prelude::*;

const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];

fn leaf_yaml() -> impl Strategy<Value = String> {
    let key = prop::sample::select(KEYS.to_vec());
    let op_value = prop_oneof![
        prop::sample::select(vec!["eq", "ne"]).prop_flat_map(|op| {
            prop::sample::select(vec!["true", "false", "1", "5", "a", "b"])
                .prop_map(move |v| format!("op: {op}, value: {v}"))
        }),
        (
            prop::sample::select(vec!["lt", "le", "gt", "ge"]),
            prop::sample::select(vec!["1", "5", "2.5"])
        )
            .prop_map(|(op, v)| format!("op: {op}, value: {v}")),
        (
            prop::sample::select(vec!["lt", "ge", "eq"]),
            prop::sample::select(vec!["\"1.2\"", "\"1.10\"", "\"2\""])
        )
            .prop_map(|(op, v)| format!("op: {op}, value: {v}, version: true")),
        prop::sample::select(vec!["in", "not_in"]).prop_map(|op| format!("op: {op}, value: [1, a, true]")),
        Just("op: contains, value: a".to_string()),
        Just("op: matches, value: \"^a\"".to_string()),
        Just("op: exists".to_string()),
        Just("op: absent".to_string()),
    ];
    (key, op_value).prop_map(|(k, ov)| format!("{{ key: {k}, {ov} }}"))
}

fn check_yaml() -> impl Strategy<Value = String> {
    leaf_yaml().prop_recursive(2, 8, 3, |inner| {
        (
            prop::sample::select(vec!["all", "any", "none"]),
            prop::collection::vec(inner, 1..4),
        )
            .prop_map(|(comb, kids)| format!("{{ {comb}: [{}] }}", kids.join(", ")))
    })
}

fn control_yaml() -> impl Strategy<Value = (String, String, u32, String, String)> {
    (
        check_yaml(),
        prop::sample::select(vec!["fail", "unknown", "pass"]),
        1u32..200,
        prop::sample::select(vec!["application", "os", "network", "accounts", "security_controls"]),
        prop::sample::select(vec![
            "",
            "applies_to: { os_family: [windows] }, ",
            "applies_to: { groups: [g1] }, ",
            "applies_to: { tags: [t0] }, ",
            "applies_to: { os_version: \">=10.0\" }, ",
        ]),
    )
        .prop_map(|(check, om, p, cat, at)| (check, om.to_string(), p, cat.to_string(), at.to_string()))
}

fn baseline_yaml() -> impl Strategy<Value = String> {
    prop::collection::vec(control_yaml(), 1..6).prop_map(|controls| {
        let mut s = String::from("baseline: random\nversion: 1\ncontrols:\n");
        for (i, (check, om, p, cat, at)) in controls.into_iter().enumerate() {
            s += &format!(
                "  - {{ id: c{i}, title: C{i}, category: {cat}, points: {p}, on_missing: {om}, {at}check: {check} }}\n"
            );
        }
        s
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0i64..7).prop_map(Value::Long),
        Just(Value::Double(2.5)),
        prop::sample::select(vec!["a", "b", "ab", "1.2", "1.10.1", "2"]).prop_map(|s| Value::String(s.into())),
        prop::sample::select(vec![vec![], vec!["a"], vec!["b", "a"]])
            .prop_map(|v| Value::Array(v.into_iter().map(String::from).collect())),
    ]
}

#[derive(Clone, Debug)]
struct Step {
    tenant: u8,
    device: u8,
    dt_min: i64,
    kind: ChangeKind,
    inventory: Option<(bool, u8, Vec<&'static str>, bool)>,
    settings: Vec<(usize, Value)>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0u8..2,
        0u8..5,
        -5i64..40,
        prop::sample::select(vec![
            ChangeKind::Upsert,
            ChangeKind::Upsert,
            ChangeKind::Remove,
            ChangeKind::Snapshot,
            ChangeKind::Retire,
        ]),
        prop::option::of((
            any::<bool>(),
            0u8..3,
            prop::sample::subsequence(vec!["g0", "g1"], 0..=2),
            any::<bool>(),
        )),
        prop::collection::vec((0usize..4, value()), 0..4),
    )
        .prop_map(|(tenant, device, dt_min, kind, inventory, settings)| Step {
            tenant,
            device,
            dt_min,
            kind,
            inventory,
            settings,
        })
}

/// (justification, control, scope kind, device, start minute, length in minutes)
type ExcSpec = (u8, usize, u8, u8, i64, Option<i64>);

fn exception() -> impl Strategy<Value = ExcSpec> {
    (
        0u8..4,
        0usize..6,
        0u8..4,
        0u8..5,
        0i64..300,
        prop::option::of(1i64..300),
    )
}

/// Turns steps into events with per-device increasing sequences.
fn events(steps: &[Step]) -> Vec<ConfigChange> {
    let mut seq = std::collections::HashMap::new();
    let mut t = T0;
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            t += s.dt_min * MIN;
            let dev = format!("d{}", s.device);
            let tenant = format!("t{}", s.tenant);
            let sq = seq.entry((tenant.clone(), dev.clone())).or_insert(0i64);
            *sq += 1 + (i as i64 % 3); // gaps are fine: only "strictly increasing" matters
            let mut settings: Vec<Setting> = Vec::new();
            if s.kind != ChangeKind::Retire {
                for (k, v) in &s.settings {
                    if !settings.iter().any(|x| x.key == KEYS[*k]) {
                        settings.push(Setting {
                            key: KEYS[*k].into(),
                            value: v.clone(),
                        });
                    }
                }
            }
            let device = s.inventory.as_ref().map(|(win, ver, groups, tag)| DeviceInfo {
                os_family: if *win { "windows".into() } else { "linux".into() },
                os_version: ["9.0", "10.0.19045", "11"][*ver as usize].into(),
                hostname: None,
                groups: groups.iter().map(|g| g.to_string()).collect(),
                tags: if *tag { vec!["t0".into()] } else { vec![] },
            });
            ConfigChange {
                event_id: format!("e{i}"),
                tenant_id: tenant,
                device_id: dev,
                observed_at: t,
                sequence: *sq,
                source: ConfigSource::Agent,
                kind: s.kind,
                device,
                settings,
            }
        })
        .collect()
}

fn exceptions(cat: &Catalog, excs: &[ExcSpec]) -> Vec<posture_core::exception::Exception> {
    let n_controls = cat.controls.len();
    let mut out = Vec::new();
    for (i, (j, c, scope, dev, start, len)) in excs.iter().enumerate() {
        let justification = [
            Justification::ThirdPartyControl,
            Justification::AlternateMitigation,
            Justification::RiskAccepted,
            Justification::PlannedRemediation,
        ][*j as usize];
        let scope = match scope {
            0 => ExceptionScope::Tenant,
            1 => ExceptionScope::Device(format!("d{dev}")),
            2 => ExceptionScope::Group("g1".into()),
            _ => ExceptionScope::Tag("t0".into()),
        };
        let starts_at = T0 + start * MIN;
        out.push(exc(
            &format!("x{i}"),
            &format!("c{}", c % n_controls),
            scope,
            justification,
            starts_at,
            len.map(|l| starts_at + l * MIN),
        ));
    }
    out
}

fn config() -> EngineConfig {
    EngineConfig {
        inactivity_window_ms: 90 * MIN,
        ..Default::default()
    }
}

fn run(
    cat: &std::sync::Arc<Catalog>,
    excs: &[ExcSpec],
    evs: &[ConfigChange],
) -> Vec<(String, Transition, Vec<engine::ScopeDelta>)> {
    let mut h = Harness::with_config(cat.clone(), config());
    for e in exceptions(cat, excs) {
        h.except(e);
    }
    let mut out = Vec::new();
    for e in evs {
        let _ = h.send(e.clone());
        for t in &h.out.transitions {
            out.push((
                h.engine.device_name(t.device).to_string(),
                t.clone(),
                h.out.deltas_of(t).to_vec(),
            ));
        }
    }
    // finally let every exception and inactivity deadline pass
    h.advance(T0 + 1000 * DAY);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Incremental == from scratch == sum of deltas, after every event
    /// (asserted by the harness), for random baselines, events and exceptions.
    #[test]
    fn incremental_equals_from_scratch(
        yaml in baseline_yaml(),
        steps in prop::collection::vec(step(), 1..60),
        excs in prop::collection::vec(exception(), 0..4),
    ) {
        let cat = catalog(&yaml);
        let evs = events(&steps);
        let transitions = run(&cat, &excs, &evs);
        // every transition's scope deltas are consistent with its cells
        for (_, t, deltas) in &transitions {
            for d in deltas {
                prop_assert_eq!(d.control, t.control);
            }
        }
    }

    /// Duplicates and stale events shuffled in change no transition.
    #[test]
    fn duplicates_and_stale_events_change_nothing(
        yaml in baseline_yaml(),
        steps in prop::collection::vec(step(), 1..40),
        excs in prop::collection::vec(exception(), 0..3),
        noise in prop::collection::vec((0usize..1000, 0usize..1000, any::<bool>()), 1..20),
    ) {
        let cat = catalog(&yaml);
        let clean = events(&steps);
        let mut noisy = clean.clone();
        for (src, pos, stale) in noise {
            let src = src % clean.len();
            // insert after the original (a copy before it would be the original)
            let at_least = noisy.iter().position(|e| e.event_id == clean[src].event_id).unwrap() + 1;
            let pos = at_least + pos % (noisy.len() - at_least + 1);
            let mut e = clean[src].clone();
            if stale {
                // an older sequence with different content and a later time
                e.sequence -= 1;
                e.observed_at += 500 * DAY;
                e.kind = ChangeKind::Snapshot;
                e.settings.clear();
                e.event_id += "-stale";
            }
            noisy.insert(pos, e);
        }
        let a = run(&cat, &excs, &clean);
        let b = run(&cat, &excs, &noisy);
        let strip = |v: Vec<(String, Transition, Vec<engine::ScopeDelta>)>| -> Vec<_> {
            v.into_iter().map(|(d, mut t, deltas)| { t.source = SourcePos::default(); t.scopes = 0..0; (d, t, deltas) }).collect()
        };
        prop_assert_eq!(strip(a), strip(b));
    }
}

/// Scores from counts summed by name across engines: `(tenant, group, control) -> counts`.
fn named_counts(engines: &[&Engine]) -> std::collections::BTreeMap<(String, Option<String>, ControlIdx), [i64; 5]> {
    let mut m = std::collections::BTreeMap::new();
    for e in engines {
        for ((scope, c), cell) in e.aggregate_table() {
            let key = (
                e.tenant_name(scope.tenant).to_string(),
                e.group_name(scope.group).map(str::to_string),
                c,
            );
            let v: &mut [i64; 5] = m.entry(key).or_insert([0; 5]);
            for (acc, k) in v.iter_mut().zip(cell.counts) {
                *acc += k;
            }
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// One engine per partition (devices split by id), counts summed across
    /// engines: every scope's score equals the single-engine score exactly.
    #[test]
    fn partitions_sum_counts_to_the_single_engine_score(
        yaml in baseline_yaml(),
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let cat = catalog(&yaml);
        let evs = events(&steps);
        let cfg = EngineConfig { inactivity_window_ms: 1_000 * DAY, ..Default::default() };
        let mut single = Engine::new(cat.clone(), cfg.clone());
        let mut parts = [Engine::new(cat.clone(), cfg.clone()), Engine::new(cat.clone(), cfg)];
        let mut out = Output::default();
        for e in &evs {
            let _ = single.apply(e, SourcePos::default(), &mut out);
            let p = e.device_id.bytes().map(|b| b as usize).sum::<usize>() % 2;
            let _ = parts[p].apply(e, SourcePos::default(), &mut out);
            out.clear();
        }
        let whole = named_counts(&[&single]);
        let split = named_counts(&[&parts[0], &parts[1]]);
        prop_assert_eq!(&whole, &split);
        // and so the scores computed from them are equal, per scope
        let score = |m: &std::collections::BTreeMap<(String, Option<String>, ControlIdx), [i64; 5]>| {
            let mut s: std::collections::BTreeMap<(String, Option<String>), i64> = Default::default();
            for ((t, g, c), k) in m {
                let p = cat.controls[*c as usize].points;
                *s.entry((t.clone(), g.clone())).or_default() += engine::contribution(p, k[0], k[1]);
            }
            s
        };
        prop_assert_eq!(score(&whole), score(&split));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// An engine restored from a snapshot taken after any prefix of the
    /// events continues exactly like the original: the same outputs for the
    /// rest of the events and the deadlines after them, and the same
    /// snapshot bytes at the end (and right after restoring).
    #[test]
    fn a_restored_snapshot_continues_exactly(
        yaml in baseline_yaml(),
        steps in prop::collection::vec(step(), 1..60),
        excs in prop::collection::vec(exception(), 0..4),
        cut in 0usize..1000,
    ) {
        let cat = catalog(&yaml);
        let evs = events(&steps);
        let cut = cut % (evs.len() + 1);
        let mut out = Output::default();
        let mut a = Engine::new(cat.clone(), config());
        for e in exceptions(&cat, &excs) {
            a.add_exception(e, &mut out).unwrap();
        }
        for (i, e) in evs[..cut].iter().enumerate() {
            let _ = a.apply(e, SourcePos { partition: 0, offset: i as i64 }, &mut out);
        }
        let mut bytes = Vec::new();
        a.snapshot(&mut bytes);
        let mut b = Engine::restore(cat.clone(), config(), &bytes).unwrap();
        let mut again = Vec::new();
        b.snapshot(&mut again);
        prop_assert_eq!(&bytes, &again);
        let (mut oa, mut ob) = (Output::default(), Output::default());
        for (i, e) in evs.iter().enumerate().skip(cut) {
            let pos = SourcePos { partition: 0, offset: i as i64 };
            let ra = a.apply(e, pos, &mut oa);
            let rb = b.apply(e, pos, &mut ob);
            prop_assert_eq!(ra, rb);
            prop_assert_eq!(&oa.transitions, &ob.transitions);
            prop_assert_eq!(&oa.scope_deltas, &ob.scope_deltas);
            oa.clear();
            ob.clear();
        }
        a.advance_to(T0 + 1000 * DAY, SourcePos::default(), &mut oa);
        b.advance_to(T0 + 1000 * DAY, SourcePos::default(), &mut ob);
        prop_assert_eq!(&oa.transitions, &ob.transitions);
        prop_assert_eq!(&oa.scope_deltas, &ob.scope_deltas);
        let (mut sa, mut sb) = (Vec::new(), Vec::new());
        a.snapshot(&mut sa);
        b.snapshot(&mut sb);
        prop_assert_eq!(sa, sb);
        prop_assert_eq!(a.stats(), b.stats());
    }

    /// Corrupt snapshots are errors, never panics.
    #[test]
    fn corrupt_snapshots_are_errors(
        yaml in baseline_yaml(),
        steps in prop::collection::vec(step(), 1..20),
        flips in prop::collection::vec((0usize..100_000, any::<u8>()), 1..4),
        cut in 0usize..100_000,
    ) {
        let cat = catalog(&yaml);
        let mut e = Engine::new(cat.clone(), config());
        let mut out = Output::default();
        for (i, ev) in events(&steps).iter().enumerate() {
            let _ = e.apply(ev, SourcePos { partition: 0, offset: i as i64 }, &mut out);
        }
        let mut bytes = Vec::new();
        e.snapshot(&mut bytes);
        for (at, x) in flips {
            let n = bytes.len();
            bytes[at % n] ^= x | 1;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let _ = Engine::restore(cat, config(), &bytes);
    }
}

/// FNV-1a, 64 bits: a digest that does not depend on the standard library's hashers (which
/// promise no stable output). What it digests can still change with the toolchain: `Debug` text,
/// and the snapshot's inventory hash (`DefaultHasher`); a toolchain upgrade may then fail the
/// test, never pass it wrongly, and the file is written again (`POSTURE_BLESS=1`) after checking why.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn put(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn put_debug(&mut self, v: &impl std::fmt::Debug) {
        self.put(format!("{v:?}").as_bytes());
        self.put(b"\n");
    }
}

/// Runs one random case and digests everything the engine says: each event's result, every
/// transition with its device id and scope deltas, the deadlines' transitions, the stats, the
/// snapshot bytes, and the snapshot of the engine restored from them.
fn golden_digest(yaml: &str, steps: &[Step], excs: &[ExcSpec]) -> u64 {
    let cat = catalog(yaml);
    let mut h = Fnv::new();
    let mut e = Engine::new(cat.clone(), config());
    let mut out = Output::default();
    let digest_out = |h: &mut Fnv, e: &Engine, out: &mut Output| {
        for t in &out.transitions {
            h.put(e.device_name(t.device).as_bytes());
            h.put_debug(t);
            h.put_debug(&out.deltas_of(t));
        }
        out.clear();
    };
    for x in exceptions(&cat, excs) {
        h.put_debug(&e.add_exception(x, &mut out));
        digest_out(&mut h, &e, &mut out);
    }
    for (i, ev) in events(steps).iter().enumerate() {
        h.put_debug(&e.apply(
            ev,
            SourcePos {
                partition: 0,
                offset: i as i64,
            },
            &mut out,
        ));
        digest_out(&mut h, &e, &mut out);
    }
    let mut bytes = Vec::new();
    e.snapshot(&mut bytes);
    h.put(&bytes);
    e.advance_to(T0 + 1000 * DAY, SourcePos::default(), &mut out);
    digest_out(&mut h, &e, &mut out);
    h.put_debug(e.stats());
    bytes.clear();
    e.snapshot(&mut bytes);
    h.put(&bytes);
    let restored = Engine::restore(cat, config(), &bytes).expect("own snapshot restores");
    let mut again = Vec::new();
    restored.snapshot(&mut again);
    assert_eq!(bytes, again, "a restored engine snapshots the same bytes");
    h.0
}

/// The engine is exactly what it was when `tests/engine_golden.txt` was written: the same
/// results, transitions, scope deltas, stats and snapshot bytes on 256 random cases drawn
/// with a fixed seed (baselines, event streams with inventories, retirements, removals,
/// snapshots, duplicates of time, and exceptions). Work on the engine's speed must keep this
/// green; a change of behaviour on purpose rewrites the file with `POSTURE_BLESS=1` and says
/// why in its commit.
#[test]
fn the_engine_equals_its_golden_digests() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/engine_golden.txt");
    let mut runner = TestRunner::deterministic();
    let case = (
        baseline_yaml(),
        prop::collection::vec(step(), 1..80),
        prop::collection::vec(exception(), 0..4),
    );
    let mut digests = String::new();
    for _ in 0..256 {
        let (yaml, steps, excs) = case.new_tree(&mut runner).expect("a case").current();
        digests += &format!("{:016x}\n", golden_digest(&yaml, &steps, &excs));
    }
    if std::env::var_os("POSTURE_BLESS").is_some() {
        std::fs::write(&path, &digests).expect("write the golden digests");
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (POSTURE_BLESS=1 writes it)", path.display()));
    let differ: Vec<usize> = want
        .lines()
        .zip(digests.lines())
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .collect();
    assert!(
        differ.is_empty() && want.lines().count() == 256,
        "the engine's output differs from tests/engine_golden.txt in cases {differ:?}"
    );
}
