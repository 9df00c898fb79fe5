//! Cross-generation batching: independent generations (for example the depth and the normal
//! branch of a workflow, both conditioned on one caption) run in lockstep, step `k` of every
//! generation in the same encoder pass and the same decoder pass.
//!
//! Why this is exact: every operation of the 4M core is per row (attention is masked per row,
//! linear layers and norms act on each row alone), so a row's logits do not depend on which other
//! rows share its batch. The rows of all generations are concatenated along the batch dimension,
//! each generation keeping its own conditional and unconditional branches, target domain, token
//! schedule, random stream (seeded, `begin_step(k)` at each step as when run alone) and ROAR
//! orders. Their encoder inputs are laid out in the union of their domains, a generation's rows
//! fully masked in the domains it lacks (see `inputs::union_layout`), and the decoder runs the
//! shared blocks over all rows with a query embedding and a head per target domain
//! ([`FourM::decode_rows`](tessera_model::FourM::decode_rows)). Sampling, guidance and commits stay
//! per generation. So the tokens are those of running each generation alone with the same seed;
//! the tests check it.
//!
//! What shares passes ([`lockstep_key`]): MaskGIT / ROAR schedules with the same shape (the same
//! scheme and token count at every step, targets of the same token count), and single-step
//! autoregressive schedules (any sequence targets: every row decodes token `i` at iteration `i`
//! against one shared KV cache; a generation that reaches its end token stops sampling while the
//! others go on). Other schedules, and generations whose schedules differ, run alone as before.

use std::ops::ControlFlow;

use tessera_model::{EncodedContext, QueryContent, QuerySet};
use tessera_sampler::{
    DomainCatalog, GenerationState, GenerationStep, Guidance, RandomSource, Scheme, StepCommit,
    every_row_contains, maskgit_commit, roar_commit, roar_queries, sample_rows,
};

use crate::error::{GenerateError, Result};
use crate::generator::{
    AutoregressiveMode, Cancelled, Combine, Generator, Progress, RunReport, StepReport,
    combine_logits, split_branches, target_mut,
};
use crate::inputs::{Branch, DenseInputs, stacked_encoder_inputs, union_layout};

/// One generation taking part in [`Generator::run_lockstep`]: what [`Generator::run_steps`]
/// takes, held by reference.
pub struct LockstepMember<'a> {
    pub steps: &'a [GenerationStep],
    pub state: &'a mut GenerationState,
    pub dense: &'a DenseInputs,
    pub rng: &'a mut dyn RandomSource,
    pub progress: &'a mut dyn FnMut(Progress<'_>) -> ControlFlow<()>,
}

/// The result of [`Generator::run_lockstep`].
#[derive(Debug)]
pub struct LockstepReport {
    /// Per member, in the order given: its report (its own steps, cancellation, and the passes
    /// it took part in, shared ones included) or why it failed.
    pub members: Vec<Result<RunReport>>,
    /// Encoder and decoder passes run for all members together, a shared pass counted once.
    pub passes: usize,
    /// Of those, passes whose batch held the rows of more than one member.
    pub shared_passes: usize,
}

/// The shape that decides whether schedules can run in lockstep: the scheme and the number of
/// tokens of every step and the token count of its target. `None` for schedules that always run
/// alone (an autoregressive step, a step without a token count, an unknown domain, no steps).
pub fn lockstep_key(steps: &[GenerationStep], catalog: &DomainCatalog) -> Option<String> {
    if steps.is_empty() {
        return None;
    }
    if let [step] = steps
        && step.scheme == Scheme::Autoregressive
    {
        catalog.get(&step.target_domain)?;
        return Some(AUTOREGRESSIVE_KEY.to_owned());
    }
    let mut key = String::new();
    for step in steps {
        let scheme = match step.scheme {
            Scheme::MaskGit => "maskgit",
            Scheme::Roar => "roar",
            Scheme::Autoregressive => return None,
        };
        let width = catalog.get(&step.target_domain)?.num_tokens;
        key.push_str(&format!("{scheme}:{}/{width};", step.num_tokens?));
    }
    Some(key)
}

/// The [`lockstep_key`] of single-step autoregressive schedules.
const AUTOREGRESSIVE_KEY: &str = "autoregressive";

/// What one member needs for its part of a step.
struct StepPlan {
    unconditional: Option<GenerationState>,
    zeroed: Vec<String>,
    combine: Combine,
    queries: Vec<Vec<usize>>,
    batch: usize,
    vocab: usize,
    num_tokens: usize,
}

impl StepPlan {
    fn branches<'s>(&'s self, member: &'s LockstepMember<'_>) -> Vec<Branch<'s>> {
        let mut branches = vec![Branch {
            state: &*member.state,
            zeroed: Vec::new(),
            dense: member.dense,
        }];
        if let Some(unconditional) = &self.unconditional {
            branches.push(Branch {
                state: unconditional,
                zeroed: self.zeroed.clone(),
                dense: member.dense,
            });
        }
        branches
    }
}

impl Generator<'_> {
    /// Runs several independent generations, each as [`Generator::run_steps`] would run it
    /// alone (same tokens, same progress events, same cancellation), with the passes of those
    /// whose schedules have the same [`lockstep_key`] shared. A member that fails (invalid
    /// schedule, a sampling error) or is cancelled by its progress callback leaves the lockstep;
    /// the others carry on. A shared pass that fails is retried for each member alone, so the
    /// error lands on the member that causes it.
    pub fn run_lockstep(&self, members: &mut [LockstepMember<'_>]) -> LockstepReport {
        let mut results: Vec<Option<Result<RunReport>>> = members
            .iter()
            .map(|member| {
                self.validate(member.steps, member.state, member.dense, None)
                    .err()
                    .map(Err)
            })
            .collect();
        // Without the KV cache autoregressive decoding recomputes prefixes: left alone.
        let keys: Vec<Option<String>> = members
            .iter()
            .map(|member| lockstep_key(member.steps, self.catalog()))
            .map(|key| {
                key.filter(|k| {
                    self.options().autoregressive == AutoregressiveMode::KvCache
                        || k != AUTOREGRESSIVE_KEY
                })
            })
            .collect();
        let mut passes = 0;
        let mut shared_passes = 0;
        let mut done = vec![false; members.len()];
        for first in 0..members.len() {
            if done[first] || results[first].is_some() {
                continue;
            }
            let group: Vec<usize> = (first..members.len())
                .filter(|&i| !done[i] && results[i].is_none())
                .filter(|&i| i == first || (keys[first].is_some() && keys[i] == keys[first]))
                .collect();
            for &i in &group {
                done[i] = true;
            }
            if group.len() == 1 {
                let member = &mut members[first];
                let result = self.run_steps(
                    member.steps,
                    member.state,
                    member.dense,
                    member.rng,
                    member.progress,
                );
                if let Ok(report) = &result {
                    passes += report.encoder_runs + report.decoder_runs;
                }
                results[first] = Some(result);
                continue;
            }
            let mut selected: Vec<&mut LockstepMember<'_>> = members
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| group.contains(i))
                .map(|(_, member)| member)
                .collect();
            let outcome = if keys[first].as_deref() == Some(AUTOREGRESSIVE_KEY) {
                self.lockstep_autoregressive(&mut selected)
            } else {
                self.lockstep_group(&mut selected)
            };
            passes += outcome.passes;
            shared_passes += outcome.shared_passes;
            for (&i, result) in group.iter().zip(outcome.members) {
                results[i] = Some(result);
            }
        }
        LockstepReport {
            members: results
                .into_iter()
                .map(|result| result.unwrap_or(Err(GenerateError::EmptyState)))
                .collect(),
            passes,
            shared_passes,
        }
    }

    /// Members with one lockstep key, validated: step by step together.
    fn lockstep_group(&self, members: &mut [&mut LockstepMember<'_>]) -> LockstepReport {
        let count = members.len();
        let mut reports = vec![RunReport::default(); count];
        let mut failed: Vec<Option<GenerateError>> = (0..count).map(|_| None).collect();
        let mut finished = vec![false; count];
        let mut passes = 0;
        let mut shared_passes = 0;
        let total = members[0].steps.len();
        for k in 0..total {
            let mut plans: Vec<Option<StepPlan>> = Vec::with_capacity(count);
            for (i, member) in members.iter_mut().enumerate() {
                if finished[i] {
                    plans.push(None);
                    continue;
                }
                match self.plan_step(k, member) {
                    Ok(plan) => plans.push(Some(plan)),
                    Err(error) => {
                        failed[i] = Some(error);
                        finished[i] = true;
                        plans.push(None);
                    }
                }
            }
            // Rows share a decoder pass only with the same number of queries.
            let mut logits: Vec<Option<Result<Vec<Vec<f32>>>>> = (0..count).map(|_| None).collect();
            let mut sizes: Vec<usize> = plans
                .iter()
                .flatten()
                .map(|plan| plan.queries.first().map_or(0, Vec::len))
                .collect();
            sizes.sort_unstable();
            sizes.dedup();
            for n in sizes {
                let together: Vec<usize> = (0..count)
                    .filter(|&i| {
                        plans[i]
                            .as_ref()
                            .is_some_and(|p| p.queries.first().map_or(0, Vec::len) == n)
                    })
                    .collect();
                if n == 0 {
                    for &i in &together {
                        let branches = plans[i]
                            .as_ref()
                            .map_or(0, |p| p.branches(members[i]).len());
                        logits[i] = Some(Ok(vec![Vec::new(); branches]));
                    }
                    continue;
                }
                let shared = together.len() > 1;
                let outcome = self.forward(members, &plans, &together, k);
                match outcome {
                    Ok(per_member) => {
                        passes += 2;
                        if shared {
                            shared_passes += 2;
                        }
                        for (&i, member_logits) in together.iter().zip(per_member) {
                            reports[i].encoder_runs += 1;
                            reports[i].decoder_runs += 1;
                            if shared {
                                reports[i].shared_passes += 2;
                            }
                            logits[i] = Some(Ok(member_logits));
                        }
                    }
                    Err(error) if !shared => logits[together[0]] = Some(Err(error)),
                    Err(_) => {
                        for &i in &together {
                            let alone = self.forward(members, &plans, &[i], k);
                            if alone.is_ok() {
                                passes += 2;
                                reports[i].encoder_runs += 1;
                                reports[i].decoder_runs += 1;
                            }
                            logits[i] = Some(alone.map(|mut per_member| per_member.remove(0)));
                        }
                    }
                }
            }
            for i in 0..count {
                let Some(plan) = plans[i].take() else {
                    continue;
                };
                let member_logits = match logits[i].take() {
                    Some(Ok(member_logits)) => member_logits,
                    Some(Err(error)) => {
                        failed[i] = Some(error);
                        finished[i] = true;
                        continue;
                    }
                    None => unreachable!("every planned member got logits or an error"),
                };
                match self.commit_step(k, members[i], plan, member_logits, &mut reports[i]) {
                    Ok(ControlFlow::Continue(())) => {}
                    Ok(ControlFlow::Break(())) => finished[i] = true,
                    Err(error) => {
                        failed[i] = Some(error);
                        finished[i] = true;
                    }
                }
            }
        }
        LockstepReport {
            members: reports
                .into_iter()
                .zip(failed)
                .map(|(report, error)| match error {
                    Some(error) => Err(error),
                    None => Ok(report),
                })
                .collect(),
            passes,
            shared_passes,
        }
    }

    /// A guided step's unconditional state, the conditions given as zero embeddings, and how the
    /// logits combine; nothing when the step is unguided or blanking changes nothing.
    fn guidance_rows(
        &self,
        state: &GenerationState,
        step: &GenerationStep,
    ) -> Result<(Option<GenerationState>, Vec<String>, Combine)> {
        if !step.is_guided() {
            return Ok((None, Vec::new(), Combine::Single));
        }
        let blanked = state.unconditional(&step.guidance_condition_domains, self.catalog())?;
        let zeroed = self.zeroed_embeddings(state, &step.guidance_condition_domains);
        if &blanked == state && zeroed.is_empty() {
            return Ok((None, Vec::new(), Combine::Single));
        }
        let combine = match &step.guidance {
            Guidance::Scale(scale) => Combine::Scale(*scale),
            Guidance::Weights(weights) => Combine::Weights(weights.clone()),
        };
        Ok((Some(blanked), zeroed, combine))
    }

    /// The member's part of step `k` before any compute, in the order [`Generator::run_steps`]
    /// draws from its random stream: `begin_step(k)`, then the ROAR order.
    fn plan_step(&self, k: usize, member: &mut LockstepMember<'_>) -> Result<StepPlan> {
        let step = &member.steps[k];
        member.rng.begin_step(k);
        let state: &GenerationState = member.state;
        let (unconditional, zeroed, combine) = self.guidance_rows(state, step)?;
        let domain = step.target_domain.as_str();
        let target = state.require(domain)?;
        let batch = target.batch_size();
        let vocab = self.model().vocab_size(domain).ok_or_else(|| {
            tessera_model::ModelError::NotADecoderDomain {
                domain: domain.to_owned(),
            }
        })?;
        let num_tokens = step.num_tokens.ok_or(GenerateError::MissingTokenCount {
            step: k,
            domain: domain.to_owned(),
            scheme: step.scheme,
        })?;
        let queries = match step.scheme {
            Scheme::Roar => {
                let order = roar_queries(
                    &mut *member.rng,
                    k,
                    &target.rows()[0].target_mask,
                    num_tokens,
                )?;
                vec![order; batch]
            }
            Scheme::MaskGit => target.rows().iter().map(|r| r.target_positions()).collect(),
            Scheme::Autoregressive => {
                return Err(GenerateError::Sampler(
                    tessera_sampler::SamplerError::ImageDomainNotAutoregressive {
                        domain: domain.to_owned(),
                    },
                ));
            }
        };
        Ok(StepPlan {
            unconditional,
            zeroed,
            combine,
            queries,
            batch,
            vocab,
            num_tokens,
        })
    }

    /// One encoder and one decoder pass over every branch of the members `which` (each has a
    /// plan with the same query count): the logits per member, per branch.
    fn forward(
        &self,
        members: &[&mut LockstepMember<'_>],
        plans: &[Option<StepPlan>],
        which: &[usize],
        k: usize,
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        let mut branches = Vec::new();
        let mut counts = Vec::with_capacity(which.len());
        for &i in which {
            let plan = plans[i].as_ref().ok_or(GenerateError::EmptyState)?;
            let member_branches = plan.branches(members[i]);
            counts.push(member_branches.len());
            branches.extend(member_branches);
        }
        let context = self.encode_together(&branches)?;
        let sets: Vec<QuerySet> = which
            .iter()
            .zip(&counts)
            .map(|(&i, &copies)| {
                let plan = plans[i].as_ref().expect("checked above");
                QuerySet {
                    domain: members[i].steps[k].target_domain.clone(),
                    positions: (0..copies)
                        .flat_map(|_| plan.queries.iter().cloned())
                        .collect(),
                    content: QueryContent::MaskToken,
                }
            })
            .collect();
        let outputs = self.model().decode_rows(&context, &sets)?;
        let mut per_member = Vec::with_capacity(which.len());
        for (output, &copies) in outputs.iter().zip(&counts) {
            let mut per_branch = Vec::with_capacity(copies);
            split_branches(&output.logits, copies, &mut per_branch)?;
            per_member.push(per_branch);
        }
        Ok(per_member)
    }

    /// One encoder pass over branches of several generations, in their [`union_layout`] (or,
    /// without one, branch by branch with the contexts stacked).
    fn encode_together(&self, branches: &[Branch<'_>]) -> Result<EncodedContext> {
        Ok(match union_layout(branches) {
            Some(layout) => {
                self.model()
                    .encode(&stacked_encoder_inputs(self.model(), branches, &layout)?)?
            }
            None => {
                let mut contexts = Vec::with_capacity(branches.len());
                for branch in branches {
                    let layout: Vec<(String, usize)> = branch
                        .layout()
                        .into_iter()
                        .map(|(domain, width)| (domain.to_owned(), width))
                        .collect();
                    let single = std::slice::from_ref(branch);
                    contexts.push(self.model().encode(&stacked_encoder_inputs(
                        self.model(),
                        single,
                        &layout,
                    )?)?);
                }
                EncodedContext::concat_rows(&contexts.iter().collect::<Vec<_>>())?
            }
        })
    }

    /// Guidance, sampling and the commit of the member's step `k`, then its progress callback.
    fn commit_step(
        &self,
        k: usize,
        member: &mut LockstepMember<'_>,
        plan: StepPlan,
        logits: Vec<Vec<f32>>,
        report: &mut RunReport,
    ) -> Result<ControlFlow<()>> {
        let step = &member.steps[k];
        let options = &self.options().sampling;
        let guided = combine_logits(&plan.combine, &logits)?;
        let commit: StepCommit = if step.scheme == Scheme::Roar {
            roar_commit(
                &guided,
                plan.vocab,
                plan.batch,
                &plan.queries[0],
                step.temperature,
                options,
                &mut *member.rng,
            )?
        } else {
            maskgit_commit(
                &guided,
                plan.vocab,
                &plan.queries,
                plan.num_tokens,
                step.temperature,
                options,
                &mut *member.rng,
            )?
        };
        let branches = logits.len();
        commit.apply(target_mut(member.state, k, step)?)?;
        report.steps.push(StepReport {
            index: k,
            target_domain: step.target_domain.clone(),
            scheme: step.scheme,
            branches,
            queries: plan.queries,
            commit: Some(commit),
            stream: None,
            branch_logits: if self.options().record_logits {
                logits
            } else {
                Vec::new()
            },
            vocab_size: plan.vocab,
        });
        let total = member.steps.len();
        let flow = (member.progress)(Progress::Step {
            step: k,
            total,
            report: report.steps.last().expect("just pushed"),
            state: member.state,
        });
        if flow.is_break() && k + 1 < total {
            report.cancelled = Some(Cancelled {
                step: k + 1,
                token: None,
            });
        }
        Ok(flow)
    }
}

/// A member's single autoregressive step in progress.
struct Decoding {
    plan: StepPlan,
    streams: Vec<Vec<u32>>,
    end_token: u32,
    max_iterations: usize,
    /// Per branch, per decoded token, the raw logits (with `record_logits`).
    recorded: Vec<Vec<Vec<f32>>>,
    /// Still sampling.
    active: bool,
}

impl Generator<'_> {
    /// Members with one single-step autoregressive schedule each, validated: one encoder pass
    /// for all, then token `i` of every member in decoder pass `i` against one KV cache. A shared
    /// pass that fails sends every member still decoding to [`Generator::run_steps`] alone (it
    /// restarts its random stream, so its tokens are still its own).
    fn lockstep_autoregressive(&self, members: &mut [&mut LockstepMember<'_>]) -> LockstepReport {
        let count = members.len();
        let mut reports = vec![RunReport::default(); count];
        let mut results: Vec<Option<Result<()>>> = (0..count).map(|_| None).collect();
        let mut decoding: Vec<Option<Decoding>> = Vec::with_capacity(count);
        for (i, member) in members.iter_mut().enumerate() {
            match self.plan_autoregressive(member) {
                Ok(plan) => decoding.push(Some(plan)),
                Err(error) => {
                    results[i] = Some(Err(error));
                    decoding.push(None);
                }
            }
        }
        let mut passes = 0;
        let mut shared_passes = 0;
        // Rows of the members that decode at all, in member order, fixed for the whole loop.
        let rows_of: Vec<usize> = (0..count)
            .filter(|&i| decoding[i].as_ref().is_some_and(|d| d.active))
            .collect();
        let shared_result = (|| -> Result<()> {
            if rows_of.is_empty() {
                return Ok(());
            }
            let mut branches = Vec::new();
            let mut copies = Vec::new();
            for &i in &rows_of {
                let plan = &decoding[i].as_ref().expect("decoding").plan;
                let member_branches = plan.branches(members[i]);
                copies.push(member_branches.len());
                branches.extend(member_branches);
            }
            let context = self.encode_together(&branches)?;
            drop(branches);
            passes += 1;
            if rows_of.len() > 1 {
                shared_passes += 1;
            }
            for &i in &rows_of {
                reports[i].encoder_runs += 1;
                reports[i].shared_passes += usize::from(rows_of.len() > 1);
            }
            let domains: Vec<&str> = rows_of
                .iter()
                .map(|&i| members[i].steps[0].target_domain.as_str())
                .collect();
            let mut cache = self
                .model()
                .new_cache_rows(&domains, context.batch_size())?;
            for token in 0.. {
                let active: Vec<usize> = rows_of
                    .iter()
                    .copied()
                    .filter(|&i| decoding[i].as_ref().is_some_and(|d| d.active))
                    .collect();
                if active.is_empty() {
                    break;
                }
                let sets: Vec<QuerySet> = rows_of
                    .iter()
                    .zip(&copies)
                    .map(|(&i, &copies)| {
                        let d = decoding[i].as_ref().expect("decoding");
                        // A member done sampling keeps its rows (the cache is shared) and
                        // repeats its last token; what it gets back is not used.
                        let tokens = d
                            .streams
                            .iter()
                            .map(|s| vec![*s.get(token).unwrap_or(s.last().expect("start token"))]);
                        let tokens: Vec<Vec<u32>> =
                            (0..copies).flat_map(|_| tokens.clone()).collect();
                        QuerySet {
                            domain: members[i].steps[0].target_domain.clone(),
                            positions: vec![vec![token]; tokens.len()],
                            content: QueryContent::Tokens(tokens),
                        }
                    })
                    .collect();
                let outputs = self
                    .model()
                    .decode_causal_rows(&context, &mut cache, &sets)?;
                passes += 1;
                if active.len() > 1 {
                    shared_passes += 1;
                }
                for ((&i, output), &copies) in rows_of.iter().zip(&outputs).zip(&copies) {
                    if !active.contains(&i) {
                        continue;
                    }
                    reports[i].decoder_runs += 1;
                    reports[i].shared_passes += usize::from(active.len() > 1);
                    let mut per_branch = Vec::with_capacity(copies);
                    split_branches(&output.logits, copies, &mut per_branch)?;
                    let member = &mut *members[i];
                    let d = decoding[i].as_mut().expect("decoding");
                    let step = &member.steps[0];
                    let sampled = combine_logits(&d.plan.combine, &per_branch).and_then(|guided| {
                        Ok(sample_rows(
                            &guided,
                            d.plan.vocab,
                            step.temperature,
                            &self.options().sampling,
                            &mut *member.rng,
                        )?)
                    });
                    let sampled = match sampled {
                        Ok(sampled) => sampled,
                        Err(error) => {
                            d.active = false;
                            results[i] = Some(Err(error));
                            continue;
                        }
                    };
                    for (stream, sample) in d.streams.iter_mut().zip(&sampled) {
                        stream.push(sample.token);
                    }
                    if self.options().record_logits {
                        for (slot, logits) in d.recorded.iter_mut().zip(per_branch) {
                            slot.push(logits);
                        }
                    }
                    let flow = (member.progress)(Progress::Token {
                        step: 0,
                        token,
                        max_tokens: d.max_iterations,
                    });
                    if flow.is_break() {
                        d.active = false;
                        reports[i].cancelled = Some(Cancelled {
                            step: 0,
                            token: Some(token),
                        });
                        results[i] = Some(Ok(()));
                        continue;
                    }
                    if every_row_contains(&d.streams, d.end_token) || token + 1 >= d.max_iterations
                    {
                        d.active = false;
                    }
                }
            }
            Ok(())
        })();
        if shared_result.is_err() {
            // Members still owed a result start over alone.
            for (i, member) in members.iter_mut().enumerate() {
                if results[i].is_some() {
                    continue;
                }
                let alone = self.run_steps(
                    member.steps,
                    member.state,
                    member.dense,
                    member.rng,
                    member.progress,
                );
                results[i] = Some(alone.map(|report| {
                    passes += report.encoder_runs + report.decoder_runs;
                    reports[i] = report;
                }));
                decoding[i] = None;
            }
        }
        for (i, member) in members.iter_mut().enumerate() {
            if results[i].is_some() {
                continue;
            }
            let d = decoding[i].take().expect("decoded");
            results[i] = Some(self.finish_autoregressive(member, d, &mut reports[i]));
        }
        LockstepReport {
            members: results
                .into_iter()
                .zip(reports)
                .map(|(result, report)| match result {
                    Some(Ok(())) => Ok(report),
                    Some(Err(error)) => Err(error),
                    None => Err(GenerateError::EmptyState),
                })
                .collect(),
            passes,
            shared_passes,
        }
    }

    /// The member's autoregressive step before any compute, drawing from its random stream as
    /// [`Generator::run_steps`] does (`begin_step(0)`).
    fn plan_autoregressive(&self, member: &mut LockstepMember<'_>) -> Result<Decoding> {
        let step = &member.steps[0];
        member.rng.begin_step(0);
        let state: &GenerationState = member.state;
        let (unconditional, zeroed, combine) = self.guidance_rows(state, step)?;
        let domain = step.target_domain.as_str();
        let target = state.require(domain)?;
        let batch = target.batch_size();
        let vocab = self.model().vocab_size(domain).ok_or_else(|| {
            tessera_model::ModelError::NotADecoderDomain {
                domain: domain.to_owned(),
            }
        })?;
        let max_tokens = self
            .catalog()
            .get(domain)
            .map_or(usize::MAX, |info| info.num_tokens);
        let ar = target.autoregressive_target(domain, max_tokens)?;
        let streams = vec![vec![ar.start_token]; batch];
        let active = !every_row_contains(&streams, ar.end_token) && ar.max_iterations > 0;
        let branches = 1 + usize::from(unconditional.is_some());
        Ok(Decoding {
            plan: StepPlan {
                unconditional,
                zeroed,
                combine,
                queries: Vec::new(),
                batch,
                vocab,
                num_tokens: 0,
            },
            streams,
            end_token: ar.end_token,
            max_iterations: ar.max_iterations,
            recorded: vec![Vec::new(); branches],
            active,
        })
    }

    /// The span merge of a decoded member, its step report and its progress callback.
    fn finish_autoregressive(
        &self,
        member: &mut LockstepMember<'_>,
        decoding: Decoding,
        report: &mut RunReport,
    ) -> Result<()> {
        let step = &member.steps[0];
        let domain = step.target_domain.clone();
        let batch = decoding.plan.batch;
        let vocab = decoding.plan.vocab;
        let branch_logits = if self.options().record_logits {
            // Token-major (L, B, V) → (B, L, V), as run_steps reports them.
            decoding
                .recorded
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
                .collect()
        } else {
            Vec::new()
        };
        let merged = member
            .state
            .require(&domain)?
            .merged_after_autoregression(&decoding.streams)?;
        member.state.insert(domain.clone(), merged)?;
        report.steps.push(StepReport {
            index: 0,
            target_domain: domain,
            scheme: Scheme::Autoregressive,
            branches: 1 + usize::from(decoding.plan.unconditional.is_some()),
            queries: Vec::new(),
            commit: None,
            stream: Some(decoding.streams),
            branch_logits,
            vocab_size: vocab,
        });
        // One step: nothing left to cancel after it.
        let _ = (member.progress)(Progress::Step {
            step: 0,
            total: member.steps.len(),
            report: report.steps.last().expect("just pushed"),
            state: member.state,
        });
        Ok(())
    }
}
