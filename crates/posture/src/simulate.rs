//! `posture simulate`: a synthetic fleet producing configuration-change events.
//!
//! Devices get a tenant, a group, an OS family and version from a mix, tags,
//! and a "hygiene" (the chance each control is compliant). Each device sends a
//! SNAPSHOT at the start; then settings drift (a control flips), remediation
//! waves fix one control across one group within 30 minutes, a few devices
//! retire, and a small share of events is re-sent (duplicates) or sent with an
//! old sequence (stale). Setting values are synthesised from each control's
//! check tree so the intended outcome really holds. Deterministic per `--seed`.

use anyhow::{Context, Result};
use posture_core::check::{Check, Expected, Op, Scalar};
use posture_core::time::{format_time, parse_time};
use posture_core::*;
use std::collections::HashMap;
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

const GROUPS: [&str; 8] = [
    "finance",
    "engineering",
    "sales",
    "hr",
    "it-ops",
    "legal",
    "marketing",
    "support",
];

struct Os {
    family: &'static str,
    versions: &'static [&'static str],
    share: f64,
}

const OS_MIX: [Os; 3] = [
    Os {
        family: "windows",
        versions: &["10.0.19045", "10.0.22631", "10.0.26100", "10.0.19044"],
        share: 0.6,
    },
    Os {
        family: "macos",
        versions: &["13.6.9", "14.7.1", "15.1"],
        share: 0.25,
    },
    Os {
        family: "linux",
        versions: &["5.15.0", "6.1.0", "6.8.0"],
        share: 0.15,
    },
];

struct Dev {
    tenant: String,
    id: String,
    info: DeviceInfo,
    hygiene: f64,
    seq: i64,
    controls: Vec<ControlIdx>,
}

/// Values that make a check come out PASS (`want = true`) or FAIL.
fn synth(check: &Check, want: bool, cat: &Catalog, rng: &mut fastrand::Rng, out: &mut HashMap<u32, Option<Value>>) {
    match check {
        Check::Leaf(l) => {
            let leaf = &cat.leaves[*l as usize];
            // several `contains` leaves on one list key: the list holds every item
            if let (Op::Contains, true, Expected::Scalar(Scalar::Str(item)), Some(Some(Value::Array(items)))) =
                (leaf.op, want, &leaf.expected, out.get_mut(&leaf.key))
            {
                if !items.contains(item) {
                    items.push(item.clone());
                }
                return;
            }
            out.entry(leaf.key)
                .or_insert_with(|| leaf_value(leaf.op, &leaf.expected, want, rng));
        }
        Check::All(c) => {
            if want {
                c.iter().for_each(|x| synth(x, true, cat, rng, out));
            } else {
                synth(&c[rng.usize(..c.len())], false, cat, rng, out);
            }
        }
        Check::Any(c) => {
            if want {
                synth(&c[rng.usize(..c.len())], true, cat, rng, out);
            } else {
                c.iter().for_each(|x| synth(x, false, cat, rng, out));
            }
        }
        Check::None(c) => {
            if want {
                c.iter().for_each(|x| synth(x, false, cat, rng, out));
            } else {
                synth(&c[rng.usize(..c.len())], true, cat, rng, out);
            }
        }
    }
}

fn scalar_value(s: &Scalar) -> Value {
    match s {
        Scalar::Bool(b) => Value::Bool(*b),
        Scalar::Long(n) => Value::Long(*n),
        Scalar::Double(d) => Value::Double(*d),
        Scalar::Str(x) => Value::String(x.clone()),
    }
}

fn other_value(s: &Scalar) -> Value {
    match s {
        Scalar::Bool(b) => Value::Bool(!b),
        Scalar::Long(n) => Value::Long(n.wrapping_add(1)),
        Scalar::Double(d) => Value::Double(d + 1.0),
        Scalar::Str(x) => Value::String(format!("{x}-other")),
    }
}

fn version_str(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

fn lower(v: &[u64]) -> Vec<u64> {
    let mut v = v.to_vec();
    if let Some(i) = v.iter().rposition(|&c| c > 0) {
        v[i] -= 1;
        for c in v.iter_mut().skip(i + 1) {
            *c = 999;
        }
    }
    v
}

fn higher(v: &[u64]) -> Vec<u64> {
    let mut v = v.to_vec();
    if let Some(last) = v.last_mut() {
        *last += 1;
    }
    v
}

/// A string matching `re` (tries the pattern's literal text and common values).
fn matching_string(re: &regex::Regex) -> Option<String> {
    let pat = re.as_str();
    let literal: String = pat
        .replace("\\.", ".")
        .replace("\\s", " ")
        .chars()
        .filter(|c| !"^$()[]?*+|\\{}".contains(*c))
        .collect();
    let found = [literal.as_str(), "1", "yes", "true", "enabled", "on", "TLS1.2", "no"]
        .into_iter()
        .find(|s| re.is_match(s));
    found.map(str::to_string)
}

fn leaf_value(op: Op, exp: &Expected, want: bool, _rng: &mut fastrand::Rng) -> Option<Value> {
    let v = match (op, exp) {
        (Op::Exists, _) => return want.then_some(Value::Bool(true)),
        (Op::Absent, _) => return (!want).then_some(Value::Bool(true)),
        (op, Expected::Version(v)) => {
            let pass_fail = match op {
                Op::Eq | Op::Ge | Op::Le => (v.clone(), if op == Op::Le { higher(v) } else { lower(v) }),
                Op::Ne => (higher(v), v.clone()),
                Op::Gt => (higher(v), v.clone()),
                Op::Lt => (lower(v), v.clone()),
                _ => (v.clone(), lower(v)),
            };
            Value::String(version_str(if want { &pass_fail.0 } else { &pass_fail.1 }))
        }
        (Op::Eq, Expected::Scalar(s)) => {
            if want {
                scalar_value(s)
            } else {
                other_value(s)
            }
        }
        (Op::Ne, Expected::Scalar(s)) => {
            if want {
                other_value(s)
            } else {
                scalar_value(s)
            }
        }
        (Op::Ge | Op::Le, Expected::Scalar(s)) if want => scalar_value(s),
        (Op::Gt | Op::Ge, Expected::Scalar(s)) => match (s, want) {
            (Scalar::Long(n), true) => Value::Long(n + 1),
            (Scalar::Long(n), false) => Value::Long(n - 1),
            (Scalar::Double(d), true) => Value::Double(d + 1.0),
            (Scalar::Double(d), false) => Value::Double(d - 1.0),
            _ => return None,
        },
        (Op::Lt | Op::Le, Expected::Scalar(s)) => match (s, want) {
            (Scalar::Long(n), true) => Value::Long(n - 1),
            (Scalar::Long(n), false) => Value::Long(n + 1),
            (Scalar::Double(d), true) => Value::Double(d - 1.0),
            (Scalar::Double(d), false) => Value::Double(d + 1.0),
            _ => return None,
        },
        (Op::In, Expected::List(l)) => {
            if want {
                scalar_value(&l[0])
            } else {
                other_value(&l[0])
            }
        }
        (Op::NotIn, Expected::List(l)) => {
            if want {
                other_value(&l[0])
            } else {
                scalar_value(&l[0])
            }
        }
        (Op::Contains, Expected::Scalar(Scalar::Str(s))) => Value::Array(if want { vec![s.clone()] } else { vec![] }),
        (Op::Matches, Expected::Regex(re)) => {
            if want {
                Value::String(matching_string(re)?)
            } else {
                Value::String("~no-match~".into())
            }
        }
        _ => return None,
    };
    Some(v)
}

fn settings_for(cat: &Catalog, controls: &[(ControlIdx, bool)], rng: &mut fastrand::Rng) -> Vec<Setting> {
    let mut values: HashMap<u32, Option<Value>> = HashMap::new();
    for &(c, want) in controls {
        synth(&cat.controls[c as usize].check, want, cat, rng, &mut values);
    }
    let mut keys: Vec<(u32, Option<Value>)> = values.into_iter().collect();
    keys.sort_by_key(|(k, _)| *k);
    keys.into_iter()
        .filter_map(|(k, v)| {
            v.map(|value| Setting {
                key: cat.key_name(k).to_string(),
                value,
            })
        })
        .collect()
}

pub fn run(args: Args) -> Result<ExitCode> {
    let started = Instant::now();
    let cat = crate::baselines::load_or_fail(&args.baselines)?;
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let start = args.start;
    let end = start + (args.hours * 3_600_000.0) as i64;

    // The fleet.
    let mut devs: Vec<Dev> = (0..args.devices)
        .map(|i| {
            let roll = rng.f64();
            let mut acc = 0.0;
            let os = OS_MIX
                .iter()
                .find(|o| {
                    acc += o.share;
                    roll < acc
                })
                .unwrap_or(&OS_MIX[0]);
            let group = GROUPS[rng.usize(..GROUPS.len())];
            let mut groups = vec![group.to_string()];
            if rng.f64() < 0.1 {
                groups.push("servers".into());
            }
            let tags = if rng.f64() < 0.6 {
                vec!["laptop".to_string()]
            } else {
                vec![]
            };
            let info = DeviceInfo {
                os_family: os.family.into(),
                os_version: os.versions[rng.usize(..os.versions.len())].into(),
                hostname: Some(format!("{}-{:06}", &os.family[..3], i)),
                groups,
                tags,
            };
            let controls = (0..cat.controls.len() as ControlIdx)
                .filter(|&c| {
                    let ctl = &cat.controls[c as usize];
                    ctl.applies_to.iter().all(|&k| {
                        cat.conditions[k as usize].matches(&info.os_family, &info.os_version, &info.groups, &info.tags)
                    })
                })
                .collect();
            Dev {
                tenant: format!("t{}", 1 + i % args.tenants.max(1)),
                id: format!("dev-{i:06}"),
                info,
                hygiene: 0.45 + 0.5 * rng.f64(),
                seq: 0,
                controls,
            }
        })
        .collect();

    let mut events: Vec<ConfigChange> = Vec::new();
    let mut next_event = 0u64;
    let mut mk = |d: &mut Dev,
                  t: i64,
                  kind: ChangeKind,
                  device: Option<DeviceInfo>,
                  settings: Vec<Setting>,
                  source: ConfigSource| {
        d.seq += 1;
        next_event += 1;
        ConfigChange::new(d.tenant.clone(), d.id.clone(), kind, t, d.seq)
            .with_event_id(format!("sim-{:010}", next_event))
            .with_source(source)
            .with_device(device)
            .with_settings(settings)
    };
    // Initial snapshots over the first 10 minutes.
    for d in devs.iter_mut() {
        let t = start + rng.i64(0..600_000);
        let want: Vec<(ControlIdx, bool)> = d.controls.iter().map(|&c| (c, rng.f64() < d.hygiene)).collect();
        let settings = settings_for(&cat, &want, &mut rng);
        let info = d.info.clone();
        events.push(mk(
            d,
            t,
            ChangeKind::Snapshot,
            Some(info),
            settings,
            ConfigSource::Agent,
        ));
    }
    let span = (end - start - 600_000).max(1);
    // Drift: a control flips, mostly towards the device's hygiene.
    let drift_count = (args.devices as f64 * args.drift_per_hour * args.hours) as usize;
    for _ in 0..drift_count {
        let d = &mut devs[rng.usize(..args.devices)];
        if d.controls.is_empty() {
            continue;
        }
        let c = d.controls[rng.usize(..d.controls.len())];
        let want = rng.f64() < d.hygiene;
        let settings = settings_for(&cat, &[(c, want)], &mut rng);
        let t = start + 600_000 + rng.i64(0..span);
        let source = if rng.bool() {
            ConfigSource::Agent
        } else {
            ConfigSource::Mdm
        };
        events.push(mk(d, t, ChangeKind::Upsert, None, settings, source));
    }
    // Remediation waves: one control fixed across one group within 30 minutes.
    let mut waves = 0;
    if args.wave_every_hours > 0.0 {
        let mut t = start + (args.wave_every_hours * 3_600_000.0) as i64;
        while t < end {
            let group = GROUPS[rng.usize(..GROUPS.len())];
            let c = rng.u32(..cat.controls.len() as u32);
            for d in devs
                .iter_mut()
                .filter(|d| d.info.groups.iter().any(|g| g == group) && d.controls.contains(&c))
            {
                let settings = settings_for(&cat, &[(c, true)], &mut rng);
                let at = t + rng.i64(0..1_800_000);
                events.push(mk(d, at, ChangeKind::Upsert, None, settings, ConfigSource::Intune));
            }
            waves += 1;
            t += (args.wave_every_hours * 3_600_000.0) as i64;
        }
    }
    // Retirements.
    let retire_count = (args.devices as f64 * args.retire_rate) as usize;
    for _ in 0..retire_count {
        let d = &mut devs[rng.usize(..args.devices)];
        let t = start + 600_000 + rng.i64(0..span);
        events.push(mk(d, t, ChangeKind::Retire, None, vec![], ConfigSource::Mdm));
    }
    // Arrival order: event time, with sequences re-assigned per device in that
    // order so that they increase along the stream.
    events.sort_by_key(|e| e.observed_at);
    let mut seqs: HashMap<String, i64> = HashMap::new();
    for e in events.iter_mut() {
        let s = seqs.entry(e.device_id.clone()).or_insert(0);
        *s += 1;
        e.sequence = *s;
    }
    // Duplicates and stale copies, a little later in the stream.
    let mut noise = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if rng.f64() < args.duplicate_rate {
            noise.push((i + 1 + rng.usize(..50), e.clone()));
        }
        if rng.f64() < args.stale_rate && e.sequence > 1 {
            let mut stale = e.clone();
            stale.sequence -= 1;
            stale.event_id += "-stale";
            noise.push((i + 1 + rng.usize(..50), stale));
        }
    }
    noise.sort_by_key(|(pos, _)| *pos);
    let (dups, stale) = (
        noise.iter().filter(|(_, e)| !e.event_id.ends_with("-stale")).count(),
        noise.iter().filter(|(_, e)| e.event_id.ends_with("-stale")).count(),
    );

    // Arrival order: the events with the noise spliced in.
    let mut noise_iter = noise.into_iter().peekable();
    let mut ordered: Vec<ConfigChange> = Vec::with_capacity(events.len());
    for (i, e) in events.into_iter().enumerate() {
        ordered.push(e);
        while noise_iter.peek().is_some_and(|(pos, _)| *pos <= i) {
            ordered.push(noise_iter.next().expect("peeked").1);
        }
    }
    ordered.extend(noise_iter.map(|(_, e)| e));
    let written = ordered.len();
    let out_name = match &args.kafka {
        Some(brokers) => {
            let to = KafkaTarget {
                brokers,
                topic: &args.topic,
                partitions: args.partitions,
                schema_id: args.schema_id,
                security: args.security.properties()?,
            };
            produce(&to, args.rate, args.batch_records, &ordered)?;
            format!("kafka {brokers} topic {}", args.topic)
        }
        None => {
            let out_name = args.out.display().to_string();
            let sink: Box<dyn Write> = if out_name == "-" {
                Box::new(std::io::stdout().lock())
            } else {
                Box::new(std::fs::File::create(&args.out).with_context(|| format!("cannot create {out_name}"))?)
            };
            let mut w = BufWriter::with_capacity(1 << 20, sink);
            for e in &ordered {
                writeln!(w, "{}", e.to_json())?;
            }
            w.flush()?;
            out_name
        }
    };
    eprintln!(
        "posture simulate: {written} events ({} devices, {} tenants, {} snapshots, {} drift, {} remediation waves, {} retirements, {dups} duplicates, {stale} stale) from {} to {} in {:.0} ms -> {out_name}",
        args.devices,
        args.tenants.max(1),
        args.devices,
        drift_count,
        waves,
        retire_count,
        format_time(start),
        format_time(end),
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(ExitCode::SUCCESS)
}

/// Counts delivery reports, so no event is lost silently.
#[derive(Default)]
struct Deliveries {
    ok: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        use std::sync::atomic::Ordering::Relaxed;
        match r {
            Ok(_) => {
                self.ok.fetch_add(1, Relaxed);
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
fn ensure_topic(to: &KafkaTarget<'_>) -> Result<()> {
    let (brokers, topic, partitions) = (to.brokers, to.topic, to.partitions);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    if rt.block_on(posture_ingest::topics::ensure_topic(
        brokers,
        topic,
        partitions,
        &to.security,
    ))? {
        eprintln!("posture simulate: created topic {topic} with {partitions} partitions");
    }
    Ok(())
}

/// Produces events to Kafka, Avro-encoded and keyed by device, with an
/// idempotent producer; fails unless every event is acknowledged. Also used
/// by `posture import-results --kafka`.
pub(crate) fn produce(to: &KafkaTarget<'_>, rate: f64, batch_records: u32, events: &[ConfigChange]) -> Result<()> {
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
    for (i, e) in events.iter().enumerate() {
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
            eprintln!("posture simulate: {} of {} events produced", i + 1, events.len());
            last = Instant::now();
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .with_context(|| format!("waiting for {topic} at {brokers} to acknowledge every event"))?;
    let ctx = producer.context();
    let (ok, failed) = (ctx.ok.load(Relaxed), ctx.failed.load(Relaxed));
    if failed > 0 || ok != events.len() as u64 {
        let first = ctx
            .first_error
            .lock()
            .expect("not poisoned")
            .clone()
            .unwrap_or_default();
        anyhow::bail!(
            "{failed} of {} events were not delivered to {topic} at {brokers} (first error: {first})",
            events.len()
        );
    }
    eprintln!(
        "posture simulate: produced {ok} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
