//! Trivial baselines, computed from training scenes: what a model that ignores its input could
//! predict at best with simple statistics. A trained model must beat each one clearly.

use tessera_world::{BoundingBox, SceneModalities, generate_scene};

use crate::EvalError;
use crate::caption_checks::stated_objects;
use crate::metrics::LabelledBox;

/// Per-pixel statistics of the training scenes (all images have the world's fixed size).
#[derive(Debug, Clone)]
pub struct Priors {
    /// How many scenes the statistics come from.
    pub scenes: usize,
    /// Mean metric depth per pixel.
    pub mean_depth: Vec<f32>,
    /// Mean normal per pixel, renormalised to unit length.
    pub mean_normal: Vec<[f64; 3]>,
    /// Most frequent class per pixel.
    pub majority_class: Vec<u8>,
    /// Mean colour per pixel (8-bit).
    pub mean_rgb: Vec<u8>,
    /// One box per shape class at that class's mean normalised bounds.
    pub mean_boxes: Vec<LabelledBox>,
    /// The RGB images of the first [`SAMPLE_IMAGES`] scenes: plausible images that ignore the
    /// input (the baseline of caption agreement).
    pub sample_images: Vec<Vec<u8>>,
    /// The objects the captions of those same scenes state: an output that ignores its own
    /// caption agrees with these as well as with its own (the baseline of conditioning).
    pub sample_stated: Vec<Vec<BoundingBox>>,
}

/// Training images kept as "an image of another scene" baselines.
pub const SAMPLE_IMAGES: usize = 16;

impl Priors {
    /// Statistics of the scenes with these seeds (rendered here; seeds are never shared with
    /// the evaluation scenes by the caller).
    pub fn from_seeds(seeds: impl IntoIterator<Item = u64>) -> Result<Self, EvalError> {
        let mut scenes = Vec::new();
        for seed in seeds {
            scenes.push(generate_scene(seed).map_err(|source| EvalError::World { seed, source })?);
        }
        Self::from_scenes(&scenes)
    }

    pub fn from_scenes(scenes: &[SceneModalities]) -> Result<Self, EvalError> {
        let first = scenes.first().ok_or(EvalError::NoScenes)?;
        let pixels = first.images.semseg.len();
        let n = scenes.len() as f64;
        let mut depth = vec![0f64; pixels];
        let mut normal = vec![[0f64; 3]; pixels];
        let mut rgb = vec![0f64; 3 * pixels];
        let mut class_counts = vec![[0u32; 256]; pixels];
        let mut box_sums: Vec<(String, [f64; 4], usize)> = Vec::new();
        for scene in scenes {
            let images = &scene.images;
            for p in 0..pixels {
                depth[p] += f64::from(images.depth_metres[p]) / n;
                for c in 0..3 {
                    normal[p][c] += f64::from(images.normals[3 * p + c]);
                    rgb[3 * p + c] += f64::from(images.rgb[3 * p + c]) / n;
                }
                class_counts[p][usize::from(images.semseg[p])] += 1;
            }
            for b in &scene.boxes {
                match box_sums.iter_mut().find(|(label, _, _)| *label == b.label) {
                    Some((_, sum, count)) => {
                        (0..4).for_each(|i| sum[i] += b.normalized_box[i]);
                        *count += 1;
                    }
                    None => box_sums.push((b.label.clone(), b.normalized_box, 1)),
                }
            }
        }
        box_sums.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Priors {
            scenes: scenes.len(),
            mean_depth: depth.into_iter().map(|d| d as f32).collect(),
            mean_normal: normal
                .into_iter()
                .map(|v| {
                    let length = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
                    if length > 0.0 {
                        v.map(|c| c / length)
                    } else {
                        v
                    }
                })
                .collect(),
            majority_class: class_counts
                .iter()
                .map(|counts| {
                    // The first of the most frequent classes, so ties are deterministic.
                    let best = counts.iter().copied().max().unwrap_or(0);
                    counts.iter().position(|&c| c == best).unwrap_or(0) as u8
                })
                .collect(),
            mean_rgb: rgb.into_iter().map(|v| v.round() as u8).collect(),
            mean_boxes: box_sums
                .into_iter()
                .map(|(label, sum, count)| LabelledBox::new(label, sum.map(|v| v / count as f64)))
                .collect(),
            sample_images: scenes
                .iter()
                .take(SAMPLE_IMAGES)
                .map(|s| s.images.rgb.clone())
                .collect(),
            sample_stated: scenes
                .iter()
                .take(SAMPLE_IMAGES)
                .map(|s| stated_objects(s).into_iter().cloned().collect())
                .collect(),
        })
    }
}

/// The world's boxes as labelled boxes.
pub fn labelled_boxes(scene: &SceneModalities) -> Vec<LabelledBox> {
    scene
        .boxes
        .iter()
        .map(|b| LabelledBox::new(b.label.clone(), b.normalized_box))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{depth_abs_rel, mean_iou, normal_angle_degrees};

    #[test]
    fn priors_are_per_pixel_statistics_of_the_scenes() {
        let scenes: Vec<_> = (0..4).map(|s| generate_scene(s).unwrap()).collect();
        let priors = Priors::from_scenes(&scenes).unwrap();
        assert_eq!(priors.scenes, 4);
        let pixels = scenes[0].images.semseg.len();
        assert_eq!(priors.mean_depth.len(), pixels);
        let p = pixels / 2 + 17;
        let mean: f64 = scenes
            .iter()
            .map(|s| f64::from(s.images.depth_metres[p]))
            .sum::<f64>()
            / 4.0;
        assert!((f64::from(priors.mean_depth[p]) - mean).abs() < 1e-5);
        // Each scene's own maps beat the priors on that scene.
        let own = &scenes[0].images;
        assert!(depth_abs_rel(&own.depth_metres, &own.depth_metres).unwrap() < 1e-9);
        assert!(mean_iou(&priors.majority_class, &own.semseg).unwrap() < 1.0);
        let truth: Vec<[f64; 3]> = own
            .normals
            .chunks_exact(3)
            .map(|n| [f64::from(n[0]), f64::from(n[1]), f64::from(n[2])])
            .collect();
        assert!(normal_angle_degrees(&priors.mean_normal, &truth).unwrap() > 1.0);
        // Every label seen gets one mean box, sorted by label.
        let labels: Vec<&str> = priors.mean_boxes.iter().map(|b| b.label.as_str()).collect();
        let mut sorted = labels.clone();
        sorted.sort();
        assert_eq!(labels, sorted);
        assert!(!labels.is_empty());
        assert!(matches!(Priors::from_scenes(&[]), Err(EvalError::NoScenes)));
    }
}
