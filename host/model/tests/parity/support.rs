//! Fixture discovery and helpers shared by the parity tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::Value;
use tessera_model::{DomainState, DomainValues, Mask};

/// The fixture root, or `None` (after printing why) when the tests should skip.
pub fn fixtures_root() -> Option<PathBuf> {
    let repo_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let configured = std::env::var("TESSERA_FIXTURES")
        .ok()
        .filter(|v| !v.is_empty());
    let root = match &configured {
        Some(dir) if Path::new(dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => repo_root.join(dir),
        None => repo_root.join("../shared/fixtures"),
    };
    if root.join("fm").is_dir() {
        return Some(root);
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    if ci {
        panic!(
            "FM fixtures not found at {} (set TESSERA_FIXTURES); required under CI",
            root.join("fm").display()
        );
    }
    eprintln!(
        "skipping: FM fixtures not found at {} (set TESSERA_FIXTURES)",
        root.join("fm").display()
    );
    None
}

/// Every model directory under `fm/` that has a `cases.json`.
pub fn model_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("fm"))
        .expect("read fm/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("cases.json").is_file())
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "no model directories under {}",
        root.join("fm").display()
    );
    dirs
}

/// One model fixture: its cases and tensors.
pub struct ModelFixture {
    pub dir: PathBuf,
    pub cases: Value,
    pub tensors: HashMap<String, Tensor>,
}

impl ModelFixture {
    pub fn open(dir: &Path) -> Self {
        let cases: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("cases.json")).expect("read cases.json"),
        )
        .expect("parse cases.json");
        let tensors_file = cases["tensors_file"]
            .as_str()
            .unwrap_or("tensors.safetensors");
        let tensors = candle_core::safetensors::load(dir.join(tensors_file), &Device::Cpu)
            .expect("load fixture tensors");
        Self {
            dir: dir.to_owned(),
            cases,
            tensors,
        }
    }

    pub fn name(&self) -> String {
        self.dir.file_name().unwrap().to_string_lossy().into_owned()
    }

    pub fn tensor(&self, key: &Value) -> &Tensor {
        let key = key.as_str().expect("tensor key");
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("fixture tensor `{key}` missing"))
    }

    pub fn forward_cases(&self) -> Vec<Value> {
        self.cases["forward"]
            .as_array()
            .cloned()
            .unwrap_or_default()
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

/// Largest absolute difference; panics on a shape mismatch.
pub fn max_abs_diff(actual: &Tensor, expected: &Tensor, what: &str) -> f32 {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape");
    if expected.elem_count() == 0 {
        return 0.0;
    }
    let a = actual
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let e = expected
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    a.iter()
        .zip(&e)
        .map(|(x, y)| {
            if x.is_nan() || y.is_nan() {
                f32::INFINITY
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0, f32::max)
}
