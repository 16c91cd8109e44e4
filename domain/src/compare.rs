//! Comparison of results across configurations and device classes.

use crate::metrics;
use crate::params::label;
use crate::results::{TrialRecord, TrialState};
use serde::Serialize;
use std::collections::BTreeMap;

/// One cell: the median of a metric over the successful repeats of a
/// configuration on a class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cell {
    pub value: f64,
    /// Successful trials the median is over.
    pub samples: usize,
    /// The best configuration of its group on this class for the metric.
    pub best: bool,
    /// value / best value of the group on this class (1.0 for the best); none
    /// when the best is 0 (an exact result: the ratio means nothing).
    pub ratio_to_best: Option<f64>,
    /// Some repeat was measured while the device's clocks were throttled
    /// (`throttled_frac` > 0 in its telemetry).
    pub throttled: bool,
    /// 95 % confidence interval of the mean over the repeats (Student's t),
    /// with two or more repeats.
    pub ci95: Option<(f64, f64)>,
    /// value / the same configuration's value on the baseline class, when a
    /// baseline is given (`chimera compare --baseline CLASS`).
    pub vs_baseline: Option<f64>,
    /// The repeats were measured in different environments (agent build,
    /// candle or rustc version, CPU model): the median mixes them.
    pub mixed_env: bool,
}

/// A configuration's row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub config_index: u32,
    /// The problem the configuration solves (`shape=1,4096,4096`): the best is
    /// chosen among rows of the same group, so setups are compared on equal work.
    pub group: String,
    /// The setup being compared within the group (`op=qmatmul format=q4_0`).
    pub setup: String,
    /// `op=qmatmul format=q4_0 shape=...`
    pub config: String,
    /// One cell per class, in [`Comparison::classes`] order.
    pub cells: Vec<Option<Cell>>,
}

/// Configurations x device classes for one metric, best per class marked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub metric: String,
    pub unit: String,
    pub higher_is_better: bool,
    pub classes: Vec<String>,
    pub rows: Vec<Row>,
}

/// Median of a non-empty sample (sorts it).
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// 95 % confidence interval of the mean of `v` (Student's t); none below 2 values.
pub fn ci95(v: &[f64]) -> Option<(f64, f64)> {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let n = v.len();
    if n < 2 {
        return None;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64).ok()?;
    let half = t.inverse_cdf(0.975) * sd / (n as f64).sqrt();
    Some((mean - half, mean + half))
}

impl Comparison {
    /// Sets every cell's ratio to the same configuration on `class`; an error
    /// names the classes there are when `class` is not one of them.
    pub fn with_baseline(mut self, class: &str) -> Result<Self, String> {
        let Some(b) = self.classes.iter().position(|c| c == class) else {
            return Err(format!(
                "--baseline `{class}` is not a device class of these results; they have: {}",
                self.classes.join(", ")
            ));
        };
        for row in &mut self.rows {
            let base = row.cells.get(b).and_then(|c| c.as_ref()).map(|c| c.value);
            for cell in row.cells.iter_mut().flatten() {
                cell.vs_baseline = base.filter(|b| *b != 0.0).map(|b| cell.value / b);
            }
        }
        Ok(self)
    }
}

/// Builds the comparison of `metric` over the successful trials.
pub fn compare(trials: &[TrialRecord], metric: &str) -> Comparison {
    let higher = metrics::higher_is_better(metric);
    let mut classes: Vec<String> = Vec::new();
    let mut configs: BTreeMap<u32, (String, String, String)> = BTreeMap::new();
    let mut values: BTreeMap<(u32, String), Vec<f64>> = BTreeMap::new();
    let mut throttled: std::collections::BTreeSet<(u32, String)> = Default::default();
    let mut envs: BTreeMap<(u32, String), std::collections::BTreeSet<String>> = BTreeMap::new();
    for t in trials {
        configs.entry(t.config_index).or_insert_with(|| {
            let (problem, setup) = split(&t.params);
            (problem, setup, label(&t.params))
        });
        if t.state != TrialState::Succeeded {
            continue;
        }
        let Some(v) = t.metrics.get(metric).copied().filter(|v| v.is_finite()) else {
            continue;
        };
        if !classes.contains(&t.device_class) {
            classes.push(t.device_class.clone());
        }
        if t.metrics.get("throttled_frac").is_some_and(|f| *f > 0.0) {
            throttled.insert((t.config_index, t.device_class.clone()));
        }
        if let Some(f) = &t.fingerprint {
            envs.entry((t.config_index, t.device_class.clone()))
                .or_default()
                .insert(format!(
                    "{} {} {} {}",
                    f.agent_git_sha, f.candle_version, f.rustc_version, f.cpu_model
                ));
        }
        values
            .entry((t.config_index, t.device_class.clone()))
            .or_default()
            .push(v);
    }
    classes.sort();
    let ci: BTreeMap<(u32, String), (f64, f64)> = values
        .iter()
        .filter_map(|(k, v)| ci95(v).map(|c| (k.clone(), c)))
        .collect();
    let medians: BTreeMap<(u32, String), (f64, usize)> = values
        .into_iter()
        .map(|(k, mut v)| {
            let n = v.len();
            (k, (median(&mut v), n))
        })
        .collect();
    // Best per (group, class).
    let mut best: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for ((idx, class), (v, _)) in &medians {
        let Some((group, ..)) = configs.get(idx) else {
            continue;
        };
        best.entry((group.as_str(), class.as_str()))
            .and_modify(|b| *b = if higher { b.max(*v) } else { b.min(*v) })
            .or_insert(*v);
    }
    let mut order: Vec<(&u32, &(String, String, String))> = configs.iter().collect();
    order.sort_by(|a, b| (&a.1 .0, a.0).cmp(&(&b.1 .0, b.0)));
    let rows = order
        .into_iter()
        .map(|(&idx, (group, setup, config))| Row {
            config_index: idx,
            group: group.clone(),
            setup: setup.clone(),
            config: config.clone(),
            cells: classes
                .iter()
                .map(|c| {
                    medians.get(&(idx, c.clone())).map(|&(value, samples)| {
                        let b = best
                            .get(&(group.as_str(), c.as_str()))
                            .copied()
                            .unwrap_or(value);
                        Cell {
                            value,
                            samples,
                            best: value == b,
                            ratio_to_best: if b != 0.0 {
                                Some(value / b)
                            } else if value == 0.0 {
                                Some(1.0)
                            } else {
                                None
                            },
                            throttled: throttled.contains(&(idx, c.clone())),
                            ci95: ci.get(&(idx, c.clone())).copied(),
                            vs_baseline: None,
                            mixed_env: envs.get(&(idx, c.clone())).is_some_and(|e| e.len() > 1),
                        }
                    })
                })
                .collect(),
        })
        .collect();
    Comparison {
        metric: metric.to_owned(),
        unit: metrics::unit(metric).to_owned(),
        higher_is_better: higher,
        classes,
        rows,
    }
}

/// The setup part of a configuration's parameters (`op=qmatmul format=q4_0`),
/// by which [`pareto`] matches configurations across sweeps.
pub fn setup(params: &crate::params::Params) -> String {
    split(params).1
}

/// The parameters that say what is computed, as opposed to how: a comparison
/// only ranks setups that did the same work.
pub(crate) fn split(params: &crate::params::Params) -> (String, String) {
    // `matmul` and `qmatmul` compute the same product, so the op is part of the
    // setup there; softmax, rope, ... compute different things: the op is part
    // of the problem.
    let op_is_problem = params
        .get("op")
        .is_some_and(|op| !matches!(op.to_string().as_str(), "matmul" | "qmatmul"));
    let (setup, problem): (crate::params::Params, crate::params::Params) = params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, _)| {
            crate::catalog::SETUP_PARAMS.contains(&k.as_str()) && !(op_is_problem && k == "op")
        });
    (label(&problem), label(&setup))
}

#[cfg(test)]
mod tests {
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
        assert_eq!((a0.value, a0.samples, a0.best), (20.0, 3, false));
        assert!(c.rows[1].cells[0].as_ref().unwrap().best);
        assert!(c.rows[0].cells[1].is_none(), "failed trials do not count");
        assert!(c.rows[1].cells[1].as_ref().unwrap().best);
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
        let best: Vec<(u32, bool)> = c
            .rows
            .iter()
            .map(|r| (r.config_index, r.cells[0].as_ref().unwrap().best))
            .collect();
        assert_eq!(best, vec![(0, false), (1, true), (2, true), (3, false)]);
        assert_eq!(c.rows[0].group, "shape=1,8,8");
        assert_eq!(
            c.rows[0].cells[0].as_ref().unwrap().ratio_to_best,
            Some(0.5)
        );
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
}

/// The metric a comparison shows when none is asked for: the workload's
/// headline metric, or, for kernels, `roofline_frac` when some op in the
/// results reports no GFLOP/s (softmax, rmsnorm, rope move bytes, not flops).
pub fn default_metric(workload: &str, trials: &[TrialRecord]) -> &'static str {
    let w = workload
        .parse::<crate::catalog::Workload>()
        .unwrap_or(crate::catalog::Workload::Kernel);
    let primary = w.primary_metric();
    let done = trials.iter().filter(|t| t.state == TrialState::Succeeded);
    if w == crate::catalog::Workload::Kernel
        && done.clone().any(|t| !t.metrics.contains_key(primary))
    {
        return "roofline_frac";
    }
    primary
}

/// One weight format in a speed / accuracy trade-off.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TradeoffRow {
    pub device_class: String,
    pub format: String,
    /// Median over repeats, tokens/s.
    pub decode_tokens_per_s: Option<f64>,
    pub prefill_tokens_per_s: Option<f64>,
    /// Bytes of weights the forward pass reads per token.
    pub weight_bytes: Option<f64>,
    /// Mean KL divergence from the reference, nats per token.
    pub kl_mean: Option<f64>,
    pub top1_agree: Option<f64>,
    pub perplexity: Option<f64>,
    /// No other format on the class is both at least as fast and at least as
    /// close to the reference (and better in one).
    pub pareto: bool,
    /// Fastest decode on the class.
    pub fastest: bool,
    /// Lowest KL on the class.
    pub closest: bool,
}

/// Joins `generate` and `eval` results per device class and weight format:
/// decode speed against divergence from the reference, with the Pareto front
/// and the best of each marked.
pub fn tradeoff(generate: &[TrialRecord], eval: &[TrialRecord]) -> Vec<TradeoffRow> {
    type Key = (String, String);
    let mut values: BTreeMap<(Key, &'static str), Vec<f64>> = BTreeMap::new();
    let ok = |t: &&TrialRecord| t.state == TrialState::Succeeded;
    let fmt_of = |t: &TrialRecord| {
        t.params
            .get("format")
            .map(|v| v.to_string())
            .unwrap_or_else(|| "as stored".to_owned())
    };
    for (trials, names) in [
        (
            generate,
            &[
                "decode_tokens_per_s",
                "prefill_tokens_per_s",
                "weight_bytes",
            ][..],
        ),
        (eval, &["kl_mean", "top1_agree", "perplexity"][..]),
    ] {
        for t in trials
            .iter()
            .filter(ok)
            .filter(|t| !t.params.contains_key(crate::models::ROLE))
        {
            for name in names {
                if let Some(v) = t.metrics.get(*name).filter(|v| v.is_finite()) {
                    values
                        .entry(((t.device_class.clone(), fmt_of(t)), name))
                        .or_default()
                        .push(*v);
                }
            }
        }
    }
    let keys: Vec<Key> = {
        let mut k: Vec<Key> = values.keys().map(|(k, _)| k.clone()).collect();
        k.dedup();
        k
    };
    let mut get = |k: &Key, name: &'static str| {
        values
            .get_mut(&(k.clone(), name))
            .filter(|v| !v.is_empty())
            .map(|v| median(v))
    };
    let mut rows: Vec<TradeoffRow> = keys
        .iter()
        .map(|k| TradeoffRow {
            device_class: k.0.clone(),
            format: k.1.clone(),
            decode_tokens_per_s: get(k, "decode_tokens_per_s"),
            prefill_tokens_per_s: get(k, "prefill_tokens_per_s"),
            weight_bytes: get(k, "weight_bytes"),
            kl_mean: get(k, "kl_mean"),
            top1_agree: get(k, "top1_agree"),
            perplexity: get(k, "perplexity"),
            pareto: false,
            fastest: false,
            closest: false,
        })
        .collect();
    let n = rows.len();
    for i in 0..n {
        let class = rows[i].device_class.clone();
        let same: Vec<usize> = (0..n).filter(|j| rows[*j].device_class == class).collect();
        let (Some(s), Some(kl)) = (rows[i].decode_tokens_per_s, rows[i].kl_mean) else {
            continue;
        };
        let dominated = same.iter().any(|&j| {
            let (Some(s2), Some(kl2)) = (rows[j].decode_tokens_per_s, rows[j].kl_mean) else {
                return false;
            };
            j != i && s2 >= s && kl2 <= kl && (s2 > s || kl2 < kl)
        });
        let fastest = same
            .iter()
            .all(|&j| rows[j].decode_tokens_per_s.is_none_or(|s2| s2 <= s));
        let closest = same
            .iter()
            .all(|&j| rows[j].kl_mean.is_none_or(|k2| k2 >= kl));
        rows[i].pareto = !dominated;
        rows[i].fastest = fastest;
        rows[i].closest = closest;
    }
    rows.sort_by(|a, b| {
        a.device_class.cmp(&b.device_class).then(
            b.decode_tokens_per_s
                .unwrap_or(0.0)
                .total_cmp(&a.decode_tokens_per_s.unwrap_or(0.0)),
        )
    });
    rows
}

/// A configuration on the Pareto front of two metrics on one class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParetoPoint {
    pub class: String,
    pub config: String,
    /// Medians over repeats of the two metrics.
    pub x: f64,
    pub y: f64,
}

/// The Pareto-optimal configurations per class for metrics `x` and `y` (each
/// in its own direction: higher-is-better or lower-is-better): those no other
/// configuration beats on both. Configurations are matched across metrics
/// and sweeps by their setup (format, threads, ...), so `x` and `y` may come
/// from different sweeps of the same setups (a generate and an eval sweep).
pub fn pareto(trials: &[TrialRecord], x: &str, y: &str) -> Vec<ParetoPoint> {
    pareto_front(&pareto_points(trials, x, y), x, y)
}

/// Every configuration per class that reports both `x` and `y` (medians over
/// repeats, matched by setup as [`pareto`] does), dominated or not, in
/// (class, configuration) order.
pub fn pareto_points(trials: &[TrialRecord], x: &str, y: &str) -> Vec<ParetoPoint> {
    let mut vals: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    for t in trials.iter().filter(|t| t.state == TrialState::Succeeded) {
        if t.params.contains_key(crate::models::ROLE) {
            continue;
        }
        // Matched by setup (format, threads, ...): a generate and an eval
        // sweep of the same formats describe the same configurations.
        let (_, config) = split(&t.params);
        for m in [x, y] {
            if let Some(v) = t.metrics.get(m).filter(|v| v.is_finite()) {
                vals.entry((t.device_class.clone(), config.clone(), m.to_owned()))
                    .or_default()
                    .push(*v);
            }
        }
    }
    let mut points: Vec<ParetoPoint> = Vec::new();
    let keys: std::collections::BTreeSet<(String, String)> = vals
        .keys()
        .map(|(c, k, _)| (c.clone(), k.clone()))
        .collect();
    for (class, config) in keys {
        let mut get = |m: &str| {
            vals.get_mut(&(class.clone(), config.clone(), m.to_owned()))
                .map(|v| median(v))
        };
        if let (Some(xv), Some(yv)) = (get(x), get(y)) {
            points.push(ParetoPoint {
                class,
                config,
                x: xv,
                y: yv,
            });
        }
    }
    points
}

/// The points of `points` that no other configuration of their class beats
/// on both metrics, per class, by descending `x`.
pub fn pareto_front(points: &[ParetoPoint], x: &str, y: &str) -> Vec<ParetoPoint> {
    let (hx, hy) = (metrics::higher_is_better(x), metrics::higher_is_better(y));
    let better = |a: f64, b: f64, higher: bool| if higher { a >= b } else { a <= b };
    let mut front: Vec<ParetoPoint> = points
        .iter()
        .filter(|p| {
            !points.iter().any(|q| {
                q.class == p.class
                    && q.config != p.config
                    && better(q.x, p.x, hx)
                    && better(q.y, p.y, hy)
                    && (q.x != p.x || q.y != p.y)
            })
        })
        .cloned()
        .collect();
    front.sort_by(|a, b| a.class.cmp(&b.class).then(b.x.total_cmp(&a.x)));
    front
}

/// The trade-off a report plots when none is asked for, from the workloads
/// of the results joined: a `generate` sweep with an `eval` sweep of the same
/// formats is decode speed against divergence from the reference (what
/// [`tradeoff`] tabulates); a `quantize` sweep is size against error. Kernel
/// sweeps have none: their configurations solve different problems, and a
/// front across problems would compare unequal work.
pub fn default_pareto(workloads: &[&str]) -> Option<(&'static str, &'static str)> {
    let has = |w: &str| workloads.contains(&w);
    if has("generate") && has("eval") {
        Some(("decode_tokens_per_s", "kl_mean"))
    } else if has("quantize") {
        Some(("bits_per_weight", "rmse"))
    } else {
        None
    }
}

#[cfg(test)]
mod pareto_tests {
    use super::*;
    use crate::params::{ParamValue, Params};

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

#[cfg(test)]
mod baseline_tests {
    use super::*;
    use crate::params::{ParamValue, Params};

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
        assert_eq!(h100.vs_baseline, Some(10.0));
        assert!(h100.ci95.is_none(), "one repeat: no interval");
        let laptop = cells.iter().find(|c| c.value == 10.0).unwrap();
        let (lo, hi) = laptop.ci95.unwrap();
        // mean 10, sd 1, n 3: t(0.975, 2) = 4.303 -> +-2.484
        assert!(
            (lo - 7.516).abs() < 1e-3 && (hi - 12.484).abs() < 1e-3,
            "{lo} {hi}"
        );
        assert!(compare(&trials, "gflop_per_s")
            .with_baseline("tpu")
            .unwrap_err()
            .contains("laptop"));
    }
}

#[cfg(test)]
mod env_tests {
    use super::*;
    use crate::params::{ParamValue, Params};
    use crate::results::Fingerprint;

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
        };
        let same = compare(&[t("a"), t("a")], "gflop_per_s");
        assert!(!same.rows[0].cells[0].as_ref().unwrap().mixed_env);
        let mixed = compare(&[t("a"), t("b")], "gflop_per_s");
        assert!(mixed.rows[0].cells[0].as_ref().unwrap().mixed_env);
    }
}
