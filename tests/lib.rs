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
