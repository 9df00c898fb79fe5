//! Per-token cost of the linear layers of KV-cached 4M-21 B decoding with classifier-free
//! guidance (2 rows per product, f32, CPU): candle's gemm, one matrix-vector product per row,
//! and the small-rows kernel, for every weight shape a decoder token touches, and the total per
//! token (12 decoder blocks + the 30000-token caption head).
//!
//! Usage: `cargo run --release -p tessera-model --example bench_small_rows -- [ROWS]`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use tessera_model::small_rows::SmallRowsMatmul;

/// `(name, in, out, uses per token)` for dim 768, SwiGLU hidden 2048, 12 blocks.
const SHAPES: &[(&str, usize, usize, usize)] = &[
    ("self qkv", 768, 2304, 12),
    ("self proj", 768, 768, 12),
    ("cross q", 768, 768, 12),
    ("cross proj", 768, 768, 12),
    ("mlp fc1 / fc3", 768, 2048, 24),
    ("mlp fc2", 2048, 768, 12),
    ("caption head", 768, 30000, 1),
];

fn best_ms(repeats: usize, mut f: impl FnMut() -> candle_core::Result<Tensor>) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..repeats {
        let start = Instant::now();
        f().expect("product");
        best = best.min(start.elapsed().as_secs_f64() * 1e3);
    }
    best
}

fn main() -> candle_core::Result<()> {
    let rows: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("ROWS"))
        .unwrap_or(2);
    let device = Device::Cpu;
    let mut totals = [0f64; 3];
    println!("{rows} rows, best of 20 (ms): gemm / row by row / small-rows kernel");
    for &(name, in_dim, out_dim, uses) in SHAPES {
        // Distinct weights per use, so the measurement streams from memory as decoding does.
        let weights = (0..uses.min(12))
            .map(|_| Tensor::randn(0f32, 1.0, (out_dim, in_dim), &device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let x = Tensor::randn(0f32, 1.0, (rows, in_dim), &device)?;
        let mut next = 0;
        let mut pick = || {
            next = (next + 1) % weights.len();
            weights[next].clone()
        };
        let gemm = best_ms(20, || x.matmul(&pick().t()?));
        let by_row = best_ms(20, || {
            let w = pick();
            let parts = (0..rows)
                .map(|r| x.narrow(0, r, 1)?.matmul(&w.t()?))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0)
        });
        let kernel = best_ms(20, || x.apply_op2_no_bwd(&pick(), &SmallRowsMatmul));
        println!(
            "  {name:14} {in_dim:5} -> {out_dim:5}: {gemm:7.3} {by_row:7.3} {kernel:7.3}  (x{uses})"
        );
        for (total, ms) in totals.iter_mut().zip([gemm, by_row, kernel]) {
            *total += ms * uses as f64;
        }
    }
    println!(
        "per token: gemm {:.1} ms, row by row {:.1} ms, small-rows kernel {:.1} ms",
        totals[0], totals[1], totals[2]
    );
    Ok(())
}
