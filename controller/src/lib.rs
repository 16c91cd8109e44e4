//! The Chimera controller: accepts sweeps, schedules their trials onto agents,
//! records results. `main.rs` parses flags and calls [`serve`]; tests and
//! `chimera run` call the same function.
//!
//! Architecture invariants: the controller never links candle; only
//! [`store`] talks to a storage backend; only [`scheduler`] mutates scheduling state.

pub mod agent_service;
pub mod auth;
pub mod conn;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod operator_service;
pub mod scheduler;
pub mod store;
pub mod telemetry;
pub mod tls;

use anyhow::Context;
use chimera_proto::v1::agent_service_server::AgentServiceServer;
use chimera_proto::v1::operator_service_server::OperatorServiceServer;
use scheduler::{Scheduler, SchedulerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::Store;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// Default key prefix in etcd.
pub const DEFAULT_STORE_PREFIX: &str = "";

/// Largest gRPC message accepted or sent, bytes.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Most HTTP/2 streams one connection may have open (an agent needs one).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// Most requests one connection may have in flight in a handler at once.
pub const MAX_REQUESTS_PER_CONNECTION: usize = 32;
/// Largest block of request headers, bytes.
pub const MAX_HEADER_BYTES: u32 = 16 << 10;

/// What keeps any one client from taking the controller down; every limit
/// is a flag of `chimera-controller` (see docs/SECURITY.md for defaults).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most trials one sweep may expand into (configurations x repeats x
    /// classes), counted before any is built.
    pub max_trials_per_sweep: u64,
    /// Most sweeps running at once; a submit past it is refused.
    pub max_active_sweeps: usize,
    /// Most agents registered at once; a hello past it is refused.
    pub max_agents: usize,
    /// Most client connections open at once; past it the controller stops
    /// accepting until one closes.
    pub max_connections: usize,
    /// A unary request (or the start of a stream) taking longer is ended.
    pub request_timeout: Duration,
    /// Specs parsed at once (each on a blocking thread).
    pub spec_parses: usize,
    /// A spec that takes longer to parse is refused.
    pub spec_parse_timeout: Duration,
    /// Size-based retention of the raw telemetry kept on disk.
    pub telemetry: telemetry::Limits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_trials_per_sweep: chimera_domain::spec::MAX_TRIALS,
            max_active_sweeps: 100,
            max_agents: 10_000,
            max_connections: 4096,
            request_timeout: Duration::from_secs(60),
            spec_parses: 2,
            spec_parse_timeout: Duration::from_secs(10),
            telemetry: telemetry::Limits::default(),
        }
    }
}

/// Controller settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory of the embedded store and of raw telemetry.
    pub data_dir: PathBuf,
    /// The state store: `None` for the embedded one in `data_dir`, or an
    /// etcd cluster, `etcd://h1:2379,h2:2379`.
    pub store: Option<String>,
    /// Key prefix of everything the controller keeps in etcd.
    pub store_prefix: String,
    /// TLS and user/password auth to etcd (plain http when default).
    pub etcd: store::etcd::EtcdSettings,
    /// The URL other controllers name when they refuse a request for this
    /// one as the leader (default: `http://` + the bound address).
    pub advertise: Option<String>,
    /// An agent silent this long loses its lease and its running trials.
    pub lease_ttl: Duration,
    /// Where to serve Prometheus metrics (`GET /metrics`); off when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// TLS on the gRPC port (and client certificates for agents); plain
    /// HTTP/2 when `None` (loopback only, unless `--allow-insecure`).
    pub tls: Option<tls::ServerTls>,
    /// Bearer tokens operators authenticate with (`--tokens-file`).
    pub tokens_file: Option<PathBuf>,
    /// Caps on what clients may make the controller do.
    pub limits: Limits,
}

impl Config {
    /// The URL this controller is known by.
    pub fn advertise_url(&self, addr: SocketAddr) -> String {
        self.advertise.clone().unwrap_or_else(|| {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{addr}")
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("chimera-data"),
            store: None,
            store_prefix: DEFAULT_STORE_PREFIX.to_owned(),
            etcd: store::etcd::EtcdSettings::default(),
            advertise: None,
            lease_ttl: Duration::from_secs(10),
            metrics_listen: None,
            tls: None,
            tokens_file: None,
            limits: Limits::default(),
        }
    }
}

/// Binds the listen address. A non-loopback address needs `off_loopback`
/// (TLS is configured, or `--allow-insecure`), so nobody exposes a
/// plaintext API by accident.
pub async fn bind(addr: SocketAddr, off_loopback: bool) -> anyhow::Result<TcpListener> {
    if !addr.ip().is_loopback() && !off_loopback {
        anyhow::bail!(
            "--listen {addr}: without TLS the controller listens on loopback only; \
             give --tls-cert and --tls-key (and --tls-client-ca for agents' certificates; \
             see docs/SECURITY.md), or pass --allow-insecure to serve plaintext on {} (trusted networks only)",
            addr.ip()
        );
    }
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))
}

/// Key of the leader election in the store (etcd only).
pub const ELECTION: &str = "/chimera/v1/leader";
/// TTL of a controller's etcd session: a dead leader's election key goes
/// with it this long after its last keep-alive.
pub const SESSION_TTL: Duration = Duration::from_secs(2);
/// How long a controller on etcd rides out an etcd it cannot reach (a
/// member lost, the whole cluster restarting): its session keep-alives and
/// the scheduler's commits are retried this long before it steps down (and
/// exits, for its supervisor to restart it as a standby).
pub const STORE_OUTAGE_GRACE: Duration = Duration::from_secs(10);

/// Whether this controller leads, and who does when it does not. Every RPC
/// passes through it: a standby answers `UNAVAILABLE` naming the leader, so
/// clients and agents move on.
#[derive(Default)]
pub struct Gate {
    leader: std::sync::atomic::AtomicBool,
    leader_url: std::sync::RwLock<String>,
}

impl Gate {
    fn is_leader(&self) -> bool {
        self.leader.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set_leader_url(&self, url: String) {
        if let Ok(mut u) = self.leader_url.write() {
            *u = url;
        }
    }

    fn check(&self) -> Result<(), tonic::Status> {
        if self.is_leader() {
            return Ok(());
        }
        let url = self
            .leader_url
            .read()
            .map(|u| u.clone())
            .unwrap_or_default();
        let mut status = tonic::Status::unavailable(if url.is_empty() {
            "not the leader; no controller leads right now (an election is under way)".to_owned()
        } else {
            format!("not the leader; the leader is {url}")
        });
        if !url.is_empty() {
            chimera_observe::leader::set_leader(&mut status, &url);
        }
        Err(status)
    }
}

/// Runs the controller on `listener` until `shutdown` is cancelled.
///
/// With the embedded store it leads at once. With etcd it serves as a
/// standby (every RPC refused, naming the leader) while it campaigns; once
/// elected it recovers the state from etcd and schedules, every write
/// guarded by its election key, until it stops or loses its session (then
/// it exits with an error; a supervisor restarts it as a standby).
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tasks = TaskTracker::new();
    // Every task `serve` spawns stops with it, whichever way it stops (a
    // clean stop, a lost election, an error half-way through start-up).
    let background = shutdown.child_token();
    let result = serve_tracked(listener, config, &shutdown, &tasks, &background).await;
    background.cancel();
    chimera_observe::wait_for_tasks(&tasks, TASKS_GRACE, "tasks").await;
    result
}

/// How long [`serve`] waits, once stopped, for the tasks it spawned (the
/// gRPC server, the scheduler, the metrics endpoint, the etcd session
/// keep-alive, the leader poll, the tokens-file watch, the watchdog).
const TASKS_GRACE: Duration = Duration::from_secs(10);

/// [`serve`]'s body: every task goes on `tasks` and stops on `background`
/// (a child of `shutdown`).
async fn serve_tracked(
    listener: TcpListener,
    config: Config,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
    background: &CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("listener address")?;
    let (store, etcd): (Arc<dyn Store>, Option<store::etcd::EtcdStore>) = match &config.store {
        None => (
            Arc::new(
                store::embedded::EmbeddedStore::open(&config.data_dir)
                    .with_context(|| format!("open store in {}", config.data_dir.display()))?,
            ),
            None,
        ),
        Some(url) => {
            let endpoints =
                store::etcd::endpoints(url).map_err(|e| anyhow::anyhow!("--store: {e}"))?;
            let etcd =
                store::etcd::EtcdStore::connect(&endpoints, &config.store_prefix, &config.etcd)
                    .await
                    .with_context(|| format!("connect to the store {url}"))?;
            (Arc::new(etcd.clone()), Some(etcd))
        }
    };
    let (events, _) = broadcast::channel(4096);
    let telemetry = Arc::new(
        telemetry::TelemetryStore::open(&config.data_dir, config.limits.telemetry)
            .with_context(|| format!("open telemetry in {}", config.data_dir.display()))?,
    );
    // Who may call what (checked by a tower layer before any handler).
    let tokens = match &config.tokens_file {
        Some(path) => {
            let t = Arc::new(auth::Tokens::load(path).context("--tokens-file")?);
            t.clone()
                .watch(Duration::from_secs(5), tasks, background.child_token());
            Some(t)
        }
        None => None,
    };
    let policy = Arc::new(auth::Policy {
        tokens,
        client_certs: config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
    });
    let tls_config = match &config.tls {
        Some(t) => Some(t.server_config().context("set up TLS")?),
        None => None,
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let gate = Arc::new(Gate::default());
    if etcd.is_none() {
        gate.leader.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let (commands, rx) = mpsc::channel(8192);
    if let Some(addr) = config.metrics_listen {
        let l = bind(addr, false).await.context("--metrics-listen")?;
        info!(addr = %l.local_addr().context("metrics address")?, "metrics on /metrics");
        let (m, c, t, token) = (
            metrics.clone(),
            commands.clone(),
            telemetry.clone(),
            background.child_token(),
        );
        tasks.spawn(async move {
            if let Err(e) = metrics::serve(l, m, c, t, token).await {
                error!(error = %e, "metrics endpoint stopped");
            }
        });
    }

    // The API, behind the gate.
    let (health, health_service) = tonic_health::server::health_reporter();
    let sched_events = events.clone();
    let operator = OperatorServiceServer::new(operator_service::OperatorApi {
        commands: commands.clone(),
        store: store.clone(),
        events,
        telemetry: telemetry.clone(),
        limits: config.limits,
        parses: Arc::new(tokio::sync::Semaphore::new(
            config.limits.spec_parses.max(1),
        )),
        watches: Arc::new(tokio::sync::Semaphore::new(operator_service::MAX_WATCHES)),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let agents = AgentServiceServer::new(agent_service::AgentApi {
        commands: commands.clone(),
        telemetry,
        metrics: metrics.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let g1 = gate.clone();
    let g2 = gate.clone();
    let operator = tonic::service::interceptor::InterceptedService::new(operator, move |r| {
        g1.check().map(|()| r)
    });
    let agents = tonic::service::interceptor::InterceptedService::new(agents, move |r| {
        g2.check().map(|()| r)
    });
    // Known to health checks from the start: serving when leading at once
    // (embedded store), not serving while a standby.
    if etcd.is_none() {
        health
            .set_serving::<OperatorServiceServer<operator_service::OperatorApi>>()
            .await;
        health
            .set_serving::<AgentServiceServer<agent_service::AgentApi>>()
            .await;
    } else {
        health
            .set_not_serving::<OperatorServiceServer<operator_service::OperatorApi>>()
            .await;
        health
            .set_not_serving::<AgentServiceServer<agent_service::AgentApi>>()
            .await;
    }
    let server_token = background.clone();
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .concurrency_limit_per_connection(MAX_REQUESTS_PER_CONNECTION)
        .http2_max_header_list_size(Some(MAX_HEADER_BYTES))
        .timeout(config.limits.request_timeout)
        .tcp_nodelay(true);
    if let Some(tls) = tls_config {
        builder = builder.tls_config(tls).context("set up TLS")?;
    }
    let mut server = tasks.spawn(
        builder
            .layer(auth::AuthLayer { policy })
            .add_service(health_service)
            .add_service(operator)
            .add_service(agents)
            .serve_with_incoming_shutdown(
                conn::incoming(listener, config.limits.max_connections),
                async move { server_token.cancelled().await },
            ),
    );

    // systemd: ready once serving (a standby is a running service too); the
    // watchdog is fed while the scheduler loop answers (a loop stuck on its
    // store stops the pings, and systemd restarts the controller).
    chimera_observe::systemd::ready(&format!("serving on {addr}"));
    let pinger = commands.clone();
    let watched = gate.clone();
    chimera_observe::systemd::spawn_watchdog(tasks, background.child_token(), move |within| {
        let commands = pinger.clone();
        let leader = watched.is_leader();
        async move {
            if !leader {
                return true;
            }
            let (reply, answer) = tokio::sync::oneshot::channel();
            commands
                .try_send(scheduler::Command::Ping { reply })
                .is_ok()
                && tokio::time::timeout(within, answer)
                    .await
                    .is_ok_and(|r| r.is_ok())
        }
    });

    // Lead: at once on the embedded store; on etcd, after winning the election.
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (scheduler_store, session): (Arc<dyn Store>, Option<store::LeaseId>) = match &etcd {
        None => (store.clone(), None),
        Some(etcd) => {
            let session = etcd
                .lease_grant(SESSION_TTL)
                .await
                .context("open an etcd session")?;
            // Keep the session alive; losing it means losing the leadership.
            // etcd unreachable for a while (a member lost, the cluster
            // restarting) is ridden out: the session is lost only when etcd
            // says it has expired, or after STORE_OUTAGE_GRACE without an
            // answer. Believing to lead meanwhile is safe: every write is
            // fenced by the election key at etcd.
            let (ka, token, stop, flag) = (
                etcd.clone(),
                shutdown.clone(),
                background.child_token(),
                lost.clone(),
            );
            tasks.spawn(async move {
                let mut last_ok = tokio::time::Instant::now();
                let mut failing = false;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        // Every TTL/4; a failed one is tried again at once,
                        // each try bounded, so that several fit in one TTL
                        // even when the client's balancer picks a dead member.
                        _ = tokio::time::sleep(if failing { Duration::from_millis(50) } else { SESSION_TTL / 4 }) => {}
                    }
                    let why =
                        match tokio::time::timeout(SESSION_TTL / 4, ka.lease_keep_alive(session))
                            .await
                        {
                            Ok(Ok(())) => {
                                if failing {
                                    info!(
                                        after_ms = last_ok.elapsed().as_millis() as u64,
                                        "etcd answers again: session kept"
                                    );
                                    failing = false;
                                }
                                last_ok = tokio::time::Instant::now();
                                continue;
                            }
                            Ok(Err(e @ store::StoreError::LeaseNotFound(_))) => {
                                error!(error = %e, "etcd session expired: stepping down");
                                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                                token.cancel();
                                return;
                            }
                            Ok(Err(e)) => e.to_string(),
                            Err(_) => format!("no answer within {:?}", SESSION_TTL / 4),
                        };
                    if last_ok.elapsed() > STORE_OUTAGE_GRACE {
                        error!(error = %why, grace_s = STORE_OUTAGE_GRACE.as_secs(), "etcd unreachable past the grace period: stepping down");
                        flag.store(true, std::sync::atomic::Ordering::SeqCst);
                        token.cancel();
                        return;
                    }
                    if !failing {
                        warn!(error = %why, "etcd session keep-alive failed; retrying");
                        failing = true;
                    }
                }
            });
            // While standing by, know who leads (for the refusals).
            let (poll, g, token) = (etcd.clone(), gate.clone(), background.child_token());
            tasks.spawn(async move {
                while !g.is_leader() && !token.is_cancelled() {
                    if let Ok(url) = poll.leader(ELECTION.as_bytes()).await {
                        g.set_leader_url(url.unwrap_or_default());
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            });
            info!(%addr, advertise = %config.advertise_url(addr), "standing by: campaigning for leadership");
            let me = config.advertise_url(addr);
            // A campaign cut short by etcd (its member went away, the
            // cluster restarted) is started again on the same session:
            // etcd's campaign is idempotent for one lease.
            let campaign = async {
                let mut backoff = chimera_observe::retry::Backoff::new(
                    Duration::from_millis(250),
                    Duration::from_secs(2),
                );
                loop {
                    match etcd.campaign(ELECTION.as_bytes(), &me, session).await {
                        Ok(k) => return Ok(k),
                        Err(store::StoreError::PermissionDenied(_)) => {
                            // Campaigning again cannot help: say what to grant.
                            return Err(anyhow::anyhow!(
                                "etcd refused the election key {}{ELECTION}: permission denied for etcd user {}. \
                                 Grant it readwrite on the key prefix {}/chimera/ \
                                 (etcdctl role grant-permission ROLE readwrite --prefix=true {}/chimera/; docs/operations.md)",
                                config.store_prefix,
                                config.etcd.auth.as_ref().map_or("(none: no --etcd-user)", |a| a.user.as_str()),
                                config.store_prefix,
                                config.store_prefix,
                            ));
                        }
                        Err(e) => {
                            // The client's request timeout ends a long
                            // campaign now and then: that is no news.
                            if matches!(e, store::StoreError::Timeout(_)) {
                                tracing::debug!(error = %e, "campaign timed out; campaigning again");
                                backoff.reset();
                            } else {
                                warn!(error = %e, "campaign interrupted; campaigning again");
                            }
                            tokio::time::sleep(backoff.next_delay()).await;
                        }
                    }
                }
            };
            let key = tokio::select! {
                k = campaign => match k {
                    Ok(k) => k,
                    Err(e) => {
                        shutdown.cancel();
                        let _ = server.await;
                        return Err(e);
                    }
                },
                _ = shutdown.cancelled() => {
                    let _ = server.await;
                    return if lost.load(std::sync::atomic::Ordering::SeqCst) {
                        Err(anyhow::anyhow!("lost the etcd session while standing by"))
                    } else {
                        Ok(())
                    };
                }
            };
            info!(key = %format!("{}{}", config.store_prefix, String::from_utf8_lossy(&key)), "elected leader");
            let guarded: Arc<dyn Store> = Arc::new(store::Guarded {
                inner: store.clone(),
                guard: store::Compare::Version(key, store::CmpOp::Greater, 0),
            });
            (guarded, Some(session))
        }
    };
    let mut scheduler = Scheduler::recover(
        scheduler_store,
        SchedulerConfig {
            limits: config.limits,
            lease_ttl: config.lease_ttl,
            store_retry: if etcd.is_some() {
                STORE_OUTAGE_GRACE
            } else {
                Duration::ZERO
            },
        },
        sched_events,
    )
    .await
    .context("recover state from the store")?;
    scheduler.set_metrics(metrics.clone());
    let sched_token = background.child_token();
    let mut sched = tasks.spawn(scheduler.run(rx, sched_token.clone()));
    gate.leader.store(true, std::sync::atomic::Ordering::SeqCst);
    gate.set_leader_url(config.advertise_url(addr));
    metrics.set_leading(true);
    health
        .set_serving::<OperatorServiceServer<operator_service::OperatorApi>>()
        .await;
    health
        .set_serving::<AgentServiceServer<agent_service::AgentApi>>()
        .await;
    info!(%addr, data_dir = %config.data_dir.display(), "controller serving");
    let result = tokio::select! {
        r = &mut server => {
            chimera_observe::systemd::stopping();
            r.map_err(|e| anyhow::anyhow!("grpc server task: {e}"))?.context("grpc server")?;
            sched_token.cancel();
            match tokio::time::timeout(Duration::from_secs(5), &mut sched).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(anyhow::anyhow!("scheduler task: {e}")),
                Err(_) => Ok(()),
            }
        }
        r = &mut sched => {
            // The scheduler only stops early when the store failed (or
            // refused a deposed leader's write): stop serving.
            shutdown.cancel();
            let r = r.map_err(|e| anyhow::anyhow!("scheduler task: {e}"))?;
            if let Err(e) = &r {
                error!(error = %format!("{e:#}"), "scheduler stopped");
            }
            r
        }
    };
    // Hand over at once on a clean stop: a standby need not wait out the TTL.
    if let (Some(etcd), Some(session)) = (&etcd, session) {
        let _ = etcd.lease_revoke(session).await;
    }
    if lost.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(anyhow::anyhow!(
            "lost the etcd session (and with it the leadership)"
        ));
    }
    result
}
