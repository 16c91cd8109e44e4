//! Quantizing a model's tensors to a format, in parallel across tensors, with
//! the error of each against the source weights.
//!
//! Which tensors change, as llama.cpp's `llama-quantize` decides it:
//! - one-dimensional tensors (norms) stay f32;
//! - a tensor whose rows are not a multiple of the format's block size falls
//!   back to a compatible type (q4k -> q5_0, q5k -> q5_1, q6k / q8k -> q8_0,
//!   q2k / q3k -> q4_0; f16 when even 32 does not divide the row).

use super::{ggml_name, Weights};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use rayon::prelude::*;
use serde::Serialize;

/// What happened to one tensor.
#[derive(Clone, Debug, Serialize)]
pub struct TensorReport {
    pub name: String,
    pub shape: Vec<usize>,
    /// Type it was stored in.
    pub from: String,
    /// Type it was quantized to (differs from the requested format on fallback).
    pub to: String,
    pub bytes: u64,
    pub rmse: f64,
    pub max_abs_err: f64,
    pub cosine: f64,
}

/// The type a tensor of this shape gets when the model is quantized to `target`.
pub fn type_for(shape: &[usize], target: GgmlDType) -> GgmlDType {
    if shape.len() < 2 {
        return GgmlDType::F32;
    }
    let row = shape[shape.len() - 1];
    let fits = |t: GgmlDType| row.is_multiple_of(t.block_size());
    if fits(target) {
        return target;
    }
    let fallback = match target {
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        GgmlDType::Q6K | GgmlDType::Q8K => GgmlDType::Q8_0,
        GgmlDType::Q2K | GgmlDType::Q3K => GgmlDType::Q4_0,
        _ => GgmlDType::F16,
    };
    if fits(fallback) {
        fallback
    } else {
        GgmlDType::F16
    }
}

/// RMSE, largest absolute difference and cosine similarity of two equal-length
/// weight vectors.
pub fn err_stats(src: &[f32], out: &[f32]) -> (f64, f64, f64) {
    let (mut se, mut max, mut dot, mut na, mut nb) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (a, b) in src.iter().zip(out) {
        let (a, b) = (*a as f64, *b as f64);
        let d = a - b;
        se += d * d;
        max = max.max(d.abs());
        dot += a * b;
        na += a * a;
        nb += b * b;
    }
    let n = src.len().max(1) as f64;
    let cosine = if na == 0.0 && nb == 0.0 {
        1.0
    } else if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    };
    ((se / n).sqrt(), max, cosine)
}

/// Quantizes every tensor of `w` to `target` in place (on `pool`), returning
/// one report per tensor, in name order.
pub fn quantize(
    w: &mut Weights,
    target: GgmlDType,
    pool: &rayon::ThreadPool,
    with_errors: bool,
) -> Result<Vec<TensorReport>, String> {
    let names: Vec<String> = w.tensors.keys().cloned().collect();
    let tensors = &w.tensors;
    let done: Vec<Result<(QTensor, TensorReport), String>> = pool.install(|| {
        names
            .par_iter()
            .map(|name| {
                let e = |x: candle_core::Error| format!("tensor `{name}`: {x}");
                let src_q = &tensors[name];
                let shape = src_q.shape().dims().to_vec();
                let to = type_for(&shape, target);
                let src = src_q.dequantize(&Device::Cpu).map_err(e)?;
                let q = QTensor::quantize(&src, to).map_err(e)?;
                let (rmse, max_abs_err, cosine) = if with_errors {
                    let a = src
                        .flatten_all()
                        .and_then(|t| t.to_vec1::<f32>())
                        .map_err(e)?;
                    let b = q
                        .dequantize(&Device::Cpu)
                        .and_then(|t| t.flatten_all())
                        .and_then(|t| t.to_vec1::<f32>())
                        .map_err(e)?;
                    err_stats(&a, &b)
                } else {
                    (f64::NAN, f64::NAN, f64::NAN)
                };
                let report = TensorReport {
                    name: name.clone(),
                    shape,
                    from: ggml_name(src_q.dtype()).to_owned(),
                    to: ggml_name(to).to_owned(),
                    bytes: q.storage_size_in_bytes() as u64,
                    rmse,
                    max_abs_err,
                    cosine,
                };
                Ok((q, report))
            })
            .collect()
    });
    let mut reports = Vec::with_capacity(done.len());
    for (name, r) in names.into_iter().zip(done) {
        let (q, report) = r?;
        w.tensors.insert(name, q);
        reports.push(report);
    }
    w.stored = super::stored_summary(&w.tensors);
    w.metadata.remove("general.file_type");
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norms_stay_f32_and_odd_rows_fall_back() {
        assert_eq!(type_for(&[576], GgmlDType::Q4K), GgmlDType::F32);
        assert_eq!(type_for(&[1536, 576], GgmlDType::Q4K), GgmlDType::Q5_0);
        assert_eq!(type_for(&[576, 1536], GgmlDType::Q4K), GgmlDType::Q4K);
        assert_eq!(type_for(&[8, 40], GgmlDType::Q8_0), GgmlDType::F16);
        assert_eq!(type_for(&[8, 40], GgmlDType::F16), GgmlDType::F16);
    }

    #[test]
    fn error_stats_are_zero_for_equal_and_positive_otherwise() {
        let (r, m, c) = err_stats(&[1.0, -2.0], &[1.0, -2.0]);
        assert_eq!((r, m), (0.0, 0.0));
        assert!((c - 1.0).abs() < 1e-12);
        let (r, m, c) = err_stats(&[1.0, 0.0], &[0.0, 1.0]);
        assert!(r > 0.0 && m == 1.0 && c.abs() < 1e-12);
    }
}
