//! The DiVAE diffusion decoder network: the patched, conditioning-concatenated guided-diffusion
//! UNet of `fourm/vq/models/unet/unet.py` (`PatchedUNetCondCat`, preset `unet_patched`).
//!
//! `x_t (B, C, H, W)` is cut into `p×p` patches (channels `(c, ph, pw)`), the dequantised tokens are
//! upsampled (nearest) to the patch grid and concatenated, and a UNet with sinusoidal timestep
//! embedding (cos first), ResBlocks, single-head legacy-order attention, GroupNorm32 in float32 and
//! convolutional down/upsampling predicts the output, which is un-patched back to `(B, C, H, W)`.

use candle_core::{D, DType, Tensor};

use crate::checkpoint::TensorSource;
use crate::error::{ModelError, Result};
use crate::layers::Linear;
use crate::vq::nn::conv2d;

/// Sizes of a patched UNet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnetArch {
    pub patch_size: usize,
    pub model_channels: usize,
    pub num_res_blocks: usize,
    /// Downsampling factors (of the patch grid) at which attention blocks are used.
    pub attention_resolutions: Vec<usize>,
    pub channel_mult: Vec<usize>,
    pub num_heads: usize,
}

impl UnetArch {
    /// `unet_patched`: patch 4, 256 channels, 3 res blocks, attention at 4 and 8, mult (1, 2, 2, 2).
    pub fn unet_patched() -> Self {
        Self {
            patch_size: 4,
            model_channels: 256,
            num_res_blocks: 3,
            attention_resolutions: vec![4, 8],
            channel_mult: vec![1, 2, 2, 2],
            num_heads: 1,
        }
    }

    /// The factor by which the patch grid is downsampled at the bottom of the UNet.
    pub fn total_downsampling(&self) -> usize {
        1 << self.channel_mult.len().saturating_sub(1)
    }
}

/// GroupNorm with 32 groups (eps 1e-5, affine), computed in float32.
#[derive(Debug, Clone)]
struct GroupNorm32 {
    weight: Tensor,
    bias: Tensor,
}

const GROUPS: usize = 32;

impl GroupNorm32 {
    fn load(source: &mut TensorSource, prefix: &str, channels: usize) -> Result<Self> {
        if !channels.is_multiple_of(GROUPS) {
            return Err(ModelError::InvalidConfig {
                field: "dec_model_channels".into(),
                reason: format!("{channels} channels are not divisible into {GROUPS} groups"),
            });
        }
        Ok(Self {
            weight: source
                .get_as(&format!("{prefix}.weight"), &[channels], DType::F32)?
                .reshape((1, channels, 1))?,
            bias: source
                .get_as(&format!("{prefix}.bias"), &[channels], DType::F32)?
                .reshape((1, channels, 1))?,
        })
    }

    /// `(B, C, ...)` → same shape.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let dims = x.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let spatial: usize = dims[2..].iter().product();
        let g = x
            .to_dtype(DType::F32)?
            .reshape((b, GROUPS, (c / GROUPS) * spatial))?;
        let mean = g.mean_keepdim(D::Minus1)?;
        let centered = g.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
        let y = normed
            .reshape((b, c, spatial))?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?;
        Ok(y.reshape(dims)?.to_dtype(dtype)?)
    }
}

/// `Conv2d` with bias.
#[derive(Debug, Clone)]
struct Conv {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    stride: usize,
}

impl Conv {
    fn load(
        source: &mut TensorSource,
        prefix: &str,
        (c_in, c_out, kernel): (usize, usize, usize),
        stride: usize,
    ) -> Result<Self> {
        Ok(Self {
            weight: source.get(&format!("{prefix}.weight"), &[c_out, c_in, kernel, kernel])?,
            bias: source
                .get(&format!("{prefix}.bias"), &[c_out])?
                .reshape((1, c_out, 1, 1))?,
            padding: kernel / 2,
            stride,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = conv2d(x, &self.weight, self.padding, self.stride, 1)?;
        Ok(y.broadcast_add(&self.bias)?)
    }
}

/// `Conv1d(c_in, c_out, 1)` on `(B, C, T)`.
#[derive(Debug, Clone)]
struct Conv1x1 {
    linear: Linear,
}

impl Conv1x1 {
    fn load(source: &mut TensorSource, prefix: &str, c_in: usize, c_out: usize) -> Result<Self> {
        let weight = source.get(&format!("{prefix}.weight"), &[c_out, c_in, 1])?;
        let bias = source.get(&format!("{prefix}.bias"), &[c_out])?;
        Ok(Self {
            linear: Linear::from_parts(weight.reshape((c_out, c_in))?, Some(bias)),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.linear.forward(&x.transpose(1, 2)?)?;
        Ok(y.transpose(1, 2)?.contiguous()?)
    }
}

/// ResBlock without scale-shift norm or up/down sampling.
#[derive(Debug, Clone)]
struct ResBlock {
    in_norm: GroupNorm32,
    in_conv: Conv,
    emb: Linear,
    out_norm: GroupNorm32,
    out_conv: Conv,
    /// 1×1 conv when the channel count changes.
    skip: Option<Conv>,
}

impl ResBlock {
    fn load(
        source: &mut TensorSource,
        prefix: &str,
        channels: usize,
        out_channels: usize,
        emb_channels: usize,
    ) -> Result<Self> {
        Ok(Self {
            in_norm: GroupNorm32::load(source, &format!("{prefix}.in_layers.0"), channels)?,
            in_conv: Conv::load(
                source,
                &format!("{prefix}.in_layers.2"),
                (channels, out_channels, 3),
                1,
            )?,
            emb: Linear::load(
                source,
                &format!("{prefix}.emb_layers.1"),
                emb_channels,
                out_channels,
                true,
            )?,
            out_norm: GroupNorm32::load(source, &format!("{prefix}.out_layers.0"), out_channels)?,
            out_conv: Conv::load(
                source,
                &format!("{prefix}.out_layers.3"),
                (out_channels, out_channels, 3),
                1,
            )?,
            skip: if channels == out_channels {
                None
            } else {
                Some(Conv::load(
                    source,
                    &format!("{prefix}.skip_connection"),
                    (channels, out_channels, 1),
                    1,
                )?)
            },
        })
    }

    /// `emb`: the SiLU'd timestep embedding `(1 or B, E)`.
    fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let h = self.in_conv.forward(&self.in_norm.forward(x)?.silu()?)?;
        let e = self.emb.forward(emb)?;
        let (rows, c) = e.dims2()?;
        let h = h.broadcast_add(&e.reshape((rows, c, 1, 1))?)?;
        let h = self.out_conv.forward(&self.out_norm.forward(&h)?.silu()?)?;
        let skip = match &self.skip {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        Ok((skip + h)?)
    }
}

/// Self-attention over the spatial positions, legacy QKV order (split heads, then q, k, v),
/// q and k each scaled by `ch^-1/4`, softmax in float32.
#[derive(Debug, Clone)]
struct AttentionBlock {
    norm: GroupNorm32,
    qkv: Conv1x1,
    proj_out: Conv1x1,
    heads: usize,
}

impl AttentionBlock {
    fn load(
        source: &mut TensorSource,
        prefix: &str,
        channels: usize,
        heads: usize,
    ) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm32::load(source, &format!("{prefix}.norm"), channels)?,
            qkv: Conv1x1::load(source, &format!("{prefix}.qkv"), channels, 3 * channels)?,
            proj_out: Conv1x1::load(source, &format!("{prefix}.proj_out"), channels, channels)?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = h * w;
        let x = x.reshape((b, c, t))?;
        let qkv = self.qkv.forward(&self.norm.forward(&x)?)?;
        let ch = c / self.heads;
        let qkv = qkv.reshape((b * self.heads, 3 * ch, t))?;
        let scale = 1.0 / (ch as f64).sqrt().sqrt();
        let q = (qkv.narrow(1, 0, ch)? * scale)?;
        let k = (qkv.narrow(1, ch, ch)? * scale)?;
        let v = qkv.narrow(1, 2 * ch, ch)?;
        // weight[b, t, s] = Σ_c q[b, c, t] k[b, c, s]
        let weight = q.transpose(1, 2)?.contiguous()?.matmul(&k.contiguous()?)?;
        let weight =
            candle_nn::ops::softmax_last_dim(&weight.to_dtype(DType::F32)?)?.to_dtype(x.dtype())?;
        // a[b, c, t] = Σ_s weight[b, t, s] v[b, c, s]
        let a = v
            .contiguous()?
            .matmul(&weight.transpose(1, 2)?.contiguous()?)?;
        let out = self.proj_out.forward(&a.reshape((b, c, t))?)?;
        Ok((x + out)?.reshape((b, c, h, w))?)
    }
}

/// One layer of a `TimestepEmbedSequential`.
#[derive(Debug, Clone)]
enum Layer {
    Conv(Conv),
    Res(ResBlock),
    Attention(AttentionBlock),
    /// Nearest ×2 then a 3×3 conv.
    Upsample(Conv),
}

impl Layer {
    fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        match self {
            Self::Conv(conv) => conv.forward(x),
            Self::Res(block) => block.forward(x, emb),
            Self::Attention(block) => block.forward(x),
            Self::Upsample(conv) => {
                let (_, _, h, w) = x.dims4()?;
                conv.forward(&x.upsample_nearest2d(2 * h, 2 * w)?)
            }
        }
    }
}

fn run(layers: &[Layer], x: &Tensor, emb: &Tensor) -> Result<Tensor> {
    let mut x = x.clone();
    for layer in layers {
        x = layer.forward(&x, emb)?;
    }
    Ok(x)
}

/// `PatchedUNetCondCat`.
#[derive(Debug, Clone)]
pub struct PatchedUnet {
    arch: UnetArch,
    channels: usize,
    cond_channels: usize,
    time_in: Linear,
    time_out: Linear,
    input_blocks: Vec<Vec<Layer>>,
    middle: Vec<Layer>,
    output_blocks: Vec<Vec<Layer>>,
    out_norm: GroupNorm32,
    out_conv: Conv,
}

impl PatchedUnet {
    /// `channels`: image channels (in and out); `cond_channels`: latent dimension.
    pub fn load(
        source: &mut TensorSource,
        prefix: &str,
        arch: &UnetArch,
        channels: usize,
        cond_channels: usize,
    ) -> Result<Self> {
        if arch.patch_size == 0 || arch.model_channels == 0 || arch.channel_mult.is_empty() {
            return Err(ModelError::InvalidConfig {
                field: "dec_type".into(),
                reason: format!("degenerate UNet sizes {arch:?}"),
            });
        }
        let (mc, p) = (arch.model_channels, arch.patch_size);
        let emb_dim = 4 * mc;
        let in_channels = channels * p * p + cond_channels;
        let out_channels = channels * p * p;
        let name = |rest: String| format!("{prefix}.{rest}");
        let time_in = Linear::load(source, &name("time_embed.0".into()), mc, emb_dim, true)?;
        let time_out = Linear::load(source, &name("time_embed.2".into()), emb_dim, emb_dim, true)?;

        let mut ch = arch.channel_mult[0] * mc;
        let input_ch = ch;
        let mut input_blocks = vec![vec![Layer::Conv(Conv::load(
            source,
            &name("input_blocks.0.0".into()),
            (in_channels, ch, 3),
            1,
        )?)]];
        let mut skip_channels = vec![ch];
        let mut ds = 1;
        for (level, &mult) in arch.channel_mult.iter().enumerate() {
            for _ in 0..arch.num_res_blocks {
                let i = input_blocks.len();
                let out = mult * mc;
                let mut layers = vec![Layer::Res(ResBlock::load(
                    source,
                    &name(format!("input_blocks.{i}.0")),
                    ch,
                    out,
                    emb_dim,
                )?)];
                ch = out;
                if arch.attention_resolutions.contains(&ds) {
                    layers.push(Layer::Attention(AttentionBlock::load(
                        source,
                        &name(format!("input_blocks.{i}.1")),
                        ch,
                        arch.num_heads,
                    )?));
                }
                input_blocks.push(layers);
                skip_channels.push(ch);
            }
            if level + 1 != arch.channel_mult.len() {
                let i = input_blocks.len();
                input_blocks.push(vec![Layer::Conv(Conv::load(
                    source,
                    &name(format!("input_blocks.{i}.0.op")),
                    (ch, ch, 3),
                    2,
                )?)]);
                skip_channels.push(ch);
                ds *= 2;
            }
        }
        let middle = vec![
            Layer::Res(ResBlock::load(
                source,
                &name("middle_block.0".into()),
                ch,
                ch,
                emb_dim,
            )?),
            Layer::Attention(AttentionBlock::load(
                source,
                &name("middle_block.1".into()),
                ch,
                arch.num_heads,
            )?),
            Layer::Res(ResBlock::load(
                source,
                &name("middle_block.2".into()),
                ch,
                ch,
                emb_dim,
            )?),
        ];
        let mut output_blocks = Vec::new();
        for (level, &mult) in arch.channel_mult.iter().enumerate().rev() {
            for i in 0..=arch.num_res_blocks {
                let index = output_blocks.len();
                let skip = skip_channels.pop().expect("one skip per input block");
                let out = mc * mult;
                let mut layers = vec![Layer::Res(ResBlock::load(
                    source,
                    &name(format!("output_blocks.{index}.0")),
                    ch + skip,
                    out,
                    emb_dim,
                )?)];
                ch = out;
                if arch.attention_resolutions.contains(&ds) {
                    layers.push(Layer::Attention(AttentionBlock::load(
                        source,
                        &name(format!("output_blocks.{index}.{}", layers.len())),
                        ch,
                        arch.num_heads,
                    )?));
                }
                if level > 0 && i == arch.num_res_blocks {
                    layers.push(Layer::Upsample(Conv::load(
                        source,
                        &name(format!("output_blocks.{index}.{}.conv", layers.len())),
                        (ch, ch, 3),
                        1,
                    )?));
                    ds /= 2;
                }
                output_blocks.push(layers);
            }
        }
        Ok(Self {
            arch: arch.clone(),
            channels,
            cond_channels,
            time_in,
            time_out,
            input_blocks,
            middle,
            output_blocks,
            out_norm: GroupNorm32::load(source, &name("out.0".into()), ch)?,
            out_conv: Conv::load(
                source,
                &name("out.2".into()),
                (input_ch, out_channels, 3),
                1,
            )?,
        })
    }

    pub fn arch(&self) -> &UnetArch {
        &self.arch
    }

    /// Why an output of size `(H, W)` cannot be produced, if it cannot.
    pub fn check_size(&self, h: usize, w: usize) -> std::result::Result<(), String> {
        let unit = self.arch.patch_size * self.arch.total_downsampling();
        if h == 0 || w == 0 || !h.is_multiple_of(unit) || !w.is_multiple_of(unit) {
            return Err(format!(
                "image size {h}×{w} is not a positive multiple of {unit} (patch {} × downsampling {})",
                self.arch.patch_size,
                self.arch.total_downsampling()
            ));
        }
        Ok(())
    }

    /// Sinusoidal timestep features `[cos(t·f_k), sin(t·f_k)]`, `f_k = exp(−ln(10⁴)·k/half)`,
    /// in float32 arithmetic as the reference computes them.
    fn timestep_features(&self, t: f32) -> Vec<f32> {
        let dim = self.arch.model_channels;
        let half = dim / 2;
        let log = -(10_000f64.ln() as f32);
        let mut out = vec![0f32; dim];
        for k in 0..half {
            let freq = (log * k as f32 / half as f32).exp();
            let arg = t * freq;
            out[k] = arg.cos();
            out[half + k] = arg.sin();
        }
        out
    }

    /// One network evaluation: noisy sample `(B, C, H, W)`, timestep `t`, conditioning latents
    /// `(B, latent, h, w)` → prediction `(B, C, H, W)`.
    pub fn forward(&self, sample: &Tensor, t: f32, cond: &Tensor) -> Result<Tensor> {
        let (b, c, height, width) = sample.dims4()?;
        let bad = |reason: String| ModelError::InvalidInput {
            domain: "diffusion decoder".into(),
            reason,
        };
        if c != self.channels || cond.rank() != 4 || cond.dim(1)? != self.cond_channels {
            return Err(bad(format!(
                "expected a ({b}, {}, H, W) sample and ({b}, {}, h, w) conditioning, got {:?} and {:?}",
                self.channels,
                self.cond_channels,
                sample.dims(),
                cond.dims()
            )));
        }
        self.check_size(height, width).map_err(bad)?;
        let p = self.arch.patch_size;
        let (nh, nw) = (height / p, width / p);
        let x = sample
            .reshape((b, c, nh, p, nw, p))?
            .permute((0, 1, 3, 5, 2, 4))?
            .contiguous()?
            .reshape((b, c * p * p, nh, nw))?;
        let cond = cond.to_dtype(x.dtype())?.upsample_nearest2d(nh, nw)?;
        let x = Tensor::cat(&[&x, &cond], 1)?;

        let features = Tensor::from_vec(
            self.timestep_features(t),
            (1, self.arch.model_channels),
            sample.device(),
        )?
        .to_dtype(x.dtype())?;
        let emb = self
            .time_out
            .forward(&self.time_in.forward(&features)?.silu()?)?;
        // Every ResBlock applies SiLU to the embedding first.
        let emb = emb.silu()?;

        let mut skips = Vec::with_capacity(self.input_blocks.len());
        let mut h = x;
        for block in &self.input_blocks {
            h = run(block, &h, &emb)?;
            skips.push(h.clone());
        }
        h = run(&self.middle, &h, &emb)?;
        for block in &self.output_blocks {
            let skip = skips.pop().expect("one skip per output block");
            h = run(block, &Tensor::cat(&[&h, &skip], 1)?, &emb)?;
        }
        let out = self.out_conv.forward(&self.out_norm.forward(&h)?.silu()?)?;
        Ok(out
            .reshape((b, c, p, p, nh, nw))?
            .permute((0, 1, 4, 2, 5, 3))?
            .contiguous()?
            .reshape((b, c, nh * p, nw * p))?)
    }
}
