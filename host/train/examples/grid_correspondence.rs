//! Whether a core learns that an image-token target follows from the input token at the same
//! grid position, with the reference's start, the default-model recipe's start (`init` in
//! `recipes/default-model/core.json`, with its share of position-matching heads) and
//! the recipe's with another share of matching heads (every head, or half when the recipe has every
//! head matching): two 14 x 14 grids per sample, random ids and their image under a fixed
//! permutation of the ids, position by position. Prints the target's cross-entropy on unseen
//! samples given their own source grid and given another sample's (chance: ln 16 = 2.77).
//!
//! `cargo run --release -p tessera-train --example grid_correspondence -- [STEPS] [DIM] [DEPTH]`
//! (defaults 300, 64, 2; heads of 32 channels).

mod common;

use tessera_train::image_tokens::DOMAIN_GRID;
use tessera_train::init::CoreInit;
use tessera_train::masking::MaskingConfig;
use tessera_train::{DomainTokens, TokenSample, TrainRng};

use common::{Run, other_head_share, own_and_other_loss, pair, recipe_init, train_and_unseen};

const VALUES: usize = 16;
const SOURCE: &str = "tok_rgb@224";
const TARGET: &str = "tok_semseg@224";

fn samples(rng: &mut TrainRng, count: usize) -> Vec<TokenSample> {
    (0..count)
        .map(|_| {
            let source: Vec<u32> = (0..DOMAIN_GRID * DOMAIN_GRID)
                .map(|_| rng.below(VALUES) as u32)
                .collect();
            let target = source.iter().map(|v| (v * 5 + 3) % VALUES as u32).collect();
            pair(
                (SOURCE, DomainTokens::Grid(source)),
                (TARGET, DomainTokens::Grid(target)),
            )
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let run = Run::from_args()?;
    let (data, unseen) = train_and_unseen(samples, 512, 16);
    let recipe = recipe_init(&run)?;
    let starts = [
        ("reference start", CoreInit::default()),
        ("recipe's start", recipe.clone()),
        other_head_share(&recipe, &run),
    ];
    println!(
        "D {}, {} + {} blocks, {} steps; target cross-entropy on unseen samples",
        run.dim, run.depth, run.depth, run.steps
    );
    println!("{:<31} {:>9} {:>15}", "start", "own grid", "another's grid");
    for (name, init) in starts {
        let masking = MaskingConfig {
            input_tokens: [64, 196],
            target_tokens: [64, 128],
            ..MaskingConfig::default()
        };
        let (own, other) = own_and_other_loss(
            &run,
            (SOURCE, TARGET),
            VALUES,
            masking,
            init,
            &data,
            &unseen,
        )?;
        println!("{name:<31} {own:>9.3} {other:>15.3}");
    }
    Ok(())
}
