//! Pure-Rust text core of tessera's 4M text-sequence plugins: one exact WordPiece tokenizer
//! (parity with the reference HF `tokenizers` on the 4M 30k vocabulary) and the 4M serialisers
//! for the `det`, `metadata` and `color_palette` domains, plus a palette PNG swatch.
//!
//! Everything is OS-free (no files, clock, threads or randomness) so it compiles unchanged for
//! `wasm32-unknown-unknown`. The vocabulary is given as the tokenizer JSON bytes at runtime; all
//! structural ids (specials, sentinels, `v0=`…`v3=`, class names) are derived from that file.

#![warn(missing_docs)]

mod chars;
pub mod det;
pub mod error;
pub mod layout;
mod matcher;
pub mod metadata;
pub mod palette;
mod png;
pub mod stream;
#[cfg(test)]
mod test_support;
pub mod tokenizer;

pub use det::{DetDecoded, DetOptions, DetectionBox};
pub use error::TextError;
pub use layout::{TokenKind, VocabularyLayout};
pub use metadata::{MetadataChunk, MetadataDecoded, MetadataValue};
pub use palette::{PaletteDecoded, Rgb};
pub use stream::SkippedTokens;
pub use tokenizer::TextTokenizer;

#[cfg(feature = "sdk")]
pub mod plugin;
