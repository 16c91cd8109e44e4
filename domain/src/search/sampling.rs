//! What the adaptive strategies share: seeded draws per class and generation, and per-rung medians.

use super::Observed;
use crate::stats::median;
use rand::SeedableRng;
use std::collections::BTreeMap;

/// The median objective value of each (configuration, rung), in configuration order;
/// `None` when no repeat produced a value.
pub(super) fn aggregate(history: &[Observed], rung: u32) -> BTreeMap<usize, Option<f64>> {
    let mut by: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for o in history.iter().filter(|o| o.rung == rung) {
        let e = by.entry(o.config).or_default();
        if let Some(v) = o.value {
            e.push(v);
        }
    }
    by.into_iter()
        .map(|(c, mut vs)| (c, (!vs.is_empty()).then(|| median(&mut vs))))
        .collect()
}

/// A random generator for one generation of one class's search: the same
/// seed, class and generation give the same draws on every machine.
pub(super) fn rng_for(seed: u64, class: &str, generation: usize) -> rand_chacha::ChaCha8Rng {
    // FNV-1a of the class name, mixed with the seed and generation.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in class.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mixed = seed
        .rotate_left(17)
        .wrapping_add(h)
        .wrapping_add((generation as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    rand_chacha::ChaCha8Rng::seed_from_u64(mixed)
}

/// `n` distinct indices from `pool`, kept in pool order.
pub(super) fn draw(pool: &[usize], n: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<usize> {
    if n >= pool.len() {
        return pool.to_vec();
    }
    let mut picked = rand::seq::index::sample(rng, pool.len(), n).into_vec();
    picked.sort_unstable();
    picked.into_iter().map(|i| pool[i]).collect()
}
