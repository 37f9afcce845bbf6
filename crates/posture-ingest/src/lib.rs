//! # posture-ingest
//!
//! The ingest stage: an rdkafka consumer in a consumer group, one
//! [`Engine`] per assigned partition (device state lives with its partition,
//! since events are keyed by device), and a batch loop:
//!
//! ```text
//! recv ─► posture_stage::Step::handle: decode ─► Engine::apply (lineage = partition, offset)
//!                                                 ─► Stage::absorb
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

#![warn(missing_docs)]

pub mod alerts;
pub mod assignment;
mod config;
mod context;
pub mod emit;
mod partition;
mod state;
pub mod topics;

pub use config::IngestConfig;
pub use context::IngestContext;
use partition::drop_revoked;
pub use posture_stage::IngestStats;
use state::State;

use assignment::{AssignmentWatch, Verdict};
use posture_core::{Catalog, Engine, EngineConfig};
use posture_metrics::{Metrics, Readiness};
use posture_stage::{DeadLetter, Decode, ExceptionSet, MemoryOnly, Skipped, Stage, StateStore, Step, STATE_RETRY};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors that stop ingestion.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The consumer could not be created or subscribed to the topic, or a call the loop needs
    /// failed: reading a partition's watermarks, seeking it back to its restored state, listing
    /// the offsets to commit. Errors while polling and failed commits are not fatal: they are
    /// counted in [`IngestStats::consumer_errors`] and retried.
    #[error("kafka consumer for topic {topic:?} at {brokers}: {source}")]
    Kafka {
        /// The input topic.
        topic: String,
        /// The Kafka bootstrap servers.
        brokers: String,
        /// What librdkafka reported.
        #[source]
        source: Box<KafkaError>,
    },
    /// A [`Stage::flush`] failed after the stage's own retries. The batch's offsets are not
    /// committed, so the next run consumes its records again.
    #[error("the outputs could not be written (after their retries): {0}")]
    Sink(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A newly assigned partition could not be started: its snapshot does not restore, or the
    /// stage could not prepare its outputs. (Loading the snapshot from an unreachable state
    /// store is retried instead.)
    #[error("state of partition {partition}: {detail}")]
    State {
        /// The partition of the input topic.
        partition: i32,
        /// What went wrong.
        detail: String,
    },
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
                step: Step::new(stage, decode),
                store: MemoryOnly,
                progress: Arc::default(),
                flushed: Arc::default(),
                holds_partition_0: Arc::default(),
                metrics: None,
                pending_ts: Vec::new(),
                first_record: None,
                last_record: None,
                last_write: None,
                write_gap: Duration::ZERO,
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
                step: st.step,
                store,
                progress: st.progress,
                flushed: st.flushed,
                holds_partition_0: st.holds_partition_0,
                metrics: st.metrics,
                pending_ts: st.pending_ts,
                first_record: st.first_record,
                last_record: st.last_record,
                last_write: st.last_write,
                write_gap: st.write_gap,
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
        self.st.step.metrics = Some(metrics.clone());
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
        self.st.step.exceptions = Some(set);
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
        &self.st.step.stats
    }

    /// A counter of records consumed, readable while [`Ingest::run_until`]
    /// runs (e.g. by its stop future, to stop when the topic is drained).
    pub fn progress(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.st.progress.clone()
    }

    /// A counter of flushes that wrote rows, readable while [`Ingest::run_until`] runs: with
    /// [`Ingest::progress`], what a stop future needs to tell an idle input from a pipeline
    /// waiting on a slow or down sink (no record arrives then either, but a flush completes when
    /// the sink is back).
    pub fn flushes(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.st.flushed.clone()
    }

    /// Whether this instance holds partition 0 of the input topic (updated
    /// at every flush): the one instance of a group that runs group-wide
    /// duties such as score-drop alerts.
    pub fn holds_partition_0(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.st.holds_partition_0.clone()
    }

    /// The stage, e.g. to inspect what it wrote.
    pub fn stage_mut(&mut self) -> &mut S {
        &mut self.st.step.stage
    }

    /// The engine of a partition, if assigned and seen.
    pub fn engine(&self, partition: i32) -> Option<&Engine> {
        self.st.step.partitions.get(&partition).map(|p| &p.engine)
    }

    /// The partitions this instance currently has engines for, and their
    /// device counts.
    pub fn partitions(&self) -> Vec<(i32, usize)> {
        self.st
            .step
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
                            self.st.step.stats.consumer_errors += 1;
                            if self.st.step.stats.consumer_errors <= 10 || self.st.step.stats.consumer_errors.is_power_of_two() {
                                tracing::warn!(
                                    "consumer error #{} on {} at {} (retrying): {e}",
                                    self.st.step.stats.consumer_errors, self.cfg.topic, self.cfg.brokers
                                );
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    let (partition, offset) = (msg.partition(), msg.offset());
                    self.st.step.stats.records += 1;
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
                    if !self.st.step.partitions.contains_key(&partition) {
                        // Copy out what the restore needs; the message borrows the consumer.
                        let (key, payload) = (msg.key().map(<[u8]>::to_vec), msg.payload().map(<[u8]>::to_vec));
                        drop(msg);
                        self.start_partition(partition, offset).await?;
                        if let Some(s) = self.st.step.handle(partition, offset, key.as_deref(), payload.as_deref().unwrap_or(&[])).await {
                            on_skip(partition, offset, &s);
                        }
                    } else {
                        let skipped = self.st.step.handle(partition, offset, msg.key(), msg.payload().unwrap_or(&[])).await;
                        if let Some(s) = skipped {
                            on_skip(partition, offset, &s);
                        }
                        drop(msg);
                    }
                    if self.st.step.stage.pending_rows() >= self.cfg.batch_rows {
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

    /// Writes pending rows; then, with a durable store, snapshots the
    /// partitions that are due (all of them when `all`) and commits their
    /// offsets; without, commits every partition's offset.
    #[tracing::instrument(name = "batch", skip(self), fields(rows = self.st.step.stage.pending_rows()))]
    pub async fn flush(&mut self, all: bool) -> Result<(), IngestError> {
        drop_revoked(&self.consumer, &mut self.st);
        self.last_flush = Instant::now();
        for (&partition, p) in &self.st.step.partitions {
            self.st.step.stage.settle(partition, &p.engine);
            if p.awaiting.is_none() {
                self.st.step.stage.progress(partition, p.next_offset, p.engine.clock());
            }
        }
        let rows = self.st.step.stage.pending_rows();
        if rows > 0 {
            let started = Instant::now();
            self.st
                .step
                .stage
                .flush()
                .await
                .map_err(|e| IngestError::Sink(Box::new(e)))?;
            self.st.step.stats.flush_micros += started.elapsed().as_micros() as u64;
            self.st.write_gap = self
                .st
                .last_record
                .map_or(Duration::ZERO, |r| started.saturating_duration_since(r));
            self.st.step.stats.flushes += 1;
            self.st.step.stats.rows_flushed += rows as u64;
            self.st.flushed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
            let devices: usize = self.st.step.partitions.values().map(|p| p.engine.device_count()).sum();
            let bytes: f64 = self
                .st
                .step
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
        for (&partition, p) in self.st.step.partitions.iter_mut() {
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
                self.st.step.stats.snapshots += 1;
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
                self.st.step.stats.consumer_errors += 1;
                tracing::warn!("committing offsets failed (the next flush commits again): {e}");
                for e in tpl.elements() {
                    if let Some(p) = self.st.step.partitions.get_mut(&e.partition()) {
                        p.committed = -1;
                    }
                }
            }
        }
        Ok(())
    }
}
