//! Shared helpers of the end-to-end tests: where the built plugins and the reference fixtures are.

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The installed manifest of a plugin built by `cargo xtask plugins`; panics with the command to
/// run when it is missing, so a forgotten build fails loudly instead of skipping tests.
pub fn plugin_manifest(id: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    for folder in ["plugins", "test-plugins"] {
        let path = target.join(folder).join(id).join("plugin.toml");
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "plugin `{id}` is not built under {}: run `cargo xtask plugins` (or `cargo xtask test`)",
        target.display()
    );
}

/// The reference fixtures directory: `$TESSERA_FIXTURES`, default `../shared/fixtures` from the
/// repository root. Returns `None` when absent outside CI; under CI (`CI` set) a missing
/// directory fails the test.
pub fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("TESSERA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/fixtures"));
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "fixtures directory {} is missing (set TESSERA_FIXTURES)",
            dir.display()
        );
    }
    eprintln!(
        "skipping: fixtures directory {} is missing (set TESSERA_FIXTURES)",
        dir.display()
    );
    None
}

/// Loads a plugin from `manifest` in the sandbox with `tokenizer` registered as the host graphs
/// `<domain>/encode` and `<domain>/decode`.
pub fn plugin_with_tokenizer(
    manifest: impl AsRef<std::path::Path>,
    domain: &str,
    tokenizer: std::sync::Arc<tessera_model::vq::VqTokenizer>,
) -> tessera_plugin_test::PluginHarness {
    let mut graphs = tessera_nn::TokenizerGraphs::default();
    graphs
        .add(domain, tokenizer)
        .expect("the tokenizer registers");
    tessera_plugin_test::PluginHarness::load_with(
        manifest.as_ref(),
        &tessera_runtime::LoadOptions::default(),
        std::sync::Arc::new(graphs),
    )
    .unwrap_or_else(|e| panic!("{} loads: {e}", manifest.as_ref().display()))
}

/// The ids the tokenizer gives natively for `input`, flattened row-major.
pub fn native_ids(
    tokenizer: &tessera_model::vq::VqTokenizer,
    input: &candle_core::Tensor,
) -> Vec<u32> {
    tokenizer
        .encode(input)
        .expect("the native tokenizer encodes")
        .flatten_all()
        .and_then(|t| t.to_vec1::<i64>())
        .expect("integer ids")
        .into_iter()
        .map(|v| v as u32)
        .collect()
}

/// The native decoder's output (image or logits) for a token grid, flattened.
pub fn native_decode(
    tokenizer: &tessera_model::vq::VqTokenizer,
    ids: &[u32],
    grid: (usize, usize),
) -> Vec<f32> {
    let tokens = candle_core::Tensor::from_vec(
        ids.iter().map(|&v| i64::from(v)).collect::<Vec<_>>(),
        (1, grid.0, grid.1),
        &candle_core::Device::Cpu,
    )
    .expect("a token grid");
    tokenizer
        .decode_tokens(&tokens)
        .expect("the native tokenizer decodes")
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("float output")
}
