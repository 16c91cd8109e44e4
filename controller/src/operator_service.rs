//! The operator service the CLI talks to. Who may call which method is
//! decided before a handler runs (`crate::auth`); handlers record who did
//! what in the audit log (tracing target `audit`, and the sweep or agent
//! record in the store).

use crate::auth::Caller;
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
use tracing::{info, Instrument};

/// Largest spec accepted, bytes.
pub const MAX_SPEC_BYTES: usize = 1 << 20;
/// Entries of a list page when the request asks for none (and the most).
pub const PAGE_SIZE: usize = 1000;
/// A page of trials ends before its encoding passes this (the gRPC message
/// limit is 4 MiB).
pub const PAGE_BYTES: usize = 3 << 20;

/// The gRPC handler.
pub struct OperatorApi {
    pub commands: mpsc::Sender<Command>,
    pub store: Arc<dyn Store>,
    pub events: broadcast::Sender<proto::SweepEvent>,
    pub telemetry: Arc<crate::telemetry::TelemetryStore>,
    pub limits: crate::Limits,
    /// Specs parsed at once (on blocking threads).
    pub parses: Arc<tokio::sync::Semaphore>,
    /// `WatchSweep` streams open at once ([`MAX_WATCHES`]).
    pub watches: Arc<tokio::sync::Semaphore>,
}

/// Most `WatchSweep` streams open at once, over every connection.
pub const MAX_WATCHES: usize = 1024;

/// A request's page size: 0 is the default; more than [`PAGE_SIZE`] is cut to it.
fn page_size(n: u32) -> usize {
    match n as usize {
        0 => PAGE_SIZE,
        n => n.min(PAGE_SIZE),
    }
}

/// A page token, checked by the id rule (it is the last id of the previous page).
fn page_token(token: String) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    check_id("page_token", &token)?;
    Ok(Some(token))
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

    /// Parses a spec on a blocking thread, at most `limits.spec_parses` at
    /// once, within `limits.spec_parse_timeout`: a pathological document
    /// cannot stall the runtime's workers (which serve every other RPC and
    /// the systemd watchdog). A parse past its time is refused; its thread
    /// finishes in the background, still holding its permit.
    async fn parse(&self, source: String) -> Result<chimera_domain::spec::ParsedSweep, String> {
        let permit = tokio::time::timeout(
            self.limits.spec_parse_timeout,
            self.parses.clone().acquire_owned(),
        )
        .await
        .map_err(|_| {
            format!(
                "the controller is busy parsing other specs; try again in a moment (waited {:?})",
                self.limits.spec_parse_timeout
            )
        })?
        .map_err(|_| "the controller is shutting down".to_owned())?;
        let limits = chimera_domain::spec::Limits {
            max_trials: self.limits.max_trials_per_sweep,
        };
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            chimera_domain::spec::parse_with(&source, &limits)
        });
        match tokio::time::timeout(self.limits.spec_parse_timeout, job).await {
            Ok(Ok(r)) => r.map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(format!("parse the spec: {e}")),
            Err(_) => Err(format!(
                "the spec took longer than {:?} to parse; simplify it",
                self.limits.spec_parse_timeout
            )),
        }
    }

    async fn sweep(&self, id: &str) -> Result<proto::Sweep, Status> {
        check_id("sweep_id", id)?;
        let sweep = SweepId(id.to_owned());
        Ok(self
            .ask(|reply| Command::GetSweep { sweep, reply })
            .await??
            .into())
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::SweepEvent, Status>> + Send>>;

fn finished(s: &proto::Sweep) -> bool {
    s.state == proto::SweepState::Done as i32 || s.state == proto::SweepState::Cancelled as i32
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
        let by = Caller::of(&request).audit_name();
        let req = request.into_inner();
        // The file name only labels errors: printable, short.
        let source_name = if req.source_name.is_empty() {
            "spec".to_owned()
        } else {
            req.source_name
                .chars()
                .filter(|c| !c.is_control())
                .take(256)
                .collect()
        };
        if req.spec_yaml.len() > MAX_SPEC_BYTES {
            return Err(ApiError::InvalidArgument(format!(
                "{source_name}: spec of {} bytes exceeds the limit of {MAX_SPEC_BYTES} bytes",
                req.spec_yaml.len()
            ))
            .into());
        }
        let parsed = self
            .parse(req.spec_yaml.clone())
            .await
            .map_err(|e| ApiError::InvalidArgument(format!("{source_name}: {e}")))?;
        let submitter = by.clone();
        let (id, trials) = self
            .ask(|reply| Command::Submit {
                parsed: Box::new(parsed),
                trace: trace.into_iter().collect(),
                by: submitter,
                wait: !req.no_wait_for_agents,
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
        info!(target: "audit", action = "submit", caller = %by, sweep = %id, trials, "sweep submitted");
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
        request: Request<proto::ListSweepsRequest>,
    ) -> Result<Response<proto::ListSweepsResponse>, Status> {
        let r = request.into_inner();
        let limit = page_size(r.page_size);
        let before = page_token(r.page_token)?.map(SweepId);
        let sweeps: Vec<proto::Sweep> = self
            .ask(|reply| Command::ListSweeps {
                before,
                limit,
                reply,
            })
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        let next_page_token = if sweeps.len() == limit {
            sweeps.last().map(|s| s.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(proto::ListSweepsResponse {
            sweeps,
            next_page_token,
        }))
    }

    async fn cancel_sweep(
        &self,
        request: Request<proto::CancelSweepRequest>,
    ) -> Result<Response<proto::Sweep>, Status> {
        let by = Caller::of(&request).audit_name();
        let id = request.into_inner().sweep_id;
        check_id("sweep_id", &id)?;
        let sweep = SweepId(id.clone());
        let canceller = by.clone();
        let r = self
            .ask(|reply| Command::Cancel {
                sweep,
                by: canceller,
                reply,
            })
            .await??;
        info!(target: "audit", action = "cancel", caller = %by, sweep = %id, "sweep cancelled");
        Ok(Response::new(r.into()))
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
        use prost::Message;
        // Bounded like a page: a fleet too big for one answer is cut (by
        // agent and device name) rather than failing the call.
        let mut bytes = 0usize;
        let samples = self
            .telemetry
            .latest()
            .iter()
            .map(|(agent, s)| proto::AgentSample {
                agent: agent.clone(),
                sample: Some(s.into()),
            })
            .take_while(|s| {
                bytes += s.encoded_len() + 8;
                bytes <= PAGE_BYTES
            })
            .collect();
        Ok(Response::new(proto::LiveTelemetryResponse { samples }))
    }

    async fn list_trials(
        &self,
        request: Request<proto::ListTrialsRequest>,
    ) -> Result<Response<proto::ListTrialsResponse>, Status> {
        use prost::Message;
        let r = request.into_inner();
        let id = r.sweep_id;
        self.sweep(&id).await?;
        let limit = page_size(r.page_size);
        let after = page_token(r.page_token)?.map(|t| keys::trial(&id, &t));
        let range = self
            .store
            .range_page(
                keys::trials(&id).as_bytes(),
                after.as_deref().map(str::as_bytes),
                limit,
            )
            .await
            .map_err(ApiError::from)?;
        let full = range.kvs.len() == limit;
        let mut trials: Vec<proto::Trial> = Vec::new();
        let mut bytes = 0usize;
        let mut cut = false;
        for kv in &range.kvs {
            let t = serde_json::from_slice::<TrialRecord>(&kv.value)
                .map(|t| proto::Trial::from(&t))
                .map_err(|e| {
                    Status::internal(format!("decode {}: {e}", String::from_utf8_lossy(&kv.key)))
                })?;
            let size = t.encoded_len();
            if !trials.is_empty() && bytes + size > PAGE_BYTES {
                cut = true;
                break;
            }
            bytes += size;
            trials.push(t);
        }
        let next_page_token = if full || cut {
            trials.last().map(|t| t.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(proto::ListTrialsResponse {
            trials,
            next_page_token,
        }))
    }

    async fn list_agents(
        &self,
        request: Request<proto::ListAgentsRequest>,
    ) -> Result<Response<proto::ListAgentsResponse>, Status> {
        let r = request.into_inner();
        let limit = page_size(r.page_size);
        let after = page_token(r.page_token)?.map(AgentId);
        let agents: Vec<proto::Agent> = self
            .ask(|reply| Command::ListAgents {
                after,
                limit,
                reply,
            })
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        let next_page_token = if agents.len() == limit {
            agents.last().map(|a| a.name.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(proto::ListAgentsResponse {
            agents,
            next_page_token,
        }))
    }

    async fn drain_agent(
        &self,
        request: Request<proto::DrainAgentRequest>,
    ) -> Result<Response<proto::Agent>, Status> {
        let by = Caller::of(&request).audit_name();
        let name = request.into_inner().name;
        check_id("name", &name)?;
        let agent = AgentId(name.clone());
        let drainer = by.clone();
        let r = self
            .ask(|reply| Command::Drain {
                agent,
                by: drainer,
                reply,
            })
            .await??;
        info!(target: "audit", action = "drain", caller = %by, agent = %name, "agent drained");
        Ok(Response::new(r.into()))
    }

    type WatchSweepStream = EventStream;

    async fn watch_sweep(
        &self,
        request: Request<proto::WatchSweepRequest>,
    ) -> Result<Response<Self::WatchSweepStream>, Status> {
        let id = request.into_inner().sweep_id;
        let permit = self.watches.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{MAX_WATCHES} sweeps are being watched, the most at once; try again later"
            ))
        })?;
        // Subscribe before the snapshot so no change falls between them.
        let mut events = self.events.subscribe();
        let snapshot = self.sweep(&id).await?;
        let (tx, rx) = mpsc::channel(64);
        let this_commands = self.commands.clone();
        tokio::spawn(async move {
            let _permit = permit;
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
                                sweep: Some(s.into()),
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
