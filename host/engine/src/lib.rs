//! tessera-engine: the real [`StepRunner`](tessera_workflow::StepRunner) of tessera workflows
//! (issue 5). For each step the inputs are tokenized by the plugin serving their domain (or taken
//! as a JSON token list where no plugin serves it), a [`GenerationState`](tessera_sampler::GenerationState)
//! is built (conditions as full inputs, user text in caption-like domains as the reference's
//! `custom_text`, the target empty), the step's schedule runs with tessera-generate on one shared
//! [`FourM`](tessera_model::FourM), and the result is detokenized by the plugin serving the target
//! domain (or delivered as a raw token grid) and written atomically. [`DiskCache`] keeps step
//! results between runs, keyed by the workflow crate's cache keys.

pub mod artifacts;
pub mod cache;
pub mod engine;
pub mod error;
pub mod value;

pub use artifacts::{ArtifactKind, WrittenArtifact};
pub use cache::DiskCache;
pub use engine::{Engine, EngineConfig, EngineRun, ForwardPasses};
pub use error::EngineError;
pub use value::{InputValue, Produced, StepValue};
