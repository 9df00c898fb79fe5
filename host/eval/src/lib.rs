//! tessera-eval: evaluation on the shapes world. Generated modalities are compared with the
//! world's exact ground truth ([`metrics`]), each metric beside a trivial baseline computed from
//! training scenes ([`baseline`]), and collected in a [`report::Report`] that says whether every
//! metric beats its baseline clearly, by a margin that survives resampling the scenes
//! ([`evidence`]).

pub mod baseline;
pub mod caption_checks;
pub mod evidence;
pub mod metrics;
pub mod report;

pub use baseline::Priors;
pub use evidence::{SceneScore, SceneScores};
pub use metrics::{ClassOverlap, LabelledBox};
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
    #[error("a metric was given per-scene scores of two different kinds")]
    MixedScores,
    #[error("no training scenes to compute the baselines from")]
    NoScenes,
    #[error("scene {seed}: {source}")]
    World {
        seed: u64,
        #[source]
        source: tessera_world::WorldError,
    },
}
