//! Logit processing on plain row-major `rows × vocab` f32 slices: classifier-free guidance, top-k /
//! top-p filtering, temperature, softmax and argmax — in the reference's order and float32
//! arithmetic (guidance on raw logits, filtering on untempered logits, then temperature).

use std::cmp::Ordering;

use crate::error::SamplerError;
use crate::reference_sort::sort_descending_like_torch;

/// Top-k filtering.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum TopK {
    #[default]
    Disabled,
    /// Keep logits at least as large as the k-th largest (ties kept); 0 disables.
    Count(usize),
    /// Keep `k = int(fraction * vocab)` as with [`TopK::Count`]; the fraction must be in (0, 1].
    Fraction(f64),
}

/// Filtering applied before temperature (the reference's `top_k` / `top_p` arguments of `generate`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SamplingOptions {
    pub top_k: TopK,
    /// Nucleus filtering threshold in (0, 1]; `None` disables (the reference's `top_p = 0`).
    pub top_p: Option<f64>,
}

/// Temperatures this close to zero take the argmax path (numpy `isclose(T, 0, atol=1e-10)`);
/// 0.01 still samples.
pub fn is_argmax_temperature(temperature: f64) -> bool {
    // numpy: |T - 0| <= atol + rtol * |0|.
    temperature.abs() <= 1e-10
}

/// Number of rows of a flat `rows × vocab` slice, or an error if it is ragged.
pub fn row_count(logits: &[f32], vocab: usize, what: &'static str) -> Result<usize, SamplerError> {
    if vocab == 0 {
        return Err(SamplerError::EmptyVocabulary);
    }
    if !logits.len().is_multiple_of(vocab) {
        return Err(SamplerError::RaggedLogits {
            what,
            len: logits.len(),
            vocab,
        });
    }
    Ok(logits.len() / vocab)
}

/// Descending order for logits; NaN counts as the largest value, as in torch's sort and topk.
fn descending(a: f32, b: f32) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
    }
}

/// Top-k then top-p filtering, in place, on every row: removed entries become `-inf`.
///
/// * top-k keeps every logit `>=` the k-th largest of its row (ties at the boundary are kept).
/// * top-p sorts the row descending, takes the cumulative softmax of the untempered logits and
///   removes what lies beyond `top_p`, shifted by one so the token crossing the threshold stays;
///   the top token is always kept. Equal logits are ranked as torch's CPU sort ranks them.
pub fn filter_top_k_top_p(
    logits: &mut [f32],
    vocab: usize,
    options: &SamplingOptions,
) -> Result<(), SamplerError> {
    let rows = row_count(logits, vocab, "logits")?;
    let keep = match options.top_k {
        TopK::Disabled | TopK::Count(0) => None,
        TopK::Count(count) => Some(count.min(vocab)),
        TopK::Fraction(fraction) => {
            // NaN and non-positive fractions disable top-k, like `top_k > 0.0` in the reference.
            if fraction.is_nan() || fraction <= 0.0 {
                None
            } else {
                // Python's int() truncates toward zero.
                let count = ((fraction * vocab as f64) as usize).min(vocab);
                if count == 0 {
                    return Err(SamplerError::TopKKeepsNothing { fraction, vocab });
                }
                Some(count)
            }
        }
    };
    let top_p = match options.top_p {
        Some(p) if p > 0.0 => Some(p),
        _ => None,
    };
    let mut sorted = Vec::with_capacity(vocab);
    let mut ranked: Vec<(f32, usize)> = Vec::with_capacity(vocab);
    for row in 0..rows {
        let values = &mut logits[row * vocab..(row + 1) * vocab];
        if let Some(count) = keep {
            sorted.clear();
            sorted.extend_from_slice(values);
            sorted.sort_by(|a, b| descending(*a, *b));
            let threshold = sorted[count - 1];
            for value in values.iter_mut() {
                if *value < threshold {
                    *value = f32::NEG_INFINITY;
                }
            }
        }
        if let Some(p) = top_p {
            // Equal logits must come out in the reference's order: ties at the top-p boundary
            // decide which of them survive.
            ranked.clear();
            ranked.extend(values.iter().copied().zip(0..));
            sort_descending_like_torch(&mut ranked);
            sorted.clear();
            sorted.extend(ranked.iter().map(|&(value, _)| value));
            let probabilities = softmax_row(&sorted);
            // torch.cumsum accumulates float32 inputs in double and stores float32; the
            // comparison with the Python float happens in float32.
            let threshold = p as f32;
            let mut cumulative = 0.0f64;
            let mut previous_exceeds = false;
            for (rank, (&(_, index), &probability)) in ranked.iter().zip(&probabilities).enumerate()
            {
                cumulative += probability as f64;
                let exceeds = (cumulative as f32) > threshold;
                // Shifted right by one: a token is removed when the cumulative mass *before*
                // it already exceeded top_p. Rank 0 is always kept.
                if rank > 0 && previous_exceeds {
                    values[index] = f32::NEG_INFINITY;
                }
                previous_exceeds = exceeds;
            }
        }
    }
    Ok(())
}

/// Softmax of one row in float32: `exp(x - max)` normalised by its sum (`-inf` entries give 0).
fn softmax_row(values: &[f32]) -> Vec<f32> {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut exps: Vec<f32> = values.iter().map(|&v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    let inverse = 1.0 / sum;
    for value in exps.iter_mut() {
        *value *= inverse;
    }
    exps
}

/// `softmax(logits / temperature)` per row, in float32 (the temperature is rounded to f32 first,
/// as torch does for a Python scalar).
pub fn softmax_with_temperature(
    logits: &[f32],
    vocab: usize,
    temperature: f64,
) -> Result<Vec<f32>, SamplerError> {
    let rows = row_count(logits, vocab, "logits")?;
    let temperature = temperature as f32;
    let mut probabilities = Vec::with_capacity(logits.len());
    let mut scaled = Vec::with_capacity(vocab);
    for row in 0..rows {
        scaled.clear();
        scaled.extend(
            logits[row * vocab..(row + 1) * vocab]
                .iter()
                .map(|&v| v / temperature),
        );
        probabilities.extend(softmax_row(&scaled));
    }
    Ok(probabilities)
}

/// Index of the largest logit of every row (the first one on ties; NaN counts as largest).
pub fn argmax_rows(logits: &[f32], vocab: usize) -> Result<Vec<u32>, SamplerError> {
    let rows = row_count(logits, vocab, "logits")?;
    Ok((0..rows)
        .map(|row| {
            let values = &logits[row * vocab..(row + 1) * vocab];
            let mut best = 0usize;
            for (index, &value) in values.iter().enumerate().skip(1) {
                if descending(value, values[best]) == Ordering::Less {
                    best = index;
                }
            }
            best as u32
        })
        .collect())
}

/// Classifier-free guidance: `uncond + (cond - uncond) * scale`, element by element in float32 in
/// exactly this order (the scale is rounded to f32 like a Python scalar in torch).
pub fn guide(
    conditional: &[f32],
    unconditional: &[f32],
    scale: f64,
) -> Result<Vec<f32>, SamplerError> {
    if conditional.len() != unconditional.len() {
        return Err(SamplerError::LengthMismatch {
            what: "conditional logits",
            len: conditional.len(),
            expected: unconditional.len(),
        });
    }
    let scale = scale as f32;
    Ok(conditional
        .iter()
        .zip(unconditional)
        .map(|(&c, &u)| u + (c - u) * scale)
        .collect())
}

/// Multi-condition guidance (compositional, Liu et al. 2022):
/// `uncond + sum_i w_i * (cond_i - uncond)`, with the sum accumulated in condition order before it
/// is added to `uncond`, as the reference's `stack(...).sum(0)` does.
pub fn guide_multi(
    conditionals: &[&[f32]],
    unconditional: &[f32],
    weights: &[f64],
) -> Result<Vec<f32>, SamplerError> {
    if conditionals.len() != weights.len() {
        return Err(SamplerError::GuidanceWeightCount {
            weights: weights.len(),
            conditions: conditionals.len(),
        });
    }
    for conditional in conditionals {
        if conditional.len() != unconditional.len() {
            return Err(SamplerError::LengthMismatch {
                what: "conditional logits",
                len: conditional.len(),
                expected: unconditional.len(),
            });
        }
    }
    Ok(unconditional
        .iter()
        .enumerate()
        .map(|(index, &u)| {
            let mut guidance_sum = 0.0f32;
            for (conditional, &weight) in conditionals.iter().zip(weights) {
                guidance_sum += (weight as f32) * (conditional[index] - u);
            }
            u + guidance_sum
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_ties() {
        let mut logits = vec![1.0, 3.0, 2.0, 2.0, 0.0];
        filter_top_k_top_p(
            &mut logits,
            5,
            &SamplingOptions {
                top_k: TopK::Count(2),
                top_p: None,
            },
        )
        .unwrap();
        assert_eq!(
            logits,
            vec![f32::NEG_INFINITY, 3.0, 2.0, 2.0, f32::NEG_INFINITY]
        );
    }

    #[test]
    fn top_p_keeps_the_crossing_token() {
        // softmax ≈ [0.665, 0.245, 0.090]; 0.5 is crossed by the first token, so only it stays.
        let mut logits = vec![2.0, 1.0, 0.0];
        filter_top_k_top_p(
            &mut logits,
            3,
            &SamplingOptions {
                top_k: TopK::Disabled,
                top_p: Some(0.5),
            },
        )
        .unwrap();
        assert_eq!(logits, vec![2.0, f32::NEG_INFINITY, f32::NEG_INFINITY]);
        let mut logits = vec![2.0, 1.0, 0.0];
        filter_top_k_top_p(
            &mut logits,
            3,
            &SamplingOptions {
                top_k: TopK::Disabled,
                top_p: Some(0.8),
            },
        )
        .unwrap();
        assert_eq!(logits, vec![2.0, 1.0, f32::NEG_INFINITY]);
    }

    #[test]
    fn tiny_top_k_fraction_is_an_error() {
        let mut logits = vec![0.0; 10];
        assert_eq!(
            filter_top_k_top_p(
                &mut logits,
                10,
                &SamplingOptions {
                    top_k: TopK::Fraction(0.05),
                    top_p: None
                }
            ),
            Err(SamplerError::TopKKeepsNothing {
                fraction: 0.05,
                vocab: 10
            })
        );
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(
            argmax_rows(&[1.0, 5.0, 5.0, 0.0, 0.0, 0.0], 3).unwrap(),
            vec![1, 0]
        );
        assert!(matches!(
            argmax_rows(&[1.0; 5], 3),
            Err(SamplerError::RaggedLogits { .. })
        ));
    }

    #[test]
    fn argmax_threshold() {
        assert!(is_argmax_temperature(0.0));
        assert!(is_argmax_temperature(1e-10));
        assert!(!is_argmax_temperature(0.01));
    }

    #[test]
    fn multi_guidance_with_one_condition_is_plain_guidance() {
        let cond = [1.0f32, -2.0, 0.5];
        let uncond = [0.25f32, 1.0, -0.5];
        assert_eq!(
            guide_multi(&[&cond], &uncond, &[3.0]).unwrap(),
            guide(&cond, &uncond, 3.0).unwrap()
        );
        let two = guide_multi(&[&cond, &uncond], &uncond, &[2.0, 5.0]).unwrap();
        assert_eq!(two, guide(&cond, &uncond, 2.0).unwrap());
        assert!(matches!(
            guide_multi(&[&cond], &uncond, &[1.0, 2.0]),
            Err(SamplerError::GuidanceWeightCount { .. })
        ));
    }
}
