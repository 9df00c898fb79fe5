//! Deterministic (VQ-VAE) tokenizer decoders: the ViT decoder (bicubic-resized positional map, pre-norm blocks, optional
//! post-MLP, `out_proj` and unpatchify, optional ConvNeXt output blocks) and the BottleneckMLP.

use candle_core::Tensor;

use crate::checkpoint::TensorSource;
use crate::error::{ModelError, Result};
use crate::layers::Linear;
use crate::vq::bottleneck::BottleneckMlp;
use crate::vq::config::{NetworkArch, VqConfig};
use crate::vq::nn::{
    LayerNorm, PostMlp, VIT_NORM_EPS, VitBlock, VitSize, conv2d, load_pos_emb, map_to_tokens,
    resize_bicubic,
};

/// ConvNeXt block on `(B, C, H, W)`: depthwise 7×7 conv (padding 3, bias), channels-last
/// LayerNorm (eps 1e-6), `Linear(C, 4C)`, GELU, `Linear(4C, C)`, layer scale `gamma`, residual.
#[derive(Debug, Clone)]
pub struct ConvNextBlock {
    /// `(C, 1, 7, 7)`.
    dw_weight: Tensor,
    /// `(1, C, 1, 1)`.
    dw_bias: Tensor,
    norm: LayerNorm,
    pw1: Linear,
    pw2: Linear,
    gamma: Tensor,
    channels: usize,
}

impl ConvNextBlock {
    pub fn load(source: &mut TensorSource, prefix: &str, channels: usize) -> Result<Self> {
        let c = channels;
        Ok(Self {
            dw_weight: source.get(&format!("{prefix}.dwconv.weight"), &[c, 1, 7, 7])?,
            dw_bias: source
                .get(&format!("{prefix}.dwconv.bias"), &[c])?
                .reshape((1, c, 1, 1))?,
            norm: LayerNorm::load(source, &format!("{prefix}.norm"), c, VIT_NORM_EPS)?,
            pw1: Linear::load(source, &format!("{prefix}.pwconv1"), c, 4 * c, true)?,
            pw2: Linear::load(source, &format!("{prefix}.pwconv2"), 4 * c, c, true)?,
            gamma: source.get(&format!("{prefix}.gamma"), &[c])?,
            channels: c,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = conv2d(x, &self.dw_weight, 3, 1, self.channels)?.broadcast_add(&self.dw_bias)?;
        let y = y.permute((0, 2, 3, 1))?;
        let y = self.pw1.forward(&self.norm.forward(&y)?)?.gelu_erf()?;
        let y = self.pw2.forward(&y)?.broadcast_mul(&self.gamma)?;
        Ok((x + y.permute((0, 3, 1, 2))?)?)
    }
}

/// `ViTDecoder` of `fourm/vq/models/vit_models.py`: `(B, D, h, w)` → `(B, C, h·p, w·p)`, or
/// `(B, C, h, w)` with `patch_proj = false` (feature maps).
#[derive(Debug, Clone)]
pub struct VitDecoder {
    size: VitSize,
    out_channels: usize,
    patch: usize,
    pos_emb: Tensor,
    blocks: Vec<VitBlock>,
    post_mlp: Option<PostMlp>,
    out_proj: Linear,
    out_conv: Vec<ConvNextBlock>,
}

impl VitDecoder {
    pub fn load(
        source: &mut TensorSource,
        prefix: &str,
        size: VitSize,
        config: &VqConfig,
    ) -> Result<Self> {
        let d = size.dim;
        let c = config.out_channels();
        let stored_patch = config.decoder_patch_size();
        let grid = config.decoder_image_size() / stored_patch;
        let patch = if config.patch_proj { stored_patch } else { 1 };
        let pos_emb = load_pos_emb(source, &format!("{prefix}.pos_emb"), d, grid)?;
        let blocks = (0..size.depth)
            .map(|i| VitBlock::load(source, &format!("{prefix}.blocks.{i}"), &size))
            .collect::<Result<Vec<_>>>()?;
        let post_mlp = if config.post_mlp {
            Some(PostMlp::load(source, prefix, &size)?)
        } else {
            None
        };
        let out_proj = Linear::load(
            source,
            &format!("{prefix}.out_proj"),
            d,
            c * patch * patch,
            true,
        )?;
        let out_conv = if config.out_conv {
            (0..2)
                .map(|i| ConvNextBlock::load(source, &format!("{prefix}.out_conv.{i}"), c))
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            size,
            out_channels: c,
            patch,
            pos_emb,
            blocks,
            post_mlp,
            out_proj,
            out_conv,
        })
    }

    pub fn dim(&self) -> usize {
        self.size.dim
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, nh, nw) = x.dims4()?;
        let pos = map_to_tokens(&resize_bicubic(&self.pos_emb, nh, nw)?)?;
        let mut x = map_to_tokens(x)?.broadcast_add(&pos)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        if let Some(post) = &self.post_mlp {
            x = post.forward(&x)?;
        }
        let (c, p) = (self.out_channels, self.patch);
        // 'b (nh nw) (c ph pw) -> b c (nh ph) (nw pw)'
        let mut y = self
            .out_proj
            .forward(&x)?
            .reshape((b, nh, nw, c, p, p))?
            .permute((0, 3, 1, 4, 2, 5))?
            .contiguous()?
            .reshape((b, c, nh * p, nw * p))?;
        for block in &self.out_conv {
            y = block.forward(&y)?;
        }
        Ok(y)
    }
}

/// The deterministic decoder of a VQ-VAE.
#[derive(Debug, Clone)]
pub enum Decoder {
    Vit(VitDecoder),
    Mlp(BottleneckMlp),
}

impl Decoder {
    /// `Ok(None)` for a DiVAE, whose diffusion decoder the tokenizer builds itself.
    pub fn load(source: &mut TensorSource, config: &VqConfig) -> Result<Option<Self>> {
        Ok(Some(match &config.decoder {
            NetworkArch::Vit(size) => {
                Self::Vit(VitDecoder::load(source, "decoder", *size, config)?)
            }
            NetworkArch::BottleneckMlp(arch) => Self::Mlp(BottleneckMlp::load(
                source,
                "decoder",
                arch,
                arch.width,
                config.out_channels(),
            )?),
            NetworkArch::PatchedUnet(_) | NetworkArch::Other(_) if config.is_diffusion() => {
                return Ok(None);
            }
            NetworkArch::PatchedUnet(_) => {
                return Err(ModelError::UnsupportedConfig {
                    feature: format!("dec_type `{}` without diffusion settings", config.dec_type),
                });
            }
            NetworkArch::Other(name) => {
                return Err(ModelError::UnsupportedConfig {
                    feature: format!("dec_type `{name}`"),
                });
            }
        }))
    }

    /// Input channels (`dec_dim` of the reference).
    pub fn dim(&self) -> usize {
        match self {
            Self::Vit(d) => d.dim(),
            Self::Mlp(m) => m.dim_in(),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Vit(d) => d.forward(x),
            Self::Mlp(m) => m.forward(x),
        }
    }
}
