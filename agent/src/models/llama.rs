//! The llama-family forward pass over GGUF-named tensors of any GGML type.
//!
//! It follows candle-transformers' `quantized_llama` (interleaved rotary
//! embedding as GGUF stores q/k, grouped-query attention, tied output
//! embedding when `output.weight` is absent), with two differences the
//! workloads need: the weights are shared (`&self`) while the KV cache is the
//! caller's ([`Cache`]), and the forward pass can return the logits of every
//! position (perplexity and KL need them), not just the last.
//!
//! For serving, [`SeqCache`] is one sequence's preallocated cache and
//! [`Llama::decode_batch`] runs one decode step of sequences at different
//! positions together (the continuous-batching engine,
//! `workloads::batcher`, drives them).

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

/// One sequence's key/value cache for the continuous-batching engine,
/// preallocated: per layer a K and a V buffer `[1, n_kv_head, capacity,
/// head_dim]` that each step writes into in place (no concatenation, no
/// reallocation), of which the first `len` positions are used.
pub struct SeqCache {
    kv: Vec<(Tensor, Tensor)>,
    len: usize,
    capacity: usize,
}

impl SeqCache {
    /// Tokens already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache holds no token yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens the cache has room for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Writes `k`, `v` (`[1, n_kv_head, seq, head_dim]`) of layer `layer` at
    /// position `at`; returns the keys and values of positions `0..at + seq`
    /// (views of the buffers).
    fn write(
        &self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        at: usize,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (kb, vb) = self
            .kv
            .get(layer)
            .ok_or_else(|| candle_core::Error::Msg(format!("the cache has no layer {layer}")))?;
        let seq = k.dim(2)?;
        if at + seq > self.capacity {
            candle_core::bail!(
                "{} tokens exceed the sequence cache's capacity {}",
                at + seq,
                self.capacity
            );
        }
        kb.slice_set(&k.contiguous()?, 2, at)?;
        vb.slice_set(&v.contiguous()?, 2, at)?;
        Ok((kb.narrow(2, 0, at + seq)?, vb.narrow(2, 0, at + seq)?))
    }
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

    /// The device the model's tensors live on.
    pub fn device(&self) -> &Device {
        self.cos.device()
    }

    /// An empty preallocated cache for one sequence of up to `capacity`
    /// tokens (at most the context length).
    pub fn seq_cache(&self, capacity: usize) -> candle_core::Result<SeqCache> {
        let c = &self.config;
        if capacity == 0 || capacity > c.context_length {
            candle_core::bail!(
                "a sequence cache of {capacity} tokens: it must hold 1 to {} (the context length)",
                c.context_length
            );
        }
        let shape = (1, c.n_kv_head, capacity, c.head_dim);
        let kv = (0..self.layers.len())
            .map(|_| {
                Ok((
                    Tensor::zeros(shape, DType::F32, self.device())?,
                    Tensor::zeros(shape, DType::F32, self.device())?,
                ))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(SeqCache {
            kv,
            len: 0,
            capacity,
        })
    }

    /// Runs one sequence's `tokens` after what `cache` holds (a prompt's
    /// prefill); returns the last position's logits, `[vocab]`.
    pub fn prefill_seq(&self, tokens: &[u32], cache: &mut SeqCache) -> candle_core::Result<Tensor> {
        let seq = tokens.len();
        let start = cache.len;
        if seq == 0 {
            candle_core::bail!("prefill_seq: no tokens to run");
        }
        if start + seq > cache.capacity {
            candle_core::bail!(
                "{} tokens exceed the sequence cache's capacity {}",
                start + seq,
                cache.capacity
            );
        }
        let c = &self.config;
        let device = self.device();
        let tokens = Tensor::new(tokens, device)?.unsqueeze(0)?;
        let mask = if seq > 1 {
            let m: Vec<u8> = (0..seq)
                .flat_map(|i| (0..start + seq).map(move |j| u8::from(j > start + i)))
                .collect();
            Some(Tensor::from_vec(m, (seq, start + seq), device)?)
        } else {
            None
        };
        let cos = self.cos.narrow(0, start, seq)?;
        let sin = self.sin.narrow(0, start, seq)?;
        let neg_inf = Tensor::new(f32::NEG_INFINITY, device)?;
        let mut x = self.embedding.forward(&tokens)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let residual = &x;
            let h = layer.attn_norm.forward(&x)?;
            let heads = |w: &QMatMul, n: usize| -> candle_core::Result<Tensor> {
                w.forward(&h)?
                    .reshape((1, seq, n, c.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = heads(&layer.wq, c.n_head)?;
            let k = heads(&layer.wk, c.n_kv_head)?;
            let v = heads(&layer.wv, c.n_kv_head)?;
            let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?;
            let (k, v) = cache.write(l, &k, &v, start)?;
            let y = self.attend(&q, &k, &v, mask.as_ref(), &neg_inf)?;
            let x1 = (layer.wo.forward(&y)? + residual)?;
            let h = layer.ffn_norm.forward(&x1)?;
            let ff = (candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            x = (layer.down.forward(&ff)? + x1)?;
        }
        cache.len += seq;
        let x = self.norm.forward(&x)?;
        self.output
            .forward(&x.i((.., seq - 1, ..))?.contiguous()?)?
            .squeeze(0)
    }

    /// One decode step of `tokens.len()` sequences, each at its own position:
    /// `tokens[i]` runs after what `caches[i]` holds. The embedding, norms and
    /// every projection run batched (`[B, 1, hidden]`: each weight matrix is
    /// read once for the whole batch), rotary embedding at each sequence's
    /// own position; attention runs per sequence against its own cache.
    /// Returns the logits, `[B, vocab]`.
    pub fn decode_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut SeqCache],
    ) -> candle_core::Result<Tensor> {
        let b = tokens.len();
        if b == 0 || b != caches.len() {
            candle_core::bail!(
                "decode_batch: {b} tokens for {} caches (one token per cache, at least one)",
                caches.len()
            );
        }
        if let Some((i, full)) = caches.iter().enumerate().find(|(_, s)| s.len >= s.capacity) {
            candle_core::bail!(
                "decode_batch: sequence {i}'s cache is full ({} tokens)",
                full.capacity
            );
        }
        let c = &self.config;
        let device = self.device();
        let positions: Vec<u32> = caches.iter().map(|s| s.len as u32).collect();
        let positions = Tensor::new(positions.as_slice(), device)?;
        let half = c.head_dim / 2;
        let cos = self
            .cos
            .index_select(&positions, 0)?
            .reshape((b, 1, half))?;
        let sin = self
            .sin
            .index_select(&positions, 0)?
            .reshape((b, 1, half))?;
        let neg_inf = Tensor::new(f32::NEG_INFINITY, device)?;
        let mut x = self
            .embedding
            .forward(&Tensor::new(tokens, device)?.unsqueeze(1)?)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let residual = &x;
            let h = layer.attn_norm.forward(&x)?;
            let heads = |w: &QMatMul, n: usize| -> candle_core::Result<Tensor> {
                w.forward(&h)?
                    .reshape((b, 1, n, c.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = heads(&layer.wq, c.n_head)?;
            let k = heads(&layer.wk, c.n_kv_head)?;
            let v = heads(&layer.wv, c.n_kv_head)?;
            let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?;
            let ys = caches
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let (ks, vs) = s.write(l, &k.narrow(0, i, 1)?, &v.narrow(0, i, 1)?, s.len)?;
                    self.attend(&q.narrow(0, i, 1)?, &ks, &vs, None, &neg_inf)
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            let y = Tensor::cat(&ys, 0)?;
            let x1 = (layer.wo.forward(&y)? + residual)?;
            let h = layer.ffn_norm.forward(&x1)?;
            let ff = (candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            x = (layer.down.forward(&ff)? + x1)?;
        }
        for s in caches.iter_mut() {
            s.len += 1;
        }
        let x = self.norm.forward(&x)?;
        self.output.forward(&x.i((.., 0, ..))?.contiguous()?)
    }

    /// Grouped-query attention of `q` (`[b, n_head, seq, head_dim]`) over all
    /// of `k`, `v` (`[b, n_kv_head, kv_len, head_dim]`), with an optional
    /// `[seq, kv_len]` mask (1 = hidden); returns `[b, seq, hidden]`.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        neg_inf: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (b, _, seq, _) = q.dims4()?;
        let groups = c.n_head / c.n_kv_head;
        let k = repeat_kv(k, groups)?;
        let v = repeat_kv(v, groups)?;
        let att = (q.matmul(&k.t()?)? / (c.head_dim as f64).sqrt())?;
        let att = match mask {
            Some(m) => m
                .broadcast_as(att.shape())?
                .where_cond(&neg_inf.broadcast_as(att.shape())?, &att)?,
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        att.matmul(&v.contiguous()?)?
            .transpose(1, 2)?
            .reshape((b, seq, c.hidden))
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
            let y = self.attend(&q, &k, &v, mask.as_ref(), &neg_inf)?;
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
        // A view of a sequence cache's buffer is not contiguous.
        return x.contiguous();
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
