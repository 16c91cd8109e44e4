//! The speed / accuracy trade-off of weight formats: `generate` and `eval` results joined per class and format.

use crate::metrics;
use crate::results::{TrialRecord, TrialState};
use crate::stats::median;
use serde::Serialize;
use std::collections::BTreeMap;

/// One weight format in a speed / accuracy trade-off.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TradeoffRow {
    pub device_class: String,
    pub format: String,
    /// Median over repeats, tokens/s.
    pub decode_tokens_per_s: Option<f64>,
    pub prefill_tokens_per_s: Option<f64>,
    /// Bytes of weights the forward pass reads per token.
    pub weight_bytes: Option<f64>,
    /// Mean KL divergence from the reference, nats per token.
    pub kl_mean: Option<f64>,
    pub top1_agree: Option<f64>,
    pub perplexity: Option<f64>,
    /// Standard errors of the three over the scored tokens (median over
    /// repeats), where the eval reported them.
    pub kl_mean_se: Option<f64>,
    pub top1_agree_se: Option<f64>,
    pub perplexity_se: Option<f64>,
    /// No other format on the class is both at least as fast and at least as
    /// close to the reference (and better in one).
    pub pareto: bool,
    /// Fastest decode on the class.
    pub fastest: bool,
    /// Lowest KL on the class.
    pub closest: bool,
}

/// Joins `generate` and `eval` results per device class and weight format:
/// decode speed against divergence from the reference, with the Pareto front
/// and the best of each marked.
pub fn tradeoff(generate: &[TrialRecord], eval: &[TrialRecord]) -> Vec<TradeoffRow> {
    type Key = (String, String);
    let mut values: BTreeMap<(Key, &'static str), Vec<f64>> = BTreeMap::new();
    let ok = |t: &&TrialRecord| t.state == TrialState::Succeeded;
    let fmt_of = |t: &TrialRecord| {
        t.params
            .get("format")
            .map(|v| v.to_string())
            .unwrap_or_else(|| "as stored".to_owned())
    };
    for (trials, names) in [
        (
            generate,
            &[
                metrics::DECODE_TOKENS_PER_S,
                metrics::PREFILL_TOKENS_PER_S,
                metrics::WEIGHT_BYTES,
            ][..],
        ),
        (
            eval,
            &[
                metrics::KL_MEAN,
                metrics::TOP1_AGREE,
                metrics::PERPLEXITY,
                metrics::KL_MEAN_SE,
                metrics::TOP1_AGREE_SE,
                metrics::PERPLEXITY_SE,
            ][..],
        ),
    ] {
        for t in trials
            .iter()
            .filter(ok)
            .filter(|t| !t.params.contains_key(crate::models::ROLE))
        {
            for name in names {
                if let Some(v) = t.metrics.get(*name).filter(|v| v.is_finite()) {
                    values
                        .entry(((t.device_class.clone(), fmt_of(t)), name))
                        .or_default()
                        .push(*v);
                }
            }
        }
    }
    let keys: Vec<Key> = {
        let mut k: Vec<Key> = values.keys().map(|(k, _)| k.clone()).collect();
        k.dedup();
        k
    };
    let mut get = |k: &Key, name: &'static str| {
        values
            .get_mut(&(k.clone(), name))
            .filter(|v| !v.is_empty())
            .map(|v| median(v))
    };
    let mut rows: Vec<TradeoffRow> = keys
        .iter()
        .map(|k| TradeoffRow {
            device_class: k.0.clone(),
            format: k.1.clone(),
            decode_tokens_per_s: get(k, metrics::DECODE_TOKENS_PER_S),
            prefill_tokens_per_s: get(k, metrics::PREFILL_TOKENS_PER_S),
            weight_bytes: get(k, metrics::WEIGHT_BYTES),
            kl_mean: get(k, metrics::KL_MEAN),
            top1_agree: get(k, metrics::TOP1_AGREE),
            perplexity: get(k, metrics::PERPLEXITY),
            kl_mean_se: get(k, metrics::KL_MEAN_SE),
            top1_agree_se: get(k, metrics::TOP1_AGREE_SE),
            perplexity_se: get(k, metrics::PERPLEXITY_SE),
            pareto: false,
            fastest: false,
            closest: false,
        })
        .collect();
    let n = rows.len();
    for i in 0..n {
        let class = rows[i].device_class.clone();
        let same: Vec<usize> = (0..n).filter(|j| rows[*j].device_class == class).collect();
        let (Some(s), Some(kl)) = (rows[i].decode_tokens_per_s, rows[i].kl_mean) else {
            continue;
        };
        let dominated = same.iter().any(|&j| {
            let (Some(s2), Some(kl2)) = (rows[j].decode_tokens_per_s, rows[j].kl_mean) else {
                return false;
            };
            j != i && s2 >= s && kl2 <= kl && (s2 > s || kl2 < kl)
        });
        let fastest = same
            .iter()
            .all(|&j| rows[j].decode_tokens_per_s.is_none_or(|s2| s2 <= s));
        let closest = same
            .iter()
            .all(|&j| rows[j].kl_mean.is_none_or(|k2| k2 >= kl));
        rows[i].pareto = !dominated;
        rows[i].fastest = fastest;
        rows[i].closest = closest;
    }
    rows.sort_by(|a, b| {
        a.device_class.cmp(&b.device_class).then(
            b.decode_tokens_per_s
                .unwrap_or(0.0)
                .total_cmp(&a.decode_tokens_per_s.unwrap_or(0.0)),
        )
    });
    rows
}
