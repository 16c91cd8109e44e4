//! End-to-end: the real controller, two real agents and the real CLI as
//! separate processes on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chimera_e2e::*;
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;

fn trials(url: &str, sweep: &str) -> Vec<Value> {
    let r = chimera_json(url, &["results", sweep]);
    assert_eq!(r["format"], "chimera.results");
    assert_eq!(r["version"], 1);
    r["trials"].as_array().unwrap().clone()
}

fn submit(url: &str, file: &str, wait: bool) -> String {
    let mut args = vec!["sweep", "submit", file];
    if wait {
        args.push("--wait");
    }
    let out = chimera(url, &args);
    assert!(
        out.status.success(),
        "submit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stdout must hold only the sweep id: {stdout:?}"
    );
    lines[0].to_owned()
}

#[test]
fn quickstart_runs_on_two_agents_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_controller(&dir.path().join("data"), "127.0.0.1:0", "3s");
    let mut a = start_agent(&c.url, "agent-a");
    let _b = start_agent(&c.url, "agent-b");
    wait_for_agents(&c.url, 2);

    let id = submit(&c.url, "examples/quickstart.yaml", true);
    let trials = trials(&c.url, &id);
    assert_eq!(
        trials.len(),
        24,
        "4 setups x 2 shapes x 3 repeats on one device class"
    );
    for t in &trials {
        assert_eq!(t["state"], "succeeded", "{t}");
        for m in [
            "gflop_per_s",
            "latency_ms_p50",
            "latency_ms_p99",
            "latency_ms_mean",
            "iterations",
        ] {
            let v = t["metrics"][m]
                .as_f64()
                .unwrap_or_else(|| panic!("{m} missing: {t}"));
            assert!(v > 0.0, "{m} = {v}: {t}");
        }
        assert!(t["metrics"]["cov"].as_f64().unwrap() >= 0.0);
        let fp = &t["fingerprint"];
        assert!(
            fp["candle_version"].as_str().unwrap().starts_with("0."),
            "{fp}"
        );
        assert!(fp["threads"].as_u64().unwrap() >= 1);
        assert!(["agent-a", "agent-b"].contains(&t["agent"].as_str().unwrap()));
        // The CPU's telemetry summary over the measured window.
        assert!(
            t["metrics"]["telemetry_samples"].as_f64().unwrap() >= 1.0,
            "{t}"
        );
        let util = t["metrics"]["cpu_util_pct_mean"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&util), "{t}");
        assert_eq!(t["detail"]["telemetry"]["device"], "cpu", "{t}");
        assert!(t["detail"]["telemetry"]["energy_source"].is_string(), "{t}");
    }

    // Interleaved rounds, recorded and followed: trial ids number the run
    // order; round r (8 trials) runs every configuration's repeat r, and
    // the trials were assigned in id order.
    let mut by_id: Vec<&Value> = trials.iter().collect();
    by_id.sort_by_key(|t| t["id"].as_str().unwrap().to_owned());
    for (r, round) in by_id.chunks(8).enumerate() {
        let mut configs: Vec<u64> = round
            .iter()
            .map(|t| {
                assert_eq!(t["repeat"], r as u64, "{t}");
                t["config_index"].as_u64().unwrap()
            })
            .collect();
        configs.sort_unstable();
        configs.dedup();
        assert_eq!(configs.len(), 8, "round {r}: {configs:?}");
    }
    let assigned: Vec<i64> = by_id
        .iter()
        .map(|t| t["assigned_unix_ms"].as_i64().unwrap())
        .collect();
    assert!(assigned.windows(2).all(|w| w[0] <= w[1]), "{assigned:?}");
    let header = chimera_json(&c.url, &["results", &id]);
    assert!(
        header["sweep"]["order_seed"].is_u64(),
        "{}",
        header["sweep"]
    );

    // The raw samples export, cut by phase.
    let samples = chimera_json(&c.url, &["telemetry", &id, "t00000"]);
    let samples = samples.as_array().unwrap();
    assert!(
        samples.iter().any(|s| s["phase"] == "measure"),
        "{samples:?}"
    );
    assert!(samples.iter().all(|s| s["trial"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{id}/t00000/"))));
    let csv = chimera(&c.url, &["telemetry", &id, "t00000", "--output", "csv"]);
    let csv = String::from_utf8_lossy(&csv.stdout);
    assert!(csv.starts_with("t_unix_ms,device,phase,trial,"), "{csv}");
    assert!(csv.contains("cpu_util_pct"), "{csv}");

    let status = chimera_json(&c.url, &["sweep", "status", &id]);
    assert_eq!(status[0]["state"], "done");
    assert_eq!(status[0]["trials"]["succeeded"], 24);
    // A unique prefix of the id will do, in either letter case.
    let prefix = id[..12].to_lowercase();
    let status = chimera_json(&c.url, &["sweep", "status", &prefix]);
    assert_eq!(status[0]["id"], id.as_str());
    assert_eq!(status[0]["failed_trials"], serde_json::json!([]));
    let out = chimera(&c.url, &["results", &id[..12], "--output", "csv"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = chimera(&c.url, &["sweep", "status", "ZZ"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no sweep's id starts with it"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = chimera_json(&c.url, &["sweep", "list"]);
    assert_eq!(list[0]["id"], id.as_str());

    // The comparison marks, per shape on the class, one clear best setup
    // or, where the intervals overlap, the setups tied for best.
    let cmp = chimera_json(&c.url, &["compare", &id, "--metric", "gflop_per_s"]);
    let rows = cmp["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    assert!(
        rows.iter().all(|r| r["cells"][0]["samples"] == 3),
        "median of 3: {cmp}"
    );
    let groups: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r["group"].as_str().unwrap()).collect();
    assert_eq!(groups.len(), 2, "{cmp}");
    for g in groups {
        let cells = || {
            rows.iter()
                .filter(|r| r["group"] == g)
                .map(|r| &r["cells"][0])
        };
        let best = cells().filter(|c| c["best"] == true).count();
        let tied = cells().filter(|c| c["tied"] == true).count();
        assert!(
            (best, tied) == (1, 0) || (best == 0 && tied >= 2),
            "{g}: {best} best, {tied} tied: {cmp}"
        );
    }
    let csv = chimera(&c.url, &["compare", &id, "--output", "csv"]);
    assert!(String::from_utf8_lossy(&csv.stdout).starts_with("problem,setup,"));

    // The report of a sweep on the controller: hosts from the agents, and
    // the selected trials' samples over GetTelemetry.
    let report_dir = tempfile::tempdir().unwrap();
    let report_out = report_dir.path().join("report");
    let out = chimera(
        &c.url,
        &["report", &id, "--out", report_out.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "report: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(report_out.join("index.html")).unwrap();
    assert!(html.contains("(host "), "agents with their hosts");
    let tele = &html[html.find("id=\"s0-telemetry\"").unwrap()..];
    let tele = &tele[..tele.find("</section>").unwrap()];
    assert!(tele.contains("<svg"), "{tele}");
    assert!(
        tele.contains("Samples read from the controller at"),
        "{tele}"
    );
    let rows = std::fs::read_to_string(report_out.join("trials.csv")).unwrap();
    assert_eq!(rows.lines().count(), 25, "a header and 24 trials");

    // A drained agent finishes up and exits cleanly.
    let drained = chimera_json(&c.url, &["agents", "drain", "agent-a"]);
    assert_eq!(drained[0]["draining"], true, "{drained}");
    let status = a.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "drained agent exit: {status}");
}

#[test]
fn a_bad_spec_is_refused_naming_field_and_line_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_controller(&dir.path().join("data"), "127.0.0.1:0", "3s");
    let _a = start_agent(&c.url, "agent-a");
    wait_for_agents(&c.url, 1);
    let cases = [
        ("name: x\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\n  colour: red\n", "line 6", "colour"),
        ("name: x\nworkload: kernel\nparams:\n  op: fft\n  shape: 8,8,8\n", "line 4", "fft"),
        ("name: x\nworkload: train\n", "line 2", "train"),
        ("name: x\nworkload: kernel\nparams:\n  op: matmul\n  shape: []\n", "line 5", "empty list"),
        ("name: x\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\nrepeats: lots\n", "line 6", "repeats"),
        // No device of the target kind is connected, and the operator asked
        // not to wait for one: refused at submit.
        ("name: x\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\ntarget:\n  kind: gpu\n", "target", "no connected agent"),
    ];
    for (i, (yaml, line, word)) in cases.iter().enumerate() {
        let f = spec_file(dir.path(), &format!("bad{i}.yaml"), yaml);
        let out = chimera(
            &c.url,
            &[
                "sweep",
                "submit",
                f.to_str().unwrap(),
                "--no-wait-for-agents",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "case {i}: {stderr}");
        assert!(out.stdout.is_empty(), "case {i}: nothing on stdout");
        assert!(
            stderr.contains(line) && stderr.contains(word),
            "case {i}: {stderr}"
        );
    }
    let list = chimera_json(&c.url, &["sweep", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 0, "nothing stored: {list}");
}

#[test]
fn a_sweep_submitted_before_its_agent_starts_waits_then_completes() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_controller(&dir.path().join("data"), "127.0.0.1:0", "3s");
    let f = spec_file(
        dir.path(),
        "early.yaml",
        "name: early\nworkload: kernel\nparams:\n  op: matmul\n  shape: [\"1,64,64\", \"2,64,64\"]\nrepeats: 2\nharness: {warmup_iters: 1, min_iters: 3, min_time_ms: 10}\n",
    );
    let id = submit(&c.url, f.to_str().unwrap(), false);
    let s = chimera_json(&c.url, &["sweep", "status", &id]);
    assert_eq!(s[0]["state"], "waiting for devices", "{s}");
    assert!(
        s[0]["waiting_for"]
            .as_str()
            .unwrap()
            .contains("matching target"),
        "{s}"
    );
    let _a = start_agent(&c.url, "agent-late");
    let out = chimera(&c.url, &["sweep", "watch", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = trials(&c.url, &id);
    assert_eq!(t.len(), 4, "2 shapes x 2 repeats");
    assert!(t.iter().all(|t| t["state"] == "succeeded"), "{t:?}");
}

const SLOW: &str = "name: slow
workload: kernel
params:
  op: matmul
  shape: [\"64,256,256\", \"64,256,512\"]
  threads: 1
harness:
  warmup_iters: 1
  min_iters: 3
  min_time_ms: 4000
  max_time_ms: 5000
";

#[test]
fn an_agent_killed_mid_trial_has_its_trial_rerun_elsewhere_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_controller(&dir.path().join("data"), "127.0.0.1:0", "2s");
    let mut agents = [
        start_agent(&c.url, "agent-a"),
        start_agent(&c.url, "agent-b"),
    ];
    wait_for_agents(&c.url, 2);
    let f = spec_file(dir.path(), "slow.yaml", SLOW);
    let id = submit(&c.url, f.to_str().unwrap(), false);

    // Find a trial that is running, and kill the agent running it.
    let (trial_id, victim) = wait_for("a running trial", Duration::from_secs(30), || {
        trials(&c.url, &id).into_iter().find_map(|t| {
            if t["state"] != "running" {
                return None;
            }
            Some((
                t["id"].as_str()?.to_owned(),
                t["agent"].as_str()?.to_owned(),
            ))
        })
    });
    let idx = agents.iter().position(|a| a.name == victim).unwrap();
    let killed = std::time::Instant::now();
    agents[idx].kill();
    // Agent-loss detection: until the trial is taken back (pending again, or
    // already on its next attempt).
    wait_for(
        "the trial to be taken back",
        Duration::from_secs(30),
        || {
            trials(&c.url, &id)
                .iter()
                .any(|t| {
                    t["id"] == trial_id.as_str()
                        && (t["state"] == "pending" || t["attempt"].as_u64() >= Some(2))
                })
                .then_some(())
        },
    );
    eprintln!(
        "agent SIGKILLed mid-trial: its trial was taken back after {:.2} s (lease TTL 2 s)",
        killed.elapsed().as_secs_f64()
    );

    let out = chimera(&c.url, &["sweep", "watch", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = trials(&c.url, &id);
    assert_eq!(all.len(), 2);
    let ids: HashSet<&str> = all.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "one record per trial");
    let t = all.iter().find(|t| t["id"] == trial_id.as_str()).unwrap();
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(t["attempt"], 2, "re-run as the next attempt: {t}");
    assert_ne!(
        t["agent"],
        victim.as_str(),
        "re-run on the other agent: {t}"
    );
    assert!(t["metrics"]["gflop_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_controller_killed_and_restarted_keeps_its_sweeps_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = start_controller(&data, "127.0.0.1:0", "3s");
    let addr = c.addr.clone();
    let _a = start_agent(&c.url, "agent-a");
    wait_for_agents(&c.url, 1);
    let id = submit(&c.url, "examples/quickstart.yaml", false);

    // Let some results land, then SIGKILL the controller mid-sweep.
    let before = wait_for("two results", Duration::from_secs(60), || {
        let done: Vec<Value> = trials(&c.url, &id)
            .into_iter()
            .filter(|t| t["state"] == "succeeded")
            .collect();
        (done.len() >= 2).then_some(done)
    });
    c.proc.kill();

    // Same address, same data directory: the agent reconnects by itself.
    let c = start_controller(&data, &addr, "3s");
    let list = chimera_json(&c.url, &["sweep", "list"]);
    assert_eq!(list[0]["id"], id.as_str(), "{list}");
    let out = chimera(&c.url, &["sweep", "watch", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = trials(&c.url, &id);
    assert_eq!(after.len(), 24);
    for t in &after {
        assert_eq!(t["state"], "succeeded", "{t}");
    }
    // Results acknowledged before the kill are there, unchanged.
    for b in &before {
        let a = after.iter().find(|t| t["id"] == b["id"]).unwrap();
        assert_eq!(a["metrics"], b["metrics"]);
        assert_eq!(a["attempt"], b["attempt"]);
    }
}

#[test]
fn model_workloads_run_across_processes_and_a_failure_leaves_the_agent_healthy() {
    let models = model_dir();
    let dir = tempfile::tempdir().unwrap();
    let c = start_controller(&dir.path().join("data"), "127.0.0.1:0", "3s");
    let mut a = start_agent_with(
        &c.url,
        "agent-m",
        &["--model-dir", models.to_str().unwrap()],
    );
    wait_for_agents(&c.url, 1);

    // eval: with `kl: topk` the reference runs once and feeds both formats;
    // with `kl: full` each trial computes its reference itself.
    let spec = spec_file(
        dir.path(),
        "eval.yaml",
        "name: ev\nworkload: eval\nparams:\n  model: SmolLM2-135M-Instruct.Q4_1.gguf\n  format: [q8_0, q4_0]\n  kl: [topk, full]\n  context: 32\n  chunks: 2\n",
    );
    let id = submit(&c.url, spec.to_str().unwrap(), true);
    let all = trials(&c.url, &id);
    assert_eq!(all.len(), 5, "{all:?}");
    assert!(all.iter().all(|t| t["state"] == "succeeded"), "{all:?}");
    let reference = all
        .iter()
        .find(|t| t["params"]["role"] == "reference")
        .expect("a reference trial");
    let kl = |f: &str, mode: &str| {
        let t = all
            .iter()
            .find(|t| t["params"]["format"] == f && t["params"]["kl"] == mode)
            .unwrap();
        if mode == "topk" {
            assert_eq!(t["depends_on"], reference["id"]);
        } else {
            assert!(t.get("depends_on").is_none(), "{t}");
        }
        t["metrics"]["kl_mean"].as_f64().unwrap()
    };
    assert!(
        kl("q4_0", "topk") > kl("q8_0", "topk"),
        "q4_0 diverges more than q8_0"
    );
    assert!(
        kl("q4_0", "full") > kl("q8_0", "full"),
        "the same over the full vocabulary"
    );
    for f in ["q8_0", "q4_0"] {
        assert!(
            kl(f, "full") >= kl(f, "topk") - 1e-6,
            "{f}: top-K is a lower bound"
        );
    }

    // A missing model fails its trial with the reason ...
    let spec = spec_file(
        dir.path(),
        "missing.yaml",
        "name: missing\nworkload: generate\nparams:\n  model: no-such-model.gguf\n",
    );
    let out = chimera(
        &c.url,
        &["sweep", "submit", spec.to_str().unwrap(), "--wait"],
    );
    assert_eq!(out.status.code(), Some(5), "a failed trial exits 5");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let t = &trials(&c.url, &id)[0];
    assert_eq!(t["state"], "failed");
    // `sweep status` counts it and gives its error whole.
    let status = chimera_json(&c.url, &["sweep", "status", &id[..16]]);
    assert_eq!(status[0]["trials"]["failed"], 1, "{status}");
    assert_eq!(
        status[0]["failed_trials"][0]["error"], t["error"],
        "{status}"
    );
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("`no-such-model.gguf` not found"),
        "{t}"
    );
    // ... and a path escaping the model directory is refused at submit.
    let spec = spec_file(
        dir.path(),
        "escape.yaml",
        "name: escape\nworkload: generate\nparams:\n  model: ../../etc/passwd\n",
    );
    let out = chimera(&c.url, &["sweep", "submit", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("escapes"));

    // The agent is still there and takes the next trial.
    let spec = spec_file(
        dir.path(),
        "one.yaml",
        "name: one\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\n",
    );
    let id = submit(&c.url, spec.to_str().unwrap(), true);
    assert_eq!(trials(&c.url, &id)[0]["state"], "succeeded");
    assert!(a.child.try_wait().unwrap().is_none(), "agent still running");
}

const ONE_SLOW: &str = "name: one-slow
workload: kernel
params:
  op: matmul
  shape: \"64,256,256\"
  threads: 1
harness:
  warmup_iters: 1
  min_iters: 3
  min_time_ms: 3000
  max_time_ms: 4000
";

fn outbox_files(state: &std::path::Path) -> usize {
    std::fs::read_dir(state.join("outbox"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "pb"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn an_agent_restarted_with_an_undelivered_result_delivers_it_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let state = dir.path().join("agent-state");
    let state_arg = state.to_str().unwrap();
    let mut c = start_controller(&data, "127.0.0.1:0", "3s");
    let addr = c.addr.clone();
    let url = c.url.clone();
    let mut a = start_agent_with(&url, "agent-disk", &["--state-dir", state_arg]);
    wait_for_agents(&url, 1);
    let f = spec_file(dir.path(), "one.yaml", ONE_SLOW);
    let id = submit(&url, f.to_str().unwrap(), false);
    wait_for("the trial to run", Duration::from_secs(30), || {
        trials(&url, &id)
            .iter()
            .any(|t| t["state"] == "running")
            .then_some(())
    });

    // The controller dies; the trial finishes with nobody to tell: the
    // result goes to the agent's outbox on disk. Then the agent dies too.
    c.proc.kill();
    wait_for(
        "the result to be buffered on disk",
        Duration::from_secs(30),
        || (outbox_files(&state) == 1).then_some(()),
    );
    a.kill();

    // Both come back; the new agent process finds the result on disk,
    // reports it in its hello, and delivers it: no re-run.
    let _a = start_agent_with(&url, "agent-disk", &["--state-dir", state_arg]);
    let c = start_controller(&data, &addr, "3s");
    let out = chimera(&c.url, &["sweep", "watch", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = trials(&c.url, &id);
    assert_eq!(all.len(), 1);
    let t = &all[0];
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(
        t["attempt"], 1,
        "the first attempt's result, not a re-run: {t}"
    );
    assert_eq!(t["agent"], "agent-disk", "{t}");
    assert!(t["metrics"]["gflop_per_s"].as_f64().unwrap() > 0.0, "{t}");
    wait_for(
        "the acknowledged result to leave the outbox",
        Duration::from_secs(10),
        || (outbox_files(&state) == 0).then_some(()),
    );
}

#[test]
fn a_serve_sweep_compares_candle_and_llama_server_and_prices_their_capacity() {
    let models = model_dir();
    let dir = tempfile::tempdir().unwrap();
    let c = start_controller(&dir.path().join("data"), "127.0.0.1:0", "3s");
    let mut flags = vec!["--model-dir".to_owned(), models.display().to_string()];
    let mut engines = vec!["candle"];
    if let Some(bin) = llama_server() {
        flags.push(format!("--engine=llama-server={}", bin.display()));
        engines.push("llama-server");
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut a = start_agent_with(&c.url, "agent-s", &flags);
    wait_for_agents(&c.url, 1);
    let spec = spec_file(
        dir.path(),
        "serve.yaml",
        &format!(
            "name: sv\nworkload: serve\nparams:\n  model: SmolLM2-135M-Instruct.Q4_1.gguf\n  format: q8_0\n  engine: [{}]\n  concurrency: [1, 2]\n  requests: 4\n  input_tokens: 16\n  output_tokens: 8\n  threads: 2\nslo: {{ttft_ms: 60000, itl_ms: 10000}}\n",
            engines.join(", ")
        ),
    );
    let id = submit(&c.url, spec.to_str().unwrap(), true);
    let all = trials(&c.url, &id);
    assert_eq!(all.len(), 2 * engines.len(), "{all:?}");
    for t in &all {
        assert_eq!(t["state"], "succeeded", "{t}");
        if t["params"]["engine"] == "llama-server" {
            let v = t["fingerprint"]["extra"]["engine_version"]
                .as_str()
                .unwrap();
            assert!(v.contains("version"), "{v}");
        }
        assert_eq!(t["metrics"]["requests_ok"], 4.0, "{t}");
        assert_eq!(t["metrics"]["requests_failed"], 0.0, "{t}");
    }
    // Every request of a trial, as CSV and JSON.
    let json = chimera_json(&c.url, &["requests", &id, "t00000"]);
    let records = json.as_array().unwrap();
    assert_eq!(records.len(), 4);
    for r in records {
        assert!(
            r["ttft_ms"].as_f64().unwrap() <= r["e2e_ms"].as_f64().unwrap(),
            "{r}"
        );
        assert_eq!(r["output_tokens"], 8);
        assert_eq!(r["itl_ms"].as_array().unwrap().len(), 7);
    }
    let csv = chimera(&c.url, &["requests", &id, "t00000", "--output", "csv"]);
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert_eq!(
        csv.lines().count(),
        5,
        "a header and one row per request: {csv}"
    );
    // compare: the capacity table, one curve per engine, capacity marked.
    let out = chimera(&c.url, &["compare", &id]);
    let table = String::from_utf8(out.stdout).unwrap();
    for e in &engines {
        assert!(table.contains(&format!("engine={e}")), "{table}");
    }
    assert!(table.contains("<- capacity"), "{table}");
    let curves = chimera_json(&c.url, &["compare", &id]);
    assert_eq!(curves.as_array().unwrap().len(), engines.len(), "{curves}");
    // cost: priced at capacity, the load named.
    let prices = root().join("examples/prices.toml");
    let out = chimera(
        &c.url,
        &[
            "cost",
            &id,
            "--prices",
            prices.to_str().unwrap(),
            "--tokens-per-month",
            "1e9",
            "--output",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    for r in rows.as_array().unwrap() {
        let load = r["load"].as_str().unwrap();
        assert!(load.starts_with("concurrency 2 within ttft<="), "{load}");
    }
    a.kill();
}
