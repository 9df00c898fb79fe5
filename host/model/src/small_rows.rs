//! `x Wᵀ` for a handful of f32 rows on CPU (KV-cached decoding: one token per row, a few rows for
//! classifier-free guidance and batched generations), reading the weight once for all rows.
//!
//! Such a product is bound by memory bandwidth: every weight element is used once per row. A
//! general matrix-multiply kernel packs the whole weight first, and one matrix-vector product per
//! row streams it once per row; here each weight row is read once and dotted with every input
//! row while it is in cache. The dot products sum in a different order than the gemm kernels,
//! so results agree with them to float rounding, not bit for bit; a row's result does not depend
//! on the other rows of the product (each row's sums run in the same order whatever their count).

use candle_core::{CpuStorage, CustomOp2, Layout, Shape};
use rayon::prelude::*;

/// Largest row count the kernel handles: two CFG rows for each of up to four generations
/// batched together (from 5 rows its accumulators no longer all fit in registers, which costs
/// far less than reading the weight again).
pub const MAX_ROWS: usize = 8;

/// Output features per parallel task: large enough to amortise scheduling, small enough to
/// spread a 768-wide layer over a few threads.
const OUTPUTS_PER_TASK: usize = 64;

/// f32 values per 256-bit vector.
const LANES: usize = 8;

/// `(rows, in) × (out, in)ᵀ → (rows, out)`, both operands contiguous f32.
pub struct SmallRowsMatmul;

impl CustomOp2 for SmallRowsMatmul {
    fn name(&self) -> &'static str {
        "small-rows-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, in_dim) = x_layout.shape().dims2()?;
        let (out_dim, w_in) = w_layout.shape().dims2()?;
        if w_in != in_dim || !(1..=MAX_ROWS).contains(&rows) {
            candle_core::bail!(
                "small-rows-matmul: ({rows}, {in_dim}) x ({out_dim}, {w_in})^T is not supported"
            );
        }
        let (Some((x_start, x_end)), Some((w_start, w_end))) =
            (x_layout.contiguous_offsets(), w_layout.contiguous_offsets())
        else {
            candle_core::bail!("small-rows-matmul needs contiguous operands");
        };
        let x = &x.as_slice::<f32>()?[x_start..x_end];
        let w = &w.as_slice::<f32>()?[w_start..w_end];
        let out = match rows {
            1 => products::<1>(x, w, in_dim, out_dim),
            2 => products::<2>(x, w, in_dim, out_dim),
            3 => products::<3>(x, w, in_dim, out_dim),
            4 => products::<4>(x, w, in_dim, out_dim),
            5 => products::<5>(x, w, in_dim, out_dim),
            6 => products::<6>(x, w, in_dim, out_dim),
            7 => products::<7>(x, w, in_dim, out_dim),
            _ => products::<8>(x, w, in_dim, out_dim),
        };
        Ok((CpuStorage::F32(out), Shape::from((rows, out_dim))))
    }
}

/// All `R × out_dim` dot products, output row-major `(R, out_dim)`.
fn products<const R: usize>(x: &[f32], w: &[f32], in_dim: usize, out_dim: usize) -> Vec<f32> {
    let xs: [&[f32]; R] = std::array::from_fn(|r| &x[r * in_dim..(r + 1) * in_dim]);
    // Feature-major while computing, so each task writes one contiguous block.
    let mut by_feature = vec![0f32; out_dim * R];
    by_feature
        .par_chunks_mut(OUTPUTS_PER_TASK * R)
        .enumerate()
        .for_each(|(task, block)| {
            let first = task * OUTPUTS_PER_TASK;
            for (k, slot) in block.chunks_exact_mut(R).enumerate() {
                let j = first + k;
                slot.copy_from_slice(&dots(&w[j * in_dim..(j + 1) * in_dim], &xs));
            }
        });
    let mut out = vec![0f32; R * out_dim];
    for (j, slot) in by_feature.chunks_exact(R).enumerate() {
        for (r, &v) in slot.iter().enumerate() {
            out[r * out_dim + j] = v;
        }
    }
    out
}

/// `w · x_r` for every row, with the AVX2/FMA kernel where the CPU has it.
fn dots<const R: usize>(w: &[f32], xs: &[&[f32]; R]) -> [f32; R] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { dots_fma(w, xs) };
        }
    }
    dots_portable(w, xs)
}

/// Vectors of 8 per row and iteration: a fused multiply-add has a latency of several cycles,
/// so each row needs several independent accumulators to keep the FMA units busy.
#[cfg(target_arch = "x86_64")]
const UNROLL: usize = 4;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dots_fma<const R: usize>(w: &[f32], xs: &[&[f32]; R]) -> [f32; R] {
    use std::arch::x86_64::{__m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps};
    let n = w.len();
    debug_assert!(xs.iter().all(|x| x.len() == n));
    let step = LANES * UNROLL;
    let whole = n / step * step;
    let mut acc: [[__m256; UNROLL]; R] = [[_mm256_setzero_ps(); UNROLL]; R];
    let mut k = 0;
    while k < whole {
        for u in 0..UNROLL {
            let at = k + u * LANES;
            // SAFETY: `at + LANES <= whole <= n`, and every row of `xs` has `n` values.
            let wv = unsafe { _mm256_loadu_ps(w.as_ptr().add(at)) };
            for (row, x) in acc.iter_mut().zip(xs) {
                let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add(at)) };
                row[u] = _mm256_fmadd_ps(wv, xv, row[u]);
            }
        }
        k += step;
    }
    std::array::from_fn(|r| {
        let mut lanes = [0f32; LANES];
        for v in &acc[r] {
            // SAFETY: `__m256` and `[f32; 8]` have the same size and any bit pattern is valid.
            let v: [f32; LANES] = unsafe { std::mem::transmute(*v) };
            for (l, x) in lanes.iter_mut().zip(v) {
                *l += x;
            }
        }
        let tail: f32 = (whole..n).map(|k| w[k] * xs[r][k]).sum();
        lanes.iter().sum::<f32>() + tail
    })
}

fn dots_portable<const R: usize>(w: &[f32], xs: &[&[f32]; R]) -> [f32; R] {
    // Eight independent partial sums per row, so the compiler can vectorise without
    // reassociating.
    let mut acc = [[0f32; LANES]; R];
    let whole = w.len() / LANES * LANES;
    for (c, wc) in w[..whole].chunks_exact(LANES).enumerate() {
        let base = c * LANES;
        for (row, x) in acc.iter_mut().zip(xs) {
            let xc = &x[base..base + LANES];
            for l in 0..LANES {
                row[l] += wc[l] * xc[l];
            }
        }
    }
    std::array::from_fn(|r| {
        let tail: f32 = (whole..w.len()).map(|k| w[k] * xs[r][k]).sum();
        acc[r].iter().sum::<f32>() + tail
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Every row count and an input width that is not a multiple of the lane count agree with
    /// candle's matmul to rounding.
    #[test]
    fn matches_the_general_matmul() {
        let device = Device::Cpu;
        for rows in 1..=MAX_ROWS {
            let x = Tensor::randn(0f32, 1.0, (rows, 77), &device).unwrap();
            let w = Tensor::randn(0f32, 1.0, (130, 77), &device).unwrap();
            let fast = x.apply_op2_no_bwd(&w, &SmallRowsMatmul).unwrap();
            let reference = x.matmul(&w.t().unwrap()).unwrap();
            assert_eq!(fast.dims(), &[rows, 130]);
            let diff = (fast - reference)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "{rows} rows: off by {diff}");
        }
        let too_many = Tensor::zeros((MAX_ROWS + 1, 8), candle_core::DType::F32, &device).unwrap();
        let w = Tensor::zeros((3, 8), candle_core::DType::F32, &device).unwrap();
        assert!(too_many.apply_op2_no_bwd(&w, &SmallRowsMatmul).is_err());
    }
}
