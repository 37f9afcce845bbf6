//! The query layer of posture: what the score dashboards show, read from
//! ClickHouse and scored with the core's own rules.
//!
//! ```text
//! ClickHouse (score_rollup + the raw tail, device_state, ...) ─► posture_sink::queries (SQL)
//!   ─► Query (rows summed) ─► posture_core::report (points, as embedded mode) ─► CLI, http.rs (API),
//!                                                                               alerts (posture-ingest)
//! ```
//!
//! Every function runs one of the documented queries of
//! `schemas/clickhouse/queries.sql` (through [`posture_sink::queries`]) and,
//! where points are involved, turns the summed PASS/FAIL counts into points
//! with [`posture_core::report`], the code embedded mode uses, so a figure
//! read here equals the one `posture evaluate` prints for the same events.
//! The CLI subcommands and the HTTP API (`/api/v1`) both call this layer;
//! neither formats a number of its own.
//!
//! The layer is async and holds no state beyond a ClickHouse client and the
//! catalog of baselines (titles, points, categories, checks).

#![warn(missing_docs)]

use posture_core::check::{Check, Expected, Op, Scalar};
use posture_core::engine::{count, ScopeCell, ScopeKey};
use posture_core::report::{self, Cut, Recommendation, Score, Selection};
use posture_core::time::format_time;
use posture_core::{Catalog, Category, ControlIdx, Remediation};
use posture_sink::queries::{self, Param};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub mod csv_out;
mod devices;
mod drops;
pub mod exceptions;
pub mod http;
pub mod quota;
pub mod tasks;
mod trend;
mod whatif;

pub use drops::{DropCause, TenantLatest};
pub use exceptions::{ExceptionView, NewException};
pub use tasks::{NewTask, TaskReport, TaskView};

/// What went wrong answering a query.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request itself is wrong (an unknown control, a bad range); the
    /// message says what to change. HTTP 400.
    #[error("{0}")]
    BadRequest(String),
    /// The thing asked for does not exist (a device with no state). HTTP 404.
    #[error("{0}")]
    NotFound(String),
    /// ClickHouse could not answer a documented query. HTTP 502.
    #[error("query {query}: {detail}")]
    ClickHouse {
        /// Name of the documented query of `queries.sql` (or of the table written to).
        query: &'static str,
        /// What the ClickHouse client said. It names the database, tables and user: the API
        /// logs it and never sends it to a client.
        detail: String,
    },
}

/// A scope of SPEC section 3: a tenant, or one device group of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Tenant id.
    pub tenant: String,
    /// `None`: the whole tenant.
    pub group: Option<String>,
}

impl Scope {
    /// The whole tenant.
    pub fn tenant(tenant: impl Into<String>) -> Scope {
        Scope {
            tenant: tenant.into(),
            group: None,
        }
    }

    fn group_param(&self) -> Param {
        self.group.clone().unwrap_or_default().into()
    }
}

/// Which controls a report looks at (every filter is optional).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filters<'a> {
    /// Only controls of this category.
    pub category: Option<Category>,
    /// Only controls fixed this way (`configuration_change` or `software_update`).
    pub remediation: Option<Remediation>,
    /// Only controls that can apply to this OS family (`windows`, `macos`,
    /// `linux`, ...): controls whose `applies_to` names other families only
    /// are left out.
    pub os: Option<&'a str>,
}

/// Bucket width of a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    /// One point per UTC hour (3,600,000 ms).
    Hour,
    /// One point per UTC day (86,400,000 ms), midnight to midnight.
    Day,
}

impl Bucket {
    /// Milliseconds per bucket.
    pub fn millis(self) -> i64 {
        match self {
            Bucket::Hour => 3_600_000,
            Bucket::Day => 86_400_000,
        }
    }

    /// Parses `hour` or `day`.
    pub fn parse(s: &str) -> Result<Bucket, String> {
        match s {
            "hour" => Ok(Bucket::Hour),
            "day" => Ok(Bucket::Day),
            _ => Err(format!("bucket {s:?}: expected hour or day")),
        }
    }
}

/// One bucket of a history: the scope's score at the bucket's end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// Start of the bucket (RFC 3339, UTC).
    pub bucket_start: String,
    /// The instant scored: the bucket's last millisecond (the last bucket
    /// ends at the range's end), RFC 3339.
    pub at: String,
    /// `at` in ms since the epoch.
    pub at_ms: i64,
    /// Points with exceptions applied (micro-point exact: up to six decimals).
    pub points: f64,
    /// The scope's maximum at `at`: the full points of every control some device of it
    /// passes or fails.
    pub max_points: f64,
    /// `points` of `max_points`, 0-100 with two decimals (0 when `max_points` is 0).
    pub percent: f64,
    /// The same instant scored as if no exception existed.
    pub without_exceptions: HistoryPart,
}

/// The same bucket without exceptions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryPart {
    /// Points without exceptions (micro-point exact: up to six decimals).
    pub points: f64,
    /// The maximum without exceptions (see [`HistoryPoint::max_points`]).
    pub max_points: f64,
    /// `points` of `max_points`, 0-100 with two decimals (0 when `max_points` is 0).
    pub percent: f64,
}

/// One control of one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceControl {
    /// Device id, as events name it.
    pub device: String,
    /// Control id, as the baselines name it.
    pub control: String,
    /// The control's title in the baselines.
    pub title: String,
    /// The control's category (`accounts`, `application`, `network`, `os` or `security_controls`).
    pub category: String,
    /// SPEC section 3's s(d,c): PASS, FAIL, UNKNOWN, NOT_APPLICABLE or EXCEPTED.
    pub state: String,
    /// The evaluation result before exceptions.
    pub raw_state: String,
    /// NONE, CREDIT or NO_CREDIT.
    pub exception: String,
    /// False when the device is retired or inactive (outside every score).
    pub counted: bool,
    /// What made the last change: EVENT, RETIRED, INACTIVE, EXCEPTION_STARTED, EXCEPTION_ENDED.
    pub reason: String,
    /// Event time of the last change (RFC 3339).
    pub since: String,
    /// What the check reads: `key op expected` per leaf (see [`check_text`]).
    pub check: String,
    /// The control's maximum points (its weight in the baselines), not what this device earns.
    pub points: f64,
    /// The one-device view only (empty in lists): the current value of
    /// each setting the check reads (JSON; null when absent), the evidence
    /// behind the state.
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// A device's inventory, as its latest event with one gave it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct Inventory {
    #[serde(skip_serializing)]
    device: String,
    /// OS family as the device reports it (`windows`, `macos`, `linux`, ...).
    pub os_family: String,
    /// OS version as the device reports it (e.g. `10.0.19045`).
    pub os_version: String,
    /// Host name; empty when the event carried none.
    pub hostname: String,
    /// Device groups it belongs to (what `group` scopes and filters match).
    pub groups: Vec<String>,
    /// Tags of the device, which `tag`-scoped exceptions match.
    pub tags: Vec<String>,
    #[serde(skip_serializing)]
    seq: i64,
}

/// One device: its score now and every control's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceReport {
    /// Tenant id.
    pub tenant: String,
    /// Device id.
    pub device: String,
    /// `None` when no event of the device carried an inventory.
    pub inventory: Option<Inventory>,
    /// The device's points at the instant asked for, with exceptions applied.
    pub points: f64,
    /// The device's maximum: the full points of every control it passes or fails.
    pub max_points: f64,
    /// `points` of `max_points`, 0-100 with two decimals (0 when `max_points` is 0).
    pub percent: f64,
    /// The device's figures as if no exception existed.
    pub without_exceptions: HistoryPart,
    /// Current state of each of the device's controls, sorted by control id, each with the
    /// `settings` behind it.
    pub controls: Vec<DeviceControl>,
}

/// What a what-if changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Change {
    /// Every FAIL device of the scope passes the control.
    Fix,
    /// An exception for the control on the scope, with this justification
    /// (`third_party_control` and `alternate_mitigation` credit it).
    Exception {
        /// `third_party_control`, `alternate_mitigation`, `risk_accepted` or
        /// `planned_remediation`; anything else is a [`QueryError::BadRequest`].
        justification: String,
    },
}

/// The answer of a what-if: the score before and after, and the difference.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WhatIf {
    /// Control id the change is made for (one of the baselines).
    pub control: String,
    /// The devices the change is applied to: the whole scope.
    pub applied_to: Scope,
    /// The change: a fix or an exception.
    pub change: Change,
    /// FAIL devices of the control in the scope (those the change moves).
    pub devices_affected: i64,
    /// The reported scope's score at the instant, as it is, with the [`Cut`] it reflects.
    pub before: Score,
    /// The same score with the change made, read at the same cut as `before`.
    pub after: Score,
    /// `after.percent - before.percent`, with exceptions.
    pub percent_gained: f64,
    /// `after` minus `before` in points, with exceptions (computed exactly in micro-points).
    pub points_gained: f64,
}

#[derive(clickhouse::Row, Deserialize)]
struct DeviceScoreRow {
    #[allow(dead_code)]
    device: String,
    score_with: i64,
    max_score_with: i64,
    percent_with: f64,
    score_without: i64,
    max_score_without: i64,
    percent_without: f64,
}

/// A row of `control_state_current`. The Enum8 columns arrive as their
/// numbers (RowBinary); [`enum_name`] turns them into the DDL's names.
#[derive(clickhouse::Row, Deserialize)]
struct StateRow {
    device: String,
    control: String,
    category: String,
    state: i8,
    raw_state: i8,
    exception: i8,
    counted: u8,
}

/// A row of `control_changes`: when and why a device's control last changed.
#[derive(clickhouse::Row, Deserialize)]
struct ChangeRow {
    device: String,
    control: String,
    reason: i8,
    since_ms: i64,
}

/// The names of the Enum8 values of schemas/clickhouse/013_device_state.sql (and 002_transitions.sql).
const STATES: &[(i8, &str)] = &[
    (1, "PASS"),
    (2, "FAIL"),
    (3, "UNKNOWN"),
    (4, "NOT_APPLICABLE"),
    (5, "EXCEPTED"),
];
const EXCEPTIONS: &[(i8, &str)] = &[(0, "NONE"), (1, "CREDIT"), (2, "NO_CREDIT")];
const REASONS: &[(i8, &str)] = &[
    (1, "EVENT"),
    (2, "RETIRED"),
    (3, "INACTIVE"),
    (4, "EXCEPTION_STARTED"),
    (5, "EXCEPTION_ENDED"),
];

fn enum_name(names: &[(i8, &str)], v: i8) -> String {
    names
        .iter()
        .find(|(n, _)| *n == v)
        .map_or_else(|| format!("UNKNOWN_VALUE_{v}"), |(_, s)| s.to_string())
}

#[derive(clickhouse::Row, Deserialize)]
struct SettingRow {
    key: String,
    value: String,
    removed: u8,
    seq: i64,
    #[allow(dead_code)]
    since_ms: i64,
}

const MICROS: f64 = 1_000_000.0;

/// A ClickHouse client and the catalog the pipeline runs with.
#[derive(Clone)]
pub struct Query {
    client: clickhouse::Client,
    catalog: Arc<Catalog>,
}

impl Query {
    /// `client` must already point at posture's database.
    pub fn new(client: clickhouse::Client, catalog: Arc<Catalog>) -> Query {
        Query { client, catalog }
    }

    /// The baselines' catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    async fn rows<T>(&self, query: &'static str, params: &[(&str, Param)]) -> Result<Vec<T>, QueryError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        let err = |detail: String| QueryError::ClickHouse { query, detail };
        let sql = queries::get(query)
            .ok_or_else(|| err("not in queries.sql".into()))?
            .render(params)
            .map_err(|e| err(e.to_string()))?;
        // query_raw: the rendered SQL holds quoted values, and a `?` in one (a device id, say)
        // must not be taken for a bind placeholder.
        self.client
            .query_raw(&sql)
            .fetch_all::<T>()
            .await
            .map_err(|e| err(e.to_string()))
    }

    /// Writes one row (a new version of an exception or a task).
    async fn insert<T>(&self, table: &'static str, row: &T) -> Result<(), QueryError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        let err = |e: clickhouse::error::Error| QueryError::ClickHouse {
            query: table,
            detail: format!("INSERT: {e}"),
        };
        let mut insert = self.client.insert::<T>(table).await.map_err(err)?;
        insert.write(row).await.map_err(err)?;
        insert.end().await.map_err(err)
    }

    fn control(&self, id: &str) -> Result<ControlIdx, QueryError> {
        self.catalog
            .control_idx(id)
            .ok_or_else(|| QueryError::BadRequest(format!("control {id:?} is not in the baselines")))
    }

    /// Per control, the scope's counts at `at_ms` (indexed by control).
    /// Controls in ClickHouse but not in the catalog are left out (the
    /// pipeline ran with other baselines). See [`Query::cells_with_cut`].
    pub async fn cells(&self, scope: &Scope, at_ms: i64) -> Result<Vec<ScopeCell>, QueryError> {
        Ok(self.cells_with_cut(scope, at_ms).await?.0)
    }

    /// The score of `scope` at `at_ms` (one category when `category` is
    /// given), with and without exceptions: SPEC section 5's score object,
    /// with the cut it is the exact score of.
    pub async fn score(&self, scope: &Scope, category: Option<Category>, at_ms: i64) -> Result<Score, QueryError> {
        let (cells, cut) = self.cells_with_cut(scope, at_ms).await?;
        let mut score = self.score_of(&cells, scope, category, at_ms);
        score.cut = Some(cut);
        Ok(score)
    }

    fn score_of(&self, cells: &[ScopeCell], scope: &Scope, category: Option<Category>, at_ms: i64) -> Score {
        let sel = selection(category, None);
        report::score_of(
            |c| cells[c as usize],
            &self.catalog,
            &sel,
            &scope.tenant,
            scope.group.as_deref(),
            Some(format_time(at_ms)),
        )
    }

    /// The score of `scope` over `[from_ms, to_ms]`, one point per bucket
    /// (UTC hours or days), each the score at the bucket's end; every point
    /// read at one cut (returned).
    pub async fn history(
        &self,
        scope: &Scope,
        category: Option<Category>,
        from_ms: i64,
        to_ms: i64,
        bucket: Bucket,
    ) -> Result<(Vec<HistoryPoint>, Cut), QueryError> {
        if to_ms < from_ms {
            return Err(QueryError::BadRequest(format!(
                "the range ends ({}) before it starts ({})",
                format_time(to_ms),
                format_time(from_ms)
            )));
        }
        let n = to_ms / bucket.millis() - from_ms / bucket.millis() + 1;
        if n > 10_000 {
            return Err(QueryError::BadRequest(format!(
                "{n} buckets of one {bucket:?}: at most 10000 (use a shorter range or day buckets)"
            )));
        }
        let level = match bucket {
            Bucket::Hour => 1,
            Bucket::Day => 2,
        };
        let (series, cut) = self.series_cells(scope, level, bucket.millis(), from_ms, to_ms).await?;
        let points = series
            .into_iter()
            .map(|(start, at_ms, cells)| {
                let s = self.score_of(&cells, scope, category, at_ms);
                HistoryPoint {
                    bucket_start: format_time(start),
                    at: format_time(at_ms),
                    at_ms,
                    points: s.total.points,
                    max_points: s.total.max_points,
                    percent: s.total.percent,
                    without_exceptions: HistoryPart {
                        points: s.without_exceptions.total.points,
                        max_points: s.without_exceptions.total.max_points,
                        percent: s.without_exceptions.total.percent,
                    },
                }
            })
            .collect();
        Ok((points, cut))
    }

    /// Top recommendations of `scope` at `at_ms`: controls with points to
    /// gain, points gained descending, with the misconfigured and applicable
    /// device counts and the CVEs the control mitigates.
    pub async fn recommendations(
        &self,
        scope: &Scope,
        filters: Filters<'_>,
        at_ms: i64,
    ) -> Result<(Vec<Recommendation>, Cut), QueryError> {
        let (cells, cut) = self.cells_with_cut(scope, at_ms).await?;
        let sel = selection(filters.category, filters.remediation);
        let mut recs = report::recommendations_of(|c| cells[c as usize], &self.catalog, &sel);
        if let Some(os) = filters.os {
            recs.retain(|r| {
                self.control(&r.control)
                    .is_ok_and(|c| applies_to_os(&self.catalog, c, os))
            });
        }
        Ok((recs, cut))
    }
}

/// Wall-clock milliseconds since the epoch ("now" when no instant is given).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn selection(category: Option<Category>, remediation: Option<Remediation>) -> Selection {
    Selection {
        // The cells are already the scope's; the key is not looked at.
        scope: ScopeKey { tenant: 0, group: 0 },
        category,
        remediation,
    }
}

/// Whether control `c` can apply to devices of OS family `os`: none of its
/// `applies_to` conditions names other families only.
pub fn applies_to_os(cat: &Catalog, c: ControlIdx, os: &str) -> bool {
    cat.controls[c as usize].applies_to.iter().all(|&i| {
        let families = &cat.conditions[i as usize].os_family;
        families.is_empty() || families.iter().any(|f| f.eq_ignore_ascii_case(os))
    })
}

/// A control's check in words, e.g. `fw.enabled eq true`; `all`/`any`/`none`
/// of several leaves are written as such.
pub fn check_text(cat: &Catalog, c: ControlIdx) -> String {
    fn scalar(s: &Scalar) -> String {
        match s {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Long(n) => n.to_string(),
            Scalar::Double(x) => x.to_string(),
            Scalar::Str(s) => format!("{s:?}"),
        }
    }
    fn op(o: Op) -> String {
        // The baseline spelling: Eq -> eq, NotIn -> not_in.
        let mut s = String::new();
        for (i, ch) in format!("{o:?}").chars().enumerate() {
            if ch.is_uppercase() && i > 0 {
                s.push('_');
            }
            s.push(ch.to_ascii_lowercase());
        }
        s
    }
    fn text(cat: &Catalog, check: &Check) -> String {
        let list = |name: &str, v: &[Check]| {
            format!(
                "{name}({})",
                v.iter().map(|c| text(cat, c)).collect::<Vec<_>>().join(", ")
            )
        };
        match check {
            Check::Leaf(l) => {
                let leaf = &cat.leaves[*l as usize];
                let key = cat.key_name(leaf.key);
                match &leaf.expected {
                    Expected::Nothing => format!("{key} {}", op(leaf.op)),
                    Expected::Scalar(s) => format!("{key} {} {}", op(leaf.op), scalar(s)),
                    Expected::Version(v) => format!(
                        "{key} {} version {}",
                        op(leaf.op),
                        v.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
                    ),
                    Expected::List(v) => format!(
                        "{key} {} [{}]",
                        op(leaf.op),
                        v.iter().map(scalar).collect::<Vec<_>>().join(", ")
                    ),
                    other => format!("{key} {} {other:?}", op(leaf.op)),
                }
            }
            Check::All(v) => list("all", v),
            Check::Any(v) => list("any", v),
            Check::None(v) => list("none", v),
        }
    }
    text(cat, &cat.controls[c as usize].check)
}

/// The setting keys a control's check reads, each once, in check order.
pub fn check_keys(cat: &Catalog, c: ControlIdx) -> Vec<String> {
    fn walk(cat: &Catalog, check: &Check, out: &mut Vec<String>) {
        match check {
            Check::Leaf(l) => {
                let key = cat.key_name(cat.leaves[*l as usize].key).to_string();
                if !out.contains(&key) {
                    out.push(key);
                }
            }
            Check::All(v) | Check::Any(v) | Check::None(v) => v.iter().for_each(|c| walk(cat, c, out)),
        }
    }
    let mut out = Vec::new();
    walk(cat, &cat.controls[c as usize].check, &mut out);
    out
}
