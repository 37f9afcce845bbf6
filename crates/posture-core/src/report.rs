//! Score reports and recommendations, in the JSON shapes of SPEC section 5.

use crate::baseline::Catalog;
use crate::engine::{contribution, count::*, max_contribution, ScopeCell, ScopeKey};
use crate::ledger::Ledger;
use crate::types::*;
use serde::Serialize;
use std::collections::BTreeMap;

/// Points, maximum and percent of one scope (and view).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ScorePart {
    /// Secure score in points: the sum over the selected controls of `p_c * f_c`, each
    /// term rounded to a micro-point.
    pub points: f64,
    /// Maximum in points: the sum of `p_c` over the controls with a PASS or FAIL device.
    pub max_points: f64,
    /// `100 * points / max_points`, rounded to two decimals; 0 when the maximum is 0.
    pub percent: f64,
    /// `points` in exact micro-points (not serialized).
    #[serde(skip)]
    pub points_micros: Micros,
    /// `max_points` in exact micro-points (not serialized).
    #[serde(skip)]
    pub max_micros: Micros,
}

impl ScorePart {
    fn new(points: Micros, max: Micros) -> ScorePart {
        ScorePart {
            points: micros_to_points(points),
            max_points: micros_to_points(max),
            percent: percent(points, max),
            points_micros: points,
            max_micros: max,
        }
    }
}

/// The same scope scored without exceptions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WithoutExceptions {
    /// The whole selection's figures, flattened into this object.
    #[serde(flatten)]
    pub total: ScorePart,
    /// The figures per category name, as in [`Score::categories`].
    pub categories: BTreeMap<&'static str, ScorePart>,
}

/// The `score` object of SPEC section 5 (with exceptions applied), plus the
/// same figures without exceptions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Score {
    /// The tenant's name (its `tenant_id`).
    pub tenant: String,
    /// The device group scored, or `None` (JSON `null`) for the whole tenant.
    pub group: Option<String>,
    /// The selected category's name, or `None` when every category is included.
    pub category: Option<&'static str>,
    /// The event-time instant the score is as of (RFC 3339), when the caller names one.
    pub at: Option<String>,
    /// The figures with exceptions applied, flattened into this object (`points`,
    /// `max_points`, `percent`).
    #[serde(flatten)]
    pub total: ScorePart,
    /// The figures per category name (`network`, ...): every category, or only the
    /// selected one; a category with no control counted has all zeros.
    pub categories: BTreeMap<&'static str, ScorePart>,
    /// The same scope and selection with every exception ignored.
    pub without_exceptions: WithoutExceptions,
    /// For answers read from stored data: the input they are the exact score of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut: Option<Cut>,
}

/// The input a stored answer reflects (SPEC section 6, consistent reads): per source partition,
/// every record up to `last_offset` and nothing after it, and that partition's event-time
/// watermark there. `complete_through` is the earliest watermark: every partition has been
/// consumed up to that instant (late events excepted), so figures at or before it are final.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cut {
    /// The earliest partition watermark (RFC 3339); `None` while some partition of the input
    /// topic has committed nothing (see `missing_partitions`).
    pub complete_through: Option<String>,
    /// `complete_through` in ms.
    #[serde(skip)]
    pub complete_through_ms: Option<i64>,
    /// Per source partition, in partition order.
    pub partitions: Vec<PartitionCut>,
    /// Partitions of the input topic with nothing committed yet: nothing of theirs is included,
    /// and no instant is complete until they have.
    pub missing_partitions: Vec<i32>,
}

/// One source partition's part of a [`Cut`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionCut {
    /// The source (Kafka) partition.
    pub partition: i32,
    /// The last offset included (-1: none).
    pub last_offset: i64,
    /// The partition's event-time clock at that offset (RFC 3339).
    pub watermark: String,
    /// `watermark` in ms since the epoch (not serialized).
    #[serde(skip)]
    pub watermark_ms: i64,
}

impl Cut {
    /// The cut of partitions given as (partition, next offset, watermark ms), of an input topic
    /// of `topic_partitions` partitions (0: unknown, then every partition named counts).
    pub fn new(mut parts: Vec<(i32, i64, i64)>, topic_partitions: u32) -> Cut {
        parts.sort_unstable();
        let missing_partitions: Vec<i32> = (0..topic_partitions as i32)
            .filter(|p| !parts.iter().any(|c| c.0 == *p))
            .collect();
        let complete_through_ms = if missing_partitions.is_empty() {
            parts.iter().map(|p| p.2).min()
        } else {
            None
        };
        Cut {
            complete_through: complete_through_ms.map(crate::time::format_time),
            complete_through_ms,
            missing_partitions,
            partitions: parts
                .into_iter()
                .map(|(partition, next, w)| PartitionCut {
                    partition,
                    last_offset: next - 1,
                    watermark: crate::time::format_time(w),
                    watermark_ms: w,
                })
                .collect(),
        }
    }

    /// The latest partition watermark (ms), if any: no included event is later.
    pub fn latest_ms(&self) -> Option<i64> {
        self.partitions.iter().map(|p| p.watermark_ms).max()
    }

    /// One line for people: `complete through T; partition 0 @ 1234 (T0), ...`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .partitions
            .iter()
            .map(|p| format!("{}@{}", p.partition, p.last_offset))
            .collect();
        let parts = if parts.is_empty() {
            "nothing committed yet".to_string()
        } else {
            format!("partition@last offset {}", parts.join(" "))
        };
        match (&self.complete_through, self.missing_partitions.is_empty()) {
            (Some(t), _) => format!("complete through {t}; {parts}"),
            (None, false) => format!(
                "not complete (partitions {:?} have committed nothing yet); {parts}",
                self.missing_partitions
            ),
            (None, true) => parts,
        }
    }
}

/// One top recommendation (SPEC section 5).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recommendation {
    /// The control's id, unique across all loaded baselines.
    pub control: String,
    /// The control's title, from its baseline.
    pub title: String,
    /// The control's category name (`network`, ...).
    pub category: &'static str,
    /// How it is fixed: `configuration_change` or `software_update`.
    pub remediation: &'static str,
    /// Points the scope gains if every misconfigured device is fixed.
    pub points_gained: f64,
    /// FAIL devices, excluding those with a non-crediting exception.
    pub misconfigured_devices: i64,
    /// PASS + FAIL devices (with exceptions applied).
    pub applicable_devices: i64,
    /// FAIL devices hidden by risk-accepted or planned-remediation exceptions.
    pub excepted_devices: i64,
    /// Vulnerabilities (e.g. CVE ids) that fixing the control mitigates, from its baseline.
    pub vulnerabilities: Vec<String>,
    /// `points_gained` in exact micro-points: the sort key (not serialized).
    #[serde(skip)]
    pub points_gained_micros: Micros,
}

/// Which part of a ledger a report covers.
#[derive(Clone, Copy, Debug)]
pub struct Selection {
    /// The tenant, or one device group of it ([`crate::engine::NO_GROUP`] for the whole
    /// tenant). Only [`score`] and [`recommendations`] read it; the `_of` variants take the
    /// scope's cells directly.
    pub scope: ScopeKey,
    /// Only controls of this category; `None` for every category.
    pub category: Option<Category>,
    /// Only controls fixed this way; `None` for both remediation types.
    pub remediation: Option<Remediation>,
}

fn selected<'a>(cat: &'a Catalog, sel: &Selection) -> impl Iterator<Item = (ControlIdx, &'static str)> + 'a {
    let sel = *sel;
    cat.controls.iter().enumerate().filter_map(move |(i, c)| {
        (sel.category.is_none_or(|k| k == c.category) && sel.remediation.is_none_or(|r| r == c.remediation))
            .then_some((i as ControlIdx, c.category.as_str()))
    })
}

/// The score of a selection. `tenant`, `group` and `at` are the names to
/// print (the ledger works with indices).
pub fn score(
    ledger: &Ledger,
    cat: &Catalog,
    sel: &Selection,
    tenant: &str,
    group: Option<&str>,
    at: Option<String>,
) -> Score {
    score_of(|c| ledger.cell(sel.scope, c), cat, sel, tenant, group, at)
}

/// The score of a selection from any source of cells: `cell(c)` gives the
/// selected scope's cell of control `c` (only its counts are read). Used
/// with a [`Ledger`] (embedded mode) and with counts summed in ClickHouse
/// (the query commands), so both print exactly the same figures.
pub fn score_of(
    cell: impl Fn(ControlIdx) -> ScopeCell,
    cat: &Catalog,
    sel: &Selection,
    tenant: &str,
    group: Option<&str>,
    at: Option<String>,
) -> Score {
    let mut per_cat: BTreeMap<&'static str, [Micros; 4]> = BTreeMap::new();
    for c in Category::ALL {
        if sel.category.is_none_or(|k| k == c) {
            per_cat.insert(c.as_str(), [0; 4]);
        }
    }
    let mut tot = [0; 4];
    for (c, name) in selected(cat, sel) {
        let v = cell_points(cat.controls[c as usize].points, &cell(c));
        let e = per_cat.entry(name).or_default();
        for i in 0..4 {
            e[i] += v[i];
            tot[i] += v[i];
        }
    }
    Score {
        tenant: tenant.to_string(),
        group: group.map(str::to_string),
        category: sel.category.map(Category::as_str),
        at,
        total: ScorePart::new(tot[0], tot[1]),
        categories: per_cat.iter().map(|(k, v)| (*k, ScorePart::new(v[0], v[1]))).collect(),
        without_exceptions: WithoutExceptions {
            total: ScorePart::new(tot[2], tot[3]),
            categories: per_cat.iter().map(|(k, v)| (*k, ScorePart::new(v[2], v[3]))).collect(),
        },
        cut: None,
    }
}

/// `[points with, max with, points without, max without]` of one control in
/// one scope, from its PASS/FAIL counts: `p * pass / (pass + fail)`.
///
/// Scores are computed from counts, not by summing score deltas, because
/// counts are additive across partitions (and so across engines and
/// instances) while per-engine score deltas are not. For a single ordered
/// stream the two agree exactly.
pub fn cell_points(p: Micros, cell: &ScopeCell) -> [Micros; 4] {
    let k = &cell.counts;
    [
        contribution(p, k[EFF_PASS], k[EFF_FAIL]),
        max_contribution(p, k[EFF_PASS], k[EFF_FAIL]),
        contribution(p, k[RAW_PASS], k[RAW_FAIL]),
        max_contribution(p, k[RAW_PASS], k[RAW_FAIL]),
    ]
}

/// Points gained by fixing every visible misconfigured device of a cell.
pub fn points_gained(p: Micros, cell: &ScopeCell) -> Micros {
    let pass = cell.counts[EFF_PASS];
    let fail = cell.counts[EFF_FAIL];
    let visible = fail - cell.counts[EFF_HIDDEN];
    contribution(p, pass + visible, fail - visible) - contribution(p, pass, fail)
}

/// Recommendations with points gained > 0, points gained descending (then
/// misconfigured devices descending, then control id).
pub fn recommendations(ledger: &Ledger, cat: &Catalog, sel: &Selection) -> Vec<Recommendation> {
    recommendations_of(|c| ledger.cell(sel.scope, c), cat, sel)
}

/// [`recommendations`] from any source of cells (see [`score_of`]).
pub fn recommendations_of(
    cell: impl Fn(ControlIdx) -> ScopeCell,
    cat: &Catalog,
    sel: &Selection,
) -> Vec<Recommendation> {
    let mut out: Vec<Recommendation> = selected(cat, sel)
        .filter_map(|(c, _)| {
            let control = &cat.controls[c as usize];
            let cell = cell(c);
            let gained = points_gained(control.points, &cell);
            (gained > 0).then(|| Recommendation {
                control: control.id.clone(),
                title: control.title.clone(),
                category: control.category.as_str(),
                remediation: control.remediation.as_str(),
                points_gained: micros_to_points(gained),
                misconfigured_devices: cell.counts[EFF_FAIL] - cell.counts[EFF_HIDDEN],
                applicable_devices: cell.counts[EFF_PASS] + cell.counts[EFF_FAIL],
                excepted_devices: cell.counts[EFF_HIDDEN],
                vulnerabilities: control.vulnerabilities.clone(),
                points_gained_micros: gained,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.points_gained_micros
            .cmp(&a.points_gained_micros)
            .then(b.misconfigured_devices.cmp(&a.misconfigured_devices))
            .then(a.control.cmp(&b.control))
    });
    out
}
