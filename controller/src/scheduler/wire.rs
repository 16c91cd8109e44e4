//! The scheduler's answers and directives in the wire's terms: messages to
//! agents, sweep and agent views for operators, watch events.

use super::core::{AgentSummary, SweepSummary};
use super::effects::{SweepEvent, ToAgent};
use super::records::SweepState;
use chimera_domain::params::params_to_proto;
use chimera_domain::AgentId;
use chimera_proto::v1 as proto;
use proto::controller_message::Msg;

/// Millis as the wire's `u32`, saturating.
fn millis_u32(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// A message to an agent. An assignment becomes a span of its sweep's
/// submission trace; the agent's run is that span's child.
pub fn to_agent(agent: &AgentId, msg: ToAgent) -> proto::ControllerMessage {
    let msg = match msg {
        ToAgent::Welcome {
            lease_ttl,
            heartbeat,
        } => Msg::Welcome(proto::Welcome {
            lease_ttl_ms: millis_u32(lease_ttl),
            heartbeat_interval_ms: millis_u32(heartbeat),
            controller_version: env!("CARGO_PKG_VERSION").to_owned(),
        }),
        ToAgent::Assign(a) => {
            let trace_context = if a.trace.is_empty() {
                std::collections::HashMap::new()
            } else {
                let span = tracing::info_span!("chimera.controller.assign", sweep = %a.trial.key.sweep, trial = %a.trial.key.trial, agent = %agent);
                let parent: std::collections::HashMap<String, String> =
                    a.trace.into_iter().collect();
                chimera_observe::set_parent(&span, &parent);
                chimera_observe::inject(&span)
            };
            Msg::Assign(proto::AssignTrial {
                trial: Some((&a.trial).into()),
                device_id: a.device_id,
                workload: a.workload,
                params: params_to_proto(&a.params),
                harness: Some(proto::HarnessConfig {
                    warmup_iters: a.harness.warmup_iters,
                    min_iters: a.harness.min_iters,
                    min_time_ms: a.harness.min_time_ms,
                    max_time_ms: a.harness.max_time_ms,
                }),
                input: a.input.as_ref().clone(),
                trace_context,
            })
        }
        ToAgent::Cancel(r) => Msg::Cancel(proto::CancelTrial {
            trial: Some((&r).into()),
        }),
        ToAgent::Ack { trial, outcome } => {
            let (accepted, reason) = match outcome {
                Ok(()) => (true, String::new()),
                Err(reason) => (false, reason),
            };
            Msg::Ack(proto::ResultAck {
                trial: Some((&trial).into()),
                accepted,
                reason,
            })
        }
        ToAgent::Drain => Msg::Drain(proto::Drain {}),
    };
    proto::ControllerMessage { msg: Some(msg) }
}

impl From<SweepState> for proto::SweepState {
    fn from(s: SweepState) -> Self {
        match s {
            SweepState::Waiting => proto::SweepState::Waiting,
            SweepState::Running => proto::SweepState::Running,
            SweepState::Done => proto::SweepState::Done,
            SweepState::Cancelled => proto::SweepState::Cancelled,
        }
    }
}

impl From<SweepSummary> for proto::Sweep {
    fn from(s: SweepSummary) -> Self {
        proto::Sweep {
            id: s.id.0,
            name: s.name,
            workload: s.workload,
            state: proto::SweepState::from(s.state) as i32,
            created_unix_ms: s.created_unix_ms,
            spec_yaml: s.spec_yaml.unwrap_or_default(),
            trials_total: s.trials_total,
            trials_pending: s.pending,
            trials_running: s.running,
            trials_succeeded: s.succeeded,
            trials_failed: s.failed,
            trials_cancelled: s.cancelled,
            submitted_by: s.submitted_by.unwrap_or_default(),
            cancelled_by: s.cancelled_by.unwrap_or_default(),
            order_seed: s.order_seed,
            waiting_for: s.waiting_for.unwrap_or_default(),
        }
    }
}

impl From<AgentSummary> for proto::Agent {
    fn from(a: AgentSummary) -> Self {
        proto::Agent {
            name: a.name.0,
            hostname: a.hostname,
            version: a.version,
            devices: a.devices.iter().map(Into::into).collect(),
            features: a.features,
            running: a.running.iter().map(Into::into).collect(),
            last_seen_ms_ago: u64::try_from(a.last_seen.as_millis()).unwrap_or(u64::MAX),
            connected: a.connected,
            draining: a.draining,
            labels: a.labels.into_iter().collect(),
            registered_by: a.registered_by,
            drained_by: a.drained_by.unwrap_or_default(),
        }
    }
}

impl From<SweepEvent> for proto::SweepEvent {
    fn from(e: SweepEvent) -> Self {
        proto::SweepEvent {
            sweep: Some(e.sweep.into()),
            trial: e.trial.as_ref().map(Into::into),
        }
    }
}
