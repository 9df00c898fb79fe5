//! Test harness for tessera plugins: loads a built plugin into the real host sandbox (the same
//! runtime, limits and linker `tessera` uses), so a plugin's tests exercise what users run.
//!
//! ```no_run
//! use tessera_plugin_test::{installed_plugin, PluginHarness};
//!
//! let harness = PluginHarness::load(installed_plugin("mask-patches").unwrap()).unwrap();
//! let tokens = harness.tokenize_text("mask_patches@224", "not an image").unwrap_err();
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tessera_runtime::types::{Detokenized, Params, Tokens, Value};
use tessera_runtime::{
    GraphRegistry, LoadError, LoadOptions, NoGraphs, Plugin, Runtime, RuntimeConfig, RuntimeError,
};

pub use tessera_runtime;

/// One plugin loaded into its own runtime.
pub struct PluginHarness {
    plugin: Plugin,
    // Kept alive for the epoch ticker that enforces call time limits.
    _runtime: Runtime,
}

impl PluginHarness {
    /// Loads an installed plugin (`plugin.toml` with its component) with default settings. The
    /// compile cache is the user's (`$TESSERA_CACHE_DIR`); entries are keyed by the component's
    /// digest, so a rebuilt plugin is never served from a stale entry.
    pub fn load(manifest: impl AsRef<Path>) -> Result<Self, LoadError> {
        Self::load_with(manifest, &LoadOptions::default(), Arc::new(NoGraphs))
    }

    /// Loads with asset overrides and a set of host graphs.
    pub fn load_with(
        manifest: impl AsRef<Path>,
        options: &LoadOptions,
        graphs: Arc<dyn GraphRegistry>,
    ) -> Result<Self, LoadError> {
        let runtime = Runtime::new(RuntimeConfig {
            graphs,
            ..RuntimeConfig::default()
        })?;
        let plugin = runtime.load(manifest.as_ref(), options)?;
        Ok(Self {
            plugin,
            _runtime: runtime,
        })
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    pub fn tokenize(
        &self,
        domain: &str,
        input: &Value,
        params: &[(&str, &str)],
    ) -> Result<Tokens, RuntimeError> {
        self.plugin.tokenize(domain, input, &owned(params))
    }

    pub fn tokenize_text(&self, domain: &str, text: &str) -> Result<Tokens, RuntimeError> {
        self.tokenize(domain, &Value::Text(text.to_string()), &[])
    }

    pub fn detokenize(
        &self,
        tokens: &Tokens,
        params: &[(&str, &str)],
    ) -> Result<Detokenized, RuntimeError> {
        self.plugin.detokenize(tokens, &owned(params))
    }
}

fn owned(params: &[(&str, &str)]) -> Params {
    params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The installed `plugin.toml` of plugin `id` under the build's target directory
/// (`target/plugins/<id>` or `target/test-plugins/<id>`), as `cargo xtask plugins` leaves it.
/// `CARGO_TARGET_DIR` is honoured; otherwise the nearest `target/` above the current directory.
pub fn installed_plugin(id: &str) -> Result<PathBuf, String> {
    let targets: Vec<PathBuf> = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => {
            let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
            cwd.ancestors()
                .map(|a| a.join("target"))
                .filter(|t| t.is_dir())
                .collect()
        }
    };
    for target in &targets {
        for folder in ["plugins", "test-plugins"] {
            let manifest = target.join(folder).join(id).join("plugin.toml");
            if manifest.is_file() {
                return Ok(manifest);
            }
        }
    }
    Err(format!(
        "plugin `{id}` is not built (looked in plugins/ and test-plugins/ of {:?}); run `cargo xtask plugins`",
        targets
    ))
}
