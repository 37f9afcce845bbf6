//! posture-sink against the real servers: ClickHouse 18.16 (the test stack) and ClickHouse 26
//! (chdb, in-process, through `tests/chdb_run.py` and `$POSTURE_PYTHON`).
//!
//! The main test drives posture-core with a small hand-built event sequence (three controls, two
//! tenants, four devices, two groups, exceptions, fixes, a regression, a retirement) through two
//! engines, one per Kafka partition as in the pipeline, and one reference engine over all events.
//! It turns the two engines' output into rows with `posture_sink::rows`, writes them with
//! `posture_sink::Sink` into 18.16 and inserts the same rows into chdb, then runs every documented
//! query of `schemas/clickhouse/queries.sql` on both and compares each answer with the core's own
//! numbers (`report::score` over `Ledger::new(Some(t))`, transition sums, device cells), exactly,
//! in micro-points. The other tests cover migrate, the sink's errors and its retries.
//!
//! They need `scripts/stack up` and fail (never skip) when it is not running.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use posture_core::engine::{count::*, Reason, ScopeKey, NO_GROUP};
use posture_core::report::{self, Selection};
use posture_core::*;
use posture_sink::queries::{self, Param};
use posture_sink::{migrate, migrations, rows, Batch, RetryPolicy, Sink, SinkError, SCHEMA_MIGRATIONS_DDL};
use posture_tests::consistency::{point_figures, score_figures};
use posture_tests::{clickhouse_client, fresh_database, unique_name};
use serde_json::{Map, Value as Json};

const T0: i64 = 1_795_341_600_000; // 2026-11-22T10:00:00Z, on an hour (and day) boundary + 10 h
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

const BASELINE: &str = r#"
baseline: sink-test
version: 1
controls:
  - { id: fw, title: Firewall, category: network, points: 30, check: { key: fw, op: eq, value: true }, on_missing: fail }
  - { id: av, title: Antivirus, category: security_controls, points: 25, check: { key: av, op: eq, value: true } }
  - { id: upd, title: Updates, category: os, points: 50, remediation: software_update, check: { key: upd, op: eq, value: true } }
"#;

const CATEGORIES: [&str; 5] = ["", "network", "security_controls", "os", "accounts"];

// --- the scenario --------------------------------------------------------------------------------

enum Step {
    Event(ConfigChange),
    Exception(Exception),
    Advance(i64),
    /// Write what was collected so far as one batch.
    Flush,
}

struct Scenario {
    /// One engine over every event: the reference.
    engine: Engine,
    /// Every output of the reference engine, in order (for the expected values).
    outputs: Vec<Output>,
    /// The rows, batch by batch, as given to the sink.
    batches: Vec<Batch>,
    /// Per batch, the `score_deltas` rows the sink wrote before migration 011 (for the upgrade test).
    legacy_deltas: Vec<Vec<posture_sink::rows::ScoreDeltaRow>>,
    /// Per batch, the `control_state` rows the sink wrote before migration 013.
    legacy_states: Vec<Vec<posture_sink::rows::ControlStateRow>>,
}

fn event(
    tenant: &str,
    device: &str,
    seq: i64,
    t: i64,
    kind: ChangeKind,
    groups: &[&str],
    settings: &[(&str, bool)],
) -> Step {
    let mut ev = ConfigChange::new(tenant, device, kind, t, seq).with_event_id(format!("{device}-{seq}"));
    if !groups.is_empty() {
        ev = ev.with_inventory("windows", "10.0.19045", groups, &[]);
    }
    for &(k, v) in settings {
        ev = ev.with_setting(k, v);
    }
    Step::Event(ev)
}

fn exception(id: &str, control: &str, scope: ExceptionScope, j: Justification, start: i64, end: Option<i64>) -> Step {
    Step::Exception(Exception {
        id: id.into(),
        tenant: "t1".into(),
        control: control.into(),
        scope,
        justification: j,
        starts_at: start,
        expires_at: end,
        author: "test".into(),
        note: String::new(),
    })
}

fn scenario() -> Scenario {
    use ChangeKind::*;
    let cat = Arc::new(Catalog::from_sources(&[("sink-test.yaml", BASELINE)]).unwrap_or_else(|e| panic!("{e:#?}")));
    let mut engine = Engine::new(cat.clone(), EngineConfig::default());
    let steps = vec![
        event(
            "t1",
            "d1",
            1,
            T0 + 5 * MIN,
            Snapshot,
            &["office"],
            &[("fw", true), ("av", false), ("upd", false)],
        ),
        event(
            "t1",
            "d2",
            1,
            T0 + 20 * MIN,
            Snapshot,
            &["office", "servers"],
            &[("fw", false), ("av", true), ("upd", true)],
        ),
        event(
            "t2",
            "d9",
            1,
            T0 + 30 * MIN,
            Snapshot,
            &["office"],
            &[("fw", true), ("av", true), ("upd", false)],
        ),
        Step::Flush,
        // d1's missing updates: risk accepted from T0+1h (hidden, score unchanged).
        exception(
            "ex-risk",
            "upd",
            ExceptionScope::Device("d1".into()),
            Justification::RiskAccepted,
            T0 + HOUR,
            None,
        ),
        // The servers' firewall is a third party's from T0+3h to T0+5h (credited).
        exception(
            "ex-fw",
            "fw",
            ExceptionScope::Group("servers".into()),
            Justification::ThirdPartyControl,
            T0 + 3 * HOUR,
            Some(T0 + 5 * HOUR),
        ),
        event(
            "t1",
            "d3",
            1,
            T0 + 70 * MIN,
            Snapshot,
            &["servers"],
            &[("fw", true), ("av", true), ("upd", false)],
        ),
        // A change exactly on an hour boundary: it belongs to the 12:00 bucket, not the 11:00 one.
        event("t2", "d9", 2, T0 + 2 * HOUR, Upsert, &[], &[("fw", false)]),
        // The fix: d1 turns its antivirus on.
        event("t1", "d1", 2, T0 + 150 * MIN + 123, Upsert, &[], &[("av", true)]),
        // Stale: ignored, no rows.
        event("t1", "d1", 2, T0 + 151 * MIN, Upsert, &[], &[("av", false)]),
        Step::Flush,
        // Passing T0+3h starts ex-fw (stamped T0+3h) before this event.
        event("t1", "d3", 2, T0 + 4 * HOUR, Upsert, &[], &[("upd", true)]),
        // The clock passes T0+5h: ex-fw ends (stamped T0+5h).
        Step::Advance(T0 + 6 * HOUR),
        // Next day: d1's firewall regresses, d2 retires.
        event("t1", "d1", 3, T0 + 25 * HOUR + 7, Upsert, &[], &[("fw", false)]),
        Step::Flush,
        event("t1", "d2", 2, T0 + 26 * HOUR, Retire, &[], &[]),
        Step::Flush,
    ];
    // The reference engine sees every event (the expected values); the rows come from two engines,
    // one per Kafka partition, as in the pipeline: d1 and d3 on partition 0, d2 and d9 on 1.
    let mut parts = [
        Engine::new(cat.clone(), EngineConfig::default()),
        Engine::new(cat.clone(), EngineConfig::default()),
    ];
    let partition_of = |device: &str| usize::from(matches!(device, "d2" | "d9"));
    let mut offsets = [100i64, 500];
    let mut outputs = Vec::new();
    let mut batches = Vec::new();
    let mut batch = Batch::new();
    let mut legacy_deltas = Vec::new();
    let mut legacy = Vec::new();
    let mut legacy_states = Vec::new();
    let mut legacy_state = Vec::new();
    for step in steps {
        let mut out = Output::default();
        let mut part_outs = [Output::default(), Output::default()];
        let mut next_source = |p: usize| {
            offsets[p] += 1;
            SourcePos {
                partition: p as i32,
                offset: offsets[p],
            }
        };
        match step {
            Step::Event(ev) => {
                let stale = ev.event_id == "d1-2" && ev.observed_at == T0 + 151 * MIN;
                let p = partition_of(&ev.device_id);
                let source = next_source(p);
                let r = engine.apply(&ev, source, &mut out);
                assert_eq!(r.is_err(), stale, "event {}: {r:?}", ev.event_id);
                let r = parts[p].apply(&ev, source, &mut part_outs[p]);
                assert_eq!(r.is_err(), stale, "event {} on partition {p}: {r:?}", ev.event_id);
            }
            Step::Exception(e) => {
                engine.add_exception(e.clone(), &mut out).expect("exception");
                for (p, part) in parts.iter_mut().enumerate() {
                    part.add_exception(e.clone(), &mut part_outs[p]).expect("exception");
                }
            }
            Step::Advance(t) => {
                engine.advance_to(t, SourcePos::default(), &mut out);
                for (p, part) in parts.iter_mut().enumerate() {
                    part.advance_to(t, next_source(p), &mut part_outs[p]);
                }
            }
            Step::Flush => {
                for (p, part) in parts.iter().enumerate() {
                    batch.settle(part, Some(p as i32));
                }
                batches.push(std::mem::take(&mut batch));
                legacy_deltas.push(std::mem::take(&mut legacy));
                legacy_states.push(std::mem::take(&mut legacy_state));
                continue;
            }
        }
        for (p, part) in parts.iter().enumerate() {
            rows(part, &part_outs[p], &mut batch);
            legacy.extend(posture_sink::rows::score_delta_rows(part, &part_outs[p]));
            legacy_state.extend(posture_sink::rows::control_state_rows(part, &part_outs[p]));
        }
        outputs.push(out);
    }
    assert!(batch.is_empty(), "the scenario ends with a flush");
    let reasons: Vec<Reason> = outputs
        .iter()
        .flat_map(|o| o.transitions.iter().map(|t| t.reason))
        .collect();
    for r in [
        Reason::Event,
        Reason::Retired,
        Reason::ExceptionStarted,
        Reason::ExceptionEnded,
    ] {
        assert!(reasons.contains(&r), "the scenario should produce a {r:?} transition");
    }
    // Per-partition score deltas do not add up across partitions (counts do), so the queries must
    // not sum points_with. Check that this scenario would notice: at some instant the sum differs.
    let t1 = engine.tenant_idx("t1").unwrap();
    let sel = Selection {
        scope: ScopeKey {
            tenant: t1,
            group: NO_GROUP,
        },
        category: None,
        remediation: None,
    };
    let differs = (0..30).map(|h| T0 + h * HOUR).any(|at| {
        let summed: i64 = batches
            .iter()
            .flat_map(|b| &b.transitions)
            .filter(|r| r.tenant == "t1" && r.event_time_ms <= at)
            .flat_map(|r| r.scope_groups.iter().zip(&r.scope_points_with))
            .filter(|(g, _)| g.is_empty())
            .map(|(_, p)| p)
            .sum();
        let mut l = Ledger::new(Some(at));
        outputs.iter().for_each(|o| l.record(o));
        summed
            != report::score(&l, engine.catalog(), &sel, "t1", None, None)
                .total
                .points_micros
    });
    assert!(differs, "the partitions' point deltas should not add up to the score");
    Scenario {
        engine,
        outputs,
        batches,
        legacy_deltas,
        legacy_states,
    }
}

impl Scenario {
    fn ledger_at(&self, at: i64) -> Ledger {
        let mut l = Ledger::new(Some(at));
        for o in &self.outputs {
            l.record(o);
        }
        l
    }

    fn scope(&self, tenant: &str, group: &str) -> ScopeKey {
        ScopeKey {
            tenant: self.engine.tenant_idx(tenant).expect("tenant"),
            group: if group.is_empty() {
                NO_GROUP
            } else {
                self.engine.group_idx(group).expect("group")
            },
        }
    }

    fn score(&self, tenant: &str, group: &str, category: &str, at: i64) -> report::Score {
        let sel = Selection {
            scope: self.scope(tenant, group),
            category: (!category.is_empty()).then(|| Category::parse(category).expect("category")),
            remediation: None,
        };
        let g = (!group.is_empty()).then_some(group);
        report::score(&self.ledger_at(at), self.engine.catalog(), &sel, tenant, g, None)
    }

    /// Device score (with, max with, without, max without) from the transitions up to `at`.
    fn device_scores(&self, tenant: &str, at: i64) -> BTreeMap<String, [i64; 4]> {
        let mut m: BTreeMap<String, [i64; 4]> = BTreeMap::new();
        for t in self.outputs.iter().flat_map(|o| &o.transitions) {
            if t.event_time > at || self.engine.tenant_name(t.tenant) != tenant {
                continue;
            }
            // score_d = sum of p over PASS, max_d = sum of p over PASS + FAIL, zero while the
            // device does not count (SPEC section 3).
            let p = self.engine.catalog().controls[t.control as usize].points;
            let part = |cell: engine::Cell, counted: bool| {
                let k = cell.counts().map(|x| i64::from(x) * i64::from(counted) * p);
                [
                    k[EFF_PASS],
                    k[EFF_PASS] + k[EFF_FAIL],
                    k[RAW_PASS],
                    k[RAW_PASS] + k[RAW_FAIL],
                ]
            };
            let (o, n) = (part(t.old, t.old_counted), part(t.new, t.new_counted));
            let e = m.entry(self.engine.device_name(t.device).to_string()).or_default();
            for i in 0..4 {
                e[i] += n[i] - o[i];
            }
        }
        m
    }

    /// Per partition that produced rows, the last source offset of a transition.
    fn last_offsets(&self) -> Vec<(i32, i64)> {
        let mut m: BTreeMap<i32, i64> = BTreeMap::new();
        for b in &self.batches {
            for t in &b.transitions {
                let e = m.entry(t.source_partition).or_insert(t.source_offset);
                *e = (*e).max(t.source_offset);
            }
        }
        m.into_iter().collect()
    }

    /// Every event time of a transition.
    fn instants(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self
            .outputs
            .iter()
            .flat_map(|o| o.transitions.iter().map(|t| t.event_time))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

// --- expected answers ----------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Int(i64),
    Float(f64),
    Str(String),
}

/// One query with its parameters and the rows it must return (only the named columns are checked;
/// row order matters).
struct Case {
    label: String,
    sql: String,
    expected: Vec<Vec<(&'static str, Val)>>,
}

fn case(label: String, query: &str, params: &[(&str, Param)], expected: Vec<Vec<(&'static str, Val)>>) -> Case {
    let q = queries::get(query).unwrap_or_else(|| panic!("no query {query} in queries.sql"));
    let sql = q.render(params).unwrap_or_else(|e| panic!("{label}: {e}"));
    Case { label, sql, expected }
}

fn score_cols(s: &report::ScorePart, w: &report::ScorePart) -> Vec<(&'static str, Val)> {
    vec![
        ("score_with", Val::Int(s.points_micros)),
        ("max_score_with", Val::Int(s.max_micros)),
        ("percent_with", Val::Float(s.percent)),
        ("score_without", Val::Int(w.points_micros)),
        ("max_score_without", Val::Int(w.max_micros)),
        ("percent_without", Val::Float(w.percent)),
    ]
}

fn percent_of(points: i64, max: i64) -> f64 {
    posture_core::percent(points, max)
}

fn cases(sc: &Scenario) -> Vec<Case> {
    let scopes = [
        ("t1", ""),
        ("t1", "office"),
        ("t1", "servers"),
        ("t2", ""),
        ("t2", "office"),
    ];
    let mut times = vec![T0 - 1, T0 + 100 * DAY];
    for t in sc.instants() {
        times.extend([t - 1, t]);
    }
    let mut out = Vec::new();

    for (tenant, group) in scopes {
        for &at in &times {
            // score_at, for the whole scope and each category.
            for category in CATEGORIES {
                let s = sc.score(tenant, group, category, at);
                out.push(case(
                    format!("score_at {tenant}/{group:?}/{category:?} at T0{:+}ms", at - T0),
                    "score_at",
                    &[
                        ("tenant", tenant.into()),
                        ("group", group.into()),
                        ("category", category.into()),
                        ("at_ms", at.into()),
                    ],
                    vec![score_cols(&s.total, &s.without_exceptions.total)],
                ));
            }
            // category_scores_at: the categories with any delta (the others score 0 of 0).
            let s = sc.score(tenant, group, "", at);
            let scope = sc.scope(tenant, group);
            let cat = sc.engine.catalog();
            let mut with_rows: Vec<&str> = (0..cat.controls.len())
                .filter(|&c| has_deltas(sc, scope, c as ControlIdx, at))
                .map(|c| cat.controls[c].category.as_str())
                .collect();
            with_rows.sort();
            with_rows.dedup();
            let expected = with_rows
                .iter()
                .map(|c| {
                    let mut row = vec![("category", Val::Str(c.to_string()))];
                    row.extend(score_cols(&s.categories[c], &s.without_exceptions.categories[c]));
                    row
                })
                .collect();
            for (c, part) in &s.categories {
                if !with_rows.contains(c) {
                    assert_eq!(
                        (part.points_micros, part.max_micros),
                        (0, 0),
                        "{c} has no rows but a score"
                    );
                }
            }
            out.push(case(
                format!("category_scores_at {tenant}/{group:?} at T0{:+}ms", at - T0),
                "category_scores_at",
                &[("tenant", tenant.into()), ("group", group.into()), ("at_ms", at.into())],
                expected,
            ));
        }

        // score_series: hours and days, a range starting mid-bucket and one on a boundary.
        for (step, from, to) in [
            (HOUR, T0 - 30 * MIN, T0 + 27 * HOUR + 17 * MIN),
            (HOUR, T0 + 2 * HOUR, T0 + 5 * HOUR),
            (DAY, T0 - 3 * DAY, T0 + 26 * HOUR + 1),
            (DAY, T0 - 10 * HOUR, T0 - 10 * HOUR + DAY - 1),
        ] {
            for category in ["", "os", "accounts"] {
                let first = from.div_euclid(step);
                let last = to.div_euclid(step);
                let expected = (first..=last)
                    .map(|b| {
                        let at = ((b + 1) * step - 1).min(to);
                        let s = sc.score(tenant, group, category, at);
                        let mut row = vec![("bucket", Val::Int(b)), ("at_ms", Val::Int(at))];
                        row.extend(score_cols(&s.total, &s.without_exceptions.total));
                        row
                    })
                    .collect();
                out.push(case(
                    format!(
                        "score_series {tenant}/{group:?}/{category:?} step {step} from T0{:+} to T0{:+}",
                        from - T0,
                        to - T0
                    ),
                    "score_series",
                    &[
                        ("tenant", tenant.into()),
                        ("group", group.into()),
                        ("category", category.into()),
                        ("from_ms", from.into()),
                        ("to_ms", to.into()),
                        ("step_ms", step.into()),
                    ],
                    expected,
                ));
            }
        }
    }

    // control_counts_at: every control with a nonzero count, from the ledger's cells.
    for (tenant, group) in scopes {
        for &at in &times {
            let ledger = sc.ledger_at(at);
            let scope = sc.scope(tenant, group);
            let cat = sc.engine.catalog();
            let mut rows: Vec<(&str, Vec<(&'static str, Val)>)> = Vec::new();
            for (c, control) in cat.controls.iter().enumerate() {
                let k = ledger.cell(scope, c as ControlIdx).counts;
                if k.iter().all(|&n| n == 0) {
                    continue;
                }
                rows.push((
                    control.id.as_str(),
                    vec![
                        ("control", Val::Str(control.id.clone())),
                        ("category", Val::Str(control.category.as_str().to_string())),
                        ("pass_w", Val::Int(k[EFF_PASS])),
                        ("fail_w", Val::Int(k[EFF_FAIL])),
                        ("hidden_w", Val::Int(k[EFF_HIDDEN])),
                        ("pass_wo", Val::Int(k[RAW_PASS])),
                        ("fail_wo", Val::Int(k[RAW_FAIL])),
                    ],
                ));
            }
            rows.sort_by(|a, b| a.0.cmp(b.0));
            out.push(case(
                format!("control_counts_at {tenant}/{group:?} at T0{:+}ms", at - T0),
                "control_counts_at",
                &[("tenant", tenant.into()), ("group", group.into()), ("at_ms", at.into())],
                rows.into_iter().map(|(_, r)| r).collect(),
            ));
        }
    }

    // device_scores_at: every device of a tenant, at every instant.
    for tenant in ["t1", "t2"] {
        for &at in &times {
            let expected = sc
                .device_scores(tenant, at)
                .into_iter()
                .map(|(d, v)| {
                    vec![
                        ("device", Val::Str(d)),
                        ("score_with", Val::Int(v[0])),
                        ("max_score_with", Val::Int(v[1])),
                        ("percent_with", Val::Float(percent_of(v[0], v[1]))),
                        ("score_without", Val::Int(v[2])),
                        ("max_score_without", Val::Int(v[3])),
                        ("percent_without", Val::Float(percent_of(v[2], v[3]))),
                    ]
                })
                .collect();
            out.push(case(
                format!("device_scores_at {tenant} at T0{:+}ms", at - T0),
                "device_scores_at",
                &[("tenant", tenant.into()), ("device", "".into()), ("at_ms", at.into())],
                expected,
            ));
        }
    }
    // The device sums at the end agree with the devices' current cells.
    let cat = sc.engine.catalog();
    for tenant in ["t1", "t2"] {
        for (d, v) in sc.device_scores(tenant, i64::MAX) {
            let (counted, cells) = sc.engine.device_cells(sc.engine.device_idx(tenant, &d).unwrap());
            let mut want = [0i64; 4];
            if counted {
                for (c, cell) in cells.iter().enumerate() {
                    let p = cat.controls[c].points;
                    let k = cell.counts().map(i64::from);
                    want[0] += p * k[EFF_PASS];
                    want[1] += p * (k[EFF_PASS] + k[EFF_FAIL]);
                    want[2] += p * k[RAW_PASS];
                    want[3] += p * (k[RAW_PASS] + k[RAW_FAIL]);
                }
            }
            assert_eq!(v, want, "device {tenant}/{d}: transition sums vs current cells");
        }
    }
    // One device alone.
    let v = sc.device_scores("t1", T0 + 3 * HOUR)["d3"];
    out.push(case(
        "device_scores_at t1/d3 at T0+3h".into(),
        "device_scores_at",
        &[
            ("tenant", "t1".into()),
            ("device", "d3".into()),
            ("at_ms", (T0 + 3 * HOUR).into()),
        ],
        vec![vec![
            ("device", Val::Str("d3".into())),
            ("score_with", Val::Int(v[0])),
            ("max_score_with", Val::Int(v[1])),
        ]],
    ));

    // control_state_current: every control of every device with a transition.
    for (tenant, device) in [("t1", ""), ("t2", ""), ("t1", "d1")] {
        let mut seen: BTreeMap<(String, String), ()> = BTreeMap::new();
        for t in sc.outputs.iter().flat_map(|o| &o.transitions) {
            let name = sc.engine.device_name(t.device);
            if sc.engine.tenant_name(t.tenant) == tenant && (device.is_empty() || name == device) {
                for c in &cat.controls {
                    seen.insert((name.to_string(), c.id.clone()), ());
                }
            }
        }
        let expected = seen
            .keys()
            .map(|(d, c)| {
                let (counted, cells) = sc.engine.device_cells(sc.engine.device_idx(tenant, d).unwrap());
                let ci = cat.control_idx(c).unwrap();
                let cell = cells[ci as usize];
                vec![
                    ("device", Val::Str(d.clone())),
                    ("control", Val::Str(c.clone())),
                    ("category", Val::Str(cat.controls[ci as usize].category.as_str().into())),
                    ("state", Val::Str(cell.state().as_str().into())),
                    ("raw_state", Val::Str(cell.raw.as_str().into())),
                    (
                        "exception",
                        Val::Str(
                            match cell.exc {
                                engine::ExcStatus::None => "NONE",
                                engine::ExcStatus::Credit => "CREDIT",
                                engine::ExcStatus::NoCredit => "NO_CREDIT",
                            }
                            .into(),
                        ),
                    ),
                    ("counted", Val::Int(counted as i64)),
                ]
            })
            .collect();
        out.push(case(
            format!("control_state_current {tenant}/{device:?}"),
            "control_state_current",
            &[
                ("tenant", tenant.into()),
                ("device", device.into()),
                ("control", "".into()),
                ("state", "".into()),
            ],
            expected,
        ));
    }
    out
}

/// Whether any delta of (scope, control) has event time <= at (a cell can sum to zero).
fn has_deltas(sc: &Scenario, scope: ScopeKey, c: ControlIdx, at: i64) -> bool {
    sc.outputs.iter().any(|o| {
        o.transitions
            .iter()
            .any(|t| t.event_time <= at && o.deltas_of(t).iter().any(|d| d.scope == scope && d.control == c))
    })
}

// --- running and comparing -----------------------------------------------------------------------

fn as_i64(v: &Json) -> Option<i64> {
    match v {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn matches(want: &Val, got: &Json) -> bool {
    match want {
        Val::Int(i) => as_i64(got) == Some(*i),
        Val::Float(f) => got.as_f64() == Some(*f) || got.as_str().and_then(|s| s.parse::<f64>().ok()) == Some(*f),
        Val::Str(s) => got.as_str() == Some(s.as_str()),
    }
}

fn parse_rows(text: &str) -> Vec<Map<String, Json>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSONEachRow line {l:?}: {e}")))
        .collect()
}

/// Compares every case with its answer; panics listing the mismatches.
fn compare(server: &str, cases: &[Case], answers: &[Vec<Map<String, Json>>]) {
    assert_eq!(cases.len(), answers.len());
    let mut bad = Vec::new();
    for (c, got) in cases.iter().zip(answers) {
        let ok = got.len() == c.expected.len()
            && c.expected
                .iter()
                .zip(got)
                .all(|(want, row)| want.iter().all(|(col, v)| row.get(*col).is_some_and(|g| matches(v, g))));
        if !ok {
            bad.push(format!(
                "{}\n  expected {:?}\n  got      {:?}",
                c.label,
                c.expected,
                got.iter()
                    .map(|r| Json::Object(r.clone()).to_string())
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{server}: {} of {} queries answered differently from the core:\n{}\nfirst query:\n{}",
        bad.len(),
        cases.len(),
        bad.iter().take(8).cloned().collect::<Vec<_>>().join("\n"),
        cases
            .iter()
            .find(|c| bad[0].starts_with(&c.label))
            .map_or("", |c| c.sql.as_str())
    );
}

async fn run_clickhouse(client: &clickhouse::Client, sql: &str) -> Vec<Map<String, Json>> {
    let bytes = client
        .query_raw(sql)
        .fetch_bytes("JSONEachRow")
        .unwrap_or_else(|e| panic!("query failed: {e}\n{sql}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("query failed: {e}\n{sql}"));
    parse_rows(std::str::from_utf8(&bytes).expect("utf-8 answer"))
}

/// Runs setup statements and queries in a fresh chdb session ([`posture_tests::run_chdb`]);
/// returns the server version and one JSONEachRow answer per query, parsed.
fn run_chdb(setup: &[String], queries: &[String]) -> (String, Vec<Vec<Map<String, Json>>>) {
    let (version, results) = posture_tests::run_chdb(setup, queries);
    (version, results.iter().map(|r| parse_rows(r)).collect())
}

/// `INSERT ... FORMAT JSONEachRow` statements of the scenario's rows.
fn json_inserts(batches: &[Batch]) -> Vec<String> {
    fn insert<T: serde::Serialize>(table: &str, rows: &[T]) -> Option<String> {
        (!rows.is_empty()).then(|| {
            let mut s = format!("INSERT INTO {table} FORMAT JSONEachRow\n");
            for r in rows {
                s.push_str(&serde_json::to_string(r).unwrap());
                s.push('\n');
            }
            s
        })
    }
    batches
        .iter()
        .flat_map(|b| {
            [
                insert("transitions", &b.transitions),
                insert("baseline_catalogs", &b.catalogs),
                insert("device_state", &b.device_state),
            ]
        })
        .flatten()
        .collect()
}

fn migration_statements() -> Vec<String> {
    let mut v = vec![SCHEMA_MIGRATIONS_DDL.to_string()];
    for m in migrations() {
        v.extend(m.statements());
    }
    v
}

// --- the tests -----------------------------------------------------------------------------------

/// The scenario through Sink into ClickHouse 18.16; every documented query compared with the core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trend_queries_match_the_core_on_clickhouse_18() {
    let sc = scenario();
    let cases = cases(&sc);
    let (client, db) = fresh_database("sink_trends").await;
    let applied = migrate(&client, &db).await.expect("migrate");
    assert_eq!(applied.len(), migrations().len());

    let sink = Sink::new(client.clone());
    let mut written = [0usize; 2];
    for b in &sc.batches {
        let mut b = b.clone();
        written[0] += b.transitions.len();
        sink.write(&mut b).await.expect("sink write");
        assert!(b.is_empty(), "a written batch is empty");
    }
    // One device_state row per device (the latest, by FINAL).
    written[1] = ["d1", "d2", "d3", "d9"].len();
    for (i, table) in ["transitions", "device_state FINAL", "score_deltas", "control_state"]
        .iter()
        .enumerate()
    {
        let n: u64 = client
            .query(&format!("SELECT count() FROM {table}"))
            .fetch_one()
            .await
            .expect("count");
        // (score_deltas, control_state: no longer written; the transitions rows carry the scope
        // deltas, device_state the current states)
        assert_eq!(n as usize, written.get(i).copied().unwrap_or(0), "{table} rows");
    }
    // (source_partition, source_offset, seq) identifies every row.
    for table in ["transitions"] {
        let dups: u64 = client
            .query(&format!(
                "SELECT count() FROM (SELECT source_partition, source_offset, seq, count() AS n FROM {table} \
                 GROUP BY source_partition, source_offset, seq HAVING n > 1)"
            ))
            .fetch_one()
            .await
            .expect("dups");
        assert_eq!(dups, 0, "{table}: duplicate (partition, offset, seq)");
    }

    let start = Instant::now();
    // Eight queries at a time.
    let mut answers = Vec::with_capacity(cases.len());
    for chunk in cases.chunks(8) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|c| {
                let (client, sql) = (client.clone(), c.sql.clone());
                tokio::spawn(async move { run_clickhouse(&client, &sql).await })
            })
            .collect();
        for t in tasks {
            answers.push(t.await.expect("query task"));
        }
    }
    compare("ClickHouse 18.16", &cases, &answers);
    println!(
        "{} queries on ClickHouse 18.16 in {:?}, all equal to the core",
        cases.len(),
        start.elapsed()
    );
    assert!(cases.len() > 500, "{} cases", cases.len());
    let checked = check_trend_store(&client, &sc, true).await;
    println!("{checked} reads of the trend store (score_rollup + tail) equal to the core");
}

/// The scopes the scenario scores.
const SCOPES: [(&str, &str); 5] = [
    ("t1", ""),
    ("t1", "office"),
    ("t1", "servers"),
    ("t2", ""),
    ("t2", "office"),
];

/// Reads the scenario back through the query layer (score_rollup, the raw tail, the cut) and
/// compares every count, score and history point with the core: at every instant around each
/// transition (most of them inside an hour later events touch, so the tail is read) and for
/// hourly and daily series. `cut_exact`: the cut must name both partitions at their last
/// offsets (a database written by the sink; the upgrade test's backfilled cut is coarser).
/// Returns the number of reads compared.
async fn check_trend_store(client: &clickhouse::Client, sc: &Scenario, cut_exact: bool) -> usize {
    let q = posture_query::Query::new(client.clone(), sc.engine.catalog().clone());
    let mut times = vec![T0 - 1, T0 + 100 * DAY];
    for t in sc.instants() {
        times.extend([t - 1, t, t + 1]);
    }
    let mut n = 0;
    for (tenant, group) in SCOPES {
        let scope = posture_query::Scope {
            tenant: tenant.to_string(),
            group: (!group.is_empty()).then(|| group.to_string()),
        };
        let key = sc.scope(tenant, group);
        for &at in &times {
            let (cells, cut) = q.cells_with_cut(&scope, at).await.expect("cells");
            let ledger = sc.ledger_at(at);
            for (c, control) in sc.engine.catalog().controls.iter().enumerate() {
                assert_eq!(
                    cells[c].counts,
                    ledger.cell(key, c as ControlIdx).counts,
                    "{tenant}/{group:?} {} at T0{:+}ms",
                    control.id,
                    at - T0
                );
            }
            if cut_exact {
                let parts: Vec<(i32, i64)> = cut.partitions.iter().map(|p| (p.partition, p.last_offset)).collect();
                assert_eq!(
                    parts,
                    sc.last_offsets(),
                    "the cut names every partition at its last offset"
                );
                assert!(cut.complete_through_ms.is_some());
            }
            let s = q.score(&scope, None, at).await.expect("score");
            let want = sc.score(tenant, group, "", at);
            assert_eq!(
                (s.total.points_micros, s.total.max_micros),
                (want.total.points_micros, want.total.max_micros),
                "score {tenant}/{group:?} at T0{:+}ms",
                at - T0
            );
            assert_eq!(s.cut.as_ref(), Some(&cut));
            n += 2;
        }
        for (bucket, from, to) in [
            (posture_query::Bucket::Hour, T0 - 30 * MIN, T0 + 27 * HOUR + 17 * MIN),
            (posture_query::Bucket::Hour, T0 + 2 * HOUR, T0 + 5 * HOUR - 1),
            (posture_query::Bucket::Day, T0 - 3 * DAY, T0 + 26 * HOUR + 1),
            (posture_query::Bucket::Day, T0 - 10 * HOUR, T0 - 10 * HOUR + DAY - 1),
        ] {
            for category in [None, Some(Category::Os)] {
                let (points, _) = q.history(&scope, category, from, to, bucket).await.expect("history");
                let step = bucket.millis();
                assert_eq!(points.len() as i64, to.div_euclid(step) - from.div_euclid(step) + 1);
                for p in &points {
                    let want = sc.score(tenant, group, category.map_or("", Category::as_str), p.at_ms);
                    assert_eq!(
                        point_figures(p),
                        score_figures(&want),
                        "history {tenant}/{group:?} {category:?} {bucket:?} point at T0{:+}ms",
                        p.at_ms - T0
                    );
                    n += 1;
                }
            }
        }
    }
    n
}

/// A database written by the release before the trend store (migrations 001-009: no
/// score_rollup, one score_deltas row per scope delta) is upgraded by `posture migrate`:
/// migration 010 backfills the rollup and the cut from score_deltas, 011 gives transitions their
/// scope columns (old rows keep theirs in score_deltas). The scenario but its last batch is
/// written the old way, the rest by the new sink after the upgrade, and every read (the trend
/// store, every documented query, the drop causes) equals the core over the whole history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_backfills_the_trend_store_of_an_old_database() {
    let sc = scenario();
    let (client, db) = fresh_database("sink_upgrade").await;
    for m in migrations().iter().filter(|m| m.name < "010") {
        for stmt in m.statements() {
            client
                .query(&stmt)
                .execute()
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", m.name));
        }
    }
    // The rows as the old release wrote them. Its transitions rows had no scope columns: they
    // are staged in a migrated database and copied column by column.
    async fn insert<T>(client: &clickhouse::Client, table: &str, rows: &[T])
    where
        T: clickhouse::RowWrite + for<'a> clickhouse::Row<Value<'a> = T>,
    {
        if rows.is_empty() {
            return;
        }
        let mut ins = client.insert::<T>(table).await.expect("insert");
        for r in rows {
            ins.write(r).await.expect("write");
        }
        ins.end().await.expect("end");
    }
    let (stage, stage_db) = fresh_database("sink_upgrade_stage").await;
    migrate(&stage, &stage_db).await.expect("migrate the staging database");
    let old_columns: Vec<String> = client
        .query("SELECT name FROM system.columns WHERE database = ? AND table = 'transitions'")
        .bind(db.as_str())
        .fetch_all()
        .await
        .expect("columns");
    let old_columns = old_columns.join(", ");
    // All but the last batch: the last one (d2 retires) loses points in a window that also
    // holds a loss written the old way (d1's firewall).
    let half = sc.batches.len() - 1;
    assert!(half >= 1);
    for ((b, legacy), states) in sc.batches[..half].iter().zip(&sc.legacy_deltas).zip(&sc.legacy_states) {
        insert(&client, "score_deltas", legacy).await;
        insert(&stage, "transitions", &b.transitions).await;
        insert(&client, "control_state", states).await;
    }
    client
        .query(&format!(
            "INSERT INTO transitions ({old_columns}) SELECT {old_columns} FROM {stage_db}.transitions"
        ))
        .execute()
        .await
        .expect("old transitions");
    let applied = migrate(&client, &db).await.expect("migrate");
    assert!(applied.iter().any(|m| m == "010_score_rollup.sql"), "{applied:?}");
    assert!(applied.iter().any(|m| m == "011_transition_scopes.sql"), "{applied:?}");
    assert!(applied.iter().any(|m| m == "013_device_state.sql"), "{applied:?}");
    // The backfilled cut: each partition through its last score delta.
    let q = posture_query::Query::new(client.clone(), sc.engine.catalog().clone());
    let (_, cut) = q
        .cells_with_cut(&posture_query::Scope::tenant("t1"), T0)
        .await
        .expect("cells");
    let parts: Vec<i32> = cut.partitions.iter().map(|p| p.partition).collect();
    assert!(parts.contains(&0) && parts.contains(&1), "{cut:?}");
    // The new release goes on where the old one stopped.
    let sink = Sink::new(client.clone());
    for b in &sc.batches[half..] {
        sink.write(&mut b.clone()).await.expect("sink write");
    }
    let deltas: u64 = client
        .query("SELECT count() FROM score_deltas")
        .fetch_one()
        .await
        .expect("count");
    let legacy: usize = sc.legacy_deltas[..half].iter().map(Vec::len).sum();
    assert_eq!(deltas as usize, legacy, "the new sink writes no score_deltas row");
    let checked = check_trend_store(&client, &sc, false).await;
    // Every documented query over old and new rows together.
    let cases = cases(&sc);
    let mut answers = Vec::with_capacity(cases.len());
    for c in &cases {
        answers.push(run_clickhouse(&client, &c.sql).await);
    }
    compare("ClickHouse 18.16, upgraded database", &cases, &answers);
    // The drop causes in windows over old rows, new rows and both: per (control, device), what
    // the new rows say.
    let mut nonempty = 0;
    for (from, to) in [
        (T0 - DAY, T0 + 100 * DAY),
        (T0 - 1, T0 + 2 * HOUR),
        (T0, T0 + 30 * HOUR),
        (T0 + DAY, T0 + 100 * DAY),
    ] {
        let mut lost: BTreeMap<(String, String), i64> = BTreeMap::new();
        for r in sc.batches.iter().flat_map(|b| &b.transitions) {
            if r.tenant != "t1" || r.event_time_ms <= from || r.event_time_ms > to {
                continue;
            }
            for (g, p) in r.scope_groups.iter().zip(&r.scope_points_with) {
                if g.is_empty() {
                    *lost.entry((r.control.clone(), r.device.clone())).or_default() -= p;
                }
            }
        }
        let mut want: Vec<((String, String), i64)> = lost.into_iter().filter(|&(_, p)| p > 0).collect();
        want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        want.truncate(10);
        nonempty += usize::from(!want.is_empty());
        let sql = queries::get("drop_causes")
            .unwrap()
            .render(&[
                ("tenant", "t1".into()),
                ("group", "".into()),
                ("category", "".into()),
                ("from_ms", from.into()),
                ("to_ms", to.into()),
            ])
            .unwrap();
        let got: Vec<((String, String), i64)> = run_clickhouse(&client, &sql)
            .await
            .into_iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap().to_string();
                let lost = r["points_lost"]
                    .as_i64()
                    .or_else(|| r["points_lost"].as_str()?.parse().ok())
                    .unwrap();
                ((s("control"), s("device")), lost)
            })
            .collect();
        assert_eq!(
            got,
            want,
            "drop causes over old and new rows in (T0{:+}, T0{:+}]",
            from - T0,
            to - T0
        );
    }
    assert!(nonempty >= 1, "the scenario should lose points");
    // A second migrate changes nothing (the backfill does not run twice).
    assert!(migrate(&client, &db).await.expect("migrate again").is_empty());
    let rows_before: u64 = client
        .query("SELECT count() FROM score_rollup")
        .fetch_one()
        .await
        .expect("count");
    for m in migrations().iter().filter(|m| m.name.starts_with("010")) {
        for stmt in m.statements() {
            client.query(&stmt).execute().await.expect("010 again");
        }
    }
    let rows_after: u64 = client
        .query("SELECT count() FROM score_rollup")
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(rows_before, rows_after, "running 010 again must add nothing");
    println!(
        "upgraded database: {checked} trend-store reads and {} documented queries equal to the core",
        cases.len()
    );
}

/// The same DDL, rows and queries on ClickHouse 26 (chdb).
#[test]
fn trend_queries_match_the_core_on_clickhouse_26() {
    let sc = scenario();
    let cases = cases(&sc);
    let mut setup = migration_statements();
    // Twice: the migrations are idempotent (`posture migrate` takes an ADD COLUMN whose column
    // exists, or a RENAME whose new name exists, as done, which chdb_run does not know: those are
    // left out of the second round).
    setup.extend(
        migration_statements()
            .into_iter()
            .filter(|s| !(s.starts_with("RENAME TABLE") || s.starts_with("ALTER TABLE") && s.contains("ADD COLUMN"))),
    );
    setup.extend(json_inserts(&sc.batches));
    let sqls: Vec<String> = cases.iter().map(|c| c.sql.clone()).collect();
    let (version, answers) = run_chdb(&setup, &sqls);
    assert!(version.starts_with("2"), "chdb runs ClickHouse {version}");
    compare(&format!("ClickHouse {version} (chdb)"), &cases, &answers);
    println!(
        "{} queries on ClickHouse {version} (chdb), all equal to the core",
        cases.len()
    );
}

/// migrate creates the database and the tables, records them, and applies nothing the second time.
#[tokio::test]
async fn migrate_is_idempotent() {
    let (client, db) = fresh_database("sink_migrate").await;
    let first = migrate(&client, &db).await.expect("first migrate");
    let names: Vec<String> = migrations().iter().map(|m| m.name.to_string()).collect();
    assert_eq!(first, names);
    let second = migrate(&client, &db).await.expect("second migrate");
    assert!(second.is_empty(), "second run applied {second:?}");
    let recorded: Vec<String> = client
        .query("SELECT name FROM schema_migrations ORDER BY name")
        .fetch_all()
        .await
        .expect("schema_migrations");
    assert_eq!(recorded, names);
    let tables: Vec<String> = client
        .query("SELECT name FROM system.tables WHERE database = ? ORDER BY name")
        .bind(db.as_str())
        .fetch_all()
        .await
        .expect("tables");
    assert_eq!(
        tables,
        [
            "baseline_catalogs",
            "control_state",
            "device_evidence",
            "device_inventory",
            "device_settings",
            "device_state",
            "engine_snapshots",
            "exception_syncs",
            "exceptions",
            "schema_migrations",
            "scope_deltas",
            "score_deltas",
            "score_rollup",
            "tasks",
            "transitions",
            "transitions_monthly"
        ]
    );

    // A database that does not exist yet is created.
    let fresh = unique_name("sink_migrate_new");
    let applied = migrate(&clickhouse_client(), &fresh)
        .await
        .expect("migrate a new database");
    assert_eq!(applied, names);

    // Bad names are refused before anything is sent.
    let e = migrate(&client, "x; DROP TABLE y").await.unwrap_err();
    assert!(matches!(e, SinkError::InvalidDatabase(_)), "{e}");
}

/// An applied migration whose text changed is an error naming the file.
#[tokio::test]
async fn migrate_refuses_an_edited_migration() {
    let (client, db) = fresh_database("sink_migrate_edit").await;
    migrate(&client, &db).await.expect("migrate");
    let name = migrations()[0].name;
    client
        .query("ALTER TABLE schema_migrations DELETE WHERE name = ?")
        .bind(name)
        .execute()
        .await
        .expect("delete");
    // Mutations are asynchronous: wait until the row is gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n: u64 = client
            .query("SELECT count() FROM schema_migrations WHERE name = ?")
            .bind(name)
            .fetch_one()
            .await
            .expect("count");
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the mutation did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .query("INSERT INTO schema_migrations (name, checksum, applied_at) VALUES (?, 42, now())")
        .bind(name)
        .execute()
        .await
        .expect("insert");
    let e = migrate(&client, &db).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, SinkError::MigrationChanged { .. }), "{msg}");
    assert!(msg.contains(name), "{msg}");
}

/// A permanent error (no such table) is not retried; the batch keeps the unwritten rows.
#[tokio::test]
async fn sink_reports_a_missing_table_without_retrying() {
    let (client, _db) = fresh_database("sink_no_tables").await;
    let sc = scenario();
    let mut batch = sc.batches[0].clone();
    // The first INSERT of a batch with device states: the catalog that names their controls.
    let n = batch.catalogs.len();
    let transitions = batch.transitions.len();
    let sink = Sink::new(client).with_retry(RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_secs(5),
        ..RetryPolicy::default()
    });
    let start = Instant::now();
    let e = sink.write(&mut batch).await.unwrap_err();
    let msg = e.to_string();
    match &e {
        SinkError::Insert {
            table, attempts, rows, ..
        } => {
            assert_eq!((*table, *attempts, *rows), ("baseline_catalogs", 1, n), "{msg}");
        }
        other => panic!("expected an insert error, got {other}"),
    }
    assert!(
        msg.contains("baseline_catalogs") && msg.contains("doesn't exist"),
        "{msg}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "a permanent error was retried"
    );
    assert_eq!(
        (batch.catalogs.len(), batch.transitions.len()),
        (n, transitions),
        "unwritten rows stay in the batch"
    );
}

/// A transient error (nothing listening) is retried max_attempts times with backoff, then reported.
#[tokio::test]
async fn sink_retries_transient_errors_with_backoff() {
    // A port nothing listens on: bind, note the port, close.
    let port = posture_tests::free_port();
    let client = posture_tests::clickhouse_client_at(&format!("http://127.0.0.1:{port}"));
    let policy = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(50),
        multiplier: 2.0,
        max_backoff: Duration::from_millis(120),
        timeout: Some(Duration::from_secs(5)),
    };
    let sink = Sink::new(client).with_retry(policy);
    let sc = scenario();
    let mut batch = sc.batches[0].clone();
    let start = Instant::now();
    let e = sink.write(&mut batch).await.unwrap_err();
    let took = start.elapsed();
    match &e {
        SinkError::Insert { table, attempts, .. } => assert_eq!((*table, *attempts), ("baseline_catalogs", 4), "{e}"),
        other => panic!("expected an insert error, got {other}"),
    }
    // Waits: 50 + 100 + 120 ms.
    assert!(took >= Duration::from_millis(270), "retried too fast: {took:?}");
    assert!(took < Duration::from_secs(10), "retried too slowly: {took:?}");
    assert!(!batch.is_empty());

    // The same batch goes through once the server is right.
    let (client, db) = fresh_database("sink_resume").await;
    migrate(&client, &db).await.expect("migrate");
    Sink::new(client.clone()).write(&mut batch).await.expect("resume");
    let n: u64 = client
        .query("SELECT count() FROM transitions")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(n as usize, sc.batches[0].transitions.len());
}

/// The comparison itself notices a wrong answer.
#[test]
#[should_panic(expected = "1 of 1 queries answered differently")]
fn compare_notices_a_difference() {
    let c = Case {
        label: "x".into(),
        sql: String::new(),
        expected: vec![vec![("score_with", Val::Int(5)), ("percent_with", Val::Float(54.55))]],
    };
    let got = parse_rows("{\"score_with\":\"5\",\"percent_with\":54.54}\n");
    compare("test", &[c], &[got]);
}

/// An INSERT whose response is lost: the server committed it, the client saw its connection close.
/// The retry finds the rows of the batch's source positions and does not send them again (sending
/// them again would count the score twice). A proxy in front of ClickHouse drops the connection of
/// the first INSERT into `transitions` and into `score_rollup` once the server has answered it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_insert_whose_response_was_lost_is_not_sent_again() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (client, db) = fresh_database("sink_lost_response").await;
    migrate(&client, &db).await.expect("migrate");
    let upstream = posture_tests::clickhouse_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let lost = Arc::new(std::sync::Mutex::new(Vec::<&'static str>::new()));
    let lost_w = lost.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = listener.accept().await else {
                return;
            };
            let (upstream, lost) = (upstream.clone(), lost_w.clone());
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(&upstream).await.expect("ClickHouse");
                let mut first = vec![0u8; 64 * 1024];
                let n = c.read(&mut first).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                // The query is in the request line, URL-encoded.
                let head = String::from_utf8_lossy(&first[..n])
                    .replace("%20", " ")
                    .replace('+', " ")
                    .replace("%60", "")
                    .replace('`', "");
                let table = ["transitions", "score_rollup"]
                    .into_iter()
                    .find(|t| head.contains(&format!("INSERT INTO {t}")));
                let sabotage = table.filter(|t| {
                    let mut l = lost.lock().unwrap();
                    let first_time = !l.contains(t);
                    if first_time {
                        l.push(t);
                    }
                    first_time
                });
                if sabotage.is_none() {
                    // One request per connection, so every INSERT comes first on its own
                    // connection and is seen here: ask the server to close after answering.
                    let mut req = first[..n].to_vec();
                    if let Some(eol) = req.windows(2).position(|w| w == b"\r\n") {
                        req.splice(eol + 2..eol + 2, b"Connection: close\r\n".iter().copied());
                    }
                    s.write_all(&req).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                    return;
                }
                s.write_all(&first[..n]).await.unwrap();
                // Forward the rest of the request; once the server answers (the INSERT is
                // committed), drop both connections without passing the answer on.
                let (mut cr, _cw) = c.split();
                let (mut sr, mut sw) = s.split();
                let mut byte = [0u8; 1];
                tokio::select! {
                    _ = tokio::io::copy(&mut cr, &mut sw) => {}
                    _ = sr.read(&mut byte) => {}
                }
            });
        }
    });
    let policy = RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(50),
        multiplier: 2.0,
        max_backoff: Duration::from_millis(200),
        timeout: Some(Duration::from_secs(10)),
    };
    let sink = Sink::new(posture_tests::clickhouse_client_at(&url).with_database(&db)).with_retry(policy);
    let sc = scenario();
    let mut batch = sc.batches[0].clone();
    let transitions = batch.transitions.len() as u64;
    // What the rollup must sum to: the batch's count deltas (every scope) at level 1 (hours).
    let sum = |f: fn(&posture_sink::rows::TransitionRow) -> &Vec<i8>| -> i64 {
        batch.transitions.iter().flat_map(f).map(|&d| i64::from(d)).sum()
    };
    let (want_pass, want_fail) = (sum(|r| &r.scope_pass_with), sum(|r| &r.scope_fail_with));
    sink.write(&mut batch).await.expect("the batch is written");
    assert!(batch.is_empty());
    let mut l = lost.lock().unwrap().clone();
    l.sort();
    assert_eq!(l, ["score_rollup", "transitions"], "the proxy dropped both answers");
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Sums {
        pass: i64,
        fail: i64,
        next: i64,
    }
    let sums: Sums = client
        .query(
            "SELECT sumIf(pass_with, level = 1) AS pass, sumIf(fail_with, level = 1) AS fail, \
             sumIf(next_offset, level = 0) AS next FROM score_rollup",
        )
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        (sums.pass, sums.fail),
        (want_pass, want_fail),
        "the rollup of a committed INSERT whose answer was lost is summed once"
    );
    assert!(sums.next > 0, "the cut rows are there");
    let count = |table: &'static str| {
        let client = client.clone();
        async move {
            client
                .query(&format!("SELECT count() FROM {table}"))
                .fetch_one::<u64>()
                .await
                .unwrap()
        }
    };
    assert_eq!(count("transitions").await, transitions, "transitions written once");
}
