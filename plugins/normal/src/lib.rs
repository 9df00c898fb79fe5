//! The `normal` plugin: surface-normal maps <-> 4M `tok_normal@224` token grids.
//!
//! A normal map is an RGB image whose channels hold the unit normal's x, y, z mapped from [-1, 1]
//! to [0, 1] (`(n + 1) / 2`), as 4M's data stores them. Tokenize undoes that mapping — the
//! reference's normal tokenizer input is `(x - 0.5) / 0.5` per channel — after the same centre
//! crop and antialiased bicubic resize as RGB, and runs `tok_normal@224/encode`. Detokenize runs
//! `tok_normal@224/decode` (the released tokenizer is a DiVAE: `steps`, `seed`) and maps the result
//! back with `(x + 1) / 2` clamped to [0, 1], as the reference displays normals.

use tessera_image_plugin::{ColourDomain, ColourPlugin, GraphDomain};

pub struct NormalDomain;

impl ColourDomain for NormalDomain {
    /// The released 8k normal tokenizer's vocabulary, 14 x 14 tokens at 224 pixels.
    const GRAPHS: GraphDomain = GraphDomain {
        plugin: "normal",
        domain: "tok_normal@224",
        vocab_size: 8192,
        tokens: 196,
    };
    const DESCRIPTION: &'static str = "Surface normals (RGB PNG, (n + 1) / 2) <-> 4M tok_normal@224 token grids (tokenizer in the host)";
    const ARTIFACT: &'static str = "normal";
}

pub type Normal = ColourPlugin<NormalDomain>;

tessera_sdk::export_plugin!(Normal);
