//! Finished trial results the controller has not acknowledged yet.
//!
//! They are delivered on every (re)connection until the controller
//! acknowledges them (accepted, or refused as stale). With a state
//! directory each one is also a file, `STATE_DIR/outbox/{seq}.pb` (the
//! protobuf `AgentMessage`, written to a temporary file, fsynced, renamed),
//! so an agent restart does not lose a result: the next start loads them in
//! order and reports them in its `hello` like a running trial. A directory
//! is owned by one agent at a time (an advisory lock on `STATE_DIR/lock`).
//!
//! File names hold only a sequence number, never an id from the network.

use chimera_proto::v1 as proto;
use prost::Message;
use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// (sweep, trial, attempt): what an acknowledgement names.
pub type ResultKey = (String, String, u32);

struct Entry {
    seq: u64,
    msg: proto::AgentMessage,
}

/// The undelivered results, oldest first, bounded at `limit` (the oldest is
/// dropped, and logged, past it).
pub struct Outbox {
    dir: Option<PathBuf>,
    items: VecDeque<Entry>,
    next_seq: u64,
    limit: usize,
    /// Held open for the lock's lifetime.
    _lock: Option<File>,
}

/// The trial a buffered message reports.
pub fn trial_of(m: &proto::AgentMessage) -> Option<&proto::TrialRef> {
    use proto::agent_message::Msg as Up;
    match &m.msg {
        Some(Up::Finished(f)) => f.trial.as_ref(),
        Some(Up::Failed(f)) => f.trial.as_ref(),
        _ => None,
    }
}

fn key_of(r: &proto::TrialRef) -> ResultKey {
    (r.sweep_id.clone(), r.trial_id.clone(), r.attempt)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Outbox {
    /// An outbox in memory only (a restart loses it).
    pub fn in_memory(limit: usize) -> Self {
        Outbox {
            dir: None,
            items: VecDeque::new(),
            next_seq: 1,
            limit,
            _lock: None,
        }
    }

    /// The outbox kept in `state_dir/outbox/` (created if missing), with
    /// what an earlier run left there.
    pub fn open(state_dir: &Path, limit: usize) -> anyhow::Result<Self> {
        use anyhow::Context;
        let dir = state_dir.join("outbox");
        fs::create_dir_all(&dir)
            .with_context(|| format!("create the agent state directory {}", dir.display()))?;
        let lock_path = state_dir.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("open {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => anyhow::bail!(
                "state directory {} is in use by another chimera-agent (it holds {}); \
                 give each agent its own --state-dir",
                state_dir.display(),
                lock_path.display()
            ),
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("lock {}", lock_path.display()))
            }
        }
        let mut items = Vec::new();
        for entry in
            fs::read_dir(&dir).with_context(|| format!("read the outbox {}", dir.display()))?
        {
            let path = entry
                .with_context(|| format!("read the outbox {}", dir.display()))?
                .path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(".tmp") {
                // A write the last run did not finish: never acknowledged
                // as buffered, so nothing relied on it.
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(seq) = name.strip_suffix(".pb").and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            let decoded = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| proto::AgentMessage::decode(b.as_slice()).map_err(|e| e.to_string()))
                .and_then(|m| {
                    trial_of(&m)
                        .is_some()
                        .then_some(m)
                        .ok_or_else(|| "not a trial result".to_owned())
                });
            match decoded {
                Ok(msg) => items.push(Entry { seq, msg }),
                Err(e) => {
                    let bad = path.with_extension("bad");
                    warn!(file = %path.display(), error = %e, moved_to = %bad.display(), "unreadable buffered result set aside");
                    let _ = fs::rename(&path, &bad);
                }
            }
        }
        items.sort_by_key(|e| e.seq);
        let next_seq = items.last().map_or(1, |e| e.seq + 1);
        if !items.is_empty() {
            info!(results = items.len(), dir = %dir.display(), "buffered results from an earlier run, to deliver");
        }
        let mut outbox = Outbox {
            dir: Some(dir),
            items: items.into(),
            next_seq,
            limit,
            _lock: Some(lock),
        };
        while outbox.items.len() > limit {
            outbox.drop_oldest();
        }
        Ok(outbox)
    }

    fn path(&self, seq: u64) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{seq:020}.pb")))
    }

    fn drop_oldest(&mut self) {
        if let Some(old) = self.items.pop_front() {
            warn!(trial = ?trial_of(&old.msg), "outbox full: dropped the oldest undelivered result");
            if let Some(p) = self.path(old.seq) {
                let _ = fs::remove_file(p);
            }
        }
    }

    /// Buffers a result (on disk first, when there is a directory). A
    /// failed write is logged and the result kept in memory: the agent goes
    /// on, it only loses the restart guarantee for this one.
    pub fn push(&mut self, msg: proto::AgentMessage) {
        if self.items.len() >= self.limit {
            self.drop_oldest();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(path) = self.path(seq) {
            if let Err(e) = write_durably(&path, &msg.encode_to_vec()) {
                warn!(file = %path.display(), error = %e, "could not buffer a result on disk; it is kept in memory only");
            }
        }
        self.items.push_back(Entry { seq, msg });
    }

    /// Forgets the result the controller acknowledged.
    pub fn ack(&mut self, r: &proto::TrialRef) {
        let key = key_of(r);
        let mut gone = Vec::new();
        self.items.retain(|e| {
            let keep = trial_of(&e.msg).map(key_of).as_ref() != Some(&key);
            if !keep {
                gone.push(e.seq);
            }
            keep
        });
        for seq in gone {
            if let Some(p) = self.path(seq) {
                if let Err(e) = fs::remove_file(&p) {
                    warn!(file = %p.display(), error = %e, "could not remove a delivered result");
                }
            }
        }
    }

    /// The buffered messages, oldest first.
    pub fn messages(&self) -> impl Iterator<Item = &proto::AgentMessage> {
        self.items.iter().map(|e| &e.msg)
    }

    /// The trials the buffered results are for.
    pub fn trials(&self) -> impl Iterator<Item = &proto::TrialRef> {
        self.items.iter().filter_map(|e| trial_of(&e.msg))
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proto::agent_message::Msg as Up;

    fn finished(trial: &str, attempt: u32) -> proto::AgentMessage {
        proto::AgentMessage {
            msg: Some(Up::Finished(proto::TrialFinished {
                trial: Some(proto::TrialRef {
                    sweep_id: "s1".into(),
                    trial_id: trial.into(),
                    attempt,
                }),
                wall_ms: 7.0,
                ..Default::default()
            })),
        }
    }

    fn trials(o: &Outbox) -> Vec<(String, u32)> {
        o.trials()
            .map(|r| (r.trial_id.clone(), r.attempt))
            .collect()
    }

    #[test]
    fn results_survive_a_restart_in_order_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Outbox::open(dir.path(), 10).unwrap();
            o.push(finished("t1", 1));
            o.push(finished("t2", 1));
            o.push(finished("t3", 2));
            o.ack(&proto::TrialRef {
                sweep_id: "s1".into(),
                trial_id: "t2".into(),
                attempt: 1,
            });
        }
        // Garbage and a half-written file from a crash are set aside.
        std::fs::write(
            dir.path().join("outbox/00000000000000000009.pb"),
            b"\xff\xff",
        )
        .unwrap();
        std::fs::write(dir.path().join("outbox/00000000000000000010.tmp"), b"x").unwrap();
        let mut o = Outbox::open(dir.path(), 10).unwrap();
        assert_eq!(trials(&o), [("t1".into(), 1), ("t3".into(), 2)]);
        assert!(dir.path().join("outbox/00000000000000000009.bad").exists());
        assert!(!dir.path().join("outbox/00000000000000000010.tmp").exists());
        // New results go after the old ones, past the set-aside file.
        o.push(finished("t4", 1));
        drop(o);
        let o = Outbox::open(dir.path(), 10).unwrap();
        assert_eq!(
            trials(&o),
            [("t1".into(), 1), ("t3".into(), 2), ("t4".into(), 1)]
        );
        assert_eq!(o.len(), 3);
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path(), 2).unwrap();
        for t in ["a", "b", "c"] {
            o.push(finished(t, 1));
        }
        assert_eq!(trials(&o), [("b".into(), 1), ("c".into(), 1)]);
        drop(o);
        let files = std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .count();
        assert_eq!(files, 2);
    }

    #[test]
    fn one_agent_per_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Outbox::open(dir.path(), 10).unwrap();
        let second = Outbox::open(dir.path(), 10).err().unwrap().to_string();
        assert!(
            second.contains("in use by another chimera-agent"),
            "{second}"
        );
        assert!(
            second.contains(&dir.path().display().to_string()),
            "{second}"
        );
    }

    #[test]
    fn in_memory_outbox_acknowledges_by_attempt() {
        let mut o = Outbox::in_memory(10);
        o.push(finished("t1", 1));
        o.ack(&proto::TrialRef {
            sweep_id: "s1".into(),
            trial_id: "t1".into(),
            attempt: 2,
        });
        assert_eq!(o.len(), 1, "another attempt's ack leaves it");
        assert!(!o.is_empty());
    }
}
