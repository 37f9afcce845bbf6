//! `posture-bench`: measures posture against SPEC section 7 and prints one
//! table. See `posture-bench --help`, and `scripts/bench`, which builds the
//! release binaries, starts the test stack and runs this.

use anyhow::{ensure, Context, Result};
use clap::Parser;
use mimalloc::MiMalloc;
use posture_bench::{evaluator, release, report, stack};
use std::alloc::{GlobalAlloc, Layout};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// Counts live heap bytes while `COUNTING` is on, so state per device is
/// measured, not estimated. Off while throughput is timed (the atomic
/// add per allocation would be part of the figure).
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: forwards to mimalloc (the allocator of posture's binaries); only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size() as isize);
        unsafe { MiMalloc.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(-(l.size() as isize));
        unsafe { MiMalloc.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count(n as isize - l.size() as isize);
        unsafe { MiMalloc.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Measures posture against the targets of SPEC section 7, in one run, and
/// prints a table: each figure, its target, and whether it is met.
///
/// Two parts:
///
/// evaluator: in this process, on one core: the 300-control baseline, a
/// fleet populated with one SNAPSHOT per device, then drift events as Avro
/// bytes through decode + evaluate + emit (events/s); state bytes per device
/// (counted by the allocator); snapshot and restore of the whole fleet.
///
/// stack: the release `posture run` on Kafka and ClickHouse (scripts/stack
/// up): a bare rdkafka consumer and the pipeline on the same backlog
/// (events/s and the ratio), freshness at fixed rates, peak resident
/// memory, and the sink's INSERTs against clickhouse-client's on the same
/// rows.
///
/// Figures are best-of-passes where repeated. Run it on an otherwise idle
/// machine: everything shares the cores.
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Which part to run. (`scripts/bench --only history` runs posture-history-bench instead:
    /// what trend queries cost as history grows.)
    #[arg(long, value_enum, default_value_t = Part::All)]
    only: Part,
    /// Evaluator fleet sizes (devices), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    devices: Vec<usize>,
    /// Drift events measured per evaluator fleet.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Settings per drift event.
    #[arg(long, default_value_t = 5)]
    settings: usize,
    /// Passes of each timed evaluator part (the best is kept).
    #[arg(long, default_value_t = 3)]
    passes: usize,
    /// A previous release to measure beside this build in the same run (evaluator part): a git
    /// tag or commit of this repository, whose posture-bench is built under WORK/release/ (the
    /// first build takes several minutes; later runs reuse it), or `auto` for the newest tag
    /// before HEAD (git describe --tags --abbrev=0 HEAD~1). scripts/bench passes `auto`.
    #[arg(long, value_name = "REV")]
    against: Option<String>,
    /// An already built posture-bench to measure as the previous release, instead of building
    /// --against (which then only names it in the table).
    #[arg(long, value_name = "FILE")]
    against_bin: Option<PathBuf>,
    /// Instructions per event counted by callgrind (valgrind) on this many drift events, for
    /// this build and the previous release (evaluator part; the clock moves by 10-15% between
    /// runs here, instruction counts do not). 0: not counted. At most 5,000; scripts/bench
    /// passes 5,000.
    #[arg(long, default_value_t = 0, value_name = "EVENTS")]
    callgrind_events: usize,
    /// Devices of the fleet callgrind runs on (populated under valgrind, so kept small:
    /// instructions per event hardly depend on the fleet's size; time does).
    #[arg(long, default_value_t = 20_000)]
    callgrind_devices: usize,
    /// Devices of the stack part's fleet (each sends a 300-setting SNAPSHOT first).
    #[arg(long, default_value_t = 10_000)]
    stack_devices: usize,
    /// Drift events in the backlog read by the bare consumer and by posture run.
    #[arg(long, default_value_t = 200_000)]
    backlog: usize,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Fixed rates (events/s) of the freshness runs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,50000")]
    rates: Vec<f64>,
    /// Seconds of production at each rate.
    #[arg(long, default_value_t = 20.0)]
    rate_secs: f64,
    /// Drift events whose rows the sink and clickhouse-client insert.
    #[arg(long, default_value_t = 50_000)]
    insert_events: usize,
    /// Small sizes everywhere: checks that the harness works (figures meaningless).
    #[arg(long)]
    quick: bool,
    /// The posture binary (default: next to this one; build with cargo build --release).
    #[arg(long, value_name = "FILE")]
    posture: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "POSTURE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// ClickHouse HTTP URL.
    #[arg(long, env = "POSTURE_CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123")]
    clickhouse_url: String,
    /// ClickHouse native port (clickhouse-client).
    #[arg(long, env = "POSTURE_CH_TCP_PORT", default_value_t = 9000)]
    clickhouse_tcp_port: u16,
    /// Scratch directory: baseline, logs and summaries of the runs.
    #[arg(long, default_value = ".stack/bench")]
    work: PathBuf,
    /// Also write every figure as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also write the table (Markdown, with the machine) here.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    All,
    Evaluator,
    Stack,
}

fn say(s: String) {
    eprintln!("bench: {s}");
}

/// CPU model, cores and memory of this machine.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_string(), |m| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib: u64 = mem
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    format!("{model}, {cores} cores, {:.0} GiB", kib as f64 / 1048576.0)
}

fn main() -> Result<()> {
    let mut a = Args::parse();
    if a.quick {
        a.devices = vec![2_000];
        a.events = 20_000;
        a.passes = 1;
        a.stack_devices = 200;
        a.backlog = 2_000;
        a.rates = vec![1_000.0];
        a.rate_secs = 2.0;
        a.insert_events = 1_000;
        a.callgrind_devices = 300;
        a.callgrind_events = a.callgrind_events.min(500);
    }
    let mut lines = Vec::new();
    let mut json = serde_json::Map::new();
    let started = std::time::Instant::now();
    if a.only != Part::Stack {
        std::fs::create_dir_all(&a.work).with_context(|| format!("cannot create {}", a.work.display()))?;
        let previous = match (&a.against_bin, a.against.as_deref()) {
            (Some(bin), rev) => Some(release::Previous {
                rev: rev.unwrap_or("(given binary)").to_string(),
                bin: bin.clone(),
            }),
            (None, None) => None,
            (None, Some(rev)) => {
                let repo = release::repository()?;
                let rev = match rev {
                    "auto" => release::previous_tag(&repo)?,
                    r => r.to_string(),
                };
                Some(release::build(&repo, &rev, &a.work, &say)?)
            }
        };
        for &devices in &a.devices {
            let before = match &previous {
                Some(p) => {
                    say(format!("evaluator: the previous release {}, {devices} devices", p.rev));
                    Some(release::evaluator_rates(
                        &p.bin, devices, a.events, a.settings, a.passes, &a.work,
                    )?)
                }
                None => None,
            };
            let f = evaluator::measure(
                evaluator::Plan {
                    devices,
                    events: a.events,
                    settings_per_event: a.settings,
                    passes: a.passes,
                },
                &|on| {
                    COUNTING.store(on, Ordering::Relaxed);
                    LIVE.load(Ordering::Relaxed)
                },
                &say,
            );
            lines.extend(report::evaluator_lines(&f));
            json.insert(format!("evaluator_{devices}"), serde_json::to_value(&f)?);
            if let (Some(p), Some(rates)) = (&previous, before) {
                lines.extend(report::release_lines(&p.rev, devices, rates, &f));
                json.insert(
                    format!("previous_release_evaluator_{devices}"),
                    serde_json::json!({"rev": p.rev, "events_per_sec": rates.0, "events_per_sec_with_rows": rates.1}),
                );
            }
        }
        if a.callgrind_events > 0 {
            let (d, e) = (a.callgrind_devices, a.callgrind_events);
            say(format!(
                "callgrind: this build ({d} devices, {e} events; a few minutes under valgrind)"
            ));
            let this = release::instructions(
                &std::env::current_exe()?,
                &[],
                d,
                e,
                a.settings,
                &a.work.join("callgrind/this"),
            )?;
            let prev = match &previous {
                Some(p) => {
                    say(format!("callgrind: the previous release {}", p.rev));
                    Some((
                        p.rev.as_str(),
                        release::instructions(&p.bin, &[], d, e, a.settings, &a.work.join("callgrind/previous"))?,
                    ))
                }
                None => None,
            };
            lines.extend(report::instruction_lines(d, this, prev));
            json.insert(
                "instructions".into(),
                serde_json::json!({"this": this, "previous": prev.map(|p| p.1)}),
            );
        }
    }
    if a.only != Part::Evaluator {
        let posture = match &a.posture {
            Some(p) => p.clone(),
            None => std::env::current_exe()?.with_file_name("posture"),
        };
        ensure!(
            stack::executable(&posture),
            "no posture binary at {}: build it with cargo build --release -p posture, or pass --posture",
            posture.display()
        );
        std::fs::create_dir_all(&a.work).with_context(|| format!("cannot create {}", a.work.display()))?;
        let s = stack::Stack {
            brokers: a.brokers.clone(),
            clickhouse_url: a.clickhouse_url.clone(),
            clickhouse_tcp_port: a.clickhouse_tcp_port,
            posture,
            work: std::fs::canonicalize(&a.work)?,
            run_id: format!(
                "bench_{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs()
            ),
        };
        let plan = stack::Plan {
            devices: a.stack_devices,
            settings_per_event: a.settings,
            backlog: a.backlog,
            partitions: a.partitions,
            rates: a.rates.clone(),
            rate_secs: a.rate_secs,
            insert_events: a.insert_events,
        };
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let f = rt.block_on(async {
            let f = stack::measure(&s, &plan, &say).await;
            if let Err(e) = stack::cleanup(&s).await {
                say(format!("could not drop the database {}: {e}", s.run_id));
            }
            f
        })?;
        lines.extend(report::stack_lines(&f));
        json.insert("stack".into(), serde_json::to_value(&f)?);
    }
    let table = report::markdown(&lines);
    let header = format!(
        "posture-bench on {} ({:.0} s{})\n\n",
        machine(),
        started.elapsed().as_secs_f64(),
        if a.quick { ", --quick: figures meaningless" } else { "" }
    );
    println!("{header}{table}");
    json.insert("machine".into(), machine().into());
    json.insert("table".into(), serde_json::to_value(&lines)?);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&json)?).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.markdown {
        std::fs::write(p, format!("{header}{table}")).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
