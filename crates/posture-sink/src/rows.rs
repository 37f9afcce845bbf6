//! Rows of the ClickHouse tables, and their conversion from the core's [`Output`].
//!
//! Names (tenant, device, group, control id, category) are resolved through the [`Engine`] that
//! produced the output. Enum columns are written as their `Enum8` codes (see [`state_code`] and
//! friends); the DDL in `schemas/clickhouse/` names the values.

pub use crate::batch::Batch;
use crate::batch::PendingState;
pub use crate::legacy::{control_state_rows, score_delta_rows, ControlStateRow, ScoreDeltaRow, SettingRow};
use crate::rollup::Progress;
use posture_core::engine::{Cell, ExcStatus, Reason, ScopeDelta, NO_GROUP};
use posture_core::{ControlState, Engine, Output, RawState, SourcePos, Transition};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// One row of `transitions`: one [`Transition`].
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Serialize)]
pub struct TransitionRow {
    /// Tenant name.
    pub tenant: String,
    /// Device id.
    pub device: String,
    /// Control id.
    pub control: String,
    /// The control's category.
    pub category: String,
    /// State before ([`state_code`]).
    pub old_state: i8,
    /// State after ([`state_code`]).
    pub new_state: i8,
    /// Evaluation result before, without exceptions ([`raw_code`]).
    pub old_raw: i8,
    /// Evaluation result after, without exceptions ([`raw_code`]).
    pub new_raw: i8,
    /// Exception status before ([`exception_code`]).
    pub old_exception: i8,
    /// Exception status after ([`exception_code`]).
    pub new_exception: i8,
    /// 1 when the device counted in scores before.
    pub old_counted: u8,
    /// 1 when the device counts in scores after.
    pub new_counted: u8,
    /// Why it happened ([`reason_code`]).
    pub reason: i8,
    /// Event time in whole seconds.
    pub event_time: u32,
    /// Exact event time, ms.
    pub event_time_ms: i64,
    /// Device score delta with exceptions, micro-points.
    pub device_points_with: i64,
    /// Device maximum delta with exceptions, micro-points.
    pub device_max_with: i64,
    /// Device score delta without exceptions, micro-points.
    pub device_points_without: i64,
    /// Device maximum delta without exceptions, micro-points.
    pub device_max_without: i64,
    /// Kafka partition of the source event.
    pub source_partition: i32,
    /// Kafka offset of the source event.
    pub source_offset: i64,
    /// Index of this row among the `transitions` rows of its source position.
    pub seq: u32,
    /// The control's points p_c, micro-points.
    pub control_points: i64,
    /// The scopes this transition changed, one element per scope delta: `""` for the tenant,
    /// else a device group. The other `scope_*` columns are parallel to this one.
    pub scope_groups: Vec<String>,
    /// PASS count delta of each scope, exceptions applied.
    pub scope_pass_with: Vec<i8>,
    /// FAIL count delta, exceptions applied.
    pub scope_fail_with: Vec<i8>,
    /// Delta of the FAIL devices hidden from recommendations by an exception.
    pub scope_hidden_with: Vec<i8>,
    /// PASS count delta without exceptions.
    pub scope_pass_without: Vec<i8>,
    /// FAIL count delta without exceptions.
    pub scope_fail_without: Vec<i8>,
    /// Score delta with exceptions (micro-points; an exact sum within one input partition only).
    pub scope_points_with: Vec<i64>,
    /// Score delta without exceptions (likewise).
    pub scope_points_without: Vec<i64>,
}

/// One row of `device_evidence`: the settings of one applied event that some check reads (the
/// evidence behind control states), as parallel arrays.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Serialize)]
pub struct EvidenceRow {
    /// Tenant name.
    pub tenant: String,
    /// Device id.
    pub device: String,
    /// The event's sequence.
    pub sequence: i64,
    /// The setting keys; a SNAPSHOT's start with the marker `""` (older keys are absent).
    pub keys: Vec<String>,
    /// The values as JSON text (`""` when removed, and for the marker).
    pub values: Vec<String>,
    /// 1 when a REMOVE event (or a null value) made the key absent.
    pub absent: Vec<u8>,
    /// The event's time (ms).
    pub event_time_ms: i64,
    /// Lineage: the Kafka partition of the event.
    pub source_partition: i32,
    /// Lineage: its offset.
    pub source_offset: i64,
}

/// One row of `exception_syncs`: the set of exceptions a partition's engine
/// took before the record at `source_offset`.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Serialize)]
pub struct SyncRow {
    /// The input partition.
    pub source_partition: i32,
    /// The record before which the set was applied.
    pub source_offset: i64,
    /// The set, as a JSON array of [`posture_core::exception::Exception`].
    pub exceptions: String,
    /// Wall-clock seconds, for people.
    pub written_at: u32,
}

/// One row of `device_inventory`: a device's inventory as of one event.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Serialize)]
pub struct InventoryRow {
    /// Tenant name.
    pub tenant: String,
    /// Device id.
    pub device: String,
    /// OS family, lower case as sent.
    pub os_family: String,
    /// OS version.
    pub os_version: String,
    /// Hostname ('' when not sent).
    pub hostname: String,
    /// Device groups.
    pub groups: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// The event's sequence.
    pub sequence: i64,
    /// The event's time (ms).
    pub event_time_ms: i64,
    /// Lineage: the Kafka partition of the event.
    pub source_partition: i32,
    /// Lineage: its offset.
    pub source_offset: i64,
}

/// Appends the `device_inventory` row of one applied event, if it carries an inventory.
pub fn inventory_row(ev: &posture_core::ConfigChange, source: SourcePos, batch: &mut Batch) {
    if let Some(d) = &ev.device {
        batch.device_inventory.push(InventoryRow {
            tenant: ev.tenant_id.clone(),
            device: ev.device_id.clone(),
            os_family: d.os_family.clone(),
            os_version: d.os_version.clone(),
            hostname: d.hostname.clone().unwrap_or_default(),
            groups: d.groups.clone(),
            tags: d.tags.clone(),
            sequence: ev.sequence,
            event_time_ms: ev.observed_at,
            source_partition: source.partition,
            source_offset: source.offset,
        });
    }
}

/// A setting value as JSON text: null, true, 12, 1.5, "text", ["a","b"].
pub fn value_json(v: &posture_core::Value) -> String {
    use posture_core::Value as V;
    let quote = |s: &str| serde_json::to_string(s).expect("a string always serializes");
    match v {
        V::Null => "null".into(),
        // Not through `Display` (its formatting machinery was most of this function's cost).
        V::Bool(b) => if *b { "true" } else { "false" }.into(),
        V::Long(n) => itoa::Buffer::new().format(*n).into(),
        V::Double(x) => serde_json::Number::from_f64(*x).map_or_else(|| "null".into(), |n| n.to_string()),
        V::String(s) => quote(s),
        V::Array(a) => serde_json::to_string(a).expect("strings always serialize"),
    }
}

/// Appends the `device_evidence` row of one applied event: its settings that some check reads
/// (per `keep`), after the marker `""` for a SNAPSHOT. An event with neither (and a RETIRE) adds
/// no row.
pub fn evidence_row(
    ev: &posture_core::ConfigChange,
    source: SourcePos,
    keep: impl Fn(&str) -> bool,
    batch: &mut Batch,
) {
    use posture_core::ChangeKind;
    if ev.kind == ChangeKind::Retire {
        return;
    }
    let mut row = EvidenceRow {
        tenant: String::new(),
        device: String::new(),
        sequence: ev.sequence,
        // At most every setting and the SNAPSHOT marker: no growing on the way.
        keys: Vec::with_capacity(ev.settings.len() + 1),
        values: Vec::with_capacity(ev.settings.len() + 1),
        absent: Vec::with_capacity(ev.settings.len() + 1),
        event_time_ms: ev.observed_at,
        source_partition: source.partition,
        source_offset: source.offset,
    };
    let mut push = |key: &str, value: String, removed: u8| {
        row.keys.push(key.to_string());
        row.values.push(value);
        row.absent.push(removed);
    };
    if ev.kind == ChangeKind::Snapshot {
        push("", String::new(), 0);
    }
    for s in ev.settings.iter().filter(|s| !s.key.is_empty() && keep(&s.key)) {
        let absent = ev.kind == ChangeKind::Remove || s.value == posture_core::Value::Null;
        if absent {
            push(&s.key, String::new(), 1);
        } else {
            push(&s.key, value_json(&s.value), 0);
        }
    }
    if row.keys.is_empty() {
        return;
    }
    row.tenant = ev.tenant_id.clone();
    row.device = ev.device_id.clone();
    batch.device_evidence.push(row);
}

/// One row of `device_state`: every control's current state of one device, in the order of its
/// catalog's controls (named once in `baseline_catalogs`, see [`CatalogRow`]).
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Serialize)]
pub struct DeviceStateRow {
    /// Tenant name.
    pub tenant: String,
    /// Device id.
    pub device: String,
    /// 1 when the device counts in scores (not retired, not inactive).
    pub counted: u8,
    /// The catalog the cells are in the order of ([`catalog_id`]).
    pub catalog: u64,
    /// Control ids inline: empty on rows the sink writes (the catalog names them).
    pub controls: Vec<String>,
    /// Categories inline: empty likewise.
    pub categories: Vec<String>,
    /// s(d,c) per control ([`state_code`]).
    pub states: Vec<i8>,
    /// The evaluation result per control, before exceptions ([`raw_code`]).
    pub raw_states: Vec<i8>,
    /// Exception status per control ([`exception_code`]).
    pub exceptions: Vec<i8>,
    /// Event time of the device's latest transition in the row, ms.
    pub event_time_ms: i64,
    /// Kafka partition of the record that made this state.
    pub source_partition: i32,
    /// Its offset.
    pub source_offset: i64,
    /// ReplacingMergeTree version: increases in the order rows are made (see [`next_version`]).
    pub version: u64,
}

/// One row of `baseline_catalogs`: a catalog's control ids and categories, in its order.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Serialize)]
pub struct CatalogRow {
    /// [`catalog_id`] of the catalog.
    pub catalog: u64,
    /// Control ids in catalog order.
    pub controls: Vec<String>,
    /// Their categories.
    pub categories: Vec<String>,
    /// Wall-clock seconds, for people.
    pub written_at: u32,
}

/// The identity of a catalog in `device_state` rows: a 64-bit FNV-1a hash of its control ids and
/// categories in order (never 0, which marks rows whose controls are named inline).
pub fn catalog_id(cat: &posture_core::Catalog) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for c in &cat.controls {
        for b in c.id.bytes().chain([0]).chain(c.category.as_str().bytes()).chain([0]) {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h.max(1)
}

/// `Enum8` code of a [`ControlState`] (PASS 1, FAIL 2, UNKNOWN 3, NOT_APPLICABLE 4, EXCEPTED 5).
pub fn state_code(s: ControlState) -> i8 {
    match s {
        ControlState::Pass => 1,
        ControlState::Fail => 2,
        ControlState::Unknown => 3,
        ControlState::NotApplicable => 4,
        ControlState::Excepted => 5,
    }
}

/// `Enum8` code of a [`RawState`] (PASS 1, FAIL 2, UNKNOWN 3, NOT_APPLICABLE 4).
pub fn raw_code(s: RawState) -> i8 {
    match s {
        RawState::Pass => 1,
        RawState::Fail => 2,
        RawState::Unknown => 3,
        RawState::NotApplicable => 4,
    }
}

/// `Enum8` code of an [`ExcStatus`] (NONE 0, CREDIT 1, NO_CREDIT 2).
pub fn exception_code(e: ExcStatus) -> i8 {
    match e {
        ExcStatus::None => 0,
        ExcStatus::Credit => 1,
        ExcStatus::NoCredit => 2,
    }
}

/// `Enum8` code of a [`Reason`] (EVENT 1, RETIRED 2, INACTIVE 3, EXCEPTION_STARTED 4,
/// EXCEPTION_ENDED 5).
pub fn reason_code(r: Reason) -> i8 {
    match r {
        Reason::Event => 1,
        Reason::Retired => 2,
        Reason::Inactive => 3,
        Reason::ExceptionStarted => 4,
        Reason::ExceptionEnded => 5,
    }
}

/// The `control_state` version of the next row: a hybrid clock, the larger of the last version
/// plus one and the wall clock in microseconds. It increases within the process and, as long as
/// the wall clock does not go back by more than the rows written ahead of it, across restarts.
/// (Instances with skewed clocks taking over a partition after a rebalance are the known limit.)
pub fn next_version() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let prev = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(now.max(last + 1)))
        .expect("the update closure always returns Some");
    now.max(prev + 1)
}

/// Seconds for a DateTime column: `floor(ms / 1000)`, clamped to DateTime's range.
pub fn datetime_secs(ms: i64) -> u32 {
    ms.div_euclid(1000).clamp(0, u32::MAX as i64) as u32
}

/// Appends the rows of one [`Output`] of `engine` to `batch`: one `transitions` row per transition
/// (carrying its scope deltas), a note of each device it changed (its `device_state` row, the
/// device's state then, is made by [`Batch::settle`] right before the flush, at the position of
/// its last transition in the batch), and the scope deltas to the batch's
/// rollup (unless the rollup already holds their record: see [`Rollup::accepts`](crate::Rollup::accepts)), whose progress
/// moves to the record after each transition's. `seq` numbers the `transitions` rows per source
/// position (partition, offset) across everything appended to the batch since it was made or
/// cleared, so keep all output of one source position in one batch.
pub fn rows(engine: &Engine, out: &Output, batch: &mut Batch) {
    let cat = engine.catalog();
    batch.transitions.reserve(out.transitions.len());
    let touched_from = batch.touched.len();
    for t in &out.transitions {
        let control = &cat.controls[t.control as usize];
        let tenant = engine.tenant_name(t.tenant);
        let device = engine.device_name(t.device);
        let category = control.category.as_str();
        let next = batch.seqs.entry(t.source).or_insert(0);
        let seq = *next;
        *next += 1;

        let mut row = transition_row(t, tenant, device, &control.id, category, seq);
        row.control_points = control.points;
        scope_columns(engine, out.deltas_of(t), &mut row);
        batch.transitions.push(row);
        // The device's row waits for the flush ([`Batch::settle`]); only where its latest
        // change came from is noted.
        let key = (t.source.partition, t.device);
        if batch.touched.len() == touched_from || batch.touched.last() != Some(&key) {
            batch.touched.push(key);
        }
        batch.pending_states.insert(
            key,
            PendingState {
                device: t.device,
                tenant: t.tenant,
                counted: t.new_counted,
                event_time: t.event_time,
                source: t.source,
                seq,
            },
        );
        let in_rollup = batch.rollup.accepts(t.source);
        batch.rollup.advance(
            t.source.partition,
            Progress {
                next_offset: t.source.offset + 1,
                clock_ms: engine.clock().max(0),
            },
        );
        if in_rollup {
            for d in out.deltas_of(t) {
                batch.rollup.add(engine, t.source, t.event_time, t.control, d);
            }
        }
    }
}

/// Fills the `scope_*` columns of a transition's row from its scope deltas.
fn scope_columns(engine: &Engine, deltas: &[ScopeDelta], row: &mut TransitionRow) {
    use posture_core::engine::count::*;
    use posture_core::engine::view::{WITH, WITHOUT};
    // Each column collected at its final length (pushing grew each of the eight from empty).
    row.scope_groups = deltas.iter().map(|d| group_name(engine, d).to_string()).collect();
    row.scope_pass_with = deltas.iter().map(|d| d.counts[EFF_PASS]).collect();
    row.scope_fail_with = deltas.iter().map(|d| d.counts[EFF_FAIL]).collect();
    row.scope_hidden_with = deltas.iter().map(|d| d.counts[EFF_HIDDEN]).collect();
    row.scope_pass_without = deltas.iter().map(|d| d.counts[RAW_PASS]).collect();
    row.scope_fail_without = deltas.iter().map(|d| d.counts[RAW_FAIL]).collect();
    row.scope_points_with = deltas.iter().map(|d| d.points[WITH]).collect();
    row.scope_points_without = deltas.iter().map(|d| d.points[WITHOUT]).collect();
}

pub(crate) fn group_name<'e>(engine: &'e Engine, d: &ScopeDelta) -> &'e str {
    if d.scope.group == NO_GROUP {
        ""
    } else {
        engine.group_name(d.scope.group).unwrap_or_default()
    }
}

fn transition_row(
    t: &Transition,
    tenant: &str,
    device: &str,
    control: &str,
    category: &str,
    seq: u32,
) -> TransitionRow {
    let (old, new): (Cell, Cell) = (t.old, t.new);
    let (dp, dm) = (t.device_points, t.device_max);
    TransitionRow {
        tenant: tenant.to_string(),
        device: device.to_string(),
        control: control.to_string(),
        category: category.to_string(),
        old_state: state_code(old.state()),
        new_state: state_code(new.state()),
        old_raw: raw_code(old.raw),
        new_raw: raw_code(new.raw),
        old_exception: exception_code(old.exc),
        new_exception: exception_code(new.exc),
        old_counted: t.old_counted as u8,
        new_counted: t.new_counted as u8,
        reason: reason_code(t.reason),
        event_time: datetime_secs(t.event_time),
        event_time_ms: t.event_time,
        device_points_with: dp[0],
        device_max_with: dm[0],
        device_points_without: dp[1],
        device_max_without: dm[1],
        source_partition: t.source.partition,
        source_offset: t.source.offset,
        seq,
        control_points: 0,
        scope_groups: Vec::new(),
        scope_pass_with: Vec::new(),
        scope_fail_with: Vec::new(),
        scope_hidden_with: Vec::new(),
        scope_pass_without: Vec::new(),
        scope_fail_without: Vec::new(),
        scope_points_with: Vec::new(),
        scope_points_without: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Batch::settle` writes a device's raw-state codes as its state codes while no exception
    /// is in force: they must be the same codes.
    #[test]
    fn a_raw_code_is_its_state_code_without_exceptions() {
        use posture_core::engine::{Cell, ExcStatus};
        for raw in [
            RawState::Pass,
            RawState::Fail,
            RawState::Unknown,
            RawState::NotApplicable,
        ] {
            let cell = Cell {
                raw,
                exc: ExcStatus::None,
            };
            assert_eq!(raw_code(raw), state_code(cell.state()), "{raw:?}");
        }
    }
    use crate::batch::cut_from;

    /// Every `Enum8(...)` of the shipped DDL, as its (name, code) pairs.
    fn ddl_enums() -> Vec<Vec<(String, i8)>> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/clickhouse");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("schemas/clickhouse") {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "sql") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for part in text.split("Enum8(").skip(1) {
                let list = &part[..part.find(')').expect("a closed Enum8")];
                out.push(
                    list.split(',')
                        .map(|pair| {
                            let (name, code) = pair.split_once('=').expect("'NAME' = code");
                            (name.trim().trim_matches('\'').to_string(), code.trim().parse().unwrap())
                        })
                        .collect(),
                );
            }
        }
        out
    }

    /// The codes written here are the DDL's, for every Enum8 column of every table and query
    /// (so a code changed on one side only fails here, not as wrong states in ClickHouse).
    #[test]
    fn enum_codes_equal_the_ddl() {
        use posture_core::engine::Reason;
        let states = [
            ControlState::Pass,
            ControlState::Fail,
            ControlState::Unknown,
            ControlState::NotApplicable,
            ControlState::Excepted,
        ];
        let want_state: Vec<(String, i8)> = states.iter().map(|&s| (s.as_str().into(), state_code(s))).collect();
        let raws = [
            RawState::Pass,
            RawState::Fail,
            RawState::Unknown,
            RawState::NotApplicable,
        ];
        let want_raw: Vec<(String, i8)> = raws.iter().map(|&s| (s.as_str().into(), raw_code(s))).collect();
        let want_exc = vec![
            ("NONE".to_string(), exception_code(ExcStatus::None)),
            ("CREDIT".to_string(), exception_code(ExcStatus::Credit)),
            ("NO_CREDIT".to_string(), exception_code(ExcStatus::NoCredit)),
        ];
        let reasons = [
            Reason::Event,
            Reason::Retired,
            Reason::Inactive,
            Reason::ExceptionStarted,
            Reason::ExceptionEnded,
        ];
        let want_reason: Vec<(String, i8)> = reasons.iter().map(|&r| (r.as_str().into(), reason_code(r))).collect();
        let mut checked = 0;
        for e in ddl_enums() {
            let has = |n: &str| e.iter().any(|(x, _)| x == n);
            let want = if has("EXCEPTED") {
                &want_state
            } else if has("PASS") {
                &want_raw
            } else if has("CREDIT") {
                &want_exc
            } else if has("EVENT") {
                &want_reason
            } else {
                continue;
            };
            assert_eq!(&e, want, "an Enum8 of the DDL differs from the codes written");
            checked += 1;
        }
        assert!(
            checked >= 8,
            "the DDL's state, raw, exception and reason enums ({checked})"
        );
    }

    /// Events of `devices` on one engine: each a SNAPSHOT of two boolean settings.
    fn engine_with_events(events: &[(&str, i64, bool, bool)]) -> (Engine, Vec<Output>) {
        use posture_core::{Catalog, ConfigChange, EngineConfig};
        let cat = std::sync::Arc::new(
            Catalog::from_sources(&[(
                "t.yaml",
                "baseline: t\nversion: 1\ncontrols:\n  - { id: fw, title: F, category: network, points: 30, check: { key: fw, op: eq, value: true } }\n  - { id: av, title: A, category: security_controls, points: 10, check: { key: av, op: eq, value: true } }\n",
            )])
            .unwrap(),
        );
        let mut engine = Engine::new(cat, EngineConfig::default());
        let mut outs = Vec::new();
        for (i, &(dev, offset, fw, av)) in events.iter().enumerate() {
            let ev = ConfigChange::from_json(&format!(
                r#"{{"event_id":"e{i}","tenant_id":"t1","device_id":"{dev}","kind":"SNAPSHOT","source":"AGENT","observed_at":{},"sequence":{i},"device":{{"os_family":"linux","os_version":"1","groups":["g"],"tags":[]}},"settings":[{{"key":"fw","value":{fw}}},{{"key":"av","value":{av}}}]}}"#,
                1_795_341_600_000 + i as i64
            ))
            .unwrap();
            let mut out = Output::default();
            engine.apply(&ev, SourcePos { partition: 3, offset }, &mut out).unwrap();
            outs.push(out);
        }
        (engine, outs)
    }

    /// A device changed by several outputs of a batch gets one `device_state` row, made at
    /// settle from the engine's state then, at the position of its last transition; rows
    /// are made only for the partition settled.
    #[test]
    fn device_state_rows_are_made_once_per_device_at_settle() {
        let (engine, outs) =
            engine_with_events(&[("a", 10, true, true), ("b", 11, false, true), ("a", 12, false, false)]);
        let mut batch = Batch::new();
        for out in &outs {
            rows(&engine, out, &mut batch);
        }
        assert!(batch.device_state.is_empty(), "no row before settle");
        assert_eq!(batch.counts(), [batch.transitions.len(), 2]);
        batch.settle(&engine, Some(4));
        assert!(
            batch.device_state.is_empty(),
            "another partition's settle makes nothing"
        );
        batch.settle(&engine, Some(3));
        let got: Vec<_> = batch
            .device_state
            .iter()
            .map(|r| (r.device.as_str(), r.source_offset, r.states.clone(), r.counted))
            .collect();
        // PASS 1, FAIL 2, in catalog order (fw, av); b's row first (its change came first).
        assert_eq!(got, [("b", 11, vec![2, 1], 1), ("a", 12, vec![2, 2], 1)]);
        let (_, cells) = engine.device_cells(engine.device_idx("t1", "a").unwrap());
        assert_eq!(
            batch.device_state[1].raw_states,
            cells.iter().map(|c| raw_code(c.raw)).collect::<Vec<_>>()
        );
        assert_eq!(batch.counts(), [batch.transitions.len(), 2]);
        batch.settle(&engine, None);
        assert_eq!(batch.device_state.len(), 2, "settled devices are not made again");
    }

    /// Writing a batch whose changed devices were not settled is refused before anything is
    /// sent (their state rows would be lost), and says how to fix it.
    #[tokio::test]
    async fn a_write_without_settle_is_refused() {
        let (engine, outs) = engine_with_events(&[("a", 10, true, true)]);
        let mut batch = Batch::new();
        rows(&engine, &outs[0], &mut batch);
        // No server at this address: the refusal comes first.
        let sink = crate::Sink::new(clickhouse::Client::default().with_url("http://127.0.0.1:9"));
        let err = sink.write(&mut batch).await.unwrap_err();
        assert!(matches!(err, crate::SinkError::Unsettled { devices: 1 }), "{err}");
        assert!(err.to_string().contains("Batch::settle"), "{err}");
        assert_eq!(batch.unsettled(), 1, "the batch is left as it was");
    }

    /// A replay's changes at or below the `device_state` watermark make no row; those above
    /// do; a revoked partition's pending devices are dropped.
    #[test]
    fn replayed_device_changes_are_suppressed_and_revoked_ones_discarded() {
        let (engine, outs) =
            engine_with_events(&[("a", 10, true, true), ("b", 11, false, true), ("a", 12, false, false)]);
        let mut batch = Batch::new();
        for out in &outs {
            let mark = batch.mark();
            rows(&engine, out, &mut batch);
            // transitions written through 12, device_state through 11.
            batch.suppress_since(mark, |p| (p == 3).then_some([12, 11]));
        }
        assert!(batch.transitions.is_empty());
        batch.settle(&engine, Some(3));
        let got: Vec<_> = batch
            .device_state
            .iter()
            .map(|r| (r.device.as_str(), r.source_offset))
            .collect();
        assert_eq!(got, [("a", 12)], "b's only change (11) is at the watermark");

        let mut batch = Batch::new();
        for out in &outs {
            rows(&engine, out, &mut batch);
        }
        batch.discard_partition(3);
        assert!(batch.is_empty(), "{batch:?}");
        batch.settle(&engine, None);
        assert!(batch.device_state.is_empty());
    }

    #[test]
    fn versions_increase() {
        let mut last = 0;
        for _ in 0..10_000 {
            let v = next_version();
            assert!(v > last);
            last = v;
        }
    }

    #[test]
    fn cut_from_keeps_the_head_and_filters_the_tail() {
        let mut v = vec![1, 2, 3, 4, 5, 6];
        assert_eq!(cut_from(&mut v, 3, |x| x % 2 == 0), 1);
        assert_eq!(v, vec![1, 2, 3, 4, 6]);
        assert_eq!(cut_from(&mut v, 9, |_| false), 0);
        assert_eq!(v, vec![1, 2, 3, 4, 6]);
    }

    #[test]
    fn datetime_seconds() {
        assert_eq!(datetime_secs(1_795_341_600_999), 1_795_341_600);
        assert_eq!(datetime_secs(-1), 0);
        assert_eq!(datetime_secs(i64::MAX), u32::MAX);
    }
}
