//! The [`Runtime`]: one engine, one linker, the compile cache and the epoch ticker.

use crate::bindings::Plugin as PluginWorld;
use crate::cache::{CacheOutcome, CompileCache};
use crate::error::LoadError;
use crate::nn::{GraphRegistry, NoGraphs};
use crate::plugin::{LoadReport, Plugin};
use crate::state::State;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tessera_manifest::{Digest, Manifest, ManifestError, SUPPORTED_WORLD};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

/// How often the epoch advances; per-call time limits are counted in these ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Settings of a [`Runtime`].
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Compile cache directory; `None` compiles every load in memory.
    pub cache_dir: Option<PathBuf>,
    /// Networks offered to plugins through `host-nn`.
    pub graphs: Arc<dyn GraphRegistry>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: Some(default_cache_dir()),
            graphs: Arc::new(NoGraphs),
        }
    }
}

/// `$TESSERA_CACHE_DIR/components`, else the user's cache directory, else a temporary one.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("TESSERA_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("tessera")))
        .unwrap_or_else(|| std::env::temp_dir().join("tessera-cache"))
        .join("components")
}

/// Per-load options.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Asset files that replace the manifest's paths, by asset name.
    pub asset_overrides: BTreeMap<String, PathBuf>,
}

/// Hosts plugins. Cheap to share (`Arc`); dropping the last handle stops the epoch ticker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<State>,
    cache: Option<CompileCache>,
    graphs: Arc<dyn GraphRegistry>,
    ticker_stop: Arc<AtomicBool>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
        let mut wasm_config = Config::new();
        wasm_config.wasm_component_model(true);
        wasm_config.epoch_interruption(true);
        let engine = Engine::new(&wasm_config).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        PluginWorld::add_to_linker::<State, HasSelf<State>>(&mut linker, |state| state)
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), ticker_stop.clone())?;
        let cache = config.cache_dir.map(|dir| CompileCache::new(dir, &engine));
        Ok(Self {
            engine,
            linker,
            cache,
            graphs: config.graphs,
            ticker_stop,
        })
    }

    pub fn cache(&self) -> Option<&CompileCache> {
        self.cache.as_ref()
    }

    /// Loads an installed plugin from its `plugin.toml`.
    pub fn load(&self, manifest_path: &Path, options: &LoadOptions) -> Result<Plugin, LoadError> {
        let started = Instant::now();
        let manifest = Manifest::from_file(manifest_path)?;
        let id = manifest.plugin.id.clone();
        let (component_path, expected) = manifest.installed_component(manifest_path)?;
        let bytes = std::fs::read(&component_path).map_err(|source| LoadError::Read {
            plugin: id.clone(),
            path: component_path.clone(),
            source,
        })?;
        let found = Digest::of(&bytes);
        if found != expected {
            return Err(ManifestError::DigestMismatch {
                plugin: id,
                component: component_path,
                expected: expected.to_hex(),
                found: found.to_hex(),
            }
            .into());
        }
        let compile_error = |e: wasmtime::Error| LoadError::Compile {
            plugin: id.clone(),
            path: component_path.clone(),
            message: format!("{e:#}"),
        };
        let (component, cache) = match &self.cache {
            Some(cache) => cache
                .load_or_compile(&self.engine, &bytes, &found)
                .map_err(compile_error)?,
            None => (
                wasmtime::component::Component::new(&self.engine, &bytes).map_err(compile_error)?,
                CacheOutcome::Disabled,
            ),
        };
        let compiled = started.elapsed();
        let mismatch = |e: wasmtime::Error| LoadError::WorldMismatch {
            plugin: id.clone(),
            world: SUPPORTED_WORLD.to_string(),
            detail: format!("{e:#}"),
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(mismatch)?;
        let pre = crate::bindings::PluginPre::new(instance_pre).map_err(mismatch)?;
        let assets = crate::plugin::read_assets(&manifest, manifest_path, options)?;
        let report = LoadReport {
            cache,
            compile_time: compiled,
            total_time: Duration::ZERO,
        };
        Plugin::start(
            manifest,
            manifest_path.to_path_buf(),
            found,
            self.engine.clone(),
            pre,
            assets,
            self.graphs.clone(),
            report,
            started,
        )
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) -> Result<(), LoadError> {
    std::thread::Builder::new()
        .name("tessera-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(|_| ())
        .map_err(|e| LoadError::Engine(format!("cannot start the epoch thread: {e}")))
}

/// One entry of a plugins directory.
#[derive(Debug)]
pub struct DiscoveredPlugin {
    pub manifest_path: PathBuf,
    pub manifest: Result<Manifest, ManifestError>,
}

/// Lists the plugins of a directory: every immediate subdirectory with a `plugin.toml`, sorted
/// by path. A manifest that does not parse is listed with its error rather than hidden.
pub fn discover(dir: &Path) -> std::io::Result<Vec<DiscoveredPlugin>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let manifest_path = entry?.path().join("plugin.toml");
        if manifest_path.is_file() {
            let manifest = Manifest::from_file(&manifest_path);
            found.push(DiscoveredPlugin {
                manifest_path,
                manifest,
            });
        }
    }
    found.sort_by(|a, b| a.manifest_path.cmp(&b.manifest_path));
    Ok(found)
}
