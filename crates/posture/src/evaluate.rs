//! `posture evaluate`: embedded mode. Reads JSON-lines events, scores them
//! with the core, prints the score report.

use crate::output::{self, Format};
use anyhow::{bail, Context, Result};
use posture_core::engine::{ScopeKey, NO_GROUP};
use posture_core::exception::parse_exceptions;
use posture_core::report::{self, Selection};
use posture_core::time::{format_time, parse_time};
use posture_core::*;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Directory of baseline YAML files.
    #[arg(long, env = "POSTURE_BASELINES", value_name = "DIR")]
    baselines: PathBuf,
    /// ConfigChange events: a JSON-lines file, or an Avro object container
    /// file (detected by its magic bytes); "-" reads standard input.
    #[arg(long, value_name = "FILE")]
    events: PathBuf,
    /// YAML file of exceptions (see the README for the format).
    #[arg(long, value_name = "FILE")]
    exceptions: Option<PathBuf>,
    /// Output format; csv prints the recommendations list.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Score as of this event-time instant (RFC 3339 or epoch milliseconds):
    /// the sum of every delta with event time <= TIME.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    at: Option<i64>,
    /// Tenant to report (default: the only tenant in the events).
    #[arg(long)]
    tenant: Option<String>,
    /// Report one device group of the tenant.
    #[arg(long)]
    group: Option<String>,
    /// Report one category: application, os, network, accounts, security_controls.
    #[arg(long, value_parser = parse_category)]
    category: Option<Category>,
    /// Only recommendations of this remediation type: configuration_change, software_update.
    #[arg(long, value_parser = parse_remediation)]
    remediation: Option<Remediation>,
    /// How many recommendations the table shows (JSON and CSV list all).
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Days without an event after which a device leaves the score.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    inactivity_days: u32,
    #[command(flatten)]
    limits: crate::limits::InputLimits,
    /// How many rejected lines to print to stderr before only counting them.
    #[arg(long, default_value_t = 20)]
    max_errors: usize,
}

pub fn parse_category(s: &str) -> Result<Category, String> {
    Category::parse(s)
        .ok_or_else(|| format!("unknown category {s:?} (application, os, network, accounts, security_controls)"))
}

pub fn parse_remediation(s: &str) -> Result<Remediation, String> {
    Remediation::parse(s).ok_or_else(|| format!("unknown remediation {s:?} (configuration_change, software_update)"))
}

/// An event (or why it could not be read) with its line or record number.
type Positioned = (u64, std::result::Result<ConfigChange, String>);

/// What reading the events did, for the summary line.
#[derive(Default)]
struct Counts {
    lines: u64,
    unparseable: u64,
    printed: usize,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let started = Instant::now();
    let catalog = Arc::new(crate::baselines::load_or_fail(&args.baselines)?);
    let cfg = args.limits.engine_config(args.inactivity_days);
    let mut engine = Engine::new(catalog.clone(), cfg);
    let mut ledger = Ledger::new(args.at);
    let mut out = Output::default();

    if let Some(path) = &args.exceptions {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let excs = parse_exceptions(&path.display().to_string(), &text).map_err(|errs| {
            for e in &errs {
                eprintln!("{e}");
            }
            anyhow::anyhow!("{} error(s) in {}", errs.len(), path.display())
        })?;
        for e in excs {
            engine.add_exception(e, &mut out).map_err(anyhow::Error::msg)?;
        }
    }

    let name = args.events.display().to_string();
    let reader: Box<dyn Read> = if name == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(&args.events).with_context(|| format!("cannot open events file {name}"))?)
    };
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let avro = posture_avro::is_container(reader.fill_buf().with_context(|| format!("cannot read {name}"))?);
    let mut counts = Counts::default();
    let report_err = |counts: &mut Counts, line: u64, msg: &str| {
        if counts.printed < args.max_errors {
            eprintln!("{name}:{line}: {msg}");
            counts.printed += 1;
        }
    };
    // Each event with its position: the line number, or the record number of an Avro file.
    let events: Box<dyn Iterator<Item = Result<Positioned>>> = if avro {
        Box::new(
            posture_avro::read_container(reader)
                .enumerate()
                .map(|(i, r)| Ok((i as u64 + 1, r.map_err(|e| e.to_string())))),
        )
    } else {
        Box::new(reader.lines().enumerate().filter_map(|(i, line)| match line {
            Err(e) => Some(Err(
                anyhow::Error::new(e).context(format!("cannot read {name} at line {}", i + 1)),
            )),
            Ok(l) if l.trim().is_empty() => None,
            Ok(l) => Some(Ok((i as u64 + 1, ConfigChange::from_json(&l)))),
        }))
    };
    for item in events {
        let (lineno, parsed) = item?;
        counts.lines += 1;
        let ev = match parsed {
            Ok(ev) => ev,
            Err(e) => {
                counts.unparseable += 1;
                let what = if avro {
                    "undecodable record"
                } else {
                    "unparseable event"
                };
                report_err(&mut counts, lineno, &format!("{what}: {e}"));
                continue;
            }
        };
        if let Err(r) = engine.apply(&ev, SourcePos::line(lineno), &mut out) {
            if let engine::Rejected::Invalid(_) = r {
                report_err(&mut counts, lineno, &format!("event {} rejected: {r}", ev.event_id));
            }
        }
        if out.transitions.len() > 100_000 {
            ledger.record(&out);
            out.clear();
        }
    }
    // A report "as of" a later instant lets inactivity deadlines up to it pass.
    if let Some(at) = args.at {
        engine.advance_to(at, SourcePos::default(), &mut out);
    }
    ledger.record(&out);
    out.clear();

    let st = engine.stats();
    let rejected = counts.unparseable + st.events_invalid;
    if counts.printed < rejected as usize {
        eprintln!(
            "{name}: ... {} more rejected line(s) not shown",
            rejected as usize - counts.printed
        );
    }
    eprintln!(
        "posture: {} events read: {} applied, {} stale or duplicate (ignored), {} invalid, {} unparseable; {} devices, {} transitions, {:.0} ms",
        counts.lines,
        st.events_applied,
        st.events_stale,
        st.events_invalid,
        counts.unparseable,
        engine.device_count(),
        st.transitions,
        started.elapsed().as_secs_f64() * 1000.0
    );

    let tenants: Vec<String> = match &args.tenant {
        Some(t) => {
            if engine.tenant_idx(t).is_none() {
                bail!(
                    "tenant {t:?} has no events (tenants seen: {})",
                    list(engine.tenant_names())
                );
            }
            vec![t.clone()]
        }
        None => engine.tenant_names().map(str::to_string).collect(),
    };
    if tenants.is_empty() {
        bail!("no event was applied, nothing to score");
    }
    if tenants.len() > 1 && args.format != Format::Table {
        bail!(
            "the events hold {} tenants ({}); choose one with --tenant",
            tenants.len(),
            list(tenants.iter().map(String::as_str))
        );
    }
    let at_text = args.at.or(ledger.latest()).map(format_time);
    for (i, tenant) in tenants.iter().enumerate() {
        let t = engine.tenant_idx(tenant).expect("tenant checked above");
        let group = match &args.group {
            None => NO_GROUP,
            Some(g) => engine
                .group_idx(g)
                .ok_or_else(|| anyhow::anyhow!("group {g:?} not found in the events"))?,
        };
        let sel = Selection {
            scope: ScopeKey { tenant: t, group },
            category: args.category,
            remediation: args.remediation,
        };
        let score = report::score(&ledger, &catalog, &sel, tenant, args.group.as_deref(), at_text.clone());
        let recs = report::recommendations(&ledger, &catalog, &sel);
        match args.format {
            Format::Json => {
                let v = serde_json::json!({ "score": score, "recommendations": recs });
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            Format::Csv => print!("{}", posture_query::csv_out::recommendations(&recs)),
            Format::Table => {
                if i > 0 {
                    println!();
                }
                let devices = engine.tenant_device_count(t);
                print!("{}", output::score_table(&score, Some(devices)));
                println!();
                print!("{}", output::recommendations_table(&recs, args.top));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.collect();
    v.join(", ")
}
