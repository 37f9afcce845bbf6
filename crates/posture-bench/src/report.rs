//! The table: each figure beside its SPEC section 7 target, and whether it
//! is met (by how much it is missed where not).

use crate::{evaluator, stack};
use serde::Serialize;

/// One line of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Line {
    /// What was measured, and on what (fleet size, events, settings per event).
    pub measure: String,
    /// The figure with its unit, as printed (e.g. `414,509 events/s`).
    pub figure: String,
    /// The SPEC section 7 target as text (e.g. `>= 1,000,000 events/s`); empty where none.
    pub target: String,
    /// `Some(true)` met, `Some(false)` missed, `None` no target.
    pub met: Option<bool>,
    /// For a missed target: how far off, e.g. "38% of the target".
    pub gap: Option<String>,
}

fn line(measure: impl Into<String>, figure: impl Into<String>) -> Line {
    Line {
        measure: measure.into(),
        figure: figure.into(),
        target: String::new(),
        met: None,
        gap: None,
    }
}

impl Line {
    /// At least `target` (higher is better).
    fn at_least(mut self, value: f64, target: f64, text: &str) -> Line {
        self.target = text.into();
        self.met = Some(value >= target);
        if value < target {
            self.gap = Some(format!("{:.1}% of the target", 100.0 * value / target));
        }
        self
    }

    /// At most `target` (lower is better).
    fn at_most(mut self, value: f64, target: f64, text: &str) -> Line {
        self.target = text.into();
        self.met = Some(value <= target);
        if value > target {
            self.gap = Some(format!("{:.1}x the target", value / target));
        }
        self
    }
}

/// Thousands separators: 1234567 -> "1,234,567".
pub fn grouped(v: f64) -> String {
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

/// The evaluator's lines, for one fleet size.
pub fn evaluator_lines(f: &evaluator::Figures) -> Vec<Line> {
    let n = grouped(f.devices as f64);
    vec![
        line(
            format!(
                "evaluator, decode + evaluate + emit, 1 core, {n} devices ({} settings/event)",
                f.settings_per_event
            ),
            format!("{} events/s", grouped(f.events_per_sec)),
        )
        .at_least(f.events_per_sec, 1e6, ">= 1,000,000 events/s"),
        line(
            format!("  ... plus the ClickHouse rows posture run writes, {n} devices"),
            format!("{} events/s", grouped(f.events_per_sec_with_rows)),
        ),
        line(
            format!("state per device, {} controls, {n} devices", f.controls),
            format!(
                "{:.0} B (allocator); {:.0} B (layout)",
                f.state_bytes_per_device, f.layout_bytes_per_device
            ),
        )
        .at_most(f.state_bytes_per_device, 1024.0, "<= 1 KiB (aim 256 B)"),
        line(
            format!(
                "restore, {n} devices (snapshot {:.0} MB)",
                f.snapshot_bytes as f64 / 1e6
            ),
            format!("{:.2} s", f.restore_secs),
        )
        .at_most(f.restore_secs * 1e6 / f.devices as f64, 30.0, "<= 30 s per 1M devices"),
    ]
}

/// The previous release's evaluator figures beside this build's (`rates`: its events/s without
/// and with rows, measured in the same run right before this build's).
pub fn release_lines(rev: &str, devices: usize, rates: (f64, f64), f: &evaluator::Figures) -> Vec<Line> {
    let n = grouped(devices as f64);
    let ratio = |before: f64, now: f64| format!("{} events/s (this build: {:.2}x)", grouped(before), now / before);
    vec![
        line(
            format!("  previous release {rev}, decode + evaluate + emit, {n} devices"),
            ratio(rates.0, f.events_per_sec),
        ),
        line(
            format!("  previous release {rev}, plus the ClickHouse rows, {n} devices"),
            ratio(rates.1, f.events_per_sec_with_rows),
        ),
    ]
}

/// Instructions per event counted by callgrind, this build's and the previous release's.
pub fn instruction_lines(
    devices: usize,
    this: crate::release::Instructions,
    previous: Option<(&str, crate::release::Instructions)>,
) -> Vec<Line> {
    let n = grouped(devices as f64);
    let figure = |now: f64, before: Option<f64>| match before {
        Some(b) => format!("{} (previous release {}: {:.2}x)", grouped(now), grouped(b), now / b),
        None => grouped(now),
    };
    let rev = previous.map_or(String::new(), |p| format!(", against {}", p.0));
    vec![
        line(
            format!("instructions per event (callgrind), decode + evaluate + emit, {n} devices{rev}"),
            figure(this.per_event, previous.map(|p| p.1.per_event)),
        ),
        line(
            format!("instructions per event (callgrind), plus the ClickHouse rows, {n} devices{rev}"),
            figure(this.per_event_with_rows, previous.map(|p| p.1.per_event_with_rows)),
        ),
    ]
}

/// The stack's lines.
pub fn stack_lines(f: &stack::Figures) -> Vec<Line> {
    let pipe = f.pipeline.records_per_sec.unwrap_or(0.0);
    let ratio = pipe / f.bare_records_per_sec.max(1e-9);
    let mut v = vec![
        line(
            format!("bare rdkafka consumer, {} drift events", grouped(f.backlog as f64)),
            format!("{} events/s", grouped(f.bare_records_per_sec)),
        ),
        line(
            "posture run, Kafka -> ClickHouse, same events",
            format!(
                "{} events/s ({} rows/s)",
                grouped(pipe),
                grouped(f.pipeline.rows_written as f64 / f.pipeline.busy_secs.unwrap_or(f64::MAX))
            ),
        ),
        line("end to end / bare consumer", format!("{:.1}%", 100.0 * ratio)).at_least(ratio, 0.8, ">= 80%"),
    ];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let fmt = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.1}"));
    v.push(line(
        "  where the time went in that run",
        format!(
            "{:.1} s busy, {:.1} s of it waiting for flushes; in the run's {:.1} s from start to exit ({:.1} CPU-s available): ClickHouse used {} CPU-s, posture {}, the broker {}",
            f.pipeline.busy_secs.unwrap_or(0.0),
            f.pipeline.flush_secs,
            f.backlog_wall_secs,
            f.backlog_wall_secs * cores,
            fmt(f.clickhouse_cpu_secs),
            fmt(f.pipeline.cpu_secs),
            fmt(f.broker_cpu_secs)
        ),
    ));
    for r in &f.rates {
        let s = &r.summary;
        let l = line(
            format!(
                "freshness at {} events/s (produced {}, {} events)",
                grouped(r.target_rate),
                grouped(r.produced_rate),
                grouped(r.events as f64)
            ),
            format!(
                "p50 {:.2} s, p99 {:.2} s, max {:.2} s (with the 60 warm-up events)",
                s.freshness_ms.p50 as f64 / 1e3,
                s.freshness_ms.p99 as f64 / 1e3,
                s.freshness_ms.max as f64 / 1e3
            ),
        );
        // The verdict goes by the rate actually produced.
        v.push(if r.produced_rate >= 0.99 * 50_000.0 {
            l.at_most(s.freshness_ms.p99 as f64 / 1e3, 2.0, "p99 <= 2 s at 50k events/s")
        } else {
            l
        });
    }
    let peak = [&f.snapshots, &f.pipeline]
        .into_iter()
        .chain(f.rates.iter().map(|r| &r.summary))
        .filter_map(|s| s.peak_rss_bytes)
        .max()
        .unwrap_or(0);
    v.push(line(
        "peak resident memory of posture run",
        format!("{:.0} MiB", peak as f64 / 1048576.0),
    ));
    let i = &f.insert;
    let (sink, client) = (
        i.rows as f64 / i.sink_secs.max(1e-9),
        i.rows as f64 / i.client_secs.max(1e-9),
    );
    v.push(line(
        format!(
            "ClickHouse insert, {} rows: sink (tables concurrently) / clickhouse-client (Native, per table, less its start-up of {:.0} ms)",
            grouped(i.rows as f64),
            i.client_start_secs * 1e3
        ),
        format!(
            "{} / {} rows/s ({:.0}%)",
            grouped(sink),
            grouped(client),
            100.0 * sink / client
        ),
    ));
    v
}

/// The table in Markdown.
pub fn markdown(lines: &[Line]) -> String {
    let mut s = String::from("| measure | figure | target (SPEC 7) | met |\n| --- | --- | --- | --- |\n");
    for l in lines {
        let met = match (l.met, &l.gap) {
            (Some(true), _) => "yes".to_string(),
            (Some(false), Some(g)) => format!("**no**: {g}"),
            (Some(false), None) => "**no**".to_string(),
            (None, _) => String::new(),
        };
        s += &format!("| {} | {} | {} | {} |\n", l.measure, l.figure, l.target, met);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(grouped(0.0), "0");
        assert_eq!(grouped(999.4), "999");
        assert_eq!(grouped(1000.0), "1,000");
        assert_eq!(grouped(1234567.0), "1,234,567");
        assert_eq!(grouped(-45000.0), "-45,000");
    }

    #[test]
    fn verdicts_say_by_how_much() {
        let l = line("x", "y").at_least(400_000.0, 1e6, ">= 1M");
        assert_eq!(l.met, Some(false));
        assert_eq!(l.gap.as_deref(), Some("40.0% of the target"));
        let l = line("x", "y").at_most(3.0, 2.0, "<= 2 s");
        assert_eq!(l.gap.as_deref(), Some("1.5x the target"));
        let l = line("x", "y").at_most(256.0, 1024.0, "<= 1 KiB");
        assert_eq!((l.met, l.gap), (Some(true), None));
        let md = markdown(&[line("a", "b").at_least(1.0, 2.0, "t")]);
        assert!(md.contains("| a | b | t | **no**: 50.0% of the target |"), "{md}");
    }
}
