//! Recovery: the scheduling state rebuilt from the store's records after a
//! restart or a failover. Two synchronous steps around one read: what the
//! records say ([`Core::recover`]), then, with the artifacts it asked for,
//! what follows ([`Core::resume`]).

use super::core::{AgentState, Core, Now, SweepMeta};
use super::effects::Effects;
use super::plan::references;
use super::records::{Queue, SweepRecord};
use super::search_run::SearchRun;
use super::SchedulerConfig;
use chimera_domain::results::{TrialRecord, TrialState};
use chimera_domain::{AgentId, SweepId, TrialKey};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tracing::warn;

/// What [`Core::recover`] leaves for [`Core::resume`].
pub struct Recovering {
    /// Pending trials and the trial each depends on.
    blocked: Vec<(TrialKey, TrialKey)>,
    /// Trials that ended: state and error.
    ended: HashMap<TrialKey, (TrialState, Option<String>)>,
    /// Stored trials held by an agent that the store does not name: they
    /// go back to pending.
    orphans: Vec<TrialKey>,
    /// Artifacts to read from the store: outputs of succeeded references
    /// that pending or future trials consume.
    pub needed: Vec<TrialKey>,
    /// Trials held by agents not (yet) connected.
    pub held: usize,
}

impl Core {
    /// The state the stored records describe. Trials that were running wait
    /// one lease TTL for their agent to come back.
    pub fn recover(
        config: SchedulerConfig,
        now: Now,
        sweeps: Vec<SweepRecord>,
        trials: Vec<TrialRecord>,
    ) -> (Core, Recovering) {
        let mut core = Core::new(config, now);
        for record in sweeps {
            let search = recover_search(&record);
            core.sweeps.insert(
                SweepId(record.id.clone()),
                SweepMeta {
                    record,
                    counts: HashMap::new(),
                    search,
                },
            );
        }
        let deadline = now.at + config.lease_ttl;
        let mut r = Recovering {
            blocked: Vec::new(),
            ended: HashMap::new(),
            orphans: Vec::new(),
            needed: Vec::new(),
            held: 0,
        };
        for rec in trials {
            let key = Core::key_of(&rec);
            let Some(meta) = core.sweeps.get_mut(&key.sweep) else {
                warn!(trial = %key.trial, sweep = %key.sweep, "trial without a sweep; ignored");
                continue;
            };
            *meta.counts.entry(rec.state).or_default() += 1;
            if let Some(run) = &mut meta.search {
                run.count(&rec);
            }
            match (rec.state, &rec.depends_on, &rec.agent) {
                (TrialState::Pending, Some(dep), _) => {
                    r.blocked
                        .push((TrialKey::new(key.sweep.clone(), dep.clone()), key.clone()));
                }
                (TrialState::Pending, None, _) => core.enqueue(Queue::of(&rec), key.clone(), false),
                (TrialState::Assigned | TrialState::Running, _, Some(agent)) => {
                    core.agents
                        .entry(AgentId(agent.clone()))
                        .or_insert_with(|| AgentState::absent(deadline, now.at))
                        .trials
                        .insert(key.clone(), now.at);
                    r.held += 1;
                }
                (TrialState::Assigned | TrialState::Running, _, None) => {
                    warn!(sweep = %key.sweep, trial = %key.trial, "stored as {} on no agent; back to pending", rec.state.name());
                    r.orphans.push(key.clone());
                }
                _ => {
                    r.ended.insert(key, (rec.state, rec.error.clone()));
                    continue;
                }
            }
            core.live.insert(key, rec);
        }
        let succeeded = |k: &TrialKey| matches!(r.ended.get(k), Some((TrialState::Succeeded, _)));
        let mut needed: BTreeSet<TrialKey> = r
            .blocked
            .iter()
            .map(|(dep, _)| dep)
            .filter(|d| succeeded(d))
            .cloned()
            .collect();
        // References later generations of adaptive sweeps will consume.
        for (id, meta) in core.sweeps.iter().filter(|(_, m)| m.running()) {
            for dep in meta
                .search
                .iter()
                .flat_map(|run| run.depends.iter().flatten())
            {
                let dep = TrialKey::new(id.clone(), dep.clone());
                if succeeded(&dep) {
                    needed.insert(dep);
                }
            }
        }
        r.needed = needed.into_iter().collect();
        (core, r)
    }

    /// Finishes recovery with the artifacts read (absent ones missing from
    /// the store): dependents are queued, failed or left waiting; searches
    /// that had not proposed their next generation do; sweeps with nothing
    /// open are done.
    pub fn resume(
        &mut self,
        r: Recovering,
        mut artifacts: HashMap<TrialKey, Vec<u8>>,
        fx: &mut Effects,
    ) {
        for key in &r.needed {
            if let Some(bytes) = artifacts.remove(key) {
                self.artifacts.insert(key.clone(), Arc::new(bytes));
            }
        }
        for key in r.orphans {
            let queue = self.live.get(&key).map(Queue::of);
            self.update(&key, fx, |t| {
                t.state = TrialState::Pending;
                t.device_id = None;
            });
            if let Some(queue) = queue {
                self.enqueue(queue, key, true);
            }
        }
        for (dep, key) in r.blocked {
            match r.ended.get(&dep) {
                Some((TrialState::Succeeded, _)) if self.artifacts.contains_key(&dep) => {
                    if let Some(queue) = self.live.get(&key).map(Queue::of) {
                        self.enqueue(queue, key, false);
                    }
                }
                Some((TrialState::Succeeded, _)) => {
                    let why = format!(
                        "the output of reference trial {} is missing from the store",
                        dep.trial
                    );
                    self.update(&key, fx, |t| {
                        t.state = TrialState::Failed;
                        t.error = Some(why);
                    });
                }
                Some((state, error)) => {
                    let (state, error) = (*state, error.clone());
                    self.end_dependent(&key, &dep, state, error.as_deref(), TrialState::Failed, fx)
                }
                None => self.waiting.entry(dep).or_default().push(key),
            }
        }
        // A search whose last generation finished but had not proposed the
        // next (none is written apart from a finish, but be sure).
        let idle: Vec<(SweepId, String)> = self
            .sweeps
            .iter()
            .filter(|(_, m)| m.running())
            .flat_map(|(id, m)| {
                m.search
                    .iter()
                    .flat_map(|run| run.idle_classes())
                    .map(move |class| (id.clone(), class.clone()))
            })
            .collect();
        for (id, class) in idle {
            self.advance(&id, &class, fx);
        }
        self.settle_all(fx);
    }
}

/// Rebuilds an adaptive sweep's search from its stored spec (the classes and
/// their histories follow from its trials).
fn recover_search(record: &SweepRecord) -> Option<SearchRun> {
    if !record.search.is_adaptive() {
        return None;
    }
    let parsed = match chimera_domain::spec::parse(&record.spec_yaml) {
        Ok(p) => p,
        Err(e) => {
            warn!(sweep = %record.id, error = %e, "stored spec no longer parses; its search proposes nothing more");
            return None;
        }
    };
    let (_, depends) = references(&parsed);
    let mut run = SearchRun::new(&parsed, depends);
    run.subsets = record.class_configs.clone();
    Some(run)
}
