//! Printing: every listing as a table, JSON or CSV on stdout. Numbers carry
//! their unit in the column header.

use crate::table::{self, Col};
use chimera_domain::compare::Comparison;
use chimera_domain::metrics;
use chimera_domain::params::label;
use chimera_domain::results::ResultsFile;
use chimera_proto::v1 as proto;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, ContentArrangement, Table};
use serde_json::json;
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::io::Write;

/// How a listing is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// A sweep state's name.
pub fn sweep_state(s: i32) -> &'static str {
    match proto::SweepState::try_from(s) {
        Ok(proto::SweepState::Running) => "running",
        Ok(proto::SweepState::Done) => "done",
        Ok(proto::SweepState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(Cell::new));
    t
}

/// A CSV cell as spreadsheet programs may open it. They run a cell that
/// starts with `=`, `+`, `-`, `@`, a tab or a carriage return as a formula
/// (OWASP "CSV injection"), and text in these files comes from people and
/// agents: a sweep's parameters (`=HYPERLINK("http://…")`), its name, a
/// trial's error. Such a cell gets a leading `'`, which spreadsheets read as
/// "this is text" and do not show.
///
/// Numbers stay as they are, so the file stays data: a cell that parses as
/// an `f64` (`-2.5`, `-1e-3`, `-inf`; the parser takes nothing but a sign,
/// digits, a point, an exponent and `inf`/`nan`), a percentage of one
/// (`-12.5%`, as `chimera diff` prints a change), and the lone `-` the
/// listings print for "no value" carry no formula. The decision is on the
/// cell's text, not its column, so a column that mixes both is safe.
pub fn csv_cell(text: &str) -> Cow<'_, str> {
    let formula_like = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let number = |t: &str| t.parse::<f64>().is_ok();
    let harmless = text == "-" || number(text) || text.strip_suffix('%').is_some_and(number);
    if formula_like && !harmless {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Writes one CSV record, every cell through [`csv_cell`]. Every CSV the
/// CLI writes (listings with `--output csv`, `trials.csv`) goes through
/// here, header included.
pub fn write_csv_row<W: Write, S: AsRef<str>>(
    w: &mut csv::Writer<W>,
    row: &[S],
) -> csv::Result<()> {
    let cells: Vec<Cow<'_, str>> = row.iter().map(|c| csv_cell(c.as_ref())).collect();
    w.write_record(cells.iter().map(|c| c.as_bytes()))
}

/// Prints a listing; a table is fitted to the terminal's width (see
/// [`crate::table`]), `cols` saying how each column may give way.
fn emit(
    fmt: Format,
    header: &[&str],
    cols: &[Col],
    rows: Vec<Vec<String>>,
    json: serde_json::Value,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match fmt {
        Format::Table => {
            let width = table::terminal_width();
            let fitted = table::fit(header, &rows, cols, width);
            let head: Vec<&str> = fitted.header.iter().map(String::as_str).collect();
            let mut t = table(&head);
            for r in fitted.rows {
                t.add_row(r);
            }
            writeln!(out, "{t}")?;
            if !fitted.dropped.is_empty() {
                eprintln!(
                    "(left out to fit {width} columns: {}; --output csv or json has every column)",
                    fitted.dropped.join(", ")
                );
            }
        }
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?,
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            write_csv_row(&mut w, header)?;
            for r in rows {
                write_csv_row(&mut w, &r)?;
            }
            w.flush()?;
        }
    }
    Ok(())
}

/// Sweeps.
pub fn sweeps(list: &[proto::Sweep], fmt: Format) -> anyhow::Result<()> {
    let header = [
        "id",
        "name",
        "workload",
        "state",
        "total",
        "pending",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "created_unix_s",
    ];
    let rows = list
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.name.clone(),
                s.workload.clone(),
                sweep_state(s.state).to_owned(),
                s.trials_total.to_string(),
                s.trials_pending.to_string(),
                s.trials_running.to_string(),
                s.trials_succeeded.to_string(),
                s.trials_failed.to_string(),
                s.trials_cancelled.to_string(),
                (s.created_unix_ms / 1000).to_string(),
            ]
        })
        .collect();
    let cols = [
        Col::key(),
        Col::text(8, 10),
        Col::text(7, 8),
        Col::text(9, 9),
        Col::num(6),
        Col::num(3),
        Col::num(4),
        Col::num(6),
        Col::num(5),
        Col::num(2),
        Col::num(1),
    ];
    let js = list
        .iter()
        .map(|s| {
            json!({
                "id": s.id, "name": s.name, "workload": s.workload, "state": sweep_state(s.state),
                "created_unix_ms": s.created_unix_ms,
                "submitted_by": s.submitted_by, "cancelled_by": (!s.cancelled_by.is_empty()).then_some(&s.cancelled_by),
                "trials": {"total": s.trials_total, "pending": s.trials_pending, "running": s.trials_running,
                           "succeeded": s.trials_succeeded, "failed": s.trials_failed, "cancelled": s.trials_cancelled},
            })
        })
        .collect();
    emit(fmt, &header, &cols, rows, serde_json::Value::Array(js))
}

/// Agents.
pub fn agents(list: &[proto::Agent], fmt: Format) -> anyhow::Result<()> {
    let header = [
        "name",
        "hostname",
        "version",
        "connected",
        "draining",
        "device",
        "device_class",
        "memory_GiB",
        "running",
        "last_seen_ms",
    ];
    let mut rows = Vec::new();
    for a in list {
        for d in &a.devices {
            rows.push(vec![
                a.name.clone(),
                a.hostname.clone(),
                a.version.clone(),
                a.connected.to_string(),
                a.draining.to_string(),
                d.id.clone(),
                d.device_class.clone(),
                format!("{:.1}", d.memory_bytes as f64 / (1u64 << 30) as f64),
                a.running
                    .iter()
                    .map(|r| format!("{}/{}#{}", r.sweep_id, r.trial_id, r.attempt))
                    .collect::<Vec<_>>()
                    .join(" "),
                a.last_seen_ms_ago.to_string(),
            ]);
        }
    }
    let cols = [
        Col::text(Col::KEEP, 12),
        Col::text(4, 10),
        Col::text(1, 8),
        Col::text(6, 5),
        Col::text(3, 5),
        Col::text(7, 6),
        Col::text(8, 14),
        Col::num(2),
        Col::text(5, 12),
        Col::num(1),
    ];
    let js = list
        .iter()
        .map(|a| {
            json!({
                "name": a.name, "hostname": a.hostname, "version": a.version, "features": a.features,
                "connected": a.connected, "draining": a.draining, "last_seen_ms_ago": a.last_seen_ms_ago,
                "labels": a.labels, "registered_by": a.registered_by,
                "drained_by": (!a.drained_by.is_empty()).then_some(&a.drained_by),
                "running": a.running.iter().map(|r| json!({"sweep_id": r.sweep_id, "trial_id": r.trial_id, "attempt": r.attempt})).collect::<Vec<_>>(),
                "devices": a.devices.iter().map(|d| json!({
                    "id": d.id, "kind": d.kind, "vendor": d.vendor, "model": d.model, "device_class": d.device_class,
                    "memory_bytes": d.memory_bytes, "cores": d.cores, "compute_capability": d.compute_capability,
                    "driver_version": d.driver_version, "capabilities": d.capabilities,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    emit(fmt, &header, &cols, rows, serde_json::Value::Array(js))
}

fn opt_num(v: Option<&f64>) -> String {
    v.map(|v| num(*v)).unwrap_or_default()
}

/// Every trial of a sweep.
pub fn results(r: &ResultsFile, fmt: Format) -> anyhow::Result<()> {
    if fmt == Format::Json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    if fmt == Format::Csv {
        // One column per parameter and per metric seen in any trial.
        let params: BTreeSet<&String> = r.trials.iter().flat_map(|t| t.params.keys()).collect();
        let mets: BTreeSet<&String> = r.trials.iter().flat_map(|t| t.metrics.keys()).collect();
        let mut header: Vec<String> = [
            "id",
            "state",
            "device_class",
            "config_index",
            "repeat",
            "attempt",
            "agent",
            "device_id",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        header.extend(params.iter().map(|p| format!("param.{p}")));
        header.extend(mets.iter().map(|m| m.to_string()));
        header.push("error".into());
        let mut w = csv::Writer::from_writer(std::io::stdout().lock());
        write_csv_row(&mut w, &header)?;
        for t in &r.trials {
            let mut row = vec![
                t.id.clone(),
                t.state.name().to_owned(),
                t.device_class.clone(),
                t.config_index.to_string(),
                t.repeat.to_string(),
                t.attempt.to_string(),
                t.agent.clone().unwrap_or_default(),
                t.device_id.clone().unwrap_or_default(),
            ];
            row.extend(
                params
                    .iter()
                    .map(|p| t.params.get(*p).map(|v| v.to_string()).unwrap_or_default()),
            );
            row.extend(
                mets.iter()
                    .map(|m| t.metrics.get(*m).map(|v| v.to_string()).unwrap_or_default()),
            );
            row.push(t.error.clone().unwrap_or_default());
            write_csv_row(&mut w, &row)?;
        }
        w.flush()?;
        return Ok(());
    }
    let workload = r
        .sweep
        .workload
        .parse::<chimera_domain::catalog::Workload>()
        .unwrap_or(chimera_domain::catalog::Workload::Kernel);
    let shown = metrics::headline(workload);
    let mut header: Vec<String> = ["trial", "state", "device_class", "config"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for m in shown {
        let unit = metrics::unit(m);
        header.push(if unit.is_empty() {
            (*m).to_owned()
        } else {
            format!("{m} [{unit}]")
        });
    }
    header.extend(["attempt", "agent", "error"].iter().map(|s| s.to_string()));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    // The headline metric outlasts everything but the trial id; the others
    // go before the configuration, the error and the state.
    let mut cols = vec![
        Col::key(),
        Col::text(7, 9),
        Col::text(6, 12),
        Col::text(8, 16),
    ];
    cols.extend((0..shown.len()).map(|k| {
        Col::num(match k {
            0 => 9,
            1 => 5,
            2 => 4,
            _ => 3,
        })
    }));
    cols.extend([Col::num(1), Col::text(2, 8), Col::text(8, 16)]);
    let rows = r
        .trials
        .iter()
        .map(|t| {
            let mut row = vec![
                t.id.clone(),
                t.state.name().to_owned(),
                t.device_class.clone(),
                label(&t.params),
            ];
            row.extend(shown.iter().map(|m| opt_num(t.metrics.get(*m))));
            row.extend([
                t.attempt.to_string(),
                t.agent.clone().unwrap_or_default(),
                t.error.clone().unwrap_or_default(),
            ]);
            row
        })
        .collect();
    emit(fmt, &header, &cols, rows, serde_json::Value::Null)
}

/// Telemetry samples: one row each, one column per sensor seen.
pub fn telemetry(samples: &[proto::TelemetrySample], fmt: Format) -> anyhow::Result<()> {
    if fmt == Format::Json {
        let list = samples
            .iter()
            .cloned()
            .map(chimera_domain::telemetry::Sample::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("a telemetry sample from the controller: {e}"))?;
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let fields: BTreeSet<&String> = samples.iter().flat_map(|s| s.fields.keys()).collect();
    let mut header: Vec<String> = ["t_unix_ms", "device", "phase", "trial"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    header.extend(fields.iter().map(|f| f.to_string()));
    header.push("throttle".into());
    // Power, utilisation, clocks and temperature before the rest.
    const FIRST: &[&str] = &[
        "power_w",
        "cpu_util_pct",
        "gpu_util_pct",
        "sm_clock_mhz",
        "cpu_mhz_mean",
        "temp_c",
    ];
    let mut cols = vec![
        Col::num(9),
        Col::text(7, 6),
        Col::text(8, 7),
        Col::text(3, 12),
    ];
    cols.extend(fields.iter().map(|f| {
        Col::num(match FIRST.iter().position(|p| p == f) {
            Some(k) => 8 - (k as u8).min(3),
            None => 2,
        })
    }));
    cols.push(Col::text(1, 10));
    let rows = samples
        .iter()
        .map(|s| {
            let mut row = vec![
                s.t_unix_ms.to_string(),
                s.device_id.clone(),
                s.phase.clone(),
                s.trial.clone(),
            ];
            row.extend(fields.iter().map(|f| {
                s.fields
                    .get(*f)
                    .map(|v| {
                        if fmt == Format::Csv {
                            v.to_string()
                        } else {
                            num(*v)
                        }
                    })
                    .unwrap_or_default()
            }));
            row.push(s.throttle.join(" "));
            row
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    emit(fmt, &header, &cols, rows, serde_json::Value::Null)?;
    if fmt == Format::Table {
        eprintln!("{} samples", samples.len());
    }
    Ok(())
}

/// A Pareto front per class.
pub fn pareto(
    front: &[chimera_domain::compare::ParetoPoint],
    x: &str,
    y: &str,
    fmt: Format,
) -> anyhow::Result<()> {
    if fmt == Format::Json {
        println!("{}", serde_json::to_string_pretty(front)?);
        return Ok(());
    }
    let head = |m: &str| {
        let u = metrics::unit(m);
        if u.is_empty() {
            m.to_owned()
        } else {
            format!("{m} [{u}]")
        }
    };
    let (hx, hy) = (head(x), head(y));
    let header = ["class", "configuration", hx.as_str(), hy.as_str()];
    let rows = front
        .iter()
        .map(|p| vec![p.class.clone(), p.config.clone(), num(p.x), num(p.y)])
        .collect();
    let cols = [Col::text(5, 12), Col::text(8, 16), Col::key(), Col::key()];
    emit(fmt, &header, &cols, rows, serde_json::Value::Null)?;
    if fmt == Format::Table {
        println!("Pareto-optimal configurations per class (medians over repeats): none is beaten on both metrics");
    }
    Ok(())
}

/// Cost per configuration and class.
pub fn cost(
    rows: &[chimera_domain::cost::CostRow],
    tokens_per_month: f64,
    utilization: f64,
    fmt: Format,
) -> anyhow::Result<()> {
    if fmt == Format::Json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    let usd = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
    let header = [
        "problem",
        "setup",
        "class",
        "tokens/s per device",
        "devices",
        "hardware [$/month]",
        "energy [$/month]",
        "[$/M tokens]",
    ];
    let table_rows = rows
        .iter()
        .map(|r| {
            vec![
                r.group.clone(),
                r.setup.clone(),
                r.class.clone(),
                num(r.tokens_per_s),
                r.devices.to_string(),
                usd(r.hardware_usd_per_month),
                usd(r.energy_usd_per_month),
                usd(r.usd_per_million_tokens),
            ]
        })
        .collect();
    let cols = [
        Col::text(6, 12),
        Col::text(8, 12),
        Col::text(7, 12),
        Col::num(9),
        Col::num(9),
        Col::num(6),
        Col::num(5),
        Col::key(),
    ];
    emit(fmt, &header, &cols, table_rows, serde_json::Value::Null)?;
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
pub fn diff(d: &chimera_domain::diff::Diff, fmt: Format) -> anyhow::Result<()> {
    if fmt == Format::Json {
        println!("{}", serde_json::to_string_pretty(d)?);
        return Ok(());
    }
    let unit = metrics::unit(&d.metric);
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" [{unit}]")
    };
    let a_head = format!("A mean{unit}");
    let b_head = format!("B mean{unit}");
    let header = [
        "problem",
        "setup",
        "class",
        a_head.as_str(),
        b_head.as_str(),
        "change",
        "95% CI",
        "p",
        "verdict",
    ];
    let pct = |v: f64| format!("{:+.1}%", v * 100.0);
    let rows = d
        .rows
        .iter()
        .map(|r| {
            vec![
                r.group.clone(),
                r.setup.clone(),
                r.class.clone(),
                format!("{} (n={})", num(r.a.mean), r.a.n),
                format!("{} (n={})", num(r.b.mean), r.b.n),
                pct(r.change),
                r.ci.map(|(lo, hi)| format!("{} .. {}", pct(lo), pct(hi)))
                    .unwrap_or_else(|| "-".into()),
                r.p_value.map(num).unwrap_or_else(|| "-".into()),
                r.verdict.name().to_owned(),
            ]
        })
        .collect();
    let cols = [
        Col::text(6, 12),
        Col::text(8, 12),
        Col::text(7, 12),
        Col::num(5),
        Col::num(5),
        Col::key(),
        Col::num(4),
        Col::num(3),
        Col::text(Col::KEEP, 12),
    ];
    emit(fmt, &header, &cols, rows, serde_json::Value::Null)?;
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

/// A number with four significant digits (values from 1e-4 to 1e7 without an exponent).
pub fn num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if !(1e-4..1e7).contains(&a) {
        return format!("{v:.3e}");
    }
    let digits = (3 - a.log10().floor() as i32).max(0) as usize;
    format!("{v:.digits$}")
}

/// The trade-off as a table: header and rows; `marks` adds the `*` marks of
/// the terminal table (CSV leaves them out).
pub fn tradeoff_table(
    rows: &[chimera_domain::compare::TradeoffRow],
    marks: bool,
) -> (Vec<String>, Vec<Vec<String>>) {
    let opt = |v: Option<f64>| v.map(num).unwrap_or_else(|| "-".into());
    let header = [
        "device class",
        "format",
        "decode [tokens/s]",
        "prefill [tokens/s]",
        "weights [MB]",
        "KL mean [nats]",
        "top-1 agree",
        "perplexity",
        "",
    ]
    .map(str::to_owned)
    .to_vec();
    let rows = rows
        .iter()
        .map(|r| {
            let mark = |v: String, best: bool| if best && marks { format!("{v} *") } else { v };
            vec![
                r.device_class.clone(),
                r.format.clone(),
                mark(opt(r.decode_tokens_per_s), r.fastest),
                opt(r.prefill_tokens_per_s),
                opt(r.weight_bytes.map(|b| b / 1e6)),
                mark(opt(r.kl_mean), r.closest),
                opt(r.top1_agree),
                opt(r.perplexity),
                if r.pareto {
                    "pareto".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    (header, rows)
}

/// What the trade-off table's marks mean.
pub const TRADEOFF_NOTE: &str =
    "medians over repeats; * = fastest decode / closest to the reference on the class; \
     pareto = no format is both faster and closer. KL is against the f32 reference \
     (the model's Q4_1 weights dequantized), over its top-32 tokens plus the rest.";

/// The speed / accuracy trade-off per weight format.
pub fn tradeoff(rows: &[chimera_domain::compare::TradeoffRow], fmt: Format) -> anyhow::Result<()> {
    if fmt == Format::Json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    let table = fmt == Format::Table;
    let (header, rows) = tradeoff_table(rows, table);
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let cols = [
        Col::text(6, 12),
        Col::text(Col::KEEP, 8),
        Col::num(9),
        Col::num(4),
        Col::num(3),
        Col::num(8),
        Col::num(5),
        Col::num(2),
        Col::text(7, 6),
    ];
    emit(fmt, &header, &cols, rows, serde_json::Value::Null)?;
    if table {
        println!("{TRADEOFF_NOTE}");
    }
    Ok(())
}

/// A comparison as a table: header and rows. `table` gives the terminal's
/// cells (median with its ±95% interval, marks, a ratio column per class);
/// otherwise one plain number per class (CSV).
pub fn comparison_table(c: &Comparison, table: bool) -> (Vec<String>, Vec<Vec<String>>) {
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
    let mut header = vec!["problem".to_owned(), "setup".to_owned()];
    for class in &c.classes {
        header.push(format!("{class}{unit}"));
        if table {
            header.push(if baseline { "vs baseline" } else { "vs best" }.into());
        }
    }
    let rows = c
        .rows
        .iter()
        .map(|r| {
            let mut row = vec![r.group.clone(), r.setup.clone()];
            for cell in &r.cells {
                match cell {
                    Some(cell) if table => {
                        // The 95% interval of the mean, as a +- share of the value.
                        let ci = cell
                            .ci95
                            .filter(|_| cell.value != 0.0)
                            .map(|(lo, hi)| {
                                format!(" ±{:.0}%", (hi - lo) / 2.0 / cell.value.abs() * 100.0)
                            })
                            .unwrap_or_default();
                        row.push(format!(
                            "{}{ci}{}{}{}",
                            num(cell.value),
                            if cell.best { " *" } else { "" },
                            if cell.throttled { " (throttled)" } else { "" },
                            if cell.mixed_env { " (mixed env)" } else { "" }
                        ));
                        let ratio = if baseline {
                            cell.vs_baseline
                        } else {
                            cell.ratio_to_best
                        };
                        row.push(
                            ratio
                                .map(|r| format!("{r:.2}x"))
                                .unwrap_or_else(|| "-".into()),
                        );
                    }
                    Some(cell) => row.push(cell.value.to_string()),
                    None if table => {
                        row.push("-".into());
                        row.push(String::new());
                    }
                    None => row.push(String::new()),
                }
            }
            row
        })
        .collect();
    (header, rows)
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
    if fmt == Format::Json {
        println!("{}", serde_json::to_string_pretty(c)?);
        return Ok(());
    }
    let table = fmt == Format::Table;
    let (header, rows) = comparison_table(c, table);
    let mut cols = vec![Col::text(7, 12), Col::text(8, 14)];
    for _ in &c.classes {
        cols.push(Col::num(9));
        if table {
            cols.push(Col::num(3));
        }
    }
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    emit(fmt, &header_refs, &cols, rows, serde_json::Value::Null)?;
    if table {
        println!("{}", comparison_note(c));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_a_spreadsheet_would_run_get_a_quote_and_numbers_stay_numbers() {
        for (cell, safe) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("-12.5% .. +3.0%", "'-12.5% .. +3.0%"),
            // Numbers, as Rust prints them and as the listings do.
            ("-2.5", "-2.5"),
            ("+2.5", "+2.5"),
            ("-1.250e-5", "-1.250e-5"),
            ("-inf", "-inf"),
            ("-12.5%", "-12.5%"),
            ("-", "-"),
            // Text that starts otherwise.
            ("plain", "plain"),
            ("a=b", "a=b"),
            (" =1", " =1"),
            ("", ""),
        ] {
            assert_eq!(csv_cell(cell), safe, "{cell:?}");
        }
    }

    #[test]
    fn a_csv_row_is_written_with_safe_cells_and_read_back_whole() {
        let mut w = csv::Writer::from_writer(Vec::new());
        write_csv_row(&mut w, &["param.x", "=1+1"]).unwrap();
        write_csv_row(&mut w, &["-2.5".to_owned(), "@a, \"b\"".to_owned()]).unwrap();
        let bytes = w.into_inner().unwrap();
        let mut rd = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bytes.as_slice());
        let rows: Vec<Vec<String>> = rd
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        assert_eq!(
            rows,
            [["param.x", "'=1+1"], ["-2.5", "'@a, \"b\""]].map(|r| r.map(str::to_owned))
        );
    }
}
