//! What the `chimera` binary's tests share: running the binary, and
//! results files built from a few parts instead of copied literals.
#![allow(dead_code, clippy::unwrap_used)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `chimera` with these arguments.
pub fn chimera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chimera"))
        .args(args)
        .output()
        .unwrap()
}

/// Asserts that a run exited 0, showing its output when it did not.
pub fn ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A succeeded kernel trial `t{i:05}` of sweep `sweep` as results.json
/// carries it: configuration `i` on `cpu: test x2`, a qmatmul of shape
/// 1,64,64 in `format`, with these metrics. [`with`] changes its fields.
pub fn trial(sweep: &str, i: usize, format: &str, metrics: Value) -> Value {
    json!({
        "id": format!("t{i:05}"), "sweep_id": sweep, "state": "succeeded",
        "device_class": "cpu: test x2", "config_index": i, "repeat": 0, "attempt": 1,
        "params": {"op": "qmatmul", "format": format, "shape": "1,64,64"},
        "metrics": metrics,
    })
}

/// `value` with `fields` set; a field that is an object in both is merged
/// one level deep (`{"params": {"note": ..}}` adds a parameter).
pub fn with(mut value: Value, fields: Value) -> Value {
    if let (Some(obj), Value::Object(fields)) = (value.as_object_mut(), fields) {
        for (k, v) in fields {
            match (obj.get_mut(&k), v) {
                (Some(Value::Object(old)), Value::Object(new)) => old.extend(new),
                (_, v) => {
                    obj.insert(k, v);
                }
            }
        }
    }
    value
}

/// A results file of a finished kernel sweep with these trials.
pub fn results(id: &str, name: &str, trials: Vec<Value>) -> Value {
    json!({
        "format": "chimera.results", "version": 1,
        "sweep": {"id": id, "name": name, "workload": "kernel", "state": "done", "created_unix_ms": 0},
        "trials": trials,
    })
}

/// Writes `value` to `path` as JSON; returns the path.
pub fn write(path: &Path, value: &Value) -> PathBuf {
    std::fs::write(path, value.to_string()).unwrap();
    path.to_owned()
}

/// `DIR/NAME.json`: sweep NAME, one configuration measured once per value
/// of `metric`.
pub fn repeats_file(dir: &Path, name: &str, metric: &str, values: &[f64]) -> PathBuf {
    let trials = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let t = trial(name, i, "q8_0", json!({ metric: v }));
            with(t, json!({"config_index": 0, "repeat": i}))
        })
        .collect();
    write(
        &dir.join(format!("{name}.json")),
        &results(name, name, trials),
    )
}
