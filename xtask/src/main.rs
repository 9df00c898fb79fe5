//! Build tasks of the tessera repository, run as `cargo xtask <task>`.
//!
//! * `toolchain` — makes sure a wasm32-unknown-unknown toolchain is available (rustup's target
//!   when it is installed, else Debian's `rustc-web` + `rust-web-src` + `lld-22`, installed with
//!   apt-get when missing), idempotently.
//! * `plugins` — builds every plugin, the test plugins and the SDK examples for wasm32 and packs
//!   them into `target/plugins/` and `target/test-plugins/`.
//! * `test` — `plugins` (and Chromium for the browser test, with apt-get when missing), then the
//!   whole test suite (host workspace and plugin crates' native tests).
//! * `demo` — `plugins`, a release build of the `tessera` CLI, then the main job: the text
//!   plugins' round trips, and the caption -> boxes -> depth -> rgb workflow on the default model
//!   when `assets/model/` holds it.
//! * `default-model` — `plugins`, the release CLI, then the recipe of tessera's own model
//!   (`recipes/default-model/`) into `assets/model/`.

mod default_model;
mod toolchain;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use toolchain::Toolchain;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = repo_root()?;
    match args.first().map(String::as_str) {
        Some("toolchain") => {
            let toolchain = Toolchain::ensure()?;
            println!("wasm toolchain: {toolchain}");
            Ok(())
        }
        Some("plugins") => build_plugins(&root).map(|_| ()),
        Some("test") => test(&root, &args[1..]),
        Some("demo") => demo(&root),
        Some("default-model") => {
            let options = default_model::Options::parse(&root, &args[1..])?;
            let tessera = build_release_cli(&root)?;
            default_model::run(&root, &tessera, &options)
        }
        _ => {
            eprintln!("usage: cargo xtask <toolchain|plugins|test|demo|default-model>");
            bail!("unknown or missing task {:?}", args.first())
        }
    }
}

fn repo_root() -> Result<PathBuf> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest_dir
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf())
}

/// A workspace of wasm crates and where its packed plugins go.
struct PluginWorkspace {
    dir: PathBuf,
    /// Member directories (relative to `dir`) holding a `plugin.toml`, with their install folder.
    members: Vec<(PathBuf, PathBuf)>,
}

fn plugin_workspaces(root: &Path) -> Result<Vec<PluginWorkspace>> {
    let target = root.join("target");
    let mut plugins = PluginWorkspace {
        dir: root.join("plugins"),
        members: vec![],
    };
    for (sub, out) in [("", "plugins"), ("testing", "test-plugins")] {
        let base = plugins.dir.join(sub);
        for entry in sorted_dirs(&base)? {
            if entry.join("plugin.toml").is_file() {
                plugins.members.push((
                    entry.strip_prefix(&plugins.dir)?.to_path_buf(),
                    target.join(out),
                ));
            }
        }
    }
    let mut all = vec![plugins];
    for example in sorted_dirs(&root.join("sdk/examples"))? {
        if example.join("plugin.toml").is_file() {
            all.push(PluginWorkspace {
                dir: example,
                members: vec![(PathBuf::new(), target.join("test-plugins"))],
            });
        }
    }
    Ok(all)
}

fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(vec![]);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// The `[package] name` of a crate, as its wasm artifact is named.
fn artifact_name(crate_dir: &Path) -> Result<String> {
    let path = crate_dir.join("Cargo.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value: toml::Value =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let name = value
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .with_context(|| format!("{} has no [package] name", path.display()))?;
    Ok(name.replace('-', "_"))
}

fn build_plugins(root: &Path) -> Result<Toolchain> {
    let toolchain = Toolchain::ensure()?;
    println!("xtask: wasm toolchain: {toolchain}");
    // One target directory for every plugin workspace, so the wasm std is built once.
    let target_dir = root.join("plugins/target");
    for ws in plugin_workspaces(root)? {
        println!("xtask: building {}", ws.dir.display());
        let status = toolchain
            .cargo_build(&ws.dir, &target_dir)
            .status()
            .with_context(|| format!("running cargo for {}", ws.dir.display()))?;
        if !status.success() {
            bail!(
                "building the plugins in {} failed ({status})",
                ws.dir.display()
            );
        }
        for (member, out_dir) in &ws.members {
            let crate_dir = ws.dir.join(member);
            let wasm = target_dir
                .join("wasm32-unknown-unknown/release")
                .join(format!("{}.wasm", artifact_name(&crate_dir)?));
            let packed = tessera_manifest::pack(&crate_dir.join("plugin.toml"), &wasm, out_dir)
                .with_context(|| format!("packing {}", crate_dir.display()))?;
            println!(
                "xtask: packed {:<14} {} ({} bytes)",
                packed.id,
                packed.manifest_path.display(),
                std::fs::metadata(&packed.component_path)
                    .map(|m| m.len())
                    .unwrap_or(0)
            );
        }
    }
    Ok(toolchain)
}

fn run(cmd: &mut Command) -> Result<()> {
    println!("xtask: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Headless Chromium for the web page's browser test.
fn ensure_chromium() -> Result<()> {
    let installed = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .any(|name| Path::new("/usr/bin").join(name).is_file());
    if installed {
        return Ok(());
    }
    println!("xtask: installing Debian's chromium for the browser test");
    toolchain::apt_install(&["chromium"], "install chromium by hand")
}

fn test(root: &Path, extra: &[String]) -> Result<()> {
    ensure_chromium()?;
    let toolchain = build_plugins(root)?;
    // Plugin crates' own unit tests run natively, with the same compiler that builds them.
    for ws in plugin_workspaces(root)? {
        run(&mut toolchain.cargo_native_test(&ws.dir, &root.join("plugins/target")))?;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .current_dir(root)
        .args(["test", "--workspace"])
        .args(extra))
}

/// The plugins and a release build of the `tessera` binary; its path.
fn build_release_cli(root: &Path) -> Result<PathBuf> {
    build_plugins(root)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo)
        .current_dir(root)
        .args(["build", "--release", "-p", "tessera-cli"]))?;
    Ok(root.join("target/release/tessera"))
}

fn demo(root: &Path) -> Result<()> {
    let tessera = build_release_cli(root)?;
    run(Command::new(&tessera)
        .current_dir(root)
        .args(["plugins", "list"]))?;
    run(Command::new(&tessera).current_dir(root).args(["demo"]))?;
    // The chained generation needs tessera's own model, which the recipe writes.
    if root.join("assets/model/config.json").is_file() {
        run(Command::new(&tessera).current_dir(root).args([
            "run",
            "caption-boxes-depth-rgb",
            "--input",
            "caption=a large red cube left of a small blue sphere.",
            "--out",
            "out/demo/caption-boxes-depth-rgb",
            "--no-cache",
        ]))
    } else {
        println!(
            "xtask: no default model in assets/model/ yet, so no chained generation; \
             `cargo xtask default-model` trains it"
        );
        Ok(())
    }
}
