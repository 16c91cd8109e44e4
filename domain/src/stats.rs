//! Sample statistics, the one place they are computed: median, mean, spread,
//! seeded bootstrap intervals of the median and of a change of medians, the
//! Mann–Whitney rank test, and Holm's correction for many comparisons.
//!
//! compare, diff, cost, the search and the report all take their figures
//! from here, so a number and its interval mean the same everywhere.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use statrs::distribution::{ContinuousCDF, Normal};

/// Confidence level of every interval shown (95 %).
pub const LEVEL: f64 = 0.95;

/// Resamples of a bootstrap interval.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// Seed of the bootstrap's generator: the same values give the same interval
/// on every run and machine.
pub const BOOTSTRAP_SEED: u64 = 0x5EED_C41E;

/// Median of a non-empty sample (sorts it); NaN for an empty one.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Mean of a non-empty sample; NaN for an empty one.
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample standard deviation (n - 1 in the denominator); 0 below 2 values.
pub fn sample_sd(v: &[f64]) -> f64 {
    let n = v.len();
    if n < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
}

/// Coefficient of variation, sd / |mean|, with 2+ values and a mean that is not 0.
pub fn cov(v: &[f64]) -> Option<f64> {
    let m = mean(v);
    (v.len() >= 2 && m != 0.0 && m.is_finite()).then(|| sample_sd(v) / m.abs())
}

/// The `q` quantile (0..=1) of sorted values, linearly interpolated.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// A sample summarised: its median with the bootstrap interval of the median.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    /// 95 % percentile-bootstrap interval of the median; none below 2 values.
    pub ci: Option<(f64, f64)>,
    /// Coefficient of variation over the values; none below 2 values.
    pub cov: Option<f64>,
}

/// Summarises a non-empty sample; none for an empty one.
pub fn summarize(v: &[f64]) -> Option<Summary> {
    if v.is_empty() {
        return None;
    }
    Some(Summary {
        n: v.len(),
        median: median(&mut v.to_vec()),
        ci: median_ci(v),
        cov: cov(v),
    })
}

fn resample_median(rng: &mut ChaCha8Rng, v: &[f64], buf: &mut Vec<f64>) -> f64 {
    buf.clear();
    buf.extend((0..v.len()).map(|_| v[rng.random_range(0..v.len())]));
    median(buf)
}

/// The central `LEVEL` interval of bootstrap replicates.
fn percentile_interval(mut reps: Vec<f64>) -> Option<(f64, f64)> {
    reps.retain(|r| r.is_finite());
    if reps.is_empty() {
        return None;
    }
    reps.sort_by(f64::total_cmp);
    let tail = (1.0 - LEVEL) / 2.0;
    Some((quantile(&reps, tail), quantile(&reps, 1.0 - tail)))
}

/// 95 % percentile-bootstrap interval of the median of `v` (seeded: the same
/// values always give the same interval); none below 2 values.
pub fn median_ci(v: &[f64]) -> Option<(f64, f64)> {
    if v.len() < 2 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(BOOTSTRAP_SEED);
    let mut buf = Vec::with_capacity(v.len());
    let reps = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| resample_median(&mut rng, v, &mut buf))
        .collect();
    percentile_interval(reps)
}

/// The relative change of the median from `a` to `b`, `median(b) / median(a) - 1`;
/// none when `a`'s median is 0 or a side is empty.
pub fn median_change(a: &[f64], b: &[f64]) -> Option<f64> {
    let (ma, mb) = (median(&mut a.to_vec()), median(&mut b.to_vec()));
    (ma != 0.0 && ma.is_finite() && mb.is_finite()).then(|| mb / ma - 1.0)
}

/// 95 % percentile-bootstrap interval of [`median_change`] (each side
/// resampled on its own, seeded); none below 2 values on a side.
pub fn median_change_ci(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(BOOTSTRAP_SEED);
    let mut buf = Vec::with_capacity(a.len().max(b.len()));
    let reps = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            let ma = resample_median(&mut rng, a, &mut buf);
            let mb = resample_median(&mut rng, b, &mut buf);
            if ma == 0.0 {
                f64::NAN
            } else {
                mb / ma - 1.0
            }
        })
        .collect();
    percentile_interval(reps)
}

/// Samples up to this many values in all are tested exactly; larger ones by
/// the normal approximation.
const EXACT_MAX: usize = 60;

/// Two-sided p-value of the Mann–Whitney U (Wilcoxon rank-sum) test that
/// `a` and `b` come from the same distribution. Ties get mid-ranks; up to
/// 60 values in all the p-value is exact (the permutation distribution of
/// the rank sum), above that the normal approximation with the tie and
/// continuity corrections. None when a side is empty.
pub fn mann_whitney_p(a: &[f64], b: &[f64]) -> Option<f64> {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|v| (*v, true))
        .chain(b.iter().map(|v| (*v, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    // Doubled mid-ranks (integers), ranks from 1.
    let mut ranks2 = vec![0u64; n];
    let mut ties = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        for r in &mut ranks2[i..=j] {
            *r = (i + 1 + j + 1) as u64;
        }
        i = j + 1;
    }
    let w2: u64 = (0..n).filter(|k| all[*k].1).map(|k| ranks2[k]).sum();
    if n <= EXACT_MAX {
        return Some(exact_rank_sum_p(&ranks2, n1, w2));
    }
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64);
    let w = w2 as f64 / 2.0;
    let mu = n1f * (nf + 1.0) / 2.0;
    let var = n1f * n2f / 12.0 * ((nf + 1.0) - ties / (nf * (nf - 1.0)));
    if var <= 0.0 {
        return Some(1.0);
    }
    let z = ((w - mu).abs() - 0.5).max(0.0) / var.sqrt();
    let normal = Normal::new(0.0, 1.0).ok()?;
    Some((2.0 * (1.0 - normal.cdf(z))).min(1.0))
}

/// Exact two-sided p of the rank sum `w2` (doubled ranks) of `k` values
/// drawn from `ranks2`: the share of the equally likely `k`-subsets whose
/// sum is at least as far from the mean, counted by dynamic programming.
fn exact_rank_sum_p(ranks2: &[u64], k: usize, w2: u64) -> f64 {
    let total: u64 = ranks2.iter().sum();
    let max = total as usize;
    // ways[j][s]: subsets of size j with sum s (f64: counts up to C(60, 30)).
    let mut ways = vec![vec![0f64; max + 1]; k + 1];
    ways[0][0] = 1.0;
    for &r in ranks2 {
        let r = r as usize;
        for j in (1..=k).rev() {
            let (lower, upper) = ways.split_at_mut(j);
            let (prev, cur) = (&lower[j - 1], &mut upper[0]);
            for s in (r..=max).rev() {
                cur[s] += prev[s - r];
            }
        }
    }
    let counts = &ways[k];
    let all: f64 = counts.iter().sum();
    // The mean of the doubled sum, times n, to stay in integers:
    // mean = k * total / n.
    let n = ranks2.len() as f64;
    let mean = k as f64 * total as f64 / n;
    let dist = (w2 as f64 - mean).abs();
    let extreme: f64 = counts
        .iter()
        .enumerate()
        .filter(|(s, _)| (*s as f64 - mean).abs() >= dist - 1e-9)
        .map(|(_, c)| c)
        .sum();
    (extreme / all).min(1.0)
}

/// The smallest two-sided p-value the Mann–Whitney test can give with `n1`
/// and `n2` values (no ties): `2 / C(n1 + n2, n1)`. Below it no change can
/// be called significant, however large.
pub fn mann_whitney_min_p(n1: usize, n2: usize) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let (n, k) = (n1 + n2, n1.min(n2));
    let comb = (0..k).fold(1.0, |c, i| c * (n - i) as f64 / (i + 1) as f64);
    (2.0 / comb).min(1.0)
}

/// Holm's step-down adjustment of p-values for testing them together: the
/// adjusted p is below α exactly where Holm's procedure rejects at level α
/// (which holds the chance of any false rejection to α). Same order as `p`.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|a, b| p[*a].total_cmp(&p[*b]));
    let mut out = vec![1.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        let adj = ((m - rank) as f64 * p[i]).min(1.0);
        running = running.max(adj);
        out[i] = running;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn median_mean_and_spread() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
        assert_eq!(mean(&[1.0, 2.0, 6.0]), 3.0);
        assert_eq!(sample_sd(&[5.0]), 0.0);
        assert!((sample_sd(&[9.0, 10.0, 11.0]) - 1.0).abs() < 1e-12);
        assert!((cov(&[9.0, 10.0, 11.0]).unwrap() - 0.1).abs() < 1e-12);
        assert!(cov(&[1.0]).is_none());
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.5), 3.0);
        assert_eq!(quantile(&[0.0, 10.0], 0.25), 2.5);
    }

    #[test]
    fn the_median_interval_is_seeded_holds_the_median_and_needs_two_values() {
        let v = [10.0, 11.0, 9.0, 10.5, 9.5, 30.0];
        let (lo, hi) = median_ci(&v).unwrap();
        let m = median(&mut v.to_vec());
        assert!(lo <= m && m <= hi, "{lo} {m} {hi}");
        assert!(hi < 30.0, "the median's interval ignores an outlier: {hi}");
        assert_eq!(median_ci(&v), Some((lo, hi)), "deterministic");
        assert!(median_ci(&[1.0]).is_none());
        let s = summarize(&v).unwrap();
        assert_eq!((s.n, s.median, s.ci), (6, m, Some((lo, hi))));
    }

    #[test]
    fn a_change_of_medians_has_an_interval_around_it() {
        let a = [100.0, 101.0, 99.0, 100.5, 99.5];
        let b = [50.0, 50.5, 49.5, 50.2, 49.8];
        assert!((median_change(&a, &b).unwrap() + 0.5).abs() < 1e-12);
        let (lo, hi) = median_change_ci(&a, &b).unwrap();
        assert!(lo < -0.5 && -0.5 < hi && hi < -0.45, "{lo} {hi}");
        assert!(median_change_ci(&a[..1], &b).is_none());
        assert!(median_change(&[0.0], &b).is_none());
    }

    #[test]
    fn mann_whitney_matches_the_exact_tables() {
        // Complete separation of 5 and 5: 2 of C(10, 5) = 252 orderings.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [6.0, 7.0, 8.0, 9.0, 10.0];
        let p = mann_whitney_p(&a, &b).unwrap();
        assert!((p - 2.0 / 252.0).abs() < 1e-12, "{p}");
        assert!((mann_whitney_min_p(5, 5) - 2.0 / 252.0).abs() < 1e-12);
        assert!((mann_whitney_min_p(3, 3) - 0.1).abs() < 1e-12);
        assert_eq!(mann_whitney_min_p(1, 0), 1.0);
        // Identical samples: no evidence at all.
        assert_eq!(mann_whitney_p(&a, &a).unwrap(), 1.0);
        // U = 2 of n1 = n2 = 4: P(U <= 2) = 4/70, two-sided 8/70.
        let p = mann_whitney_p(&[1.0, 2.0, 3.0, 6.0], &[4.0, 5.0, 7.0, 8.0]).unwrap();
        assert!((p - 8.0 / 70.0).abs() < 1e-12, "{p}");
        assert!(mann_whitney_p(&[], &a).is_none());
        // Large samples take the normal approximation, and agree in kind.
        let x: Vec<f64> = (0..40).map(f64::from).collect();
        let y: Vec<f64> = (0..40).map(|i| f64::from(i) + 30.0).collect();
        assert!(mann_whitney_p(&x, &y).unwrap() < 1e-6);
        assert!(mann_whitney_p(&x, &x).unwrap() > 0.9);
    }

    #[test]
    fn holm_adjusts_step_down_and_keeps_the_order() {
        let adj = holm(&[0.01, 0.04, 0.03, 0.5]);
        // Sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1, kept monotone.
        let want = [0.04, 0.09, 0.09, 0.5];
        for (a, w) in adj.iter().zip(want) {
            assert!((a - w).abs() < 1e-12, "{adj:?}");
        }
        assert!(holm(&[]).is_empty());
    }
}
