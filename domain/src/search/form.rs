//! The spec's form of `search:` (also its stored form): read, checked and written back.

use super::goal::is_metric_name;
use super::{Constraint, Goal, Halving, Objective, Rungs, Search, Tpe};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

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
