//! `posture simulate`: a synthetic fleet producing configuration-change events (made by
//! `posture-fleet`: [`posture_fleet::Fleet`] and [`posture_fleet::day`]; this file writes them
//! out, to a JSON-lines file or to Kafka).
//!
//! Devices get a tenant, a group, an OS family and version from a mix, tags,
//! and a "hygiene" (the chance each control is compliant). Each device sends a
//! SNAPSHOT at the start; then settings drift (a control flips), remediation
//! waves fix one control across one group within 30 minutes, a few devices
//! retire, and a small share of events is re-sent (duplicates) or sent with an
//! old sequence (stale). Setting values are synthesised from each control's
//! check tree so the intended outcome really holds. Deterministic per `--seed`.

use anyhow::{Context, Result};
use posture_core::time::{format_time, parse_time};
use posture_core::*;
use posture_fleet::{DaySpec, Fleet, StorySpec};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Directory of baseline YAML files the fleet is configured against.
    #[arg(long, env = "POSTURE_BASELINES", value_name = "DIR")]
    baselines: PathBuf,
    /// Number of devices.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Number of tenants (t1, t2, ...).
    #[arg(long, default_value_t = 1)]
    tenants: usize,
    /// Hours of event time to simulate after the initial snapshots.
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    /// Event time of the first snapshot (RFC 3339 or epoch ms).
    #[arg(long, default_value = "2026-11-01T00:00:00Z", value_parser = parse_time)]
    start: i64,
    /// Drift events per device per hour.
    #[arg(long, default_value_t = 0.25)]
    drift_per_hour: f64,
    /// Hours between remediation waves (0: none).
    #[arg(long, default_value_t = 4.0)]
    wave_every_hours: f64,
    /// Share of devices retired during the run.
    #[arg(long, default_value_t = 0.01)]
    retire_rate: f64,
    /// Share of events re-sent as exact duplicates.
    #[arg(long, default_value_t = 0.005)]
    duplicate_rate: f64,
    /// Share of events followed by a stale (old-sequence) copy.
    #[arg(long, default_value_t = 0.005)]
    stale_rate: f64,
    /// Random seed; the same seed gives the same events.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The demo's scripted day instead of the plain one (25 hours; --hours and
    /// --wave-every-hours do not apply): at 09:00 a bad policy push turns off the network and
    /// security-control settings of every finance device, remediation waves at 12:00, 14:00 and
    /// 16:00 set them back, 1% of devices go silent after their snapshot. `posture demo` plays it
    /// against a running pipeline; this writes the same events.
    #[arg(long)]
    story: bool,
    /// Output JSON-lines file ("-" for standard output).
    #[arg(long, default_value = "-")]
    out: PathBuf,
    /// Produce to Kafka at these brokers instead (Avro, Confluent wire
    /// format, keyed by device id).
    #[arg(long, value_name = "BROKERS")]
    kafka: Option<String>,
    /// Topic for --kafka.
    #[arg(long, default_value = "posture.config-changes")]
    topic: String,
    /// Schema id written in the wire-format header for --kafka.
    #[arg(long, default_value_t = 1)]
    schema_id: u32,
    /// With --kafka: produce at most this many events per second (0: as fast
    /// as the broker takes them), so a run lasts events / rate seconds.
    #[arg(long, default_value_t = 0.0, value_name = "EVENTS_PER_SEC")]
    rate: f64,
    /// With --kafka: at most this many records per producer batch
    /// (librdkafka batch.num.messages). 1 (the default) makes every offset a
    /// batch boundary, which the test broker (Tansu 0.6) needs for a
    /// consumer to resume at any committed offset: it answers a fetch inside
    /// a batch with the next batch. Raise it on real Kafka for speed.
    #[arg(long, default_value_t = 1, value_name = "N")]
    batch_records: u32,
    /// Partitions of the topic when --kafka creates it.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    #[command(flatten)]
    security: crate::args::KafkaSecurityArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let started = Instant::now();
    let cat = crate::baselines::load_or_fail(&args.baselines)?;
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let start = args.start;

    let mut fleet = Fleet::new(&cat, args.devices, args.tenants, &mut rng);
    let spec = DaySpec {
        start,
        hours: args.hours,
        drift_per_hour: args.drift_per_hour,
        wave_every_hours: args.wave_every_hours,
        retire_rate: args.retire_rate,
        duplicate_rate: args.duplicate_rate,
        stale_rate: args.stale_rate,
    };
    let (story, day);
    let (events, summary, end): (Box<dyn ExactSizeIterator<Item = ConfigChange>>, _, _) = if args.story {
        story = posture_fleet::story(&cat, &fleet, &story_spec(&spec), &mut rng);
        let summary = format!(
            "the story: {} drift, a push to {} devices of {}, {} remediation waves, {} silent, {} retirements, {} duplicates, {} stale",
            story.drift,
            story.push.devices,
            story.group,
            story.remediation.len(),
            story.silent,
            story.retirements,
            story.duplicates,
            story.stale
        );
        (Box::new(story.events(&cat, &fleet, 0..story.len())), summary, story.end)
    } else {
        day = posture_fleet::day(&cat, &mut fleet, &spec, &mut rng);
        let summary = format!(
            "{} drift, {} remediation waves, {} retirements, {} duplicates, {} stale",
            day.drift, day.waves, day.retirements, day.duplicates, day.stale
        );
        (Box::new(day.events.iter().cloned()), summary, day.end)
    };
    let written = events.len();
    let out_name = match &args.kafka {
        Some(brokers) => {
            let to = KafkaTarget {
                brokers,
                topic: &args.topic,
                partitions: args.partitions,
                schema_id: args.schema_id,
                security: args.security.properties()?,
            };
            produce("posture simulate", &to, args.rate, args.batch_records, events)?;
            format!("kafka {brokers} topic {}", args.topic)
        }
        None => {
            write_jsonl(&args.out, events)?;
            args.out.display().to_string()
        }
    };
    eprintln!(
        "posture simulate: {written} events ({} devices, {} tenants, {} snapshots, {summary}) from {} to {} in {:.0} ms -> {out_name}",
        args.devices,
        args.tenants.max(1),
        args.devices,
        format_time(start),
        format_time(end),
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(ExitCode::SUCCESS)
}

/// The story's spec with the plain day's rates of drift, retirements and noise.
fn story_spec(day: &DaySpec) -> StorySpec {
    StorySpec {
        drift_per_hour: day.drift_per_hour,
        retire_rate: day.retire_rate,
        duplicate_rate: day.duplicate_rate,
        stale_rate: day.stale_rate,
        ..StorySpec::new(day.start)
    }
}

/// Writes `events` as JSON lines to `path` ("-": standard output).
pub(crate) fn write_jsonl(
    path: &std::path::Path,
    events: impl IntoIterator<Item = impl std::borrow::Borrow<ConfigChange>>,
) -> Result<()> {
    let name = path.display().to_string();
    let sink: Box<dyn Write> = if name == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(path).with_context(|| format!("cannot create {name}"))?)
    };
    let mut w = BufWriter::with_capacity(1 << 20, sink);
    for e in events {
        writeln!(w, "{}", e.borrow().to_json())?;
    }
    w.flush().with_context(|| format!("cannot write {name}"))?;
    Ok(())
}

/// Counts delivery reports, so no event is lost silently.
#[derive(Default)]
struct Deliveries {
    ok: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    /// The offset of the last record acknowledged, per partition.
    last_offsets: std::sync::Mutex<std::collections::BTreeMap<i32, i64>>,
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        use std::sync::atomic::Ordering::Relaxed;
        match r {
            Ok(m) => {
                use rdkafka::message::Message;
                self.ok.fetch_add(1, Relaxed);
                let mut last = self.last_offsets.lock().expect("not poisoned");
                let o = last.entry(m.partition()).or_insert(m.offset());
                *o = (*o).max(m.offset());
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Relaxed);
                let mut first = self.first_error.lock().expect("not poisoned");
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Where [`produce`] writes, and how it authenticates.
pub(crate) struct KafkaTarget<'a> {
    pub brokers: &'a str,
    pub topic: &'a str,
    /// Partitions of the topic if it has to be created.
    pub partitions: i32,
    pub schema_id: u32,
    /// librdkafka security properties (SASL, TLS).
    pub security: Vec<(String, String)>,
}

/// Creates the topic if it does not exist.
pub(crate) fn ensure_topic(to: &KafkaTarget<'_>) -> Result<()> {
    let (brokers, topic, partitions) = (to.brokers, to.topic, to.partitions);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    if rt.block_on(posture_ingest::topics::ensure_topic(
        brokers,
        topic,
        partitions,
        &to.security,
    ))? {
        eprintln!("posture: created topic {topic} with {partitions} partitions");
    }
    Ok(())
}

/// Produces events to Kafka, Avro-encoded and keyed by device, with an
/// idempotent producer; fails unless every event is acknowledged. Also used
/// by `posture import-results --kafka`.
/// Its progress lines (every 5 s, and the total) start with `who` (`posture simulate`). Returns
/// the offset of the last record it wrote to each partition.
pub(crate) fn produce(
    who: &str,
    to: &KafkaTarget<'_>,
    rate: f64,
    batch_records: u32,
    events: impl ExactSizeIterator<Item = impl std::borrow::Borrow<ConfigChange>>,
) -> Result<std::collections::BTreeMap<i32, i64>> {
    let (brokers, topic, schema_id) = (to.brokers, to.topic, to.schema_id);
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use std::sync::atomic::Ordering::Relaxed;
    ensure_topic(to)?;
    let batch = batch_records.max(1).to_string();
    let defaults = [
        ("enable.idempotence", "true"),
        ("linger.ms", "20"),
        ("batch.num.messages", batch.as_str()),
    ];
    let producer: BaseProducer<Deliveries> = posture_ingest::topics::client_config(brokers, &defaults, &to.security)
        .create_with_context(Deliveries::default())
        .with_context(|| format!("cannot create a Kafka producer for {brokers}"))?;
    let started = Instant::now();
    let mut last = Instant::now();
    let total = events.len();
    for (i, e) in events.enumerate() {
        let e = e.borrow();
        let payload = posture_avro::encode_config_change(e, schema_id);
        let mut record = BaseRecord::to(topic).key(e.device_id.as_str()).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(anyhow::anyhow!("producing to {topic} at {brokers}: {e}")),
            }
        }
        producer.poll(Duration::ZERO);
        if rate > 0.0 {
            let due = Duration::from_secs_f64((i + 1) as f64 / rate);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(ahead.min(Duration::from_millis(100)));
            }
        }
        if last.elapsed() >= Duration::from_secs(5) {
            eprintln!("{who}: {} of {total} events produced", i + 1);
            last = Instant::now();
        }
    }
    producer
        .flush(Duration::from_secs(300))
        .with_context(|| format!("waiting for {topic} at {brokers} to acknowledge every event"))?;
    let ctx = producer.context();
    let (ok, failed) = (ctx.ok.load(Relaxed), ctx.failed.load(Relaxed));
    if failed > 0 || ok != total as u64 {
        let first = ctx
            .first_error
            .lock()
            .expect("not poisoned")
            .clone()
            .unwrap_or_default();
        anyhow::bail!("{failed} of {total} events were not delivered to {topic} at {brokers} (first error: {first})");
    }
    eprintln!(
        "{who}: produced {ok} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let last = ctx.last_offsets.lock().expect("not poisoned").clone();
    Ok(last)
}
