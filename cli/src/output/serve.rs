//! `serve` sweeps: the capacity table (throughput–latency curves per device
//! class and setup, the highest load within the SLO marked) and the
//! request records of one trial.

use super::{emit, num, Column, Format};
use crate::table::Col;
use chimera_domain::capacity::{Curve, LoadPoint};
use chimera_domain::serve::RequestRecord;

/// One row of the capacity table: a load of a curve.
struct Row<'a> {
    curve: &'a Curve,
    point: &'a LoadPoint,
    capacity: bool,
}

fn opt(t: bool, v: Option<f64>) -> String {
    match (v, t) {
        (Some(v), true) => num(v),
        (Some(v), false) => v.to_string(),
        (None, true) => "-".into(),
        (None, false) => String::new(),
    }
}

fn load(p: &LoadPoint) -> String {
    match (p.load_param.as_str(), p.load.is_infinite()) {
        ("concurrency", _) => format!("{} users", p.load),
        (_, true) => "all at once".into(),
        _ => format!("{} req/s", p.load),
    }
}

fn capacity_rows(curves: &[Curve]) -> Vec<Row<'_>> {
    curves
        .iter()
        .flat_map(|c| {
            c.points.iter().enumerate().map(move |(i, p)| Row {
                curve: c,
                point: p,
                capacity: c.capacity == Some(i),
            })
        })
        .collect()
}

fn capacity_columns<'a>(t: bool) -> Vec<Column<'a, Row<'a>>> {
    vec![
        Column::new("class", Col::text(7, 12), |r: &Row| r.curve.class.clone()),
        Column::new("setup", Col::text(8, 12), |r: &Row| r.curve.setup.clone()),
        Column::new("load", Col::key(), move |r: &Row| {
            if t {
                load(r.point)
            } else {
                r.point.load.to_string()
            }
        }),
        Column::new("n", Col::num(2), |r: &Row| r.point.samples.to_string()),
        Column::new("output [tokens/s]", Col::key(), move |r: &Row| {
            opt(t, r.point.output_tokens_per_s)
        }),
        Column::new("per user [tokens/s]", Col::num(7), move |r: &Row| {
            opt(t, r.point.user_tokens_per_s)
        }),
        Column::new("TTFT p99 [ms]", Col::num(7), move |r: &Row| {
            opt(t, r.point.ttft_ms_p99)
        }),
        Column::new("ITL p50 [ms]", Col::num(6), move |r: &Row| {
            opt(t, r.point.itl_ms_p50)
        }),
        Column::new("goodput [req/s]", Col::num(5), move |r: &Row| {
            opt(t, r.point.goodput_requests_per_s)
        }),
        Column::new("SLO met", Col::num(5), move |r: &Row| {
            opt(t, r.point.slo_attainment)
        }),
        Column::new("failed", Col::num(6), |r: &Row| {
            r.point.requests_failed.to_string()
        }),
        Column::new("capacity", Col::key(), move |r: &Row| {
            match (t, r.capacity) {
                (true, true) => "<- capacity".into(),
                (true, false) => match r.point.within_slo {
                    Some(false) => "misses SLO".into(),
                    _ => String::new(),
                },
                (false, c) => c.to_string(),
            }
        }),
    ]
}

/// What the capacity table's columns mean, with the SLOs it was judged by.
pub fn capacity_note(curves: &[Curve]) -> String {
    let slos: std::collections::BTreeSet<String> = curves
        .iter()
        .map(|c| c.slo.map_or_else(|| "none".to_owned(), |s| s.label()))
        .collect();
    format!(
        "medians over n repeats; per user = 1000 / median TPOT; SLO met = share of requests \
         within every bound (failed requests count against); capacity = the highest load \
         at and below which every load met the SLO ({})",
        slos.into_iter().collect::<Vec<_>>().join("; ")
    )
}

/// The capacity table of `serve` results.
pub fn capacity(curves: &[Curve], fmt: Format) -> anyhow::Result<()> {
    let t = fmt == Format::Table;
    emit(fmt, &capacity_columns(t), &capacity_rows(curves), curves)?;
    if t {
        println!("{}", capacity_note(curves));
    }
    Ok(())
}

/// A `serve` trial's requests, one row each (JSON: the records, gaps included).
pub fn requests(records: &[RequestRecord], fmt: Format) -> anyhow::Result<()> {
    let t = fmt == Format::Table;
    type R = RequestRecord;
    let columns: Vec<Column<R>> = vec![
        Column::new("id", Col::key(), |r: &R| r.id.to_string()),
        Column::number("start [ms]", 6, |r: &R| Some(r.start_ms)),
        Column::number("ttft [ms]", 8, |r: &R| r.ttft_ms),
        Column::number("e2e [ms]", 8, |r: &R| r.e2e_ms),
        Column::number("tpot [ms]", 5, |r: &R| r.tpot_ms()),
        Column::new("in [tokens]", Col::num(7), |r: &R| {
            r.input_tokens.to_string()
        }),
        Column::new("out [tokens]", Col::num(7), |r: &R| {
            r.output_tokens.to_string()
        }),
        Column::new("asked [tokens]", Col::num(4), |r: &R| {
            r.requested_tokens.to_string()
        }),
        Column::new("error", Col::text(3, 12), |r: &R| {
            r.error.clone().unwrap_or_default()
        }),
    ];
    emit(fmt, &columns, records, records)?;
    if t {
        let failed = records.iter().filter(|r| r.error.is_some()).count();
        eprintln!("{} requests, {failed} failed", records.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
