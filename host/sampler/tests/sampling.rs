//! Parity with the reference on every case of `sampling/cases.json` (token and temperature
//! schedules, the chained schedule builder, filtering, argmax and guidance), plus property tests.
//!
//! Fixtures come from `$TESSERA_FIXTURES` (default: `shared/fixtures` next to the repository);
//! any directory of the same format works. When they are missing the parity tests fail under CI
//! (`CI` set) and print a skip message otherwise.

use std::path::PathBuf;

use serde_json::Value;

mod fixtures {
    use super::*;
    use safetensors::{Dtype, SafeTensors};

    pub struct Fixtures {
        pub cases: Value,
        tensor_bytes: Vec<u8>,
    }

    fn directory() -> PathBuf {
        match std::env::var_os("TESSERA_FIXTURES") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"),
        }
    }

    /// The sampling fixtures, or `None` (with a message) when they are absent outside CI.
    pub fn load(test: &str) -> Option<Fixtures> {
        let dir = directory().join("sampling");
        let cases_path = dir.join("cases.json");
        if !cases_path.is_file() {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "sampling fixtures missing at {} (set TESSERA_FIXTURES)",
                    cases_path.display()
                );
            }
            eprintln!(
                "SKIP {test}: sampling fixtures not found at {} (set TESSERA_FIXTURES)",
                cases_path.display()
            );
            return None;
        }
        let text = std::fs::read_to_string(&cases_path).expect("read cases.json");
        let cases = serde_json::from_str(&text).expect("parse cases.json");
        let tensor_bytes =
            std::fs::read(dir.join("tensors.safetensors")).expect("read tensors.safetensors");
        Some(Fixtures {
            cases,
            tensor_bytes,
        })
    }

    impl Fixtures {
        pub fn section(&self, name: &str) -> &[Value] {
            let cases = self.cases[name]
                .as_array()
                .unwrap_or_else(|| panic!("section `{name}` missing"));
            assert!(!cases.is_empty(), "section `{name}` is empty");
            cases
        }

        /// An F32 tensor as (shape, values).
        pub fn f32_tensor(&self, key: &str) -> (Vec<usize>, Vec<f32>) {
            let tensors = SafeTensors::deserialize(&self.tensor_bytes).expect("parse safetensors");
            let view = tensors
                .tensor(key)
                .unwrap_or_else(|e| panic!("tensor `{key}`: {e}"));
            assert_eq!(view.dtype(), Dtype::F32, "tensor `{key}` dtype");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (view.shape().to_vec(), values)
        }

        /// A 2-D F32 tensor as (vocab = last dimension, values).
        pub fn logits(&self, key: &str) -> (usize, Vec<f32>) {
            let (shape, values) = self.f32_tensor(key);
            assert_eq!(shape.len(), 2, "tensor `{key}` should be rows × vocab");
            (shape[1], values)
        }
    }

    pub fn usize_list(value: &Value) -> Vec<usize> {
        value
            .as_array()
            .expect("list")
            .iter()
            .map(|v| v.as_u64().expect("unsigned") as usize)
            .collect()
    }

    pub fn i64_list(value: &Value) -> Vec<i64> {
        value
            .as_array()
            .expect("list")
            .iter()
            .map(|v| v.as_i64().expect("integer"))
            .collect()
    }

    pub fn f64_list(value: &Value) -> Vec<f64> {
        value
            .as_array()
            .expect("list")
            .iter()
            .map(|v| v.as_f64().expect("number"))
            .collect()
    }

    pub fn string_list(value: &Value) -> Vec<String> {
        value
            .as_array()
            .expect("list")
            .iter()
            .map(|v| v.as_str().expect("string").to_owned())
            .collect()
    }
}

mod token_schedules {
    use super::fixtures::*;
    use tessera_sampler::{cosine_schedule, linear_schedule};

    #[test]
    fn every_token_schedule_case_is_exact() {
        let Some(fixtures) = load("token_schedules") else {
            return;
        };
        for case in fixtures.section("token_schedules") {
            let steps = case["num_steps"].as_u64().unwrap() as usize;
            let total = case["total_tokens"].as_u64().unwrap() as usize;
            let expected = i64_list(&case["expected"]);
            let actual = match case["function"].as_str().unwrap() {
                "linear_schedule" => linear_schedule(steps, total),
                "cosine_schedule" => cosine_schedule(steps, total),
                other => panic!("unknown token schedule function `{other}`"),
            };
            assert_eq!(actual, expected, "{}({steps}, {total})", case["function"]);
        }
    }
}

mod temperature_schedules {
    use super::fixtures::*;
    use tessera_sampler::{linear_temperature_schedule, onex_temperature_schedule};

    #[test]
    fn every_temperature_schedule_case_matches_to_1e_12() {
        let Some(fixtures) = load("temperature_schedules") else {
            return;
        };
        for case in fixtures.section("temperature_schedules") {
            let token_schedule = i64_list(&case["token_schedule"]);
            let expected = f64_list(&case["expected"]);
            let actual = match case["function"].as_str().unwrap() {
                "linear_temp_schedule" => {
                    linear_temperature_schedule(case["temp"].as_f64().unwrap(), &token_schedule)
                }
                "onex_temp_schedule" => onex_temperature_schedule(
                    case["max_t"].as_f64().unwrap(),
                    case["min_t"].as_f64().unwrap(),
                    &token_schedule,
                    case["power"].as_f64().unwrap(),
                ),
                other => panic!("unknown temperature schedule function `{other}`"),
            };
            assert_eq!(actual.len(), expected.len(), "{case}");
            for (step, (a, e)) in actual.iter().zip(&expected).enumerate() {
                assert!(
                    (a - e).abs() <= 1e-12,
                    "{} step {step}: {a} vs {e}",
                    case["function"]
                );
            }
        }
    }
}

mod schedule_builder {
    use super::fixtures::*;
    use serde_json::Value;
    use tessera_sampler::{
        GenerationPlan, Guidance, Scheme, TargetSpec, TemperatureSchedule, TokenScheduleKind,
        build_chained_schedule,
    };

    fn guidance(value: &Value) -> Guidance {
        match value {
            Value::Array(_) => Guidance::Weights(f64_list(value)),
            other => Guidance::Scale(other.as_f64().expect("cfg scale")),
        }
    }

    /// The reference's parallel argument lists as the plan struct the workflow engine fills.
    fn plan_from_args(args: &Value) -> GenerationPlan {
        let domains = string_list(&args["target_domains"]);
        let targets = domains
            .iter()
            .enumerate()
            .map(|(i, domain)| {
                assert_eq!(
                    args["cfg_schedules"][i], "constant",
                    "only constant guidance schedules exist"
                );
                let scheme: Scheme = args["autoregression_schemes"][i]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                TargetSpec {
                    domain: domain.clone(),
                    scheme,
                    num_tokens: args["tokens_per_target"][i].as_u64().unwrap() as usize,
                    decoding_steps: args["decoding_steps"][i].as_u64().unwrap_or(0) as usize,
                    token_schedule: match args["token_decoding_schedules"][i].as_str() {
                        Some(name) => name.parse().unwrap(),
                        None => TokenScheduleKind::Linear,
                    },
                    temperature: args["temps"][i].as_f64().unwrap(),
                    temperature_schedule: args["temp_schedules"][i]
                        .as_str()
                        .unwrap()
                        .parse::<TemperatureSchedule>()
                        .unwrap(),
                    guidance: guidance(&args["cfg_scales"][i]),
                }
            })
            .collect();
        GenerationPlan {
            condition_domains: string_list(&args["cond_domains"]),
            targets,
            grow_guidance_conditioning: args["cfg_grow_conditioning"].as_bool().unwrap(),
        }
    }

    #[test]
    fn every_schedule_builder_case_is_reproduced() {
        let Some(fixtures) = load("schedule_builder") else {
            return;
        };
        for (case_index, case) in fixtures.section("schedule_builder").iter().enumerate() {
            let steps = build_chained_schedule(&plan_from_args(&case["args"])).unwrap();
            let expected = case["expected"].as_array().unwrap();
            assert_eq!(
                steps.len(),
                expected.len(),
                "case {case_index}: number of steps"
            );
            for (index, (step, want)) in steps.iter().zip(expected).enumerate() {
                let at = format!("case {case_index} step {index}");
                assert_eq!(
                    step.target_domain,
                    want["target_domain"].as_str().unwrap(),
                    "{at}"
                );
                assert_eq!(step.scheme.name(), want["scheme"].as_str().unwrap(), "{at}");
                assert_eq!(
                    step.num_tokens,
                    want["num_tokens"].as_u64().map(|n| n as usize),
                    "{at}"
                );
                let temperature = want["temperature"].as_f64().unwrap();
                assert!(
                    (step.temperature - temperature).abs() <= 1e-12,
                    "{at}: {} vs {temperature}",
                    step.temperature
                );
                match (&step.guidance, guidance(&want["cfg_scale"])) {
                    (Guidance::Scale(a), Guidance::Scale(e)) => {
                        assert!((a - e).abs() <= 1e-12, "{at}")
                    }
                    (Guidance::Weights(a), Guidance::Weights(e)) => {
                        assert_eq!(a.len(), e.len(), "{at}");
                        assert!(
                            a.iter().zip(&e).all(|(a, e)| (a - e).abs() <= 1e-12),
                            "{at}"
                        );
                    }
                    (actual, expected) => panic!("{at}: guidance {actual:?} vs {expected:?}"),
                }
                assert_eq!(
                    step.guidance_condition_domains,
                    string_list(&want["cfg_cond_domains"]),
                    "{at}"
                );
            }
        }
    }
}

mod filtering {
    use super::fixtures::*;
    use tessera_sampler::{SamplingOptions, TopK, filter_top_k_top_p, softmax_with_temperature};

    fn options(case: &serde_json::Value) -> SamplingOptions {
        let top_k = match case["top_k_kind"].as_str().unwrap() {
            "disabled" => TopK::Disabled,
            "int" => TopK::Count(case["top_k"].as_u64().unwrap() as usize),
            "float" => TopK::Fraction(case["top_k"].as_f64().unwrap()),
            other => panic!("unknown top_k_kind `{other}`"),
        };
        let top_p = case["top_p"].as_f64().unwrap();
        SamplingOptions {
            top_k,
            top_p: (top_p > 0.0).then_some(top_p),
        }
    }

    #[test]
    fn every_filtering_case_matches() {
        let Some(fixtures) = load("filtering") else {
            return;
        };
        for case in fixtures.section("filtering") {
            let name = case["name"].as_str().unwrap();
            let (vocab, mut logits) = fixtures.logits(case["input"].as_str().unwrap());
            filter_top_k_top_p(&mut logits, vocab, &options(case)).unwrap();
            let (_, expected) = fixtures.logits(case["expected_filtered_logits"].as_str().unwrap());
            assert_eq!(logits.len(), expected.len(), "{name}");
            for (index, (a, e)) in logits.iter().zip(&expected).enumerate() {
                if *e == f32::NEG_INFINITY {
                    assert_eq!(
                        *a,
                        f32::NEG_INFINITY,
                        "{name}: entry {index} (row {}) should be removed",
                        index / vocab
                    );
                } else {
                    assert_eq!(
                        a.to_bits(),
                        e.to_bits(),
                        "{name}: entry {index} (row {}) should be kept as is",
                        index / vocab
                    );
                }
            }
            let softmaxes = case["softmax"].as_array().unwrap();
            assert!(!softmaxes.is_empty(), "{name}: no softmax cases");
            for softmax in softmaxes {
                let temperature = softmax["temperature"].as_f64().unwrap();
                let probabilities = softmax_with_temperature(&logits, vocab, temperature).unwrap();
                let (_, expected) = fixtures.logits(softmax["expected_probs"].as_str().unwrap());
                for (index, (a, e)) in probabilities.iter().zip(&expected).enumerate() {
                    assert!(
                        (a - e).abs() <= 1e-6,
                        "{name} T={temperature}: entry {index}: {a} vs {e}"
                    );
                }
            }
        }
    }
}

mod argmax {
    use super::fixtures::*;
    use tessera_sampler::{RandomSource, SamplingOptions, SeededRandom, TopK, sample_rows};

    /// A source that fails the test if the argmax path draws anything.
    struct NoDraws;
    impl RandomSource for NoDraws {
        fn begin_step(&mut self, _: usize) {}
        fn next_uniform(&mut self) -> f64 {
            panic!("the argmax path must not draw random numbers")
        }
    }

    #[test]
    fn every_argmax_case_matches_without_randomness() {
        let Some(fixtures) = load("argmax") else {
            return;
        };
        for case in fixtures.section("argmax") {
            let temperature = case["temperature"].as_f64().unwrap();
            let (vocab, logits) = fixtures.logits(case["input"].as_str().unwrap());
            // Filtering options do not apply on the argmax path.
            let options = SamplingOptions {
                top_k: TopK::Count(1),
                top_p: Some(1e-9),
            };
            let sampled = sample_rows(&logits, vocab, temperature, &options, &mut NoDraws).unwrap();
            let tokens: Vec<usize> = sampled.iter().map(|s| s.token as usize).collect();
            assert_eq!(
                tokens,
                usize_list(&case["expected_tokens"]),
                "T={temperature}"
            );
            let confidences: Vec<f64> = sampled.iter().map(|s| s.confidence as f64).collect();
            assert_eq!(
                confidences,
                f64_list(&case["expected_confidence"]),
                "T={temperature}"
            );
        }
    }

    #[test]
    fn temperature_001_samples() {
        let Some(fixtures) = load("argmax") else {
            return;
        };
        let case = &fixtures.section("argmax")[0];
        let (vocab, logits) = fixtures.logits(case["input"].as_str().unwrap());
        let sampled = sample_rows(
            &logits,
            vocab,
            0.01,
            &SamplingOptions::default(),
            &mut SeededRandom::new(3),
        )
        .unwrap();
        // Sampling reports probabilities; on the fixture's tie row no token has probability 1.
        assert!(sampled.iter().any(|s| s.confidence < 1.0));
    }
}

mod cfg_combine {
    use super::fixtures::*;
    use tessera_sampler::{guide, guide_multi};

    #[test]
    fn every_guidance_case_is_exact() {
        let Some(fixtures) = load("cfg_combine") else {
            return;
        };
        for case in fixtures.section("cfg_combine") {
            assert_eq!(case["formula"], "uncond + (cond - uncond) * scale");
            let scale = case["scale"].as_f64().unwrap();
            let (_, conditional) = fixtures.logits(case["cond"].as_str().unwrap());
            let (_, unconditional) = fixtures.logits(case["uncond"].as_str().unwrap());
            let (_, expected) = fixtures.logits(case["expected"].as_str().unwrap());
            let single = guide(&conditional, &unconditional, scale).unwrap();
            let multi = guide_multi(&[&conditional], &unconditional, &[scale]).unwrap();
            for (index, ((s, m), e)) in single.iter().zip(&multi).zip(&expected).enumerate() {
                assert_eq!(
                    s.to_bits(),
                    e.to_bits(),
                    "scale {scale} entry {index}: {s} vs {e}"
                );
                assert_eq!(
                    m.to_bits(),
                    e.to_bits(),
                    "multi, scale {scale} entry {index}: {m} vs {e}"
                );
            }
        }
    }
}

mod properties {
    use proptest::prelude::*;
    use tessera_sampler::{
        SamplingOptions, SeededRandom, TopK, argmax_rows, cosine_schedule, filter_top_k_top_p,
        linear_schedule, sample_rows,
    };

    proptest! {
        #[test]
        fn linear_schedule_sums_to_the_tokens(steps in 1usize..300, tokens in 0usize..2000) {
            let schedule = linear_schedule(steps, tokens);
            prop_assert_eq!(schedule.iter().sum::<i64>(), tokens as i64);
            prop_assert!(schedule.len() <= steps);
            prop_assert!(schedule.windows(2).all(|w| w[0] >= w[1]));
            prop_assert!(schedule.iter().all(|&t| t > 0));
        }

        #[test]
        fn cosine_schedule_sums_to_the_tokens(steps in 1usize..300, tokens in 0usize..2000) {
            let schedule = cosine_schedule(steps, tokens);
            prop_assert_eq!(schedule.len(), steps);
            prop_assert_eq!(schedule.iter().sum::<i64>(), tokens as i64);
        }

        #[test]
        fn filtering_always_keeps_the_maximum(
            // Integer-valued logits from a small range make ties common.
            integers in proptest::collection::vec(-6i32..6, 1..64),
            count in 0usize..70,
            fraction in 0.01f64..=1.0,
            use_fraction in any::<bool>(),
            top_p in proptest::option::of(0.0001f64..=1.0),
        ) {
            let logits: Vec<f32> = integers.iter().map(|&i| i as f32 * 0.5).collect();
            let vocab = logits.len();
            let top_k = if use_fraction && (fraction * vocab as f64) as usize >= 1 {
                TopK::Fraction(fraction)
            } else {
                TopK::Count(count)
            };
            let options = SamplingOptions { top_k, top_p };
            let best = argmax_rows(&logits, vocab).unwrap()[0] as usize;
            let mut filtered = logits.clone();
            filter_top_k_top_p(&mut filtered, vocab, &options).unwrap();
            // A maximal logit always survives (with tied maxima top-p may keep another one of
            // them than the first index, as the reference does).
            prop_assert!(filtered.iter().any(|&f| f == logits[best]));
            if logits.iter().filter(|&&l| l == logits[best]).count() == 1 {
                prop_assert_eq!(filtered[best], logits[best]);
            }
            // Kept entries are untouched, removed ones are -inf.
            for (f, l) in filtered.iter().zip(&logits) {
                prop_assert!(*f == *l || *f == f32::NEG_INFINITY);
            }
            // Sampling only draws kept tokens.
            let sampled = sample_rows(&logits, vocab, 1.0, &options, &mut SeededRandom::new(9)).unwrap();
            prop_assert!(filtered[sampled[0].token as usize].is_finite());
        }
    }
}
