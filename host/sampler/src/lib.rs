//! The model-independent half of 4M generation for tessera: token and temperature schedules, the
//! chained schedule builder, validation against the model's domains, logit filtering and
//! classifier-free guidance on plain slices, seeded sampling, and the generation state.
//!
//! The generation loops that run the model (tessera-model) build on these pieces: validate and
//! expand a [`GenerationPlan`] with [`prepare_schedule`], keep a [`GenerationState`], guide logits
//! with [`guide`] / [`guide_multi`], sample with [`sample_rows`], pick MaskGIT commits with
//! [`select_most_confident`] or ROAR queries with [`roar_queries`], and merge autoregressive
//! output with [`ModalityState::merged_after_autoregression`].

pub mod error;
pub mod logits;
pub mod plan;
pub mod random;
mod reference_sort;
pub mod sample;
pub mod schedule;
pub mod state;
pub mod step;
pub mod validate;

pub use error::{DomainRole, SamplerError};
pub use logits::{
    SamplingOptions, TopK, argmax_rows, filter_top_k_top_p, guide, guide_multi,
    is_argmax_temperature, softmax_with_temperature,
};
pub use plan::{
    GenerationPlan, GenerationStep, Guidance, Scheme, TargetSpec, build_chained_schedule,
};
pub use random::{RandomSource, RecordedRoarOrders, SeededRandom, roar_queries};
pub use sample::{
    SampledToken, every_row_contains, sample_categorical, sample_rows, select_most_confident,
};
pub use schedule::{
    TemperatureSchedule, TokenScheduleKind, cosine_schedule, linear_schedule,
    linear_temperature_schedule, onex_temperature_schedule,
};
pub use state::{
    AutoregressiveTarget, GenerationState, ModalityRow, ModalityState, merge_span_masking, text_ids,
};
pub use step::{StepCommit, maskgit_commit, roar_commit};
pub use validate::{
    DomainCatalog, DomainInfo, DomainKind, prepare_multi_guided_schedule, prepare_schedule,
    validate_multi_guided_plan, validate_plan, validate_sampling_options,
};
