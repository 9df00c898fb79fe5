//! Image-token domains for core training: shapes-world images encoded by trained tokenizers at
//! the domains' native 224-pixel size, pre-processed as the image plugins do at inference, so the
//! core learns the token grids it will later be given and asked for.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use tessera_model::LoadOptions;
use tessera_model::vq::VqTokenizer;
use tessera_world::{IMAGE_SIZE, SceneModalities};

use crate::data::DomainTokens;
use crate::error::{Result, TrainError};
use crate::image_data::{ImageSample, modality, preprocess};
use crate::tokenizer_config::TokDomain;

/// Side of the token grid of 4M's `@224` image domains (196 tokens).
pub const DOMAIN_GRID: usize = 14;

/// Trained tokenizers by image domain.
pub struct ImageTokenizers {
    entries: Vec<(TokDomain, VqTokenizer)>,
}

impl ImageTokenizers {
    /// Loads a tokenizer (directory or `.safetensors`, as `VqTokenizer::load` reads) per domain;
    /// domains other than the four image domains are refused.
    pub fn load(dirs: &BTreeMap<String, PathBuf>) -> Result<Self> {
        let mut entries = Vec::new();
        for (name, dir) in dirs {
            let domain = TokDomain::parse(name)?;
            let tokenizer = VqTokenizer::load(dir, &LoadOptions::default()).map_err(|e| {
                TrainError::InvalidConfig {
                    field: format!("tokenizer {name}"),
                    reason: format!("{}: {e}", dir.display()),
                }
            })?;
            let patch = tokenizer.config().patch_size;
            if patch * DOMAIN_GRID != IMAGE_SIZE {
                return Err(TrainError::InvalidConfig {
                    field: format!("tokenizer {name}"),
                    reason: format!(
                        "its patch size is {patch}, but {name} holds {DOMAIN_GRID}x{DOMAIN_GRID} \
                         tokens of a {IMAGE_SIZE}-pixel image (patch {})",
                        IMAGE_SIZE / DOMAIN_GRID
                    ),
                });
            }
            entries.push((domain, tokenizer));
        }
        Ok(Self { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each domain with its vocabulary (the tokenizer's codebook size).
    pub fn vocab_sizes(&self) -> Vec<(String, usize)> {
        self.entries
            .iter()
            .map(|(d, t)| (d.name().to_owned(), t.codebook_size()))
            .collect()
    }

    /// The token grid of every domain for one scene (`index`: its place in the dataset, for
    /// errors).
    pub fn encode_scene(
        &self,
        index: usize,
        scene: &SceneModalities,
    ) -> Result<Vec<(String, DomainTokens)>> {
        let mut grids = self.encode_scenes(index, std::slice::from_ref(scene))?;
        Ok(grids.pop().unwrap_or_default())
    }

    /// [`Self::encode_scene`] for consecutive scenes (`first_index` is the first one's place in
    /// the dataset), one tokenizer pass per domain for all of them: a small tokenizer on one image
    /// spends most of its time in per-operation overhead.
    pub fn encode_scenes(
        &self,
        first_index: usize,
        scenes: &[SceneModalities],
    ) -> Result<Vec<Vec<(String, DomainTokens)>>> {
        let mut per_scene = vec![Vec::with_capacity(self.entries.len()); scenes.len()];
        if scenes.is_empty() {
            return Ok(per_scene);
        }
        let n = IMAGE_SIZE;
        for (domain, tokenizer) in &self.entries {
            let mut pixels = Vec::new();
            let mut classes = Vec::new();
            let mut channels = 0;
            for (offset, scene) in scenes.iter().enumerate() {
                let bytes = modality(*domain).scene_bytes(scene);
                let sample =
                    preprocess(*domain, &bytes, n).map_err(|reason| TrainError::InvalidSample {
                        index: first_index + offset,
                        domain: domain.name().into(),
                        reason,
                    })?;
                match sample {
                    ImageSample::Image {
                        channels: c,
                        values,
                    } => {
                        channels = c;
                        pixels.extend(values);
                    }
                    ImageSample::Classes(ids) => classes.extend(ids.into_iter().map(i64::from)),
                }
            }
            let batch = scenes.len();
            let input = if classes.is_empty() {
                Tensor::from_vec(pixels, (batch, channels, n, n), &Device::Cpu)?
            } else {
                Tensor::from_vec(classes, (batch, n, n), &Device::Cpu)?
            };
            let ids = tokenizer
                .encode(&input)?
                .flatten_all()?
                .to_dtype(candle_core::DType::I64)?
                .to_vec1::<i64>()?;
            // A tokenizer giving no ids leaves the domain out, which the sample check reports.
            let grid = (ids.len() / batch).max(1);
            for (sample, ids) in per_scene.iter_mut().zip(ids.chunks(grid)) {
                sample.push((
                    domain.name().to_owned(),
                    DomainTokens::Grid(ids.iter().map(|&v| v as u32).collect()),
                ));
            }
        }
        Ok(per_scene)
    }
}
