//! `tessera model ...`: 4M checkpoints.

use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Print a checkpoint's domains, vocabulary sizes, token counts, dims, parameter count and dtype.
    Inspect {
        /// A checkpoint directory (config.json + model.safetensors) or a .safetensors file.
        path: PathBuf,
    },
}

pub fn run(cmd: ModelCommand) -> Result<ExitCode> {
    match cmd {
        ModelCommand::Inspect { path } => {
            let summary = tessera_model::inspect(&path)
                .with_context(|| format!("inspecting {}", path.display()))?;
            print!("{summary}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
