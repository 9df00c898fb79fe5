//! Core training throughput on this machine: a preset or a training config on shapes-world data,
//! timing the masked forward, the backward pass and the optimiser update separately.
//!
//! `cargo run --release -p tessera-train --example bench_train -- [tiny|small|CONFIG.json] [steps]`
//!
//! A config's image-token domains (which need trained tokenizers to come from real scenes) get
//! uniformly random grids of their vocabulary: the cost of a step does not depend on the ids.

use std::time::Instant;

use candle_core::{DType, Device};
use tessera_text::TextTokenizer;
use tessera_train::data::DomainTokens;
use tessera_train::image_tokens::DOMAIN_GRID;
use tessera_train::optim::{clip_grad_norm, learning_rate};
use tessera_train::rng::TrainRng;
use tessera_train::{CoreTrainConfig, CoreTrainer, world_dataset};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let preset = args.next().unwrap_or_else(|| "tiny".into());
    let steps: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tokenizer = TextTokenizer::from_json_bytes(&std::fs::read(
        root.join("assets/text/wordpiece_shapes.json"),
    )?)?;
    let mut data = world_dataset(&tokenizer, 0, 64)?;
    let config = if preset.ends_with(".json") {
        CoreTrainConfig::read(std::path::Path::new(&preset))?
    } else {
        CoreTrainConfig::preset(&preset, tokenizer.vocab_size())?
    };
    let mut rng = TrainRng::seeded(0);
    for (domain, &vocab) in config.vocab.iter().filter(|(d, _)| d.starts_with("tok_")) {
        for sample in &mut data.samples {
            let grid = (0..DOMAIN_GRID * DOMAIN_GRID)
                .map(|_| rng.below(vocab) as u32)
                .collect();
            sample.insert(domain.clone(), DomainTokens::Grid(grid));
        }
    }
    let mut trainer = CoreTrainer::new(config.clone(), &data, &Device::Cpu)?;
    println!(
        "{preset}: {} parameters, batch {}",
        trainer.parameters().element_count(),
        config.batch_size
    );
    // Warm-up step (allocations, thread pool).
    trainer.step()?;
    let (mut forward, mut backward, mut update, mut tokens) = (0.0, 0.0, 0.0, 0);
    let started = Instant::now();
    for step in 0..steps {
        let t0 = Instant::now();
        let batch = trainer.next_loss()?;
        let _ = batch.loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let mut grads = batch.loss.backward()?;
        let t2 = Instant::now();
        let vars = trainer.parameters().vars.clone();
        clip_grad_norm(&vars, &mut grads, 3.0)?;
        let lr = learning_rate(&config.optim, step, config.steps);
        trainer.optimizer_mut().step(&vars, &grads, lr)?;
        let t3 = Instant::now();
        forward += (t1 - t0).as_secs_f64();
        backward += (t2 - t1).as_secs_f64();
        update += (t3 - t2).as_secs_f64();
        tokens += batch.tokens;
    }
    let total = started.elapsed().as_secs_f64();
    let n = steps as f64;
    println!(
        "{:.2} steps/s, {:.0} tokens/s; per step: forward {:.0} ms, backward {:.0} ms, clip + AdamW {:.0} ms",
        n / total,
        tokens as f64 / total,
        1e3 * forward / n,
        1e3 * backward / n,
        1e3 * update / n
    );
    Ok(())
}
