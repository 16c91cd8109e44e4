//! Listings of what was measured: a sweep's trials, the comparison of
//! configurations across device classes, the speed / accuracy trade-off,
//! Pareto fronts, costs and diffs. The report's HTML tables are made from
//! the same columns ([`comparison_table`], [`tradeoff_table`]).

use super::{emit, grid, num, num_or_dash, with_unit, Column, Format};
use crate::table::Col;
use chimera_domain::compare::{Comparison, ParetoPoint, Row, TradeoffRow};
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

/// A Pareto front per class.
pub fn pareto(front: &[ParetoPoint], x: &str, y: &str, fmt: Format) -> anyhow::Result<()> {
    type P = ParetoPoint;
    let columns = [
        Column::new("class", Col::text(5, 12), |p: &P| p.class.clone()),
        Column::new("configuration", Col::text(8, 16), |p: &P| p.config.clone()),
        Column::new(with_unit(x), Col::key(), |p: &P| num(p.x)),
        Column::new(with_unit(y), Col::key(), |p: &P| num(p.y)),
    ];
    emit(fmt, &columns, front, front)?;
    if fmt == Format::Table {
        println!("Pareto-optimal configurations per class (medians over repeats): none is beaten on both metrics");
    }
    Ok(())
}

/// Cost per configuration and class.
pub fn cost(
    rows: &[CostRow],
    tokens_per_month: f64,
    utilization: f64,
    fmt: Format,
) -> anyhow::Result<()> {
    let usd = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
    type C = CostRow;
    let columns = [
        Column::new("problem", Col::text(6, 12), |r: &C| r.group.clone()),
        Column::new("setup", Col::text(8, 12), |r: &C| r.setup.clone()),
        Column::new("class", Col::text(7, 12), |r: &C| r.class.clone()),
        Column::new("tokens/s per device", Col::num(9), |r: &C| {
            num(r.tokens_per_s)
        }),
        Column::new("devices", Col::num(9), |r: &C| r.devices.to_string()),
        Column::new("hardware [$/month]", Col::num(6), move |r: &C| {
            usd(r.hardware_usd_per_month)
        }),
        Column::new("energy [$/month]", Col::num(5), move |r: &C| {
            usd(r.energy_usd_per_month)
        }),
        Column::new("[$/M tokens]", Col::key(), move |r: &C| {
            usd(r.usd_per_million_tokens)
        }),
    ];
    emit(fmt, &columns, rows, rows)?;
    if fmt == Format::Table {
        println!(
            "{} tokens/month at {:.0}% utilisation, 720 h/month; medians over repeats; \
             - = no price for the class, or no energy measured on it",
            num(tokens_per_month),
            utilization * 100.0
        );
    }
    Ok(())
}

/// Two sweeps compared.
pub fn diff(d: &Diff, fmt: Format) -> anyhow::Result<()> {
    let unit = metrics::unit(&d.metric);
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" [{unit}]")
    };
    let pct = |v: f64| format!("{:+.1}%", v * 100.0);
    type D = DiffRow;
    let columns = [
        Column::new("problem", Col::text(6, 12), |r: &D| r.group.clone()),
        Column::new("setup", Col::text(8, 12), |r: &D| r.setup.clone()),
        Column::new("class", Col::text(7, 12), |r: &D| r.class.clone()),
        Column::new(format!("A mean{unit}"), Col::num(5), |r: &D| {
            format!("{} (n={})", num(r.a.mean), r.a.n)
        }),
        Column::new(format!("B mean{unit}"), Col::num(5), |r: &D| {
            format!("{} (n={})", num(r.b.mean), r.b.n)
        }),
        Column::new("change", Col::key(), move |r: &D| pct(r.change)),
        Column::new("95% CI", Col::num(4), move |r: &D| {
            r.ci.map(|(lo, hi)| format!("{} .. {}", pct(lo), pct(hi)))
                .unwrap_or_else(|| "-".into())
        }),
        Column::new("p", Col::num(3), |r: &D| num_or_dash(r.p_value)),
        Column::new("verdict", Col::text(Col::KEEP, 12), |r: &D| {
            r.verdict.name().to_owned()
        }),
    ];
    emit(fmt, &columns, &d.rows, d)?;
    if fmt == Format::Table {
        println!(
            "{} ({}): B against A, change of the mean over repeats; verdict by Welch's t-test at 5%{}",
            d.metric,
            if d.higher_is_better {
                "higher is better"
            } else {
                "lower is better"
            },
            if d.unmatched > 0 {
                format!("; {} configuration(s) in only one sweep", d.unmatched)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// The trade-off's columns; `marks` adds the `*` marks of the terminal
/// table (CSV leaves them out).
fn tradeoff_columns(marks: bool) -> Vec<Column<'static, TradeoffRow>> {
    type T = TradeoffRow;
    let mark = move |v: String, best: bool| if best && marks { format!("{v} *") } else { v };
    vec![
        Column::new("device class", Col::text(6, 12), |r: &T| {
            r.device_class.clone()
        }),
        Column::new("format", Col::text(Col::KEEP, 8), |r: &T| r.format.clone()),
        Column::new("decode [tokens/s]", Col::num(9), move |r: &T| {
            mark(num_or_dash(r.decode_tokens_per_s), r.fastest)
        }),
        Column::new("prefill [tokens/s]", Col::num(4), |r: &T| {
            num_or_dash(r.prefill_tokens_per_s)
        }),
        Column::new("weights [MB]", Col::num(3), |r: &T| {
            num_or_dash(r.weight_bytes.map(|b| b / 1e6))
        }),
        Column::new("KL mean [nats]", Col::num(8), move |r: &T| {
            mark(num_or_dash(r.kl_mean), r.closest)
        }),
        Column::new("top-1 agree", Col::num(5), |r: &T| {
            num_or_dash(r.top1_agree)
        }),
        Column::new("perplexity", Col::num(2), |r: &T| num_or_dash(r.perplexity)),
        Column::new("", Col::text(7, 6), |r: &T| {
            if r.pareto {
                "pareto".into()
            } else {
                String::new()
            }
        }),
    ]
}

/// The trade-off as a table: header and rows; `marks` adds the `*` marks
/// of the terminal table.
pub fn tradeoff_table(rows: &[TradeoffRow], marks: bool) -> (Vec<String>, Vec<Vec<String>>) {
    grid(&tradeoff_columns(marks), rows)
}

/// What the trade-off table's marks mean.
pub const TRADEOFF_NOTE: &str =
    "medians over repeats; * = fastest decode / closest to the reference on the class; \
     pareto = no format is both faster and closer. KL is against the f32 reference \
     (the model's Q4_1 weights dequantized), over its top-32 tokens plus the rest.";

/// The speed / accuracy trade-off per weight format.
pub fn tradeoff(rows: &[TradeoffRow], fmt: Format) -> anyhow::Result<()> {
    let table = fmt == Format::Table;
    emit(fmt, &tradeoff_columns(table), rows, rows)?;
    if table {
        println!("{TRADEOFF_NOTE}");
    }
    Ok(())
}

/// A comparison's columns. `table` gives the terminal's cells (median with
/// its ±95% interval, marks, a ratio column per class); otherwise one plain
/// number per class (CSV).
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
        .any(|cell| cell.vs_baseline.is_some());
    let mut columns = vec![
        Column::new("problem", Col::text(7, 12), |r: &Row| r.group.clone()),
        Column::new("setup", Col::text(8, 14), |r: &Row| r.setup.clone()),
    ];
    for (ci, class) in c.classes.iter().enumerate() {
        columns.push(Column::new(
            format!("{class}{unit}"),
            Col::num(9),
            move |r: &Row| match r.cells.get(ci).and_then(Option::as_ref) {
                Some(cell) if table => {
                    // The 95% interval of the mean, as a +- share of the value.
                    let ci = cell
                        .ci95
                        .filter(|_| cell.value != 0.0)
                        .map(|(lo, hi)| {
                            format!(" ±{:.0}%", (hi - lo) / 2.0 / cell.value.abs() * 100.0)
                        })
                        .unwrap_or_default();
                    format!(
                        "{}{ci}{}{}{}",
                        num(cell.value),
                        if cell.best { " *" } else { "" },
                        if cell.throttled { " (throttled)" } else { "" },
                        if cell.mixed_env { " (mixed env)" } else { "" }
                    )
                }
                Some(cell) => cell.value.to_string(),
                None if table => "-".into(),
                None => String::new(),
            },
        ));
        if table {
            let head = if baseline { "vs baseline" } else { "vs best" };
            columns.push(Column::new(head, Col::num(3), move |r: &Row| {
                match r.cells.get(ci).and_then(Option::as_ref) {
                    Some(cell) => {
                        let ratio = if baseline {
                            cell.vs_baseline
                        } else {
                            cell.ratio_to_best
                        };
                        ratio
                            .map(|r| format!("{r:.2}x"))
                            .unwrap_or_else(|| "-".into())
                    }
                    None => String::new(),
                }
            }));
        }
    }
    columns
}

/// A comparison as a table: header and rows (see [`comparison_columns`]).
pub fn comparison_table(c: &Comparison, table: bool) -> (Vec<String>, Vec<Vec<String>>) {
    grid(&comparison_columns(c, table), &c.rows)
}

/// What a comparison table's cells and marks mean.
pub fn comparison_note(c: &Comparison) -> String {
    format!(
        "{} ({}): median over repeats, ±: 95% interval of the mean; * = best setup for the problem on the device class; (throttled) = measured while the device's clocks were held down; (mixed env) = repeats from different agent builds or CPUs",
        c.metric,
        if c.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        }
    )
}

/// A comparison: configurations x classes, best per class marked with `*`.
pub fn comparison(c: &Comparison, fmt: Format) -> anyhow::Result<()> {
    let table = fmt == Format::Table;
    emit(fmt, &comparison_columns(c, table), &c.rows, c)?;
    if table {
        println!("{}", comparison_note(c));
    }
    Ok(())
}
