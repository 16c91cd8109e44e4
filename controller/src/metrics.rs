//! Prometheus metrics (`--metrics-listen ADDR`, `GET /metrics`, text format):
//! agents connected, trials by state, assignment latency, telemetry samples
//! received and dropped, and the latest telemetry of every device as gauges
//! (`chimera_device_*{agent,device}`), so a dashboard shows the fleet live
//! (`deploy/grafana/chimera.json`).
//!
//! Gauges that mirror state are set at scrape time from the scheduler (asked
//! over its command channel, like any API call) and the telemetry store;
//! the latency histogram is observed by the scheduler as it assigns.

use crate::scheduler::Command;
use crate::telemetry::TelemetryStore;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// Why a trial result from an agent was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The trial is at a newer attempt (or on another agent): the result is
    /// from a superseded attempt.
    StaleAttempt,
    /// The trial is not running any more (finished, cancelled) or unknown.
    NotRunning,
    /// The trial is assigned to another agent: this one has no say on it
    /// (a forged or misdirected report).
    OtherAgent,
    /// The message was malformed or over a limit (refused at the wire).
    Invalid,
    /// The result would make a record over the store's size limit.
    TooLarge,
}

impl Refusal {
    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::StaleAttempt => "stale_attempt",
            Refusal::NotRunning => "not_running",
            Refusal::OtherAgent => "other_agent",
            Refusal::Invalid => "invalid",
            Refusal::TooLarge => "too_large",
        }
    }
}

/// A label value written escaped as the text format requires (`\\`, `\"`,
/// `\n`), so a value can never end its label or its line. (Agent names and
/// device ids are checked at the wire too; this is the second line.)
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Escaped(String);

impl prometheus_client::encoding::EncodeLabelValue for Escaped {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabel {
    agent: Escaped,
    device: Escaped,
}

type FGauge = Gauge<f64, AtomicU64>;

/// Every metric the controller exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    agents_connected: Gauge,
    trials: Family<StateLabel, Gauge>,
    /// Pending → assigned, seconds (observed by the scheduler).
    pub assignment_latency: Histogram,
    samples_received: Counter,
    samples_dropped: Counter,
    samples_rejected: Counter,
    results_refused: Family<ReasonLabel, Counter>,
    leader: Gauge,
    leading: std::sync::atomic::AtomicBool,
    device: Vec<(&'static str, Family<DeviceLabel, FGauge>)>,
    last_counts: Mutex<crate::telemetry::Counts>,
}

/// Device telemetry fields exported as gauges: (sample field, metric name, help).
const DEVICE_GAUGES: &[(&str, &str, &str)] = &[
    ("power_w", "chimera_device_power_watts", "Latest power draw"),
    (
        "temp_c",
        "chimera_device_temperature_celsius",
        "Latest temperature",
    ),
    (
        "sm_clock_mhz",
        "chimera_device_sm_clock_mhz",
        "Latest SM clock",
    ),
    (
        "mem_clock_mhz",
        "chimera_device_mem_clock_mhz",
        "Latest memory clock",
    ),
    (
        "gpu_util_pct",
        "chimera_device_gpu_utilization_percent",
        "Latest GPU utilisation",
    ),
    (
        "mem_used_bytes",
        "chimera_device_memory_used_bytes",
        "Latest device memory used",
    ),
    (
        "cpu_util_pct",
        "chimera_device_cpu_utilization_percent",
        "Latest host CPU utilisation",
    ),
    (
        "cpu_mhz_mean",
        "chimera_device_cpu_mhz",
        "Latest mean CPU frequency",
    ),
    (
        "rss_bytes",
        "chimera_agent_rss_bytes",
        "Latest agent resident set size",
    ),
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let agents_connected = Gauge::default();
        r.register(
            "chimera_agents_connected",
            "Agents with an open stream",
            agents_connected.clone(),
        );
        let trials = Family::<StateLabel, Gauge>::default();
        r.register("chimera_trials", "Trials by state", trials.clone());
        let assignment_latency = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        r.register(
            "chimera_assignment_latency_seconds",
            "Time a trial waited from pending to assigned",
            assignment_latency.clone(),
        );
        let samples_received = Counter::default();
        r.register(
            "chimera_telemetry_samples_received",
            "Telemetry samples received from agents",
            samples_received.clone(),
        );
        let samples_dropped = Counter::default();
        r.register(
            "chimera_telemetry_samples_dropped",
            "Telemetry samples agents dropped (their queue was full)",
            samples_dropped.clone(),
        );
        let samples_rejected = Counter::default();
        r.register(
            "chimera_telemetry_samples_rejected",
            "Telemetry samples refused (malformed trial label)",
            samples_rejected.clone(),
        );
        let results_refused = Family::<ReasonLabel, Counter>::default();
        r.register(
            "chimera_results_refused",
            "Trial results from agents that were refused: from a superseded attempt, or for a trial no longer running",
            results_refused.clone(),
        );
        for why in [Refusal::StaleAttempt, Refusal::NotRunning] {
            // Present at 0 from the start, so a rate() sees the first refusal.
            let _ = results_refused.get_or_create(&ReasonLabel {
                reason: why.label().to_owned(),
            });
        }
        let leader = Gauge::default();
        r.register(
            "chimera_controller_leader",
            "1 while this controller leads (schedules); 0 while it stands by",
            leader.clone(),
        );
        let device = DEVICE_GAUGES
            .iter()
            .map(|(field, name, help)| {
                let f = Family::<DeviceLabel, FGauge>::default();
                r.register(*name, *help, f.clone());
                (*field, f)
            })
            .collect();
        Metrics {
            registry: Mutex::new(r),
            agents_connected,
            trials,
            assignment_latency,
            samples_received,
            samples_dropped,
            samples_rejected,
            results_refused,
            leader,
            leading: std::sync::atomic::AtomicBool::new(false),
            device,
            last_counts: Mutex::new(Default::default()),
        }
    }

    /// Marks this controller as the leader (its scheduler runs and answers
    /// the scrape) or a standby (the scheduler gauges are left out).
    pub fn set_leading(&self, leading: bool) {
        self.leading
            .store(leading, std::sync::atomic::Ordering::SeqCst);
        self.leader.set(i64::from(leading));
    }

    /// Counts a refused trial result.
    pub fn result_refused(&self, why: Refusal) {
        self.results_refused
            .get_or_create(&ReasonLabel {
                reason: why.label().to_owned(),
            })
            .inc();
    }

    /// Brings the gauges up to date and renders the text format.
    pub async fn render(
        &self,
        commands: &mpsc::Sender<Command>,
        telemetry: &TelemetryStore,
    ) -> Result<String, String> {
        // A standby's scheduler does not run yet: nothing would answer.
        if self.leading.load(std::sync::atomic::Ordering::SeqCst) {
            self.scheduler_gauges(commands).await?;
        }
        self.telemetry_gauges(telemetry);
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .map_err(|_| "metrics registry poisoned")?;
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .map_err(|e| format!("encode metrics: {e}"))?;
        Ok(out)
    }

    /// Agents connected and trials by state, asked of the scheduler.
    async fn scheduler_gauges(&self, commands: &mpsc::Sender<Command>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        commands
            .send(Command::Gauges { reply: tx })
            .await
            .map_err(|_| "controller is shutting down")?;
        let g = rx.await.map_err(|_| "controller is shutting down")?;
        self.agents_connected
            .set(i64::try_from(g.agents_connected).unwrap_or(i64::MAX));
        let by_state = g.trials.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        for (state, n) in ["pending", "running", "succeeded", "failed", "cancelled"]
            .iter()
            .zip(by_state)
        {
            self.trials
                .get_or_create(&StateLabel {
                    state: (*state).to_owned(),
                })
                .set(n);
        }
        Ok(())
    }

    /// Telemetry counters and the newest sample of every device.
    fn telemetry_gauges(&self, telemetry: &TelemetryStore) {
        let c = telemetry.counts();
        if let Ok(mut last) = self.last_counts.lock() {
            self.samples_received
                .inc_by(c.received.saturating_sub(last.received));
            self.samples_dropped
                .inc_by(c.dropped_by_agents.saturating_sub(last.dropped_by_agents));
            self.samples_rejected
                .inc_by(c.rejected.saturating_sub(last.rejected));
            *last = c;
        }
        // Rebuilt each scrape: a device that left the live map leaves the gauges.
        for (_, family) in &self.device {
            family.clear();
        }
        for (agent, s) in telemetry.latest() {
            let label = DeviceLabel {
                agent: Escaped(agent),
                device: Escaped(s.device_id.clone()),
            };
            for (field, family) in &self.device {
                match s.fields.get(*field) {
                    Some(v) => {
                        family.get_or_create(&label).set(*v);
                    }
                    None => {
                        family.remove(&label);
                    }
                }
            }
        }
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    commands: mpsc::Sender<Command>,
    telemetry: Arc<TelemetryStore>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (metrics, commands, telemetry) =
                (metrics.clone(), commands.clone(), telemetry.clone());
            async move {
                match metrics.render(&commands, &telemetry).await {
                    Ok(body) => (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response(),
                    Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
                }
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
