//! What a core training run is: the model (a 4M `config.json` object), vocabulary sizes, the
//! objective, the optimiser, batch size, step count, checkpoint interval and seed. Read from a JSON
//! file or built from a preset.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tessera_model::{ModelConfig, modality_info};

use crate::error::{Result, TrainError};
use crate::init::CoreInit;
use crate::masking::{MaskingConfig, SequenceSpecials};
use crate::optim::OptimConfig;
use crate::vocab::VALUE_BINS;

/// A core training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoreTrainConfig {
    /// The model, exactly as a released `config.json` writes it.
    pub model: serde_json::Value,
    /// Vocabulary size of every domain.
    pub vocab: BTreeMap<String, usize>,
    #[serde(default)]
    pub masking: MaskingConfig,
    #[serde(default)]
    pub specials: SequenceSpecials,
    #[serde(default)]
    pub optim: OptimConfig,
    /// Starting values of a fresh core (the reference's unless set).
    #[serde(default)]
    pub init: CoreInit,
    /// Weight of a target domain's mean cross-entropy in the loss (1 for every domain not named).
    /// The loss is the weighted mean over target domains; giving a task's mixture component more
    /// samples does not raise its domain's share of the shared weights' gradient, this does.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub loss_weights: BTreeMap<String, f64>,
    pub batch_size: usize,
    pub steps: u64,
    /// Save a resumable checkpoint every this many steps (0: only at the end).
    #[serde(default)]
    pub checkpoint_every: u64,
    #[serde(default)]
    pub seed: u64,
}

/// The sequence domains the shapes world provides.
const WORLD_DOMAINS: [&str; 4] = ["caption", "det", "metadata", "color_palette"];

impl CoreTrainConfig {
    /// A named preset over the shapes world's sequence domains with a `text_vocab`-token
    /// vocabulary: `tiny` (D 64, 2 + 2 blocks; tests, smoke runs) or `small` (D 256, 4 + 4).
    pub fn preset(name: &str, text_vocab: usize) -> Result<Self> {
        let (dim, depth, heads, batch) = match name {
            "tiny" => (64, 2, 2, 8),
            "small" => (256, 4, 4, 16),
            other => {
                return Err(TrainError::InvalidConfig {
                    field: "preset".into(),
                    reason: format!("unknown preset `{other}` (tiny, small)"),
                });
            }
        };
        let domains: Vec<&str> = WORLD_DOMAINS.to_vec();
        Ok(Self {
            model: serde_json::json!({
                "act_layer": "SiLU",
                "dim": dim,
                "encoder_depth": depth,
                "decoder_depth": depth,
                "num_heads": heads,
                "mlp_ratio": 4.0,
                "gated_mlp": true,
                "qkv_bias": false,
                "proj_bias": false,
                "mlp_bias": false,
                "norm_bias": false,
                "share_modality_embeddings": false,
                "domains_in": domains,
                "domains_out": domains,
                "image_size": 224,
                "patch_size": 16,
            }),
            vocab: WORLD_DOMAINS
                .iter()
                .map(|d| (d.to_string(), text_vocab))
                .collect(),
            // The shapes world's sequences are short: 128 + 128 tokens cover a scene's four.
            masking: MaskingConfig {
                input_tokens: [32, 128],
                target_tokens: [32, 128],
                ..MaskingConfig::default()
            },
            specials: SequenceSpecials::default(),
            optim: OptimConfig::default(),
            init: CoreInit::default(),
            loss_weights: BTreeMap::new(),
            batch_size: batch,
            steps: 1000,
            checkpoint_every: 200,
            seed: 0,
        })
    }

    /// Adds image-token domains (name, vocabulary size) as inputs and outputs of the model, for a
    /// preset trained with image tokenizers. A domain the config already has keeps its place; its
    /// vocabulary must match.
    pub fn add_image_domains(&mut self, domains: &[(String, usize)]) -> Result<()> {
        for (domain, size) in domains {
            match self.vocab.get(domain) {
                Some(existing) if existing != size => {
                    return Err(TrainError::InvalidConfig {
                        field: "vocab".into(),
                        reason: format!(
                            "`{domain}` has {existing} tokens in the config but its tokenizer has {size}"
                        ),
                    });
                }
                Some(_) => continue,
                None => {
                    self.vocab.insert(domain.clone(), *size);
                }
            }
            for key in ["domains_in", "domains_out"] {
                if let Some(list) = self.model[key].as_array_mut() {
                    list.push(domain.as_str().into());
                }
            }
        }
        Ok(())
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

    /// The parsed model config.
    pub fn model_config(&self) -> Result<ModelConfig> {
        Ok(ModelConfig::from_json_value(&self.model)?)
    }

    /// Refuse settings that cannot train.
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
        self.masking.validate()?;
        self.optim.validate()?;
        self.init.validate()?;
        let model = self.model_config()?;
        self.masking
            .validate_domains(&model.domains_in, &model.domains_out)?;
        for domain in model.domains_in.iter().chain(&model.domains_out) {
            match self.vocab.get(domain) {
                Some(&v) if v > 0 => {}
                _ => {
                    return Err(invalid(
                        "vocab",
                        format!("no vocabulary size for `{domain}`"),
                    ));
                }
            }
        }
        for (domain, &weight) in &self.loss_weights {
            let field = format!("loss_weights.{domain}");
            if !model.domains_out.contains(domain) {
                return Err(invalid(
                    &field,
                    "is not a target domain of the model".into(),
                ));
            }
            if !(weight.is_finite() && weight > 0.0) {
                return Err(invalid(
                    &field,
                    format!("is {weight}; a weight must be a finite number above 0"),
                ));
            }
        }
        if let Some(heads) = self.init.positional_heads
            && heads > model.num_heads
        {
            return Err(invalid(
                "init.positional_heads",
                format!("is {heads}, but the model has {} heads", model.num_heads),
            ));
        }
        if let Some(coordinates) = &self.init.coordinate_tokens {
            let values_end = self.specials.value_base() + 4 * VALUE_BINS;
            for domain in &coordinates.domains {
                let field = format!("init.coordinate_tokens.domains.{domain}");
                let known = model.domains_in.contains(domain) || model.domains_out.contains(domain);
                if !known {
                    return Err(invalid(&field, "is not a domain of the model".into()));
                }
                if modality_info(domain).is_some_and(|info| !info.is_sequence()) {
                    return Err(invalid(&field, "is not a sequence domain".into()));
                }
                let size = self.vocab.get(domain).copied().unwrap_or(0);
                if size < values_end {
                    return Err(invalid(
                        &field,
                        format!(
                            "its vocabulary ({size}) does not hold the value tokens (ids up to {})",
                            values_end - 1
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The top-level fields in which `other` differs from `self` (`steps` included).
    pub fn differences(&self, other: &Self) -> Vec<String> {
        field_differences(self, other)
    }
}

/// Names of the top-level fields whose serialised values differ (why a checkpoint's config is not
/// the run's).
pub(crate) fn field_differences<T: Serialize>(a: &T, b: &T) -> Vec<String> {
    let a = serde_json::to_value(a).expect("config serialises");
    let b = serde_json::to_value(b).expect("config serialises");
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Vec::new();
    };
    a.keys()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}
