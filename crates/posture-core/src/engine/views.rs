//! Read-only views of the engine's state: the scope counts and tables (kept, and recomputed from
//! scratch to check them), one device's cells and groups, and the state's size.

use super::*;

impl Engine {
    /// The counts of one scope and control, from the incremental aggregates.
    pub fn counts(&self, scope: ScopeKey, c: ControlIdx) -> [i32; 5] {
        self.aggregates.get(&scope).map_or([0; 5], |a| a[c as usize])
    }

    /// Every non-empty (scope, control) cell from the incremental aggregates.
    pub fn aggregate_table(&self) -> ScopeTable {
        let mut t = ScopeTable::new();
        for (s, per_control) in &self.aggregates {
            for (c, k) in per_control.iter().enumerate() {
                if *k != [0; 5] {
                    t.insert(
                        (*s, c as ControlIdx),
                        ScopeCell::from_counts(self.cat.controls[c].points, *k),
                    );
                }
            }
        }
        t
    }

    /// The same table recomputed from scratch from every device's current
    /// state, ignoring the incremental aggregates. Used to prove they agree.
    pub fn recompute_table(&self) -> ScopeTable {
        let mut counts: BTreeMap<(ScopeKey, ControlIdx), [i32; 5]> = BTreeMap::new();
        for (i, d) in self.devices.iter().enumerate() {
            let ctx = Ctx {
                counted: d.counted(),
                inventory: d.inventory,
            };
            let scopes: Vec<ScopeKey> = self.scopes_of(ctx, d.tenant).collect();
            for c in all_controls_range(self.cat.controls.len()) {
                let k = self.cell(i as DeviceIdx, c).counts();
                if k == [0; 5] {
                    continue;
                }
                for s in &scopes {
                    let e = counts.entry((*s, c)).or_insert([0; 5]);
                    for j in 0..5 {
                        e[j] += k[j];
                    }
                }
            }
        }
        counts
            .into_iter()
            .map(|(key, k)| (key, ScopeCell::from_counts(self.cat.controls[key.1 as usize].points, k)))
            .collect()
    }

    /// One device's current cells, with whether it counts in scores.
    pub fn device_cells(&self, dev: DeviceIdx) -> (bool, Vec<Cell>) {
        (self.devices[dev as usize].counted(), self.cells_of(dev).collect())
    }

    /// One device's current cells in catalog order, without collecting them: what
    /// [`Engine::device_cells`] returns, with the device's inventory resolved once for all its
    /// controls and no exception lookup at all while there is no active exception (the sink
    /// writes every cell of each changed device, so this runs for all controls of a device).
    pub fn cells_of(&self, dev: DeviceIdx) -> impl Iterator<Item = Cell> + '_ {
        let d = &self.devices[dev as usize];
        let conds = self.conds_of(d);
        let no_exceptions = self.active_exc.is_empty();
        self.cat.controls.iter().enumerate().map(move |(c, control)| {
            let raw = raw_state(d, control, conds);
            let exc = if no_exceptions || raw == RawState::NotApplicable {
                ExcStatus::None
            } else {
                self.exc_status(dev, c as ControlIdx)
            };
            Cell { raw, exc }
        })
    }

    /// Each control's result for one device before exceptions, in catalog order: what
    /// [`Engine::cells_of`] gives as `raw`, without the exception lookups.
    pub fn raw_states_of(&self, dev: DeviceIdx) -> impl Iterator<Item = RawState> + '_ {
        let d = &self.devices[dev as usize];
        let conds = self.conds_of(d);
        self.cat
            .controls
            .iter()
            .map(move |control| raw_state(d, control, conds))
    }

    /// Whether any exception is in force now (without one every cell's exception status is
    /// [`ExcStatus::None`] and its state follows from its raw state alone).
    pub fn exceptions_in_force(&self) -> bool {
        !self.active_exc.is_empty()
    }

    /// The groups of a device's current inventory.
    pub fn device_groups(&self, dev: DeviceIdx) -> Vec<&str> {
        let d = &self.devices[dev as usize];
        if d.inventory == NO_INVENTORY {
            return Vec::new();
        }
        self.inventories[d.inventory as usize]
            .groups
            .iter()
            .map(|&g| self.groups.name(g))
            .collect()
    }

    /// Heap bytes of per-device state as laid out (device struct, id, leaf
    /// bits, lookup-map entry, inactivity-heap entry), averaged over devices.
    /// Shared tables (inventories, aggregates) are not included.
    pub fn state_bytes_per_device(&self) -> f64 {
        if self.devices.is_empty() {
            return 0.0;
        }
        let mut total = 0usize;
        for d in &self.devices {
            total += std::mem::size_of::<Device>() + d.data.len();
            // the lookup's entry: an index and a control byte, at hashbrown's 7/8 load
            total += (std::mem::size_of::<DeviceIdx>() + 1) * 8 / 7;
            total += std::mem::size_of::<(i64, DeviceIdx)>();
        }
        total as f64 / self.devices.len() as f64
    }
}
