//! Transformer building blocks: LayerNorm, linear layers, (gated) MLP, self- and cross-attention,
//! encoder and decoder blocks, loaded from a checkpoint with shape checks.

use candle_core::{D, DType, Tensor};

use crate::checkpoint::TensorSource;
use crate::config::{Activation, ModelConfig};
use crate::error::Result;
use crate::small_rows::{MAX_ROWS, SmallRowsMatmul};

/// FourM's LayerNorm (eps 1e-6). Without `norm_bias` the checkpoint still stores a (zero) `bias`
/// buffer; the reference feeds that buffer to `F.layer_norm`, and so do we.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

const LAYER_NORM_EPS: f32 = 1e-6;

impl LayerNorm {
    /// A norm whose `bias` is learned (read as a parameter).
    pub fn load(source: &mut TensorSource, prefix: &str, dim: usize) -> Result<Self> {
        Self::load_with_bias(source, prefix, dim, true)
    }

    /// `learned_bias = false` (`norm_bias` off): the `bias` is a zero buffer, never trained.
    pub fn load_with_bias(
        source: &mut TensorSource,
        prefix: &str,
        dim: usize,
        learned_bias: bool,
    ) -> Result<Self> {
        let bias_name = format!("{prefix}.bias");
        Ok(Self {
            weight: source.get(&format!("{prefix}.weight"), &[dim])?,
            bias: if learned_bias {
                source.get(&bias_name, &[dim])?
            } else {
                let dtype = source.dtype();
                source.get_buffer(&bias_name, &[dim], dtype, || vec![0.0; dim])?
            },
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // candle's fused kernel has no backward: while gradients are tracked, use one that has.
        if x.track_op() || self.weight.track_op() || self.bias.track_op() {
            return layer_norm_for_training(x, &self.weight, &self.bias, LAYER_NORM_EPS);
        }
        let x = if x.is_contiguous() {
            x.clone()
        } else {
            x.contiguous()?
        };
        Ok(candle_nn::ops::layer_norm(
            &x,
            &self.weight,
            &self.bias,
            LAYER_NORM_EPS,
        )?)
    }
}

/// Row counts up to which [`Linear::forward`] uses the small-rows kernel (f32) or multiplies
/// row by row (other dtypes) on CPU.
const SMALL_ROW_COUNT: usize = MAX_ROWS;

/// `y = x Wᵀ (+ b)` with the weight kept in the PyTorch `(out, in)` layout; the transpose is a
/// stride change that the matmul kernel consumes directly (no copy).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn load(
        source: &mut TensorSource,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = source.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = if bias {
            Some(source.get(&format!("{prefix}.bias"), &[out_dim])?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn out_dim(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Apply to `(..., in)`; leading dimensions are flattened into one matrix multiply.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((rows, in_dim))?;
        let weight_t = self.weight.t()?;
        // On CPU, a product with a handful of rows (KV-cached decoding of CFG rows, or of several
        // generations batched together) is bound by
        // reading the weight: the gemm kernel packs all of it first, and one matrix-vector
        // product per row streams it once per row. In f32 a dedicated kernel reads it once for
        // all rows (measured 1.6x faster than row by row at 2 rows, 1.3x at 1 row, for the
        // 4M-21 B decoder; `bench_small_rows`); other dtypes keep the row-by-row products
        // (~3x faster than gemm at 2 rows).
        let small = x2.device().is_cpu() && (1..=SMALL_ROW_COUNT).contains(&rows);
        // The kernel has no backward: products that gradients flow through (training) take the
        // general path.
        let tracked = x2.track_op() || self.weight.track_op();
        let mut y = if small && !tracked && x2.dtype() == DType::F32 && self.weight.is_contiguous()
        {
            x2.contiguous()?
                .apply_op2_no_bwd(&self.weight, &SmallRowsMatmul)?
        } else if small && rows > 1 {
            let parts = (0..rows)
                .map(|r| x2.narrow(0, r, 1)?.matmul(&weight_t))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0)?
        } else {
            x2.matmul(&weight_t)?
        };
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        let mut out_dims = dims;
        *out_dims.last_mut().expect("non-empty shape") = self.out_dim();
        Ok(y.reshape(out_dims)?)
    }
}

fn activate(x: &Tensor, activation: Activation) -> Result<Tensor> {
    Ok(match activation {
        Activation::Silu => x.silu()?,
        Activation::Gelu => x.gelu_erf()?,
        Activation::Relu => x.relu()?,
        Activation::Tanh => x.tanh()?,
        Activation::Sigmoid => candle_nn::ops::sigmoid(x)?,
    })
}

/// The feed-forward layer: `fc2(act(fc1 x))`, or gated `fc2(act(fc1 x) * fc3 x)` (SwiGLU).
#[derive(Debug, Clone)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    /// The linear ("up") branch of the gated variant.
    fc3: Option<Linear>,
    activation: Activation,
}

impl Mlp {
    pub fn load(source: &mut TensorSource, prefix: &str, config: &ModelConfig) -> Result<Self> {
        let (dim, hidden, bias) = (config.dim, config.mlp_hidden_dim(), config.mlp_bias);
        Ok(Self {
            fc1: Linear::load(source, &format!("{prefix}.fc1"), dim, hidden, bias)?,
            fc2: Linear::load(source, &format!("{prefix}.fc2"), hidden, dim, bias)?,
            fc3: if config.gated_mlp {
                Some(Linear::load(
                    source,
                    &format!("{prefix}.fc3"),
                    dim,
                    hidden,
                    bias,
                )?)
            } else {
                None
            },
            activation: config.act_layer,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut hidden = activate(&self.fc1.forward(x)?, self.activation)?;
        if let Some(fc3) = &self.fc3 {
            hidden = (hidden * fc3.forward(x)?)?;
        }
        self.fc2.forward(&hidden)
    }
}

/// Boolean attention mask, 1 = blocked, broadcastable to `(B, heads, queries, keys)`.
#[derive(Debug, Clone)]
pub struct AttentionMask {
    pub blocked: Tensor,
}

/// Split `(B, N, k·D)` projections into `k` contiguous `(B, heads, N, hd)` tensors.
fn split_heads(y: &Tensor, parts: usize, heads: usize) -> Result<Vec<Tensor>> {
    let (b, n, width) = y.dims3()?;
    let head_dim = width / parts / heads;
    let y = y
        .reshape((b, n, parts, heads, head_dim))?
        .permute((2, 0, 3, 1, 4))?
        .contiguous()?;
    Ok((0..parts)
        .map(|i| y.get(i))
        .collect::<candle_core::Result<Vec<_>>>()?)
}

/// Merge `(B, heads, N, hd)` back to `(B, N, D)` (head-major channels).
fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, n, hd) = x.dims4()?;
    Ok(x.transpose(1, 2)?.reshape((b, n, h * hd))?)
}

/// Scaled dot-product attention with the reference's masking: blocked scores become
/// `-finfo(dtype).max` (not `-inf`), so a fully blocked row softmaxes to uniform instead of NaN.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&AttentionMask>) -> Result<Tensor> {
    let head_dim = q.dim(D::Minus1)?;
    let scale = (head_dim as f64).powf(-0.5);
    let raw = q.matmul(&k.t()?)?;
    if raw.track_op() && crate::fused::applies(&raw) {
        // Training: scaling, masking and softmax in one pass each way (see `fused`).
        let weights = crate::fused::masked_softmax(&raw, scale, mask.map(|m| &m.blocked))?;
        return Ok(weights.matmul(v)?);
    }
    let scores = (raw * scale)?;
    let scores = match mask {
        None => scores,
        Some(mask) => {
            let lowest = match scores.dtype() {
                DType::F16 => -65504.0,
                DType::BF16 => -half::bf16::MAX.to_f64(),
                DType::F64 => f64::MIN,
                _ => -(f32::MAX as f64),
            };
            let fill = Tensor::new(lowest, scores.device())?
                .to_dtype(scores.dtype())?
                .broadcast_as(scores.shape())?;
            mask.blocked
                .broadcast_as(scores.shape())?
                .where_cond(&fill, &scores)?
        }
    };
    // Reduced-precision softmax sums hundreds of terms in 8 mantissa bits; do it in f32.
    let weights = if scores.track_op() {
        // The fused softmax has no backward; while gradients are tracked use the composed form.
        let compute = if matches!(scores.dtype(), DType::F32 | DType::F64) {
            scores.clone()
        } else {
            scores.to_dtype(DType::F32)?
        };
        softmax_last_dim_differentiable(&compute)?.to_dtype(scores.dtype())?
    } else if scores.dtype() == DType::F32 {
        candle_nn::ops::softmax_last_dim(&scores)?
    } else {
        candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(scores.dtype())?
    };
    Ok(weights.matmul(v)?)
}

/// LayerNorm with a backward pass: the fused kernel on CPU f32 / f64 (`fused::layer_norm`), the
/// composed form elsewhere.
pub fn layer_norm_for_training(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    if crate::fused::applies(x) && weight.dtype() == x.dtype() && bias.dtype() == x.dtype() {
        crate::fused::layer_norm(x, weight, bias, eps)
    } else {
        layer_norm_differentiable(x, weight, bias, eps)
    }
}

/// LayerNorm over the last dimension (biased variance, as the fused kernel) composed from
/// differentiable ops: candle's fused `layer_norm` has no backward, so this form is used while
/// gradients are tracked.
pub fn layer_norm_differentiable(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(variance + eps as f64)?.sqrt()?)?;
    Ok(normed.broadcast_mul(weight)?.broadcast_add(bias)?)
}

/// `softmax` over the last dimension from differentiable ops; the max is subtracted (detached:
/// softmax does not depend on it) so that large scores do not overflow `exp`.
pub fn softmax_last_dim_differentiable(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let exp = x.broadcast_sub(&max)?.exp()?;
    Ok(exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?)
}

/// Optional per-head LayerNorm of queries and keys (`qk_norm` variants).
#[derive(Debug, Clone)]
struct QkNorm {
    q_norm: LayerNorm,
    k_norm: LayerNorm,
}

impl QkNorm {
    fn load(source: &mut TensorSource, prefix: &str, config: &ModelConfig) -> Result<Option<Self>> {
        if !config.qk_norm {
            return Ok(None);
        }
        let hd = config.head_dim();
        Ok(Some(Self {
            q_norm: LayerNorm::load_with_bias(
                source,
                &format!("{prefix}.q_norm"),
                hd,
                config.norm_bias,
            )?,
            k_norm: LayerNorm::load_with_bias(
                source,
                &format!("{prefix}.k_norm"),
                hd,
                config.norm_bias,
            )?,
        }))
    }
}

/// Cached keys and values of one self-attention layer, `(B, heads, T, hd)`.
#[derive(Debug, Clone)]
pub struct KvPair {
    pub keys: Tensor,
    pub values: Tensor,
}

/// Self-attention with one fused `qkv` projection.
#[derive(Debug, Clone)]
pub struct SelfAttention {
    qkv: Linear,
    proj: Linear,
    qk_norm: Option<QkNorm>,
    heads: usize,
}

impl SelfAttention {
    pub fn load(source: &mut TensorSource, prefix: &str, config: &ModelConfig) -> Result<Self> {
        let d = config.dim;
        Ok(Self {
            qkv: Linear::load(source, &format!("{prefix}.qkv"), d, 3 * d, config.qkv_bias)?,
            proj: Linear::load(source, &format!("{prefix}.proj"), d, d, config.proj_bias)?,
            qk_norm: QkNorm::load(source, prefix, config)?,
            heads: config.num_heads,
        })
    }

    /// Attend `x` to itself, after the keys/values in `cache` (which is then extended).
    pub fn forward(
        &self,
        x: &Tensor,
        mask: Option<&AttentionMask>,
        cache: Option<&mut Option<KvPair>>,
    ) -> Result<Tensor> {
        let parts = split_heads(&self.qkv.forward(x)?, 3, self.heads)?;
        let (mut q, mut k, mut v) = (parts[0].clone(), parts[1].clone(), parts[2].clone());
        if let Some(norm) = &self.qk_norm {
            q = norm.q_norm.forward(&q)?;
            k = norm.k_norm.forward(&k)?;
        }
        if let Some(cache) = cache {
            if let Some(previous) = cache.as_ref() {
                k = Tensor::cat(&[&previous.keys, &k], 2)?;
                v = Tensor::cat(&[&previous.values, &v], 2)?;
            }
            *cache = Some(KvPair {
                keys: k.clone(),
                values: v.clone(),
            });
        }
        let out = attend(&q, &k, &v, mask)?;
        self.proj.forward(&merge_heads(&out)?)
    }
}

/// Keys and values of the encoder context for one decoder block, computed once per context.
#[derive(Debug, Clone)]
pub struct CrossKv {
    pub keys: Tensor,
    pub values: Tensor,
}

/// Cross-attention: queries from the decoder, keys/values from the (normalised) context.
#[derive(Debug, Clone)]
pub struct CrossAttention {
    q: Linear,
    kv: Linear,
    proj: Linear,
    qk_norm: Option<QkNorm>,
    heads: usize,
}

impl CrossAttention {
    pub fn load(source: &mut TensorSource, prefix: &str, config: &ModelConfig) -> Result<Self> {
        let d = config.dim;
        Ok(Self {
            q: Linear::load(source, &format!("{prefix}.q"), d, d, config.qkv_bias)?,
            kv: Linear::load(source, &format!("{prefix}.kv"), d, 2 * d, config.qkv_bias)?,
            proj: Linear::load(source, &format!("{prefix}.proj"), d, d, config.proj_bias)?,
            qk_norm: QkNorm::load(source, prefix, config)?,
            heads: config.num_heads,
        })
    }

    /// Project a normalised context `(B, M, D)` into per-head keys and values.
    pub fn context_kv(&self, context: &Tensor) -> Result<CrossKv> {
        let parts = split_heads(&self.kv.forward(context)?, 2, self.heads)?;
        let mut keys = parts[0].clone();
        if let Some(norm) = &self.qk_norm {
            keys = norm.k_norm.forward(&keys)?;
        }
        Ok(CrossKv {
            keys,
            values: parts[1].clone(),
        })
    }

    /// `rows_with_keys`: `(B, 1, 1, 1)` factor that zeroes the attention output of rows whose
    /// context has no valid token; a separate forward of such a row has zero keys, where the
    /// reference's empty softmax yields exactly zero.
    pub fn forward(
        &self,
        x: &Tensor,
        kv: &CrossKv,
        mask: Option<&AttentionMask>,
        rows_with_keys: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        if kv.keys.dim(2)? == 0 {
            // No keys at all: the attention output is zero, so the branch is `proj(0)` = its bias.
            let zeros = Tensor::zeros((b, n, d), x.dtype(), x.device())?;
            return self.proj.forward(&zeros);
        }
        let mut q = self
            .q
            .forward(x)?
            .reshape((b, n, self.heads, d / self.heads))?
            .transpose(1, 2)?
            .contiguous()?;
        if let Some(norm) = &self.qk_norm {
            q = norm.q_norm.forward(&q)?;
        }
        let mut out = attend(&q, &kv.keys, &kv.values, mask)?;
        if let Some(factor) = rows_with_keys {
            out = out.broadcast_mul(factor)?;
        }
        self.proj.forward(&merge_heads(&out)?)
    }
}

/// Pre-norm encoder block.
#[derive(Debug, Clone)]
pub struct EncoderBlock {
    norm1: LayerNorm,
    attn: SelfAttention,
    norm2: LayerNorm,
    mlp: Mlp,
}

impl EncoderBlock {
    pub fn load(source: &mut TensorSource, prefix: &str, config: &ModelConfig) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::load_with_bias(
                source,
                &format!("{prefix}.norm1"),
                config.dim,
                config.norm_bias,
            )?,
            attn: SelfAttention::load(source, &format!("{prefix}.attn"), config)?,
            norm2: LayerNorm::load_with_bias(
                source,
                &format!("{prefix}.norm2"),
                config.dim,
                config.norm_bias,
            )?,
            mlp: Mlp::load(source, &format!("{prefix}.mlp"), config)?,
        })
    }

    pub fn forward(&self, x: &Tensor, mask: Option<&AttentionMask>) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.norm1.forward(x)?, mask, None)?)?;
        Ok((&x + self.mlp.forward(&self.norm2.forward(&x)?)?)?)
    }
}

/// Pre-norm decoder block: self-attention, cross-attention to the context, MLP. Each block owns a
/// `context_norm` applied to the same un-normalised context.
#[derive(Debug, Clone)]
pub struct DecoderBlock {
    norm1: LayerNorm,
    self_attn: SelfAttention,
    query_norm: LayerNorm,
    context_norm: LayerNorm,
    cross_attn: CrossAttention,
    norm2: LayerNorm,
    mlp: Mlp,
}

impl DecoderBlock {
    pub fn load(source: &mut TensorSource, prefix: &str, config: &ModelConfig) -> Result<Self> {
        let d = config.dim;
        Ok(Self {
            norm1: LayerNorm::load_with_bias(
                source,
                &format!("{prefix}.norm1"),
                d,
                config.norm_bias,
            )?,
            self_attn: SelfAttention::load(source, &format!("{prefix}.self_attn"), config)?,
            query_norm: LayerNorm::load_with_bias(
                source,
                &format!("{prefix}.query_norm"),
                d,
                config.norm_bias,
            )?,
            context_norm: LayerNorm::load_with_bias(
                source,
                &format!("{prefix}.context_norm"),
                d,
                config.norm_bias,
            )?,
            cross_attn: CrossAttention::load(source, &format!("{prefix}.cross_attn"), config)?,
            norm2: LayerNorm::load_with_bias(
                source,
                &format!("{prefix}.norm2"),
                d,
                config.norm_bias,
            )?,
            mlp: Mlp::load(source, &format!("{prefix}.mlp"), config)?,
        })
    }

    /// Keys/values of this block's cross-attention for a context `(B, M, D)`.
    pub fn context_kv(&self, context: &Tensor) -> Result<CrossKv> {
        self.cross_attn
            .context_kv(&self.context_norm.forward(context)?)
    }

    pub fn forward(
        &self,
        x: &Tensor,
        self_mask: Option<&AttentionMask>,
        cache: Option<&mut Option<KvPair>>,
        cross: &CrossKv,
        cross_mask: Option<&AttentionMask>,
        rows_with_keys: Option<&Tensor>,
    ) -> Result<Tensor> {
        let x = (x + self
            .self_attn
            .forward(&self.norm1.forward(x)?, self_mask, cache)?)?;
        let x = (&x
            + self.cross_attn.forward(
                &self.query_norm.forward(&x)?,
                cross,
                cross_mask,
                rows_with_keys,
            )?)?;
        Ok((&x + self.mlp.forward(&self.norm2.forward(&x)?)?)?)
    }
}

impl Linear {
    /// A linear layer from existing tensors (e.g. a head tied to a token table).
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }
}
