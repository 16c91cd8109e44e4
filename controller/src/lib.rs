//! The Chimera controller: accepts sweeps, schedules their trials onto agents,
//! records results. `main.rs` parses flags and calls [`serve`]; tests and
//! `chimera run` call the same function.
//!
//! Architecture invariants: the controller never links candle; only
//! [`store`] talks to a storage backend; only [`scheduler`] mutates scheduling state.

pub mod agent_service;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod operator_service;
pub mod scheduler;
pub mod store;
pub mod telemetry;

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
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Default key prefix in etcd.
pub const DEFAULT_STORE_PREFIX: &str = "";

/// Largest gRPC message accepted or sent, bytes.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

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
    /// An agent silent this long loses its lease and its running trials.
    pub lease_ttl: Duration,
    /// Where to serve Prometheus metrics (`GET /metrics`); off when `None`.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("chimera-data"),
            store: None,
            store_prefix: DEFAULT_STORE_PREFIX.to_owned(),
            lease_ttl: Duration::from_secs(10),
            metrics_listen: None,
        }
    }
}

/// Binds the listen address. Without TLS (not yet built) a non-loopback address
/// needs `allow_insecure`, so nobody exposes the API by accident.
pub async fn bind(addr: SocketAddr, allow_insecure: bool) -> anyhow::Result<TcpListener> {
    if !addr.ip().is_loopback() && !allow_insecure {
        anyhow::bail!(
            "--listen {addr}: the controller has no TLS yet, so it listens on loopback only; \
             pass --allow-insecure to listen on {} anyway (trusted networks only)",
            addr.ip()
        );
    }
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))
}

/// Runs the controller on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = match &config.store {
        None => Arc::new(
            store::embedded::EmbeddedStore::open(&config.data_dir)
                .with_context(|| format!("open store in {}", config.data_dir.display()))?,
        ),
        Some(url) => {
            let endpoints =
                store::etcd::endpoints(url).map_err(|e| anyhow::anyhow!("--store: {e}"))?;
            Arc::new(
                store::etcd::EtcdStore::connect(&endpoints, &config.store_prefix)
                    .await
                    .with_context(|| format!("connect to the store {url}"))?,
            )
        }
    };
    let (events, _) = broadcast::channel(4096);
    let telemetry = Arc::new(
        telemetry::TelemetryStore::open(&config.data_dir)
            .with_context(|| format!("open telemetry in {}", config.data_dir.display()))?,
    );
    let metrics = Arc::new(metrics::Metrics::new());
    let mut scheduler = Scheduler::recover(
        store.clone(),
        SchedulerConfig {
            lease_ttl: config.lease_ttl,
        },
        events.clone(),
    )
    .await
    .context("recover state from the store")?;
    scheduler.set_metrics(metrics.clone());
    let (commands, rx) = mpsc::channel(8192);
    if let Some(addr) = config.metrics_listen {
        let l = bind(addr, false).await.context("--metrics-listen")?;
        info!(addr = %l.local_addr().context("metrics address")?, "metrics on /metrics");
        let (m, c, t, token) = (
            metrics.clone(),
            commands.clone(),
            telemetry.clone(),
            shutdown.child_token(),
        );
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(l, m, c, t, token).await {
                error!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    let sched_token = shutdown.child_token();
    let mut sched = tokio::spawn(scheduler.run(rx, sched_token.clone()));

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<OperatorServiceServer<operator_service::OperatorApi>>()
        .await;
    health
        .set_serving::<AgentServiceServer<agent_service::AgentApi>>()
        .await;
    let operator = OperatorServiceServer::new(operator_service::OperatorApi {
        commands: commands.clone(),
        store: store.clone(),
        events,
        telemetry: telemetry.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let commands_for_watchdog = commands.clone();
    let agents = AgentServiceServer::new(agent_service::AgentApi {
        commands,
        telemetry,
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let addr = listener.local_addr().context("listener address")?;
    info!(%addr, data_dir = %config.data_dir.display(), "controller serving");
    // systemd: ready once the state is recovered and the port is bound; the
    // watchdog is fed only while the scheduler loop answers (a loop stuck on
    // its store stops the pings, and systemd restarts the controller).
    chimera_observe::systemd::ready(&format!("serving on {addr}"));
    let pinger = commands_for_watchdog;
    chimera_observe::systemd::spawn_watchdog(move |within| {
        let commands = pinger.clone();
        async move {
            let (reply, answer) = tokio::sync::oneshot::channel();
            commands
                .try_send(scheduler::Command::Ping { reply })
                .is_ok()
                && tokio::time::timeout(within, answer)
                    .await
                    .is_ok_and(|r| r.is_ok())
        }
    });
    let server_token = shutdown.clone();
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(health_service)
        .add_service(operator)
        .add_service(agents)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            server_token.cancelled().await
        });
    tokio::select! {
        r = server => {
            chimera_observe::systemd::stopping();
            r.context("grpc server")?;
            sched_token.cancel();
            match tokio::time::timeout(Duration::from_secs(5), &mut sched).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(anyhow::anyhow!("scheduler task: {e}")),
                Err(_) => Ok(()),
            }
        }
        r = &mut sched => {
            // The scheduler only stops early when the store failed: stop serving.
            shutdown.cancel();
            let r = r.map_err(|e| anyhow::anyhow!("scheduler task: {e}"))?;
            if let Err(e) = &r {
                error!(error = %format!("{e:#}"), "scheduler stopped");
            }
            r
        }
    }
}
