//! The scheduler's decision core: every piece of live scheduling state and
//! the read-only answers about it. Its changes (in `agents`, `trials`,
//! `plan`, `search_run`, `recover`) are synchronous: a command and the
//! injected clock ([`Now`]) in, [`Effects`](super::effects::Effects) out; no
//! network, no store, no sleep.

use super::queue::FairQueue;
use super::records::{Queue, SweepRecord, SweepState};
use super::search_run::SearchRun;
use super::{Gauges, SchedulerConfig};
use crate::error::ApiError;
use crate::store::LeaseId;
use chimera_domain::device::Device;
use chimera_domain::results::{TrialRecord, TrialState};
use chimera_domain::{AgentId, SweepId, TrialKey, TrialRef};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The clock, as the shell reads it once per batch.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// Monotonic time: leases, queue latency.
    pub at: Instant,
    /// Wall time, milliseconds since the Unix epoch: sweep creation, budgets.
    pub unix_ms: i64,
}

impl Now {
    /// The system's clocks.
    pub fn system() -> Now {
        Now {
            at: Instant::now(),
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// `d` later.
    pub fn after(self, d: Duration) -> Now {
        Now {
            at: self.at + d,
            unix_ms: self
                .unix_ms
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

pub(super) struct DeviceSlot {
    pub device: Device,
    /// The attempt this device runs (as the controller believes).
    pub busy: Option<TrialRef>,
}

pub(super) struct AgentState {
    /// The session of its stream; 0: known only from the store (its trials
    /// wait one lease for it to come back).
    pub session: u64,
    /// Its stream is open.
    pub connected: bool,
    pub hostname: String,
    pub version: String,
    pub features: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub devices: Vec<DeviceSlot>,
    /// Non-terminal trials assigned to this agent, with when they were
    /// assigned (or adopted after a reconnect).
    pub trials: HashMap<TrialKey, Instant>,
    pub deadline: Instant,
    pub last_seen: Instant,
    pub lease: LeaseId,
    pub draining: bool,
    /// Who registered it and who drained it (the audit record).
    pub registered_by: String,
    pub drained_by: Option<String>,
}

impl AgentState {
    /// An agent known only from the trials the store says it holds.
    pub fn absent(deadline: Instant, now: Instant) -> Self {
        AgentState {
            session: 0,
            connected: false,
            hostname: String::new(),
            version: String::new(),
            features: vec![],
            labels: BTreeMap::new(),
            devices: vec![],
            trials: HashMap::new(),
            deadline,
            last_seen: now,
            lease: 0,
            draining: false,
            registered_by: String::new(),
            drained_by: None,
        }
    }
}

pub(super) struct SweepMeta {
    pub record: SweepRecord,
    pub counts: HashMap<TrialState, u32>,
    /// The per-class searches of an adaptive sweep.
    pub search: Option<SearchRun>,
}

impl SweepMeta {
    pub fn count(&self, s: TrialState) -> u32 {
        self.counts.get(&s).copied().unwrap_or(0)
    }

    pub fn running(&self) -> bool {
        self.record.state == SweepState::Running
    }

    /// Running, or waiting to start: not ended.
    pub fn active(&self) -> bool {
        matches!(self.record.state, SweepState::Running | SweepState::Waiting)
    }
}

/// A sweep's state and progress, as operators see it.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepSummary {
    pub id: SweepId,
    pub name: String,
    pub workload: String,
    pub state: SweepState,
    pub created_unix_ms: i64,
    pub trials_total: u32,
    pub pending: u32,
    /// Assigned or running.
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
    /// The spec as submitted (only `GetSweep` carries it: it can be large).
    pub spec_yaml: Option<String>,
    pub submitted_by: Option<String>,
    pub cancelled_by: Option<String>,
    pub order_seed: u64,
    pub waiting_for: Option<String>,
}

/// A connected agent, as operators see it.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSummary {
    pub name: AgentId,
    pub hostname: String,
    pub version: String,
    pub devices: Vec<Device>,
    pub features: Vec<String>,
    pub running: Vec<TrialRef>,
    pub last_seen: Duration,
    pub connected: bool,
    pub draining: bool,
    pub labels: BTreeMap<String, String>,
    pub registered_by: String,
    pub drained_by: Option<String>,
}

/// The scheduling state; see the module docs.
pub struct Core {
    pub(super) config: SchedulerConfig,
    pub(super) now: Now,
    pub(super) agents: BTreeMap<AgentId, AgentState>,
    pub(super) sweeps: BTreeMap<SweepId, SweepMeta>,
    /// Trials not yet ended.
    pub(super) live: HashMap<TrialKey, TrialRecord>,
    /// Pending trials by placement queue, each served fairly across sweeps.
    pub(super) queues: HashMap<Queue, FairQueue>,
    /// Free devices by class.
    pub(super) idle: BTreeMap<String, BTreeSet<(AgentId, usize)>>,
    /// Pending trials held back until the trial they depend on succeeds, by
    /// that trial.
    pub(super) waiting: HashMap<TrialKey, Vec<TrialKey>>,
    /// Artifacts of succeeded trials that pending trials still consume.
    pub(super) artifacts: HashMap<TrialKey, Arc<Vec<u8>>>,
    /// When each queued trial entered its queue (assignment latency).
    pub(super) queued_at: HashMap<TrialKey, Instant>,
    pub(super) next_session: u64,
}

impl Core {
    /// An empty core.
    pub fn new(config: SchedulerConfig, now: Now) -> Self {
        Core {
            config,
            now,
            agents: BTreeMap::new(),
            sweeps: BTreeMap::new(),
            live: HashMap::new(),
            queues: HashMap::new(),
            idle: BTreeMap::new(),
            waiting: HashMap::new(),
            artifacts: HashMap::new(),
            queued_at: HashMap::new(),
            next_session: 1,
        }
    }

    /// Sets the clock for the next decisions.
    pub fn set_now(&mut self, now: Now) {
        self.now = now;
    }

    /// The clock the core decides by.
    pub fn now(&self) -> Now {
        self.now
    }

    /// Time the loop spent blocked (a retried commit) does not count against
    /// any agent's lease.
    pub fn extend_leases(&mut self, stalled: Duration) {
        for a in self.agents.values_mut() {
            a.deadline += stalled;
        }
    }

    /// The sweep's state and progress (with its spec text if `with_spec`).
    pub fn sweep(&self, id: &SweepId, with_spec: bool) -> Result<SweepSummary, ApiError> {
        let meta = self
            .sweeps
            .get(id)
            .ok_or_else(|| ApiError::NotFound(format!("sweep `{id}` not found")))?;
        let r = &meta.record;
        Ok(SweepSummary {
            id: id.clone(),
            name: r.name.clone(),
            workload: r.workload.clone(),
            state: r.state,
            created_unix_ms: r.created_unix_ms,
            trials_total: r.trials_total,
            pending: meta.count(TrialState::Pending),
            running: meta.count(TrialState::Assigned) + meta.count(TrialState::Running),
            succeeded: meta.count(TrialState::Succeeded),
            failed: meta.count(TrialState::Failed),
            cancelled: meta.count(TrialState::Cancelled),
            spec_yaml: with_spec.then(|| r.spec_yaml.clone()),
            submitted_by: r.submitted_by.clone(),
            cancelled_by: r.cancelled_by.clone(),
            order_seed: r.order_seed,
            waiting_for: r.waiting_for.clone(),
        })
    }

    /// A page of sweeps, newest first, older than `before` (if given).
    pub fn list_sweeps(&self, before: Option<&SweepId>, limit: usize) -> Vec<SweepSummary> {
        let older = match before {
            Some(b) => self.sweeps.range(..b.clone()),
            None => self.sweeps.range(..),
        };
        older
            .rev()
            .take(limit)
            .filter_map(|(id, _)| self.sweep(id, false).ok())
            .collect()
    }

    /// A page of connected agents by name, after `after` (if given).
    pub fn list_agents(&self, after: Option<&AgentId>, limit: usize) -> Vec<AgentSummary> {
        self.agents
            .iter()
            .filter(|(n, a)| a.session != 0 && after.is_none_or(|x| *n > x))
            .map(|(n, _)| n)
            .take(limit)
            .filter_map(|n| self.agent_summary(n))
            .collect()
    }

    pub(super) fn agent_summary(&self, name: &AgentId) -> Option<AgentSummary> {
        let a = self.agents.get(name)?;
        Some(AgentSummary {
            name: name.clone(),
            hostname: a.hostname.clone(),
            version: a.version.clone(),
            devices: a.devices.iter().map(|d| d.device.clone()).collect(),
            features: a.features.clone(),
            running: a
                .trials
                .keys()
                .filter_map(|k| {
                    self.live.get(k).map(|t| TrialRef {
                        key: k.clone(),
                        attempt: t.attempt,
                    })
                })
                .collect(),
            last_seen: self.now.at.saturating_duration_since(a.last_seen),
            connected: a.connected,
            draining: a.draining,
            labels: a.labels.clone(),
            registered_by: a.registered_by.clone(),
            drained_by: a.drained_by.clone(),
        })
    }

    /// Agents connected and trials by state.
    pub fn gauges(&self) -> Gauges {
        let mut g = Gauges {
            agents_connected: self.agents.values().filter(|a| a.connected).count() as u64,
            ..Gauges::default()
        };
        for meta in self.sweeps.values() {
            let c = |s: TrialState| u64::from(meta.count(s));
            g.trials[0] += c(TrialState::Pending);
            g.trials[1] += c(TrialState::Assigned) + c(TrialState::Running);
            g.trials[2] += c(TrialState::Succeeded);
            g.trials[3] += c(TrialState::Failed);
            g.trials[4] += c(TrialState::Cancelled);
        }
        g
    }

    /// Sweeps and trials not yet ended (for the log).
    pub fn size(&self) -> (usize, usize) {
        (self.sweeps.len(), self.live.len())
    }
}
