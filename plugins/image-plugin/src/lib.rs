//! The shared half of tessera's image-token plugins (rgb, normal, depth, semseg): their settings,
//! the calls to the host's tokenizer graphs `<domain>/encode` and `<domain>/decode`, and the checks
//! on what goes in and comes back, so that each plugin only says how its files map to tensors.
//!
//! [`ColourPlugin`] is a whole plugin for domains whose tokenizer sees a three-channel image in
//! [-1, 1] and decodes one (RGB, surface normals): a crate serving such a domain implements
//! [`ColourDomain`] and exports `ColourPlugin<ItsDomain>`.

use std::marker::PhantomData;

use tessera_imaging as image;
use tessera_sdk::nn::{self, NamedTensor};
use tessera_sdk::prelude::*;

/// Sides accepted for `image_size` (multiples of the tokenizers' 16-pixel patch).
const SIZES: std::ops::RangeInclusive<u32> = 16..=1024;
/// Largest number of diffusion steps a DiVAE decoder is asked for.
const MAX_STEPS: u32 = 1000;

/// One image-token domain served through the host's tokenizer graphs.
#[derive(Debug, Clone, Copy)]
pub struct GraphDomain {
    /// The serving plugin's id, for error messages.
    pub plugin: &'static str,
    /// The 4M domain, e.g. `tok_rgb@224`.
    pub domain: &'static str,
    /// The tokenizer's vocabulary; ids at or above it are refused both ways.
    pub vocab_size: u32,
    /// Tokens per image at the domain's native size (196 for `@224`).
    pub tokens: u32,
}

impl GraphDomain {
    /// The modality entry of the plugin's `describe`.
    pub fn modality(&self) -> ModalityInfo {
        ModalityInfo::image_tokens(self.domain, self.vocab_size, self.tokens)
    }

    pub fn encode_graph(&self) -> String {
        format!("{}/encode", self.domain)
    }

    pub fn decode_graph(&self) -> String {
        format!("{}/decode", self.domain)
    }

    /// Refuses a call for a domain this plugin does not serve.
    pub fn check_domain(&self, domain: &str) -> Result<(), PluginError> {
        if domain != self.domain {
            return Err(PluginError::unsupported(format!(
                "domain `{domain}` is not served by `{}` (it serves {})",
                self.plugin, self.domain
            )));
        }
        Ok(())
    }

    /// Runs the encoder graph on one prepared input (`image`) and returns the ids as a grid.
    pub fn encode(&self, input: Tensor) -> Result<Tokens, PluginError> {
        let name = self.encode_graph();
        let graph = nn::load(&name)?;
        let out = graph.compute(&[NamedTensor {
            name: "image".into(),
            tensor: input,
        }])?;
        let tokens = graph_output(out, &name, "tokens")?;
        let [1, h, w] = tokens.shape[..] else {
            return Err(PluginError::Other(format!(
                "graph `{name}` returned tokens of shape {:?}, expected [1, h, w]",
                tokens.shape
            )));
        };
        if !matches!(tokens.dtype, Dtype::U32) || tokens.data.len() != 4 * (h * w) as usize {
            return Err(PluginError::Other(format!(
                "graph `{name}` returned {:?} tokens with {} bytes for [1, {h}, {w}]",
                tokens.dtype,
                tokens.data.len()
            )));
        }
        let ids: Vec<u32> = tokens
            .data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(id) = ids.iter().find(|&&id| id >= self.vocab_size) {
            return Err(PluginError::Other(format!(
                "graph `{name}` returned id {id}, outside the {}-token vocabulary",
                self.vocab_size
            )));
        }
        Tokens::grid(self.domain, ids, h, w)
    }

    /// Checks the token grid, runs the decoder graph and returns its `output` tensor (`image`, or
    /// `logits` for semseg) as `channels` planes.
    pub fn decode(
        &self,
        tokens: &Tokens,
        diffusion: Diffusion,
        output: &str,
        channels: u32,
    ) -> Result<Planes, PluginError> {
        self.check_domain(&tokens.domain)?;
        let (h, w) = grid_shape(tokens)?;
        if let Some((index, id)) = tokens
            .ids
            .iter()
            .enumerate()
            .find(|(_, id)| **id >= self.vocab_size)
        {
            return Err(PluginError::invalid(format!(
                "token {index} is {id}, outside the {}-token vocabulary",
                self.vocab_size
            )));
        }
        let u32_tensor = |shape: Vec<u32>, values: &[u32]| Tensor {
            dtype: Dtype::U32,
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        let seed = Tensor {
            dtype: Dtype::I64,
            shape: vec![1],
            data: (diffusion.seed.min(i64::MAX as u64) as i64)
                .to_le_bytes()
                .to_vec(),
        };
        let name = self.decode_graph();
        let graph = nn::load(&name)?;
        let out = graph.compute(&[
            NamedTensor {
                name: "tokens".into(),
                tensor: u32_tensor(vec![1, h, w], &tokens.ids),
            },
            NamedTensor {
                name: "steps".into(),
                tensor: u32_tensor(vec![1], &[diffusion.steps]),
            },
            NamedTensor {
                name: "seed".into(),
                tensor: seed,
            },
        ])?;
        let tensor = graph_output(out, &name, output)?;
        let [1, c, height, width] = tensor.shape[..] else {
            return Err(PluginError::Other(format!(
                "graph `{name}` returned `{output}` of shape {:?}, expected [1, {channels}, H, W]",
                tensor.shape
            )));
        };
        if c != channels {
            return Err(PluginError::Other(format!(
                "graph `{name}` returned `{output}` with {c} channels, expected {channels}"
            )));
        }
        let values = tensor.to_f32()?;
        if values.len() as u64 != u64::from(c) * u64::from(height) * u64::from(width) {
            return Err(PluginError::Other(format!(
                "graph `{name}` returned {} values for [1, {c}, {height}, {width}]",
                values.len()
            )));
        }
        Ok(Planes {
            channels: c,
            width,
            height,
            values,
        })
    }
}

/// A decoded tensor `(channels, height, width)`, channel-major.
#[derive(Debug, Clone)]
pub struct Planes {
    pub channels: u32,
    pub width: u32,
    pub height: u32,
    pub values: Vec<f32>,
}

/// The DiVAE decoder's settings (a VQ-VAE decoder ignores them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Diffusion {
    pub steps: u32,
    pub seed: u64,
}

/// What every image plugin reads from its manifest's `[config]`: the tokenizer's input side and
/// the DiVAE decoder settings, each overridable per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub image_size: u32,
    pub diffusion: Diffusion,
}

impl Settings {
    /// The keys [`Settings::from_config`] reads.
    pub const CONFIG_KEYS: [&'static str; 3] = ["image_size", "steps", "seed"];

    /// Reads the config, refusing keys outside `CONFIG_KEYS` and `extra`.
    pub fn from_config(config: &Params, extra: &[&str]) -> Result<Self, PluginError> {
        let mut known = Self::CONFIG_KEYS.to_vec();
        known.extend_from_slice(extra);
        refuse_unknown(config, &known, "init")?;
        Ok(Settings {
            image_size: parse_size(config, 224)?,
            diffusion: parse_diffusion(config, Diffusion { steps: 50, seed: 0 })?,
        })
    }

    /// The side for one `tokenize` call (`image_size` parameter, the only one accepted).
    pub fn tokenize_size(&self, params: &Params) -> Result<u32, PluginError> {
        refuse_unknown(params, &["image_size"], "tokenize")?;
        parse_size(params, self.image_size)
    }

    /// The decoder settings for one `detokenize` call (`steps` and `seed` parameters).
    pub fn detokenize_diffusion(&self, params: &Params) -> Result<Diffusion, PluginError> {
        refuse_unknown(params, &["steps", "seed"], "detokenize")?;
        parse_diffusion(params, self.diffusion)
    }
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

fn parse_diffusion(params: &Params, default: Diffusion) -> Result<Diffusion, PluginError> {
    let steps: u32 = params.parse_or("steps", default.steps)?;
    if !(1..=MAX_STEPS).contains(&steps) {
        return Err(PluginError::invalid(format!(
            "parameter `steps` = {steps}: must be in 1..={MAX_STEPS}"
        )));
    }
    Ok(Diffusion {
        steps,
        seed: params.parse_or("seed", default.seed)?,
    })
}

/// Refuses the first parameter outside `known`, naming the call and the known ones.
pub fn refuse_unknown(params: &Params, known: &[&str], call: &str) -> Result<(), PluginError> {
    if let Some(key) = params.unknown(known).next() {
        return Err(PluginError::unsupported(format!(
            "{call}: unknown parameter `{key}` (known: {})",
            known.join(", ")
        )));
    }
    Ok(())
}

/// An image decoding or encoding error as an invalid-input error.
pub fn invalid_image(e: image::ImageError) -> PluginError {
    PluginError::invalid(e.to_string())
}

/// A PNG encoding failure of the plugin's own output.
pub fn encoding_failed(e: image::ImageError) -> PluginError {
    PluginError::Other(e.to_string())
}

fn graph_output(outputs: Vec<NamedTensor>, graph: &str, name: &str) -> Result<Tensor, PluginError> {
    outputs
        .into_iter()
        .find(|t| t.name == name)
        .map(|t| t.tensor)
        .ok_or_else(|| PluginError::Other(format!("graph `{graph}` returned no `{name}` tensor")))
}

/// The grid of `tokens`: `[h, w]`, or a flat `[n]` (as the command line sends) with `n` a square;
/// the ids must fill it.
pub fn grid_shape(tokens: &Tokens) -> Result<(u32, u32), PluginError> {
    let (h, w) = match tokens.shape[..] {
        [h, w] => (h, w),
        [n] => {
            let side = (f64::from(n).sqrt().round()) as u32;
            if u64::from(side) * u64::from(side) != u64::from(n) {
                return Err(PluginError::invalid(format!(
                    "{n} ids in a flat sequence are not a square grid; give the shape [h, w]"
                )));
            }
            (side, side)
        }
        _ => {
            return Err(PluginError::invalid(format!(
                "tokens of shape {:?}: expected a grid [h, w]",
                tokens.shape
            )));
        }
    };
    if h == 0 || w == 0 || u64::from(h) * u64::from(w) != tokens.ids.len() as u64 {
        return Err(PluginError::invalid(format!(
            "{} ids do not fill the grid [{h}, {w}]",
            tokens.ids.len()
        )));
    }
    Ok((h, w))
}

/// A domain whose tokenizer takes a three-channel image mapped to [-1, 1] (mean = std = 0.5 per
/// channel) and decodes one: RGB, and surface normals stored as RGB (`(n + 1) / 2`).
pub trait ColourDomain: 'static {
    const GRAPHS: GraphDomain;
    /// The plugin's one-line description.
    const DESCRIPTION: &'static str;
    /// The name of the PNG `detokenize` returns.
    const ARTIFACT: &'static str;
}

/// A whole plugin for a [`ColourDomain`]: PNG/JPEG in (centre square, antialiased bicubic resize,
/// [-1, 1]), the decoded image `(x + 1) / 2` clamped to [0, 1] as a PNG out.
pub struct ColourPlugin<D: ColourDomain> {
    settings: Settings,
    domain: PhantomData<D>,
}

impl<D: ColourDomain> ModalityPlugin for ColourPlugin<D> {
    fn describe() -> PluginInfo {
        PluginInfo::new(D::GRAPHS.plugin, env!("CARGO_PKG_VERSION"), D::DESCRIPTION)
            .with_modality(D::GRAPHS.modality())
    }

    fn init(_assets: Assets, config: Params) -> Result<Self, PluginError> {
        Ok(ColourPlugin {
            settings: Settings::from_config(&config, &[])?,
            domain: PhantomData,
        })
    }

    fn tokenize(
        &mut self,
        domain: &str,
        input: Value,
        params: &Params,
    ) -> Result<Tokens, PluginError> {
        D::GRAPHS.check_domain(domain)?;
        let size = self.settings.tokenize_size(params)?;
        let decoded = image::decode(input.as_image()?).map_err(invalid_image)?;
        let input = image::rgb_tokenizer_input(&decoded, size);
        D::GRAPHS.encode(Tensor::from_f32(&[1, 3, size, size], &input)?)
    }

    fn detokenize(&mut self, tokens: Tokens, params: &Params) -> Result<Detokenized, PluginError> {
        let diffusion = self.settings.detokenize_diffusion(params)?;
        let planes = D::GRAPHS.decode(&tokens, diffusion, "image", 3)?;
        let (rgb, non_finite) =
            image::rgb_from_tokenizer_output(&planes.values, planes.width, planes.height);
        let png = image::encode_png(&rgb).map_err(encoding_failed)?;
        let mut out = Detokenized::single(D::ARTIFACT, Value::png(png));
        if non_finite > 0 {
            out = out.warn(format!(
                "{non_finite} decoded values were not finite and were written as 0"
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::from(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    fn tokens(shape: Vec<u32>, ids: Vec<u32>) -> Tokens {
        Tokens {
            domain: "tok_rgb@224".into(),
            ids,
            shape,
        }
    }

    #[test]
    fn grids_are_read_from_their_shape_or_a_square_count() {
        assert_eq!(grid_shape(&tokens(vec![2, 3], vec![0; 6])).unwrap(), (2, 3));
        assert_eq!(grid_shape(&tokens(vec![9], vec![0; 9])).unwrap(), (3, 3));
        let err = grid_shape(&tokens(vec![8], vec![0; 8])).unwrap_err();
        assert!(
            err.describe().contains("not a square grid"),
            "{}",
            err.describe()
        );
        let err = grid_shape(&tokens(vec![2, 3], vec![0; 5])).unwrap_err();
        assert!(err.describe().contains("do not fill"), "{}", err.describe());
        let err = grid_shape(&tokens(vec![1, 2, 3], vec![0; 6])).unwrap_err();
        assert!(
            err.describe().contains("expected a grid"),
            "{}",
            err.describe()
        );
    }

    #[test]
    fn settings_refuse_bad_sizes_steps_and_unknown_keys() {
        let settings = Settings::from_config(&params(&[("image_size", "64")]), &[]).unwrap();
        assert_eq!(settings.image_size, 64);
        assert_eq!(settings.diffusion, Diffusion { steps: 50, seed: 0 });
        for (key, value, expected) in [
            ("image_size", "100", "multiple of 16"),
            ("image_size", "0", "multiple of 16"),
            ("steps", "0", "1..=1000"),
            ("colour", "red", "unknown parameter `colour`"),
        ] {
            let err = Settings::from_config(&params(&[(key, value)]), &[]).unwrap_err();
            assert!(
                err.describe().contains(expected),
                "{key}: {}",
                err.describe()
            );
        }
        assert!(Settings::from_config(&params(&[("classes", "a,b")]), &["classes"]).is_ok());
        let err = settings
            .tokenize_size(&params(&[("steps", "3")]))
            .unwrap_err();
        assert!(
            err.describe().contains("tokenize: unknown parameter"),
            "{}",
            err.describe()
        );
        let diffusion = settings
            .detokenize_diffusion(&params(&[("steps", "7"), ("seed", "3")]))
            .unwrap();
        assert_eq!(diffusion, Diffusion { steps: 7, seed: 3 });
    }

    #[test]
    fn calls_for_other_domains_are_refused() {
        let graphs = GraphDomain {
            plugin: "rgb",
            domain: "tok_rgb@224",
            vocab_size: 16384,
            tokens: 196,
        };
        let err = graphs.check_domain("tok_depth@224").unwrap_err();
        assert!(
            err.describe().contains("not served by `rgb`"),
            "{}",
            err.describe()
        );
        assert_eq!(graphs.encode_graph(), "tok_rgb@224/encode");
        assert_eq!(graphs.decode_graph(), "tok_rgb@224/decode");
    }
}
