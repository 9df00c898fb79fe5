//! On-disk cache of compiled components, keyed by the component's digest and by the engine's
//! compatibility hash (wasmtime version and every setting that affects code generation).
//!
//! Only files this cache wrote are ever deserialised: the path is derived from the key inside
//! the cache directory, and files are written to a temporary and renamed, so a crash never
//! leaves a half-written artifact under a final name.

use sha2::{Digest as _, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use tessera_manifest::{Digest, write_atomically};
use wasmtime::Engine;
use wasmtime::component::Component;

/// What the cache did for one load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// A precompiled artifact was deserialised.
    Hit,
    /// The component was compiled and the artifact written.
    Miss,
    /// Caching is off; the component was compiled in memory.
    Disabled,
}

/// The compile cache directory.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

/// Feeds `Hash` output into SHA-256, so the engine key is stable across builds of tessera
/// (std's `DefaultHasher` makes no such promise).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        unreachable!("only the full SHA-256 is read")
    }
}

impl CompileCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = Digest(hasher.0.finalize().into()).to_hex()[..16].to_string();
        Self { dir, engine_key }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn artifact_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", digest.to_hex(), self.engine_key))
    }

    /// Returns the compiled component for `bytes` (whose digest is `digest`), from the cache when
    /// possible. A cache that cannot be read or written degrades to compiling in memory.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &Digest,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.artifact_path(digest);
        // Read into memory rather than mapping the file: a mapped artifact that someone
        // truncates on disk would take the whole host down with SIGBUS.
        if let Ok(artifact) = std::fs::read(&path) {
            // SAFETY: `path` is inside the cache directory and named by the digest of the source
            // component and the engine's compatibility key; only this function writes such files,
            // from `Engine::precompile_component` of the same engine configuration, and wasmtime
            // still checks the artifact's header against the engine before using it.
            match unsafe { Component::deserialize(engine, &artifact) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "discarding unusable cached component: {e}")
                }
            }
        }
        let artifact = engine.precompile_component(bytes)?;
        let stored = std::fs::create_dir_all(&self.dir)
            .map_err(|e| e.to_string())
            .and_then(|()| write_atomically(&path, &artifact).map_err(|e| e.to_string()));
        if let Err(e) = stored {
            tracing::warn!(dir = %self.dir.display(), "compile cache not written: {e}");
        }
        // SAFETY: `artifact` was produced just now by `precompile_component` on this engine.
        let component = unsafe { Component::deserialize(engine, &artifact)? };
        Ok((component, CacheOutcome::Miss))
    }
}
