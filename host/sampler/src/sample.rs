//! Token sampling from logits (argmax at temperature ≈ 0, otherwise filtered, tempered categorical
//! sampling) and MaskGIT's choice of the most confident predictions.

use crate::error::SamplerError;
use crate::logits::{
    SamplingOptions, argmax_rows, filter_top_k_top_p, is_argmax_temperature, row_count,
    softmax_with_temperature,
};
use crate::random::RandomSource;

/// One sampled token and its confidence (the probability it was sampled with; 1.0 for argmax).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampledToken {
    pub token: u32,
    pub confidence: f32,
}

/// Samples one token per row of a flat `rows × vocab` slice of (already guided) logits.
///
/// * `|temperature| <= 1e-10`: argmax of the raw logits (first index on ties), confidence 1.0; no
///   filtering, no randomness consumed.
/// * otherwise: top-k/top-p on the untempered logits, `softmax(filtered / T)`, one categorical
///   draw per row from `source` in row order; the confidence is the probability of the drawn token.
pub fn sample_rows(
    logits: &[f32],
    vocab: usize,
    temperature: f64,
    options: &SamplingOptions,
    source: &mut dyn RandomSource,
) -> Result<Vec<SampledToken>, SamplerError> {
    row_count(logits, vocab, "logits")?;
    if is_argmax_temperature(temperature) {
        return Ok(argmax_rows(logits, vocab)?
            .into_iter()
            .map(|token| SampledToken {
                token,
                confidence: 1.0,
            })
            .collect());
    }
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(SamplerError::InvalidSamplingTemperature { temperature });
    }
    let mut filtered = logits.to_vec();
    filter_top_k_top_p(&mut filtered, vocab, options)?;
    let probabilities = softmax_with_temperature(&filtered, vocab, temperature)?;
    probabilities
        .chunks(vocab)
        .enumerate()
        .map(|(row, row_probabilities)| {
            let token = sample_categorical(row_probabilities, source.next_uniform())
                .ok_or(SamplerError::NothingToSample { row })?;
            Ok(SampledToken {
                token: token as u32,
                confidence: row_probabilities[token],
            })
        })
        .collect()
}

/// Inverse-CDF draw from unnormalised probabilities with the uniform `u` in `[0, 1)`. Only
/// finite, positive entries can be drawn; `None` if there is none.
pub fn sample_categorical(probabilities: &[f32], u: f64) -> Option<usize> {
    let weight = |p: f32| {
        if p.is_finite() && p > 0.0 {
            p as f64
        } else {
            0.0
        }
    };
    let total: f64 = probabilities.iter().map(|&p| weight(p)).sum();
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let target = u * total;
    let mut cumulative = 0.0f64;
    let mut last_drawable = None;
    for (index, &p) in probabilities.iter().enumerate() {
        let w = weight(p);
        if w == 0.0 {
            continue;
        }
        cumulative += w;
        last_drawable = Some(index);
        if target < cumulative {
            return Some(index);
        }
    }
    // Rounding can leave `target` just above the final cumulative sum.
    last_drawable
}

/// MaskGIT's selection: the indices of the `num_select` highest confidences, most confident
/// first; equal confidences keep index order (the reference's `torch.topk` breaks ties in an
/// unspecified order, which is why parity tests avoid multi-step MaskGIT at temperature 0).
pub fn select_most_confident(
    confidences: &[f32],
    num_select: usize,
) -> Result<Vec<usize>, SamplerError> {
    if num_select > confidences.len() {
        return Err(SamplerError::SelectionTooLarge {
            requested: num_select,
            available: confidences.len(),
        });
    }
    let mut order: Vec<usize> = (0..confidences.len()).collect();
    order.sort_by(|&a, &b| {
        confidences[b]
            .partial_cmp(&confidences[a])
            .unwrap_or_else(|| {
                // NaN confidences sort last.
                confidences[a].is_nan().cmp(&confidences[b].is_nan())
            })
    });
    order.truncate(num_select);
    Ok(order)
}

/// Whether every row of an autoregressive stream already contains `eos` (the reference's stop test).
pub fn every_row_contains(streams: &[Vec<u32>], eos: u32) -> bool {
    streams.iter().all(|row| row.contains(&eos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    #[test]
    fn categorical_skips_zero_probabilities() {
        let probabilities = [0.0, 0.25, 0.0, 0.75, 0.0];
        assert_eq!(sample_categorical(&probabilities, 0.0), Some(1));
        assert_eq!(sample_categorical(&probabilities, 0.2499), Some(1));
        assert_eq!(sample_categorical(&probabilities, 0.25), Some(3));
        assert_eq!(sample_categorical(&probabilities, 0.999_999_999), Some(3));
        assert_eq!(sample_categorical(&[0.0, f32::NAN], 0.5), None);
    }

    #[test]
    fn sampling_is_reproducible_and_reports_probabilities() {
        let logits = [0.0f32, 1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 0.0];
        let options = SamplingOptions::default();
        let first = sample_rows(&logits, 4, 1.0, &options, &mut SeededRandom::new(5)).unwrap();
        let again = sample_rows(&logits, 4, 1.0, &options, &mut SeededRandom::new(5)).unwrap();
        assert_eq!(first, again);
        let probabilities = softmax_with_temperature(&logits, 4, 1.0).unwrap();
        for (row, sampled) in first.iter().enumerate() {
            assert_eq!(
                sampled.confidence,
                probabilities[row * 4 + sampled.token as usize]
            );
        }
    }

    #[test]
    fn sampling_frequencies_follow_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln()];
        let mut source = SeededRandom::new(11);
        let draws = 20_000;
        let ones = (0..draws)
            .filter(|_| {
                sample_rows(&logits, 2, 1.0, &SamplingOptions::default(), &mut source).unwrap()[0]
                    .token
                    == 1
            })
            .count();
        let frequency = ones as f64 / draws as f64;
        assert!((frequency - 0.75).abs() < 0.02, "frequency {frequency}");
    }

    #[test]
    fn small_temperature_still_samples() {
        // At T = 0.01 the argmax is overwhelmingly likely but the confidence is a probability,
        // not the argmax path's exact 1.0 for a near tie.
        let logits = [1.0f32, 1.0 - 1e-3];
        let sampled = sample_rows(
            &logits,
            2,
            0.01,
            &SamplingOptions::default(),
            &mut SeededRandom::new(0),
        )
        .unwrap();
        assert!(sampled[0].confidence < 0.6);
    }

    #[test]
    fn bad_temperatures_are_errors() {
        for temperature in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                sample_rows(
                    &[0.0, 1.0],
                    2,
                    temperature,
                    &SamplingOptions::default(),
                    &mut SeededRandom::new(0)
                ),
                Err(SamplerError::InvalidSamplingTemperature { .. })
            ));
        }
    }

    #[test]
    fn most_confident_first_ties_in_index_order() {
        assert_eq!(
            select_most_confident(&[0.1, 0.9, 0.5, 0.9], 3).unwrap(),
            vec![1, 3, 2]
        );
        assert!(matches!(
            select_most_confident(&[0.1], 2),
            Err(SamplerError::SelectionTooLarge { .. })
        ));
    }
}
