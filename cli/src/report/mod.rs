//! `chimera report`: the command's entry — load the sweeps, choose what to
//! plot, render a static, self-contained HTML page and the trial tables,
//! and write them.
//!
//! The page has per sweep a section with its header, the comparison table
//! and SVG charts drawn with plotters (the metric per configuration and
//! device class, the Pareto front of two metrics, device telemetry of the
//! best and worst trials); every trial goes to `trials.csv` and
//! `trials.json`. Everything is rendered in memory first, then written to a
//! temporary directory beside (or inside) DIR and moved into place: a
//! failure leaves nothing half-written. Every number on the page comes from
//! the results or the telemetry samples; a chart with nothing to draw is a
//! sentence instead.
//!
//! - [`selection`]: which metric, which Pareto pair, which trials' telemetry.
//! - [`telemetry`]: the samples, from the controller or a saved file.
//! - [`charts`]: the SVG charts (plotters).
//! - [`html`]: the page (maud templates).
//! - [`export`]: `trials.csv`, `trials.json`, and writing the files.

mod charts;
mod export;
mod html;
mod selection;
mod telemetry;

use crate::client::{self, Client};
use anyhow::{anyhow, bail};
use chimera_domain::results::{ResultsFile, TrialRecord};
use chimera_proto::v1 as proto;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub use export::write;
pub use selection::{choose_metric, choose_pareto};
pub use telemetry::{
    collect_telemetry, telemetry_of, write_telemetry, Telemetry, SAVED_SAMPLES_BUDGET,
    TELEMETRY_FLUSH,
};

/// The page.
pub const INDEX: &str = "index.html";
/// Every trial, one row each.
pub const TRIALS_CSV: &str = "trials.csv";
/// The same rows as JSON.
pub const TRIALS_JSON: &str = "trials.json";
/// The `format` field of `trials.json`.
pub const TRIALS_FORMAT: &str = "chimera.trials";

/// One section of the page: a sweep, the sweeps joined to it for the
/// Pareto chart, and what to plot.
pub struct Section {
    pub results: ResultsFile,
    /// Where the results were read: a file's path or `the controller at URL`.
    pub origin: String,
    /// Results joined by configuration (`--with`): an eval sweep beside a
    /// generate sweep.
    pub joined: Vec<ResultsFile>,
    /// The metric of the table and the bar chart.
    pub metric: String,
    /// The two metrics of the Pareto chart, if any.
    pub pareto: Option<(String, String)>,
    pub telemetry: Telemetry,
}

impl Section {
    fn all_trials(&self) -> Vec<TrialRecord> {
        let mut t = self.results.trials.clone();
        for j in &self.joined {
            t.extend(j.trials.iter().cloned());
        }
        t
    }
}

/// The three files of a report.
pub struct Rendered {
    pub html: String,
    pub csv: Vec<u8>,
    pub json: Vec<u8>,
}

/// `chimera report SWEEP... [--with OTHER]... [--metric M] [--pareto X,Y] --out DIR`.
pub async fn command(
    url: &str,
    sweeps: &[String],
    with: &[String],
    metric: Option<&str>,
    pareto: Option<&str>,
    out: &Path,
) -> anyhow::Result<i32> {
    let pareto = pareto.map(selection::parse_pareto).transpose()?;
    let mut hosts = BTreeMap::new();
    let mut client: Option<Client> = None;
    let mut loaded = Vec::new();
    for s in sweeps.iter().chain(with) {
        let path = Path::new(s);
        let (results, from_file) = if path.is_file() {
            (client::load_results_file(path)?, true)
        } else {
            if client.is_none() {
                let mut c = client::connect(url).await?;
                for a in c
                    .list_agents(proto::ListAgentsRequest::default())
                    .await
                    .map_err(client::status("list agents"))?
                    .into_inner()
                    .agents
                {
                    hosts.insert(a.name, a.hostname);
                }
                client = Some(c);
            }
            let c = client
                .as_mut()
                .ok_or_else(|| anyhow!("no controller client"))?;
            let id = client::resolve_sweep(c, s).await?;
            (client::fetch_results(c, &id).await?, false)
        };
        loaded.push((s.clone(), results, from_file));
    }
    let others: Vec<(String, ResultsFile)> = loaded
        .split_off(sweeps.len())
        .into_iter()
        .map(|(s, r, _)| (s, r))
        .collect();
    for (name, other) in &others {
        if !loaded.iter().any(|(_, r, _)| selection::matches(r, other)) {
            bail!(
                "--with {name}: none of its configurations (device class and setup) is in {}",
                sweeps.join(", ")
            );
        }
    }
    let mut sections = Vec::new();
    for (name, results, from_file) in loaded {
        let joined: Vec<ResultsFile> = others
            .iter()
            .filter(|(_, o)| selection::matches(&results, o))
            .map(|(_, o)| o.clone())
            .collect();
        let metric = choose_metric(&results, metric)?;
        let pareto = choose_pareto(&results, &joined, pareto.as_ref())?;
        let telemetry = if from_file {
            telemetry::beside(Path::new(&name), &results.sweep.id)?
        } else {
            let c = client
                .as_mut()
                .ok_or_else(|| anyhow!("no controller client"))?;
            telemetry::of_selected(c, url, &results, &metric).await?
        };
        sections.push(Section {
            origin: if from_file {
                name.clone()
            } else {
                format!("sweep {name} on the controller at {url}")
            },
            results,
            joined,
            metric,
            pareto,
            telemetry,
        });
    }
    let rendered = render(&sections, &hosts)?;
    write(out, &rendered)?;
    println!("{}", out.join(INDEX).display());
    eprintln!(
        "wrote {INDEX}, {TRIALS_CSV} and {TRIALS_JSON} in {}",
        out.display()
    );
    Ok(0)
}

/// Renders the page and the trial tables.
pub fn render(sections: &[Section], hosts: &BTreeMap<String, String>) -> anyhow::Result<Rendered> {
    if sections.is_empty() {
        bail!("a report needs at least one sweep");
    }
    let html = html::page(sections, hosts)?;
    // Each sweep's trials once, the joined ones too.
    let mut seen = BTreeSet::new();
    let mut all: Vec<&ResultsFile> = Vec::new();
    for s in sections {
        for r in std::iter::once(&s.results).chain(s.joined.iter()) {
            if seen.insert(r.sweep.id.clone()) {
                all.push(r);
            }
        }
    }
    Ok(Rendered {
        html,
        csv: export::trials_csv(&all)?,
        json: export::trials_json(&all)?,
    })
}

/// Results and trials the report's tests are built from.
#[cfg(test)]
pub(crate) mod fixtures {
    #![allow(clippy::unwrap_used)]
    use chimera_domain::results::{ResultsFile, SweepSummary, TrialRecord};
    use std::collections::BTreeMap;

    /// A succeeded kernel trial built from its JSON form (as results.json
    /// carries it).
    pub fn trial(id: &str, idx: u32, format: &str, metrics: &[(&str, f64)]) -> TrialRecord {
        let metrics: BTreeMap<&str, f64> = metrics.iter().copied().collect();
        serde_json::from_value(serde_json::json!({
            "id": id, "sweep_id": "S1", "state": "succeeded",
            "device_class": "cpu: test x2", "config_index": idx, "repeat": 0, "attempt": 1,
            "agent": "local", "device_id": "cpu",
            "params": {"op": "qmatmul", "format": format, "shape": "1,64,64"},
            "metrics": metrics, "wall_ms": 12.5,
        }))
        .unwrap()
    }

    /// `trial` repeated: the `k`-th of `values` is repeat `k`.
    pub fn repeats(
        first_id: u32,
        idx: u32,
        format: &str,
        metric: &str,
        values: &[f64],
    ) -> Vec<TrialRecord> {
        values
            .iter()
            .enumerate()
            .map(|(k, v)| {
                let mut t = trial(
                    &format!("t{:05}", first_id as usize + k),
                    idx,
                    format,
                    &[(metric, *v)],
                );
                t.repeat = k as u32;
                t
            })
            .collect()
    }

    /// Sweep S1, a kernel sweep whose name needs escaping in HTML and CSV.
    pub fn results(trials: Vec<TrialRecord>) -> ResultsFile {
        ResultsFile::new(
            SweepSummary {
                id: "S1".into(),
                name: "quick, \"start\"".into(),
                workload: "kernel".into(),
                state: "done".into(),
                created_unix_ms: 1_700_000_000_000,
                order_seed: None,
            },
            trials,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::fixtures::{repeats, results};
    use super::*;

    #[test]
    fn a_report_draws_its_charts_and_says_when_it_cannot() {
        let mut t = repeats(0, 0, "q8_0", "gflop_per_s", &[10.0, 12.0]);
        t.extend(repeats(2, 1, "q4_0", "gflop_per_s", &[2.0]));
        let s = Section {
            results: results(t),
            origin: "results.json".into(),
            joined: vec![],
            metric: "gflop_per_s".into(),
            pareto: None,
            telemetry: Telemetry {
                samples: BTreeMap::new(),
                source: "telemetry.jsonl".into(),
                missing: Some("No telemetry: none saved.".into()),
            },
        };
        let r = render(&[s], &BTreeMap::new()).unwrap();
        let metric = r.html.split("id=\"s0-metric\"").nth(1).unwrap();
        let metric = metric.split("</section>").next().unwrap();
        assert_eq!(metric.matches("<svg").count(), 1);
        assert!(metric.contains("gflop_per_s [GFLOP/s]"));
        assert!(r.html.contains("No telemetry: none saved."));
        assert!(r.html.contains("No Pareto chart"));
        assert!(r.html.contains("quick, &quot;start&quot;"));
    }
}
