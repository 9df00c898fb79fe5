//! Fixture discovery and conversion of fixture cases into generation states and schedules.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use serde_json::Value;
use tessera_generate::DenseInputs;
use tessera_model::DomainValues;
use tessera_sampler::{
    GenerationState, GenerationStep, Guidance, ModalityRow, ModalityState, Scheme,
};

/// The fixture root with an `fm/` directory, or `None` (after printing why) when the tests should
/// skip; fails under CI.
pub fn fixtures_root() -> Option<PathBuf> {
    tessera_fixtures::fixtures_root_with("fm")
}

pub use tessera_fixtures::model_dirs;

/// One model fixture, with this test binary's conversions on top of the shared reader.
pub struct ModelFixture(tessera_fixtures::ModelFixture);

impl std::ops::Deref for ModelFixture {
    type Target = tessera_fixtures::ModelFixture;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl ModelFixture {
    pub fn open(dir: &Path) -> Self {
        Self(tessera_fixtures::ModelFixture::open(dir))
    }

    pub fn generate_cases(&self) -> Vec<Value> {
        self.cases_of("generate")
    }

    /// Integer tensor as rows of u32 (`(B, N)`).
    pub fn ids(&self, key: &Value) -> Vec<Vec<u32>> {
        ids(self.tensor(key))
    }

    /// U8 mask as rows of bools (`true` = ignore).
    pub fn mask(&self, key: &Value) -> Vec<Vec<bool>> {
        self.tensor(key)
            .to_dtype(DType::U8)
            .unwrap()
            .to_vec2::<u8>()
            .unwrap()
            .into_iter()
            .map(|row| row.into_iter().map(|v| v != 0).collect())
            .collect()
    }

    /// The case's `inputs` as a generation state (dict order) and its dense values.
    pub fn initial_state(&self, case: &Value) -> (GenerationState, DenseInputs) {
        let mut state = GenerationState::new();
        let mut dense = DenseInputs::new();
        for input in case["inputs"].as_array().expect("inputs") {
            let domain = input["modality"].as_str().unwrap();
            let input_mask = self.mask(&input["input_mask"]);
            let target_mask = self.mask(&input["target_mask"]);
            let tensor = self.tensor(&input["tensor"]);
            let tokens: Vec<Vec<u32>> = match input["type"].as_str().unwrap() {
                "img" | "seq" => ids(tensor),
                "rgb" => {
                    dense.insert(domain, DomainValues::Pixels(tensor.clone()));
                    input_mask.iter().map(|m| vec![0; m.len()]).collect()
                }
                "seq_emb" => {
                    dense.insert(domain, DomainValues::Embeddings(tensor.clone()));
                    input_mask.iter().map(|m| vec![0; m.len()]).collect()
                }
                other => panic!("unknown input type {other}"),
            };
            let rows = tokens
                .into_iter()
                .zip(input_mask)
                .zip(target_mask)
                .map(|((t, i), m)| ModalityRow::new(t, i, m).unwrap())
                .collect();
            state
                .insert(domain, ModalityState::from_rows(rows).unwrap())
                .unwrap();
        }
        (state, dense)
    }

    /// The case's schedule as generation steps, used as is.
    pub fn schedule(&self, case: &Value) -> Vec<GenerationStep> {
        case["schedule"]
            .as_array()
            .expect("schedule")
            .iter()
            .map(|s| GenerationStep {
                target_domain: s["target_domain"].as_str().unwrap().to_owned(),
                scheme: s["scheme"].as_str().unwrap().parse::<Scheme>().unwrap(),
                num_tokens: s["num_tokens"].as_u64().map(|n| n as usize),
                temperature: s["temperature"].as_f64().unwrap(),
                guidance: match &s["cfg_scale"] {
                    Value::Array(w) => {
                        Guidance::Weights(w.iter().map(|v| v.as_f64().unwrap()).collect())
                    }
                    v => Guidance::Scale(v.as_f64().unwrap()),
                },
                guidance_condition_domains: s["cfg_cond_domains"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_str().unwrap().to_owned())
                    .collect(),
            })
            .collect()
    }
}

pub fn ids(tensor: &Tensor) -> Vec<Vec<u32>> {
    tensor
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec2::<i64>()
        .unwrap()
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|v| u32::try_from(v).expect("non-negative id"))
                .collect()
        })
        .collect()
}

/// Largest absolute difference between a flat vector and a fixture tensor of the same size.
pub fn max_abs_diff(actual: &[f32], expected: &Tensor) -> f32 {
    let expected = expected
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(actual.len(), expected.len(), "logit count");
    actual
        .iter()
        .zip(&expected)
        .map(|(a, e)| {
            if a.is_nan() || e.is_nan() {
                f32::INFINITY
            } else {
                (a - e).abs()
            }
        })
        .fold(0.0, f32::max)
}
