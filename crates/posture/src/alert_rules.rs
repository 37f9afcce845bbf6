//! `--alert-rules FILE`: score-drop alert rules per tenant, group and
//! category (TOML).
//!
//! ```toml
//! [[rule]]                # every tenant's total score: 5 points in an hour
//! drop_points = 5
//! window_mins = 60
//!
//! [[rule]]                # each category of tenant t1's finance group: 3 points in 30 minutes
//! tenant = "t1"
//! group = "finance"
//! category = "each"       # "total" (default), "each", or one category name
//! drop_points = 3
//! window_mins = 30
//! ```
//!
//! `drop_points` and `window_mins` default to `--alert-drop-points` and
//! `--alert-window-mins`. Without a file, the rules are every tenant's total
//! and each of its categories with those two options.

use anyhow::{bail, Context, Result};
use posture_core::Category;
use posture_ingest::alerts::{AlertRule, Categories};

/// Parses a rules file.
pub fn parse(text: &str, default_drop: f64, default_window_mins: i64) -> Result<Vec<AlertRule>> {
    let table: toml::Table = text.parse().context("not valid TOML")?;
    let mut rules = Vec::new();
    for (key, value) in &table {
        if key != "rule" {
            bail!("unknown key {key:?}: the file is a list of [[rule]] tables");
        }
        let toml::Value::Array(items) = value else {
            bail!("\"rule\" must be an array of tables ([[rule]])");
        };
        for (i, item) in items.iter().enumerate() {
            let n = i + 1;
            let toml::Value::Table(t) = item else {
                bail!("rule {n}: expected a table");
            };
            let text_of = |k: &str| -> Result<Option<String>> {
                match t.get(k) {
                    None => Ok(None),
                    Some(toml::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                    Some(other) => bail!("rule {n}: {k} must be a non-empty string, not {other}"),
                }
            };
            let number = |k: &str| -> Result<Option<f64>> {
                match t.get(k) {
                    None => Ok(None),
                    Some(toml::Value::Integer(v)) => Ok(Some(*v as f64)),
                    Some(toml::Value::Float(v)) => Ok(Some(*v)),
                    Some(other) => bail!("rule {n}: {k} must be a number, not {other}"),
                }
            };
            for k in t.keys() {
                if !["tenant", "group", "category", "drop_points", "window_mins"].contains(&k.as_str()) {
                    bail!("rule {n}: unknown key {k:?} (tenant, group, category, drop_points, window_mins)");
                }
            }
            let categories = match text_of("category")?.as_deref() {
                None | Some("total") => Categories::Total,
                Some("each") => Categories::Each,
                Some(c) => Categories::One(Category::parse(c).with_context(|| {
                    format!(
                        "rule {n}: unknown category {c:?} (total, each, application, os, network, accounts, security_controls)"
                    )
                })?),
            };
            let drop_points = number("drop_points")?.unwrap_or(default_drop);
            let window_mins = number("window_mins")?.unwrap_or(default_window_mins as f64);
            if drop_points.is_nan() || drop_points <= 0.0 || drop_points > 100.0 {
                bail!("rule {n}: drop_points must be in (0, 100], not {drop_points}");
            }
            if window_mins.is_nan() || window_mins < 1.0 {
                bail!("rule {n}: window_mins must be at least 1, not {window_mins}");
            }
            rules.push(AlertRule {
                tenant: text_of("tenant")?,
                group: text_of("group")?,
                categories,
                drop_points,
                window_ms: (window_mins * 60_000.0) as i64,
            });
        }
    }
    if rules.is_empty() {
        bail!("no [[rule]] in the file");
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_with_defaults_and_scopes() {
        let r = parse(
            "[[rule]]\n\n[[rule]]\ntenant = \"t1\"\ngroup = \"finance\"\ncategory = \"each\"\ndrop_points = 3\nwindow_mins = 30\n\n[[rule]]\ncategory = \"network\"\n",
            5.0,
            60,
        )
        .unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[0].tenant.clone(), r[0].categories, r[0].drop_points, r[0].window_ms),
            (None, Categories::Total, 5.0, 3_600_000)
        );
        assert_eq!(r[1].group.as_deref(), Some("finance"));
        assert_eq!(
            (r[1].categories, r[1].drop_points, r[1].window_ms),
            (Categories::Each, 3.0, 1_800_000)
        );
        assert_eq!(r[2].categories, Categories::One(Category::Network));
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (text, want) in [
            ("[[rule]]\ncategory = \"netwrk\"", "unknown category"),
            ("[[rule]]\ndrop = 3", "unknown key \"drop\""),
            ("[[rule]]\ndrop_points = 0", "drop_points must be in"),
            ("[[rule]]\nwindow_mins = 0", "window_mins must be at least 1"),
            ("[[rule]]\ntenant = 3", "tenant must be a non-empty string"),
            ("rules = 1", "unknown key \"rules\""),
            ("", "no [[rule]]"),
        ] {
            let e = format!("{:#}", parse(text, 5.0, 60).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
