//! The pipeline on the real stack (Kafka and ClickHouse on loopback), side
//! by side with its ceilings:
//!
//! 1. the fleet's SNAPSHOTs go to a fresh topic, and `posture run` (the
//!    release binary, as deployed) consumes them into a fresh database;
//! 2. a backlog of drift events goes to the topic; a bare rdkafka consumer
//!    reads exactly those records, then `posture run` (same group: it
//!    restores its state and goes on) consumes them into ClickHouse:
//!    events/s of each and the ratio;
//! 3. at each fixed rate, `posture run` runs live while the harness produces
//!    at that rate: freshness (Kafka append -> rows written) from the run's
//!    exact summary;
//! 4. the sink's INSERTs against `clickhouse-client` inserting the same rows.
//!
//! Why one file of about 750 lines: the four parts share the stack's handles, the producer, the
//! `posture run` child processes and their summaries; each part is one function here.

use crate::evaluator::{self, Evaluator};
use crate::fleet::{self, BenchFleet};
use anyhow::{bail, ensure, Context, Result};
use posture_ingest::topics::client_config;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the stack is, and what to run.
#[derive(Clone, Debug)]
pub struct Stack {
    /// Kafka bootstrap servers (`host:port`, comma-separated), for the harness's own clients and
    /// for `posture` (`POSTURE_KAFKA_BROKERS`).
    pub brokers: String,
    /// ClickHouse's HTTP URL (e.g. `http://127.0.0.1:8123`), for the sink comparison and for
    /// `posture` (`POSTURE_CLICKHOUSE_URL`).
    pub clickhouse_url: String,
    /// ClickHouse's native port, for `clickhouse-client`.
    pub clickhouse_tcp_port: u16,
    /// The `posture` binary (release build).
    pub posture: PathBuf,
    /// Scratch directory: the baseline, logs and run summaries.
    pub work: PathBuf,
    /// Prefix of this run's topics, groups and databases.
    pub run_id: String,
}

/// How much to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Devices of the fleet: each sends one 300-setting SNAPSHOT before any drift, and the drift
    /// events pick among them at random.
    pub devices: usize,
    /// Settings each drift event sets (5 in the published figures).
    pub settings_per_event: usize,
    /// Drift events in the backlog read by the bare consumer and the pipeline.
    pub backlog: usize,
    /// Partitions of the run's fresh input topic (6 by default).
    pub partitions: i32,
    /// Fixed rates (events/s) for the freshness runs.
    pub rates: Vec<f64>,
    /// Seconds of production at each rate.
    pub rate_secs: f64,
    /// Events turned into rows for the insert comparison.
    pub insert_events: usize,
}

/// A `posture run`'s summary (`--summary-json`).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct RunSummary {
    /// Records received from the input topic, whatever became of them.
    pub records: u64,
    /// Events the engines applied (not stale, duplicate, invalid or undecodable).
    pub applied: u64,
    /// Rows written to ClickHouse, all tables together.
    pub rows_written: u64,
    /// Time spent waiting for flushes (consumption waits meanwhile).
    #[serde(default)]
    pub flush_secs: f64,
    /// `ScoreDelta` records the broker acknowledged: one per transition.
    pub score_deltas_produced: u64,
    /// Seconds from the first record received to the end of the last write of rows, less the
    /// time that write waited for the batch timer; `None` if nothing was received or written.
    pub busy_secs: Option<f64>,
    /// `records / busy_secs`: the run's throughput, time spent waiting for records excluded.
    pub records_per_sec: Option<f64>,
    /// Freshness of every event the run wrote (warm-up events included).
    pub freshness_ms: Freshness,
    /// Peak resident memory of the run (`VmHWM`), bytes; `None` where /proc cannot be read.
    pub peak_rss_bytes: Option<u64>,
    /// CPU seconds the run used (user + system).
    #[serde(default)]
    pub cpu_secs: Option<f64>,
}

/// Freshness percentiles (ms): from a record's Kafka timestamp (set by the producer as it
/// sends) to the end of the INSERT that made its rows visible. Exact to 0.1% (hdrhistogram);
/// all 0 when no event was observed.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize)]
pub struct Freshness {
    /// Events observed.
    pub events: u64,
    /// Median, ms.
    pub p50: u64,
    /// 90th percentile, ms.
    pub p90: u64,
    /// 99th percentile, ms (the SPEC 7 target: at most 2 s at 50,000 events/s).
    pub p99: u64,
    /// The largest, ms.
    pub max: u64,
}

/// A fixed-rate run.
#[derive(Clone, Debug, Serialize)]
pub struct RateRun {
    /// The rate asked for, events/s.
    pub target_rate: f64,
    /// The rate the harness actually produced at.
    pub produced_rate: f64,
    /// Events produced at the rate (the warm-up events before them not counted).
    pub events: usize,
    /// How long after the last event was produced the pipeline had
    /// written everything (a pipeline slower than the rate falls behind).
    pub drain_secs: f64,
    /// The live run's own summary, written when it was stopped (SIGTERM).
    pub summary: RunSummary,
}

/// The sink's INSERTs against `clickhouse-client`'s, on the same rows.
#[derive(Clone, Debug, Serialize)]
pub struct InsertRun {
    /// Rows inserted by each side, all tables together.
    pub rows: u64,
    /// Seconds of [`posture_sink::Sink::write`] of the whole batch (the tables concurrently).
    pub sink_secs: f64,
    /// Seconds of `clickhouse-client`'s INSERTs (Native format, one table after another), each
    /// less [`InsertRun::client_start_secs`].
    pub client_secs: f64,
    /// Per table: (name, rows, unused, clickhouse-client seconds).
    pub tables: Vec<(String, u64, f64, f64)>,
    /// What starting `clickhouse-client` and connecting takes (taken off
    /// each of its INSERTs).
    pub client_start_secs: f64,
}

/// Everything the stack part measured.
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    /// The run that took the fleet's SNAPSHOTs (populating, not measured against a target).
    pub snapshots: RunSummary,
    /// Drift events in the backlog.
    pub backlog: usize,
    /// Seconds the bare rdkafka consumer took from the backlog's first record to its last.
    pub bare_secs: f64,
    /// The bare consumer's events/s on the backlog: the ceiling of the end-to-end ratio.
    pub bare_records_per_sec: f64,
    /// `posture run` on the same backlog, into ClickHouse.
    pub pipeline: RunSummary,
    /// Wall seconds of the whole backlog run (`posture run` from start to
    /// exit: startup, restore, the busy span, the idle wait, the final
    /// snapshot): the window of the CPU figures.
    pub backlog_wall_secs: f64,
    /// CPU seconds ClickHouse and the broker used in that window (from
    /// /proc; `None` where not found); `posture run`'s own is in its summary.
    pub clickhouse_cpu_secs: Option<f64>,
    /// CPU seconds the broker (`tansu`) used in that window, `None` where not found.
    pub broker_cpu_secs: Option<f64>,
    /// The fixed-rate runs, in the order of [`Plan::rates`].
    pub rates: Vec<RateRun>,
    /// The sink's INSERTs against `clickhouse-client`'s.
    pub insert: InsertRun,
}

impl Stack {
    fn topic(&self) -> String {
        format!("{}_events", self.run_id)
    }

    fn group(&self) -> String {
        format!("{}_pipeline", self.run_id)
    }

    fn database(&self) -> String {
        self.run_id.clone()
    }

    fn baselines(&self) -> PathBuf {
        self.work.join("baselines")
    }

    /// Runs `posture` with `args` against this stack's database; waits.
    fn posture(&self, args: &[&str], log: &str) -> Result<()> {
        let child = self.spawn_posture(args, log)?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "posture {} failed ({}); see {}",
            args.join(" "),
            out.status,
            self.work.join(log).display()
        );
        Ok(())
    }

    fn spawn_posture(&self, args: &[&str], log: &str) -> Result<Child> {
        let log_file = std::fs::File::create(self.work.join(log))?;
        Command::new(&self.posture)
            .args(args)
            .env("POSTURE_KAFKA_BROKERS", &self.brokers)
            .env("POSTURE_CLICKHOUSE_URL", &self.clickhouse_url)
            .env("POSTURE_CLICKHOUSE_DATABASE", self.database())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", self.posture.display()))
    }

    /// `posture run` on this stack's topic and group; `extra` arguments.
    fn run_args<'a>(&'a self, summary: &'a str, extra: &[&'a str]) -> Vec<String> {
        let t = self.topic();
        let mut v: Vec<String> = [
            "run",
            "--baselines",
            self.baselines().to_str().expect("utf-8 path"),
            "--topic",
            &t,
            "--group",
            &self.group(),
            "--score-deltas-topic",
            &format!("{t}.score-deltas"),
            "--dead-letter-topic",
            &format!("{t}.dead-letter"),
            "--alerts-topic",
            &format!("{t}.alerts"),
            "--summary-json",
            self.work.join(summary).to_str().expect("utf-8 path"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    fn summary(&self, name: &str) -> Result<RunSummary> {
        let path = self.work.join(name);
        let text = std::fs::read_to_string(&path).with_context(|| format!("no run summary at {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("the run summary {} does not parse", path.display()))
    }

    /// `posture run --until-idle`: consumes what is there, returns its summary.
    fn run_until_idle(&self, name: &str) -> Result<RunSummary> {
        let summary = format!("{name}.json");
        let args = self.run_args(&summary, &["--until-idle", "3", "--http-addr", "127.0.0.1:0"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.posture(&args, &format!("{name}.log"))?;
        self.summary(&summary)
    }
}

/// Counts delivery failures of the harness's producer.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    delivered: AtomicU64,
}

struct ProduceContext(Arc<Deliveries>);

impl ClientContext for ProduceContext {}

impl ProducerContext for ProduceContext {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Produces `records` to `topic`, at `rate` events/s (`None`: as fast as
/// the broker takes them), and waits until all are delivered. Returns the
/// seconds production took (first send to last send).
fn produce(brokers: &str, topic: &str, records: &[(Vec<u8>, Vec<u8>)], rate: Option<f64>) -> Result<f64> {
    let deliveries = Arc::new(Deliveries::default());
    let defaults = [
        ("linger.ms", "2"),
        ("batch.num.messages", "10000"),
        ("queue.buffering.max.messages", "1000000"),
        ("queue.buffering.max.kbytes", "1048576"),
    ];
    let producer: ThreadedProducer<ProduceContext> = client_config(brokers, &defaults, &[])
        .create_with_context(ProduceContext(deliveries.clone()))
        .context("cannot create the producer")?;
    let started = Instant::now();
    for (i, (key, value)) in records.iter().enumerate() {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let mut record = BaseRecord::to(topic).key(key.as_slice()).payload(value.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(1));
                    record = r;
                }
                Err((e, _)) => bail!("producing to {topic}: {e}"),
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the producer")?;
    let failed = deliveries.failed.load(Ordering::Relaxed);
    ensure!(failed == 0, "{failed} records could not be delivered to {topic}");
    ensure!(
        deliveries.delivered.load(Ordering::Relaxed) == records.len() as u64,
        "not every record to {topic} was confirmed"
    );
    Ok(secs)
}

/// The end offsets of every partition of `topic`.
fn end_offsets(brokers: &str, topic: &str, partitions: i32) -> Result<Vec<i64>> {
    let c: StreamConsumer = client_config(brokers, &[("group.id", "posture-bench-watermarks")], &[]).create()?;
    (0..partitions)
        .map(|p| {
            let (_, high) = c
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .with_context(|| format!("reading the end offset of {topic} partition {p}"))?;
            Ok(high)
        })
        .collect()
}

/// A bare consumer, configured as `posture run` configures its own, reads
/// `count` records from `from` (per partition), touching every payload.
/// Returns the seconds from the first record to the last.
async fn bare_consume(brokers: &str, topic: &str, from: &[i64], count: usize) -> Result<f64> {
    let group = format!("{topic}-bare");
    let defaults = [
        ("group.id", group.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("enable.partition.eof", "false"),
        ("queued.max.messages.kbytes", "16384"),
    ];
    let c: StreamConsumer = client_config(brokers, &defaults, &[]).create()?;
    let mut tpl = TopicPartitionList::new();
    for (p, &o) in from.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(o))?;
    }
    c.assign(&tpl)?;
    let mut first = None;
    let mut bytes = 0u64;
    let mut n = 0;
    while n < count {
        let m = tokio::time::timeout(Duration::from_secs(60), c.recv())
            .await
            .with_context(|| format!("the bare consumer got {n} of {count} records, then nothing for 60 s"))??;
        first.get_or_insert_with(Instant::now);
        // Read every byte, as a decoder would (a sum the compiler cannot skip).
        let sum = |b: Option<&[u8]>| b.map_or(0u64, |b| b.iter().map(|&x| x as u64).sum());
        bytes = bytes.wrapping_add(sum(m.payload()) + sum(m.key()));
        n += 1;
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    std::hint::black_box(bytes);
    Ok(secs)
}

/// Reads one counter of `posture run`'s /metrics.
async fn scrape(http: &reqwest::Client, addr: &str, name: &str) -> Option<f64> {
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l[name.len()..].trim().parse().ok())
}

/// Waits until the counter `name` reaches `want`, or fails after `patience`
/// without progress.
async fn wait_for(http: &reqwest::Client, addr: &str, name: &str, want: f64, patience: Duration) -> Result<()> {
    let (mut last, mut since) = (-1.0, Instant::now());
    loop {
        let v = scrape(http, addr, name).await.unwrap_or(-1.0);
        if v >= want {
            return Ok(());
        }
        if v > last {
            (last, since) = (v, Instant::now());
        } else if since.elapsed() > patience {
            bail!("{name} stayed at {last} (waiting for {want}) for {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Stops a child with SIGTERM (a clean stop: final flush, snapshot,
/// commit, summary) and waits for it.
fn terminate(child: &mut Child) -> Result<std::process::ExitStatus> {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
    ensure!(status.success(), "kill -TERM {} failed", child.id());
    Ok(child.wait()?)
}

/// Kills the child if the measurement fails half-way.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// One fixed-rate run: `posture run` live, `events` produced at `rate`.
async fn rate_run(
    stack: &Stack,
    rate: f64,
    events: Vec<(Vec<u8>, Vec<u8>)>,
    warm: usize,
    say: &dyn Fn(String),
) -> Result<RateRun> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let name = format!("rate-{}", rate as u64);
    let summary = format!("{name}.json");
    let args = stack.run_args(&summary, &["--http-addr", &addr]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = Running(stack.spawn_posture(&args, &format!("{name}.log"))?);
    let http = reqwest::Client::new();
    // Warm up: a few events, so the group is joined and every partition's
    // state restored before the measured events (they count in the summary,
    // but are too few to move its 99th percentile).
    produce(&stack.brokers, &stack.topic(), &events[..warm], None)?;
    wait_for(
        &http,
        &addr,
        "posture_freshness_seconds_count",
        warm as f64,
        Duration::from_secs(120),
    )
    .await
    .context("the pipeline did not take the warm-up events")?;
    let measured = &events[warm..];
    say(format!(
        "  producing {} events at {rate:.0} events/s into the live pipeline",
        measured.len()
    ));
    let brokers = stack.brokers.clone();
    let topic = stack.topic();
    let owned = measured.to_vec();
    let produce_secs = tokio::task::spawn_blocking(move || produce(&brokers, &topic, &owned, Some(rate))).await??;
    let produced_at = Instant::now();
    wait_for(
        &http,
        &addr,
        "posture_freshness_seconds_count",
        events.len() as f64,
        Duration::from_secs(60),
    )
    .await
    .context("the pipeline did not write every event")?;
    let drain_secs = produced_at.elapsed().as_secs_f64();
    let status = terminate(&mut child.0)?;
    ensure!(status.success(), "posture run ({name}) exited with {status}");
    Ok(RateRun {
        target_rate: rate,
        produced_rate: measured.len() as f64 / produce_secs.max(1e-9),
        events: measured.len(),
        drain_secs,
        summary: stack.summary(&summary)?,
    })
}

/// The sink against `clickhouse-client`: the rows of `plan.insert_events`
/// drift events written by [`posture_sink::Sink::write`] into one database
/// (the tables concurrently, as `posture run` does), then each table
/// exported in ClickHouse's Native format and inserted by `clickhouse-client`
/// into a second database (less the client's start-up time).
async fn insert_run(stack: &Stack, plan: &Plan, say: &dyn Fn(String)) -> Result<InsertRun> {
    let mut fleet = BenchFleet::new(plan.devices.min(10_000), plan.settings_per_event, 9);
    let (engine, _) = evaluator::populate(&mut fleet, &|_| {});
    let mut ev = Evaluator::new(engine, true).keep_rows();
    let values: Vec<Vec<u8>> = fleet::records(&fleet.drift(plan.insert_events))
        .into_iter()
        .map(|(_, value)| value)
        .collect();
    ensure!(
        ev.run_async(&values, 0).await == values.len(),
        "the engine refused a drift event"
    );
    let batch = ev.take_rows();
    let rows: u64 = table_counts(&batch).iter().map(|t| t.1).sum();
    say(format!("  {rows} rows from {} events", plan.insert_events));
    let client = clickhouse::Client::default()
        .with_url(&stack.clickhouse_url)
        .with_validation(false);
    let (db_a, db_b) = (format!("{}_sink", stack.run_id), format!("{}_client", stack.run_id));
    for db in [&db_a, &db_b] {
        posture_sink::migrate(&client, db)
            .await
            .with_context(|| format!("migrating {db}"))?;
    }
    let sink = posture_sink::Sink::new(client.clone().with_database(&db_a));
    let tables: Vec<(String, u64, f64, f64)> = table_counts(&batch)
        .into_iter()
        .map(|(t, n)| (t.to_string(), n, 0.0, 0.0))
        .collect();
    // The whole batch, as posture run writes it (the tables concurrently).
    let mut all = batch;
    let started = Instant::now();
    sink.write(&mut all).await.context("the sink's INSERTs")?;
    let sink_secs = started.elapsed().as_secs_f64();
    let mut tables = tables;
    // clickhouse-client: one process per table. What starting it and connecting costs (the best
    // of three `SELECT 1`) is taken off each INSERT's time, so the server's work is compared.
    let ch = |query: String| {
        let mut c = Command::new("clickhouse-client");
        c.args([
            "--host",
            "127.0.0.1",
            "--port",
            &stack.clickhouse_tcp_port.to_string(),
            "--query",
            &query,
        ]);
        c
    };
    let mut client_start = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let out = ch("SELECT 1".into())
            .stdout(Stdio::null())
            .status()
            .context("cannot run clickhouse-client (apt-get install clickhouse-client)")?;
        ensure!(out.success(), "clickhouse-client --query 'SELECT 1' failed");
        client_start = client_start.min(started.elapsed().as_secs_f64());
    }
    let mut client_secs = 0.0;
    for t in &mut tables {
        let file = stack.work.join(format!("{}.native", t.0));
        let out = ch(format!("SELECT * FROM {db_a}.{} FORMAT Native", t.0))
            .stdout(std::fs::File::create(&file)?)
            .status()
            .context("cannot run clickhouse-client (apt-get install clickhouse-client)")?;
        ensure!(out.success(), "exporting {} with clickhouse-client failed", t.0);
        let started = Instant::now();
        let out = ch(format!("INSERT INTO {db_b}.{} FORMAT Native", t.0))
            .stdin(std::fs::File::open(&file)?)
            .status()?;
        ensure!(out.success(), "inserting {} with clickhouse-client failed", t.0);
        t.3 = (started.elapsed().as_secs_f64() - client_start).max(1e-6);
        client_secs += t.3;
        let _ = std::fs::remove_file(&file);
        // (ReplacingMergeTree tables may have merged duplicates away meanwhile.)
        if t.0 == "transitions" {
            for db in [&db_a, &db_b] {
                let n = count_rows(&client, db, &t.0).await?;
                ensure!(n == t.1, "{db}.{} holds {n} rows, not the {} inserted", t.0, t.1);
            }
        }
    }
    for db in [&db_a, &db_b] {
        client.query(&format!("DROP DATABASE IF EXISTS {db}")).execute().await?;
    }
    Ok(InsertRun {
        rows,
        sink_secs,
        client_secs,
        tables,
        client_start_secs: client_start,
    })
}

/// Rows in `db.table`.
async fn count_rows(client: &clickhouse::Client, db: &str, table: &str) -> Result<u64> {
    Ok(client
        .query(&format!("SELECT count() FROM {db}.{table}"))
        .fetch_one::<u64>()
        .await?)
}

/// The non-empty tables of a batch and their row counts.
fn table_counts(b: &posture_sink::Batch) -> Vec<(&'static str, u64)> {
    [
        ("transitions", b.transitions.len()),
        ("device_state", b.device_state.len()),
        ("device_evidence", b.device_evidence.len()),
        ("device_inventory", b.device_inventory.len()),
        ("score_rollup", b.rollup.rows().len()),
    ]
    .into_iter()
    .filter(|&(_, n)| n > 0)
    .map(|(t, n)| (t, n as u64))
    .collect()
}

/// Runs the stack part.
pub async fn measure(stack: &Stack, plan: &Plan, say: &dyn Fn(String)) -> Result<Figures> {
    std::fs::create_dir_all(stack.baselines())?;
    std::fs::write(stack.baselines().join("bench.yaml"), fleet::baseline_yaml())?;
    let topic = stack.topic();
    posture_ingest::topics::ensure_topic(&stack.brokers, &topic, plan.partitions, &[])
        .await
        .with_context(|| format!("cannot create topic {topic}: is the stack up? (scripts/stack up)"))?;
    stack.posture(&["migrate"], "migrate.log")?;

    say(format!(
        "stack: producing {} SNAPSHOTs (300 settings each)",
        plan.devices
    ));
    let mut fleet = BenchFleet::new(plan.devices, plan.settings_per_event, 2);
    let snaps: Vec<_> = (0..plan.devices).map(|d| fleet.snapshot_record(d)).collect();
    produce(&stack.brokers, &topic, &snaps, None)?;
    drop(snaps);
    say("stack: posture run takes the SNAPSHOTs".into());
    let snapshots = stack.run_until_idle("snapshots")?;
    ensure!(
        snapshots.records == plan.devices as u64,
        "posture run read {} records, not the {} SNAPSHOTs",
        snapshots.records,
        plan.devices
    );

    let from = end_offsets(&stack.brokers, &topic, plan.partitions)?;
    say(format!("stack: producing a backlog of {} drift events", plan.backlog));
    produce(
        &stack.brokers,
        &topic,
        &fleet::records(&fleet.drift(plan.backlog)),
        None,
    )?;
    say("stack: a bare rdkafka consumer reads the backlog".into());
    let bare_secs = bare_consume(&stack.brokers, &topic, &from, plan.backlog).await?;
    say(format!("  {:.0} records/s", plan.backlog as f64 / bare_secs.max(1e-9)));
    say("stack: posture run reads the same backlog into ClickHouse".into());
    let cpu_before = (proc_cpu_secs("clickhouse-serv"), proc_cpu_secs("tansu"));
    let wall = Instant::now();
    let pipeline = stack.run_until_idle("backlog")?;
    let backlog_wall_secs = wall.elapsed().as_secs_f64();
    let cpu_after = (proc_cpu_secs("clickhouse-serv"), proc_cpu_secs("tansu"));
    let used = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    ensure!(
        pipeline.records == plan.backlog as u64,
        "posture run read {} records, not the {} of the backlog",
        pipeline.records,
        plan.backlog
    );
    say(format!("  {:.0} records/s", pipeline.records_per_sec.unwrap_or(0.0)));
    // Every transition the runs made is in ClickHouse once, and was produced to Kafka once.
    let client = clickhouse::Client::default()
        .with_url(&stack.clickhouse_url)
        .with_validation(false);
    let stored = count_rows(&client, &stack.database(), "transitions").await?;
    let produced = snapshots.score_deltas_produced + pipeline.score_deltas_produced;
    ensure!(
        stored == produced,
        "ClickHouse holds {stored} transitions, the runs produced {produced} score-delta records"
    );

    let mut rates = Vec::new();
    for &rate in &plan.rates {
        let warm = 60;
        let n = warm + (rate * plan.rate_secs) as usize;
        say(format!("stack: freshness at {rate:.0} events/s"));
        let events = fleet::records(&fleet.drift(n));
        let r = rate_run(stack, rate, events, warm, say).await?;
        say(format!(
            "  p50 {} ms, p99 {} ms (produced at {:.0} events/s)",
            r.summary.freshness_ms.p50, r.summary.freshness_ms.p99, r.produced_rate
        ));
        rates.push(r);
    }

    say(format!(
        "stack: the sink's INSERTs against clickhouse-client's ({} events' rows)",
        plan.insert_events
    ));
    let insert = insert_run(stack, plan, say).await?;
    Ok(Figures {
        snapshots,
        backlog: plan.backlog,
        bare_secs,
        bare_records_per_sec: plan.backlog as f64 / bare_secs.max(1e-9),
        pipeline,
        backlog_wall_secs,
        clickhouse_cpu_secs: used(cpu_before.0, cpu_after.0),
        broker_cpu_secs: used(cpu_before.1, cpu_after.1),
        rates,
        insert,
    })
}

/// Drops this run's topics' data? Kafka topics stay (Tansu keeps them in
/// memory); the ClickHouse database is dropped.
pub async fn cleanup(stack: &Stack) -> Result<()> {
    let client = clickhouse::Client::default()
        .with_url(&stack.clickhouse_url)
        .with_validation(false);
    // On a cluster (the runs' `posture` inherits POSTURE_CLICKHOUSE_CLUSTER), on every node.
    let on_cluster = match std::env::var("POSTURE_CLICKHOUSE_CLUSTER") {
        Ok(c) if !c.trim().is_empty() => format!(" ON CLUSTER {}", c.trim()),
        _ => String::new(),
    };
    // A sharded cluster's local tables are in a second database (posture_sink::cluster).
    let local = posture_sink::cluster::local_database(&stack.database());
    for db in [stack.database(), local] {
        client
            .query(&format!("DROP DATABASE IF EXISTS {db}{on_cluster}"))
            .execute()
            .await?;
    }
    Ok(())
}

/// CPU seconds (user + system) used so far by the processes whose command
/// name is `comm` (as in /proc/PID/comm, at most 15 characters), `None` if
/// there is none. Linux reports them in USER_HZ = 100 ticks per second.
pub fn proc_cpu_secs(comm: &str) -> Option<f64> {
    let mut total = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let dir = entry.path();
        if std::fs::read_to_string(dir.join("comm")).ok().as_deref().map(str::trim) != Some(comm) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else { continue };
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        *total.get_or_insert(0.0) += (ticks(11) + ticks(12)) as f64 / 100.0;
    }
    total
}

/// Whether `path` is an executable file.
pub fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
