//! The per-record step of every ingest loop, without Kafka: a record's position checked against
//! its partition's engine, decoded ([`Decode`]), exception sets taken in order, applied
//! ([`Engine::apply`]), its output handed to the [`Stage`]; what cannot be used is dead-lettered
//! and returned as [`Skipped`]. [`IngestStats`] counts it all.
//!
//! posture-ingest drives a [`Step`] from a Kafka consumer (partitions started from snapshots,
//! flushes, commits); posture-bench drives the same [`Step`] from records in memory, so what
//! the evaluator benchmark measures is the production path, not a copy of it.
//!
//! ```text
//! Kafka record ─► Step::handle ─► Decode::decode_into ─► Engine::apply ─► Stage::observe / Stage::absorb
//!                      └─ position checks, exception sets             └─► Stage::dead_letter (unusable)
//! ```

use crate::{reasons, sync_exceptions, DeadLetter, Decode, ExceptionSet, Skipped, Stage, Undecodable};
use posture_core::exception::Exception;
use posture_core::{ConfigChange, Engine, Output, Rejected, SourcePos};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// Counters of one ingest run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Records received from the input topic, replays included; each is then counted in one
    /// of `applied`, `undecodable`, `rejected` or `replay_skipped`.
    pub records: u64,
    /// Events the engines applied to device state.
    pub applied: u64,
    /// Records that could not be decoded (dead-lettered with the decoder's reason).
    pub undecodable: u64,
    /// Stale or duplicate events (ignored by the engine, per SPEC).
    pub stale: u64,
    /// Events that break the contract (dead-lettered as `invalid_event`).
    pub invalid: u64,
    /// `stale + invalid`.
    pub rejected: u64,
    /// Records received again that this instance had already applied, or
    /// below the restored snapshot (replay after a restart or rebalance).
    pub replay_skipped: u64,
    /// Partitions whose engine was restored from a snapshot.
    pub restored: u64,
    /// Partitions started without a snapshot (from the earliest offset).
    pub started_empty: u64,
    /// Snapshots written.
    pub snapshots: u64,
    /// Partitions revoked (their unwritten output discarded).
    pub revoked: u64,
    /// Flushes that wrote rows (one with nothing pending is not counted).
    pub flushes: u64,
    /// Rows those flushes wrote, as [`Stage::pending_rows`] counted them right before each.
    pub rows_flushed: u64,
    /// Time spent waiting for flushes (consumption waits meanwhile), µs.
    pub flush_micros: u64,
    /// Errors from the consumer (retried, not fatal).
    pub consumer_errors: u64,
    /// Exceptions an engine refused (logged; see [`ExceptionSet`]).
    pub exception_errors: u64,
}

/// One assigned partition: its engine and where it is in the input. `committed` and
/// `last_snapshot` are the driver's bookkeeping (the step does not read them).
pub struct PartitionState {
    /// The partition's devices: everything before `next_offset` applied.
    pub engine: Engine,
    /// The offset of the next record to apply (everything before it is in
    /// the engine).
    pub next_offset: i64,
    /// After a seek: only this offset is accepted next (records fetched
    /// before the seek are dropped).
    pub awaiting: Option<i64>,
    /// The offset last committed.
    pub committed: i64,
    /// Records applied (or skipped as unusable) since the last snapshot.
    pub since_snapshot: u64,
    /// When the last snapshot was taken (or the partition started).
    pub last_snapshot: Instant,
    /// The [`ExceptionSet`] version last applied to the engine (0: none).
    pub exceptions_version: u64,
    /// Exception sets recorded at or after the restored state's offset, to take
    /// again right before their records (see [`Stage::recorded_exceptions`]).
    pub recorded: VecDeque<(i64, Vec<Exception>)>,
}

impl PartitionState {
    /// A partition whose next record to apply is at `next_offset`, with `engine` holding
    /// everything before it; nothing committed or snapshotted yet, no exception set taken.
    pub fn new(engine: Engine, next_offset: i64) -> PartitionState {
        PartitionState {
            engine,
            next_offset,
            awaiting: None,
            committed: -1,
            since_snapshot: 0,
            last_snapshot: Instant::now(),
            exceptions_version: 0,
            recorded: VecDeque::new(),
        }
    }
}

/// Where the step reports what it did, record by record (Prometheus counters in
/// `posture-metrics`, which implements this). Reasons are from [`reasons`].
pub trait StepMetrics: Send + Sync {
    /// One event applied to device state.
    fn event_applied(&self);
    /// One stale or duplicate event ignored.
    fn event_stale(&self);
    /// One record dead-lettered, with its reason.
    fn dead_lettered(&self, reason: &'static str);
    /// Transitions one record caused.
    fn transitions_emitted(&self, n: u64);
}

/// The step: the stage the output goes to, the decoder, the assigned partitions and the
/// counters. A driver starts partitions (inserting a [`PartitionState`]), hands records to
/// [`Step::handle`] in offset order per partition, and flushes the stage.
pub struct Step<S, D> {
    /// Where the output goes (rows, score deltas, dead letters).
    pub stage: S,
    /// Record bytes to events.
    pub decode: D,
    /// The assigned partitions, by number.
    pub partitions: BTreeMap<i32, PartitionState>,
    /// Counters so far.
    pub stats: IngestStats,
    /// Per-record metrics, if reported.
    pub metrics: Option<Arc<dyn StepMetrics>>,
    /// The current exception set, if exceptions are kept.
    pub exceptions: Option<Arc<ExceptionSet>>,
    /// The engines' output buffer, empty between records (drivers use it for clock advances).
    pub out: Output,
    /// The event every record is decoded into (no allocation per record).
    scratch: ConfigChange,
}

impl<S: Stage, D: Decode> Step<S, D> {
    /// A step with no partition yet.
    pub fn new(stage: S, decode: D) -> Step<S, D> {
        Step {
            stage,
            decode,
            partitions: BTreeMap::new(),
            stats: IngestStats::default(),
            metrics: None,
            exceptions: None,
            out: Output::default(),
            scratch: ConfigChange::new("", "", posture_core::ChangeKind::Upsert, 0, 0),
        }
    }

    /// Applies the record at `offset` of `partition`, which must have been started (a
    /// [`PartitionState`] in [`Step::partitions`]). A record before the partition's position
    /// (a replay) or other than the one awaited after a seek is counted and skipped; one that
    /// cannot be used is dead-lettered and returned.
    pub async fn handle(&mut self, partition: i32, offset: i64, key: Option<&[u8]>, payload: &[u8]) -> Option<Skipped> {
        let p = self.partitions.get_mut(&partition).expect("partition started");
        if let Some(a) = p.awaiting {
            if offset != a {
                self.stats.replay_skipped += 1;
                return None;
            }
            p.awaiting = None;
        }
        if offset < p.next_offset {
            // Already in the engine: fetched again after a rebalance or a restore.
            self.stats.replay_skipped += 1;
            return None;
        }
        p.next_offset = offset + 1;
        p.since_snapshot += 1;
        let mut decoded = self.decode.decode_into(payload, &mut self.scratch);
        if let Err(Undecodable {
            unknown_schema_id: Some(id),
            ..
        }) = decoded
        {
            // Decoded again either way: a refused id now comes back with the reason.
            self.decode.learn(id).await;
            decoded = self.decode.decode_into(payload, &mut self.scratch);
        }
        let dead = |reason, detail| DeadLetter {
            partition,
            offset,
            key,
            payload,
            reason,
            detail,
        };
        let ev = match decoded {
            Ok(()) => &self.scratch,
            Err(u) => {
                self.stats.undecodable += 1;
                if let Some(m) = &self.metrics {
                    m.dead_lettered(u.reason);
                }
                self.stage.dead_letter(&dead(u.reason, u.detail.as_str()));
                return Some(Skipped::Undecodable(format!("{}: {}", u.reason, u.detail)));
            }
        };
        let pos = SourcePos { partition, offset };
        // After a restore: each recorded set again right before its record, as the run that
        // recorded it took it (the replay then makes that run's output exactly) ...
        let mut replayed_set = false;
        while p.recorded.front().is_some_and(|(o, _)| *o <= offset) {
            let (_, list) = p.recorded.pop_front().expect("a front");
            self.stats.exception_errors += sync_exceptions(&mut p.engine, &list, pos, &mut self.out);
            replayed_set = true;
        }
        // ... then the current set, once past every recorded one and the output already
        // written; recorded before its rows are written.
        if let Some(set) = &self.exceptions {
            let (version, list) = set.current();
            if version != p.exceptions_version
                && !replayed_set
                && p.recorded.is_empty()
                && !self.stage.replaying(partition, offset)
            {
                p.exceptions_version = version;
                self.stats.exception_errors += sync_exceptions(&mut p.engine, &list, pos, &mut self.out);
                self.stage.record_exceptions(partition, offset, &list);
            }
        }
        let result = p.engine.apply(ev, SourcePos { partition, offset }, &mut self.out);
        if result.is_ok() {
            self.stage.observe(&p.engine, ev, SourcePos { partition, offset });
        }
        self.stage.absorb(&p.engine, &self.out);
        if let Some(m) = &self.metrics {
            m.transitions_emitted(self.out.transitions.len() as u64);
            match &result {
                Ok(()) => m.event_applied(),
                Err(Rejected::Stale { .. }) => m.event_stale(),
                Err(Rejected::Invalid(_)) => m.dead_lettered(reasons::INVALID_EVENT),
            }
        }
        self.out.clear();
        match result {
            Ok(()) => {
                self.stats.applied += 1;
                None
            }
            Err(r) => {
                self.stats.rejected += 1;
                let text = r.to_string();
                Some(match r {
                    Rejected::Stale { .. } => {
                        self.stats.stale += 1;
                        Skipped::Stale(text)
                    }
                    Rejected::Invalid(_) => {
                        self.stats.invalid += 1;
                        self.stage.dead_letter(&dead(reasons::INVALID_EVENT, text.as_str()));
                        Skipped::Invalid(text)
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The step alone, with a stage that records what it is handed: no Kafka, no ClickHouse.
    use super::*;
    use posture_core::exception::{ExceptionScope, Justification};
    use posture_core::{Catalog, EngineConfig};

    /// What the stage was handed, in order.
    #[derive(Debug, Default)]
    struct Recording {
        /// (partition, offset) of each observed event.
        observed: Vec<(i32, i64)>,
        /// Transitions of each absorbed output, with the offset they carry.
        absorbed: Vec<Vec<(i64, String)>>,
        /// (offset, reason) of each dead letter.
        dead: Vec<(i64, String)>,
        /// (offset, exceptions) of each recorded exception set.
        recorded: Vec<(i64, usize)>,
        /// Offsets the stage says are replays of written output.
        replaying_through: i64,
    }

    impl Stage for Recording {
        type Error = std::convert::Infallible;
        fn observe(&mut self, _: &Engine, _: &ConfigChange, source: SourcePos) {
            self.observed.push((source.partition, source.offset));
        }
        fn absorb(&mut self, engine: &Engine, out: &Output) {
            self.absorbed.push(
                out.transitions
                    .iter()
                    .map(|t| {
                        (
                            t.source.offset,
                            engine.catalog().controls[t.control as usize].id.clone(),
                        )
                    })
                    .collect(),
            );
        }
        fn dead_letter(&mut self, record: &DeadLetter<'_>) {
            self.dead.push((record.offset, record.reason.to_string()));
        }
        fn record_exceptions(&mut self, _: i32, offset: i64, list: &[Exception]) {
            self.recorded.push((offset, list.len()));
        }
        fn replaying(&self, _: i32, offset: i64) -> bool {
            offset <= self.replaying_through
        }
        fn pending_rows(&self) -> usize {
            0
        }
        async fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    type JsonDecode = fn(&[u8]) -> Result<ConfigChange, Undecodable>;

    fn decode(bytes: &[u8]) -> Result<ConfigChange, Undecodable> {
        let text = std::str::from_utf8(bytes).map_err(|e| Undecodable::from(e.to_string()))?;
        ConfigChange::from_json(text).map_err(Undecodable::from)
    }

    /// A step over partition 3, started at offset 100, with the exceptions of `set`.
    fn step(set: Option<Arc<ExceptionSet>>) -> Step<Recording, JsonDecode> {
        let catalog = Arc::new(
            Catalog::from_sources(&[(
                "t.yaml",
                "baseline: t\nversion: 1\ncontrols:\n  - { id: fw, title: F, category: network, points: 30, check: { key: fw, op: eq, value: true } }\n",
            )])
            .unwrap(),
        );
        let mut step = Step::new(Recording::default(), decode as JsonDecode);
        step.partitions.insert(
            3,
            PartitionState::new(Engine::new(catalog, EngineConfig::default()), 100),
        );
        step.exceptions = set;
        step
    }

    fn event(device: &str, sequence: i64, fw: bool) -> String {
        format!(
            r#"{{"event_id":"{device}-{sequence}","tenant_id":"t1","device_id":"{device}","kind":"SNAPSHOT","source":"AGENT","observed_at":{},"sequence":{sequence},"device":{{"os_family":"linux","os_version":"1","groups":["g"],"tags":[]}},"settings":[{{"key":"fw","value":{fw}}}]}}"#,
            1_795_341_600_000 + sequence
        )
    }

    /// An applied record reaches the stage with its position; records before the partition's
    /// position, or other than the one awaited after a seek, are skipped without a trace.
    #[tokio::test(flavor = "current_thread")]
    async fn records_are_applied_in_place_and_replays_skipped() {
        let mut st = step(None);
        assert_eq!(st.handle(3, 100, None, event("a", 1, false).as_bytes()).await, None);
        assert_eq!(st.stage.observed, [(3, 100)]);
        assert_eq!(st.stage.absorbed, [vec![(100, "fw".to_string())]]);
        assert_eq!(st.partitions[&3].next_offset, 101);
        // Fetched again after a restore: already in the engine.
        assert_eq!(st.handle(3, 100, None, event("a", 1, true).as_bytes()).await, None);
        assert_eq!(st.stats.replay_skipped, 1);
        // After a seek to 105, a record fetched before it (103) is dropped.
        st.partitions.get_mut(&3).unwrap().awaiting = Some(105);
        assert_eq!(st.handle(3, 103, None, event("b", 1, true).as_bytes()).await, None);
        assert_eq!(st.handle(3, 105, None, event("b", 1, true).as_bytes()).await, None);
        assert_eq!(st.stage.observed, [(3, 100), (3, 105)]);
        assert_eq!((st.stats.applied, st.stats.replay_skipped), (2, 2));
    }

    /// What cannot be used is returned typed: undecodable and invalid records are dead-lettered
    /// with their reason, a stale one is only counted; the partition moves past all of them.
    #[tokio::test(flavor = "current_thread")]
    async fn unusable_records_are_typed_and_dead_lettered() {
        let mut st = step(None);
        let got = st.handle(3, 100, Some(b"k"), b"not json").await;
        assert!(matches!(got, Some(Skipped::Undecodable(_))), "{got:?}");
        let invalid = event("", 1, true);
        assert!(matches!(
            st.handle(3, 101, None, invalid.as_bytes()).await,
            Some(Skipped::Invalid(_))
        ));
        assert_eq!(st.handle(3, 102, None, event("a", 5, true).as_bytes()).await, None);
        let got = st.handle(3, 103, None, event("a", 4, false).as_bytes()).await;
        assert!(matches!(got, Some(Skipped::Stale(_))), "{got:?}");
        assert_eq!(
            st.stage.dead,
            [(100, "undecodable".to_string()), (101, "invalid_event".to_string())]
        );
        assert_eq!(
            (st.stats.undecodable, st.stats.invalid, st.stats.stale, st.stats.applied),
            (1, 1, 1, 1)
        );
        assert_eq!(st.partitions[&3].next_offset, 104);
    }

    /// A new exception set is taken right before the next record, its transitions stamped with
    /// that record's position, and recorded with it; not while the stage replays written output.
    #[tokio::test(flavor = "current_thread")]
    async fn a_new_exception_set_is_taken_before_the_next_record_and_recorded() {
        let set = ExceptionSet::new();
        let mut st = step(Some(set.clone()));
        st.stage.replaying_through = 100;
        assert_eq!(st.handle(3, 100, None, event("a", 1, false).as_bytes()).await, None);
        set.replace(vec![Exception {
            id: "x1".into(),
            tenant: "t1".into(),
            control: "fw".into(),
            scope: ExceptionScope::Tenant,
            justification: Justification::RiskAccepted,
            starts_at: 0,
            expires_at: None,
            author: "test".into(),
            note: String::new(),
        }]);
        // Replaying: the set waits.
        st.partitions.get_mut(&3).unwrap().next_offset = 100;
        assert_eq!(st.handle(3, 100, None, event("c", 1, false).as_bytes()).await, None);
        assert!(st.stage.recorded.is_empty());
        // Past the replay: taken before record 101 (a's and c's FAIL become EXCEPTED), then 101
        // applied (b's first state); all three transitions carry offset 101.
        assert_eq!(st.handle(3, 101, None, event("b", 1, true).as_bytes()).await, None);
        assert_eq!(st.stage.recorded, [(101, 1)]);
        let last = st.stage.absorbed.last().unwrap();
        assert_eq!(last, &vec![(101, "fw".to_string()); 3], "{last:?}");
        assert_eq!(st.partitions[&3].exceptions_version, 1);
    }
}
