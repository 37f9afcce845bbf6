//! # posture-avro
//!
//! Avro for posture (SPEC sections 1 and 4): decoding the configuration-change
//! events that arrive on Kafka, encoding the records posture produces, and
//! reading Avro object container files for `posture evaluate`.
//!
//! Where it sits in the pipeline (the [`Step`](posture_stage::Step) of `posture-stage` calls it):
//!
//! ```text
//! Kafka record bytes ─► AvroDecoder (decoder.rs: the Decode contract, registry policy)
//!                         └─► WireDecoder (wire.rs) ─► binary.rs ─► posture_core::ConfigChange
//! Engine output ─► output.rs: ScoreDelta / ScoreDropAlert records ─► Kafka (posture-ingest)
//! ```
//!
//! * [`wire`]: the Confluent Schema Registry wire format (byte 0 = `0x00`,
//!   bytes 1-4 = big-endian schema id, then the Avro binary body) and
//!   [`WireDecoder`], the decode stage of the pipeline.
//! * [`binary`]: the hand-written decoder and encoder of `posture.v1.ConfigChange`.
//!   This is the production path: one pass over the bytes, bounds-checked, no
//!   allocation beyond the `String`s and `Vec`s of the result.
//! * [`reference`](mod@reference): the same decoding through `apache-avro` (generic `Value`s,
//!   schema resolution). Slower; the oracle the hand decoder is tested against,
//!   and the engine of container-file reading.
//! * [`output`]: `posture.v1.ScoreDelta` (one per engine [`Transition`]) and
//!   `posture.v1.ScoreDropAlert` encoders.
//! * [`container`]: object container files (`Obj\x01`) of `ConfigChange`.
//! * [`schemas`]: the `.avsc` texts of `schemas/avro/`, embedded, and parsed.
//! * [`registry`]: an optional Confluent Schema Registry client: looks up the
//!   writer schema of an id the [`WireDecoder`] does not accept yet and says
//!   whether it is the embedded schema (hot path), another schema that
//!   resolves into it, or one that cannot be read.
//! * [`resolve`]: Avro schema resolution of other writer schemas (older or
//!   newer agents) into `ConfigChange`, compiled once per schema id.
//!
//! Every decode failure is a [`DecodeError`] whose [`DecodeError::reason`] is a
//! short stable string for metrics labels and dead-letter headers.
//!
//! [`Transition`]: posture_core::Transition

#![warn(missing_docs)]

pub mod binary;
pub mod container;
pub mod decoder;
mod error;
pub mod output;
pub mod reference;
pub mod registry;
pub mod resolve;
pub mod schemas;
pub mod wire;

pub use binary::{
    decode_config_change_body, decode_config_change_body_into, encode_config_change, encode_config_change_into,
    DEFAULT_MAX_ARRAY_LEN,
};
pub use container::{is_container, read_container};
pub use decoder::{avro_decoder, AvroDecoder};
pub use error::DecodeError;
pub use output::{
    decode_alert, decode_score_delta, encode_alert, encode_alert_into, encode_engine_delta_into, encode_score_delta,
    encode_score_delta_into, AlertCause, DeltaNames, ScopeChangeRecord, ScoreDeltaRecord, ScoreDropAlert,
};
pub use registry::{check_config_change, BasicAuth, Compatibility, RegistryError, SchemaRegistry};
pub use wire::{schema_id, split_wire, WireDecoder, MAGIC_BYTE, WIRE_HEADER_LEN};
