//! The Pareto front of two metrics per device class, configurations matched across sweeps by setup.

use super::split;
use crate::metrics;
use crate::results::{TrialRecord, TrialState};
use crate::stats::median;
use serde::Serialize;
use std::collections::BTreeMap;

/// A configuration on the Pareto front of two metrics on one class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParetoPoint {
    pub class: String,
    pub config: String,
    /// Medians over repeats of the two metrics.
    pub x: f64,
    pub y: f64,
}

/// The Pareto-optimal configurations per class for metrics `x` and `y` (each
/// in its own direction: higher-is-better or lower-is-better): those no other
/// configuration beats on both. Configurations are matched across metrics
/// and sweeps by their setup (format, threads, ...), so `x` and `y` may come
/// from different sweeps of the same setups (a generate and an eval sweep).
pub fn pareto(trials: &[TrialRecord], x: &str, y: &str) -> Vec<ParetoPoint> {
    pareto_front(&pareto_points(trials, x, y), x, y)
}

/// Every configuration per class that reports both `x` and `y` (medians over
/// repeats, matched by setup as [`pareto`] does), dominated or not, in
/// (class, configuration) order.
pub fn pareto_points(trials: &[TrialRecord], x: &str, y: &str) -> Vec<ParetoPoint> {
    let mut vals: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    for t in trials.iter().filter(|t| t.state == TrialState::Succeeded) {
        if t.params.contains_key(crate::models::ROLE) {
            continue;
        }
        // Matched by setup (format, threads, ...): a generate and an eval
        // sweep of the same formats describe the same configurations.
        let (_, config) = split(&t.params);
        for m in [x, y] {
            if let Some(v) = t.metrics.get(m).filter(|v| v.is_finite()) {
                vals.entry((t.device_class.clone(), config.clone(), m.to_owned()))
                    .or_default()
                    .push(*v);
            }
        }
    }
    let mut points: Vec<ParetoPoint> = Vec::new();
    let keys: std::collections::BTreeSet<(String, String)> = vals
        .keys()
        .map(|(c, k, _)| (c.clone(), k.clone()))
        .collect();
    for (class, config) in keys {
        let mut get = |m: &str| {
            vals.get_mut(&(class.clone(), config.clone(), m.to_owned()))
                .map(|v| median(v))
        };
        if let (Some(xv), Some(yv)) = (get(x), get(y)) {
            points.push(ParetoPoint {
                class,
                config,
                x: xv,
                y: yv,
            });
        }
    }
    points
}

/// The points of `points` that no other configuration of their class beats
/// on both metrics, per class, by descending `x`.
pub fn pareto_front(points: &[ParetoPoint], x: &str, y: &str) -> Vec<ParetoPoint> {
    let (hx, hy) = (metrics::higher_is_better(x), metrics::higher_is_better(y));
    let better = |a: f64, b: f64, higher: bool| if higher { a >= b } else { a <= b };
    let mut front: Vec<ParetoPoint> = points
        .iter()
        .filter(|p| {
            !points.iter().any(|q| {
                q.class == p.class
                    && q.config != p.config
                    && better(q.x, p.x, hx)
                    && better(q.y, p.y, hy)
                    && (q.x != p.x || q.y != p.y)
            })
        })
        .cloned()
        .collect();
    front.sort_by(|a, b| a.class.cmp(&b.class).then(b.x.total_cmp(&a.x)));
    front
}

/// The trade-off a report plots when none is asked for, from the workloads
/// of the results joined: a `generate` sweep with an `eval` sweep of the same
/// formats is decode speed against divergence from the reference (what
/// [`tradeoff`] tabulates); a `quantize` sweep is size against error; a
/// `serve` sweep is per-user tokens/s against the device's tokens/s. Kernel
/// sweeps have none: their configurations solve different problems, and a
/// front across problems would compare unequal work.
pub fn default_pareto(workloads: &[&str]) -> Option<(&'static str, &'static str)> {
    let has = |w: &str| workloads.contains(&w);
    if has("serve") {
        // AIPerf's view: what one user sees against what the device serves,
        // each (engine, format, load) a point.
        Some((metrics::USER_TOKENS_PER_S, metrics::OUTPUT_TOKENS_PER_S))
    } else if has("generate") && has("eval") {
        Some((metrics::DECODE_TOKENS_PER_S, metrics::KL_MEAN))
    } else if has("quantize") {
        Some((metrics::BITS_PER_WEIGHT, metrics::RMSE))
    } else {
        None
    }
}
