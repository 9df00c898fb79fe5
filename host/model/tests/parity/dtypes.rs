//! Reduced-precision loading: bf16 and f16 weights (converted at load) against f32.

use candle_core::DType;
use tessera_model::{FourM, LoadOptions};

use crate::support::{ModelFixture, fixtures_root, max_abs_diff, model_dirs};

/// Stated tolerance of reduced precision: the RMS of the logit error relative to the RMS of the
/// f32 logits: ≤ 2 % for bf16 (8 mantissa bits; measured 0.6–1.0 %) and ≤ 0.3 % for f16
/// (11 bits; measured ≈ 0.1 %). Softmax runs in f32 in both cases.
const BF16_RELATIVE_TOLERANCE: f32 = 0.02;
const F16_RELATIVE_TOLERANCE: f32 = 0.003;

fn rms(t: &candle_core::Tensor) -> f32 {
    t.to_dtype(DType::F32)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .sqrt()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn bf16_and_f16_track_f32_within_the_stated_tolerance() {
    let Some(root) = fixtures_root() else { return };
    for dir in model_dirs(&root) {
        let fixture = ModelFixture::open(&dir);
        let reference = FourM::load(&dir, &LoadOptions::default()).unwrap();
        for (dtype, tolerance) in [
            (DType::BF16, BF16_RELATIVE_TOLERANCE),
            (DType::F16, F16_RELATIVE_TOLERANCE),
        ] {
            let model = FourM::load(
                &dir,
                &LoadOptions {
                    dtype,
                    ..LoadOptions::default()
                },
            )
            .unwrap();
            assert_eq!(model.dtype(), dtype);
            for case in fixture.forward_cases() {
                let target = case["target"].as_str().unwrap();
                let states = fixture.states(&case);
                let expected = reference.forward_masked_target(&states, target).unwrap();
                let out = model.forward_masked_target(&states, target).unwrap();
                assert_eq!(out.logits.dtype(), dtype);
                let scale = rms(&expected.logits);
                let diff =
                    rms(&(out.logits.to_dtype(DType::F32).unwrap() - &expected.logits).unwrap());
                let max_diff = max_abs_diff(&out.logits, &expected.logits, "reduced precision");
                let name = format!(
                    "{}/{} {dtype:?}",
                    fixture.name(),
                    case["name"].as_str().unwrap()
                );
                eprintln!(
                    "{name}: rms error {:.2}% of rms logit, max abs diff {max_diff:.3}",
                    100.0 * diff / scale
                );
                assert!(
                    diff <= tolerance * scale,
                    "{name}: rms error {diff} (rms logit {scale})"
                );
            }
        }
    }
}
