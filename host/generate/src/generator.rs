//! The generation loops on a [`FourM`] model: a flat schedule of MaskGIT, ROAR and
//! autoregressive steps run over one [`GenerationState`], with classifier-free guidance
//! (conditional and unconditional rows in one batch), multi-condition guidance, a KV cache for
//! autoregressive decoding, reuse of the encoder output when its inputs did not change, and a
//! progress callback that can cancel between steps or tokens.

use std::ops::ControlFlow;

use candle_core::{DType, Tensor};
use tessera_model::{DecoderCache, EncodedContext, FourM, QueryContent, QuerySet};
use tessera_sampler::{
    DomainCatalog, DomainKind, DomainRole, GenerationPlan, GenerationState, GenerationStep,
    Guidance, ModalityState, RandomSource, SamplingOptions, Scheme, StepCommit, every_row_contains,
    guide, guide_multi, maskgit_commit, prepare_multi_guided_schedule, prepare_schedule,
    roar_commit, roar_queries, sample_rows, validate_sampling_options,
};

use crate::catalog::domain_catalog;
use crate::error::{GenerateError, Result};
use crate::inputs::{Branch, BranchKey, DenseInputs, check_dense, stacked_encoder_inputs};

/// How the loops run (all speed switches change nothing in the tokens produced).
#[derive(Debug, Clone)]
pub struct GeneratorOptions {
    /// Top-k / top-p filtering applied before temperature.
    pub sampling: SamplingOptions,
    /// How autoregressive decoding computes each token.
    pub autoregressive: AutoregressiveMode,
    /// Conditional and unconditional rows in one encoder / decoder batch; `false` runs each
    /// branch on its own.
    pub batch_guidance: bool,
    /// Reuse the encoder output of the previous pass when its inputs are unchanged.
    pub reuse_encoder: bool,
    /// Keep each branch's logits in the [`StepReport`]s (for parity checks; memory heavy).
    pub record_logits: bool,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        Self {
            sampling: SamplingOptions::default(),
            autoregressive: AutoregressiveMode::KvCache,
            batch_guidance: true,
            reuse_encoder: true,
            record_logits: false,
        }
    }
}

/// How an autoregressive step computes each token. All three give the same tokens; the two
/// recompute modes exist as baselines and as checks of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoregressiveMode {
    /// One new token per iteration against the decoder's self-attention KV cache; the
    /// cross-attention keys/values of the encoder context are computed once per encoder pass.
    #[default]
    KvCache,
    /// The decoder over the whole prefix (causal mask) for every token, with the
    /// cross-attention keys/values of the context still computed once per encoder pass.
    RecomputePrefix,
    /// The reference's loop (4m-reference §5.6 step 4): for every token the whole decoder over
    /// the prefix, including every block's `context_norm` and keys/values projection of the
    /// encoder context.
    RecomputeAll,
}

/// What the progress callback is told.
#[derive(Debug)]
pub enum Progress<'a> {
    /// An autoregressive step produced token `token` (0-based) of at most `max_tokens`.
    Token {
        step: usize,
        token: usize,
        max_tokens: usize,
    },
    /// Step `step` of `total` finished; `state` is the generation state after it.
    Step {
        step: usize,
        total: usize,
        report: &'a StepReport,
        state: &'a GenerationState,
    },
}

/// Where a run was cancelled by the progress callback. The state holds every step before `step`
/// (a step cancelled midway, e.g. between autoregressive tokens, leaves no trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled {
    pub step: usize,
    /// The autoregressive token after which the callback asked to stop.
    pub token: Option<usize>,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    pub index: usize,
    pub target_domain: String,
    pub scheme: Scheme,
    /// Number of conditional branches plus one unconditional branch when guided; 1 otherwise.
    pub branches: usize,
    /// MaskGIT / ROAR decoder query positions per row, in query order.
    pub queries: Vec<Vec<usize>>,
    /// Tokens written by a MaskGIT / ROAR step.
    pub commit: Option<StepCommit>,
    /// The decoded autoregressive stream per row, before the span merge (leading start token).
    pub stream: Option<Vec<Vec<u32>>>,
    /// With [`GeneratorOptions::record_logits`]: per branch (conditional ones first, the
    /// unconditional last) the raw logits, row-major `(B, n, V)` (`n` queries, or generated
    /// tokens of an autoregressive step).
    pub branch_logits: Vec<Vec<f32>>,
    pub vocab_size: usize,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunReport {
    pub steps: Vec<StepReport>,
    pub cancelled: Option<Cancelled>,
    /// Encoder passes run, and passes saved because the inputs were unchanged.
    pub encoder_runs: usize,
    pub encoder_reuses: usize,
    /// Decoder passes run.
    pub decoder_runs: usize,
    /// Of the encoder and decoder passes above, those whose batch also held the rows of other
    /// generations ([`Generator::run_lockstep`]); 0 for a generation run alone.
    pub shared_passes: usize,
}

/// A progress callback that never cancels.
pub fn no_progress(_: Progress<'_>) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

/// How the logits of a step's branches are combined.
#[derive(Debug, Clone)]
pub(crate) enum Combine {
    Single,
    Scale(f64),
    Weights(Vec<f64>),
}

/// Encoder contexts of the last pass, per group of branches, with the inputs they came from.
#[derive(Default)]
struct EncoderCache {
    key: Option<(Vec<BranchKey>, bool)>,
    contexts: Vec<EncodedContext>,
    runs: usize,
    reuses: usize,
    /// Decoder passes run (one per context per MaskGIT / ROAR step or autoregressive token).
    decoder_runs: usize,
}

/// Runs generation schedules on one model.
pub struct Generator<'m> {
    model: &'m FourM,
    catalog: DomainCatalog,
    options: GeneratorOptions,
}

impl<'m> Generator<'m> {
    pub fn new(model: &'m FourM) -> Self {
        Self::with_options(model, GeneratorOptions::default())
    }

    pub fn with_options(model: &'m FourM, options: GeneratorOptions) -> Self {
        Self {
            catalog: domain_catalog(model),
            model,
            options,
        }
    }

    pub fn model(&self) -> &FourM {
        self.model
    }

    pub fn options(&self) -> &GeneratorOptions {
        &self.options
    }

    /// The model's domains as the sampler's catalog.
    pub fn catalog(&self) -> &DomainCatalog {
        &self.catalog
    }

    /// Validates a plan against the model and expands it into steps (nothing is computed).
    pub fn prepare(&self, plan: &GenerationPlan) -> Result<Vec<GenerationStep>> {
        Ok(prepare_schedule(
            plan,
            &self.catalog,
            &self.options.sampling,
        )?)
    }

    /// Validates `plan`, then runs it on `state` (see [`Generator::run_steps`]).
    pub fn generate(
        &self,
        plan: &GenerationPlan,
        state: &mut GenerationState,
        dense: &DenseInputs,
        rng: &mut dyn RandomSource,
        progress: &mut dyn FnMut(Progress<'_>) -> ControlFlow<()>,
    ) -> Result<RunReport> {
        let steps = self.prepare(plan)?;
        self.run_steps(&steps, state, dense, rng, progress)
    }

    /// Checks a flat schedule against the model and the state before any compute: known,
    /// generatable targets present in the state with the model's width, schemes that fit the
    /// domain kinds, token counts that fit the masked positions, temperatures, guidance values
    /// (weight lists only with `multi_conditions = Some(number of conditional states)`, needing
    /// one more weight per finished target) and dense inputs.
    pub fn validate(
        &self,
        steps: &[GenerationStep],
        state: &GenerationState,
        dense: &DenseInputs,
        multi_conditions: Option<usize>,
    ) -> Result<()> {
        validate_sampling_options(&self.options.sampling)?;
        if state.batch_size().is_none() {
            return Err(GenerateError::EmptyState);
        }
        state.validate_domains(&self.catalog)?;
        check_dense(state, dense)?;
        let mut remaining: Vec<(String, usize)> = Vec::new();
        let mut decoded_sequences: Vec<&str> = Vec::new();
        let mut finished_targets = 0usize;
        let mut previous: Option<&str> = None;
        for (k, step) in steps.iter().enumerate() {
            let domain = step.target_domain.as_str();
            let info = self.catalog.lookup(domain, DomainRole::Target)?;
            if !info.generatable || info.kind == DomainKind::SequenceEmbedding {
                return Err(tessera_sampler::SamplerError::DomainNotGeneratable {
                    domain: domain.to_owned(),
                    kind: info.kind,
                }
                .into());
            }
            match (info.kind.is_token_sequence(), step.scheme) {
                (true, Scheme::MaskGit | Scheme::Roar) => {
                    return Err(
                        tessera_sampler::SamplerError::SequenceDomainNeedsAutoregressive {
                            domain: domain.to_owned(),
                            scheme: step.scheme,
                        }
                        .into(),
                    );
                }
                (false, Scheme::Autoregressive) => {
                    return Err(
                        tessera_sampler::SamplerError::ImageDomainNotAutoregressive {
                            domain: domain.to_owned(),
                        }
                        .into(),
                    );
                }
                _ => {}
            }
            if !(step.temperature.is_finite() && step.temperature >= 0.0) {
                return Err(tessera_sampler::SamplerError::InvalidTemperature {
                    domain: domain.to_owned(),
                    temperature: step.temperature,
                }
                .into());
            }
            for condition in &step.guidance_condition_domains {
                self.catalog
                    .lookup(condition, DomainRole::GuidanceCondition)?;
                if condition == domain && step.is_guided() {
                    return Err(GenerateError::TargetIsGuidanceCondition {
                        step: k,
                        domain: domain.to_owned(),
                    });
                }
            }
            if let Some(prev) = previous
                && prev != domain
            {
                finished_targets += 1;
            }
            previous = Some(domain);
            let values: Vec<f64> = match &step.guidance {
                Guidance::Scale(scale) => vec![*scale],
                Guidance::Weights(weights) => weights.clone(),
            };
            if let Some(&bad) = values.iter().find(|v| !v.is_finite()) {
                return Err(tessera_sampler::SamplerError::InvalidGuidanceScale {
                    domain: domain.to_owned(),
                    value: bad,
                }
                .into());
            }
            match (&step.guidance, multi_conditions) {
                (Guidance::Weights(weights), Some(conditions))
                    if weights.len() == conditions + finished_targets => {}
                (Guidance::Scale(_), None) => {}
                (guidance, conditions) => {
                    return Err(GenerateError::GuidanceWeightMismatch {
                        step: k,
                        domain: domain.to_owned(),
                        weights: match guidance {
                            Guidance::Weights(w) => w.len(),
                            Guidance::Scale(_) => 0,
                        },
                        conditions: conditions.map_or(1, |c| c + finished_targets),
                    });
                }
            }
            let Some(modality) = state.get(domain) else {
                return Err(GenerateError::TargetNotInState {
                    step: k,
                    domain: domain.to_owned(),
                });
            };
            if step.scheme == Scheme::Autoregressive {
                // A sequence target is decoded once: afterwards it has no target positions left.
                if decoded_sequences.contains(&domain) {
                    return Err(tessera_sampler::SamplerError::NoTargetPositions {
                        domain: domain.to_owned(),
                    }
                    .into());
                }
                modality.autoregressive_target(domain, info.num_tokens)?;
                decoded_sequences.push(domain);
                continue;
            }
            if modality.width() != info.num_tokens {
                return Err(GenerateError::TargetWidthMismatch {
                    step: k,
                    domain: domain.to_owned(),
                    found: modality.width(),
                    expected: info.num_tokens,
                });
            }
            let Some(tokens) = step.num_tokens else {
                return Err(GenerateError::MissingTokenCount {
                    step: k,
                    domain: domain.to_owned(),
                    scheme: step.scheme,
                });
            };
            let left = match remaining.iter_mut().find(|(d, _)| d == domain) {
                Some((_, left)) => left,
                None => {
                    let masked = modality.rows()[0].target_positions().len();
                    remaining.push((domain.to_owned(), masked));
                    &mut remaining.last_mut().expect("just pushed").1
                }
            };
            if step.scheme == Scheme::MaskGit && tokens > *left {
                return Err(tessera_sampler::SamplerError::SelectionTooLarge {
                    requested: tokens,
                    available: *left,
                }
                .into());
            }
            *left -= tokens.min(*left);
        }
        Ok(())
    }

    /// Runs a flat schedule (as built by [`Generator::prepare`], or recorded) on `state`:
    /// validated first, then step `k` re-seeds `rng` with `begin_step(k)`.
    pub fn run_steps(
        &self,
        steps: &[GenerationStep],
        state: &mut GenerationState,
        dense: &DenseInputs,
        rng: &mut dyn RandomSource,
        progress: &mut dyn FnMut(Progress<'_>) -> ControlFlow<()>,
    ) -> Result<RunReport> {
        self.validate(steps, state, dense, None)?;
        let mut cache = EncoderCache::default();
        let mut report = RunReport::default();
        for (k, step) in steps.iter().enumerate() {
            rng.begin_step(k);
            let guided = step.is_guided();
            let unconditional = if guided {
                Some(state.unconditional(&step.guidance_condition_domains, &self.catalog)?)
            } else {
                None
            };
            let zeroed = self.zeroed_embeddings(state, &step.guidance_condition_domains);
            let mut branches = vec![Branch {
                state,
                zeroed: Vec::new(),
                dense,
            }];
            let mut combine = Combine::Single;
            if let Some(unconditional) = &unconditional
                && (unconditional != &*state || !zeroed.is_empty())
            {
                branches.push(Branch {
                    state: unconditional,
                    zeroed,
                    dense,
                });
                combine = match &step.guidance {
                    Guidance::Scale(scale) => Combine::Scale(*scale),
                    Guidance::Weights(w) => Combine::Weights(w.clone()),
                };
            }
            let (step_report, update) =
                self.run_step(k, step, &branches, &combine, rng, &mut cache, progress)?;
            drop(branches);
            match update {
                Update::Commit(commit) => commit.apply(target_mut(state, k, step)?)?,
                Update::Replace(merged) => state.insert(step.target_domain.clone(), merged)?,
                Update::CancelledAt(token) => {
                    report.cancelled = Some(Cancelled {
                        step: k,
                        token: Some(token),
                    });
                    break;
                }
            }
            report.steps.push(step_report);
            let flow = progress(Progress::Step {
                step: k,
                total: steps.len(),
                report: report.steps.last().expect("just pushed"),
                state,
            });
            if flow.is_break() {
                if k + 1 < steps.len() {
                    report.cancelled = Some(Cancelled {
                        step: k + 1,
                        token: None,
                    });
                }
                break;
            }
        }
        report.encoder_runs = cache.runs;
        report.encoder_reuses = cache.reuses;
        report.decoder_runs = cache.decoder_runs;
        Ok(report)
    }

    /// Multi-condition guidance (the reference's `generate_multi_guided`, image targets only):
    /// logits `uncond + Σ_i w_i (cond_i − uncond)`, with the step's weights. `unconditional`
    /// holds the targets (every conditional state gets a copy of the current target). When the
    /// schedule moves to a new target, the finished one leaves the conditional states, is hidden
    /// from the unconditional one, and joins a new conditional state (with the new target), so the
    /// next target needs one more weight. `rng` is re-seeded with `begin_step(0)` at every step,
    /// as the reference reuses its seed. On return `unconditional` holds every finished target as
    /// a full input.
    ///
    /// The reference's ROAR variant writes new tokens into the conditional states with inverted
    /// masks, so they never see them; here every conditional state sees the target's committed
    /// tokens, as in the reference's MaskGIT variant.
    #[allow(clippy::too_many_arguments)]
    pub fn generate_multi_guided(
        &self,
        plan: &GenerationPlan,
        unconditional: &mut GenerationState,
        conditions: Vec<GenerationState>,
        dense: &DenseInputs,
        rng: &mut dyn RandomSource,
        progress: &mut dyn FnMut(Progress<'_>) -> ControlFlow<()>,
    ) -> Result<RunReport> {
        if conditions.is_empty() {
            return Err(GenerateError::NoConditionalStates);
        }
        let steps = prepare_multi_guided_schedule(
            plan,
            &self.catalog,
            &self.options.sampling,
            conditions.len(),
        )?;
        let batch = unconditional
            .batch_size()
            .ok_or(GenerateError::EmptyState)?;
        for (index, condition) in conditions.iter().enumerate() {
            match condition.batch_size() {
                Some(found) if found == batch => {}
                found => {
                    return Err(GenerateError::ConditionBatchMismatch {
                        index,
                        found: found.unwrap_or(0),
                        expected: batch,
                    });
                }
            }
            condition.validate_domains(&self.catalog)?;
            check_dense(condition, dense)?;
        }
        self.validate(&steps, unconditional, dense, Some(conditions.len()))?;
        let mut conditions = conditions;
        let mut finished: Vec<(String, ModalityState)> = Vec::new();
        let mut cache = EncoderCache::default();
        let mut report = RunReport::default();
        for (k, step) in steps.iter().enumerate() {
            rng.begin_step(0);
            let domain = step.target_domain.clone();
            if let Some(previous) = steps[..k].last().map(|s| &s.target_domain)
                && *previous != domain
            {
                let done = unconditional.require(previous)?.clone();
                for condition in &mut conditions {
                    condition.remove(previous);
                }
                let rows = done.rows().iter().map(|r| r.tokens.clone()).collect();
                let full = ModalityState::full_input_image_like(rows)?;
                let hidden = ModalityState::from_rows(
                    done.rows()
                        .iter()
                        .map(|r| tessera_sampler::ModalityRow {
                            tokens: r.tokens.clone(),
                            input_mask: vec![true; r.len()],
                            target_mask: r.target_mask.clone(),
                        })
                        .collect(),
                )?;
                unconditional.insert(previous.clone(), hidden)?;
                let mut joined = GenerationState::new();
                joined.insert(previous.clone(), full.clone())?;
                conditions.push(joined);
                finished.push((previous.clone(), full));
            }
            let target = unconditional.require(&domain)?.clone();
            for condition in &mut conditions {
                condition.insert(domain.clone(), target.clone())?;
            }
            let mut branches: Vec<Branch<'_>> = conditions
                .iter()
                .map(|state| Branch {
                    state,
                    zeroed: Vec::new(),
                    dense,
                })
                .collect();
            branches.push(Branch {
                state: unconditional,
                zeroed: Vec::new(),
                dense,
            });
            let combine = match &step.guidance {
                Guidance::Weights(w) => Combine::Weights(w.clone()),
                Guidance::Scale(s) => Combine::Weights(vec![*s; conditions.len()]),
            };
            let (step_report, update) =
                self.run_step(k, step, &branches, &combine, rng, &mut cache, progress)?;
            drop(branches);
            match update {
                Update::Commit(commit) => commit.apply(target_mut(unconditional, k, step)?)?,
                Update::Replace(merged) => unconditional.insert(domain.clone(), merged)?,
                Update::CancelledAt(token) => {
                    report.cancelled = Some(Cancelled {
                        step: k,
                        token: Some(token),
                    });
                    break;
                }
            }
            report.steps.push(step_report);
            let flow = progress(Progress::Step {
                step: k,
                total: steps.len(),
                report: report.steps.last().expect("just pushed"),
                state: unconditional,
            });
            if flow.is_break() {
                if k + 1 < steps.len() {
                    report.cancelled = Some(Cancelled {
                        step: k + 1,
                        token: None,
                    });
                }
                break;
            }
        }
        for (domain, full) in finished {
            unconditional.insert(domain, full)?;
        }
        report.encoder_runs = cache.runs;
        report.encoder_reuses = cache.reuses;
        report.decoder_runs = cache.decoder_runs;
        Ok(report)
    }

    /// Embedding domains among `conditions` present in `state`: the unconditional pass feeds them
    /// as zeros.
    pub(crate) fn zeroed_embeddings(
        &self,
        state: &GenerationState,
        conditions: &[String],
    ) -> Vec<String> {
        conditions
            .iter()
            .filter(|d| state.get(d).is_some())
            .filter(|d| {
                self.catalog
                    .get(d)
                    .is_some_and(|i| i.kind == DomainKind::SequenceEmbedding)
            })
            .cloned()
            .collect()
    }

    /// Encoder contexts for the branches: one batch when they share a layout and batching is on,
    /// else one per branch. Reused when the encoder inputs are unchanged since the last call.
    fn encode(
        &self,
        branches: &[Branch<'_>],
        cache: &mut EncoderCache,
    ) -> Result<Vec<(EncodedContext, usize)>> {
        let layout = branches[0].layout();
        let together = self.options.batch_guidance && branches.iter().all(|b| b.layout() == layout);
        let key = (
            branches
                .iter()
                .map(|b| b.key(self.model))
                .collect::<Vec<_>>(),
            together,
        );
        let rows: Vec<usize> = branches
            .iter()
            .map(|b| b.state.batch_size().unwrap_or(0))
            .collect();
        let groups: Vec<Vec<usize>> = if together {
            vec![(0..branches.len()).collect()]
        } else {
            (0..branches.len()).map(|i| vec![i]).collect()
        };
        if self.options.reuse_encoder && cache.key.as_ref() == Some(&key) {
            cache.reuses += cache.contexts.len();
        } else {
            cache.contexts.clear();
            for group in &groups {
                let members: Vec<Branch<'_>> = group.iter().map(|&i| branches[i].clone()).collect();
                let layout: Vec<(String, usize)> = members[0]
                    .layout()
                    .into_iter()
                    .map(|(domain, width)| (domain.to_owned(), width))
                    .collect();
                let inputs = stacked_encoder_inputs(self.model, &members, &layout)?;
                cache.contexts.push(self.model.encode(&inputs)?);
                cache.runs += 1;
            }
            cache.key = Some(key);
        }
        Ok(groups
            .iter()
            .zip(&cache.contexts)
            .map(|(group, context)| (context.clone(), group.iter().map(|&i| rows[i]).sum()))
            .collect())
    }

    #[allow(clippy::too_many_arguments)]
    fn run_step(
        &self,
        k: usize,
        step: &GenerationStep,
        branches: &[Branch<'_>],
        combine: &Combine,
        rng: &mut dyn RandomSource,
        cache: &mut EncoderCache,
        progress: &mut dyn FnMut(Progress<'_>) -> ControlFlow<()>,
    ) -> Result<(StepReport, Update)> {
        let domain = step.target_domain.as_str();
        let target = branches[0].state.require(domain)?;
        let batch = target.batch_size();
        let vocab = self.model.vocab_size(domain).ok_or_else(|| {
            tessera_model::ModelError::NotADecoderDomain {
                domain: domain.to_owned(),
            }
        })?;
        let mut report = StepReport {
            index: k,
            target_domain: domain.to_owned(),
            scheme: step.scheme,
            branches: branches.len(),
            queries: Vec::new(),
            commit: None,
            stream: None,
            branch_logits: Vec::new(),
            vocab_size: vocab,
        };
        let options = &self.options.sampling;
        match step.scheme {
            Scheme::Roar | Scheme::MaskGit => {
                let num_tokens = step.num_tokens.ok_or(GenerateError::MissingTokenCount {
                    step: k,
                    domain: domain.to_owned(),
                    scheme: step.scheme,
                })?;
                let queries: Vec<Vec<usize>> = if step.scheme == Scheme::Roar {
                    let order = roar_queries(rng, k, &target.rows()[0].target_mask, num_tokens)?;
                    vec![order; batch]
                } else {
                    target.rows().iter().map(|r| r.target_positions()).collect()
                };
                let n = queries.first().map_or(0, Vec::len);
                let logits = if n == 0 {
                    vec![Vec::new(); branches.len()]
                } else {
                    let contexts = self.encode(branches, cache)?;
                    let mut per_branch = Vec::with_capacity(branches.len());
                    for (context, rows) in &contexts {
                        let positions: Vec<Vec<usize>> = (0..rows / batch)
                            .flat_map(|_| queries.iter().cloned())
                            .collect();
                        cache.decoder_runs += 1;
                        let out = self.model.decode(
                            context,
                            &QuerySet {
                                domain: domain.to_owned(),
                                positions,
                                content: QueryContent::MaskToken,
                            },
                        )?;
                        split_branches(&out.logits, rows / batch, &mut per_branch)?;
                    }
                    per_branch
                };
                let guided = combine_logits(combine, &logits)?;
                let commit = if step.scheme == Scheme::Roar {
                    roar_commit(
                        &guided,
                        vocab,
                        batch,
                        &queries[0],
                        step.temperature,
                        options,
                        rng,
                    )?
                } else {
                    maskgit_commit(
                        &guided,
                        vocab,
                        &queries,
                        num_tokens,
                        step.temperature,
                        options,
                        rng,
                    )?
                };
                if self.options.record_logits {
                    report.branch_logits = logits;
                }
                report.queries = queries;
                report.commit = Some(commit.clone());
                Ok((report, Update::Commit(commit)))
            }
            Scheme::Autoregressive => {
                let max_tokens = self
                    .catalog
                    .get(domain)
                    .map_or(usize::MAX, |info| info.num_tokens);
                let ar = target.autoregressive_target(domain, max_tokens)?;
                let mut streams = vec![vec![ar.start_token]; batch];
                let mut recorded: Vec<Vec<Vec<f32>>> = vec![Vec::new(); branches.len()];
                if !every_row_contains(&streams, ar.end_token) {
                    let contexts = self.encode(branches, cache)?;
                    let mut caches = contexts
                        .iter()
                        .map(|(_, rows)| self.model.new_cache(domain, *rows))
                        .collect::<std::result::Result<Vec<DecoderCache>, _>>()?;
                    for i in 0..ar.max_iterations {
                        let mut per_branch = Vec::with_capacity(branches.len());
                        for ((context, rows), decoder_cache) in contexts.iter().zip(&mut caches) {
                            let copies = rows / batch;
                            cache.decoder_runs += 1;
                            let mode = self.options.autoregressive;
                            let logits = if mode == AutoregressiveMode::KvCache {
                                let tokens = (0..copies)
                                    .flat_map(|_| streams.iter().map(|s| vec![s[i]]))
                                    .collect();
                                self.model
                                    .decode_causal(
                                        context,
                                        decoder_cache,
                                        &QuerySet {
                                            domain: domain.to_owned(),
                                            positions: vec![vec![i]; *rows],
                                            content: QueryContent::Tokens(tokens),
                                        },
                                    )?
                                    .logits
                            } else {
                                let recomputed;
                                let context = if mode == AutoregressiveMode::RecomputeAll {
                                    recomputed = self.model.recompute_cross_kv(context)?;
                                    &recomputed
                                } else {
                                    context
                                };
                                let mut fresh = self.model.new_cache(domain, *rows)?;
                                let tokens =
                                    (0..copies).flat_map(|_| streams.iter().cloned()).collect();
                                let out = self.model.decode_causal(
                                    context,
                                    &mut fresh,
                                    &QuerySet {
                                        domain: domain.to_owned(),
                                        positions: vec![(0..=i).collect(); *rows],
                                        content: QueryContent::Tokens(tokens),
                                    },
                                )?;
                                out.logits.narrow(1, i, 1).map_err(candle)?
                            };
                            split_branches(&logits, copies, &mut per_branch)?;
                        }
                        let guided = combine_logits(combine, &per_branch)?;
                        let sampled = sample_rows(&guided, vocab, step.temperature, options, rng)?;
                        for (stream, token) in streams.iter_mut().zip(&sampled) {
                            stream.push(token.token);
                        }
                        if self.options.record_logits {
                            for (slot, logits) in recorded.iter_mut().zip(per_branch) {
                                slot.push(logits);
                            }
                        }
                        let flow = progress(Progress::Token {
                            step: k,
                            token: i,
                            max_tokens: ar.max_iterations,
                        });
                        if flow.is_break() {
                            return Ok((report, Update::CancelledAt(i)));
                        }
                        if every_row_contains(&streams, ar.end_token) {
                            break;
                        }
                    }
                }
                if self.options.record_logits {
                    // Token-major (L, B, V) → (B, L, V).
                    report.branch_logits = recorded
                        .into_iter()
                        .map(|tokens| {
                            let mut out = Vec::new();
                            for row in 0..batch {
                                for token in &tokens {
                                    out.extend_from_slice(&token[row * vocab..(row + 1) * vocab]);
                                }
                            }
                            out
                        })
                        .collect();
                }
                let merged = target.merged_after_autoregression(&streams)?;
                report.stream = Some(streams);
                Ok((report, Update::Replace(merged)))
            }
        }
    }
}

/// How a finished step changes the state.
enum Update {
    Commit(StepCommit),
    Replace(ModalityState),
    CancelledAt(usize),
}

pub(crate) fn candle(e: candle_core::Error) -> GenerateError {
    GenerateError::Model(e.into())
}

pub(crate) fn target_mut<'s>(
    state: &'s mut GenerationState,
    k: usize,
    step: &GenerationStep,
) -> Result<&'s mut ModalityState> {
    state
        .get_mut(&step.target_domain)
        .ok_or_else(|| GenerateError::TargetNotInState {
            step: k,
            domain: step.target_domain.clone(),
        })
}

/// Splits `(copies·B, n, V)` logits into `copies` flat branch vectors.
pub(crate) fn split_branches(
    logits: &Tensor,
    copies: usize,
    out: &mut Vec<Vec<f32>>,
) -> Result<()> {
    let flat = logits
        .to_dtype(DType::F32)
        .map_err(candle)?
        .flatten_all()
        .map_err(candle)?
        .to_vec1::<f32>()
        .map_err(candle)?;
    let chunk = flat.len() / copies.max(1);
    for copy in 0..copies {
        out.push(flat[copy * chunk..(copy + 1) * chunk].to_vec());
    }
    Ok(())
}

pub(crate) fn combine_logits(combine: &Combine, branches: &[Vec<f32>]) -> Result<Vec<f32>> {
    Ok(match combine {
        Combine::Single => branches[0].clone(),
        Combine::Scale(scale) => guide(&branches[0], &branches[1], *scale)?,
        Combine::Weights(weights) => {
            let (unconditional, conditionals) = branches
                .split_last()
                .ok_or(GenerateError::NoConditionalStates)?;
            let conditionals: Vec<&[f32]> = conditionals.iter().map(Vec::as_slice).collect();
            guide_multi(&conditionals, unconditional, weights)?
        }
    })
}
