//! Helpers shared by the core's integration tests.
#![allow(dead_code)]

use posture_core::engine::{ScopeKey, NO_GROUP};
use posture_core::report::{self, Selection};
use posture_core::*;
use std::sync::Arc;

pub const T0: i64 = 1_795_341_600_000; // 2026-11-22T10:00:00Z
pub const MIN: i64 = 60_000;
pub const DAY: i64 = 24 * 3600 * 1000;

pub fn catalog(yaml: &str) -> Arc<Catalog> {
    Arc::new(Catalog::from_sources(&[("test.yaml", yaml)]).unwrap_or_else(|e| panic!("{e:#?}")))
}

/// Applies events, records everything in a ledger, and checks after every
/// event that incremental aggregates, a from-scratch recomputation and the
/// sum of deltas agree.
pub struct Harness {
    pub engine: Engine,
    pub ledger: Ledger,
    pub out: Output,
    pub all: Vec<Transition>,
    pub history: Vec<Output>,
    seq: std::collections::HashMap<String, i64>,
    next_id: u64,
}

impl Harness {
    pub fn new(cat: Arc<Catalog>) -> Harness {
        Harness::with_config(cat, EngineConfig::default())
    }

    pub fn with_config(cat: Arc<Catalog>, cfg: EngineConfig) -> Harness {
        Harness {
            engine: Engine::new(cat, cfg),
            ledger: Ledger::new(None),
            out: Output::default(),
            all: Vec::new(),
            history: Vec::new(),
            seq: Default::default(),
            next_id: 0,
        }
    }

    /// Applies an event with the next sequence of its device.
    pub fn send(&mut self, mut ev: ConfigChange) -> Result<Vec<Transition>, engine::Rejected> {
        if ev.sequence == AUTO_SEQ {
            let s = self.seq.entry(ev.device_id.clone()).or_insert(0);
            *s += 1;
            ev.sequence = *s;
        }
        self.next_id += 1;
        if ev.event_id.is_empty() {
            ev.event_id = format!("e{}", self.next_id);
        }
        self.out.clear();
        let r = self.engine.apply(&ev, SourcePos::line(self.next_id), &mut self.out);
        self.finish();
        r.map(|_| self.out.transitions.clone())
    }

    pub fn advance(&mut self, t: i64) -> Vec<Transition> {
        self.out.clear();
        self.engine.advance_to(t, SourcePos::default(), &mut self.out);
        self.finish();
        self.out.transitions.clone()
    }

    pub fn except(&mut self, e: Exception) -> Vec<Transition> {
        self.out.clear();
        self.engine.add_exception(e, &mut self.out).unwrap();
        self.finish();
        self.out.transitions.clone()
    }

    fn finish(&mut self) {
        self.ledger.record(&self.out);
        self.all.extend(self.out.transitions.iter().cloned());
        self.history.push(self.out.clone());
        check_consistent(&self.engine, &self.ledger);
        check_device_sums(&self.engine, &self.all);
    }

    /// The ledger of every recorded delta with event time <= t.
    pub fn ledger_at(&self, t: i64) -> Ledger {
        let mut l = Ledger::new(Some(t));
        for o in &self.history {
            l.record(o);
        }
        l
    }

    /// Score points and max (with exceptions) of the tenant as of t.
    pub fn points_at(&self, tenant: &str, t: i64) -> (Micros, Micros) {
        let sel = Selection {
            scope: self.scope(tenant, None),
            category: None,
            remediation: None,
        };
        let s = report::score(&self.ledger_at(t), self.engine.catalog(), &sel, tenant, None, None);
        (s.total.points_micros, s.total.max_micros)
    }

    pub fn scope(&self, tenant: &str, group: Option<&str>) -> ScopeKey {
        ScopeKey {
            tenant: self.engine.tenant_idx(tenant).expect("tenant"),
            group: group.map_or(NO_GROUP, |g| self.engine.group_idx(g).expect("group")),
        }
    }

    pub fn score(&self, tenant: &str, group: Option<&str>) -> report::Score {
        let sel = Selection {
            scope: self.scope(tenant, group),
            category: None,
            remediation: None,
        };
        report::score(&self.ledger, self.engine.catalog(), &sel, tenant, group, None)
    }

    /// Score points and max, with exceptions, in micro-points.
    pub fn points(&self, tenant: &str) -> (Micros, Micros) {
        let s = self.score(tenant, None);
        (s.total.points_micros, s.total.max_micros)
    }

    pub fn state(&self, tenant: &str, device: &str, control: &str) -> ControlState {
        let d = self.engine.device_idx(tenant, device).expect("device");
        let c = self.engine.catalog().control_idx(control).expect("control");
        self.engine.device_cells(d).1[c as usize].state()
    }
}

pub fn check_consistent(engine: &Engine, ledger: &Ledger) {
    let inc = engine.aggregate_table();
    let scratch = engine.recompute_table();
    assert_eq!(
        inc, scratch,
        "incremental aggregates differ from a from-scratch recomputation"
    );
    if ledger.at().is_none() {
        assert_eq!(ledger.table(), inc, "the sum of deltas differs from the aggregates");
    }
}

/// Per device, the sum of its transitions' device deltas equals its score
/// from its current cells (zero while it does not count).
pub fn check_device_sums(engine: &Engine, all: &[Transition]) {
    let mut sums: std::collections::HashMap<u32, [Micros; 4]> = Default::default();
    for t in all {
        let e = sums.entry(t.device).or_default();
        e[0] += t.device_points[0];
        e[1] += t.device_max[0];
        e[2] += t.device_points[1];
        e[3] += t.device_max[1];
    }
    for d in 0..engine.device_count() as u32 {
        let (counted, cells) = engine.device_cells(d);
        let mut want = [0; 4];
        if counted {
            for (c, cell) in cells.iter().enumerate() {
                let p = engine.catalog().controls[c].points;
                let k = cell.counts();
                want[0] += k[engine::count::EFF_PASS] as i64 * p;
                want[1] += (k[engine::count::EFF_PASS] + k[engine::count::EFF_FAIL]) as i64 * p;
                want[2] += k[engine::count::RAW_PASS] as i64 * p;
                want[3] += (k[engine::count::RAW_PASS] + k[engine::count::RAW_FAIL]) as i64 * p;
            }
        }
        assert_eq!(
            sums.get(&d).copied().unwrap_or_default(),
            want,
            "device {} deltas",
            engine.device_name(d)
        );
    }
}

pub fn ev(device: &str, t: i64, kind: ChangeKind, settings: &[(&str, Value)]) -> ConfigChange {
    // The event id is filled in when the event is applied (see AUTO_SEQ).
    ConfigChange::new("t1", device, kind, t, AUTO_SEQ)
        .with_event_id(String::new())
        .with_settings(settings.iter().map(|(k, v)| Setting {
            key: k.to_string(),
            value: v.clone(),
        }))
}

pub fn with_inventory(e: ConfigChange, os: &str, version: &str, groups: &[&str], tags: &[&str]) -> ConfigChange {
    e.with_inventory(os, version, groups, tags)
}

pub fn b(v: bool) -> Value {
    Value::Bool(v)
}

pub fn exc(
    id: &str,
    control: &str,
    scope: ExceptionScope,
    j: Justification,
    start: i64,
    end: Option<i64>,
) -> Exception {
    Exception {
        id: id.into(),
        tenant: "t1".into(),
        control: control.into(),
        scope,
        justification: j,
        starts_at: start,
        expires_at: end,
        author: "test".into(),
        note: String::new(),
    }
}

pub const P: Micros = MICROS_PER_POINT;

/// `ConfigChange::sequence` value that asks `Harness::send` for the device's next sequence.
pub const AUTO_SEQ: i64 = i64::MIN;
