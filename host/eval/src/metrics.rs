//! The metrics, as pure functions of a prediction and the ground truth of one image.
//!
//! Depth is compared after a per-image least-squares scale and shift: 4M's depth tokenizer works on
//! standardised depth, so a generated map has no metric unit, and the alignment gives every method
//! (baselines included) the same chance.

use crate::EvalError;

fn same_len(what: &'static str, expected: usize, found: usize) -> Result<(), EvalError> {
    if expected != found {
        return Err(EvalError::LengthMismatch {
            what,
            expected,
            found,
        });
    }
    Ok(())
}

/// Mean absolute relative error `|d̂ − d| / d` over the pixels with positive true depth, after
/// aligning the prediction to the truth with the least-squares scale and shift.
pub fn depth_abs_rel(predicted: &[f32], truth: &[f32]) -> Result<f64, EvalError> {
    same_len("depth map", truth.len(), predicted.len())?;
    let pairs: Vec<(f64, f64)> = predicted
        .iter()
        .zip(truth)
        .filter(|(p, t)| p.is_finite() && t.is_finite() && **t > 0.0)
        .map(|(&p, &t)| (f64::from(p), f64::from(t)))
        .collect();
    if pairs.is_empty() {
        return Err(EvalError::NothingToCompare { what: "depth map" });
    }
    let n = pairs.len() as f64;
    let (mean_p, mean_t) = pairs
        .iter()
        .fold((0.0, 0.0), |(a, b), (p, t)| (a + p / n, b + t / n));
    let covariance: f64 = pairs.iter().map(|(p, t)| (p - mean_p) * (t - mean_t)).sum();
    let variance: f64 = pairs.iter().map(|(p, _)| (p - mean_p).powi(2)).sum();
    // A constant prediction can only be shifted: it becomes the mean depth.
    let scale = if variance > 0.0 {
        covariance / variance
    } else {
        0.0
    };
    let shift = mean_t - scale * mean_p;
    Ok(pairs
        .iter()
        .map(|(p, t)| (scale * p + shift - t).abs() / t)
        .sum::<f64>()
        / n)
}

/// Unit normals from their 8-bit RGB encoding `round((n + 1) / 2 · 255)`.
pub fn normals_from_rgb(rgb: &[u8]) -> Vec<[f64; 3]> {
    rgb.chunks_exact(3)
        .map(|px| {
            let v = [px[0], px[1], px[2]].map(|c| f64::from(c) / 255.0 * 2.0 - 1.0);
            let length = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            if length > 0.0 {
                v.map(|c| c / length)
            } else {
                v
            }
        })
        .collect()
}

/// Mean angle in degrees between predicted and true unit normals (a zero prediction counts 90°).
pub fn normal_angle_degrees(predicted: &[[f64; 3]], truth: &[[f64; 3]]) -> Result<f64, EvalError> {
    same_len("normal map", truth.len(), predicted.len())?;
    if truth.is_empty() {
        return Err(EvalError::NothingToCompare { what: "normal map" });
    }
    let total: f64 = predicted
        .iter()
        .zip(truth)
        .map(|(p, t)| {
            let cos = p[0] * t[0] + p[1] * t[1] + p[2] * t[2];
            cos.clamp(-1.0, 1.0).acos().to_degrees()
        })
        .sum();
    Ok(total / truth.len() as f64)
}

/// Per-class pixel counts of one prediction against its truth: the intersection and the union
/// of each class's predicted and true pixels. Summed over images, they give the dataset-level
/// mean IoU that segmentation benchmarks report.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassOverlap {
    // Boxed: evaluations hold one per scene and metric, moved around by value.
    intersection: Box<[u64; 256]>,
    union: Box<[u64; 256]>,
}

impl Default for ClassOverlap {
    fn default() -> Self {
        ClassOverlap {
            intersection: Box::new([0; 256]),
            union: Box::new([0; 256]),
        }
    }
}

impl ClassOverlap {
    /// Adds another image's counts.
    pub fn add(&mut self, other: &ClassOverlap) {
        for c in 0..256 {
            self.intersection[c] += other.intersection[c];
            self.union[c] += other.union[c];
        }
    }

    /// The mean over the classes present in the truth or the prediction of intersection over
    /// union; `None` when no class is present.
    pub fn mean_iou(&self) -> Option<f64> {
        let ious: Vec<f64> = (0..256)
            .filter(|&c| self.union[c] > 0)
            .map(|c| self.intersection[c] as f64 / self.union[c] as f64)
            .collect();
        (!ious.is_empty()).then(|| ious.iter().sum::<f64>() / ious.len() as f64)
    }
}

/// The per-class overlaps of one class map against its truth.
pub fn class_overlap(predicted: &[u8], truth: &[u8]) -> Result<ClassOverlap, EvalError> {
    same_len("segmentation", truth.len(), predicted.len())?;
    if truth.is_empty() {
        return Err(EvalError::NothingToCompare {
            what: "segmentation",
        });
    }
    let mut overlap = ClassOverlap::default();
    for (&p, &t) in predicted.iter().zip(truth) {
        overlap.union[usize::from(p)] += 1;
        if p == t {
            overlap.intersection[usize::from(p)] += 1;
        } else {
            overlap.union[usize::from(t)] += 1;
        }
    }
    Ok(overlap)
}

/// Mean intersection over union of one image, over the classes present in its truth or its
/// prediction.
pub fn mean_iou(predicted: &[u8], truth: &[u8]) -> Result<f64, EvalError> {
    class_overlap(predicted, truth)?
        .mean_iou()
        .ok_or(EvalError::NothingToCompare {
            what: "segmentation",
        })
}

/// A labelled box in normalised `[xmin, ymin, xmax, ymax]` coordinates.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabelledBox {
    pub label: String,
    pub bounds: [f64; 4],
}

impl LabelledBox {
    pub fn new(label: impl Into<String>, bounds: [f64; 4]) -> Self {
        LabelledBox {
            label: label.into(),
            bounds,
        }
    }

    /// Intersection over union with another box (0 when either is empty).
    pub fn iou(&self, other: &LabelledBox) -> f64 {
        let [ax0, ay0, ax1, ay1] = self.bounds;
        let [bx0, by0, bx1, by1] = other.bounds;
        let area = |x0: f64, y0: f64, x1: f64, y1: f64| (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
        let inter = area(ax0.max(bx0), ay0.max(by0), ax1.min(bx1), ay1.min(by1));
        let union = area(ax0, ay0, ax1, ay1) + area(bx0, by0, bx1, by1) - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }
}

/// How many true boxes are matched by a predicted box of the same label with IoU at least
/// `threshold`; each predicted box matches at most one true box (greedy, best IoU first).
pub fn matched_boxes(predicted: &[LabelledBox], truth: &[LabelledBox], threshold: f64) -> usize {
    let mut candidates: Vec<(f64, usize, usize)> = Vec::new();
    for (ti, t) in truth.iter().enumerate() {
        for (pi, p) in predicted.iter().enumerate() {
            let iou = p.iou(t);
            if p.label == t.label && iou >= threshold {
                candidates.push((iou, ti, pi));
            }
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut truth_used = vec![false; truth.len()];
    let mut predicted_used = vec![false; predicted.len()];
    let mut matched = 0;
    for (_, ti, pi) in candidates {
        if !truth_used[ti] && !predicted_used[pi] {
            truth_used[ti] = true;
            predicted_used[pi] = true;
            matched += 1;
        }
    }
    matched
}

/// Peak signal-to-noise ratio of 8-bit images in dB (capped at 99 for identical images).
pub fn psnr(predicted: &[u8], truth: &[u8]) -> Result<f64, EvalError> {
    same_len("image", truth.len(), predicted.len())?;
    if truth.is_empty() {
        return Err(EvalError::NothingToCompare { what: "image" });
    }
    let mse = predicted
        .iter()
        .zip(truth)
        .map(|(&p, &t)| (f64::from(p) - f64::from(t)).powi(2))
        .sum::<f64>()
        / truth.len() as f64;
    Ok(if mse == 0.0 {
        99.0
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_is_compared_up_to_scale_and_shift() {
        let truth = [1.0, 2.0, 3.0, 4.0];
        let standardised = [-1.5, -0.5, 0.5, 1.5];
        assert!(depth_abs_rel(&standardised, &truth).unwrap() < 1e-12);
        // A constant map becomes the mean depth: |2.5 - d| / d averaged.
        let constant = depth_abs_rel(&[7.0; 4], &truth).unwrap();
        let expected = (1.5 / 1.0 + 0.5 / 2.0 + 0.5 / 3.0 + 1.5 / 4.0) / 4.0;
        assert!((constant - expected).abs() < 1e-12, "{constant}");
        // Pixels without a positive true depth are left out.
        assert!(depth_abs_rel(&[0.0, 1.0, 2.0], &[0.0, 1.0, 2.0]).unwrap() < 1e-12);
        let err = depth_abs_rel(&[1.0], &[1.0, 2.0]).unwrap_err();
        assert_eq!(err.to_string(), "depth map: expected 2 values, found 1");
        let err = depth_abs_rel(&[1.0], &[0.0]).unwrap_err();
        assert!(err.to_string().contains("nothing to compare"), "{err}");
    }

    #[test]
    fn normals_angles_and_their_encoding() {
        let up = normals_from_rgb(&[128, 255, 128]);
        assert!((up[0][1] - 1.0).abs() < 1e-4, "{:?}", up);
        let towards = [[0.0, 0.0, 1.0]];
        let right = [[1.0, 0.0, 0.0]];
        assert!((normal_angle_degrees(&right, &towards).unwrap() - 90.0).abs() < 1e-9);
        assert!(normal_angle_degrees(&towards, &towards).unwrap().abs() < 1e-6);
        assert!(normal_angle_degrees(&[], &[]).is_err());
    }

    #[test]
    fn mean_iou_averages_the_classes_present() {
        let truth = [0, 0, 1, 2];
        let predicted = [0, 1, 0, 2];
        let expected = (1.0 / 3.0 + 0.0 / 2.0 + 1.0) / 3.0;
        // Class 0: truth {0,1}, pred {0,2} -> inter 1, union 3; class 1: truth {2}, pred {1} ->
        // inter 0, union 2; class 2: 1 of 1.
        assert!((mean_iou(&predicted, &truth).unwrap() - expected).abs() < 1e-12);
        assert_eq!(mean_iou(&truth, &truth).unwrap(), 1.0);
    }

    #[test]
    fn boxes_match_once_by_label_and_iou() {
        let truth = [
            LabelledBox::new("cube", [0.0, 0.0, 0.5, 0.5]),
            LabelledBox::new("cone", [0.5, 0.5, 1.0, 1.0]),
        ];
        let predicted = [
            LabelledBox::new("cube", [0.0, 0.0, 0.5, 0.4]), // IoU 0.8 with the cube
            LabelledBox::new("cube", [0.0, 0.0, 0.5, 0.5]), // IoU 1 with the cube
            LabelledBox::new("sphere", [0.5, 0.5, 1.0, 1.0]), // right place, wrong label
        ];
        assert_eq!(matched_boxes(&predicted, &truth, 0.5), 1);
        assert!((predicted[0].iou(&truth[0]) - 0.8).abs() < 1e-12);
        assert_eq!(matched_boxes(&[], &truth, 0.5), 0);
    }

    #[test]
    fn psnr_of_known_errors() {
        assert_eq!(psnr(&[9, 9], &[9, 9]).unwrap(), 99.0);
        // MSE 1 -> 20 log10(255).
        let value = psnr(&[1, 2], &[0, 3]).unwrap();
        assert!((value - 20.0 * 255f64.log10()).abs() < 1e-9, "{value}");
    }
}
