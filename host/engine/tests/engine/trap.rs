//! A plugin that traps in the middle of a run: the step it serves fails with an error naming the
//! plugin, the function and the trap; its dependents are skipped; the independent branches
//! finish; and the same engine carries on afterwards (the trapped instance is replaced).
//!
//! The plugins directory is assembled per test: the real `caption` and `det` plugins plus the
//! test plugin `trap` (`plugins/testing/trap`, packed into `target/test-plugins` by
//! `cargo xtask plugins`), which serves `tok_depth@224` and traps in `detokenize` always, in
//! `tokenize` on the text `trap`, and panics in `tokenize` on `panic`.

use std::path::{Path, PathBuf};

use tessera_engine::{Engine, InputValue, StepValue};
use tessera_workflow::{ExecuteOptions, NoCache, RunEvent, SkipReason, StepOutcome, execute};

use crate::common::{Recorder, engine, files, planned, repo_root, setup, text_inputs};

/// A workflow where `depth` (served by the trapping plugin) sits in the middle: `rgb` and
/// `recaption` depend on it, `normal` and `boxes` do not.
const MIDDLE_TRAPS: &str = r#"
workflow_version = 1

[workflow]
name = "test-trap"

[inputs.caption]
domain = "caption"

[[steps]]
id = "depth"
generate = "tok_depth@224"
from = ["inputs.caption"]
scheme = "roar"
decoding_steps = 2

[[steps]]
id = "rgb"
generate = "tok_rgb@224"
from = ["inputs.caption", "steps.depth"]
scheme = "roar"
decoding_steps = 2

[[steps]]
id = "recaption"
generate = "caption"
from = ["steps.rgb"]
scheme = "autoregressive"
token_budget = 8

[[steps]]
id = "normal"
generate = "tok_normal@224"
from = ["inputs.caption"]
scheme = "roar"
decoding_steps = 2
cfg_scale = 2.0

[[steps]]
id = "boxes"
generate = "det"
from = ["inputs.caption"]
scheme = "autoregressive"
token_budget = 12

[outputs]
depth = "steps.depth"
image = "steps.rgb"
recaption = "steps.recaption"
normal = "steps.normal"
boxes = "steps.boxes"
"#;

/// A depth map given as an input: the trap plugin tokenizes it.
const DEPTH_INPUT: &str = r#"
workflow_version = 1

[workflow]
name = "test-trap-input"

[inputs.depth]
domain = "tok_depth@224"

[[steps]]
id = "rgb"
generate = "tok_rgb@224"
from = ["inputs.depth"]
scheme = "roar"
decoding_steps = 2

[outputs]
image = "steps.rgb"
"#;

/// `caption`, `det` and `trap` in one directory, or `None` (skip) when `trap` was not built.
fn plugins_with_trap(plugins: &Path, dir: &Path) -> Option<PathBuf> {
    let trap = repo_root().join("target/test-plugins/trap");
    if !trap.join("plugin.toml").is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing under CI (`cargo xtask plugins`)",
            trap.display()
        );
        eprintln!("skipping: {} is missing", trap.display());
        return None;
    }
    for (from, name) in [
        (plugins.join("caption"), "caption"),
        (plugins.join("det"), "det"),
        (trap, "trap"),
    ] {
        let to = dir.join(name);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    Some(dir.to_path_buf())
}

fn run(
    engine: &Engine,
    text: &str,
    inputs: &[(&str, &str)],
    seed: u64,
) -> (tessera_workflow::RunReport<StepValue>, Vec<RunEvent>) {
    let (workflow, execution) = planned(engine, text);
    let inputs = text_inputs(&workflow, inputs);
    let options = ExecuteOptions {
        max_concurrency: 3,
        cache_context: engine.cache_context(&inputs, seed, true),
        ..ExecuteOptions::default()
    };
    let recorder = Recorder::default();
    let report = execute(&execution, engine, &inputs, &NoCache, &options, &recorder).unwrap();
    (report, recorder.events())
}

fn failure(report: &tessera_workflow::RunReport<StepValue>, step: &str) -> String {
    match &report.outcomes[step] {
        StepOutcome::Failed { error } => error.clone(),
        other => panic!("{step}: expected a failure, got {other:?}"),
    }
}

fn tokens(value: &StepValue) -> Vec<u32> {
    value.produced().expect("a produced value").ids.clone()
}

#[test]
fn a_trapping_plugin_fails_its_step_skips_dependents_and_the_host_carries_on() {
    let Some((fixtures, plugins)) = setup() else {
        return;
    };
    let assembled = tempfile::tempdir().unwrap();
    let Some(plugins) = plugins_with_trap(&plugins, assembled.path()) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let engine = engine(&fixtures, &plugins, out.path());
    assert_eq!(
        engine
            .plugin_for("tok_depth@224")
            .map(|p| p.id().to_owned()),
        Some("trap".to_owned())
    );

    let (report, events) = run(&engine, MIDDLE_TRAPS, &[("caption", "a photo of a cat")], 5);
    // The step whose plugin trapped in detokenize fails, naming the plugin, the call and the trap.
    let error = failure(&report, "depth");
    assert!(error.contains("plugin `trap`"), "{error}");
    assert!(error.contains("detokenize"), "{error}");
    assert!(error.contains("trapped"), "{error}");
    assert!(error.contains("unreachable"), "{error}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RunEvent::Failed { step, .. } if step == "depth")),
        "{events:?}"
    );
    // Its dependents, direct and transitive, are skipped and never started.
    for dependent in ["rgb", "recaption"] {
        assert_eq!(
            report.outcomes[dependent],
            StepOutcome::Skipped(SkipReason::UpstreamFailed {
                step: "depth".into()
            }),
            "{dependent}"
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, RunEvent::Started { step } if step == dependent)),
            "{dependent} started: {events:?}"
        );
    }
    // The independent branches finish and write their artifacts; the failed step writes none.
    assert_eq!(report.outcomes["normal"], StepOutcome::Finished);
    assert_eq!(report.outcomes["boxes"], StepOutcome::Finished);
    assert!(!report.succeeded());
    assert!(!report.cancelled);
    let outputs: Vec<&str> = report.outputs.keys().map(String::as_str).collect();
    assert_eq!(outputs, ["boxes", "normal"]);
    let written = files(out.path());
    assert!(
        written.keys().any(|f| f.starts_with("normal/"))
            && written.keys().any(|f| f.starts_with("boxes/")),
        "{written:?}"
    );
    assert!(
        written
            .keys()
            .all(|f| f.starts_with("normal/") || f.starts_with("boxes/")),
        "{written:?}"
    );
    let normal_tokens = tokens(&report.outputs["normal"]);

    // The host carries on: the same engine runs the workflow again with the same result...
    let (again, _) = run(&engine, MIDDLE_TRAPS, &[("caption", "a photo of a cat")], 5);
    assert!(failure(&again, "depth").contains("trapped"));
    assert_eq!(tokens(&again.outputs["normal"]), normal_tokens);

    // ...a trap and a panic in the plugin's tokenize fail only their step...
    let (trapped, _) = run(&engine, DEPTH_INPUT, &[("depth", "trap")], 1);
    let error = failure(&trapped, "rgb");
    assert!(error.contains("inputs.depth"), "{error}");
    assert!(error.contains("plugin `trap`.tokenize: trapped"), "{error}");
    let (panicked, _) = run(&engine, DEPTH_INPUT, &[("depth", "panic")], 1);
    let error = failure(&panicked, "rgb");
    assert!(
        error.contains("plugin `trap`.tokenize: panicked")
            && error.contains("trap plugin panicked on purpose"),
        "{error}"
    );
    // ...and the plugin answers correctly on a fresh instance afterwards.
    let grid: Vec<u32> = (0..196).map(|i| (i * 7) % 512).collect();
    let ids = serde_json::to_string(&grid).unwrap();
    let (fine, _) = run(&engine, DEPTH_INPUT, &[("depth", &ids)], 1);
    assert_eq!(fine.outcomes["rgb"], StepOutcome::Finished);
    assert_eq!(tokens(&fine.outputs["image"]).len(), 196);

    // The tokens given through the plugin condition the step exactly as the same token list
    // given without a plugin would (the plugin's grid reached the model).
    let value = StepValue::input("tok_depth@224", InputValue::Tokens(grid));
    let (_, execution) = planned(&engine, DEPTH_INPUT);
    let direct_inputs = std::collections::BTreeMap::from([("depth".to_owned(), value)]);
    let options = ExecuteOptions {
        cache_context: engine.cache_context(&direct_inputs, 1, true),
        ..ExecuteOptions::default()
    };
    let direct = execute(
        &execution,
        &engine,
        &direct_inputs,
        &NoCache,
        &options,
        &Recorder::default(),
    )
    .unwrap();
    assert_eq!(
        tokens(&direct.outputs["image"]),
        tokens(&fine.outputs["image"])
    );
}
