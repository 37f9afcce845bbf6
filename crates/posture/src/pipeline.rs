//! `posture migrate` and `posture run`: the streaming pipeline's commands.
//!
//! Secrets (the ClickHouse password, the Kafka SASL password) come from the
//! environment or from files, never from argv or the configuration file.

use crate::args::{MigrateArgs, RunArgs};
use anyhow::{Context, Result};
use posture_avro::registry::{BasicAuth, SchemaRegistry};
use posture_avro::AvroDecoder;
use posture_ingest::alerts::{AlertConfig, AlertRule, Alerter};
use posture_ingest::emit::{EmitConfig, KafkaStage};
use posture_ingest::{topics, Ingest, IngestConfig};
use posture_metrics::{router, HttpServer, HttpState, Metrics, MetricsConfig, Readiness, ScoreLimits};
use posture_sink::Sink;
use posture_sink::SinkStage;
use posture_sink::{RetryPolicy, SnapshotStore};
use posture_stage::{Decode, Skipped, StateStore};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `posture migrate`: applies schemas/clickhouse (embedded) idempotently.
pub fn migrate(args: MigrateArgs) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let client = args.ch.client()?;
        let applied = match args.ch.cluster() {
            None => posture_sink::migrate(&client, &args.ch.database).await,
            Some(cluster) => posture_sink::migrate_on_cluster(&client, &args.ch.database, cluster)
                .await
                .map(|(layout, applied)| {
                    println!(
                        "migrate: cluster {cluster}: {}",
                        match layout {
                            posture_sink::cluster::Layout::Replicated =>
                                "one shard: every table replicated on every node".to_string(),
                            posture_sink::cluster::Layout::Sharded => format!(
                                "several shards: raw tables sharded by source partition in {}, Distributed tables in {}, exceptions, tasks, catalogs and score_rollup on every node",
                                posture_sink::cluster::local_database(&args.ch.database),
                                args.ch.database
                            ),
                        }
                    );
                    applied
                }),
        }
        .with_context(|| match args.ch.cluster() {
            None => format!("migrating database {} at {}", args.ch.database, args.ch.clickhouse_url),
            Some(c) => format!(
                "migrating database {} on cluster {c} through {}",
                args.ch.database, args.ch.clickhouse_url
            ),
        })?;
        if applied.is_empty() {
            println!("migrate: database {} is up to date", args.ch.database);
        } else {
            for m in &applied {
                println!("migrate: applied {m}");
            }
            println!(
                "migrate: {} migration(s) applied to {}",
                applied.len(),
                args.ch.database
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `posture run`: consume, evaluate, write to ClickHouse, commit.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    let catalog = Arc::new(crate::baselines::load_or_fail(&args.baselines)?);
    runtime()?.block_on(async move {
        let mut args = args;
        let (client, everywhere_quorum) = args.ch.writer().await?;
        let client = client.with_database(&args.ch.database);
        let security = args.kafka.security.properties()?;
        let brokers = args.kafka.brokers.clone();
        let mut cfg = IngestConfig::new(&brokers, &args.group, &args.topic);
        cfg.batch_rows = args.batch_rows;
        cfg.batch_interval = Duration::from_millis(args.batch_ms);
        cfg.extra = security.clone();
        cfg.extra
            .push(("queued.max.messages.kbytes".into(), args.prefetch_kib.to_string()));
        cfg.extra
            .push(("session.timeout.ms".into(), args.kafka_session_timeout_ms.to_string()));
        cfg.extra.push((
            "heartbeat.interval.ms".into(),
            (args.kafka_session_timeout_ms / 3).max(100).to_string(),
        ));
        cfg.extra.push((
            "max.poll.interval.ms".into(),
            args.kafka_max_poll_interval_ms.to_string(),
        ));
        for kv in &args.kafka_consumer_property {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--kafka-consumer-property {kv:?}: expected KEY=VALUE"))?;
            cfg.extra.push((k.trim().to_string(), v.trim().to_string()));
        }
        cfg.snapshot_interval = Duration::from_secs(args.snapshot_secs.max(1));
        cfg.snapshot_records = args.snapshot_records.max(1);
        cfg.assignment_timeout = Duration::from_secs(args.assignment_timeout_secs);
        cfg.rejoin_unassigned = args.kafka_rejoin_unassigned;
        let engine_cfg = args.limits.engine_config(args.inactivity_days);
        let retry = RetryPolicy {
            max_attempts: if args.sink_attempts == 0 {
                u32::MAX
            } else {
                args.sink_attempts
            },
            ..RetryPolicy::default()
        };
        let durable = args.state == "clickhouse";
        let store = SnapshotStore::new(client.clone()).with_retry(retry);
        // Sharded: older snapshots are deleted from the shards' local tables.
        let store = match (everywhere_quorum, args.ch.cluster()) {
            (Some(_), Some(cluster)) => store.sharded(&args.ch.database, cluster),
            _ => store,
        };
        let registry = match &args.schema_registry_url {
            None => None,
            Some(url) => {
                let password = crate::config::secret(
                    "POSTURE_SCHEMA_REGISTRY_PASSWORD",
                    args.schema_registry_password_file.as_deref(),
                )?;
                let auth = match (&args.schema_registry_username, password) {
                    (Some(u), p) => Some(BasicAuth::new(u.clone(), p.unwrap_or_default())),
                    (None, Some(_)) => {
                        anyhow::bail!("a schema registry password is set but no --schema-registry-username")
                    }
                    (None, None) => None,
                };
                Some(SchemaRegistry::new(url, auth).context("schema registry")?)
            }
        };
        // With a registry, the output topics' schemas are registered under `<topic>-value` and
        // their records carry the registered ids.
        if let Some(r) = registry.as_ref().filter(|_| !args.no_register_output_schemas) {
            let deltas = posture_avro::schemas::SCORE_DELTA_AVSC;
            if let Some(id) = register_output(r, &args.score_deltas_topic, "ScoreDelta", deltas).await? {
                args.score_delta_schema_id = id;
            }
            let alerts = posture_avro::schemas::ALERT_AVSC;
            if let Some(id) = register_output(r, &args.alerts_topic, "ScoreDropAlert", alerts).await? {
                args.alert_schema_id = id;
            }
        }
        let emit = {
            let mut e = EmitConfig::new(&brokers, &args.topic);
            e.score_deltas_topic = args.score_deltas_topic.clone();
            e.dead_letter_topic = args.dead_letter_topic.clone();
            e.score_delta_schema_id = args.score_delta_schema_id;
            e.extra = security.clone();
            e
        };
        // Output topics get the input topic's partition count (1 if it does not exist yet).
        let partitions = {
            let (b, t, x) = (brokers.clone(), args.topic.clone(), security.clone());
            tokio::task::spawn_blocking(move || topics::partition_count(&b, &t, &x))
                .await
                .context("metadata task")??
                .unwrap_or(1)
        };
        for topic in [&emit.score_deltas_topic, &emit.dead_letter_topic, &args.alerts_topic] {
            if !topic.is_empty() && topics::ensure_topic(&brokers, topic, partitions, &security).await? {
                tracing::info!("created topic {topic} with {partitions} partitions");
            }
        }
        let metrics = Arc::new(Metrics::with_config(MetricsConfig {
            score_limits: ScoreLimits {
                max_tenants: args.score_gauge_max_tenants,
                groups: args.score_gauge_groups.clone(),
                max_groups: args.score_gauge_max_groups,
            },
            ..MetricsConfig::default()
        }));
        let ready = Arc::new(Readiness::new());
        if !args.http_addr.is_empty() {
            let addr: std::net::SocketAddr = args
                .http_addr
                .parse()
                .with_context(|| format!("--http-addr {:?}: expected HOST:PORT", args.http_addr))?;
            let api = crate::serve::api_router(&args.ch, &args.api, catalog.clone(), metrics.clone())?;
            let server = HttpServer::bind(addr).await?;
            tracing::info!(
                "posture run: serving /metrics, /healthz, /readyz{} on http://{}",
                if api.1 {
                    ", /api/v1, the dashboard page at /"
                } else {
                    " (query API off: no --api-tokens-file)"
                },
                server.local_addr()
            );
            let metrics_token = crate::config::secret("POSTURE_METRICS_TOKEN", args.metrics_token_file.as_deref())?
                .filter(|t| !t.is_empty())
                .map(Arc::<str>::from);
            let app = router(HttpState {
                metrics: metrics.clone(),
                ready: ready.clone(),
                metrics_token,
            })
            .merge(api.0)
            .merge(crate::serve::page(api.1));
            tokio::spawn(async move {
                if let Err(e) = server.run(app).await {
                    tracing::error!("the HTTP server stopped: {e}");
                }
            });
        }
        cfg.extra.push(("statistics.interval.ms".into(), "5000".into()));
        let mut sink_stage = SinkStage::new({
            let sink = Sink::new(client).with_retry(retry);
            match everywhere_quorum {
                Some(n) => sink.with_everywhere_quorum(n),
                None => sink,
            }
        })
        .with_metrics(metrics.clone());
        if durable {
            sink_stage = sink_stage.with_watermarks(store.clone());
        }
        let stage = (
            sink_stage,
            KafkaStage::new(emit)
                .context("creating the output producer")?
                .with_metrics(metrics.clone()),
        );
        if registry.is_none() && args.schema_ids.is_none() {
            tracing::info!(
                "no --schema-registry-url and no --schema-ids: every record is read as config_change.avsc \
                 (version 1) whatever its schema id; agents writing another schema version need a registry"
            );
        }
        let decoder = AvroDecoder::new(args.schema_ids.clone(), registry);
        // Exceptions come from ClickHouse (posture exceptions add|expire, or the API); they are
        // read before the first record, so every engine starts with them, then polled.
        let query = posture_query::Query::new(args.ch.client()?.with_database(&args.ch.database), catalog.clone());
        let exceptions = posture_stage::ExceptionSet::new();
        while let Err(e) = load_exceptions(&query, &exceptions).await {
            // A missing table will not appear by waiting (code 60: UNKNOWN_TABLE).
            if e.to_string().contains("Code: 60") {
                anyhow::bail!("{e:#}\nthe database lacks the exceptions table: run `posture migrate` first");
            }
            tracing::warn!("cannot read the exceptions yet (retrying in 2 s): {e}");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let poll = Duration::from_secs(args.exceptions_poll_secs.max(1));
        tokio::spawn(poll_exceptions(query.clone(), exceptions.clone(), poll));
        let ingest = Ingest::new(cfg, catalog.clone(), engine_cfg, stage, decoder)?
            .with_metrics(metrics.clone())
            .with_readiness(ready.clone())
            .with_exceptions(exceptions);
        let every = Duration::from_secs(args.tasks_confirm_secs.max(1));
        tokio::spawn(confirm_tasks(query, ingest.holds_partition_0(), every));
        ready.set_ready();
        let result = if durable {
            run_ingest(
                ingest.with_state_store(store),
                &args,
                &brokers,
                &security,
                &metrics,
                catalog,
            )
            .await
        } else {
            run_ingest(ingest, &args, &brokers, &security, &metrics, catalog).await
        };
        ready.set_not_ready("stopping");
        result
    })
}

/// How long registering an output schema is retried while the registry is unreachable.
const REGISTER_PATIENCE: Duration = Duration::from_secs(60);

/// Registers an output topic's schema under `<topic>-value` (TopicNameStrategy) and returns its
/// id; `None` when the topic is off (""). A refusal (the subject's compatibility setting) fails
/// the start with the registry's message; an unreachable registry is retried for
/// [`REGISTER_PATIENCE`] first.
async fn register_output(
    registry: &posture_avro::SchemaRegistry,
    topic: &str,
    record: &str,
    schema: &str,
) -> Result<Option<u32>> {
    if topic.is_empty() {
        return Ok(None);
    }
    let subject = format!("{topic}-value");
    let started = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        match registry.register(&subject, schema).await {
            Ok(id) => {
                tracing::info!("{record} records carry schema id {id}, registered under subject {subject}");
                return Ok(Some(id));
            }
            Err(e) if e.is_retryable() && started.elapsed() < REGISTER_PATIENCE => {
                attempt += 1;
                tracing::warn!("registering {record} under {subject} failed (attempt {attempt}), retrying: {e}");
                tokio::time::sleep(posture_stage::STATE_RETRY.backoff(attempt)).await;
            }
            Err(e) => {
                return Err(anyhow::anyhow!(e)).with_context(|| {
                    format!(
                        "cannot register the {record} schema under subject {subject} in the schema registry \
                         (register it yourself and pass --no-register-output-schemas with its id, see --help)"
                    )
                })
            }
        }
    }
}

/// The running part of `posture run`: alerts, the stop conditions, the loop, the summary.
async fn run_ingest<D: Decode, St: StateStore>(
    mut ingest: Ingest<(SinkStage, KafkaStage), D, St>,
    args: &RunArgs,
    brokers: &str,
    security: &[(String, String)],
    metrics: &Arc<Metrics>,
    catalog: Arc<posture_core::Catalog>,
) -> Result<ExitCode> {
    let mut alerter = if args.alerts_topic.is_empty() {
        None
    } else {
        let rules = match &args.alert_rules {
            None => AlertRule::defaults(args.alert_drop_points, args.alert_window_mins * 60_000),
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                crate::alert_rules::parse(&text, args.alert_drop_points, args.alert_window_mins)
                    .with_context(|| format!("alert rules {}", path.display()))?
            }
        };
        let cfg = AlertConfig {
            rules,
            interval: Duration::from_secs(args.alert_interval_secs.max(1)),
            topic: args.alerts_topic.clone(),
            schema_id: args.alert_schema_id,
            brokers: brokers.to_string(),
            extra: security.to_vec(),
            gauge_groups: args.score_gauge_groups.clone(),
        };
        let client = args.ch.client()?.with_database(&args.ch.database);
        let alerter = Alerter::new(cfg, client, catalog)?.with_metrics(metrics.clone());
        // The periodic task, and a clone for the final check when the run stops.
        tokio::spawn(alerter.clone().run(ingest.holds_partition_0()));
        Some(alerter)
    };
    tracing::info!(
        "consuming {} at {} (group {}), writing to {} database {}",
        args.topic,
        brokers,
        args.group,
        args.ch.clickhouse_url,
        args.ch.database
    );
    let started = Instant::now();
    let duration = args.duration_secs.map(Duration::from_secs);
    let idle = args.until_idle.map(Duration::from_secs);
    let progress = ingest.progress();
    let flushes = ingest.flushes();
    // SIGTERM (Kubernetes, systemd, docker stop) and Ctrl-C stop cleanly: flush, snapshot,
    // commit, leave the group.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let stop = async move {
        let deadline = duration.map(|d| tokio::time::Instant::now() + d);
        let (mut seen, mut since) = (0u64, tokio::time::Instant::now());
        let mut last_report = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            let now = tokio::time::Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return;
            }
            // Idle: no record consumed and no batch written for the while. A flush that waits
            // for ClickHouse (an outage, a replica down) blocks consumption, so no record comes
            // then either; the flush that completes afterwards counts as activity, and the input
            // is read on instead of the run stopping with records left.
            let n = progress.load(std::sync::atomic::Ordering::Relaxed);
            let activity = n + flushes.load(std::sync::atomic::Ordering::Relaxed);
            if activity != seen {
                (seen, since) = (activity, now);
            } else if idle.is_some_and(|i| n > 0 && now - since >= i) {
                return;
            }
            if now - last_report >= Duration::from_secs(10) {
                tracing::info!("{n} records consumed");
                last_report = now;
            }
        }
    };
    let mut shown = 0usize;
    let dead_letters = if args.dead_letter_topic.is_empty() {
        "not kept: no dead-letter topic"
    } else {
        "dead-lettered"
    };
    ingest
        .run_until(stop, |p, o, s| {
            // The first 100 unusable records are also logged (all are counted).
            let text = match s {
                Skipped::Undecodable(r) | Skipped::Invalid(r) => r,
                Skipped::Stale(_) => return,
            };
            if shown < 100 {
                tracing::warn!("partition {p} offset {o}: {dead_letters}: {text}");
                shown += 1;
            }
        })
        .await?;
    if let Some(a) = alerter.as_mut() {
        // A last look, so a bounded run (--until-idle, --duration-secs) alerts on what it wrote.
        if ingest.holds_partition_0().load(std::sync::atomic::Ordering::Relaxed) {
            // What is already published (by an earlier run, or the periodic task) stays quiet.
            if let Err(e) = a.restore_published().await {
                tracing::warn!("{e}: the last check may repeat an alert published before");
            }
            let n = a.check_and_publish().await?;
            tracing::info!("{n} score-drop alert(s) published");
        }
    }
    let s = ingest.stats().clone();
    // From the first record received to the end of the last write of rows.
    let busy_secs = ingest.busy_span().map(|d| d.as_secs_f64().max(0.001));
    if let Some(secs) = busy_secs {
        tracing::info!(
            "throughput {:.0} records/s ({} records in {:.1} s from the first record to the last write; {:.1} s of it waiting for flushes)",
            s.records as f64 / secs,
            s.records,
            secs,
            s.flush_micros as f64 / 1e6
        );
    }
    let e = ingest.stage_mut().1.stats().clone();
    let by_table = ingest.stage_mut().0.rows_written().clone();
    let rows: u64 = by_table.values().sum();
    let tables = by_table
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(t, n)| format!("{t} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let fresh = metrics.freshness_summary();
    let peak_rss = peak_rss_bytes();
    tracing::info!(
            "stopped after {:.1} s: {} records, {} applied, {} stale or duplicate, {} invalid, {} undecodable; {} rows in {} flushes ({}); {} score deltas and {} dead letters produced; freshness p50 {} ms, p99 {} ms; peak resident memory {} MiB",
            started.elapsed().as_secs_f64(),
            s.records,
            s.applied,
            s.stale,
            s.invalid,
            s.undecodable,
            rows,
            s.flushes,
            tables,
            e.score_deltas,
            e.dead_letters,
            fresh.p50_ms,
            fresh.p99_ms,
            peak_rss.unwrap_or(0) >> 20
        );
    if let Some(path) = &args.summary_json {
        let summary = serde_json::json!({
            "records": s.records,
            "applied": s.applied,
            "stale": s.stale,
            "invalid": s.invalid,
            "undecodable": s.undecodable,
            "restored_partitions": s.restored,
            "rows_written": rows,
            "rows_by_table": by_table,
            "flushes": s.flushes,
            "flush_secs": s.flush_micros as f64 / 1e6,
            "score_deltas_produced": e.score_deltas,
            "busy_secs": busy_secs,
            "records_per_sec": busy_secs.map(|b| s.records as f64 / b),
            "freshness_ms": {
                "events": fresh.events,
                "p50": fresh.p50_ms,
                "p90": fresh.p90_ms,
                "p99": fresh.p99_ms,
                "max": fresh.max_ms,
            },
            "peak_rss_bytes": peak_rss,
            "cpu_secs": cpu_secs(),
        });
        std::fs::write(path, format!("{summary:#}\n"))
            .with_context(|| format!("cannot write the summary to {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The peak resident memory of this process (Linux: `VmHWM` of
/// /proc/self/status), `None` where that cannot be read.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system) this process has used so far, in seconds
/// (Linux: /proc/self/stat, in USER_HZ = 100 ticks per second).
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Reads every exception from ClickHouse into `set`; logs the rows that are
/// not valid exceptions (they are skipped) and a changed set.
async fn load_exceptions(query: &posture_query::Query, set: &posture_stage::ExceptionSet) -> Result<()> {
    let (list, bad) = query.engine_exceptions().await?;
    for why in bad {
        tracing::warn!("skipped: {why}");
    }
    let n = list.len();
    if set.replace(list) {
        tracing::info!("exceptions: {n} configured; applied to each partition before its next record");
    }
    Ok(())
}

async fn poll_exceptions(query: posture_query::Query, set: Arc<posture_stage::ExceptionSet>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = load_exceptions(&query, &set).await {
            tracing::warn!("reading the exceptions failed (retried in {} s): {e}", every.as_secs());
        }
    }
}

/// System confirmation of remediation tasks, by the instance holding partition 0.
async fn confirm_tasks(query: posture_query::Query, leader: Arc<std::sync::atomic::AtomicBool>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if !leader.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        match query.confirm_tasks("").await {
            Ok(done) => {
                for t in done {
                    tracing::info!(tenant = %t.tenant, task = %t.id, control = %t.control, "task completed: no device of its scope fails any more");
                }
            }
            Err(e) => tracing::warn!("confirming tasks failed (retried in {} s): {e}", every.as_secs()),
        }
    }
}
