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

/// Write named tensors as one F32 safetensors file (atomically, through a temporary name).
pub fn save_tensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let values = tensor
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((name.clone(), tensor.dims().to_vec(), bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
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
