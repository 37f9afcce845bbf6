//! Embeds every migration of `schemas/clickhouse/` (files named `NNN_name.sql`) and the trend
//! queries (`schemas/clickhouse/queries.sql`) into the library, so a shipped binary needs no
//! schema directory. Adding a migration file needs no code change.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let dir = manifest.join("../../schemas/clickhouse");
    let dir = dir
        .canonicalize()
        .unwrap_or_else(|e| panic!("schema directory {}: {e}", dir.display()));
    println!("cargo:rerun-if-changed={}", dir.display());

    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            is_migration(&name).then_some((name, p))
        })
        .collect();
    files.sort();
    for w in files.windows(2) {
        if w[0].0[..3] == w[1].0[..3] {
            panic!("two migrations with number {}: {} and {}", &w[0].0[..3], w[0].0, w[1].0);
        }
    }

    let mut code = String::from("/// Every migration of `schemas/clickhouse/`, in order: (file name, SQL text).\n");
    code.push_str("pub static MIGRATIONS: &[(&str, &str)] = &[\n");
    for (name, path) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(code, "    ({name:?}, include_str!({:?})),", path.display().to_string()).unwrap();
    }
    code.push_str("];\n");
    let queries = dir.join("queries.sql");
    println!("cargo:rerun-if-changed={}", queries.display());
    writeln!(
        code,
        "/// The text of `schemas/clickhouse/queries.sql`.\npub static QUERIES_SQL: &str = include_str!({:?});",
        queries.display().to_string()
    )
    .unwrap();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("embedded.rs");
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
}

/// `NNN_name.sql`: three digits, an underscore, a name.
fn is_migration(name: &str) -> bool {
    let b = name.as_bytes();
    name.len() > 8 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b'_' && name.ends_with(".sql")
}
