//! A validated workflow: references resolved, parameters mapped onto tessera-sampler's types.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};
use tessera_sampler::{
    DomainCatalog, DomainRole, GenerationPlan, GenerationStep, Guidance, SamplerError,
    SamplingOptions, Scheme, TargetSpec, TemperatureSchedule, TokenScheduleKind, TopK,
    prepare_multi_guided_schedule, prepare_schedule,
};

/// A dotted reference to an upstream value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reference {
    /// `inputs.NAME`
    Input(String),
    /// `steps.ID`
    Step(String),
}

/// Why a reference string is not `inputs.NAME` or `steps.ID`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("`{text}` is not a reference; expected `inputs.NAME` or `steps.ID`")]
    NotAReference { text: String },
    #[error("`{name}` in `{text}` is not a valid name: {reason}")]
    BadName {
        text: String,
        name: String,
        reason: IdError,
    },
}

impl Reference {
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        let (kind, name) = text
            .split_once('.')
            .ok_or_else(|| ReferenceError::NotAReference {
                text: text.to_owned(),
            })?;
        let make = match kind {
            "inputs" => Reference::Input,
            "steps" => Reference::Step,
            _ => {
                return Err(ReferenceError::NotAReference {
                    text: text.to_owned(),
                });
            }
        };
        check_id(name).map_err(|reason| ReferenceError::BadName {
            text: text.to_owned(),
            name: name.to_owned(),
            reason,
        })?;
        Ok(make(name.to_owned()))
    }

    pub fn name(&self) -> &str {
        match self {
            Reference::Input(name) | Reference::Step(name) => name,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Input(name) => write!(f, "inputs.{name}"),
            Reference::Step(id) => write!(f, "steps.{id}"),
        }
    }
}

impl Serialize for Reference {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Longest id accepted; ids appear in file names of artifacts and in URLs.
pub const MAX_ID_LENGTH: usize = 64;

/// Why a step id, input or output name is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("it is empty")]
    Empty,
    #[error("it is longer than {MAX_ID_LENGTH} characters")]
    TooLong,
    #[error("it must start with an ASCII letter")]
    BadStart,
    #[error("only ASCII letters, digits, `_` and `-` are allowed")]
    BadCharacter,
}

/// Ids are a letter then letters, digits, `_` or `-`: no dots (references are dotted) and safe
/// as file names.
pub fn check_id(id: &str) -> Result<(), IdError> {
    let first = id.chars().next().ok_or(IdError::Empty)?;
    if id.len() > MAX_ID_LENGTH {
        return Err(IdError::TooLong);
    }
    if !first.is_ascii_alphabetic() {
        return Err(IdError::BadStart);
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(IdError::BadCharacter);
    }
    Ok(())
}

/// A validated workflow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workflow {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub inputs: BTreeMap<String, WorkflowInput>,
    /// In file order.
    pub steps: Vec<Step>,
    pub outputs: BTreeMap<String, Reference>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowInput {
    pub domain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
}

/// One validated step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub id: String,
    /// Target domain.
    pub generate: String,
    pub from: Vec<Reference>,
    /// Domains of `from`, in the same order (what the unconditional guidance pass blanks).
    pub condition_domains: Vec<String>,
    pub parameters: StepParameters,
    /// `false`: never served from or stored in the step cache.
    pub cache: bool,
}

/// Generation parameters of a step, already in tessera-sampler's types.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepParameters {
    #[serde(serialize_with = "serialize_scheme")]
    pub scheme: Scheme,
    /// Ignored by autoregressive steps (1 when not given for them).
    pub decoding_steps: usize,
    #[serde(serialize_with = "serialize_token_schedule")]
    pub token_schedule: TokenScheduleKind,
    pub temperature: f64,
    #[serde(serialize_with = "serialize_temperature_schedule")]
    pub temperature_schedule: TemperatureSchedule,
    pub guidance: StepGuidance,
    #[serde(serialize_with = "serialize_top_k")]
    pub top_k: TopK,
    pub top_p: Option<f64>,
    /// Tokens to generate; `None` takes the domain's token count from the model.
    pub token_budget: Option<usize>,
    /// `None`: the run's seed.
    pub seed: Option<u64>,
}

/// Classifier-free guidance of a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepGuidance {
    Scale(f64),
    Weighted(Vec<WeightedCondition>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightedCondition {
    pub from: Vec<Reference>,
    pub weight: f64,
}

fn serialize_scheme<S: Serializer>(scheme: &Scheme, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(scheme.name())
}

fn serialize_token_schedule<S: Serializer>(
    kind: &TokenScheduleKind,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(match kind {
        TokenScheduleKind::Linear => "linear",
        TokenScheduleKind::Cosine => "cosine",
    })
}

/// The schedule in the sampler's text form (`onex:{min}:{power}`), parseable back.
pub fn temperature_schedule_name(schedule: &TemperatureSchedule) -> String {
    match schedule {
        TemperatureSchedule::Constant => "constant".to_owned(),
        TemperatureSchedule::Linear => "linear".to_owned(),
        TemperatureSchedule::OneOverX {
            min_temperature,
            power,
        } => format!("onex:{min_temperature}:{power}"),
    }
}

fn serialize_temperature_schedule<S: Serializer>(
    schedule: &TemperatureSchedule,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&temperature_schedule_name(schedule))
}

fn serialize_top_k<S: Serializer>(top_k: &TopK, s: S) -> Result<S::Ok, S::Error> {
    match top_k {
        TopK::Disabled | TopK::Count(0) => s.serialize_none(),
        TopK::Count(count) => s.serialize_u64(*count as u64),
        TopK::Fraction(fraction) => s.serialize_f64(*fraction),
    }
}

impl StepParameters {
    pub fn sampling_options(&self) -> SamplingOptions {
        SamplingOptions {
            top_k: self.top_k,
            top_p: self.top_p,
        }
    }

    pub fn sampler_guidance(&self) -> Guidance {
        match &self.guidance {
            StepGuidance::Scale(scale) => Guidance::Scale(*scale),
            StepGuidance::Weighted(sets) => {
                Guidance::Weights(sets.iter().map(|set| set.weight).collect())
            }
        }
    }
}

impl Step {
    /// The sampler plan of this step: one target conditioned on the step's inputs.
    pub fn generation_plan(&self, num_tokens: usize) -> GenerationPlan {
        let parameters = &self.parameters;
        GenerationPlan {
            condition_domains: self.condition_domains.clone(),
            targets: vec![TargetSpec {
                domain: self.generate.clone(),
                scheme: parameters.scheme,
                num_tokens,
                decoding_steps: parameters.decoding_steps,
                token_schedule: parameters.token_schedule,
                temperature: parameters.temperature,
                temperature_schedule: parameters.temperature_schedule,
                guidance: parameters.sampler_guidance(),
            }],
            // One target per step: later targets are other steps, with their own conditions.
            grow_guidance_conditioning: false,
        }
    }

    /// The tokens to generate: the step's budget, else the domain's count in the model.
    pub fn num_tokens(&self, catalog: &DomainCatalog) -> Result<usize, SamplerError> {
        match self.parameters.token_budget {
            Some(budget) => Ok(budget),
            None => Ok(catalog
                .lookup(&self.generate, DomainRole::Target)?
                .num_tokens),
        }
    }

    /// Validates against the model and expands the step into the sampler's step list (what the
    /// generation loop runs).
    pub fn prepare(&self, catalog: &DomainCatalog) -> Result<Vec<GenerationStep>, SamplerError> {
        let plan = self.generation_plan(self.num_tokens(catalog)?);
        let options = self.parameters.sampling_options();
        match &self.parameters.guidance {
            StepGuidance::Scale(_) => prepare_schedule(&plan, catalog, &options),
            StepGuidance::Weighted(sets) => {
                prepare_multi_guided_schedule(&plan, catalog, &options, sets.len())
            }
        }
    }
}

impl Workflow {
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|step| step.id == id)
    }

    /// Domain of a resolved reference.
    pub fn domain_of(&self, reference: &Reference) -> Option<&str> {
        match reference {
            Reference::Input(name) => self.inputs.get(name).map(|input| input.domain.as_str()),
            Reference::Step(id) => self.step(id).map(|step| step.generate.as_str()),
        }
    }
}
