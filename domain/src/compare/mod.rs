//! Comparison of results across configurations and device classes.
//!
//! [`table`]: one metric, configurations x device classes, best per class;
//! [`tradeoff`]: decode speed against divergence, joining `generate` and
//! `eval` sweeps; [`pareto`]: the front of two metrics. Here: how a
//! configuration splits into the problem it solves and the setup that solves
//! it, which every comparison (and `diff` and `cost`) groups by. The
//! statistics they share live in `crate::stats`.

mod pareto;
mod table;
mod tradeoff;

pub use pareto::{default_pareto, pareto, pareto_front, pareto_points, ParetoPoint};
pub use table::{compare, speedup, Cell, Comparison, Row, NOISY_COV};
pub use tradeoff::{tradeoff, TradeoffRow};

use crate::metrics;
use crate::params::label;
use crate::results::{TrialRecord, TrialState};

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
        return metrics::ROOFLINE_FRAC;
    }
    primary
}

#[cfg(test)]
mod tests;
