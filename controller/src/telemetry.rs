//! Telemetry the agents stream: the latest sample per (agent, device) for the
//! live views and the Prometheus gauges, and every sample taken during a trial,
//! kept per trial in the data directory for `chimera telemetry`.
//!
//! Layout: `DATA_DIR/telemetry/{sweep}/{trial}.jsonl`, one JSON sample per
//! line, every attempt of the trial in one file. Retention: the telemetry of
//! the newest [`KEEP_SWEEPS`] sweeps is kept; older sweep directories are
//! removed when a new one starts.
//!
//! Invariant: sweep and trial ids from the network are checked before they
//! become a path; samples naming anything else are counted and not stored.

use chimera_domain::telemetry::Sample;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Sweeps whose telemetry is kept.
pub const KEEP_SWEEPS: usize = 200;

#[derive(Default)]
struct Inner {
    latest: HashMap<(String, String), Sample>,
    received: u64,
    dropped_by_agents: u64,
    rejected: u64,
}

/// The controller's telemetry store.
pub struct TelemetryStore {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Counters for the metrics endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub received: u64,
    pub dropped_by_agents: u64,
    pub rejected: u64,
}

impl TelemetryStore {
    /// A store under `data_dir/telemetry`.
    pub fn open(data_dir: &Path) -> std::io::Result<TelemetryStore> {
        let dir = data_dir.join("telemetry");
        std::fs::create_dir_all(&dir)?;
        Ok(TelemetryStore {
            dir,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Records a batch from `agent`.
    pub fn record(&self, agent: &str, samples: Vec<Sample>, dropped: u64) {
        let mut by_trial: HashMap<(String, String), Vec<&Sample>> = HashMap::new();
        let mut rejected = 0u64;
        for s in &samples {
            let Some(label) = &s.trial else { continue };
            let mut parts = label.splitn(3, '/');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(sweep), Some(trial), Some(_)) if valid_id(sweep) && valid_id(trial) => {
                    by_trial
                        .entry((sweep.to_owned(), trial.to_owned()))
                        .or_default()
                        .push(s);
                }
                _ => rejected += 1,
            }
        }
        for ((sweep, trial), list) in by_trial {
            if let Err(e) = self.append(&sweep, &trial, &list) {
                tracing::warn!(%sweep, %trial, error = %e, "cannot store telemetry");
            }
        }
        if let Ok(mut inner) = self.inner.lock() {
            inner.received += samples.len() as u64;
            inner.dropped_by_agents += dropped;
            inner.rejected += rejected;
            for s in samples {
                let key = (agent.to_owned(), s.device_id.clone());
                if inner.latest.get(&key).is_none_or(|old| old.t_ms <= s.t_ms) {
                    inner.latest.insert(key, s);
                }
            }
        }
    }

    fn append(&self, sweep: &str, trial: &str, samples: &[&Sample]) -> std::io::Result<()> {
        let dir = self.dir.join(sweep);
        if !dir.exists() {
            std::fs::create_dir_all(&dir)?;
            self.prune()?;
        }
        let mut f = std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{trial}.jsonl")))?,
        );
        for s in samples {
            serde_json::to_writer(&mut f, s)?;
            f.write_all(b"\n")?;
        }
        f.flush()
    }

    /// Removes the oldest sweep directories beyond [`KEEP_SWEEPS`] (sweep ids
    /// are ULIDs: their order is their age).
    fn prune(&self) -> std::io::Result<()> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        if dirs.len() <= KEEP_SWEEPS {
            return Ok(());
        }
        dirs.sort();
        for d in &dirs[..dirs.len() - KEEP_SWEEPS] {
            std::fs::remove_dir_all(d)?;
        }
        Ok(())
    }

    /// Every stored sample of a trial, oldest first; `None` for ids that
    /// cannot name a trial.
    pub fn read(&self, sweep: &str, trial: &str) -> Option<std::io::Result<Vec<Sample>>> {
        if !valid_id(sweep) || !valid_id(trial) {
            return None;
        }
        let path = self.dir.join(sweep).join(format!("{trial}.jsonl"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(Ok(Vec::new())),
            Err(e) => return Some(Err(e)),
        };
        let mut samples: Vec<Sample> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        samples.sort_by_key(|s| s.t_ms);
        Some(Ok(samples))
    }

    /// The newest sample of every (agent, device).
    pub fn latest(&self) -> Vec<(String, Sample)> {
        self.inner
            .lock()
            .map(|i| {
                let mut v: Vec<(String, Sample)> = i
                    .latest
                    .iter()
                    .map(|((a, _), s)| (a.clone(), s.clone()))
                    .collect();
                v.sort_by(|a, b| (&a.0, &a.1.device_id).cmp(&(&b.0, &b.1.device_id)));
                v
            })
            .unwrap_or_default()
    }

    /// Samples received, dropped by agents, and refused.
    pub fn counts(&self) -> Counts {
        self.inner
            .lock()
            .map(|i| Counts {
                received: i.received,
                dropped_by_agents: i.dropped_by_agents,
                rejected: i.rejected,
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chimera_domain::telemetry::Phase;

    fn sample(t: i64, trial: Option<&str>) -> Sample {
        Sample {
            t_ms: t,
            device_id: "cpu".into(),
            phase: Phase::Measure,
            trial: trial.map(str::to_owned),
            fields: [("cpu_util_pct".to_owned(), 50.0)].into(),
            throttle: vec![],
        }
    }

    #[test]
    fn stores_per_trial_and_refuses_path_tricks() {
        let dir = tempfile::tempdir().unwrap();
        let store = TelemetryStore::open(dir.path()).unwrap();
        store.record(
            "a",
            vec![
                sample(2, Some("S1/t00001/1")),
                sample(1, Some("S1/t00001/1")),
                sample(3, Some("../../etc/t00001/1")),
                sample(4, None),
            ],
            7,
        );
        let got = store.read("S1", "t00001").unwrap().unwrap();
        assert_eq!(got.iter().map(|s| s.t_ms).collect::<Vec<_>>(), vec![1, 2]);
        assert!(store.read("..", "x").is_none());
        assert!(store.read("S1", "t99999").unwrap().unwrap().is_empty());
        let c = store.counts();
        assert_eq!((c.received, c.dropped_by_agents, c.rejected), (4, 7, 1));
        assert_eq!(store.latest()[0].1.t_ms, 4);
    }
}
