//! The built-in workflows the server offers by name (the `*.toml` files of its workflows
//! directory), described for clients: inputs with their domains and what kind of value each
//! takes, steps and outputs.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tessera_engine::Engine;
use tessera_sampler::DomainKind;
use tessera_workflow::{ValidationContext, Workflow, validate_source};
use utoipa::ToSchema;

use crate::error::ApiError;

/// The kind of value an input takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// Text (captions, boxes, metadata, palettes as their text form).
    Text,
    /// An uploaded image (PNG or JPEG), tokenized by the domain's plugin.
    Image,
    /// A list of token ids (a domain no plugin tokenizes).
    Tokens,
    /// Not accepted by workflows yet (e.g. T5 embeddings).
    Unsupported,
}

/// How a domain's inputs are given, for this engine.
pub fn input_kind(engine: &Engine, domain: &str) -> InputKind {
    match engine.catalog().get(domain).map(|info| info.kind) {
        Some(DomainKind::Sequence | DomainKind::SequenceToken) => InputKind::Text,
        Some(DomainKind::Image) if engine.plugin_for(domain).is_some() => InputKind::Image,
        Some(DomainKind::Image) => InputKind::Tokens,
        Some(DomainKind::SequenceEmbedding) | None => InputKind::Unsupported,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowInputInfo {
    pub name: String,
    pub domain: String,
    pub kind: InputKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowStepInfo {
    pub id: String,
    pub generate: String,
    pub from: Vec<String>,
}

/// A workflow as listed by the API.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowInfo {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether it validates against the loaded model and plugins.
    pub runnable: bool,
    /// Why it does not, when it does not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    pub inputs: Vec<WorkflowInputInfo>,
    pub steps: Vec<WorkflowStepInfo>,
    pub outputs: Vec<String>,
}

/// A workflow with its TOML source.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowDetail {
    #[serde(flatten)]
    pub info: WorkflowInfo,
    pub source: String,
}

/// The workflows directory.
#[derive(Debug, Clone)]
pub struct WorkflowLibrary {
    dir: PathBuf,
}

/// A workflow name as used in URLs and file names.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl WorkflowLibrary {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Names of the built-in workflows, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|entry| {
                        let path = entry.path();
                        (path.extension()? == "toml")
                            .then(|| path.file_stem()?.to_str().map(str::to_owned))?
                    })
                    .filter(|name| valid_name(name))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The source of a built-in workflow; an unknown name is a 404 listing the known ones.
    pub fn source(&self, name: &str) -> Result<String, ApiError> {
        let unknown = || {
            ApiError::not_found(
                "unknown_workflow",
                format!(
                    "no built-in workflow `{name}` (known: {})",
                    self.names().join(", ")
                ),
            )
        };
        if !valid_name(name) {
            return Err(unknown());
        }
        std::fs::read_to_string(self.dir.join(format!("{name}.toml"))).map_err(|_| unknown())
    }

    /// Describes a workflow for clients, checked against the engine.
    pub fn describe(&self, engine: &Engine, name: &str) -> Result<WorkflowDetail, ApiError> {
        let source = self.source(name)?;
        let served = engine.served_domains();
        let report = validate_source(
            &format!("{name}.toml"),
            &source,
            &ValidationContext {
                catalog: Some(engine.catalog()),
                served_domains: Some(&served),
            },
        );
        let problems: Vec<String> = report
            .diagnostics
            .iter()
            .filter(|d| d.severity == tessera_workflow::Severity::Error)
            .map(|d| d.message.clone())
            .collect();
        let workflow = match &report.workflow {
            Some(workflow) => workflow.clone(),
            None => {
                // Not valid for this model: describe what the structure alone gives.
                let structure = validate_source(
                    &format!("{name}.toml"),
                    &source,
                    &ValidationContext {
                        catalog: None,
                        served_domains: None,
                    },
                );
                structure.workflow.ok_or_else(|| {
                    ApiError::internal(format!("built-in workflow `{name}` does not parse"))
                })?
            }
        };
        Ok(WorkflowDetail {
            info: info(engine, &workflow, problems),
            source,
        })
    }
}

fn info(engine: &Engine, workflow: &Workflow, problems: Vec<String>) -> WorkflowInfo {
    WorkflowInfo {
        name: workflow.name.clone(),
        description: workflow.description.clone(),
        runnable: problems.is_empty(),
        problems,
        inputs: workflow
            .inputs
            .iter()
            .map(|(name, input)| WorkflowInputInfo {
                name: name.clone(),
                domain: input.domain.clone(),
                kind: input_kind(engine, &input.domain),
                description: input.description.clone(),
                default: input.default.clone(),
                example: input.example.clone(),
            })
            .collect(),
        steps: workflow
            .steps
            .iter()
            .map(|step| WorkflowStepInfo {
                id: step.id.clone(),
                generate: step.generate.clone(),
                from: step.from.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        outputs: workflow.outputs.keys().cloned().collect(),
    }
}
