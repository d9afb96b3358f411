//! Seeded train / test split.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Shuffles `0..n` with `seed` and returns (train, test) index lists; `train_frac` in (0, 1).
pub fn train_test(n: usize, train_frac: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n_train = ((n as f64) * train_frac).round() as usize;
    let n_train = n_train.clamp(1.min(n), n.saturating_sub(1).max(1.min(n)));
    let test = idx.split_off(n_train);
    (idx, test)
}

#[cfg(test)]
mod tests {
    #[test]
    fn split_is_a_seeded_partition() {
        let (a, b) = super::train_test(100, 0.7, 1);
        assert_eq!((a.len(), b.len()), (70, 30));
        let mut all: Vec<_> = a.iter().chain(&b).copied().collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(super::train_test(100, 0.7, 1).0, a);
        assert_ne!(super::train_test(100, 0.7, 2).0, a);
    }
}
