//! The [`Engine`]: one loaded 4M core and the plugins serving its domains, running workflow steps
//! as a [`StepRunner`].

use std::collections::BTreeMap;
use std::io::Read;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sha2::{Digest, Sha256};
use tessera_generate::{
    DenseInputs, GenerationPlan, GenerationStep, Generator, GeneratorOptions, LockstepMember,
    Progress, domain_catalog, lockstep_key,
};
use tessera_model::FourM;
use tessera_nn::TokenizerGraphs;
use tessera_runtime::types::Tokens;
use tessera_runtime::{LoadOptions, Plugin, Runtime, RuntimeConfig};
use tessera_sampler::{
    DomainCatalog, DomainInfo, DomainKind, DomainRole, GenerationState, ModalityState,
    SeededRandom, text_ids,
};
use tessera_workflow::{
    BatchedStep, CacheContext, PlannedStep, Reference, StepContext, StepError, StepGuidance,
    StepInputs, StepRunner,
};

use crate::artifacts::{encode_detokenized, encode_raw_tokens, write_files};
use crate::error::EngineError;
use crate::value::{InputValue, Produced, StepValue};

/// Length of the span a caption-like text input leaves to complete (the reference's
/// `custom_text` default `target_max_len`).
const CUSTOM_TEXT_SPAN: usize = 50;

/// Where the engine finds its parts.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A 4M checkpoint: a directory with `config.json` + `model.safetensors`, or a `.safetensors`.
    pub model: PathBuf,
    /// Installed plugins (e.g. `target/plugins`).
    pub plugins_dir: PathBuf,
    /// Step artifacts go to `out_dir/<step id>/`.
    pub out_dir: PathBuf,
    /// Asset files replacing the plugins' manifest paths, by asset name (e.g. `vocab`), for every
    /// plugin that declares an asset of that name.
    pub asset_overrides: BTreeMap<String, PathBuf>,
    /// 4M tokenizer checkpoints by domain (`tok_rgb@224` → directory), offered to plugins as the
    /// `host-nn` graphs `<domain>/encode` and `<domain>/decode` (see tessera-nn).
    pub tokenizers: BTreeMap<String, PathBuf>,
}

/// The real step runner: plugins tokenize and detokenize, one shared [`FourM`] generates.
pub struct Engine {
    model: FourM,
    model_id: String,
    catalog: DomainCatalog,
    plugins: Vec<Plugin>,
    /// Domain → index into `plugins`.
    serving: BTreeMap<String, usize>,
    /// Domains whose plugin is installed but failed to load, with the reason.
    unavailable: BTreeMap<String, String>,
    /// Things to tell the user about the loaded parts (e.g. a vocabulary that does not fit).
    warnings: Vec<String>,
    out_dir: PathBuf,
    /// Whether same-shaped ready steps share forward passes (see [`Engine::set_batching`]).
    batching: AtomicBool,
    /// Encoder and decoder passes run on the model, and those that served several steps.
    passes: AtomicUsize,
    shared_passes: AtomicUsize,
    // Keeps the epoch ticker alive while plugins are used; dropped last.
    _runtime: Runtime,
}

/// Forward passes the engine has run on its model since it was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForwardPasses {
    /// Encoder and decoder passes, a pass shared by several steps counted once.
    pub total: usize,
    /// Of those, the passes whose batch held the rows of more than one step.
    pub shared: usize,
}

/// A step ready to generate: its target's description, schedule and generation state(s).
struct Prepared {
    info: DomainInfo,
    schedule: Vec<GenerationStep>,
    job: Job,
}

enum Job {
    /// One state (with classifier-free guidance on its conditions, or none).
    Single { state: GenerationState },
    /// Multi-condition guidance: the unconditional state holds the target.
    Multi {
        unconditional: GenerationState,
        conditional: Vec<GenerationState>,
        plan: GenerationPlan,
    },
}

/// How a step ended inside the engine.
enum Halt {
    Cancelled,
    Failed(EngineError),
}

impl From<EngineError> for Halt {
    fn from(error: EngineError) -> Self {
        Halt::Failed(error)
    }
}

impl From<tessera_sampler::SamplerError> for Halt {
    fn from(error: tessera_sampler::SamplerError) -> Self {
        Halt::Failed(error.into())
    }
}

impl Engine {
    /// Loads the model and every installed plugin serving one of its domains. A plugin that
    /// fails to load, or whose `[nn]` host graphs are not registered (an image plugin without its
    /// tokenizer), is remembered, so steps that need it fail with the reason; its generated tokens
    /// are delivered as raw grids.
    pub fn load(config: &EngineConfig) -> Result<Self, EngineError> {
        let model = FourM::load(&config.model, &tessera_model::LoadOptions::default()).map_err(
            |source| EngineError::Model {
                path: config.model.clone(),
                source: Box::new(source),
            },
        )?;
        let model_id = model_digest(&config.model)?;
        let catalog = domain_catalog(&model);
        let graphs =
            TokenizerGraphs::load(&config.tokenizers, &tessera_model::LoadOptions::default())
                .map_err(|e| EngineError::Tokenizers(Box::new(e)))?;
        let registered: std::collections::BTreeSet<String> =
            tessera_runtime::GraphRegistry::names(&graphs)
                .into_iter()
                .collect();
        let codebooks: BTreeMap<String, usize> = config
            .tokenizers
            .keys()
            .filter_map(|domain| {
                let size = graphs.tokenizer(domain)?.codebook_size();
                Some((domain.clone(), size))
            })
            .collect();
        let runtime = Runtime::new(RuntimeConfig {
            graphs: Arc::new(graphs),
            ..RuntimeConfig::default()
        })
        .map_err(|e| EngineError::Runtime(Box::new(e)))?;
        let found = tessera_runtime::discover(&config.plugins_dir).map_err(|source| {
            EngineError::PluginsDir {
                path: config.plugins_dir.clone(),
                source,
            }
        })?;
        let mut plugins = Vec::new();
        let mut serving = BTreeMap::new();
        let mut unavailable = BTreeMap::new();
        let mut warnings = Vec::new();
        for entry in found {
            let Ok(manifest) = entry.manifest else {
                continue;
            };
            let domains: Vec<String> = manifest
                .plugin
                .domains
                .iter()
                .filter(|d| catalog.get(d).is_some() && !serving.contains_key(*d))
                .cloned()
                .collect();
            if domains.is_empty() {
                continue;
            }
            // A plugin whose host networks are not registered (an image plugin without its
            // `--tokenizer`) does not serve its domains: generated tokens stay raw grids.
            let missing: Vec<&str> = manifest
                .nn
                .allow
                .iter()
                .filter(|name| !registered.contains(*name))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                tracing::info!(plugin = %manifest.plugin.id, ?missing, "plugin skipped: host graphs not registered");
                for domain in domains {
                    unavailable.insert(
                        domain.clone(),
                        format!(
                            "plugin `{}` needs the host graphs {} (register the tokenizer with --tokenizer {domain}=DIR)",
                            manifest.plugin.id,
                            missing.join(", ")
                        ),
                    );
                }
                continue;
            }
            // An override applies to the plugins declaring that asset (the text plugins' `vocab`),
            // not to every plugin: the runtime refuses overrides of undeclared assets.
            let options = LoadOptions {
                asset_overrides: config
                    .asset_overrides
                    .iter()
                    .filter(|(name, _)| manifest.assets.contains_key(*name))
                    .map(|(name, path)| (name.clone(), path.clone()))
                    .collect(),
            };
            match runtime.load(&entry.manifest_path, &options) {
                Ok(plugin) => {
                    warnings.extend(vocabulary_mismatches(&model, &plugin, &domains, &codebooks));
                    for domain in domains {
                        unavailable.remove(&domain);
                        serving.insert(domain, plugins.len());
                    }
                    plugins.push(plugin);
                }
                Err(error) => {
                    tracing::warn!(plugin = %manifest.plugin.id, %error, "plugin not loaded");
                    for domain in domains {
                        unavailable.insert(
                            domain,
                            format!("plugin `{}` failed to load: {error}", manifest.plugin.id),
                        );
                    }
                }
            }
        }
        Ok(Self {
            model,
            model_id,
            catalog,
            plugins,
            serving,
            unavailable,
            warnings,
            out_dir: config.out_dir.clone(),
            batching: AtomicBool::new(true),
            passes: AtomicUsize::new(0),
            shared_passes: AtomicUsize::new(0),
            _runtime: runtime,
        })
    }

    pub fn model(&self) -> &FourM {
        &self.model
    }

    /// The model's domains as the sampler and the workflow validator see them.
    pub fn catalog(&self) -> &DomainCatalog {
        &self.catalog
    }

    /// Domains a loaded plugin serves.
    pub fn served_domains(&self) -> std::collections::BTreeSet<String> {
        self.serving.keys().cloned().collect()
    }

    /// What the user should know about the loaded parts, e.g. a plugin vocabulary whose size
    /// differs from the model's (the wrong `--vocab` for this model).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The loaded plugins.
    pub fn plugins(&self) -> &[Plugin] {
        &self.plugins
    }

    /// Domains whose plugin is installed but failed to load, with the reason.
    pub fn unavailable_domains(&self) -> &BTreeMap<String, String> {
        &self.unavailable
    }

    /// The plugin serving `domain`, if one loaded.
    pub fn plugin_for(&self, domain: &str) -> Option<&Plugin> {
        self.serving.get(domain).map(|&index| &self.plugins[index])
    }

    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Turns cross-step batching on (the default) or off. On, steps of a run that are ready at
    /// the same time and generate with the same shape (MaskGIT / ROAR with the same token
    /// schedule, targets of the same token count, the same top-k / top-p, classifier-free or no
    /// guidance) run in lockstep, their rows in the same encoder and decoder passes; the tokens
    /// are those of running them one by one. Off, every step runs alone (for comparisons).
    pub fn set_batching(&self, on: bool) {
        self.batching.store(on, Ordering::Relaxed);
    }

    /// Forward passes run so far (shared ones counted once).
    pub fn forward_passes(&self) -> ForwardPasses {
        ForwardPasses {
            total: self.passes.load(Ordering::Relaxed),
            shared: self.shared_passes.load(Ordering::Relaxed),
        }
    }

    /// The batch key of a step: its lockstep shape and sampling options, or `None` when it always
    /// runs alone (autoregressive, multi-condition guidance, batching off, an invalid schedule).
    fn batch_key_of(&self, planned: &PlannedStep) -> Option<String> {
        if !self.batching.load(Ordering::Relaxed) {
            return None;
        }
        let step = &planned.step;
        if !matches!(step.parameters.guidance, StepGuidance::Scale(_)) {
            return None;
        }
        let schedule = step.prepare(&self.catalog).ok()?;
        let shape = lockstep_key(&schedule, &self.catalog)?;
        Some(format!("{shape}|{:?}", step.parameters.sampling_options()))
    }

    /// Runs steps of one batch key: each prepared on its own (a bad input fails only its step),
    /// generated together, detokenized and written on its own.
    fn run_batch_in(
        &self,
        out_dir: &Path,
        steps: &[BatchedStep<'_, StepValue>],
    ) -> Vec<Result<StepValue, StepError>> {
        let planned: Vec<&PlannedStep> = steps.iter().map(|s| s.step).collect();
        let contexts: Vec<&StepContext> = steps.iter().map(|s| s.context).collect();
        let mut prepared: Vec<Result<Prepared, Halt>> = steps
            .iter()
            .map(|s| self.prepare(s.step, s.inputs, s.context))
            .collect();
        self.generate_together(&planned, &mut prepared, &contexts);
        prepared
            .into_iter()
            .zip(steps)
            .map(|(prepared, s)| {
                run_halting(
                    prepared
                        .and_then(|prepared| self.finish(out_dir, s.step, &prepared, s.context)),
                )
            })
            .collect()
    }

    /// The cache context of a run: model digest, plugin digests per domain, input digests.
    pub fn cache_context(
        &self,
        inputs: &BTreeMap<String, StepValue>,
        run_seed: u64,
        no_cache: bool,
    ) -> CacheContext {
        let plugin_digests = self
            .serving
            .iter()
            .map(|(domain, &index)| (domain.clone(), self.plugins[index].digest().to_hex()))
            .collect();
        let input_digests = inputs
            .iter()
            .map(|(name, value)| {
                let mut hasher = Sha256::new();
                hasher.update(value.domain().as_bytes());
                hasher.update([0]);
                match value {
                    StepValue::Input { value, .. } => hasher.update(value.identity()),
                    StepValue::Produced(produced) => {
                        for id in &produced.ids {
                            hasher.update(id.to_le_bytes());
                        }
                    }
                }
                (name.clone(), hex(&hasher.finalize()))
            })
            .collect();
        CacheContext {
            model_id: self.model_id.clone(),
            plugin_digests,
            input_digests,
            run_seed,
            no_cache,
        }
    }

    /// Token ids of a value of `domain`, checked against the model's vocabulary.
    fn tokens_of(&self, value: &StepValue) -> Result<Vec<u32>, EngineError> {
        let domain = value.domain();
        let ids = match value {
            StepValue::Produced(produced) => produced.ids.clone(),
            StepValue::Input { value, .. } => match (self.plugin_for(domain), value.as_ref()) {
                (Some(plugin), input) if input.to_plugin_value().is_some() => {
                    let plugin_value = input.to_plugin_value().unwrap_or_else(|| unreachable!());
                    plugin
                        .tokenize(domain, &plugin_value, &Vec::new())
                        .map_err(|source| EngineError::Plugin {
                            plugin: plugin.id().to_owned(),
                            domain: domain.to_owned(),
                            source: Box::new(source),
                        })?
                        .ids
                }
                (None, InputValue::Text(_) | InputValue::Image { .. })
                    if self.unavailable.contains_key(domain) =>
                {
                    return Err(EngineError::BadInput {
                        domain: domain.to_owned(),
                        reason: self.unavailable[domain].clone(),
                    });
                }
                (_, input) => input.as_token_list(domain)?,
            },
        };
        if let Some(vocab) = self.model.vocab_size(domain)
            && let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab)
        {
            return Err(EngineError::BadInput {
                domain: domain.to_owned(),
                reason: format!(
                    "token id {bad} is outside the model's vocabulary of {vocab} for this domain"
                ),
            });
        }
        Ok(ids)
    }

    /// The state of one condition.
    fn condition_state(&self, value: &StepValue) -> Result<ModalityState, EngineError> {
        let domain = value.domain();
        let info = self
            .catalog
            .lookup(domain, DomainRole::State)
            .map_err(EngineError::from)?;
        let ids = self.tokens_of(value)?;
        let bad = |reason: String| EngineError::BadInput {
            domain: domain.to_owned(),
            reason,
        };
        match info.kind {
            DomainKind::Sequence | DomainKind::SequenceToken => {
                if ids.is_empty() {
                    return Ok(ModalityState::full_input_sequence(vec![vec![
                        text_ids::PAD,
                    ]])?);
                }
                if ids.len() > info.num_tokens {
                    return Err(bad(format!(
                        "{} tokens, the model takes at most {}",
                        ids.len(),
                        info.num_tokens
                    )));
                }
                match value {
                    // User text is the reference's `custom_text`: the text is input, followed by
                    // a span `[S_1] [PAD].. [EOS]` that is not generated in this step.
                    StepValue::Input { .. } => {
                        let span = CUSTOM_TEXT_SPAN.min(info.num_tokens - ids.len());
                        if span < 2 {
                            Ok(ModalityState::full_input_image_like(vec![ids])?)
                        } else {
                            Ok(ModalityState::custom_text(
                                &ids,
                                text_ids::S1,
                                text_ids::EOS,
                                span,
                            ))
                        }
                    }
                    // A generated sequence is input as a whole, as after the reference's merge.
                    StepValue::Produced(_) => Ok(ModalityState::full_input_image_like(vec![ids])?),
                }
            }
            DomainKind::Image => {
                if ids.len() != info.num_tokens {
                    return Err(bad(format!(
                        "{} tokens, the model's grid has {}",
                        ids.len(),
                        info.num_tokens
                    )));
                }
                Ok(ModalityState::full_input_image_like(vec![ids])?)
            }
            DomainKind::SequenceEmbedding => Err(bad(
                "embedding inputs (e.g. T5 caption embeddings) are not supported by workflows yet"
                    .into(),
            )),
        }
    }

    fn run(
        &self,
        out_dir: &Path,
        planned: &PlannedStep,
        inputs: &StepInputs<StepValue>,
        context: &StepContext,
    ) -> Result<StepValue, Halt> {
        let mut prepared = self.prepare(planned, inputs, context)?;
        self.generate_alone(planned, &mut prepared, context)?;
        self.finish(out_dir, planned, &prepared, context)
    }

    /// Tokenizes a step's conditions and builds its generation state(s) and schedule.
    fn prepare(
        &self,
        planned: &PlannedStep,
        inputs: &StepInputs<StepValue>,
        context: &StepContext,
    ) -> Result<Prepared, Halt> {
        let step = &planned.step;
        let target = step.generate.as_str();
        let info = self
            .catalog
            .lookup(target, DomainRole::Target)
            .map_err(EngineError::from)?
            .clone();
        let num_tokens = step.num_tokens(&self.catalog).map_err(EngineError::from)?;
        let schedule = step.prepare(&self.catalog).map_err(EngineError::from)?;

        let mut conditions: Vec<(&Reference, String, ModalityState)> = Vec::new();
        for (reference, value) in &inputs.values {
            if context.is_cancelled() {
                return Err(Halt::Cancelled);
            }
            let state = self
                .condition_state(value)
                .map_err(|error| EngineError::Condition {
                    reference: reference.to_string(),
                    source: Box::new(error),
                })?;
            conditions.push((reference, value.domain().to_owned(), state));
        }
        let target_state = match info.kind {
            DomainKind::Image => ModalityState::empty_image_target(1, num_tokens)?,
            DomainKind::Sequence | DomainKind::SequenceToken => {
                ModalityState::empty_sequence_target(1, num_tokens)?
            }
            DomainKind::SequenceEmbedding => {
                return Err(EngineError::BadInput {
                    domain: target.to_owned(),
                    reason: "embedding domains cannot be generated".into(),
                }
                .into());
            }
        };
        let state_of = |references: &[Reference]| -> Result<GenerationState, EngineError> {
            let mut state = GenerationState::new();
            for reference in references {
                if let Some((_, domain, modality)) = conditions
                    .iter()
                    .find(|(candidate, _, _)| *candidate == reference)
                {
                    if state.get(domain).is_some() {
                        return Err(EngineError::BadInput {
                            domain: domain.clone(),
                            reason: format!(
                                "a step takes one value per domain ({reference} is a second)"
                            ),
                        });
                    }
                    state.insert(domain.clone(), modality.clone())?;
                }
            }
            Ok(state)
        };
        let job = match &step.parameters.guidance {
            StepGuidance::Scale(_) => {
                let mut state = state_of(&step.from)?;
                state.insert(target.to_owned(), target_state)?;
                Job::Single { state }
            }
            StepGuidance::Weighted(sets) => {
                let mut unconditional = GenerationState::new();
                unconditional.insert(target.to_owned(), target_state.clone())?;
                let mut conditional = Vec::with_capacity(sets.len());
                for set in sets {
                    let mut state = state_of(&set.from)?;
                    state.insert(target.to_owned(), target_state.clone())?;
                    conditional.push(state);
                }
                Job::Multi {
                    unconditional,
                    conditional,
                    plan: step.generation_plan(num_tokens),
                }
            }
        };
        Ok(Prepared {
            info,
            schedule,
            job,
        })
    }

    /// Generates one prepared step on its own.
    fn generate_alone(
        &self,
        planned: &PlannedStep,
        prepared: &mut Prepared,
        context: &StepContext,
    ) -> Result<(), Halt> {
        let generator = Generator::with_options(
            &self.model,
            GeneratorOptions {
                sampling: planned.step.parameters.sampling_options(),
                ..GeneratorOptions::default()
            },
        );
        let mut rng = SeededRandom::new(context.seed());
        let mut progress = progress_reporter(context, prepared.schedule.len());
        let dense = DenseInputs::new();
        let report = match &mut prepared.job {
            Job::Single { state } => generator
                .run_steps(&prepared.schedule, state, &dense, &mut rng, &mut progress)
                .map_err(EngineError::from)?,
            Job::Multi {
                unconditional,
                conditional,
                plan,
            } => generator
                .generate_multi_guided(
                    plan,
                    unconditional,
                    std::mem::take(conditional),
                    &dense,
                    &mut rng,
                    &mut progress,
                )
                .map_err(EngineError::from)?,
        };
        self.passes
            .fetch_add(report.encoder_runs + report.decoder_runs, Ordering::Relaxed);
        if report.cancelled.is_some() || context.is_cancelled() {
            return Err(Halt::Cancelled);
        }
        Ok(())
    }

    /// Generates prepared steps of one batch key in lockstep ([`Generator::run_lockstep`]): their
    /// rows share every encoder and decoder pass; each keeps its own seed, progress and result.
    fn generate_together(
        &self,
        planned: &[&PlannedStep],
        prepared: &mut [Result<Prepared, Halt>],
        contexts: &[&StepContext],
    ) {
        let Some(first) = planned.first() else {
            return;
        };
        // The batch key includes the sampling options, so they are the same for every member.
        let generator = Generator::with_options(
            &self.model,
            GeneratorOptions {
                sampling: first.step.parameters.sampling_options(),
                ..GeneratorOptions::default()
            },
        );
        let dense = DenseInputs::new();
        let mut rngs: Vec<SeededRandom> = contexts
            .iter()
            .map(|context| SeededRandom::new(context.seed()))
            .collect();
        let mut reporters: Vec<_> = contexts
            .iter()
            .zip(prepared.iter())
            .map(|(context, prepared)| {
                let steps = prepared.as_ref().map_or(1, |p| p.schedule.len());
                progress_reporter(context, steps)
            })
            .collect();
        let mut which = Vec::new();
        let mut members = Vec::new();
        for (index, ((slot, rng), progress)) in prepared
            .iter_mut()
            .zip(rngs.iter_mut())
            .zip(reporters.iter_mut())
            .enumerate()
        {
            if let Ok(Prepared {
                schedule,
                job: Job::Single { state },
                ..
            }) = slot
            {
                which.push(index);
                members.push(LockstepMember {
                    steps: schedule,
                    state,
                    dense: &dense,
                    rng,
                    progress,
                });
            }
        }
        let report = generator.run_lockstep(&mut members);
        drop(members);
        drop(reporters);
        self.passes.fetch_add(report.passes, Ordering::Relaxed);
        self.shared_passes
            .fetch_add(report.shared_passes, Ordering::Relaxed);
        if report.shared_passes > 0 {
            tracing::info!(
                steps = ?which.iter().map(|&i| planned[i].step.id.as_str()).collect::<Vec<_>>(),
                shared_passes = report.shared_passes,
                "steps generated in shared forward passes"
            );
        }
        for (&index, result) in which.iter().zip(report.members) {
            let halt = match result {
                Err(error) => Some(Halt::Failed(error.into())),
                Ok(run) if run.cancelled.is_some() || contexts[index].is_cancelled() => {
                    Some(Halt::Cancelled)
                }
                Ok(_) => None,
            };
            if let Some(halt) = halt {
                prepared[index] = Err(halt);
            }
        }
        // Anything else (multi-condition guidance never gets a batch key) runs alone.
        for (index, slot) in prepared.iter_mut().enumerate() {
            if which.contains(&index) {
                continue;
            }
            if let Ok(member) = slot
                && let Err(halt) = self.generate_alone(planned[index], member, contexts[index])
            {
                *slot = Err(halt);
            }
        }
    }

    /// Detokenizes a generated step and writes its artifacts.
    fn finish(
        &self,
        out_dir: &Path,
        planned: &PlannedStep,
        prepared: &Prepared,
        context: &StepContext,
    ) -> Result<StepValue, Halt> {
        let step = &planned.step;
        let target = step.generate.as_str();
        let info = &prepared.info;
        let state = match &prepared.job {
            Job::Single { state } => state,
            Job::Multi { unconditional, .. } => unconditional,
        };
        let modality = state.require(target).map_err(EngineError::from)?;
        let row = &modality.rows()[0];
        let (ids, shape) = match info.kind {
            DomainKind::Image => {
                let ids = row.tokens.clone();
                let side = (ids.len() as f64).sqrt().round() as usize;
                let shape = if side * side == ids.len() {
                    vec![side as u32, side as u32]
                } else {
                    vec![ids.len() as u32]
                };
                (ids, shape)
            }
            _ => {
                let ids: Vec<u32> = row
                    .tokens
                    .iter()
                    .zip(&row.input_mask)
                    .filter(|(_, masked)| !**masked)
                    .map(|(&t, _)| t)
                    .collect();
                let shape = vec![ids.len() as u32];
                (ids, shape)
            }
        };

        let (files, warnings) = match self.plugin_for(target) {
            Some(plugin) => {
                let tokens = Tokens {
                    domain: target.to_owned(),
                    ids: ids.clone(),
                    shape: shape.clone(),
                };
                let out = plugin.detokenize(&tokens, &Vec::new()).map_err(|source| {
                    EngineError::Plugin {
                        plugin: plugin.id().to_owned(),
                        domain: target.to_owned(),
                        source: Box::new(source),
                    }
                })?;
                (encode_detokenized(&out), out.warnings.clone())
            }
            None => (encode_raw_tokens(target, &ids, &shape)?, Vec::new()),
        };
        if context.is_cancelled() {
            return Err(Halt::Cancelled);
        }
        let artifacts = write_files(&out_dir.join(&step.id), files)?;
        context.report_progress(1.0);
        Ok(StepValue::Produced(Arc::new(Produced {
            step: step.id.clone(),
            domain: target.to_owned(),
            ids,
            shape,
            artifacts,
            warnings,
        })))
    }
}

impl StepRunner for Engine {
    type Value = StepValue;

    fn run_step(
        &self,
        step: &PlannedStep,
        inputs: &StepInputs<StepValue>,
        context: &StepContext,
    ) -> Result<StepValue, StepError> {
        run_halting(self.run(&self.out_dir, step, inputs, context))
    }

    fn batch_key(&self, step: &PlannedStep) -> Option<String> {
        self.batch_key_of(step)
    }

    fn run_batch(&self, steps: &[BatchedStep<'_, StepValue>]) -> Vec<Result<StepValue, StepError>> {
        self.run_batch_in(&self.out_dir, steps)
    }
}

/// The engine writing a run's artifacts into a directory of its own (a server shares one loaded
/// engine between runs, each with its own output directory).
pub struct EngineRun<'a> {
    engine: &'a Engine,
    out_dir: PathBuf,
}

impl Engine {
    /// A step runner on this engine whose artifacts go to `out_dir/<step id>/`.
    pub fn run_in(&self, out_dir: impl Into<PathBuf>) -> EngineRun<'_> {
        EngineRun {
            engine: self,
            out_dir: out_dir.into(),
        }
    }
}

impl StepRunner for EngineRun<'_> {
    type Value = StepValue;

    fn run_step(
        &self,
        step: &PlannedStep,
        inputs: &StepInputs<StepValue>,
        context: &StepContext,
    ) -> Result<StepValue, StepError> {
        run_halting(self.engine.run(&self.out_dir, step, inputs, context))
    }

    fn batch_key(&self, step: &PlannedStep) -> Option<String> {
        self.engine.batch_key_of(step)
    }

    fn run_batch(&self, steps: &[BatchedStep<'_, StepValue>]) -> Vec<Result<StepValue, StepError>> {
        self.engine.run_batch_in(&self.out_dir, steps)
    }
}

/// A progress callback reporting a step's fraction done (`steps` decoding steps) and stopping it
/// when the run is cancelled.
fn progress_reporter<'c>(
    context: &'c StepContext<'_>,
    steps: usize,
) -> impl FnMut(Progress<'_>) -> ControlFlow<()> + 'c {
    let total = steps.max(1) as f64;
    move |event: Progress<'_>| {
        let fraction = match event {
            Progress::Token {
                step,
                token,
                max_tokens,
            } => (step as f64 + (token + 1) as f64 / max_tokens.max(1) as f64) / total,
            Progress::Step { step, .. } => (step + 1) as f64 / total,
        };
        context.report_progress(fraction);
        if context.is_cancelled() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

fn run_halting(result: Result<StepValue, Halt>) -> Result<StepValue, StepError> {
    result.map_err(|halt| match halt {
        Halt::Cancelled => StepError::Cancelled,
        Halt::Failed(error) => StepError::Failed {
            message: error_chain(&error),
        },
    })
}

/// A plugin whose vocabulary is not the size of the model's for a domain is most likely loaded
/// with another model's vocabulary (tokens would be in range but mean other words). For a domain
/// decoded by a host tokenizer, the tokenizer's codebook is what must match (the plugin's
/// declared vocabulary is only the largest id it accepts).
fn vocabulary_mismatches(
    model: &FourM,
    plugin: &Plugin,
    domains: &[String],
    codebooks: &BTreeMap<String, usize>,
) -> Vec<String> {
    plugin
        .info()
        .modalities
        .iter()
        .filter(|modality| domains.contains(&modality.domain))
        .filter_map(|modality| {
            let domain = &modality.domain;
            let ours = model.vocab_size(domain)?;
            if let Some(&codes) = codebooks.get(domain) {
                let accepted = modality.vocab_size.map_or(usize::MAX, |v| v as usize);
                return if codes != ours {
                    Some(format!(
                        "`{domain}`: the model has {ours} tokens but its tokenizer (--tokenizer \
                         {domain}=...) has {codes} codes; is this the model's tokenizer?"
                    ))
                } else if codes > accepted {
                    Some(format!(
                        "`{domain}`: the tokenizer has {codes} codes but plugin `{}` accepts ids \
                         below {accepted} only",
                        plugin.id()
                    ))
                } else {
                    None
                };
            }
            let theirs = modality.vocab_size? as usize;
            (theirs != ours).then(|| {
                format!(
                    "`{domain}`: plugin `{}` has a {theirs}-token vocabulary, the model {ours}; is \
                     this the model's vocabulary? (set it with --vocab or TESSERA_VOCAB)",
                    plugin.id()
                )
            })
        })
        .collect()
}

/// An error and its sources, joined with `: ` where a source adds something.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of the checkpoint's weights (and config), identifying the model in cache keys.
fn model_digest(path: &Path) -> Result<String, EngineError> {
    let files: Vec<PathBuf> = if path.is_dir() {
        ["config.json", "model.safetensors"]
            .iter()
            .map(|name| path.join(name))
            .filter(|p| p.is_file())
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    for file in files {
        let mut reader =
            std::fs::File::open(&file).map_err(|e| EngineError::io("reading", &file, e))?;
        loop {
            let read = reader
                .read(&mut buffer)
                .map_err(|e| EngineError::io("reading", &file, e))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
    }
    Ok(hex(&hasher.finalize()))
}
