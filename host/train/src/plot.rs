//! The loss curve as a PNG: axes, light grid lines and the per-step loss as a line, drawn pixel by
//! pixel (no plotting dependency).

use std::path::Path;

use crate::error::{Result, TrainError};

const WIDTH: usize = 640;
const HEIGHT: usize = 360;
const MARGIN: usize = 30;

struct Canvas {
    pixels: Vec<[u8; 3]>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, colour: [u8; 3]) {
        if (0..WIDTH as i64).contains(&x) && (0..HEIGHT as i64).contains(&y) {
            self.pixels[y as usize * WIDTH + x as usize] = colour;
        }
    }

    /// Bresenham's line.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), colour: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, colour);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }
}

/// Draw `losses` (one per step) to `path`: x = step, y = loss from 0 to the maximum.
pub fn write_loss_png(path: &Path, losses: &[f32]) -> Result<()> {
    let mut canvas = Canvas {
        pixels: vec![[255; 3]; WIDTH * HEIGHT],
    };
    let (left, right) = (MARGIN as i64, (WIDTH - MARGIN / 2) as i64);
    let (top, bottom) = ((MARGIN / 2) as i64, (HEIGHT - MARGIN) as i64);
    let max = losses
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(0f32, f32::max)
        .max(1e-6);
    // Horizontal grid lines at quarters of the range, then the axes.
    for quarter in 1..4 {
        let y = bottom - (bottom - top) * quarter / 4;
        canvas.line((left, y), (right, y), [225, 225, 225]);
    }
    canvas.line((left, top), (left, bottom), [0, 0, 0]);
    canvas.line((left, bottom), (right, bottom), [0, 0, 0]);
    let point = |i: usize, loss: f32| {
        let span = (losses.len().max(2) - 1) as f64;
        let x = left + ((right - left) as f64 * i as f64 / span).round() as i64;
        let y =
            bottom - ((bottom - top) as f64 * (loss / max).clamp(0.0, 1.0) as f64).round() as i64;
        (x, y)
    };
    for i in 1..losses.len() {
        if losses[i - 1].is_finite() && losses[i].is_finite() {
            canvas.line(
                point(i - 1, losses[i - 1]),
                point(i, losses[i]),
                [200, 40, 40],
            );
        }
    }
    let io = |source| TrainError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), WIDTH as u32, HEIGHT as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let bad = |e: png::EncodingError| TrainError::BadFile {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut writer = encoder.write_header().map_err(bad)?;
    let bytes: Vec<u8> = canvas.pixels.concat();
    writer.write_image_data(&bytes).map_err(bad)?;
    writer.finish().map_err(bad)
}
