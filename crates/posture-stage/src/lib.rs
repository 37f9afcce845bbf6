//! # posture-stage
//!
//! The contracts of the pipeline, with no Kafka and no ClickHouse in them: what the Kafka driver
//! (`posture-ingest`) calls, and what the crates that own each side implement.
//!
//! ```text
//! Kafka record ─► Step::handle (here: the per-record step every driver runs)
//!              ─► Decode (posture-avro: AvroDecoder)  ─► ConfigChange
//!              ─► Engine::apply (posture-core)        ─► Output
//!              ─► Stage::observe, Stage::absorb           (posture-sink: SinkStage;
//!                                                          posture-ingest: KafkaStage)
//!   before a flush: Stage::settle, Stage::progress; Stage::flush (awaited); then snapshots of
//!   the engines to a StateStore (posture-sink: SnapshotStore); then offsets are committed
//! unusable records ─► Skipped ─► Stage::dead_letter
//! ```
//!
//! Also here, because every side uses them: the [`ExceptionSet`] the engines follow (and
//! [`sync_exceptions`], which brings one engine to it), and [`RetryPolicy`], the one way the
//! pipeline waits between attempts (INSERTs, state-store calls, schema-registry lookups, Kafka
//! resends).

#![warn(missing_docs)]

pub mod step;

pub use step::{IngestStats, PartitionState, Step, StepMetrics};

use posture_core::exception::Exception;
use posture_core::{ConfigChange, Engine, Output, SourcePos};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How a retry loop of the pipeline waits: attempts, a growing backoff, an optional timeout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait before the second attempt.
    pub initial_backoff: Duration,
    /// Each wait is the previous one times this factor ...
    pub multiplier: f64,
    /// ... capped at this.
    pub max_backoff: Duration,
    /// Timeout of each attempt where the caller applies one (the sink's INSERTs: send and
    /// end timeout; `None`: the client's defaults).
    pub timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    /// 6 attempts, waits of 100 ms, 200 ms, 400 ms, 800 ms, 1.6 s (at most 10 s each), 30 s timeout.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(10),
            timeout: Some(Duration::from_secs(30)),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `n` (1-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let f = self.multiplier.max(1.0).powi(n.saturating_sub(1).min(64) as i32);
        self.initial_backoff.mul_f64(f.min(1e9)).min(self.max_backoff)
    }
}

/// How an unreachable dependency outside the data path is retried (the state store's loads and
/// saves, schema-registry lookups): without limit, 200 ms doubling to 5 s; consumption waits
/// meanwhile.
pub const STATE_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    initial_backoff: Duration::from_millis(200),
    multiplier: 2.0,
    max_backoff: Duration::from_secs(5),
    timeout: None,
};

/// What the stages after the engine do with its output: turn it into rows
/// (`absorb`) and write them durably (`flush`).
pub trait Stage {
    /// The error of a failed flush (after the stage's own retries).
    type Error: std::error::Error + Send + Sync + 'static;
    /// Converts one engine output into pending rows.
    fn absorb(&mut self, engine: &Engine, out: &Output);
    /// An event the engine applied (not a stale or invalid one), with its
    /// position: stages that keep evidence (the settings behind each
    /// state) take it from here. Called before [`Stage::absorb`] of its output.
    fn observe(&mut self, _engine: &Engine, _ev: &ConfigChange, _source: SourcePos) {}
    /// An input record that could not be used. Stages that keep dead
    /// letters write it with the next flush (before its offset is
    /// committed); the others ignore it (the ingest loop still counts it and
    /// reports it to its `on_skip` callback).
    fn dead_letter(&mut self, _record: &DeadLetter<'_>) {}
    /// Called once when this instance starts on `partition` (after a
    /// restore, before its first record is applied): e.g. read how far its
    /// output already got, so a replay writes nothing twice.
    fn prepare_partition(&mut self, _partition: i32) -> impl Future<Output = Result<(), Self::Error>> {
        async { Ok(()) }
    }
    /// `partition` was revoked: drop its pending, unwritten output (its next
    /// owner makes it again from the partition's last snapshot).
    fn discard_partition(&mut self, _partition: i32) {}
    /// The engine of `partition` took the exception set `list` right before
    /// the record at `offset`: stages that keep output state record it, before
    /// the rows it caused (see [`Stage::recorded_exceptions`]).
    fn record_exceptions(&mut self, _partition: i32, _offset: i64, _list: &[Exception]) {}
    /// After [`Stage::prepare_partition`]: every exception set recorded for the
    /// partition, with the offset of the record it was taken before. A restored
    /// engine takes those at or after its snapshot again, each right before its
    /// record, so a replay makes exactly the output of the run that recorded it.
    fn recorded_exceptions(&mut self, _partition: i32) -> Vec<(i64, Vec<Exception>)> {
        Vec::new()
    }
    /// Whether the record at `offset` of `partition` is a replay of output
    /// already written (at or below the output watermarks). A new exception
    /// set waits until the replay is over, or its effect would be lost.
    fn replaying(&self, _partition: i32, _offset: i64) -> bool {
        false
    }
    /// Rows pending since the last flush.
    fn pending_rows(&self) -> usize;
    /// Right before a flush, for every assigned partition: `engine`, the partition's engine,
    /// has applied everything this stage absorbed from it. Stages that write current state
    /// read it from `engine` now (once per flush, not once per change).
    fn settle(&mut self, _partition: i32, _engine: &Engine) {}
    /// Notes, right before a flush, how far an assigned partition is: every record before
    /// `next_offset` is applied, and its event-time clock is `clock_ms`. The flush commits it
    /// (the cut readers see).
    fn progress(&mut self, _partition: i32, _next_offset: i64, _clock_ms: i64) {}
    /// The input topic's partition count (learnt when a partition starts).
    fn topic_partitions(&mut self, _n: u32) {}
    /// Writes every pending row durably; only then are offsets committed.
    fn flush(&mut self) -> impl Future<Output = Result<(), Self::Error>>;
}

/// Two stages as one: both absorb everything, and a flush succeeds when both
/// have written (they flush concurrently).
impl<A: Stage, B: Stage> Stage for (A, B) {
    type Error = PairError<A::Error, B::Error>;
    fn absorb(&mut self, engine: &Engine, out: &Output) {
        self.0.absorb(engine, out);
        self.1.absorb(engine, out);
    }
    fn observe(&mut self, engine: &Engine, ev: &ConfigChange, source: SourcePos) {
        self.0.observe(engine, ev, source);
        self.1.observe(engine, ev, source);
    }
    fn dead_letter(&mut self, record: &DeadLetter<'_>) {
        self.0.dead_letter(record);
        self.1.dead_letter(record);
    }
    async fn prepare_partition(&mut self, partition: i32) -> Result<(), Self::Error> {
        self.0.prepare_partition(partition).await.map_err(PairError::First)?;
        self.1.prepare_partition(partition).await.map_err(PairError::Second)
    }
    fn discard_partition(&mut self, partition: i32) {
        self.0.discard_partition(partition);
        self.1.discard_partition(partition);
    }

    fn record_exceptions(&mut self, partition: i32, offset: i64, list: &[Exception]) {
        self.0.record_exceptions(partition, offset, list);
        self.1.record_exceptions(partition, offset, list);
    }

    fn recorded_exceptions(&mut self, partition: i32) -> Vec<(i64, Vec<Exception>)> {
        let a = self.0.recorded_exceptions(partition);
        let b = self.1.recorded_exceptions(partition);
        if a.is_empty() {
            b
        } else {
            a
        }
    }

    fn replaying(&self, partition: i32, offset: i64) -> bool {
        self.0.replaying(partition, offset) || self.1.replaying(partition, offset)
    }
    fn pending_rows(&self) -> usize {
        self.0.pending_rows().max(self.1.pending_rows())
    }
    fn settle(&mut self, partition: i32, engine: &Engine) {
        self.0.settle(partition, engine);
        self.1.settle(partition, engine);
    }
    fn progress(&mut self, partition: i32, next_offset: i64, clock_ms: i64) {
        self.0.progress(partition, next_offset, clock_ms);
        self.1.progress(partition, next_offset, clock_ms);
    }
    fn topic_partitions(&mut self, n: u32) {
        self.0.topic_partitions(n);
        self.1.topic_partitions(n);
    }
    async fn flush(&mut self) -> Result<(), Self::Error> {
        let (a, b) = tokio::join!(self.0.flush(), self.1.flush());
        match (a, b) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(a), Ok(())) => Err(PairError::First(a)),
            (Ok(()), Err(b)) => Err(PairError::Second(b)),
            (Err(a), Err(b)) => Err(PairError::Both(a, b)),
        }
    }
}

/// An optional stage: `None` takes nothing and writes nothing (a pipeline without that output).
impl<A: Stage> Stage for Option<A> {
    type Error = A::Error;
    fn absorb(&mut self, engine: &Engine, out: &Output) {
        if let Some(a) = self {
            a.absorb(engine, out);
        }
    }
    fn observe(&mut self, engine: &Engine, ev: &ConfigChange, source: SourcePos) {
        if let Some(a) = self {
            a.observe(engine, ev, source);
        }
    }
    fn dead_letter(&mut self, record: &DeadLetter<'_>) {
        if let Some(a) = self {
            a.dead_letter(record);
        }
    }
    async fn prepare_partition(&mut self, partition: i32) -> Result<(), Self::Error> {
        match self {
            Some(a) => a.prepare_partition(partition).await,
            None => Ok(()),
        }
    }
    fn discard_partition(&mut self, partition: i32) {
        if let Some(a) = self {
            a.discard_partition(partition);
        }
    }
    fn record_exceptions(&mut self, partition: i32, offset: i64, list: &[Exception]) {
        if let Some(a) = self {
            a.record_exceptions(partition, offset, list);
        }
    }
    fn recorded_exceptions(&mut self, partition: i32) -> Vec<(i64, Vec<Exception>)> {
        self.as_mut()
            .map(|a| a.recorded_exceptions(partition))
            .unwrap_or_default()
    }
    fn replaying(&self, partition: i32, offset: i64) -> bool {
        self.as_ref().is_some_and(|a| a.replaying(partition, offset))
    }
    fn pending_rows(&self) -> usize {
        self.as_ref().map_or(0, |a| a.pending_rows())
    }
    fn settle(&mut self, partition: i32, engine: &Engine) {
        if let Some(a) = self {
            a.settle(partition, engine);
        }
    }
    fn progress(&mut self, partition: i32, next_offset: i64, clock_ms: i64) {
        if let Some(a) = self {
            a.progress(partition, next_offset, clock_ms);
        }
    }
    fn topic_partitions(&mut self, n: u32) {
        if let Some(a) = self {
            a.topic_partitions(n);
        }
    }
    async fn flush(&mut self) -> Result<(), Self::Error> {
        match self {
            Some(a) => a.flush().await,
            None => Ok(()),
        }
    }
}

/// The error of two stages run as one ([`Stage`] for `(A, B)`): which of them failed, with
/// its own error.
#[derive(Debug)]
pub enum PairError<A, B> {
    /// The first stage failed (the second did its part).
    First(A),
    /// The second stage failed.
    Second(B),
    /// Both failed.
    Both(A, B),
}

impl<A: std::fmt::Display, B: std::fmt::Display> std::fmt::Display for PairError<A, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PairError::First(a) => a.fmt(f),
            PairError::Second(b) => b.fmt(f),
            PairError::Both(a, b) => write!(f, "{a}; {b}"),
        }
    }
}

impl<A: std::fmt::Debug + std::fmt::Display, B: std::fmt::Debug + std::fmt::Display> std::error::Error
    for PairError<A, B>
{
}

/// An input record that could not be used, as the dead-letter topic keeps
/// it: where it came from, its original key and bytes, and why.
#[derive(Clone, Copy, Debug)]
pub struct DeadLetter<'a> {
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The record's key, if any.
    pub key: Option<&'a [u8]>,
    /// The record's value, unchanged.
    pub payload: &'a [u8],
    /// A short stable label (`unknown_schema_id`, `malformed_avro`,
    /// `invalid_event`, ...), for headers and metrics.
    pub reason: &'a str,
    /// The human-readable detail.
    pub detail: &'a str,
}

/// The reasons a record is dead-lettered: the `posture.dead-letter.reason` header of the
/// dead-letter topic and the `reason` label of `posture_events_dead_lettered_total`. One list,
/// here: the decoder (`posture_avro::DecodeError::reason`), the schema registry
/// (`posture_avro::RegistryError::reason`) and the ingest step name their reasons with these
/// constants, and the metrics register exactly [`reasons::ALL`] (a reason not in it would be
/// counted as `other`; tests keep the lists equal).
pub mod reasons {
    /// Shorter than the wire-format header.
    pub const TOO_SHORT: &str = "too_short";
    /// The first byte is not the Confluent magic byte 0.
    pub const BAD_MAGIC: &str = "bad_magic";
    /// A schema id the decoder does not accept (and no registry approved).
    pub const UNKNOWN_SCHEMA_ID: &str = "unknown_schema_id";
    /// The Avro body does not decode as a `ConfigChange`.
    pub const MALFORMED_AVRO: &str = "malformed_avro";
    /// An array longer than the decoder's bound.
    pub const ARRAY_TOO_LONG: &str = "array_too_long";
    /// Bytes left after the record.
    pub const TRAILING_BYTES: &str = "trailing_bytes";
    /// An Avro object container file that cannot be read.
    pub const BAD_CONTAINER: &str = "bad_container";
    /// Decoded, but the engine refused the event as breaking the contract.
    pub const INVALID_EVENT: &str = "invalid_event";
    /// The registry does not know the schema id.
    pub const SCHEMA_NOT_FOUND: &str = "schema_not_found";
    /// The registry's schema for the id is not Avro.
    pub const SCHEMA_NOT_AVRO: &str = "schema_not_avro";
    /// The registry's schema for the id does not parse.
    pub const BAD_SCHEMA: &str = "bad_schema";
    /// The registry's schema is Avro but not the `ConfigChange` schema the hot path decodes.
    pub const INCOMPATIBLE_SCHEMA: &str = "incompatible_schema";
    /// The registry could not be reached (or answered with an error) while the id was unknown.
    pub const REGISTRY_UNAVAILABLE: &str = "registry_unavailable";
    /// The registry client is misconfigured (its URL, its TLS setup).
    pub const REGISTRY_CONFIG: &str = "registry_config";
    /// A decoder without a reason of its own (e.g. a closure returning text).
    pub const UNDECODABLE: &str = "undecodable";
    /// Every reason above.
    pub const ALL: [&str; 15] = [
        TOO_SHORT,
        BAD_MAGIC,
        UNKNOWN_SCHEMA_ID,
        MALFORMED_AVRO,
        ARRAY_TOO_LONG,
        TRAILING_BYTES,
        BAD_CONTAINER,
        INVALID_EVENT,
        SCHEMA_NOT_FOUND,
        SCHEMA_NOT_AVRO,
        BAD_SCHEMA,
        INCOMPATIBLE_SCHEMA,
        REGISTRY_UNAVAILABLE,
        REGISTRY_CONFIG,
        UNDECODABLE,
    ];
}

/// Why a record could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undecodable {
    /// A short stable label (e.g. `posture_avro::DecodeError::reason`).
    pub reason: &'static str,
    /// What exactly is wrong.
    pub detail: String,
    /// The schema id of a record whose id the decoder does not know (so a
    /// schema registry can be asked about it).
    pub unknown_schema_id: Option<u32>,
}

impl From<String> for Undecodable {
    fn from(detail: String) -> Undecodable {
        Undecodable {
            reason: reasons::UNDECODABLE,
            detail,
            unknown_schema_id: None,
        }
    }
}

/// Turns record values into events.
pub trait Decode {
    /// Decodes one record value.
    fn decode(&mut self, bytes: &[u8]) -> Result<ConfigChange, Undecodable>;
    /// Decodes one record value into `ev`, reusing its buffers (the ingest
    /// loop decodes every record into one event). The default decodes
    /// afresh; on error `ev` must not be used.
    fn decode_into(&mut self, bytes: &[u8], ev: &mut ConfigChange) -> Result<(), Undecodable> {
        *ev = self.decode(bytes)?;
        Ok(())
    }
    /// Asked about a record whose schema id was unknown: learn about the id
    /// (e.g. from a schema registry) and say whether records with it can now
    /// be decoded. The record is decoded again afterwards either way, so a
    /// decoder can now refuse it with a better reason. The default knows
    /// nothing more.
    fn learn(&mut self, _schema_id: u32) -> impl Future<Output = bool> {
        async { false }
    }
}

/// Any closure from bytes to an event is a decoder (tests, JSON input).
impl<F: FnMut(&[u8]) -> Result<ConfigChange, Undecodable>> Decode for F {
    fn decode(&mut self, bytes: &[u8]) -> Result<ConfigChange, Undecodable> {
        self(bytes)
    }
}

/// Why a record was not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// The bytes could not be decoded (dead-lettered with the reason).
    Undecodable(String),
    /// The engine refused the event as invalid (dead-lettered as `invalid_event`).
    Invalid(String),
    /// The event is stale or a duplicate: ignored and counted, not dead-lettered.
    Stale(String),
}

/// The exceptions every partition's engine should know, as configured
/// (for `posture run`: polled from ClickHouse's `exceptions` table). Replace
/// the whole list with [`ExceptionSet::replace`]; engines catch up before
/// their next record (see `posture_ingest::Ingest::with_exceptions`).
#[derive(Debug, Default)]
pub struct ExceptionSet {
    inner: std::sync::Mutex<(u64, Arc<Vec<Exception>>)>,
}

impl ExceptionSet {
    /// An empty set (version 0).
    pub fn new() -> Arc<ExceptionSet> {
        Arc::new(ExceptionSet::default())
    }

    /// Sets the list; returns whether it changed (then the version moves on).
    pub fn replace(&self, list: Vec<Exception>) -> bool {
        let mut g = self.inner.lock().expect("not poisoned");
        if *g.1 == list {
            return false;
        }
        g.0 += 1;
        g.1 = Arc::new(list);
        true
    }

    /// The version and the list.
    pub fn current(&self) -> (u64, Arc<Vec<Exception>>) {
        let g = self.inner.lock().expect("not poisoned");
        (g.0, g.1.clone())
    }
}

/// Brings `engine`'s exceptions up to `list`: adds the ones it lacks, moves
/// expiries that changed. The transitions this makes are stamped with `pos`
/// (the record about to be applied). Returns how many exceptions the engine
/// refused (each is logged): an unknown control, or an expiry removed
/// (an exception, once expired, stays expired).
pub fn sync_exceptions(engine: &mut Engine, list: &[Exception], pos: SourcePos, out: &mut Output) -> u64 {
    let first = out.transitions.len();
    let mut refused = 0;
    for e in list {
        let known = engine
            .exceptions()
            .find(|(k, _)| k.id == e.id)
            .map(|(k, _)| k.expires_at);
        let result = match known {
            None => engine.add_exception(e.clone(), out),
            Some(old) if old == e.expires_at => Ok(()),
            Some(_) => match e.expires_at {
                Some(at) => engine.expire_exception(&e.id, at, out),
                None => Err(format!("exception {}: its expiry cannot be removed", e.id)),
            },
        };
        if let Err(why) = result {
            refused += 1;
            tracing::warn!(partition = pos.partition, "exception not applied: {why}");
        }
    }
    for t in &mut out.transitions[first..] {
        t.source = pos;
    }
    refused
}

/// Where partition engines are snapshotted, so their state survives the
/// process and follows the partition to another instance.
pub trait StateStore {
    /// Why a load or a save failed (the ingest loop logs it and tries again).
    type Error: std::error::Error + Send + Sync + 'static;
    /// The latest snapshot of the partition: the offset it was taken at and
    /// its bytes ([`Engine::snapshot`]).
    fn load(&self, topic: &str, partition: i32) -> impl Future<Output = Result<Option<(i64, Vec<u8>)>, Self::Error>>;
    /// Stores a snapshot taken at `next_offset`.
    fn save(
        &self,
        topic: &str,
        partition: i32,
        next_offset: i64,
        bytes: &[u8],
    ) -> impl Future<Output = Result<(), Self::Error>>;
    /// Whether snapshots survive the process. Without, offsets are committed
    /// after every flush (at-least-once; state is lost on restart).
    fn durable(&self) -> bool {
        true
    }
}

/// No durable state: engines live in memory only.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryOnly;

impl StateStore for MemoryOnly {
    type Error = std::convert::Infallible;
    async fn load(&self, _: &str, _: i32) -> Result<Option<(i64, Vec<u8>)>, Self::Error> {
        Ok(None)
    }
    async fn save(&self, _: &str, _: i32, _: i64, _: &[u8]) -> Result<(), Self::Error> {
        Ok(())
    }
    fn durable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(5), Duration::from_millis(1600));
        assert_eq!(p.backoff(20), Duration::from_secs(10));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(10));
        assert_eq!(STATE_RETRY.backoff(1), Duration::from_millis(200));
        assert_eq!(STATE_RETRY.backoff(100), Duration::from_secs(5));
    }

    /// A stage that fails its flush, or not.
    struct Fails(Option<&'static str>);

    #[derive(Debug)]
    struct Failure(&'static str);
    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Failure {}

    impl Stage for Fails {
        type Error = Failure;
        fn absorb(&mut self, _: &Engine, _: &Output) {}
        fn pending_rows(&self) -> usize {
            0
        }
        async fn flush(&mut self) -> Result<(), Failure> {
            self.0.map_or(Ok(()), |why| Err(Failure(why)))
        }
    }

    /// Two stages as one say which of them failed, each with its own error kept as a value.
    #[tokio::test(flavor = "current_thread")]
    async fn a_pair_says_which_stage_failed() {
        assert!((Fails(None), Fails(None)).flush().await.is_ok());
        let e = (Fails(Some("clickhouse down")), Fails(None)).flush().await.unwrap_err();
        assert!(matches!(e, PairError::First(Failure("clickhouse down"))), "{e:?}");
        let e = (Fails(None), Fails(Some("kafka down"))).flush().await.unwrap_err();
        assert!(matches!(e, PairError::Second(_)));
        let e = (Fails(Some("a")), Fails(Some("b"))).flush().await.unwrap_err();
        assert_eq!(e.to_string(), "a; b");
    }
}

#[cfg(test)]
mod reason_tests {
    use super::reasons;

    /// Each reason once, in the stable snake_case form headers and labels use.
    #[test]
    fn the_reasons_are_distinct_labels() {
        let mut all = reasons::ALL.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), reasons::ALL.len(), "a reason is listed twice");
        for r in reasons::ALL {
            assert!(
                !r.is_empty() && r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{r:?} is not a snake_case label"
            );
        }
    }
}
