//! Adaptive sweeps: each device class's search (what it proposed, what it
//! learnt), and the generations it adds as results arrive.

use super::core::Core;
use super::effects::{Effects, Write};
use chimera_domain::order::interleave;
use chimera_domain::params::Params;
use chimera_domain::results::{TrialRecord, TrialState};
use chimera_domain::search::{Observed, Proposal, Search};
use chimera_domain::spec::ParsedSweep;
use chimera_domain::{SweepId, TrialId, TrialKey};
use std::collections::BTreeMap;
use tracing::{debug, info};

/// An adaptive sweep's searches: the space, and per device class what has
/// been proposed and learnt. Derived from the spec and the trials alone, so
/// recovery rebuilds it from the store.
pub(super) struct SearchRun {
    pub search: Search,
    pub configs: Vec<Params>,
    /// The reference trial each configuration's trials consume (eval).
    pub depends: Vec<Option<String>>,
    pub repeats: u32,
    pub max_trials: Option<u32>,
    pub classes: BTreeMap<String, ClassSearch>,
    /// The configurations a class may run (conditional variants); absent: all.
    pub subsets: BTreeMap<String, Vec<u32>>,
}

#[derive(Default)]
pub(super) struct ClassSearch {
    /// Finished trials, as the search sees them.
    pub history: Vec<Observed>,
    /// Trials created for the class.
    pub created: u32,
    /// Of those, not yet finished.
    pub open: u32,
    /// The search of this class proposes nothing more.
    pub over: bool,
}

impl SearchRun {
    pub fn new(parsed: &ParsedSweep, depends: Vec<Option<String>>) -> Self {
        SearchRun {
            search: parsed.spec.search.clone(),
            configs: parsed.configs.clone(),
            depends,
            repeats: parsed.spec.repeats,
            max_trials: parsed.spec.budget.max_trials,
            classes: BTreeMap::new(),
            subsets: BTreeMap::new(),
        }
    }

    /// No class proposes anything more (the sweep's time ran out).
    pub fn close(&mut self) {
        for c in self.classes.values_mut() {
            c.over = true;
        }
    }

    /// Counts a trial the store holds (recovery): created for its class,
    /// and either learnt from (ended) or still open.
    pub fn count(&mut self, rec: &TrialRecord) {
        if rec.config_index as usize >= self.configs.len() {
            return; // a reference trial: not part of any class's search
        }
        let observed = self.observed(rec);
        let c = self.classes.entry(rec.device_class.clone()).or_default();
        c.created += 1;
        if rec.state.is_terminal() {
            c.history.push(observed);
        } else {
            c.open += 1;
        }
    }

    /// What the class's search learns from a finished trial.
    fn observed(&self, rec: &TrialRecord) -> Observed {
        let value = match (rec.state, self.search.goal()) {
            (TrialState::Succeeded, Some(goal)) => goal.value(&rec.metrics),
            _ => None,
        };
        Observed {
            config: rec.config_index as usize,
            rung: rec.rung.unwrap_or(0),
            value,
        }
    }

    /// The class's next generation (nothing when its search is over or out
    /// of budget).
    pub fn propose(&mut self, class: &str) -> Vec<Proposal> {
        let Some(c) = self.classes.get(class) else {
            return Vec::new();
        };
        if c.over || c.open > 0 {
            return Vec::new();
        }
        let limit = self.max_trials.map_or(usize::MAX, |m| {
            (m.saturating_sub(c.created) / self.repeats.max(1)) as usize
        });
        let next = match self.subsets.get(class) {
            None => self.search.next(&self.configs, class, &c.history, limit),
            // The class's own space: indices mapped to it and back.
            Some(subset) => {
                let configs: Vec<Params> = subset
                    .iter()
                    .filter_map(|&i| self.configs.get(i as usize).cloned())
                    .collect();
                let history: Vec<Observed> = c
                    .history
                    .iter()
                    .filter_map(|o| {
                        let local = subset.iter().position(|&i| i as usize == o.config)?;
                        Some(Observed {
                            config: local,
                            ..o.clone()
                        })
                    })
                    .collect();
                self.search
                    .next(&configs, class, &history, limit)
                    .into_iter()
                    .filter_map(|p| {
                        subset.get(p.config).map(|&i| Proposal {
                            config: i as usize,
                            rung: p.rung,
                        })
                    })
                    .collect()
            }
        };
        if next.is_empty() {
            if let Some(c) = self.classes.get_mut(class) {
                c.over = true;
            }
        }
        next
    }

    /// Classes whose generation ended but that have not proposed the next.
    pub fn idle_classes(&self) -> impl Iterator<Item = &String> {
        self.classes
            .iter()
            .filter(|(_, c)| c.open == 0 && !c.over)
            .map(|(class, _)| class)
    }
}

impl Core {
    /// A trial of an adaptive sweep finished: its class's search learns the
    /// result and, once the class's generation is complete, proposes the next.
    pub(super) fn observe(&mut self, key: &TrialKey, rec: &TrialRecord, fx: &mut Effects) {
        let Some(meta) = self.sweeps.get_mut(&key.sweep) else {
            return;
        };
        let running = meta.running();
        let Some(run) = meta.search.as_mut() else {
            return;
        };
        if rec.config_index as usize >= run.configs.len() {
            return; // a reference trial: not part of any class's search
        }
        let observed = run.observed(rec);
        let Some(c) = run.classes.get_mut(&rec.device_class) else {
            return;
        };
        c.history.push(observed);
        c.open = c.open.saturating_sub(1);
        if running && c.open == 0 {
            let class = rec.device_class.clone();
            self.advance(&key.sweep, &class, fx);
        }
    }

    /// Creates and queues the next generation of a class's search.
    pub(super) fn advance(&mut self, id: &SweepId, class: &str, fx: &mut Effects) {
        let Some(meta) = self.sweeps.get_mut(id) else {
            return;
        };
        let Some(run) = meta.search.as_mut() else {
            return;
        };
        let proposals = run.propose(class);
        if proposals.is_empty() {
            info!(sweep = %id, class, "search of this class is over");
            return;
        }
        let mut n = meta.record.trials_total as usize;
        let mut created = Vec::new();
        // The generation runs in seeded, interleaved rounds like a grid
        // sweep (a seed of its own per generation: the sweep's, moved on by
        // the trials before it).
        let seed = meta.record.order_seed.wrapping_add(n as u64);
        for (i, repeat) in interleave(proposals.len(), run.repeats, seed) {
            let Some(p) = proposals.get(i) else {
                continue;
            };
            created.push(TrialRecord {
                depends_on: run.depends[p.config].clone(),
                rung: p.rung,
                ..TrialRecord::pending(
                    TrialId::nth(n).0,
                    id.0.clone(),
                    class.to_owned(),
                    run.configs[p.config].clone(),
                    p.config as u32,
                    repeat,
                )
            });
            n += 1;
        }
        let k = created.len() as u32;
        if let Some(c) = run.classes.get_mut(class) {
            c.created += k;
            c.open += k;
        }
        meta.record.trials_total += k;
        *meta.counts.entry(TrialState::Pending).or_default() += k;
        fx.writes.push(Write::Sweep(meta.record.clone()));
        debug!(sweep = %id, class, trials = k, configs = proposals.len(), "search proposed a generation");
        for rec in created {
            self.add_trial(id, rec, fx);
        }
    }
}
