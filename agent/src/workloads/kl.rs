//! The divergence statistics of `eval`: per-position KL (full vocabulary or
//! top-K lower bound) and the mean ± standard error summaries reported per
//! trial, as llama.cpp's `llama-perplexity --kl-divergence` reports them.

use chimera_domain::stats;

/// KL(P_ref || Q) over the whole vocabulary, from the two log-softmax rows of
/// one position, summed in f64. Tokens the reference gives no mass add
/// nothing; a token the reference gives mass and the model none makes it
/// infinite.
pub fn kl_full(reference: &[f32], logprobs: &[f32]) -> f64 {
    reference
        .iter()
        .zip(logprobs)
        .map(|(&lp, &lq)| {
            let p = (lp as f64).exp();
            if p > 0.0 {
                p * (lp as f64 - lq as f64)
            } else {
                0.0
            }
        })
        .sum::<f64>()
        .max(0.0)
}

/// KL(P_ref || Q) over the reference's top-K tokens plus one bucket for all
/// the others: the divergence of the two distributions coarsened to K+1
/// outcomes (a lower bound of the full KL, by the data-processing
/// inequality; tight when the top-K hold nearly all of the reference mass).
pub fn kl_topk(reference: &[(u32, f32)], logprobs: &[f32]) -> f64 {
    let mut kl = 0.0f64;
    let (mut p_mass, mut q_mass) = (0.0f64, 0.0f64);
    for &(id, lp) in reference {
        let p = (lp as f64).exp();
        let lq = logprobs
            .get(id as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY) as f64;
        p_mass += p;
        q_mass += lq.exp();
        if p > 0.0 {
            kl += p * (lp as f64 - lq.max(-1e30));
        }
    }
    let p_tail = (1.0 - p_mass).max(0.0);
    let q_tail = (1.0 - q_mass).max(1e-30);
    if p_tail > 1e-12 {
        kl += p_tail * (p_tail / q_tail).ln();
    }
    kl.max(0.0)
}

/// Index of the largest entry of a row (the first of equals); 0 when empty.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// A sample mean with its standard error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanSe {
    pub mean: f64,
    /// sqrt(sample variance / n), with the unbiased (n - 1) variance; 0 with
    /// fewer than two values.
    pub se: f64,
}

/// Mean and standard error of the mean of `xs` (0 ± 0 when empty), from
/// the domain's one statistics module.
pub fn mean_se(xs: &[f64]) -> MeanSe {
    if xs.is_empty() {
        return MeanSe { mean: 0.0, se: 0.0 };
    }
    MeanSe {
        mean: stats::mean(xs),
        se: stats::sample_sd(xs) / (xs.len() as f64).sqrt(),
    }
}

/// Perplexity and its standard error from per-token negative
/// log-likelihoods: exp(mean NLL), and by the delta method
/// perplexity × SE(mean NLL).
pub fn perplexity(nll: &[f64]) -> MeanSe {
    let m = mean_se(nll);
    let ppl = m.mean.exp();
    MeanSe {
        mean: ppl,
        se: ppl * m.se,
    }
}

/// The fraction of `agree` out of `n` and its binomial standard error,
/// sqrt(p (1 - p) / (n - 1)) as llama.cpp reports it (0 when n < 2).
pub fn proportion(agree: usize, n: usize) -> MeanSe {
    if n == 0 {
        return MeanSe { mean: 0.0, se: 0.0 };
    }
    let p = agree as f64 / n as f64;
    let se = if n < 2 {
        0.0
    } else {
        (p * (1.0 - p) / (n as f64 - 1.0)).sqrt()
    };
    MeanSe { mean: p, se }
}

/// The 99th percentile of `xs` (interpolated); 0 when empty.
pub fn p99(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    stats::quantile(&sorted, 0.99)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ln(ps: &[f64]) -> Vec<f32> {
        ps.iter().map(|p| p.ln() as f32).collect()
    }

    #[test]
    fn full_kl_matches_the_hand_computed_sum() {
        let p = ln(&[0.7, 0.2, 0.1]);
        let q = ln(&[0.4, 0.4, 0.2]);
        // 0.7 ln(0.7/0.4) + 0.2 ln(0.2/0.4) + 0.1 ln(0.1/0.2)
        //   = 0.391731 - 0.138629 - 0.069315 = 0.183787
        let got = kl_full(&p, &q);
        assert!((got - 0.183_787).abs() < 1e-5, "{got}");
        assert!(kl_full(&p, &p) < 1e-12);
    }

    #[test]
    fn full_kl_is_at_least_the_top_k_lower_bound() {
        // A 6-token distribution whose top-2 hold 80 % of the reference mass;
        // the model moves mass around inside the tail, which the top-K bucket
        // cannot see.
        let p = ln(&[0.5, 0.3, 0.1, 0.05, 0.03, 0.02]);
        let q = ln(&[0.45, 0.3, 0.02, 0.13, 0.05, 0.05]);
        let full = kl_full(&p, &q);
        for k in 1..=6u32 {
            let top: Vec<(u32, f32)> = (0..k).map(|i| (i, p[i as usize])).collect();
            let bound = kl_topk(&top, &q);
            assert!(bound <= full + 1e-6, "k={k}: {bound} > {full}");
        }
        let top2: Vec<(u32, f32)> = vec![(0, p[0]), (1, p[1])];
        assert!(
            kl_topk(&top2, &q) < full - 0.05,
            "the tail's share is missed"
        );
        let all: Vec<(u32, f32)> = (0..6).map(|i| (i, p[i as usize])).collect();
        assert!((kl_topk(&all, &q) - full).abs() < 1e-6, "all K: exact");
    }

    #[test]
    fn top_k_kl_is_zero_for_the_same_distribution_and_matches_by_hand() {
        let lp = ln(&[0.7, 0.2, 0.1]);
        let reference = vec![(0, lp[0]), (1, lp[1])];
        assert!(kl_topk(&reference, &lp) < 1e-9);
        let other = ln(&[0.4, 0.4, 0.2]);
        let got = kl_topk(&reference, &other);
        assert!((got - 0.183_787).abs() < 1e-5, "{got}");
    }

    #[test]
    fn standard_errors_match_hand_computed_values() {
        // 1, 2, 3, 4: mean 2.5, unbiased variance 5/3, SE sqrt(5/12) = 0.645497.
        let m = mean_se(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m.mean, 2.5);
        assert!((m.se - 0.645_497).abs() < 1e-6, "{m:?}");
        assert_eq!(mean_se(&[]), MeanSe { mean: 0.0, se: 0.0 });
        assert_eq!(mean_se(&[3.0]), MeanSe { mean: 3.0, se: 0.0 });

        // NLL 1, 3: mean 2, SE 1; perplexity e^2 = 7.389056 ± 7.389056.
        let p = perplexity(&[1.0, 3.0]);
        assert!((p.mean - 7.389_056).abs() < 1e-6, "{p:?}");
        assert!((p.se - 7.389_056).abs() < 1e-6, "{p:?}");

        // 3 of 4 agree: p 0.75, SE sqrt(0.1875 / 3) = 0.25.
        let a = proportion(3, 4);
        assert_eq!(a.mean, 0.75);
        assert!((a.se - 0.25).abs() < 1e-12, "{a:?}");
        assert_eq!(proportion(4, 4).se, 0.0);
        assert_eq!(proportion(0, 0), MeanSe { mean: 0.0, se: 0.0 });
    }

    #[test]
    fn p99_and_argmax_pick_by_rank() {
        let xs: Vec<f64> = (1..=200).map(f64::from).collect();
        assert!((p99(&xs) - 198.01).abs() < 1e-9, "{}", p99(&xs));
        assert_eq!(p99(&[5.0]), 5.0);
        assert_eq!(p99(&[]), 0.0);
        assert_eq!(argmax(&[0.1, 0.5, 0.5, 0.2]), 1);
        assert_eq!(argmax(&[]), 0);
    }
}
