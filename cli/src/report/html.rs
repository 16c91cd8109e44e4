//! The report's page as HTML, from maud templates: text is escaped by
//! maud as it goes in; the only markup put in unescaped is the page's
//! constant stylesheet and the charts' SVG (see [`svg`]).

use super::charts::{self, axis_title, color, css, direction};
use super::selection::{select, Pick};
use super::telemetry::attempt_samples;
use super::{Section, TRIALS_CSV, TRIALS_JSON};
use crate::output::{self, num};
use chimera_domain::compare::{self, Comparison};
use chimera_domain::metrics;
use chimera_domain::params::label;
use chimera_domain::results::TrialState;
use chimera_domain::telemetry::{Phase, Sample};
use maud::{html, Markup, PreEscaped};
use plotters::style::RGBColor;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

const STYLE: &str = "
body{font-family:sans-serif;margin:1.5em auto;max-width:1000px;padding:0 1em;color:#111}
h1{font-size:1.6em}h2{border-bottom:2px solid #0072b2;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:bold}dd{margin:0}
figure{margin:.5em 0}svg{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.note{font-size:.85em;color:#444}
.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.4em 1.2em;font-size:.85em}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.35em;vertical-align:middle}
p.none{font-style:italic;color:#555}
code{background:#f4f4f4;padding:0 .2em}
";

/// A chart's SVG, put into the page as it is. This is safe: plotters'
/// SVG backend writes every text it draws (labels, axis titles — which do
/// carry names from the results) and every attribute value through its
/// own XML escaping (`<`, `>`, `&`, `"`, `'`), and everything else in it is
/// numbers and colours it formats itself. Escaping it again would show the
/// markup as text instead of drawing the chart.
fn svg(chart: &str) -> PreEscaped<&str> {
    PreEscaped(chart)
}

/// The whole page.
pub fn page(sections: &[Section], hosts: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let names: Vec<&str> = sections
        .iter()
        .map(|s| s.results.sweep.name.as_str())
        .collect();
    let title = format!("Chimera report: {}", names.join(", "));
    let body = sections
        .iter()
        .enumerate()
        .map(|(k, s)| section(k, s, hosts))
        .collect::<anyhow::Result<Vec<Markup>>>()?;
    let page = html! {
        (PreEscaped("<!DOCTYPE html>\n"))
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                // A constant of this file: no text from the results.
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { (title) }
                    p {
                        "Sweeps: "
                        @for (k, s) in sections.iter().enumerate() {
                            @if k > 0 { ", " }
                            a href={ "#s" (k) } { (s.results.sweep.name) }
                            " (" (s.results.sweep.workload) ")"
                        }
                        ". Every trial, with its parameters and metrics: "
                        a href=(TRIALS_CSV) { (TRIALS_CSV) } ", "
                        a href=(TRIALS_JSON) { (TRIALS_JSON) } "."
                    }
                }
                main { @for s in &body { (s) } }
            }
        }
        "\n"
    };
    Ok(page.into_string())
}

/// One sweep's section: its header, the comparison, and the three charts.
fn section(k: usize, s: &Section, hosts: &BTreeMap<String, String>) -> anyhow::Result<Markup> {
    let r = &s.results;
    let cmp = compare::compare(&r.trials, &s.metric);
    Ok(html! {
        section id={ "s" (k) } class="sweep" {
            h2 { (r.sweep.name) " " small { "(" (r.sweep.workload) " sweep)" } }
            div id={ "s" (k) "-header" } { (section_header(s, hosts)) }
            (comparison(k, s, &cmp))
            (metric_section(k, s, &cmp)?)
            (pareto_section(k, s)?)
            (telemetry_section(k, s)?)
            (failed(k, s))
        }
    })
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS UTC` (RFC 3339 as humantime
/// writes it, with a space and `UTC`); a time it cannot write (before 1970,
/// after 9999) as the number.
pub fn utc(ms: i64) -> String {
    const LAST_MS: u64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    match u64::try_from(ms).ok().filter(|ms| *ms <= LAST_MS) {
        Some(ms) => {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            humantime::format_rfc3339_seconds(t)
                .to_string()
                .replace('T', " ")
                .replace('Z', " UTC")
        }
        None => format!("{ms} ms since 1970-01-01 UTC (out of range)"),
    }
}

/// A table; the columns from `numeric_from` on are right-aligned numbers.
fn table(header: &[String], rows: &[Vec<String>], numeric_from: usize) -> Markup {
    html! {
        table {
            thead { tr { @for h in header { th { (h) } } } }
            tbody {
                @for r in rows {
                    tr {
                        @for (i, c) in r.iter().enumerate() {
                            td class=[(i >= numeric_from).then_some("n")] { (c) }
                        }
                    }
                }
            }
        }
    }
}

fn legend(items: &[(RGBColor, String)]) -> Markup {
    html! {
        ul class="legend" {
            @for (c, text) in items {
                li { span class="swatch" style={ "background:" (css(*c)) } {} (text) }
            }
        }
    }
}

/// A legend of one colour per name, in order.
fn legend_of(names: &[String]) -> Markup {
    let items: Vec<(RGBColor, String)> = names
        .iter()
        .enumerate()
        .map(|(i, c)| (color(i), c.clone()))
        .collect();
    legend(&items)
}

/// A sentence in place of a chart.
fn none(text: &str) -> Markup {
    html! { p class="none" { (text) } }
}

/// The header of a section: the sweep, and the device classes it ran on.
fn section_header(s: &Section, hosts: &BTreeMap<String, String>) -> Markup {
    let r = &s.results;
    let count = |st: TrialState| r.trials.iter().filter(|t| t.state == st).count();
    html! {
        dl {
            dt { "sweep" } dd { code { (r.sweep.id) } " (" (r.sweep.name) ")" }
            dt { "workload" } dd { (r.sweep.workload) }
            dt { "created" } dd { (utc(r.sweep.created_unix_ms)) }
            dt { "state" }
            dd {
                (r.sweep.state) ": " (r.trials.len()) " trials, "
                (count(TrialState::Succeeded)) " succeeded, "
                (count(TrialState::Failed)) " failed, "
                (count(TrialState::Cancelled)) " cancelled"
            }
            dt { "read from" } dd { (s.origin) }
            @for j in &s.joined {
                dt { "joined" }
                dd {
                    code { (j.sweep.id) } " (" (j.sweep.name) ", " (j.sweep.workload) ")"
                    ", by device class and setup"
                }
            }
        }
        (classes_table(s, hosts))
    }
}

/// Device classes: where their trials ran and in which environment.
fn classes_table(s: &Section, hosts: &BTreeMap<String, String>) -> Markup {
    /// Agents (with hosts), devices and environments seen on a class.
    #[derive(Default)]
    struct Seen {
        agents: BTreeSet<String>,
        devices: BTreeSet<String>,
        envs: BTreeSet<String>,
    }
    let mut classes: BTreeMap<&str, Seen> = BTreeMap::new();
    for t in s
        .results
        .trials
        .iter()
        .chain(s.joined.iter().flat_map(|j| j.trials.iter()))
    {
        let e = classes.entry(t.device_class.as_str()).or_default();
        if let Some(a) = &t.agent {
            e.agents
                .insert(match hosts.get(a).filter(|h| !h.is_empty()) {
                    Some(host) => format!("{a} (host {host})"),
                    None => a.clone(),
                });
        }
        if let Some(d) = &t.device_id {
            e.devices.insert(d.clone());
        }
        if let Some(f) = &t.fingerprint {
            let mut fp = format!(
                "{}, {} threads, {}; agent {} ({}), candle {}, {}",
                f.cpu_model,
                f.threads,
                f.os,
                f.agent_version,
                f.agent_git_sha,
                f.candle_version,
                f.rustc_version
            );
            for (k, v) in &f.extra {
                fp.push_str(&format!(", {k}={v}"));
            }
            e.envs.insert(fp);
        }
    }
    let join = |s: &BTreeSet<String>| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.iter().cloned().collect::<Vec<_>>().join("; ")
        }
    };
    let rows: Vec<Vec<String>> = classes
        .iter()
        .map(|(c, seen)| {
            vec![
                (*c).to_owned(),
                join(&seen.agents),
                join(&seen.devices),
                join(&seen.envs),
            ]
        })
        .collect();
    let header = [
        "device class",
        "agents",
        "devices",
        "environment (fingerprint)",
    ];
    table(&header.map(String::from), &rows, usize::MAX)
}

/// The comparison, as `chimera compare` prints it, and for a generate
/// sweep with an eval sweep joined, the speed / accuracy trade-off.
fn comparison(k: usize, s: &Section, cmp: &Comparison) -> Markup {
    let r = &s.results;
    let (header, rows) = output::comparison_table(cmp, true);
    let tradeoff = (r.sweep.workload == "generate")
        .then(|| s.joined.iter().find(|j| j.sweep.workload == "eval"))
        .flatten()
        .map(|eval| compare::tradeoff(&r.trials, &eval.trials))
        .filter(|rows| !rows.is_empty())
        .map(|rows| output::tradeoff_table(&rows, true));
    html! {
        div id={ "s" (k) "-table" } {
            h3 { "Comparison: " (axis_title(&s.metric)) }
            (table(&header, &rows, 2))
            p class="note" { (output::comparison_note(cmp)) }
            @if let Some((header, rows)) = tradeoff {
                h3 { "Speed against accuracy per weight format" }
                (table(&header, &rows, 2))
                p class="note" { (output::TRADEOFF_NOTE) }
            }
        }
    }
}

/// (a) The metric per configuration and class.
fn metric_section(k: usize, s: &Section, cmp: &Comparison) -> anyhow::Result<Markup> {
    let chart = charts::metric_chart(cmp)?;
    Ok(html! {
        section id={ "s" (k) "-metric" } class="chart" {
            h3 { (s.metric) " per configuration and device class" }
            @if let Some(chart) = chart {
                (legend_of(&cmp.classes))
                figure {
                    (svg(&chart))
                    figcaption {
                        @if let Some(p) = charts::common_problem(cmp) {
                            "Every configuration solves " (p) ". "
                        }
                        "Bars: median of " (s.metric) " over the succeeded repeats ("
                        (direction(&s.metric)) "); whiskers: 95% bootstrap interval of the median where a \
                         configuration has two repeats or more (one cut at the chart's edge ends \
                         without a cap); * = best setup for its problem on the class (its interval clear of the others'), as in the table."
                    }
                }
            } @else {
                p class="none" { "No chart: no trial succeeded with a value of " (s.metric) "." }
            }
        }
    })
}

/// (b) The Pareto front of two metrics, over the section's sweep and
/// those joined to it.
fn pareto_section(k: usize, s: &Section) -> anyhow::Result<Markup> {
    let inner = match &s.pareto {
        None => html! {
            p class="none" {
                "No Pareto chart: a " (s.results.sweep.workload) " sweep has no default pair of \
                 metrics to trade off (its configurations solve different problems); pass "
                code { "--pareto X,Y" } " for one."
            }
        },
        Some((x, y)) => {
            let all = s.all_trials();
            let points = compare::pareto_points(&all, x, y);
            let front = compare::pareto_front(&points, x, y);
            if points.is_empty() {
                none(&format!(
                    "No Pareto chart: no configuration reports both {x} and {y}."
                ))
            } else {
                let classes: Vec<String> = points
                    .iter()
                    .map(|p| p.class.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let chart = charts::pareto_chart(&points, &front, &classes, x, y)?;
                let rows: Vec<Vec<String>> = front
                    .iter()
                    .map(|p| vec![p.class.clone(), p.config.clone(), num(p.x), num(p.y)])
                    .collect();
                let header = [
                    "class".into(),
                    "configuration".into(),
                    axis_title(x),
                    axis_title(y),
                ];
                html! {
                    (legend_of(&classes))
                    figure {
                        (svg(&chart))
                        figcaption {
                            (points.len()) " configurations (medians over repeats, matched by setup \
                             across the joined sweeps); filled and connected: the " (front.len())
                            " on the Pareto front of their class — no other configuration of the \
                             class is better on both metrics."
                        }
                    }
                    (table(&header, &rows, 2))
                }
            }
        }
    };
    Ok(html! {
        section id={ "s" (k) "-pareto" } class="chart" { h3 { "Pareto front" } (inner) }
    })
}

/// (c) Device telemetry of the selected trials: a chart per sensor.
fn telemetry_section(k: usize, s: &Section) -> anyhow::Result<Markup> {
    let r = &s.results;
    let picks = select(r, &s.metric);
    let series: Vec<(RGBColor, Vec<&Sample>, &Pick)> = picks
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            s.telemetry
                .samples
                .get(&p.trial_id)
                .map(|all| (color(i), attempt_samples(&r.sweep.id, p, all), p))
        })
        .filter(|(_, v, _)| !v.is_empty())
        .collect();
    let inner = if let Some(why) = &s.telemetry.missing {
        none(why)
    } else if picks.is_empty() {
        none("No telemetry chart: no trial succeeded, so none was selected.")
    } else if series.is_empty() {
        none(&format!(
            "No telemetry chart: {} holds no samples of the selected trials.",
            s.telemetry.source
        ))
    } else {
        telemetry_charts(s, &series)?
    };
    Ok(html! {
        section id={ "s" (k) "-telemetry" } class="chart" {
            h3 { "Device telemetry of selected trials" }
            (inner)
        }
    })
}

/// The legend, a chart per sensor that some sample reports, and the table
/// of the selected trials.
fn telemetry_charts(
    s: &Section,
    series: &[(RGBColor, Vec<&Sample>, &Pick)],
) -> anyhow::Result<Markup> {
    let items: Vec<(RGBColor, String)> = series
        .iter()
        .map(|(c, _, p)| {
            let text = format!(
                "{} — trial {} ({}): {} = {} {}",
                p.role,
                p.trial_id,
                p.config,
                s.metric,
                num(p.value),
                metrics::unit(&s.metric)
            );
            (*c, text.trim_end().to_owned())
        })
        .collect();
    let input: Vec<(RGBColor, Vec<&Sample>)> =
        series.iter().map(|(c, v, _)| (*c, v.clone())).collect();
    let mut figures = Vec::new();
    for (title, fields, unit) in charts::SENSORS {
        if let Some((chart, used)) = charts::telemetry_chart(fields, unit, &input)? {
            figures.push((*title, chart, used.join(", ")));
        }
    }
    let rows: Vec<Vec<String>> = series
        .iter()
        .map(|(_, v, p)| {
            let measure = v.iter().filter(|s| s.phase == Phase::Measure).count();
            vec![
                p.trial_id.clone(),
                p.role.clone(),
                p.class.clone(),
                p.config.clone(),
                num(p.value),
                v.len().to_string(),
                measure.to_string(),
            ]
        })
        .collect();
    let header = [
        "trial".into(),
        "selected as".into(),
        "device class".into(),
        "configuration".into(),
        axis_title(&s.metric),
        "samples".into(),
        "in measured window".into(),
    ];
    Ok(html! {
        (legend(&items))
        @for (title, chart, used) in figures.iter() {
            figure {
                (svg(chart))
                figcaption {
                    (title) ": " (used) " over each selected trial's samples (every attempt's \
                     last); dots: samples in the measured window."
                }
            }
        }
        @if figures.is_empty() {
            (none("No telemetry chart: the samples of the selected trials carry no power, \
                   utilisation, clock or temperature reading."))
        }
        (table(&header, &rows, 4))
        p class="note" { "Samples read from " (s.telemetry.source) "." }
    })
}

/// Failed trials, with their reasons (nothing when none failed).
fn failed(k: usize, s: &Section) -> Markup {
    let failed: Vec<Vec<String>> = s
        .results
        .trials
        .iter()
        .filter(|t| t.error.is_some())
        .map(|t| {
            vec![
                t.id.clone(),
                t.state.name().to_owned(),
                t.device_class.clone(),
                label(&t.params),
                t.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let header = ["trial", "state", "device class", "configuration", "error"];
    html! {
        @if !failed.is_empty() {
            div id={ "s" (k) "-failed" } {
                h3 { "Trials that failed" }
                (table(&header.map(String::from), &failed, usize::MAX))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(253_402_300_799_999), "9999-12-31 23:59:59 UTC");
        // A results file may say anything: out of range is no panic.
        assert!(utc(-1).contains("-1 ms"), "{}", utc(-1));
        assert!(utc(i64::MAX).contains("out of range"));
    }

    #[test]
    fn text_is_escaped_and_cells_are_marked_numeric() {
        let t = table(
            &["<b>".to_owned(), "n".to_owned()],
            &[vec!["a & \"b\"".to_owned(), "1.5".to_owned()]],
            1,
        );
        assert_eq!(
            t.into_string(),
            "<table><thead><tr><th>&lt;b&gt;</th><th>n</th></tr></thead><tbody>\
             <tr><td>a &amp; &quot;b&quot;</td><td class=\"n\">1.5</td></tr></tbody></table>"
        );
    }
}
