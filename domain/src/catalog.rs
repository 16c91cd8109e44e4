//! The workload catalogue: which workloads, ops, data types and quantization
//! formats exist, and the facts about them that a submit-time check needs
//! (block sizes, which parameters an op takes). The agent implements them; the
//! controller validates against them without linking candle.

use crate::names::{hint, pick};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A workload compiled into the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// A single kernel microbenchmark (`matmul`, `qmatmul`, `softmax`, ...).
    Kernel,
    /// Quantize every weight of a model to a format; size and error.
    Quantize,
    /// Prefill a prompt and decode greedily; latency and throughput.
    Generate,
    /// Perplexity, and KL divergence / top-1 agreement against a reference.
    Eval,
    /// A load test of an inference engine under concurrency: latency,
    /// throughput and goodput at an SLO.
    Serve,
}

impl Workload {
    /// Every workload.
    pub const ALL: [Workload; 5] = [
        Workload::Kernel,
        Workload::Quantize,
        Workload::Generate,
        Workload::Eval,
        Workload::Serve,
    ];

    /// The workload's name in specs and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Kernel => "kernel",
            Workload::Quantize => "quantize",
            Workload::Generate => "generate",
            Workload::Eval => "eval",
            Workload::Serve => "serve",
        }
    }

    /// The metric a comparison of this workload's results shows by default.
    pub fn primary_metric(self) -> &'static str {
        match self {
            Workload::Kernel => crate::metrics::GFLOP_PER_S,
            Workload::Quantize => crate::metrics::RMSE,
            Workload::Generate => crate::metrics::DECODE_TOKENS_PER_S,
            Workload::Eval => crate::metrics::KL_MEAN,
            Workload::Serve => crate::metrics::OUTPUT_TOKENS_PER_S,
        }
    }
}

crate::deserialize_from_str!(Workload);

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        pick(s, &Workload::ALL, Workload::name).map_err(|near| {
            format!(
                "unknown workload `{s}`, expected one of: kernel, quantize, generate, eval, serve{}",
                hint(near)
            )
        })
    }
}

/// The capability a device must advertise to run a configuration of a workload:
/// `kernel/<op>` for kernels, `serve/<engine>` for serve, the workload's
/// name for the others.
pub fn capability(workload: &str, params: &crate::params::Params) -> String {
    if workload == Workload::Serve.name() {
        let engine = params
            .get("engine")
            .and_then(|v| v.to_string().parse::<crate::serve::Engine>().ok())
            .unwrap_or(crate::serve::Engine::Candle);
        engine.capability()
    } else if workload == Workload::Kernel.name() {
        let op = params.get("op").map(|v| v.to_string()).unwrap_or_default();
        match params.get("variant") {
            Some(v) => format!("{workload}/{op}/{v}"),
            None => format!("{workload}/{op}"),
        }
    } else {
        workload.to_owned()
    }
}

/// A kernel op of the `kernel` workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelOp {
    /// Dense `x[m,k] @ w[n,k]^T` in `dtype`.
    Matmul,
    /// `x[m,k]` (f32) times a weight `w[n,k]` quantized to a GGML `format`.
    Qmatmul,
    /// Softmax over the last dimension of `x[rows,cols]`.
    Softmax,
    /// RMS normalisation of `x[rows,cols]` over the last dimension, with a weight.
    Rmsnorm,
    /// Rotary embedding (interleaved, as llama GGUF models use) of
    /// `x[batch,heads,seq,head_dim]`.
    Rope,
    /// Causal scaled-dot-product attention over `q,k,v[batch,heads,seq,head_dim]`.
    Attention,
}

impl KernelOp {
    /// Every op, in catalogue order.
    pub const ALL: [KernelOp; 6] = [
        KernelOp::Matmul,
        KernelOp::Qmatmul,
        KernelOp::Softmax,
        KernelOp::Rmsnorm,
        KernelOp::Rope,
        KernelOp::Attention,
    ];

    /// The op's name.
    pub fn name(self) -> &'static str {
        match self {
            KernelOp::Matmul => "matmul",
            KernelOp::Qmatmul => "qmatmul",
            KernelOp::Softmax => "softmax",
            KernelOp::Rmsnorm => "rmsnorm",
            KernelOp::Rope => "rope",
            KernelOp::Attention => "attention",
        }
    }

    /// The capability string an agent advertises for this op (`kernel/matmul`).
    pub fn capability(self) -> String {
        format!("kernel/{}", self.name())
    }

    /// What its `shape` lists, in order.
    pub fn shape_dims(self) -> &'static [&'static str] {
        match self {
            KernelOp::Matmul | KernelOp::Qmatmul => &["m", "n", "k"],
            KernelOp::Softmax | KernelOp::Rmsnorm => &["rows", "cols"],
            KernelOp::Rope | KernelOp::Attention => &["batch", "heads", "seq", "head_dim"],
        }
    }

    /// Whether the op takes a `variant` (fused kernel or naive composition).
    pub fn has_variants(self) -> bool {
        !matches!(self, KernelOp::Matmul | KernelOp::Qmatmul)
    }

    /// The variant used when none is given.
    pub fn default_variant(self) -> Variant {
        match self {
            KernelOp::Attention => Variant::Naive,
            _ => Variant::Fused,
        }
    }
}

crate::deserialize_from_str!(KernelOp);

impl FromStr for KernelOp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        pick(s, &KernelOp::ALL, KernelOp::name).map_err(|near| {
            format!(
                "unknown op `{s}`, expected one of: matmul, qmatmul, softmax, rmsnorm, rope, attention{}",
                hint(near)
            )
        })
    }
}

/// How an op is computed: candle's fused kernel, or the same maths composed
/// from elementary tensor ops (what a model without the kernel would run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Fused,
    Naive,
}

impl Variant {
    /// The variant's name.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Fused => "fused",
            Variant::Naive => "naive",
        }
    }
}

crate::deserialize_from_str!(Variant);

impl FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        pick(s, &[Variant::Fused, Variant::Naive], Variant::name).map_err(|near| {
            format!(
                "unknown variant `{s}`, expected fused or naive{}",
                hint(near)
            )
        })
    }
}

/// A dense floating-point type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    Bf16,
}

impl DType {
    /// Every dtype.
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::Bf16];

    /// The dtype's name.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
        }
    }
}

crate::deserialize_from_str!(DType);

impl FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        pick(s, &DType::ALL, DType::name).map_err(|near| {
            format!(
                "unknown dtype `{s}`, expected one of: f32, f16, bf16{}",
                hint(near)
            )
        })
    }
}

/// A GGML quantization format, named as candle names its `GgmlDType`s, lower case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantFormat {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2k,
    Q3k,
    Q4k,
    Q5k,
    Q6k,
    Q8k,
}

impl QuantFormat {
    /// Every format, in catalogue order.
    pub const ALL: [QuantFormat; 11] = [
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q5_1,
        QuantFormat::Q8_0,
        QuantFormat::Q2k,
        QuantFormat::Q3k,
        QuantFormat::Q4k,
        QuantFormat::Q5k,
        QuantFormat::Q6k,
        QuantFormat::Q8k,
    ];

    /// The format's name (`q4_0`, `q4k`).
    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Q4_0 => "q4_0",
            QuantFormat::Q4_1 => "q4_1",
            QuantFormat::Q5_0 => "q5_0",
            QuantFormat::Q5_1 => "q5_1",
            QuantFormat::Q8_0 => "q8_0",
            QuantFormat::Q2k => "q2k",
            QuantFormat::Q3k => "q3k",
            QuantFormat::Q4k => "q4k",
            QuantFormat::Q5k => "q5k",
            QuantFormat::Q6k => "q6k",
            QuantFormat::Q8k => "q8k",
        }
    }

    /// Weights per quantization block: a quantized dimension must be a multiple of it.
    pub fn block_size(self) -> u64 {
        match self {
            QuantFormat::Q4_0
            | QuantFormat::Q4_1
            | QuantFormat::Q5_0
            | QuantFormat::Q5_1
            | QuantFormat::Q8_0 => 32,
            _ => 256,
        }
    }
}

crate::deserialize_from_str!(QuantFormat);

impl FromStr for QuantFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        pick(s, &QuantFormat::ALL, QuantFormat::name).map_err(|near| {
            let names: Vec<&str> = QuantFormat::ALL.iter().map(|f| f.name()).collect();
            format!(
                "unknown format `{s}`, expected one of: {}{}",
                names.join(", "),
                hint(near)
            )
        })
    }
}

/// A kernel's sizes: `m,n,k` for a matmul (`x[m,k] @ w[n,k]^T -> y[m,n]`),
/// `rows,cols` for softmax / rmsnorm, `batch,heads,seq,head_dim` for rope /
/// attention (the op says which, [`KernelOp::shape_dims`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [u64; 4],
    rank: usize,
}

/// Largest single dimension accepted, to keep a typo from asking for terabytes.
pub const MAX_DIM: u64 = 1 << 20;
/// Largest operand accepted (elements of the largest tensor the op touches).
pub const MAX_ELEMENTS: u64 = 1 << 30;

impl Shape {
    /// The sizes, in order.
    pub fn dims(&self) -> &[u64] {
        &self.dims[..self.rank]
    }

    /// A matmul shape.
    pub fn mnk(m: u64, n: u64, k: u64) -> Shape {
        Shape {
            dims: [m, n, k, 0],
            rank: 3,
        }
    }

    /// `m`, `n`, `k` of a matmul shape (the first three sizes).
    pub fn m(&self) -> u64 {
        self.dims[0]
    }
    /// See [`Shape::m`].
    pub fn n(&self) -> u64 {
        self.dims[1]
    }
    /// See [`Shape::m`]; the reduced dimension, which a quantized weight's blocks divide.
    pub fn k(&self) -> u64 {
        self.dims[2]
    }

    /// Floating-point operations of one matmul of this shape (2·m·n·k).
    pub fn flops(&self) -> f64 {
        2.0 * self.m() as f64 * self.n() as f64 * self.k() as f64
    }

    /// Checks the shape against what `op` takes.
    pub fn check_for(&self, op: KernelOp) -> Result<(), String> {
        let names = op.shape_dims();
        if self.rank != names.len() {
            return Err(format!(
                "shape `{self}`: op {} takes `{}`",
                op.name(),
                names.join(",")
            ));
        }
        // Products of sizes up to 2^20 overflow u64 past three factors:
        // every product is checked (None: too large).
        let d = |i: usize| self.dims[i];
        let prod = |idx: &[usize]| {
            idx.iter()
                .try_fold(1u64, |acc, &i| acc.checked_mul(self.dims[i]))
        };
        let largest = match op {
            KernelOp::Matmul | KernelOp::Qmatmul => [prod(&[0, 2]), prod(&[1, 2]), prod(&[0, 1])]
                .into_iter()
                .try_fold(0u64, |m, p| p.map(|p| m.max(p))),
            KernelOp::Softmax | KernelOp::Rmsnorm => prod(&[0, 1]),
            KernelOp::Rope => prod(&[0, 1, 2, 3]),
            // The score matrix batch x heads x seq x seq.
            KernelOp::Attention => prod(&[0, 1, 2]).and_then(|p| p.checked_mul(d(2).max(d(3)))),
        };
        if largest.is_none_or(|l| l > MAX_ELEMENTS) {
            return Err(format!(
                "shape `{self}`: a tensor of {} elements exceeds the limit of {MAX_ELEMENTS}",
                largest.map_or_else(|| "more than 2^64".to_owned(), |l| l.to_string())
            ));
        }
        if matches!(op, KernelOp::Rope) && d(3) % 2 != 0 {
            return Err(format!("shape `{self}`: rope needs an even head_dim"));
        }
        Ok(())
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.dims().iter().map(|d| d.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for Shape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if !(2..=4).contains(&parts.len()) {
            return Err(format!(
                "shape `{s}` must be 2 to 4 comma-separated sizes (`m,n,k` for a matmul)"
            ));
        }
        let mut dims = [0u64; 4];
        for (i, (slot, part)) in dims.iter_mut().zip(parts.iter()).enumerate() {
            let v: u64 = part.parse().map_err(|_| {
                format!(
                    "shape `{s}`: size {} = `{part}` is not a positive integer",
                    i + 1
                )
            })?;
            if v == 0 || v > MAX_DIM {
                return Err(format!(
                    "shape `{s}`: size {} = {v} must be between 1 and {MAX_DIM}",
                    i + 1
                ));
            }
            *slot = v;
        }
        let shape = Shape {
            dims,
            rank: parts.len(),
        };
        let elements = shape
            .dims()
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d));
        if shape.rank != 3 && elements.is_none_or(|e| e > MAX_ELEMENTS) {
            return Err(format!(
                "shape `{s}`: {} elements exceeds the limit of {MAX_ELEMENTS}",
                elements.map_or_else(|| "more than 2^64".to_owned(), |e| e.to_string())
            ));
        }
        if shape.rank == 3 {
            shape.check_for(KernelOp::Matmul)?;
        }
        Ok(shape)
    }
}

impl Serialize for Shape {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parameters that choose *how* a trial computes (the setup being compared);
/// every other parameter says *what* it computes (the problem).
pub const SETUP_PARAMS: &[&str] = &[
    "op",
    "variant",
    "dtype",
    "format",
    "threads",
    // `serve`: how a load is served (the engine, its batch) and the load
    // offered are the setup; the model and request sizes the problem.
    "engine",
    "max_batch",
    "concurrency",
    "request_rate",
];

/// Order in which parameters are shown: the ones that define the configuration first.
pub fn param_rank(name: &str) -> usize {
    const ORDER: &[&str] = &[
        "model",
        "op",
        "variant",
        "dtype",
        "format",
        "shape",
        "prompt_tokens",
        "new_tokens",
        "batch",
        "context",
        "chunks",
        "reference",
        "engine",
        "concurrency",
        "request_rate",
        "input_tokens",
        "output_tokens",
        "max_batch",
        "threads",
    ];
    ORDER.iter().position(|n| *n == name).unwrap_or(ORDER.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_products_are_checked_not_wrapped() {
        let max = MAX_DIM.to_string();
        let four = [max.as_str(); 4].join(",");
        // 2^80 elements: refused in debug and release alike (no overflow panic, no wrap to 0).
        let e = four.parse::<Shape>().unwrap_err();
        assert!(e.contains("exceeds the limit"), "{e}");
        let rope: Shape = "1,2,4,8".parse().unwrap();
        rope.check_for(KernelOp::Rope).unwrap();
        let attention = Shape {
            dims: [MAX_DIM; 4],
            rank: 4,
        };
        assert!(attention.check_for(KernelOp::Attention).is_err());
        assert!(attention.check_for(KernelOp::Rope).is_err());
    }
}
