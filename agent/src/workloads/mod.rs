//! Workloads compiled into the agent. An agent never runs a command it is sent:
//! a trial names a workload from this module and its parameters.
//!
//! Architecture invariant: candle is used only under `agent::workloads` and
//! `agent::models`.

pub mod batcher;
pub mod eval;
pub mod kernel;
pub mod kl;
pub mod model;
pub mod serve;

use crate::harness::Settings;
use crate::models::ModelDirs;
use chimera_domain::catalog::{KernelOp, Workload};
use chimera_domain::models::{EvalTrial, GenerateTrial, QuantizeTrial};
use chimera_domain::params::Params;
use chimera_domain::serve::{Engine, ServeTrial};
use chimera_domain::spec::KernelTrial;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

/// What a finished workload reports.
pub struct Output {
    pub metrics: BTreeMap<String, f64>,
    /// Threads it ran with.
    pub threads: u32,
    /// Structured detail kept with the result (a per-tensor table, ...).
    pub detail: Option<serde_json::Value>,
    /// Bytes other trials of the sweep consume (an eval reference distribution).
    pub artifact: Vec<u8>,
    /// Length of the measured window, seconds (what energy is reported over).
    pub measure_s: Option<f64>,
    /// Units of work done in the measured window, with the per-unit energy
    /// metric's name (`joules_per_token`, `joules_per_op`).
    pub work: Option<(f64, &'static str)>,
}

impl Output {
    /// Every metric name the run emits: its metrics and, when it did
    /// countable work, the energy-per-unit metric the telemetry adds.
    pub fn metric_names(&self) -> impl Iterator<Item = &str> {
        self.metrics
            .keys()
            .map(String::as_str)
            .chain(self.work.map(|w| w.1))
    }
}

/// Everything a trial runs with besides its parameters.
pub struct Context<'a> {
    pub device_id: &'a str,
    pub settings: &'a Settings,
    pub cancel: &'a AtomicBool,
    pub model_dirs: &'a ModelDirs,
    /// What the controller sent along (an eval trial's reference distribution).
    pub input: &'a [u8],
    /// Engine binaries the agent may start (`serve`).
    pub engines: &'a serve::Engines,
}

/// What this build can run on a device (`kernel/matmul`, `generate`, ...).
pub fn capabilities(device_id: &str) -> Vec<String> {
    if !kernel::device_supported(device_id) {
        return vec![];
    }
    let mut caps: Vec<String> = Vec::new();
    for op in KernelOp::ALL {
        caps.push(op.capability());
        if op.has_variants() {
            caps.push(format!("{}/naive", op.capability()));
            // candle 0.11 has fused softmax, rmsnorm and rope kernels on every
            // device; its fused attention (SDPA) only on Metal, not built here.
            if op != KernelOp::Attention {
                caps.push(format!("{}/fused", op.capability()));
            }
        }
    }
    caps.extend(
        [Workload::Quantize, Workload::Generate, Workload::Eval]
            .iter()
            .map(|w| w.name().to_owned()),
    );
    // `serve`: the built-in engine, and driving a server given by endpoint;
    // engines the agent starts are added where it was given them.
    caps.extend([Engine::Candle, Engine::Openai].map(Engine::capability));
    caps
}

/// Runs one trial on the calling thread (never on the async runtime).
pub fn run(workload: &str, params: &Params, ctx: &Context) -> Result<Output, String> {
    match workload.parse::<Workload>() {
        Ok(Workload::Kernel) => {
            let trial = KernelTrial::from_params(params)?;
            kernel::run(&trial, ctx.device_id, ctx.settings, ctx.cancel)
        }
        Ok(Workload::Quantize) => model::quantize(&QuantizeTrial::from_params(params)?, ctx),
        Ok(Workload::Generate) => model::generate(&GenerateTrial::from_params(params)?, ctx),
        Ok(Workload::Eval) => eval::eval(&EvalTrial::from_params(params)?, ctx),
        Ok(Workload::Serve) => serve::serve(&ServeTrial::from_params(params)?, ctx),
        Err(_) => Err(format!(
            "workload `{workload}` is not built into this agent"
        )),
    }
}
