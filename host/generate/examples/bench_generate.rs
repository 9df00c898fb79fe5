//! Generation benchmark on a 4M-21 B-sized random model (dim 768, 12 + 12 layers, 12 heads,
//! SwiGLU; domains `caption` (30000-token vocabulary), `rgb@224`, `tok_rgb@224` (16384)) on CPU:
//!
//! 1. a 64-token caption, autoregressive with classifier-free guidance (scale 2.0, conditioned
//!    on `rgb@224`), in the same run with the KV cache, with the reference's loop (the decoder
//!    over the whole prefix every token, cross-attention keys/values of the context included)
//!    and with the stricter baseline that recomputes the prefix but projects the context once;
//!    all three must produce the same tokens;
//! 2. one 25-step ROAR `tok_rgb@224` generation with CFG 2.0 conditioned on a caption.
//!
//! Usage: `cargo run --release -p tessera-generate --example bench_generate -- [--dir TMPDIR]
//! [--skip-roar] [--profile-cached]`; `--profile-cached` runs only the cached caption (for
//! `perf record`). Threads: `RAYON_NUM_THREADS` (candle's CPU pool).

#[path = "../tests/generation/random_model.rs"]
mod random_model;

use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::{Device, Tensor};
use tessera_generate::{AutoregressiveMode, DenseInputs, Generator, GeneratorOptions, Progress};
use tessera_model::{DomainValues, FourM, LoadOptions};
use tessera_sampler::{
    GenerationPlan, GenerationState, Guidance, ModalityState, Scheme, SeededRandom, TargetSpec,
    TemperatureSchedule, TokenScheduleKind, text_ids,
};

use random_model::{RandomModel, write_random_model};

fn vocab(domain: &str) -> usize {
    match domain {
        "tok_rgb@224" => 16384,
        _ => 30000,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir_arg = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1));
    let skip_roar = args.iter().any(|a| a == "--skip-roar");
    let profile_cached = args.iter().any(|a| a == "--profile-cached");
    let temp = match dir_arg {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    println!("threads: RAYON_NUM_THREADS={threads}");

    let started = Instant::now();
    let spec = RandomModel {
        dim: 768,
        depth: 12,
        heads: 12,
        domains: &["caption", "rgb@224", "tok_rgb@224"],
        output_only: &[],
        vocab: &vocab,
        seed: 42,
        embedding_scale: 1.0,
        weight_scale: 1.0,
    };
    write_random_model(&spec, temp.path())?;
    let model = FourM::load(temp.path(), &LoadOptions::default())?;
    println!(
        "model: 4M-21 B-sized random ({} parameters), written and loaded in {:.1} s",
        model.parameter_count(),
        started.elapsed().as_secs_f64()
    );

    // 1. Caption, 64 tokens, CFG 2.0 on rgb@224.
    let pixels = Tensor::randn(0f32, 1.0, (1, 3, 224, 224), &Device::Cpu)?;
    let dense = DenseInputs::new().with("rgb@224", DomainValues::Pixels(pixels));
    let caption_plan = GenerationPlan {
        condition_domains: vec!["rgb@224".into()],
        targets: vec![TargetSpec {
            domain: "caption".into(),
            scheme: Scheme::Autoregressive,
            num_tokens: 65,
            decoding_steps: 1,
            token_schedule: TokenScheduleKind::Linear,
            temperature: 0.0,
            temperature_schedule: TemperatureSchedule::Constant,
            guidance: Guidance::Scale(2.0),
        }],
        grow_guidance_conditioning: false,
    };
    let mut caption_state = GenerationState::new();
    caption_state.insert("rgb@224", ModalityState::full_input_pixels(1, 196)?)?;
    caption_state.insert("caption", ModalityState::empty_sequence_target(1, 65)?)?;
    let run_caption = |autoregressive: AutoregressiveMode| -> Result<(f64, Vec<u32>, usize), Box<dyn std::error::Error>> {
        let generator = Generator::with_options(
            &model,
            GeneratorOptions {
                autoregressive,
                ..GeneratorOptions::default()
            },
        );
        let mut state = caption_state.clone();
        let mut tokens = 0;
        let mut count = |event: Progress<'_>| {
            if matches!(event, Progress::Token { .. }) {
                tokens += 1;
            }
            ControlFlow::Continue(())
        };
        let start = Instant::now();
        let report = generator.generate(
            &caption_plan,
            &mut state,
            &dense,
            &mut SeededRandom::new(7),
            &mut count,
        )?;
        let seconds = start.elapsed().as_secs_f64();
        let stream = report.steps[0].stream.clone().unwrap_or_default();
        Ok((
            seconds,
            stream.into_iter().next().unwrap_or_default(),
            tokens,
        ))
    };
    // Warm-up (allocator, thread pool) with the cached path.
    run_caption(AutoregressiveMode::KvCache)?;
    if profile_cached {
        // For `perf record`: the cached path alone, a few times.
        for _ in 0..3 {
            let (seconds, _, tokens) = run_caption(AutoregressiveMode::KvCache)?;
            println!(
                "KV cache {seconds:.2} s ({:.1} ms/token)",
                1e3 * seconds / tokens as f64
            );
        }
        return Ok(());
    }
    let (cached, cached_stream, tokens) = run_caption(AutoregressiveMode::KvCache)?;
    let (faithful, faithful_stream, _) = run_caption(AutoregressiveMode::RecomputeAll)?;
    let (prefix, prefix_stream, _) = run_caption(AutoregressiveMode::RecomputePrefix)?;
    assert_eq!(
        cached_stream, faithful_stream,
        "KV cache and the reference's recompute loop disagree"
    );
    assert_eq!(
        cached_stream, prefix_stream,
        "KV cache and recompute-prefix disagree"
    );
    let per_token = |seconds: f64| 1e3 * seconds / tokens as f64;
    println!(
        "caption AR + CFG 2.0, {tokens} tokens (2 rows per forward), same tokens in all three modes:"
    );
    println!(
        "  KV cache                                        {cached:6.2} s ({:6.1} ms/token)",
        per_token(cached)
    );
    println!(
        "  recompute all (reference loop: prefix + context K/V) {faithful:6.2} s ({:6.1} ms/token), speed-up {:.1}x",
        per_token(faithful),
        faithful / cached
    );
    println!(
        "  recompute prefix (context K/V once)             {prefix:6.2} s ({:6.1} ms/token), speed-up {:.1}x",
        per_token(prefix),
        prefix / cached
    );

    if skip_roar {
        return Ok(());
    }
    // 2. tok_rgb@224, 25 ROAR steps, CFG 2.0 on a caption.
    let generator = Generator::new(&model);
    let mut caption = vec![101u32, 2023, 3185, 1037, 2158, 999, 42, 7, text_ids::EOS];
    caption.resize(16, text_ids::PAD);
    let mut state = GenerationState::new();
    state.insert(
        "caption",
        ModalityState::full_input_sequence(vec![caption])?,
    )?;
    state.insert("tok_rgb@224", ModalityState::empty_image_target(1, 196)?)?;
    let plan = GenerationPlan {
        condition_domains: vec!["caption".into()],
        targets: vec![TargetSpec {
            domain: "tok_rgb@224".into(),
            scheme: Scheme::Roar,
            num_tokens: 196,
            decoding_steps: 25,
            token_schedule: TokenScheduleKind::Linear,
            temperature: 3.0,
            temperature_schedule: TemperatureSchedule::OneOverX {
                min_temperature: 0.5,
                power: 0.5,
            },
            guidance: Guidance::Scale(2.0),
        }],
        grow_guidance_conditioning: true,
    };
    let start = Instant::now();
    let report = generator.generate(
        &plan,
        &mut state,
        &DenseInputs::new(),
        &mut SeededRandom::new(11),
        &mut |_| ControlFlow::Continue(()),
    )?;
    let seconds = start.elapsed().as_secs_f64();
    assert!(state.require("tok_rgb@224")?.is_finished());
    println!(
        "tok_rgb@224 ROAR 25 steps + CFG 2.0 (T 3.0 onex:0.5:0.5): {seconds:.2} s ({:.0} ms/step, {} encoder passes)",
        1e3 * seconds / report.steps.len() as f64,
        report.encoder_runs
    );
    Ok(())
}
