//! The Confluent Schema Registry wire format and the decode stage.
//!
//! A Kafka record value is `0x00`, the writer schema's registry id as 4
//! big-endian bytes, then the Avro binary body (SPEC section 1).

use crate::binary::{decode_config_change_body, decode_config_change_body_into, DEFAULT_MAX_ARRAY_LEN};
use crate::error::DecodeError;
use crate::resolve::ResolutionPlan;
use posture_core::ConfigChange;
use std::sync::Arc;

/// Byte 0 of every wire-format record.
pub const MAGIC_BYTE: u8 = 0x00;

/// Length of the wire-format header (magic byte + schema id).
pub const WIRE_HEADER_LEN: usize = 5;

/// Splits a wire-format record into its schema id and Avro body, checking the
/// header only. Useful on its own for dead-letter headers and metrics by id.
pub fn split_wire(record: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    if record.len() < WIRE_HEADER_LEN {
        return Err(DecodeError::TooShort { len: record.len() });
    }
    if record[0] != MAGIC_BYTE {
        return Err(DecodeError::BadMagic { byte: record[0] });
    }
    let id = u32::from_be_bytes([record[1], record[2], record[3], record[4]]);
    Ok((id, &record[WIRE_HEADER_LEN..]))
}

/// The schema id of a wire-format record, from its header alone (`None` when
/// the record is shorter than the header or the magic byte is wrong): to
/// route a record to a registry lookup before decoding it.
pub fn schema_id(record: &[u8]) -> Option<u32> {
    split_wire(record).ok().map(|(id, _)| id)
}

/// The decode stage: wire-format Kafka record values to [`ConfigChange`]s.
///
/// Two kinds of schema ids are decoded, both into the embedded reader schema
/// (`schemas/avro/config_change.avsc`); the decoder itself never asks a
/// registry:
/// * the accepted ids, read by the hand-written hot path: they must name
///   schemas with the same binary layout as the embedded one (the same schema
///   registered under several subjects or versions, or versions differing
///   only in docs/defaults). With no list (`None`), any id is accepted, which
///   is what a deployment without a registry does. With one, the list grows at
///   run time through [`WireDecoder::allow`] as [`crate::registry`] vouches
///   for new ids;
/// * ids of other writer schemas, each read through its
///   [`ResolutionPlan`] (Avro schema resolution), added by
///   [`WireDecoder::allow_resolved`] once the registry served a writer schema
///   that resolves.
///
/// Cheap to clone and `Send + Sync`: one per consumer task, or shared.
#[derive(Clone, Debug)]
pub struct WireDecoder {
    accepted_ids: Option<Vec<u32>>,
    /// Schema ids of other writer schemas, each with its resolution plan (few: one per agent
    /// schema version in use, so a scan beats a map).
    plans: Vec<(u32, Arc<ResolutionPlan>)>,
    max_array_len: usize,
}

impl Default for WireDecoder {
    /// Accepts any schema id, arrays capped at [`DEFAULT_MAX_ARRAY_LEN`].
    fn default() -> Self {
        WireDecoder::new(None)
    }
}

impl WireDecoder {
    /// A decoder accepting the given schema ids (`None`: any id), arrays
    /// capped at [`DEFAULT_MAX_ARRAY_LEN`].
    pub fn new(accepted_ids: Option<Vec<u32>>) -> WireDecoder {
        WireDecoder {
            accepted_ids,
            plans: Vec::new(),
            max_array_len: DEFAULT_MAX_ARRAY_LEN,
        }
    }

    /// Sets the cap on the items of any one array in an event (settings,
    /// groups, tags, string-list values); larger arrays are
    /// [`DecodeError::ArrayTooLong`].
    pub fn with_max_array_len(mut self, max: usize) -> WireDecoder {
        self.max_array_len = max;
        self
    }

    /// The accepted schema ids (`None`: any).
    pub fn accepted_ids(&self) -> Option<&[u32]> {
        self.accepted_ids.as_deref()
    }

    /// Whether records with schema id `id` pass the id check (always true
    /// without a list).
    pub fn accepts(&self, id: u32) -> bool {
        self.hot(id) || self.plan(id).is_some()
    }

    /// Whether the hot path reads records of `id`.
    #[inline]
    fn hot(&self, id: u32) -> bool {
        self.accepted_ids.as_ref().is_none_or(|ids| ids.contains(&id))
    }

    /// The resolution plan of `id`, if it was added.
    #[inline]
    pub fn plan(&self, id: u32) -> Option<&Arc<ResolutionPlan>> {
        self.plans.iter().find(|(i, _)| *i == id).map(|(_, p)| p)
    }

    /// Reads records of `id` through `plan` from now on (a writer schema
    /// other than the embedded one, which
    /// [`SchemaRegistry::resolve`](crate::registry::SchemaRegistry::resolve)
    /// found resolvable). Replaces an earlier plan of the same id.
    pub fn allow_resolved(&mut self, id: u32, plan: Arc<ResolutionPlan>) {
        self.plans.retain(|(i, _)| *i != id);
        self.plans.push((id, plan));
    }

    /// Adds `id` to the accepted ids, e.g. once
    /// [`SchemaRegistry::resolve`](crate::registry::SchemaRegistry::resolve)
    /// found its writer schema identical to the embedded one. No-op when the
    /// id is already accepted or there is no list (any id is accepted), so a
    /// deployment with a registry starts from `Some` list, possibly empty.
    pub fn allow(&mut self, id: u32) {
        if let Some(ids) = &mut self.accepted_ids {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }

    /// The array cap.
    pub fn max_array_len(&self) -> usize {
        self.max_array_len
    }

    /// Checks the header and the schema id, returning the id and the body.
    pub fn check_header<'a>(&self, record: &'a [u8]) -> Result<(u32, &'a [u8]), DecodeError> {
        let (id, body) = split_wire(record)?;
        if !self.accepts(id) {
            return Err(DecodeError::UnknownSchemaId { id });
        }
        Ok((id, body))
    }

    /// Decodes one record value: with the hand-written decoder (the fast
    /// production path) for an accepted id, through its [`ResolutionPlan`]
    /// for a resolved one.
    pub fn decode(&self, record: &[u8]) -> Result<ConfigChange, DecodeError> {
        let (id, body) = split_wire(record)?;
        if self.hot(id) {
            return decode_config_change_body(body, self.max_array_len);
        }
        match self.plan(id) {
            Some(plan) => plan.decode(body, self.max_array_len),
            None => Err(DecodeError::UnknownSchemaId { id }),
        }
    }

    /// [`WireDecoder::decode`] into an existing event, reusing its strings
    /// and settings: no allocation per event on the hot path. On error `ev`
    /// must not be used.
    pub fn decode_into(&self, record: &[u8], ev: &mut ConfigChange) -> Result<(), DecodeError> {
        let (id, body) = split_wire(record)?;
        if self.hot(id) {
            return decode_config_change_body_into(body, self.max_array_len, ev);
        }
        match self.plan(id) {
            Some(plan) => plan.decode_into(body, self.max_array_len, ev),
            None => Err(DecodeError::UnknownSchemaId { id }),
        }
    }

    /// Decodes one record value through `apache-avro` (see
    /// [`crate::reference`]): the same result as [`WireDecoder::decode`] on
    /// every valid record, much slower. For tests, benchmarks and
    /// cross-checking. Does not apply the array cap, and `apache-avro` may
    /// reserve memory for a corrupt block count before noticing the record is
    /// short, so prefer [`WireDecoder::decode`] on untrusted input.
    pub fn decode_reference(&self, record: &[u8]) -> Result<ConfigChange, DecodeError> {
        let (id, body) = self.check_header(record)?;
        match self.plan(id).filter(|_| !self.hot(id)) {
            Some(plan) => crate::reference::decode_resolved_body(plan.writer(), body),
            None => crate::reference::decode_config_change_body(body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_config_change;
    use posture_core::{ChangeKind, ConfigSource};

    fn ev() -> ConfigChange {
        ConfigChange {
            event_id: "e1".into(),
            tenant_id: "t1".into(),
            device_id: "d1".into(),
            observed_at: 1_795_341_600_000,
            sequence: 3,
            source: ConfigSource::Mdm,
            kind: ChangeKind::Snapshot,
            device: None,
            settings: vec![],
        }
    }

    #[test]
    fn header_errors_and_reasons() {
        let d = WireDecoder::new(Some(vec![42, 43]));
        assert_eq!(d.decode(&[0, 0, 0]).unwrap_err(), DecodeError::TooShort { len: 3 });
        assert_eq!(d.decode(&[]).unwrap_err().reason(), "too_short");
        assert_eq!(
            d.decode(&[1, 0, 0, 0, 42, 0]).unwrap_err(),
            DecodeError::BadMagic { byte: 1 }
        );
        let rec = encode_config_change(&ev(), 44);
        assert_eq!(d.decode(&rec).unwrap_err(), DecodeError::UnknownSchemaId { id: 44 });
        assert_eq!(d.decode(&rec).unwrap_err().reason(), "unknown_schema_id");
        assert_eq!(d.decode_reference(&rec).unwrap_err().reason(), "unknown_schema_id");
        // Any id without a list.
        assert_eq!(WireDecoder::default().decode(&rec).unwrap(), ev());
        let rec = encode_config_change(&ev(), 0x0102_0304);
        assert_eq!(&rec[..5], &[0, 1, 2, 3, 4]);
        assert_eq!(split_wire(&rec).unwrap().0, 0x0102_0304);
        let rec = encode_config_change(&ev(), 43);
        assert_eq!(d.decode(&rec).unwrap(), ev());
        assert_eq!(d.decode_reference(&rec).unwrap(), ev());
        // Header only: the body is empty, which is malformed.
        assert_eq!(d.decode(&[0, 0, 0, 0, 42]).unwrap_err().reason(), "malformed_avro");
        let mut rec = rec;
        rec.extend_from_slice(&[1, 2]);
        assert_eq!(d.decode(&rec).unwrap_err(), DecodeError::TrailingBytes { count: 2 });
        assert_eq!(d.decode_reference(&rec).unwrap_err().reason(), "trailing_bytes");
        for e in [
            DecodeError::TooShort { len: 0 },
            DecodeError::BadMagic { byte: 9 },
            DecodeError::UnknownSchemaId { id: 1 },
            DecodeError::malformed(0, "x"),
            DecodeError::ArrayTooLong {
                field: "settings",
                max: 1,
            },
            DecodeError::TrailingBytes { count: 1 },
            DecodeError::Container { detail: "x".into() },
        ] {
            assert!(DecodeError::REASONS.contains(&e.reason()));
        }
    }
}
