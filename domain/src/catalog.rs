//! The workload catalogue: which workloads, ops, data types and quantization
//! formats exist, and the facts about them that a submit-time check needs
//! (block sizes, which parameters an op takes). The agent implements them; the
//! controller validates against them without linking candle.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A workload compiled into the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// A single kernel microbenchmark (`matmul`, `qmatmul`).
    Kernel,
}

impl Workload {
    /// The workload's name in specs and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Kernel => "kernel",
        }
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kernel" => Ok(Workload::Kernel),
            other => Err(format!("unknown workload `{other}`, expected `kernel`")),
        }
    }
}

/// A kernel op of the `kernel` workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelOp {
    /// Dense `x[m,k] @ w[n,k]^T` in `dtype`.
    Matmul,
    /// `x[m,k]` (f32) times a weight `w[n,k]` quantized to a GGML `format`.
    Qmatmul,
}

impl KernelOp {
    /// Every op, in catalogue order.
    pub const ALL: [KernelOp; 2] = [KernelOp::Matmul, KernelOp::Qmatmul];

    /// The op's name.
    pub fn name(self) -> &'static str {
        match self {
            KernelOp::Matmul => "matmul",
            KernelOp::Qmatmul => "qmatmul",
        }
    }

    /// The capability string an agent advertises for this op (`kernel/matmul`).
    pub fn capability(self) -> String {
        format!("kernel/{}", self.name())
    }
}

impl FromStr for KernelOp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KernelOp::ALL
            .into_iter()
            .find(|op| op.name() == s)
            .ok_or_else(|| format!("unknown op `{s}`, expected one of: matmul, qmatmul"))
    }
}

/// A dense floating-point type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DType::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown dtype `{s}`, expected one of: f32, f16, bf16"))
    }
}

/// A GGML quantization format, named as candle names its `GgmlDType`s, lower case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl FromStr for QuantFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QuantFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = QuantFormat::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "unknown format `{s}`, expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

/// A matmul shape `m,n,k`: `x[m,k] @ w[n,k]^T -> y[m,n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub m: u64,
    pub n: u64,
    pub k: u64,
}

/// Largest single dimension accepted, to keep a typo from asking for terabytes.
pub const MAX_DIM: u64 = 1 << 20;
/// Largest operand accepted (elements of the largest of x, w, y).
pub const MAX_ELEMENTS: u64 = 1 << 30;

impl Shape {
    /// Floating-point operations of one matmul of this shape (2·m·n·k).
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{}", self.m, self.n, self.k)
    }
}

impl FromStr for Shape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts.len() != 3 {
            return Err(format!(
                "shape `{s}` must be three comma-separated sizes `m,n,k`"
            ));
        }
        let mut dims = [0u64; 3];
        for (slot, (part, name)) in dims.iter_mut().zip(parts.iter().zip(["m", "n", "k"])) {
            let v: u64 = part
                .parse()
                .map_err(|_| format!("shape `{s}`: {name} = `{part}` is not a positive integer"))?;
            if v == 0 || v > MAX_DIM {
                return Err(format!(
                    "shape `{s}`: {name} = {v} must be between 1 and {MAX_DIM}"
                ));
            }
            *slot = v;
        }
        let shape = Shape {
            m: dims[0],
            n: dims[1],
            k: dims[2],
        };
        let largest = (shape.m * shape.k)
            .max(shape.n * shape.k)
            .max(shape.m * shape.n);
        if largest > MAX_ELEMENTS {
            return Err(format!(
                "shape `{s}`: an operand of {largest} elements exceeds the limit of {MAX_ELEMENTS}"
            ));
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
pub const SETUP_PARAMS: &[&str] = &["op", "dtype", "format", "threads"];

/// Order in which parameters are shown: the ones that define the configuration first.
pub fn param_rank(name: &str) -> usize {
    const ORDER: &[&str] = &["op", "dtype", "format", "shape", "threads"];
    ORDER.iter().position(|n| *n == name).unwrap_or(ORDER.len())
}
