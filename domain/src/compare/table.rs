//! One metric as a table: configurations x device classes, medians over repeats with their intervals, the best per class marked only where it is clear.

use super::split;
use crate::metrics;
use crate::params::label;
use crate::results::{TrialRecord, TrialState};
use crate::stats::{median, summarize, Summary};
use serde::Serialize;
use std::collections::BTreeMap;

/// One cell: the median of a metric over the successful repeats of a
/// configuration on a class, with the bootstrap interval of that median.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cell {
    /// Median over the repeats.
    pub value: f64,
    /// 95 % bootstrap interval of the median (seeded), with 2+ repeats.
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Successful trials the median is over.
    pub samples: usize,
    /// Coefficient of variation of the metric across the repeats (2+ repeats).
    pub cov: Option<f64>,
    /// Median over the repeats of the trials' own `cov` metric (the spread
    /// of the iterations within a trial), where the workload reports it.
    pub trial_cov: Option<f64>,
    /// The best setup of its problem on this class, its interval clear of
    /// every other setup's (`*`).
    pub best: bool,
    /// Among the setups that cannot be told apart from the best (`=`):
    /// their intervals overlap the best's, or one has a single repeat.
    pub tied: bool,
    /// How many times better than the best setup of its problem on this
    /// class, whatever the metric's direction (1 for the best, below 1 for
    /// the others); none when the best is exactly 0.
    pub speedup_vs_best: Option<f64>,
    /// Some repeat was measured while the device's clocks were throttled
    /// (`throttled_frac` > 0 in its telemetry).
    pub throttled: bool,
    /// How many times better than the same configuration on the baseline
    /// class (above 1: better), when a baseline is given (`chimera compare
    /// --baseline CLASS`).
    pub speedup_vs_baseline: Option<f64>,
    /// The repeats were measured in different environments (agent build,
    /// candle or rustc version, CPU model): the median mixes them.
    pub mixed_env: bool,
}

impl Cell {
    /// The 95 % interval of the median, with 2+ repeats.
    pub fn ci95(&self) -> Option<(f64, f64)> {
        self.ci_low.zip(self.ci_high)
    }
}

/// A spread across repeats (or within a trial) above this share of the
/// value is too much to rank configurations by: the comparison warns.
pub const NOISY_COV: f64 = 0.10;

/// How many times better `value` is than `reference` for a metric in this
/// direction (above 1: better); none when the ratio means nothing (a zero).
pub fn speedup(value: f64, reference: f64, higher_is_better: bool) -> Option<f64> {
    if value == reference {
        return Some(1.0);
    }
    let (num, den) = if higher_is_better {
        (value, reference)
    } else {
        (reference, value)
    };
    (num != 0.0 && den != 0.0).then(|| num / den)
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
    /// Sets every cell's speed-up against the same configuration on `class`;
    /// an error names the classes there are when `class` is not one of them.
    pub fn with_baseline(mut self, class: &str) -> Result<Self, String> {
        let Some(b) = self.classes.iter().position(|c| c == class) else {
            return Err(format!(
                "--baseline `{class}` is not a device class of these results; they have: {}",
                self.classes.join(", ")
            ));
        };
        let higher = self.higher_is_better;
        for row in &mut self.rows {
            let base = row.cells.get(b).and_then(|c| c.as_ref()).map(|c| c.value);
            for cell in row.cells.iter_mut().flatten() {
                cell.speedup_vs_baseline = base.and_then(|b| speedup(cell.value, b, higher));
            }
        }
        Ok(self)
    }

    /// Warnings (hyperfine-style) about cells too noisy to rank: a spread
    /// across repeats, or within a trial, above [`NOISY_COV`].
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for row in &self.rows {
            for (class, cell) in self.classes.iter().zip(&row.cells) {
                let Some(cell) = cell else { continue };
                let worst = [
                    ("across repeats", cell.cov),
                    ("within a trial", cell.trial_cov),
                ]
                .into_iter()
                .filter_map(|(what, c)| c.filter(|c| *c > NOISY_COV).map(|c| (what, c)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
                if let Some((what, c)) = worst {
                    out.push(format!(
                        "warning: {} on {class} varies by {:.0}% (cov) {what}, more than {:.0}%: \
                         too noisy to rank; measure on a quieter machine or with more repeats",
                        row.config,
                        c * 100.0,
                        NOISY_COV * 100.0
                    ));
                }
            }
        }
        out
    }
}

/// Marks the best of cells of one problem on one class, `(row, summary)`:
/// `*` where its interval is clear of every other's, otherwise `=` on it
/// and on every setup that cannot be told apart from it.
fn rank<K: Clone + PartialEq>(cells: &[(K, Summary)], higher: bool) -> (Vec<K>, Vec<K>) {
    let better = |a: f64, b: f64| if higher { a > b } else { a < b };
    let Some(best) = cells
        .iter()
        .fold(None::<&(K, Summary)>, |acc, c| match acc {
            Some(b) if !better(c.1.median, b.1.median) => Some(b),
            _ => Some(c),
        })
    else {
        return (Vec::new(), Vec::new());
    };
    // Clear when both have intervals and they do not overlap.
    let clear = |other: &Summary| match (best.1.ci, other.ci) {
        (Some((blo, bhi)), Some((olo, ohi))) => {
            if higher {
                blo > ohi
            } else {
                bhi < olo
            }
        }
        _ => false,
    };
    let tied: Vec<K> = cells
        .iter()
        .filter(|c| c.0 != best.0 && !clear(&c.1))
        .map(|c| c.0.clone())
        .collect();
    if tied.is_empty() {
        (vec![best.0.clone()], Vec::new())
    } else {
        (
            Vec::new(),
            std::iter::once(best.0.clone()).chain(tied).collect(),
        )
    }
}

/// A cell's configuration index and device class.
type CellKey = (u32, String);

/// Builds the comparison of `metric` over the successful trials.
pub fn compare(trials: &[TrialRecord], metric: &str) -> Comparison {
    let higher = metrics::higher_is_better(metric);
    let mut classes: Vec<String> = Vec::new();
    let mut configs: BTreeMap<u32, (String, String, String)> = BTreeMap::new();
    let mut values: BTreeMap<(u32, String), Vec<f64>> = BTreeMap::new();
    let mut throttled: std::collections::BTreeSet<(u32, String)> = Default::default();
    let mut envs: BTreeMap<(u32, String), std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut trial_cov: BTreeMap<(u32, String), Vec<f64>> = BTreeMap::new();
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
                    "{} {} {} {} {}",
                    f.agent_git_sha,
                    f.candle_version,
                    f.rustc_version,
                    f.cpu_model,
                    f.extra.get("cpu_simd").map_or("", String::as_str)
                ));
        }
        if let Some(c) = t.metrics.get(metrics::COV).filter(|c| c.is_finite()) {
            trial_cov
                .entry((t.config_index, t.device_class.clone()))
                .or_default()
                .push(*c);
        }
        values
            .entry((t.config_index, t.device_class.clone()))
            .or_default()
            .push(v);
    }
    classes.sort();
    let summaries: BTreeMap<(u32, String), Summary> = values
        .iter()
        .filter_map(|(k, v)| summarize(v).map(|s| (k.clone(), s)))
        .collect();
    // Marks per (group, class).
    let mut by_group: BTreeMap<(&str, &str), Vec<(CellKey, Summary)>> = BTreeMap::new();
    for (key, s) in &summaries {
        if let Some((group, ..)) = configs.get(&key.0) {
            by_group
                .entry((group.as_str(), key.1.as_str()))
                .or_default()
                .push((key.clone(), s.clone()));
        }
    }
    let mut best_of: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    let mut marks: BTreeMap<CellKey, (bool, bool)> = BTreeMap::new();
    for (group_class, cells) in &by_group {
        let (best, tied) = rank(cells, higher);
        marks.extend(best.into_iter().map(|k| (k, (true, false))));
        marks.extend(tied.into_iter().map(|k| (k, (false, true))));
        let top = cells.iter().map(|c| c.1.median).reduce(
            |b, v| {
                if higher {
                    b.max(v)
                } else {
                    b.min(v)
                }
            },
        );
        if let Some(top) = top {
            best_of.insert(*group_class, top);
        }
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
                    let key = (idx, c.clone());
                    summaries.get(&key).map(|s| {
                        let b = best_of
                            .get(&(group.as_str(), c.as_str()))
                            .copied()
                            .unwrap_or(s.median);
                        let (best, tied) = marks.get(&key).copied().unwrap_or_default();
                        let trial_cov = trial_cov.get(&key).map(|v| median(&mut v.clone()));
                        Cell {
                            value: s.median,
                            ci_low: s.ci.map(|c| c.0),
                            ci_high: s.ci.map(|c| c.1),
                            samples: s.n,
                            cov: s.cov,
                            trial_cov,
                            best,
                            tied,
                            speedup_vs_best: speedup(s.median, b, higher),
                            throttled: throttled.contains(&key),
                            speedup_vs_baseline: None,
                            mixed_env: envs.get(&key).is_some_and(|e| e.len() > 1),
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
