//! Engine snapshots: the whole state of an [`Engine`] as bytes, and back.
//!
//! The streaming pipeline stores a snapshot of each partition's engine
//! together with the input offset it corresponds to; after a crash or a
//! rebalance, the new owner of the partition restores it and replays the
//! records from that offset (the engine is deterministic, so the replay
//! produces exactly the rows it produced before).
//!
//! Format (version 1): the magic `PSNP`, the version, the catalog
//! fingerprint, then every field of the engine's state in a fixed order;
//! integers as LEB128 varints (zigzag for signed ones), strings as a length
//! and UTF-8 bytes. Derived structures (the per-tenant device maps, the
//! scratch buffers) are rebuilt, not stored. A snapshot restores only with
//! the same catalog (same baselines, same leaf order): the fingerprint is
//! checked, and a mismatch is an error, so the caller replays from the
//! beginning instead.

use super::*;
use crate::exception::{Exception, ExceptionScope, Justification};

const MAGIC: &[u8; 4] = b"PSNP";
const VERSION: u64 = 1;

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes do not start with the magic `PSNP`: not a snapshot (or fewer than 4 bytes).
    #[error("not an engine snapshot (bad magic)")]
    BadMagic,
    /// The snapshot's format version (carried) is not one this build can read.
    #[error("snapshot format version {0} is not supported (this build reads version {VERSION})")]
    Version(u64),
    /// The snapshot was taken with other baselines (see [`catalog_fingerprint`]): its state does
    /// not fit the current catalog, so the partition must be replayed from the beginning.
    #[error("the snapshot was taken with other baselines (catalog fingerprint {found:016x}, now {expected:016x})")]
    Catalog {
        /// The fingerprint stored in the snapshot.
        found: u64,
        /// The fingerprint of the catalog being restored with.
        expected: u64,
    },
    /// The bytes end early, go on after the state ends, or hold a value the state cannot have.
    #[error("corrupt snapshot at byte {at}: {what}")]
    Corrupt {
        /// Byte offset into the snapshot where reading failed.
        at: usize,
        /// What is wrong there, e.g. `truncated` or `varint too long`.
        what: &'static str,
    },
}

/// A stable fingerprint of what a snapshot depends on in a catalog: FNV-1a
/// over each control's id, category, points, remediation, `applies_to`,
/// check and `on_missing`, the compiled leaves and conditions, and the
/// setting keys in index order. Titles, texts and file paths are left out,
/// so moving or rewording baselines keeps snapshots valid.
pub fn catalog_fingerprint(cat: &Catalog) -> u64 {
    use std::fmt::Write;
    let mut text = String::new();
    for c in &cat.controls {
        let _ = write!(
            text,
            "{}|{:?}|{}|{:?}|{:?}|{:?}|{:?};",
            c.id, c.category, c.points, c.remediation, c.applies_to, c.check, c.on_missing
        );
    }
    let _ = write!(text, "{:?}|{:?}|", cat.leaves, cat.conditions);
    for k in 0..cat.key_count() {
        let _ = write!(text, "{}/", cat.key_name(k as u32));
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn u(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn i(&mut self, v: i64) {
        self.u(((v << 1) ^ (v >> 63)) as u64);
    }
    fn s(&mut self, v: &str) {
        self.u(v.len() as u64);
        self.0.extend_from_slice(v.as_bytes());
    }
    fn b(&mut self, v: bool) {
        self.0.push(v as u8);
    }
    fn opt_i(&mut self, v: Option<i64>) {
        match v {
            None => self.0.push(0),
            Some(x) => {
                self.0.push(1);
                self.i(x);
            }
        }
    }
}

struct R<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> R<'a> {
    fn err(&self, what: &'static str) -> SnapshotError {
        SnapshotError::Corrupt { at: self.at, what }
    }
    fn byte(&mut self) -> Result<u8, SnapshotError> {
        let b = *self.buf.get(self.at).ok_or_else(|| self.err("truncated"))?;
        self.at += 1;
        Ok(b)
    }
    fn u(&mut self) -> Result<u64, SnapshotError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint too long"))
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        u32::try_from(self.u()?).map_err(|_| self.err("u32 out of range"))
    }
    fn i(&mut self) -> Result<i64, SnapshotError> {
        let v = self.u()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }
    fn i32(&mut self) -> Result<i32, SnapshotError> {
        i32::try_from(self.i()?).map_err(|_| self.err("i32 out of range"))
    }
    /// A length that must fit in what is left of the buffer (each item takes
    /// at least `min_item` bytes), so corrupt input cannot make us allocate.
    fn len(&mut self, min_item: usize) -> Result<usize, SnapshotError> {
        let n = self.u()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.buf.len() - self.at {
            return Err(self.err("length beyond the end"));
        }
        Ok(n)
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| self.err("truncated"))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn s(&mut self) -> Result<String, SnapshotError> {
        let n = self.len(1)?;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("invalid UTF-8"))
    }
    fn b(&mut self) -> Result<bool, SnapshotError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.err("bad boolean")),
        }
    }
    fn opt_i(&mut self) -> Result<Option<i64>, SnapshotError> {
        Ok(if self.b()? { Some(self.i()?) } else { None })
    }
}

fn write_interner(w: &mut W, i: &Interner) {
    w.u(i.names.len() as u64);
    for n in &i.names {
        w.s(n);
    }
}

fn read_interner(r: &mut R) -> Result<Interner, SnapshotError> {
    let mut i = Interner::default();
    for _ in 0..r.len(1)? {
        let name = r.s()?;
        i.intern(&name);
    }
    Ok(i)
}

fn write_exception(w: &mut W, e: &Exception) {
    w.s(&e.id);
    w.s(&e.tenant);
    w.s(&e.control);
    match &e.scope {
        ExceptionScope::Tenant => w.u(0),
        ExceptionScope::Device(d) => {
            w.u(1);
            w.s(d);
        }
        ExceptionScope::Group(g) => {
            w.u(2);
            w.s(g);
        }
        ExceptionScope::Tag(t) => {
            w.u(3);
            w.s(t);
        }
    }
    w.u(match e.justification {
        Justification::ThirdPartyControl => 0,
        Justification::AlternateMitigation => 1,
        Justification::RiskAccepted => 2,
        Justification::PlannedRemediation => 3,
    });
    w.i(e.starts_at);
    w.opt_i(e.expires_at);
    w.s(&e.author);
    w.s(&e.note);
}

fn read_exception(r: &mut R) -> Result<Exception, SnapshotError> {
    let id = r.s()?;
    let tenant = r.s()?;
    let control = r.s()?;
    let scope = match r.u()? {
        0 => ExceptionScope::Tenant,
        1 => ExceptionScope::Device(r.s()?),
        2 => ExceptionScope::Group(r.s()?),
        3 => ExceptionScope::Tag(r.s()?),
        _ => return Err(r.err("bad exception scope")),
    };
    let justification = match r.u()? {
        0 => Justification::ThirdPartyControl,
        1 => Justification::AlternateMitigation,
        2 => Justification::RiskAccepted,
        3 => Justification::PlannedRemediation,
        _ => return Err(r.err("bad justification")),
    };
    Ok(Exception {
        id,
        tenant,
        control,
        scope,
        justification,
        starts_at: r.i()?,
        expires_at: r.opt_i()?,
        author: r.s()?,
        note: r.s()?,
    })
}

impl Engine {
    /// Appends the engine's whole state to `out` (see the module docs).
    /// Deterministic: the same state gives the same bytes.
    pub fn snapshot(&self, out: &mut Vec<u8>) {
        let mut w = W(out);
        w.0.extend_from_slice(MAGIC);
        w.u(VERSION);
        w.0.extend_from_slice(&catalog_fingerprint(&self.cat).to_le_bytes());
        w.i(self.clock);
        let st = &self.stats;
        for v in [
            st.events_applied,
            st.events_stale,
            st.events_invalid,
            st.settings_ignored,
            st.transitions,
        ] {
            w.u(v);
        }
        w.u(self.tenants.len() as u64);
        for t in &self.tenants {
            w.s(&t.name);
        }
        write_interner(&mut w, &self.groups);
        write_interner(&mut w, &self.tags);
        w.u(self.inventories.len() as u64);
        for inv in &self.inventories {
            w.s(&inv.os_family);
            w.s(&inv.os_version);
            w.u(inv.groups.len() as u64);
            inv.groups.iter().for_each(|&g| w.u(g as u64));
            w.u(inv.tags.len() as u64);
            inv.tags.iter().for_each(|&t| w.u(t as u64));
            w.u(inv.conds.len() as u64);
            inv.conds.iter().for_each(|&c| w.b(c));
        }
        // Sorted, so equal states give equal bytes.
        let mut index: Vec<(&u64, &Vec<u32>)> = self.inventory_index.iter().collect();
        index.sort();
        w.u(index.len() as u64);
        for (h, v) in index {
            w.0.extend_from_slice(&h.to_le_bytes());
            w.u(v.len() as u64);
            v.iter().for_each(|&i| w.u(i as u64));
        }
        w.u(self.devices.len() as u64);
        for d in &self.devices {
            w.s(d.id());
            w.u(d.tenant as u64);
            w.u(d.inventory as u64);
            w.0.push(d.flags);
            w.i(d.last_seq);
            w.i(d.last_seen);
            w.u(d.leaves().len() as u64);
            w.0.extend_from_slice(d.leaves());
        }
        let mut aggs: Vec<(&ScopeKey, &Vec<[i32; 5]>)> = self.aggregates.iter().collect();
        aggs.sort_by_key(|(k, _)| (k.tenant, k.group));
        w.u(aggs.len() as u64);
        for (k, rows) in aggs {
            w.u(k.tenant as u64);
            w.u(k.group as u64);
            w.u(rows.len() as u64);
            for row in rows {
                row.iter().for_each(|&v| w.i(v as i64));
            }
        }
        let mut heap: Vec<(i64, DeviceIdx)> = self.heap.iter().map(|r| r.0).collect();
        heap.sort_unstable();
        w.u(heap.len() as u64);
        for (t, d) in heap {
            w.i(t);
            w.u(d as u64);
        }
        w.u(self.exceptions.len() as u64);
        for e in &self.exceptions {
            write_exception(&mut w, &e.exc);
            w.u(e.tenant as u64);
            w.u(e.control as u64);
            w.b(e.credit);
            w.b(e.active);
        }
        w.u(self.boundaries.len() as u64);
        for &(t, i, start) in &self.boundaries {
            w.i(t);
            w.u(i as u64);
            w.b(start);
        }
        let mut active: Vec<(&(TenantIdx, ControlIdx), &Vec<u32>)> = self.active_exc.iter().collect();
        active.sort();
        w.u(active.len() as u64);
        for ((t, c), v) in active {
            w.u(*t as u64);
            w.u(*c as u64);
            w.u(v.len() as u64);
            v.iter().for_each(|&i| w.u(i as u64));
        }
    }

    /// Rebuilds an engine from [`Engine::snapshot`] bytes, for `catalog`
    /// (which must be the catalog the snapshot was taken with) and `cfg`.
    pub fn restore(catalog: Arc<Catalog>, cfg: EngineConfig, bytes: &[u8]) -> Result<Engine, SnapshotError> {
        let mut r = R { buf: bytes, at: 0 };
        if r.bytes(4).map_err(|_| SnapshotError::BadMagic)? != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = r.u()?;
        if version != VERSION {
            return Err(SnapshotError::Version(version));
        }
        let found = u64::from_le_bytes(r.bytes(8)?.try_into().expect("8 bytes"));
        let expected = catalog_fingerprint(&catalog);
        if found != expected {
            return Err(SnapshotError::Catalog { found, expected });
        }
        let n_controls = catalog.controls.len();
        let leaf_bytes = catalog.leaves.len().div_ceil(4);
        let mut e = Engine::new(catalog, cfg);
        e.clock = r.i()?;
        e.stats = Stats {
            events_applied: r.u()?,
            events_stale: r.u()?,
            events_invalid: r.u()?,
            settings_ignored: r.u()?,
            transitions: r.u()?,
        };
        for i in 0..r.len(1)? {
            let name = r.s()?;
            e.tenant_index.insert(name.clone(), i as TenantIdx);
            e.tenants.push(Tenant {
                name,
                devices: DeviceIndex::default(),
            });
        }
        e.groups = read_interner(&mut r)?;
        e.tags = read_interner(&mut r)?;
        let n_conds = e.cat.conditions.len();
        for _ in 0..r.len(3)? {
            let os_family = r.s()?;
            let os_version = r.s()?;
            let groups = (0..r.len(1)?).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
            let tags = (0..r.len(1)?).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
            let conds = (0..r.len(1)?).map(|_| r.b()).collect::<Result<Vec<_>, _>>()?;
            if groups.iter().any(|&g| g as usize >= e.groups.names.len())
                || tags.iter().any(|&t| t as usize >= e.tags.names.len())
                || conds.len() != n_conds
            {
                return Err(r.err("inventory refers to unknown names"));
            }
            e.inventories.push(Inventory {
                os_family,
                os_version,
                groups,
                tags,
                conds,
            });
        }
        for _ in 0..r.len(9)? {
            let h = u64::from_le_bytes(r.bytes(8)?.try_into().expect("8 bytes"));
            let v = (0..r.len(1)?).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
            e.inventory_index.insert(h, v);
        }
        let n_devices = r.len(4)?;
        e.devices.reserve_exact(n_devices);
        for i in 0..n_devices {
            let id = r.s()?;
            let tenant = r.u32()?;
            let inventory = r.u32()?;
            let flags = r.byte()?;
            let last_seq = r.i()?;
            let last_seen = r.i()?;
            let n = r.len(1)?;
            if n != leaf_bytes
                || tenant as usize >= e.tenants.len()
                || (inventory != NO_INVENTORY && inventory as usize >= e.inventories.len())
            {
                return Err(r.err("device does not fit the catalog"));
            }
            let leaves = r.bytes(n)?;
            if e.tenants[tenant as usize].devices.get(&e.devices, &id).is_some() {
                return Err(r.err("a device is listed twice"));
            }
            e.devices.push(Device {
                inventory,
                flags,
                last_seq,
                last_seen,
                ..Device::new(tenant, &id, leaves)
            });
            e.tenants[tenant as usize].devices.insert(&e.devices, i as DeviceIdx);
        }
        for _ in 0..r.len(3)? {
            let key = ScopeKey {
                tenant: r.u32()?,
                group: r.u32()?,
            };
            let n = r.len(5)?;
            if n != n_controls {
                return Err(r.err("aggregate row count differs from the catalog"));
            }
            let mut rows = Vec::with_capacity(n);
            for _ in 0..n {
                rows.push([r.i32()?, r.i32()?, r.i32()?, r.i32()?, r.i32()?]);
            }
            e.aggregates.insert(key, rows);
        }
        for _ in 0..r.len(2)? {
            let t = r.i()?;
            let d = r.u32()?;
            e.heap.push(Reverse((t, d)));
        }
        for _ in 0..r.len(8)? {
            let exc = read_exception(&mut r)?;
            e.exceptions.push(ExcEntry {
                exc,
                tenant: r.u32()?,
                control: r.u32()?,
                credit: r.b()?,
                active: r.b()?,
            });
        }
        for _ in 0..r.len(3)? {
            e.boundaries.insert((r.i()?, r.u32()?, r.b()?));
        }
        for _ in 0..r.len(3)? {
            let key = (r.u32()?, r.u32()?);
            let v = (0..r.len(1)?).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
            e.active_exc.insert(key, v);
        }
        if r.at != bytes.len() {
            return Err(r.err("trailing bytes"));
        }
        Ok(e)
    }
}
