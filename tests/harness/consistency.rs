//! Checking consistent reads (SPEC section 6): a reader that asks the trend store for scores
//! while the pipeline writes, and the reference that says what each answer must be.
//!
//! Every score read from ClickHouse carries the cut it reflects (per input partition, the last
//! offset included). [`Reference`] replays the input topic partition by partition, one engine
//! each as the pipeline does, and gives the exact score of any such prefix at any instant;
//! [`Reader`] records answers read in a loop. [`Reference::check`] then asserts, for every
//! answer, that it is possible and equal to the reference over its own cut.

use posture_core::engine::{ScopeCell, ScopeKey, NO_GROUP};
use posture_core::report::{self, Cut, Selection};
use posture_core::*;
use posture_query::{Query, Scope};
use rdkafka::message::Message;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Each partition's records in offset order, applied by its own engine, with every record's
/// output: the exact counts of any prefix of each partition.
pub struct Reference {
    catalog: Arc<Catalog>,
    /// partition -> (engine after every record, [(offset, output)]).
    parts: BTreeMap<i32, (Engine, Vec<(i64, Output)>)>,
}

impl Reference {
    /// The reference of `records` (partition, offset, event), in any order; `None` events are
    /// records the pipeline cannot decode (they take an offset and change nothing).
    pub fn new(catalog: Arc<Catalog>, mut records: Vec<(i32, i64, Option<ConfigChange>)>) -> Reference {
        records.sort_by_key(|r| (r.0, r.1));
        let mut parts: BTreeMap<i32, (Engine, Vec<(i64, Output)>)> = BTreeMap::new();
        for (p, offset, ev) in records {
            let (engine, outs) = parts
                .entry(p)
                .or_insert_with(|| (Engine::new(catalog.clone(), EngineConfig::default()), Vec::new()));
            let mut out = Output::default();
            if let Some(ev) = ev {
                let _ = engine.apply(&ev, SourcePos { partition: p, offset }, &mut out);
            }
            outs.push((offset, out));
        }
        Reference { catalog, parts }
    }

    /// The reference of everything in `topic` now (Avro records; undecodable ones count as
    /// records that change nothing).
    pub async fn of_topic(catalog: Arc<Catalog>, topic: &str) -> Reference {
        let decoder = posture_avro::WireDecoder::new(None);
        let records = crate::read_topic(topic)
            .await
            .iter()
            .map(|m| {
                let ev = m.payload().and_then(|p| decoder.decode(p).ok());
                (m.partition(), m.offset(), ev)
            })
            .collect();
        Reference::new(catalog, records)
    }

    /// Records per partition.
    pub fn records(&self) -> usize {
        self.parts.values().map(|p| p.1.len()).sum()
    }

    /// The scope's cells at `at` over the prefix of each partition that `cut` names (partitions
    /// not in it: nothing), summed over the partitions' engines by name.
    pub fn cells(&self, cut: &Cut, tenant: &str, group: Option<&str>, at: i64) -> Vec<ScopeCell> {
        let mut cells = vec![ScopeCell::default(); self.catalog.controls.len()];
        for pc in &cut.partitions {
            let Some((engine, outs)) = self.parts.get(&pc.partition) else {
                continue;
            };
            let Some(t) = engine.tenant_idx(tenant) else {
                continue;
            };
            let g = match group {
                None => NO_GROUP,
                Some(g) => match engine.group_idx(g) {
                    Some(g) => g,
                    None => continue,
                },
            };
            let mut ledger = Ledger::new(Some(at));
            for (_, out) in outs.iter().take_while(|(o, _)| *o <= pc.last_offset) {
                ledger.record(out);
            }
            for (c, cell) in cells.iter_mut().enumerate() {
                let k = ledger.cell(ScopeKey { tenant: t, group: g }, c as ControlIdx).counts;
                for (sum, n) in cell.counts.iter_mut().zip(k) {
                    *sum += n;
                }
            }
        }
        cells
    }

    /// The score of the scope at `at` over `cut`.
    pub fn score(
        &self,
        cut: &Cut,
        tenant: &str,
        group: Option<&str>,
        category: Option<Category>,
        at: i64,
    ) -> report::Score {
        let cells = self.cells(cut, tenant, group, at);
        let sel = Selection {
            scope: ScopeKey { tenant: 0, group: 0 },
            category,
            remediation: None,
        };
        report::score_of(|c| cells[c as usize], &self.catalog, &sel, tenant, group, None)
    }

    /// The recommendations of the scope at `at` over `cut`.
    pub fn recommendations(
        &self,
        cut: &Cut,
        tenant: &str,
        group: Option<&str>,
        at: i64,
    ) -> Vec<report::Recommendation> {
        let cells = self.cells(cut, tenant, group, at);
        let sel = Selection {
            scope: ScopeKey { tenant: 0, group: 0 },
            category: None,
            remediation: None,
        };
        report::recommendations_of(|c| cells[c as usize], &self.catalog, &sel)
    }

    /// Asserts that every score answer is possible and equals the reference over its cut.
    /// Returns how many answers reflected only part of the input (read mid-ingestion).
    pub fn check(&self, answers: &[ScoreAnswer]) -> usize {
        let total = self.records() as i64;
        let mut partial = 0;
        for a in answers {
            let s = &a.score;
            let what = format!("score {:?} {:?} at {}", a.scope, a.category, time::format_time(a.at));
            assert!(possible(&s.total), "{what}: impossible {:?}", s.total);
            assert!(
                possible(&s.without_exceptions.total),
                "{what}: impossible without exceptions"
            );
            let cut = s.cut.as_ref().expect("a score says what it reflects");
            let want = self.score(cut, &a.scope.tenant, a.scope.group.as_deref(), a.category, a.at);
            assert_eq!(
                (s.total.points_micros, s.total.max_micros),
                (want.total.points_micros, want.total.max_micros),
                "{what} at cut {cut:?}"
            );
            assert_eq!(s.categories, want.categories, "{what}");
            assert_eq!(
                s.without_exceptions.total.points_micros, want.without_exceptions.total.points_micros,
                "{what}"
            );
            if cut.partitions.iter().map(|p| p.last_offset + 1).sum::<i64>() < total {
                partial += 1;
            }
        }
        partial
    }
}

/// A history point's figures, (points, maximum, percent, percent without exceptions), to compare
/// with [`score_figures`] of the expected score.
pub fn point_figures(p: &posture_query::HistoryPoint) -> (f64, f64, f64, f64) {
    (p.points, p.max_points, p.percent, p.without_exceptions.percent)
}

/// The same figures of a score.
pub fn score_figures(s: &report::Score) -> (f64, f64, f64, f64) {
    (
        s.total.points,
        s.total.max_points,
        s.total.percent,
        s.without_exceptions.total.percent,
    )
}

/// Whether a score part could be a score at all.
pub fn possible(p: &report::ScorePart) -> bool {
    (0.0..=100.0).contains(&p.percent) && p.points_micros >= 0 && p.points_micros <= p.max_micros
}

/// One score read by a [`Reader`].
#[derive(Clone, Debug)]
pub struct ScoreAnswer {
    /// The scope asked about (the tenant, or a group of it).
    pub scope: Scope,
    /// The category asked about (`None`: every category).
    pub category: Option<Category>,
    /// The instant asked about, ms since the epoch.
    pub at: i64,
    /// The answer, with the cut it reflects (checked against embedded mode over that cut).
    pub score: report::Score,
}

/// Reads scores of random scopes, categories and instants in a loop until stopped. Reads that
/// fail (ClickHouse unreachable) are counted and retried, never recorded.
pub struct Reader {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<ScoreAnswer>, usize)>,
}

impl Reader {
    /// Starts reading through `query`: tenants and groups from the lists (a group 40% of the
    /// time), instants uniformly in `[from, to)`, a category half of the time.
    pub fn start(query: Query, tenants: &[&str], groups: &[&str], (from, to): (i64, i64), seed: u64) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let (tenants, groups): (Vec<String>, Vec<String>) = (
            tenants.iter().map(|s| s.to_string()).collect(),
            groups.iter().map(|s| s.to_string()).collect(),
        );
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut rng = seed | 1;
            let mut next = move |n: u64| {
                rng ^= rng >> 12;
                rng ^= rng << 25;
                rng ^= rng >> 27;
                rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
            };
            let mut answers = Vec::new();
            let mut failed = 0;
            while !flag.load(Ordering::SeqCst) {
                let scope = Scope {
                    tenant: tenants[next(tenants.len() as u64) as usize].clone(),
                    group: (next(100) < 40 && !groups.is_empty())
                        .then(|| groups[next(groups.len() as u64) as usize].clone()),
                };
                let category = (next(2) == 0).then(|| Category::ALL[next(5) as usize]);
                let at = from + next((to - from).max(1) as u64) as i64;
                match query.score(&scope, category, at).await {
                    Ok(score) => answers.push(ScoreAnswer {
                        scope,
                        category,
                        at,
                        score,
                    }),
                    Err(_) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            (answers, failed)
        });
        Reader { stop, task }
    }

    /// Stops reading: the answers, and how many reads failed.
    pub async fn finish(self) -> (Vec<ScoreAnswer>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("reader task")
    }
}
