//! `posture`: a live secure score for devices.
//!
//! One binary with subcommands. This crate holds only the command line and
//! output formatting; scoring lives in `posture-core`.

#![warn(missing_docs)]

/// mimalloc: the hot path makes many small, short-lived allocations (the
/// rows of each batch); measured with posture-bench, it beats the system
/// allocator by about 20% on the evaluator and on posture run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod alert_rules;
mod args;
mod baselines;
mod chart;
mod config;
mod demo;
mod evaluate;
mod limits;
mod output;
mod pipeline;
mod query;
mod serve;
mod simulate;
mod xccdf;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// posture computes a continuously updated secure score for devices from
/// configuration-change events, against security baselines.
#[derive(Parser)]
#[command(name = "posture", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// TOML configuration file: keys are long option names (e.g.
    /// `brokers = "k1:9092"`, `batch-rows = 20000`). Precedence: option,
    /// then POSTURE_* environment variable, then this file, then default.
    /// Secrets are not accepted in it.
    #[arg(long, global = true, env = "POSTURE_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Log format on stderr: human (one line per event) or json (one JSON
    /// object per line, with the span fields: partition, rows, ...).
    #[arg(long, global = true, env = "POSTURE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// Log filter in RUST_LOG syntax (e.g. "info", "posture_ingest=debug,warn");
    /// RUST_LOG, when set, wins.
    #[arg(
        long = "log",
        global = true,
        env = "POSTURE_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    log_filter: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// Structured logs on stderr (tracing), filtered by RUST_LOG or --log.
fn init_logging(format: LogFormat, filter: &str) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.trim().is_empty() => EnvFilter::try_new(f.trim()),
        _ => EnvFilter::try_new(filter),
    }
    .map_err(|e| format!("bad log filter: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_target(true).init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
    }
    Ok(())
}

#[derive(Subcommand)]
enum Command {
    /// Score a JSON-lines event file against baselines, without Kafka or
    /// ClickHouse (embedded mode), and print the score report.
    ///
    /// Example:
    ///   posture evaluate --baselines deploy/baselines --events fleet.jsonl
    ///   posture evaluate --baselines deploy/baselines --events - --format json --at 2026-11-22T10:00:00Z
    Evaluate(evaluate::Args),
    /// Work with baseline files.
    #[command(subcommand)]
    Baseline(BaselineCmd),
    /// Generate a synthetic fleet's events (devices, OS mix, drift,
    /// remediation waves, retirements, duplicates) as JSON lines.
    ///
    /// Example:
    ///   posture simulate --baselines deploy/baselines --devices 1000 --hours 48 --out fleet.jsonl
    Simulate(simulate::Args),
    /// The demo's scripted day against a running pipeline, told as it happens: streams a
    /// fleet's morning and a bad policy push to finance into Kafka, waits for the pipeline's
    /// score-drop alert, opens remediation tasks and an exception through the query API,
    /// streams the remediation waves, and waits until the pipeline has confirmed the tasks.
    /// scripts/demo starts the stack and the pipeline and runs it.
    ///
    /// Example:
    ///   posture demo --baselines deploy/baselines --topic demo --alerts-topic demo.alerts --dir .stack/demo
    Demo(Box<demo::Args>),
    /// Apply the ClickHouse schema (schemas/clickhouse, embedded) to the
    /// configured database; idempotent.
    ///
    /// Example:
    ///   POSTURE_CLICKHOUSE_URL=http://127.0.0.1:8123 posture migrate --database posture
    Migrate(args::MigrateArgs),
    /// The pipeline: consume Avro events from Kafka, evaluate them, write
    /// transitions and score deltas to ClickHouse, commit offsets.
    ///
    /// Example:
    ///   posture run --baselines deploy/baselines --brokers 127.0.0.1:9092 --database posture
    Run(Box<args::RunArgs>),
    /// The dashboard page and the query API, without consuming: for dashboards and analysts
    /// next to the pipeline (any number of instances, each reading ClickHouse). Open
    /// http://127.0.0.1:9465/ and log in with a token of the tokens file.
    ///
    /// Example:
    ///   posture serve --baselines deploy/baselines --api-tokens-file tokens.toml
    Serve(Box<args::ServeArgs>),
    /// The secure score of a tenant (or one group, one category) now or at
    /// an instant, read from ClickHouse; with and without exceptions.
    ///
    /// Example:
    ///   posture score --baselines deploy/baselines --tenant t1 --format json
    ///   posture score --baselines deploy/baselines --tenant t1 --group finance --at 2026-11-22T10:00:00Z
    Score(query::ScoreArgs),
    /// The score of a scope over a range, bucketed by hour or day (the
    /// "score over time" tile); --svg also draws it.
    ///
    /// Example:
    ///   posture history --baselines deploy/baselines --tenant t1 --from 2026-11-01T00:00:00Z --bucket day
    ///   posture history --baselines deploy/baselines --tenant t1 --bucket hour --svg score.svg
    History(query::HistoryArgs),
    /// Top recommendations of a scope, read from ClickHouse: the controls
    /// whose fix gains the most points, with misconfigured and applicable
    /// device counts.
    ///
    /// Example:
    ///   posture recommendations --baselines deploy/baselines --tenant t1 --top 5
    ///   posture recommendations --baselines deploy/baselines --tenant t1 --remediation software_update --format csv
    Recommendations(query::RecommendationsArgs),
    /// The devices of a control in a state (default FAIL: the misconfigured
    /// devices, the improvement opportunity's list), or one device's score
    /// and controls.
    ///
    /// Example:
    ///   posture devices --baselines deploy/baselines --tenant t1 --control win-fw-domain --format csv > fw.csv
    ///   posture devices --baselines deploy/baselines --tenant t1 --device dev-00042
    Devices(query::DevicesArgs),
    /// The exact score if a control were fixed (or excepted) on a scope.
    ///
    /// Example:
    ///   posture whatif --baselines deploy/baselines --tenant t1 --control win-fw-domain
    ///   posture whatif --baselines deploy/baselines --tenant t1 --control win-fw-domain --group finance --exception risk_accepted
    Whatif(query::WhatIfArgs),
    /// Exceptions (control x device, group, tag or tenant), stored in
    /// ClickHouse and applied by running pipelines without a restart.
    ///
    /// Example:
    ///   posture exceptions add --baselines deploy/baselines --tenant t1 --control win-fw-domain \
    ///       --scope group --scope-value servers --justification third_party_control --author alice
    ///   posture exceptions list --baselines deploy/baselines --tenant t1
    ///   posture exceptions expire --baselines deploy/baselines --tenant t1 exc-1
    #[command(subcommand)]
    Exceptions(query::ExceptionsCmd),
    /// Remediation tasks: create, list (CSV export), report. A task
    /// completes by itself once no device of its scope fails its control.
    ///
    /// Example:
    ///   posture tasks create --baselines deploy/baselines --tenant t1 --control win-fw-domain --due 2026-12-01T00:00:00Z
    ///   posture tasks list --baselines deploy/baselines --tenant t1 --format csv > tasks.csv
    ///   posture tasks report --baselines deploy/baselines --tenant t1
    #[command(subcommand)]
    Tasks(query::TasksCmd),
    /// Turn XCCDF TestResults (oscap xccdf eval --results, or ARF) into
    /// SNAPSHOT events: to a JSON-lines file, or to Kafka with --kafka.
    ///
    /// Example:
    ///   posture import-results results.xml --tenant t1 --output scan.jsonl
    ImportResults(xccdf::ImportResultsArgs),
}

#[derive(Subcommand)]
enum BaselineCmd {
    /// Check every baseline file in DIR and report each error as file:line.
    ///
    /// Exits 0 when all files are valid, 1 otherwise.
    Validate {
        /// Directory of baseline YAML files (*.yaml, *.yml).
        dir: std::path::PathBuf,
    },
    /// Import an XCCDF 1.2 benchmark (plain or in a SCAP data stream) and
    /// profile as a baseline whose checks read scanner results.
    ///
    /// Example:
    ///   posture baseline import-xccdf ssg-debian11-ds.xml --profile xccdf_org.ssgproject.content_profile_standard --output baselines/ssg.yaml
    ///   posture baseline import-xccdf /usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml --list-profiles
    ImportXccdf(xccdf::ImportArgs),
    /// Per-device and scope scores under posture's model and the XCCDF
    /// models of the baselines that choose them.
    ///
    /// Example:
    ///   posture baseline score-xccdf --baselines baselines --events scan.jsonl
    ScoreXccdf(xccdf::ScoreArgs),
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(path) = config::config_path(&argv) {
        use clap::CommandFactory;
        match config::read(&path, &config::known_options(&Cli::command())) {
            Ok(settings) => config::apply(settings),
            Err(e) => {
                eprintln!("posture: error: {e:#}");
                return ExitCode::from(2);
            }
        }
    }
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_format, &cli.log_filter) {
        eprintln!("posture: error: {e}");
        return ExitCode::from(2);
    }
    // A printing command piped into `head` stops quietly when the pipe closes, as Unix tools do
    // (SIGPIPE's default action), instead of panicking in println!. `run` keeps Rust's default
    // (SIGPIPE ignored, a write error instead): a service must not die because a log pipe closed.
    #[cfg(unix)]
    if !matches!(cli.command, Command::Run(_) | Command::Serve(_)) {
        // SAFETY: restores a signal's default disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Evaluate(args) => evaluate::run(args),
        Command::Baseline(BaselineCmd::Validate { dir }) => baselines::validate(&dir),
        Command::Baseline(BaselineCmd::ImportXccdf(args)) => xccdf::import_xccdf(args),
        Command::Baseline(BaselineCmd::ScoreXccdf(args)) => xccdf::score_xccdf(args),
        Command::ImportResults(args) => xccdf::import_results(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Demo(args) => demo::run(*args),
        Command::Migrate(args) => pipeline::migrate(args),
        Command::Run(args) => pipeline::run(*args),
        Command::Serve(args) => serve::serve(*args),
        Command::Score(args) => query::score(args),
        Command::Recommendations(args) => query::recommendations(args),
        Command::History(args) => query::history(args),
        Command::Devices(args) => query::devices(args),
        Command::Whatif(args) => query::whatif(args),
        Command::Exceptions(cmd) => query::exceptions(cmd),
        Command::Tasks(cmd) => query::tasks(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("posture: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
