//! The agent service: one bidirectional stream per agent. This module validates
//! what arrives (the receiver validates) and turns it into scheduler commands.

use crate::error::{check_id, ApiError};
use crate::scheduler::{AgentEvent, Command, Hello, TrialKey, TrialRef};
use chimera_domain::{AgentId, SweepId, TrialId};
use chimera_proto::v1 as proto;
use chimera_proto::v1::agent_service_server::AgentService;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

/// Most devices one agent may report.
const MAX_DEVICES: usize = 256;
/// Most metrics one result may carry.
const MAX_METRICS: usize = 512;
/// Largest `detail_json` of a finished trial.
const MAX_DETAIL_BYTES: usize = 512 << 10;
/// Largest artifact of a finished trial (one store value).
pub const MAX_ARTIFACT_BYTES: usize = 1 << 20;
/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages buffered towards one agent.
const OUTBOUND: usize = 1024;

/// The gRPC handler.
pub struct AgentApi {
    pub commands: mpsc::Sender<Command>,
    pub telemetry: std::sync::Arc<crate::telemetry::TelemetryStore>,
}

/// Most samples accepted in one telemetry batch.
const MAX_BATCH_SAMPLES: usize = 100_000;

fn invalid(m: String) -> Status {
    ApiError::InvalidArgument(m).into()
}

fn trial_ref(r: Option<proto::TrialRef>, what: &str) -> Result<TrialRef, Status> {
    let r = r.ok_or_else(|| invalid(format!("{what}.trial is missing")))?;
    check_id(&format!("{what}.trial.sweep_id"), &r.sweep_id)?;
    check_id(&format!("{what}.trial.trial_id"), &r.trial_id)?;
    Ok(TrialRef {
        key: TrialKey {
            sweep: SweepId(r.sweep_id),
            trial: TrialId(r.trial_id),
        },
        attempt: r.attempt,
    })
}

impl TryFrom<proto::Hello> for Hello {
    type Error = Status;
    fn try_from(h: proto::Hello) -> Result<Self, Status> {
        check_id("hello.agent_name", &h.agent_name)?;
        if h.devices.len() > MAX_DEVICES {
            return Err(invalid(format!(
                "hello.devices: {} devices exceeds the limit of {MAX_DEVICES}",
                h.devices.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for d in &h.devices {
            if d.id.is_empty() || !seen.insert(d.id.as_str()) {
                return Err(invalid(format!(
                    "hello.devices: device id `{}` is empty or repeated",
                    d.id
                )));
            }
            if d.device_class.is_empty() || d.device_class.len() > 256 {
                return Err(invalid(format!(
                    "hello.devices[{}].device_class `{}` must be 1 to 256 characters",
                    d.id, d.device_class
                )));
            }
            if d.kind != "cpu" && d.kind != "gpu" {
                return Err(invalid(format!(
                    "hello.devices[{}].kind `{}` must be `cpu` or `gpu`",
                    d.id, d.kind
                )));
            }
        }
        if h.labels.len() > 64 {
            return Err(invalid(format!(
                "hello.labels: {} labels exceeds the limit of 64",
                h.labels.len()
            )));
        }
        for (k, v) in &h.labels {
            let key_ok = !k.is_empty()
                && k.len() <= 63
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
            if !key_ok || v.len() > 253 {
                return Err(invalid(format!(
                    "hello.labels: `{k}` = `{v}`: keys are 1 to 63 letters, digits, `_`, `-`, `.`; values at most 253 bytes"
                )));
            }
        }
        let running = h
            .running
            .into_iter()
            .map(|r| trial_ref(Some(r), "hello.running"))
            .collect::<Result<_, _>>()?;
        Ok(Hello {
            name: AgentId(h.agent_name),
            version: h.agent_version,
            hostname: h.hostname,
            devices: h.devices,
            features: h.features,
            running,
            labels: h.labels.into_iter().collect(),
        })
    }
}

fn event(msg: proto::agent_message::Msg) -> Result<AgentEvent, Status> {
    use proto::agent_message::Msg;
    Ok(match msg {
        Msg::Hello(_) => return Err(invalid("hello may only be the first message".into())),
        Msg::Telemetry(_) => return Err(invalid("telemetry is not a scheduling event".into())),
        Msg::Heartbeat(h) => AgentEvent::Heartbeat(
            h.running
                .into_iter()
                .map(|r| trial_ref(Some(r), "heartbeat.running"))
                .collect::<Result<_, _>>()?,
        ),
        Msg::Started(s) => AgentEvent::Started(trial_ref(s.trial, "started")?),
        Msg::Finished(f) => {
            let trial = trial_ref(f.trial, "finished")?;
            if f.detail_json.len() > MAX_DETAIL_BYTES || f.artifact.len() > MAX_ARTIFACT_BYTES {
                return Err(invalid(format!(
                    "finished: detail of {} bytes or artifact of {} bytes exceeds the limits ({MAX_DETAIL_BYTES} / {MAX_ARTIFACT_BYTES} bytes)",
                    f.detail_json.len(),
                    f.artifact.len()
                )));
            }
            if f.metrics.len() > MAX_METRICS {
                return Err(invalid(format!(
                    "finished.metrics: {} metrics exceeds the limit of {MAX_METRICS}",
                    f.metrics.len()
                )));
            }
            if let Some((k, v)) = f
                .metrics
                .iter()
                .find(|(k, v)| !v.is_finite() || k.is_empty() || k.len() > 128)
            {
                return Err(invalid(format!(
                    "finished.metrics: `{k}` = {v} is not a finite number with a 1-128 character name"
                )));
            }
            AgentEvent::Finished {
                trial,
                metrics: f.metrics.into_iter().collect::<BTreeMap<_, _>>(),
                fingerprint: Box::new(f.fingerprint.unwrap_or_default().into()),
                wall_ms: if f.wall_ms.is_finite() {
                    f.wall_ms
                } else {
                    0.0
                },
                detail: if f.detail_json.is_empty() {
                    None
                } else {
                    Some(
                        serde_json::from_str(&f.detail_json).map_err(|e| {
                            invalid(format!("finished.detail_json is not JSON: {e}"))
                        })?,
                    )
                },
                artifact: f.artifact,
            }
        }
        Msg::Failed(f) => AgentEvent::Failed {
            trial: trial_ref(f.trial, "failed")?,
            reason: f.reason.chars().take(4096).collect(),
        },
    })
}

type OutStream = Pin<Box<dyn Stream<Item = Result<proto::ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    type SessionStream = OutStream;

    async fn session(
        &self,
        request: Request<Streaming<proto::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| invalid("no hello within 10 s".into()))??;
        let hello = match first.and_then(|m| m.msg) {
            Some(proto::agent_message::Msg::Hello(h)) => Hello::try_from(h)?,
            _ => {
                return Err(invalid(
                    "the first message on a session must be hello".into(),
                ))
            }
        };
        let name = hello.name.clone();
        let (tx, rx) = mpsc::channel(OUTBOUND);
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Hello { hello, tx, reply })
            .await
            .map_err(|_| Status::unavailable("controller is shutting down"))?;
        let session = answer
            .await
            .map_err(|_| Status::unavailable("controller is shutting down"))??;
        let commands = self.commands.clone();
        let telemetry = self.telemetry.clone();
        tokio::spawn(async move {
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        debug!(agent = %name, error = %e, "agent stream error");
                        break;
                    }
                };
                let Some(msg) = msg.msg else { continue };
                if let proto::agent_message::Msg::Telemetry(batch) = msg {
                    if batch.samples.len() > MAX_BATCH_SAMPLES {
                        warn!(agent = %name, samples = batch.samples.len(), "refused an oversized telemetry batch");
                        continue;
                    }
                    let (t, agent) = (telemetry.clone(), name.0.clone());
                    let samples = batch.samples.into_iter().map(Into::into).collect();
                    let dropped = batch.dropped;
                    // File appends: off the async runtime.
                    let _ = tokio::task::spawn_blocking(move || t.record(&agent, samples, dropped))
                        .await;
                    continue;
                }
                match event(msg) {
                    Ok(event) => {
                        let cmd = Command::Agent {
                            agent: name.clone(),
                            session,
                            event,
                        };
                        if commands.send(cmd).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => warn!(agent = %name, error = %e.message(), "refused agent message"),
                }
            }
            let _ = commands
                .send(Command::Gone {
                    agent: name,
                    session,
                })
                .await;
        });
        let out = ReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(out)))
    }
}
