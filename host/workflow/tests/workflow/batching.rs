//! Batching: ready steps with the same runner batch key go to `run_batch` together, each keeping
//! its own inputs, seed, events, outcome and cache entry; others run alone.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tessera_workflow::{
    BatchedStep, CacheContext, ExecuteOptions, MemoryCache, NoCache, PlannedStep, RunEvent,
    StepContext, StepError, StepInputs, StepOutcome, StepRunner, execute,
};

use crate::executor::{Behaviour, RecordingRunner, plan_of};

/// caption -> a -> b, and caption -> c, d; a, c and d are ready at once, d has another shape.
const FAN: &str = r#"
workflow_version = 1
[workflow]
name = "fan"
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
[[steps]]
id = "d"
generate = "tok_semseg@224"
from = ["inputs.caption"]
scheme = "roar"
decoding_steps = 3
[outputs]
b = "steps.b"
c = "steps.c"
d = "steps.d"
"#;

/// The recording runner, batching steps by decoding-step count and recording every batch.
struct Batching {
    inner: RecordingRunner,
    batches: Mutex<Vec<Vec<String>>>,
}

impl Batching {
    fn new(inner: RecordingRunner) -> Self {
        Self {
            inner,
            batches: Mutex::new(Vec::new()),
        }
    }

    fn batches(&self) -> Vec<Vec<String>> {
        self.batches.lock().unwrap().clone()
    }
}

impl StepRunner for Batching {
    type Value = String;

    fn run_step(
        &self,
        step: &PlannedStep,
        inputs: &StepInputs<String>,
        context: &StepContext,
    ) -> Result<String, StepError> {
        self.inner.run_step(step, inputs, context)
    }

    fn batch_key(&self, step: &PlannedStep) -> Option<String> {
        Some(format!("{:?}", step.step.parameters.decoding_steps))
    }

    fn run_batch(&self, steps: &[BatchedStep<'_, String>]) -> Vec<Result<String, StepError>> {
        self.batches
            .lock()
            .unwrap()
            .push(steps.iter().map(|s| s.step.step.id.clone()).collect());
        steps
            .iter()
            .map(|s| self.inner.run_step(s.step, s.inputs, s.context))
            .collect()
    }
}

fn caption() -> BTreeMap<String, String> {
    BTreeMap::from([("caption".to_owned(), "a".to_owned())])
}

fn seeded() -> ExecuteOptions {
    ExecuteOptions {
        cache_context: CacheContext {
            run_seed: 3,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn ready_steps_with_one_key_run_as_one_batch_with_their_own_values_and_events() {
    let plan = plan_of(FAN);
    let runner = Batching::new(RecordingRunner::new());
    let events = Mutex::new(Vec::new());
    let sink = |event: RunEvent| events.lock().unwrap().push(event);
    let report = execute(&plan, &runner, &caption(), &NoCache, &seeded(), &sink).unwrap();
    assert!(report.succeeded(), "{:?}", report.outcomes);
    // a and c share a shape and are ready together; d (3 steps) and b (after a) run alone.
    assert_eq!(runner.batches(), vec![vec!["a".to_owned(), "c".to_owned()]]);
    let alone = RecordingRunner::new();
    let unbatched = execute(&plan, &alone, &caption(), &NoCache, &seeded(), &|_| {}).unwrap();
    assert_eq!(report.outputs, unbatched.outputs);
    assert_eq!(report.outputs["c"], "c(inputs.caption=a;seed=3)");
    let events = events.into_inner().unwrap();
    for step in ["a", "b", "c", "d"] {
        let started = events
            .iter()
            .filter(|e| matches!(e, RunEvent::Started { step: s } if s == step))
            .count();
        let finished = events
            .iter()
            .filter(|e| matches!(e, RunEvent::Finished { step: s, .. } if s == step))
            .count();
        assert_eq!((started, finished), (1, 1), "{step}");
    }
}

#[test]
fn a_failing_step_fails_alone_in_its_batch() {
    let plan = plan_of(FAN);
    let runner = Batching::new(RecordingRunner::new().with("a", Behaviour::Fail));
    let report = execute(&plan, &runner, &caption(), &NoCache, &seeded(), &|_| {}).unwrap();
    assert_eq!(runner.batches(), vec![vec!["a".to_owned(), "c".to_owned()]]);
    assert!(matches!(report.outcomes["a"], StepOutcome::Failed { .. }));
    assert_eq!(report.outcomes["c"], StepOutcome::Finished);
    assert_eq!(report.outcomes["d"], StepOutcome::Finished);
    assert!(matches!(report.outcomes["b"], StepOutcome::Skipped(_)));
}

#[test]
fn concurrency_one_never_batches() {
    let plan = plan_of(FAN);
    let runner = Batching::new(RecordingRunner::new());
    let options = ExecuteOptions {
        max_concurrency: 1,
        ..seeded()
    };
    let report = execute(&plan, &runner, &caption(), &NoCache, &options, &|_| {}).unwrap();
    assert!(report.succeeded());
    assert!(runner.batches().is_empty());
}

#[test]
fn a_partner_the_cache_serves_is_not_batched() {
    let plan = plan_of(FAN);
    let cache = MemoryCache::default();
    // First run: a fails, so only c, d (and nothing below a) are cached.
    let failing = Batching::new(RecordingRunner::new().with("a", Behaviour::Fail));
    execute(&plan, &failing, &caption(), &cache, &seeded(), &|_| {}).unwrap();
    let runner = Batching::new(RecordingRunner::new());
    let report = execute(&plan, &runner, &caption(), &cache, &seeded(), &|_| {}).unwrap();
    assert!(report.succeeded(), "{:?}", report.outcomes);
    assert_eq!(report.outcomes["c"], StepOutcome::Cached);
    assert_eq!(report.outcomes["a"], StepOutcome::Finished);
    assert!(runner.batches().is_empty(), "{:?}", runner.batches());
    assert_eq!(runner.inner.runs(), vec!["a".to_owned(), "b".to_owned()]);
}
