//! The error type of the generation loops: every refusal names the step, domain or value at fault.

use tessera_model::ModelError;
use tessera_sampler::{SamplerError, Scheme};

/// Everything the generation loops refuse or fail on.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A schedule, state or sampling problem found by tessera-sampler (most are found before any
    /// compute by [`crate::Generator::validate`]).
    #[error(transparent)]
    Sampler(#[from] SamplerError),

    /// The model refused an input or a tensor computation failed.
    #[error(transparent)]
    Model(#[from] ModelError),

    #[error("step {step}: {scheme} step for `{domain}` has no token count")]
    MissingTokenCount {
        step: usize,
        domain: String,
        scheme: Scheme,
    },

    #[error("step {step}: target `{domain}` is not in the generation state")]
    TargetNotInState { step: usize, domain: String },

    #[error(
        "step {step}: target `{domain}` has {found} positions, the model's domain has {expected}"
    )]
    TargetWidthMismatch {
        step: usize,
        domain: String,
        found: usize,
        expected: usize,
    },

    #[error("step {step}: target `{domain}` is also one of its own guidance conditions")]
    TargetIsGuidanceCondition { step: usize, domain: String },

    #[error(
        "step {step}: guidance of `{domain}` has {weights} weights for {conditions} conditional states"
    )]
    GuidanceWeightMismatch {
        step: usize,
        domain: String,
        weights: usize,
        conditions: usize,
    },

    #[error("domain `{domain}` holds {kind} data: give its tensor in the dense inputs")]
    MissingDenseValues { domain: String, kind: &'static str },

    #[error("dense values of `{domain}`: {reason}")]
    InvalidDenseValues { domain: String, reason: String },

    #[error("multi-condition guidance needs at least one conditional state")]
    NoConditionalStates,

    #[error("conditional state {index} has batch size {found}, the unconditional state {expected}")]
    ConditionBatchMismatch {
        index: usize,
        found: usize,
        expected: usize,
    },

    #[error("the generation state is empty")]
    EmptyState,
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, GenerateError>;
