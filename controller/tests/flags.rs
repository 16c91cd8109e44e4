//! The `chimera-controller` binary's flags.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn refuses_a_public_address_without_tls() {
    let out = Command::new(env!("CARGO_BIN_EXE_chimera-controller"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(std::env::temp_dir().join("chimera-flag-test"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--listen 0.0.0.0:0") && err.contains("--allow-insecure"),
        "{err}"
    );
}

#[test]
fn refuses_a_bad_lease_ttl() {
    let out = Command::new(env!("CARGO_BIN_EXE_chimera-controller"))
        .args(["--lease-ttl", "5 parsecs"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lease-ttl"));
}
