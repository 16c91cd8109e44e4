//! Two sweeps compared: for every configuration and device class both have,
//! the relative change of a metric, its 95 % confidence interval, and a
//! verdict from Welch's t-test on the repeats (better / worse / within noise).

use crate::compare::split;
use crate::metrics;
use crate::results::{TrialRecord, TrialState};
use crate::stats;
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};
use std::collections::{BTreeMap, BTreeSet};

/// Significance level of the verdict.
pub const ALPHA: f64 = 0.05;

/// What the change means for the metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Significantly better (faster, smaller error, ...).
    Better,
    /// Significantly worse: a regression.
    Worse,
    /// The difference is within the run-to-run noise.
    WithinNoise,
    /// Too few repeats on a side (fewer than 2) to test.
    Insufficient,
}

impl Verdict {
    /// The verdict's name.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::WithinNoise => "within noise",
            Verdict::Insufficient => "too few repeats",
        }
    }
}

/// Sample statistics of one side.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Side {
    pub n: usize,
    pub mean: f64,
    pub median: f64,
    /// Sample standard deviation (0 for one value).
    pub stddev: f64,
}

impl Side {
    fn of(v: &[f64]) -> Option<Side> {
        if v.is_empty() {
            return None;
        }
        Some(Side {
            n: v.len(),
            mean: stats::mean(v),
            median: stats::median(&mut v.to_vec()),
            stddev: stats::sample_sd(v),
        })
    }
}

/// One configuration on one class, in both sweeps.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiffRow {
    pub group: String,
    pub setup: String,
    /// Device class (`A-class -> B-class` when two single-class sweeps from
    /// different machines are compared).
    pub class: String,
    pub a: Side,
    pub b: Side,
    /// Relative change of the mean, `b / a - 1`.
    pub change: f64,
    /// 95 % confidence interval of `change` (Welch), when both sides have 2+ repeats.
    pub ci: Option<(f64, f64)>,
    /// Two-sided p-value of Welch's t-test.
    pub p_value: Option<f64>,
    pub verdict: Verdict,
}

/// The comparison of two sweeps on one metric.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diff {
    pub metric: String,
    pub higher_is_better: bool,
    pub rows: Vec<DiffRow>,
    /// Configurations present in only one of the sweeps.
    pub unmatched: usize,
}

/// Welch's t-test of `b` against `a`: (relative CI of the mean change, p-value).
fn welch(a: &Side, b: &Side) -> Option<((f64, f64), f64)> {
    if a.n < 2 || b.n < 2 || a.mean == 0.0 {
        return None;
    }
    let (va, vb) = (a.stddev.powi(2) / a.n as f64, b.stddev.powi(2) / b.n as f64);
    let se = (va + vb).sqrt();
    let d = b.mean - a.mean;
    if se == 0.0 {
        // No spread at all: any difference is exact.
        let p = if d == 0.0 { 1.0 } else { 0.0 };
        return Some(((d / a.mean, d / a.mean), p));
    }
    let df =
        (va + vb).powi(2) / (va.powi(2) / (a.n as f64 - 1.0) + vb.powi(2) / (b.n as f64 - 1.0));
    let t = StudentsT::new(0.0, 1.0, df).ok()?;
    let p = 2.0 * (1.0 - t.cdf((d / se).abs()));
    let q = t.inverse_cdf(1.0 - ALPHA / 2.0);
    let lo = (d - q * se) / a.mean.abs();
    let hi = (d + q * se) / a.mean.abs();
    Some(((lo, hi), p))
}

fn values(trials: &[TrialRecord], metric: &str) -> BTreeMap<(String, String, String), Vec<f64>> {
    let mut out: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    for t in trials.iter().filter(|t| t.state == TrialState::Succeeded) {
        if let Some(v) = t.metrics.get(metric).filter(|v| v.is_finite()) {
            let (group, setup) = split(&t.params);
            out.entry((group, setup, t.device_class.clone()))
                .or_default()
                .push(*v);
        }
    }
    out
}

/// Compares sweep `b` with sweep `a` on `metric`.
pub fn diff(a: &[TrialRecord], b: &[TrialRecord], metric: &str) -> Diff {
    let higher = metrics::higher_is_better(metric);
    let va = values(a, metric);
    let mut vb = values(b, metric);
    let classes = |m: &BTreeMap<(String, String, String), Vec<f64>>| -> BTreeSet<String> {
        m.keys().map(|k| k.2.clone()).collect()
    };
    let (ca, cb) = (classes(&va), classes(&vb));
    // Two single-class sweeps from different machines: compare across them.
    let cross = ca.len() == 1 && cb.len() == 1 && ca != cb;
    if cross {
        let (from, to) = (ca.iter().next(), cb.iter().next());
        if let (Some(from), Some(to)) = (from, to) {
            let label = format!("{from} -> {to}");
            vb = vb
                .into_iter()
                .map(|((g, s, _), v)| ((g, s, from.clone()), v))
                .collect();
            return finish(va, vb, metric, higher, Some(label));
        }
    }
    finish(va, vb, metric, higher, None)
}

fn finish(
    va: BTreeMap<(String, String, String), Vec<f64>>,
    vb: BTreeMap<(String, String, String), Vec<f64>>,
    metric: &str,
    higher: bool,
    class_label: Option<String>,
) -> Diff {
    let mut rows = Vec::new();
    let mut unmatched = 0;
    for (key, a_vals) in &va {
        let Some(b_vals) = vb.get(key) else {
            unmatched += 1;
            continue;
        };
        let (Some(a), Some(b)) = (Side::of(a_vals), Side::of(b_vals)) else {
            continue;
        };
        let change = if a.mean != 0.0 {
            b.mean / a.mean - 1.0
        } else {
            0.0
        };
        let test = welch(&a, &b);
        let verdict = match test {
            None => Verdict::Insufficient,
            Some((_, p)) if p >= ALPHA => Verdict::WithinNoise,
            Some(_) => {
                if (change > 0.0) == higher {
                    Verdict::Better
                } else {
                    Verdict::Worse
                }
            }
        };
        rows.push(DiffRow {
            group: key.0.clone(),
            setup: key.1.clone(),
            class: class_label.clone().unwrap_or_else(|| key.2.clone()),
            change,
            ci: test.map(|t| t.0),
            p_value: test.map(|t| t.1),
            verdict,
            a,
            b,
        });
    }
    unmatched += vb.keys().filter(|k| !va.contains_key(*k)).count();
    Diff {
        metric: metric.to_owned(),
        higher_is_better: higher,
        rows,
        unmatched,
    }
}

/// A `--fail-on` rule: `regression>5%` fails when some configuration is
/// significantly worse by more than 5 %.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FailOn {
    pub threshold: f64,
}

impl std::str::FromStr for FailOn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--fail-on `{s}`: expected `regression>N%` (e.g. `regression>5%`)");
        let rest = s.strip_prefix("regression>").ok_or_else(bad)?;
        let pct: f64 = rest
            .strip_suffix('%')
            .ok_or_else(bad)?
            .trim()
            .parse()
            .map_err(|_| bad())?;
        if !(0.0..=1000.0).contains(&pct) {
            return Err(bad());
        }
        Ok(FailOn {
            threshold: pct / 100.0,
        })
    }
}

impl FailOn {
    /// The rows that break the rule.
    pub fn violations<'a>(&self, d: &'a Diff) -> Vec<&'a DiffRow> {
        d.rows
            .iter()
            .filter(|r| r.verdict == Verdict::Worse && r.change.abs() > self.threshold)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{ParamValue, Params};

    fn t(id: usize, class: &str, format: &str, v: f64) -> TrialRecord {
        let mut params = Params::new();
        params.insert("op".into(), ParamValue::Text("qmatmul".into()));
        params.insert("format".into(), ParamValue::Text(format.into()));
        params.insert("shape".into(), ParamValue::Text("1,64,64".into()));
        TrialRecord {
            id: format!("t{id}"),
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
    fn a_clear_slowdown_is_a_regression_and_noise_is_not() {
        let a = vec![
            t(0, "c", "q8_0", 100.0),
            t(1, "c", "q8_0", 101.0),
            t(2, "c", "q8_0", 99.0),
            t(3, "c", "q4k", 50.0),
            t(4, "c", "q4k", 60.0),
            t(5, "c", "q4k", 40.0),
        ];
        let b = vec![
            t(0, "c", "q8_0", 80.0),
            t(1, "c", "q8_0", 81.0),
            t(2, "c", "q8_0", 79.0),
            t(3, "c", "q4k", 52.0),
            t(4, "c", "q4k", 41.0),
            t(5, "c", "q4k", 58.0),
        ];
        let d = diff(&a, &b, "gflop_per_s");
        assert_eq!(d.rows.len(), 2);
        let q8 = d.rows.iter().find(|r| r.setup.contains("q8_0")).unwrap();
        assert_eq!(q8.verdict, Verdict::Worse);
        assert!((q8.change + 0.2).abs() < 1e-9);
        let (lo, hi) = q8.ci.unwrap();
        assert!(lo < -0.2 && hi > -0.2 && hi < 0.0, "{lo} {hi}");
        let q4 = d.rows.iter().find(|r| r.setup.contains("q4k")).unwrap();
        assert_eq!(q4.verdict, Verdict::WithinNoise);
        let rule: FailOn = "regression>5%".parse().unwrap();
        assert_eq!(rule.violations(&d).len(), 1);
        let lenient: FailOn = "regression>25%".parse().unwrap();
        assert!(lenient.violations(&d).is_empty());
        assert!("slower>5"
            .parse::<FailOn>()
            .unwrap_err()
            .contains("regression>N%"));
    }

    #[test]
    fn single_repeats_are_insufficient_and_machines_compare_across_classes() {
        let a = vec![t(0, "laptop", "q8_0", 10.0)];
        let b = vec![t(0, "h100", "q8_0", 100.0)];
        let d = diff(&a, &b, "gflop_per_s");
        assert_eq!(d.rows.len(), 1);
        assert_eq!(d.rows[0].class, "laptop -> h100");
        assert_eq!(d.rows[0].verdict, Verdict::Insufficient);
        assert!((d.rows[0].change - 9.0).abs() < 1e-9);
    }
}
