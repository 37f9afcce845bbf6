//! The ledger: the sum of transition deltas per (scope, control), optionally
//! only those whose event time is `<= at` (SPEC section 3: "the score at time
//! t is the sum of every score delta whose event time is <= t").
//!
//! Reports compute points from the summed PASS/FAIL count deltas
//! ([`crate::report::cell_points`]), which are additive across partitions;
//! the summed score deltas are kept too, and for one ordered stream both give
//! the same score.
//!
//! Reports are always computed from a ledger, so "now" and "as of t" share one
//! code path, and the same sums run in ClickHouse over the transitions table.

use crate::engine::{Output, ScopeCell, ScopeKey, ScopeTable};
use crate::types::ControlIdx;
use std::collections::HashMap;

/// Accumulated scope deltas.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    at: Option<i64>,
    cells: HashMap<(ScopeKey, ControlIdx), ScopeCell>,
    latest: Option<i64>,
}

impl Ledger {
    /// A ledger that keeps deltas with event time `<= at` (all when `None`).
    pub fn new(at: Option<i64>) -> Ledger {
        Ledger {
            at,
            ..Ledger::default()
        }
    }

    /// The cut-off instant, if any.
    pub fn at(&self) -> Option<i64> {
        self.at
    }

    /// The latest event time among recorded transitions.
    pub fn latest(&self) -> Option<i64> {
        self.latest
    }

    /// Adds every transition of `out` within the cut-off.
    pub fn record(&mut self, out: &Output) {
        for t in &out.transitions {
            if self.at.is_some_and(|at| t.event_time > at) {
                continue;
            }
            self.latest = Some(self.latest.map_or(t.event_time, |l| l.max(t.event_time)));
            for d in out.deltas_of(t) {
                self.cells.entry((d.scope, d.control)).or_default().add(d);
            }
        }
    }

    /// One (scope, control) cell.
    pub fn cell(&self, scope: ScopeKey, c: ControlIdx) -> ScopeCell {
        self.cells.get(&(scope, c)).copied().unwrap_or_default()
    }

    /// Every non-zero cell, in a stable order.
    pub fn table(&self) -> ScopeTable {
        self.cells
            .iter()
            .filter(|(_, c)| !c.is_zero())
            .map(|(k, c)| (*k, *c))
            .collect()
    }
}
