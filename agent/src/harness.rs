//! The measurement harness every workload shares: warm-up, then measured
//! iterations until both a minimum count and a minimum time are reached (or a
//! maximum time runs out), then summary statistics.
//!
//! It measures real time on purpose (`std::time::Instant`), around a closure that
//! must leave the device idle when it returns (GPU work synchronised).

use chimera_domain::metrics;
use chimera_domain::telemetry::Phase;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Harness settings, as the sweep gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub warmup_iters: u32,
    pub min_iters: u32,
    pub min_time: Duration,
    pub max_time: Duration,
    /// Where the harness reports its phases (the device's telemetry).
    pub phases: PhaseMarker,
}

/// Reports the trial's phases: to the device's sampler, so telemetry can be
/// cut to the measured window, and as child spans of the trial's span, so a
/// trace shows warm-up and measurement. A no-op when neither is set.
#[derive(Clone, Default)]
pub struct PhaseMarker {
    telemetry: Option<std::sync::Arc<crate::telemetry::DeviceTelemetry>>,
    span: Option<tracing::Span>,
    current: std::sync::Arc<std::sync::Mutex<Option<tracing::Span>>>,
}

impl PhaseMarker {
    /// Marks phases on this device's telemetry.
    pub fn new(t: std::sync::Arc<crate::telemetry::DeviceTelemetry>) -> Self {
        PhaseMarker::default().with_telemetry(t)
    }

    /// Phases as child spans of `span`.
    pub fn traced(span: tracing::Span) -> Self {
        PhaseMarker {
            span: Some(span),
            ..Default::default()
        }
    }

    /// Also marks phases on this telemetry.
    pub fn with_telemetry(mut self, t: std::sync::Arc<crate::telemetry::DeviceTelemetry>) -> Self {
        self.telemetry = Some(t);
        self
    }

    /// Enters `phase` (ending the previous phase's span).
    pub fn mark(&self, phase: Phase) {
        if let Some(t) = &self.telemetry {
            t.phase(phase);
        }
        if let (Some(parent), Ok(mut cur)) = (&self.span, self.current.lock()) {
            // Dropping the previous span closes it.
            *cur = match phase {
                Phase::Warmup | Phase::Measure => Some(
                    tracing::info_span!(parent: parent, "chimera.agent.phase", phase = phase.name()),
                ),
                Phase::Idle | Phase::Cooldown => None,
            };
        }
    }
}

impl std::fmt::Debug for PhaseMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PhaseMarker(telemetry: {}, traced: {})",
            self.telemetry.is_some(),
            self.span.is_some()
        )
    }
}

impl PartialEq for PhaseMarker {
    fn eq(&self, _: &Self) -> bool {
        true // a marker is plumbing, not a setting
    }
}

impl Eq for PhaseMarker {}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            warmup_iters: 3,
            min_iters: 10,
            min_time: Duration::from_millis(300),
            max_time: Duration::from_secs(10),
            phases: PhaseMarker::default(),
        }
    }
}

/// Samples kept at most, to bound memory on very fast kernels.
pub const MAX_SAMPLES: usize = 1_000_000;

/// Why a measurement stopped without a result.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The trial was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The measured code failed.
    #[error("{0}")]
    Workload(String),
}

/// The measured iterations.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// Per-iteration latency, milliseconds, in run order.
    pub samples_ms: Vec<f64>,
    /// Warm-up iterations run.
    pub warmup: u32,
    /// Wall time of the measured window.
    pub window: Duration,
}

/// Runs `iteration` as `settings` say; `cancel` is checked between iterations.
pub fn measure<E: std::fmt::Display>(
    settings: &Settings,
    cancel: &AtomicBool,
    mut iteration: impl FnMut() -> Result<(), E>,
) -> Result<Measurement, HarnessError> {
    let run = |f: &mut dyn FnMut() -> Result<(), E>| {
        if cancel.load(Ordering::Relaxed) {
            return Err(HarnessError::Cancelled);
        }
        f().map_err(|e| HarnessError::Workload(e.to_string()))
    };
    settings.phases.mark(Phase::Warmup);
    for _ in 0..settings.warmup_iters {
        run(&mut iteration)?;
    }
    settings.phases.mark(Phase::Measure);
    let mut samples_ms = Vec::with_capacity(settings.min_iters as usize);
    let start = Instant::now();
    loop {
        let t = Instant::now();
        run(&mut iteration)?;
        samples_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let elapsed = start.elapsed();
        let enough =
            samples_ms.len() >= settings.min_iters as usize && elapsed >= settings.min_time;
        if enough || elapsed >= settings.max_time || samples_ms.len() >= MAX_SAMPLES {
            break;
        }
    }
    settings.phases.mark(Phase::Cooldown);
    Ok(Measurement {
        samples_ms,
        warmup: settings.warmup_iters,
        window: start.elapsed(),
    })
}

/// Summary statistics of a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
    /// Coefficient of variation: sample standard deviation / mean.
    pub cov: f64,
    pub n: usize,
}

/// Nearest-rank percentile of sorted data, `q` in 0..=1.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises a non-empty sample.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let mean = sorted.iter().sum::<f64>() / n as f64;
    let var = if n > 1 {
        sorted.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    Some(Summary {
        p50: percentile(&sorted, 0.5),
        p99: percentile(&sorted, 0.99),
        mean,
        cov: if mean > 0.0 { var.sqrt() / mean } else { 0.0 },
        n,
    })
}

impl Measurement {
    /// The harness's metrics (latency percentiles, cov, iterations, and
    /// `gflop_per_s` when the iteration's floating-point work is known).
    pub fn metrics(&self, flops_per_iter: Option<f64>) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        if let Some(s) = summarize(&self.samples_ms) {
            m.insert(metrics::LATENCY_MS_P50.into(), s.p50);
            m.insert(metrics::LATENCY_MS_P99.into(), s.p99);
            m.insert(metrics::LATENCY_MS_MEAN.into(), s.mean);
            m.insert(metrics::COV.into(), s.cov);
            m.insert(metrics::ITERATIONS.into(), s.n as f64);
            if let Some(f) = flops_per_iter.filter(|_| s.p50 > 0.0) {
                m.insert(metrics::GFLOP_PER_S.into(), f / (s.p50 * 1e-3) / 1e9);
            }
        }
        m.insert(metrics::WARMUP_ITERATIONS.into(), self.warmup as f64);
        m.insert(metrics::MEASURE_MS.into(), self.window.as_secs_f64() * 1e3);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_statistics() {
        let s = summarize(&[4.0, 1.0, 3.0, 2.0, 100.0]).unwrap();
        assert_eq!(s.p50, 3.0);
        assert_eq!(s.p99, 100.0);
        assert_eq!(s.mean, 22.0);
        assert_eq!(s.n, 5);
        assert!((s.cov - 1902.5f64.sqrt() / 22.0).abs() < 1e-9, "{}", s.cov);
        assert!(summarize(&[]).is_none());
        let one = summarize(&[5.0]).unwrap();
        assert_eq!((one.p50, one.p99, one.cov), (5.0, 5.0, 0.0));
    }

    #[test]
    fn runs_warmup_then_at_least_min_iters() {
        let mut calls = 0;
        let settings = Settings {
            warmup_iters: 2,
            min_iters: 5,
            min_time: Duration::ZERO,
            max_time: Duration::from_secs(60),
            phases: PhaseMarker::default(),
        };
        let m = measure(&settings, &AtomicBool::new(false), || {
            calls += 1;
            Ok::<(), String>(())
        })
        .unwrap();
        assert_eq!(calls, 7);
        assert_eq!(m.samples_ms.len(), 5);
        let metrics = m.metrics(Some(1e6));
        assert_eq!(metrics["iterations"], 5.0);
        assert!(metrics.contains_key("gflop_per_s") || metrics["latency_ms_p50"] == 0.0);
    }

    #[test]
    fn stops_on_cancel_and_on_error() {
        let cancel = AtomicBool::new(true);
        let r = measure(&Settings::default(), &cancel, || Ok::<(), String>(()));
        assert!(matches!(r, Err(HarnessError::Cancelled)));
        let r = measure(&Settings::default(), &AtomicBool::new(false), || {
            Err("boom")
        });
        assert!(matches!(r, Err(HarnessError::Workload(m)) if m == "boom"));
    }

    #[test]
    fn max_time_bounds_a_slow_measurement() {
        let settings = Settings {
            warmup_iters: 0,
            min_iters: 1_000_000,
            min_time: Duration::ZERO,
            max_time: Duration::from_millis(20),
            phases: PhaseMarker::default(),
        };
        let m = measure(&settings, &AtomicBool::new(false), || {
            std::thread::sleep(Duration::from_millis(2));
            Ok::<(), String>(())
        })
        .unwrap();
        assert!(m.samples_ms.len() < 1_000_000);
        assert!(m.window >= Duration::from_millis(20));
    }
}
