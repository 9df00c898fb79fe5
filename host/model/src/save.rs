//! Writing a model in the released 4M checkpoint layout: `config.json` plus `model.safetensors`
//! with every state-dict key (buffers included) and the config again as header metadata, so
//! [`crate::FourM::load`] and the reference's strict `load_state_dict` both accept it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Tensor};

use crate::checkpoint::Parameters;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};

/// Write `config.json` and `model.safetensors` into `dir` (created if missing). Tensors are
/// stored as F32 whatever the compute dtype. Each file is written beside its final name and
/// renamed, so a crash never leaves a half-written checkpoint under the final name.
pub fn save_checkpoint(dir: &Path, config: &ModelConfig, parameters: &Parameters) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ModelError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tensors = parameters.checkpoint_tensors()?;
    save_tensors(
        &dir.join("model.safetensors"),
        &tensors,
        Some(config.to_metadata()),
    )?;
    let json = serde_json::to_string_pretty(&config.to_json_value()).expect("JSON value");
    let config_path = dir.join("config.json");
    let tmp = dir.join("config.json.tmp");
    std::fs::write(&tmp, json).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &config_path).map_err(io(&config_path))?;
    Ok(())
}

/// How a written safetensors file stores its floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDtype {
    F32,
    F16,
    BF16,
}

impl StoredDtype {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Some(Self::F32),
            "f16" | "float16" => Some(Self::F16),
            "bf16" | "bfloat16" => Some(Self::BF16),
            _ => None,
        }
    }

    fn safetensors_dtype(self) -> safetensors::Dtype {
        match self {
            Self::F32 => safetensors::Dtype::F32,
            Self::F16 => safetensors::Dtype::F16,
            Self::BF16 => safetensors::Dtype::BF16,
        }
    }

    fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Self::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Self::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            Self::BF16 => values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
        }
    }
}

/// Write named tensors as one F32 safetensors file (atomically, through a temporary name).
pub fn save_tensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    save_tensors_as(path, tensors, metadata, StoredDtype::F32)
}

/// Write named float tensors as one safetensors file storing `stored` (atomically, through a
/// temporary name).
pub fn save_tensors_as(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
    stored: StoredDtype,
) -> Result<()> {
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let values = tensor
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        buffers.push((name.clone(), tensor.dims().to_vec(), stored.encode(&values)));
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(stored.safetensors_dtype(), shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| ModelError::InvalidSafetensors {
                    path: path.to_owned(),
                    reason: format!("tensor {name}: {e}"),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, metadata, &tmp).map_err(|e| {
        ModelError::InvalidSafetensors {
            path: tmp.clone(),
            reason: format!("writing: {e}"),
        }
    })?;
    std::fs::rename(&tmp, path).map_err(|source| ModelError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Copy a checkpoint directory (`config.json` + `model.safetensors`: a 4M core or a 4M
/// tokenizer) to `dst` with its floats stored as `stored`; the header metadata is kept. Loading
/// converts stored floats to the compute dtype, so a converted checkpoint loads where the original
/// did.
pub fn convert_checkpoint(src: &Path, dst: &Path, stored: StoredDtype) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ModelError::Io { path, source }
    };
    let weights = src.join("model.safetensors");
    let bytes = std::fs::read(&weights).map_err(io(&weights))?;
    let invalid = |reason: String| ModelError::InvalidSafetensors {
        path: weights.clone(),
        reason,
    };
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| invalid(e.to_string()))?;
    let metadata = header.metadata().clone();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &candle_core::Device::Cpu)?
        .into_iter()
        .collect::<BTreeMap<_, _>>();
    if let Some((name, tensor)) = tensors.iter().find(|(_, t)| !t.dtype().is_float()) {
        return Err(invalid(format!(
            "tensor {name} is {:?}; only float checkpoints convert",
            tensor.dtype()
        )));
    }
    std::fs::create_dir_all(dst).map_err(io(dst))?;
    save_tensors_as(&dst.join("model.safetensors"), &tensors, metadata, stored)?;
    let config = src.join("config.json");
    let copied = dst.join("config.json");
    std::fs::copy(&config, &copied).map_err(io(&config))?;
    Ok(())
}
