//! Records what the environment fingerprint needs to know about this build:
//! the git commit, the rustc, the candle-core version from Cargo.lock, and
//! for a CUDA build its compute capability and CUDA version.

use std::path::Path;
use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn candle_version(lock: &Path) -> Option<String> {
    let text = std::fs::read_to_string(lock).ok()?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"candle-core\"" {
            let v = lines.next()?.trim();
            return v
                .strip_prefix("version = \"")
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_owned);
        }
    }
    None
}

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let root = Path::new(&manifest).join("..");
    let sha = output("git", &["-C", &manifest, "rev-parse", "--short=12", "HEAD"])
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = output(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    let lock = root.join("Cargo.lock");
    let candle = candle_version(&lock).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CHIMERA_GIT_SHA={sha}");
    println!("cargo:rustc-env=CHIMERA_RUSTC_VERSION={rustc_version}");
    println!("cargo:rustc-env=CHIMERA_CANDLE_VERSION={candle}");
    println!("cargo:rerun-if-changed={}", lock.display());
    // A CUDA build (feature `cuda`, deploy/build-cuda-agent.sh): the compute
    // capability and CUDA version its kernels were built for.
    let cuda = if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "unknown".into());
        let version = std::env::var("CUDARC_CUDA_VERSION")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
            .unwrap_or_else(|| "unknown".into());
        format!("sm_{cap}, CUDA {version}")
    } else {
        String::new()
    };
    println!("cargo:rustc-env=CHIMERA_CUDA_BUILD={cuda}");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=CUDARC_CUDA_VERSION");
    // Rebuild when the commit changes: HEAD names a branch, the branch file (or
    // packed-refs) holds the commit.
    let git = root.join(".git");
    let head = git.join("HEAD");
    let mut watch = vec![head.clone(), git.join("packed-refs")];
    if let Some(branch) = std::fs::read_to_string(&head)
        .ok()
        .and_then(|h| h.trim().strip_prefix("ref: ").map(str::to_owned))
    {
        watch.push(git.join(branch));
    }
    for p in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
