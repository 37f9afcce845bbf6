//! Schema migrations: the files of `schemas/clickhouse/` named `NNN_name.sql`, embedded at build
//! time and applied in file-name order.
//!
//! [`migrate`] creates the database if needed and the bookkeeping table `schema_migrations`
//! (name, checksum, applied_at), applies every migration not recorded there, and records it.
//! A second run applies nothing. A recorded migration whose text has changed since is an error
//! (write a new migration instead of editing an applied one). The migrations themselves are
//! idempotent (`CREATE TABLE IF NOT EXISTS`; an `ALTER TABLE ... ADD COLUMN` of one column, which
//! 18.16 cannot say IF NOT EXISTS of, counts as done when the column exists, and a `RENAME TABLE`
//! when its new name exists), so a run that dies
//! between applying a file and recording it is safely repeated. Two instances migrating at the same moment may both apply
//! and record a file; that is harmless for DDL, but not for a backfill (migration 010 fills
//! `score_rollup` from `score_deltas`, each step only while its level is empty: two runs at once,
//! or one interrupted half-way through a level, leave that level wrong). Upgrade with every
//! pipeline stopped and one `posture migrate`.

use crate::cluster::{on_cluster, ClusterStatement, ClusterTarget, Layout};
use crate::embedded::MIGRATIONS;
use crate::sql::{is_identifier, split_statements};
use crate::{Result, SinkError};
use clickhouse::Client;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// The bookkeeping table, created by [`migrate`] in the target database.
pub const SCHEMA_MIGRATIONS_DDL: &str = "CREATE TABLE IF NOT EXISTS schema_migrations \
     (name String, checksum UInt64, applied_at DateTime) ENGINE = MergeTree() ORDER BY name";

/// One embedded migration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// File name, e.g. `001_score_deltas.sql`.
    pub name: &'static str,
    /// The file's text.
    pub sql: &'static str,
}

impl Migration {
    /// The statements of the file, in order.
    pub fn statements(&self) -> Vec<String> {
        split_statements(self.sql)
    }

    /// A 64-bit FNV-1a hash of the file's text, recorded in `schema_migrations`.
    pub fn checksum(&self) -> u64 {
        self.sql.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
}

/// Every embedded migration, in the order they are applied.
pub fn migrations() -> Vec<Migration> {
    MIGRATIONS.iter().map(|&(name, sql)| Migration { name, sql }).collect()
}

#[derive(clickhouse::Row, Serialize, Deserialize)]
struct Applied {
    name: String,
    checksum: u64,
    applied_at: u32,
}

/// Applies the migrations to `database` (created if missing) through `client` (its own default
/// database does not matter). Returns the names of the files applied by this call, in order;
/// empty when everything was applied before. Errors name the file and statement that failed.
pub async fn migrate(client: &Client, database: &str) -> Result<Vec<String>> {
    migrate_with(client, database, None).await
}

/// [`migrate`] on the ClickHouse cluster `cluster` (a name of the servers' `remote_servers`):
/// every DDL statement `ON CLUSTER`, every table replicated, data statements once, and with
/// several shards the raw tables sharded behind `Distributed` tables (see [`crate::cluster`];
/// the layout comes from the cluster's shard count in `system.clusters`). `client` may point at
/// any node of the cluster; `schema_migrations` is replicated on every node, so any node knows
/// what was applied. Returns the layout with the files applied.
pub async fn migrate_on_cluster(client: &Client, database: &str, cluster: &str) -> Result<(Layout, Vec<String>)> {
    let layout = cluster_layout(client, cluster).await?;
    let to = ClusterTarget {
        database,
        cluster,
        layout,
    };
    Ok((layout, migrate_with(client, database, Some(&to)).await?))
}

/// The layout for `cluster`: [`Layout::Sharded`] when `system.clusters` of the server `client`
/// reaches names more than one shard, else [`Layout::Replicated`]; an error when it does not
/// name the cluster.
pub async fn cluster_layout(client: &Client, cluster: &str) -> Result<Layout> {
    let (shards, nodes): (u32, u64) = client
        .query("SELECT toUInt32(max(shard_num)), count() FROM system.clusters WHERE cluster = ?")
        .bind(cluster)
        .fetch_one()
        .await
        .map_err(|source| SinkError::Migration {
            file: "(cluster)".into(),
            statement: "SELECT ... FROM system.clusters".into(),
            source,
        })?;
    if nodes == 0 {
        return Err(SinkError::Cluster(format!(
            "cluster {cluster} is not in system.clusters of this server (check its remote_servers)"
        )));
    }
    Ok(if shards > 1 {
        Layout::Sharded
    } else {
        Layout::Replicated
    })
}

/// `stmt` of `file`, as it runs here: as written, or rewritten for the cluster.
fn for_target(stmt: &str, file: &str, to: Option<&ClusterTarget>) -> Result<Vec<String>> {
    match to {
        None => Ok(vec![stmt.to_string()]),
        Some(to) => Ok(on_cluster(stmt, file, to)
            .map_err(SinkError::Cluster)?
            .into_iter()
            .map(|c| match c {
                ClusterStatement::EveryNode(s) | ClusterStatement::Once(s) => s,
            })
            .collect()),
    }
}

async fn migrate_with(client: &Client, database: &str, to: Option<&ClusterTarget<'_>>) -> Result<Vec<String>> {
    if !is_identifier(database) {
        return Err(SinkError::InvalidDatabase(database.to_string()));
    }
    let server = client.clone().with_database("system");
    for create_db in for_target(
        &format!("CREATE DATABASE IF NOT EXISTS {database}"),
        "(create database)",
        to,
    )? {
        server
            .query_raw(&create_db)
            .execute()
            .await
            .map_err(|source| SinkError::Migration {
                file: "(create database)".into(),
                statement: create_db.clone(),
                source,
            })?;
    }
    // Sharded: a data statement's INSERT into a Distributed table returns once every shard has
    // its rows (the next statement may read them).
    let db = match to {
        Some(_) => client
            .clone()
            .with_database(database)
            .with_setting("insert_distributed_sync", "1"),
        None => client.clone().with_database(database),
    };
    for bookkeeping in for_target(SCHEMA_MIGRATIONS_DDL, "000_schema_migrations.sql", to)? {
        db.query_raw(&bookkeeping)
            .execute()
            .await
            .map_err(|source| SinkError::Migration {
                file: "(schema_migrations)".into(),
                statement: bookkeeping.clone(),
                source,
            })?;
    }
    let recorded: Vec<Applied> = db
        .query_raw("SELECT name, checksum, applied_at FROM schema_migrations ORDER BY name")
        .fetch_all()
        .await
        .map_err(|source| SinkError::Migration {
            file: "(schema_migrations)".into(),
            statement: "SELECT ... FROM schema_migrations".into(),
            source,
        })?;
    let recorded: BTreeMap<String, u64> = recorded.into_iter().map(|a| (a.name, a.checksum)).collect();

    let mut applied = Vec::new();
    for m in migrations() {
        if let Some(&sum) = recorded.get(m.name) {
            if sum != m.checksum() {
                return Err(SinkError::MigrationChanged {
                    file: m.name.to_string(),
                    recorded: sum,
                    now: m.checksum(),
                });
            }
            continue;
        }
        for stmt in m
            .statements()
            .iter()
            .map(|s| for_target(s, m.name, to))
            .collect::<Result<Vec<_>>>()?
            .concat()
        {
            match db.query_raw(&stmt).execute().await {
                Ok(()) => {}
                // 18.16 has no ADD COLUMN IF NOT EXISTS: a column that is there is done.
                Err(e) if adds_one_column(&stmt) && e.to_string().contains("already exists") => {}
                // Nor RENAME TABLE ... IF EXISTS: a table renamed by an earlier run is done.
                Err(e)
                    if stmt.trim_start().starts_with("RENAME TABLE ") && e.to_string().contains("already exists") => {}
                Err(source) => {
                    return Err(SinkError::Migration {
                        file: m.name.to_string(),
                        statement: first_line(&stmt),
                        source,
                    })
                }
            }
        }
        let mut insert = db
            .insert::<Applied>("schema_migrations")
            .await
            .map_err(|source| record_error(m.name, source))?;
        insert
            .write(&Applied {
                name: m.name.to_string(),
                checksum: m.checksum(),
                applied_at: now_secs(),
            })
            .await
            .map_err(|source| record_error(m.name, source))?;
        insert.end().await.map_err(|source| record_error(m.name, source))?;
        applied.push(m.name.to_string());
    }
    Ok(applied)
}

/// Whether `stmt` is `ALTER TABLE t ADD COLUMN c ...` of a single column: the one kind of
/// statement that [`migrate`] repeats by taking "column already exists" as success.
fn adds_one_column(stmt: &str) -> bool {
    let s = stmt.trim_start();
    s.starts_with("ALTER TABLE ") && s.matches("ADD COLUMN ").count() == 1 && !s.contains(',')
}

fn record_error(file: &str, source: clickhouse::error::Error) -> SinkError {
    SinkError::Migration {
        file: file.to_string(),
        statement: "INSERT INTO schema_migrations".into(),
        source,
    }
}

fn first_line(stmt: &str) -> String {
    stmt.lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
        .unwrap_or(stmt)
        .trim()
        .to_string()
}

fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().min(u32::MAX as u64) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeds_every_migration_file_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/clickhouse");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.len() > 4 && n.as_bytes()[..3].iter().all(u8::is_ascii_digit) && n.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = migrations().iter().map(|m| m.name).collect();
        assert_eq!(embedded, on_disk);
        assert!(embedded.len() >= 3);
        for m in migrations() {
            let stmts = m.statements();
            assert!(!stmts.is_empty(), "{} has no statement", m.name);
            for s in &stmts {
                // DDL says IF [NOT] EXISTS; a backfill INSERT runs only while its target is empty.
                let guarded_insert =
                    s.starts_with("INSERT INTO") && s.contains("(SELECT count() FROM") && s.contains(") = 0");
                assert!(
                    s.contains("IF NOT EXISTS")
                        || s.contains("IF EXISTS")
                        || guarded_insert
                        || adds_one_column(s)
                        || s.starts_with("RENAME TABLE "),
                    "{}: statements must be idempotent: {s}",
                    m.name
                );
                assert!(
                    !s.contains("{db}") && !s.contains('.'),
                    "{}: no database names: {s}",
                    m.name
                );
            }
        }
    }

    #[test]
    fn only_single_column_adds_are_repeated() {
        assert!(adds_one_column("ALTER TABLE transitions ADD COLUMN seq2 UInt32"));
        assert!(!adds_one_column("ALTER TABLE t ADD COLUMN a UInt8, ADD COLUMN b UInt8"));
        assert!(!adds_one_column("ALTER TABLE t DROP COLUMN a"));
        assert!(!adds_one_column(
            "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = Memory"
        ));
    }

    #[test]
    fn checksum_is_stable() {
        let m = Migration { name: "x", sql: "abc" };
        assert_eq!(m.checksum(), 0xe71f_a219_0541_574b);
    }
}
