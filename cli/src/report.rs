//! `chimera report`: a static, self-contained HTML page — per sweep a
//! section with its header, the comparison table and SVG charts drawn with
//! plotters (the metric per configuration and device class, the Pareto front
//! of two metrics, device telemetry of the best and worst trials) — and every
//! trial as `trials.csv` and `trials.json`.
//!
//! Everything is rendered in memory first, then written to a temporary
//! directory beside (or inside) DIR and moved into place: a failure leaves
//! nothing half-written. Every number on the page comes from the results or
//! the telemetry samples; a chart with nothing to draw is a sentence instead.

use crate::output::{self, num};
use anyhow::{anyhow, bail, Context};
use chimera_domain::compare::{self, Comparison, ParetoPoint};
use chimera_domain::metrics;
use chimera_domain::params::label;
use chimera_domain::results::{ResultsFile, TrialRecord, TrialState};
use chimera_domain::telemetry::{Phase, Sample, TrialSample, TELEMETRY_FILE};
use chimera_proto::v1 as proto;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The page.
pub const INDEX: &str = "index.html";
/// Every trial, one row each.
pub const TRIALS_CSV: &str = "trials.csv";
/// The same rows as JSON.
pub const TRIALS_JSON: &str = "trials.json";
/// The `format` field of `trials.json`.
pub const TRIALS_FORMAT: &str = "chimera.trials";

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

/// The samples the controller kept for each of `trials` of a sweep.
pub async fn fetch_telemetry(
    client: &mut crate::Client,
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
            .map_err(crate::status("get a trial's telemetry"))?
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
    client: &mut crate::Client,
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
pub fn telemetry_beside(results_path: &Path, sweep_id: &str) -> anyhow::Result<Telemetry> {
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

// ---------------------------------------------------------------------------
// The command.

/// `chimera report SWEEP... [--with OTHER]... [--metric M] [--pareto X,Y] --out DIR`.
pub async fn command(
    url: &str,
    sweeps: &[String],
    with: &[String],
    metric: Option<&str>,
    pareto: Option<&str>,
    out: &Path,
) -> anyhow::Result<i32> {
    let pareto = pareto.map(parse_pareto).transpose()?;
    let mut hosts = BTreeMap::new();
    let mut client: Option<crate::Client> = None;
    let mut loaded = Vec::new();
    for s in sweeps.iter().chain(with) {
        let path = Path::new(s);
        let (results, from_file) = if path.is_file() {
            (crate::load_results_file(path)?, true)
        } else {
            if client.is_none() {
                let mut c = crate::connect(url).await?;
                for a in c
                    .list_agents(proto::ListAgentsRequest::default())
                    .await
                    .map_err(crate::status("list agents"))?
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
            (crate::fetch_results(c, s).await?, false)
        };
        loaded.push((s.clone(), results, from_file));
    }
    let others: Vec<(String, ResultsFile)> = loaded
        .split_off(sweeps.len())
        .into_iter()
        .map(|(s, r, _)| (s, r))
        .collect();
    for (name, other) in &others {
        if !loaded.iter().any(|(_, r, _)| matches(r, other)) {
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
            .filter(|(_, o)| matches(&results, o))
            .map(|(_, o)| o.clone())
            .collect();
        let metric = choose_metric(&results, metric)?;
        let pareto = choose_pareto(&results, &joined, pareto.as_ref())?;
        let telemetry = if from_file {
            telemetry_beside(Path::new(&name), &results.sweep.id)?
        } else {
            let picks: Vec<String> = select(&results, &metric)
                .into_iter()
                .map(|p| p.trial_id)
                .collect();
            let c = client
                .as_mut()
                .ok_or_else(|| anyhow!("no controller client"))?;
            let samples = fetch_telemetry(c, &results.sweep.id, &picks).await?;
            let missing = samples.is_empty().then(|| {
                "No telemetry: the controller kept no samples of the selected trials \
                 (the agents' sampler may be off, or the sweep is older than the 200 \
                 sweeps whose telemetry the controller keeps)."
                    .to_owned()
            });
            Telemetry {
                samples,
                source: format!("the controller at {url}"),
                missing,
            }
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

// ---------------------------------------------------------------------------
// Writing.

/// Writes the report's files into `dir`, all or nothing: they are written
/// into a temporary directory first (inside `dir` when it exists, else beside
/// it), then moved into place.
pub fn write(dir: &Path, r: &Rendered) -> anyhow::Result<()> {
    let files: [(&str, &[u8]); 3] = [
        (INDEX, r.html.as_bytes()),
        (TRIALS_CSV, &r.csv),
        (TRIALS_JSON, &r.json),
    ];
    let what = || format!("write the report to --out {}", dir.display());
    if dir.exists() && !dir.is_dir() {
        bail!(
            "{}: `{}` exists and is not a directory",
            what(),
            dir.display()
        );
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let existing = dir.is_dir();
    if !existing {
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("{}: create {}", what(), parent.display()))?;
    }
    let staging_in = if existing { dir } else { parent.as_path() };
    let tmp = tempfile::Builder::new()
        .prefix(".chimera-report-")
        .tempdir_in(staging_in)
        .with_context(|| {
            format!(
                "{}: create a temporary directory in {}",
                what(),
                staging_in.display()
            )
        })?;
    for (name, bytes) in files {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).with_context(|| format!("{}: write {}", what(), p.display()))?;
    }
    if existing {
        for (name, _) in files {
            std::fs::rename(tmp.path().join(name), dir.join(name))
                .with_context(|| format!("{}: move {name} into place", what()))?;
        }
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("{}: set the directory's permissions", what()))?;
    }
    let staged = tmp.keep();
    if let Err(e) = std::fs::rename(&staged, dir) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(anyhow!(e).context(format!("{}: move the report into place", what())));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// trials.csv and trials.json.

/// One trial as `trials.json` carries it (the CSV's columns, with the
/// parameters and the metrics as objects).
#[derive(Serialize)]
struct TrialRow<'a> {
    id: &'a str,
    sweep_id: &'a str,
    sweep_name: &'a str,
    workload: &'a str,
    device_class: &'a str,
    agent: Option<&'a str>,
    device_id: Option<&'a str>,
    config_index: u32,
    params: &'a chimera_domain::Params,
    repeat: u32,
    attempt: u32,
    state: &'a str,
    error: Option<&'a str>,
    metrics: &'a BTreeMap<String, f64>,
    wall_ms: Option<f64>,
}

/// The fixed columns of `trials.csv`, before the parameters.
pub const CSV_LEAD: &[&str] = &[
    "id",
    "sweep_id",
    "sweep_name",
    "workload",
    "device_class",
    "agent",
    "device_id",
    "config_index",
];
/// The fixed columns after the parameters, before the metrics.
pub const CSV_MID: &[&str] = &["repeat", "attempt", "state", "error"];

/// Every trial of these sweeps as CSV: the fixed columns, `param.NAME` per
/// parameter, then one column per metric (both sorted by name), then
/// `wall_ms`. Text that a spreadsheet would run as a formula is quoted
/// ([`output::csv_cell`]).
pub fn trials_csv(sweeps: &[&ResultsFile]) -> anyhow::Result<Vec<u8>> {
    let trials = || {
        sweeps
            .iter()
            .flat_map(|r| r.trials.iter().map(move |t| (&r.sweep, t)))
    };
    let params: BTreeSet<&String> = trials().flat_map(|(_, t)| t.params.keys()).collect();
    let mets: BTreeSet<&String> = trials().flat_map(|(_, t)| t.metrics.keys()).collect();
    let mut header: Vec<String> = CSV_LEAD.iter().map(|s| (*s).to_owned()).collect();
    header.extend(params.iter().map(|p| format!("param.{p}")));
    header.extend(CSV_MID.iter().map(|s| (*s).to_owned()));
    header.extend(mets.iter().map(|m| (*m).clone()));
    header.push("wall_ms".to_owned());
    let mut w = csv::Writer::from_writer(Vec::new());
    output::write_csv_row(&mut w, &header)?;
    for (s, t) in trials() {
        let mut row = vec![
            t.id.clone(),
            t.sweep_id.clone(),
            s.name.clone(),
            s.workload.clone(),
            t.device_class.clone(),
            t.agent.clone().unwrap_or_default(),
            t.device_id.clone().unwrap_or_default(),
            t.config_index.to_string(),
        ];
        row.extend(
            params
                .iter()
                .map(|p| t.params.get(*p).map(|v| v.to_string()).unwrap_or_default()),
        );
        row.extend([
            t.repeat.to_string(),
            t.attempt.to_string(),
            t.state.name().to_owned(),
            t.error.clone().unwrap_or_default(),
        ]);
        row.extend(
            mets.iter()
                .map(|m| t.metrics.get(*m).map(|v| v.to_string()).unwrap_or_default()),
        );
        row.push(t.wall_ms.map(|v| v.to_string()).unwrap_or_default());
        output::write_csv_row(&mut w, &row)?;
    }
    w.into_inner().map_err(|e| anyhow!("write CSV: {e}"))
}

/// Every trial of these sweeps as `trials.json`.
pub fn trials_json(sweeps: &[&ResultsFile]) -> anyhow::Result<Vec<u8>> {
    let rows: Vec<TrialRow> = sweeps
        .iter()
        .flat_map(|r| {
            r.trials.iter().map(move |t| TrialRow {
                id: &t.id,
                sweep_id: &t.sweep_id,
                sweep_name: &r.sweep.name,
                workload: &r.sweep.workload,
                device_class: &t.device_class,
                agent: t.agent.as_deref(),
                device_id: t.device_id.as_deref(),
                config_index: t.config_index,
                params: &t.params,
                repeat: t.repeat,
                attempt: t.attempt,
                state: t.state.name(),
                error: t.error.as_deref(),
                metrics: &t.metrics,
                wall_ms: t.wall_ms,
            })
        })
        .collect();
    Ok(serde_json::to_vec_pretty(&serde_json::json!({
        "format": TRIALS_FORMAT,
        "version": 1,
        "trials": rows,
    }))?)
}

// ---------------------------------------------------------------------------
// The page.

/// Text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An axis title: the metric with its unit.
pub fn axis_title(metric: &str) -> String {
    let u = metrics::unit(metric);
    if u.is_empty() {
        format!("{metric} [no unit]")
    } else {
        format!("{metric} [{u}]")
    }
}

fn direction(metric: &str) -> &'static str {
    if metrics::higher_is_better(metric) {
        "higher is better"
    } else {
        "lower is better"
    }
}

/// Okabe–Ito: distinguishable with the common colour-vision deficiencies.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0x00, 0x00, 0x00),
    RGBColor(0xF0, 0xE4, 0x42),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn css(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

fn legend(items: &[(RGBColor, String)]) -> String {
    let mut s = String::from("<ul class=\"legend\">");
    for (c, text) in items {
        let _ = write!(
            s,
            "<li><span class=\"swatch\" style=\"background:{}\"></span>{}</li>",
            css(*c),
            esc(text)
        );
    }
    s.push_str("</ul>");
    s
}

fn draw_err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> anyhow::Error {
    move |e| anyhow!("draw the {what} chart: {e}")
}

/// A range with some room around `lo..hi` (and a span when they are equal).
fn padded(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if hi > lo {
        let pad = (hi - lo) * frac;
        (lo - pad, hi + pad)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    }
}

const FONT: &str = "sans-serif";

/// An axis tick: [`num`] without trailing zeros (`8`, `0.05`, `2.5`).
fn tick(v: &f64) -> String {
    let s = num(*v);
    if s.contains('.') && !s.contains('e') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// Rows of a horizontal bar chart: row 0 at the top, a key point per row.
struct Rows(usize);

impl Ranged for Rows {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;
    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let n = self.0.max(1) as f64;
        // limit is (bottom, top) for a y axis: row 0 maps next to the top.
        let frac = (value + 0.5) / n;
        (f64::from(limit.1) + frac * f64::from(limit.0 - limit.1)).round() as i32
    }
    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        (0..self.0).map(|i| i as f64).collect()
    }
    fn range(&self) -> std::ops::Range<f64> {
        -0.5..(self.0 as f64 - 0.5)
    }
}

/// The longest bar label drawn whole; the table has every label in full.
const BAR_LABEL_MAX: usize = 64;

/// A bar's label: the setup alone when every row solves the same problem
/// (the caption names it), else the whole configuration; cut at
/// [`BAR_LABEL_MAX`] characters.
fn bar_labels(rows: &[&compare::Row]) -> Vec<String> {
    let one_problem = rows.iter().all(|r| r.group == rows[0].group);
    rows.iter()
        .map(|r| {
            let l = if one_problem && !r.setup.is_empty() {
                &r.setup
            } else {
                &r.config
            };
            crate::table::truncate(l, BAR_LABEL_MAX)
        })
        .collect()
}

/// The problem every row of a comparison solves, when there is one.
fn common_problem(c: &Comparison) -> Option<&str> {
    let rows: Vec<&compare::Row> = c
        .rows
        .iter()
        .filter(|r| r.cells.iter().any(Option::is_some))
        .collect();
    let first = rows.first()?;
    (!first.group.is_empty()
        && !first.setup.is_empty()
        && rows.iter().all(|r| r.group == first.group))
    .then_some(first.group.as_str())
}

/// The metric per configuration and class: horizontal bars at the median,
/// whiskers over the 95% interval of the mean where there are repeats.
fn metric_chart(c: &Comparison) -> anyhow::Result<Option<String>> {
    let rows: Vec<&compare::Row> = c
        .rows
        .iter()
        .filter(|r| r.cells.iter().any(Option::is_some))
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let k = c.classes.len().max(1);
    // The axis spans the medians (and 0); intervals widen it by at most the
    // medians' own span on the right and a quarter of it on the left, and
    // are cut at its edges (a cut whisker has no cap there).
    let cells = || rows.iter().flat_map(|r| r.cells.iter().flatten());
    let mut lo = cells().map(|c| c.value).fold(0f64, f64::min);
    let mut hi = cells().map(|c| c.value).fold(0f64, f64::max);
    if hi <= lo {
        hi = lo + 1.0;
    }
    let span = hi - lo;
    let (lo_limit, hi_limit) = (lo - span * 0.25, hi + span);
    for (a, b) in cells().filter_map(|c| c.ci95.filter(|_| c.samples > 1)) {
        lo = lo.min(a.max(lo_limit));
        hi = hi.max(b.min(hi_limit));
    }
    let (clip_lo, clip_hi) = (lo, hi);
    // Room on the right for the value labels.
    let hi = hi + (hi - lo) * 0.2;
    let labels = bar_labels(&rows);
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(10);
    // About 7 px a character at 13 px, and room for the axis title.
    let label_px = (longest as u32 * 7 + 44).clamp(100, 500);
    let row_px = (k as u32 * 16 + 12).max(28);
    let (w, h) = (960u32, 90 + rows.len() as u32 * row_px);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err("metric"))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(label_px)
            .build_cartesian_2d(lo..hi, Rows(rows.len()))
            .map_err(draw_err("metric"))?;
        let fmt_x = tick;
        let fmt_y = |v: &f64| {
            labels
                .get(v.round().max(0.0) as usize)
                .cloned()
                .unwrap_or_default()
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_labels(8)
            .y_labels(rows.len())
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
            .x_desc(axis_title(&c.metric))
            .y_desc("configuration")
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(draw_err("metric"))?;
        let band = 0.8 / k as f64;
        for (i, r) in rows.iter().enumerate() {
            for (j, cell) in r.cells.iter().enumerate() {
                let Some(cell) = cell else { continue };
                let col = color(j);
                let y0 = i as f64 - 0.4 + j as f64 * band;
                let y1 = y0 + band * 0.85;
                let ym = (y0 + y1) / 2.0;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(0f64.max(lo), y0), (cell.value, y1)],
                        col.mix(0.85).filled(),
                    )))
                    .map_err(draw_err("metric"))?;
                let mut right = cell.value.max(0.0);
                if let Some((a, b)) = cell.ci95.filter(|_| cell.samples > 1) {
                    let (a2, b2) = (a.max(clip_lo), b.min(clip_hi));
                    right = right.max(b2);
                    let cap = band * 0.3;
                    let style = BLACK.stroke_width(1);
                    let mut whisker = vec![PathElement::new(vec![(a2, ym), (b2, ym)], style)];
                    for (end, cut) in [(a2, a2 != a), (b2, b2 != b)] {
                        if !cut {
                            whisker.push(PathElement::new(
                                vec![(end, ym - cap), (end, ym + cap)],
                                style,
                            ));
                        }
                    }
                    chart.draw_series(whisker).map_err(draw_err("metric"))?;
                }
                let text = format!("{}{}", num(cell.value), if cell.best { " *" } else { "" });
                chart
                    .draw_series(std::iter::once(Text::new(
                        text,
                        (right + (hi - lo) * 0.01, ym),
                        (FONT, 12)
                            .into_font()
                            .color(&BLACK)
                            .pos(Pos::new(HPos::Left, VPos::Center)),
                    )))
                    .map_err(draw_err("metric"))?;
            }
        }
        root.present().map_err(draw_err("metric"))?;
    }
    Ok(Some(svg))
}

/// Every configuration of each class at (x, y), the Pareto front filled and
/// connected.
fn pareto_chart(
    points: &[ParetoPoint],
    front: &[ParetoPoint],
    classes: &[String],
    x: &str,
    y: &str,
) -> anyhow::Result<String> {
    let (xlo, xhi) = padded(
        points.iter().map(|p| p.x).fold(f64::INFINITY, f64::min),
        points.iter().map(|p| p.x).fold(f64::NEG_INFINITY, f64::max),
        0.12,
    );
    let (ylo, yhi) = padded(
        points.iter().map(|p| p.y).fold(f64::INFINITY, f64::min),
        points.iter().map(|p| p.y).fold(f64::NEG_INFINITY, f64::max),
        0.1,
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err("Pareto"))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(90)
            .build_cartesian_2d(xlo..xhi, ylo..yhi)
            .map_err(draw_err("Pareto"))?;
        let fmt = tick;
        chart
            .configure_mesh()
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&fmt)
            .y_label_formatter(&fmt)
            .x_desc(format!("{} ({})", axis_title(x), direction(x)))
            .y_desc(format!("{} ({})", axis_title(y), direction(y)))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(draw_err("Pareto"))?;
        let label_points = points.len() <= 24;
        for (ci, class) in classes.iter().enumerate() {
            let col = color(ci);
            let mut on_front: Vec<(f64, f64)> = front
                .iter()
                .filter(|p| &p.class == class)
                .map(|p| (p.x, p.y))
                .collect();
            on_front.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(on_front.clone(), col.stroke_width(2)))
                .map_err(draw_err("Pareto"))?;
            for p in points.iter().filter(|p| &p.class == class) {
                let front_point = on_front.contains(&(p.x, p.y));
                let style = if front_point {
                    col.filled()
                } else {
                    col.stroke_width(2)
                };
                chart
                    .draw_series(std::iter::once(Circle::new((p.x, p.y), 6, style)))
                    .map_err(draw_err("Pareto"))?;
                if label_points {
                    // Labels of points in the right half extend to the left.
                    let side = if p.x > (xlo + xhi) / 2.0 {
                        HPos::Right
                    } else {
                        HPos::Left
                    };
                    chart
                        .draw_series(std::iter::once(Text::new(
                            format!(" {} ", p.config),
                            (p.x, p.y),
                            (FONT, 12)
                                .into_font()
                                .color(&BLACK)
                                .pos(Pos::new(side, VPos::Bottom)),
                        )))
                        .map_err(draw_err("Pareto"))?;
                }
            }
        }
        root.present().map_err(draw_err("Pareto"))?;
    }
    Ok(svg)
}

/// Sensors a telemetry chart groups: a title, the fields, their unit.
const SENSORS: &[(&str, &[&str], &str)] = &[
    ("Power", &["power_w"], "W"),
    ("Utilisation", &["gpu_util_pct", "cpu_util_pct"], "%"),
    ("Clock", &["sm_clock_mhz", "cpu_mhz_mean"], "MHz"),
    ("Temperature", &["temp_c"], "°C"),
];

/// The samples of a pick's attempt (all of them when none is labelled with it).
fn attempt_samples<'a>(sweep: &str, pick: &Pick, all: &'a [Sample]) -> Vec<&'a Sample> {
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

/// One sensor over time for each selected trial: seconds since the trial's
/// first sample against the value; dots mark samples of the measured window.
fn telemetry_chart(
    fields: &[&str],
    unit: &str,
    series: &[(RGBColor, Vec<&Sample>)],
) -> anyhow::Result<Option<(String, Vec<String>)>> {
    // (seconds, value, in the measured window) per series.
    type Points = Vec<(f64, f64, bool)>;
    let mut lines: Vec<(RGBColor, Points)> = Vec::new();
    let mut used: BTreeSet<String> = BTreeSet::new();
    for (col, samples) in series {
        let Some(t0) = samples.first().map(|s| s.t_ms) else {
            continue;
        };
        for f in fields {
            let pts: Vec<(f64, f64, bool)> = samples
                .iter()
                .filter_map(|s| {
                    s.fields
                        .get(*f)
                        .filter(|v| v.is_finite())
                        .map(|v| ((s.t_ms - t0) as f64 / 1000.0, *v, s.phase == Phase::Measure))
                })
                .collect();
            if !pts.is_empty() {
                used.insert((*f).to_owned());
                lines.push((*col, pts));
            }
        }
    }
    if lines.is_empty() {
        return Ok(None);
    }
    let all = || lines.iter().flat_map(|(_, p)| p.iter());
    let tmax = all().map(|p| p.0).fold(0.0, f64::max).max(0.1);
    let (mut ylo, mut yhi) = padded(
        all().map(|p| p.1).fold(f64::INFINITY, f64::min),
        all().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max),
        0.1,
    );
    if unit == "%" {
        ylo = 0.0;
        yhi = yhi.max(100.0);
    }
    let used: Vec<String> = used.into_iter().collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err("telemetry"))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..tmax * 1.02, ylo..yhi)
            .map_err(draw_err("telemetry"))?;
        let fmt = tick;
        chart
            .configure_mesh()
            .x_labels(10)
            .y_labels(6)
            .x_label_formatter(&fmt)
            .y_label_formatter(&fmt)
            .x_desc("time since the trial's first sample [s]")
            .y_desc(format!("{} [{unit}]", used.join(", ")))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(draw_err("telemetry"))?;
        for (col, pts) in &lines {
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|p| (p.0, p.1)),
                    col.mix(0.85).stroke_width(2),
                ))
                .map_err(draw_err("telemetry"))?;
            chart
                .draw_series(
                    pts.iter()
                        .filter(|p| p.2)
                        .map(|p| Circle::new((p.0, p.1), 3, col.filled())),
                )
                .map_err(draw_err("telemetry"))?;
        }
        root.present().map_err(draw_err("telemetry"))?;
    }
    Ok(Some((svg, used)))
}

fn html_table(header: &[String], rows: &[Vec<String>], numeric_from: usize) -> String {
    let mut s = String::from("<table><thead><tr>");
    for h in header {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows {
        s.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let class = if i >= numeric_from {
                " class=\"n\""
            } else {
                ""
            };
            let _ = write!(s, "<td{class}>{}</td>", esc(c));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

const STYLE: &str = "
body{font-family:sans-serif;margin:1.5em auto;max-width:1000px;padding:0 1em;color:#111}
h1{font-size:1.6em}h2{border-bottom:2px solid #0072b2;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:bold}dd{margin:0}
figure{margin:.5em 0}svg{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.note{font-size:.85em;color:#444}
.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.4em 1.2em;font-size:.85em}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.35em;vertical-align:middle}
p.none{font-style:italic;color:#555}
code{background:#f4f4f4;padding:0 .2em}
";

/// The header of a section: the sweep, and the device classes it ran on.
fn section_header(s: &Section, hosts: &BTreeMap<String, String>) -> String {
    let r = &s.results;
    let mut h = String::new();
    let count = |st: TrialState| r.trials.iter().filter(|t| t.state == st).count();
    let _ = write!(
        h,
        "<dl><dt>sweep</dt><dd><code>{}</code> ({})</dd><dt>workload</dt><dd>{}</dd>\
         <dt>created</dt><dd>{}</dd><dt>state</dt><dd>{}: {} trials, {} succeeded, {} failed, {} cancelled</dd>\
         <dt>read from</dt><dd>{}</dd>",
        esc(&r.sweep.id),
        esc(&r.sweep.name),
        esc(&r.sweep.workload),
        utc(r.sweep.created_unix_ms),
        esc(&r.sweep.state),
        r.trials.len(),
        count(TrialState::Succeeded),
        count(TrialState::Failed),
        count(TrialState::Cancelled),
        esc(&s.origin),
    );
    for j in &s.joined {
        let _ = write!(
            h,
            "<dt>joined</dt><dd><code>{}</code> ({}, {}), by device class and setup</dd>",
            esc(&j.sweep.id),
            esc(&j.sweep.name),
            esc(&j.sweep.workload)
        );
    }
    h.push_str("</dl>");
    // Device classes: where their trials ran and in which environment.
    /// Agents (with hosts), devices and environments seen on a class.
    #[derive(Default)]
    struct Seen {
        agents: BTreeSet<String>,
        devices: BTreeSet<String>,
        envs: BTreeSet<String>,
    }
    let mut classes: BTreeMap<&str, Seen> = BTreeMap::new();
    for t in r
        .trials
        .iter()
        .chain(s.joined.iter().flat_map(|j| j.trials.iter()))
    {
        let e = classes.entry(t.device_class.as_str()).or_default();
        if let Some(a) = &t.agent {
            e.agents
                .insert(match hosts.get(a).filter(|h| !h.is_empty()) {
                    Some(host) => format!("{a} (host {host})"),
                    None => a.clone(),
                });
        }
        if let Some(d) = &t.device_id {
            e.devices.insert(d.clone());
        }
        if let Some(f) = &t.fingerprint {
            let mut fp = format!(
                "{}, {} threads, {}; agent {} ({}), candle {}, {}",
                f.cpu_model,
                f.threads,
                f.os,
                f.agent_version,
                f.agent_git_sha,
                f.candle_version,
                f.rustc_version
            );
            for (k, v) in &f.extra {
                let _ = write!(fp, ", {k}={v}");
            }
            e.envs.insert(fp);
        }
    }
    let join = |s: &BTreeSet<String>| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.iter().cloned().collect::<Vec<_>>().join("; ")
        }
    };
    let rows: Vec<Vec<String>> = classes
        .iter()
        .map(|(c, seen)| {
            vec![
                (*c).to_owned(),
                join(&seen.agents),
                join(&seen.devices),
                join(&seen.envs),
            ]
        })
        .collect();
    h.push_str(&html_table(
        &[
            "device class".into(),
            "agents".into(),
            "devices".into(),
            "environment (fingerprint)".into(),
        ],
        &rows,
        usize::MAX,
    ));
    h
}

fn section_html(k: usize, s: &Section, hosts: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let r = &s.results;
    let mut h = String::new();
    let _ = write!(
        h,
        "<section id=\"s{k}\" class=\"sweep\"><h2>{} <small>({} sweep)</small></h2><div id=\"s{k}-header\">{}</div>",
        esc(&r.sweep.name),
        esc(&r.sweep.workload),
        section_header(s, hosts)
    );
    // The comparison, as `chimera compare` prints it.
    let cmp = compare::compare(&r.trials, &s.metric);
    let (header, rows) = output::comparison_table(&cmp, true);
    let _ = write!(
        h,
        "<div id=\"s{k}-table\"><h3>Comparison: {}</h3>{}<p class=\"note\">{}</p>",
        esc(&axis_title(&s.metric)),
        html_table(&header, &rows, 2),
        esc(&output::comparison_note(&cmp))
    );
    if r.sweep.workload == "generate" {
        if let Some(eval) = s.joined.iter().find(|j| j.sweep.workload == "eval") {
            let rows = compare::tradeoff(&r.trials, &eval.trials);
            if !rows.is_empty() {
                let (header, rows) = output::tradeoff_table(&rows, true);
                let _ = write!(
                    h,
                    "<h3>Speed against accuracy per weight format</h3>{}<p class=\"note\">{}</p>",
                    html_table(&header, &rows, 2),
                    esc(output::TRADEOFF_NOTE)
                );
            }
        }
    }
    h.push_str("</div>");
    // (a) The metric per configuration and class.
    let _ = write!(
        h,
        "<section id=\"s{k}-metric\" class=\"chart\"><h3>{} per configuration and device class</h3>",
        esc(&s.metric)
    );
    match metric_chart(&cmp)? {
        Some(svg) => {
            let items: Vec<(RGBColor, String)> = cmp
                .classes
                .iter()
                .enumerate()
                .map(|(i, c)| (color(i), c.clone()))
                .collect();
            let _ = write!(
                h,
                "{}<figure>{svg}<figcaption>{}Bars: median of {} over the succeeded repeats ({}); \
                 whiskers: 95% interval of the mean where a configuration has two repeats or more \
                 (one cut at the chart's edge ends without a cap); * = best setup for its problem on the class, as in the table.</figcaption></figure>",
                legend(&items),
                common_problem(&cmp)
                    .map(|p| format!("Every configuration solves {}. ", esc(p)))
                    .unwrap_or_default(),
                esc(&s.metric),
                direction(&s.metric)
            );
        }
        None => {
            let _ = write!(
                h,
                "<p class=\"none\">No chart: no trial succeeded with a value of {}.</p>",
                esc(&s.metric)
            );
        }
    }
    h.push_str("</section>");
    // (b) The Pareto front.
    let _ = write!(
        h,
        "<section id=\"s{k}-pareto\" class=\"chart\"><h3>Pareto front</h3>"
    );
    match &s.pareto {
        None => {
            let _ = write!(
                h,
                "<p class=\"none\">No Pareto chart: a {} sweep has no default pair of metrics to trade off \
                 (its configurations solve different problems); pass <code>--pareto X,Y</code> for one.</p>",
                esc(&r.sweep.workload)
            );
        }
        Some((x, y)) => {
            let all = s.all_trials();
            let points = compare::pareto_points(&all, x, y);
            let front = compare::pareto_front(&points, x, y);
            if points.is_empty() {
                let _ = write!(
                    h,
                    "<p class=\"none\">No Pareto chart: no configuration reports both {} and {}.</p>",
                    esc(x),
                    esc(y)
                );
            } else {
                let classes: Vec<String> = points
                    .iter()
                    .map(|p| p.class.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let svg = pareto_chart(&points, &front, &classes, x, y)?;
                let items: Vec<(RGBColor, String)> = classes
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (color(i), c.clone()))
                    .collect();
                let _ = write!(
                    h,
                    "{}<figure>{svg}<figcaption>{} configurations (medians over repeats, matched by setup \
                     across the joined sweeps); filled and connected: the {} on the Pareto front of their \
                     class — no other configuration of the class is better on both metrics.</figcaption></figure>",
                    legend(&items),
                    points.len(),
                    front.len()
                );
                let rows: Vec<Vec<String>> = front
                    .iter()
                    .map(|p| vec![p.class.clone(), p.config.clone(), num(p.x), num(p.y)])
                    .collect();
                h.push_str(&html_table(
                    &[
                        "class".into(),
                        "configuration".into(),
                        axis_title(x),
                        axis_title(y),
                    ],
                    &rows,
                    2,
                ));
            }
        }
    }
    h.push_str("</section>");
    // (c) Telemetry of the selected trials.
    let _ = write!(
        h,
        "<section id=\"s{k}-telemetry\" class=\"chart\"><h3>Device telemetry of selected trials</h3>"
    );
    let picks = select(r, &s.metric);
    let series: Vec<(RGBColor, Vec<&Sample>, &Pick)> = picks
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            s.telemetry
                .samples
                .get(&p.trial_id)
                .map(|all| (color(i), attempt_samples(&r.sweep.id, p, all), p))
        })
        .filter(|(_, v, _)| !v.is_empty())
        .collect();
    if let Some(why) = &s.telemetry.missing {
        let _ = write!(h, "<p class=\"none\">{}</p>", esc(why));
    } else if picks.is_empty() {
        h.push_str(
            "<p class=\"none\">No telemetry chart: no trial succeeded, so none was selected.</p>",
        );
    } else if series.is_empty() {
        let _ = write!(
            h,
            "<p class=\"none\">No telemetry chart: {} holds no samples of the selected trials.</p>",
            esc(&s.telemetry.source)
        );
    } else {
        let items: Vec<(RGBColor, String)> = series
            .iter()
            .map(|(c, _, p)| {
                (
                    *c,
                    format!(
                        "{} — trial {} ({}): {} = {} {}",
                        p.role,
                        p.trial_id,
                        p.config,
                        s.metric,
                        num(p.value),
                        metrics::unit(&s.metric)
                    )
                    .trim_end()
                    .to_owned(),
                )
            })
            .collect();
        h.push_str(&legend(&items));
        let input: Vec<(RGBColor, Vec<&Sample>)> =
            series.iter().map(|(c, v, _)| (*c, v.clone())).collect();
        let mut drawn = 0;
        for (title, fields, unit) in SENSORS {
            if let Some((svg, used)) = telemetry_chart(fields, unit, &input)? {
                drawn += 1;
                let _ = write!(
                    h,
                    "<figure>{svg}<figcaption>{title}: {} over each selected trial's samples \
                     (every attempt's last); dots: samples in the measured window.</figcaption></figure>",
                    esc(&used.join(", "))
                );
            }
        }
        if drawn == 0 {
            h.push_str("<p class=\"none\">No telemetry chart: the samples of the selected trials carry no power, utilisation, clock or temperature reading.</p>");
        }
        let rows: Vec<Vec<String>> = series
            .iter()
            .map(|(_, v, p)| {
                let measure = v.iter().filter(|s| s.phase == Phase::Measure).count();
                vec![
                    p.trial_id.clone(),
                    p.role.clone(),
                    p.class.clone(),
                    p.config.clone(),
                    num(p.value),
                    v.len().to_string(),
                    measure.to_string(),
                ]
            })
            .collect();
        h.push_str(&html_table(
            &[
                "trial".into(),
                "selected as".into(),
                "device class".into(),
                "configuration".into(),
                axis_title(&s.metric),
                "samples".into(),
                "in measured window".into(),
            ],
            &rows,
            4,
        ));
        let _ = write!(
            h,
            "<p class=\"note\">Samples read from {}.</p>",
            esc(&s.telemetry.source)
        );
    }
    h.push_str("</section>");
    // Failed trials, with their reasons.
    let failed: Vec<Vec<String>> = r
        .trials
        .iter()
        .filter(|t| t.error.is_some())
        .map(|t| {
            vec![
                t.id.clone(),
                t.state.name().to_owned(),
                t.device_class.clone(),
                label(&t.params),
                t.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    if !failed.is_empty() {
        let _ = write!(
            h,
            "<div id=\"s{k}-failed\"><h3>Trials that failed</h3>{}</div>",
            html_table(
                &[
                    "trial".into(),
                    "state".into(),
                    "device class".into(),
                    "configuration".into(),
                    "error".into()
                ],
                &failed,
                usize::MAX
            )
        );
    }
    h.push_str("</section>");
    Ok(h)
}

/// Renders the page and the trial tables.
pub fn render(sections: &[Section], hosts: &BTreeMap<String, String>) -> anyhow::Result<Rendered> {
    if sections.is_empty() {
        bail!("a report needs at least one sweep");
    }
    let names: Vec<&str> = sections
        .iter()
        .map(|s| s.results.sweep.name.as_str())
        .collect();
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Chimera report: {}</title><style>{STYLE}</style></head><body>\
         <header><h1>Chimera report: {}</h1><p>Sweeps: ",
        esc(&names.join(", ")),
        esc(&names.join(", "))
    );
    for (k, s) in sections.iter().enumerate() {
        let _ = write!(
            html,
            "{}<a href=\"#s{k}\">{}</a> ({})",
            if k > 0 { ", " } else { "" },
            esc(&s.results.sweep.name),
            esc(&s.results.sweep.workload)
        );
    }
    let _ = write!(
        html,
        ". Every trial, with its parameters and metrics: <a href=\"{TRIALS_CSV}\">{TRIALS_CSV}</a>, \
         <a href=\"{TRIALS_JSON}\">{TRIALS_JSON}</a>.</p></header><main>"
    );
    for (k, s) in sections.iter().enumerate() {
        html.push_str(&section_html(k, s, hosts)?);
    }
    html.push_str("</main></body></html>\n");
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
        csv: trials_csv(&all)?,
        json: trials_json(&all)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chimera_domain::results::SweepSummary;

    /// A trial built from its JSON form (as results.json carries it).
    fn trial(id: &str, idx: u32, format: &str, metrics: &[(&str, f64)]) -> TrialRecord {
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

    fn results(trials: Vec<TrialRecord>) -> ResultsFile {
        ResultsFile::new(
            SweepSummary {
                id: "S1".into(),
                name: "quick, \"start\"".into(),
                workload: "kernel".into(),
                state: "done".into(),
                created_unix_ms: 1_700_000_000_000,
            },
            trials,
        )
    }

    #[test]
    fn csv_escapes_commas_quotes_and_newlines_and_keeps_its_column_order() {
        let mut bad = trial("t00001", 1, "q4_0", &[]);
        bad.state = TrialState::Failed;
        bad.error = Some("out of memory, \"really\"\nsecond line".into());
        let r = results(vec![
            trial("t00000", 0, "q8_0", &[("gflop_per_s", 3.25), ("cov", 0.01)]),
            bad,
        ]);
        let csv = trials_csv(&[&r]).unwrap();
        let mut rd = csv::Reader::from_reader(csv.as_slice());
        let header: Vec<String> = rd.headers().unwrap().iter().map(str::to_owned).collect();
        assert_eq!(
            header,
            [
                "id",
                "sweep_id",
                "sweep_name",
                "workload",
                "device_class",
                "agent",
                "device_id",
                "config_index",
                "param.format",
                "param.op",
                "param.shape",
                "repeat",
                "attempt",
                "state",
                "error",
                "cov",
                "gflop_per_s",
                "wall_ms"
            ]
        );
        let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(&rows[0][2], "quick, \"start\"");
        assert_eq!(&rows[0][10], "1,64,64");
        assert_eq!(&rows[0][16], "3.25");
        assert_eq!(&rows[1][14], "out of memory, \"really\"\nsecond line");
        assert_eq!(&rows[1][16], "", "an absent metric is an empty cell");
        // The raw text quotes the fields that need it.
        let text = String::from_utf8(csv).unwrap();
        assert!(text.contains("\"quick, \"\"start\"\"\""), "{text}");
        let json: serde_json::Value = serde_json::from_slice(&trials_json(&[&r]).unwrap()).unwrap();
        assert_eq!(json["format"], TRIALS_FORMAT);
        assert_eq!(json["trials"][0]["metrics"]["gflop_per_s"], 3.25);
        assert_eq!(
            json["trials"][1]["error"],
            "out of memory, \"really\"\nsecond line"
        );
    }

    #[test]
    fn csv_quotes_formulas_in_text_and_keeps_numbers_raw() {
        let mut t = trial("t00000", 0, "q8_0", &[("delta", -2.5)]);
        t.params.insert(
            "note".into(),
            chimera_domain::params::ParamValue::Text("=HYPERLINK(\"http://evil\")".into()),
        );
        t.params
            .insert("offset".into(), chimera_domain::params::ParamValue::Int(-3));
        t.state = TrialState::Failed;
        t.error = Some("@SUM(A1) went wrong".into());
        let csv = trials_csv(&[&results(vec![t])]).unwrap();
        let mut rd = csv::Reader::from_reader(csv.as_slice());
        let header = rd.headers().unwrap().clone();
        let row = rd.records().next().unwrap().unwrap();
        let cell = |name: &str| {
            let i = header.iter().position(|h| h == name).unwrap();
            row[i].to_owned()
        };
        assert_eq!(cell("param.note"), "'=HYPERLINK(\"http://evil\")");
        assert_eq!(cell("error"), "'@SUM(A1) went wrong");
        assert_eq!(cell("param.offset"), "-3");
        assert_eq!(cell("delta"), "-2.5");
        assert_eq!(cell("param.format"), "q8_0");
        let text = String::from_utf8(csv).unwrap();
        assert!(!text.contains(",=") && !text.contains("\"=HYP"), "{text}");
    }

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
        let mut trials = vec![
            trial("t00000", 0, "q8_0", &[("gflop_per_s", 10.0)]),
            trial("t00001", 0, "q8_0", &[("gflop_per_s", 12.0)]),
            trial("t00002", 0, "q8_0", &[("gflop_per_s", 30.0)]),
            trial("t00003", 1, "q4_0", &[("gflop_per_s", 2.0)]),
        ];
        trials[1].repeat = 1;
        trials[2].repeat = 2;
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

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn nothing_is_written_when_the_directory_cannot_be() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let r = Rendered {
            html: "<p>x</p>".into(),
            csv: b"a\n".to_vec(),
            json: b"{}".to_vec(),
        };
        let e = format!("{:#}", write(&file.join("report"), &r).unwrap_err());
        assert!(e.contains("a-file/report"), "{e}");
        let e = format!("{:#}", write(&file, &r).unwrap_err());
        assert!(e.contains("not a directory"), "{e}");
        // A good directory gets all three files and no leftovers.
        let out = dir.path().join("out");
        write(&out, &r).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec![INDEX, TRIALS_CSV, TRIALS_JSON]);
        // Again into the existing directory: replaced, nothing else left.
        write(&out, &r).unwrap();
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 3);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn a_report_draws_its_charts_and_says_when_it_cannot() {
        let mut t = vec![
            trial("t00000", 0, "q8_0", &[("gflop_per_s", 10.0)]),
            trial("t00001", 0, "q8_0", &[("gflop_per_s", 12.0)]),
            trial("t00002", 1, "q4_0", &[("gflop_per_s", 2.0)]),
        ];
        t[1].repeat = 1;
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
