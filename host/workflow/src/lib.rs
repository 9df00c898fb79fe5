//! Declarative tessera workflows (issue 5, the model-independent half): the versioned TOML format
//! ([`format`]), validation that reports every problem with a stable code and location
//! ([`validate`], [`diagnostic`]), planning on petgraph with step cache keys ([`plan`]), run events
//! ([`events`]) and an executor core that runs independent steps concurrently behind the
//! [`StepRunner`] trait ([`executor`]).

pub mod diagnostic;
pub mod format;
mod parse;
pub mod validate;
pub mod workflow;

pub use diagnostic::{Code, Diagnostic, Severity, SourceFile, render_terminal};
pub use format::{WORKFLOW_VERSION, WorkflowFile, json_schema};
pub use validate::{ValidationContext, ValidationReport, validate_file, validate_source};
pub use workflow::{
    Reference, Step, StepGuidance, StepParameters, WeightedCondition, Workflow, WorkflowInput,
};
pub mod plan;
pub use plan::{
    CacheContext, CacheKey, CacheKeyPart, ExecutionPlan, NotCachedReason, PlanError, PlannedStep,
    cache_keys, plan,
};
pub mod events;
pub mod executor;
pub use events::{EventSink, RunEvent, SkipReason};
pub use executor::{
    BatchedStep, CancellationToken, ExecuteError, ExecuteOptions, MemoryCache, NoCache, RunReport,
    StepCache, StepContext, StepError, StepInputs, StepOutcome, StepRunner, execute,
};
