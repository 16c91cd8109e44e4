//! Choosing what a report shows: the metric of each section, the pair of
//! metrics of its Pareto chart, which `--with` sweeps join it, and which
//! trials' telemetry it draws.

use anyhow::bail;
use chimera_domain::compare;
use chimera_domain::params::label;
use chimera_domain::results::{ResultsFile, TrialRecord, TrialState};
use std::collections::BTreeSet;

/// `X,Y` of `--pareto`.
pub fn parse_pareto(arg: &str) -> anyhow::Result<(String, String)> {
    match arg.split_once(',') {
        Some((x, y)) if !x.trim().is_empty() && !y.trim().is_empty() && !y.contains(',') => {
            Ok((x.trim().to_owned(), y.trim().to_owned()))
        }
        _ => bail!("--pareto `{arg}`: give two metrics, `X,Y` (e.g. decode_tokens_per_s,kl_mean)"),
    }
}

/// The metrics some succeeded trial reports.
fn reported<'a>(trials: impl IntoIterator<Item = &'a TrialRecord>) -> BTreeSet<String> {
    trials
        .into_iter()
        .filter(|t| t.state == TrialState::Succeeded)
        .flat_map(|t| t.metrics.keys().cloned())
        .collect()
}

fn list(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        "none (no trial succeeded)".to_owned()
    } else {
        set.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// The metric of a section: the one asked for, which a succeeded trial of
/// the sweep must report, else the workload's headline metric.
pub fn choose_metric(results: &ResultsFile, asked: Option<&str>) -> anyhow::Result<String> {
    let Some(m) = asked else {
        return Ok(compare::default_metric(&results.sweep.workload, &results.trials).to_owned());
    };
    let have = reported(&results.trials);
    if !have.contains(m) {
        bail!(
            "--metric `{m}`: no succeeded trial of sweep {} ({}) reports it; it reports: {}",
            results.sweep.id,
            results.sweep.name,
            list(&have)
        );
    }
    Ok(m.to_owned())
}

/// The Pareto pair of a section: the one asked for, both of which some
/// succeeded trial of the sweep or of those joined to it must report, else
/// the domain's default for the workloads (none for kernels).
pub fn choose_pareto(
    results: &ResultsFile,
    joined: &[ResultsFile],
    asked: Option<&(String, String)>,
) -> anyhow::Result<Option<(String, String)>> {
    let Some((x, y)) = asked else {
        let mut workloads = vec![results.sweep.workload.as_str()];
        workloads.extend(joined.iter().map(|j| j.sweep.workload.as_str()));
        return Ok(compare::default_pareto(&workloads).map(|(x, y)| (x.to_owned(), y.to_owned())));
    };
    let have = reported(
        results
            .trials
            .iter()
            .chain(joined.iter().flat_map(|j| j.trials.iter())),
    );
    for m in [x, y] {
        if !have.contains(m) {
            bail!(
                "--pareto `{x},{y}`: no succeeded trial of sweep {} ({}){} reports `{m}`; they report: {}",
                results.sweep.id,
                results.sweep.name,
                if joined.is_empty() { "" } else { " or of the --with sweeps" },
                list(&have)
            );
        }
    }
    Ok(Some((x.clone(), y.clone())))
}

/// Whether `other` describes some of the same configurations as `results`:
/// a (device class, setup) pair in both. `--with` sweeps join the sections
/// they match.
pub fn matches(results: &ResultsFile, other: &ResultsFile) -> bool {
    let keys = |r: &ResultsFile| -> BTreeSet<(String, String)> {
        r.trials
            .iter()
            .filter(|t| !t.params.contains_key(chimera_domain::models::ROLE))
            .map(|t| (t.device_class.clone(), compare::setup(&t.params)))
            .collect()
    };
    !keys(results).is_disjoint(&keys(other))
}

/// A trial the report shows the telemetry of.
#[derive(Clone, Debug, PartialEq)]
pub struct Pick {
    pub trial_id: String,
    pub attempt: u32,
    pub class: String,
    pub config: String,
    /// `best on CLASS` or `worst of the sweep`.
    pub role: String,
    /// The trial's value of the metric.
    pub value: f64,
}

/// The trials whose telemetry a report shows: per device class the
/// configuration with the best median of `metric` (over every configuration
/// of the class), and the configuration with the worst median of the sweep;
/// of each, the repeat whose value is nearest the median.
pub fn select(results: &ResultsFile, metric: &str) -> Vec<Pick> {
    let c = compare::compare(&results.trials, metric);
    let better = |a: f64, b: f64| {
        if c.higher_is_better {
            a > b
        } else {
            a < b
        }
    };
    let mut chosen: Vec<(u32, String, f64, String)> = Vec::new();
    for (ci, class) in c.classes.iter().enumerate() {
        let best = c
            .rows
            .iter()
            .filter_map(|r| {
                r.cells
                    .get(ci)
                    .and_then(|x| x.as_ref())
                    .map(|cell| (r, cell.value))
            })
            .fold(None::<(&compare::Row, f64)>, |acc, (r, v)| match acc {
                Some((_, bv)) if !better(v, bv) => acc,
                _ => Some((r, v)),
            });
        if let Some((r, v)) = best {
            chosen.push((r.config_index, class.clone(), v, format!("best on {class}")));
        }
    }
    let mut worst: Option<(u32, String, f64)> = None;
    for r in &c.rows {
        for (ci, cell) in r.cells.iter().enumerate() {
            let (Some(cell), Some(class)) = (cell, c.classes.get(ci)) else {
                continue;
            };
            if worst.as_ref().is_none_or(|w| better(w.2, cell.value)) {
                worst = Some((r.config_index, class.clone(), cell.value));
            }
        }
    }
    if let Some((idx, class, v)) = worst {
        if !chosen.iter().any(|(i, c2, ..)| *i == idx && *c2 == class) {
            chosen.push((idx, class, v, "worst of the sweep".to_owned()));
        }
    }
    chosen
        .into_iter()
        .filter_map(|(idx, class, median, role)| {
            results
                .trials
                .iter()
                .filter(|t| {
                    t.state == TrialState::Succeeded
                        && t.config_index == idx
                        && t.device_class == class
                })
                .filter_map(|t| t.metrics.get(metric).map(|v| (t, *v)))
                .min_by(|a, b| {
                    (a.1 - median)
                        .abs()
                        .total_cmp(&(b.1 - median).abs())
                        .then(a.0.id.cmp(&b.0.id))
                })
                .map(|(t, v)| Pick {
                    trial_id: t.id.clone(),
                    attempt: t.attempt,
                    class: class.clone(),
                    config: label(&t.params),
                    role,
                    value: v,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::fixtures::{repeats, results, trial};
    use super::*;

    #[test]
    fn unknown_metrics_are_named_with_what_there_is() {
        let r = results(vec![trial("t00000", 0, "q8_0", &[("gflop_per_s", 3.0)])]);
        let e = choose_metric(&r, Some("tokens_per_parsec"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tokens_per_parsec") && e.contains("gflop_per_s"),
            "{e}"
        );
        assert_eq!(choose_metric(&r, None).unwrap(), "gflop_per_s");
        let e = choose_pareto(&r, &[], Some(&("gflop_per_s".into(), "kl_mean".into())))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`kl_mean`") && e.contains("gflop_per_s,kl_mean"),
            "{e}"
        );
        assert_eq!(choose_pareto(&r, &[], None).unwrap(), None);
        assert!(parse_pareto("a").unwrap_err().to_string().contains("`a`"));
        assert!(parse_pareto("a,b,c").is_err());
        assert_eq!(parse_pareto(" a , b").unwrap(), ("a".into(), "b".into()));
    }

    #[test]
    fn the_best_per_class_and_the_worst_are_selected_at_their_median_repeat() {
        let mut trials = repeats(0, 0, "q8_0", "gflop_per_s", &[10.0, 12.0, 30.0]);
        trials.extend(repeats(3, 1, "q4_0", "gflop_per_s", &[2.0]));
        let picks = select(&results(trials), "gflop_per_s");
        let got: Vec<(&str, &str)> = picks
            .iter()
            .map(|p| (p.trial_id.as_str(), p.role.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("t00001", "best on cpu: test x2"),
                ("t00003", "worst of the sweep")
            ]
        );
    }
}
