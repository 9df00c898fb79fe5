//! Training tests, a module per feature.

mod vocab {
    //! The project's own vocabulary: 4M layout, lossless on unseen captions, equal to the HF
    //! tokenizer it was trained with, usable by the det serialiser, reproducible.

    use std::sync::OnceLock;

    use tessera_text::{DetOptions, DetectionBox, TextTokenizer, TokenKind};
    use tessera_train::{VocabOptions, special_tokens, train_vocab, world_corpus};

    fn options() -> VocabOptions {
        VocabOptions {
            scenes: 300,
            ..VocabOptions::default()
        }
    }

    fn trained() -> &'static str {
        static JSON: OnceLock<String> = OnceLock::new();
        JSON.get_or_init(|| {
            let corpus = world_corpus(&options()).unwrap();
            train_vocab(&corpus, &options()).unwrap()
        })
    }

    fn held_out_captions() -> Vec<String> {
        world_corpus(&VocabOptions {
            scenes: 100,
            first_seed: 1_000_000,
            ..VocabOptions::default()
        })
        .unwrap()
    }

    #[test]
    fn added_tokens_have_the_4m_layout() {
        let tokenizer = TextTokenizer::from_json_bytes(trained().as_bytes()).unwrap();
        let id = |token: &str| tokenizer.token_to_id(token).unwrap();
        assert_eq!(
            [id("[PAD]"), id("[UNK]"), id("[SOS]"), id("[EOS]")],
            [0, 1, 2, 3]
        );
        assert_eq!(id("[S_0]"), 4);
        assert_eq!(id("[S_199]"), 203);
        assert_eq!(id("v0=0"), 204);
        assert_eq!(id("v1=0"), 1204);
        assert_eq!(id("v3=999"), 4203);
        assert_eq!(tokenizer.layout().kind(4204), TokenKind::Class(0));
        let classes: Vec<&str> = (4204..4208)
            .map(|i| tokenizer.id_to_token(i).unwrap())
            .collect();
        assert_eq!(classes, ["sphere", "cube", "cylinder", "cone"]);
        assert_eq!(special_tokens().len(), 4208);
        assert!(tokenizer.vocab_size() > 4208, "word pieces were learned");
        assert!(tokenizer.vocab_size() <= options().vocab_size);
    }

    #[test]
    fn unseen_captions_encode_without_unknowns_and_decode_back() {
        let tokenizer = TextTokenizer::from_json_bytes(trained().as_bytes()).unwrap();
        for caption in held_out_captions() {
            let ids = tokenizer.encode(&caption);
            assert!(!ids.contains(&1), "[UNK] in {caption:?}: {ids:?}");
            let words = |text: &str| -> Vec<String> {
                text.to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .map(str::to_owned)
                    .collect()
            };
            assert_eq!(
                words(&tokenizer.decode(&ids)),
                words(&caption),
                "{caption:?}"
            );
        }
    }

    #[test]
    fn words_outside_the_world_still_encode_without_unknowns() {
        let tokenizer = TextTokenizer::from_json_bytes(trained().as_bytes()).unwrap();
        for text in ["a quiz about 42 kayaks!", "zebra-jukebox (v2)", "x_y@z.org"] {
            let ids = tokenizer.encode(text);
            assert!(!ids.contains(&1), "[UNK] in {text:?}: {ids:?}");
            assert_eq!(
                tokenizer.decode(&ids).replace(' ', ""),
                text.replace(' ', "")
            );
        }
    }

    #[test]
    fn the_plugins_tokenizer_agrees_with_the_trainers_tokenizer() {
        let ours = TextTokenizer::from_json_bytes(trained().as_bytes()).unwrap();
        let reference: tokenizers::Tokenizer = trained().parse().unwrap();
        let mut texts = held_out_captions();
        texts.push("v0=12 v1=40 v2=300 v3=999 cube [S_1] a red sphere [EOS]".into());
        for text in texts {
            let expected = reference.encode(text.as_str(), false).unwrap();
            assert_eq!(ours.encode(&text), expected.get_ids(), "{text:?}");
        }
    }

    #[test]
    fn world_boxes_serialise_with_the_class_tokens() {
        let tokenizer = TextTokenizer::from_json_bytes(trained().as_bytes()).unwrap();
        let scene = tessera_world::generate_scene(1_000_001).unwrap();
        let boxes: Vec<DetectionBox> = scene
            .boxes
            .iter()
            .map(|b| DetectionBox {
                label: b.label.clone(),
                xmin: b.normalized_box[0],
                ymin: b.normalized_box[1],
                xmax: b.normalized_box[2].min(1.0),
                ymax: b.normalized_box[3].min(1.0),
                score: None,
            })
            .collect();
        assert!(!boxes.is_empty());
        let ids = tessera_text::det::det_to_ids(&tokenizer, &boxes, DetOptions::default()).unwrap();
        let decoded = tessera_text::det::ids_to_det(&tokenizer, &ids);
        assert_eq!(decoded.boxes.len(), boxes.len());
        assert!(decoded.skipped.is_empty());
    }

    #[test]
    fn training_is_reproducible() {
        let corpus = world_corpus(&options()).unwrap();
        assert_eq!(train_vocab(&corpus, &options()).unwrap(), trained());
    }

    #[test]
    fn bad_options_are_refused() {
        let empty = world_corpus(&VocabOptions {
            scenes: 0,
            ..VocabOptions::default()
        });
        assert!(empty.unwrap_err().to_string().contains("empty"));
        let small = train_vocab(
            &["a cube".to_owned()],
            &VocabOptions {
                vocab_size: 100,
                ..VocabOptions::default()
            },
        );
        assert!(small.unwrap_err().to_string().contains("4208 added tokens"));
    }
}

/// A tiny core and a synthetic token set with learnable structure, shared by the core tests.
mod support {
    use std::collections::BTreeMap;

    use std::path::Path;
    use tessera_train::masking::MaskingConfig;
    use tessera_train::optim::OptimConfig;

    use tessera_train::{
        CoreTrainConfig, DomainTokens, InMemoryDataset, SPENT_TIME_FILE, SpentTime, TrainRng,
        latest_checkpoint, read_spent_time,
    };

    pub const VOCAB: usize = 256;

    /// The largest absolute difference between two tensors of the same shape.
    pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }
    pub const GRID_VOCAB: usize = 32;

    pub fn config(steps: u64) -> CoreTrainConfig {
        let domains = ["caption", "det", "tok_dinov2_global"];
        CoreTrainConfig {
            model: serde_json::json!({
                "act_layer": "SiLU", "dim": 32, "encoder_depth": 1, "decoder_depth": 1,
                "num_heads": 2, "mlp_ratio": 4.0, "gated_mlp": true, "qkv_bias": false,
                "proj_bias": false, "mlp_bias": false, "norm_bias": false,
                "share_modality_embeddings": false, "domains_in": domains,
                "domains_out": domains, "image_size": 224, "patch_size": 16,
            }),
            vocab: BTreeMap::from([
                ("caption".into(), VOCAB),
                ("det".into(), VOCAB),
                ("tok_dinov2_global".into(), GRID_VOCAB),
            ]),
            masking: MaskingConfig {
                input_tokens: [4, 16],
                target_tokens: [4, 16],
                ..MaskingConfig::default()
            },
            specials: Default::default(),
            optim: OptimConfig {
                peak_lr: 3e-3,
                warmup_steps: 10,
                ..OptimConfig::default()
            },
            init: Default::default(),
            loss_weights: BTreeMap::new(),
            batch_size: 4,
            steps,
            checkpoint_every: 0,
            seed: 7,
        }
    }

    /// Overwrites what the checkpoint `dir` says its run had spent with an hour.
    pub fn pretend_the_run_spent_an_hour(dir: &Path) {
        let hour = SpentTime {
            seconds: 3600.0,
            cpu_seconds: Some(7200.0),
        };
        std::fs::write(
            dir.join(SPENT_TIME_FILE),
            serde_json::to_string(&hour).unwrap(),
        )
        .unwrap();
    }

    /// The newest checkpoint under `out`, written by an invocation resumed from a checkpoint
    /// treated by [`pretend_the_run_spent_an_hour`], counts that hour and a little more.
    pub fn the_last_checkpoint_counts_the_hour(out: &Path) {
        let last = latest_checkpoint(out).unwrap();
        let spent = read_spent_time(&last).unwrap().unwrap();
        assert!(
            spent.seconds > 3600.0 && spent.seconds < 3700.0,
            "{spent:?}"
        );
        assert!(
            spent.cpu_seconds.is_none_or(|cpu| cpu > 7200.0),
            "{spent:?}"
        );
    }

    /// `count` samples: a 4-word caption (ids above the sentinels), `det` = the caption reversed
    /// and shifted, and a 4×4 grid determined by the first word, so every domain is predictable
    /// from the others.
    pub fn dataset(count: usize) -> InMemoryDataset {
        let mut rng = TrainRng::seeded(99);
        let samples = (0..count)
            .map(|_| {
                let caption: Vec<u32> = (0..4).map(|_| 210 + rng.below(40) as u32).collect();
                let det: Vec<u32> = caption.iter().rev().map(|id| id + 5).collect();
                let grid: Vec<u32> = (0..16)
                    .map(|i| (caption[0] + i) % GRID_VOCAB as u32)
                    .collect();
                BTreeMap::from([
                    ("caption".to_string(), DomainTokens::Sequence(caption)),
                    ("det".to_string(), DomainTokens::Sequence(det)),
                    ("tok_dinov2_global".to_string(), DomainTokens::Grid(grid)),
                ])
            })
            .collect();
        InMemoryDataset { samples }
    }
}

mod core_model {
    //! The trainable core: same forward as inference, saved in the 4M layout, loadable by
    //! `FourM::load`.

    use candle_core::{DType, Device};
    use tessera_model::{FourM, LoadOptions};
    use tessera_train::CoreTrainer;
    use tessera_train::masking::mask_sample;
    use tessera_train::objective::{batch_loss, domain_plans};

    use super::support::{config, dataset, max_abs_diff};

    #[test]
    fn training_forward_equals_inference_forward_and_checkpoint_round_trips() {
        let data = dataset(4);
        let trainer = CoreTrainer::new(config(10), &data, &Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        trainer.save(dir.path()).unwrap();
        let loaded = FourM::load(dir.path(), &LoadOptions::default()).unwrap();
        assert_eq!(loaded.config(), trainer.model().config());
        assert_eq!(
            loaded.parameter_count(),
            trainer.parameters().element_count()
        );

        let plans = domain_plans(trainer.model().config()).unwrap();
        let mut rng = tessera_train::TrainRng::seeded(3);
        let specials = trainer.config().specials;
        let masked: Vec<_> = data
            .samples
            .iter()
            .map(|s| {
                let tokens: Vec<_> = plans.iter().map(|p| &s[&p.name]).collect();
                mask_sample(
                    &plans,
                    &tokens,
                    &trainer.config().masking,
                    &specials,
                    &mut rng,
                )
            })
            .collect();
        let train = batch_loss(trainer.model(), &plans, &masked, 0).unwrap();
        let infer = batch_loss(&loaded, &plans, &masked, 0).unwrap();
        assert!(
            train.loss.track_op(),
            "the training forward tracks gradients"
        );
        assert!(!infer.loss.track_op(), "the loaded model is plain tensors");
        let value =
            |t: &candle_core::Tensor| t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
        let (a, b) = (value(&train.loss), value(&infer.loss));
        assert!((a - b).abs() < 1e-5, "training {a} vs inference {b}");
        assert_eq!(train.per_domain.len(), infer.per_domain.len());
        for (domain, (loss, n)) in &train.per_domain {
            let (other, m) = infer.per_domain[domain];
            assert_eq!(*n, m);
            assert!((loss - other).abs() < 1e-5, "{domain}: {loss} vs {other}");
        }

        // Every saved tensor equals the trained model's, bit for bit.
        let reloaded = FourM::load_trainable(dir.path(), DType::F32, &Device::Cpu)
            .unwrap()
            .1;
        for (name, var) in &trainer.parameters().vars {
            let diff = max_abs_diff(var.as_tensor(), reloaded.vars[name].as_tensor());
            assert_eq!(diff, 0.0, "{name}");
        }
        assert_eq!(
            trainer.parameters().buffers.keys().collect::<Vec<_>>(),
            reloaded.buffers.keys().collect::<Vec<_>>()
        );
    }
}

mod packed_decoding {
    //! The training decoder packs each row's real queries; the result for them equals the padded
    //! joint pass of `FourM::decode_joint`.

    use candle_core::{Device, Tensor};
    use tessera_model::{DomainValues, EncoderInput, Mask, QueryContent, QuerySet};
    use tessera_train::CoreTrainer;

    use super::support::{config, dataset, max_abs_diff};

    #[test]
    fn packed_decoding_equals_the_padded_joint_pass_on_real_queries() {
        let data = dataset(4);
        let trainer = CoreTrainer::new(config(10), &data, &Device::Cpu).unwrap();
        let model = trainer.model();
        let rows = 3;
        let ids: Vec<u32> = (0..rows * 5).map(|i| 210 + i as u32).collect();
        let context = model
            .encode(&[EncoderInput {
                domain: "caption".into(),
                values: DomainValues::Tokens(
                    Tensor::from_vec(ids, (rows, 5), &Device::Cpu).unwrap(),
                ),
                input_mask: Mask::new(rows, 5, vec![false; rows * 5]).unwrap(),
            }])
            .unwrap();
        // A grid set (rows use 4, 1 and 0 of its 4 slots) and a teacher-forced sequence set
        // (1, 3 and 2 of its 3 slots).
        let grid_valid = [4usize, 1, 0];
        let seq_valid = [1usize, 3, 2];
        let sets = [
            QuerySet {
                domain: "tok_dinov2_global".into(),
                positions: vec![vec![0, 5, 9, 15], vec![3, 0, 0, 0], vec![0; 4]],
                content: QueryContent::MaskToken,
            },
            QuerySet {
                domain: "det".into(),
                positions: vec![(0..3).collect(); rows],
                content: QueryContent::Tokens(vec![vec![5, 220, 221]; rows]),
            },
        ];
        let lengths = [4usize, 3];
        let valid = [grid_valid.to_vec(), seq_valid.to_vec()];
        let grid = [true, false];
        // The mask of both layouts: a real query sees its own domain's real queries (all of them
        // for a grid, those up to itself for a sequence); padding sees itself.
        let mask = |packed: bool| {
            let width: usize = if packed {
                (0..rows).map(|r| valid[0][r] + valid[1][r]).max().unwrap()
            } else {
                lengths.iter().sum()
            };
            let mut blocked = vec![1u8; rows * width * width];
            for r in 0..rows {
                let mut offset = 0;
                for s in 0..2 {
                    let n = valid[s][r];
                    for q in 0..n {
                        let upto = if grid[s] { n } else { q + 1 };
                        for k in 0..upto {
                            blocked[(r * width + offset + q) * width + offset + k] = 0;
                        }
                    }
                    let span = if packed { n } else { lengths[s] };
                    for q in n..span {
                        blocked[(r * width + offset + q) * width + offset + q] = 0;
                    }
                    offset += span;
                }
                for q in offset..width {
                    blocked[(r * width + q) * width + q] = 0;
                }
            }
            Tensor::from_vec(blocked, (rows, 1, width, width), &Device::Cpu).unwrap()
        };
        let padded = model.decode_joint(&context, &sets, &mask(false)).unwrap();
        let packed = model
            .decode_packed(&context, &sets, &valid, &mask(true))
            .unwrap();
        for s in 0..2 {
            let mut expected = Vec::new();
            for (r, &count) in valid[s].iter().enumerate() {
                for q in 0..count {
                    expected.push(padded[s].get(r).unwrap().get(q).unwrap());
                }
            }
            let expected = Tensor::stack(&expected, 0).unwrap();
            assert_eq!(packed[s].dims(), expected.dims(), "set {s}");
            let diff = max_abs_diff(&packed[s], &expected);
            assert!(diff < 1e-5, "set {s}: {diff}");
        }
    }
}

mod objective {
    //! The 4M masking objective: budgets respected, sentinel spans, and the loss's gradient equal
    //! to finite differences.

    use candle_core::{DType, Device};
    use tessera_train::init::CoordinateTokens;
    use tessera_train::masking::{
        DirichletAlphas, DomainAlphas, DomainPlan, DomainShape, MaskedDomain, mask_sample,
    };
    use tessera_train::objective::{batch_loss, domain_plans};
    use tessera_train::{CoreTrainer, DomainTokens, InMemoryDataset, TrainError, TrainRng};

    use super::support::{config, dataset};

    #[test]
    fn masks_respect_budgets_and_spans_use_sentinels() {
        let cfg = config(1);
        let plans = domain_plans(&cfg.model_config().unwrap()).unwrap();
        let data = dataset(50);
        let mut rng = TrainRng::seeded(1);
        for sample in &data.samples {
            let tokens: Vec<_> = plans.iter().map(|p| &sample[&p.name]).collect();
            let masked = mask_sample(&plans, &tokens, &cfg.masking, &cfg.specials, &mut rng);
            let inputs: usize = masked
                .iter()
                .map(|m| m.encoder_present.iter().filter(|&&p| p).count())
                .sum();
            assert!(inputs <= 16, "{inputs} input tokens");
            for (plan, m) in plans.iter().zip(&masked) {
                match plan.shape {
                    DomainShape::Grid { tokens } => {
                        assert_eq!(m.encoder_ids.len(), tokens);
                        // Targets are never inputs.
                        assert!(m.target_positions.iter().all(|&p| !m.encoder_present[p]));
                    }
                    DomainShape::Sequence { .. } => {
                        assert!(m.target_ids.len() <= 16);
                        if let Some(&first) = m.target_ids.first() {
                            // Targets start with a sentinel [S_i] (ids 4..204).
                            assert!((4..204).contains(&first), "{:?}", m.target_ids);
                        }
                    }
                }
            }
        }
    }

    /// Substitute each sentinel of the input by its span from the target (the reference's
    /// `merge_span_masking`).
    fn merge(input: &[u32], target: &[u32]) -> Vec<u32> {
        let is_sentinel = |id: u32| (4..204).contains(&id);
        let mut out = Vec::new();
        for &id in input {
            if !is_sentinel(id) {
                out.push(id);
                continue;
            }
            let start = target
                .iter()
                .position(|&t| t == id)
                .expect("sentinel in target")
                + 1;
            out.extend(target[start..].iter().take_while(|&&t| !is_sentinel(t)));
        }
        out
    }

    #[test]
    fn span_masking_loses_nothing_and_ends_targets_with_a_sentinel() {
        let mut cfg = config(1);
        // Budgets large enough, and split evenly enough (one component, alpha 1000), that no
        // target is cut: every masked span must come back.
        cfg.masking.input_tokens = [0, 24];
        cfg.masking.target_tokens = [64, 64];
        cfg.masking.alphas = vec![DirichletAlphas::symmetric(1000.0, 1000.0)];
        let plans = domain_plans(&cfg.model_config().unwrap()).unwrap();
        let data = dataset(60);
        let mut rng = TrainRng::seeded(2);
        let (mut partial, mut full) = (0, 0);
        for sample in &data.samples {
            let tokens: Vec<_> = plans.iter().map(|p| &sample[&p.name]).collect();
            let masked = mask_sample(&plans, &tokens, &cfg.masking, &cfg.specials, &mut rng);
            for (plan, m) in plans.iter().zip(&masked) {
                let DomainTokens::Sequence(original) = &sample[&plan.name] else {
                    continue;
                };
                let mut expected = original.clone();
                expected.push(3); // [EOS]
                let last = *m.target_ids.last().unwrap();
                assert!((4..204).contains(&last), "target ends with a sentinel");
                if m.encoder_ids.is_empty() {
                    // Fully masked: [S_1] everything [EOS] [S_2].
                    full += 1;
                    let mut whole = vec![5];
                    whole.extend(&expected);
                    whole.push(6);
                    assert_eq!(m.target_ids, whole);
                } else {
                    partial += 1;
                    assert_eq!(merge(&m.encoder_ids, &m.target_ids), expected);
                }
            }
        }
        assert!(partial > 10 && full > 10, "partial {partial}, full {full}");
    }

    /// A component that gives inputs only to the caption, whole.
    fn caption_to_rest(weight: f64) -> DirichletAlphas {
        let mut component = DirichletAlphas::symmetric(0.0, 1.0);
        component.weight = weight;
        component.domains.insert(
            "caption".into(),
            DomainAlphas {
                input: Some(1.0),
                target: Some(0.0),
                keep_all: true,
            },
        );
        component
    }

    #[test]
    fn a_biased_component_gives_inputs_only_to_its_domains() {
        let mut cfg = config(1);
        cfg.masking.input_tokens = [16, 16];
        cfg.masking.alphas = vec![caption_to_rest(1.0)];
        cfg.validate().unwrap();
        let plans = domain_plans(&cfg.model_config().unwrap()).unwrap();
        let data = dataset(40);
        let mut rng = TrainRng::seeded(3);
        let mut targets = 0;
        for sample in &data.samples {
            let tokens: Vec<_> = plans.iter().map(|p| &sample[&p.name]).collect();
            let masked = mask_sample(&plans, &tokens, &cfg.masking, &cfg.specials, &mut rng);
            for (plan, m) in plans.iter().zip(&masked) {
                let present = m.encoder_present.iter().filter(|&&p| p).count();
                if plan.name == "caption" {
                    // keep_all: the whole caption and its [EOS], nothing to predict.
                    let DomainTokens::Sequence(caption) = &sample["caption"] else {
                        unreachable!()
                    };
                    let mut whole = caption.clone();
                    whole.push(cfg.specials.eos);
                    assert_eq!(m.encoder_ids, whole);
                    assert!(m.target_ids.is_empty(), "{:?}", m.target_ids);
                } else {
                    assert_eq!(present, 0, "{} got inputs", plan.name);
                    targets += m.target_ids.len();
                }
            }
        }
        assert!(targets > 0);
    }

    #[test]
    fn components_are_drawn_in_proportion_to_their_weights() {
        let mut cfg = config(1);
        let mut det_to_rest = DirichletAlphas::symmetric(0.0, 1.0);
        det_to_rest.domains.insert(
            "det".into(),
            DomainAlphas {
                input: Some(1.0),
                target: Some(0.0),
                keep_all: false,
            },
        );
        cfg.masking.alphas = vec![caption_to_rest(3.0), det_to_rest];
        cfg.validate().unwrap();
        let plans = domain_plans(&cfg.model_config().unwrap()).unwrap();
        let caption = plans.iter().position(|p| p.name == "caption").unwrap();
        let data = dataset(1);
        let tokens: Vec<_> = plans.iter().map(|p| &data.samples[0][&p.name]).collect();
        let mut rng = TrainRng::seeded(4);
        let draws = 2000;
        let from_caption = (0..draws)
            .filter(|_| {
                let masked = mask_sample(&plans, &tokens, &cfg.masking, &cfg.specials, &mut rng);
                !masked[caption].encoder_ids.is_empty()
            })
            .count();
        let share = from_caption as f64 / draws as f64;
        assert!(
            (0.72..0.78).contains(&share),
            "caption inputs in {share} of samples"
        );
    }

    #[test]
    fn bad_mixture_components_are_refused_naming_the_field() {
        let refusal = |edit: &dyn Fn(&mut DirichletAlphas)| {
            let mut cfg = config(1);
            let mut component = caption_to_rest(1.0);
            edit(&mut component);
            cfg.masking.alphas.push(component);
            let TrainError::InvalidConfig { field, reason } = cfg.validate().unwrap_err() else {
                panic!("not a config error")
            };
            format!("{field}: {reason}")
        };
        assert_eq!(
            refusal(&|c| {
                c.domains.insert("rgb@224".into(), DomainAlphas::default());
            }),
            "masking.alphas[4].domains.rgb@224: is not a domain of the model"
        );
        assert_eq!(
            refusal(&|c| c.domains.get_mut("caption").unwrap().input = Some(0.0)),
            "masking.alphas[4]: gives no domain a positive alpha for inputs"
        );
        assert_eq!(
            refusal(&|c| c.domains.get_mut("caption").unwrap().target = Some(-1.0)),
            "masking.alphas[4].domains.caption.target: must be finite and not negative"
        );
        assert_eq!(
            refusal(&|c| c.weight = 0.0),
            "masking.alphas[4].weight: must be positive and finite"
        );
        assert_eq!(
            refusal(&|c| {
                c.domains.insert(
                    "tok_dinov2_global".into(),
                    DomainAlphas {
                        input: Some(1.0),
                        target: None,
                        keep_all: true,
                    },
                );
            }),
            "masking.alphas[4].domains.tok_dinov2_global: keep_all applies only to sequence domains"
        );
        let unknown = serde_json::from_str::<DirichletAlphas>(
            r#"{"input": 1, "target": 1, "domains": {"caption": {"keep": true}}}"#,
        )
        .unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `keep`"),
            "{unknown}"
        );
    }

    #[test]
    fn coordinate_tokens_are_refused_where_they_cannot_apply() {
        let refusal = |domain: &str| {
            let mut cfg = config(1);
            cfg.init.coordinate_tokens = Some(CoordinateTokens {
                domains: vec![domain.into()],
                logit_scale: 0.05,
            });
            let TrainError::InvalidConfig { field, reason } = cfg.validate().unwrap_err() else {
                panic!("not a config error")
            };
            format!("{field}: {reason}")
        };
        assert_eq!(
            refusal("metadata"),
            "init.coordinate_tokens.domains.metadata: is not a domain of the model"
        );
        assert_eq!(
            refusal("tok_dinov2_global"),
            "init.coordinate_tokens.domains.tok_dinov2_global: is not a sequence domain"
        );
        assert_eq!(
            refusal("det"),
            "init.coordinate_tokens.domains.det: its vocabulary (256) does not hold the value \
             tokens (ids up to 4203)"
        );
        let mut cfg = config(1);
        cfg.init.coordinate_tokens = Some(CoordinateTokens {
            domains: vec![],
            logit_scale: 0.0,
        });
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("init.coordinate_tokens.logit_scale"), "{err}");
    }

    /// A fresh f64 core over `data`, its domain plans, and the samples masked once with `seed`.
    fn masked_batch(
        data: &InMemoryDataset,
        seed: u64,
    ) -> (CoreTrainer<'_>, Vec<DomainPlan>, Vec<Vec<MaskedDomain>>) {
        let trainer =
            CoreTrainer::new_with_dtype(config(1), data, &Device::Cpu, DType::F64).unwrap();
        let plans = domain_plans(trainer.model().config()).unwrap();
        let mut rng = TrainRng::seeded(seed);
        let config = trainer.config();
        let masked = data
            .samples
            .iter()
            .map(|s| {
                let tokens: Vec<_> = plans.iter().map(|p| &s[&p.name]).collect();
                mask_sample(&plans, &tokens, &config.masking, &config.specials, &mut rng)
            })
            .collect();
        (trainer, plans, masked)
    }

    #[test]
    fn loss_weights_weigh_each_domain_and_bad_ones_are_refused() {
        let data = dataset(8);
        let (trainer, mut plans, masked) = masked_batch(&data, 9);
        let plain = batch_loss(trainer.model(), &plans, &masked, 0).unwrap();
        let weights = [("caption", 1.0), ("det", 4.0), ("tok_dinov2_global", 0.5)];
        for plan in &mut plans {
            plan.loss_weight = weights.iter().find(|(d, _)| *d == plan.name).unwrap().1;
        }
        let weighted = batch_loss(trainer.model(), &plans, &masked, 0).unwrap();
        // Domains without targets in the batch count 0 but keep their weight in the denominator.
        let sum = |loss: &tessera_train::objective::BatchLoss, weight: &dyn Fn(&str) -> f64| {
            let total: f64 = loss
                .per_domain
                .iter()
                .map(|(d, (value, _))| weight(d) * *value as f64)
                .sum();
            total / weights.iter().map(|(d, _)| weight(d)).sum::<f64>()
        };
        let by_name = |d: &str| weights.iter().find(|(n, _)| *n == d).unwrap().1;
        let expected = sum(&weighted, &by_name);
        let value = weighted.loss.to_scalar::<f64>().unwrap();
        assert!((value - expected).abs() < 1e-5, "{value} vs {expected}");
        let unweighted = plain.loss.to_scalar::<f64>().unwrap();
        assert!((unweighted - sum(&plain, &|_| 1.0)).abs() < 1e-5);
        assert!(
            (value - unweighted).abs() > 1e-3,
            "the weights change the loss"
        );

        let refusal = |domain: &str, weight: f64| {
            let mut cfg = config(1);
            cfg.loss_weights.insert(domain.into(), weight);
            let TrainError::InvalidConfig { field, reason } = cfg.validate().unwrap_err() else {
                panic!("not a config error")
            };
            format!("{field}: {reason}")
        };
        assert_eq!(
            refusal("metadata", 2.0),
            "loss_weights.metadata: is not a target domain of the model"
        );
        assert_eq!(
            refusal("det", 0.0),
            "loss_weights.det: is 0; a weight must be a finite number above 0"
        );
        assert_eq!(
            refusal("det", f64::NAN),
            "loss_weights.det: is NaN; a weight must be a finite number above 0"
        );
        let mut cfg = config(1);
        cfg.loss_weights.insert("det".into(), 3.0);
        cfg.validate().unwrap();
        let text = serde_json::to_string(&config(1)).unwrap();
        assert!(!text.contains("loss_weights"), "unused, it is not written");
    }

    #[test]
    fn symmetric_components_serialise_as_before() {
        // Checkpoints compare their saved config with the run's; the new fields must not appear
        // where they are not used.
        let text = serde_json::to_string(&DirichletAlphas::symmetric(0.1, 0.1)).unwrap();
        assert_eq!(text, r#"{"input":0.1,"target":0.1}"#);
    }

    #[test]
    fn loss_gradient_matches_finite_differences_in_f64() {
        let data = dataset(3);
        let (trainer, plans, masked) = masked_batch(&data, 5);
        let loss_of = || {
            batch_loss(trainer.model(), &plans, &masked, 0)
                .unwrap()
                .loss
                .to_scalar::<f64>()
                .unwrap()
        };
        let loss = batch_loss(trainer.model(), &plans, &masked, 0)
            .unwrap()
            .loss;
        let grads = loss.backward().unwrap();
        let vars = &trainer.parameters().vars;
        let checked = [
            ("encoder.0.attn.qkv.weight", 5),
            ("encoder.0.mlp.fc1.weight", 17),
            ("decoder.0.cross_attn.kv.weight", 40),
            ("decoder.0.self_attn.qkv.weight", 3),
            ("decoder.0.norm1.weight", 2),
            ("decoder_proj_context.bias", 1),
            ("encoder_embeddings.caption.token_emb.weight", 32 * 215 + 4),
            ("decoder_embeddings.det.to_logits.weight", 32 * 220 + 1),
            ("decoder_embeddings.tok_dinov2_global.pos_emb", 9),
            ("mask_token", 6),
        ];
        let eps = 1e-6;
        let mut compared = 0;
        for (name, index) in checked {
            let var = &vars[name];
            let original = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            // A tensor this batch does not reach (e.g. no grid target drawn) has no gradient.
            let Some(analytic) = grads.get(var.as_tensor()) else {
                continue;
            };
            compared += 1;
            let analytic = analytic.flatten_all().unwrap().to_vec1::<f64>().unwrap()[index];
            let at = |delta: f64| {
                let mut values = original.clone();
                values[index] += delta;
                let t =
                    candle_core::Tensor::from_vec(values, var.as_tensor().shape(), &Device::Cpu)
                        .unwrap();
                var.set(&t).unwrap();
                loss_of()
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            at(0.0);
            let scale = analytic.abs().max(numeric.abs()).max(1e-4);
            assert!(
                (analytic - numeric).abs() / scale < 1e-4,
                "{name}[{index}]: backprop {analytic:e} vs finite differences {numeric:e}"
            );
        }
        assert!(compared >= 8, "only {compared} tensors had gradients");
    }
}

mod core_loop {
    //! The training loop: the loss falls, a stopped run resumes to the same parameters, bad input
    //! is refused before any step.

    use candle_core::Device;
    use tessera_train::{CoreTrainer, InMemoryDataset, TrainError, latest_checkpoint};

    use super::support::{
        config, dataset, pretend_the_run_spent_an_hour, the_last_checkpoint_counts_the_hour,
    };

    #[test]
    fn the_configs_loss_weights_reach_the_step_loss() {
        let data = dataset(8);
        let mut plain = CoreTrainer::new(config(1), &data, &Device::Cpu).unwrap();
        let mut weighted_config = config(1);
        weighted_config.loss_weights.insert("det".into(), 4.0);
        let mut weighted = CoreTrainer::new(weighted_config, &data, &Device::Cpu).unwrap();
        let (plain, weighted) = (plain.step().unwrap(), weighted.step().unwrap());
        // Same start, same masks: the domains' losses agree, their weighted mean does not.
        assert_eq!(plain.per_domain, weighted.per_domain);
        let mean = |weight: f32| {
            let det = plain.per_domain.get("det").map_or(0.0, |(v, _)| *v);
            let rest: f32 = plain
                .per_domain
                .iter()
                .filter(|(d, _)| *d != "det")
                .map(|(_, (v, _))| *v)
                .sum();
            (weight * det + rest) / (weight + 2.0)
        };
        assert!((plain.loss - mean(1.0)).abs() < 1e-4, "{plain:?}");
        assert!((weighted.loss - mean(4.0)).abs() < 1e-4, "{weighted:?}");
    }

    #[test]
    fn loss_falls_below_55_percent_in_300_steps() {
        let data = dataset(8);
        let mut trainer = CoreTrainer::new(config(300), &data, &Device::Cpu).unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut reports = Vec::new();
        trainer
            .run(out.path(), u64::MAX, &mut |r| reports.push(r.clone()))
            .unwrap();
        assert_eq!(reports.len(), 300);
        let mean = |r: &[tessera_train::StepReport]| {
            r.iter().map(|r| r.loss as f64).sum::<f64>() / r.len() as f64
        };
        let (first, last) = (mean(&reports[..10]), mean(&reports[280..]));
        eprintln!("loss {first:.3} -> {last:.3}");
        // Measured 4.79 -> 2.33; part of the loss is irreducible (randomly drawn fully masked
        // targets), so the bound is 0.55x rather than a larger factor.
        assert!(last < 0.55 * first, "loss {first:.3} -> {last:.3}");
        assert!(
            reports
                .iter()
                .all(|r| r.per_domain.len() <= 3 && r.tokens > 0)
        );
        assert!(out.path().join("loss.png").is_file());
        tessera_model::FourM::load(out.path().join("model"), &Default::default()).unwrap();
    }

    /// The loss falling is not enough: a core that learns only each domain's marginal also
    /// lowers it. After training, `det` (the caption reversed and shifted) must be predicted far
    /// better from its own caption than from another sample's, so the decoder reads the encoder.
    /// (The marginals come first: at 300 steps the two are within 2 %; measured 0.49 vs 1.19 at
    /// 800 steps, 0.29 vs 1.37 at 1500.)
    #[test]
    fn a_trained_core_predicts_targets_from_its_inputs() {
        use tessera_train::masking::SequenceSpecials;
        use tessera_train::objective::{domain_plans, paired_loss};

        let data = dataset(8);
        let mut trainer = CoreTrainer::new(config(1000), &data, &Device::Cpu).unwrap();
        let out = tempfile::tempdir().unwrap();
        trainer.run(out.path(), u64::MAX, &mut |_| {}).unwrap();
        let model = trainer.model();
        let plans = domain_plans(model.config()).unwrap();
        let specials = SequenceSpecials::default();
        let det_loss = |input_of: &dyn Fn(usize) -> usize| {
            paired_loss(
                model,
                &plans,
                &data.samples,
                ("caption", "det"),
                input_of,
                &specials,
            )
            .unwrap()
        };
        let own = det_loss(&|i| i);
        let other = det_loss(&|i| (i + 1) % 8);
        eprintln!("det cross-entropy: own caption {own:.3}, another sample's {other:.3}");
        assert!(
            own < 0.5 * other,
            "own caption {own:.3}, another's {other:.3}"
        );

        let refused = |pair| {
            paired_loss(model, &plans, &data.samples, pair, &|i| i, &specials)
                .unwrap_err()
                .to_string()
        };
        let err = refused(("tok_rgb@224", "det"));
        assert!(err.contains("tok_rgb@224 is not an input domain"), "{err}");
        let err = refused(("caption", "metadata"));
        assert!(err.contains("metadata is not a target domain"), "{err}");
    }

    #[test]
    fn stopped_and_resumed_run_ends_with_identical_parameters() {
        let data = dataset(6);
        let mut cfg = config(12);
        cfg.checkpoint_every = 4;
        let straight_out = tempfile::tempdir().unwrap();
        let mut straight = CoreTrainer::new(cfg.clone(), &data, &Device::Cpu).unwrap();
        straight
            .run(straight_out.path(), u64::MAX, &mut |_| {})
            .unwrap();

        let out = tempfile::tempdir().unwrap();
        let mut first = CoreTrainer::new(cfg.clone(), &data, &Device::Cpu).unwrap();
        first.run(out.path(), 6, &mut |_| {}).unwrap();
        drop(first);
        let checkpoint = latest_checkpoint(out.path()).unwrap();
        assert!(
            checkpoint.ends_with("step-00000004"),
            "{}",
            checkpoint.display()
        );
        pretend_the_run_spent_an_hour(&checkpoint);
        let mut resumed = CoreTrainer::resume(cfg, &data, &Device::Cpu, &checkpoint).unwrap();
        assert_eq!(resumed.state().step, 4);
        resumed.run(out.path(), u64::MAX, &mut |_| {}).unwrap();
        assert_eq!(resumed.state(), straight.state());
        the_last_checkpoint_counts_the_hour(out.path());
        for (name, var) in &straight.parameters().vars {
            let a = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let b = resumed.parameters().vars[name]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(a, b, "{name} differs after resuming");
        }
    }

    #[test]
    fn bad_input_is_refused_before_any_step() {
        let device = Device::Cpu;
        let empty = InMemoryDataset::default();
        assert!(matches!(
            CoreTrainer::new(config(1), &empty, &device),
            Err(TrainError::EmptyDataset)
        ));

        let mut missing = dataset(3);
        missing.samples[2].remove("det");
        let err = CoreTrainer::new(config(1), &missing, &device)
            .err()
            .unwrap();
        assert!(
            matches!(&err, TrainError::MissingDomain { index: 2, domain } if domain == "det"),
            "{err}"
        );

        let data = dataset(3);
        let mut unknown = config(1);
        unknown.model["domains_in"] = serde_json::json!(["caption", "tok_unheard_of@224"]);
        unknown.vocab.insert("tok_unheard_of@224".into(), 8);
        let err = CoreTrainer::new(unknown, &data, &device).err().unwrap();
        assert!(
            matches!(&err, TrainError::UnknownDomain { domain } if domain == "tok_unheard_of@224"),
            "{err}"
        );

        let out = tempfile::tempdir().unwrap();
        let trainer = CoreTrainer::new(config(1), &data, &device).unwrap();
        trainer.save(out.path()).unwrap();
        let mut other = config(1);
        other.model["dim"] = serde_json::json!(64);
        let err = CoreTrainer::resume(other, &data, &device, out.path())
            .err()
            .unwrap();
        assert!(matches!(err, TrainError::ConfigMismatch { .. }), "{err}");
        assert!(err.to_string().contains("model"), "{err}");
    }
}

mod recipe {
    //! The default model's core config, as `cargo xtask default-model` reads it.

    use tessera_train::CoreTrainConfig;

    #[test]
    fn the_default_model_core_config_is_valid_and_starts_as_a_position_matcher() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../recipes/default-model/core.json");
        let config = CoreTrainConfig::read(&path).unwrap();
        config.validate().unwrap();
        assert!(config.init.positional_cross_attention.is_some());
        let model = config.model_config().unwrap();
        assert_eq!(model.domains_in, model.domains_out);
    }
}

mod world_source {
    //! The shapes world's sequence domains, tokenised exactly as the text plugins do.

    use tessera_text::TextTokenizer;
    use tessera_train::{DomainTokens, world_sample};

    #[test]
    fn world_sequences_equal_the_4m_strings_tokenised() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let json = std::fs::read(root.join("assets/text/wordpiece_shapes.json")).unwrap();
        let tokenizer = TextTokenizer::from_json_bytes(&json).unwrap();
        for seed in [3, 11] {
            let scene = tessera_world::generate_scene(seed).unwrap();
            let sample = world_sample(&tokenizer, &scene).unwrap();
            let seq = |d: &str| match &sample[d] {
                DomainTokens::Sequence(ids) => ids.clone(),
                DomainTokens::Chunks(chunks) => chunks.concat(),
                DomainTokens::Grid(_) => panic!("grid"),
            };
            assert_eq!(seq("caption"), tokenizer.encode(&scene.caption));
            assert_eq!(
                seq("det"),
                tokenizer.encode(&tessera_world::boxes::boxes_to_4m_string(&scene.boxes))
            );
            assert_eq!(
                seq("color_palette"),
                tokenizer.encode(&tessera_world::palette::palette_to_4m_string(
                    &scene.palette
                ))
            );
            let metadata = serde_json::to_vec(&scene.metadata).unwrap();
            assert_eq!(
                seq("metadata"),
                tessera_text::metadata::encode_metadata_json(&tokenizer, &metadata).unwrap()
            );
            match &sample["metadata"] {
                DomainTokens::Chunks(chunks) => assert!(chunks.iter().all(|c| c.len() == 2)),
                _ => panic!("metadata is chunked"),
            }
        }
    }
}

/// Tiny tokenizer configs and shapes-world images at 32 px, shared by the tokenizer tests.
mod tok_support {
    use tessera_train::optim::OptimConfig;
    use tessera_train::{ImageDataset, TokDomain, TokenizerTrainConfig, VitDims};

    pub fn config(domain: TokDomain, steps: u64) -> TokenizerTrainConfig {
        let vit = VitDims {
            dim: 32,
            depth: 1,
            heads: 2,
        };
        TokenizerTrainConfig {
            domain,
            image_size: 32,
            patch_size: 8,
            class_embed_dim: if domain == TokDomain::Semseg { 8 } else { 0 },
            encoder: vit,
            decoder: vit,
            codebook_size: 64,
            latent_dim: 8,
            post_mlp: false,
            out_conv: false,
            quantizer: Default::default(),
            optim: OptimConfig {
                peak_lr: 2e-3,
                warmup_steps: 20,
                ..OptimConfig::default()
            },
            batch_size: 4,
            steps,
            checkpoint_every: 0,
            seed: 3,
        }
    }

    pub fn images(domain: TokDomain, count: usize) -> ImageDataset {
        ImageDataset::from_scenes(domain, 32, 100, count).unwrap()
    }
}

mod tok_model {
    //! The trainable tokenizer: its training forward is the inference forward, and what it saves
    //! `VqTokenizer::load` reads back to the same tokens and reconstructions.

    use candle_core::{DType, Device, Tensor};
    use tessera_model::VqTokenizer;
    use tessera_train::{TokDomain, TokenizerTrainer};

    use super::support::max_abs_diff;
    use super::tok_support::{config, images};

    #[test]
    fn training_forward_equals_inference_and_the_saved_tokenizer_loads() {
        for domain in [TokDomain::Rgb, TokDomain::Semseg] {
            let mut cfg = config(domain, 10);
            cfg.post_mlp = true;
            cfg.out_conv = true;
            let data = images(domain, 4);
            let mut trainer = TokenizerTrainer::new(cfg, &data, &Device::Cpu).unwrap();
            // A few steps first, so the codebook has been EMA-updated and partly restarted.
            for _ in 0..3 {
                trainer.step().unwrap();
            }
            let input = trainer.batch(&[0, 1, 2]).unwrap();
            let out = trainer.loss(&input, None).unwrap();
            let tokens = trainer.tokenizer().encode(&input).unwrap();
            let expected: Vec<u32> = tokens
                .flatten_all()
                .unwrap()
                .to_dtype(DType::U32)
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(
                out.codes, expected,
                "{domain:?}: training and inference codes"
            );
            let decoded = trainer.tokenizer().decode_tokens(&tokens).unwrap();
            let diff = max_abs_diff(&out.reconstruction_map, &decoded);
            assert!(diff < 1e-4, "{domain:?}: reconstructions differ by {diff}");

            let dir = tempfile::tempdir().unwrap();
            trainer.save_tokenizer(dir.path()).unwrap();
            let loaded = VqTokenizer::load(dir.path(), &Default::default()).unwrap();
            assert_eq!(loaded.config(), trainer.tokenizer().config());
            assert_eq!(
                loaded.encode(&input).unwrap().to_vec3::<i64>().unwrap(),
                tokens.to_vec3::<i64>().unwrap()
            );
            let diff = max_abs_diff(&loaded.decode_tokens(&tokens).unwrap(), &decoded);
            assert!(
                diff < 1e-5,
                "{domain:?}: loaded tokenizer decodes {diff} away"
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences_in_f64() {
        for domain in [TokDomain::Semseg, TokDomain::Depth] {
            let mut cfg = config(domain, 1);
            cfg.post_mlp = true;
            cfg.out_conv = true;
            let data = images(domain, 2);
            let trainer =
                TokenizerTrainer::new_with_dtype(cfg, &data, &Device::Cpu, DType::F64).unwrap();
            let vars = &trainer.parameters().vars;
            // The layer scale starts at 1e-6, which would leave the ConvNeXt weights' gradients
            // below what finite differences resolve; check them at a moderate scale.
            for i in 0..2 {
                let gamma = &vars[&format!("decoder.out_conv.{i}.gamma")];
                gamma
                    .set(&(gamma.ones_like().unwrap() * 0.5).unwrap())
                    .unwrap();
            }
            let input = trainer.batch(&[0, 1]).unwrap();
            let out = trainer.loss(&input, None).unwrap();
            let grads = out.loss.backward().unwrap();
            // The straight-through surrogate: the quantizer's choice held fixed, so its derivative
            // is exactly what backprop through the estimator computes.
            let frozen = out.frozen.clone();
            let loss_of = || {
                trainer
                    .loss(&input, Some(&frozen))
                    .unwrap()
                    .loss
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let mut checked = vec![
                ("encoder.proj.weight", 7),
                ("encoder.blocks.0.attn.qkv.weight", 70),
                ("encoder.blocks.0.norm1.weight", 3),
                ("encoder.post_mlp.fc1.weight", 11),
                ("quant_proj.weight", 5),
                ("post_quant_proj.bias", 2),
                ("decoder.blocks.0.mlp.fc2.weight", 9),
                ("decoder.out_proj.weight", 13),
                ("decoder.out_conv.0.dwconv.weight", 24),
                ("decoder.out_conv.1.pwconv1.weight", 3),
                ("decoder.out_conv.1.gamma", 0),
            ];
            if domain == TokDomain::Semseg {
                checked.push(("cls_emb.weight", 9));
            }
            let eps = 1e-6;
            for (name, index) in checked {
                let var = &vars[name];
                let original = var
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap();
                let analytic = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{name} has no gradient"))
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()[index];
                let at = |delta: f64| {
                    let mut values = original.clone();
                    values[index] += delta;
                    var.set(
                        &Tensor::from_vec(values, var.as_tensor().shape(), &Device::Cpu).unwrap(),
                    )
                    .unwrap();
                    loss_of()
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                at(0.0);
                let scale = analytic.abs().max(numeric.abs()).max(1e-6);
                assert!(
                    (analytic - numeric).abs() / scale < 1e-4,
                    "{domain:?} {name}[{index}]: backprop {analytic:e} vs finite differences {numeric:e}"
                );
            }
            assert!(
                grads
                    .get(vars["quantize._codebook.embed"].as_tensor())
                    .is_none(),
                "the codebook is EMA-updated, never given a gradient"
            );
        }
    }
}

mod tok_loop {
    //! Tokenizer training: reconstruction improves on world images, a stopped run resumes to the
    //! same state, bad input is refused before any step.

    use candle_core::Device;
    use tessera_train::{
        ImageDataset, TokDomain, TokenizerStepReport, TokenizerTrainer, TrainError,
        latest_checkpoint,
    };

    use super::support::{pretend_the_run_spent_an_hour, the_last_checkpoint_counts_the_hour};
    use super::tok_support::{config, images};

    #[test]
    fn rgb_reconstruction_loss_falls_eightfold_in_300_steps() {
        let data = images(TokDomain::Rgb, 8);
        let mut trainer =
            TokenizerTrainer::new(config(TokDomain::Rgb, 300), &data, &Device::Cpu).unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut reports: Vec<TokenizerStepReport> = Vec::new();
        trainer
            .run(out.path(), u64::MAX, &mut |r| reports.push(r.clone()))
            .unwrap();
        assert_eq!(reports.len(), 300);
        let mean = |r: &[TokenizerStepReport]| {
            r.iter().map(|r| r.reconstruction as f64).sum::<f64>() / r.len() as f64
        };
        let (first, last) = (mean(&reports[..10]), mean(&reports[280..]));
        let usage = reports.last().unwrap();
        eprintln!(
            "reconstruction {first:.4} -> {last:.4}; perplexity {:.1}, {} codes in batch, {} live",
            usage.perplexity, usage.codes_in_batch, usage.live_codes
        );
        // Measured 0.400 -> 0.017 (24x); the bound leaves room for other seeds and platforms.
        assert!(last < first / 8.0, "reconstruction {first:.4} -> {last:.4}");
        assert!(
            usage.perplexity > 4.0,
            "codebook collapsed: perplexity {}",
            usage.perplexity
        );
        assert!(reports[0].restarted > 0, "unused codes are restarted");
        assert!(out.path().join("loss.png").is_file());
        tessera_model::VqTokenizer::load(out.path().join("model"), &Default::default()).unwrap();
    }

    #[test]
    fn stopped_and_resumed_run_ends_in_the_same_state() {
        let data = images(TokDomain::Normal, 5);
        let mut cfg = config(TokDomain::Normal, 10);
        cfg.checkpoint_every = 4;
        let straight_out = tempfile::tempdir().unwrap();
        let mut straight = TokenizerTrainer::new(cfg.clone(), &data, &Device::Cpu).unwrap();
        straight
            .run(straight_out.path(), u64::MAX, &mut |_| {})
            .unwrap();

        let out = tempfile::tempdir().unwrap();
        let mut first = TokenizerTrainer::new(cfg.clone(), &data, &Device::Cpu).unwrap();
        first.run(out.path(), 6, &mut |_| {}).unwrap();
        drop(first);
        let checkpoint = latest_checkpoint(out.path()).unwrap();
        assert!(
            checkpoint.ends_with("step-00000004"),
            "{}",
            checkpoint.display()
        );
        pretend_the_run_spent_an_hour(&checkpoint);
        let mut resumed = TokenizerTrainer::resume(cfg, &data, &Device::Cpu, &checkpoint).unwrap();
        assert_eq!(resumed.state().step, 4);
        resumed.run(out.path(), u64::MAX, &mut |_| {}).unwrap();
        assert_eq!(resumed.state(), straight.state());
        the_last_checkpoint_counts_the_hour(out.path());
        assert_eq!(resumed.cluster_size(), straight.cluster_size());
        for (name, var) in &straight.parameters().vars {
            let a = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let b = resumed.parameters().vars[name]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(a, b, "{name} differs after resuming");
        }
    }

    #[test]
    fn bad_input_is_refused_before_any_step() {
        let device = Device::Cpu;
        let err = TokDomain::parse("tok_clip@224").unwrap_err();
        assert!(matches!(err, TrainError::UnknownDomain { .. }), "{err}");
        assert!(err.to_string().contains("tok_rgb@224"), "{err}");

        let empty = ImageDataset {
            domain: TokDomain::Rgb,
            size: 32,
            samples: Vec::new(),
        };
        assert!(matches!(
            TokenizerTrainer::new(config(TokDomain::Rgb, 5), &empty, &device),
            Err(TrainError::EmptyDataset)
        ));
        let depth = images(TokDomain::Depth, 2);
        let err = TokenizerTrainer::new(config(TokDomain::Rgb, 5), &depth, &device)
            .err()
            .unwrap();
        assert!(matches!(err, TrainError::InvalidSample { .. }), "{err}");
        let mut bad = config(TokDomain::Rgb, 5);
        bad.image_size = 30;
        let rgb = images(TokDomain::Rgb, 2);
        let err = TokenizerTrainer::new(bad, &rgb, &device).err().unwrap();
        assert!(err.to_string().contains("image_size"), "{err}");

        // A checkpoint of another config is refused, naming the differing fields.
        let out = tempfile::tempdir().unwrap();
        let mut cfg = config(TokDomain::Rgb, 4);
        cfg.checkpoint_every = 2;
        let mut trainer = TokenizerTrainer::new(cfg.clone(), &rgb, &device).unwrap();
        trainer.run(out.path(), 2, &mut |_| {}).unwrap();
        let checkpoint = latest_checkpoint(out.path()).unwrap();
        let mut other = cfg.clone();
        other.codebook_size = 128;
        let err = TokenizerTrainer::resume(other, &rgb, &device, &checkpoint)
            .err()
            .unwrap();
        assert!(
            matches!(&err, TrainError::ConfigMismatch { difference, .. } if difference.contains("codebook_size")),
            "{err}"
        );
        // A core checkpoint is not a tokenizer checkpoint.
        let core_data = super::support::dataset(2);
        let core_out = tempfile::tempdir().unwrap();
        let mut core_cfg = super::support::config(2);
        core_cfg.checkpoint_every = 1;
        tessera_train::CoreTrainer::new(core_cfg, &core_data, &device)
            .unwrap()
            .run(core_out.path(), 1, &mut |_| {})
            .unwrap();
        let core_checkpoint = latest_checkpoint(core_out.path()).unwrap();
        assert!(TokenizerTrainer::resume(cfg, &rgb, &device, &core_checkpoint).is_err());
    }
}

mod image_tokens {
    use std::collections::BTreeMap;

    use candle_core::Device;
    use tessera_train::{DomainTokens, ImageTokenizers, TokDomain, TokenizerTrainer};

    use crate::tok_support::{config, images};

    /// A tokenizer saved by the trainer encodes a world scene at 224 pixels into the domain's
    /// 14x14 grid with its own codebook, and one whose patch gives another grid is refused.
    #[test]
    fn trained_tokenizers_give_the_domain_grid_and_wrong_patches_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = images(TokDomain::Rgb, 4);
        for (patch, name) in [(16, "patch16"), (8, "patch8")] {
            let mut cfg = config(TokDomain::Rgb, 1);
            cfg.patch_size = patch;
            let trainer = TokenizerTrainer::new(cfg, &data, &Device::Cpu).unwrap();
            trainer.save_tokenizer(&dir.path().join(name)).unwrap();
        }
        let dirs = BTreeMap::from([("tok_rgb@224".to_owned(), dir.path().join("patch16"))]);
        let tokenizers = ImageTokenizers::load(&dirs).unwrap();
        assert_eq!(tokenizers.vocab_sizes(), [("tok_rgb@224".to_owned(), 64)]);
        let scene = tessera_world::generate_scene(7).unwrap();
        let encoded = tokenizers.encode_scene(0, &scene).unwrap();
        let [(domain, DomainTokens::Grid(ids))] = &encoded[..] else {
            panic!("expected one grid, got {encoded:?}");
        };
        assert_eq!(domain, "tok_rgb@224");
        assert_eq!(ids.len(), 196);
        assert!(ids.iter().all(|&id| id < 64));

        let dirs = BTreeMap::from([("tok_rgb@224".to_owned(), dir.path().join("patch8"))]);
        let err = ImageTokenizers::load(&dirs)
            .err()
            .expect("patch 8 is refused")
            .to_string();
        assert!(
            err.contains("patch size is 8") && err.contains("14x14"),
            "{err}"
        );
        let dirs = BTreeMap::from([("caption".to_owned(), dir.path().join("patch16"))]);
        assert!(ImageTokenizers::load(&dirs).is_err());
    }

    /// Encoding scenes together gives every scene the grids it gets alone, in order.
    #[test]
    fn scenes_encoded_together_match_scenes_encoded_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut dirs = BTreeMap::new();
        for domain in [TokDomain::Rgb, TokDomain::Semseg] {
            let data = images(domain, 4);
            let mut cfg = config(domain, 1);
            cfg.patch_size = 16;
            let trainer = TokenizerTrainer::new(cfg, &data, &Device::Cpu).unwrap();
            let out = dir.path().join(domain.name());
            trainer.save_tokenizer(&out).unwrap();
            dirs.insert(domain.name().to_owned(), out);
        }
        let tokenizers = ImageTokenizers::load(&dirs).unwrap();
        let scenes: Vec<_> = (20..23)
            .map(|seed| tessera_world::generate_scene(seed).unwrap())
            .collect();
        let together = tokenizers.encode_scenes(5, &scenes).unwrap();
        assert_eq!(together.len(), 3);
        for (offset, scene) in scenes.iter().enumerate() {
            assert_eq!(
                together[offset],
                tokenizers.encode_scene(5 + offset, scene).unwrap()
            );
        }
        assert!(tokenizers.encode_scenes(0, &[]).unwrap().is_empty());
    }
}
