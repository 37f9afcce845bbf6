//! [`Batch`]: the rows of one flush, table by table, with what a flush needs besides them: the
//! devices whose state rows are made at the flush ([`Batch::settle`]), the suppression of rows a
//! replay makes again ([`Batch::suppress_since`]), the flush's rollup and commit.

use crate::rollup::Rollup;
use crate::rows::{
    catalog_id, exception_code, next_version, raw_code, state_code, CatalogRow, DeviceStateRow, EvidenceRow,
    InventoryRow, SyncRow, TransitionRow,
};
use crate::HashMap;
use posture_core::engine::ExcStatus;
use posture_core::{Engine, SourcePos};
use std::time::{SystemTime, UNIX_EPOCH};

/// Rows for the tables, collected from one or more [`Output`](posture_core::Output)s and written by
/// [`crate::Sink::write`] with one INSERT per table.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Rows of `transitions` (with their scope deltas).
    pub transitions: Vec<TransitionRow>,
    /// Rows of `device_state`: one per device changed since the last flush, made by
    /// [`Batch::settle`] from the engine's state right before the flush (until then the changed
    /// devices wait in `pending_states`: a device that changes many times in a batch has its
    /// 300-odd cells read once, not once per change).
    pub device_state: Vec<DeviceStateRow>,
    /// Devices changed since the last [`Batch::settle`], by (source partition, device index in
    /// that partition's engine), with where their last transition came from.
    pub(crate) pending_states: HashMap<(i32, posture_core::types::DeviceIdx), PendingState>,
    /// The keys of `pending_states` in the order they were touched (repeats included), so that
    /// [`Batch::suppress_since`] looks at only what one output touched.
    pub(crate) touched: Vec<(i32, posture_core::types::DeviceIdx)>,
    /// Rows of `baseline_catalogs`: a catalog the first time this batch makes a `device_state`
    /// row of it.
    pub catalogs: Vec<CatalogRow>,
    /// Rows of `device_evidence` (idempotent: not part of the lineage tables).
    pub device_evidence: Vec<EvidenceRow>,
    /// Rows of `device_inventory` (idempotent too).
    pub device_inventory: Vec<InventoryRow>,
    /// Rows of `exception_syncs`.
    pub exception_syncs: Vec<SyncRow>,
    /// The batch's `score_rollup` cells and partition progress (the flush's commit).
    pub rollup: Rollup,
    /// Next `transitions` `seq` per source position.
    pub(crate) seqs: HashMap<SourcePos, u32>,
    /// [`catalog_id`] per catalog (by address) seen by this batch; kept across [`Batch::clear`].
    catalog_ids: Vec<(usize, u64)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Whether the batch holds no row.
    pub fn is_empty(&self) -> bool {
        self.transitions.is_empty()
            && self.device_state.is_empty()
            && self.pending_states.is_empty()
            && self.catalogs.is_empty()
            && self.device_evidence.is_empty()
            && self.device_inventory.is_empty()
            && self.exception_syncs.is_empty()
            && self.rollup.is_empty()
    }

    /// Rows in all tables.
    pub fn len(&self) -> usize {
        self.transitions.len()
            + self.device_state.len()
            + self.pending_states.len()
            + self.catalogs.len()
            + self.device_evidence.len()
            + self.device_inventory.len()
            + self.exception_syncs.len()
            + self.rollup.len()
    }

    /// The rows of each table the batch holds (but the rollup's), by table name.
    pub fn table_counts(&self) -> [(&'static str, usize); 6] {
        [
            ("transitions", self.transitions.len()),
            ("device_state", self.device_state.len()),
            ("device_evidence", self.device_evidence.len()),
            ("device_inventory", self.device_inventory.len()),
            ("exception_syncs", self.exception_syncs.len()),
            ("baseline_catalogs", self.catalogs.len()),
        ]
    }

    /// Row counts per table, in [`crate::state::LINEAGE_TABLES`] order (`device_state`: its
    /// rows and the devices waiting for one).
    pub fn counts(&self) -> [usize; 2] {
        [
            self.transitions.len(),
            self.device_state.len() + self.pending_states.len(),
        ]
    }

    /// Changed devices whose `device_state` rows [`Batch::settle`] has not made yet.
    pub fn unsettled(&self) -> usize {
        self.pending_states.len()
    }

    /// Where the batch is now, for [`Batch::suppress_since`]: the `transitions` rows and the
    /// device changes noted so far.
    pub fn mark(&self) -> [usize; 2] {
        [self.transitions.len(), self.touched.len()]
    }

    /// Drops the rows added since `mark` whose source offset is at or below
    /// their table's watermark for their source partition (`watermark`
    /// gives it): rows a replay makes again although they are already
    /// written. Returns how many were dropped.
    pub fn suppress_since(&mut self, mark: [usize; 2], watermark: impl Fn(i32) -> Option<[i64; 2]>) -> usize {
        let w = |p: i32, t: usize| watermark(p).map_or(-1, |w| w[t]);
        let mut n = 0;
        n += cut_from(&mut self.transitions, mark[0], |r| {
            r.source_offset > w(r.source_partition, 0)
        });
        // A device's pending change is the latest of its partition, so when it is at or below
        // the watermark every earlier one was too: the device gets no row from this replay.
        for key in self.touched.split_off(mark[1].min(self.touched.len())) {
            if self
                .pending_states
                .get(&key)
                .is_some_and(|p| p.source.offset <= w(key.0, 1))
            {
                self.pending_states.remove(&key);
                n += 1;
            }
        }
        n
    }

    /// Makes the `device_state` row of every device of `engine` changed since the last
    /// settle, from the engine's state now: call it right before a flush, when `engine` has
    /// applied everything the batch holds (and nothing more) from the partitions it serves.
    /// `partition`: the one input partition `engine` serves (`None`: every pending device,
    /// for an engine that serves them all).
    pub fn settle(&mut self, engine: &Engine, partition: Option<i32>) {
        if self.pending_states.is_empty() {
            return;
        }
        let mut settled: Vec<PendingState> = Vec::new();
        self.pending_states.retain(|&(p, _), pending| {
            let mine = partition.is_none_or(|q| q == p);
            if mine {
                settled.push(*pending);
            }
            !mine
        });
        if settled.is_empty() {
            return;
        }
        self.touched.retain(|(p, _)| partition.is_some_and(|q| q != *p));
        // In the order the changes were made, as the rows were before they waited.
        settled.sort_unstable_by_key(|p| (p.source.partition, p.source.offset, p.seq));
        let catalog = self.catalog_of(engine);
        let n = engine.catalog().controls.len();
        self.device_state.reserve(settled.len());
        // Each array collected from an iterator of known length, without a capacity check per
        // element (pushing three vectors at once was a sixth of the evaluator with rows). With
        // no exception in force, the raw states are all there is to compute: every exception
        // status is NONE and each state's code is its raw state's.
        // (rows.rs tests `a_raw_code_is_its_state_code_without_exceptions`.)
        let plain = !engine.exceptions_in_force();
        let mut cells = Vec::with_capacity(n);
        for p in settled {
            let (states, raw_states, exceptions): (Vec<i8>, Vec<i8>, Vec<i8>) = if plain {
                let raw: Vec<i8> = engine.raw_states_of(p.device).map(raw_code).collect();
                (raw.clone(), raw, vec![exception_code(ExcStatus::None); n])
            } else {
                cells.clear();
                cells.extend(engine.cells_of(p.device));
                (
                    cells.iter().map(|c| state_code(c.state())).collect(),
                    cells.iter().map(|c| raw_code(c.raw)).collect(),
                    cells.iter().map(|c| exception_code(c.exc)).collect(),
                )
            };
            self.device_state.push(DeviceStateRow {
                tenant: engine.tenant_name(p.tenant).to_string(),
                device: engine.device_name(p.device).to_string(),
                counted: p.counted as u8,
                catalog,
                controls: Vec::new(),
                categories: Vec::new(),
                states,
                raw_states,
                exceptions,
                event_time_ms: p.event_time,
                source_partition: p.source.partition,
                source_offset: p.source.offset,
                version: next_version(),
            });
        }
    }

    /// Keeps the last `device_state` row of each device (the rows are in the order the engine made
    /// the states, so the last is the device's state after the batch). Returns how many it dropped.
    pub fn coalesce(&mut self) -> usize {
        let before = self.device_state.len();
        let mut seen: std::collections::HashSet<(&str, &str), foldhash::fast::RandomState> =
            std::collections::HashSet::with_capacity_and_hasher(before, Default::default());
        let mut keep = vec![false; before];
        for (i, r) in self.device_state.iter().enumerate().rev() {
            keep[i] = seen.insert((r.tenant.as_str(), r.device.as_str()));
        }
        let mut keep = keep.into_iter();
        self.device_state.retain(|_| keep.next().unwrap_or(true));
        before - self.device_state.len()
    }

    /// The [`catalog_id`] of `engine`'s catalog; the first time, also a `baseline_catalogs` row.
    fn catalog_of(&mut self, engine: &Engine) -> u64 {
        let cat = engine.catalog();
        let addr = std::sync::Arc::as_ptr(cat) as usize;
        if let Some(&(_, id)) = self.catalog_ids.iter().find(|(a, _)| *a == addr) {
            return id;
        }
        let id = catalog_id(cat);
        self.catalog_ids.push((addr, id));
        self.catalogs.push(CatalogRow {
            catalog: id,
            controls: cat.controls.iter().map(|c| c.id.clone()).collect(),
            categories: cat.controls.iter().map(|c| c.category.as_str().to_string()).collect(),
            written_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs().min(u32::MAX as u64) as u32),
        });
        id
    }

    /// Drops every row from input `partition` (its partition was revoked:
    /// its next owner makes these rows again from the last snapshot).
    pub fn discard_partition(&mut self, partition: i32) -> usize {
        let before = self.len();
        self.transitions.retain(|r| r.source_partition != partition);
        self.device_state.retain(|r| r.source_partition != partition);
        self.pending_states.retain(|k, _| k.0 != partition);
        self.touched.retain(|k| k.0 != partition);
        self.device_evidence.retain(|r| r.source_partition != partition);
        self.device_inventory.retain(|r| r.source_partition != partition);
        self.exception_syncs.retain(|r| r.source_partition != partition);
        self.rollup.discard_partition(partition);
        self.seqs.retain(|k, _| k.partition != partition);
        before - self.len()
    }

    /// Removes every row (keeping capacity) and restarts the `seq` numbering; the rollup's
    /// pending cells and progress are dropped (what the table holds is kept).
    pub fn clear(&mut self) {
        self.rollup.clear_pending();
        self.transitions.clear();
        self.device_state.clear();
        self.pending_states.clear();
        self.touched.clear();
        self.catalogs.clear();
        self.device_evidence.clear();
        self.device_inventory.clear();
        self.exception_syncs.clear();
        self.seqs.clear();
    }
}

/// Keeps the rows of `v` before `from`, and after it those for which `keep`
/// holds; returns how many were dropped.
pub(crate) fn cut_from<T>(v: &mut Vec<T>, from: usize, keep: impl Fn(&T) -> bool) -> usize {
    // Only the tail is looked at: this runs for every replayed record.
    let mut tail = v.split_off(from.min(v.len()));
    let before = tail.len();
    tail.retain(keep);
    let cut = before - tail.len();
    v.append(&mut tail);
    cut
}

/// A device changed since the last [`Batch::settle`]: its `device_state` row is made then.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingState {
    pub(crate) device: posture_core::types::DeviceIdx,
    pub(crate) tenant: posture_core::types::TenantIdx,
    /// Whether it counted after its latest transition (a retirement or inactivity of a device
    /// whose cells count nothing makes no transition: the row says what its transition said,
    /// wherever the flush falls).
    pub(crate) counted: bool,
    /// Event time of its latest transition, ms.
    pub(crate) event_time: i64,
    /// The record that made it.
    pub(crate) source: SourcePos,
    /// That transition's `seq` (orders the rows of one record).
    pub(crate) seq: u32,
}
