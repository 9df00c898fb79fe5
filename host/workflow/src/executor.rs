//! The executor core: runs a plan's steps on threads as soon as their inputs are ready, up to a
//! concurrency limit; serves unchanged steps from a cache; a failed step skips its dependents
//! while independent branches finish; cancellation stops launching at once and is visible to
//! running steps between their decoding steps. What a step does is the [`StepRunner`]'s business.
//!
//! Steps that are ready at the same moment and that the runner gives the same
//! [`StepRunner::batch_key`] are handed to [`StepRunner::run_batch`] together (one thread, each
//! step still with its own events, progress, seed, result and cache entry), so a runner can put
//! their work into shared passes (the engine batches the forward passes of same-shaped
//! generations). Each batched step counts towards the concurrency limit.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::events::{EventSink, RunEvent, SkipReason};
use crate::plan::{
    CacheContext, CacheKey, ExecutionPlan, NotCachedReason, PlannedStep, cache_keys,
};
use crate::workflow::Reference;

/// Cancels a run; clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct CancellationToken(Arc<AtomicBool>);

impl CancellationToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a running step can see of its run.
pub struct StepContext<'a> {
    step: &'a str,
    seed: u64,
    cancel: &'a CancellationToken,
    events: &'a dyn EventSink,
}

impl StepContext<'_> {
    /// Reports progress (clamped to [0, 1]; NaN is dropped).
    pub fn report_progress(&self, fraction: f64) {
        if fraction.is_nan() {
            return;
        }
        self.events.emit(RunEvent::Progress {
            step: self.step.to_owned(),
            fraction: fraction.clamp(0.0, 1.0),
        });
    }

    /// Runners check this between tokens / decoding steps and return [`StepError::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The step's seed: its own, else the run's.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

/// How a step run ended without a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("cancelled")]
    Cancelled,
    #[error("{message}")]
    Failed { message: String },
}

/// The values a step is conditioned on, in the order of its `from`.
pub struct StepInputs<V> {
    pub values: Vec<(Reference, V)>,
}

impl<V> StepInputs<V> {
    pub fn get(&self, reference: &Reference) -> Option<&V> {
        self.values
            .iter()
            .find(|(candidate, _)| candidate == reference)
            .map(|(_, value)| value)
    }
}

/// Runs one step: tokenize the inputs with plugins, generate on the shared core, detokenize, write
/// artifacts. Implemented by the host; must not leave half-written artifacts when it returns an
/// error.
pub trait StepRunner: Sync {
    /// A step's result (e.g. tokens plus artifact paths); cheap to clone (wrap in `Arc`).
    type Value: Clone + Send + Sync;
    fn run_step(
        &self,
        step: &PlannedStep,
        inputs: &StepInputs<Self::Value>,
        context: &StepContext,
    ) -> Result<Self::Value, StepError>;

    /// Steps with equal keys that are ready at the same time may be run together by
    /// [`StepRunner::run_batch`]; `None` (the default) runs the step alone.
    fn batch_key(&self, _step: &PlannedStep) -> Option<String> {
        None
    }

    /// Runs steps that share a batch key; one result per step, in order. A failure of one step
    /// must not fail the others. The default runs them one after the other.
    fn run_batch(
        &self,
        steps: &[BatchedStep<'_, Self::Value>],
    ) -> Vec<Result<Self::Value, StepError>> {
        steps
            .iter()
            .map(|batched| self.run_step(batched.step, batched.inputs, batched.context))
            .collect()
    }
}

/// One step of a batch handed to [`StepRunner::run_batch`].
pub struct BatchedStep<'a, V> {
    pub step: &'a PlannedStep,
    pub inputs: &'a StepInputs<V>,
    pub context: &'a StepContext<'a>,
}

/// The step cache, keyed by [`CacheKey::digest`]; `step` scopes the last key stored for a step
/// so a miss can say what changed.
pub trait StepCache<V>: Sync {
    fn get(&self, key: &CacheKey) -> Option<V>;
    fn put(&self, step: &str, key: &CacheKey, value: &V);
    fn previous_key(&self, step: &str) -> Option<CacheKey>;
}

/// A cache that never holds anything.
pub struct NoCache;

impl<V> StepCache<V> for NoCache {
    fn get(&self, _: &CacheKey) -> Option<V> {
        None
    }
    fn put(&self, _: &str, _: &CacheKey, _: &V) {}
    fn previous_key(&self, _: &str) -> Option<CacheKey> {
        None
    }
}

/// An in-memory cache (tests, and the server between runs).
pub struct MemoryCache<V> {
    entries: std::sync::Mutex<(BTreeMap<String, V>, BTreeMap<String, CacheKey>)>,
}

impl<V> Default for MemoryCache<V> {
    fn default() -> Self {
        Self {
            entries: std::sync::Mutex::new((BTreeMap::new(), BTreeMap::new())),
        }
    }
}

impl<V: Clone + Send> StepCache<V> for MemoryCache<V> {
    fn get(&self, key: &CacheKey) -> Option<V> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        entries.0.get(&key.digest).cloned()
    }
    fn put(&self, step: &str, key: &CacheKey, value: &V) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        entries.0.insert(key.digest.clone(), value.clone());
        entries.1.insert(step.to_owned(), key.clone());
    }
    fn previous_key(&self, step: &str) -> Option<CacheKey> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        entries.1.get(step).cloned()
    }
}

/// Run settings.
#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    /// Steps running at once (at least 1).
    pub max_concurrency: usize,
    pub cache_context: CacheContext,
    pub cancel: CancellationToken,
}

impl Default for ExecuteOptions {
    fn default() -> Self {
        Self {
            max_concurrency: 4,
            cache_context: CacheContext::default(),
            cancel: CancellationToken::new(),
        }
    }
}

/// How each step ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StepOutcome {
    Finished,
    Cached,
    Failed { error: String },
    Skipped(SkipReason),
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunReport<V> {
    pub outcomes: BTreeMap<String, StepOutcome>,
    /// Values of the requested outputs that were produced.
    pub outputs: BTreeMap<String, V>,
    pub cancelled: bool,
}

impl<V> RunReport<V> {
    /// Every step finished or came from the cache.
    pub fn succeeded(&self) -> bool {
        self.outcomes
            .values()
            .all(|outcome| matches!(outcome, StepOutcome::Finished | StepOutcome::Cached))
    }
}

/// Why a run could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecuteError {
    #[error("no value given for input `{name}`")]
    MissingInput { name: String },
    #[error("step `{step}` depends on `{dependency}`, which is not in the plan")]
    IncompletePlan { step: String, dependency: String },
}

type Completion<V> = (usize, Result<V, StepError>, Duration);

/// Runs a plan. `inputs` holds a value for every input the plan reads.
pub fn execute<R: StepRunner>(
    plan: &ExecutionPlan,
    runner: &R,
    inputs: &BTreeMap<String, R::Value>,
    cache: &dyn StepCache<R::Value>,
    options: &ExecuteOptions,
    events: &dyn EventSink,
) -> Result<RunReport<R::Value>, ExecuteError> {
    for name in &plan.inputs {
        if !inputs.contains_key(name) {
            return Err(ExecuteError::MissingInput { name: name.clone() });
        }
    }
    let index_of: BTreeMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(index, planned)| (planned.step.id.as_str(), index))
        .collect();
    let mut waiting_on = vec![0usize; plan.steps.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); plan.steps.len()];
    for (index, planned) in plan.steps.iter().enumerate() {
        let unique: BTreeSet<&String> = planned.depends_on.iter().collect();
        for dependency in unique {
            let &dependency_index =
                index_of
                    .get(dependency.as_str())
                    .ok_or_else(|| ExecuteError::IncompletePlan {
                        step: planned.step.id.clone(),
                        dependency: dependency.clone(),
                    })?;
            waiting_on[index] += 1;
            dependents[dependency_index].push(index);
        }
    }
    let keys = cache_keys(plan, &options.cache_context);
    let cancel = &options.cancel;

    for planned in &plan.steps {
        events.emit(RunEvent::Queued {
            step: planned.step.id.clone(),
        });
    }
    let mut values: BTreeMap<String, R::Value> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, StepOutcome> = BTreeMap::new();
    // Plan order among ready steps keeps runs reproducible at concurrency 1.
    let mut ready: BTreeSet<usize> = (0..plan.steps.len())
        .filter(|&index| waiting_on[index] == 0)
        .collect();
    let (done_sender, done_receiver) = mpsc::channel::<Completion<R::Value>>();
    let max_concurrency = options.max_concurrency.max(1);

    std::thread::scope(|scope| {
        let mut running = 0usize;
        loop {
            while running < max_concurrency && !cancel.is_cancelled() {
                let Some(index) = ready.pop_first() else {
                    break;
                };
                let mut served = Served {
                    plan,
                    keys: &keys,
                    options,
                    cache,
                    events,
                    dependents: &dependents,
                    values: &mut values,
                    outcomes: &mut outcomes,
                    waiting_on: &mut waiting_on,
                    ready: &mut ready,
                };
                if served.serve_cached(index) {
                    continue;
                }
                let mut group = vec![index];
                if let Some(key) = runner.batch_key(&plan.steps[index]) {
                    // Plan order among the partners, like among ready steps.
                    let partners: Vec<usize> = served
                        .ready
                        .iter()
                        .copied()
                        .filter(|&other| {
                            runner.batch_key(&plan.steps[other]).as_ref() == Some(&key)
                        })
                        .collect();
                    for other in partners {
                        if running + group.len() >= max_concurrency {
                            break;
                        }
                        served.ready.remove(&other);
                        if !served.serve_cached(other) {
                            group.push(other);
                        }
                    }
                }
                let members: Vec<(usize, StepInputs<R::Value>)> = group
                    .iter()
                    .map(|&member| {
                        let step_inputs = StepInputs {
                            values: plan.steps[member]
                                .step
                                .from
                                .iter()
                                .filter_map(|reference| {
                                    let value = match reference {
                                        Reference::Input(name) => inputs.get(name),
                                        Reference::Step(step) => values.get(step),
                                    };
                                    value.map(|value| (reference.clone(), value.clone()))
                                })
                                .collect(),
                        };
                        (member, step_inputs)
                    })
                    .collect();
                let sender = done_sender.clone();
                let keys = &keys;
                running += members.len();
                scope.spawn(move || {
                    for (member, _) in &members {
                        events.emit(RunEvent::Started {
                            step: plan.steps[*member].step.id.clone(),
                        });
                    }
                    let contexts: Vec<StepContext> = members
                        .iter()
                        .map(|(member, _)| {
                            let planned = &plan.steps[*member];
                            StepContext {
                                step: &planned.step.id,
                                seed: keys[planned.step.id.as_str()].seed,
                                cancel,
                                events,
                            }
                        })
                        .collect();
                    let started = Instant::now();
                    let results = catch_unwind(AssertUnwindSafe(|| {
                        if let [(member, step_inputs)] = members.as_slice() {
                            vec![runner.run_step(&plan.steps[*member], step_inputs, &contexts[0])]
                        } else {
                            let batch: Vec<BatchedStep<'_, R::Value>> = members
                                .iter()
                                .zip(&contexts)
                                .map(|((member, step_inputs), context)| BatchedStep {
                                    step: &plan.steps[*member],
                                    inputs: step_inputs,
                                    context,
                                })
                                .collect();
                            runner.run_batch(&batch)
                        }
                    }))
                    .unwrap_or_else(|panic| {
                        let message = panic
                            .downcast_ref::<&str>()
                            .map(|text| text.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown panic".to_owned());
                        members
                            .iter()
                            .map(|_| {
                                Err(StepError::Failed {
                                    message: format!("step runner panicked: {message}"),
                                })
                            })
                            .collect()
                    });
                    let elapsed = started.elapsed();
                    let mut results = results.into_iter();
                    for (member, _) in &members {
                        let result = results.next().unwrap_or_else(|| {
                            Err(StepError::Failed {
                                message: "the step runner returned no result for this step"
                                    .to_owned(),
                            })
                        });
                        let _ = sender.send((*member, result, elapsed));
                    }
                });
            }
            if running == 0 {
                break;
            }
            // Wake up regularly to notice cancellation even while steps are running.
            let (index, result, elapsed) =
                match done_receiver.recv_timeout(Duration::from_millis(5)) {
                    Ok(completion) => completion,
                    Err(_) => continue,
                };
            running -= 1;
            let planned = &plan.steps[index];
            let id = planned.step.id.clone();
            match result {
                Ok(value) => {
                    let key = &keys[&id];
                    let not_cached =
                        match NotCachedReason::cache_enabled(&planned.step, &options.cache_context)
                        {
                            Err(reason) => reason,
                            Ok(()) => {
                                let reason = NotCachedReason::for_miss(
                                    key,
                                    cache.previous_key(&id).as_ref(),
                                );
                                cache.put(&id, key, &value);
                                reason
                            }
                        };
                    values.insert(id.clone(), value);
                    outcomes.insert(id.clone(), StepOutcome::Finished);
                    events.emit(RunEvent::Finished {
                        step: id,
                        elapsed_ms: elapsed.as_secs_f64() * 1000.0,
                        not_cached,
                    });
                    release_dependents(index, &dependents, &mut waiting_on, &mut ready);
                }
                Err(StepError::Cancelled) => {
                    outcomes.insert(id.clone(), StepOutcome::Skipped(SkipReason::Cancelled));
                    events.emit(RunEvent::Skipped {
                        step: id,
                        reason: SkipReason::Cancelled,
                    });
                }
                Err(StepError::Failed { message }) => {
                    outcomes.insert(
                        id.clone(),
                        StepOutcome::Failed {
                            error: message.clone(),
                        },
                    );
                    events.emit(RunEvent::Failed {
                        step: id.clone(),
                        error: message,
                    });
                    // Everything below the failure is skipped now; siblings keep running.
                    let mut stack = dependents[index].clone();
                    while let Some(dependent) = stack.pop() {
                        let dependent_id = &plan.steps[dependent].step.id;
                        if outcomes.contains_key(dependent_id) {
                            continue;
                        }
                        let reason = SkipReason::UpstreamFailed { step: id.clone() };
                        outcomes.insert(dependent_id.clone(), StepOutcome::Skipped(reason.clone()));
                        events.emit(RunEvent::Skipped {
                            step: dependent_id.clone(),
                            reason,
                        });
                        stack.extend(dependents[dependent].iter().copied());
                    }
                }
            }
        }
    });

    let cancelled = cancel.is_cancelled();
    for planned in &plan.steps {
        let id = &planned.step.id;
        if !outcomes.contains_key(id) {
            // Only cancellation leaves steps without an outcome.
            outcomes.insert(id.clone(), StepOutcome::Skipped(SkipReason::Cancelled));
            events.emit(RunEvent::Skipped {
                step: id.clone(),
                reason: SkipReason::Cancelled,
            });
        }
    }
    let outputs = plan
        .outputs
        .iter()
        .filter_map(|(name, reference)| {
            let value = match reference {
                Reference::Input(input) => inputs.get(input),
                Reference::Step(step) => values.get(step),
            };
            value.map(|value| (name.clone(), value.clone()))
        })
        .collect();
    Ok(RunReport {
        outcomes,
        outputs,
        cancelled,
    })
}

/// The run's bookkeeping that serving a step from the cache updates.
struct Served<'p, 'r, V> {
    plan: &'p ExecutionPlan,
    keys: &'r BTreeMap<String, CacheKey>,
    options: &'r ExecuteOptions,
    cache: &'r dyn StepCache<V>,
    events: &'r dyn EventSink,
    dependents: &'r [Vec<usize>],
    values: &'r mut BTreeMap<String, V>,
    outcomes: &'r mut BTreeMap<String, StepOutcome>,
    waiting_on: &'r mut [usize],
    ready: &'r mut BTreeSet<usize>,
}

impl<V> Served<'_, '_, V> {
    /// Serves step `index` from the cache when it may and can, releasing its dependents.
    fn serve_cached(&mut self, index: usize) -> bool {
        let planned = &self.plan.steps[index];
        let id = planned.step.id.as_str();
        let key = &self.keys[id];
        if NotCachedReason::cache_enabled(&planned.step, &self.options.cache_context).is_err() {
            return false;
        }
        let Some(value) = self.cache.get(key) else {
            return false;
        };
        self.values.insert(id.to_owned(), value);
        self.outcomes.insert(id.to_owned(), StepOutcome::Cached);
        self.events.emit(RunEvent::Cached {
            step: id.to_owned(),
            key: key.digest.clone(),
        });
        release_dependents(index, self.dependents, self.waiting_on, self.ready);
        true
    }
}

fn release_dependents(
    index: usize,
    dependents: &[Vec<usize>],
    waiting_on: &mut [usize],
    ready: &mut BTreeSet<usize>,
) {
    for &dependent in &dependents[index] {
        waiting_on[dependent] -= 1;
        if waiting_on[dependent] == 0 {
            ready.insert(dependent);
        }
    }
}
