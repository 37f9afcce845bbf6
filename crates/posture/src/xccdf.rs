//! XCCDF (SCAP) commands: `posture baseline import-xccdf` (a benchmark and
//! profile as a posture baseline), `posture import-results` (scanner
//! TestResults as SNAPSHOT events, to a JSON-lines file or Kafka) and
//! `posture baseline score-xccdf` (per-device and scope scores under posture's
//! model and the XCCDF models a baseline chooses). The XCCDF logic lives in
//! `posture-xccdf`; this module does the I/O.

use anyhow::{bail, Context, Result};
use posture_core::{Catalog, ConfigChange, ControlState, Engine, EngineConfig, Output, SourcePos};
use posture_xccdf::{
    aggregate, import, parse_benchmark, parse_test_results, score_device_as, to_event, CategoryMap, DeviceResults,
    DeviceScores, ErrorAs, EventOptions, ImportOptions, Model, ModelScore, Replay, ScoringTree,
};
use serde_json::json;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// `--error-as`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ErrorAsArg {
    /// error and unknown results make the control UNKNOWN (outside every sum).
    Unknown,
    /// error and unknown results make the control FAIL (as XCCDF counts them).
    Fail,
}

/// `posture baseline import-xccdf`.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// An XCCDF 1.2 benchmark, or a SCAP source data stream holding one
    /// (e.g. /usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml).
    file: PathBuf,
    /// The profile to import (its selection and refinements). Without one,
    /// the benchmark's own defaults; run with --list-profiles to see them.
    #[arg(long, value_name = "ID")]
    profile: Option<String>,
    /// Write the baseline YAML here (default: standard output).
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// YAML mapping of rule or group id patterns (`*` wildcard) to
    /// categories, overriding the keyword heuristic.
    #[arg(long, value_name = "FILE")]
    category_map: Option<PathBuf>,
    /// An XCCDF tailoring file whose profiles extend the benchmark's.
    #[arg(long, value_name = "FILE")]
    tailoring: Option<PathBuf>,
    /// The Benchmark id, when the data stream holds several.
    #[arg(long, value_name = "ID")]
    benchmark_id: Option<String>,
    /// The baseline id (default: xccdf-<benchmark>-<profile>).
    #[arg(long, value_name = "ID")]
    baseline_id: Option<String>,
    /// How error and unknown results count in posture's own score.
    #[arg(long, value_enum, default_value_t = ErrorAsArg::Unknown)]
    error_as: ErrorAsArg,
    /// Ignore the profile's refine-rule weights and keep the benchmark's, as
    /// OpenSCAP 1.3 does when it computes scores.
    #[arg(long)]
    no_refine_weights: bool,
    /// List the benchmark's profiles and exit.
    #[arg(long)]
    list_profiles: bool,
}

fn read(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `posture baseline import-xccdf FILE`.
pub fn import_xccdf(args: ImportArgs) -> Result<ExitCode> {
    let name = args.file.display().to_string();
    let text = read(&args.file)?;
    let mut bench = parse_benchmark(&name, &text, args.benchmark_id.as_deref())?;
    if let Some(t) = &args.tailoring {
        bench.add_tailoring(&t.display().to_string(), &read(t)?)?;
    }
    if args.list_profiles {
        println!("Benchmark {} {} ({})", bench.id, bench.version, bench.title);
        for p in &bench.profiles {
            println!("  {}  {}", p.id, p.title);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let categories = match &args.category_map {
        Some(f) => CategoryMap::parse(&f.display().to_string(), &read(f)?)?,
        None => CategoryMap::default(),
    };
    let opts = ImportOptions {
        profile: args.profile.clone(),
        refine_weights: !args.no_refine_weights,
        baseline_id: args.baseline_id.clone(),
        error_as: match args.error_as {
            ErrorAsArg::Unknown => ErrorAs::Unknown,
            ErrorAsArg::Fail => ErrorAs::Fail,
        },
        categories,
        source: name.clone(),
    };
    let imported = match import(&name, &bench, &opts) {
        Ok(i) => i,
        Err(e) if args.profile.is_none() && !bench.profiles.is_empty() => {
            let ids: Vec<&str> = bench.profiles.iter().map(|p| p.id.as_str()).collect();
            bail!("{e}; choose a profile with --profile (one of: {})", ids.join(", "))
        }
        Err(e) => return Err(e.into()),
    };
    // The baseline must load like any other.
    let out_name = args
        .output
        .as_ref()
        .map_or("(output)".to_string(), |p| p.display().to_string());
    if let Err(errors) = Catalog::from_sources(&[(out_name.as_str(), imported.yaml.as_str())]) {
        for e in &errors {
            eprintln!("{e}");
        }
        bail!("the generated baseline does not validate ({} errors)", errors.len());
    }
    match &args.output {
        Some(p) => std::fs::write(p, &imported.yaml).with_context(|| format!("cannot write {}", p.display()))?,
        None => print!("{}", imported.yaml),
    }
    let cats: Vec<String> = imported.per_category.iter().map(|(c, n)| format!("{c} {n}")).collect();
    eprintln!(
        "posture: imported {} {} profile {}: {} controls ({}; {} by the default category), {} selected rules in the scoring tree only (unscored, unchecked or weight 0) -> {}",
        bench.id,
        bench.version,
        args.profile.as_deref().unwrap_or("(none)"),
        imported.controls,
        cats.join(", "),
        imported.defaulted,
        imported.tree_only,
        args.output.as_ref().map_or("standard output".into(), |p| p.display().to_string())
    );
    Ok(ExitCode::SUCCESS)
}

/// `posture import-results`.
#[derive(clap::Args)]
pub struct ImportResultsArgs {
    /// XCCDF results (`oscap xccdf eval --results`), an ARF report
    /// (`--results-arf`), or a file with TestResult elements.
    file: PathBuf,
    /// Device id of every event (default: each TestResult's target).
    #[arg(long, value_name = "ID")]
    device: Option<String>,
    /// Tenant of the events.
    #[arg(long, default_value = "default", value_name = "T")]
    tenant: String,
    /// Output JSON-lines file ("-": standard output).
    #[arg(long, short, default_value = "-", value_name = "FILE.jsonl")]
    output: PathBuf,
    /// Produce to Kafka at these brokers instead (Avro, Confluent wire
    /// format, keyed by device id), with the producer of `posture simulate`.
    #[arg(long, value_name = "BROKERS")]
    kafka: Option<String>,
    /// Topic for --kafka.
    #[arg(long, default_value = "posture.config-changes")]
    topic: String,
    /// Schema id written in the wire-format header for --kafka.
    #[arg(long, default_value_t = 1)]
    schema_id: u32,
    /// Partitions of the topic when --kafka creates it.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    #[command(flatten)]
    security: crate::args::KafkaSecurityArgs,
}

/// `posture import-results FILE`.
pub fn import_results(args: ImportResultsArgs) -> Result<ExitCode> {
    let name = args.file.display().to_string();
    let trs = parse_test_results(&name, &read(&args.file)?)?;
    let opts = EventOptions {
        tenant: args.tenant.clone(),
        device: args.device.clone(),
    };
    let mut events = Vec::new();
    for tr in &trs {
        let ev = to_event(&name, tr, &opts)?;
        let scores: Vec<String> = Model::ALL
            .iter()
            .filter_map(|m| tr.score(*m).map(|s| format!("{} {}/{}", m.name(), s.score, s.maximum)))
            .collect();
        eprintln!(
            "posture: TestResult {} (profile {}) -> device {} at {}: {} rule results; scanner scores: {}",
            tr.id,
            tr.profile.as_deref().unwrap_or("-"),
            ev.device_id,
            posture_core::time::format_time(ev.observed_at),
            ev.settings.len(),
            if scores.is_empty() {
                "none".into()
            } else {
                scores.join(", ")
            }
        );
        events.push(ev);
    }
    match &args.kafka {
        Some(brokers) => {
            let to = crate::simulate::KafkaTarget {
                brokers,
                topic: &args.topic,
                partitions: args.partitions,
                schema_id: args.schema_id,
                security: args.security.properties()?,
            };
            crate::simulate::produce("posture import-results", &to, 0.0, 1, events.iter())?;
            eprintln!(
                "posture: {} SNAPSHOT event(s) -> kafka {brokers} topic {}",
                events.len(),
                args.topic
            );
        }
        None => {
            let out = args.output.display().to_string();
            let sink: Box<dyn Write> = if out == "-" {
                Box::new(std::io::stdout().lock())
            } else {
                Box::new(std::fs::File::create(&args.output).with_context(|| format!("cannot create {out}"))?)
            };
            let mut w = BufWriter::new(sink);
            for e in &events {
                writeln!(w, "{}", e.to_json())?;
            }
            w.flush()?;
            eprintln!("posture: {} SNAPSHOT event(s) -> {out}", events.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--format` of score-xccdf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScoreFormat {
    /// Aligned columns.
    Table,
    /// One JSON object.
    Json,
}

/// `posture baseline score-xccdf`.
#[derive(clap::Args)]
pub struct ScoreArgs {
    /// Directory of baseline YAML files; those with a `scoring.xccdf`
    /// section are scored.
    #[arg(long, env = "POSTURE_BASELINES", value_name = "DIR")]
    baselines: PathBuf,
    /// ConfigChange events: JSON lines, or an Avro object container file
    /// (detected by its magic bytes); "-" reads standard input.
    #[arg(long, value_name = "FILE")]
    events: PathBuf,
    /// Only this tenant's devices.
    #[arg(long)]
    tenant: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ScoreFormat::Table)]
    format: ScoreFormat,
    /// Compute the XCCDF models in single precision, as OpenSCAP does (its
    /// figures digit for digit) instead of double precision.
    #[arg(long)]
    single_precision: bool,
    /// Days without an event after which a device leaves the scope scores
    /// (counted back from the latest event time).
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    inactivity_days: u32,
}

fn read_events(path: &PathBuf) -> Result<Vec<ConfigChange>> {
    let name = path.display().to_string();
    let reader: Box<dyn Read> = if name == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).with_context(|| format!("cannot open events file {name}"))?)
    };
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let avro = posture_avro::is_container(reader.fill_buf().with_context(|| format!("cannot read {name}"))?);
    let mut events = Vec::new();
    let mut bad = 0;
    let mut report = |pos: usize, what: &str, e: String| {
        bad += 1;
        if bad <= 20 {
            eprintln!("{name}:{pos}: {what}: {e}");
        }
    };
    if avro {
        for (i, r) in posture_avro::read_container(reader).enumerate() {
            match r {
                Ok(e) => events.push(e),
                Err(e) => report(i + 1, "undecodable record", e.to_string()),
            }
        }
    } else {
        for (i, line) in reader.lines().enumerate() {
            let line = line.with_context(|| format!("cannot read {name} at line {}", i + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            match ConfigChange::from_json(&line) {
                Ok(e) => events.push(e),
                Err(e) => report(i + 1, "unparseable event", e),
            }
        }
    }
    if bad > 0 {
        eprintln!("{name}: {bad} unreadable event(s) skipped");
    }
    Ok(events)
}

/// posture's own per-device score for a baseline: (points, max) in points.
fn posture_device(engine: &Engine, range: std::ops::Range<u32>, tenant: &str, device: &str) -> Option<(f64, f64)> {
    let dev = engine.device_idx(tenant, device)?;
    let (counted, cells) = engine.device_cells(dev);
    if !counted {
        return None;
    }
    let cat = engine.catalog();
    let (mut p, mut m) = (0i64, 0i64);
    for c in range {
        let pts = cat.controls[c as usize].points;
        match cells[c as usize].state() {
            ControlState::Pass => {
                p += pts;
                m += pts;
            }
            ControlState::Fail => m += pts,
            _ => {}
        }
    }
    Some((p as f64 / 1e6, m as f64 / 1e6))
}

/// posture's scope score for a baseline (SPEC section 3): sum of p_c * f_c
/// over controls with a PASS or FAIL device, out of the sum of their p_c.
fn posture_scope(engine: &Engine, range: std::ops::Range<u32>, devices: &[(&str, &str)]) -> (f64, f64) {
    let cat = engine.catalog();
    let (mut score, mut max) = (0.0, 0.0);
    for c in range {
        let (mut pass, mut fail) = (0u64, 0u64);
        for (t, d) in devices {
            let Some(dev) = engine.device_idx(t, d) else { continue };
            let (counted, cells) = engine.device_cells(dev);
            if !counted {
                continue;
            }
            match cells[c as usize].state() {
                ControlState::Pass => pass += 1,
                ControlState::Fail => fail += 1,
                _ => {}
            }
        }
        if pass + fail > 0 {
            let p = cat.controls[c as usize].points as f64 / 1e6;
            score += p * pass as f64 / (pass + fail) as f64;
            max += p;
        }
    }
    (score, max)
}

fn pct(s: f64, m: f64) -> f64 {
    if m == 0.0 {
        0.0
    } else {
        (10_000.0 * s / m).round() / 100.0
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// `posture baseline score-xccdf`.
pub fn score_xccdf(args: ScoreArgs) -> Result<ExitCode> {
    let catalog = Arc::new(crate::baselines::load_or_fail(&args.baselines)?);
    let mut scored = Vec::new();
    for b in &catalog.baselines {
        if let Some(s) = &b.scoring {
            if let Some(x) = &s.xccdf {
                let tree = ScoringTree::from_json(&b.file, x)?;
                let models: Vec<Model> = s.models.iter().filter_map(|m| Model::parse(m)).collect();
                scored.push((b, tree, models));
            }
        }
    }
    if scored.is_empty() {
        bail!(
            "no baseline in {} has a scoring.xccdf section (import one with `posture baseline import-xccdf`)",
            args.baselines.display()
        );
    }
    let events = read_events(&args.events)?;
    let mut engine = Engine::new(
        catalog.clone(),
        EngineConfig {
            inactivity_window_ms: args.inactivity_days as i64 * 86_400_000,
            ..Default::default()
        },
    );
    let mut out = Output::default();
    let mut replay = Replay::default();
    for (i, ev) in events.iter().enumerate() {
        if args.tenant.as_ref().is_some_and(|t| *t != ev.tenant_id) {
            continue;
        }
        let _ = engine.apply(ev, SourcePos::line(i as u64 + 1), &mut out);
        out.clear();
        replay.apply(ev);
    }
    let window = args.inactivity_days as i64 * 86_400_000;
    let devices: Vec<(&(String, String), &DeviceResults)> = replay.active(window).collect();
    if devices.is_empty() {
        bail!("no active device in the events");
    }
    for ((_, d), r) in &devices {
        for (rule, v) in r.unknown_values().take(3) {
            eprintln!("posture: device {d}: setting xccdf:{rule} = {v:?} is not an XCCDF result; left out");
        }
    }
    let names: Vec<(&str, &str)> = devices.iter().map(|((t, d), _)| (t.as_str(), d.as_str())).collect();
    let mut report = Vec::new();
    for (b, tree, models) in &scored {
        let mut rows = Vec::new();
        let mut all_scores: Vec<DeviceScores> = Vec::new();
        for ((tenant, device), r) in &devices {
            let results = |rule: &str| r.result(rule);
            let ds = if args.single_precision {
                score_device_as::<f32>(tree, &results)
            } else {
                score_device_as::<f64>(tree, &results)
            };
            let posture = posture_device(&engine, b.controls.clone(), tenant, device);
            let mut row = serde_json::Map::new();
            row.insert("tenant".into(), json!(tenant));
            row.insert("device".into(), json!(device));
            row.insert("counted_rules".into(), json!(ds.counted_rules));
            row.insert(
                "posture".into(),
                match posture {
                    Some((p, m)) => json!({"points": p, "max_points": m, "percent": pct(p, m)}),
                    None => serde_json::Value::Null,
                },
            );
            for (m, s) in &ds.scores {
                if models.contains(m) {
                    row.insert(m.name().into(), model_json(*m, s));
                }
            }
            rows.push(serde_json::Value::Object(row));
            all_scores.push(ds);
        }
        let (ps, pm) = posture_scope(&engine, b.controls.clone(), &names);
        let mut scope = serde_json::Map::new();
        scope.insert("devices".into(), json!(devices.len()));
        scope.insert(
            "posture".into(),
            json!({"points": round6(ps), "max_points": round6(pm), "percent": pct(ps, pm)}),
        );
        for s in aggregate(&all_scores) {
            if models.contains(&s.model) {
                scope.insert(
                    s.model.name().into(),
                    json!({"devices": s.devices, "mean_score": round6(s.mean_score),
                           "mean_maximum": round6(s.mean_maximum), "percent": (s.percent * 100.0).round() / 100.0}),
                );
            }
        }
        report.push(json!({
            "baseline": b.id,
            "benchmark": tree.benchmark,
            "profile": tree.profile,
            "models": models.iter().map(|m| m.name()).collect::<Vec<_>>(),
            "devices": rows,
            "scope": scope,
        }));
    }
    match args.format {
        ScoreFormat::Json => println!("{}", serde_json::to_string_pretty(&json!({ "baselines": report }))?),
        ScoreFormat::Table => print!("{}", table(&report)),
    }
    Ok(ExitCode::SUCCESS)
}

fn model_json(m: Model, s: &ModelScore) -> serde_json::Value {
    json!({"score": round6(s.score), "maximum": round6(s.maximum), "percent": (s.percent(m) * 100.0).round() / 100.0})
}

fn table(report: &[serde_json::Value]) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    for (i, b) in report.iter().enumerate() {
        if i > 0 {
            o.push('\n');
        }
        let models: Vec<&str> = b["models"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str())
                    .filter(|m| *m != "posture")
                    .collect()
            })
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "baseline {} (benchmark {}, profile {})",
            b["baseline"].as_str().unwrap_or(""),
            b["benchmark"].as_str().unwrap_or(""),
            b["profile"].as_str().unwrap_or("-")
        );
        let mut header = format!("{:<28} {:>7} {:>22}", "device", "rules", "posture");
        for m in &models {
            let _ = write!(header, " {:>24}", m);
        }
        let _ = writeln!(o, "{header}");
        let cell = |v: &serde_json::Value, key_s: &str, key_m: &str| -> String {
            if v.is_null() {
                return "-".into();
            }
            format!(
                "{}/{} ({}%)",
                v[key_s].as_f64().map_or("-".into(), fmt_num),
                v[key_m].as_f64().map_or("-".into(), fmt_num),
                v["percent"].as_f64().map_or("-".into(), |p| format!("{p:.2}"))
            )
        };
        for d in b["devices"].as_array().into_iter().flatten() {
            let mut line = format!(
                "{:<28} {:>7} {:>22}",
                format!(
                    "{}/{}",
                    d["tenant"].as_str().unwrap_or(""),
                    d["device"].as_str().unwrap_or("")
                ),
                d["counted_rules"],
                cell(&d["posture"], "points", "max_points")
            );
            for m in &models {
                let _ = write!(line, " {:>24}", cell(&d[*m], "score", "maximum"));
            }
            let _ = writeln!(o, "{line}");
        }
        let s = &b["scope"];
        let mut line = format!(
            "{:<28} {:>7} {:>22}",
            format!("scope ({} devices)", s["devices"]),
            "",
            cell(&s["posture"], "points", "max_points")
        );
        for m in &models {
            let _ = write!(line, " {:>24}", cell(&s[*m], "mean_score", "mean_maximum"));
        }
        let _ = writeln!(o, "{line}");
    }
    o.push_str(
        "\nposture: points/max of the baseline's controls; xccdf_*: score/maximum as OpenSCAP reports them;\nscope: posture's score (sum of p_c x f_c), XCCDF models: mean of the device scores and maxima.\n",
    );
    o
}

fn fmt_num(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}
