//! The metrics of the pipeline, their registry and the typed helpers that
//! record them.
//!
//! Why one file of about 700 lines: every metric is declared, registered and given its typed
//! helper here, so the bounded label sets (dead-letter reasons, sink tables, topics) and the
//! names the alert rules and dashboards use are checked in one place.

use crate::guard::{ScoreGuard, ScoreLimits};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The metric names: a contract with dashboards and alert rules, so they are
/// constants here and never change once released.
pub mod names {
    /// IntCounter: records received from the events topic.
    pub const EVENTS_CONSUMED: &str = "posture_events_consumed_total";
    /// IntCounter: events applied to device state.
    pub const EVENTS_APPLIED: &str = "posture_events_applied_total";
    /// IntCounter: events ignored as stale or duplicate.
    pub const EVENTS_STALE: &str = "posture_events_stale_total";
    /// IntCounterVec `{reason}`: records sent to the dead-letter topic.
    pub const EVENTS_DEAD_LETTERED: &str = "posture_events_dead_lettered_total";
    /// IntCounter: control-state transitions emitted.
    pub const TRANSITIONS_EMITTED: &str = "posture_transitions_emitted_total";
    /// IntCounterVec `{table}`: rows written to ClickHouse.
    pub const SINK_ROWS: &str = "posture_sink_rows_total";
    /// IntCounter: batches written to ClickHouse.
    pub const SINK_BATCHES: &str = "posture_sink_batches_total";
    /// IntCounter: retried batch writes.
    pub const SINK_RETRIES: &str = "posture_sink_retries_total";
    /// IntCounter: batch writes given up.
    pub const SINK_FAILURES: &str = "posture_sink_failures_total";
    /// Histogram: seconds per batch write.
    pub const SINK_BATCH_DURATION: &str = "posture_sink_batch_duration_seconds";
    /// IntCounterVec `{topic_kind}`: records produced to Kafka.
    pub const KAFKA_PRODUCED: &str = "posture_kafka_produced_total";
    /// IntGaugeVec `{topic,partition}`: consumer lag in records.
    pub const CONSUMER_LAG: &str = "posture_consumer_lag_records";
    /// IntGauge: devices in evaluation state.
    pub const DEVICES: &str = "posture_devices";
    /// IntGauge: bytes of evaluation state.
    pub const STATE_BYTES: &str = "posture_state_bytes";
    /// Histogram: seconds to restore state.
    pub const RESTORE_DURATION: &str = "posture_restore_duration_seconds";
    /// Histogram: end-to-end freshness in seconds.
    pub const FRESHNESS: &str = "posture_freshness_seconds";
    /// GaugeVec `{tenant,group}`: secure score in percent.
    pub const SCORE_PERCENT: &str = "posture_score_percent";
    /// IntCounter: score-drop alerts published.
    pub const ALERTS_PUBLISHED: &str = "posture_alerts_published_total";
    /// Gauge: Unix time of the last successful flush.
    pub const LAST_FLUSH_TIMESTAMP: &str = "posture_last_flush_timestamp_seconds";
    /// IntGauge `{version}` = 1: build information.
    pub const BUILD_INFO: &str = "posture_build_info";
    /// IntGauge: partitions of the events topic assigned to this process.
    pub const PARTITIONS_ASSIGNED: &str = "posture_partitions_assigned";
    /// Gauge: seconds this process has held no partition (0 while it holds one).
    pub const UNASSIGNED_SECONDS: &str = "posture_unassigned_seconds";
    /// IntCounter: times this process left and re-joined its consumer group after holding no
    /// partition for too long.
    pub const GROUP_REJOINS: &str = "posture_group_rejoins_total";
    /// IntCounterVec `{reason}`: query API requests refused or failed.
    pub const API_REFUSALS: &str = "posture_api_refusals_total";

    /// Every metric name above, in registration order.
    pub const ALL: [&str; 24] = [
        EVENTS_CONSUMED,
        EVENTS_APPLIED,
        EVENTS_STALE,
        EVENTS_DEAD_LETTERED,
        TRANSITIONS_EMITTED,
        SINK_ROWS,
        SINK_BATCHES,
        SINK_RETRIES,
        SINK_FAILURES,
        SINK_BATCH_DURATION,
        KAFKA_PRODUCED,
        CONSUMER_LAG,
        DEVICES,
        STATE_BYTES,
        RESTORE_DURATION,
        FRESHNESS,
        SCORE_PERCENT,
        ALERTS_PUBLISHED,
        LAST_FLUSH_TIMESTAMP,
        BUILD_INFO,
        PARTITIONS_ASSIGNED,
        UNASSIGNED_SECONDS,
        GROUP_REJOINS,
        API_REFUSALS,
    ];
}

/// The label value that any reason or table outside the known sets is
/// counted under, so label cardinality stays bounded whatever callers pass.
pub const OTHER: &str = "other";

/// The dead-letter reasons of `posture_events_dead_lettered_total{reason}`, registered at 0 so
/// dashboards see every series from the start: the pipeline's one list,
/// [`posture_stage::reasons::ALL`]. Any other reason is counted under [`OTHER`].
pub const DEAD_LETTER_REASONS: [&str; 15] = posture_stage::reasons::ALL;

/// The ClickHouse tables of `posture_sink_rows_total{table}`, registered at
/// 0. Any other table is counted under [`OTHER`].
pub const SINK_TABLES: [&str; 3] = ["transitions", "device_state", "score_rollup"];

/// The reasons of `posture_api_refusals_total{reason}`, by the answer's status: 400, 401, 403,
/// 404, 429, 502 (ClickHouse failed), 503 (over the deadline). Registered at 0.
pub const API_REFUSAL_REASONS: [&str; 7] = [
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "over_quota",
    "clickhouse",
    "timeout",
];

/// Buckets of `posture_sink_batch_duration_seconds`: 5 ms to 30 s.
pub const SINK_BATCH_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Buckets of `posture_restore_duration_seconds`: 10 ms to 120 s.
pub const RESTORE_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Freshness percentiles of a run (event appended to Kafka -> its rows
/// written to ClickHouse), in milliseconds; ages under 1 ms count as 1 ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FreshnessSummary {
    /// Events observed.
    pub events: u64,
    /// Median, ms (0 when no event was observed, as are the others).
    pub p50_ms: u64,
    /// 90th percentile, ms.
    pub p90_ms: u64,
    /// 99th percentile, ms: the figure of the SPEC 7 target (p99 at most 2 s at 50k events/s).
    pub p99_ms: u64,
    /// The largest age observed, ms (ages above 24 h are recorded as 24 h).
    pub max_ms: u64,
}

/// Buckets of `posture_freshness_seconds`: 10 ms to 60 s.
pub const FRESHNESS_BUCKETS: [f64; 12] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The kind of output topic a record was produced to: the label
/// `topic_kind` of `posture_kafka_produced_total`. A closed set, so the
/// label is bounded and independent of the configured topic names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// `posture.score-deltas`: one record per control-state transition.
    ScoreDeltas,
    /// The dead-letter topic: records that could not be decoded or applied.
    DeadLetter,
    /// `posture.alerts`: score-drop alerts.
    Alerts,
}

impl TopicKind {
    /// Every kind, in label order.
    pub const ALL: [TopicKind; 3] = [TopicKind::ScoreDeltas, TopicKind::DeadLetter, TopicKind::Alerts];

    /// The label value: `score_deltas`, `dead_letter` or `alerts`.
    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::ScoreDeltas => "score_deltas",
            TopicKind::DeadLetter => "dead_letter",
            TopicKind::Alerts => "alerts",
        }
    }
}

/// How [`Metrics`] is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Cardinality limits of `posture_score_percent{tenant,group}`.
    pub score_limits: ScoreLimits,
    /// The `version` label of `posture_build_info`. Default: this crate's
    /// version, which is the workspace's (so the binary's).
    pub version: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            score_limits: ScoreLimits::default(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// The operational metrics of one posture process, in their own
/// [`Registry`] (not the global default one, so tests and embedded uses
/// can hold several).
///
/// Every metric is registered at construction, and every fixed label value
/// (dead-letter reasons, sink tables, topic kinds) is pre-registered at 0.
/// Series whose label values come from the running pipeline
/// (`posture_consumer_lag_records`, `posture_score_percent`) appear once set.
///
/// Recording goes through the typed methods below, which map label values
/// onto bounded sets; nothing here takes a device id, and nothing must:
/// per-device data would make one series per device (use ClickHouse for
/// that). Share it as `Arc<Metrics>`: every method takes `&self`.
pub struct Metrics {
    registry: Registry,
    events_consumed: IntCounter,
    events_applied: IntCounter,
    events_stale: IntCounter,
    events_dead_lettered: IntCounterVec,
    transitions_emitted: IntCounter,
    sink_rows: IntCounterVec,
    sink_batches: IntCounter,
    sink_retries: IntCounter,
    sink_failures: IntCounter,
    sink_batch_duration: Histogram,
    kafka_produced: IntCounterVec,
    consumer_lag: IntGaugeVec,
    devices: IntGauge,
    state_bytes: IntGauge,
    restore_duration: Histogram,
    freshness: Histogram,
    /// The same ages in milliseconds, exactly (3 significant digits), for
    /// the run summary's percentiles ([`Metrics::freshness_summary`]).
    freshness_ms: Mutex<hdrhistogram::Histogram<u64>>,
    score_percent: GaugeVec,
    score_guard: Mutex<ScoreGuard>,
    alerts_published: IntCounter,
    last_flush_timestamp: Gauge,
    partitions_assigned: IntGauge,
    unassigned_seconds: Gauge,
    group_rejoins: IntCounter,
    api_refusals: IntCounterVec,
    version: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Registers `m` in `r` and hands it back. Names and label names are fixed
/// constants, so failure is a bug in this crate, not a runtime condition.
fn reg<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: Result<M, prometheus::Error>) -> M {
    let m = m.expect("posture-metrics: invalid metric definition");
    r.register(Box::new(m.clone()))
        .expect("posture-metrics: metric registered twice");
    m
}

/// A count as an `i64` gauge value (saturating; counts never get there).
fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn known_or_other(known: &[&'static str], value: &str) -> &'static str {
    known.iter().copied().find(|k| *k == value).unwrap_or(OTHER)
}

/// The label value `reason` is counted under: itself if it is one of
/// [`DEAD_LETTER_REASONS`], else [`OTHER`].
pub(crate) fn dead_letter_label(reason: &str) -> &'static str {
    known_or_other(&DEAD_LETTER_REASONS, reason)
}

/// The label value `table` is counted under: itself if it is one of
/// [`SINK_TABLES`], else [`OTHER`].
pub(crate) fn sink_table_label(table: &str) -> &'static str {
    known_or_other(&SINK_TABLES, table)
}

impl Metrics {
    /// Every metric registered in a new registry, with the default
    /// [`MetricsConfig`] (1000 tenants, no per-group scores).
    pub fn new() -> Metrics {
        Metrics::with_config(MetricsConfig::default())
    }

    /// Every metric registered in a new registry, with `config`.
    pub fn with_config(config: MetricsConfig) -> Metrics {
        let r = Registry::new();
        let counter = |name: &str, help: &str| reg(&r, IntCounter::with_opts(Opts::new(name, help)));
        let counter_vec =
            |name: &str, help: &str, label: &str| reg(&r, IntCounterVec::new(Opts::new(name, help), &[label]));
        let int_gauge = |name: &str, help: &str| reg(&r, IntGauge::with_opts(Opts::new(name, help)));
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            reg(
                &r,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())),
            )
        };

        let events_consumed = counter(
            names::EVENTS_CONSUMED,
            "Records received from the events topic, decodable or not.",
        );
        let events_applied = counter(
            names::EVENTS_APPLIED,
            "Events applied to device state (neither stale, duplicate nor dead-lettered).",
        );
        let events_stale = counter(
            names::EVENTS_STALE,
            "Events ignored as stale or duplicate: not newer than what the device state already reflects.",
        );
        let events_dead_lettered = counter_vec(
            names::EVENTS_DEAD_LETTERED,
            "Records sent to the dead-letter topic, by reason (reasons outside the known set are counted as \"other\").",
            "reason",
        );
        let transitions_emitted = counter(
            names::TRANSITIONS_EMITTED,
            "Control-state transitions emitted by evaluation (one score delta each).",
        );
        let sink_rows = counter_vec(
            names::SINK_ROWS,
            "Rows written to ClickHouse, by table (tables outside the known set are counted as \"other\").",
            "table",
        );
        let sink_batches = counter(names::SINK_BATCHES, "Batches written to ClickHouse successfully.");
        let sink_retries = counter(
            names::SINK_RETRIES,
            "Batch writes to ClickHouse attempted again after a failed attempt.",
        );
        let sink_failures = counter(
            names::SINK_FAILURES,
            "Batch writes to ClickHouse given up on after their retries.",
        );
        let sink_batch_duration = histogram(
            names::SINK_BATCH_DURATION,
            "Seconds to write one batch to ClickHouse, retries included.",
            &SINK_BATCH_BUCKETS,
        );
        let kafka_produced = counter_vec(
            names::KAFKA_PRODUCED,
            "Records produced to Kafka, by kind of output topic (score_deltas, dead_letter, alerts).",
            "topic_kind",
        );
        let consumer_lag = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    names::CONSUMER_LAG,
                    "Records between the consumer's position and the high watermark, per assigned partition.",
                ),
                &["topic", "partition"],
            ),
        );
        let devices = int_gauge(names::DEVICES, "Devices held in evaluation state by this process.");
        let state_bytes = int_gauge(
            names::STATE_BYTES,
            "Approximate bytes of evaluation state held in memory by this process.",
        );
        let restore_duration = histogram(
            names::RESTORE_DURATION,
            "Seconds taken to restore the evaluation state of newly assigned partitions before consuming them.",
            &RESTORE_BUCKETS,
        );
        let freshness = histogram(
            names::FRESHNESS,
            "Seconds from an event's arrival in Kafka (record timestamp) to the sink flush that made its results queryable.",
            &FRESHNESS_BUCKETS,
        );
        let score_percent = reg(
            &r,
            GaugeVec::new(
                Opts::new(
                    names::SCORE_PERCENT,
                    "Current secure score in percent, by tenant and device group (group=\"\" is the whole tenant; \
                     \"_overflow\" is the mean over tenants or groups beyond the cardinality limits).",
                ),
                &["tenant", "group"],
            ),
        );
        let alerts_published = counter(
            names::ALERTS_PUBLISHED,
            "Score-drop alerts published to the alerts topic.",
        );
        let last_flush_timestamp = reg(
            &r,
            Gauge::with_opts(Opts::new(
                names::LAST_FLUSH_TIMESTAMP,
                "Unix time in seconds of the last successful flush to the sink.",
            )),
        );
        let partitions_assigned = int_gauge(
            names::PARTITIONS_ASSIGNED,
            "Partitions of the events topic assigned to this process by its consumer group.",
        );
        let unassigned_seconds = reg(
            &r,
            Gauge::with_opts(Opts::new(
                names::UNASSIGNED_SECONDS,
                "Seconds since this process last held a partition of the events topic (since start if it never \
                 did); 0 while it holds one.",
            )),
        );
        let group_rejoins = counter(
            names::GROUP_REJOINS,
            "Times this process left and re-joined its consumer group because it held no partition for longer \
             than --assignment-timeout-secs.",
        );
        let api_refusals = counter_vec(
            names::API_REFUSALS,
            "Query API requests refused or failed, by reason (bad_request, unauthorized, forbidden, not_found, \
             over_quota, clickhouse, timeout).",
            "reason",
        );
        let build_info = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    names::BUILD_INFO,
                    "Build information of this posture process: always 1, the version is the label.",
                ),
                &["version"],
            ),
        );

        for reason in DEAD_LETTER_REASONS.iter().chain([&OTHER]) {
            events_dead_lettered.with_label_values(&[*reason]);
        }
        for table in SINK_TABLES.iter().chain([&OTHER]) {
            sink_rows.with_label_values(&[*table]);
        }
        for reason in API_REFUSAL_REASONS.iter().chain([&OTHER]) {
            api_refusals.with_label_values(&[*reason]);
        }
        for kind in TopicKind::ALL {
            kafka_produced.with_label_values(&[kind.as_str()]);
        }
        build_info.with_label_values(&[config.version.as_str()]).set(1);

        Metrics {
            registry: r,
            events_consumed,
            events_applied,
            events_stale,
            events_dead_lettered,
            transitions_emitted,
            sink_rows,
            sink_batches,
            sink_retries,
            sink_failures,
            sink_batch_duration,
            kafka_produced,
            consumer_lag,
            devices,
            state_bytes,
            restore_duration,
            freshness,
            freshness_ms: Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 24 * 3_600_000, 3).expect("valid histogram bounds"),
            ),
            score_percent,
            score_guard: Mutex::new(ScoreGuard::new(&config.score_limits)),
            alerts_published,
            last_flush_timestamp,
            partitions_assigned,
            unassigned_seconds,
            group_rejoins,
            api_refusals,
            version: config.version,
        }
    }

    /// The registry, e.g. to register more collectors next to these (they
    /// are then served on `/metrics` as well).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything in the registry in the Prometheus text format 0.0.4 (the
    /// body of `GET /metrics`).
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let families = self.registry.gather();
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&families, &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }

    /// `n` records received from the events topic (whatever became of them).
    pub fn events_consumed(&self, n: u64) {
        self.events_consumed.inc_by(n);
    }

    /// `n` events applied to device state.
    pub fn events_applied(&self, n: u64) {
        self.events_applied.inc_by(n);
    }

    /// `n` events ignored as stale or duplicate.
    pub fn events_stale(&self, n: u64) {
        self.events_stale.inc_by(n);
    }

    /// One record sent to the dead-letter topic for `reason` (e.g.
    /// `DecodeError::reason()`); a reason outside [`DEAD_LETTER_REASONS`] is
    /// counted under `reason="other"`.
    pub fn dead_lettered(&self, reason: &str) {
        self.events_dead_lettered
            .with_label_values(&[dead_letter_label(reason)])
            .inc();
    }

    /// `n` control-state transitions emitted.
    pub fn transitions_emitted(&self, n: u64) {
        self.transitions_emitted.inc_by(n);
    }

    /// `n` rows written to the ClickHouse table `table`; a table outside
    /// [`SINK_TABLES`] is counted under `table="other"`.
    pub fn sink_rows(&self, table: &str, n: u64) {
        self.sink_rows.with_label_values(&[sink_table_label(table)]).inc_by(n);
    }

    /// One batch written to ClickHouse successfully, in `took` (retries
    /// included).
    pub fn sink_batch(&self, took: Duration) {
        self.sink_batches.inc();
        self.sink_batch_duration.observe(took.as_secs_f64());
    }

    /// One batch write attempted again after a failed attempt.
    pub fn sink_retry(&self) {
        self.sink_retries.inc();
    }

    /// One batch write given up on after its retries.
    pub fn sink_failure(&self) {
        self.sink_failures.inc();
    }

    /// `n` records produced to the output topic of kind `kind`.
    pub fn kafka_produced(&self, kind: TopicKind, n: u64) {
        self.kafka_produced.with_label_values(&[kind.as_str()]).inc_by(n);
    }

    /// The consumer lag of `partition` of `topic`, in records (high watermark
    /// minus position). Topics come from configuration and partitions are
    /// small integers, so the series are bounded.
    pub fn set_consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        let partition = partition.to_string();
        self.consumer_lag
            .with_label_values(&[topic, partition.as_str()])
            .set(lag);
    }

    /// Drops the lag series of a partition that is no longer assigned (so a
    /// revoked partition does not keep reporting its last lag).
    pub fn remove_consumer_lag(&self, topic: &str, partition: i32) {
        let partition = partition.to_string();
        // Err only means there was no such series: nothing to remove.
        let _ = self.consumer_lag.remove_label_values(&[topic, partition.as_str()]);
    }

    /// The number of devices held in evaluation state.
    pub fn set_devices(&self, n: u64) {
        self.devices.set(gauge_value(n));
    }

    /// The approximate bytes of evaluation state held in memory.
    pub fn set_state_bytes(&self, n: u64) {
        self.state_bytes.set(gauge_value(n));
    }

    /// The consumer group's assignment as this process last saw it: `partitions` of the events
    /// topic, and for how long it has held none (zero while it holds some).
    pub fn set_assignment(&self, partitions: usize, unassigned_for: Duration) {
        self.partitions_assigned.set(gauge_value(partitions as u64));
        self.unassigned_seconds.set(unassigned_for.as_secs_f64());
    }

    /// A query API request was refused or failed with HTTP `status`; other statuses count
    /// nothing.
    pub fn api_refused(&self, status: u16) {
        let reason = match status {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            429 => "over_quota",
            502 => "clickhouse",
            503 => "timeout",
            _ => return,
        };
        self.api_refusals.with_label_values(&[reason]).inc();
    }

    /// The process left and re-joined its consumer group (it held no partition for too long).
    pub fn group_rejoined(&self) {
        self.group_rejoins.inc();
    }

    /// A state restore (of newly assigned partitions) took `took`.
    pub fn observe_restore(&self, took: Duration) {
        self.restore_duration.observe(took.as_secs_f64());
    }

    /// An event's results became queryable `age` after it arrived in Kafka.
    pub fn observe_freshness(&self, age: Duration) {
        self.observe_freshness_all(std::iter::once(age));
    }

    /// [`Metrics::observe_freshness`] for many events at once (one lock).
    pub fn observe_freshness_all(&self, ages: impl IntoIterator<Item = Duration>) {
        let mut exact = self.freshness_ms.lock().unwrap_or_else(|e| e.into_inner());
        for age in ages {
            self.freshness.observe(age.as_secs_f64());
            exact.saturating_record(age.as_millis().max(1) as u64);
        }
    }

    /// Percentiles of every freshness observed so far, exact to 0.1% (the
    /// Prometheus histogram has only its buckets): for the summary of a run.
    pub fn freshness_summary(&self) -> FreshnessSummary {
        let h = self.freshness_ms.lock().unwrap_or_else(|e| e.into_inner());
        let q = |q: f64| if h.is_empty() { 0 } else { h.value_at_quantile(q) };
        FreshnessSummary {
            events: h.len(),
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            max_ms: if h.is_empty() { 0 } else { h.max() },
        }
    }

    /// The current secure score of `tenant` in percent, or of its device
    /// `group` when given. The cardinality guard ([`ScoreLimits`]) decides
    /// the series: tenants beyond the cap go to `tenant="_overflow"`, groups
    /// not allow-listed to `group="_overflow"`, and those series hold the
    /// mean of their members' latest scores. A non-finite percent is ignored.
    pub fn set_score(&self, tenant: &str, group: Option<&str>, percent: f64) {
        let mut guard = self.score_guard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = guard.place(tenant, group, percent) {
            self.score_percent.with_label_values(&[p.tenant, p.group]).set(p.value);
        }
    }

    /// `n` score-drop alerts published.
    pub fn alerts_published(&self, n: u64) {
        self.alerts_published.inc_by(n);
    }

    /// A flush to the sink completed at `at`.
    pub fn flushed_at(&self, at: SystemTime) {
        let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        self.last_flush_timestamp.set(secs);
    }

    /// A flush to the sink completed now.
    pub fn flushed_now(&self) {
        self.flushed_at(SystemTime::now());
    }

    /// The `version` label of `posture_build_info` (for tests and logs).
    pub fn build_version(&self) -> &str {
        &self.version
    }
}

/// The per-record counters of the pipeline's step ([`posture_stage::Step`]).
impl posture_stage::StepMetrics for Metrics {
    fn event_applied(&self) {
        self.events_applied(1);
    }
    fn event_stale(&self) {
        self.events_stale(1);
    }
    fn dead_lettered(&self, reason: &'static str) {
        Metrics::dead_lettered(self, reason);
    }
    fn transitions_emitted(&self, n: u64) {
        Metrics::transitions_emitted(self, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_reasons_keep_their_label_and_others_collapse() {
        for r in DEAD_LETTER_REASONS {
            assert_eq!(dead_letter_label(r), r);
        }
        assert_eq!(dead_letter_label("device-1234"), OTHER);
        assert_eq!(dead_letter_label(""), OTHER);
        assert_eq!(dead_letter_label("TOO_SHORT"), OTHER);
    }

    #[test]
    fn known_tables_keep_their_label_and_others_collapse() {
        for t in SINK_TABLES {
            assert_eq!(sink_table_label(t), t);
        }
        assert_eq!(sink_table_label("device_scores"), OTHER);
    }

    #[test]
    fn every_name_is_registered_once() {
        let m = Metrics::new();
        m.set_consumer_lag("t", 0, 1);
        m.set_score("a", None, 1.0);
        let families = m.registry().gather();
        let mut got: Vec<&str> = families.iter().map(|f| f.name()).collect();
        got.sort_unstable();
        let mut want = names::ALL.to_vec();
        want.sort_unstable();
        assert_eq!(got, want);
    }
}
