//! The production wiring of the ingest loop: Avro wire-format decoding and a
//! [`Stage`] that writes rows to ClickHouse through [`posture_sink::Sink`].

use crate::{Decode, Stage, Undecodable};
use posture_avro::registry::{Compatibility, SchemaRegistry, INCOMPATIBLE_SCHEMA};
use posture_avro::{DecodeError, WireDecoder};
use posture_core::exception::Exception;
use posture_core::{ConfigChange, Engine, Output, SourcePos};
use posture_metrics::Metrics;
use posture_sink::{rows, Batch, Sink, SinkError, SnapshotStore, Watermarks};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Rows go to a [`Batch`]; a flush writes it with the sink's retries.
///
/// With a [`SnapshotStore`] ([`SinkStage::with_watermarks`]), a partition's
/// output watermarks are read when the partition starts, and rows of
/// replayed records at or below them are dropped: a replay after a restart
/// or a rebalance writes nothing twice.
pub struct SinkStage {
    sink: Sink,
    batch: Batch,
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
            batch: Batch::new(),
            store: None,
            watermarks: HashMap::new(),
            recorded_exceptions: HashMap::new(),
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
        let cat = engine.catalog();
        posture_sink::evidence_row(ev, source, |k| cat.key_idx(k).is_some(), &mut self.batch);
        posture_sink::inventory_row(ev, source, &mut self.batch);
    }

    fn absorb(&mut self, engine: &Engine, out: &Output) {
        let mark = self.batch.mark();
        rows(engine, out, &mut self.batch);
        if self.watermarks.is_empty() {
            return;
        }
        let w = &self.watermarks;
        self.suppressed += self.batch.suppress_since(mark, |p| w.get(&p).copied()) as u64;
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
                Err(e) if attempt < retry.max_attempts.max(1) && posture_sink::sink::is_transient(&e) => {
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
            self.batch.rollup.set_committed(p, c);
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
        let exceptions = serde_json::to_string(list).expect("exceptions serialize");
        self.batch.exception_syncs.push(posture_sink::SyncRow {
            source_partition: partition,
            source_offset: offset,
            exceptions,
            written_at: posture_sink::rows::datetime_secs(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64),
            ),
        });
    }

    fn recorded_exceptions(&mut self, partition: i32) -> Vec<(i64, Vec<Exception>)> {
        self.recorded_exceptions.remove(&partition).unwrap_or_default()
    }

    fn replaying(&self, partition: i32, offset: i64) -> bool {
        self.watermarks
            .get(&partition)
            .is_some_and(|w| w.iter().any(|&m| offset <= m))
            || !self.batch.rollup.accepts(SourcePos { partition, offset })
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
            posture_sink::Progress {
                next_offset,
                clock_ms: clock_ms.max(0),
            },
        );
    }

    fn discard_partition(&mut self, partition: i32) {
        self.batch.discard_partition(partition);
        self.watermarks.remove(&partition);
        self.recorded_exceptions.remove(&partition);
    }

    fn pending_rows(&self) -> usize {
        self.batch.len()
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        // `write` removes each table from the batch once it is written, so a
        // failed flush resends only what is left.
        self.batch.coalesce();
        let counts = self.batch.counts();
        let tables = self.batch.table_counts();
        let rollup_before = self.sink.rollup_rows_written();
        let started = std::time::Instant::now();
        let result = self.sink.write(&mut self.batch).await;
        if result.is_ok() {
            for (table, n) in tables {
                *self.written.entry(table).or_default() += n as u64;
            }
            *self.written.entry("score_rollup").or_default() += self.sink.rollup_rows_written() - rollup_before;
        }
        if let Some(m) = &self.metrics {
            match &result {
                Ok(()) => {
                    for (table, n) in posture_sink::LINEAGE_TABLES.iter().zip(counts) {
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

/// A decoder of Confluent-framed Avro `ConfigChange` records; `schema_ids`
/// limits the accepted schema ids (`None`: any).
pub fn avro_decoder(schema_ids: Option<Vec<u32>>) -> impl FnMut(&[u8]) -> Result<ConfigChange, Undecodable> {
    let decoder = WireDecoder::new(schema_ids);
    move |bytes| decoder.decode(bytes).map_err(undecodable)
}

/// The production decoder: the hot-path [`WireDecoder`], and optionally a
/// Confluent Schema Registry that is asked once about every schema id the
/// decoder does not know. An id whose writer schema is the embedded
/// `ConfigChange` schema is then accepted; any other answer (another schema,
/// not found, not Avro) dead-letters the id's records with the registry's
/// reason. While the registry is unreachable the lookup is retried with
/// backoff for up to `registry_patience`, then the record is dead-lettered
/// as `registry_unavailable`; for [`REGISTRY_DOWN_PAUSE`] after that, records
/// of unknown ids are dead-lettered the same way at once (one stall, not one
/// per record), and then one lookup, without retries, says whether it is back.
///
/// Hostile ids are bounded: refusals are remembered for at most
/// [`MAX_REMEMBERED_IDS`] ids (the oldest forgotten first), and at most
/// [`MAX_LOOKUPS_PER_MINUTE`] lookups are made per minute; past that, records
/// of ids not yet known are dead-lettered as `unknown_schema_id` without one.
pub struct AvroDecoder {
    wire: WireDecoder,
    registry: Option<SchemaRegistry>,
    refused: HashMap<u32, (&'static str, String)>,
    /// The ids of `refused`, oldest first (to forget the oldest when full).
    refused_order: std::collections::VecDeque<u32>,
    /// Why the last lookup failed without being remembered (registry down, over budget).
    transient: Option<(u32, &'static str, String)>,
    /// Until when unknown ids are dead-lettered without a lookup: the registry was down.
    down_until: Option<std::time::Instant>,
    /// When the lookups of the last minute were made.
    lookups: std::collections::VecDeque<std::time::Instant>,
    registry_patience: Duration,
    registry_pause: Duration,
}

/// At most this many refused schema ids are remembered (each record of a refused id is then
/// dead-lettered without a lookup); beyond, the oldest are forgotten (and asked about again).
pub const MAX_REMEMBERED_IDS: usize = 10_000;
/// At most this many schema registry lookups per minute: a producer writing random schema ids
/// costs one lookup each, so past this budget their records are dead-lettered without one.
pub const MAX_LOOKUPS_PER_MINUTE: usize = 1_000;
/// After the registry was found unreachable, how long unknown ids are dead-lettered as
/// `registry_unavailable` without asking it.
pub const REGISTRY_DOWN_PAUSE: Duration = Duration::from_secs(30);

impl AvroDecoder {
    /// Accepts `schema_ids` (`None`: any id, unless a registry is given, in
    /// which case the ids it approves).
    pub fn new(schema_ids: Option<Vec<u32>>, registry: Option<SchemaRegistry>) -> AvroDecoder {
        let ids = match (&registry, schema_ids) {
            (Some(_), ids) => Some(ids.unwrap_or_default()),
            (None, ids) => ids,
        };
        AvroDecoder {
            wire: WireDecoder::new(ids),
            registry,
            refused: HashMap::new(),
            refused_order: std::collections::VecDeque::new(),
            transient: None,
            down_until: None,
            lookups: std::collections::VecDeque::new(),
            registry_patience: Duration::from_secs(60),
            registry_pause: REGISTRY_DOWN_PAUSE,
        }
    }

    /// How long a lookup is retried while the registry is unreachable.
    pub fn with_registry_patience(mut self, patience: Duration) -> AvroDecoder {
        self.registry_patience = patience;
        self
    }

    /// How long unknown ids are dead-lettered without a lookup after the registry was found
    /// unreachable (default [`REGISTRY_DOWN_PAUSE`]).
    pub fn with_registry_pause(mut self, pause: Duration) -> AvroDecoder {
        self.registry_pause = pause;
        self
    }

    /// How many refused ids are remembered (at most [`MAX_REMEMBERED_IDS`]).
    pub fn remembered_refusals(&self) -> usize {
        self.refused.len()
    }

    fn remember_refusal(&mut self, id: u32, reason: &'static str, detail: String) {
        if self.refused.insert(id, (reason, detail)).is_none() {
            self.refused_order.push_back(id);
            while self.refused_order.len() > MAX_REMEMBERED_IDS {
                if let Some(old) = self.refused_order.pop_front() {
                    self.refused.remove(&old);
                }
            }
        }
    }

    /// Whether one more lookup fits the budget of the last minute (and counts it if so).
    fn lookup_allowed(&mut self, now: std::time::Instant) -> bool {
        while self
            .lookups
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.lookups.pop_front();
        }
        if self.lookups.len() >= MAX_LOOKUPS_PER_MINUTE {
            return false;
        }
        self.lookups.push_back(now);
        true
    }
}

impl AvroDecoder {
    /// Why a record is refused: the registry's reason for a refused schema
    /// id, or the decoder's error.
    fn refusal(&self, e: DecodeError) -> Undecodable {
        match e {
            DecodeError::UnknownSchemaId { id } if self.refused.contains_key(&id) => {
                let (reason, detail) = &self.refused[&id];
                Undecodable {
                    reason,
                    detail: detail.clone(),
                    unknown_schema_id: None,
                }
            }
            DecodeError::UnknownSchemaId { id } if self.transient.as_ref().is_some_and(|t| t.0 == id) => {
                // Not remembered: the id stays unknown, so the next record of it asks `learn`
                // again (which answers at once during the pause or over the budget, and looks
                // it up once the registry is back).
                let (_, reason, detail) = self.transient.as_ref().expect("checked");
                Undecodable {
                    reason,
                    detail: detail.clone(),
                    unknown_schema_id: Some(id),
                }
            }
            e => undecodable(e),
        }
    }
}

impl Decode for AvroDecoder {
    fn decode(&mut self, bytes: &[u8]) -> Result<ConfigChange, Undecodable> {
        self.wire.decode(bytes).map_err(|e| self.refusal(e))
    }

    fn decode_into(&mut self, bytes: &[u8], ev: &mut ConfigChange) -> Result<(), Undecodable> {
        self.wire.decode_into(bytes, ev).map_err(|e| self.refusal(e))
    }

    async fn learn(&mut self, schema_id: u32) -> bool {
        if self.registry.is_none() {
            return false;
        }
        self.transient = None;
        let started = std::time::Instant::now();
        // Just found down: no lookup until the pause is over, then one without retries.
        let patience = match self.down_until {
            Some(until) if started < until => {
                self.transient = Some((
                    schema_id,
                    "registry_unavailable",
                    format!(
                        "schema id {schema_id} not looked up: the schema registry was unreachable less than {} s ago",
                        self.registry_pause.as_secs()
                    ),
                ));
                return false;
            }
            Some(_) => Duration::ZERO,
            None => self.registry_patience,
        };
        if !self.lookup_allowed(started) {
            self.transient = Some((
                schema_id,
                "unknown_schema_id",
                format!(
                    "schema id {schema_id} not looked up: more than {MAX_LOOKUPS_PER_MINUTE} schema registry lookups in the last minute"
                ),
            ));
            return false;
        }
        let registry = self.registry.as_ref().expect("checked");
        let mut attempt = 0;
        loop {
            match registry.resolve(schema_id).await {
                Ok(Compatibility::Identical) => {
                    self.down_until = None;
                    self.wire.allow(schema_id);
                    return true;
                }
                Ok(Compatibility::Incompatible(reason)) => {
                    self.down_until = None;
                    self.remember_refusal(schema_id, INCOMPATIBLE_SCHEMA, reason);
                    return false;
                }
                Err(e) if e.is_retryable() && started.elapsed() < patience => {
                    attempt += 1;
                    tracing::warn!(
                        "schema registry lookup of id {schema_id} failed (attempt {attempt}), retrying: {e}"
                    );
                    tokio::time::sleep(crate::STATE_RETRY.backoff(attempt)).await;
                }
                Err(e) if e.is_retryable() => {
                    // Not remembered: a record with this id asks again once the pause is over.
                    tracing::error!(
                        "schema registry unavailable for id {schema_id}, dead-lettering (and every unknown id for {} s): {e}",
                        self.registry_pause.as_secs()
                    );
                    self.down_until = Some(std::time::Instant::now() + self.registry_pause);
                    self.transient = Some((schema_id, e.reason(), e.to_string()));
                    return false;
                }
                Err(e) => {
                    self.down_until = None;
                    self.remember_refusal(schema_id, e.reason(), e.to_string());
                    return false;
                }
            }
        }
    }
}

/// The ingest loop's view of an Avro decode error.
pub fn undecodable(e: DecodeError) -> Undecodable {
    Undecodable {
        reason: e.reason(),
        unknown_schema_id: match e {
            DecodeError::UnknownSchemaId { id } => Some(id),
            _ => None,
        },
        detail: e.to_string(),
    }
}
