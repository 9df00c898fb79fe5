//! The training config of an image tokenizer (VQ-VAE): which domain, the network sizes, the
//! quantizer's EMA / dead-code / commitment settings, optimiser and schedule; built-in presets,
//! and the tokenizer `config.json` it saves (the released layout `VqTokenizer::load` reads).

use std::path::Path;

use serde::{Deserialize, Serialize};
use tessera_model::VqConfig;

use crate::error::{Result, TrainError};
use crate::optim::OptimConfig;

/// The four image domains whose tokenizers train on the shapes world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokDomain {
    Rgb,
    Depth,
    Normal,
    Semseg,
}

/// Classes of the shapes world's semantic maps (floor, wall, sphere, cube, cylinder, cone).
pub const WORLD_CLASSES: usize = 6;

impl TokDomain {
    pub const ALL: [TokDomain; 4] = [Self::Rgb, Self::Depth, Self::Normal, Self::Semseg];

    /// The 4M domain name (`tok_rgb@224`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Rgb => "tok_rgb@224",
            Self::Depth => "tok_depth@224",
            Self::Normal => "tok_normal@224",
            Self::Semseg => "tok_semseg@224",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| TrainError::UnknownDomain {
                domain: format!(
                    "{name} (tokenizers train for {})",
                    Self::ALL.map(|d| d.name()).join(", ")
                ),
            })
    }

    /// Image channels the encoder reads (semseg: the class embedding's width, set separately).
    pub fn image_channels(self) -> usize {
        match self {
            Self::Rgb | Self::Normal => 3,
            Self::Depth => 1,
            Self::Semseg => 0,
        }
    }
}

/// Width, depth and heads of one ViT.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VitDims {
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
}

/// The lucid quantizer's training settings, with the reference `VQ`'s defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizerConfig {
    /// EMA decay of the codebook rows and of the per-code usage (`ema_decay`).
    pub ema_decay: f64,
    /// A code whose EMA usage falls below this is re-initialised from a random encoder output of
    /// the batch (`threshold_ema_dead_code`; 0 disables restarts).
    pub dead_code_threshold: f64,
    /// Weight of `‖sg(q) − z‖²` (`commitment_weight`).
    pub commitment_weight: f64,
}

impl Default for QuantizerConfig {
    fn default() -> Self {
        Self {
            ema_decay: 0.99,
            dead_code_threshold: 0.25,
            commitment_weight: 1.0,
        }
    }
}

/// Everything a tokenizer training run needs besides its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerTrainConfig {
    pub domain: TokDomain,
    /// Side of the square training images (the world renders 224; smaller sizes are
    /// average-pooled, nearest for semseg); must divide 224.
    pub image_size: usize,
    pub patch_size: usize,
    /// Semseg only: width of the class embedding (`n_channels` of the reference).
    #[serde(default)]
    pub class_embed_dim: usize,
    pub encoder: VitDims,
    pub decoder: VitDims,
    pub codebook_size: usize,
    pub latent_dim: usize,
    #[serde(default)]
    pub post_mlp: bool,
    /// Two ConvNeXt blocks after the decoder's unpatchify.
    #[serde(default)]
    pub out_conv: bool,
    #[serde(default)]
    pub quantizer: QuantizerConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    pub batch_size: usize,
    pub steps: u64,
    #[serde(default)]
    pub checkpoint_every: u64,
    #[serde(default)]
    pub seed: u64,
}

impl TokenizerTrainConfig {
    /// `tiny` (32 px, patch 8, one-block ViTs of width 32: seconds on a CPU), `small` (224 px,
    /// patch 16, 4-block ViTs of width 192, 4096 codes) or `base` (the released tokenizers'
    /// ViT-B/16 encoder and decoder with post-MLP, 224 px; a GPU-sized recipe).
    pub fn preset(name: &str, domain: TokDomain) -> Result<Self> {
        let vit = |dim, depth, heads| VitDims { dim, depth, heads };
        let (image_size, patch_size, dims, codebook_size, latent_dim, post_mlp, batch_size) =
            match name {
                "tiny" => (32, 8, vit(32, 1, 2), 64, 8, false, 4),
                "small" => (224, 16, vit(192, 4, 3), 4096, 32, true, 8),
                "base" => (224, 16, vit(768, 12, 12), 8192, 32, true, 64),
                other => {
                    return Err(TrainError::InvalidConfig {
                        field: "preset".into(),
                        reason: format!("unknown preset `{other}` (tiny, small, base)"),
                    });
                }
            };
        Ok(Self {
            domain,
            image_size,
            patch_size,
            class_embed_dim: if domain == TokDomain::Semseg {
                if name == "tiny" { 8 } else { 64 }
            } else {
                0
            },
            encoder: dims,
            decoder: dims,
            codebook_size,
            latent_dim,
            post_mlp,
            // Among the released tokenizers only SAM's uses the ConvNeXt output blocks; at 224 px
            // they also cost ~7x a step on a CPU (candle's grouped convolution and its backward).
            out_conv: false,
            quantizer: QuantizerConfig::default(),
            optim: OptimConfig {
                peak_lr: if name == "tiny" { 2e-3 } else { 5e-4 },
                min_lr: 1e-5,
                warmup_steps: if name == "tiny" { 20 } else { 500 },
                ..OptimConfig::default()
            },
            batch_size,
            steps: if name == "tiny" { 300 } else { 20_000 },
            checkpoint_every: if name == "tiny" { 100 } else { 1000 },
            seed: 0,
        })
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| TrainError::BadFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Channels of the encoder input: image channels, or the class embedding's width.
    pub fn n_channels(&self) -> usize {
        match self.domain {
            TokDomain::Semseg => self.class_embed_dim,
            d => d.image_channels(),
        }
    }

    /// The tokenizer's `config.json`: the reference `VQVAE` constructor dict (ViT sizes as the
    /// `vit_tiny_*` keys, training-only keys kept as the reference keeps them).
    pub fn tokenizer_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "image_size": self.image_size,
            "n_channels": self.n_channels(),
            "patch_proj": true,
            "post_mlp": self.post_mlp,
            "patch_size": self.patch_size,
            "quant_type": "lucid",
            "codebook_size": self.codebook_size,
            "num_codebooks": 1,
            "latent_dim": self.latent_dim,
            "norm_codes": true,
            "norm_latents": false,
            "out_conv": self.out_conv,
            "undo_std": false,
            "enc_type": "vit_tiny_enc",
            "enc_dim_tokens": self.encoder.dim,
            "enc_depth": self.encoder.depth,
            "enc_num_heads": self.encoder.heads,
            "dec_type": "vit_tiny_dec",
            "dec_dim_tokens": self.decoder.dim,
            "dec_depth": self.decoder.depth,
            "dec_num_heads": self.decoder.heads,
            "ema_decay": self.quantizer.ema_decay,
            "threshold_ema_dead_code": self.quantizer.dead_code_threshold,
            "code_replacement_policy": "batch_random",
            "commitment_weight": self.quantizer.commitment_weight,
            "domain": self.domain.name(),
        });
        if self.domain == TokDomain::Semseg {
            json["n_labels"] = WORLD_CLASSES.into();
        }
        json
    }

    pub fn vq_config(&self) -> Result<VqConfig> {
        Ok(VqConfig::from_json_value(&self.tokenizer_json())?)
    }

    /// Refuse a config that cannot train, naming the field.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field: &str, reason: String| TrainError::InvalidConfig {
            field: field.into(),
            reason,
        };
        if self.batch_size == 0 {
            return Err(invalid("batch_size", "must be at least 1".into()));
        }
        if self.steps == 0 {
            return Err(invalid("steps", "must be at least 1".into()));
        }
        let world = tessera_world::IMAGE_SIZE;
        if self.image_size == 0 || !world.is_multiple_of(self.image_size) {
            return Err(invalid(
                "image_size",
                format!("{} does not divide the world's {world}", self.image_size),
            ));
        }
        if self.domain == TokDomain::Semseg && self.class_embed_dim == 0 {
            return Err(invalid(
                "class_embed_dim",
                "semseg needs a class embedding".into(),
            ));
        }
        if self.codebook_size < 2 {
            return Err(invalid("codebook_size", "needs at least 2 codes".into()));
        }
        let q = &self.quantizer;
        if !(0.0..1.0).contains(&q.ema_decay) {
            return Err(invalid("quantizer.ema_decay", "must lie in [0, 1)".into()));
        }
        if !(q.dead_code_threshold >= 0.0 && q.commitment_weight >= 0.0) {
            return Err(invalid(
                "quantizer",
                "dead_code_threshold and commitment_weight must be ≥ 0".into(),
            ));
        }
        self.optim.validate()?;
        self.vq_config()?;
        Ok(())
    }

    /// Names of the top-level fields that differ from `other`.
    pub fn differences(&self, other: &Self) -> Vec<String> {
        crate::core_config::field_differences(self, other)
    }
}
