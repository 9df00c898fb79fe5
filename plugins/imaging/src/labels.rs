//! Label maps (semantic segmentation): PNG decoding to one class id per pixel, the centre crop,
//! nearest-neighbour resizing (labels must not be blended) and palette PNG encoding.

use crate::{ImageError, PNG_SIGNATURE, read_png};

/// One class id per pixel, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelImage {
    pub width: u32,
    pub height: u32,
    pub ids: Vec<u8>,
}

/// Decodes a PNG label map: an indexed (palette) image gives its indices, a grey image its
/// values, and an RGB(A) image the position of each pixel's colour in `palette` (an unknown colour
/// is refused with its pixel). JPEG is refused: lossy compression changes labels.
pub fn decode_labels(bytes: &[u8], palette: &[[u8; 3]]) -> Result<LabelImage, ImageError> {
    if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        return Err(ImageError::UnsupportedLayout {
            format: "JPEG",
            layout: "label-map (lossy compression changes the labels; use an indexed or grey PNG)"
                .into(),
        });
    }
    if !bytes.starts_with(&PNG_SIGNATURE) {
        return Err(ImageError::UnknownFormat {
            first_bytes: bytes.iter().take(8).copied().collect(),
        });
    }
    // No expansion: an indexed image's samples are the class ids.
    let frame = read_png(bytes, png::Transformations::IDENTITY)?;
    let (width, height, color, depth) = (frame.width, frame.height, frame.color, frame.depth);
    let lines = (0..height as usize).map(|y| frame.line(y));
    let mut ids = Vec::with_capacity(width as usize * height as usize);
    match (color, depth) {
        (png::ColorType::Indexed | png::ColorType::Grayscale, png::BitDepth::Sixteen) => {
            for (y, line) in lines.enumerate() {
                for (x, sample) in line.chunks_exact(2).take(width as usize).enumerate() {
                    let value = u16::from_be_bytes([sample[0], sample[1]]);
                    let id = u8::try_from(value).map_err(|_| ImageError::UnsupportedLayout {
                        format: "PNG",
                        layout: format!(
                            "16-bit label values above 255 (pixel ({x}, {y}) is {value})"
                        ),
                    })?;
                    ids.push(id);
                }
            }
        }
        (png::ColorType::Indexed | png::ColorType::Grayscale, bits) => {
            let bits = bits as usize;
            let mask = ((1u16 << bits) - 1) as u8;
            for line in lines {
                for i in 0..width as usize {
                    let bit = i * bits;
                    ids.push((line[bit / 8] >> (8 - bits - bit % 8)) & mask);
                }
            }
        }
        (png::ColorType::Rgb | png::ColorType::Rgba, png::BitDepth::Eight) => {
            let channels = if color == png::ColorType::Rgb { 3 } else { 4 };
            for (y, line) in lines.enumerate() {
                for (x, px) in line.chunks_exact(channels).take(width as usize).enumerate() {
                    let colour = [px[0], px[1], px[2]];
                    let id = palette.iter().position(|c| *c == colour).ok_or(
                        ImageError::UnknownLabelColour {
                            x: x as u32,
                            y: y as u32,
                            colour,
                        },
                    )?;
                    ids.push(id as u8);
                }
            }
        }
        (other, bits) => {
            return Err(ImageError::UnsupportedLayout {
                format: "PNG",
                layout: format!(
                    "{other:?} {bits:?}-bit (a label map is an indexed, grey or 8-bit RGB image)"
                ),
            });
        }
    }
    Ok(LabelImage { width, height, ids })
}

/// The centre square of a label map (offset rounded down).
pub fn centre_square_labels(image: &LabelImage) -> LabelImage {
    let (ids, side) = crate::crop_centre(&image.ids, image.width, image.height, 1);
    LabelImage {
        width: side,
        height: side,
        ids,
    }
}

/// Nearest-neighbour resize as PIL's `NEAREST`: output pixel `o` takes input `floor((o + 0.5) *
/// in / out)`.
pub fn resize_labels(image: &LabelImage, width: u32, height: u32) -> LabelImage {
    let source = |o: u32, out_len: u32, in_len: u32| -> usize {
        let i = ((f64::from(o) + 0.5) * f64::from(in_len) / f64::from(out_len)).floor() as u32;
        i.min(in_len - 1) as usize
    };
    let columns: Vec<usize> = (0..width).map(|x| source(x, width, image.width)).collect();
    let mut ids = Vec::with_capacity(width as usize * height as usize);
    for y in 0..height {
        let row = source(y, height, image.height) * image.width as usize;
        ids.extend(columns.iter().map(|&x| image.ids[row + x]));
    }
    LabelImage { width, height, ids }
}

/// Encodes class ids as an 8-bit indexed PNG with `palette` (ids beyond it show black).
pub fn encode_png_indexed(image: &LabelImage, palette: &[[u8; 3]]) -> Result<Vec<u8>, ImageError> {
    let err = |e: png::EncodingError| ImageError::Encode {
        reason: e.to_string(),
    };
    let mut entries: Vec<u8> = palette.iter().take(256).flatten().copied().collect();
    let used = image.ids.iter().copied().max().map_or(0, usize::from) + 1;
    entries.resize(3 * used.max(palette.len().min(256)), 0);
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, image.width, image.height);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_palette(entries);
        let mut writer = encoder.write_header().map_err(err)?;
        writer.write_image_data(&image.ids).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PALETTE: [[u8; 3]; 3] = [[0, 0, 0], [255, 0, 0], [0, 0, 255]];

    #[test]
    fn indexed_pngs_round_trip_their_ids() {
        let image = LabelImage {
            width: 5,
            height: 3,
            ids: vec![0, 1, 2, 2, 1, 1, 0, 0, 2, 2, 1, 1, 1, 0, 0],
        };
        let png = encode_png_indexed(&image, &PALETTE).unwrap();
        assert_eq!(decode_labels(&png, &[]).unwrap(), image);
    }

    #[test]
    fn sub_byte_grey_and_colour_maps_decode_to_ids() {
        // 2-bit grey: 4 pixels per byte, most significant first.
        let png = crate::encode_png_raw(
            5,
            1,
            png::ColorType::Grayscale,
            png::BitDepth::Two,
            &[0b0001_1011, 0b0100_0000],
        )
        .unwrap();
        assert_eq!(decode_labels(&png, &[]).unwrap().ids, vec![0, 1, 2, 3, 1]);
        let rgb = [255, 0, 0, 0, 0, 255, 0, 0, 0];
        let png =
            crate::encode_png_raw(3, 1, png::ColorType::Rgb, png::BitDepth::Eight, &rgb).unwrap();
        assert_eq!(decode_labels(&png, &PALETTE).unwrap().ids, vec![1, 2, 0]);
        let err = decode_labels(&png, &PALETTE[..2]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pixel (1, 0) has the colour #0000ff, which is not a class colour"
        );
    }

    #[test]
    fn jpeg_and_non_images_are_refused() {
        let err = decode_labels(&[0xff, 0xd8, 0xff, 0xe0], &[]).unwrap_err();
        assert!(err.to_string().contains("lossy"), "{err}");
        let err = decode_labels(b"labels", &[]).unwrap_err();
        assert!(err.to_string().contains("not a PNG or JPEG"), "{err}");
    }

    #[test]
    fn nearest_resize_picks_pixels_without_blending() {
        let image = LabelImage {
            width: 4,
            height: 2,
            ids: vec![0, 1, 2, 3, 4, 5, 6, 7],
        };
        // Row floor(0.5 * 2) = 1, columns floor(0.5 * 2) = 1 and floor(1.5 * 2) = 3.
        assert_eq!(resize_labels(&image, 2, 1).ids, vec![5, 7]);
        let up = resize_labels(&resize_labels(&image, 2, 1), 4, 2);
        assert_eq!(up.ids, vec![5, 5, 7, 7, 5, 5, 7, 7]);
    }
}
