//! The FourM encoder–decoder: loading, encoding inputs once, decoding query sets against the
//! encoded context (bidirectional for MaskGIT/ROAR, causal with a KV cache for sequences).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::{
    CheckpointPaths, ParameterInit, Parameters, SafetensorsFile, TensorSource, read_config,
};
use crate::config::ModelConfig;
use crate::embeddings::{DecoderEmbedding, EncoderContent, EncoderEmbedding, gather_rows};
use crate::error::{ModelError, Result};
use crate::layers::{
    AttentionMask, CrossKv, DecoderBlock, EncoderBlock, KvPair, LayerNorm, Linear,
};
use crate::modality::modality_info;

/// How to load a checkpoint.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Compute dtype; weights are converted while loading. F32 (default), BF16 or F16.
    pub dtype: DType,
    pub device: Device,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
        }
    }
}

/// Pick a device by name: `cpu`, `cuda` or `cuda:N`.
pub fn select_device(name: &str) -> Result<Device> {
    let unavailable = |reason: String| ModelError::DeviceUnavailable {
        requested: name.to_owned(),
        reason,
    };
    let ordinal = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => return Err(unavailable("expected `cpu`, `cuda` or `cuda:N`".into())),
        },
    };
    if !cfg!(feature = "cuda") {
        return Err(unavailable(
            "tessera-model was not built with CUDA (enable the `cuda` cargo feature)".into(),
        ));
    }
    Device::new_cuda(ordinal).map_err(|e| unavailable(e.to_string()))
}

/// A `(rows, cols)` boolean mask in the reference convention: `true` = ignore / not present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    rows: usize,
    cols: usize,
    ignored: Vec<bool>,
}

impl Mask {
    pub fn new(rows: usize, cols: usize, ignored: Vec<bool>) -> Result<Self> {
        if ignored.len() != rows * cols {
            return Err(ModelError::InvalidInput {
                domain: "mask".into(),
                reason: format!("{} values for a {rows}x{cols} mask", ignored.len()),
            });
        }
        Ok(Self {
            rows,
            cols,
            ignored,
        })
    }

    /// Every position present (`false` everywhere).
    pub fn all_present(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            ignored: vec![false; rows * cols],
        }
    }

    /// Every position ignored (`true` everywhere).
    pub fn all_ignored(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            ignored: vec![true; rows * cols],
        }
    }

    /// From a `(B, N)` tensor of any dtype; non-zero = ignore.
    pub fn from_tensor(tensor: &Tensor) -> Result<Self> {
        let (rows, cols) = tensor.dims2()?;
        let values = tensor
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self {
            rows,
            cols,
            ignored: values.into_iter().map(|v| v != 0.0).collect(),
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn is_ignored(&self, row: usize, col: usize) -> bool {
        self.ignored[row * self.cols + col]
    }

    pub fn set(&mut self, row: usize, col: usize, ignored: bool) {
        self.ignored[row * self.cols + col] = ignored;
    }

    /// Positions of a row that are present (`false`), ascending.
    pub fn present_in_row(&self, row: usize) -> Vec<usize> {
        (0..self.cols)
            .filter(|&c| !self.is_ignored(row, c))
            .collect()
    }
}

/// The values of one domain.
#[derive(Debug, Clone)]
pub enum DomainValues {
    /// `(B, N)` integer token ids (sequences, image tokens).
    Tokens(Tensor),
    /// `(B, C, H, W)` ImageNet-normalised pixels (`rgb@*`).
    Pixels(Tensor),
    /// `(B, L, E)` pre-computed embeddings (`t5_caption`).
    Embeddings(Tensor),
}

/// One domain fed to the encoder.
#[derive(Debug, Clone)]
pub struct EncoderInput {
    pub domain: String,
    pub values: DomainValues,
    /// `(B, N)`, `true` = not an encoder input. For pixels `N` is the patch count.
    pub input_mask: Mask,
}

/// One domain of a generation state: values with both masks (the reference's mod-dict entry).
#[derive(Debug, Clone)]
pub struct DomainState {
    pub domain: String,
    pub values: DomainValues,
    pub input_mask: Mask,
    /// `false` = to be predicted.
    pub target_mask: Mask,
}

/// The encoder's result for a batch of rows, reusable by any number of decoder passes.
#[derive(Debug, Clone)]
pub struct EncodedContext {
    /// `(B, M, D)` encoder input `x + emb` after the valid-first gather (padding rows zero).
    pub encoder_input: Tensor,
    /// `(B, M, D)` after `encoder_norm`.
    pub encoder_output: Tensor,
    /// `(B, M, D)` `decoder_proj_context(enc_out) + emb`.
    pub context: Tensor,
    /// Valid encoder tokens per row (`M` is their maximum).
    pub tokens_per_row: Vec<usize>,
    cross_kv: Vec<CrossKv>,
    key_padding: Option<AttentionMask>,
    rows_with_keys: Option<Tensor>,
}

impl EncodedContext {
    pub fn batch_size(&self) -> usize {
        self.tokens_per_row.len()
    }

    /// Stack the rows of several contexts into one batch (e.g. the conditional and
    /// unconditional contexts of classifier-free guidance), padding their token axes.
    pub fn concat_rows(contexts: &[&EncodedContext]) -> Result<EncodedContext> {
        let first = contexts.first().ok_or_else(|| ModelError::InvalidInput {
            domain: "context".into(),
            reason: "no contexts to concatenate".into(),
        })?;
        let max_tokens = contexts
            .iter()
            .map(|c| c.encoder_input.dims()[1])
            .max()
            .unwrap_or(0);
        let pad = |t: &Tensor, dim: usize| -> Result<Tensor> {
            let len = t.dims()[dim];
            if len == max_tokens {
                return Ok(t.clone());
            }
            let mut shape = t.dims().to_vec();
            shape[dim] = max_tokens - len;
            let zeros = Tensor::zeros(shape, t.dtype(), t.device())?;
            Ok(Tensor::cat(&[t, &zeros], dim)?)
        };
        let cat = |f: &dyn Fn(&EncodedContext) -> &Tensor, dim: usize| -> Result<Tensor> {
            let parts = contexts
                .iter()
                .map(|c| pad(f(c), dim))
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&parts, 0)?)
        };
        let cross_kv = (0..first.cross_kv.len())
            .map(|i| {
                Ok(CrossKv {
                    keys: cat(&|c: &EncodedContext| &c.cross_kv[i].keys, 2)?,
                    values: cat(&|c: &EncodedContext| &c.cross_kv[i].values, 2)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let tokens_per_row: Vec<usize> = contexts
            .iter()
            .flat_map(|c| c.tokens_per_row.iter().copied())
            .collect();
        let device = first.context.device();
        let (key_padding, rows_with_keys) =
            padding_masks(&tokens_per_row, max_tokens, first.context.dtype(), device)?;
        Ok(EncodedContext {
            encoder_input: cat(&|c: &EncodedContext| &c.encoder_input, 1)?,
            encoder_output: cat(&|c: &EncodedContext| &c.encoder_output, 1)?,
            context: cat(&|c: &EncodedContext| &c.context, 1)?,
            tokens_per_row,
            cross_kv,
            key_padding,
            rows_with_keys,
        })
    }
}

/// Key-padding mask `(B, 1, 1, M)` (None when every row fills `M`) and the zero-row factor.
fn padding_masks(
    tokens_per_row: &[usize],
    max_tokens: usize,
    dtype: DType,
    device: &Device,
) -> Result<(Option<AttentionMask>, Option<Tensor>)> {
    let batch = tokens_per_row.len();
    let key_padding = if tokens_per_row.iter().all(|&n| n == max_tokens) {
        None
    } else {
        let blocked: Vec<u8> = tokens_per_row
            .iter()
            .flat_map(|&n| (0..max_tokens).map(move |j| u8::from(j >= n)))
            .collect();
        Some(AttentionMask {
            blocked: Tensor::from_vec(blocked, (batch, 1, 1, max_tokens), device)?,
        })
    };
    let rows_with_keys = if max_tokens > 0 && tokens_per_row.contains(&0) {
        let factor: Vec<f32> = tokens_per_row
            .iter()
            .map(|&n| if n > 0 { 1.0 } else { 0.0 })
            .collect();
        Some(Tensor::from_vec(factor, (batch, 1, 1, 1), device)?.to_dtype(dtype)?)
    } else {
        None
    };
    Ok((key_padding, rows_with_keys))
}

/// What the decoder's queries are made of.
#[derive(Debug, Clone)]
pub enum QueryContent {
    /// The shared learned mask token (MaskGIT / ROAR queries, image or sequence targets).
    MaskToken,
    /// `(B, n)` ids embedded with the target decoder's own token table (autoregressive decoding).
    Tokens(Vec<Vec<u32>>),
}

/// A set of decoder queries for one target domain, `n` per row.
#[derive(Debug, Clone)]
pub struct QuerySet {
    pub domain: String,
    /// Per row, the query positions: grid indices for image-like domains, target ranks for
    /// sequence domains (rank ≥ the domain's `max_length` uses positional row 0, as in the reference).
    pub positions: Vec<Vec<usize>>,
    pub content: QueryContent,
}

/// Result of a decoder pass.
#[derive(Debug, Clone)]
pub struct DecoderOutput {
    /// `(B, n, D)` decoder input (content + position + modality).
    pub queries: Tensor,
    /// `(B, n, D)` after `decoder_norm`.
    pub hidden: Tensor,
    /// `(B, n, V)` logits of the target domain's head.
    pub logits: Tensor,
}

/// Self-attention keys/values of previous decoder steps, for causal decoding of one domain.
#[derive(Debug, Clone)]
pub struct DecoderCache {
    domain: String,
    rows: usize,
    layers: Vec<Option<KvPair>>,
    len: usize,
}

impl DecoderCache {
    /// Number of tokens already decoded into the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }
}

/// Output of [`FourM::forward_masked_target`].
#[derive(Debug, Clone)]
pub struct MaskedTargetOutput {
    /// `(B, N, V)` logits at every position with `target_mask == false`, ascending.
    pub logits: Tensor,
    /// Those positions per row.
    pub positions: Vec<Vec<usize>>,
    pub context: EncodedContext,
    pub decoder: DecoderOutput,
}

/// The 4M model.
#[derive(Debug, Clone)]
pub struct FourM {
    config: ModelConfig,
    dtype: DType,
    device: Device,
    encoder_embeddings: HashMap<String, EncoderEmbedding>,
    decoder_embeddings: HashMap<String, DecoderEmbedding>,
    encoder: Vec<EncoderBlock>,
    encoder_norm: LayerNorm,
    context_proj: Linear,
    decoder: Vec<DecoderBlock>,
    decoder_norm: LayerNorm,
    /// `(D)`.
    mask_token: Tensor,
    parameter_count: usize,
    file_size: u64,
}

impl FourM {
    /// Load a checkpoint: a directory with `config.json` + `model.safetensors`, or a bare
    /// `.safetensors` with the config in its header metadata.
    pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        if !matches!(options.dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(ModelError::UnsupportedConfig {
                feature: format!("compute dtype {:?}", options.dtype),
            });
        }
        let paths = CheckpointPaths::resolve(path.as_ref())?;
        let file = SafetensorsFile::open(&paths.weights)?;
        let config = read_config(&paths, &file)?;
        let parameter_count = crate::inspect::count_parameters(&config, &file);
        let mut source = TensorSource::new(&file, options.dtype, options.device.clone());
        let model = Self::from_source(&mut source, config, parameter_count, file.file_size())?;
        source.finish()?;
        Ok(model)
    }

    /// Load a checkpoint for training: the same model, with every learned tensor a `Var` (see
    /// [`Parameters`]). Compute dtype F32 or F64.
    pub fn load_trainable(
        path: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, Parameters)> {
        check_training_dtype(dtype)?;
        let paths = CheckpointPaths::resolve(path.as_ref())?;
        let file = SafetensorsFile::open(&paths.weights)?;
        let config = read_config(&paths, &file)?;
        let parameter_count = crate::inspect::count_parameters(&config, &file);
        let mut source = TensorSource::trainable(&file, dtype, device.clone());
        let model = Self::from_source(&mut source, config, parameter_count, file.file_size())?;
        source.finish()?;
        Ok((model, source.into_parameters()))
    }

    /// Create a model for training from `config`, its tensors made by `init` (vocabulary sizes
    /// come from `init.shape_of`), through the same construction code as [`FourM::load`].
    pub fn init_trainable(
        config: ModelConfig,
        init: &mut dyn ParameterInit,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, Parameters)> {
        check_training_dtype(dtype)?;
        let mut source = TensorSource::fresh(init, dtype, device.clone());
        let mut model = Self::from_source(&mut source, config, 0, 0)?;
        let parameters = source.into_parameters();
        model.parameter_count = parameters.element_count();
        Ok((model, parameters))
    }

    fn from_source(
        source: &mut TensorSource,
        config: ModelConfig,
        parameter_count: usize,
        file_size: u64,
    ) -> Result<Self> {
        let d = config.dim;
        let mut decoder_embeddings = HashMap::new();
        for domain in &config.domains_out {
            let info = modality_info(domain).ok_or_else(|| ModelError::UnknownDomain {
                domain: domain.clone(),
            })?;
            if info.has_decoder {
                decoder_embeddings.insert(
                    domain.clone(),
                    DecoderEmbedding::load(source, info, &config)?,
                );
            }
        }
        let mut encoder_embeddings = HashMap::new();
        for domain in &config.domains_in {
            let info = modality_info(domain).ok_or_else(|| ModelError::UnknownDomain {
                domain: domain.clone(),
            })?;
            if !info.has_encoder {
                continue;
            }
            let shared = if config.share_modality_embeddings {
                decoder_embeddings
                    .get(domain)
                    .map(|e: &DecoderEmbedding| &e.modality)
            } else {
                None
            };
            encoder_embeddings.insert(
                domain.clone(),
                EncoderEmbedding::load(source, info, &config, shared)?,
            );
        }
        let encoder = (0..config.encoder_depth)
            .map(|i| EncoderBlock::load(source, &format!("encoder.{i}"), &config))
            .collect::<Result<Vec<_>>>()?;
        let encoder_norm = LayerNorm::load_with_bias(source, "encoder_norm", d, config.norm_bias)?;
        let context_proj = Linear::load(source, "decoder_proj_context", d, d, true)?;
        let decoder = (0..config.decoder_depth)
            .map(|i| DecoderBlock::load(source, &format!("decoder.{i}"), &config))
            .collect::<Result<Vec<_>>>()?;
        let decoder_norm = LayerNorm::load_with_bias(source, "decoder_norm", d, config.norm_bias)?;
        let mask_token = source.get("mask_token", &[1, 1, d])?.reshape(d)?;
        Ok(Self {
            dtype: source.dtype(),
            device: source.device().clone(),
            config,
            encoder_embeddings,
            decoder_embeddings,
            encoder,
            encoder_norm,
            context_proj,
            decoder,
            decoder_norm,
            mask_token,
            parameter_count,
            file_size,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Learned parameters (buffers and shared duplicates excluded).
    pub fn parameter_count(&self) -> usize {
        self.parameter_count
    }

    /// Size of the weights file in bytes.
    pub fn weights_file_size(&self) -> u64 {
        self.file_size
    }

    pub fn encoder_embedding(&self, domain: &str) -> Option<&EncoderEmbedding> {
        self.encoder_embeddings.get(domain)
    }

    pub fn decoder_embedding(&self, domain: &str) -> Option<&DecoderEmbedding> {
        self.decoder_embeddings.get(domain)
    }

    /// Vocabulary size of a domain (decoder head if it has one, else encoder table).
    pub fn vocab_size(&self, domain: &str) -> Option<usize> {
        self.decoder_embeddings
            .get(domain)
            .map(|e| e.vocab_size())
            .or_else(|| {
                self.encoder_embeddings
                    .get(domain)
                    .and_then(|e| e.vocab_size())
            })
    }

    fn decoder_for(&self, domain: &str) -> Result<&DecoderEmbedding> {
        self.decoder_embeddings
            .get(domain)
            .ok_or_else(|| ModelError::NotADecoderDomain {
                domain: domain.to_owned(),
            })
    }

    /// Content `x` and embedding `emb` `(B, N, D)` of one input, plus the per-row valid positions.
    fn embed_input(&self, input: &EncoderInput) -> Result<(Tensor, Tensor)> {
        let embedding = self.encoder_embeddings.get(&input.domain).ok_or_else(|| {
            ModelError::NotAnEncoderDomain {
                domain: input.domain.clone(),
            }
        })?;
        let invalid = |reason: String| ModelError::InvalidInput {
            domain: input.domain.clone(),
            reason,
        };
        let (batch, n) = (input.input_mask.rows(), input.input_mask.cols());
        let d = self.config.dim;
        let content = match (&embedding.content, &input.values) {
            (EncoderContent::Tokens { table }, DomainValues::Tokens(ids)) => {
                let (b, len) = ids.dims2()?;
                if (b, len) != (batch, n) {
                    return Err(invalid(format!(
                        "token tensor {:?} does not match the mask {batch}x{n}",
                        ids.dims()
                    )));
                }
                let ids = checked_ids(ids, table.dims()[0], &input.domain)?;
                gather_rows(table, &ids, batch, n, &self.device)?
            }
            (
                EncoderContent::Pixels {
                    proj,
                    channels,
                    patch_size,
                    side,
                },
                DomainValues::Pixels(pixels),
            ) => {
                let expected = [batch, *channels, side * patch_size, side * patch_size];
                if pixels.dims() != expected || n != side * side {
                    return Err(invalid(format!(
                        "pixels {:?} with a {batch}x{n} mask; expected {expected:?} and {} patches",
                        pixels.dims(),
                        side * side
                    )));
                }
                let p = *patch_size;
                // Channel-last patch vectors: (ph, pw, c) with c fastest.
                let patches = pixels
                    .to_dtype(self.dtype)?
                    .reshape((batch, *channels, *side, p, *side, p))?
                    .permute((0, 2, 4, 3, 5, 1))?
                    .contiguous()?
                    .reshape((batch, n, p * p * channels))?;
                proj.forward(&patches)?
            }
            (
                EncoderContent::Embeddings {
                    proj,
                    embedding_dim,
                },
                DomainValues::Embeddings(values),
            ) => {
                let (b, len, e) = values.dims3()?;
                if (b, len, e) != (batch, n, *embedding_dim) {
                    return Err(invalid(format!(
                        "embeddings {:?} do not match the mask {batch}x{n} and width {embedding_dim}",
                        values.dims()
                    )));
                }
                proj.forward(&values.to_dtype(self.dtype)?)?
            }
            _ => {
                return Err(invalid(
                    "value kind does not match the domain's embedding".into(),
                ));
            }
        };
        let positions = if embedding.ranked_positions {
            // Rank among the row's valid tokens; ignored tokens are dropped later.
            let mut rows = Vec::with_capacity(batch * n);
            for r in 0..batch {
                let mut rank = 0u32;
                for c in 0..n {
                    if input.input_mask.is_ignored(r, c) {
                        rows.push(0);
                    } else {
                        if rank as usize >= embedding.table_len() {
                            return Err(invalid(format!(
                                "more than {} valid tokens",
                                embedding.table_len()
                            )));
                        }
                        rows.push(rank);
                        rank += 1;
                    }
                }
            }
            gather_rows(&embedding.positions, &rows, batch, n, &self.device)?
        } else {
            if n != embedding.table_len() {
                return Err(invalid(format!(
                    "{n} tokens given, the domain has exactly {}",
                    embedding.table_len()
                )));
            }
            embedding
                .positions
                .unsqueeze(0)?
                .broadcast_as((batch, n, d))?
        };
        let emb = positions.broadcast_add(&embedding.modality)?;
        Ok((content, emb))
    }

    /// Run the encoder over the valid tokens of `inputs` (concatenated in the given order, valid
    /// tokens first) and prepare the decoder context.
    pub fn encode(&self, inputs: &[EncoderInput]) -> Result<EncodedContext> {
        let batch =
            match inputs.first() {
                Some(first) => first.input_mask.rows(),
                None => return Err(ModelError::InvalidInput {
                    domain: "encoder".into(),
                    reason:
                        "no inputs; pass at least one (fully masked) domain to fix the batch size"
                            .into(),
                }),
            };
        let d = self.config.dim;
        let mut contents = Vec::with_capacity(inputs.len());
        let mut embs = Vec::with_capacity(inputs.len());
        let mut valid: Vec<Vec<usize>> = vec![Vec::new(); batch];
        let mut offset = 0;
        for input in inputs {
            if input.input_mask.rows() != batch {
                return Err(ModelError::BatchMismatch {
                    what: format!("input mask of `{}`", input.domain),
                    expected: batch,
                    found: input.input_mask.rows(),
                });
            }
            let (x, emb) = self.embed_input(input)?;
            contents.push(x);
            embs.push(emb);
            for (r, row) in valid.iter_mut().enumerate() {
                row.extend(
                    input
                        .input_mask
                        .present_in_row(r)
                        .into_iter()
                        .map(|c| offset + c),
                );
            }
            offset += input.input_mask.cols();
        }
        let total = offset;
        let tokens_per_row: Vec<usize> = valid.iter().map(Vec::len).collect();
        let max_tokens = tokens_per_row.iter().copied().max().unwrap_or(0);
        // Valid-first gather through one index_select; padding slots read an appended zero row.
        let zero_row = (batch * total) as u32;
        let index: Vec<u32> = valid
            .iter()
            .enumerate()
            .flat_map(|(r, row)| {
                (0..max_tokens)
                    .map(move |j| row.get(j).map_or(zero_row, |&c| (r * total + c) as u32))
            })
            .collect();
        let gather = |parts: &[Tensor]| -> Result<Tensor> {
            let all = Tensor::cat(parts, 1)?.reshape((batch * total, d))?;
            let all = Tensor::cat(
                &[&all, &Tensor::zeros((1, d), self.dtype, &self.device)?],
                0,
            )?;
            gather_rows(&all, &index, batch, max_tokens, &self.device)
        };
        let x = gather(&contents)?;
        let emb = gather(&embs)?;
        let (key_padding, rows_with_keys) =
            padding_masks(&tokens_per_row, max_tokens, self.dtype, &self.device)?;
        let encoder_input = (&x + &emb)?;
        let heads = self.config.num_heads;
        let head_dim = self.config.head_dim();
        if max_tokens == 0 {
            let empty = Tensor::zeros((batch, 0, d), self.dtype, &self.device)?;
            let empty_kv = Tensor::zeros((batch, heads, 0, head_dim), self.dtype, &self.device)?;
            let cross_kv = self
                .decoder
                .iter()
                .map(|_| CrossKv {
                    keys: empty_kv.clone(),
                    values: empty_kv.clone(),
                })
                .collect();
            return Ok(EncodedContext {
                encoder_input,
                encoder_output: empty.clone(),
                context: empty,
                tokens_per_row,
                cross_kv,
                key_padding,
                rows_with_keys,
            });
        }
        let mut hidden = encoder_input.clone();
        for block in &self.encoder {
            hidden = block.forward(&hidden, key_padding.as_ref())?;
        }
        let encoder_output = self.encoder_norm.forward(&hidden)?;
        let context = (self.context_proj.forward(&encoder_output)? + &emb)?;
        let cross_kv = self
            .decoder
            .iter()
            .map(|block| block.context_kv(&context))
            .collect::<Result<Vec<_>>>()?;
        Ok(EncodedContext {
            encoder_input,
            encoder_output,
            context,
            tokens_per_row,
            cross_kv,
            key_padding,
            rows_with_keys,
        })
    }

    /// `context` with every decoder block's cross-attention keys/values computed again from its
    /// context tensor (`context_norm`, then the `kv` projection). The reference's decoder repeats
    /// this work in every forward pass, so a reference-faithful baseline (benchmarks, checks that
    /// caching it changes nothing) calls this before each pass; [`FourM::encode`] computes the
    /// same values once. Padding slots of a context built by [`EncodedContext::concat_rows`] get
    /// the projection of a zero token instead of zeros; they are masked out either way.
    pub fn recompute_cross_kv(&self, context: &EncodedContext) -> Result<EncodedContext> {
        if context.context.dim(1)? == 0 {
            // No encoder tokens: the zero-length keys/values from `encode` are already exact.
            return Ok(context.clone());
        }
        let cross_kv = self
            .decoder
            .iter()
            .map(|block| block.context_kv(&context.context))
            .collect::<Result<Vec<_>>>()?;
        Ok(EncodedContext {
            cross_kv,
            ..context.clone()
        })
    }

    /// Decoder input `(B, n, D)` for a query set.
    pub fn embed_queries(&self, queries: &QuerySet) -> Result<Tensor> {
        let embedding = self.decoder_for(&queries.domain)?;
        let batch = queries.positions.len();
        let n = queries.positions.first().map_or(0, Vec::len);
        let d = self.config.dim;
        if queries.positions.iter().any(|row| row.len() != n) {
            return Err(ModelError::InvalidInput {
                domain: queries.domain.clone(),
                reason: "every row needs the same number of queries".into(),
            });
        }
        let rows = queries
            .positions
            .iter()
            .flatten()
            .map(|&p| embedding.table_row(p).map(|r| r as u32))
            .collect::<Result<Vec<_>>>()?;
        let emb = gather_rows(&embedding.positions, &rows, batch, n, &self.device)?
            .broadcast_add(&embedding.modality)?;
        let content = match &queries.content {
            QueryContent::MaskToken => return Ok(emb.broadcast_add(&self.mask_token)?),
            QueryContent::Tokens(ids) => {
                if ids.len() != batch || ids.iter().any(|row| row.len() != n) {
                    return Err(ModelError::InvalidInput {
                        domain: queries.domain.clone(),
                        reason: "query tokens must match the query positions".into(),
                    });
                }
                let vocab = embedding.token_table.dims()[0];
                if let Some(&bad) = ids.iter().flatten().find(|&&id| id as usize >= vocab) {
                    return Err(ModelError::TokenOutOfRange {
                        domain: queries.domain.clone(),
                        id: bad as i64,
                        vocab_size: vocab,
                    });
                }
                let flat: Vec<u32> = ids.iter().flatten().copied().collect();
                gather_rows(&embedding.token_table, &flat, batch, n, &self.device)?
            }
        };
        debug_assert_eq!(content.dims(), &[batch, n, d]);
        Ok((content + emb)?)
    }

    fn check_rows(&self, context: &EncodedContext, queries: &QuerySet) -> Result<()> {
        if queries.positions.len() != context.batch_size() {
            return Err(ModelError::BatchMismatch {
                what: format!("queries of `{}`", queries.domain),
                expected: context.batch_size(),
                found: queries.positions.len(),
            });
        }
        Ok(())
    }

    fn run_decoder(
        &self,
        context: &EncodedContext,
        queries: &QuerySet,
        self_mask: Option<&AttentionMask>,
        cache: Option<&mut DecoderCache>,
    ) -> Result<DecoderOutput> {
        let input = self.embed_queries(queries)?;
        let hidden = self.decoder_blocks(context, &input, self_mask, cache)?;
        let logits = self.decoder_for(&queries.domain)?.head.forward(&hidden)?;
        Ok(DecoderOutput {
            queries: input,
            hidden,
            logits,
        })
    }

    /// The decoder blocks and the final norm over embedded queries `(B, n, D)`.
    fn decoder_blocks(
        &self,
        context: &EncodedContext,
        input: &Tensor,
        self_mask: Option<&AttentionMask>,
        mut cache: Option<&mut DecoderCache>,
    ) -> Result<Tensor> {
        let mut hidden = input.clone();
        for (i, block) in self.decoder.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            hidden = block.forward(
                &hidden,
                self_mask,
                layer_cache,
                &context.cross_kv[i],
                context.key_padding.as_ref(),
                context.rows_with_keys.as_ref(),
            )?;
        }
        self.decoder_norm.forward(&hidden)
    }

    /// Decode a query set with unmasked (bidirectional) self-attention among the queries: the
    /// MaskGIT / ROAR pass. The same context can serve any number of query sets.
    pub fn decode(&self, context: &EncodedContext, queries: &QuerySet) -> Result<DecoderOutput> {
        self.check_rows(context, queries)?;
        self.run_decoder(context, queries, None, None)
    }

    /// One bidirectional decoder pass for several query sets whose rows follow each other in
    /// `context` (the first set's rows first), each set with its own target domain: the decoder
    /// blocks are shared by every domain, so rows generating `tok_depth@224` and rows generating
    /// `tok_normal@224` go through them together and only the query embeddings and the heads are
    /// per set. Every row needs the same number of queries. Returns one output per set.
    pub fn decode_rows(
        &self,
        context: &EncodedContext,
        sets: &[QuerySet],
    ) -> Result<Vec<DecoderOutput>> {
        let rows: usize = sets.iter().map(|set| set.positions.len()).sum();
        if rows != context.batch_size() {
            return Err(ModelError::BatchMismatch {
                what: "query sets".into(),
                expected: context.batch_size(),
                found: rows,
            });
        }
        let n = sets
            .first()
            .and_then(|set| set.positions.first())
            .map_or(0, Vec::len);
        if let Some(set) = sets
            .iter()
            .find(|set| set.positions.iter().any(|row| row.len() != n))
        {
            return Err(ModelError::InvalidInput {
                domain: set.domain.clone(),
                reason: format!("every row of a shared decoder pass needs {n} queries"),
            });
        }
        let inputs = sets
            .iter()
            .map(|set| self.embed_queries(set))
            .collect::<Result<Vec<_>>>()?;
        let input = Tensor::cat(&inputs, 0)?;
        let hidden = self.decoder_blocks(context, &input, None, None)?;
        self.outputs_by_set(sets, inputs, &hidden)
    }

    /// Splits the rows of a shared decoder pass back into one output per query set, each through
    /// its own domain's head.
    fn outputs_by_set(
        &self,
        sets: &[QuerySet],
        inputs: Vec<Tensor>,
        hidden: &Tensor,
    ) -> Result<Vec<DecoderOutput>> {
        let mut outputs = Vec::with_capacity(sets.len());
        let mut start = 0;
        for (set, queries) in sets.iter().zip(inputs) {
            let len = set.positions.len();
            let hidden = hidden.narrow(0, start, len)?;
            let logits = self.decoder_for(&set.domain)?.head.forward(&hidden)?;
            outputs.push(DecoderOutput {
                queries,
                hidden,
                logits,
            });
            start += len;
        }
        Ok(outputs)
    }

    /// An empty self-attention cache for causal decoding of `domain` with `rows` rows.
    pub fn new_cache(&self, domain: &str, rows: usize) -> Result<DecoderCache> {
        self.decoder_for(domain)?;
        Ok(DecoderCache {
            domain: domain.to_owned(),
            rows,
            layers: vec![None; self.decoder.len()],
            len: 0,
        })
    }

    /// An empty self-attention cache for causal decoding of several query sets at once
    /// ([`FourM::decode_causal_rows`]): `domains` in row order, `rows` in all.
    pub fn new_cache_rows(&self, domains: &[&str], rows: usize) -> Result<DecoderCache> {
        for domain in domains {
            self.decoder_for(domain)?;
        }
        Ok(DecoderCache {
            domain: domains.join("+"),
            rows,
            layers: vec![None; self.decoder.len()],
            len: 0,
        })
    }

    /// [`FourM::decode_causal`] for several query sets whose rows follow each other in `context`,
    /// each with its own domain (e.g. two sequence targets decoded in lockstep): the blocks and
    /// the cache are shared, the query embeddings and heads are per set. `cache` comes from
    /// [`FourM::new_cache_rows`] with the sets' domains.
    pub fn decode_causal_rows(
        &self,
        context: &EncodedContext,
        cache: &mut DecoderCache,
        sets: &[QuerySet],
    ) -> Result<Vec<DecoderOutput>> {
        let domains: Vec<&str> = sets.iter().map(|set| set.domain.as_str()).collect();
        let rows: usize = sets.iter().map(|set| set.positions.len()).sum();
        if cache.domain != domains.join("+")
            || cache.rows != context.batch_size()
            || rows != cache.rows
        {
            return Err(ModelError::InvalidInput {
                domain: domains.join("+"),
                reason: format!(
                    "cache was made for `{}` with {} rows; {rows} query rows, a context of {}",
                    cache.domain,
                    cache.rows,
                    context.batch_size()
                ),
            });
        }
        let n = sets
            .first()
            .and_then(|set| set.positions.first())
            .map_or(0, Vec::len);
        if let Some(set) = sets
            .iter()
            .find(|set| set.positions.iter().any(|row| row.len() != n))
        {
            return Err(ModelError::InvalidInput {
                domain: set.domain.clone(),
                reason: format!("every row of a shared decoder pass needs {n} queries"),
            });
        }
        let past = cache.len;
        let mask = if n > 1 {
            let blocked: Vec<u8> = (0..n)
                .flat_map(|i| (0..past + n).map(move |j| u8::from(j > past + i)))
                .collect();
            Some(AttentionMask {
                blocked: Tensor::from_vec(blocked, (1, 1, n, past + n), &self.device)?,
            })
        } else {
            None
        };
        let inputs = sets
            .iter()
            .map(|set| self.embed_queries(set))
            .collect::<Result<Vec<_>>>()?;
        let input = Tensor::cat(&inputs, 0)?;
        let hidden = self.decoder_blocks(context, &input, mask.as_ref(), Some(cache))?;
        cache.len += n;
        self.outputs_by_set(sets, inputs, &hidden)
    }

    /// Causal decoding step: the new queries attend to every cached token and causally among
    /// themselves; their keys/values are appended to `cache`. Feeding a prefix in one call or token by
    /// token gives the same logits (the reference recomputes the prefix with a causal mask).
    pub fn decode_causal(
        &self,
        context: &EncodedContext,
        cache: &mut DecoderCache,
        queries: &QuerySet,
    ) -> Result<DecoderOutput> {
        self.check_rows(context, queries)?;
        if cache.domain != queries.domain || cache.rows != context.batch_size() {
            return Err(ModelError::InvalidInput {
                domain: queries.domain.clone(),
                reason: format!(
                    "cache was made for `{}` with {} rows",
                    cache.domain, cache.rows
                ),
            });
        }
        let n = queries.positions.first().map_or(0, Vec::len);
        let past = cache.len;
        let mask = if n > 1 {
            let blocked: Vec<u8> = (0..n)
                .flat_map(|i| (0..past + n).map(move |j| u8::from(j > past + i)))
                .collect();
            Some(AttentionMask {
                blocked: Tensor::from_vec(blocked, (1, 1, n, past + n), &self.device)?,
            })
        } else {
            None
        };
        let out = self.run_decoder(context, queries, mask.as_ref(), Some(cache))?;
        cache.len += n;
        Ok(out)
    }

    /// The reference's `forward_enc_dec_maskgit_batched`: encode every domain's inputs (in the
    /// given order), then query every position of `target` with `target_mask == false` with the mask
    /// token, ascending, bidirectionally.
    pub fn forward_masked_target(
        &self,
        states: &[DomainState],
        target: &str,
    ) -> Result<MaskedTargetOutput> {
        let target_embedding = self.decoder_for(target)?;
        let mut inputs = Vec::with_capacity(states.len());
        for state in states {
            if self.encoder_embeddings.contains_key(&state.domain) {
                inputs.push(EncoderInput {
                    domain: state.domain.clone(),
                    values: state.values.clone(),
                    input_mask: state.input_mask.clone(),
                });
            } else if (0..state.input_mask.rows())
                .any(|r| !state.input_mask.present_in_row(r).is_empty())
            {
                return Err(ModelError::NotAnEncoderDomain {
                    domain: state.domain.clone(),
                });
            }
        }
        let target_state =
            states
                .iter()
                .find(|s| s.domain == target)
                .ok_or_else(|| ModelError::InvalidInput {
                    domain: target.to_owned(),
                    reason: "the target domain has no state".into(),
                })?;
        let positions: Vec<Vec<usize>> = (0..target_state.target_mask.rows())
            .map(|r| target_state.target_mask.present_in_row(r))
            .collect();
        let n = positions.first().map_or(0, Vec::len);
        if positions.iter().any(|p| p.len() != n) {
            return Err(ModelError::InvalidInput {
                domain: target.to_owned(),
                reason: "rows have different numbers of target positions".into(),
            });
        }
        // Image targets are addressed by grid slot, sequence targets by rank among the targets.
        let query_positions = if target_embedding.rank_limit.is_some() {
            vec![(0..n).collect(); positions.len()]
        } else {
            positions.clone()
        };
        let context = self.encode(&inputs)?;
        let queries = QuerySet {
            domain: target.to_owned(),
            positions: query_positions,
            content: QueryContent::MaskToken,
        };
        let decoder = self.decode(&context, &queries)?;
        Ok(MaskedTargetOutput {
            logits: decoder.logits.clone(),
            positions,
            context,
            decoder,
        })
    }

    /// Decode several query sets jointly, as in training: their queries are concatenated (in the
    /// given order) into one decoder sequence whose self-attention follows `self_mask`, a
    /// `(B, 1, N, N)` u8 tensor (1 = blocked, `N` the total query count) built by the caller (the
    /// reference's `adapt_decoder_attention_mask`). Returns each set's `(B, n, V)` logits.
    pub fn decode_joint(
        &self,
        context: &EncodedContext,
        query_sets: &[QuerySet],
        self_mask: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let mut inputs = Vec::with_capacity(query_sets.len());
        for queries in query_sets {
            self.check_rows(context, queries)?;
            inputs.push(self.embed_queries(queries)?);
        }
        let lengths: Vec<usize> = inputs.iter().map(|t| t.dims()[1]).collect();
        let hidden = self.decode_masked(context, Tensor::cat(&inputs, 1)?, self_mask)?;
        let mut offset = 0;
        let mut logits = Vec::with_capacity(query_sets.len());
        for (queries, n) in query_sets.iter().zip(lengths) {
            let part = hidden.narrow(1, offset, n)?;
            logits.push(self.decoder_for(&queries.domain)?.head.forward(&part)?);
            offset += n;
        }
        Ok(logits)
    }

    /// [`Self::decode_joint`] without the padding: in set `s`, row `r` has `valid[s][r]` real
    /// queries (its first ones), and only those are decoded. Each row's sequence is its real
    /// queries, set after set (the reference's valid-first gather of the decoder tokens), padded to
    /// the longest row; `self_mask` is `(B, 1, T, T)` in that packed layout (1 = blocked). Returns
    /// each set's logits for its real queries, row after row: `(Σ_r valid[s][r], V)`.
    ///
    /// Per-set padding makes a batch's decoder as long as the sum of every set's longest row,
    /// several times the target budget when the Dirichlet draw gives different rows different
    /// domains; packing keeps it at the largest budget.
    pub fn decode_packed(
        &self,
        context: &EncodedContext,
        query_sets: &[QuerySet],
        valid: &[Vec<usize>],
        self_mask: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let batch = context.batch_size();
        let d = self.config.dim;
        if valid.len() != query_sets.len() {
            return Err(ModelError::InvalidInput {
                domain: "decoder".into(),
                reason: format!(
                    "{} valid-count lists for {} query sets",
                    valid.len(),
                    query_sets.len()
                ),
            });
        }
        let mut inputs = Vec::with_capacity(query_sets.len());
        let mut lengths = Vec::with_capacity(query_sets.len());
        for (queries, counts) in query_sets.iter().zip(valid) {
            self.check_rows(context, queries)?;
            let embedded = self.embed_queries(queries)?;
            let n = embedded.dims()[1];
            if counts.len() != batch || counts.iter().any(|&c| c > n) {
                return Err(ModelError::InvalidInput {
                    domain: queries.domain.clone(),
                    reason: format!("valid counts {counts:?} for {batch} rows of {n} queries"),
                });
            }
            lengths.push(n);
            inputs.push(embedded);
        }
        let padded: usize = lengths.iter().sum();
        let per_row: Vec<usize> = (0..batch)
            .map(|r| valid.iter().map(|counts| counts[r]).sum())
            .collect();
        let packed = per_row.iter().copied().max().unwrap_or(0);
        // Row r of the packed batch reads its real queries from the padded concatenation;
        // padding slots read an appended zero row.
        let zero_row = (batch * padded) as u32;
        let mut index = Vec::with_capacity(batch * packed);
        // Where set s's real queries of row r start in the packed batch (flattened).
        let mut starts = vec![vec![0usize; batch]; query_sets.len()];
        for r in 0..batch {
            let mut set_offset = 0;
            let mut filled = 0;
            for (s, &n) in lengths.iter().enumerate() {
                starts[s][r] = r * packed + filled;
                for q in 0..valid[s][r] {
                    index.push((r * padded + set_offset + q) as u32);
                }
                filled += valid[s][r];
                set_offset += n;
            }
            index.extend(std::iter::repeat_n(zero_row, packed - filled));
        }
        let all = Tensor::cat(&inputs, 1)?.reshape((batch * padded, d))?;
        let all = Tensor::cat(
            &[&all, &Tensor::zeros((1, d), self.dtype, &self.device)?],
            0,
        )?;
        let queries = gather_rows(&all, &index, batch, packed, &self.device)?;
        let hidden = self
            .decode_masked(context, queries, self_mask)?
            .reshape((batch * packed, d))?;
        let mut logits = Vec::with_capacity(query_sets.len());
        for (s, queries) in query_sets.iter().enumerate() {
            let set_starts = &starts[s];
            let rows: Vec<u32> = (0..batch)
                .flat_map(|r| (0..valid[s][r]).map(move |q| (set_starts[r] + q) as u32))
                .collect();
            let picked = Tensor::from_vec(rows.clone(), rows.len(), &self.device)?;
            let part = hidden.index_select(&picked, 0)?;
            logits.push(self.decoder_for(&queries.domain)?.head.forward(&part)?);
        }
        Ok(logits)
    }

    /// Every decoder block over `queries` with the self-attention mask `self_mask` (1 = blocked)
    /// and the context's cross-attention, then `decoder_norm`.
    fn decode_masked(
        &self,
        context: &EncodedContext,
        queries: Tensor,
        self_mask: &Tensor,
    ) -> Result<Tensor> {
        let (batch, n, _) = queries.dims3()?;
        let expected = [batch, 1, n, n];
        if self_mask.dims() != expected {
            return Err(ModelError::InvalidInput {
                domain: "decoder".into(),
                reason: format!(
                    "self-attention mask {:?}, expected {expected:?}",
                    self_mask.dims()
                ),
            });
        }
        let mask = AttentionMask {
            blocked: self_mask.clone(),
        };
        let mut hidden = queries;
        for (i, block) in self.decoder.iter().enumerate() {
            hidden = block.forward(
                &hidden,
                Some(&mask),
                None,
                &context.cross_kv[i],
                context.key_padding.as_ref(),
                context.rows_with_keys.as_ref(),
            )?;
        }
        self.decoder_norm.forward(&hidden)
    }

    /// Logits of `domain`'s head for decoder hidden states `(B, n, D)`.
    pub fn logits(&self, domain: &str, hidden: &Tensor) -> Result<Tensor> {
        self.decoder_for(domain)?.head.forward(hidden)
    }
}

/// Training computes in F32 (or F64, for gradient checks); reduced precision would need loss
/// scaling, which is not built.
fn check_training_dtype(dtype: DType) -> Result<()> {
    if matches!(dtype, DType::F32 | DType::F64) {
        Ok(())
    } else {
        Err(ModelError::UnsupportedConfig {
            feature: format!("training in {dtype:?} (F32 or F64 only)"),
        })
    }
}

/// Token ids of a tensor as u32, each checked against the vocabulary.
fn checked_ids(ids: &Tensor, vocab_size: usize, domain: &str) -> Result<Vec<u32>> {
    let values: Vec<i64> = ids.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?;
    values
        .into_iter()
        .map(|id| {
            if id < 0 || id as usize >= vocab_size {
                Err(ModelError::TokenOutOfRange {
                    domain: domain.to_owned(),
                    id,
                    vocab_size,
                })
            } else {
                Ok(id as u32)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_selection() {
        assert!(matches!(select_device("cpu"), Ok(Device::Cpu)));
        assert!(matches!(
            select_device("tpu"),
            Err(ModelError::DeviceUnavailable { .. })
        ));
        #[cfg(not(feature = "cuda"))]
        {
            let err = select_device("cuda:0").unwrap_err();
            assert!(err.to_string().contains("not built with CUDA"), "{err}");
        }
    }

    #[test]
    fn masks_follow_the_reference_convention() {
        let t = Tensor::new(&[[0u8, 1, 0], [1, 1, 0]], &Device::Cpu).unwrap();
        let mask = Mask::from_tensor(&t).unwrap();
        assert_eq!(mask.present_in_row(0), vec![0, 2]);
        assert_eq!(mask.present_in_row(1), vec![2]);
        assert!(Mask::new(2, 2, vec![true; 3]).is_err());
    }
}
