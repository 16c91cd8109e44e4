//! `chimera run` / `chimera demo`: a controller and a local agent inside this
//! process, on an embedded store in a temporary directory; sweeps run, the
//! comparison prints, and the results are written to the output directory.

use crate::output::{self, Format};
use crate::{connect, fetch_results, status, watch};
use anyhow::Context;
use chimera_domain::catalog::Workload;
use chimera_domain::results::ResultsFile;
use chimera_domain::spec::ParsedSweep;
use chimera_proto::v1 as proto;
use chimera_proto::v1::operator_service_client::OperatorServiceClient;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The quick-start kernel sweep, as shipped in `examples/quickstart.yaml`.
pub const QUICKSTART: &str = include_str!("../../examples/quickstart.yaml");
/// The demo's generation sweep (`examples/demo-generate.yaml`).
pub const DEMO_GENERATE: &str = include_str!("../../examples/demo-generate.yaml");
/// The demo's evaluation sweep (`examples/demo-eval.yaml`).
pub const DEMO_EVAL: &str = include_str!("../../examples/demo-eval.yaml");

/// An in-process controller and agent.
struct Local {
    url: String,
    shutdown: CancellationToken,
    controller: JoinHandle<anyhow::Result<()>>,
    agent: JoinHandle<anyhow::Result<()>>,
    _data: tempfile::TempDir,
}

impl Local {
    async fn start(model_dirs: Vec<PathBuf>) -> anyhow::Result<Local> {
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
        let mut config = chimera_agent::Config::new(url.clone(), "local");
        config.model_dirs = model_dirs;
        let agent = tokio::spawn(chimera_agent::run(config, shutdown.child_token()));
        Ok(Local {
            url,
            shutdown,
            controller,
            agent,
            _data: data,
        })
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.controller).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.agent).await;
    }

    /// A client, once the local agent has connected.
    async fn client(&self) -> anyhow::Result<OperatorServiceClient<Channel>> {
        let mut client = connect(&self.url).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let agents = client
                .list_agents(proto::ListAgentsRequest {})
                .await
                .map_err(status("list agents"))?
                .into_inner()
                .agents;
            if agents.iter().any(|a| a.connected) {
                return Ok(client);
            }
            if self.agent.is_finished() {
                anyhow::bail!("the local agent stopped before connecting");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the local agent did not connect within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The model directories a local run uses: those given, else the model cache
/// with the small model fetched into it when a spec needs a model.
pub fn model_dirs(given: Vec<PathBuf>, needs_model: bool) -> anyhow::Result<Vec<PathBuf>> {
    if !given.is_empty() || !needs_model {
        return Ok(given);
    }
    let dir = chimera_agent::models::fetch::cache_dir();
    chimera_agent::models::fetch::ensure(&chimera_agent::models::fetch::SMOLLM2, &dir)
        .map_err(|e| anyhow::anyhow!("fetch the demo model: {e}"))?;
    Ok(vec![dir])
}

fn parse(spec: &str, source_name: &str) -> anyhow::Result<ParsedSweep> {
    chimera_domain::spec::parse(spec).map_err(|e| anyhow::anyhow!("read {source_name}: {e}"))
}

/// Submits a sweep, follows it to the end and returns its results and exit code.
async fn sweep(
    client: &mut OperatorServiceClient<Channel>,
    spec: &str,
    source_name: &str,
) -> anyhow::Result<(ResultsFile, i32)> {
    let resp = crate::submit(client, spec.to_owned(), source_name).await?;
    eprintln!(
        "running sweep {} ({source_name}, {} trials) on the local agent",
        resp.sweep_id, resp.trials
    );
    let last = watch::watch(client, &resp.sweep_id).await?;
    let results = fetch_results(client, &resp.sweep_id).await?;
    for t in results.trials.iter().filter(|t| t.error.is_some()) {
        eprintln!(
            "trial {} failed: {}",
            t.id,
            t.error.as_deref().unwrap_or_default()
        );
    }
    Ok((results, watch::exit_code(&last)))
}

fn write(path: &Path, results: &ResultsFile) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(results)?)
        .with_context(|| format!("write {}", path.display()))
}

/// Runs the sweep `spec` end to end; returns the process exit code.
pub async fn run(
    spec: &str,
    source_name: &str,
    out: &Path,
    metric: Option<&str>,
    model_dirs_given: Vec<PathBuf>,
    fmt: Format,
) -> anyhow::Result<i32> {
    let started = Instant::now();
    // Refuse a bad spec before starting anything.
    let parsed = parse(spec, source_name)?;
    let dirs = model_dirs(model_dirs_given, parsed.spec.workload != Workload::Kernel)?;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let local = Local::start(dirs).await?;
    let result = async {
        let mut client = local.client().await?;
        sweep(&mut client, spec, source_name).await
    }
    .await;
    local.stop().await;
    let (results, code) = result?;
    let path = out.join("results.json");
    write(&path, &results)?;
    if parsed.spec.workload != Workload::Kernel && fmt == Format::Table {
        // Every trial with the workload's headline metrics, then the comparison.
        output::results(&results, fmt)?;
        println!();
    }
    let metric = metric.unwrap_or(chimera_domain::compare::default_metric(
        parsed.spec.workload.name(),
        &results.trials,
    ));
    output::comparison(
        &chimera_domain::compare::compare(&results.trials, metric),
        fmt,
    )?;
    eprintln!(
        "wrote {} ({:.1} s wall time)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(code)
}

/// The demo: the kernel quick start, then the quantization comparison of the
/// small model (generation speed against divergence from the reference).
pub async fn demo(out: &Path, model_dirs_given: Vec<PathBuf>, fmt: Format) -> anyhow::Result<i32> {
    let started = Instant::now();
    let dirs = model_dirs(model_dirs_given, true)?;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let local = Local::start(dirs).await?;
    let result = async {
        let mut client = local.client().await?;
        let kernel = sweep(&mut client, QUICKSTART, "examples/quickstart.yaml").await?;
        let generate = sweep(&mut client, DEMO_GENERATE, "examples/demo-generate.yaml").await?;
        let eval = sweep(&mut client, DEMO_EVAL, "examples/demo-eval.yaml").await?;
        anyhow::Ok((kernel, generate, eval))
    }
    .await;
    local.stop().await;
    let ((kernel, c1), (generate, c2), (eval, c3)) = result?;
    write(&out.join("results.json"), &kernel)?;
    write(&out.join("generate.json"), &generate)?;
    write(&out.join("eval.json"), &eval)?;
    println!("== kernels: matmul f32 vs quantized qmatmul ==");
    output::comparison(
        &chimera_domain::compare::compare(&kernel.trials, "gflop_per_s"),
        fmt,
    )?;
    println!();
    println!("== SmolLM2-135M: speed vs accuracy per weight format ==");
    output::tradeoff(
        &chimera_domain::compare::tradeoff(&generate.trials, &eval.trials),
        fmt,
    )?;
    eprintln!(
        "wrote results.json (kernels), generate.json and eval.json in {} ({:.1} s wall time)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(c1.max(c2).max(c3))
}
