//! Avro object container files of `ConfigChange` (the `Obj\x01` format written
//! by Avro tools, Spark, Kafka Connect sinks and `apache-avro`'s `Writer`), so
//! `posture evaluate` can score an exported file as well as JSON lines.
//!
//! Reading goes through `apache-avro`'s [`apache_avro::Reader`] with the
//! embedded `ConfigChange` schema as the reader schema: files written with a
//! compatible writer schema (fields added with defaults, say) are resolved to
//! it. Codecs: null, deflate and snappy.

use crate::error::DecodeError;
use crate::reference::from_value;
use crate::schemas;
use posture_core::ConfigChange;
use std::io::Read;

/// The 4 magic bytes every object container file starts with.
pub const CONTAINER_MAGIC: [u8; 4] = *b"Obj\x01";

/// Whether a file starting with `first_bytes` is an Avro object container file
/// (needs at least 4 bytes; a JSON-lines file never starts with `Obj`).
pub fn is_container(first_bytes: &[u8]) -> bool {
    first_bytes.starts_with(&CONTAINER_MAGIC)
}

/// Reads the `ConfigChange` records of an object container file, in order.
///
/// Each item is one record or the error that stopped the reading: a bad
/// header (the only item then), a writer schema that cannot be resolved to
/// `ConfigChange`, or a corrupt block are [`DecodeError::Container`] and end
/// the iteration; a record of the right schema whose values cannot be mapped
/// is [`DecodeError::Malformed`] (also the last item, since after a bad record
/// the rest of its block cannot be trusted).
pub fn read_container<R: Read>(reader: R) -> impl Iterator<Item = Result<ConfigChange, DecodeError>> {
    let (inner, first_err) = match apache_avro::Reader::with_schema(schemas::config_change(), reader) {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(container_err(e))),
    };
    ContainerIter {
        inner,
        first_err,
        done: false,
    }
}

struct ContainerIter<R: Read> {
    inner: Option<apache_avro::Reader<'static, R>>,
    first_err: Option<DecodeError>,
    done: bool,
}

impl<R: Read> Iterator for ContainerIter<R> {
    type Item = Result<ConfigChange, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(e) = self.first_err.take() {
            self.done = true;
            return Some(Err(e));
        }
        let item = match self.inner.as_mut()?.next()? {
            Ok(v) => from_value(v),
            Err(e) => Err(container_err(e)),
        };
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }
}

fn container_err(e: apache_avro::Error) -> DecodeError {
    DecodeError::Container { detail: e.to_string() }
}
