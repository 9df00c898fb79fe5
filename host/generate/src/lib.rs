//! tessera-generate: the 4M generation loops (issue 4) on the tessera-model transformer.
//!
//! A [`Generator`] runs a tessera-sampler schedule (a [`GenerationPlan`] validated and expanded by
//! [`Generator::prepare`], or a flat list of [`GenerationStep`]s) over one [`GenerationState`]:
//! ROAR and MaskGIT steps for image-like targets, autoregressive decoding for sequences (with the
//! model's KV cache and the span merge), classifier-free guidance with the conditional and
//! unconditional rows in one batch, multi-condition guidance, reuse of the encoder output when its
//! inputs did not change, and a per-step / per-token progress callback that can cancel.
//! Pixel and embedding inputs, which the state does not hold, come in [`DenseInputs`].
//! [`Generator::run_lockstep`] runs independent generations of the same shape together, their
//! rows sharing every encoder and decoder pass (cross-branch batching of workflows).

pub mod catalog;
pub mod error;
pub mod generator;
pub mod inputs;
pub mod lockstep;

pub use catalog::domain_catalog;
pub use error::{GenerateError, Result};
pub use generator::{
    AutoregressiveMode, Cancelled, Generator, GeneratorOptions, Progress, RunReport, StepReport,
    no_progress,
};
pub use inputs::DenseInputs;
pub use lockstep::{LockstepMember, LockstepReport, lockstep_key};
pub use tessera_sampler::{GenerationPlan, GenerationState, GenerationStep};
