//! The `chimera-agent` binary's flags.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn lists_the_host_cpu() {
    let out = Command::new(env!("CARGO_BIN_EXE_chimera-agent"))
        .arg("--list-devices")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cpu = stdout.lines().find(|l| l.starts_with("cpu\t")).unwrap();
    assert!(
        cpu.contains("cpu: ") && cpu.contains("kernel/matmul"),
        "{cpu}"
    );
}

#[test]
fn refuses_a_bad_name_before_connecting() {
    let out = Command::new(env!("CARGO_BIN_EXE_chimera-agent"))
        .args([
            "--name",
            "no spaces please",
            "--controller",
            "http://127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("agent name `no spaces please`"));
}
