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

use tessera_train::image_tokens::DOMAIN_GRID;
use tessera_train::init::CoreInit;
use tessera_train::masking::MaskingConfig;
use tessera_train::vocab::VALUE_BINS;
use tessera_train::{DomainTokens, TokenSample, TrainRng};

use common::{
    Run, all_positional_heads, own_and_other_loss, pair, recipe_init, source_to_target,
    train_and_unseen,
};

const SOURCE: &str = "tok_rgb@224";
const TARGET: &str = "det";
/// Room for the 4M layout's value tokens and a few class ids after them.
const VOCAB: usize = 4224;
const VALUE_BASE: u32 = 204;
const FIRST_CLASS: u32 = VALUE_BASE + 4 * VALUE_BINS as u32;
const CLASSES: usize = 4;
const BACKGROUNDS: usize = 8;

/// The value token of a grid edge (0..=14 cells) on an axis.
fn value(axis: u32, cells: usize) -> u32 {
    let bin = (cells as f64 / DOMAIN_GRID as f64 * (VALUE_BINS - 1) as f64).round() as u32;
    VALUE_BASE + axis * VALUE_BINS as u32 + bin
}

fn samples(rng: &mut TrainRng, count: usize) -> Vec<TokenSample> {
    (0..count)
        .map(|_| {
            let mut grid: Vec<u32> = (0..DOMAIN_GRID * DOMAIN_GRID)
                .map(|_| rng.below(BACKGROUNDS) as u32)
                .collect();
            // (xmin, ymin, xmax, ymax) in cells, end exclusive, and the class.
            let mut boxes = Vec::new();
            for _ in 0..1 + rng.below(2) {
                let (width, height) = (2 + rng.below(3), 2 + rng.below(3));
                let (x, y) = (
                    rng.below(DOMAIN_GRID - width + 1),
                    rng.below(DOMAIN_GRID - height + 1),
                );
                let class = rng.below(CLASSES) as u32;
                for row in y..y + height {
                    for column in x..x + width {
                        grid[row * DOMAIN_GRID + column] = BACKGROUNDS as u32 + class;
                    }
                }
                boxes.push(([x, y, x + width, y + height], class));
            }
            boxes.sort_by_key(|([x, y, ..], _)| x * x + y * y);
            let det = boxes
                .iter()
                .flat_map(|([x0, y0, x1, y1], class)| {
                    [
                        value(0, *x0),
                        value(1, *y0),
                        value(2, *x1),
                        value(3, *y1),
                        FIRST_CLASS + class,
                    ]
                })
                .collect();
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
    let recipe = all_positional_heads(recipe_init(&run)?);
    let starts = [
        ("reference start", CoreInit::default()),
        (
            "recipe's, no coordinates",
            CoreInit {
                coordinate_tokens: None,
                ..recipe.clone()
            },
        ),
        ("recipe's, coordinates", recipe),
    ];
    println!(
        "D {}, {} + {} blocks, {} steps; det cross-entropy on unseen samples",
        run.dim, run.depth, run.depth, run.steps
    );
    println!("{:<26} {:>9} {:>15}", "start", "own grid", "another's grid");
    for (name, init) in starts {
        let masking = MaskingConfig {
            input_tokens: [196, 196],
            target_tokens: [16, 16],
            alphas: vec![source_to_target(SOURCE, TARGET, false)],
        };
        let (own, other) =
            own_and_other_loss(&run, (SOURCE, TARGET), VOCAB, masking, init, &data, &unseen)?;
        println!("{name:<26} {own:>9.3} {other:>15.3}");
    }
    Ok(())
}
