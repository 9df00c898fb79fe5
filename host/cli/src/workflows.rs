//! `tessera validate` and `tessera workflows list`: workflow files checked without running them.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tessera_sampler::{DomainCatalog, DomainInfo, DomainKind};
use tessera_workflow::{ValidationContext, validate_file};

#[derive(Args)]
pub struct ValidateArgs {
    /// Workflow files to check.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Also check that this model (a 4M checkpoint) has every domain, and that a plugin in the
    /// plugins directory serves each input domain.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Print the diagnostics as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum WorkflowsCommand {
    /// List the built-in workflows (`workflows/`, or `TESSERA_WORKFLOWS`).
    List,
}

/// The model's domains as the sampler and validator see them.
pub(crate) fn catalog(model: &Path) -> Result<DomainCatalog> {
    let summary = tessera_model::inspect(model)
        .with_context(|| format!("reading model {}", model.display()))?;
    let mut catalog = DomainCatalog::new();
    for d in summary.domains {
        let kind = match d.kind {
            "sequence" => DomainKind::Sequence,
            "sequence embedding" => DomainKind::SequenceEmbedding,
            _ => DomainKind::Image,
        };
        catalog = catalog.with(
            d.name,
            DomainInfo {
                kind,
                num_tokens: d.tokens,
                generatable: d.decoder,
            },
        );
    }
    Ok(catalog)
}

pub(crate) fn served_domains(plugins_dir: &Path) -> BTreeSet<String> {
    tessera_runtime::discover(plugins_dir)
        .map(|found| {
            found
                .into_iter()
                .filter_map(|p| p.manifest.ok())
                .flat_map(|m| m.plugin.domains)
                .collect()
        })
        .unwrap_or_default()
}

pub fn validate(args: ValidateArgs, plugins_dir: &Path) -> Result<ExitCode> {
    let catalog = args.model.as_deref().map(catalog).transpose()?;
    let served = args.model.as_ref().map(|_| served_domains(plugins_dir));
    let context = ValidationContext {
        catalog: catalog.as_ref(),
        served_domains: served.as_ref(),
    };
    let color = std::io::stdout().is_terminal();
    let mut failed = 0;
    let mut reports = Vec::new();
    for file in &args.files {
        let report =
            validate_file(file, &context).with_context(|| format!("reading {}", file.display()))?;
        if report.has_errors() {
            failed += 1;
        }
        if args.json {
            reports.push(report.to_json());
        } else if report.diagnostics.is_empty() {
            println!("{}: ok", file.display());
        } else {
            print!("{}", report.render_terminal(color));
        }
    }
    if args.json {
        println!("{}", serde_json::Value::Array(reports));
    } else if args.files.len() > 1 {
        println!("{} file(s) checked, {failed} with errors", args.files.len());
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `$TESSERA_WORKFLOWS`, else the repository's `workflows/` next to this binary's build, else `./workflows`.
pub fn default_workflows_dir() -> PathBuf {
    std::env::var_os("TESSERA_WORKFLOWS")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            let dir = exe.parent()?.parent()?.parent()?.join("workflows");
            dir.is_dir().then_some(dir)
        })
        .unwrap_or_else(|| PathBuf::from("workflows"))
}

pub fn run(cmd: WorkflowsCommand) -> Result<ExitCode> {
    match cmd {
        WorkflowsCommand::List => {
            let dir = default_workflows_dir();
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("reading workflows directory {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            files.sort();
            let context = ValidationContext {
                catalog: None,
                served_domains: None,
            };
            for file in files {
                let report = validate_file(&file, &context)?;
                match &report.workflow {
                    Some(w) => {
                        let inputs: Vec<String> = w
                            .inputs
                            .iter()
                            .map(|(n, i)| format!("{n}:{}", i.domain))
                            .collect();
                        let outputs: Vec<&str> = w.outputs.keys().map(String::as_str).collect();
                        println!("{:<26} {}", w.name, w.description.as_deref().unwrap_or(""));
                        println!(
                            "{:<26} inputs {}  ->  outputs {}",
                            "",
                            inputs.join(", "),
                            outputs.join(", ")
                        );
                    }
                    None => println!(
                        "{:<26} invalid: run `tessera validate {}`",
                        file.display(),
                        file.display()
                    ),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
