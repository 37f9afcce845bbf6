//! Avro schema resolution into `posture.v1.ConfigChange`: records written with
//! an older or newer writer schema, read into our reader schema by the rules of
//! the Avro specification ("Schema Resolution").
//!
//! A fleet never upgrades its agents at once, so one topic carries records of
//! several writer schemas, each named by its schema id. The hot decoder
//! ([`crate::binary`]) reads only the embedded schema's exact layout; for any
//! other writer schema, [`ResolutionPlan::compile`] works out once, per schema
//! id, what to do with every writer field:
//!
//! * a field the reader has is read into it, with Avro's promotions (`int` to
//!   `long` or `double`, `long` and `float` to `double`, `bytes` to `string`),
//!   enum symbols mapped by name (a symbol the reader lacks takes the reader
//!   enum's `default`), unions matched branch by branch;
//! * a field the reader does not have is skipped (its bytes walked, nothing
//!   built);
//! * a reader field the writer does not have takes the reader's `default`.
//!
//! The plan then decodes straight into a [`ConfigChange`], like the hot path:
//! no generic `Value` tree, no per-record name lookups.
//!
//! A writer schema that cannot be read is refused at compile time with a
//! [`ResolveError`] naming the field, following the reference (Java)
//! implementation's compatibility check: a reader field missing from the writer
//! without a default, a type Avro does not promote, a writer union with a branch
//! the reader cannot read, an enum symbol the reader lacks when the reader enum
//! has no default, a record of another name. Refusing the schema, not the
//! record, means every record of that id is dead-lettered with the same reason,
//! never a mix of decoded and refused ones.
//!
//! Logical types are read as their underlying types (the spec: a reader ignores
//! a logical type it does not need). Field aliases are not used: the reader
//! schema has none.

use crate::binary::Cursor;
use crate::error::DecodeError;
use crate::schemas;
use apache_avro::schema::{Name, RecordField, ResolvedSchema, Schema};
use posture_core::{ChangeKind, ConfigChange, ConfigSource, DeviceInfo, Setting, Value};
use std::cell::Cell;
use std::collections::HashMap;

/// How deeply a writer's nested records, arrays and maps may go before a
/// record is refused as malformed: recursive writer types would otherwise let
/// one record exhaust the stack.
pub const MAX_NESTING: usize = 64;

/// Why a writer schema cannot be read into `posture.v1.ConfigChange`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", if field.is_empty() { "the record".to_owned() } else { format!("field {field}") })]
pub struct ResolveError {
    /// The reader's field, dotted from the top record (`device.hostname`,
    /// `settings.value`); empty for the record itself.
    pub field: String,
    /// What does not resolve.
    pub detail: String,
}

fn err(field: &str, detail: impl Into<String>) -> ResolveError {
    ResolveError {
        field: field.to_owned(),
        detail: detail.into(),
    }
}

/// Parses a writer schema's text for resolution. Like `Schema::parse_str`, but with the `uuid`
/// logical type taken off first: apache-avro turns both a `string` and a `fixed` of 16 bytes
/// marked `uuid` into one `Schema::Uuid`, losing which encoding the writer used (so a `fixed`
/// uuid would be skipped as a length-prefixed string). A reader ignores logical types it does
/// not need (the spec), and ours needs none but `timestamp-millis`.
pub fn parse_writer_schema(text: &str) -> Result<Schema, apache_avro::Error> {
    fn strip_uuid(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                if m.get("logicalType").and_then(|t| t.as_str()) == Some("uuid") {
                    m.remove("logicalType");
                }
                m.values_mut().for_each(strip_uuid);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip_uuid),
            _ => {}
        }
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(mut v) => {
            strip_uuid(&mut v);
            Schema::parse_str(&v.to_string())
        }
        Err(_) => Schema::parse_str(text),
    }
}

/// A reader field a writer field is read into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    EventId,
    TenantId,
    DeviceId,
    ObservedAt,
    Sequence,
    Source,
    Kind,
    Device,
    Settings,
    OsFamily,
    OsVersion,
    Hostname,
    Groups,
    Tags,
    Key,
    Value,
}

impl Target {
    fn path(self) -> &'static str {
        match self {
            Target::EventId => "event_id",
            Target::TenantId => "tenant_id",
            Target::DeviceId => "device_id",
            Target::ObservedAt => "observed_at",
            Target::Sequence => "sequence",
            Target::Source => "source",
            Target::Kind => "kind",
            Target::Device => "device",
            Target::Settings => "settings",
            Target::OsFamily => "device.os_family",
            Target::OsVersion => "device.os_version",
            Target::Hostname => "device.hostname",
            Target::Groups => "device.groups",
            Target::Tags => "device.tags",
            Target::Key => "settings.key",
            Target::Value => "settings.value",
        }
    }

    /// The reader field of `record` (`ConfigChange`, `DeviceInfo`, `Setting`) named `name`.
    fn of(record: &str, name: &str) -> Option<Target> {
        Some(match (record, name) {
            ("ConfigChange", "event_id") => Target::EventId,
            ("ConfigChange", "tenant_id") => Target::TenantId,
            ("ConfigChange", "device_id") => Target::DeviceId,
            ("ConfigChange", "observed_at") => Target::ObservedAt,
            ("ConfigChange", "sequence") => Target::Sequence,
            ("ConfigChange", "source") => Target::Source,
            ("ConfigChange", "kind") => Target::Kind,
            ("ConfigChange", "device") => Target::Device,
            ("ConfigChange", "settings") => Target::Settings,
            ("DeviceInfo", "os_family") => Target::OsFamily,
            ("DeviceInfo", "os_version") => Target::OsVersion,
            ("DeviceInfo", "hostname") => Target::Hostname,
            ("DeviceInfo", "groups") => Target::Groups,
            ("DeviceInfo", "tags") => Target::Tags,
            ("Setting", "key") => Target::Key,
            ("Setting", "value") => Target::Value,
            _ => return None,
        })
    }
}

/// How the writer's encoding of one field is read as the reader's type.
#[derive(Debug, Clone)]
enum Src {
    Null,
    Bool,
    /// An `int` (a varint that must fit 32 bits), promoted as needed.
    Int,
    Long,
    /// A `float` (4 bytes), promoted to `double`.
    Float,
    Double,
    /// A `string`, or `bytes` promoted to `string` (UTF-8 checked).
    Str,
    /// Writer enum index to the reader's symbol index.
    Enum(Box<[u8]>),
    /// An array whose items are read as planned.
    Array(Box<Src>),
    /// A record read into the reader's record (`DeviceInfo`, `Setting`).
    Record(Box<RecordPlan>),
    /// A writer union: each branch read as planned.
    Union(Box<[Src]>),
}

/// How a writer value the reader does not have is skipped.
#[derive(Debug, Clone)]
enum Skip {
    Zero,
    Bool,
    Varint,
    Bytes,
    Fixed(usize),
    Array(Box<Skip>),
    Map(Box<Skip>),
    Union(Box<[Skip]>),
    /// A named record, by its index in [`ResolutionPlan::records`] (recursive
    /// writer types refer to themselves this way).
    Record(usize),
}

#[derive(Debug, Clone)]
enum Step {
    Read(Target, Src),
    Skip(Skip),
}

/// A reader field's default, taken when the writer does not have the field.
#[derive(Debug, Clone)]
enum Fill {
    Str(String),
    Long(i64),
    Enum(u8),
    None,
    Strs(Vec<String>),
    Empty,
}

/// One reader record: the writer's fields in writer order, then the defaults.
#[derive(Debug, Clone)]
struct RecordPlan {
    steps: Box<[Step]>,
    fills: Box<[(Target, Fill)]>,
    /// How many leading writer fields have exactly the reader's leading fields' names and
    /// types, in order: a setting whose first two are `key` and `value` as ours, and an event
    /// whose first five are ours (ids, time, sequence), have those read directly, and only the
    /// rest by the plan (the common evolution: fields added).
    same_prefix: usize,
}

/// What a plan does differently from the hot path, for logs and the README.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanSummary {
    /// Writer fields the reader does not have (dotted paths).
    pub skipped: Vec<String>,
    /// Reader fields the writer does not have, which take their defaults.
    pub defaulted: Vec<String>,
    /// Reader fields read through a promotion, a union or an enum mapping.
    pub converted: Vec<String>,
}

impl std::fmt::Display for PlanSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| if v.is_empty() { "none".to_owned() } else { v.join(", ") };
        write!(
            f,
            "skips {}; defaults {}; converts {}",
            list(&self.skipped),
            list(&self.defaulted),
            list(&self.converted)
        )
    }
}

/// How to read records of one writer schema into `ConfigChange`: compiled once
/// per schema id by [`ResolutionPlan::compile`], then used for every record of
/// that id by [`ResolutionPlan::decode_into`].
#[derive(Debug, Clone)]
pub struct ResolutionPlan {
    top: RecordPlan,
    /// Named writer records that are skipped, by index.
    records: Vec<Box<[Skip]>>,
    summary: PlanSummary,
    writer: Schema,
    writer_canonical_form: String,
}

impl PartialEq for ResolutionPlan {
    /// Plans of the same writer schema are equal (the reader is always ours).
    fn eq(&self, other: &ResolutionPlan) -> bool {
        self.writer_canonical_form == other.writer_canonical_form
    }
}

impl Eq for ResolutionPlan {}

/// The reader's type of a target, as far as resolution needs it.
enum ReaderType<'r> {
    Str,
    Long,
    Enum {
        name: &'r str,
        symbols: &'r [String],
        default: Option<&'r str>,
    },
    OptStr,
    Strs,
    OptRecord(&'r Schema),
    Records(&'r Schema),
    Value,
}

struct Compiler<'w> {
    names: HashMap<Name, &'w Schema>,
    records: Vec<Box<[Skip]>>,
    record_index: HashMap<Name, usize>,
    summary: PlanSummary,
}

impl ResolutionPlan {
    /// Compiles the plan that reads records written with `writer` into the
    /// embedded `ConfigChange` reader schema, or says which field cannot be
    /// read and why.
    pub fn compile(writer: &Schema) -> Result<ResolutionPlan, ResolveError> {
        let resolved = ResolvedSchema::try_from(writer).map_err(|e| err("", format!("writer schema: {e}")))?;
        let names = resolved
            .get_names()
            .iter()
            .map(|(n, s)| (n.clone(), *s))
            .collect::<HashMap<_, _>>();
        let mut c = Compiler {
            names,
            records: Vec::new(),
            record_index: HashMap::new(),
            summary: PlanSummary::default(),
        };
        let top = c.record(writer, schemas::config_change(), "")?;
        Ok(ResolutionPlan {
            top,
            records: c.records,
            summary: c.summary,
            writer: writer.clone(),
            writer_canonical_form: writer.canonical_form(),
        })
    }

    /// The writer schema the plan reads.
    pub fn writer(&self) -> &Schema {
        &self.writer
    }

    /// What the plan skips, defaults and converts.
    pub fn summary(&self) -> &PlanSummary {
        &self.summary
    }

    /// Decodes one Avro body (no wire header) written with the plan's writer
    /// schema into `ev`, reusing its strings and settings as the hot path
    /// does. Every array is capped at `max_array_len` items; the whole body
    /// must be consumed. On error `ev` must not be used.
    pub fn decode_into(&self, body: &[u8], max_array_len: usize, ev: &mut ConfigChange) -> Result<(), DecodeError> {
        let skipped = Cell::new(0);
        let mut r = Run {
            c: Cursor { buf: body, pos: 0 },
            max: max_array_len,
            records: &self.records,
            skipped: &skipped,
        };
        r.event(&self.top, ev)?;
        if r.c.pos != body.len() {
            return Err(DecodeError::TrailingBytes {
                count: body.len() - r.c.pos,
            });
        }
        Ok(())
    }

    /// [`ResolutionPlan::decode_into`] into a new event.
    pub fn decode(&self, body: &[u8], max_array_len: usize) -> Result<ConfigChange, DecodeError> {
        let mut ev = crate::binary::empty_event();
        self.decode_into(body, max_array_len, &mut ev)?;
        Ok(ev)
    }
}

/// The writer type's name for messages (`int`, `record Foo`, `union [null, string]`).
fn describe(s: &Schema) -> String {
    match s {
        Schema::Record(r) => format!("record {}", r.name.name),
        Schema::Enum(e) => format!("enum {}", e.name.name),
        Schema::Fixed(f) => format!("fixed {}", f.name.name),
        Schema::Ref { name } => name.name.clone(),
        Schema::Array(a) => format!("array of {}", describe(&a.items)),
        Schema::Map(m) => format!("map of {}", describe(&m.types)),
        Schema::Union(u) => format!(
            "union [{}]",
            u.variants().iter().map(describe).collect::<Vec<_>>().join(", ")
        ),
        other => {
            let kind = format!("{:?}", apache_avro::schema::SchemaKind::from(other));
            kind.to_lowercase()
        }
    }
}

impl<'w> Compiler<'w> {
    /// The definition a `Ref` names (other schemas as they are).
    fn deref(&self, s: &'w Schema, field: &str) -> Result<&'w Schema, ResolveError> {
        match s {
            Schema::Ref { name } => self
                .names
                .get(name)
                .copied()
                .ok_or_else(|| err(field, format!("writer type {} is not defined", name.fullname(None)))),
            s => Ok(s),
        }
    }

    /// Reads writer record `w` into reader record `r`.
    fn record(&mut self, w: &'w Schema, r: &'static Schema, field: &str) -> Result<RecordPlan, ResolveError> {
        let w = self.deref(w, field)?;
        let Schema::Record(rr) = r else {
            unreachable!("reader records are records")
        };
        let Schema::Record(wr) = w else {
            return Err(err(
                field,
                format!("writer type {} cannot be read as record {}", describe(w), rr.name.name),
            ));
        };
        if wr.name.name != rr.name.name {
            return Err(err(
                field,
                format!(
                    "writer record {} cannot be read as record {}",
                    wr.name.name, rr.name.name
                ),
            ));
        }
        let prefix = |name: &str| {
            if field.is_empty() {
                name.to_owned()
            } else {
                format!("{field}.{name}")
            }
        };
        let mut steps = Vec::with_capacity(wr.fields.len());
        let mut seen = Vec::new();
        for wf in &wr.fields {
            match rr.fields.iter().find(|f| f.name == wf.name) {
                Some(rf) => {
                    let target = Target::of(&rr.name.name, &rf.name).expect("every reader field is a target");
                    let src = self.field(&wf.schema, rf, target)?;
                    steps.push(Step::Read(target, src));
                    seen.push(target);
                }
                None => {
                    self.summary.skipped.push(prefix(&wf.name));
                    steps.push(Step::Skip(self.skip(&wf.schema, &prefix(&wf.name))?));
                }
            }
        }
        let mut fills = Vec::new();
        for rf in &rr.fields {
            let target = Target::of(&rr.name.name, &rf.name).expect("every reader field is a target");
            if seen.contains(&target) {
                continue;
            }
            let Some(default) = &rf.default else {
                return Err(err(
                    target.path(),
                    "missing from the writer schema, and the reader's field has no default",
                ));
            };
            fills.push((target, fill(target, reader_type(rf), default)?));
            self.summary.defaulted.push(target.path().to_owned());
        }
        let same_prefix = wr
            .fields
            .iter()
            .zip(&rr.fields)
            .take_while(|(w, r)| w.name == r.name && same_shape(&w.schema, &r.schema))
            .count();
        Ok(RecordPlan {
            steps: steps.into(),
            fills: fills.into(),
            same_prefix,
        })
    }

    /// Reads a writer field's type `w` as the reader field `rf`.
    fn field(&mut self, w: &'w Schema, rf: &'static RecordField, target: Target) -> Result<Src, ResolveError> {
        let path = target.path();
        let rt = reader_type(rf);
        let w = self.deref(w, path)?;
        let src = match (&rt, w) {
            // A union into a reader type that is not a union: every branch must be readable.
            (
                ReaderType::Str
                | ReaderType::Long
                | ReaderType::Enum { .. }
                | ReaderType::Strs
                | ReaderType::Records(_),
                Schema::Union(u),
            ) => {
                let branches = u
                    .variants()
                    .iter()
                    .map(|b| {
                        self.one(b, &rt, path).map_err(|e| {
                            err(
                                path,
                                format!("branch {} of the writer's {}: {}", describe(b), describe(w), e.detail),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Src::Union(branches.into())
            }
            // A union reader type: each writer branch (or the writer's one type) goes to a reader branch.
            (ReaderType::OptStr | ReaderType::OptRecord(_) | ReaderType::Value, Schema::Union(u)) => {
                let branches = u
                    .variants()
                    .iter()
                    .map(|b| self.one(b, &rt, path))
                    .collect::<Result<Vec<_>, _>>()?;
                Src::Union(branches.into())
            }
            _ => self.one(w, &rt, path)?,
        };
        // Records report their own fields; anything else read through another shape is converted.
        if !matches!(rt, ReaderType::Records(_) | ReaderType::OptRecord(_)) && !same_shape(w, &rf.schema) {
            self.summary.converted.push(path.to_owned());
        }
        Ok(src)
    }

    /// One writer type (not a union) read as the reader type `rt`.
    fn one(&mut self, w: &'w Schema, rt: &ReaderType<'static>, path: &str) -> Result<Src, ResolveError> {
        let w = self.deref(w, path)?;
        let no = || {
            let reader = match rt {
                ReaderType::Str => "string".to_owned(),
                ReaderType::Long => "long".to_owned(),
                ReaderType::Enum { .. } => "the reader's enum".to_owned(),
                ReaderType::OptStr => "union [null, string]".to_owned(),
                ReaderType::Strs => "array of string".to_owned(),
                ReaderType::OptRecord(r) => format!("union [null, {}]", describe(r)),
                ReaderType::Records(r) => format!("array of {}", describe(r)),
                ReaderType::Value => "the setting value union".to_owned(),
            };
            err(path, format!("writer type {} cannot be read as {reader}", describe(w)))
        };
        Ok(match rt {
            ReaderType::Str => match w {
                Schema::String | Schema::Bytes => Src::Str,
                _ => return Err(no()),
            },
            ReaderType::Long => match long_src(w) {
                Some(s) => s,
                None => return Err(no()),
            },
            ReaderType::Enum { name, symbols, default } => {
                let Schema::Enum(we) = w else { return Err(no()) };
                if we.name.name != *name {
                    return Err(err(
                        path,
                        format!("writer enum {} cannot be read as enum {name}", we.name.name),
                    ));
                }
                let mut map = Vec::with_capacity(we.symbols.len());
                for sym in &we.symbols {
                    let to = symbols
                        .iter()
                        .position(|s| s == sym)
                        .or_else(|| default.and_then(|d| symbols.iter().position(|s| s == d)));
                    match to {
                        Some(i) => map.push(i as u8),
                        None => {
                            return Err(err(
                                path,
                                format!(
                                    "writer enum symbol {sym} is not one of the reader's [{}], and the reader's enum has no default",
                                    symbols.join(", ")
                                ),
                            ))
                        }
                    }
                }
                Src::Enum(map.into())
            }
            ReaderType::OptStr => match w {
                Schema::Null => Src::Null,
                Schema::String | Schema::Bytes => Src::Str,
                _ => return Err(no()),
            },
            ReaderType::Strs => match w {
                Schema::Array(a) => Src::Array(Box::new(self.strs_item(&a.items, path)?)),
                _ => return Err(no()),
            },
            ReaderType::OptRecord(r) => match w {
                Schema::Null => Src::Null,
                Schema::Record(_) => Src::Record(Box::new(self.record(w, r, path)?)),
                _ => return Err(no()),
            },
            ReaderType::Records(r) => match w {
                Schema::Array(a) => match self.deref(&a.items, path)? {
                    // Items of a union type: every branch must be the record.
                    Schema::Union(u) => Src::Array(Box::new(Src::Union(
                        u.variants()
                            .iter()
                            .map(|b| self.record(b, r, path).map(|p| Src::Record(Box::new(p))))
                            .collect::<Result<Vec<_>, _>>()?
                            .into(),
                    ))),
                    items => Src::Array(Box::new(Src::Record(Box::new(self.record(items, r, path)?)))),
                },
                _ => return Err(no()),
            },
            ReaderType::Value => match w {
                Schema::Null => Src::Null,
                Schema::Boolean => Src::Bool,
                Schema::Float => Src::Float,
                Schema::Double => Src::Double,
                Schema::String | Schema::Bytes => Src::Str,
                Schema::Array(a) => Src::Array(Box::new(self.strs_item(&a.items, path)?)),
                w => match long_src(w) {
                    Some(s) => s,
                    None => return Err(no()),
                },
            },
        })
    }

    /// The items of an array read as `array<string>`.
    fn strs_item(&mut self, w: &'w Schema, path: &str) -> Result<Src, ResolveError> {
        let w = self.deref(w, path)?;
        match w {
            Schema::String | Schema::Bytes => Ok(Src::Str),
            Schema::Union(u) => {
                let mut branches = Vec::new();
                for b in u.variants() {
                    match self.deref(b, path)? {
                        Schema::String | Schema::Bytes => branches.push(Src::Str),
                        other => {
                            return Err(err(
                                path,
                                format!(
                                    "array items: branch {} of the writer's union cannot be read as string",
                                    describe(other)
                                ),
                            ))
                        }
                    }
                }
                Ok(Src::Union(branches.into()))
            }
            other => Err(err(
                path,
                format!(
                    "array items of writer type {} cannot be read as string",
                    describe(other)
                ),
            )),
        }
    }

    /// How to skip a writer value of type `w`.
    fn skip(&mut self, w: &'w Schema, path: &str) -> Result<Skip, ResolveError> {
        Ok(match w {
            Schema::Null => Skip::Zero,
            Schema::Boolean => Skip::Bool,
            // Integers, the logical types over them (as `long_src` lists them) and enum indices:
            // one varint. Listed, not delegated, so the match stays exhaustive.
            Schema::Int
            | Schema::Long
            | Schema::Enum(_)
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Skip::Varint,
            Schema::Float => Skip::Fixed(4),
            Schema::Double => Skip::Fixed(8),
            Schema::Bytes | Schema::String | Schema::Uuid | Schema::BigDecimal => Skip::Bytes,
            Schema::Fixed(f) => Skip::Fixed(f.size),
            Schema::Duration => Skip::Fixed(12),
            Schema::Decimal(d) => self.skip(&d.inner, path)?,
            Schema::Array(a) => Skip::Array(Box::new(self.skip(&a.items, path)?)),
            Schema::Map(m) => Skip::Map(Box::new(self.skip(&m.types, path)?)),
            Schema::Union(u) => Skip::Union(
                u.variants()
                    .iter()
                    .map(|b| self.skip(b, path))
                    .collect::<Result<Vec<_>, _>>()?
                    .into(),
            ),
            Schema::Ref { name } => {
                if let Some(&i) = self.record_index.get(name) {
                    return Ok(Skip::Record(i));
                }
                let def = self.deref(w, path)?;
                return self.skip(def, path);
            }
            Schema::Record(r) => {
                if let Some(&i) = self.record_index.get(&r.name) {
                    return Ok(Skip::Record(i));
                }
                let i = self.records.len();
                self.records.push(Box::new([]));
                self.record_index.insert(r.name.clone(), i);
                let fields = r
                    .fields
                    .iter()
                    .map(|f| self.skip(&f.schema, path))
                    .collect::<Result<Vec<_>, _>>()?;
                self.records[i] = fields.into();
                Skip::Record(i)
            }
        })
    }
}

/// An integer writer type read as `long`: `int` and `long` and the logical
/// types over them.
fn long_src(w: &Schema) -> Option<Src> {
    match w {
        Schema::Int | Schema::Date | Schema::TimeMillis => Some(Src::Int),
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Some(Src::Long),
        _ => None,
    }
}

/// True when the writer's type has the reader's canonical form (read as is).
fn same_shape(w: &Schema, r: &Schema) -> bool {
    matches!(
        (w, r),
        (Schema::TimestampMillis | Schema::Long, Schema::TimestampMillis)
    ) || w.canonical_form() == r.canonical_form()
}

fn reader_type(rf: &'static RecordField) -> ReaderType<'static> {
    match &rf.schema {
        Schema::String => ReaderType::Str,
        Schema::Long | Schema::TimestampMillis => ReaderType::Long,
        Schema::Enum(e) => ReaderType::Enum {
            name: &e.name.name,
            symbols: &e.symbols,
            default: e.default.as_deref(),
        },
        Schema::Array(a) => match &*a.items {
            Schema::String => ReaderType::Strs,
            r @ Schema::Record(_) => ReaderType::Records(r),
            other => unreachable!("reader array of {other:?}"),
        },
        Schema::Union(u) => match u.variants() {
            [Schema::Null, Schema::String] => ReaderType::OptStr,
            [Schema::Null, r @ Schema::Record(_)] => ReaderType::OptRecord(r),
            _ => ReaderType::Value,
        },
        other => unreachable!("reader field type {other:?}"),
    }
}

/// A reader default as the value it fills in.
fn fill(target: Target, rt: ReaderType<'static>, default: &serde_json::Value) -> Result<Fill, ResolveError> {
    use serde_json::Value as J;
    let bad = || {
        err(
            target.path(),
            format!("the reader's default {default} is not supported"),
        )
    };
    Ok(match (rt, default) {
        (ReaderType::Str, J::String(s)) => Fill::Str(s.clone()),
        (ReaderType::Long, J::Number(n)) => Fill::Long(n.as_i64().ok_or_else(bad)?),
        (ReaderType::Enum { symbols, .. }, J::String(s)) => {
            Fill::Enum(symbols.iter().position(|x| x == s).ok_or_else(bad)? as u8)
        }
        (ReaderType::OptStr | ReaderType::OptRecord(_) | ReaderType::Value, J::Null) => Fill::None,
        (ReaderType::Strs, J::Array(items)) => Fill::Strs(
            items
                .iter()
                .map(|i| i.as_str().map(str::to_owned).ok_or_else(bad))
                .collect::<Result<_, _>>()?,
        ),
        (ReaderType::Records(_), J::Array(items)) if items.is_empty() => Fill::Empty,
        _ => return Err(bad()),
    })
}

/// One decode with a plan.
struct Run<'a, 'p> {
    c: Cursor<'a>,
    max: usize,
    records: &'p [Box<[Skip]>],
    /// Items of skipped arrays and maps walked so far in this record, at most `max` in all:
    /// an item of a zero-width type (`null`, an empty record) costs no byte, so without this
    /// bound a few bytes of nested skipped arrays could stand for billions of items.
    skipped: &'p Cell<usize>,
}

fn mismatch(target: Target) -> DecodeError {
    // The compiler only pairs targets with sources it checked; reaching this is a bug, reported
    // as a decode error rather than a panic on the hot path.
    DecodeError::malformed(0, format!("{}: resolution plan mismatch (a bug)", target.path()))
}

impl<'a> Run<'a, '_> {
    /// A union's branch (`Src::Union`) or the source itself.
    #[inline]
    fn branch<'s>(&mut self, src: &'s Src, what: &str) -> Result<&'s Src, DecodeError> {
        match src {
            Src::Union(bs) => {
                let at = self.c.pos;
                let i = self.c.long(what)?;
                bs.get(usize::try_from(i).unwrap_or(usize::MAX)).ok_or_else(|| {
                    DecodeError::malformed(at, format!("{what}: union index {i} out of range 0..{}", bs.len()))
                })
            }
            s => Ok(s),
        }
    }

    fn int(&mut self, what: &str) -> Result<i64, DecodeError> {
        let at = self.c.pos;
        let n = self.c.long(what)?;
        if i32::try_from(n).is_err() {
            return Err(DecodeError::malformed(at, format!("{what}: int {n} out of range")));
        }
        Ok(n)
    }

    fn float(&mut self, what: &str) -> Result<f64, DecodeError> {
        match self.c.buf.get(self.c.pos..self.c.pos + 4) {
            Some(b) => {
                self.c.pos += 4;
                Ok(f64::from(f32::from_le_bytes(b.try_into().expect("4 bytes"))))
            }
            None => Err(self.c.eof(what)),
        }
    }

    #[inline]
    fn str_into(&mut self, src: &Src, t: Target, out: &mut String) -> Result<(), DecodeError> {
        match self.branch(src, t.path())? {
            Src::Str => self.c.string_into(t.path(), out),
            _ => Err(mismatch(t)),
        }
    }

    #[inline]
    fn long(&mut self, src: &Src, t: Target) -> Result<i64, DecodeError> {
        match self.branch(src, t.path())? {
            Src::Long => self.c.long(t.path()),
            Src::Int => self.int(t.path()),
            _ => Err(mismatch(t)),
        }
    }

    #[inline]
    fn symbol(&mut self, src: &Src, t: Target) -> Result<u8, DecodeError> {
        match self.branch(src, t.path())? {
            Src::Enum(map) => {
                let at = self.c.pos;
                let i = self.c.long(t.path())?;
                map.get(usize::try_from(i).unwrap_or(usize::MAX))
                    .copied()
                    .ok_or_else(|| {
                        DecodeError::malformed(
                            at,
                            format!("{}: enum index {i} out of range 0..{}", t.path(), map.len()),
                        )
                    })
            }
            _ => Err(mismatch(t)),
        }
    }

    fn strs_into(&mut self, src: &Src, t: Target, out: &mut Vec<String>) -> Result<(), DecodeError> {
        let Src::Array(item) = self.branch(src, t.path())? else {
            return Err(mismatch(t));
        };
        self.items_into(t.path(), out, String::new, |r, s| r.str_into(item, t, s))
    }

    /// An array into `out`, item `i` read into `out[i]` by `read` (reusing what the previous
    /// event left there, as the hot path does; `new` makes the missing ones), then truncated.
    fn items_into<T>(
        &mut self,
        what: &'static str,
        out: &mut Vec<T>,
        new: fn() -> T,
        mut read: impl FnMut(&mut Run<'a, '_>, &mut T) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let (max, records, skipped) = (self.max, self.records, self.skipped);
        let n = self.c.array_each(what, 1, max, |c, i| {
            let mut r = Run {
                c: Cursor { buf: c.buf, pos: c.pos },
                max,
                records,
                skipped,
            };
            let res = match out.get_mut(i) {
                Some(x) => read(&mut r, x),
                None => {
                    let mut x = new();
                    let res = read(&mut r, &mut x);
                    out.push(x);
                    res
                }
            };
            c.pos = r.c.pos;
            res
        })?;
        out.truncate(n);
        Ok(())
    }

    fn event(&mut self, plan: &RecordPlan, ev: &mut ConfigChange) -> Result<(), DecodeError> {
        let mut steps = plan.steps.iter();
        if plan.same_prefix >= 5 {
            // The ids, the time and the sequence as ours (every version so far): read directly.
            self.c.string_into("event_id", &mut ev.event_id)?;
            self.c.string_into("tenant_id", &mut ev.tenant_id)?;
            self.c.string_into("device_id", &mut ev.device_id)?;
            ev.observed_at = self.c.long("observed_at")?;
            ev.sequence = self.c.long("sequence")?;
            steps.nth(4);
        }
        for step in steps {
            match step {
                Step::Skip(s) => self.skip(s, 0)?,
                Step::Read(t, src) => match t {
                    Target::EventId => self.str_into(src, *t, &mut ev.event_id)?,
                    Target::TenantId => self.str_into(src, *t, &mut ev.tenant_id)?,
                    Target::DeviceId => self.str_into(src, *t, &mut ev.device_id)?,
                    Target::ObservedAt => ev.observed_at = self.long(src, *t)?,
                    Target::Sequence => ev.sequence = self.long(src, *t)?,
                    Target::Source => ev.source = SOURCES[self.symbol(src, *t)? as usize],
                    Target::Kind => ev.kind = KINDS[self.symbol(src, *t)? as usize],
                    Target::Device => {
                        let at = self.c.pos;
                        match self.branch(src, t.path())? {
                            Src::Null => ev.device = None,
                            Src::Record(p) => {
                                let d = ev.device.get_or_insert_with(|| DeviceInfo {
                                    os_family: String::new(),
                                    os_version: String::new(),
                                    hostname: None,
                                    groups: Vec::new(),
                                    tags: Vec::new(),
                                });
                                self.device(p, d, 1)?;
                            }
                            _ => return Err(DecodeError::malformed(at, "device: plan mismatch (a bug)")),
                        }
                    }
                    Target::Settings => self.settings(src, &mut ev.settings)?,
                    other => return Err(mismatch(*other)),
                },
            }
        }
        for (t, f) in plan.fills.iter() {
            match (t, f) {
                (Target::EventId, Fill::Str(s)) => s.clone_into(&mut ev.event_id),
                (Target::TenantId, Fill::Str(s)) => s.clone_into(&mut ev.tenant_id),
                (Target::DeviceId, Fill::Str(s)) => s.clone_into(&mut ev.device_id),
                (Target::ObservedAt, Fill::Long(n)) => ev.observed_at = *n,
                (Target::Sequence, Fill::Long(n)) => ev.sequence = *n,
                (Target::Source, Fill::Enum(i)) => ev.source = SOURCES[*i as usize],
                (Target::Kind, Fill::Enum(i)) => ev.kind = KINDS[*i as usize],
                (Target::Device, Fill::None) => ev.device = None,
                (Target::Settings, Fill::Empty) => ev.settings.clear(),
                (t, _) => return Err(mismatch(*t)),
            }
        }
        Ok(())
    }

    fn device(&mut self, plan: &RecordPlan, d: &mut DeviceInfo, depth: usize) -> Result<(), DecodeError> {
        for step in plan.steps.iter() {
            match step {
                Step::Skip(s) => self.skip(s, depth)?,
                Step::Read(t, src) => match t {
                    Target::OsFamily => self.str_into(src, *t, &mut d.os_family)?,
                    Target::OsVersion => self.str_into(src, *t, &mut d.os_version)?,
                    Target::Hostname => match self.branch(src, t.path())? {
                        Src::Null => d.hostname = None,
                        Src::Str => {
                            let h = d.hostname.get_or_insert_with(String::new);
                            self.c.string_into(t.path(), h)?;
                        }
                        _ => return Err(mismatch(*t)),
                    },
                    Target::Groups => self.strs_into(src, *t, &mut d.groups)?,
                    Target::Tags => self.strs_into(src, *t, &mut d.tags)?,
                    other => return Err(mismatch(*other)),
                },
            }
        }
        for (t, f) in plan.fills.iter() {
            match (t, f) {
                (Target::OsFamily, Fill::Str(s)) => s.clone_into(&mut d.os_family),
                (Target::OsVersion, Fill::Str(s)) => s.clone_into(&mut d.os_version),
                (Target::Hostname, Fill::None) => d.hostname = None,
                (Target::Groups, Fill::Strs(v)) => v.clone_into(&mut d.groups),
                (Target::Tags, Fill::Strs(v)) => v.clone_into(&mut d.tags),
                (t, _) => return Err(mismatch(*t)),
            }
        }
        Ok(())
    }

    fn settings(&mut self, src: &Src, out: &mut Vec<Setting>) -> Result<(), DecodeError> {
        let t = Target::Settings;
        let Src::Array(item) = self.branch(src, t.path())? else {
            return Err(mismatch(t));
        };
        let new = || Setting {
            key: String::new(),
            value: Value::Null,
        };
        match &**item {
            Src::Record(plan) => self.items_into("settings", out, new, |r, s| r.setting(plan, s)),
            // Items of a union type (each branch a Setting record).
            item @ Src::Union(_) => self.items_into("settings", out, new, |r, s| match r.branch(item, "settings")? {
                Src::Record(plan) => r.setting(plan, s),
                _ => Err(mismatch(t)),
            }),
            _ => Err(mismatch(t)),
        }
    }

    #[inline]
    fn setting(&mut self, plan: &RecordPlan, s: &mut Setting) -> Result<(), DecodeError> {
        let mut steps = plan.steps.iter();
        if plan.same_prefix >= 2 {
            // `key` and `value` as ours: the hot path's code, then the writer's other fields.
            self.c.setting_into(s, self.max)?;
            steps.nth(1);
        }
        for step in steps {
            match step {
                Step::Skip(k) => self.skip(k, 1)?,
                Step::Read(Target::Key, src) => self.str_into(src, Target::Key, &mut s.key)?,
                Step::Read(Target::Value, src) => {
                    let what = Target::Value.path();
                    match self.branch(src, what)? {
                        Src::Str => match &mut s.value {
                            // Reuse the previous event's string, as the hot path does.
                            Value::String(old) => self.c.string_into(what, old)?,
                            v => *v = Value::String(self.c.str_ref(what)?.to_owned()),
                        },
                        Src::Null => s.value = Value::Null,
                        Src::Bool => s.value = Value::Bool(self.c.boolean(what)?),
                        Src::Int => s.value = Value::Long(self.int(what)?),
                        Src::Long => s.value = Value::Long(self.c.long(what)?),
                        Src::Float => s.value = Value::Double(self.float(what)?),
                        Src::Double => s.value = Value::Double(self.c.double(what)?),
                        a @ Src::Array(_) => {
                            let mut v = Vec::new();
                            self.strs_into(a, Target::Value, &mut v)?;
                            s.value = Value::Array(v);
                        }
                        _ => return Err(mismatch(Target::Value)),
                    }
                }
                Step::Read(t, _) => return Err(mismatch(*t)),
            }
        }
        self.setting_fills(plan, s)
    }

    #[inline]
    fn setting_fills(&mut self, plan: &RecordPlan, s: &mut Setting) -> Result<(), DecodeError> {
        if plan.fills.is_empty() {
            return Ok(());
        }
        for (t, f) in plan.fills.iter() {
            match (t, f) {
                (Target::Key, Fill::Str(k)) => k.clone_into(&mut s.key),
                (Target::Value, Fill::None) => s.value = Value::Null,
                (t, _) => return Err(mismatch(*t)),
            }
        }
        Ok(())
    }

    /// Skips a value: the common one-byte cases (a null, a union's null branch, a small
    /// number) inline, the rest in [`Run::skip_any`].
    #[inline]
    fn skip(&mut self, s: &Skip, depth: usize) -> Result<(), DecodeError> {
        const WHAT: &str = "a writer field the reader does not have";
        match s {
            Skip::Zero => Ok(()),
            Skip::Varint => self.c.skip_varint(WHAT),
            // An optional field (`["null", T]`): null, or a number, inline; the rest below.
            Skip::Union(bs) => {
                let at = self.c.pos;
                let i = self.c.long(WHAT)?;
                match bs.get(usize::try_from(i).unwrap_or(usize::MAX)) {
                    Some(Skip::Zero) => Ok(()),
                    Some(Skip::Varint) => self.c.skip_varint(WHAT),
                    Some(b) => self.skip_any(b, depth),
                    None => Err(DecodeError::malformed(
                        at,
                        format!("{WHAT}: union index {i} out of range 0..{}", bs.len()),
                    )),
                }
            }
            s => self.skip_any(s, depth),
        }
    }

    #[inline(never)]
    fn skip_any(&mut self, s: &Skip, depth: usize) -> Result<(), DecodeError> {
        const WHAT: &str = "a writer field the reader does not have";
        if depth > MAX_NESTING {
            return Err(DecodeError::malformed(
                self.c.pos,
                format!("{WHAT}: nested deeper than {MAX_NESTING}"),
            ));
        }
        match s {
            Skip::Zero => Ok(()),
            Skip::Bool => self.c.boolean(WHAT).map(drop),
            Skip::Varint => self.c.skip_varint(WHAT),
            Skip::Bytes => {
                let at = self.c.pos;
                let len = self.c.long(WHAT)?;
                if len < 0 || len as u64 > self.c.remaining() as u64 {
                    return Err(DecodeError::malformed(
                        at,
                        format!("{WHAT}: length {len} invalid ({} bytes left)", self.c.remaining()),
                    ));
                }
                self.c.pos += len as usize;
                Ok(())
            }
            Skip::Fixed(n) => {
                if *n > self.c.remaining() {
                    return Err(self.c.eof(WHAT));
                }
                self.c.pos += n;
                Ok(())
            }
            Skip::Array(item) | Skip::Map(item) => {
                let map = matches!(s, Skip::Map(_));
                let (max, records, skipped) = (self.max, self.records, self.skipped);
                self.c
                    .array_each("skipped field", 0, max, |c, _| {
                        skipped.set(skipped.get() + 1);
                        if skipped.get() > max {
                            return Err(DecodeError::ArrayTooLong {
                                field: "the skipped fields of a record",
                                max,
                            });
                        }
                        let mut r = Run {
                            c: Cursor { buf: c.buf, pos: c.pos },
                            max,
                            records,
                            skipped,
                        };
                        if map {
                            r.skip(&Skip::Bytes, depth + 1)?;
                        }
                        let res = r.skip(item, depth + 1);
                        c.pos = r.c.pos;
                        res
                    })
                    .map(drop)
            }
            Skip::Union(bs) => {
                let at = self.c.pos;
                let i = self.c.long(WHAT)?;
                let b = bs.get(usize::try_from(i).unwrap_or(usize::MAX)).ok_or_else(|| {
                    DecodeError::malformed(at, format!("{WHAT}: union index {i} out of range 0..{}", bs.len()))
                })?;
                self.skip(b, depth)
            }
            Skip::Record(i) => {
                let records = self.records;
                for f in records[*i].iter() {
                    self.skip(f, depth + 1)?;
                }
                Ok(())
            }
        }
    }
}

/// The reader's `ConfigSource` symbols, in the order of `config_change.avsc`.
const SOURCES: [ConfigSource; 6] = [
    ConfigSource::Agent,
    ConfigSource::GroupPolicy,
    ConfigSource::Mdm,
    ConfigSource::Intune,
    ConfigSource::Scanner,
    ConfigSource::Other,
];

/// The reader's `ChangeKind` symbols, in the order of `config_change.avsc`.
const KINDS: [ChangeKind; 4] = [
    ChangeKind::Upsert,
    ChangeKind::Remove,
    ChangeKind::Snapshot,
    ChangeKind::Retire,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{kind_symbol, source_symbol};

    /// The tables that turn the reader's symbol index into our enums follow the reader schema.
    #[test]
    fn the_symbol_tables_follow_the_reader_schema() {
        let Schema::Record(r) = schemas::config_change() else {
            unreachable!()
        };
        let symbols = |name: &str| match &r.fields.iter().find(|f| f.name == name).unwrap().schema {
            Schema::Enum(e) => e.symbols.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(SOURCES.map(source_symbol).to_vec(), symbols("source"));
        assert_eq!(KINDS.map(kind_symbol).to_vec(), symbols("kind"));
    }
}
