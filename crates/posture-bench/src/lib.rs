//! # posture-bench
//!
//! The benchmark harness: measures posture against the targets of SPEC
//! section 7 and prints one table (`posture-bench --help`; `scripts/bench`
//! runs it on the test stack).
//!
//! ```text
//! fleet (posture_fleet devices, the 300-control baseline) ─► Avro records
//!   ─► evaluator: posture_stage::Step over them in memory (the production step and stages)
//!   ─► stack: Kafka ─► the release `posture run` ─► ClickHouse, beside a bare consumer
//! ```
//!
//! - [`evaluator`]: decode + evaluate + emit on one core (the production
//!   [`Step`](posture_stage::Step)), state bytes per device, snapshot and
//!   restore, for fleets of 100k and 1M devices on the 300-control baseline
//!   of [`fleet`];
//! - [`stack`]: the release `posture run` on Kafka and ClickHouse, beside a
//!   bare rdkafka consumer on the same records and `clickhouse-client` on
//!   the same rows; freshness at fixed rates; peak resident memory.
//!
//! The criterion bench `cargo bench -p posture-bench --bench evaluator`
//! runs the evaluator's loop under criterion.

#![warn(missing_docs)]

pub mod evaluator;
pub mod fleet;
pub mod release;
pub mod report;
pub mod stack;
