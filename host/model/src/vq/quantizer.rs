//! The two quantizers of the 4M tokenizers: the lucid cosine-similarity codebook
//! (`quantize_lucid.py`, normalised look-up, raw-row dequantisation) and Memcodes
//! (`quantize_memcodes.py`, per-head keys and values projected from the codes).
//!
//! Scores are computed in float32 whatever the model dtype, as the reference does.

use candle_core::{D, DType, Tensor};

use crate::checkpoint::TensorSource;
use crate::error::{ModelError, Result};

/// `F.normalize(x, dim=-1)`: `x / max(‖x‖₂, 1e-12)`.
fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

/// Argmax and top-1 minus top-2 score along the last dimension of `(N, K)` scores.
fn argmax_with_margin(scores: &Tensor) -> Result<(Tensor, Tensor)> {
    let k = scores.dim(D::Minus1)?;
    let best = scores.argmax_keepdim(D::Minus1)?;
    let top1 = scores.max_keepdim(D::Minus1)?;
    let margin = if k < 2 {
        top1.zeros_like()?
    } else {
        let ids = Tensor::arange(0u32, k as u32, scores.device())?;
        let is_best = ids
            .broadcast_as(scores.shape())?
            .eq(&best.broadcast_as(scores.shape())?)?;
        let lowest = Tensor::full(f32::MIN, scores.shape(), scores.device())?;
        let top2 = is_best
            .where_cond(&lowest, scores)?
            .max_keepdim(D::Minus1)?;
        (&top1 - top2)?
    };
    Ok((best.squeeze(D::Minus1)?, margin.squeeze(D::Minus1)?))
}

/// Quantizer output for a `(B, C, h, w)` latent map.
#[derive(Debug, Clone)]
pub struct Quantized {
    /// `(B, C, h, w)` dequantised latents (lucid: raw codebook rows; Memcodes: value projections).
    pub quant: Tensor,
    /// I64 token ids, `(B, h, w)`, or `(B, heads, h, w)` for Memcodes with several heads.
    pub tokens: Tensor,
    /// F32 top-1 minus top-2 score per token (same shape as `tokens`): how far from a tie.
    pub margins: Tensor,
}

/// Lucid `VectorQuantize` with `CosineSimCodebook` (single head, `codebook_dim == latent_dim`).
#[derive(Debug, Clone)]
pub struct LucidQuantizer {
    /// `(K, C)` raw rows in the model dtype (dequantisation). While training, a `Var` that the
    /// trainer's EMA update rewrites in place.
    embed: Tensor,
    /// `(K, C)` L2-normalised rows in float32 (scoring); `None` while training, where the rows
    /// change every step and are normalised at each look-up.
    embed_normalized: Option<Tensor>,
}

impl LucidQuantizer {
    pub fn load(
        source: &mut TensorSource,
        codebook_size: usize,
        latent_dim: usize,
    ) -> Result<Self> {
        let name = "quantize._codebook.embed";
        // Training-only EMA state (the trainer keeps and saves its own copy).
        source.skip("quantize._codebook.cluster_size", &[codebook_size])?;
        source.skip("quantize._codebook.initted", &[1])?;
        if source.is_trainable() {
            // One tensor in the model dtype, so that updating the `Var` updates the look-up.
            return Ok(Self {
                embed: source.get(name, &[codebook_size, latent_dim])?,
                embed_normalized: None,
            });
        }
        let embed32 = source.get_as(name, &[codebook_size, latent_dim], DType::F32)?;
        Ok(Self {
            embed: embed32.to_dtype(source.dtype())?,
            embed_normalized: Some(l2_normalize(&embed32)?),
        })
    }

    /// The raw codebook rows `(K, C)`.
    pub fn embed(&self) -> &Tensor {
        &self.embed
    }

    /// Cosine scores `(N, K)` in float32 of latent rows `(N, C)` against the codebook (`N·Kᵀ`
    /// of the L2-normalised rows); never differentiated (the look-up is an argmax).
    pub fn scores(&self, rows: &Tensor) -> Result<Tensor> {
        let normalized = match &self.embed_normalized {
            Some(n) => n.clone(),
            None => l2_normalize(&self.embed.detach().to_dtype(DType::F32)?)?,
        };
        Ok(l2_normalize(&rows.detach().to_dtype(DType::F32)?)?.matmul(&normalized.t()?)?)
    }

    pub fn codebook_size(&self) -> usize {
        self.embed.dims()[0]
    }

    pub fn forward(&self, latents: &Tensor) -> Result<Quantized> {
        let (b, c, h, w) = latents.dims4()?;
        let flat = latents
            .to_dtype(DType::F32)?
            .permute((0, 2, 3, 1))?
            .reshape((b * h * w, c))?;
        let scores = self.scores(&flat)?;
        let (tokens, margins) = argmax_with_margin(&scores)?;
        let quant = self.embed.index_select(&tokens, 0)?;
        Ok(Quantized {
            quant: quant
                .reshape((b, h, w, c))?
                .permute((0, 3, 1, 2))?
                .contiguous()?,
            tokens: tokens.to_dtype(DType::I64)?.reshape((b, h, w))?,
            margins: margins.reshape((b, h, w))?,
        })
    }

    /// `(B, h, w)` ids (already range-checked, U32) → raw rows `(B, C, h, w)`.
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, h, w) = ids.dims3()?;
        let c = self.embed.dims()[1];
        let rows = self.embed.index_select(&ids.flatten_all()?, 0)?;
        Ok(rows
            .reshape((b, h, w, c))?
            .permute((0, 3, 1, 2))?
            .contiguous()?)
    }
}

/// Memcodes: `heads` codebooks of `K` codes of size `d = latent_dim / heads`, with keys
/// `to_k(codes)` for scoring and values `to_v(codes)` for dequantisation.
#[derive(Debug, Clone)]
pub struct Memcodes {
    heads: usize,
    head_dim: usize,
    /// `(heads, K, d)` in float32.
    keys: Tensor,
    /// `(heads, K, d)` in the model dtype.
    values: Tensor,
}

impl Memcodes {
    pub fn load(
        source: &mut TensorSource,
        heads: usize,
        codebook_size: usize,
        latent_dim: usize,
    ) -> Result<Self> {
        if heads == 0 || !latent_dim.is_multiple_of(heads) {
            return Err(ModelError::InvalidConfig {
                field: "num_codebooks".into(),
                reason: format!("{heads} codebooks do not divide latent_dim {latent_dim}"),
            });
        }
        let d = latent_dim / heads;
        let codes = source.get_as("quantize.codes", &[heads, codebook_size, d], DType::F32)?;
        let to_k = source.get_as("quantize.to_k.weight", &[heads, d, d], DType::F32)?;
        let to_v = source.get_as("quantize.to_v.weight", &[heads, d, d], DType::F32)?;
        // EinMix 'h n d -> h n c' with weight 'h d c': out[h, n, c] = Σ_d codes[h, n, d] W[h, d, c].
        let keys = codes.matmul(&to_k)?;
        let values = codes.matmul(&to_v)?.to_dtype(source.dtype())?;
        Ok(Self {
            heads,
            head_dim: d,
            keys,
            values,
        })
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    pub fn codebook_size(&self) -> usize {
        self.keys.dims()[1]
    }

    pub fn forward(&self, latents: &Tensor) -> Result<Quantized> {
        let (b, c, h, w) = latents.dims4()?;
        let (heads, d, n) = (self.heads, self.head_dim, h * w);
        // 'b c h w -> b (h w) c', then 'b n (heads d) -> b heads n d', scaled by d^-1/2.
        let q = (latents
            .to_dtype(DType::F32)?
            .reshape((b, heads, d, n))?
            .transpose(2, 3)?
            .contiguous()?
            * (d as f64).powf(-0.5))?;
        let logits = q.broadcast_matmul(&self.keys.t()?.unsqueeze(0)?)?; // (B, heads, n, K)
        let k = self.codebook_size();
        let (tokens, margins) = argmax_with_margin(&logits.reshape((b * heads * n, k))?)?;
        let tokens = tokens.reshape((b, heads, h, w))?;
        let quant = self.lookup(&tokens)?;
        debug_assert_eq!(quant.dims(), &[b, c, h, w]);
        let margins = margins.reshape((b, heads, h, w))?;
        let (tokens, margins) = if heads == 1 {
            (tokens.squeeze(1)?, margins.squeeze(1)?)
        } else {
            (tokens, margins)
        };
        Ok(Quantized {
            quant,
            tokens: tokens.to_dtype(DType::I64)?,
            margins,
        })
    }

    /// `(B, heads, h, w)` ids (range-checked, U32) → `(B, heads·d, h, w)` value rows, heads
    /// concatenated along the channels.
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, heads, h, w) = ids.dims4()?;
        let d = self.head_dim;
        let parts = (0..heads)
            .map(|head| {
                let rows = self
                    .values
                    .get(head)?
                    .index_select(&ids.narrow(1, head, 1)?.flatten_all()?, 0)?;
                rows.reshape((b, h * w, d))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        // (B, n, heads·d) → (B, heads·d, h, w)
        let merged = Tensor::cat(&parts, 2)?;
        Ok(merged
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, heads * d, h, w))?)
    }
}

/// The quantizer of a tokenizer.
#[derive(Debug, Clone)]
pub enum Quantizer {
    Lucid(LucidQuantizer),
    Memcodes(Memcodes),
}

impl Quantizer {
    pub fn codebook_size(&self) -> usize {
        match self {
            Self::Lucid(q) => q.codebook_size(),
            Self::Memcodes(q) => q.codebook_size(),
        }
    }

    /// Token ids per latent position (Memcodes: one per head).
    pub fn heads(&self) -> usize {
        match self {
            Self::Lucid(_) => 1,
            Self::Memcodes(q) => q.heads(),
        }
    }

    pub fn forward(&self, latents: &Tensor) -> Result<Quantized> {
        match self {
            Self::Lucid(q) => q.forward(latents),
            Self::Memcodes(q) => q.forward(latents),
        }
    }

    /// Range-checked U32 ids → dequantised latents. Lucid takes `(B, h, w)`; Memcodes takes
    /// `(B, heads, h, w)` (or `(B, h, w)` with one head).
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Self::Lucid(q) => q.lookup(ids),
            Self::Memcodes(q) if ids.rank() == 3 => q.lookup(&ids.unsqueeze(1)?),
            Self::Memcodes(q) => q.lookup(ids),
        }
    }
}
