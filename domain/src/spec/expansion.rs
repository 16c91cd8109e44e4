//! Spaces crossed into configurations: counted first (checked), then built and checked one by one.

use super::space::{KernelSpace, ModelSpace, OneOrMany, Space};
use super::{SpecError, SweepSpec, Target, MAX_CONFIGS};
use crate::catalog::{DType, KernelOp, Variant, Workload};
use crate::models::{EvalTrial, GenerateTrial, QuantizeTrial, ROLE};
use crate::params::{ParamValue, Params};
use crate::serve::{ServeTrial, Slo};

/// Expands the spec's space into concrete configurations, checking each, with
/// the `when` of the variant each came from.
pub fn expand(spec: &SweepSpec, source: &str) -> Result<Vec<(Params, Option<Target>)>, SpecError> {
    let variants = spaces(spec);
    // Count first (checked), build after: a space of 10^12 configurations is
    // refused without allocating one.
    count_spaces(&variants)?;
    let mut out = Vec::new();
    let mut conditions = Vec::new();
    for (path, space) in variants {
        let when = match &space {
            Space::Kernel(k) => k.when.clone(),
            Space::Model(m) => m.1.clone(),
        };
        match space {
            Space::Kernel(k) => expand_kernel(&k, &path, source, &mut out)?,
            Space::Model(m) => expand_model(
                spec.workload,
                spec.slo.as_ref(),
                &m,
                &path,
                source,
                &mut out,
            )?,
        }
        conditions.resize(out.len(), when);
        if out.len() > MAX_CONFIGS {
            return Err(SpecError {
                path,
                line: None,
                message: format!("the sweep expands into more than {MAX_CONFIGS} configurations"),
                also: Vec::new(),
            });
        }
    }
    Ok(out.into_iter().zip(conditions).collect())
}

/// The spaces a spec crosses, with their paths: `params`, or each variant
/// merged over it.
pub(super) fn spaces(spec: &SweepSpec) -> Vec<(String, Space)> {
    if spec.variants.is_empty() {
        vec![("params".to_owned(), spec.params.clone())]
    } else {
        spec.variants
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("variants[{i}]"), merge(&spec.params, v)))
            .collect()
    }
}

/// How many configurations a spec's spaces expand into, counted with
/// checked arithmetic; more than [`MAX_CONFIGS`] is an error naming the space.
pub(super) fn count_spaces(variants: &[(String, Space)]) -> Result<u64, SpecError> {
    let mut count: u64 = 0;
    for (path, space) in variants {
        let n = match space {
            Space::Kernel(k) => count_kernel(k),
            Space::Model(m) => count_model(m),
        };
        count = n
            .and_then(|n| count.checked_add(n))
            .filter(|&c| c <= MAX_CONFIGS as u64)
            .ok_or_else(|| SpecError {
                path: path.clone(),
                line: None,
                message: format!(
                    "the sweep expands into more than {MAX_CONFIGS} configurations{}",
                    n.map(|n| format!(" ({n} from {path})")).unwrap_or_default()
                ),
                also: Vec::new(),
            })?;
    }
    Ok(count)
}

/// How many configurations a kernel space crosses into; `None` past `u64`.
fn count_kernel(k: &KernelSpace) -> Option<u64> {
    fn len<T>(v: &Option<OneOrMany<T>>) -> u64 {
        v.as_ref().map_or(1, |l| l.0.len() as u64)
    }
    let Some(OneOrMany(ops)) = &k.op else {
        return Some(0);
    };
    let mut total: u64 = 0;
    for op in ops {
        let (dtypes, formats) = match op {
            KernelOp::Qmatmul => (1, len(&k.format)),
            _ => (len(&k.dtype), 1),
        };
        let variants = if op.has_variants() {
            len(&k.variant)
        } else {
            1
        };
        let n = [dtypes, formats, len(&k.shape), len(&k.threads)]
            .into_iter()
            .try_fold(variants, u64::checked_mul)?;
        total = total.checked_add(n)?;
    }
    Some(total)
}

/// How many configurations a model space crosses into; `None` past `u64`.
fn count_model(m: &ModelSpace) -> Option<u64> {
    m.0.values()
        .try_fold(1u64, |n, v| n.checked_mul(v.0.len() as u64))
}

fn merge(base: &Space, over: &Space) -> Space {
    match (base, over) {
        (Space::Kernel(b), Space::Kernel(o)) => Space::Kernel(KernelSpace {
            op: o.op.clone().or_else(|| b.op.clone()),
            dtype: o.dtype.clone().or_else(|| b.dtype.clone()),
            format: o.format.clone().or_else(|| b.format.clone()),
            shape: o.shape.clone().or_else(|| b.shape.clone()),
            threads: o.threads.clone().or_else(|| b.threads.clone()),
            variant: o.variant.clone().or_else(|| b.variant.clone()),
            when: o.when.clone(),
        }),
        (Space::Model(b), Space::Model(o)) => {
            let mut m = b.0.clone();
            m.extend(o.0.iter().map(|(k, v)| (k.clone(), v.clone())));
            Space::Model(ModelSpace(m, o.1.clone()))
        }
        // The visitor builds every space of a spec for the same workload.
        (_, over) => over.clone(),
    }
}

/// Crosses a model space into configurations and checks each with the
/// workload's typed trial; an error names the parameter's path and line.
fn expand_model(
    workload: Workload,
    slo: Option<&Slo>,
    m: &ModelSpace,
    path: &str,
    source: &str,
    out: &mut Vec<Params>,
) -> Result<(), SpecError> {
    let check = |p: &Params| -> Result<(), String> {
        match workload {
            Workload::Quantize => QuantizeTrial::from_params(p).map(drop),
            Workload::Generate => GenerateTrial::from_params(p).map(drop),
            Workload::Eval => {
                let t = EvalTrial::from_params(p)?;
                if t.is_reference {
                    return Err(format!(
                        "parameter `{ROLE}` is set by the controller, not in a spec"
                    ));
                }
                Ok(())
            }
            Workload::Serve => ServeTrial::from_params(p).map(drop),
            Workload::Kernel => Ok(()),
        }
    };
    let known = match workload {
        Workload::Quantize => QuantizeTrial::PARAMS,
        Workload::Generate => GenerateTrial::PARAMS,
        Workload::Eval => &EvalTrial::PARAMS[..EvalTrial::PARAMS.len() - 1],
        Workload::Serve => ServeTrial::spec_params(),
        Workload::Kernel => &[],
    };
    if let Some(k) = m.0.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(SpecError::at(
            source,
            &format!("{path}.{k}"),
            k,
            None,
            format!(
                "unknown parameter `{k}` for workload {}; it takes: {}",
                workload.name(),
                known.join(", ")
            ),
        ));
    }
    let mut keys: Vec<&String> = m.0.keys().collect();
    keys.sort_by_key(|k| (crate::catalog::param_rank(k), (*k).clone()));
    // The sweep's SLO rides on every configuration (it varies nothing).
    let mut configs = vec![slo.map(Slo::params).unwrap_or_default()];
    for key in keys {
        let values = &m.0[key].0;
        configs = configs
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.insert(key.clone(), v.clone());
                    c
                })
            })
            .collect();
        if configs.len() > MAX_CONFIGS {
            break;
        }
    }
    for c in configs {
        if let Err(message) = check(&c) {
            // Point at the parameter the message names, if any: one the
            // configuration has, else (a missing one) the first it quotes.
            let field = c
                .keys()
                .find(|k| message.contains(&format!("`{k}`")))
                .cloned()
                .or_else(|| {
                    let quoted = message.split('`').nth(1)?;
                    known.contains(&quoted).then(|| quoted.to_owned())
                })
                .unwrap_or_else(|| "params".to_owned());
            let value = c.get(&field).map(|v| v.to_string());
            return Err(SpecError::at(
                source,
                &format!("{path}.{field}"),
                &field,
                value.as_deref(),
                message,
            ));
        }
        out.push(c);
    }
    Ok(())
}

fn list<T: Clone>(v: &Option<OneOrMany<T>>) -> Vec<Option<T>> {
    match v {
        Some(OneOrMany(items)) => items.iter().cloned().map(Some).collect(),
        None => vec![None],
    }
}

fn expand_kernel(
    k: &KernelSpace,
    path: &str,
    source: &str,
    out: &mut Vec<Params>,
) -> Result<(), SpecError> {
    let err = |field: &str, value: Option<&str>, message: String| {
        SpecError::at(source, &format!("{path}.{field}"), field, value, message)
    };
    let Some(OneOrMany(ops)) = &k.op else {
        return Err(err(
            "op",
            None,
            "missing: give `op:` (matmul, qmatmul, softmax, rmsnorm, rope or attention)".to_owned(),
        ));
    };
    if k.shape.is_none() {
        return Err(err(
            "shape",
            None,
            "missing: give at least one shape (`m,n,k` for a matmul)".to_owned(),
        ));
    }
    for op in ops {
        match op {
            KernelOp::Qmatmul if k.dtype.is_some() => {
                return Err(err(
                    "dtype",
                    None,
                    "op qmatmul multiplies f32 activations by a quantized weight: it takes `format`, not `dtype`".to_owned(),
                ))
            }
            KernelOp::Qmatmul if k.format.is_none() => {
                return Err(err(
                    "format",
                    None,
                    "missing: op qmatmul needs a quantization `format` (q4_0, q8_0, q4k, ...)"
                        .to_owned(),
                ))
            }
            KernelOp::Qmatmul => {}
            _ if k.format.is_some() => {
                return Err(err(
                    "format",
                    None,
                    format!(
                        "op {} takes `dtype`, not `format` (a quantized weight is op qmatmul)",
                        op.name()
                    ),
                ))
            }
            _ => {}
        }
        if !op.has_variants() && k.variant.is_some() {
            return Err(err(
                "variant",
                None,
                format!(
                    "op {} has no variants (softmax, rmsnorm, rope and attention do)",
                    op.name()
                ),
            ));
        }
        let dtypes = match op {
            KernelOp::Qmatmul => vec![None],
            _ => list(&k.dtype.clone().or(Some(OneOrMany(vec![DType::F32])))),
        };
        let formats = match op {
            KernelOp::Qmatmul => list(&k.format),
            _ => vec![None],
        };
        let variants: Vec<Option<Variant>> = if op.has_variants() {
            list(
                &k.variant
                    .clone()
                    .or(Some(OneOrMany(vec![op.default_variant()]))),
            )
        } else {
            vec![None]
        };
        for variant in &variants {
            for dtype in &dtypes {
                for format in &formats {
                    for shape in list(&k.shape).into_iter().flatten() {
                        let s = shape.to_string();
                        shape
                            .check_for(*op)
                            .map_err(|m| err("shape", Some(&s), m))?;
                        if let Some(f) = format {
                            if !shape.k().is_multiple_of(f.block_size()) {
                                return Err(err(
                                    "shape",
                                    Some(&s),
                                    format!(
                                        "shape `{s}`: k = {} is not a multiple of {}'s block size {}",
                                        shape.k(),
                                        f.name(),
                                        f.block_size()
                                    ),
                                ));
                            }
                        }
                        for threads in list(&k.threads) {
                            let mut p = Params::new();
                            p.insert("op".into(), ParamValue::Text(op.name().into()));
                            if let Some(v) = variant {
                                p.insert("variant".into(), ParamValue::Text(v.name().into()));
                            }
                            if let Some(d) = dtype {
                                p.insert("dtype".into(), ParamValue::Text(d.name().into()));
                            }
                            if let Some(f) = format {
                                p.insert("format".into(), ParamValue::Text(f.name().into()));
                            }
                            p.insert("shape".into(), ParamValue::Text(s.clone()));
                            if let Some(t) = threads {
                                p.insert("threads".into(), ParamValue::Int(t.0 as i64));
                            }
                            out.push(p);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
