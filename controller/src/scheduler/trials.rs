//! Trial life cycle: every change of a live trial (with counts, store and
//! watchers kept in step), queues and dependencies, assignment of pending
//! trials to free devices, requeueing lost attempts, and budget deadlines.

use super::core::Core;
use super::effects::{Assignment, Effects, Observation, SweepEvent, ToAgent, Write};
use super::queue::Look;
use super::records::{pin_of, Queue, SweepState};
use chimera_domain::results::{TrialRecord, TrialState};
use chimera_domain::{AgentId, SweepId, TrialId, TrialKey, TrialRef};
use std::sync::Arc;
use tracing::{debug, info};

/// How far down a queue a free device looks for a trial it can run.
const LOOKAHEAD: usize = 64;

impl Core {
    /// What the periodic tick decides: expired leases, then sweep deadlines.
    pub fn tick(&mut self, fx: &mut Effects) {
        self.expire_agents(fx);
        self.enforce_deadlines(fx);
    }

    /// Applies a change to a live trial, keeping counts, store and watchers in step.
    pub(super) fn update(
        &mut self,
        key: &TrialKey,
        fx: &mut Effects,
        apply: impl FnOnce(&mut TrialRecord),
    ) {
        let Some(rec) = self.live.get_mut(key) else {
            return;
        };
        let before = rec.state;
        apply(rec);
        let after = rec.state;
        let rec = rec.clone();
        if after.is_terminal() {
            self.live.remove(key);
            self.queued_at.remove(key);
        }
        if after.is_terminal() && before != after {
            self.release_dependents(key, &rec, fx);
        }
        fx.writes.push(Write::Trial(rec.clone()));
        if let Some(meta) = self.sweeps.get_mut(&key.sweep) {
            if before != after {
                if let Some(c) = meta.counts.get_mut(&before) {
                    *c = c.saturating_sub(1);
                }
                *meta.counts.entry(after).or_default() += 1;
            }
        }
        if after.is_terminal() && !before.is_terminal() {
            self.observe(key, &rec, fx);
        }
        self.settle(&key.sweep, fx);
        if let Ok(sweep) = self.sweep(&key.sweep, false) {
            fx.events.push(SweepEvent {
                sweep,
                trial: Some(rec),
            });
        }
    }

    /// Marks a running sweep done once no trial of it is open and no search
    /// of it will propose more.
    pub(super) fn settle(&mut self, id: &SweepId, fx: &mut Effects) {
        let Some(meta) = self.sweeps.get_mut(id) else {
            return;
        };
        let open = meta.count(TrialState::Pending)
            + meta.count(TrialState::Assigned)
            + meta.count(TrialState::Running);
        if open == 0 && meta.running() {
            meta.record.state = SweepState::Done;
            self.artifacts.retain(|k, _| &k.sweep != id);
            fx.writes.push(Write::Sweep(meta.record.clone()));
            info!(sweep = %meta.record.id, "sweep done");
        }
    }

    pub(super) fn settle_all(&mut self, fx: &mut Effects) {
        let ids: Vec<SweepId> = self.sweeps.keys().cloned().collect();
        for id in ids {
            self.settle(&id, fx);
        }
    }

    /// Stores a new pending trial and queues it (or holds it for the trial it
    /// depends on).
    pub(super) fn add_trial(&mut self, id: &SweepId, rec: TrialRecord, fx: &mut Effects) {
        fx.writes.push(Write::Trial(rec.clone()));
        let key = TrialKey::new(id.clone(), rec.id.clone());
        let dep = rec
            .depends_on
            .as_ref()
            .map(|d| TrialKey::new(id.clone(), d.clone()));
        let queue = Queue::of(&rec);
        self.live.insert(key.clone(), rec);
        match dep {
            // The dependency is still open: wait for it.
            Some(dep) if self.live.contains_key(&dep) => {
                self.waiting.entry(dep).or_default().push(key)
            }
            // It succeeded earlier (its artifact is kept while the sweep runs).
            Some(dep) if self.artifacts.contains_key(&dep) => self.enqueue(queue, key, false),
            Some(dep) => {
                let why = format!("reference trial {} did not succeed", dep.trial);
                self.update(&key, fx, |t| {
                    t.state = TrialState::Failed;
                    t.error = Some(why);
                });
            }
            None => self.enqueue(queue, key, false),
        }
    }

    /// Ends sweeps past `budget.max_duration`: their pending trials are
    /// cancelled and their searches propose nothing more; running trials finish.
    fn enforce_deadlines(&mut self, fx: &mut Effects) {
        let now = self.now.unix_ms;
        let mut expired = Vec::new();
        for (id, meta) in &mut self.sweeps {
            let Some(secs) = meta.record.budget.max_duration_s else {
                continue;
            };
            let end = meta
                .record
                .created_unix_ms
                .saturating_add(i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000));
            if !meta.running() || now < end {
                continue;
            }
            if let Some(run) = &mut meta.search {
                run.close();
            }
            expired.push((id.clone(), secs));
        }
        for (id, secs) in expired {
            let mut pending: Vec<TrialKey> = self
                .live
                .iter()
                .filter(|(k, t)| k.sweep == id && t.state == TrialState::Pending)
                .map(|(k, _)| k.clone())
                .collect();
            pending.sort();
            if pending.is_empty() {
                continue;
            }
            info!(sweep = %id, cancelled = pending.len(), "budget.max_duration reached: pending trials cancelled");
            for key in pending {
                self.update(&key, fx, |t| {
                    t.state = TrialState::Cancelled;
                    t.error = Some(format!(
                        "budget.max_duration ({secs} s) ran out before the trial started"
                    ));
                });
            }
        }
    }

    /// A trial reached a terminal state: the trials waiting for it are queued
    /// (it succeeded) or end with the reason (it did not).
    fn release_dependents(&mut self, key: &TrialKey, rec: &TrialRecord, fx: &mut Effects) {
        let Some(dependents) = self.waiting.remove(key) else {
            return;
        };
        for d in dependents {
            if rec.state == TrialState::Succeeded {
                if let Some(queue) = self.live.get(&d).map(Queue::of) {
                    self.enqueue(queue, d, false);
                }
            } else {
                let state = if rec.state == TrialState::Cancelled {
                    TrialState::Cancelled
                } else {
                    TrialState::Failed
                };
                self.end_dependent(&d, key, rec.state, rec.error.as_deref(), state, fx);
            }
        }
    }

    /// Ends a dependent trial because the trial it depends on ended `dep_state`.
    pub(super) fn end_dependent(
        &mut self,
        key: &TrialKey,
        dep: &TrialKey,
        dep_state: TrialState,
        dep_error: Option<&str>,
        state: TrialState,
        fx: &mut Effects,
    ) {
        let why = format!(
            "the trial it depends on ({}) ended {}{}",
            dep.trial,
            dep_state.name(),
            dep_error.map(|e| format!(": {e}")).unwrap_or_default()
        );
        self.update(key, fx, |t| {
            t.state = state;
            t.error = Some(why);
        });
    }

    /// An assigned or running trial goes back to pending, at the front of
    /// its queue (its agent was lost or did not run it).
    pub(super) fn requeue(&mut self, key: &TrialKey, why: &str, fx: &mut Effects) {
        let Some(rec) = self.live.get(key) else {
            return;
        };
        if !matches!(rec.state, TrialState::Assigned | TrialState::Running) {
            return;
        }
        info!(sweep = %key.sweep, trial = %key.trial, attempt = rec.attempt, "{why}: trial back to pending");
        let queue = Queue::of(rec);
        self.update(key, fx, |t| {
            t.state = TrialState::Pending;
            t.agent = None;
            t.device_id = None;
        });
        self.enqueue(queue, key.clone(), true);
    }

    /// Puts a pending trial in its queue (at the front when it goes back
    /// after a lost attempt).
    pub(super) fn enqueue(&mut self, queue: Queue, key: TrialKey, front: bool) {
        self.queued_at.insert(key.clone(), self.now.at);
        self.queues.entry(queue).or_default().push(key, front);
    }

    fn assign(&mut self, key: &TrialKey, agent: &AgentId, slot: usize, fx: &mut Effects) {
        let Some(meta) = self.sweeps.get(&key.sweep) else {
            return;
        };
        let Some(rec) = self.live.get(key) else {
            return;
        };
        let harness = match &meta.search {
            Some(run) => run.search.harness(meta.record.harness, rec.rung),
            None => meta.record.harness,
        };
        let (workload, trace) = (meta.record.workload.clone(), meta.record.trace.clone());
        let attempt = rec.attempt + 1;
        // The output of the trial it depends on: kept while the sweep runs,
        // so a dependent is only ever queued with it. If it is gone anyway,
        // the trial fails with why rather than run on empty input.
        let input = match &rec.depends_on {
            None => Arc::new(Vec::new()),
            Some(d) => match self
                .artifacts
                .get(&TrialKey::new(key.sweep.clone(), d.clone()))
            {
                Some(bytes) => bytes.clone(),
                None => {
                    let why = format!("the output of reference trial {d} is not available");
                    self.update(key, fx, |t| {
                        t.state = TrialState::Failed;
                        t.error = Some(why);
                    });
                    return;
                }
            },
        };
        let Some(a) = self.agents.get_mut(agent) else {
            return;
        };
        let session = a.session;
        let (true, Some(d)) = (a.connected, a.devices.get_mut(slot)) else {
            return;
        };
        let trial = TrialRef {
            key: key.clone(),
            attempt,
        };
        d.busy = Some(trial.clone());
        let device_id = d.device.id.clone();
        a.trials.insert(key.clone(), self.now.at);
        let unix_ms = self.now.unix_ms;
        if let Some(since) = self.queued_at.remove(key) {
            fx.observations.push(Observation::AssignmentLatency(
                self.now.at.saturating_duration_since(since),
            ));
        }
        self.update(key, fx, |t| {
            t.state = TrialState::Assigned;
            t.attempt = attempt;
            t.agent = Some(agent.0.clone());
            t.device_id = Some(device_id.clone());
            t.error = None;
            t.assigned_unix_ms = Some(unix_ms);
        });
        let Some(rec) = self.live.get(key) else {
            return;
        };
        debug!(sweep = %key.sweep, trial = %key.trial, attempt, agent = %agent, "assigned");
        fx.sends.push((
            agent.clone(),
            session,
            ToAgent::Assign(Box::new(Assignment {
                trial,
                device_id,
                workload,
                params: rec.params.clone(),
                harness,
                input,
                trace,
            })),
        ));
        self.reindex_agent(agent);
    }

    fn device_fits(&self, agent: &AgentId, slot: usize, key: &TrialKey) -> bool {
        let (Some(a), Some(meta), Some(rec)) = (
            self.agents.get(agent),
            self.sweeps.get(&key.sweep),
            self.live.get(key),
        ) else {
            return false;
        };
        let Some(d) = a.devices.get(slot) else {
            return false;
        };
        if let Some(pin) = &rec.pinned {
            if *pin != pin_of(&agent.0, &d.device.id) {
                return false;
            }
        }
        let capability = chimera_domain::catalog::capability(&meta.record.workload, &rec.params);
        d.device.capabilities.contains(&capability)
            && (Queue::of(rec) != Queue::Any
                || meta
                    .record
                    .target
                    .matches(&d.device.view(&agent.0, &a.hostname, &a.labels)))
    }

    /// Matches pending trials with free devices: per queue, pop and assign.
    pub fn dispatch(&mut self, fx: &mut Effects) {
        let mut queues: Vec<Queue> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(c, _)| c.clone())
            .collect();
        // A stable order, so a batch decides the same on every run.
        queues.sort();
        for queue in queues {
            let candidates: Vec<(AgentId, usize)> = match &queue {
                Queue::Any => self.idle.values().flatten().cloned().collect(),
                // One device: the only candidate, when it is free.
                Queue::Pinned(pin) => self
                    .idle
                    .values()
                    .flatten()
                    .filter(|(name, slot)| {
                        self.agents
                            .get(name)
                            .and_then(|a| a.devices.get(*slot))
                            .is_some_and(|d| pin_of(&name.0, &d.device.id) == *pin)
                    })
                    .cloned()
                    .collect(),
                Queue::Class(class) => self
                    .idle
                    .get(class)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default(),
            };
            for (agent, slot) in candidates {
                // A device may have been taken by an earlier queue in this pass.
                let still_free = self
                    .agents
                    .get(&agent)
                    .and_then(|a| a.devices.get(slot))
                    .is_some_and(|d| d.busy.is_none());
                if !still_free {
                    continue;
                }
                let Some(key) = self.pop_for(&queue, &agent, slot) else {
                    if self.queues.get(&queue).is_none_or(|q| q.is_empty()) {
                        break;
                    }
                    continue;
                };
                self.assign(&key, &agent, slot, fx);
            }
        }
    }

    /// The next pending trial of `queue` this device can run: the queue's
    /// sweeps in turn, each looked a bounded way down; entries no longer
    /// pending are dropped on the way.
    fn pop_for(&mut self, queue: &Queue, agent: &AgentId, slot: usize) -> Option<TrialKey> {
        let mut q = self.queues.remove(queue)?;
        let taken = q.pop(LOOKAHEAD, |key| {
            let pending = self
                .live
                .get(key)
                .is_some_and(|t| t.state == TrialState::Pending);
            if !pending {
                Look::Drop
            } else if self.device_fits(agent, slot, key) {
                Look::Take
            } else {
                Look::Skip
            }
        });
        if !q.is_empty() {
            self.queues.insert(queue.clone(), q);
        }
        taken
    }

    /// A trial's key from its record.
    pub(super) fn key_of(rec: &TrialRecord) -> TrialKey {
        TrialKey {
            sweep: SweepId(rec.sweep_id.clone()),
            trial: TrialId(rec.id.clone()),
        }
    }
}
