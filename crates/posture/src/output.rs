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
