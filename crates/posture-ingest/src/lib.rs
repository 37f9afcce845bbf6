//! # posture-ingest
//!
//! The ingest stage: an rdkafka consumer in a consumer group, one
//! [`Engine`] per assigned partition (device state lives with its partition,
//! since events are keyed by device), and a batch loop:
//!
//! ```text
//! recv ─► decode ─► Engine::apply (lineage = partition, offset) ─► Stage::absorb
//!                                                     │
//!            every `batch_rows` rows or `batch_interval` ─► Stage::flush (awaited)
//!                                                     │
//!                                   commit offsets of everything flushed
//! ```
//!
//! Offsets are committed only after every output derived from them has been
//! durably written ([`Stage::flush`] returned `Ok`). While a flush retries (a
//! slow or down sink), nothing is consumed, so memory stays bounded by one
//! batch: backpressure, not buffering. The guarantee here is at-least-once;
//! exactly-once effect (state restore and suppression of replayed output) is
//! built on the lineage every row carries.

pub mod alerts;
pub mod assignment;
pub mod emit;
pub mod topics;

use assignment::{AssignmentWatch, Verdict};
use posture_core::exception::Exception;
use posture_core::{Catalog, ConfigChange, Engine, EngineConfig, Output, Rejected, SourcePos};
use posture_metrics::{Metrics, Readiness};
use posture_stage::{
    sync_exceptions, DeadLetter, Decode, ExceptionSet, MemoryOnly, Skipped, Stage, StateStore, Undecodable, STATE_RETRY,
};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where and how to consume.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// Kafka bootstrap servers, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    /// Consumer group id; instances in one group split the partitions.
    pub group_id: String,
    /// Input topic (SPEC default `posture.config-changes`).
    pub topic: String,
    /// Flush when a batch holds this many rows.
    pub batch_rows: usize,
    /// Flush at least this often when anything is pending.
    pub batch_interval: Duration,
    /// Extra librdkafka properties (e.g. `security.protocol`); secrets come
    /// from the environment, never from argv.
    pub extra: Vec<(String, String)>,
    /// With a durable [`StateStore`]: snapshot a partition's engine at
    /// least this often (when it has applied anything since), then commit
    /// its offset. A restart replays at most this much input.
    pub snapshot_interval: Duration,
    /// ... or after this many records of the partition.
    pub snapshot_records: u64,
    /// Holding no partition for longer than this (after the start or a revocation) is reported:
    /// a warning, `/readyz` failing, the metrics of [`Metrics::set_assignment`]. Zero: never.
    pub assignment_timeout: Duration,
    /// Whether such a stall also makes the instance leave and re-join its group (at doubling
    /// intervals), which clears a group stuck on a member that died without leaving.
    pub rejoin_unassigned: bool,
}

impl IngestConfig {
    /// Defaults: 100,000 rows or 1 s per batch.
    pub fn new(brokers: impl Into<String>, group_id: impl Into<String>, topic: impl Into<String>) -> IngestConfig {
        IngestConfig {
            brokers: brokers.into(),
            group_id: group_id.into(),
            topic: topic.into(),
            batch_rows: 100_000,
            batch_interval: Duration::from_secs(1),
            extra: Vec::new(),
            snapshot_interval: Duration::from_secs(30),
            snapshot_records: 1_000_000,
            assignment_timeout: Duration::from_secs(30),
            rejoin_unassigned: true,
        }
    }
}

/// Counters of one ingest run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestStats {
    pub records: u64,
    pub applied: u64,
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
    pub flushes: u64,
    pub rows_flushed: u64,
    /// Time spent waiting for flushes (consumption waits meanwhile), µs.
    pub flush_micros: u64,
    /// Errors from the consumer (retried, not fatal).
    pub consumer_errors: u64,
    /// Exceptions an engine refused (logged; see [`ExceptionSet`]).
    pub exception_errors: u64,
}

/// Errors that stop ingestion.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("kafka consumer for topic {topic:?} at {brokers}: {source}")]
    Kafka {
        topic: String,
        brokers: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("the outputs could not be written (after their retries): {0}")]
    Sink(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("state of partition {partition}: {detail}")]
    State { partition: i32, detail: String },
}

/// The consumer's context: notes revoked partitions, which the loop drops
/// before it writes anything more (the callback runs inside `recv`).
#[derive(Default)]
pub struct IngestContext {
    revoked: std::sync::Mutex<Vec<i32>>,
    metrics: std::sync::OnceLock<Arc<Metrics>>,
}

impl rdkafka::ClientContext for IngestContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): the
    /// consumer lag of each assigned partition.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(m) = self.metrics.get() else {
            return;
        };
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                if partition >= 0 && p.consumer_lag >= 0 {
                    m.set_consumer_lag(topic, partition, p.consumer_lag);
                }
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for IngestContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        if let rdkafka::consumer::Rebalance::Revoke(tpl) = rebalance {
            let mut r = self.revoked.lock().expect("not poisoned");
            r.extend(tpl.elements().iter().map(|e| e.partition()));
        }
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        if let rdkafka::consumer::Rebalance::Assign(tpl) = rebalance {
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            if partitions.is_empty() {
                tracing::info!("the consumer group assigned no partition to this instance");
            } else {
                tracing::info!("the consumer group assigned partitions {partitions:?}");
            }
        }
    }
}

/// One assigned partition: its engine and where it is in the input.
struct PartitionState {
    engine: Engine,
    /// The offset of the next record to apply (everything before it is in
    /// the engine).
    next_offset: i64,
    /// After a seek: only this offset is accepted next (records fetched
    /// before the seek are dropped).
    awaiting: Option<i64>,
    /// The offset last committed.
    committed: i64,
    /// Records applied (or skipped as unusable) since the last snapshot.
    since_snapshot: u64,
    last_snapshot: Instant,
    /// The [`ExceptionSet`] version last applied to the engine (0: none).
    exceptions_version: u64,
    /// Exception sets recorded at or after the restored state's offset, to take
    /// again right before their records (see [`Stage::recorded_exceptions`]).
    recorded: std::collections::VecDeque<(i64, Vec<Exception>)>,
}

/// Everything but the consumer, so a borrowed message and the state can be
/// used at once.
struct State<S, D, St> {
    catalog: Arc<Catalog>,
    engine_cfg: EngineConfig,
    stage: S,
    decode: D,
    store: St,
    partitions: BTreeMap<i32, PartitionState>,
    out: Output,
    stats: IngestStats,
    progress: Arc<std::sync::atomic::AtomicU64>,
    holds_partition_0: Arc<std::sync::atomic::AtomicBool>,
    metrics: Option<Arc<Metrics>>,
    /// Kafka append times (ms) of the records whose output is pending: the
    /// freshness of each once it is written.
    pending_ts: Vec<i64>,
    exceptions: Option<Arc<ExceptionSet>>,
    /// When the first and the last record arrived, and when rows were last
    /// written.
    first_record: Option<Instant>,
    last_record: Option<Instant>,
    last_write: Option<Instant>,
    /// How long the last write waited after the last record before it
    /// started (a final partial batch waits for the batch interval).
    write_gap: Duration,
    /// The event every record is decoded into (no allocation per record).
    scratch: ConfigChange,
}

/// The consume-evaluate-flush loop.
pub struct Ingest<S: Stage, D, St: StateStore = MemoryOnly> {
    cfg: IngestConfig,
    consumer: StreamConsumer<IngestContext>,
    st: State<S, D, St>,
    last_flush: Instant,
    /// Whether partitions are held, and what to do when none are for long.
    watch: AssignmentWatch,
    /// Flipped to not ready while no partition is held for too long.
    ready: Option<Arc<Readiness>>,
}

impl<S: Stage, D: Decode> Ingest<S, D, MemoryOnly> {
    /// Creates the consumer (subscribed to the topic) and the loop, with
    /// engines in memory only (see [`Ingest::with_state_store`]).
    pub fn new(
        cfg: IngestConfig,
        catalog: Arc<Catalog>,
        engine_cfg: EngineConfig,
        stage: S,
        decode: D,
    ) -> Result<Self, IngestError> {
        let err = |source| IngestError::Kafka {
            topic: cfg.topic.clone(),
            brokers: cfg.brokers.clone(),
            source: Box::new(source),
        };
        let defaults = [
            ("group.id", cfg.group_id.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
        ];
        let consumer: StreamConsumer<IngestContext> = topics::client_config(&cfg.brokers, &defaults, &cfg.extra)
            .create_with_context(IngestContext::default())
            .map_err(err)?;
        consumer.subscribe(&[&cfg.topic]).map_err(err)?;
        Ok(Ingest {
            watch: AssignmentWatch::new(Instant::now(), cfg.assignment_timeout, cfg.rejoin_unassigned),
            ready: None,
            cfg,
            consumer,
            st: State {
                catalog,
                engine_cfg,
                stage,
                decode,
                store: MemoryOnly,
                partitions: BTreeMap::new(),
                out: Output::default(),
                stats: IngestStats::default(),
                progress: Arc::default(),
                holds_partition_0: Arc::default(),
                metrics: None,
                pending_ts: Vec::new(),
                exceptions: None,
                first_record: None,
                last_record: None,
                last_write: None,
                write_gap: Duration::ZERO,
                scratch: ConfigChange {
                    event_id: String::new(),
                    tenant_id: String::new(),
                    device_id: String::new(),
                    observed_at: 0,
                    sequence: 0,
                    source: posture_core::ConfigSource::Agent,
                    kind: posture_core::ChangeKind::Upsert,
                    device: None,
                    settings: Vec::new(),
                },
            },
            last_flush: Instant::now(),
        })
    }

    /// Keeps partition state in `store`: each partition is restored from
    /// its latest snapshot before its first record is applied, snapshotted
    /// every `snapshot_interval` / `snapshot_records`, and its offset is
    /// committed only with a snapshot.
    pub fn with_state_store<St: StateStore>(self, store: St) -> Ingest<S, D, St> {
        let st = self.st;
        Ingest {
            cfg: self.cfg,
            consumer: self.consumer,
            st: State {
                catalog: st.catalog,
                engine_cfg: st.engine_cfg,
                stage: st.stage,
                decode: st.decode,
                store,
                partitions: st.partitions,
                out: st.out,
                stats: st.stats,
                progress: st.progress,
                holds_partition_0: st.holds_partition_0,
                metrics: st.metrics,
                pending_ts: st.pending_ts,
                exceptions: st.exceptions,
                first_record: st.first_record,
                last_record: st.last_record,
                last_write: st.last_write,
                write_gap: st.write_gap,
                scratch: st.scratch,
            },
            last_flush: self.last_flush,
            watch: self.watch,
            ready: self.ready,
        }
    }
}

impl<S: Stage, D: Decode, St: StateStore> Ingest<S, D, St> {
    /// Reports to `metrics` (Prometheus): records, transitions, restores,
    /// freshness, devices and state bytes, consumer lag. The consumer must
    /// have `statistics.interval.ms` set (in [`IngestConfig::extra`]) for
    /// the lag.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        let _ = self.consumer.context().metrics.set(metrics.clone());
        self.st.metrics = Some(metrics);
        self
    }

    /// Fails `ready` (with the reason) while the instance holds no partition for longer than
    /// [`IngestConfig::assignment_timeout`], and makes it ready again once it holds some.
    pub fn with_readiness(mut self, ready: Arc<Readiness>) -> Self {
        self.ready = Some(ready);
        self
    }

    /// Applies the exceptions of `set` to every partition's engine, and
    /// later changes of the set (added exceptions, new expiries) without a
    /// restart: each engine catches up right before its next record, and
    /// the transitions this causes carry that record's position (so a
    /// replay after a crash writes nothing twice).
    pub fn with_exceptions(mut self, set: Arc<ExceptionSet>) -> Self {
        self.st.exceptions = Some(set);
        self
    }

    /// The busy span so far: from the first record received to the end of
    /// the last write of rows, less the time that write waited after the
    /// last record (a final partial batch waits for the batch interval);
    /// `None` before both happened. Throughput over it excludes time spent
    /// waiting for records.
    pub fn busy_span(&self) -> Option<Duration> {
        let span = self.st.last_write?.saturating_duration_since(self.st.first_record?);
        Some(span.saturating_sub(self.st.write_gap))
    }

    /// Counters so far.
    pub fn stats(&self) -> &IngestStats {
        &self.st.stats
    }

    /// A counter of records consumed, readable while [`Ingest::run_until`]
    /// runs (e.g. by its stop future, to stop when the topic is drained).
    pub fn progress(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.st.progress.clone()
    }

    /// Whether this instance holds partition 0 of the input topic (updated
    /// at every flush): the one instance of a group that runs group-wide
    /// duties such as score-drop alerts.
    pub fn holds_partition_0(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.st.holds_partition_0.clone()
    }

    /// The stage, e.g. to inspect what it wrote.
    pub fn stage_mut(&mut self) -> &mut S {
        &mut self.st.stage
    }

    /// The engine of a partition, if assigned and seen.
    pub fn engine(&self, partition: i32) -> Option<&Engine> {
        self.st.partitions.get(&partition).map(|p| &p.engine)
    }

    /// The partitions this instance currently has engines for, and their
    /// device counts.
    pub fn partitions(&self) -> Vec<(i32, usize)> {
        self.st
            .partitions
            .iter()
            .map(|(&p, s)| (p, s.engine.device_count()))
            .collect()
    }

    fn kafka_err(&self, source: KafkaError) -> IngestError {
        IngestError::Kafka {
            topic: self.cfg.topic.clone(),
            brokers: self.cfg.brokers.clone(),
            source: Box::new(source),
        }
    }

    /// Consumes until `stop` resolves, then flushes, snapshots and commits
    /// what is pending. `on_skip` sees every record that was not applied.
    pub async fn run_until(
        &mut self,
        stop: impl Future<Output = ()>,
        mut on_skip: impl FnMut(i32, i64, &Skipped),
    ) -> Result<(), IngestError> {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(self.cfg.batch_interval.min(Duration::from_millis(200)));
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                msg = self.consumer.recv() => {
                    // A revocation is noted by the rebalance callback inside recv; act on it
                    // before anything more is written.
                    drop_revoked(&self.consumer, &mut self.st);
                    // Consumer errors (a topic not yet known, a broker restart) are
                    // retried: counted, reported at a bounded rate, and polled again.
                    let msg = match msg {
                        Ok(m) => m,
                        Err(e) => {
                            self.st.stats.consumer_errors += 1;
                            if self.st.stats.consumer_errors <= 10 || self.st.stats.consumer_errors.is_power_of_two() {
                                tracing::warn!(
                                    "consumer error #{} on {} at {} (retrying): {e}",
                                    self.st.stats.consumer_errors, self.cfg.topic, self.cfg.brokers
                                );
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    let (partition, offset) = (msg.partition(), msg.offset());
                    self.st.stats.records += 1;
                    let now = Instant::now();
                    self.st.first_record.get_or_insert(now);
                    self.st.last_record = Some(now);
                    self.st.progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Some(m) = &self.st.metrics {
                        m.events_consumed(1);
                        if let Some(ts) = msg.timestamp().to_millis() {
                            self.st.pending_ts.push(ts);
                        }
                    }
                    if !self.st.partitions.contains_key(&partition) {
                        // Copy out what the restore needs; the message borrows the consumer.
                        let (key, payload) = (msg.key().map(<[u8]>::to_vec), msg.payload().map(<[u8]>::to_vec));
                        drop(msg);
                        self.start_partition(partition, offset).await?;
                        if let Some(s) = self.st.handle(partition, offset, key.as_deref(), payload.as_deref().unwrap_or(&[])).await {
                            on_skip(partition, offset, &s);
                        }
                    } else {
                        let skipped = self.st.handle(partition, offset, msg.key(), msg.payload().unwrap_or(&[])).await;
                        if let Some(s) = skipped {
                            on_skip(partition, offset, &s);
                        }
                        drop(msg);
                    }
                    if self.st.stage.pending_rows() >= self.cfg.batch_rows {
                        self.flush(false).await?;
                    }
                }
                _ = tick.tick() => {
                    self.check_assignment();
                    if self.last_flush.elapsed() >= self.cfg.batch_interval {
                        self.flush(false).await?;
                    }
                }
            }
        }
        self.flush(true).await
    }

    /// Feeds the assignment watch ([`assignment`]) and acts on its verdict: metrics, readiness,
    /// a warning that names the group and the likely causes, a re-join.
    fn check_assignment(&mut self) {
        let now = Instant::now();
        let assigned = self.consumer.assignment().map(|a| a.count()).unwrap_or(0);
        let verdict = self.watch.observe(now, assigned);
        if let Some(m) = &self.st.metrics {
            m.set_assignment(assigned, self.watch.unassigned_for(now));
        }
        match verdict {
            Verdict::Assigned { after_stall: Some(d) } => {
                tracing::info!(
                    "{assigned} partition(s) of {} assigned (group {}) after {} s without any",
                    self.cfg.topic,
                    self.cfg.group_id,
                    d.as_secs()
                );
                if let Some(r) = &self.ready {
                    r.set_ready();
                }
            }
            Verdict::Assigned { after_stall: None } | Verdict::Waiting { .. } => {}
            Verdict::Stalled {
                unassigned_for,
                attempt,
                rejoin,
                next_in,
            } => {
                let reason = format!(
                    "no partition of {} assigned for {} s (consumer group {} at {})",
                    self.cfg.topic,
                    unassigned_for.as_secs(),
                    self.cfg.group_id,
                    self.cfg.brokers
                );
                let action = if rejoin {
                    format!(
                        "leaving and re-joining the group (attempt {attempt}; the next in {} s if this goes on)",
                        next_in.as_secs()
                    )
                } else {
                    format!(
                        "not re-joining (--kafka-rejoin-unassigned false); reported again in {} s",
                        next_in.as_secs()
                    )
                };
                tracing::warn!(
                    "{reason}. Likely causes: the group still lists a member that died without leaving (kill -9, a lost \
                     host) and the broker has not evicted it (Tansu 0.6 can keep such a group stuck with an empty \
                     assignment); or the group has more members than the topic has partitions. {action}"
                );
                if let Some(r) = &self.ready {
                    r.set_not_ready(reason);
                }
                if rejoin {
                    if let Some(m) = &self.st.metrics {
                        m.group_rejoined();
                    }
                    // Unsubscribing leaves the group (LeaveGroup); subscribing joins it again.
                    self.consumer.unsubscribe();
                    if let Err(e) = self.consumer.subscribe(&[&self.cfg.topic]) {
                        tracing::warn!(
                            "re-subscribing to {} failed (retried at the next attempt): {e}",
                            self.cfg.topic
                        );
                    }
                }
            }
        }
    }

    /// Tells the stage how many partitions the input topic has (asked when a partition starts,
    /// which is when the assignment, and so possibly the count, changes). Best effort: a failed
    /// metadata request leaves the last count.
    fn learn_topic_partitions(&mut self) {
        match self
            .consumer
            .fetch_metadata(Some(&self.cfg.topic), Duration::from_secs(5))
        {
            Ok(md) => {
                if let Some(t) = md.topics().iter().find(|t| t.name() == self.cfg.topic) {
                    self.st.stage.topic_partitions(t.partitions().len() as u32);
                }
            }
            Err(e) => tracing::warn!("cannot read the partition count of {}: {e}", self.cfg.topic),
        }
    }

    /// Sets up a partition seen for the first time: restores its engine from
    /// the state store (retrying while the store is unreachable) and, when
    /// the consumer is not where the engine left off, seeks there.
    #[tracing::instrument(name = "assign", skip(self), fields(topic = %self.cfg.topic))]
    async fn start_partition(&mut self, partition: i32, first_offset: i64) -> Result<(), IngestError> {
        let state_err = |detail: String| IngestError::State { partition, detail };
        let fresh = |engine, next_offset| PartitionState {
            engine,
            next_offset,
            awaiting: None,
            committed: -1,
            since_snapshot: 0,
            last_snapshot: Instant::now(),
            exceptions_version: 0,
            recorded: std::collections::VecDeque::new(),
        };
        if !self.st.store.durable() {
            // No state to restore, but the outputs are prepared all the same (the rollup's cut:
            // records it already sums are not summed again).
            self.st
                .stage
                .prepare_partition(partition)
                .await
                .map_err(|e| state_err(format!("preparing the outputs: {e}")))?;
            let engine = Engine::new(self.st.catalog.clone(), self.st.engine_cfg.clone());
            self.st.partitions.insert(partition, fresh(engine, first_offset));
            self.learn_topic_partitions();
            return Ok(());
        }
        let started = Instant::now();
        let mut attempt = 0;
        let loaded = loop {
            match self.st.store.load(&self.cfg.topic, partition).await {
                Ok(l) => break l,
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(
                        "partition {partition}: cannot load its snapshot (attempt {attempt}), retrying: {e}"
                    );
                    tokio::time::sleep(STATE_RETRY.backoff(attempt)).await;
                }
            }
        };
        let (engine, start) = match loaded {
            Some((offset, bytes)) => {
                let engine = Engine::restore(self.st.catalog.clone(), self.st.engine_cfg.clone(), &bytes)
                    .map_err(|e| state_err(format!("the snapshot at offset {offset} cannot be restored: {e}")))?;
                self.st.stats.restored += 1;
                if let Some(m) = &self.st.metrics {
                    m.observe_restore(started.elapsed());
                }
                tracing::info!(
                    "partition {partition}: restored {} devices from the snapshot at offset {offset} ({} bytes) in {} ms; first record at offset {first_offset}",
                    engine.device_count(),
                    bytes.len(),
                    started.elapsed().as_millis()
                );
                (engine, offset)
            }
            None => {
                let (low, _) = self
                    .consumer
                    .fetch_watermarks(&self.cfg.topic, partition, Duration::from_secs(10))
                    .map_err(|e| self.kafka_err(e))?;
                self.st.stats.started_empty += 1;
                tracing::info!("partition {partition}: no snapshot, starting from its earliest offset {low}");
                (Engine::new(self.st.catalog.clone(), self.st.engine_cfg.clone()), low)
            }
        };
        self.st
            .stage
            .prepare_partition(partition)
            .await
            .map_err(|e| state_err(format!("preparing the outputs: {e}")))?;
        self.learn_topic_partitions();
        let mut ps = fresh(engine, start);
        ps.committed = start;
        ps.recorded = self
            .st
            .stage
            .recorded_exceptions(partition)
            .into_iter()
            .filter(|(o, _)| *o >= start)
            .collect();
        if first_offset > start {
            // The consumer starts after the engine's state (e.g. no snapshot, but committed
            // offsets): go back so nothing in between is missed.
            tracing::info!(
                "partition {partition}: the consumer is at offset {first_offset}, after the state (offset {start}): seeking back"
            );
            self.consumer
                .seek(
                    &self.cfg.topic,
                    partition,
                    Offset::Offset(start),
                    Duration::from_secs(10),
                )
                .map_err(|e| self.kafka_err(e))?;
            ps.awaiting = Some(start);
        }
        self.st.partitions.insert(partition, ps);
        Ok(())
    }

    /// Writes pending rows; then, with a durable store, snapshots the
    /// partitions that are due (all of them when `all`) and commits their
    /// offsets; without, commits every partition's offset.
    #[tracing::instrument(name = "batch", skip(self), fields(rows = self.st.stage.pending_rows()))]
    pub async fn flush(&mut self, all: bool) -> Result<(), IngestError> {
        drop_revoked(&self.consumer, &mut self.st);
        self.last_flush = Instant::now();
        for (&partition, p) in &self.st.partitions {
            self.st.stage.settle(partition, &p.engine);
            if p.awaiting.is_none() {
                self.st.stage.progress(partition, p.next_offset, p.engine.clock());
            }
        }
        let rows = self.st.stage.pending_rows();
        if rows > 0 {
            let started = Instant::now();
            self.st
                .stage
                .flush()
                .await
                .map_err(|e| IngestError::Sink(Box::new(e)))?;
            self.st.stats.flush_micros += started.elapsed().as_micros() as u64;
            self.st.write_gap = self
                .st
                .last_record
                .map_or(Duration::ZERO, |r| started.saturating_duration_since(r));
            self.st.stats.flushes += 1;
            self.st.stats.rows_flushed += rows as u64;
            self.st.last_write = Some(Instant::now());
        }
        if let Some(m) = &self.st.metrics {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            m.observe_freshness_all(
                self.st
                    .pending_ts
                    .drain(..)
                    .map(|ts| Duration::from_millis((now - ts).max(0) as u64)),
            );
            m.flushed_now();
            let devices: usize = self.st.partitions.values().map(|p| p.engine.device_count()).sum();
            let bytes: f64 = self
                .st
                .partitions
                .values()
                .map(|p| p.engine.state_bytes_per_device() * p.engine.device_count() as f64)
                .sum();
            m.set_devices(devices as u64);
            m.set_state_bytes(bytes as u64);
        }
        let durable = self.st.store.durable();
        let mut tpl = TopicPartitionList::new();
        let mut buf = Vec::new();
        for (&partition, p) in self.st.partitions.iter_mut() {
            if p.awaiting.is_some() || p.next_offset <= p.committed {
                continue;
            }
            if durable {
                let due = all
                    || p.since_snapshot >= self.cfg.snapshot_records
                    || p.last_snapshot.elapsed() >= self.cfg.snapshot_interval;
                if !due || p.since_snapshot == 0 {
                    continue;
                }
                buf.clear();
                p.engine.snapshot(&mut buf);
                let mut attempt = 0;
                while let Err(e) = self
                    .st
                    .store
                    .save(&self.cfg.topic, partition, p.next_offset, &buf)
                    .await
                {
                    attempt += 1;
                    tracing::warn!(
                        "partition {partition}: cannot save its snapshot (attempt {attempt}), retrying: {e}"
                    );
                    tokio::time::sleep(STATE_RETRY.backoff(attempt)).await;
                }
                self.st.stats.snapshots += 1;
                tracing::debug!(
                    partition,
                    next_offset = p.next_offset,
                    bytes = buf.len(),
                    "snapshot saved"
                );
                p.since_snapshot = 0;
                p.last_snapshot = Instant::now();
            }
            tpl.add_partition_offset(&self.cfg.topic, partition, Offset::Offset(p.next_offset))
                .map_err(|source| IngestError::Kafka {
                    topic: self.cfg.topic.clone(),
                    brokers: self.cfg.brokers.clone(),
                    source: Box::new(source),
                })?;
            p.committed = p.next_offset;
        }
        if let Ok(a) = self.consumer.assignment() {
            let holds = a.elements_for_topic(&self.cfg.topic).iter().any(|e| e.partition() == 0);
            self.st
                .holds_partition_0
                .store(holds, std::sync::atomic::Ordering::Relaxed);
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
                // Not fatal: the outputs are written and, with durable state, the snapshot
                // holds the position; the offsets go with the next commit. Without durable
                // state a restart before then replays (at-least-once).
                self.st.stats.consumer_errors += 1;
                tracing::warn!("committing offsets failed (the next flush commits again): {e}");
                for e in tpl.elements() {
                    if let Some(p) = self.st.partitions.get_mut(&e.partition()) {
                        p.committed = -1;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Drops the engines and unwritten output of revoked partitions.
fn drop_revoked<S: Stage, D, St>(consumer: &StreamConsumer<IngestContext>, st: &mut State<S, D, St>) {
    let revoked: Vec<i32> = std::mem::take(&mut *consumer.context().revoked.lock().expect("not poisoned"));
    for p in revoked {
        let _span = tracing::info_span!("revoke", partition = p).entered();
        if let Some(state) = st.partitions.remove(&p) {
            st.stage.discard_partition(p);
            st.stats.revoked += 1;
            tracing::info!(
                "partition {p}: revoked; its unwritten output after offset {} is discarded (its next owner rebuilds it from the last snapshot)",
                state.committed
            );
        }
    }
}

impl<S: Stage, D: Decode, St: StateStore> State<S, D, St> {
    /// Applies one record of an assigned partition (started by
    /// `start_partition`).
    async fn handle(&mut self, partition: i32, offset: i64, key: Option<&[u8]>, payload: &[u8]) -> Option<Skipped> {
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
                Ok(()) => m.events_applied(1),
                Err(Rejected::Stale { .. }) => m.events_stale(1),
                Err(Rejected::Invalid(_)) => m.dead_lettered("invalid_event"),
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
                        self.stage.dead_letter(&dead("invalid_event", text.as_str()));
                        Skipped::Invalid(text)
                    }
                })
            }
        }
    }
}
