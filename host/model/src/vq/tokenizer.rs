//! [`VqTokenizer`]: a 4M image / feature-map tokenizer loaded from the released layout
//! (`config.json` + `model.safetensors`, or a bare `.safetensors` with the config in its header),
//! with `encode` → token ids, `decode_tokens` → reconstruction (a deterministic decoder, or DDIM
//! sampling of a DiVAE's diffusion decoder), and every intermediate step.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::{
    CheckpointPaths, ParameterInit, Parameters, SafetensorsFile, TensorSource,
};
use crate::error::{ModelError, Result};
use crate::model::LoadOptions;
use crate::vq::config::{NetworkArch, QuantType, VqConfig};
use crate::vq::decoder::Decoder;
use crate::vq::diffusion::{DdimScheduler, TimestepSpacing, seeded_noise};
use crate::vq::encoder::Encoder;
use crate::vq::nn::PointwiseConv;
use crate::vq::quantizer::{LucidQuantizer, Memcodes, Quantized, Quantizer};
use crate::vq::unet::PatchedUnet;

/// ImageNet mean and std (`undo_std`).
const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// Everything `encode` computes, in the reference's names.
#[derive(Debug, Clone)]
pub struct Encoding {
    /// `(B, D_enc, h, w)` encoder output (ViT: after the blocks and post-MLP; MLP: `linear_out`).
    pub enc_out: Tensor,
    /// `(B, latent, h, w)` after `quant_proj`.
    pub pre_quant: Tensor,
    /// `(B, latent, h, w)` quantizer output.
    pub quant: Tensor,
    /// I64 `(B, h, w)` row-major (Memcodes with several codebooks: `(B, heads, h, w)`).
    pub tokens: Tensor,
    /// F32, shape of `tokens`: top-1 minus top-2 score (cosine for lucid, scaled logit for
    /// Memcodes); small values mark near-ties.
    pub token_margins: Tensor,
}

/// Everything `decode_tokens` computes.
#[derive(Debug, Clone)]
pub struct Decoding {
    /// `(B, latent, h, w)` codebook look-up.
    pub quant: Tensor,
    /// `(B, D_dec, h, w)` after `post_quant_proj`; for a DiVAE (no projection) the conditioning of
    /// the diffusion decoder, equal to `quant`.
    pub post_quant: Tensor,
    /// Reconstruction: `(B, C, H, W)` image / feature map / vector; semseg: `(B, n_labels, H, W)`
    /// logits.
    pub dec: Tensor,
}

/// How a DiVAE samples its diffusion decoder.
#[derive(Debug, Clone)]
pub struct DiffusionOptions {
    /// DDIM steps (the reference demo uses 50; its own default, all 1000 training steps, is slow).
    pub steps: usize,
    pub spacing: TimestepSpacing,
    /// Seed of the initial noise when `noise` is not given.
    pub seed: u64,
    /// The initial sample `x_T` `(B, C, H, W)`, e.g. to reproduce a reference run exactly.
    pub noise: Option<Tensor>,
    /// Output `(H, W)`; default: the token grid times the encoder patch size (the size the tokens
    /// were made from). The reference defaults to the config's `image_size`.
    pub image_size: Option<(usize, usize)>,
}

impl Default for DiffusionOptions {
    fn default() -> Self {
        Self {
            steps: 50,
            spacing: TimestepSpacing::Trailing,
            seed: 0,
            noise: None,
            image_size: None,
        }
    }
}

/// A DiVAE's diffusion decoder and its sampler.
#[derive(Debug, Clone)]
struct DiffusionPart {
    unet: PatchedUnet,
    scheduler: DdimScheduler,
}

/// The deterministic decoding half of a VQ-VAE.
#[derive(Debug, Clone)]
struct DecoderPart {
    post_quant_proj: PointwiseConv,
    decoder: Decoder,
}

/// A 4M tokenizer (`VQVAE`, or the encoder and quantizer of a `DiVAE`).
#[derive(Debug, Clone)]
pub struct VqTokenizer {
    config: VqConfig,
    dtype: DType,
    device: Device,
    /// `(n_labels, n_channels)` for semantic segmentation.
    cls_emb: Option<Tensor>,
    encoder: Encoder,
    quant_proj: PointwiseConv,
    quantizer: Quantizer,
    /// The VQ-VAE decoder (`None` for a DiVAE).
    decoder: Option<DecoderPart>,
    /// The DiVAE decoder.
    diffusion: Option<DiffusionPart>,
    /// Why neither decoder is available (a DiVAE whose decoder or sampler is not implemented).
    no_decoder: Option<String>,
}

impl VqTokenizer {
    /// Load a tokenizer directory (`model.safetensors` + `config.json`) or a bare `.safetensors`
    /// file whose header metadata holds the config. Every tensor of the file must be accounted for
    /// (only the decoder of a DiVAE whose sampler is not implemented is skipped); shapes are
    /// checked by name.
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        if !matches!(options.dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(ModelError::UnsupportedConfig {
                feature: format!("compute dtype {:?}", options.dtype),
            });
        }
        let paths = CheckpointPaths::resolve(path.as_ref())?;
        let file = SafetensorsFile::open(&paths.weights)?;
        let config = read_config(&paths, &file)?;
        let mut source = TensorSource::new(&file, options.dtype, options.device.clone());
        let tokenizer = Self::from_source(&mut source, config)?;
        source.finish()?;
        Ok(tokenizer)
    }

    /// Load a tokenizer for training: its learned tensors as `Var`s (F32 or F64), the same
    /// checks as [`Self::load`]. Only VQ-VAEs with a lucid quantizer train.
    pub fn load_trainable(
        path: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, Parameters)> {
        check_training_dtype(dtype)?;
        let paths = CheckpointPaths::resolve(path.as_ref())?;
        let file = SafetensorsFile::open(&paths.weights)?;
        let config = read_config(&paths, &file)?;
        check_trainable(&config)?;
        let mut source = TensorSource::trainable(&file, dtype, device.clone());
        let tokenizer = Self::from_source(&mut source, config)?;
        source.finish()?;
        Ok((tokenizer, source.into_parameters()))
    }

    /// Create a tokenizer for training from `config`, its tensors made by `init`, through the
    /// same construction code as [`Self::load`].
    pub fn init_trainable(
        config: VqConfig,
        init: &mut dyn ParameterInit,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, Parameters)> {
        check_training_dtype(dtype)?;
        check_trainable(&config)?;
        let mut source = TensorSource::fresh(init, dtype, device.clone());
        let tokenizer = Self::from_source(&mut source, config)?;
        Ok((tokenizer, source.into_parameters()))
    }

    /// Build from an open checkpoint (tensors are marked used in `source`).
    pub fn from_source(source: &mut TensorSource, config: VqConfig) -> Result<Self> {
        if config.undo_std && config.n_channels != 3 {
            return Err(ModelError::UnsupportedConfig {
                feature: format!(
                    "undo_std with n_channels = {} (ImageNet statistics have 3 channels)",
                    config.n_channels
                ),
            });
        }
        let cls_emb = match config.n_labels {
            Some(n) => Some(source.get("cls_emb.weight", &[n, config.n_channels])?),
            None => None,
        };
        let encoder = Encoder::load(source, &config)?;
        let quant_proj =
            PointwiseConv::load(source, "quant_proj", encoder.dim(), config.latent_dim)?;
        let quantizer = match config.quant_type {
            QuantType::Lucid => Quantizer::Lucid(LucidQuantizer::load(
                source,
                config.codebook_size,
                config.latent_dim,
            )?),
            QuantType::Memcodes => Quantizer::Memcodes(Memcodes::load(
                source,
                config.num_codebooks,
                config.codebook_size,
                config.latent_dim,
            )?),
        };
        let (mut decoder, mut diffusion, mut no_decoder) = (None, None, None);
        if let Some(part) = Decoder::load(source, &config)? {
            decoder = Some(DecoderPart {
                post_quant_proj: PointwiseConv::load(
                    source,
                    "post_quant_proj",
                    config.latent_dim,
                    part.dim(),
                )?,
                decoder: part,
            });
        } else {
            let scheduler = config
                .diffusion_settings
                .as_ref()
                .map(DdimScheduler::from_config);
            match (&config.decoder, scheduler) {
                (NetworkArch::PatchedUnet(arch), Some(Ok(scheduler))) => {
                    let unet = PatchedUnet::load(
                        source,
                        "decoder",
                        arch,
                        config.n_channels,
                        config.latent_dim,
                    )?;
                    diffusion = Some(DiffusionPart { unet, scheduler });
                }
                (NetworkArch::PatchedUnet(_), Some(Err(reason))) => {
                    source.skip_prefix("decoder.");
                    no_decoder = Some(format!("the diffusion sampler setting {reason}"));
                }
                _ => {
                    source.skip_prefix("decoder.");
                    no_decoder = Some(format!("the diffusion decoder `{}`", config.dec_type));
                }
            }
        }
        Ok(Self {
            config,
            dtype: source.dtype(),
            device: source.device().clone(),
            cls_emb,
            encoder,
            quant_proj,
            quantizer,
            decoder,
            diffusion,
            no_decoder,
        })
    }

    pub fn config(&self) -> &VqConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Vocabulary size of each codebook.
    pub fn codebook_size(&self) -> usize {
        self.quantizer.codebook_size()
    }

    /// Whether [`Self::decode_tokens`] is available (false for a DiVAE whose decoder or sampler
    /// settings are not implemented).
    pub fn can_decode(&self) -> bool {
        self.decoder.is_some() || self.diffusion.is_some()
    }

    /// Whether decoding samples a diffusion decoder (a DiVAE) rather than running a deterministic one.
    pub fn is_diffusion(&self) -> bool {
        self.config.is_diffusion()
    }

    /// The DDIM scheduler of a DiVAE.
    pub fn diffusion_scheduler(&self) -> Option<&DdimScheduler> {
        self.diffusion.as_ref().map(|d| &d.scheduler)
    }

    /// Input → token ids (I64, `(B, h, w)`; Memcodes with several codebooks `(B, heads, h, w)`).
    ///
    /// The input is an image or feature map `(B, n_channels, H, W)` (any float dtype), or for a
    /// semseg tokenizer class ids `(B, H, W)` (I64, U32 or U8, each `< n_labels`).
    pub fn encode(&self, input: &Tensor) -> Result<Tensor> {
        Ok(self.encode_detailed(input)?.tokens)
    }

    /// [`Self::encode`] with every intermediate tensor.
    pub fn encode_detailed(&self, input: &Tensor) -> Result<Encoding> {
        let x = self.prepare_input(input)?;
        let enc_out = self.encoder.forward(&x)?;
        let pre_quant = self.quant_proj.forward(&enc_out)?;
        let Quantized {
            quant,
            tokens,
            margins,
        } = self.quantizer.forward(&pre_quant)?;
        Ok(Encoding {
            enc_out,
            pre_quant,
            quant,
            tokens,
            token_margins: margins,
        })
    }

    /// Check the input and bring it to `(B, n_channels, H, W)` in the model dtype: class ids are
    /// embedded with `cls_emb`, ImageNet-standardised images mapped to `[-1, 1]` with `undo_std`.
    pub fn prepare_input(&self, input: &Tensor) -> Result<Tensor> {
        let bad = |reason: String| ModelError::InvalidInput {
            domain: "tokenizer input".into(),
            reason,
        };
        let input = input.to_device(&self.device)?;
        let x = match (&self.cls_emb, self.config.n_labels) {
            (Some(table), Some(n_labels)) => {
                let (b, h, w) = input.dims3().map_err(|_| {
                    bad(format!(
                        "a semseg tokenizer takes class ids (B, H, W), got shape {:?}",
                        input.dims()
                    ))
                })?;
                let ids = checked_ids(&input, n_labels, "class id")?;
                let c = self.config.n_channels;
                table
                    .index_select(&ids.flatten_all()?, 0)?
                    .reshape((b, h, w, c))?
                    .permute((0, 3, 1, 2))?
                    .contiguous()?
            }
            _ => {
                if !input.dtype().is_float() {
                    return Err(bad(format!(
                        "expected a floating-point (B, C, H, W) tensor, got dtype {:?}",
                        input.dtype()
                    )));
                }
                let (_, c, _, _) = input.dims4().map_err(|_| {
                    bad(format!(
                        "expected (B, {}, H, W), got shape {:?}",
                        self.config.n_channels,
                        input.dims()
                    ))
                })?;
                if c != self.config.n_channels {
                    return Err(bad(format!(
                        "expected {} channels, got shape {:?}",
                        self.config.n_channels,
                        input.dims()
                    )));
                }
                let x = input.to_dtype(self.dtype)?;
                if self.config.undo_std {
                    let mean = Tensor::new(&IMAGENET_MEAN, &self.device)?
                        .to_dtype(self.dtype)?
                        .reshape((1, 3, 1, 1))?;
                    let std = Tensor::new(&IMAGENET_STD, &self.device)?
                        .to_dtype(self.dtype)?
                        .reshape((1, 3, 1, 1))?;
                    ((x.broadcast_mul(&std)?.broadcast_add(&mean)? * 2.0)? - 1.0)?
                } else {
                    x
                }
            }
        };
        let (b, _, h, w) = x.dims4()?;
        if b == 0 {
            return Err(bad("empty batch".into()));
        }
        self.encoder.grid_for(h, w).map_err(bad)?;
        Ok(x)
    }

    /// Encoder output `(B, D_enc, h, w)` of a prepared input.
    pub fn encode_features(&self, prepared: &Tensor) -> Result<Tensor> {
        self.encoder.forward(prepared)
    }

    /// `quant_proj` then the quantizer, on an encoder output.
    pub fn quantize(&self, enc_out: &Tensor) -> Result<Quantized> {
        self.quantizer.forward(&self.quant_proj.forward(enc_out)?)
    }

    /// `quant_proj` of an encoder output: the latents `(B, latent, h, w)` the quantizer sees.
    pub fn project_latents(&self, enc_out: &Tensor) -> Result<Tensor> {
        self.quant_proj.forward(enc_out)
    }

    /// The lucid quantizer, if this tokenizer has one.
    pub fn lucid_quantizer(&self) -> Option<&LucidQuantizer> {
        match &self.quantizer {
            Quantizer::Lucid(q) => Some(q),
            Quantizer::Memcodes(_) => None,
        }
    }

    /// Codebook look-up of token ids (`tokens_to_embedding`): lucid gives the raw codebook rows,
    /// Memcodes the value projections, `(B, latent, h, w)` in the model dtype.
    pub fn tokens_to_embedding(&self, tokens: &Tensor) -> Result<Tensor> {
        let tokens = tokens.to_device(&self.device)?;
        let heads = self.quantizer.heads();
        let shape_ok = match tokens.rank() {
            3 => heads == 1,
            4 => tokens.dims()[1] == heads && matches!(self.quantizer, Quantizer::Memcodes(_)),
            _ => false,
        };
        let expected = if heads == 1 {
            "(B, h, w)".to_owned()
        } else {
            format!("(B, {heads}, h, w)")
        };
        if !shape_ok {
            return Err(ModelError::InvalidInput {
                domain: "tokens".into(),
                reason: format!(
                    "expected token ids {expected}, got shape {:?}",
                    tokens.dims()
                ),
            });
        }
        if tokens.elem_count() == 0 {
            return Err(ModelError::InvalidInput {
                domain: "tokens".into(),
                reason: format!("empty token grid {:?}", tokens.dims()),
            });
        }
        let ids = checked_ids(&tokens, self.codebook_size(), "token id")?;
        self.quantizer.lookup(&ids)
    }

    /// `post_quant_proj` then the decoder, on dequantised latents `(B, latent, h, w)`; for a DiVAE,
    /// DDIM sampling with [`DiffusionOptions::default`].
    pub fn decode_quant(&self, quant: &Tensor) -> Result<Tensor> {
        self.decode_quant_with(quant, &DiffusionOptions::default())
    }

    /// [`Self::decode_quant`] with the sampling options of a DiVAE (ignored by a VQ-VAE).
    pub fn decode_quant_with(&self, quant: &Tensor, options: &DiffusionOptions) -> Result<Tensor> {
        Ok(self.decode_quant_detailed(quant, options)?.1)
    }

    fn unavailable(&self) -> ModelError {
        ModelError::UnsupportedConfig {
            feature: format!(
                "decoding with {} (only the encoder and quantizer of this tokenizer are implemented)",
                self.no_decoder
                    .clone()
                    .unwrap_or_else(|| format!("`{}`", self.config.dec_type))
            ),
        }
    }

    /// Dequantised latents checked to be `(B, latent, h, w)` floats, in the model dtype.
    fn check_quant(&self, quant: &Tensor) -> Result<Tensor> {
        let quant = quant.to_device(&self.device)?;
        let latent = self.config.latent_dim;
        match quant.dims() {
            &[b, c, h, w] if b > 0 && c == latent && h > 0 && w > 0 => {}
            dims => {
                return Err(ModelError::InvalidInput {
                    domain: "quantized latents".into(),
                    reason: format!("expected (B, {latent}, h, w), got shape {dims:?}"),
                });
            }
        }
        if !quant.dtype().is_float() {
            return Err(ModelError::InvalidInput {
                domain: "quantized latents".into(),
                reason: format!("expected floating-point latents, got {:?}", quant.dtype()),
            });
        }
        Ok(quant.to_dtype(self.dtype)?)
    }

    /// `(post_quant, dec)`.
    fn decode_quant_detailed(
        &self,
        quant: &Tensor,
        options: &DiffusionOptions,
    ) -> Result<(Tensor, Tensor)> {
        if let Some(part) = &self.decoder {
            let quant = self.check_quant(quant)?;
            let post_quant = part.post_quant_proj.forward(&quant)?;
            let dec = part.decoder.forward(&post_quant)?;
            return Ok((post_quant, dec));
        }
        let part = self.diffusion.as_ref().ok_or_else(|| self.unavailable())?;
        let quant = self.check_quant(quant)?;
        let (b, _, h, w) = quant.dims4()?;
        let (height, width) = options
            .image_size
            .unwrap_or((h * self.config.patch_size, w * self.config.patch_size));
        let bad = |reason: String| ModelError::InvalidInput {
            domain: "diffusion decoding".into(),
            reason,
        };
        part.unet.check_size(height, width).map_err(bad)?;
        let c = self.config.n_channels;
        let noise = match &options.noise {
            Some(noise) => {
                if noise.dims() != [b, c, height, width] || !noise.dtype().is_float() {
                    return Err(bad(format!(
                        "initial noise must be a float tensor ({b}, {c}, {height}, {width}), got {:?} {:?}",
                        noise.dtype(),
                        noise.dims()
                    )));
                }
                noise.to_device(&self.device)?.to_dtype(DType::F32)?
            }
            None => seeded_noise(&[b, c, height, width], options.seed, &self.device)?,
        };
        let timesteps = part.scheduler.timesteps(options.steps, options.spacing)?;
        // The sample stays in float32 between steps, as in the reference pipeline.
        let mut sample = noise;
        for t in timesteps {
            let out = part
                .unet
                .forward(&sample.to_dtype(self.dtype)?, t as f32, &quant)?;
            sample = part
                .scheduler
                .step(&out.to_dtype(DType::F32)?, t, &sample, options.steps)?;
        }
        Ok((quant, sample.to_dtype(self.dtype)?))
    }

    /// One evaluation of a DiVAE's diffusion network: the prediction for the noisy `sample`
    /// `(B, C, H, W)` at timestep `t`, conditioned on dequantised latents `(B, latent, h, w)`.
    pub fn diffusion_model_output(
        &self,
        sample: &Tensor,
        t: usize,
        quant: &Tensor,
    ) -> Result<Tensor> {
        let part = self.diffusion.as_ref().ok_or_else(|| self.unavailable())?;
        let quant = self.check_quant(quant)?;
        let (b, c) = (quant.dim(0)?, self.config.n_channels);
        let bad = |reason: String| ModelError::InvalidInput {
            domain: "diffusion decoding".into(),
            reason,
        };
        match sample.dims() {
            &[sb, sc, h, w] if sb == b && sc == c && sample.dtype().is_float() => {
                part.unet.check_size(h, w).map_err(bad)?;
            }
            dims => {
                return Err(bad(format!(
                    "expected a float sample ({b}, {c}, H, W), got {:?} {dims:?}",
                    sample.dtype()
                )));
            }
        }
        if t >= part.scheduler.num_train_timesteps() {
            return Err(bad(format!(
                "timestep {t} is not below {}",
                part.scheduler.num_train_timesteps()
            )));
        }
        let sample = sample.to_device(&self.device)?.to_dtype(self.dtype)?;
        part.unet.forward(&sample, t as f32, &quant)
    }

    /// Token ids → reconstruction (see [`Decoding::dec`]); a DiVAE samples with
    /// [`DiffusionOptions::default`].
    pub fn decode_tokens(&self, tokens: &Tensor) -> Result<Tensor> {
        Ok(self.decode_tokens_detailed(tokens)?.dec)
    }

    /// [`Self::decode_tokens`] with the sampling options of a DiVAE (ignored by a VQ-VAE).
    pub fn decode_tokens_with(
        &self,
        tokens: &Tensor,
        options: &DiffusionOptions,
    ) -> Result<Tensor> {
        Ok(self.decode_tokens_detailed_with(tokens, options)?.dec)
    }

    /// [`Self::decode_tokens`] with every intermediate tensor.
    pub fn decode_tokens_detailed(&self, tokens: &Tensor) -> Result<Decoding> {
        self.decode_tokens_detailed_with(tokens, &DiffusionOptions::default())
    }

    /// [`Self::decode_tokens_with`] with every intermediate tensor.
    pub fn decode_tokens_detailed_with(
        &self,
        tokens: &Tensor,
        options: &DiffusionOptions,
    ) -> Result<Decoding> {
        if !self.can_decode() {
            return Err(self.unavailable());
        }
        let quant = self.tokens_to_embedding(tokens)?;
        let (post_quant, dec) = self.decode_quant_detailed(&quant, options)?;
        Ok(Decoding {
            quant,
            post_quant,
            dec,
        })
    }
}

fn check_training_dtype(dtype: DType) -> Result<()> {
    if matches!(dtype, DType::F32 | DType::F64) {
        Ok(())
    } else {
        Err(ModelError::UnsupportedConfig {
            feature: format!("training a tokenizer in {dtype:?} (F32 or F64 only)"),
        })
    }
}

/// What training supports: a VQ-VAE (deterministic decoder) with the lucid quantizer.
fn check_trainable(config: &VqConfig) -> Result<()> {
    if config.quant_type != QuantType::Lucid {
        return Err(ModelError::UnsupportedConfig {
            feature: "training a tokenizer with the memcodes quantizer".into(),
        });
    }
    if config.is_diffusion() {
        return Err(ModelError::UnsupportedConfig {
            feature: format!("training the diffusion decoder `{}`", config.dec_type),
        });
    }
    if config.undo_std {
        return Err(ModelError::UnsupportedConfig {
            feature: "training with undo_std".into(),
        });
    }
    Ok(())
}

/// Integer ids checked against `0..limit`, as U32 (the index type of `index_select`).
fn checked_ids(ids: &Tensor, limit: usize, what: &str) -> Result<Tensor> {
    let domain = format!("{what}s");
    if ids.dtype().is_float() {
        return Err(ModelError::InvalidInput {
            domain,
            reason: format!("expected integer ids, got dtype {:?}", ids.dtype()),
        });
    }
    if ids.elem_count() == 0 {
        return Err(ModelError::InvalidInput {
            domain,
            reason: format!("empty id tensor {:?}", ids.dims()),
        });
    }
    let wide = ids.to_dtype(DType::I64)?;
    let min = wide.flatten_all()?.min(0)?.to_scalar::<i64>()?;
    let max = wide.flatten_all()?.max(0)?.to_scalar::<i64>()?;
    for id in [min, max] {
        if id < 0 || id as u64 >= limit as u64 {
            return Err(ModelError::TokenOutOfRange {
                domain: domain.clone(),
                id,
                vocab_size: limit,
            });
        }
    }
    Ok(wide.to_dtype(DType::U32)?)
}

/// The config from `config.json` beside the weights, else from the header metadata.
fn read_config(paths: &CheckpointPaths, file: &SafetensorsFile) -> Result<VqConfig> {
    crate::checkpoint::read_config_as(
        paths,
        file,
        VqConfig::from_json_value,
        VqConfig::from_metadata,
    )
}
