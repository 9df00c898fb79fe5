//! Planning on petgraph: the steps the requested outputs need, in dependency order, grouped into
//! waves that can run concurrently; and the deterministic step cache key.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::workflow::{Reference, Step, Workflow};

/// Why a workflow cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the workflow has no output `{name}`")]
    UnknownOutput { name: String },
    #[error("`{reference}` (needed by `{needed_by}`) names nothing in the workflow")]
    DanglingReference {
        reference: String,
        needed_by: String,
    },
    #[error("steps depend on each other in a cycle through `{step}`")]
    Cycle { step: String },
    #[error("nothing to run: no output requested")]
    NothingRequested,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedStep {
    #[serde(flatten)]
    pub step: Step,
    /// Ids of the steps whose results this step takes.
    pub depends_on: Vec<String>,
    /// Index of the wave (group of concurrently runnable steps) the step belongs to.
    pub wave: usize,
}

/// What a run executes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionPlan {
    pub workflow: String,
    /// The requested outputs.
    pub outputs: BTreeMap<String, Reference>,
    /// Inputs the planned steps or outputs read.
    pub inputs: Vec<String>,
    /// Dependency order: every step after all the steps it depends on; within a wave, file order.
    pub steps: Vec<PlannedStep>,
    /// Steps of each wave: a wave's steps depend only on earlier waves, so they can run together.
    pub waves: Vec<Vec<String>>,
}

impl ExecutionPlan {
    pub fn step(&self, id: &str) -> Option<&PlannedStep> {
        self.steps.iter().find(|planned| planned.step.id == id)
    }
}

/// Plans the steps needed by `requested` outputs (all outputs when `None`).
pub fn plan(workflow: &Workflow, requested: Option<&[String]>) -> Result<ExecutionPlan, PlanError> {
    let outputs: BTreeMap<String, Reference> = match requested {
        None => workflow.outputs.clone(),
        Some(names) => names
            .iter()
            .map(|name| {
                workflow
                    .outputs
                    .get(name)
                    .map(|reference| (name.clone(), reference.clone()))
                    .ok_or_else(|| PlanError::UnknownOutput { name: name.clone() })
            })
            .collect::<Result<_, _>>()?,
    };
    if outputs.is_empty() {
        return Err(PlanError::NothingRequested);
    }
    let index_of: BTreeMap<&str, usize> = workflow
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| (step.id.as_str(), index))
        .collect();
    let resolve = |reference: &Reference, needed_by: &str| -> Result<Option<usize>, PlanError> {
        let dangling = || PlanError::DanglingReference {
            reference: reference.to_string(),
            needed_by: needed_by.to_owned(),
        };
        match reference {
            Reference::Step(id) => index_of
                .get(id.as_str())
                .copied()
                .map(Some)
                .ok_or_else(dangling),
            Reference::Input(name) => workflow.inputs.get(name).map(|_| None).ok_or_else(dangling),
        }
    };

    // Steps the outputs need, transitively.
    let mut needed = BTreeSet::new();
    let mut inputs = BTreeSet::new();
    let mut stack = Vec::new();
    for (name, reference) in &outputs {
        match resolve(reference, &format!("output {name}"))? {
            Some(index) => stack.push(index),
            None => {
                inputs.insert(reference.name().to_owned());
            }
        }
    }
    while let Some(index) = stack.pop() {
        if !needed.insert(index) {
            continue;
        }
        let step = &workflow.steps[index];
        for reference in &step.from {
            match resolve(reference, &step.id)? {
                Some(dependency) => stack.push(dependency),
                None => {
                    inputs.insert(reference.name().to_owned());
                }
            }
        }
    }

    let mut graph: DiGraph<usize, ()> = DiGraph::new();
    let nodes: BTreeMap<usize, NodeIndex> = needed
        .iter()
        .map(|&index| (index, graph.add_node(index)))
        .collect();
    for &index in &needed {
        for reference in &workflow.steps[index].from {
            if let Some(dependency) = resolve(reference, &workflow.steps[index].id)? {
                graph.add_edge(nodes[&dependency], nodes[&index], ());
            }
        }
    }
    let order = petgraph::algo::toposort(&graph, None).map_err(|cycle| PlanError::Cycle {
        step: workflow.steps[graph[cycle.node_id()]].id.clone(),
    })?;
    // A step's wave is one more than its latest dependency's: the earliest it can start.
    let mut wave_of: BTreeMap<usize, usize> = BTreeMap::new();
    for node in order {
        let wave = graph
            .neighbors_directed(node, petgraph::Direction::Incoming)
            .map(|dependency| wave_of[&graph[dependency]] + 1)
            .max()
            .unwrap_or(0);
        wave_of.insert(graph[node], wave);
    }
    let mut ordered: Vec<usize> = needed.iter().copied().collect();
    ordered.sort_by_key(|index| (wave_of[index], *index));
    let wave_count = wave_of.values().max().map_or(0, |max| max + 1);
    let mut waves = vec![Vec::new(); wave_count];
    let steps = ordered
        .iter()
        .map(|&index| {
            let step = workflow.steps[index].clone();
            let wave = wave_of[&index];
            waves[wave].push(step.id.clone());
            let depends_on = step
                .from
                .iter()
                .filter_map(|reference| match reference {
                    Reference::Step(id) => Some(id.clone()),
                    Reference::Input(_) => None,
                })
                .collect();
            PlannedStep {
                step,
                depends_on,
                wave,
            }
        })
        .collect();
    Ok(ExecutionPlan {
        workflow: workflow.name.clone(),
        outputs,
        inputs: inputs.into_iter().collect(),
        steps,
        waves,
    })
}

/// Everything outside the workflow that determines a step's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheContext {
    /// Identifies the model weights (e.g. a digest of the checkpoint).
    pub model_id: String,
    /// Plugin digest per domain it serves.
    pub plugin_digests: BTreeMap<String, String>,
    /// Digest of each input value of the run.
    pub input_digests: BTreeMap<String, String>,
    /// Seed of steps that do not set their own.
    pub run_seed: u64,
    /// `--no-cache`: nothing is served from or stored in the cache.
    pub no_cache: bool,
}

/// One component of a cache key, to say what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheKeyPart {
    Model,
    Plugins,
    Inputs,
    Parameters,
    Seed,
}

/// A step's cache key: the digest of its parts, and the parts' own digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheKey {
    /// Hex SHA-256 over all parts.
    pub digest: String,
    pub model: String,
    pub plugins: String,
    pub inputs: String,
    pub parameters: String,
    pub seed: u64,
}

impl CacheKey {
    /// The parts that differ from an earlier key of the same step.
    pub fn changed_parts(&self, earlier: &CacheKey) -> Vec<CacheKeyPart> {
        let mut changed = Vec::new();
        if self.model != earlier.model {
            changed.push(CacheKeyPart::Model);
        }
        if self.plugins != earlier.plugins {
            changed.push(CacheKeyPart::Plugins);
        }
        if self.inputs != earlier.inputs {
            changed.push(CacheKeyPart::Inputs);
        }
        if self.parameters != earlier.parameters {
            changed.push(CacheKeyPart::Parameters);
        }
        if self.seed != earlier.seed {
            changed.push(CacheKeyPart::Seed);
        }
        changed
    }
}

fn hex_digest(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed so that different splits of the same bytes hash differently.
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Cache keys of every planned step. A step's inputs part covers its input values' digests and
/// its upstream steps' keys, so a change anywhere upstream changes every key below it.
pub fn cache_keys(plan: &ExecutionPlan, context: &CacheContext) -> BTreeMap<String, CacheKey> {
    let mut keys: BTreeMap<String, CacheKey> = BTreeMap::new();
    for planned in &plan.steps {
        let step = &planned.step;
        let model = hex_digest(&[context.model_id.as_bytes()]);
        // Plugins that touch this step's result: those tokenizing its workflow inputs and the
        // one detokenizing its target. Upstream steps hand over tokens, covered by their keys.
        let mut domains: BTreeSet<&str> = step
            .from
            .iter()
            .zip(&step.condition_domains)
            .filter(|(reference, _)| matches!(reference, Reference::Input(_)))
            .map(|(_, domain)| domain.as_str())
            .collect();
        domains.insert(&step.generate);
        let plugin_entries: Vec<String> = domains
            .iter()
            .map(|domain| {
                let digest = context
                    .plugin_digests
                    .get(*domain)
                    .map_or("none", String::as_str);
                format!("{domain}={digest}")
            })
            .collect();
        let plugins = hex_digest(
            &plugin_entries
                .iter()
                .map(|e| e.as_bytes())
                .collect::<Vec<_>>(),
        );
        let input_entries: Vec<String> = step
            .from
            .iter()
            .map(|reference| {
                let digest = match reference {
                    Reference::Input(name) => context
                        .input_digests
                        .get(name)
                        .map_or("missing", String::as_str),
                    // Steps come in dependency order, so upstream keys exist.
                    Reference::Step(id) => keys.get(id).map_or("missing", |key| &key.digest),
                };
                format!("{reference}={digest}")
            })
            .collect();
        let inputs = hex_digest(
            &input_entries
                .iter()
                .map(|e| e.as_bytes())
                .collect::<Vec<_>>(),
        );
        let mut description = step.parameters.clone();
        // The seed is its own part; the id and the `cache` flag do not change the result.
        description.seed = None;
        let parameters_json = serde_json::json!({
            "generate": step.generate,
            "condition_domains": step.condition_domains,
            "parameters": description,
        })
        .to_string();
        let parameters = hex_digest(&[parameters_json.as_bytes()]);
        let seed = step.parameters.seed.unwrap_or(context.run_seed);
        let digest = hex_digest(&[
            model.as_bytes(),
            plugins.as_bytes(),
            inputs.as_bytes(),
            parameters.as_bytes(),
            &seed.to_le_bytes(),
        ]);
        keys.insert(
            step.id.clone(),
            CacheKey {
                digest,
                model,
                plugins,
                inputs,
                parameters,
                seed,
            },
        );
    }
    keys
}

/// Why a step's result was not taken from the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NotCachedReason {
    /// `cache = false` on the step.
    StepOptedOut,
    /// `--no-cache` for the run.
    RunOptedOut,
    /// The step never ran with a cache before.
    FirstRun,
    /// Parts of the key differ from the step's last cached key.
    Changed { parts: Vec<CacheKeyPart> },
    /// The key is unchanged but its entry is gone (evicted or deleted).
    Evicted,
}

impl NotCachedReason {
    /// Whether the cache may be consulted and written for this step at all.
    pub fn cache_enabled(step: &Step, context: &CacheContext) -> Result<(), NotCachedReason> {
        if !step.cache {
            Err(NotCachedReason::StepOptedOut)
        } else if context.no_cache {
            Err(NotCachedReason::RunOptedOut)
        } else {
            Ok(())
        }
    }

    /// The reason for a miss, from the step's last stored key.
    pub fn for_miss(key: &CacheKey, previous: Option<&CacheKey>) -> NotCachedReason {
        match previous {
            None => NotCachedReason::FirstRun,
            Some(previous) => {
                let parts = key.changed_parts(previous);
                if parts.is_empty() {
                    NotCachedReason::Evicted
                } else {
                    NotCachedReason::Changed { parts }
                }
            }
        }
    }
}
