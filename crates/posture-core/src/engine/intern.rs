//! Names in the engine: tenants, devices and inventories interned on first sight (an inventory
//! once per distinct OS, groups and tags, with its `applies_to` results).

use super::*;

impl Engine {
    pub(super) fn intern_tenant(&mut self, name: &str) -> TenantIdx {
        if let Some(&t) = self.tenant_index.get(name) {
            return t;
        }
        let t = self.tenants.len() as TenantIdx;
        self.tenants.push(Tenant {
            name: name.to_string(),
            devices: DeviceIndex::default(),
        });
        self.tenant_index.insert(name.to_string(), t);
        t
    }

    pub(super) fn new_device(&mut self, tenant: TenantIdx, id: &str) -> DeviceIdx {
        let idx = self.devices.len() as DeviceIdx;
        let n_leaves = self.cat.leaves.len();
        let mut d = Device::new(tenant, id, &vec![0u8; n_leaves.div_ceil(4)]);
        for (l, &t) in self.cat.absent_results.iter().enumerate() {
            d.set_leaf(l as u32, t);
        }
        self.devices.push(d);
        self.tenants[tenant as usize].devices.insert(&self.devices, idx);
        idx
    }

    pub(super) fn intern_inventory(&mut self, info: &DeviceInfo) -> u32 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&info.os_family, &info.os_version, &info.groups, &info.tags).hash(&mut h);
        let hash = h.finish();
        if let Some(cands) = self.inventory_index.get(&hash) {
            for &i in cands {
                let inv = &self.inventories[i as usize];
                if inv.os_family == info.os_family
                    && inv.os_version == info.os_version
                    && inv.groups.len() <= info.groups.len()
                    && same_names(&inv.groups, &self.groups, &info.groups)
                    && same_names(&inv.tags, &self.tags, &info.tags)
                {
                    return i;
                }
            }
        }
        let mut groups: Vec<GroupIdx> = info.groups.iter().map(|g| self.groups.intern(g)).collect();
        groups.sort_unstable();
        groups.dedup();
        let mut tags: Vec<u32> = info.tags.iter().map(|t| self.tags.intern(t)).collect();
        tags.sort_unstable();
        tags.dedup();
        let conds = self
            .cat
            .conditions
            .iter()
            .map(|c| c.matches(&info.os_family, &info.os_version, &info.groups, &info.tags))
            .collect();
        let i = self.inventories.len() as u32;
        self.inventories.push(Inventory {
            os_family: info.os_family.clone(),
            os_version: info.os_version.clone(),
            groups,
            tags,
            conds,
        });
        self.inventory_index.entry(hash).or_default().push(i);
        i
    }
}
