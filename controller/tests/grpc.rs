//! In-process gRPC tests: the real controller on `127.0.0.1:0`, driven by a
//! scripted agent speaking the wire protocol, so each scheduling rule can be
//! checked message by message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chimera_proto::v1 as proto;
use chimera_proto::v1::agent_service_client::AgentServiceClient;
use proto::agent_message::Msg as Up;
use proto::controller_message::Msg as Down;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

mod support;
use support::*;

#[tokio::test]
async fn a_stale_attempt_is_refused_after_the_lease_expires() {
    let h = start(Duration::from_millis(400)).await;
    let caps = ["kernel/matmul", "kernel/qmatmul"];
    let mut a = Agent::connect(&h.url, "a", vec![device("cpu", "c1", &caps)], vec![]).await;
    let sweep = submit(&h.url, ONE).await.unwrap().sweep_id;
    let first = a.assignment().await.trial.unwrap();
    assert_eq!(first.attempt, 1);
    // The agent vanishes; after the TTL its trial goes back to pending.
    drop(a);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let t = &trials(&h.url, &sweep).await[0];
    assert_eq!(t.state, proto::TrialState::Pending as i32, "{t:?}");

    // A fresh agent gets attempt 2; the old attempt's result is refused.
    let mut b = Agent::connect(&h.url, "b", vec![device("cpu", "c1", &caps)], vec![]).await;
    let second = b.assignment().await.trial.unwrap();
    assert_eq!(
        (second.trial_id.as_str(), second.attempt),
        (first.trial_id.as_str(), 2)
    );
    let stale = b.finish(&first, 1.0).await;
    assert!(!stale.accepted);
    assert!(stale.reason.contains("attempt"), "{}", stale.reason);
    let ok = b.finish(&second, 2.0).await;
    assert!(ok.accepted, "{}", ok.reason);
    let t = &trials(&h.url, &sweep).await[0];
    assert_eq!(t.state, proto::TrialState::Succeeded as i32);
    assert_eq!(
        t.metrics["gflop_per_s"], 2.0,
        "only the current attempt's result counts"
    );
}

#[tokio::test]
async fn a_trial_the_agent_does_not_report_is_assigned_again() {
    let h = start(Duration::from_millis(400)).await;
    let mut a = Agent::simple(&h.url, "a").await;
    submit(&h.url, ONE).await.unwrap();
    let first = a.assignment().await.trial.unwrap();
    // The agent stays alive but never reports the trial (as if the assignment was lost).
    let mut again = None;
    for _ in 0..40 {
        a.send(Up::Heartbeat(proto::Heartbeat { running: vec![] }))
            .await;
        if let Ok(Ok(Some(msg))) =
            tokio::time::timeout(Duration::from_millis(100), a.rx.message()).await
        {
            if let Some(Down::Assign(x)) = msg.msg {
                again = x.trial;
                break;
            }
        }
    }
    let again = again.expect("re-assigned after one lease TTL");
    assert_eq!((again.trial_id, again.attempt), (first.trial_id, 2));
}

#[tokio::test]
async fn one_trial_per_device_at_a_time() {
    let h = start(Duration::from_secs(5)).await;
    let mut a = Agent::simple(&h.url, "a").await;
    let spec = "name: three\nworkload: kernel\nparams:\n  op: matmul\n  shape: [\"8,8,8\", \"8,8,16\", \"8,8,32\"]\n";
    let resp = submit(&h.url, spec).await.unwrap();
    assert_eq!(resp.trials, 3);
    for _ in 0..3 {
        let t = a.assignment().await.trial.unwrap();
        assert!(
            a.quiet_for(Duration::from_millis(300)).await,
            "no second trial while busy"
        );
        assert!(a.finish(&t, 1.0).await.accepted);
    }
    let s = operator(&h.url)
        .await
        .get_sweep(proto::GetSweepRequest {
            sweep_id: resp.sweep_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        s.spec_yaml.contains("name: three"),
        "GetSweep carries the spec"
    );
    assert_eq!(
        (s.state, s.trials_succeeded),
        (proto::SweepState::Done as i32, 3)
    );
}

#[tokio::test]
async fn an_op_no_matching_agent_supports_is_refused_at_submit() {
    let h = start(Duration::from_secs(5)).await;
    let _a = Agent::simple(&h.url, "a").await;
    let spec = "name: q\nworkload: kernel\nparams:\n  shape: 8,8,32\nvariants:\n  - op: matmul\n  - op: qmatmul\n    format: q8_0\n";
    let err = submit(&h.url, spec).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("qmatmul"), "{}", err.message());
    assert!(err.message().contains("line 7"), "{}", err.message());
    let list = operator(&h.url)
        .await
        .list_sweeps(proto::ListSweepsRequest::default())
        .await
        .unwrap();
    assert!(list.into_inner().sweeps.is_empty(), "nothing stored");
}

#[tokio::test]
async fn each_class_runs_every_config_on_every_class_and_any_runs_it_once() {
    let h = start(Duration::from_secs(5)).await;
    let caps = ["kernel/matmul"];
    let mut a = Agent::connect(&h.url, "a", vec![device("cpu", "class-a", &caps)], vec![]).await;
    let mut b = Agent::connect(&h.url, "b", vec![device("cpu", "class-b", &caps)], vec![]).await;
    let each = submit(&h.url, ONE).await.unwrap();
    assert_eq!(each.trials, 2, "one per class");
    let ta = a.assignment().await;
    let tb = b.assignment().await;
    assert!(a.finish(ta.trial.as_ref().unwrap(), 1.0).await.accepted);
    assert!(b.finish(tb.trial.as_ref().unwrap(), 1.0).await.accepted);
    let mut classes: Vec<String> = trials(&h.url, &each.sweep_id)
        .await
        .into_iter()
        .map(|t| t.device_class)
        .collect();
    classes.sort();
    assert_eq!(classes, vec!["class-a", "class-b"]);

    let any = submit(&h.url, &format!("{ONE}placement: any\n"))
        .await
        .unwrap();
    assert_eq!(any.trials, 1, "once on any device");
}

/// An eval sweep scored against a reference trial (`kl: topk`; `kl: full`
/// trials compute their reference themselves and need none).
const EVAL: &str =
    "name: ev\nworkload: eval\nparams:\n  model: m.gguf\n  format: [q8_0, q4k]\n  context: 64\n  kl: topk\n";

fn param(a: &proto::AssignTrial, name: &str) -> String {
    match a.params.get(name).and_then(|v| v.kind.clone()) {
        Some(proto::param_value::Kind::Text(s)) => s,
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn an_eval_sweep_runs_its_reference_once_and_hands_it_to_every_trial() {
    let h = start(Duration::from_secs(5)).await;
    let mut a = Agent::connect(&h.url, "a", vec![device("cpu", "c1", &["eval"])], vec![]).await;
    let resp = submit(&h.url, EVAL).await.unwrap();
    assert_eq!(resp.trials, 3, "two formats and one reference");
    let r = a.assignment().await;
    assert_eq!(param(&r, "role"), "reference");
    assert_eq!(param(&r, "format"), "f32");
    assert!(r.input.is_empty());
    assert!(
        a.quiet_for(Duration::from_millis(300)).await,
        "nothing else before the reference is done"
    );
    let artifact = b"top-k logprobs".to_vec();
    a.send(Up::Finished(proto::TrialFinished {
        trial: r.trial.clone(),
        metrics: [("perplexity".to_owned(), 5.0)].into(),
        fingerprint: Some(Default::default()),
        wall_ms: 1.0,
        detail_json: r#"{"weights":"f32 x272"}"#.into(),
        artifact: artifact.clone(),
    }))
    .await;
    let mut formats = Vec::new();
    for _ in 0..2 {
        let t = loop {
            match a.next().await {
                Down::Assign(t) => break t,
                Down::Ack(ack) => assert!(ack.accepted, "{}", ack.reason),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(t.input, artifact, "each trial gets the reference");
        formats.push(param(&t, "format"));
        assert!(a.finish(t.trial.as_ref().unwrap(), 1.0).await.accepted);
    }
    formats.sort();
    assert_eq!(formats, ["q4k", "q8_0"]);
    let all = trials(&h.url, &resp.sweep_id).await;
    let reference = all
        .iter()
        .find(|t| t.id == r.trial.as_ref().unwrap().trial_id)
        .unwrap();
    assert!(reference.detail_json.contains("f32 x272"));
    assert!(all
        .iter()
        .filter(|t| t.id != reference.id)
        .all(|t| t.depends_on == reference.id));
}

#[tokio::test]
async fn a_failed_reference_fails_the_trials_that_wait_for_it() {
    let h = start(Duration::from_secs(5)).await;
    let mut a = Agent::connect(&h.url, "a", vec![device("cpu", "c1", &["eval"])], vec![]).await;
    let resp = submit(&h.url, EVAL).await.unwrap();
    let r = a.assignment().await;
    a.send(Up::Failed(proto::TrialFailed {
        trial: r.trial.clone(),
        reason: "model `m.gguf` not found".into(),
    }))
    .await;
    match a.next().await {
        Down::Ack(ack) => assert!(ack.accepted, "{}", ack.reason),
        other => panic!("expected the ack of the failure, got {other:?}"),
    }
    assert!(
        a.quiet_for(Duration::from_millis(300)).await,
        "the waiting trials are not assigned"
    );
    let all = trials(&h.url, &resp.sweep_id).await;
    let failed: Vec<&proto::Trial> = all
        .iter()
        .filter(|t| t.state == proto::TrialState::Failed as i32)
        .collect();
    assert_eq!(failed.len(), 3, "{all:?}");
    assert!(failed
        .iter()
        .filter(|t| !t.depends_on.is_empty())
        .all(|t| t.error.contains("m.gguf` not found")));
}

#[tokio::test]
async fn a_reconnecting_agent_keeps_the_trial_it_still_runs() {
    let h = start(Duration::from_secs(5)).await;
    let caps = ["kernel/matmul"];
    let mut a = Agent::connect(&h.url, "a", vec![device("cpu", "c1", &caps)], vec![]).await;
    let sweep = submit(&h.url, ONE).await.unwrap().sweep_id;
    let t = a.assignment().await.trial.unwrap();
    drop(a);
    // Back before the lease ends, still running it: same attempt, result accepted.
    let mut a = Agent::connect(
        &h.url,
        "a",
        vec![device("cpu", "c1", &caps)],
        vec![t.clone()],
    )
    .await;
    let ack = a.finish(&t, 3.0).await;
    assert!(ack.accepted, "{}", ack.reason);
    let rec = &trials(&h.url, &sweep).await[0];
    assert_eq!(
        (rec.attempt, rec.state),
        (1, proto::TrialState::Succeeded as i32)
    );
}

#[tokio::test]
async fn a_second_agent_with_a_taken_name_on_another_host_is_refused() {
    let h = start(Duration::from_secs(5)).await;
    let devices = vec![device("cpu", "c1", &["kernel/matmul"])];
    let _a = Agent::connect_from(&h.url, "a", "host-1", devices.clone(), vec![])
        .await
        .unwrap();
    let err = Agent::connect_from(&h.url, "a", "host-2", devices, vec![])
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(err.message().contains("host-1"), "{}", err.message());
}

#[tokio::test]
async fn malformed_requests_are_refused_with_the_field_named() {
    let h = start(Duration::from_secs(5)).await;
    let mut op = operator(&h.url).await;
    let e = op
        .get_sweep(proto::GetSweepRequest {
            sweep_id: "../etc".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("sweep_id"), "{}", e.message());
    let e = op
        .get_sweep(proto::GetSweepRequest {
            sweep_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    // A hello with a bad name is refused.
    let mut client = AgentServiceClient::connect(h.url.clone()).await.unwrap();
    let (tx, out) = mpsc::channel(4);
    tx.send(proto::AgentMessage {
        msg: Some(Up::Hello(proto::Hello {
            agent_name: "bad name!".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let e = client.session(ReceiverStream::new(out)).await.unwrap_err();
    assert!(e.message().contains("agent_name"), "{}", e.message());
}

#[tokio::test]
async fn the_standard_health_service_reports_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let h = start(Duration::from_secs(5)).await;
    let channel = Channel::from_shared(h.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["chimera.v1.OperatorService", "chimera.v1.AgentService"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service}");
    }
}

#[tokio::test]
async fn metrics_are_scraped_in_prometheus_text_format_with_device_telemetry() {
    let dir = tempfile::tempdir().unwrap();
    let listener = chimera_controller::bind("127.0.0.1:0".parse().unwrap(), false)
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let metrics = free_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(chimera_controller::serve(
        listener,
        chimera_controller::Config {
            data_dir: dir.path().to_owned(),
            lease_ttl: Duration::from_secs(5),
            metrics_listen: Some(metrics),
            ..Default::default()
        },
        shutdown.clone(),
    ));
    let mut a = Agent::simple(&url, "a").await;
    let resp = submit(&url, ONE).await.unwrap();
    let t = a.assignment().await.trial.unwrap();
    let label = format!("{}/{}/{}", t.sweep_id, t.trial_id, t.attempt);
    let samples: Vec<proto::TelemetrySample> = (0..3)
        .map(|i| proto::TelemetrySample {
            device_id: "cpu".into(),
            t_unix_ms: 1_000 + i,
            phase: "measure".into(),
            trial: label.clone(),
            fields: [("cpu_util_pct".to_owned(), 40.0 + i as f64)].into(),
            throttle: vec![],
        })
        .collect();
    a.send(Up::Telemetry(proto::TelemetryBatch {
        samples,
        dropped: 2,
    }))
    .await;
    assert!(a.finish(&t, 1.0).await.accepted);
    // The batch is handled asynchronously: poll until it shows.
    let mut text = String::new();
    for _ in 0..50 {
        text = http_get(metrics, "/metrics").await;
        if text.contains("chimera_telemetry_samples_received_total 3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let value = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(value("chimera_agents_connected", None), Some(1.0));
    assert_eq!(
        value("chimera_trials", Some(("state", "succeeded"))),
        Some(1.0)
    );
    assert_eq!(
        value("chimera_telemetry_samples_received_total", None),
        Some(3.0)
    );
    assert_eq!(
        value("chimera_telemetry_samples_dropped_total", None),
        Some(2.0)
    );
    assert_eq!(
        value(
            "chimera_device_cpu_utilization_percent",
            Some(("agent", "a"))
        ),
        Some(42.0)
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric.starts_with("chimera_assignment_latency_seconds")),
        "{body}"
    );
    // The live view has the newest sample of the device.
    let live = operator(&url)
        .await
        .live_telemetry(proto::LiveTelemetryRequest {})
        .await
        .unwrap()
        .into_inner()
        .samples;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].agent, "a");
    assert_eq!(live[0].sample.as_ref().unwrap().t_unix_ms, 1_002);
    // The samples were kept for the trial and export through the API.
    let got = operator(&url)
        .await
        .get_telemetry(proto::GetTelemetryRequest {
            sweep_id: resp.sweep_id.clone(),
            trial_id: t.trial_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .samples;
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].fields["cpu_util_pct"], 42.0);
    let err = operator(&url)
        .await
        .get_telemetry(proto::GetTelemetryRequest {
            sweep_id: resp.sweep_id,
            trial_id: "t99999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    shutdown.cancel();
}

fn int_param(a: &proto::AssignTrial, name: &str) -> i64 {
    match a.params.get(name).and_then(|v| v.kind.clone()) {
        Some(proto::param_value::Kind::Int(i)) => i,
        other => panic!("{name}: {other:?}"),
    }
}

/// Each device class gets its own search: two scripted agents of two
/// classes answer from different response functions (scripted numbers, not
/// measurements: this checks the scheduler's bookkeeping), and each class's
/// search converges on its own optimum within its own budget.
#[tokio::test]
async fn a_tpe_sweep_searches_each_class_on_its_own_results() {
    let h = start(Duration::from_secs(5)).await;
    let caps = ["kernel/matmul"];
    let a = Agent::connect(&h.url, "a", vec![device("cpu", "class-a", &caps)], vec![]).await;
    let b = Agent::connect(&h.url, "b", vec![device("cpu", "class-b", &caps)], vec![]).await;
    let spec = "name: tpe\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\n  threads: {min: 1, max: 24}\n\
                search: {strategy: tpe, trials: 8, startup: 3, seed: 5, objective: {minimize: latency_ms_p50}}\n";
    let resp = submit(&h.url, spec).await.unwrap();
    assert_eq!(
        resp.trials, 6,
        "the first generation: 3 random configurations per class"
    );
    // Class a is fastest at 4 threads, class b at 20.
    let run = |mut agent: Agent, peak: i64| {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Ok(Ok(Some(msg))) =
                tokio::time::timeout(Duration::from_secs(2), agent.rx.message()).await
            {
                let Some(Down::Assign(t)) = msg.msg else {
                    continue;
                };
                let threads = int_param(&t, "threads");
                seen.push(threads);
                agent
                    .send(Up::Finished(proto::TrialFinished {
                        trial: t.trial.clone(),
                        metrics: [(
                            "latency_ms_p50".to_owned(),
                            1.0 + (threads - peak).abs() as f64,
                        )]
                        .into(),
                        fingerprint: Some(Default::default()),
                        wall_ms: 1.0,
                        ..Default::default()
                    }))
                    .await;
            }
            seen
        })
    };
    let (sa, sb) = (run(a, 4), run(b, 20));
    let (sa, sb) = (sa.await.unwrap(), sb.await.unwrap());
    for (seen, peak) in [(&sa, 4), (&sb, 20)] {
        assert_eq!(seen.len(), 8, "the budget of each class: {seen:?}");
        let mut distinct = seen.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 8, "no configuration twice: {seen:?}");
        let best = seen.iter().map(|t| (t - peak).abs()).min().unwrap();
        assert!(
            best <= 2,
            "class with its peak at {peak} got to {best} from it: {seen:?}"
        );
    }
    assert_ne!(sa, sb, "two classes, two searches");
    let sweep = operator(&h.url)
        .await
        .get_sweep(proto::GetSweepRequest {
            sweep_id: resp.sweep_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sweep.trials_total, 16);
    assert_eq!(sweep.trials_succeeded, 16);
    assert_eq!(sweep.state, proto::SweepState::Done as i32);
}

#[tokio::test]
async fn max_duration_cancels_what_has_not_started() {
    // The lease outlives the wait (the scripted agent sends no heartbeat);
    // deadlines are checked every quarter lease.
    let h = start(Duration::from_secs(2)).await;
    let mut a = Agent::simple(&h.url, "a").await;
    let spec = "name: d\nworkload: kernel\nparams:\n  op: matmul\n  shape: [\"1,8,8\", \"2,8,8\", \"3,8,8\"]\nbudget: {max_duration: 1s}\n";
    let resp = submit(&h.url, spec).await.unwrap();
    let t = a.assignment().await;
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(
        a.finish(t.trial.as_ref().unwrap(), 1.0).await.accepted,
        "a running trial finishes"
    );
    let all = trials(&h.url, &resp.sweep_id).await;
    let cancelled: Vec<&proto::Trial> = all
        .iter()
        .filter(|t| t.state == proto::TrialState::Cancelled as i32)
        .collect();
    assert_eq!(cancelled.len(), 2, "{all:?}");
    assert!(
        cancelled[0].error.contains("budget.max_duration (1 s)"),
        "{:?}",
        cancelled[0]
    );
    assert!(
        a.quiet_for(Duration::from_millis(300)).await,
        "nothing assigned after the deadline"
    );
}

#[tokio::test]
async fn placement_all_pins_a_trial_to_every_device_and_selectors_read_labels() {
    let h = start(Duration::from_secs(5)).await;
    let caps = ["kernel/matmul"];
    let mut a = Agent::connect_labelled(
        &h.url,
        "a",
        "host-a",
        vec![device("cpu", "c1", &caps)],
        vec![],
        &[("site", "lab")],
    )
    .await
    .unwrap();
    let mut b = Agent::connect_from(
        &h.url,
        "b",
        "host-b",
        vec![device("cpu", "c1", &caps)],
        vec![],
    )
    .await
    .unwrap();
    let listed = operator(&h.url)
        .await
        .list_agents(proto::ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .agents;
    let la = listed.iter().find(|x| x.name == "a").unwrap();
    assert_eq!(la.labels.get("site").map(String::as_str), Some("lab"));

    // `all`: one trial per configuration per device, each on its own device.
    let all = submit(&h.url, &format!("{ONE}placement: all\n"))
        .await
        .unwrap();
    assert_eq!(all.trials, 2, "one per device of the class");
    let (ta, tb) = (a.assignment().await, b.assignment().await);
    assert!(a.finish(ta.trial.as_ref().unwrap(), 1.0).await.accepted);
    assert!(b.finish(tb.trial.as_ref().unwrap(), 1.0).await.accepted);
    let mut pins: Vec<(String, String)> = trials(&h.url, &all.sweep_id)
        .await
        .into_iter()
        .map(|t| (t.pinned.unwrap_or_default(), t.agent))
        .collect();
    pins.sort();
    assert_eq!(
        pins,
        [
            ("a/cpu".to_owned(), "a".to_owned()),
            ("b/cpu".to_owned(), "b".to_owned())
        ]
    );

    // A selector on an agent label.
    let lab = submit(
        &h.url,
        &format!("{ONE}placement: all\ntarget: {{select: [\"labels.site == lab\", \"memory_gb >= 0\"]}}\n"),
    )
    .await
    .unwrap();
    assert_eq!(lab.trials, 1);
    let t = a.assignment().await;
    assert!(a.finish(t.trial.as_ref().unwrap(), 1.0).await.accepted);
    assert!(
        b.quiet_for(Duration::from_millis(300)).await,
        "b has no `site` label"
    );

    // A selector nothing meets is refused (when asked not to wait), naming it.
    let e = submit_no_wait(
        &h.url,
        &format!("{ONE}target: {{select: \"gpu.name ~ H100\"}}\n"),
    )
    .await
    .unwrap_err();
    assert!(e.message().contains("gpu.name ~ H100"), "{}", e.message());
    let e = submit(
        &h.url,
        &format!("{ONE}target: {{select: \"gpu.nmae ~ H100\"}}\n"),
    )
    .await
    .unwrap_err();
    assert!(
        e.message().contains("unknown field `gpu.nmae`"),
        "{}",
        e.message()
    );
}

#[tokio::test]
async fn a_variant_runs_only_on_the_devices_it_is_for() {
    let h = start(Duration::from_secs(5)).await;
    let caps = ["kernel/matmul"];
    let mut cpu = Agent::connect(&h.url, "c", vec![device("cpu", "a-cpu", &caps)], vec![]).await;
    let mut gpu_dev = device("gpu0", "b-gpu", &caps);
    gpu_dev.kind = "gpu".into();
    let mut gpu = Agent::connect(&h.url, "g", vec![gpu_dev], vec![]).await;
    // `threads` only for CPUs; GPUs run the same op without it.
    let spec = "name: c\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\nvariants:\n  - threads: [1, 2]\n    when: {kind: cpu}\n  - when: {kind: gpu}\n";
    let resp = submit(&h.url, spec).await.unwrap();
    assert_eq!(resp.trials, 3, "two on the CPU class, one on the GPU class");
    for _ in 0..2 {
        let t = cpu.assignment().await;
        assert!(t.params.contains_key("threads"));
        assert!(cpu.finish(t.trial.as_ref().unwrap(), 1.0).await.accepted);
    }
    let t = gpu.assignment().await;
    assert!(!t.params.contains_key("threads"), "{t:?}");
    assert!(gpu.finish(t.trial.as_ref().unwrap(), 1.0).await.accepted);
    // Nothing for a variant no connected device is for.
    let e = submit(&h.url, "name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\nvariants:\n  - when: {agents: nobody}\n")
        .await
        .unwrap_err();
    assert!(
        e.message()
            .contains("no configuration is for a connected device"),
        "{}",
        e.message()
    );
}

#[tokio::test]
async fn a_gpu_seen_without_cuda_is_listed_unusable_and_a_sweep_for_it_is_refused_with_why() {
    let h = start(Duration::from_secs(5)).await;
    // What an agent built without the `cuda` feature declares for an NVML GPU.
    let reason = "this agent was built without CUDA: build it with deploy/build-cuda-agent.sh";
    let mut gpu = device("gpu:0", "NVIDIA H100 80GB HBM3 80GiB", &[]);
    gpu.kind = "gpu".into();
    gpu.unusable_reason = reason.into();
    let cpu = device("cpu", "cpu: test x2", &["kernel/matmul"]);
    let _a = Agent::connect(&h.url, "a", vec![cpu, gpu], vec![]).await;

    let agents = operator(&h.url)
        .await
        .list_agents(proto::ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .agents;
    let listed = &agents[0].devices;
    assert_eq!(
        listed
            .iter()
            .map(|d| (d.id.as_str(), d.unusable_reason.as_str()))
            .collect::<Vec<_>>(),
        [("cpu", ""), ("gpu:0", reason)]
    );

    let spec =
        "name: g\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\ntarget: {kind: gpu}\n";
    for e in [
        submit(&h.url, spec).await.unwrap_err(),
        submit_no_wait(&h.url, spec).await.unwrap_err(),
    ] {
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
        assert!(e.message().contains("line 6: target"), "{}", e.message());
        assert!(e.message().contains("a/gpu:0"), "{}", e.message());
        assert!(e.message().contains(reason), "{}", e.message());
    }
    let sweeps = operator(&h.url)
        .await
        .list_sweeps(proto::ListSweepsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sweeps;
    assert!(
        sweeps.is_empty(),
        "nothing stored, nothing waits: {sweeps:?}"
    );
    // The agent's CPU still takes sweeps.
    let cpu_spec = spec.replace("kind: gpu", "kind: cpu");
    assert_eq!(submit(&h.url, &cpu_spec).await.unwrap().trials, 1);
}
