//! One dedicated OS thread per device runs that device's trials, one at a time,
//! never on the async runtime. Outcomes go back to the agent loop over a channel.

use crate::harness::Settings;
use crate::models::ModelDirs;
use crate::{discovery, workloads};
use chimera_domain::params::Params;
use chimera_domain::results::Fingerprint;
use chimera_proto::v1 as proto;
use std::collections::BTreeMap;
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
    pub model_dirs: Arc<ModelDirs>,
}

/// How a trial ended.
pub enum Outcome {
    Finished {
        trial: proto::TrialRef,
        metrics: BTreeMap<String, f64>,
        fingerprint: Box<Fingerprint>,
        wall_ms: f64,
        detail: Option<serde_json::Value>,
        artifact: Vec<u8>,
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
}

impl Worker {
    /// Starts the thread for `device_id`; outcomes go to `done`.
    pub fn spawn(device_id: &str, done: mpsc::Sender<Outcome>) -> std::io::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("chimera-{device_id}"))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let outcome = run_job(job);
                    if done.blocking_send(outcome).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Worker { jobs })
    }

    /// Hands a job to the thread.
    pub fn start(&self, job: Job) -> Result<(), String> {
        self.jobs
            .send(job)
            .map_err(|_| "the device's worker thread has stopped".to_owned())
    }
}

fn run_job(job: Job) -> Outcome {
    let start = Instant::now();
    let span = tracing::info_span!("trial", sweep = %job.trial.sweep_id, trial = %job.trial.trial_id, attempt = job.trial.attempt, device = %job.device_id);
    let _enter = span.enter();
    // A panic inside candle must fail the trial, not kill the agent.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ctx = workloads::Context {
            device_id: &job.device_id,
            settings: &job.settings,
            cancel: &job.cancel,
            model_dirs: &job.model_dirs,
            input: &job.input,
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
    match result {
        Ok(out) => {
            tracing::info!(
                wall_ms = start.elapsed().as_millis() as u64,
                "trial finished"
            );
            Outcome::Finished {
                trial: job.trial,
                metrics: out.metrics,
                fingerprint: Box::new(discovery::fingerprint(out.threads)),
                wall_ms: start.elapsed().as_secs_f64() * 1e3,
                detail: out.detail,
                artifact: out.artifact,
            }
        }
        Err(reason) => {
            tracing::warn!(%reason, "trial failed");
            Outcome::Failed {
                trial: job.trial,
                reason,
            }
        }
    }
}
