//! The sandbox: every kind of misbehaviour fails only its call, with an error naming the plugin,
//! the function and the limit, and the plugin keeps answering afterwards.

use std::sync::Arc;
use tessera_plugin_test::PluginHarness;
use tessera_runtime::types::{Dtype, NamedTensor, NnError, Tensor, Value};
use tessera_runtime::{
    CacheOutcome, Graph, LoadError, LoadOptions, NoGraphs, Runtime, RuntimeConfig, RuntimeError,
    StaticGraphs,
};
use tessera_tests::plugin_manifest;

const DOMAIN: &str = "hostile";

fn hostile() -> PluginHarness {
    PluginHarness::load(plugin_manifest("hostile")).expect("hostile plugin loads")
}

fn assert_still_answers(h: &PluginHarness) {
    let tokens = h
        .tokenize_text(DOMAIN, "ok!")
        .expect("well-behaved call after a failure");
    assert_eq!(
        tokens.ids,
        vec![u32::from(b'o'), u32::from(b'k'), u32::from(b'!')]
    );
    let back = h.detokenize(&tokens, &[]).unwrap();
    assert_eq!(back.artifacts[0].value, Value::Text("ok!".into()));
}

#[test]
fn endless_loop_is_stopped_by_the_time_limit() {
    let h = hostile();
    let started = std::time::Instant::now();
    let err = h.tokenize_text(DOMAIN, "loop").unwrap_err();
    assert!(
        matches!(err, RuntimeError::Timeout { ref plugin, function: "tokenize", limit_ms: 300 } if plugin == "hostile"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("300 ms"), "{err}");
    assert_still_answers(&h);
}

#[test]
fn memory_bomb_hits_the_memory_cap() {
    let h = hostile();
    let err = h.tokenize_text(DOMAIN, "alloc").unwrap_err();
    match &err {
        RuntimeError::MemoryLimit {
            plugin,
            function,
            limit_bytes,
            requested_bytes,
        } => {
            assert_eq!(
                (plugin.as_str(), *function, *limit_bytes),
                ("hostile", "tokenize", 32 << 20)
            );
            assert!(requested_bytes > limit_bytes);
        }
        other => panic!("expected a memory-limit error, got {other}"),
    }
    assert!(
        err.to_string().contains("memory limit of 33554432 bytes"),
        "{err}"
    );
    assert_still_answers(&h);
}

#[test]
fn panic_is_reported_with_its_message() {
    let h = hostile();
    let err = h.tokenize_text(DOMAIN, "panic").unwrap_err();
    match &err {
        RuntimeError::Panic {
            plugin,
            function,
            message,
        } => {
            assert_eq!((plugin.as_str(), *function), ("hostile", "tokenize"));
            assert!(message.contains("panicked on purpose"), "{message}");
        }
        other => panic!("expected a panic error, got {other}"),
    }
    assert_still_answers(&h);
}

#[test]
fn oversized_output_is_refused() {
    let h = hostile();
    let err = h.tokenize_text(DOMAIN, "huge").unwrap_err();
    assert!(
        matches!(err, RuntimeError::OutputTooLarge { function: "tokenize", limit: 1_048_576, size, .. } if size > 16_000_000),
        "{err}"
    );
    assert_still_answers(&h);
}

#[test]
fn oversized_input_is_refused_before_the_call() {
    let h = hostile();
    let err = h.tokenize_text(DOMAIN, &"x".repeat(2 << 20)).unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::InputTooLarge {
                limit: 1_048_576,
                ..
            }
        ),
        "{err}"
    );
    assert_still_answers(&h);
}

#[test]
fn graphs_outside_the_manifest_are_refused() {
    let h = hostile();
    let err = h.tokenize_text(DOMAIN, "forbidden-graph").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RuntimeError::Plugin { .. }), "{text}");
    assert!(
        text.contains("not allowed")
            && text.contains("forbidden/network")
            && text.contains("test/double"),
        "{text}"
    );
    assert_still_answers(&h);
}

struct Double;

impl Graph for Double {
    fn compute(&self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, NnError> {
        let input = inputs
            .into_iter()
            .next()
            .ok_or_else(|| NnError::InvalidInput("no input".into()))?;
        let data = input
            .tensor
            .data
            .chunks_exact(4)
            .flat_map(|c| (2.0 * f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes())
            .collect();
        Ok(vec![NamedTensor {
            name: "y".into(),
            tensor: Tensor {
                dtype: Dtype::F32,
                shape: input.tensor.shape,
                data,
            },
        }])
    }
}

#[test]
fn allowed_graphs_run_in_the_host() {
    let graphs = Arc::new(StaticGraphs::default().with("test/double", Arc::new(Double)));
    let h = PluginHarness::load_with(plugin_manifest("hostile"), &LoadOptions::default(), graphs)
        .unwrap();
    let tokens = h.tokenize_text(DOMAIN, "graph").unwrap();
    assert_eq!(tokens.ids, vec![2, 5, (-8i64) as u32]);
    // Allowed but not registered in this host: a clear "not found".
    let err = hostile()
        .tokenize_text(DOMAIN, "graph")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not found") && err.contains("test/double"),
        "{err}"
    );
}

#[test]
fn a_component_that_does_not_match_its_digest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = plugin_manifest("hostile");
    let src_dir = src.parent().unwrap();
    for file in ["plugin.toml", "hostile.wasm"] {
        std::fs::copy(src_dir.join(file), dir.path().join(file)).unwrap();
    }
    let wasm = dir.path().join("hostile.wasm");
    let mut bytes = std::fs::read(&wasm).unwrap();
    bytes.push(0);
    std::fs::write(&wasm, bytes).unwrap();
    let err = PluginHarness::load(dir.path().join("plugin.toml"))
        .err()
        .expect("tampered component refused");
    assert!(
        matches!(err, LoadError::Manifest(tessera_manifest::ManifestError::DigestMismatch { ref plugin, .. }) if plugin == "hostile"),
        "{err}"
    );
    assert!(err.to_string().contains("sha256"), "{err}");
}

#[test]
fn a_component_built_for_another_world_fails_at_load() {
    let err = PluginHarness::load(plugin_manifest("alien"))
        .err()
        .expect("alien world refused");
    match &err {
        LoadError::WorldMismatch {
            plugin,
            world,
            detail,
        } => {
            assert_eq!(plugin, "alien");
            assert_eq!(world, "tessera:plugin/plugin@0.1.0");
            assert!(detail.contains("tessera:plugin/host@0.2.0"), "{detail}");
        }
        other => panic!("expected a world mismatch, got {other}"),
    }
}

#[test]
fn domains_the_plugin_does_not_serve_are_refused() {
    let err = hostile().tokenize_text("caption", "x").unwrap_err();
    assert!(matches!(err, RuntimeError::UnknownDomain { .. }), "{err}");
    assert!(err.to_string().contains("serves hostile"), "{err}");
}

#[test]
fn failures_in_one_thread_leave_the_others_answering() {
    let h = Arc::new(hostile());
    let workers: Vec<_> = (0..6)
        .map(|i| {
            let h = h.clone();
            std::thread::spawn(move || {
                for round in 0..5 {
                    if (i + round) % 3 == 0 {
                        assert!(h.tokenize_text(DOMAIN, "panic").is_err());
                    } else {
                        let text = format!("worker {i} round {round}");
                        let tokens = h.tokenize_text(DOMAIN, &text).unwrap();
                        assert_eq!(tokens.ids.len(), text.len());
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker thread");
    }
    assert!(
        h.plugin().idle_instances() <= 2,
        "pool bounded by max_instances"
    );
    assert_still_answers(&h);
}

#[test]
fn compiled_components_are_cached_and_a_corrupt_cache_entry_is_replaced() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        graphs: Arc::new(NoGraphs),
    })
    .unwrap();
    let manifest = plugin_manifest("hostile");
    let first = runtime.load(&manifest, &LoadOptions::default()).unwrap();
    assert_eq!(first.load_report().cache, CacheOutcome::Miss);
    let second = runtime.load(&manifest, &LoadOptions::default()).unwrap();
    assert_eq!(second.load_report().cache, CacheOutcome::Hit);
    let entries: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(
        entries[0]
            .to_string_lossy()
            .contains(&first.digest().to_hex())
    );
    std::fs::write(&entries[0], b"garbage").unwrap();
    let third = runtime.load(&manifest, &LoadOptions::default()).unwrap();
    assert_eq!(third.load_report().cache, CacheOutcome::Miss);
    assert_eq!(
        third
            .tokenize(DOMAIN, &Value::Text("hi".into()), &vec![])
            .unwrap()
            .ids,
        vec![104, 105]
    );
    assert_eq!(
        runtime
            .load(&manifest, &LoadOptions::default())
            .unwrap()
            .load_report()
            .cache,
        CacheOutcome::Hit
    );
}

#[test]
fn warm_instances_are_reused_and_poisoned_ones_replaced() {
    let h = hostile();
    let calls = |h: &PluginHarness| h.tokenize_text(DOMAIN, "calls").unwrap().ids[0];
    // The instance created at load (init ran once) serves every call in turn.
    assert_eq!((calls(&h), calls(&h), calls(&h)), (1, 2, 3));
    h.tokenize_text(DOMAIN, "panic").unwrap_err();
    // The panicking instance was dropped; the fresh one starts counting again.
    assert_eq!(calls(&h), 1);
}

#[test]
fn plugins_reach_no_filesystem_and_no_environment() {
    let h = hostile();
    let reached = h.tokenize_text(DOMAIN, "escape").unwrap().ids;
    assert_eq!(
        reached,
        vec![0, 0, 0],
        "file read, directory listing, environment variable"
    );
}
