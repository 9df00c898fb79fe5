//! tessera-model: the 4M any-to-any transformer core on candle.
//!
//! Loads released 4M / 4M-21 checkpoints (`config.json` + `model.safetensors`, or a bare
//! `.safetensors` with the config in its header metadata), embeds every kind of 4M domain,
//! runs the encoder once per set of inputs and the decoder for any number of query sets against
//! that context, with a KV cache for causal decoding of sequence domains. The [`vq`] module holds
//! the 4M image / feature-map tokenizers (VQ-VAE encoders, quantizers, decoders). See the crate README.

pub mod checkpoint;
pub mod config;
pub mod embeddings;
pub mod error;
pub mod fused;
pub mod inspect;
pub mod layers;
pub mod modality;
pub mod model;
pub mod posemb;
pub mod save;
pub mod small_rows;
pub mod vq;

pub use checkpoint::{ParameterInit, Parameters};
pub use config::{Activation, ModelConfig};
pub use error::{ModelError, Result};
pub use inspect::{CheckpointSummary, inspect};
pub use modality::{MODALITIES, ModalityInfo, ModalityKind, modality_info};
pub use model::{
    DecoderCache, DecoderOutput, DomainState, DomainValues, EncodedContext, EncoderInput, FourM,
    LoadOptions, Mask, MaskedTargetOutput, QueryContent, QuerySet, select_device,
};
pub use save::{StoredDtype, convert_checkpoint, save_checkpoint};
pub use vq::{VqConfig, VqTokenizer};
