//! `chimera report`: a real sweep run with `chimera run`, its report opened
//! in headless Chromium (no console errors; the charts are in the DOM), and
//! the report's refusals of bad input.
//!
//! The browser test arranges Chromium itself: it uses `chromium` or
//! `chromium-browser` from PATH, else installs Debian's `chromium` package
//! with apt-get when running as root (under a file lock, so parallel runs do
//! not run apt at once). Without a browser it is skipped with a message, or
//! fails under `CI=true`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{chimera, ok, results, trial, with, write};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn find_chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"]
        .iter()
        .find_map(|n| on_path(n))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Chromium from PATH, or installed from Debian's package when root; `None`
/// (after saying why) when there is none and `CI` is not `true`.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = find_chromium() {
        return Some(p);
    }
    if is_root() && on_path("apt-get").is_some() {
        eprintln!("chromium not found: installing Debian's chromium package with apt-get");
        // Inside the lock, check again: another test may have installed it.
        let script = "command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 && exit 0; \
             export DEBIAN_FRONTEND=noninteractive; \
             apt-get install -y --no-install-recommends chromium \
             || { apt-get update && apt-get install -y --no-install-recommends chromium; }";
        let status = if on_path("flock").is_some() {
            Command::new("flock")
                .args(["/tmp/chimera-apt.lock", "sh", "-c", script])
                .stdout(Stdio::null())
                .status()
        } else {
            Command::new("sh")
                .args(["-c", script])
                .stdout(Stdio::null())
                .status()
        };
        eprintln!("apt-get: {status:?}");
    }
    if let Some(p) = find_chromium() {
        return Some(p);
    }
    let why = "no chromium on PATH and it could not be installed (apt-get install chromium needs root and Debian's archive)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// What headless Chromium made of a page: the DOM after load, and every
/// console message (`console.*` calls and uncaught exceptions), which
/// Chromium logs to stderr as `...:CONSOLE...] "message", source: URL (line)`
/// with `--enable-logging=stderr`.
struct Loaded {
    dom: String,
    console: Vec<String>,
}

fn load(browser: &Path, page: &Path) -> Loaded {
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes on threads so neither fills; give up after 120 s.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).unwrap();
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).unwrap();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("chromium did not finish loading {url} within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let dom = t_out.join().unwrap();
    let stderr = t_err.join().unwrap();
    let console = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    Loaded { dom, console }
}

/// The part of the DOM inside `<section id="ID"...>...</section>`.
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no section {id} in the DOM"));
    let rest = &dom[start..];
    &rest[..rest.find("</section>").unwrap_or(rest.len())]
}

const SPEC: &str = "version: 1
name: report-test
workload: kernel
params:
  shape: \"1,256,256\"
variants:
  - op: matmul
    dtype: f32
  - op: qmatmul
    format: [q8_0, q4_0]
placement: each-class
repeats: 2
harness:
  warmup_iters: 1
  min_iters: 3
  min_time_ms: 250
  max_time_ms: 2000
";

#[test]
fn the_report_of_a_real_sweep_loads_in_chromium_without_console_errors() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("sweep.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    let run_dir = dir.path().join("run");
    let out = chimera(&[
        "run",
        spec.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    ok(&out);
    let results = run_dir.join("results.json");
    let telemetry = std::fs::read_to_string(run_dir.join("telemetry.jsonl")).unwrap();
    assert!(
        !telemetry.is_empty(),
        "chimera run saves the trials' samples"
    );
    let report_dir = dir.path().join("report");
    let out = chimera(&[
        "report",
        results.to_str().unwrap(),
        "--pareto",
        "gflop_per_s,cov",
        "--out",
        report_dir.to_str().unwrap(),
    ]);
    ok(&out);
    let index = report_dir.join("index.html");
    let html = std::fs::read_to_string(&index).unwrap();

    // One row per trial in both tables.
    let mut csv = csv::Reader::from_path(report_dir.join("trials.csv")).unwrap();
    let header = csv.headers().unwrap().clone();
    assert_eq!(&header[0], "id");
    assert!(header.iter().any(|h| h == "gflop_per_s"), "{header:?}");
    assert_eq!(csv.records().count(), 6);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report_dir.join("trials.json")).unwrap()).unwrap();
    assert_eq!(json["trials"].as_array().unwrap().len(), 6);

    // Self-contained: nothing to fetch, no script.
    for banned in [
        "<script", "<link", "<img", "<iframe", "@import", "url(", "src=",
    ] {
        assert!(!html.contains(banned), "the page has `{banned}`");
    }
    for href in html.split("href=\"").skip(1) {
        let target = &href[..href.find('"').unwrap()];
        assert!(
            target.starts_with('#') || target == "trials.csv" || target == "trials.json",
            "link to {target}"
        );
    }

    let Some(browser) = chromium() else {
        return;
    };
    // The console check really sees errors: a page with a deliberate one.
    let canary = dir.path().join("canary.html");
    std::fs::write(
        &canary,
        "<!DOCTYPE html><html><body><p>x</p><script>console.error('canary'); undefinedFunction();</script></body></html>",
    )
    .unwrap();
    let c = load(&browser, &canary);
    assert!(
        c.console.iter().any(|l| l.contains("canary"))
            && c.console.iter().any(|l| l.contains("undefinedFunction")),
        "the console check sees no error on a page that has two: {:?}",
        c.console
    );

    let page = load(&browser, &index);
    assert!(
        page.console.is_empty(),
        "console messages: {:?}",
        page.console
    );
    assert!(page.dom.contains("Chimera report: report-test"));
    let metric = section(&page.dom, "s0-metric");
    assert_eq!(metric.matches("<svg").count(), 1, "{metric}");
    assert!(metric.contains("gflop_per_s [GFLOP/s]"));
    assert!(metric.contains("configuration"));
    let pareto = section(&page.dom, "s0-pareto");
    assert_eq!(pareto.matches("<svg").count(), 1, "{pareto}");
    assert!(pareto.contains("gflop_per_s [GFLOP/s] (higher is better)"));
    assert!(pareto.contains("cov [no unit] (lower is better)"));
    let tele = section(&page.dom, "s0-telemetry");
    let charts = tele.matches("<svg").count();
    assert!(
        (1..=4).contains(&charts),
        "{charts} telemetry charts: {tele}"
    );
    assert_eq!(
        tele.matches("time since the trial's first sample [s]")
            .count(),
        charts,
        "every telemetry chart labels its time axis"
    );
    assert!(tele.contains("cpu_util_pct [%]"), "{tele}");
    assert!(tele.contains("best on ") && tele.contains("worst of the sweep"));
}

/// A results file of three configurations with `gflop_per_s`.
fn results_file(dir: &Path) -> PathBuf {
    let trials = ["q8_0", "q4_0", "q4k"]
        .iter()
        .enumerate()
        .map(|(i, f)| trial("S", i, f, json!({"gflop_per_s": 10.0 + i as f64})))
        .collect();
    write(&dir.join("results.json"), &results("S", "s", trials))
}

#[test]
fn bad_input_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let results = results_file(dir.path());
    let r = results.to_str().unwrap();
    let out_dir = dir.path().join("out");
    let o = out_dir.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["report", r, "--metric", "tokens_per_parsec", "--out", o],
            "`tokens_per_parsec`",
        ),
        (
            &["report", r, "--pareto", "gflop_per_s,kl_mean", "--out", o],
            "`kl_mean`",
        ),
        (&["report", r, "--pareto", "gflop_per_s", "--out", o], "X,Y"),
        (
            &["report", r, "--with", r, "--metric", "nope", "--out", o],
            "`nope`",
        ),
    ];
    for (args, needle) in cases {
        let out = chimera(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!out_dir.exists(), "{args:?}: nothing written");
    }
    // An output directory under a regular file cannot be made.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "x").unwrap();
    let bad_out = blocker.join("report");
    let out = chimera(&["report", r, "--out", bad_out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("a-file/report"), "{err}");
    // Nothing left beside the inputs: no temporary directory either.
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["a-file", "results.json"]);
    // Without telemetry the page says so instead of drawing an empty chart.
    let out = chimera(&["report", r, "--out", o]);
    ok(&out);
    let html = std::fs::read_to_string(out_dir.join("index.html")).unwrap();
    assert!(html.contains("No telemetry: there is no telemetry.jsonl beside"));
    assert_eq!(section(&html, "s0-telemetry").matches("<svg").count(), 0);
}

#[test]
fn trials_csv_quotes_a_parameter_a_spreadsheet_would_run() {
    let dir = tempfile::tempdir().unwrap();
    let evil = "=HYPERLINK(\"http://evil\")";
    let t = trial("S", 0, "q8_0", json!({"gflop_per_s": 10.0, "delta": -2.5}));
    let t = with(t, json!({"params": {"note": evil, "offset": -3}}));
    let results = write(
        &dir.path().join("results.json"),
        &results("S", "@sweep", vec![t]),
    );
    let out_dir = dir.path().join("out");
    ok(&chimera(&[
        "report",
        results.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]));
    let mut csv = csv::Reader::from_path(out_dir.join("trials.csv")).unwrap();
    let header = csv.headers().unwrap().clone();
    let row = csv.records().next().unwrap().unwrap();
    let cell = |name: &str| row[header.iter().position(|h| h == name).unwrap()].to_owned();
    assert_eq!(cell("param.note"), format!("'{evil}"));
    assert_eq!(cell("sweep_name"), "'@sweep");
    assert_eq!(cell("param.offset"), "-3");
    assert_eq!(cell("delta"), "-2.5");
    assert_eq!(cell("gflop_per_s"), "10");
}

/// `compare`, `diff` (with `--fail-on`), `cost` and `report` on what
/// `chimera demo` writes: the kernel quick start and SmolLM2's generate and
/// eval sweeps, measured here (the model is fetched into the cache once).
#[test]
fn the_demos_results_drive_compare_diff_cost_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = chimera(&["demo", "--out", demo.to_str().unwrap()]);
    ok(&out);
    let file = |name: &str| demo.join(name).to_str().unwrap().to_owned();
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = chimera(&all);
        ok(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    };

    // compare: per problem on the class, one clear best setup, or no best
    // and the setups that cannot be told apart marked tied.
    let cmp = json(&["compare", &file("results.json")]);
    let rows = cmp["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "{cmp}");
    let groups: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r["group"].as_str().unwrap()).collect();
    assert_eq!(groups.len(), 2, "{cmp}");
    for g in groups {
        let cells: Vec<&serde_json::Value> = rows
            .iter()
            .filter(|r| r["group"] == g)
            .map(|r| &r["cells"][0])
            .collect();
        let best = cells.iter().filter(|c| c["best"] == true).count();
        let tied = cells.iter().filter(|c| c["tied"] == true).count();
        assert!(
            (best, tied) == (1, 0) || (best == 0 && tied >= 2),
            "{g}: {best} best, {tied} tied: {cmp}"
        );
    }
    // compare --pareto across the generate and eval sweeps.
    let front = json(&[
        "compare",
        &file("generate.json"),
        "--with",
        &file("eval.json"),
        "--pareto",
        "decode_tokens_per_s,kl_mean",
    ]);
    let front = front.as_array().unwrap();
    assert!(!front.is_empty() && front.len() <= 4, "{front:?}");
    assert!(front.iter().all(|p| p["x"].as_f64().unwrap() > 0.0));

    // diff: a sweep against itself never fails the gate with a regression;
    // whether its repeats suffice to decide depends on how many the quick
    // start runs (3 cannot: exit 4, passed by --allow-inconclusive) ...
    let gate = |b: &str, extra: &[&str]| {
        let mut args = vec![
            "diff",
            &file("results.json"),
            b,
            "--fail-on",
            "regression>5%",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        chimera(&args).status.code()
    };
    let same = gate(&file("results.json"), &[]);
    assert!(matches!(same, Some(0 | 4)), "{same:?}");
    assert_eq!(
        gate(&file("results.json"), &["--allow-inconclusive"]),
        Some(0)
    );
    // ... and against a copy whose kernels all run at half speed (made here
    // to exercise the gate: not a measurement) it fails it.
    let mut slow: serde_json::Value =
        serde_json::from_slice(&std::fs::read(demo.join("results.json")).unwrap()).unwrap();
    for t in slow["trials"].as_array_mut().unwrap() {
        let g = t["metrics"]["gflop_per_s"].as_f64().unwrap();
        t["metrics"]["gflop_per_s"] = serde_json::json!(g / 2.0);
    }
    let slow_file = dir.path().join("half-speed.json");
    std::fs::write(&slow_file, slow.to_string()).unwrap();
    let slow = slow_file.to_str().unwrap();
    // ... it fails it: as a regression (3) where the repeats decide, else as
    // inconclusive (4) — never a pass.
    let code = gate(slow, &[]);
    assert!(matches!(code, Some(3 | 4)), "{code:?}");

    // cost: the shipped prices parse and give a row per format (priced when
    // they list this machine's class: they list the ones CI has run on).
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/prices.toml");
    let cost_with = |prices: &str| {
        let cost = json(&[
            "cost",
            &file("generate.json"),
            "--prices",
            prices,
            "--tokens-per-month",
            "1e9",
        ]);
        cost.as_array().unwrap().clone()
    };
    // One row per format the demo's generate sweep measured.
    let generated: serde_json::Value =
        serde_json::from_slice(&std::fs::read(demo.join("generate.json")).unwrap()).unwrap();
    let formats: std::collections::BTreeSet<&str> = generated["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["params"]["format"].as_str().unwrap())
        .collect();
    assert!(formats.len() >= 2, "{formats:?}");
    let cost = cost_with(shipped);
    assert_eq!(cost.len(), formats.len(), "{cost:?}");
    // With a price for this machine's class, every format gets a $ per
    // million tokens.
    let class = cost[0]["class"].as_str().unwrap();
    let own = dir.path().join("prices.toml");
    std::fs::write(
        &own,
        format!(
            "energy_usd_per_kwh = 0.13\n[[device]]\nmatch = {class:?}\nusd_per_hour = 0.1\nsource = \"made up by the test\"\n"
        ),
    )
    .unwrap();
    let cost = cost_with(own.to_str().unwrap());
    assert_eq!(cost.len(), formats.len(), "{cost:?}");
    assert!(
        cost.iter().all(|r| r["usd_per_million_tokens"]
            .as_f64()
            .is_some_and(|v| v > 0.0)),
        "{cost:?}"
    );

    // report: the demo wrote one; it loads with its charts.
    let index = demo.join("report/index.html");
    let html = std::fs::read_to_string(&index).unwrap();
    assert!(html.matches("<svg").count() >= 4, "bars, front, timelines");
    let Some(browser) = chromium() else {
        return;
    };
    let page = load(&browser, &index);
    assert!(page.console.is_empty(), "{:?}", page.console);
    assert!(page.dom.matches("<svg").count() >= 4);
    assert!(page.dom.contains("kl_mean [nats] (lower is better)"));
}
