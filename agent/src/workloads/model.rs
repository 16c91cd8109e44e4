//! The model workloads `quantize` and `generate` on llama-family models read
//! through the model-directory guard, and the loading `eval` shares.

use super::{Context, Output};
use crate::harness::{self, HarnessError};
use crate::models::llama::{argmax_rows, Llama};
use crate::models::quant::{self, TensorReport};
use crate::models::{self, ggml_type, Weights};
use candle_core::{Device, Tensor};
use chimera_domain::metrics;
use chimera_domain::models::{GenerateTrial, ModelPath, QuantizeTrial, WeightFormat};
use chimera_domain::telemetry::Phase;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The text prompts are cut from and perplexity is measured on: English prose
/// written for this project (public domain), shipped in the binary so every
/// agent evaluates exactly the same tokens.
pub const EVAL_TEXT: &str = include_str!("../../data/eval.txt");

pub(super) fn cerr(e: candle_core::Error) -> String {
    e.to_string()
}

pub(super) fn threads_of(t: Option<u32>) -> usize {
    t.map(|t| t as usize).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// Resets the process's peak-RSS counter (Linux), so a trial's peak is its own.
pub(super) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size of the process since the last reset, bytes.
pub(super) fn peak_rss_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

fn load_weights(ctx: &Context, model: &ModelPath) -> Result<(PathBuf, Weights), String> {
    let path = ctx.model_dirs.resolve(model)?;
    let w = models::load(&path)?;
    Ok((path, w))
}

// ---- quantize ---------------------------------------------------------------

/// Quantizes every tensor of the model and reports size and error.
pub fn quantize(t: &QuantizeTrial, ctx: &Context) -> Result<Output, String> {
    let threads = threads_of(t.threads);
    let pool = super::kernel::pool(threads)?;
    let (path, mut w) = load_weights(ctx, &t.model)?;
    let stored = w.stored.clone();
    let elements: u64 = w
        .tensors
        .values()
        .map(|q| q.shape().elem_count() as u64)
        .sum();
    ctx.settings.phases.mark(Phase::Measure);
    let started = Instant::now();
    let reports = quant::quantize(&mut w, ggml_type(t.format), &pool, false);
    let quantize_s = started.elapsed().as_secs_f64();
    ctx.settings.phases.mark(Phase::Cooldown);
    let reports = reports?;
    if ctx.cancel.load(Ordering::Relaxed) {
        return Err("cancelled".into());
    }
    // Error against the source: measured apart from the timed conversion.
    let (path_src, src) = load_weights(ctx, &t.model)?;
    debug_assert_eq!(path, path_src);
    let reports = with_errors(&src, &w, reports, &pool)?;
    let size_bytes: u64 = reports.iter().map(|r| r.bytes).sum();
    let mut m = BTreeMap::new();
    m.insert(metrics::SIZE_BYTES.into(), size_bytes as f64);
    m.insert(
        metrics::BITS_PER_WEIGHT.into(),
        size_bytes as f64 * 8.0 / elements.max(1) as f64,
    );
    m.insert(metrics::QUANTIZE_S.into(), quantize_s);
    m.insert(
        metrics::QUANTIZE_GB_PER_S.into(),
        elements as f64 * 4.0 / quantize_s.max(1e-9) / 1e9,
    );
    m.insert(metrics::PARAMETERS.into(), elements as f64);
    let total_sq: f64 = reports
        .iter()
        .map(|r| r.rmse * r.rmse * r.shape.iter().product::<usize>() as f64)
        .sum();
    m.insert(
        metrics::RMSE.into(),
        (total_sq / elements.max(1) as f64).sqrt(),
    );
    m.insert(
        metrics::MAX_ABS_ERR.into(),
        reports.iter().map(|r| r.max_abs_err).fold(0.0, f64::max),
    );
    m.insert(
        metrics::COSINE_MIN.into(),
        reports.iter().map(|r| r.cosine).fold(1.0, f64::min),
    );
    let fallbacks = reports
        .iter()
        .filter(|r| r.shape.len() > 1 && r.to != t.format.name())
        .count();
    m.insert(metrics::FALLBACK_TENSORS.into(), fallbacks as f64);
    let mut detail = serde_json::json!({
        "source": path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "source_formats": stored,
        "format": t.format.name(),
        "quantized_formats": w.stored,
        "error_against": "the source weights as stored (dequantized to f32)",
        "tensors": reports,
    });
    if t.save {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let out = path
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!("{stem}.{}.gguf", t.format.name()));
        let file_bytes = w.write_gguf(&out)?;
        m.insert(metrics::FILE_BYTES.into(), file_bytes as f64);
        let rel = ctx
            .model_dirs
            .dirs()
            .iter()
            .find_map(|d| out.strip_prefix(d).ok())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| out.display().to_string());
        detail["saved"] = serde_json::Value::String(rel);
    }
    Ok(Output {
        metrics: m,
        threads: threads as u32,
        detail: Some(detail),
        artifact: Vec::new(),
        measure_s: Some(quantize_s),
        work: Some((elements as f64, metrics::JOULES_PER_WEIGHT)),
    })
}

fn with_errors(
    src: &Weights,
    out: &Weights,
    reports: Vec<TensorReport>,
    pool: &rayon::ThreadPool,
) -> Result<Vec<TensorReport>, String> {
    use rayon::prelude::*;
    pool.install(|| {
        reports
            .into_par_iter()
            .map(|mut r| {
                let flat = |w: &Weights| -> Result<Vec<f32>, String> {
                    w.tensors[&r.name]
                        .dequantize(&Device::Cpu)
                        .and_then(|t| t.flatten_all())
                        .and_then(|t| t.to_vec1::<f32>())
                        .map_err(|e| format!("tensor `{}`: {e}", r.name))
                };
                let (rmse, max_abs, cosine) = quant::err_stats(&flat(src)?, &flat(out)?);
                r.rmse = rmse;
                r.max_abs_err = max_abs;
                r.cosine = cosine;
                Ok(r)
            })
            .collect()
    })
}

// ---- loading for generate / eval ---------------------------------------------

/// A model ready to run, with how it was obtained.
pub struct Loaded {
    pub llama: Llama,
    pub tokenizer: tokenizers::Tokenizer,
    pub stored: String,
    pub load_s: f64,
}

type LoadKey = (PathBuf, Option<SystemTime>, Option<WeightFormat>, String);

thread_local! {
    /// The last model this device's worker thread loaded: consecutive trials of
    /// one configuration (repeats) reuse it instead of re-reading and
    /// re-quantizing the file.
    static LAST: RefCell<Option<(LoadKey, Arc<Loaded>)>> = const { RefCell::new(None) };
}

/// Loads `model` (re-quantized to `format` if given) onto the device, reusing
/// the previous load on this thread when it is the same file and format.
pub fn load(
    ctx: &Context,
    model: &ModelPath,
    format: Option<WeightFormat>,
    device: &Device,
    pool: &rayon::ThreadPool,
) -> Result<Arc<Loaded>, String> {
    let path = ctx.model_dirs.resolve(model)?;
    let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let key: LoadKey = (path.clone(), mtime, format, ctx.device_id.to_owned());
    if let Some(hit) = LAST.with(|l| {
        l.borrow()
            .as_ref()
            .filter(|(k, _)| *k == key)
            .map(|(_, m)| m.clone())
    }) {
        return Ok(hit);
    }
    LAST.with(|l| l.borrow_mut().take()); // free the old model first
    let started = Instant::now();
    let mut w = models::load(&path)?;
    if let Some(f) = format {
        quant::quantize(&mut w, ggml_type(f), pool, false)?;
    }
    let tokenizer = w.tokenizer.clone();
    let stored = w.stored.clone();
    let llama = Llama::new(w, device).map_err(cerr)?;
    let loaded = Arc::new(Loaded {
        llama,
        tokenizer,
        stored,
        load_s: started.elapsed().as_secs_f64(),
    });
    LAST.with(|l| *l.borrow_mut() = Some((key, loaded.clone())));
    Ok(loaded)
}

/// The shipped text as tokens, repeated until there are `n`.
pub(super) fn text_tokens(tok: &tokenizers::Tokenizer, n: usize) -> Result<Vec<u32>, String> {
    let ids = tok
        .encode(EVAL_TEXT, false)
        .map_err(|e| format!("tokenizer: {e}"))?
        .get_ids()
        .to_vec();
    if ids.is_empty() {
        return Err("the evaluation text tokenizes to nothing".into());
    }
    Ok(ids.iter().copied().cycle().take(n).collect())
}

// ---- generate ----------------------------------------------------------------

/// Prefill `prompt_tokens`, then `new_tokens` greedy decode steps, measured.
pub fn generate(t: &GenerateTrial, ctx: &Context) -> Result<Output, String> {
    let threads = threads_of(t.threads);
    let pool = super::kernel::pool(threads)?;
    let device = super::kernel::candle_device(ctx.device_id)?;
    reset_peak_rss();
    let m = load(ctx, &t.model, t.format, &device, &pool)?;
    let ctx_len = m.llama.config.context_length;
    let total = (t.prompt_tokens + t.new_tokens) as usize;
    if total > ctx_len {
        return Err(format!(
            "prompt_tokens + new_tokens = {total} exceeds the model's context length {ctx_len}"
        ));
    }
    let b = t.batch as usize;
    let prompt = text_tokens(&m.tokenizer, t.prompt_tokens as usize)?;
    let prompt: Vec<u32> = prompt
        .iter()
        .copied()
        .cycle()
        .take(prompt.len() * b)
        .collect();
    let prompt = Tensor::from_vec(prompt, (b, t.prompt_tokens as usize), &device).map_err(cerr)?;
    let mut ttft_ms = Vec::new();
    let mut decode_s = Vec::new();
    let mut steps_ms = Vec::new();
    let mut text = String::new();
    let measured = pool
        .install(|| {
            harness::measure(ctx.settings, ctx.cancel, || -> Result<(), String> {
                let mut cache = m.llama.cache();
                let t0 = Instant::now();
                let logits = m.llama.forward(&prompt, &mut cache).map_err(cerr)?;
                let mut next = argmax_rows(&logits).map_err(cerr)?;
                device.synchronize().map_err(cerr)?;
                ttft_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                let mut first_seq = vec![next[0]];
                let d0 = Instant::now();
                for _ in 1..t.new_tokens {
                    let s = Instant::now();
                    let x = Tensor::from_vec(next.clone(), (b, 1), &device).map_err(cerr)?;
                    let logits = m.llama.forward(&x, &mut cache).map_err(cerr)?;
                    next = argmax_rows(&logits).map_err(cerr)?;
                    device.synchronize().map_err(cerr)?;
                    steps_ms.push(s.elapsed().as_secs_f64() * 1e3);
                    first_seq.push(next[0]);
                }
                decode_s.push(d0.elapsed().as_secs_f64());
                text = m.tokenizer.decode(&first_seq, true).unwrap_or_default();
                Ok(())
            })
        })
        .map_err(|e| match e {
            HarnessError::Cancelled => "cancelled".to_owned(),
            HarnessError::Workload(m) => format!("generate failed: {m}"),
        })?;
    // Only the measured iterations count (the first `warmup` were warm-up).
    let skip = measured.warmup as usize;
    let ttft = harness::summarize(&ttft_ms[skip.min(ttft_ms.len())..]);
    let dec = harness::summarize(&decode_s[skip.min(decode_s.len())..]);
    let per_iter_steps = t.new_tokens.saturating_sub(1) as usize;
    let steps = harness::summarize(&steps_ms[(skip * per_iter_steps).min(steps_ms.len())..]);
    let mut out = measured.metrics(None);
    if let Some(s) = ttft {
        out.insert(metrics::TTFT_MS.into(), s.p50);
        out.insert(
            metrics::PREFILL_TOKENS_PER_S.into(),
            (b * t.prompt_tokens as usize) as f64 / (s.p50 * 1e-3),
        );
    }
    let roof = crate::roofline::get(&device, ctx.device_id, threads, &pool)?;
    if let (Some(d), true) = (dec, per_iter_steps > 0) {
        let steps_per_s = per_iter_steps as f64 / d.p50;
        out.insert(metrics::DECODE_TOKENS_PER_S.into(), b as f64 * steps_per_s);
        // Each decode step reads every weight once: the memory-bandwidth bound.
        out.insert(
            metrics::DECODE_ROOFLINE_FRAC.into(),
            steps_per_s * m.llama.weight_bytes as f64 / (roof.bandwidth_gb_per_s * 1e9),
        );
        out.insert(
            metrics::ROOFLINE_BW_GB_PER_S.into(),
            roof.bandwidth_gb_per_s,
        );
    }
    if let Some(s) = steps {
        out.insert(metrics::DECODE_MS_P50.into(), s.p50);
        out.insert(metrics::DECODE_MS_P99.into(), s.p99);
    }
    if let Some(rss) = peak_rss_bytes() {
        out.insert(metrics::PEAK_RSS_BYTES.into(), rss);
    }
    out.insert(metrics::WEIGHT_BYTES.into(), m.llama.weight_bytes as f64);
    out.insert(metrics::LOAD_S.into(), m.load_s);
    let iterations = measured.samples_ms.len() as f64;
    Ok(Output {
        measure_s: Some(measured.window.as_secs_f64()),
        work: Some((iterations * (b * total) as f64, metrics::JOULES_PER_TOKEN)),
        metrics: out,
        threads: threads as u32,
        detail: Some(serde_json::json!({
            "weights": m.stored,
            "continuation": text,
            "prompt": "the first prompt_tokens tokens of the shipped evaluation text",
            "roofline": roof.method,
        })),
        artifact: Vec::new(),
    })
}
