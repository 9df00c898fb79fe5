//! The 4M image / feature-map tokenizers (`fourm/vq` of apple/ml-4m): VQ-VAEs with a ViT or
//! BottleneckMLP encoder and decoder, the lucid cosine-similarity and Memcodes quantizers, the
//! semseg (class embedding in, logits out) and feature-map (1×1 projection) variants, and the
//! encoder + quantizer of the DiVAEs. Entry point: [`VqTokenizer`].

pub mod bottleneck;
pub mod config;
pub mod decoder;
pub mod encoder;
pub mod nn;
pub mod quantizer;
pub mod tokenizer;

pub use config::{MlpArch, NetworkArch, QuantType, VqConfig};
pub use quantizer::Quantized;
pub use tokenizer::{Decoding, Encoding, VqTokenizer};
