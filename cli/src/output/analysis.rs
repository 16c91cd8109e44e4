//! Listings of what was measured: a sweep's trials, the comparison of
//! configurations across device classes, the speed / accuracy trade-off,
//! Pareto fronts, costs and diffs. The report's HTML tables are made from
//! the same columns ([`comparison_table`], [`tradeoff_table`]).

use super::{emit, grid, num, num_or_dash, with_unit, Column, Format};
use crate::table::Col;
use chimera_domain::compare::{Cell, Comparison, ParetoPoint, Row, TradeoffRow};
use chimera_domain::cost::CostRow;
use chimera_domain::diff::{Diff, DiffRow};
use chimera_domain::metrics;
use chimera_domain::params::label;
use chimera_domain::results::{ResultsFile, TrialRecord};
use chimera_domain::Params;
use std::collections::{BTreeMap, BTreeSet};

/// A column per parameter name any of `rows` has, sorted by name
/// (`param.NAME`), each cell the row's parameter of that name.
pub fn param_columns<'a, R>(rows: &'a [R], params: fn(&R) -> &Params) -> Vec<Column<'a, R>> {
    let names: BTreeSet<&String> = rows.iter().flat_map(|r| params(r).keys()).collect();
    names
        .into_iter()
        .map(|p| {
            Column::new(format!("param.{p}"), Col::key(), move |r: &R| {
                params(r).get(p).map(|v| v.to_string()).unwrap_or_default()
            })
        })
        .collect()
}

/// A column per metric any of `rows` reports, sorted by name, each cell
/// the row's value as Rust prints it.
pub fn metric_columns<'a, R>(
    rows: &'a [R],
    metrics: fn(&R) -> &BTreeMap<String, f64>,
) -> Vec<Column<'a, R>> {
    let names: BTreeSet<&String> = rows.iter().flat_map(|r| metrics(r).keys()).collect();
    names
        .into_iter()
        .map(|m| {
            Column::new(m.as_str(), Col::key(), move |r: &R| {
                metrics(r).get(m).map(|v| v.to_string()).unwrap_or_default()
            })
        })
        .collect()
}

/// Every trial of a sweep. JSON is the results file; CSV every parameter
/// and every metric; the table the workload's headline metrics, so it
/// refuses a sweep whose workload this build does not know.
pub fn results(r: &ResultsFile, fmt: Format) -> anyhow::Result<()> {
    type T = TrialRecord;
    let columns = match fmt {
        Format::Json => Vec::new(),
        Format::Csv => {
            let text =
                |name: &'static str, cell: fn(&T) -> String| Column::new(name, Col::key(), cell);
            let mut columns = vec![
                text("id", |t| t.id.clone()),
                text("state", |t| t.state.name().to_owned()),
                text("device_class", |t| t.device_class.clone()),
                text("config_index", |t| t.config_index.to_string()),
                text("repeat", |t| t.repeat.to_string()),
                text("attempt", |t| t.attempt.to_string()),
                text("agent", |t| t.agent.clone().unwrap_or_default()),
                text("device_id", |t| t.device_id.clone().unwrap_or_default()),
            ];
            columns.extend(param_columns(&r.trials, |t: &T| &t.params));
            columns.extend(metric_columns(&r.trials, |t: &T| &t.metrics));
            columns.push(text("error", |t| t.error.clone().unwrap_or_default()));
            columns
        }
        Format::Table => trial_table_columns(&r.sweep.workload)?,
    };
    emit(fmt, &columns, &r.trials, r)
}

/// The columns of the trial table of a sweep of `workload`: its headline
/// metrics between the configuration and the attempt. An unknown workload
/// is an error naming it (its headline metrics are not known).
pub(super) fn trial_table_columns(
    workload: &str,
) -> anyhow::Result<Vec<Column<'static, TrialRecord>>> {
    let workload = workload
        .parse::<chimera_domain::catalog::Workload>()
        .map_err(|e| anyhow::anyhow!("sweep.workload: {e}"))?;
    type T = TrialRecord;
    // The headline metric outlasts everything but the trial id; the others
    // go before the configuration, the error and the state.
    let mut columns = vec![
        Column::new("trial", Col::key(), |t: &T| t.id.clone()),
        Column::new("state", Col::text(7, 9), |t: &T| t.state.name().to_owned()),
        Column::new("device_class", Col::text(6, 12), |t: &T| {
            t.device_class.clone()
        }),
        Column::new("config", Col::text(8, 16), |t: &T| label(&t.params)),
    ];
    for (k, m) in metrics::headline(workload).iter().enumerate() {
        let keep = match k {
            0 => 9,
            1 => 5,
            2 => 4,
            _ => 3,
        };
        columns.push(Column::new(with_unit(m), Col::num(keep), move |t: &T| {
            t.metrics.get(*m).map(|v| num(*v)).unwrap_or_default()
        }));
    }
    columns.extend([
        Column::new("attempt", Col::num(1), |t: &T| t.attempt.to_string()),
        Column::new("agent", Col::text(2, 8), |t: &T| {
            t.agent.clone().unwrap_or_default()
        }),
        Column::new("error", Col::text(8, 16), |t: &T| {
            t.error.clone().unwrap_or_default()
        }),
    ]);
    Ok(columns)
}

/// A value as a listing shows it: the table's four significant digits
/// (`-` for none), or the whole number for CSV (empty for none).
fn value(table: bool, v: Option<f64>) -> String {
    match (v, table) {
        (Some(v), true) => num(v),
        (Some(v), false) => v.to_string(),
        (None, true) => "-".into(),
        (None, false) => String::new(),
    }
}

/// A Pareto front's columns; `t`: the table's, else CSV's.
fn pareto_columns(x: &str, y: &str, t: bool) -> Vec<Column<'static, ParetoPoint>> {
    type P = ParetoPoint;
    vec![
        Column::new("class", Col::text(5, 12), |p: &P| p.class.clone()),
        Column::new("configuration", Col::text(8, 16), |p: &P| p.config.clone()),
        Column::new(with_unit(x), Col::key(), move |p: &P| value(t, Some(p.x))),
        Column::new(with_unit(y), Col::key(), move |p: &P| value(t, Some(p.y))),
    ]
}

/// A Pareto front per class.
pub fn pareto(front: &[ParetoPoint], x: &str, y: &str, fmt: Format) -> anyhow::Result<()> {
    let columns = pareto_columns(x, y, fmt == Format::Table);
    emit(fmt, &columns, front, front)?;
    if fmt == Format::Table {
        println!("Pareto-optimal configurations per class (medians over repeats): none is beaten on both metrics");
    }
    Ok(())
}

/// The cost listing's columns: the table rounds dollars to cents and
/// writes `incl.` for energy a price includes; CSV has the whole numbers
/// and a `power_included` column.
fn cost_columns(t: bool) -> Vec<Column<'static, CostRow>> {
    let usd = move |v: Option<f64>| match (v, t) {
        (Some(v), true) => format!("{v:.2}"),
        _ => value(t, v),
    };
    type C = CostRow;
    let mut columns = vec![
        Column::new("problem", Col::text(6, 12), |r: &C| r.group.clone()),
        Column::new("setup", Col::text(8, 12), |r: &C| r.setup.clone()),
        Column::new("class", Col::text(7, 12), |r: &C| r.class.clone()),
        Column::new("at load", Col::text(6, 12), move |r: &C| {
            r.load
                .clone()
                .unwrap_or_else(|| if t { "-".into() } else { String::new() })
        }),
        Column::new("tokens/s per device", Col::num(9), move |r: &C| {
            value(t, Some(r.tokens_per_s))
        }),
        Column::new("n", Col::num(1), |r: &C| r.samples.to_string()),
        Column::new("devices", Col::num(9), |r: &C| r.devices.to_string()),
        Column::new("hardware [$/month]", Col::num(6), move |r: &C| {
            usd(r.hardware_usd_per_month)
        }),
        Column::new("energy [$/month]", Col::num(5), move |r: &C| {
            if r.power_included && t {
                "incl.".into()
            } else {
                usd(r.energy_usd_per_month)
            }
        }),
        Column::new("[$/M tokens]", Col::key(), move |r: &C| {
            usd(r.usd_per_million_tokens)
        }),
    ];
    if !t {
        columns.push(Column::new("power_included", Col::key(), |r: &C| {
            r.power_included.to_string()
        }));
    }
    columns
}

/// Cost per configuration and class.
pub fn cost(
    rows: &[CostRow],
    volume: chimera_domain::cost::Volume,
    fmt: Format,
) -> anyhow::Result<()> {
    let t = fmt == Format::Table;
    let mut columns = cost_columns(t);
    if rows.iter().all(|r| r.load.is_none()) {
        columns.retain(|c| c.header != "at load");
    }
    emit(fmt, &columns, rows, rows)?;
    if t {
        println!(
            "{} tokens/month at {:.0}% utilisation, 720 h/month, {} prices; medians over n repeats; \
             incl. = the device's price includes power (power_included in the prices file), \
             so no energy is added; - = no price for the class (or for this pricing), or no \
             energy measured on it{}",
            num(volume.tokens_per_month),
            volume.utilization * 100.0,
            volume.pricing.name(),
            if rows.iter().any(|r| r.load.is_some()) {
                "; a serve sweep is priced at its capacity: output tokens/s at the highest load within its SLO"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// The columns of a diff: the table's (medians with n, change, its
/// interval, p, verdict) or, for CSV, one whole number per quantity.
fn diff_columns(d: &Diff, table: bool) -> Vec<Column<'static, DiffRow>> {
    type D = DiffRow;
    let text = |h: &'static str, col: Col, f: fn(&D) -> String| Column::new(h, col, f);
    let mut columns = vec![
        text("problem", Col::text(6, 12), |r| r.group.clone()),
        text("setup", Col::text(8, 12), |r| r.setup.clone()),
        text("class", Col::text(7, 12), |r| r.class.clone()),
    ];
    if table {
        let unit = metrics::unit(&d.metric);
        let unit = if unit.is_empty() {
            String::new()
        } else {
            format!(" [{unit}]")
        };
        let pct = |v: f64| format!("{:+.1}%", v * 100.0);
        columns.extend([
            Column::new(format!("A median{unit}"), Col::num(5), |r: &D| {
                format!("{} (n={})", num(r.a.median), r.a.n)
            }),
            Column::new(format!("B median{unit}"), Col::num(5), |r: &D| {
                format!("{} (n={})", num(r.b.median), r.b.n)
            }),
            Column::new("change", Col::key(), move |r: &D| {
                r.change.map(pct).unwrap_or_else(|| "-".into())
            }),
            Column::new("95% interval", Col::num(4), move |r: &D| {
                r.ci()
                    .map(|(lo, hi)| format!("{} .. {}", pct(lo), pct(hi)))
                    .unwrap_or_else(|| "-".into())
            }),
            Column::new("p (Holm)", Col::num(3), |r: &D| num_or_dash(r.p_adjusted)),
            Column::new("verdict", Col::text(Col::KEEP, 12), |r: &D| {
                r.verdict.name().to_owned()
            }),
        ]);
        return columns;
    }
    let v = |f: fn(&D) -> Option<f64>| move |r: &D| value(false, f(r));
    let n = |h: &'static str, f: fn(&D) -> Option<f64>| Column::new(h, Col::key(), v(f));
    columns.extend([
        n("a_median", |r| Some(r.a.median)),
        n("a_ci_low", |r| r.a.ci_low),
        n("a_ci_high", |r| r.a.ci_high),
        n("a_n", |r| Some(r.a.n as f64)),
        n("b_median", |r| Some(r.b.median)),
        n("b_ci_low", |r| r.b.ci_low),
        n("b_ci_high", |r| r.b.ci_high),
        n("b_n", |r| Some(r.b.n as f64)),
        n("change", |r| r.change),
        n("change_ci_low", |r| r.ci_low),
        n("change_ci_high", |r| r.ci_high),
        n("p", |r| r.p),
        n("p_adjusted", |r| r.p_adjusted),
        text("verdict", Col::key(), |r| r.verdict.name().to_owned()),
    ]);
    columns
}

/// What a diff table's columns mean.
pub fn diff_note(d: &Diff) -> String {
    format!(
        "{} ({}): B against A, change of the median over n repeats; 95% interval: \
         bootstrap interval of the change (seeded); p: Mann-Whitney rank test, \
         Holm-corrected over the {} configuration(s) with 2+ repeats a side; \
         better/worse: p < 0.05 and the interval wholly beyond ±{}%; \
         inconclusive: too few repeats to decide{}",
        d.metric,
        if d.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        },
        d.rows.iter().filter(|r| r.p.is_some()).count(),
        chimera_domain::diff::NOISE * 100.0,
        if d.unmatched > 0 {
            format!("; {} configuration(s) in only one sweep", d.unmatched)
        } else {
            String::new()
        }
    )
}

/// A diff as a table: header and rows (see [`diff_columns`]).
#[cfg(test)]
fn diff_table(d: &Diff, table: bool) -> (Vec<String>, Vec<Vec<String>>) {
    grid(&diff_columns(d, table), &d.rows)
}

/// Two sweeps compared.
pub fn diff(d: &Diff, fmt: Format) -> anyhow::Result<()> {
    let table = fmt == Format::Table;
    emit(fmt, &diff_columns(d, table), &d.rows, d)?;
    if table {
        println!("{}", diff_note(d));
    }
    for w in d.warnings() {
        eprintln!("{w}");
    }
    Ok(())
}

/// The trade-off's columns; `marks` adds the `*` marks of the terminal
/// table (CSV leaves them out).
/// An uncertainty to two significant digits (`0.00030`, `0.90`, `13`).
fn two_digits(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return num(v);
    }
    let decimals = (1.0 - v.abs().log10().floor()).clamp(0.0, 12.0) as usize;
    format!("{v:.decimals$}")
}

/// A trade-off row's number, or flag, for a CSV column of its own.
type TradeoffNumber = fn(&TradeoffRow) -> Option<f64>;
type TradeoffFlag = fn(&TradeoffRow) -> bool;

/// The trade-off's columns. `table`: the terminal's (the `*` marks, each
/// accuracy figure `± its standard error`); otherwise (CSV) one raw number
/// per quantity, the standard errors and marks in columns of their own.
fn tradeoff_columns(table: bool) -> Vec<Column<'static, TradeoffRow>> {
    type T = TradeoffRow;
    let mark = move |v: String, best: bool| if best && table { format!("{v} *") } else { v };
    let with_se = move |v: Option<f64>, se: Option<f64>| match (v, se, table) {
        (Some(v), Some(se), true) => format!("{} ±{}", num(v), two_digits(se)),
        (v, _, _) => value(table, v),
    };
    let mut columns = vec![
        Column::new("device class", Col::text(6, 12), |r: &T| {
            r.device_class.clone()
        }),
        Column::new("format", Col::text(Col::KEEP, 8), |r: &T| r.format.clone()),
        Column::new("decode [tokens/s]", Col::num(9), move |r: &T| {
            mark(value(table, r.decode_tokens_per_s), r.fastest)
        }),
        Column::new("prefill [tokens/s]", Col::num(4), move |r: &T| {
            value(table, r.prefill_tokens_per_s)
        }),
        Column::new("weights [MB]", Col::num(3), move |r: &T| {
            value(table, r.weight_bytes.map(|b| b / 1e6))
        }),
        Column::new("KL mean [nats]", Col::num(8), move |r: &T| {
            mark(with_se(r.kl_mean, r.kl_mean_se), r.closest)
        }),
        Column::new("top-1 agree", Col::num(5), move |r: &T| {
            with_se(r.top1_agree, r.top1_agree_se)
        }),
        Column::new("perplexity", Col::num(2), move |r: &T| {
            with_se(r.perplexity, r.perplexity_se)
        }),
    ];
    if table {
        columns.push(Column::new("", Col::text(7, 6), |r: &T| {
            if r.pareto {
                "pareto".into()
            } else {
                String::new()
            }
        }));
    } else {
        let ses: [(&str, TradeoffNumber); 3] = [
            ("KL mean se [nats]", |r| r.kl_mean_se),
            ("top-1 agree se", |r| r.top1_agree_se),
            ("perplexity se", |r| r.perplexity_se),
        ];
        for (name, f) in ses {
            columns.push(Column::new(name, Col::key(), move |r: &T| {
                value(false, f(r))
            }));
        }
        let flags: [(&str, TradeoffFlag); 3] = [
            ("fastest", |r| r.fastest),
            ("closest", |r| r.closest),
            ("pareto", |r| r.pareto),
        ];
        for (name, f) in flags {
            columns.push(Column::new(name, Col::key(), move |r: &T| f(r).to_string()));
        }
    }
    columns
}

/// The trade-off as a table: header and rows; `marks` adds the `*` marks
/// of the terminal table.
pub fn tradeoff_table(rows: &[TradeoffRow], marks: bool) -> (Vec<String>, Vec<Vec<String>>) {
    grid(&tradeoff_columns(marks), rows)
}

/// What the trade-off table's marks mean.
pub const TRADEOFF_NOTE: &str =
    "medians over repeats; ± = standard error over the scored tokens; * = fastest decode / \
     closest to the reference on the class; pareto = no format is both faster and closer. KL is against the f32 reference \
     (the model's Q4_1 weights dequantized), over the full vocabulary \
     (over the top 32 tokens plus the rest, a lower bound, where the eval sweep says `kl: topk`).";

/// The speed / accuracy trade-off per weight format.
pub fn tradeoff(rows: &[TradeoffRow], fmt: Format) -> anyhow::Result<()> {
    let table = fmt == Format::Table;
    emit(fmt, &tradeoff_columns(table), rows, rows)?;
    if table {
        println!("{TRADEOFF_NOTE}");
    }
    Ok(())
}

/// One number of a comparison cell, for its CSV column.
type Quantity = fn(&Cell) -> Option<f64>;

/// A comparison's columns. `table` gives the terminal's cells (median with
/// its interval and marks, a speed-up column per class); otherwise (CSV)
/// one whole number per quantity and class: median, interval, n, speed-up, cov.
fn comparison_columns(c: &Comparison, table: bool) -> Vec<Column<'static, Row>> {
    let unit = if c.unit.is_empty() {
        String::new()
    } else {
        format!(" [{}]", c.unit)
    };
    let baseline = c
        .rows
        .iter()
        .flat_map(|r| r.cells.iter().flatten())
        .any(|cell| cell.speedup_vs_baseline.is_some());
    let speedup = move |cell: &Cell| {
        if baseline {
            cell.speedup_vs_baseline
        } else {
            cell.speedup_vs_best
        }
    };
    let mut columns = vec![
        Column::new("problem", Col::text(7, 12), |r: &Row| r.group.clone()),
        Column::new("setup", Col::text(8, 14), |r: &Row| r.setup.clone()),
    ];
    let cell_of = |ci: usize| move |r: &Row| r.cells.get(ci).and_then(Option::as_ref).cloned();
    // Cells say their n where it is not the same for all (the note says it otherwise).
    let ns: BTreeSet<usize> = c
        .rows
        .iter()
        .flat_map(|r| r.cells.iter().flatten())
        .map(|cell| cell.samples)
        .collect();
    let mixed_n = ns.len() > 1;
    for (ci, class) in c.classes.iter().enumerate() {
        let cell = cell_of(ci);
        if !table {
            let quantities: [(&str, Quantity); 5] = [
                ("ci_low", |c| c.ci_low),
                ("ci_high", |c| c.ci_high),
                ("n", |c| Some(c.samples as f64)),
                ("cov", |c| c.cov),
                ("trial_cov", |c| c.trial_cov),
            ];
            columns.push(Column::new(
                format!("{class} median{unit}"),
                Col::key(),
                move |r: &Row| value(false, cell(r).map(|c| c.value)),
            ));
            for (name, f) in quantities {
                columns.push(Column::new(
                    format!("{class} {name}"),
                    Col::key(),
                    move |r: &Row| value(false, cell(r).and_then(|c| f(&c))),
                ));
            }
            let head = if baseline {
                "speedup_vs_baseline"
            } else {
                "speedup_vs_best"
            };
            columns.push(Column::new(
                format!("{class} {head}"),
                Col::key(),
                move |r: &Row| value(false, cell(r).and_then(|c| speedup(&c))),
            ));
            continue;
        }
        columns.push(Column::new(
            format!("{class}{unit}"),
            Col::num(9),
            move |r: &Row| match cell(r) {
                Some(cell) => {
                    let ci = cell
                        .ci95()
                        .map(|(lo, hi)| format!(" ({}–{})", num(lo), num(hi)))
                        .unwrap_or_default();
                    let n = if mixed_n {
                        format!(" n={}", cell.samples)
                    } else {
                        String::new()
                    };
                    format!(
                        "{}{ci}{n}{}{}{}",
                        num(cell.value),
                        if cell.best {
                            " *"
                        } else if cell.tied {
                            " ="
                        } else {
                            ""
                        },
                        if cell.throttled { " (throttled)" } else { "" },
                        if cell.mixed_env { " (mixed env)" } else { "" }
                    )
                }
                None => "-".into(),
            },
        ));
        let head = if baseline {
            "speed-up vs baseline"
        } else {
            "speed-up vs best"
        };
        columns.push(Column::new(head, Col::num(3), move |r: &Row| {
            match cell(r) {
                Some(cell) => speedup(&cell)
                    .map(|r| format!("{r:.2}×"))
                    .unwrap_or_else(|| "-".into()),
                None => String::new(),
            }
        }));
    }
    columns
}

/// A comparison as a table: header and rows (see [`comparison_columns`]).
pub fn comparison_table(c: &Comparison, table: bool) -> (Vec<String>, Vec<Vec<String>>) {
    grid(&comparison_columns(c, table), &c.rows)
}

/// What a comparison table's cells and marks mean.
pub fn comparison_note(c: &Comparison) -> String {
    let ns: BTreeSet<usize> = c
        .rows
        .iter()
        .flat_map(|r| r.cells.iter().flatten())
        .map(|cell| cell.samples)
        .collect();
    let n = match (ns.first(), ns.last()) {
        (Some(a), Some(b)) if a == b => format!("{a}"),
        (Some(a), Some(b)) => format!("{a} to {b}"),
        _ => "0".into(),
    };
    let against = if c
        .rows
        .iter()
        .flat_map(|r| r.cells.iter().flatten())
        .any(|cell| cell.speedup_vs_baseline.is_some())
    {
        "the same setup on the baseline class"
    } else {
        "the best setup for the problem"
    };
    format!(
        "{} ({}): median over n = {n} repeats (n=K in a cell where they differ), \
         (low–high): 95% bootstrap interval of the median \
         (none with one repeat); * = best setup for the problem on the device class, its interval \
         clear of every other's; = = tied for best: intervals overlap (or one repeat), no best can \
         be named; speed-up: how many times better than {against} (above 1 = better), whatever the \
         metric's direction; (throttled) = measured while the device's clocks were held down; \
         (mixed env) = repeats from different agent builds or CPUs",
        c.metric,
        if c.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        }
    )
}

/// A comparison: configurations x classes, best per class marked with `*`
/// where its interval is clear, ties with `=`; warnings about noisy cells
/// go to stderr.
pub fn comparison(c: &Comparison, fmt: Format) -> anyhow::Result<()> {
    let table = fmt == Format::Table;
    emit(fmt, &comparison_columns(c, table), &c.rows, c)?;
    if table {
        println!("{}", comparison_note(c));
    }
    for w in c.warnings() {
        eprintln!("{w}");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
