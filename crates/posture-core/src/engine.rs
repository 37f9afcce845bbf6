//! The evaluation engine: applies configuration-change events to per-device
//! state, keeps scope aggregates, and emits one [`Transition`] per
//! control-state change with the exact points delta of every affected scope.
//!
//! # State layout (per device)
//!
//! A device does not keep its setting values. It keeps, for every distinct
//! check leaf of the catalog, the leaf's three-valued result in 2 bits
//! ([`Tri`]), plus a handful of scalars:
//!
//! | field | bytes | what |
//! | --- | --- | --- |
//! | `data` | 16 + ceil(leaves / 4) + id length | 2 bits per catalog leaf, then the device id |
//! | `tenant`, `inventory`, `flags`, `leaf_bytes` | 13 (+ 3 padding) | interned tenant, interned inventory, retired/inactive bits, where the id starts |
//! | `last_seq`, `last_seen` | 16 | stale detection and the inactivity window |
//! | lookup | 4 / load factor | the device's index in its tenant's `DeviceIndex` |
//!
//! The id sits in the same allocation as the leaf bits, and the lookup table holds bare
//! indices: finding a device by id and reading its state touch the same memory, which is
//! what an event costs on a fleet larger than the caches.
//!
//! Inventories (OS family, version, groups, tags) are interned: devices with
//! the same inventory share one entry, and `applies_to` is evaluated once per
//! inventory. A control's state is recomputed from leaf results when one of
//! its leaves changes. `cargo bench -p posture-core` measures the real bytes
//! per device with a counting allocator.
//!
//! # Scoring
//!
//! For each scope (tenant, or tenant x group) and control the engine counts
//! PASS and FAIL devices, with exceptions applied and without. A control's
//! contribution to a scope is `q = round(p * pass / (pass + fail))` in
//! integer micro-points; every transition carries `q_new - q_old` for each
//! scope it touches, so the sum of all deltas equals the from-scratch score
//! exactly. Categories need no scopes of their own: a delta names its control
//! and so its category.
//!
//! # Files
//!
//! This file holds the output types ([`Transition`], [`ScopeDelta`], [`Output`]), the state
//! and the hot path of every event (`apply` -> leaf updates -> `emit`), kept together because
//! that path is what the evaluator benchmark measures. Around it: `validate.rs` (the event's
//! contract, checked before any state is touched), `intern.rs` (tenants, devices, inventories),
//! `inactivity.rs` (the clock and the inactivity window), `exceptions.rs` (exceptions and the
//! transitions they cause), `views.rs` (read-only views: scope counts and tables, one device's
//! cells), `snapshot.rs` (the state's binary snapshot and restore).
//!
//! Why this file is still about 1,000 lines: `apply_inner` and `emit` and the state they touch
//! are the hot path every benchmark figure comes from; they stay in one module so the compiler
//! sees them together and a reader follows one event without changing files.

mod exceptions;
mod inactivity;
mod intern;
mod snapshot;
mod validate;
mod views;
pub use snapshot::{catalog_fingerprint, SnapshotError};

use crate::baseline::Catalog;
use crate::check::{Check, Tri};
use crate::event::{ChangeKind, ConfigChange, DeviceInfo};
use crate::exception::{Exception, ExceptionScope};
use crate::types::*;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// Hash maps keyed by strings from events: foldhash is several times faster
/// than SipHash on short keys and still seeded per process.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::Arc;

/// Sentinel group index: the scope of the whole tenant.
pub const NO_GROUP: GroupIdx = u32::MAX;
const NO_INVENTORY: u32 = u32::MAX;

const RETIRED: u8 = 1;
const INACTIVE: u8 = 2;
const IN_HEAP: u8 = 4;

/// Index of each count kept per scope and control.
pub mod count {
    /// PASS with exceptions applied (credited exceptions count here).
    pub const EFF_PASS: usize = 0;
    /// FAIL with exceptions applied.
    pub const EFF_FAIL: usize = 1;
    /// The part of `EFF_FAIL` hidden from recommendations (risk accepted,
    /// planned remediation).
    pub const EFF_HIDDEN: usize = 2;
    /// PASS without exceptions.
    pub const RAW_PASS: usize = 3;
    /// FAIL without exceptions.
    pub const RAW_FAIL: usize = 4;
}
use count::*;

/// Index of the two score views in `[Micros; 2]` pairs.
pub mod view {
    /// With exceptions applied.
    pub const WITH: usize = 0;
    /// Without exceptions.
    pub const WITHOUT: usize = 1;
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// A device with no event for this long (event time) leaves every score
    /// until its next event. Default 30 days.
    pub inactivity_window_ms: i64,
    /// Events with more settings than this are rejected. Default 10,000.
    pub max_settings: usize,
    /// Events with an id (event, tenant, device), a setting key or a
    /// string value longer than this many bytes are rejected (a list
    /// value counts its items together). Default 64 KiB.
    pub max_value_bytes: usize,
    /// Events observed outside `[start, end)` (epoch ms) are rejected as
    /// absurd. Default 2000-01-01 to 2100-01-01.
    pub valid_time_ms: (i64, i64),
    /// Events whose inventory lists more device groups than this are
    /// rejected: every group is a score scope with its own per-control
    /// counts and rows. Default 64.
    pub max_groups: usize,
    /// ... more tags than this. Default 64.
    pub max_tags: usize,
    /// Events with an inventory name (a group, a tag, the OS family or
    /// version, the host name) longer than this many bytes are rejected.
    /// Default 256.
    pub max_name_bytes: usize,
}

/// A name no tenant or group may have: the label of aggregated series on `/metrics` (tenants
/// beyond the cap, groups not listed), which a real scope of that name could not be told apart from.
pub const RESERVED_SCOPE_NAME: &str = "_overflow";

/// Why `name` cannot name a scope (a tenant or a device group), if it cannot: empty (the
/// empty group is the whole tenant's scope), the reserved name, leading or trailing white
/// space (shown alike with and without it), or a control character.
pub fn scope_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty (the empty group is the whole tenant's scope)")
    } else if name == RESERVED_SCOPE_NAME {
        Some("is reserved (the label of aggregated series on /metrics)")
    } else if name.trim() != name {
        Some("begins or ends with white space")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            inactivity_window_ms: 30 * 24 * 3600 * 1000,
            max_settings: 10_000,
            max_value_bytes: 64 * 1024,
            valid_time_ms: (946_684_800_000, 4_102_444_800_000),
            max_groups: 64,
            max_tags: 64,
            max_name_bytes: 256,
        }
    }
}

/// Exception status of one device-control.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExcStatus {
    /// No exception in force covers the device-control.
    None,
    /// Third-party control or alternate mitigation: counts as PASS.
    Credit,
    /// Risk accepted or planned remediation: score unchanged, hidden from
    /// recommendations.
    NoCredit,
}

/// The state of one device-control: evaluation result and exception status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cell {
    /// The check's result for the device, before exceptions.
    pub raw: RawState,
    /// The exceptions in force on it; always [`ExcStatus::None`] when `raw` is
    /// NOT_APPLICABLE.
    pub exc: ExcStatus,
}

impl Cell {
    /// The five-valued state s(d,c) of SPEC section 3.
    pub fn state(self) -> ControlState {
        match (self.raw, self.exc) {
            (RawState::NotApplicable, _) => ControlState::NotApplicable,
            (_, ExcStatus::Credit | ExcStatus::NoCredit) => ControlState::Excepted,
            (RawState::Pass, _) => ControlState::Pass,
            (RawState::Fail, _) => ControlState::Fail,
            (RawState::Unknown, _) => ControlState::Unknown,
        }
    }

    /// What this cell adds to a scope's counts when the device is counted.
    pub fn counts(self) -> [i32; 5] {
        let mut k = [0; 5];
        match self.raw {
            RawState::Pass => k[RAW_PASS] = 1,
            RawState::Fail => k[RAW_FAIL] = 1,
            RawState::Unknown | RawState::NotApplicable => return k_eff(k, self),
        }
        k_eff(k, self)
    }
}

fn k_eff(mut k: [i32; 5], c: Cell) -> [i32; 5] {
    match (c.raw, c.exc) {
        (RawState::NotApplicable, _) => {}
        (_, ExcStatus::Credit) => k[EFF_PASS] = 1,
        (RawState::Pass, _) => k[EFF_PASS] = 1,
        (RawState::Fail, ExcStatus::NoCredit) => {
            k[EFF_FAIL] = 1;
            k[EFF_HIDDEN] = 1;
        }
        (RawState::Fail, _) => k[EFF_FAIL] = 1,
        (RawState::Unknown, _) => {}
    }
    k
}

/// Why a transition happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A configuration-change event of the device (settings, inventory,
    /// first event, return from retirement or inactivity).
    Event,
    /// A RETIRE event: the device's points leave every score.
    Retired,
    /// No event for longer than the inactivity window.
    Inactive,
    /// An exception started.
    ExceptionStarted,
    /// An exception expired.
    ExceptionEnded,
}

impl Reason {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Event => "EVENT",
            Reason::Retired => "RETIRED",
            Reason::Inactive => "INACTIVE",
            Reason::ExceptionStarted => "EXCEPTION_STARTED",
            Reason::ExceptionEnded => "EXCEPTION_ENDED",
        }
    }
}

/// A score scope: a tenant, or one device group of a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeKey {
    /// The tenant (every score is per tenant).
    pub tenant: TenantIdx,
    /// [`NO_GROUP`] for the whole tenant.
    pub group: GroupIdx,
}

/// The change of one scope's score caused by one transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeDelta {
    /// The scope whose score changes.
    pub scope: ScopeKey,
    /// The control whose contribution changes (which also gives the category).
    pub control: ControlIdx,
    /// Score delta `[with exceptions, without]`, micro-points.
    pub points: [Micros; 2],
    /// Maximum delta `[with, without]`, micro-points.
    pub max: [Micros; 2],
    /// Count deltas, indexed by [`count`].
    pub counts: [i8; 5],
}

/// One control-state transition of one device (SPEC section 4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The device's tenant.
    pub tenant: TenantIdx,
    /// The device; [`Engine::device_name`] gives its id.
    pub device: DeviceIdx,
    /// The control whose state changed.
    pub control: ControlIdx,
    /// The device-control cell before the change.
    pub old: Cell,
    /// The cell after it. Equal to `old` when only the device's scopes changed (it was
    /// retired, went inactive, came back, or changed groups).
    pub new: Cell,
    /// Whether the device counted in scores before and after (not retired,
    /// not inactive, known).
    pub old_counted: bool,
    /// Whether the device counts after the change: false after a RETIRE event or
    /// once the inactivity window passes.
    pub new_counted: bool,
    /// What caused the change.
    pub reason: Reason,
    /// Event time of the change (ms).
    pub event_time: i64,
    /// Lineage of the event that caused it (default for time-driven changes
    /// is the position of the event that advanced the clock).
    pub source: SourcePos,
    /// Device score delta `[with, without]`, micro-points.
    pub device_points: [Micros; 2],
    /// Device maximum delta `[with, without]`, micro-points.
    pub device_max: [Micros; 2],
    /// The scope deltas of this transition in [`Output::scope_deltas`].
    pub scopes: Range<u32>,
}

/// Buffers the engine appends its records to; reuse them between batches.
#[derive(Default, Debug, Clone)]
pub struct Output {
    /// Control-state transitions, in the order the engine made them.
    pub transitions: Vec<Transition>,
    /// The scope deltas of every transition; [`Transition::scopes`] is a
    /// range of this vector.
    pub scope_deltas: Vec<ScopeDelta>,
}

impl Output {
    /// Empties the buffers, keeping their capacity.
    pub fn clear(&mut self) {
        self.transitions.clear();
        self.scope_deltas.clear();
    }

    /// The scope deltas of one transition.
    pub fn deltas_of(&self, t: &Transition) -> &[ScopeDelta] {
        &self.scope_deltas[t.scopes.start as usize..t.scopes.end as usize]
    }
}

/// Why an event was not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Its sequence is not above the last applied one for the device.
    Stale {
        /// The event's `sequence`.
        sequence: i64,
        /// The highest sequence applied so far for the device.
        last_applied: i64,
    },
    /// The event breaks the contract; the reason says how.
    Invalid(String),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Stale { sequence, last_applied } => {
                write!(
                    f,
                    "stale: sequence {sequence} is not above the last applied {last_applied}"
                )
            }
            Rejected::Invalid(r) => write!(f, "invalid: {r}"),
        }
    }
}

/// Counters of what the engine did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events applied: valid and fresh, whether or not anything changed.
    pub events_applied: u64,
    /// Events ignored as [`Rejected::Stale`] (duplicates and out-of-order events
    /// of a device).
    pub events_stale: u64,
    /// Events rejected as [`Rejected::Invalid`]: they break the event contract or exceed a
    /// limit of [`EngineConfig`].
    pub events_invalid: u64,
    /// Settings whose key no control reads (not stored, no effect).
    pub settings_ignored: u64,
    /// [`Transition`] records emitted, whatever their [`Reason`].
    pub transitions: u64,
}

struct Device {
    /// The leaf bits (2 per catalog leaf, `leaf_bytes` bytes), then the device id in UTF-8.
    data: Box<[u8]>,
    tenant: TenantIdx,
    inventory: u32,
    /// Where the id starts in `data`.
    leaf_bytes: u32,
    flags: u8,
    last_seq: i64,
    last_seen: i64,
}

impl Device {
    /// A device with the given leaf bytes and id.
    fn new(tenant: TenantIdx, id: &str, leaves: &[u8]) -> Device {
        let mut data = Vec::with_capacity(leaves.len() + id.len());
        data.extend_from_slice(leaves);
        data.extend_from_slice(id.as_bytes());
        Device {
            data: data.into_boxed_slice(),
            tenant,
            inventory: NO_INVENTORY,
            leaf_bytes: leaves.len() as u32,
            flags: 0,
            last_seq: i64::MIN,
            last_seen: i64::MIN,
        }
    }
    /// The device id's bytes.
    #[inline]
    fn id_bytes(&self) -> &[u8] {
        &self.data[self.leaf_bytes as usize..]
    }
    /// The device id.
    fn id(&self) -> &str {
        // SAFETY: `data[leaf_bytes..]` is copied from a `&str` in `Device::new` and never
        // written afterwards (`set_leaf` writes `data[..leaf_bytes]` only), so it is UTF-8.
        // Validating it again on every read was a tenth of encoding a score delta.
        unsafe { std::str::from_utf8_unchecked(self.id_bytes()) }
    }
    /// The leaf bits.
    fn leaves(&self) -> &[u8] {
        &self.data[..self.leaf_bytes as usize]
    }
    #[inline]
    fn leaf(&self, l: u32) -> Tri {
        Tri::from_bits(self.leaves()[(l >> 2) as usize] >> ((l & 3) * 2))
    }
    #[inline]
    fn set_leaf(&mut self, l: u32, t: Tri) {
        let b = &mut self.data[..self.leaf_bytes as usize][(l >> 2) as usize];
        let shift = (l & 3) * 2;
        *b = (*b & !(3 << shift)) | ((t as u8) << shift);
    }
    fn counted(&self) -> bool {
        self.flags & (RETIRED | INACTIVE) == 0
    }
}

struct Inventory {
    os_family: String,
    os_version: String,
    groups: Vec<GroupIdx>,
    tags: Vec<u32>,
    /// Which catalog conditions this inventory satisfies.
    conds: Vec<bool>,
}

/// Names interned to dense indices.
#[derive(Default)]
struct Interner {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Interner {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), i);
        i
    }
    fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }
    fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }
}

struct Tenant {
    name: String,
    devices: DeviceIndex,
}

/// A tenant's devices by id: bare device indices in a hash table whose keys are the ids held
/// by the devices themselves ([`Device::id_bytes`]), so each id is stored once, beside the
/// device's leaf bits.
#[derive(Default)]
struct DeviceIndex {
    table: hashbrown::HashTable<DeviceIdx>,
    hasher: foldhash::fast::RandomState,
}

impl DeviceIndex {
    fn hash(&self, id: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(id)
    }
    /// The index of the device `id` among `devices`.
    #[inline]
    fn get(&self, devices: &[Device], id: &str) -> Option<DeviceIdx> {
        let id = id.as_bytes();
        self.table
            .find(self.hash(id), |&d| devices[d as usize].id_bytes() == id)
            .copied()
    }
    /// Adds device `d` of `devices` (its id must not be in the index yet).
    fn insert(&mut self, devices: &[Device], d: DeviceIdx) {
        let hash = self.hash(devices[d as usize].id_bytes());
        let hasher = &self.hasher;
        self.table.insert_unique(hash, d, |&x| {
            use std::hash::BuildHasher;
            hasher.hash_one(devices[x as usize].id_bytes())
        });
    }
    fn len(&self) -> usize {
        self.table.len()
    }
    fn indices(&self) -> impl Iterator<Item = DeviceIdx> + '_ {
        self.table.iter().copied()
    }
}

struct ExcEntry {
    exc: Exception,
    tenant: TenantIdx,
    control: ControlIdx,
    credit: bool,
    active: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Ctx {
    counted: bool,
    inventory: u32,
}

/// The evaluation engine for one stream (one Kafka partition, or a file).
pub struct Engine {
    cat: Arc<Catalog>,
    cfg: EngineConfig,
    tenants: Vec<Tenant>,
    tenant_index: HashMap<String, TenantIdx>,
    groups: Interner,
    tags: Interner,
    inventories: Vec<Inventory>,
    inventory_index: HashMap<u64, Vec<u32>>,
    devices: Vec<Device>,
    aggregates: HashMap<ScopeKey, Vec<[i32; 5]>>,
    clock: i64,
    heap: BinaryHeap<Reverse<(i64, DeviceIdx)>>,
    exceptions: Vec<ExcEntry>,
    boundaries: BTreeSet<(i64, u32, bool)>,
    active_exc: HashMap<(TenantIdx, ControlIdx), Vec<u32>>,
    stats: Stats,
    // scratch buffers, reused across events
    leaf_updates: Vec<(u32, Tri)>,
    key_stamp: Vec<u32>,
    control_stamp: Vec<u32>,
    stamp: u32,
    affected: Vec<ControlIdx>,
    old_cells: Vec<Cell>,
    snapshot: Vec<u8>,
    scopes_scratch: Vec<ScopeKey>,
}

/// Rounded `p * pass / (pass + fail)`: a control's contribution to a scope.
#[inline]
pub fn contribution(points: Micros, pass: i64, fail: i64) -> Micros {
    let n = pass + fail;
    if n <= 0 {
        return 0;
    }
    // In 64 bits when nothing can overflow (always, for real points and fleets: 128-bit
    // division was 5% of the evaluator's time); exact either way, the same result.
    let num = points
        .checked_mul(2)
        .and_then(|p| p.checked_mul(pass))
        .and_then(|p| p.checked_add(n));
    if let (Some(num), Some(den)) = (num, n.checked_mul(2)) {
        return num / den;
    }
    ((2 * points as i128 * pass as i128 + n as i128) / (2 * n as i128)) as Micros
}

/// A control's share of a scope's maximum: `p` when any device is PASS or FAIL.
#[inline]
pub fn max_contribution(points: Micros, pass: i64, fail: i64) -> Micros {
    if pass + fail > 0 {
        points
    } else {
        0
    }
}

/// A device's evaluation result for one control (before exceptions), given the conditions of
/// its inventory.
#[inline]
fn raw_state(d: &Device, control: &crate::baseline::Control, conds: Option<&[bool]>) -> RawState {
    let applicable = control.applies_to.is_empty()
        || conds.is_some_and(|conds| control.applies_to.iter().all(|&k| conds[k as usize]));
    if !applicable {
        return RawState::NotApplicable;
    }
    let tri = match &control.check {
        Check::Leaf(l) => d.leaf(*l),
        check => check.eval(&|l| d.leaf(l)),
    };
    // A table, not branches: a device's results are as good as random to the branch
    // predictor, and the sink computes all of them for every changed device.
    const RAW: [[RawState; 3]; 3] = {
        use RawState::*;
        // [tri: Missing, Pass, Fail][on_missing: Fail, Unknown, Pass]
        [[Fail, Unknown, Pass], [Pass, Pass, Pass], [Fail, Fail, Fail]]
    };
    let on_missing = match control.on_missing {
        OnMissing::Fail => 0,
        OnMissing::Unknown => 1,
        OnMissing::Pass => 2,
    };
    RAW[tri as usize][on_missing]
}

fn all_controls_range(n: usize) -> impl Iterator<Item = ControlIdx> {
    0..n as ControlIdx
}

impl Engine {
    /// A new engine scoring against `catalog`.
    pub fn new(catalog: Arc<Catalog>, cfg: EngineConfig) -> Engine {
        let n_keys = catalog.key_count();
        let n_controls = catalog.controls.len();
        Engine {
            cat: catalog,
            cfg,
            tenants: Vec::new(),
            tenant_index: HashMap::default(),
            groups: Interner::default(),
            tags: Interner::default(),
            inventories: Vec::new(),
            inventory_index: HashMap::default(),
            devices: Vec::new(),
            aggregates: HashMap::default(),
            clock: i64::MIN,
            heap: BinaryHeap::new(),
            exceptions: Vec::new(),
            boundaries: BTreeSet::new(),
            active_exc: HashMap::default(),
            stats: Stats::default(),
            leaf_updates: Vec::new(),
            key_stamp: vec![0; n_keys],
            control_stamp: vec![0; n_controls],
            stamp: 0,
            affected: Vec::new(),
            old_cells: Vec::new(),
            snapshot: Vec::new(),
            scopes_scratch: Vec::new(),
        }
    }

    /// The catalog the engine scores against.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.cat
    }
    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }
    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// The event-time clock: the latest event time applied (ms), or
    /// `i64::MIN` before the first event.
    pub fn clock(&self) -> i64 {
        self.clock
    }
    /// Number of devices known (including retired and inactive ones).
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }
    /// Number of devices of one tenant (including retired and inactive ones).
    pub fn tenant_device_count(&self, t: TenantIdx) -> usize {
        self.tenants[t as usize].devices.len()
    }
    /// Tenant name of an index.
    pub fn tenant_name(&self, t: TenantIdx) -> &str {
        &self.tenants[t as usize].name
    }
    /// Tenant index of a name.
    pub fn tenant_idx(&self, name: &str) -> Option<TenantIdx> {
        self.tenant_index.get(name).copied()
    }
    /// All tenant names, in index order.
    pub fn tenant_names(&self) -> impl Iterator<Item = &str> {
        self.tenants.iter().map(|t| t.name.as_str())
    }
    /// Group name of an index (`None` for [`NO_GROUP`]).
    pub fn group_name(&self, g: GroupIdx) -> Option<&str> {
        self.groups.names.get(g as usize).map(String::as_str)
    }
    /// Group index of a name.
    pub fn group_idx(&self, name: &str) -> Option<GroupIdx> {
        self.groups.get(name)
    }
    /// Device id of an index.
    pub fn device_name(&self, d: DeviceIdx) -> &str {
        self.devices[d as usize].id()
    }
    /// Device index of a tenant and device id.
    pub fn device_idx(&self, tenant: &str, device: &str) -> Option<DeviceIdx> {
        let t = self.tenant_idx(tenant)?;
        self.tenants[t as usize].devices.get(&self.devices, device)
    }

    /// Applies one event. Transitions go to `out`; a stale or invalid event
    /// changes nothing (not even the clock) and is counted.
    pub fn apply(&mut self, ev: &ConfigChange, source: SourcePos, out: &mut Output) -> Result<(), Rejected> {
        match self.apply_inner(ev, source, out) {
            Ok(()) => {
                self.stats.events_applied += 1;
                Ok(())
            }
            Err(r) => {
                match r {
                    Rejected::Stale { .. } => self.stats.events_stale += 1,
                    Rejected::Invalid(_) => self.stats.events_invalid += 1,
                }
                Err(r)
            }
        }
    }

    fn next_stamp(&mut self) -> u32 {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.key_stamp.iter_mut().for_each(|s| *s = 0);
            self.control_stamp.iter_mut().for_each(|s| *s = 0);
            self.stamp = 1;
        }
        self.stamp
    }

    /// Computes the leaf results the event sets (before anything changes).
    /// For SNAPSHOT the full new leaf vector goes to `self.snapshot`.
    fn compute_leaf_updates(&mut self, ev: &ConfigChange) -> Result<(), Rejected> {
        self.leaf_updates.clear();
        let stamp = self.next_stamp();
        let cat = Arc::clone(&self.cat);
        if ev.kind == ChangeKind::Snapshot {
            self.snapshot.clear();
            self.snapshot.extend(cat.absent_results.iter().map(|t| *t as u8));
        }
        for s in &ev.settings {
            let Some(k) = cat.key_idx(&s.key) else {
                self.stats.settings_ignored += 1;
                continue;
            };
            if self.key_stamp[k as usize] == stamp {
                return Err(Rejected::Invalid(format!("setting key {:?} appears twice", s.key)));
            }
            self.key_stamp[k as usize] = stamp;
            for &l in &cat.leaves_by_key[k as usize] {
                let t = match ev.kind {
                    ChangeKind::Remove => cat.absent_results[l as usize],
                    _ => cat.leaves[l as usize].eval(Some(&s.value)),
                };
                if ev.kind == ChangeKind::Snapshot {
                    self.snapshot[l as usize] = t as u8;
                } else {
                    self.leaf_updates.push((l, t));
                }
            }
        }
        Ok(())
    }

    fn apply_inner(&mut self, ev: &ConfigChange, source: SourcePos, out: &mut Output) -> Result<(), Rejected> {
        self.validate(ev)?;
        let known_tenant = self.tenant_idx(&ev.tenant_id);
        let existing = known_tenant.and_then(|t| self.tenants[t as usize].devices.get(&self.devices, &ev.device_id));
        if let Some(d) = existing {
            let last = self.devices[d as usize].last_seq;
            if ev.sequence <= last {
                return Err(Rejected::Stale {
                    sequence: ev.sequence,
                    last_applied: last,
                });
            }
        }
        self.compute_leaf_updates(ev)?;
        // Everything below changes state: the event is valid and fresh.
        self.advance_to(ev.observed_at, source, out);
        let tenant = match known_tenant {
            Some(t) => t,
            None => self.intern_tenant(&ev.tenant_id),
        };
        let (dev, is_new) = match existing {
            Some(d) => (d, false),
            None => (self.new_device(tenant, &ev.device_id), true),
        };
        let old_ctx = {
            let d = &self.devices[dev as usize];
            Ctx {
                counted: !is_new && d.counted(),
                inventory: d.inventory,
            }
        };
        let new_inventory = match &ev.device {
            Some(info) => self.intern_inventory(info),
            None => old_ctx.inventory,
        };
        let retire = ev.kind == ChangeKind::Retire;
        let new_ctx = Ctx {
            counted: !retire,
            inventory: new_inventory,
        };

        // Which controls may change.
        self.affected.clear();
        if is_new || old_ctx != new_ctx || ev.kind == ChangeKind::Snapshot {
            self.affected.extend(all_controls_range(self.cat.controls.len()));
        } else {
            let stamp = self.next_stamp();
            let d = &self.devices[dev as usize];
            for &(l, t) in &self.leaf_updates {
                if d.leaf(l) == t {
                    continue;
                }
                for &c in &self.cat.controls_by_leaf[l as usize] {
                    if self.control_stamp[c as usize] != stamp {
                        self.control_stamp[c as usize] = stamp;
                        self.affected.push(c);
                    }
                }
            }
        }
        // Old cells (old leaves, old inventory; a new device has absent leaves
        // and no inventory).
        let mut affected = std::mem::take(&mut self.affected);
        let mut old_cells = std::mem::take(&mut self.old_cells);
        old_cells.clear();
        old_cells.extend(affected.iter().map(|&c| self.cell(dev, c)));

        // Mutate the device.
        {
            let d = &mut self.devices[dev as usize];
            if ev.kind == ChangeKind::Snapshot {
                for (l, &t) in self.snapshot.iter().enumerate() {
                    d.set_leaf(l as u32, Tri::from_bits(t));
                }
            } else {
                for &(l, t) in &self.leaf_updates {
                    d.set_leaf(l, t);
                }
            }
            d.inventory = new_inventory;
            d.last_seq = ev.sequence;
            d.last_seen = if is_new {
                ev.observed_at
            } else {
                d.last_seen.max(ev.observed_at)
            };
            d.flags &= !(RETIRED | INACTIVE);
            if retire {
                d.flags |= RETIRED;
            }
        }
        if !retire && self.devices[dev as usize].flags & IN_HEAP == 0 {
            let d = &mut self.devices[dev as usize];
            d.flags |= IN_HEAP;
            let deadline = d.last_seen.saturating_add(self.cfg.inactivity_window_ms);
            self.heap.push(Reverse((deadline, dev)));
        }
        let reason = if retire { Reason::Retired } else { Reason::Event };
        self.emit(
            dev,
            &affected,
            &old_cells,
            old_ctx,
            new_ctx,
            reason,
            ev.observed_at,
            source,
            out,
        );
        affected.clear();
        self.affected = affected;
        self.old_cells = old_cells;
        Ok(())
    }

    /// The current cell of one device-control.
    fn cell(&self, dev: DeviceIdx, c: ControlIdx) -> Cell {
        let d = &self.devices[dev as usize];
        let raw = raw_state(d, &self.cat.controls[c as usize], self.conds_of(d));
        // (The common case, no exception in force, without a call.)
        let exc = if raw == RawState::NotApplicable || self.active_exc.is_empty() {
            ExcStatus::None
        } else {
            self.exc_status(dev, c)
        };
        Cell { raw, exc }
    }

    /// The conditions of a device's inventory (`None`: it has none yet).
    fn conds_of(&self, d: &Device) -> Option<&[bool]> {
        (d.inventory != NO_INVENTORY).then(|| self.inventories[d.inventory as usize].conds.as_slice())
    }

    fn scopes_of(&self, ctx: Ctx, tenant: TenantIdx) -> impl Iterator<Item = ScopeKey> + '_ {
        let groups: &[GroupIdx] = if ctx.counted && ctx.inventory != NO_INVENTORY {
            &self.inventories[ctx.inventory as usize].groups
        } else {
            &[]
        };
        ctx.counted
            .then_some(ScopeKey {
                tenant,
                group: NO_GROUP,
            })
            .into_iter()
            .chain(groups.iter().map(move |&g| ScopeKey { tenant, group: g }))
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        dev: DeviceIdx,
        controls: &[ControlIdx],
        old_cells: &[Cell],
        old_ctx: Ctx,
        new_ctx: Ctx,
        reason: Reason,
        at: i64,
        source: SourcePos,
        out: &mut Output,
    ) {
        let tenant = self.devices[dev as usize].tenant;
        let ctx_changed = old_ctx != new_ctx;
        // Scopes before and after (a few entries: tenant plus groups), in one
        // reused buffer: old scopes, then new scopes, then their union.
        let mut buf = std::mem::take(&mut self.scopes_scratch);
        buf.clear();
        buf.extend(self.scopes_of(old_ctx, tenant));
        let n_old = buf.len();
        buf.extend(self.scopes_of(new_ctx, tenant));
        let n_new = buf.len() - n_old;
        for i in 0..n_old + n_new {
            let s = buf[i];
            if !buf[n_old + n_new..].contains(&s) {
                buf.push(s);
            }
        }
        let (old_scopes, rest) = buf.split_at(n_old);
        let (new_scopes, union) = rest.split_at(n_new);
        let n_controls = self.cat.controls.len();
        for (i, &c) in controls.iter().enumerate() {
            let old = old_cells[i];
            let new = self.cell(dev, c);
            if old == new && !ctx_changed {
                continue;
            }
            let p = self.cat.controls[c as usize].points;
            let (ok, nk) = (old.counts(), new.counts());
            let start = out.scope_deltas.len() as u32;
            for s in union {
                let o = if old_scopes.contains(s) { ok } else { [0; 5] };
                let n = if new_scopes.contains(s) { nk } else { [0; 5] };
                if o == n {
                    continue;
                }
                let agg = self.aggregates.entry(*s).or_insert_with(|| vec![[0; 5]; n_controls]);
                let before = agg[c as usize];
                let mut after = before;
                let mut dk = [0i8; 5];
                for k in 0..5 {
                    after[k] += n[k] - o[k];
                    dk[k] = (n[k] - o[k]) as i8;
                }
                agg[c as usize] = after;
                // The points of each view; without exceptions on the control both views hold the
                // same counts, and the divisions (the costly part) are done once.
                let points_of = |k: [i32; 5]| {
                    let with = contribution(p, k[EFF_PASS] as i64, k[EFF_FAIL] as i64);
                    let without = if (k[RAW_PASS], k[RAW_FAIL]) == (k[EFF_PASS], k[EFF_FAIL]) {
                        with
                    } else {
                        contribution(p, k[RAW_PASS] as i64, k[RAW_FAIL] as i64)
                    };
                    [with, without]
                };
                let (pa, pb) = (points_of(after), points_of(before));
                out.scope_deltas.push(ScopeDelta {
                    scope: *s,
                    control: c,
                    points: [pa[0] - pb[0], pa[1] - pb[1]],
                    max: [
                        max_contribution(p, after[EFF_PASS] as i64, after[EFF_FAIL] as i64)
                            - max_contribution(p, before[EFF_PASS] as i64, before[EFF_FAIL] as i64),
                        max_contribution(p, after[RAW_PASS] as i64, after[RAW_FAIL] as i64)
                            - max_contribution(p, before[RAW_PASS] as i64, before[RAW_FAIL] as i64),
                    ],
                    counts: dk,
                });
            }
            let end = out.scope_deltas.len() as u32;
            if old == new && start == end {
                continue;
            }
            // A device's own score counts only while the device counts (not
            // before its first event, not while retired or inactive).
            let (okd, nkd) = (
                if old_ctx.counted { ok } else { [0; 5] },
                if new_ctx.counted { nk } else { [0; 5] },
            );
            let dev_pts = |k: [i32; 5], pass: usize, fail: usize| (k[pass] as i64 * p, (k[pass] + k[fail]) as i64 * p);
            let (op_w, om_w) = dev_pts(okd, EFF_PASS, EFF_FAIL);
            let (np_w, nm_w) = dev_pts(nkd, EFF_PASS, EFF_FAIL);
            let (op_r, om_r) = dev_pts(okd, RAW_PASS, RAW_FAIL);
            let (np_r, nm_r) = dev_pts(nkd, RAW_PASS, RAW_FAIL);
            self.stats.transitions += 1;
            out.transitions.push(Transition {
                tenant,
                device: dev,
                control: c,
                old,
                new,
                old_counted: old_ctx.counted,
                new_counted: new_ctx.counted,
                reason,
                event_time: at,
                source,
                device_points: [np_w - op_w, np_r - op_r],
                device_max: [nm_w - om_w, nm_r - om_r],
                scopes: start..end,
            });
        }
        self.scopes_scratch = buf;
    }
}

/// Whether the interned, sorted and deduplicated `idx` holds exactly the names `given` (as a
/// set): each given name looked up once, so linear in the names (not pairwise).
fn same_names(idx: &[u32], interner: &Interner, given: &[String]) -> bool {
    if given.len() < idx.len() {
        return false;
    }
    let mut seen: Vec<u32> = Vec::with_capacity(given.len());
    for g in given {
        match interner.get(g) {
            Some(i) => seen.push(i),
            None => return false,
        }
    }
    seen.sort_unstable();
    seen.dedup();
    seen == idx
}

/// A (scope, control) cell as points, maximum and counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ScopeCell {
    /// `[with exceptions, without]`, micro-points.
    pub points: [Micros; 2],
    /// Maximum `[with exceptions, without]`, micro-points: the control's points when any
    /// device of the scope is PASS or FAIL in that view, else 0.
    pub max: [Micros; 2],
    /// Indexed by [`count`].
    pub counts: [i64; 5],
}

impl ScopeCell {
    /// The cell a set of counts implies.
    pub fn from_counts(p: Micros, k: [i32; 5]) -> ScopeCell {
        let k64 = k.map(|x| x as i64);
        ScopeCell {
            points: [
                contribution(p, k64[EFF_PASS], k64[EFF_FAIL]),
                contribution(p, k64[RAW_PASS], k64[RAW_FAIL]),
            ],
            max: [
                max_contribution(p, k64[EFF_PASS], k64[EFF_FAIL]),
                max_contribution(p, k64[RAW_PASS], k64[RAW_FAIL]),
            ],
            counts: k64,
        }
    }

    /// Adds one delta.
    pub fn add(&mut self, d: &ScopeDelta) {
        for v in 0..2 {
            self.points[v] += d.points[v];
            self.max[v] += d.max[v];
        }
        for k in 0..5 {
            self.counts[k] += d.counts[k] as i64;
        }
    }

    /// Whether every field is zero.
    pub fn is_zero(&self) -> bool {
        *self == ScopeCell::default()
    }
}

/// (scope, control) cells in a stable order.
pub type ScopeTable = BTreeMap<(ScopeKey, ControlIdx), ScopeCell>;
