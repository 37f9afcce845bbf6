//! `posture migrate` and `posture run`: the streaming pipeline's commands.
//!
//! Secrets (the ClickHouse password) come from the environment
//! (`POSTURE_CLICKHOUSE_PASSWORD`), never from argv.

use anyhow::{Context, Result};
use posture_core::EngineConfig;
use posture_ingest::pipeline::{avro_decoder, SinkStage};
use posture_ingest::{Ingest, IngestConfig, Skipped};
use posture_sink::Sink;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where ClickHouse is.
#[derive(clap::Args, Clone)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP URL.
    #[arg(long, env = "POSTURE_CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123")]
    clickhouse_url: String,
    /// Database of posture's tables (created by `posture migrate`).
    #[arg(long, env = "POSTURE_CLICKHOUSE_DATABASE", default_value = "posture")]
    database: String,
    /// ClickHouse user; the password is read from POSTURE_CLICKHOUSE_PASSWORD.
    #[arg(long, env = "POSTURE_CLICKHOUSE_USER", default_value = "default")]
    user: String,
}

impl ClickHouseArgs {
    fn client(&self) -> clickhouse::Client {
        let mut c = clickhouse::Client::default()
            .with_url(&self.clickhouse_url)
            .with_user(&self.user)
            // ClickHouse 18.16 lacks the format schema validation uses.
            .with_validation(false);
        if let Ok(p) = std::env::var("POSTURE_CLICKHOUSE_PASSWORD") {
            c = c.with_password(p);
        }
        c
    }
}

#[derive(clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    ch: ClickHouseArgs,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Directory of baseline YAML files.
    #[arg(long, env = "POSTURE_BASELINES", value_name = "DIR")]
    baselines: PathBuf,
    /// Kafka bootstrap servers.
    #[arg(long, env = "POSTURE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Input topic of Avro ConfigChange events (Confluent wire format).
    #[arg(long, env = "POSTURE_TOPIC", default_value = "posture.config-changes")]
    topic: String,
    /// Consumer group; instances in one group split the partitions.
    #[arg(long, env = "POSTURE_GROUP", default_value = "posture")]
    group: String,
    /// Accepted schema ids, comma-separated (default: any id, embedded schema).
    #[arg(long, value_delimiter = ',')]
    schema_ids: Option<Vec<u32>>,
    /// Flush to ClickHouse when a batch holds this many rows.
    #[arg(long, default_value_t = 10_000)]
    batch_rows: usize,
    /// Flush at least this often (milliseconds).
    #[arg(long, default_value_t = 1000)]
    batch_ms: u64,
    /// Days without an event after which a device leaves the score.
    #[arg(long, default_value_t = 30)]
    inactivity_days: u32,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Stop once no record has arrived for this many seconds (after the
    /// first one): for backfills and demos.
    #[arg(long, value_name = "SECS")]
    until_idle: Option<u64>,
    #[command(flatten)]
    ch: ClickHouseArgs,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `posture migrate`: applies schemas/clickhouse (embedded) idempotently.
pub fn migrate(args: MigrateArgs) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let client = args.ch.client();
        let applied = posture_sink::migrate(&client, &args.ch.database)
            .await
            .with_context(|| format!("migrating database {} at {}", args.ch.database, args.ch.clickhouse_url))?;
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
        let client = args.ch.client().with_database(&args.ch.database);
        let mut cfg = IngestConfig::new(&args.brokers, &args.group, &args.topic);
        cfg.batch_rows = args.batch_rows;
        cfg.batch_interval = Duration::from_millis(args.batch_ms);
        let engine_cfg =
            EngineConfig { inactivity_window_ms: args.inactivity_days as i64 * 86_400_000, ..Default::default() };
        let mut ingest = Ingest::new(
            cfg,
            catalog,
            engine_cfg,
            SinkStage::new(Sink::new(client)),
            avro_decoder(args.schema_ids.clone()),
        )?;
        eprintln!(
            "posture run: consuming {} at {} (group {}), writing to {} database {}",
            args.topic, args.brokers, args.group, args.ch.clickhouse_url, args.ch.database
        );
        let started = Instant::now();
        let duration = args.duration_secs.map(Duration::from_secs);
        let idle = args.until_idle.map(Duration::from_secs);
        let progress = ingest.progress();
        let stop = async move {
            let deadline = duration.map(|d| tokio::time::Instant::now() + d);
            let (mut seen, mut since) = (0u64, tokio::time::Instant::now());
            let mut last_report = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                let now = tokio::time::Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return;
                }
                let n = progress.load(std::sync::atomic::Ordering::Relaxed);
                if n != seen {
                    (seen, since) = (n, now);
                } else if idle.is_some_and(|i| n > 0 && now - since >= i) {
                    return;
                }
                if now - last_report >= Duration::from_secs(10) {
                    eprintln!("posture run: {n} records consumed");
                    last_report = now;
                }
            }
        };
        let mut shown = 0usize;
        ingest
            .run_until(stop, |p, o, s| {
                // Until the dead-letter topic exists (issue 5), say what was skipped.
                if let Skipped::Undecodable(r) = s {
                    if shown < 100 {
                        eprintln!("posture run: partition {p} offset {o}: undecodable: {r}");
                        shown += 1;
                    }
                }
            })
            .await?;
        let s = ingest.stats();
        eprintln!(
            "posture run: stopped after {:.1} s: {} records, {} applied, {} rejected (stale, duplicate or invalid), {} undecodable; {} rows in {} flushes",
            started.elapsed().as_secs_f64(),
            s.records,
            s.applied,
            s.rejected,
            s.undecodable,
            s.rows_flushed,
            s.flushes
        );
        Ok(ExitCode::SUCCESS)
    })
}
