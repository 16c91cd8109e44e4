//! The `chimera diff` regression gate against the built binary: exit codes
//! on synthetic changes, and an A/A diff of two real runs of one spec.
#![allow(clippy::unwrap_used)]

mod common;

use chimera_domain::params::{ParamValue, Params};
use chimera_domain::results::{ResultsFile, SweepSummary, TrialRecord, TrialState};
use common::chimera;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, MutexGuard};

/// The tests of this file run one at a time: the A/A test measures, and
/// another test's processes on the same 2 cores during one of its two runs
/// (and not the other) would be a difference the test then sees.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// SYNTHETIC results (not measured): sweep `name`, one qmatmul
/// configuration on `cpu: synthetic`, one succeeded repeat per value of
/// `gflop_per_s`, written to `DIR/NAME.json`.
fn synthetic_results(dir: &Path, name: &str, values: &[f64]) -> PathBuf {
    let params: Params = [("op", "qmatmul"), ("format", "q8_0"), ("shape", "1,64,64")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ParamValue::Text(v.into())))
        .collect();
    let trials = values
        .iter()
        .enumerate()
        .map(|(i, v)| TrialRecord {
            state: TrialState::Succeeded,
            attempt: 1,
            metrics: [("gflop_per_s".to_owned(), *v)].into(),
            ..TrialRecord::pending(
                format!("t{i:05}"),
                name.into(),
                "cpu: synthetic".into(),
                params.clone(),
                0,
                i as u32,
            )
        })
        .collect();
    let file = ResultsFile::new(
        SweepSummary {
            id: name.into(),
            name: format!("synthetic {name}"),
            workload: "kernel".into(),
            state: "done".into(),
            created_unix_ms: 0,
            order_seed: None,
        },
        trials,
    );
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
    path
}

fn gate(a: &Path, b: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "diff",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--fail-on",
        "regression>5%",
    ];
    args.extend(extra);
    chimera(&args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_halving_measured_once_is_inconclusive_and_fails_the_gate_with_4() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let a = synthetic_results(dir.path(), "a", &[100.0]);
    let b = synthetic_results(dir.path(), "b", &[50.0]);
    let out = gate(&a, &b, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("too few repeats to decide"),
        "{}",
        stderr(&out)
    );
    let out = gate(&a, &b, &["--allow-inconclusive"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Without a rule there is no gate: the table, exit 0.
    let out = chimera(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("inconclusive"));
}

#[test]
fn a_halving_over_five_repeats_each_is_a_regression_and_exits_3() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let a = synthetic_results(dir.path(), "a", &[100.0, 101.0, 99.0, 100.5, 99.5]);
    let b = synthetic_results(dir.path(), "b", &[50.0, 50.5, 49.5, 50.2, 49.8]);
    let out = gate(&a, &b, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 configuration(s) regressed by more than 5.0%"),
        "{}",
        stderr(&out)
    );
    // --allow-inconclusive does not excuse a regression.
    let out = gate(&a, &b, &["--allow-inconclusive"]);
    assert_eq!(out.status.code(), Some(3));
    // The reverse is an improvement.
    let out = gate(&b, &a, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // JSON carries the numbers.
    let out = chimera(&[
        "diff",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &d["rows"][0];
    assert_eq!(row["verdict"], "worse", "{d}");
    assert!((row["change"].as_f64().unwrap() + 0.5).abs() < 1e-9, "{d}");
    assert!(row["ci_high"].as_f64().unwrap() < -0.4, "{d}");
    assert!(row["p_adjusted"].as_f64().unwrap() < 0.05, "{d}");
}

#[test]
fn the_exit_codes_are_documented_in_the_help() {
    let _serial = serial();
    let out = chimera(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for code in [
        "0  success",
        "1  error",
        "2  usage",
        "3  `diff --fail-on`",
        "4  `diff --fail-on`",
        "5  a sweep had trials",
    ] {
        assert!(help.contains(code), "`{code}` missing from:\n{help}");
    }
    // A usage error is 2 (clap's own).
    let out = chimera(&["diff", "a.json", "b.json", "--allow-inconclusive"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--allow-inconclusive needs --fail-on"
    );
}

/// A/A: the same kernel spec twice, run together by one `chimera run`
/// (their trials take turns on the device) into `DIR/out/{a,b}/`.
fn run_together(dir: &Path, spec: &str) -> (PathBuf, PathBuf) {
    let files: Vec<PathBuf> = ["a", "b"]
        .iter()
        .map(|name| {
            let path = dir.join(format!("{name}.yaml"));
            std::fs::write(&path, format!("name: {name}\n{spec}")).unwrap();
            path
        })
        .collect();
    let out_dir = dir.join("out");
    let out = chimera(&[
        "run",
        files[0].to_str().unwrap(),
        files[1].to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("compare the two: chimera diff"),
        "{}",
        stderr(&out)
    );
    (
        out_dir.join("a/results.json"),
        out_dir.join("b/results.json"),
    )
}

fn read(path: &Path) -> ResultsFile {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn an_a_a_diff_of_two_real_runs_passes_the_gate() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = run_together(
        dir.path(),
        "workload: kernel\nparams:\n  op: qmatmul\n  format: q8_0\n  shape: \"1,1024,1024\"\n  threads: 1\n\
         repeats: 10\nharness: {warmup_iters: 3, min_iters: 10, min_time_ms: 100}\n",
    );
    // The two sweeps ran interleaved: in the order the device took their
    // trials, neither sweep ran three in a row (the scheduler alternates
    // them: a b a b ...).
    let mut order: Vec<(i64, String)> = [read(&a), read(&b)]
        .iter()
        .flat_map(|r| {
            r.trials
                .iter()
                .map(|t| (t.assigned_unix_ms.unwrap(), r.sweep.name.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    order.sort();
    let names: Vec<&str> = order.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names.len(), 20);
    assert!(
        names.windows(3).all(|w| !(w[0] == w[1] && w[1] == w[2])),
        "not interleaved: {names:?}"
    );
    // The same spec on the same host, measured side by side in time:
    // nothing regressed beyond 10 %. Run one after the other instead, this
    // 2-core VM's speed moved by up to -24 % and +36 % between runs in a
    // noisy hour, and a 5 % gate called one such pair a regression; taken
    // in turns, the same spec's two sweeps stayed within 6.2 % in that hour
    // and within 0.2 % in a quiet one (bench/aa.sh; docs/BENCHMARKS.md
    // "A/A"). 10 %, not 5 %: the point estimate of a noisy A/A can still
    // cross 5 %. What must hold is that noise never proves a regression:
    // an undecided A/A (exit 4 without the flag) is the gate doing its job
    // on a noisy machine; on an AVX-512 host one CI run measured -10.1 %,
    // interval -15.3 % .. +3.9 %, p 0.12: inconclusive, not a regression.
    // The tests above show the same gate exiting 3 on a real halving and 4
    // on an undecided one.
    let out = chimera(&[
        "diff",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--fail-on",
        "regression>10%",
        "--allow-inconclusive",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

#[test]
fn several_specs_print_tables_only() {
    let _serial = serial();
    let out = chimera(&["run", "a.yaml", "b.yaml", "--output", "json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("2 specs were given"),
        "{}",
        stderr(&out)
    );
}
