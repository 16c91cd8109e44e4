//! Serving capacity from `serve` trials: per device class and setup (engine,
//! format, threads, ...), the throughput–latency curve over the loads the
//! sweep offered, and the capacity — the highest load whose every lower load
//! also met the SLO (a load that failed it below a passing one is not
//! trusted: the conservative reading of a noisy curve).

use crate::metrics;
use crate::params::{label, Params};
use crate::results::{TrialRecord, TrialState};
use crate::serve::{within_slo, Slo, SLO_E2E_MS, SLO_ITL_MS, SLO_PERCENTILE, SLO_TTFT_MS};
use crate::stats::median;
use serde::Serialize;
use std::collections::BTreeMap;

/// One load of a curve: medians over its repeats.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadPoint {
    /// `concurrency` or `request_rate`.
    pub load_param: String,
    /// Users, or requests/s (`inf`: infinity).
    pub load: f64,
    pub samples: usize,
    /// Output tokens/s of the device (all users).
    pub output_tokens_per_s: Option<f64>,
    /// Output tokens/s one user sees.
    pub user_tokens_per_s: Option<f64>,
    pub ttft_ms_p99: Option<f64>,
    pub itl_ms_p50: Option<f64>,
    pub goodput_requests_per_s: Option<f64>,
    pub slo_attainment: Option<f64>,
    pub requests_failed: f64,
    /// Every repeat met the SLO (none when the sweep has no SLO).
    pub within_slo: Option<bool>,
}

/// One curve: a setup on a device class over the loads offered.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Curve {
    pub class: String,
    /// The configuration without its load (`engine=candle model=... threads=2`).
    pub setup: String,
    pub slo: Option<Slo>,
    /// By load, lowest first.
    pub points: Vec<LoadPoint>,
    /// Index into `points` of the capacity: none without an SLO, or when
    /// even the lowest load missed it.
    pub capacity: Option<usize>,
}

impl Curve {
    /// The capacity point.
    pub fn capacity_point(&self) -> Option<&LoadPoint> {
        self.capacity.and_then(|i| self.points.get(i))
    }
}

fn is_load(k: &str) -> bool {
    matches!(k, "concurrency" | "request_rate")
}

fn is_slo(k: &str) -> bool {
    matches!(k, SLO_TTFT_MS | SLO_ITL_MS | SLO_E2E_MS | SLO_PERCENTILE)
}

fn load_of(p: &Params) -> (String, f64) {
    if let Some(r) = p.get("request_rate") {
        let v = match r {
            crate::params::ParamValue::Int(i) => *i as f64,
            crate::params::ParamValue::Real(v) => *v,
            _ => f64::INFINITY,
        };
        return ("request_rate".into(), v);
    }
    let c = match p.get("concurrency") {
        Some(crate::params::ParamValue::Int(i)) => *i as f64,
        _ => 1.0,
    };
    ("concurrency".into(), c)
}

/// A `serve` trial's curve (its setup: the configuration without load and
/// SLO) and its load (`concurrency` or `request_rate`, and the level).
pub fn position(t: &TrialRecord) -> (String, String, f64) {
    let setup: Params = t
        .params
        .iter()
        .filter(|(k, _)| !is_load(k) && !is_slo(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (param, level) = load_of(&t.params);
    (label(&setup), param, level)
}

/// The curves of the `serve` trials among `trials` (others are ignored).
pub fn curves(trials: &[TrialRecord]) -> Vec<Curve> {
    type Key = (String, String);
    /// Trials by load: (`concurrency` or `request_rate`, the level's bits).
    type ByLoad<'a> = BTreeMap<(String, u64), Vec<&'a TrialRecord>>;
    let mut by: BTreeMap<Key, (Option<Slo>, ByLoad)> = BTreeMap::new();
    for t in trials.iter().filter(|t| {
        t.state == TrialState::Succeeded && t.metrics.contains_key(metrics::REQUESTS_OK)
    }) {
        let (setup, param, level) = position(t);
        let entry = by
            .entry((t.device_class.clone(), setup))
            .or_insert_with(|| (Slo::from_params(&t.params).ok().flatten(), BTreeMap::new()));
        entry.1.entry((param, level.to_bits())).or_default().push(t);
    }
    by.into_iter()
        .map(|((class, setup), (slo, loads))| {
            let mut points: Vec<LoadPoint> = loads
                .into_iter()
                .map(|((param, bits), ts)| point(param, f64::from_bits(bits), &ts, slo.as_ref()))
                .collect();
            points.sort_by(|a, b| {
                a.load_param
                    .cmp(&b.load_param)
                    .then(a.load.total_cmp(&b.load))
            });
            let capacity = slo.as_ref().and_then(|_| {
                let passing = points
                    .iter()
                    .take_while(|p| p.within_slo == Some(true))
                    .count();
                passing.checked_sub(1)
            });
            Curve {
                class,
                setup,
                slo,
                points,
                capacity,
            }
        })
        .collect()
}

fn point(param: String, load: f64, ts: &[&TrialRecord], slo: Option<&Slo>) -> LoadPoint {
    let med = |name: &str| {
        let mut v: Vec<f64> = ts
            .iter()
            .filter_map(|t| t.metrics.get(name).copied())
            .filter(|v| v.is_finite())
            .collect();
        (!v.is_empty()).then(|| median(&mut v))
    };
    LoadPoint {
        load_param: param,
        load,
        samples: ts.len(),
        output_tokens_per_s: med(metrics::OUTPUT_TOKENS_PER_S),
        user_tokens_per_s: med(metrics::USER_TOKENS_PER_S),
        ttft_ms_p99: med(metrics::TTFT_MS_P99),
        itl_ms_p50: med(metrics::ITL_MS_P50),
        goodput_requests_per_s: med(metrics::GOODPUT_REQUESTS_PER_S),
        slo_attainment: med(metrics::SLO_ATTAINMENT),
        requests_failed: ts
            .iter()
            .filter_map(|t| t.metrics.get(metrics::REQUESTS_FAILED))
            .sum(),
        within_slo: slo.map(|s| ts.iter().all(|t| within_slo(&t.metrics, s))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ParamValue;

    fn trial(engine: &str, c: i64, tps: f64, attainment: f64, failed: f64) -> TrialRecord {
        let mut p = Params::new();
        p.insert("engine".into(), ParamValue::Text(engine.into()));
        p.insert("concurrency".into(), ParamValue::Int(c));
        p.insert(SLO_TTFT_MS.into(), ParamValue::Real(500.0));
        p.insert(SLO_PERCENTILE.into(), ParamValue::Real(90.0));
        let mut t = TrialRecord::pending("t".into(), "s".into(), "cpu".into(), p, 0, 0);
        t.state = TrialState::Succeeded;
        t.metrics = [
            (metrics::REQUESTS_OK.to_owned(), 10.0),
            (metrics::REQUESTS_FAILED.to_owned(), failed),
            (metrics::OUTPUT_TOKENS_PER_S.to_owned(), tps),
            (metrics::SLO_ATTAINMENT.to_owned(), attainment),
        ]
        .into();
        t
    }

    #[test]
    fn capacity_is_the_highest_load_below_which_every_load_met_the_slo() {
        let trials = vec![
            trial("candle", 1, 10.0, 1.0, 0.0),
            trial("candle", 2, 18.0, 0.95, 0.0),
            trial("candle", 4, 30.0, 0.5, 0.0),
            // Passes again at 8 (noise): not trusted past the miss at 4.
            trial("candle", 8, 40.0, 0.9, 0.0),
            trial("llama-server", 1, 12.0, 1.0, 0.0),
            // A failed request misses the SLO whatever the attainment.
            trial("llama-server", 2, 20.0, 1.0, 1.0),
        ];
        let c = curves(&trials);
        assert_eq!(c.len(), 2);
        let candle = &c[0];
        assert!(candle.setup.contains("engine=candle"), "{}", candle.setup);
        assert_eq!(
            candle.points.iter().map(|p| p.load).collect::<Vec<_>>(),
            [1.0, 2.0, 4.0, 8.0]
        );
        let cap = candle.capacity_point().unwrap();
        assert_eq!((cap.load, cap.output_tokens_per_s), (2.0, Some(18.0)));
        assert_eq!(c[1].capacity_point().unwrap().load, 1.0);
        // No SLO: the curve, no capacity.
        let mut t = trial("candle", 1, 10.0, 1.0, 0.0);
        t.params.remove(SLO_TTFT_MS);
        t.params.remove(SLO_PERCENTILE);
        let c = curves(&[t]);
        assert_eq!((c[0].capacity, c[0].points[0].within_slo), (None, None));
    }
}
