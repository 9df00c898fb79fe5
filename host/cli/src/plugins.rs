//! `tessera plugins ...`: list, inspect, check and pack plugins.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tessera_runtime::{LoadOptions, Plugin, Runtime, RuntimeConfig, discover};

#[derive(Subcommand)]
pub enum PluginsCommand {
    /// List the installed plugins with their domains and digests.
    List,
    /// Show one plugin's manifest, limits, self-description and load timings.
    Inspect {
        /// Plugin id (in the plugins directory) or path to a plugin.toml.
        plugin: String,
    },
    /// Load every plugin (or the named ones): digest, world, assets and `init` must all pass.
    Check {
        /// Plugin ids or manifest paths (default: every plugin in the directory).
        ids: Vec<String>,
    },
    /// Turn a built wasm module into an installed plugin (component + manifest with digest).
    Pack {
        /// The plugin's source manifest.
        #[arg(long)]
        manifest: PathBuf,
        /// The built module (`target/wasm32-unknown-unknown/release/NAME.wasm`) or component.
        #[arg(long)]
        wasm: PathBuf,
        /// Plugins directory to install into.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `target/plugins` beside the build directory of this binary, else `./target/plugins`.
pub fn default_plugins_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|target| target.join("plugins")))
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(|| PathBuf::from("target/plugins"))
}

/// The manifest of a plugin given by id or by path.
pub fn manifest_path(plugin: &str, plugins_dir: &Path) -> Result<PathBuf> {
    let as_path = Path::new(plugin);
    if as_path.is_file() {
        return Ok(as_path.to_path_buf());
    }
    if as_path.join("plugin.toml").is_file() {
        return Ok(as_path.join("plugin.toml"));
    }
    let in_dir = plugins_dir.join(plugin).join("plugin.toml");
    if in_dir.is_file() {
        return Ok(in_dir);
    }
    let known: Vec<String> = discover(plugins_dir)
        .map(|found| {
            found
                .iter()
                .filter_map(|p| p.manifest.as_ref().ok().map(|m| m.plugin.id.clone()))
                .collect()
        })
        .unwrap_or_default();
    bail!(
        "no plugin `{plugin}` in {} (installed: {}); build them with `cargo xtask plugins` or pass --plugins DIR",
        plugins_dir.display(),
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )
}

pub fn runtime() -> Result<Runtime> {
    Runtime::new(RuntimeConfig::default()).context("starting the plugin runtime")
}

pub fn load(
    runtime: &Runtime,
    plugin: &str,
    plugins_dir: &Path,
    options: &LoadOptions,
) -> Result<Plugin> {
    let path = manifest_path(plugin, plugins_dir)?;
    runtime
        .load(&path, options)
        .with_context(|| format!("loading {}", path.display()))
}

pub fn run(cmd: PluginsCommand, plugins_dir: &Path) -> Result<ExitCode> {
    match cmd {
        PluginsCommand::List => list(plugins_dir),
        PluginsCommand::Inspect { plugin } => inspect(&plugin, plugins_dir),
        PluginsCommand::Check { ids } => check(&ids, plugins_dir),
        PluginsCommand::Pack {
            manifest,
            wasm,
            out,
        } => {
            let packed = tessera_manifest::pack(&manifest, &wasm, &out)?;
            println!(
                "packed `{}` into {} (sha256 {})",
                packed.id,
                packed.manifest_path.display(),
                packed.digest
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list(plugins_dir: &Path) -> Result<ExitCode> {
    let found = discover(plugins_dir)
        .with_context(|| format!("reading plugins directory {}", plugins_dir.display()))?;
    if found.is_empty() {
        println!(
            "no plugins in {} (build them with `cargo xtask plugins`)",
            plugins_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<14} {:<8} {:<14} {:<28} description",
        "id", "version", "sha256", "domains"
    );
    for entry in found {
        match entry.manifest {
            Ok(m) => println!(
                "{:<14} {:<8} {:<14} {:<28} {}",
                m.plugin.id,
                m.plugin.version,
                m.plugin
                    .sha256
                    .as_deref()
                    .map(|s| &s[..12.min(s.len())])
                    .unwrap_or("-"),
                m.plugin.domains.join(","),
                m.plugin.description
            ),
            Err(e) => println!(
                "{:<14} invalid manifest: {e}",
                entry.manifest_path.display()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(plugin: &str, plugins_dir: &Path) -> Result<ExitCode> {
    let runtime = runtime()?;
    let loaded = load(&runtime, plugin, plugins_dir, &LoadOptions::default())?;
    let m = loaded.manifest();
    let info = loaded.info();
    let report = loaded.load_report();
    println!("id:           {}", m.plugin.id);
    println!(
        "version:      {} (component says {} {})",
        m.plugin.version, info.name, info.version
    );
    println!("description:  {}", info.description);
    println!("manifest:     {}", loaded.manifest_path().display());
    println!("world:        {}", m.plugin.world);
    println!("sha256:       {}", loaded.digest());
    println!("modalities:");
    for md in &info.modalities {
        println!(
            "  {:<22} {:<14} vocab {:<8} tokens {}",
            md.domain,
            md.kind.to_string(),
            md.vocab_size.map_or("-".into(), |v| v.to_string()),
            md.max_tokens.map_or("-".into(), |v| v.to_string())
        );
    }
    println!(
        "assets:       {}",
        if m.assets.is_empty() {
            "none".to_string()
        } else {
            m.assets.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    );
    println!(
        "host-nn:      {}",
        if m.nn.allow.is_empty() {
            "none".to_string()
        } else {
            m.nn.allow.join(", ")
        }
    );
    let l = &m.limits;
    println!(
        "limits:       memory {} MiB, {} ms per call, input {} B, output {} B, {} warm instances",
        l.memory_mib, l.call_timeout_ms, l.max_input_bytes, l.max_output_bytes, l.max_instances
    );
    println!(
        "load:         compile cache {:?}, compile {:.1} ms, total {:.1} ms",
        report.cache,
        report.compile_time.as_secs_f64() * 1e3,
        report.total_time.as_secs_f64() * 1e3
    );
    Ok(ExitCode::SUCCESS)
}

fn check(plugins: &[String], plugins_dir: &Path) -> Result<ExitCode> {
    let runtime = runtime()?;
    let targets: Vec<String> = if plugins.is_empty() {
        discover(plugins_dir)
            .with_context(|| format!("reading plugins directory {}", plugins_dir.display()))?
            .into_iter()
            .map(|p| p.manifest_path.display().to_string())
            .collect()
    } else {
        plugins.to_vec()
    };
    let mut failed = 0;
    for target in &targets {
        match load(&runtime, target, plugins_dir, &LoadOptions::default()) {
            Ok(p) => println!(
                "ok      {:<14} {}",
                p.id(),
                p.manifest().plugin.domains.join(",")
            ),
            Err(e) => {
                failed += 1;
                println!("FAILED  {target}: {e:#}");
            }
        }
    }
    println!("{} plugin(s) checked, {failed} failed", targets.len());
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
