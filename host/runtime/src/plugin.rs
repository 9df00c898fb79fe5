//! A loaded plugin: its manifest, its pre-linked component and a pool of warm instances.

use crate::bindings::{Plugin as PluginWorld, PluginPre};
use crate::cache::CacheOutcome;
use crate::error::{LoadError, RuntimeError};
use crate::nn::GraphRegistry;
use crate::runtime::{EPOCH_TICK, LoadOptions};
use crate::state::State;
use crate::types::{
    Asset, Detokenized, Params, PayloadSize, PluginError, PluginInfo, Tokens, Value,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera_manifest::{Digest, Manifest};
use wasmtime::{Engine, Store, Trap};

/// Timings and cache use of one load.
#[derive(Debug, Clone, Copy)]
pub struct LoadReport {
    pub cache: CacheOutcome,
    /// Reading, hashing and compiling (or deserialising) the component.
    pub compile_time: Duration,
    /// Everything, including the first instance's `init`.
    pub total_time: Duration,
}

/// A warm instance: its own store (and so its own memory cap) with `init` already run.
struct Instance {
    store: Store<State>,
    bindings: PluginWorld,
}

/// A loaded plugin. Calls may come from many threads; each takes an instance from the pool.
pub struct Plugin {
    id: Arc<str>,
    manifest: Manifest,
    manifest_path: PathBuf,
    digest: Digest,
    engine: Engine,
    pre: PluginPre<State>,
    assets: Vec<Asset>,
    config: Params,
    graphs: Arc<dyn GraphRegistry>,
    nn_allowed: Arc<[String]>,
    info: PluginInfo,
    idle: Mutex<Vec<Instance>>,
    report: LoadReport,
}

impl Plugin {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        manifest: Manifest,
        manifest_path: PathBuf,
        digest: Digest,
        engine: Engine,
        pre: PluginPre<State>,
        assets: Vec<Asset>,
        graphs: Arc<dyn GraphRegistry>,
        mut report: LoadReport,
        started: Instant,
    ) -> Result<Self, LoadError> {
        let id: Arc<str> = manifest.plugin.id.as_str().into();
        let config = manifest
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let nn_allowed = manifest.nn.allow.clone().into();
        let mut plugin = Self {
            id: id.clone(),
            manifest,
            manifest_path,
            digest,
            engine,
            pre,
            assets,
            config,
            graphs,
            nn_allowed,
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                modalities: vec![],
            },
            idle: Mutex::new(Vec::new()),
            report,
        };
        let start_error = |source| LoadError::Start {
            plugin: id.to_string(),
            source: Box::new(source),
        };
        let mut first = plugin.new_instance().map_err(start_error)?;
        plugin.info = plugin
            .call_on(&mut first, "describe", |store, b| {
                b.tessera_plugin_modality().call_describe(store)
            })
            .map_err(start_error)?;
        let declared = plugin.manifest.plugin.domains.clone();
        let described: Vec<String> = plugin
            .info
            .modalities
            .iter()
            .map(|m| m.domain.clone())
            .collect();
        if declared.iter().any(|d| !described.contains(d)) {
            return Err(LoadError::DomainMismatch {
                plugin: id.to_string(),
                declared,
                described,
            });
        }
        plugin
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(first);
        report.total_time = started.elapsed();
        plugin.report = report;
        Ok(plugin)
    }

    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn manifest_path(&self) -> &Path {
        &self.manifest_path
    }
    pub fn digest(&self) -> Digest {
        self.digest
    }
    /// What the plugin said about itself at load.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }
    pub fn load_report(&self) -> LoadReport {
        self.report
    }
    pub fn serves(&self, domain: &str) -> bool {
        self.manifest.plugin.domains.iter().any(|d| d == domain)
    }
    /// Warm instances waiting in the pool.
    pub fn idle_instances(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Turns a user-facing value into token ids of `domain`.
    pub fn tokenize(
        &self,
        domain: &str,
        input: &Value,
        params: &Params,
    ) -> Result<Tokens, RuntimeError> {
        self.check_domain(domain)?;
        self.check_input(
            "tokenize",
            domain.len() + input.payload_size() + params.payload_size(),
        )?;
        let tokens = self
            .call("tokenize", |store, b| {
                b.tessera_plugin_modality()
                    .call_tokenize(store, domain, input, params)
            })?
            .map_err(|error| self.plugin_error("tokenize", error))?;
        self.check_output("tokenize", tokens.payload_size())?;
        Ok(tokens)
    }

    /// Turns token ids back into values (the first artifact is the primary one).
    pub fn detokenize(
        &self,
        tokens: &Tokens,
        params: &Params,
    ) -> Result<Detokenized, RuntimeError> {
        self.check_domain(&tokens.domain)?;
        self.check_input("detokenize", tokens.payload_size() + params.payload_size())?;
        let out = self
            .call("detokenize", |store, b| {
                b.tessera_plugin_modality()
                    .call_detokenize(store, tokens, params)
            })?
            .map_err(|error| self.plugin_error("detokenize", error))?;
        self.check_output("detokenize", out.payload_size())?;
        Ok(out)
    }

    fn check_domain(&self, domain: &str) -> Result<(), RuntimeError> {
        if self.serves(domain) {
            return Ok(());
        }
        Err(RuntimeError::UnknownDomain {
            plugin: self.id.to_string(),
            domain: domain.to_string(),
            served: self.manifest.plugin.domains.join(", "),
        })
    }

    fn check_input(&self, function: &'static str, size: usize) -> Result<(), RuntimeError> {
        let limit = self.manifest.limits.max_input_bytes;
        if size as u64 > limit {
            return Err(RuntimeError::InputTooLarge {
                plugin: self.id.to_string(),
                function,
                size: size as u64,
                limit,
            });
        }
        Ok(())
    }

    fn check_output(&self, function: &'static str, size: usize) -> Result<(), RuntimeError> {
        let limit = self.manifest.limits.max_output_bytes;
        if size as u64 > limit {
            return Err(RuntimeError::OutputTooLarge {
                plugin: self.id.to_string(),
                function,
                size: size as u64,
                limit,
            });
        }
        Ok(())
    }

    fn plugin_error(&self, function: &'static str, error: PluginError) -> RuntimeError {
        RuntimeError::Plugin {
            plugin: self.id.to_string(),
            function,
            error,
        }
    }

    /// A fresh instance with its own store and memory cap, `init` already run.
    fn new_instance(&self) -> Result<Instance, RuntimeError> {
        let limits = &self.manifest.limits;
        let state = State::new(
            self.id.clone(),
            limits.memory_mib << 20,
            self.graphs.clone(),
            self.nn_allowed.clone(),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(self.deadline_ticks());
        store.data_mut().begin_call();
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify("instantiate", e, store.data()))?;
        let mut instance = Instance { store, bindings };
        let (assets, config) = (&self.assets, &self.config);
        self.call_on(&mut instance, "init", |store, b| {
            b.tessera_plugin_modality().call_init(store, assets, config)
        })?
        .map_err(|error| self.plugin_error("init", error))?;
        Ok(instance)
    }

    fn deadline_ticks(&self) -> u64 {
        self.manifest
            .limits
            .call_timeout_ms
            .div_ceil(EPOCH_TICK.as_millis() as u64)
            + 1
    }

    /// Runs `f` on a pooled instance; a trapped instance is dropped, a healthy one goes back.
    fn call<R>(
        &self,
        function: &'static str,
        f: impl FnOnce(&mut Store<State>, &PluginWorld) -> wasmtime::Result<R>,
    ) -> Result<R, RuntimeError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut instance = match pooled {
            Some(instance) => instance,
            None => self.new_instance()?,
        };
        let result = self.call_on(&mut instance, function, f)?;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.manifest.limits.max_instances as usize {
            idle.push(instance);
        }
        Ok(result)
    }

    fn call_on<R>(
        &self,
        instance: &mut Instance,
        function: &'static str,
        f: impl FnOnce(&mut Store<State>, &PluginWorld) -> wasmtime::Result<R>,
    ) -> Result<R, RuntimeError> {
        instance.store.data_mut().begin_call();
        instance.store.set_epoch_deadline(self.deadline_ticks());
        f(&mut instance.store, &instance.bindings)
            .map_err(|e| self.classify(function, e, instance.store.data()))
    }

    /// Names the limit or fault behind a failed call.
    fn classify(
        &self,
        function: &'static str,
        error: wasmtime::Error,
        state: &State,
    ) -> RuntimeError {
        let plugin = self.id.to_string();
        let trap = error.downcast_ref::<Trap>().copied();
        if trap == Some(Trap::Interrupt) {
            return RuntimeError::Timeout {
                plugin,
                function,
                limit_ms: self.manifest.limits.call_timeout_ms,
            };
        }
        if let Some(requested_bytes) = state.limiter.denied {
            return RuntimeError::MemoryLimit {
                plugin,
                function,
                limit_bytes: state.limiter.limit,
                requested_bytes,
            };
        }
        match (trap, &state.last_error) {
            (Some(Trap::UnreachableCodeReached), Some(message)) => RuntimeError::Panic {
                plugin,
                function,
                message: message.clone(),
            },
            _ => RuntimeError::Trap {
                plugin,
                function,
                message: format!("{error:#}"),
            },
        }
    }
}

/// Reads the manifest's assets (or their overrides), checking declared digests.
pub(crate) fn read_assets(
    manifest: &Manifest,
    manifest_path: &Path,
    options: &LoadOptions,
) -> Result<Vec<Asset>, LoadError> {
    let plugin = &manifest.plugin.id;
    if let Some(name) = options
        .asset_overrides
        .keys()
        .find(|name| !manifest.assets.contains_key(*name))
    {
        return Err(LoadError::UnknownAsset {
            plugin: plugin.clone(),
            asset: name.clone(),
            declared: manifest
                .assets
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let mut assets = Vec::new();
    for (name, spec) in &manifest.assets {
        let overridden = options.asset_overrides.get(name);
        let path = match overridden {
            Some(path) => path.clone(),
            None => manifest.asset_path(name, manifest_path)?,
        };
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && !spec.required
                    && overridden.is_none() =>
            {
                continue;
            }
            Err(e) => {
                return Err(LoadError::AssetMissing {
                    plugin: plugin.clone(),
                    asset: name.clone(),
                    path,
                    hint: format!(
                        "{e}; give the file with --asset {name}=PATH or fix `assets.{name}.path`"
                    ),
                });
            }
        };
        if let Some(expected) = &spec.sha256 {
            let found = Digest::of(&data).to_hex();
            if !found.eq_ignore_ascii_case(expected) {
                return Err(LoadError::AssetDigest {
                    plugin: plugin.clone(),
                    asset: name.clone(),
                    path,
                    expected: expected.clone(),
                    found,
                });
            }
        }
        assets.push(Asset {
            name: name.clone(),
            data,
        });
    }
    Ok(assets)
}
