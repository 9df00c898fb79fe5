//! The per-scene evidence behind a report row, and how clearly it shows the model beating its
//! baseline.
//!
//! "Clearly" is measured, not eyeballed: the scenes are resampled with replacement (a paired
//! bootstrap, the same resample for model and baseline) and a row's confidence is the fraction of
//! resamples on which the model still beats the baseline. A margin that a few lucky scenes
//! explain does not survive that.

use crate::EvalError;
use crate::metrics::ClassOverlap;
use crate::report::Direction;

/// Resamples drawn to measure confidence; enough for the 0.975 threshold to be stable to about
/// half a percent.
pub const RESAMPLES: usize = 2000;

/// The confidence a row needs to count as clearly beating its baseline (one-sided 97.5 %).
pub const CLEAR_CONFIDENCE: f64 = 0.975;

/// Fixed so that the same scores always give the same confidence.
const BOOTSTRAP_SEED: u64 = 0x7e55_e7a0_b007_57a9;

/// What one scene contributed to a metric, for the model and for its baseline.
#[derive(Debug, Clone, PartialEq)]
pub enum SceneScores {
    /// The metric is the mean over scenes of a per-scene value: `(model, baseline)` per scene.
    Means(Vec<(f64, f64)>),
    /// The metric is the dataset-level mean IoU: each scene's per-class pixel overlaps,
    /// `(model, baseline)`, are summed over the scenes before the IoUs are taken.
    Overlaps(Vec<(ClassOverlap, ClassOverlap)>),
}

/// One scene's contribution to a metric.
#[derive(Debug, Clone, PartialEq)]
pub enum SceneScore {
    /// The scene's value of a mean-over-scenes metric: `(model, baseline)`.
    Mean(f64, f64),
    /// The scene's per-class overlaps: `(model, baseline)`.
    Overlap(ClassOverlap, ClassOverlap),
}

impl From<SceneScore> for SceneScores {
    fn from(score: SceneScore) -> Self {
        match score {
            SceneScore::Mean(model, baseline) => SceneScores::Means(vec![(model, baseline)]),
            SceneScore::Overlap(model, baseline) => SceneScores::Overlaps(vec![(model, baseline)]),
        }
    }
}

impl SceneScores {
    /// Adds one more scene, which must be of the same kind as the ones before.
    pub fn push(&mut self, score: SceneScore) -> Result<(), EvalError> {
        match (self, score) {
            (SceneScores::Means(pairs), SceneScore::Mean(model, baseline)) => {
                pairs.push((model, baseline));
            }
            (SceneScores::Overlaps(pairs), SceneScore::Overlap(model, baseline)) => {
                pairs.push((model, baseline));
            }
            _ => return Err(EvalError::MixedScores),
        }
        Ok(())
    }

    /// How many scenes contributed.
    pub fn scenes(&self) -> usize {
        match self {
            SceneScores::Means(pairs) => pairs.len(),
            SceneScores::Overlaps(pairs) => pairs.len(),
        }
    }

    /// The metric of the model and of the baseline over all scenes; `None` without scenes (or,
    /// for IoU, without any labelled pixel).
    pub fn totals(&self) -> Option<(f64, f64)> {
        self.over(0..self.scenes())
    }

    /// The metric over the scenes with these indices (repeats count again).
    fn over(&self, indices: impl Iterator<Item = usize>) -> Option<(f64, f64)> {
        match self {
            SceneScores::Means(pairs) => {
                let (mut model, mut baseline, mut n) = (0.0, 0.0, 0usize);
                for i in indices {
                    model += pairs[i].0;
                    baseline += pairs[i].1;
                    n += 1;
                }
                (n > 0).then(|| (model / n as f64, baseline / n as f64))
            }
            SceneScores::Overlaps(pairs) => {
                let mut model = ClassOverlap::default();
                let mut baseline = ClassOverlap::default();
                for i in indices {
                    model.add(&pairs[i].0);
                    baseline.add(&pairs[i].1);
                }
                model.mean_iou().zip(baseline.mean_iou())
            }
        }
    }

    /// The fraction of bootstrap resamples of the scenes on which the model strictly beats the
    /// baseline (0 without scenes).
    pub fn confidence(&self, direction: Direction) -> f64 {
        let n = self.scenes();
        if n == 0 {
            return 0.0;
        }
        let mut rng = SplitMix64(BOOTSTRAP_SEED);
        let mut wins = 0usize;
        let mut sample = vec![0usize; n];
        for _ in 0..RESAMPLES {
            for slot in &mut sample {
                *slot = rng.below(n);
            }
            if let Some((model, baseline)) = self.over(sample.iter().copied()) {
                wins += usize::from(direction.better(model, baseline));
            }
        }
        wins as f64 / RESAMPLES as f64
    }
}

/// A small, well-mixed generator: the bootstrap needs reproducible indices, not cryptography.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is below 1e-16 for the scene counts used here).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::class_overlap;

    #[test]
    fn a_consistent_margin_is_clear_and_a_noisy_one_is_not() {
        // The model is better on every scene by a little: clear.
        let steady: Vec<(f64, f64)> = (0..200)
            .map(|i| {
                let base = 0.3 + 0.01 * f64::from(i % 7);
                (base - 0.002, base)
            })
            .collect();
        let steady = SceneScores::Means(steady);
        assert_eq!(steady.confidence(Direction::LowerIsBetter), 1.0);
        assert_eq!(steady.confidence(Direction::HigherIsBetter), 0.0);
        // The same mean margin, carried by a few scenes among large swings either way: unclear.
        let noisy: Vec<(f64, f64)> = (0..200)
            .map(|i| {
                let swing = if i % 2 == 0 { 0.3 } else { -0.3 };
                let lucky = if i < 2 { -0.2 } else { 0.0 };
                (0.5 + swing + lucky, 0.5)
            })
            .collect();
        let noisy = SceneScores::Means(noisy);
        let (model, baseline) = noisy.totals().unwrap();
        assert!(model < baseline, "{model} vs {baseline}");
        let confidence = noisy.confidence(Direction::LowerIsBetter);
        assert!(
            confidence > 0.3 && confidence < CLEAR_CONFIDENCE,
            "{confidence}"
        );
        // Reproducible.
        assert_eq!(confidence, noisy.confidence(Direction::LowerIsBetter));
    }

    #[test]
    fn overlaps_are_pooled_over_scenes_before_the_iou() {
        // Scene 1 holds class 2 and the model finds it; scene 2 has no class 2 and the model
        // paints a few pixels of it. Per image that is a zero IoU term; pooled, only a smaller
        // class-2 IoU.
        let truth_a = [0, 0, 2, 2];
        let truth_b = [0, 0, 1, 1];
        let model_a = class_overlap(&[0, 0, 2, 2], &truth_a).unwrap();
        let model_b = class_overlap(&[0, 2, 1, 1], &truth_b).unwrap();
        let base_a = class_overlap(&[0, 0, 0, 0], &truth_a).unwrap();
        let base_b = class_overlap(&[0, 0, 0, 0], &truth_b).unwrap();
        let mut scores = SceneScores::from(SceneScore::Overlap(model_a, base_a));
        scores.push(SceneScore::Overlap(model_b, base_b)).unwrap();
        assert!(matches!(
            scores.push(SceneScore::Mean(0.0, 0.0)),
            Err(EvalError::MixedScores)
        ));
        assert_eq!(scores.scenes(), 2);
        let (model, baseline) = scores.totals().unwrap();
        // Model: class 0 3/4, class 1 2/2, class 2 2/3. Baseline: class 0 4/8, classes 1, 2 zero.
        let expected_model = (0.75 + 1.0 + 2.0 / 3.0) / 3.0;
        assert!((model - expected_model).abs() < 1e-12, "{model}");
        assert!((baseline - 0.5 / 3.0).abs() < 1e-12, "{baseline}");
        assert_eq!(SceneScores::Overlaps(Vec::new()).totals(), None);
        assert_eq!(
            SceneScores::Means(Vec::new()).confidence(Direction::LowerIsBetter),
            0.0
        );
    }
}
