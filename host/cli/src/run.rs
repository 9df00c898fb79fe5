//! `tessera run`: executes a workflow on a model with the real engine (plugins, sampler, 4M
//! core), with a progress bar per step and a summary of the outputs. Ctrl-C cancels the run:
//! running steps stop at their next decoding step or token, write nothing, and the command exits
//! with status 130 after saying so (a second Ctrl-C aborts at once).

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tessera_engine::{DiskCache, Engine, EngineConfig, InputValue, StepValue};
use tessera_workflow::{
    CancellationToken, ExecuteOptions, Reference, RunEvent, SkipReason, StepOutcome,
    ValidationContext, execute, plan, validate_file,
};

use crate::model_choice::ModelChoice;
use crate::workflows::{catalog, default_workflows_dir, served_domains};

#[derive(Args)]
pub struct RunArgs {
    /// A workflow file, or the name of a built-in workflow (see `tessera workflows list`).
    workflow: String,
    #[command(flatten)]
    model: ModelChoice,
    /// An input value, NAME=VALUE: text, or @FILE (.png/.jpg image, .json document, else text).
    /// For a domain without a plugin, give its tokens as a JSON list (NAME=@tokens.json).
    #[arg(long = "input", value_name = "NAME=VALUE")]
    inputs: Vec<String>,
    /// Output directory; each step writes into OUT/<step id>/.
    #[arg(long)]
    out: PathBuf,
    /// Neither serve steps from the step cache nor store them in it.
    #[arg(long)]
    no_cache: bool,
    /// Seed of the steps that do not set their own.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Step cache directory (default: $TESSERA_CACHE_DIR/steps, else the user's cache directory).
    #[arg(long, env = "TESSERA_STEP_CACHE")]
    cache_dir: Option<PathBuf>,
    /// The text vocabulary (tokenizer JSON) for the text plugins; defaults to their manifests'.
    #[arg(long)]
    vocab: Option<PathBuf>,
    /// Steps running at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
}

fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TESSERA_CACHE_DIR") {
        return PathBuf::from(dir).join("steps");
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("tessera").join("steps");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home)
            .join(".cache")
            .join("tessera")
            .join("steps");
    }
    std::env::temp_dir().join("tessera-cache").join("steps")
}

/// A workflow given as a path, else a built-in one by name.
fn resolve_workflow(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let dir = default_workflows_dir();
    let builtin = dir.join(format!("{spec}.toml"));
    if builtin.is_file() {
        return Ok(builtin);
    }
    bail!(
        "no workflow file `{spec}` and no built-in workflow of that name in {} (see `tessera workflows list`)",
        dir.display()
    )
}

pub fn run(args: RunArgs, plugins_dir: &Path) -> Result<ExitCode> {
    let path = resolve_workflow(&args.workflow)?;
    let model = args.model.resolve()?;
    let catalog = catalog(&model.dir)?;
    let mut served = served_domains(plugins_dir);
    // Inputs given as JSON token lists need no plugin: their domains count as served.
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let structure = tessera_workflow::validate_source(
        &path.display().to_string(),
        &text,
        &ValidationContext {
            catalog: None,
            served_domains: None,
        },
    );
    if let Some(workflow) = &structure.workflow {
        for spec in &args.inputs {
            if let Some((name, value)) = spec.split_once('=')
                && let Some(input) = workflow.inputs.get(name)
                && value.starts_with('@')
                && value.to_ascii_lowercase().ends_with(".json")
            {
                served.insert(input.domain.clone());
            }
        }
    }
    let context = ValidationContext {
        catalog: Some(&catalog),
        served_domains: Some(&served),
    };
    let report =
        validate_file(&path, &context).with_context(|| format!("reading {}", path.display()))?;
    let color = std::io::stdout().is_terminal();
    if !report.diagnostics.is_empty() {
        print!("{}", report.render_terminal(color));
    }
    let workflow = match (&report.workflow, report.has_errors()) {
        (Some(workflow), false) => workflow.clone(),
        _ => {
            eprintln!("error: {} is not valid; nothing was run", path.display());
            return Ok(ExitCode::FAILURE);
        }
    };

    let mut given: BTreeMap<String, String> = BTreeMap::new();
    for spec in &args.inputs {
        let (name, value) = spec
            .split_once('=')
            .with_context(|| format!("--input {spec:?} is not NAME=VALUE"))?;
        if !workflow.inputs.contains_key(name) {
            let known: Vec<&str> = workflow.inputs.keys().map(String::as_str).collect();
            bail!(
                "workflow `{}` has no input `{name}` (inputs: {})",
                workflow.name,
                known.join(", ")
            );
        }
        if given.insert(name.to_owned(), value.to_owned()).is_some() {
            bail!("--input {name} given twice");
        }
    }
    let execution = plan(&workflow, None).context("planning the workflow")?;
    let mut inputs = BTreeMap::new();
    let mut missing = Vec::new();
    for name in &execution.inputs {
        let input = &workflow.inputs[name];
        let value = match (given.get(name), &input.default) {
            (Some(value), _) => {
                InputValue::from_arg(value).with_context(|| format!("reading input `{name}`"))?
            }
            (None, Some(default)) => InputValue::Text(default.clone()),
            (None, None) => {
                missing.push(match &input.example {
                    Some(example) => format!("{name} ({}; e.g. {example:?})", input.domain),
                    None => format!("{name} ({})", input.domain),
                });
                continue;
            }
        };
        inputs.insert(name.clone(), StepValue::input(&input.domain, value));
    }
    if !missing.is_empty() {
        bail!(
            "missing inputs, give them as --input NAME=VALUE: {}",
            missing.join(", ")
        );
    }

    let mut asset_overrides = BTreeMap::new();
    if let Some(vocab) = &args.vocab {
        asset_overrides.insert("vocab".to_owned(), vocab.clone());
    }
    let engine = Engine::load(&EngineConfig {
        model: model.dir.clone(),
        plugins_dir: plugins_dir.to_path_buf(),
        out_dir: args.out.clone(),
        asset_overrides,
        tokenizers: model.tokenizers.clone(),
    })
    .context("loading the model and plugins")?;
    for warning in engine.warnings() {
        eprintln!("warning: {warning}");
    }
    let cache_dir = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let cancel = CancellationToken::new();
    install_interrupt_handler(&cancel)?;
    let options = ExecuteOptions {
        max_concurrency: args.jobs.max(1),
        cache_context: engine.cache_context(&inputs, args.seed, args.no_cache),
        cancel: cancel.clone(),
    };
    let cache = DiskCache::new(&cache_dir, &args.out).with_plan(&execution, &options.cache_context);

    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>14} [{bar:30}] {percent:>3}% {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let step_bars: BTreeMap<String, ProgressBar> = execution
        .steps
        .iter()
        .map(|planned| {
            let bar = bars.add(ProgressBar::new(1000));
            bar.set_style(style.clone());
            bar.set_prefix(planned.step.id.clone());
            bar.set_message(format!("queued ({})", planned.step.generate));
            (planned.step.id.clone(), bar)
        })
        .collect();
    // Without a terminal the bars are hidden: say what happens, one line per transition.
    let plain = !std::io::stderr().is_terminal();
    let sink = |event: RunEvent| {
        let Some(bar) = step_bars.get(event.step()) else {
            return;
        };
        if plain {
            match &event {
                RunEvent::Queued { .. } | RunEvent::Progress { .. } => {}
                RunEvent::Started { step } => eprintln!("step `{step}` started"),
                RunEvent::Cached { step, .. } => eprintln!("step `{step}` served from the cache"),
                RunEvent::Finished {
                    step, elapsed_ms, ..
                } => eprintln!("step `{step}` finished in {:.1}s", elapsed_ms / 1000.0),
                RunEvent::Failed { step, .. } => eprintln!("step `{step}` failed"),
                RunEvent::Skipped { step, .. } => eprintln!("step `{step}` skipped"),
            }
        }
        match &event {
            RunEvent::Queued { .. } => {}
            RunEvent::Started { .. } => bar.set_message("running"),
            RunEvent::Progress { fraction, .. } => bar.set_position((fraction * 1000.0) as u64),
            RunEvent::Cached { .. } => {
                bar.set_position(1000);
                bar.finish_with_message("cached");
            }
            RunEvent::Finished { elapsed_ms, .. } => {
                bar.set_position(1000);
                bar.finish_with_message(format!("done in {:.1}s", elapsed_ms / 1000.0));
            }
            RunEvent::Failed { error, .. } => bar.abandon_with_message(format!("failed: {error}")),
            RunEvent::Skipped { .. } => bar.abandon_with_message("skipped"),
        }
    };
    let run = execute(&execution, &engine, &inputs, &cache, &options, &sink)
        .context("running the workflow")?;
    drop(step_bars);
    let _ = bars.clear();

    println!("{:<12} {:<12} {:<16} files", "output", "step", "status");
    for (name, reference) in &execution.outputs {
        let (step, status) = match reference {
            Reference::Input(input) => (format!("inputs.{input}"), "input".to_owned()),
            Reference::Step(id) => (
                id.clone(),
                match run.outcomes.get(id) {
                    Some(StepOutcome::Finished) => "generated".to_owned(),
                    Some(StepOutcome::Cached) => "cached".to_owned(),
                    Some(StepOutcome::Failed { .. }) => "failed".to_owned(),
                    Some(StepOutcome::Skipped(SkipReason::Cancelled)) => "cancelled".to_owned(),
                    Some(StepOutcome::Skipped(_)) => "skipped".to_owned(),
                    None => "not run".to_owned(),
                },
            ),
        };
        let files = run
            .outputs
            .get(name)
            .and_then(StepValue::produced)
            .map(|produced| {
                produced
                    .artifacts
                    .iter()
                    .map(|a| a.path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        println!("{name:<12} {step:<12} {status:<16} {files}");
    }
    for (step, outcome) in &run.outcomes {
        match outcome {
            StepOutcome::Failed { error } => eprintln!("step `{step}` failed: {error}"),
            StepOutcome::Skipped(SkipReason::Cancelled) if run.cancelled => {}
            StepOutcome::Skipped(reason) => eprintln!(
                "step `{step}` skipped: {}",
                serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
                    .unwrap_or_else(|| "skipped".into())
            ),
            _ => {}
        }
    }
    for produced in run.outputs.values().filter_map(StepValue::produced) {
        for warning in &produced.warnings {
            eprintln!("warning ({}): {warning}", produced.step);
        }
    }
    if run.cancelled {
        let done = run
            .outcomes
            .values()
            .filter(|o| matches!(o, StepOutcome::Finished | StepOutcome::Cached))
            .count();
        eprintln!(
            "run cancelled: {done} of {} steps finished; the unfinished steps wrote no artifacts",
            run.outcomes.len()
        );
        return Ok(ExitCode::from(INTERRUPTED));
    }
    Ok(if run.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;

/// Ctrl-C (SIGINT, and SIGTERM) cancels the run; a second one exits at once.
fn install_interrupt_handler(cancel: &CancellationToken) -> Result<()> {
    let cancel = cancel.clone();
    ctrlc::set_handler(move || {
        if cancel.is_cancelled() {
            eprintln!("interrupted again: exiting now");
            std::process::exit(i32::from(INTERRUPTED));
        }
        eprintln!("interrupted: cancelling the run (press Ctrl-C again to exit at once)");
        cancel.cancel();
    })
    .context("installing the Ctrl-C handler")
}
