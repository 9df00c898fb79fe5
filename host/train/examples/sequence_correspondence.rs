//! Whether a core learns to read a sequence input into a sequence target (a caption's words into
//! boxes' labels, in the default model), for three starts: the reference's, the default-model
//! recipe's (`init` in `recipes/default-model/core.json`), and the recipe's without its
//! position-matching cross-attention. Each sample is a 6-word "caption" of 24 possible words and a
//! "det" holding the same words, each mapped to another id, sorted by id, so a target token is
//! found by content rather than at its own position; training gives the whole caption and asks
//! for the whole det. Prints det's cross-entropy on unseen samples given their own caption and
//! given another sample's (the sentinels and `[EOS]` are predictable without the caption).
//!
//! `cargo run --release -p tessera-train --example sequence_correspondence -- [STEPS] [DIM] [DEPTH]`
//! (defaults 300, 64, 2; heads of 32 channels).

use std::collections::BTreeMap;

use candle_core::Device;
use tessera_train::init::CoreInit;
use tessera_train::masking::{DirichletAlphas, DomainAlphas, MaskingConfig, SequenceSpecials};
use tessera_train::objective::{domain_plans, paired_loss};
use tessera_train::optim::OptimConfig;
use tessera_train::{
    CoreTrainConfig, CoreTrainer, DomainTokens, InMemoryDataset, TokenSample, TrainRng,
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
            BTreeMap::from([
                (SOURCE.to_string(), DomainTokens::Sequence(caption)),
                (TARGET.to_string(), DomainTokens::Sequence(det)),
            ])
        })
        .collect()
}

/// The one mixture component: the whole caption in, the whole det out.
fn caption_to_det() -> DirichletAlphas {
    let mut component = DirichletAlphas::symmetric(0.0, 0.0);
    component.domains.insert(
        SOURCE.into(),
        DomainAlphas {
            input: Some(1.0),
            target: None,
            keep_all: true,
        },
    );
    component.domains.insert(
        TARGET.into(),
        DomainAlphas {
            input: None,
            target: Some(1.0),
            keep_all: false,
        },
    );
    component
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
    let unseen = samples(&mut rng, 32);
    let domains = [SOURCE, TARGET];
    let recipe = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../recipes/default-model/core.json");
    let recipe_init = CoreTrainConfig::read(&recipe)?.init;
    let starts = [
        ("reference start", CoreInit::default()),
        ("recipe's start", recipe_init.clone()),
        (
            "recipe's, no position match",
            CoreInit {
                positional_cross_attention: None,
                ..recipe_init
            },
        ),
    ];
    println!(
        "D {dim}, {depth} + {depth} blocks, {steps} steps; det cross-entropy on unseen samples"
    );
    println!(
        "{:<28} {:>12} {:>18}",
        "start", "own caption", "another's caption"
    );
    for (name, init) in starts {
        let config = CoreTrainConfig {
            model: serde_json::json!({
                "act_layer": "SiLU", "dim": dim, "encoder_depth": depth, "decoder_depth": depth,
                "num_heads": (dim / 32).max(1), "mlp_ratio": 4.0, "gated_mlp": true,
                "qkv_bias": false, "proj_bias": false, "mlp_bias": false, "norm_bias": false,
                "share_modality_embeddings": false, "domains_in": domains,
                "domains_out": domains, "image_size": 224, "patch_size": 16,
            }),
            vocab: BTreeMap::from([(SOURCE.into(), VOCAB), (TARGET.into(), VOCAB)]),
            masking: MaskingConfig {
                input_tokens: [16, 16],
                target_tokens: [16, 16],
                alphas: vec![caption_to_det()],
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
        println!("{name:<28} {own:>12.3} {other:>18.3}");
    }
    Ok(())
}
