//! `posture-history-bench`: what a trend query costs as history grows (issue 15, SPEC section 7's
//! "trend queries at any history size").
//!
//! For each history length it synthesizes, directly in ClickHouse (server-side `INSERT ...
//! SELECT FROM numbers()`), the trend store of a fleet of `--devices` devices on the 300-control
//! baseline of the evaluator benchmark in 20 groups: every (scope, control) cell changes every hour
//! (the worst case for the rollup: a fleet that drifts everywhere, all the time), rolled up to
//! days, 30-day blocks and 360-day eras as the sink does, the cut rows of 8 partitions, and one
//! hour of raw-log rows (`transitions` with their scope deltas) for a mid-hour `--at` (the tail).
//! Then it times, through the query layer the CLI and the API use: `score` now, `score --at` a
//! past mid-hour instant, a 365-day daily `history`, a week of hourly `history`, and
//! `recommendations`: the first run after the server's caches are dropped (cold) and the median
//! of `--runs` (warm).
//!
//! Side by side, the previous release's model (`--old-model`, on by default): the same history as
//! `score_deltas` rows, one per (scope, control, hour) carrying that hour's count deltas (the
//! fewest raw rows this history can have: a real fleet has one per scope per transition), read by
//! the queries that release ran: `control_counts_at` for score, `--at` and recommendations,
//! `score_series` for the histories, over `score_deltas` (each with `--old-timeout-secs`).
//!
//! Needs the test stack (`scripts/stack up`) or any ClickHouse at $POSTURE_CLICKHOUSE_URL.

use anyhow::{Context, Result};
use clap::Parser;
use posture_query::{Bucket, Filters, Query, Scope};
use posture_sink::queries::Param;
use std::sync::Arc;
use std::time::Instant;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// History starts here: 2020-01-01T00:00:00Z.
const START: i64 = 1_577_836_800_000;
const SCOPES: i64 = 21;
const CONTROLS: i64 = 300;

/// Times the trend queries over histories of several lengths.
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// History lengths in 30-day months, comma-separated (x1, x4, x16 by default).
    #[arg(long, value_delimiter = ',', default_value = "3,12,48")]
    months: Vec<i64>,
    /// Devices of the fleet (sets the counts; the row count does not depend on it).
    #[arg(long, default_value_t = 1_000_000)]
    devices: i64,
    /// Raw-log rows (transitions) in the hour of the `--at` instant (the tail read from the raw
    /// log), rounded down to a multiple of 600 (they sum to zero per control).
    #[arg(long, default_value_t = 100_200)]
    tail_rows: i64,
    /// More raw-log rows in the 5 days before the tail hour (the same month partition, mostly):
    /// what a mid-hour `--at` scans besides its hour, as the raw log is ordered by device.
    #[arg(long, default_value_t = 0)]
    month_rows: i64,
    /// Warm runs per query (the median is reported).
    #[arg(long, default_value_t = 15)]
    runs: usize,
    /// Keep the databases afterwards.
    #[arg(long)]
    keep: bool,
    /// Also time the previous release's model (score_deltas rows and the queries over them).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    old_model: bool,
    /// Warm runs per query of the old model (its queries take seconds).
    #[arg(long, default_value_t = 5)]
    old_runs: usize,
    /// An old-model query slower than this is reported as not answering (and not run again).
    #[arg(long, default_value_t = 120)]
    old_timeout_secs: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let url = std::env::var("POSTURE_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let server = clickhouse::Client::default().with_url(&url).with_validation(false);
    let version: String = server
        .query("SELECT version()")
        .fetch_one()
        .await
        .with_context(|| format!("no ClickHouse at {url}: start the stack with scripts/stack up"))?;
    let catalog = Arc::new(posture_bench::fleet::catalog());
    println!(
        "history benchmark on ClickHouse {version}: {} devices, {CONTROLS} controls, 20 groups (21 scopes), \
         every cell changing every hour; {} tail rows, {} more raw-log rows in the 5 days before; median of {} warm runs",
        args.devices, args.tail_rows, args.month_rows, args.runs
    );
    println!(
        "| history | score_rollup rows | score now | score --at (mid-hour) | 365-day daily history | week hourly history | recommendations |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut old_lines = Vec::new();
    for &months in &args.months {
        let db = format!("history_bench_{months}m_{}", std::process::id());
        posture_sink::migrate(&server, &db).await?;
        let client = server.clone().with_database(&db);
        let started = Instant::now();
        let end = START + months * 30 * DAY;
        synthesize(&client, &args, end).await?;
        let rows: u64 = client.query("SELECT count() FROM score_rollup").fetch_one().await?;
        eprintln!(
            "  {months} months: {rows} rollup rows synthesized in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        let q = Query::new(client.clone(), catalog.clone());
        let tenant = Scope::tenant("t1");
        let at_past = end - 10 * DAY + 30 * 60_000 + 17; // mid-hour: the tail is read
        let now = end + DAY;
        let mut cells = Vec::new();
        cells.push(
            time(&server, args.runs, || async {
                q.score(&tenant, None, now).await.map(|_| ())
            })
            .await?,
        );
        cells.push(
            time(&server, args.runs, || async {
                q.score(&tenant, None, at_past).await.map(|_| ())
            })
            .await?,
        );
        cells.push(
            time(&server, args.runs, || async {
                q.history(&tenant, None, end - 365 * DAY, end, Bucket::Day)
                    .await
                    .map(|_| ())
            })
            .await?,
        );
        cells.push(
            time(&server, args.runs, || async {
                q.history(&tenant, None, end - 7 * DAY, end, Bucket::Hour)
                    .await
                    .map(|_| ())
            })
            .await?,
        );
        cells.push(
            time(&server, args.runs, || async {
                q.recommendations(&tenant, Filters::default(), now).await.map(|_| ())
            })
            .await?,
        );
        // The figures are exact, not only fast: the score now equals the counts summed in SQL.
        check(&client, &q, &tenant, now).await?;
        if args.old_model {
            let started = Instant::now();
            let old_rows = synthesize_old(&client).await?;
            eprintln!(
                "  {months} months: {old_rows} score_deltas rows (the old model) synthesized in {:.0} s",
                started.elapsed().as_secs_f64()
            );
            check_old(&client, &q, &tenant, now).await?;
            let mut old = Vec::new();
            let counts = |at: i64| old_query("control_counts_at", vec![("at_ms", Param::Int(at))]);
            let series = |from: i64, step: i64| {
                old_query(
                    "score_series",
                    vec![
                        ("from_ms", Param::Int(from)),
                        ("to_ms", Param::Int(end)),
                        ("step_ms", Param::Int(step)),
                    ],
                )
            };
            for sql in [
                counts(now)?,
                counts(at_past)?,
                series(end - 365 * DAY, DAY)?,
                series(end - 7 * DAY, HOUR)?,
                counts(now)?,
            ] {
                old.push(time_old(&server, &client, &args, &sql).await?);
            }
            old_lines.push(format!(
                "| {months} months, old model | {} score_deltas | {} |",
                posture_bench::report::grouped(old_rows as f64),
                old.join(" | ")
            ));
        }
        println!(
            "| {months} months | {} | {} |",
            posture_bench::report::grouped(rows as f64),
            cells
                .iter()
                .map(|(cold, warm)| format!("{warm:.1} ms (cold {cold:.1})"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        if !args.keep {
            server.query(&format!("DROP DATABASE {db}")).execute().await?;
        }
    }
    for line in old_lines {
        println!("{line}");
    }
    Ok(())
}

/// The previous release's raw log for the same history: one `score_deltas` row per level-1
/// rollup row (a scope, control and hour, with its count deltas, at the hour's start) and one per
/// scope delta of the raw tail. Returns the rows written.
async fn synthesize_old(client: &clickhouse::Client) -> Result<u64> {
    client
        .query(
            "INSERT INTO score_deltas SELECT tenant, group, category, control, control_points, \
             toDateTime(intDiv(bucket_ms, 1000)), bucket_ms, 0, 0, 0, 0, toInt32(pass_with), toInt32(fail_with), \
             toInt32(hidden_with), toInt32(pass_without), toInt32(fail_without), 0, 0, toUInt32(0) \
             FROM score_rollup WHERE level = 1",
        )
        .execute()
        .await
        .context("old model: the hours")?;
    client
        .query(
            "INSERT INTO score_deltas SELECT tenant, g, category, control, control_points, event_time, \
             event_time_ms, 0, 0, 0, 0, toInt32(p_w), toInt32(f_w), toInt32(h_w), toInt32(p_wo), toInt32(f_wo), \
             source_partition, source_offset, seq FROM transitions \
             ARRAY JOIN scope_groups AS g, scope_pass_with AS p_w, scope_fail_with AS f_w, \
             scope_hidden_with AS h_w, scope_pass_without AS p_wo, scope_fail_without AS f_wo",
        )
        .execute()
        .await
        .context("old model: the tail")?;
    client.query("OPTIMIZE TABLE score_deltas").execute().await.ok();
    Ok(client.query("SELECT count() FROM score_deltas").fetch_one().await?)
}

/// A documented query as the previous release ran it for the benchmark's tenant scope: over
/// `score_deltas` itself (today's text reads the view `scope_deltas`, old and new rows alike).
fn old_query(name: &str, mut params: Vec<(&str, Param)>) -> Result<String> {
    params.extend([
        ("tenant", Param::Str("t1".into())),
        ("group", Param::Str(String::new())),
        ("category", Param::Str(String::new())),
    ]);
    let q = posture_sink::queries::get(name).with_context(|| format!("{name} is not in queries.sql"))?;
    let wanted = q.params();
    params.retain(|(n, _)| wanted.iter().any(|(w, _)| w == n));
    let sql = q.render(&params)?;
    anyhow::ensure!(sql.contains("FROM scope_deltas"), "{name} no longer reads scope_deltas");
    Ok(sql.replace("FROM scope_deltas", "FROM score_deltas"))
}

/// "warm ms (cold ms)" of an old-model query, or what it did instead of answering in time.
async fn time_old(server: &clickhouse::Client, client: &clickhouse::Client, args: &Args, sql: &str) -> Result<String> {
    let limit = std::time::Duration::from_secs(args.old_timeout_secs);
    let run = || async {
        let t = Instant::now();
        match tokio::time::timeout(limit, async {
            client.query_raw(sql).fetch_bytes("TSV")?.collect().await
        })
        .await
        {
            Ok(Ok(_)) => Ok(Some(t.elapsed().as_secs_f64() * 1e3)),
            Ok(Err(e)) => Err(anyhow::Error::from(e).context("an old-model query")),
            Err(_) => Ok(None),
        }
    };
    for cache in ["MARK CACHE", "UNCOMPRESSED CACHE"] {
        server.query(&format!("SYSTEM DROP {cache}")).execute().await.ok();
    }
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    let Some(cold) = run().await? else {
        return Ok(format!("no answer in {} s", args.old_timeout_secs));
    };
    let mut warm = Vec::new();
    for _ in 0..args.old_runs.max(1) {
        match run().await? {
            Some(ms) => warm.push(ms),
            None => return Ok(format!("no answer in {} s (cold {cold:.0} ms)", args.old_timeout_secs)),
        }
    }
    warm.sort_by(f64::total_cmp);
    Ok(format!("{:.1} ms (cold {cold:.1})", warm[warm.len() / 2]))
}

/// The old model answers what the new one does: its counts at `now` equal the trend store's.
async fn check_old(client: &clickhouse::Client, q: &Query, scope: &Scope, now: i64) -> Result<()> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Counts {
        control: String,
        _category: String,
        pass_w: i64,
        fail_w: i64,
        _hidden_w: i64,
        _pass_wo: i64,
        _fail_wo: i64,
    }
    let sql = old_query("control_counts_at", vec![("at_ms", Param::Int(now))])?;
    let rows: Vec<Counts> = client.query_raw(&sql).fetch_all().await?;
    let (cells, _) = q.cells_with_cut(scope, now).await?;
    anyhow::ensure!(!rows.is_empty(), "the old model has no counts");
    for r in rows {
        let c = q.catalog().control_idx(&r.control).context("control")?;
        let k = cells[c as usize].counts;
        anyhow::ensure!(
            (k[0], k[1]) == (r.pass_w, r.fail_w),
            "control {}: the old model says {:?}, the trend store {:?}",
            r.control,
            (r.pass_w, r.fail_w),
            (k[0], k[1])
        );
    }
    Ok(())
}

/// The trend store of `months` of history ending at `end`: level 1 directly, the other levels
/// rolled up from it as the sink rolls up its hours; the cut rows; a raw tail hour.
async fn synthesize(client: &clickhouse::Client, args: &Args, end: i64) -> Result<()> {
    let hours = (end - START) / HOUR;
    let cells = SCOPES * CONTROLS;
    // Each scope's devices: the tenant all of them, each group a twentieth. The first hour puts
    // 70% of them on PASS; every later hour moves up to 5 between PASS and FAIL either way.
    let sql = format!(
        "INSERT INTO score_rollup \
         SELECT 't1', if(s = 0, '', concat('group-', toString(s - 1))), toUInt8(1), {START} + h * {HOUR}, \
           ['application', 'os', 'network', 'accounts', 'security_controls'][c % 5 + 1], \
           concat('c', toString(c)), toInt64(1 + c % 10) * 1000000, \
           if(h = 0, intDiv(n_dev * 7, 10), d), if(h = 0, n_dev - intDiv(n_dev * 7, 10), -d), toInt64(0), \
           if(h = 0, intDiv(n_dev * 7, 10), d), if(h = 0, n_dev - intDiv(n_dev * 7, 10), -d), \
           toInt64(0), toInt64(0), toUInt32(0) \
         FROM (SELECT number, intDiv(number, {cells}) AS h, intDiv(number, {CONTROLS}) % {SCOPES} AS s, \
                      number % {CONTROLS} AS c, toInt64(if(s = 0, {dev}, intDiv({dev}, 20))) AS n_dev, \
                      toInt64(cityHash64(number) % 11) - 5 AS d \
               FROM numbers({total}))",
        dev = args.devices,
        total = hours * cells
    );
    client.query(&sql).execute().await.context("level 1")?;
    for (level, size) in [(2, DAY), (3, 30 * DAY), (4, 360 * DAY)] {
        client
            .query(&format!(
                "INSERT INTO score_rollup SELECT tenant, group, toUInt8({level}), intDiv(bucket_ms, {size}) * {size} AS b, \
                 category, control, control_points, sum(pass_with), sum(fail_with), sum(hidden_with), \
                 sum(pass_without), sum(fail_without), toInt64(0), toInt64(0), toUInt32(0) \
                 FROM score_rollup WHERE level = 1 GROUP BY tenant, group, b, category, control, control_points"
            ))
            .execute()
            .await
            .with_context(|| format!("level {level}"))?;
    }
    // 8 partitions, all past the end.
    client
        .query(&format!(
            "INSERT INTO score_rollup SELECT '', '', toUInt8(0), number, '', '', 0, 0, 0, 0, 0, 0, \
             toInt64(1000000000), toInt64({end}), toUInt32(8) FROM numbers(8)"
        ))
        .execute()
        .await?;
    // The raw log of the tail hour (10 days before the end): transitions rows carrying their
    // tenant-scope deltas, as the sink writes them, below the cut, summing to zero per control so
    // the figures stay the rollup's.
    let tail_hour = end - 10 * DAY;
    let tail_time = format!("{tail_hour} + (number * 7919) % {HOUR}");
    let sgn = format!("if(intDiv(number, {CONTROLS}) % 2 = 0, 1, -1)");
    // Whole pairs of +1/-1 per control, so the tail sums to zero (the old model reads it too).
    let tail_rows = args.tail_rows / (2 * CONTROLS) * (2 * CONTROLS);
    insert_raw_log(client, args, tail_rows, 0, &tail_time, &sgn).await?;
    if args.month_rows > 0 {
        // Zero deltas, before the tail hour: read by nothing, scanned by whatever scans too much.
        let before = format!("{tail_hour} - 1 - (number * 7919) % ({DAY} * 5)");
        insert_raw_log(client, args, args.month_rows, 1, &before, "0").await?;
    }
    // Let the server merge what it merges on its own, as it does in production.
    client.query("OPTIMIZE TABLE score_rollup").execute().await.ok();
    Ok(())
}

/// `rows` rows of `transitions` as the sink writes them (tenant scope only): event time `time`
/// and scope deltas +`sgn` PASS / -`sgn` FAIL (SQL over `number`), `seq` = `seq`.
async fn insert_raw_log(
    client: &clickhouse::Client,
    args: &Args,
    rows: i64,
    seq: u32,
    time: &str,
    sgn: &str,
) -> Result<()> {
    client
        .query(&format!(
            "INSERT INTO transitions (tenant, device, control, category, event_time, event_time_ms, \
               source_partition, source_offset, seq, control_points, scope_groups, scope_pass_with, \
               scope_fail_with, scope_hidden_with, scope_pass_without, scope_fail_without, \
               scope_points_with, scope_points_without) \
             SELECT 't1', concat('d', toString(number % {dev})), concat('c', toString(c)), \
               ['application', 'os', 'network', 'accounts', 'security_controls'][c % 5 + 1], \
               toDateTime(intDiv(t, 1000)), t, toInt32(number % 8), toInt64(number), toUInt32({seq}), \
               toInt64(1 + c % 10) * 1000000, [''], [toInt8(sgn)], [toInt8(-sgn)], [toInt8(0)], \
               [toInt8(sgn)], [toInt8(-sgn)], [toInt64(0)], [toInt64(0)] \
             FROM (SELECT number, number % {CONTROLS} AS c, {time} AS t, {sgn} AS sgn FROM numbers({rows}))",
            dev = args.devices
        ))
        .execute()
        .await?;
    Ok(())
}

/// (cold ms, warm median ms) of `f`: cold after dropping the server's caches.
async fn time<F, Fut>(server: &clickhouse::Client, runs: usize, f: F) -> Result<(f64, f64)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), posture_query::QueryError>>,
{
    for cache in ["MARK CACHE", "UNCOMPRESSED CACHE"] {
        server.query(&format!("SYSTEM DROP {cache}")).execute().await.ok();
    }
    // The OS page cache too, where allowed (root on the test machine).
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    let t = Instant::now();
    f().await?;
    let cold = t.elapsed().as_secs_f64() * 1e3;
    let mut warm = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f().await?;
        warm.push(t.elapsed().as_secs_f64() * 1e3);
    }
    warm.sort_by(f64::total_cmp);
    Ok((cold, warm[warm.len() / 2]))
}

/// The score now from the trend store equals the level-1 rows summed in SQL (every delta).
async fn check(client: &clickhouse::Client, q: &Query, scope: &Scope, now: i64) -> Result<()> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Sum {
        control: String,
        pass: i64,
        fail: i64,
    }
    let sums: Vec<Sum> = client
        .query(
            "SELECT control, sum(pass_with) AS pass, sum(fail_with) AS fail FROM score_rollup \
             WHERE tenant = 't1' AND group = '' AND level = 1 GROUP BY control",
        )
        .fetch_all()
        .await?;
    let (cells, _) = q.cells_with_cut(scope, now).await?;
    for s in sums {
        let c = q.catalog().control_idx(&s.control).context("control")?;
        let k = cells[c as usize].counts;
        anyhow::ensure!(
            (k[0], k[1]) == (s.pass, s.fail),
            "control {}: the trend store says {:?}, the hours sum to {:?}",
            s.control,
            (k[0], k[1]),
            (s.pass, s.fail)
        );
    }
    Ok(())
}
