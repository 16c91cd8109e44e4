//! What the scheduler stores: the sweep and agent records, the typed sweep
//! state and trial queues, and the encoding of [`Write`]s into store
//! operations (with the size limit every record is checked against first).

use super::effects::Write;
use crate::error::ApiError;
use crate::keys;
use crate::store::Op;
use chimera_domain::results::TrialRecord;
use chimera_domain::search::{Budget, Search};
use chimera_domain::spec::{Harness, Placement, Target};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest record the scheduler writes (under the store's 1.5 MiB value
/// limit, with room for etcd's request overhead). Every change that could
/// grow a record past it is refused *before* it is applied, so a commit
/// never fails on size (which would stop the scheduler).
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// A sweep's life: waiting for a matching device (when submitted before
/// one joined), running until every trial ended (done), or cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SweepState {
    Waiting,
    Running,
    Done,
    Cancelled,
}

impl SweepState {
    /// The state's name, as stored.
    pub fn name(self) -> &'static str {
        match self {
            SweepState::Waiting => "waiting",
            SweepState::Running => "running",
            SweepState::Done => "done",
            SweepState::Cancelled => "cancelled",
        }
    }
}

/// A sweep as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepRecord {
    pub id: String,
    pub name: String,
    pub workload: String,
    pub spec_yaml: String,
    pub created_unix_ms: i64,
    pub state: SweepState,
    pub trials_total: u32,
    pub harness: Harness,
    pub placement: Placement,
    pub target: Target,
    /// How configurations are chosen (adaptive searches add trials as
    /// results arrive, so `trials_total` grows).
    #[serde(default)]
    pub search: Search,
    /// Limits on trials per class and on time.
    #[serde(default)]
    pub budget: Budget,
    /// The configurations each class may run, when variants say which
    /// devices they are for (`when`); absent: every configuration.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub class_configs: BTreeMap<String, Vec<u32>>,
    /// W3C trace context of the submission: every trial's assignment is a
    /// span of that trace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trace: BTreeMap<String, String>,
    /// Who submitted it (`token:ci`, `cert:operator/alice`, `anonymous`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
    /// Who cancelled it, if someone did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    /// Seed of the trials' run order (`chimera_domain::order`); 0 in records
    /// stored before it existed.
    #[serde(default)]
    pub order_seed: u64,
    /// While waiting: why the sweep cannot start yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// An agent's registration as stored (attached to its lease).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentRecord {
    pub name: String,
    pub hostname: String,
    pub version: String,
    pub device_classes: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Who registered it (`cert:agent/NAME`, `anonymous`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub registered_by: String,
    /// Who drained it, if someone did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained_by: Option<String>,
}

/// The stored `device_class` of a trial that may run on any matching device
/// (placement `any`).
pub const ANY_CLASS: &str = "*";

/// Where a pending trial waits for a device.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Queue {
    /// Devices of one class (placement `each_class`).
    Class(String),
    /// Any device the sweep's target matches (placement `any`, and eval
    /// references).
    Any,
    /// One device, `AGENT/DEVICE_ID` (placement `all`).
    Pinned(String),
}

impl Queue {
    /// The queue a trial waits in, from its record.
    pub fn of(rec: &TrialRecord) -> Queue {
        match &rec.pinned {
            Some(pin) => Queue::Pinned(pin.clone()),
            None if rec.device_class == ANY_CLASS => Queue::Any,
            None => Queue::Class(rec.device_class.clone()),
        }
    }
}

/// A device's pin: `AGENT/DEVICE_ID`.
pub fn pin_of(agent: &str, device: &str) -> String {
    format!("{agent}/{device}")
}

/// The stored size of a record; an error names what would be too large.
pub fn checked_size<T: Serialize>(what: &str, v: &T) -> Result<usize, ApiError> {
    let size = serde_json::to_vec(v)
        .map_err(|e| ApiError::InvalidArgument(format!("{what} cannot be encoded: {e}")))?
        .len();
    if size > MAX_RECORD_BYTES {
        return Err(ApiError::InvalidArgument(format!(
            "{what} would be stored as a record of {size} bytes, over the limit of {MAX_RECORD_BYTES} bytes"
        )));
    }
    Ok(size)
}

fn encode<T: Serialize>(what: &str, v: &T) -> anyhow::Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| anyhow::anyhow!("encode {what}: {e}"))
}

/// The store operation of one write.
pub fn op(w: &Write) -> anyhow::Result<Op> {
    Ok(match w {
        Write::Trial(t) => Op::put(keys::trial(&t.sweep_id, &t.id), encode("trial", t)?),
        Write::Sweep(s) => Op::put(keys::sweep(&s.id), encode("sweep", s)?),
        Write::Agent { record, lease } => Op::Put {
            key: keys::agent(&record.name).into_bytes(),
            value: encode("agent", record)?,
            lease: *lease,
        },
        Write::Artifact {
            sweep,
            trial,
            bytes,
        } => Op::put(keys::artifact(&sweep.0, trial), bytes.as_ref().clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_state_is_stored_as_before() {
        for (s, text) in [
            (SweepState::Waiting, "\"waiting\""),
            (SweepState::Running, "\"running\""),
            (SweepState::Done, "\"done\""),
            (SweepState::Cancelled, "\"cancelled\""),
        ] {
            assert_eq!(serde_json::to_string(&s).ok().as_deref(), Some(text));
            assert_eq!(format!("\"{}\"", s.name()), text);
        }
    }
}
