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
//!
//! The modules: [`goal`] (objective and constraints), [`form`] (the spec's
//! `search:` mapping, read and written), [`tpe`], [`halving`], [`sampling`]
//! (seeded draws and per-rung medians both strategies share), [`budget`]
//! (`budget:`) and [`best`] (the answer per class). This module reads no
//! spec type: the spec imports the search, not the reverse.

mod best;
mod budget;
mod form;
mod goal;
mod halving;
mod sampling;
mod tpe;

pub use best::{best_per_class, Best};
pub use budget::Budget;
pub use goal::{Cmp, Constraint, Goal, Objective};
pub use halving::{rung_budget, rung_count, BudgetParam, Halving, Rungs};
pub use tpe::Tpe;

use crate::harness::Harness;
use crate::params::Params;
use halving::halving_next;
use tpe::tpe_next;

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

#[cfg(test)]
mod tests;
