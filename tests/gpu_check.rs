//! `deploy/gpu-check.sh --dry-run`, the first-run check of a GPU machine, on
//! a machine without one: it parses its arguments, finds the built binaries,
//! says what it would run, and the sweeps it would submit are valid specs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chimera_e2e::*;
use std::path::Path;
use std::process::{Command, Output};

fn gpu_check(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(root().join("deploy/gpu-check.sh"))
        .args(args)
        .output()
        .unwrap()
}

/// The specs the dry run prints, `NAME.yaml:` then lines `  | ...`.
fn printed_specs(stdout: &str) -> Vec<(String, String)> {
    let mut specs: Vec<(String, String)> = Vec::new();
    for line in stdout.lines() {
        if let Some(name) = line.strip_suffix(".yaml:") {
            specs.push((name.to_owned(), String::new()));
        } else if let (Some(body), Some((_, text))) = (line.strip_prefix("  | "), specs.last_mut())
        {
            text.push_str(body);
            text.push('\n');
        } else if let (Some(_), Some((_, text))) = (line.strip_prefix("  |"), specs.last_mut()) {
            text.push('\n');
        }
    }
    specs
}

#[test]
fn the_dry_run_finds_the_binaries_and_prints_valid_sweeps() {
    let agent = bin("chimera-agent");
    let dir = agent.parent().unwrap();
    bin("chimera");
    bin("chimera-controller");
    let models = tempfile::tempdir().unwrap();
    let out = gpu_check(&[
        "--dry-run",
        "--bin-dir",
        dir.to_str().unwrap(),
        "--model-dir",
        models.path().to_str().unwrap(),
        "--out",
        "/nonexistent/results",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["chimera", "chimera-controller", "chimera-agent"] {
        let path = dir.join(name);
        assert!(
            stdout.contains(&format!("{name:<18} {}", path.display())),
            "{name}: {stdout}"
        );
    }
    for needle in [
        "nothing is started",
        "results folder: /nonexistent/results",
        "--listen 127.0.0.1:0",
        "kernel sweep: matmul f32 f16 bf16, qmatmul q4_0 q8_0 q4k; shapes 1,4096,4096 512,4096,4096; target kind gpu",
        // No model in the folder given: generate and eval are skipped, and say so.
        "generate / eval: skipped (SmolLM2-135M-Instruct.Q4_1.gguf not in --model-dir",
    ] {
        assert!(stdout.contains(needle), "`{needle}` not in {stdout}");
    }
    assert!(
        !Path::new("/nonexistent/results").exists(),
        "a dry run writes nothing"
    );
    let specs = printed_specs(&stdout);
    assert_eq!(
        specs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["kernels", "generate", "eval"]
    );
    for (name, text) in &specs {
        let parsed = chimera_domain::spec::parse(text)
            .unwrap_or_else(|e| panic!("{name}.yaml: {e}\n{text}"));
        assert_eq!(
            serde_json::to_string(&parsed.spec.target).unwrap(),
            r#"{"kind":["gpu"]}"#,
            "{name}.yaml runs on the GPU"
        );
    }
    let kernels = chimera_domain::spec::parse(&specs[0].1).unwrap();
    // 2 shapes x (3 dtypes + 3 formats).
    assert_eq!(kernels.configs.len(), 12);
}

#[test]
fn a_wrong_argument_or_a_missing_binary_is_named() {
    let out = gpu_check(&["--dry-run", "--device", "cuda0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--device `cuda0`: expected gpu:N"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let empty = tempfile::tempdir().unwrap();
    let out = gpu_check(&["--dry-run", "--bin-dir", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no executable chimera"), "{stderr}");
    let out = gpu_check(&["--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument `--frobnicate`"));
}
