//! PNG encoding of the image modalities and the contact sheet that shows them side by side.

use std::path::Path;

use crate::error::WorldError;
use crate::scene::IMAGE_SIZE;

/// Display colours of the semantic classes, indexed by class id (floor, wall, sphere, cube, cylinder, cone).
pub const SEMSEG_DISPLAY_COLOURS: [[u8; 3]; 6] = [
    [170, 150, 120],
    [150, 170, 200],
    [230, 60, 60],
    [60, 120, 230],
    [60, 190, 90],
    [240, 200, 40],
];

/// Display colours of instance ids 0 (floor and wall) to 6.
pub const INSTANCE_DISPLAY_COLOURS: [[u8; 3]; 7] = [
    [30, 30, 30],
    [255, 99, 71],
    [65, 105, 225],
    [50, 205, 50],
    [255, 215, 0],
    [186, 85, 211],
    [0, 206, 209],
];

/// The pixel layout of an image to encode.
pub enum PngPixels<'a> {
    Rgb8(&'a [u8]),
    Gray8(&'a [u8]),
    Gray16(&'a [u16]),
    /// 8-bit indices with a colour table: the stored values are the ids, viewers show the colours.
    Indexed {
        ids: &'a [u8],
        palette: &'a [[u8; 3]],
    },
}

/// Encodes a square or rectangular image as PNG bytes.
pub fn encode_png(
    width: usize,
    height: usize,
    pixels: PngPixels<'_>,
    path_for_errors: &Path,
) -> Result<Vec<u8>, WorldError> {
    let fail = |message: String| WorldError::PngEncoding {
        path: path_for_errors.to_path_buf(),
        message,
    };
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width as u32, height as u32);
        let data: std::borrow::Cow<'_, [u8]> = match &pixels {
            PngPixels::Rgb8(data) => {
                encoder.set_color(png::ColorType::Rgb);
                encoder.set_depth(png::BitDepth::Eight);
                std::borrow::Cow::Borrowed(data)
            }
            PngPixels::Gray8(data) => {
                encoder.set_color(png::ColorType::Grayscale);
                encoder.set_depth(png::BitDepth::Eight);
                std::borrow::Cow::Borrowed(data)
            }
            PngPixels::Gray16(data) => {
                encoder.set_color(png::ColorType::Grayscale);
                encoder.set_depth(png::BitDepth::Sixteen);
                // PNG stores 16-bit samples big-endian.
                std::borrow::Cow::Owned(data.iter().flat_map(|value| value.to_be_bytes()).collect())
            }
            PngPixels::Indexed { ids, palette } => {
                encoder.set_color(png::ColorType::Indexed);
                encoder.set_depth(png::BitDepth::Eight);
                // Pad the table to 256 entries so that any id decodes, even one without a display colour.
                let mut table: Vec<u8> = palette.iter().flatten().copied().collect();
                table.resize(256 * 3, 0);
                encoder.set_palette(table);
                std::borrow::Cow::Borrowed(ids)
            }
        };
        let mut writer = encoder
            .write_header()
            .map_err(|error| fail(error.to_string()))?;
        writer
            .write_image_data(&data)
            .map_err(|error| fail(error.to_string()))?;
        writer.finish().map_err(|error| fail(error.to_string()))?;
    }
    Ok(bytes)
}

/// Encodes and writes a PNG file.
pub fn write_png(
    path: &Path,
    width: usize,
    height: usize,
    pixels: PngPixels<'_>,
) -> Result<(), WorldError> {
    let bytes = encode_png(width, height, pixels, path)?;
    std::fs::write(path, bytes).map_err(WorldError::io("write", path))
}

/// An RGB canvas for composing the contact sheet.
pub(crate) struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, background: [u8; 3]) -> Self {
        let pixels = background
            .iter()
            .copied()
            .cycle()
            .take(width * height * 3)
            .collect();
        Self {
            width,
            height,
            pixels,
        }
    }

    pub fn set(&mut self, x: usize, y: usize, colour: [u8; 3]) {
        if x < self.width && y < self.height {
            let offset = (y * self.width + x) * 3;
            self.pixels[offset..offset + 3].copy_from_slice(&colour);
        }
    }

    /// Copies an `IMAGE_SIZE`² tile whose pixel colours come from `colour_of(pixel index)`.
    pub fn draw_tile(&mut self, left: usize, top: usize, colour_of: impl Fn(usize) -> [u8; 3]) {
        for row in 0..IMAGE_SIZE {
            for column in 0..IMAGE_SIZE {
                self.set(
                    left + column,
                    top + row,
                    colour_of(row * IMAGE_SIZE + column),
                );
            }
        }
    }

    /// Outline of an inclusive rectangle, two pixels thick (inwards).
    pub fn draw_rectangle(
        &mut self,
        left: usize,
        top: usize,
        right: usize,
        bottom: usize,
        colour: [u8; 3],
    ) {
        for thickness in 0..2 {
            let (l, t) = (left + thickness, top + thickness);
            let (r, b) = (
                right.saturating_sub(thickness).max(l),
                bottom.saturating_sub(thickness).max(t),
            );
            for x in l..=r {
                self.set(x, t, colour);
                self.set(x, b, colour);
            }
            for y in t..=b {
                self.set(l, y, colour);
                self.set(r, y, colour);
            }
        }
    }

    /// Draws text with the built-in 5 × 7 font, each font pixel `scale` × `scale` canvas pixels.
    pub fn draw_text(
        &mut self,
        left: usize,
        top: usize,
        text: &str,
        colour: [u8; 3],
        scale: usize,
    ) {
        for (index, character) in text.chars().enumerate() {
            let glyph_left = left + index * crate::font::CELL_WIDTH * scale;
            for (row, bits) in crate::font::glyph(character).iter().enumerate() {
                for column in 0..5 {
                    if bits & (0b10000 >> column) != 0 {
                        self.fill_rectangle(
                            glyph_left + column * scale,
                            top + row * scale,
                            scale,
                            scale,
                            colour,
                        );
                    }
                }
            }
        }
    }

    pub fn fill_rectangle(
        &mut self,
        left: usize,
        top: usize,
        width: usize,
        height: usize,
        colour: [u8; 3],
    ) {
        for y in top..top + height {
            for x in left..left + width {
                self.set(x, y, colour);
            }
        }
    }
}

/// Maps a value in [0, 1] to a perceptually ordered colour (dark purple → orange → pale yellow),
/// so depth reads at a glance.
pub(crate) fn heat_colour(value: f64) -> [u8; 3] {
    const STOPS: [[f64; 3]; 5] = [
        [20.0, 10.0, 60.0],
        [110.0, 30.0, 120.0],
        [210.0, 70.0, 70.0],
        [250.0, 160.0, 40.0],
        [252.0, 250.0, 190.0],
    ];
    let position = value.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let index = (position.floor() as usize).min(STOPS.len() - 2);
    let blend = position - index as f64;
    let colour = |channel: usize| {
        (STOPS[index][channel] * (1.0 - blend) + STOPS[index + 1][channel] * blend).round() as u8
    };
    [colour(0), colour(1), colour(2)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bit_png_round_trips_through_a_decoder() {
        let values: Vec<u16> = (0..12).map(|value| value * 5000).collect();
        let bytes = encode_png(4, 3, PngPixels::Gray16(&values), Path::new("test.png")).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buffer).unwrap();
        assert_eq!(info.bit_depth, png::BitDepth::Sixteen);
        let decoded: Vec<u16> = buffer[..info.buffer_size()]
            .chunks_exact(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(decoded, values);
    }

    #[test]
    fn heat_colour_runs_from_dark_to_light() {
        let luminance = |c: [u8; 3]| c.iter().map(|&v| v as u32).sum::<u32>();
        assert!(luminance(heat_colour(0.0)) < luminance(heat_colour(0.5)));
        assert!(luminance(heat_colour(0.5)) < luminance(heat_colour(1.0)));
    }
}
