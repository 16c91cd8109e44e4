//! `chimera-agent`: parses flags and runs [`chimera_agent::run`].

use clap::Parser;

/// Chimera's agent: runs benchmark trials on this machine's devices for a controller.
#[derive(Parser, Debug)]
#[command(name = "chimera-agent", version)]
struct Args {
    /// Controller URL, or several comma-separated (a cluster's controllers):
    /// the agent finds the leader among them and follows it.
    #[arg(
        long,
        env = "CHIMERA_CONTROLLER",
        default_value = "http://127.0.0.1:50051"
    )]
    controller: String,
    /// This agent's name, unique in the fleet (default: the host name).
    #[arg(long, env = "CHIMERA_AGENT_NAME")]
    name: Option<String>,
    /// A directory models may be read from; repeat for several. Trials name
    /// models by paths relative to these; nothing outside them is read.
    #[arg(long = "model-dir", env = "CHIMERA_MODEL_DIRS", value_delimiter = ':')]
    model_dirs: Vec<std::path::PathBuf>,
    /// Telemetry sampling interval per device, milliseconds (10 to 60000);
    /// 0 turns telemetry off.
    #[arg(long, env = "CHIMERA_TELEMETRY_INTERVAL_MS", default_value_t = 100,
          value_parser = clap::builder::ValueParser::new(interval_ms))]
    telemetry_interval_ms: u64,
    /// A label sweep targets can select on (`labels.site == lab`), as
    /// KEY=VALUE; repeat for several (or comma-separate them in the variable).
    #[arg(long = "label", env = "CHIMERA_AGENT_LABELS", value_delimiter = ',',
          value_parser = clap::builder::ValueParser::new(label))]
    labels: Vec<(String, String)>,
    /// Where finished results wait until the controller acknowledges them,
    /// so a restart does not lose them (one agent per directory). Default:
    /// systemd's $STATE_DIRECTORY, else $XDG_STATE_HOME/chimera/agent-NAME
    /// (~/.local/state/chimera/agent-NAME).
    #[arg(long, env = "CHIMERA_AGENT_STATE_DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// CA (PEM) that signed the controller's certificate (`https://`
    /// controller URLs; default: the system's trusted roots).
    #[arg(long, env = "CHIMERA_AGENT_TLS_CA", value_name = "PEM")]
    tls_ca: Option<std::path::PathBuf>,
    /// This agent's client certificate (PEM; `chimera tls issue agent NAME`):
    /// it must name the agent. Needs --tls-key.
    #[arg(long, env = "CHIMERA_AGENT_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "CHIMERA_AGENT_TLS_KEY", value_name = "PEM")]
    tls_key: Option<std::path::PathBuf>,
    /// An inference engine `serve` trials may start, as NAME=PATH
    /// (`llama-server=/opt/llama.cpp/bin/llama-server`); repeat for several.
    /// The agent advertises them, and a sweep naming an engine no agent has
    /// is refused at submit.
    #[arg(long = "engine", env = "CHIMERA_AGENT_ENGINES", value_delimiter = ',')]
    engines: Vec<String>,
    /// Print the devices this agent sees (id, class, memory bytes, capabilities,
    /// why it cannot run trials on one; tab-separated) and exit.
    #[arg(long)]
    list_devices: bool,
}

fn label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label `{s}` is not KEY=VALUE"))?;
    // The wire's rule for label maps, so the controller never refuses what
    // this flag accepted.
    let (k, v) = (k.to_owned(), v.to_owned());
    chimera_domain::wire::check_map("--label", std::iter::once((&k, &v)))?;
    Ok((k, v))
}

fn interval_ms(s: &str) -> Result<u64, String> {
    let v: u64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of milliseconds"))?;
    if v != 0 && !(10..=60_000).contains(&v) {
        return Err(format!("{v} ms is outside 10 to 60000 (or 0 for off)"));
    }
    Ok(v)
}

/// systemd's `StateDirectory=` (its first entry), else the XDG state home.
fn default_state_dir(name: &str) -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let nonempty = |v: std::ffi::OsString| (!v.is_empty()).then_some(v);
    if let Some(dirs) = std::env::var_os("STATE_DIRECTORY").and_then(nonempty) {
        return std::env::split_paths(&dirs).next();
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .and_then(nonempty)
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(nonempty)
                .map(|h| PathBuf::from(h).join(".local/state"))
        })?;
    Some(base.join("chimera").join(format!("agent-{name}")))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let guard = chimera_observe::init("chimera-agent", "info");
    if args.list_devices {
        for d in chimera_agent::discovery::discover() {
            println!(
                "{}\t{}\t{}\t{}\t{}",
                d.id,
                d.device_class,
                d.memory_bytes,
                d.capabilities.join(","),
                d.unusable_reason
            );
        }
        return;
    }
    let mut config = chimera_agent::Config::new(
        args.controller,
        args.name.unwrap_or_else(chimera_agent::hostname),
    );
    // The name goes into the default state path: check it first.
    if let Err(e) = chimera_agent::check_name(&config.name) {
        eprintln!("chimera-agent: failed to start: {e:#}");
        std::process::exit(1);
    }
    config.state_dir = args.state_dir.or_else(|| default_state_dir(&config.name));
    match &config.state_dir {
        Some(d) => tracing::info!(dir = %d.display(), "state directory"),
        None => tracing::warn!(
            "no state directory (no --state-dir, $STATE_DIRECTORY or $HOME): \
             undelivered results are lost if the agent restarts"
        ),
    }
    config.tls = chimera_observe::tls::ClientTls {
        ca: args.tls_ca,
        cert: args.tls_cert,
        key: args.tls_key,
    };
    config.model_dirs = args.model_dirs;
    config.engines = match chimera_agent::workloads::serve::Engines::parse(&args.engines) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("chimera-agent: failed to start: {e}");
            std::process::exit(2);
        }
    };
    config.labels = args.labels.into_iter().collect();
    config.telemetry_interval = (args.telemetry_interval_ms > 0)
        .then(|| std::time::Duration::from_millis(args.telemetry_interval_ms));
    let result = chimera_agent::run(config, chimera_observe::shutdown_on_signal()).await;
    guard.shutdown().await;
    if let Err(e) = result {
        eprintln!("chimera-agent: failed to {e:#}");
        std::process::exit(1);
    }
}
