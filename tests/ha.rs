//! Controllers on etcd: one leads, the others stand by; when the leader dies
//! a standby takes over and the sweep finishes, every trial once; a leader
//! frozen past its session is deposed and cannot write when it wakes.
//! A real etcd (Debian's etcd-server, installed when missing; under
//! `CI=true` a missing etcd fails), real controllers, agent and CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chimera_e2e::*;
use serde_json::Value;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const SWEEP: &str = "name: ha\nworkload: kernel\nparams:\n  op: matmul\n  shape: [\"1,128,128\", \"2,128,128\", \"4,128,128\", \"8,128,128\", \"16,128,128\", \"32,128,128\", \"64,128,128\", \"128,128,128\"]\n\
repeats: 7\nharness: {warmup_iters: 1, min_iters: 3, min_time_ms: 120}\n";
const TRIALS: usize = 56;

fn leads(url: &str) -> bool {
    chimera(url, &["agents", "list", "--output", "json"])
        .status
        .success()
}

fn trials(urls: &str, id: &str) -> Vec<Value> {
    chimera_json(urls, &["results", id])["trials"]
        .as_array()
        .unwrap()
        .clone()
}

/// Every trial succeeded, once, with one result.
fn all_once(trials: &[Value]) {
    assert_eq!(trials.len(), TRIALS);
    let ids: HashSet<&str> = trials.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), TRIALS, "no trial twice");
    for t in trials {
        assert_eq!(t["state"], "succeeded", "{t}");
        assert!(t["metrics"]["gflop_per_s"].as_f64().unwrap() > 0.0, "{t}");
    }
}

fn watch_to_the_end(urls: &str, id: &str) {
    wait_for("the sweep to finish", Duration::from_secs(120), || {
        let out = chimera(urls, &["sweep", "watch", id]);
        out.status.success().then_some(())
    });
}

fn submit(urls: &str, dir: &std::path::Path) -> String {
    let spec = spec_file(dir, "ha.yaml", SWEEP);
    let out = chimera(urls, &["sweep", "submit", spec.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn succeeded(urls: &str, id: &str) -> usize {
    trials(urls, id)
        .iter()
        .filter(|t| t["state"] == "succeeded")
        .count()
}

#[test]
fn a_standby_takes_over_from_a_killed_leader_and_the_sweep_finishes_once() {
    let Some(etcd) = start_etcd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let env = [("CHIMERA_STORE", etcd.url.as_str())];
    let mut a = start_controller_env(&dir.path().join("a"), "127.0.0.1:0", "3s", &env);
    wait_for(
        "the first controller to lead",
        Duration::from_secs(30),
        || leads(&a.url).then_some(()),
    );
    let b = start_controller_env(&dir.path().join("b"), "127.0.0.1:0", "3s", &env);
    // The standby refuses, naming the leader.
    let out = wait_for(
        "the standby to know the leader",
        Duration::from_secs(10),
        || {
            let out = chimera(&b.url, &["sweep", "list"]);
            String::from_utf8_lossy(&out.stderr)
                .contains(&format!("the leader is {}", a.url))
                .then_some(out)
        },
    );
    assert_eq!(out.status.code(), Some(1));
    let both = format!("{},{}", b.url, a.url);
    let _agent = start_agent(&both, "ha-agent");
    wait_for_agents(&both, 1);
    let id = submit(&both, dir.path());
    wait_for("some results", Duration::from_secs(60), || {
        (succeeded(&both, &id) >= 8).then_some(())
    });

    let killed = Instant::now();
    a.proc.kill();
    wait_for("the standby to lead", Duration::from_secs(30), || {
        leads(&b.url).then_some(())
    });
    let failover = killed.elapsed();
    watch_to_the_end(&both, &id);
    let done = killed.elapsed();
    all_once(&trials(&b.url, &id));
    eprintln!(
        "leader SIGKILLed: the standby led after {:.2} s; the sweep finished {:.2} s after the kill",
        failover.as_secs_f64(),
        done.as_secs_f64()
    );
    // A liveness bound, not a benchmark: docs/RELIABILITY.md has the figures.
    assert!(failover < Duration::from_secs(15), "{failover:?}");
}

#[test]
fn a_leader_frozen_past_its_session_is_deposed_and_cannot_write() {
    let Some(etcd) = start_etcd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let env = [("CHIMERA_STORE", etcd.url.as_str())];
    let mut a = start_controller_env(&dir.path().join("a"), "127.0.0.1:0", "3s", &env);
    wait_for(
        "the first controller to lead",
        Duration::from_secs(30),
        || leads(&a.url).then_some(()),
    );
    let b = start_controller_env(&dir.path().join("b"), "127.0.0.1:0", "3s", &env);
    let both = format!("{},{}", a.url, b.url);
    let _agent = start_agent(&both, "ha-agent");
    wait_for_agents(&both, 1);
    let id = submit(&both, dir.path());
    wait_for("some results", Duration::from_secs(60), || {
        (succeeded(&both, &id) >= 8).then_some(())
    });
    let pid = a.proc.child.id().to_string();
    let signal = |sig: &str| {
        assert!(std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    };
    signal("-STOP");
    wait_for("the standby to lead", Duration::from_secs(30), || {
        leads(&b.url).then_some(())
    });
    signal("-CONT");
    // Woken, the old leader finds its session gone and exits; whatever it
    // tried to write meanwhile was refused by its leadership guard.
    let status = a.proc.wait_exit(Duration::from_secs(30));
    assert!(
        !status.success(),
        "a deposed leader exits with an error: {status}"
    );
    watch_to_the_end(&b.url, &id);
    all_once(&trials(&b.url, &id));
}
