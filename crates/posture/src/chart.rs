//! `posture history --svg`: the score over time as an SVG line chart
//! (plotters' SVG backend), with and without exceptions.

use anyhow::{Context, Result};
use plotters::prelude::*;
use posture_query::HistoryPoint;
use std::path::Path;

/// Draws `points` (percent with and without exceptions per bucket) into an
/// SVG file at `path`.
pub fn history_svg(points: &[HistoryPoint], title: &str, path: &Path) -> Result<()> {
    anyhow::ensure!(!points.is_empty(), "no buckets to draw");
    let n = points.len();
    let label = |i: usize| {
        points
            .get(i)
            .map(|p| p.bucket_start[..16.min(p.bucket_start.len())].replace('T', " "))
    };
    // The y axis fits the data (a fleet's score moves by tenths of a point an hour), with a
    // margin, and at least one point of percent tall.
    let values = || points.iter().flat_map(|p| [p.percent, p.without_exceptions.percent]);
    let (lo, hi) = (values().fold(100.0f64, f64::min), values().fold(0.0f64, f64::max));
    let pad = ((hi - lo) * 0.15).max(0.5);
    let (y_min, y_max) = ((lo - pad).max(0.0), (hi + pad).min(100.0));
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0usize..n.saturating_sub(1).max(1), y_min..y_max)?;
        chart
            .configure_mesh()
            .x_labels(6)
            .x_label_formatter(&|i| label(*i).unwrap_or_default())
            .y_desc("percent")
            .y_label_formatter(&|y| format!("{y:.1}"))
            .x_desc("UTC")
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (i, p.without_exceptions.percent)),
                RGBColor(150, 150, 150).stroke_width(2),
            ))?
            .label("without exceptions")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(150, 150, 150)));
        chart
            .draw_series(LineSeries::new(
                points.iter().enumerate().map(|(i, p)| (i, p.percent)),
                BLUE.stroke_width(3),
            ))?
            .label("secure score (with exceptions)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("drawing {}", path.display()))
}
