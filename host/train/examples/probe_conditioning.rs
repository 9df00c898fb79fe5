//! How much a trained core reads its inputs: for pairs of domains of the shapes world,
//! the target's cross-entropy given its own scene's input against given another scene's input
//! (`tessera_train::objective::paired_loss`), on scenes from seeds beyond training. A core that has
//! learned only each domain's marginal shows no gap.
//!
//! `cargo run --release -p tessera-train --example probe_conditioning -- MODEL_DIR [SCENES]
//! [DOMAIN=TOKENIZER_DIR ...]` (with tokenizers, image-token pairs are probed too).

use std::collections::BTreeMap;
use std::path::PathBuf;

use tessera_model::{FourM, LoadOptions};
use tessera_text::TextTokenizer;
use tessera_train::masking::SequenceSpecials;
use tessera_train::objective::{domain_plans, paired_loss};
use tessera_train::{ImageTokenizers, world_dataset_with_images};

/// Input -> target pairs whose target the input largely determines.
const PAIRS: [(&str, &str); 10] = [
    ("caption", "det"),
    ("det", "caption"),
    ("caption", "color_palette"),
    ("metadata", "caption"),
    ("tok_rgb@224", "tok_semseg@224"),
    ("tok_rgb@224", "tok_depth@224"),
    ("tok_depth@224", "tok_normal@224"),
    ("caption", "tok_rgb@224"),
    ("det", "tok_depth@224"),
    ("det", "tok_rgb@224"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model_dir = args
        .next()
        .ok_or("usage: probe_conditioning MODEL_DIR [SCENES] [DOMAIN=TOKENIZER_DIR ...]")?;
    let scenes: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(32);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tokenizer = TextTokenizer::from_json_bytes(&std::fs::read(
        root.join("assets/text/wordpiece_shapes.json"),
    )?)?;
    let mut tokenizer_dirs = BTreeMap::new();
    for arg in args {
        let (domain, dir) = arg
            .split_once('=')
            .ok_or_else(|| format!("expected DOMAIN=TOKENIZER_DIR, got {arg}"))?;
        tokenizer_dirs.insert(domain.to_owned(), PathBuf::from(dir));
    }
    let images = ImageTokenizers::load(&tokenizer_dirs)?;
    let data = world_dataset_with_images(
        &tokenizer,
        1_000_000_000,
        scenes,
        Some(&images),
        &mut |_| {},
    )?;
    let model = FourM::load(&model_dir, &LoadOptions::default())?;
    let plans = domain_plans(model.config())?;
    let specials = SequenceSpecials::default();
    println!("{model_dir}: {scenes} unseen scenes");
    println!(
        "{:<32} {:>10} {:>14} {:>7}",
        "input -> target", "own input", "other's input", "ratio"
    );
    for (input, target) in PAIRS {
        let has = |domain: &str| data.samples.first().is_some_and(|s| s.contains_key(domain));
        if !plans.iter().any(|p| p.name == input && p.is_input)
            || !plans.iter().any(|p| p.name == target && p.is_target)
            || !has(input)
            || !has(target)
        {
            continue;
        }
        let own = paired_loss(
            &model,
            &plans,
            &data.samples,
            (input, target),
            &|i| i,
            &specials,
        )?;
        let other = paired_loss(
            &model,
            &plans,
            &data.samples,
            (input, target),
            &|i| (i + 1) % scenes,
            &specials,
        )?;
        println!(
            "{:<32} {own:>10.3} {other:>14.3} {:>7.2}",
            format!("{input} -> {target}"),
            own / other
        );
    }
    Ok(())
}
