//! The sweep spec: YAML in, validated and expanded configurations out.
//!
//! Everything that can be checked without knowing the fleet is checked here, at
//! parse time, with an error that names the field path and the line. The
//! controller adds the fleet-dependent checks (is there a matching device, does
//! it support the op) on top.
//!
//! The modules: [`errors`] (the error and line lookup), [`document`] (the
//! top-level mapping), [`space`] (parameter spaces and ranges), [`target`]
//! (placement and device targets), [`nesting`] (the pre-parse scan),
//! [`expansion`] (spaces crossed into configurations), [`parse`] (the whole
//! pipeline) and [`kernel_trial`] (a kernel configuration, typed). Imports run
//! one way: `spec` uses `search` (for `search:` and `budget:`), never the reverse.

mod document;
mod errors;
mod expansion;
mod kernel_trial;
mod nesting;
mod parse;
mod space;
mod target;

pub use crate::harness::Harness;
pub use crate::search::{Budget, Search};
pub use document::SweepSpec;
pub use errors::{find_line, locate, readable, SpecError, MAX_ERRORS};
pub use expansion::expand;
pub use kernel_trial::KernelTrial;
pub use nesting::check_nesting;
pub use parse::{parse, parse_with, ParsedSweep};
pub use space::{KernelSpace, ModelSpace, OneOrMany, Space, Threads};
pub use target::{DeviceKind, Placement, Target};

/// The spec format version this build reads.
pub const SPEC_VERSION: u32 = 1;
/// Most configurations one sweep may expand into (before repeats and classes).
pub const MAX_CONFIGS: usize = 100_000;
/// Most trials one sweep may hold, by default (configurations x repeats x
/// device classes, and an eval sweep's references); the controller's
/// `--max-trials-per-sweep` sets it.
pub const MAX_TRIALS: u64 = 100_000;
/// Deepest nesting of YAML collections (block or flow) a spec may use; real
/// specs use about 5. Deeper documents are refused before they are parsed.
pub const MAX_NESTING: usize = 32;

/// Limits a spec is parsed under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most trials the sweep may expand into (see [`MAX_TRIALS`]).
    pub max_trials: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_trials: MAX_TRIALS,
        }
    }
}

#[cfg(test)]
mod tests;
