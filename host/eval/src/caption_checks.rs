//! Whether generated outputs agree with a scene's caption: the stated objects' shapes among
//! generated boxes, the left/right relations between them, and the stated colours in a
//! generated image. The caption states the objects with at least
//! [`tessera_world::caption::MIN_MENTIONED_PIXELS`] visible pixels; their truth boxes stand in for
//! the parsed caption.

use tessera_world::caption::{MIN_HORIZONTAL_SEPARATION, MIN_MENTIONED_PIXELS};
use tessera_world::scene::NamedColour;
use tessera_world::{BoundingBox, IMAGE_SIZE, SceneModalities};

use crate::metrics::LabelledBox;

/// The objects the scene's caption mentions, left to right.
pub fn stated_objects(scene: &SceneModalities) -> Vec<&BoundingBox> {
    let mut stated: Vec<&BoundingBox> = scene
        .boxes
        .iter()
        .filter(|b| b.visible_pixels >= MIN_MENTIONED_PIXELS)
        .collect();
    stated.sort_by(|a, b| a.centre_x().total_cmp(&b.centre_x()));
    stated
}

fn centre_x(b: &LabelledBox) -> f64 {
    (b.bounds[0] + b.bounds[2]) / 2.0
}

/// Pairs each stated object with a generated box of the same shape: within one shape, left to
/// right in both lists. Entry `i` is the generated box of stated object `i`, if any.
fn pair_by_shape(stated: &[&BoundingBox], generated: &[LabelledBox]) -> Vec<Option<usize>> {
    let mut pairs = vec![None; stated.len()];
    let mut labels: Vec<&str> = stated.iter().map(|b| b.label.as_str()).collect();
    labels.sort_unstable();
    labels.dedup();
    for label in labels {
        let truth: Vec<usize> = (0..stated.len())
            .filter(|&i| stated[i].label == label)
            .collect();
        let mut made: Vec<usize> = (0..generated.len())
            .filter(|&i| generated[i].label == label)
            .collect();
        made.sort_by(|&a, &b| centre_x(&generated[a]).total_cmp(&centre_x(&generated[b])));
        // With more boxes of a shape than stated, keep the ones spread as the stated objects are:
        // the i-th stated of k takes the generated box at the same rank among m.
        let (k, m) = (truth.len(), made.len());
        for (rank, &t) in truth.iter().enumerate() {
            if m == 0 {
                break;
            }
            if m >= k {
                pairs[t] = Some(made[rank * m / k]);
            } else if rank < m {
                pairs[t] = Some(made[rank]);
            }
        }
    }
    pairs
}

/// The fraction of stated objects that have a generated box of the same shape (each generated box
/// serves one object); 1 for a caption that states no object.
pub fn shape_recall(stated: &[&BoundingBox], generated: &[LabelledBox]) -> f64 {
    if stated.is_empty() {
        return 1.0;
    }
    let found = pair_by_shape(stated, generated)
        .iter()
        .filter(|p| p.is_some())
        .count();
    found as f64 / stated.len() as f64
}

/// Whether `subject` is left of `object` as the world's captions judge it, on normalised boxes.
fn left_of(subject: &[f64; 4], object: &[f64; 4]) -> bool {
    let separation = MIN_HORIZONTAL_SEPARATION / IMAGE_SIZE as f64;
    subject[0] < object[0]
        && subject[2] < object[2]
        && (subject[0] + subject[2]) / 2.0 + separation <= (object[0] + object[2]) / 2.0
}

/// Of the left-of relations that hold between stated objects in the scene, the fraction that also
/// hold between their generated boxes (a missing box fails its relations); `None` when no such
/// relation holds in the scene.
pub fn relation_accuracy(stated: &[&BoundingBox], generated: &[LabelledBox]) -> Option<f64> {
    let pairs = pair_by_shape(stated, generated);
    let (mut holding, mut kept) = (0usize, 0usize);
    for (s, subject) in stated.iter().enumerate() {
        for (o, object) in stated.iter().enumerate() {
            if s == o || !left_of(&subject.normalized_box, &object.normalized_box) {
                continue;
            }
            holding += 1;
            if let (Some(gs), Some(go)) = (pairs[s], pairs[o])
                && left_of(&generated[gs].bounds, &generated[go].bounds)
            {
                kept += 1;
            }
        }
    }
    (holding > 0).then(|| kept as f64 / holding as f64)
}

/// Colours told apart by hue: every world colour but gray (the floor and the wall are gray too).
fn chromatic() -> impl Iterator<Item = NamedColour> {
    NamedColour::ALL
        .into_iter()
        .filter(|&c| c != NamedColour::Gray)
}

/// Pixels below this saturation are taken for the gray room (or a gray object).
const MIN_SATURATION: f64 = 0.35;

/// A colour is present where a [`BLOCK`] x [`BLOCK`] block has at least [`BLOCK_SHARE`] of its
/// pixels of that hue: a coherent patch, which scattered noise never makes.
pub const BLOCK: usize = 4;
const BLOCK_SHARE: usize = 12;

/// Hue in degrees and saturation (HSV) of an 8-bit colour.
fn hue_saturation([r, g, b]: [u8; 3]) -> (f64, f64) {
    let (r, g, b) = (f64::from(r), f64::from(g), f64::from(b));
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    if max <= 0.0 || max == min {
        return (0.0, 0.0);
    }
    let delta = max - min;
    let hue = if max == r {
        60.0 * ((g - b) / delta).rem_euclid(6.0)
    } else if max == g {
        60.0 * ((b - r) / delta + 2.0)
    } else {
        60.0 * ((r - g) / delta + 4.0)
    };
    (hue, delta / max)
}

/// The chromatic world colour of nearest hue, for a saturated enough pixel (shading scales a
/// colour, which keeps its hue; brown is an orange hue between red and yellow).
fn nearest_colour(pixel: [u8; 3]) -> Option<NamedColour> {
    let (hue, saturation) = hue_saturation(pixel);
    if saturation < MIN_SATURATION {
        return None;
    }
    let distance = |colour: NamedColour| {
        let d = (hue - hue_saturation(colour.rgb()).0).abs() % 360.0;
        d.min(360.0 - d)
    };
    chromatic().min_by(|&a, &b| distance(a).total_cmp(&distance(b)))
}

/// The chromatic world colours present in a square RGB image: at least one block of
/// [`BLOCK`] x [`BLOCK`] pixels mostly of their hue.
pub fn colours_present(rgb: &[u8]) -> Vec<NamedColour> {
    let side = ((rgb.len() / 3) as f64).sqrt() as usize;
    let classes: Vec<Option<NamedColour>> = rgb
        .chunks_exact(3)
        .map(|p| nearest_colour([p[0], p[1], p[2]]))
        .collect();
    let mut present = [false; NamedColour::ALL.len()];
    for top in (0..side.saturating_sub(BLOCK - 1)).step_by(BLOCK) {
        for left in (0..side.saturating_sub(BLOCK - 1)).step_by(BLOCK) {
            let mut counts = [0usize; NamedColour::ALL.len()];
            for y in top..top + BLOCK {
                for class in classes[y * side + left..y * side + left + BLOCK]
                    .iter()
                    .flatten()
                {
                    counts[*class as usize] += 1;
                }
            }
            for (colour, &count) in counts.iter().enumerate() {
                present[colour] |= count >= BLOCK_SHARE;
            }
        }
    }
    chromatic().filter(|&c| present[c as usize]).collect()
}

/// How well an image's colours agree with the caption's: the F1 score of the chromatic colours
/// present against those stated (missing a stated colour and showing an unstated one both cost);
/// `None` when the caption states no chromatic colour.
pub fn colour_agreement(stated: &[&BoundingBox], rgb: &[u8]) -> Option<f64> {
    let mut wanted: Vec<NamedColour> = stated
        .iter()
        .filter_map(|b| chromatic().find(|c| c.name() == b.colour))
        .collect();
    wanted.sort_by_key(|c| c.name());
    wanted.dedup();
    if wanted.is_empty() {
        return None;
    }
    let present = colours_present(rgb);
    let both = wanted.iter().filter(|c| present.contains(c)).count();
    Some(2.0 * both as f64 / (wanted.len() + present.len()) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{Priors, labelled_boxes};
    use tessera_world::generate_scene;

    fn mean(values: impl Iterator<Item = f64>) -> f64 {
        let values: Vec<f64> = values.collect();
        values.iter().sum::<f64>() / values.len() as f64
    }

    #[test]
    fn the_true_boxes_agree_with_their_caption() {
        for seed in 0..40 {
            let scene = generate_scene(seed).unwrap();
            let stated = stated_objects(&scene);
            let truth = labelled_boxes(&scene);
            assert_eq!(shape_recall(&stated, &truth), 1.0, "seed {seed}");
            if let Some(accuracy) = relation_accuracy(&stated, &truth) {
                assert_eq!(accuracy, 1.0, "seed {seed}");
            }
        }
    }

    #[test]
    fn missing_or_swapped_boxes_lower_the_scores() {
        let scene = (0..100)
            .map(|seed| generate_scene(seed).unwrap())
            .find(|s| {
                // Distinct shapes, so mirroring cannot re-pair objects.
                let stated = stated_objects(s);
                let mut labels: Vec<&str> = stated.iter().map(|b| b.label.as_str()).collect();
                labels.sort_unstable();
                labels.dedup();
                stated.len() >= 2 && labels.len() == stated.len()
            })
            .expect("a scene with two different shapes");
        let stated = stated_objects(&scene);
        let truth = labelled_boxes(&scene);
        assert!(shape_recall(&stated, &[]) == 0.0);
        let mut mirrored = truth.clone();
        for b in &mut mirrored {
            b.bounds = [
                1.0 - b.bounds[2],
                b.bounds[1],
                1.0 - b.bounds[0],
                b.bounds[3],
            ];
        }
        assert_eq!(shape_recall(&stated, &mirrored), 1.0);
        assert_eq!(relation_accuracy(&stated, &mirrored), Some(0.0));
        assert_eq!(relation_accuracy(&stated, &[]), Some(0.0));
    }

    #[test]
    fn true_images_agree_with_their_colours_and_other_scenes_or_noise_do_not() {
        let scenes: Vec<_> = (0..30).map(|s| generate_scene(s).unwrap()).collect();
        let priors = Priors::from_seeds(100..140).unwrap();
        let score = |image_of: &dyn Fn(usize) -> Vec<u8>| {
            mean(
                scenes
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| colour_agreement(&stated_objects(s), &image_of(i))),
            )
        };
        let truth = score(&|i| scenes[i].images.rgb.clone());
        let other_scenes = score(&|i| priors.sample_images[i % priors.sample_images.len()].clone());
        let mut state = 12345u64;
        let noise: Vec<u8> = (0..224 * 224 * 3)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        let noisy = score(&|_| noise.clone());
        assert!(truth >= 0.95, "true images: {truth}");
        assert!(other_scenes <= 0.5, "other scenes' images: {other_scenes}");
        assert_eq!(noisy, 0.0, "noise");
    }

    #[test]
    fn other_scenes_captions_catch_images_that_ignore_their_own() {
        let scenes: Vec<_> = (0..30).map(|s| generate_scene(s).unwrap()).collect();
        let priors = Priors::from_seeds(100..140).unwrap();
        // Against its own caption and against the training scenes' captions, averaged.
        let scores = |image_of: &dyn Fn(usize) -> Vec<u8>| {
            let own = mean(
                scenes
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| colour_agreement(&stated_objects(s), &image_of(i))),
            );
            let others = mean(scenes.iter().enumerate().flat_map(|(i, _)| {
                let image = image_of(i);
                priors
                    .sample_stated
                    .iter()
                    .filter_map(move |stated| {
                        colour_agreement(&stated.iter().collect::<Vec<_>>(), &image)
                    })
                    .collect::<Vec<_>>()
            }));
            (own, others)
        };
        // A gray room with a 16-pixel block of every colour: what sampling noise in image tokens
        // looks like, whatever the caption.
        let mut patches = NamedColour::Gray.rgb().repeat(224 * 224);
        for (k, colour) in chromatic().enumerate() {
            for y in 0..16 {
                for x in 0..16 {
                    let p = (100 + y) * 224 + 16 * k + x;
                    patches[3 * p..3 * p + 3].copy_from_slice(&colour.rgb());
                }
            }
        }
        let (truth, truth_others) = scores(&|i| scenes[i].images.rgb.clone());
        let (blind, blind_others) = scores(&|_| patches.clone());
        let other_images =
            scores(&|i| priors.sample_images[i % priors.sample_images.len()].clone()).0;
        assert!(
            truth > truth_others + 0.3,
            "true images: {truth} vs {truth_others}"
        );
        assert!(
            (blind - blind_others).abs() < 0.05,
            "caption-blind patches: {blind} vs {blind_others}"
        );
        // The images of other scenes alone would not have caught them.
        assert!(
            blind > other_images,
            "patches {blind}, other scenes' images {other_images}"
        );
    }

    #[test]
    fn hues_name_the_world_colours() {
        for colour in chromatic() {
            assert_eq!(nearest_colour(colour.rgb()), Some(colour), "{colour:?}");
            let shaded = colour.rgb().map(|c| (f64::from(c) * 0.6) as u8);
            assert_eq!(nearest_colour(shaded), Some(colour), "{colour:?} in shade");
        }
        assert_eq!(nearest_colour(NamedColour::Gray.rgb()), None);
    }
}
