//! Workloads compiled into the agent. An agent never runs a command it is sent:
//! a trial names a workload from this module and its parameters.
//!
//! Architecture invariant: candle is used only under `agent::workloads`.

pub mod kernel;

use crate::harness::Settings;
use chimera_domain::catalog::KernelOp;
use chimera_domain::params::Params;
use chimera_domain::spec::KernelTrial;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

/// What a finished workload reports.
pub struct Output {
    pub metrics: BTreeMap<String, f64>,
    /// Threads it ran with.
    pub threads: u32,
}

/// The ops this build can run on a device (`kernel/matmul`, ...).
pub fn capabilities(device_id: &str) -> Vec<String> {
    if kernel::device_supported(device_id) {
        KernelOp::ALL.iter().map(|op| op.capability()).collect()
    } else {
        vec![]
    }
}

/// Runs one trial on the calling thread (never on the async runtime).
pub fn run(
    workload: &str,
    params: &Params,
    device_id: &str,
    settings: &Settings,
    cancel: &AtomicBool,
) -> Result<Output, String> {
    match workload {
        "kernel" => {
            let trial = KernelTrial::from_params(params)?;
            kernel::run(&trial, device_id, settings, cancel)
        }
        other => Err(format!("workload `{other}` is not built into this agent")),
    }
}
