//! Device telemetry of a report's trials: fetched from the controller,
//! saved beside a results file by `chimera run` (`telemetry.jsonl`) and
//! read back, grouped per trial.

use super::selection::{select, Pick};
use crate::client::{status, Client};
use anyhow::{anyhow, Context};
use chimera_domain::results::ResultsFile;
use chimera_domain::telemetry::{Sample, TrialSample, TELEMETRY_FILE};
use chimera_proto::v1 as proto;
use std::collections::BTreeMap;
use std::path::Path;

/// At most this many samples are saved next to a results file beyond those
/// of the trials a report selects (about 250 bytes each).
pub const SAVED_SAMPLES_BUDGET: usize = 20_000;

/// How long after a sweep ends its last samples may still be on their way
/// to the controller (agents stream telemetry every second).
pub const TELEMETRY_FLUSH: std::time::Duration = std::time::Duration::from_millis(1500);

/// Telemetry of a section's trials, or why there is none.
#[derive(Clone, Debug, Default)]
pub struct Telemetry {
    /// Trial id → its samples (every attempt), oldest first.
    pub samples: BTreeMap<String, Vec<Sample>>,
    /// Where the samples were read, for the page.
    pub source: String,
    /// Why there are no samples at all, as a sentence for the page.
    pub missing: Option<String>,
}

/// The samples the controller kept for each of `trials` of a sweep.
pub async fn fetch_telemetry(
    client: &mut Client,
    sweep_id: &str,
    trials: &[String],
) -> anyhow::Result<BTreeMap<String, Vec<Sample>>> {
    let mut out = BTreeMap::new();
    for trial in trials {
        let samples = client
            .get_telemetry(proto::GetTelemetryRequest {
                sweep_id: sweep_id.to_owned(),
                trial_id: trial.clone(),
            })
            .await
            .map_err(status("get a trial's telemetry"))?
            .into_inner()
            .samples;
        if !samples.is_empty() {
            let samples = samples
                .into_iter()
                .map(Sample::try_from)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow!("a telemetry sample of trial `{trial}`: {e}"))?;
            out.insert(trial.clone(), samples);
        }
    }
    Ok(out)
}

/// The samples `chimera run` saves of a finished sweep: those of the trials
/// a report on `metric` selects, then every other trial's while fewer than
/// `budget` samples are saved (the budget shrinks by what is taken).
pub async fn collect_telemetry(
    client: &mut Client,
    results: &ResultsFile,
    metric: &str,
    budget: &mut usize,
) -> anyhow::Result<Vec<TrialSample>> {
    let picked: Vec<String> = select(results, metric)
        .into_iter()
        .map(|p| p.trial_id)
        .collect();
    let mut out = Vec::new();
    let save = |trial: &str, samples: Vec<Sample>, out: &mut Vec<TrialSample>| {
        for sample in samples {
            out.push(TrialSample {
                sweep_id: results.sweep.id.clone(),
                trial_id: trial.to_owned(),
                sample,
            });
        }
    };
    for (trial, samples) in fetch_telemetry(client, &results.sweep.id, &picked).await? {
        *budget = budget.saturating_sub(samples.len());
        save(&trial, samples, &mut out);
    }
    for t in &results.trials {
        if *budget == 0 {
            break;
        }
        if picked.contains(&t.id) {
            continue;
        }
        let got = fetch_telemetry(client, &results.sweep.id, std::slice::from_ref(&t.id)).await?;
        for (trial, samples) in got {
            *budget = budget.saturating_sub(samples.len());
            save(&trial, samples, &mut out);
        }
    }
    Ok(out)
}

/// Writes samples as [`TELEMETRY_FILE`] lines.
pub fn write_telemetry(path: &Path, samples: &[TrialSample]) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    for s in samples {
        serde_json::to_writer(&mut buf, s)?;
        buf.push(b'\n');
    }
    std::fs::write(path, buf).with_context(|| format!("write {}", path.display()))
}

/// Reads a [`TELEMETRY_FILE`]; an error names the line.
pub fn read_telemetry(path: &Path) -> anyhow::Result<Vec<TrialSample>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("parse {} line {}", path.display(), i + 1))
        })
        .collect()
}

/// A sweep's samples among saved ones.
pub fn telemetry_of(saved: &[TrialSample], sweep_id: &str, source: &str) -> Telemetry {
    let mut samples: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for s in saved.iter().filter(|s| s.sweep_id == sweep_id) {
        samples
            .entry(s.trial_id.clone())
            .or_default()
            .push(s.sample.clone());
    }
    for v in samples.values_mut() {
        v.sort_by_key(|s| s.t_ms);
    }
    let missing = samples
        .is_empty()
        .then(|| format!("{source} holds no telemetry samples of sweep {sweep_id}."));
    Telemetry {
        samples,
        source: source.to_owned(),
        missing,
    }
}

/// The telemetry saved beside a results file, if any.
pub fn beside(results_path: &Path, sweep_id: &str) -> anyhow::Result<Telemetry> {
    let dir = results_path.parent().unwrap_or(Path::new("."));
    let path = dir.join(TELEMETRY_FILE);
    if !path.is_file() {
        return Ok(Telemetry {
            samples: BTreeMap::new(),
            source: path.display().to_string(),
            missing: Some(format!(
                "No telemetry: there is no {TELEMETRY_FILE} beside {} (`chimera run` and `chimera demo` write one).",
                results_path.display()
            )),
        });
    }
    let saved = read_telemetry(&path)?;
    Ok(telemetry_of(&saved, sweep_id, &path.display().to_string()))
}

/// The samples of the trials a report on `metric` selects, from the
/// controller at `url`; a sentence for the page when it kept none.
pub async fn of_selected(
    client: &mut Client,
    url: &str,
    results: &ResultsFile,
    metric: &str,
) -> anyhow::Result<Telemetry> {
    let picks: Vec<String> = select(results, metric)
        .into_iter()
        .map(|p| p.trial_id)
        .collect();
    let samples = fetch_telemetry(client, &results.sweep.id, &picks).await?;
    let missing = samples.is_empty().then(|| {
        "No telemetry: the controller kept no samples of the selected trials \
         (the agents' sampler may be off, or the sweep is older than the 200 \
         sweeps whose telemetry the controller keeps)."
            .to_owned()
    });
    Ok(Telemetry {
        samples,
        source: format!("the controller at {url}"),
        missing,
    })
}

/// The samples of a pick's attempt (all of them when none is labelled with it).
pub fn attempt_samples<'a>(sweep: &str, pick: &Pick, all: &'a [Sample]) -> Vec<&'a Sample> {
    let label = format!("{sweep}/{}/{}", pick.trial_id, pick.attempt);
    let mine: Vec<&Sample> = all
        .iter()
        .filter(|s| s.trial.as_deref() == Some(label.as_str()))
        .collect();
    if mine.is_empty() {
        all.iter().collect()
    } else {
        mine
    }
}
