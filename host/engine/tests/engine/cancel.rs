//! Cancellation from the workflow context stops the generator within one decoding step and
//! leaves no artifacts.

use tessera_workflow::{
    CancellationToken, ExecuteOptions, NoCache, RunEvent, SkipReason, StepOutcome, execute,
};

use crate::common::{Recorder, engine, files, planned, setup, text_inputs};

const LONG: &str = r#"
workflow_version = 1

[workflow]
name = "test-long"

[inputs.caption]
domain = "caption"

[[steps]]
id = "rgb"
generate = "tok_rgb@224"
from = ["inputs.caption"]
scheme = "roar"
decoding_steps = 49

[outputs]
image = "steps.rgb"
"#;

fn progress_events(events: &[RunEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, RunEvent::Progress { .. }))
        .count()
}

#[test]
fn cancellation_stops_within_one_decoding_step() {
    let Some((fixtures, plugins)) = setup() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let engine = engine(&fixtures, &plugins, out.path());
    let (workflow, execution) = planned(&engine, LONG);
    let inputs = text_inputs(&workflow, &[("caption", "a photo of a cat")]);

    // Uncancelled: one progress event per decoding step, plus the final 1.0.
    let recorder = Recorder::default();
    let options = ExecuteOptions {
        cache_context: engine.cache_context(&inputs, 3, false),
        ..ExecuteOptions::default()
    };
    let report = execute(&execution, &engine, &inputs, &NoCache, &options, &recorder).unwrap();
    assert_eq!(report.outcomes["rgb"], StepOutcome::Finished);
    assert_eq!(progress_events(&recorder.events()), 50);

    // Cancelled at the first progress report: the generator stops at its next check.
    let out = tempfile::tempdir().unwrap();
    let engine = crate::common::engine(&fixtures, &plugins, out.path());
    let cancel = CancellationToken::new();
    let options = ExecuteOptions {
        cache_context: engine.cache_context(&inputs, 3, false),
        cancel: cancel.clone(),
        ..ExecuteOptions::default()
    };
    let recorder = Recorder::default();
    let sink = |event: RunEvent| {
        if matches!(event, RunEvent::Progress { .. }) {
            cancel.cancel();
        }
        tessera_workflow::EventSink::emit(&recorder, event);
    };
    let report = execute(&execution, &engine, &inputs, &NoCache, &options, &sink).unwrap();
    assert!(report.cancelled);
    assert_eq!(
        report.outcomes["rgb"],
        StepOutcome::Skipped(SkipReason::Cancelled)
    );
    assert!(
        progress_events(&recorder.events()) <= 2,
        "{:?}",
        recorder.events()
    );
    assert!(report.outputs.is_empty());
    assert!(
        files(out.path()).is_empty(),
        "{:?}",
        files(out.path()).keys()
    );
}
