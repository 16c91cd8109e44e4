//! Bayesian optimisation with tree-structured Parzen estimators, scoring the untried configurations of the space.

use super::sampling::{aggregate, draw, rng_for};
use super::{Goal, Observed, Proposal};
use crate::params::{ParamValue, Params};
use rand::Rng;
use std::collections::BTreeMap;
use tpe::density_estimation::{
    BuildDensityEstimator, DensityEstimator, HistogramEstimatorBuilder, ParzenEstimatorBuilder,
};

/// Settings of the `tpe` strategy.
#[derive(Clone, Debug, PartialEq)]
pub struct Tpe {
    /// Configurations to try per class (the whole space if fewer).
    pub trials: u32,
    pub seed: u64,
    /// Configurations drawn at random before the estimators take over.
    pub startup: u32,
    /// Configurations proposed per generation after the start.
    pub batch: u32,
    pub goal: Goal,
}

pub(super) fn tpe_next(
    t: &Tpe,
    configs: &[Params],
    class: &str,
    history: &[Observed],
    limit: usize,
) -> Vec<Proposal> {
    let tried = aggregate(history, 0);
    let total = (t.trials as usize).min(configs.len());
    if tried.len() >= total {
        return Vec::new();
    }
    let untried: Vec<usize> = (0..configs.len())
        .filter(|i| !tried.contains_key(i))
        .collect();
    let mut rng = rng_for(t.seed, class, tried.len());
    let startup = (t.startup as usize).min(total);
    let picked = if tried.len() < startup {
        draw(&untried, (startup - tried.len()).min(limit), &mut rng)
    } else {
        let want = (t.batch as usize).min(total - tried.len()).min(limit);
        let scorer = TpeScorer::new(configs, &tried, t.goal.objective.maximize);
        let mut scored: Vec<(f64, u64, usize)> = untried
            .iter()
            .map(|&c| (scorer.score(&configs[c]), rng.random::<u64>(), c))
            .collect();
        // Best score first; ties broken by the seeded draw.
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
        let mut out: Vec<usize> = scored.into_iter().take(want).map(|s| s.2).collect();
        out.sort_unstable();
        out
    };
    picked
        .into_iter()
        .map(|config| Proposal { config, rung: None })
        .collect()
}

/// The share of the finished configurations that form the "good" group.
const TPE_GAMMA: f64 = 0.25;

/// One parameter of the space, as the estimators see it.
struct Dim {
    key: String,
    /// Each distinct value (`None`: the parameter is absent from the
    /// configuration, e.g. `format` for a dense matmul), in order: numeric
    /// values ascending when the dimension is ordinal.
    values: Vec<Option<String>>,
    /// Three or more values on one numeric scale (numbers, or number tuples such as shapes), always present: a Parzen estimator over
    /// their ranks; otherwise a histogram over the categories.
    ordinal: bool,
}

impl Dim {
    fn position(&self, p: &Params) -> f64 {
        let v = p.get(&self.key).map(value_key);
        let i = self.values.iter().position(|x| *x == v).unwrap_or(0);
        if self.ordinal {
            i as f64 + 0.5
        } else {
            i as f64
        }
    }

    fn range(&self) -> Option<tpe::range::Range> {
        tpe::range(0.0, self.values.len() as f64).ok()
    }
}

fn value_key(v: &ParamValue) -> String {
    format!("{v:?}")
}

/// A value's place on a numeric scale: a number, or a tuple of numbers for
/// text like a shape (`"64,512,512"`), ordered lexicographically.
fn numeric(v: &ParamValue) -> Option<Vec<f64>> {
    match v {
        ParamValue::Int(i) => Some(vec![*i as f64]),
        ParamValue::Real(r) => Some(vec![*r]),
        ParamValue::Text(t) => t
            .split(',')
            .map(|x| x.trim().parse::<f64>().ok().filter(|x| x.is_finite()))
            .collect(),
        ParamValue::Flag(_) => None,
    }
}

fn lexicographic(a: &[f64], b: &[f64]) -> std::cmp::Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.total_cmp(y))
        .find(|o| o.is_ne())
        .unwrap_or(a.len().cmp(&b.len()))
}

/// Scores a candidate configuration by TPE's acquisition: the sum over the
/// parameters of `log l(x) − log g(x)`, with `l` and `g` the densities of the
/// good and the other finished configurations, estimated per parameter by
/// the `tpe` crate's Parzen (ordinal) and histogram (categorical) estimators.
/// Scoring the untried configurations of the space (instead of sampling each
/// parameter on its own, as `tpe::TpeOptimizer` does) keeps every proposal a
/// valid, new configuration of the space, variants and conditional
/// parameters included.
struct TpeScorer {
    dims: Vec<(Dim, Estimators)>,
}

enum Estimators {
    Parzen(
        tpe::density_estimation::ParzenEstimator,
        tpe::density_estimation::ParzenEstimator,
    ),
    Histogram(
        tpe::density_estimation::HistogramEstimator,
        tpe::density_estimation::HistogramEstimator,
    ),
}

impl TpeScorer {
    fn new(configs: &[Params], tried: &BTreeMap<usize, Option<f64>>, maximize: bool) -> Self {
        // Losses, best first; failed or infeasible configurations are the worst.
        let mut losses: Vec<(f64, usize)> = tried
            .iter()
            .map(|(&c, v)| {
                let loss = match v {
                    Some(v) if maximize => -v,
                    Some(v) => *v,
                    None => f64::INFINITY,
                };
                (loss, c)
            })
            .collect();
        losses.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let feasible = losses.iter().filter(|l| l.0.is_finite()).count();
        let n_good = ((TPE_GAMMA * losses.len() as f64).ceil() as usize)
            .max(1)
            .min(feasible.max(1));
        let (good, bad) = losses.split_at(n_good.min(losses.len()));
        let mut keys: Vec<&String> = configs.iter().flat_map(|c| c.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut dims = Vec::new();
        for key in keys {
            let mut values: Vec<(Option<Vec<f64>>, Option<String>)> = Vec::new();
            for c in configs {
                let v = c.get(key);
                let k = v.map(value_key);
                if !values.iter().any(|(_, x)| *x == k) {
                    values.push((v.and_then(numeric), k));
                }
            }
            if values.len() < 2 {
                continue; // a constant tells candidates apart by nothing
            }
            // Three or more values on one numeric scale (numbers, or shapes
            // of one arity) are ordinal.
            let arity = values.first().and_then(|(n, _)| n.as_ref().map(Vec::len));
            let ordinal = values.len() >= 3
                && values
                    .iter()
                    .all(|(n, _)| n.as_ref().map(Vec::len) == arity && arity.is_some());
            if ordinal {
                values.sort_by(|a, b| {
                    lexicographic(a.0.as_deref().unwrap_or(&[]), b.0.as_deref().unwrap_or(&[]))
                });
            }
            let dim = Dim {
                key: key.clone(),
                values: values.into_iter().map(|(_, k)| k).collect(),
                ordinal,
            };
            let Some(range) = dim.range() else { continue };
            let xs = |set: &[(f64, usize)]| -> Vec<f64> {
                set.iter()
                    .map(|(_, c)| dim.position(&configs[*c]))
                    .collect()
            };
            let (gx, bx) = (xs(good), xs(bad));
            let est = if ordinal {
                let b = ParzenEstimatorBuilder::new();
                match (
                    b.build_density_estimator(gx.iter().copied(), range),
                    b.build_density_estimator(bx.iter().copied(), range),
                ) {
                    (Ok(g), Ok(l)) => Estimators::Parzen(g, l),
                }
            } else {
                let b = HistogramEstimatorBuilder::new();
                match (
                    b.build_density_estimator(gx.iter().copied(), range),
                    b.build_density_estimator(bx.iter().copied(), range),
                ) {
                    (Ok(g), Ok(l)) => Estimators::Histogram(g, l),
                }
            };
            dims.push((dim, est));
        }
        TpeScorer { dims }
    }

    fn score(&self, p: &Params) -> f64 {
        self.dims
            .iter()
            .map(|(dim, est)| {
                let x = dim.position(p);
                match est {
                    Estimators::Parzen(g, b) => g.log_pdf(x) - b.log_pdf(x),
                    Estimators::Histogram(g, b) => g.log_pdf(x) - b.log_pdf(x),
                }
            })
            .sum()
    }
}
