//! Agent sessions: hello and reconnect, heartbeats and lease expiry,
//! results (fenced by attempt), drain, and the index of free devices.

use super::core::{AgentState, Core, DeviceSlot};
use super::effects::{Effects, Observation, ToAgent, Write};
use super::records::{checked_size, AgentRecord};
use super::{AgentEvent, Hello};
use crate::error::ApiError;
use crate::metrics::Refusal;
use crate::store::LeaseId;
use chimera_domain::device::Device;
use chimera_domain::results::{TrialOutput, TrialRecord, TrialState};
use chimera_domain::wire::quote;
use chimera_domain::{AgentId, TrialKey, TrialRef};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tracing::{info, warn};

impl Core {
    /// Whether a hello may register: its name is not taken by another live
    /// host (unless a certificate proves it), the fleet is under its cap,
    /// and its record fits the store. `stream_open`: a stream of that name
    /// is open now.
    pub fn admit(&self, hello: &Hello, stream_open: bool, proven: bool) -> Result<(), ApiError> {
        match self.agents.get(&hello.name) {
            // Without a certificate the host name is all that tells a
            // reconnect from an impostor; with one, the name is proven.
            Some(old) if !proven && stream_open && old.hostname != hello.hostname => {
                return Err(ApiError::Conflict(format!(
                    "agent name `{}` is already connected from host {}; agent names must be unique",
                    hello.name,
                    quote(&old.hostname)
                )));
            }
            Some(_) => {}
            None if self.agents.len() >= self.config.limits.max_agents => {
                return Err(ApiError::ResourceExhausted(format!(
                    "{} agents are registered, the limit (--max-agents); agent `{}` is refused",
                    self.agents.len(),
                    hello.name
                )));
            }
            None => {}
        }
        checked_size("the agent's hello", &hello_record(hello, ""))?;
        Ok(())
    }

    /// Registers an admitted agent on a new session holding `lease`: the
    /// answer is its session number and the trial attempts it keeps from
    /// before (what it still runs of what it held; the rest is requeued).
    pub fn connect(
        &mut self,
        hello: Hello,
        lease: LeaseId,
        registered_by: String,
        fx: &mut Effects,
    ) -> (u64, Vec<TrialRef>) {
        let session = self.next_session;
        self.next_session += 1;
        let now = self.now.at;
        let name = hello.name.clone();
        let ttl = self.config.lease_ttl;
        let record = hello_record(&hello, &registered_by);
        let mut state = AgentState {
            session,
            connected: true,
            devices: hello
                .devices
                .into_iter()
                .map(|device| DeviceSlot { device, busy: None })
                .collect(),
            trials: HashMap::new(),
            deadline: now + ttl,
            last_seen: now,
            lease,
            registered_by,
            hostname: hello.hostname,
            version: hello.version,
            features: hello.features,
            labels: hello.labels,
            draining: false,
            drained_by: None,
        };
        fx.sends.push((
            name.clone(),
            session,
            ToAgent::Welcome {
                lease_ttl: ttl,
                heartbeat: (ttl / 4).max(std::time::Duration::from_millis(50)),
            },
        ));
        // Reconcile with what we believed this agent held (a reconnect, or a
        // controller restart): keep what it still runs, requeue the rest.
        let mut requeue = Vec::new();
        if let Some(old) = self.agents.remove(&name) {
            self.unindex(&name, &old);
            if old.lease != 0 && old.lease != lease {
                fx.revokes.push(old.lease);
            }
            for key in old.trials.into_keys() {
                let held = self.live.get(&key).and_then(|rec| {
                    hello
                        .running
                        .iter()
                        .find(|r| r.key == key && r.attempt == rec.attempt)
                        .map(|r| (rec.device_id.clone(), r.clone()))
                });
                match held {
                    Some((device_id, r)) => {
                        if let Some(slot) = state
                            .devices
                            .iter_mut()
                            .find(|d| Some(&d.device.id) == device_id.as_ref())
                        {
                            slot.busy = Some(r);
                        }
                        state.trials.insert(key, now);
                    }
                    None => requeue.push(key),
                }
            }
        }
        for r in &hello.running {
            if !state.trials.contains_key(&r.key) {
                // Not current (stale attempt, cancelled, or unknown): tell it to stop.
                fx.sends
                    .push((name.clone(), session, ToAgent::Cancel(r.clone())));
            }
        }
        fx.writes.push(Write::Agent { record, lease });
        let kept: Vec<TrialRef> = hello
            .running
            .into_iter()
            .filter(|r| state.trials.contains_key(&r.key))
            .collect();
        info!(agent = %name, session, devices = state.devices.len(), kept = state.trials.len(), requeued = requeue.len(), "agent connected");
        self.agents.insert(name.clone(), state);
        for key in requeue {
            self.requeue(&key, "agent reconnected without it", fx);
        }
        self.reindex_agent(&name);
        // Sweeps submitted before a device of theirs joined may start now.
        self.start_waiting(fx);
        (session, kept)
    }

    /// A message on session `session` of an agent (ignored if that session
    /// was replaced): renews its lease and applies the event.
    pub fn agent_event(
        &mut self,
        name: &AgentId,
        session: u64,
        event: AgentEvent,
        fx: &mut Effects,
    ) {
        let Some(agent) = self.agents.get_mut(name) else {
            return;
        };
        if agent.session != session {
            return; // an old stream of a reconnected agent
        }
        let now = self.now.at;
        agent.last_seen = now;
        agent.deadline = now + self.config.lease_ttl;
        fx.keepalives.push(agent.lease);
        match event {
            AgentEvent::Heartbeat(running) => self.reconcile(name, &running, fx),
            AgentEvent::Started(r) => {
                if self.is_current(name, &r) {
                    self.update(&r.key, fx, |t| t.state = TrialState::Running);
                } else {
                    fx.sends.push((name.clone(), session, ToAgent::Cancel(r)));
                }
            }
            AgentEvent::Finished { trial, output } => {
                let TrialOutput {
                    metrics,
                    fingerprint,
                    wall_ms,
                    detail,
                    artifact,
                } = *output;
                // The record as it would be stored, measured before anything
                // changes: one over the store's limit fails the trial with
                // the reason instead (a failed commit would stop the scheduler).
                let success = self.live.get(&trial.key).map(|rec| TrialRecord {
                    state: TrialState::Succeeded,
                    metrics,
                    fingerprint: Some(fingerprint),
                    wall_ms: Some(wall_ms),
                    detail,
                    error: None,
                    ..rec.clone()
                });
                let checked = success
                    .as_ref()
                    .map(|t| checked_size("the trial's result", t));
                if let (true, Some(Err(e))) = (self.is_current(name, &trial), checked) {
                    fx.observations
                        .push(Observation::Refused(Refusal::TooLarge));
                    let why = e.to_string();
                    warn!(agent = %name, trial = %trial.key.trial, "{why}");
                    let accepted = self.finish(name, &trial, fx, |t| {
                        t.state = TrialState::Failed;
                        t.error = Some(why.clone());
                    });
                    self.ack(name, session, &trial, accepted.and(Err(why)), fx);
                    return;
                }
                if self.is_current(name, &trial) && !artifact.is_empty() {
                    // Durable in the same commit as the success it belongs to.
                    let bytes = Arc::new(artifact);
                    fx.writes.push(Write::Artifact {
                        sweep: trial.key.sweep.clone(),
                        trial: trial.key.trial.0.clone(),
                        bytes: bytes.clone(),
                    });
                    self.artifacts.insert(trial.key.clone(), bytes);
                }
                let accepted = self.finish(name, &trial, fx, |t| {
                    if let Some(s) = success {
                        *t = s;
                    }
                });
                self.ack(name, session, &trial, accepted, fx);
            }
            AgentEvent::Failed { trial, reason } => {
                let accepted = self.finish(name, &trial, fx, |t| {
                    t.state = TrialState::Failed;
                    t.error = Some(reason);
                });
                self.ack(name, session, &trial, accepted, fx);
            }
        }
    }

    /// Compares what the agent says it runs with what it should run: a trial
    /// assigned more than one TTL ago that the agent does not report never
    /// reached it (or was lost there), so it goes back to pending.
    fn reconcile(&mut self, name: &AgentId, running: &[TrialRef], fx: &mut Effects) {
        let Some(agent) = self.agents.get(name) else {
            return;
        };
        let (ttl, now) = (self.config.lease_ttl, self.now.at);
        let lost: Vec<TrialKey> = agent
            .trials
            .iter()
            .filter(|(key, since)| {
                now.saturating_duration_since(**since) > ttl
                    && !running.iter().any(|r| &r.key == *key)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in lost {
            if let Some(attempt) = self.live.get(&key).map(|t| t.attempt) {
                let r = TrialRef {
                    key: key.clone(),
                    attempt,
                };
                self.release_device(name, &r);
            }
            self.requeue(&key, "agent does not report it running", fx);
        }
    }

    fn ack(
        &self,
        name: &AgentId,
        session: u64,
        r: &TrialRef,
        outcome: Result<(), String>,
        fx: &mut Effects,
    ) {
        let trial = r.clone();
        fx.sends
            .push((name.clone(), session, ToAgent::Ack { trial, outcome }));
    }

    pub(super) fn is_current(&self, agent: &AgentId, r: &TrialRef) -> bool {
        self.live.get(&r.key).is_some_and(|t| {
            t.attempt == r.attempt
                && t.agent.as_deref() == Some(agent.as_str())
                && matches!(t.state, TrialState::Assigned | TrialState::Running)
        })
    }

    /// Records a trial's outcome if `r` is its current attempt on this agent;
    /// frees the device either way.
    fn finish(
        &mut self,
        agent: &AgentId,
        r: &TrialRef,
        fx: &mut Effects,
        apply: impl FnOnce(&mut TrialRecord),
    ) -> Result<(), String> {
        let current = self.is_current(agent, r);
        self.release_device(agent, r);
        if current {
            self.update(&r.key, fx, apply);
            return Ok(());
        }
        let (refusal, why) = match self.live.get(&r.key) {
            Some(t) if t.agent.as_deref() != Some(agent.as_str()) => (
                Refusal::OtherAgent,
                format!(
                    "trial {} of sweep {} is not assigned to agent {agent}: refused",
                    r.key.trial, r.key.sweep
                ),
            ),
            Some(t) => (
                Refusal::StaleAttempt,
                format!(
                    "stale result: trial {} is at attempt {} on agent {}, this was attempt {}",
                    r.key.trial,
                    t.attempt,
                    t.agent.as_deref().unwrap_or("-"),
                    r.attempt
                ),
            ),
            None => (
                Refusal::NotRunning,
                format!(
                    "trial {} of sweep {} is not running (finished, cancelled or unknown)",
                    r.key.trial, r.key.sweep
                ),
            ),
        };
        fx.observations.push(Observation::Refused(refusal));
        warn!(agent = %agent, trial = %r.key.trial, attempt = r.attempt, "{why}");
        Err(why)
    }

    /// Frees the device running exactly this attempt (a stale report for an
    /// older attempt never frees a device running a newer one).
    pub(super) fn release_device(&mut self, agent: &AgentId, r: &TrialRef) {
        let newer = self
            .live
            .get(&r.key)
            .is_some_and(|t| t.agent.as_deref() == Some(agent.as_str()) && t.attempt != r.attempt);
        let Some(a) = self.agents.get_mut(agent) else {
            return;
        };
        if !newer {
            a.trials.remove(&r.key);
        }
        for d in &mut a.devices {
            if d.busy.as_ref() == Some(r) {
                d.busy = None;
            }
        }
        self.reindex_agent(agent);
    }

    /// An agent's stream `session` ended: its devices take no new trials;
    /// its trials wait for its lease to expire (or for it to come back).
    pub fn gone(&mut self, name: &AgentId, session: u64) {
        let Some(agent) = self.agents.get_mut(name) else {
            return;
        };
        if agent.session != session {
            return;
        }
        agent.connected = false;
        info!(agent = %name, "agent stream closed; its trials wait for the lease to expire");
        self.reindex_agent(name);
    }

    /// Agents whose lease ran out lose their registration and their trials.
    pub(super) fn expire_agents(&mut self, fx: &mut Effects) {
        let now = self.now.at;
        let expired: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(_, a)| a.deadline <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in expired {
            let Some(agent) = self.agents.remove(&name) else {
                continue;
            };
            self.unindex(&name, &agent);
            if agent.lease != 0 {
                fx.revokes.push(agent.lease);
            }
            if agent.session != 0 {
                fx.closed.push((name.clone(), agent.session));
            }
            warn!(agent = %name, trials = agent.trials.len(), "agent lease expired");
            for key in agent.trials.into_keys() {
                self.requeue(&key, "agent lease expired", fx);
            }
        }
    }

    /// The agent takes no new trials; those it runs finish.
    pub fn drain(
        &mut self,
        name: &AgentId,
        by: String,
        fx: &mut Effects,
    ) -> Result<super::core::AgentSummary, ApiError> {
        let agent = self
            .agents
            .get_mut(name)
            .filter(|a| a.session != 0)
            .ok_or_else(|| ApiError::NotFound(format!("agent `{name}` is not connected")))?;
        agent.draining = true;
        agent.drained_by = Some(by);
        // The audit record, on the agent's registration (and its lease).
        let record = AgentRecord {
            drained_by: agent.drained_by.clone(),
            ..agent_record(
                name,
                &agent.hostname,
                &agent.version,
                &agent.labels,
                agent.devices.iter().map(|d| &d.device),
                &agent.registered_by,
            )
        };
        fx.writes.push(Write::Agent {
            record,
            lease: agent.lease,
        });
        if agent.connected {
            fx.sends.push((name.clone(), agent.session, ToAgent::Drain));
        }
        self.reindex_agent(name);
        self.agent_summary(name)
            .ok_or_else(|| ApiError::NotFound(format!("agent `{name}` is not connected")))
    }

    // ---- the free-device index ----------------------------------------------

    pub(super) fn unindex(&mut self, name: &AgentId, agent: &AgentState) {
        for (i, d) in agent.devices.iter().enumerate() {
            if let Some(set) = self.idle.get_mut(&d.device.class) {
                set.remove(&(name.clone(), i));
            }
        }
    }

    /// Puts each device of the agent in or out of the free index.
    pub(super) fn reindex_agent(&mut self, name: &AgentId) {
        let Some(agent) = self.agents.get(name) else {
            return;
        };
        let usable = agent.connected && !agent.draining;
        for (i, d) in agent.devices.iter().enumerate() {
            let set = self.idle.entry(d.device.class.clone()).or_default();
            if usable && d.busy.is_none() && d.device.usable() {
                set.insert((name.clone(), i));
            } else {
                set.remove(&(name.clone(), i));
            }
        }
    }
}

/// The registration a hello stores.
fn hello_record(hello: &Hello, registered_by: &str) -> AgentRecord {
    agent_record(
        &hello.name,
        &hello.hostname,
        &hello.version,
        &hello.labels,
        hello.devices.iter(),
        registered_by,
    )
}

/// An agent's registration as stored, not drained.
fn agent_record<'a>(
    name: &AgentId,
    hostname: &str,
    version: &str,
    labels: &BTreeMap<String, String>,
    devices: impl Iterator<Item = &'a Device>,
    registered_by: &str,
) -> AgentRecord {
    AgentRecord {
        name: name.0.clone(),
        hostname: hostname.to_owned(),
        version: version.to_owned(),
        labels: labels.clone(),
        device_classes: devices.map(|d| d.class.clone()).collect(),
        registered_by: registered_by.to_owned(),
        drained_by: None,
    }
}
