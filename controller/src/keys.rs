//! The key layout in the store. Every key the controller writes is built here.
//!
//! ```text
//! /chimera/v1/sweeps/{sweep}            SweepRecord (JSON)
//! /chimera/v1/trials/{sweep}/{trial}    TrialRecord (JSON), with metrics once finished
//! /chimera/v1/agents/{agent}            AgentRecord (JSON), attached to the agent's lease
//! /chimera/v1/artifacts/{sweep}/{trial} bytes a trial produced for later trials of its sweep
//! ```

const ROOT: &str = "/chimera/v1";

/// Prefix of every sweep record.
pub fn sweeps() -> String {
    format!("{ROOT}/sweeps/")
}

/// One sweep's record.
pub fn sweep(id: &str) -> String {
    format!("{ROOT}/sweeps/{id}")
}

/// Prefix of every trial record.
pub fn all_trials() -> String {
    format!("{ROOT}/trials/")
}

/// Prefix of one sweep's trials.
pub fn trials(sweep: &str) -> String {
    format!("{ROOT}/trials/{sweep}/")
}

/// One trial's record.
pub fn trial(sweep: &str, trial: &str) -> String {
    format!("{ROOT}/trials/{sweep}/{trial}")
}

/// One agent's registration.
pub fn agent(name: &str) -> String {
    format!("{ROOT}/agents/{name}")
}

/// Output of one trial that later trials of its sweep consume (an eval reference).
pub fn artifact(sweep: &str, trial: &str) -> String {
    format!("{ROOT}/artifacts/{sweep}/{trial}")
}
