//! A chained workflow runs end to end and produces every declared output.

use tessera_engine::ArtifactKind;
use tessera_workflow::{ExecuteOptions, NoCache, StepOutcome, execute};

use crate::common::{CHAIN, Recorder, engine, planned, setup, text_inputs};

#[test]
fn chained_workflow_produces_every_output() {
    let Some((fixtures, plugins)) = setup() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let engine = engine(&fixtures, &plugins, out.path());
    let (workflow, execution) = planned(&engine, CHAIN);
    let inputs = text_inputs(&workflow, &[("caption", "a photo of a cat")]);
    let recorder = Recorder::default();
    let options = ExecuteOptions {
        cache_context: engine.cache_context(&inputs, 7, false),
        ..ExecuteOptions::default()
    };
    let report = execute(&execution, &engine, &inputs, &NoCache, &options, &recorder).unwrap();
    assert!(report.succeeded(), "outcomes: {:?}", report.outcomes);
    assert_eq!(report.outputs.len(), 4);
    for name in ["boxes", "depth", "recaption", "normal"] {
        let produced = report.outputs[name].produced().expect("a produced value");
        assert!(!produced.artifacts.is_empty(), "{name} wrote nothing");
        for artifact in &produced.artifacts {
            assert!(artifact.path.starts_with(out.path()));
            assert!(
                artifact.path.is_file(),
                "{} missing",
                artifact.path.display()
            );
        }
    }
    // Text domains come back through their plugins.
    let boxes = report.outputs["boxes"].produced().unwrap();
    assert_eq!(boxes.domain, "det");
    let json = boxes.artifacts.iter().find(|a| a.name == "boxes").unwrap();
    let parsed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json.path).unwrap()).unwrap();
    assert!(parsed.is_array(), "boxes are a JSON list: {parsed}");
    let recaption = report.outputs["recaption"].produced().unwrap();
    assert!(
        recaption
            .artifacts
            .iter()
            .any(|a| a.kind == ArtifactKind::Text)
    );
    assert!(recaption.ids.len() <= 12 + 2);

    // The depth plugin is installed, but without `--tokenizer tok_depth@224=DIR` its host graphs
    // are missing, so it does not serve the domain and depth stays a raw grid.
    if plugins.join("depth/plugin.toml").is_file() {
        let reason = &engine.unavailable_domains()["tok_depth@224"];
        assert!(
            reason.contains("tok_depth@224/encode") && reason.contains("--tokenizer"),
            "{reason}"
        );
    }

    // Image-token domains without a plugin are raw token grids, labelled as such.
    let depth = report.outputs["depth"].produced().unwrap();
    assert_eq!(depth.shape, vec![14, 14]);
    assert_eq!(depth.ids.len(), 196);
    assert!(depth.ids.iter().all(|&id| id < 512));
    let raw = depth
        .artifacts
        .iter()
        .find(|a| a.kind == ArtifactKind::RawTokens)
        .unwrap();
    let raw_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&raw.path).unwrap()).unwrap();
    assert_eq!(raw_json["kind"], "raw-tokens");
    assert_eq!(raw_json["shape"], serde_json::json!([14, 14]));
    assert_eq!(raw_json["ids"].as_array().unwrap().len(), 196);
    let preview = depth
        .artifacts
        .iter()
        .find(|a| a.kind == ArtifactKind::RawTokensPreview)
        .unwrap();
    assert!(preview.path.to_string_lossy().contains("raw-preview"));
    let decoder = png::Decoder::new(std::io::Cursor::new(std::fs::read(&preview.path).unwrap()));
    let reader = decoder.read_info().unwrap();
    assert_eq!(
        (reader.info().width, reader.info().height),
        (14 * 8, 14 * 8)
    );

    // Progress reached every step, ending at 1.
    for id in ["boxes", "depth", "recaption", "normal"] {
        let last = recorder
            .events()
            .into_iter()
            .rev()
            .find_map(|event| match event {
                tessera_workflow::RunEvent::Progress { step, fraction } if step == id => {
                    Some(fraction)
                }
                _ => None,
            });
        assert_eq!(last, Some(1.0), "progress of {id}");
        assert_eq!(report.outcomes[id], StepOutcome::Finished);
    }
    // No temporary files are left behind.
    assert!(
        crate::common::files(out.path())
            .keys()
            .all(|name| !name.contains(".tmp"))
    );
}
