//! Snapshots of the comparison and diff tables and notes, and the numbers-only CSV columns.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::report::fixtures::repeats;

/// Header and rows, `|`-separated, a line each.
fn lines((header, rows): (Vec<String>, Vec<Vec<String>>)) -> String {
    std::iter::once(header)
        .chain(rows)
        .map(|r| r.join(" | "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Three setups of one problem: q8_0 clearly fastest over five repeats;
/// q4_0 and q4_1 overlapping, q4_1 measured once.
fn sweep() -> Vec<TrialRecord> {
    let mut t = repeats(0, 0, "q8_0", "gflop_per_s", &[10.0, 10.2, 9.9, 10.1, 10.05]);
    t.extend(repeats(
        5,
        1,
        "q4_0",
        "gflop_per_s",
        &[6.0, 7.5, 5.0, 6.5, 5.5],
    ));
    t.extend(repeats(10, 2, "q4_1", "gflop_per_s", &[6.2]));
    t
}

#[test]
fn the_comparison_table_marks_only_a_clear_best_and_reads_speed_ups_one_way() {
    let c = chimera_domain::compare::compare(&sweep(), "gflop_per_s");
    expect_test::expect![[r#"
        problem | setup | cpu: test x2 [GFLOP/s] | speed-up vs best
        shape=1,64,64 | op=qmatmul format=q8_0 | 10.05 (9.900–10.20) n=5 = | 1.00×
        shape=1,64,64 | op=qmatmul format=q4_0 | 6.000 (5.000–7.500) n=5 | 0.60×
        shape=1,64,64 | op=qmatmul format=q4_1 | 6.200 n=1 = | 0.62×"#]]
    .assert_eq(&lines(comparison_table(&c, true)));
    expect_test::expect!["gflop_per_s (higher is better): median over n = 1 to 5 repeats (n=K in a cell where they differ), (low–high): 95% bootstrap interval of the median (none with one repeat); * = best setup for the problem on the device class, its interval clear of every other's; = = tied for best: intervals overlap (or one repeat), no best can be named; speed-up: how many times better than the best setup for the problem (above 1 = better), whatever the metric's direction; (throttled) = measured while the device's clocks were held down; (mixed env) = repeats from different agent builds or CPUs"].assert_eq(&comparison_note(&c));
    // Lower is better: the speed-up still reads above 1 = better.
    let mut t = repeats(0, 0, "q8_0", "rmse", &[0.01, 0.0101, 0.0099]);
    t.extend(repeats(3, 1, "q4_0", "rmse", &[0.02, 0.0201, 0.0199]));
    let c = chimera_domain::compare::compare(&t, "rmse");
    expect_test::expect![[r#"
        problem | setup | cpu: test x2 | speed-up vs best
        shape=1,64,64 | op=qmatmul format=q8_0 | 0.01000 (0.009900–0.01010) * | 1.00×
        shape=1,64,64 | op=qmatmul format=q4_0 | 0.02000 (0.01990–0.02010) | 0.50×"#]]
    .assert_eq(&lines(comparison_table(&c, true)));
    expect_test::expect![[r#""#]].assert_eq(&c.warnings().join("\n"));
    let noisy = chimera_domain::compare::compare(&sweep(), "gflop_per_s");
    expect_test::expect!["warning: op=qmatmul format=q4_0 shape=1,64,64 on cpu: test x2 varies by 16% (cov) across repeats, more than 10%: too noisy to rank; measure on a quieter machine or with more repeats"].assert_eq(&noisy.warnings().join("\n"));
}

#[test]
fn the_diff_table_and_its_note() {
    let a = repeats(
        0,
        0,
        "q8_0",
        "gflop_per_s",
        &[100.0, 101.0, 99.0, 100.5, 99.5],
    );
    let b = repeats(0, 0, "q8_0", "gflop_per_s", &[50.0, 51.0, 49.0, 50.5, 49.5]);
    let d = chimera_domain::diff::diff(&a, &b, "gflop_per_s");
    expect_test::expect![[r#"
        problem | setup | class | A median [GFLOP/s] | B median [GFLOP/s] | change | 95% interval | p (Holm) | verdict
        shape=1,64,64 | op=qmatmul format=q8_0 | cpu: test x2 | 100.0 (n=5) | 50.00 (n=5) | -50.0% | -51.0% .. -49.0% | 0.007937 | worse"#]].assert_eq(&lines(diff_table(&d, true)));
    expect_test::expect!["gflop_per_s (higher is better): B against A, change of the median over n repeats; 95% interval: bootstrap interval of the change (seeded); p: Mann-Whitney rank test, Holm-corrected over the 1 configuration(s) with 2+ repeats a side; better/worse: p < 0.05 and the interval wholly beyond ±1%; inconclusive: too few repeats to decide"].assert_eq(&diff_note(&d));
    let one = chimera_domain::diff::diff(&a[..1], &b[..1], "gflop_per_s");
    expect_test::expect![[r#"
        problem | setup | class | A median [GFLOP/s] | B median [GFLOP/s] | change | 95% interval | p (Holm) | verdict
        shape=1,64,64 | op=qmatmul format=q8_0 | cpu: test x2 | 100.0 (n=1) | 50.00 (n=1) | -50.0% | - | - | inconclusive"#]].assert_eq(&lines(diff_table(&one, true)));
}

/// Every cell of the CSV columns that are not labels parses as a number or is empty.
fn assert_numeric(header: &[String], rows: &[Vec<String>], labels: &[&str]) {
    assert!(!rows.is_empty());
    for (i, h) in header.iter().enumerate() {
        if labels.contains(&h.as_str()) || h.ends_with(" class") {
            continue;
        }
        for r in rows {
            let cell = &r[i];
            assert!(
                cell.is_empty() || cell.parse::<f64>().is_ok(),
                "column `{h}`: `{cell}` is not a number"
            );
        }
    }
}

#[test]
fn csv_columns_carry_numbers_only() {
    let labels = [
        "problem",
        "setup",
        "class",
        "verdict",
        "configuration",
        "power_included",
        "at load",
    ];
    let c = chimera_domain::compare::compare(&sweep(), "gflop_per_s");
    let (h, rows) = comparison_table(&c, false);
    assert_numeric(&h, &rows, &labels);
    assert!(h.contains(&"cpu: test x2 ci_low".to_owned()), "{h:?}");
    let a = repeats(0, 0, "q8_0", "gflop_per_s", &[100.0, 101.0, 99.0]);
    let b = repeats(0, 0, "q8_0", "gflop_per_s", &[50.0]);
    let d = chimera_domain::diff::diff(&a, &b, "gflop_per_s");
    let (h, rows) = diff_table(&d, false);
    assert_numeric(&h, &rows, &labels);
    assert!(h.contains(&"change_ci_low".to_owned()), "{h:?}");
    let g = repeats(0, 0, "q8_0", "decode_tokens_per_s", &[90.0, 100.0, 110.0]);
    let prices = chimera_domain::cost::Prices::parse(
        "energy_usd_per_kwh = 0.1\n[[device]]\nmatch = \"cpu\"\nusd_per_hour = 0.36\n",
    )
    .unwrap();
    let volume = chimera_domain::cost::Volume {
        tokens_per_month: 1e9,
        utilization: 0.5,
        pricing: chimera_domain::cost::Pricing::OnDemand,
    };
    let rows = chimera_domain::cost::cost(&g, &prices, "decode_tokens_per_s", volume);
    let (h, cells) = grid(&cost_columns(false), &rows);
    assert_numeric(&h, &cells, &labels);
    let front = chimera_domain::compare::pareto(&g, "decode_tokens_per_s", "decode_tokens_per_s");
    let (h, cells) = grid(&pareto_columns("x", "y", false), &front);
    assert_numeric(&h, &cells, &labels);
}

/// A generate sweep and an eval sweep of two formats, as the demo joins them.
fn speed_and_accuracy() -> (Vec<TrialRecord>, Vec<TrialRecord>) {
    use crate::report::fixtures::trial;
    let generate = vec![
        trial("t00000", 0, "q8_0", &[("decode_tokens_per_s", 40.0)]),
        trial("t00001", 1, "q4_0", &[("decode_tokens_per_s", 55.0)]),
    ];
    let eval = vec![
        trial(
            "t00000",
            0,
            "q8_0",
            &[
                ("kl_mean", 0.0012),
                ("kl_mean_se", 0.0003),
                ("top1_agree", 0.98),
                ("top1_agree_se", 0.006),
                ("perplexity", 12.5),
                ("perplexity_se", 0.8),
            ],
        ),
        trial(
            "t00001",
            1,
            "q4_0",
            &[
                ("kl_mean", 0.031),
                ("kl_mean_se", 0.002),
                ("top1_agree", 0.9),
                ("top1_agree_se", 0.013),
                ("perplexity", 13.9),
                ("perplexity_se", 0.9),
            ],
        ),
    ];
    (generate, eval)
}

#[test]
fn the_tradeoff_table_shows_each_accuracy_with_its_standard_error() {
    let (g, e) = speed_and_accuracy();
    let rows = chimera_domain::compare::tradeoff(&g, &e);
    expect_test::expect![[r#"
        device class | format | decode [tokens/s] | prefill [tokens/s] | weights [MB] | KL mean [nats] | top-1 agree | perplexity | 
        cpu: test x2 | q4_0 | 55.00 * | - | - | 0.03100 ±0.0020 | 0.9000 ±0.013 | 13.90 ±0.90 | pareto
        cpu: test x2 | q8_0 | 40.00 | - | - | 0.001200 ±0.00030 * | 0.9800 ±0.0060 | 12.50 ±0.80 | pareto"#]]
    .assert_eq(&lines(tradeoff_table(&rows, true)));
    // CSV: raw numbers, the standard errors and marks in columns of their own.
    let (h, cells) = tradeoff_table(&rows, false);
    assert_numeric(
        &h,
        &cells,
        &["device class", "format", "fastest", "closest", "pareto"],
    );
    expect_test::expect![[r#"
        device class | format | decode [tokens/s] | prefill [tokens/s] | weights [MB] | KL mean [nats] | top-1 agree | perplexity | KL mean se [nats] | top-1 agree se | perplexity se | fastest | closest | pareto
        cpu: test x2 | q4_0 | 55 |  |  | 0.031 | 0.9 | 13.9 | 0.002 | 0.013 | 0.9 | true | false | true
        cpu: test x2 | q8_0 | 40 |  |  | 0.0012 | 0.98 | 12.5 | 0.0003 | 0.006 | 0.8 | false | true | true"#]]
    .assert_eq(&lines((h, cells)));
}

#[test]
fn the_cost_and_pareto_tables() {
    let mut g = repeats(0, 0, "q8_0", "decode_tokens_per_s", &[90.0, 100.0, 110.0]);
    g.extend(repeats(
        3,
        1,
        "q4_0",
        "decode_tokens_per_s",
        &[120.0, 125.0, 130.0],
    ));
    let prices = chimera_domain::cost::Prices::parse(
        "energy_usd_per_kwh = 0.1\n[[device]]\nmatch = \"cpu\"\nusd_per_hour = 0.36\npower_included = true\n",
    )
    .unwrap();
    let volume = chimera_domain::cost::Volume {
        tokens_per_month: 1e9,
        utilization: 0.5,
        pricing: chimera_domain::cost::Pricing::OnDemand,
    };
    let rows = chimera_domain::cost::cost(&g, &prices, "decode_tokens_per_s", volume);
    expect_test::expect![[r#"
        problem | setup | class | at load | tokens/s per device | n | devices | hardware [$/month] | energy [$/month] | [$/M tokens]
        shape=1,64,64 | op=qmatmul format=q4_0 | cpu: test x2 | - | 125.0 | 3 | 7 | 1814.40 | incl. | 1.60
        shape=1,64,64 | op=qmatmul format=q8_0 | cpu: test x2 | - | 100.0 | 3 | 8 | 2073.60 | incl. | 2.00"#]].assert_eq(&lines(grid(&cost_columns(true), &rows)));
    // Speed against size: three formats, one beaten on both.
    use crate::report::fixtures::trial;
    let p = [
        ("q8_0", 100.0, 143.0),
        ("q4_0", 125.0, 76.0),
        ("q4_1", 18.0, 84.0),
    ];
    let t: Vec<TrialRecord> = p
        .iter()
        .enumerate()
        .map(|(i, (f, speed, mb))| {
            trial(
                &format!("t{i:05}"),
                i as u32,
                f,
                &[("decode_tokens_per_s", *speed), ("weight_bytes", mb * 1e6)],
            )
        })
        .collect();
    let front = chimera_domain::compare::pareto(&t, "decode_tokens_per_s", "weight_bytes");
    expect_test::expect![[r#"
        class | configuration | decode_tokens_per_s [tokens/s] | weight_bytes [bytes]
        cpu: test x2 | op=qmatmul format=q4_0 | 125.0 | 7.600e7"#]]
    .assert_eq(&lines(grid(
        &pareto_columns("decode_tokens_per_s", "weight_bytes", true),
        &front,
    )));
}
