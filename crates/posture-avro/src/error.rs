//! Decode errors.

use posture_stage::reasons;

/// Why a record could not be decoded into a [`posture_core::ConfigChange`].
///
/// The pipeline never stops on one: the record goes to the dead-letter topic
/// with [`DecodeError::reason`] as its reason header and is counted under that
/// label, and the `Display` text (with offsets and details) for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than the 5 header bytes of the Confluent wire format.
    #[error("record too short for the wire format header: {len} bytes, need at least 5")]
    TooShort {
        /// Length of the whole record.
        len: usize,
    },
    /// Byte 0 is not the Confluent magic byte `0x00`.
    #[error("bad magic byte 0x{byte:02x}, expected 0x00 (Confluent wire format)")]
    BadMagic {
        /// The byte found.
        byte: u8,
    },
    /// The schema id is not in the decoder's accepted list.
    #[error("unknown schema id {id}")]
    UnknownSchemaId {
        /// The id from bytes 1-4.
        id: u32,
    },
    /// The Avro body does not follow the `posture.v1.ConfigChange` binary
    /// encoding: truncated, invalid UTF-8, an enum or union index out of
    /// range, a negative length, a varint longer than 64 bits, and so on.
    #[error("malformed Avro at body byte {offset}: {detail}")]
    Malformed {
        /// Byte offset in the Avro body (after the 5-byte header) where the
        /// problem was found; 0 when the reference decoder cannot tell.
        offset: usize,
        /// What is wrong.
        detail: String,
    },
    /// An array (settings, groups, tags or a string-list value) has more
    /// items than the decoder's cap: a defence against memory blow-up from a
    /// hostile or corrupt record, separate from malformed encoding.
    #[error("array {field} has more than {max} items")]
    ArrayTooLong {
        /// Which array.
        field: &'static str,
        /// The configured cap.
        max: usize,
    },
    /// The record decoded completely but bytes were left over: a producer
    /// wrote a different (newer or wrong) schema under an accepted id.
    #[error("{count} trailing bytes after the record")]
    TrailingBytes {
        /// How many bytes were left.
        count: usize,
    },
    /// An Avro object container file could not be read (bad header, corrupt
    /// block, unsupported codec, writer schema incompatible with the reader
    /// schema, I/O error).
    #[error("Avro container file: {detail}")]
    Container {
        /// What went wrong.
        detail: String,
    },
}

impl DecodeError {
    /// A short, stable label: for metrics (`reason="..."`) and the reason
    /// header of dead-letter records. One of `too_short`, `bad_magic`,
    /// `unknown_schema_id`, `malformed_avro`, `array_too_long`,
    /// `trailing_bytes`, `bad_container`. Never changes for a given variant.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooShort { .. } => reasons::TOO_SHORT,
            DecodeError::BadMagic { .. } => reasons::BAD_MAGIC,
            DecodeError::UnknownSchemaId { .. } => reasons::UNKNOWN_SCHEMA_ID,
            DecodeError::Malformed { .. } => reasons::MALFORMED_AVRO,
            DecodeError::ArrayTooLong { .. } => reasons::ARRAY_TOO_LONG,
            DecodeError::TrailingBytes { .. } => reasons::TRAILING_BYTES,
            DecodeError::Container { .. } => reasons::BAD_CONTAINER,
        }
    }

    /// Every label [`DecodeError::reason`] can return, so metrics can be
    /// registered (at zero) up front.
    pub const REASONS: [&'static str; 7] = [
        reasons::TOO_SHORT,
        reasons::BAD_MAGIC,
        reasons::UNKNOWN_SCHEMA_ID,
        reasons::MALFORMED_AVRO,
        reasons::ARRAY_TOO_LONG,
        reasons::TRAILING_BYTES,
        reasons::BAD_CONTAINER,
    ];

    pub(crate) fn malformed(offset: usize, detail: impl Into<String>) -> DecodeError {
        DecodeError::Malformed {
            offset,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod reason_tests {
    use super::*;

    /// The decoder's reasons are the pipeline's (what the metrics register).
    #[test]
    fn decode_reasons_are_in_the_pipeline_list() {
        for r in DecodeError::REASONS {
            assert!(reasons::ALL.contains(&r), "{r} is not in posture_stage::reasons::ALL");
        }
        assert!(reasons::ALL.contains(&DecodeError::malformed(3, "x").reason()));
    }
}
