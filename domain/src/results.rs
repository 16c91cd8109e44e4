//! Trials and results as the controller stores them and as `results.json` carries them.
//!
//! The file format is documented in `docs/results-format.md`; bump
//! [`RESULTS_VERSION`] on any change that a reader could trip on.

use crate::params::{self, Params};
use chimera_proto::v1 as proto;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `format` field of a results file.
pub const RESULTS_FORMAT: &str = "chimera.results";
/// The version of the results file format this build writes.
pub const RESULTS_VERSION: u32 = 1;

/// Lifecycle of a trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialState {
    Pending,
    Assigned,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TrialState {
    /// Whether the trial will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TrialState::Succeeded | TrialState::Failed | TrialState::Cancelled
        )
    }

    /// The state's name.
    pub fn name(self) -> &'static str {
        match self {
            TrialState::Pending => "pending",
            TrialState::Assigned => "assigned",
            TrialState::Running => "running",
            TrialState::Succeeded => "succeeded",
            TrialState::Failed => "failed",
            TrialState::Cancelled => "cancelled",
        }
    }
}

impl From<TrialState> for proto::TrialState {
    fn from(s: TrialState) -> Self {
        match s {
            TrialState::Pending => proto::TrialState::Pending,
            TrialState::Assigned => proto::TrialState::Assigned,
            TrialState::Running => proto::TrialState::Running,
            TrialState::Succeeded => proto::TrialState::Succeeded,
            TrialState::Failed => proto::TrialState::Failed,
            TrialState::Cancelled => proto::TrialState::Cancelled,
        }
    }
}

impl TryFrom<proto::TrialState> for TrialState {
    type Error = String;
    fn try_from(s: proto::TrialState) -> Result<Self, String> {
        Ok(match s {
            proto::TrialState::Pending => TrialState::Pending,
            proto::TrialState::Assigned => TrialState::Assigned,
            proto::TrialState::Running => TrialState::Running,
            proto::TrialState::Succeeded => TrialState::Succeeded,
            proto::TrialState::Failed => TrialState::Failed,
            proto::TrialState::Cancelled => TrialState::Cancelled,
            proto::TrialState::Unspecified => return Err("trial state is unspecified".into()),
        })
    }
}

/// Where a result was measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub agent_version: String,
    pub agent_git_sha: String,
    pub candle_version: String,
    pub rustc_version: String,
    pub cpu_model: String,
    pub threads: u32,
    pub os: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

impl TryFrom<proto::Fingerprint> for Fingerprint {
    type Error = String;
    /// Checks every field against the wire limits ([`crate::wire`]).
    fn try_from(f: proto::Fingerprint) -> Result<Self, String> {
        use crate::wire::{check_map, check_text, MAX_NAME, MAX_VERSION};
        for (field, value, max) in [
            ("fingerprint.agent_version", &f.agent_version, MAX_VERSION),
            ("fingerprint.agent_git_sha", &f.agent_git_sha, MAX_VERSION),
            ("fingerprint.candle_version", &f.candle_version, MAX_VERSION),
            ("fingerprint.rustc_version", &f.rustc_version, MAX_VERSION),
            ("fingerprint.cpu_model", &f.cpu_model, MAX_NAME),
            ("fingerprint.os", &f.os, MAX_VERSION),
        ] {
            check_text(field, value, max)?;
        }
        check_map("fingerprint.extra", f.extra.iter())?;
        Ok(Fingerprint {
            agent_version: f.agent_version,
            agent_git_sha: f.agent_git_sha,
            candle_version: f.candle_version,
            rustc_version: f.rustc_version,
            cpu_model: f.cpu_model,
            threads: f.threads,
            os: f.os,
            extra: f.extra.into_iter().collect(),
        })
    }
}

impl From<&Fingerprint> for proto::Fingerprint {
    fn from(f: &Fingerprint) -> Self {
        proto::Fingerprint {
            agent_version: f.agent_version.clone(),
            agent_git_sha: f.agent_git_sha.clone(),
            candle_version: f.candle_version.clone(),
            rustc_version: f.rustc_version.clone(),
            cpu_model: f.cpu_model.clone(),
            threads: f.threads,
            os: f.os.clone(),
            extra: f.extra.clone().into_iter().collect(),
        }
    }
}

/// What a finished trial produced: the one shape of a result between the
/// agent's worker, the wire (`proto::TrialFinished`) and the scheduler.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrialOutput {
    /// Metric name -> value; names carry their unit (`latency_ms_p50`).
    pub metrics: BTreeMap<String, f64>,
    /// Where it was measured.
    pub fingerprint: Fingerprint,
    /// Wall time of the whole trial on the agent, set-up included, ms.
    pub wall_ms: f64,
    /// Structured detail (a `quantize` trial's per-tensor table).
    pub detail: Option<serde_json::Value>,
    /// What later trials of the sweep consume (an `eval` reference).
    pub artifact: Vec<u8>,
}

impl TrialOutput {
    /// Checks what the receiver checks, so a sender can refuse (and report as
    /// a failure) a result the controller would refuse: every metric named
    /// by the metric-name rule and finite, `wall_ms` finite and not negative,
    /// the detail and the artifact within [`crate::wire::MAX_DETAIL_BYTES`] and
    /// [`crate::wire::MAX_ARTIFACT_BYTES`]. The error
    /// names the field and the value.
    pub fn check(&self) -> Result<(), String> {
        use crate::wire::{check_count, check_metric_name, MAX_ARTIFACT_BYTES, MAX_METRICS};
        check_count("finished.metrics", self.metrics.len(), MAX_METRICS)?;
        for (k, v) in &self.metrics {
            check_metric_name("finished.metrics", k)?;
            if !v.is_finite() {
                return Err(format!(
                    "finished.metrics[{k}] = {v} is not a finite number"
                ));
            }
        }
        if !self.wall_ms.is_finite() || self.wall_ms < 0.0 {
            return Err(format!(
                "finished.wall_ms = {} is not a finite, non-negative number",
                self.wall_ms
            ));
        }
        if let Some(detail) = &self.detail {
            let bytes = detail.to_string().len();
            if bytes > crate::wire::MAX_DETAIL_BYTES {
                return Err(format!(
                    "finished.detail_json: {bytes} bytes exceeds the limit of {} bytes",
                    crate::wire::MAX_DETAIL_BYTES
                ));
            }
        }
        if self.artifact.len() > MAX_ARTIFACT_BYTES {
            return Err(format!(
                "finished.artifact: {} bytes exceeds the limit of {MAX_ARTIFACT_BYTES} bytes",
                self.artifact.len()
            ));
        }
        Ok(())
    }

    /// The wire message that reports this output for `trial` (an absent
    /// detail travels as an empty `detail_json`).
    pub fn into_proto(self, trial: proto::TrialRef) -> proto::TrialFinished {
        proto::TrialFinished {
            trial: Some(trial),
            metrics: self.metrics.into_iter().collect(),
            fingerprint: Some((&self.fingerprint).into()),
            wall_ms: self.wall_ms,
            detail_json: self.detail.map(|d| d.to_string()).unwrap_or_default(),
            artifact: self.artifact,
        }
    }
}

impl TryFrom<proto::TrialFinished> for TrialOutput {
    type Error = String;
    /// Checks a received result: `detail_json` of at most
    /// [`crate::wire::MAX_DETAIL_BYTES`] and empty or JSON, a fingerprint
    /// that is there and within the wire limits, then [`TrialOutput::check`]. The
    /// message's `trial` is the caller's to read (take it out first).
    fn try_from(f: proto::TrialFinished) -> Result<Self, String> {
        use crate::wire::MAX_DETAIL_BYTES;
        if f.detail_json.len() > MAX_DETAIL_BYTES {
            return Err(format!(
                "finished.detail_json: {} bytes exceeds the limit of {MAX_DETAIL_BYTES} bytes",
                f.detail_json.len()
            ));
        }
        let fingerprint = f
            .fingerprint
            .ok_or_else(|| "finished.fingerprint is missing".to_owned())?
            .try_into()?;
        let detail = if f.detail_json.is_empty() {
            None
        } else {
            Some(
                serde_json::from_str(&f.detail_json)
                    .map_err(|e| format!("finished.detail_json is not JSON: {e}"))?,
            )
        };
        let out = TrialOutput {
            metrics: f.metrics.into_iter().collect(),
            fingerprint,
            wall_ms: f.wall_ms,
            detail,
            artifact: f.artifact,
        };
        out.check()?;
        Ok(out)
    }
}

/// One trial: configuration, placement, state and (when finished) outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub id: String,
    pub sweep_id: String,
    pub state: TrialState,
    /// Device class the trial must run on (`*` for placement `any`).
    pub device_class: String,
    pub params: Params,
    /// Position of the configuration in the sweep's expansion.
    pub config_index: u32,
    /// Repeat number, 0-based.
    #[serde(default)]
    pub repeat: u32,
    /// Current attempt; 0 before the first assignment. The fencing token.
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall time of the successful attempt on the agent, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_ms: Option<f64>,
    /// Structured detail of the result (a `quantize` per-tensor table, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// Id of the trial of the same sweep this one waits for and consumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<String>,
    /// Successive-halving rung: the trial ran with that rung's budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rung: Option<u32>,
    /// The one device (`AGENT/DEVICE_ID`) the trial must run on (placement `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// When the current attempt was assigned, Unix ms: with the trial ids
    /// (numbered in run order), the order the trials actually ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_unix_ms: Option<i64>,
}

impl TrialRecord {
    /// A new pending trial, before its first attempt.
    pub fn pending(
        id: String,
        sweep_id: String,
        device_class: String,
        params: Params,
        config_index: u32,
        repeat: u32,
    ) -> Self {
        TrialRecord {
            id,
            sweep_id,
            state: TrialState::Pending,
            device_class,
            params,
            config_index,
            repeat,
            attempt: 0,
            agent: None,
            device_id: None,
            metrics: BTreeMap::new(),
            fingerprint: None,
            error: None,
            wall_ms: None,
            detail: None,
            depends_on: None,
            rung: None,
            pinned: None,
            assigned_unix_ms: None,
        }
    }
}

impl From<&TrialRecord> for proto::Trial {
    fn from(t: &TrialRecord) -> Self {
        proto::Trial {
            id: t.id.clone(),
            sweep_id: t.sweep_id.clone(),
            state: proto::TrialState::from(t.state) as i32,
            device_class: t.device_class.clone(),
            params: params::params_to_proto(&t.params),
            attempt: t.attempt,
            agent: t.agent.clone().unwrap_or_default(),
            device_id: t.device_id.clone().unwrap_or_default(),
            metrics: t.metrics.clone().into_iter().collect(),
            fingerprint: t.fingerprint.as_ref().map(Into::into),
            error: t.error.clone().unwrap_or_default(),
            config_index: t.config_index,
            repeat: t.repeat,
            wall_ms: t.wall_ms.unwrap_or_default(),
            detail_json: t.detail.as_ref().map(|d| d.to_string()).unwrap_or_default(),
            depends_on: t.depends_on.clone().unwrap_or_default(),
            rung: t.rung,
            pinned: t.pinned.clone(),
            assigned_unix_ms: t.assigned_unix_ms,
        }
    }
}

impl TryFrom<proto::Trial> for TrialRecord {
    type Error = String;
    fn try_from(t: proto::Trial) -> Result<Self, String> {
        let state = proto::TrialState::try_from(t.state)
            .map_err(|_| format!("trial {}: unknown state {}", t.id, t.state))?;
        let nonempty = |s: String| (!s.is_empty()).then_some(s);
        let detail = if t.detail_json.is_empty() {
            None
        } else {
            Some(
                serde_json::from_str(&t.detail_json)
                    .map_err(|e| format!("trial {}: detail is not JSON: {e}", t.id))?,
            )
        };
        // 0 is the wire's "not finished"; what is not a finite,
        // non-negative number is refused, not taken for 0.
        let wall_ms = match t.wall_ms {
            0.0 => None,
            w if w.is_finite() && w > 0.0 => Some(w),
            w => {
                return Err(format!(
                    "trial {}: wall_ms = {w} is not a finite, non-negative number",
                    t.id
                ))
            }
        };
        Ok(TrialRecord {
            state: state.try_into()?,
            params: params::params_from_proto(&t.params).map_err(|e| e.to_string())?,
            id: t.id,
            sweep_id: t.sweep_id,
            device_class: t.device_class,
            config_index: t.config_index,
            repeat: t.repeat,
            attempt: t.attempt,
            agent: nonempty(t.agent),
            device_id: nonempty(t.device_id),
            metrics: t.metrics.into_iter().collect(),
            fingerprint: t.fingerprint.map(Fingerprint::try_from).transpose()?,
            error: nonempty(t.error),
            wall_ms,
            detail,
            depends_on: nonempty(t.depends_on),
            rung: t.rung,
            pinned: t.pinned.filter(|p| !p.is_empty()),
            assigned_unix_ms: t.assigned_unix_ms,
        })
    }
}

/// A sweep's identity and state, as a results file carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepSummary {
    pub id: String,
    pub name: String,
    pub workload: String,
    /// `running`, `done` or `cancelled`.
    pub state: String,
    pub created_unix_ms: i64,
    /// Seed of the trials' run order: seeded, interleaved rounds
    /// ([`crate::order::interleave`]); trial ids number that order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_seed: Option<u64>,
}

/// The results file (`results.json`, `chimera results ID --output json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultsFile {
    /// Always [`RESULTS_FORMAT`].
    pub format: String,
    /// [`RESULTS_VERSION`] of the writer.
    pub version: u32,
    pub sweep: SweepSummary,
    pub trials: Vec<TrialRecord>,
}

impl ResultsFile {
    /// A results file of this version.
    pub fn new(sweep: SweepSummary, trials: Vec<TrialRecord>) -> Self {
        ResultsFile {
            format: RESULTS_FORMAT.to_owned(),
            version: RESULTS_VERSION,
            sweep,
            trials,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial() -> proto::TrialRef {
        proto::TrialRef {
            sweep_id: "s1".into(),
            trial_id: "t00001".into(),
            attempt: 1,
        }
    }

    fn output() -> TrialOutput {
        TrialOutput {
            metrics: BTreeMap::from([("latency_ms_p50".to_owned(), 1.5)]),
            fingerprint: Fingerprint {
                agent_version: "0.1.0".into(),
                threads: 4,
                ..Default::default()
            },
            wall_ms: 12.0,
            detail: Some(serde_json::json!({"tensors": 3})),
            artifact: vec![1, 2, 3],
        }
    }

    #[test]
    fn a_trial_output_round_trips_through_the_wire() {
        let wire = output().into_proto(trial());
        assert_eq!(wire.trial, Some(trial()));
        assert_eq!(TrialOutput::try_from(wire), Ok(output()));
        let bare = TrialOutput {
            detail: None,
            ..output()
        };
        let wire = bare.clone().into_proto(trial());
        assert!(wire.detail_json.is_empty());
        assert_eq!(TrialOutput::try_from(wire), Ok(bare));
    }

    #[test]
    fn a_bad_trial_output_is_refused_naming_the_field() {
        type Spoil = fn(&mut proto::TrialFinished);
        let cases: [(Spoil, &str); 5] = [
            (
                |f| {
                    f.metrics.insert("energy_j".into(), f64::NAN);
                },
                "finished.metrics[energy_j] = NaN",
            ),
            (|f| f.wall_ms = f64::INFINITY, "finished.wall_ms = inf"),
            (|f| f.wall_ms = -1.0, "finished.wall_ms = -1"),
            (|f| f.fingerprint = None, "finished.fingerprint is missing"),
            (
                |f| f.detail_json = "{".into(),
                "finished.detail_json is not JSON",
            ),
        ];
        for (spoil, want) in cases {
            let mut wire = output().into_proto(trial());
            spoil(&mut wire);
            let e = TrialOutput::try_from(wire).expect_err(want);
            assert!(e.contains(want), "{e} (wanted {want})");
        }
        let mut trial = proto::Trial {
            id: "t00001".into(),
            state: proto::TrialState::Succeeded as i32,
            wall_ms: f64::NAN,
            ..Default::default()
        };
        let e = TrialRecord::try_from(trial.clone()).expect_err("NaN wall time");
        assert!(e.contains("trial t00001: wall_ms = NaN"), "{e}");
        trial.wall_ms = 0.0;
        assert_eq!(TrialRecord::try_from(trial).map(|t| t.wall_ms), Ok(None));
        let e = TrialOutput {
            wall_ms: f64::NAN,
            ..output()
        }
        .check()
        .expect_err("NaN wall time");
        assert!(e.contains("finished.wall_ms = NaN"), "{e}");
    }
}
