//! One placement queue's pending trials, served fairly across sweeps.
//!
//! Each sweep keeps its own FIFO; a free device takes from the sweeps in
//! turn (fair queueing, one trial per turn; see [`FairQueue`]). Two sweeps
//! queued on one device therefore run interleaved: a short sweep submitted behind a long one
//! does not wait for all of it, and a baseline and a candidate submitted
//! together are measured under the same machine conditions, which is what
//! lets `chimera diff` between them survive an A/A run on a drifting host.

use chimera_domain::{SweepId, TrialKey};
use std::collections::{HashMap, VecDeque};

/// What a look at one queued trial decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Look {
    /// This device runs it: take it out.
    Take,
    /// Not for this device: leave it where it is.
    Skip,
    /// No longer pending: drop it from the queue.
    Drop,
}

/// The pending trials of one [`super::records::Queue`].
///
/// Start-time fair queueing with one trial as the unit: each sweep with
/// queued trials has a tag (how many turns it has had, on the queue's
/// clock), the sweep with the smallest tag is served next (the earlier
/// arrival on a tie), and a sweep that arrives, or comes back after its
/// queue ran dry, starts at the tag of the trial served last, so it is
/// served next without catching up on turns it was not there for. Two
/// sweeps queued together alternate A B A B ...; a sweep submitted while
/// another runs gets the next trial.
#[derive(Debug, Default)]
pub(super) struct FairQueue {
    by_sweep: HashMap<SweepId, SweepFifo>,
    /// The tag of the trial served last.
    clock: u64,
    /// Arrival order, for ties.
    arrivals: u64,
}

#[derive(Debug)]
struct SweepFifo {
    tag: u64,
    /// A trial went back to the front: this sweep wins a tie.
    requeued: bool,
    arrival: u64,
    trials: VecDeque<TrialKey>,
}

impl FairQueue {
    /// Queues `key` at the back of its sweep's FIFO, or at the front (and
    /// its sweep served next) when it goes back after a lost attempt.
    pub fn push(&mut self, key: TrialKey, front: bool) {
        let clock = self.clock;
        let fifo = self.by_sweep.entry(key.sweep.clone()).or_insert_with(|| {
            self.arrivals += 1;
            SweepFifo {
                tag: clock,
                requeued: false,
                arrival: self.arrivals,
                trials: VecDeque::new(),
            }
        });
        if front {
            fifo.tag = fifo.tag.min(clock);
            fifo.requeued = true;
            fifo.trials.push_front(key);
        } else {
            fifo.trials.push_back(key);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_sweep.is_empty()
    }

    /// The next trial `look` takes: the sweeps in order of their tags,
    /// each looked at at most `lookahead` entries deep. Entries `look`
    /// drops are removed on the way.
    pub fn pop(
        &mut self,
        lookahead: usize,
        mut look: impl FnMut(&TrialKey) -> Look,
    ) -> Option<TrialKey> {
        let mut order: Vec<(u64, bool, u64, SweepId)> = self
            .by_sweep
            .iter()
            .map(|(id, f)| (f.tag, !f.requeued, f.arrival, id.clone()))
            .collect();
        order.sort_unstable();
        for (_, _, _, sweep) in order {
            let Some(fifo) = self.by_sweep.get_mut(&sweep) else {
                continue;
            };
            let taken = Self::pop_fifo(&mut fifo.trials, lookahead, &mut look);
            if taken.is_some() {
                self.clock = fifo.tag;
                fifo.tag = fifo.tag.saturating_add(1);
                fifo.requeued = false;
            }
            if fifo.trials.is_empty() {
                self.by_sweep.remove(&sweep);
            }
            if taken.is_some() {
                return taken;
            }
        }
        None
    }

    fn pop_fifo(
        fifo: &mut VecDeque<TrialKey>,
        lookahead: usize,
        look: &mut impl FnMut(&TrialKey) -> Look,
    ) -> Option<TrialKey> {
        let mut i = 0;
        // Entries looked at and left in place.
        let mut looked = 0;
        while looked < lookahead {
            let key = fifo.get(i)?;
            match look(key) {
                Look::Take => return fifo.remove(i),
                // Not counted: each drop shortens the queue for good.
                Look::Drop => {
                    fifo.remove(i);
                }
                Look::Skip => {
                    i += 1;
                    looked += 1;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chimera_domain::TrialId;

    fn key(sweep: &str, trial: &str) -> TrialKey {
        TrialKey {
            sweep: SweepId(sweep.into()),
            trial: TrialId(trial.into()),
        }
    }

    fn drain(q: &mut FairQueue) -> Vec<String> {
        drain_n(q, usize::MAX)
    }

    fn drain_n(q: &mut FairQueue, n: usize) -> Vec<String> {
        std::iter::from_fn(|| q.pop(64, |_| Look::Take))
            .take(n)
            .map(|k| format!("{}/{}", k.sweep.0, k.trial.0))
            .collect()
    }

    #[test]
    fn sweeps_are_served_in_turn_one_trial_each() {
        let mut q = FairQueue::default();
        for t in ["t0", "t1", "t2"] {
            q.push(key("a", t), false);
        }
        for t in ["t0", "t1"] {
            q.push(key("b", t), false);
        }
        assert_eq!(drain(&mut q), ["a/t0", "b/t0", "a/t1", "b/t1", "a/t2"]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_sweep_arriving_while_another_runs_is_served_next_without_catching_up() {
        let mut q = FairQueue::default();
        for t in ["t0", "t1", "t2", "t3"] {
            q.push(key("a", t), false);
        }
        let first = drain_n(&mut q, 2);
        assert_eq!(first, ["a/t0", "a/t1"]);
        for t in ["t0", "t1"] {
            q.push(key("b", t), false);
        }
        // b gets the next trial, then they alternate: b is not owed the two
        // turns a had before it came.
        assert_eq!(drain(&mut q), ["b/t0", "a/t2", "b/t1", "a/t3"]);
    }

    #[test]
    fn a_requeued_trial_goes_next() {
        let mut q = FairQueue::default();
        q.push(key("a", "t0"), false);
        q.push(key("a", "t1"), false);
        q.push(key("b", "t0"), false);
        q.push(key("b", "t1"), true);
        // b/t1 jumped the turn; a has the next two turns to even it out
        // (a's tie with b is won by the earlier arrival).
        assert_eq!(drain(&mut q), ["b/t1", "a/t0", "a/t1", "b/t0"]);
    }

    #[test]
    fn skipped_and_dropped_entries_leave_the_turn_fair() {
        let mut q = FairQueue::default();
        q.push(key("b", "t0"), false);
        q.push(key("a", "t0"), false);
        q.push(key("a", "t1"), false);
        // b's turn first, but b/t0 is no longer pending; a/t0 does not fit
        // this device.
        let got = q.pop(64, |k| match (k.sweep.0.as_str(), k.trial.0.as_str()) {
            ("a", "t0") => Look::Skip,
            ("b", _) => Look::Drop,
            _ => Look::Take,
        });
        assert_eq!(got, Some(key("a", "t1")));
        // b is gone (its only entry dropped); a/t0 is still queued.
        assert_eq!(drain(&mut q), ["a/t0"]);
    }

    #[test]
    fn lookahead_bounds_the_search_per_sweep() {
        let mut q = FairQueue::default();
        for i in 0..10 {
            q.push(key("a", &format!("t{i}")), false);
        }
        // Only t9 fits, ten deep: a lookahead of 4 does not reach it.
        assert_eq!(
            q.pop(4, |k| if k.trial.0 == "t9" {
                Look::Take
            } else {
                Look::Skip
            }),
            None
        );
        assert_eq!(
            q.pop(10, |k| if k.trial.0 == "t9" {
                Look::Take
            } else {
                Look::Skip
            }),
            Some(key("a", "t9"))
        );
    }
}
