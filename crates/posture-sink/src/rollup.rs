//! The trend store `score_rollup` (migration 010): count deltas summed per scope, control and
//! time bucket at four nested levels, and the cut rows that make each flush one atomic commit.
//!
//! A [`Rollup`] collects one batch: [`crate::rows()`] adds every scope delta to its hour cell
//! (per input partition, so a revoked partition's share can be dropped), and the progress of
//! each partition (next offset, event-time clock). [`Rollup::rows`] turns that into the
//! rows of one INSERT: the hour cells summed over partitions and rolled up to days, 30-day blocks
//! and 360-day eras, then one cut row per partition that moved, holding the *difference* from
//! what the table already has, so that the table's sum per partition is always its latest cut.
//!
//! Readers ([`Decomposition`]) split an instant into whole buckets, coarsest first, and read at
//! most one bucket row per control and level between two coarser boundaries; what is left of
//! the last hour comes from the raw log, filtered by the cut.

use crate::HashMap;
use posture_core::engine::{ScopeDelta, NO_GROUP};
use posture_core::{ControlIdx, Engine, GroupIdx, SourcePos, TenantIdx};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One hour, ms.
pub const HOUR_MS: i64 = 3_600_000;
/// One day, ms.
pub const DAY_MS: i64 = 86_400_000;
/// A 30-day block, ms.
pub const BLOCK_MS: i64 = 30 * DAY_MS;
/// A 360-day era, ms.
pub const ERA_MS: i64 = 360 * DAY_MS;

/// The bucket levels of `score_rollup`, finest first: (level, bucket size in ms).
pub const LEVELS: [(u8, i64); 4] = [(1, HOUR_MS), (2, DAY_MS), (3, BLOCK_MS), (4, ERA_MS)];

/// The level of the cut rows.
pub const CUT_LEVEL: u8 = 0;

/// The size of a level's buckets (ms); `None` for the cut level or an unknown one.
pub fn bucket_size(level: u8) -> Option<i64> {
    LEVELS.iter().find(|(l, _)| *l == level).map(|(_, s)| *s)
}

/// The start of the bucket of size `size` holding `t_ms` (buckets are aligned to multiples of
/// their size since the epoch).
pub fn bucket_start(size: i64, t_ms: i64) -> i64 {
    t_ms.div_euclid(size) * size
}

/// One row of `score_rollup`.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct RollupRow {
    /// Tenant ('' on cut rows).
    pub tenant: String,
    /// Device group, '' for the whole tenant (and on cut rows).
    pub group: String,
    /// 1 hour, 2 day, 3 30-day block, 4 360-day era; 0 a cut row.
    pub level: u8,
    /// Bucket start (ms); on cut rows the input partition.
    pub bucket_ms: i64,
    /// The control's category ('' on cut rows).
    pub category: String,
    /// Control id ('' on cut rows).
    pub control: String,
    /// The control's points, micro-points (0 on cut rows).
    pub control_points: i64,
    /// PASS count delta, exceptions applied.
    pub pass_with: i64,
    /// FAIL count delta, exceptions applied.
    pub fail_with: i64,
    /// Delta of the FAIL devices hidden from recommendations.
    pub hidden_with: i64,
    /// PASS count delta without exceptions.
    pub pass_without: i64,
    /// FAIL count delta without exceptions.
    pub fail_without: i64,
    /// Cut rows: the increase of the partition's next offset.
    pub next_offset: i64,
    /// Cut rows: the increase of the partition's event-time clock (ms).
    pub clock_ms: i64,
    /// Cut rows: the input topic's partition count (0: unknown); data rows 0.
    pub topic_partitions: u32,
}

/// Where one input partition stands: every record before `next_offset` is applied (and, once
/// written, in every table), and its event-time clock is `clock_ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Progress {
    /// The offset of the first record not included.
    pub next_offset: i64,
    /// The partition's event-time clock: the latest event time applied (ms; 0 before any).
    pub clock_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CellKey {
    partition: i32,
    scope: u32,
    control: u32,
    hour: i64,
}

/// The rollup of one batch, and what the table holds per partition (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Rollup {
    /// (tenant, group) names, by scope id (engines intern names each in their own way; the
    /// batch merges partitions by name).
    scopes: Vec<(String, String)>,
    /// tenant -> group -> scope id.
    scope_ids: HashMap<String, HashMap<String, u32>>,
    /// (partition, tenant index, group index) -> the scope id those indices last resolved to in
    /// that partition's engine. Used only after the names at that id are compared equal to the
    /// engine's (a new engine of the partition may number its names otherwise): two short
    /// string compares instead of hashing both names for every scope delta.
    scope_cache: HashMap<(i32, TenantIdx, GroupIdx), u32>,
    /// (id, category, points) by control index (every engine of a pipeline has the same catalog).
    controls: Vec<(String, String, i64)>,
    control_ids: HashMap<ControlIdx, u32>,
    cells: HashMap<CellKey, [i64; 5]>,
    /// Per partition: how far this batch goes.
    progress: BTreeMap<i32, Progress>,
    /// Per partition: the sum of its cut rows in the table (what is written), once known.
    committed: HashMap<i32, Progress>,
    /// The input topic's partition count, written on cut rows (0: unknown).
    topic_partitions: u32,
}

impl Rollup {
    /// Whether the rows of the record at `pos` belong in the rollup: `false` when its partition's
    /// written cut is past it (a replayed record whose rows are already summed in the table).
    pub fn accepts(&self, pos: SourcePos) -> bool {
        self.committed
            .get(&pos.partition)
            .is_none_or(|c| pos.offset >= c.next_offset)
    }

    /// Adds the scope deltas of one transition (its event time, `engine`'s names).
    pub fn add(&mut self, engine: &Engine, source: SourcePos, event_time: i64, control: ControlIdx, d: &ScopeDelta) {
        let scope = self.scope_id(engine, source.partition, d.scope.tenant, d.scope.group);
        let control = self.control_id(engine, control);
        use posture_core::engine::count::*;
        let k = &d.counts;
        let cell = self
            .cells
            .entry(CellKey {
                partition: source.partition,
                scope,
                control,
                hour: bucket_start(HOUR_MS, event_time),
            })
            .or_insert([0; 5]);
        cell[0] += k[EFF_PASS] as i64;
        cell[1] += k[EFF_FAIL] as i64;
        cell[2] += k[EFF_HIDDEN] as i64;
        cell[3] += k[RAW_PASS] as i64;
        cell[4] += k[RAW_FAIL] as i64;
    }

    fn scope_id(&mut self, engine: &Engine, partition: i32, tenant_idx: TenantIdx, group_idx: GroupIdx) -> u32 {
        let tenant = engine.tenant_name(tenant_idx);
        let group = if group_idx == NO_GROUP {
            ""
        } else {
            engine.group_name(group_idx).unwrap_or_default()
        };
        let key = (partition, tenant_idx, group_idx);
        if let Some(&id) = self.scope_cache.get(&key) {
            let (t, g) = &self.scopes[id as usize];
            if t == tenant && g == group {
                return id;
            }
        }
        if let Some(&id) = self.scope_ids.get(tenant).and_then(|g| g.get(group)) {
            self.scope_cache.insert(key, id);
            return id;
        }
        let id = self.scopes.len() as u32;
        self.scopes.push((tenant.to_string(), group.to_string()));
        self.scope_ids
            .entry(tenant.to_string())
            .or_default()
            .insert(group.to_string(), id);
        self.scope_cache.insert(key, id);
        id
    }

    fn control_id(&mut self, engine: &Engine, c: ControlIdx) -> u32 {
        if let Some(&id) = self.control_ids.get(&c) {
            return id;
        }
        let control = &engine.catalog().controls[c as usize];
        let id = self.controls.len() as u32;
        self.controls.push((
            control.id.clone(),
            control.category.as_str().to_string(),
            control.points,
        ));
        self.control_ids.insert(c, id);
        id
    }

    /// Notes that `partition` has come this far (the later of this and what was noted before).
    pub fn advance(&mut self, partition: i32, to: Progress) {
        let p = self.progress.entry(partition).or_default();
        p.next_offset = p.next_offset.max(to.next_offset);
        p.clock_ms = p.clock_ms.max(to.clock_ms);
    }

    /// Sets the input topic's partition count (written on the cut rows: readers learn which
    /// partitions have committed nothing yet).
    pub fn set_topic_partitions(&mut self, n: u32) {
        self.topic_partitions = n;
    }

    /// Sets what the table holds for `partition` (the sum of its cut rows), as read at start-up.
    pub fn set_committed(&mut self, partition: i32, committed: Progress) {
        self.committed.insert(partition, committed);
    }

    /// What the table holds for `partition`, if known.
    pub fn committed(&self, partition: i32) -> Option<Progress> {
        self.committed.get(&partition).copied()
    }

    /// Partitions whose progress is noted but whose written cut is not known yet.
    pub fn unknown_partitions(&self) -> Vec<i32> {
        self.progress
            .keys()
            .filter(|p| !self.committed.contains_key(p))
            .copied()
            .collect()
    }

    /// The cut rows the pending progress needs: per partition that moved, (partition, written
    /// cut, new cut). Partitions whose written cut is unknown count from zero.
    pub fn moves(&self) -> Vec<(i32, Progress, Progress)> {
        self.progress
            .iter()
            .filter_map(|(&p, &to)| {
                let from = self.committed.get(&p).copied().unwrap_or_default();
                (to.next_offset > from.next_offset).then(|| {
                    (
                        p,
                        from,
                        Progress {
                            next_offset: to.next_offset,
                            clock_ms: to.clock_ms.max(from.clock_ms),
                        },
                    )
                })
            })
            .collect()
    }

    /// Hour cells plus partitions that moved: what a flush would write (roughly, its rows / 4).
    /// Cheap: the ingest loop asks after every record.
    pub fn len(&self) -> usize {
        self.cells.len() + self.moved()
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty() && self.moved() == 0
    }

    /// How many partitions moved past their written cut.
    fn moved(&self) -> usize {
        self.progress
            .iter()
            .filter(|(p, to)| to.next_offset > self.committed.get(p).map_or(0, |c| c.next_offset))
            .count()
    }

    /// The rows of this batch's INSERT: data rows at every level (cells whose deltas sum to
    /// zero left out), then the cut rows. Does not change the rollup (see [`Rollup::written`]).
    pub fn rows(&self) -> Vec<RollupRow> {
        let mut sums: BTreeMap<(u32, u32, u8, i64), [i64; 5]> = BTreeMap::new();
        for (k, v) in &self.cells {
            for &(level, size) in &LEVELS {
                let s = sums
                    .entry((k.scope, k.control, level, bucket_start(size, k.hour)))
                    .or_insert([0; 5]);
                for i in 0..5 {
                    s[i] += v[i];
                }
            }
        }
        let mut rows = Vec::with_capacity(sums.len() + self.progress.len());
        for ((scope, control, level, bucket_ms), v) in sums {
            if v == [0; 5] {
                continue;
            }
            let (tenant, group) = &self.scopes[scope as usize];
            let (id, category, points) = &self.controls[control as usize];
            rows.push(RollupRow {
                tenant: tenant.clone(),
                group: group.clone(),
                level,
                bucket_ms,
                category: category.clone(),
                control: id.clone(),
                control_points: *points,
                pass_with: v[0],
                fail_with: v[1],
                hidden_with: v[2],
                pass_without: v[3],
                fail_without: v[4],
                next_offset: 0,
                clock_ms: 0,
                topic_partitions: 0,
            });
        }
        for (partition, from, to) in self.moves() {
            rows.push(cut_row(
                partition,
                to.next_offset - from.next_offset,
                to.clock_ms - from.clock_ms,
                self.topic_partitions,
            ));
        }
        rows
    }

    /// The batch's rows are written: the moved partitions' cuts are now the table's, and the
    /// pending cells and progress are cleared (names are kept for the next batch).
    pub fn written(&mut self) {
        for (p, _, to) in self.moves() {
            self.committed.insert(p, to);
        }
        self.clear_pending();
    }

    /// Drops the pending cells and progress (what the table holds is kept).
    pub fn clear_pending(&mut self) {
        self.cells.clear();
        self.progress.clear();
    }

    /// Drops everything of `partition` (revoked: its next owner rebuilds it).
    pub fn discard_partition(&mut self, partition: i32) {
        self.cells.retain(|k, _| k.partition != partition);
        self.scope_cache.retain(|k, _| k.0 != partition);
        self.progress.remove(&partition);
        self.committed.remove(&partition);
    }
}

/// A cut row: `partition` of a topic of `topic_partitions` partitions moved by `next_offset`
/// offsets and `clock_ms` ms.
pub fn cut_row(partition: i32, next_offset: i64, clock_ms: i64, topic_partitions: u32) -> RollupRow {
    RollupRow {
        tenant: String::new(),
        group: String::new(),
        level: CUT_LEVEL,
        bucket_ms: partition as i64,
        category: String::new(),
        control: String::new(),
        control_points: 0,
        pass_with: 0,
        fail_with: 0,
        hidden_with: 0,
        pass_without: 0,
        fail_without: 0,
        next_offset,
        clock_ms,
        topic_partitions,
    }
}

/// The `score_rollup` ranges one trend read needs (event times before 1970 are not read: the
/// pipeline accepts 2000-2100), in whole buckets (see `rollup_counts` in
/// `schemas/clickhouse/queries.sql`): for each level, the half-open range `[lo, hi)` of bucket
/// starts to read.
///
/// The counts at instant `t` (every delta with event time <= t, i.e. before `end = t + 1`) are
/// the sum of: level 4 buckets before `era(end)`, level 3 in `[era(end), block(end))`, level 2 in
/// `[block(end), day(end))`, level 1 in `[day(end), hour(end))`, and the raw deltas in
/// `[hour(end), end)` (the *tail*, from the raw log: the scope deltas of `transitions`, and of
/// `score_deltas` for rows written before migration 011).
///
/// A series of buckets of level `step` from `series_from` (aligned) adds, per bucket, the rows
/// of that level in it; its base is the counts at `series_from`, and its last point is the
/// counts at its `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decomposition {
    /// `[lo, hi)` per level 1..=4 (index 0 = level 1).
    pub ranges: [(i64, i64); 4],
    /// The level whose buckets are the series' steps (5: no series, a point read).
    pub step_level: u8,
    /// The series' first bucket start (ms).
    pub series_from: i64,
    /// The step (ms; the bucket size of `step_level`, or 1 for a point read).
    pub step_ms: i64,
    /// The hour bucket holding the last instant (read separately: see `open_ms` in the query).
    pub open_ms: i64,
    /// The tail of raw deltas: `[tail_from, end)`, empty when `end` is on an hour boundary.
    pub tail: (i64, i64),
}

impl Decomposition {
    /// The ranges for the counts at instant `at_ms` (inclusive).
    pub fn point(at_ms: i64) -> Decomposition {
        let end = at_ms + 1;
        let mut ranges = [(0, 0); 4];
        let mut upper = 0;
        for (i, &(_, size)) in LEVELS.iter().enumerate().rev() {
            let b = bucket_start(size, end);
            ranges[i] = (upper, b);
            upper = b;
        }
        let hour = bucket_start(HOUR_MS, end);
        // The open hour is read too (flagged): it replaces the tail when every partition's clock
        // is at or before the instant.
        ranges[0].1 = hour + HOUR_MS;
        Decomposition {
            ranges,
            step_level: 5,
            series_from: i64::MAX,
            step_ms: 1,
            open_ms: hour,
            tail: (hour, end),
        }
    }

    /// The ranges for a series of `step`-level buckets (1 hour, 2 day) from the bucket holding
    /// `from_ms` to the one holding `to_ms`, each point the counts at its bucket's end (the last
    /// at `to_ms`).
    pub fn series(step: u8, from_ms: i64, to_ms: i64) -> Decomposition {
        let size = bucket_size(step).expect("a series steps by hours or days");
        let s = bucket_start(size, from_ms);
        let end = to_ms + 1;
        let mut ranges = [(0, 0); 4];
        // Coarser levels and the step level up to the series start: the base (the counts at s).
        let mut upper = 0;
        for (i, &(level, lsize)) in LEVELS.iter().enumerate().rev() {
            if level < step {
                break;
            }
            let b = bucket_start(lsize, s);
            ranges[i] = (upper, b);
            upper = b;
        }
        let si = (step - 1) as usize;
        // The step level through the last whole step before `end`.
        ranges[si].1 = bucket_start(size, end);
        // Finer levels: the last point's part of its (partial) step bucket.
        let mut upper = bucket_start(size, end);
        for i in (0..si).rev() {
            let b = bucket_start(LEVELS[i].1, end);
            ranges[i] = (upper, b);
            upper = b;
        }
        let hour = bucket_start(HOUR_MS, end);
        ranges[0].1 = ranges[0].1.max(hour + HOUR_MS);
        Decomposition {
            ranges,
            step_level: step,
            series_from: s,
            step_ms: size,
            open_ms: hour,
            tail: (hour, end),
        }
    }

    /// Whether the tail is empty (the instant is the last millisecond of an hour).
    pub fn tail_is_empty(&self) -> bool {
        self.tail.0 >= self.tail.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A baseline of one control, `fw` (30 points, network): `fw` must be true.
    fn one_control_catalog() -> std::sync::Arc<posture_core::Catalog> {
        std::sync::Arc::new(
            posture_core::Catalog::from_sources(&[(
                "t.yaml",
                "baseline: t\nversion: 1\ncontrols:\n  - { id: fw, title: F, category: network, points: 30, check: { key: fw, op: eq, value: true } }\n",
            )])
            .unwrap(),
        )
    }

    /// A partition's new engine may number its tenants otherwise than the engine before it (a
    /// restart, a rebalance): the scope cache of the rollup must still name each delta's scope by
    /// the engine at hand.
    #[test]
    fn a_new_engine_of_a_partition_with_other_numbers_gets_the_right_scopes() {
        use posture_core::engine::ScopeKey;
        use posture_core::{ConfigChange, EngineConfig, Output};
        let cat = one_control_catalog();
        let ev = |tenant: &str, seq: i64| {
            ConfigChange::from_json(&format!(
                r#"{{"event_id":"e{seq}","tenant_id":"{tenant}","device_id":"d","kind":"SNAPSHOT","source":"AGENT","observed_at":{},"sequence":{seq},"settings":[{{"key":"fw","value":true}}]}}"#,
                1_795_341_600_000i64 + seq
            ))
            .unwrap()
        };
        // Two engines of partition 0: "a" is tenant 0 in the first and tenant 1 in the second.
        let engine = |tenants: [&str; 2]| {
            let mut e = posture_core::Engine::new(cat.clone(), EngineConfig::default());
            for (i, t) in tenants.iter().enumerate() {
                e.apply(&ev(t, i as i64 + 1), SourcePos::default(), &mut Output::default())
                    .unwrap();
            }
            e
        };
        let (first, second) = (engine(["a", "b"]), engine(["b", "a"]));
        let mut rollup = Rollup::default();
        let delta = |tenant| ScopeDelta {
            scope: ScopeKey {
                tenant,
                group: NO_GROUP,
            },
            control: 0,
            points: [1, 1],
            max: [1, 1],
            counts: [1, 0, 0, 1, 0],
        };
        let at = SourcePos {
            partition: 0,
            offset: 1,
        };
        rollup.add(&first, at, 0, 0, &delta(0));
        rollup.add(&second, at, 0, 0, &delta(0));
        rollup.add(&second, at, 0, 0, &delta(1));
        let rows = rollup.rows();
        let finest = rows.iter().filter(|r| !r.control.is_empty()).map(|r| r.level).min();
        let mut passes: Vec<(String, i64)> = rows
            .into_iter()
            .filter(|r| !r.control.is_empty() && Some(r.level) == finest)
            .map(|r| (r.tenant, r.pass_with))
            .collect();
        passes.sort();
        assert_eq!(passes, [("a".to_string(), 2), ("b".to_string(), 1)]);
    }

    /// Two partitions' engines, one event each, through `crate::rows`: the batch's rollup rows
    /// merge the partitions by name at every level, and its cut rows hold differences.
    #[test]
    fn a_batch_rolls_up_by_name_and_cuts_by_difference() {
        use posture_core::{ConfigChange, EngineConfig, Output};
        let cat = one_control_catalog();
        let t = 1_795_341_600_000 + 5;
        let ev = |dev: &str, fw: bool| {
            ConfigChange::from_json(&format!(
                r#"{{"event_id":"{dev}","tenant_id":"t1","device_id":"{dev}","kind":"SNAPSHOT","source":"AGENT","observed_at":{t},"sequence":1,"device":{{"os_family":"linux","os_version":"1","groups":["g"],"tags":[]}},"settings":[{{"key":"fw","value":{fw}}}]}}"#
            ))
            .unwrap()
        };
        let mut batch = crate::Batch::new();
        for (p, dev, fw) in [(0, "a", true), (1, "b", false)] {
            // Each partition's engine interns names its own way: here "g" is group 0 in both.
            let mut engine = posture_core::Engine::new(cat.clone(), EngineConfig::default());
            let mut out = Output::default();
            engine
                .apply(
                    &ev(dev, fw),
                    SourcePos {
                        partition: p,
                        offset: 10,
                    },
                    &mut out,
                )
                .unwrap();
            crate::rows(&engine, &out, &mut batch);
        }
        batch.rollup.set_committed(
            0,
            Progress {
                next_offset: 3,
                clock_ms: 7,
            },
        );
        batch.rollup.set_committed(1, Progress::default());
        let rows = batch.rollup.rows();
        // (tenant, group) x 4 levels, both devices summed; then two cut rows.
        let data: Vec<_> = rows.iter().filter(|r| r.level > 0).collect();
        assert_eq!(data.len(), 2 * 4);
        for r in &data {
            assert_eq!((r.control.as_str(), r.pass_with, r.fail_with), ("fw", 1, 1), "{r:?}");
            assert_eq!(r.bucket_ms, bucket_start(bucket_size(r.level).unwrap(), t));
        }
        let cuts: Vec<(i64, i64, i64)> = rows
            .iter()
            .filter(|r| r.level == CUT_LEVEL)
            .map(|r| (r.bucket_ms, r.next_offset, r.clock_ms))
            .collect();
        assert_eq!(cuts, [(0, 11 - 3, t - 7), (1, 11, t)]);
        batch.rollup.written();
        assert!(batch.rollup.is_empty());
        assert_eq!(
            batch.rollup.committed(0),
            Some(Progress {
                next_offset: 11,
                clock_ms: t
            })
        );
        // A replayed record below the cut is not summed again; a new one moves the cut by one.
        assert!(!batch.rollup.accepts(SourcePos {
            partition: 0,
            offset: 10
        }));
        batch.rollup.advance(
            0,
            Progress {
                next_offset: 12,
                clock_ms: t,
            },
        );
        assert_eq!(batch.rollup.len(), 1);
        batch.rollup.discard_partition(0);
        assert!(batch.rollup.is_empty() && batch.rollup.committed(0).is_none());
    }

    #[test]
    fn levels_nest() {
        for w in LEVELS.windows(2) {
            assert_eq!(w[1].1 % w[0].1, 0, "{:?} in {:?}", w[0], w[1]);
        }
        assert_eq!(bucket_start(HOUR_MS, 7_200_001), 7_200_000);
        assert_eq!(bucket_start(DAY_MS, -1), -DAY_MS);
    }

    /// Sums the ranges of a decomposition for a set of deltas at given times, each counted
    /// once per level (as the sink writes them), and checks that a point read counts exactly
    /// the deltas at or before the instant.
    fn point_counts(times: &[i64], at: i64) -> i64 {
        let d = Decomposition::point(at);
        let mut n = 0;
        for &t in times {
            for (i, &(_, size)) in LEVELS.iter().enumerate() {
                let b = bucket_start(size, t);
                let (lo, hi) = d.ranges[i];
                let hi = if i == 0 { d.open_ms } else { hi };
                if b >= lo && b < hi {
                    n += 1;
                }
            }
            if t >= d.tail.0 && t < d.tail.1 {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn a_point_read_counts_every_delta_up_to_the_instant_once() {
        let times: Vec<i64> = (0..2000)
            .map(|i| 1_700_000_000_000 + i * 7_919_333 % 40_000_000_000)
            .collect();
        for &at in times
            .iter()
            .chain(&[1_700_000_000_000 - 1, 1_800_000_000_000, 1_704_067_199_999])
        {
            let want = times.iter().filter(|&&t| t <= at).count() as i64;
            assert_eq!(point_counts(&times, at), want, "at {at}");
            assert_eq!(
                point_counts(&times, at + 1),
                times.iter().filter(|&&t| t <= at + 1).count() as i64
            );
        }
    }

    #[test]
    fn a_series_counts_each_bucket_end() {
        let times: Vec<i64> = (0..3000)
            .map(|i| 1_700_000_000_000 + i * 12_345_677 % 9_000_000_000)
            .collect();
        for step in [1u8, 2] {
            let size = bucket_size(step).unwrap();
            let (from, to) = (1_702_000_123_456, 1_708_000_654_321);
            let d = Decomposition::series(step, from, to);
            let n = (to / size - from / size + 1) as usize;
            let mut base = 0;
            let mut per = vec![0i64; n + 1];
            let mut last_only = 0;
            for &t in &times {
                for (i, &(level, lsize)) in LEVELS.iter().enumerate() {
                    let b = bucket_start(lsize, t);
                    let (lo, hi) = d.ranges[i];
                    if !(b >= lo && b < hi) || (level == 1 && b == d.open_ms) {
                        continue;
                    }
                    if level < d.step_level {
                        last_only += 1;
                    } else if level == d.step_level && b >= d.series_from {
                        per[((b - d.series_from) / d.step_ms + 1) as usize] += 1;
                    } else {
                        base += 1;
                    }
                }
                if t >= d.tail.0 && t < d.tail.1 {
                    last_only += 1;
                }
            }
            let mut acc = base;
            for k in 0..n {
                acc += per[k + 1];
                let at = if k + 1 == n {
                    to
                } else {
                    d.series_from + (k as i64 + 1) * size - 1
                };
                let got = if k + 1 == n { acc + last_only } else { acc };
                let want = times.iter().filter(|&&t| t <= at).count() as i64;
                assert_eq!(got, want, "step {step} bucket {k} at {at}");
            }
        }
    }
}
