//! Cross-step batching benchmark: two-branch workflows from one caption, run through the engine
//! and the workflow executor three ways, release build. `dense`: depth and normals, each ROAR
//! with CFG; `ar`: two box proposals (`det`), each autoregressive with CFG and a KV cache.
//! Modes:
//!
//! * `batched`: both steps ready together, one lockstep generation (shared forward passes);
//! * `one by one`: `max_concurrency = 1`, the branches one after the other;
//! * `concurrent`: two threads, batching off (what the executor did before batching).
//!
//! on the fixture model (`fm7_tiny_swiglu_shared`) and on a random-initialised model of the
//! given size (default dim 384, 6 + 6 layers, 6 heads; `tok_depth@224` / `tok_normal@224` with
//! 8192-token vocabularies, `det` with 30000). Every mode must produce the same tokens (asserted). No plugins are
//! needed: the caption is given as token ids and the outputs are raw token grids.
//!
//! Usage: `cargo run --release -p tessera-engine --example bench_batch -- [--steps 8]
//! [--tokens 48] [--reps 3] [--dim 384] [--depth 6] [--heads 6] [--skip-random]
//! [--skip-fixture] [--skip-dense] [--skip-ar]` (`--steps`: ROAR steps, `--tokens`: token budget of
//! the autoregressive branches).
//! Fixtures: `$TESSERA_FIXTURES`, else `../shared/fixtures` beside the repository. Threads:
//! `RAYON_NUM_THREADS` (candle's CPU pool).

#[path = "../../generate/tests/generation/random_model.rs"]
mod random_model;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tessera_engine::{Engine, EngineConfig, InputValue, StepValue};
use tessera_workflow::{
    ExecuteOptions, ExecutionPlan, NoCache, ValidationContext, execute, plan, validate_source,
};

use random_model::{RandomModel, write_random_model};

type Error = Box<dyn std::error::Error>;

fn ar_workflow(tokens: usize) -> String {
    let step = |id: &str, cfg: f64| {
        format!(
            "[[steps]]\nid = \"{id}\"\ngenerate = \"det\"\nfrom = [\"inputs.caption\"]\n\
             scheme = \"autoregressive\"\ntemperature = 1.0\ncfg_scale = {cfg}\ntoken_budget = {tokens}\n\n"
        )
    };
    format!(
        "workflow_version = 1\n\n[workflow]\nname = \"bench-two-proposals\"\n\n\
         [inputs.caption]\ndomain = \"caption\"\n\n{}{}\
         [outputs]\nfirst = \"steps.boxes\"\nsecond = \"steps.more_boxes\"\n",
        step("boxes", 2.0),
        step("more_boxes", 3.0),
    )
}

fn dense_workflow(steps: usize) -> String {
    let step = |id: &str, domain: &str, cfg: f64| {
        format!(
            "[[steps]]\nid = \"{id}\"\ngenerate = \"{domain}\"\nfrom = [\"inputs.caption\"]\n\
             scheme = \"roar\"\ndecoding_steps = {steps}\ntemperature = 1.0\ncfg_scale = {cfg}\n\n"
        )
    };
    format!(
        "workflow_version = 1\n\n[workflow]\nname = \"bench-two-branches\"\n\n\
         [inputs.caption]\ndomain = \"caption\"\n\n{}{}\
         [outputs]\nfirst = \"steps.depth\"\nsecond = \"steps.normal\"\n",
        step("depth", "tok_depth@224", 2.0),
        step("normal", "tok_normal@224", 3.0),
    )
}

fn planned(engine: &Engine, text: &str) -> Result<ExecutionPlan, Error> {
    let mut served = engine.served_domains();
    served.insert("caption".to_owned());
    let report = validate_source(
        "bench.toml",
        text,
        &ValidationContext {
            catalog: Some(engine.catalog()),
            served_domains: Some(&served),
        },
    );
    let workflow = report
        .workflow
        .clone()
        .ok_or_else(|| report.render_terminal(false))?;
    Ok(plan(&workflow, None)?)
}

/// Wall times, the tokens and the forward passes (total, shared) of the last run.
type Measured = (Vec<f64>, Vec<Vec<u32>>, (usize, usize));

/// One mode, `reps` times in a row: the wall times, the tokens and the forward passes of the last run.
fn measure(
    engine: &Engine,
    execution: &ExecutionPlan,
    inputs: &BTreeMap<String, StepValue>,
    batching: bool,
    max_concurrency: usize,
    reps: usize,
) -> Result<Measured, Error> {
    engine.set_batching(batching);
    let mut times = Vec::new();
    let mut tokens = Vec::new();
    let mut passes = (0, 0);
    for _ in 0..reps {
        let options = ExecuteOptions {
            max_concurrency,
            cache_context: engine.cache_context(inputs, 7, true),
            ..ExecuteOptions::default()
        };
        let before = engine.forward_passes();
        let start = Instant::now();
        let report = execute(execution, engine, inputs, &NoCache, &options, &|_| {})?;
        times.push(start.elapsed().as_secs_f64());
        if !report.succeeded() {
            return Err(format!("run failed: {:?}", report.outcomes).into());
        }
        let after = engine.forward_passes();
        passes = (after.total - before.total, after.shared - before.shared);
        tokens = ["first", "second"]
            .iter()
            .map(|name| {
                report.outputs[*name]
                    .produced()
                    .map(|p| p.ids.clone())
                    .unwrap_or_default()
            })
            .collect();
    }
    Ok((times, tokens, passes))
}

fn median(times: &[f64]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn bench(
    label: &str,
    model: &Path,
    workflows: &[(String, String)],
    reps: usize,
) -> Result<(), Error> {
    let scratch = tempfile::tempdir()?;
    let plugins = scratch.path().join("no-plugins");
    std::fs::create_dir_all(&plugins)?;
    let start = Instant::now();
    let engine = Engine::load(&EngineConfig {
        model: model.to_path_buf(),
        plugins_dir: plugins,
        out_dir: scratch.path().join("out"),
        asset_overrides: BTreeMap::new(),
        tokenizers: BTreeMap::new(),
    })?;
    println!(
        "{label}: {} parameters, loaded in {:.1} s",
        engine.model().parameter_count(),
        start.elapsed().as_secs_f64()
    );
    for (title, text) in workflows {
        println!(" {title}");
        bench_workflow(&engine, text, reps)?;
    }
    Ok(())
}

fn bench_workflow(engine: &Engine, text: &str, reps: usize) -> Result<(), Error> {
    let execution = planned(engine, text)?;
    let inputs = BTreeMap::from([(
        "caption".to_owned(),
        StepValue::input(
            "caption",
            InputValue::Tokens(vec![101, 1037, 3185, 1997, 1037, 4937, 102]),
        ),
    )]);
    // Warm-up (allocator, thread pool).
    measure(engine, &execution, &inputs, true, 2, 1)?;
    let modes = [
        ("batched (2 at once, shared passes)", true, 2),
        ("one by one (max_concurrency 1)", true, 1),
        ("concurrent, batching off (2 threads)", false, 2),
    ];
    // Modes take turns within each repetition, so load from other processes on the machine
    // drifts over all of them alike.
    let mut runs: Vec<Measured> = vec![(Vec::new(), Vec::new(), (0, 0)); modes.len()];
    for _ in 0..reps {
        for ((_, batching, concurrency), slot) in modes.iter().zip(runs.iter_mut()) {
            let (times, tokens, passes) =
                measure(engine, &execution, &inputs, *batching, *concurrency, 1)?;
            slot.0.extend(times);
            slot.1 = tokens;
            slot.2 = passes;
        }
    }
    let mut results = Vec::new();
    for ((name, _, _), (times, tokens, passes)) in modes.iter().zip(runs) {
        println!(
            "  {name:<38} median {:>7.3} s  (runs: {})  forward passes {} ({} shared)",
            median(&times),
            times
                .iter()
                .map(|t| format!("{t:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            passes.0,
            passes.1
        );
        results.push((median(&times), tokens));
    }
    assert_eq!(
        results[0].1, results[1].1,
        "batched and one-by-one tokens differ"
    );
    assert_eq!(
        results[0].1, results[2].1,
        "batched and concurrent tokens differ"
    );
    println!(
        "  speed-up of batching: {:.2}x over one by one, {:.2}x over concurrent; same tokens in every mode",
        results[1].0 / results[0].0,
        results[2].0 / results[0].0
    );
    Ok(())
}

fn vocab(domain: &str) -> usize {
    match domain {
        "caption" => 30000,
        _ => 8192,
    }
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let flag = |name: &str| args.iter().any(|a| a == name);
    let steps = value("--steps", 8);
    let tokens = value("--tokens", 48);
    let mut workflows = Vec::new();
    if !flag("--skip-dense") {
        workflows.push((
            format!("dense: depth + normals, ROAR {steps} steps, CFG, 196 tokens each"),
            dense_workflow(steps),
        ));
    }
    if !flag("--skip-ar") {
        workflows.push((
            format!("ar: two det proposals, autoregressive with CFG, up to {tokens} tokens each"),
            ar_workflow(tokens),
        ));
    }
    let reps = value("--reps", 3).max(1);
    println!(
        "threads: RAYON_NUM_THREADS={}",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into())
    );
    if !flag("--skip-fixture") {
        let fixtures = std::env::var_os("TESSERA_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
            });
        bench(
            "fixture model fm7_tiny_swiglu_shared",
            &fixtures.join("fm/fm7_tiny_swiglu_shared"),
            &workflows,
            reps,
        )?;
    }
    if !flag("--skip-random") {
        let (dim, depth, heads) = (
            value("--dim", 384),
            value("--depth", 6),
            value("--heads", 6),
        );
        let dir = tempfile::tempdir()?;
        write_random_model(
            &RandomModel {
                dim,
                depth,
                heads,
                domains: &["caption", "det", "tok_depth@224", "tok_normal@224"],
                output_only: &[],
                vocab: &vocab,
                seed: 42,
                embedding_scale: 1.0,
                weight_scale: 1.0,
            },
            dir.path(),
        )?;
        bench(
            &format!("random model dim {dim}, {depth} + {depth} layers, {heads} heads"),
            dir.path(),
            &workflows,
            reps,
        )?;
    }
    Ok(())
}
