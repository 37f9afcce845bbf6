//! CSV exports that Excel opens cleanly: UTF-8 with a byte-order mark, a
//! header row, RFC 4180 quoting (the `csv` crate's writer) and CRLF line
//! ends.

use crate::{DeviceControl, ExceptionView, HistoryPoint, TaskView, WhatIf};
use posture_core::report::{Recommendation, Score, ScorePart};

/// The byte-order mark Excel needs to read a CSV file as UTF-8.
pub const BOM: &str = "\u{feff}";

fn write(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    w.write_record(header).expect("in memory");
    for r in rows {
        w.write_record(r.iter().map(|c| defuse(c))).expect("in memory");
    }
    let bytes = w.into_inner().expect("in memory");
    format!("{BOM}{}", String::from_utf8(bytes).expect("UTF-8 in, UTF-8 out"))
}

/// A cell that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab or CR first, and
/// not a number) gets a leading `'`, so an exported note or device id cannot execute anything.
fn defuse(cell: &str) -> String {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']) && cell.parse::<f64>().is_err();
    if risky {
        format!("'{cell}")
    } else {
        cell.to_string()
    }
}

/// Recommendations, one per row.
pub fn recommendations(recs: &[Recommendation]) -> String {
    write(
        &[
            "control",
            "title",
            "category",
            "remediation",
            "points_gained",
            "misconfigured_devices",
            "applicable_devices",
            "excepted_devices",
            "vulnerabilities",
        ],
        recs.iter().map(|r| {
            vec![
                r.control.clone(),
                r.title.clone(),
                r.category.to_string(),
                r.remediation.to_string(),
                r.points_gained.to_string(),
                r.misconfigured_devices.to_string(),
                r.applicable_devices.to_string(),
                r.excepted_devices.to_string(),
                r.vulnerabilities.join(" "),
            ]
        }),
    )
}

/// Device-control states (the misconfigured-devices list, one device's controls).
pub fn device_controls(v: &[DeviceControl]) -> String {
    write(
        &[
            "device",
            "control",
            "title",
            "category",
            "state",
            "raw_state",
            "exception",
            "counted",
            "reason",
            "since",
            "check",
            "settings",
        ],
        v.iter().map(|d| {
            vec![
                d.device.clone(),
                d.control.clone(),
                d.title.clone(),
                d.category.clone(),
                d.state.clone(),
                d.raw_state.clone(),
                d.exception.clone(),
                d.counted.to_string(),
                d.reason.clone(),
                d.since.clone(),
                d.check.clone(),
                if d.settings.is_empty() {
                    String::new()
                } else {
                    serde_json::to_string(&d.settings).expect("JSON values serialize")
                },
            ]
        }),
    )
}

/// A history, one bucket per row.
pub fn history(v: &[HistoryPoint]) -> String {
    write(
        &[
            "bucket_start",
            "at",
            "points",
            "max_points",
            "percent",
            "points_without_exceptions",
            "max_points_without_exceptions",
            "percent_without_exceptions",
        ],
        v.iter().map(|h| {
            vec![
                h.bucket_start.clone(),
                h.at.clone(),
                h.points.to_string(),
                h.max_points.to_string(),
                h.percent.to_string(),
                h.without_exceptions.points.to_string(),
                h.without_exceptions.max_points.to_string(),
                h.without_exceptions.percent.to_string(),
            ]
        }),
    )
}

/// What-if answers, one per reported scope.
pub fn whatif(v: &[WhatIf]) -> String {
    write(
        &[
            "tenant",
            "group",
            "control",
            "devices_affected",
            "percent_before",
            "percent_after",
            "percent_gained",
            "points_gained",
        ],
        v.iter().map(|w| {
            vec![
                w.before.tenant.clone(),
                w.before.group.clone().unwrap_or_default(),
                w.control.clone(),
                w.devices_affected.to_string(),
                w.before.total.percent.to_string(),
                w.after.total.percent.to_string(),
                w.percent_gained.to_string(),
                w.points_gained.to_string(),
            ]
        }),
    )
}

/// A score: the total (category empty, or the selected category), then one
/// row per category.
pub fn score(s: &Score) -> String {
    let row = |category: &str, w: &ScorePart, wo: &ScorePart| {
        vec![
            s.tenant.clone(),
            s.group.clone().unwrap_or_default(),
            category.to_string(),
            s.at.clone().unwrap_or_default(),
            w.points.to_string(),
            w.max_points.to_string(),
            w.percent.to_string(),
            wo.points.to_string(),
            wo.max_points.to_string(),
            wo.percent.to_string(),
        ]
    };
    let mut rows = vec![row(
        s.category.unwrap_or_default(),
        &s.total,
        &s.without_exceptions.total,
    )];
    if s.category.is_none() {
        for (name, part) in &s.categories {
            rows.push(row(name, part, &s.without_exceptions.categories[name]));
        }
    }
    write(
        &[
            "tenant",
            "group",
            "category",
            "at",
            "points",
            "max_points",
            "percent",
            "points_without_exceptions",
            "max_points_without_exceptions",
            "percent_without_exceptions",
        ],
        rows,
    )
}

/// Remediation tasks, one per row.
pub fn tasks(v: &[TaskView]) -> String {
    write(
        &[
            "id",
            "control",
            "title",
            "group",
            "due",
            "priority",
            "status",
            "overdue",
            "created_at",
            "completed_at",
            "hours_to_fix",
            "author",
            "notes",
        ],
        v.iter().map(|t| {
            vec![
                t.id.clone(),
                t.control.clone(),
                t.title.clone(),
                t.group.clone().unwrap_or_default(),
                t.due.clone(),
                t.priority.clone(),
                t.status.clone(),
                t.overdue.to_string(),
                t.created_at.clone(),
                t.completed_at.clone().unwrap_or_default(),
                t.hours_to_fix.map(|h| h.to_string()).unwrap_or_default(),
                t.author.clone(),
                t.notes.clone(),
            ]
        }),
    )
}

/// Exceptions, one per row.
pub fn exceptions(v: &[ExceptionView]) -> String {
    write(
        &[
            "id",
            "control",
            "scope",
            "scope_value",
            "justification",
            "credits",
            "starts_at",
            "expires_at",
            "in_force_now",
            "author",
            "note",
            "created_at",
        ],
        v.iter().map(|e| {
            vec![
                e.id.clone(),
                e.control.clone(),
                e.scope.clone(),
                e.scope_value.clone(),
                e.justification.clone(),
                e.credits.to_string(),
                e.starts_at.clone(),
                e.expires_at.clone().unwrap_or_default(),
                e.in_force_now.to_string(),
                e.author.clone(),
                e.note.clone(),
                e.created_at.clone(),
            ]
        }),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_are_quoted_per_rfc_4180_and_read_back() {
        let out = super::write(&["a", "b"], [vec!["plain".into(), "say \"hi\", then\nleave".into()]]);
        assert!(out.starts_with(super::BOM));
        assert_eq!(&out[3..], "a,b\r\nplain,\"say \"\"hi\"\", then\nleave\"\r\n");
        let mut r = csv::Reader::from_reader(&out.as_bytes()[3..]);
        let rec = r.records().next().unwrap().unwrap();
        assert_eq!(&rec[1], "say \"hi\", then\nleave");
    }

    #[test]
    fn formulas_are_defused_numbers_are_not() {
        let row = vec!["=HYPERLINK(\"x\")".to_string(), "-1.5".to_string(), "@sum".to_string()];
        let out = super::write(&["a", "b", "c"], [row]);
        let mut r = csv::Reader::from_reader(&out.as_bytes()[3..]);
        let rec = r.records().next().unwrap().unwrap();
        assert_eq!((&rec[0], &rec[1], &rec[2]), ("'=HYPERLINK(\"x\")", "-1.5", "'@sum"));
    }
}
