//! Small building blocks of the tokenizer networks: LayerNorm with a configurable epsilon,
//! point-wise (1×1) convolutions, the ViT block, and PyTorch's bicubic resize of positional maps.

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::TensorSource;
use crate::error::Result;
use crate::layers::{Linear, layer_norm_for_training, softmax_last_dim_differentiable};

/// `nn.LayerNorm` over the last dimension (weight and bias), with the module's own epsilon.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    pub fn load(source: &mut TensorSource, prefix: &str, dim: usize, eps: f32) -> Result<Self> {
        Self::load_as(source, prefix, dim, eps, source.dtype())
    }

    /// Load in a given dtype (the reference runs the post-MLP in float32 whatever the model dtype).
    pub fn load_as(
        source: &mut TensorSource,
        prefix: &str,
        dim: usize,
        eps: f32,
        dtype: DType,
    ) -> Result<Self> {
        Ok(Self {
            weight: source.get_as(&format!("{prefix}.weight"), &[dim], dtype)?,
            bias: source.get_as(&format!("{prefix}.bias"), &[dim], dtype)?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.track_op() || self.weight.track_op() || self.bias.track_op() {
            return layer_norm_for_training(x, &self.weight, &self.bias, self.eps);
        }
        let x = x.contiguous()?;
        Ok(candle_nn::ops::layer_norm(
            &x,
            &self.weight,
            &self.bias,
            self.eps,
        )?)
    }
}

/// Load a `Linear` in an explicit dtype.
pub fn linear_as(
    source: &mut TensorSource,
    prefix: &str,
    in_dim: usize,
    out_dim: usize,
    dtype: DType,
) -> Result<Linear> {
    let weight = source.get_as(&format!("{prefix}.weight"), &[out_dim, in_dim], dtype)?;
    let bias = source.get_as(&format!("{prefix}.bias"), &[out_dim], dtype)?;
    Ok(Linear::from_parts(weight, Some(bias)))
}

/// A `Conv2d(c_in, c_out, 1)` with bias, applied as a linear map over the channels of
/// `(B, C, H, W)` maps (the same arithmetic as the convolution: one dot product per pixel).
#[derive(Debug, Clone)]
pub struct PointwiseConv {
    linear: Linear,
}

impl PointwiseConv {
    pub fn load(
        source: &mut TensorSource,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
    ) -> Result<Self> {
        let weight = source.get(
            &format!("{prefix}.weight"),
            &[out_channels, in_channels, 1, 1],
        )?;
        let bias = source.get(&format!("{prefix}.bias"), &[out_channels])?;
        Ok(Self {
            linear: Linear::from_parts(weight.reshape((out_channels, in_channels))?, Some(bias)),
        })
    }

    pub fn out_channels(&self) -> usize {
        self.linear.out_dim()
    }

    /// `(B, C_in, H, W)` → `(B, C_out, H, W)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.linear.forward(&x.permute((0, 2, 3, 1))?)?;
        Ok(y.permute((0, 3, 1, 2))?.contiguous()?)
    }
}

/// `x.conv2d(weight, padding, stride, 1, groups)`; candle's CPU convolution has no BF16 kernel, so
/// there a BF16 convolution runs in float32 and is rounded back.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    padding: usize,
    stride: usize,
    groups: usize,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    if x.dtype() == DType::BF16 && x.device().is_cpu() {
        let y = x.to_dtype(DType::F32)?.conv2d(
            &weight.to_dtype(DType::F32)?,
            padding,
            stride,
            1,
            groups,
        )?;
        return Ok(y.to_dtype(DType::BF16)?);
    }
    Ok(x.conv2d(weight, padding, stride, 1, groups)?)
}

/// The ViT encoder's or decoder's positional map `(1, D, grid, grid)`: a fixed buffer in the
/// reference (`requires_grad = False`), so never trained; a fresh model gets the 2-D sin-cos table
/// rearranged channels-first, as the reference builds it.
pub fn load_pos_emb(
    source: &mut TensorSource,
    name: &str,
    dim: usize,
    grid: usize,
) -> Result<Tensor> {
    let dtype = source.dtype();
    source.get_buffer(name, &[1, dim, grid, grid], dtype, || {
        let table = crate::posemb::sincos_2d(grid, grid, dim);
        let n = grid * grid;
        // (n, D) row-major → (D, n).
        let mut map = vec![0f32; n * dim];
        for token in 0..n {
            for channel in 0..dim {
                map[channel * n + token] = table[token * dim + channel];
            }
        }
        map
    })
}

/// `(B, C, H, W)` → `(B, H·W, C)` (row-major tokens).
pub fn map_to_tokens(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    Ok(x.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?)
}

/// `(B, H·W, C)` → `(B, C, H, W)`.
pub fn tokens_to_map(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (b, _, c) = x.dims3()?;
    Ok(x.transpose(1, 2)?.contiguous()?.reshape((b, c, h, w))?)
}

/// Sizes of one ViT: width, depth, heads and MLP ratio (`int(dim · mlp_ratio)` hidden units).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VitSize {
    pub dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
}

impl VitSize {
    pub fn hidden(&self) -> usize {
        (self.dim as f64 * self.mlp_ratio) as usize
    }
}

/// LayerNorm epsilon of the ViT encoder/decoder and the ConvNeXt blocks.
pub const VIT_NORM_EPS: f32 = 1e-6;

/// `fc2(act(fc1 x))` with the GELU (erf) of the blocks or the Tanh of the post-MLP.
#[derive(Debug, Clone)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    tanh: bool,
}

impl Mlp {
    pub fn load(
        source: &mut TensorSource,
        prefix: &str,
        dim: usize,
        hidden: usize,
        tanh: bool,
        dtype: DType,
    ) -> Result<Self> {
        Ok(Self {
            fc1: linear_as(source, &format!("{prefix}.fc1"), dim, hidden, dtype)?,
            fc2: linear_as(source, &format!("{prefix}.fc2"), hidden, dim, dtype)?,
            tanh,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.fc1.forward(x)?;
        let h = if self.tanh { h.tanh()? } else { h.gelu_erf()? };
        self.fc2.forward(&h)
    }
}

/// Pre-norm ViT block (`x + attn(norm1 x)`, `x + mlp(norm2 x)`), plain softmax attention with
/// a fused, biased `qkv` projection.
#[derive(Debug, Clone)]
pub struct VitBlock {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    mlp: Mlp,
    heads: usize,
}

impl VitBlock {
    pub fn load(source: &mut TensorSource, prefix: &str, size: &VitSize) -> Result<Self> {
        let (d, dtype) = (size.dim, source.dtype());
        Ok(Self {
            norm1: LayerNorm::load(source, &format!("{prefix}.norm1"), d, VIT_NORM_EPS)?,
            qkv: linear_as(source, &format!("{prefix}.attn.qkv"), d, 3 * d, dtype)?,
            proj: linear_as(source, &format!("{prefix}.attn.proj"), d, d, dtype)?,
            norm2: LayerNorm::load(source, &format!("{prefix}.norm2"), d, VIT_NORM_EPS)?,
            mlp: Mlp::load(
                source,
                &format!("{prefix}.mlp"),
                d,
                size.hidden(),
                false,
                dtype,
            )?,
            heads: size.num_heads,
        })
    }

    fn attention(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let hd = d / self.heads;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, n, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let raw = q.matmul(&k.t()?)?;
        let scale = (hd as f64).powf(-0.5);
        if raw.track_op() && crate::fused::applies(&raw) {
            // Training: scaling and softmax in one pass each way (see `fused`).
            let weights = crate::fused::masked_softmax(&raw, scale, None)?;
            let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, n, d))?;
            return self.proj.forward(&out);
        }
        let scores = (raw * scale)?;
        let weights = if scores.track_op() && matches!(scores.dtype(), DType::F32 | DType::F64) {
            // candle's fused softmax has no backward; off the CPU use the composed form.
            softmax_last_dim_differentiable(&scores)?
        } else if scores.dtype() == DType::F32 {
            candle_nn::ops::softmax_last_dim(&scores)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?
                .to_dtype(scores.dtype())?
        };
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, n, d))?;
        self.proj.forward(&out)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.attention(&self.norm1.forward(x)?)?)?;
        Ok((&x + self.mlp.forward(&self.norm2.forward(&x)?)?)?)
    }
}

/// The optional `x + post_mlp(norm_mlp(x))` after the blocks, computed in float32 as the
/// reference does (its encoder disables autocast there).
#[derive(Debug, Clone)]
pub struct PostMlp {
    norm: LayerNorm,
    mlp: Mlp,
    /// Compute dtype: float32 (float64 for a float64 model).
    dtype: DType,
}

impl PostMlp {
    pub fn load(source: &mut TensorSource, prefix: &str, size: &VitSize) -> Result<Self> {
        // At least float32; a float64 model (gradient checks) keeps its precision.
        let dtype = if source.dtype() == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        Ok(Self {
            norm: LayerNorm::load_as(
                source,
                &format!("{prefix}.norm_mlp"),
                size.dim,
                VIT_NORM_EPS,
                dtype,
            )?,
            mlp: Mlp::load(
                source,
                &format!("{prefix}.post_mlp"),
                size.dim,
                size.hidden(),
                true,
                dtype,
            )?,
            dtype,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(self.dtype)?;
        let y = (&x + self.mlp.forward(&self.norm.forward(&x)?)?)?;
        Ok(y.to_dtype(dtype)?)
    }
}

/// Weights `(out, in)` of PyTorch's 1-D bicubic interpolation with `align_corners=False` and no
/// antialiasing: source coordinate `(dst + 0.5)·(in/out) − 0.5` (not clamped), the four taps
/// `floor(src) − 1 … floor(src) + 2` clamped to the border, Keys kernel with A = −0.75.
/// Equal sizes give the identity.
pub fn bicubic_weights(input: usize, output: usize) -> Vec<f64> {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let mut weights = vec![0.0; output * input];
    if input == output {
        for i in 0..output {
            weights[i * input + i] = 1.0;
        }
        return weights;
    }
    // PyTorch computes the scale and source index in float32 for float tensors.
    let scale = input as f32 / output as f32;
    for dst in 0..output {
        let src = scale * (dst as f32 + 0.5) - 0.5;
        let floor = src.floor();
        let t = (src - floor) as f64;
        let taps = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
        for (k, w) in taps.iter().enumerate() {
            let index = (floor as i64 - 1 + k as i64).clamp(0, input as i64 - 1) as usize;
            weights[dst * input + index] += w;
        }
    }
    weights
}

/// Resize a `(1, D, H, W)` map to `(1, D, h, w)` with [`bicubic_weights`] along both axes, as
/// `F.interpolate(mode='bicubic', align_corners=False)` does for the positional embeddings.
pub fn resize_bicubic(map: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (one, d, in_h, in_w) = map.dims4()?;
    if (in_h, in_w) == (h, w) {
        return Ok(map.clone());
    }
    let device: &Device = map.device();
    let wy =
        Tensor::from_vec(bicubic_weights(in_h, h), (h, in_h), device)?.to_dtype(map.dtype())?;
    let wx =
        Tensor::from_vec(bicubic_weights(in_w, w), (w, in_w), device)?.to_dtype(map.dtype())?;
    // (D, in_h, in_w) · Wxᵀ → (D, in_h, w); then Wy · → (D, h, w).
    let rows = map
        .reshape((d * in_h, in_w))?
        .matmul(&wx.t()?)?
        .reshape((d, in_h, w))?;
    let out = wy.broadcast_left(d)?.matmul(&rows)?;
    Ok(out.reshape((one, d, h, w))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_rows_sum_to_one() {
        for (i, o) in [(6, 4), (6, 8), (10, 7), (4, 2), (2, 5)] {
            let w = bicubic_weights(i, o);
            for r in 0..o {
                let s: f64 = w[r * i..(r + 1) * i].iter().sum();
                assert!((s - 1.0).abs() < 1e-12, "{i}->{o} row {r}: {s}");
            }
        }
    }

    #[test]
    fn bicubic_doubling_matches_the_keys_kernel() {
        // 2 → 4: dst 0 has src −0.25, floor −1, t 0.75; taps at −2, −1, 0, 1 clamp to 0, 0, 0, 1.
        let w = bicubic_weights(2, 4);
        let a = -0.75f64;
        let near = |x: f64| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
        let far = |x: f64| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
        let t = 0.75;
        assert!((w[0] - (far(t + 1.0) + near(t) + near(1.0 - t))).abs() < 1e-12);
        assert!((w[1] - far(2.0 - t)).abs() < 1e-12);
    }

    #[test]
    fn resize_of_a_constant_map_is_constant() {
        let map = Tensor::full(3.5f32, (1, 2, 6, 6), &Device::Cpu).unwrap();
        let out = resize_bicubic(&map, 3, 5).unwrap();
        assert_eq!(out.dims(), &[1, 2, 3, 5]);
        for v in out.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
            assert!((v - 3.5).abs() < 1e-5);
        }
    }
}
