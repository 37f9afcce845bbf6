//! The previous release beside this build, in the same run: its `posture-bench` built from a git
//! tag of this repository, its evaluator figures measured on the same machine right before this
//! build's, and the instructions per event of both counted by callgrind.
//!
//! Wall-clock figures on a shared 2-core machine move by 10-15% from run to run; measuring the
//! previous release in the same run (and interleaved with this build, fleet size by fleet size)
//! is what makes a ratio between them mean something. Callgrind's instruction counts do not
//! move at all, and show what a change did where the clock cannot.
//!
//! Callgrind counts only inside the per-record step (`Step::handle`) and the evaluator's flush,
//! the code the events/s figures time, and dumps its counts after each flush: the first dump is
//! the pass without rows, the rest the pass with them. Both builds have those two functions, so
//! the same command counts either.

use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A built previous release.
pub struct Previous {
    /// What was asked for (a tag or commit).
    pub rev: String,
    /// Its `posture-bench` binary.
    pub bin: PathBuf,
}

/// The newest tag before `HEAD` (`git describe --tags --abbrev=0 HEAD~1`): the previous release.
pub fn previous_tag(repo: &Path) -> Result<String> {
    let out = git(repo, &["describe", "--tags", "--abbrev=0", "HEAD~1"])?;
    ensure!(
        !out.is_empty(),
        "no tag before HEAD to measure against: pass --against TAG_OR_COMMIT, or leave --against out"
    );
    Ok(out)
}

/// The repository this build comes from (the working directory's).
pub fn repository() -> Result<PathBuf> {
    Ok(PathBuf::from(git(Path::new("."), &["rev-parse", "--show-toplevel"])?))
}

fn git(repo: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run git (the previous release is built from this repository's history)")?;
    ensure!(out.status.success(), "git {} failed ({})", args.join(" "), out.status);
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Builds `posture-bench` of `rev` under `work/release/` (its sources exported with
/// `git archive`, its target directory kept between runs, so only the first build of a release
/// takes long), or finds it built already.
pub fn build(repo: &Path, rev: &str, work: &Path, say: &dyn Fn(String)) -> Result<Previous> {
    let sha = git(repo, &["rev-parse", "--verify", &format!("{rev}^{{commit}}")])
        .with_context(|| format!("{rev} is no commit of {}", repo.display()))?;
    let root = work.join("release");
    let dir = root.join(&sha[..12]);
    let bin = dir.join("posture-bench");
    if bin.exists() {
        say(format!(
            "previous release {rev} ({}): built already, {}",
            &sha[..12],
            bin.display()
        ));
        return Ok(Previous { rev: rev.into(), bin });
    }
    let src = dir.join("src");
    if src.exists() {
        std::fs::remove_dir_all(&src).with_context(|| format!("cannot clear {}", src.display()))?;
    }
    std::fs::create_dir_all(&src).with_context(|| format!("cannot create {}", src.display()))?;
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["archive", "--format=tar", &sha])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run git archive")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&src)
        .stdin(archive.stdout.take().expect("piped"))
        .status()
        .context("cannot run tar")?;
    ensure!(
        archive.wait()?.success() && tar.success(),
        "exporting {rev} into {} failed",
        src.display()
    );
    let target = root.join("target");
    say(format!(
        "previous release {rev} ({}): building its posture-bench in {} (the first build takes several minutes; later runs reuse it)",
        &sha[..12],
        target.display()
    ));
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "posture-bench",
            "--manifest-path",
        ])
        .arg(src.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .context("cannot run cargo")?;
    ensure!(status.success(), "building {rev} failed ({status})");
    std::fs::copy(target.join("release/posture-bench"), &bin)
        .with_context(|| format!("cannot copy to {}", bin.display()))?;
    Ok(Previous { rev: rev.into(), bin })
}

/// The evaluator figures of another `posture-bench` (events/s without and with the rows), run
/// with the same plan.
pub fn evaluator_rates(
    bin: &Path,
    devices: usize,
    events: usize,
    settings: usize,
    passes: usize,
    work: &Path,
) -> Result<(f64, f64)> {
    let json = work.join(format!("release-evaluator-{devices}.json"));
    // Never an old run's figures: the file is made anew or the run fails.
    if json.exists() {
        std::fs::remove_file(&json).with_context(|| format!("cannot remove {}", json.display()))?;
    }
    let status = Command::new(bin)
        .args(["--only", "evaluator"])
        .args(["--devices", &devices.to_string()])
        .args(["--events", &events.to_string()])
        .args(["--settings", &settings.to_string()])
        .args(["--passes", &passes.to_string()])
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    ensure!(status.success(), "{} failed ({status})", bin.display());
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    let f = &v[format!("evaluator_{devices}")];
    match (f["events_per_sec"].as_f64(), f["events_per_sec_with_rows"].as_f64()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => bail!("{}: no evaluator figures in {}", bin.display(), json.display()),
    }
}

/// Instructions per drift event counted by callgrind: without rows, and with them.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Instructions {
    /// decode + evaluate + emit.
    pub per_event: f64,
    /// The same, plus the ClickHouse rows.
    pub per_event_with_rows: f64,
}

/// The largest event count callgrind is run with: above it the pass with rows reaches
/// `--batch-rows` and flushes inside the pass, which would split its count.
pub const MAX_CALLGRIND_EVENTS: usize = 5_000;

/// Counts the instructions per event of `bin`'s evaluator under callgrind (`devices` devices,
/// `events` drift events, one pass each way). `extra`: more arguments for `bin`.
pub fn instructions(
    bin: &Path,
    extra: &[&str],
    devices: usize,
    events: usize,
    settings: usize,
    out_dir: &Path,
) -> Result<Instructions> {
    ensure!(
        (1..=MAX_CALLGRIND_EVENTS).contains(&events),
        "--callgrind-events must be 1..={MAX_CALLGRIND_EVENTS} (or 0 for none)"
    );
    if out_dir.exists() {
        std::fs::remove_dir_all(out_dir)?;
    }
    std::fs::create_dir_all(out_dir)?;
    let prefix = out_dir.join("callgrind.out");
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", prefix.display()))
        .arg("--collect-atstart=no")
        // The futures' poll functions themselves, by their exact names: a wider pattern would
        // also match closures nested in them, and each match toggles collection.
        .arg("--toggle-collect=posture_stage::step::Step<*>::handle::{{closure}}")
        .arg("--toggle-collect=posture_bench::evaluator::flush::{{closure}}")
        .arg("--dump-after=posture_bench::evaluator::flush::{{closure}}")
        .arg(bin)
        .args(["--only", "evaluator", "--passes", "1"])
        .args(["--devices", &devices.to_string()])
        .args(["--events", &events.to_string()])
        .args(["--settings", &settings.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let status = match status {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("valgrind not found: install it (apt-get install valgrind), or pass --callgrind-events 0")
        }
        Err(e) => return Err(e).context("cannot run valgrind"),
    };
    ensure!(
        status.success(),
        "valgrind --tool=callgrind {} failed ({status})",
        bin.display()
    );
    // callgrind.out.1 is the pass without rows; callgrind.out.2 (and any later dump, and the
    // final file) the pass with them.
    let mut dumps = Vec::new();
    for n in 1.. {
        let p = out_dir.join(format!("callgrind.out.{n}"));
        if !p.exists() {
            break;
        }
        dumps.push(summary(&p)?);
    }
    let rest = summary(&prefix)?;
    // Exactly one flush per pass (at most MAX_CALLGRIND_EVENTS events keep the pass with rows
    // below --batch-rows): two dumps, nothing after them.
    ensure!(
        dumps.len() == 2 && dumps.iter().all(|&d| d > 0) && rest == 0,
        "callgrind's counts of {} are not one pass without rows and one with them (dumps {dumps:?}, after them {rest}): are Step::handle and evaluator::flush still functions of that build, flushed once per pass?",
        bin.display()
    );
    let without = dumps[0] as f64;
    let with = dumps[1] as f64;
    Ok(Instructions {
        per_event: without / events as f64,
        per_event_with_rows: with / events as f64,
    })
}

/// The `summary:` (instructions) of a callgrind output file.
fn summary(path: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("summary:").or_else(|| l.strip_prefix("totals:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{}: no summary line", path.display()))
}
