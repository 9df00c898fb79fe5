//! A step whose input its plugin refuses fails; its dependents are skipped while an independent
//! branch finishes. Out-of-vocabulary token lists are refused too.

use tessera_engine::{InputValue, StepValue};
use tessera_workflow::{ExecuteOptions, NoCache, SkipReason, StepOutcome, execute};

use crate::common::{Recorder, engine, files, planned_with_tokens, setup, text_inputs};

const BRANCHES: &str = r#"
workflow_version = 1

[workflow]
name = "test-branches"

[inputs.caption]
domain = "caption"

[inputs.boxes]
domain = "det"

[inputs.semseg]
domain = "tok_semseg@224"

[[steps]]
id = "rgb"
generate = "tok_rgb@224"
from = ["inputs.caption", "inputs.boxes"]
scheme = "roar"
decoding_steps = 2

[[steps]]
id = "depth"
generate = "tok_depth@224"
from = ["steps.rgb"]
scheme = "roar"
decoding_steps = 2

[[steps]]
id = "normal"
generate = "tok_normal@224"
from = ["inputs.caption"]
scheme = "roar"
decoding_steps = 2

[[steps]]
id = "clip"
generate = "tok_clip@224"
from = ["inputs.semseg"]
scheme = "roar"
decoding_steps = 2

[outputs]
depth = "steps.depth"
normal = "steps.normal"
clip = "steps.clip"
"#;

#[test]
fn a_refused_input_skips_dependents_while_a_sibling_finishes() {
    let Some((fixtures, plugins)) = setup() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let engine = engine(&fixtures, &plugins, out.path());
    let (workflow, execution) = planned_with_tokens(&engine, BRANCHES, &["tok_semseg@224"]);
    let mut inputs = text_inputs(
        &workflow,
        &[
            ("caption", "a photo of a cat"),
            ("boxes", "these are not boxes"),
        ],
    );
    // A token list with an id beyond the domain's vocabulary (256) is refused as well.
    let mut semseg = vec![1u32; 196];
    semseg[5] = 9999;
    inputs.insert(
        "semseg".into(),
        StepValue::input(
            "tok_semseg@224",
            InputValue::Json(serde_json::to_string(&semseg).unwrap()),
        ),
    );
    let options = ExecuteOptions {
        max_concurrency: 1,
        cache_context: engine.cache_context(&inputs, 1, false),
        ..ExecuteOptions::default()
    };
    let report = execute(
        &execution,
        &engine,
        &inputs,
        &NoCache,
        &options,
        &Recorder::default(),
    )
    .unwrap();
    match &report.outcomes["rgb"] {
        StepOutcome::Failed { error } => {
            assert!(error.contains("det"), "{error}");
            assert!(error.contains("inputs.boxes"), "{error}");
        }
        other => panic!("rgb: {other:?}"),
    }
    assert_eq!(
        report.outcomes["depth"],
        StepOutcome::Skipped(SkipReason::UpstreamFailed { step: "rgb".into() })
    );
    match &report.outcomes["clip"] {
        StepOutcome::Failed { error } => assert!(error.contains("9999"), "{error}"),
        other => panic!("clip: {other:?}"),
    }
    assert_eq!(report.outcomes["normal"], StepOutcome::Finished);
    assert!(report.outputs.contains_key("normal"));
    assert!(!report.outputs.contains_key("depth"));
    let written = files(out.path());
    assert!(
        written.keys().all(|f| f.starts_with("normal")),
        "{written:?}"
    );

    // The same token list within the vocabulary is accepted.
    inputs.insert(
        "semseg".into(),
        StepValue::input("tok_semseg@224", InputValue::Tokens(vec![1; 196])),
    );
    let report = execute(
        &execution,
        &engine,
        &inputs,
        &NoCache,
        &options,
        &Recorder::default(),
    )
    .unwrap();
    assert_eq!(report.outcomes["clip"], StepOutcome::Finished);
}
