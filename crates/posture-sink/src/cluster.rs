//! posture's schema on a ClickHouse cluster: the same migrations, each statement rewritten for
//! the cluster ([`on_cluster`]): DDL runs `ON CLUSTER` (on every node, through ClickHouse's
//! distributed DDL queue in ZooKeeper), every `*MergeTree` engine becomes its `Replicated*`
//! twin, and data statements (the backfills of upgrades) run once, on the node migrate is
//! connected to, from which replication (and Distributed tables) take their rows where they go.
//!
//! Two layouts ([`Layout`]):
//!
//! * **Replicated** (a cluster of one shard): every table on every node under its own name; a
//!   write to any node reaches the others (with `insert_quorum`, before the INSERT returns), and
//!   the queries read any node unchanged.
//! * **Sharded** (several shards): each raw table (transitions, evidence, inventory, device
//!   state, snapshots, exception syncs: rows per input record) is a replicated table of the same
//!   name in `<database>_local` on every node, holding its shard's rows, behind a `Distributed`
//!   table in `<database>` sharded by the source partition ([`shard_key`]); the trend store
//!   `score_rollup`, whose flush is one atomic part, and the small tables are replicated whole
//!   on every node ([`everywhere`]). Readers and writers name `<database>` as on one server.
//!
//! The replicated table's ZooKeeper path is `/clickhouse/tables/<shard>/<database>/<table>/<file>`:
//! `<shard>` the server's `{shard}` macro (or `all` for a table every node holds), the database
//! (tests and tenants of one ZooKeeper keep apart), the table, and the migration file that
//! created it, so a table created again under an old name (migration 014 renames `transitions`
//! and creates a new one) never meets its predecessor's replicas. `{replica}` is each server's
//! macro, unique in the cluster. Every name is qualified with its database: the other nodes run
//! the DDL in their own default database.

use crate::sql::is_identifier;

/// How posture's tables are laid out on a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One shard: every table replicated on every node, under its own name.
    Replicated,
    /// Several shards: the raw tables split by source partition (a replicated local table per
    /// shard in [`local_database`], a `Distributed` table under the table's name over them), the
    /// small and summed tables ([`everywhere`]) replicated whole on every node.
    Sharded,
}

/// Where the migrations go: the database, the cluster, and the layout.
#[derive(Clone, Copy, Debug)]
pub struct ClusterTarget<'a> {
    /// posture's database (what every reader and writer names).
    pub database: &'a str,
    /// The cluster's name in the servers' `remote_servers`.
    pub cluster: &'a str,
    /// One shard or several.
    pub layout: Layout,
}

/// The database of the shards' local tables in the [`Layout::Sharded`] layout: `<database>_local`.
pub fn local_database(database: &str) -> String {
    format!("{database}_local")
}

/// The tables replicated whole on every node in the sharded layout: what the API writes
/// (`exceptions`, `tasks`), the baseline catalogs, the migrations' bookkeeping, and the trend
/// store `score_rollup`, whose flush must stay one part (its cut rows name the prefix of every
/// partition the flush wrote; split over shards, no INSERT could be atomic). Each is read on
/// whichever node a query reaches, with no fan-out.
pub fn everywhere(table: &str) -> bool {
    matches!(
        table,
        "schema_migrations" | "exceptions" | "tasks" | "baseline_catalogs" | "score_rollup"
    )
}

/// The sharding key of a sharded table: the Kafka partition of the input record it comes from,
/// so that a device's rows (records are keyed by device) and a partition's rows all live on one
/// shard. `None`: not a table of posture's (a new migration must place its table here).
pub fn shard_key(table: &str) -> Option<&'static str> {
    match table {
        "score_deltas"
        | "transitions"
        | "transitions_monthly"
        | "control_state"
        | "device_settings"
        | "device_inventory"
        | "exception_syncs"
        | "device_evidence"
        | "device_state" => Some("source_partition"),
        "engine_snapshots" => Some("partition"),
        _ => None,
    }
}

/// How one migration statement runs on a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterStatement {
    /// DDL, rewritten to run on every node (`ON CLUSTER`, replicated engines).
    EveryNode(String),
    /// A data statement (INSERT ... SELECT): run once; replication (and, sharded, the
    /// Distributed tables) take its rows where they belong.
    Once(String),
}

/// Rewrites `stmt`, a statement of the migration file `file`, for the cluster `to` (see the
/// module's documentation): one statement, or several in order (sharded: the local table and
/// the Distributed table over it). Statements the rewrite does not know are an error naming
/// them, not a guess.
pub fn on_cluster(stmt: &str, file: &str, to: &ClusterTarget) -> Result<Vec<ClusterStatement>, String> {
    let (database, cluster) = (to.database, to.cluster);
    if !is_identifier(cluster) {
        return Err(format!(
            "cluster name {cluster:?} is not an identifier (letters, digits, _)"
        ));
    }
    let local = local_database(database);
    let s = stmt.trim();
    let words: Vec<&str> = s.split_whitespace().collect();
    let on = format!("ON CLUSTER {cluster}");
    // The object's name (word `n`), checked.
    let name_at = |n: usize| -> Result<&str, String> {
        let name = words
            .get(n)
            .ok_or_else(|| format!("{file}: no object name in: {s}"))?
            .split('(')
            .next()
            .unwrap_or_default();
        if !is_identifier(name) {
            return Err(format!("{file}: {name:?} is not a plain table name in: {s}"));
        }
        Ok(name)
    };
    // `s` with its word `n` (the object's name) replaced by `qualified ON CLUSTER c`.
    let rename_at = |n: usize, qualified: &str| -> Result<String, String> {
        name_at(n)?;
        let end = nth_word_end(s, n).ok_or_else(|| format!("{file}: cannot place ON CLUSTER in: {s}"))?;
        let start = nth_word_start(s, n).ok_or_else(|| format!("{file}: cannot place ON CLUSTER in: {s}"))?;
        Ok(format!("{}{qualified} {on}{}", &s[..start], &s[end..]))
    };
    // Where a table lives: `Some(key)` sharded by `key`, `None` whole on every node.
    let sharded = |table: &str| -> Result<Option<&'static str>, String> {
        match to.layout {
            Layout::Replicated => Ok(None),
            Layout::Sharded if everywhere(table) => Ok(None),
            Layout::Sharded => shard_key(table).map(Some).ok_or_else(|| {
                format!("{file}: table {table} is not placed for a sharded cluster (posture-sink cluster.rs: shard_key or everywhere)")
            }),
        }
    };
    let distributed = |table: &str, key: &str| {
        ClusterStatement::EveryNode(format!(
            "CREATE TABLE IF NOT EXISTS {database}.{table} {on} AS {local}.{table} ENGINE = Distributed({cluster}, {local}, {table}, {key})"
        ))
    };
    let upper: Vec<String> = words.iter().take(6).map(|w| w.to_ascii_uppercase()).collect();
    let starts = |p: &[&str]| upper.len() >= p.len() && p.iter().zip(&upper).all(|(a, b)| a == b);
    if starts(&["INSERT", "INTO"]) {
        return Ok(vec![ClusterStatement::Once(s.to_string())]);
    }
    if starts(&["CREATE", "TABLE", "IF", "NOT", "EXISTS"]) {
        let name = name_at(5)?;
        let key = sharded(name)?;
        let (home, zk_shard) = match key {
            Some(_) => (local.as_str(), "{shard}"),
            None if to.layout == Layout::Sharded => (database, "all"),
            None => (database, "{shard}"),
        };
        let mut text = rename_at(5, &format!("{home}.{name}"))?;
        // `CREATE TABLE t AS other`: the other nodes look `other` up in their default database.
        if words.get(6).is_some_and(|w| w.eq_ignore_ascii_case("AS")) {
            let other = words.get(7).copied().unwrap_or_default();
            if is_identifier(other) {
                if sharded(other)?.is_some() != key.is_some() {
                    return Err(format!("{file}: {name} AS {other}: one is sharded, the other not"));
                }
                let from = format!("{on} AS {other}");
                let to = format!("{on} AS {home}.{other}");
                text = text.replacen(&from, &to, 1);
            }
        }
        let mut out = vec![ClusterStatement::EveryNode(replicated_engine(
            &text, file, database, name, zk_shard,
        )?)];
        if let Some(key) = key {
            out.push(distributed(name, key));
        }
        return Ok(out);
    }
    if starts(&["CREATE", "VIEW", "IF", "NOT", "EXISTS"]) {
        // The other nodes run the view's query in their own default database: name its tables'.
        let name = name_at(5)?;
        return Ok(vec![ClusterStatement::EveryNode(qualify_from(
            &rename_at(5, &format!("{database}.{name}"))?,
            database,
        ))]);
    }
    if starts(&["CREATE", "DATABASE", "IF", "NOT", "EXISTS"]) {
        let mut out = vec![ClusterStatement::EveryNode(rename_at(5, name_at(5)?)?)];
        if to.layout == Layout::Sharded {
            out.push(ClusterStatement::EveryNode(rename_at(5, &local)?));
        }
        return Ok(out);
    }
    if starts(&["RENAME", "TABLE"]) && words.len() == 5 && words[3].eq_ignore_ascii_case("TO") {
        let (from, into) = (name_at(2)?, name_at(4)?);
        return Ok(match (sharded(from)?, sharded(into)?) {
            (Some(_), Some(key)) => vec![
                ClusterStatement::EveryNode(format!("RENAME TABLE {local}.{from} TO {local}.{into} {on}")),
                // A Distributed table names its local table: make it anew for the new name.
                ClusterStatement::EveryNode(format!("DROP TABLE IF EXISTS {database}.{from} {on}")),
                distributed(into, key),
            ],
            (None, None) => vec![ClusterStatement::EveryNode(format!(
                "RENAME TABLE {database}.{from} TO {database}.{into} {on}"
            ))],
            _ => {
                return Err(format!(
                    "{file}: RENAME {from} TO {into}: one is sharded, the other not"
                ))
            }
        });
    }
    if starts(&["ALTER", "TABLE"]) {
        let name = name_at(2)?;
        return Ok(match sharded(name)? {
            // ClickHouse refuses ALTER ... ON CLUSTER of a Distributed table over replicated
            // shards: the Distributed table is made anew over the altered local table instead
            // (it holds no data; migrations run with the pipeline stopped).
            Some(key) => vec![
                ClusterStatement::EveryNode(rename_at(2, &format!("{local}.{name}"))?),
                ClusterStatement::EveryNode(format!("DROP TABLE IF EXISTS {database}.{name} {on}")),
                distributed(name, key),
            ],
            None => vec![ClusterStatement::EveryNode(rename_at(
                2,
                &format!("{database}.{name}"),
            )?)],
        });
    }
    Err(format!(
        "{file}: a statement migrate cannot run on a cluster yet: {}",
        s.lines().next().unwrap_or(s)
    ))
}

/// `FROM table` -> `FROM database.table` for every plain table name after a `FROM` (subqueries
/// and already qualified names are left as they are).
fn qualify_from(stmt: &str, database: &str) -> String {
    let mut out = String::with_capacity(stmt.len() + 64);
    let mut rest = stmt;
    while let Some(i) = find_word(rest, "FROM") {
        let (head, tail) = rest.split_at(i + 4);
        out.push_str(head);
        let name_start = tail.len() - tail.trim_start().len();
        let name_len = tail[name_start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(tail.len() - name_start);
        let name = &tail[name_start..name_start + name_len];
        out.push_str(&tail[..name_start]);
        if is_identifier(name) {
            out.push_str(database);
            out.push('.');
        }
        out.push_str(name);
        rest = &tail[name_start + name_len..];
    }
    out.push_str(rest);
    out
}

/// The byte offset of the first `word` in `s` that stands alone (case-insensitive).
fn find_word(s: &str, word: &str) -> Option<usize> {
    let upper = s.to_ascii_uppercase();
    let mut from = 0;
    while let Some(i) = upper[from..].find(word) {
        let at = from + i;
        let before = upper[..at].chars().next_back();
        let after = upper[at + word.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        if boundary(before) && boundary(after) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// The byte offset where word `n` (0-based) of `s` starts.
fn nth_word_start(s: &str, n: usize) -> Option<usize> {
    let mut count = 0;
    let mut in_word = false;
    for (i, c) in s.char_indices() {
        if c.is_whitespace() {
            in_word = false;
        } else if !in_word {
            if count == n {
                return Some(i);
            }
            count += 1;
            in_word = true;
        }
    }
    None
}

/// The byte offset just after word `n` (0-based) of `s`.
fn nth_word_end(s: &str, n: usize) -> Option<usize> {
    let mut count = 0;
    let mut in_word = false;
    for (i, c) in s.char_indices() {
        if c.is_whitespace() {
            if in_word {
                if count == n {
                    return Some(i);
                }
                count += 1;
                in_word = false;
            }
        } else if !in_word {
            in_word = true;
            if count == n && c == '(' {
                return Some(i);
            }
        } else if count == n && c == '(' {
            return Some(i);
        }
    }
    (in_word && count == n).then_some(s.len())
}

/// `ENGINE = XMergeTree(args)` -> `ENGINE = ReplicatedXMergeTree('path', '{replica}', args)`.
/// `zk_shard` is the path's shard part: `{shard}` (each shard its own replicas) or `all` (one
/// table replicated on every node).
fn replicated_engine(stmt: &str, file: &str, database: &str, table: &str, zk_shard: &str) -> Result<String, String> {
    let key = "ENGINE = ";
    let at = stmt
        .find(key)
        .ok_or_else(|| format!("{file}: CREATE TABLE {table} names no engine"))?
        + key.len();
    let rest = &stmt[at..];
    let name_len = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
    let engine = &rest[..name_len];
    if !engine.ends_with("MergeTree") || engine.starts_with("Replicated") {
        return Err(format!(
            "{file}: table {table} has engine {engine}, which migrate cannot replicate"
        ));
    }
    let after = &rest[name_len..];
    let (args, tail) = match after.strip_prefix('(') {
        Some(inner) => {
            let close =
                matching_paren(inner).ok_or_else(|| format!("{file}: unbalanced engine arguments of {table}"))?;
            (inner[..close].trim(), &inner[close + 1..])
        }
        None => ("", after),
    };
    let stem = file.strip_suffix(".sql").unwrap_or(file);
    let path = format!("/clickhouse/tables/{zk_shard}/{database}/{table}/{stem}");
    let args = if args.is_empty() {
        String::new()
    } else {
        format!(", {args}")
    };
    Ok(format!(
        "{}Replicated{engine}('{path}', '{{replica}}'{args}){tail}",
        &stmt[..at]
    ))
}

/// The index of the `)` closing an already opened `(` in `s`.
fn matching_paren(s: &str) -> Option<usize> {
    let mut depth = 1;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLICATED: ClusterTarget = ClusterTarget {
        database: "db1",
        cluster: "c1",
        layout: Layout::Replicated,
    };
    const SHARDED: ClusterTarget = ClusterTarget {
        database: "db1",
        cluster: "c1",
        layout: Layout::Sharded,
    };

    fn every_to(s: &str, to: &ClusterTarget) -> Vec<String> {
        on_cluster(s, "014_x.sql", to)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|c| match c {
                ClusterStatement::EveryNode(t) => t,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn every(s: &str) -> String {
        let mut v = every_to(s, &REPLICATED);
        assert_eq!(v.len(), 1, "{v:?}");
        v.remove(0)
    }

    #[test]
    fn tables_are_replicated_on_every_node() {
        assert_eq!(
            every("CREATE TABLE IF NOT EXISTS transitions\n(\n  a UInt8\n)\nENGINE = MergeTree()\nORDER BY a"),
            "CREATE TABLE IF NOT EXISTS db1.transitions ON CLUSTER c1\n(\n  a UInt8\n)\nENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db1/transitions/014_x', '{replica}')\nORDER BY a"
        );
        assert_eq!(
            every("CREATE TABLE IF NOT EXISTS t (a UInt8, v UInt64) ENGINE = ReplacingMergeTree(v) ORDER BY a"),
            "CREATE TABLE IF NOT EXISTS db1.t ON CLUSTER c1 (a UInt8, v UInt64) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db1/t/014_x', '{replica}', v) ORDER BY a"
        );
        assert_eq!(
            every("CREATE TABLE IF NOT EXISTS s(a UInt8) ENGINE = SummingMergeTree((a, b)) ORDER BY a"),
            "CREATE TABLE IF NOT EXISTS db1.s ON CLUSTER c1(a UInt8) ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/db1/s/014_x', '{replica}', (a, b)) ORDER BY a"
        );
        assert_eq!(
            every("CREATE TABLE IF NOT EXISTS t AS old\nENGINE = MergeTree()\nORDER BY a"),
            "CREATE TABLE IF NOT EXISTS db1.t ON CLUSTER c1 AS db1.old\nENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db1/t/014_x', '{replica}')\nORDER BY a"
        );
    }

    #[test]
    fn other_ddl_runs_on_every_node_and_data_once() {
        assert_eq!(
            every("ALTER TABLE t ADD COLUMN b UInt8 DEFAULT 0"),
            "ALTER TABLE db1.t ON CLUSTER c1 ADD COLUMN b UInt8 DEFAULT 0"
        );
        assert_eq!(
            every("RENAME TABLE t TO t_old"),
            "RENAME TABLE db1.t TO db1.t_old ON CLUSTER c1"
        );
        assert_eq!(
            every("CREATE VIEW IF NOT EXISTS v AS SELECT 1"),
            "CREATE VIEW IF NOT EXISTS db1.v ON CLUSTER c1 AS SELECT 1"
        );
        assert_eq!(
            every("CREATE VIEW IF NOT EXISTS v AS SELECT a FROM t\nARRAY JOIN x UNION ALL SELECT a_from FROM (SELECT 1 FROM u) from_u"),
            "CREATE VIEW IF NOT EXISTS db1.v ON CLUSTER c1 AS SELECT a FROM db1.t\nARRAY JOIN x UNION ALL SELECT a_from FROM (SELECT 1 FROM db1.u) from_u"
        );
        assert_eq!(
            on_cluster("INSERT INTO t SELECT * FROM u", "f.sql", &SHARDED).unwrap(),
            vec![ClusterStatement::Once("INSERT INTO t SELECT * FROM u".into())]
        );
    }

    #[test]
    fn sharded_raw_tables_are_local_tables_behind_distributed_ones() {
        assert_eq!(
            every_to("CREATE TABLE IF NOT EXISTS transitions (a UInt8) ENGINE = MergeTree() ORDER BY a", &SHARDED),
            [
                "CREATE TABLE IF NOT EXISTS db1_local.transitions ON CLUSTER c1 (a UInt8) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db1/transitions/014_x', '{replica}') ORDER BY a",
                "CREATE TABLE IF NOT EXISTS db1.transitions ON CLUSTER c1 AS db1_local.transitions ENGINE = Distributed(c1, db1_local, transitions, source_partition)",
            ]
        );
        assert_eq!(
            every_to("CREATE TABLE IF NOT EXISTS transitions AS transitions_monthly ENGINE = MergeTree() ORDER BY a", &SHARDED)[0],
            "CREATE TABLE IF NOT EXISTS db1_local.transitions ON CLUSTER c1 AS db1_local.transitions_monthly ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db1/transitions/014_x', '{replica}') ORDER BY a",
        );
        assert_eq!(
            every_to("ALTER TABLE transitions ADD COLUMN b UInt8", &SHARDED),
            [
                "ALTER TABLE db1_local.transitions ON CLUSTER c1 ADD COLUMN b UInt8",
                "DROP TABLE IF EXISTS db1.transitions ON CLUSTER c1",
                "CREATE TABLE IF NOT EXISTS db1.transitions ON CLUSTER c1 AS db1_local.transitions ENGINE = Distributed(c1, db1_local, transitions, source_partition)",
            ]
        );
        assert_eq!(
            every_to("RENAME TABLE transitions TO transitions_monthly", &SHARDED),
            [
                "RENAME TABLE db1_local.transitions TO db1_local.transitions_monthly ON CLUSTER c1",
                "DROP TABLE IF EXISTS db1.transitions ON CLUSTER c1",
                "CREATE TABLE IF NOT EXISTS db1.transitions_monthly ON CLUSTER c1 AS db1_local.transitions_monthly ENGINE = Distributed(c1, db1_local, transitions_monthly, source_partition)",
            ]
        );
        assert_eq!(
            every_to("CREATE DATABASE IF NOT EXISTS db1", &SHARDED),
            [
                "CREATE DATABASE IF NOT EXISTS db1 ON CLUSTER c1",
                "CREATE DATABASE IF NOT EXISTS db1_local ON CLUSTER c1",
            ]
        );
    }

    #[test]
    fn sharded_small_and_summed_tables_are_whole_on_every_node() {
        assert_eq!(
            every_to("CREATE TABLE IF NOT EXISTS score_rollup (a UInt8) ENGINE = SummingMergeTree((a)) ORDER BY a", &SHARDED),
            ["CREATE TABLE IF NOT EXISTS db1.score_rollup ON CLUSTER c1 (a UInt8) ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/all/db1/score_rollup/014_x', '{replica}', (a)) ORDER BY a"]
        );
        assert_eq!(
            every_to("ALTER TABLE exceptions ADD COLUMN b UInt8", &SHARDED),
            ["ALTER TABLE db1.exceptions ON CLUSTER c1 ADD COLUMN b UInt8"]
        );
    }

    #[test]
    fn what_it_cannot_rewrite_is_an_error() {
        for bad in [
            "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = Memory",
            "DROP TABLE t",
            "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = ReplicatedMergeTree('/p', 'r') ORDER BY a",
        ] {
            assert!(on_cluster(bad, "f.sql", &REPLICATED).is_err(), "{bad}");
        }
        let bad_name = ClusterTarget {
            cluster: "c-1",
            ..REPLICATED
        };
        assert!(on_cluster("ALTER TABLE t ADD COLUMN b UInt8", "f.sql", &bad_name).is_err());
        // Sharded, a table must be placed: sharded by a key, or whole on every node.
        let e = on_cluster(
            "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = MergeTree() ORDER BY a",
            "f.sql",
            &SHARDED,
        )
        .unwrap_err();
        assert!(e.contains("not placed"), "{e}");
        assert!(on_cluster("RENAME TABLE transitions TO exceptions", "f.sql", &SHARDED).is_err());
    }

    /// Every statement of every migration can run on a cluster, in both layouts.
    #[test]
    fn every_migration_runs_on_a_cluster() {
        for layout in [Layout::Replicated, Layout::Sharded] {
            let to = ClusterTarget {
                database: "posture",
                cluster: "posture",
                layout,
            };
            for m in crate::migrations() {
                for s in m.statements() {
                    on_cluster(&s, m.name, &to).unwrap_or_else(|e| panic!("{e}"));
                }
            }
            on_cluster(crate::SCHEMA_MIGRATIONS_DDL, "000_schema_migrations.sql", &to).unwrap();
        }
    }
}
