//! Reading baseline directories: the I/O around `Catalog::from_sources`.

use anyhow::{bail, Context, Result};
use posture_core::{BaselineError, Catalog, Category};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The baseline files of a directory, sorted by name.
fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read baseline directory {}", dir.display()))?;
    let mut files = Vec::new();
    for e in entries {
        let path = e.with_context(|| format!("cannot list {}", dir.display()))?.path();
        if path.is_file() && matches!(path.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("no baseline files (*.yaml, *.yml) in {}", dir.display());
    }
    Ok(files)
}

/// Loads every baseline of a directory. `Ok(Err(errors))` when the files were
/// read but are invalid.
pub fn load(dir: &Path) -> Result<std::result::Result<Catalog, Vec<BaselineError>>> {
    let mut sources = Vec::new();
    for f in files(dir)? {
        let text = std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        sources.push((f.display().to_string(), text));
    }
    Ok(Catalog::from_sources(&sources))
}

/// Loads a directory or fails with every error listed.
pub fn load_or_fail(dir: &Path) -> Result<Catalog> {
    match load(dir)? {
        Ok(c) => Ok(c),
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            bail!(
                "{} error(s) in the baselines of {}; run `posture baseline validate {}`",
                errors.len(),
                dir.display(),
                dir.display()
            )
        }
    }
}

/// `posture baseline validate DIR`.
pub fn validate(dir: &Path) -> Result<ExitCode> {
    match load(dir)? {
        Ok(cat) => {
            for b in &cat.baselines {
                println!(
                    "ok   {} ({} {}): {} controls",
                    b.file,
                    b.id,
                    b.version,
                    b.controls.len()
                );
            }
            let per_cat: Vec<String> = Category::ALL
                .iter()
                .map(|c| format!("{} {}", c, cat.controls.iter().filter(|x| x.category == *c).count()))
                .collect();
            println!(
                "valid: {} baselines, {} controls ({}), {} distinct checks, {} setting keys",
                cat.baselines.len(),
                cat.controls.len(),
                per_cat.join(", "),
                cat.leaves.len(),
                cat.key_count()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors {
                println!("{e}");
            }
            let mut files: Vec<&str> = errors.iter().map(|e| e.file.as_str()).collect();
            files.dedup();
            println!("invalid: {} error(s) in {} file(s)", errors.len(), files.len());
            Ok(ExitCode::from(1))
        }
    }
}
