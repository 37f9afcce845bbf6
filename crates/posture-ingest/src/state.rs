//! What the Kafka driver keeps beside the consumer: the per-record [`Step`] (in posture-stage,
//! shared with the benchmark), the state store, and the bookkeeping of flushes, progress and
//! freshness.

use posture_core::{Catalog, EngineConfig};
use posture_metrics::Metrics;
use posture_stage::Step;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything but the consumer, so a borrowed message and the state can be
/// used at once.
pub(crate) struct State<S, D, St> {
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) engine_cfg: EngineConfig,
    /// Stage, decoder, partitions and counters: each record goes through [`Step::handle`].
    pub(crate) step: Step<S, D>,
    pub(crate) store: St,
    pub(crate) progress: Arc<std::sync::atomic::AtomicU64>,
    /// Flushes that wrote rows (see [`crate::Ingest::flushes`]).
    pub(crate) flushed: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) holds_partition_0: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) metrics: Option<Arc<Metrics>>,
    /// Kafka append times (ms) of the records whose output is pending: the
    /// freshness of each once it is written.
    pub(crate) pending_ts: Vec<i64>,
    /// When the first and the last record arrived, and when rows were last
    /// written.
    pub(crate) first_record: Option<Instant>,
    pub(crate) last_record: Option<Instant>,
    pub(crate) last_write: Option<Instant>,
    /// How long the last write waited after the last record before it
    /// started (a final partial batch waits for the batch interval).
    pub(crate) write_gap: Duration,
}
