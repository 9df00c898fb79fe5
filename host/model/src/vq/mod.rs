//! The 4M image / feature-map tokenizers (`fourm/vq` of apple/ml-4m): VQ-VAEs with a ViT or
//! BottleneckMLP encoder and decoder, the lucid cosine-similarity and Memcodes quantizers, the
//! semseg (class embedding in, logits out) and feature-map (1×1 projection) variants, and the
//! DiVAEs (the same encoder and quantizer with a patched-UNet diffusion decoder sampled with DDIM).
//! Entry point: [`VqTokenizer`].

pub mod bottleneck;
pub mod config;
pub mod decoder;
pub mod diffusion;
pub mod encoder;
pub mod nn;
pub mod quantizer;
pub mod tokenizer;
pub mod unet;

pub use config::{MlpArch, NetworkArch, QuantType, VqConfig};
pub use diffusion::{DdimScheduler, TimestepSpacing};
pub use quantizer::Quantized;
pub use tokenizer::{Decoding, DiffusionOptions, Encoding, VqTokenizer};
