//! One trace per sweep submission, across processes: the real CLI, controller
//! and agent export OTLP/gRPC spans to a real OTLP receiver (the collector's
//! TraceService, served here on loopback) and the spans share one trace id.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chimera_e2e::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// (service.name, trace id hex, span name, span id hex, parent span id hex)
type Span = (String, String, String, String, String);

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.push((
                        service.clone(),
                        hex(&s.trace_id),
                        s.name,
                        hex(&s.span_id),
                        hex(&s.parent_span_id),
                    ));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[test]
fn a_submitted_sweep_is_one_trace_across_cli_controller_and_agent() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = Receiver::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let svc = TraceServiceServer::new(receiver.clone());
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let c = start_controller_env(&dir.path().join("data"), "127.0.0.1:0", "3s", &env);
    let _a = start_agent_env(&c.url, "agent-t", &[], &env);
    wait_for_agents(&c.url, 1);
    let spec = spec_file(
        dir.path(),
        "one.yaml",
        "name: traced\nworkload: kernel\nparams:\n  op: matmul\n  shape: 64,64,64\nharness:\n  min_time_ms: 50\n",
    );
    let out = chimera_env(
        &c.url,
        &["sweep", "submit", spec.to_str().unwrap(), "--wait"],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Spans arrive in batches: wait for a trace holding every span we expect,
    // from all three services.
    let services: BTreeSet<&str> = ["chimera", "chimera-controller", "chimera-agent"].into();
    let expected = [
        "chimera.cli.submit",
        "chimera.controller.submit",
        "chimera.controller.assign",
        "chimera.agent.trial",
        "chimera.agent.phase",
    ];
    let trace = wait_for(
        "one trace from all three processes",
        Duration::from_secs(30),
        || {
            let spans = receiver.0.lock().unwrap().clone();
            let mut by_trace: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> =
                BTreeMap::new();
            for (service, trace, name, ..) in &spans {
                let e = by_trace.entry(trace.clone()).or_default();
                e.0.insert(service.clone());
                e.1.insert(name.clone());
            }
            by_trace
                .into_iter()
                .find(|(_, (s, n))| {
                    services.iter().all(|w| s.contains(*w))
                        && expected.iter().all(|e| n.contains(*e))
                })
                .map(|(t, _)| t)
        },
    );
    let spans: Vec<Span> = receiver
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.1 == trace)
        .cloned()
        .collect();
    // Parent links: the agent's trial hangs off the controller's assignment,
    // which hangs off the submission; phases off the trial.
    let id_of = |name: &str| spans.iter().find(|s| s.2 == name).unwrap().3.clone();
    let parent_of = |name: &str| spans.iter().find(|s| s.2 == name).unwrap().4.clone();
    assert_eq!(
        parent_of("chimera.controller.submit"),
        id_of("chimera.cli.submit")
    );
    assert_eq!(
        parent_of("chimera.controller.assign"),
        id_of("chimera.controller.submit")
    );
    assert_eq!(
        parent_of("chimera.agent.trial"),
        id_of("chimera.controller.assign")
    );
    assert!(spans
        .iter()
        .filter(|s| s.2 == "chimera.agent.phase")
        .all(|s| s.4 == id_of("chimera.agent.trial")));
}
