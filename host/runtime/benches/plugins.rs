//! Plugin runtime benchmarks: warm call overhead, cold load with and without the compile cache,
//! and caption tokenization throughput in the sandbox against the same code compiled natively.
//!
//! Needs the plugins built (`cargo xtask plugins`) and, for the caption benchmarks, the 4M
//! vocabulary from `$TESSERA_FIXTURES/text/` (default `../shared/fixtures`).
//! Run: `cargo bench -p tessera-runtime --bench plugins`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tessera_runtime::types::Value;
use tessera_runtime::{LoadOptions, NoGraphs, Runtime, RuntimeConfig};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn manifest(folder: &str, id: &str) -> PathBuf {
    let path = repo_root()
        .join("target")
        .join(folder)
        .join(id)
        .join("plugin.toml");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask plugins` first",
        path.display()
    );
    path
}

fn fixtures() -> PathBuf {
    std::env::var_os("TESSERA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/fixtures"))
}

fn runtime(cache_dir: Option<PathBuf>) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir,
        graphs: Arc::new(NoGraphs),
    })
    .expect("runtime")
}

/// A trivial export call through the pool: the host's fixed cost per call.
fn warm_call(c: &mut Criterion) {
    let rt = runtime(None);
    let plugin = rt
        .load(
            &manifest("test-plugins", "hostile"),
            &LoadOptions::default(),
        )
        .unwrap();
    let empty = Value::Text(String::new());
    let params = Vec::new();
    c.bench_function("call/warm_trivial_tokenize", |b| {
        b.iter(|| plugin.tokenize("hostile", &empty, &params).unwrap())
    });
}

/// Loading a plugin from its manifest to a first initialised instance.
fn cold_load(c: &mut Criterion) {
    let mut group = c.benchmark_group("load");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    let vocab_options = caption_options();
    let mut targets = vec![(
        "hostile",
        manifest("test-plugins", "hostile"),
        LoadOptions::default(),
    )];
    if let Some(options) = &vocab_options {
        targets.push(("caption", manifest("plugins", "caption"), options.clone()));
    }
    for (id, path, options) in &targets {
        let uncached = runtime(None);
        group.bench_with_input(BenchmarkId::new("no_cache", id), path, |b, path| {
            b.iter(|| uncached.load(path, options).unwrap())
        });
        let cache = tempfile::tempdir().unwrap();
        let cached = runtime(Some(cache.path().to_path_buf()));
        cached.load(path, options).unwrap();
        group.bench_with_input(BenchmarkId::new("compile_cache", id), path, |b, path| {
            b.iter(|| cached.load(path, options).unwrap())
        });
    }
    group.finish();
}

fn caption_options() -> Option<LoadOptions> {
    let vocab = fixtures().join("text/wordpiece_4m_30k.json");
    if !vocab.is_file() {
        eprintln!(
            "skipping caption benchmarks: {} is missing",
            vocab.display()
        );
        return None;
    }
    let mut options = LoadOptions::default();
    options.asset_overrides.insert("vocab".into(), vocab);
    Some(options)
}

/// Caption-like text: the fixture captions repeated to about 64 KiB.
fn caption_corpus() -> String {
    let sentences = [
        "A large red sphere to the left of a small blue cube on a grey floor.",
        "Two people are walking their dogs along the beach at sunset, holding surf-boards!",
        "A Lake-house, with a Boat; the water is calm and the sky is clear [S_1]",
        "Café crème & croissants on a wooden table — bright morning light.",
    ];
    let mut text = String::new();
    while text.len() < 64 << 10 {
        for s in sentences {
            text.push_str(s);
            text.push(' ');
        }
    }
    text
}

fn caption_throughput(c: &mut Criterion) {
    let Some(options) = caption_options() else {
        return;
    };
    let rt = runtime(None);
    let plugin = rt.load(&manifest("plugins", "caption"), &options).unwrap();
    let vocab = std::fs::read(&options.asset_overrides["vocab"]).unwrap();
    let native = tessera_text::TextTokenizer::from_json_bytes(&vocab).unwrap();
    let text = caption_corpus();
    let value = Value::Text(text.clone());
    let params = Vec::new();
    let sandboxed = plugin.tokenize("caption", &value, &params).unwrap().ids;
    assert_eq!(
        sandboxed,
        native.encode(&text),
        "sandbox and native disagree"
    );

    let mut group = c.benchmark_group("caption_tokenize");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("sandbox", |b| {
        b.iter(|| plugin.tokenize("caption", &value, &params).unwrap())
    });
    group.bench_function("native", |b| b.iter(|| native.encode(&text)));
    group.finish();
}

criterion_group!(benches, warm_call, cold_load, caption_throughput);
criterion_main!(benches);
