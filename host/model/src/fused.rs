//! Fused CPU kernels with their backward passes, for training: the masked, scaled softmax of
//! attention, LayerNorm, and cross-entropy over logits.
//!
//! Composed from candle's elementwise ops, one attention softmax is seven passes over the score
//! tensor forward (scale, mask, max, subtract, exp, sum, divide) and more backward, each writing a
//! fresh tensor; on a small CPU model those passes, not the matrix products, take most of a
//! training step. Here each is one pass forward and one backward. The forward results equal the
//! composed forms up to float rounding (the same operations, sums in row order); the gradients
//! are the analytic ones, checked against the composed forms' in the tests.
//!
//! Only contiguous f32 / f64 CPU tensors take the fused path (`applies`); other dtypes and devices
//! keep the composed forms.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Rows of at least this many elements in all are split over threads.
const PARALLEL_ELEMENTS: usize = 1 << 15;

/// The float types the kernels run on.
trait Real: candle_core::WithDType + Send + Sync {
    /// The value a blocked score takes (the reference's `-finfo(dtype).max`).
    const LOWEST: Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
}

impl Real for f32 {
    const LOWEST: Self = -f32::MAX;
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn ln(self) -> Self {
        f32::ln(self)
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
}

impl Real for f64 {
    const LOWEST: Self = f64::MIN;
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
}

/// Calls the generic kernel `$kernel::<T>(args)` with `T` the element type of `$storage`, or
/// refuses a storage that is neither f32 nor f64.
macro_rules! by_float_type {
    ($op:literal, $storage:expr, $kernel:ident($($arg:expr),*)) => {
        match $storage {
            CpuStorage::F32(_) => $kernel::<f32>($($arg),*),
            CpuStorage::F64(_) => $kernel::<f64>($($arg),*),
            other => candle_core::bail!("{} runs on f32 or f64, not {:?}", $op, other.dtype()),
        }
    };
}

/// Whether the fused kernels serve `x`: a CPU tensor of f32 or f64.
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// `softmax(scale · scores)` over the last dimension with the entries where `blocked` (u8,
/// broadcastable to `scores`) is non-zero replaced by the dtype's lowest value first, so a fully
/// blocked row comes out uniform, as the reference's masking does. Differentiable in `scores`.
pub fn masked_softmax(scores: &Tensor, scale: f64, blocked: Option<&Tensor>) -> Result<Tensor> {
    let scores = scores.contiguous()?;
    let op = MaskedSoftmax { scale };
    Ok(match blocked {
        None => scores.apply_op1(op)?,
        Some(blocked) => {
            let blocked = blocked.broadcast_as(scores.shape())?;
            scores.apply_op2(&blocked, op)?
        }
    })
}

/// Per-row cross-entropy of `logits` `(N, V)` against `labels` `(N,)` (u32), averaged over the
/// rows, as `candle_nn::loss::cross_entropy`. Differentiable in `logits`.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let logits = logits.contiguous()?;
    let labels = labels.to_dtype(DType::U32)?.contiguous()?;
    let rows = logits.dim(0)?;
    let per_row = logits.apply_op2(&labels, CrossEntropy)?;
    Ok((per_row.sum_all()? / rows as f64)?)
}

#[derive(Debug, Clone, Copy)]
struct MaskedSoftmax {
    scale: f64,
}

/// Element offsets of a (possibly broadcast) mask laid out like `layout`, row by row: the start of
/// each row and the step between its elements.
struct MaskRows<'a> {
    data: &'a [u8],
    layout: &'a Layout,
}

impl MaskRows<'_> {
    fn row(&self, row: usize) -> impl Iterator<Item = bool> + '_ {
        let dims = self.layout.dims();
        let strides = self.layout.stride();
        let last = dims.len() - 1;
        let mut rest = row;
        let mut start = self.layout.start_offset();
        for d in (0..last).rev() {
            start += (rest % dims[d]) * strides[d];
            rest /= dims[d];
        }
        let step = strides[last];
        (0..dims[last]).map(move |i| self.data[start + i * step] != 0)
    }
}

fn contiguous<'a, T: Real>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{what} must be contiguous");
    };
    Ok(&storage.as_slice::<T>()?[start..end])
}

/// The largest value of a row (the dtype's lowest for an empty one).
fn row_max<T: Real>(row: &[T]) -> T {
    row.iter()
        .copied()
        .fold(T::LOWEST, |m, v| if v > m { v } else { m })
}

/// The u32 labels of a cross-entropy, contiguous.
fn labels_of<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [u32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("cross-entropy labels must be contiguous");
    };
    Ok(&storage.as_slice::<u32>()?[start..end])
}

/// Runs `f(row index, output row)` over the rows of `out`, in parallel when the work is large.
fn for_each_row<T: Send>(out: &mut [T], width: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if width == 0 {
        return;
    }
    if out.len() >= PARALLEL_ELEMENTS {
        out.par_chunks_mut(width)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
    } else {
        out.chunks_mut(width)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
    }
}

fn softmax_forward<T: Real>(
    scores: &[T],
    width: usize,
    scale: T,
    mask: Option<&MaskRows<'_>>,
) -> Vec<T> {
    let mut out = vec![T::zero(); scores.len()];
    for_each_row(&mut out, width, |r, row| {
        let input = &scores[r * width..(r + 1) * width];
        match mask {
            None => row.iter_mut().zip(input).for_each(|(o, &s)| *o = s * scale),
            Some(mask) => row
                .iter_mut()
                .zip(input)
                .zip(mask.row(r))
                .for_each(|((o, &s), blocked)| *o = if blocked { T::LOWEST } else { s * scale }),
        }
        let max = row_max(row);
        let mut sum = T::zero();
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        row.iter_mut().for_each(|v| *v /= sum);
    });
    out
}

fn softmax_op<T: Real>(
    op: &MaskedSoftmax,
    scores: &CpuStorage,
    layout: &Layout,
    mask: Option<&MaskRows<'_>>,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let width = layout.dims().last().copied().unwrap_or(1);
    let scores = contiguous::<T>(scores, layout, "masked-softmax scores")?;
    let out = softmax_forward(scores, width, T::from_f64(op.scale), mask);
    Ok((T::to_cpu_storage_owned(out), layout.shape().clone()))
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        by_float_type!("masked-softmax", s, softmax_op(self, s, l, None))
    }

    fn bwd(&self, _: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(res.apply_op2_no_bwd(
            &grad,
            &SoftmaxBackward { scale: self.scale },
        )?))
    }
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        m: &CpuStorage,
        ml: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let mask = MaskRows {
            data: m.as_slice::<u8>()?,
            layout: ml,
        };
        by_float_type!("masked-softmax", s, softmax_op(self, s, l, Some(&mask)))
    }

    fn bwd(
        &self,
        _: &Tensor,
        blocked: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let scores =
            res.apply_op3_no_bwd(&grad, blocked, &SoftmaxBackward { scale: self.scale })?;
        Ok((Some(scores), None))
    }
}

/// `scale · y ⊙ (g − Σ g ⊙ y)` per row, the gradient of the scores through the softmax `y`; zero
/// at blocked entries (their scores were replaced, so they do not reach the output).
#[derive(Debug, Clone, Copy)]
struct SoftmaxBackward {
    scale: f64,
}

fn softmax_backward<T: Real>(
    op: &SoftmaxBackward,
    (y, yl): (&CpuStorage, &Layout),
    (g, gl): (&CpuStorage, &Layout),
    mask: Option<&MaskRows<'_>>,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let width = yl.dims().last().copied().unwrap_or(1);
    let y = contiguous::<T>(y, yl, "masked-softmax output")?;
    let g = contiguous::<T>(g, gl, "masked-softmax gradient")?;
    let scale = T::from_f64(op.scale);
    let mut out = vec![T::zero(); y.len()];
    for_each_row(&mut out, width, |r, row| {
        let (y, g) = (
            &y[r * width..(r + 1) * width],
            &g[r * width..(r + 1) * width],
        );
        let dot = y.iter().zip(g).fold(T::zero(), |acc, (&y, &g)| acc + y * g);
        for ((o, &y), &g) in row.iter_mut().zip(y).zip(g) {
            *o = scale * y * (g - dot);
        }
        if let Some(mask) = mask {
            for (o, blocked) in row.iter_mut().zip(mask.row(r)) {
                if blocked {
                    *o = T::zero();
                }
            }
        }
    });
    Ok((T::to_cpu_storage_owned(out), yl.shape().clone()))
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "masked-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        y: &CpuStorage,
        yl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        by_float_type!(
            "masked-softmax",
            y,
            softmax_backward(self, (y, yl), (g, gl), None)
        )
    }
}

impl CustomOp3 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "masked-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        y: &CpuStorage,
        yl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
        m: &CpuStorage,
        ml: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let mask = MaskRows {
            data: m.as_slice::<u8>()?,
            layout: ml,
        };
        by_float_type!(
            "masked-softmax",
            y,
            softmax_backward(self, (y, yl), (g, gl), Some(&mask))
        )
    }
}

/// Per-row `logsumexp(logits) − logits[label]`.
#[derive(Debug, Clone, Copy)]
struct CrossEntropy;

fn check_labels(labels: &[u32], classes: usize) -> candle_core::Result<()> {
    match labels.iter().position(|&l| l as usize >= classes) {
        Some(row) => candle_core::bail!(
            "cross-entropy: row {row} has label {} but there are only {classes} classes",
            labels[row]
        ),
        None => Ok(()),
    }
}

fn cross_entropy_rows<T: Real>(
    (x, xl): (&CpuStorage, &Layout),
    (l, ll): (&CpuStorage, &Layout),
) -> candle_core::Result<(CpuStorage, Shape)> {
    let (rows, classes) = xl.shape().dims2()?;
    let x = contiguous::<T>(x, xl, "cross-entropy logits")?;
    let labels = labels_of(l, ll)?;
    if labels.len() != rows {
        candle_core::bail!("cross-entropy: {} labels for {rows} rows", labels.len());
    }
    check_labels(labels, classes)?;
    let mut out = vec![T::zero(); rows];
    let loss = |r: usize| {
        let row = &x[r * classes..(r + 1) * classes];
        let max = row_max(row);
        let sum = row.iter().fold(T::zero(), |acc, &v| acc + (v - max).exp());
        max + sum.ln() - row[labels[r] as usize]
    };
    if x.len() >= PARALLEL_ELEMENTS {
        out.par_iter_mut()
            .enumerate()
            .for_each(|(r, o)| *o = loss(r));
    } else {
        out.iter_mut().enumerate().for_each(|(r, o)| *o = loss(r));
    }
    Ok((T::to_cpu_storage_owned(out), Shape::from(rows)))
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        l: &CpuStorage,
        ll: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        by_float_type!("cross-entropy", x, cross_entropy_rows((x, xl), (l, ll)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        Ok((
            Some(logits.apply_op3_no_bwd(labels, &grad, &CrossEntropyBackward)?),
            None,
        ))
    }
}

/// `g_r · (softmax(logits_r) − onehot(label_r))`, the gradient of the logits.
#[derive(Debug, Clone, Copy)]
struct CrossEntropyBackward;

fn cross_entropy_backward<T: Real>(
    (x, xl): (&CpuStorage, &Layout),
    (l, ll): (&CpuStorage, &Layout),
    (g, gl): (&CpuStorage, &Layout),
) -> candle_core::Result<(CpuStorage, Shape)> {
    let (_, classes) = xl.shape().dims2()?;
    let x = contiguous::<T>(x, xl, "cross-entropy logits")?;
    let g = contiguous::<T>(g, gl, "cross-entropy gradient")?;
    let labels = labels_of(l, ll)?;
    let mut out = vec![T::zero(); x.len()];
    for_each_row(&mut out, classes, |r, row| {
        let input = &x[r * classes..(r + 1) * classes];
        let max = row_max(input);
        let mut sum = T::zero();
        for (o, &v) in row.iter_mut().zip(input) {
            *o = (v - max).exp();
            sum += *o;
        }
        let weight = g[r] / sum;
        row.iter_mut().for_each(|o| *o *= weight);
        row[labels[r] as usize] -= g[r];
    });
    Ok((T::to_cpu_storage_owned(out), xl.shape().clone()))
}

impl CustomOp3 for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "cross-entropy-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        l: &CpuStorage,
        ll: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        by_float_type!(
            "cross-entropy",
            x,
            cross_entropy_backward((x, xl), (l, ll), (g, gl))
        )
    }
}

/// LayerNorm over the last dimension (biased variance, `eps` inside the square root) scaled by
/// `weight` and shifted by `bias` (both `(D,)`), as `candle_nn::ops::layer_norm`.
/// Differentiable in all three.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    let x = x.contiguous()?;
    let (weight, bias) = (weight.contiguous()?, bias.contiguous()?);
    Ok(x.apply_op3(
        &weight,
        &bias,
        LayerNorm {
            eps: f64::from(eps),
        },
    )?)
}

#[derive(Debug, Clone, Copy)]
struct LayerNorm {
    eps: f64,
}

/// One row's mean and `sqrt(variance + eps)`.
fn row_statistics<T: Real>(row: &[T], eps: T) -> (T, T) {
    let count = T::from_f64(row.len() as f64);
    let mean = row.iter().fold(T::zero(), |acc, &v| acc + v) / count;
    let variance = row
        .iter()
        .fold(T::zero(), |acc, &v| acc + (v - mean) * (v - mean))
        / count;
    (mean, (variance + eps).sqrt())
}

fn layer_norm_forward<T: Real>(
    op: &LayerNorm,
    (x, xl): (&CpuStorage, &Layout),
    (w, wl): (&CpuStorage, &Layout),
    (b, bl): (&CpuStorage, &Layout),
) -> candle_core::Result<(CpuStorage, Shape)> {
    let width = xl.dims().last().copied().unwrap_or(1);
    let x = contiguous::<T>(x, xl, "layer-norm input")?;
    let w = contiguous::<T>(w, wl, "layer-norm weight")?;
    let b = contiguous::<T>(b, bl, "layer-norm bias")?;
    if w.len() != width || b.len() != width {
        candle_core::bail!(
            "layer-norm over {width} features got a weight of {} and a bias of {}",
            w.len(),
            b.len()
        );
    }
    let eps = T::from_f64(op.eps);
    let mut out = vec![T::zero(); x.len()];
    for_each_row(&mut out, width, |r, row| {
        let input = &x[r * width..(r + 1) * width];
        let (mean, std) = row_statistics(input, eps);
        for (((o, &v), &w), &b) in row.iter_mut().zip(input).zip(w).zip(b) {
            *o = (v - mean) / std * w + b;
        }
    });
    Ok((T::to_cpu_storage_owned(out), xl.shape().clone()))
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        by_float_type!(
            "layer-norm",
            x,
            layer_norm_forward(self, (x, xl), (w, wl), (b, bl))
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let width = weight.elem_count();
        let rows = x.elem_count() / width.max(1);
        // One kernel gives the input's gradient and, in two extra rows, the weight's and bias's.
        let all = x.apply_op3_no_bwd(weight, &grad, &LayerNormBackward { eps: self.eps })?;
        let grad_x = all.narrow(0, 0, rows)?.reshape(x.shape())?;
        let grad_weight = all.get(rows)?;
        let grad_bias = all.get(rows + 1)?;
        Ok((Some(grad_x), Some(grad_weight), Some(grad_bias)))
    }
}

/// `(rows + 2, D)`: the gradient of the input row by row, then of the weight, then of the bias.
#[derive(Debug, Clone, Copy)]
struct LayerNormBackward {
    eps: f64,
}

/// Rows per parallel task of the backward pass (each task also sums its rows' weight and bias
/// gradients, added up at the end).
const LAYER_NORM_ROWS_PER_TASK: usize = 64;

fn layer_norm_backward<T: Real>(
    op: &LayerNormBackward,
    (x, xl): (&CpuStorage, &Layout),
    (w, wl): (&CpuStorage, &Layout),
    (g, gl): (&CpuStorage, &Layout),
) -> candle_core::Result<(CpuStorage, Shape)> {
    let width = xl.dims().last().copied().unwrap_or(1).max(1);
    let x = contiguous::<T>(x, xl, "layer-norm input")?;
    let w = contiguous::<T>(w, wl, "layer-norm weight")?;
    let g = contiguous::<T>(g, gl, "layer-norm gradient")?;
    let rows = x.len() / width;
    let eps = T::from_f64(op.eps);
    let count = T::from_f64(width as f64);
    let mut out = vec![T::zero(); (rows + 2) * width];
    let (grad_x, _) = out.split_at_mut(rows * width);
    let task = |first_row: usize, chunk: &mut [T]| {
        let mut sums = vec![T::zero(); 2 * width];
        for (i, out_row) in chunk.chunks_mut(width).enumerate() {
            let r = first_row + i;
            let (x, g) = (
                &x[r * width..(r + 1) * width],
                &g[r * width..(r + 1) * width],
            );
            let (mean, std) = row_statistics(x, eps);
            let inverse_std = T::one() / std;
            let (mut sum_gw, mut sum_gw_xhat) = (T::zero(), T::zero());
            for j in 0..width {
                let normed = (x[j] - mean) * inverse_std;
                let gw = g[j] * w[j];
                sum_gw += gw;
                sum_gw_xhat += gw * normed;
                sums[j] += g[j] * normed;
                sums[width + j] += g[j];
            }
            let (mean_gw, mean_gw_xhat) = (sum_gw / count, sum_gw_xhat / count);
            for j in 0..width {
                let normed = (x[j] - mean) * inverse_std;
                out_row[j] = inverse_std * (g[j] * w[j] - mean_gw - normed * mean_gw_xhat);
            }
        }
        sums
    };
    let chunk_len = LAYER_NORM_ROWS_PER_TASK * width;
    let add = |mut a: Vec<T>, b: Vec<T>| {
        a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        a
    };
    let sums = if grad_x.len() >= PARALLEL_ELEMENTS {
        grad_x
            .par_chunks_mut(chunk_len)
            .enumerate()
            .map(|(c, chunk)| task(c * LAYER_NORM_ROWS_PER_TASK, chunk))
            .reduce(|| vec![T::zero(); 2 * width], add)
    } else {
        grad_x
            .chunks_mut(chunk_len)
            .enumerate()
            .map(|(c, chunk)| task(c * LAYER_NORM_ROWS_PER_TASK, chunk))
            .fold(vec![T::zero(); 2 * width], add)
    };
    out[rows * width..].copy_from_slice(&sums);
    Ok((T::to_cpu_storage_owned(out), Shape::from((rows + 2, width))))
}

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        by_float_type!(
            "layer-norm",
            x,
            layer_norm_backward(self, (x, xl), (w, wl), (g, gl))
        )
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::layers::softmax_last_dim_differentiable;

    /// Deterministic values in [-spread, spread) from a small linear congruential generator.
    fn values(count: usize, seed: u64, spread: f64) -> Vec<f64> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * spread
            })
            .collect()
    }

    /// The composed form the attention used before: scale, fill blocked entries, softmax.
    fn composed_softmax(scores: &Tensor, scale: f64, blocked: Option<&Tensor>) -> Tensor {
        let scaled = (scores * scale).unwrap();
        let masked = match blocked {
            None => scaled,
            Some(blocked) => {
                let fill = Tensor::new(f64::MIN, scores.device())
                    .unwrap()
                    .to_dtype(scores.dtype())
                    .unwrap()
                    .broadcast_as(scores.shape())
                    .unwrap();
                blocked
                    .broadcast_as(scores.shape())
                    .unwrap()
                    .where_cond(&fill, &scaled)
                    .unwrap()
            }
        };
        softmax_last_dim_differentiable(&masked).unwrap()
    }

    /// A `(2, 1, 3, 5)` mask: causal-like rows, one row fully blocked, one row fully open.
    fn mask() -> Tensor {
        let mut blocked = vec![0u8; 2 * 3 * 5];
        for q in 0..3 {
            for k in q + 2..5 {
                blocked[q * 5 + k] = 1;
            }
        }
        blocked[15..20].fill(1);
        Tensor::from_vec(blocked, (2, 1, 3, 5), &Device::Cpu).unwrap()
    }

    fn max_difference(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    #[test]
    fn masked_softmax_matches_the_composed_form_and_its_gradient() {
        for blocked in [None, Some(mask())] {
            let scores =
                Var::from_vec(values(2 * 4 * 3 * 5, 1, 6.0), (2, 4, 3, 5), &Device::Cpu).unwrap();
            // Weighting the outputs makes the upstream gradient differ from entry to entry.
            let upstream =
                Tensor::from_vec(values(2 * 4 * 3 * 5, 2, 1.0), (2, 4, 3, 5), &Device::Cpu)
                    .unwrap();
            let fused = masked_softmax(&scores, 0.37, blocked.as_ref()).unwrap();
            let composed = composed_softmax(&scores, 0.37, blocked.as_ref());
            assert!(max_difference(&fused, &composed) < 1e-15);

            let fused_grad = (fused * &upstream)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let composed_grad = (composed * &upstream)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let (fused_grad, composed_grad) = (
                fused_grad.get(&scores).unwrap(),
                composed_grad.get(&scores).unwrap(),
            );
            assert!(
                max_difference(fused_grad, composed_grad) < 1e-15,
                "{fused_grad} vs {composed_grad}"
            );
        }
    }

    #[test]
    fn a_fully_blocked_row_is_uniform_and_passes_no_gradient() {
        let scores = Var::from_vec(values(2 * 3 * 5, 3, 4.0), (2, 1, 3, 5), &Device::Cpu).unwrap();
        let fused = masked_softmax(&scores, 1.0, Some(&mask())).unwrap();
        let row: Vec<f64> = fused
            .get(1)
            .unwrap()
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(row, vec![0.2; 5]);
        let weights = Tensor::from_vec(values(30, 4, 1.0), (2, 1, 3, 5), &Device::Cpu).unwrap();
        let grads = (fused * weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let grad: Vec<f64> = grads
            .get(&scores)
            .unwrap()
            .get(1)
            .unwrap()
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(grad, vec![0.0; 5]);
    }

    #[test]
    fn large_inputs_split_over_threads_give_the_same_rows() {
        // 64 rows of 1 024: past the parallel threshold; each row must equal its lone computation.
        let data = values(64 * 1024, 5, 8.0);
        let all = Tensor::from_vec(data.clone(), (64, 1024), &Device::Cpu).unwrap();
        let together = masked_softmax(&all, 0.5, None).unwrap();
        for r in [0, 17, 63] {
            let one = Tensor::from_vec(
                data[r * 1024..(r + 1) * 1024].to_vec(),
                (1, 1024),
                &Device::Cpu,
            )
            .unwrap();
            let alone = masked_softmax(&one, 0.5, None).unwrap();
            assert_eq!(
                max_difference(&together.get(r).unwrap().unsqueeze(0).unwrap(), &alone),
                0.0
            );
        }
    }

    #[test]
    fn cross_entropy_matches_candle_and_its_gradient() {
        for dtype in [DType::F64, DType::F32] {
            let logits = Var::from_tensor(
                &Tensor::from_vec(values(7 * 11, 6, 5.0), (7, 11), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let labels = Tensor::new(&[0u32, 10, 3, 3, 7, 1, 9], &Device::Cpu).unwrap();
            let fused = cross_entropy(&logits, &labels).unwrap();
            let reference = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
            let tolerance = if dtype == DType::F64 { 1e-14 } else { 1e-6 };
            let (f, r) = (
                fused
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap(),
                reference
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap(),
            );
            assert!((f - r).abs() < tolerance, "{dtype:?}: {f} vs {r}");

            let fused_grad = (fused * 3.0).unwrap().backward().unwrap();
            let reference_grad = (reference * 3.0).unwrap().backward().unwrap();
            let difference = max_difference(
                &fused_grad
                    .get(&logits)
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap(),
                &reference_grad
                    .get(&logits)
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap(),
            );
            assert!(
                difference < tolerance,
                "{dtype:?}: gradients differ by {difference}"
            );
        }
    }

    #[test]
    fn cross_entropy_refuses_a_label_past_the_classes() {
        let logits = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        let labels = Tensor::new(&[1u32, 4], &Device::Cpu).unwrap();
        let message = cross_entropy(&logits, &labels).unwrap_err().to_string();
        assert!(
            message.contains("row 1 has label 4 but there are only 4 classes"),
            "{message}"
        );
    }

    #[test]
    fn only_cpu_floats_of_32_or_64_bits_take_the_fused_path() {
        let cpu = Device::Cpu;
        assert!(applies(&Tensor::zeros(3, DType::F32, &cpu).unwrap()));
        assert!(applies(&Tensor::zeros(3, DType::F64, &cpu).unwrap()));
        assert!(!applies(&Tensor::zeros(3, DType::F16, &cpu).unwrap()));
        assert!(!applies(&Tensor::zeros(3, DType::BF16, &cpu).unwrap()));
    }

    #[test]
    fn layer_norm_matches_the_composed_form_and_its_gradients() {
        // 1 500 rows of 24 pass the parallel threshold, with a partial last task.
        for (rows, seed) in [(3, 7), (1500, 8)] {
            let x = Var::from_vec(
                values(rows * 24, seed, 3.0),
                (rows / 3, 3, 24),
                &Device::Cpu,
            )
            .unwrap();
            let weight = Var::from_vec(values(24, seed + 1, 2.0), 24, &Device::Cpu).unwrap();
            let bias = Var::from_vec(values(24, seed + 2, 1.0), 24, &Device::Cpu).unwrap();
            let upstream = Tensor::from_vec(
                values(rows * 24, seed + 3, 1.0),
                (rows / 3, 3, 24),
                &Device::Cpu,
            )
            .unwrap();
            let fused = layer_norm(&x, &weight, &bias, 1e-6).unwrap();
            let composed =
                crate::layers::layer_norm_differentiable(&x, &weight, &bias, 1e-6).unwrap();
            assert!(max_difference(&fused, &composed) < 1e-14);

            let fused_grads = (fused * &upstream)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let composed_grads = (composed * &upstream)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (name, var) in [("input", &x), ("weight", &weight), ("bias", &bias)] {
                let difference = max_difference(
                    fused_grads.get(var).unwrap(),
                    composed_grads.get(var).unwrap(),
                );
                assert!(
                    difference < 1e-11,
                    "{rows} rows: the {name} gradients differ by {difference}"
                );
            }
        }
    }

    #[test]
    fn layer_norm_refuses_a_weight_of_another_width() {
        let x = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        let weight = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
        let bias = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        let message = layer_norm(&x, &weight, &bias, 1e-6)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("over 4 features got a weight of 3 and a bias of 4"),
            "{message}"
        );
    }
}
