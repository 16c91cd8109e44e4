//! The device's roofline: its measured memory bandwidth and compute peak, the
//! two bounds a kernel's time is compared with (`roofline_frac`).
//!
//! Measured, not looked up: once per (device, thread count), the first time a
//! kernel trial needs it, then cached for the agent's life (measuring at start
//! would delay every agent's first heartbeat by about a second, for trials
//! that may never come).
//! - Bandwidth (CPU): a STREAM triad `a[i] = b[i] + s*c[i]` over three f32
//!   arrays of 128 MiB each (far beyond any last-level cache) on the trial's
//!   thread pool, best of 5; bytes counted as STREAM does (3 x 4 per element,
//!   no write-allocate). On a GPU: the same triad as candle tensor ops.
//! - Compute peak: candle's f32 matmul of 1024 x 1024 x 1024 (2048 on a GPU),
//!   best of 5: the best this build's own GEMM reaches, which is what a kernel
//!   can hope for, not the datasheet number.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// The two bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct Roofline {
    pub bandwidth_gb_per_s: f64,
    pub peak_gflop_per_s: f64,
    /// How both were measured, for the trial's detail.
    pub method: String,
}

impl Roofline {
    /// Fraction of the roofline a kernel reached: the time the bounds allow
    /// (`max(flops / peak, bytes / bandwidth)`) over the time it took.
    pub fn fraction(&self, flops: f64, bytes: f64, seconds: f64) -> f64 {
        let bound =
            (flops / (self.peak_gflop_per_s * 1e9)).max(bytes / (self.bandwidth_gb_per_s * 1e9));
        bound / seconds
    }
}

const ELEMENTS: usize = 32 << 20; // 128 MiB of f32 per array
const RUNS: usize = 5;

fn cpu_triad_gb_per_s() -> f64 {
    let b = vec![1.0f32; ELEMENTS];
    let c = vec![2.0f32; ELEMENTS];
    let mut a = vec![0.0f32; ELEMENTS];
    let s = 3.0f32;
    let mut best = 0.0f64;
    for _ in 0..RUNS {
        let t = Instant::now();
        a.par_chunks_mut(1 << 16)
            .zip(b.par_chunks(1 << 16))
            .zip(c.par_chunks(1 << 16))
            .for_each(|((a, b), c)| {
                for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                    *a = b + s * c;
                }
            });
        let secs = t.elapsed().as_secs_f64();
        best = best.max((3 * 4 * ELEMENTS) as f64 / secs / 1e9);
    }
    std::hint::black_box(&a);
    best
}

fn tensor_triad_gb_per_s(device: &Device) -> candle_core::Result<f64> {
    let b = Tensor::ones(ELEMENTS, DType::F32, device)?;
    let c = Tensor::ones(ELEMENTS, DType::F32, device)?;
    let mut best = 0.0f64;
    for _ in 0..RUNS {
        let t = Instant::now();
        let a = (&b + (&c * 3.0)?)?;
        device.synchronize()?;
        let secs = t.elapsed().as_secs_f64();
        drop(a);
        // b + 3c as two ops: c read, tmp written, b and tmp read, a written.
        best = best.max((5 * 4 * ELEMENTS) as f64 / secs / 1e9);
    }
    Ok(best)
}

fn matmul_gflop_per_s(device: &Device, n: usize) -> candle_core::Result<f64> {
    let x = Tensor::randn(0f32, 1.0, (n, n), device)?;
    let w = Tensor::randn(0f32, 1.0, (n, n), device)?;
    let mut best = 0.0f64;
    for _ in 0..RUNS + 1 {
        let t = Instant::now();
        let y = x.matmul(&w)?;
        device.synchronize()?;
        let secs = t.elapsed().as_secs_f64();
        drop(y);
        best = best.max(2.0 * (n as f64).powi(3) / secs / 1e9);
    }
    Ok(best)
}

/// The roofline of `device` at `threads` (measured on first use, inside `pool`).
pub fn get(
    device: &Device,
    device_id: &str,
    threads: usize,
    pool: &rayon::ThreadPool,
) -> Result<Arc<Roofline>, String> {
    type Cache = Mutex<HashMap<(String, usize), Arc<Roofline>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (device_id.to_owned(), threads);
    if let Some(r) = cache
        .lock()
        .map_err(|_| "roofline cache poisoned")?
        .get(&key)
    {
        return Ok(r.clone());
    }
    let r = pool.install(|| -> candle_core::Result<Roofline> {
        Ok(if device.is_cpu() {
            Roofline {
                bandwidth_gb_per_s: cpu_triad_gb_per_s(),
                peak_gflop_per_s: matmul_gflop_per_s(device, 1024)?,
                method: format!(
                    "bandwidth: STREAM triad over 3 x 128 MiB f32 arrays, {threads} threads, best of {RUNS}; peak: candle f32 matmul 1024^3, {threads} threads, best of {RUNS}"
                ),
            }
        } else {
            Roofline {
                bandwidth_gb_per_s: tensor_triad_gb_per_s(device)?,
                peak_gflop_per_s: matmul_gflop_per_s(device, 2048)?,
                method: format!(
                    "bandwidth: b + 3c over 128 MiB f32 tensors on {device_id}, best of {RUNS}; peak: candle f32 matmul 2048^3, best of {RUNS}"
                ),
            }
        })
    })
    .map_err(|e| format!("measure the roofline of {device_id}: {e}"))?;
    tracing::info!(
        device = device_id,
        threads,
        bandwidth_gb_per_s = r.bandwidth_gb_per_s,
        peak_gflop_per_s = r.peak_gflop_per_s,
        "measured roofline"
    );
    let r = Arc::new(r);
    cache
        .lock()
        .map_err(|_| "roofline cache poisoned")?
        .insert(key, r.clone());
    Ok(r)
}
