//! Forward logits (and intermediate activations) of every fixture case against the reference.

use tessera_model::{FourM, LoadOptions};

use crate::support::{ModelFixture, fixtures_root, max_abs_diff, model_dirs};

/// The fixture README's tolerance for logits and debug activations.
const TOLERANCE: f32 = 1e-4;

#[test]
fn every_forward_case_of_every_model_matches_the_reference() {
    let Some(root) = fixtures_root() else { return };
    let mut checked = 0;
    for dir in model_dirs(&root) {
        let fixture = ModelFixture::open(&dir);
        let model = FourM::load(&dir, &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", fixture.name()));
        let cases = fixture.forward_cases();
        assert!(!cases.is_empty(), "{}: no forward cases", fixture.name());
        for case in cases {
            let name = format!("{}/{}", fixture.name(), case["name"].as_str().unwrap());
            let target = case["target"].as_str().unwrap();
            let out = model
                .forward_masked_target(&fixture.states(&case), target)
                .unwrap_or_else(|e| panic!("{name}: {e}"));

            let expected_positions = fixture
                .tensor(&case["expected"]["positions"])
                .to_vec2::<i64>()
                .unwrap();
            let positions: Vec<Vec<i64>> = out
                .positions
                .iter()
                .map(|row| row.iter().map(|&p| p as i64).collect())
                .collect();
            assert_eq!(positions, expected_positions, "{name}: positions");

            let diff = max_abs_diff(
                &out.logits,
                fixture.tensor(&case["expected"]["logits"]),
                &name,
            );
            assert!(diff <= TOLERANCE, "{name}: logits differ by {diff}");

            let expected_tokens: Vec<usize> = case["num_encoder_tokens_per_row"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(
                out.context.tokens_per_row, expected_tokens,
                "{name}: encoder tokens per row"
            );

            if let Some(debug) = case["debug"].as_object() {
                let actual = [
                    ("enc_in", &out.context.encoder_input),
                    ("enc_out", &out.context.encoder_output),
                    ("dec_in", &out.decoder.queries),
                    ("dec_out", &out.decoder.hidden),
                ];
                for (key, tensor) in actual {
                    if let Some(expected_key) = debug.get(key).filter(|v| v.is_string()) {
                        let diff = max_abs_diff(
                            tensor,
                            fixture.tensor(expected_key),
                            &format!("{name} {key}"),
                        );
                        assert!(diff <= TOLERANCE, "{name}: {key} differs by {diff}");
                    }
                }
            }
            eprintln!("{name}: ok (max logit diff {diff:.2e})");
            checked += 1;
        }
    }
    assert!(checked > 0);
}
