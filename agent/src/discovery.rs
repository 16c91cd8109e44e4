//! Device discovery and the environment fingerprint.
//!
//! The host CPU is always a device. NVIDIA GPUs are found through NVML
//! (`nvml-wrapper` loads `libnvidia-ml.so.1` at run time); when the library is
//! absent the machine simply has no GPUs, which is not an error. A GPU is only
//! offered for trials when this agent was built with the `cuda` feature.

use crate::workloads;
use chimera_domain::device::{cpu_class, gpu_class};
use chimera_domain::results::Fingerprint;
use chimera_proto::v1 as proto;
use std::collections::BTreeMap;
use tracing::{debug, info};

/// What the host's CPU is.
#[derive(Clone, Debug)]
pub struct CpuInfo {
    pub vendor: String,
    pub model: String,
    pub logical_cores: u32,
    pub memory_bytes: u64,
}

fn cpuinfo_field(text: &str, field: &str) -> Option<String> {
    text.lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == field))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Reads the CPU model, core count and memory from `/proc`.
pub fn cpu_info() -> CpuInfo {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: u64 = cpuinfo_field(&meminfo, "MemTotal")
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    CpuInfo {
        vendor: cpuinfo_field(&text, "vendor_id").unwrap_or_else(|| "unknown".into()),
        model: cpuinfo_field(&text, "model name")
            .or_else(|| cpuinfo_field(&text, "Model"))
            .unwrap_or_else(|| format!("unknown {} cpu", std::env::consts::ARCH)),
        logical_cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_bytes: memory_kib * 1024,
    }
}

/// Every device of this machine.
pub fn discover() -> Vec<proto::Device> {
    let cpu = cpu_info();
    let mut devices = vec![proto::Device {
        id: "cpu".into(),
        kind: "cpu".into(),
        vendor: cpu.vendor.clone(),
        model: cpu.model.clone(),
        memory_bytes: cpu.memory_bytes,
        cores: cpu.logical_cores,
        compute_capability: String::new(),
        driver_version: String::new(),
        device_class: cpu_class(&cpu.model, cpu.logical_cores),
        capabilities: workloads::capabilities("cpu"),
    }];
    devices.extend(nvidia_gpus());
    devices
}

fn nvidia_gpus() -> Vec<proto::Device> {
    let nvml = match nvml_wrapper::Nvml::init() {
        Ok(n) => n,
        Err(e) => {
            debug!(error = %e, "NVML not available: no NVIDIA GPUs");
            return vec![];
        }
    };
    let driver = nvml.sys_driver_version().unwrap_or_default();
    let count = nvml.device_count().unwrap_or(0);
    let mut out = Vec::new();
    for i in 0..count {
        let Ok(dev) = nvml.device_by_index(i) else {
            continue;
        };
        let model = dev.name().unwrap_or_else(|_| "NVIDIA GPU".into());
        let memory = dev.memory_info().map(|m| m.total).unwrap_or(0);
        let cc = dev
            .cuda_compute_capability()
            .map(|c| format!("{}.{}", c.major, c.minor))
            .unwrap_or_default();
        let id = format!("gpu:{i}");
        info!(device = %id, %model, "found GPU");
        out.push(proto::Device {
            capabilities: workloads::capabilities(&id),
            id,
            kind: "gpu".into(),
            vendor: "NVIDIA".into(),
            device_class: gpu_class(&model, memory),
            model,
            memory_bytes: memory,
            cores: dev.num_cores().unwrap_or(0),
            compute_capability: cc,
            driver_version: driver.clone(),
        });
    }
    out
}

/// The environment a result was measured in.
pub fn fingerprint(threads: u32) -> Fingerprint {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let mut extra = BTreeMap::new();
    if let Some(g) = read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") {
        extra.insert("cpu_governor".to_owned(), g);
    }
    extra.insert("features".to_owned(), crate::features().join(","));
    Fingerprint {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        agent_git_sha: env!("CHIMERA_GIT_SHA").into(),
        candle_version: env!("CHIMERA_CANDLE_VERSION").into(),
        rustc_version: env!("CHIMERA_RUSTC_VERSION").into(),
        cpu_model: cpu_info().model,
        threads,
        os: format!(
            "{} {} {}",
            std::env::consts::OS,
            read("/proc/sys/kernel/osrelease").unwrap_or_default(),
            std::env::consts::ARCH
        ),
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_always_a_device() {
        let devices = discover();
        let cpu = devices.iter().find(|d| d.id == "cpu").unwrap();
        assert_eq!(cpu.kind, "cpu");
        assert!(cpu.cores >= 1);
        assert!(cpu.device_class.starts_with("cpu: "));
        assert!(cpu.capabilities.contains(&"kernel/qmatmul".to_owned()));
    }

    #[test]
    fn fingerprint_names_the_build() {
        let f = fingerprint(2);
        assert_eq!(f.threads, 2);
        assert!(!f.candle_version.is_empty() && f.candle_version != "unknown");
        assert!(f.rustc_version.starts_with("rustc"));
        assert!(f.os.starts_with(std::env::consts::OS));
    }
}
