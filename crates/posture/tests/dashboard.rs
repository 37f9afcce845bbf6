//! The dashboard page in a real browser, on the real stack (issue 20's first step):
//!
//! `simulate --kafka` takes a two-tenant fleet into Kafka, `run --until-idle` into a fresh
//! ClickHouse database; `posture serve` serves the page and the API; `web/test/dashboard.mjs`
//! drives Debian's headless Chromium (playwright-core): a wrong token is refused, the right one
//! logs in, and every figure the page shows (the secure score and its categories, the top
//! recommendations with their points and misconfigured/applicable devices, the score over time,
//! the value on hover) is read; the first improvement opportunity's link opens its misconfigured
//! devices, whose CSV is downloaded. Each figure must equal the CLI's JSON for the same tenant
//! and instant; screenshots of each view go to `.stack/screenshots/`.
//!
//! Needs the stack (`scripts/stack up`: Kafka, ClickHouse, Chromium and Node) and the page's npm
//! packages (`scripts/web setup`); fails with how to get them otherwise.
mod common;
use common::{json, posture};
use posture_tests::{fresh_database, fresh_topic_with_partitions, kafka_brokers, unique_name};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

const BASELINES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/baselines");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
/// The instant shown: the end of the demo's simulated day.
const AT: &str = "2026-11-01T23:59:59.999Z";

/// A JSON number as f64 (the page's `16850` is the CLI's `16850.0`), or a panic.
fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// `posture serve`, stopped when dropped.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node() -> String {
    let node = std::env::var("POSTURE_NODE").unwrap_or_else(|_| "node".into());
    let ok = Command::new(&node)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "Node.js ({node}) is not installed: scripts/stack up installs it (Debian's nodejs), or set POSTURE_NODE"
    );
    let modules = PathBuf::from(ROOT).join("web/node_modules/playwright-core");
    assert!(
        modules.is_dir(),
        "the page's npm packages are not installed ({}): run scripts/web setup",
        modules.display()
    );
    let chromium = std::env::var("POSTURE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "Chromium ({chromium}) is not installed: scripts/stack up installs it (Debian's chromium), or set POSTURE_CHROMIUM"
    );
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_clis_figures_in_a_real_browser() {
    let node = node();
    let dir = posture_tests::ScratchDir::new("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    let brokers = kafka_brokers();
    let topic = fresh_topic_with_partitions("dashboard_in", 2).await;
    let (_client, database) = fresh_database("dashboard").await;
    let url = posture_tests::clickhouse_url();
    let env = [
        ("POSTURE_CLICKHOUSE_URL", url.as_str()),
        ("POSTURE_CLICKHOUSE_DATABASE", database.as_str()),
    ];
    posture(&["migrate"], &env);
    posture(
        &[
            "simulate",
            "--baselines",
            BASELINES,
            // The demo's fleet (scripts/demo: 10,000 devices, a day, seed 42).
            "--devices",
            "10000",
            "--hours",
            "24",
            "--seed",
            "42",
            "--kafka",
            &brokers,
            "--topic",
            &topic,
        ],
        &[],
    );
    posture(
        &[
            "run",
            "--baselines",
            BASELINES,
            "--brokers",
            &brokers,
            "--topic",
            &topic,
            "--group",
            &unique_name("dashboard_group"),
            "--until-idle",
            "4",
            "--http-addr",
            "",
        ],
        &env,
    );

    let tokens = dir.join("tokens.toml");
    let read_token = "dashboard-read-token-0123456789";
    let write_token = "dashboard-write-token-0123456789";
    std::fs::write(
        &tokens,
        format!(
            "[[token]]\nname = \"reader\"\ntoken = \"{read_token}\"\ntenants = [\"t1\", \"t2\"]\n\n\
             [[token]]\nname = \"soc\"\ntoken = \"{write_token}\"\ntenants = [\"t1\"]\nwrite = true\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_posture"))
        .args([
            "serve",
            "--baselines",
            BASELINES,
            "--api-tokens-file",
            tokens.to_str().unwrap(),
            "--http-addr",
            "127.0.0.1:0",
        ])
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start posture serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("posture serve says where it listens");
    let _serve = Serve(child);
    let base = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");

    let shots = PathBuf::from(ROOT).join(".stack/screenshots");
    let out = Command::new(&node)
        .arg(PathBuf::from(ROOT).join("web/test/dashboard.mjs"))
        .args([&base, read_token, write_token, "t1", AT, shots.to_str().unwrap()])
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "the browser test failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: Value = serde_json::from_slice(&out.stdout).expect("the browser test's JSON");
    assert_eq!(page["errors"], serde_json::json!([]), "no error in the page's console");
    assert!(
        page["refused"].as_str().unwrap().contains("refused"),
        "a wrong token is refused: {}",
        page["refused"]
    );
    assert_eq!(page["tenants"], serde_json::json!(["t1", "t2"]));

    // The CLI's JSON for the same tenant and instant.
    let cli = |args: &[&str]| {
        json(&posture(
            &[args, &["--baselines", BASELINES, "--tenant", "t1", "--format", "json"]].concat(),
            &env,
        ))
    };
    let score = cli(&["score", "--at", AT]);
    let shown = &page["score"];
    assert_eq!(
        num(&shown["percent"]),
        num(&score["percent"]),
        "the score tile's percent"
    );
    assert_eq!(shown["text"], format!("{:.2}%", score["percent"].as_f64().unwrap()));
    assert_eq!(num(&shown["points"]), num(&score["points"]));
    assert_eq!(num(&shown["max_points"]), num(&score["max_points"]));
    assert_eq!(
        num(&shown["without_exceptions_percent"]),
        num(&score["without_exceptions"]["percent"])
    );
    let categories = score["categories"].as_object().unwrap();
    assert!(!categories.is_empty());
    for (name, c) in categories {
        assert_eq!(
            num(&shown["categories"][name]["percent"]),
            num(&c["percent"]),
            "category {name}"
        );
        assert_eq!(
            num(&shown["categories"][name]["points"]),
            num(&c["points"]),
            "category {name}"
        );
    }

    let recs = cli(&["recommendations", "--at", AT]);
    let want: Vec<Value> = recs
        .as_array()
        .unwrap()
        .iter()
        .take(10)
        .map(|r| {
            serde_json::json!({
                "control": r["control"],
                "points_gained": num(&r["points_gained"]),
                "misconfigured": format!("{}/{}", r["misconfigured_devices"], r["applicable_devices"]),
            })
        })
        .collect();
    let got: Vec<Value> = page["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::json!({"control": r["control"], "points_gained": num(&r["points_gained"]), "misconfigured": r["misconfigured"]}))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want, "top recommendations");
    // The what-if figure of the first three: `posture whatif` for the same control and instant.
    for r in page["recommendations"].as_array().unwrap().iter().take(3) {
        let control = r["control"].as_str().unwrap();
        let w = cli(&["whatif", "--control", control, "--at", AT]);
        assert_eq!(
            num(&r["whatif"]),
            num(&w[0]["after"]["percent"]),
            "what-if of {control}"
        );
    }

    // The filters: the CLI's list for the same category and remediation type.
    let filtered = cli(&[
        "recommendations",
        "--at",
        AT,
        "--category",
        "os",
        "--remediation",
        "software_update",
    ]);
    let want: Vec<&Value> = filtered
        .as_array()
        .unwrap()
        .iter()
        .take(10)
        .map(|r| &r["control"])
        .collect();
    assert!(!want.is_empty(), "the filter keeps some recommendations");
    assert_eq!(page["filtered"].as_array().unwrap().iter().collect::<Vec<_>>(), want);

    let history = cli(&[
        "history",
        "--bucket",
        "hour",
        "--from",
        "2026-10-31T23:59:59.999Z",
        "--to",
        AT,
    ]);
    assert_eq!(
        page["history_points"].as_u64().unwrap() as usize,
        history.as_array().unwrap().len(),
        "the chart has the CLI's points"
    );
    // The value on hover is the CLI's point of that hour.
    let hover = page["hover"].as_str().unwrap();
    let value: f64 = page["hover_value"].as_str().unwrap().parse().expect("a value on hover");
    let point = history
        .as_array()
        .unwrap()
        .iter()
        .find(|p| hover.starts_with(&p["at"].as_str().unwrap()[..16].replace('T', " ")))
        .unwrap_or_else(|| panic!("the hovered instant is a point of the CLI's history: {hover}"));
    assert_eq!(value, num(&point["percent"]), "{hover}");
    assert!(hover.ends_with(&format!("{value:.2}%")), "{hover}");

    let control = page["opportunity"]["control"].as_str().unwrap();
    let devices = cli(&["devices", "--control", control]);
    let want: Vec<&str> = devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    let got: Vec<&str> = page["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(!want.is_empty(), "the opportunity has misconfigured devices");
    assert_eq!(got, want, "the misconfigured devices of {control}");
    let csv = page["csv"]["text"].as_str().unwrap();
    assert_eq!(page["csv"]["name"], format!("{control}-devices.csv"));
    assert_eq!(
        csv.lines().count(),
        want.len() + 1,
        "a header and a row per device:\n{csv}"
    );
    for d in &want {
        assert!(csv.contains(d), "{d} in the CSV");
    }
    // The recommendation's detail: the CLI's figures and the baseline's vulnerabilities and check.
    let rec = recs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["control"] == control)
        .expect("the opportunity is a recommendation");
    let detail = &page["detail"];
    assert_eq!(num(&detail["points_gained"]), num(&rec["points_gained"]));
    assert_eq!(
        detail["misconfigured"],
        format!("{}/{}", rec["misconfigured_devices"], rec["applicable_devices"])
    );
    let vulns: Vec<&str> = rec["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for v in &vulns {
        assert!(detail["vulnerabilities"].as_str().unwrap().contains(v), "{v}");
    }
    assert_eq!(detail["check"], devices[0]["check"], "the check the devices fail");
    // The baseline's texts, as written in deploy/baselines.
    let yaml: String = std::fs::read_dir(BASELINES)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    // The demo's first opportunity (seed 42) is a control whose baseline gives both texts and a
    // vulnerability: the page must show them, not its placeholders.
    for key in ["remediation_text", "rationale"] {
        let text = detail[key].as_str().unwrap();
        assert!(
            !text.starts_with("(the baseline gives no") && yaml.contains(&format!("{key}: {text}")),
            "{key} of {control}: {text:?}"
        );
    }
    assert!(!vulns.is_empty(), "{control} lists vulnerabilities in its baseline");
    assert_eq!(
        detail["remediation"],
        rec["remediation"].as_str().unwrap().replace('_', " ")
    );

    // A read token is refused; the write token's task and exception are stored as given.
    assert!(
        page["read_refused"].as_str().unwrap().contains("not created")
            && page["read_refused"].as_str().unwrap().contains("reader"),
        "{}",
        page["read_refused"]
    );
    assert_eq!(page["read_tasks"], 0, "nothing was created with the read token");
    // `posture tasks list` / `posture exceptions list` of t1, as JSON.
    let list = |kind: &str| {
        json(&posture(
            &[
                kind,
                "list",
                "--baselines",
                BASELINES,
                "--tenant",
                "t1",
                "--format",
                "json",
            ],
            &env,
        ))
    };
    let tasks = list("tasks");
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(page["tasks"], serde_json::json!([tasks[0]["id"]]));
    assert_eq!(tasks[0]["control"], control);
    assert_eq!(tasks[0]["priority"], "high");
    assert_eq!(tasks[0]["notes"], "patch the finance laptops first");
    assert_eq!(tasks[0]["author"], "soc", "the token's name");
    assert!(page["task_status"].as_str().unwrap().contains("created"));
    // The remediation activity as CSV (the seed's "Export all remediation activity data to CSV").
    assert_eq!(page["tasks_csv"]["name"], "remediation-tasks.csv");
    let tasks_csv = page["tasks_csv"]["text"].as_str().unwrap();
    assert_eq!(tasks_csv.lines().count(), 2, "a header and the task:\n{tasks_csv}");
    assert!(
        tasks_csv.contains(tasks[0]["id"].as_str().unwrap()) && tasks_csv.contains("patch the finance laptops first")
    );
    let exceptions = list("exceptions");
    let exceptions = exceptions.as_array().unwrap();
    assert_eq!(exceptions.len(), 1, "{exceptions:?}");
    assert_eq!(page["exceptions"], serde_json::json!([exceptions[0]["id"]]));
    assert_eq!(exceptions[0]["control"], control);
    assert_eq!(exceptions[0]["scope"], "tenant");
    assert_eq!(exceptions[0]["justification"], "risk_accepted");
    assert_eq!(exceptions[0]["note"], "legacy kiosks, replaced in Q1");
    assert!(page["exception_status"].as_str().unwrap().contains("added"));

    // One device's controls, as `devices --device`.
    let device = page["device"]["id"].as_str().unwrap();
    let report = cli(&["devices", "--device", device, "--at", AT]);
    assert_eq!(
        num(&page["device"]["percent"]),
        num(&report["percent"]),
        "device {device}"
    );
    let mut want: Vec<(String, String)> = report["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["control"].as_str().unwrap().to_string(),
                c["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut got: Vec<(String, String)> = serde_json::from_value(page["device"]["controls"].clone()).unwrap();
    want.sort();
    got.sort();
    assert!(!want.is_empty());
    assert_eq!(got, want, "the controls of {device}");

    for shot in [
        "dashboard-device.png",
        "dashboard-recommendation.png",
        "dashboard-login.png",
        "dashboard-1280x800.png",
        "dashboard-narrow.png",
        "dashboard-devices.png",
    ] {
        let len = std::fs::metadata(shots.join(shot)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 5_000, "screenshot {shot}: {len} bytes");
    }
}
