//! Example third-party modality: coarse binary masks. `tokenize` takes a PNG of any size and
//! gives a 14×14 grid of tokens, 1 where a patch is mostly bright; `detokenize` draws a
//! 224×224 PNG from such a grid. It shows the whole SDK surface: describe, init with config,
//! image values in and out, parameter parsing, typed errors.

use tessera_sdk::prelude::*;

const DOMAIN: &str = "mask_patches@224";
const GRID: u32 = 14;
const SIDE: u32 = 224;

pub struct MaskPatches {
    threshold: f32,
}

impl ModalityPlugin for MaskPatches {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "mask-patches",
            env!("CARGO_PKG_VERSION"),
            "Binary masks as 14x14 patch tokens",
        )
        .with_modality(ModalityInfo::image_tokens(DOMAIN, 2, GRID * GRID))
    }

    fn init(_assets: Assets, config: Params) -> Result<Self, PluginError> {
        let threshold = config.parse_or("threshold", 0.5f32)?;
        if !(0.0..=1.0).contains(&threshold) {
            return Err(PluginError::invalid(format!(
                "config `threshold` = {threshold} is outside [0, 1]"
            )));
        }
        Ok(Self { threshold })
    }

    fn tokenize(
        &mut self,
        domain: &str,
        input: Value,
        params: &Params,
    ) -> Result<Tokens, PluginError> {
        let threshold = params.parse_or("threshold", self.threshold)?;
        let (width, height, luma) = decode_luma(input.as_image()?)?;
        if width < GRID || height < GRID {
            return Err(PluginError::invalid(format!(
                "image is {width}x{height}; at least {GRID}x{GRID} is needed"
            )));
        }
        let mut ids = Vec::with_capacity((GRID * GRID) as usize);
        for row in 0..GRID {
            let (y0, y1) = (row * height / GRID, (row + 1) * height / GRID);
            for col in 0..GRID {
                let (x0, x1) = (col * width / GRID, (col + 1) * width / GRID);
                let mut sum = 0.0f32;
                for y in y0..y1 {
                    for x in x0..x1 {
                        sum += luma[(y * width + x) as usize];
                    }
                }
                let mean = sum / ((y1 - y0) * (x1 - x0)) as f32;
                ids.push(u32::from(mean > threshold));
            }
        }
        Tokens::grid(domain, ids, GRID, GRID)
    }

    fn detokenize(&mut self, tokens: Tokens, _params: &Params) -> Result<Detokenized, PluginError> {
        if tokens.ids.len() != (GRID * GRID) as usize {
            return Err(PluginError::invalid(format!(
                "expected {} tokens, got {}",
                GRID * GRID,
                tokens.ids.len()
            )));
        }
        if let Some((i, id)) = tokens.ids.iter().enumerate().find(|(_, id)| **id > 1) {
            return Err(PluginError::invalid(format!(
                "token {i} is {id}; this vocabulary has only 0 and 1"
            )));
        }
        let patch = SIDE / GRID;
        let mut pixels = vec![0u8; (SIDE * SIDE) as usize];
        for (y, row) in pixels.chunks_mut(SIDE as usize).enumerate() {
            for (x, px) in row.iter_mut().enumerate() {
                let id = tokens.ids[(y as u32 / patch * GRID + x as u32 / patch) as usize];
                *px = if id == 1 { 255 } else { 0 };
            }
        }
        Ok(Detokenized::single(
            "mask",
            Value::png(encode_gray_png(&pixels, SIDE, SIDE)?),
        ))
    }
}

/// Decodes a PNG into luminance in [0, 1].
fn decode_luma(bytes: &[u8]) -> Result<(u32, u32, Vec<f32>), PluginError> {
    let mut decoder = png::Decoder::new(bytes);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .map_err(|e| PluginError::invalid(format!("not a PNG: {e}")))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| PluginError::invalid(format!("broken PNG: {e}")))?;
    let channels = frame.color_type.samples();
    let luma = buf[..frame.buffer_size()]
        .chunks(channels)
        .map(|px| match channels {
            1 | 2 => f32::from(px[0]) / 255.0,
            _ => {
                (0.299 * f32::from(px[0]) + 0.587 * f32::from(px[1]) + 0.114 * f32::from(px[2]))
                    / 255.0
            }
        })
        .collect();
    Ok((frame.width, frame.height, luma))
}

fn encode_gray_png(pixels: &[u8], width: u32, height: u32) -> Result<Vec<u8>, PluginError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| PluginError::Other(e.to_string()))?;
    writer
        .write_image_data(pixels)
        .map_err(|e| PluginError::Other(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| PluginError::Other(e.to_string()))?;
    Ok(out)
}

tessera_sdk::export_plugin!(MaskPatches);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drawn_mask_tokenizes_back_to_itself() {
        let mut plugin = MaskPatches::init(Assets::default(), Params::default()).unwrap();
        let ids: Vec<u32> = (0..GRID * GRID).map(|i| u32::from(i % 3 == 0)).collect();
        let tokens = Tokens::grid(DOMAIN, ids.clone(), GRID, GRID).unwrap();
        let out = plugin.detokenize(tokens, &Params::default()).unwrap();
        let back = plugin
            .tokenize(DOMAIN, out.artifacts[0].value.clone(), &Params::default())
            .unwrap();
        assert_eq!(back.ids, ids);
        assert_eq!(back.shape, vec![GRID, GRID]);
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        let mut plugin = MaskPatches::init(Assets::default(), Params::default()).unwrap();
        assert!(
            plugin
                .tokenize(DOMAIN, Value::png(b"nope".to_vec()), &Params::default())
                .is_err()
        );
        assert!(
            plugin
                .tokenize(DOMAIN, Value::Text("x".into()), &Params::default())
                .is_err()
        );
        let bad = Tokens::grid(DOMAIN, vec![5; 196], GRID, GRID).unwrap();
        assert!(plugin.detokenize(bad, &Params::default()).is_err());
    }
}
