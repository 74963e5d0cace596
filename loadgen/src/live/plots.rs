//! `report.html`: the summary and three SVG plots, drawn with plotters' SVG backend.
//!
//! Owns the page and the plots: the latency percentile spectrum (end-to-end and send →
//! `Sent`, measured window, on HdrHistogram's usual log-scaled percentile axis), throughput
//! over time (sends/s, deliveries/s) and latency over time (end-to-end p50, p99, max per
//! second). A plot that cannot be drawn becomes a note on the page, never a failed run.

// Counts and µs become f64 only to be drawn; they stay far below 2^52.
#![allow(clippy::cast_precision_loss)]

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::live::merge::Merge;
use crate::live::report::Report;

const SIZE: (u32, u32) = (900, 380);
/// The percentile axis shows up to 99.999% (`-log10(1 - q)` = 5).
const NINES_MAX: f64 = 5.0;

type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// The whole page.
pub(crate) fn html(report: &Report, merge: &Merge) -> String {
    let spectrum = spectrum(&merge.hist("e2e"), &merge.hist("sent"));
    let seconds: Vec<(f64, &crate::live::merge::Second)> = merge
        .timeline
        .iter()
        .map(|(&s, x)| (s as f64 + 1.0, x))
        .collect();
    let throughput = lines(
        "Throughput per second",
        "seconds since the load started",
        "per second",
        &[
            (
                "sends/s",
                BLUE,
                seconds.iter().map(|(t, x)| (*t, x.sends as f64)).collect(),
            ),
            (
                "deliveries/s",
                GREEN,
                seconds
                    .iter()
                    .map(|(t, x)| (*t, x.deliveries as f64))
                    .collect(),
            ),
        ],
        None,
    );
    let ms =
        |h: &Histogram<u64>, q: f64| crate::live::hist::quantile(h, q).unwrap_or(0) as f64 / 1e3;
    let over_time = lines(
        "End-to-end latency per second (from the intended send time)",
        "seconds since the load started",
        "ms",
        &[
            (
                "p50",
                GREEN,
                seconds.iter().map(|(t, x)| (*t, ms(&x.e2e, 0.5))).collect(),
            ),
            (
                "p99",
                BLUE,
                seconds
                    .iter()
                    .map(|(t, x)| (*t, ms(&x.e2e, 0.99)))
                    .collect(),
            ),
            (
                "max",
                RED,
                seconds.iter().map(|(t, x)| (*t, ms(&x.e2e, 1.0))).collect(),
            ),
        ],
        None,
    );
    let mut page = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>loadgen live report</title>\
         <style>body{font-family:sans-serif;margin:2em}pre{background:#f4f4f4;padding:1em}\
         </style></head><body>\n",
    );
    let _ = writeln!(
        page,
        "<h1>loadgen live: {} — {}</h1>",
        escape(&report.scenario.name),
        report.verdict.to_uppercase()
    );
    let _ = writeln!(page, "<pre>{}</pre>", escape(&report.summary()));
    for (title, svg) in [
        ("Latency by percentile (measured window)", spectrum),
        ("Throughput over time", throughput),
        ("Latency over time", over_time),
    ] {
        let _ = writeln!(page, "<h2>{title}</h2>\n{svg}");
    }
    page.push_str("</body></html>\n");
    page
}

/// The percentile spectrum of the end-to-end and send → `Sent` histograms.
fn spectrum(e2e: &Histogram<u64>, sent: &Histogram<u64>) -> String {
    let points = |h: &Histogram<u64>| -> Vec<(f64, f64)> {
        if h.is_empty() {
            return Vec::new();
        }
        h.iter_quantiles(5)
            .map(|v| {
                let q = v.quantile_iterated_to();
                let x = if q >= 1.0 {
                    NINES_MAX
                } else {
                    (-(1.0 - q).log10()).min(NINES_MAX)
                };
                (x, v.value_iterated_to() as f64 / 1e3)
            })
            .collect()
    };
    let label = |x: &f64| {
        let pct = 100.0 * (1.0 - 10f64.powf(-x));
        format!("{pct:.3}%").replace(".000%", "%")
    };
    lines(
        "Latency by percentile",
        "percentile",
        "ms",
        &[
            ("end-to-end", BLUE, points(e2e)),
            ("send→Sent", RED, points(sent)),
        ],
        Some(&label),
    )
}

/// A line chart as an SVG string (or a note if it cannot be drawn).
fn lines(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series<'_>],
    x_label: Option<&dyn Fn(&f64) -> String>,
) -> String {
    let mut svg = String::new();
    let drawn = draw(&mut svg, title, x_desc, y_desc, series, x_label);
    match drawn {
        Ok(()) => svg,
        Err(e) => format!("<p>(plot not drawn: {})</p>", escape(&e)),
    }
}

fn draw(
    svg: &mut String,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series<'_>],
    x_label: Option<&dyn Fn(&f64) -> String>,
) -> Result<(), String> {
    let all = series.iter().flat_map(|(_, _, p)| p.iter());
    let (x_max, y_max) = all.fold((1.0_f64, 0.0_f64), |(x, y), &(px, py)| {
        (x.max(px), y.max(py))
    });
    if series.iter().all(|(_, _, p)| p.is_empty()) {
        return Err("no data".into());
    }
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..(y_max * 1.1).max(1.0))
        .map_err(|e| err(&e))?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_desc).y_desc(y_desc);
    if let Some(f) = x_label {
        // Whole numbers of nines: 0%, 90%, 99%, 99.9%, …
        mesh.x_labels(6).x_label_formatter(f);
    }
    mesh.draw().map_err(|e| err(&e))?;
    for (name, color, points) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
