//! The hand-written Avro binary decoder and encoder of `posture.v1.ConfigChange`
//! (`schemas/avro/config_change.avsc`), and the primitive writers the output
//! encoders share.
//!
//! Why by hand: the generic `apache-avro` path builds a tree of `Value`s (every
//! field name cloned, every string allocated twice) and then has to be mapped
//! into a [`ConfigChange`]; decoding straight from the bytes into the result is
//! several times faster (see `benches/decode.rs`), and the evaluator's target is
//! a million events per second per core, decode included.
//!
//! The decoder reads exactly the binary layout of the embedded schema: it does
//! no schema resolution, so a writer schema whose binary layout differs (a
//! field added, reordered, a union widened) must not be accepted under the same
//! schema id (see [`crate::WireDecoder`]). It never panics on any input: every
//! length is checked against the bytes that remain before anything is
//! allocated, array lengths are capped, varints longer than 64 bits, negative
//! lengths, out-of-range enum and union indices, booleans other than 0/1,
//! invalid UTF-8, block byte sizes that do not match their block and trailing
//! bytes are all errors with the body offset where they were found.

use crate::error::DecodeError;
use crate::wire::MAGIC_BYTE;
use posture_core::{ChangeKind, ConfigChange, ConfigSource, DeviceInfo, Setting, Value};

/// Default cap on the number of items of any one array in an event (settings,
/// groups, tags, a string-list value). The engine rejects events with more than
/// 10,000 settings by default; the decoder's cap only bounds memory.
pub const DEFAULT_MAX_ARRAY_LEN: usize = 100_000;

/// Minimum encoded size of one array item, used to reject a block count that
/// cannot fit in the bytes left before reserving memory for it.
const MIN_STRING_BYTES: usize = 1;
const MIN_SETTING_BYTES: usize = 2;

/// Decodes the Avro binary body of one `posture.v1.ConfigChange` (no wire
/// format header) with the hand-written decoder.
///
/// `max_array_len` caps every array of the event ([`DEFAULT_MAX_ARRAY_LEN`] is
/// a sensible value). The whole body must be consumed, otherwise
/// [`DecodeError::TrailingBytes`].
pub fn decode_config_change_body(body: &[u8], max_array_len: usize) -> Result<ConfigChange, DecodeError> {
    let mut ev = empty_event();
    decode_config_change_body_into(body, max_array_len, &mut ev)?;
    Ok(ev)
}

/// An event with nothing in it, for the decoders to fill.
pub(crate) fn empty_event() -> ConfigChange {
    ConfigChange {
        event_id: String::new(),
        tenant_id: String::new(),
        device_id: String::new(),
        observed_at: 0,
        sequence: 0,
        source: ConfigSource::Agent,
        kind: ChangeKind::Upsert,
        device: None,
        settings: Vec::new(),
    }
}

/// [`decode_config_change_body`] into an existing event, reusing its
/// strings and settings (no allocation per event once `ev` has grown to the
/// events' sizes): the hot path of `posture run`. On error `ev` holds a mix
/// of old and new fields and must not be used.
pub fn decode_config_change_body_into(
    body: &[u8],
    max_array_len: usize,
    ev: &mut ConfigChange,
) -> Result<(), DecodeError> {
    let mut c = Cursor { buf: body, pos: 0 };
    c.string_into("event_id", &mut ev.event_id)?;
    c.string_into("tenant_id", &mut ev.tenant_id)?;
    c.string_into("device_id", &mut ev.device_id)?;
    ev.observed_at = c.long("observed_at")?;
    ev.sequence = c.long("sequence")?;
    let at = c.pos;
    ev.source = match c.long("source")? {
        0 => ConfigSource::Agent,
        1 => ConfigSource::GroupPolicy,
        2 => ConfigSource::Mdm,
        3 => ConfigSource::Intune,
        4 => ConfigSource::Scanner,
        5 => ConfigSource::Other,
        i => {
            return Err(DecodeError::malformed(
                at,
                format!("source: enum index {i} out of range 0..6"),
            ))
        }
    };
    let at = c.pos;
    ev.kind = match c.long("kind")? {
        0 => ChangeKind::Upsert,
        1 => ChangeKind::Remove,
        2 => ChangeKind::Snapshot,
        3 => ChangeKind::Retire,
        i => {
            return Err(DecodeError::malformed(
                at,
                format!("kind: enum index {i} out of range 0..4"),
            ))
        }
    };
    let at = c.pos;
    ev.device = match c.long("device")? {
        0 => None,
        1 => Some(c.device_info(max_array_len)?),
        i => {
            return Err(DecodeError::malformed(
                at,
                format!("device: union index {i} out of range 0..2"),
            ))
        }
    };
    let settings = &mut ev.settings;
    let n = c.array_each("settings", MIN_SETTING_BYTES, max_array_len, |c, i| {
        match settings.get_mut(i) {
            Some(s) => c.setting_into(s, max_array_len),
            None => {
                let mut s = Setting {
                    key: String::new(),
                    value: Value::Null,
                };
                c.setting_into(&mut s, max_array_len)?;
                settings.push(s);
                Ok(())
            }
        }
    })?;
    settings.truncate(n);
    if c.pos != body.len() {
        return Err(DecodeError::TrailingBytes {
            count: body.len() - c.pos,
        });
    }
    Ok(())
}

/// A bounds-checked read position in an Avro body.
pub(crate) struct Cursor<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[cold]
    pub(crate) fn eof(&self, what: &str) -> DecodeError {
        DecodeError::malformed(self.pos, format!("truncated reading {what}"))
    }

    /// A zig-zag varint `long` (also used for `int`, enum and union indices,
    /// lengths and block counts, whose ranges the callers check).
    // Always inlined: some 25 per event, mostly one byte (a call each was 4% of the evaluator).
    #[inline(always)]
    pub(crate) fn long(&mut self, what: &str) -> Result<i64, DecodeError> {
        match self.buf.get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Ok(unzigzag(b as u64))
            }
            Some(_) => self.long_slow(what),
            None => Err(self.eof(what)),
        }
    }

    /// Steps over a varint without computing its value (a skipped `int`, `long` or enum):
    /// the same checks as [`Cursor::long`], a scan for the last byte instead of the shifts.
    #[inline]
    pub(crate) fn skip_varint(&mut self, what: &str) -> Result<(), DecodeError> {
        let end = self.buf.len().min(self.pos + 10);
        let mut i = self.pos;
        while i < end {
            let b = self.buf[i];
            i += 1;
            if b < 0x80 {
                // The 10th byte holds bit 63 only; anything more overflows 64 bits.
                if i - self.pos == 10 && b > 1 {
                    break;
                }
                self.pos = i;
                return Ok(());
            }
        }
        if i == self.buf.len() && i - self.pos < 10 {
            return Err(DecodeError::malformed(i, format!("truncated reading {what}")));
        }
        Err(DecodeError::malformed(
            self.pos,
            format!("{what}: varint overflows 64 bits"),
        ))
    }

    #[inline(never)]
    fn long_slow(&mut self, what: &str) -> Result<i64, DecodeError> {
        let start = self.pos;
        let mut z = 0u64;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.eof(what));
            };
            self.pos += 1;
            // The 10th byte holds bit 63 only; anything more overflows 64 bits.
            if shift == 63 && b > 1 {
                return Err(DecodeError::malformed(
                    start,
                    format!("{what}: varint overflows 64 bits"),
                ));
            }
            z |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(unzigzag(z));
            }
            shift += 7;
        }
    }

    pub(crate) fn boolean(&mut self, what: &str) -> Result<bool, DecodeError> {
        match self.buf.get(self.pos) {
            Some(0) => {
                self.pos += 1;
                Ok(false)
            }
            Some(1) => {
                self.pos += 1;
                Ok(true)
            }
            Some(b) => Err(DecodeError::malformed(
                self.pos,
                format!("{what}: invalid boolean byte {b}"),
            )),
            None => Err(self.eof(what)),
        }
    }

    pub(crate) fn double(&mut self, what: &str) -> Result<f64, DecodeError> {
        match self.buf.get(self.pos..self.pos + 8) {
            Some(b) => {
                self.pos += 8;
                Ok(f64::from_le_bytes(b.try_into().expect("8 bytes")))
            }
            None => Err(self.eof(what)),
        }
    }

    /// A string, borrowed from the body.
    #[inline(always)]
    pub(crate) fn str_ref(&mut self, what: &str) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        let len = self.long(what)?;
        if len < 0 {
            return Err(DecodeError::malformed(
                at,
                format!("{what}: negative string length {len}"),
            ));
        }
        if len as u64 > self.remaining() as u64 {
            return Err(DecodeError::malformed(
                at,
                format!(
                    "{what}: string length {len} exceeds the {} bytes left",
                    self.remaining()
                ),
            ));
        }
        let buf: &'a [u8] = self.buf;
        let bytes = &buf[self.pos..self.pos + len as usize];
        let s = if bytes.is_ascii() {
            // SAFETY: ASCII is UTF-8. Ids, keys and most values are ASCII, and this check is a
            // fraction of `from_utf8`'s cost on such short strings (it was 9% of the evaluator).
            unsafe { std::str::from_utf8_unchecked(bytes) }
        } else {
            std::str::from_utf8(bytes).map_err(|e| {
                DecodeError::malformed(self.pos + e.valid_up_to(), format!("{what}: invalid UTF-8 in string"))
            })?
        };
        self.pos += len as usize;
        Ok(s)
    }

    #[inline]
    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        self.str_ref(what).map(str::to_owned)
    }

    /// A string into `out`, reusing its allocation.
    #[inline]
    pub(crate) fn string_into(&mut self, what: &str, out: &mut String) -> Result<(), DecodeError> {
        let s = self.str_ref(what)?;
        out.clear();
        out.push_str(s);
        Ok(())
    }

    /// An Avro array: blocks of `count` items ended by a 0 count; a negative
    /// count `-n` is followed by the block's size in bytes, which must match.
    fn array<T>(
        &mut self,
        field: &'static str,
        min_item_bytes: usize,
        max_len: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let mut out = Vec::new();
        self.array_each(field, min_item_bytes, max_len, |c, _| {
            out.push(item(c)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Cursor::array`] without a vector: `item(cursor, index)` reads each
    /// item. Returns the item count.
    pub(crate) fn array_each(
        &mut self,
        field: &'static str,
        min_item_bytes: usize,
        max_len: usize,
        mut item: impl FnMut(&mut Self, usize) -> Result<(), DecodeError>,
    ) -> Result<usize, DecodeError> {
        let mut len = 0usize;
        loop {
            let block_at = self.pos;
            let n = self.long(field)?;
            if n == 0 {
                return Ok(len);
            }
            let (count, end) = if n > 0 {
                (n as u64, None)
            } else {
                // -i64::MIN does not exist; any count that large is corrupt anyway.
                let count = n.unsigned_abs();
                let size_at = self.pos;
                let size = self.long(field)?;
                if size < 0 || size as u64 > self.remaining() as u64 {
                    return Err(DecodeError::malformed(
                        size_at,
                        format!(
                            "{field}: block byte size {size} invalid ({} bytes left)",
                            self.remaining()
                        ),
                    ));
                }
                (count, Some((self.pos + size as usize, size)))
            };
            if count > i64::MAX as u64 {
                return Err(DecodeError::malformed(
                    block_at,
                    format!("{field}: block count overflows"),
                ));
            }
            if count.saturating_mul(min_item_bytes as u64) > self.remaining() as u64 {
                return Err(DecodeError::malformed(
                    block_at,
                    format!(
                        "{field}: block of {count} items cannot fit in the {} bytes left",
                        self.remaining()
                    ),
                ));
            }
            if len as u64 + count > max_len as u64 {
                return Err(DecodeError::ArrayTooLong { field, max: max_len });
            }
            for _ in 0..count {
                item(self, len)?;
                len += 1;
            }
            if let Some((end, size)) = end {
                if self.pos != end {
                    return Err(DecodeError::malformed(
                        block_at,
                        format!(
                            "{field}: block byte size {size} does not match its {} bytes of items",
                            size + self.pos as i64 - end as i64
                        ),
                    ));
                }
            }
        }
    }

    fn strings(&mut self, field: &'static str, max_len: usize) -> Result<Vec<String>, DecodeError> {
        self.array(field, MIN_STRING_BYTES, max_len, |c| c.string(field))
    }

    fn device_info(&mut self, max_array_len: usize) -> Result<DeviceInfo, DecodeError> {
        let os_family = self.string("device.os_family")?;
        let os_version = self.string("device.os_version")?;
        let at = self.pos;
        let hostname = match self.long("device.hostname")? {
            0 => None,
            1 => Some(self.string("device.hostname")?),
            i => {
                return Err(DecodeError::malformed(
                    at,
                    format!("device.hostname: union index {i} out of range 0..2"),
                ))
            }
        };
        let groups = self.strings("device.groups", max_array_len)?;
        let tags = self.strings("device.tags", max_array_len)?;
        Ok(DeviceInfo {
            os_family,
            os_version,
            hostname,
            groups,
            tags,
        })
    }

    /// A setting into `s`, reusing its key and a string value.
    #[inline]
    pub(crate) fn setting_into(&mut self, s: &mut Setting, max_array_len: usize) -> Result<(), DecodeError> {
        self.string_into("settings.key", &mut s.key)?;
        let at = self.pos;
        s.value = match self.long("settings.value")? {
            0 => Value::Null,
            1 => Value::Bool(self.boolean("settings.value")?),
            2 => Value::Long(self.long("settings.value")?),
            3 => Value::Double(self.double("settings.value")?),
            4 => {
                if let Value::String(old) = &mut s.value {
                    return self.string_into("settings.value", old);
                }
                Value::String(self.string("settings.value")?)
            }
            5 => Value::Array(self.strings("settings.value", max_array_len)?),
            i => {
                return Err(DecodeError::malformed(
                    at,
                    format!("settings.value: union index {i} out of range 0..6"),
                ))
            }
        };
        Ok(())
    }
}

#[inline]
pub(crate) fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

// ---------------------------------------------------------------------------
// Encoding

/// Encodes an event in the Confluent wire format (magic byte, `schema_id`
/// big-endian, Avro binary body): what the simulator and tests produce into
/// Kafka. Byte-identical to `apache-avro`'s encoding of the same record.
pub fn encode_config_change(ev: &ConfigChange, schema_id: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 48 * ev.settings.len());
    encode_config_change_into(ev, schema_id, &mut out);
    out
}

/// Like [`encode_config_change`], appending to `out` so a producer can reuse
/// one buffer.
pub fn encode_config_change_into(ev: &ConfigChange, schema_id: u32, out: &mut Vec<u8>) {
    put_header(out, schema_id);
    put_str(out, &ev.event_id);
    put_str(out, &ev.tenant_id);
    put_str(out, &ev.device_id);
    put_long(out, ev.observed_at);
    put_long(out, ev.sequence);
    put_long(out, source_index(ev.source));
    put_long(out, kind_index(ev.kind));
    match &ev.device {
        None => put_long(out, 0),
        Some(d) => {
            put_long(out, 1);
            put_str(out, &d.os_family);
            put_str(out, &d.os_version);
            put_opt_str(out, d.hostname.as_deref());
            put_strs(out, &d.groups);
            put_strs(out, &d.tags);
        }
    }
    put_array(out, &ev.settings, |out, s| {
        put_str(out, &s.key);
        match &s.value {
            Value::Null => put_long(out, 0),
            Value::Bool(b) => {
                put_long(out, 1);
                out.push(*b as u8);
            }
            Value::Long(n) => {
                put_long(out, 2);
                put_long(out, *n);
            }
            Value::Double(d) => {
                put_long(out, 3);
                out.extend_from_slice(&d.to_le_bytes());
            }
            Value::String(x) => {
                put_long(out, 4);
                put_str(out, x);
            }
            Value::Array(a) => {
                put_long(out, 5);
                put_strs(out, a);
            }
        }
    });
}

/// Position of a source in the `ConfigSource` enum of the schema.
pub(crate) fn source_index(s: ConfigSource) -> i64 {
    match s {
        ConfigSource::Agent => 0,
        ConfigSource::GroupPolicy => 1,
        ConfigSource::Mdm => 2,
        ConfigSource::Intune => 3,
        ConfigSource::Scanner => 4,
        ConfigSource::Other => 5,
    }
}

/// Position of a kind in the `ChangeKind` enum of the schema.
pub(crate) fn kind_index(k: ChangeKind) -> i64 {
    match k {
        ChangeKind::Upsert => 0,
        ChangeKind::Remove => 1,
        ChangeKind::Snapshot => 2,
        ChangeKind::Retire => 3,
    }
}

/// The 5-byte Confluent header.
pub(crate) fn put_header(out: &mut Vec<u8>, schema_id: u32) {
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

/// A zig-zag varint (Avro `int` and `long`).
#[inline]
pub(crate) fn put_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    if z < 0x80 {
        // Most fields of a score delta (states, counts, indices) are one byte.
        out.push(z as u8);
        return;
    }
    // Into a stack buffer, then one append: one capacity check instead of one per byte.
    let mut buf = [0u8; 10];
    let mut n = 0;
    while z > 0x7f {
        buf[n] = (z as u8 & 0x7f) | 0x80;
        z >>= 7;
        n += 1;
    }
    buf[n] = z as u8;
    out.extend_from_slice(&buf[..=n]);
}

#[inline]
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// `union {null, string}`.
pub(crate) fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => put_long(out, 0),
        Some(s) => {
            put_long(out, 1);
            put_str(out, s);
        }
    }
}

pub(crate) fn put_double(out: &mut Vec<u8>, d: f64) {
    out.extend_from_slice(&d.to_le_bytes());
}

/// An array as one block (what `apache-avro` writes): count, items, 0.
pub(crate) fn put_array<T>(out: &mut Vec<u8>, items: &[T], mut f: impl FnMut(&mut Vec<u8>, &T)) {
    if !items.is_empty() {
        put_long(out, items.len() as i64);
        for it in items {
            f(out, it);
        }
    }
    out.push(0);
}

fn put_strs(out: &mut Vec<u8>, items: &[String]) {
    put_array(out, items, |out, s| put_str(out, s));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(bytes: &[u8]) -> Result<ConfigChange, DecodeError> {
        decode_config_change_body(bytes, DEFAULT_MAX_ARRAY_LEN)
    }

    fn minimal() -> ConfigChange {
        ConfigChange {
            event_id: "e".into(),
            tenant_id: "t".into(),
            device_id: "d".into(),
            observed_at: 1,
            sequence: 2,
            source: ConfigSource::Agent,
            kind: ChangeKind::Upsert,
            device: None,
            settings: vec![],
        }
    }

    #[test]
    fn varints() {
        for n in [0i64, 1, -1, 63, -64, 64, 1 << 40, i64::MAX, i64::MIN] {
            let mut b = Vec::new();
            put_long(&mut b, n);
            let mut c = Cursor { buf: &b, pos: 0 };
            assert_eq!(c.long("x").unwrap(), n);
            assert_eq!(c.pos, b.len());
        }
        // 10th byte with more than bit 63 overflows.
        let b = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        let err = Cursor { buf: &b, pos: 0 }.long("x").unwrap_err();
        assert!(err.to_string().contains("overflows"), "{err}");
        // A non-canonical (padded) varint is still the number.
        let b = [0x82, 0x80, 0x00];
        assert_eq!(Cursor { buf: &b, pos: 0 }.long("x").unwrap(), 1);
    }

    /// Skipping a varint accepts, refuses (with the same error) and advances exactly as reading
    /// it does.
    #[test]
    fn skip_varint_agrees_with_long() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 12) as usize;
            // Mostly continuation bytes, so long and overflowing varints are common.
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    let b = (x >> (i * 5)) as u8;
                    if (x >> (40 + i)) & 3 == 0 {
                        b & 0x7f
                    } else {
                        b | 0x80
                    }
                })
                .collect();
            let (mut a, mut b) = (Cursor { buf: &bytes, pos: 0 }, Cursor { buf: &bytes, pos: 0 });
            let (ra, rb) = (a.long("x").map(drop), b.skip_varint("x"));
            assert_eq!(ra, rb, "{bytes:02x?}");
            if ra.is_ok() {
                assert_eq!(a.pos, b.pos, "{bytes:02x?}");
            }
        }
    }

    #[test]
    fn minimal_round_trip_and_errors() {
        let ev = minimal();
        let wire = encode_config_change(&ev, 7);
        assert_eq!(&wire[..5], &[0, 0, 0, 0, 7]);
        let b = &wire[5..];
        assert_eq!(body(b).unwrap(), ev);
        // Every strict prefix is truncated.
        for n in 0..b.len() {
            let e = body(&b[..n]).unwrap_err();
            assert_eq!(e.reason(), "malformed_avro", "prefix {n}: {e}");
        }
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(body(&long).unwrap_err(), DecodeError::TrailingBytes { count: 1 });
        // source enum index 6 (zig-zag 12) is out of range.
        let mut bad = b.to_vec();
        let src = 3 * 2 + 2; // three 1-char strings, two 1-byte longs
        assert_eq!(bad[src], 0);
        bad[src] = 12;
        assert!(body(&bad).unwrap_err().to_string().contains("source: enum index 6"));
    }

    #[test]
    fn array_cap_and_huge_counts() {
        let mut ev = minimal();
        ev.settings = (0..5)
            .map(|i| Setting {
                key: format!("k{i}"),
                value: Value::Null,
            })
            .collect();
        let wire = encode_config_change(&ev, 1);
        assert_eq!(
            decode_config_change_body(&wire[5..], 4).unwrap_err(),
            DecodeError::ArrayTooLong {
                field: "settings",
                max: 4
            }
        );
        assert_eq!(decode_config_change_body(&wire[5..], 5).unwrap(), ev);
        // A block count far beyond the bytes left is rejected before reserving.
        let mut b = encode_config_change(&minimal(), 1)[5..].to_vec();
        b.pop();
        put_long(&mut b, 50_000);
        let e = body(&b).unwrap_err();
        assert!(e.to_string().contains("cannot fit"), "{e}");
        let mut b = encode_config_change(&minimal(), 1)[5..].to_vec();
        b.pop();
        put_long(&mut b, i64::MIN);
        put_long(&mut b, 0);
        assert!(body(&b).is_err());
    }
}
