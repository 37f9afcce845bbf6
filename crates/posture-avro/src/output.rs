//! The records posture produces, in the Confluent wire format:
//! `posture.v1.ScoreDelta` (`schemas/avro/score_delta.avsc`, topic
//! `posture.score-deltas`, one per engine [`Transition`]) and
//! `posture.v1.ScoreDropAlert` (`schemas/avro/alert.avsc`, topic
//! `posture.alerts`).
//!
//! The encoders are hand-written (every transition is encoded, so this is on
//! the hot path) and produce exactly the bytes `apache-avro` would; the
//! decoders go through `apache-avro` and are meant for tests, tools and
//! consumers that are not on the hot path.

use crate::binary::{put_array, put_double, put_header, put_long, put_opt_str, put_str};
use crate::error::DecodeError;
use crate::reference::{bad, long, shape, string, symbol, unwrap_union, Fields};
use crate::schemas;
use crate::wire::{split_wire, MAGIC_BYTE, WIRE_HEADER_LEN};
use apache_avro::types::Value as AvroValue;
use posture_core::engine::{count, view, Cell, Reason, ScopeDelta, NO_GROUP};
use posture_core::{ControlState, Engine, GroupIdx, RawState, Transition};

/// The names a [`Transition`] refers to by index. They live in the
/// [`Engine`] (tenant, device, group) and its catalog (control, category),
/// so the caller resolves them; [`DeltaNames::from_engine`] does it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaNames<'a> {
    /// Tenant name.
    pub tenant: &'a str,
    /// Device id.
    pub device: &'a str,
    /// Control id.
    pub control: &'a str,
    /// Category name (`Category::as_str`).
    pub category: &'a str,
}

impl<'a> DeltaNames<'a> {
    /// Resolves a transition's names from the engine that produced it.
    pub fn from_engine(engine: &'a Engine, t: &Transition) -> DeltaNames<'a> {
        let c = &engine.catalog().controls[t.control as usize];
        DeltaNames {
            tenant: engine.tenant_name(t.tenant),
            device: engine.device_name(t.device),
            control: &c.id,
            category: c.category.as_str(),
        }
    }
}

/// Encodes one transition and its scope deltas as a `ScoreDelta` record in the
/// wire format. `group_name` resolves the device-group index of each scope
/// delta; it is not called for the tenant-wide scope ([`NO_GROUP`], written
/// as null). With an [`Engine`] at hand use [`encode_engine_delta_into`].
pub fn encode_score_delta<'g>(
    names: &DeltaNames<'_>,
    t: &Transition,
    scopes: &[ScopeDelta],
    group_name: impl Fn(GroupIdx) -> &'g str,
    schema_id: u32,
) -> Vec<u8> {
    let mut out = Vec::new();
    encode_score_delta_into(names, t, scopes, group_name, schema_id, &mut out);
    out
}

/// Like [`encode_score_delta`], appending to `out` so a producer can reuse
/// one buffer.
pub fn encode_score_delta_into<'g>(
    names: &DeltaNames<'_>,
    t: &Transition,
    scopes: &[ScopeDelta],
    group_name: impl Fn(GroupIdx) -> &'g str,
    schema_id: u32,
    out: &mut Vec<u8>,
) {
    // `group_name` is called twice per scope (sizing, then writing): it must answer the same
    // for the same index, as a lookup does.
    let group = |d: &ScopeDelta| (d.scope.group != NO_GROUP).then(|| group_name(d.scope.group));
    // The record's largest encoding: every long at its 10-byte maximum (4 string lengths, 4
    // states, 8 more longs with one spare, the array's count and end), the two booleans, every
    // string's bytes, and per scope its union index, group length and 9 longs. The record is
    // written into that much room, then cut to what it took.
    let names_len = names.tenant.len() + names.device.len() + names.control.len() + names.category.len();
    let groups_len: usize = scopes.iter().map(|d| group(d).map_or(0, str::len)).sum();
    let bound = WIRE_HEADER_LEN
        + names_len
        + 4 * 10
        + 4 * 10
        + 2
        + 9 * 10
        + 2 * 10
        + scopes.len() * (10 + 10 + 9 * 10)
        + groups_len;
    let start = out.len();
    out.resize(start + bound, 0);
    let mut w = Writer {
        buf: &mut out[start..],
        pos: 0,
    };
    w.bytes(&[MAGIC_BYTE]);
    w.bytes(&schema_id.to_be_bytes());
    w.str(names.tenant);
    w.str(names.device);
    w.str(names.control);
    w.str(names.category);
    w.long(state_index(t.old.state()));
    w.long(state_index(t.new.state()));
    w.long(raw_index(t.old.raw));
    w.long(raw_index(t.new.raw));
    w.bytes(&[t.old_counted as u8, t.new_counted as u8]);
    w.long(reason_index(t.reason));
    w.long(t.event_time);
    w.long(t.source.partition as i64);
    w.long(t.source.offset);
    w.long(t.device_points[view::WITH]);
    w.long(t.device_points[view::WITHOUT]);
    w.long(t.device_max[view::WITH]);
    w.long(t.device_max[view::WITHOUT]);
    // An array as one block (what apache-avro writes): count, items, 0.
    if !scopes.is_empty() {
        w.long(scopes.len() as i64);
        for d in scopes {
            match group(d) {
                None => w.long(0),
                Some(g) => {
                    w.long(1);
                    w.str(g);
                }
            }
            w.long(d.points[view::WITH]);
            w.long(d.max[view::WITH]);
            w.long(d.points[view::WITHOUT]);
            w.long(d.max[view::WITHOUT]);
            for k in [
                count::EFF_PASS,
                count::EFF_FAIL,
                count::EFF_HIDDEN,
                count::RAW_PASS,
                count::RAW_FAIL,
            ] {
                w.long(d.counts[k] as i64);
            }
        }
    }
    w.long(0);
    let len = w.pos;
    out.truncate(start + len);
}

/// A write position in room sized beforehand for the largest encoding of a record: each byte
/// is a store with a bounds check, where pushing to a `Vec` checks its capacity per byte (the
/// encoder was a third of the evaluator's instructions that way).
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    /// A zig-zag varint (Avro `int` and `long`).
    #[inline(always)]
    fn long(&mut self, n: i64) {
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        while z > 0x7f {
            self.buf[self.pos] = (z as u8 & 0x7f) | 0x80;
            self.pos += 1;
            z >>= 7;
        }
        self.buf[self.pos] = z as u8;
        self.pos += 1;
    }
    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    #[inline(always)]
    fn str(&mut self, s: &str) {
        self.long(s.len() as i64);
        self.bytes(s.as_bytes());
    }
}

/// Encodes a transition of `engine` (names and groups resolved from it),
/// appending to `out`. `scopes` is `Output::deltas_of(t)`.
pub fn encode_engine_delta_into(
    engine: &Engine,
    t: &Transition,
    scopes: &[ScopeDelta],
    schema_id: u32,
    out: &mut Vec<u8>,
) {
    let names = DeltaNames::from_engine(engine, t);
    encode_score_delta_into(
        &names,
        t,
        scopes,
        |g| engine.group_name(g).unwrap_or_default(),
        schema_id,
        out,
    );
}

fn state_index(s: ControlState) -> i64 {
    match s {
        ControlState::Pass => 0,
        ControlState::Fail => 1,
        ControlState::Unknown => 2,
        ControlState::NotApplicable => 3,
        ControlState::Excepted => 4,
    }
}

fn raw_index(s: RawState) -> i64 {
    match s {
        RawState::Pass => 0,
        RawState::Fail => 1,
        RawState::Unknown => 2,
        RawState::NotApplicable => 3,
    }
}

fn reason_index(r: Reason) -> i64 {
    match r {
        Reason::Event => 0,
        Reason::Retired => 1,
        Reason::Inactive => 2,
        Reason::ExceptionStarted => 3,
        Reason::ExceptionEnded => 4,
    }
}

/// A `ScoreDelta` record read back (see [`decode_score_delta`]): the
/// transition with its names resolved. Points are micro-points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScoreDeltaRecord {
    /// Tenant name.
    pub tenant: String,
    /// Device id.
    pub device: String,
    /// Control id.
    pub control: String,
    /// Category name.
    pub category: String,
    /// State before.
    pub old_state: ControlState,
    /// State after.
    pub new_state: ControlState,
    /// Evaluation result before.
    pub old_raw: RawState,
    /// Evaluation result after.
    pub new_raw: RawState,
    /// Whether the device counted before.
    pub old_counted: bool,
    /// Whether the device counts after.
    pub new_counted: bool,
    /// Why it happened.
    pub reason: Reason,
    /// Event time, ms since the epoch.
    pub event_time: i64,
    /// Kafka partition of the cause (-1: not from Kafka).
    pub source_partition: i32,
    /// Kafka offset (or file line) of the cause.
    pub source_offset: i64,
    /// Device score delta with exceptions.
    pub device_points_with: i64,
    /// Device score delta without exceptions.
    pub device_points_without: i64,
    /// Device maximum delta with exceptions.
    pub device_max_with: i64,
    /// Device maximum delta without exceptions.
    pub device_max_without: i64,
    /// Scope changes.
    pub scopes: Vec<ScopeChangeRecord>,
}

/// One `ScopeChange` of a [`ScoreDeltaRecord`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeChangeRecord {
    /// Device group; `None` = the whole tenant.
    pub group: Option<String>,
    /// Score delta with exceptions.
    pub points_with: i64,
    /// Maximum delta with exceptions.
    pub max_with: i64,
    /// Score delta without exceptions.
    pub points_without: i64,
    /// Maximum delta without exceptions.
    pub max_without: i64,
    /// PASS count delta with exceptions.
    pub pass_with: i32,
    /// FAIL count delta with exceptions.
    pub fail_with: i32,
    /// Hidden-FAIL count delta with exceptions.
    pub hidden_with: i32,
    /// PASS count delta without exceptions.
    pub pass_without: i32,
    /// FAIL count delta without exceptions.
    pub fail_without: i32,
}

impl ScoreDeltaRecord {
    /// The record the encoder writes for a transition: what a consumer reads
    /// back. `group_name` as in [`encode_score_delta`].
    pub fn of<'g>(
        names: &DeltaNames<'_>,
        t: &Transition,
        scopes: &[ScopeDelta],
        group_name: impl Fn(GroupIdx) -> &'g str,
    ) -> ScoreDeltaRecord {
        let c = |cell: Cell| (cell.state(), cell.raw);
        ScoreDeltaRecord {
            tenant: names.tenant.into(),
            device: names.device.into(),
            control: names.control.into(),
            category: names.category.into(),
            old_state: c(t.old).0,
            new_state: c(t.new).0,
            old_raw: c(t.old).1,
            new_raw: c(t.new).1,
            old_counted: t.old_counted,
            new_counted: t.new_counted,
            reason: t.reason,
            event_time: t.event_time,
            source_partition: t.source.partition,
            source_offset: t.source.offset,
            device_points_with: t.device_points[view::WITH],
            device_points_without: t.device_points[view::WITHOUT],
            device_max_with: t.device_max[view::WITH],
            device_max_without: t.device_max[view::WITHOUT],
            scopes: scopes
                .iter()
                .map(|d| ScopeChangeRecord {
                    group: (d.scope.group != NO_GROUP).then(|| group_name(d.scope.group).to_owned()),
                    points_with: d.points[view::WITH],
                    max_with: d.max[view::WITH],
                    points_without: d.points[view::WITHOUT],
                    max_without: d.max[view::WITHOUT],
                    pass_with: d.counts[count::EFF_PASS] as i32,
                    fail_with: d.counts[count::EFF_FAIL] as i32,
                    hidden_with: d.counts[count::EFF_HIDDEN] as i32,
                    pass_without: d.counts[count::RAW_PASS] as i32,
                    fail_without: d.counts[count::RAW_FAIL] as i32,
                })
                .collect(),
        }
    }
}

/// Decodes a wire-format `ScoreDelta` record (any schema id) through
/// `apache-avro` and `score_delta.avsc`. For tests, tools and consumers.
pub fn decode_score_delta(record: &[u8]) -> Result<ScoreDeltaRecord, DecodeError> {
    let v = decode_datum(record, schemas::score_delta())?;
    let mut f = Fields::of(v, "ScoreDelta")?;
    let state = |v: AvroValue, what: &str| -> Result<ControlState, DecodeError> {
        let s = symbol(v, what)?;
        [
            ControlState::Pass,
            ControlState::Fail,
            ControlState::Unknown,
            ControlState::NotApplicable,
            ControlState::Excepted,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| bad(what, format!("unknown symbol {s:?}")))
    };
    let raw = |v: AvroValue, what: &str| -> Result<RawState, DecodeError> {
        let s = symbol(v, what)?;
        [
            RawState::Pass,
            RawState::Fail,
            RawState::Unknown,
            RawState::NotApplicable,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| bad(what, format!("unknown symbol {s:?}")))
    };
    let tenant = string(f.take("tenant")?, "tenant")?;
    let device = string(f.take("device")?, "device")?;
    let control = string(f.take("control")?, "control")?;
    let category = string(f.take("category")?, "category")?;
    let old_state = state(f.take("old_state")?, "old_state")?;
    let new_state = state(f.take("new_state")?, "new_state")?;
    let old_raw = raw(f.take("old_raw")?, "old_raw")?;
    let new_raw = raw(f.take("new_raw")?, "new_raw")?;
    let old_counted = boolean(f.take("old_counted")?, "old_counted")?;
    let new_counted = boolean(f.take("new_counted")?, "new_counted")?;
    let reason_sym = symbol(f.take("reason")?, "reason")?;
    let reason = [
        Reason::Event,
        Reason::Retired,
        Reason::Inactive,
        Reason::ExceptionStarted,
        Reason::ExceptionEnded,
    ]
    .into_iter()
    .find(|r| r.as_str() == reason_sym)
    .ok_or_else(|| bad("reason", format!("unknown symbol {reason_sym:?}")))?;
    let event_time = long(f.take("event_time")?, "event_time")?;
    let source_partition = int(f.take("source_partition")?, "source_partition")?;
    let source_offset = long(f.take("source_offset")?, "source_offset")?;
    let device_points_with = long(f.take("device_points_with")?, "device_points_with")?;
    let device_points_without = long(f.take("device_points_without")?, "device_points_without")?;
    let device_max_with = long(f.take("device_max_with")?, "device_max_with")?;
    let device_max_without = long(f.take("device_max_without")?, "device_max_without")?;
    let scopes = match f.take("scopes")? {
        AvroValue::Array(items) => items
            .into_iter()
            .map(|it| {
                let mut s = Fields::of(it, "scopes")?;
                Ok(ScopeChangeRecord {
                    group: match unwrap_union(s.take("group")?) {
                        AvroValue::Null => None,
                        v => Some(string(v, "scopes.group")?),
                    },
                    points_with: long(s.take("points_with")?, "points_with")?,
                    max_with: long(s.take("max_with")?, "max_with")?,
                    points_without: long(s.take("points_without")?, "points_without")?,
                    max_without: long(s.take("max_without")?, "max_without")?,
                    pass_with: int(s.take("pass_with")?, "pass_with")?,
                    fail_with: int(s.take("fail_with")?, "fail_with")?,
                    hidden_with: int(s.take("hidden_with")?, "hidden_with")?,
                    pass_without: int(s.take("pass_without")?, "pass_without")?,
                    fail_without: int(s.take("fail_without")?, "fail_without")?,
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?,
        v => return Err(bad("scopes", format!("expected an array, got {}", shape(&v)))),
    };
    Ok(ScoreDeltaRecord {
        tenant,
        device,
        control,
        category,
        old_state,
        new_state,
        old_raw,
        new_raw,
        old_counted,
        new_counted,
        reason,
        event_time,
        source_partition,
        source_offset,
        device_points_with,
        device_points_without,
        device_max_with,
        device_max_without,
        scopes,
    })
}

/// A score-drop alert (`posture.v1.ScoreDropAlert`): a scope's percent fell
/// from `old_percent` to `new_percent` within `window_ms` ending at `at`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreDropAlert {
    /// Tenant of the scope.
    pub tenant: String,
    /// Device group of the scope; `None` = the whole tenant.
    pub group: Option<String>,
    /// Category of the scope; `None` = all categories.
    pub category: Option<String>,
    /// Percent at the start of the window.
    pub old_percent: f64,
    /// Percent at `at`.
    pub new_percent: f64,
    /// Window length, ms.
    pub window_ms: i64,
    /// Event time of the alert, ms since the epoch.
    pub at: i64,
    /// The largest contributors, most points lost first.
    pub causes: Vec<AlertCause>,
}

/// One contributor to a score drop.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertCause {
    /// Control id.
    pub control: String,
    /// Device id.
    pub device: String,
    /// Points the scope lost through this device-control.
    pub points_lost: f64,
}

/// Encodes an alert in the wire format.
pub fn encode_alert(alert: &ScoreDropAlert, schema_id: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 32 * alert.causes.len());
    encode_alert_into(alert, schema_id, &mut out);
    out
}

/// Like [`encode_alert`], appending to `out`.
pub fn encode_alert_into(alert: &ScoreDropAlert, schema_id: u32, out: &mut Vec<u8>) {
    put_header(out, schema_id);
    put_str(out, &alert.tenant);
    put_opt_str(out, alert.group.as_deref());
    put_opt_str(out, alert.category.as_deref());
    put_double(out, alert.old_percent);
    put_double(out, alert.new_percent);
    put_long(out, alert.window_ms);
    put_long(out, alert.at);
    put_array(out, &alert.causes, |out, c| {
        put_str(out, &c.control);
        put_str(out, &c.device);
        put_double(out, c.points_lost);
    });
}

/// Decodes a wire-format `ScoreDropAlert` (any schema id) through
/// `apache-avro` and `alert.avsc`.
pub fn decode_alert(record: &[u8]) -> Result<ScoreDropAlert, DecodeError> {
    let v = decode_datum(record, schemas::alert())?;
    let mut f = Fields::of(v, "ScoreDropAlert")?;
    let opt = |v: AvroValue, what: &str| match unwrap_union(v) {
        AvroValue::Null => Ok(None),
        v => string(v, what).map(Some),
    };
    Ok(ScoreDropAlert {
        tenant: string(f.take("tenant")?, "tenant")?,
        group: opt(f.take("group")?, "group")?,
        category: opt(f.take("category")?, "category")?,
        old_percent: double(f.take("old_percent")?, "old_percent")?,
        new_percent: double(f.take("new_percent")?, "new_percent")?,
        window_ms: long(f.take("window_ms")?, "window_ms")?,
        at: long(f.take("at")?, "at")?,
        causes: match f.take("causes")? {
            AvroValue::Array(items) => items
                .into_iter()
                .map(|it| {
                    let mut c = Fields::of(it, "causes")?;
                    Ok(AlertCause {
                        control: string(c.take("control")?, "causes.control")?,
                        device: string(c.take("device")?, "causes.device")?,
                        points_lost: double(c.take("points_lost")?, "causes.points_lost")?,
                    })
                })
                .collect::<Result<Vec<_>, DecodeError>>()?,
            v => return Err(bad("causes", format!("expected an array, got {}", shape(&v)))),
        },
    })
}

/// Wire header, then one datum of `schema`, which must use every byte.
fn decode_datum(record: &[u8], schema: &apache_avro::Schema) -> Result<AvroValue, DecodeError> {
    let (_, body) = split_wire(record)?;
    let mut cur = std::io::Cursor::new(body);
    let v = apache_avro::from_avro_datum(schema, &mut cur, None)
        .map_err(|e| DecodeError::malformed(cur.position() as usize, e.to_string()))?;
    let used = cur.position() as usize;
    if used != body.len() {
        return Err(DecodeError::TrailingBytes {
            count: body.len() - used,
        });
    }
    Ok(v)
}

fn int(v: AvroValue, what: &str) -> Result<i32, DecodeError> {
    match v {
        AvroValue::Int(n) => Ok(n),
        v => Err(bad(what, format!("expected an int, got {}", shape(&v)))),
    }
}

fn boolean(v: AvroValue, what: &str) -> Result<bool, DecodeError> {
    match v {
        AvroValue::Boolean(b) => Ok(b),
        v => Err(bad(what, format!("expected a boolean, got {}", shape(&v)))),
    }
}

fn double(v: AvroValue, what: &str) -> Result<f64, DecodeError> {
    match v {
        AvroValue::Double(d) => Ok(d),
        v => Err(bad(what, format!("expected a double, got {}", shape(&v)))),
    }
}
