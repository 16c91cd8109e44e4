//! Adaptive search against a known response surface, on real processes: a
//! full grid of a `kernel` sweep gives the best configuration of each device
//! class; a TPE sweep over the same space, with under a third of the grid's
//! trials, must find a configuration within 5% of it. Successive halving runs
//! its rungs with their budgets.
//!
//! Two real device classes, one at a time so that neither measures the other's
//! load: the whole machine (`cpu: ... xN`) and the same CPU restricted to one
//! core with `taskset` (`cpu: ... x1`, its own class: the agent counts the
//! cores it may use).
//!
//! This binary holds only these tests, so cargo runs it alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chimera_e2e::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Dense and quantized products at eight batch sizes. `threads` is left to
/// its default (every core the agent may use), so the one-core class is not
/// oversubscribed.
const SPACE: &str = "\
workload: kernel
params:
  shape: [\"1,512,512\", \"2,512,512\", \"4,512,512\", \"8,512,512\", \"16,512,512\", \"32,512,512\", \"64,512,512\", \"128,512,512\"]
variants:
  - op: matmul
    dtype: [f32, f16, bf16]
  - op: qmatmul
    format: [q8_0, q4_0, q4k]
repeats: 3
harness:
  warmup_iters: 2
  min_iters: 5
  min_time_ms: 100
";

/// The tests take turns: a trial measured while another test's trial runs
/// would measure the other's load.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Configurations in the space above.
const GRID: usize = (3 + 3) * 8;
/// TPE's budget per class: under a third of the grid.
const TPE_TRIALS: usize = 15;

fn run_sweep(url: &str, dir: &std::path::Path, name: &str, yaml: &str) -> Vec<Value> {
    let file = spec_file(dir, &format!("{name}.yaml"), yaml);
    let out = chimera(url, &["sweep", "submit", file.to_str().unwrap(), "--wait"]);
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let id = stdout.lines().next().unwrap().trim().to_owned();
    let r = chimera_json(url, &["results", &id]);
    r["trials"].as_array().unwrap().clone()
}

/// A configuration of the space as a spec variant (`{"dtype": "f32", "op": "matmul", "shape": "8,512,512"}`).
fn variant(p: &Value) -> String {
    p.to_string()
}

/// Median gflop_per_s per configuration (as a spec variant), over succeeded trials.
fn medians(trials: &[Value]) -> BTreeMap<String, f64> {
    let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for t in trials {
        assert_eq!(t["state"], "succeeded", "{t}");
        let label = variant(&t["params"]);
        by.entry(label)
            .or_default()
            .push(t["metrics"]["gflop_per_s"].as_f64().unwrap());
    }
    by.into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            (k, v[v.len() / 2])
        })
        .collect()
}

fn best(m: &BTreeMap<String, f64>) -> (String, f64) {
    m.iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(k, v)| (k.clone(), *v))
        .unwrap()
}

fn start_pinned_agent(url: &str, name: &str, cpu: &str) -> Proc {
    let state = tempfile::tempdir().unwrap();
    let child = Command::new("taskset")
        .args(["--cpu-list", cpu])
        .arg(bin("chimera-agent"))
        .args(["--controller", url, "--name", name, "--state-dir"])
        .arg(state.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start chimera-agent under taskset (util-linux)");
    Proc {
        child,
        name: name.into(),
        dir: Some(state),
    }
}

fn class_of(url: &str, agent: &str) -> String {
    wait_for(
        &format!("agent {agent} connected"),
        Duration::from_secs(30),
        || {
            let agents = chimera_json(url, &["agents", "list"]);
            agents
                .as_array()?
                .iter()
                .find(|a| a["name"] == agent && a["connected"] == true)
                .and_then(|a| a["devices"][0]["device_class"].as_str())
                .map(str::to_owned)
        },
    )
}

#[test]
fn tpe_finds_within_5_percent_of_the_grid_best_in_under_a_third_of_the_trials_per_class() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let c = start_controller(&dir.path().join("data"), "127.0.0.1:0", "3s");
    let mut classes = Vec::new();
    for (agent, cpus) in [("whole", None), ("one-core", Some("0"))] {
        let mut a = match cpus {
            None => start_agent(&c.url, agent),
            Some(cpu) => start_pinned_agent(&c.url, agent, cpu),
        };
        let class = class_of(&c.url, agent);
        assert!(!classes.contains(&class), "{class} seen twice");
        let target = format!("target: {{agents: [{agent}]}}\n");
        let grid = run_sweep(
            &c.url,
            dir.path(),
            &format!("grid-{agent}"),
            &format!("name: grid\n{SPACE}{target}"),
        );
        assert_eq!(grid.len(), GRID * 3);
        let tpe = run_sweep(
            &c.url,
            dir.path(),
            &format!("tpe-{agent}"),
            &format!(
                "name: tpe\n{SPACE}{target}search: {{strategy: tpe, trials: {TPE_TRIALS}, seed: 1, objective: {{maximize: gflop_per_s}}}}\n"
            ),
        );
        let (grid_m, tpe_m) = (medians(&grid), medians(&tpe));
        assert_eq!(grid_m.len(), GRID);
        assert_eq!(tpe_m.len(), TPE_TRIALS, "TPE tries `trials` configurations");
        assert_eq!(tpe.len(), TPE_TRIALS * 3, "each repeated 3 times");
        assert!(
            tpe.len() * 3 < grid.len(),
            "under a third of the grid's trials"
        );
        assert!(tpe.iter().all(|t| t["device_class"] == class.as_str()));
        let (grid_best, grid_v) = best(&grid_m);
        // TPE's shortlist: its best three by its own medians (15 trials of
        // 3 repeats on a drifting VM rank neighbours on a flat plateau,
        // e.g. 64 vs 128 rows, by noise; with two, one run in four missed).
        let mut ranked: Vec<(&String, &f64)> = tpe_m.iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(a.1));
        let shortlist: Vec<String> = ranked.iter().take(3).map(|(k, _)| (*k).clone()).collect();
        // Throughput on this VM drifts by tens of percent over minutes, so
        // numbers from the two sweeps are not compared with each other: the
        // grid's best and TPE's two best are measured again head to head,
        // interleaved (A B C A B C ...), under the same conditions.
        let ratio = if shortlist.contains(&grid_best) {
            1.0
        } else {
            let round = format!("{grid_best}, {}", shortlist.join(", "));
            let duel = run_sweep(
                &c.url,
                dir.path(),
                &format!("duel-{agent}"),
                &format!(
                    "name: duel\nworkload: kernel\nvariants: [{}]\n\
                     harness: {{warmup_iters: 2, min_iters: 5, min_time_ms: 150}}\n{target}",
                    [round.as_str(); 7].join(", ")
                ),
            );
            let m = medians(&duel);
            shortlist
                .iter()
                .map(|t| m[t] / m[&grid_best])
                .fold(f64::MIN, f64::max)
        };
        eprintln!(
            "{class}: grid best {grid_best} {grid_v:.1} GFLOP/s; TPE's best three {} \
             (head to head, the better: {:.1}% of the grid's best) after {} of {} trials",
            shortlist.join(", "),
            100.0 * ratio,
            tpe.len(),
            grid.len()
        );
        assert!(
            ratio >= 0.95,
            "{class}: TPE's best three {shortlist:?} run at {:.1}% of the grid's best {grid_best} head to head",
            100.0 * ratio
        );
        classes.push(class);
        a.kill();
    }
    assert_eq!(classes.len(), 2);
}

#[test]
fn successive_halving_runs_each_rung_with_its_budget() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let c = start_controller(&dir.path().join("data"), "127.0.0.1:0", "3s");
    let _a = start_agent(&c.url, "h");
    wait_for_agents(&c.url, 1);
    let trials = run_sweep(
        &c.url,
        dir.path(),
        "halving",
        "name: halving\nworkload: kernel\nparams:\n  op: matmul\n  dtype: [f32, f16, bf16]\n  shape: [\"4,256,256\", \"64,256,256\", \"256,256,256\"]\n\
         harness: {warmup_iters: 1, min_iters: 2, min_time_ms: 0}\n\
         search: {strategy: halving, eta: 3, budget: {param: min_iters, min: 2, max: 18}, objective: {maximize: gflop_per_s}}\n",
    );
    let rung = |r: u64| -> Vec<&Value> {
        trials
            .iter()
            .filter(|t| t["rung"].as_u64() == Some(r))
            .collect()
    };
    assert_eq!(
        (rung(0).len(), rung(1).len(), rung(2).len(), trials.len()),
        (9, 3, 1, 13),
        "9 configurations, the best third promoted twice"
    );
    for (r, budget) in [(0, 2.0), (1, 6.0), (2, 18.0)] {
        for t in rung(r) {
            assert_eq!(t["state"], "succeeded", "{t}");
            let iters = t["metrics"]["iterations"].as_f64().unwrap();
            assert!(
                iters >= budget,
                "rung {r} measures at least {budget} iterations: {t}"
            );
        }
    }
    // Promoted configurations are the best of the rung below.
    let value = |t: &Value| t["metrics"]["gflop_per_s"].as_f64().unwrap();
    let promoted: Vec<u64> = rung(1)
        .iter()
        .map(|t| t["config_index"].as_u64().unwrap())
        .collect();
    let worst_promoted = rung(0)
        .iter()
        .filter(|t| promoted.contains(&t["config_index"].as_u64().unwrap()))
        .map(|t| value(t))
        .fold(f64::MAX, f64::min);
    let best_left = rung(0)
        .iter()
        .filter(|t| !promoted.contains(&t["config_index"].as_u64().unwrap()))
        .map(|t| value(t))
        .fold(f64::MIN, f64::max);
    assert!(
        worst_promoted >= best_left,
        "{worst_promoted} < {best_left}"
    );
}

#[test]
fn a_restarted_controller_resumes_each_search_from_its_stored_trials() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = start_controller(&data, "127.0.0.1:0", "3s");
    let addr = c.addr.clone();
    let _a = start_agent(&c.url, "r");
    wait_for_agents(&c.url, 1);
    let file = spec_file(
        dir.path(),
        "tpe.yaml",
        "name: resume\nworkload: kernel\nparams:\n  op: matmul\n  shape: [\"1,64,64\", \"2,64,64\", \"4,64,64\", \"8,64,64\", \"16,64,64\", \"32,64,64\"]\n  threads: [1, 2]\n\
         harness: {warmup_iters: 1, min_iters: 3, min_time_ms: 150}\n\
         search: {strategy: tpe, trials: 8, startup: 2, seed: 3, objective: {maximize: gflop_per_s}}\n",
    );
    let out = chimera(&c.url, &["sweep", "submit", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let results = |url: &str| {
        chimera_json(url, &["results", &id])["trials"]
            .as_array()
            .unwrap()
            .clone()
    };
    // Past the random start, into the estimator-driven generations.
    wait_for("four results", Duration::from_secs(60), || {
        let n = results(&c.url)
            .iter()
            .filter(|t| t["state"] == "succeeded")
            .count();
        (n >= 4).then_some(())
    });
    c.proc.kill();
    let c = start_controller(&data, &addr, "3s");
    let out = chimera(&c.url, &["sweep", "watch", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = results(&c.url);
    assert_eq!(all.len(), 8, "the search's budget, no more: {all:?}");
    let mut configs: Vec<u64> = all
        .iter()
        .map(|t| t["config_index"].as_u64().unwrap())
        .collect();
    configs.sort();
    configs.dedup();
    assert_eq!(
        configs.len(),
        8,
        "no configuration proposed twice across the restart"
    );
    assert!(all.iter().all(|t| t["state"] == "succeeded"), "{all:?}");
}
