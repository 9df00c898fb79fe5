//! `tessera`: the command line of the tessera any-to-any generation host.

mod eval;
mod model;
mod model_choice;
mod plugins;
mod run;
mod serve;
mod tokens;
mod train;
mod workflows;
mod world;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Any-to-any vision generation host (4M-21 in Rust)"
)]
struct Cli {
    /// Directory of installed plugins (default: `target/plugins` next to this binary's build).
    #[arg(long, global = true, env = "TESSERA_PLUGINS")]
    plugins: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List, inspect, check and pack modality plugins.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// Turn a value into token ids with a plugin.
    Tokenize(tokens::TokenizeArgs),
    /// Turn token ids back into values with a plugin.
    Detokenize(tokens::DetokenizeArgs),
    /// Check workflow files (structure and parameters; with --model also domains and plugins).
    Validate(workflows::ValidateArgs),
    /// Run a workflow on a model: plugins tokenize, the 4M core generates, artifacts are written.
    Run(run::RunArgs),
    /// Serve the local HTTP API and web page (runs, live events, outputs) on one model.
    Serve(serve::ServeArgs),
    /// Built-in workflows.
    #[command(subcommand)]
    Workflows(workflows::WorkflowsCommand),
    /// Inspect 4M checkpoints.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Training on one machine: tessera's own text vocabulary, the 4M core.
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// Evaluate a model on unseen shapes-world scenes against trivial baselines.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// The procedural shapes world: render scenes, write datasets.
    #[command(subcommand)]
    World(world::WorldCommand),
    /// Round-trip a caption, boxes, metadata and a palette through the text plugins.
    Demo(tokens::DemoArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<std::process::ExitCode> {
    let plugins_dir = cli.plugins.unwrap_or_else(plugins::default_plugins_dir);
    match cli.command {
        Command::Plugins(cmd) => plugins::run(cmd, &plugins_dir),
        Command::Tokenize(args) => tokens::tokenize(args, &plugins_dir),
        Command::Detokenize(args) => tokens::detokenize(args, &plugins_dir),
        Command::Demo(args) => tokens::demo(args, &plugins_dir),
        Command::World(cmd) => world::run(cmd),
        Command::Train(cmd) => train::run(cmd),
        Command::Eval(cmd) => eval::run(cmd, &plugins_dir),
        Command::Model(cmd) => model::run(cmd),
        Command::Validate(args) => workflows::validate(args, &plugins_dir),
        Command::Workflows(cmd) => workflows::run(cmd),
        Command::Run(args) => run::run(args, &plugins_dir),
        Command::Serve(args) => serve::serve(args, &plugins_dir),
    }
}
