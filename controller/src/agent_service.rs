//! The agent service: one bidirectional stream per agent. This module validates
//! what arrives (the receiver validates: every string and repeated field is
//! capped, see `chimera_domain::wire`) and turns it into scheduler commands.
//!
//! Invariants:
//! - With client certificates (`--tls-client-ca`) a hello must name the agent
//!   its certificate names; the auth layer has already refused anything but
//!   an agent certificate.
//! - An agent's telemetry is kept only for devices it declared in its hello
//!   and for trial attempts assigned on its session (or kept from before a
//!   reconnect); anything else is refused and counted.
//! - Results for trials the session does not hold are refused and counted by
//!   the scheduler (`chimera_results_refused_total`).

use crate::auth::Caller;
use crate::error::ApiError;
use crate::metrics::{Metrics, Refusal};
use crate::scheduler::{AgentEvent, Command, Hello};
use chimera_domain::identity::Identity;
use chimera_domain::ids::{check_device_id, check_id};
use chimera_domain::results::TrialOutput;
use chimera_domain::wire::{self, quote};
use chimera_domain::{AgentId, SweepId, TrialId, TrialKey, TrialRef};
use chimera_proto::v1 as proto;
use chimera_proto::v1::agent_service_server::AgentService;
use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages buffered towards one agent.
const OUTBOUND: usize = 1024;
/// Most samples accepted in one telemetry batch.
const MAX_BATCH_SAMPLES: usize = 100_000;
/// Trial attempts a session remembers as its own (for its telemetry); the
/// oldest are forgotten first.
const REMEMBERED_ATTEMPTS: usize = 4096;

/// The gRPC handler.
pub struct AgentApi {
    pub commands: mpsc::Sender<Command>,
    pub telemetry: Arc<crate::telemetry::TelemetryStore>,
    pub metrics: Arc<Metrics>,
}

fn invalid(m: String) -> Status {
    ApiError::InvalidArgument(m).into()
}

fn trial_ref(r: Option<proto::TrialRef>, what: &str) -> Result<TrialRef, Status> {
    let r = r.ok_or_else(|| invalid(format!("{what}.trial is missing")))?;
    check_id(&format!("{what}.trial.sweep_id"), &r.sweep_id).map_err(invalid)?;
    check_id(&format!("{what}.trial.trial_id"), &r.trial_id).map_err(invalid)?;
    Ok(TrialRef {
        key: TrialKey {
            sweep: SweepId(r.sweep_id),
            trial: TrialId(r.trial_id),
        },
        attempt: r.attempt,
    })
}

fn trial_refs(list: Vec<proto::TrialRef>, what: &str) -> Result<Vec<TrialRef>, Status> {
    wire::check_count(what, list.len(), wire::MAX_RUNNING).map_err(invalid)?;
    list.into_iter().map(|r| trial_ref(Some(r), what)).collect()
}

/// Checks one declared device against the wire limits.
fn check_device(i: usize, d: &proto::Device) -> Result<(), String> {
    let field = |f: &str| format!("hello.devices[{i}].{f}");
    check_device_id(&field("id"), &d.id)?;
    if d.kind != "cpu" && d.kind != "gpu" {
        return Err(format!(
            "{} {} must be `cpu` or `gpu`",
            field("kind"),
            quote(&d.kind)
        ));
    }
    if d.device_class.trim().is_empty() {
        return Err(format!("{} is empty", field("device_class")));
    }
    for (f, v) in [
        ("device_class", &d.device_class),
        ("vendor", &d.vendor),
        ("model", &d.model),
        ("compute_capability", &d.compute_capability),
        ("driver_version", &d.driver_version),
    ] {
        wire::check_text(&field(f), v, wire::MAX_NAME)?;
    }
    wire::check_count(
        &field("capabilities"),
        d.capabilities.len(),
        wire::MAX_CAPABILITIES,
    )?;
    for c in &d.capabilities {
        wire::check_text(&field("capabilities"), c, wire::MAX_NAME)?;
    }
    wire::check_text(
        &field("unusable_reason"),
        &d.unusable_reason,
        wire::MAX_TEXT,
    )?;
    Ok(())
}

impl TryFrom<proto::Hello> for Hello {
    type Error = Status;
    fn try_from(h: proto::Hello) -> Result<Self, Status> {
        check_id("hello.agent_name", &h.agent_name).map_err(invalid)?;
        wire::check_text("hello.hostname", &h.hostname, wire::MAX_HOSTNAME).map_err(invalid)?;
        wire::check_text("hello.agent_version", &h.agent_version, wire::MAX_VERSION)
            .map_err(invalid)?;
        wire::check_count("hello.devices", h.devices.len(), wire::MAX_DEVICES).map_err(invalid)?;
        let mut seen = HashSet::new();
        for (i, d) in h.devices.iter().enumerate() {
            check_device(i, d).map_err(invalid)?;
            if !seen.insert(d.id.as_str()) {
                return Err(invalid(format!(
                    "hello.devices[{i}].id {} is repeated",
                    quote(&d.id)
                )));
            }
        }
        wire::check_count("hello.features", h.features.len(), wire::MAX_FEATURES)
            .map_err(invalid)?;
        for f in &h.features {
            wire::check_text("hello.features", f, 64).map_err(invalid)?;
        }
        wire::check_map("hello.labels", h.labels.iter()).map_err(invalid)?;
        let running = trial_refs(h.running, "hello.running")?;
        Ok(Hello {
            name: AgentId(h.agent_name),
            version: h.agent_version,
            hostname: h.hostname,
            devices: h.devices.into_iter().map(Into::into).collect(),
            features: h.features,
            running,
            labels: h.labels.into_iter().collect(),
        })
    }
}

/// A failure reason as the controller keeps it: at most
/// [`wire::MAX_TEXT`] bytes (cut at a character boundary), control
/// characters replaced by spaces. A reason is never refused: the trial's
/// failure must be recorded either way.
fn reason(text: String) -> String {
    let mut end = text.len().min(wire::MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A `finished` message, checked ([`TrialOutput`]'s conversion): what the
/// scheduler records.
fn finished(mut f: proto::TrialFinished) -> Result<AgentEvent, Status> {
    let trial = trial_ref(f.trial.take(), "finished")?;
    let output = TrialOutput::try_from(f).map_err(invalid)?;
    Ok(AgentEvent::Finished {
        trial,
        output: Box::new(output),
    })
}

fn event(msg: proto::agent_message::Msg) -> Result<AgentEvent, Status> {
    use proto::agent_message::Msg;
    Ok(match msg {
        Msg::Hello(_) => return Err(invalid("hello may only be the first message".into())),
        Msg::Telemetry(_) => return Err(invalid("telemetry is not a scheduling event".into())),
        Msg::Heartbeat(h) => AgentEvent::Heartbeat(trial_refs(h.running, "heartbeat.running")?),
        Msg::Started(s) => AgentEvent::Started(trial_ref(s.trial, "started")?),
        Msg::Finished(f) => finished(f)?,
        Msg::Failed(f) => AgentEvent::Failed {
            trial: trial_ref(f.trial, "failed")?,
            reason: reason(f.reason),
        },
    })
}

/// What one session may send telemetry about: its devices, and the trial
/// attempts assigned on it (the newest [`REMEMBERED_ATTEMPTS`]).
struct Owned {
    devices: HashSet<String>,
    attempts: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl Owned {
    fn label(r: &TrialRef) -> String {
        format!("{}/{}/{}", r.key.sweep, r.key.trial, r.attempt)
    }

    fn add(&self, label: String) {
        if let Ok(mut a) = self.attempts.lock() {
            if a.0.insert(label.clone()) {
                a.1.push_back(label);
                while a.1.len() > REMEMBERED_ATTEMPTS {
                    if let Some(old) = a.1.pop_front() {
                        a.0.remove(&old);
                    }
                }
            }
        }
    }

    fn allows(&self, s: &chimera_domain::telemetry::Sample) -> bool {
        self.devices.contains(&s.device_id)
            && s.trial.as_ref().is_none_or(|t| {
                self.attempts
                    .lock()
                    .map(|a| a.0.contains(t))
                    .unwrap_or(false)
            })
    }
}

type OutStream = Pin<Box<dyn Stream<Item = Result<proto::ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    type SessionStream = OutStream;

    async fn session(
        &self,
        request: Request<Streaming<proto::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let caller = Caller::of(&request);
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
        // The certificate proves the name: a hello under another is refused.
        let proven = match &caller {
            Caller::Certificate(Identity::Agent(cert_name)) => {
                if cert_name != hello.name.as_str() {
                    warn!(target: "audit", action = "register", certificate = %cert_name, hello = %hello.name, "refused: hello names another agent");
                    return Err(Status::permission_denied(format!(
                        "the client certificate names agent `{cert_name}`, but hello.agent_name is `{}`",
                        hello.name
                    )));
                }
                true
            }
            _ => false,
        };
        let name = hello.name.clone();
        let owned = Arc::new(Owned {
            devices: hello.devices.iter().map(|d| d.id.clone()).collect(),
            attempts: Mutex::new((HashSet::new(), VecDeque::new())),
        });
        let (tx, rx) = mpsc::channel(OUTBOUND);
        let (reply, answer) = oneshot::channel();
        let registered_by = caller.audit_name();
        self.commands
            .send(Command::Hello {
                hello,
                tx,
                proven,
                registered_by: registered_by.clone(),
                reply,
            })
            .await
            .map_err(|_| Status::unavailable("controller is shutting down"))?;
        let (session, kept) = answer
            .await
            .map_err(|_| Status::unavailable("controller is shutting down"))??;
        info!(target: "audit", action = "register", agent = %name, caller = %registered_by, session, "agent registered");
        for r in &kept {
            owned.add(Owned::label(r));
        }
        let commands = self.commands.clone();
        let telemetry = self.telemetry.clone();
        let metrics = self.metrics.clone();
        let inbound_owned = owned.clone();
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
                        telemetry.refuse(batch.samples.len() as u64);
                        continue;
                    }
                    let total = batch.samples.len();
                    let samples: Vec<_> = batch
                        .samples
                        .into_iter()
                        .filter_map(|s| chimera_domain::telemetry::Sample::try_from(s).ok())
                        .filter(|s| inbound_owned.allows(s))
                        .collect();
                    let refused = total - samples.len();
                    if refused > 0 {
                        debug!(agent = %name, refused, "telemetry for devices or trials not this session's refused");
                        telemetry.refuse(refused as u64);
                    }
                    let (t, agent) = (telemetry.clone(), name.0.clone());
                    let dropped = batch.dropped;
                    // File appends: off the async runtime.
                    let _ = tokio::task::spawn_blocking(move || t.record(&agent, samples, dropped))
                        .await;
                    continue;
                }
                let is_result = matches!(
                    msg,
                    proto::agent_message::Msg::Finished(_) | proto::agent_message::Msg::Failed(_)
                );
                // A result that breaks the rules still ends its trial (as
                // failed, with why), so the agent is answered and nothing waits.
                let refused_trial = match &msg {
                    proto::agent_message::Msg::Finished(f) => f.trial.clone(),
                    _ => None,
                };
                let event = match event(msg) {
                    Ok(event) => event,
                    Err(e) => {
                        if is_result {
                            metrics.result_refused(Refusal::Invalid);
                        }
                        warn!(agent = %name, error = %e.message(), "refused agent message");
                        match refused_trial.and_then(|t| trial_ref(Some(t), "finished").ok()) {
                            Some(trial) => AgentEvent::Failed {
                                trial,
                                reason: reason(format!(
                                    "the agent's result was refused: {}",
                                    e.message()
                                )),
                            },
                            None => continue,
                        }
                    }
                };
                let cmd = Command::Agent {
                    agent: name.clone(),
                    session,
                    event,
                };
                if commands.send(cmd).await.is_err() {
                    return;
                }
            }
            let _ = commands
                .send(Command::Gone {
                    agent: name,
                    session,
                })
                .await;
        });
        // Every assignment sent on this session makes its attempt the
        // session's own (for telemetry).
        let out = ReceiverStream::new(rx).map(move |m: proto::ControllerMessage| {
            if let Some(proto::controller_message::Msg::Assign(a)) = &m.msg {
                if let Some(t) = &a.trial {
                    owned.add(format!("{}/{}/{}", t.sweep_id, t.trial_id, t.attempt));
                }
            }
            Ok(m)
        });
        Ok(Response::new(Box::pin(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> proto::Hello {
        proto::Hello {
            agent_name: "a1".into(),
            agent_version: "0.1.0".into(),
            hostname: "host".into(),
            devices: vec![proto::Device {
                id: "gpu:0".into(),
                kind: "gpu".into(),
                device_class: "NVIDIA H100".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn refused(h: proto::Hello) -> String {
        Hello::try_from(h).unwrap_err().message().to_owned()
    }

    #[test]
    fn hello_fields_are_capped_and_named() {
        assert!(Hello::try_from(hello()).is_ok());
        let mut h = hello();
        h.hostname = "h".repeat(2 << 20);
        let e = refused(h);
        assert!(
            e.starts_with("hello.hostname: 2097152 bytes exceeds the limit of 253"),
            "{e}"
        );
        assert!(e.len() < 300, "the value is not echoed whole");
        let mut h = hello();
        h.devices[0].id = "x\"} 1\nchimera_controller_leader 0".into();
        assert!(refused(h).starts_with("hello.devices[0].id "));
        let mut h = hello();
        h.devices[0].model = "m".repeat(10_000);
        assert!(refused(h).starts_with("hello.devices[0].model: "));
        let mut h = hello();
        h.features = vec!["f".into(); 1000];
        assert!(refused(h).starts_with("hello.features: 1000 entries"));
        let mut h = hello();
        h.running = vec![proto::TrialRef::default(); 2000];
        assert!(refused(h).starts_with("hello.running: 2000 entries"));
        let mut h = hello();
        h.devices.push(h.devices[0].clone());
        assert!(refused(h).contains("is repeated"));
    }

    #[test]
    fn results_are_checked_and_reasons_cleaned() {
        let good = || proto::TrialFinished {
            trial: Some(proto::TrialRef {
                sweep_id: "S".into(),
                trial_id: "t00000".into(),
                attempt: 1,
            }),
            metrics: [("latency_ms_p50".to_owned(), 1.0)].into(),
            fingerprint: Some(proto::Fingerprint::default()),
            wall_ms: 5.0,
            ..Default::default()
        };
        assert!(finished(good()).is_ok());
        let mut f = good();
        f.metrics.insert("x\ninjected".into(), 1.0);
        assert!(finished(f)
            .unwrap_err()
            .message()
            .starts_with("finished.metrics: name"));
        let mut f = good();
        f.fingerprint.as_mut().unwrap().extra = [("k".to_owned(), "v".repeat(2 << 20))].into();
        assert!(finished(f)
            .unwrap_err()
            .message()
            .starts_with("fingerprint.extra[k]: "));
        let mut f = good();
        f.wall_ms = f64::NAN;
        assert!(finished(f)
            .unwrap_err()
            .message()
            .starts_with("finished.wall_ms"));
        let mut f = good();
        f.fingerprint = None;
        assert!(finished(f).is_err());
        let r = reason(format!("bad\nline\u{1b}[2J{}", "é".repeat(5000)));
        assert!(
            r.len() <= wire::MAX_TEXT && !r.chars().any(char::is_control),
            "{r}"
        );
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-zA-Z0-9_.:-]{0,12}",
                any::<String>(),
                (0usize..3000).prop_map(|n| "x".repeat(n)),
                Just("x\"} 1\nchimera_controller_leader 0".to_owned()),
            ]
        }

        fn trial_ref() -> impl Strategy<Value = proto::TrialRef> {
            (text(), text(), any::<u32>()).prop_map(|(sweep_id, trial_id, attempt)| {
                proto::TrialRef {
                    sweep_id,
                    trial_id,
                    attempt,
                }
            })
        }

        fn device() -> impl Strategy<Value = proto::Device> {
            (
                (
                    text(),
                    prop::sample::select(vec!["cpu", "gpu", "tpu", ""]),
                    text(),
                ),
                (text(), text(), text()),
                prop::collection::vec(text(), 0..4),
            )
                .prop_map(|((id, kind, class), (vendor, model, cc), capabilities)| {
                    proto::Device {
                        id,
                        kind: kind.to_owned(),
                        device_class: class,
                        vendor,
                        model,
                        compute_capability: cc,
                        capabilities,
                        ..Default::default()
                    }
                })
        }

        fn hello() -> impl Strategy<Value = proto::Hello> {
            (
                (text(), text(), text()),
                prop::collection::vec(device(), 0..4),
                prop::collection::vec(text(), 0..4),
                prop::collection::vec(trial_ref(), 0..4),
                prop::collection::hash_map(text(), text(), 0..4),
            )
                .prop_map(
                    |(
                        (agent_name, agent_version, hostname),
                        devices,
                        features,
                        running,
                        labels,
                    )| {
                        proto::Hello {
                            agent_name,
                            agent_version,
                            hostname,
                            devices,
                            features,
                            running,
                            labels,
                        }
                    },
                )
        }

        fn message() -> impl Strategy<Value = proto::agent_message::Msg> {
            use proto::agent_message::Msg;
            prop_oneof![
                prop::collection::vec(trial_ref(), 0..4)
                    .prop_map(|running| Msg::Heartbeat(proto::Heartbeat { running })),
                prop::option::of(trial_ref())
                    .prop_map(|trial| Msg::Started(proto::TrialStarted { trial })),
                (
                    prop::option::of(trial_ref()),
                    prop::collection::hash_map(text(), any::<f64>(), 0..6),
                    prop::option::of(Just(proto::Fingerprint::default())),
                    any::<f64>(),
                    prop_oneof![Just(String::new()), text(), Just("{\"a\":1}".to_owned())],
                )
                    .prop_map(
                        |(trial, metrics, fingerprint, wall_ms, detail_json)| {
                            Msg::Finished(proto::TrialFinished {
                                trial,
                                metrics,
                                fingerprint,
                                wall_ms,
                                detail_json,
                                artifact: vec![],
                            })
                        }
                    ),
                (prop::option::of(trial_ref()), text())
                    .prop_map(|(trial, reason)| Msg::Failed(proto::TrialFailed { trial, reason })),
            ]
        }

        /// Fields named by the errors of the agent messages.
        const FIELDS: &[&str] = &[
            "hello.",
            "heartbeat.",
            "started.",
            "finished",
            "failed.",
            "fingerprint.",
        ];

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 10_000,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn a_hello_converts_within_its_limits_or_names_the_field(h in hello()) {
                match Hello::try_from(h) {
                    Ok(ok) => {
                        chimera_domain::ids::check_id("n", ok.name.as_str()).unwrap();
                        prop_assert!(ok.hostname.len() <= wire::MAX_HOSTNAME);
                        for d in &ok.devices {
                            chimera_domain::ids::check_device_id("d", &d.id).unwrap();
                        }
                    }
                    Err(e) => prop_assert!(e.message().starts_with("hello."), "{}", e.message()),
                }
            }

            #[test]
            fn an_agent_message_converts_within_its_limits_or_names_the_field(m in message()) {
                match event(m) {
                    Ok(AgentEvent::Failed { reason, .. }) => {
                        prop_assert!(reason.len() <= wire::MAX_TEXT);
                        prop_assert!(!reason.chars().any(char::is_control));
                    }
                    Ok(AgentEvent::Finished { output, .. }) => {
                        prop_assert!(output.wall_ms.is_finite());
                        prop_assert!(output.metrics.values().all(|v| v.is_finite()));
                    }
                    Ok(_) => {}
                    Err(e) => prop_assert!(
                        FIELDS.iter().any(|f| e.message().starts_with(f)),
                        "{}",
                        e.message()
                    ),
                }
            }
        }
    }
}
