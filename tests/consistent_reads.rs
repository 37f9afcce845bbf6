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

use posture_avro::avro_decoder;
use posture_core::report::{self, Cut};
use posture_core::*;
use posture_ingest::alerts::{AlertConfig, AlertRule, Alerter};
use posture_ingest::{Ingest, IngestConfig};
use posture_query::{Bucket, Filters, Query, Scope};
use posture_sink::SinkStage;
use posture_tests::consistency::{point_figures, score_figures, Reference, ScoreAnswer};
use posture_tests::{fresh_database, fresh_topic_with_partitions, kafka_brokers, unique_name};
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
            let settings: Vec<Setting> = match kind {
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
                ConfigChange::new(tenant, format!("dev{d}"), kind, observed, seq)
                    .with_event_id(format!("{d}-{seq}"))
                    .with_device((kind != ChangeKind::Retire).then(|| DeviceInfo {
                        os_family: "windows".into(),
                        os_version: "10.0.19045".into(),
                        hostname: None,
                        groups: groups.clone(),
                        tags: vec![],
                    }))
                    .with_settings(settings),
            ));
            // Mostly weeks of silence, often longer than the 30-day inactivity window.
            t += DAY + rng.below(45 * DAY as u64) as i64;
        }
    }
    evs.sort_by_key(|e| e.0);
    evs.into_iter().map(|e| e.1).collect()
}

/// One answer read during the run.
enum Answer {
    Score(ScoreAnswer),
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

/// The previous read path, for comparison: the documented `score_at` query over the raw log
/// (every flush's rows in several INSERTs, no cut). Whether its answer was possible.
async fn old_path_possible(client: &clickhouse::Client, scope: &Scope, category: Option<Category>, at: i64) -> bool {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Old {
        score_with: i64,
        max_score_with: i64,
        percent_with: f64,
        score_without: i64,
        max_score_without: i64,
        percent_without: f64,
    }
    let sql = posture_sink::queries::get("score_at")
        .expect("score_at")
        .render(&[
            ("tenant", scope.tenant.as_str().into()),
            ("group", scope.group.clone().unwrap_or_default().into()),
            ("category", category.map(Category::as_str).unwrap_or_default().into()),
            ("at_ms", at.into()),
        ])
        .expect("render");
    let o: Old = client.query_raw(&sql).fetch_one().await.expect("score_at");
    (0.0..=100.0).contains(&o.percent_with)
        && (0.0..=100.0).contains(&o.percent_without)
        && (0..=o.max_score_with).contains(&o.score_with)
        && (0..=o.max_score_without).contains(&o.score_without)
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
        let old_client = client.clone();
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
            let mut old_impossible = 0;
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
                        let found = alerter.check_with_cuts().await.expect("alert check");
                        alerts.push(found);
                    }
                    _ => {
                        let score = q.score(&scope, category, at).await.expect("score");
                        if !old_path_possible(&old_client, &scope, category, at).await {
                            old_impossible += 1;
                        }
                        answers.push(Answer::Score(ScoreAnswer {
                            scope,
                            category,
                            at,
                            score,
                        }));
                    }
                }
            }
            (answers, alerts, during, old_impossible)
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
    let (answers, alerts, during, old_impossible) = reader.await.expect("reader");
    assert_eq!(
        ingest.stats().applied + ingest.stats().rejected,
        total,
        "every event consumed"
    );

    // The reference: the topic as the pipeline saw it, partition by partition.
    let reference = Reference::of_topic(catalog.clone(), &topic).await;
    assert_eq!(reference.records() as u64, total);

    let (mut scores, mut partial, mut recs_n, mut hist_n) = (0, 0, 0, 0);
    for a in &answers {
        match a {
            Answer::Score(a) => {
                partial += reference.check(std::slice::from_ref(a));
                scores += 1;
            }
            Answer::Recommendations { scope, at, recs, cut } => {
                let want = reference.recommendations(cut, &scope.tenant, scope.group.as_deref(), *at);
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
                        point_figures(p),
                        score_figures(&want),
                        "history {scope:?} {category:?} point at {} (cut {cut:?})",
                        p.at
                    );
                }
                hist_n += 1;
            }
        }
    }
    // Alerts: only instants every partition had passed, and only drops the input has: both
    // percents are those of embedded mode over the alert's cut, at the two instants compared.
    let mut alerted = 0;
    for found in &alerts {
        for (a, cut) in found {
            assert!(
                cut.complete_through_ms.is_some_and(|c| a.at <= c),
                "alert at {} after complete_through {:?}",
                time::format_time(a.at),
                cut.complete_through
            );
            let category = a.category.as_deref().and_then(Category::parse);
            let percent = |at| {
                reference
                    .score(cut, &a.tenant, a.group.as_deref(), category, at)
                    .total
                    .percent
            };
            assert_eq!(
                (a.old_percent, a.new_percent),
                (percent(a.at - a.window_ms), percent(a.at)),
                "alert {a:?} over its cut"
            );
            assert!(a.old_percent - a.new_percent >= 5.0 - 1e-9, "{a:?}");
            alerted += 1;
        }
    }
    println!(
        "{} answers read while ingesting {total} events ({during} during the catch-up): {scores} scores \
         ({partial} of a partial cut), {recs_n} recommendation lists, {hist_n} histories, {} alert checks \
         ({alerted} alerts); every one possible and equal to embedded mode over its cut. The previous \
         read path (score_at over the raw log) asked the same {scores} scores at the same moments: \
         {old_impossible} impossible",
        answers.len(),
        alerts.len()
    );
    assert!(
        partial >= 20,
        "too few answers read mid-ingestion ({partial}) to prove anything"
    );
}
