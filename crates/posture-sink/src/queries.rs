//! The documented trend queries of `schemas/clickhouse/queries.sql`, embedded at build time.
//!
//! The file is a list of blocks, each introduced by a `-- name: NAME` line, followed by comment
//! lines (the description) and one SQL statement ending in `;`. Parameters use ClickHouse's
//! query-parameter syntax `{name:Type}`. ClickHouse 19 and later bind those server-side (send
//! the text unchanged with `param_name` settings, e.g. `Client::query_raw(..).param(..)`);
//! [`NamedQuery::render`] substitutes typed literals instead, which every version (the test
//! stack's 18.16 included) runs.

use crate::embedded::QUERIES_SQL;
use crate::sql::quote_string;
use crate::SinkError;
use std::collections::BTreeMap;

/// A parameter value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    /// For `String` parameters.
    Str(String),
    /// For integer parameters (`Int64`, `UInt32`, ...).
    Int(i64),
    /// For arrays of integers (`Array(Int32)`, `Array(Int64)`, ...); not empty (ClickHouse 18.16
    /// cannot type an empty array literal).
    Ints(Vec<i64>),
    /// For `Array(String)` parameters; not empty (likewise).
    Strs(Vec<String>),
}

impl From<Vec<String>> for Param {
    fn from(v: Vec<String>) -> Param {
        Param::Strs(v)
    }
}

impl From<Vec<i64>> for Param {
    fn from(v: Vec<i64>) -> Param {
        Param::Ints(v)
    }
}

impl From<&str> for Param {
    fn from(s: &str) -> Param {
        Param::Str(s.to_string())
    }
}
impl From<String> for Param {
    fn from(s: String) -> Param {
        Param::Str(s)
    }
}
impl From<i64> for Param {
    fn from(v: i64) -> Param {
        Param::Int(v)
    }
}

/// One named query of `queries.sql`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedQuery {
    /// The block's name.
    pub name: String,
    /// Its comment lines, without `-- `.
    pub description: String,
    /// The SQL text exactly as in the file, without the final `;`.
    pub sql: String,
}

impl NamedQuery {
    /// The `{name:Type}` parameters of the query, in order of first use.
    pub fn params(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (name, ty, _) in placeholders(&self.sql) {
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, ty));
            }
        }
        out
    }

    /// The query with every `{name:Type}` replaced by a typed literal of `params[name]`
    /// (`'...'` for String, `CAST(n AS Type)` for integer types). Errors on a missing or
    /// unused parameter, a value of the wrong kind, or an unsupported type.
    pub fn render(&self, params: &[(&str, Param)]) -> Result<String, SinkError> {
        let err = |message: String| SinkError::Query {
            query: self.name.clone(),
            message,
        };
        let given: BTreeMap<&str, &Param> = params.iter().map(|(n, v)| (*n, v)).collect();
        for n in given.keys() {
            if !self.params().iter().any(|(p, _)| p == n) {
                return Err(err(format!("no parameter {n:?}")));
            }
        }
        let mut out = String::with_capacity(self.sql.len() + 64);
        let mut last = 0;
        for (name, ty, range) in placeholders(&self.sql) {
            out.push_str(&self.sql[last..range.start]);
            last = range.end;
            let v = given
                .get(name.as_str())
                .ok_or_else(|| err(format!("parameter {name:?} ({ty}) not given")))?;
            let literal = match (ty.as_str(), v) {
                ("String", Param::Str(s)) => quote_string(s),
                (t, Param::Int(i)) if is_int_type(t) => format!("CAST({i} AS {t})"),
                (t, Param::Ints(v)) if !v.is_empty() && array_of_int(t) => {
                    let items: Vec<String> = v.iter().map(i64::to_string).collect();
                    format!("CAST([{}] AS {t})", items.join(", "))
                }
                ("Array(String)", Param::Strs(v)) if !v.is_empty() => {
                    let items: Vec<String> = v.iter().map(|s| quote_string(s)).collect();
                    format!("CAST([{}] AS Array(String))", items.join(", "))
                }
                (t, v) => return Err(err(format!("parameter {name:?} has type {t}, got {v:?}"))),
            };
            out.push_str(&literal);
        }
        out.push_str(&self.sql[last..]);
        Ok(out)
    }
}

fn is_int_type(t: &str) -> bool {
    matches!(
        t,
        "Int8" | "Int16" | "Int32" | "Int64" | "UInt8" | "UInt16" | "UInt32" | "UInt64"
    )
}

fn array_of_int(t: &str) -> bool {
    t.strip_prefix("Array(")
        .and_then(|r| r.strip_suffix(')'))
        .is_some_and(is_int_type)
}

/// `{name:Type}` occurrences: (name, type, byte range).
fn placeholders(sql: &str) -> Vec<(String, String, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(open) = sql[i..].find('{').map(|o| o + i) {
        let Some(close) = sql[open..].find('}').map(|c| c + open) else {
            break;
        };
        let inner = &sql[open + 1..close];
        if let Some((n, t)) = inner.split_once(':') {
            out.push((n.trim().to_string(), t.trim().to_string(), open..close + 1));
        }
        i = close + 1;
    }
    out
}

/// Every query of `schemas/clickhouse/queries.sql`, in file order.
pub fn all() -> Vec<NamedQuery> {
    parse(QUERIES_SQL)
}

/// The query called `name`.
pub fn get(name: &str) -> Option<NamedQuery> {
    all().into_iter().find(|q| q.name == name)
}

/// Parses the named-block format of `queries.sql`.
pub fn parse(text: &str) -> Vec<NamedQuery> {
    let mut out = Vec::new();
    let mut cur: Option<(String, Vec<String>, Vec<String>)> = None;
    let finish = |cur: &mut Option<(String, Vec<String>, Vec<String>)>, out: &mut Vec<NamedQuery>| {
        if let Some((name, desc, sql)) = cur.take() {
            let sql = sql.join("\n");
            let sql = sql.trim().trim_end_matches(';').trim_end().to_string();
            out.push(NamedQuery {
                name,
                description: desc.join("\n"),
                sql,
            });
        }
    };
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("-- name:") {
            finish(&mut cur, &mut out);
            cur = Some((name.trim().to_string(), Vec::new(), Vec::new()));
        } else if let Some((_, desc, sql)) = cur.as_mut() {
            if sql.is_empty() && line.starts_with("--") {
                desc.push(line.trim_start_matches('-').trim().to_string());
            } else if !(sql.is_empty() && line.trim().is_empty()) {
                sql.push(line.to_string());
            }
        }
    }
    finish(&mut cur, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders() {
        let qs = all();
        let names: Vec<&str> = qs.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "score_at",
                "category_scores_at",
                "score_series",
                "rollup_counts",
                "tail_counts",
                "control_counts_at",
                "device_scores_at",
                "control_state_current",
                "control_changes",
                "tenants_latest",
                "drop_causes",
                "exceptions_current",
                "tasks_current",
                "control_failing",
                "device_settings_current",
                "device_inventory_current"
            ]
        );
        for q in &qs {
            assert!(!q.description.is_empty(), "{} has no description", q.name);
            assert!(!q.sql.contains(';'), "{} holds more than one statement", q.name);
        }
        let q = get("score_at").unwrap();
        assert_eq!(
            q.params(),
            [
                ("tenant".to_string(), "String".to_string()),
                ("group".to_string(), "String".to_string()),
                ("category".to_string(), "String".to_string()),
                ("at_ms".to_string(), "Int64".to_string()),
            ]
        );
        let sql = q
            .render(&[
                ("tenant", "t'1".into()),
                ("group", "".into()),
                ("category", "os".into()),
                ("at_ms", 5.into()),
            ])
            .unwrap();
        assert!(sql.contains("tenant = 't\\'1'"), "{sql}");
        assert!(sql.contains("event_time_ms <= CAST(5 AS Int64)"), "{sql}");
        assert!(!sql.contains('{'));
        assert!(q.render(&[("tenant", "t".into())]).is_err());
        let tail = get("tail_counts").unwrap();
        let params = |parts: Vec<i64>| {
            vec![
                ("tenant", Param::from("t")),
                ("group", "".into()),
                ("from_ms", 1.into()),
                ("at_ms", 2.into()),
                ("cut_partitions", parts.clone().into()),
                ("cut_next", parts.into()),
            ]
        };
        let sql = tail.render(&params(vec![0, 3])).unwrap();
        assert!(sql.contains("CAST([0, 3] AS Array(Int32))"), "{sql}");
        assert!(
            tail.render(&params(vec![])).is_err(),
            "an empty array has no type in 18.16"
        );
        assert!(q
            .render(&[
                ("tenant", "t".into()),
                ("group", "".into()),
                ("category", "".into()),
                ("at_ms", "x".into())
            ])
            .is_err());
    }

    #[test]
    fn readme_shows_every_query_verbatim() {
        let readme = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schemas/clickhouse/README.md"
        ));
        for q in all() {
            assert!(
                readme.contains(&q.sql),
                "schemas/clickhouse/README.md does not show query {} exactly as queries.sql has it",
                q.name
            );
        }
    }
}
