//! Plugin manifests (`plugin.toml`) for tessera: parsing, validation, component digests,
//! asset path resolution and packing a built wasm module into an installable plugin.
//!
//! A manifest exists in two forms. The *source* manifest lives next to a plugin's crate and
//! leaves `component` and `sha256` out; [`pack`] fills them in when it installs the plugin.
//! The *installed* manifest must have both, and the host refuses a component whose bytes do not
//! hash to the recorded digest.

mod digest;
mod error;
mod expand;
mod pack;

pub use digest::{Digest, sha256_hex};
pub use error::ManifestError;
pub use expand::expand_vars;
pub use pack::{PackedPlugin, componentize, is_component, pack, write_atomically};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The only world this host links. A component built against anything else fails at load.
pub const SUPPORTED_WORLD: &str = "tessera:plugin/plugin@0.1.0";

/// The default per-instance memory cap, in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// The default per-call time cap, in milliseconds.
pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 5_000;
/// The default cap on the bytes of one call's input and of one call's output.
pub const DEFAULT_MAX_IO_BYTES: u64 = 32 << 20;
/// The default number of warm instances kept per plugin.
pub const DEFAULT_MAX_INSTANCES: u32 = 4;

/// A parsed `plugin.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub plugin: PluginSection,
    /// Files handed to the plugin at `init`, by name.
    #[serde(default)]
    pub assets: BTreeMap<String, AssetSpec>,
    #[serde(default)]
    pub nn: NnSection,
    #[serde(default)]
    pub limits: Limits,
    /// String parameters handed to the plugin at `init`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// Stable identifier, `[a-z0-9_-]+`, unique in a plugins directory.
    pub id: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// The WIT world the component targets, e.g. `tessera:plugin/plugin@0.1.0`.
    pub world: String,
    /// The 4M domains this plugin serves.
    pub domains: Vec<String>,
    /// Component file, relative to the manifest's directory (installed manifests only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<PathBuf>,
    /// Lower-case hex sha256 of the component file (installed manifests only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Where an asset comes from. `path` may use `${VAR}` and `${VAR:-default}`; relative paths are
/// taken from the manifest's directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetSpec {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default = "default_true")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

fn default_true() -> bool {
    true
}

/// Host networks the plugin may load through `host-nn`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NnSection {
    #[serde(default)]
    pub allow: Vec<String>,
}

/// Sandbox limits of one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory cap of one instance, in MiB.
    pub memory_mib: u64,
    /// Wall-clock cap of one call, in milliseconds (enforced by epoch interruption).
    pub call_timeout_ms: u64,
    /// Cap on the bytes passed into one call.
    pub max_input_bytes: u64,
    /// Cap on the bytes returned by one call.
    pub max_output_bytes: u64,
    /// Warm instances kept in the pool.
    pub max_instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mib: DEFAULT_MEMORY_MIB,
            call_timeout_ms: DEFAULT_CALL_TIMEOUT_MS,
            max_input_bytes: DEFAULT_MAX_IO_BYTES,
            max_output_bytes: DEFAULT_MAX_IO_BYTES,
            max_instances: DEFAULT_MAX_INSTANCES,
        }
    }
}

impl Manifest {
    /// Parses and validates a manifest's text; `origin` is only used in error messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| ManifestError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        manifest.validate(origin)?;
        Ok(manifest)
    }

    /// Reads, parses and validates a manifest file.
    pub fn from_file(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Renders the manifest back to TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a manifest always serialises to TOML")
    }

    fn validate(&self, origin: &Path) -> Result<(), ManifestError> {
        let invalid = |field: &str, reason: String| ManifestError::Invalid {
            path: origin.to_path_buf(),
            field: field.to_string(),
            reason,
        };
        let p = &self.plugin;
        if p.id.is_empty()
            || !p
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "plugin.id",
                format!(
                    "{:?} must be non-empty and use only a-z, 0-9, '-' and '_'",
                    p.id
                ),
            ));
        }
        if p.version.trim().is_empty() {
            return Err(invalid("plugin.version", "must not be empty".into()));
        }
        if p.world != SUPPORTED_WORLD {
            return Err(invalid(
                "plugin.world",
                format!(
                    "{:?} is not supported; this host links {SUPPORTED_WORLD:?}",
                    p.world
                ),
            ));
        }
        if p.domains.is_empty() {
            return Err(invalid(
                "plugin.domains",
                "a plugin must serve at least one domain".into(),
            ));
        }
        for d in &p.domains {
            if d.is_empty() || d.chars().any(|c| c.is_whitespace()) {
                return Err(invalid(
                    "plugin.domains",
                    format!("{d:?} is not a domain name"),
                ));
            }
        }
        if let Some(component) = &p.component
            && (component.is_absolute()
                || component
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir)))
        {
            return Err(invalid(
                "plugin.component",
                format!(
                    "{} must be a path inside the plugin's directory",
                    component.display()
                ),
            ));
        }
        if let Some(sha) = &p.sha256 {
            Digest::parse(sha).map_err(|reason| invalid("plugin.sha256", reason))?;
        }
        for (name, asset) in &self.assets {
            if let Some(sha) = &asset.sha256 {
                Digest::parse(sha)
                    .map_err(|reason| invalid(&format!("assets.{name}.sha256"), reason))?;
            }
        }
        let l = &self.limits;
        let ranges: [(&str, u64, u64, u64); 5] = [
            ("limits.memory_mib", l.memory_mib, 1, 4096),
            ("limits.call_timeout_ms", l.call_timeout_ms, 1, 600_000),
            ("limits.max_input_bytes", l.max_input_bytes, 1, 1 << 32),
            ("limits.max_output_bytes", l.max_output_bytes, 1, 1 << 32),
            ("limits.max_instances", u64::from(l.max_instances), 1, 64),
        ];
        for (field, value, lo, hi) in ranges {
            if !(lo..=hi).contains(&value) {
                return Err(invalid(field, format!("{value} is outside {lo}..={hi}")));
            }
        }
        Ok(())
    }

    /// The component path and digest of an installed manifest, or an error saying which is missing.
    pub fn installed_component(
        &self,
        manifest_path: &Path,
    ) -> Result<(PathBuf, Digest), ManifestError> {
        let missing = |field: &str| ManifestError::Invalid {
            path: manifest_path.to_path_buf(),
            field: field.to_string(),
            reason:
                "required in an installed manifest (run the plugin through `tessera plugins pack`)"
                    .into(),
        };
        let component = self
            .plugin
            .component
            .as_ref()
            .ok_or_else(|| missing("plugin.component"))?;
        let sha = self
            .plugin
            .sha256
            .as_ref()
            .ok_or_else(|| missing("plugin.sha256"))?;
        let dir = manifest_path.parent().unwrap_or(Path::new("."));
        let digest = Digest::parse(sha).map_err(|reason| ManifestError::Invalid {
            path: manifest_path.to_path_buf(),
            field: "plugin.sha256".into(),
            reason,
        })?;
        Ok((dir.join(component), digest))
    }

    /// Resolves an asset's path (variables expanded, relative to the manifest's directory).
    pub fn asset_path(&self, name: &str, manifest_path: &Path) -> Result<PathBuf, ManifestError> {
        let spec = self
            .assets
            .get(name)
            .ok_or_else(|| ManifestError::Invalid {
                path: manifest_path.to_path_buf(),
                field: format!("assets.{name}"),
                reason: "no such asset".into(),
            })?;
        // A relative path in an environment variable means "relative to where I am", not to the
        // manifest: `TESSERA_FIXTURES=../shared/fixtures tessera ...` must work from any plugin.
        let from_env = |name: &str| {
            let value = std::env::var(name).ok()?;
            match std::env::current_dir() {
                Ok(cwd) if Path::new(&value).is_relative() && !value.is_empty() => {
                    Some(cwd.join(&value).to_string_lossy().into_owned())
                }
                _ => Some(value),
            }
        };
        let expanded =
            expand_vars(&spec.path, from_env).map_err(|reason| ManifestError::Invalid {
                path: manifest_path.to_path_buf(),
                field: format!("assets.{name}.path"),
                reason,
            })?;
        let p = PathBuf::from(expanded);
        Ok(if p.is_absolute() {
            p
        } else {
            manifest_path.parent().unwrap_or(Path::new(".")).join(p)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[plugin]
id = "caption"
version = "0.1.0"
world = "tessera:plugin/plugin@0.1.0"
domains = ["caption"]

[assets.vocab]
path = "vocab.json"

[limits]
memory_mib = 64
"#;

    #[test]
    fn parses_a_source_manifest_with_default_limits() {
        let m = Manifest::parse(GOOD, Path::new("plugin.toml")).unwrap();
        assert_eq!(m.plugin.id, "caption");
        assert_eq!(m.limits.memory_mib, 64);
        assert_eq!(m.limits.call_timeout_ms, DEFAULT_CALL_TIMEOUT_MS);
        assert!(m.assets["vocab"].required);
        let again = Manifest::parse(&m.to_toml(), Path::new("x")).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn rejects_unknown_keys_with_their_location() {
        let err = Manifest::parse(
            &GOOD.replace("memory_mib", "memroy_mib"),
            Path::new("p.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("p.toml") && err.contains("memroy_mib"),
            "{err}"
        );
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn rejects_bad_fields_by_name() {
        for (from, to, field) in [
            ("id = \"caption\"", "id = \"Cap tion\"", "plugin.id"),
            (
                "tessera:plugin/plugin@0.1.0",
                "other:world/x@1.0.0",
                "plugin.world",
            ),
            ("domains = [\"caption\"]", "domains = []", "plugin.domains"),
            ("memory_mib = 64", "memory_mib = 0", "limits.memory_mib"),
        ] {
            let err = Manifest::parse(&GOOD.replace(from, to), Path::new("p.toml")).unwrap_err();
            match err {
                ManifestError::Invalid { field: f, .. } => assert_eq!(f, field),
                other => panic!("{field}: unexpected {other}"),
            }
        }
    }

    #[test]
    fn component_paths_must_stay_inside_the_plugin_directory() {
        let text = GOOD.replace("domains", "component = \"../evil.wasm\"\ndomains");
        let err = Manifest::parse(&text, Path::new("p.toml")).unwrap_err();
        assert!(
            matches!(err, ManifestError::Invalid { ref field, .. } if field == "plugin.component")
        );
    }

    #[test]
    fn installed_component_requires_digest() {
        let m = Manifest::parse(GOOD, Path::new("dir/plugin.toml")).unwrap();
        let err = m
            .installed_component(Path::new("dir/plugin.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("plugin.component"), "{err}");
    }
}
