//! Errors of the engine: loading the model and plugins, tokenizing, generating, writing.

use std::path::PathBuf;

/// What went wrong while setting up the engine or running a step.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("loading the model from {path}: {source}")]
    Model {
        path: PathBuf,
        #[source]
        source: Box<tessera_model::ModelError>,
    },
    #[error("loading the tokenizers: {0}")]
    Tokenizers(#[source] Box<tessera_nn::TokenizerGraphError>),
    #[error("starting the plugin runtime: {0}")]
    Runtime(#[source] Box<tessera_runtime::LoadError>),
    #[error("reading plugins directory {path}: {source}")]
    PluginsDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin `{plugin}` on `{domain}`: {source}")]
    Plugin {
        plugin: String,
        domain: String,
        #[source]
        source: Box<tessera_runtime::RuntimeError>,
    },
    #[error("input for `{domain}`: {reason}")]
    BadInput { domain: String, reason: String },
    #[error("{reference}: {source}")]
    Condition {
        reference: String,
        #[source]
        source: Box<EngineError>,
    },
    #[error("the model has no domain `{domain}`")]
    UnknownDomain { domain: String },
    #[error(transparent)]
    Sampler(#[from] tessera_sampler::SamplerError),
    #[error(transparent)]
    Generate(#[from] tessera_generate::GenerateError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding {what}: {reason}")]
    Encode { what: String, reason: String },
}

impl EngineError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
