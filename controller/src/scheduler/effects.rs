//! What one batch of scheduling decisions does, as data: the store writes,
//! the messages to agents, the events for watchers and the metrics to
//! record. The decision core only returns these; the shell
//! ([`super::Scheduler`]) commits the writes and then performs the rest.

use super::core::SweepSummary;
use super::records::{AgentRecord, SweepRecord};
use super::TrialRef;
use crate::metrics::Refusal;
use crate::store::LeaseId;
use chimera_domain::params::Params;
use chimera_domain::results::TrialRecord;
use chimera_domain::spec::Harness;
use chimera_domain::{AgentId, SweepId};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// One store write. Applied in order, all in one transaction.
#[derive(Clone, Debug)]
pub enum Write {
    Trial(TrialRecord),
    Sweep(SweepRecord),
    /// An agent's registration, attached to its lease.
    Agent {
        record: AgentRecord,
        lease: LeaseId,
    },
    /// Bytes a trial produced for later trials of its sweep.
    Artifact {
        sweep: SweepId,
        trial: String,
        bytes: Arc<Vec<u8>>,
    },
}

/// A trial attempt as an agent is told to run it.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    pub trial: TrialRef,
    pub device_id: String,
    pub workload: String,
    pub params: Params,
    pub harness: Harness,
    /// The output of the trial it depends on (an eval reference's logits);
    /// empty when it depends on none.
    pub input: Arc<Vec<u8>>,
    /// W3C trace context of the sweep's submission (empty: not traced).
    pub trace: BTreeMap<String, String>,
}

/// A message to one agent.
#[derive(Clone, Debug, PartialEq)]
pub enum ToAgent {
    /// The answer to a hello: how often to renew the lease.
    Welcome {
        lease_ttl: Duration,
        heartbeat: Duration,
    },
    Assign(Box<Assignment>),
    /// Stop running this attempt.
    Cancel(TrialRef),
    /// Whether a reported result was recorded (and why not).
    Ack {
        trial: TrialRef,
        outcome: Result<(), String>,
    },
    /// Take no new trials.
    Drain,
}

/// What a sweep's watchers are told.
#[derive(Clone, Debug)]
pub struct SweepEvent {
    /// The sweep as it stands after the change.
    pub sweep: SweepSummary,
    /// The trial that changed (none: the sweep itself changed).
    pub trial: Option<TrialRecord>,
}

/// A metric the shell records.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Observation {
    /// A pending trial waited this long for a device.
    AssignmentLatency(Duration),
    /// An agent's result was refused.
    Refused(Refusal),
}

/// Everything a batch does, applied after its store commit.
#[derive(Default, Debug)]
pub struct Effects {
    pub writes: Vec<Write>,
    /// Messages for a session of an agent (dropped if that session is gone).
    pub sends: Vec<(AgentId, u64, ToAgent)>,
    /// Sessions that ended (lease expired): their streams are closed.
    pub closed: Vec<(AgentId, u64)>,
    pub events: Vec<SweepEvent>,
    pub keepalives: Vec<LeaseId>,
    pub revokes: Vec<LeaseId>,
    pub observations: Vec<Observation>,
}

impl Effects {
    /// True when the batch changed nothing the store holds.
    pub fn is_quiet(&self) -> bool {
        self.writes.is_empty()
    }
}

/// One line per effect, stable and readable: what the snapshot tests compare.
impl fmt::Display for Effects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for w in &self.writes {
            match w {
                Write::Trial(t) => {
                    write!(
                        f,
                        "write trial {}/{} {} attempt={} queue={}",
                        t.sweep_id,
                        t.id,
                        t.state.name(),
                        t.attempt,
                        t.device_class
                    )?;
                    if let Some(a) = &t.agent {
                        write!(f, " agent={a}")?;
                    }
                    if let Some(d) = &t.device_id {
                        write!(f, " device={d}")?;
                    }
                    if let Some(p) = &t.pinned {
                        write!(f, " pinned={p}")?;
                    }
                    if let Some(d) = &t.depends_on {
                        write!(f, " depends_on={d}")?;
                    }
                    if let Some(r) = t.rung {
                        write!(f, " rung={r}")?;
                    }
                    if let Some(e) = &t.error {
                        write!(f, " error={e:?}")?;
                    }
                    writeln!(f)?;
                }
                Write::Sweep(s) => writeln!(
                    f,
                    "write sweep {} {} trials_total={}",
                    s.id,
                    s.state.name(),
                    s.trials_total
                )?,
                Write::Agent { record, lease } => writeln!(
                    f,
                    "write agent {} lease={lease}{}",
                    record.name,
                    record
                        .drained_by
                        .as_ref()
                        .map(|b| format!(" drained_by={b}"))
                        .unwrap_or_default()
                )?,
                Write::Artifact {
                    sweep,
                    trial,
                    bytes,
                } => writeln!(f, "write artifact {sweep}/{trial} {} bytes", bytes.len())?,
            }
        }
        for (agent, session, msg) in &self.sends {
            write!(f, "send {agent}#{session} ")?;
            match msg {
                ToAgent::Welcome {
                    lease_ttl,
                    heartbeat,
                } => writeln!(
                    f,
                    "welcome lease_ttl={}ms heartbeat={}ms",
                    lease_ttl.as_millis(),
                    heartbeat.as_millis()
                )?,
                ToAgent::Assign(a) => writeln!(
                    f,
                    "assign {} device={} input={} bytes",
                    a.trial,
                    a.device_id,
                    a.input.len()
                )?,
                ToAgent::Cancel(r) => writeln!(f, "cancel {r}")?,
                ToAgent::Ack { trial, outcome } => match outcome {
                    Ok(()) => writeln!(f, "ack {trial} accepted")?,
                    Err(why) => writeln!(f, "ack {trial} refused: {why}")?,
                },
                ToAgent::Drain => writeln!(f, "drain")?,
            }
        }
        for (agent, session) in &self.closed {
            writeln!(f, "close {agent}#{session}")?;
        }
        for e in &self.events {
            match &e.trial {
                Some(t) => writeln!(f, "event {} trial {} {}", e.sweep.id, t.id, t.state.name())?,
                None => writeln!(
                    f,
                    "event {} {} pending={} running={} succeeded={} failed={} cancelled={}",
                    e.sweep.id,
                    e.sweep.state.name(),
                    e.sweep.pending,
                    e.sweep.running,
                    e.sweep.succeeded,
                    e.sweep.failed,
                    e.sweep.cancelled
                )?,
            }
        }
        for l in &self.keepalives {
            writeln!(f, "keepalive lease={l}")?;
        }
        for l in &self.revokes {
            writeln!(f, "revoke lease={l}")?;
        }
        for o in &self.observations {
            match o {
                Observation::AssignmentLatency(d) => {
                    writeln!(f, "observe assignment_latency={}ms", d.as_millis())?
                }
                Observation::Refused(r) => writeln!(f, "observe refused={r:?}")?,
            }
        }
        Ok(())
    }
}
