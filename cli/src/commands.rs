//! The operator commands that talk to a controller or read results files:
//! each takes its flags' values, prints its listing and returns the
//! process's exit code.

use crate::client::{self, connect, load_results, read_spec, resolve_sweep, status};
use crate::output::{self, Format};
use crate::watch;
use anyhow::{bail, Context};
use chimera_domain::compare;
use chimera_domain::diff::FailOn;
use chimera_proto::v1 as proto;
use std::path::{Path, PathBuf};

/// `chimera sweep submit FILE [--wait] [--no-wait-for-agents]`.
pub async fn submit(
    url: &str,
    file: &Path,
    wait: bool,
    wait_for_agents: bool,
) -> anyhow::Result<i32> {
    let mut client = connect(url).await?;
    let spec = read_spec(file)?;
    let resp = client::submit(
        &mut client,
        spec,
        &file.display().to_string(),
        wait_for_agents,
    )
    .await?;
    output::print_line(&resp.sweep_id)?;
    if resp.trials == 0 {
        eprintln!(
            "submitted sweep {}: waiting for devices (no connected agent has a device its target matches; it starts when one joins)",
            resp.sweep_id
        );
    } else {
        eprintln!("submitted sweep {} ({} trials)", resp.sweep_id, resp.trials);
    }
    if wait {
        let last = watch::watch(&mut client, &resp.sweep_id, Some(url)).await?;
        return Ok(watch::exit_code(&last));
    }
    Ok(0)
}

/// `chimera sweep list`.
pub async fn sweeps(url: &str, fmt: Format) -> anyhow::Result<i32> {
    let mut client = connect(url).await?;
    let sweeps = client::all_sweeps(&mut client).await?;
    output::sweeps(&sweeps, fmt)?;
    Ok(0)
}

/// `chimera sweep status SWEEP`: the sweep's counts, and its failed
/// trials with their errors (fetched only when some failed; not in CSV,
/// which is one row per sweep).
pub async fn sweep_status(url: &str, sweep: String, fmt: Format) -> anyhow::Result<i32> {
    let mut client = connect(url).await?;
    let sweep_id = resolve_sweep(&mut client, &sweep).await?;
    let s = client
        .get_sweep(proto::GetSweepRequest { sweep_id })
        .await
        .map_err(status("get the sweep"))?
        .into_inner();
    let failed = if s.trials_failed > 0 && fmt != Format::Csv {
        client::all_trials(&mut client, &s.id)
            .await?
            .into_iter()
            .filter(|t| t.state == proto::TrialState::Failed as i32)
            .collect()
    } else {
        Vec::new()
    };
    output::sweep_status(&s, &failed, fmt)?;
    Ok(0)
}

/// `chimera sweep watch SWEEP`.
pub async fn watch(url: &str, sweep: &str, fmt: Format) -> anyhow::Result<i32> {
    let mut client = connect(url).await?;
    let sweep = resolve_sweep(&mut client, sweep).await?;
    let last = watch::watch(&mut client, &sweep, Some(url)).await?;
    output::sweeps(std::slice::from_ref(&last), fmt)?;
    Ok(watch::exit_code(&last))
}

/// `chimera sweep cancel SWEEP`.
pub async fn cancel(url: &str, sweep: String, fmt: Format) -> anyhow::Result<i32> {
    let mut client = connect(url).await?;
    let sweep_id = resolve_sweep(&mut client, &sweep).await?;
    let s = client
        .cancel_sweep(proto::CancelSweepRequest { sweep_id })
        .await
        .map_err(status("cancel the sweep"))?
        .into_inner();
    output::sweeps(&[s], fmt)?;
    Ok(0)
}

/// `chimera agents list`.
pub async fn agents(url: &str, fmt: Format) -> anyhow::Result<i32> {
    let mut client = connect(url).await?;
    let agents = client::all_agents(&mut client).await?;
    output::agents(&agents, fmt)?;
    Ok(0)
}

/// `chimera agents drain NAME`.
pub async fn drain(url: &str, name: String, fmt: Format) -> anyhow::Result<i32> {
    let mut client = connect(url).await?;
    let agent = client
        .drain_agent(proto::DrainAgentRequest { name })
        .await
        .map_err(status("drain the agent"))?
        .into_inner();
    output::agents(&[agent], fmt)?;
    Ok(0)
}

/// `chimera results SWEEP|FILE`: a sweep's trials, from the controller or
/// a results.json.
pub async fn results(url: &str, sweep: &str, fmt: Format) -> anyhow::Result<i32> {
    let results = load_results(url, sweep).await?;
    output::results(&results, fmt)?;
    Ok(0)
}

/// `chimera telemetry SWEEP TRIAL`.
/// `chimera requests SWEEP TRIAL`: every request of a `serve` trial.
pub async fn requests(url: &str, sweep: &str, trial_id: &str, fmt: Format) -> anyhow::Result<i32> {
    let results = load_results(url, sweep).await?;
    let trial = results
        .trials
        .iter()
        .find(|t| t.id == trial_id)
        .ok_or_else(|| anyhow::anyhow!("requests: sweep {sweep} has no trial `{trial_id}`"))?;
    let Some(list) = trial.detail.as_ref().and_then(|d| d.get("requests")) else {
        bail!(
            "requests: trial {trial_id} kept no request records (only `serve` trials do; state {})",
            trial.state.name()
        );
    };
    let records: Vec<chimera_domain::serve::RequestRecord> =
        serde_json::from_value(list.clone()).context("requests: the trial's records")?;
    output::requests(&records, fmt)?;
    Ok(0)
}

pub async fn telemetry(
    url: &str,
    sweep: String,
    trial_id: String,
    fmt: Format,
) -> anyhow::Result<i32> {
    let mut client = connect(url).await?;
    let sweep_id = resolve_sweep(&mut client, &sweep).await?;
    let samples = client
        .get_telemetry(proto::GetTelemetryRequest { sweep_id, trial_id })
        .await
        .map_err(status("get the trial's telemetry"))?
        .into_inner()
        .samples;
    output::telemetry(&samples, fmt)?;
    Ok(0)
}

/// How `chimera diff` gates: the rule and whether undecided
/// configurations pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiffGate {
    /// `--fail-on regression>N%`.
    pub fail_on: Option<FailOn>,
    /// `--allow-inconclusive`: configurations too noisy or with too few
    /// repeats to decide do not fail the gate.
    pub allow_inconclusive: bool,
}

/// `chimera diff A B [--metric M] [--fail-on RULE]`: exit 3 when the rule
/// finds a regression, 4 when it cannot decide (unless allowed).
pub async fn diff(
    url: &str,
    a: &str,
    b: &str,
    metric: Option<String>,
    gate: DiffGate,
    fmt: Format,
) -> anyhow::Result<i32> {
    let ra = load_results(url, a).await?;
    let rb = load_results(url, b).await?;
    let metric = metric
        .unwrap_or_else(|| compare::default_metric(&ra.sweep.workload, &ra.trials).to_owned());
    let d = chimera_domain::diff::diff(&ra.trials, &rb.trials, &metric);
    output::diff(&d, fmt)?;
    if d.rows.is_empty() {
        bail!(
            "diff {a} {b}: no configuration with `{metric}` is in both sweeps ({} unmatched)",
            d.unmatched
        );
    }
    let Some(rule) = gate.fail_on else {
        return Ok(0);
    };
    let verdict = rule.gate(&d);
    for line in verdict.messages(gate.allow_inconclusive) {
        eprintln!("{line}");
    }
    Ok(verdict.outcome(gate.allow_inconclusive).exit_code())
}

/// The load `chimera cost` prices.
pub type CostLoad = chimera_domain::cost::Volume;

/// `chimera cost SWEEP --prices FILE --tokens-per-month N`.
pub async fn cost(
    url: &str,
    sweep: &str,
    prices_path: &Path,
    metric: &str,
    load: CostLoad,
    fmt: Format,
) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(prices_path)
        .with_context(|| format!("read prices file {}", prices_path.display()))?;
    let prices = chimera_domain::cost::Prices::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", prices_path.display()))?;
    let results = load_results(url, sweep).await?;
    let rows = chimera_domain::cost::cost(&results.trials, &prices, metric, load);
    if rows.is_empty() {
        bail!(
            "cost {sweep}: no succeeded trial reports `{metric}` (a generate sweep does), \
             and no serve configuration met its SLO at any load"
        );
    }
    output::cost(&rows, load, fmt)?;
    Ok(0)
}

/// What `chimera compare` shows: a metric against the best setup or a
/// baseline class, or the Pareto front of two metrics.
#[derive(Clone, Debug, Default)]
pub struct CompareBy {
    /// The metric (default: the workload's headline metric).
    pub metric: Option<String>,
    /// `X,Y`: the Pareto front instead of the table.
    pub pareto: Option<String>,
    /// The device class each class is shown against.
    pub baseline: Option<String>,
    /// Set from `metric`: a serve sweep shows its capacity table unless a
    /// metric is asked for.
    pub metric_given: Option<String>,
}

/// `chimera compare SWEEP [--with OTHER]...`.
pub async fn compare(
    url: &str,
    sweep: &str,
    with: &[String],
    how: CompareBy,
    fmt: Format,
) -> anyhow::Result<i32> {
    let mut results = load_results(url, sweep).await?;
    for other in with {
        results
            .trials
            .extend(load_results(url, other).await?.trials);
    }
    if let Some(pair) = how.pareto {
        let (x, y) = pair
            .split_once(',')
            .ok_or_else(|| anyhow::anyhow!("--pareto `{pair}`: give two metrics, `X,Y`"))?;
        let front = compare::pareto(&results.trials, x.trim(), y.trim());
        if front.is_empty() {
            bail!("--pareto {pair}: no configuration reports both metrics");
        }
        output::pareto(&front, x.trim(), y.trim(), fmt)?;
        return Ok(0);
    }
    let metric_given = how.metric.clone();
    let how = CompareBy {
        metric_given,
        ..how
    };
    let metric = how.metric.clone().unwrap_or_else(|| {
        compare::default_metric(&results.sweep.workload, &results.trials).to_owned()
    });
    let curves = chimera_domain::capacity::curves(&results.trials);
    if !curves.is_empty() && how.metric_given.is_none() && how.baseline.is_none() {
        output::capacity(&curves, fmt)?;
        return Ok(0);
    }
    let mut cmp = compare::compare(&results.trials, &metric);
    if let Some(b) = &how.baseline {
        cmp = cmp.with_baseline(b).map_err(anyhow::Error::msg)?;
    }
    output::comparison(&cmp, fmt)?;
    Ok(0)
}

/// `chimera models fetch [--dir DIR]`: prints the model file's path.
pub fn fetch_model(dir: Option<PathBuf>) -> anyhow::Result<i32> {
    use chimera_agent::models::fetch;
    let dir = dir.unwrap_or_else(fetch::cache_dir);
    let path = fetch::ensure(&fetch::SMOLLM2, &dir).map_err(anyhow::Error::msg)?;
    output::print_line(path.display())?;
    Ok(0)
}
