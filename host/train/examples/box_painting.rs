//! Whether a core learns to paint objects where `det` puts them: the reverse of `box_coordinates`,
//! and the step of the caption -> boxes -> depth -> rgb chain that the default model has not
//! learned. Each sample is a 14 x 14 grid of one background id with one or two rectangles (2-4 x
//! 2-4 cells holding their class id) and the 4M det of those rectangles; training gives the whole
//! det and asks for the whole grid. Only the rectangles' cells are unknown without the det, so the
//! grid's cross-entropy given the sample's own det against another sample's measures the painting.
//! Compared from the reference's start and the default-model recipe's, with and without its
//! coordinate tokens (every cross-attention head matching positions in both recipe starts).
//!
//! `cargo run --release -p tessera-train --example box_painting -- [STEPS] [DIM] [DEPTH]`
//! (defaults 300, 64, 2; heads of 32 channels).

mod common;

use tessera_train::masking::MaskingConfig;
use tessera_train::{DomainTokens, TokenSample, TrainRng};

use common::{
    Run, compare_coordinate_starts, pair, rectangles_and_boxes, source_to_target, train_and_unseen,
};

const SOURCE: &str = "det";
const TARGET: &str = "tok_rgb@224";

fn samples(rng: &mut TrainRng, count: usize) -> Vec<TokenSample> {
    (0..count)
        .map(|_| {
            let (grid, det) = rectangles_and_boxes(rng, 1);
            pair(
                (SOURCE, DomainTokens::Sequence(det)),
                (TARGET, DomainTokens::Grid(grid)),
            )
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let run = Run::from_args()?;
    let (data, unseen) = train_and_unseen(samples, 1024, 32);
    let masking = MaskingConfig {
        input_tokens: [16, 16],
        target_tokens: [196, 196],
        alphas: vec![source_to_target(SOURCE, TARGET, true)],
    };
    compare_coordinate_starts(
        &run,
        (SOURCE, TARGET),
        masking,
        (&data, &unseen),
        ("own det", "another's det"),
    )
}
