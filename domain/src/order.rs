//! The run order of a sweep's trials: seeded, randomised and interleaved, so
//! that drift of a machine over minutes spreads across configurations
//! instead of landing on whole ones.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The order in which `items` placements (configuration × class, or
/// device), each repeated `repeats` times, run: round by round — every
/// placement once in round `r` before any runs its repeat `r + 1` — and
/// within a round in an order shuffled by `seed` (a different shuffle each
/// round). The answer is `(placement, repeat)` pairs; the same arguments
/// always give the same order.
pub fn interleave(items: usize, repeats: u32, seed: u64) -> Vec<(usize, u32)> {
    let mut out = Vec::with_capacity(items.saturating_mul(repeats as usize));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut round: Vec<usize> = (0..items).collect();
    for repeat in 0..repeats {
        round.shuffle(&mut rng);
        out.extend(round.iter().map(|&i| (i, repeat)));
    }
    out
}

/// The order seed of a sweep whose spec gives none (`order_seed`): a hash
/// (FNV-1a, 64 bits) of its id, so every sweep gets its own order and a
/// stored sweep's order can be recomputed from its id.
pub fn default_seed(sweep_id: &str) -> u64 {
    sweep_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_covers_every_placement_before_the_next() {
        let order = interleave(5, 3, 7);
        assert_eq!(order.len(), 15);
        for (r, round) in order.chunks(5).enumerate() {
            let mut items: Vec<usize> = round.iter().map(|p| p.0).collect();
            assert!(round.iter().all(|p| p.1 == r as u32), "{round:?}");
            items.sort_unstable();
            assert_eq!(items, vec![0, 1, 2, 3, 4]);
        }
    }

    #[test]
    fn the_seed_decides_the_order_and_rounds_differ() {
        assert_eq!(interleave(8, 2, 1), interleave(8, 2, 1));
        assert_ne!(interleave(8, 2, 1), interleave(8, 2, 2));
        let o = interleave(8, 2, 1);
        assert_ne!(
            o[..8].iter().map(|p| p.0).collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
        assert_ne!(
            o[..8].iter().map(|p| p.0).collect::<Vec<_>>(),
            o[8..].iter().map(|p| p.0).collect::<Vec<_>>()
        );
    }

    #[test]
    fn nothing_to_order_is_an_empty_order() {
        assert!(interleave(0, 3, 1).is_empty());
        assert!(interleave(3, 0, 1).is_empty());
        assert_ne!(default_seed("01A"), default_seed("01B"));
    }
}
