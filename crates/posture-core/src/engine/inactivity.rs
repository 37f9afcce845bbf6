//! Time in the engine: the clock moved to an event time or by the caller, and the devices whose
//! inactivity window ends on the way made inactive (they stop counting in their scopes).

use super::*;

impl Engine {
    /// Moves the event-time clock forward to `t`, applying every exception
    /// start/expiry and inactivity deadline up to `t`, in time order, each
    /// stamped with its own instant. Never moves the clock back.
    pub fn advance_to(&mut self, t: i64, source: SourcePos, out: &mut Output) {
        if t <= self.clock {
            self.process_due(source, out);
            return;
        }
        self.clock = t;
        self.process_due(source, out);
    }

    pub(super) fn process_due(&mut self, source: SourcePos, out: &mut Output) {
        loop {
            let next_exc = self.boundaries.first().copied().filter(|b| b.0 <= self.clock);
            let next_inactive = self.heap.peek().map(|r| r.0).filter(|b| b.0 <= self.clock);
            match (next_exc, next_inactive) {
                (None, None) => return,
                (Some(b), i) if i.is_none_or(|i| b.0 <= i.0) => {
                    self.boundaries.pop_first();
                    self.exception_boundary(b.1, b.2, b.0, source, out);
                }
                (_, Some((key, dev))) => {
                    self.heap.pop();
                    let d = &mut self.devices[dev as usize];
                    if d.flags & RETIRED != 0 {
                        d.flags &= !IN_HEAP;
                        continue;
                    }
                    let real = d.last_seen.saturating_add(self.cfg.inactivity_window_ms);
                    if real != key {
                        self.heap.push(Reverse((real, dev)));
                        continue;
                    }
                    d.flags &= !IN_HEAP;
                    self.deactivate(dev, key, source, out);
                }
                (Some(_), None) => unreachable!("covered by the guard above"),
            }
        }
    }

    pub(super) fn deactivate(&mut self, dev: DeviceIdx, at: i64, source: SourcePos, out: &mut Output) {
        let d = &self.devices[dev as usize];
        let old_ctx = Ctx {
            counted: d.counted(),
            inventory: d.inventory,
        };
        let new_ctx = Ctx {
            counted: false,
            ..old_ctx
        };
        let mut affected = std::mem::take(&mut self.affected);
        let mut old_cells = std::mem::take(&mut self.old_cells);
        affected.clear();
        affected.extend(all_controls_range(self.cat.controls.len()));
        old_cells.clear();
        old_cells.extend(affected.iter().map(|&c| self.cell(dev, c)));
        self.devices[dev as usize].flags |= INACTIVE;
        self.emit(
            dev,
            &affected,
            &old_cells,
            old_ctx,
            new_ctx,
            Reason::Inactive,
            at,
            source,
            out,
        );
        self.affected = affected;
        self.old_cells = old_cells;
    }
}
