//! The query subcommands: `posture score`, `history`, `recommendations`,
//! `devices` and `whatif`, read from ClickHouse through the query layer
//! (`posture-query`), the same code the HTTP API (`/api/v1`) answers with.
//! Points and percents come from the core's report functions, so they equal
//! embedded mode (`posture evaluate`) for the same events.

use crate::args::ClickHouseArgs;
use crate::output::{self, Format};
use anyhow::{Context, Result};
use posture_core::time::{format_time, parse_time};
use posture_core::{Category, Remediation};
use posture_query::now_ms;
use posture_query::{csv_out, Bucket, Change, Filters, Query, Scope};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// What every query command takes: where to read and which tenant.
#[derive(clap::Args)]
pub struct Common {
    /// Directory of baseline YAML files (titles, points, categories of the
    /// controls); the same baselines the pipeline runs with.
    #[arg(long, env = "POSTURE_BASELINES", value_name = "DIR")]
    baselines: PathBuf,
    /// Tenant to report.
    #[arg(long, env = "POSTURE_TENANT")]
    tenant: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(flatten)]
    ch: ClickHouseArgs,
}

impl Common {
    fn query(&self) -> Result<Query> {
        let catalog = crate::baselines::load_or_fail(&self.baselines)?;
        let client = self.ch.client()?.with_database(self.ch.database());
        Ok(Query::new(client, Arc::new(catalog)))
    }

    fn scope(&self, group: &Option<String>) -> Scope {
        Scope {
            tenant: self.tenant.clone(),
            group: group.clone(),
        }
    }

    /// Runs one query on a small runtime, naming the server on failure.
    fn block_on<T>(&self, f: impl std::future::Future<Output = Result<T, posture_query::QueryError>>) -> Result<T> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        rt.block_on(f)
            .with_context(|| format!("reading from {} database {}", self.ch.url(), self.ch.database()))
    }
}

/// The part of a tenant a report looks at.
#[derive(clap::Args)]
pub struct Slice {
    /// One device group of the tenant (default: the whole tenant).
    #[arg(long)]
    group: Option<String>,
    /// One category: application, os, network, accounts, security_controls.
    #[arg(long, value_parser = crate::evaluate::parse_category)]
    category: Option<Category>,
}

/// `posture score`.
#[derive(clap::Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    c: Common,
    #[command(flatten)]
    s: Slice,
    /// Score as of this event-time instant (RFC 3339 or epoch milliseconds);
    /// default: now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    at: Option<i64>,
}

/// `posture score`.
pub fn score(a: ScoreArgs) -> Result<ExitCode> {
    let q = a.c.query()?;
    let s =
        a.c.block_on(q.score(&a.c.scope(&a.s.group), a.s.category, a.at.unwrap_or_else(now_ms)))?;
    match a.c.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&s)?),
        Format::Table => {
            print!("{}", output::score_table(&s, None));
            println!("\n{}", reflects(&s.cut.clone().unwrap_or_default()));
        }
        Format::Csv => {
            print!("{}", csv_out::score(&s));
            eprintln!("posture: {}", reflects(&s.cut.clone().unwrap_or_default()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `posture recommendations`.
#[derive(clap::Args)]
pub struct RecommendationsArgs {
    #[command(flatten)]
    c: Common,
    #[command(flatten)]
    s: Slice,
    /// Only recommendations of this remediation type: configuration_change, software_update.
    #[arg(long, value_parser = crate::evaluate::parse_remediation)]
    remediation: Option<Remediation>,
    /// Only controls that can apply to this OS family (windows, macos, linux, ...).
    #[arg(long)]
    os: Option<String>,
    /// As of this event-time instant (RFC 3339 or epoch ms); default: now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    at: Option<i64>,
    /// How many recommendations to print (default: 10 in the table, all in
    /// JSON and CSV).
    #[arg(long)]
    top: Option<usize>,
}

/// `posture recommendations`.
pub fn recommendations(a: RecommendationsArgs) -> Result<ExitCode> {
    let q = a.c.query()?;
    let filters = Filters {
        category: a.s.category,
        remediation: a.remediation,
        os: a.os.as_deref(),
    };
    let (mut recs, cut) =
        a.c.block_on(q.recommendations(&a.c.scope(&a.s.group), filters, a.at.unwrap_or_else(now_ms)))?;
    if let Some(top) = a.top {
        recs.truncate(top);
    }
    match a.c.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&recs)?),
        Format::Csv => print!("{}", csv_out::recommendations(&recs)),
        Format::Table => print!("{}", output::recommendations_table(&recs, a.top.unwrap_or(10))),
    }
    report_cut(a.c.format, &cut);
    Ok(ExitCode::SUCCESS)
}

/// `posture history`.
#[derive(clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    c: Common,
    #[command(flatten)]
    s: Slice,
    /// Start of the range (RFC 3339 or epoch ms); default: 30 days before --to.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    from: Option<i64>,
    /// End of the range; default: now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    to: Option<i64>,
    /// Bucket width: hour or day (UTC).
    #[arg(long, default_value = "day", value_parser = Bucket::parse)]
    bucket: Bucket,
    /// Also draw the history as an SVG line chart into FILE (with and
    /// without exceptions).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

/// `posture history`.
pub fn history(a: HistoryArgs) -> Result<ExitCode> {
    let q = a.c.query()?;
    let to = a.to.unwrap_or_else(now_ms);
    let from = a.from.unwrap_or(to - 30 * 86_400_000);
    let scope = a.c.scope(&a.s.group);
    let (points, cut) = a.c.block_on(q.history(&scope, a.s.category, from, to, a.bucket))?;
    if let Some(path) = &a.svg {
        let title = match (&scope.group, a.s.category) {
            (Some(g), _) => format!("Secure score of {} / {g}", scope.tenant),
            (None, Some(c)) => format!("Secure score of {} / {}", scope.tenant, c.as_str()),
            (None, None) => format!("Secure score of {}", scope.tenant),
        };
        crate::chart::history_svg(&points, &title, path)?;
        eprintln!("posture: wrote {}", path.display());
    }
    match a.c.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&points)?),
        Format::Csv => print!("{}", csv_out::history(&points)),
        Format::Table => {
            println!(
                "{:<20}  {:>10}  {:>10}  {:>8}  {:>8}",
                "bucket (UTC)", "points", "max", "percent", "w/o exc."
            );
            for p in &points {
                println!(
                    "{:<20}  {:>10.2}  {:>10.2}  {:>7.2}%  {:>7.2}%",
                    &p.bucket_start[..p.bucket_start.len().min(19)].replace('T', " "),
                    p.points,
                    p.max_points,
                    p.percent,
                    p.without_exceptions.percent
                );
            }
        }
    }
    report_cut(a.c.format, &cut);
    Ok(ExitCode::SUCCESS)
}

/// What an answer read from ClickHouse reflects, in words.
fn reflects(cut: &posture_core::report::Cut) -> String {
    format!("Reflects: {}", cut.summary())
}

/// The cut of a list answer: the table's last line; on stderr for JSON and CSV (their shape is
/// SPEC section 5's array; `posture score --format json` carries it in the object).
fn report_cut(format: Format, cut: &posture_core::report::Cut) {
    match format {
        Format::Table => println!("\n{}", reflects(cut)),
        Format::Json | Format::Csv => eprintln!("posture: {}", reflects(cut)),
    }
}

/// `posture devices`.
#[derive(clap::Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    c: Common,
    /// One device: its score and every control's state.
    #[arg(long, conflicts_with_all = ["control", "state"])]
    device: Option<String>,
    /// The devices of this control (with --state; default FAIL: the
    /// misconfigured devices).
    #[arg(long, required_unless_present = "device")]
    control: Option<String>,
    /// PASS, FAIL, UNKNOWN, NOT_APPLICABLE or EXCEPTED.
    #[arg(long, default_value = "FAIL")]
    state: String,
    /// Only devices in this group (by their latest inventory).
    #[arg(long, conflicts_with = "device")]
    group: Option<String>,
    /// Only devices of this OS family.
    #[arg(long, conflicts_with = "device")]
    os: Option<String>,
    /// With --device: its score and controls as of this event-time instant (RFC 3339 or epoch
    /// ms); default: now. (A control's device list is always the latest state.)
    #[arg(long, value_name = "TIME", value_parser = parse_time, requires = "device")]
    at: Option<i64>,
}

/// `posture devices`.
pub fn devices(a: DevicesArgs) -> Result<ExitCode> {
    let q = a.c.query()?;
    if let Some(device) = &a.device {
        let d =
            a.c.block_on(q.device(&a.c.tenant, device, a.at.unwrap_or_else(now_ms)))?;
        match a.c.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(&d)?),
            Format::Csv => print!("{}", csv_out::device_controls(&d.controls)),
            Format::Table => {
                println!(
                    "device {} of tenant {}: {:.2} of {:.2} points ({:.2}%; {:.2}% without exceptions)",
                    d.device, d.tenant, d.points, d.max_points, d.percent, d.without_exceptions.percent
                );
                if let Some(i) = &d.inventory {
                    println!(
                        "  {} {}{}, groups [{}], tags [{}]",
                        i.os_family,
                        i.os_version,
                        if i.hostname.is_empty() {
                            String::new()
                        } else {
                            format!(", host {}", i.hostname)
                        },
                        i.groups.join(", "),
                        i.tags.join(", ")
                    );
                }
                print!("{}", controls_table(&d.controls, false));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let control = a.control.as_deref().unwrap_or_default();
    let v =
        a.c.block_on(q.control_devices(&a.c.tenant, control, &a.state, a.group.as_deref(), a.os.as_deref()))?;
    match a.c.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        Format::Csv => print!("{}", csv_out::device_controls(&v)),
        Format::Table => {
            println!("{} device(s) with {control} in state {}", v.len(), a.state);
            print!("{}", controls_table(&v, true));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn controls_table(v: &[posture_query::DeviceControl], by_device: bool) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    for d in v {
        let first = if by_device { &d.device } else { &d.control };
        let _ = writeln!(
            o,
            "  {:<28} {:<15} {:<10} since {}  {}{}",
            first,
            d.state,
            d.category,
            d.since,
            d.check,
            if d.counted { "" } else { "  (not counted)" }
        );
    }
    o
}

/// `posture whatif`.
#[derive(clap::Args)]
pub struct WhatIfArgs {
    #[command(flatten)]
    c: Common,
    /// The control to fix (or except).
    #[arg(long)]
    control: String,
    /// Apply the change to this device group only (default: the whole
    /// tenant). The score reported is the tenant's, and the group's.
    #[arg(long)]
    group: Option<String>,
    /// Instead of a fix, an exception with this justification:
    /// third_party_control, alternate_mitigation, risk_accepted, planned_remediation.
    #[arg(long, value_name = "JUSTIFICATION")]
    exception: Option<String>,
    /// As of this event-time instant; default: now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    at: Option<i64>,
}

/// `posture whatif`.
pub fn whatif(a: WhatIfArgs) -> Result<ExitCode> {
    let q = a.c.query()?;
    let at = a.at.unwrap_or_else(now_ms);
    let change = match &a.exception {
        None => Change::Fix,
        Some(j) => Change::Exception {
            justification: j.clone(),
        },
    };
    let applied = a.c.scope(&a.group);
    let tenant = a.c.scope(&None);
    let mut answers = vec![a
        .c
        .block_on(q.whatif(&tenant, &applied, &a.control, change.clone(), at))?];
    if a.group.is_some() {
        answers.push(a.c.block_on(q.whatif(&applied, &applied, &a.control, change, at))?);
    }
    match a.c.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&answers)?),
        Format::Csv => print!("{}", csv_out::whatif(&answers)),
        Format::Table => {
            for w in &answers {
                let scope = w
                    .before
                    .group
                    .as_deref()
                    .map_or(format!("tenant {}", w.before.tenant), |g| {
                        format!("tenant {} / group {g}", w.before.tenant)
                    });
                println!(
                    "{scope}: {:.2}% -> {:.2}% ({:+.2} points of percent, {:+.2} points) if {} on {} device(s) at {}",
                    w.before.total.percent,
                    w.after.total.percent,
                    w.percent_gained,
                    w.points_gained,
                    match &w.change {
                        Change::Fix => format!("{} were fixed", w.control),
                        Change::Exception { justification } => format!("{} had a {justification} exception", w.control),
                    },
                    w.devices_affected,
                    format_time(at)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `posture exceptions`.
#[derive(clap::Subcommand)]
pub enum ExceptionsCmd {
    /// Every exception of the tenant (latest version of each).
    List(Common),
    /// Adds an exception; running pipelines apply it within
    /// --exceptions-poll-secs, before each partition's next record.
    Add(AddException),
    /// Ends an exception at an event-time instant (default now).
    Expire {
        #[command(flatten)]
        c: Common,
        /// The exception's id.
        id: String,
        /// When it ends (RFC 3339 or epoch ms); default now.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        at: Option<i64>,
    },
}

/// `posture exceptions add`.
#[derive(clap::Args)]
pub struct AddException {
    #[command(flatten)]
    c: Common,
    /// The control excepted.
    #[arg(long)]
    control: String,
    /// What it covers: tenant, device, group or tag.
    #[arg(long, value_parser = ["tenant", "device", "group", "tag"])]
    scope: String,
    /// The device id, group or tag (not for --scope tenant).
    #[arg(long, default_value = "")]
    scope_value: String,
    /// third_party_control or alternate_mitigation (credit the control),
    /// risk_accepted or planned_remediation (hide the device from recommendations).
    #[arg(long)]
    justification: String,
    /// Start (event time, RFC 3339 or epoch ms); default now.
    #[arg(long, value_name = "TIME")]
    starts_at: Option<String>,
    /// Expiry; default never.
    #[arg(long, value_name = "TIME")]
    expires_at: Option<String>,
    /// Who decided it.
    #[arg(long, env = "USER")]
    author: String,
    #[arg(long, default_value = "")]
    note: String,
    /// An id of your own (default: generated).
    #[arg(long)]
    id: Option<String>,
}

/// `posture exceptions`.
pub fn exceptions(cmd: ExceptionsCmd) -> Result<ExitCode> {
    let (c, list) = match cmd {
        ExceptionsCmd::List(c) => {
            let q = c.query()?;
            let v = c.block_on(q.exceptions(&c.tenant))?;
            (c, v)
        }
        ExceptionsCmd::Add(a) => {
            let q = a.c.query()?;
            let new = posture_query::NewException {
                id: a.id,
                control: a.control,
                scope: a.scope,
                scope_value: a.scope_value,
                justification: a.justification,
                starts_at: a.starts_at,
                expires_at: a.expires_at,
                author: a.author,
                note: a.note,
            };
            let e = a.c.block_on(q.add_exception(&a.c.tenant, new))?;
            (a.c, vec![e])
        }
        ExceptionsCmd::Expire { c, id, at } => {
            let q = c.query()?;
            let e = c.block_on(q.expire_exception(&c.tenant, &id, at))?;
            (c, vec![e])
        }
    };
    match c.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&list)?),
        Format::Csv => print!("{}", csv_out::exceptions(&list)),
        Format::Table => {
            println!("{} exception(s) of tenant {}", list.len(), c.tenant);
            for e in &list {
                let scope = if e.scope == "tenant" {
                    "whole tenant".to_string()
                } else {
                    format!("{} {}", e.scope, e.scope_value)
                };
                println!(
                    "  {:<24} {:<28} {:<22} {:<20} {} .. {}{}",
                    e.id,
                    e.control,
                    scope,
                    e.justification,
                    e.starts_at,
                    e.expires_at.as_deref().unwrap_or("never"),
                    if e.in_force_now { "  (in force)" } else { "" }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `posture tasks`.
#[derive(clap::Subcommand)]
pub enum TasksCmd {
    /// Every task of the tenant; open ones whose scope no longer fails are
    /// shown completed (the pipeline writes that within --tasks-confirm-secs,
    /// or `posture tasks confirm` now). Reads only. --format csv exports them.
    List(Common),
    /// Writes the system confirmation now: open tasks whose scope no longer
    /// fails become completed. Prints the tasks it completed.
    Confirm(Common),
    /// Creates a remediation task.
    Create(CreateTask),
    /// Time from creation to verified fix, and the overdue tasks.
    Report(Common),
}

/// `posture tasks create`.
#[derive(clap::Args)]
pub struct CreateTask {
    #[command(flatten)]
    c: Common,
    /// The control to fix.
    #[arg(long)]
    control: String,
    /// One device group (default: the whole tenant).
    #[arg(long)]
    group: Option<String>,
    /// Due date (RFC 3339 or epoch ms).
    #[arg(long, value_name = "TIME")]
    due: String,
    /// low, medium, high or critical.
    #[arg(long, default_value = "medium")]
    priority: String,
    #[arg(long, default_value = "")]
    notes: String,
    /// Who asks for it.
    #[arg(long, env = "USER")]
    author: String,
    /// An id of your own (default: generated).
    #[arg(long)]
    id: Option<String>,
    /// When the task was opened (RFC 3339 or epoch ms; default now), for a task recorded
    /// after the fact.
    #[arg(long, value_name = "TIME")]
    created_at: Option<String>,
}

/// `posture tasks`.
pub fn tasks(cmd: TasksCmd) -> Result<ExitCode> {
    let print = |c: &Common, v: &[posture_query::TaskView]| -> Result<()> {
        match c.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(v)?),
            Format::Csv => print!("{}", csv_out::tasks(v)),
            Format::Table => {
                println!("{} task(s) of tenant {}", v.len(), c.tenant);
                for t in v {
                    println!(
                        "  {:<24} {:<28} {:<10} {:<9} due {}{}{}",
                        t.id,
                        t.control,
                        t.group.as_deref().unwrap_or("(tenant)"),
                        t.status,
                        t.due,
                        t.hours_to_fix.map(|h| format!(", fixed in {h} h")).unwrap_or_default(),
                        if t.overdue { "  OVERDUE" } else { "" }
                    );
                }
            }
        }
        Ok(())
    };
    match cmd {
        TasksCmd::List(c) => {
            let q = c.query()?;
            let v = c.block_on(q.tasks(&c.tenant))?;
            print(&c, &v)?;
        }
        TasksCmd::Confirm(c) => {
            let q = c.query()?;
            let v = c.block_on(q.confirm_tasks(&c.tenant))?;
            print(&c, &v)?;
        }
        TasksCmd::Create(a) => {
            let q = a.c.query()?;
            let new = posture_query::NewTask {
                id: a.id,
                control: a.control,
                group: a.group,
                due: a.due,
                priority: Some(a.priority),
                notes: a.notes,
                author: a.author,
                created_at: a.created_at,
            };
            let t = a.c.block_on(q.create_task(&a.c.tenant, new))?;
            print(&a.c, &[t])?;
        }
        TasksCmd::Report(c) => {
            let q = c.query()?;
            let r = c.block_on(q.task_report(&c.tenant))?;
            match c.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                Format::Csv => print!("{}", csv_out::tasks(&r.overdue_tasks)),
                Format::Table => {
                    let h = |x: Option<f64>| x.map_or("-".to_string(), |h| format!("{h} h"));
                    println!(
                        "tenant {}: {} open, {} completed, {} overdue; time to verified fix: mean {}, longest {}",
                        r.tenant,
                        r.open,
                        r.completed,
                        r.overdue,
                        h(r.mean_hours_to_fix),
                        h(r.max_hours_to_fix)
                    );
                    print(&c, &r.overdue_tasks)?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
