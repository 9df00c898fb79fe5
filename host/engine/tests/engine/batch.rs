//! Cross-step batching: two branches of one run that are ready together and generate with the
//! same shape share every forward pass (the engine's pass counters prove it), and give exactly the
//! tokens and files of running them one by one; a batch partner's bad input fails only that step;
//! cancellation and the step cache work as for steps run alone.

use std::collections::BTreeMap;

use tessera_engine::{DiskCache, Engine, ForwardPasses, InputValue, StepValue};
use tessera_workflow::{
    CancellationToken, ExecuteOptions, NoCache, RunEvent, SkipReason, StepOutcome, execute,
};

use crate::common::{Recorder, engine, files, planned, planned_with_tokens, setup, text_inputs};

/// Depth and normals from one caption: same scheme, schedule and token count.
const TWO_BRANCHES: &str = r#"
workflow_version = 1

[workflow]
name = "test-two-branches"

[inputs.caption]
domain = "caption"

[[steps]]
id = "depth"
generate = "tok_depth@224"
from = ["inputs.caption"]
scheme = "roar"
decoding_steps = 6
temperature = 1.0
cfg_scale = 2.0

[[steps]]
id = "normal"
generate = "tok_normal@224"
from = ["inputs.caption"]
scheme = "roar"
decoding_steps = 6
temperature = 1.0
cfg_scale = 3.0

[outputs]
depth = "steps.depth"
normal = "steps.normal"
"#;

fn ids(report: &tessera_workflow::RunReport<StepValue>, output: &str) -> Vec<u32> {
    report.outputs[output]
        .produced()
        .expect("produced")
        .ids
        .clone()
}

fn passes_of(engine: &Engine, before: ForwardPasses) -> (usize, usize) {
    let after = engine.forward_passes();
    (after.total - before.total, after.shared - before.shared)
}

#[test]
fn two_branches_share_every_forward_pass_and_equal_running_one_by_one() {
    let Some((fixtures, plugins)) = setup() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let run = |out: &str, batching: bool, max_concurrency: usize| {
        let out = root.path().join(out);
        let engine = engine(&fixtures, &plugins, &out);
        engine.set_batching(batching);
        let (workflow, execution) = planned(&engine, TWO_BRANCHES);
        let inputs = text_inputs(&workflow, &[("caption", "a photo of a cat")]);
        let options = ExecuteOptions {
            max_concurrency,
            cache_context: engine.cache_context(&inputs, 5, false),
            ..ExecuteOptions::default()
        };
        let recorder = Recorder::default();
        let before = engine.forward_passes();
        let report = execute(&execution, &engine, &inputs, &NoCache, &options, &recorder).unwrap();
        assert!(report.succeeded(), "{:?}", report.outcomes);
        (
            report,
            recorder.events(),
            passes_of(&engine, before),
            files(&out),
        )
    };
    let (batched, events, batched_passes, batched_files) = run("batched", true, 2);
    let (sequential, _, sequential_passes, sequential_files) = run("sequential", true, 1);
    let (concurrent, _, concurrent_passes, _) = run("concurrent", false, 2);
    // 6 ROAR steps, one encoder and one decoder pass each, for both steps together.
    assert_eq!(batched_passes, (12, 12));
    assert_eq!(sequential_passes, (24, 0));
    assert_eq!(concurrent_passes, (24, 0));
    for output in ["depth", "normal"] {
        assert_eq!(ids(&batched, output), ids(&sequential, output), "{output}");
        assert_eq!(ids(&batched, output), ids(&concurrent, output), "{output}");
        assert_eq!(ids(&batched, output).len(), 196);
    }
    assert_eq!(batched_files, sequential_files);
    assert_ne!(ids(&batched, "depth"), ids(&batched, "normal"));
    // Progress stays per step: one event per decoding step and the final 1.0, each.
    for step in ["depth", "normal"] {
        let progress = events
            .iter()
            .filter(|e| matches!(e, RunEvent::Progress { step: s, .. } if s == step))
            .count();
        assert_eq!(progress, 7, "{step}");
    }
}

#[test]
fn a_partner_with_a_bad_input_fails_alone() {
    let Some((fixtures, plugins)) = setup() else {
        return;
    };
    const WITH_TOKENS: &str = r#"
workflow_version = 1
[workflow]
name = "test-bad-partner"
[inputs.caption]
domain = "caption"
[inputs.rgb]
domain = "tok_rgb@224"
[[steps]]
id = "depth"
generate = "tok_depth@224"
from = ["inputs.caption"]
scheme = "roar"
decoding_steps = 6
temperature = 1.0
cfg_scale = 2.0
[[steps]]
id = "normal"
generate = "tok_normal@224"
from = ["inputs.caption", "inputs.rgb"]
scheme = "roar"
decoding_steps = 6
temperature = 1.0
cfg_scale = 3.0
[outputs]
depth = "steps.depth"
normal = "steps.normal"
"#;
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("bad");
    let engine = engine(&fixtures, &plugins, &out);
    let (workflow, execution) = planned_with_tokens(&engine, WITH_TOKENS, &["tok_rgb@224"]);
    let mut inputs = text_inputs(&workflow, &[("caption", "a photo of a cat")]);
    // Three tokens for a 196-token grid: refused while preparing the step.
    inputs.insert(
        "rgb".into(),
        StepValue::input("tok_rgb@224", InputValue::Tokens(vec![1, 2, 3])),
    );
    let options = ExecuteOptions {
        cache_context: engine.cache_context(&inputs, 5, false),
        ..ExecuteOptions::default()
    };
    let before = engine.forward_passes();
    let report = execute(&execution, &engine, &inputs, &NoCache, &options, &|_| {}).unwrap();
    let StepOutcome::Failed { error } = &report.outcomes["normal"] else {
        panic!("{:?}", report.outcomes);
    };
    assert!(error.contains("196"), "{error}");
    assert_eq!(report.outcomes["depth"], StepOutcome::Finished);
    assert_eq!(passes_of(&engine, before), (12, 0));

    // Depth is what it is in the two-branch workflow, batched or not.
    let alone_out = root.path().join("alone");
    let alone = crate::common::engine(&fixtures, &plugins, &alone_out);
    alone.set_batching(false);
    let (two, two_plan) = planned(&alone, TWO_BRANCHES);
    let two_inputs = text_inputs(&two, &[("caption", "a photo of a cat")]);
    let options = ExecuteOptions {
        cache_context: alone.cache_context(&two_inputs, 5, false),
        ..ExecuteOptions::default()
    };
    let reference = execute(&two_plan, &alone, &two_inputs, &NoCache, &options, &|_| {}).unwrap();
    assert_eq!(ids(&report, "depth"), ids(&reference, "depth"));
}

#[test]
fn cancelling_a_batch_cancels_each_step_and_writes_nothing() {
    let Some((fixtures, plugins)) = setup() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let engine = engine(&fixtures, &plugins, out.path());
    let (workflow, execution) = planned(&engine, TWO_BRANCHES);
    let inputs = text_inputs(&workflow, &[("caption", "a photo of a dog")]);
    let cancel = CancellationToken::new();
    let options = ExecuteOptions {
        cache_context: engine.cache_context(&inputs, 5, false),
        cancel: cancel.clone(),
        ..ExecuteOptions::default()
    };
    let sink = |event: RunEvent| {
        if matches!(&event, RunEvent::Progress { step, .. } if step == "normal") {
            cancel.cancel();
        }
    };
    let before = engine.forward_passes();
    let report = execute(&execution, &engine, &inputs, &NoCache, &options, &sink).unwrap();
    assert!(report.cancelled);
    for step in ["depth", "normal"] {
        assert_eq!(
            report.outcomes[step],
            StepOutcome::Skipped(SkipReason::Cancelled),
            "{step}"
        );
    }
    // The first step is shared. `depth` reported its progress before `normal`'s report cancelled
    // the run, so, like a step running alone, it notices at its next check: one more step, alone.
    assert_eq!(passes_of(&engine, before), (4, 2));
    assert!(files(out.path()).is_empty());
}

#[test]
fn a_batched_run_is_served_from_the_cache_the_second_time() {
    let Some((fixtures, plugins)) = setup() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let cache_dir = root.path().join("cache");
    let out = root.path().join("out");
    let engine = engine(&fixtures, &plugins, &out);
    let (workflow, execution) = planned(&engine, TWO_BRANCHES);
    let inputs = text_inputs(&workflow, &[("caption", "a photo of a house")]);
    let options = ExecuteOptions {
        cache_context: engine.cache_context(&inputs, 9, false),
        ..ExecuteOptions::default()
    };
    let mut outcomes: Vec<BTreeMap<String, StepOutcome>> = Vec::new();
    let mut produced = Vec::new();
    for _ in 0..2 {
        let cache = DiskCache::new(&cache_dir, &out).with_plan(&execution, &options.cache_context);
        let before = engine.forward_passes();
        let report = execute(&execution, &engine, &inputs, &cache, &options, &|_| {}).unwrap();
        produced.push((
            ids(&report, "depth"),
            ids(&report, "normal"),
            passes_of(&engine, before),
        ));
        outcomes.push(report.outcomes);
    }
    assert!(outcomes[0].values().all(|o| *o == StepOutcome::Finished));
    assert!(outcomes[1].values().all(|o| *o == StepOutcome::Cached));
    assert_eq!(produced[0].2, (12, 12));
    assert_eq!(produced[1].2, (0, 0));
    assert_eq!(
        (&produced[0].0, &produced[0].1),
        (&produced[1].0, &produced[1].1)
    );
}

/// Two box proposals from one caption: autoregressive, decoded in lockstep.
const TWO_PROPOSALS: &str = r#"
workflow_version = 1

[workflow]
name = "test-two-proposals"

[inputs.caption]
domain = "caption"

[[steps]]
id = "boxes"
generate = "det"
from = ["inputs.caption"]
scheme = "autoregressive"
temperature = 1.0
cfg_scale = 2.0
token_budget = 24

[[steps]]
id = "more_boxes"
generate = "det"
from = ["inputs.caption"]
scheme = "autoregressive"
temperature = 0.7
token_budget = 16

[outputs]
boxes = "steps.boxes"
more_boxes = "steps.more_boxes"
"#;

#[test]
fn autoregressive_branches_share_passes_and_equal_running_one_by_one() {
    let Some((fixtures, plugins)) = setup() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let run = |out: &str, max_concurrency: usize| {
        let out = root.path().join(out);
        let engine = engine(&fixtures, &plugins, &out);
        let (workflow, execution) = planned(&engine, TWO_PROPOSALS);
        let inputs = text_inputs(&workflow, &[("caption", "a photo of a cat")]);
        let options = ExecuteOptions {
            max_concurrency,
            cache_context: engine.cache_context(&inputs, 21, false),
            ..ExecuteOptions::default()
        };
        let before = engine.forward_passes();
        let report = execute(&execution, &engine, &inputs, &NoCache, &options, &|_| {}).unwrap();
        assert!(report.succeeded(), "{:?}", report.outcomes);
        (report, passes_of(&engine, before), files(&out))
    };
    let (batched, (total, shared), batched_files) = run("batched", 2);
    let (sequential, (sequential_total, none), sequential_files) = run("sequential", 1);
    assert_eq!(none, 0);
    assert!(shared >= 2, "{shared} shared passes");
    // Every pass the two steps run while both decode is shared: one encoder pass, and a decoder
    // pass per token of the shorter stream.
    assert_eq!(total + shared, sequential_total);
    for output in ["boxes", "more_boxes"] {
        assert_eq!(ids(&batched, output), ids(&sequential, output), "{output}");
    }
    assert_eq!(batched_files, sequential_files);
}
