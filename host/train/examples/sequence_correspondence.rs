//! Whether a core learns to read a sequence input into a sequence target (a caption's words into
//! boxes' labels, in the default model), for four starts: the reference's, the default-model
//! recipe's (`init` in `recipes/default-model/core.json`, with its share of position-matching
//! heads), the recipe's with another share of matching heads (every head, or half when the recipe has
//! every head matching), and the recipe's without position matching. Each sample is a 6-word "caption" of 24 possible words and a
//! "det" holding the same words, each mapped to another id, sorted by id, so a target token is
//! found by content rather than at its own position; training gives the whole caption and asks
//! for the whole det. Prints det's cross-entropy on unseen samples given their own caption and
//! given another sample's (the sentinels and `[EOS]` are predictable without the caption).
//!
//! `cargo run --release -p tessera-train --example sequence_correspondence -- [STEPS] [DIM] [DEPTH]`
//! (defaults 300, 64, 2; heads of 32 channels).

mod common;

use tessera_train::init::CoreInit;
use tessera_train::masking::MaskingConfig;
use tessera_train::{DomainTokens, TokenSample, TrainRng};

use common::{
    Run, other_head_share, own_and_other_loss, pair, recipe_init, source_to_target,
    train_and_unseen,
};

const WORDS: usize = 24;
const LENGTH: usize = 6;
const FIRST_WORD: u32 = 300;
const VOCAB: usize = 512;
const SOURCE: &str = "caption";
const TARGET: &str = "det";

fn samples(rng: &mut TrainRng, count: usize) -> Vec<TokenSample> {
    (0..count)
        .map(|_| {
            let caption: Vec<u32> = (0..LENGTH)
                .map(|_| FIRST_WORD + rng.below(WORDS) as u32)
                .collect();
            let mut det: Vec<u32> = caption.iter().map(|w| w + WORDS as u32).collect();
            det.sort_unstable();
            pair(
                (SOURCE, DomainTokens::Sequence(caption)),
                (TARGET, DomainTokens::Sequence(det)),
            )
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let run = Run::from_args()?;
    let (data, unseen) = train_and_unseen(samples, 512, 32);
    let recipe = recipe_init(&run)?;
    let starts = [
        ("reference start", CoreInit::default()),
        ("recipe's start", recipe.clone()),
        other_head_share(&recipe, &run),
        (
            "recipe's, no position match",
            CoreInit {
                positional_cross_attention: None,
                ..recipe
            },
        ),
    ];
    println!(
        "D {}, {} + {} blocks, {} steps; det cross-entropy on unseen samples",
        run.dim, run.depth, run.depth, run.steps
    );
    println!(
        "{:<31} {:>12} {:>18}",
        "start", "own caption", "another's caption"
    );
    for (name, init) in starts {
        let masking = MaskingConfig {
            input_tokens: [16, 16],
            target_tokens: [16, 16],
            alphas: vec![source_to_target(SOURCE, TARGET, true)],
        };
        let (own, other) =
            own_and_other_loss(&run, (SOURCE, TARGET), VOCAB, masking, init, &data, &unseen)?;
        println!("{name:<31} {own:>12.3} {other:>18.3}");
    }
    Ok(())
}
