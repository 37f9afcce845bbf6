//! Reads of the trend store: a scope's per-control counts at an instant, or at the end of each
//! bucket of a series, from `score_rollup` (the documented `rollup_counts` query: one scan, so
//! one snapshot of the table, holding whole flushes only) plus, when the instant is inside an
//! hour that later events also touched, the rest of that hour from the raw log
//! (`tail_counts`), cut at the same partition offsets. Every answer is therefore the exact
//! count of a prefix of each source partition, and says which ([`Cut`]).

use crate::{Query, QueryError, Scope};
use posture_core::engine::ScopeCell;
use posture_core::report::Cut;
use posture_core::Catalog;
use posture_sink::queries::Param;
use posture_sink::rollup::Decomposition;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `pos` values of `rollup_counts` (see its description in queries.sql).
const POS_CUT: i64 = -2;
const POS_LAST: i64 = -1;
const POS_OPEN: i64 = -3;
const POS_BASE: i64 = 0;

#[derive(clickhouse::Row, Deserialize)]
struct RollupCountsRow {
    pos: i64,
    cut_partition: i64,
    control: String,
    #[allow(dead_code)]
    category: String,
    pass_w: i64,
    fail_w: i64,
    hidden_w: i64,
    pass_wo: i64,
    fail_wo: i64,
    next_offset: i64,
    clock_ms: i64,
    topic_partitions: u32,
}

#[derive(clickhouse::Row, Deserialize)]
struct TailRow {
    control: String,
    #[allow(dead_code)]
    category: String,
    pass_w: i64,
    fail_w: i64,
    hidden_w: i64,
    pass_wo: i64,
    fail_wo: i64,
}

/// Counts by control (in `count` order) for each `pos` of a scan.
type Parts = BTreeMap<i64, Vec<(String, [i64; 5])>>;

/// One scan of `score_rollup`.
pub(crate) struct Scan {
    /// (partition, next offset, watermark ms) per partition.
    cut: Vec<(i32, i64, i64)>,
    /// The input topic's partition count, as the cut rows say (0: unknown).
    topic_partitions: u32,
    parts: Parts,
}

impl Scan {
    /// Whether the open hour can be taken whole at instant `at_ms`: no included event is later.
    fn open_hour_is_complete(&self, at_ms: i64) -> bool {
        self.cut.iter().all(|&(_, _, clock)| clock <= at_ms)
    }

    fn add(&self, pos: i64, catalog: &Catalog, cells: &mut [ScopeCell]) {
        if let Some(rows) = self.parts.get(&pos) {
            for (control, k) in rows {
                add_counts(catalog, cells, control, *k);
            }
        }
    }

    pub(crate) fn cut(&self) -> Cut {
        Cut::new(self.cut.clone(), self.topic_partitions)
    }
}

/// Adds counts to the cell of `control`; controls not in the catalog are left out (the
/// pipeline ran with other baselines).
fn add_counts(catalog: &Catalog, cells: &mut [ScopeCell], control: &str, k: [i64; 5]) {
    if let Some(c) = catalog.control_idx(control) {
        let cell = &mut cells[c as usize].counts;
        for i in 0..5 {
            cell[i] += k[i];
        }
    }
}

impl Query {
    /// Runs `rollup_counts` for `scope` over the ranges of `d`.
    pub(crate) async fn scan(&self, scope: &Scope, d: &Decomposition) -> Result<Scan, QueryError> {
        let r = d.ranges;
        let rows: Vec<RollupCountsRow> = self
            .rows(
                "rollup_counts",
                &[
                    ("tenant", scope.tenant.as_str().into()),
                    ("group", scope.group_param()),
                    ("open_ms", d.open_ms.into()),
                    ("step_level", i64::from(d.step_level).into()),
                    ("series_from", d.series_from.into()),
                    ("step_ms", d.step_ms.into()),
                    ("lo1", r[0].0.into()),
                    ("hi1", r[0].1.into()),
                    ("lo2", r[1].0.into()),
                    ("hi2", r[1].1.into()),
                    ("lo3", r[2].0.into()),
                    ("hi3", r[2].1.into()),
                    ("lo4", r[3].0.into()),
                    ("hi4", r[3].1.into()),
                ],
            )
            .await?;
        let mut cut = Vec::new();
        let mut topic_partitions = 0;
        let mut parts: Parts = BTreeMap::new();
        for row in rows {
            if row.pos == POS_CUT {
                topic_partitions = topic_partitions.max(row.topic_partitions);
                cut.push((row.cut_partition as i32, row.next_offset, row.clock_ms));
            } else {
                parts.entry(row.pos).or_default().push((
                    row.control,
                    [row.pass_w, row.fail_w, row.hidden_w, row.pass_wo, row.fail_wo],
                ));
            }
        }
        Ok(Scan {
            cut,
            topic_partitions,
            parts,
        })
    }

    /// Adds to `cells` what the last point of `d` (the instant `at_ms`) has beyond the base and
    /// the series buckets: its finer buckets, and the open hour, or else the tail of raw deltas
    /// of the hour up to `at_ms`, cut at the scan's offsets.
    async fn add_last(
        &self,
        scope: &Scope,
        d: &Decomposition,
        scan: &Scan,
        at_ms: i64,
        cells: &mut [ScopeCell],
    ) -> Result<(), QueryError> {
        scan.add(POS_LAST, &self.catalog, cells);
        if scan.open_hour_is_complete(at_ms) {
            scan.add(POS_OPEN, &self.catalog, cells);
        } else if !d.tail_is_empty() {
            let parts: Vec<i64> = scan.cut.iter().map(|c| i64::from(c.0)).collect();
            let next: Vec<i64> = scan.cut.iter().map(|c| c.1).collect();
            let rows: Vec<TailRow> = self
                .rows(
                    "tail_counts",
                    &[
                        ("tenant", scope.tenant.as_str().into()),
                        ("group", scope.group_param()),
                        ("from_ms", d.tail.0.into()),
                        ("at_ms", at_ms.into()),
                        ("cut_partitions", Param::Ints(parts)),
                        ("cut_next", Param::Ints(next)),
                    ],
                )
                .await?;
            for r in rows {
                add_counts(
                    &self.catalog,
                    cells,
                    &r.control,
                    [r.pass_w, r.fail_w, r.hidden_w, r.pass_wo, r.fail_wo],
                );
            }
        }
        Ok(())
    }

    /// What the trend store holds now: the latest committed cut (one scan of the cut rows).
    pub async fn cut(&self) -> Result<Cut, QueryError> {
        // Tenant '' has no data rows (tenant ids are never empty): only the cut rows match.
        let scan = self.scan(&Scope::tenant(""), &Decomposition::point(0)).await?;
        Ok(scan.cut())
    }

    /// Per control, the counts of `scope` at `at_ms` (indexed by control), and the cut they are
    /// the exact counts of.
    pub async fn cells_with_cut(&self, scope: &Scope, at_ms: i64) -> Result<(Vec<ScopeCell>, Cut), QueryError> {
        let d = Decomposition::point(at_ms);
        let scan = self.scan(scope, &d).await?;
        let mut cells = vec![ScopeCell::default(); self.catalog.controls.len()];
        scan.add(POS_BASE, &self.catalog, &mut cells);
        self.add_last(scope, &d, &scan, at_ms, &mut cells).await?;
        Ok((cells, scan.cut()))
    }

    /// The counts of `scope` at the end of each bucket of `step_ms` (an hour or a day) from
    /// the one holding `from_ms` to the one holding `to_ms` (whose point is at `to_ms`): per
    /// bucket, (its start, the instant, the cells); and the cut.
    pub(crate) async fn series_cells(
        &self,
        scope: &Scope,
        step_level: u8,
        step_ms: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(Vec<(i64, i64, Vec<ScopeCell>)>, Cut), QueryError> {
        let d = Decomposition::series(step_level, from_ms, to_ms);
        let scan = self.scan(scope, &d).await?;
        let n = (to_ms.div_euclid(step_ms) - from_ms.div_euclid(step_ms) + 1) as usize;
        let mut acc = vec![ScopeCell::default(); self.catalog.controls.len()];
        scan.add(POS_BASE, &self.catalog, &mut acc);
        let mut out = Vec::with_capacity(n);
        for k in 0..n {
            scan.add(k as i64 + 1, &self.catalog, &mut acc);
            let start = d.series_from + k as i64 * step_ms;
            if k + 1 < n {
                out.push((start, start + step_ms - 1, acc.clone()));
            } else {
                let mut last = acc.clone();
                self.add_last(scope, &d, &scan, to_ms, &mut last).await?;
                out.push((start, to_ms, last));
            }
        }
        Ok((out, scan.cut()))
    }
}
