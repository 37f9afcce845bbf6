//! `posture demo`: the demo's scripted day ([`posture_fleet::story`]) played against a running
//! pipeline, told as it happens.
//!
//! It plays the fleet and the security team; `posture run` (started beside it, as
//! `scripts/demo` does) is the product:
//!
//! 1. streams the morning and a bad policy push to finance into Kafka, and pauses;
//! 2. waits for the pipeline's score-drop alert on the alerts topic and prints it with its
//!    largest causes;
//! 3. opens remediation tasks for the group's top recommendations through the query API, and
//!    adds an exception for the servers (starting in the afternoon);
//! 4. streams the rest of the day (the remediation waves), waits until the pipeline has
//!    consumed every record and confirmed every task, and prints the scores before, during and
//!    after.
//!
//! It writes the events (`events.jsonl`, for embedded mode), the exception
//! (`exceptions.yaml`) and what happened (`story.json`) into `--dir`.

use crate::simulate::{produce, write_jsonl, KafkaTarget};
use anyhow::{bail, Context, Result};
use posture_core::time::{format_time, parse_time};
use posture_fleet::{Fleet, Story, StorySpec};
use rdkafka::message::Message;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Directory of baseline YAML files: the same baselines `posture run` runs with.
    #[arg(long, env = "POSTURE_BASELINES", value_name = "DIR")]
    baselines: PathBuf,
    /// Number of devices of the fleet (one tenant, t1).
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Random seed; the same seed gives the same events (`posture simulate --story` writes them).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Event time of the first snapshot (RFC 3339 or epoch ms).
    #[arg(long, default_value = "2026-11-01T00:00:00Z", value_parser = parse_time)]
    start: i64,
    /// Input topic of the pipeline (created with --partitions if missing).
    #[arg(long, default_value = "posture.config-changes")]
    topic: String,
    /// Partitions of the topic when the demo creates it.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// The pipeline's score-drop alerts topic (its --alerts-topic).
    #[arg(long, default_value = "posture.alerts")]
    alerts_topic: String,
    /// Produce at most this many events per second (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 1200.0, value_name = "EVENTS_PER_SEC")]
    rate: f64,
    /// At most this many records per producer batch. Batches of several records are safe here
    /// because the demo's pipeline never restarts (on the test broker a consumer resumes only
    /// at a batch boundary: see `posture simulate --help`).
    #[arg(long, default_value_t = 100, value_name = "N")]
    batch_records: u32,
    /// Start the pipeline without its score-delta topic (no ScoreDelta records to Kafka: one per
    /// transition, the test broker's largest load at scale); the scores in ClickHouse are the same.
    #[arg(long)]
    no_score_deltas: bool,
    /// Address of the pipeline's HTTP port (its --http-addr): the query API the demo opens
    /// tasks and the exception through, and the dashboard page.
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR")]
    http_addr: String,
    /// Where the events, the exception and the story's figures are written.
    #[arg(long, default_value = ".stack/demo", value_name = "DIR")]
    dir: PathBuf,
    /// How long to wait for the pipeline at each step (the alert, catching up, the tasks).
    /// Default: 180 s, and a second more per 5,000 events of the story.
    #[arg(long, value_name = "SECS")]
    wait_secs: Option<u64>,
    #[command(flatten)]
    kafka: crate::args::KafkaArgs,
}

const TENANT: &str = "t1";
const HOUR: i64 = 3_600_000;

pub fn run(args: Args) -> Result<ExitCode> {
    let cat = crate::baselines::load_or_fail(&args.baselines)?;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;

    let security = args.kafka.security.properties()?;
    let target = KafkaTarget {
        brokers: &args.kafka.brokers,
        topic: &args.topic,
        partitions: args.partitions,
        schema_id: 1,
        security: security.clone(),
    };
    crate::simulate::ensure_topic(&target)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut pipeline = Pipeline::start(&args)?;
    let api = Api {
        base: format!("http://{}", args.http_addr),
        token: pipeline.token.clone(),
        client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?,
    };
    rt.block_on(pipeline.ready(&api))?;

    let mut rng = fastrand::Rng::with_seed(args.seed);
    let fleet = Fleet::new(&cat, args.devices, 1, &mut rng);
    let story = posture_fleet::story(&cat, &fleet, &StorySpec::new(args.start), &mut rng);
    let events_path = args.dir.join("events.jsonl");
    write_jsonl(&events_path, story.events(&cat, &fleet, 0..story.len()))?;
    let clock = |t: i64| clock(args.start, t);
    let wait = Duration::from_secs(args.wait_secs.unwrap_or(180 + story.len() as u64 / 5_000));

    // 1. The morning and the push.
    say(
        &format!("{} -> {}", clock(args.start), clock(story.pause_at)),
        &format!(
            "streaming {} of the day's {} events into {}: {} devices' snapshots, the morning's drift, and at {} a policy push to {}: {} devices get their {} network and security-control settings turned off",
            story.pause_index,
            story.len(),
            args.topic,
            args.devices,
            clock(story.push.at),
            story.group,
            story.push.devices,
            story.push.controls.len()
        ),
    );
    let mut last_offsets = produce(
        "          posture demo",
        &target,
        args.rate,
        args.batch_records,
        story.events(&cat, &fleet, 0..story.pause_index),
    )?;

    // 2. The alert.
    say(
        &clock(story.pause_at),
        &format!(
            "the stream pauses; waiting for the pipeline's score-drop alert on {}",
            args.alerts_topic
        ),
    );
    let alert = wait_for_alert(&args.kafka.brokers, &security, &args.alerts_topic, &story, wait)?;
    say(
        &clock(alert.at),
        &format!(
            "ALERT from the pipeline: {} {}fell {:.2}% -> {:.2}% within {} minutes; largest causes (device x control, points lost):",
            alert.tenant,
            alert.group.as_deref().map(|g| format!("group {g} ")).unwrap_or_default(),
            alert.old_percent,
            alert.new_percent,
            alert.window_ms / 60_000
        ),
    );
    for c in alert.causes.iter().take(5) {
        println!(
            "          {:<12} {:<34} -{:.4} points",
            c.device, c.control, c.points_lost
        );
    }
    if alert.causes.len() > 5 {
        let devices: std::collections::BTreeSet<&str> = alert.causes.iter().map(|c| c.device.as_str()).collect();
        let controls: std::collections::BTreeSet<&str> = alert.causes.iter().map(|c| c.control.as_str()).collect();
        println!(
            "          ... {} causes in the alert, over {} devices and {} control(s)",
            alert.causes.len(),
            devices.len(),
            controls.len()
        );
    }

    // 3. Tasks for the group's top recommendations; an exception for the servers.
    let group = alert.group.clone().unwrap_or_else(|| story.group.clone());
    let at = alert.at.to_string();
    let recs = rt.block_on(api.get(
        &format!("/api/v1/tenants/{TENANT}/recommendations"),
        &[("group", group.as_str()), ("top", "3"), ("at", at.as_str())],
    ))?;
    let recs = recs.as_array().cloned().unwrap_or_default();
    if recs.is_empty() || recs.iter().any(|r| !r["control"].is_string()) {
        bail!(
            "no recommendations for group {group} at {} from the API: {recs:?}",
            format_time(alert.at)
        );
    }
    say(
        &clock(alert.at),
        &format!("top recommendations for {group} now, through the API:"),
    );
    let mut tasks = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let control = r["control"].as_str().expect("checked above");
        let due = format_time(alert.at + (i as i64 + 1) * 24 * HOUR);
        let body = json!({
            "control": control,
            "group": group,
            "due": due,
            "priority": if i == 0 { "critical" } else { "high" },
            "notes": format!("opened from the score-drop alert of {}: {:.2}% -> {:.2}%", format_time(alert.at), alert.old_percent, alert.new_percent),
            "created_at": format_time(alert.at),
        });
        let task = rt.block_on(api.post(&format!("/api/v1/tenants/{TENANT}/tasks"), &body))?;
        println!(
            "          {}. {:<34} +{} points, {} devices misconfigured -> task {} ({}, due {})",
            i + 1,
            control,
            r["points_gained"],
            r["misconfigured_devices"],
            task["id"].as_str().unwrap_or_default(),
            task["priority"].as_str().unwrap_or_default(),
            task["due"].as_str().unwrap_or_default()
        );
        tasks.push(json!({ "task": task, "recommendation": r }));
    }
    let task_controls: Vec<&str> = recs.iter().filter_map(|r| r["control"].as_str()).collect();
    let servers = rt.block_on(api.get(
        &format!("/api/v1/tenants/{TENANT}/recommendations"),
        &[("group", "servers"), ("top", "10"), ("at", at.as_str())],
    ))?;
    let excepted = servers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["control"].as_str())
        .find(|c| !task_controls.contains(c))
        .context("the servers group has no recommendation to except")?
        .to_string();
    let exc_start = story.pause_at + 3 * HOUR + 30 * 60_000;
    let exception = rt.block_on(api.post(
        &format!("/api/v1/tenants/{TENANT}/exceptions"),
        &json!({
            "control": excepted,
            "scope": "group",
            "scope_value": "servers",
            "justification": "alternate_mitigation",
            "starts_at": format_time(exc_start),
            "expires_at": format_time(story.end + 30 * 24 * HOUR),
            "note": "the data centre's own controls cover it; accepted by the CISO",
        }),
    ))?;
    say(
        &clock(alert.at),
        &format!(
            "exception {} through the API: {} on group servers, alternate_mitigation (credits the control), from {}",
            exception["id"].as_str().unwrap_or_default(),
            excepted,
            clock(exc_start)
        ),
    );
    // Before the afternoon streams, the pipeline must hold the exception, so that it starts
    // exactly at its instant (a start its clock has passed would be stamped later).
    let configured = rt.block_on(api.get(&format!("/api/v1/tenants/{TENANT}/exceptions"), &[]))?;
    let configured = format!("exceptions: {} configured", configured.as_array().map_or(0, Vec::len));
    pipeline.wait_for_log(&[&configured], wait)?;
    std::fs::write(args.dir.join("exceptions.yaml"), exceptions_yaml(&exception))
        .with_context(|| format!("cannot write {}", args.dir.join("exceptions.yaml").display()))?;

    // 4. The rest of the day.
    let waves: Vec<String> = story
        .remediation
        .iter()
        .map(|w| format!("{} ({} controls)", clock(w.at), w.controls.len()))
        .collect();
    say(
        &format!("{} -> {}", clock(story.pause_at), clock(story.end)),
        &format!(
            "streaming the other {} events: remediation waves on {group} at {}, the exception from {}, {} retirements, and {} devices silent since their snapshot leave after a day",
            story.len() - story.pause_index,
            waves.join(", "),
            clock(exc_start),
            story.retirements,
            story.silent
        ),
    );
    last_offsets.extend(produce(
        "          posture demo",
        &target,
        args.rate,
        args.batch_records,
        story.events(&cat, &fleet, story.pause_index..story.len()),
    )?);
    say(
        "",
        "waiting for the pipeline to consume every record and to confirm the tasks",
    );
    rt.block_on(wait_caught_up(&api, &last_offsets, &args.topic, wait))?;
    let ids: Vec<String> = tasks
        .iter()
        .filter_map(|t| t["task"]["id"].as_str().map(str::to_string))
        .collect();
    for id in &ids {
        // The pipeline's own confirmation (a listing shows a fixed task completed before that).
        pipeline.wait_for_log(&["task completed", id.as_str()], wait)?;
    }
    let done = rt.block_on(completed_tasks(&api, &ids))?;
    for t in &done {
        let completed = t["completed_at"]
            .as_str()
            .and_then(|c| parse_time(c).ok())
            .with_context(|| format!("a completed task without completed_at: {t}"))?;
        say(
            &clock(completed),
            &format!(
                "task {} completed, confirmed by the pipeline: every {} device passes {} ({} h after it was opened)",
                t["id"].as_str().unwrap_or_default(),
                t["group"].as_str().unwrap_or_default(),
                t["control"].as_str().unwrap_or_default(),
                t["hours_to_fix"]
            ),
        );
    }

    // 5. The scores: before, during, after.
    let score = |group: Option<&str>, at: i64| -> Result<Value> {
        let at = at.to_string();
        let mut q = vec![("at", at.as_str())];
        if let Some(g) = group {
            q.push(("group", g));
        }
        rt.block_on(api.get(&format!("/api/v1/tenants/{TENANT}/score"), &q))
    };
    let instants = [("morning", story.push.at - 1), ("alert", alert.at), ("end", story.end)];
    let mut scores = serde_json::Map::new();
    for (scope, g) in [("tenant", None), ("group", Some(group.as_str()))] {
        let mut m = serde_json::Map::new();
        for (name, t) in instants {
            m.insert(name.into(), score(g, t)?);
        }
        scores.insert(scope.into(), Value::Object(m));
    }
    let pct = |s: &Value| s["percent"].as_f64().unwrap_or(f64::NAN);
    for (scope, label) in [("tenant", TENANT.to_string()), ("group", format!("group {group}"))] {
        let s = &scores[scope];
        say(
            "",
            &format!(
                "{label}: {:.2}% at {} (before the push), {:.2}% at {} (the alert), {:.2}% at {} (after the waves; {:.2}% without exceptions)",
                pct(&s["morning"]),
                clock(story.push.at - 1),
                pct(&s["alert"]),
                clock(alert.at),
                pct(&s["end"]),
                clock(story.end),
                pct(&s["end"]["without_exceptions"])
            ),
        );
    }
    for t in &tasks {
        let r = &t["recommendation"];
        say(
            "",
            &format!(
                "recommendation {} (task {}): {} of {}'s points gained back",
                r["control"].as_str().unwrap_or_default(),
                t["task"]["id"].as_str().unwrap_or_default(),
                r["points_gained"],
                group
            ),
        );
    }
    let summary = json!({
        "tenant": TENANT,
        "devices": args.devices,
        "events": story.len(),
        "events_file": events_path,
        "start": format_time(args.start),
        "end": format_time(story.end),
        "end_ms": story.end,
        "push": wave_json(&story, &story.push),
        "pause_at": story.pause_at,
        "remediation": story.remediation.iter().map(|w| wave_json(&story, w)).collect::<Vec<_>>(),
        "silent_devices": story.silent,
        "retirements": story.retirements,
        "alert": {
            "tenant": alert.tenant,
            "group": alert.group,
            "category": alert.category,
            "old_percent": alert.old_percent,
            "new_percent": alert.new_percent,
            "window_ms": alert.window_ms,
            "at": alert.at,
            "causes": alert.causes.iter().map(|c| json!({"device": c.device, "control": c.control, "points_lost": c.points_lost})).collect::<Vec<_>>(),
        },
        "tasks": tasks,
        "tasks_completed": done,
        "exception": exception,
        "scores": scores,
    });
    let path = args.dir.join("story.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    pipeline.stop()?;
    Ok(ExitCode::SUCCESS)
}

/// The alert rules the demo's pipeline runs with: every tenant's total score (5 points within
/// an hour, the default) and each group's (10 points within an hour).
fn alert_rules() -> String {
    let mut rules = String::from("[[rule]]          # every tenant's total score\ndrop_points = 5\nwindow_mins = 60\n");
    for g in posture_fleet::GROUPS.iter().chain(&["servers"]) {
        rules += &format!(
            "\n[[rule]]          # group {g} of every tenant\ngroup = \"{g}\"\ndrop_points = 10\nwindow_mins = 60\n"
        );
    }
    rules
}

/// `posture run`, started by the demo as an operator would, and stopped with SIGTERM (it
/// flushes, snapshots and commits first).
struct Pipeline {
    child: Option<std::process::Child>,
    token: String,
    log: PathBuf,
}

impl Pipeline {
    /// Writes the tokens file and the alert rules into the demo's directory and starts the
    /// pipeline on them; its log goes to `run.log` there.
    fn start(args: &Args) -> Result<Pipeline> {
        let dir = &args.dir;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let token = format!("demo-{}", random_hex(16)?);
        let tokens = dir.join("tokens.toml");
        write_private(
            &tokens,
            &format!("[[token]]\nname = \"demo\"\ntoken = \"{token}\"\ntenants = [\"*\"]\nwrite = true\n"),
        )?;
        let rules = dir.join("alert-rules.toml");
        std::fs::write(&rules, alert_rules()).with_context(|| format!("cannot write {}", rules.display()))?;
        let log = dir.join("run.log");
        let t = &args.topic;
        let argv: Vec<String> = [
            "run",
            "--baselines",
            &args.baselines.display().to_string(),
            "--topic",
            t,
            "--group",
            t,
            "--score-deltas-topic",
            &if args.no_score_deltas {
                String::new()
            } else {
                format!("{t}.score-deltas")
            },
            "--dead-letter-topic",
            &format!("{t}.dead-letter"),
            "--alerts-topic",
            &args.alerts_topic,
            "--alert-rules",
            &rules.display().to_string(),
            "--alert-interval-secs",
            "1",
            "--tasks-confirm-secs",
            "1",
            "--exceptions-poll-secs",
            "1",
            "--inactivity-days",
            "1",
            "--api-tokens-file",
            &tokens.display().to_string(),
            "--http-addr",
            &args.http_addr,
            "--summary-json",
            &dir.join("run.json").display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let shown: Vec<&str> = argv
            .iter()
            .map(|a| if a.is_empty() { "\"\"" } else { a.as_str() })
            .collect();
        say(
            "",
            &format!(
                "starting the pipeline: posture {} (log: {})",
                shown.join(" "),
                log.display()
            ),
        );
        let err = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = std::process::Command::new(std::env::current_exe().context("the posture binary's path")?)
            .args(&argv)
            // The demo's Kafka (its --brokers and security options); ClickHouse from the
            // environment, as for the demo. The demo reads the log: human lines, info level.
            .env("POSTURE_KAFKA_BROKERS", &args.kafka.brokers)
            .envs(args.kafka.security.env())
            .env_remove("RUST_LOG")
            .env("POSTURE_LOG", "info")
            .env("POSTURE_LOG_FORMAT", "human")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(err)
            .spawn()
            .context("cannot start posture run")?;
        Ok(Pipeline {
            child: Some(child),
            token,
            log,
        })
    }

    /// Waits until the pipeline answers on its API (at most a minute).
    async fn ready(&mut self, api: &Api) -> Result<()> {
        let started = Instant::now();
        loop {
            self.alive()?;
            match api.get("/api/v1/whoami", &[]).await {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() > Duration::from_secs(60) => {
                    bail!(
                        "posture run did not answer within a minute ({e}); is another process on its --http-addr? Its log: {}",
                        self.log.display()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// An error with the end of the log if the pipeline has exited.
    fn alive(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("posture run was stopped");
        };
        if let Some(status) = child.try_wait().context("checking on posture run")? {
            self.child = None;
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            bail!(
                "posture run exited with {status}; the end of its log ({}):\n{}",
                self.log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// Waits until the pipeline's log has a line containing every one of `needles`.
    fn wait_for_log(&mut self, needles: &[&str], wait: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            self.alive()?;
            let log =
                std::fs::read_to_string(&self.log).with_context(|| format!("cannot read {}", self.log.display()))?;
            if log.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
                return Ok(());
            }
            if started.elapsed() > wait {
                bail!(
                    "posture run did not log {needles:?} within {} s; its log: {}",
                    wait.as_secs(),
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM, then waits for the pipeline to exit (it flushes first: at most two minutes,
    /// then SIGKILL); an exit other than success is an error.
    fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = terminate(&mut child, Duration::from_secs(120))?;
        if !status.success() {
            bail!("posture run exited with {status}; its log: {}", self.log.display());
        }
        Ok(())
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = terminate(&mut child, Duration::from_secs(30));
        }
    }
}

/// SIGTERM to `child`, and its exit status; SIGKILL if it has not exited within `grace`.
fn terminate(child: &mut std::process::Child, grace: Duration) -> Result<std::process::ExitStatus> {
    // SAFETY: kill(2) with the pid of a child this process started and has not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let started = Instant::now();
    while started.elapsed() < grace {
        if let Some(status) = child.try_wait().context("waiting for posture run")? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "posture demo: posture run did not stop within {} s of SIGTERM: killed",
        grace.as_secs()
    );
    child.kill().context("killing posture run")?;
    child.wait().context("waiting for posture run")
}

/// `bytes` bytes from the operating system's random source, in hex (the demo's API token).
fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut b = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom for the demo's API token")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Writes a file only its owner may read (the tokens file), replacing any file there.
fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot replace {}", path.display()))
        }
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A line of the story: its event time (or blank), then what happened.
fn say(when: &str, what: &str) {
    println!("{when:>9} {what}");
}

/// `HH:MM` of the story's day (`+1d HH:MM` on the next).
fn clock(start: i64, t: i64) -> String {
    let day = (t - start).div_euclid(24 * HOUR);
    let hm = &format_time(t)[11..16];
    if day == 0 {
        hm.to_string()
    } else {
        format!("+{day}d {hm}")
    }
}

fn wave_json(story: &Story, w: &posture_fleet::Wave) -> Value {
    json!({ "group": story.group, "at": w.at, "minutes": w.minutes, "controls": w.controls, "devices": w.devices })
}

/// The exception as `posture evaluate --exceptions` reads it.
fn exceptions_yaml(e: &Value) -> String {
    let s = |k: &str| serde_json::to_string(e[k].as_str().unwrap_or_default()).expect("a string");
    let mut y = format!(
        "exceptions:\n  - id: {}\n    tenant: {}\n    control: {}\n    scope: {{ group: {} }}\n    justification: {}\n    starts_at: {}\n",
        s("id"),
        s("tenant"),
        s("control"),
        s("scope_value"),
        s("justification"),
        s("starts_at")
    );
    if e["expires_at"].is_string() {
        y += &format!("    expires_at: {}\n", s("expires_at"));
    }
    y
}

/// The query API, with a bearer token.
struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    async fn answer(&self, what: &str, r: reqwest::RequestBuilder) -> Result<(Value, reqwest::header::HeaderMap)> {
        let resp = r.bearer_auth(&self.token).send().await.with_context(|| {
            format!(
                "{what}: cannot reach the API at {} (is posture run started with --api-tokens-file?)",
                self.base
            )
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body: Value = resp.json().await.with_context(|| format!("{what}: not JSON"))?;
        if !status.is_success() {
            bail!("{what}: {status}: {}", body["error"].as_str().unwrap_or_default());
        }
        Ok((body, headers))
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        Ok(self.get_with_headers(path, query).await?.0)
    }

    async fn get_with_headers(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(Value, reqwest::header::HeaderMap)> {
        let r = self.client.get(format!("{}{path}", self.base)).query(query);
        self.answer(&format!("GET {path}"), r).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let r = self.client.post(format!("{}{path}", self.base)).json(body);
        Ok(self.answer(&format!("POST {path}"), r).await?.0)
    }
}

/// The first score-drop alert in `topic` for the story's group after its push, waiting up to
/// `wait` for one.
fn wait_for_alert(
    brokers: &str,
    security: &[(String, String)],
    topic: &str,
    story: &Story,
    wait: Duration,
) -> Result<posture_avro::ScoreDropAlert> {
    let started = Instant::now();
    let mut others = Vec::new();
    let mut last_error = None;
    loop {
        let records = posture_ingest::topics::read_to_end(
            brokers,
            security,
            topic,
            Duration::from_millis(500),
            Duration::from_secs(10),
        );
        // The topic may appear only with the pipeline's first alert: not an error yet.
        match records {
            Ok(records) => {
                let (mut ours, rest): (Vec<_>, Vec<_>) = records
                    .iter()
                    .filter_map(|m| posture_avro::decode_alert(m.payload().unwrap_or_default()).ok())
                    .partition(|a| {
                        a.tenant == TENANT && a.group.as_deref() == Some(story.group.as_str()) && a.at >= story.push.at
                    });
                ours.sort_by_key(|a| a.at);
                if let Some(a) = ours.into_iter().next() {
                    return Ok(a);
                }
                others = rest
                    .iter()
                    .map(|a| format!("{} {:?} at {}", a.tenant, a.group, format_time(a.at)))
                    .collect();
            }
            Err(e) => last_error = Some(e.to_string()),
        }
        if started.elapsed() > wait {
            bail!(
                "no score-drop alert for group {} in {topic} after {} s (other alerts: [{}]; last read error: {}): posture run must be consuming the demo's topic with --alerts-topic {topic} and its alert rule for groups (a 10-point drop within 60 minutes)",
                story.group,
                wait.as_secs(),
                others.join(", "),
                last_error.as_deref().unwrap_or("none")
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Waits until the pipeline's cut (the `posture-cut` header of a score answer) covers `last`,
/// the offset of the last record the demo wrote to each partition of `topic` (from the
/// producer's delivery reports: a broker's high watermark may fall inside a batch).
async fn wait_caught_up(
    api: &Api,
    last: &std::collections::BTreeMap<i32, i64>,
    topic: &str,
    wait: Duration,
) -> Result<()> {
    let started = Instant::now();
    loop {
        let headers = match api
            .get_with_headers(&format!("/api/v1/tenants/{TENANT}/score"), &[])
            .await
        {
            Ok((_, h)) => h,
            Err(e) if started.elapsed() > wait => return Err(e.context("reading the pipeline's cut")),
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let cut: std::collections::BTreeMap<i32, i64> = headers
            .get("posture-cut")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(',')
            .filter_map(|p| {
                let (a, b) = p.split_once(':')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .collect();
        let behind: Vec<String> = last
            .iter()
            .filter(|(p, &off)| cut.get(p).is_none_or(|&c| c < off))
            .map(|(p, off)| {
                format!(
                    "partition {p}: {} of {off}",
                    cut.get(p).map_or("-".into(), |c| c.to_string())
                )
            })
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        if started.elapsed() > wait {
            bail!(
                "the pipeline has not consumed {topic} after {} s ({})",
                wait.as_secs(),
                behind.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The tasks of `ids` as listed; an error unless every one is there and completed.
async fn completed_tasks(api: &Api, ids: &[String]) -> Result<Vec<Value>> {
    let list = api.get(&format!("/api/v1/tenants/{TENANT}/tasks"), &[]).await?;
    let ours: Vec<Value> = ids
        .iter()
        .map(|id| {
            list.as_array()
                .into_iter()
                .flatten()
                .find(|t| t["id"] == *id)
                .cloned()
                .with_context(|| format!("task {id} is not listed"))
        })
        .collect::<Result<_>>()?;
    if let Some(t) = ours.iter().find(|t| t["status"] != json!("completed")) {
        bail!(
            "the pipeline confirmed task {} but it is listed {}",
            t["id"],
            t["status"]
        );
    }
    Ok(ours)
}
