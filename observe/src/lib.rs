//! What every Chimera binary sets up the same way: logs to stderr, OpenTelemetry
//! traces over OTLP, W3C trace-context propagation, signal handling, the
//! retry backoff and the leader hint.
//!
//! Tracing is configured by the standard variables and off when they are unset:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! turns the OTLP/gRPC exporter on; `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` name the service (the binary's name otherwise);
//! `OTEL_BSP_SCHEDULE_DELAY` etc. tune the batch exporter.
//!
//! Propagation: a trace context travels as the W3C `traceparent` /
//! `tracestate` pair, in gRPC metadata (CLI → controller) or in a string map
//! inside a message (controller → agent, stored with the sweep so it outlives
//! the request).

pub mod leader;
pub mod retry;
pub mod systemd;
pub mod tls;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the trace exporter alive; [`Guard::shutdown`] flushes it.
#[must_use = "drop it only after calling shutdown, or spans are lost"]
pub struct Guard(Option<SdkTracerProvider>);

impl Guard {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.0.is_some()
    }

    /// Flushes and stops the exporter (off the async runtime's threads).
    pub async fn shutdown(self) {
        if let Some(p) = self.0 {
            let _ = tokio::task::spawn_blocking(move || {
                let _ = p.force_flush();
                let _ = p.shutdown();
            })
            .await;
        }
    }
}

fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()))
}

/// Installs logging (stderr, `RUST_LOG` or `default_filter`) and, when the
/// OTLP variables are set, the trace exporter. Call inside the Tokio runtime.
pub fn init(service: &str, default_filter: &str) -> Guard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let mut provider = None;
    let otel = if otlp_configured() {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => {
                let mut resource = opentelemetry_sdk::Resource::builder();
                if std::env::var("OTEL_SERVICE_NAME").is_err() {
                    resource = resource.with_service_name(service.to_owned());
                }
                let p = SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource.build())
                    .build();
                let tracer = p.tracer("chimera");
                provider = Some(p);
                Some(tracing_opentelemetry::layer().with_tracer(tracer))
            }
            Err(e) => {
                eprintln!("{service}: OTLP trace export is off: {e}");
                None
            }
        }
    } else {
        None
    };
    // Logs follow RUST_LOG; the exporter takes only our own spans (library
    // internals such as h2 or hyper would make every trace huge), at info.
    use tracing_subscriber::Layer;
    let otel = otel.map(|l| {
        l.with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target().starts_with("chimera") && *m.level() <= tracing::Level::INFO
        }))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init();
    Guard(provider)
}

/// The W3C trace context of `span`, as `traceparent` (and `tracestate`).
pub fn inject(span: &tracing::Span) -> HashMap<String, String> {
    let cx = span.context();
    let mut map = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut map);
    map
}

/// Makes `span` a child of the trace context in `map` (no-op when empty or invalid).
pub fn set_parent(span: &tracing::Span, map: &HashMap<String, String>) {
    if map.is_empty() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(map);
    let _ = span.set_parent(cx);
}

/// Puts the current span's trace context into gRPC request metadata.
pub fn inject_metadata(span: &tracing::Span, md: &mut tonic::metadata::MetadataMap) {
    for (k, v) in inject(span) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
            tonic::metadata::MetadataValue::try_from(v.as_str()),
        ) {
            md.insert(k, v);
        }
    }
}

/// The trace context a gRPC request carried in its metadata.
pub fn from_metadata(md: &tonic::metadata::MetadataMap) -> HashMap<String, String> {
    ["traceparent", "tracestate"]
        .iter()
        .filter_map(|k| {
            md.get(*k)
                .and_then(|v| v.to_str().ok())
                .map(|v| ((*k).to_owned(), v.to_owned()))
        })
        .collect()
}

/// Closes `tasks` and waits up to `grace` for them all to end; what is
/// still running then is logged (as `what`) and left. Returns whether all
/// ended in time.
pub async fn wait_for_tasks(
    tasks: &tokio_util::task::TaskTracker,
    grace: std::time::Duration,
    what: &str,
) -> bool {
    tasks.close();
    let done = tokio::time::timeout(grace, tasks.wait()).await.is_ok();
    if !done {
        tracing::warn!(
            left = tasks.len(),
            grace_s = grace.as_secs(),
            "{what} still running after the grace period; leaving them"
        );
    }
    done
}

/// First Ctrl-C / SIGTERM cancels the token (graceful); a second exits at once.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        for n in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if n == 0 {
                tracing::info!("shutting down (signal again to force)");
                t.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_round_trips_through_a_map() {
        let map = HashMap::from([(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        )]);
        let cx = TraceContextPropagator::new().extract(&map);
        let mut out = HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut out);
        assert_eq!(out["traceparent"], map["traceparent"]);
    }
}
