//! Retry pacing: the one exponential backoff, with jitter and a cap, that
//! every retry loop of Chimera's binaries uses (the agent's reconnects, the
//! controller's etcd reads).

use rand::Rng;
use std::time::Duration;

/// Exponential backoff: each delay is drawn in `[step/2, step]` (jitter, so
/// many clients retrying at once spread out), then the step doubles, up to
/// `max`. [`Backoff::reset`] goes back to `min` after a success.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// Starts at `min`, never over `max` (a `max` under `min` is `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            step: min,
        }
    }

    /// The delay to wait before the next try; the step after it doubles.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.step.mul_f64(rand::rng().random_range(0.5..=1.0));
        self.step = self.step.saturating_mul(2).min(self.max);
        delay
    }

    /// Back to the first step (the last try got through).
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_up_to_the_cap_and_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(350));
        for step in [100, 200, 350, 350] {
            let d = b.next_delay();
            assert!(
                d >= ms(step) / 2 && d <= ms(step),
                "{d:?} for step {step} ms"
            );
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
        let mut flat = Backoff::new(ms(50), ms(10));
        assert!(flat.next_delay() <= ms(50) && flat.next_delay() <= ms(50));
    }
}
