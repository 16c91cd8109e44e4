//! The scheduler's shell: the one task that owns the scheduling state, fed
//! commands over a bounded channel; it asks the decision core
//! ([`core::Core`]) what each batch does and then does it (store, leases,
//! agent streams, callers, watchers).
//!
//! Architecture invariants:
//! - Only this loop mutates scheduling state; services talk to it by [`Command`].
//! - Every decision is a synchronous function of the core: a command and the
//!   clock in, [`effects::Effects`] (domain data) out. The network, the store
//!   and the clock stay here, at the edge, so the core is tested without them
//!   (`scheduler/tests.rs`).
//! - Commands are handled in batches: every change a batch makes goes to the store
//!   in **one** transaction (group commit), and only after that commit are agents
//!   messaged, callers answered and watchers told. Nothing is acknowledged before
//!   it is durable; a store write that fails stops the controller (it recovers
//!   from the store on restart) rather than let memory and store disagree.
//! - No scan of the store per assignment: pending trials wait in a FIFO per
//!   sweep within each [`records::Queue`] (sweeps served in turn, so sweeps
//!   sharing devices interleave; `queue.rs`), free devices sit in an index per
//!   class; assignment is a pop from each.
//! - An attempt number fences every trial: a report for any attempt but the
//!   current one, or from another agent, is refused.

mod agents;
pub mod core;
pub mod effects;
mod plan;
mod queue;
pub mod records;
mod recover;
mod search_run;
#[cfg(test)]
mod tests;
mod trials;
pub mod wire;

use self::core::{AgentSummary, Core, Now, SweepSummary};
use self::effects::{Effects, Observation};
use crate::error::ApiError;
use crate::keys;
use crate::store::{Store, StoreError, Txn, TxnResult};
use chimera_domain::device::Device;
use chimera_domain::results::{TrialOutput, TrialRecord};
use chimera_domain::spec::ParsedSweep;
use chimera_domain::{AgentId, SweepId, TrialKey};
use chimera_proto::v1 as proto;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use self::records::{SweepRecord, MAX_RECORD_BYTES};
pub use chimera_domain::TrialRef;

/// Most commands handled (and committed) together.
const MAX_BATCH: usize = 512;

/// A validated `hello`.
#[derive(Clone, Debug)]
pub struct Hello {
    pub name: AgentId,
    pub version: String,
    pub hostname: String,
    pub devices: Vec<Device>,
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
    /// A result, checked at the wire ([`TrialOutput::check`]).
    Finished {
        trial: TrialRef,
        output: Box<TrialOutput>,
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
        /// With its text (`parsed.source`), stored for display.
        parsed: Box<ParsedSweep>,
        /// W3C trace context of the submission (empty when not traced).
        trace: BTreeMap<String, String>,
        /// Who submitted it (the audit record).
        by: String,
        /// Store it to wait for a matching device when none is connected
        /// (else refuse it).
        wait: bool,
        reply: Reply<(SweepId, u32)>,
    },
    Cancel {
        sweep: SweepId,
        /// Who cancelled it (the audit record).
        by: String,
        reply: Reply<SweepSummary>,
    },
    /// A sweep with its spec text.
    GetSweep {
        sweep: SweepId,
        reply: Reply<SweepSummary>,
    },
    /// A page of sweeps, newest first, older than `before` (if given).
    ListSweeps {
        before: Option<SweepId>,
        limit: usize,
        reply: oneshot::Sender<Vec<SweepSummary>>,
    },
    /// A page of connected agents by name, after `after` (if given).
    ListAgents {
        after: Option<AgentId>,
        limit: usize,
        reply: oneshot::Sender<Vec<AgentSummary>>,
    },
    /// Answers at once: the loop is alive (the systemd watchdog asks).
    Ping { reply: oneshot::Sender<()> },
    /// Agents connected and trials by state (for the metrics endpoint).
    Gauges { reply: oneshot::Sender<Gauges> },
    Drain {
        agent: AgentId,
        /// Who drained it (the audit record).
        by: String,
        reply: Reply<AgentSummary>,
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

/// One batch's answers to callers, sent after its commit.
#[derive(Default)]
struct Replies(Vec<Box<dyn FnOnce() + Send>>);

impl Replies {
    fn push<T: Send + 'static>(&mut self, tx: oneshot::Sender<T>, value: T) {
        self.0.push(Box::new(move || {
            let _ = tx.send(value);
        }));
    }
}

/// The shell; see the module docs.
pub struct Scheduler {
    core: Core,
    store: Arc<dyn Store>,
    /// The open stream of each connected agent, by session.
    streams: HashMap<AgentId, (u64, mpsc::Sender<proto::ControllerMessage>)>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    events: broadcast::Sender<proto::SweepEvent>,
}

fn decode<T: serde::de::DeserializeOwned>(kv: &crate::store::KeyValue) -> anyhow::Result<T> {
    serde_json::from_slice(&kv.value)
        .map_err(|e| anyhow::anyhow!("decode {}: {e}", String::from_utf8_lossy(&kv.key)))
}

impl Scheduler {
    /// Rebuilds the scheduler from the store: sweeps, their progress, pending queues;
    /// trials that were running wait one lease TTL for their agent to come back.
    pub async fn recover(
        store: Arc<dyn Store>,
        config: SchedulerConfig,
        events: broadcast::Sender<proto::SweepEvent>,
    ) -> anyhow::Result<Self> {
        let sweeps = store.range(keys::sweeps().as_bytes()).await?.kvs;
        let sweeps = sweeps.iter().map(decode).collect::<anyhow::Result<_>>()?;
        let trials = store.range(keys::all_trials().as_bytes()).await?.kvs;
        let trials: Vec<TrialRecord> = trials.iter().map(decode).collect::<anyhow::Result<_>>()?;
        let (core, recovering) = Core::recover(config, Now::system(), sweeps, trials);
        let mut artifacts: HashMap<TrialKey, Vec<u8>> = HashMap::new();
        for dep in &recovering.needed {
            let k = keys::artifact(&dep.sweep.0, &dep.trial.0);
            match store.get(k.as_bytes()).await? {
                Some(kv) => {
                    artifacts.insert(dep.clone(), kv.value);
                }
                None => {
                    warn!(sweep = %dep.sweep, trial = %dep.trial, "artifact of a succeeded reference trial is missing from the store")
                }
            }
        }
        let held = recovering.held;
        let mut s = Scheduler {
            core,
            store,
            streams: HashMap::new(),
            metrics: None,
            events,
        };
        let mut fx = Effects::default();
        s.core.resume(recovering, artifacts, &mut fx);
        s.commit(fx, Replies::default()).await?;
        let (sweeps, live) = s.core.size();
        info!(
            sweeps,
            live_trials = live,
            held_by_absent_agents = held,
            "recovered state from store"
        );
        Ok(s)
    }

    /// Exports assignment latency and refused results to these metrics.
    pub fn set_metrics(&mut self, m: Arc<crate::metrics::Metrics>) {
        self.metrics = Some(m);
    }

    /// Runs the loop until `shutdown` or until the command channel closes.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let period = (self.core.config.lease_ttl / 4).max(Duration::from_millis(50));
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
            self.core.set_now(Now::system());
            let mut fx = Effects::default();
            let mut replies = Replies::default();
            // The batch first: an agent's message waiting in it renews its
            // lease before the leases are checked.
            for c in batch {
                self.handle(c, &mut fx, &mut replies).await;
            }
            if ticked {
                self.core.tick(&mut fx);
            }
            self.core.dispatch(&mut fx);
            let committing = Instant::now();
            self.commit(fx, replies).await?;
            // While a commit was retried (etcd losing a member), this loop
            // heard no agent: that time does not count against their leases.
            let stalled = committing.elapsed();
            if stalled > period {
                self.core.extend_leases(stalled);
            }
        }
    }

    async fn handle(&mut self, cmd: Command, fx: &mut Effects, replies: &mut Replies) {
        let core = &mut self.core;
        match cmd {
            Command::Hello {
                hello,
                tx,
                proven,
                registered_by,
                reply,
            } => {
                let r = self.hello(hello, tx, proven, registered_by, fx).await;
                replies.push(reply, r);
            }
            Command::Agent {
                agent,
                session,
                event,
            } => core.agent_event(&agent, session, event, fx),
            Command::Gone { agent, session } => {
                if self.streams.get(&agent).is_some_and(|s| s.0 == session) {
                    self.streams.remove(&agent);
                }
                core.gone(&agent, session);
            }
            Command::Submit {
                parsed,
                trace,
                by,
                wait,
                reply,
            } => {
                let id = SweepId(ulid::Ulid::new().to_string());
                replies.push(reply, core.submit(id, &parsed, trace, by, wait, fx));
            }
            Command::Cancel { sweep, by, reply } => {
                replies.push(reply, core.cancel(&sweep, by, fx));
            }
            Command::GetSweep { sweep, reply } => replies.push(reply, core.sweep(&sweep, true)),
            Command::ListSweeps {
                before,
                limit,
                reply,
            } => replies.push(reply, core.list_sweeps(before.as_ref(), limit)),
            Command::Ping { reply } => replies.push(reply, ()),
            Command::Gauges { reply } => replies.push(reply, core.gauges()),
            Command::ListAgents {
                after,
                limit,
                reply,
            } => replies.push(reply, core.list_agents(after.as_ref(), limit)),
            Command::Drain { agent, by, reply } => {
                replies.push(reply, core.drain(&agent, by, fx));
            }
        }
    }

    /// A hello: admitted by the core, then given a lease (the one store call
    /// a decision waits for), then registered.
    async fn hello(
        &mut self,
        hello: Hello,
        tx: mpsc::Sender<proto::ControllerMessage>,
        proven: bool,
        registered_by: String,
        fx: &mut Effects,
    ) -> Result<(u64, Vec<TrialRef>), ApiError> {
        let open = self
            .streams
            .get(&hello.name)
            .is_some_and(|(_, t)| !t.is_closed());
        self.core.admit(&hello, open, proven)?;
        let lease = self.store.lease_grant(self.core.config.lease_ttl).await?;
        let name = hello.name.clone();
        let (session, kept) = self.core.connect(hello, lease, registered_by, fx);
        // A stream it had before is dropped here, which closes it.
        self.streams.insert(name, (session, tx));
        Ok((session, kept))
    }

    /// Commits the batch's writes, then performs the rest of its effects
    /// and answers its callers.
    async fn commit(&mut self, fx: Effects, replies: Replies) -> anyhow::Result<()> {
        if !fx.writes.is_empty() {
            let ops = fx
                .writes
                .iter()
                .map(records::op)
                .collect::<anyhow::Result<Vec<_>>>()?;
            let n = ops.len();
            let txn = Txn {
                success: ops,
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
        for (agent, session) in fx.closed {
            if self.streams.get(&agent).is_some_and(|s| s.0 == session) {
                self.streams.remove(&agent);
            }
        }
        for (agent, session, msg) in fx.sends {
            let Some((_, tx)) = self.streams.get(&agent).filter(|s| s.0 == session) else {
                continue;
            };
            if tx.try_send(wire::to_agent(&agent, msg)).is_err() {
                warn!("agent stream is full or closed; message dropped (its lease will reconcile)");
            }
        }
        if let Some(m) = &self.metrics {
            for o in fx.observations {
                match o {
                    Observation::AssignmentLatency(d) => {
                        m.assignment_latency.observe(d.as_secs_f64())
                    }
                    Observation::Refused(r) => m.result_refused(r),
                }
            }
        }
        for ev in fx.events {
            let _ = self.events.send(ev.into());
        }
        for r in replies.0 {
            r();
        }
        Ok(())
    }

    /// Commits `txn`, retrying backend errors for up to
    /// `config.store_retry` with capped exponential backoff (see
    /// [`SchedulerConfig::store_retry`] for why that is safe).
    async fn commit_with_retries(&self, txn: Txn) -> anyhow::Result<TxnResult> {
        let n = txn.success.len();
        let retry = self.core.config.store_retry;
        if retry.is_zero() {
            return self
                .store
                .txn(txn)
                .await
                .map_err(|e| anyhow::anyhow!("commit {n} scheduler writes: {e}"));
        }
        let started = Instant::now();
        let mut backoff =
            chimera_observe::retry::Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
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
                Err(e @ StoreError::Backend(_)) if started.elapsed() < retry => {
                    if tries == 1 {
                        warn!(error = %e, writes = n, "commit failed; retrying while the store recovers");
                    }
                    let delay = backoff.next_delay();
                    tokio::time::sleep(delay.min(retry.saturating_sub(started.elapsed()))).await;
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
}
