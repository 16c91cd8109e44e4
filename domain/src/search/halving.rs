//! Successive halving: rungs of a growing measurement budget, keeping the best `1/eta` at each.

use super::sampling::{aggregate, draw, rng_for};
use super::{Goal, Observed, Proposal};
use serde::{Deserialize, Serialize};

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

pub(super) fn halving_next(
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
