//! Image metadata with 4M's field names (`MetadataTransform`), as raw values: the 4M binning into
//! `v1=<type> v0=<bin>` tokens is the metadata plugin's job.

use serde::{Deserialize, Serialize};

use crate::boxes::BoundingBox;
use crate::render::RenderedImages;
use crate::scene::{IMAGE_SIZE, SemanticClass};

/// The 4M metadata fields that have a meaning in the shapes world. Left out: `aesthetic_score`
/// (no ground truth exists for it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub original_width: u32,
    pub original_height: u32,
    /// Characters, whitespace-separated words and sentences ('.'-terminated) of the caption.
    pub caption_n_chars: u32,
    pub caption_n_words: u32,
    pub caption_n_sentences: u32,
    /// Always 0: the world has no people.
    pub n_humans: u32,
    /// Visible segments: every visible object plus floor and wall where they are visible.
    pub n_sam_instances: u32,
    /// Visible objects (the shapes play the role of COCO "things").
    pub n_coco_instances: u32,
    /// Distinct shape classes among the visible objects.
    pub coco_instance_diversity: u32,
    /// Hasler–Süsstrunk colourfulness: σ_rgyb + 0.3 μ_rgyb with rg = R − G, yb = (R + G)/2 − B.
    pub colorfulness: f64,
    /// Mean luminance (0.299 R + 0.587 G + 0.114 B), 0–255.
    pub brightness: f64,
    /// Standard deviation of luminance, 0–127.5.
    pub contrast: f64,
    /// Mean HSV saturation scaled to 0–255.
    pub saturation: f64,
    /// Shannon entropy in bits of the 256-bin luminance histogram.
    pub entropy: f64,
    /// Fraction of pixels showing floor.
    pub walkability: f64,
    /// Fraction of pixels showing objects.
    pub objectness: f64,
    /// Distinct semantic classes present in the image.
    pub semantic_diversity: u32,
    /// Spherical variance of the camera-frame normals: 1 − |mean unit normal|, in [0, 1].
    pub geometric_complexity: f64,
    /// Fraction of the objects' projected area hidden behind other objects:
    /// 1 − (visible object pixels) / (pixels whose ray hits any object anywhere along it, per object).
    pub occlusion_score: f64,
    /// Always 0: no watermarks are drawn.
    pub watermark_score: f64,
}

/// Computes the metadata of a rendered scene.
pub fn compute_metadata(images: &RenderedImages, boxes: &[BoundingBox], caption: &str) -> Metadata {
    let pixel_count = images.semseg.len() as f64;

    let mut luminance_histogram = [0u32; 256];
    let (mut luminance_sum, mut luminance_square_sum) = (0.0f64, 0.0f64);
    let (mut rg_sum, mut rg_square_sum, mut yb_sum, mut yb_square_sum) =
        (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let mut saturation_sum = 0.0f64;
    for pixel in images.rgb.chunks_exact(3) {
        let (red, green, blue) = (pixel[0] as f64, pixel[1] as f64, pixel[2] as f64);
        let luminance = 0.299 * red + 0.587 * green + 0.114 * blue;
        luminance_histogram[(luminance.clamp(0.0, 255.0) + 0.5) as usize] += 1;
        luminance_sum += luminance;
        luminance_square_sum += luminance * luminance;
        let rg = red - green;
        let yb = 0.5 * (red + green) - blue;
        rg_sum += rg;
        rg_square_sum += rg * rg;
        yb_sum += yb;
        yb_square_sum += yb * yb;
        let max = red.max(green).max(blue);
        let min = red.min(green).min(blue);
        saturation_sum += if max > 0.0 {
            (max - min) / max * 255.0
        } else {
            0.0
        };
    }
    let mean = |sum: f64| sum / pixel_count;
    let deviation = |sum: f64, square_sum: f64| {
        (square_sum / pixel_count - mean(sum).powi(2))
            .max(0.0)
            .sqrt()
    };
    let colorfulness = (deviation(rg_sum, rg_square_sum).powi(2)
        + deviation(yb_sum, yb_square_sum).powi(2))
    .sqrt()
        + 0.3 * (mean(rg_sum).powi(2) + mean(yb_sum).powi(2)).sqrt();
    let entropy = luminance_histogram
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let probability = count as f64 / pixel_count;
            -probability * probability.log2()
        })
        .sum::<f64>();

    let mut class_counts = [0u32; SemanticClass::ALL.len()];
    for &class_id in &images.semseg {
        class_counts[class_id as usize] += 1;
    }
    let floor_pixels = class_counts[SemanticClass::Floor.id() as usize];
    let wall_pixels = class_counts[SemanticClass::Wall.id() as usize];
    let object_pixels = images.semseg.len() as u32 - floor_pixels - wall_pixels;

    let mut labels: Vec<&str> = boxes
        .iter()
        .map(|bounding_box| bounding_box.label.as_str())
        .collect();
    labels.sort_unstable();
    labels.dedup();

    let mut normal_sum = [0.0f64; 3];
    for normal in images.normals.chunks_exact(3) {
        for axis in 0..3 {
            normal_sum[axis] += normal[axis] as f64;
        }
    }
    let mean_normal_length = normal_sum
        .iter()
        .map(|sum| (sum / pixel_count).powi(2))
        .sum::<f64>()
        .sqrt();

    let amodal: u32 = images.amodal_pixels.iter().sum();
    let visible: u32 = images.visible_pixels.iter().sum();
    let occlusion_score = if amodal > 0 {
        1.0 - visible as f64 / amodal as f64
    } else {
        0.0
    };

    Metadata {
        original_width: IMAGE_SIZE as u32,
        original_height: IMAGE_SIZE as u32,
        caption_n_chars: caption.chars().count() as u32,
        caption_n_words: caption.split_whitespace().count() as u32,
        caption_n_sentences: caption.matches('.').count() as u32,
        n_humans: 0,
        n_sam_instances: boxes.len() as u32 + (floor_pixels > 0) as u32 + (wall_pixels > 0) as u32,
        n_coco_instances: boxes.len() as u32,
        coco_instance_diversity: labels.len() as u32,
        colorfulness,
        brightness: mean(luminance_sum),
        contrast: deviation(luminance_sum, luminance_square_sum),
        saturation: mean(saturation_sum),
        entropy,
        walkability: floor_pixels as f64 / pixel_count,
        objectness: object_pixels as f64 / pixel_count,
        semantic_diversity: class_counts.iter().filter(|&&count| count > 0).count() as u32,
        geometric_complexity: 1.0 - mean_normal_length,
        occlusion_score,
        watermark_score: 0.0,
    }
}
