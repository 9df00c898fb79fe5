//! Helpers shared by the test modules: paths and golden comparison.

use std::path::{Path, PathBuf};

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn repo_root() -> PathBuf {
    crate_dir().join("../..")
}

pub fn blessing() -> bool {
    std::env::var_os("TESSERA_BLESS").is_some_and(|value| value == "1")
}

/// Compares `actual` with the file at `expected_path`, or rewrites the file when blessing.
/// Returns a description of the mismatch.
pub fn compare_or_bless(expected_path: &Path, actual: &str) -> Option<String> {
    if blessing() {
        std::fs::write(expected_path, actual).expect("write blessed file");
        return None;
    }
    match std::fs::read_to_string(expected_path) {
        Ok(expected) if expected == actual => None,
        Ok(expected) => Some(format!(
            "{} differs (rerun with TESSERA_BLESS=1 to accept)\n--- expected\n{expected}\n--- actual\n{actual}",
            expected_path.display()
        )),
        Err(error) => Some(format!(
            "{}: {error} (run with TESSERA_BLESS=1 to create it)\n--- actual\n{actual}",
            expected_path.display()
        )),
    }
}

/// The `.toml` files of a directory, sorted.
pub fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}
