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
