//! `tessera tokenize`, `tessera detokenize` and `tessera demo`: using plugins directly, before
//! any model is involved.

use crate::plugins::{load, runtime};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tessera_runtime::types::{Detokenized, Image, Params, Tokens, Value};
use tessera_runtime::{LoadOptions, Plugin};

#[derive(Args)]
pub struct PluginArgs {
    /// Plugin id (or path to its plugin.toml).
    #[arg(long)]
    plugin: String,
    /// Domain to use; defaults to the plugin's only domain.
    #[arg(long)]
    domain: Option<String>,
    /// An asset file, as NAME=PATH, or PATH alone for a plugin with one asset (e.g. the vocabulary).
    #[arg(long = "asset", value_name = "[NAME=]PATH")]
    assets: Vec<String>,
    /// A plugin parameter, as KEY=VALUE.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// A 4M tokenizer offered to the plugin as host-nn graphs, as DOMAIN=DIR (image plugins,
    /// e.g. `tok_rgb@224=path/to/tokenizer`). Repeatable.
    #[arg(long = "tokenizer", value_name = "DOMAIN=DIR", value_parser = tessera_nn::parse_tokenizer_arg)]
    tokenizers: Vec<(String, PathBuf)>,
    /// Print JSON instead of plain text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    plugin: PluginArgs,
    /// The value: text, or @FILE (a .png/.jpg image, a .json document, or text), or - for stdin.
    input: String,
}

#[derive(Args)]
pub struct DetokenizeArgs {
    #[command(flatten)]
    plugin: PluginArgs,
    /// Write every artifact into this directory (needed for images).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Token ids, separated by spaces or commas.
    #[arg(required = true, num_args = 1..)]
    ids: Vec<String>,
}

struct Loaded {
    plugin: Plugin,
    domain: String,
    params: Params,
    // Keeps the epoch ticker alive while the plugin is used.
    _runtime: tessera_runtime::Runtime,
}

fn load_plugin(args: &PluginArgs, plugins_dir: &Path) -> Result<Loaded> {
    let tokenizers = args.tokenizers.iter().cloned().collect();
    let graphs =
        tessera_nn::TokenizerGraphs::load(&tokenizers, &tessera_model::LoadOptions::default())
            .context("loading the tokenizers")?;
    let runtime = tessera_runtime::Runtime::new(tessera_runtime::RuntimeConfig {
        graphs: std::sync::Arc::new(graphs),
        ..tessera_runtime::RuntimeConfig::default()
    })
    .context("starting the plugin runtime")?;
    let manifest = tessera_manifest::Manifest::from_file(&crate::plugins::manifest_path(
        &args.plugin,
        plugins_dir,
    )?)?;
    let mut options = LoadOptions::default();
    for spec in &args.assets {
        let (name, path) = match spec.split_once('=') {
            Some((name, path)) => (name.to_string(), path),
            None => {
                let mut names = manifest.assets.keys();
                match (names.next(), names.next()) {
                    (Some(only), None) => (only.clone(), spec.as_str()),
                    _ => bail!(
                        "plugin `{}` declares {} assets; name it as --asset NAME=PATH",
                        manifest.plugin.id,
                        manifest.assets.len()
                    ),
                }
            }
        };
        options.asset_overrides.insert(name, PathBuf::from(path));
    }
    let plugin = load(&runtime, &args.plugin, plugins_dir, &options)?;
    let domains = &plugin.manifest().plugin.domains;
    let domain = match &args.domain {
        Some(d) => d.clone(),
        None if domains.len() == 1 => domains[0].clone(),
        None => bail!(
            "plugin `{}` serves several domains ({}); choose one with --domain",
            plugin.id(),
            domains.join(", ")
        ),
    };
    let params = parse_params(&args.params)?;
    Ok(Loaded {
        plugin,
        domain,
        params,
        _runtime: runtime,
    })
}

fn parse_params(raw: &[String]) -> Result<Params> {
    raw.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--param {kv:?} is not KEY=VALUE"))
        })
        .collect()
}

fn read_input(input: &str) -> Result<Value> {
    if input == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading standard input")?;
        return Ok(Value::Text(text));
    }
    let Some(path) = input.strip_prefix('@') else {
        return Ok(Value::Text(input.to_string()));
    };
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let ext = Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let text = |bytes: Vec<u8>| {
        String::from_utf8(bytes).with_context(|| format!("{path} is not UTF-8 text"))
    };
    Ok(match ext.as_str() {
        "png" => Value::Image(Image {
            mime: "image/png".into(),
            data: bytes,
        }),
        "jpg" | "jpeg" => Value::Image(Image {
            mime: "image/jpeg".into(),
            data: bytes,
        }),
        "json" => Value::Json(text(bytes)?),
        _ => Value::Text(text(bytes)?),
    })
}

pub fn tokenize(args: TokenizeArgs, plugins_dir: &Path) -> Result<ExitCode> {
    let loaded = load_plugin(&args.plugin, plugins_dir)?;
    let value = read_input(&args.input)?;
    let tokens = loaded
        .plugin
        .tokenize(&loaded.domain, &value, &loaded.params)?;
    if args.plugin.json {
        println!(
            "{}",
            serde_json::json!({ "domain": tokens.domain, "ids": tokens.ids, "shape": tokens.shape })
        );
    } else {
        println!(
            "{}",
            tokens
                .ids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_ids(raw: &[String]) -> Result<Vec<u32>> {
    raw.iter()
        .flat_map(|chunk| {
            chunk
                .split([' ', ',', '\n', '\t'])
                .filter(|s| !s.is_empty())
        })
        .enumerate()
        .map(|(i, s)| {
            s.parse::<u32>()
                .with_context(|| format!("token {i} ({s:?}) is not a non-negative integer id"))
        })
        .collect()
}

pub fn detokenize(args: DetokenizeArgs, plugins_dir: &Path) -> Result<ExitCode> {
    let loaded = load_plugin(&args.plugin, plugins_dir)?;
    let ids = parse_ids(&args.ids)?;
    let tokens = Tokens {
        domain: loaded.domain.clone(),
        shape: vec![ids.len() as u32],
        ids,
    };
    let out = loaded.plugin.detokenize(&tokens, &loaded.params)?;
    for warning in &out.warnings {
        eprintln!("warning: {warning}");
    }
    let written = match &args.out {
        Some(dir) => write_artifacts(&out, dir)?,
        None => BTreeMap::new(),
    };
    if args.plugin.json {
        let artifacts: Vec<_> = out
            .artifacts
            .iter()
            .map(|a| {
                let mut entry = serde_json::json!({ "name": a.name, "kind": kind(&a.value) });
                match &a.value {
                    Value::Text(t) => entry["text"] = t.clone().into(),
                    Value::Json(j) => {
                        entry["json"] = serde_json::from_str(j).unwrap_or_else(|_| j.clone().into())
                    }
                    _ => {}
                }
                if let Some(path) = written.get(&a.name) {
                    entry["file"] = path.display().to_string().into();
                }
                entry
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "artifacts": artifacts, "warnings": out.warnings })
        );
        return Ok(ExitCode::SUCCESS);
    }
    let primary = out
        .artifacts
        .first()
        .context("the plugin returned no artifact")?;
    match &primary.value {
        Value::Text(t) | Value::Json(t) => println!("{t}"),
        _ if written.contains_key(&primary.name) => {
            println!("{}", written[&primary.name].display())
        }
        other => bail!(
            "the result is a {} value; give --out DIR to write it to a file",
            kind(other)
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Text(_) => "text",
        Value::Json(_) => "json",
        Value::Image(_) => "image",
        Value::Tensor(_) => "tensor",
        Value::Bytes(_) => "bytes",
    }
}

/// Writes each artifact as `<name>.<ext>`; returns where each went.
pub fn write_artifacts(out: &Detokenized, dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = BTreeMap::new();
    for a in &out.artifacts {
        let safe: String = a
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let (ext, bytes): (&str, &[u8]) = match &a.value {
            Value::Text(t) => ("txt", t.as_bytes()),
            Value::Json(j) => ("json", j.as_bytes()),
            Value::Image(i) if i.mime == "image/png" => ("png", &i.data),
            Value::Image(i) if i.mime == "image/jpeg" => ("jpg", &i.data),
            Value::Image(i) => ("img", &i.data),
            Value::Tensor(t) => ("tensor", &t.data),
            Value::Bytes(b) => ("bin", b),
        };
        let path = dir.join(format!("{safe}.{ext}"));
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        written.insert(a.name.clone(), path);
    }
    Ok(written)
}

#[derive(Args)]
pub struct DemoArgs {
    /// Where to write the demo's outputs.
    #[arg(long, default_value = "out/demo")]
    out: PathBuf,
    /// The text vocabulary (tokenizer JSON) for the text plugins; defaults to their manifests'.
    #[arg(long)]
    vocab: Option<PathBuf>,
}

/// One demo value per text-sequence plugin.
const DEMO_VALUES: [(&str, &str, &str); 4] = [
    (
        "caption",
        "caption",
        "A small red Cube, left of a large blue sphere! [S_1]",
    ),
    (
        "det",
        "det",
        r#"[{"label":"cube","xmin":0.12,"ymin":0.55,"xmax":0.38,"ymax":0.71,"score":0.93},{"label":"sphere","xmin":0.41,"ymin":0.30,"xmax":0.52,"ymax":0.78,"score":0.88},{"label":"cone","xmin":0.8,"ymin":0.1,"xmax":0.85,"ymax":0.14,"score":0.2}]"#,
    ),
    (
        "metadata",
        "metadata",
        r#"{"original_width":640,"original_height":480,"brightness":130.5,"n_humans":1,"aesthetic_score":5.1}"#,
    ),
    (
        "color-palette",
        "color_palette",
        r#"[[200,40,30],[20,90,160],[240,240,230]]"#,
    ),
];

pub fn demo(args: DemoArgs, plugins_dir: &Path) -> Result<ExitCode> {
    let runtime = runtime()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for (plugin_id, domain, input) in DEMO_VALUES {
        let mut options = LoadOptions::default();
        if let Some(vocab) = &args.vocab {
            options
                .asset_overrides
                .insert("vocab".into(), vocab.clone());
        }
        let plugin = load(&runtime, plugin_id, plugins_dir, &options)?;
        let value = if input.starts_with(['[', '{']) {
            Value::Json(input.into())
        } else {
            Value::Text(input.into())
        };
        let tokens = plugin.tokenize(domain, &value, &Vec::new())?;
        let back = plugin.detokenize(&tokens, &Vec::new())?;
        let written = write_artifacts(&back, &args.out.join(domain))?;
        println!("{domain}");
        println!("  in:    {input}");
        println!(
            "  ids:   {}",
            tokens
                .ids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        if let Some(Value::Text(t) | Value::Json(t)) = back.artifacts.first().map(|a| &a.value) {
            println!("  back:  {t}");
        }
        for w in &back.warnings {
            println!("  note:  {w}");
        }
        for path in written.values() {
            println!("  wrote: {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
