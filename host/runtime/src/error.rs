//! Errors of loading and calling plugins. Every variant names the plugin; call errors also name
//! the function and, for limits, the limit.

use crate::types::PluginError;
use std::path::PathBuf;
use tessera_manifest::ManifestError;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("plugin `{plugin}`: cannot read {}: {source}", path.display())]
    Read {
        plugin: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin `{plugin}`: {} is not a valid component: {message}", path.display())]
    Compile {
        plugin: String,
        path: PathBuf,
        message: String,
    },
    #[error("plugin `{plugin}` does not match the host's world {world}: {detail}")]
    WorldMismatch {
        plugin: String,
        world: String,
        detail: String,
    },
    #[error(
        "plugin `{plugin}`: asset `{asset}` not found at {} ({hint})",
        path.display()
    )]
    AssetMissing {
        plugin: String,
        asset: String,
        path: PathBuf,
        hint: String,
    },
    #[error("plugin `{plugin}`: asset `{asset}` ({}) has sha256 {found}, the manifest says {expected}", path.display())]
    AssetDigest {
        plugin: String,
        asset: String,
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error(
        "plugin `{plugin}`: asset override `{asset}` is not declared in its manifest (declared: {declared})"
    )]
    UnknownAsset {
        plugin: String,
        asset: String,
        declared: String,
    },
    #[error("plugin `{plugin}` failed to start: {source}")]
    Start {
        plugin: String,
        #[source]
        source: Box<RuntimeError>,
    },
    #[error(
        "plugin `{plugin}` describes domains {described:?}, but its manifest declares {declared:?}"
    )]
    DomainMismatch {
        plugin: String,
        declared: Vec<String>,
        described: Vec<String>,
    },
    #[error("cannot set up the plugin runtime: {0}")]
    Engine(String),
}

/// Why one call into a plugin failed. The plugin stays usable: a failing instance is replaced.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "plugin `{plugin}`.{function}: exceeded its time limit of {limit_ms} ms and was stopped"
    )]
    Timeout {
        plugin: String,
        function: &'static str,
        limit_ms: u64,
    },
    #[error(
        "plugin `{plugin}`.{function}: exceeded its memory limit of {limit_bytes} bytes (asked for {requested_bytes})"
    )]
    MemoryLimit {
        plugin: String,
        function: &'static str,
        limit_bytes: u64,
        requested_bytes: u64,
    },
    #[error("plugin `{plugin}`.{function}: panicked: {message}")]
    Panic {
        plugin: String,
        function: &'static str,
        message: String,
    },
    #[error("plugin `{plugin}`.{function}: trapped: {message}")]
    Trap {
        plugin: String,
        function: &'static str,
        message: String,
    },
    #[error(
        "plugin `{plugin}`.{function}: input of {size} bytes exceeds the limit of {limit} bytes"
    )]
    InputTooLarge {
        plugin: String,
        function: &'static str,
        size: u64,
        limit: u64,
    },
    #[error(
        "plugin `{plugin}`.{function}: output of {size} bytes exceeds the limit of {limit} bytes"
    )]
    OutputTooLarge {
        plugin: String,
        function: &'static str,
        size: u64,
        limit: u64,
    },
    #[error(
        "plugin `{plugin}`.{function}: {}",
        crate::types::describe_plugin_error(error)
    )]
    Plugin {
        plugin: String,
        function: &'static str,
        error: PluginError,
    },
    #[error("plugin `{plugin}` does not serve domain `{domain}` (it serves {served})")]
    UnknownDomain {
        plugin: String,
        domain: String,
        served: String,
    },
}

impl RuntimeError {
    /// The plugin the error is about.
    pub fn plugin(&self) -> &str {
        match self {
            RuntimeError::Timeout { plugin, .. }
            | RuntimeError::MemoryLimit { plugin, .. }
            | RuntimeError::Panic { plugin, .. }
            | RuntimeError::Trap { plugin, .. }
            | RuntimeError::InputTooLarge { plugin, .. }
            | RuntimeError::OutputTooLarge { plugin, .. }
            | RuntimeError::Plugin { plugin, .. }
            | RuntimeError::UnknownDomain { plugin, .. } => plugin,
        }
    }
}
