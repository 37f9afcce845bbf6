//! # posture-xccdf
//!
//! XCCDF 1.2 (SCAP) for posture, as pure functions (no I/O):
//!
//! ```text
//! Benchmark XML ─► benchmark (parse) ─► tree (profile resolved: ScoringTree) ─► import ─► baseline YAML
//! TestResult XML ─► results ─► posture_core::ConfigChange events ─► Kafka or embedded mode
//! ```
//!
//!
//! * [`benchmark`]: reads a Benchmark, plain or inside a SCAP source data
//!   stream, with its Group tree, weights, selection, roles, idents and
//!   Profiles (and Tailoring files).
//! * [`tree`]: resolves a benchmark for a profile into the [`ScoringTree`]
//!   a baseline carries in its `scoring.xccdf` section.
//! * [`import`](mod@import): writes the posture baseline (one control per scored rule,
//!   reading the setting `xccdf:<rule id>`), with the category heuristic and
//!   its override map, and the result-to-state mapping.
//! * [`results`]: reads TestResults (results files, ARF) and turns them into
//!   SNAPSHOT events.
//! * [`models`]: the XCCDF scoring models (default, flat, flat-unweighted,
//!   absolute), per device and per scope.
//! * [`replay`]: each device's current results from a stream of events.

#![warn(missing_docs)]

pub mod benchmark;
pub mod import;
pub mod models;
pub mod replay;
pub mod result;
pub mod results;
pub mod tree;

pub use benchmark::{parse_benchmark, Benchmark};
pub use import::{import, CategoryMap, ErrorAs, ImportOptions, Imported};
pub use models::{
    aggregate, score, score_as, score_device, score_device_as, DeviceScores, Model, ModelScore, ScopeScore,
};
pub use replay::{DeviceResults, Replay};
pub use result::{setting_key, XccdfError, XccdfResult, SETTING_PREFIX};
pub use results::{parse_test_results, to_event, EventOptions, TestResult};
pub use tree::{resolve, ScoringTree};
