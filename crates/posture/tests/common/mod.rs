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
