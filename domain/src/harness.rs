//! The measurement harness's settings ([`Harness`]): shared by the spec (`harness:`) and the search (successive halving spends them).

use serde::{Deserialize, Serialize};

/// The measurement harness's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Harness {
    /// Iterations run and discarded before measuring.
    pub warmup_iters: u32,
    /// Measure at least this many iterations ...
    pub min_iters: u32,
    /// ... and for at least this long, milliseconds.
    pub min_time_ms: u32,
    /// Stop measuring after this long regardless, milliseconds.
    pub max_time_ms: u32,
}

impl Default for Harness {
    fn default() -> Self {
        Harness {
            warmup_iters: 3,
            min_iters: 10,
            min_time_ms: 300,
            max_time_ms: 10_000,
        }
    }
}
