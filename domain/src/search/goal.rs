//! What an adaptive search optimises: the objective metric and the constraints a result must meet.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

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

pub(super) fn is_metric_name(s: &str) -> bool {
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

    pub(super) fn better(&self, a: f64, b: f64) -> bool {
        if self.objective.maximize {
            a > b
        } else {
            a < b
        }
    }
}
