//! Executor scheduling: order, concurrency, failure isolation, cancellation, the step cache.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_workflow::{
    CacheContext, CacheKeyPart, CancellationToken, ExecuteOptions, ExecutionPlan, MemoryCache,
    NoCache, NotCachedReason, PlannedStep, Reference, RunEvent, SkipReason, StepContext, StepError,
    StepInputs, StepOutcome, StepRunner, execute, plan, validate_source,
};

/// What a recording runner saw, with a global sequence number per start and finish.
#[derive(Default)]
pub struct Recording {
    pub sequence: AtomicUsize,
    pub starts: Mutex<Vec<(String, usize)>>,
    pub finishes: Mutex<Vec<(String, usize)>>,
}

/// Test behaviour of a step.
#[derive(Clone, Copy, PartialEq)]
pub enum Behaviour {
    Succeed,
    Fail,
    Panic,
    /// Waits (checking cancellation) until `running` reaches 2, i.e. a sibling runs at once.
    AwaitSibling,
    /// Runs until cancelled.
    UntilCancelled,
}

pub struct RecordingRunner {
    pub recording: Arc<Recording>,
    pub behaviour: BTreeMap<String, Behaviour>,
    pub running: AtomicUsize,
}

impl RecordingRunner {
    pub fn new() -> Self {
        Self {
            recording: Arc::new(Recording::default()),
            behaviour: BTreeMap::new(),
            running: AtomicUsize::new(0),
        }
    }

    pub fn with(mut self, step: &str, behaviour: Behaviour) -> Self {
        self.behaviour.insert(step.to_owned(), behaviour);
        self
    }

    pub fn runs(&self) -> Vec<String> {
        let starts = self.recording.starts.lock().unwrap();
        starts.iter().map(|(id, _)| id.clone()).collect()
    }
}

impl StepRunner for RecordingRunner {
    /// A description of the step and what it was given, e.g. `depth(inputs.caption=a)`.
    type Value = String;

    fn run_step(
        &self,
        step: &PlannedStep,
        inputs: &StepInputs<String>,
        context: &StepContext,
    ) -> Result<String, StepError> {
        let id = step.step.id.clone();
        let recording = &self.recording;
        let number = recording.sequence.fetch_add(1, Ordering::SeqCst);
        recording.starts.lock().unwrap().push((id.clone(), number));
        self.running.fetch_add(1, Ordering::SeqCst);
        let behaviour = self
            .behaviour
            .get(&id)
            .copied()
            .unwrap_or(Behaviour::Succeed);
        let result = match behaviour {
            Behaviour::Succeed => Ok(()),
            Behaviour::Fail => Err(StepError::Failed {
                message: format!("{id} failed on purpose"),
            }),
            Behaviour::Panic => panic!("{id} panicked on purpose"),
            Behaviour::AwaitSibling => {
                let deadline = Instant::now() + Duration::from_secs(2);
                loop {
                    if self.running.load(Ordering::SeqCst) >= 2 {
                        break Ok(());
                    }
                    if Instant::now() > deadline {
                        break Err(StepError::Failed {
                            message: "no sibling ran concurrently".to_owned(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Behaviour::UntilCancelled => {
                let deadline = Instant::now() + Duration::from_secs(10);
                let mut decoding_step = 0u32;
                loop {
                    if context.is_cancelled() {
                        break Err(StepError::Cancelled);
                    }
                    if Instant::now() > deadline {
                        break Ok(());
                    }
                    decoding_step += 1;
                    context.report_progress(f64::from(decoding_step % 100) / 100.0);
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        // Keep the sibling of an AwaitSibling step visible until it has seen us.
        if behaviour == Behaviour::AwaitSibling {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        result?;
        let number = recording.sequence.fetch_add(1, Ordering::SeqCst);
        recording
            .finishes
            .lock()
            .unwrap()
            .push((id.clone(), number));
        let given: Vec<String> = inputs
            .values
            .iter()
            .map(|(reference, value)| format!("{reference}={value}"))
            .collect();
        Ok(format!("{id}({};seed={})", given.join(","), context.seed()))
    }
}

pub fn plan_of(text: &str) -> ExecutionPlan {
    let report = validate_source("test.toml", text, &Default::default());
    let Some(workflow) = &report.workflow else {
        panic!("invalid test workflow:\n{}", report.render_terminal(false));
    };
    plan(workflow, None).expect("plannable")
}

/// caption -> a -> b, and caption -> c (independent of a and b).
const BRANCHES: &str = r#"
workflow_version = 1
[workflow]
name = "branches"
[inputs.caption]
domain = "caption"
[[steps]]
id = "a"
generate = "tok_depth@224"
from = ["inputs.caption"]
scheme = "roar"
decoding_steps = 2
[[steps]]
id = "b"
generate = "tok_rgb@224"
from = ["inputs.caption", "steps.a"]
scheme = "roar"
decoding_steps = 2
[[steps]]
id = "c"
generate = "tok_normal@224"
from = ["inputs.caption"]
scheme = "roar"
decoding_steps = 2
[outputs]
b = "steps.b"
c = "steps.c"
"#;

fn caption() -> BTreeMap<String, String> {
    BTreeMap::from([("caption".to_owned(), "a".to_owned())])
}

fn collect_events() -> (Arc<Mutex<Vec<RunEvent>>>, impl Fn(RunEvent) + Sync) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink_events = events.clone();
    (events, move |event| sink_events.lock().unwrap().push(event))
}

fn terminal_events(events: &[RunEvent]) -> BTreeMap<String, RunEvent> {
    let mut terminal = BTreeMap::new();
    for event in events.iter().filter(|event| event.is_terminal()) {
        let previous = terminal.insert(event.step().to_owned(), event.clone());
        assert!(
            previous.is_none(),
            "two terminal events for {}",
            event.step()
        );
    }
    terminal
}

#[test]
fn steps_run_after_their_inputs_and_outputs_carry_values() {
    let plan = plan_of(BRANCHES);
    assert_eq!(
        plan.waves,
        vec![vec!["a".to_owned(), "c".to_owned()], vec!["b".to_owned()]]
    );
    let runner = RecordingRunner::new();
    let (events, sink) = collect_events();
    let options = ExecuteOptions {
        cache_context: CacheContext {
            run_seed: 9,
            ..Default::default()
        },
        ..Default::default()
    };
    let report = execute(&plan, &runner, &caption(), &NoCache, &options, &sink).unwrap();
    assert!(report.succeeded());
    assert_eq!(
        report.outputs["b"],
        "b(inputs.caption=a,steps.a=a(inputs.caption=a;seed=9);seed=9)"
    );
    let events = events.lock().unwrap();
    let queued = events
        .iter()
        .filter(|e| matches!(e, RunEvent::Queued { .. }))
        .count();
    assert_eq!(queued, 3);
    let terminal = terminal_events(&events);
    assert!(
        terminal
            .values()
            .all(|e| matches!(e, RunEvent::Finished { .. }))
    );
}

#[test]
fn independent_branches_run_concurrently() {
    let plan = plan_of(BRANCHES);
    let runner = RecordingRunner::new()
        .with("a", Behaviour::AwaitSibling)
        .with("c", Behaviour::AwaitSibling);
    let report = execute(
        &plan,
        &runner,
        &caption(),
        &NoCache,
        &Default::default(),
        &|_| {},
    )
    .unwrap();
    assert!(report.succeeded(), "{:?}", report.outcomes);
}

#[test]
fn concurrency_one_runs_one_step_at_a_time() {
    let plan = plan_of(BRANCHES);
    let runner = RecordingRunner::new().with("a", Behaviour::AwaitSibling);
    let options = ExecuteOptions {
        max_concurrency: 1,
        ..Default::default()
    };
    let report = execute(&plan, &runner, &caption(), &NoCache, &options, &|_| {}).unwrap();
    assert!(matches!(report.outcomes["a"], StepOutcome::Failed { .. }));
}

#[test]
fn a_failure_skips_dependents_and_siblings_finish() {
    for behaviour in [Behaviour::Fail, Behaviour::Panic] {
        let plan = plan_of(BRANCHES);
        let runner = RecordingRunner::new().with("a", behaviour);
        let (events, sink) = collect_events();
        let report = execute(
            &plan,
            &runner,
            &caption(),
            &NoCache,
            &Default::default(),
            &sink,
        )
        .unwrap();
        assert!(matches!(report.outcomes["a"], StepOutcome::Failed { .. }));
        assert_eq!(
            report.outcomes["b"],
            StepOutcome::Skipped(SkipReason::UpstreamFailed {
                step: "a".to_owned()
            })
        );
        assert_eq!(report.outcomes["c"], StepOutcome::Finished);
        assert!(report.outputs.contains_key("c") && !report.outputs.contains_key("b"));
        assert!(!runner.runs().contains(&"b".to_owned()));
        terminal_events(&events.lock().unwrap());
    }
}

#[test]
fn cancellation_stops_promptly_and_skips_the_rest() {
    let plan = plan_of(BRANCHES);
    let runner = RecordingRunner::new()
        .with("a", Behaviour::UntilCancelled)
        .with("c", Behaviour::UntilCancelled);
    let cancel = CancellationToken::new();
    let options = ExecuteOptions {
        cancel: cancel.clone(),
        ..Default::default()
    };
    let (events, sink) = collect_events();
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            cancel.cancel();
            Instant::now()
        })
    };
    let report = execute(&plan, &runner, &caption(), &NoCache, &options, &sink).unwrap();
    let returned = Instant::now();
    let cancelled_at = canceller.join().unwrap();
    assert!(report.cancelled);
    assert!(
        returned.duration_since(cancelled_at) < Duration::from_millis(500),
        "the run took {:?} to stop",
        returned.duration_since(cancelled_at)
    );
    for step in ["a", "b", "c"] {
        assert_eq!(
            report.outcomes[step],
            StepOutcome::Skipped(SkipReason::Cancelled)
        );
    }
    let events = events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RunEvent::Progress { .. }))
    );
    terminal_events(&events);
}

const CACHED: &str = r#"
workflow_version = 1
[workflow]
name = "cached"
[inputs.caption]
domain = "caption"
[[steps]]
id = "a"
generate = "tok_depth@224"
from = ["inputs.caption"]
scheme = "roar"
decoding_steps = 2
[[steps]]
id = "b"
generate = "tok_rgb@224"
from = ["inputs.caption", "steps.a"]
scheme = "roar"
decoding_steps = 2
[[steps]]
id = "volatile"
generate = "tok_normal@224"
from = ["inputs.caption"]
scheme = "roar"
decoding_steps = 2
cache = false
[outputs]
b = "steps.b"
volatile = "steps.volatile"
"#;

fn not_cached_reasons(events: &[RunEvent]) -> BTreeMap<String, Option<NotCachedReason>> {
    terminal_events(events)
        .into_iter()
        .map(|(step, event)| {
            let reason = match event {
                RunEvent::Finished { not_cached, .. } => Some(not_cached),
                RunEvent::Cached { .. } => None,
                other => panic!("unexpected terminal event {other:?}"),
            };
            (step, reason)
        })
        .collect()
}

#[test]
fn unchanged_steps_are_served_from_the_cache_and_misses_say_why() {
    let plan = plan_of(CACHED);
    let cache = MemoryCache::default();
    let context = |seed: u64, caption_digest: &str, no_cache: bool| ExecuteOptions {
        cache_context: CacheContext {
            model_id: "fixture".to_owned(),
            plugin_digests: BTreeMap::from([("caption".to_owned(), "p1".to_owned())]),
            input_digests: BTreeMap::from([("caption".to_owned(), caption_digest.to_owned())]),
            run_seed: seed,
            no_cache,
        },
        ..Default::default()
    };
    let run = |options: &ExecuteOptions| {
        let runner = RecordingRunner::new();
        let (events, sink) = collect_events();
        let report = execute(&plan, &runner, &caption(), &cache, options, &sink).unwrap();
        assert!(report.succeeded());
        let reasons = not_cached_reasons(&events.lock().unwrap());
        (runner.runs().len(), reasons, report)
    };

    let (ran, reasons, first) = run(&context(1, "x", false));
    assert_eq!(ran, 3);
    assert_eq!(reasons["a"], Some(NotCachedReason::FirstRun));
    assert_eq!(reasons["volatile"], Some(NotCachedReason::StepOptedOut));

    let (ran, reasons, second) = run(&context(1, "x", false));
    assert_eq!(ran, 1, "only the cache = false step runs again");
    assert_eq!(reasons["a"], None);
    assert_eq!(reasons["b"], None);
    assert_eq!(first.outputs, second.outputs);

    let (_, reasons, _) = run(&context(2, "x", false));
    let changed = |parts: Vec<CacheKeyPart>| Some(NotCachedReason::Changed { parts });
    assert_eq!(reasons["a"], changed(vec![CacheKeyPart::Seed]));
    // b's own seed changed, and so did its upstream step's key.
    assert_eq!(
        reasons["b"],
        changed(vec![CacheKeyPart::Inputs, CacheKeyPart::Seed])
    );

    let (_, reasons, _) = run(&context(2, "y", false));
    assert_eq!(reasons["a"], changed(vec![CacheKeyPart::Inputs]));

    let (ran, reasons, _) = run(&context(2, "y", true));
    assert_eq!(ran, 3);
    assert_eq!(reasons["a"], Some(NotCachedReason::RunOptedOut));
}

#[test]
fn a_missing_input_value_is_refused_before_anything_runs() {
    let plan = plan_of(BRANCHES);
    let runner = RecordingRunner::new();
    let error = execute(
        &plan,
        &runner,
        &BTreeMap::new(),
        &NoCache,
        &Default::default(),
        &|_| {},
    )
    .unwrap_err();
    assert_eq!(error.to_string(), "no value given for input `caption`");
    assert!(runner.runs().is_empty());
}

#[test]
fn planning_keeps_only_what_the_requested_outputs_need() {
    let report = validate_source("test.toml", BRANCHES, &Default::default());
    let workflow = report.workflow.unwrap();
    let only_c = plan(&workflow, Some(&["c".to_owned()])).unwrap();
    let ids: Vec<&str> = only_c.steps.iter().map(|s| s.step.id.as_str()).collect();
    assert_eq!(ids, ["c"]);
    assert_eq!(only_c.outputs["c"], Reference::Step("c".to_owned()));
    assert!(plan(&workflow, Some(&["nope".to_owned()])).is_err());
}

#[test]
fn cache_keys_are_deterministic_and_track_each_part() {
    let plan = plan_of(CACHED);
    let context = CacheContext {
        model_id: "fixture".to_owned(),
        plugin_digests: BTreeMap::from([("tok_depth@224".to_owned(), "p1".to_owned())]),
        input_digests: BTreeMap::from([("caption".to_owned(), "x".to_owned())]),
        run_seed: 3,
        no_cache: false,
    };
    let keys = tessera_workflow::cache_keys(&plan, &context);
    assert_eq!(
        keys,
        tessera_workflow::cache_keys(&plan_of(CACHED), &context)
    );
    assert_eq!(keys["a"].digest.len(), 64);
    assert_ne!(keys["a"].digest, keys["volatile"].digest);

    let mut plugins_changed = context.clone();
    plugins_changed
        .plugin_digests
        .insert("tok_depth@224".to_owned(), "p2".to_owned());
    let changed = tessera_workflow::cache_keys(&plan, &plugins_changed);
    assert_eq!(
        changed["a"].changed_parts(&keys["a"]),
        vec![CacheKeyPart::Plugins]
    );
    // b does not use the depth plugin itself, but its input (a's result) changed.
    assert_eq!(
        changed["b"].changed_parts(&keys["b"]),
        vec![CacheKeyPart::Inputs]
    );
    assert_eq!(changed["volatile"], keys["volatile"]);

    let mut model_changed = context.clone();
    model_changed.model_id = "other".to_owned();
    let changed = tessera_workflow::cache_keys(&plan, &model_changed);
    assert_eq!(
        changed["a"].changed_parts(&keys["a"]),
        vec![CacheKeyPart::Model]
    );

    let edited = plan_of(&CACHED.replacen("decoding_steps = 2", "decoding_steps = 1", 1));
    let changed = tessera_workflow::cache_keys(&edited, &context);
    assert_eq!(
        changed["a"].changed_parts(&keys["a"]),
        vec![CacheKeyPart::Parameters]
    );
}
