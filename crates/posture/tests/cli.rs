//! `posture evaluate` and `posture baseline validate` end to end, on fixture
//! files with hand-checked numbers.
//!
//! Fixture (tests/fixtures): 4 controls (fw 100, av 100, upd 50, pw 100 on
//! windows only) and 4 devices at 10:00, then d2 fixes fw at 10:30:
//!
//! | device | fw | av | upd | pw |
//! | --- | --- | --- | --- | --- |
//! | d1 windows g1 | PASS | PASS | PASS | PASS |
//! | d2 windows g1 | FAIL, PASS at 10:30 | PASS | FAIL | FAIL |
//! | d3 macos g2 | PASS | FAIL | UNKNOWN (absent) | N/A |
//! | d4 linux g2 | FAIL (absent, on_missing fail) | UNKNOWN | UNKNOWN | N/A |

use serde_json::Value;
use std::process::Command;

fn fixture(p: &str) -> String {
    format!("{}/tests/fixtures/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn posture(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_posture"))
        .args(args)
        .output()
        .expect("run posture");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn evaluate_json(extra: &[&str]) -> Value {
    let b = fixture("baselines");
    let e = fixture("events.jsonl");
    let mut args = vec!["evaluate", "--baselines", &b, "--events", &e, "--format", "json"];
    args.extend_from_slice(extra);
    let (code, out, err) = posture(&args);
    assert_eq!(code, 0, "stderr: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn part(v: &Value) -> (f64, f64, f64) {
    (
        v["points"].as_f64().unwrap(),
        v["max_points"].as_f64().unwrap(),
        v["percent"].as_f64().unwrap(),
    )
}

#[test]
fn evaluate_prints_the_spec_json() {
    let v = evaluate_json(&[]);
    let s = &v["score"];
    assert_eq!(s["tenant"], "t1");
    assert_eq!(s["group"], Value::Null);
    assert_eq!(s["at"], "2026-11-22T10:30:00Z");
    // fw 3/4 x 100 = 75; av 2/3 x 100 = 66.666667; upd 1/2 x 50 = 25; pw 1/2 x 100 = 50
    // total 216.666667 of 350 = 61.90%
    assert_eq!(part(s), (216.666667, 350.0, 61.9));
    let c = &s["categories"];
    assert_eq!(part(&c["network"]), (75.0, 100.0, 75.0));
    assert_eq!(part(&c["security_controls"]), (66.666667, 100.0, 66.67));
    assert_eq!(part(&c["os"]), (25.0, 50.0, 50.0));
    assert_eq!(part(&c["accounts"]), (50.0, 100.0, 50.0));
    assert_eq!(part(&c["application"]), (0.0, 0.0, 0.0));
    assert_eq!(part(&s["without_exceptions"]), (216.666667, 350.0, 61.9));
    // gains: pw 100 x 1/2 = 50; av 100 x 1/3 = 33.333333; fw 100 x 1/4 = 25; upd 50 x 1/2 = 25
    let recs = v["recommendations"].as_array().unwrap();
    let got: Vec<(&str, f64, i64, i64)> = recs
        .iter()
        .map(|r| {
            (
                r["control"].as_str().unwrap(),
                r["points_gained"].as_f64().unwrap(),
                r["misconfigured_devices"].as_i64().unwrap(),
                r["applicable_devices"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("pw", 50.0, 1, 2),
            ("av", 33.333333, 1, 3),
            ("fw", 25.0, 1, 4),
            ("upd", 25.0, 1, 2)
        ]
    );
    let upd = &recs[3];
    assert_eq!(upd["title"], "Update to build 19045 or later");
    assert_eq!(upd["category"], "os");
    assert_eq!(upd["remediation"], "software_update");
    assert_eq!(upd["vulnerabilities"], serde_json::json!(["CVE-2020-0001"]));
}

#[test]
fn evaluate_with_exceptions_and_at() {
    let ex = fixture("exceptions.yaml");
    let v = evaluate_json(&["--exceptions", &ex]);
    // pw credited on d2 (third-party control): 2/2 -> 100; total 266.666667 / 350 = 76.19%
    assert_eq!(part(&v["score"]), (266.666667, 350.0, 76.19));
    assert_eq!(part(&v["score"]["without_exceptions"]), (216.666667, 350.0, 61.9));
    let controls: Vec<&str> = v["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["control"].as_str().unwrap())
        .collect();
    assert_eq!(controls, vec!["av", "fw", "upd"]);
    // at 10:20 the exception is in force but d2 has not fixed fw yet: fw 2/4 = 50
    // 50 + 66.666667 + 25 + 100 = 241.666667 / 350 = 69.05%
    let v = evaluate_json(&["--exceptions", &ex, "--at", "2026-11-22T10:20:00Z"]);
    assert_eq!(v["score"]["at"], "2026-11-22T10:20:00Z");
    assert_eq!(part(&v["score"]), (241.666667, 350.0, 69.05));
    // at 10:10 the exception has not started: 50 + 66.666667 + 25 + 50
    let v = evaluate_json(&["--exceptions", &ex, "--at", "2026-11-22T10:10:00Z"]);
    assert_eq!(part(&v["score"]), (191.666667, 350.0, 54.76));
}

#[test]
fn evaluate_filters_group_and_category() {
    // g2 = d3, d4: fw 1/2 -> 50; av 0/1 -> 0 (d4 unknown); upd, pw: nobody assessed
    let v = evaluate_json(&["--group", "g2"]);
    assert_eq!(v["score"]["group"], "g2");
    assert_eq!(part(&v["score"]), (50.0, 200.0, 25.0));
    let v = evaluate_json(&["--category", "network"]);
    assert_eq!(v["score"]["category"], "network");
    assert_eq!(part(&v["score"]), (75.0, 100.0, 75.0));
    assert_eq!(v["score"]["categories"].as_object().unwrap().len(), 1);
    let v = evaluate_json(&["--remediation", "software_update"]);
    let recs = v["recommendations"].as_array().unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["control"], "upd");
}

#[test]
fn evaluate_counts_and_reports_bad_lines() {
    let (code, out, err) = posture(&[
        "evaluate",
        "--baselines",
        &fixture("baselines"),
        "--events",
        &fixture("events.jsonl"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("events.jsonl:5: unparseable event"), "{err}");
    assert!(
        err.contains("events.jsonl:6: event e5 rejected: invalid: empty device_id"),
        "{err}"
    );
    assert!(
        err.contains("8 events read: 5 applied, 1 stale or duplicate (ignored), 1 invalid, 1 unparseable; 4 devices"),
        "{err}"
    );
    assert!(out.contains("SECURE SCORE"), "{out}");
    assert!(out.contains("216.67 / 350"), "{out}");
    assert!(out.contains("61.90%"), "{out}");
    assert!(out.contains("Top recommendations (4 with points to gain)"), "{out}");
}

#[test]
fn evaluate_csv_is_rfc_4180_with_a_bom_for_excel() {
    let (code, out, _) = posture(&[
        "evaluate",
        "--baselines",
        &fixture("baselines"),
        "--events",
        &fixture("events.jsonl"),
        "--format",
        "csv",
    ]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert_eq!(lines[0], "\u{feff}control,title,category,remediation,points_gained,misconfigured_devices,applicable_devices,excepted_devices,vulnerabilities");
    assert_eq!(
        lines[1],
        "pw,\"Require passwords of 14 characters, at least\",accounts,configuration_change,50,1,2,0,"
    );
    assert_eq!(lines.len(), 6, "header, 4 rows, trailing empty");
}

#[test]
fn evaluate_errors_are_clear() {
    let (code, _, err) = posture(&[
        "evaluate",
        "--baselines",
        &fixture("baselines"),
        "--events",
        "/nonexistent.jsonl",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot open events file /nonexistent.jsonl"), "{err}");
    let (code, _, err) = posture(&[
        "evaluate",
        "--baselines",
        &fixture("baselines"),
        "--events",
        &fixture("events.jsonl"),
        "--tenant",
        "nope",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("tenant \"nope\" has no events (tenants seen: t1)"),
        "{err}"
    );
    let (code, _, err) = posture(&[
        "evaluate",
        "--baselines",
        &fixture("broken"),
        "--events",
        &fixture("events.jsonl"),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("bad.yaml:8: control ok: duplicate control id"), "{err}");
}

#[test]
fn baseline_validate_reports_file_and_line() {
    let (code, out, _) = posture(&["baseline", "validate", &fixture("broken")]);
    assert_eq!(code, 1);
    let bad = fixture("broken/bad.yaml");
    assert!(
        out.contains(&format!(
            "{bad}:8: control ok: duplicate control id (first defined at {bad}:4)"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{bad}:15: control bad-op: unknown operator \"equals\"")),
        "{out}"
    );
    assert!(out.contains("invalid: 2 error(s) in 1 file(s)"), "{out}");
    let (code, out, _) = posture(&["baseline", "validate", &fixture("baselines")]);
    assert_eq!(code, 0);
    assert!(out.contains("valid: 1 baselines, 4 controls"), "{out}");
}

#[test]
fn shipped_baselines_are_valid_and_rich() {
    let dir = format!("{}/../../deploy/baselines", env!("CARGO_MANIFEST_DIR"));
    let (code, out, _) = posture(&["baseline", "validate", &dir]);
    assert_eq!(code, 0, "{out}");
    let last = out.lines().last().unwrap();
    let n: usize = last
        .split(", ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n >= 120, "at least 120 controls: {last}");
    for cat in ["application", "os", "network", "accounts", "security_controls"] {
        assert!(!last.contains(&format!("{cat} 0")), "category {cat} empty: {last}");
    }
}

#[test]
fn simulate_is_deterministic_and_evaluates() {
    let dir = format!("{}/../../deploy/baselines", env!("CARGO_MANIFEST_DIR"));
    let tmp = std::env::temp_dir().join(format!("posture-sim-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let (a, b) = (tmp.join("a.jsonl"), tmp.join("b.jsonl"));
    for f in [&a, &b] {
        let (code, _, err) = posture(&[
            "simulate",
            "--baselines",
            &dir,
            "--devices",
            "50",
            "--hours",
            "12",
            "--seed",
            "7",
            "--out",
            f.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "same seed, same events"
    );
    let (code, out, err) = posture(&[
        "evaluate",
        "--baselines",
        &dir,
        "--events",
        a.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let pct = v["score"]["percent"].as_f64().unwrap();
    assert!(pct > 20.0 && pct < 95.0, "a realistic fleet scores in between: {pct}");
    assert!(err.contains(" 0 invalid, 0 unparseable"), "{err}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn evaluate_reads_avro_container_files() {
    // The fixture's parseable events, written as an Avro object container file.
    let text = std::fs::read_to_string(fixture("events.jsonl")).unwrap();
    let schema = posture_avro::schemas::config_change();
    let mut w = apache_avro::Writer::new(schema, Vec::new());
    for line in text.lines() {
        if let Ok(ev) = posture_core::ConfigChange::from_json(line) {
            w.append(posture_avro::reference::to_value(&ev)).unwrap();
        }
    }
    let path = std::env::temp_dir().join(format!("posture-events-{}.avro", std::process::id()));
    std::fs::write(&path, w.into_inner().unwrap()).unwrap();
    let (code, out, err) = posture(&[
        "evaluate",
        "--baselines",
        &fixture("baselines"),
        "--events",
        path.to_str().unwrap(),
        "--format",
        "json",
    ]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(code, 0, "{err}");
    let avro: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(avro, evaluate_json(&[]), "same events, same report");
    assert!(
        err.contains("7 events read: 5 applied, 1 stale or duplicate (ignored), 1 invalid, 0 unparseable"),
        "{err}"
    );
}

#[test]
#[cfg(unix)]
fn a_closed_output_pipe_stops_a_command_quietly() {
    // `posture simulate ... | head -c 100`: the reader goes away after a few bytes, the next
    // write meets a closed pipe. Like any Unix tool, posture then ends by SIGPIPE, with no panic
    // and no backtrace on stderr.
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let baselines = format!("{}/../../deploy/baselines", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_posture"))
        .args([
            "simulate",
            "--baselines",
            &baselines,
            "--devices",
            "5000",
            "--hours",
            "24",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run posture simulate");
    let mut head = [0u8; 100];
    child
        .stdout
        .take()
        .unwrap()
        .read_exact(&mut head)
        .expect("the first bytes");
    let status = child.wait().expect("posture simulate ends");
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.signal(), Some(libc_sigpipe()), "{status:?}; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// SIGPIPE's number (13 on Linux and the BSDs).
fn libc_sigpipe() -> i32 {
    13
}

#[test]
fn run_exposes_nothing_beyond_loopback_and_no_tenant_names_by_default() {
    let (code, help, _) = posture(&["run", "--help"]);
    assert_eq!(code, 0);
    let default_of = |option: &str| -> String {
        let at = help
            .find(&format!("--{option} "))
            .unwrap_or_else(|| panic!("--{option} in:\n{help}"));
        let rest = &help[at..];
        let d = rest.find("[default: ").expect("a default");
        rest[d + 10..].split(']').next().unwrap().to_string()
    };
    assert_eq!(default_of("http-addr"), "127.0.0.1:9464");
    assert_eq!(default_of("score-gauge-max-tenants"), "0");
    assert!(help.contains("--metrics-token-file"), "{help}");
}

#[test]
fn every_command_that_talks_to_kafka_takes_its_security_options() {
    for cmd in [&["run"][..], &["simulate"], &["import-results"]] {
        let (code, help, _) = posture(&[cmd, &["--help"]].concat());
        assert_eq!(code, 0);
        for option in [
            "--kafka-security-protocol",
            "--kafka-sasl-mechanism",
            "--kafka-sasl-username",
            "--kafka-sasl-password-file",
        ] {
            assert!(help.contains(option), "posture {cmd:?} lacks {option}");
        }
    }
}
