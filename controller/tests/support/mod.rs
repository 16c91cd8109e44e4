//! What the in-process gRPC tests share: the real controller on
//! `127.0.0.1:0` (plain, or with TLS and tokens), operator clients, and a
//! scripted agent speaking the wire protocol.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use chimera_observe::tls::ClientTls;
use chimera_proto::v1 as proto;
use chimera_proto::v1::agent_service_client::AgentServiceClient;
use chimera_proto::v1::operator_service_client::OperatorServiceClient;
use proto::agent_message::Msg as Up;
use proto::controller_message::Msg as Down;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub struct Harness {
    pub url: String,
    /// `--metrics-listen`, when the test asked for it.
    pub metrics: Option<std::net::SocketAddr>,
    pub shutdown: CancellationToken,
    pub dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The controller with plain HTTP/2 and no auth (loopback dev mode).
pub async fn start(lease_ttl: Duration) -> Harness {
    start_with(|c| c.lease_ttl = lease_ttl).await
}

/// The controller with settings `edit` changes (TLS, tokens, limits, a
/// metrics port...), on `127.0.0.1:0`.
pub async fn start_with(edit: impl FnOnce(&mut chimera_controller::Config)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let listener = chimera_controller::bind("127.0.0.1:0".parse().unwrap(), false)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let mut config = chimera_controller::Config {
        data_dir: dir.path().to_owned(),
        lease_ttl: Duration::from_secs(10),
        ..Default::default()
    };
    edit(&mut config);
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let metrics = config.metrics_listen;
    tokio::spawn(chimera_controller::serve(
        listener,
        config,
        shutdown.clone(),
    ));
    let url = format!("{scheme}://{addr}");
    if let Some(m) = metrics {
        // Serving once the metrics port answers.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(m).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Harness {
        url,
        metrics,
        shutdown,
        dir,
    }
}

/// A channel to `url`, with TLS files when given.
pub async fn channel(url: &str, tls: &ClientTls) -> Result<Channel, tonic::transport::Error> {
    tls.endpoint(url).unwrap().connect().await
}

pub async fn operator(url: &str) -> OperatorServiceClient<Channel> {
    OperatorServiceClient::new(channel(url, &ClientTls::default()).await.unwrap())
}

/// A request carrying `authorization: Bearer TOKEN`.
pub fn bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

pub fn device(id: &str, class: &str, caps: &[&str]) -> proto::Device {
    proto::Device {
        id: id.into(),
        kind: "cpu".into(),
        device_class: class.into(),
        model: class.into(),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    }
}

/// A scripted agent.
pub struct Agent {
    pub tx: mpsc::Sender<proto::AgentMessage>,
    pub rx: tonic::Streaming<proto::ControllerMessage>,
}

impl Agent {
    pub async fn connect(
        url: &str,
        name: &str,
        devices: Vec<proto::Device>,
        running: Vec<proto::TrialRef>,
    ) -> Agent {
        Self::connect_from(url, name, "host", devices, running)
            .await
            .unwrap()
    }

    /// An agent with one CPU device of class `c1` that runs `kernel/matmul`.
    pub async fn simple(url: &str, name: &str) -> Agent {
        Self::connect(
            url,
            name,
            vec![device("cpu", "c1", &["kernel/matmul"])],
            vec![],
        )
        .await
    }

    pub async fn connect_from(
        url: &str,
        name: &str,
        hostname: &str,
        devices: Vec<proto::Device>,
        running: Vec<proto::TrialRef>,
    ) -> Result<Agent, tonic::Status> {
        Self::connect_labelled(url, name, hostname, devices, running, &[]).await
    }

    pub async fn connect_labelled(
        url: &str,
        name: &str,
        hostname: &str,
        devices: Vec<proto::Device>,
        running: Vec<proto::TrialRef>,
        labels: &[(&str, &str)],
    ) -> Result<Agent, tonic::Status> {
        let hello = proto::Hello {
            agent_name: name.into(),
            hostname: hostname.into(),
            devices,
            running,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let channel = channel(url, &ClientTls::default()).await.unwrap();
        Self::open(channel, hello).await
    }

    /// Says `hello` on a new session over `channel`; the controller's
    /// refusal, or the agent once welcomed.
    pub async fn open(channel: Channel, hello: proto::Hello) -> Result<Agent, tonic::Status> {
        let mut client = AgentServiceClient::new(channel);
        let (tx, out) = mpsc::channel(64);
        tx.send(proto::AgentMessage {
            msg: Some(Up::Hello(hello)),
        })
        .await
        .unwrap();
        let mut rx = client.session(ReceiverStream::new(out)).await?.into_inner();
        match rx.message().await?.and_then(|m| m.msg) {
            Some(Down::Welcome(_)) => {}
            other => panic!("expected welcome, got {other:?}"),
        }
        Ok(Agent { tx, rx })
    }

    pub async fn next(&mut self) -> Down {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("a controller message within 10 s")
            .unwrap()
            .and_then(|m| m.msg)
            .expect("a message")
    }

    pub async fn assignment(&mut self) -> proto::AssignTrial {
        match self.next().await {
            Down::Assign(a) => a,
            other => panic!("expected an assignment, got {other:?}"),
        }
    }

    pub async fn quiet_for(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.rx.message()).await.is_err()
    }

    pub async fn send(&self, msg: Up) {
        self.tx
            .send(proto::AgentMessage { msg: Some(msg) })
            .await
            .unwrap();
    }

    /// The next acknowledgement (assignments on the way are skipped).
    pub async fn ack(&mut self) -> proto::ResultAck {
        loop {
            match self.next().await {
                Down::Ack(a) => return a,
                Down::Assign(_) => continue,
                other => panic!("expected an ack, got {other:?}"),
            }
        }
    }

    pub async fn finish(&mut self, trial: &proto::TrialRef, gflops: f64) -> proto::ResultAck {
        self.send(Up::Finished(proto::TrialFinished {
            trial: Some(trial.clone()),
            metrics: [("gflop_per_s".to_owned(), gflops)].into(),
            fingerprint: Some(Default::default()),
            wall_ms: 1.0,
            ..Default::default()
        }))
        .await;
        self.ack().await
    }
}

pub const ONE: &str = "name: one\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\n";

pub async fn submit(url: &str, yaml: &str) -> Result<proto::SubmitSweepResponse, tonic::Status> {
    operator(url)
        .await
        .submit_sweep(proto::SubmitSweepRequest {
            spec_yaml: yaml.into(),
            source_name: "test.yaml".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// Submits a spec that must be refused rather than wait when no connected
/// device matches it (`--no-wait-for-agents`).
pub async fn submit_no_wait(
    url: &str,
    yaml: &str,
) -> Result<proto::SubmitSweepResponse, tonic::Status> {
    operator(url)
        .await
        .submit_sweep(proto::SubmitSweepRequest {
            spec_yaml: yaml.into(),
            source_name: "test.yaml".into(),
            no_wait_for_agents: true,
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn trials(url: &str, sweep: &str) -> Vec<proto::Trial> {
    operator(url)
        .await
        .list_trials(proto::ListTrialsRequest {
            sweep_id: sweep.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .trials
}

/// A free loopback port (bound, read, released).
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}
