//! The single, injectable source of randomness of generation: uniform draws for categorical
//! sampling and the ROAR query order, re-seeded per schedule step like the reference.
//!
//! The default [`SeededRandom`] is xoshiro256** (Blackman & Vigna, 2018) seeded through
//! SplitMix64. Both are fixed here in a few lines, so the stream never changes with a dependency
//! update: the same seed and schedule give the same tokens on every build. The reference's torch
//! streams (mt19937) are not reproduced; parity tests inject the recorded ROAR orders instead
//! ([`RecordedRoarOrders`]) and run at temperature 0.

use std::collections::HashMap;

use crate::error::SamplerError;

/// A source of randomness for one generation run.
pub trait RandomSource {
    /// Called by the generation loop at the start of schedule step `step_index` (0-based). The
    /// reference re-seeds with `seed + step_index` here, which makes each step reproducible on
    /// its own.
    fn begin_step(&mut self, step_index: usize);

    /// A uniform draw in `[0, 1)`.
    fn next_uniform(&mut self) -> f64;

    /// The ROAR decoder queries of step `step_index`: `num_queries` distinct positions taken
    /// from `masked_positions` (ascending positions whose target mask is false), in the order in
    /// which they are arranged as decoder queries. One order serves every row of the batch and
    /// both the conditional and unconditional passes.
    ///
    /// The default draws one uniform key per masked position and takes the positions with the
    /// smallest keys (equal keys keep position order) — a uniformly random order, like the
    /// reference's `argsort(target_mask + rand * 1e-6)`.
    fn roar_query_order(
        &mut self,
        step_index: usize,
        masked_positions: &[usize],
        num_queries: usize,
    ) -> Result<Vec<usize>, SamplerError> {
        let _ = step_index;
        let mut keyed: Vec<(f64, usize)> = masked_positions
            .iter()
            .map(|&position| (self.next_uniform(), position))
            .collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(keyed
            .into_iter()
            .take(num_queries)
            .map(|(_, position)| position)
            .collect())
    }
}

/// SplitMix64 step: spreads a 64-bit seed over the xoshiro state (recommended by its authors).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** seeded from `seed + step` at every step (see [`RandomSource::begin_step`]).
#[derive(Debug, Clone)]
pub struct SeededRandom {
    seed: u64,
    state: [u64; 4],
}

impl SeededRandom {
    /// A generator for a run with this seed; until the first [`RandomSource::begin_step`] it
    /// draws as step 0.
    pub fn new(seed: u64) -> Self {
        let mut generator = Self {
            seed,
            state: [0; 4],
        };
        generator.reseed(seed);
        generator
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn reseed(&mut self, seed: u64) {
        let mut mixer = seed;
        for word in self.state.iter_mut() {
            *word = splitmix64(&mut mixer);
        }
    }

    /// Next 64 random bits (xoshiro256**).
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

impl RandomSource for SeededRandom {
    fn begin_step(&mut self, step_index: usize) {
        self.reseed(self.seed.wrapping_add(step_index as u64));
    }

    fn next_uniform(&mut self) -> f64 {
        // The top 53 bits give every double in [0, 1) with spacing 2^-53.
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Replays recorded ROAR query orders (e.g. the reference's, from the fixtures) and delegates
/// every other draw to an inner source. A ROAR step without a recorded order is an error, so a
/// parity test cannot silently fall back to fresh randomness.
#[derive(Debug, Clone)]
pub struct RecordedRoarOrders<S> {
    inner: S,
    orders: HashMap<usize, Vec<usize>>,
}

impl<S: RandomSource> RecordedRoarOrders<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            orders: HashMap::new(),
        }
    }

    /// Records the query positions of schedule step `step_index`, in query order.
    pub fn with_order(mut self, step_index: usize, positions: Vec<usize>) -> Self {
        self.orders.insert(step_index, positions);
        self
    }
}

impl<S: RandomSource> RandomSource for RecordedRoarOrders<S> {
    fn begin_step(&mut self, step_index: usize) {
        self.inner.begin_step(step_index);
    }

    fn next_uniform(&mut self) -> f64 {
        self.inner.next_uniform()
    }

    fn roar_query_order(
        &mut self,
        step_index: usize,
        _masked_positions: &[usize],
        _num_queries: usize,
    ) -> Result<Vec<usize>, SamplerError> {
        self.orders
            .get(&step_index)
            .cloned()
            .ok_or(SamplerError::MissingRecordedOrder { step: step_index })
    }
}

/// The ROAR queries of a step, checked: `min(num_select, #masked)` distinct positions, each
/// still masked (target mask false) in `target_mask` (row 0 of the batch, as in the reference).
pub fn roar_queries(
    source: &mut dyn RandomSource,
    step_index: usize,
    target_mask: &[bool],
    num_select: usize,
) -> Result<Vec<usize>, SamplerError> {
    let masked: Vec<usize> = target_mask
        .iter()
        .enumerate()
        .filter(|(_, done)| !**done)
        .map(|(position, _)| position)
        .collect();
    let expected = num_select.min(masked.len());
    let order = source.roar_query_order(step_index, &masked, expected)?;
    let invalid = |reason: String| SamplerError::InvalidRoarOrder {
        step: step_index,
        reason,
    };
    if order.len() != expected {
        return Err(invalid(format!(
            "{} positions given, {} expected",
            order.len(),
            expected
        )));
    }
    let mut seen = vec![false; target_mask.len()];
    for &position in &order {
        match target_mask.get(position) {
            None => {
                return Err(invalid(format!(
                    "position {position} is outside the modality"
                )));
            }
            Some(true) => return Err(invalid(format!("position {position} is not masked"))),
            Some(false) if seen[position] => {
                return Err(invalid(format!("position {position} repeats")));
            }
            Some(false) => seen[position] = true,
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_reference_stream() {
        // Reference output of xoshiro256** for the state {1, 2, 3, 4} (from the authors' C code).
        let mut generator = SeededRandom {
            seed: 0,
            state: [1, 2, 3, 4],
        };
        let first: Vec<u64> = (0..3).map(|_| generator.next_u64()).collect();
        assert_eq!(first, vec![11520, 0, 1509978240]);
    }

    #[test]
    fn same_seed_same_draws_and_steps_reseed() {
        let mut a = SeededRandom::new(7);
        let mut b = SeededRandom::new(7);
        let draws_a: Vec<f64> = (0..5).map(|_| a.next_uniform()).collect();
        let draws_b: Vec<f64> = (0..5).map(|_| b.next_uniform()).collect();
        assert_eq!(draws_a, draws_b);
        assert!(draws_a.iter().all(|u| (0.0..1.0).contains(u)));
        a.begin_step(3);
        let mut c = SeededRandom::new(10);
        assert_eq!(a.next_uniform(), c.next_uniform());
        assert_ne!(
            SeededRandom::new(8).next_uniform(),
            SeededRandom::new(7).next_uniform()
        );
    }

    #[test]
    fn roar_queries_are_distinct_masked_positions() {
        let mask = [false, true, false, false, true, false];
        let mut source = SeededRandom::new(1);
        let order = roar_queries(&mut source, 0, &mask, 3).unwrap();
        assert_eq!(order.len(), 3);
        assert!(order.iter().all(|&p| !mask[p]));
        let all = roar_queries(&mut source, 0, &mask, 10).unwrap();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 2, 3, 5]);
    }

    #[test]
    fn recorded_orders_are_replayed_and_checked() {
        let mask = [false, true, false, false];
        let mut source = RecordedRoarOrders::new(SeededRandom::new(0))
            .with_order(0, vec![3, 0])
            .with_order(1, vec![1]);
        assert_eq!(roar_queries(&mut source, 0, &mask, 2).unwrap(), vec![3, 0]);
        assert!(matches!(
            roar_queries(&mut source, 1, &mask, 1),
            Err(SamplerError::InvalidRoarOrder { step: 1, .. })
        ));
        assert_eq!(
            roar_queries(&mut source, 2, &mask, 1),
            Err(SamplerError::MissingRecordedOrder { step: 2 })
        );
    }
}
