//! Rows of the tables the sink wrote before the storage redesign (migrations 011-013):
//! `score_deltas` (one row per scope delta), `device_settings` (one per setting per event) and
//! `control_state` (one per transition). The sink no longer writes them; readers still read the
//! rows an upgraded database holds. These types and conversions make such rows for the upgrade
//! tests (`tests/clickhouse_sink.rs`) and the old-model side of the history benchmark.

use crate::rows::{datetime_secs, exception_code, group_name, next_version, raw_code, reason_code, state_code};
use crate::HashMap;
use posture_core::engine::ScopeDelta;
use posture_core::{Engine, Micros, Output, SourcePos, Transition};
use serde::Serialize;

/// One row of `score_deltas`: one [`ScopeDelta`]. The raw log before migration 011: the sink no
/// longer writes this table (see [`TransitionRow`](crate::TransitionRow)'s scope columns); [`score_delta_rows`] makes
/// these rows for upgrade tests and the old-model benchmark.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Serialize)]
pub struct ScoreDeltaRow {
    /// Tenant name.
    pub tenant: String,
    /// Device group, `""` for the scope of the whole tenant.
    pub group: String,
    /// The control's category (`network`, `os`, ...).
    pub category: String,
    /// Control id.
    pub control: String,
    /// The control's points p_c, micro-points (scores are computed from the summed counts).
    pub control_points: i64,
    /// Event time in whole seconds (DateTime), for partitioning and bucketing.
    pub event_time: u32,
    /// Exact event time, ms since the epoch.
    pub event_time_ms: i64,
    /// Score delta with exceptions, micro-points.
    pub points_with: i64,
    /// Maximum delta with exceptions, micro-points.
    pub max_with: i64,
    /// Score delta without exceptions, micro-points.
    pub points_without: i64,
    /// Maximum delta without exceptions, micro-points.
    pub max_without: i64,
    /// PASS count delta, exceptions applied.
    pub pass_with: i32,
    /// FAIL count delta, exceptions applied.
    pub fail_with: i32,
    /// Delta of the FAIL devices hidden from recommendations by an exception.
    pub hidden_with: i32,
    /// PASS count delta without exceptions.
    pub pass_without: i32,
    /// FAIL count delta without exceptions.
    pub fail_without: i32,
    /// Kafka partition of the source event (-1 when not from Kafka).
    pub source_partition: i32,
    /// Kafka offset (or file line) of the source event.
    pub source_offset: i64,
    /// Index of this row among the `score_deltas` rows of its source position.
    pub seq: u32,
}

/// One row of `device_settings`: a setting's value as of one event. The evidence before migration
/// 012 (one row per setting per event): the sink now writes [`EvidenceRow`](crate::EvidenceRow)s.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Serialize)]
pub struct SettingRow {
    /// Tenant name.
    pub tenant: String,
    /// Device id.
    pub device: String,
    /// The setting key; '' marks a SNAPSHOT (older keys are absent).
    pub key: String,
    /// The value as JSON text ('' when removed or for the marker).
    pub value: String,
    /// 1 when a REMOVE event made the key absent.
    pub removed: u8,
    /// The event's sequence.
    pub sequence: i64,
    /// The event's time (ms).
    pub event_time_ms: i64,
    /// Lineage: the Kafka partition of the event.
    pub source_partition: i32,
    /// Lineage: its offset.
    pub source_offset: i64,
}

/// One row of `control_state`: the state a [`Transition`] leaves behind. The current state before
/// migration 013 (one row per transition): the sink now writes [`DeviceStateRow`](crate::DeviceStateRow)s;
/// [`control_state_rows`] makes these rows for upgrade tests.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Serialize)]
pub struct ControlStateRow {
    /// Tenant name.
    pub tenant: String,
    /// Device id.
    pub device: String,
    /// Control id.
    pub control: String,
    /// The control's category.
    pub category: String,
    /// The state s(d,c) ([`state_code`]).
    pub state: i8,
    /// The evaluation result before exceptions ([`raw_code`]).
    pub raw_state: i8,
    /// Exception status ([`exception_code`]).
    pub exception: i8,
    /// 1 when the device counts in scores.
    pub counted: u8,
    /// Why the state was last changed ([`reason_code`]).
    pub reason: i8,
    /// Event time of the change, whole seconds.
    pub event_time: u32,
    /// Event time of the change, ms.
    pub event_time_ms: i64,
    /// Kafka partition of the source event.
    pub source_partition: i32,
    /// Kafka offset of the source event.
    pub source_offset: i64,
    /// The `seq` of the matching `transitions` row.
    pub seq: u32,
    /// ReplacingMergeTree version: increases in the order rows are made (see [`next_version`]).
    pub version: u64,
}

/// The `control_state` rows of one [`Output`], as the sink wrote them before migration 013 (one
/// per transition; `seq` numbers the transitions per source position from 0 within this
/// output): for tests of the upgrade path.
pub fn control_state_rows(engine: &Engine, out: &Output) -> Vec<ControlStateRow> {
    let cat = engine.catalog();
    let mut seqs: HashMap<SourcePos, u32> = HashMap::default();
    out.transitions
        .iter()
        .map(|t| {
            let control = &cat.controls[t.control as usize];
            let seq = seqs.entry(t.source).or_insert(0);
            *seq += 1;
            ControlStateRow {
                tenant: engine.tenant_name(t.tenant).to_string(),
                device: engine.device_name(t.device).to_string(),
                control: control.id.clone(),
                category: control.category.as_str().to_string(),
                state: state_code(t.new.state()),
                raw_state: raw_code(t.new.raw),
                exception: exception_code(t.new.exc),
                counted: t.new_counted as u8,
                reason: reason_code(t.reason),
                event_time: datetime_secs(t.event_time),
                event_time_ms: t.event_time,
                source_partition: t.source.partition,
                source_offset: t.source.offset,
                seq: *seq - 1,
                version: next_version(),
            }
        })
        .collect()
}

/// The `score_deltas` rows of one [`Output`], as the sink wrote them before migration 011 (one
/// per scope delta, `seq` numbering them per source position from 0 within this output): for
/// tests of the upgrade path and the old-model benchmark.
pub fn score_delta_rows(engine: &Engine, out: &Output) -> Vec<ScoreDeltaRow> {
    let cat = engine.catalog();
    let mut seqs: HashMap<SourcePos, u32> = HashMap::default();
    let mut v = Vec::with_capacity(out.scope_deltas.len());
    for t in &out.transitions {
        let control = &cat.controls[t.control as usize];
        for d in out.deltas_of(t) {
            let seq = seqs.entry(t.source).or_insert(0);
            v.push(delta_row(
                engine,
                d,
                t,
                (&control.id, control.points, control.category.as_str()),
                *seq,
            ));
            *seq += 1;
        }
    }
    v
}

fn delta_row(
    engine: &Engine,
    d: &ScopeDelta,
    t: &Transition,
    (control, control_points, category): (&str, Micros, &str),
    seq: u32,
) -> ScoreDeltaRow {
    use posture_core::engine::count::*;
    use posture_core::engine::view::{WITH, WITHOUT};
    let group = group_name(engine, d);
    ScoreDeltaRow {
        tenant: engine.tenant_name(d.scope.tenant).to_string(),
        group: group.to_string(),
        category: category.to_string(),
        control: control.to_string(),
        control_points,
        event_time: datetime_secs(t.event_time),
        event_time_ms: t.event_time,
        points_with: d.points[WITH],
        max_with: d.max[WITH],
        points_without: d.points[WITHOUT],
        max_without: d.max[WITHOUT],
        pass_with: d.counts[EFF_PASS] as i32,
        fail_with: d.counts[EFF_FAIL] as i32,
        hidden_with: d.counts[EFF_HIDDEN] as i32,
        pass_without: d.counts[RAW_PASS] as i32,
        fail_without: d.counts[RAW_FAIL] as i32,
        source_partition: t.source.partition,
        source_offset: t.source.offset,
        seq,
    }
}
