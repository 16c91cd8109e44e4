//! How the controller and the agents name one trial and one attempt of it.

use crate::{SweepId, TrialId};
use std::fmt;

/// A trial's identity: its sweep and its id within the sweep.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrialKey {
    pub sweep: SweepId,
    pub trial: TrialId,
}

impl TrialKey {
    /// Trial `trial` of sweep `sweep`.
    pub fn new(sweep: impl Into<SweepId>, trial: impl Into<TrialId>) -> Self {
        TrialKey {
            sweep: sweep.into(),
            trial: trial.into(),
        }
    }
}

impl fmt::Display for TrialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.sweep, self.trial)
    }
}

/// One attempt of one trial: what an agent runs and reports on. Every
/// reassignment makes a new attempt, which fences reports of older ones.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TrialRef {
    pub key: TrialKey,
    pub attempt: u32,
}

impl fmt::Display for TrialRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.key, self.attempt)
    }
}

impl From<&TrialRef> for chimera_proto::v1::TrialRef {
    fn from(r: &TrialRef) -> Self {
        chimera_proto::v1::TrialRef {
            sweep_id: r.key.sweep.0.clone(),
            trial_id: r.key.trial.0.clone(),
            attempt: r.attempt,
        }
    }
}
