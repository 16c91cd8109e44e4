//! Telemetry the agents stream: the latest sample per (agent, device) for the
//! live views and the Prometheus gauges, and every sample taken during a trial,
//! kept per trial in the data directory for `chimera telemetry`.
//!
//! Layout: `DATA_DIR/telemetry/{sweep}/{trial}.jsonl`, one JSON sample per
//! line, every attempt of the trial in one file. Retention is by count and
//! size ([`Limits`]): the newest [`KEEP_SWEEPS`] sweeps, at most
//! `max_bytes` in all (the oldest sweeps' directories go first), at most
//! `trial_bytes` per trial (later samples are counted and dropped); the
//! newest-sample map holds at most `latest` devices.
//!
//! Invariant: sweep and trial ids from the network are checked before they
//! become a path; samples naming anything else are counted and not stored.
//! Which samples an agent may send at all (its own devices, its own trials)
//! is decided by the agent service before they reach this store.

use chimera_domain::telemetry::Sample;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Sweeps whose telemetry is kept.
pub const KEEP_SWEEPS: usize = 200;

/// Size-based retention of the telemetry store.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of raw telemetry kept on disk in all.
    pub max_bytes: u64,
    /// Bytes kept for one trial (every attempt).
    pub trial_bytes: u64,
    /// Devices in the newest-sample map.
    pub latest: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 2 << 30,
            // What one GetTelemetry answer can carry under the 4 MiB message
            // limit: about 9,000 samples, 15 minutes at the default 100 ms.
            trial_bytes: 3 << 20,
            latest: 16_384,
        }
    }
}

#[derive(Default)]
struct Inner {
    latest: HashMap<(String, String), Sample>,
    received: u64,
    dropped_by_agents: u64,
    rejected: u64,
    /// Bytes on disk (as this store counts them since it opened).
    bytes: u64,
}

/// The controller's telemetry store.
pub struct TelemetryStore {
    dir: PathBuf,
    limits: Limits,
    inner: Mutex<Inner>,
}

/// Whether `s` may name a sweep or a trial here: the fleet's one id rule
/// ([`chimera_domain::ids::check_id`]), which never lets an id be `..` or a
/// hidden file when it becomes a path component.
fn valid_id(s: &str) -> bool {
    chimera_domain::ids::check_id("id", s).is_ok()
}

/// Bytes under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
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
    pub fn open(data_dir: &Path, limits: Limits) -> std::io::Result<TelemetryStore> {
        let dir = data_dir.join("telemetry");
        std::fs::create_dir_all(&dir)?;
        let bytes = dir_bytes(&dir);
        Ok(TelemetryStore {
            dir,
            limits,
            inner: Mutex::new(Inner {
                bytes,
                ..Inner::default()
            }),
        })
    }

    /// Counts samples refused before they reached the store (another
    /// agent's trial or device, a malformed sample).
    pub fn refuse(&self, n: u64) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.rejected += n;
        }
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
            match self.append(&sweep, &trial, &list) {
                Ok(kept) => rejected += (list.len() - kept) as u64,
                Err(e) => tracing::warn!(%sweep, %trial, error = %e, "cannot store telemetry"),
            }
        }
        let over = if let Ok(mut inner) = self.inner.lock() {
            inner.received += samples.len() as u64;
            inner.dropped_by_agents += dropped;
            inner.rejected += rejected;
            for s in samples {
                let key = (agent.to_owned(), s.device_id.clone());
                if inner.latest.get(&key).is_none_or(|old| old.t_ms <= s.t_ms) {
                    if !inner.latest.contains_key(&key) && inner.latest.len() >= self.limits.latest
                    {
                        // Full: the device heard from longest ago makes room.
                        let oldest = inner
                            .latest
                            .iter()
                            .min_by_key(|(_, s)| s.t_ms)
                            .map(|(k, _)| k.clone());
                        if let Some(k) = oldest {
                            inner.latest.remove(&k);
                        }
                    }
                    inner.latest.insert(key, s);
                }
            }
            inner.bytes > self.limits.max_bytes
        } else {
            false
        };
        if over {
            if let Err(e) = self.prune() {
                tracing::warn!(error = %e, "cannot prune telemetry");
            }
        }
    }

    /// Appends what fits of `samples` to the trial's file; returns how many.
    fn append(&self, sweep: &str, trial: &str, samples: &[&Sample]) -> std::io::Result<usize> {
        let dir = self.dir.join(sweep);
        if !dir.exists() {
            std::fs::create_dir_all(&dir)?;
            self.prune()?;
        }
        let path = dir.join(format!("{trial}.jsonl"));
        let mut size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let mut f = std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?,
        );
        let mut kept = 0;
        let mut written = 0u64;
        for s in samples {
            let mut line = serde_json::to_vec(s)?;
            line.push(b'\n');
            if size + line.len() as u64 > self.limits.trial_bytes {
                break;
            }
            f.write_all(&line)?;
            size += line.len() as u64;
            written += line.len() as u64;
            kept += 1;
        }
        f.flush()?;
        if let Ok(mut inner) = self.inner.lock() {
            inner.bytes += written;
        }
        Ok(kept)
    }

    /// Removes the oldest sweep directories beyond [`KEEP_SWEEPS`], and then
    /// while the store holds more than `max_bytes` (sweep ids are ULIDs:
    /// their order is their age). The newest sweep is always kept.
    fn prune(&self) -> std::io::Result<()> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        let mut bytes = self.inner.lock().map(|i| i.bytes).unwrap_or(0);
        let mut removed = 0u64;
        let excess = dirs.len().saturating_sub(KEEP_SWEEPS);
        for (i, d) in dirs.iter().enumerate() {
            if i + 1 == dirs.len() || (i >= excess && bytes <= self.limits.max_bytes) {
                break;
            }
            let size = dir_bytes(d);
            std::fs::remove_dir_all(d)?;
            bytes = bytes.saturating_sub(size);
            removed += size;
        }
        if let Ok(mut inner) = self.inner.lock() {
            inner.bytes = inner.bytes.saturating_sub(removed);
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
        let store = TelemetryStore::open(dir.path(), Limits::default()).unwrap();
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

    #[test]
    fn retention_is_bounded_by_size_per_trial_in_all_and_in_the_live_map() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_bytes: 4_000,
            trial_bytes: 1_000,
            latest: 3,
        };
        let store = TelemetryStore::open(dir.path(), limits).unwrap();
        // One trial: what passes its cap is dropped and counted.
        let batch: Vec<Sample> = (0..100).map(|t| sample(t, Some("S1/t00001/1"))).collect();
        store.record("a", batch, 0);
        let kept = store.read("S1", "t00001").unwrap().unwrap().len();
        assert!(kept > 0 && kept < 100, "{kept}");
        assert_eq!(store.counts().rejected, (100 - kept) as u64);
        // Many sweeps: the oldest go once the store passes its size.
        for sweep in ["S2", "S3", "S4", "S5", "S6", "S7"] {
            let label = format!("{sweep}/t00001/1");
            let batch: Vec<Sample> = (0..100).map(|t| sample(t, Some(&label))).collect();
            store.record("a", batch, 0);
        }
        assert!(dir_bytes(&dir.path().join("telemetry")) <= 4_000 + 1_000);
        assert!(store.read("S1", "t00001").unwrap().unwrap().is_empty());
        assert!(!store.read("S7", "t00001").unwrap().unwrap().is_empty());
        // The live map keeps the newest devices only.
        for (i, d) in ["d1", "d2", "d3", "d4"].iter().enumerate() {
            let mut s = sample(1000 + i as i64, None);
            s.device_id = (*d).into();
            store.record("a", vec![s], 0);
        }
        let live: Vec<String> = store
            .latest()
            .into_iter()
            .map(|(_, s)| s.device_id)
            .collect();
        assert_eq!(live.len(), 3);
        assert!(!live.contains(&"cpu".to_owned()) && live.contains(&"d4".to_owned()));
    }
}
