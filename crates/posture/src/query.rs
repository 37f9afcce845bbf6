//! `posture score` and `posture recommendations`: the score report read from
//! ClickHouse.
//!
//! Both run the documented `control_counts_at` query (schemas/clickhouse/
//! queries.sql): per control, the scope's PASS/FAIL device counts summed
//! from the count deltas up to the instant. The points, maxima, percents and
//! points gained are then computed by the core's report functions, the same
//! code embedded mode (`posture evaluate`) uses, so the figures are equal.

use crate::output::{self, Format};
use crate::pipeline::ClickHouseArgs;
use anyhow::{Context, Result};
use posture_core::engine::{count, ScopeCell, ScopeKey};
use posture_core::report::{self, Selection};
use posture_core::time::{format_time, parse_time};
use posture_core::{Catalog, Category, ControlIdx, Remediation};
use posture_sink::queries;
use std::path::PathBuf;
use std::process::ExitCode;

/// What both query commands take.
#[derive(clap::Args)]
pub struct QueryArgs {
    /// Directory of baseline YAML files (titles, points, categories of the
    /// controls); the same baselines the pipeline runs with.
    #[arg(long, env = "POSTURE_BASELINES", value_name = "DIR")]
    baselines: PathBuf,
    /// Tenant to report.
    #[arg(long, env = "POSTURE_TENANT")]
    tenant: String,
    /// Report one device group of the tenant.
    #[arg(long)]
    group: Option<String>,
    /// Report one category: application, os, network, accounts, security_controls.
    #[arg(long, value_parser = crate::evaluate::parse_category)]
    category: Option<Category>,
    /// Score as of this event-time instant (RFC 3339 or epoch milliseconds);
    /// default: now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    at: Option<i64>,
    /// Output format (csv: the recommendations list).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(flatten)]
    ch: ClickHouseArgs,
}

/// `posture recommendations` adds a remediation filter and a length.
#[derive(clap::Args)]
pub struct RecommendationsArgs {
    #[command(flatten)]
    q: QueryArgs,
    /// Only recommendations of this remediation type: configuration_change, software_update.
    #[arg(long, value_parser = crate::evaluate::parse_remediation)]
    remediation: Option<Remediation>,
    /// How many recommendations to print (default: 10 in the table, all in
    /// JSON and CSV).
    #[arg(long)]
    top: Option<usize>,
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct CountsRow {
    control: String,
    #[allow(dead_code)]
    category: String,
    pass_w: i64,
    fail_w: i64,
    hidden_w: i64,
    pass_wo: i64,
    fail_wo: i64,
}

/// The scope's cells read from ClickHouse, indexed by control.
struct Cells {
    cells: Vec<ScopeCell>,
    at_ms: i64,
}

fn read_cells(q: &QueryArgs, catalog: &Catalog) -> Result<Cells> {
    let at_ms = q.at.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    });
    let sql = queries::get("control_counts_at")
        .context("queries.sql has no control_counts_at query")?
        .render(&[
            ("tenant", q.tenant.as_str().into()),
            ("group", q.group.clone().unwrap_or_default().into()),
            ("at_ms", at_ms.into()),
        ])?;
    let client = q.ch.client()?.with_database(q.ch.database());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let rows: Vec<CountsRow> = rt.block_on(client.query(&sql).fetch_all()).with_context(|| {
        format!(
            "reading control counts from {} database {}",
            q.ch.url(),
            q.ch.database()
        )
    })?;
    let mut cells = vec![ScopeCell::default(); catalog.controls.len()];
    let mut unknown = Vec::new();
    for r in rows {
        match catalog.control_idx(&r.control) {
            Some(c) => {
                let k = &mut cells[c as usize].counts;
                k[count::EFF_PASS] = r.pass_w;
                k[count::EFF_FAIL] = r.fail_w;
                k[count::EFF_HIDDEN] = r.hidden_w;
                k[count::RAW_PASS] = r.pass_wo;
                k[count::RAW_FAIL] = r.fail_wo;
            }
            None => unknown.push(r.control),
        }
    }
    if !unknown.is_empty() {
        eprintln!(
            "posture: warning: {} control(s) in ClickHouse are not in the baselines and are left out: {}",
            unknown.len(),
            unknown.join(", ")
        );
    }
    Ok(Cells { cells, at_ms })
}

fn selection(q: &QueryArgs, remediation: Option<Remediation>) -> Selection {
    Selection {
        // The cells are already the scope's; the key is not looked at.
        scope: ScopeKey { tenant: 0, group: 0 },
        category: q.category,
        remediation,
    }
}

/// `posture score`.
pub fn score(q: QueryArgs) -> Result<ExitCode> {
    let catalog = crate::baselines::load_or_fail(&q.baselines)?;
    let cells = read_cells(&q, &catalog)?;
    let sel = selection(&q, None);
    let cell = |c: ControlIdx| cells.cells[c as usize];
    let s = report::score_of(
        cell,
        &catalog,
        &sel,
        &q.tenant,
        q.group.as_deref(),
        Some(format_time(cells.at_ms)),
    );
    match q.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&s)?),
        Format::Table => print!("{}", output::score_table(&s, None)),
        Format::Csv => print!("{}", output::score_csv(&s)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `posture recommendations`.
pub fn recommendations(a: RecommendationsArgs) -> Result<ExitCode> {
    let catalog = crate::baselines::load_or_fail(&a.q.baselines)?;
    let cells = read_cells(&a.q, &catalog)?;
    let sel = selection(&a.q, a.remediation);
    let mut recs = report::recommendations_of(|c| cells.cells[c as usize], &catalog, &sel);
    if let Some(top) = a.top {
        recs.truncate(top);
    }
    match a.q.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&recs)?),
        Format::Csv => print!("{}", output::recommendations_csv(&recs)),
        Format::Table => print!("{}", output::recommendations_table(&recs, a.top.unwrap_or(10))),
    }
    Ok(ExitCode::SUCCESS)
}
