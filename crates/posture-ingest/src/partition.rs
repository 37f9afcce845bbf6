//! A partition's life in this instance: started (its engine restored from the state store, the
//! consumer moved to where the engine left off, the stages prepared) and dropped when the group
//! revokes it (its unwritten output discarded).

use crate::context::IngestContext;
use crate::state::State;
use crate::{Ingest, IngestError};
use posture_core::Engine;
use posture_stage::{Decode, PartitionState, Stage, StateStore, STATE_RETRY};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Offset;
use std::time::{Duration, Instant};

impl<S: Stage, D: Decode, St: StateStore> Ingest<S, D, St> {
    /// Tells the stage how many partitions the input topic has (asked when a partition starts,
    /// which is when the assignment, and so possibly the count, changes). Best effort: a failed
    /// metadata request leaves the last count.
    pub(crate) fn learn_topic_partitions(&mut self) {
        match self
            .consumer
            .fetch_metadata(Some(&self.cfg.topic), Duration::from_secs(5))
        {
            Ok(md) => {
                if let Some(t) = md.topics().iter().find(|t| t.name() == self.cfg.topic) {
                    self.st.step.stage.topic_partitions(t.partitions().len() as u32);
                }
            }
            Err(e) => tracing::warn!("cannot read the partition count of {}: {e}", self.cfg.topic),
        }
    }

    /// Sets up a partition seen for the first time: restores its engine from
    /// the state store (retrying while the store is unreachable) and, when
    /// the consumer is not where the engine left off, seeks there.
    #[tracing::instrument(name = "assign", skip(self), fields(topic = %self.cfg.topic))]
    pub(crate) async fn start_partition(&mut self, partition: i32, first_offset: i64) -> Result<(), IngestError> {
        let state_err = |detail: String| IngestError::State { partition, detail };
        if !self.st.store.durable() {
            // No state to restore, but the outputs are prepared all the same (the rollup's cut:
            // records it already sums are not summed again).
            self.st
                .step
                .stage
                .prepare_partition(partition)
                .await
                .map_err(|e| state_err(format!("preparing the outputs: {e}")))?;
            let engine = Engine::new(self.st.catalog.clone(), self.st.engine_cfg.clone());
            self.st
                .step
                .partitions
                .insert(partition, PartitionState::new(engine, first_offset));
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
                self.st.step.stats.restored += 1;
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
                self.st.step.stats.started_empty += 1;
                tracing::info!("partition {partition}: no snapshot, starting from its earliest offset {low}");
                (Engine::new(self.st.catalog.clone(), self.st.engine_cfg.clone()), low)
            }
        };
        self.st
            .step
            .stage
            .prepare_partition(partition)
            .await
            .map_err(|e| state_err(format!("preparing the outputs: {e}")))?;
        self.learn_topic_partitions();
        let mut ps = PartitionState::new(engine, start);
        ps.committed = start;
        ps.recorded = self
            .st
            .step
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
        self.st.step.partitions.insert(partition, ps);
        Ok(())
    }
}

/// Drops the engines and unwritten output of revoked partitions.
pub(crate) fn drop_revoked<S: Stage, D, St>(consumer: &StreamConsumer<IngestContext>, st: &mut State<S, D, St>) {
    let revoked: Vec<i32> = std::mem::take(&mut *consumer.context().revoked.lock().expect("not poisoned"));
    for p in revoked {
        let _span = tracing::info_span!("revoke", partition = p).entered();
        if let Some(state) = st.step.partitions.remove(&p) {
            st.step.stage.discard_partition(p);
            st.step.stats.revoked += 1;
            tracing::info!(
                "partition {p}: revoked; its unwritten output after offset {} is discarded (its next owner rebuilds it from the last snapshot)",
                state.committed
            );
        }
    }
}
