//! The Chimera agent: discovers the machine's devices, holds one stream to the
//! controller, runs assigned trials on per-device worker threads and reports
//! their results. `main.rs` parses flags and calls [`run`]; `chimera run` and
//! the tests call the same function.
//!
//! Architecture invariants: the agent never links the store; candle lives only
//! in [`workloads`]; all agent state is owned by the one loop in this module
//! (workers only run jobs and send outcomes back); a finished result stays in
//! the [`outbox`] until the controller acknowledges it, across reconnects and,
//! with a state directory, across restarts.

pub mod discovery;
pub mod harness;
pub mod models;
pub mod outbox;
pub mod roofline;
pub mod telemetry;
pub mod worker;
pub mod workloads;

use anyhow::Context;
use chimera_domain::params::params_from_proto;
use chimera_proto::v1 as proto;
use chimera_proto::v1::agent_service_client::AgentServiceClient;
use proto::agent_message::Msg as Up;
use proto::controller_message::Msg as Down;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use worker::{Job, Outcome, Worker};

/// Results kept for delivery while the controller is unreachable; beyond it the
/// oldest is dropped (and logged).
pub const MAX_OUTBOX: usize = 10_000;
const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// How long a stopping agent waits for its device and sampler threads.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often telemetry is streamed to the controller.
const TELEMETRY_FLUSH: Duration = Duration::from_secs(1);
/// Most samples per device in one batch (keeps a batch well under the
/// message limit after an outage).
const MAX_TELEMETRY_BATCH: usize = 5_000;

/// Agent settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Controller URL (`http://host:50051`).
    pub controller: String,
    /// This agent's name, unique in the fleet.
    pub name: String,
    /// First reconnect delay; doubles up to `max_backoff`, with jitter.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Directories models may be read from (`--model-dir`).
    pub model_dirs: Vec<std::path::PathBuf>,
    /// Engine binaries `serve` trials may start (`--engine llama-server=PATH`).
    pub engines: workloads::serve::Engines,
    /// Telemetry sampling interval per device (at least 10 ms); `None` turns
    /// the samplers off.
    pub telemetry_interval: Option<Duration>,
    /// Labels sweep targets select on (`--label site=lab`).
    pub labels: BTreeMap<String, String>,
    /// Where finished results wait for the controller's acknowledgement
    /// (`--state-dir`), so a restart does not lose them; `None` keeps them
    /// in memory only.
    pub state_dir: Option<std::path::PathBuf>,
    /// TLS to the controller (`https://` URLs) and this agent's client
    /// certificate.
    pub tls: chimera_observe::tls::ClientTls,
}

impl Config {
    /// Settings with the default backoff.
    pub fn new(controller: impl Into<String>, name: impl Into<String>) -> Self {
        Config {
            controller: controller.into(),
            name: name.into(),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            model_dirs: Vec::new(),
            engines: Default::default(),
            telemetry_interval: Some(Duration::from_millis(100)),
            labels: BTreeMap::new(),
            state_dir: None,
            tls: chimera_observe::tls::ClientTls::default(),
        }
    }
}

/// The controller URLs of `--controller` (comma-separated), each checked.
pub fn controller_urls(list: &str) -> anyhow::Result<Vec<String>> {
    let urls: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        anyhow::bail!("no controller URL in `{list}`");
    }
    for u in &urls {
        tonic::transport::Endpoint::from_shared(u.clone())
            .with_context(|| format!("parse controller URL `{u}`"))?;
    }
    Ok(urls)
}

/// Features compiled into this build.
pub fn features() -> Vec<String> {
    let mut f = vec!["cpu".to_owned(), "nvml".to_owned()];
    if cfg!(feature = "cuda") {
        f.push("cuda".to_owned());
    }
    f
}

/// The machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "agent".to_owned())
}

struct Running {
    trial: proto::TrialRef,
    cancel: Arc<AtomicBool>,
}

/// A trial's identity on this agent: (sweep, trial).
type TrialKey = (String, String);

fn trial_key(r: &proto::TrialRef) -> TrialKey {
    (r.sweep_id.clone(), r.trial_id.clone())
}

/// One attempt of a trial: a trial can be held at two attempts at once (the
/// controller gave up on one and sent the next to this same agent), and a
/// cancel or an outcome concerns exactly one of them.
fn attempt_key(r: &proto::TrialRef) -> (TrialKey, u32) {
    (trial_key(r), r.attempt)
}

/// Everything the agent knows, owned by the loop.
struct State {
    devices: Vec<proto::Device>,
    workers: HashMap<String, Worker>,
    /// Trials accepted and not yet finished: running, or queued behind another
    /// trial on the same device's worker (which runs them one at a time).
    running: HashMap<(TrialKey, u32), Running>,
    outbox: outbox::Outbox,
    draining: bool,
    model_dirs: Arc<models::ModelDirs>,
    engines: Arc<workloads::serve::Engines>,
    telemetry: Vec<Arc<telemetry::DeviceTelemetry>>,
}

enum SessionEnd {
    /// Stop the agent (shutdown, or drained).
    Exit,
    /// Connect again; `welcomed` if the session got as far as a welcome.
    Reconnect { welcomed: bool, why: String },
}

fn up(msg: Up) -> proto::AgentMessage {
    proto::AgentMessage { msg: Some(msg) }
}

impl State {
    fn held(&self) -> Vec<proto::TrialRef> {
        self.running
            .values()
            .map(|r| r.trial.clone())
            .chain(self.outbox.trials().cloned())
            .collect()
    }

    /// Records a finished trial and returns the message that reports it.
    fn absorb(&mut self, o: Outcome) -> proto::AgentMessage {
        self.running.remove(&attempt_key(o.trial()));
        let msg = match o {
            Outcome::Finished { trial, output } => up(Up::Finished(output.into_proto(trial))),
            Outcome::Failed { trial, reason, .. } => up(Up::Failed(proto::TrialFailed {
                trial: Some(trial),
                reason,
            })),
        };
        self.outbox.push(msg.clone());
        msg
    }

    /// The telemetry gathered since the last batch, if any.
    fn telemetry_batch(&self) -> Option<proto::AgentMessage> {
        let mut samples = Vec::new();
        let mut dropped = 0;
        for t in &self.telemetry {
            let (s, d) = t.take_outbound(MAX_TELEMETRY_BATCH);
            samples.extend(s.iter().map(proto::TelemetrySample::from));
            dropped += d;
        }
        if samples.is_empty() && dropped == 0 {
            return None;
        }
        Some(up(Up::Telemetry(proto::TelemetryBatch {
            samples,
            dropped,
        })))
    }

    fn idle(&self) -> bool {
        self.running.is_empty() && self.outbox.is_empty()
    }

    /// Starts an assigned trial; returns the message to send (started or failed).
    fn assign(&mut self, a: proto::AssignTrial) -> Option<proto::AgentMessage> {
        let trial = a.trial?;
        let fail = |trial: proto::TrialRef, reason: String| {
            warn!(trial = %trial.trial_id, %reason, "refused assignment");
            Some(up(Up::Failed(proto::TrialFailed {
                trial: Some(trial),
                reason,
            })))
        };
        if self.draining {
            return fail(trial, "agent is draining".into());
        }
        let Some(worker) = self.workers.get(&a.device_id) else {
            return fail(
                trial,
                format!("device `{}` cannot run trials on this agent", a.device_id),
            );
        };
        let params = match params_from_proto(&a.params) {
            Ok(p) => p,
            Err(e) => return fail(trial, e.to_string()),
        };
        let settings = a
            .harness
            .map_or_else(harness::Settings::default, |h| harness::Settings {
                warmup_iters: h.warmup_iters,
                min_iters: h.min_iters.max(1),
                min_time: Duration::from_millis(h.min_time_ms.into()),
                max_time: Duration::from_millis(h.max_time_ms.max(h.min_time_ms).into()),
                phases: Default::default(),
            });
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job {
            trial: trial.clone(),
            device_id: a.device_id.clone(),
            workload: a.workload,
            params,
            settings,
            cancel: cancel.clone(),
            input: a.input,
            trace: a.trace_context,
            model_dirs: self.model_dirs.clone(),
            engines: self.engines.clone(),
        };
        if let Err(e) = worker.start(job) {
            return fail(trial, e);
        }
        info!(sweep = %trial.sweep_id, trial = %trial.trial_id, attempt = trial.attempt, device = %a.device_id, "trial started");
        self.running.insert(
            attempt_key(&trial),
            Running {
                trial: trial.clone(),
                cancel,
            },
        );
        Some(up(Up::Started(proto::TrialStarted { trial: Some(trial) })))
    }

    fn cancel(&mut self, r: &proto::TrialRef) {
        if let Some(run) = self.running.get(&attempt_key(r)) {
            info!(trial = %r.trial_id, "cancelling trial");
            run.cancel.store(true, Ordering::Relaxed);
        }
    }

    fn cancel_all(&self) {
        for run in self.running.values() {
            run.cancel.store(true, Ordering::Relaxed);
        }
    }
}

/// Checks an agent name by the fleet's one id rule
/// ([`chimera_domain::ids::check_id`]); the error names the flag and the value.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    chimera_domain::ids::check_id("--name", name)
        .map_err(|e| anyhow::anyhow!("agent name `{}` refused: {e}", name.escape_debug()))
}

/// Runs the agent until `shutdown` is cancelled or the controller drains it.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    check_name(&config.name)?;
    let controllers = controller_urls(&config.controller)?;
    // TLS files unreadable, or given with an http:// URL: say so now rather
    // than retry for ever.
    for url in &controllers {
        config
            .tls
            .endpoint(url)
            .map_err(|e| anyhow::anyhow!("set up the connection to {url}: {e}"))?;
    }
    let model_dirs =
        Arc::new(models::ModelDirs::new(&config.model_dirs).map_err(anyhow::Error::msg)?);
    for d in model_dirs.dirs() {
        info!(dir = %d.display(), "model directory");
    }
    let outbox = match &config.state_dir {
        Some(dir) => outbox::Outbox::open(dir, MAX_OUTBOX)?,
        None => outbox::Outbox::in_memory(MAX_OUTBOX),
    };
    let mut devices = discovery::discover();
    // Engines the agent starts serve on every device that can serve.
    for d in devices.iter_mut() {
        if d.capabilities.iter().any(|c| c.starts_with("serve/")) {
            d.capabilities.extend(config.engines.capabilities());
        }
    }
    for (engine, path) in &config.engines.0 {
        info!(engine = engine.name(), path = %path.display(), "engine");
    }
    let (done_tx, mut done_rx) = mpsc::channel::<Outcome>(256);
    let mut workers = HashMap::new();
    let stop_samplers = Arc::new(AtomicBool::new(false));
    let mut samplers = Vec::new();
    if let Some(interval) = config.telemetry_interval {
        for d in &devices {
            let (sensors, wrap): (Box<dyn telemetry::Sensors>, Option<f64>) = match d
                .id
                .strip_prefix("gpu:")
                .and_then(|i| i.parse::<u32>().ok())
            {
                Some(i) => (Box::new(telemetry::GpuSensors::new(i)), None),
                None => (
                    Box::new(telemetry::HostSensors::discover()),
                    telemetry::host_rapl_range(),
                ),
            };
            samplers.push(
                telemetry::spawn(&d.id, sensors, interval, wrap, stop_samplers.clone())
                    .context("start a telemetry sampler thread")?,
            );
        }
    }
    for d in devices.iter().filter(|d| !d.capabilities.is_empty()) {
        let t = samplers.iter().find(|t| t.device_id == d.id).cloned();
        workers.insert(
            d.id.clone(),
            Worker::spawn(&d.id, done_tx.clone(), t).context("start a device worker thread")?,
        );
    }
    for d in &devices {
        info!(device = %d.id, class = %d.device_class, capabilities = d.capabilities.len(), "device");
    }
    let mut state = State {
        devices,
        workers,
        running: HashMap::new(),
        outbox,
        draining: false,
        model_dirs,
        engines: Arc::new(config.engines.clone()),
        telemetry: samplers,
    };
    // systemd: ready once the devices and their threads are up (reaching the
    // controller is retried forever, so it is not part of readiness); the
    // watchdog is fed while this runtime is responsive.
    chimera_observe::systemd::ready(&format!(
        "{} device(s); controller {}",
        state.devices.len(),
        config.controller
    ));
    let tasks = TaskTracker::new();
    let background = shutdown.child_token();
    chimera_observe::systemd::spawn_watchdog(&tasks, background.clone(), |_| async { true });
    let mut backoff = chimera_observe::retry::Backoff::new(config.min_backoff, config.max_backoff);
    // Which of the controllers to try: the leader answers; a standby refuses,
    // naming the leader, and the agent moves there at once.
    let mut at = 0usize;
    loop {
        let url = controllers[at % controllers.len()].clone();
        let end = session(&config, &url, &mut state, &mut done_rx, &shutdown).await;
        let mut redirected = false;
        match end {
            Ok(SessionEnd::Exit) => break,
            Ok(SessionEnd::Reconnect { welcomed, why }) => {
                if welcomed {
                    backoff.reset();
                }
                warn!(controller = %url, reason = %why, "disconnected; reconnecting");
                at += 1;
            }
            Err(e) => {
                let why = format!("{e:#}");
                // A standby names the leader in the refusal's metadata.
                let leader = chimera_observe::leader::leader_in_chain(e.as_ref());
                match leader.and_then(|l| controllers.iter().position(|c| c == l)) {
                    Some(i) => {
                        info!(standby = %url, leader = %controllers[i], "not the leader; moving to the leader");
                        at = i;
                        redirected = true;
                    }
                    None => {
                        warn!(controller = %url, error = %why, "cannot reach the controller");
                        at += 1;
                    }
                }
            }
        }
        // Backoff with jitter and a cap; a redirect to the leader goes at once.
        let jittered = if redirected {
            Duration::ZERO
        } else {
            backoff.next_delay()
        };
        let sleep = tokio::time::sleep(jittered);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                _ = shutdown.cancelled() => break,
                Some(o) = done_rx.recv() => { state.absorb(o); }
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
    }
    state.cancel_all();
    stop_samplers.store(true, Ordering::Relaxed);
    // Wait (within the grace period) for what this run started: the
    // watchdog task, the device threads (their trials are cancelled; with
    // no one taking outcomes they end after the job in hand) and the
    // samplers.
    background.cancel();
    drop(done_rx);
    for (_, w) in state.workers.drain() {
        let thread = w.stop();
        tasks.spawn_blocking(move || thread.join());
    }
    for t in &state.telemetry {
        if let Some(thread) = t.take_thread() {
            tasks.spawn_blocking(move || thread.join());
        }
    }
    chimera_observe::wait_for_tasks(&tasks, SHUTDOWN_GRACE, "device or sampler threads").await;
    if !state.running.is_empty() {
        warn!(
            running = state.running.len(),
            "stopping with running trials, which the controller will reassign"
        );
    }
    if !state.outbox.is_empty() {
        match &config.state_dir {
            Some(dir) => info!(
                undelivered = state.outbox.len(),
                state_dir = %dir.display(),
                "stopping with undelivered results, kept for the next start"
            ),
            None => warn!(
                undelivered = state.outbox.len(),
                "stopping with undelivered results and no state directory: the controller will re-run them"
            ),
        }
    }
    Ok(())
}

async fn session(
    config: &Config,
    controller: &str,
    state: &mut State,
    done_rx: &mut mpsc::Receiver<Outcome>,
    shutdown: &CancellationToken,
) -> anyhow::Result<SessionEnd> {
    let endpoint = config
        .tls
        .endpoint(controller)
        .map_err(|e| anyhow::anyhow!(e))?
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    let channel = tokio::select! {
        c = endpoint.connect() => c.context("connect")?,
        _ = shutdown.cancelled() => return Ok(SessionEnd::Exit),
    };
    let mut client = AgentServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (out, out_rx) = mpsc::channel::<proto::AgentMessage>(1024);
    let hello = up(Up::Hello(proto::Hello {
        agent_name: config.name.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        hostname: hostname(),
        devices: state.devices.clone(),
        features: features(),
        running: state.held(),
        labels: config.labels.clone().into_iter().collect(),
    }));
    out.send(hello).await.context("queue hello")?;
    let mut inbound = client
        .session(ReceiverStream::new(out_rx))
        .await
        .context("open the session")?
        .into_inner();
    let welcome = match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
        Ok(Ok(Some(proto::ControllerMessage {
            msg: Some(Down::Welcome(w)),
        }))) => w,
        Ok(Ok(other)) => anyhow::bail!("expected a welcome, got {other:?}"),
        Ok(Err(status)) => {
            // The status travels whole: its metadata may name the leader.
            return Err(anyhow::Error::new(status).context("controller refused the session"));
        }
        Err(_) => anyhow::bail!("no welcome within 10 s"),
    };
    info!(controller = %controller, lease_ttl_ms = welcome.lease_ttl_ms, "connected");
    for msg in state.outbox.messages().cloned() {
        out.send(msg).await.context("resend buffered results")?;
    }
    let period = Duration::from_millis(welcome.heartbeat_interval_ms.clamp(50, 60_000).into());
    let mut heartbeat = tokio::time::interval(period);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flush = tokio::time::interval(TELEMETRY_FLUSH);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reconnect = |why: String| {
        Ok(SessionEnd::Reconnect {
            welcomed: true,
            why,
        })
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(SessionEnd::Exit),
            msg = inbound.message() => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => return reconnect("controller closed the stream".into()),
                    Err(status) => return reconnect(format!("stream error: {}", status.message())),
                };
                match msg.msg {
                    Some(Down::Assign(a)) => {
                        if let Some(reply) = state.assign(a) {
                            if out.send(reply).await.is_err() {
                                return reconnect("outbound stream closed".into());
                            }
                        }
                    }
                    Some(Down::Cancel(c)) => {
                        if let Some(r) = c.trial {
                            state.cancel(&r);
                        }
                    }
                    Some(Down::Ack(ack)) => {
                        if let Some(r) = ack.trial {
                            if !ack.accepted {
                                warn!(trial = %r.trial_id, attempt = r.attempt, reason = %ack.reason, "controller refused a result");
                            }
                            state.outbox.ack(&r);
                        }
                    }
                    Some(Down::Drain(_)) => {
                        info!("draining: finishing running trials, taking no new ones");
                        state.draining = true;
                    }
                    Some(Down::Welcome(_)) | None => {}
                }
            }
            Some(o) = done_rx.recv() => {
                let msg = state.absorb(o);
                if out.send(msg).await.is_err() {
                    return reconnect("outbound stream closed".into());
                }
            }
            _ = flush.tick() => {
                if let Some(batch) = state.telemetry_batch() {
                    if out.send(batch).await.is_err() {
                        return reconnect("outbound stream closed".into());
                    }
                }
            }
            _ = heartbeat.tick() => {
                let hb = up(Up::Heartbeat(proto::Heartbeat {
                    running: state.running.values().map(|r| r.trial.clone()).collect(),
                }));
                if out.send(hb).await.is_err() {
                    return reconnect("outbound stream closed".into());
                }
            }
        }
        if state.draining && state.idle() {
            info!("drained: every result delivered, stopping");
            return Ok(SessionEnd::Exit);
        }
    }
}

#[cfg(test)]
mod leader_tests {
    use super::*;

    #[test]
    fn controller_lists_and_named_leaders() {
        assert_eq!(
            controller_urls("http://a:1, http://b:2,").unwrap(),
            ["http://a:1", "http://b:2"]
        );
        assert!(controller_urls(" , ").is_err());
        assert!(controller_urls("http://a:1,not a url")
            .unwrap_err()
            .to_string()
            .contains("`not a url`"));
        let mut refusal = tonic::Status::unavailable("not the leader");
        chimera_observe::leader::set_leader(&mut refusal, "http://10.0.0.5:50051");
        let e = anyhow::Error::new(refusal).context("open the session");
        assert_eq!(
            chimera_observe::leader::leader_in_chain(e.as_ref()),
            Some("http://10.0.0.5:50051")
        );
        let e = anyhow::anyhow!("connection refused");
        assert_eq!(chimera_observe::leader::leader_in_chain(e.as_ref()), None);
    }
}

#[cfg(test)]
mod attempt_tests {
    use super::*;

    fn attempt(n: u32) -> proto::TrialRef {
        proto::TrialRef {
            sweep_id: "S".into(),
            trial_id: "t00013".into(),
            attempt: n,
        }
    }

    /// The controller gave up on attempt 1 and sent attempt 2 to this same
    /// agent: cancelling the stale attempt 1 must not cancel attempt 2, and
    /// attempt 1's outcome must not forget attempt 2.
    #[test]
    fn two_attempts_of_one_trial_are_kept_apart() {
        let mut state = State {
            devices: vec![],
            workers: HashMap::new(),
            running: HashMap::new(),
            outbox: outbox::Outbox::in_memory(16),
            draining: false,
            model_dirs: Arc::new(models::ModelDirs::new(&[]).unwrap()),
            engines: Default::default(),
            telemetry: vec![],
        };
        let flags: Vec<Arc<AtomicBool>> = (1..=2)
            .map(|n| {
                let cancel = Arc::new(AtomicBool::new(false));
                state.running.insert(
                    attempt_key(&attempt(n)),
                    Running {
                        trial: attempt(n),
                        cancel: cancel.clone(),
                    },
                );
                cancel
            })
            .collect();
        state.cancel(&attempt(1));
        assert!(flags[0].load(Ordering::Relaxed));
        assert!(!flags[1].load(Ordering::Relaxed), "attempt 2 was cancelled");
        state.absorb(worker::Outcome::Failed {
            trial: attempt(1),
            reason: "cancelled".into(),
        });
        let held: Vec<u32> = state.running.values().map(|r| r.trial.attempt).collect();
        assert_eq!(held, [2]);
    }
}
