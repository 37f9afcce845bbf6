//! posture's schema on a ClickHouse cluster: the same migrations, each statement rewritten for
//! the cluster ([`on_cluster`]): DDL runs `ON CLUSTER` (on every node, through ClickHouse's
//! distributed DDL queue in ZooKeeper), every `*MergeTree` engine becomes its `Replicated*`
//! twin, and data statements (the backfills of upgrades) run once, on the node migrate is
//! connected to, from which replication copies their parts to the other replicas.
//!
//! The replicated table's ZooKeeper path is `/clickhouse/tables/{shard}/<database>/<table>/<file>`:
//! the database (tests and tenants of one ZooKeeper keep apart), the table, and the migration
//! file that created it, so a table created again under an old name (migration 014 renames
//! `transitions` and creates a new one) never meets its predecessor's replicas. `{shard}` and
//! `{replica}` are each server's macros.
//!
//! This is the layout of one shard with any number of replicas: every node holds every row, a
//! write to any node reaches the others (with `insert_quorum`, before the INSERT returns), and
//! the queries read any node unchanged. Several shards (Distributed tables over them) are not
//! supported yet.

use crate::sql::is_identifier;

/// How one migration statement runs on a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterStatement {
    /// DDL, rewritten to run on every node (`ON CLUSTER`, replicated engines).
    EveryNode(String),
    /// A data statement (INSERT ... SELECT): run once; replication copies its parts.
    Once(String),
}

/// Rewrites `stmt`, a statement of the migration file `file` for `database`, to run on the
/// cluster `cluster` (see the module's documentation). Statements the rewrite does not know
/// are an error naming them, not a guess.
pub fn on_cluster(stmt: &str, file: &str, database: &str, cluster: &str) -> Result<ClusterStatement, String> {
    if !is_identifier(cluster) {
        return Err(format!(
            "cluster name {cluster:?} is not an identifier (letters, digits, _)"
        ));
    }
    let s = stmt.trim();
    let words: Vec<&str> = s.split_whitespace().collect();
    let on = format!("ON CLUSTER {cluster}");
    // The position after which `ON CLUSTER c` goes: after the object's name.
    let insert_after = |prefix_words: usize| -> Result<String, String> {
        let name = words
            .get(prefix_words)
            .ok_or_else(|| format!("{file}: no object name in: {s}"))?;
        // The name ends the prefix; keep the rest of the text as written.
        let at = nth_word_end(s, prefix_words).ok_or_else(|| format!("{file}: cannot place ON CLUSTER in: {s}"))?;
        let name = name.trim_end_matches('(');
        if !is_identifier(name) {
            return Err(format!("{file}: {name:?} is not a plain table name in: {s}"));
        }
        Ok(format!("{} {on}{}", &s[..at], &s[at..]))
    };
    let upper: Vec<String> = words.iter().take(6).map(|w| w.to_ascii_uppercase()).collect();
    let starts = |p: &[&str]| upper.len() >= p.len() && p.iter().zip(&upper).all(|(a, b)| a == b);
    if starts(&["INSERT", "INTO"]) {
        return Ok(ClusterStatement::Once(s.to_string()));
    }
    if starts(&["CREATE", "TABLE", "IF", "NOT", "EXISTS"]) {
        let name = words[5].trim_end_matches('(');
        let mut text = insert_after(5)?;
        // `CREATE TABLE t AS other`: the other nodes look `other` up in their default database.
        if words.get(6).is_some_and(|w| w.eq_ignore_ascii_case("AS")) {
            let other = words.get(7).copied().unwrap_or_default();
            if is_identifier(other) {
                let from = format!("{on} AS {other}");
                let to = format!("{on} AS {database}.{other}");
                text = text.replacen(&from, &to, 1);
            }
        }
        return Ok(ClusterStatement::EveryNode(replicated_engine(
            &text, file, database, name,
        )?));
    }
    if starts(&["CREATE", "VIEW", "IF", "NOT", "EXISTS"]) {
        // The other nodes run the view's query in their own default database: name its tables'.
        return Ok(ClusterStatement::EveryNode(qualify_from(&insert_after(5)?, database)));
    }
    if starts(&["CREATE", "DATABASE", "IF", "NOT", "EXISTS"]) {
        return Ok(ClusterStatement::EveryNode(insert_after(5)?));
    }
    if starts(&["ALTER", "TABLE"]) || starts(&["RENAME", "TABLE"]) {
        if starts(&["RENAME", "TABLE"]) && words.len() == 5 && words[3].eq_ignore_ascii_case("TO") {
            return Ok(ClusterStatement::EveryNode(format!("{s} {on}")));
        }
        if starts(&["ALTER", "TABLE"]) {
            return Ok(ClusterStatement::EveryNode(insert_after(2)?));
        }
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
fn replicated_engine(stmt: &str, file: &str, database: &str, table: &str) -> Result<String, String> {
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
    let path = format!("/clickhouse/tables/{{shard}}/{database}/{table}/{stem}");
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

    fn every(s: &str) -> String {
        match on_cluster(s, "014_x.sql", "db1", "c1").unwrap() {
            ClusterStatement::EveryNode(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tables_are_replicated_on_every_node() {
        assert_eq!(
            every("CREATE TABLE IF NOT EXISTS t\n(\n  a UInt8\n)\nENGINE = MergeTree()\nORDER BY a"),
            "CREATE TABLE IF NOT EXISTS t ON CLUSTER c1\n(\n  a UInt8\n)\nENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db1/t/014_x', '{replica}')\nORDER BY a"
        );
        assert_eq!(
            every("CREATE TABLE IF NOT EXISTS t (a UInt8, v UInt64) ENGINE = ReplacingMergeTree(v) ORDER BY a"),
            "CREATE TABLE IF NOT EXISTS t ON CLUSTER c1 (a UInt8, v UInt64) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db1/t/014_x', '{replica}', v) ORDER BY a"
        );
        assert_eq!(
            every("CREATE TABLE IF NOT EXISTS s (a UInt8) ENGINE = SummingMergeTree((a, b)) ORDER BY a"),
            "CREATE TABLE IF NOT EXISTS s ON CLUSTER c1 (a UInt8) ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/db1/s/014_x', '{replica}', (a, b)) ORDER BY a"
        );
        assert_eq!(
            every("CREATE TABLE IF NOT EXISTS t AS old\nENGINE = MergeTree()\nORDER BY a"),
            "CREATE TABLE IF NOT EXISTS t ON CLUSTER c1 AS db1.old\nENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db1/t/014_x', '{replica}')\nORDER BY a"
        );
    }

    #[test]
    fn other_ddl_runs_on_every_node_and_data_once() {
        assert_eq!(
            every("ALTER TABLE t ADD COLUMN b UInt8 DEFAULT 0"),
            "ALTER TABLE t ON CLUSTER c1 ADD COLUMN b UInt8 DEFAULT 0"
        );
        assert_eq!(
            every("RENAME TABLE t TO t_old"),
            "RENAME TABLE t TO t_old ON CLUSTER c1"
        );
        assert_eq!(
            every("CREATE VIEW IF NOT EXISTS v AS SELECT 1"),
            "CREATE VIEW IF NOT EXISTS v ON CLUSTER c1 AS SELECT 1"
        );
        assert_eq!(
            every("CREATE VIEW IF NOT EXISTS v AS SELECT a FROM t\nARRAY JOIN x UNION ALL SELECT a_from FROM (SELECT 1 FROM u) from_u"),
            "CREATE VIEW IF NOT EXISTS v ON CLUSTER c1 AS SELECT a FROM db1.t\nARRAY JOIN x UNION ALL SELECT a_from FROM (SELECT 1 FROM db1.u) from_u"
        );
        assert_eq!(
            on_cluster("INSERT INTO t SELECT * FROM u", "f.sql", "db1", "c1").unwrap(),
            ClusterStatement::Once("INSERT INTO t SELECT * FROM u".into())
        );
    }

    #[test]
    fn what_it_cannot_rewrite_is_an_error() {
        for bad in [
            "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = Memory",
            "DROP TABLE t",
            "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = ReplicatedMergeTree('/p', 'r') ORDER BY a",
        ] {
            assert!(on_cluster(bad, "f.sql", "db1", "c1").is_err(), "{bad}");
        }
        assert!(on_cluster("ALTER TABLE t ADD COLUMN b UInt8", "f.sql", "db1", "c-1").is_err());
    }

    /// Every statement of every migration can run on a cluster.
    #[test]
    fn every_migration_runs_on_a_cluster() {
        for m in crate::migrations() {
            for s in m.statements() {
                on_cluster(&s, m.name, "posture", "posture").unwrap_or_else(|e| panic!("{e}"));
            }
        }
        on_cluster(
            crate::SCHEMA_MIGRATIONS_DDL,
            "000_schema_migrations.sql",
            "posture",
            "posture",
        )
        .unwrap();
    }
}
