//! `tessera world ...`: the procedural shapes world (scenes with exact ground truth for every
//! modality), one scene at a time or as a training dataset.

use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use tessera_world::DatasetOptions;

#[derive(Subcommand)]
pub enum WorldCommand {
    /// Render every modality of one scene into a directory.
    Render {
        /// The scene's seed (0 to 2^53 - 1).
        #[arg(long)]
        seed: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a dataset of consecutive seeds in the memory-mappable training format.
    Dataset {
        /// Number of scenes.
        #[arg(long)]
        count: usize,
        #[arg(long)]
        out: PathBuf,
        /// Seed of the first scene.
        #[arg(long, default_value = "0")]
        first_seed: String,
        /// Worker threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
}

pub fn run(cmd: WorldCommand) -> Result<ExitCode> {
    match cmd {
        WorldCommand::Render { seed, out } => {
            let seed = tessera_world::parse_seed(&seed)?;
            let files = tessera_world::render_scene_to_dir(seed, &out)
                .with_context(|| format!("rendering scene {seed} into {}", out.display()))?;
            println!("scene {seed}: {} files in {}", files.len(), out.display());
            for file in files {
                println!("  {}", file.display());
            }
        }
        WorldCommand::Dataset {
            count,
            out,
            first_seed,
            threads,
        } => {
            let first_seed = tessera_world::parse_seed(&first_seed)?;
            let bar = indicatif::ProgressBar::new(count as u64).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} scenes  {per_sec}  eta {eta}",
                )
                .expect("static template"),
            );
            // Workers report out of order; the bar only moves forward.
            let furthest = AtomicUsize::new(0);
            let options = DatasetOptions {
                count,
                first_seed,
                out: out.clone(),
                threads,
            };
            let started = std::time::Instant::now();
            let summary = tessera_world::write_dataset(&options, &|done, _total| {
                if furthest.fetch_max(done, Ordering::Relaxed) < done {
                    bar.set_position(done as u64);
                }
            })
            .with_context(|| format!("writing the dataset into {}", out.display()))?;
            bar.finish_and_clear();
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "{} scenes (seeds {}..{}) in {:.1} s ({:.0} scenes/s), {:.1} MB in {}",
                summary.count,
                summary.first_seed,
                summary.first_seed + summary.count as u64,
                seconds,
                summary.count as f64 / seconds,
                summary.total_bytes as f64 / 1e6,
                summary.out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
