//! Shapes-world images as tokenizer training data, pre-processed as the 4M tokenizers expect:
//! RGB and normals mapped to [-1, 1] (`(x − 0.5) / 0.5`), depth by the reference's truncated
//! standardisation, semseg as class ids (the world's 6 classes, no shift). Images come from a
//! dataset written by `tessera world dataset` or are rendered from seeds, and may be
//! average-pooled (semseg: nearest) to a smaller training size.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use tessera_world::{Dataset, IMAGE_SIZE, ImageModality};

use crate::error::{Result, TrainError};
use crate::tokenizer_config::{TokDomain, WORLD_CLASSES};

/// One pre-processed training image.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSample {
    /// `(C, H, W)` row-major values.
    Image { channels: usize, values: Vec<f32> },
    /// `(H, W)` class ids.
    Classes(Vec<u32>),
}

/// Training images of one domain at one size, held in memory.
#[derive(Debug, Clone)]
pub struct ImageDataset {
    pub domain: TokDomain,
    pub size: usize,
    pub samples: Vec<ImageSample>,
}

pub(crate) fn modality(domain: TokDomain) -> ImageModality {
    match domain {
        TokDomain::Rgb => ImageModality::Rgb,
        TokDomain::Depth => ImageModality::Depth,
        TokDomain::Normal => ImageModality::Normal,
        TokDomain::Semseg => ImageModality::Semseg,
    }
}

impl ImageDataset {
    /// Every scene of a world dataset directory.
    pub fn from_world_dir(dir: &Path, domain: TokDomain, size: usize) -> Result<Self> {
        let dataset = Dataset::open(dir)?;
        let samples = (0..dataset.len())
            .map(|i| {
                let bytes = dataset.image_bytes(modality(domain), i)?;
                preprocess(domain, bytes, size).map_err(|reason| TrainError::InvalidSample {
                    index: i,
                    domain: domain.name().into(),
                    reason,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            domain,
            size,
            samples,
        })
    }

    /// Scenes `first_seed .. first_seed + count`, rendered now.
    pub fn from_scenes(
        domain: TokDomain,
        size: usize,
        first_seed: u64,
        count: usize,
    ) -> Result<Self> {
        let samples = (0..count)
            .map(|i| {
                let scene = tessera_world::generate_scene(first_seed + i as u64)?;
                let bytes = modality(domain).scene_bytes(&scene);
                preprocess(domain, &bytes, size).map_err(|reason| TrainError::InvalidSample {
                    index: i,
                    domain: domain.name().into(),
                    reason,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            domain,
            size,
            samples,
        })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The samples at `indices` as one batch: `(B, C, H, W)` in `dtype`, or `(B, H, W)` U32 ids.
    pub fn batch(&self, indices: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let s = self.size;
        let b = indices.len();
        match self.samples.first() {
            Some(ImageSample::Image { channels, .. }) => {
                let mut all = Vec::with_capacity(b * channels * s * s);
                for &i in indices {
                    if let ImageSample::Image { values, .. } = &self.samples[i] {
                        all.extend_from_slice(values);
                    }
                }
                Ok(Tensor::from_vec(all, (b, *channels, s, s), device)?.to_dtype(dtype)?)
            }
            Some(ImageSample::Classes(_)) => {
                let mut all = Vec::with_capacity(b * s * s);
                for &i in indices {
                    if let ImageSample::Classes(ids) = &self.samples[i] {
                        all.extend_from_slice(ids);
                    }
                }
                Ok(Tensor::from_vec(all, (b, s, s), device)?)
            }
            None => Err(TrainError::EmptyDataset),
        }
    }
}

/// A world image as stored (`ImageModality` bytes) → the tokenizer's input at `size`.
pub fn preprocess(
    domain: TokDomain,
    bytes: &[u8],
    size: usize,
) -> std::result::Result<ImageSample, String> {
    let n = IMAGE_SIZE;
    if size == 0 || !n.is_multiple_of(size) {
        return Err(format!("training size {size} does not divide {n}"));
    }
    let channels = modality(domain).channels();
    let expected = n * n * channels * modality(domain).element_bytes();
    if bytes.len() != expected {
        return Err(format!("{} bytes, expected {expected}", bytes.len()));
    }
    let factor = n / size;
    // Stored row-major with channels last; read as f64 in `(y, x, c)` order.
    let raw: Vec<f64> = match domain {
        TokDomain::Depth => bytes
            .chunks_exact(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]) as f64 / 65535.0)
            .collect(),
        TokDomain::Semseg => {
            // Nearest: the pixel at the centre of each block, as class ids are not averaged.
            let mut ids = Vec::with_capacity(size * size);
            for y in 0..size {
                for x in 0..size {
                    let id = bytes[(y * factor + factor / 2) * n + x * factor + factor / 2];
                    if id as usize >= WORLD_CLASSES {
                        return Err(format!(
                            "class id {id} is not one of the {WORLD_CLASSES} world classes"
                        ));
                    }
                    ids.push(id as u32);
                }
            }
            return Ok(ImageSample::Classes(ids));
        }
        TokDomain::Rgb | TokDomain::Normal => bytes.iter().map(|&v| v as f64 / 255.0).collect(),
    };
    // Average-pool `factor × factor` blocks into channels-first `(C, size, size)`.
    let mut pooled = vec![0f64; channels * size * size];
    let area = (factor * factor) as f64;
    for y in 0..n {
        for x in 0..n {
            for c in 0..channels {
                pooled[c * size * size + (y / factor) * size + x / factor] +=
                    raw[(y * n + x) * channels + c] / area;
            }
        }
    }
    let values: Vec<f32> = match domain {
        TokDomain::Depth => truncated_standardise(&pooled)?,
        _ => pooled.iter().map(|v| ((v - 0.5) / 0.5) as f32).collect(),
    };
    Ok(ImageSample::Image { channels, values })
}

/// The reference's depth normalisation: mean and unbiased variance of the values left after
/// dropping the lowest and highest 10 %, then `(d − mean) / sqrt(var + 1e-6)`.
pub fn truncated_standardise(values: &[f64]) -> std::result::Result<Vec<f32>, String> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let kept = &sorted[(n as f64 * 0.1) as usize..(n as f64 * 0.9) as usize];
    if kept.len() < 2 {
        return Err(format!("{n} depth values are too few to standardise"));
    }
    let mean = kept.iter().sum::<f64>() / kept.len() as f64;
    let var = kept.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (kept.len() - 1) as f64;
    let scale = (var + 1e-6).sqrt();
    Ok(values.iter().map(|v| ((v - mean) / scale) as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_standardisation_centres_the_middle_values() {
        let values: Vec<f64> = (0..100).map(|i| i as f64).collect();
        let out = truncated_standardise(&values).unwrap();
        // Kept: 10..90, mean 49.5.
        assert!((out[49] + out[50]).abs() < 1e-6);
        let sd = (((10..90).map(|i| (i as f64 - 49.5).powi(2)).sum::<f64>() / 79.0) + 1e-6).sqrt();
        assert!((out[99] as f64 - 49.5 / sd).abs() < 1e-5);
    }

    #[test]
    fn pooled_rgb_is_in_minus_one_to_one_and_semseg_keeps_world_ids() {
        let scene = tessera_world::generate_scene(3).unwrap();
        let rgb = preprocess(TokDomain::Rgb, &ImageModality::Rgb.scene_bytes(&scene), 32).unwrap();
        let ImageSample::Image { channels, values } = rgb else {
            panic!("rgb is an image")
        };
        assert_eq!((channels, values.len()), (3, 3 * 32 * 32));
        assert!(values.iter().all(|v| (-1.0..=1.0).contains(v)));
        let sem = preprocess(
            TokDomain::Semseg,
            &ImageModality::Semseg.scene_bytes(&scene),
            56,
        )
        .unwrap();
        let ImageSample::Classes(ids) = sem else {
            panic!("semseg is classes")
        };
        assert_eq!(ids.len(), 56 * 56);
        assert!(ids.iter().all(|&i| (i as usize) < WORLD_CLASSES));
        assert!(
            ids.contains(&0) && ids.contains(&1),
            "floor and wall are visible"
        );
    }
}
