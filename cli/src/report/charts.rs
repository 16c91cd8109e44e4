//! The report's charts, drawn with plotters as SVG: the metric per
//! configuration and device class, the Pareto front of two metrics, and a
//! sensor over time for the selected trials. Each returns the SVG text, or
//! nothing when there is nothing to draw.

use crate::output::num;
use anyhow::anyhow;
use chimera_domain::compare::{self, Comparison, ParetoPoint};
use chimera_domain::metrics;
use chimera_domain::telemetry::{Phase, Sample};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::BTreeSet;

/// An axis title: the metric with its unit.
pub fn axis_title(metric: &str) -> String {
    let u = metrics::unit(metric);
    if u.is_empty() {
        format!("{metric} [no unit]")
    } else {
        format!("{metric} [{u}]")
    }
}

pub fn direction(metric: &str) -> &'static str {
    if metrics::higher_is_better(metric) {
        "higher is better"
    } else {
        "lower is better"
    }
}

/// Okabe–Ito: distinguishable with the common colour-vision deficiencies.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0x00, 0x00, 0x00),
    RGBColor(0xF0, 0xE4, 0x42),
];

pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A colour as CSS.
pub fn css(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

fn draw_err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> anyhow::Error {
    move |e| anyhow!("draw the {what} chart: {e}")
}

/// A range with some room around `lo..hi` (and a span when they are equal).
fn padded(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if hi > lo {
        let pad = (hi - lo) * frac;
        (lo - pad, hi + pad)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    }
}

/// [`padded`] around the smallest and the largest of `values`.
fn padded_span(values: impl Iterator<Item = f64> + Clone, frac: f64) -> (f64, f64) {
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(f64::NEG_INFINITY, f64::max);
    padded(lo, hi, frac)
}

const FONT: &str = "sans-serif";

/// An axis tick: [`num`] without trailing zeros (`8`, `0.05`, `2.5`).
fn tick(v: &f64) -> String {
    let s = num(*v);
    if s.contains('.') && !s.contains('e') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// Rows of a horizontal bar chart: row 0 at the top, a key point per row.
struct Rows(usize);

impl Ranged for Rows {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;
    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let n = self.0.max(1) as f64;
        // limit is (bottom, top) for a y axis: row 0 maps next to the top.
        let frac = (value + 0.5) / n;
        (f64::from(limit.1) + frac * f64::from(limit.0 - limit.1)).round() as i32
    }
    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        (0..self.0).map(|i| i as f64).collect()
    }
    fn range(&self) -> std::ops::Range<f64> {
        -0.5..(self.0 as f64 - 0.5)
    }
}

/// The longest bar label drawn whole; the table has every label in full.
const BAR_LABEL_MAX: usize = 64;

/// A bar's label: the setup alone when every row solves the same problem
/// (the caption names it), else the whole configuration; cut at
/// [`BAR_LABEL_MAX`] characters.
fn bar_labels(rows: &[&compare::Row]) -> Vec<String> {
    let one_problem = rows.iter().all(|r| r.group == rows[0].group);
    rows.iter()
        .map(|r| {
            let l = if one_problem && !r.setup.is_empty() {
                &r.setup
            } else {
                &r.config
            };
            crate::table::truncate(l, BAR_LABEL_MAX)
        })
        .collect()
}

/// The problem every row of a comparison solves, when there is one.
pub fn common_problem(c: &Comparison) -> Option<&str> {
    let rows: Vec<&compare::Row> = c
        .rows
        .iter()
        .filter(|r| r.cells.iter().any(Option::is_some))
        .collect();
    let first = rows.first()?;
    (!first.group.is_empty()
        && !first.setup.is_empty()
        && rows.iter().all(|r| r.group == first.group))
    .then_some(first.group.as_str())
}

/// The metric per configuration and class: horizontal bars at the median,
/// whiskers over the 95% bootstrap interval of the median where there are repeats.
pub fn metric_chart(c: &Comparison) -> anyhow::Result<Option<String>> {
    let rows: Vec<&compare::Row> = c
        .rows
        .iter()
        .filter(|r| r.cells.iter().any(Option::is_some))
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let k = c.classes.len().max(1);
    // The axis spans the medians (and 0); intervals widen it by at most the
    // medians' own span on the right and a quarter of it on the left, and
    // are cut at its edges (a cut whisker has no cap there).
    let cells = || rows.iter().flat_map(|r| r.cells.iter().flatten());
    let mut lo = cells().map(|c| c.value).fold(0f64, f64::min);
    let mut hi = cells().map(|c| c.value).fold(0f64, f64::max);
    if hi <= lo {
        hi = lo + 1.0;
    }
    let span = hi - lo;
    let (lo_limit, hi_limit) = (lo - span * 0.25, hi + span);
    for (a, b) in cells().filter_map(|c| c.ci95().filter(|_| c.samples > 1)) {
        lo = lo.min(a.max(lo_limit));
        hi = hi.max(b.min(hi_limit));
    }
    let (clip_lo, clip_hi) = (lo, hi);
    // Room on the right for the value labels.
    let hi = hi + (hi - lo) * 0.2;
    let labels = bar_labels(&rows);
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(10);
    // About 7 px a character at 13 px, and room for the axis title.
    let label_px = (longest as u32 * 7 + 44).clamp(100, 500);
    let row_px = (k as u32 * 16 + 12).max(28);
    let (w, h) = (960u32, 90 + rows.len() as u32 * row_px);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err("metric"))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(label_px)
            .build_cartesian_2d(lo..hi, Rows(rows.len()))
            .map_err(draw_err("metric"))?;
        let fmt_x = tick;
        let fmt_y = |v: &f64| {
            labels
                .get(v.round().max(0.0) as usize)
                .cloned()
                .unwrap_or_default()
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_labels(8)
            .y_labels(rows.len())
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
            .x_desc(axis_title(&c.metric))
            .y_desc("configuration")
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(draw_err("metric"))?;
        let band = 0.8 / k as f64;
        for (i, r) in rows.iter().enumerate() {
            for (j, cell) in r.cells.iter().enumerate() {
                let Some(cell) = cell else { continue };
                let col = color(j);
                let y0 = i as f64 - 0.4 + j as f64 * band;
                let y1 = y0 + band * 0.85;
                let ym = (y0 + y1) / 2.0;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(0f64.max(lo), y0), (cell.value, y1)],
                        col.mix(0.85).filled(),
                    )))
                    .map_err(draw_err("metric"))?;
                let mut right = cell.value.max(0.0);
                if let Some((a, b)) = cell.ci95().filter(|_| cell.samples > 1) {
                    let (a2, b2) = (a.max(clip_lo), b.min(clip_hi));
                    right = right.max(b2);
                    let cap = band * 0.3;
                    let style = BLACK.stroke_width(1);
                    let mut whisker = vec![PathElement::new(vec![(a2, ym), (b2, ym)], style)];
                    for (end, cut) in [(a2, a2 != a), (b2, b2 != b)] {
                        if !cut {
                            whisker.push(PathElement::new(
                                vec![(end, ym - cap), (end, ym + cap)],
                                style,
                            ));
                        }
                    }
                    chart.draw_series(whisker).map_err(draw_err("metric"))?;
                }
                let text = format!("{}{}", num(cell.value), if cell.best { " *" } else { "" });
                chart
                    .draw_series(std::iter::once(Text::new(
                        text,
                        (right + (hi - lo) * 0.01, ym),
                        (FONT, 12)
                            .into_font()
                            .color(&BLACK)
                            .pos(Pos::new(HPos::Left, VPos::Center)),
                    )))
                    .map_err(draw_err("metric"))?;
            }
        }
        root.present().map_err(draw_err("metric"))?;
    }
    Ok(Some(svg))
}

/// A chart of numbers against numbers, in plotters' coordinates.
type XyChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The frame of a chart of numbers against numbers: a white page, the
/// axes with their ticks (see [`tick`]) and titles.
struct Frame {
    /// The chart's name in errors.
    what: &'static str,
    size: (u32, u32),
    margin: u32,
    /// Room for the x and the y axis's labels, px.
    label_areas: (u32, u32),
    /// How many ticks each axis has at most.
    ticks: (usize, usize),
    /// The x and the y axis's titles.
    titles: (String, String),
}

impl Frame {
    /// The SVG of the frame over `x` and `y` with what `series` draws in it.
    fn draw(
        self,
        x: std::ops::Range<f64>,
        y: std::ops::Range<f64>,
        series: impl FnOnce(&mut XyChart<'_, '_>) -> anyhow::Result<()>,
    ) -> anyhow::Result<String> {
        let what = self.what;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, self.size).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err(what))?;
            let mut chart = ChartBuilder::on(&root)
                .margin(self.margin)
                .x_label_area_size(self.label_areas.0)
                .y_label_area_size(self.label_areas.1)
                .build_cartesian_2d(x, y)
                .map_err(draw_err(what))?;
            let fmt = tick;
            chart
                .configure_mesh()
                .x_labels(self.ticks.0)
                .y_labels(self.ticks.1)
                .x_label_formatter(&fmt)
                .y_label_formatter(&fmt)
                .x_desc(self.titles.0)
                .y_desc(self.titles.1)
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .draw()
                .map_err(draw_err(what))?;
            series(&mut chart)?;
            root.present().map_err(draw_err(what))?;
        }
        Ok(svg)
    }
}

/// Every configuration of each class at (x, y), the Pareto front filled and
/// connected.
pub fn pareto_chart(
    points: &[ParetoPoint],
    front: &[ParetoPoint],
    classes: &[String],
    x: &str,
    y: &str,
) -> anyhow::Result<String> {
    let (xlo, xhi) = padded_span(points.iter().map(|p| p.x), 0.12);
    let (ylo, yhi) = padded_span(points.iter().map(|p| p.y), 0.1);
    let frame = Frame {
        what: "Pareto",
        size: (960, 520),
        margin: 16,
        label_areas: (48, 90),
        ticks: (8, 8),
        titles: (
            format!("{} ({})", axis_title(x), direction(x)),
            format!("{} ({})", axis_title(y), direction(y)),
        ),
    };
    frame.draw(xlo..xhi, ylo..yhi, |chart| {
        let label_points = points.len() <= 24;
        for (ci, class) in classes.iter().enumerate() {
            let col = color(ci);
            let mut on_front: Vec<(f64, f64)> = front
                .iter()
                .filter(|p| &p.class == class)
                .map(|p| (p.x, p.y))
                .collect();
            on_front.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(on_front.clone(), col.stroke_width(2)))
                .map_err(draw_err("Pareto"))?;
            for p in points.iter().filter(|p| &p.class == class) {
                let front_point = on_front.contains(&(p.x, p.y));
                let style = if front_point {
                    col.filled()
                } else {
                    col.stroke_width(2)
                };
                chart
                    .draw_series(std::iter::once(Circle::new((p.x, p.y), 6, style)))
                    .map_err(draw_err("Pareto"))?;
                if label_points {
                    // Labels of points in the right half extend to the left.
                    let side = if p.x > (xlo + xhi) / 2.0 {
                        HPos::Right
                    } else {
                        HPos::Left
                    };
                    chart
                        .draw_series(std::iter::once(Text::new(
                            format!(" {} ", p.config),
                            (p.x, p.y),
                            (FONT, 12)
                                .into_font()
                                .color(&BLACK)
                                .pos(Pos::new(side, VPos::Bottom)),
                        )))
                        .map_err(draw_err("Pareto"))?;
                }
            }
        }
        Ok(())
    })
}

/// Sensors a telemetry chart groups: a title, the fields, their unit.
pub const SENSORS: &[(&str, &[&str], &str)] = &[
    ("Power", &["power_w"], "W"),
    ("Utilisation", &["gpu_util_pct", "cpu_util_pct"], "%"),
    ("Clock", &["sm_clock_mhz", "cpu_mhz_mean"], "MHz"),
    ("Temperature", &["temp_c"], "°C"),
];

/// One sensor over time for each selected trial: seconds since the trial's
/// first sample against the value; dots mark samples of the measured window.
pub fn telemetry_chart(
    fields: &[&str],
    unit: &str,
    series: &[(RGBColor, Vec<&Sample>)],
) -> anyhow::Result<Option<(String, Vec<String>)>> {
    // (seconds, value, in the measured window) per series.
    type Points = Vec<(f64, f64, bool)>;
    let mut lines: Vec<(RGBColor, Points)> = Vec::new();
    let mut used: BTreeSet<String> = BTreeSet::new();
    for (col, samples) in series {
        let Some(t0) = samples.first().map(|s| s.t_ms) else {
            continue;
        };
        for f in fields {
            let pts: Vec<(f64, f64, bool)> = samples
                .iter()
                .filter_map(|s| {
                    s.fields
                        .get(*f)
                        .filter(|v| v.is_finite())
                        .map(|v| ((s.t_ms - t0) as f64 / 1000.0, *v, s.phase == Phase::Measure))
                })
                .collect();
            if !pts.is_empty() {
                used.insert((*f).to_owned());
                lines.push((*col, pts));
            }
        }
    }
    if lines.is_empty() {
        return Ok(None);
    }
    let all = || lines.iter().flat_map(|(_, p)| p.iter());
    let tmax = all().map(|p| p.0).fold(0.0, f64::max).max(0.1);
    let (mut ylo, mut yhi) = padded_span(all().map(|p| p.1), 0.1);
    if unit == "%" {
        ylo = 0.0;
        yhi = yhi.max(100.0);
    }
    let used: Vec<String> = used.into_iter().collect();
    let frame = Frame {
        what: "telemetry",
        size: (960, 300),
        margin: 12,
        label_areas: (44, 80),
        ticks: (10, 6),
        titles: (
            "time since the trial's first sample [s]".to_owned(),
            format!("{} [{unit}]", used.join(", ")),
        ),
    };
    let svg = frame.draw(0f64..tmax * 1.02, ylo..yhi, |chart| {
        for (col, pts) in &lines {
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|p| (p.0, p.1)),
                    col.mix(0.85).stroke_width(2),
                ))
                .map_err(draw_err("telemetry"))?;
            chart
                .draw_series(
                    pts.iter()
                        .filter(|p| p.2)
                        .map(|p| Circle::new((p.0, p.1), 3, col.filled())),
                )
                .map_err(draw_err("telemetry"))?;
        }
        Ok(())
    })?;
    Ok(Some((svg, used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page puts a chart's SVG in as it is (see `html::svg`): this is
    /// what makes that safe — the labels it draws, which come from the
    /// results, are escaped by plotters.
    #[test]
    fn text_from_the_results_is_escaped_in_the_svg() {
        let evil = "<script>alert(\"x\")</script> & co";
        let point = |x: f64| ParetoPoint {
            class: "cpu".into(),
            config: evil.into(),
            x,
            y: 1.0 / x,
        };
        let points = [point(1.0), point(2.0)];
        let svg =
            pareto_chart(&points, &points, &["cpu".into()], "gflop_per_s", "cov").expect("a chart");
        assert!(svg.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co"));
        assert!(
            !svg.contains("<script") && !svg.contains("\" & co"),
            "{svg}"
        );
    }
}
