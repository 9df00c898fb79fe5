//! Per-domain embedding modules: encoder embeddings (content + position + modality vectors) and
//! decoder embeddings (query positions, the decoder's own token table, output head).

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::TensorSource;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::layers::Linear;
use crate::modality::{ModalityInfo, ModalityKind};
use crate::posemb::{sincos_1d, sincos_2d};

/// Every sequence modality's positional buffer has 512 rows (a slicing quirk of the reference).
pub const SEQUENCE_TABLE_LEN: usize = 512;

/// Tolerance for checking a stored sin-cos buffer against the computed table. The reference
/// computes the angles in f32 (error ≈ position · 6e-8 ≤ 3e-5 at position 511); a wrong channel
/// layout differs by O(1).
const SINCOS_TOLERANCE: f32 = 1e-3;

/// Which positional table a domain uses.
#[derive(Debug, Clone, Copy)]
enum TableKind {
    Sincos1d,
    Sincos2d { side: usize },
    Learned,
}

/// Load a positional table `(1, rows, D)` as `(rows, D)` in the model dtype. Sin-cos tables are
/// fixed buffers, checked against the computed values (and computed when a model is created);
/// learned tables are parameters.
fn load_positions(
    source: &mut TensorSource,
    name: &str,
    rows: usize,
    dim: usize,
    kind: TableKind,
) -> Result<Tensor> {
    let computed = match kind {
        TableKind::Sincos1d => sincos_1d(rows, dim),
        TableKind::Sincos2d { side } => sincos_2d(side, side, dim),
        TableKind::Learned => {
            return Ok(source.get(name, &[1, rows, dim])?.reshape((rows, dim))?);
        }
    };
    let stored = source
        .get_buffer(name, &[1, rows, dim], DType::F32, || computed.clone())?
        .reshape((rows, dim))?;
    let stored_values = stored.flatten_all()?.to_vec1::<f32>()?;
    let max_abs_diff = stored_values
        .iter()
        .zip(&computed)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    if max_abs_diff.is_nan() || max_abs_diff > SINCOS_TOLERANCE {
        return Err(ModelError::PositionalTableMismatch {
            name: name.to_owned(),
            max_abs_diff,
            tolerance: SINCOS_TOLERANCE,
        });
    }
    Ok(stored.to_dtype(source.dtype())?)
}

/// Load a `(V, D)` table whose `V` comes from the checkpoint.
fn load_vocab_table(source: &mut TensorSource, name: &str, dim: usize) -> Result<Tensor> {
    let shape = source
        .shape_of(name)
        .ok_or_else(|| ModelError::MissingTensor {
            name: name.to_owned(),
            expected: format!("[vocab_size, {dim}]"),
        })?
        .to_vec();
    if shape.len() != 2 || shape[1] != dim || shape[0] == 0 {
        return Err(ModelError::ShapeMismatch {
            name: name.to_owned(),
            expected: vec![shape.first().copied().unwrap_or(0).max(1), dim],
            found: shape,
        });
    }
    source.get(name, &shape)
}

fn load_mod_emb(source: &mut TensorSource, name: &str, dim: usize) -> Result<Tensor> {
    Ok(source.get(name, &[1, 1, dim])?.reshape(dim)?)
}

/// Grid side and token count of an image-like domain.
pub fn image_grid(info: &ModalityInfo, config: &ModelConfig) -> Result<(usize, usize)> {
    let (input_size, patch_size) = match info.kind {
        ModalityKind::Pixels {
            input_size,
            patch_size,
            ..
        } => (input_size, patch_size),
        ModalityKind::ImageTokens {
            input_size,
            patch_size,
            ..
        } => (
            input_size.unwrap_or(config.image_size),
            patch_size.unwrap_or(config.patch_size),
        ),
        _ => {
            return Err(ModelError::InvalidInput {
                domain: info.name.into(),
                reason: "not an image-like domain".into(),
            });
        }
    };
    if patch_size == 0 || !input_size.is_multiple_of(patch_size) {
        return Err(ModelError::InvalidConfig {
            field: "image_size".into(),
            reason: format!(
                "{} needs image size {input_size} divisible by patch size {patch_size}",
                info.name
            ),
        });
    }
    let side = input_size / patch_size;
    Ok((side, side * side))
}

/// Content layer of an encoder embedding.
#[derive(Debug, Clone)]
pub enum EncoderContent {
    /// `token_emb` lookup (sequences and image tokens).
    Tokens { table: Tensor },
    /// Channel-last patches → `proj` (no bias).
    Pixels {
        proj: Linear,
        channels: usize,
        patch_size: usize,
        side: usize,
    },
    /// `emb_proj` (with bias) of pre-computed embeddings.
    Embeddings { proj: Linear, embedding_dim: usize },
}

/// One domain's encoder embedding.
#[derive(Debug, Clone)]
pub struct EncoderEmbedding {
    pub info: &'static ModalityInfo,
    pub content: EncoderContent,
    /// `(rows, D)`: 512 rows for sequences, the grid for images.
    pub positions: Tensor,
    /// `(D)`.
    pub modality: Tensor,
    /// Positions are ranks among the valid tokens (sequences) rather than fixed slots (images).
    pub ranked_positions: bool,
}

impl EncoderEmbedding {
    pub fn load(
        source: &mut TensorSource,
        info: &'static ModalityInfo,
        config: &ModelConfig,
        shared_modality: Option<&Tensor>,
    ) -> Result<Self> {
        let d = config.dim;
        let prefix = format!("encoder_embeddings.{}", info.name);
        let modality = match shared_modality {
            Some(shared) => {
                // The decoder's `mod_emb` is the parameter PyTorch ends up with when both are loaded.
                source.alias(
                    &format!("{prefix}.mod_emb"),
                    &[1, 1, d],
                    &format!("decoder_embeddings.{}.mod_emb", info.name),
                )?;
                shared.clone()
            }
            None => load_mod_emb(source, &format!("{prefix}.mod_emb"), d)?,
        };
        let pos_name = format!("{prefix}.pos_emb");
        let (content, positions, ranked_positions) = match info.kind {
            ModalityKind::Sequence { .. } => {
                let table = load_vocab_table(source, &format!("{prefix}.token_emb.weight"), d)?;
                let positions = load_positions(
                    source,
                    &pos_name,
                    SEQUENCE_TABLE_LEN,
                    d,
                    TableKind::Sincos1d,
                )?;
                (EncoderContent::Tokens { table }, positions, true)
            }
            ModalityKind::ImageTokens {
                learned_positions, ..
            } => {
                let (side, tokens) = image_grid(info, config)?;
                let table = load_vocab_table(source, &format!("{prefix}.token_emb.weight"), d)?;
                let kind = if learned_positions {
                    TableKind::Learned
                } else {
                    TableKind::Sincos2d { side }
                };
                let positions = load_positions(source, &pos_name, tokens, d, kind)?;
                (EncoderContent::Tokens { table }, positions, false)
            }
            ModalityKind::Pixels {
                channels,
                patch_size,
                ..
            } => {
                let (side, tokens) = image_grid(info, config)?;
                let proj = Linear::load(
                    source,
                    &format!("{prefix}.proj"),
                    channels * patch_size * patch_size,
                    d,
                    false,
                )?;
                let positions =
                    load_positions(source, &pos_name, tokens, d, TableKind::Sincos2d { side })?;
                (
                    EncoderContent::Pixels {
                        proj,
                        channels,
                        patch_size,
                        side,
                    },
                    positions,
                    false,
                )
            }
            ModalityKind::SequenceEmbedding { embedding_dim, .. } => {
                let proj = Linear::load(
                    source,
                    &format!("{prefix}.emb_proj"),
                    embedding_dim,
                    d,
                    true,
                )?;
                let positions = load_positions(
                    source,
                    &pos_name,
                    SEQUENCE_TABLE_LEN,
                    d,
                    TableKind::Sincos1d,
                )?;
                (
                    EncoderContent::Embeddings {
                        proj,
                        embedding_dim,
                    },
                    positions,
                    true,
                )
            }
        };
        Ok(Self {
            info,
            content,
            positions,
            modality,
            ranked_positions,
        })
    }

    /// Vocabulary size for token domains.
    pub fn vocab_size(&self) -> Option<usize> {
        match &self.content {
            EncoderContent::Tokens { table } => Some(table.dims()[0]),
            _ => None,
        }
    }

    /// Number of positional slots (`N` for images, 512 for sequences).
    pub fn table_len(&self) -> usize {
        self.positions.dims()[0]
    }
}

/// One domain's decoder embedding and output head.
#[derive(Debug, Clone)]
pub struct DecoderEmbedding {
    pub info: &'static ModalityInfo,
    /// The decoder's own token table (queries of autoregressive sequence decoding).
    pub token_table: Tensor,
    /// `to_logits` (no bias), untied from `token_table` in released checkpoints.
    pub head: Linear,
    pub positions: Tensor,
    pub modality: Tensor,
    /// For sequences: ranks at or beyond this use position 0 (reference clamp).
    pub rank_limit: Option<usize>,
}

impl DecoderEmbedding {
    pub fn load(
        source: &mut TensorSource,
        info: &'static ModalityInfo,
        config: &ModelConfig,
    ) -> Result<Self> {
        let d = config.dim;
        let prefix = format!("decoder_embeddings.{}", info.name);
        let token_table = load_vocab_table(source, &format!("{prefix}.token_emb.weight"), d)?;
        let vocab = token_table.dims()[0];
        let head_name = format!("{prefix}.to_logits");
        // Tied checkpoints (training-script style) have no separate head: reuse the token table.
        let head = if source.contains(&format!("{head_name}.weight")) {
            Linear::load(source, &head_name, d, vocab, false)?
        } else {
            Linear::from_parts(token_table.clone(), None)
        };
        let modality = load_mod_emb(source, &format!("{prefix}.mod_emb"), d)?;
        let pos_name = format!("{prefix}.pos_emb");
        let (positions, rank_limit) = match info.kind {
            ModalityKind::Sequence { max_length, .. } => (
                load_positions(
                    source,
                    &pos_name,
                    SEQUENCE_TABLE_LEN,
                    d,
                    TableKind::Sincos1d,
                )?,
                Some(max_length.min(SEQUENCE_TABLE_LEN)),
            ),
            ModalityKind::ImageTokens {
                learned_positions, ..
            } => {
                let (side, tokens) = image_grid(info, config)?;
                let kind = if learned_positions {
                    TableKind::Learned
                } else {
                    TableKind::Sincos2d { side }
                };
                (load_positions(source, &pos_name, tokens, d, kind)?, None)
            }
            _ => {
                return Err(ModelError::NotADecoderDomain {
                    domain: info.name.into(),
                });
            }
        };
        Ok(Self {
            info,
            token_table,
            head,
            positions,
            modality,
            rank_limit,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.head.out_dim()
    }

    /// Number of addressable query positions: grid tokens, or the sequence token budget.
    pub fn num_positions(&self) -> usize {
        match self.info.kind {
            ModalityKind::Sequence { max_tokens, .. } => max_tokens,
            _ => self.positions.dims()[0],
        }
    }

    /// Row of the positional table used for query position `position` (a grid index for images, a
    /// target rank for sequences, where ranks ≥ `max_length` fall back to row 0).
    pub fn table_row(&self, position: usize) -> Result<usize> {
        match self.rank_limit {
            Some(limit) => Ok(if position >= limit { 0 } else { position }),
            None if position < self.positions.dims()[0] => Ok(position),
            None => Err(ModelError::InvalidInput {
                domain: self.info.name.into(),
                reason: format!(
                    "query position {position} outside the {}-token grid",
                    self.positions.dims()[0]
                ),
            }),
        }
    }
}

/// Gather rows of a `(rows, D)` table for `(B, n)` indices → `(B, n, D)`.
pub fn gather_rows(
    table: &Tensor,
    indices: &[u32],
    batch: usize,
    n: usize,
    device: &Device,
) -> Result<Tensor> {
    let d = table.dims()[1];
    if indices.is_empty() {
        return Ok(Tensor::zeros((batch, n, d), table.dtype(), device)?);
    }
    let idx = Tensor::from_slice(indices, indices.len(), device)?;
    Ok(table.index_select(&idx, 0)?.reshape((batch, n, d))?)
}
