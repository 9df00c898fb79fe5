//! Whether a core learns to write where an object is as `det` coordinate tokens, from the
//! default-model recipe's start with and without its coordinate tokens (`init.coordinate_tokens`
//! in `recipes/default-model/core.json`), and from the reference's. Both recipe starts have every
//! cross-attention head matching positions, so that only the coordinate tokens differ (the share
//! of matching heads is what `sequence_correspondence` and `grid_correspondence` compare). Each sample is a 14 x 14 grid
//! of background ids with one or two objects (a rectangle of 2-4 x 2-4 cells holding its class
//! id) and the 4M det of those rectangles (`v0=xmin v1=ymin v2=xmax v3=ymax class`, nearest the
//! origin first). Training gives the whole grid and asks for the whole det. Prints det's
//! cross-entropy on unseen samples given their own grid and given another sample's.
//!
//! `cargo run --release -p tessera-train --example box_coordinates -- [STEPS] [DIM] [DEPTH]`
//! (defaults 300, 64, 2; heads of 32 channels).

mod common;

use tessera_train::masking::MaskingConfig;
use tessera_train::{DomainTokens, TokenSample, TrainRng};

use common::{
    Run, compare_coordinate_starts, pair, rectangles_and_boxes, source_to_target, train_and_unseen,
};

const SOURCE: &str = "tok_rgb@224";
const TARGET: &str = "det";
/// Random background ids, so that only the objects' cells say where the boxes are.
const BACKGROUNDS: usize = 8;

fn samples(rng: &mut TrainRng, count: usize) -> Vec<TokenSample> {
    (0..count)
        .map(|_| {
            let (grid, det) = rectangles_and_boxes(rng, BACKGROUNDS);
            pair(
                (SOURCE, DomainTokens::Grid(grid)),
                (TARGET, DomainTokens::Sequence(det)),
            )
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let run = Run::from_args()?;
    let (data, unseen) = train_and_unseen(samples, 1024, 32);
    let masking = MaskingConfig {
        input_tokens: [196, 196],
        target_tokens: [16, 16],
        alphas: vec![source_to_target(SOURCE, TARGET, false)],
    };
    compare_coordinate_starts(
        &run,
        (SOURCE, TARGET),
        masking,
        (&data, &unseen),
        ("own grid", "another's grid"),
    )
}
