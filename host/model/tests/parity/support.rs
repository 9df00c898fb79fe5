//! Fixture discovery and helpers shared by the parity tests.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tessera_model::{DomainState, DomainValues, Mask};

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

    pub fn forward_cases(&self) -> Vec<Value> {
        self.cases_of("forward")
    }

    /// The `inputs` list of a case as domain states, in list order.
    pub fn states(&self, case: &Value) -> Vec<DomainState> {
        case["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .map(|input| {
                let tensor = self.tensor(&input["tensor"]).clone();
                let values = match input["type"].as_str().expect("type") {
                    "rgb" => DomainValues::Pixels(tensor),
                    "img" | "seq" => DomainValues::Tokens(tensor),
                    "seq_emb" => DomainValues::Embeddings(tensor),
                    other => panic!("unknown input type {other}"),
                };
                DomainState {
                    domain: input["modality"].as_str().unwrap().to_owned(),
                    values,
                    input_mask: Mask::from_tensor(self.tensor(&input["input_mask"])).unwrap(),
                    target_mask: Mask::from_tensor(self.tensor(&input["target_mask"])).unwrap(),
                }
            })
            .collect()
    }
}

pub use tessera_fixtures::max_abs_diff;
