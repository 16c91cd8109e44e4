//! One dedicated OS thread per device runs that device's trials, one at a time,
//! never on the async runtime. Outcomes go back to the agent loop over a channel.

use crate::harness::Settings;
use crate::models::{self, ModelDirs};
use crate::telemetry::DeviceTelemetry;
use crate::{discovery, workloads};
use chimera_domain::params::Params;
use chimera_domain::results::TrialOutput;
use chimera_domain::telemetry::{self, Phase, Sample};
use chimera_proto::v1 as proto;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// A trial to run.
pub struct Job {
    pub trial: proto::TrialRef,
    pub device_id: String,
    pub workload: String,
    pub params: Params,
    pub settings: Settings,
    pub cancel: Arc<AtomicBool>,
    /// What the trial consumes from an earlier trial (an eval reference).
    pub input: Vec<u8>,
    /// W3C trace context of the controller's assignment span.
    pub trace: std::collections::HashMap<String, String>,
    pub model_dirs: Arc<ModelDirs>,
    pub engines: Arc<workloads::serve::Engines>,
}

/// How a trial ended.
pub enum Outcome {
    Finished {
        trial: proto::TrialRef,
        /// Checked ([`TrialOutput::check`]): the controller accepts it.
        output: Box<TrialOutput>,
    },
    Failed {
        trial: proto::TrialRef,
        reason: String,
    },
}

impl Outcome {
    /// The trial attempt it reports.
    pub fn trial(&self) -> &proto::TrialRef {
        match self {
            Outcome::Finished { trial, .. } | Outcome::Failed { trial, .. } => trial,
        }
    }
}

/// A device's worker thread; jobs queue in its channel and run one at a time.
pub struct Worker {
    jobs: std::sync::mpsc::Sender<Job>,
    thread: std::thread::JoinHandle<()>,
}

impl Worker {
    /// Starts the thread for `device_id`; outcomes go to `done`. With
    /// `telemetry`, each trial's phases are marked on it and its summary is
    /// added to the trial's metrics.
    pub fn spawn(
        device_id: &str,
        done: mpsc::Sender<Outcome>,
        telemetry: Option<Arc<DeviceTelemetry>>,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(format!("chimera-{device_id}"))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let outcome = run_job(job, telemetry.as_ref());
                    if done.blocking_send(outcome).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Worker { jobs, thread })
    }

    /// Closes the queue and returns the thread to join: it ends after the
    /// jobs already queued (whose cancel flags the caller has set), or at
    /// once when no one takes outcomes any more.
    pub fn stop(self) -> std::thread::JoinHandle<()> {
        drop(self.jobs);
        self.thread
    }

    /// Hands a job to the thread.
    pub fn start(&self, job: Job) -> Result<(), String> {
        self.jobs
            .send(job)
            .map_err(|_| "the device's worker thread has stopped".to_owned())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How long before a trial the device's idle power is taken from.
const IDLE_WINDOW_MS: i64 = 2_000;

fn run_job(mut job: Job, telemetry: Option<&Arc<DeviceTelemetry>>) -> Outcome {
    let start = Instant::now();
    let start_ms = now_ms();
    let span = tracing::info_span!("chimera.agent.trial", sweep = %job.trial.sweep_id, trial = %job.trial.trial_id, attempt = job.trial.attempt, device = %job.device_id, workload = %job.workload);
    chimera_observe::set_parent(&span, &job.trace);
    let _enter = span.enter();
    job.settings.phases = crate::harness::PhaseMarker::traced(span.clone());
    let label = format!(
        "{}/{}/{}",
        job.trial.sweep_id, job.trial.trial_id, job.trial.attempt
    );
    if let Some(t) = telemetry {
        // Set-up (loading, quantizing) counts as warm-up; the harness marks the rest.
        t.mark(Phase::Warmup, Some(&label));
        job.settings.phases = job.settings.phases.clone().with_telemetry(t.clone());
    }
    // A panic inside candle must fail the trial, not kill the agent.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ctx = workloads::Context {
            device_id: &job.device_id,
            settings: &job.settings,
            cancel: &job.cancel,
            model_dirs: &job.model_dirs,
            input: &job.input,
            engines: &job.engines,
        };
        workloads::run(&job.workload, &job.params, &ctx)
    }))
    .unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "unknown panic".into());
        Err(format!("workload panicked: {msg}"))
    });
    let summary = telemetry.map(|t| {
        t.mark(Phase::Cooldown, Some(&label));
        let samples = t.since(start_ms - IDLE_WINDOW_MS);
        t.mark(Phase::Idle, None);
        samples
    });
    job.input = Vec::new();
    match result {
        Ok(mut out) => {
            if let (Some(samples), Some(t)) = (summary, telemetry) {
                add_telemetry(&mut out, &samples, t, start_ms, &label);
            }
            tracing::info!(
                wall_ms = start.elapsed().as_millis() as u64,
                "trial finished"
            );
            let mut fingerprint = discovery::fingerprint_on(&job.device_id, out.threads);
            // An engine a `serve` trial started is part of the environment.
            if let Some(v) = out
                .detail
                .as_ref()
                .and_then(|d| d.get("engine_version"))
                .and_then(|v| v.as_str())
            {
                fingerprint
                    .extra
                    .insert("engine_version".to_owned(), v.to_owned());
            }
            let output = TrialOutput {
                metrics: out.metrics,
                fingerprint,
                wall_ms: start.elapsed().as_secs_f64() * 1e3,
                detail: out.detail,
                artifact: out.artifact,
            };
            // A result the controller would refuse (a NaN metric) is this
            // trial's failure, named, rather than a message refused for ever.
            match output.check() {
                Ok(()) => Outcome::Finished {
                    trial: job.trial,
                    output: Box::new(output),
                },
                Err(reason) => {
                    tracing::warn!(
                        sweep = %job.trial.sweep_id,
                        trial = %job.trial.trial_id,
                        attempt = job.trial.attempt,
                        %reason,
                        "trial produced a result the controller would refuse"
                    );
                    Outcome::Failed {
                        trial: job.trial,
                        reason: format!("the trial's result is not valid: {reason}"),
                    }
                }
            }
        }
        Err(error) => {
            // The whole error stays here, in this agent's log; the reason that
            // goes to the controller, where any operator reads it, has no
            // absolute path (see `models::redact`).
            tracing::warn!(
                sweep = %job.trial.sweep_id,
                trial = %job.trial.trial_id,
                attempt = job.trial.attempt,
                error = %error,
                "trial failed"
            );
            Outcome::Failed {
                reason: models::public_reason(&error, &job.model_dirs),
                trial: job.trial,
            }
        }
    }
}

/// Adds the telemetry summary of the trial's measured window to its output.
fn add_telemetry(
    out: &mut workloads::Output,
    samples: &[Sample],
    t: &DeviceTelemetry,
    start_ms: i64,
    label: &str,
) {
    let idle: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t_ms < start_ms && s.phase == Phase::Idle && s.trial.is_none())
        .collect();
    let measure: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.phase == Phase::Measure && s.trial.as_deref() == Some(label))
        .collect();
    let summary = telemetry::summarize(
        &measure,
        &idle,
        &t.counters(),
        out.measure_s.unwrap_or(0.0),
        out.work,
    );
    for (k, v) in summary.metrics {
        out.metrics.entry(k).or_insert(v);
    }
    let info = serde_json::json!({
        "device": t.device_id,
        "interval_ms": t.interval.as_millis() as u64,
        "energy_source": summary.energy_source,
        "throttle_reasons": summary.throttle_reasons,
        "window": "the harness's measure phase",
    });
    match out.detail.as_mut().and_then(|d| d.as_object_mut()) {
        Some(d) => {
            d.insert("telemetry".to_owned(), info);
        }
        None => out.detail = Some(serde_json::json!({ "telemetry": info })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicBool;

    struct Fixed(f64);
    impl crate::telemetry::Sensors for Fixed {
        fn read(&mut self) -> (BTreeMap<String, f64>, Vec<String>) {
            ([("cpu_util_pct".to_owned(), self.0)].into(), vec![])
        }
    }

    /// Log lines, captured.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(b);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_trial_reports_no_absolute_path_and_logs_the_whole_error() {
        let root = tempfile::tempdir().expect("tempdir");
        let models_dir = root.path().join("models");
        std::fs::create_dir(&models_dir).expect("mkdir");
        std::fs::write(root.path().join("secret.gguf"), b"outside").expect("write");
        std::os::unix::fs::symlink(
            root.path().join("secret.gguf"),
            models_dir.join("link.gguf"),
        )
        .expect("symlink");
        let real = root.path().canonicalize().expect("canonical");
        let real = real.to_string_lossy();
        let run = |model: &str| {
            let params: Params = [(
                "model".to_owned(),
                chimera_domain::params::ParamValue::Text(model.to_owned()),
            )]
            .into();
            let job = Job {
                trial: proto::TrialRef {
                    sweep_id: "S1".into(),
                    trial_id: "t00001".into(),
                    attempt: 2,
                },
                device_id: "cpu".into(),
                workload: "generate".into(),
                params,
                settings: Settings::default(),
                cancel: Arc::new(AtomicBool::new(false)),
                input: vec![],
                trace: Default::default(),
                model_dirs: Arc::new(
                    ModelDirs::new(std::slice::from_ref(&models_dir)).expect("dirs"),
                ),
                engines: Default::default(),
            };
            let log = Captured::default();
            let writer = log.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            let outcome = tracing::subscriber::with_default(subscriber, || run_job(job, None));
            let Outcome::Failed { reason, .. } = outcome else {
                panic!("the trial should fail");
            };
            let log = String::from_utf8(log.0.lock().expect("log").clone()).expect("utf-8");
            (reason, log)
        };

        // A symlink out of the model directory: refused, target not shown.
        let (reason, log) = run("link.gguf");
        assert!(
            reason.contains("`link.gguf`") && reason.contains("refused"),
            "{reason}"
        );
        assert!(
            !reason.contains(&*real) && !reason.contains("`/"),
            "{reason}"
        );
        // The agent's log has all of it, with the trial's ids as fields.
        let line = log
            .lines()
            .find(|l| l.contains("trial failed"))
            .expect("a warning");
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains(&*real), "{line}");
        for field in ["sweep=S1", "trial=t00001", "attempt=2"] {
            assert!(line.contains(field), "{field} in {line}");
        }

        // A file inside that is not GGUF: named relative to the directory.
        std::fs::write(models_dir.join("notes.gguf"), b"hunter2 and more").expect("write");
        let (reason, log) = run("notes.gguf");
        assert!(
            reason.starts_with("model file `notes.gguf`: not a GGUF file"),
            "{reason}"
        );
        assert!(
            !reason.contains(&*real) && !reason.contains("hunter2"),
            "{reason}"
        );
        assert!(log.contains(&*real), "{log}");
    }

    #[test]
    fn the_summary_covers_only_this_trials_measure_phase() {
        let stop = Arc::new(AtomicBool::new(false));
        let t = crate::telemetry::spawn(
            "cpu",
            Box::new(Fixed(10.0)),
            std::time::Duration::from_millis(10),
            None,
            stop.clone(),
        )
        .unwrap();
        let start = now_ms();
        let pause = || std::thread::sleep(std::time::Duration::from_millis(60));
        t.mark(Phase::Warmup, Some("s/t/1"));
        pause();
        t.mark(Phase::Measure, Some("s/t/1"));
        pause();
        t.mark(Phase::Measure, Some("s/other/1"));
        pause();
        t.mark(Phase::Cooldown, Some("s/t/1"));
        pause();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let samples = t.since(start - IDLE_WINDOW_MS);
        let measured = samples
            .iter()
            .filter(|s| s.phase == Phase::Measure && s.trial.as_deref() == Some("s/t/1"))
            .count();
        assert!(measured >= 3, "{samples:?}");
        let mut out = workloads::Output {
            metrics: BTreeMap::new(),
            threads: 1,
            detail: None,
            artifact: vec![],
            measure_s: Some(0.06),
            work: Some((6.0, "joules_per_op")),
        };
        add_telemetry(&mut out, &samples, &t, start, "s/t/1");
        assert_eq!(out.metrics["telemetry_samples"], measured as f64);
        assert_eq!(out.metrics["cpu_util_pct_mean"], 10.0);
        assert!(
            !out.metrics.contains_key("joules_per_op"),
            "no energy sensor"
        );
        let detail = out.detail.unwrap();
        assert_eq!(detail["telemetry"]["energy_source"], "none");
    }
}
