//! Sample statistics shared by the comparisons, the diff, the cost model and
//! the search: median, mean, standard deviation, confidence interval.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Median of a non-empty sample (sorts it).
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Mean of a non-empty sample.
pub(crate) fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample standard deviation (n - 1 in the denominator); 0 below 2 values.
pub(crate) fn sample_sd(v: &[f64]) -> f64 {
    let n = v.len();
    if n < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
}

/// 95 % confidence interval of the mean of `v` (Student's t); none below 2 values.
pub fn ci95(v: &[f64]) -> Option<(f64, f64)> {
    let n = v.len();
    if n < 2 {
        return None;
    }
    let mean = mean(v);
    let sd = sample_sd(v);
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64).ok()?;
    let half = t.inverse_cdf(0.975) * sd / (n as f64).sqrt();
    Some((mean - half, mean + half))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_mean_and_spread() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(mean(&[1.0, 2.0, 6.0]), 3.0);
        assert_eq!(sample_sd(&[5.0]), 0.0);
        assert!((sample_sd(&[9.0, 10.0, 11.0]) - 1.0).abs() < 1e-12);
        assert!(ci95(&[1.0]).is_none());
    }
}
