//! The llama-family forward pass over GGUF-named tensors of any GGML type.
//!
//! It follows candle-transformers' `quantized_llama` (interleaved rotary
//! embedding as GGUF stores q/k, grouped-query attention, tied output
//! embedding when `output.weight` is absent), with two differences the
//! workloads need: the weights are shared (`&self`) while the KV cache is the
//! caller's ([`Cache`]), and the forward pass can return the logits of every
//! position (perplexity and KL need them), not just the last.

use super::{LlamaConfig, Weights};
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, IndexOp, Module, Tensor, D};
use candle_transformers::quantized_nn::RmsNorm;

struct Layer {
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    attn_norm: RmsNorm,
    gate: QMatMul,
    down: QMatMul,
    up: QMatMul,
    ffn_norm: RmsNorm,
}

/// A loaded model, ready to run.
pub struct Llama {
    pub config: LlamaConfig,
    embedding: candle_nn::Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
    pub vocab: usize,
    /// Bytes of weights read per decoded token (every matrix once).
    pub weight_bytes: u64,
}

/// One sequence batch's key/value cache.
#[derive(Default)]
pub struct Cache {
    kv: Vec<Option<(Tensor, Tensor)>>,
    /// Tokens already in the cache.
    pub len: usize,
}

fn take(w: &mut Weights, name: &str) -> candle_core::Result<QTensor> {
    w.tensors
        .remove(name)
        .ok_or_else(|| candle_core::Error::Msg(format!("tensor `{name}` is missing")))
}

impl Llama {
    /// Builds the model from a tensor set (consumed), on `device`.
    pub fn new(mut w: Weights, device: &Device) -> candle_core::Result<Self> {
        let c = w.config.clone();
        let on = |q: QTensor| -> candle_core::Result<QTensor> {
            if device.is_cpu() {
                Ok(q)
            } else {
                QTensor::quantize_onto(&q.dequantize(&Device::Cpu)?, q.dtype(), device)
            }
        };
        let mut weight_bytes = 0u64;
        let mut mm = |q: QTensor| -> candle_core::Result<QMatMul> {
            weight_bytes += q.storage_size_in_bytes() as u64;
            QMatMul::from_qtensor(on(q)?)
        };
        let emb_q = take(&mut w, "token_embd.weight")?;
        let vocab = emb_q.shape().dims()[0];
        let embedding = candle_nn::Embedding::new(emb_q.dequantize(device)?, c.hidden);
        let output = match w.tensors.remove("output.weight") {
            Some(o) => mm(o)?,
            None => mm(emb_q)?,
        };
        let norm = RmsNorm::from_qtensor(on(take(&mut w, "output_norm.weight")?)?, c.rms_eps)?;
        let mut layers = Vec::with_capacity(c.n_layer);
        for l in 0..c.n_layer {
            let mut t = |part: &str| take(&mut w, &format!("blk.{l}.{part}.weight"));
            let (q, k, v, o) = (t("attn_q")?, t("attn_k")?, t("attn_v")?, t("attn_output")?);
            let (g, d, u) = (t("ffn_gate")?, t("ffn_down")?, t("ffn_up")?);
            let (an, fnorm) = (t("attn_norm")?, t("ffn_norm")?);
            layers.push(Layer {
                wq: mm(q)?,
                wk: mm(k)?,
                wv: mm(v)?,
                wo: mm(o)?,
                gate: mm(g)?,
                down: mm(d)?,
                up: mm(u)?,
                attn_norm: RmsNorm::from_qtensor(on(an)?, c.rms_eps)?,
                ffn_norm: RmsNorm::from_qtensor(on(fnorm)?, c.rms_eps)?,
            });
        }
        let theta: Vec<f32> = (0..c.head_dim)
            .step_by(2)
            .map(|i| 1f32 / c.rope_base.powf(i as f32 / c.head_dim as f32))
            .collect();
        let n_theta = theta.len();
        let theta = Tensor::from_vec(theta, (1, n_theta), device)?;
        let pos = Tensor::arange(0u32, c.context_length as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((c.context_length, 1))?;
        let angles = pos.matmul(&theta)?;
        Ok(Llama {
            cos: angles.cos()?,
            sin: angles.sin()?,
            config: c,
            embedding,
            layers,
            norm,
            output,
            vocab,
            weight_bytes,
        })
    }

    /// An empty cache for this model.
    pub fn cache(&self) -> Cache {
        Cache {
            kv: (0..self.layers.len()).map(|_| None).collect(),
            len: 0,
        }
    }

    /// Runs `tokens` (`[batch, seq]`, u32) after what `cache` holds; returns the
    /// logits of the last position, `[batch, vocab]`.
    pub fn forward(&self, tokens: &Tensor, cache: &mut Cache) -> candle_core::Result<Tensor> {
        let seq = tokens.dim(1)?;
        let x = self.hidden(tokens, cache)?;
        self.output.forward(&x.i((.., seq - 1, ..))?.contiguous()?)
    }

    /// Like [`Llama::forward`], but returns the logits of positions `from..seq`,
    /// `[batch, seq - from, vocab]` (the output layer runs on those only).
    pub fn forward_from(
        &self,
        tokens: &Tensor,
        cache: &mut Cache,
        from: usize,
    ) -> candle_core::Result<Tensor> {
        let seq = tokens.dim(1)?;
        let x = self.hidden(tokens, cache)?;
        self.output
            .forward(&x.narrow(1, from, seq - from)?.contiguous()?)
    }

    /// The final normalised hidden states, `[batch, seq, hidden]`.
    fn hidden(&self, tokens: &Tensor, cache: &mut Cache) -> candle_core::Result<Tensor> {
        let (b, seq) = tokens.dims2()?;
        let start = cache.len;
        if start + seq > self.config.context_length {
            candle_core::bail!(
                "{} tokens exceed the model's context length {}",
                start + seq,
                self.config.context_length
            );
        }
        let c = &self.config;
        let mask = if seq > 1 {
            let m: Vec<u8> = (0..seq)
                .flat_map(|i| (0..start + seq).map(move |j| u8::from(j > start + i)))
                .collect();
            Some(Tensor::from_vec(m, (seq, start + seq), tokens.device())?)
        } else {
            None
        };
        let cos = self.cos.narrow(0, start, seq)?;
        let sin = self.sin.narrow(0, start, seq)?;
        let neg_inf = Tensor::new(f32::NEG_INFINITY, tokens.device())?;
        let mut x = self.embedding.forward(tokens)?;
        for (layer, kv) in self.layers.iter().zip(cache.kv.iter_mut()) {
            let residual = &x;
            let h = layer.attn_norm.forward(&x)?;
            let q = layer
                .wq
                .forward(&h)?
                .reshape((b, seq, c.n_head, c.head_dim))?
                .transpose(1, 2)?
                .contiguous()?;
            let k = layer
                .wk
                .forward(&h)?
                .reshape((b, seq, c.n_kv_head, c.head_dim))?
                .transpose(1, 2)?
                .contiguous()?;
            let v = layer
                .wv
                .forward(&h)?
                .reshape((b, seq, c.n_kv_head, c.head_dim))?
                .transpose(1, 2)?
                .contiguous()?;
            let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?;
            let (k, v) = match kv.take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                None => (k, v),
            };
            *kv = Some((k.clone(), v.clone()));
            let groups = c.n_head / c.n_kv_head;
            let k = repeat_kv(&k, groups)?;
            let v = repeat_kv(&v, groups)?;
            let att = (q.matmul(&k.t()?)? / (c.head_dim as f64).sqrt())?;
            let att = match &mask {
                Some(m) => m
                    .broadcast_as(att.shape())?
                    .where_cond(&neg_inf.broadcast_as(att.shape())?, &att)?,
                None => att,
            };
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att
                .matmul(&v.contiguous()?)?
                .transpose(1, 2)?
                .reshape((b, seq, c.hidden))?;
            let x1 = (layer.wo.forward(&y)? + residual)?;
            let h = layer.ffn_norm.forward(&x1)?;
            let ff = (candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            x = (layer.down.forward(&ff)? + x1)?;
        }
        cache.len += seq;
        self.norm.forward(&x)
    }
}

fn repeat_kv(x: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    if n == 1 {
        return Ok(x.clone());
    }
    let (b, h, s, d) = x.dims4()?;
    x.unsqueeze(2)?
        .expand((b, h, n, s, d))?
        .reshape((b, h * n, s, d))
}

/// The index of the largest value of each row of `[rows, vocab]` logits.
pub fn argmax_rows(logits: &Tensor) -> candle_core::Result<Vec<u32>> {
    logits.argmax(D::Minus1)?.to_vec1::<u32>()
}
