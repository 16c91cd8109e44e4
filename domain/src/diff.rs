//! Two sweeps compared: for every configuration and device class both have,
//! the relative change of the median of a metric with its bootstrap
//! interval, a rank test corrected for testing many configurations, the
//! verdict, and the `--fail-on` gate that turns verdicts into an exit code.

use crate::compare::split;
use crate::metrics;
use crate::results::{Fingerprint, TrialRecord, TrialState};
use crate::stats;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Significance level of the verdicts, after Holm's correction across the
/// configurations compared.
pub const ALPHA: f64 = 0.05;

/// The smallest change a verdict names (as criterion's noise threshold): a
/// significant change whose interval reaches inside ±1 % is within noise.
/// With medians of few repeats the bootstrap interval can end exactly at
/// 0 % for a change of 0 %, and "worse by 0.0 %" helps nobody.
pub const NOISE: f64 = 0.01;

/// What the change means for the metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Significantly better (faster, smaller error, ...).
    Better,
    /// Significantly worse.
    Worse,
    /// No change the repeats can tell from run-to-run noise.
    WithinNoise,
    /// Too few repeats to decide: under 2 on a side, or so few that even
    /// completely separated samples would not be significant after the
    /// correction.
    Inconclusive,
}

impl Verdict {
    /// The verdict's name.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::WithinNoise => "within noise",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// Sample statistics of one side.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Side {
    pub n: usize,
    pub median: f64,
    /// 95 % bootstrap interval of the median, with 2+ repeats.
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub mean: f64,
    /// Sample standard deviation (0 for one value).
    pub stddev: f64,
}

impl Side {
    fn of(v: &[f64]) -> Option<Side> {
        let s = stats::summarize(v)?;
        Some(Side {
            n: s.n,
            median: s.median,
            ci_low: s.ci.map(|c| c.0),
            ci_high: s.ci.map(|c| c.1),
            mean: stats::mean(v),
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
    /// Relative change of the median, `median(B) / median(A) - 1`; none when
    /// A's median is 0.
    pub change: Option<f64>,
    /// 95 % bootstrap interval of `change`, with 2+ repeats on each side.
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Two-sided p-value of the Mann–Whitney rank test.
    pub p: Option<f64>,
    /// `p` after Holm's correction across the rows of the diff.
    pub p_adjusted: Option<f64>,
    pub verdict: Verdict,
}

impl DiffRow {
    /// The interval of the change.
    pub fn ci(&self) -> Option<(f64, f64)> {
        self.ci_low.zip(self.ci_high)
    }
}

/// The comparison of two sweeps on one metric.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diff {
    pub metric: String,
    pub higher_is_better: bool,
    pub rows: Vec<DiffRow>,
    /// Configurations present in only one of the sweeps.
    pub unmatched: usize,
    /// Where the two sweeps' environments differ ([`environment_changes`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<EnvChange>,
}

impl Diff {
    /// What the operator should know before trusting a verdict: the
    /// environments the two sweeps ran in differ.
    pub fn warnings(&self) -> Vec<String> {
        if self.environment.is_empty() {
            return Vec::new();
        }
        let fields: Vec<String> = self
            .environment
            .iter()
            .map(|c| {
                format!(
                    "{}: {} in A, {} in B",
                    c.field,
                    c.a.join(" / "),
                    c.b.join(" / ")
                )
            })
            .collect();
        vec![format!(
            "warning: A and B ran in different environments ({}): a change may come from \
             that, not from what you changed; compare runs from one machine and toolchain",
            fields.join("; ")
        )]
    }
}

/// A field of the environment whose values differ between two sweeps.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EnvChange {
    /// The fingerprint field (`cpu_model`, `cpu_simd`, ...).
    pub field: String,
    /// Its values in A, sorted.
    pub a: Vec<String>,
    /// Its values in B, sorted.
    pub b: Vec<String>,
}

/// The fingerprint fields that can move a result without any change to
/// what is measured. The agent's version and git sha are left out: an A/B
/// of two builds differs there by design. `cpu_simd` is the instruction set
/// candle's quantized CPU kernels dispatch to at run time (with VNNI its
/// q8_0 matmul quantizes activations differently, which moves q8_0's KL),
/// so two hosts of one CPU model name are told apart.
pub const ENV_FIELDS: [&str; 9] = [
    "cpu_model",
    "cpu_simd",
    "threads",
    "candle_version",
    "rustc_version",
    "os",
    "gpu_model",
    "gpu_driver_version",
    "cuda_build",
];

fn env_value(f: &Fingerprint, field: &str) -> Option<String> {
    match field {
        "cpu_model" => Some(f.cpu_model.clone()),
        "threads" => Some(f.threads.to_string()),
        "candle_version" => Some(f.candle_version.clone()),
        "rustc_version" => Some(f.rustc_version.clone()),
        "os" => Some(f.os.clone()),
        other => f.extra.get(other).cloned(),
    }
    .filter(|v| !v.is_empty())
}

/// The [`ENV_FIELDS`] whose values differ between the succeeded trials of
/// `a` and of `b`. A field one side does not record (an older agent, no
/// GPU) is not compared.
pub fn environment_changes(a: &[TrialRecord], b: &[TrialRecord]) -> Vec<EnvChange> {
    let values = |trials: &[TrialRecord], field: &str| -> BTreeSet<String> {
        trials
            .iter()
            .filter(|t| t.state == TrialState::Succeeded)
            .filter_map(|t| t.fingerprint.as_ref())
            .filter_map(|f| env_value(f, field))
            .collect()
    };
    ENV_FIELDS
        .iter()
        .filter_map(|field| {
            let (va, vb) = (values(a, field), values(b, field));
            (!va.is_empty() && !vb.is_empty() && va != vb).then(|| EnvChange {
                field: (*field).to_owned(),
                a: va.into_iter().collect(),
                b: vb.into_iter().collect(),
            })
        })
        .collect()
}

fn values(trials: &[TrialRecord], metric: &str) -> Values {
    let mut out: Values = BTreeMap::new();
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
    let classes = |m: &Values| -> BTreeSet<String> { m.keys().map(|k| k.2.clone()).collect() };
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
            let mut d = finish(va, vb, metric, higher, Some(label));
            d.environment = environment_changes(a, b);
            return d;
        }
    }
    let mut d = finish(va, vb, metric, higher, None);
    d.environment = environment_changes(a, b);
    d
}

type Values = BTreeMap<(String, String, String), Vec<f64>>;

fn finish(va: Values, vb: Values, metric: &str, higher: bool, class_label: Option<String>) -> Diff {
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
        let ci = stats::median_change_ci(a_vals, b_vals);
        rows.push(DiffRow {
            group: key.0.clone(),
            setup: key.1.clone(),
            class: class_label.clone().unwrap_or_else(|| key.2.clone()),
            change: stats::median_change(a_vals, b_vals),
            ci_low: ci.map(|c| c.0),
            ci_high: ci.map(|c| c.1),
            p: (a.n >= 2 && b.n >= 2)
                .then(|| stats::mann_whitney_p(a_vals, b_vals))
                .flatten(),
            p_adjusted: None,
            verdict: Verdict::Inconclusive,
            a,
            b,
        });
    }
    unmatched += vb.keys().filter(|k| !va.contains_key(*k)).count();
    judge_rows(&mut rows, higher);
    Diff {
        metric: metric.to_owned(),
        higher_is_better: higher,
        rows,
        unmatched,
        environment: Vec::new(),
    }
}

/// Sets each row's Holm-adjusted p-value and verdict. A row is decided
/// only if its repeats could give a significant result at all: with the
/// smallest p-value its sample sizes allow, Holm's procedure (the other
/// rows as measured) would have to reject it. A significant row is better
/// or worse only where the interval of the change also lies wholly beyond
/// ±[`NOISE`].
fn judge_rows(rows: &mut [DiffRow], higher: bool) {
    // The family Holm corrects over: the rows that were tested (2+ repeats
    // on each side); an untested row adds no test.
    let tested: Vec<usize> = (0..rows.len()).filter(|i| rows[*i].p.is_some()).collect();
    let p: Vec<f64> = tested.iter().map(|i| rows[*i].p.unwrap_or(1.0)).collect();
    let adjusted = stats::holm(&p);
    for (k, &i) in tested.iter().enumerate() {
        let row = &mut rows[i];
        row.p_adjusted = Some(adjusted[k]);
        let mut best_case = p.clone();
        best_case[k] = stats::mann_whitney_min_p(row.a.n, row.b.n);
        let decidable =
            row.change.is_some() && row.ci().is_some() && stats::holm(&best_case)[k] < ALPHA;
        row.verdict = match row.ci() {
            _ if !decidable => Verdict::Inconclusive,
            Some((lo, hi)) if adjusted[k] < ALPHA && (lo > NOISE || hi < -NOISE) => {
                if (lo > NOISE) == higher {
                    Verdict::Better
                } else {
                    Verdict::Worse
                }
            }
            _ => Verdict::WithinNoise,
        };
    }
}

/// A `--fail-on` rule: `regression>5%` fails when some configuration is
/// worse by more than 5 % for certain: significantly worse, with the whole
/// interval of the change beyond 5 %.
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

/// What the gate found: the rows that regressed beyond the threshold, and
/// those it cannot decide.
#[derive(Clone, Debug, PartialEq)]
pub struct Gate<'a> {
    pub threshold: f64,
    /// Significantly worse, the whole interval of the change beyond the threshold.
    pub regressions: Vec<&'a DiffRow>,
    /// Too few repeats to decide, or a change estimated beyond the
    /// threshold that the repeats do not establish.
    pub inconclusive: Vec<&'a DiffRow>,
}

/// How a gate ends, each with its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No regression, nothing undecided (or undecided rows allowed): exit 0.
    Pass,
    /// A regression beyond the threshold: exit 3.
    Regression,
    /// No regression found, but some configuration could not be decided: exit 4.
    Inconclusive,
}

impl Outcome {
    /// The process's exit code for this outcome (see `chimera --help`).
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Pass => 0,
            Outcome::Regression => 3,
            Outcome::Inconclusive => 4,
        }
    }
}

impl FailOn {
    /// Applies the rule to every row of `d`.
    pub fn gate<'a>(&self, d: &'a Diff) -> Gate<'a> {
        // Positive = worse, whatever the metric's direction.
        let worse = |x: f64| if d.higher_is_better { -x } else { x };
        let mut gate = Gate {
            threshold: self.threshold,
            regressions: Vec::new(),
            inconclusive: Vec::new(),
        };
        for r in &d.rows {
            let sure = r
                .ci()
                .is_some_and(|(lo, hi)| worse(lo).min(worse(hi)) > self.threshold);
            if r.verdict == Verdict::Worse && sure {
                gate.regressions.push(r);
            } else if r.verdict == Verdict::Inconclusive
                || r.change.is_some_and(|c| worse(c) > self.threshold)
            {
                gate.inconclusive.push(r);
            }
        }
        gate
    }
}

impl Gate<'_> {
    /// The gate's outcome; undecided rows pass when `allow_inconclusive`.
    pub fn outcome(&self, allow_inconclusive: bool) -> Outcome {
        if !self.regressions.is_empty() {
            Outcome::Regression
        } else if !self.inconclusive.is_empty() && !allow_inconclusive {
            Outcome::Inconclusive
        } else {
            Outcome::Pass
        }
    }

    /// What the gate says, a line per finding and one for the outcome.
    pub fn messages(&self, allow_inconclusive: bool) -> Vec<String> {
        let t = self.threshold * 100.0;
        let pct = |v: f64| format!("{:+.1}%", v * 100.0);
        let row = |r: &DiffRow| {
            let change = r.change.map(pct).unwrap_or_else(|| "-".into());
            let ci = r
                .ci()
                .map(|(lo, hi)| format!(", 95% interval {} .. {}", pct(lo), pct(hi)))
                .unwrap_or_default();
            let who = [r.group.as_str(), r.setup.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            format!(
                "{who} on {}: change {change}{ci}, n = {} vs {}",
                r.class, r.a.n, r.b.n
            )
        };
        let mut out = Vec::new();
        for r in &self.regressions {
            out.push(format!("regression: {}", row(r)));
        }
        for r in &self.inconclusive {
            let why = if r.verdict == Verdict::Inconclusive {
                "too few repeats to decide"
            } else {
                "the repeats cannot tell whether it is beyond the threshold"
            };
            out.push(format!("inconclusive ({why}): {}", row(r)));
        }
        out.push(match self.outcome(allow_inconclusive) {
            Outcome::Regression => format!(
                "{} configuration(s) regressed by more than {t:.1}% \
                 (significant after Holm's correction, the whole interval beyond {t:.1}%)",
                self.regressions.len()
            ),
            Outcome::Inconclusive => format!(
                "{} configuration(s) could not be decided against {t:.1}%: \
                 measure more repeats, or pass --allow-inconclusive",
                self.inconclusive.len()
            ),
            Outcome::Pass if self.inconclusive.is_empty() => {
                format!("no configuration regressed by more than {t:.1}%")
            }
            Outcome::Pass => format!(
                "no configuration regressed by more than {t:.1}%; \
                 {} undecided, allowed by --allow-inconclusive",
                self.inconclusive.len()
            ),
        });
        out
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

    fn side(format: &str, values: &[f64]) -> Vec<TrialRecord> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| t(i, "c", format, *v))
            .collect()
    }

    fn rule(s: &str) -> FailOn {
        s.parse().unwrap()
    }

    #[test]
    fn a_clear_slowdown_with_five_repeats_is_a_regression_and_noise_is_not() {
        let mut a = side("q8_0", &[100.0, 101.0, 99.0, 100.5, 99.5]);
        a.extend(side("q4k", &[50.0, 60.0, 40.0, 55.0, 45.0]));
        let mut b = side("q8_0", &[80.0, 81.0, 79.0, 80.5, 79.5]);
        b.extend(side("q4k", &[52.0, 41.0, 58.0, 47.0, 50.0]));
        let d = diff(&a, &b, "gflop_per_s");
        assert_eq!(d.rows.len(), 2);
        let q8 = d.rows.iter().find(|r| r.setup.contains("q8_0")).unwrap();
        assert_eq!(q8.verdict, Verdict::Worse);
        assert!((q8.change.unwrap() + 0.2).abs() < 1e-9);
        let (lo, hi) = q8.ci().unwrap();
        assert!(lo <= -0.2 && (-0.2..-0.15).contains(&hi), "{lo} {hi}");
        // 2/252 for complete separation, doubled by Holm over 2 rows.
        assert!((q8.p_adjusted.unwrap() - 4.0 / 252.0).abs() < 1e-12);
        let q4 = d.rows.iter().find(|r| r.setup.contains("q4k")).unwrap();
        assert_eq!(q4.verdict, Verdict::WithinNoise);
        let gate = rule("regression>5%").gate(&d);
        assert_eq!(gate.regressions.len(), 1);
        assert_eq!(gate.outcome(false), Outcome::Regression);
        assert_eq!(gate.outcome(false).exit_code(), 3);
        let lenient = rule("regression>25%").gate(&d);
        assert_eq!(lenient.outcome(false), Outcome::Pass);
        // The reverse is an improvement: the gate passes.
        let back = diff(&b, &a, "gflop_per_s");
        assert_eq!(back.rows[1].verdict, Verdict::Better);
        assert_eq!(
            rule("regression>5%").gate(&back).outcome(false),
            Outcome::Pass
        );
        assert!("slower>5"
            .parse::<FailOn>()
            .unwrap_err()
            .contains("regression>N%"));
    }

    #[test]
    fn a_halving_with_one_repeat_is_inconclusive_not_a_pass() {
        let d = diff(
            &side("q8_0", &[100.0]),
            &side("q8_0", &[50.0]),
            "gflop_per_s",
        );
        assert_eq!(d.rows[0].verdict, Verdict::Inconclusive);
        assert!((d.rows[0].change.unwrap() + 0.5).abs() < 1e-12);
        let gate = rule("regression>5%").gate(&d);
        assert_eq!(gate.outcome(false), Outcome::Inconclusive);
        assert_eq!(gate.outcome(false).exit_code(), 4);
        assert_eq!(gate.outcome(true), Outcome::Pass);
        // Three against three can never reach p < 0.05 (at best 0.1).
        let d = diff(
            &side("q8_0", &[100.0, 101.0, 99.0]),
            &side("q8_0", &[50.0, 51.0, 49.0]),
            "gflop_per_s",
        );
        assert_eq!(d.rows[0].verdict, Verdict::Inconclusive);
    }

    #[test]
    fn holm_needs_more_repeats_when_more_configurations_are_tested() {
        // Five against five decides one configuration (2/252 < 0.05), but
        // not seven at once (7 x 2/252 > 0.05).
        let formats = ["f0", "f1", "f2", "f3", "f4", "f5", "f6"];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for f in formats {
            a.extend(side(f, &[100.0, 101.0, 99.0, 100.5, 99.5]));
            b.extend(side(f, &[50.0, 51.0, 49.0, 50.5, 49.5]));
        }
        let d = diff(&a, &b, "gflop_per_s");
        assert!(d.rows.iter().all(|r| r.verdict == Verdict::Inconclusive));
        let d = diff(&a[..10], &b[..10], "gflop_per_s");
        assert!(d.rows.iter().all(|r| r.verdict == Verdict::Worse));
        // A configuration measured once is not tested: it does not widen
        // the correction for the others.
        let d = diff(&a[..6], &b[..6], "gflop_per_s");
        let verdicts: Vec<Verdict> = d.rows.iter().map(|r| r.verdict).collect();
        assert_eq!(
            verdicts,
            [Verdict::Worse, Verdict::Inconclusive],
            "{:?}",
            d.rows
        );
        assert!((d.rows[0].p_adjusted.unwrap() - 2.0 / 252.0).abs() < 1e-12);
    }

    #[test]
    fn a_large_change_the_noise_hides_is_undecided_at_the_gate() {
        let d = diff(
            &side("q8_0", &[100.0, 20.0, 180.0, 60.0, 140.0]),
            &side("q8_0", &[50.0, 10.0, 150.0, 30.0, 90.0]),
            "gflop_per_s",
        );
        assert_eq!(d.rows[0].verdict, Verdict::WithinNoise);
        let gate = rule("regression>5%").gate(&d);
        assert_eq!(gate.outcome(false), Outcome::Inconclusive);
    }

    #[test]
    fn the_gates_messages() {
        let a = side("q8_0", &[100.0, 101.0, 99.0, 100.5, 99.5]);
        let b = side("q8_0", &[50.0, 51.0, 49.0, 50.5, 49.5]);
        let d = diff(&a, &b, "gflop_per_s");
        let one = diff(&a[..1], &b[..1], "gflop_per_s");
        let fail = rule("regression>5%");
        let text = [
            fail.gate(&d).messages(false),
            fail.gate(&one).messages(false),
            fail.gate(&one).messages(true),
            rule("regression>60%").gate(&d).messages(false),
        ]
        .concat()
        .join("\n");
        expect_test::expect![[r#"
            regression: shape=1,64,64 op=qmatmul format=q8_0 on c: change -50.0%, 95% interval -51.0% .. -49.0%, n = 5 vs 5
            1 configuration(s) regressed by more than 5.0% (significant after Holm's correction, the whole interval beyond 5.0%)
            inconclusive (too few repeats to decide): shape=1,64,64 op=qmatmul format=q8_0 on c: change -50.0%, n = 1 vs 1
            1 configuration(s) could not be decided against 5.0%: measure more repeats, or pass --allow-inconclusive
            inconclusive (too few repeats to decide): shape=1,64,64 op=qmatmul format=q8_0 on c: change -50.0%, n = 1 vs 1
            no configuration regressed by more than 5.0%; 1 undecided, allowed by --allow-inconclusive
            no configuration regressed by more than 60.0%"#]].assert_eq(&text);
    }

    #[test]
    fn single_repeats_are_inconclusive_and_machines_compare_across_classes() {
        let a = vec![t(0, "laptop", "q8_0", 10.0)];
        let b = vec![t(0, "h100", "q8_0", 100.0)];
        let d = diff(&a, &b, "gflop_per_s");
        assert_eq!(d.rows.len(), 1);
        assert_eq!(d.rows[0].class, "laptop -> h100");
        assert_eq!(d.rows[0].verdict, Verdict::Inconclusive);
        assert!((d.rows[0].change.unwrap() - 9.0).abs() < 1e-9);
    }

    fn on(mut t: TrialRecord, sha: &str, simd: &str) -> TrialRecord {
        t.fingerprint = Some(Fingerprint {
            agent_version: "0.1.0".into(),
            agent_git_sha: sha.into(),
            candle_version: "0.11.1".into(),
            rustc_version: "1.95".into(),
            cpu_model: "AMD EPYC".into(),
            threads: 2,
            os: "linux 6.8 x86_64".into(),
            extra: [("cpu_simd".to_owned(), simd.to_owned())].into(),
        });
        t
    }

    #[test]
    fn a_diff_across_environments_says_so_and_builds_alone_do_not() {
        let a: Vec<TrialRecord> = side("q8_0", &[100.0, 101.0, 99.0])
            .into_iter()
            .map(|t| on(t, "aaaa", "avx2"))
            .collect();
        // Another build on the same machine: what an A/B is for, no warning.
        let same: Vec<TrialRecord> = side("q8_0", &[100.0, 101.0, 99.0])
            .into_iter()
            .map(|t| on(t, "bbbb", "avx2"))
            .collect();
        let d = diff(&a, &same, "gflop_per_s");
        assert!(d.environment.is_empty(), "{:?}", d.environment);
        assert!(d.warnings().is_empty());
        // The same CPU model name, another kernel tier (and one trial with
        // no fingerprint, which changes nothing).
        let mut other: Vec<TrialRecord> = side("q8_0", &[100.0, 101.0, 99.0])
            .into_iter()
            .map(|t| on(t, "aaaa", "avx512vnni"))
            .collect();
        other[0].fingerprint = None;
        let d = diff(&a, &other, "gflop_per_s");
        expect_test::expect!["warning: A and B ran in different environments (cpu_simd: avx2 in A, avx512vnni in B): a change may come from that, not from what you changed; compare runs from one machine and toolchain"].assert_eq(&d.warnings().join("\n"));
        // No fingerprints on one side: nothing to compare, no warning.
        let bare = side("q8_0", &[100.0, 101.0, 99.0]);
        assert!(diff(&a, &bare, "gflop_per_s").environment.is_empty());
    }
}
