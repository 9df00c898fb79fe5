//! Errors of manifest handling.

use std::path::PathBuf;

/// What went wrong with a manifest, naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: `{field}`: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error(
        "plugin `{plugin}`: component {} has sha256 {found}, but the manifest says {expected}",
        component.display()
    )]
    DigestMismatch {
        plugin: String,
        component: PathBuf,
        expected: String,
        found: String,
    },
    #[error("cannot turn {} into a component: {message}", input.display())]
    Componentize { input: PathBuf, message: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
