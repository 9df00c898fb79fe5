//! Errors of core training: bad configs, data or checkpoints are refused before any step, with
//! what and where.

use std::path::PathBuf;

/// Why training could not start or continue.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("the dataset is empty")]
    EmptyDataset,
    #[error("sample {index} of the dataset has no `{domain}`, which the model config asks for")]
    MissingDomain { index: usize, domain: String },
    #[error("unknown domain `{domain}`: not a 4M modality")]
    UnknownDomain { domain: String },
    #[error("domain `{domain}` cannot be trained yet: {reason}")]
    UnsupportedDomain { domain: String, reason: String },
    #[error("sample {index}, domain `{domain}`: {reason}")]
    InvalidSample {
        index: usize,
        domain: String,
        reason: String,
    },
    #[error("invalid training config: `{field}`: {reason}")]
    InvalidConfig { field: String, reason: String },
    #[error("checkpoint {path} was written for another config: {difference}")]
    ConfigMismatch { path: PathBuf, difference: String },
    #[error("checkpoint {path}: {reason}")]
    BadCheckpoint { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("the loss is not finite at step {step}")]
    NonFiniteLoss { step: u64 },
    #[error(transparent)]
    Model(#[from] tessera_model::ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("text serialisation: {0}")]
    Text(String),
    #[error(transparent)]
    World(#[from] tessera_world::WorldError),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
