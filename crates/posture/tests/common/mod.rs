//! What the binary's integration tests share.

use std::process::Command;

/// Runs the `posture` binary with `args` and extra environment `env`;
/// panics with its stderr unless it succeeds. Returns its stdout.
pub fn posture(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_posture"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run posture");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "posture {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Removes the `cut` a score read from ClickHouse carries (what it reflects; embedded mode has
/// none) after checking its shape: every partition with its last offset and watermark, and
/// `complete_through` the earliest watermark. Returns the cut.
#[allow(dead_code)]
pub fn take_cut(score: &mut serde_json::Value) -> serde_json::Value {
    let cut = score
        .as_object_mut()
        .and_then(|o| o.remove("cut"))
        .unwrap_or_else(|| panic!("a score read from ClickHouse says what it reflects: {score}"));
    let parts = cut["partitions"].as_array().expect("cut.partitions");
    assert!(!parts.is_empty(), "{cut}");
    let earliest = parts
        .iter()
        .map(|p| {
            assert!(p["last_offset"].as_i64().is_some(), "{cut}");
            p["watermark"].as_str().expect("watermark").to_string()
        })
        .min();
    if cut["missing_partitions"].as_array().is_some_and(|m| m.is_empty()) {
        assert_eq!(cut["complete_through"].as_str().map(str::to_string), earliest, "{cut}");
    } else {
        assert!(cut["complete_through"].is_null(), "a partition is missing: {cut}");
    }
    cut
}

/// `text` parsed as JSON, or a panic that shows it.
#[allow(dead_code)]
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The instants at which the pipeline tests compare ClickHouse with embedded mode.
#[allow(dead_code)]
pub const COMPARED_INSTANTS: [&str; 3] = [
    "2026-11-01T00:30:00Z",
    "2026-11-01T06:00:00Z",
    "2026-11-01T11:59:59.999Z",
];

/// The scopes at which the pipeline tests compare: two tenants, a group, a category.
#[allow(dead_code)]
pub const COMPARED_SCOPES: [&[&str]; 4] = [
    &["--tenant", "t1"],
    &["--tenant", "t2"],
    &["--tenant", "t1", "--group", "finance"],
    &["--tenant", "t2", "--category", "network"],
];

/// Checks that `score` and `recommendations`, read from the ClickHouse that `env` names, equal
/// `evaluate` over `events` (embedded mode) at every compared instant and scope, and that no
/// scope is empty. `label` names the server in failures. Returns how many scope-instants it
/// compared.
#[allow(dead_code)]
pub fn assert_reads_equal_embedded(baselines: &str, events: &str, env: &[(&str, &str)], label: &str) -> usize {
    let mut compared = 0;
    for at in COMPARED_INSTANTS {
        for scope in COMPARED_SCOPES {
            let common = [&["--baselines", baselines, "--format", "json", "--at", at][..], scope].concat();
            let embedded = json(&posture(
                &[&["evaluate", "--events", events][..], &common].concat(),
                &[],
            ));
            let mut score = json(&posture(&[&["score"][..], &common].concat(), env));
            let recs = json(&posture(&[&["recommendations"][..], &common].concat(), env));
            take_cut(&mut score);
            assert_eq!(score, embedded["score"], "{label}: score {scope:?} at {at}");
            assert_eq!(
                recs, embedded["recommendations"],
                "{label}: recommendations {scope:?} at {at}"
            );
            assert!(
                score["max_points"].as_f64().unwrap() > 0.0,
                "{label}: an empty scope proves nothing: {score}"
            );
            compared += 1;
        }
    }
    compared
}
