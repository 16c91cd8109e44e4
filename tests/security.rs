//! The fleet as it runs on a real network, with real processes: a CA and
//! certificates made by `chimera tls`, a token by `chimera token`, the
//! controller serving TLS only with client certificates and tokens, an
//! agent proving its name with its certificate, and the CLI with a token.
//! And what a hostile spec costs the controller process, read from /proc.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chimera_e2e::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// `chimera ARGS` with no controller involved; stdout on success.
fn local(args: &[&str]) -> String {
    let out = std::process::Command::new(bin("chimera"))
        .args(args)
        .output()
        .expect("run chimera");
    assert!(
        out.status.success(),
        "chimera {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_tls_fleet_runs_a_sweep_with_certificates_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let tokens = dir.path().join("tokens.toml");
    local(&["tls", "init", "--dir", path(&pki)]);
    let issued = local(&[
        "tls",
        "issue",
        "--dir",
        path(&pki),
        "controller",
        "--host",
        "127.0.0.1",
        "--host",
        "localhost",
    ]);
    assert_eq!(issued.lines().count(), 2, "{issued}");
    local(&["tls", "issue", "--dir", path(&pki), "agent", "e2e-agent"]);
    let operator = local(&[
        "token",
        "create",
        "--tokens-file",
        path(&tokens),
        "--name",
        "ci",
        "--role",
        "operator",
    ]);
    let operator = operator.trim();
    assert!(
        operator.starts_with("chm_") && operator.len() == 68,
        "{operator}"
    );
    let viewer = local(&[
        "token",
        "create",
        "--tokens-file",
        path(&tokens),
        "--name",
        "dash",
        "--role",
        "viewer",
    ]);
    let viewer = viewer.trim();
    let file = std::fs::read_to_string(&tokens).unwrap();
    assert!(
        !file.contains(operator) && !file.contains(viewer),
        "the file holds hashes only"
    );

    let f = |name: &str| pki.join(name).to_str().unwrap().to_owned();
    let data = tempfile::tempdir().unwrap();
    let c = start_controller_env(
        data.path(),
        "127.0.0.1:0",
        "10s",
        &[
            (
                "CHIMERA_CONTROLLER_TLS_CERT",
                &f("controller-controller.pem"),
            ),
            (
                "CHIMERA_CONTROLLER_TLS_KEY",
                &f("controller-controller-key.pem"),
            ),
            ("CHIMERA_CONTROLLER_TLS_CLIENT_CA", &f("ca.pem")),
            ("CHIMERA_TOKENS_FILE", path(&tokens)),
        ],
    );
    assert!(c.url.starts_with("https://"), "{}", c.url);
    let _agent = start_agent_env(
        &c.url,
        "e2e-agent",
        &[],
        &[
            ("CHIMERA_AGENT_TLS_CA", &f("ca.pem")),
            ("CHIMERA_AGENT_TLS_CERT", &f("agent-e2e-agent.pem")),
            ("CHIMERA_AGENT_TLS_KEY", &f("agent-e2e-agent-key.pem")),
        ],
    );
    let ca = f("ca.pem");
    let as_operator = [("CHIMERA_TLS_CA", ca.as_str()), ("CHIMERA_TOKEN", operator)];
    let as_viewer = [("CHIMERA_TLS_CA", ca.as_str()), ("CHIMERA_TOKEN", viewer)];
    wait_for("the agent over TLS", Duration::from_secs(30), || {
        let out = chimera_env(&c.url, &["agents", "list", "-o", "json"], &as_viewer);
        let agents: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let a = agents.as_array()?.first()?.clone();
        (a["connected"] == true).then_some(a)
    });
    let agents: serde_json::Value = serde_json::from_slice(
        &chimera_env(&c.url, &["agents", "list", "-o", "json"], &as_viewer).stdout,
    )
    .unwrap();
    assert_eq!(agents[0]["registered_by"], "cert:agent/e2e-agent");

    let spec = spec_file(
        dir.path(),
        "k.yaml",
        "name: tls\nworkload: kernel\nparams:\n  op: matmul\n  shape: 16,16,16\n  threads: 1\nharness: {warmup_iters: 1, min_iters: 2, min_time_ms: 1, max_time_ms: 1000}\n",
    );
    let out = chimera_env(
        &c.url,
        &["sweep", "submit", "--wait", path(&spec)],
        &as_operator,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let status = chimera_env(&c.url, &["sweep", "status", &id, "-o", "json"], &as_viewer);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status[0]["trials"]["succeeded"], 1);
    assert_eq!(status[0]["submitted_by"], "token:ci");

    // A viewer may not cancel; no token, or no CA, gets nowhere.
    let out = chimera_env(&c.url, &["sweep", "cancel", &id], &as_viewer);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("token:dash has role viewer; CancelSweep needs operator"),
        "{err}"
    );
    let out = chimera_env(
        &c.url,
        &["sweep", "list"],
        &[("CHIMERA_TLS_CA", ca.as_str())],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a bearer token"));
    let out = chimera_env(&c.url, &["sweep", "list"], &[("CHIMERA_TOKEN", viewer)]);
    assert!(
        !out.status.success(),
        "a controller signed by an unknown CA is not trusted"
    );
    let plain = c.url.replace("https://", "http://");
    let out = chimera_env(&plain, &["sweep", "list"], &[("CHIMERA_TOKEN", viewer)]);
    assert!(!out.status.success(), "plaintext is refused");

    // Revoked: the controller re-reads the file and refuses the token, no restart.
    local(&[
        "token",
        "revoke",
        "--tokens-file",
        path(&tokens),
        "--name",
        "dash",
    ]);
    assert_eq!(
        local(&["token", "list", "--tokens-file", path(&tokens)])
            .lines()
            .count(),
        1
    );
    wait_for("the revoked token refused", Duration::from_secs(20), || {
        let out = chimera_env(&c.url, &["sweep", "list"], &as_viewer);
        String::from_utf8_lossy(&out.stderr)
            .contains("not one this controller knows")
            .then_some(())
    });
    use std::os::unix::fs::PermissionsExt;
    for f in [
        tokens.clone(),
        pki.join("ca-key.pem"),
        pki.join("agent-e2e-agent-key.pem"),
    ] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
}

/// The controller's peak resident memory (VmHWM), bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap()
}

#[test]
fn specs_that_expand_into_a_billion_trials_are_refused_before_they_are_built() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_controller(dir.path(), "127.0.0.1:0", "10s");
    let _agent = start_agent(&c.url, "a");
    wait_for_agents(&c.url, 1);
    let shapes: Vec<String> = (1..=1000).map(|i| format!("\"{i},64,64\"")).collect();
    // 1000 shapes x 1000 thread counts x 1000 repeats = 10^9 trials (10^6 configurations).
    let billion = format!(
        "name: big\nworkload: kernel\nrepeats: 1000\nparams:\n  op: matmul\n  shape: [{}]\n  threads: {{min: 1, max: 1000}}\n",
        shapes.join(",")
    );
    // 100 x 1000 = 10^5 configurations (the most there may be) x 1000 repeats = 10^8 trials.
    let hundred_million = format!(
        "name: big2\nworkload: kernel\nrepeats: 1000\nparams:\n  op: matmul\n  shape: [{}]\n  threads: {{min: 1, max: 1000}}\n",
        shapes[..100].join(",")
    );
    // A 151-byte generate spec of 300 x 300 x 256 = 23 million configurations.
    let small = "name: g\nworkload: generate\nparams:\n  model: m.gguf\n  prompt_tokens: {min: 1, max: 300}\n  new_tokens: {min: 1, max: 300}\n  batch: {min: 1, max: 256}\n";
    let before = peak_rss(c.proc.child.id());
    for (name, spec, says) in [
        (
            "billion.yaml",
            billion.as_str(),
            "more than 100000 configurations",
        ),
        (
            "hundred-million.yaml",
            hundred_million.as_str(),
            "100000 configurations x 1000 repeats",
        ),
        ("small.yaml", small, "more than 100000 configurations"),
    ] {
        let file = spec_file(dir.path(), name, spec);
        let started = Instant::now();
        let out = chimera(&c.url, &["sweep", "submit", path(&file)]);
        let took = started.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(says), "{name}: {err}");
        let peak = peak_rss(c.proc.child.id());
        println!(
            "LIMITS {name}: {} bytes of spec refused in {:.3} s; controller peak RSS {:.1} MiB (before: {:.1} MiB)",
            spec.len(),
            took.as_secs_f64(),
            peak as f64 / 1048576.0,
            before as f64 / 1048576.0
        );
        assert!(peak < 200 << 20, "{name}: peak RSS {peak} bytes");
    }
    // And it still takes a sweep.
    let ok = spec_file(
        dir.path(),
        "ok.yaml",
        "name: ok\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\n",
    );
    let out = chimera(&c.url, &["sweep", "submit", path(&ok)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
