//! Canny-style edges of the RGB image: Gaussian blur, Sobel gradients, non-maximum suppression and
//! hysteresis between two thresholds, like OpenCV's `Canny` that 4M's edge modality was made with.

use crate::scene::IMAGE_SIZE;

/// Gradient magnitude (Sobel on 0–255 luminance) above which a pixel starts an edge.
pub const HIGH_THRESHOLD: f32 = 80.0;
/// Gradient magnitude above which a pixel continues an edge that touches a strong pixel.
pub const LOW_THRESHOLD: f32 = 35.0;

/// Edge map of an RGB image of `IMAGE_SIZE`²: 255 on edges, 0 elsewhere.
pub fn canny_edges(rgb: &[u8]) -> Vec<u8> {
    let size = IMAGE_SIZE;
    let luminance: Vec<f32> = rgb
        .chunks_exact(3)
        .map(|pixel| 0.299 * pixel[0] as f32 + 0.587 * pixel[1] as f32 + 0.114 * pixel[2] as f32)
        .collect();
    let blurred = gaussian_blur(&luminance, size);

    // Sobel gradients; the border pixels keep zero gradient so they never become edges.
    let mut magnitude = vec![0.0f32; size * size];
    let mut direction_bin = vec![0u8; size * size];
    for row in 1..size - 1 {
        for column in 1..size - 1 {
            let pixel = row * size + column;
            let (up, down) = (pixel - size, pixel + size);
            let gx = (blurred[up + 1] + 2.0 * blurred[pixel + 1] + blurred[down + 1])
                - (blurred[up - 1] + 2.0 * blurred[pixel - 1] + blurred[down - 1]);
            let gy = (blurred[down - 1] + 2.0 * blurred[down] + blurred[down + 1])
                - (blurred[up - 1] + 2.0 * blurred[up] + blurred[up + 1]);
            magnitude[pixel] = (gx * gx + gy * gy).sqrt();
            direction_bin[pixel] = gradient_direction_bin(gx, gy);
        }
    }

    // Non-maximum suppression: keep a pixel only where the gradient peaks across the edge.
    let mut thin = vec![0.0f32; size * size];
    for row in 1..size - 1 {
        for column in 1..size - 1 {
            let pixel = row * size + column;
            let value = magnitude[pixel];
            if value < LOW_THRESHOLD {
                continue;
            }
            let (dr, dc): (isize, isize) = match direction_bin[pixel] {
                0 => (0, 1),
                1 => (1, 1),
                2 => (1, 0),
                _ => (1, -1),
            };
            let ahead =
                magnitude[((row as isize + dr) as usize) * size + (column as isize + dc) as usize];
            let behind =
                magnitude[((row as isize - dr) as usize) * size + (column as isize - dc) as usize];
            // Strict on one side only, so a plateau two pixels wide keeps exactly one of them.
            if value > ahead && value >= behind {
                thin[pixel] = value;
            }
        }
    }

    // Hysteresis: grow edges from strong pixels through 8-connected weak ones.
    let mut edges = vec![0u8; size * size];
    let mut stack: Vec<usize> = Vec::new();
    for pixel in 0..size * size {
        if thin[pixel] >= HIGH_THRESHOLD && edges[pixel] == 0 {
            edges[pixel] = 255;
            stack.push(pixel);
            while let Some(current) = stack.pop() {
                let (row, column) = (current / size, current % size);
                for neighbour_row in row.saturating_sub(1)..=(row + 1).min(size - 1) {
                    for neighbour_column in column.saturating_sub(1)..=(column + 1).min(size - 1) {
                        let neighbour = neighbour_row * size + neighbour_column;
                        if edges[neighbour] == 0 && thin[neighbour] >= LOW_THRESHOLD {
                            edges[neighbour] = 255;
                            stack.push(neighbour);
                        }
                    }
                }
            }
        }
    }
    edges
}

/// Quantises a gradient direction to 0 (horizontal gradient), 1 (down-right diagonal), 2 (vertical)
/// or 3 (down-left diagonal), in image coordinates with rows growing downwards.
fn gradient_direction_bin(gx: f32, gy: f32) -> u8 {
    // tan(22.5°) and tan(67.5°) split the half-plane into four sectors without calling atan2.
    const TAN_22_5: f32 = 0.414_213_57;
    const TAN_67_5: f32 = 2.414_213_6;
    let (ax, ay) = (gx.abs(), gy.abs());
    if ay <= TAN_22_5 * ax {
        0
    } else if ay >= TAN_67_5 * ax {
        2
    } else if (gx > 0.0) == (gy > 0.0) {
        1
    } else {
        3
    }
}

/// Separable 5-tap binomial blur (≈ Gaussian with σ = 1), clamping at the borders. Plain index loops
/// keep it fast in unoptimised test builds as well.
fn gaussian_blur(image: &[f32], size: usize) -> Vec<f32> {
    const WEIGHTS: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];
    let last = size - 1;
    let clamped = |index: usize, offset: usize| (index + offset).saturating_sub(2).min(last);
    let mut horizontal = vec![0.0f32; size * size];
    for row in 0..size {
        let line = &image[row * size..(row + 1) * size];
        let output = &mut horizontal[row * size..(row + 1) * size];
        for column in 0..size {
            let mut sum = 0.0;
            for (tap, weight) in WEIGHTS.iter().enumerate() {
                sum += weight * line[clamped(column, tap)];
            }
            output[column] = sum;
        }
    }
    let mut blurred = vec![0.0f32; size * size];
    for row in 0..size {
        for (tap, &weight) in WEIGHTS.iter().enumerate() {
            let source = clamped(row, tap) * size;
            for column in 0..size {
                blurred[row * size + column] += weight * horizontal[source + column];
            }
        }
    }
    blurred
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vertical_step_gives_one_thin_vertical_edge() {
        let mut rgb = vec![30u8; IMAGE_SIZE * IMAGE_SIZE * 3];
        for row in 0..IMAGE_SIZE {
            for column in 100..IMAGE_SIZE {
                rgb[(row * IMAGE_SIZE + column) * 3..][..3].copy_from_slice(&[220, 220, 220]);
            }
        }
        let edges = canny_edges(&rgb);
        for row in 5..IMAGE_SIZE - 5 {
            let edge_columns: Vec<usize> = (0..IMAGE_SIZE)
                .filter(|&column| edges[row * IMAGE_SIZE + column] == 255)
                .collect();
            assert_eq!(edge_columns.len(), 1, "row {row}: {edge_columns:?}");
            assert!((99..=100).contains(&edge_columns[0]));
        }
    }

    #[test]
    fn a_flat_image_has_no_edges() {
        let rgb = vec![128u8; IMAGE_SIZE * IMAGE_SIZE * 3];
        assert!(canny_edges(&rgb).iter().all(|&value| value == 0));
    }
}
