//! Exceptions in the engine: added and expired, matched to devices, and the transitions their
//! start and end cause (each device x control they cover moves between FAIL and EXCEPTED).

use super::*;

impl Engine {
    /// Adds an exception. It takes effect when the clock reaches its start
    /// and ends at its expiry. A start (or expiry) the clock has already
    /// passed takes effect at once, stamped with the clock: past deltas are
    /// never rewritten, so the history stays consistent; an exception that
    /// has entirely passed has no effect. Errors name an unknown control.
    pub fn add_exception(&mut self, exc: Exception, out: &mut Output) -> Result<(), String> {
        let control = self
            .cat
            .control_idx(&exc.control)
            .ok_or_else(|| format!("exception {}: unknown control {:?}", exc.id, exc.control))?;
        if self.exceptions.iter().any(|e| e.exc.id == exc.id) {
            return Err(format!("exception {}: id already used", exc.id));
        }
        let tenant = self.intern_tenant(&exc.tenant);
        let idx = self.exceptions.len() as u32;
        let start = exc.starts_at.max(self.clock);
        let end = exc.expires_at.map(|e| e.max(start));
        if end != Some(start) {
            self.boundaries.insert((start, idx, true));
            if let Some(e) = end {
                self.boundaries.insert((e, idx, false));
            }
        }
        let credit = exc.justification.credits();
        self.exceptions.push(ExcEntry {
            exc,
            tenant,
            control,
            credit,
            active: false,
        });
        self.process_due(
            SourcePos {
                partition: -1,
                offset: -1,
            },
            out,
        );
        Ok(())
    }

    /// Ends an exception at event time `at` (or at once, stamped with the
    /// clock, if `at` has passed). An exception that has not started by then
    /// never takes effect.
    pub fn expire_exception(&mut self, id: &str, at: i64, out: &mut Output) -> Result<(), String> {
        let idx = self
            .exceptions
            .iter()
            .position(|e| e.exc.id == id)
            .ok_or_else(|| format!("no exception {id:?}"))? as u32;
        let at = at.max(self.clock);
        // Its pending boundaries: the end moves; a start not reached by then is dropped.
        let pending_start = self.boundaries.iter().find(|b| b.1 == idx && b.2).map(|b| b.0);
        self.boundaries.retain(|b| b.1 != idx || b.2);
        match pending_start {
            Some(s) if at <= s => {
                self.boundaries.remove(&(s, idx, true));
            }
            _ => {
                self.boundaries.insert((at, idx, false));
            }
        }
        self.exceptions[idx as usize].exc.expires_at = Some(at);
        self.process_due(
            SourcePos {
                partition: -1,
                offset: -1,
            },
            out,
        );
        Ok(())
    }

    /// The exceptions the engine knows, with whether each is in force now.
    pub fn exceptions(&self) -> impl Iterator<Item = (&Exception, bool)> {
        self.exceptions.iter().map(|e| (&e.exc, e.active))
    }

    pub(super) fn exc_matches(&self, e: &ExcEntry, dev: DeviceIdx) -> bool {
        let d = &self.devices[dev as usize];
        if d.tenant != e.tenant {
            return false;
        }
        match &e.exc.scope {
            ExceptionScope::Tenant => true,
            ExceptionScope::Device(id) => d.id_bytes() == id.as_bytes(),
            ExceptionScope::Group(g) => self.groups.get(g).is_some_and(|g| {
                d.inventory != NO_INVENTORY && self.inventories[d.inventory as usize].groups.contains(&g)
            }),
            ExceptionScope::Tag(t) => self.tags.get(t).is_some_and(|t| {
                d.inventory != NO_INVENTORY && self.inventories[d.inventory as usize].tags.contains(&t)
            }),
        }
    }

    pub(super) fn exception_boundary(&mut self, idx: u32, start: bool, at: i64, source: SourcePos, out: &mut Output) {
        let (tenant, control) = {
            let e = &self.exceptions[idx as usize];
            if e.active == start {
                return;
            }
            (e.tenant, e.control)
        };
        let devs: Vec<DeviceIdx> = self.tenants[tenant as usize]
            .devices
            .indices()
            .filter(|&d| self.exc_matches(&self.exceptions[idx as usize], d))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let olds: Vec<Cell> = devs.iter().map(|&d| self.cell(d, control)).collect();
        self.exceptions[idx as usize].active = start;
        let list = self.active_exc.entry((tenant, control)).or_default();
        if start {
            list.push(idx);
        } else {
            list.retain(|&i| i != idx);
            if list.is_empty() {
                self.active_exc.remove(&(tenant, control));
            }
        }
        let reason = if start {
            Reason::ExceptionStarted
        } else {
            Reason::ExceptionEnded
        };
        for (d, old) in devs.into_iter().zip(olds) {
            let dv = &self.devices[d as usize];
            let ctx = Ctx {
                counted: dv.counted(),
                inventory: dv.inventory,
            };
            self.emit(d, &[control], &[old], ctx, ctx, reason, at, source, out);
        }
    }

    pub(super) fn exc_status(&self, dev: DeviceIdx, c: ControlIdx) -> ExcStatus {
        if self.active_exc.is_empty() {
            return ExcStatus::None;
        }
        let tenant = self.devices[dev as usize].tenant;
        let Some(list) = self.active_exc.get(&(tenant, c)) else {
            return ExcStatus::None;
        };
        let mut status = ExcStatus::None;
        for &i in list {
            let e = &self.exceptions[i as usize];
            if self.exc_matches(e, dev) {
                if e.credit {
                    return ExcStatus::Credit;
                }
                status = ExcStatus::NoCredit;
            }
        }
        status
    }
}
