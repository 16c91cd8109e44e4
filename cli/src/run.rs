//! `chimera run` / `chimera demo`: a controller and a local agent inside this
//! process, on an embedded store in a temporary directory; the sweep runs, the
//! comparison prints, and `DIR/results.json` is written.

use crate::output::{self, Format};
use crate::{connect, fetch_results, status, watch};
use anyhow::Context;
use chimera_proto::v1 as proto;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The quick-start sweep, as shipped in `examples/quickstart.yaml`.
pub const QUICKSTART: &str = include_str!("../../examples/quickstart.yaml");

/// Runs the sweep `spec` end to end; returns the process exit code.
pub async fn run(
    spec: &str,
    source_name: &str,
    out: &Path,
    metric: &str,
    fmt: Format,
) -> anyhow::Result<i32> {
    let started = Instant::now();
    // Refuse a bad spec before starting anything.
    chimera_domain::spec::parse(spec).map_err(|e| anyhow::anyhow!("read {source_name}: {e}"))?;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let data = tempfile::Builder::new()
        .prefix("chimera-run-")
        .tempdir()
        .context("create a temporary store directory")?;

    let shutdown = CancellationToken::new();
    let listener = chimera_controller::bind("127.0.0.1:0".parse()?, false).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let controller = tokio::spawn(chimera_controller::serve(
        listener,
        chimera_controller::Config {
            data_dir: data.path().to_owned(),
            ..Default::default()
        },
        shutdown.child_token(),
    ));
    let agent = tokio::spawn(chimera_agent::run(
        chimera_agent::Config::new(url.clone(), "local"),
        shutdown.child_token(),
    ));
    let result = drive(spec, source_name, out, metric, fmt, &url).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    let code = result?;
    eprintln!(
        "wrote {} ({:.1} s wall time)",
        out.join("results.json").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(code)
}

async fn drive(
    spec: &str,
    source_name: &str,
    out: &Path,
    metric: &str,
    fmt: Format,
    url: &str,
) -> anyhow::Result<i32> {
    let mut client = connect(url).await?;
    // Wait for the local agent to say hello.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let agents = client
            .list_agents(proto::ListAgentsRequest {})
            .await
            .map_err(status("list agents"))?
            .into_inner()
            .agents;
        if agents.iter().any(|a| a.connected) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the local agent did not connect within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = client
        .submit_sweep(proto::SubmitSweepRequest {
            spec_yaml: spec.to_owned(),
            source_name: source_name.to_owned(),
        })
        .await
        .map_err(status("submit the sweep"))?
        .into_inner();
    eprintln!(
        "running sweep {} ({} trials) on the local agent",
        resp.sweep_id, resp.trials
    );
    let last = watch::watch(&mut client, &resp.sweep_id).await?;
    let results = fetch_results(&mut client, &resp.sweep_id).await?;
    let path = out.join("results.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&results)?)
        .with_context(|| format!("write {}", path.display()))?;
    let cmp = chimera_domain::compare::compare(&results.trials, metric);
    output::comparison(&cmp, fmt)?;
    for t in results.trials.iter().filter(|t| t.error.is_some()) {
        eprintln!(
            "trial {} failed: {}",
            t.id,
            t.error.as_deref().unwrap_or_default()
        );
    }
    Ok(watch::exit_code(&last))
}
