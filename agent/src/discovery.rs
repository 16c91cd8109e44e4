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
use tracing::{debug, info, warn};

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
        unusable_reason: String::new(),
    }];
    devices.extend(nvidia_gpus());
    devices
}

/// A GPU as NVML describes it: what [`gpu_device`] needs, so discovery can
/// be tested without one.
#[derive(Clone, Debug, PartialEq)]
pub struct NvmlGpu {
    pub index: u32,
    pub model: String,
    pub memory_bytes: u64,
    /// Streaming multiprocessors (0 when NVML does not say).
    pub cores: u32,
    /// `major.minor`, empty when NVML does not say.
    pub compute_capability: String,
    pub driver_version: String,
}

/// Why a GPU cannot run trials in a build without the `cuda` feature.
pub const NO_CUDA_REASON: &str = "this agent was built without CUDA: build it with \
     deploy/build-cuda-agent.sh (cargo feature `cuda`) for this GPU's compute capability";

/// The device an NVML GPU is for this agent: usable for trials only when
/// the build has CUDA (`cuda_built`); otherwise present, with no
/// capabilities and [`NO_CUDA_REASON`].
pub fn gpu_device(gpu: &NvmlGpu, cuda_built: bool) -> proto::Device {
    let id = format!("gpu:{}", gpu.index);
    let (capabilities, unusable_reason) = if cuda_built {
        (workloads::capabilities(&id), String::new())
    } else {
        (Vec::new(), NO_CUDA_REASON.to_owned())
    };
    proto::Device {
        id,
        kind: "gpu".into(),
        vendor: "NVIDIA".into(),
        device_class: gpu_class(&gpu.model, gpu.memory_bytes),
        model: gpu.model.clone(),
        memory_bytes: gpu.memory_bytes,
        cores: gpu.cores,
        compute_capability: gpu.compute_capability.clone(),
        driver_version: gpu.driver_version.clone(),
        capabilities,
        unusable_reason,
    }
}

/// GPU `index` as NVML describes it.
fn nvml_gpu(nvml: &nvml_wrapper::Nvml, index: u32, driver: &str) -> Option<NvmlGpu> {
    let dev = nvml.device_by_index(index).ok()?;
    Some(NvmlGpu {
        index,
        model: dev.name().unwrap_or_else(|_| "NVIDIA GPU".into()),
        memory_bytes: dev.memory_info().map(|m| m.total).unwrap_or(0),
        cores: dev.num_cores().unwrap_or(0),
        compute_capability: dev
            .cuda_compute_capability()
            .map(|c| format!("{}.{}", c.major, c.minor))
            .unwrap_or_default(),
        driver_version: driver.to_owned(),
    })
}

/// The GPUs NVML sees (none when `libnvidia-ml.so.1` is absent).
fn nvml_gpus() -> Vec<NvmlGpu> {
    let nvml = match nvml_wrapper::Nvml::init() {
        Ok(n) => n,
        Err(e) => {
            debug!(error = %e, "NVML not available: no NVIDIA GPUs");
            return vec![];
        }
    };
    let driver = nvml.sys_driver_version().unwrap_or_default();
    let count = nvml.device_count().unwrap_or(0);
    (0..count)
        .filter_map(|i| nvml_gpu(&nvml, i, &driver))
        .collect()
}

/// What a GPU trial's fingerprint adds to `extra`: the GPU's model, compute
/// capability and driver version, and the CUDA version the driver supports
/// (`cuda_driver` as NVML encodes it: 13000 is 13.0).
pub fn gpu_fingerprint(gpu: &NvmlGpu, cuda_driver: Option<i32>) -> BTreeMap<String, String> {
    let mut extra = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        if !v.is_empty() {
            extra.insert(k.to_owned(), v);
        }
    };
    put("gpu_model", gpu.model.clone());
    put("gpu_compute_capability", gpu.compute_capability.clone());
    put("gpu_driver_version", gpu.driver_version.clone());
    if let Some(v) = cuda_driver.filter(|v| *v > 0) {
        put(
            "cuda_driver_version",
            format!("{}.{}", v / 1000, (v % 1000) / 10),
        );
    }
    put("cuda_build", env!("CHIMERA_CUDA_BUILD").to_owned());
    extra
}

/// The environment of a trial on `device_id`: [`fingerprint`], and on a
/// GPU what NVML says of it ([`gpu_fingerprint`]).
pub fn fingerprint_on(device_id: &str, threads: u32) -> Fingerprint {
    let mut f = fingerprint(threads);
    let Some(index) = device_id
        .strip_prefix("gpu:")
        .and_then(|i| i.parse::<u32>().ok())
    else {
        return f;
    };
    if let Ok(nvml) = nvml_wrapper::Nvml::init() {
        let driver = nvml.sys_driver_version().unwrap_or_default();
        if let Some(gpu) = nvml_gpu(&nvml, index, &driver) {
            f.extra
                .extend(gpu_fingerprint(&gpu, nvml.sys_cuda_driver_version().ok()));
        }
    }
    f
}

fn nvidia_gpus() -> Vec<proto::Device> {
    nvml_gpus()
        .iter()
        .map(|g| {
            let d = gpu_device(g, cfg!(feature = "cuda"));
            if d.unusable_reason.is_empty() {
                info!(device = %d.id, model = %d.model, "found GPU");
            } else {
                warn!(
                    device = %d.id,
                    model = %d.model,
                    compute_capability = %d.compute_capability,
                    reason = %d.unusable_reason,
                    "found a GPU that this agent cannot run trials on"
                );
            }
            d
        })
        .collect()
}

/// The instruction-set tier candle's quantized CPU kernels dispatch to at
/// run time, decided as candle 0.11 decides it (`quantized/repack_x86.rs`,
/// with its `MISTRALRS_FORCE_*` overrides). It changes results, not only
/// speed: with VNNI, q8_0's matmul runs a repacked kernel that quantizes
/// the activations per 256 values instead of per 32, so two hosts with one
/// CPU model name score q8_0 differently (docs/BENCHMARKS.md).
pub fn cpu_simd() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        let forced = |v: &str| std::env::var(v).as_deref() == Ok("1");
        let (avx2_only, vnni) = (
            forced("MISTRALRS_FORCE_AVX2"),
            forced("MISTRALRS_FORCE_AVXVNNI"),
        );
        if !avx2_only
            && !vnni
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vnni")
        {
            return "avx512vnni";
        }
        if !avx2_only
            && (vnni || std::is_x86_feature_detected!("avxvnni"))
            && std::is_x86_feature_detected!("avx2")
        {
            return "avxvnni";
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return "avx2";
        }
        "x86-64"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH
    }
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
    extra.insert("cpu_simd".to_owned(), cpu_simd().to_owned());
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

    fn h100() -> NvmlGpu {
        NvmlGpu {
            index: 0,
            model: "NVIDIA H100 80GB HBM3".into(),
            memory_bytes: 80 << 30,
            cores: 132,
            compute_capability: "9.0".into(),
            driver_version: "580.65.06".into(),
        }
    }

    #[test]
    fn an_nvml_gpu_without_cuda_is_present_but_unusable_with_the_reason() {
        let d = gpu_device(&h100(), false);
        assert_eq!((d.id.as_str(), d.kind.as_str()), ("gpu:0", "gpu"));
        assert_eq!(d.device_class, "NVIDIA H100 80GB HBM3 80GiB");
        assert_eq!(d.compute_capability, "9.0");
        assert!(d.capabilities.is_empty(), "{:?}", d.capabilities);
        assert_eq!(d.unusable_reason, NO_CUDA_REASON);
        assert!(d.unusable_reason.contains("deploy/build-cuda-agent.sh"));
        let domain = chimera_domain::device::Device::from(d);
        assert!(!domain.usable());
        assert_eq!(domain.why_unusable().as_deref(), Some(NO_CUDA_REASON));
    }

    #[test]
    fn an_nvml_gpu_with_cuda_runs_kernels_and_has_no_reason() {
        let d = gpu_device(&h100(), true);
        assert!(d.unusable_reason.is_empty());
        // What `cuda_built` offers is this build's capability list for a GPU.
        assert_eq!(d.capabilities, workloads::capabilities("gpu:0"));
    }

    #[test]
    fn a_gpu_trial_fingerprint_names_the_gpu_its_capability_and_versions() {
        let extra = gpu_fingerprint(&h100(), Some(13000));
        assert_eq!(extra["gpu_model"], "NVIDIA H100 80GB HBM3");
        assert_eq!(extra["gpu_compute_capability"], "9.0");
        assert_eq!(extra["gpu_driver_version"], "580.65.06");
        assert_eq!(extra["cuda_driver_version"], "13.0");
        assert_eq!(
            gpu_fingerprint(&h100(), Some(12040))["cuda_driver_version"],
            "12.4"
        );
        let unknown = NvmlGpu {
            compute_capability: String::new(),
            ..h100()
        };
        let extra = gpu_fingerprint(&unknown, None);
        assert!(!extra.contains_key("gpu_compute_capability"), "{extra:?}");
        assert!(!extra.contains_key("cuda_driver_version"), "{extra:?}");
        // A CPU trial's fingerprint names no GPU.
        assert!(!fingerprint_on("cpu", 1).extra.contains_key("gpu_model"));
    }

    /// The tier candle dispatches to, told from the kernel's own account of
    /// the CPU (`/proc/cpuinfo` flags) rather than from the same detection.
    #[test]
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn a_cpu_fingerprint_names_the_kernel_tier_of_its_cpu_flags() {
        let tier = fingerprint(1).extra["cpu_simd"].clone();
        if std::env::var_os("MISTRALRS_FORCE_AVX2").is_some()
            || std::env::var_os("MISTRALRS_FORCE_AVXVNNI").is_some()
        {
            return;
        }
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let flags = info
            .lines()
            .find(|l| l.starts_with("flags"))
            .unwrap_or_default();
        let has = |f: &str| flags.split_whitespace().any(|x| x == f);
        let expected = if has("avx512f") && has("avx512_vnni") {
            "avx512vnni"
        } else if has("avx_vnni") && has("avx2") {
            "avxvnni"
        } else if has("avx2") && has("fma") {
            "avx2"
        } else {
            "x86-64"
        };
        assert_eq!(tier, expected, "{flags}");
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
