//! The model-directory guard: the directories an agent may read models from,
//! and the one way a workload turns a trial's model path into a file there.

use chimera_domain::models::ModelPath;
use std::path::PathBuf;

/// The directories an agent may read models from (canonical paths).
#[derive(Clone, Debug, Default)]
pub struct ModelDirs {
    pub(super) dirs: Vec<PathBuf>,
}

impl ModelDirs {
    /// Checks that every directory exists; an error names the one that does not.
    pub fn new(dirs: &[PathBuf]) -> Result<Self, String> {
        let dirs = dirs
            .iter()
            .map(|d| {
                let c = d
                    .canonicalize()
                    .map_err(|e| format!("--model-dir `{}`: {e}", d.display()))?;
                if !c.is_dir() {
                    return Err(format!("--model-dir `{}` is not a directory", d.display()));
                }
                Ok(c)
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(ModelDirs { dirs })
    }

    /// The directories, canonical.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The file a model path names: the first directory that has it. A path
    /// that resolves (through a symlink) outside its directory is refused.
    pub fn resolve(&self, model: &ModelPath) -> Result<PathBuf, String> {
        // Re-check the shape: the wire carried it, the spec check may be old.
        let model: ModelPath = model.as_str().parse()?;
        if self.dirs.is_empty() {
            return Err(format!(
                "model `{model}`: this agent has no model directory (start it with --model-dir)"
            ));
        }
        for dir in &self.dirs {
            let candidate = dir.join(model.as_str());
            if std::fs::symlink_metadata(&candidate).is_err() {
                continue;
            }
            let real = candidate
                .canonicalize()
                .map_err(|e| format!("model `{model}` in `{}`: {e}", dir.display()))?;
            if !real.starts_with(dir) {
                return Err(format!(
                    "model `{model}` resolves to `{}`, outside the model directory `{}` (a symlink escapes it); refused",
                    real.display(),
                    dir.display()
                ));
            }
            return Ok(real);
        }
        Err(format!(
            "model `{model}` not found in the model directories: {}",
            self.dirs
                .iter()
                .map(|d| format!("`{}`", d.display()))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}
