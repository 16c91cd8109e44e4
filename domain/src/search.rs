//! Search strategies: which configurations of a sweep's space run, per device class.
//!
//! `grid` and `random` pick every configuration at submit. `tpe` (Bayesian
//! optimisation with tree-structured Parzen estimators) and `halving`
//! (successive halving over a measurement budget) are *adaptive*: each device
//! class has its own search, which proposes the next configurations from the
//! results that class has produced so far.
//!
//! The adaptive searches here are pure functions of (the spec, the class, the
//! finished trials of that class): the controller keeps no other search state,
//! so a restarted controller re-derives the same search from its stored trials,
//! and the same results give the same proposals for the same `seed`. They run
//! in *generations*: the controller asks for the next generation only when
//! every trial of the previous one in that class has finished, which keeps the
//! proposals independent of the order in which parallel trials finish.

use crate::params::{ParamValue, Params};
use crate::spec::Harness;
use rand::{Rng, SeedableRng};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use tpe::density_estimation::{
    BuildDensityEstimator, DensityEstimator, HistogramEstimatorBuilder, ParzenEstimatorBuilder,
};

/// What an adaptive search optimises: one metric, up or down.
#[derive(Clone, Debug, PartialEq)]
pub struct Objective {
    /// The metric's name, as trials report it (`decode_tokens_per_s`).
    pub metric: String,
    /// Larger is better.
    pub maximize: bool,
}

/// A comparison in a constraint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Le,
    Lt,
    Ge,
    Gt,
}

impl Cmp {
    fn symbol(self) -> &'static str {
        match self {
            Cmp::Le => "<=",
            Cmp::Lt => "<",
            Cmp::Ge => ">=",
            Cmp::Gt => ">",
        }
    }

    fn holds(self, v: f64, bound: f64) -> bool {
        match self {
            Cmp::Le => v <= bound,
            Cmp::Lt => v < bound,
            Cmp::Ge => v >= bound,
            Cmp::Gt => v > bound,
        }
    }
}

/// A bound a configuration must meet to count (`kl_mean <= 0.02`).
#[derive(Clone, Debug, PartialEq)]
pub struct Constraint {
    /// The metric's name.
    pub metric: String,
    /// How it compares with the bound.
    pub cmp: Cmp,
    /// The bound, in the metric's unit.
    pub bound: f64,
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.metric, self.cmp.symbol(), self.bound)
    }
}

impl FromStr for Constraint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("constraint `{s}` is not `METRIC OP NUMBER` with OP one of <=, <, >=, > (e.g. `kl_mean <= 0.02`)")
        };
        let (i, cmp, len) = ["<=", ">=", "<", ">"]
            .iter()
            .find_map(|op| {
                s.find(op).map(|i| {
                    let cmp = match *op {
                        "<=" => Cmp::Le,
                        ">=" => Cmp::Ge,
                        "<" => Cmp::Lt,
                        _ => Cmp::Gt,
                    };
                    (i, cmp, op.len())
                })
            })
            .ok_or_else(bad)?;
        let metric = s[..i].trim();
        let bound = s[i + len..].trim();
        if !is_metric_name(metric) {
            return Err(bad());
        }
        let bound: f64 = bound.parse().map_err(|_| bad())?;
        if !bound.is_finite() {
            return Err(bad());
        }
        Ok(Constraint {
            metric: metric.to_owned(),
            cmp,
            bound,
        })
    }
}

fn is_metric_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The objective and constraints of an adaptive search.
#[derive(Clone, Debug, PartialEq)]
pub struct Goal {
    pub objective: Objective,
    pub constraints: Vec<Constraint>,
}

impl Goal {
    /// The objective value of a successful trial's metrics, or `None` when a
    /// constraint fails or a metric it needs is missing (the trial counts as
    /// infeasible, like a failed one).
    pub fn value(&self, metrics: &BTreeMap<String, f64>) -> Option<f64> {
        for c in &self.constraints {
            match metrics.get(&c.metric) {
                Some(v) if c.cmp.holds(*v, c.bound) => {}
                _ => return None,
            }
        }
        metrics
            .get(&self.objective.metric)
            .copied()
            .filter(|v| v.is_finite())
    }

    /// Every metric the goal reads.
    pub fn metrics(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.objective.metric.as_str())
            .chain(self.constraints.iter().map(|c| c.metric.as_str()))
    }

    fn better(&self, a: f64, b: f64) -> bool {
        if self.objective.maximize {
            a > b
        } else {
            a < b
        }
    }
}

/// The harness setting successive halving spends as its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetParam {
    /// Measured iterations (`harness.min_iters`).
    MinIters,
    /// Measured time (`harness.min_time_ms`).
    MinTimeMs,
}

/// The budget of successive halving: rung `k` runs with
/// `min · eta^k` of `param`, the last rung with `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rungs {
    pub param: BudgetParam,
    pub min: u32,
    pub max: u32,
}

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

/// Settings of the `halving` strategy (synchronous successive halving).
#[derive(Clone, Debug, PartialEq)]
pub struct Halving {
    pub seed: u64,
    /// Keep the best `1/eta` at each rung.
    pub eta: u32,
    pub budget: Rungs,
    /// Start from this many configurations drawn at random (default: all).
    pub samples: Option<u32>,
    pub goal: Goal,
}

/// How configurations are picked from the space.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Search {
    /// Every combination.
    #[default]
    Grid,
    /// `samples` configurations drawn from the grid without replacement,
    /// reproducibly for a `seed`.
    Random { samples: u32, seed: u64 },
    /// Bayesian optimisation per class.
    Tpe(Tpe),
    /// Successive halving per class.
    Halving(Halving),
}

/// The spec's form of `search` (and its stored form).
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    strategy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    samples: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trials: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    startup: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batch: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    objective: Option<RawObjective>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    constraints: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    eta: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    budget: Option<Rungs>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObjective {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    maximize: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    minimize: Option<String>,
}

const STRATEGIES: &str = "`grid`, `random`, `tpe` or `halving`";

impl Raw {
    fn unexpected(&self, allowed: &[&str]) -> Result<(), String> {
        let given = [
            ("samples", self.samples.is_some()),
            ("seed", self.seed.is_some()),
            ("trials", self.trials.is_some()),
            ("startup", self.startup.is_some()),
            ("batch", self.batch.is_some()),
            ("objective", self.objective.is_some()),
            ("constraints", self.constraints.is_some()),
            ("eta", self.eta.is_some()),
            ("budget", self.budget.is_some()),
        ];
        match given
            .iter()
            .find(|(name, set)| *set && !allowed.contains(name))
        {
            Some((name, _)) => Err(format!(
                "search `{}` takes no `{name}`{}",
                self.strategy,
                if allowed.is_empty() {
                    String::new()
                } else {
                    format!(" (it takes: {})", allowed.join(", "))
                }
            )),
            None => Ok(()),
        }
    }

    fn goal(&self) -> Result<Goal, String> {
        let objective = match &self.objective {
            None => {
                return Err(format!(
                "search `{}` needs an `objective`: {{maximize: METRIC}} or {{minimize: METRIC}}",
                self.strategy
            ))
            }
            Some(RawObjective {
                maximize: Some(m),
                minimize: None,
            }) => Objective {
                metric: m.clone(),
                maximize: true,
            },
            Some(RawObjective {
                maximize: None,
                minimize: Some(m),
            }) => Objective {
                metric: m.clone(),
                maximize: false,
            },
            Some(_) => return Err(
                "search.objective takes exactly one of `maximize: METRIC` or `minimize: METRIC`"
                    .into(),
            ),
        };
        if !is_metric_name(&objective.metric) {
            return Err(format!(
                "search.objective: `{}` is not a metric name (lower case, digits, `_`)",
                objective.metric
            ));
        }
        let constraints = self
            .constraints
            .iter()
            .flatten()
            .map(|c| c.parse())
            .collect::<Result<Vec<Constraint>, String>>()
            .map_err(|e| format!("search.constraints: {e}"))?;
        Ok(Goal {
            objective,
            constraints,
        })
    }

    fn into_search(self) -> Result<Search, String> {
        match self.strategy.as_str() {
            "grid" => {
                self.unexpected(&[])?;
                Ok(Search::Grid)
            }
            "random" => {
                self.unexpected(&["samples", "seed"])?;
                match self.samples {
                    Some(n) if n >= 1 => Ok(Search::Random {
                        samples: n,
                        seed: self.seed.unwrap_or(0),
                    }),
                    Some(n) => Err(format!("search.samples = {n} must be at least 1")),
                    None => Err(
                        "search `random` needs `samples` (and takes an optional `seed`): \
                         search: {strategy: random, samples: 20, seed: 1}"
                            .into(),
                    ),
                }
            }
            "tpe" => {
                self.unexpected(&[
                    "trials",
                    "seed",
                    "startup",
                    "batch",
                    "objective",
                    "constraints",
                ])?;
                let goal = self.goal()?;
                let trials = match self.trials {
                    Some(n) if (1..=10_000).contains(&n) => n,
                    Some(n) => return Err(format!("search.trials = {n} must be 1 to 10000")),
                    None => {
                        return Err("search `tpe` needs `trials` (configurations per device class): \
                             search: {strategy: tpe, trials: 20, objective: {maximize: gflop_per_s}}"
                            .into())
                    }
                };
                let startup = self
                    .startup
                    .unwrap_or((trials / 3).clamp(2, 10).min(trials));
                if startup == 0 || startup > trials {
                    return Err(format!(
                        "search.startup = {startup} must be 1 to trials ({trials})"
                    ));
                }
                let batch = self.batch.unwrap_or(1);
                if !(1..=64).contains(&batch) {
                    return Err(format!("search.batch = {batch} must be 1 to 64"));
                }
                Ok(Search::Tpe(Tpe {
                    trials,
                    seed: self.seed.unwrap_or(0),
                    startup,
                    batch,
                    goal,
                }))
            }
            "halving" => {
                self.unexpected(&[
                    "seed",
                    "eta",
                    "budget",
                    "samples",
                    "objective",
                    "constraints",
                ])?;
                let goal = self.goal()?;
                let eta = self.eta.unwrap_or(3);
                if !(2..=16).contains(&eta) {
                    return Err(format!("search.eta = {eta} must be 2 to 16"));
                }
                let budget = self.budget.ok_or(
                    "search `halving` needs a `budget`: {param: min_iters, min: 5, max: 45} \
                     (or param: min_time_ms)",
                )?;
                if budget.min == 0 || budget.max <= budget.min {
                    return Err(format!(
                        "search.budget: min = {} and max = {} need 1 <= min < max",
                        budget.min, budget.max
                    ));
                }
                if let Some(0) = self.samples {
                    return Err("search.samples = 0 must be at least 1".into());
                }
                Ok(Search::Halving(Halving {
                    seed: self.seed.unwrap_or(0),
                    eta,
                    budget,
                    samples: self.samples,
                    goal,
                }))
            }
            other => Err(format!(
                "unknown search strategy `{other}`, expected {STRATEGIES}"
            )),
        }
    }
}

impl From<&Search> for Raw {
    fn from(s: &Search) -> Raw {
        let goal = |g: &Goal| {
            (
                Some(RawObjective {
                    maximize: g.objective.maximize.then(|| g.objective.metric.clone()),
                    minimize: (!g.objective.maximize).then(|| g.objective.metric.clone()),
                }),
                (!g.constraints.is_empty())
                    .then(|| g.constraints.iter().map(|c| c.to_string()).collect()),
            )
        };
        match s {
            Search::Grid => Raw {
                strategy: "grid".into(),
                ..Raw::default()
            },
            Search::Random { samples, seed } => Raw {
                strategy: "random".into(),
                samples: Some(*samples),
                seed: Some(*seed),
                ..Raw::default()
            },
            Search::Tpe(t) => {
                let (objective, constraints) = goal(&t.goal);
                Raw {
                    strategy: "tpe".into(),
                    trials: Some(t.trials),
                    seed: Some(t.seed),
                    startup: Some(t.startup),
                    batch: Some(t.batch),
                    objective,
                    constraints,
                    ..Raw::default()
                }
            }
            Search::Halving(h) => {
                let (objective, constraints) = goal(&h.goal);
                Raw {
                    strategy: "halving".into(),
                    seed: Some(h.seed),
                    eta: Some(h.eta),
                    budget: Some(h.budget),
                    samples: h.samples,
                    objective,
                    constraints,
                    ..Raw::default()
                }
            }
        }
    }
}

impl Serialize for Search {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Raw::from(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Search {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Name(String),
            Full(serde_json::Map<String, serde_json::Value>),
        }
        let raw = match Form::deserialize(d).map_err(|_| {
            de::Error::custom(format!(
                "search is a strategy name ({STRATEGIES}) or a mapping with `strategy` and its settings"
            ))
        })? {
            Form::Name(strategy) => Raw {
                strategy,
                ..Raw::default()
            },
            Form::Full(m) => serde_json::from_value(serde_json::Value::Object(m))
                .map_err(|e| de::Error::custom(format!("search: {e}")))?,
        };
        raw.into_search().map_err(de::Error::custom)
    }
}

impl Search {
    /// The strategy's name in specs.
    pub fn name(&self) -> &'static str {
        match self {
            Search::Grid => "grid",
            Search::Random { .. } => "random",
            Search::Tpe(_) => "tpe",
            Search::Halving(_) => "halving",
        }
    }

    /// Whether configurations are proposed per class as results arrive.
    pub fn is_adaptive(&self) -> bool {
        matches!(self, Search::Tpe(_) | Search::Halving(_))
    }

    /// The objective and constraints of an adaptive search.
    pub fn goal(&self) -> Option<&Goal> {
        match self {
            Search::Tpe(t) => Some(&t.goal),
            Search::Halving(h) => Some(&h.goal),
            _ => None,
        }
    }

    /// The harness a trial at `rung` runs with: successive halving replaces
    /// its budget parameter; everything else runs with the sweep's harness.
    pub fn harness(&self, base: Harness, rung: Option<u32>) -> Harness {
        let (Search::Halving(h), Some(rung)) = (self, rung) else {
            return base;
        };
        let budget = rung_budget(h, rung);
        let mut out = base;
        match h.budget.param {
            BudgetParam::MinIters => out.min_iters = budget,
            BudgetParam::MinTimeMs => {
                out.min_time_ms = budget;
                out.max_time_ms = out.max_time_ms.max(budget);
            }
        }
        out
    }

    /// The next generation of configurations for one device class, given
    /// every trial that class has finished (the previous generations). Empty:
    /// the class's search is over. `limit` caps how many more configurations
    /// may start (the sweep's `budget.max_trials`).
    ///
    /// `configs` is the sweep's whole space in its stable order; proposals
    /// are indices into it.
    pub fn next(
        &self,
        configs: &[Params],
        class: &str,
        history: &[Observed],
        limit: usize,
    ) -> Vec<Proposal> {
        if limit == 0 || configs.is_empty() {
            return Vec::new();
        }
        match self {
            Search::Tpe(t) => tpe_next(t, configs, class, history, limit),
            Search::Halving(h) => halving_next(h, configs.len(), class, history, limit),
            // Chosen whole at submit.
            Search::Grid | Search::Random { .. } => Vec::new(),
        }
    }
}

/// A finished trial, as a class's search learns from it.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// Index of its configuration in the sweep's space.
    pub config: usize,
    /// Its rung (successive halving), else 0.
    pub rung: u32,
    /// [`Goal::value`] of a succeeded trial; `None` when it failed or broke a constraint.
    pub value: Option<f64>,
}

/// A configuration the search wants run (`repeats` times).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub config: usize,
    /// The successive-halving rung; `None` for other strategies.
    pub rung: Option<u32>,
}

/// The budget of a rung: `min · eta^rung`, the last rung exactly `max`.
pub fn rung_budget(h: &Halving, rung: u32) -> u32 {
    let last = rung_count(h) - 1;
    if rung >= last {
        return h.budget.max;
    }
    (h.budget.min as u64 * (h.eta as u64).pow(rung))
        .min(h.budget.max as u64)
        .try_into()
        .unwrap_or(h.budget.max)
}

/// How many rungs successive halving has: budgets `min · eta^k` below `max`, then `max`.
pub fn rung_count(h: &Halving) -> u32 {
    let mut n = 1;
    let mut b = h.budget.min as u64;
    while b < h.budget.max as u64 {
        b *= h.eta as u64;
        n += 1;
    }
    n
}

/// The median objective value of each (configuration, rung), in configuration order;
/// `None` when no repeat produced a value.
fn aggregate(history: &[Observed], rung: u32) -> BTreeMap<usize, Option<f64>> {
    let mut by: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for o in history.iter().filter(|o| o.rung == rung) {
        let e = by.entry(o.config).or_default();
        if let Some(v) = o.value {
            e.push(v);
        }
    }
    by.into_iter()
        .map(|(c, mut vs)| {
            vs.sort_by(f64::total_cmp);
            let m = match vs.len() {
                0 => None,
                n if n % 2 == 1 => Some(vs[n / 2]),
                n => Some((vs[n / 2 - 1] + vs[n / 2]) / 2.0),
            };
            (c, m)
        })
        .collect()
}

/// A random generator for one generation of one class's search: the same
/// seed, class and generation give the same draws on every machine.
fn rng_for(seed: u64, class: &str, generation: usize) -> rand_chacha::ChaCha8Rng {
    // FNV-1a of the class name, mixed with the seed and generation.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in class.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mixed = seed
        .rotate_left(17)
        .wrapping_add(h)
        .wrapping_add((generation as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    rand_chacha::ChaCha8Rng::seed_from_u64(mixed)
}

/// `n` distinct indices from `pool`, kept in pool order.
fn draw(pool: &[usize], n: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<usize> {
    if n >= pool.len() {
        return pool.to_vec();
    }
    let mut picked = rand::seq::index::sample(rng, pool.len(), n).into_vec();
    picked.sort_unstable();
    picked.into_iter().map(|i| pool[i]).collect()
}

fn tpe_next(
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

fn halving_next(
    h: &Halving,
    n_configs: usize,
    class: &str,
    history: &[Observed],
    limit: usize,
) -> Vec<Proposal> {
    let top = history.iter().map(|o| o.rung).max();
    let (configs, rung) = match top {
        None => {
            let all: Vec<usize> = (0..n_configs).collect();
            let n = h.samples.map_or(n_configs, |s| s as usize).min(limit);
            let mut rng = rng_for(h.seed, class, 0);
            (draw(&all, n, &mut rng), 0)
        }
        Some(r) if r + 1 >= rung_count(h) => return Vec::new(),
        Some(r) => {
            let at = aggregate(history, r);
            let keep = (at.len() / h.eta as usize).max(1).min(limit);
            let mut ranked: Vec<(f64, usize)> = at
                .into_iter()
                .filter_map(|(c, v)| v.map(|v| (v, c)))
                .collect();
            ranked.sort_by(|a, b| {
                if h.goal.better(a.0, b.0) {
                    std::cmp::Ordering::Less
                } else if h.goal.better(b.0, a.0) {
                    std::cmp::Ordering::Greater
                } else {
                    a.1.cmp(&b.1)
                }
            });
            let mut next: Vec<usize> = ranked.into_iter().take(keep).map(|(_, c)| c).collect();
            next.sort_unstable();
            (next, r + 1)
        }
    };
    configs
        .into_iter()
        .map(|config| Proposal {
            config,
            rung: Some(rung),
        })
        .collect()
}

/// Limits on a whole sweep (`budget:` in the spec).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Trials per device class, repeats included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_trials: Option<u32>,
    /// Wall time from submission, seconds: after it no trial starts and
    /// pending ones are cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_duration_s: Option<u64>,
}

impl<'de> Deserialize<'de> for Budget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            max_trials: Option<u32>,
            max_duration: Option<String>,
            max_duration_s: Option<u64>,
        }
        let r = Raw::deserialize(d)?;
        if let Some(0) = r.max_trials {
            return Err(de::Error::custom(
                "budget.max_trials = 0 must be at least 1",
            ));
        }
        let secs = match (r.max_duration, r.max_duration_s) {
            (Some(_), Some(_)) => {
                return Err(de::Error::custom(
                    "give budget.max_duration or max_duration_s, not both",
                ))
            }
            (Some(text), None) => {
                let d = humantime::parse_duration(&text).map_err(|e| {
                    de::Error::custom(format!(
                        "budget.max_duration = `{text}` is not a duration ({e}); e.g. `90s`, `10m`, `2h`"
                    ))
                })?;
                Some(d.as_secs().max(1))
            }
            (None, s) => s,
        };
        if let Some(0) = secs {
            return Err(de::Error::custom(
                "budget.max_duration_s = 0 must be at least 1",
            ));
        }
        Ok(Budget {
            max_trials: r.max_trials,
            max_duration_s: secs,
        })
    }
}

/// The answer of an adaptive search: per device class, the configuration with
/// the best median objective among those that met every constraint (at the
/// highest rung it reached, for successive halving).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Best {
    pub class: String,
    pub config_index: u32,
    pub params: Params,
    /// Median objective value over its repeats.
    pub value: f64,
    /// Configurations the class's search ran.
    pub tried: usize,
}

/// [`Best`] per class of a sweep's trials, for an adaptive search.
pub fn best_per_class(goal: &Goal, trials: &[crate::results::TrialRecord]) -> Vec<Best> {
    use crate::results::TrialState;
    // (class, config) -> (rung, values, params)
    let mut by: BTreeMap<(String, u32), (u32, Vec<f64>, Params)> = BTreeMap::new();
    for t in trials {
        let reference = t.params.get(crate::models::ROLE)
            == Some(&ParamValue::Text(crate::models::ROLE_REFERENCE.to_owned()));
        if reference {
            continue;
        }
        let rung = t.rung.unwrap_or(0);
        let e = by
            .entry((t.device_class.clone(), t.config_index))
            .or_insert_with(|| (rung, Vec::new(), t.params.clone()));
        if rung > e.0 {
            *e = (rung, Vec::new(), t.params.clone());
        }
        if rung == e.0 && t.state == TrialState::Succeeded {
            if let Some(v) = goal.value(&t.metrics) {
                e.1.push(v);
            }
        }
    }
    // Successive halving's answer is among the configurations that reached
    // the class's top rung.
    let mut top: BTreeMap<String, u32> = BTreeMap::new();
    for ((class, _), (rung, _, _)) in &by {
        let t = top.entry(class.clone()).or_default();
        *t = (*t).max(*rung);
    }
    let mut out: BTreeMap<String, Best> = BTreeMap::new();
    let mut tried: BTreeMap<String, usize> = BTreeMap::new();
    for ((class, config), (rung, mut values, params)) in by {
        *tried.entry(class.clone()).or_default() += 1;
        if values.is_empty() || top.get(&class).is_some_and(|t| rung < *t) {
            continue;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let value = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        let better = out.get(&class).is_none_or(|b| goal.better(value, b.value));
        if better {
            out.insert(
                class.clone(),
                Best {
                    class,
                    config_index: config,
                    params,
                    value,
                    tried: 0,
                },
            );
        }
    }
    out.into_values()
        .map(|mut b| {
            b.tried = tried.get(&b.class).copied().unwrap_or(0);
            b
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Search, String> {
        serde_yaml_ng::from_str::<Search>(yaml).map_err(|e| e.to_string())
    }

    fn space(formats: &[&str], threads: &[i64]) -> Vec<Params> {
        let mut out = Vec::new();
        for f in formats {
            for t in threads {
                out.push(Params::from([
                    ("format".to_owned(), ParamValue::Text((*f).to_owned())),
                    ("threads".to_owned(), ParamValue::Int(*t)),
                ]));
            }
        }
        out
    }

    /// Runs a search to the end against a response function (a stand-in for
    /// real trials: this tests the algorithm, not a device).
    fn drive(
        s: &Search,
        configs: &[Params],
        class: &str,
        f: impl Fn(usize, u32) -> Option<f64>,
    ) -> Vec<Observed> {
        let mut history = Vec::new();
        for _ in 0..1000 {
            let next = s.next(configs, class, &history, usize::MAX);
            if next.is_empty() {
                break;
            }
            for p in next {
                let rung = p.rung.unwrap_or(0);
                history.push(Observed {
                    config: p.config,
                    rung,
                    value: f(p.config, rung),
                });
            }
        }
        history
    }

    #[test]
    fn parses_each_strategy_and_refuses_mistakes() {
        assert_eq!(parse("grid").unwrap(), Search::Grid);
        let t = parse("{strategy: tpe, trials: 12, seed: 3, objective: {maximize: gflop_per_s}, constraints: [\"cov <= 0.05\"]}").unwrap();
        let Search::Tpe(t) = &t else { panic!("{t:?}") };
        assert_eq!((t.trials, t.seed, t.startup, t.batch), (12, 3, 4, 1));
        assert_eq!(t.goal.constraints[0].to_string(), "cov <= 0.05");
        let h = parse("{strategy: halving, eta: 2, budget: {param: min_iters, min: 2, max: 16}, objective: {minimize: latency_ms_p50}}").unwrap();
        let Search::Halving(h) = &h else { panic!() };
        assert_eq!(rung_count(h), 4);
        assert_eq!(
            (0..4).map(|r| rung_budget(h, r)).collect::<Vec<_>>(),
            [2, 4, 8, 16]
        );
        for (yaml, needle) in [
            ("{strategy: tpe, objective: {maximize: x}}", "needs `trials`"),
            ("{strategy: tpe, trials: 5}", "needs an `objective`"),
            ("{strategy: tpe, trials: 5, objective: {maximize: a, minimize: b}}", "exactly one"),
            ("{strategy: tpe, trials: 5, objective: {maximize: x}, constraints: [\"kl_mean ~ 2\"]}", "kl_mean ~ 2"),
            ("{strategy: grid, seed: 1}", "takes no `seed`"),
            ("{strategy: random, samples: 3, trials: 4}", "takes no `trials`"),
            ("{strategy: halving, objective: {maximize: x}}", "needs a `budget`"),
            ("{strategy: halving, objective: {maximize: x}, budget: {param: min_iters, min: 8, max: 8}}", "min < max"),
            ("{strategy: annealing}", "unknown search strategy `annealing`"),
            ("{strategy: tpe, trialz: 5}", "unknown field `trialz`"),
        ] {
            let e = parse(yaml).unwrap_err();
            assert!(e.contains(needle), "{yaml}: {e}");
        }
    }

    #[test]
    fn stored_form_reads_back() {
        for yaml in [
            "grid",
            "{strategy: random, samples: 4, seed: 9}",
            "{strategy: tpe, trials: 9, objective: {maximize: gflop_per_s}, constraints: [\"cov < 0.1\", \"kl_mean <= 2e-2\"]}",
            "{strategy: halving, budget: {param: min_time_ms, min: 50, max: 800}, samples: 6, objective: {minimize: ttft_ms}}",
        ] {
            let s = parse(yaml).unwrap();
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<Search>(&json).unwrap(), s, "{json}");
        }
    }

    #[test]
    fn goal_values_respect_constraints() {
        let Search::Tpe(t) = parse(
            "{strategy: tpe, trials: 5, objective: {maximize: tps}, constraints: [\"kl <= 0.02\"]}",
        )
        .unwrap() else {
            panic!()
        };
        let m = |tps: f64, kl: f64| BTreeMap::from([("tps".into(), tps), ("kl".into(), kl)]);
        assert_eq!(t.goal.value(&m(10.0, 0.01)), Some(10.0));
        assert_eq!(t.goal.value(&m(10.0, 0.5)), None);
        assert_eq!(t.goal.value(&BTreeMap::from([("tps".into(), 3.0)])), None);
    }

    #[test]
    fn tpe_finds_the_peak_of_a_structured_surface_in_few_trials_per_class() {
        let formats = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        let configs = space(&formats, &[1, 2, 4, 8, 16, 32]);
        // Two classes with different optima: the search of each is its own.
        let surface = |best_f: usize, best_t: usize| {
            move |c: usize, _: u32| {
                let (f, t) = (c / 6, c % 6);
                let df = (f as f64 - best_f as f64).abs();
                let dt = (t as f64 - best_t as f64).abs();
                Some(100.0 - 9.0 * df - 12.0 * dt)
            }
        };
        let s = parse("{strategy: tpe, trials: 20, seed: 7, objective: {maximize: v}}").unwrap();
        for (class, bf, bt) in [("cpu: x", 7, 4), ("gpu: y", 1, 1)] {
            let f = surface(bf, bt);
            let h = drive(&s, &configs, class, f);
            assert_eq!(h.len(), 20, "{class}: trials = budget");
            let mut seen: Vec<usize> = h.iter().map(|o| o.config).collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), 20, "{class}: no configuration twice");
            let best = h.iter().filter_map(|o| o.value).fold(f64::MIN, f64::max);
            assert!(
                best >= 100.0 * 0.95,
                "{class}: best {best} of a peak of 100"
            );
            // Deterministic for the seed.
            assert_eq!(drive(&s, &configs, class, surface(bf, bt)), h);
        }
        // A different seed explores differently.
        let other =
            parse("{strategy: tpe, trials: 20, seed: 8, objective: {maximize: v}}").unwrap();
        assert_ne!(
            drive(&other, &configs, "cpu: x", surface(7, 4)),
            drive(&s, &configs, "cpu: x", surface(7, 4))
        );
    }

    #[test]
    fn tpe_treats_failures_and_broken_constraints_as_worst_and_stops_at_the_space() {
        let configs = space(&["a", "b"], &[1, 2]);
        let s = parse("{strategy: tpe, trials: 50, startup: 2, objective: {minimize: v}}").unwrap();
        let h = drive(&s, &configs, "c", |c, _| (c != 0).then_some(c as f64));
        assert_eq!(h.len(), 4, "the whole space, once each");
        assert!(s.next(&configs, "c", &h, usize::MAX).is_empty());
        // The limit caps a generation.
        assert_eq!(s.next(&configs, "c", &[], 1).len(), 1);
    }

    #[test]
    fn halving_promotes_the_best_third_until_the_last_rung() {
        let configs = space(&["a", "b", "c"], &[1, 2, 4]);
        let s = parse("{strategy: halving, eta: 3, budget: {param: min_iters, min: 1, max: 9}, objective: {minimize: ms}}").unwrap();
        // Config 4 is best; 7 fails at rung 0.
        let h = drive(&s, &configs, "c", |c, _| {
            (c != 7).then_some((c as f64 - 4.0).abs())
        });
        let per_rung = |r: u32| h.iter().filter(|o| o.rung == r).count();
        assert_eq!((per_rung(0), per_rung(1), per_rung(2)), (9, 3, 1));
        let last: Vec<usize> = h.iter().filter(|o| o.rung == 2).map(|o| o.config).collect();
        assert_eq!(last, [4]);
        let rung1: Vec<usize> = h.iter().filter(|o| o.rung == 1).map(|o| o.config).collect();
        assert_eq!(rung1, [3, 4, 5]);
        let base = Harness::default();
        assert_eq!(s.harness(base, Some(1)).min_iters, 3);
        assert_eq!(s.harness(base, None), base);
    }

    #[test]
    fn halving_samples_reproducibly_per_class() {
        let configs = space(&["a", "b", "c", "d"], &[1, 2, 4]);
        let s = parse("{strategy: halving, samples: 5, seed: 2, budget: {param: min_time_ms, min: 10, max: 40}, objective: {maximize: v}}").unwrap();
        let a = s.next(&configs, "x", &[], usize::MAX);
        assert_eq!(a.len(), 5);
        assert_eq!(a, s.next(&configs, "x", &[], usize::MAX));
        assert_eq!(s.harness(Harness::default(), Some(0)).min_time_ms, 10);
    }

    #[test]
    fn budgets_parse_durations() {
        let b: Budget = serde_yaml_ng::from_str("{max_trials: 30, max_duration: 10m}").unwrap();
        assert_eq!((b.max_trials, b.max_duration_s), (Some(30), Some(600)));
        let e = serde_yaml_ng::from_str::<Budget>("{max_duration: soon}").unwrap_err();
        assert!(e.to_string().contains("`soon` is not a duration"), "{e}");
        let e = serde_yaml_ng::from_str::<Budget>("{max_trials: 0}").unwrap_err();
        assert!(e.to_string().contains("max_trials = 0"), "{e}");
    }

    #[test]
    fn tpe_reaches_the_peak_more_often_than_random_sampling() {
        let configs = space(
            &["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"],
            &[1, 2, 4, 8, 16, 32],
        );
        let surface = |c: usize| {
            let (f, t) = (c / 6, c % 6);
            100.0 - 9.0 * (f as f64 - 7.0).abs() - 12.0 * (t as f64 - 4.0).abs()
        };
        let (mut tpe_hits, mut random_hits) = (0, 0);
        for seed in 0..50u64 {
            let s = parse(&format!(
                "{{strategy: tpe, trials: 15, seed: {seed}, objective: {{maximize: v}}}}"
            ))
            .unwrap();
            let h = drive(&s, &configs, "c", |c, _| Some(surface(c)));
            tpe_hits += usize::from(h.iter().any(|o| o.value == Some(100.0)));
            let pool: Vec<usize> = (0..configs.len()).collect();
            let r = draw(&pool, 15, &mut rng_for(seed, "c", 0));
            random_hits += usize::from(r.iter().any(|&c| surface(c) == 100.0));
        }
        // Measured when written: 38 of 50 against 12 of 50.
        assert!(
            tpe_hits >= 2 * random_hits && tpe_hits >= 30,
            "tpe {tpe_hits}/50, random {random_hits}/50"
        );
    }

    #[test]
    fn the_best_per_class_meets_the_constraints_at_the_top_rung() {
        use crate::results::{TrialRecord, TrialState};
        let Search::Tpe(t) = parse(
            "{strategy: tpe, trials: 5, objective: {maximize: v}, constraints: [\"e <= 1\"]}",
        )
        .unwrap() else {
            panic!()
        };
        let rec = |class: &str, config: u32, rung: Option<u32>, v: f64, e: f64| -> TrialRecord {
            serde_json::from_value(serde_json::json!({
                "id": "t", "sweep_id": "s", "state": "succeeded", "device_class": class,
                "params": {"format": format!("f{config}")}, "config_index": config, "attempt": 1,
                "metrics": {"v": v, "e": e}, "rung": rung,
            }))
            .unwrap()
        };
        let mut failed = rec("a", 3, None, 99.0, 0.0);
        failed.state = TrialState::Failed;
        let trials = [
            rec("a", 0, None, 10.0, 0.5),
            rec("a", 0, None, 12.0, 0.5),
            rec("a", 1, None, 50.0, 2.0), // breaks the constraint
            failed,
            rec("b", 0, Some(0), 40.0, 0.0),
            rec("b", 0, Some(1), 20.0, 0.0), // its top rung counts
            rec("b", 2, Some(0), 30.0, 0.0), // not promoted: not the answer
        ];
        let best = best_per_class(&t.goal, &trials);
        assert_eq!(best.len(), 2);
        assert_eq!(
            (
                best[0].class.as_str(),
                best[0].config_index,
                best[0].value,
                best[0].tried
            ),
            ("a", 0, 11.0, 3)
        );
        assert_eq!(
            (best[1].class.as_str(), best[1].config_index, best[1].value),
            ("b", 0, 20.0)
        );
    }
}
