//! Scheduler throughput and assignment latency, through the real gRPC API.
//!
//! Starts the real controller in-process on an embedded store, connects many
//! **simulated** agents (device class `simulated: bench`, each finishing a trial
//! the moment it is assigned, reporting only a dummy `simulated` metric), submits
//! one sweep and measures how fast the controller turns trials around, and the
//! latency from a finished report to the next assignment on that device. The
//! peer it is quoted against, measured in the same run on the same disk, is the
//! store's own rate of single-write commits (each fsynced): group commit is what
//! lets the scheduler run faster than one commit per assignment.
//!
//! `cargo bench -p chimera-controller --bench scheduler -- [AGENTS] [TRIALS]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chimera_controller::store::{embedded::EmbeddedStore, Op, Store, Txn};
use chimera_proto::v1 as proto;
use chimera_proto::v1::agent_service_client::AgentServiceClient;
use chimera_proto::v1::operator_service_client::OperatorServiceClient;
use proto::agent_message::Msg as Up;
use proto::controller_message::Msg as Down;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn store_commit_rate(dir: &std::path::Path, n: usize) -> f64 {
    let store = EmbeddedStore::open(dir).unwrap();
    let start = Instant::now();
    for i in 0..n {
        store
            .txn(Txn {
                success: vec![Op::put(format!("/bench/{i}"), vec![0u8; 300])],
                ..Default::default()
            })
            .await
            .unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

type Session = (
    mpsc::Sender<proto::AgentMessage>,
    tonic::Streaming<proto::ControllerMessage>,
);

async fn open_session(
    url: &str,
    name: &str,
) -> Result<Session, Box<dyn std::error::Error + Send + Sync>> {
    let mut client = AgentServiceClient::connect(url.to_owned()).await?;
    let (tx, out) = mpsc::channel(64);
    tx.send(proto::AgentMessage {
        msg: Some(Up::Hello(proto::Hello {
            agent_name: name.to_owned(),
            hostname: "simulated".into(),
            devices: vec![proto::Device {
                id: "sim0".into(),
                kind: "cpu".into(),
                model: "simulated device".into(),
                device_class: "simulated: bench".into(),
                capabilities: vec!["kernel/matmul".into()],
                ..Default::default()
            }],
            ..Default::default()
        })),
    })
    .await?;
    let rx = client.session(ReceiverStream::new(out)).await?.into_inner();
    Ok((tx, rx))
}

/// A simulated agent: finishes each assignment at once; returns the
/// finished-to-next-assignment latencies it saw (ms).
async fn sim_agent(url: String, name: String, stop: CancellationToken) -> Vec<f64> {
    // Like a real agent, retry a refused connection with backoff (thousands of
    // simultaneous connects can overflow the listen backlog).
    let mut attempt = 0u32;
    let (tx, mut rx) = loop {
        match open_session(&url, &name).await {
            Ok(pair) => break pair,
            Err(e) => {
                attempt += 1;
                assert!(attempt < 20, "{name}: cannot open a session: {e}");
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
        }
    };
    let mut latencies = Vec::new();
    let mut finished_at: Option<Instant> = None;
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            m = rx.message() => match m { Ok(Some(m)) => m, _ => break },
        };
        if let Some(Down::Assign(a)) = msg.msg {
            if let Some(t) = finished_at.take() {
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let trial = a.trial;
            tx.send(proto::AgentMessage {
                msg: Some(Up::Started(proto::TrialStarted {
                    trial: trial.clone(),
                })),
            })
            .await
            .unwrap();
            tx.send(proto::AgentMessage {
                msg: Some(Up::Finished(proto::TrialFinished {
                    trial,
                    metrics: [("simulated".to_owned(), 1.0)].into(),
                    fingerprint: Some(Default::default()),
                    wall_ms: 0.0,
                    ..Default::default()
                })),
            })
            .await
            .unwrap();
            finished_at = Some(Instant::now());
        }
    }
    latencies
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let agents = args.first().copied().unwrap_or(500);
    let trials = args.get(1).copied().unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let commits = store_commit_rate(&dir.path().join("peer"), 300).await;

        let listener = chimera_controller::bind("127.0.0.1:0".parse().unwrap(), false)
            .await
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let config = chimera_controller::Config {
            data_dir: dir.path().join("controller"),
            lease_ttl: Duration::from_secs(60),
        ..Default::default()
    };
        tokio::spawn(chimera_controller::serve(listener, config, shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        for i in 0..agents {
            handles.push(tokio::spawn(sim_agent(url.clone(), format!("sim-{i:05}"), stop.clone())));
        }
        let mut op = OperatorServiceClient::connect(url.clone()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = op.list_agents(proto::ListAgentsRequest::default()).await.unwrap().into_inner().agents.len();
            if n == agents {
                break;
            }
            assert!(
                Instant::now() < deadline && !handles.iter().any(|h| h.is_finished()),
                "only {n} of {agents} simulated agents connected: each takes two file \
                 descriptors in this process, raise `ulimit -n`"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // `trials` trials: 100 shapes x repeats.
        let repeats = trials.div_ceil(100);
        let shapes: Vec<String> = (1..=100).map(|k| format!("\"1,1,{k}\"")).collect();
        let spec = format!(
            "name: scheduler-bench\nworkload: kernel\nparams:\n  op: matmul\n  shape: [{}]\nrepeats: {repeats}\nplacement: any\n",
            shapes.join(", ")
        );
        let start = Instant::now();
        let resp = op
            .submit_sweep(proto::SubmitSweepRequest { spec_yaml: spec, source_name: "bench".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let submit_s = start.elapsed().as_secs_f64();
        let mut watch = op
            .watch_sweep(proto::WatchSweepRequest { sweep_id: resp.sweep_id.clone() })
            .await
            .unwrap()
            .into_inner();
        while let Some(ev) = watch.message().await.unwrap() {
            if ev.sweep.is_some_and(|s| s.state != proto::SweepState::Running as i32) {
                break;
            }
        }
        let total_s = start.elapsed().as_secs_f64();
        stop.cancel();
        let mut lat: Vec<f64> = Vec::new();
        for h in handles {
            lat.extend(h.await.unwrap());
        }
        shutdown.cancel();
        lat.sort_by(f64::total_cmp);
        let rate = resp.trials as f64 / total_s;
        println!("simulated agents (1 simulated device each): {agents}");
        println!("trials: {}  (submit + store of the sweep: {:.3} s)", resp.trials, submit_s);
        println!("end to end: {total_s:.2} s -> {rate:.0} trials/s (assign + started + finished + ack, each durable)");
        if !lat.is_empty() {
            println!(
                "finished -> next assignment on the same device: p50 {:.2} ms, p99 {:.2} ms ({} samples)",
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                lat.len()
            );
        }
        println!("peer: store single-write commits (fsync each): {commits:.0} commits/s");
        println!("ratio: {:.1} trials per single-write commit time", rate / commits);
    });
}
