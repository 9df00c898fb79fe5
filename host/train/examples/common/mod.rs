//! What the start-comparison examples share: a small two-domain core trained from a given start,
//! then scored on unseen samples given their own input and another sample's.

// Each example uses part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;

use candle_core::Device;
use tessera_train::image_tokens::DOMAIN_GRID;
use tessera_train::init::CoreInit;
use tessera_train::masking::{DirichletAlphas, DomainAlphas, MaskingConfig, SequenceSpecials};
use tessera_train::objective::{domain_plans, paired_loss};
use tessera_train::optim::OptimConfig;
use tessera_train::vocab::VALUE_BINS;
use tessera_train::{
    CoreTrainConfig, CoreTrainer, DomainTokens, InMemoryDataset, TokenSample, TrainRng,
};

/// The size of the core and how long it trains.
pub struct Run {
    pub steps: usize,
    pub dim: usize,
    pub depth: usize,
}

impl Run {
    /// `[STEPS] [DIM] [DEPTH]` from the command line (defaults 300, 64, 2).
    pub fn from_args() -> Result<Self, std::num::ParseIntError> {
        let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
        Ok(Self {
            steps: args.next().transpose()?.unwrap_or(300),
            dim: args.next().transpose()?.unwrap_or(64),
            depth: args.next().transpose()?.unwrap_or(2),
        })
    }
}

/// Training samples and unseen ones, drawn in that order from one seeded stream.
pub fn train_and_unseen(
    samples: impl Fn(&mut TrainRng, usize) -> Vec<TokenSample>,
    train: usize,
    unseen: usize,
) -> (InMemoryDataset, Vec<TokenSample>) {
    let mut rng = TrainRng::seeded(1);
    let data = InMemoryDataset {
        samples: samples(&mut rng, train),
    };
    (data, samples(&mut rng, unseen))
}

/// Room for the 4M layout's value tokens and a few class ids after them.
pub const BOX_VOCAB: usize = 4224;
const VALUE_BASE: u32 = 204;
const FIRST_CLASS: u32 = VALUE_BASE + 4 * VALUE_BINS as u32;
const BOX_CLASSES: usize = 4;

/// The value token of a grid edge (0..=14 cells) on an axis.
fn box_value(axis: u32, cells: usize) -> u32 {
    let bin = (cells as f64 / DOMAIN_GRID as f64 * (VALUE_BINS - 1) as f64).round() as u32;
    VALUE_BASE + axis * VALUE_BINS as u32 + bin
}

/// A 14 x 14 grid of background ids (`0..backgrounds`) with one or two objects (a rectangle of
/// 2-4 x 2-4 cells holding id `backgrounds + class`), and the 4M det of those rectangles
/// (`v0=xmin v1=ymin v2=xmax v3=ymax class`, nearest the origin first).
pub fn rectangles_and_boxes(rng: &mut TrainRng, backgrounds: usize) -> (Vec<u32>, Vec<u32>) {
    let mut grid: Vec<u32> = (0..DOMAIN_GRID * DOMAIN_GRID)
        .map(|_| rng.below(backgrounds) as u32)
        .collect();
    // (xmin, ymin, xmax, ymax) in cells, end exclusive, and the class.
    let mut boxes = Vec::new();
    for _ in 0..1 + rng.below(2) {
        let (width, height) = (2 + rng.below(3), 2 + rng.below(3));
        let (x, y) = (
            rng.below(DOMAIN_GRID - width + 1),
            rng.below(DOMAIN_GRID - height + 1),
        );
        let class = rng.below(BOX_CLASSES) as u32;
        for row in y..y + height {
            for column in x..x + width {
                grid[row * DOMAIN_GRID + column] = backgrounds as u32 + class;
            }
        }
        boxes.push(([x, y, x + width, y + height], class));
    }
    boxes.sort_by_key(|([x, y, ..], _)| x * x + y * y);
    let det = boxes
        .iter()
        .flat_map(|([x0, y0, x1, y1], class)| {
            [
                box_value(0, *x0),
                box_value(1, *y0),
                box_value(2, *x1),
                box_value(3, *y1),
                FIRST_CLASS + class,
            ]
        })
        .collect();
    (grid, det)
}

/// One sample of a two-domain comparison.
pub fn pair(
    (source, source_tokens): (&str, DomainTokens),
    (target, target_tokens): (&str, DomainTokens),
) -> TokenSample {
    BTreeMap::from([
        (source.to_string(), source_tokens),
        (target.to_string(), target_tokens),
    ])
}

/// The one mixture component of a start comparison: `source` in (whole, when `keep_all`), the
/// whole `target` out.
pub fn source_to_target(source: &str, target: &str, keep_all: bool) -> DirichletAlphas {
    let mut component = DirichletAlphas::symmetric(0.0, 0.0);
    component.domains.insert(
        source.into(),
        DomainAlphas {
            input: Some(1.0),
            target: None,
            keep_all,
        },
    );
    component.domains.insert(
        target.into(),
        DomainAlphas {
            input: None,
            target: Some(1.0),
            keep_all: false,
        },
    );
    component
}

/// `init` with every head of each cross-attention starting as a position matcher.
pub fn all_positional_heads(init: CoreInit) -> CoreInit {
    CoreInit {
        positional_heads: None,
        ..init
    }
}

/// The start the correspondence examples compare with the recipe's: every head matching
/// positions when the recipe limits the matchers, else half of them (at least one).
pub fn other_head_share(recipe: &CoreInit, run: &Run) -> (&'static str, CoreInit) {
    match recipe.positional_heads {
        Some(_) => (
            "recipe's, all heads match",
            all_positional_heads(recipe.clone()),
        ),
        None => (
            "recipe's, half the heads match",
            CoreInit {
                positional_heads: Some((heads(run.dim) / 2).max(1)),
                ..recipe.clone()
            },
        ),
    }
}

/// Heads of 32 channels.
fn heads(dim: usize) -> usize {
    (dim / 32).max(1)
}

/// The default-model recipe's start (`init` in `recipes/default-model/core.json`) for a core of
/// `run`'s width: `positional_heads` keeps the recipe's share of the heads (at least one), since
/// the examples' cores have fewer heads than the recipe's.
pub fn recipe_init(run: &Run) -> Result<CoreInit, tessera_train::TrainError> {
    let recipe = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../recipes/default-model/core.json");
    let config = CoreTrainConfig::read(&recipe)?;
    let recipe_heads = config.model_config()?.num_heads;
    let mut init = config.init;
    init.positional_heads = init
        .positional_heads
        .map(|matching| (matching * heads(run.dim) / recipe_heads).max(1));
    Ok(init)
}

/// Trains a core over `(source, target)` from `init` and returns the target's cross-entropy on
/// `unseen` given each sample's own source and given the next sample's.
pub fn own_and_other_loss(
    run: &Run,
    (source, target): (&str, &str),
    vocab: usize,
    masking: MaskingConfig,
    init: CoreInit,
    data: &InMemoryDataset,
    unseen: &[TokenSample],
) -> Result<(f32, f32), Box<dyn std::error::Error>> {
    let (dim, depth, domains) = (run.dim, run.depth, [source, target]);
    // The recipe's coordinate tokens need `det` with the 4M value tokens; an example without
    // them compares the rest of the start.
    let specials = SequenceSpecials::default();
    let mut init = init;
    if let Some(coordinates) = &mut init.coordinate_tokens {
        coordinates.domains.retain(|domain| {
            domains.contains(&domain.as_str()) && vocab >= specials.value_base() + 4 * VALUE_BINS
        });
        if coordinates.domains.is_empty() {
            init.coordinate_tokens = None;
        }
    }
    let config = CoreTrainConfig {
        model: serde_json::json!({
            "act_layer": "SiLU", "dim": dim, "encoder_depth": depth, "decoder_depth": depth,
            "num_heads": heads(dim), "mlp_ratio": 4.0, "gated_mlp": true,
            "qkv_bias": false, "proj_bias": false, "mlp_bias": false, "norm_bias": false,
            "share_modality_embeddings": false, "domains_in": domains,
            "domains_out": domains, "image_size": 224, "patch_size": 16,
        }),
        vocab: BTreeMap::from([(source.into(), vocab), (target.into(), vocab)]),
        masking,
        specials,
        optim: OptimConfig {
            peak_lr: 1e-3,
            warmup_steps: 50,
            ..OptimConfig::default()
        },
        init,
        loss_weights: BTreeMap::new(),
        batch_size: 16,
        steps: run.steps as u64,
        checkpoint_every: 0,
        seed: 3,
    };
    let mut trainer = CoreTrainer::new(config, data, &Device::Cpu)?;
    for _ in 0..run.steps {
        trainer.step()?;
    }
    let model = trainer.model();
    let plans = domain_plans(model.config())?;
    let loss = |input_of: &dyn Fn(usize) -> usize| {
        paired_loss(
            model,
            &plans,
            unseen,
            (source, target),
            input_of,
            &SequenceSpecials::default(),
        )
    };
    let own = loss(&|i| i)?;
    let other = loss(&|i| (i + 1) % unseen.len())?;
    Ok((own, other))
}

/// Trains `(source, target)` on boxes and grids (`BOX_VOCAB`) from the reference's start and from
/// the recipe's with and without its coordinate tokens (every cross-attention head matching
/// positions in both), and prints the target's cross-entropy on `unseen` given each sample's own
/// source and another's, under the column names `own` and `other`.
pub fn compare_coordinate_starts(
    run: &Run,
    (source, target): (&str, &str),
    masking: MaskingConfig,
    (data, unseen): (&InMemoryDataset, &[TokenSample]),
    (own_column, other_column): (&str, &str),
) -> Result<(), Box<dyn std::error::Error>> {
    let recipe = all_positional_heads(recipe_init(run)?);
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
        "D {}, {} + {} blocks, {} steps; {target} cross-entropy on unseen samples",
        run.dim, run.depth, run.depth, run.steps
    );
    println!("{:<26} {own_column:>9} {other_column:>15}", "start");
    for (name, init) in starts {
        let (own, other) = own_and_other_loss(
            run,
            (source, target),
            BOX_VOCAB,
            masking.clone(),
            init,
            data,
            unseen,
        )?;
        println!("{name:<26} {own:>9.3} {other:>15.3}");
    }
    Ok(())
}
