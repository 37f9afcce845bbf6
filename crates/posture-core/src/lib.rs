//! # posture-core
//!
//! The pure scoring core of posture: no I/O, no async, no clocks. Everything the
//! pipeline computes about a device's security configuration happens here, so it
//! can be tested and benchmarked alone.
//!
//! Data flow inside the core:
//!
//! ```text
//! baseline YAML ──► Catalog (controls, compiled checks, interned setting keys)
//!                              │
//! ConfigChange ──► Engine::apply ──► per-device compact state (leaf results)
//!                              │            │
//!                              ▼            ▼
//!                      Transition + ScopeDelta records ──► Ledger ──► Report
//! ```
//!
//! * [`baseline`]: the YAML baseline format, validated with `file:line` errors.
//! * [`event`]: the `ConfigChange` event (SPEC section 1) and its JSON-lines form.
//! * [`check`]: three-valued evaluation of checks against setting values.
//! * [`engine`]: per-device state, scope aggregates, exceptions, inactivity,
//!   and the transition records every later stage consumes.
//! * [`ledger`] and [`report`]: scores, category scores and recommendations, now
//!   or as of any event-time instant, computed only from transition records.
//!
//! Scores are kept in integer micro-points ([`Micros`]), so the sum of every
//! delta always equals a from-scratch recomputation, bit for bit.

#![warn(missing_docs)]

pub mod baseline;
pub mod check;
pub mod engine;
pub mod event;
pub mod exception;
pub mod ledger;
pub mod report;
pub mod time;
pub mod types;
pub mod version;
pub mod yaml;

pub use baseline::{BaselineError, Catalog, Control};
pub use engine::{scope_name_problem, Engine, EngineConfig, Output, Rejected, Transition, RESERVED_SCOPE_NAME};
pub use event::{ChangeKind, ConfigChange, ConfigSource, DeviceInfo, Setting, Value};
pub use exception::{Exception, ExceptionScope, Justification};
pub use ledger::Ledger;
pub use types::*;
