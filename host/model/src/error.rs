//! Error type of the crate: every failure names what was wrong and where.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, ModelError>;

/// Everything that can go wrong while loading a checkpoint or running the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not a valid safetensors file: {reason}")]
    InvalidSafetensors { path: PathBuf, reason: String },

    #[error(
        "{path} is truncated: the header promises {expected_bytes} bytes, the file has {found_bytes}"
    )]
    TruncatedFile {
        path: PathBuf,
        expected_bytes: u64,
        found_bytes: u64,
    },

    #[error("no model config: {reason}")]
    MissingConfig { reason: String },

    #[error("config field `{field}` is invalid: {reason}")]
    InvalidConfig { field: String, reason: String },

    #[error("config uses `{feature}`, which this implementation does not support")]
    UnsupportedConfig { feature: String },

    #[error("unknown modality `{domain}` (not a 4M domain)")]
    UnknownDomain { domain: String },

    #[error("checkpoint is missing tensor `{name}` (expected shape {expected})")]
    MissingTensor { name: String, expected: String },

    #[error("checkpoint has unexpected tensors: {names:?}")]
    UnexpectedTensors { names: Vec<String> },

    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error(
        "tensor `{name}` has dtype {found}, expected a floating-point dtype (F32, BF16 or F16)"
    )]
    UnsupportedTensorDtype { name: String, found: String },

    #[error(
        "stored sin-cos table `{name}` differs from the computed one by {max_abs_diff} (tolerance {tolerance})"
    )]
    PositionalTableMismatch {
        name: String,
        max_abs_diff: f32,
        tolerance: f32,
    },

    #[error("domain `{domain}` is not an encoder input of this model")]
    NotAnEncoderDomain { domain: String },

    #[error("domain `{domain}` is not a decoder target of this model")]
    NotADecoderDomain { domain: String },

    #[error("invalid input for `{domain}`: {reason}")]
    InvalidInput { domain: String, reason: String },

    #[error("token id {id} of `{domain}` is out of range (vocabulary size {vocab_size})")]
    TokenOutOfRange {
        domain: String,
        id: i64,
        vocab_size: usize,
    },

    #[error("batch size mismatch: {what} has {found} rows, expected {expected}")]
    BatchMismatch {
        what: String,
        expected: usize,
        found: usize,
    },

    #[error("device `{requested}` is not available: {reason}")]
    DeviceUnavailable { requested: String, reason: String },

    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}
