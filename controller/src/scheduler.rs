//! The scheduler: one task that owns all live state (agents, devices, queues,
//! non-terminal trials, sweep progress) and is fed commands over a bounded channel.
//!
//! Architecture invariants:
//! - Only this loop mutates scheduling state; services talk to it by [`Command`].
//! - Commands are handled in batches: every change a batch makes goes to the store
//!   in **one** transaction (group commit), and only after that commit are agents
//!   messaged, callers answered and watchers told. Nothing is acknowledged before
//!   it is durable; a store write that fails stops the controller (it recovers
//!   from the store on restart) rather than let memory and store disagree.
//! - No scan of the store per assignment: pending trials wait in a FIFO per device
//!   class, free devices sit in an index per class; assignment is a pop from each.
//! - An attempt number fences every trial: a report for any attempt but the
//!   current one, or from another agent, is refused.

use crate::error::ApiError;
use crate::keys;
use crate::store::{LeaseId, Op, Store, StoreError, Txn, TxnResult};
use chimera_domain::catalog::Workload;
use chimera_domain::device::DeviceView;
use chimera_domain::models::EvalTrial;
use chimera_domain::params::{params_to_proto, Params};
use chimera_domain::results::{Fingerprint, TrialRecord, TrialState};
use chimera_domain::search::{Budget, Observed, Proposal, Search};
use chimera_domain::spec::{find_line, Harness, ParsedSweep, Placement, SpecError, Target};
use chimera_domain::{AgentId, SweepId, TrialId};
use chimera_proto::v1 as proto;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Queue name of trials that may run on any matching device (placement `any`).
const ANY: &str = "*";
/// Most commands handled (and committed) together.
const MAX_BATCH: usize = 512;

/// A trial's identity: its sweep and its id within the sweep.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrialKey {
    pub sweep: SweepId,
    pub trial: TrialId,
}

/// One attempt of one trial, as an agent names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TrialRef {
    pub key: TrialKey,
    pub attempt: u32,
}

impl TrialRef {
    fn to_proto(&self) -> proto::TrialRef {
        proto::TrialRef {
            sweep_id: self.key.sweep.0.clone(),
            trial_id: self.key.trial.0.clone(),
            attempt: self.attempt,
        }
    }
}

/// A validated `hello`.
#[derive(Clone, Debug)]
pub struct Hello {
    pub name: AgentId,
    pub version: String,
    pub hostname: String,
    pub devices: Vec<proto::Device>,
    pub features: Vec<String>,
    pub running: Vec<TrialRef>,
    pub labels: BTreeMap<String, String>,
}

/// What an agent reported on its stream.
#[derive(Clone, Debug)]
pub enum AgentEvent {
    /// Lease renewal, with the trials the agent runs (or has queued) now.
    Heartbeat(Vec<TrialRef>),
    Started(TrialRef),
    Finished {
        trial: TrialRef,
        metrics: BTreeMap<String, f64>,
        fingerprint: Box<Fingerprint>,
        wall_ms: f64,
        detail: Option<serde_json::Value>,
        /// Bytes later trials of the sweep consume; empty for most trials.
        artifact: Vec<u8>,
    },
    Failed {
        trial: TrialRef,
        reason: String,
    },
}

type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// A request to the scheduler.
pub enum Command {
    /// An agent opened a stream; the reply is its session number and the
    /// trial attempts it keeps from before (its hello's `running`).
    Hello {
        hello: Hello,
        tx: mpsc::Sender<proto::ControllerMessage>,
        /// A client certificate proved the agent's name: a session already
        /// open under it (from any host) is replaced.
        proven: bool,
        /// Who registered it, for the audit record.
        registered_by: String,
        reply: Reply<(u64, Vec<TrialRef>)>,
    },
    /// An agent sent a message on session `session`.
    Agent {
        agent: AgentId,
        session: u64,
        event: AgentEvent,
    },
    /// An agent's stream ended.
    Gone { agent: AgentId, session: u64 },
    /// Store and schedule a parsed sweep.
    Submit {
        parsed: Box<ParsedSweep>,
        source: String,
        /// W3C trace context of the submission (empty when not traced).
        trace: BTreeMap<String, String>,
        /// Who submitted it (the audit record).
        by: String,
        reply: Reply<(SweepId, u32)>,
    },
    Cancel {
        sweep: SweepId,
        /// Who cancelled it (the audit record).
        by: String,
        reply: Reply<proto::Sweep>,
    },
    GetSweep {
        sweep: SweepId,
        reply: Reply<proto::Sweep>,
    },
    /// A page of sweeps, newest first, older than `before` (if given).
    ListSweeps {
        before: Option<SweepId>,
        limit: usize,
        reply: oneshot::Sender<Vec<proto::Sweep>>,
    },
    /// A page of connected agents by name, after `after` (if given).
    ListAgents {
        after: Option<AgentId>,
        limit: usize,
        reply: oneshot::Sender<Vec<proto::Agent>>,
    },
    /// Answers at once: the loop is alive (the systemd watchdog asks).
    Ping { reply: oneshot::Sender<()> },
    /// Agents connected and trials by state (for the metrics endpoint).
    Gauges { reply: oneshot::Sender<Gauges> },
    Drain {
        agent: AgentId,
        /// Who drained it (the audit record).
        by: String,
        reply: Reply<proto::Agent>,
    },
}

/// What the metrics endpoint shows of the scheduler's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Agents whose stream is open.
    pub agents_connected: u64,
    /// Trials of every sweep: pending, assigned or running, succeeded,
    /// failed, cancelled.
    pub trials: [u64; 5],
}

/// A sweep as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepRecord {
    pub id: String,
    pub name: String,
    pub workload: String,
    pub spec_yaml: String,
    pub created_unix_ms: i64,
    /// `running`, `done` or `cancelled`.
    pub state: String,
    pub trials_total: u32,
    pub harness: Harness,
    pub placement: Placement,
    pub target: Target,
    /// How configurations are chosen (adaptive searches add trials as
    /// results arrive, so `trials_total` grows).
    #[serde(default)]
    pub search: Search,
    /// Limits on trials per class and on time.
    #[serde(default)]
    pub budget: Budget,
    /// The configurations each class may run, when variants say which
    /// devices they are for (`when`); absent: every configuration.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub class_configs: BTreeMap<String, Vec<u32>>,
    /// W3C trace context of the submission: every trial's assignment is a
    /// span of that trace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trace: BTreeMap<String, String>,
    /// Who submitted it (`token:ci`, `cert:operator/alice`, `anonymous`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
    /// Who cancelled it, if someone did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
}

/// An agent's registration as stored (attached to its lease).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct AgentRecord {
    name: String,
    hostname: String,
    version: String,
    device_classes: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    /// Who registered it (`cert:agent/NAME`, `anonymous`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    registered_by: String,
    /// Who drained it, if someone did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    drained_by: Option<String>,
}

struct SweepMeta {
    record: SweepRecord,
    counts: HashMap<TrialState, u32>,
    /// The per-class searches of an adaptive sweep.
    search: Option<SearchRun>,
}

/// An adaptive sweep's searches: the space, and per device class what has
/// been proposed and learnt. Derived from the spec and the trials alone, so
/// recovery rebuilds it from the store.
struct SearchRun {
    search: Search,
    configs: Vec<Params>,
    /// The reference trial each configuration's trials consume (eval).
    depends: Vec<Option<String>>,
    repeats: u32,
    max_trials: Option<u32>,
    classes: BTreeMap<String, ClassSearch>,
    /// The configurations a class may run (conditional variants); absent: all.
    subsets: BTreeMap<String, Vec<u32>>,
}

#[derive(Default)]
struct ClassSearch {
    /// Finished trials, as the search sees them.
    history: Vec<Observed>,
    /// Trials created for the class.
    created: u32,
    /// Of those, not yet finished.
    open: u32,
    /// The search of this class proposes nothing more.
    over: bool,
}

impl SearchRun {
    fn new(parsed: &ParsedSweep, depends: Vec<Option<String>>) -> Self {
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
    fn propose(&mut self, class: &str) -> Vec<Proposal> {
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
}

struct DeviceSlot {
    device: proto::Device,
    /// The attempt this device runs (as the controller believes).
    busy: Option<TrialRef>,
}

struct AgentState {
    session: u64,
    tx: Option<mpsc::Sender<proto::ControllerMessage>>,
    hostname: String,
    version: String,
    features: Vec<String>,
    labels: BTreeMap<String, String>,
    devices: Vec<DeviceSlot>,
    /// Non-terminal trials assigned to this agent, with when they were
    /// assigned (or adopted after a reconnect).
    trials: HashMap<TrialKey, Instant>,
    deadline: Instant,
    last_seen: Instant,
    lease: LeaseId,
    draining: bool,
    /// Who registered it and who drained it (the audit record).
    registered_by: String,
    drained_by: Option<String>,
}

/// Everything a batch does, applied after its store commit.
#[derive(Default)]
struct Effects {
    ops: Vec<Op>,
    sends: Vec<(
        mpsc::Sender<proto::ControllerMessage>,
        proto::ControllerMessage,
    )>,
    events: Vec<proto::SweepEvent>,
    replies: Vec<Box<dyn FnOnce() + Send>>,
    keepalives: Vec<LeaseId>,
    revokes: Vec<LeaseId>,
}

impl Effects {
    fn reply<T: Send + 'static>(&mut self, tx: oneshot::Sender<T>, value: T) {
        self.replies.push(Box::new(move || {
            let _ = tx.send(value);
        }));
    }
}

/// How long one try of a retried commit may take (see
/// [`SchedulerConfig::store_retry`]).
const COMMIT_TRY: Duration = Duration::from_secs(3);

/// Scheduler settings.
#[derive(Clone, Copy, Debug)]
pub struct SchedulerConfig {
    /// Caps on trials per sweep, running sweeps and agents.
    pub limits: crate::Limits,
    /// An agent silent this long loses its lease and its trials.
    pub lease_ttl: Duration,
    /// How long a commit that the store could not take (a backend error:
    /// etcd unreachable, a member lost, an election under way) is retried
    /// before the scheduler gives up and stops. Zero: never retried (the
    /// embedded store, whose errors are disk errors). A retry is safe: the
    /// scheduler's writes are unconditional puts and deletes (only the
    /// leadership guard is compared), so applying a batch twice leaves what
    /// applying it once does, and nothing is acknowledged before it commits.
    pub store_retry: Duration,
}

/// The scheduler's state; see the module docs.
pub struct Scheduler {
    store: Arc<dyn Store>,
    config: SchedulerConfig,
    agents: HashMap<AgentId, AgentState>,
    sweeps: BTreeMap<SweepId, SweepMeta>,
    live: HashMap<TrialKey, TrialRecord>,
    queues: HashMap<String, VecDeque<TrialKey>>,
    idle: HashMap<String, BTreeSet<(AgentId, usize)>>,
    /// Pending trials held back until the trial they depend on succeeds, by
    /// that trial.
    waiting: HashMap<TrialKey, Vec<TrialKey>>,
    /// Artifacts of succeeded trials that pending trials still consume.
    artifacts: HashMap<TrialKey, Arc<Vec<u8>>>,
    /// When each queued trial entered its queue (assignment latency).
    queued_at: HashMap<TrialKey, Instant>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    events: broadcast::Sender<proto::SweepEvent>,
    next_session: u64,
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing our own plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Largest record the scheduler writes (under the store's 1.5 MiB value
/// limit, with room for etcd's request overhead). Every change that could
/// grow a record past it is refused *before* it is applied, so a commit
/// never fails on size (which would stop the scheduler).
pub const MAX_RECORD_BYTES: usize = 1 << 20;

fn too_large(what: &str, size: usize) -> ApiError {
    ApiError::InvalidArgument(format!(
        "{what} would be stored as a record of {size} bytes, over the limit of {MAX_RECORD_BYTES} bytes"
    ))
}

fn sweep_state(s: &str) -> proto::SweepState {
    match s {
        "running" => proto::SweepState::Running,
        "done" => proto::SweepState::Done,
        "cancelled" => proto::SweepState::Cancelled,
        _ => proto::SweepState::Unspecified,
    }
}

fn capability(workload: &str, rec: &TrialRecord) -> String {
    chimera_domain::catalog::capability(workload, &rec.params)
}

impl Scheduler {
    /// Rebuilds the scheduler from the store: sweeps, their progress, pending queues;
    /// trials that were running wait one lease TTL for their agent to come back.
    pub async fn recover(
        store: Arc<dyn Store>,
        config: SchedulerConfig,
        events: broadcast::Sender<proto::SweepEvent>,
    ) -> anyhow::Result<Self> {
        let mut s = Scheduler {
            store: store.clone(),
            config,
            agents: HashMap::new(),
            sweeps: BTreeMap::new(),
            live: HashMap::new(),
            queues: HashMap::new(),
            idle: HashMap::new(),
            waiting: HashMap::new(),
            artifacts: HashMap::new(),
            queued_at: HashMap::new(),
            metrics: None,
            events,
            next_session: 1,
        };
        for kv in store.range(keys::sweeps().as_bytes()).await?.kvs {
            let record: SweepRecord = serde_json::from_slice(&kv.value)
                .map_err(|e| anyhow::anyhow!("decode {}: {e}", String::from_utf8_lossy(&kv.key)))?;
            let search = recover_search(&record);
            s.sweeps.insert(
                SweepId(record.id.clone()),
                SweepMeta {
                    record,
                    counts: HashMap::new(),
                    search,
                },
            );
        }
        let deadline = Instant::now() + config.lease_ttl;
        let mut held = 0;
        let mut blocked: Vec<(TrialKey, TrialKey)> = Vec::new();
        let mut finished: HashMap<TrialKey, (TrialState, Option<String>)> = HashMap::new();
        for kv in store.range(keys::all_trials().as_bytes()).await?.kvs {
            let rec: TrialRecord = serde_json::from_slice(&kv.value)
                .map_err(|e| anyhow::anyhow!("decode {}: {e}", String::from_utf8_lossy(&kv.key)))?;
            let key = TrialKey {
                sweep: SweepId(rec.sweep_id.clone()),
                trial: TrialId(rec.id.clone()),
            };
            let Some(meta) = s.sweeps.get_mut(&key.sweep) else {
                warn!(trial = %key.trial, sweep = %key.sweep, "trial without a sweep; ignored");
                continue;
            };
            *meta.counts.entry(rec.state).or_default() += 1;
            if let Some(run) = &mut meta.search {
                if (rec.config_index as usize) < run.configs.len() {
                    let observed = run.observed(&rec);
                    let c = run.classes.entry(rec.device_class.clone()).or_default();
                    c.created += 1;
                    if rec.state.is_terminal() {
                        c.history.push(observed);
                    } else {
                        c.open += 1;
                    }
                }
            }
            match rec.state {
                TrialState::Pending if rec.depends_on.is_some() => {
                    let dep = TrialKey {
                        sweep: key.sweep.clone(),
                        trial: TrialId(rec.depends_on.clone().unwrap_or_default()),
                    };
                    blocked.push((dep, key.clone()));
                }
                TrialState::Pending => s.enqueue(&queue_of(&rec), key.clone(), false),
                TrialState::Assigned | TrialState::Running => {
                    let name = AgentId(rec.agent.clone().unwrap_or_default());
                    s.agents
                        .entry(name)
                        .or_insert_with(|| AgentState {
                            session: 0,
                            tx: None,
                            hostname: String::new(),
                            version: String::new(),
                            features: vec![],
                            labels: BTreeMap::new(),
                            devices: vec![],
                            trials: HashMap::new(),
                            deadline,
                            last_seen: Instant::now(),
                            lease: 0,
                            draining: false,
                            registered_by: String::new(),
                            drained_by: None,
                        })
                        .trials
                        .insert(key.clone(), Instant::now());
                    held += 1;
                }
                _ => {
                    finished.insert(key, (rec.state, rec.error.clone()));
                    continue;
                }
            }
            s.live.insert(key, rec);
        }
        // Dependents: queued if their dependency succeeded (its artifact
        // reloaded), failed if it did not, else waiting for it.
        let mut failed_deps = Vec::new();
        for (dep, key) in blocked {
            match finished.get(&dep) {
                Some((TrialState::Succeeded, _)) => {
                    if !s.artifacts.contains_key(&dep) {
                        let k = keys::artifact(&dep.sweep.0, &dep.trial.0);
                        let bytes = store
                            .get(k.as_bytes())
                            .await?
                            .map(|kv| kv.value)
                            .unwrap_or_default();
                        s.artifacts.insert(dep.clone(), Arc::new(bytes));
                    }
                    if let Some(class) = s.live.get(&key).map(queue_of) {
                        s.enqueue(&class, key.clone(), false);
                    }
                }
                Some((state, error)) => {
                    failed_deps.push((key, dep_failure(&dep, *state, error.as_deref())))
                }
                None => s.waiting.entry(dep).or_default().push(key),
            }
        }
        // References later generations of adaptive sweeps will consume.
        let mut refs: Vec<TrialKey> = s
            .sweeps
            .iter()
            .filter(|(_, m)| m.record.state == "running")
            .flat_map(|(id, m)| {
                m.search.iter().flat_map(move |run| {
                    run.depends.iter().flatten().map(move |d| TrialKey {
                        sweep: id.clone(),
                        trial: TrialId(d.clone()),
                    })
                })
            })
            .collect();
        refs.sort_by(|a, b| (&a.sweep.0, &a.trial.0).cmp(&(&b.sweep.0, &b.trial.0)));
        refs.dedup();
        for dep in refs {
            if matches!(finished.get(&dep), Some((TrialState::Succeeded, _)))
                && !s.artifacts.contains_key(&dep)
            {
                let k = keys::artifact(&dep.sweep.0, &dep.trial.0);
                let bytes = store
                    .get(k.as_bytes())
                    .await?
                    .map(|kv| kv.value)
                    .unwrap_or_default();
                s.artifacts.insert(dep, Arc::new(bytes));
            }
        }
        let mut fx = Effects::default();
        for (key, why) in failed_deps {
            s.update(&key, &mut fx, |t| {
                t.state = TrialState::Failed;
                t.error = Some(why);
            });
        }
        // A search whose last generation finished but had not proposed the
        // next (none is written apart from a finish, but be sure).
        let idle: Vec<(SweepId, String)> = s
            .sweeps
            .iter()
            .filter(|(_, m)| m.record.state == "running")
            .flat_map(|(id, m)| {
                m.search.iter().flat_map(move |run| {
                    run.classes
                        .iter()
                        .filter(|(_, c)| c.open == 0 && !c.over)
                        .map(move |(class, _)| (id.clone(), class.clone()))
                })
            })
            .collect();
        for (id, class) in idle {
            s.advance(&id, &class, &mut fx);
        }
        s.settle_all(&mut fx);
        if !fx.ops.is_empty() {
            s.commit(fx).await?;
        }
        info!(
            sweeps = s.sweeps.len(),
            live_trials = s.live.len(),
            held_by_absent_agents = held,
            "recovered state from store"
        );
        Ok(s)
    }

    /// Runs the loop until `shutdown` or until the command channel closes.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let period = (self.config.lease_ttl / 4).max(Duration::from_millis(50));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let mut batch = Vec::new();
            let mut ticked = false;
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                c = rx.recv() => match c {
                    Some(c) => batch.push(c),
                    None => return Ok(()),
                },
                _ = tick.tick() => ticked = true,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let mut fx = Effects::default();
            // The batch first: an agent's message waiting in it renews its
            // lease before the leases are checked.
            for c in batch {
                self.handle(c, &mut fx).await;
            }
            if ticked {
                self.expire_agents(&mut fx);
                self.enforce_deadlines(&mut fx);
            }
            self.dispatch(&mut fx);
            let committing = Instant::now();
            self.commit(fx).await?;
            // While a commit was retried (etcd losing a member), this loop
            // heard no agent: that time does not count against their leases.
            let stalled = committing.elapsed();
            if stalled > period {
                for a in self.agents.values_mut() {
                    a.deadline += stalled;
                }
            }
        }
    }

    async fn commit(&mut self, fx: Effects) -> anyhow::Result<()> {
        if !fx.ops.is_empty() {
            let n = fx.ops.len();
            let txn = Txn {
                success: fx.ops,
                ..Default::default()
            };
            let r = self.commit_with_retries(txn).await?;
            // The scheduler's own transactions have no conditions: one that
            // fails is the store's leadership guard refusing a deposed leader.
            if !r.succeeded {
                anyhow::bail!(
                    "commit {n} scheduler writes: refused, this controller is no longer the leader"
                );
            }
        }
        for id in fx.keepalives {
            if let Err(e) = self.store.lease_keep_alive(id).await {
                debug!(lease = id, error = %e, "keep-alive failed");
            }
        }
        for id in fx.revokes {
            let _ = self.store.lease_revoke(id).await;
        }
        for (tx, msg) in fx.sends {
            if tx.try_send(msg).is_err() {
                warn!("agent stream is full or closed; message dropped (its lease will reconcile)");
            }
        }
        for ev in fx.events {
            let _ = self.events.send(ev);
        }
        for r in fx.replies {
            r();
        }
        Ok(())
    }

    /// Commits `txn`, retrying backend errors for up to
    /// `config.store_retry` with capped exponential backoff (see
    /// [`SchedulerConfig::store_retry`] for why that is safe).
    async fn commit_with_retries(&self, txn: Txn) -> anyhow::Result<TxnResult> {
        let n = txn.success.len();
        if self.config.store_retry.is_zero() {
            return self
                .store
                .txn(txn)
                .await
                .map_err(|e| anyhow::anyhow!("commit {n} scheduler writes: {e}"));
        }
        let started = Instant::now();
        let mut delay = Duration::from_millis(50);
        let mut tries = 0u32;
        loop {
            tries += 1;
            // Each try is bounded: a request stuck on a lost etcd member
            // is given up and sent again (to another one).
            let attempt = tokio::time::timeout(COMMIT_TRY, self.store.txn(txn.clone()))
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Backend(format!(
                        "no answer within {COMMIT_TRY:?}"
                    )))
                });
            match attempt {
                Ok(r) => {
                    if tries > 1 {
                        info!(
                            tries,
                            waited_ms = started.elapsed().as_millis() as u64,
                            "store answers again: commit went through"
                        );
                    }
                    return Ok(r);
                }
                Err(e @ StoreError::Backend(_))
                    if started.elapsed() + delay < self.config.store_retry =>
                {
                    if tries == 1 {
                        warn!(error = %e, writes = n, "commit failed; retrying while the store recovers");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "commit {n} scheduler writes (after {tries} tries in {:.1} s): {e}",
                        started.elapsed().as_secs_f64()
                    ))
                }
            }
        }
    }

    async fn handle(&mut self, cmd: Command, fx: &mut Effects) {
        match cmd {
            Command::Hello {
                hello,
                tx,
                proven,
                registered_by,
                reply,
            } => {
                let r = self.hello(hello, tx, proven, registered_by, fx).await;
                fx.reply(reply, r);
            }
            Command::Agent {
                agent,
                session,
                event,
            } => self.agent_event(&agent, session, event, fx),
            Command::Gone { agent, session } => self.gone(&agent, session),
            Command::Submit {
                parsed,
                source,
                trace,
                by,
                reply,
            } => {
                let r = self.submit(*parsed, &source, trace, by, fx);
                fx.reply(reply, r);
            }
            Command::Cancel { sweep, by, reply } => {
                let r = self.cancel(&sweep, by, fx);
                fx.reply(reply, r);
            }
            Command::GetSweep { sweep, reply } => {
                let r = self.sweep_proto(&sweep).map(|mut s| {
                    if let Some(meta) = self.sweeps.get(&sweep) {
                        s.spec_yaml = meta.record.spec_yaml.clone();
                    }
                    s
                });
                fx.reply(reply, r);
            }
            Command::ListSweeps {
                before,
                limit,
                reply,
            } => {
                let older = match &before {
                    Some(b) => self.sweeps.range(..b.clone()),
                    None => self.sweeps.range(..),
                };
                let list = older
                    .rev()
                    .take(limit)
                    .filter_map(|(id, _)| self.sweep_proto(id).ok())
                    .collect();
                fx.reply(reply, list);
            }
            Command::Ping { reply } => fx.reply(reply, ()),
            Command::Gauges { reply } => {
                let mut g = Gauges {
                    agents_connected: self.agents.values().filter(|a| a.tx.is_some()).count()
                        as u64,
                    ..Gauges::default()
                };
                for meta in self.sweeps.values() {
                    let c = |s: TrialState| u64::from(meta.counts.get(&s).copied().unwrap_or(0));
                    g.trials[0] += c(TrialState::Pending);
                    g.trials[1] += c(TrialState::Assigned) + c(TrialState::Running);
                    g.trials[2] += c(TrialState::Succeeded);
                    g.trials[3] += c(TrialState::Failed);
                    g.trials[4] += c(TrialState::Cancelled);
                }
                fx.reply(reply, g);
            }
            Command::ListAgents {
                after,
                limit,
                reply,
            } => {
                let mut names: Vec<&AgentId> = self
                    .agents
                    .iter()
                    .filter(|(n, a)| a.session != 0 && after.as_ref().is_none_or(|x| *n > x))
                    .map(|(n, _)| n)
                    .collect();
                names.sort();
                let list = names
                    .into_iter()
                    .take(limit)
                    .filter_map(|n| self.agents.get(n).map(|a| self.agent_proto(n, a)))
                    .collect();
                fx.reply(reply, list);
            }
            Command::Drain { agent, by, reply } => {
                let r = self.drain(&agent, by, fx);
                fx.reply(reply, r);
            }
        }
    }

    // ---- agents -------------------------------------------------------------

    async fn hello(
        &mut self,
        hello: Hello,
        tx: mpsc::Sender<proto::ControllerMessage>,
        proven: bool,
        registered_by: String,
        fx: &mut Effects,
    ) -> Result<(u64, Vec<TrialRef>), ApiError> {
        match self.agents.get(&hello.name) {
            Some(old) => {
                // Without a certificate the host name is all that tells a
                // reconnect from an impostor; with one, the name is proven.
                let live = old.tx.as_ref().is_some_and(|t| !t.is_closed());
                if !proven && live && old.hostname != hello.hostname {
                    return Err(ApiError::Conflict(format!(
                        "agent name `{}` is already connected from host {}; agent names must be unique",
                        hello.name,
                        chimera_domain::wire::quote(&old.hostname)
                    )));
                }
            }
            None if self.agents.len() >= self.config.limits.max_agents => {
                return Err(ApiError::ResourceExhausted(format!(
                    "{} agents are registered, the limit (--max-agents); agent `{}` is refused",
                    self.agents.len(),
                    hello.name
                )));
            }
            None => {}
        }
        let record = AgentRecord {
            name: hello.name.0.clone(),
            hostname: hello.hostname.clone(),
            version: hello.version.clone(),
            labels: hello.labels.clone(),
            device_classes: hello
                .devices
                .iter()
                .map(|d| d.device_class.clone())
                .collect(),
            registered_by: registered_by.clone(),
            drained_by: None,
        };
        let record = json(&record);
        if record.len() > MAX_RECORD_BYTES {
            return Err(too_large("the agent's hello", record.len()));
        }
        let session = self.next_session;
        self.next_session += 1;
        let lease = self.store.lease_grant(self.config.lease_ttl).await?;
        let now = Instant::now();
        let name = hello.name.clone();
        let mut state = AgentState {
            session,
            tx: Some(tx.clone()),
            hostname: hello.hostname.clone(),
            version: hello.version.clone(),
            features: hello.features.clone(),
            labels: hello.labels.clone(),
            devices: hello
                .devices
                .iter()
                .cloned()
                .map(|device| DeviceSlot { device, busy: None })
                .collect(),
            trials: HashMap::new(),
            deadline: now + self.config.lease_ttl,
            last_seen: now,
            lease,
            draining: false,
            registered_by,
            drained_by: None,
        };
        fx.sends.push((
            tx.clone(),
            proto::ControllerMessage {
                msg: Some(proto::controller_message::Msg::Welcome(proto::Welcome {
                    lease_ttl_ms: self.config.lease_ttl.as_millis() as u32,
                    heartbeat_interval_ms: (self.config.lease_ttl.as_millis() / 4).max(50) as u32,
                    controller_version: env!("CARGO_PKG_VERSION").to_owned(),
                })),
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
                fx.sends.push((tx.clone(), cancel_msg(r)));
            }
        }
        fx.ops.push(Op::Put {
            key: keys::agent(&name.0).into_bytes(),
            value: record,
            lease,
        });
        let kept: Vec<TrialRef> = hello
            .running
            .iter()
            .filter(|r| state.trials.contains_key(&r.key))
            .cloned()
            .collect();
        info!(agent = %name, session, devices = state.devices.len(), kept = state.trials.len(), requeued = requeue.len(), "agent connected");
        self.agents.insert(name.clone(), state);
        for key in requeue {
            self.requeue(&key, "agent reconnected without it", fx);
        }
        self.reindex_agent(&name);
        Ok((session, kept))
    }

    fn agent_event(&mut self, name: &AgentId, session: u64, event: AgentEvent, fx: &mut Effects) {
        let Some(agent) = self.agents.get_mut(name) else {
            return;
        };
        if agent.session != session {
            return; // an old stream of a reconnected agent
        }
        let now = Instant::now();
        agent.last_seen = now;
        agent.deadline = now + self.config.lease_ttl;
        fx.keepalives.push(agent.lease);
        let tx = agent.tx.clone();
        match event {
            AgentEvent::Heartbeat(running) => self.reconcile(name, &running, fx),
            AgentEvent::Started(r) => {
                if self.is_current(name, &r) {
                    self.update(&r.key, fx, |t| t.state = TrialState::Running);
                } else if let Some(tx) = tx {
                    fx.sends.push((tx, cancel_msg(&r)));
                }
            }
            AgentEvent::Finished {
                trial,
                metrics,
                fingerprint,
                wall_ms,
                detail,
                artifact,
            } => {
                let current = self.is_current(name, &trial);
                // The record as it would be stored, measured before anything
                // changes: one over the store's limit fails the trial with
                // the reason instead (a failed commit would stop the scheduler).
                let success = self.live.get(&trial.key).map(|rec| {
                    let mut t = rec.clone();
                    t.state = TrialState::Succeeded;
                    t.metrics = metrics;
                    t.fingerprint = Some(*fingerprint);
                    t.wall_ms = Some(wall_ms);
                    t.detail = detail;
                    t.error = None;
                    t
                });
                let size = success.as_ref().map_or(0, |t| json(t).len());
                if current && size > MAX_RECORD_BYTES {
                    if let Some(m) = &self.metrics {
                        m.result_refused(crate::metrics::Refusal::TooLarge);
                    }
                    let why = format!(
                        "the trial's result would be stored as a record of {size} bytes, over the limit of {MAX_RECORD_BYTES} bytes"
                    );
                    warn!(agent = %name, trial = %trial.key.trial, "{why}");
                    let accepted = self.finish(name, &trial, fx, |t| {
                        t.state = TrialState::Failed;
                        t.error = Some(why.clone());
                    });
                    self.ack(tx, &trial, accepted.and(Err(why)), fx);
                    return;
                }
                if current && !artifact.is_empty() {
                    // Durable in the same commit as the success it belongs to.
                    fx.ops.push(Op::put(
                        keys::artifact(&trial.key.sweep.0, &trial.key.trial.0),
                        artifact.clone(),
                    ));
                    self.artifacts.insert(trial.key.clone(), Arc::new(artifact));
                }
                let accepted = self.finish(name, &trial, fx, |t| {
                    if let Some(s) = success {
                        *t = s;
                    }
                });
                self.ack(tx, &trial, accepted, fx);
            }
            AgentEvent::Failed { trial, reason } => {
                let accepted = self.finish(name, &trial, fx, |t| {
                    t.state = TrialState::Failed;
                    t.error = Some(reason);
                });
                self.ack(tx, &trial, accepted, fx);
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
        let ttl = self.config.lease_ttl;
        let lost: Vec<TrialKey> = agent
            .trials
            .iter()
            .filter(|(key, since)| since.elapsed() > ttl && !running.iter().any(|r| &r.key == *key))
            .map(|(k, _)| k.clone())
            .collect();
        for key in lost {
            if let Some(attempt) = self.live.get(&key).map(|t| t.attempt) {
                self.release_device(
                    name,
                    &TrialRef {
                        key: key.clone(),
                        attempt,
                    },
                );
            }
            self.requeue(&key, "agent does not report it running", fx);
        }
    }

    fn ack(
        &self,
        tx: Option<mpsc::Sender<proto::ControllerMessage>>,
        r: &TrialRef,
        outcome: Result<(), String>,
        fx: &mut Effects,
    ) {
        let Some(tx) = tx else { return };
        let (accepted, reason) = match outcome {
            Ok(()) => (true, String::new()),
            Err(reason) => (false, reason),
        };
        fx.sends.push((
            tx,
            proto::ControllerMessage {
                msg: Some(proto::controller_message::Msg::Ack(proto::ResultAck {
                    trial: Some(r.to_proto()),
                    accepted,
                    reason,
                })),
            },
        ));
    }

    fn is_current(&self, agent: &AgentId, r: &TrialRef) -> bool {
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
        if !current {
            use crate::metrics::Refusal;
            let refusal = match self.live.get(&r.key) {
                Some(t) if t.agent.as_deref() != Some(agent.as_str()) => Refusal::OtherAgent,
                Some(_) => Refusal::StaleAttempt,
                None => Refusal::NotRunning,
            };
            if let Some(m) = &self.metrics {
                m.result_refused(refusal);
            }
            let why = match self.live.get(&r.key) {
                Some(_) if refusal == Refusal::OtherAgent => format!(
                    "trial {} of sweep {} is not assigned to agent {agent}: refused",
                    r.key.trial, r.key.sweep
                ),
                Some(t) => format!(
                    "stale result: trial {} is at attempt {} on agent {}, this was attempt {}",
                    r.key.trial,
                    t.attempt,
                    t.agent.as_deref().unwrap_or("-"),
                    r.attempt
                ),
                None => format!(
                    "trial {} of sweep {} is not running (finished, cancelled or unknown)",
                    r.key.trial, r.key.sweep
                ),
            };
            warn!(agent = %agent, trial = %r.key.trial, attempt = r.attempt, "{why}");
            return Err(why);
        }
        self.update(&r.key, fx, apply);
        Ok(())
    }

    /// Frees the device running exactly this attempt (a stale report for an
    /// older attempt never frees a device running a newer one).
    fn release_device(&mut self, agent: &AgentId, r: &TrialRef) {
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

    fn gone(&mut self, name: &AgentId, session: u64) {
        let Some(agent) = self.agents.get_mut(name) else {
            return;
        };
        if agent.session != session {
            return;
        }
        agent.tx = None;
        info!(agent = %name, "agent stream closed; its trials wait for the lease to expire");
        self.reindex_agent(name);
    }

    fn expire_agents(&mut self, fx: &mut Effects) {
        let now = Instant::now();
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
            warn!(agent = %name, trials = agent.trials.len(), "agent lease expired");
            for key in agent.trials.into_keys() {
                self.requeue(&key, "agent lease expired", fx);
            }
        }
    }

    fn drain(
        &mut self,
        name: &AgentId,
        by: String,
        fx: &mut Effects,
    ) -> Result<proto::Agent, ApiError> {
        let agent = self
            .agents
            .get_mut(name)
            .filter(|a| a.session != 0)
            .ok_or_else(|| ApiError::NotFound(format!("agent `{name}` is not connected")))?;
        agent.draining = true;
        agent.drained_by = Some(by);
        // The audit record, on the agent's registration (and its lease).
        let record = AgentRecord {
            name: name.0.clone(),
            hostname: agent.hostname.clone(),
            version: agent.version.clone(),
            labels: agent.labels.clone(),
            device_classes: agent
                .devices
                .iter()
                .map(|d| d.device.device_class.clone())
                .collect(),
            registered_by: agent.registered_by.clone(),
            drained_by: agent.drained_by.clone(),
        };
        fx.ops.push(Op::Put {
            key: keys::agent(&name.0).into_bytes(),
            value: json(&record),
            lease: agent.lease,
        });
        if let Some(tx) = agent.tx.clone() {
            fx.sends.push((
                tx,
                proto::ControllerMessage {
                    msg: Some(proto::controller_message::Msg::Drain(proto::Drain {})),
                },
            ));
        }
        self.reindex_agent(name);
        let a = &self.agents[name];
        Ok(self.agent_proto(name, a))
    }

    fn agent_proto(&self, name: &AgentId, a: &AgentState) -> proto::Agent {
        proto::Agent {
            name: name.0.clone(),
            hostname: a.hostname.clone(),
            version: a.version.clone(),
            devices: a.devices.iter().map(|d| d.device.clone()).collect(),
            features: a.features.clone(),
            running: a
                .trials
                .keys()
                .filter_map(|k| {
                    self.live.get(k).map(|t| proto::TrialRef {
                        sweep_id: k.sweep.0.clone(),
                        trial_id: k.trial.0.clone(),
                        attempt: t.attempt,
                    })
                })
                .collect(),
            last_seen_ms_ago: a.last_seen.elapsed().as_millis() as u64,
            connected: a.tx.is_some(),
            draining: a.draining,
            labels: a.labels.clone().into_iter().collect(),
            registered_by: a.registered_by.clone(),
            drained_by: a.drained_by.clone().unwrap_or_default(),
        }
    }

    // ---- the free-device index ----------------------------------------------

    fn unindex(&mut self, name: &AgentId, agent: &AgentState) {
        for (i, d) in agent.devices.iter().enumerate() {
            if let Some(set) = self.idle.get_mut(&d.device.device_class) {
                set.remove(&(name.clone(), i));
            }
        }
    }

    /// Puts each device of the agent in or out of the free index.
    fn reindex_agent(&mut self, name: &AgentId) {
        let Some(agent) = self.agents.get(name) else {
            return;
        };
        let usable = agent.tx.is_some() && !agent.draining;
        for (i, d) in agent.devices.iter().enumerate() {
            let set = self.idle.entry(d.device.device_class.clone()).or_default();
            if usable && d.busy.is_none() && !d.device.capabilities.is_empty() {
                set.insert((name.clone(), i));
            } else {
                set.remove(&(name.clone(), i));
            }
        }
    }

    // ---- trials -------------------------------------------------------------

    /// Applies a change to a live trial, keeping counts, store and watchers in step.
    fn update(&mut self, key: &TrialKey, fx: &mut Effects, apply: impl FnOnce(&mut TrialRecord)) {
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
        fx.ops
            .push(Op::put(keys::trial(&rec.sweep_id, &rec.id), json(&rec)));
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
        if let Ok(sweep) = self.sweep_proto(&key.sweep) {
            fx.events.push(proto::SweepEvent {
                sweep: Some(sweep),
                trial: Some((&rec).into()),
            });
        }
    }

    /// Marks a running sweep done once no trial of it is open and no search
    /// of it will propose more.
    fn settle(&mut self, id: &SweepId, fx: &mut Effects) {
        let Some(meta) = self.sweeps.get_mut(id) else {
            return;
        };
        let open = [
            TrialState::Pending,
            TrialState::Assigned,
            TrialState::Running,
        ]
        .iter()
        .map(|s| meta.counts.get(s).copied().unwrap_or(0))
        .sum::<u32>();
        if open == 0 && meta.record.state == "running" {
            meta.record.state = "done".into();
            self.artifacts.retain(|k, _| &k.sweep != id);
            fx.ops
                .push(Op::put(keys::sweep(&meta.record.id), json(&meta.record)));
            info!(sweep = %meta.record.id, "sweep done");
        }
    }

    fn settle_all(&mut self, fx: &mut Effects) {
        let ids: Vec<SweepId> = self.sweeps.keys().cloned().collect();
        for id in ids {
            self.settle(&id, fx);
        }
    }

    /// A trial of an adaptive sweep finished: its class's search learns the
    /// result and, once the class's generation is complete, proposes the next.
    fn observe(&mut self, key: &TrialKey, rec: &TrialRecord, fx: &mut Effects) {
        let Some(meta) = self.sweeps.get_mut(&key.sweep) else {
            return;
        };
        let running = meta.record.state == "running";
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
    fn advance(&mut self, id: &SweepId, class: &str, fx: &mut Effects) {
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
        for p in &proposals {
            for repeat in 0..run.repeats {
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
        }
        let k = created.len() as u32;
        if let Some(c) = run.classes.get_mut(class) {
            c.created += k;
            c.open += k;
        }
        meta.record.trials_total += k;
        *meta.counts.entry(TrialState::Pending).or_default() += k;
        fx.ops.push(Op::put(keys::sweep(&id.0), json(&meta.record)));
        debug!(sweep = %id, class, trials = k, configs = proposals.len(), "search proposed a generation");
        for rec in created {
            self.add_trial(id, rec, fx);
        }
    }

    /// Stores a new pending trial and queues it (or holds it for the trial it
    /// depends on).
    fn add_trial(&mut self, id: &SweepId, rec: TrialRecord, fx: &mut Effects) {
        fx.ops
            .push(Op::put(keys::trial(&id.0, &rec.id), json(&rec)));
        let key = TrialKey {
            sweep: id.clone(),
            trial: TrialId(rec.id.clone()),
        };
        let dep = rec.depends_on.as_ref().map(|d| TrialKey {
            sweep: id.clone(),
            trial: TrialId(d.clone()),
        });
        let class = queue_of(&rec);
        self.live.insert(key.clone(), rec);
        match dep {
            // The dependency is still open: wait for it.
            Some(dep) if self.live.contains_key(&dep) => {
                self.waiting.entry(dep).or_default().push(key)
            }
            // It succeeded earlier (its artifact is kept while the sweep runs).
            Some(dep) if self.artifacts.contains_key(&dep) => self.enqueue(&class, key, false),
            Some(dep) => {
                let why = format!("reference trial {} did not succeed", dep.trial);
                self.update(&key, fx, |t| {
                    t.state = TrialState::Failed;
                    t.error = Some(why);
                });
            }
            None => self.enqueue(&class, key, false),
        }
    }

    /// Ends sweeps past `budget.max_duration`: their pending trials are
    /// cancelled and their searches propose nothing more; running trials finish.
    fn enforce_deadlines(&mut self, fx: &mut Effects) {
        let now = now_unix_ms();
        let mut expired = Vec::new();
        for (id, meta) in &mut self.sweeps {
            let Some(secs) = meta.record.budget.max_duration_s else {
                continue;
            };
            if meta.record.state != "running"
                || now < meta.record.created_unix_ms + (secs as i64).saturating_mul(1000)
            {
                continue;
            }
            if let Some(run) = &mut meta.search {
                for c in run.classes.values_mut() {
                    c.over = true;
                }
            }
            expired.push((id.clone(), secs));
        }
        for (id, secs) in expired {
            let pending: Vec<TrialKey> = self
                .live
                .iter()
                .filter(|(k, t)| k.sweep == id && t.state == TrialState::Pending)
                .map(|(k, _)| k.clone())
                .collect();
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
    /// (it succeeded) or failed with the reason (it did not).
    fn release_dependents(&mut self, key: &TrialKey, rec: &TrialRecord, fx: &mut Effects) {
        let Some(dependents) = self.waiting.remove(key) else {
            return;
        };
        for d in dependents {
            if rec.state == TrialState::Succeeded {
                if let Some(class) = self.live.get(&d).map(queue_of) {
                    self.enqueue(&class, d, false);
                }
            } else {
                let why = dep_failure(key, rec.state, rec.error.as_deref());
                let state = if rec.state == TrialState::Cancelled {
                    TrialState::Cancelled
                } else {
                    TrialState::Failed
                };
                self.update(&d, fx, |t| {
                    t.state = state;
                    t.error = Some(why);
                });
            }
        }
    }

    fn requeue(&mut self, key: &TrialKey, why: &str, fx: &mut Effects) {
        let Some(rec) = self.live.get(key) else {
            return;
        };
        if !matches!(rec.state, TrialState::Assigned | TrialState::Running) {
            return;
        }
        info!(sweep = %key.sweep, trial = %key.trial, attempt = rec.attempt, "{why}: trial back to pending");
        let class = queue_of(rec);
        self.update(key, fx, |t| {
            t.state = TrialState::Pending;
            t.agent = None;
            t.device_id = None;
        });
        self.enqueue(&class, key.clone(), true);
    }

    /// Puts a pending trial in its class queue (at the front when it goes
    /// back after a lost attempt).
    fn enqueue(&mut self, class: &str, key: TrialKey, front: bool) {
        self.queued_at.insert(key.clone(), Instant::now());
        let q = self.queues.entry(class.to_owned()).or_default();
        if front {
            q.push_front(key);
        } else {
            q.push_back(key);
        }
    }

    /// Exports assignment latency to these metrics.
    pub fn set_metrics(&mut self, m: Arc<crate::metrics::Metrics>) {
        self.metrics = Some(m);
    }

    fn assign(&mut self, key: &TrialKey, agent: &AgentId, slot: usize, fx: &mut Effects) {
        let Some(meta) = self.sweeps.get(&key.sweep) else {
            return;
        };
        let rung = self.live.get(key).and_then(|t| t.rung);
        let harness = match &meta.search {
            Some(run) => run.search.harness(meta.record.harness, rung),
            None => meta.record.harness,
        };
        let workload = meta.record.workload.clone();
        // A span of the submission's trace; the agent's run is its child.
        let span = tracing::info_span!("chimera.controller.assign", sweep = %key.sweep, trial = %key.trial, agent = %agent);
        let trace_context = if meta.record.trace.is_empty() {
            std::collections::HashMap::new()
        } else {
            let parent: std::collections::HashMap<String, String> =
                meta.record.trace.clone().into_iter().collect();
            chimera_observe::set_parent(&span, &parent);
            chimera_observe::inject(&span)
        };
        let Some(a) = self.agents.get_mut(agent) else {
            return;
        };
        let (Some(tx), Some(d)) = (a.tx.clone(), a.devices.get_mut(slot)) else {
            return;
        };
        let attempt = self.live.get(key).map_or(1, |t| t.attempt + 1);
        d.busy = Some(TrialRef {
            key: key.clone(),
            attempt,
        });
        let device_id = d.device.id.clone();
        a.trials.insert(key.clone(), Instant::now());
        if let (Some(since), Some(m)) = (self.queued_at.remove(key), &self.metrics) {
            m.assignment_latency.observe(since.elapsed().as_secs_f64());
        }
        self.update(key, fx, |t| {
            t.state = TrialState::Assigned;
            t.attempt = attempt;
            t.agent = Some(agent.0.clone());
            t.device_id = Some(device_id.clone());
            t.error = None;
        });
        let Some(rec) = self.live.get(key) else {
            return;
        };
        let input = rec
            .depends_on
            .as_ref()
            .and_then(|d| {
                self.artifacts.get(&TrialKey {
                    sweep: key.sweep.clone(),
                    trial: TrialId(d.clone()),
                })
            })
            .map(|a| a.as_ref().clone())
            .unwrap_or_default();
        debug!(sweep = %key.sweep, trial = %key.trial, attempt = rec.attempt, agent = %agent, "assigned");
        fx.sends.push((
            tx,
            proto::ControllerMessage {
                msg: Some(proto::controller_message::Msg::Assign(proto::AssignTrial {
                    trial: Some(proto::TrialRef {
                        sweep_id: key.sweep.0.clone(),
                        trial_id: key.trial.0.clone(),
                        attempt: rec.attempt,
                    }),
                    device_id,
                    workload,
                    params: params_to_proto(&rec.params),
                    harness: Some(proto::HarnessConfig {
                        warmup_iters: harness.warmup_iters,
                        min_iters: harness.min_iters,
                        min_time_ms: harness.min_time_ms,
                        max_time_ms: harness.max_time_ms,
                    }),
                    input,
                    trace_context,
                })),
            },
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
            if *pin != pin_of(agent, &d.device.id) {
                return false;
            }
        }
        d.device
            .capabilities
            .contains(&capability(&meta.record.workload, rec))
            && (rec.device_class != ANY || meta.record.target.matches(&view(agent, a, &d.device)))
    }

    /// Matches pending trials with free devices: per class, pop and assign.
    fn dispatch(&mut self, fx: &mut Effects) {
        let classes: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(c, _)| c.clone())
            .collect();
        for class in classes {
            let candidates: Vec<(AgentId, usize)> = if class == ANY {
                self.idle.values().flatten().cloned().collect()
            } else if let Some(pin) = class.strip_prefix(PINNED) {
                // One device: the only candidate, when it is free.
                self.idle
                    .values()
                    .flatten()
                    .filter(|(name, slot)| {
                        self.agents
                            .get(name)
                            .and_then(|a| a.devices.get(*slot))
                            .is_some_and(|d| pin_of(name, &d.device.id) == pin)
                    })
                    .cloned()
                    .collect()
            } else {
                self.idle
                    .get(&class)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default()
            };
            for (agent, slot) in candidates {
                // A device may have been taken by an earlier class in this pass.
                let still_free = self
                    .agents
                    .get(&agent)
                    .and_then(|a| a.devices.get(slot))
                    .is_some_and(|d| d.busy.is_none());
                if !still_free {
                    continue;
                }
                let Some(key) = self.pop_for(&class, &agent, slot) else {
                    if self.queues.get(&class).is_none_or(|q| q.is_empty()) {
                        break;
                    }
                    continue;
                };
                self.assign(&key, &agent, slot, fx);
            }
        }
    }

    /// The first pending trial of `class` this device can run (looking a bounded
    /// way down the queue); drops entries that are no longer pending.
    fn pop_for(&mut self, class: &str, agent: &AgentId, slot: usize) -> Option<TrialKey> {
        const LOOKAHEAD: usize = 64;
        let mut i = 0;
        loop {
            let key = self.queues.get(class)?.get(i)?.clone();
            let pending = self
                .live
                .get(&key)
                .is_some_and(|t| t.state == TrialState::Pending);
            if !pending {
                self.queues.get_mut(class)?.remove(i);
                continue;
            }
            if self.device_fits(agent, slot, &key) {
                return self.queues.get_mut(class)?.remove(i);
            }
            i += 1;
            if i >= LOOKAHEAD {
                return None;
            }
        }
    }

    // ---- sweeps -------------------------------------------------------------

    fn submit(
        &mut self,
        parsed: ParsedSweep,
        source: &str,
        trace: BTreeMap<String, String>,
        by: String,
        fx: &mut Effects,
    ) -> Result<(SweepId, u32), ApiError> {
        let spec = &parsed.spec;
        let workload = spec.workload.name();
        let active = self
            .sweeps
            .values()
            .filter(|m| m.record.state == "running")
            .count();
        if active >= self.config.limits.max_active_sweeps {
            return Err(ApiError::ResourceExhausted(format!(
                "{active} sweeps are running, the limit (--max-active-sweeps); wait for one to finish or cancel one"
            )));
        }
        // Device classes that match the target, with what each can run.
        let mut classes: BTreeMap<String, HashSet<String>> = BTreeMap::new();
        // Every matching device, as (class, pin), for placement `all`.
        let mut devices: Vec<(String, String)> = Vec::new();
        // Conditional configurations (a variant's `when`) by the classes and
        // devices they are for.
        let conditional: Vec<usize> = (0..parsed.configs.len())
            .filter(|&i| parsed.conditions.get(i).is_some_and(Option::is_some))
            .collect();
        let mut applies: HashMap<String, HashSet<usize>> = HashMap::new();
        for (name, a) in &self.agents {
            if a.tx.is_none() || a.draining {
                continue;
            }
            for d in &a.devices {
                if !d.device.capabilities.is_empty()
                    && spec.target.matches(&view(name, a, &d.device))
                {
                    classes
                        .entry(d.device.device_class.clone())
                        .or_default()
                        .extend(d.device.capabilities.iter().cloned());
                    let pin = pin_of(name, &d.device.id);
                    for &ci in &conditional {
                        if let Some(Some(when)) = parsed.conditions.get(ci) {
                            if when.matches(&view(name, a, &d.device)) {
                                for key in [&d.device.device_class, &pin] {
                                    applies.entry(key.clone()).or_default().insert(ci);
                                }
                            }
                        }
                    }
                    devices.push((d.device.device_class.clone(), pin));
                }
            }
        }
        if classes.is_empty() {
            let known: BTreeSet<&str> = self
                .agents
                .values()
                .flat_map(|a| a.devices.iter().map(|d| d.device.device_class.as_str()))
                .collect();
            return Err(ApiError::InvalidArgument(format!(
                "{}target: no connected agent has a device matching {}; connected device classes: [{}]",
                find_line(source, "target", None).map(|l| format!("line {l}: ")).unwrap_or_default(),
                serde_json::to_string(&spec.target).unwrap_or_default(),
                known.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        let applicable = |key: &str, ci: usize| {
            !conditional.contains(&ci) || applies.get(key).is_some_and(|s| s.contains(&ci))
        };
        for (ci, config) in parsed.configs.iter().enumerate() {
            let op = config.get("op").map(|v| v.to_string()).unwrap_or_default();
            let cap = chimera_domain::catalog::capability(workload, config);
            let lacking: Vec<&String> = classes
                .iter()
                .filter(|(c, caps)| applicable(c, ci) && !caps.contains(&cap))
                .map(|(c, _)| c)
                .collect();
            let refuse = match spec.placement {
                Placement::EachClass | Placement::All => !lacking.is_empty(),
                Placement::Any => lacking.len() == classes.len(),
            };
            if refuse {
                let e = SpecError::at(
                    source,
                    "op",
                    "op",
                    Some(&op),
                    format!(
                        "{} of workload {workload} is not supported by the agents of device class(es) {}",
                        if op.is_empty() { "this configuration".to_owned() } else { format!("op `{op}`") },
                        lacking.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
                    ),
                );
                return Err(ApiError::InvalidArgument(e.to_string()));
            }
        }
        // Where each configuration runs: (class, the device it is pinned to).
        devices.sort();
        let targets: Vec<(String, Option<String>)> = match spec.placement {
            Placement::EachClass => classes.keys().map(|c| (c.clone(), None)).collect(),
            Placement::Any => vec![(ANY.to_owned(), None)],
            Placement::All => devices.into_iter().map(|(c, pin)| (c, Some(pin))).collect(),
        };
        let id = SweepId(ulid::Ulid::new().to_string());
        let mut n = 0usize;
        let mut trials = Vec::new();
        // Eval: one reference trial per distinct (model, text, context,
        // reference format), run once on any target device; every eval trial
        // scored against it waits for it and consumes its output.
        let mut references: Vec<(Params, String)> = Vec::new();
        let mut depends: Vec<Option<String>> = vec![None; parsed.configs.len()];
        if spec.workload == Workload::Eval {
            for (ci, config) in parsed.configs.iter().enumerate() {
                let r = EvalTrial::reference_params(config);
                let tid = match references.iter().find(|(p, _)| *p == r) {
                    Some((_, tid)) => tid.clone(),
                    None => {
                        let tid = TrialId::nth(n).0;
                        n += 1;
                        references.push((r, tid.clone()));
                        tid
                    }
                };
                depends[ci] = Some(tid);
            }
        }
        for (ri, (params, tid)) in references.iter().enumerate() {
            trials.push(TrialRecord::pending(
                tid.clone(),
                id.0.clone(),
                ANY.to_owned(),
                params.clone(),
                (parsed.configs.len() + ri) as u32,
                0,
            ));
        }
        let mut search = spec
            .search
            .is_adaptive()
            .then(|| SearchRun::new(&parsed, depends.clone()));
        // Grid and random: every configuration on every class now. Adaptive:
        // each class's first generation; the rest follows its results.
        let mut plan: Vec<((String, Option<String>), Proposal)> = Vec::new();
        let mut class_configs: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        // Counted as the plan grows (checked): past the limit the submit is
        // refused before more is built or any trial exists.
        let max = self.config.limits.max_trials_per_sweep;
        let over = |placements: usize| {
            (placements as u64)
                .checked_mul(u64::from(spec.repeats))
                .and_then(|n| n.checked_add(references.len() as u64))
                .is_none_or(|n| n > max)
        };
        let refusal = |placements: usize| {
            ApiError::InvalidArgument(format!(
                "{}the sweep expands into more than {max} trials ({placements} or more configuration placements on the {} matching device class(es) or devices, x {} repeats); the limit is {max} trials per sweep (--max-trials-per-sweep)",
                find_line(source, "repeats", None).map(|l| format!("line {l}: ")).unwrap_or_default(),
                targets.len(),
                spec.repeats,
            ))
        };
        for target in &targets {
            let class = &target.0;
            // The class's (or pinned device's) own space when variants say
            // which devices they are for.
            let key = target.1.as_deref().unwrap_or(class);
            let mine: Vec<usize> = (0..parsed.configs.len())
                .filter(|&ci| applicable(key, ci))
                .collect();
            if mine.is_empty() {
                continue;
            }
            if !conditional.is_empty() && target.1.is_none() {
                class_configs.insert(class.clone(), mine.iter().map(|&i| i as u32).collect());
            }
            match &mut search {
                Some(run) => {
                    run.classes.insert(class.clone(), ClassSearch::default());
                    if let Some(subset) = class_configs.get(class) {
                        run.subsets.insert(class.clone(), subset.clone());
                    }
                    plan.extend(run.propose(class).into_iter().map(|p| (target.clone(), p)));
                }
                None => plan.extend(
                    mine.into_iter()
                        .map(|config| (target.clone(), Proposal { config, rung: None })),
                ),
            }
            if over(plan.len()) {
                return Err(refusal(plan.len()));
            }
        }
        if plan.is_empty() {
            return Err(ApiError::InvalidArgument(format!(
                "{}variants: no configuration is for a connected device (each variant's `when` matches none)",
                find_line(source, "variants", None).map(|l| format!("line {l}: ")).unwrap_or_default(),
            )));
        }
        // Grid order: configuration, then class (and device), then repeat.
        plan.sort_by(|(a, p), (b, q)| (p.config, a).cmp(&(q.config, b)));
        for ((class, pinned), p) in plan {
            for repeat in 0..spec.repeats {
                trials.push(TrialRecord {
                    depends_on: depends[p.config].clone(),
                    rung: p.rung,
                    pinned: pinned.clone(),
                    ..TrialRecord::pending(
                        TrialId::nth(n).0,
                        id.0.clone(),
                        class.clone(),
                        parsed.configs[p.config].clone(),
                        p.config as u32,
                        repeat,
                    )
                });
                n += 1;
                if let Some(c) = search.as_mut().and_then(|r| r.classes.get_mut(&class)) {
                    c.created += 1;
                    c.open += 1;
                }
            }
        }
        let total = u32::try_from(trials.len()).map_err(|_| {
            ApiError::InvalidArgument(format!("the sweep expands into {} trials", trials.len()))
        })?;
        let record = SweepRecord {
            id: id.0.clone(),
            name: spec.name.clone(),
            workload: workload.to_owned(),
            spec_yaml: source.to_owned(),
            created_unix_ms: now_unix_ms(),
            state: "running".into(),
            trials_total: total,
            harness: spec.harness,
            placement: spec.placement,
            target: spec.target.clone(),
            search: spec.search.clone(),
            budget: spec.budget,
            class_configs,
            trace,
            submitted_by: Some(by),
            cancelled_by: None,
        };
        // Sizes before anything changes: the spec (JSON-escaped in the
        // record) and the largest trial record.
        let size = json(&record).len();
        if size > MAX_RECORD_BYTES {
            return Err(too_large("the spec", size));
        }
        if let Some(size) = trials
            .iter()
            .map(|t| json(t).len())
            .find(|&n| n > MAX_RECORD_BYTES)
        {
            return Err(too_large("a trial of the sweep", size));
        }
        self.sweeps.insert(
            id.clone(),
            SweepMeta {
                record,
                counts: HashMap::from([(TrialState::Pending, total)]),
                search,
            },
        );
        // References first, so their dependents find them live.
        for rec in trials {
            self.add_trial(&id, rec, fx);
        }
        // The sweep's record last: a store that applies a big batch in
        // pieces (etcd) never shows a sweep without all its trials.
        if let Some(meta) = self.sweeps.get(&id) {
            fx.ops.push(Op::put(keys::sweep(&id.0), json(&meta.record)));
        }
        info!(sweep = %id, trials = total, classes = targets.len(), "sweep submitted");
        if let Ok(sweep) = self.sweep_proto(&id) {
            fx.events.push(proto::SweepEvent {
                sweep: Some(sweep),
                trial: None,
            });
        }
        Ok((id, total))
    }

    fn cancel(
        &mut self,
        id: &SweepId,
        by: String,
        fx: &mut Effects,
    ) -> Result<proto::Sweep, ApiError> {
        let meta = self
            .sweeps
            .get_mut(id)
            .ok_or_else(|| ApiError::NotFound(format!("sweep `{id}` not found")))?;
        if meta.record.state != "running" {
            return self.sweep_proto(id);
        }
        meta.record.state = "cancelled".into();
        meta.record.cancelled_by = Some(by);
        fx.ops.push(Op::put(keys::sweep(&id.0), json(&meta.record)));
        let keys: Vec<TrialKey> = self
            .live
            .keys()
            .filter(|k| &k.sweep == id)
            .cloned()
            .collect();
        for key in keys {
            let Some(rec) = self.live.get(&key) else {
                continue;
            };
            if let (Some(agent), true) = (
                rec.agent.clone(),
                matches!(rec.state, TrialState::Assigned | TrialState::Running),
            ) {
                let r = TrialRef {
                    key: key.clone(),
                    attempt: rec.attempt,
                };
                if let Some(tx) = self.agents.get(&AgentId(agent)).and_then(|a| a.tx.clone()) {
                    fx.sends.push((tx, cancel_msg(&r)));
                }
            }
            // The device stays busy until the agent reports back or its lease ends.
            self.update(&key, fx, |t| t.state = TrialState::Cancelled);
        }
        self.artifacts.retain(|k, _| &k.sweep != id);
        info!(sweep = %id, "sweep cancelled");
        let sweep = self.sweep_proto(id)?;
        fx.events.push(proto::SweepEvent {
            sweep: Some(sweep.clone()),
            trial: None,
        });
        Ok(sweep)
    }

    /// The sweep's state and progress, without its spec text (which can be
    /// large and is only needed by `GetSweep`).
    fn sweep_proto(&self, id: &SweepId) -> Result<proto::Sweep, ApiError> {
        let meta = self
            .sweeps
            .get(id)
            .ok_or_else(|| ApiError::NotFound(format!("sweep `{id}` not found")))?;
        let c = |s: TrialState| meta.counts.get(&s).copied().unwrap_or(0);
        let r = &meta.record;
        Ok(proto::Sweep {
            id: r.id.clone(),
            name: r.name.clone(),
            workload: r.workload.clone(),
            state: sweep_state(&r.state) as i32,
            created_unix_ms: r.created_unix_ms,
            spec_yaml: String::new(),
            trials_total: r.trials_total,
            trials_pending: c(TrialState::Pending),
            trials_running: c(TrialState::Assigned) + c(TrialState::Running),
            trials_succeeded: c(TrialState::Succeeded),
            trials_failed: c(TrialState::Failed),
            trials_cancelled: c(TrialState::Cancelled),
            submitted_by: r.submitted_by.clone().unwrap_or_default(),
            cancelled_by: r.cancelled_by.clone().unwrap_or_default(),
        })
    }
}

/// Why a dependent trial failed without running.
/// Queue-name prefix of trials pinned to one device (placement `all`).
const PINNED: &str = "@";

/// A device's pin: `AGENT/DEVICE_ID`.
fn pin_of(agent: &AgentId, device: &str) -> String {
    format!("{}/{device}", agent.0)
}

/// The queue a pending trial waits in: its class, `*` for any, or its device.
fn queue_of(rec: &TrialRecord) -> String {
    match &rec.pinned {
        Some(pin) => format!("{PINNED}{pin}"),
        None => rec.device_class.clone(),
    }
}

/// A device as sweep targets see it.
fn view<'a>(name: &'a AgentId, a: &'a AgentState, d: &'a proto::Device) -> DeviceView<'a> {
    DeviceView {
        kind: &d.kind,
        class: &d.device_class,
        model: &d.model,
        vendor: &d.vendor,
        memory_bytes: d.memory_bytes,
        cores: d.cores,
        compute_capability: &d.compute_capability,
        agent: &name.0,
        host: &a.hostname,
        labels: &a.labels,
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
    let depends = if parsed.spec.workload == Workload::Eval {
        // Reference trials come first, numbered in order of first use.
        let mut refs: Vec<Params> = Vec::new();
        parsed
            .configs
            .iter()
            .map(|c| {
                let r = EvalTrial::reference_params(c);
                let i = refs.iter().position(|p| *p == r).unwrap_or_else(|| {
                    refs.push(r);
                    refs.len() - 1
                });
                Some(TrialId::nth(i).0)
            })
            .collect()
    } else {
        vec![None; parsed.configs.len()]
    };
    let mut run = SearchRun::new(&parsed, depends);
    run.subsets = record.class_configs.clone();
    Some(run)
}

fn dep_failure(dep: &TrialKey, state: TrialState, error: Option<&str>) -> String {
    format!(
        "the trial it depends on ({}) ended {}{}",
        dep.trial,
        state.name(),
        error.map(|e| format!(": {e}")).unwrap_or_default()
    )
}

fn cancel_msg(r: &TrialRef) -> proto::ControllerMessage {
    proto::ControllerMessage {
        msg: Some(proto::controller_message::Msg::Cancel(proto::CancelTrial {
            trial: Some(r.to_proto()),
        })),
    }
}
