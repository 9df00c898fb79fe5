//! `tessera train`: training on one machine (today the text vocabulary).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use tessera_train::{VocabOptions, train_vocab, world_corpus};

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Train tessera's own WordPiece vocabulary (4M token layout) on shapes-world captions.
    Vocab(VocabArgs),
}

#[derive(Args)]
pub struct VocabArgs {
    /// Scenes whose captions form the corpus.
    #[arg(long, default_value_t = 4000)]
    scenes: u64,
    /// Seed of the first scene.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Largest vocabulary size, added tokens included.
    #[arg(long, default_value_t = VocabOptions::default().vocab_size)]
    vocab_size: usize,
    /// Where to write the tokenizer JSON.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(command: TrainCommand) -> Result<ExitCode> {
    match command {
        TrainCommand::Vocab(args) => {
            let options = VocabOptions {
                scenes: args.scenes,
                first_seed: args.first_seed,
                vocab_size: args.vocab_size,
                ..VocabOptions::default()
            };
            let started = Instant::now();
            let corpus = world_corpus(&options).context("building the caption corpus")?;
            let json = train_vocab(&corpus, &options).context("training the vocabulary")?;
            if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&args.out, &json)
                .with_context(|| format!("writing {}", args.out.display()))?;
            let words = serde_json::from_str::<serde_json::Value>(&json)
                .ok()
                .and_then(|v| v["model"]["vocab"].as_object().map(|m| m.len()))
                .unwrap_or(0);
            println!(
                "trained a {words}-token vocabulary on {} captions in {:.1} s: {}",
                corpus.len(),
                started.elapsed().as_secs_f64(),
                args.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
