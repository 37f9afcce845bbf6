//! The ClickHouse [`Stage`] of the pipeline: engine output turned into rows ([`crate::rows()`]),
//! batched, and written by [`Sink::write`] at each flush, with replayed rows suppressed by the
//! output watermarks of the [`SnapshotStore`].

use crate::HashMap;
use crate::{rows, Batch, Sink, SinkError, SnapshotStore, Watermarks};
use posture_core::exception::Exception;
use posture_core::{ConfigChange, Engine, Output, SourcePos};
use posture_metrics::Metrics;
use posture_stage::Stage;
use std::convert::Infallible;
use std::sync::Arc;

/// Rows go to a [`Batch`]; a flush writes it with the sink's retries.
///
/// With a [`SnapshotStore`] ([`SinkStage::with_watermarks`]), a partition's
/// output watermarks are read when the partition starts, and rows of
/// replayed records at or below them are dropped: a replay after a restart
/// or a rebalance writes nothing twice.
pub struct SinkStage {
    sink: Sink,
    rows: RowStage,
    store: Option<SnapshotStore>,
    watermarks: HashMap<i32, Watermarks>,
    /// Per partition being prepared: the exception sets recorded, by offset.
    recorded_exceptions: HashMap<i32, Vec<(i64, Vec<Exception>)>>,
    suppressed: u64,
    metrics: Option<Arc<Metrics>>,
    /// Rows written so far, per table.
    written: std::collections::BTreeMap<&'static str, u64>,
}

impl SinkStage {
    /// A stage writing through `sink`.
    pub fn new(sink: Sink) -> SinkStage {
        SinkStage {
            sink,
            rows: RowStage::new(),
            store: None,
            watermarks: HashMap::default(),
            recorded_exceptions: HashMap::default(),
            suppressed: 0,
            metrics: None,
            written: std::collections::BTreeMap::new(),
        }
    }

    /// The rows this stage has written, per ClickHouse table (`score_rollup`: its rollup and cut
    /// rows; `device_state`: one per device per flush, as written).
    pub fn rows_written(&self) -> &std::collections::BTreeMap<&'static str, u64> {
        &self.written
    }

    /// Reports rows per table, batches, their latency, retries and failures.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> SinkStage {
        let m = metrics.clone();
        self.sink = self.sink.with_on_retry(Arc::new(move || m.sink_retry()));
        self.metrics = Some(metrics);
        self
    }

    /// Suppresses replayed rows using the watermarks `store` reads.
    pub fn with_watermarks(mut self, store: SnapshotStore) -> SinkStage {
        self.store = Some(store);
        self
    }

    /// Rows dropped because they were already written.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

impl Stage for SinkStage {
    type Error = SinkError;

    fn observe(&mut self, engine: &Engine, ev: &ConfigChange, source: SourcePos) {
        self.rows.observe(engine, ev, source);
    }

    fn absorb(&mut self, engine: &Engine, out: &Output) {
        let mark = self.rows.batch.mark();
        self.rows.absorb(engine, out);
        if self.watermarks.is_empty() {
            return;
        }
        let w = &self.watermarks;
        self.suppressed += self.rows.batch.suppress_since(mark, |p| w.get(&p).copied()) as u64;
        // Once a partition's replay is past every table's watermark, nothing more is suppressed.
        if let Some(t) = out.transitions.last() {
            let p = t.source.partition;
            if self
                .watermarks
                .get(&p)
                .is_some_and(|w| w.iter().all(|&m| t.source.offset > m))
            {
                self.watermarks.remove(&p);
            }
        }
    }

    async fn prepare_partition(&mut self, partition: i32) -> Result<(), SinkError> {
        // Where the partition's committed rollup ends: replayed records before it are summed
        // there already. Retried like the sink's INSERTs (a ClickHouse blip at assignment).
        let retry = *self.sink.retry();
        let mut attempt = 1;
        let cuts = loop {
            match self.sink.cuts(&[partition]).await {
                Ok(c) => break c,
                Err(e) if attempt < retry.max_attempts.max(1) && crate::sink::is_transient(&e) => {
                    tracing::warn!(partition, attempt, "cannot read the partition's cut yet, retrying: {e}");
                    tokio::time::sleep(retry.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(source) => {
                    return Err(SinkError::Insert {
                        table: "score_rollup",
                        attempts: attempt,
                        rows: 0,
                        source,
                    })
                }
            }
        };
        for (p, c) in cuts {
            self.rows.batch.rollup.set_committed(p, c);
        }
        if let Some(store) = &self.store {
            let w = store.watermarks(partition).await?;
            self.watermarks.insert(partition, w);
            let mut recorded = Vec::new();
            for (offset, json) in store.exception_syncs(partition).await? {
                match serde_json::from_str::<Vec<Exception>>(&json) {
                    Ok(list) => recorded.push((offset, list)),
                    Err(e) => tracing::error!(
                        partition,
                        offset,
                        "a recorded exception set does not parse, ignored: {e}"
                    ),
                }
            }
            self.recorded_exceptions.insert(partition, recorded);
        }
        Ok(())
    }

    fn record_exceptions(&mut self, partition: i32, offset: i64, list: &[Exception]) {
        self.rows.record_exceptions(partition, offset, list);
    }

    fn recorded_exceptions(&mut self, partition: i32) -> Vec<(i64, Vec<Exception>)> {
        self.recorded_exceptions.remove(&partition).unwrap_or_default()
    }

    fn replaying(&self, partition: i32, offset: i64) -> bool {
        self.watermarks
            .get(&partition)
            .is_some_and(|w| w.iter().any(|&m| offset <= m))
            || self.rows.replaying(partition, offset)
    }

    fn topic_partitions(&mut self, n: u32) {
        self.rows.topic_partitions(n);
    }

    fn settle(&mut self, partition: i32, engine: &Engine) {
        self.rows.settle(partition, engine);
    }

    fn progress(&mut self, partition: i32, next_offset: i64, clock_ms: i64) {
        self.rows.progress(partition, next_offset, clock_ms);
    }

    fn discard_partition(&mut self, partition: i32) {
        self.rows.discard_partition(partition);
        self.watermarks.remove(&partition);
        self.recorded_exceptions.remove(&partition);
    }

    fn pending_rows(&self) -> usize {
        self.rows.pending_rows()
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        // `write` removes each table from the batch once it is written, so a
        // failed flush resends only what is left.
        self.rows.batch.coalesce();
        let counts = self.rows.batch.counts();
        let tables = self.rows.batch.table_counts();
        let rollup_before = self.sink.rollup_rows_written();
        let started = std::time::Instant::now();
        let result = self.sink.write(&mut self.rows.batch).await;
        if result.is_ok() {
            for (table, n) in tables {
                *self.written.entry(table).or_default() += n as u64;
            }
            *self.written.entry("score_rollup").or_default() += self.sink.rollup_rows_written() - rollup_before;
        }
        if let Some(m) = &self.metrics {
            match &result {
                Ok(()) => {
                    for (table, n) in crate::LINEAGE_TABLES.iter().zip(counts) {
                        m.sink_rows(table, n as u64);
                    }
                    m.sink_rows("score_rollup", self.sink.rollup_rows_written() - rollup_before);
                    m.sink_batch(started.elapsed());
                }
                Err(_) => m.sink_failure(),
            }
        }
        result
    }
}

/// The rows of the pipeline's output, made and held: the row-making half of [`SinkStage`], which
/// writes them at each flush. Alone it writes nothing: its flush makes the batch's last rows
/// (as [`SinkStage`] does before writing) and drops them, counting them; the evaluator benchmark
/// measures the production rows this way, without ClickHouse.
#[derive(Default)]
pub struct RowStage {
    pub(crate) batch: Batch,
    /// Rows dropped by flushes so far.
    flushed: u64,
}

impl RowStage {
    /// An empty batch.
    pub fn new() -> RowStage {
        RowStage::default()
    }

    /// The rows made since the last flush.
    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// Takes the rows made since the last flush (to write them elsewhere).
    pub fn take(&mut self) -> Batch {
        std::mem::take(&mut self.batch)
    }

    /// Rows dropped by flushes so far.
    pub fn flushed(&self) -> u64 {
        self.flushed
    }
}

impl Stage for RowStage {
    type Error = Infallible;

    fn observe(&mut self, engine: &Engine, ev: &ConfigChange, source: SourcePos) {
        let cat = engine.catalog();
        crate::evidence_row(ev, source, |k| cat.key_idx(k).is_some(), &mut self.batch);
        crate::inventory_row(ev, source, &mut self.batch);
    }

    fn absorb(&mut self, engine: &Engine, out: &Output) {
        rows(engine, out, &mut self.batch);
    }

    fn record_exceptions(&mut self, partition: i32, offset: i64, list: &[Exception]) {
        let exceptions = serde_json::to_string(list).expect("exceptions serialize");
        self.batch.exception_syncs.push(crate::SyncRow {
            source_partition: partition,
            source_offset: offset,
            exceptions,
            written_at: crate::rows::datetime_secs(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64),
            ),
        });
    }

    fn replaying(&self, partition: i32, offset: i64) -> bool {
        !self.batch.rollup.accepts(SourcePos { partition, offset })
    }

    fn topic_partitions(&mut self, n: u32) {
        self.batch.rollup.set_topic_partitions(n);
    }

    fn settle(&mut self, partition: i32, engine: &Engine) {
        self.batch.settle(engine, Some(partition));
    }

    fn progress(&mut self, partition: i32, next_offset: i64, clock_ms: i64) {
        self.batch.rollup.advance(
            partition,
            crate::Progress {
                next_offset,
                clock_ms: clock_ms.max(0),
            },
        );
    }

    fn discard_partition(&mut self, partition: i32) {
        self.batch.discard_partition(partition);
    }

    fn pending_rows(&self) -> usize {
        self.batch.len()
    }

    async fn flush(&mut self) -> Result<(), Infallible> {
        // What the sink does before it writes: duplicate device rows dropped, the rollup's rows
        // and cut rows made; then the partitions' cuts move, as after a written flush.
        self.batch.coalesce();
        let rollup_rows = self.batch.rollup.rows().len();
        self.flushed += (self.batch.table_counts().iter().map(|t| t.1).sum::<usize>() + rollup_rows) as u64;
        self.batch.rollup.written();
        self.batch.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posture_core::{Catalog, EngineConfig};
    use posture_stage::{PartitionState, Step, Undecodable};

    /// Records through the pipeline's step into a [`RowStage`]: every table's rows are made, the
    /// flush counts them with the rollup's and drops them, and the partition's cut then stands
    /// where the flush left it (a record before it is a replay whose rows are summed already).
    #[tokio::test(flavor = "current_thread")]
    async fn a_row_stage_makes_the_rows_and_its_flush_moves_the_cut() {
        let cat = Arc::new(
            Catalog::from_sources(&[(
                "t.yaml",
                "baseline: t\nversion: 1\ncontrols:\n  - { id: fw, title: F, category: network, points: 30, check: { key: fw, op: eq, value: true } }\n",
            )])
            .unwrap(),
        );
        let decode = |b: &[u8]| {
            ConfigChange::from_json(std::str::from_utf8(b).map_err(|e| Undecodable::from(e.to_string()))?)
                .map_err(Undecodable::from)
        };
        let mut step = Step::new(RowStage::new(), decode);
        step.partitions
            .insert(0, PartitionState::new(Engine::new(cat, EngineConfig::default()), 10));
        step.stage.topic_partitions(1);
        for (offset, (dev, fw)) in [("a", true), ("b", false), ("a", false)].into_iter().enumerate() {
            let ev = format!(
                r#"{{"event_id":"{dev}{offset}","tenant_id":"t1","device_id":"{dev}","kind":"SNAPSHOT","source":"AGENT","observed_at":{},"sequence":{offset},"device":{{"os_family":"linux","os_version":"1","groups":["g"],"tags":[]}},"settings":[{{"key":"fw","value":{fw}}}]}}"#,
                1_795_341_600_000 + offset as i64
            );
            assert_eq!(step.handle(0, 10 + offset as i64, None, ev.as_bytes()).await, None);
        }
        let p = &step.partitions[&0];
        step.stage.settle(0, &p.engine);
        step.stage.progress(0, p.next_offset, p.engine.clock());
        let tables: std::collections::BTreeMap<_, _> = step.stage.batch().table_counts().into_iter().collect();
        assert_eq!(tables["transitions"], 3, "{tables:?}");
        assert_eq!(tables["device_state"], 2, "one row per changed device: {tables:?}");
        assert_eq!(tables["device_evidence"], 3, "{tables:?}");
        let rollup_rows = step.stage.batch().rollup.rows().len();
        assert!(rollup_rows > 1, "data rows and the cut row: {rollup_rows}");
        let made: usize = tables.values().sum::<usize>() + rollup_rows;
        assert!(!step.stage.replaying(0, 12));
        step.stage.flush().await.unwrap();
        assert_eq!(step.stage.flushed(), made as u64);
        assert_eq!(step.stage.pending_rows(), 0);
        assert!(step.stage.replaying(0, 12), "below the cut the flush moved");
        assert!(!step.stage.replaying(0, 13));
    }
}
