//! The fault-injection suite (docs/RELIABILITY.md): a three-member etcd
//! cluster on loopback, two controllers kept running as their systemd unit
//! keeps them (restarted 2 s after they exit with an error or are killed),
//! three agents given both controllers, and a 54-trial sweep. Each test
//! injects one fault mid-sweep, records how long it took to heal (printed
//! as a `FAULT` line; run with `--nocapture`), and checks that every trial
//! ended `succeeded` exactly once with one recorded result.
//!
//! Real etcd (Debian's etcd-server, installed when missing; under `CI=true`
//! a missing etcd fails), real controller, agent and CLI processes. The
//! tests run one at a time: each one's lab uses the whole machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chimera_e2e::*;
use serde_json::Value;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const SWEEP: &str = "name: faults\nworkload: kernel\nparams:\n  op: matmul\n  threads: 1\n  shape: [\"1,256,256\", \"2,256,256\", \"4,256,256\", \"8,256,256\", \"16,256,256\", \"32,256,256\", \"64,256,256\", \"128,256,256\", \"256,256,256\"]\n\
repeats: 6\nharness: {warmup_iters: 1, min_iters: 3, min_time_ms: 500}\n";
const TRIALS: usize = 54;
/// The agents' lease TTL on the controllers.
const LEASE_TTL: &str = "3s";

static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}

struct Lab {
    etcd: EtcdCluster,
    controllers: Vec<Supervised>,
    agents: Vec<Proc>,
    /// Both controllers, comma-separated, as agents and the CLI take them.
    urls: String,
    dir: tempfile::TempDir,
}

/// Polls `f` every 300 ms (each poll runs the CLI) until it returns
/// `Some`, or panics after `limit`.
fn poll<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_every(what, limit, Duration::from_millis(300), f)
}

impl Lab {
    fn start() -> Option<Lab> {
        let etcd = EtcdCluster::start(3)?;
        let dir = tempfile::tempdir().unwrap();
        let controllers: Vec<Supervised> = (0..2)
            .map(|i| {
                let name = format!("c{i}");
                Supervised::start(&name, &dir.path().join(&name), &etcd.url, LEASE_TTL)
            })
            .collect();
        let urls = controllers
            .iter()
            .map(|c| c.url.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let agents = (0..3)
            .map(|i| {
                start_agent_with(
                    &urls,
                    &format!("agent-{i}"),
                    &["--telemetry-interval-ms", "0"],
                )
            })
            .collect();
        let lab = Lab {
            etcd,
            controllers,
            agents,
            urls,
            dir,
        };
        poll("a controller to lead", Duration::from_secs(30), || {
            lab.leader()
        });
        wait_for_agents(&lab.urls, 3);
        Some(lab)
    }

    /// The controller that leads now, if one does.
    fn leader(&self) -> Option<usize> {
        self.controllers.iter().position(Supervised::leads)
    }

    fn submit(&self) -> String {
        let spec = spec_file(self.dir.path(), "faults.yaml", SWEEP);
        let out = chimera(&self.urls, &["sweep", "submit", spec.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// The sweep's trials, or `None` while no controller answers.
    fn trials(&self, id: &str) -> Option<Vec<Value>> {
        let out = chimera(&self.urls, &["results", id, "--output", "json"]);
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["trials"].as_array().cloned()
    }

    fn succeeded(&self, id: &str) -> Option<usize> {
        Some(
            self.trials(id)?
                .iter()
                .filter(|t| t["state"] == "succeeded")
                .count(),
        )
    }

    fn wait_for_results(&self, id: &str, n: usize) {
        poll(&format!("{n} results"), Duration::from_secs(120), || {
            (self.succeeded(id)? >= n).then_some(())
        });
    }

    /// The index of an agent that runs a trial now.
    fn busy_agent(&self, id: &str) -> usize {
        poll("a running trial", Duration::from_secs(60), || {
            self.trials(id)?.into_iter().find_map(|t| {
                let agent = t["agent"].as_str()?;
                (t["state"] == "running")
                    .then(|| self.agents.iter().position(|a| a.name == agent))
                    .flatten()
            })
        })
    }

    /// The trial the controller holds as running (or assigned) on agent
    /// `i`, asked right after the agent was stopped: what it was running
    /// then. (A listing taken before the stop may name a trial that ended
    /// just before it.)
    fn in_flight_on(&self, id: &str, i: usize) -> Option<String> {
        let name = self.agents[i].name.as_str();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let found = self.trials(id).and_then(|t| {
                t.into_iter().find_map(|t| {
                    (t["agent"] == name && (t["state"] == "running" || t["state"] == "assigned"))
                        .then(|| t["id"].as_str().map(str::to_owned))
                        .flatten()
                })
            });
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Waits until every trial has ended; checks each succeeded exactly
    /// once with one result, and returns them.
    fn finish(&self, id: &str) -> Vec<Value> {
        let trials = poll("the sweep to finish", Duration::from_secs(240), || {
            let t = self.trials(id)?;
            t.iter()
                .all(|t| {
                    ["succeeded", "failed", "cancelled"]
                        .contains(&t["state"].as_str().unwrap_or(""))
                })
                .then_some(t)
        });
        assert_eq!(trials.len(), TRIALS, "one record per trial");
        let ids: HashSet<&str> = trials.iter().map(|t| t["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), TRIALS, "no trial twice");
        for t in &trials {
            assert_eq!(t["state"], "succeeded", "{t}");
            assert!(t["metrics"]["gflop_per_s"].as_f64().unwrap() > 0.0, "{t}");
        }
        // The sweep's own counts agree: every trial succeeded, once.
        let status = chimera_json(&self.urls, &["sweep", "status", id]);
        assert_eq!(status[0]["state"], "done", "{status}");
        assert_eq!(status[0]["trials"]["succeeded"], TRIALS as u64, "{status}");
        trials
    }

    /// Waits for the sweep to record more than `before` results; the time
    /// from `since`.
    fn next_result(&self, id: &str, before: usize, since: Instant) -> Duration {
        poll(
            "a new result after the fault",
            Duration::from_secs(60),
            || (self.succeeded(id)? > before).then_some(()),
        );
        since.elapsed()
    }

    fn restarts(&self) -> Vec<usize> {
        self.controllers
            .iter()
            .map(|c| c.restarts.load(std::sync::atomic::Ordering::SeqCst))
            .collect()
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[test]
fn the_leader_controller_sigkilled_mid_sweep() {
    let _alone = alone();
    let Some(lab) = Lab::start() else { return };
    let id = lab.submit();
    lab.wait_for_results(&id, 10);
    let old = lab.leader().expect("a leader");
    let killed = Instant::now();
    lab.controllers[old].kill();
    let new = poll(
        "a controller to lead again",
        Duration::from_secs(30),
        || lab.leader(),
    );
    let failover = killed.elapsed();
    lab.finish(&id);
    let done = killed.elapsed();
    eprintln!(
        "FAULT leader controller SIGKILLed: controller c{new} led after {}; the sweep finished {} after the kill; controller restarts {:?}",
        secs(failover),
        secs(done),
        lab.restarts()
    );
    assert_ne!(
        new, old,
        "the standby took over (the killed one was still restarting)"
    );
}

#[test]
fn an_agent_sigkilled_mid_trial() {
    let _alone = alone();
    let Some(mut lab) = Lab::start() else { return };
    let id = lab.submit();
    lab.wait_for_results(&id, 6);
    let victim = lab.busy_agent(&id);
    let name = lab.agents[victim].name.clone();
    let killed = Instant::now();
    lab.agents[victim].kill();
    let trial = lab
        .in_flight_on(&id, victim)
        .expect("the killed agent was running a trial");
    poll(
        "the trial to be taken back",
        Duration::from_secs(30),
        || {
            let t = lab.trials(&id)?;
            t.iter()
                .any(|t| {
                    t["id"] == trial.as_str()
                        && (t["state"] == "pending" || t["attempt"].as_u64() >= Some(2))
                })
                .then_some(())
        },
    );
    let detected = killed.elapsed();
    let trials = lab.finish(&id);
    let done = killed.elapsed();
    let t = trials.iter().find(|t| t["id"] == trial.as_str()).unwrap();
    assert!(
        t["attempt"].as_u64().unwrap() >= 2,
        "re-run as a later attempt: {t}"
    );
    assert_ne!(t["agent"], name.as_str(), "re-run on another agent: {t}");
    eprintln!(
        "FAULT agent SIGKILLed mid-trial: its trial was taken back after {} (lease TTL {LEASE_TTL}); the sweep finished {} after the kill",
        secs(detected),
        secs(done)
    );
}

#[test]
fn an_agent_sigstopped_past_its_lease_has_its_late_result_refused() {
    let _alone = alone();
    let Some(lab) = Lab::start() else { return };
    let id = lab.submit();
    lab.wait_for_results(&id, 6);
    let leader = lab.leader().expect("a leader");
    let refused = || {
        lab.controllers[leader]
            .metric("chimera_results_refused_total")
            .expect("the leader's /metrics answers")
    };
    // Freeze an agent while it runs a trial; if it was between trials
    // (none held on it right after the stop), thaw it and try again.
    let (trial, victim, stopped) = (0..5)
        .find_map(|_| {
            let victim = lab.busy_agent(&id);
            lab.agents[victim].signal("-STOP");
            let stopped = Instant::now();
            match lab.in_flight_on(&id, victim) {
                Some(trial) => Some((trial, victim, stopped)),
                None => {
                    lab.agents[victim].signal("-CONT");
                    None
                }
            }
        })
        .expect("an agent frozen mid-trial within 5 tries");
    // Its lease expires; the trial goes back to the queue's front and to
    // one of the other agents, as the next attempt.
    poll(
        "the frozen agent's trial to be re-assigned",
        Duration::from_secs(30),
        || {
            let t = lab
                .trials(&id)?
                .into_iter()
                .find(|t| t["id"] == trial.as_str())?;
            (t["attempt"].as_u64() >= Some(2)).then_some(())
        },
    );
    let detected = stopped.elapsed();
    let before = refused();
    let thawed = Instant::now();
    lab.agents[victim].signal("-CONT");
    poll(
        "the late result to be refused",
        Duration::from_secs(30),
        || (refused() > before).then_some(()),
    );
    let late = thawed.elapsed();
    let trials = lab.finish(&id);
    let t = trials.iter().find(|t| t["id"] == trial.as_str()).unwrap();
    assert!(
        t["attempt"].as_u64().unwrap() >= 2,
        "the accepted result is a later attempt's: {t}"
    );
    assert_ne!(t["agent"], lab.agents[victim].name.as_str(), "{t}");
    assert_eq!(lab.leader(), Some(leader), "no failover meanwhile");
    eprintln!(
        "FAULT agent SIGSTOPped past its lease: its trial was re-assigned after {} (lease TTL {LEASE_TTL}); after SIGCONT its late result was refused within {} ({} refused results counted)",
        secs(detected),
        secs(late),
        refused()
    );
}

#[test]
fn one_etcd_member_sigkilled_mid_sweep() {
    let _alone = alone();
    let Some(mut lab) = Lab::start() else { return };
    let id = lab.submit();
    lab.wait_for_results(&id, 10);
    // The member that leads the etcd cluster: the costliest one to lose.
    let member = poll("the etcd leader", Duration::from_secs(10), || {
        lab.etcd.leader()
    });
    let before = lab.succeeded(&id).unwrap_or(0);
    let killed = Instant::now();
    lab.etcd.kill_member(member);
    let elected = lab.etcd.wait_for_leader(Duration::from_secs(30));
    let progress = lab.next_result(&id, before, killed);
    lab.finish(&id);
    let done = killed.elapsed();
    eprintln!(
        "FAULT etcd leader member SIGKILLed (1 of 3): etcd had a new leader after {}; the next result was recorded {} after the kill; the sweep finished {} after it; controller restarts {:?}",
        secs(elected),
        secs(progress),
        secs(done),
        lab.restarts()
    );
    assert_eq!(
        lab.restarts(),
        [0, 0],
        "losing one etcd member of three costs no controller restart"
    );
}

#[test]
fn the_whole_etcd_cluster_restarted_mid_sweep() {
    let _alone = alone();
    let Some(mut lab) = Lab::start() else { return };
    let id = lab.submit();
    lab.wait_for_results(&id, 10);
    let before = lab.succeeded(&id).unwrap_or(0);
    let killed = Instant::now();
    for i in 0..lab.etcd.len() {
        lab.etcd.kill_member(i);
    }
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..lab.etcd.len() {
        lab.etcd.start_member(i);
    }
    lab.etcd.wait_for_leader(Duration::from_secs(60));
    let etcd_back = killed.elapsed();
    let leader = poll("a controller to lead", Duration::from_secs(60), || {
        lab.leader()
    });
    let leading = killed.elapsed();
    let progress = lab.next_result(&id, before, killed);
    lab.finish(&id);
    let done = killed.elapsed();
    eprintln!(
        "FAULT whole etcd cluster SIGKILLed and restarted (down 1 s): etcd led again {} after the kill; controller c{leader} answered as leader after {}; the next result was recorded after {}; the sweep finished after {}; controller restarts {:?}",
        secs(etcd_back),
        secs(leading),
        secs(progress),
        secs(done),
        lab.restarts()
    );
    assert_eq!(
        lab.restarts(),
        [0, 0],
        "an etcd outage shorter than the controllers' grace ({:?}) costs no controller restart",
        chimera_controller::STORE_OUTAGE_GRACE
    );
}
