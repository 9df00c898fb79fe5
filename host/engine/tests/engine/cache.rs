//! Repeated runs: the same seed gives identical artifacts, and the second run is served from the
//! disk cache; `--no-cache` recomputes the same bytes; another seed changes the result.

use tessera_engine::DiskCache;
use tessera_workflow::{ExecuteOptions, NoCache, RunEvent, StepOutcome, execute};

use crate::common::{CHAIN, Recorder, engine, files, planned, setup, text_inputs};

#[test]
fn same_seed_is_identical_and_served_from_the_cache() {
    let Some((fixtures, plugins)) = setup() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let cache_dir = root.path().join("cache");
    let run_text = |text: &str, out: &str, seed: u64, no_cache: bool| {
        let out = root.path().join(out);
        let engine = engine(&fixtures, &plugins, &out);
        let (workflow, execution) = planned(&engine, text);
        let inputs = text_inputs(&workflow, &[("caption", "a photo of a cat")]);
        let options = ExecuteOptions {
            cache_context: engine.cache_context(&inputs, seed, no_cache),
            ..ExecuteOptions::default()
        };
        let cache = DiskCache::new(&cache_dir, &out).with_plan(&execution, &options.cache_context);
        let recorder = Recorder::default();
        let report = execute(&execution, &engine, &inputs, &cache, &options, &recorder).unwrap();
        assert!(report.succeeded(), "{:?}", report.outcomes);
        (report, recorder.events(), files(&out))
    };
    let run = |out: &str, seed: u64, no_cache: bool| run_text(CHAIN, out, seed, no_cache);

    let (first, _, first_files) = run("first", 11, false);
    assert!(first.outcomes.values().all(|o| *o == StepOutcome::Finished));
    let (second, events, second_files) = run("second", 11, false);
    assert!(
        second.outcomes.values().all(|o| *o == StepOutcome::Cached),
        "{:?}",
        second.outcomes
    );
    assert!(!events.iter().any(|e| matches!(e, RunEvent::Started { .. })));
    assert_eq!(first_files, second_files);
    assert!(!first_files.is_empty());
    for (name, value) in &second.outputs {
        let cached = value.produced().unwrap();
        let fresh = first.outputs[name].produced().unwrap();
        assert_eq!(cached.ids, fresh.ids);
        assert_eq!(cached.shape, fresh.shape);
        assert!(cached.artifacts.iter().all(|a| a.path.is_file()));
    }

    // Recomputed without the cache: the same bytes (generation itself is deterministic).
    let (third, _, third_files) = run("third", 11, true);
    assert!(third.outcomes.values().all(|o| *o == StepOutcome::Finished));
    assert_eq!(first_files, third_files);

    // Another seed is a cache miss and samples other tokens.
    let (other, _, _) = run("other", 12, false);
    assert!(other.outcomes.values().all(|o| *o == StepOutcome::Finished));
    assert_ne!(
        other.outputs["normal"].produced().unwrap().ids,
        first.outputs["normal"].produced().unwrap().ids
    );
    let _ = NoCache;

    // The same computation under another step id is served too, into that step's directory.
    let renamed = CHAIN
        .replace("id = \"normal\"", "id = \"normal2\"")
        .replace("\"steps.normal\"", "\"steps.normal2\"");
    let (renamed_run, _, renamed_files) = run_text(&renamed, "renamed", 11, false);
    assert_eq!(renamed_run.outcomes["normal2"], StepOutcome::Cached);
    assert_eq!(
        renamed_files.get("normal2/tokens.raw.json"),
        first_files.get("normal/tokens.raw.json")
    );
    assert!(renamed_files.keys().all(|f| !f.starts_with("normal/")));
}
