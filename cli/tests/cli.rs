//! The `chimera` binary without a controller: offline commands and errors.
#![allow(clippy::unwrap_used)]

mod common;

use common::{chimera, repeats_file, results, trial, with, write};
use serde_json::json;

#[test]
fn run_refuses_a_bad_spec_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.yaml");
    std::fs::write(
        &spec,
        "name: x\nworkload: kernel\nparams:\n  op: matmul\n  shape: 1,2,3\n  speed: 11\n",
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let out = chimera(&[
        "run",
        spec.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 6") && err.contains("speed"), "{err}");
    assert!(!out_dir.exists(), "nothing written");
}

#[test]
fn an_unreachable_controller_is_named_in_the_error() {
    let out = chimera(&["--controller", "http://127.0.0.1:9", "sweep", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http://127.0.0.1:9"));
}

#[test]
fn compare_reads_a_results_file_offline_and_checks_its_format() {
    let dir = tempfile::tempdir().unwrap();
    let file = with(
        results("s", "n", vec![]),
        json!({"format": "something-else"}),
    );
    let f = write(&dir.path().join("results.json"), &file);
    let out = chimera(&["compare", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("something-else"));
}

#[test]
fn diff_gates_on_a_significant_regression_offline() {
    let dir = tempfile::tempdir().unwrap();
    let a = repeats_file(
        dir.path(),
        "a",
        "gflop_per_s",
        &[100.0, 101.0, 99.0, 100.5, 99.5],
    );
    let b = repeats_file(
        dir.path(),
        "b",
        "gflop_per_s",
        &[80.0, 81.0, 79.0, 80.5, 79.5],
    );
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let out = chimera(&["diff", a, b, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["rows"][0]["verdict"], "worse", "{d}");
    let out = chimera(&["diff", a, b, "--fail-on", "regression>5%"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("regressed by more than 5.0%"));
    let out = chimera(&["diff", a, b, "--fail-on", "regression>50%"]);
    assert_eq!(out.status.code(), Some(0));
    let out = chimera(&["diff", b, a, "--fail-on", "regression>5%"]);
    assert_eq!(out.status.code(), Some(0), "the reverse is an improvement");
    let out = chimera(&["diff", a, b, "--output", "csv"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = csv::Reader::from_reader(text.as_bytes());
    let header = rows.headers().unwrap().clone();
    for row in rows.records() {
        for (h, cell) in header.iter().zip(row.unwrap().iter()) {
            if !["problem", "setup", "class", "verdict"].contains(&h) {
                assert!(
                    cell.is_empty() || cell.parse::<f64>().is_ok(),
                    "{h}: `{cell}`"
                );
            }
        }
    }
}

#[test]
fn cost_prices_throughput_and_names_a_bad_prices_field() {
    let dir = tempfile::tempdir().unwrap();
    let r = repeats_file(
        dir.path(),
        "g",
        "decode_tokens_per_s",
        &[90.0, 100.0, 110.0],
    );
    let prices = dir.path().join("prices.toml");
    std::fs::write(
        &prices,
        "energy_usd_per_kwh = 0.1\n[[device]]\nmatch = \"cpu: test\"\nusd_per_hour = 0.36\n",
    )
    .unwrap();
    let out = chimera(&[
        "cost",
        r.to_str().unwrap(),
        "--prices",
        prices.to_str().unwrap(),
        "--tokens-per-month",
        "1e9",
        "--output",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Median 100 tokens/s at 50 %: 1.296e8 tokens per device-month -> 8 devices.
    assert_eq!(rows[0]["devices"], 8, "{rows}");
    // $0.36/h / (100 x 3600 x 0.5 tokens/h) = $2 per million tokens.
    assert!((rows[0]["usd_per_million_tokens"].as_f64().unwrap() - 2.0).abs() < 1e-9);
    assert!(
        rows[0]["energy_usd_per_month"].is_null(),
        "no energy measured"
    );
    std::fs::write(
        &prices,
        "energy_usd_per_kwh = 0.1\n[[device]]\nmatch = \"x\"\nprice = 1\n",
    )
    .unwrap();
    let out = chimera(&[
        "cost",
        r.to_str().unwrap(),
        "--prices",
        prices.to_str().unwrap(),
        "--tokens-per-month",
        "1e9",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("price"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compare_pareto_joins_two_results_files_by_setup() {
    let dir = tempfile::tempdir().unwrap();
    let g = repeats_file(dir.path(), "g", "decode_tokens_per_s", &[60.0]);
    let e = repeats_file(dir.path(), "e", "kl_mean", &[0.005]);
    let out = chimera(&[
        "compare",
        g.to_str().unwrap(),
        "--with",
        e.to_str().unwrap(),
        "--pareto",
        "decode_tokens_per_s,kl_mean",
        "--output",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let front: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(front[0]["x"], 60.0);
    assert_eq!(front[0]["y"], 0.005);
    let out = chimera(&[
        "compare",
        g.to_str().unwrap(),
        "--pareto",
        "decode_tokens_per_s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("X,Y"));
}

#[test]
fn completions_are_generated_for_the_shells() {
    let out = chimera(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("_chimera") && text.contains("diff"), "{text}");
    let out = chimera(&["completions", "tcsh-ish"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn tables_fit_width_80_and_csv_keeps_every_value_whole() {
    let dir = tempfile::tempdir().unwrap();
    let class = "cpu: AMD EPYC 7B13 64-Core Processor with a rather long name x64";
    let trials = ["q8_0", "q4_0"]
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let t = trial("s", i, f, json!({"gflop_per_s": 123456.125 + i as f64}));
            let params = json!({"shape": "64,11008,4096", "variant": "a-variant-with-a-long-descriptive-name"});
            with(t, json!({"device_class": class, "params": params}))
        })
        .collect();
    let f = write(&dir.path().join("results.json"), &results("s", "s", trials));
    let out = chimera(&["compare", f.to_str().unwrap(), "--width", "80"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let table: Vec<&str> = text
        .lines()
        .filter(|l| l.contains('│') || l.contains('╞') || l.contains('┌') || l.contains('└'))
        .collect();
    assert!(!table.is_empty(), "{text}");
    for line in &table {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line}",
            line.chars().count()
        );
    }
    assert!(text.contains('…'), "long text is cut: {text}");
    assert!(
        text.contains("123456") && text.contains("123457"),
        "numbers are whole: {text}"
    );
    let out = chimera(&["compare", f.to_str().unwrap(), "--output", "csv"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(class) && text.contains("a-variant-with-a-long-descriptive-name"),
        "{text}"
    );
    assert!(!text.contains('…'));
}

#[test]
fn run_prints_an_adaptive_searchs_best_configuration_per_class() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("tpe.yaml");
    std::fs::write(
        &spec,
        "name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: [\"1,64,64\", \"8,64,64\", \"32,64,64\"]\n  threads: [1, 2]\n\
         harness: {warmup_iters: 1, min_iters: 3, min_time_ms: 20}\n\
         search: {strategy: tpe, trials: 3, startup: 2, seed: 4, objective: {maximize: gflop_per_s}, constraints: [\"cov <= 10\"]}\n",
    )
    .unwrap();
    let out = chimera(&[
        "run",
        spec.to_str().unwrap(),
        "--out",
        dir.path().join("out").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("search tpe (maximize gflop_per_s; cov <= 10): best per device class"),
        "{stdout}"
    );
    assert!(
        stdout.contains("GFLOP/s (3 configurations tried)"),
        "{stdout}"
    );
}

/// A kernel sweep of `n` configurations measured once each, every
/// headline metric reported: more output than a pipe holds.
fn big_results(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let trials = (0..n)
        .map(|i| {
            let metrics = json!({
                "gflop_per_s": 100.0 + i as f64 / 7.0, "gb_per_s": 12.5, "roofline_frac": 0.125,
                "latency_ms_p50": 0.5, "latency_ms_p99": 0.75, "cov": 0.01, "iterations": 100.0,
            });
            let t = trial("s", i, "q8_0", metrics);
            with(t, json!({"params": {"threads": i}}))
        })
        .collect();
    write(&dir.join("results.json"), &results("s", "s", trials))
}

#[test]
fn a_pipe_closed_early_ends_the_command_quietly_with_exit_0() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let f = big_results(dir.path(), 3000);
    let f = f.to_str().unwrap();
    for args in [
        vec!["compare", f, "-o", "json"],
        vec!["results", f],
        vec!["results", f, "-o", "markdown"],
        vec!["results", f, "-o", "csv"],
        vec!["results", f, "-o", "json"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chimera"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read a little, as `head -c 10` does, then close the pipe while
        // the command still has far more than a pipe holds to write.
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 10];
        stdout.read_exact(&mut first).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
    // Closed before anything was written.
    let mut child = Command::new(env!("CARGO_BIN_EXE_chimera"))
        .args(["results", f, "-o", "csv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn results_reads_a_results_file_offline_and_its_csv_numbers_parse() {
    let dir = tempfile::tempdir().unwrap();
    let f = big_results(dir.path(), 3);
    let f = f.to_str().unwrap();
    let out = chimera(&["results", f, "-o", "csv"]);
    common::ok(&out);
    let mut rd = csv::Reader::from_reader(out.stdout.as_slice());
    let header = rd.headers().unwrap().clone();
    let numeric = [
        "config_index",
        "repeat",
        "attempt",
        "param.threads",
        "gflop_per_s",
        "gb_per_s",
        "latency_ms_p99",
        "cov",
    ];
    let mut rows = 0;
    for r in rd.records() {
        let r = r.unwrap();
        for name in numeric {
            let i = header.iter().position(|h| h == name).unwrap();
            let v: f64 = r[i]
                .parse()
                .unwrap_or_else(|e| panic!("{name} `{}`: {e}", &r[i]));
            assert!(v.is_finite(), "{name}");
        }
        rows += 1;
    }
    assert_eq!(rows, 3);
    // The value whole, not rounded as the table shows it.
    let whole = (100.0 + 1.0 / 7.0_f64).to_string();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&whole),
        "{whole}"
    );

    let out = chimera(&["results", f, "-o", "json"]);
    common::ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["trials"].as_array().unwrap().len(), 3);
    assert_eq!(v["trials"][1]["metrics"]["gflop_per_s"], 100.0 + 1.0 / 7.0);

    let out = chimera(&["results", f, "-o", "markdown"]);
    common::ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\n| trial | state |"), "{text}");
    assert!(text.contains("| t00002 | succeeded |"), "{text}");

    let out = chimera(&["results", "nowhere/results.json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nowhere/results.json: no such file"),
        "a path is not sent to a controller as a sweep id: {err}"
    );
}

#[test]
fn a_table_keeps_every_number_at_200_columns_and_leaves_columns_out_at_80() {
    let dir = tempfile::tempdir().unwrap();
    let f = big_results(dir.path(), 2);
    let f = f.to_str().unwrap();
    let numbers = ["100.0", "100.1", "12.50", "0.1250", "0.5000", "0.7500"];
    let out = chimera(&["results", f, "--width", "200"]);
    common::ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    for n in numbers {
        assert!(text.contains(&format!(" {n} ")), "{n} kept at 200: {text}");
    }
    assert!(text.lines().all(|l| l.chars().count() <= 200), "{text}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");

    let out = chimera(&["results", f, "--width", "80"]);
    common::ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    assert!(
        text.contains(" 100.1 "),
        "the headline metric stays: {text}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("left out to fit 80 columns"), "{err}");

    // Not a terminal and no --width: the whole table.
    let out = chimera(&["results", f]);
    let whole = String::from_utf8_lossy(&out.stdout);
    for n in numbers {
        assert!(
            whole.contains(&format!(" {n} ")),
            "{n} in a piped table: {whole}"
        );
    }

    let out = chimera(&["results", f, "--width", "5"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a width too small is a usage error"
    );
}
