//! tessera-eval: evaluation on the shapes world. Generated modalities are compared with the
//! world's exact ground truth ([`metrics`]), each metric beside a trivial baseline computed from
//! training scenes ([`baseline`]), and collected in a [`report::Report`] that says whether every
//! metric beats its baseline.

pub mod baseline;
pub mod caption_checks;
pub mod metrics;
pub mod report;

pub use baseline::Priors;
pub use metrics::LabelledBox;
pub use report::{Direction, Report, Row};

/// Why a metric could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{what}: expected {expected} values, found {found}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("{what}: nothing to compare (no valid pixels)")]
    NothingToCompare { what: &'static str },
    #[error("no training scenes to compute the baselines from")]
    NoScenes,
    #[error("scene {seed}: {source}")]
    World {
        seed: u64,
        #[source]
        source: tessera_world::WorldError,
    },
}
