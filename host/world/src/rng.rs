//! A tiny, versioned pseudo-random generator (SplitMix64) so that a seed means the same scene forever,
//! independent of the version of any random-number crate.

/// Deterministic generator; the whole scene is drawn from one of these seeded with the scene seed.
#[derive(Clone, Debug)]
pub struct SceneRng {
    state: u64,
}

impl SceneRng {
    pub fn new(seed: u64) -> Self {
        // Mixing the seed once keeps neighbouring seeds (0, 1, 2, ...) from starting on similar states.
        let mut rng = Self {
            state: seed ^ 0x5445_5353_4552_4121,
        };
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [low, high).
    pub fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Uniform integer in [0, count); `count` must be positive.
    pub fn below(&mut self, count: usize) -> usize {
        debug_assert!(count > 0);
        // Multiply-shift keeps the bias below 2^-32 for the small counts used here.
        (((self.next_u64() >> 32) * count as u64) >> 32) as usize
    }

    pub fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_different_seeds_differ() {
        let first: Vec<u64> = (0..4)
            .map({
                let mut rng = SceneRng::new(7);
                move |_| rng.next_u64()
            })
            .collect();
        let again: Vec<u64> = (0..4)
            .map({
                let mut rng = SceneRng::new(7);
                move |_| rng.next_u64()
            })
            .collect();
        let other: Vec<u64> = (0..4)
            .map({
                let mut rng = SceneRng::new(8);
                move |_| rng.next_u64()
            })
            .collect();
        assert_eq!(first, again);
        assert_ne!(first, other);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = SceneRng::new(1);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let value = rng.below(5);
            assert!(value < 5);
            seen[value] = true;
        }
        assert!(seen.iter().all(|&hit| hit));
    }
}
