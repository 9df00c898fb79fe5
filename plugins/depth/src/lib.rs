//! The `depth` plugin: depth maps <-> 4M `tok_depth@224` token grids.
//!
//! Tokenize: decode a grey-scale PNG (16-bit samples / 65535 as the reference reads its depth
//! PNGs, or 8-bit / 255), crop its centre square, resize it to `image_size` (224 by default) with
//! antialiased bicubic filtering, apply the 4M truncated depth standardisation (drop the lowest and
//! highest 10 %, `(d - mean) / sqrt(var + 1e-6)`) and run the host graph `tok_depth@224/encode`.
//! Detokenize: run `tok_depth@224/decode` (DiVAE: `steps`, `seed`); the standardised output has no
//! absolute scale, so it is min-max normalised per image (as the reference displays it) and
//! returned as a 16-bit grey PNG (`depth`) and a turbo colour-mapped PNG (`depth-turbo`).

use tessera_imaging as image;
use tessera_sdk::nn::{self, NamedTensor};
use tessera_sdk::prelude::*;

pub const DOMAIN: &str = "tok_depth@224";
pub const ENCODE_GRAPH: &str = "tok_depth@224/encode";
pub const DECODE_GRAPH: &str = "tok_depth@224/decode";
/// `tok_depth@224`'s vocabulary (the released 8k depth tokenizer); ids at or above it are refused.
pub const VOCAB_SIZE: u32 = 8192;
const GRID: u32 = 14;

/// Sides the plugin accepts for `image_size` (multiples of the 16-pixel patch).
const SIZES: std::ops::RangeInclusive<u32> = 16..=1024;

pub struct Depth {
    image_size: u32,
    steps: u32,
    seed: u64,
}

fn parse_size(params: &Params, default: u32) -> Result<u32, PluginError> {
    let size: u32 = params.parse_or("image_size", default)?;
    if !SIZES.contains(&size) || !size.is_multiple_of(16) {
        return Err(PluginError::invalid(format!(
            "parameter `image_size` = {size}: must be a multiple of 16 in {}..={}",
            SIZES.start(),
            SIZES.end()
        )));
    }
    Ok(size)
}

fn refuse_unknown(params: &Params, known: &[&str], call: &str) -> Result<(), PluginError> {
    if let Some(key) = params.unknown(known).next() {
        return Err(PluginError::unsupported(format!(
            "{call}: unknown parameter `{key}` (known: {})",
            known.join(", ")
        )));
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), PluginError> {
    if domain != DOMAIN {
        return Err(PluginError::unsupported(format!(
            "domain `{domain}` is not served by `depth` (it serves {DOMAIN})"
        )));
    }
    Ok(())
}

fn invalid_image(e: image::ImageError) -> PluginError {
    PluginError::invalid(e.to_string())
}

fn graph_output(outputs: Vec<NamedTensor>, graph: &str, name: &str) -> Result<Tensor, PluginError> {
    outputs
        .into_iter()
        .find(|t| t.name == name)
        .map(|t| t.tensor)
        .ok_or_else(|| PluginError::Other(format!("graph `{graph}` returned no `{name}` tensor")))
}

/// The grid of `tokens`: `[h, w]`, or a flat `[n]` (as the command line sends) with `n` a square.
fn grid_shape(tokens: &Tokens) -> Result<(u32, u32), PluginError> {
    match tokens.shape[..] {
        [h, w] => Ok((h, w)),
        [n] => {
            let side = (f64::from(n).sqrt().round()) as u32;
            if u64::from(side) * u64::from(side) == u64::from(n) {
                Ok((side, side))
            } else {
                Err(PluginError::invalid(format!(
                    "{n} ids in a flat sequence are not a square grid; give the shape [h, w]"
                )))
            }
        }
        _ => Err(PluginError::invalid(format!(
            "tokens of shape {:?}: expected a grid [h, w]",
            tokens.shape
        ))),
    }
}

/// The 4M depth tokenizer input, flattened `(1, size, size)`: a grey-scale PNG (16-bit / 65535,
/// 8-bit / 255), centre square crop, antialiased bicubic resize to `size`, then the reference's
/// truncated standardisation over the whole map.
pub fn depth_tokenizer_input(bytes: &[u8], size: u32) -> Result<Vec<f32>, PluginError> {
    let decoded = image::decode_grey(bytes).map_err(invalid_image)?;
    let square = image::centre_square_grey(&decoded);
    let resized = if square.width == size {
        square
    } else {
        image::resize_grey(&square, size, size)
    };
    image::truncated_standardise(&resized.data).ok_or_else(|| {
        PluginError::invalid(format!(
            "a {size}x{size} depth map is too small to standardise"
        ))
    })
}

impl Depth {
    fn encode(&self, bytes: &[u8], size: u32) -> Result<(Vec<u32>, u32, u32), PluginError> {
        let input = depth_tokenizer_input(bytes, size)?;
        let graph = nn::load(ENCODE_GRAPH)?;
        let out = graph.compute(&[NamedTensor {
            name: "image".into(),
            tensor: Tensor::from_f32(&[1, 1, size, size], &input)?,
        }])?;
        let tokens = graph_output(out, ENCODE_GRAPH, "tokens")?;
        let [1, h, w] = tokens.shape[..] else {
            return Err(PluginError::Other(format!(
                "graph `{ENCODE_GRAPH}` returned tokens of shape {:?}, expected [1, h, w]",
                tokens.shape
            )));
        };
        if !matches!(tokens.dtype, Dtype::U32) || tokens.data.len() != 4 * (h * w) as usize {
            return Err(PluginError::Other(format!(
                "graph `{ENCODE_GRAPH}` returned {:?} tokens with {} bytes for [1, {h}, {w}]",
                tokens.dtype,
                tokens.data.len()
            )));
        }
        let ids: Vec<u32> = tokens
            .data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(id) = ids.iter().find(|&&id| id >= VOCAB_SIZE) {
            return Err(PluginError::Other(format!(
                "graph `{ENCODE_GRAPH}` returned id {id}, outside the {VOCAB_SIZE}-token vocabulary"
            )));
        }
        Ok((ids, h, w))
    }
}

impl ModalityPlugin for Depth {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "depth",
            env!("CARGO_PKG_VERSION"),
            "Depth maps (grey-scale PNG) <-> 4M tok_depth@224 token grids (tokenizer in the host)",
        )
        .with_modality(ModalityInfo::image_tokens(DOMAIN, VOCAB_SIZE, GRID * GRID))
    }

    fn init(_assets: Assets, config: Params) -> Result<Self, PluginError> {
        refuse_unknown(&config, &["image_size", "steps", "seed"], "init")?;
        Ok(Depth {
            image_size: parse_size(&config, 224)?,
            steps: config.parse_or("steps", 50)?,
            seed: config.parse_or("seed", 0)?,
        })
    }

    fn tokenize(
        &mut self,
        domain: &str,
        input: Value,
        params: &Params,
    ) -> Result<Tokens, PluginError> {
        check_domain(domain)?;
        refuse_unknown(params, &["image_size"], "tokenize")?;
        let size = parse_size(params, self.image_size)?;
        let (ids, h, w) = self.encode(input.as_image()?, size)?;
        Tokens::grid(domain, ids, h, w)
    }

    fn detokenize(&mut self, tokens: Tokens, params: &Params) -> Result<Detokenized, PluginError> {
        check_domain(&tokens.domain)?;
        refuse_unknown(params, &["steps", "seed"], "detokenize")?;
        let steps: u32 = params.parse_or("steps", self.steps)?;
        if !(1..=1000).contains(&steps) {
            return Err(PluginError::invalid(format!(
                "parameter `steps` = {steps}: must be in 1..=1000"
            )));
        }
        let seed: u64 = params.parse_or("seed", self.seed)?;
        let (h, w) = grid_shape(&tokens)?;
        if h == 0 || w == 0 || u64::from(h) * u64::from(w) != tokens.ids.len() as u64 {
            return Err(PluginError::invalid(format!(
                "{} ids do not fill the grid [{h}, {w}]",
                tokens.ids.len()
            )));
        }
        if let Some((index, id)) = tokens
            .ids
            .iter()
            .enumerate()
            .find(|(_, id)| **id >= VOCAB_SIZE)
        {
            return Err(PluginError::invalid(format!(
                "token {index} is {id}, outside the {VOCAB_SIZE}-token vocabulary"
            )));
        }
        let u32_tensor = |shape: Vec<u32>, values: &[u32]| Tensor {
            dtype: Dtype::U32,
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        let seed_tensor = Tensor {
            dtype: Dtype::I64,
            shape: vec![1],
            data: (seed.min(i64::MAX as u64) as i64).to_le_bytes().to_vec(),
        };
        let graph = nn::load(DECODE_GRAPH)?;
        let out = graph.compute(&[
            NamedTensor {
                name: "tokens".into(),
                tensor: u32_tensor(vec![1, h, w], &tokens.ids),
            },
            NamedTensor {
                name: "steps".into(),
                tensor: u32_tensor(vec![1], &[steps]),
            },
            NamedTensor {
                name: "seed".into(),
                tensor: seed_tensor,
            },
        ])?;
        let image = graph_output(out, DECODE_GRAPH, "image")?;
        let [1, 1, height, width] = image.shape[..] else {
            return Err(PluginError::Other(format!(
                "graph `{DECODE_GRAPH}` returned a depth map of shape {:?}, expected [1, 1, H, W]",
                image.shape
            )));
        };
        let values = image.to_f32()?;
        if values.len() != (height * width) as usize {
            return Err(PluginError::Other(format!(
                "graph `{DECODE_GRAPH}` returned {} values for [1, 1, {height}, {width}]",
                values.len()
            )));
        }
        let (normalised, non_finite) = image::min_max_normalise(&values);
        let encode_err = |e: image::ImageError| PluginError::Other(e.to_string());
        let depth16 = image::encode_png_grey16(width, height, &normalised).map_err(encode_err)?;
        let colour: Vec<u8> = normalised.iter().flat_map(|&v| image::turbo(v)).collect();
        let coloured = image::encode_png(&image::RgbImage {
            width,
            height,
            data: colour,
        })
        .map_err(encode_err)?;
        let mut out = Detokenized::single("depth", Value::png(depth16))
            .with("depth-turbo", Value::png(coloured));
        if non_finite > 0 {
            out = out.warn(format!(
                "{non_finite} decoded values were not finite and were written as the minimum"
            ));
        }
        Ok(out)
    }
}

tessera_sdk::export_plugin!(Depth);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_input_is_standardised_at_the_requested_size() {
        let side = 40u32;
        let values: Vec<f32> = (0..side * 30)
            .map(|i| (i % side) as f32 / side as f32)
            .collect();
        let png = image::encode_png_grey16(side, 30, &values).unwrap();
        let input = depth_tokenizer_input(&png, 16).unwrap();
        assert_eq!(input.len(), 256);
        // Standardised: the kept middle 80 % has mean ~0 and unit spread.
        let mut sorted = input.clone();
        sorted.sort_by(f32::total_cmp);
        let kept = &sorted[25..230]; // int(0.1 * 256) .. int(0.9 * 256)
        let mean = kept.iter().sum::<f32>() / kept.len() as f32;
        assert!(mean.abs() < 1e-3, "{mean}");
        // Depth grows to the right in every row.
        assert!(input[15] > input[0]);
    }

    #[test]
    fn colour_and_non_images_are_refused() {
        let rgb = image::encode_png(&image::RgbImage {
            width: 4,
            height: 4,
            data: vec![9; 48],
        })
        .unwrap();
        let err = depth_tokenizer_input(&rgb, 16).unwrap_err();
        assert!(err.describe().contains("grey-scale"), "{}", err.describe());
        let err = depth_tokenizer_input(b"not an image", 16).unwrap_err();
        assert!(
            err.describe().contains("not a PNG or JPEG"),
            "{}",
            err.describe()
        );
    }
}
