//! Tokenizer encoders: the ViT encoder (patch or 1×1 projection, bicubic-resized positional map,
//! pre-norm blocks, optional float32 post-MLP) and the point-wise BottleneckMLP.

use candle_core::Tensor;

use crate::checkpoint::TensorSource;
use crate::error::{ModelError, Result};
use crate::layers::Linear;
use crate::vq::bottleneck::BottleneckMlp;
use crate::vq::config::{NetworkArch, VqConfig};
use crate::vq::nn::{
    PostMlp, VitBlock, VitSize, load_pos_emb, map_to_tokens, resize_bicubic, tokens_to_map,
};

/// `ViTEncoder` of `fourm/vq/models/vit_models.py`: `(B, C, H, W)` → `(B, D, H/p, W/p)`, or with
/// `patch_proj = false` a 1×1 projection of a feature map `(B, C, h, w)` → `(B, D, h, w)`.
#[derive(Debug, Clone)]
pub struct VitEncoder {
    size: VitSize,
    in_channels: usize,
    /// `None` for the 1×1 projection of feature maps.
    patch: Option<usize>,
    /// Projection weight flattened to `(D, C·p·p)` (channel-major, as the convolution kernel).
    proj: Linear,
    /// `(1, D, N_H, N_W)` as stored; resized to the actual grid at run time.
    pos_emb: Tensor,
    blocks: Vec<VitBlock>,
    post_mlp: Option<PostMlp>,
}

impl VitEncoder {
    pub fn load(
        source: &mut TensorSource,
        prefix: &str,
        size: VitSize,
        config: &VqConfig,
    ) -> Result<Self> {
        let (d, c) = (size.dim, config.n_channels);
        let p = config.patch_size;
        let kernel = if config.patch_proj { p } else { 1 };
        let weight = source.get(&format!("{prefix}.proj.weight"), &[d, c, kernel, kernel])?;
        let bias = source.get(&format!("{prefix}.proj.bias"), &[d])?;
        let proj = Linear::from_parts(weight.reshape((d, c * kernel * kernel))?, Some(bias));
        let grid = config.encoder_image_size() / p;
        let pos_emb = load_pos_emb(source, &format!("{prefix}.pos_emb"), d, grid)?;
        let blocks = (0..size.depth)
            .map(|i| VitBlock::load(source, &format!("{prefix}.blocks.{i}"), &size))
            .collect::<Result<Vec<_>>>()?;
        let post_mlp = if config.post_mlp {
            Some(PostMlp::load(source, prefix, &size)?)
        } else {
            None
        };
        Ok(Self {
            size,
            in_channels: c,
            patch: config.patch_proj.then_some(p),
            proj,
            pos_emb,
            blocks,
            post_mlp,
        })
    }

    pub fn dim(&self) -> usize {
        self.size.dim
    }

    /// The token grid an input of spatial size `(H, W)` gives, or why it is not accepted.
    pub fn grid_for(&self, h: usize, w: usize) -> std::result::Result<(usize, usize), String> {
        if h == 0 || w == 0 {
            return Err(format!("empty spatial size {h}×{w}"));
        }
        match self.patch {
            None => Ok((h, w)),
            Some(p) if h.is_multiple_of(p) && w.is_multiple_of(p) => Ok((h / p, w / p)),
            Some(p) => Err(format!(
                "spatial size {h}×{w} is not a multiple of the patch size {p}"
            )),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (nh, nw) = self
            .grid_for(h, w)
            .map_err(|reason| ModelError::InvalidInput {
                domain: "tokenizer encoder".into(),
                reason,
            })?;
        if c != self.in_channels {
            return Err(ModelError::InvalidInput {
                domain: "tokenizer encoder".into(),
                reason: format!("expected {} channels, got {c}", self.in_channels),
            });
        }
        let p = self.patch.unwrap_or(1);
        // Patches as rows `(B·N, C·p·p)` in the kernel's (c, kh, kw) order: the convolution with
        // kernel = stride = p is exactly this matrix product.
        let patches = x
            .reshape((b, c, nh, p, nw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, nh * nw, c * p * p))?;
        let tokens = self.proj.forward(&patches)?;
        let pos = map_to_tokens(&resize_bicubic(&self.pos_emb, nh, nw)?)?;
        let mut x = tokens.broadcast_add(&pos)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        if let Some(post) = &self.post_mlp {
            x = post.forward(&x)?;
        }
        tokens_to_map(&x, nh, nw)
    }
}

/// The encoder of a tokenizer.
#[derive(Debug, Clone)]
pub enum Encoder {
    Vit(VitEncoder),
    Mlp(BottleneckMlp),
}

impl Encoder {
    pub fn load(source: &mut TensorSource, config: &VqConfig) -> Result<Self> {
        Ok(match &config.encoder {
            NetworkArch::Vit(size) => {
                Self::Vit(VitEncoder::load(source, "encoder", *size, config)?)
            }
            NetworkArch::BottleneckMlp(arch) => Self::Mlp(BottleneckMlp::load(
                source,
                "encoder",
                arch,
                config.n_channels,
                arch.width,
            )?),
            NetworkArch::PatchedUnet(_) | NetworkArch::Other(_) => {
                return Err(ModelError::UnsupportedConfig {
                    feature: format!("enc_type `{}`", config.enc_type),
                });
            }
        })
    }

    /// Output channels (`enc_dim` of the reference).
    pub fn dim(&self) -> usize {
        match self {
            Self::Vit(e) => e.dim(),
            Self::Mlp(m) => m.dim_out(),
        }
    }

    /// The latent grid of an input of spatial size `(H, W)`.
    pub fn grid_for(&self, h: usize, w: usize) -> std::result::Result<(usize, usize), String> {
        match self {
            Self::Vit(e) => e.grid_for(h, w),
            Self::Mlp(_) if h == 0 || w == 0 => Err(format!("empty spatial size {h}×{w}")),
            Self::Mlp(_) => Ok((h, w)),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Vit(e) => e.forward(x),
            Self::Mlp(m) => m.forward(x),
        }
    }
}
