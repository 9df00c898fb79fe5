//! The `rgb` plugin: PNG/JPEG images <-> 4M `tok_rgb@224` token grids.
//!
//! Tokenize: decode the image, crop its centre square, resize it to the tokenizer's side
//! (`image_size`, 224 by default) with antialiased bicubic filtering, map to [-1, 1] (mean = std =
//! 0.5, as the reference's RGB tokenizers expect) and run the host graph `tok_rgb@224/encode`; the
//! ids come back as an `[h, w]` grid. Detokenize: run `tok_rgb@224/decode` (DiVAE: `steps` and
//! `seed`), map `(x + 1) / 2` clamped to [0, 1] to 8 bits, and return a PNG.

use tessera_imaging as image;
use tessera_sdk::nn::{self, NamedTensor};
use tessera_sdk::prelude::*;

pub const DOMAIN: &str = "tok_rgb@224";
pub const ENCODE_GRAPH: &str = "tok_rgb@224/encode";
pub const DECODE_GRAPH: &str = "tok_rgb@224/decode";
/// `tok_rgb@224`'s vocabulary (the released 16k RGB tokenizer); ids at or above it are refused.
pub const VOCAB_SIZE: u32 = 16384;
const GRID: u32 = 14;

/// Sides the plugin accepts for `image_size` (multiples of the 16-pixel patch).
const SIZES: std::ops::RangeInclusive<u32> = 16..=1024;

pub struct Rgb {
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
            "domain `{domain}` is not served by `rgb` (it serves {DOMAIN})"
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

impl Rgb {
    fn encode(&self, bytes: &[u8], size: u32) -> Result<(Vec<u32>, u32, u32), PluginError> {
        let decoded = image::decode(bytes).map_err(invalid_image)?;
        let input = image::rgb_tokenizer_input(&decoded, size);
        let graph = nn::load(ENCODE_GRAPH)?;
        let out = graph.compute(&[NamedTensor {
            name: "image".into(),
            tensor: Tensor::from_f32(&[1, 3, size, size], &input)?,
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

impl ModalityPlugin for Rgb {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "rgb",
            env!("CARGO_PKG_VERSION"),
            "RGB images (PNG/JPEG) <-> 4M tok_rgb@224 token grids (tokenizer in the host)",
        )
        .with_modality(ModalityInfo::image_tokens(DOMAIN, VOCAB_SIZE, GRID * GRID))
    }

    fn init(_assets: Assets, config: Params) -> Result<Self, PluginError> {
        refuse_unknown(&config, &["image_size", "steps", "seed"], "init")?;
        Ok(Rgb {
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
        let [1, 3, height, width] = image.shape[..] else {
            return Err(PluginError::Other(format!(
                "graph `{DECODE_GRAPH}` returned an image of shape {:?}, expected [1, 3, H, W]",
                image.shape
            )));
        };
        let values = image.to_f32()?;
        if values.len() != 3 * (height * width) as usize {
            return Err(PluginError::Other(format!(
                "graph `{DECODE_GRAPH}` returned {} values for [1, 3, {height}, {width}]",
                values.len()
            )));
        }
        let (rgb, non_finite) = image::rgb_from_tokenizer_output(&values, width, height);
        let png = image::encode_png(&rgb).map_err(|e| PluginError::Other(e.to_string()))?;
        let mut out = Detokenized::single("image", Value::png(png));
        if non_finite > 0 {
            out = out.warn(format!(
                "{non_finite} decoded values were not finite and were written as 0"
            ));
        }
        Ok(out)
    }
}

tessera_sdk::export_plugin!(Rgb);
