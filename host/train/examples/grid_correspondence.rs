//! Whether a core learns that an image-token target follows from the input token at the same
//! grid position, with the reference's start and with the default-model recipe's start
//! (`init` in `recipes/default-model/core.json`): two 14 x 14 grids per sample, random ids and their image under a fixed
//! permutation of the ids, position by position. Prints the target's cross-entropy on unseen
//! samples given their own source grid and given another sample's (chance: ln 16 = 2.77).
//!
//! `cargo run --release -p tessera-train --example grid_correspondence -- [STEPS] [DIM] [DEPTH]`
//! (defaults 300, 64, 2; heads of 32 channels).

use std::collections::BTreeMap;

use candle_core::Device;
use tessera_train::image_tokens::DOMAIN_GRID;
use tessera_train::init::CoreInit;
use tessera_train::masking::{MaskingConfig, SequenceSpecials};
use tessera_train::objective::{domain_plans, paired_loss};
use tessera_train::optim::OptimConfig;
use tessera_train::{
    CoreTrainConfig, CoreTrainer, DomainTokens, InMemoryDataset, TokenSample, TrainRng,
};

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
            BTreeMap::from([
                (SOURCE.to_string(), DomainTokens::Grid(source)),
                (TARGET.to_string(), DomainTokens::Grid(target)),
            ])
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let steps = args.next().transpose()?.unwrap_or(300);
    let dim = args.next().transpose()?.unwrap_or(64);
    let depth = args.next().transpose()?.unwrap_or(2);
    let mut rng = TrainRng::seeded(1);
    let data = InMemoryDataset {
        samples: samples(&mut rng, 512),
    };
    let unseen = samples(&mut rng, 16);
    let domains = [SOURCE, TARGET];
    let recipe = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../recipes/default-model/core.json");
    let starts = [
        ("reference start", CoreInit::default()),
        ("recipe's start", CoreTrainConfig::read(&recipe)?.init),
    ];
    println!(
        "D {dim}, {depth} + {depth} blocks, {steps} steps; target cross-entropy on unseen samples"
    );
    println!("{:<26} {:>9} {:>15}", "start", "own grid", "another's grid");
    for (name, init) in starts {
        let config = CoreTrainConfig {
            model: serde_json::json!({
                "act_layer": "SiLU", "dim": dim, "encoder_depth": depth, "decoder_depth": depth,
                "num_heads": (dim / 32).max(1), "mlp_ratio": 4.0, "gated_mlp": true,
                "qkv_bias": false, "proj_bias": false, "mlp_bias": false, "norm_bias": false,
                "share_modality_embeddings": false, "domains_in": domains,
                "domains_out": domains, "image_size": 224, "patch_size": 16,
            }),
            vocab: BTreeMap::from([(SOURCE.into(), VALUES), (TARGET.into(), VALUES)]),
            masking: MaskingConfig {
                input_tokens: [64, 196],
                target_tokens: [64, 128],
                ..MaskingConfig::default()
            },
            specials: SequenceSpecials::default(),
            optim: OptimConfig {
                peak_lr: 1e-3,
                warmup_steps: 50,
                ..OptimConfig::default()
            },
            init,
            batch_size: 16,
            steps: steps as u64,
            checkpoint_every: 0,
            seed: 3,
        };
        let mut trainer = CoreTrainer::new(config, &data, &Device::Cpu)?;
        for _ in 0..steps {
            trainer.step()?;
        }
        let model = trainer.model();
        let plans = domain_plans(model.config())?;
        let loss = |input_of: &dyn Fn(usize) -> usize| {
            paired_loss(
                model,
                &plans,
                &unseen,
                (SOURCE, TARGET),
                input_of,
                &SequenceSpecials::default(),
            )
        };
        let own = loss(&|i| i)?;
        let other = loss(&|i| (i + 1) % unseen.len())?;
        println!("{name:<26} {own:>9.3} {other:>15.3}");
    }
    Ok(())
}
