//! The `depth` plugin: depth maps <-> 4M `tok_depth@224` token grids.
//!
//! Tokenize: decode a grey-scale PNG (16-bit samples / 65535 as the reference reads its depth
//! PNGs, or 8-bit / 255), crop its centre square, resize it to `image_size` (224 by default) with
//! antialiased bicubic filtering, apply the 4M truncated depth standardisation (drop the lowest and
//! highest 10 %, `(d - mean) / sqrt(var + 1e-6)`) and run the host graph `tok_depth@224/encode`.
//! Detokenize: run `tok_depth@224/decode` (DiVAE: `steps`, `seed`); the standardised output has no
//! absolute scale, so it is min-max normalised per image (as the reference displays it) and
//! returned as a 16-bit grey PNG (`depth`) and a turbo colour-mapped PNG (`depth-turbo`).

use tessera_image_plugin::{GraphDomain, Settings, encoding_failed, invalid_image};
use tessera_imaging as image;
use tessera_sdk::prelude::*;

/// The released 8k depth tokenizer's vocabulary, 14 x 14 tokens at 224 pixels.
pub const GRAPHS: GraphDomain = GraphDomain {
    plugin: "depth",
    domain: "tok_depth@224",
    vocab_size: 8192,
    tokens: 196,
};

pub struct Depth {
    settings: Settings,
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

impl ModalityPlugin for Depth {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "depth",
            env!("CARGO_PKG_VERSION"),
            "Depth maps (grey-scale PNG) <-> 4M tok_depth@224 token grids (tokenizer in the host)",
        )
        .with_modality(GRAPHS.modality())
    }

    fn init(_assets: Assets, config: Params) -> Result<Self, PluginError> {
        Ok(Depth {
            settings: Settings::from_config(&config, &[])?,
        })
    }

    fn tokenize(
        &mut self,
        domain: &str,
        input: Value,
        params: &Params,
    ) -> Result<Tokens, PluginError> {
        GRAPHS.check_domain(domain)?;
        let size = self.settings.tokenize_size(params)?;
        let input = depth_tokenizer_input(input.as_image()?, size)?;
        GRAPHS.encode(Tensor::from_f32(&[1, 1, size, size], &input)?)
    }

    fn detokenize(&mut self, tokens: Tokens, params: &Params) -> Result<Detokenized, PluginError> {
        let diffusion = self.settings.detokenize_diffusion(params)?;
        let planes = GRAPHS.decode(&tokens, diffusion, "image", 1)?;
        let (normalised, non_finite) = image::min_max_normalise(&planes.values);
        let (width, height) = (planes.width, planes.height);
        let depth16 =
            image::encode_png_grey16(width, height, &normalised).map_err(encoding_failed)?;
        let colour: Vec<u8> = normalised.iter().flat_map(|&v| image::turbo(v)).collect();
        let coloured = image::encode_png(&image::RgbImage {
            width,
            height,
            data: colour,
        })
        .map_err(encoding_failed)?;
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
