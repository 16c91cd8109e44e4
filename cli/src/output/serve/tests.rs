//! Snapshots of the capacity table and its note, and its CSV numbers.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::output::grid;
use chimera_domain::serve::Slo;

/// The capacity table's header and cells (`table`: as a terminal shows
/// them; otherwise raw numbers, as CSV carries them).
fn capacity_table(curves: &[Curve], table: bool) -> (Vec<String>, Vec<Vec<String>>) {
    grid(&capacity_columns(table), &capacity_rows(curves))
}

/// Header and rows, `|`-separated, a line each.
fn lines((header, rows): (Vec<String>, Vec<Vec<String>>)) -> String {
    std::iter::once(header)
        .chain(rows)
        .map(|r| r.join(" | "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn point(param: &str, load: f64, tps: f64, attainment: f64, within: Option<bool>) -> LoadPoint {
    LoadPoint {
        load_param: param.into(),
        load,
        samples: 3,
        output_tokens_per_s: Some(tps),
        // Open loop, all at once: each user's share of eight at a time.
        user_tokens_per_s: Some(tps / if load.is_finite() { load } else { 8.0 }),
        ttft_ms_p99: Some(120.0 * load.min(100.0)),
        itl_ms_p50: Some(31.25),
        goodput_requests_per_s: Some(attainment * 2.0),
        slo_attainment: Some(attainment),
        requests_failed: 0.0,
        within_slo: within,
    }
}

/// A concurrency curve under an SLO (capacity at 2 users, 4 misses it) and
/// an open-loop curve without one.
fn curves() -> Vec<Curve> {
    let slo = Slo {
        ttft_ms: Some(500.0),
        itl_ms: None,
        e2e_ms: None,
        percentile: 90.0,
    };
    vec![
        Curve {
            class: "cpu: test x2".into(),
            setup: "engine=candle threads=2".into(),
            slo: Some(slo),
            points: vec![
                point("concurrency", 1.0, 30.5, 1.0, Some(true)),
                point("concurrency", 2.0, 52.0, 0.95, Some(true)),
                point("concurrency", 4.0, 70.25, 0.5, Some(false)),
            ],
            capacity: Some(1),
        },
        Curve {
            class: "cpu: test x2".into(),
            setup: "engine=llama-server".into(),
            slo: None,
            points: vec![
                point("request_rate", 2.0, 40.0, 1.0, None),
                point("request_rate", f64::INFINITY, 80.0, 1.0, None),
            ],
            capacity: None,
        },
    ]
}

#[test]
fn the_capacity_table_marks_the_capacity_and_the_misses() {
    let c = curves();
    expect_test::expect![[r#"
        class | setup | load | n | output [tokens/s] | per user [tokens/s] | TTFT p99 [ms] | ITL p50 [ms] | goodput [req/s] | SLO met | failed | capacity
        cpu: test x2 | engine=candle threads=2 | 1 users | 3 | 30.50 | 30.50 | 120.0 | 31.25 | 2.000 | 1.000 | 0 | 
        cpu: test x2 | engine=candle threads=2 | 2 users | 3 | 52.00 | 26.00 | 240.0 | 31.25 | 1.900 | 0.9500 | 0 | <- capacity
        cpu: test x2 | engine=candle threads=2 | 4 users | 3 | 70.25 | 17.56 | 480.0 | 31.25 | 1.000 | 0.5000 | 0 | misses SLO
        cpu: test x2 | engine=llama-server | 2 req/s | 3 | 40.00 | 20.00 | 240.0 | 31.25 | 2.000 | 1.000 | 0 | 
        cpu: test x2 | engine=llama-server | all at once | 3 | 80.00 | 10.00 | 12000 | 31.25 | 2.000 | 1.000 | 0 | "#]].assert_eq(&lines(capacity_table(&c, true)));
    expect_test::expect!["medians over n repeats; per user = 1000 / median TPOT; SLO met = share of requests within every bound (failed requests count against); capacity = the highest load at and below which every load met the SLO (none; ttft<=500ms @90%)"].assert_eq(&capacity_note(&c));
    // CSV: loads and figures as raw numbers, the capacity as a flag.
    expect_test::expect![[r#"
        class | setup | load | n | output [tokens/s] | per user [tokens/s] | TTFT p99 [ms] | ITL p50 [ms] | goodput [req/s] | SLO met | failed | capacity
        cpu: test x2 | engine=candle threads=2 | 1 | 3 | 30.5 | 30.5 | 120 | 31.25 | 2 | 1 | 0 | false
        cpu: test x2 | engine=candle threads=2 | 2 | 3 | 52 | 26 | 240 | 31.25 | 1.9 | 0.95 | 0 | true
        cpu: test x2 | engine=candle threads=2 | 4 | 3 | 70.25 | 17.5625 | 480 | 31.25 | 1 | 0.5 | 0 | false
        cpu: test x2 | engine=llama-server | 2 | 3 | 40 | 20 | 240 | 31.25 | 2 | 1 | 0 | false
        cpu: test x2 | engine=llama-server | inf | 3 | 80 | 10 | 12000 | 31.25 | 2 | 1 | 0 | false"#]].assert_eq(&lines(capacity_table(&c, false)));
}
