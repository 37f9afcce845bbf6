//! Consistent reads while ingesting (SPEC section 6), on the real stack.
//!
//! A sparse year of a fleet (devices silent for weeks, so they keep crossing the 30-day
//! inactivity line; retirements; late events whose event time is before their partition's
//! clock) goes into a 4-partition topic, and the pipeline (small batches: many flushes) consumes
//! it while a reader asks for scores, category scores, recommendations and histories of random
//! scopes at random instants in a loop, the way a dashboard refreshes during a catch-up. Every
//! answer must be possible (0 <= percent <= 100, points <= maximum) and equal, exactly, to
//! embedded mode run over the prefix of each partition that the answer says it reflects (its
//! cut). Alerts checked during the run compare only instants every partition has passed.
//!
//! Needs `scripts/stack up`; fails (never skips) without it.

use posture_core::engine::ScopeKey;
use posture_core::report::{self, Cut, Selection};
use posture_core::*;
use posture_ingest::alerts::{AlertConfig, AlertRule, Alerter};
use posture_ingest::pipeline::{avro_decoder, SinkStage};
use posture_ingest::{Ingest, IngestConfig};
use posture_query::{Bucket, Filters, Query, Scope};
use posture_tests::{fresh_database, fresh_topic_with_partitions, kafka_brokers, read_topic, unique_name};
use rdkafka::message::Message;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const BASELINE: &str = r#"
baseline: consistent-reads
version: 1
controls:
  - { id: fw, title: Firewall, category: network, points: 30, check: { key: fw, op: eq, value: true }, on_missing: fail }
  - { id: av, title: Antivirus, category: security_controls, points: 25, check: { key: av, op: eq, value: true } }
  - { id: upd, title: Updates, category: os, points: 50, remediation: software_update, check: { key: upd, op: eq, value: true } }
  - { id: mfa, title: MFA, category: accounts, points: 40, check: { key: mfa, op: eq, value: true }, on_missing: fail }
  - { id: br, title: Browser, category: application, points: 20, applies_to: { groups: [eng] }, check: { key: br, op: eq, value: true } }
"#;

const DAY: i64 = 86_400_000;
const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const TENANTS: [&str; 2] = ["acme", "globex"];
const GROUPS: [&str; 3] = ["eng", "finance", "ops"];
const KEYS: [&str; 5] = ["fw", "av", "upd", "mfa", "br"];

/// xorshift64*: a small deterministic generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The fleet's events, in the order they are produced: a year of sparse activity.
fn fleet(devices: usize) -> Vec<ConfigChange> {
    let mut rng = Rng(0x5eed_cafe_f00d);
    let mut evs: Vec<(i64, ConfigChange)> = Vec::new();
    for d in 0..devices {
        let tenant = TENANTS[d % 2];
        let mut groups: Vec<String> = vec![GROUPS[d % 3].to_string()];
        let mut t = T0 + rng.below(20 * DAY as u64) as i64;
        let mut seq = 0;
        while t < T0 + 365 * DAY {
            seq += 1;
            let kind = if seq == 1 {
                ChangeKind::Snapshot
            } else if rng.chance(3) {
                ChangeKind::Retire
            } else if rng.chance(5) {
                ChangeKind::Remove
            } else {
                ChangeKind::Upsert
            };
            if rng.chance(5) {
                groups = vec![GROUPS[rng.below(3) as usize].to_string()];
            }
            let settings = match kind {
                ChangeKind::Retire => vec![],
                ChangeKind::Snapshot => KEYS
                    .iter()
                    .map(|k| Setting {
                        key: k.to_string(),
                        value: Value::Bool(rng.chance(60)),
                    })
                    .collect(),
                _ => (0..1 + rng.below(3))
                    .map(|_| {
                        let key = KEYS[rng.below(5) as usize].to_string();
                        let setting = Setting {
                            key: key.clone(),
                            value: Value::Bool(rng.chance(55)),
                        };
                        (key, setting)
                    })
                    .collect::<BTreeMap<String, Setting>>()
                    .into_values()
                    .collect(),
            }
            .into_iter()
            .map(|s| {
                let mut s = s;
                if kind == ChangeKind::Remove {
                    s.value = Value::Null;
                }
                s
            })
            .collect();
            // Late events: observed a day or two before they are sent.
            let observed = if seq > 1 && rng.chance(8) {
                t - rng.below(2 * DAY as u64) as i64
            } else {
                t
            };
            evs.push((
                t,
                ConfigChange {
                    event_id: format!("{d}-{seq}"),
                    tenant_id: tenant.into(),
                    device_id: format!("dev{d}"),
                    observed_at: observed,
                    sequence: seq,
                    source: ConfigSource::Agent,
                    kind,
                    device: (kind != ChangeKind::Retire).then(|| DeviceInfo {
                        os_family: "windows".into(),
                        os_version: "10.0.19045".into(),
                        hostname: None,
                        groups: groups.clone(),
                        tags: vec![],
                    }),
                    settings,
                },
            ));
            // Mostly weeks of silence, often longer than the 30-day inactivity window.
            t += DAY + rng.below(45 * DAY as u64) as i64;
        }
    }
    evs.sort_by_key(|e| e.0);
    evs.into_iter().map(|e| e.1).collect()
}

/// Each partition's records in offset order, applied by its own engine (as the pipeline does),
/// with every record's output: the reference for any prefix.
struct Reference {
    catalog: Arc<Catalog>,
    /// partition -> (engine after every record, [(offset, output)]).
    parts: BTreeMap<i32, (Engine, Vec<(i64, Output)>)>,
}

impl Reference {
    fn new(catalog: Arc<Catalog>, records: Vec<(i32, i64, ConfigChange)>) -> Reference {
        let mut parts: BTreeMap<i32, (Engine, Vec<(i64, Output)>)> = BTreeMap::new();
        for (p, offset, ev) in records {
            let (engine, outs) = parts
                .entry(p)
                .or_insert_with(|| (Engine::new(catalog.clone(), EngineConfig::default()), Vec::new()));
            let mut out = Output::default();
            let _ = engine.apply(&ev, SourcePos { partition: p, offset }, &mut out);
            outs.push((offset, out));
        }
        Reference { catalog, parts }
    }

    /// The scope's cells at `at` over the prefix of each partition that `cut` names (partitions
    /// not in it: nothing), summed over the partitions' engines by name.
    fn cells(&self, cut: &Cut, tenant: &str, group: Option<&str>, at: i64) -> Vec<engine::ScopeCell> {
        let mut cells = vec![engine::ScopeCell::default(); self.catalog.controls.len()];
        for pc in &cut.partitions {
            let Some((engine, outs)) = self.parts.get(&pc.partition) else {
                continue;
            };
            let Some(t) = engine.tenant_idx(tenant) else {
                continue;
            };
            let g = match group {
                None => engine::NO_GROUP,
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

    fn score(
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
}

/// One answer read during the run.
enum Answer {
    Score {
        scope: Scope,
        category: Option<Category>,
        at: i64,
        score: report::Score,
    },
    Recommendations {
        scope: Scope,
        at: i64,
        recs: Vec<report::Recommendation>,
        cut: Cut,
    },
    History {
        scope: Scope,
        category: Option<Category>,
        points: Vec<posture_query::HistoryPoint>,
        cut: Cut,
    },
}

fn possible(p: &report::ScorePart) -> bool {
    (0.0..=100.0).contains(&p.percent) && p.points_micros >= 0 && p.points_micros <= p.max_micros
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_read_while_ingesting_is_the_exact_score_of_its_cut() {
    let catalog = Arc::new(Catalog::from_sources(&[("consistent.yaml", BASELINE)]).unwrap());
    let events = fleet(500);
    assert!(events.len() > 4_000, "{} events", events.len());
    let topic = fresh_topic_with_partitions("consistent_in", 4).await;
    posture_tests::produce_events(&topic, &events).await;
    let (client, db) = fresh_database("consistent").await;
    posture_sink::migrate(&client, &db).await.expect("migrate");

    // The pipeline: small batches, so that reads fall between many flushes.
    let mut cfg = IngestConfig::new(kafka_brokers(), unique_name("consistent_group"), topic.clone());
    cfg.batch_rows = 2_000;
    cfg.batch_interval = Duration::from_millis(50);
    let stage = SinkStage::new(posture_sink::Sink::new(client.clone()));
    let mut ingest =
        Ingest::new(cfg, catalog.clone(), EngineConfig::default(), stage, avro_decoder(None)).expect("ingest");
    let progress = ingest.progress();
    let total = events.len() as u64;
    let done = Arc::new(AtomicBool::new(false));

    // The reader: random scopes, categories and instants, until the pipeline is done.
    let reader = {
        let (q, done, progress) = (
            Query::new(client.clone(), catalog.clone()),
            done.clone(),
            progress.clone(),
        );
        let alerter = Alerter::new(
            AlertConfig {
                rules: AlertRule::defaults(5.0, 30 * DAY),
                interval: Duration::from_secs(1),
                topic: "unused".into(),
                schema_id: 1,
                brokers: kafka_brokers(),
                extra: vec![],
                gauge_groups: vec![],
            },
            client.clone(),
            catalog.clone(),
        )
        .expect("alerter");
        tokio::spawn(async move {
            let mut alerter = alerter;
            let mut rng = Rng(42);
            let mut answers = Vec::new();
            let mut alerts = Vec::new();
            let mut during = 0;
            let mut i = 0u64;
            while !done.load(Ordering::SeqCst) {
                i += 1;
                let tenant = TENANTS[rng.below(2) as usize];
                let group = rng.chance(40).then(|| GROUPS[rng.below(3) as usize].to_string());
                let scope = Scope {
                    tenant: tenant.to_string(),
                    group,
                };
                let at = T0 + rng.below(400 * DAY as u64) as i64;
                let category = rng.chance(50).then(|| Category::ALL[rng.below(5) as usize]);
                let consumed = progress.load(Ordering::SeqCst);
                if consumed > 0 && consumed < total {
                    during += 1;
                }
                match i % 8 {
                    0 => {
                        let (points, cut) = q
                            .history(&scope, category, at - 20 * DAY, at, Bucket::Day)
                            .await
                            .expect("history");
                        answers.push(Answer::History {
                            scope,
                            category,
                            points,
                            cut,
                        });
                    }
                    1 => {
                        let (recs, cut) = q
                            .recommendations(&scope, Filters::default(), at)
                            .await
                            .expect("recommendations");
                        answers.push(Answer::Recommendations { scope, at, recs, cut });
                    }
                    2 => {
                        let found = alerter.check().await.expect("alert check");
                        let after = q.cut().await.expect("cut");
                        alerts.push((found, after));
                    }
                    _ => {
                        let score = q.score(&scope, category, at).await.expect("score");
                        answers.push(Answer::Score {
                            scope,
                            category,
                            at,
                            score,
                        });
                    }
                }
            }
            (answers, alerts, during)
        })
    };
    let stop = {
        let progress = progress.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
            while progress.load(Ordering::SeqCst) < total && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    ingest.run_until(stop, |_, _, _| {}).await.expect("pipeline");
    done.store(true, Ordering::SeqCst);
    let (answers, alerts, during) = reader.await.expect("reader");
    assert_eq!(
        ingest.stats().applied + ingest.stats().rejected,
        total,
        "every event consumed"
    );

    // The reference: the topic as the pipeline saw it, partition by partition.
    let decoder = posture_avro::WireDecoder::new(None);
    let records: Vec<(i32, i64, ConfigChange)> = read_topic(&topic)
        .await
        .iter()
        .map(|m| {
            (
                m.partition(),
                m.offset(),
                decoder.decode(m.payload().expect("payload")).expect("decodes"),
            )
        })
        .collect();
    assert_eq!(records.len() as u64, total);
    let mut records = records;
    records.sort_by_key(|r| (r.0, r.1));
    let reference = Reference::new(catalog.clone(), records);

    let (mut scores, mut partial, mut recs_n, mut hist_n) = (0, 0, 0, 0);
    for a in &answers {
        match a {
            Answer::Score {
                scope,
                category,
                at,
                score,
            } => {
                let what = format!("score {scope:?} {category:?} at {}", time::format_time(*at));
                assert!(possible(&score.total), "{what}: impossible {:?}", score.total);
                assert!(
                    possible(&score.without_exceptions.total),
                    "{what}: impossible without exceptions"
                );
                let cut = score.cut.as_ref().expect("a score says what it reflects");
                let want = reference.score(cut, &scope.tenant, scope.group.as_deref(), *category, *at);
                assert_eq!(
                    (score.total.points_micros, score.total.max_micros),
                    (want.total.points_micros, want.total.max_micros),
                    "{what} at cut {cut:?}"
                );
                assert_eq!(score.categories, want.categories, "{what}");
                if cut.partitions.iter().map(|p| p.last_offset + 1).sum::<i64>() < total as i64 {
                    partial += 1;
                }
                scores += 1;
            }
            Answer::Recommendations { scope, at, recs, cut } => {
                let cells = reference.cells(cut, &scope.tenant, scope.group.as_deref(), *at);
                let sel = Selection {
                    scope: ScopeKey { tenant: 0, group: 0 },
                    category: None,
                    remediation: None,
                };
                let want = report::recommendations_of(|c| cells[c as usize], &catalog, &sel);
                for r in recs {
                    assert!(
                        r.misconfigured_devices <= r.applicable_devices && r.misconfigured_devices >= 0,
                        "{r:?}"
                    );
                }
                assert_eq!(recs, &want, "recommendations {scope:?} at {at}");
                recs_n += 1;
            }
            Answer::History {
                scope,
                category,
                points,
                cut,
            } => {
                for p in points {
                    assert!((0.0..=100.0).contains(&p.percent) && p.points <= p.max_points, "{p:?}");
                    let want = reference.score(cut, &scope.tenant, scope.group.as_deref(), *category, p.at_ms);
                    assert_eq!(
                        (p.points, p.max_points, p.percent, p.without_exceptions.percent),
                        (
                            want.total.points,
                            want.total.max_points,
                            want.total.percent,
                            want.without_exceptions.total.percent
                        ),
                        "history {scope:?} {category:?} point at {} (cut {cut:?})",
                        p.at
                    );
                }
                hist_n += 1;
            }
        }
    }
    // Alerts: only instants every partition had passed, and only possible figures.
    let mut alerted = 0;
    for (found, after) in &alerts {
        for a in found {
            assert!(
                (0.0..=100.0).contains(&a.old_percent) && (0.0..=100.0).contains(&a.new_percent),
                "{a:?}"
            );
            assert!(
                after.complete_through_ms.is_some_and(|c| a.at <= c),
                "alert at {} after complete_through {:?}",
                time::format_time(a.at),
                after.complete_through
            );
            alerted += 1;
        }
    }
    println!(
        "{} answers read while ingesting {total} events ({during} during the catch-up): {scores} scores \
         ({partial} of a partial cut), {recs_n} recommendation lists, {hist_n} histories, {} alert checks \
         ({alerted} alerts); every one possible and equal to embedded mode over its cut",
        answers.len(),
        alerts.len()
    );
    assert!(
        partial >= 20,
        "too few answers read mid-ingestion ({partial}) to prove anything"
    );
}
