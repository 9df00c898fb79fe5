//! `tessera train`: training on one machine: tessera's text vocabulary (`vocab`), the 4M core
//! (`fm`) and the image tokenizers (`tokenizer`).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use tessera_train::{
    CoreTrainConfig, CoreTrainer, ImageDataset, ImageTokenizers, InMemoryDataset, InvocationStart,
    StepReport, TokDomain, TokenizerStepReport, TokenizerTrainConfig, TokenizerTrainer,
    VocabOptions, latest_checkpoint, train_vocab, world_corpus, world_dataset_with_images,
};

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Train tessera's own WordPiece vocabulary (4M token layout) on shapes-world captions.
    Vocab(VocabArgs),
    /// Train the 4M core on a token dataset with the 4M masking objective.
    Fm(FmArgs),
    /// Train an image tokenizer (VQ-VAE, lucid cosine codebook) on shapes-world images.
    Tokenizer(TokenizerArgs),
}

#[derive(Args)]
pub struct TokenizerArgs {
    /// The tokenizer's domain: tok_rgb@224, tok_depth@224, tok_normal@224 or tok_semseg@224.
    #[arg(long)]
    domain: String,
    /// Training config (JSON, the fields of `train-config.json`).
    #[arg(long, conflicts_with = "preset", required_unless_present = "preset")]
    config: Option<PathBuf>,
    /// A built-in config: `tiny` (32 px, seconds on a CPU), `small` (224 px, patch 16, 4-block
    /// ViTs of width 192) or `base` (ViT-B/16 as the released tokenizers).
    #[arg(long)]
    preset: Option<String>,
    /// A world dataset directory written by `tessera world dataset`.
    #[arg(long, conflicts_with = "scenes", required_unless_present = "scenes")]
    data: Option<PathBuf>,
    /// Render this many shapes-world scenes instead of reading --data.
    #[arg(long)]
    scenes: Option<usize>,
    /// Seed of the first rendered scene (with --scenes).
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Total optimisation steps (overrides the config's).
    #[arg(long)]
    steps: Option<u64>,
    /// Checkpoint interval in steps (overrides the config's; 0 = only the final tokenizer).
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Images per step (overrides the config's).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Seed of initialisation, data order and code restarts (overrides the config's).
    #[arg(long)]
    seed: Option<u64>,
    /// Output directory: checkpoints/step-N/, model/ (config.json + model.safetensors, the
    /// released tokenizer layout), loss.png.
    #[arg(long)]
    out: PathBuf,
    /// Continue from the newest checkpoint in --out (with the same config).
    #[arg(long)]
    resume: bool,
}

#[derive(Args)]
pub struct FmArgs {
    /// Training config (JSON: model as a 4M config.json object, vocab sizes, masking, optim, ...).
    #[arg(long, conflicts_with = "preset", required_unless_present = "preset")]
    config: Option<PathBuf>,
    /// A built-in config over the shapes world's sequence domains: `tiny` or `small`.
    #[arg(long)]
    preset: Option<String>,
    /// Token data: `world:COUNT[@FIRST_SEED]` (render and tokenise shapes-world scenes) or a
    /// JSON-lines file of samples (`{"caption": {"sequence": [...]}, "tok_rgb@224": {"grid": [...]}}`).
    #[arg(long)]
    data: String,
    /// Total optimisation steps (overrides the config's).
    #[arg(long)]
    steps: Option<u64>,
    /// Checkpoint interval in steps (overrides the config's; 0 = only the final model).
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Samples per step (overrides the config's).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Seed of initialisation, data order and masking (overrides the config's).
    #[arg(long)]
    seed: Option<u64>,
    /// The text vocabulary for `world:` data and presets.
    #[arg(long, env = "TESSERA_VOCAB", default_value_os_t = default_vocab())]
    vocab: PathBuf,
    /// A trained image tokenizer as DOMAIN=DIR (e.g. `tok_rgb@224=runs/tok-rgb/model`): `world:`
    /// data then includes that domain's token grids, and a preset gains the domain. Repeatable.
    #[arg(long = "tokenizer", value_name = "DOMAIN=DIR", value_parser = tessera_nn::parse_tokenizer_arg)]
    tokenizers: Vec<(String, PathBuf)>,
    /// Device: `cpu`, `cuda` or `cuda:N` (CUDA needs a build with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Output directory: checkpoints/step-N/, model/ (the final 4M checkpoint), loss.png.
    #[arg(long)]
    out: PathBuf,
    /// Continue from the newest checkpoint in --out (with the same config).
    #[arg(long)]
    resume: bool,
}

/// The project's own vocabulary, next to the sources this binary was built from.
fn default_vocab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/text/wordpiece_shapes.json")
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
        TrainCommand::Fm(args) => train_fm(args),
        TrainCommand::Tokenizer(args) => train_tokenizer(args),
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

fn load_tokenizer(path: &Path) -> Result<tessera_text::TextTokenizer> {
    let json = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    tessera_text::TextTokenizer::from_json_bytes(&json)
        .with_context(|| format!("loading the vocabulary {}", path.display()))
}

/// `world:COUNT[@FIRST_SEED]` (with the image domains `images` has tokenizers for) or a
/// JSON-lines file.
fn load_data(
    spec: &str,
    vocab: &Path,
    images: Option<&ImageTokenizers>,
) -> Result<InMemoryDataset> {
    if let Some(rest) = spec.strip_prefix("world:") {
        let (count, first) = match rest.split_once('@') {
            Some((count, first)) => (count, first.parse::<u64>().ok()),
            None => (rest, Some(0)),
        };
        let (Ok(count), Some(first)) = (count.parse::<usize>(), first) else {
            bail!("--data {spec}: expected world:COUNT or world:COUNT@FIRST_SEED");
        };
        let tokenizer = load_tokenizer(vocab)?;
        let progress = Progress::new("scenes", count as u64, 0, (count as u64 / 10).max(1));
        let data = world_dataset_with_images(&tokenizer, first, count, images, &mut |done| {
            progress.step(done as u64, count as u64, String::new())
        })
        .with_context(|| format!("building the shapes-world data {spec}"))?;
        progress.bar.finish_and_clear();
        return Ok(data);
    }
    if images.is_some() {
        bail!("--tokenizer encodes shapes-world images: it needs --data world:COUNT, not {spec}");
    }
    InMemoryDataset::read_jsonl(Path::new(spec)).with_context(|| format!("reading --data {spec}"))
}

fn train_fm(args: FmArgs) -> Result<ExitCode> {
    let invocation = InvocationStart::now();
    let mut config = match (&args.config, &args.preset) {
        (Some(path), None) => CoreTrainConfig::read(path)
            .with_context(|| format!("reading the training config {}", path.display()))?,
        (None, Some(preset)) => {
            let vocab_size = load_tokenizer(&args.vocab)?.vocab_size();
            CoreTrainConfig::preset(preset, vocab_size)?
        }
        _ => bail!("give either --config or --preset"),
    };
    let images = if args.tokenizers.is_empty() {
        None
    } else {
        let dirs = args.tokenizers.iter().cloned().collect();
        let images = ImageTokenizers::load(&dirs).context("loading the image tokenizers")?;
        if args.preset.is_some() {
            config.add_image_domains(&images.vocab_sizes())?;
        }
        Some(images)
    };
    if let Some(steps) = args.steps {
        config.steps = steps;
    }
    if let Some(every) = args.checkpoint_every {
        config.checkpoint_every = every;
    }
    if let Some(batch) = args.batch_size {
        config.batch_size = batch;
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    // Before the data, which takes minutes to build: a wrong --resume or --out fails at once.
    let resume_from = resume_point(&args.out, args.resume)?;
    let data = load_data(&args.data, &args.vocab, images.as_ref())?;
    let device = tessera_model::select_device(&args.device)
        .with_context(|| format!("--device {}", args.device))?;
    let mut trainer = match resume_from {
        Some(checkpoint) => CoreTrainer::resume(config.clone(), &data, &device, &checkpoint)
            .with_context(|| format!("resuming from {}", checkpoint.display()))?,
        None => CoreTrainer::new(config.clone(), &data, &device).context("setting up training")?,
    };
    trainer.count_time_from(invocation);
    write_run_config(&args.out, &serde_json::to_string_pretty(&config)?)?;

    eprintln!(
        "training a {}-parameter core on {} samples for {} steps",
        trainer.parameters().element_count(),
        data.samples.len(),
        config.steps
    );
    let first_step = trainer.state().step;
    let progress = Progress::new("step", config.steps, first_step, 10);
    let started = Instant::now();
    let (mut tokens, mut last) = (0usize, None::<StepReport>);
    trainer
        .run(&args.out, u64::MAX, &mut |report| {
            tokens += report.tokens;
            let rate = tokens as f64 / started.elapsed().as_secs_f64();
            let message = format!(
                "loss {:.4}  {:.0} tok/s  lr {:.2e}",
                report.loss, rate, report.lr
            );
            progress.step(report.step, report.total_steps, message);
            last = Some(report.clone());
        })
        .context("training")?;
    progress.bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if let Some(report) = last {
        let domains: Vec<String> = report
            .per_domain
            .iter()
            .map(|(d, (loss, _))| format!("{d} {loss:.3}"))
            .collect();
        println!(
            "step {}: loss {:.4} ({}); {:.2} steps/s, {:.0} tokens/s",
            report.step,
            report.loss,
            domains.join(", "),
            (trainer.state().step - first_step) as f64 / seconds,
            tokens as f64 / seconds
        );
    }
    println!(
        "model: {}\nloss curve: {}",
        args.out.join("model").display(),
        args.out.join("loss.png").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn train_tokenizer(args: TokenizerArgs) -> Result<ExitCode> {
    let invocation = InvocationStart::now();
    let domain = TokDomain::parse(&args.domain)?;
    let mut config = match (&args.config, &args.preset) {
        (Some(path), None) => {
            let config = TokenizerTrainConfig::read(path)
                .with_context(|| format!("reading the training config {}", path.display()))?;
            if config.domain != domain {
                bail!(
                    "{} trains {}, not --domain {}",
                    path.display(),
                    config.domain.name(),
                    domain.name()
                );
            }
            config
        }
        (None, Some(preset)) => TokenizerTrainConfig::preset(preset, domain)?,
        _ => bail!("give either --config or --preset"),
    };
    if let Some(steps) = args.steps {
        config.steps = steps;
    }
    if let Some(every) = args.checkpoint_every {
        config.checkpoint_every = every;
    }
    if let Some(batch) = args.batch_size {
        config.batch_size = batch;
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    let resume_from = resume_point(&args.out, args.resume)?;
    let data = match (&args.data, args.scenes) {
        (Some(dir), None) => ImageDataset::from_world_dir(dir, domain, config.image_size)
            .with_context(|| format!("reading the world dataset {}", dir.display()))?,
        (None, Some(count)) => {
            ImageDataset::from_scenes(domain, config.image_size, args.first_seed, count)
                .with_context(|| format!("rendering {count} shapes-world scenes"))?
        }
        _ => bail!("give either --data or --scenes"),
    };
    let device = candle_core::Device::Cpu;
    let mut trainer = match resume_from {
        Some(checkpoint) => TokenizerTrainer::resume(config.clone(), &data, &device, &checkpoint)
            .with_context(|| format!("resuming from {}", checkpoint.display()))?,
        None => {
            TokenizerTrainer::new(config.clone(), &data, &device).context("setting up training")?
        }
    };
    trainer.count_time_from(invocation);
    write_run_config(&args.out, &serde_json::to_string_pretty(&config)?)?;

    eprintln!(
        "training a {}-parameter {} tokenizer ({} codes) on {} images of {}x{} for {} steps",
        trainer.parameters().element_count(),
        domain.name(),
        config.codebook_size,
        data.len(),
        config.image_size,
        config.image_size,
        config.steps
    );
    let first_step = trainer.state().step;
    let progress = Progress::new("step", config.steps, first_step, 10);
    let started = Instant::now();
    let (mut images, mut last) = (0usize, None::<TokenizerStepReport>);
    trainer
        .run(&args.out, u64::MAX, &mut |report| {
            images += report.images;
            let rate = images as f64 / started.elapsed().as_secs_f64();
            let message = format!(
                "loss {:.4} (rec {:.4})  perplexity {:.1}  {:.1} img/s  lr {:.2e}",
                report.loss, report.reconstruction, report.perplexity, rate, report.lr
            );
            progress.step(report.step, report.total_steps, message);
            last = Some(report.clone());
        })
        .context("training")?;
    progress.bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if let Some(report) = last {
        println!(
            "step {}: loss {:.4} (reconstruction {:.4}, commitment {:.4}); perplexity {:.1}, {} live codes; {:.2} steps/s, {:.1} images/s",
            report.step,
            report.loss,
            report.reconstruction,
            report.commitment,
            report.perplexity,
            report.live_codes,
            (trainer.state().step - first_step) as f64 / seconds,
            images as f64 / seconds
        );
    }
    println!(
        "tokenizer: {}\nloss curve: {}",
        args.out.join("model").display(),
        args.out.join("loss.png").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The checkpoint to resume from (with `--resume`), or `None` for a new run; a new run refuses an
/// `--out` that already holds checkpoints.
fn resume_point(out: &Path, resume: bool) -> Result<Option<PathBuf>> {
    if resume {
        let checkpoint = latest_checkpoint(out).with_context(|| {
            format!(
                "--resume: no checkpoint under {}/checkpoints",
                out.display()
            )
        })?;
        eprintln!("resuming from {}", checkpoint.display());
        return Ok(Some(checkpoint));
    }
    if let Some(existing) = latest_checkpoint(out) {
        bail!(
            "{} already holds checkpoints ({}); pass --resume to continue, or choose another --out",
            out.display(),
            existing.display()
        );
    }
    Ok(None)
}

/// Creates `out` and records the run's config (JSON) as `train-config.json`.
fn write_run_config(out: &Path, config_json: &str) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("train-config.json");
    std::fs::write(&path, config_json).with_context(|| format!("writing {}", path.display()))
}

/// Progress of a long loop (training steps, data preparation): a bar on a terminal, otherwise a
/// plain line every `plain_every` units and at the end.
struct Progress {
    bar: ProgressBar,
    plain: bool,
    unit: &'static str,
    plain_every: u64,
    last: std::cell::Cell<u64>,
}

impl Progress {
    fn new(unit: &'static str, total: u64, first: u64, plain_every: u64) -> Self {
        let plain = !std::io::stderr().is_terminal();
        let bar = if plain {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} {bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta}]",
                )
                .expect("valid template"),
            );
            bar
        };
        bar.set_position(first);
        bar.set_prefix(unit);
        Self {
            bar,
            plain,
            unit,
            plain_every,
            last: first.into(),
        }
    }

    fn step(&self, step: u64, total: u64, message: String) {
        if self.plain {
            let last = self.last.replace(step);
            if step / self.plain_every > last / self.plain_every || step == total {
                eprintln!("{} {step}/{total}  {message}", self.unit);
            }
        } else {
            self.bar.set_position(step);
            self.bar.set_message(message);
        }
    }
}
