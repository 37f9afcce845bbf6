//! The query API and subcommands on the real stack (scripts/stack up).
//!
//! A fixed event set, small enough to score by hand, goes through Kafka and
//! `posture run` (with the HTTP API on) into ClickHouse. Then every
//! `/api/v1` route and every query subcommand must give the hand-checked
//! figures; the CLI and the API must agree; CSV must parse back (with the
//! csv crate); auth must refuse what it should (401, 403); and every JSON
//! response must validate against the OpenAPI document the server serves.
//!
//! The fleet (tenant t1; tenant t2 has one device, for the 403 case):
//!
//! | device | os      | group | fw (network, 30) | pw (accounts, 20) | av (security_controls, 10, software_update) | bl (os, 40, windows only) |
//! |--------|---------|-------|------------------|-------------------|--------------------------------------------|---------------------------|
//! | d1     | windows | red   | PASS             | PASS              | PASS                                        | PASS                      |
//! | d2     | windows | red   | FAIL -> PASS at T0+2h | FAIL         | PASS                                        | FAIL                      |
//! | d3     | macos   | blue  | PASS             | FAIL              | FAIL                                        | NOT_APPLICABLE            |
//! | d4     | macos   | blue  | FAIL             | PASS              | PASS                                        | NOT_APPLICABLE            |
//!
//! At T1 = T0+1h: fw 2/4 -> 15, pw 2/4 -> 10, av 3/4 -> 7.5, bl 1/2 -> 20: 52.5 of 100 = 52.5%.
//! After T0+2h: fw 3/4 -> 22.5: 60%. Group red at T1: fw 1/2 -> 15, pw 1/2 -> 10, av 2/2 -> 10,
//! bl 1/2 -> 20: 55%.
mod common;
use common::posture;
use posture_core::{ChangeKind, ConfigChange, Setting, Value as V};
use posture_tests::{fresh_database, fresh_topic_with_partitions, kafka_brokers, unique_name};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BASELINE: &str = r#"
baseline: api-test
version: 1
controls:
  - { id: fw, title: "Firewall on", category: network, points: 30, check: { key: fw, op: eq, value: true } }
  - { id: pw, title: "Passwords of 14 characters, at least", category: accounts, points: 20, check: { key: pw_len, op: ge, value: 14 } }
  - id: av
    title: Antivirus engine 5 or later
    category: security_controls
    points: 10
    remediation: software_update
    vulnerabilities: [CVE-2026-0001]
    check: { key: av, op: ge, value: 5 }
  - id: bl
    title: BitLocker
    category: os
    points: 40
    applies_to: { os_family: [windows] }
    check: { key: bl, op: eq, value: true }
"#;

const T0: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z
const H: i64 = 3_600_000;
const TOKEN_T1: &str = "t1-reader-0123456789abcdef";
const TOKEN_T2: &str = "t2-reader-0123456789abcdef";
const TOKEN_ALL: &str = "admin-0123456789abcdef0123";

fn ev(tenant: &str, device: &str, seq: i64, at: i64, os: &str, group: &str, settings: &[(&str, V)]) -> ConfigChange {
    let kind = if seq == 1 {
        ChangeKind::Snapshot
    } else {
        ChangeKind::Upsert
    };
    ConfigChange::new(tenant, device, kind, at, seq)
        .with_event_id(format!("{device}-{seq}"))
        .with_inventory(os, "1.0", &[group], &[])
        .with_settings(settings.iter().map(|(k, v)| Setting {
            key: (*k).into(),
            value: v.clone(),
        }))
}

fn events() -> Vec<ConfigChange> {
    use V::*;
    vec![
        ev(
            "t1",
            "d1",
            1,
            T0,
            "windows",
            "red",
            &[
                ("fw", Bool(true)),
                ("pw_len", Long(16)),
                ("av", Long(6)),
                ("bl", Bool(true)),
            ],
        ),
        ev(
            "t1",
            "d2",
            1,
            T0 + 1,
            "windows",
            "red",
            &[
                ("fw", Bool(false)),
                ("pw_len", Long(8)),
                ("av", Long(6)),
                ("bl", Bool(false)),
            ],
        ),
        ev(
            "t1",
            "d3",
            1,
            T0 + 2,
            "macos",
            "blue",
            &[("fw", Bool(true)), ("pw_len", Long(8)), ("av", Long(4))],
        ),
        ev(
            "t1",
            "d4",
            1,
            T0 + 3,
            "macos",
            "blue",
            &[("fw", Bool(false)), ("pw_len", Long(14)), ("av", Long(5))],
        ),
        ev("t2", "x1", 1, T0 + 4, "linux", "ops", &[("fw", Bool(true))]),
        ev("t1", "d2", 2, T0 + 2 * H, "windows", "red", &[("fw", Bool(true))]),
    ]
}

struct Api {
    base: String,
    http: reqwest::Client,
    openapi: Value,
}

impl Api {
    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// GET with the t1 token: 200 and JSON, validated against the OpenAPI
    /// document's schema for the route.
    async fn json(&self, route: &str, path: &str) -> Value {
        let r = self.get(path, Some(TOKEN_T1)).await;
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"));
        self.validate(route, "200", &v);
        v
    }

    /// Validates `v` against the response schema of `route` and `status`.
    fn validate(&self, route: &str, status: &str, v: &Value) {
        self.validate_op(route, "get", status, v)
    }

    /// The same for one method of the route.
    fn validate_op(&self, route: &str, method: &str, status: &str, v: &Value) {
        let schema =
            &self.openapi["paths"][route][method]["responses"][status]["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "the OpenAPI document has no {status} schema for {route}"
        );
        // The components become $defs, so the schema's $refs resolve within one document.
        let text = serde_json::to_string(schema)
            .unwrap()
            .replace("#/components/schemas/", "#/$defs/");
        let mut root: Value = serde_json::from_str(&text).unwrap();
        let defs = serde_json::to_string(&self.openapi["components"]["schemas"])
            .unwrap()
            .replace("#/components/schemas/", "#/$defs/");
        root["$defs"] = serde_json::from_str(&defs).unwrap();
        let validator = jsonschema::validator_for(&root).expect("a valid JSON Schema");
        let errors: Vec<String> = validator
            .iter_errors(v)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{route} {status}: the response does not match the OpenAPI document: {errors:#?}\n{v:#}"
        );
    }

    async fn csv(&self, path: &str) -> Vec<csv::StringRecord> {
        let r = self.get(path, Some(TOKEN_T1)).await;
        assert_eq!(r.status().as_u16(), 200, "GET {path}");
        assert!(
            r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"),
            "GET {path}: {:?}",
            r.headers()
        );
        parse_csv(&r.text().await.unwrap())
    }
}

/// CSV as Excel reads it: a UTF-8 BOM, then RFC 4180 with a header row.
fn parse_csv(text: &str) -> Vec<csv::StringRecord> {
    let body = text
        .strip_prefix('\u{feff}')
        .unwrap_or_else(|| panic!("no UTF-8 BOM: {text:?}"));
    let mut r = csv::Reader::from_reader(body.as_bytes());
    let header = r.headers().unwrap().clone();
    let mut rows = vec![header];
    rows.extend(r.records().map(|x| x.expect("RFC 4180 CSV")));
    rows
}

/// `posture run` as a child that is stopped however the test ends (a failed assertion too):
/// SIGTERM, then SIGKILL after 20 s.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let child = &mut self.0;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_subcommand_gives_the_hand_checked_figures() {
    let dir = posture_tests::ScratchDir::new("query_api");
    let baselines = dir.join("baselines");
    std::fs::create_dir_all(&baselines).unwrap();
    std::fs::write(baselines.join("api.yaml"), BASELINE).unwrap();
    let tokens = dir.join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[token]]\nname = \"t1\"\ntoken = \"{TOKEN_T1}\"\ntenants = [\"t1\"]\n\n\
             [[token]]\nname = \"t2\"\ntoken = \"{TOKEN_T2}\"\ntenants = [\"t2\"]\n\n\
             [[token]]\nname = \"admin\"\ntoken = \"{TOKEN_ALL}\"\ntenants = [\"*\"]\nwrite = true\n"
        ),
    )
    .unwrap();
    let evs = events();
    let file = dir.join("events.jsonl");
    std::fs::write(&file, evs.iter().map(|e| e.to_json() + "\n").collect::<String>()).unwrap();
    let topic = fresh_topic_with_partitions("api_in", 1).await;
    posture_tests::produce_events(&topic, &evs).await;
    let (_client, database) = fresh_database("api").await;
    let baselines = baselines.to_str().unwrap().to_string();
    let env: Vec<(&str, &str)> = vec![
        ("POSTURE_KAFKA_BROKERS", Box::leak(kafka_brokers().into_boxed_str())),
        ("POSTURE_CLICKHOUSE_DATABASE", database.as_str()),
        ("POSTURE_BASELINES", baselines.as_str()),
        // The API reads as the stack's read-only user (writes go through the default user).
        ("POSTURE_API_CLICKHOUSE_USER", "posture_reader"),
    ];
    posture(&["migrate"], &env);
    let reader = posture_tests::clickhouse_client()
        .with_user("posture_reader")
        .with_database(&database);
    let refused = reader
        .query("INSERT INTO tasks (tenant, id) VALUES ('t1', 'x')")
        .execute()
        .await
        .expect_err("posture_reader cannot write");
    assert!(refused.to_string().to_lowercase().contains("readonly"), "{refused}");
    let n: u64 = reader
        .query("SELECT count() FROM tasks")
        .fetch_one()
        .await
        .expect("it reads");
    assert_eq!(n, 0);
    let port = posture_tests::free_port();
    let log = std::fs::File::create(dir.join("run.log")).unwrap();
    let running = Running(
        Command::new(env!("CARGO_BIN_EXE_posture"))
            .args([
                "run",
                "--topic",
                &topic,
                "--group",
                &unique_name("api_group"),
                "--alerts-topic",
                "",
            ])
            .args([
                "--score-deltas-topic",
                &format!("{topic}.deltas"),
                "--dead-letter-topic",
                &format!("{topic}.dead"),
            ])
            .args(["--batch-ms", "200", "--http-addr", &format!("127.0.0.1:{port}")])
            .args(["--api-tokens-file", tokens.to_str().unwrap()])
            .args(["--exceptions-poll-secs", "1", "--tasks-confirm-secs", "1"])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn posture run"),
    );

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    // Wait for the server, then for the last event's effect (60% after T0+2h).
    let deadline = Instant::now() + Duration::from_secs(90);
    let openapi: Value = loop {
        if let Ok(r) = http.get(format!("{base}/api/v1/openapi.json")).send().await {
            break r.json().await.expect("the OpenAPI document is JSON");
        }
        assert!(
            Instant::now() < deadline,
            "posture run never served HTTP; see {}",
            dir.join("run.log").display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(openapi["openapi"], "3.1.0");
    let api = Api { base, http, openapi };
    let at_end = T0 + 3 * H;
    loop {
        let r = api
            .get(&format!("/api/v1/tenants/t1/score?at={at_end}"), Some(TOKEN_T1))
            .await;
        if r.status() == 200 && num(&r.json::<Value>().await.unwrap()["percent"]) == 60.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pipeline never got to 60%; see {}",
            dir.join("run.log").display()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let t1 = T0 + H;

    // --- score: tenant, group, category, with and without exceptions.
    let s = api
        .json(
            "/api/v1/tenants/{tenant}/score",
            &format!("/api/v1/tenants/t1/score?at={t1}"),
        )
        .await;
    assert_eq!(
        (num(&s["points"]), num(&s["max_points"]), num(&s["percent"])),
        (52.5, 100.0, 52.5)
    );
    assert_eq!(num(&s["without_exceptions"]["percent"]), 52.5);
    assert_eq!(num(&s["categories"]["network"]["points"]), 15.0);
    assert_eq!(num(&s["categories"]["security_controls"]["points"]), 7.5);
    assert_eq!(num(&s["categories"]["os"]["percent"]), 50.0);
    let red = api
        .json(
            "/api/v1/tenants/{tenant}/score",
            &format!("/api/v1/tenants/t1/score?at={t1}&group=red"),
        )
        .await;
    assert_eq!((num(&red["points"]), red["group"].as_str()), (55.0, Some("red")));
    let net = api
        .json(
            "/api/v1/tenants/{tenant}/score",
            &format!("/api/v1/tenants/t1/score?at={t1}&category=network"),
        )
        .await;
    assert_eq!(
        (num(&net["points"]), num(&net["max_points"]), num(&net["percent"])),
        (15.0, 30.0, 50.0)
    );
    // The CLI gives the same object; so does embedded mode on the same events.
    let at1 = t1.to_string();
    let cli: Value = serde_json::from_str(&posture(
        &["score", "--tenant", "t1", "--at", &at1, "--format", "json"],
        &env,
    ))
    .unwrap();
    assert_eq!(cli, s, "posture score = GET /score");
    let mut s = s;
    let cut = common::take_cut(&mut s);
    assert_eq!(
        cut["partitions"].as_array().map(Vec::len),
        Some(1),
        "one input partition: {cut}"
    );
    let embedded: Value = serde_json::from_str(&posture(
        &[
            "evaluate",
            "--events",
            file.to_str().unwrap(),
            "--tenant",
            "t1",
            "--at",
            &at1,
            "--format",
            "json",
        ],
        &env,
    ))
    .unwrap();
    assert_eq!(embedded["score"], s, "embedded mode = GET /score");

    // --- history: hourly over T0 .. T0+3h-1: 52.5, 52.5, 60.
    let route = "/api/v1/tenants/{tenant}/history";
    let path = format!("/api/v1/tenants/t1/history?from={T0}&to={}&bucket=hour", T0 + 3 * H - 1);
    let h = api.json(route, &path).await;
    let percents: Vec<f64> = h.as_array().unwrap().iter().map(|p| num(&p["percent"])).collect();
    assert_eq!(percents, vec![52.5, 52.5, 60.0]);
    assert_eq!(h[0]["bucket_start"], "2026-11-01T00:00:00Z");
    assert_eq!(h[2]["at"], "2026-11-01T02:59:59.999Z");
    let cli: Value = serde_json::from_str(&posture(
        &[
            "history",
            "--tenant",
            "t1",
            "--from",
            &T0.to_string(),
            "--to",
            &(T0 + 3 * H - 1).to_string(),
            "--bucket",
            "hour",
            "--format",
            "json",
        ],
        &env,
    ))
    .unwrap();
    assert_eq!(cli, h, "posture history = GET /history");
    let rows = api.csv(&format!("{path}&format=csv")).await;
    assert_eq!(&rows[0][4], "percent");
    assert_eq!(
        rows.iter().skip(1).map(|r| r[4].to_string()).collect::<Vec<_>>(),
        ["52.5", "52.5", "60"]
    );
    let day = api
        .json(
            route,
            &format!("/api/v1/tenants/t1/history?from={T0}&to={}&bucket=day", T0 + 3 * H),
        )
        .await;
    assert_eq!(day.as_array().unwrap().len(), 1);
    assert_eq!(num(&day[0]["percent"]), 60.0);

    // --- recommendations: order, counts, CVEs, filters.
    let route = "/api/v1/tenants/{tenant}/recommendations";
    let recs = api
        .json(route, &format!("/api/v1/tenants/t1/recommendations?at={t1}"))
        .await;
    let got: Vec<(String, f64, i64, i64)> = recs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["control"].as_str().unwrap().to_string(),
                num(&r["points_gained"]),
                r["misconfigured_devices"].as_i64().unwrap(),
                r["applicable_devices"].as_i64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("bl", 20.0, 1, 2),
        ("fw", 15.0, 2, 4),
        ("pw", 10.0, 2, 4),
        ("av", 2.5, 1, 4),
    ];
    assert_eq!(got, want.map(|(c, p, m, a)| (c.to_string(), p, m, a)));
    assert_eq!(recs[3]["vulnerabilities"], json!(["CVE-2026-0001"]));
    let ids = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["control"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let mac = api
        .json(route, &format!("/api/v1/tenants/t1/recommendations?at={t1}&os=macos"))
        .await;
    assert_eq!(ids(&mac), ["fw", "pw", "av"], "bl applies to windows only");
    let sw = api
        .json(
            route,
            &format!("/api/v1/tenants/t1/recommendations?at={t1}&remediation=software_update"),
        )
        .await;
    assert_eq!(ids(&sw), ["av"]);
    let acc = api
        .json(
            route,
            &format!("/api/v1/tenants/t1/recommendations?at={t1}&category=accounts"),
        )
        .await;
    assert_eq!(ids(&acc), ["pw"]);
    let blue = api
        .json(
            route,
            &format!("/api/v1/tenants/t1/recommendations?at={t1}&group=blue&top=1"),
        )
        .await;
    // Group blue (d3, d4): fw 1/2, pw 1/2 -> each 15 / 10 to gain, av 1/2 -> 5.
    assert_eq!(ids(&blue), ["fw"]);
    let cli = posture(
        &["recommendations", "--tenant", "t1", "--at", &at1, "--format", "csv"],
        &env,
    );
    let rows = parse_csv(&cli);
    assert_eq!(rows.len(), 5);
    assert_eq!((&rows[1][0], &rows[1][4], &rows[1][5]), ("bl", "20", "1"));
    assert_eq!(
        &rows[3][1], "Passwords of 14 characters, at least",
        "a comma inside a quoted field"
    );

    // --- misconfigured devices (now: d2 fixed fw, so only d4), and other states.
    let route = "/api/v1/tenants/{tenant}/controls/{control}/devices";
    let fw = api.json(route, "/api/v1/tenants/t1/controls/fw/devices").await;
    let devs = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| d["device"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(devs(&fw), ["d4"]);
    assert_eq!(fw[0]["check"], "fw eq true");
    let pass = api
        .json(route, "/api/v1/tenants/t1/controls/fw/devices?state=PASS")
        .await;
    assert_eq!(devs(&pass), ["d1", "d2", "d3"]);
    // Filtered by each device's latest inventory: group red is d1, d2; macos is d3 (and d4).
    let red = api
        .json(route, "/api/v1/tenants/t1/controls/fw/devices?state=PASS&group=red")
        .await;
    assert_eq!(devs(&red), ["d1", "d2"]);
    let mac = api
        .json(route, "/api/v1/tenants/t1/controls/fw/devices?state=PASS&os=macos")
        .await;
    assert_eq!(devs(&mac), ["d3"]);
    let cli: Value = serde_json::from_str(&posture(
        &[
            "devices",
            "--tenant",
            "t1",
            "--control",
            "fw",
            "--state",
            "PASS",
            "--group",
            "red",
            "--os",
            "windows",
            "--format",
            "json",
        ],
        &env,
    ))
    .unwrap();
    assert_eq!(cli, red);
    // d3 and d4 never had bl apply (their state stayed the initial NOT_APPLICABLE): no row.
    let bl = api.json(route, "/api/v1/tenants/t1/controls/bl/devices").await;
    assert_eq!(devs(&bl), ["d2"]);
    let na = api
        .json(route, "/api/v1/tenants/t1/controls/bl/devices?state=NOT_APPLICABLE")
        .await;
    assert_eq!(devs(&na), Vec::<String>::new());
    let rows = api.csv("/api/v1/tenants/t1/controls/pw/devices?format=csv").await;
    assert_eq!(
        rows.iter().skip(1).map(|r| r[0].to_string()).collect::<Vec<_>>(),
        ["d2", "d3"]
    );
    let cli = parse_csv(&posture(
        &["devices", "--tenant", "t1", "--control", "pw", "--format", "csv"],
        &env,
    ));
    assert_eq!(cli, rows, "posture devices = GET /controls/pw/devices");

    // --- one device: d2 now has fw PASS: 10 + 30 of 100 = 40%.
    let route = "/api/v1/tenants/{tenant}/devices/{device}";
    let d2 = api.json(route, "/api/v1/tenants/t1/devices/d2").await;
    assert_eq!(
        (num(&d2["points"]), num(&d2["max_points"]), num(&d2["percent"])),
        (40.0, 100.0, 40.0)
    );
    assert_eq!(
        d2["inventory"],
        json!({"os_family": "windows", "os_version": "1.0", "hostname": "", "groups": ["red"], "tags": []})
    );
    let states: Vec<(String, String)> = d2["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["control"].as_str().unwrap().into(),
                c["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [("av", "PASS"), ("bl", "FAIL"), ("fw", "PASS"), ("pw", "FAIL")];
    assert_eq!(states, want.map(|(a, b)| (a.to_string(), b.to_string())));
    let fw_row = d2["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["control"] == "fw")
        .unwrap();
    assert_eq!(fw_row["since"], "2026-11-01T02:00:00Z");
    // The evidence: the settings each check reads, as d2 has them now (fw from the upsert).
    let evidence: Vec<Value> = d2["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["settings"].clone())
        .collect();
    assert_eq!(
        evidence,
        [
            json!({"av": 6}),
            json!({"bl": false}),
            json!({"fw": true}),
            json!({"pw_len": 8})
        ]
    );
    let d1_at_t1 = api.json(route, &format!("/api/v1/tenants/t1/devices/d2?at={t1}")).await;
    assert_eq!(num(&d1_at_t1["percent"]), 10.0, "d2 at T1: av only");
    let r = api.get("/api/v1/tenants/t1/devices/nope", Some(TOKEN_T1)).await;
    assert_eq!(r.status().as_u16(), 404);
    api.validate(route, "404", &r.json().await.unwrap());
    let cli: Value = serde_json::from_str(&posture(
        &["devices", "--tenant", "t1", "--device", "d2", "--format", "json"],
        &env,
    ))
    .unwrap();
    assert_eq!(cli["controls"], d2["controls"]);

    // --- what-if: fix fw on the tenant (52.5 -> 67.5), on group red (tenant 60, red 55 -> 70),
    // a crediting exception (as a fix, with exceptions only) and a risk acceptance (no change).
    let route = "/api/v1/tenants/{tenant}/whatif";
    let w = api
        .json(route, &format!("/api/v1/tenants/t1/whatif?control=fw&at={t1}"))
        .await;
    assert_eq!(w.as_array().unwrap().len(), 1);
    assert_eq!(
        (num(&w[0]["before"]["percent"]), num(&w[0]["after"]["percent"])),
        (52.5, 67.5)
    );
    assert_eq!(
        (
            num(&w[0]["percent_gained"]),
            num(&w[0]["points_gained"]),
            w[0]["devices_affected"].as_i64()
        ),
        (15.0, 15.0, Some(2))
    );
    let w = api
        .json(
            route,
            &format!("/api/v1/tenants/t1/whatif?control=fw&group=red&at={t1}"),
        )
        .await;
    assert_eq!(
        num(&w[0]["after"]["percent"]),
        60.0,
        "the tenant, with red's one FAIL fixed"
    );
    assert_eq!(
        (num(&w[1]["before"]["percent"]), num(&w[1]["after"]["percent"])),
        (55.0, 70.0)
    );
    let w = api
        .json(
            route,
            &format!("/api/v1/tenants/t1/whatif?control=fw&exception=third_party_control&at={t1}"),
        )
        .await;
    assert_eq!(num(&w[0]["after"]["percent"]), 67.5);
    assert_eq!(num(&w[0]["after"]["without_exceptions"]["percent"]), 52.5);
    let w = api
        .json(
            route,
            &format!("/api/v1/tenants/t1/whatif?control=fw&exception=risk_accepted&at={t1}"),
        )
        .await;
    assert_eq!(num(&w[0]["after"]["percent"]), 52.5);
    let cli: Value = serde_json::from_str(&posture(
        &[
            "whatif",
            "--tenant",
            "t1",
            "--control",
            "fw",
            "--group",
            "red",
            "--at",
            &at1,
            "--format",
            "json",
        ],
        &env,
    ))
    .unwrap();
    let api_red = api
        .json(
            route,
            &format!("/api/v1/tenants/t1/whatif?control=fw&group=red&at={t1}"),
        )
        .await;
    assert_eq!(cli, api_red, "posture whatif = GET /whatif");
    let rows = api
        .csv(&format!(
            "/api/v1/tenants/t1/whatif?control=fw&group=red&at={t1}&format=csv"
        ))
        .await;
    assert_eq!((&rows[1][0], &rows[1][1], &rows[1][5]), ("t1", "", "60"));
    assert_eq!((&rows[2][1], &rows[2][4], &rows[2][5]), ("red", "55", "70"));

    // --- bad requests are 400 with a message, and match the document's error schema.
    for (path, route) in [
        (
            "/api/v1/tenants/t1/score?category=weather",
            "/api/v1/tenants/{tenant}/score",
        ),
        (
            "/api/v1/tenants/t1/history?bucket=week",
            "/api/v1/tenants/{tenant}/history",
        ),
        (
            "/api/v1/tenants/t1/whatif?control=nope",
            "/api/v1/tenants/{tenant}/whatif",
        ),
        (
            "/api/v1/tenants/t1/score?at=yesterday",
            "/api/v1/tenants/{tenant}/score",
        ),
    ] {
        let r = api.get(path, Some(TOKEN_T1)).await;
        assert_eq!(r.status().as_u16(), 400, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {body}");
        api.validate(route, "400", &body);
    }

    // --- auth: no token or an unknown one 401, another tenant's 403, the wildcard token 200.
    let score_path = format!("/api/v1/tenants/t1/score?at={t1}");
    let r = api.get(&score_path, None).await;
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    api.validate("/api/v1/tenants/{tenant}/score", "401", &r.json().await.unwrap());
    assert_eq!(
        api.get(&score_path, Some("not-a-known-token-at-all"))
            .await
            .status()
            .as_u16(),
        401
    );
    let r = api.get(&score_path, Some(TOKEN_T2)).await;
    assert_eq!(r.status().as_u16(), 403);
    api.validate("/api/v1/tenants/{tenant}/score", "403", &r.json().await.unwrap());
    assert_eq!(
        api.get("/api/v1/tenants/t1/devices/d2", Some(TOKEN_T2))
            .await
            .status()
            .as_u16(),
        403
    );
    assert_eq!(api.get(&score_path, Some(TOKEN_ALL)).await.status().as_u16(), 200);
    let r = api
        .get(&format!("/api/v1/tenants/t2/score?at={t1}"), Some(TOKEN_T2))
        .await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(num(&r.json::<Value>().await.unwrap()["percent"]), 100.0);
    // The Accept header selects CSV too.
    let r = api
        .http
        .get(format!("{}{score_path}", api.base))
        .bearer_auth(TOKEN_T1)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    let rows = parse_csv(&r.text().await.unwrap());
    assert_eq!((&rows[1][0], &rows[1][6]), ("t1", "52.5"));

    exceptions_and_tasks(&api, &env, &topic, &dir).await;
    drop(running);
}

/// POST JSON; the answer (any status) is validated against the OpenAPI document.
async fn post(api: &Api, path: &str, token: &str, body: Value) -> (u16, Value) {
    let r = api
        .http
        .post(format!("{}{path}", api.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    let route = if path.ends_with("/expire") {
        "/api/v1/tenants/{tenant}/exceptions/{id}/expire"
    } else if path.ends_with("/exceptions") {
        "/api/v1/tenants/{tenant}/exceptions"
    } else {
        "/api/v1/tenants/{tenant}/tasks"
    };
    api.validate_op(route, "post", &status.to_string(), &v);
    (status, v)
}

/// Exceptions and tasks through the API and the CLI, applied by the running pipeline, then
/// driven by new events:
///
/// - e1: pw on device d2, third_party_control (credit), from T0+4h: d2's pw counts as PASS.
/// - e2: bl on group red, risk_accepted, from T0+4h, expired at T0+6h: bl hidden from
///   recommendations in between, the score unchanged.
/// - events: at T0+5h d3 fixes pw and av; at T0+7h d1 reports again (moves the clock past T0+6h).
///
/// Scores (with / without exceptions): T0+4h-1: 60 / 60; T0+4h: fw 22.5 + pw 3/4 15 + av 7.5 +
/// bl 20 = 65 / pw 2/4 10 -> 60; T0+5h: pw 4/4 20, av 4/4 10 -> 72.5 / pw 3/4 15 -> 67.5.
async fn exceptions_and_tasks(api: &Api, env: &[(&str, &str)], topic: &str, dir: &std::path::Path) {
    let (t4, t5, t6, t7) = (T0 + 4 * H, T0 + 5 * H, T0 + 6 * H, T0 + 7 * H);
    let route = "/api/v1/tenants/{tenant}/exceptions";
    let e1 = json!({"id": "e1", "control": "pw", "scope": "device", "scope_value": "d2",
        "justification": "third_party_control", "starts_at": t4.to_string(),
        "note": "a vault rotates it, \"daily\""});
    // A read-only token may not add; a bad one is 400; the writer gets 201.
    assert_eq!(
        post(api, "/api/v1/tenants/t1/exceptions", TOKEN_T1, e1.clone()).await.0,
        403
    );
    let (status, bad) = post(
        api,
        "/api/v1/tenants/t1/exceptions",
        TOKEN_ALL,
        json!({"control": "nope", "scope": "tenant", "justification": "risk_accepted"}),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("not in the baselines"), "{bad}");
    // The author is the token's name: a body may not claim another; ids have a safe alphabet
    // (no '/': the engine knows an exception as tenant/id); text fields are bounded.
    for (body, why) in [
        (
            json!({"control": "pw", "scope": "tenant", "justification": "risk_accepted", "author": "alice"}),
            "the author is the token's name",
        ),
        (
            json!({"id": "x/e1", "control": "pw", "scope": "tenant", "justification": "risk_accepted"}),
            "letters, digits",
        ),
        (
            json!({"control": "pw", "scope": "tenant", "justification": "risk_accepted", "note": "n".repeat(5000)}),
            "more than 4096",
        ),
    ] {
        let (status, bad) = post(api, "/api/v1/tenants/t1/exceptions", TOKEN_ALL, body).await;
        assert_eq!(status, 400, "{bad}");
        assert!(bad["error"].as_str().unwrap().contains(why), "{why}: {bad}");
    }
    let (status, created) = post(api, "/api/v1/tenants/t1/exceptions", TOKEN_ALL, e1).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["author"], "admin", "recorded as the token's name: {created}");
    assert_eq!(
        (created["id"].as_str(), created["credits"].as_bool()),
        (Some("e1"), Some(true))
    );
    let (status, dup) = post(
        api,
        "/api/v1/tenants/t1/exceptions",
        TOKEN_ALL,
        json!({"id": "e1", "control": "pw", "scope": "tenant", "justification": "risk_accepted", "author": "admin"}),
    )
    .await;
    assert_eq!(status, 400, "a used id: {dup}");
    let out = posture(
        &[
            "exceptions",
            "add",
            "--tenant",
            "t1",
            "--id",
            "e2",
            "--control",
            "bl",
            "--scope",
            "group",
            "--scope-value",
            "red",
            "--justification",
            "risk_accepted",
            "--starts-at",
            &t4.to_string(),
            "--author",
            "bob",
            "--format",
            "json",
        ],
        env,
    );
    let e2: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e2[0]["expires_at"], Value::Null);
    let (status, expired) = post(
        api,
        "/api/v1/tenants/t1/exceptions/e2/expire",
        TOKEN_ALL,
        json!({"at": t6.to_string()}),
    )
    .await;
    assert_eq!(status, 200, "{expired}");
    assert_eq!(expired["expires_at"], "2026-11-01T06:00:00Z");
    let list = api.json(route, "/api/v1/tenants/t1/exceptions").await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["note"], "a vault rotates it, \"daily\"");
    let rows = api.csv("/api/v1/tenants/t1/exceptions?format=csv").await;
    assert_eq!((&rows[1][0], &rows[1][10]), ("e1", "a vault rotates it, \"daily\""));
    assert_eq!(&rows[2][7], "2026-11-01T06:00:00Z");
    let cli = parse_csv(&posture(
        &["exceptions", "list", "--tenant", "t1", "--format", "csv"],
        env,
    ));
    assert_eq!(cli.len(), 3);

    // Tasks: pw tenant-wide, already overdue (d2 keeps failing pw without exceptions); av on
    // group blue, due tomorrow (d3 fixes av at T0+5h: completed by the system).
    let route = "/api/v1/tenants/{tenant}/tasks";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (status, k1) = post(
        api,
        "/api/v1/tenants/t1/tasks",
        TOKEN_ALL,
        json!({"id": "k1", "control": "pw", "due": (now - H).to_string(), "priority": "high", "notes": "all of them",
               "created_at": "2026-11-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(status, 201, "{k1}");
    assert_eq!(k1["author"], "admin", "{k1}");
    assert_eq!(
        k1["created_at"], "2026-11-01T00:00:00Z",
        "opened when the request says: {k1}"
    );
    assert_eq!(
        (k1["status"].as_str(), k1["overdue"].as_bool()),
        (Some("open"), Some(true))
    );
    let k2: Value = serde_json::from_str(&posture(
        &[
            "tasks",
            "create",
            "--tenant",
            "t1",
            "--id",
            "k2",
            "--control",
            "av",
            "--group",
            "blue",
            "--due",
            &(now + 24 * H).to_string(),
            "--author",
            "dave",
            "--format",
            "json",
        ],
        env,
    ))
    .unwrap();
    assert_eq!(k2[0]["status"], "open");
    let (status, _) = post(
        api,
        "/api/v1/tenants/t1/tasks",
        TOKEN_ALL,
        json!({"control": "pw", "due": "soon"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, e) = post(
        api,
        "/api/v1/tenants/t1/tasks",
        TOKEN_ALL,
        json!({"control": "pw", "due": (now + H).to_string(), "created_at": (now + 10 * H).to_string()}),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("in the future"), "{e}");

    // Let the pipeline poll the exceptions (every second), then stream the new events.
    tokio::time::sleep(Duration::from_secs(3)).await;
    use V::*;
    let more = vec![
        ev(
            "t1",
            "d3",
            2,
            t5,
            "macos",
            "blue",
            &[("pw_len", Long(15)), ("av", Long(5))],
        ),
        ev("t1", "d1", 2, t7, "windows", "red", &[("fw", Bool(true))]),
    ];
    posture_tests::produce_events(topic, &more).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = api
            .get(&format!("/api/v1/tenants/t1/score?at={t7}"), Some(TOKEN_T1))
            .await;
        if num(&r.json::<Value>().await.unwrap()["percent"]) == 72.5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new events never showed; see {}",
            dir.join("run.log").display()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let score = |at: i64| async move {
        let s = api
            .json(
                "/api/v1/tenants/{tenant}/score",
                &format!("/api/v1/tenants/t1/score?at={at}"),
            )
            .await;
        (num(&s["percent"]), num(&s["without_exceptions"]["percent"]))
    };
    assert_eq!(score(t4 - 1).await, (60.0, 60.0), "before e1 starts");
    assert_eq!(score(t4).await, (65.0, 60.0), "e1 credits d2's pw from exactly T0+4h");
    assert_eq!(score(t5).await, (72.5, 67.5));
    assert_eq!(score(t7).await, (72.5, 67.5));
    let h = api
        .json(
            "/api/v1/tenants/{tenant}/history",
            &format!("/api/v1/tenants/t1/history?from={T0}&to={}&bucket=hour", t7),
        )
        .await;
    let got: Vec<(f64, f64)> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (num(&p["percent"]), num(&p["without_exceptions"]["percent"])))
        .collect();
    assert_eq!(
        got,
        [
            (52.5, 52.5),
            (52.5, 52.5),
            (60.0, 60.0),
            (60.0, 60.0),
            (65.0, 60.0),
            (72.5, 67.5),
            (72.5, 67.5),
            (72.5, 67.5)
        ]
    );
    // e2 hides bl (d2 in group red) from recommendations while in force, not after.
    let recs = |at: i64| async move {
        let r = api
            .json(
                "/api/v1/tenants/{tenant}/recommendations",
                &format!("/api/v1/tenants/t1/recommendations?at={at}"),
            )
            .await;
        r.as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["control"].as_str().unwrap().to_string(),
                    x["excepted_devices"].as_i64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        recs(t5).await,
        [("fw".to_string(), 0)],
        "bl hidden by e2, pw credited by e1"
    );
    assert_eq!(
        recs(t7).await,
        [("bl".to_string(), 0), ("fw".to_string(), 0)],
        "e2 expired at T0+6h"
    );
    let d2 = api
        .json(
            "/api/v1/tenants/{tenant}/devices/{device}",
            "/api/v1/tenants/t1/devices/d2",
        )
        .await;
    let pw = d2["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["control"] == "pw")
        .unwrap();
    assert_eq!(
        (pw["state"].as_str(), pw["raw_state"].as_str(), pw["exception"].as_str()),
        (Some("EXCEPTED"), Some("FAIL"), Some("CREDIT"))
    );

    // Tasks: k2 completed by the system (no device of blue fails av), k1 open and overdue.
    let tasks = api.json(route, "/api/v1/tenants/t1/tasks").await;
    let st: Vec<(&str, &str, bool)> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap(),
                t["status"].as_str().unwrap(),
                t["overdue"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(st, [("k1", "open", true), ("k2", "completed", false)]);
    assert!(tasks[1]["hours_to_fix"].as_f64().is_some());
    let report = api
        .json(
            "/api/v1/tenants/{tenant}/tasks/report",
            "/api/v1/tenants/t1/tasks/report",
        )
        .await;
    assert_eq!(
        (
            report["open"].as_u64(),
            report["completed"].as_u64(),
            report["overdue"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(report["overdue_tasks"][0]["id"], "k1");
    let rows = api.csv("/api/v1/tenants/t1/tasks?format=csv").await;
    assert_eq!((&rows[1][0], &rows[1][6], &rows[1][12]), ("k1", "open", "all of them"));
    assert_eq!((&rows[2][0], &rows[2][6]), ("k2", "completed"));
    let cli = parse_csv(&posture(&["tasks", "list", "--tenant", "t1", "--format", "csv"], env));
    assert_eq!(cli, rows, "posture tasks list = GET /tasks");
    let cli = posture(&["tasks", "report", "--tenant", "t1"], env);
    assert!(cli.contains("1 open, 1 completed, 1 overdue"), "{cli}");
}
