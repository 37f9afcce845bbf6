//! # posture-sink
//!
//! The ClickHouse side of posture (SPEC section 4): the schema, the rows, and the writer.
//!
//! Where it sits in the pipeline (its [`SinkStage`] is one of the
//! [`Stage`](posture_stage::Stage)s the [`Step`](posture_stage::Step) hands every output to):
//!
//! ```text
//! Engine Output ─► SinkStage ─► RowStage: rows() ─► Batch (transitions, device_state, evidence,
//!                                                   inventory; the Rollup's cells)
//!   at a flush  ─► Sink::write: the tables' INSERTs, then score_rollup (rollup + cut rows: the commit)
//!   snapshots   ─► SnapshotStore (the StateStore contract): engine_snapshots, output watermarks
//! ```
//!
//! * [`migrate()`] applies the migrations of `schemas/clickhouse/` (embedded at build time, in
//!   file-name order) to a database and records them in `schema_migrations`; it is idempotent.
//! * [`rows()`] turns one core [`Output`](posture_core::Output) into rows (`transitions` with
//!   their scope deltas, the devices' state, the rollup's cells), appended to a [`Batch`].
//! * [`Sink::write`] sends a batch: one INSERT per table (concurrently), each retried with bounded
//!   exponential backoff on transient errors.
//! * [`queries`] holds the documented trend queries (`schemas/clickhouse/queries.sql`) and renders
//!   their `{name:Type}` parameters for servers without query parameters.
//!
//! Every statement is plain SQL that ClickHouse 18.16 (the test stack) and 24-26 (production)
//! both run; nothing is gated on the server version.

#![warn(missing_docs)]

/// The maps of the row path: foldhash is seeded per process like the standard hasher and
/// several times faster on short keys (SipHash was 6% of the evaluator with rows).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

pub mod batch;
pub mod cluster;
pub mod legacy;
pub mod migrate;
pub mod queries;
pub mod rollup;
pub mod rows;
pub mod sink;
pub mod sql;
pub mod stage;
pub mod state;

pub use migrate::{migrate, migrate_on_cluster, migrations, Migration, SCHEMA_MIGRATIONS_DDL};
pub use rollup::{Progress, Rollup, RollupRow};
pub use rows::{
    catalog_id, evidence_row, inventory_row, rows, value_json, Batch, CatalogRow, ControlStateRow, DeviceStateRow,
    EvidenceRow, InventoryRow, ScoreDeltaRow, SettingRow, SyncRow, TransitionRow,
};
pub use sink::{RetryPolicy, Sink, SinkError};
pub use stage::{RowStage, SinkStage};
pub use state::{SnapshotStore, Watermarks, LINEAGE_TABLES};

/// Results of this crate.
pub type Result<T, E = SinkError> = std::result::Result<T, E>;
