//! The configuration file: one TOML file whose keys are the long option
//! names of the subcommands (`brokers = "..."`, `batch-rows = 20000`).
//!
//! Precedence, highest first: command-line option, `POSTURE_*` environment
//! variable, configuration file, built-in default. The file is found with
//! `--config FILE` (before or after the subcommand) or `POSTURE_CONFIG`.
//!
//! How: every option that may be configured has an `env = "POSTURE_..."`
//! attribute; before the command line is parsed, each key of the file sets
//! its option's environment variable unless the environment already has it.
//! Keys are checked against the options that exist, so a typo is an error,
//! not a silently ignored setting. Secrets are refused in the file: they
//! come from the environment or from a file named by a `*-file` option.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The file named by `--config` in `args` or by `POSTURE_CONFIG`.
pub fn config_path(args: &[String]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("POSTURE_CONFIG").map(PathBuf::from)
}

/// Long option name -> the environment variables of the options with that
/// name (one per subcommand family, usually one).
pub type Known = BTreeMap<String, BTreeSet<String>>;

/// Reads `path` and returns `(environment variable, value)` for every key.
pub fn read(path: &Path, known: &Known) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    parse(&text, known).with_context(|| format!("config file {}", path.display()))
}

/// Parses configuration text (see [`read`]).
pub fn parse(text: &str, known: &Known) -> Result<Vec<(String, String)>> {
    let table: toml::Table = text.parse().context("not valid TOML")?;
    let mut out = Vec::new();
    for (key, value) in table {
        let lower = key.to_ascii_lowercase();
        if (lower.contains("password") || lower.contains("secret") || lower.contains("token"))
            && !lower.ends_with("-file")
            && !lower.ends_with("_file")
        {
            bail!(
                "key {key:?}: secrets are not read from the config file; set the environment variable \
                 (e.g. POSTURE_CLICKHOUSE_PASSWORD) or name a file with the matching *-file option"
            );
        }
        let Some(envs) = known.get(&key.replace('_', "-")) else {
            let names: Vec<&str> = known.keys().map(String::as_str).collect();
            bail!(
                "unknown key {key:?}; the keys are the long options: {}",
                names.join(", ")
            );
        };
        let v = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => {
                let mut parts = Vec::new();
                for i in items {
                    match i {
                        toml::Value::String(s) => parts.push(s),
                        toml::Value::Integer(n) => parts.push(n.to_string()),
                        other => bail!("key {key:?}: array items must be strings or integers, not {other}"),
                    }
                }
                parts.join(",")
            }
            other => bail!("key {key:?}: expected a string, number, boolean or array, not {other}"),
        };
        for env in envs {
            out.push((env.clone(), v.clone()));
        }
    }
    Ok(out)
}

/// Every long option with an `env` in `cmd` and its subcommands.
pub fn known_options(cmd: &clap::Command) -> Known {
    let mut out = Known::new();
    collect(cmd, &mut out);
    out
}

fn collect(cmd: &clap::Command, out: &mut Known) {
    for a in cmd.get_arguments() {
        if let (Some(env), Some(long)) = (a.get_env(), a.get_long()) {
            let env = env.to_string_lossy().into_owned();
            if env != "POSTURE_CONFIG" {
                out.entry(long.to_string()).or_default().insert(env);
            }
        }
    }
    for s in cmd.get_subcommands() {
        collect(s, out);
    }
}

/// Applies the file's settings as environment defaults (the environment
/// wins). Call before parsing the command line, while single-threaded.
pub fn apply(settings: Vec<(String, String)>) {
    for (env, v) in settings {
        if std::env::var_os(&env).is_none() {
            // Single-threaded: called at the start of main, before any thread exists.
            std::env::set_var(env, v);
        }
    }
}

/// Reads a secret: the variable `env` if set, else the first line of the
/// file `file` if given, else `None`. Never logged.
pub fn secret(env: &str, file: Option<&Path>) -> Result<Option<String>> {
    // An empty variable is no secret (it would hide the file, e.g. turn a token off unseen).
    if let Ok(v) = std::env::var(env) {
        if !v.is_empty() {
            return Ok(Some(v));
        }
    }
    match file {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("cannot read secret file {}", f.display()))?;
            Ok(Some(text.lines().next().unwrap_or_default().to_string()))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Known {
        [
            ("brokers", "POSTURE_KAFKA_BROKERS"),
            ("batch-rows", "POSTURE_BATCH_ROWS"),
            ("schema-ids", "POSTURE_SCHEMA_IDS"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), BTreeSet::from([b.to_string()])))
        .collect()
    }

    #[test]
    fn keys_become_environment_defaults() {
        let got = parse(
            "brokers = \"k1:9092\"\nbatch-rows = 20000\nschema_ids = [1, 7]\n",
            &known(),
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("POSTURE_BATCH_ROWS".to_string(), "20000".to_string()),
                ("POSTURE_KAFKA_BROKERS".to_string(), "k1:9092".to_string()),
                ("POSTURE_SCHEMA_IDS".to_string(), "1,7".to_string()),
            ]
        );
    }

    #[test]
    fn unknown_keys_and_secrets_are_errors() {
        let e = parse("batch-rowz = 1", &known()).unwrap_err().to_string();
        assert!(
            e.contains("unknown key \"batch-rowz\"") && e.contains("batch-rows"),
            "{e}"
        );
        let e = parse("clickhouse-password = \"x\"", &known()).unwrap_err().to_string();
        assert!(e.contains("secrets are not read"), "{e}");
        assert!(!e.contains("\"x\""), "the secret itself must not be echoed: {e}");
        let e = parse("brokers = {a = 1}", &known()).unwrap_err().to_string();
        assert!(e.contains("unknown key") || e.contains("expected"), "{e}");
        assert!(parse("not toml [", &known()).is_err());
    }

    #[test]
    fn config_path_from_args() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            config_path(&a(&["posture", "run", "--config", "p.toml"])),
            Some("p.toml".into())
        );
        assert_eq!(
            config_path(&a(&["posture", "--config=q.toml", "run"])),
            Some("q.toml".into())
        );
    }
}
