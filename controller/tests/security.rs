//! The controller as an attacker on its network would meet it: each test
//! runs the real controller on `127.0.0.1:0` (with TLS, client certificates
//! and tokens where the test needs them, from a CA made by
//! `chimera_controller::tls`) and checks that a hostile request is refused
//! with a clear status, changes nothing it should not, and leaves the
//! controller serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use chimera_controller::auth::{token_hash, TokenEntry, TokensFile};
use chimera_controller::tls::{self, ServerTls, Subject};
use chimera_domain::identity::Role;
use chimera_observe::tls::ClientTls;
use chimera_proto::v1 as proto;
use chimera_proto::v1::operator_service_client::OperatorServiceClient;
use proto::agent_message::Msg as Up;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;
use tonic::Code;

/// A CA and the certificates the tests use, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        tls::init_ca(dir.path(), 2, false).unwrap();
        let subjects = [
            Subject::Controller {
                name: "c1".into(),
                hosts: vec!["127.0.0.1".into(), "localhost".into()],
            },
            Subject::Agent { name: "a".into() },
            Subject::Agent { name: "b".into() },
            Subject::Operator {
                name: "alice".into(),
                role: Role::Admin,
            },
            Subject::Operator {
                name: "val".into(),
                role: Role::Viewer,
            },
        ];
        for s in &subjects {
            tls::issue(dir.path(), s, 2).unwrap();
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server(&self) -> ServerTls {
        ServerTls {
            cert: self.path("controller-c1.pem"),
            key: self.path("controller-c1-key.pem"),
            client_ca: Some(self.path("ca.pem")),
        }
    }

    /// A client trusting the CA, with the certificate of `who`
    /// (`agent-a`, `operator-alice`) when given.
    fn client(&self, who: Option<&str>) -> ClientTls {
        ClientTls {
            ca: Some(self.path("ca.pem")),
            cert: who.map(|w| self.path(&format!("{w}.pem"))),
            key: who.map(|w| self.path(&format!("{w}-key.pem"))),
        }
    }
}

/// A tokens file with one token per role: `chm_viewer`, `chm_operator`, `chm_admin`.
fn tokens_file(dir: &Path) -> PathBuf {
    let file = TokensFile {
        tokens: ["viewer", "operator", "admin"]
            .iter()
            .map(|r| TokenEntry {
                name: format!("{r}-token"),
                role: (*r).into(),
                sha256: token_hash(&format!("chm_{r}")),
                created: None,
            })
            .collect(),
    };
    let path = dir.join("tokens.toml");
    std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
    path
}

async fn start_tls(pki: &Pki) -> Harness {
    let tokens = tokens_file(pki.dir.path());
    start_with(|c| {
        c.tls = Some(pki.server());
        c.tokens_file = Some(tokens);
        c.metrics_listen = Some(free_addr());
    })
    .await
}

async fn op(h: &Harness, tls: &ClientTls) -> OperatorServiceClient<tonic::transport::Channel> {
    OperatorServiceClient::new(channel(&h.url, tls).await.unwrap())
}

fn hello(name: &str, devices: Vec<proto::Device>) -> proto::Hello {
    proto::Hello {
        agent_name: name.into(),
        hostname: "host".into(),
        devices,
        ..Default::default()
    }
}

async fn tls_agent(
    h: &Harness,
    pki: &Pki,
    cert: &str,
    name: &str,
    class: &str,
) -> Result<Agent, tonic::Status> {
    let ch = channel(&h.url, &pki.client(Some(cert))).await.unwrap();
    Agent::open(
        ch,
        hello(name, vec![device("cpu", class, &["kernel/matmul"])]),
    )
    .await
}

/// The value of a metric line (`name{labels} value`) in a scrape.
fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Whether listing sweeps (as an admin) fails at the connection or the call.
async fn list_fails(url: &str, tls: &ClientTls) -> bool {
    let Ok(ch) = channel(url, tls).await else {
        return true;
    };
    OperatorServiceClient::new(ch)
        .list_sweeps(bearer(proto::ListSweepsRequest::default(), "chm_admin"))
        .await
        .is_err()
}

#[tokio::test]
async fn a_plaintext_client_is_refused_by_a_tls_controller() {
    let pki = Pki::new();
    let h = start_tls(&pki).await;
    let plain = h.url.replace("https://", "http://");
    assert!(
        list_fails(&plain, &ClientTls::default()).await,
        "a plaintext call must not get through"
    );
    // A client that does not trust the controller's CA stops at the handshake.
    let other = Pki::new();
    assert!(list_fails(&h.url, &other.client(None)).await);
    // The controller keeps serving TLS clients.
    op(&h, &pki.client(None))
        .await
        .list_sweeps(bearer(proto::ListSweepsRequest::default(), "chm_viewer"))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_agent_certificate_must_name_the_agent_that_says_hello() {
    let pki = Pki::new();
    let h = start_tls(&pki).await;
    // Certificate of `a`, hello as `b`.
    let e = tls_agent(&h, &pki, "agent-a", "b", "c1")
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        e.message(),
        "the client certificate names agent `a`, but hello.agent_name is `b`"
    );
    // No certificate, and an operator's certificate, are refused too.
    let ch = channel(&h.url, &pki.client(None)).await.unwrap();
    let e = Agent::open(ch, hello("a", vec![])).await.err().unwrap();
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
    let e = tls_agent(&h, &pki, "operator-alice", "alice", "c1")
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    // The right name gets in, and the audit record says how.
    let _a = tls_agent(&h, &pki, "agent-a", "a", "c1").await.unwrap();
    let agents = op(&h, &pki.client(None))
        .await
        .list_agents(bearer(proto::ListAgentsRequest::default(), "chm_viewer"))
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].registered_by, "cert:agent/a");
}

#[tokio::test]
async fn forged_results_and_telemetry_for_another_sessions_trial_are_refused_and_counted() {
    let pki = Pki::new();
    let h = start_tls(&pki).await;
    let mut a = tls_agent(&h, &pki, "agent-a", "a", "ca").await.unwrap();
    let mut b = tls_agent(&h, &pki, "agent-b", "b", "cb").await.unwrap();
    let mut admin = op(&h, &pki.client(Some("operator-alice"))).await;
    let sweep = admin
        .submit_sweep(proto::SubmitSweepRequest {
            spec_yaml: ONE.into(),
            source_name: "one.yaml".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .sweep_id;
    // One trial per class: a's and b's.
    let mine_a = a.assignment().await.trial.unwrap();
    let mine_b = b.assignment().await.trial.unwrap();

    // b reports a's trial, with a flattering latency.
    b.send(Up::Finished(proto::TrialFinished {
        trial: Some(mine_a.clone()),
        metrics: [("latency_ms_p50".to_owned(), 1e-6)].into(),
        fingerprint: Some(Default::default()),
        wall_ms: 1.0,
        ..Default::default()
    }))
    .await;
    let ack = b.ack().await;
    assert!(!ack.accepted);
    assert!(
        ack.reason.contains("not assigned to agent b"),
        "{}",
        ack.reason
    );
    // ... and sends telemetry labelled with a's trial, and for a device it never declared.
    let label_a = format!("{}/{}/{}", mine_a.sweep_id, mine_a.trial_id, mine_a.attempt);
    let label_b = format!("{}/{}/{}", mine_b.sweep_id, mine_b.trial_id, mine_b.attempt);
    let sample = |device: &str, trial: &str| proto::TelemetrySample {
        device_id: device.into(),
        t_unix_ms: 1,
        phase: "measure".into(),
        trial: trial.into(),
        fields: [("power_w".to_owned(), 1.0)].into(),
        throttle: vec![],
    };
    b.send(Up::Telemetry(proto::TelemetryBatch {
        samples: vec![
            sample("cpu", &label_a),
            sample("gpu:9", &label_b),
            sample("cpu", &label_b),
        ],
        dropped: 0,
    }))
    .await;

    // a's own report is the one recorded.
    assert!(a.finish(&mine_a, 7.0).await.accepted);
    let trials = op(&h, &pki.client(None))
        .await
        .list_trials(bearer(
            proto::ListTrialsRequest {
                sweep_id: sweep.clone(),
                ..Default::default()
            },
            "chm_viewer",
        ))
        .await
        .unwrap()
        .into_inner()
        .trials;
    let ta = trials.iter().find(|t| t.id == mine_a.trial_id).unwrap();
    assert_eq!(ta.state, proto::TrialState::Succeeded as i32);
    assert_eq!(ta.agent, "a");
    assert_eq!(ta.metrics.get("gflop_per_s"), Some(&7.0));
    assert!(!ta.metrics.contains_key("latency_ms_p50"));

    // Counted: one foreign result, two foreign samples; b's own sample kept.
    let url = h.metrics.unwrap();
    let mut text = String::new();
    for _ in 0..100 {
        text = http_get(url, "/metrics").await;
        if metric(&text, "chimera_telemetry_samples_received_total") >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(
            &text,
            "chimera_results_refused_total{reason=\"other_agent\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "chimera_telemetry_samples_rejected_total"),
        2.0,
        "{text}"
    );
    let telemetry = |trial: String| {
        let (h, pki, sweep) = (&h, &pki, sweep.clone());
        async move {
            op(h, &pki.client(None))
                .await
                .get_telemetry(bearer(
                    proto::GetTelemetryRequest {
                        sweep_id: sweep,
                        trial_id: trial,
                    },
                    "chm_viewer",
                ))
                .await
                .unwrap()
                .into_inner()
                .samples
        }
    };
    assert!(telemetry(mine_a.trial_id.clone()).await.is_empty());
    assert_eq!(telemetry(mine_b.trial_id.clone()).await.len(), 1);
}

#[tokio::test]
async fn roles_decide_who_may_read_submit_cancel_and_drain() {
    let pki = Pki::new();
    let h = start_tls(&pki).await;
    let _a = tls_agent(&h, &pki, "agent-a", "a", "c1").await.unwrap();
    let mut c = op(&h, &pki.client(None)).await;
    let spec = || proto::SubmitSweepRequest {
        spec_yaml: ONE.into(),
        source_name: "one.yaml".into(),
        ..Default::default()
    };
    // Nobody: unauthenticated. A wrong token: unauthenticated.
    let e = c
        .list_sweeps(proto::ListSweepsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = c
        .list_sweeps(bearer(proto::ListSweepsRequest::default(), "chm_nope"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // A viewer reads, but neither submits nor cancels.
    c.list_sweeps(bearer(proto::ListSweepsRequest::default(), "chm_viewer"))
        .await
        .unwrap();
    let e = c
        .submit_sweep(bearer(spec(), "chm_viewer"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        e.message(),
        "token:viewer-token has role viewer; SubmitSweep needs operator"
    );
    let id = c
        .submit_sweep(bearer(spec(), "chm_operator"))
        .await
        .unwrap()
        .into_inner()
        .sweep_id;
    let cancel = || proto::CancelSweepRequest {
        sweep_id: id.clone(),
    };
    let e = c
        .cancel_sweep(bearer(cancel(), "chm_viewer"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // An operator cancels but does not drain; an admin drains.
    let s = c
        .cancel_sweep(bearer(cancel(), "chm_operator"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.submitted_by, "token:operator-token");
    assert_eq!(s.cancelled_by, "token:operator-token");
    let drain = || proto::DrainAgentRequest { name: "a".into() };
    let e = c
        .drain_agent(bearer(drain(), "chm_operator"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // A viewer's certificate reads but cannot drain; an admin's certificate drains.
    let mut val = op(&h, &pki.client(Some("operator-val"))).await;
    val.list_agents(proto::ListAgentsRequest::default())
        .await
        .unwrap();
    let e = val.drain_agent(drain()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("cert:operator/val has role viewer"),
        "{}",
        e.message()
    );
    let mut alice = op(&h, &pki.client(Some("operator-alice"))).await;
    let agent = alice.drain_agent(drain()).await.unwrap().into_inner();
    assert!(agent.draining);
    assert_eq!(agent.drained_by, "cert:operator/alice");
    // An agent's certificate is no operator's.
    let mut as_agent = op(&h, &pki.client(Some("agent-a"))).await;
    let e = as_agent
        .list_sweeps(proto::ListSweepsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}

/// A spec whose comment is 1 MiB minus a little of `"`: within the spec
/// cap, but JSON-escaped in the sweep's record it doubles.
fn escaping_spec() -> String {
    let head = format!("{ONE}# ");
    let room = (1 << 20) - head.len() - 1;
    format!("{head}{}\n", "\"".repeat(room))
}

#[tokio::test]
async fn oversized_fields_are_refused_and_the_controller_keeps_serving() {
    let h = start_with(|c| c.metrics_listen = Some(free_addr())).await;
    let mut a = Agent::simple(&h.url, "a").await;
    let still_serving = || async {
        let id = submit(
            &h.url,
            "name: ok\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\n",
        )
        .await
        .expect("the controller still takes sweeps")
        .sweep_id;
        operator(&h.url)
            .await
            .get_sweep(proto::GetSweepRequest { sweep_id: id })
            .await
            .expect("and answers")
    };

    // A 2 MB host name.
    let mut big = hello("h1", vec![device("cpu", "c1", &["kernel/matmul"])]);
    big.hostname = "h".repeat(2 << 20);
    let e = Agent::open(channel(&h.url, &ClientTls::default()).await.unwrap(), big)
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .starts_with("hello.hostname: 2097152 bytes exceeds the limit of 253"),
        "{}",
        e.message()
    );
    still_serving().await;

    // A spec that escapes to a record over the store's value limit.
    let e = submit(&h.url, &escaping_spec()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("over the limit of 1048576 bytes"),
        "{}",
        e.message()
    );
    still_serving().await;

    // Results with a 2 MB fingerprint and with a 1000-byte metric name:
    // refused, counted, and their trials failed with the reason.
    for (what, finished) in [
        (
            "fingerprint.extra",
            proto::TrialFinished {
                fingerprint: Some(proto::Fingerprint {
                    extra: [("k".to_owned(), "v".repeat(2 << 20))].into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        (
            "finished.metrics: name",
            proto::TrialFinished {
                metrics: [("m".repeat(1000), 1.0)].into(),
                fingerprint: Some(Default::default()),
                ..Default::default()
            },
        ),
    ] {
        let trial = a.assignment().await.trial.unwrap();
        a.send(Up::Finished(proto::TrialFinished {
            trial: Some(trial.clone()),
            wall_ms: 1.0,
            ..finished
        }))
        .await;
        let ack = a.ack().await;
        assert!(!ack.accepted || ack.reason.is_empty());
        let t = trials(&h.url, &trial.sweep_id)
            .await
            .into_iter()
            .find(|t| t.id == trial.trial_id)
            .unwrap();
        assert_eq!(t.state, proto::TrialState::Failed as i32);
        assert!(t.error.contains(what), "{what}: {}", t.error);
        assert!(t.error.len() < 1000, "the value is not echoed whole");
        still_serving().await;
    }
    let text = http_get(h.metrics.unwrap(), "/metrics").await;
    assert_eq!(
        metric(&text, "chimera_results_refused_total{reason=\"invalid\"}"),
        2.0,
        "{text}"
    );
}

#[tokio::test]
async fn deeply_nested_yaml_is_refused_without_stalling_other_calls() {
    let h = start(Duration::from_secs(10)).await;
    let _a = Agent::simple(&h.url, "a").await;
    let deep = format!(
        "name: t\nworkload: kernel\nparams: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let submits: Vec<_> = (0..4)
        .map(|_| {
            let (url, deep) = (h.url.clone(), deep.clone());
            tokio::spawn(async move { submit(&url, &deep).await })
        })
        .collect();
    // Meanwhile every other call is answered (each bounded by a deadline:
    // a stalled runtime would miss it).
    for _ in 0..20 {
        let mut c = operator(&h.url).await;
        let mut req = tonic::Request::new(proto::ListSweepsRequest::default());
        req.set_timeout(Duration::from_secs(5));
        c.list_sweeps(req)
            .await
            .expect("answered while specs are refused");
    }
    for s in submits {
        let e = s.await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("nests collections more than 32 deep"),
            "{}",
            e.message()
        );
        assert!(
            e.message().starts_with("test.yaml: line 3:"),
            "{}",
            e.message()
        );
    }
    submit(&h.url, ONE).await.unwrap();
}

#[tokio::test]
async fn a_device_id_that_would_inject_a_metrics_line_is_refused() {
    let h = start_with(|c| c.metrics_listen = Some(free_addr())).await;
    let evil = "x\"} 1\nchimera_controller_leader 0";
    let e = Agent::open(
        channel(&h.url, &ClientTls::default()).await.unwrap(),
        hello("a", vec![device(evil, "c1", &["kernel/matmul"])]),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .starts_with("hello.devices[0].id \"x\\\"} 1\\nchimera"),
        "{}",
        e.message()
    );
    let text = http_get(h.metrics.unwrap(), "/metrics").await;
    let leader_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("chimera_controller_leader"))
        .collect();
    assert_eq!(leader_lines, ["chimera_controller_leader 1"], "{text}");
}

#[tokio::test]
async fn lists_come_in_pages() {
    let h = start(Duration::from_secs(10)).await;
    let _a = Agent::connect(
        &h.url,
        "a",
        vec![device("cpu", "c1", &[]), device("gpu:0", "c2", &[])],
        vec![],
    )
    .await;
    let _b = Agent::simple(&h.url, "b").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(submit(&h.url, ONE).await.unwrap().sweep_id);
    }
    let mut c = operator(&h.url).await;
    let first = c
        .list_sweeps(proto::ListSweepsRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.sweeps.iter().map(|s| &s.id).collect::<Vec<_>>(),
        [&ids[2], &ids[1]],
        "newest first"
    );
    let rest = c
        .list_sweeps(proto::ListSweepsRequest {
            page_size: 2,
            page_token: first.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.sweeps.iter().map(|s| &s.id).collect::<Vec<_>>(),
        [&ids[0]]
    );
    assert!(rest.next_page_token.is_empty());
    let agents = c
        .list_agents(proto::ListAgentsRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            agents.agents[0].name.as_str(),
            agents.next_page_token.as_str()
        ),
        ("a", "a")
    );
    let e = c
        .list_agents(proto::ListAgentsRequest {
            page_size: 1,
            page_token: "../x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("page_token"), "{}", e.message());
}
