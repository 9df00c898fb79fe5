//! tessera-imaging: pure-Rust image I/O and pre-/post-processing shared by the image plugins
//! (builds for `wasm32-unknown-unknown`): PNG/JPEG decoding to 8-bit RGB or to a grey plane with
//! size limits, the centre square crop, PIL-style antialiased bicubic resizing, the 4M
//! normalisations, PNG encoding and the turbo colour map.

use std::fmt;

mod labels;

pub use labels::{
    LabelImage, centre_square_labels, decode_labels, encode_png_indexed, resize_labels,
};

/// Decoding refuses images with more pixels than this (about 25 megapixels).
pub const MAX_PIXELS: u64 = 25_000_000;

/// An 8-bit RGB image, row-major, `3 * width * height` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// Why an image could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// Neither a PNG nor a JPEG signature.
    UnknownFormat {
        first_bytes: Vec<u8>,
    },
    /// The PNG or JPEG decoder refused the data (truncated, corrupt, ...).
    Decode {
        format: &'static str,
        reason: String,
    },
    /// A pixel layout this plugin does not convert.
    UnsupportedLayout {
        format: &'static str,
        layout: String,
    },
    TooLarge {
        width: u32,
        height: u32,
    },
    Empty {
        width: u32,
        height: u32,
    },
    Encode {
        reason: String,
    },
    /// A colour label map has a pixel whose colour is not in the class palette.
    UnknownLabelColour {
        x: u32,
        y: u32,
        colour: [u8; 3],
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::UnknownFormat { first_bytes } => write!(
                f,
                "not a PNG or JPEG image (first bytes {first_bytes:02x?})"
            ),
            ImageError::Decode { format, reason } => {
                write!(f, "cannot decode the {format} image: {reason}")
            }
            ImageError::UnsupportedLayout { format, layout } => {
                write!(f, "{format} images with {layout} pixels are not supported")
            }
            ImageError::TooLarge { width, height } => write!(
                f,
                "the image is {width}x{height}, more than {MAX_PIXELS} pixels"
            ),
            ImageError::Empty { width, height } => {
                write!(f, "the image is {width}x{height}, which has no pixels")
            }
            ImageError::Encode { reason } => write!(f, "cannot encode the PNG: {reason}"),
            ImageError::UnknownLabelColour { x, y, colour } => write!(
                f,
                "pixel ({x}, {y}) has the colour #{:02x}{:02x}{:02x}, which is not a class colour",
                colour[0], colour[1], colour[2]
            ),
        }
    }
}

pub(crate) const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

pub(crate) fn check_size(width: u32, height: u32) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Empty { width, height });
    }
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ImageError::TooLarge { width, height });
    }
    Ok(())
}

/// Decodes a PNG or JPEG (recognised by its signature) to 8-bit RGB. Grey is replicated, alpha
/// dropped (as PIL's `convert("RGB")`), 16-bit samples reduced to their high byte.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    if bytes.starts_with(&PNG_SIGNATURE) {
        decode_png(bytes)
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        decode_jpeg(bytes)
    } else {
        Err(ImageError::UnknownFormat {
            first_bytes: bytes.iter().take(8).copied().collect(),
        })
    }
}

/// A decoded PNG frame: its samples row by row (`line_size` bytes each) and their layout.
pub(crate) struct PngFrame {
    pub width: u32,
    pub height: u32,
    pub color: png::ColorType,
    pub depth: png::BitDepth,
    pub line_size: usize,
    pub buf: Vec<u8>,
}

impl PngFrame {
    /// Row `y`'s bytes.
    pub fn line(&self, y: usize) -> &[u8] {
        &self.buf[y * self.line_size..(y + 1) * self.line_size]
    }
}

/// Reads a PNG's first frame with `transformations`, within the size limits.
pub(crate) fn read_png(
    bytes: &[u8],
    transformations: png::Transformations,
) -> Result<PngFrame, ImageError> {
    let err = |e: png::DecodingError| ImageError::Decode {
        format: "PNG",
        reason: e.to_string(),
    };
    let mut decoder = png::Decoder::new_with_limits(
        bytes,
        png::Limits {
            bytes: (MAX_PIXELS * 8) as usize,
        },
    );
    decoder.set_transformations(transformations);
    let mut reader = decoder.read_info().map_err(err)?;
    let (width, height) = {
        let info = reader.info();
        (info.width, info.height)
    };
    check_size(width, height)?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).map_err(err)?;
    let (color, depth) = reader.output_color_type();
    Ok(PngFrame {
        width,
        height,
        color,
        depth,
        line_size: frame.line_size,
        buf,
    })
}

/// Decodes a JPEG within the size limits: width, height, pixel format and samples.
fn read_jpeg(bytes: &[u8]) -> Result<(u32, u32, jpeg_decoder::PixelFormat, Vec<u8>), ImageError> {
    let err = |e: jpeg_decoder::Error| ImageError::Decode {
        format: "JPEG",
        reason: e.to_string(),
    };
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().map_err(err)?;
    let info = decoder.info().ok_or_else(|| ImageError::Decode {
        format: "JPEG",
        reason: "no frame header".into(),
    })?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    check_size(width, height)?;
    decoder.set_max_decoding_buffer_size((MAX_PIXELS * 4) as usize);
    let pixels = decoder.decode().map_err(err)?;
    let samples = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => 1,
        jpeg_decoder::PixelFormat::L16 => 2,
        jpeg_decoder::PixelFormat::RGB24 => 3,
        jpeg_decoder::PixelFormat::CMYK32 => 4,
    };
    if pixels.len() != samples * width as usize * height as usize {
        return Err(ImageError::Decode {
            format: "JPEG",
            reason: format!(
                "decoder returned {} bytes for {width}x{height}",
                pixels.len()
            ),
        });
    }
    Ok((width, height, info.pixel_format, pixels))
}

fn decode_png(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    let frame = read_png(
        bytes,
        png::Transformations::EXPAND | png::Transformations::STRIP_16,
    )?;
    let (width, height, color, depth) = (frame.width, frame.height, frame.color, frame.depth);
    if depth != png::BitDepth::Eight {
        return Err(ImageError::UnsupportedLayout {
            format: "PNG",
            layout: format!("{depth:?}-bit"),
        });
    }
    let channels = match color {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(ImageError::UnsupportedLayout {
                format: "PNG",
                layout: "unexpanded indexed".into(),
            });
        }
    };
    let mut data = Vec::with_capacity(3 * width as usize * height as usize);
    for y in 0..height as usize {
        for px in frame.line(y).chunks_exact(channels).take(width as usize) {
            match channels {
                1 | 2 => data.extend_from_slice(&[px[0], px[0], px[0]]),
                _ => data.extend_from_slice(&px[..3]),
            }
        }
    }
    Ok(RgbImage {
        width,
        height,
        data,
    })
}

fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    let (width, height, format, pixels) = read_jpeg(bytes)?;
    let data = match format {
        jpeg_decoder::PixelFormat::RGB24 => pixels,
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        jpeg_decoder::PixelFormat::L16 => pixels
            .chunks_exact(2)
            .flat_map(|c| [c[0], c[0], c[0]])
            .collect(),
        jpeg_decoder::PixelFormat::CMYK32 => {
            return Err(ImageError::UnsupportedLayout {
                format: "JPEG",
                layout: "CMYK".into(),
            });
        }
    };
    Ok(RgbImage {
        width,
        height,
        data,
    })
}

/// Encodes 8-bit RGB as PNG.
pub fn encode_png(image: &RgbImage) -> Result<Vec<u8>, ImageError> {
    encode_png_raw(
        image.width,
        image.height,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        &image.data,
    )
}

/// Encodes raw samples (big-endian for 16-bit) as PNG.
pub fn encode_png_raw(
    width: u32,
    height: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
) -> Result<Vec<u8>, ImageError> {
    let err = |e: png::EncodingError| ImageError::Encode {
        reason: e.to_string(),
    };
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(color);
        encoder.set_depth(depth);
        let mut writer = encoder.write_header().map_err(err)?;
        writer.write_image_data(data).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    Ok(out)
}

/// The centre square of side `min(width, height)` (offset rounded down), as the 4M demo crops.
pub fn centre_square(image: &RgbImage) -> RgbImage {
    let (data, side) = crop_centre(&image.data, image.width, image.height, 3);
    RgbImage {
        width: side,
        height: side,
        data,
    }
}

/// The centre square of a row-major image with `channels` samples per pixel, and its side.
fn crop_centre<T: Copy>(data: &[T], width: u32, height: u32, channels: usize) -> (Vec<T>, u32) {
    let side = width.min(height);
    let left = ((width - side) / 2) as usize;
    let top = ((height - side) / 2) as usize;
    let row = channels * side as usize;
    let mut out = Vec::with_capacity(row * side as usize);
    for y in top..top + side as usize {
        let start = channels * (y * width as usize + left);
        out.extend_from_slice(&data[start..start + row]);
    }
    (out, side)
}

/// PIL's bicubic kernel (a = -0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output sample: first input index and normalised weights (PIL's `precompute_coeffs`: the
/// kernel is widened by the scale when downsampling, which antialiases).
fn coefficients(in_len: usize, out_len: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = in_len as f64 / out_len as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    (0..out_len)
        .map(|o| {
            let centre = (o as f64 + 0.5) * scale;
            let lo = ((centre - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((centre + support + 0.5).floor() as usize).min(in_len);
            let mut weights: Vec<f64> = (lo..hi)
                .map(|i| bicubic((i as f64 - centre + 0.5) / filter_scale))
                .collect();
            let sum: f64 = weights.iter().sum();
            if sum != 0.0 {
                weights.iter_mut().for_each(|w| *w /= sum);
            }
            (lo, weights.into_iter().map(|w| w as f32).collect())
        })
        .collect()
}

/// Resizes to `width x height` with antialiased bicubic filtering (horizontal pass, then
/// vertical), rounding to 8 bits at the end as PIL does.
pub fn resize(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (iw, ih) = (image.width as usize, image.height as usize);
    let (ow, oh) = (width as usize, height as usize);
    let horizontal = coefficients(iw, ow);
    let mut tmp = vec![0f32; 3 * ow * ih];
    for y in 0..ih {
        let row = &image.data[3 * y * iw..3 * (y + 1) * iw];
        for (x, (lo, weights)) in horizontal.iter().enumerate() {
            let mut acc = [0f32; 3];
            for (k, w) in weights.iter().enumerate() {
                let p = 3 * (lo + k);
                for c in 0..3 {
                    acc[c] += w * f32::from(row[p + c]);
                }
            }
            tmp[3 * (y * ow + x)..3 * (y * ow + x) + 3].copy_from_slice(&acc);
        }
    }
    let vertical = coefficients(ih, oh);
    let mut data = vec![0u8; 3 * ow * oh];
    for (y, (lo, weights)) in vertical.iter().enumerate() {
        for x in 0..ow {
            let mut acc = [0f32; 3];
            for (k, w) in weights.iter().enumerate() {
                let p = 3 * ((lo + k) * ow + x);
                for c in 0..3 {
                    acc[c] += w * tmp[p + c];
                }
            }
            for c in 0..3 {
                data[3 * (y * ow + x) + c] = acc[c].round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    RgbImage {
        width,
        height,
        data,
    }
}

/// The 4M RGB tokenizer input: centre square crop, resize to `size x size`, `x / 255`, then
/// normalised with mean = std = 0.5 (to [-1, 1]), channels first `(3, size, size)`.
pub fn rgb_tokenizer_input(image: &RgbImage, size: u32) -> Vec<f32> {
    let square = centre_square(image);
    let resized = if square.width == size {
        square
    } else {
        resize(&square, size, size)
    };
    let n = size as usize * size as usize;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in resized.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * n + i] = (f32::from(px[c]) / 255.0 - 0.5) / 0.5;
        }
    }
    out
}

/// The inverse for display: channels-first values in [-1, 1] → `(x + 1) / 2` clamped to [0, 1] →
/// 8-bit RGB. Returns the image and how many values were not finite (written as 0).
pub fn rgb_from_tokenizer_output(values: &[f32], width: u32, height: u32) -> (RgbImage, usize) {
    let n = width as usize * height as usize;
    let mut data = vec![0u8; 3 * n];
    let mut non_finite = 0;
    for c in 0..3 {
        for i in 0..n {
            let v = values[c * n + i];
            data[3 * i + c] = if v.is_finite() {
                (((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).round() as u8
            } else {
                non_finite += 1;
                0
            };
        }
    }
    (
        RgbImage {
            width,
            height,
            data,
        },
        non_finite,
    )
}

/// A single-channel image of floats, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct GreyImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<f32>,
}

/// Decodes a grey-scale PNG (8 or 16 bit, alpha ignored) or 8-bit grey JPEG to values in [0, 1]:
/// 16-bit samples / 65535 (the reference's depth PNGs), 8-bit / 255. Colour images are refused.
pub fn decode_grey(bytes: &[u8]) -> Result<GreyImage, ImageError> {
    if bytes.starts_with(&PNG_SIGNATURE) {
        let frame = read_png(bytes, png::Transformations::EXPAND)?;
        let channels = match frame.color {
            png::ColorType::Grayscale => 1,
            png::ColorType::GrayscaleAlpha => 2,
            other => {
                return Err(ImageError::UnsupportedLayout {
                    format: "PNG",
                    layout: format!("{other:?} (a grey-scale image is expected)"),
                });
            }
        };
        let bytes_per_sample = match frame.depth {
            png::BitDepth::Eight => 1,
            png::BitDepth::Sixteen => 2,
            other => {
                return Err(ImageError::UnsupportedLayout {
                    format: "PNG",
                    layout: format!("{other:?}-bit"),
                });
            }
        };
        let (width, height) = (frame.width, frame.height);
        let step = channels * bytes_per_sample;
        let mut data = Vec::with_capacity(width as usize * height as usize);
        for y in 0..height as usize {
            for px in frame.line(y).chunks_exact(step).take(width as usize) {
                data.push(if bytes_per_sample == 2 {
                    f32::from(u16::from_be_bytes([px[0], px[1]])) / 65535.0
                } else {
                    f32::from(px[0]) / 255.0
                });
            }
        }
        return Ok(GreyImage {
            width,
            height,
            data,
        });
    }
    if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        let (width, height, format, pixels) = read_jpeg(bytes)?;
        if format != jpeg_decoder::PixelFormat::L8 {
            return Err(ImageError::UnsupportedLayout {
                format: "JPEG",
                layout: format!("{format:?} (an 8-bit grey-scale image is expected)"),
            });
        }
        return Ok(GreyImage {
            width,
            height,
            data: pixels.iter().map(|&v| f32::from(v) / 255.0).collect(),
        });
    }
    Err(ImageError::UnknownFormat {
        first_bytes: bytes.iter().take(8).copied().collect(),
    })
}

/// The centre square of a grey image (offset rounded down).
pub fn centre_square_grey(image: &GreyImage) -> GreyImage {
    let (data, side) = crop_centre(&image.data, image.width, image.height, 1);
    GreyImage {
        width: side,
        height: side,
        data,
    }
}

/// [`resize`] for a float plane (no rounding).
pub fn resize_grey(image: &GreyImage, width: u32, height: u32) -> GreyImage {
    let (iw, ih) = (image.width as usize, image.height as usize);
    let (ow, oh) = (width as usize, height as usize);
    let mut tmp = vec![0f32; ow * ih];
    let horizontal = coefficients(iw, ow);
    for y in 0..ih {
        let row = &image.data[y * iw..(y + 1) * iw];
        for (x, (lo, weights)) in horizontal.iter().enumerate() {
            tmp[y * ow + x] = weights.iter().zip(&row[*lo..]).map(|(w, v)| w * v).sum();
        }
    }
    let vertical = coefficients(ih, oh);
    let mut data = vec![0f32; ow * oh];
    for (y, (lo, weights)) in vertical.iter().enumerate() {
        for x in 0..ow {
            data[y * ow + x] = weights
                .iter()
                .enumerate()
                .map(|(k, w)| w * tmp[(lo + k) * ow + x])
                .sum();
        }
    }
    GreyImage {
        width,
        height,
        data,
    }
}

/// The 4M depth standardisation (`TruncatedDepthStandardization`, threshold 0.1): sort the values,
/// keep `sorted[int(0.1 n) .. int(0.9 n)]`, and return `(d - mean) / sqrt(var + 1e-6)` for every
/// value, with the kept values' mean and unbiased variance. `None` when fewer than 2 values are kept.
pub fn truncated_standardise(values: &[f32]) -> Option<Vec<f32>> {
    let mut sorted: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let kept = &sorted[(0.1 * n as f64) as usize..(0.9 * n as f64) as usize];
    if kept.len() < 2 {
        return None;
    }
    let mean = kept.iter().sum::<f64>() / kept.len() as f64;
    let var = kept.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (kept.len() - 1) as f64;
    let scale = (var + 1e-6).sqrt();
    Some(
        values
            .iter()
            .map(|&v| ((f64::from(v) - mean) / scale) as f32)
            .collect(),
    )
}

/// Values min-max normalised to [0, 1] (non-finite values count as the minimum); a constant input
/// gives zeros. Also returns how many values were not finite.
pub fn min_max_normalise(values: &[f32]) -> (Vec<f32>, usize) {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let range = hi - lo;
    let mut non_finite = 0;
    let out = values
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                non_finite += 1;
                0.0
            } else if range > 0.0 {
                (v - lo) / range
            } else {
                0.0
            }
        })
        .collect();
    (out, non_finite)
}

/// The turbo colour map (Google's polynomial approximation of it) at `t` in [0, 1].
pub fn turbo(t: f32) -> [u8; 3] {
    let x = f64::from(t.clamp(0.0, 1.0));
    let poly = |c: [f64; 6]| {
        let v = c[0] + x * (c[1] + x * (c[2] + x * (c[3] + x * (c[4] + x * c[5]))));
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    };
    [
        poly([
            0.13572138,
            4.61539260,
            -42.66032258,
            132.13108234,
            -152.94239396,
            59.28637943,
        ]),
        poly([
            0.09140261,
            2.19418839,
            4.84296658,
            -14.18503333,
            4.27729857,
            2.82956604,
        ]),
        poly([
            0.10667330,
            12.64194608,
            -60.58204836,
            110.36276771,
            -89.90310912,
            27.34824973,
        ]),
    ]
}

/// A plane in [0, 1] as a 16-bit grey PNG (`round(v * 65535)`).
pub fn encode_png_grey16(width: u32, height: u32, values: &[f32]) -> Result<Vec<u8>, ImageError> {
    let data: Vec<u8> = values
        .iter()
        .flat_map(|v| ((v.clamp(0.0, 1.0) * 65535.0).round() as u16).to_be_bytes())
        .collect();
    encode_png_raw(
        width,
        height,
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        &data,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: u32, height: u32) -> RgbImage {
        let mut data = Vec::new();
        for y in 0..height {
            for x in 0..width {
                data.extend_from_slice(&[(x * 255 / width) as u8, (y * 255 / height) as u8, 77]);
            }
        }
        RgbImage {
            width,
            height,
            data,
        }
    }

    #[test]
    fn png_round_trips_and_grey_alpha_become_rgb() {
        let image = gradient(13, 7);
        let bytes = encode_png(&image).unwrap();
        assert_eq!(decode(&bytes).unwrap(), image);
        let grey_alpha: Vec<u8> = (0..6).flat_map(|v| [v * 40, 255 - v]).collect();
        let bytes = encode_png_raw(
            3,
            2,
            png::ColorType::GrayscaleAlpha,
            png::BitDepth::Eight,
            &grey_alpha,
        )
        .unwrap();
        let rgb = decode(&bytes).unwrap();
        assert_eq!((rgb.width, rgb.height), (3, 2));
        assert_eq!(&rgb.data[3..6], &[40, 40, 40]);
    }

    #[test]
    fn bad_images_are_refused() {
        assert!(matches!(
            decode(b"hello world"),
            Err(ImageError::UnknownFormat { .. })
        ));
        let bytes = encode_png(&gradient(32, 32)).unwrap();
        let err = decode(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(
            matches!(err, ImageError::Decode { format: "PNG", .. }),
            "{err}"
        );
        let err = decode(&[0xff, 0xd8, 0xff, 0xe0, 0, 0x10]).unwrap_err();
        assert!(
            matches!(err, ImageError::Decode { format: "JPEG", .. }),
            "{err}"
        );
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn crop_takes_the_centre_square() {
        let image = gradient(10, 4);
        let square = centre_square(&image);
        assert_eq!((square.width, square.height), (4, 4));
        assert_eq!(&square.data[..3], &image.data[9..12]); // column 3 of row 0
        let tall = centre_square(&gradient(3, 8));
        assert_eq!((tall.width, tall.height), (3, 3));
    }

    #[test]
    fn resize_keeps_constants_and_averages_when_shrinking() {
        let flat = RgbImage {
            width: 50,
            height: 50,
            data: vec![200; 3 * 50 * 50],
        };
        let small = resize(&flat, 7, 7);
        assert!(small.data.iter().all(|&v| v == 200));
        let big = resize(&flat, 123, 123);
        assert!(big.data.iter().all(|&v| v == 200));
        // A 1-pixel checkerboard shrunk 4x averages to grey (the filter is antialiased).
        let mut data = Vec::new();
        for y in 0..64u32 {
            for x in 0..64u32 {
                let v = if (x + y) % 2 == 0 { 255 } else { 0 };
                data.extend_from_slice(&[v, v, v]);
            }
        }
        let board = RgbImage {
            width: 64,
            height: 64,
            data,
        };
        let grey = resize(&board, 16, 16);
        for &v in &grey.data[3 * 17..3 * 18] {
            assert!((120..=135).contains(&v), "{v}");
        }
    }

    #[test]
    fn normalisation_maps_to_minus_one_one_and_back() {
        let image = gradient(16, 16);
        let input = rgb_tokenizer_input(&image, 16);
        assert_eq!(input.len(), 3 * 256);
        assert!(input.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert_eq!(input[0], -1.0); // red at x = 0
        let (back, bad) = rgb_from_tokenizer_output(&input, 16, 16);
        assert_eq!(bad, 0);
        assert_eq!(back, image);
        let (clamped, bad) = rgb_from_tokenizer_output(&[3.0, -7.0, f32::NAN], 1, 1);
        assert_eq!(clamped.data, vec![255, 0, 0]);
        assert_eq!(bad, 1);
    }

    #[test]
    fn grey_png_16_bit_reads_as_fractions_and_colour_is_refused() {
        let samples: Vec<f32> = vec![0.0, 0.25, 0.5, 1.0, 0.75, 0.125];
        let bytes = encode_png_grey16(3, 2, &samples).unwrap();
        let grey = decode_grey(&bytes).unwrap();
        assert_eq!((grey.width, grey.height), (3, 2));
        for (a, b) in grey.data.iter().zip(&samples) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        let colour = encode_png(&gradient(4, 4)).unwrap();
        let err = decode_grey(&colour).unwrap_err();
        assert!(
            err.to_string().contains("grey-scale image is expected"),
            "{err}"
        );
        assert!(decode_grey(b"nope").is_err());
    }

    #[test]
    fn truncated_standardisation_matches_the_reference_formula() {
        // 10 values: keep sorted[1..9] = 2..=9 → mean 5.5, unbiased var 6.0.
        let values: Vec<f32> = (1..=10).rev().map(|v| v as f32).collect();
        let out = truncated_standardise(&values).unwrap();
        let scale = (6.0f64 + 1e-6).sqrt();
        for (o, v) in out.iter().zip(&values) {
            let expected = ((f64::from(*v) - 5.5) / scale) as f32;
            assert!((o - expected).abs() < 1e-6, "{o} vs {expected}");
        }
        assert!(truncated_standardise(&[1.0, 2.0]).is_none());
    }

    #[test]
    fn grey_resize_and_crop() {
        let plane = GreyImage {
            width: 40,
            height: 20,
            data: vec![0.5; 800],
        };
        let square = centre_square_grey(&plane);
        assert_eq!((square.width, square.height), (20, 20));
        let small = resize_grey(&square, 8, 8);
        assert!(small.data.iter().all(|v| (v - 0.5).abs() < 1e-6));
    }

    #[test]
    fn min_max_and_turbo() {
        let (n, bad) = min_max_normalise(&[2.0, 4.0, f32::NAN, 3.0]);
        assert_eq!(n, vec![0.0, 1.0, 0.0, 0.5]);
        assert_eq!(bad, 1);
        assert_eq!(min_max_normalise(&[3.0, 3.0]).0, vec![0.0, 0.0]);
        // Turbo runs from dark blue through green to dark red.
        let [r0, g0, b0] = turbo(0.1);
        assert!(b0 > r0 && b0 > g0, "{r0} {g0} {b0}");
        let [r1, g1, b1] = turbo(0.9);
        assert!(r1 > g1 && r1 > b1, "{r1} {g1} {b1}");
        assert_eq!(turbo(-3.0), turbo(0.0));
        let [_, g, _] = turbo(0.5);
        assert!(g > 200);
    }
}
