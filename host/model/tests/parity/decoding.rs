//! The sampler-facing API: encode once / decode many, causal decoding with a KV cache, and
//! several rows (e.g. CFG's conditional and unconditional rows) batched in one forward.

use candle_core::{Device, Tensor};
use tessera_model::{
    DomainState, EncodedContext, EncoderInput, FourM, LoadOptions, Mask, QueryContent, QuerySet,
};

use crate::support::{ModelFixture, fixtures_root, max_abs_diff, model_dirs};

const SAME: f32 = 1e-5;

fn encoder_inputs(model: &FourM, states: &[DomainState]) -> Vec<EncoderInput> {
    states
        .iter()
        .filter(|s| model.encoder_embedding(&s.domain).is_some())
        .map(|s| EncoderInput {
            domain: s.domain.clone(),
            values: s.values.clone(),
            input_mask: s.input_mask.clone(),
        })
        .collect()
}

/// A sequence domain the model can decode.
fn sequence_target(model: &FourM) -> String {
    model
        .config()
        .domains_out
        .iter()
        .find(|d| {
            model
                .decoder_embedding(d)
                .is_some_and(|e| e.info.is_sequence())
        })
        .cloned()
        .expect("a sequence target")
}

/// Causal decoding token by token with the cache equals decoding the whole prefix with a causal
/// mask in one pass (what the reference recomputes at every step).
#[test]
fn kv_cached_causal_decoding_equals_full_prefix_recompute() {
    let Some(root) = fixtures_root() else { return };
    for dir in model_dirs(&root) {
        let fixture = ModelFixture::open(&dir);
        let model = FourM::load(&dir, &LoadOptions::default()).unwrap();
        let case = &fixture.forward_cases()[0];
        let context = model
            .encode(&encoder_inputs(&model, &fixture.states(case)))
            .unwrap();
        let rows = context.batch_size();
        let domain = sequence_target(&model);
        let vocab = model.vocab_size(&domain).unwrap() as u32;
        let len = 7;
        let tokens: Vec<Vec<u32>> = (0..rows)
            .map(|r| {
                (0..len)
                    .map(|i| (5 + 37 * i as u32 + 11 * r as u32) % vocab)
                    .collect()
            })
            .collect();
        let positions: Vec<Vec<usize>> = vec![(0..len).collect(); rows];

        let mut full_cache = model.new_cache(&domain, rows).unwrap();
        let full = model
            .decode_causal(
                &context,
                &mut full_cache,
                &QuerySet {
                    domain: domain.clone(),
                    positions: positions.clone(),
                    content: QueryContent::Tokens(tokens.clone()),
                },
            )
            .unwrap();

        let mut cache = model.new_cache(&domain, rows).unwrap();
        for step in 0..len {
            let query = QuerySet {
                domain: domain.clone(),
                positions: vec![vec![step]; rows],
                content: QueryContent::Tokens(tokens.iter().map(|row| vec![row[step]]).collect()),
            };
            let out = model.decode_causal(&context, &mut cache, &query).unwrap();
            let expected = full.logits.narrow(1, step, 1).unwrap();
            let diff = max_abs_diff(&out.logits, &expected, "cached step");
            assert!(
                diff <= SAME,
                "{}: step {step} differs by {diff}",
                fixture.name()
            );

            // The recompute-everything way: a fresh cache fed the whole prefix.
            let mut fresh = model.new_cache(&domain, rows).unwrap();
            let prefix = QuerySet {
                domain: domain.clone(),
                positions: vec![(0..=step).collect(); rows],
                content: QueryContent::Tokens(
                    tokens.iter().map(|row| row[..=step].to_vec()).collect(),
                ),
            };
            let recomputed = model.decode_causal(&context, &mut fresh, &prefix).unwrap();
            let last = recomputed.logits.narrow(1, step, 1).unwrap();
            assert!(max_abs_diff(&out.logits, &last, "recompute") <= SAME);
        }
        assert_eq!(cache.len(), len);

        // Causality: changing a later token leaves earlier logits unchanged.
        let mut changed = tokens.clone();
        for row in &mut changed {
            row[len - 1] = (row[len - 1] + 1) % vocab;
        }
        let mut other_cache = model.new_cache(&domain, rows).unwrap();
        let other = model
            .decode_causal(
                &context,
                &mut other_cache,
                &QuerySet {
                    domain: domain.clone(),
                    positions,
                    content: QueryContent::Tokens(changed),
                },
            )
            .unwrap();
        let earlier = |t: &Tensor| t.narrow(1, 0, len - 1).unwrap();
        assert_eq!(
            max_abs_diff(&earlier(&other.logits), &earlier(&full.logits), "causal"),
            0.0
        );
    }
}

/// Blank every input of a row (the unconditional CFG row): input_mask all true.
fn blanked(states: &[DomainState]) -> Vec<DomainState> {
    states
        .iter()
        .map(|s| DomainState {
            input_mask: Mask::all_ignored(s.input_mask.rows(), s.input_mask.cols()),
            ..s.clone()
        })
        .collect()
}

fn stack_rows(a: &[DomainState], b: &[DomainState]) -> Vec<DomainState> {
    use tessera_model::DomainValues::*;
    let cat = |x: &Tensor, y: &Tensor| Tensor::cat(&[x, y], 0).unwrap();
    let cat_mask = |x: &Mask, y: &Mask| {
        let mut values = Vec::new();
        for m in [x, y] {
            for r in 0..m.rows() {
                values.extend((0..m.cols()).map(|c| m.is_ignored(r, c)));
            }
        }
        Mask::new(x.rows() + y.rows(), x.cols(), values).unwrap()
    };
    a.iter()
        .zip(b)
        .map(|(x, y)| DomainState {
            domain: x.domain.clone(),
            values: match (&x.values, &y.values) {
                (Tokens(p), Tokens(q)) => Tokens(cat(p, q)),
                (Pixels(p), Pixels(q)) => Pixels(cat(p, q)),
                (Embeddings(p), Embeddings(q)) => Embeddings(cat(p, q)),
                _ => unreachable!(),
            },
            input_mask: cat_mask(&x.input_mask, &y.input_mask),
            target_mask: cat_mask(&x.target_mask, &y.target_mask),
        })
        .collect()
}

/// Conditional and unconditional (zero encoder tokens) rows in one batch give the same logits as
/// two separate forwards; so does concatenating separately encoded contexts.
#[test]
fn batched_cfg_rows_equal_separate_forwards() {
    let Some(root) = fixtures_root() else { return };
    for dir in model_dirs(&root) {
        let fixture = ModelFixture::open(&dir);
        let model = FourM::load(&dir, &LoadOptions::default()).unwrap();
        for case in fixture
            .forward_cases()
            .iter()
            .filter(|c| c["batch_size"] == 1)
        {
            let target = case["target"].as_str().unwrap();
            let cond = fixture.states(case);
            let uncond = blanked(&cond);
            let separate_cond = model.forward_masked_target(&cond, target).unwrap();
            let separate_uncond = model.forward_masked_target(&uncond, target).unwrap();
            let batched = model
                .forward_masked_target(&stack_rows(&cond, &uncond), target)
                .unwrap();
            let name = format!("{}/{}", fixture.name(), case["name"].as_str().unwrap());
            let row = |t: &Tensor, r: usize| t.narrow(0, r, 1).unwrap();
            let d0 = max_abs_diff(&row(&batched.logits, 0), &separate_cond.logits, &name);
            let d1 = max_abs_diff(&row(&batched.logits, 1), &separate_uncond.logits, &name);
            assert!(
                d0 <= SAME && d1 <= SAME,
                "{name}: batched rows differ by {d0} / {d1}"
            );

            let joined =
                EncodedContext::concat_rows(&[&separate_cond.context, &separate_uncond.context])
                    .unwrap();
            let queries = QuerySet {
                domain: target.into(),
                positions: vec![separate_cond.positions[0].clone(); 2],
                content: QueryContent::MaskToken,
            };
            // Image targets are queried by grid slot, sequence targets by rank.
            let queries = if model.decoder_embedding(target).unwrap().info.is_sequence() {
                QuerySet {
                    positions: vec![(0..separate_cond.positions[0].len()).collect(); 2],
                    ..queries
                }
            } else {
                queries
            };
            let decoded = model.decode(&joined, &queries).unwrap();
            assert!(max_abs_diff(&row(&decoded.logits, 0), &separate_cond.logits, &name) <= SAME);
            assert!(max_abs_diff(&row(&decoded.logits, 1), &separate_uncond.logits, &name) <= SAME);
        }
    }
}

/// Decoding a subset of positions in any order (ROAR) permutes nothing but the rows: with
/// bidirectional attention among queries each query's logits depend on the set, not the order.
#[test]
fn query_order_only_permutes_logits() {
    let Some(root) = fixtures_root() else { return };
    let dir = &model_dirs(&root)[0];
    let fixture = ModelFixture::open(dir);
    let model = FourM::load(dir, &LoadOptions::default()).unwrap();
    let case = &fixture.forward_cases()[0];
    let target = case["target"].as_str().unwrap();
    let context = model
        .encode(&encoder_inputs(&model, &fixture.states(case)))
        .unwrap();
    let forward: Vec<usize> = (0..20).map(|i| i * 3).collect();
    let reversed: Vec<usize> = forward.iter().rev().copied().collect();
    let a = model
        .decode(
            &context,
            &QuerySet {
                domain: target.into(),
                positions: vec![forward],
                content: QueryContent::MaskToken,
            },
        )
        .unwrap();
    let b = model
        .decode(
            &context,
            &QuerySet {
                domain: target.into(),
                positions: vec![reversed],
                content: QueryContent::MaskToken,
            },
        )
        .unwrap();
    let idx = Tensor::from_vec((0..20u32).rev().collect::<Vec<_>>(), 20, &Device::Cpu).unwrap();
    let b_back = b.logits.index_select(&idx, 1).unwrap();
    assert!(max_abs_diff(&a.logits, &b_back, "order") <= SAME);
    // Wrong row counts and positions are errors, not panics.
    assert!(
        model
            .decode(
                &context,
                &QuerySet {
                    domain: target.into(),
                    positions: vec![vec![0], vec![1]],
                    content: QueryContent::MaskToken
                }
            )
            .is_err()
    );
    assert!(
        model
            .decode(
                &context,
                &QuerySet {
                    domain: target.into(),
                    positions: vec![vec![100_000]],
                    content: QueryContent::MaskToken
                }
            )
            .is_err()
    );
    assert!(
        model
            .decode(
                &context,
                &QuerySet {
                    domain: "rgb@224".into(),
                    positions: vec![vec![0]],
                    content: QueryContent::MaskToken
                }
            )
            .is_err()
    );
}

/// Argmax over the last axis of a `(B, 1, V)` tensor.
fn argmax_rows(logits: &Tensor) -> Vec<u32> {
    logits
        .squeeze(1)
        .unwrap()
        .argmax(1)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap()
}

/// The first step of every generation fixture, replayed through the sampler-facing API against
/// the reference's recorded decoder outputs: autoregressive steps token by token with the KV cache
/// (recorded stream, per-token logits, argmax tokens; ranks past `max_length` exercise the clamp),
/// ROAR steps at the recorded query order. Guided steps compare the conditional logits.
#[test]
fn first_generation_steps_match_the_recorded_decoder_outputs() {
    let Some(root) = fixtures_root() else { return };
    let mut checked = 0;
    for dir in model_dirs(&root) {
        let fixture = ModelFixture::open(&dir);
        let model = FourM::load(&dir, &LoadOptions::default()).unwrap();
        for case in fixture.cases["generate"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let name = format!("{}/{}", fixture.name(), case["name"].as_str().unwrap());
            let step = &case["steps"][0];
            let domain = step["target_domain"].as_str().unwrap().to_owned();
            let guided = step["guided"].as_bool().unwrap_or(false);
            let context = model
                .encode(&encoder_inputs(&model, &fixture.states(&case)))
                .unwrap();
            let rows = context.batch_size();
            match step["scheme"].as_str().unwrap() {
                "autoregressive" => {
                    let stream = fixture
                        .tensor(&step["ar_raw_output"])
                        .to_vec2::<i64>()
                        .unwrap();
                    let recorded = ["ar_last_logits", "ar_last_logits_cond"]
                        .iter()
                        .find_map(|k| step[*k].as_str())
                        .map(|k| fixture.tensors[k].clone());
                    let steps = stream[0].len() - 1;
                    let mut cache = model.new_cache(&domain, rows).unwrap();
                    for k in 0..steps {
                        let query = QuerySet {
                            domain: domain.clone(),
                            positions: vec![vec![k]; rows],
                            content: QueryContent::Tokens(
                                stream.iter().map(|row| vec![row[k] as u32]).collect(),
                            ),
                        };
                        let out = model.decode_causal(&context, &mut cache, &query).unwrap();
                        if let Some(recorded) = &recorded {
                            let expected = recorded.narrow(1, k, 1).unwrap();
                            let diff = max_abs_diff(&out.logits, &expected, &name);
                            assert!(diff <= 1e-4, "{name}: token {k} logits differ by {diff}");
                        }
                        if !guided {
                            let next: Vec<u32> =
                                stream.iter().map(|row| row[k + 1] as u32).collect();
                            assert_eq!(argmax_rows(&out.logits), next, "{name}: token {k}");
                        }
                    }
                }
                "roar" => {
                    let Some(logits_key) = step["roar_logits_cond"].as_str() else {
                        continue;
                    };
                    let order = fixture
                        .tensor(&step["roar_query_positions"])
                        .to_vec2::<i64>()
                        .unwrap();
                    let positions = order
                        .iter()
                        .map(|row| row.iter().map(|&p| p as usize).collect())
                        .collect();
                    let out = model
                        .decode(
                            &context,
                            &QuerySet {
                                domain: domain.clone(),
                                positions,
                                content: QueryContent::MaskToken,
                            },
                        )
                        .unwrap();
                    let diff = max_abs_diff(&out.logits, &fixture.tensors[logits_key], &name);
                    assert!(diff <= 1e-4, "{name}: ROAR logits differ by {diff}");
                }
                _ => continue,
            }
            eprintln!("{name}: first step ok");
            checked += 1;
        }
    }
    assert!(checked > 0, "no generation step replayed");
}

/// Rows generating different target domains share one decoder pass (`decode_rows`,
/// `decode_causal_rows`): each set's logits equal decoding it alone.
#[test]
fn several_target_domains_share_one_decoder_pass() {
    let Some(root) = fixtures_root() else { return };
    for dir in model_dirs(&root) {
        let fixture = ModelFixture::open(&dir);
        let model = FourM::load(&dir, &LoadOptions::default()).unwrap();
        let case = &fixture.forward_cases()[0];
        let single = model
            .encode(&encoder_inputs(&model, &fixture.states(case)))
            .unwrap();
        let rows = single.batch_size();
        let context = EncodedContext::concat_rows(&[&single, &single]).unwrap();
        let decodable = |sequence: bool| -> Vec<String> {
            model
                .config()
                .domains_out
                .iter()
                .filter(|d| {
                    model
                        .decoder_embedding(d)
                        .is_some_and(|e| e.info.is_sequence() == sequence)
                })
                .take(2)
                .cloned()
                .collect()
        };
        let images = decodable(false);
        let sets: Vec<QuerySet> = images
            .iter()
            .enumerate()
            .map(|(k, domain)| QuerySet {
                domain: domain.clone(),
                positions: vec![(k..k + 5).collect(); rows],
                content: QueryContent::MaskToken,
            })
            .collect();
        let shared = model.decode_rows(&context, &sets).unwrap();
        for (set, output) in sets.iter().zip(&shared) {
            let alone = model.decode(&single, set).unwrap();
            let diff = max_abs_diff(&output.logits, &alone.logits, "decode_rows");
            assert!(
                diff <= SAME,
                "{}: {} differs by {diff}",
                dir.display(),
                set.domain
            );
        }

        let sequences = decodable(true);
        let names: Vec<&str> = sequences.iter().map(String::as_str).collect();
        let mut cache = model.new_cache_rows(&names, 2 * rows).unwrap();
        let mut alone_caches: Vec<_> = names
            .iter()
            .map(|d| model.new_cache(d, rows).unwrap())
            .collect();
        for i in 0..3 {
            let sets: Vec<QuerySet> = names
                .iter()
                .map(|d| QuerySet {
                    domain: d.to_string(),
                    positions: vec![vec![i]; rows],
                    content: QueryContent::Tokens(vec![vec![5 + i as u32]; rows]),
                })
                .collect();
            let shared = model
                .decode_causal_rows(&context, &mut cache, &sets)
                .unwrap();
            for ((set, output), alone_cache) in sets.iter().zip(&shared).zip(&mut alone_caches) {
                let alone = model.decode_causal(&single, alone_cache, set).unwrap();
                let diff = max_abs_diff(&output.logits, &alone.logits, "decode_causal_rows");
                assert!(
                    diff <= SAME,
                    "{}: {} token {i}: {diff}",
                    dir.display(),
                    set.domain
                );
            }
        }
        // A cache made for other domains is refused.
        let mut wrong = model
            .new_cache_rows(&[names[1], names[0]], 2 * rows)
            .unwrap();
        let sets: Vec<QuerySet> = names
            .iter()
            .map(|d| QuerySet {
                domain: d.to_string(),
                positions: vec![vec![0]; rows],
                content: QueryContent::Tokens(vec![vec![5]; rows]),
            })
            .collect();
        assert!(
            model
                .decode_causal_rows(&context, &mut wrong, &sets)
                .is_err()
        );
    }
}
