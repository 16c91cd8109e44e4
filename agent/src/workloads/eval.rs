//! The `eval` workload: perplexity of the shipped text and divergence from a
//! reference model, over the full vocabulary (the reference computed in the
//! trial's own process) or over a reference trial's top-K.

use super::kl::{self, MeanSe};
use super::model::{cerr, load, text_tokens, threads_of, Loaded, EVAL_TEXT};
use super::{Context, Output};
use candle_core::{Device, Tensor, D};
use chimera_domain::metrics;
use chimera_domain::models::{EvalTrial, KlMode, WeightFormat, REFERENCE_TOP_K};
use chimera_domain::telemetry::Phase;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Most bytes of reference log-probabilities a `kl: full` trial keeps
/// (scored positions × vocabulary × 4): 1 GiB, e.g. 5,400 scored positions
/// of SmolLM2's 49,152-token vocabulary. Past it the trial asks for fewer
/// scored tokens or `kl: topk`.
pub const MAX_FULL_REFERENCE_BYTES: usize = 1 << 30;

// ---- the top-K reference artifact (`kl: topk`) ---------------------------------

/// The reference distribution a reference trial hands on: per scored
/// position, the top-K token ids and their log-probabilities.
#[derive(Debug, PartialEq)]
pub struct Reference {
    /// Hash of the evaluated token ids: a reference only scores the same text.
    pub tokens_hash: u64,
    pub k: usize,
    /// `positions x k` (id, logprob), best first.
    pub top: Vec<Vec<(u32, f32)>>,
}

const REF_MAGIC: &[u8; 8] = b"CHMREF01";

impl Reference {
    /// Little-endian binary: magic, hash, k, positions, then (id u32, logprob f32).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(24 + self.top.len() * self.k * 8);
        b.extend_from_slice(REF_MAGIC);
        b.extend_from_slice(&self.tokens_hash.to_le_bytes());
        b.extend_from_slice(&(self.k as u32).to_le_bytes());
        b.extend_from_slice(&(self.top.len() as u32).to_le_bytes());
        for row in &self.top {
            for (id, lp) in row {
                b.extend_from_slice(&id.to_le_bytes());
                b.extend_from_slice(&lp.to_le_bytes());
            }
        }
        b
    }

    /// Parses [`Reference::encode`]'s output; any inconsistency is an error.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        let bad = || "the reference distribution sent with the trial is malformed".to_owned();
        if b.len() < 24 || &b[..8] != REF_MAGIC {
            return Err(bad());
        }
        let u32_at = |i: usize| -> Result<u32, String> {
            b.get(i..i + 4)
                .and_then(|s| s.try_into().ok())
                .map(u32::from_le_bytes)
                .ok_or_else(bad)
        };
        let tokens_hash = u64::from_le_bytes(b[8..16].try_into().map_err(|_| bad())?);
        let k = u32_at(16)? as usize;
        let n = u32_at(20)? as usize;
        if k == 0 || n.checked_mul(k).and_then(|x| x.checked_mul(8)) != Some(b.len() - 24) {
            return Err(bad());
        }
        let mut top = Vec::with_capacity(n);
        let mut i = 24;
        for _ in 0..n {
            let mut row = Vec::with_capacity(k);
            for _ in 0..k {
                let id = u32_at(i)?;
                let lp = f32::from_bits(u32_at(i + 4)?);
                row.push((id, lp));
                i += 8;
            }
            top.push(row);
        }
        Ok(Reference {
            tokens_hash,
            k,
            top,
        })
    }
}

/// The `k` most likely entries of a log-probability row, best first.
fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, |a, b| row[*b as usize].total_cmp(&row[*a as usize]));
    let mut best: Vec<(u32, f32)> = idx[..k].iter().map(|i| (*i, row[*i as usize])).collect();
    best.sort_by(|a, b| b.1.total_cmp(&a.1));
    best
}

fn hash_tokens(t: &[u32]) -> u64 {
    // FNV-1a: stable across builds and machines (std's hasher is not).
    let mut h: u64 = 0xcbf29ce484222325;
    for x in t {
        for byte in x.to_le_bytes() {
            h ^= byte as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

// ---- the full reference (`kl: full`) -------------------------------------------

/// What identifies a full reference: the model file, its format, the device
/// and the scored text (context and chunks).
type FullKey = (PathBuf, Option<SystemTime>, WeightFormat, String, u32, u32);

/// The reference model's log-probabilities at every scored position.
struct FullReference {
    key: FullKey,
    tokens_hash: u64,
    vocab: usize,
    /// `positions x vocab`, row-major.
    logprobs: Vec<f32>,
    perplexity: MeanSe,
}

thread_local! {
    /// The last full reference this device's worker thread computed: every
    /// configuration of a sweep (and its repeats) is scored against it
    /// without recomputing. At most [`MAX_FULL_REFERENCE_BYTES`].
    static FULL: RefCell<Option<Arc<FullReference>>> = const { RefCell::new(None) };
}

/// The evaluated tokens of a trial, checked against the text's length.
fn eval_tokens(t: &EvalTrial, m: &Loaded) -> Result<Vec<u32>, String> {
    let ctx_len = m.llama.config.context_length;
    if t.context as usize > ctx_len {
        return Err(format!(
            "context {} exceeds the model's context length {ctx_len}",
            t.context
        ));
    }
    let total = t.context as usize * t.chunks as usize;
    let available = m
        .tokenizer
        .encode(EVAL_TEXT, false)
        .map(|e| e.len())
        .unwrap_or(0);
    if total > available {
        return Err(format!(
            "context {} x chunks {} = {total} tokens, but the evaluation text has {available}",
            t.context, t.chunks
        ));
    }
    text_tokens(&m.tokenizer, total)
}

/// Scored positions per chunk of `n` tokens: as llama.cpp's perplexity, the
/// first half of each chunk is context and the rest is scored.
fn scored_per_chunk(n: usize) -> usize {
    n - 1 - n / 2
}

/// Runs the model over `tokens` in chunks of `n` and calls `each(next_token,
/// log_probs)` for every scored position, in order.
fn score(
    m: &Loaded,
    tokens: &[u32],
    n: usize,
    device: &Device,
    cancel: &AtomicBool,
    mut each: impl FnMut(u32, &[f32]) -> Result<(), String>,
) -> Result<(), String> {
    let first = n / 2;
    for chunk in tokens.chunks(n) {
        if cancel.load(Ordering::Relaxed) {
            return Err("cancelled".into());
        }
        let x = Tensor::new(chunk, device)
            .and_then(|x| x.unsqueeze(0))
            .map_err(cerr)?;
        let mut cache = m.llama.cache();
        let logits = m.llama.forward_from(&x, &mut cache, first).map_err(cerr)?;
        let lp = candle_nn::ops::log_softmax(&logits.squeeze(0).map_err(cerr)?, D::Minus1)
            .and_then(|t| t.to_vec2::<f32>())
            .map_err(cerr)?;
        for pos in first..chunk.len() - 1 {
            each(chunk[pos + 1], &lp[pos - first])?;
        }
    }
    Ok(())
}

fn nll_of(row: &[f32], next: u32) -> f64 {
    -(row.get(next as usize).copied().unwrap_or(f32::NEG_INFINITY) as f64)
}

/// The full reference for `t`: the last one computed on this thread when it
/// is for the same model, format, device and text, else computed now (outside
/// the measured window) from the model in the reference format.
fn full_reference(
    t: &EvalTrial,
    ctx: &Context,
    device: &Device,
    pool: &rayon::ThreadPool,
) -> Result<Arc<FullReference>, String> {
    let path = ctx.model_dirs.resolve(&t.model)?;
    let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let key: FullKey = (
        path,
        mtime,
        t.reference,
        ctx.device_id.to_owned(),
        t.context,
        t.chunks,
    );
    if let Some(hit) = FULL.with(|f| f.borrow().as_ref().filter(|r| r.key == key).cloned()) {
        return Ok(hit);
    }
    FULL.with(|f| f.borrow_mut().take()); // free the old reference first
    let m = load(ctx, &t.model, Some(t.reference), device, pool)?;
    let tokens = eval_tokens(t, &m)?;
    let n = t.context as usize;
    let positions = t.chunks as usize * scored_per_chunk(n);
    let vocab = m.llama.vocab;
    let bytes = positions.saturating_mul(vocab).saturating_mul(4);
    if bytes > MAX_FULL_REFERENCE_BYTES {
        return Err(format!(
            "kl: full keeps the reference's log-probabilities for {positions} scored positions x {vocab} tokens = {} MiB, over the {} MiB limit: score fewer tokens (context x chunks) or use `kl: topk`",
            bytes >> 20,
            MAX_FULL_REFERENCE_BYTES >> 20
        ));
    }
    let mut logprobs = Vec::with_capacity(positions * vocab);
    let mut nll = Vec::with_capacity(positions);
    pool.install(|| {
        score(&m, &tokens, n, device, ctx.cancel, |next, row| {
            if row.len() != vocab {
                return Err(format!(
                    "the reference model gave {} log-probabilities, its vocabulary has {vocab}",
                    row.len()
                ));
            }
            nll.push(nll_of(row, next));
            logprobs.extend_from_slice(row);
            Ok(())
        })
    })?;
    let r = Arc::new(FullReference {
        key,
        tokens_hash: hash_tokens(&tokens),
        vocab,
        logprobs,
        perplexity: kl::perplexity(&nll),
    });
    FULL.with(|f| *f.borrow_mut() = Some(r.clone()));
    Ok(r)
}

// ---- the trial ------------------------------------------------------------------

/// What a scored position is compared against.
enum Against {
    /// This trial is the reference: it records the top-K for the others.
    Nothing,
    TopK(Reference),
    Full(Arc<FullReference>),
}

/// Perplexity over the shipped text; against the reference, KL and top-1
/// agreement, each with its standard error.
pub fn eval(t: &EvalTrial, ctx: &Context) -> Result<Output, String> {
    let threads = threads_of(t.threads);
    let pool = super::kernel::pool(threads)?;
    let device = super::kernel::candle_device(ctx.device_id)?;
    let against = if t.is_reference {
        Against::Nothing
    } else {
        match t.kl {
            KlMode::TopK if ctx.input.is_empty() => {
                return Err("no reference distribution came with this eval trial (kl: topk)".into())
            }
            KlMode::TopK => Against::TopK(Reference::decode(ctx.input)?),
            KlMode::Full => Against::Full(full_reference(t, ctx, &device, &pool)?),
        }
    };
    let format = if t.is_reference {
        Some(t.reference)
    } else {
        t.format
    };
    let m = load(ctx, &t.model, format, &device, &pool)?;
    let tokens = eval_tokens(t, &m)?;
    let tokens_hash = hash_tokens(&tokens);
    let reference_hash = match &against {
        Against::Nothing => tokens_hash,
        Against::TopK(r) => r.tokens_hash,
        Against::Full(r) => r.tokens_hash,
    };
    if reference_hash != tokens_hash {
        return Err(
            "the reference was computed on different tokens (another tokenizer or text)".into(),
        );
    }
    let n = t.context as usize;
    ctx.settings.phases.mark(Phase::Measure);
    let started = Instant::now();
    let mut nll = Vec::new();
    let mut kls = Vec::new();
    // Per scored token: its NLL minus the reference's (`kl: full`).
    let mut nll_delta = Vec::new();
    let mut agree = 0usize;
    let mut top = Vec::new();
    pool.install(|| {
        score(&m, &tokens, n, &device, ctx.cancel, |next, row| {
            let i = nll.len();
            nll.push(nll_of(row, next));
            let (kl, ref_best) =
                match &against {
                    Against::Nothing => {
                        top.push(top_k(row, REFERENCE_TOP_K));
                        return Ok(());
                    }
                    Against::TopK(r) => {
                        let reft = r.top.get(i).ok_or(
                            "the reference has fewer positions than this evaluation scores",
                        )?;
                        (kl::kl_topk(reft, row), reft.first().map(|x| x.0))
                    }
                    Against::Full(r) => {
                        let reft = r.logprobs.get(i * r.vocab..(i + 1) * r.vocab).ok_or(
                            "the reference has fewer positions than this evaluation scores",
                        )?;
                        if row.len() != r.vocab {
                            return Err(format!(
                            "the model gives {} log-probabilities per position, the reference {}",
                            row.len(),
                            r.vocab
                        ));
                        }
                        nll_delta.push(nll_of(row, next) - nll_of(reft, next));
                        (kl::kl_full(reft, row), Some(kl::argmax(reft)))
                    }
                };
            kls.push(kl);
            if ref_best == Some(kl::argmax(row)) {
                agree += 1;
            }
            Ok(())
        })
    })?;
    let eval_s = started.elapsed().as_secs_f64();
    ctx.settings.phases.mark(Phase::Cooldown);
    let mut out = BTreeMap::new();
    let ppl = kl::perplexity(&nll);
    out.insert(metrics::PERPLEXITY.into(), ppl.mean);
    out.insert(metrics::PERPLEXITY_SE.into(), ppl.se);
    out.insert(metrics::NLL_MEAN.into(), kl::mean_se(&nll).mean);
    out.insert(metrics::SCORED_TOKENS.into(), nll.len() as f64);
    out.insert(metrics::EVAL_S.into(), eval_s);
    out.insert(
        metrics::EVAL_TOKENS_PER_S.into(),
        tokens.len() as f64 / eval_s.max(1e-9),
    );
    out.insert(metrics::WEIGHT_BYTES.into(), m.llama.weight_bytes as f64);
    let positions = match &against {
        Against::Nothing => None,
        Against::TopK(r) => Some(r.top.len()),
        Against::Full(r) => Some(r.logprobs.len() / r.vocab.max(1)),
    };
    if let Some(positions) = positions {
        if positions != kls.len() {
            return Err(format!(
                "the reference has {positions} positions, this evaluation scored {}",
                kls.len()
            ));
        }
        let kl_mean = kl::mean_se(&kls);
        out.insert(metrics::KL_MEAN.into(), kl_mean.mean);
        out.insert(metrics::KL_MEAN_SE.into(), kl_mean.se);
        out.insert(metrics::KL_P99.into(), kl::p99(&kls));
        if !nll_delta.is_empty() {
            let d = kl::mean_se(&nll_delta);
            out.insert(metrics::LN_PPL_RATIO.into(), d.mean);
            out.insert(metrics::LN_PPL_RATIO_SE.into(), d.se);
        }
        let top1 = kl::proportion(agree, kls.len());
        out.insert(metrics::TOP1_AGREE.into(), top1.mean);
        out.insert(metrics::TOP1_AGREE_SE.into(), top1.se);
    }
    let (artifact, detail_kl, reference_ppl) = match &against {
        Against::Nothing => {
            let artifact = Reference {
                tokens_hash,
                k: REFERENCE_TOP_K,
                top,
            }
            .encode();
            out.insert(metrics::REFERENCE_BYTES.into(), artifact.len() as f64);
            (
                artifact,
                format!("none: this trial hands its top-{REFERENCE_TOP_K} on to the others"),
                None,
            )
        }
        Against::TopK(_) => (
            Vec::new(),
            format!("over the reference's top-{REFERENCE_TOP_K} tokens plus one bucket for the rest (a lower bound of the full KL)"),
            None,
        ),
        Against::Full(r) => (
            Vec::new(),
            format!(
                "over the full vocabulary ({} tokens), the reference computed in this trial's process",
                r.vocab
            ),
            Some(r.perplexity),
        ),
    };
    let mut detail = serde_json::json!({
        "weights": m.stored,
        "reference": if t.is_reference { "this trial (the reference)".to_owned() } else { format!("{} of the same model", t.reference) },
        "kl": detail_kl,
    });
    if let Some(p) = reference_ppl {
        detail["reference_perplexity"] = serde_json::json!({ "mean": p.mean, "se": p.se });
    }
    Ok(Output {
        metrics: out,
        threads: threads as u32,
        detail: Some(detail),
        artifact,
        measure_s: Some(eval_s),
        work: Some((tokens.len() as f64, metrics::JOULES_PER_TOKEN)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_round_trips_and_rejects_garbage() {
        let r = Reference {
            tokens_hash: 42,
            k: 2,
            top: vec![vec![(1, -0.1), (7, -2.5)], vec![(3, -0.01), (0, -5.0)]],
        };
        assert_eq!(Reference::decode(&r.encode()).unwrap(), r);
        assert!(Reference::decode(b"nonsense").is_err());
        let mut short = r.encode();
        short.pop();
        assert!(Reference::decode(&short).is_err());
    }

    #[test]
    fn top_k_keeps_the_best_entries_best_first() {
        let row = [-3.0f32, -0.5, -2.0, -0.1];
        assert_eq!(top_k(&row, 2), vec![(3, -0.1), (1, -0.5)]);
        assert_eq!(top_k(&row, 9).len(), 4);
        assert!(top_k(&[], 3).is_empty());
    }

    #[test]
    fn half_of_each_chunk_is_scored() {
        assert_eq!(scored_per_chunk(64), 31);
        assert_eq!(scored_per_chunk(128), 63);
        assert_eq!(scored_per_chunk(17), 8);
    }
}
