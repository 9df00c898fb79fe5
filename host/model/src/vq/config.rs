//! The tokenizer config: the constructor dict of the reference `VQVAE(config=...)` /
//! `DiVAE(config=...)`, read from `config.json` or from the safetensors header metadata (Python
//! `str()` values). Training-only keys (EMA decay, dead-code policy, ...) are accepted and ignored.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::config::parse_metadata_value;
use crate::error::{ModelError, Result};
use crate::vq::diffusion::DiffusionConfig;
use crate::vq::nn::VitSize;
use crate::vq::unet::UnetArch;

/// Which quantizer the tokenizer uses (`quant_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    /// `lucid`: cosine-similarity codebook (`norm_codes = true`), one head.
    Lucid,
    /// `memcodes`: `num_codebooks` heads with key/value projections of the codes.
    Memcodes,
}

/// `BottleneckMLP/B_{blocks}-Wi_{width}[-Ex_{expansion}]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlpArch {
    pub blocks: usize,
    pub width: usize,
    pub expansion: usize,
}

/// An encoder or decoder architecture named by `enc_type` / `dec_type`.
#[derive(Debug, Clone, PartialEq)]
pub enum NetworkArch {
    Vit(VitSize),
    BottleneckMlp(MlpArch),
    /// The DiVAE diffusion decoder `PatchedUNetCondCat` (`unet_patched`).
    PatchedUnet(UnetArch),
    /// A diffusion decoder this crate does not build (`uvit_*`, ControlNet): encode only.
    Other(String),
}

/// A parsed tokenizer config.
#[derive(Debug, Clone, PartialEq)]
pub struct VqConfig {
    pub image_size: usize,
    pub image_size_enc: Option<usize>,
    pub image_size_dec: Option<usize>,
    pub n_channels: usize,
    /// Semantic segmentation: class ids are embedded with `cls_emb (n_labels, n_channels)` and the
    /// decoder predicts `n_labels` logits.
    pub n_labels: Option<usize>,
    pub patch_proj: bool,
    pub post_mlp: bool,
    pub patch_size: usize,
    pub patch_size_dec: Option<usize>,
    pub quant_type: QuantType,
    pub codebook_size: usize,
    pub num_codebooks: usize,
    pub latent_dim: usize,
    pub norm_codes: bool,
    /// Map ImageNet-standardised input back to `[-1, 1]` before encoding.
    pub undo_std: bool,
    pub out_conv: bool,
    pub enc_type: String,
    pub dec_type: String,
    pub encoder: NetworkArch,
    pub decoder: NetworkArch,
    /// DiVAE keys present (`scheduler`, ...) or a diffusion `dec_type`.
    pub diffusion: bool,
    /// The sampling settings of a DiVAE (the reference constructor's defaults where absent).
    pub diffusion_settings: Option<DiffusionConfig>,
}

type Map = BTreeMap<String, Value>;

impl VqConfig {
    pub fn from_json_value(value: &Value) -> Result<Self> {
        let map = value.as_object().ok_or_else(|| ModelError::MissingConfig {
            reason: "tokenizer config is not a JSON object".into(),
        })?;
        Self::from_map(&map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// From safetensors header metadata (every value a Python `str()`).
    pub fn from_metadata(metadata: &HashMap<String, String>) -> Result<Self> {
        let map = metadata
            .iter()
            .map(|(k, v)| {
                let value =
                    parse_metadata_value(v).map_err(|reason| ModelError::InvalidConfig {
                        field: k.clone(),
                        reason,
                    })?;
                Ok((k.clone(), value))
            })
            .collect::<Result<Map>>()?;
        Self::from_map(&map)
    }

    fn from_map(map: &Map) -> Result<Self> {
        let quant_name = string(map, "quant_type")?.unwrap_or_else(|| "lucid".into());
        let quant_type = match quant_name.as_str() {
            "lucid" => QuantType::Lucid,
            "memcodes" => QuantType::Memcodes,
            other => {
                return Err(ModelError::UnsupportedConfig {
                    feature: format!("quant_type `{other}` (expected `lucid` or `memcodes`)"),
                });
            }
        };
        let enc_type = string(map, "enc_type")?.unwrap_or_else(|| "vit_b_enc".into());
        let dec_type = string(map, "dec_type")?.unwrap_or_else(|| "vit_b_dec".into());
        let diffusion = map.contains_key("scheduler") || is_diffusion_decoder(&dec_type);
        let config = Self {
            image_size: usize_or(map, "image_size", 224)?,
            image_size_enc: usize_opt(map, "image_size_enc")?,
            image_size_dec: usize_opt(map, "image_size_dec")?,
            n_channels: usize_or(map, "n_channels", 3)?,
            n_labels: usize_opt(map, "n_labels")?,
            patch_proj: bool_or(map, "patch_proj", true)?,
            post_mlp: bool_or(map, "post_mlp", false)?,
            patch_size: usize_or(map, "patch_size", 16)?,
            patch_size_dec: usize_opt(map, "patch_size_dec")?,
            quant_type,
            codebook_size: usize_or(map, "codebook_size", 16384)?,
            num_codebooks: usize_or(map, "num_codebooks", 1)?,
            latent_dim: usize_or(map, "latent_dim", 32)?,
            norm_codes: bool_or(map, "norm_codes", true)?,
            undo_std: bool_or(map, "undo_std", false)?,
            out_conv: bool_or(map, "out_conv", false)?,
            encoder: parse_arch(map, &enc_type, "enc", false)?,
            decoder: parse_arch(map, &dec_type, "dec", diffusion)?,
            enc_type,
            dec_type,
            diffusion,
            diffusion_settings: if diffusion {
                Some(DiffusionConfig {
                    scheduler: string(map, "scheduler")?.unwrap_or_else(|| "ddpm".into()),
                    beta_schedule: string(map, "beta_schedule")?
                        .unwrap_or_else(|| "squaredcos_cap_v2".into()),
                    prediction_type: string(map, "prediction_type")?
                        .unwrap_or_else(|| "v_prediction".into()),
                    zero_terminal_snr: bool_or(map, "zero_terminal_snr", true)?,
                    clip_sample: bool_or(map, "clip_sample", false)?,
                    thresholding: bool_or(map, "thresholding", true)?,
                    num_train_timesteps: usize_or(map, "num_train_timesteps", 1000)?,
                })
            } else {
                None
            },
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let invalid = |field: &str, reason: String| {
            Err(ModelError::InvalidConfig {
                field: field.into(),
                reason,
            })
        };
        for (field, value) in [
            ("image_size", self.image_size),
            ("n_channels", self.n_channels),
            ("patch_size", self.patch_size),
            ("codebook_size", self.codebook_size),
            ("num_codebooks", self.num_codebooks),
            ("latent_dim", self.latent_dim),
        ] {
            if value == 0 {
                return invalid(field, "must be positive".into());
            }
        }
        if self.n_labels == Some(0) {
            return invalid("n_labels", "must be positive".into());
        }
        if matches!(self.encoder, NetworkArch::Vit(_))
            && !self.encoder_image_size().is_multiple_of(self.patch_size)
        {
            return invalid(
                "patch_size",
                format!(
                    "{} does not divide the encoder image size {}",
                    self.patch_size,
                    self.encoder_image_size()
                ),
            );
        }
        if matches!(self.decoder, NetworkArch::Vit(_)) {
            let p = self.decoder_patch_size();
            if p == 0 || !self.decoder_image_size().is_multiple_of(p) {
                return invalid(
                    "patch_size_dec",
                    format!(
                        "{p} does not divide the decoder image size {}",
                        self.decoder_image_size()
                    ),
                );
            }
        }
        match self.quant_type {
            QuantType::Lucid if !self.norm_codes => Err(ModelError::UnsupportedConfig {
                feature: "quant_type `lucid` with norm_codes = false (Euclidean codebook)".into(),
            }),
            QuantType::Lucid if self.num_codebooks != 1 => Err(ModelError::UnsupportedConfig {
                feature: format!(
                    "quant_type `lucid` with num_codebooks = {} (multi-head)",
                    self.num_codebooks
                ),
            }),
            QuantType::Memcodes if !self.latent_dim.is_multiple_of(self.num_codebooks) => invalid(
                "num_codebooks",
                format!(
                    "{} codebooks do not divide latent_dim {}",
                    self.num_codebooks, self.latent_dim
                ),
            ),
            _ => Ok(()),
        }
    }

    pub fn encoder_image_size(&self) -> usize {
        self.image_size_enc.unwrap_or(self.image_size)
    }

    pub fn decoder_image_size(&self) -> usize {
        self.image_size_dec.unwrap_or(self.image_size)
    }

    pub fn decoder_patch_size(&self) -> usize {
        self.patch_size_dec.unwrap_or(self.patch_size)
    }

    /// Channels the decoder produces: `n_labels` logits for semseg, else `n_channels`.
    pub fn out_channels(&self) -> usize {
        self.n_labels.unwrap_or(self.n_channels)
    }

    pub fn is_diffusion(&self) -> bool {
        self.diffusion
    }
}

fn is_diffusion_decoder(dec_type: &str) -> bool {
    dec_type.contains("unet") || dec_type.contains("uvit") || dec_type.contains("controlnet")
}

fn parse_arch(map: &Map, name: &str, prefix: &str, diffusion: bool) -> Result<NetworkArch> {
    let field = format!("{prefix}_type");
    let preset = |dim, depth, num_heads| {
        NetworkArch::Vit(VitSize {
            dim,
            depth,
            num_heads,
            mlp_ratio: 4.0,
        })
    };
    let arch = match name.strip_suffix(&format!("_{prefix}")) {
        Some("vit_s") => preset(512, 8, 8),
        Some("vit_b") => preset(768, 12, 12),
        Some("vit_l") => preset(1024, 24, 16),
        // No preset in the reference: the sizes are extra config keys.
        Some("vit_tiny") => NetworkArch::Vit(VitSize {
            dim: usize_required(map, &format!("{prefix}_dim_tokens"))?,
            depth: usize_required(map, &format!("{prefix}_depth"))?,
            num_heads: usize_required(map, &format!("{prefix}_num_heads"))?,
            mlp_ratio: f64_or(map, &format!("{prefix}_mlp_ratio"), 4.0)?,
        }),
        _ if name.starts_with("BottleneckMLP/") => {
            NetworkArch::BottleneckMlp(parse_mlp_id(name).ok_or_else(|| {
                ModelError::InvalidConfig {
                    field: field.clone(),
                    reason: format!(
                        "`{name}` is not of the form BottleneckMLP/B_<blocks>-Wi_<width>[-Ex_<expansion>]"
                    ),
                }
            })?)
        }
        _ if diffusion && name == "unet_patched" => NetworkArch::PatchedUnet(UnetArch::unet_patched()),
        // No preset in the reference: the sizes are extra config keys.
        _ if diffusion && name == "unet_patched_tiny" => NetworkArch::PatchedUnet(UnetArch {
            patch_size: usize_required(map, "dec_patch_size")?,
            model_channels: usize_required(map, "dec_model_channels")?,
            num_res_blocks: usize_required(map, "dec_num_res_blocks")?,
            attention_resolutions: usize_list(map, "dec_attention_resolutions")?,
            channel_mult: usize_list(map, "dec_channel_mult")?,
            num_heads: 1,
        }),
        _ if diffusion && prefix == "dec" => NetworkArch::Other(name.to_owned()),
        _ => {
            return Err(ModelError::UnsupportedConfig {
                feature: format!("{field} `{name}`"),
            });
        }
    };
    if let NetworkArch::PatchedUnet(unet) = &arch
        && (unet.patch_size == 0 || unet.model_channels == 0 || unet.channel_mult.is_empty())
    {
        return Err(ModelError::InvalidConfig {
            field,
            reason: format!("degenerate UNet sizes {unet:?}"),
        });
    }
    if let NetworkArch::Vit(size) = &arch
        && (size.dim == 0 || size.num_heads == 0 || !size.dim.is_multiple_of(size.num_heads))
    {
        return Err(ModelError::InvalidConfig {
            field,
            reason: format!("{} heads do not divide width {}", size.num_heads, size.dim),
        });
    }
    Ok(arch)
}

/// `BottleneckMLP/B_6-Wi_1024` (expansion 4) or `.../B_6-Wi_1024-Ex_2`, as `build_mlp` parses it.
fn parse_mlp_id(name: &str) -> Option<MlpArch> {
    let arch = name.strip_prefix("BottleneckMLP/")?;
    let parts: Vec<&str> = arch.split('-').collect();
    let number = |part: &str| -> Option<usize> { part.split_once('_')?.1.parse().ok() };
    let (blocks, width) = match parts.as_slice() {
        [b, w] | [b, w, _] => (number(b)?, number(w)?),
        _ => return None,
    };
    let expansion = match parts.get(2) {
        Some(e) => number(e)?,
        None => 4,
    };
    (width > 0 && expansion > 0).then_some(MlpArch {
        blocks,
        width,
        expansion,
    })
}

fn string(map: &Map, field: &str) -> Result<Option<String>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(ModelError::InvalidConfig {
            field: field.into(),
            reason: format!("expected a string, found {v}"),
        }),
    }
}

fn usize_opt(map: &Map, field: &str) -> Result<Option<usize>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| ModelError::InvalidConfig {
                field: field.into(),
                reason: format!("expected a non-negative integer, found {v}"),
            }),
    }
}

fn usize_list(map: &Map, field: &str) -> Result<Vec<usize>> {
    let value = map.get(field).ok_or_else(|| ModelError::MissingConfig {
        reason: format!("field `{field}` is missing"),
    })?;
    let invalid = || ModelError::InvalidConfig {
        field: field.into(),
        reason: format!("expected a list of non-negative integers, found {value}"),
    };
    value
        .as_array()
        .ok_or_else(invalid)?
        .iter()
        .map(|v| v.as_u64().map(|n| n as usize).ok_or_else(invalid))
        .collect()
}

fn usize_or(map: &Map, field: &str, default: usize) -> Result<usize> {
    Ok(usize_opt(map, field)?.unwrap_or(default))
}

fn usize_required(map: &Map, field: &str) -> Result<usize> {
    usize_opt(map, field)?.ok_or_else(|| ModelError::MissingConfig {
        reason: format!("field `{field}` is missing"),
    })
}

fn f64_or(map: &Map, field: &str, default: f64) -> Result<f64> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|x| *x > 0.0)
            .ok_or_else(|| ModelError::InvalidConfig {
                field: field.into(),
                reason: format!("expected a positive number, found {v}"),
            }),
    }
}

fn bool_or(map: &Map, field: &str, default: bool) -> Result<bool> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_bool().ok_or_else(|| ModelError::InvalidConfig {
            field: field.into(),
            reason: format!("expected true or false, found {v}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_mlp_ids() {
        assert_eq!(
            parse_mlp_id("BottleneckMLP/B_6-Wi_1024"),
            Some(MlpArch {
                blocks: 6,
                width: 1024,
                expansion: 4
            })
        );
        assert_eq!(
            parse_mlp_id("BottleneckMLP/B_2-Wi_64-Ex_2")
                .unwrap()
                .expansion,
            2
        );
        assert_eq!(parse_mlp_id("BottleneckMLP/B_x-Wi_64"), None);
        assert_eq!(parse_mlp_id("BottleneckMLP/B_2"), None);
    }

    #[test]
    fn released_style_config_uses_presets() {
        let config = VqConfig::from_json_value(&json!({
            "image_size": 448, "n_channels": 512, "patch_proj": false, "post_mlp": true,
            "enc_type": "vit_b_enc", "dec_type": "vit_b_dec", "codebook_size": 8192,
            "latent_dim": 32, "quant_type": "lucid", "ema_decay": 0.99
        }))
        .unwrap();
        assert_eq!(
            config.encoder,
            NetworkArch::Vit(VitSize {
                dim: 768,
                depth: 12,
                num_heads: 12,
                mlp_ratio: 4.0
            })
        );
        assert_eq!(config.out_channels(), 512);
        assert!(!config.is_diffusion());
    }

    #[test]
    fn unknown_values_are_refused_by_name() {
        let err = VqConfig::from_json_value(&json!({"quant_type": "fsq"})).unwrap_err();
        assert!(err.to_string().contains("quant_type `fsq`"), "{err}");
        let err = VqConfig::from_json_value(&json!({"enc_type": "resnet_enc"})).unwrap_err();
        assert!(err.to_string().contains("enc_type `resnet_enc`"), "{err}");
        let err = VqConfig::from_json_value(&json!({"dec_type": "resnet_dec"})).unwrap_err();
        assert!(err.to_string().contains("dec_type `resnet_dec`"), "{err}");
        let err = VqConfig::from_json_value(&json!({"enc_type": "BottleneckMLP/B_2"})).unwrap_err();
        assert!(err.to_string().contains("enc_type"), "{err}");
        let err = VqConfig::from_json_value(&json!({"image_size": "big"})).unwrap_err();
        assert!(err.to_string().contains("image_size"), "{err}");
        let err = VqConfig::from_json_value(&json!({"image_size": 100})).unwrap_err();
        assert!(err.to_string().contains("patch_size"), "{err}");
        let err = VqConfig::from_json_value(&json!({"norm_codes": false})).unwrap_err();
        assert!(err.to_string().contains("norm_codes"), "{err}");
        let err = VqConfig::from_json_value(&json!({"enc_type": "vit_tiny_enc"})).unwrap_err();
        assert!(err.to_string().contains("enc_dim_tokens"), "{err}");
    }

    #[test]
    fn diffusion_config_keeps_the_decoder_name() {
        let config = VqConfig::from_json_value(&json!({
            "dec_type": "uvit_b", "scheduler": "ddim"
        }))
        .unwrap();
        assert!(config.is_diffusion());
        assert_eq!(config.decoder, NetworkArch::Other("uvit_b".into()));
        let config = VqConfig::from_json_value(&json!({"dec_type": "unet_patched"})).unwrap();
        assert_eq!(
            config.decoder,
            NetworkArch::PatchedUnet(UnetArch::unet_patched())
        );
        assert_eq!(config.diffusion_settings.unwrap().scheduler, "ddpm");
    }

    #[test]
    fn metadata_strings_parse_like_json() {
        let meta: HashMap<String, String> = [
            ("image_size", "1"),
            ("patch_size", "1"),
            ("n_channels", "48"),
            ("enc_type", "BottleneckMLP/B_2-Wi_64"),
            ("dec_type", "BottleneckMLP/B_2-Wi_64"),
            ("quant_type", "memcodes"),
            ("num_codebooks", "4"),
            ("latent_dim", "64"),
            ("n_labels", "None"),
            ("post_mlp", "False"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = VqConfig::from_metadata(&meta).unwrap();
        assert_eq!(config.quant_type, QuantType::Memcodes);
        assert_eq!(config.n_labels, None);
        assert!(matches!(config.encoder, NetworkArch::BottleneckMlp(a) if a.width == 64));
    }
}
