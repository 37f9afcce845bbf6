//! Output formats shared by query-like commands: table, JSON, CSV.

use clap::ValueEnum;
use posture_core::report::{Recommendation, Score};
use std::fmt::Write;

/// `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// The JSON shapes of the specification.
    Json,
    /// RFC 4180 CSV with a header row (the recommendations list).
    Csv,
}

fn fmt_points(p: f64) -> String {
    let s = format!("{p:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The score report as a table (`devices`: how many devices the scope has,
/// when known).
pub fn score_table(s: &Score, devices: Option<usize>) -> String {
    let mut o = String::new();
    let scope = match (&s.group, s.category) {
        (Some(g), Some(c)) => format!("tenant {} / group {} / category {}", s.tenant, g, c),
        (Some(g), None) => format!("tenant {} / group {}", s.tenant, g),
        (None, Some(c)) => format!("tenant {} / category {}", s.tenant, c),
        (None, None) => format!("tenant {}", s.tenant),
    };
    let _ = writeln!(
        o,
        "Secure score: {scope}{}",
        s.at.as_ref().map(|a| format!(" at {a}")).unwrap_or_default()
    );
    if let Some(devices) = devices {
        let _ = writeln!(o, "devices seen: {devices}");
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<20} {:>24} {:>8}   {:>24} {:>8}",
        "", "with exceptions", "", "without exceptions", ""
    );
    let row =
        |o: &mut String, name: &str, w: &posture_core::report::ScorePart, wo: &posture_core::report::ScorePart| {
            let _ = writeln!(
                o,
                "{:<20} {:>24} {:>7.2}%   {:>24} {:>7.2}%",
                name,
                format!("{} / {}", fmt_points(w.points), fmt_points(w.max_points)),
                w.percent,
                format!("{} / {}", fmt_points(wo.points), fmt_points(wo.max_points)),
                wo.percent
            );
        };
    row(&mut o, "SECURE SCORE", &s.total, &s.without_exceptions.total);
    for (name, part) in &s.categories {
        row(
            &mut o,
            &format!("  {name}"),
            part,
            &s.without_exceptions.categories[name],
        );
    }
    o
}

/// Top recommendations as a table (the first `top`).
pub fn recommendations_table(recs: &[Recommendation], top: usize) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Top recommendations ({} with points to gain{})",
        recs.len(),
        if recs.len() > top {
            format!(", first {top} shown")
        } else {
            String::new()
        }
    );
    if recs.is_empty() {
        let _ = writeln!(o, "  none: every assessed control passes on every device in scope");
        return o;
    }
    let _ = writeln!(
        o,
        "{:>3}  {:<34} {:<18} {:<21} {:>8} {:>17}  title",
        "#", "control", "category", "remediation", "+points", "misconfigured"
    );
    for (i, r) in recs.iter().take(top).enumerate() {
        let _ = writeln!(
            o,
            "{:>3}  {:<34} {:<18} {:<21} {:>8} {:>17}  {}",
            i + 1,
            r.control,
            r.category,
            r.remediation,
            fmt_points(r.points_gained),
            format!("{} / {}", r.misconfigured_devices, r.applicable_devices),
            r.title
        );
    }
    o
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The score as RFC 4180 CSV: a header row, then the total (category
/// empty) and one row per category.
pub fn score_csv(s: &Score) -> String {
    let mut o = String::from(
        "tenant,group,category,at,points,max_points,percent,points_without_exceptions,max_points_without_exceptions,percent_without_exceptions\r\n",
    );
    let mut row = |category: &str, w: &posture_core::report::ScorePart, wo: &posture_core::report::ScorePart| {
        let fields = [
            csv_field(&s.tenant),
            csv_field(s.group.as_deref().unwrap_or_default()),
            category.to_string(),
            s.at.clone().unwrap_or_default(),
            w.points.to_string(),
            w.max_points.to_string(),
            w.percent.to_string(),
            wo.points.to_string(),
            wo.max_points.to_string(),
            wo.percent.to_string(),
        ];
        o += &fields.join(",");
        o += "\r\n";
    };
    row(s.category.unwrap_or_default(), &s.total, &s.without_exceptions.total);
    if s.category.is_none() {
        for (name, part) in &s.categories {
            row(name, part, &s.without_exceptions.categories[name]);
        }
    }
    o
}

/// Recommendations as RFC 4180 CSV with a header row.
pub fn recommendations_csv(recs: &[Recommendation]) -> String {
    let mut o = String::from(
        "control,title,category,remediation,points_gained,misconfigured_devices,applicable_devices,excepted_devices,vulnerabilities\r\n",
    );
    for r in recs {
        let fields = [
            csv_field(&r.control),
            csv_field(&r.title),
            r.category.to_string(),
            r.remediation.to_string(),
            r.points_gained.to_string(),
            r.misconfigured_devices.to_string(),
            r.applicable_devices.to_string(),
            r.excepted_devices.to_string(),
            csv_field(&r.vulnerabilities.join(" ")),
        ];
        o += &fields.join(",");
        o += "\r\n";
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_per_rfc_4180() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(fmt_points(37.5), "37.5");
        assert_eq!(fmt_points(100.0), "100");
        assert_eq!(fmt_points(33.333333), "33.33");
    }
}
