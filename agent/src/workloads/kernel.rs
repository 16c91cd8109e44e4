//! The `kernel` workload: one candle op, timed by the shared harness.
//!
//! `matmul`: `x[m,k] @ w[n,k]^T` in f32, f16 or bf16.
//! `qmatmul`: f32 `x[m,k]` times a weight `w[n,k]` quantized to a GGML format
//! (candle's `QMatMul`, the path quantized LLM layers take).

use super::Output;
use crate::harness::{self, HarnessError, Settings};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType as CDType, Device, Module, Tensor};
use chimera_domain::catalog::{DType, KernelOp, QuantFormat};
use chimera_domain::spec::KernelTrial;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

/// Whether this build can run kernels on the device.
pub fn device_supported(device_id: &str) -> bool {
    device_id == "cpu" || (cfg!(feature = "cuda") && device_id.starts_with("gpu:"))
}

fn candle_device(device_id: &str) -> Result<Device, String> {
    if device_id == "cpu" {
        return Ok(Device::Cpu);
    }
    #[cfg(feature = "cuda")]
    if let Some(i) = device_id
        .strip_prefix("gpu:")
        .and_then(|i| i.parse::<usize>().ok())
    {
        return Device::new_cuda(i).map_err(|e| format!("open CUDA device {i}: {e}"));
    }
    Err(format!(
        "device `{device_id}` is not supported by this agent build"
    ))
}

fn ggml(format: QuantFormat) -> GgmlDType {
    match format {
        QuantFormat::Q4_0 => GgmlDType::Q4_0,
        QuantFormat::Q4_1 => GgmlDType::Q4_1,
        QuantFormat::Q5_0 => GgmlDType::Q5_0,
        QuantFormat::Q5_1 => GgmlDType::Q5_1,
        QuantFormat::Q8_0 => GgmlDType::Q8_0,
        QuantFormat::Q2k => GgmlDType::Q2K,
        QuantFormat::Q3k => GgmlDType::Q3K,
        QuantFormat::Q4k => GgmlDType::Q4K,
        QuantFormat::Q5k => GgmlDType::Q5K,
        QuantFormat::Q6k => GgmlDType::Q6K,
        QuantFormat::Q8k => GgmlDType::Q8K,
    }
}

fn candle_dtype(d: DType) -> CDType {
    match d {
        DType::F32 => CDType::F32,
        DType::F16 => CDType::F16,
        DType::Bf16 => CDType::BF16,
    }
}

/// One rayon pool per thread count, built once: candle's CPU kernels run on the
/// current rayon pool, so `pool.install` is how a trial gets its thread count.
fn pool(threads: usize) -> Result<Arc<rayon::ThreadPool>, String> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let pools = POOLS.get_or_init(Default::default);
    let mut pools = pools
        .lock()
        .map_err(|_| "thread pool registry poisoned".to_owned())?;
    if let Some(p) = pools.get(&threads) {
        return Ok(p.clone());
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("chimera-k{threads}-{i}"))
            .build()
            .map_err(|e| format!("build a pool of {threads} threads: {e}"))?,
    );
    pools.insert(threads, p.clone());
    Ok(p)
}

fn err(e: candle_core::Error) -> String {
    e.to_string()
}

/// Runs the kernel trial on the device and measures it.
pub fn run(
    trial: &KernelTrial,
    device_id: &str,
    settings: &Settings,
    cancel: &AtomicBool,
) -> Result<Output, String> {
    let device = candle_device(device_id)?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = trial.threads.map(|t| t as usize).unwrap_or(cores);
    let pool = pool(threads)?;
    let s = trial.shape;
    let (m, n, k) = (s.m as usize, s.n as usize, s.k as usize);
    let measured = pool.install(|| -> Result<harness::Measurement, String> {
        let x = Tensor::randn(0f32, 1.0, (m, k), &device).map_err(err)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), &device).map_err(err)?;
        let result = match trial.op {
            KernelOp::Matmul => {
                let dt = candle_dtype(trial.dtype);
                let x = x.to_dtype(dt).map_err(err)?;
                let wt = w.to_dtype(dt).map_err(err)?.t().map_err(err)?;
                harness::measure(settings, cancel, || {
                    let y = x.matmul(&wt)?;
                    device.synchronize()?;
                    drop(y);
                    Ok::<(), candle_core::Error>(())
                })
            }
            KernelOp::Qmatmul => {
                let format = trial.format.ok_or("op qmatmul needs a format")?;
                let q = QTensor::quantize(&w, ggml(format))
                    .map_err(|e| format!("quantize the weight to {}: {e}", format.name()))?;
                let qm = QMatMul::from_qtensor(q).map_err(err)?;
                harness::measure(settings, cancel, || {
                    let y = qm.forward(&x)?;
                    device.synchronize()?;
                    drop(y);
                    Ok::<(), candle_core::Error>(())
                })
            }
        };
        result.map_err(|e| match e {
            HarnessError::Cancelled => "cancelled".to_owned(),
            HarnessError::Workload(m) => format!("{} failed: {m}", trial.op.name()),
        })
    })?;
    Ok(Output {
        metrics: measured.metrics(Some(s.flops())),
        threads: threads as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chimera_domain::catalog::Shape;
    use std::time::Duration;

    fn quick() -> Settings {
        Settings {
            warmup_iters: 1,
            min_iters: 3,
            min_time: Duration::ZERO,
            max_time: Duration::from_secs(5),
        }
    }

    fn trial(op: KernelOp, dtype: DType, format: Option<QuantFormat>) -> KernelTrial {
        KernelTrial {
            op,
            dtype,
            format,
            shape: Shape {
                m: 4,
                n: 64,
                k: 256,
            },
            threads: Some(1),
        }
    }

    #[test]
    fn every_dtype_and_format_measures() {
        let cancel = AtomicBool::new(false);
        for dt in DType::ALL {
            let out = run(&trial(KernelOp::Matmul, dt, None), "cpu", &quick(), &cancel).unwrap();
            assert!(out.metrics["gflop_per_s"] > 0.0, "{dt:?}");
            assert_eq!(out.metrics["iterations"], 3.0);
        }
        for f in QuantFormat::ALL {
            let out = run(
                &trial(KernelOp::Qmatmul, DType::F32, Some(f)),
                "cpu",
                &quick(),
                &cancel,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", f.name()));
            assert!(out.metrics["latency_ms_p50"] > 0.0, "{}", f.name());
            assert_eq!(out.threads, 1);
        }
    }

    #[test]
    fn an_unknown_device_fails_with_a_reason() {
        let cancel = AtomicBool::new(false);
        let e = run(
            &trial(KernelOp::Matmul, DType::F32, None),
            "gpu:7",
            &quick(),
            &cancel,
        )
        .err()
        .unwrap();
        assert!(e.contains("gpu:7"), "{e}");
    }
}
