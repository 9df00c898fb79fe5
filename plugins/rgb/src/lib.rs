//! The `rgb` plugin: PNG/JPEG images <-> 4M `tok_rgb@224` token grids.
//!
//! Tokenize: decode the image, crop its centre square, resize it to the tokenizer's side
//! (`image_size`, 224 by default) with antialiased bicubic filtering, map to [-1, 1] (mean = std =
//! 0.5, as the reference's RGB tokenizers expect) and run the host graph `tok_rgb@224/encode`; the
//! ids come back as an `[h, w]` grid. Detokenize: run `tok_rgb@224/decode` (DiVAE: `steps` and
//! `seed`), map `(x + 1) / 2` clamped to [0, 1] to 8 bits, and return a PNG.

use tessera_image_plugin::{ColourDomain, ColourPlugin, GraphDomain};

pub struct RgbDomain;

impl ColourDomain for RgbDomain {
    /// The released 16k RGB tokenizer's vocabulary, 14 x 14 tokens at 224 pixels.
    const GRAPHS: GraphDomain = GraphDomain {
        plugin: "rgb",
        domain: "tok_rgb@224",
        vocab_size: 16384,
        tokens: 196,
    };
    const DESCRIPTION: &'static str =
        "RGB images (PNG/JPEG) <-> 4M tok_rgb@224 token grids (tokenizer in the host)";
    const ARTIFACT: &'static str = "image";
}

pub type Rgb = ColourPlugin<RgbDomain>;

tessera_sdk::export_plugin!(Rgb);
