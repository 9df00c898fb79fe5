//! Turning a built wasm module into an installed plugin directory.

use crate::{Digest, Manifest, ManifestError};
use std::path::{Path, PathBuf};

/// The first 8 bytes of a binary component: magic, then layer 1 (component) version 0x0d.
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// True when `bytes` is a component rather than a core module.
pub fn is_component(bytes: &[u8]) -> bool {
    bytes.starts_with(&COMPONENT_HEADER)
}

/// Wraps a core module that carries wit-bindgen's component-type section into a component;
/// a component is returned unchanged.
pub fn componentize(wasm: &[u8], origin: &Path) -> Result<Vec<u8>, ManifestError> {
    if is_component(wasm) {
        return Ok(wasm.to_vec());
    }
    let fail = |e: String| ManifestError::Componentize {
        input: origin.to_path_buf(),
        message: e,
    };
    let encoded = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(wasm)
        .map_err(|e| fail(format!("{e:#}")))?
        .encode()
        .map_err(|e| fail(format!("{e:#}")))?;
    Ok(encoded)
}

/// Where [`pack`] put a plugin.
#[derive(Debug, Clone)]
pub struct PackedPlugin {
    pub id: String,
    pub manifest_path: PathBuf,
    pub component_path: PathBuf,
    pub digest: Digest,
}

/// Installs a plugin: componentizes `wasm`, writes `<out_dir>/<id>/<id>.wasm` and an installed
/// `plugin.toml` (the source manifest with `component` and `sha256` filled in). Files are written
/// to temporaries and renamed, so a reader never sees half a plugin.
pub fn pack(
    source_manifest: &Path,
    wasm: &Path,
    out_dir: &Path,
) -> Result<PackedPlugin, ManifestError> {
    let mut manifest = Manifest::from_file(source_manifest)?;
    let bytes = std::fs::read(wasm).map_err(|source| ManifestError::Read {
        path: wasm.to_path_buf(),
        source,
    })?;
    let component = componentize(&bytes, wasm)?;
    let digest = Digest::of(&component);
    let id = manifest.plugin.id.clone();
    let dir = out_dir.join(&id);
    std::fs::create_dir_all(&dir).map_err(|source| ManifestError::Write {
        path: dir.clone(),
        source,
    })?;
    let file_name = PathBuf::from(format!("{id}.wasm"));
    let component_path = dir.join(&file_name);
    write_atomically(&component_path, &component)?;
    manifest.plugin.component = Some(file_name);
    manifest.plugin.sha256 = Some(digest.to_hex());
    let manifest_path = dir.join("plugin.toml");
    write_atomically(&manifest_path, manifest.to_toml().as_bytes())?;
    Ok(PackedPlugin {
        id,
        manifest_path,
        component_path,
        digest,
    })
}

/// Writes `bytes` to a sibling temporary file and renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ManifestError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let wrap = |source| ManifestError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, bytes).map_err(wrap)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        wrap(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_components_and_rejects_garbage() {
        assert!(is_component(&COMPONENT_HEADER));
        assert!(!is_component(b"\0asm\x01\0\0\0"));
        let err = componentize(b"not wasm at all", Path::new("x.wasm")).unwrap_err();
        assert!(err.to_string().contains("x.wasm"), "{err}");
    }
}
