//! The operator service the CLI talks to.

use crate::error::{check_id, ApiError};
use crate::keys;
use crate::scheduler::Command;
use crate::store::Store;
use chimera_domain::results::TrialRecord;
use chimera_domain::{AgentId, SweepId};
use chimera_proto::v1 as proto;
use chimera_proto::v1::operator_service_server::OperatorService;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// Largest spec accepted, bytes.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// The gRPC handler.
pub struct OperatorApi {
    pub commands: mpsc::Sender<Command>,
    pub store: Arc<dyn Store>,
    pub events: broadcast::Sender<proto::SweepEvent>,
    pub telemetry: Arc<crate::telemetry::TelemetryStore>,
}

impl OperatorApi {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| Status::unavailable("controller is shutting down"))?;
        rx.await
            .map_err(|_| Status::unavailable("controller is shutting down or its store failed"))
    }

    async fn sweep(&self, id: &str) -> Result<proto::Sweep, Status> {
        check_id("sweep_id", id)?;
        let sweep = SweepId(id.to_owned());
        Ok(self
            .ask(|reply| Command::GetSweep { sweep, reply })
            .await??)
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::SweepEvent, Status>> + Send>>;

fn finished(s: &proto::Sweep) -> bool {
    s.state != proto::SweepState::Running as i32
}

#[tonic::async_trait]
impl OperatorService for OperatorApi {
    async fn submit_sweep(
        &self,
        request: Request<proto::SubmitSweepRequest>,
    ) -> Result<Response<proto::SubmitSweepResponse>, Status> {
        let span = tracing::info_span!("chimera.controller.submit", sweep = tracing::field::Empty);
        chimera_observe::set_parent(&span, &chimera_observe::from_metadata(request.metadata()));
        let trace = chimera_observe::inject(&span);
        let req = request.into_inner();
        let source_name = if req.source_name.is_empty() {
            "spec".to_owned()
        } else {
            req.source_name.chars().take(256).collect()
        };
        if req.spec_yaml.len() > MAX_SPEC_BYTES {
            return Err(ApiError::InvalidArgument(format!(
                "{source_name}: spec of {} bytes exceeds the limit of {MAX_SPEC_BYTES} bytes",
                req.spec_yaml.len()
            ))
            .into());
        }
        let parsed = chimera_domain::spec::parse(&req.spec_yaml)
            .map_err(|e| ApiError::InvalidArgument(format!("{source_name}: {e}")))?;
        let source = req.spec_yaml;
        let (id, trials) = self
            .ask(|reply| Command::Submit {
                parsed: Box::new(parsed),
                source,
                trace: trace.into_iter().collect(),
                reply,
            })
            .instrument(span.clone())
            .await?
            .map_err(|e| match e {
                ApiError::InvalidArgument(m) => {
                    ApiError::InvalidArgument(format!("{source_name}: {m}"))
                }
                other => other,
            })?;
        span.record("sweep", id.0.as_str());
        Ok(Response::new(proto::SubmitSweepResponse {
            sweep_id: id.0,
            trials,
        }))
    }

    async fn get_sweep(
        &self,
        request: Request<proto::GetSweepRequest>,
    ) -> Result<Response<proto::Sweep>, Status> {
        Ok(Response::new(
            self.sweep(&request.into_inner().sweep_id).await?,
        ))
    }

    async fn list_sweeps(
        &self,
        _: Request<proto::ListSweepsRequest>,
    ) -> Result<Response<proto::ListSweepsResponse>, Status> {
        let sweeps = self.ask(|reply| Command::ListSweeps { reply }).await?;
        Ok(Response::new(proto::ListSweepsResponse { sweeps }))
    }

    async fn cancel_sweep(
        &self,
        request: Request<proto::CancelSweepRequest>,
    ) -> Result<Response<proto::Sweep>, Status> {
        let id = request.into_inner().sweep_id;
        check_id("sweep_id", &id)?;
        let sweep = SweepId(id);
        Ok(Response::new(
            self.ask(|reply| Command::Cancel { sweep, reply }).await??,
        ))
    }

    async fn get_telemetry(
        &self,
        request: Request<proto::GetTelemetryRequest>,
    ) -> Result<Response<proto::GetTelemetryResponse>, Status> {
        let r = request.into_inner();
        self.sweep(&r.sweep_id).await?;
        check_id("trial_id", &r.trial_id)?;
        let key = keys::trial(&r.sweep_id, &r.trial_id);
        if self
            .store
            .get(key.as_bytes())
            .await
            .map_err(ApiError::from)?
            .is_none()
        {
            return Err(ApiError::NotFound(format!(
                "trial `{}` not found in sweep `{}`",
                r.trial_id, r.sweep_id
            ))
            .into());
        }
        let t = self.telemetry.clone();
        let samples = tokio::task::spawn_blocking(move || t.read(&r.sweep_id, &r.trial_id))
            .await
            .map_err(|e| Status::internal(format!("read telemetry: {e}")))?
            .unwrap_or_else(|| Ok(Vec::new()))
            .map_err(|e| Status::internal(format!("read telemetry: {e}")))?;
        Ok(Response::new(proto::GetTelemetryResponse {
            samples: samples.iter().map(Into::into).collect(),
        }))
    }

    async fn live_telemetry(
        &self,
        _request: Request<proto::LiveTelemetryRequest>,
    ) -> Result<Response<proto::LiveTelemetryResponse>, Status> {
        let samples = self
            .telemetry
            .latest()
            .iter()
            .map(|(agent, s)| proto::AgentSample {
                agent: agent.clone(),
                sample: Some(s.into()),
            })
            .collect();
        Ok(Response::new(proto::LiveTelemetryResponse { samples }))
    }

    async fn list_trials(
        &self,
        request: Request<proto::ListTrialsRequest>,
    ) -> Result<Response<proto::ListTrialsResponse>, Status> {
        let id = request.into_inner().sweep_id;
        self.sweep(&id).await?;
        let range = self
            .store
            .range(keys::trials(&id).as_bytes())
            .await
            .map_err(ApiError::from)?;
        let trials = range
            .kvs
            .iter()
            .map(|kv| {
                serde_json::from_slice::<TrialRecord>(&kv.value)
                    .map(|t| proto::Trial::from(&t))
                    .map_err(|e| {
                        Status::internal(format!(
                            "decode {}: {e}",
                            String::from_utf8_lossy(&kv.key)
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Response::new(proto::ListTrialsResponse { trials }))
    }

    async fn list_agents(
        &self,
        _: Request<proto::ListAgentsRequest>,
    ) -> Result<Response<proto::ListAgentsResponse>, Status> {
        let mut agents = self.ask(|reply| Command::ListAgents { reply }).await?;
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(proto::ListAgentsResponse { agents }))
    }

    async fn drain_agent(
        &self,
        request: Request<proto::DrainAgentRequest>,
    ) -> Result<Response<proto::Agent>, Status> {
        let name = request.into_inner().name;
        check_id("name", &name)?;
        let agent = AgentId(name);
        Ok(Response::new(
            self.ask(|reply| Command::Drain { agent, reply }).await??,
        ))
    }

    type WatchSweepStream = EventStream;

    async fn watch_sweep(
        &self,
        request: Request<proto::WatchSweepRequest>,
    ) -> Result<Response<Self::WatchSweepStream>, Status> {
        let id = request.into_inner().sweep_id;
        // Subscribe before the snapshot so no change falls between them.
        let mut events = self.events.subscribe();
        let snapshot = self.sweep(&id).await?;
        let (tx, rx) = mpsc::channel(64);
        let this_commands = self.commands.clone();
        tokio::spawn(async move {
            let done = finished(&snapshot);
            if tx
                .send(Ok(proto::SweepEvent {
                    sweep: Some(snapshot),
                    trial: None,
                }))
                .await
                .is_err()
                || done
            {
                return;
            }
            loop {
                let ev = match events.recv().await {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Fell behind: send a fresh snapshot instead of the lost events.
                        let (reply, answer) = oneshot::channel();
                        let sweep = SweepId(id.clone());
                        if this_commands
                            .send(Command::GetSweep { sweep, reply })
                            .await
                            .is_err()
                        {
                            return;
                        }
                        match answer.await {
                            Ok(Ok(s)) => proto::SweepEvent {
                                sweep: Some(s),
                                trial: None,
                            },
                            _ => return,
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some(sweep) = &ev.sweep else { continue };
                if sweep.id != id {
                    continue;
                }
                let done = finished(sweep);
                if tx.send(Ok(ev)).await.is_err() || done {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
