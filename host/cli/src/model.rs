//! `tessera model ...`: 4M checkpoints.

use anyhow::{Context, Result, anyhow};
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
    /// Copy a checkpoint (a 4M core or a 4M tokenizer directory) with its weights stored as
    /// another float type, e.g. f16 to halve its size.
    Convert {
        /// The checkpoint directory (config.json + model.safetensors).
        path: PathBuf,
        /// Stored float type: f32, f16 or bf16.
        #[arg(long, default_value = "f16")]
        dtype: String,
        /// Where the converted directory goes.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: ModelCommand) -> Result<ExitCode> {
    match cmd {
        ModelCommand::Inspect { path } => {
            let summary = tessera_model::inspect(&path)
                .with_context(|| format!("inspecting {}", path.display()))?;
            print!("{summary}");
        }
        ModelCommand::Convert { path, dtype, out } => {
            let stored = tessera_model::StoredDtype::parse(&dtype)
                .ok_or_else(|| anyhow!("unknown --dtype `{dtype}` (f32, f16, bf16)"))?;
            tessera_model::convert_checkpoint(&path, &out, stored)
                .with_context(|| format!("converting {} into {}", path.display(), out.display()))?;
            println!("wrote {} ({dtype})", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
