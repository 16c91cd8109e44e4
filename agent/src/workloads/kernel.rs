//! The `kernel` workload: one candle op, timed by the shared harness.
//!
//! `matmul`: `x[m,k] @ w[n,k]^T` in f32, f16 or bf16.
//! `qmatmul`: f32 `x[m,k]` times a weight `w[n,k]` quantized to a GGML format
//! (candle's `QMatMul`, the path quantized LLM layers take).

use super::Output;
use crate::harness::{self, HarnessError, Settings};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType as CDType, Device, Module, Tensor, D};
use chimera_domain::catalog::{DType, KernelOp, QuantFormat, Variant};
use chimera_domain::metrics;
use chimera_domain::spec::KernelTrial;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

/// Whether this build can run kernels on the device.
pub fn device_supported(device_id: &str) -> bool {
    device_id == "cpu" || (cfg!(feature = "cuda") && device_id.starts_with("gpu:"))
}

pub(crate) fn candle_device(device_id: &str) -> Result<Device, String> {
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
pub(crate) fn pool(threads: usize) -> Result<Arc<rayon::ThreadPool>, String> {
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

fn dtype_bytes(d: DType) -> f64 {
    match d {
        DType::F32 => 4.0,
        DType::F16 | DType::Bf16 => 2.0,
    }
}

/// Causal scaled-dot-product attention composed from elementary ops.
fn attention_naive(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
) -> candle_core::Result<Tensor> {
    let d = q.dim(3)? as f64;
    let att = (q.matmul(&k.t()?)? / d.sqrt())?;
    let att = att.broadcast_add(mask)?;
    candle_nn::ops::softmax_last_dim(&att)?.matmul(v)
}

/// Softmax over the last dimension, composed from elementary ops.
fn softmax_naive(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// RMS normalisation composed from elementary ops.
fn rmsnorm_naive(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let dt = x.dtype();
    let x32 = x.to_dtype(CDType::F32)?;
    let norm = (x32.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    x32.broadcast_div(&norm)?.to_dtype(dt)?.broadcast_mul(w)
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
    let d = s.dims().iter().map(|d| *d as usize).collect::<Vec<_>>();
    let dt = candle_dtype(trial.dtype);
    let size = dtype_bytes(trial.dtype);
    if trial.variant == Variant::Fused && trial.op == KernelOp::Attention {
        return Err(format!(
            "candle has no fused attention kernel for {device_id} in this build (candle 0.11's fused SDPA is Metal-only); use variant naive"
        ));
    }
    let (measured, flops, bytes) = pool.install(
        || -> Result<(harness::Measurement, Option<f64>, f64), String> {
            let rand = |shape: &[usize]| -> Result<Tensor, String> {
                Tensor::randn(0f32, 1.0, shape, &device)
                    .and_then(|t| t.to_dtype(dt))
                    .map_err(err)
            };
            macro_rules! time {
                ($body:expr) => {
                    harness::measure(settings, cancel, || {
                        let y = $body?;
                        device.synchronize()?;
                        drop(y);
                        Ok::<(), candle_core::Error>(())
                    })
                };
            }
            let fused = trial.variant == Variant::Fused;
            let (result, flops, bytes) = match trial.op {
                KernelOp::Matmul => {
                    let (m, n, k) = (d[0], d[1], d[2]);
                    let x = rand(&[m, k])?;
                    let wt = rand(&[n, k])?.t().map_err(err)?;
                    let bytes = (m * k + n * k + m * n) as f64 * size;
                    (time!(x.matmul(&wt)), Some(s.flops()), bytes)
                }
                KernelOp::Qmatmul => {
                    let (m, n, k) = (d[0], d[1], d[2]);
                    let format = trial.format.ok_or("op qmatmul needs a format")?;
                    let x = Tensor::randn(0f32, 1.0, (m, k), &device).map_err(err)?;
                    let w = Tensor::randn(0f32, 1.0, (n, k), &device).map_err(err)?;
                    let q = QTensor::quantize(&w, ggml(format))
                        .map_err(|e| format!("quantize the weight to {}: {e}", format.name()))?;
                    let wbytes = q.storage_size_in_bytes() as f64;
                    let qm = QMatMul::from_qtensor(q).map_err(err)?;
                    let bytes = (m * k + m * n) as f64 * 4.0 + wbytes;
                    (time!(qm.forward(&x)), Some(s.flops()), bytes)
                }
                KernelOp::Softmax => {
                    let x = rand(&d)?;
                    let bytes = 2.0 * (d[0] * d[1]) as f64 * size;
                    let r = if fused {
                        time!(candle_nn::ops::softmax_last_dim(&x))
                    } else {
                        time!(softmax_naive(&x))
                    };
                    (r, None, bytes)
                }
                KernelOp::Rmsnorm => {
                    let x = rand(&d)?;
                    let w = rand(&[d[1]])?;
                    let bytes = (2 * d[0] * d[1] + d[1]) as f64 * size;
                    let r = if fused {
                        time!(candle_nn::ops::rms_norm(&x, &w, 1e-5))
                    } else {
                        time!(rmsnorm_naive(&x, &w, 1e-5))
                    };
                    (r, None, bytes)
                }
                KernelOp::Rope => {
                    let x = rand(&d)?;
                    let cos = rand(&[d[2], d[3] / 2])?;
                    let sin = rand(&[d[2], d[3] / 2])?;
                    let bytes = (2 * d.iter().product::<usize>() + d[2] * d[3]) as f64 * size;
                    let r = if fused {
                        time!(candle_nn::rotary_emb::rope_i(&x, &cos, &sin))
                    } else {
                        time!(candle_nn::rotary_emb::rope_i_slow(&x, &cos, &sin))
                    };
                    (r, None, bytes)
                }
                KernelOp::Attention => {
                    let (q, k, v) = (rand(&d)?, rand(&d)?, rand(&d)?);
                    let t = d[2];
                    let mask: Vec<f32> = (0..t * t)
                        .map(|i| {
                            if i % t > i / t {
                                f32::NEG_INFINITY
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    let mask = Tensor::from_vec(mask, (t, t), &device)
                        .and_then(|m| m.to_dtype(dt))
                        .map_err(err)?;
                    let bh = (d[0] * d[1]) as f64;
                    let flops = 4.0 * bh * (t as f64).powi(2) * d[3] as f64;
                    let bytes = 4.0 * bh * (t * d[3]) as f64 * size;
                    (
                        time!(attention_naive(&q, &k, &v, &mask)),
                        Some(flops),
                        bytes,
                    )
                }
            };
            let m = result.map_err(|e| match e {
                HarnessError::Cancelled => "cancelled".to_owned(),
                HarnessError::Workload(m) => format!("{} failed: {m}", trial.op.name()),
            })?;
            Ok((m, flops, bytes))
        },
    )?;
    let roof = crate::roofline::get(&device, device_id, threads, &pool)?;
    let mut metrics = measured.metrics(flops);
    let p50_s = metrics.get(metrics::LATENCY_MS_P50).copied().unwrap_or(0.0) * 1e-3;
    if p50_s > 0.0 {
        metrics.insert(metrics::GB_PER_S.into(), bytes / p50_s / 1e9);
        metrics.insert(
            metrics::ROOFLINE_FRAC.into(),
            roof.fraction(flops.unwrap_or(0.0), bytes, p50_s),
        );
    }
    metrics.insert(
        metrics::ROOFLINE_BW_GB_PER_S.into(),
        roof.bandwidth_gb_per_s,
    );
    metrics.insert(
        metrics::ROOFLINE_PEAK_GFLOP_PER_S.into(),
        roof.peak_gflop_per_s,
    );
    Ok(Output {
        metrics,
        threads: threads as u32,
        detail: Some(serde_json::json!({
            "roofline": roof.method,
            "bytes_per_iteration": bytes,
            "flops_per_iteration": flops,
        })),
        artifact: Vec::new(),
        measure_s: Some(measured.window.as_secs_f64()),
        work: Some((measured.samples_ms.len() as f64, metrics::JOULES_PER_OP)),
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
            phases: Default::default(),
        }
    }

    fn trial(op: KernelOp, dtype: DType, format: Option<QuantFormat>) -> KernelTrial {
        KernelTrial {
            op,
            variant: op.default_variant(),
            dtype,
            format,
            shape: Shape::mnk(4, 64, 256),
            threads: Some(1),
        }
    }

    /// Every metric name a kernel run emits (and its energy-per-op name) is
    /// in the domain's metrics table.
    fn assert_named_in_the_table(out: &Output) {
        let unlisted = metrics::unlisted(out.metric_names());
        assert!(unlisted.is_empty(), "emitted, not in METRICS: {unlisted:?}");
        let unreported: Vec<_> = out
            .metric_names()
            .filter(|n| !metrics::reported(chimera_domain::catalog::Workload::Kernel, n))
            .collect();
        assert!(
            unreported.is_empty(),
            "emitted, not in metrics::reported(kernel): {unreported:?}"
        );
    }

    #[test]
    fn every_dtype_and_format_measures() {
        let cancel = AtomicBool::new(false);
        for dt in DType::ALL {
            let out = run(&trial(KernelOp::Matmul, dt, None), "cpu", &quick(), &cancel).unwrap();
            assert_named_in_the_table(&out);
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
            assert_named_in_the_table(&out);
            assert!(out.metrics["latency_ms_p50"] > 0.0, "{}", f.name());
            assert_eq!(out.threads, 1);
        }
    }

    #[test]
    fn every_op_and_variant_measures_against_the_roofline() {
        let cancel = AtomicBool::new(false);
        for (op, shape) in [
            (KernelOp::Softmax, "32,1024"),
            (KernelOp::Rmsnorm, "32,1024"),
            (KernelOp::Rope, "1,4,64,64"),
            (KernelOp::Attention, "1,4,64,64"),
        ] {
            for variant in [Variant::Fused, Variant::Naive] {
                let t = KernelTrial {
                    op,
                    variant,
                    dtype: DType::F32,
                    format: None,
                    shape: shape.parse().unwrap(),
                    threads: Some(1),
                };
                match run(&t, "cpu", &quick(), &cancel) {
                    Ok(out) => {
                        assert_named_in_the_table(&out);
                        let m = &out.metrics;
                        assert!(
                            m["gb_per_s"] > 0.0 && m["roofline_frac"] > 0.0,
                            "{op:?} {m:?}"
                        );
                        assert!(m["roofline_bw_gb_per_s"] > 0.0);
                        assert!(out.detail.unwrap()["roofline"]
                            .as_str()
                            .unwrap()
                            .contains("triad"));
                    }
                    Err(e) => {
                        assert_eq!((op, variant), (KernelOp::Attention, Variant::Fused), "{e}");
                        assert!(e.contains("no fused attention"), "{e}");
                    }
                }
            }
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
