//! `chimera-controller`: parses flags and runs [`chimera_controller::serve`].

use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Chimera's controller: schedules trials onto agents and records their results.
#[derive(Parser, Debug)]
#[command(name = "chimera-controller", version)]
struct Args {
    /// Address to listen on (`127.0.0.1:0` picks a free port; the address is printed).
    #[arg(long, env = "CHIMERA_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Directory of the embedded store (created if missing).
    #[arg(long, env = "CHIMERA_DATA_DIR", default_value = "chimera-data")]
    data_dir: PathBuf,
    /// The state store: `embedded` (a file in --data-dir) or an etcd cluster,
    /// `etcd://HOST:PORT[,HOST:PORT...]`.
    #[arg(long, env = "CHIMERA_STORE", default_value = "embedded")]
    store: String,
    /// Put before every key in etcd (keys are `/chimera/v1/...`), to keep
    /// several installations apart on one cluster: `/lab-a` gives
    /// `/lab-a/chimera/v1/...`.
    #[arg(long, env = "CHIMERA_STORE_PREFIX", default_value = chimera_controller::DEFAULT_STORE_PREFIX)]
    store_prefix: String,
    /// TLS to etcd: PEM file of the CA(s) that signed etcd's server
    /// certificate (etcd's `--cert-file`). Any --etcd-*-file turns TLS on
    /// (`https://` endpoints); without this one the system's trusted roots
    /// are used.
    #[arg(long, env = "CHIMERA_ETCD_CA_FILE", value_name = "PEM")]
    etcd_ca_file: Option<PathBuf>,
    /// TLS client certificate (PEM) for an etcd started with
    /// `--client-cert-auth`; needs --etcd-key-file.
    #[arg(long, env = "CHIMERA_ETCD_CERT_FILE", value_name = "PEM")]
    etcd_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --etcd-cert-file.
    #[arg(long, env = "CHIMERA_ETCD_KEY_FILE", value_name = "PEM")]
    etcd_key_file: Option<PathBuf>,
    /// etcd user to authenticate as (etcd with `auth enable`); its password
    /// comes from the environment variable CHIMERA_ETCD_PASSWORD only (a flag
    /// would show in `ps`).
    #[arg(long, env = "CHIMERA_ETCD_USER")]
    etcd_user: Option<String>,
    /// The URL standby controllers give clients for this one when it leads
    /// (default: http:// and the bound address).
    #[arg(long, env = "CHIMERA_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// An agent silent this long loses its lease and its trials, e.g. `10s`, `1500ms`.
    #[arg(long, env = "CHIMERA_LEASE_TTL", default_value = "10s", value_parser = parse_duration)]
    lease_ttl: Duration,
    /// Listen on a non-loopback address without TLS (trusted networks only).
    #[arg(long, env = "CHIMERA_ALLOW_INSECURE")]
    allow_insecure: bool,
    /// TLS on the gRPC port: this controller's certificate chain (PEM;
    /// `chimera tls issue controller --host ...`). Needs --tls-key.
    #[arg(long, env = "CHIMERA_CONTROLLER_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "CHIMERA_CONTROLLER_TLS_KEY", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) of agents' and operators' client certificates: agents must
    /// then present a certificate naming them, and operators a token or a
    /// certificate. Needs --tls-cert.
    #[arg(long, env = "CHIMERA_CONTROLLER_TLS_CLIENT_CA", value_name = "PEM")]
    tls_client_ca: Option<PathBuf>,
    /// Operators' bearer tokens: a TOML file of names, roles and SHA-256
    /// hashes (`chimera token create`); re-read when it changes.
    #[arg(long, env = "CHIMERA_TOKENS_FILE", value_name = "FILE")]
    tokens_file: Option<PathBuf>,
    /// Most trials one sweep may expand into.
    #[arg(long, env = "CHIMERA_MAX_TRIALS_PER_SWEEP", default_value_t = chimera_domain::spec::MAX_TRIALS)]
    max_trials_per_sweep: u64,
    /// Most sweeps running at once.
    #[arg(long, env = "CHIMERA_MAX_ACTIVE_SWEEPS", default_value_t = 100)]
    max_active_sweeps: usize,
    /// Most agents registered at once.
    #[arg(long, env = "CHIMERA_MAX_AGENTS", default_value_t = 10_000)]
    max_agents: usize,
    /// Most client connections open at once.
    #[arg(long, env = "CHIMERA_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Raw telemetry kept on disk in --data-dir, MiB (the oldest sweeps' go first).
    #[arg(long, env = "CHIMERA_TELEMETRY_MAX_MIB", default_value_t = 2048)]
    telemetry_max_mib: u64,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (loopback only); off when unset.
    #[arg(long, env = "CHIMERA_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like `10s` or `500ms`"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("`{s}`: unit must be ms, s or m")),
    };
    if d < Duration::from_millis(200) {
        return Err(format!("`{s}` is too short: at least 200ms"));
    }
    Ok(d)
}

/// TLS and auth to etcd from the flags and `password`
/// (`CHIMERA_ETCD_PASSWORD`); any of them without an etcd store is an error
/// naming it.
fn etcd_settings(
    args: &Args,
    on_etcd: bool,
    password: Option<String>,
) -> anyhow::Result<chimera_controller::store::etcd::EtcdSettings> {
    use chimera_controller::store::etcd::{EtcdAuth, EtcdSettings, EtcdTls};
    if !on_etcd {
        let given = [
            ("--etcd-ca-file", args.etcd_ca_file.is_some()),
            ("--etcd-cert-file", args.etcd_cert_file.is_some()),
            ("--etcd-key-file", args.etcd_key_file.is_some()),
            ("--etcd-user", args.etcd_user.is_some()),
            ("CHIMERA_ETCD_PASSWORD", password.is_some()),
        ];
        if let Some((name, _)) = given.iter().find(|(_, set)| *set) {
            anyhow::bail!(
                "{name} is for an etcd store, but --store is `{}`: \
                 give --store etcd://HOST:PORT, or drop {name}",
                args.store
            );
        }
        return Ok(EtcdSettings::default());
    }
    let auth = match (&args.etcd_user, password) {
        (Some(user), Some(password)) => Some(EtcdAuth {
            user: user.clone(),
            password,
        }),
        (None, None) => None,
        (Some(_), None) => {
            anyhow::bail!(
                "--etcd-user needs its password in the environment variable CHIMERA_ETCD_PASSWORD"
            )
        }
        (None, Some(_)) => {
            anyhow::bail!("CHIMERA_ETCD_PASSWORD is set but --etcd-user (CHIMERA_ETCD_USER) is not")
        }
    };
    Ok(EtcdSettings {
        tls: EtcdTls::from_files(
            args.etcd_ca_file.clone(),
            args.etcd_cert_file.clone(),
            args.etcd_key_file.clone(),
        ),
        auth,
    })
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let guard = chimera_observe::init("chimera-controller", "info");
    let result = run(args).await;
    guard.shutdown().await;
    if let Err(e) = result {
        eprintln!("chimera-controller: failed to {e:#}");
        std::process::exit(1);
    }
}

/// The TLS files from the flags; a partial set is an error naming what is missing.
fn tls(args: &Args) -> anyhow::Result<Option<chimera_controller::tls::ServerTls>> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(chimera_controller::tls::ServerTls {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
        })),
        (None, None) if args.tls_client_ca.is_some() => {
            anyhow::bail!("--tls-client-ca needs --tls-cert and --tls-key (client certificates are checked over TLS)")
        }
        (None, None) => Ok(None),
        (Some(_), None) => anyhow::bail!("--tls-cert needs --tls-key"),
        (None, Some(_)) => anyhow::bail!("--tls-key needs --tls-cert"),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let tls = tls(&args)?;
    let listener =
        chimera_controller::bind(args.listen, tls.is_some() || args.allow_insecure).await?;
    let addr = listener.local_addr().context("read the bound address")?;
    // The one line on stdout: scripts and tests read the address from it.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("chimera-controller listening on {scheme}://{addr}");
    let store = match args.store.as_str() {
        "embedded" => None,
        url if url.starts_with("etcd://") => Some(url.to_owned()),
        other => anyhow::bail!(
            "--store `{other}`: expected `embedded` or `etcd://HOST:PORT[,HOST:PORT...]`"
        ),
    };
    let password = std::env::var("CHIMERA_ETCD_PASSWORD").ok();
    let etcd =
        etcd_settings(&args, store.is_some(), password).context("check the etcd settings")?;
    let config = chimera_controller::Config {
        data_dir: args.data_dir,
        store,
        store_prefix: args.store_prefix,
        etcd,
        advertise: args.advertise_url,
        lease_ttl: args.lease_ttl,
        metrics_listen: args.metrics_listen,
        tls,
        tokens_file: args.tokens_file,
        limits: chimera_controller::Limits {
            max_trials_per_sweep: args.max_trials_per_sweep,
            max_active_sweeps: args.max_active_sweeps,
            max_agents: args.max_agents,
            max_connections: args.max_connections,
            telemetry: chimera_controller::telemetry::Limits {
                max_bytes: args.telemetry_max_mib.saturating_mul(1 << 20),
                ..Default::default()
            },
            ..Default::default()
        },
    };
    chimera_controller::serve(listener, config, chimera_observe::shutdown_on_signal())
        .await
        .context("run the controller")
}
