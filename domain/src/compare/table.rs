//! One metric as a table: configurations x device classes, medians over repeats, the best per class marked.

use super::split;
use crate::metrics;
use crate::params::label;
use crate::results::{TrialRecord, TrialState};
use crate::stats::{ci95, median};
use serde::Serialize;
use std::collections::BTreeMap;

/// One cell: the median of a metric over the successful repeats of a
/// configuration on a class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cell {
    pub value: f64,
    /// Successful trials the median is over.
    pub samples: usize,
    /// The best configuration of its group on this class for the metric.
    pub best: bool,
    /// value / best value of the group on this class (1.0 for the best); none
    /// when the best is 0 (an exact result: the ratio means nothing).
    pub ratio_to_best: Option<f64>,
    /// Some repeat was measured while the device's clocks were throttled
    /// (`throttled_frac` > 0 in its telemetry).
    pub throttled: bool,
    /// 95 % confidence interval of the mean over the repeats (Student's t),
    /// with two or more repeats.
    pub ci95: Option<(f64, f64)>,
    /// value / the same configuration's value on the baseline class, when a
    /// baseline is given (`chimera compare --baseline CLASS`).
    pub vs_baseline: Option<f64>,
    /// The repeats were measured in different environments (agent build,
    /// candle or rustc version, CPU model): the median mixes them.
    pub mixed_env: bool,
}

/// A configuration's row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub config_index: u32,
    /// The problem the configuration solves (`shape=1,4096,4096`): the best is
    /// chosen among rows of the same group, so setups are compared on equal work.
    pub group: String,
    /// The setup being compared within the group (`op=qmatmul format=q4_0`).
    pub setup: String,
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

impl Comparison {
    /// Sets every cell's ratio to the same configuration on `class`; an error
    /// names the classes there are when `class` is not one of them.
    pub fn with_baseline(mut self, class: &str) -> Result<Self, String> {
        let Some(b) = self.classes.iter().position(|c| c == class) else {
            return Err(format!(
                "--baseline `{class}` is not a device class of these results; they have: {}",
                self.classes.join(", ")
            ));
        };
        for row in &mut self.rows {
            let base = row.cells.get(b).and_then(|c| c.as_ref()).map(|c| c.value);
            for cell in row.cells.iter_mut().flatten() {
                cell.vs_baseline = base.filter(|b| *b != 0.0).map(|b| cell.value / b);
            }
        }
        Ok(self)
    }
}

/// Builds the comparison of `metric` over the successful trials.
pub fn compare(trials: &[TrialRecord], metric: &str) -> Comparison {
    let higher = metrics::higher_is_better(metric);
    let mut classes: Vec<String> = Vec::new();
    let mut configs: BTreeMap<u32, (String, String, String)> = BTreeMap::new();
    let mut values: BTreeMap<(u32, String), Vec<f64>> = BTreeMap::new();
    let mut throttled: std::collections::BTreeSet<(u32, String)> = Default::default();
    let mut envs: BTreeMap<(u32, String), std::collections::BTreeSet<String>> = BTreeMap::new();
    for t in trials {
        configs.entry(t.config_index).or_insert_with(|| {
            let (problem, setup) = split(&t.params);
            (problem, setup, label(&t.params))
        });
        if t.state != TrialState::Succeeded {
            continue;
        }
        let Some(v) = t.metrics.get(metric).copied().filter(|v| v.is_finite()) else {
            continue;
        };
        if !classes.contains(&t.device_class) {
            classes.push(t.device_class.clone());
        }
        if t.metrics
            .get(metrics::THROTTLED_FRAC)
            .is_some_and(|f| *f > 0.0)
        {
            throttled.insert((t.config_index, t.device_class.clone()));
        }
        if let Some(f) = &t.fingerprint {
            envs.entry((t.config_index, t.device_class.clone()))
                .or_default()
                .insert(format!(
                    "{} {} {} {}",
                    f.agent_git_sha, f.candle_version, f.rustc_version, f.cpu_model
                ));
        }
        values
            .entry((t.config_index, t.device_class.clone()))
            .or_default()
            .push(v);
    }
    classes.sort();
    let ci: BTreeMap<(u32, String), (f64, f64)> = values
        .iter()
        .filter_map(|(k, v)| ci95(v).map(|c| (k.clone(), c)))
        .collect();
    let medians: BTreeMap<(u32, String), (f64, usize)> = values
        .into_iter()
        .map(|(k, mut v)| {
            let n = v.len();
            (k, (median(&mut v), n))
        })
        .collect();
    // Best per (group, class).
    let mut best: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for ((idx, class), (v, _)) in &medians {
        let Some((group, ..)) = configs.get(idx) else {
            continue;
        };
        best.entry((group.as_str(), class.as_str()))
            .and_modify(|b| *b = if higher { b.max(*v) } else { b.min(*v) })
            .or_insert(*v);
    }
    let mut order: Vec<(&u32, &(String, String, String))> = configs.iter().collect();
    order.sort_by(|a, b| (&a.1 .0, a.0).cmp(&(&b.1 .0, b.0)));
    let rows = order
        .into_iter()
        .map(|(&idx, (group, setup, config))| Row {
            config_index: idx,
            group: group.clone(),
            setup: setup.clone(),
            config: config.clone(),
            cells: classes
                .iter()
                .map(|c| {
                    medians.get(&(idx, c.clone())).map(|&(value, samples)| {
                        let b = best
                            .get(&(group.as_str(), c.as_str()))
                            .copied()
                            .unwrap_or(value);
                        Cell {
                            value,
                            samples,
                            best: value == b,
                            ratio_to_best: if b != 0.0 {
                                Some(value / b)
                            } else if value == 0.0 {
                                Some(1.0)
                            } else {
                                None
                            },
                            throttled: throttled.contains(&(idx, c.clone())),
                            ci95: ci.get(&(idx, c.clone())).copied(),
                            vs_baseline: None,
                            mixed_env: envs.get(&(idx, c.clone())).is_some_and(|e| e.len() > 1),
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
