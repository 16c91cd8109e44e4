//! Running as systemd services: the shipped units pass `systemd-analyze
//! verify`, and both binaries speak sd_notify (READY=1, then WATCHDOG=1 at
//! half the `WatchdogSec` interval) to a notify socket, as under systemd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chimera_e2e::*;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn systemd_analyze() -> Option<std::path::PathBuf> {
    let p = std::path::PathBuf::from("/usr/bin/systemd-analyze");
    if p.is_file() {
        return Some(p);
    }
    let why = "no systemd-analyze (Debian's systemd package)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

#[test]
fn the_shipped_units_verify() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for name in ["chimera-controller.service", "chimera-agent.service"] {
        let text = std::fs::read_to_string(root().join("deploy/systemd").join(name)).unwrap();
        assert!(
            text.contains("Type=notify") && text.contains("WatchdogSec="),
            "{name}"
        );
        for hardening in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
        ] {
            assert!(text.contains(hardening), "{name} lacks {hardening}");
        }
        // The binaries where this build put them (verify checks they exist).
        let text = text.replace(
            "/usr/local/bin/chimera-",
            &format!(
                "{}/chimera-",
                bin("chimera-agent").parent().unwrap().display()
            ),
        );
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    let out = Command::new(analyze)
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown keys and bad values are only warnings: there must be none.
    assert!(stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}

/// Reads notifications until `want` arrives (or panics after `limit`).
fn expect(sock: &UnixDatagram, want: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.lines().any(|l| l == want);
            seen.push(msg);
            if hit {
                return seen;
            }
        }
    }
    panic!("no `{want}` within {limit:?}; got {seen:?}");
}

fn notify_socket(dir: &std::path::Path, name: &str) -> (UnixDatagram, String) {
    let path = dir.join(name);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    (sock, path.to_str().unwrap().to_owned())
}

#[test]
fn controller_and_agent_notify_ready_and_feed_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let (ctl_sock, ctl_path) = notify_socket(dir.path(), "controller.sock");
    let env = [
        ("NOTIFY_SOCKET", ctl_path.as_str()),
        ("WATCHDOG_USEC", "400000"),
    ];
    let c = start_controller_env(&dir.path().join("data"), "127.0.0.1:0", "3s", &env);
    let seen = expect(&ctl_sock, "READY=1", Duration::from_secs(10));
    assert!(
        seen.iter()
            .any(|m| m.contains(&format!("STATUS=serving on {}", c.addr))),
        "{seen:?}"
    );
    // Pings at half of 400 ms, while the scheduler answers.
    expect(&ctl_sock, "WATCHDOG=1", Duration::from_secs(2));
    expect(&ctl_sock, "WATCHDOG=1", Duration::from_secs(2));

    let (agent_sock, agent_path) = notify_socket(dir.path(), "agent.sock");
    let _a = Proc {
        child: Command::new(bin("chimera-agent"))
            .args(["--controller", &c.url, "--name", "sd", "--state-dir"])
            .arg(dir.path().join("agent-state"))
            .env("NOTIFY_SOCKET", &agent_path)
            .env("WATCHDOG_USEC", "400000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
        name: "agent".into(),
        dir: None,
    };
    let seen = expect(&agent_sock, "READY=1", Duration::from_secs(10));
    assert!(
        seen.iter().any(|m| m.contains("device(s); controller ")),
        "{seen:?}"
    );
    expect(&agent_sock, "WATCHDOG=1", Duration::from_secs(2));
}
