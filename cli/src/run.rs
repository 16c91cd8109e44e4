//! `chimera run` / `chimera demo`: a controller and a local agent inside this
//! process, on an embedded store in a temporary directory; sweeps run, the
//! comparison prints, and the results are written to the output directory.

use crate::client::{self, fetch_results, status, Client};
use crate::output::{self, Format};
use crate::{report, watch};
use anyhow::Context;
use chimera_domain::catalog::Workload;
use chimera_domain::metrics;
use chimera_domain::results::ResultsFile;
use chimera_domain::spec::ParsedSweep;
use chimera_domain::telemetry::{TrialSample, TELEMETRY_FILE};
use chimera_proto::v1 as proto;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The quick-start kernel sweep, as shipped in `examples/quickstart.yaml`.
pub const QUICKSTART: &str = include_str!("../../examples/quickstart.yaml");
/// The demo's generation sweep (`examples/demo-generate.yaml`).
pub const DEMO_GENERATE: &str = include_str!("../../examples/demo-generate.yaml");
/// The demo's evaluation sweep (`examples/demo-eval.yaml`).
pub const DEMO_EVAL: &str = include_str!("../../examples/demo-eval.yaml");

/// How long the local agent may take to connect to the local controller.
const AGENT_CONNECT_WITHIN: Duration = Duration::from_secs(30);

/// A wall time as people read it: to a tenth of a second (`12s 300ms`).
fn wall_time(started: Instant) -> humantime::FormattedDuration {
    let tenths = started.elapsed().as_millis() / 100;
    humantime::format_duration(Duration::from_millis(
        u64::try_from(tenths * 100).unwrap_or(u64::MAX),
    ))
}

/// An in-process controller and agent.
struct Local {
    url: String,
    shutdown: CancellationToken,
    controller: JoinHandle<anyhow::Result<()>>,
    agent: JoinHandle<anyhow::Result<()>>,
    _data: tempfile::TempDir,
}

impl Local {
    async fn start(
        model_dirs: Vec<PathBuf>,
        engines: chimera_agent::workloads::serve::Engines,
    ) -> anyhow::Result<Local> {
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
        config.engines = engines;
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
    async fn client(&self) -> anyhow::Result<Client> {
        // The in-process controller: loopback, no TLS, no token.
        let mut client = client::connect_with(&self.url, &client::Connection::default()).await?;
        let deadline = Instant::now() + AGENT_CONNECT_WITHIN;
        loop {
            let agents = client
                .list_agents(proto::ListAgentsRequest::default())
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
                "the local agent did not connect within {}",
                humantime::format_duration(AGENT_CONNECT_WITHIN)
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

/// Submits a sweep; its id.
async fn submit(client: &mut Client, spec: &str, source_name: &str) -> anyhow::Result<String> {
    let resp = client::submit(client, spec.to_owned(), source_name, false).await?;
    eprintln!(
        "running sweep {} ({source_name}, {} trials) on the local agent",
        resp.sweep_id, resp.trials
    );
    Ok(resp.sweep_id)
}

/// Follows a submitted sweep to the end; its results and exit code.
async fn follow(client: &mut Client, sweep_id: &str) -> anyhow::Result<(ResultsFile, i32)> {
    let last = watch::watch(client, sweep_id, None).await?;
    let results = fetch_results(client, sweep_id).await?;
    for t in results.trials.iter().filter(|t| t.error.is_some()) {
        eprintln!(
            "trial {} failed: {}",
            t.id,
            t.error.as_deref().unwrap_or_default()
        );
    }
    Ok((results, watch::exit_code(&last)))
}

/// Submits a sweep, follows it to the end and returns its results and exit code.
async fn sweep(
    client: &mut Client,
    spec: &str,
    source_name: &str,
) -> anyhow::Result<(ResultsFile, i32)> {
    let id = submit(client, spec, source_name).await?;
    follow(client, &id).await
}

/// The telemetry samples of finished sweeps to save beside their results
/// (each sweep with the metric a report selects its trials by): after the
/// agents' last samples have had time to arrive. A failure to read them is
/// reported and leaves the file without them; it does not fail the run.
async fn telemetry(client: &mut Client, runs: &[(&ResultsFile, &str)]) -> Vec<TrialSample> {
    tokio::time::sleep(report::TELEMETRY_FLUSH).await;
    let mut budget = report::SAVED_SAMPLES_BUDGET;
    let mut out = Vec::new();
    for (results, metric) in runs {
        match report::collect_telemetry(client, results, metric, &mut budget).await {
            Ok(samples) => out.extend(samples),
            Err(e) => eprintln!(
                "chimera: could not save the telemetry of sweep {}: {e:#}",
                results.sweep.id
            ),
        }
    }
    out
}

/// The names of the agents' hosts, for a report's header.
async fn hosts(client: &mut Client) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    Ok(client
        .list_agents(proto::ListAgentsRequest::default())
        .await
        .map_err(status("list agents"))?
        .into_inner()
        .agents
        .into_iter()
        .map(|a| (a.name, a.hostname))
        .collect())
}

fn write(path: &Path, results: &ResultsFile) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(results)?)
        .with_context(|| format!("write {}", path.display()))
}

/// Where bench/llamacpp.sh builds llama.cpp: `$LLAMACPP_DIR`, else
/// ~/.cache/chimera/llama.cpp.
fn llamacpp_server() -> Option<PathBuf> {
    let dir = std::env::var_os("LLAMACPP_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/chimera/llama.cpp"))
        })?;
    Some(dir.join("build/bin/llama-server")).filter(|p| p.is_file())
}

/// The engines the local agent is given: those asked for, and llama-server
/// from bench/llamacpp.sh's build when the spec names it and none is given.
fn local_engines(
    parsed: &[ParsedSweep],
    given: &[String],
) -> anyhow::Result<chimera_agent::workloads::serve::Engines> {
    use chimera_agent::workloads::serve::Engines;
    use chimera_domain::serve::Engine;
    let mut engines = Engines::parse(given).map_err(anyhow::Error::msg)?;
    let wants = parsed.iter().flat_map(|p| &p.configs).any(|c| {
        c.get("engine")
            .is_some_and(|e| e.to_string().parse::<Engine>() == Ok(Engine::LlamaServer))
    });
    if wants && !engines.0.contains_key(&Engine::LlamaServer) {
        let bin = llamacpp_server().ok_or_else(|| {
            anyhow::anyhow!(
                "the spec runs engine llama-server, and none was given: build it with \
                 `bench/llamacpp.sh build` (into ~/.cache/chimera/llama.cpp, found there \
                 by default) or give --engine llama-server=PATH"
            )
        })?;
        engines.0.insert(Engine::LlamaServer, bin);
    }
    Ok(engines)
}

/// One spec `chimera run` was given: its text and where it came from.
pub struct SpecFile {
    pub text: String,
    pub source_name: String,
    /// The directory under `--out` its results go to when several run.
    pub dir_name: String,
}

/// Runs the sweeps `specs` end to end on one local agent, all submitted
/// before the first trial ends so that their trials take turns on the
/// device (the scheduler serves sweeps in turn): a baseline and a candidate
/// run together see the same machine, and `chimera diff` between them does
/// not take the machine's drift for a change. One spec writes
/// `OUT/results.json`; several write `OUT/NAME/results.json` each (NAME:
/// the spec file's stem). Returns the process exit code (the worst).
pub async fn run(
    specs: &[SpecFile],
    out: &Path,
    metric: Option<&str>,
    model_dirs_given: Vec<PathBuf>,
    engines: &[String],
    fmt: Format,
) -> anyhow::Result<i32> {
    let started = Instant::now();
    // Refuse a bad spec, or two that would write to one place, before
    // starting anything.
    let parsed = specs
        .iter()
        .map(|s| parse(&s.text, &s.source_name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let several = specs.len() > 1;
    let mut dirs_out = Vec::with_capacity(specs.len());
    for s in specs {
        let dir = if several {
            out.join(&s.dir_name)
        } else {
            out.to_owned()
        };
        anyhow::ensure!(
            !dirs_out.contains(&dir),
            "two specs would write to {}: give files with different names",
            dir.display()
        );
        dirs_out.push(dir);
    }
    let needs_model = parsed.iter().any(|p| p.spec.workload != Workload::Kernel);
    let dirs = model_dirs(model_dirs_given, needs_model)?;
    let engines = local_engines(&parsed, engines)?;
    for dir in &dirs_out {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let local = Local::start(dirs, engines).await?;
    let result = async {
        let mut client = local.client().await?;
        let mut ids = Vec::with_capacity(specs.len());
        for s in specs {
            ids.push(submit(&mut client, &s.text, &s.source_name).await?);
        }
        let mut done = Vec::with_capacity(ids.len());
        for id in &ids {
            done.push(follow(&mut client, id).await?);
        }
        let runs: Vec<(&ResultsFile, &str)> = done
            .iter()
            .zip(&parsed)
            .map(|((results, _), p)| (results, metric.unwrap_or(default_metric(p, results))))
            .collect();
        let samples = telemetry(&mut client, &runs).await;
        anyhow::Ok((done, samples))
    }
    .await;
    local.stop().await;
    let (done, samples) = result?;
    let mut code = 0;
    for (i, ((results, c), dir)) in done.iter().zip(&dirs_out).enumerate() {
        code = code.max(*c);
        let parsed = &parsed[i];
        let path = dir.join("results.json");
        write(&path, results)?;
        let samples: Vec<TrialSample> = samples
            .iter()
            .filter(|s| s.sweep_id == results.sweep.id)
            .cloned()
            .collect();
        report::write_telemetry(&dir.join(TELEMETRY_FILE), &samples)?;
        if several && fmt == Format::Table {
            if i > 0 {
                println!();
            }
            println!("== {} ==", specs[i].source_name);
        }
        print_run(parsed, results, metric, fmt)?;
        eprintln!(
            "wrote {} and {TELEMETRY_FILE} ({} samples)",
            path.display(),
            samples.len(),
        );
    }
    if let [a, b] = dirs_out.as_slice() {
        eprintln!(
            "compare the two: chimera diff {} {}",
            a.join("results.json").display(),
            b.join("results.json").display()
        );
    }
    eprintln!("{} wall time", wall_time(started));
    Ok(code)
}

/// What `chimera run` prints for one finished sweep: the trials (a model
/// workload's), then the comparison or a load test's capacity, then a
/// search's best configuration per class.
fn print_run(
    parsed: &ParsedSweep,
    results: &ResultsFile,
    metric: Option<&str>,
    fmt: Format,
) -> anyhow::Result<()> {
    if parsed.spec.workload != Workload::Kernel && fmt == Format::Table {
        // Every trial with the workload's headline metrics, then the comparison.
        output::results(results, fmt)?;
        println!();
    }
    let curves = chimera_domain::capacity::curves(&results.trials);
    if parsed.spec.workload == Workload::Serve && metric.is_none() && !curves.is_empty() {
        // A load test's answer: the throughput-latency curves and capacity.
        output::capacity(&curves, fmt)?;
    } else {
        let metric = metric.unwrap_or(default_metric(parsed, results));
        output::comparison(
            &chimera_domain::compare::compare(&results.trials, metric),
            fmt,
        )?;
    }
    if let (Some(goal), Format::Table) = (parsed.spec.search.goal(), fmt) {
        // The search's answer: the best configuration of each class.
        let constraints: Vec<String> = goal.constraints.iter().map(|c| c.to_string()).collect();
        println!(
            "\nsearch {} ({} {}{}): best per device class",
            parsed.spec.search.name(),
            if goal.objective.maximize {
                "maximize"
            } else {
                "minimize"
            },
            goal.objective.metric,
            if constraints.is_empty() {
                String::new()
            } else {
                format!("; {}", constraints.join(", "))
            }
        );
        let best = chimera_domain::search::best_per_class(goal, &results.trials);
        if best.is_empty() {
            println!("  none: no configuration met the constraints");
        }
        let unit = chimera_domain::metrics::unit(&goal.objective.metric);
        for b in best {
            println!(
                "  {}: {}  {} {unit} ({} configurations tried)",
                b.class,
                chimera_domain::params::label(&b.params),
                output::num(b.value),
                b.tried
            );
        }
    }
    Ok(())
}

/// The comparison's metric: an adaptive search's objective, else the
/// workload's headline metric.
fn default_metric<'a>(parsed: &'a ParsedSweep, results: &ResultsFile) -> &'a str {
    match parsed.spec.search.goal() {
        Some(goal) => &goal.objective.metric,
        None => {
            chimera_domain::compare::default_metric(parsed.spec.workload.name(), &results.trials)
        }
    }
}

/// The demo: the kernel quick start, then the quantization comparison of the
/// small model (generation speed against divergence from the reference).
pub async fn demo(out: &Path, model_dirs_given: Vec<PathBuf>, fmt: Format) -> anyhow::Result<i32> {
    let started = Instant::now();
    let dirs = model_dirs(model_dirs_given, true)?;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let local = Local::start(dirs, Default::default()).await?;
    let result = async {
        let mut client = local.client().await?;
        let kernel = sweep(&mut client, QUICKSTART, "examples/quickstart.yaml").await?;
        let generate = sweep(&mut client, DEMO_GENERATE, "examples/demo-generate.yaml").await?;
        let eval = sweep(&mut client, DEMO_EVAL, "examples/demo-eval.yaml").await?;
        let samples = telemetry(
            &mut client,
            &[
                (&kernel.0, metrics::GFLOP_PER_S),
                (&generate.0, metrics::DECODE_TOKENS_PER_S),
                (&eval.0, metrics::KL_MEAN),
            ],
        )
        .await;
        let hosts = hosts(&mut client).await?;
        anyhow::Ok((kernel, generate, eval, samples, hosts))
    }
    .await;
    local.stop().await;
    let ((kernel, c1), (generate, c2), (eval, c3), samples, hosts) = result?;
    write(&out.join("results.json"), &kernel)?;
    write(&out.join("generate.json"), &generate)?;
    write(&out.join("eval.json"), &eval)?;
    let telemetry_path = out.join(TELEMETRY_FILE);
    report::write_telemetry(&telemetry_path, &samples)?;
    let report_dir = out.join("report");
    demo_report(
        &report_dir,
        out,
        [&kernel, &generate, &eval],
        &samples,
        &telemetry_path,
        &hosts,
    )?;
    println!("== kernels: matmul f32 vs quantized qmatmul ==");
    output::comparison(
        &chimera_domain::compare::compare(&kernel.trials, metrics::GFLOP_PER_S),
        fmt,
    )?;
    println!();
    println!("== SmolLM2-135M: speed vs accuracy per weight format ==");
    output::tradeoff(
        &chimera_domain::compare::tradeoff(&generate.trials, &eval.trials),
        fmt,
    )?;
    println!();
    println!(
        "Report (tables, charts, telemetry): {}",
        report_dir.join(report::INDEX).display()
    );
    eprintln!(
        "wrote results.json (kernels), generate.json, eval.json, {TELEMETRY_FILE} and report/ in {} ({} wall time)",
        out.display(),
        wall_time(started)
    );
    Ok(c1.max(c2).max(c3))
}

/// The demo's report: the kernels, then the model's generate sweep with
/// its eval sweep joined (decode speed against KL divergence).
fn demo_report(
    dir: &Path,
    out: &Path,
    [kernel, generate, eval]: [&ResultsFile; 3],
    samples: &[TrialSample],
    telemetry_path: &Path,
    hosts: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let source = telemetry_path.display().to_string();
    let section = |results: &ResultsFile, file: &str, joined: Vec<ResultsFile>| {
        let metric = report::choose_metric(results, None)?;
        let pareto = report::choose_pareto(results, &joined, None)?;
        anyhow::Ok(report::Section {
            origin: out.join(file).display().to_string(),
            telemetry: report::telemetry_of(samples, &results.sweep.id, &source),
            results: results.clone(),
            joined,
            metric,
            pareto,
        })
    };
    let sections = [
        section(kernel, "results.json", Vec::new())?,
        section(generate, "generate.json", vec![eval.clone()])?,
    ];
    let rendered = report::render(&sections, hosts)?;
    report::write(dir, &rendered)
}
