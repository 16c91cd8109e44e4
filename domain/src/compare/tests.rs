//! Tests of the comparisons: tables, best per problem, baselines, environments, trade-offs and Pareto fronts.

use super::*;
use crate::params::{ParamValue, Params};

fn trial(idx: u32, class: &str, v: f64, state: TrialState) -> TrialRecord {
    let mut params = Params::new();
    params.insert("op".into(), ParamValue::Text("qmatmul".into()));
    params.insert("format".into(), ParamValue::Text(format!("f{idx}")));
    TrialRecord {
        id: format!("t{idx}"),
        sweep_id: "s".into(),
        state,
        device_class: class.into(),
        params,
        config_index: idx,
        repeat: 0,
        attempt: 1,
        agent: None,
        device_id: None,
        metrics: [("gflop_per_s".to_owned(), v)].into(),
        fingerprint: None,
        error: None,
        wall_ms: None,
        detail: None,
        depends_on: None,
        rung: None,
        pinned: None,
        assigned_unix_ms: None,
    }
}

#[test]
fn marks_best_per_class_and_takes_medians() {
    let trials = vec![
        trial(0, "a", 10.0, TrialState::Succeeded),
        trial(0, "a", 30.0, TrialState::Succeeded),
        trial(0, "a", 20.0, TrialState::Succeeded),
        trial(1, "a", 25.0, TrialState::Succeeded),
        trial(1, "b", 5.0, TrialState::Succeeded),
        trial(0, "b", 99.0, TrialState::Failed),
    ];
    let c = compare(&trials, "gflop_per_s");
    assert_eq!(c.classes, vec!["a", "b"]);
    let a0 = c.rows[0].cells[0].as_ref().unwrap();
    assert_eq!((a0.value, a0.samples), (20.0, 3));
    // One repeat of the higher median has no interval: it cannot be told
    // apart from the other, so both are tied, neither is best.
    let a1 = c.rows[1].cells[0].as_ref().unwrap();
    assert_eq!(
        (a0.best, a0.tied, a1.best, a1.tied),
        (false, true, false, true)
    );
    assert!(c.rows[0].cells[1].is_none(), "failed trials do not count");
    assert!(
        c.rows[1].cells[1].as_ref().unwrap().best,
        "alone in its problem"
    );
}

fn repeats(idx: u32, values: &[f64]) -> Vec<TrialRecord> {
    values
        .iter()
        .map(|v| trial(idx, "a", *v, TrialState::Succeeded))
        .collect()
}

#[test]
fn best_only_where_its_interval_is_clear_of_the_others() {
    let mut trials = repeats(0, &[10.0, 10.1, 9.9, 10.05, 9.95]);
    trials.extend(repeats(1, &[5.0, 5.1, 4.9, 5.05, 4.95]));
    let c = compare(&trials, "gflop_per_s");
    let cells: Vec<&Cell> = c
        .rows
        .iter()
        .map(|r| r.cells[0].as_ref().unwrap())
        .collect();
    assert!(cells[0].best && !cells[0].tied && !cells[1].best && !cells[1].tied);
    assert_eq!(cells[1].speedup_vs_best, Some(0.5));
    // Overlapping intervals (17 +- a lot against 10.8 +- little): tied.
    let mut trials = repeats(0, &[1.0, 17.3, 40.0, 2.0, 30.0]);
    trials.extend(repeats(1, &[10.8, 10.9, 10.7, 10.85, 10.75]));
    let c = compare(&trials, "gflop_per_s");
    let cells: Vec<&Cell> = c
        .rows
        .iter()
        .map(|r| r.cells[0].as_ref().unwrap())
        .collect();
    assert!(cells.iter().all(|c| c.tied && !c.best), "{cells:?}");
    let warnings = c.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("format=f0"), "{warnings:?}");
}

#[test]
fn speedups_read_the_same_way_whatever_the_direction() {
    assert_eq!(speedup(5.0, 10.0, true), Some(0.5), "half the throughput");
    assert_eq!(speedup(20.0, 10.0, false), Some(0.5), "twice the error");
    assert_eq!(speedup(5.0, 10.0, false), Some(2.0), "half the error");
    assert_eq!(speedup(0.0, 0.0, false), Some(1.0));
    assert_eq!(speedup(1.0, 0.0, false), None);
}

#[test]
fn best_is_chosen_among_configs_of_the_same_problem() {
    let mut trials = Vec::new();
    for (idx, shape, v) in [
        (0, "1,8,8", 1.0),
        (1, "1,8,8", 2.0),
        (2, "64,8,8", 50.0),
        (3, "64,8,8", 40.0),
    ] {
        let mut t = trial(idx, "a", v, TrialState::Succeeded);
        t.params
            .insert("shape".into(), ParamValue::Text(shape.into()));
        trials.push(t);
    }
    let c = compare(&trials, "gflop_per_s");
    let speedups: Vec<(u32, Option<f64>)> = c
        .rows
        .iter()
        .map(|r| (r.config_index, r.cells[0].as_ref().unwrap().speedup_vs_best))
        .collect();
    assert_eq!(
        speedups,
        vec![
            (0, Some(0.5)),
            (1, Some(1.0)),
            (2, Some(1.0)),
            (3, Some(0.8))
        ]
    );
    assert_eq!(c.rows[0].group, "shape=1,8,8");
}

#[test]
fn different_kernel_ops_are_different_problems() {
    let mut a = trial(0, "c", 0.3, TrialState::Succeeded);
    let mut b = trial(1, "c", 0.1, TrialState::Succeeded);
    for (t, op) in [(&mut a, "rope"), (&mut b, "attention")] {
        t.params.insert("op".into(), ParamValue::Text(op.into()));
        t.params.remove("format");
        t.params
            .insert("variant".into(), ParamValue::Text("naive".into()));
        t.metrics = [("roofline_frac".to_owned(), t.metrics["gflop_per_s"])].into();
    }
    let c = compare(&[a, b], "roofline_frac");
    assert!(c.rows.iter().all(|r| r.cells[0].as_ref().unwrap().best));
    assert_ne!(c.rows[0].group, c.rows[1].group);
    assert_eq!(c.rows[0].setup, "variant=naive");
    assert_eq!(
        default_metric("kernel", &[trial(0, "c", 1.0, TrialState::Succeeded)]),
        "gflop_per_s"
    );
}

mod baseline {
    use crate::compare::*;
    use crate::params::{ParamValue, Params};
    use crate::results::{TrialRecord, TrialState};

    fn t(class: &str, v: f64) -> TrialRecord {
        let mut params = Params::new();
        params.insert("op".into(), ParamValue::Text("matmul".into()));
        params.insert("shape".into(), ParamValue::Text("8,8,8".into()));
        TrialRecord {
            id: "t".into(),
            sweep_id: "s".into(),
            state: TrialState::Succeeded,
            device_class: class.into(),
            params,
            config_index: 0,
            repeat: 0,
            attempt: 1,
            agent: None,
            device_id: None,
            metrics: [("gflop_per_s".to_owned(), v)].into(),
            fingerprint: None,
            error: None,
            wall_ms: None,
            detail: None,
            depends_on: None,
            rung: None,
            pinned: None,
            assigned_unix_ms: None,
        }
    }

    #[test]
    fn speedups_against_a_baseline_class_and_a_confidence_interval() {
        let trials = vec![
            t("laptop", 9.0),
            t("laptop", 10.0),
            t("laptop", 11.0),
            t("h100", 100.0),
        ];
        let c = compare(&trials, "gflop_per_s")
            .with_baseline("laptop")
            .unwrap();
        let cells: Vec<&Cell> = c.rows[0].cells.iter().flatten().collect();
        let h100 = cells.iter().find(|c| c.value == 100.0).unwrap();
        assert_eq!(h100.speedup_vs_baseline, Some(10.0));
        assert!(h100.ci95().is_none(), "one repeat: no interval");
        let laptop = cells.iter().find(|c| c.value == 10.0).unwrap();
        let (lo, hi) = laptop.ci95().unwrap();
        // The bootstrap interval of the median of 9, 10, 11 lies within them.
        assert!(
            (9.0..=10.0).contains(&lo) && (10.0..=11.0).contains(&hi) && lo < hi,
            "{lo} {hi}"
        );
        assert!(compare(&trials, "gflop_per_s")
            .with_baseline("tpu")
            .unwrap_err()
            .contains("laptop"));
    }
}

mod env {
    use crate::compare::*;
    use crate::params::{ParamValue, Params};
    use crate::results::Fingerprint;
    use crate::results::{TrialRecord, TrialState};

    #[test]
    fn repeats_from_different_builds_are_flagged() {
        let t = |sha: &str| TrialRecord {
            id: "t".into(),
            sweep_id: "s".into(),
            state: TrialState::Succeeded,
            device_class: "c".into(),
            params: Params::from([("op".to_owned(), ParamValue::Text("matmul".into()))]),
            config_index: 0,
            repeat: 0,
            attempt: 1,
            agent: None,
            device_id: None,
            metrics: [("gflop_per_s".to_owned(), 1.0)].into(),
            fingerprint: Some(Fingerprint {
                agent_version: "0.1.0".into(),
                agent_git_sha: sha.into(),
                candle_version: "0.11.1".into(),
                rustc_version: "1.95".into(),
                cpu_model: "x".into(),
                threads: 2,
                os: "linux".into(),
                extra: Default::default(),
            }),
            error: None,
            wall_ms: None,
            detail: None,
            depends_on: None,
            rung: None,
            pinned: None,
            assigned_unix_ms: None,
        };
        let same = compare(&[t("a"), t("a")], "gflop_per_s");
        assert!(!same.rows[0].cells[0].as_ref().unwrap().mixed_env);
        let mixed = compare(&[t("a"), t("b")], "gflop_per_s");
        assert!(mixed.rows[0].cells[0].as_ref().unwrap().mixed_env);
    }
}

mod pareto {
    use crate::compare::*;
    use crate::params::{ParamValue, Params};
    use crate::results::{TrialRecord, TrialState};

    fn t(format: &str, metric: &str, v: f64) -> TrialRecord {
        let mut params = Params::new();
        params.insert("format".into(), ParamValue::Text(format.into()));
        TrialRecord {
            id: "t".into(),
            sweep_id: "s".into(),
            state: TrialState::Succeeded,
            device_class: "c".into(),
            params,
            config_index: 0,
            repeat: 0,
            attempt: 1,
            agent: None,
            device_id: None,
            metrics: [(metric.to_owned(), v)].into(),
            fingerprint: None,
            error: None,
            wall_ms: None,
            detail: None,
            depends_on: None,
            rung: None,
            pinned: None,
            assigned_unix_ms: None,
        }
    }

    #[test]
    fn the_front_keeps_only_undominated_configurations_across_sweeps() {
        let trials = vec![
            t("q8_0", "decode_tokens_per_s", 60.0),
            t("q8_0", "kl_mean", 0.005),
            t("q4_1", "decode_tokens_per_s", 19.0),
            t("q4_1", "kl_mean", 0.05),
            t("f32", "decode_tokens_per_s", 14.0),
            t("f32", "kl_mean", 0.0),
            t("q4_0", "decode_tokens_per_s", 60.0),
            t("q4_0", "kl_mean", 0.3),
        ];
        let front = pareto(&trials, "decode_tokens_per_s", "kl_mean");
        let names: Vec<&str> = front.iter().map(|p| p.config.as_str()).collect();
        assert_eq!(names, vec!["format=q8_0", "format=f32"]);
        let all = pareto_points(&trials, "decode_tokens_per_s", "kl_mean");
        assert_eq!(all.len(), 4, "dominated points are kept: {all:?}");
        assert_eq!(pareto_front(&all, "decode_tokens_per_s", "kl_mean"), front);
    }

    #[test]
    fn the_default_trade_off_needs_a_generate_and_an_eval_sweep() {
        assert_eq!(
            default_pareto(&["generate", "eval"]),
            Some(("decode_tokens_per_s", "kl_mean"))
        );
        assert_eq!(default_pareto(&["generate"]), None);
        assert_eq!(default_pareto(&["kernel"]), None);
    }
}
