//! Every generation case of every fixture model: final tokens and masks exactly equal to the
//! reference's, the state after each step, the autoregressive raw streams, and the recorded
//! logits (≤ 1e-4) where the fixture has them.

use std::ops::ControlFlow;

use serde_json::Value;
use tessera_generate::{AutoregressiveMode, Generator, GeneratorOptions, Progress};
use tessera_model::{FourM, LoadOptions};
use tessera_sampler::{GenerationState, ModalityState, RecordedRoarOrders, SeededRandom};

use crate::support::{ModelFixture, fixtures_root, max_abs_diff, model_dirs};

const LOGIT_TOLERANCE: f32 = 1e-4;

fn assert_modality(
    fixture: &ModelFixture,
    name: &str,
    actual: &ModalityState,
    expected: &Value,
    compare_tokens: bool,
) {
    let rows = actual.rows();
    let tokens: Vec<Vec<u32>> = rows.iter().map(|r| r.tokens.clone()).collect();
    let input: Vec<Vec<bool>> = rows.iter().map(|r| r.input_mask.clone()).collect();
    let target: Vec<Vec<bool>> = rows.iter().map(|r| r.target_mask.clone()).collect();
    if compare_tokens {
        assert_eq!(tokens, fixture.ids(&expected["tensor"]), "{name}: tokens");
    }
    assert_eq!(
        input,
        fixture.mask(&expected["input_mask"]),
        "{name}: input mask"
    );
    assert_eq!(
        target,
        fixture.mask(&expected["target_mask"]),
        "{name}: target mask"
    );
}

fn run_case(fixture: &ModelFixture, model: &FourM, case: &Value, fast: bool) {
    let case_name = format!(
        "{}/{} ({})",
        fixture.name(),
        case["name"].as_str().unwrap(),
        if fast {
            "KV cache, batched guidance, encoder reuse"
        } else {
            "recompute prefix, branches apart"
        }
    );
    let (mut state, dense) = fixture.initial_state(case);
    let dense_domains: Vec<String> = case["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| matches!(i["type"].as_str(), Some("rgb" | "seq_emb")))
        .map(|i| i["modality"].as_str().unwrap().to_owned())
        .collect();
    let steps = fixture.schedule(case);
    let recorded = case["steps"].as_array().expect("steps").clone();
    let seed = case["seed"].as_u64().unwrap_or(0);
    let mut rng = RecordedRoarOrders::new(SeededRandom::new(seed));
    for step in &recorded {
        if !step["roar_query_positions"].is_null() {
            let order = fixture.ids(&step["roar_query_positions"]);
            rng = rng.with_order(
                step["index"].as_u64().unwrap() as usize,
                order[0].iter().map(|&p| p as usize).collect(),
            );
        }
    }
    // Recomputing the prefix is quadratic; in debug builds only the shorter streams use it.
    let short_streams = case["steps"].as_array().unwrap().iter().all(|step| {
        step["ar_raw_output"].is_null() || fixture.ids(&step["ar_raw_output"])[0].len() <= 64
    });
    let options = GeneratorOptions {
        record_logits: true,
        autoregressive: if fast || !short_streams {
            AutoregressiveMode::KvCache
        } else {
            AutoregressiveMode::RecomputeAll
        },
        batch_guidance: fast,
        reuse_encoder: fast,
        ..GeneratorOptions::default()
    };
    let generator = Generator::with_options(model, options);
    let mut after_steps: Vec<GenerationState> = Vec::new();
    let mut callback = |event: Progress<'_>| {
        if let Progress::Step { state, .. } = event {
            after_steps.push(state.clone());
        }
        ControlFlow::Continue(())
    };
    let report = generator
        .run_steps(&steps, &mut state, &dense, &mut rng, &mut callback)
        .unwrap_or_else(|e| panic!("{case_name}: {e}"));
    assert_eq!(report.cancelled, None);
    assert_eq!(report.steps.len(), steps.len(), "{case_name}: steps run");

    for (k, expected) in recorded.iter().enumerate() {
        let step_name = format!("{case_name} step {k}");
        let step_report = &report.steps[k];
        let domain = expected["target_domain"].as_str().unwrap();
        assert_eq!(step_report.target_domain, domain);
        let guided = expected["guided"].as_bool().unwrap_or(false);
        assert_eq!(
            step_report.branches,
            if guided { 2 } else { 1 },
            "{step_name}: branches"
        );
        if let Some(after) = expected.get("target_after_step").filter(|v| !v.is_null()) {
            assert_modality(
                fixture,
                &step_name,
                after_steps[k].require(domain).unwrap(),
                after,
                true,
            );
        }
        if !expected["ar_raw_output"].is_null() {
            let stream = step_report.stream.as_ref().expect("AR stream");
            assert_eq!(
                stream,
                &fixture.ids(&expected["ar_raw_output"]),
                "{step_name}: AR raw output"
            );
        }
        let logit_keys: &[(&str, usize)] = &[
            ("ar_last_logits", 0),
            ("ar_last_logits_cond", 0),
            ("ar_last_logits_uncond", 1),
            ("roar_logits_cond", 0),
            ("roar_logits_uncond", 1),
        ];
        for &(key, branch) in logit_keys {
            if let Some(key_name) = expected[key].as_str() {
                let diff = max_abs_diff(
                    &step_report.branch_logits[branch],
                    &fixture.tensors[key_name],
                );
                assert!(
                    diff <= LOGIT_TOLERANCE,
                    "{step_name}: {key} differ by {diff}"
                );
                eprintln!("{step_name}: {key} max diff {diff:.2e}");
            }
        }
    }

    let expected_final = case["expected_final"].as_array().unwrap();
    let order: Vec<&str> = state.iter().map(|(d, _)| d).collect();
    let expected_order: Vec<&str> = expected_final
        .iter()
        .map(|e| e["modality"].as_str().unwrap())
        .collect();
    assert_eq!(order, expected_order, "{case_name}: modality order");
    for expected in expected_final {
        let domain = expected["modality"].as_str().unwrap();
        let dense = dense_domains.iter().any(|d| d == domain);
        assert_modality(
            fixture,
            &format!("{case_name} final {domain}"),
            state.require(domain).unwrap(),
            expected,
            !dense,
        );
    }
    eprintln!(
        "{case_name}: final state exact ({} steps, {} encoder passes, {} reused)",
        steps.len(),
        report.encoder_runs,
        report.encoder_reuses
    );
}

/// Every generation case of every fixture model reproduces the reference exactly.
#[test]
fn every_generation_case_matches_the_reference() {
    let Some(root) = fixtures_root() else { return };
    let mut cases = 0;
    for dir in model_dirs(&root) {
        let fixture = ModelFixture::open(&dir);
        let model = FourM::load(&dir, &LoadOptions::default()).unwrap();
        for case in fixture.generate_cases() {
            run_case(&fixture, &model, &case, true);
            cases += 1;
        }
    }
    assert!(cases > 0, "no generation cases found");
    eprintln!("{cases} generation cases match the reference");
}

/// The same with the slow paths: guidance branches run apart, the encoder always rerun, and the
/// autoregressive decoder rerun over the whole prefix every token, the cross-attention keys and
/// values of the context included, as the reference does (for streams of at most 64 tokens).
#[test]
fn every_generation_case_matches_the_reference_without_the_fast_paths() {
    let Some(root) = fixtures_root() else { return };
    let mut cases = 0;
    for dir in model_dirs(&root) {
        let fixture = ModelFixture::open(&dir);
        let model = FourM::load(&dir, &LoadOptions::default()).unwrap();
        for case in fixture.generate_cases() {
            run_case(&fixture, &model, &case, false);
            cases += 1;
        }
    }
    assert!(cases > 0, "no generation cases found");
    eprintln!("{cases} generation cases match the reference");
}
