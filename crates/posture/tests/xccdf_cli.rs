//! `posture baseline import-xccdf`, `posture import-results` and `posture
//! baseline score-xccdf` end to end on a small benchmark (tests/fixtures/xccdf)
//! with hand-computed figures.
//!
//! Benchmark, profile p (selects r4, refines r1's weight to 2):
//!
//! ```text
//! G1 "Account settings" (weight 2): r1 (w 2 refined), r2 (w 1)
//! G2 "Network firewall" (weight 1): r3 (w 3), r4 (w 1)
//! ```
//!
//! | device | r1 | r2 | r3 | r4 |
//! | --- | --- | --- | --- | --- |
//! | host-a | pass | fail | pass | notapplicable |
//! | host-b | fail | error | pass | pass |

use serde_json::Value;
use std::process::Command;

fn fixture(p: &str) -> String {
    format!("{}/tests/fixtures/xccdf/{p}", env!("CARGO_MANIFEST_DIR"))
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

fn close(v: &Value, want: f64) {
    let got = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!((got - want).abs() < 1e-4, "{got} != {want}");
}

#[test]
fn import_score_and_results() {
    let dir = std::env::temp_dir().join(format!("posture-xccdf-cli-{}", std::process::id()));
    let baselines = dir.join("baselines");
    std::fs::create_dir_all(&baselines).unwrap();
    let baseline = baselines.join("small.yaml");
    let events = dir.join("scan.jsonl");
    let (b, e) = (baseline.to_str().unwrap(), events.to_str().unwrap());

    let (code, _, err) = posture(&[
        "baseline",
        "import-xccdf",
        &fixture("benchmark.xml"),
        "--profile",
        "xccdf_org.example_profile_p",
        "--category-map",
        &fixture("categories.yaml"),
        "--output",
        b,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("4 controls (application 0, os 0, network 1, accounts 2, security_controls 1"),
        "{err}"
    );
    let yaml = std::fs::read_to_string(&baseline).unwrap();
    assert!(yaml.contains("points: 200"), "r1: 100 x refined weight 2\n{yaml}");
    assert!(yaml.contains("vulnerabilities: [CVE-2021-4034]"), "{yaml}");
    let (code, out, _) = posture(&["baseline", "validate", baselines.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");

    let (code, _, err) = posture(&[
        "import-results",
        &fixture("results.xml"),
        "--tenant",
        "t1",
        "--output",
        e,
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["device_id"], "host-a");
    assert_eq!(lines[0]["kind"], "SNAPSHOT");
    assert_eq!(lines[0]["source"], "SCANNER");
    assert_eq!(lines[1]["settings"][1]["key"], "xccdf:xccdf_org.example_rule_r2");
    assert_eq!(lines[1]["settings"][1]["value"], "error");

    let (code, out, err) = posture(&[
        "baseline",
        "score-xccdf",
        "--baselines",
        baselines.to_str().unwrap(),
        "--events",
        e,
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let base = &v["baselines"][0];
    let a = &base["devices"][0];
    let bb = &base["devices"][1];
    assert_eq!(
        (a["device"].as_str(), bb["device"].as_str()),
        (Some("host-a"), Some("host-b"))
    );

    // host-a, default: G1 = (100*2 + 0*1) / (2+1) = 66.667, x2 = 133.333;
    //   G2 = 100*3 / 3 = 100 (r4 notapplicable), x1 = 100; root (133.333 + 100) / 3 = 77.778
    close(&a["xccdf_default"]["score"], 700.0 / 9.0);
    // flat: passes r1 (2) + r3 (3) = 5 of 2 + 1 + 3 = 6; unweighted 2 of 3; absolute 0
    close(&a["xccdf_flat"]["score"], 5.0);
    close(&a["xccdf_flat"]["maximum"], 6.0);
    close(&a["xccdf_flat_unweighted"]["score"], 2.0);
    close(&a["xccdf_flat_unweighted"]["maximum"], 3.0);
    close(&a["xccdf_absolute"]["score"], 0.0);
    // posture: r1 PASS 200, r2 FAIL 100, r3 PASS 300, r4 UNKNOWN -> 500 / 600
    close(&a["posture"]["points"], 500.0);
    close(&a["posture"]["max_points"], 600.0);

    // host-b, default: G1 = 0 (fail, error) -> 0; G2 = (300 + 100) / 4 = 100; root 100 / 3 = 33.333
    close(&bb["xccdf_default"]["score"], 100.0 / 3.0);
    // flat: passes r3 (3) + r4 (1) = 4 of 2 + 1 + 3 + 1 = 7 (error counts); unweighted 2 of 4
    close(&bb["xccdf_flat"]["score"], 4.0);
    close(&bb["xccdf_flat"]["maximum"], 7.0);
    close(&bb["xccdf_flat_unweighted"]["maximum"], 4.0);
    // posture: r1 FAIL 200, r2 error -> UNKNOWN, r3 PASS 300, r4 PASS 100 -> 400 / 600
    close(&bb["posture"]["points"], 400.0);
    close(&bb["posture"]["max_points"], 600.0);

    // scope: XCCDF models are the mean of the devices
    let s = &base["scope"];
    close(&s["xccdf_default"]["mean_score"], (700.0 / 9.0 + 100.0 / 3.0) / 2.0);
    close(&s["xccdf_flat"]["mean_score"], 4.5);
    close(&s["xccdf_flat"]["mean_maximum"], 6.5);
    close(&s["xccdf_flat"]["percent"], 69.23);
    close(&s["xccdf_absolute"]["percent"], 0.0);
    // posture's scope score: r1 1/2 x 200 = 100, r2 0/1 x 100 = 0, r3 2/2 x 300, r4 1/1 x 100 -> 500 / 700
    close(&s["posture"]["points"], 500.0);
    close(&s["posture"]["max_points"], 700.0);
    close(&s["posture"]["percent"], 71.43);

    // the same events as an Avro object container file: the same report
    let schema = posture_avro::schemas::config_change();
    let mut w = apache_avro::Writer::new(schema, Vec::new());
    for line in std::fs::read_to_string(&events).unwrap().lines() {
        let ev = posture_core::ConfigChange::from_json(line).unwrap();
        w.append(posture_avro::reference::to_value(&ev)).unwrap();
    }
    let avro_path = dir.join("scan.avro");
    std::fs::write(&avro_path, w.into_inner().unwrap()).unwrap();
    let (code, avro_out, err) = posture(&[
        "baseline",
        "score-xccdf",
        "--baselines",
        baselines.to_str().unwrap(),
        "--events",
        avro_path.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&avro_out).unwrap(), v);

    // the table names every model
    let (code, out, _) = posture(&[
        "baseline",
        "score-xccdf",
        "--baselines",
        baselines.to_str().unwrap(),
        "--events",
        e,
    ]);
    assert_eq!(code, 0);
    for m in [
        "xccdf_default",
        "xccdf_flat",
        "xccdf_flat_unweighted",
        "xccdf_absolute",
        "scope (2 devices)",
    ] {
        assert!(out.contains(m), "{m} missing in\n{out}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn errors_are_clear() {
    let (code, _, err) = posture(&[
        "baseline",
        "import-xccdf",
        &fixture("benchmark.xml"),
        "--profile",
        "nope",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("benchmark.xml: Profile nope: no such profile in Benchmark xccdf_org.example_benchmark_small"),
        "{err}"
    );
    let (code, _, err) = posture(&["import-results", &fixture("benchmark.xml")]);
    assert_eq!(code, 2);
    assert!(err.contains("no XCCDF 1.2 TestResult"), "{err}");
    let (code, out, _) = posture(&["baseline", "import-xccdf", &fixture("benchmark.xml"), "--list-profiles"]);
    assert_eq!(code, 0);
    assert!(out.contains("xccdf_org.example_profile_p  Example profile"), "{out}");
}
