//! The `chimera` binary without a controller: offline commands and errors.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn chimera(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chimera"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn run_refuses_a_bad_spec_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.yaml");
    std::fs::write(
        &spec,
        "name: x\nworkload: kernel\nparams:\n  op: matmul\n  shape: 1,2,3\n  speed: 11\n",
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let out = chimera(&[
        "run",
        spec.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 6") && err.contains("speed"), "{err}");
    assert!(!out_dir.exists(), "nothing written");
}

#[test]
fn an_unreachable_controller_is_named_in_the_error() {
    let out = chimera(&["--controller", "http://127.0.0.1:9", "sweep", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http://127.0.0.1:9"));
}

#[test]
fn compare_reads_a_results_file_offline_and_checks_its_format() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("results.json");
    std::fs::write(&f, r#"{"format":"something-else","version":1,"sweep":{"id":"s","name":"n","workload":"kernel","state":"done","created_unix_ms":0},"trials":[]}"#).unwrap();
    let out = chimera(&["compare", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("something-else"));
}
