//! Comparison of results across configurations and device classes.

use crate::metrics;
use crate::params::label;
use crate::results::{TrialRecord, TrialState};
use serde::Serialize;
use std::collections::BTreeMap;

/// One cell: the median of a metric over the successful repeats of a
/// configuration on a class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cell {
    pub value: f64,
    /// Successful trials the median is over.
    pub samples: usize,
    /// The best configuration of this class for the metric.
    pub best: bool,
    /// value / best value of the class (1.0 for the best).
    pub ratio_to_best: f64,
}

/// A configuration's row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub config_index: u32,
    /// `op=qmatmul format=q4_0 shape=...`
    pub config: String,
    /// One cell per class, in [`Comparison::classes`] order.
    pub cells: Vec<Option<Cell>>,
}

/// Configurations x device classes for one metric, best per class marked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub metric: String,
    pub unit: String,
    pub higher_is_better: bool,
    pub classes: Vec<String>,
    pub rows: Vec<Row>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Builds the comparison of `metric` over the successful trials.
pub fn compare(trials: &[TrialRecord], metric: &str) -> Comparison {
    let higher = metrics::higher_is_better(metric);
    let mut classes: Vec<String> = Vec::new();
    let mut configs: BTreeMap<u32, String> = BTreeMap::new();
    let mut values: BTreeMap<(u32, String), Vec<f64>> = BTreeMap::new();
    for t in trials {
        configs.entry(t.config_index).or_insert_with(|| label(&t.params));
        if t.state != TrialState::Succeeded {
            continue;
        }
        let Some(v) = t.metrics.get(metric).copied().filter(|v| v.is_finite()) else {
            continue;
        };
        if !classes.contains(&t.device_class) {
            classes.push(t.device_class.clone());
        }
        values
            .entry((t.config_index, t.device_class.clone()))
            .or_default()
            .push(v);
    }
    classes.sort();
    let medians: BTreeMap<(u32, String), (f64, usize)> = values
        .into_iter()
        .map(|(k, mut v)| {
            let n = v.len();
            (k, (median(&mut v), n))
        })
        .collect();
    let best: BTreeMap<&String, f64> = classes
        .iter()
        .filter_map(|c| {
            let vals = medians
                .iter()
                .filter(|((_, cls), _)| cls == c)
                .map(|(_, (v, _))| *v);
            let b = if higher {
                vals.fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
            } else {
                vals.fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.min(v))))
            };
            b.map(|b| (c, b))
        })
        .collect();
    let rows = configs
        .into_iter()
        .map(|(idx, config)| Row {
            config_index: idx,
            config,
            cells: classes
                .iter()
                .map(|c| {
                    medians.get(&(idx, c.clone())).map(|&(value, samples)| {
                        let b = best.get(c).copied().unwrap_or(value);
                        Cell {
                            value,
                            samples,
                            best: value == b,
                            ratio_to_best: if b != 0.0 { value / b } else { 1.0 },
                        }
                    })
                })
                .collect(),
        })
        .collect();
    Comparison {
        metric: metric.to_owned(),
        unit: metrics::unit(metric).to_owned(),
        higher_is_better: higher,
        classes,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{ParamValue, Params};

    fn trial(idx: u32, class: &str, v: f64, state: TrialState) -> TrialRecord {
        let mut params = Params::new();
        params.insert("op".into(), ParamValue::Text(format!("op{idx}")));
        TrialRecord {
            id: format!("t{idx}"),
            sweep_id: "s".into(),
            state,
            device_class: class.into(),
            params,
            config_index: idx,
            repeat: 0,
            attempt: 1,
            agent: None,
            device_id: None,
            metrics: [("gflop_per_s".to_owned(), v)].into(),
            fingerprint: None,
            error: None,
            wall_ms: None,
        }
    }

    #[test]
    fn marks_best_per_class_and_takes_medians() {
        let trials = vec![
            trial(0, "a", 10.0, TrialState::Succeeded),
            trial(0, "a", 30.0, TrialState::Succeeded),
            trial(0, "a", 20.0, TrialState::Succeeded),
            trial(1, "a", 25.0, TrialState::Succeeded),
            trial(1, "b", 5.0, TrialState::Succeeded),
            trial(0, "b", 99.0, TrialState::Failed),
        ];
        let c = compare(&trials, "gflop_per_s");
        assert_eq!(c.classes, vec!["a", "b"]);
        let a0 = c.rows[0].cells[0].as_ref().unwrap();
        assert_eq!((a0.value, a0.samples, a0.best), (20.0, 3, false));
        assert!(c.rows[1].cells[0].as_ref().unwrap().best);
        assert!(c.rows[0].cells[1].is_none(), "failed trials do not count");
        assert!(c.rows[1].cells[1].as_ref().unwrap().best);
    }
}
