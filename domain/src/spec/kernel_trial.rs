//! A `kernel` trial's configuration, typed and checked: [`KernelTrial`].

use crate::catalog::{DType, KernelOp, QuantFormat, Shape, Variant};
use crate::params::{ParamValue, Params};

/// A `kernel` trial's configuration, typed: what the agent runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KernelTrial {
    pub op: KernelOp,
    /// Fused kernel or naive composition (ops with variants).
    pub variant: Variant,
    /// Data type for `matmul`.
    pub dtype: DType,
    /// Weight format for `qmatmul`.
    pub format: Option<QuantFormat>,
    pub shape: Shape,
    /// Requested threads; `None` means every logical core.
    pub threads: Option<u32>,
}

impl KernelTrial {
    /// Reads and checks a trial's parameters (the receiver validates what the wire carried).
    pub fn from_params(p: &Params) -> Result<Self, String> {
        let text = |name: &str| -> Result<Option<&str>, String> {
            match p.get(name) {
                None => Ok(None),
                Some(ParamValue::Text(s)) => Ok(Some(s)),
                Some(other) => Err(format!("parameter `{name}` = `{other}` must be text")),
            }
        };
        if let Some(unknown) = p.keys().find(|k| {
            !["op", "variant", "dtype", "format", "shape", "threads"].contains(&k.as_str())
        }) {
            return Err(format!("unknown parameter `{unknown}` for workload kernel"));
        }
        let op: KernelOp = text("op")?.ok_or("parameter `op` is missing")?.parse()?;
        let variant = match text("variant")? {
            Some(v) if op.has_variants() => v.parse()?,
            Some(_) => return Err(format!("op {} has no variants", op.name())),
            None => op.default_variant(),
        };
        let dtype = text("dtype")?
            .map(str::parse)
            .transpose()?
            .unwrap_or(DType::F32);
        let format: Option<QuantFormat> = text("format")?.map(str::parse).transpose()?;
        let shape: Shape = text("shape")?
            .ok_or("parameter `shape` is missing")?
            .parse()?;
        let threads = match p.get("threads") {
            None => None,
            Some(ParamValue::Int(t)) if (1..=1024).contains(t) => Some(*t as u32),
            Some(other) => return Err(format!("parameter `threads` = `{other}` must be 1..=1024")),
        };
        shape.check_for(op)?;
        if op == KernelOp::Qmatmul {
            let f = format.ok_or("op qmatmul needs parameter `format`")?;
            if !shape.k().is_multiple_of(f.block_size()) {
                return Err(format!(
                    "k = {} is not a multiple of {}'s block size {}",
                    shape.k(),
                    f.name(),
                    f.block_size()
                ));
            }
        }
        Ok(KernelTrial {
            op,
            variant,
            dtype,
            format,
            shape,
            threads,
        })
    }
}
