//! Fixed sin-cos positional tables, computed exactly as the reference builds them.

/// Temperature of both sin-cos tables.
const TEMPERATURE: f64 = 10_000.0;

/// The `count` angular frequencies of a sin-cos table's channel group, `ω_k = T^(-k / count)`.
pub fn frequencies(count: usize) -> Vec<f64> {
    (0..count)
        .map(|k| 1.0 / TEMPERATURE.powf(k as f64 / count as f64))
        .collect()
}

/// 1-D table `(max_len, dim)` of the sequence modalities: all sines, then all cosines, with
/// `ω_k = T^(-k / (dim/2))`. Row-major.
pub fn sincos_1d(max_len: usize, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let omega = frequencies(half);
    let mut table = vec![0f32; max_len * dim];
    for n in 0..max_len {
        let row = &mut table[n * dim..(n + 1) * dim];
        for (k, w) in omega.iter().enumerate() {
            let angle = n as f64 * w;
            row[k] = angle.sin() as f32;
            row[half + k] = angle.cos() as f32;
        }
    }
    table
}

/// 2-D table `(h·w, dim)` of the image-like modalities, for token index `n` in row-major order.
/// The first half of the channels encodes the row `n / w`, the second half the column `n % w`,
/// each as `[sin…, cos…]` with `ω_k = T^(-k / (dim/4))` (the reference's meshgrid order).
pub fn sincos_2d(h: usize, w: usize, dim: usize) -> Vec<f32> {
    let quarter = dim / 4;
    let omega = frequencies(quarter);
    let mut table = vec![0f32; h * w * dim];
    for n in 0..h * w {
        let (row_index, col_index) = ((n / w) as f64, (n % w) as f64);
        let out = &mut table[n * dim..(n + 1) * dim];
        for (k, om) in omega.iter().enumerate() {
            out[k] = (row_index * om).sin() as f32;
            out[quarter + k] = (row_index * om).cos() as f32;
            out[2 * quarter + k] = (col_index * om).sin() as f32;
            out[3 * quarter + k] = (col_index * om).cos() as f32;
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_half_encodes_the_row() {
        let (side, dim) = (14, 16);
        let t = sincos_2d(side, side, dim);
        // Token (r=1, c=0): sin(1·ω_0) = sin(1) in channel 0, the column half is sin(0)=0 / cos(0)=1.
        let token = &t[side * dim..(side + 1) * dim];
        assert!((token[0] - 1f32.sin()).abs() < 1e-7);
        assert_eq!(token[2 * 4], 0.0);
        assert_eq!(token[3 * 4], 1.0);
        // Token (r=0, c=1): the row half is constant.
        let token = &t[dim..2 * dim];
        assert_eq!(token[0], 0.0);
        assert!((token[8] - 1f32.sin()).abs() < 1e-7);
    }

    #[test]
    fn one_d_is_sines_then_cosines() {
        let t = sincos_1d(3, 8);
        assert_eq!(&t[..8], &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        assert!((t[8] - 1f32.sin()).abs() < 1e-7);
        assert!((t[8 + 4] - 1f32.cos()).abs() < 1e-7);
    }
}
