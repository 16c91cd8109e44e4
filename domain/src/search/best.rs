//! The answer of an adaptive search: the best configuration per device class.

use super::Goal;
use crate::params::{ParamValue, Params};
use crate::stats::median;
use serde::Serialize;
use std::collections::BTreeMap;

/// The answer of an adaptive search: per device class, the configuration with
/// the best median objective among those that met every constraint (at the
/// highest rung it reached, for successive halving).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Best {
    pub class: String,
    pub config_index: u32,
    pub params: Params,
    /// Median objective value over its repeats.
    pub value: f64,
    /// Configurations the class's search ran.
    pub tried: usize,
}

/// [`Best`] per class of a sweep's trials, for an adaptive search.
pub fn best_per_class(goal: &Goal, trials: &[crate::results::TrialRecord]) -> Vec<Best> {
    use crate::results::TrialState;
    // (class, config) -> (rung, values, params)
    let mut by: BTreeMap<(String, u32), (u32, Vec<f64>, Params)> = BTreeMap::new();
    for t in trials {
        let reference = t.params.get(crate::models::ROLE)
            == Some(&ParamValue::Text(crate::models::ROLE_REFERENCE.to_owned()));
        if reference {
            continue;
        }
        let rung = t.rung.unwrap_or(0);
        let e = by
            .entry((t.device_class.clone(), t.config_index))
            .or_insert_with(|| (rung, Vec::new(), t.params.clone()));
        if rung > e.0 {
            *e = (rung, Vec::new(), t.params.clone());
        }
        if rung == e.0 && t.state == TrialState::Succeeded {
            if let Some(v) = goal.value(&t.metrics) {
                e.1.push(v);
            }
        }
    }
    // Successive halving's answer is among the configurations that reached
    // the class's top rung.
    let mut top: BTreeMap<String, u32> = BTreeMap::new();
    for ((class, _), (rung, _, _)) in &by {
        let t = top.entry(class.clone()).or_default();
        *t = (*t).max(*rung);
    }
    let mut out: BTreeMap<String, Best> = BTreeMap::new();
    let mut tried: BTreeMap<String, usize> = BTreeMap::new();
    for ((class, config), (rung, mut values, params)) in by {
        *tried.entry(class.clone()).or_default() += 1;
        if values.is_empty() || top.get(&class).is_some_and(|t| rung < *t) {
            continue;
        }
        let value = median(&mut values);
        let better = out.get(&class).is_none_or(|b| goal.better(value, b.value));
        if better {
            out.insert(
                class.clone(),
                Best {
                    class,
                    config_index: config,
                    params,
                    value,
                    tried: 0,
                },
            );
        }
    }
    out.into_values()
        .map(|mut b| {
            b.tried = tried.get(&b.class).copied().unwrap_or(0);
            b
        })
        .collect()
}
