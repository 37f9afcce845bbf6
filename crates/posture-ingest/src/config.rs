//! Where and how the ingest loop consumes: [`IngestConfig`].

use std::time::Duration;

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
    /// With a durable [`StateStore`](posture_stage::StateStore): snapshot a partition's engine at
    /// least this often (when it has applied anything since), then commit
    /// its offset. A restart replays at most this much input.
    pub snapshot_interval: Duration,
    /// ... or after this many records of the partition.
    pub snapshot_records: u64,
    /// Holding no partition for longer than this (after the start or a revocation) is reported:
    /// a warning, `/readyz` failing, the metrics of [`Metrics::set_assignment`](posture_metrics::Metrics::set_assignment). Zero: never.
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
