//! Property test: on small random models and random chained plans, the [`Generator`] (KV cache,
//! conditional and unconditional rows in one batch, encoder reuse) produces the same tokens as the
//! plain implementation here, which encodes every branch on its own at every step and recomputes
//! the whole autoregressive prefix for every token.

use std::ops::ControlFlow;

use candle_core::{Device, Tensor};
use proptest::prelude::*;
use tessera_generate::{
    AutoregressiveMode, DenseInputs, Generator, GeneratorOptions, Progress, domain_catalog,
};
use tessera_model::{
    DomainValues, EncodedContext, EncoderInput, FourM, LoadOptions, Mask, QueryContent, QuerySet,
};
use tessera_sampler::{
    GenerationPlan, GenerationState, GenerationStep, Guidance, ModalityState, RandomSource, Scheme,
    SeededRandom, TargetSpec, TemperatureSchedule, TokenScheduleKind, every_row_contains, guide,
    maskgit_commit, roar_commit, roar_queries, sample_rows, text_ids,
};

use crate::random_model::{RandomModel, write_random_model};

const DOMAINS: &[&str] = &[
    "caption",
    "metadata",
    "tok_dinov2_global",
    "tok_imagebind_global",
];

fn vocab(domain: &str) -> usize {
    match domain {
        "caption" => 512,
        "metadata" => 48,
        _ => 32,
    }
}

pub fn small_model(seed: u64) -> (tempfile::TempDir, FourM) {
    small_model_with(seed, &[])
}

/// A small random model; `output_only` domains are generated but not encoder inputs.
pub fn small_model_with(seed: u64, output_only: &[&str]) -> (tempfile::TempDir, FourM) {
    let dir = tempfile::tempdir().unwrap();
    let spec = RandomModel {
        dim: 24,
        depth: 2,
        heads: 2,
        domains: DOMAINS,
        output_only,
        vocab: &vocab,
        seed,
        embedding_scale: 1.0,
        weight_scale: 1.5,
    };
    write_random_model(&spec, dir.path()).unwrap();
    let model = FourM::load(dir.path(), &LoadOptions::default()).unwrap();
    (dir, model)
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Every modality with an encoder embedding, in state order, fully masked ones included.
fn encode_plain(model: &FourM, state: &GenerationState) -> EncodedContext {
    let inputs: Vec<EncoderInput> = state
        .iter()
        .filter(|(d, _)| model.encoder_embedding(d).is_some())
        .map(|(domain, m)| EncoderInput {
            domain: domain.to_owned(),
            values: DomainValues::Tokens(
                Tensor::from_vec(m.flat_tokens(), (m.batch_size(), m.width()), &Device::Cpu)
                    .unwrap(),
            ),
            input_mask: Mask::new(m.batch_size(), m.width(), m.flat_input_mask()).unwrap(),
        })
        .collect();
    model.encode(&inputs).unwrap()
}

/// The straightforward loop: one branch at a time, everything recomputed.
pub fn generate_plain(
    model: &FourM,
    steps: &[GenerationStep],
    state: &mut GenerationState,
    rng: &mut dyn RandomSource,
) -> Vec<Vec<Vec<u32>>> {
    let mut all_streams = Vec::new();
    let catalog = domain_catalog(model);
    let options = Default::default();
    for (k, step) in steps.iter().enumerate() {
        rng.begin_step(k);
        let domain = step.target_domain.as_str();
        let vocab = model.vocab_size(domain).unwrap();
        let mut branches = vec![state.clone()];
        if step.is_guided() {
            branches.push(
                state
                    .unconditional(&step.guidance_condition_domains, &catalog)
                    .unwrap(),
            );
        }
        let scale = match step.guidance {
            Guidance::Scale(s) => s,
            Guidance::Weights(_) => unreachable!("plain plans use scales"),
        };
        let combine = |logits: Vec<Vec<f32>>| -> Vec<f32> {
            if logits.len() == 2 {
                guide(&logits[0], &logits[1], scale).unwrap()
            } else {
                logits[0].clone()
            }
        };
        let target = state.require(domain).unwrap().clone();
        let batch = target.batch_size();
        match step.scheme {
            Scheme::Roar | Scheme::MaskGit => {
                let n = step.num_tokens.unwrap();
                let queries: Vec<Vec<usize>> = if step.scheme == Scheme::Roar {
                    vec![roar_queries(rng, k, &target.rows()[0].target_mask, n).unwrap(); batch]
                } else {
                    target.rows().iter().map(|r| r.target_positions()).collect()
                };
                if queries[0].is_empty() {
                    continue;
                }
                let logits = branches
                    .iter()
                    .map(|b| {
                        let context = encode_plain(model, b);
                        let q = QuerySet {
                            domain: domain.to_owned(),
                            positions: queries.clone(),
                            content: QueryContent::MaskToken,
                        };
                        flat(&model.decode(&context, &q).unwrap().logits)
                    })
                    .collect();
                let guided = combine(logits);
                let commit = if step.scheme == Scheme::Roar {
                    roar_commit(
                        &guided,
                        vocab,
                        batch,
                        &queries[0],
                        step.temperature,
                        &options,
                        rng,
                    )
                    .unwrap()
                } else {
                    maskgit_commit(&guided, vocab, &queries, n, step.temperature, &options, rng)
                        .unwrap()
                };
                commit.apply(state.get_mut(domain).unwrap()).unwrap();
            }
            Scheme::Autoregressive => {
                let max_tokens = catalog.get(domain).unwrap().num_tokens;
                let ar = target.autoregressive_target(domain, max_tokens).unwrap();
                let mut streams = vec![vec![ar.start_token]; batch];
                let contexts: Vec<EncodedContext> =
                    branches.iter().map(|b| encode_plain(model, b)).collect();
                if !every_row_contains(&streams, ar.end_token) {
                    for i in 0..ar.max_iterations {
                        let logits = contexts
                            .iter()
                            .map(|context| {
                                let mut cache = model.new_cache(domain, batch).unwrap();
                                let q = QuerySet {
                                    domain: domain.to_owned(),
                                    positions: vec![(0..=i).collect(); batch],
                                    content: QueryContent::Tokens(streams.clone()),
                                };
                                let out = model.decode_causal(context, &mut cache, &q).unwrap();
                                flat(&out.logits.narrow(1, i, 1).unwrap())
                            })
                            .collect();
                        let guided = combine(logits);
                        let sampled =
                            sample_rows(&guided, vocab, step.temperature, &options, rng).unwrap();
                        for (s, t) in streams.iter_mut().zip(sampled) {
                            s.push(t.token);
                        }
                        if every_row_contains(&streams, ar.end_token) {
                            break;
                        }
                    }
                }
                let merged = target.merged_after_autoregression(&streams).unwrap();
                state.insert(domain, merged).unwrap();
                all_streams.push(streams);
            }
        }
    }
    all_streams
}

/// A random initial state: metadata and tok_imagebind_global as conditions, caption and
/// tok_dinov2_global as empty targets.
pub fn initial_state(batch: usize, caption_slots: usize, seed: u64) -> GenerationState {
    let mut rng = SeededRandom::new(seed);
    let mut draw = |n: u32| (rng.next_uniform() * n as f64) as u32;
    let mut state = GenerationState::new();
    let metadata: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            let mut row: Vec<u32> = (0..6).map(|_| 7 + draw(40)).collect();
            row[4] = text_ids::EOS;
            row
        })
        .collect();
    state
        .insert(
            "metadata",
            ModalityState::full_input_sequence(metadata).unwrap(),
        )
        .unwrap();
    let image: Vec<Vec<u32>> = (0..batch)
        .map(|_| (0..16).map(|_| draw(32)).collect())
        .collect();
    state
        .insert(
            "tok_imagebind_global",
            ModalityState::full_input_image_like(image).unwrap(),
        )
        .unwrap();
    state
        .insert(
            "caption",
            ModalityState::empty_sequence_target(batch, caption_slots).unwrap(),
        )
        .unwrap();
    state
        .insert(
            "tok_dinov2_global",
            ModalityState::empty_image_target(batch, 16).unwrap(),
        )
        .unwrap();
    state
}

#[derive(Debug, Clone)]
pub struct PlanChoice {
    caption_first: bool,
    caption_slots: usize,
    image_scheme: Scheme,
    image_steps: usize,
    caption_scale: f64,
    image_scale: f64,
    temperature: f64,
    grow: bool,
    conditions: Vec<String>,
    batch: usize,
}

fn plan_choice() -> impl Strategy<Value = PlanChoice> {
    (
        any::<bool>(),
        2usize..10,
        prop_oneof![Just(Scheme::Roar), Just(Scheme::MaskGit)],
        1usize..5,
        prop_oneof![Just(1.0), Just(2.5)],
        prop_oneof![Just(1.0), Just(3.0)],
        prop_oneof![Just(0.0), Just(0.8)],
        any::<bool>(),
        prop_oneof![
            Just(vec!["metadata".to_owned()]),
            Just(vec![
                "metadata".to_owned(),
                "tok_imagebind_global".to_owned()
            ]),
            Just(vec!["tok_imagebind_global".to_owned()]),
        ],
        1usize..3,
    )
        .prop_map(
            |(
                caption_first,
                caption_slots,
                image_scheme,
                image_steps,
                caption_scale,
                image_scale,
                temperature,
                grow,
                conditions,
                batch,
            )| {
                PlanChoice {
                    caption_first,
                    caption_slots,
                    image_scheme,
                    image_steps,
                    caption_scale,
                    image_scale,
                    temperature,
                    grow,
                    conditions,
                    batch,
                }
            },
        )
}

pub fn plan(choice: &PlanChoice) -> GenerationPlan {
    let caption = TargetSpec {
        domain: "caption".into(),
        scheme: Scheme::Autoregressive,
        num_tokens: choice.caption_slots,
        decoding_steps: 1,
        token_schedule: TokenScheduleKind::Linear,
        temperature: choice.temperature,
        temperature_schedule: TemperatureSchedule::Constant,
        guidance: Guidance::Scale(choice.caption_scale),
    };
    let image = TargetSpec {
        domain: "tok_dinov2_global".into(),
        scheme: choice.image_scheme,
        num_tokens: 16,
        decoding_steps: choice.image_steps,
        token_schedule: TokenScheduleKind::Cosine,
        temperature: choice.temperature,
        temperature_schedule: TemperatureSchedule::Constant,
        guidance: Guidance::Scale(choice.image_scale),
    };
    GenerationPlan {
        condition_domains: choice.conditions.clone(),
        targets: if choice.caption_first {
            vec![caption, image]
        } else {
            vec![image, caption]
        },
        grow_guidance_conditioning: choice.grow,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fast_paths_give_the_plain_implementations_tokens(model_seed in 1u64..1000, state_seed in 0u64..1000, choice in plan_choice()) {
        let (_dir, model) = small_model(model_seed);
        let generator = Generator::with_options(&model, GeneratorOptions::default());
        let plan = plan(&choice);
        let steps = generator.prepare(&plan).unwrap();
        let initial = initial_state(choice.batch, choice.caption_slots, state_seed);

        let mut fast = initial.clone();
        let mut tokens_seen = 0;
        let mut count = |event: Progress<'_>| {
            if matches!(event, Progress::Token { .. }) {
                tokens_seen += 1;
            }
            ControlFlow::Continue(())
        };
        let report = generator
            .run_steps(&steps, &mut fast, &DenseInputs::new(), &mut SeededRandom::new(state_seed), &mut count)
            .unwrap();
        prop_assert_eq!(report.steps.len(), steps.len());

        let mut plain = initial.clone();
        let plain_streams = generate_plain(&model, &steps, &mut plain, &mut SeededRandom::new(state_seed));
        let fast_streams: Vec<Vec<Vec<u32>>> = report.steps.iter().filter_map(|s| s.stream.clone()).collect();
        prop_assert_eq!(&fast_streams, &plain_streams);
        prop_assert_eq!(&fast, &plain);
        prop_assert!(fast.require("tok_dinov2_global").unwrap().is_finished());
        let stream = report.steps.iter().find_map(|s| s.stream.as_ref()).unwrap();
        prop_assert_eq!(tokens_seen, stream[0].len() - 1);
    }
}

/// The three autoregressive modes (KV cache, prefix recomputed, the reference's loop that also
/// recomputes the context's cross-attention keys/values) give the same tokens with guidance on
/// a batch of two; the two recompute modes give bit-identical logits, the cache the same logits
/// up to float summation order.
#[test]
fn autoregressive_modes_agree() {
    let mut decoded = 0;
    for (model_seed, temperature) in [(3u64, 0.0), (17, 0.0), (29, 0.8)] {
        let (_dir, model) = small_model(model_seed);
        let choice = PlanChoice {
            caption_first: true,
            caption_slots: 12,
            image_scheme: Scheme::Roar,
            image_steps: 1,
            caption_scale: 2.5,
            image_scale: 1.0,
            temperature,
            grow: false,
            conditions: vec!["metadata".to_owned(), "tok_imagebind_global".to_owned()],
            batch: 2,
        };
        let run = |mode: AutoregressiveMode| {
            let generator = Generator::with_options(
                &model,
                GeneratorOptions {
                    autoregressive: mode,
                    record_logits: true,
                    ..GeneratorOptions::default()
                },
            );
            let steps = generator.prepare(&plan(&choice)).unwrap();
            let mut state = initial_state(choice.batch, choice.caption_slots, model_seed);
            let report = generator
                .run_steps(
                    &steps[..1],
                    &mut state,
                    &DenseInputs::new(),
                    &mut SeededRandom::new(model_seed),
                    &mut |_| ControlFlow::Continue(()),
                )
                .unwrap();
            let step = report.steps.into_iter().next().unwrap();
            assert_eq!(step.branches, 2, "guidance must run both branches");
            (step.stream.unwrap(), step.branch_logits, state)
        };
        let (cached, cached_logits, cached_state) = run(AutoregressiveMode::KvCache);
        let (prefix, prefix_logits, prefix_state) = run(AutoregressiveMode::RecomputePrefix);
        let (all, all_logits, all_state) = run(AutoregressiveMode::RecomputeAll);
        assert_eq!(
            cached, prefix,
            "seed {model_seed}: KV cache vs recompute prefix"
        );
        assert_eq!(
            prefix, all,
            "seed {model_seed}: recompute prefix vs reference loop"
        );
        assert_eq!(cached_state, all_state);
        assert_eq!(prefix_state, all_state);
        assert_eq!(
            prefix_logits, all_logits,
            "seed {model_seed}: recompute modes' logits"
        );
        assert_eq!(cached_logits.len(), all_logits.len());
        for (a, b) in cached_logits.iter().zip(&all_logits) {
            assert_eq!(a.len(), b.len());
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-4,
                "seed {model_seed}: cached logits off by {worst}"
            );
        }
        decoded += cached.iter().map(|row| row.len() - 1).sum::<usize>();
    }
    // Several tokens per stream, so the prefix (and the cache) actually grew.
    assert!(decoded >= 12, "only {decoded} tokens decoded");
}
