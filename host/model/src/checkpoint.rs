//! Reading 4M checkpoints: a memory-mapped safetensors file, its header metadata and its tensors.
//!
//! The file is memory-mapped and each tensor is converted straight from the mapped bytes into the
//! requested dtype (one copy, no intermediate f32 tensor for bf16/f16). Candle's CPU storage must
//! own its buffer, so the weights cannot stay borrowed from the map; instead, once a tensor has been
//! copied its mapped pages are released (`MADV_DONTNEED`), so that resident memory stays about one
//! copy of the weights plus one tensor rather than two copies.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use safetensors::Dtype as StDtype;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};

/// Where a checkpoint's parts live.
#[derive(Debug, Clone)]
pub struct CheckpointPaths {
    pub weights: PathBuf,
    /// `config.json` next to the weights, if the checkpoint is a directory that has one.
    pub config_json: Option<PathBuf>,
}

impl CheckpointPaths {
    /// Accept a directory holding `model.safetensors` (and usually `config.json`) or a bare
    /// `.safetensors` file.
    pub fn resolve(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|source| ModelError::Io {
            path: path.to_owned(),
            source,
        })?;
        if meta.is_dir() {
            let weights = path.join("model.safetensors");
            if !weights.is_file() {
                return Err(ModelError::Io {
                    path: weights,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "checkpoint directory has no model.safetensors",
                    ),
                });
            }
            let config = path.join("config.json");
            Ok(Self {
                weights,
                config_json: config.is_file().then_some(config),
            })
        } else {
            Ok(Self {
                weights: path.to_owned(),
                config_json: None,
            })
        }
    }
}

/// One tensor entry of the header.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub dtype: StDtype,
    pub shape: Vec<usize>,
    /// Byte range inside the mapped file.
    pub start: usize,
    pub end: usize,
}

/// A memory-mapped safetensors file with a validated header.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    entries: HashMap<String, TensorEntry>,
    metadata: HashMap<String, String>,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl SafetensorsFile {
    /// Map the file and validate its header (JSON, offsets, size).
    pub fn open(path: &Path) -> Result<Self> {
        let io_err = |source| ModelError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io_err)?;
        // SAFETY: the map is read-only; like every mmap-based loader we rely on the file not being
        // truncated or rewritten by another process while it is open.
        let mmap = unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(io_err)?;
        let invalid = |reason: String| ModelError::InvalidSafetensors {
            path: path.to_owned(),
            reason,
        };
        if mmap.len() < 8 {
            return Err(invalid(format!(
                "file has {} bytes, fewer than the 8-byte header length",
                mmap.len()
            )));
        }
        let header_len = u64::from_le_bytes(mmap[..8].try_into().expect("slice of 8 bytes"));
        if header_len > (mmap.len() as u64).saturating_sub(8) {
            return Err(invalid(format!(
                "header length {header_len} exceeds the file size {}",
                mmap.len()
            )));
        }
        let (header_len, metadata) = match safetensors::SafeTensors::read_metadata(&mmap[..]) {
            Ok(parsed) => parsed,
            Err(safetensors::SafeTensorError::MetadataIncompleteBuffer) => {
                // The header is fine but the data section does not match it: say by how much.
                let expected = 8
                    + header_len
                    + declared_data_len(&mmap[8..8 + header_len as usize]).unwrap_or(0);
                let found = mmap.len() as u64;
                if expected > found {
                    return Err(ModelError::TruncatedFile {
                        path: path.to_owned(),
                        expected_bytes: expected,
                        found_bytes: found,
                    });
                }
                return Err(invalid(format!(
                    "{} trailing bytes after the last tensor",
                    found - expected
                )));
            }
            Err(e) => return Err(invalid(format!("corrupted header: {e}"))),
        };
        let data_start = 8 + header_len;
        let entries = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let entry = TensorEntry {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: data_start + info.data_offsets.0,
                    end: data_start + info.data_offsets.1,
                };
                (name, entry)
            })
            .collect();
        let metadata = metadata.metadata().clone().unwrap_or_default();
        Ok(Self {
            path: path.to_owned(),
            mmap,
            entries,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Header `__metadata__` (empty if absent).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    pub fn entries(&self) -> &HashMap<String, TensorEntry> {
        &self.entries
    }

    pub fn file_size(&self) -> u64 {
        self.mmap.len() as u64
    }

    /// Convert one tensor from the map into `dtype` on `device`, then release its mapped pages.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_owned(),
                expected: "any".into(),
            })?;
        let bytes = &self.mmap[entry.start..entry.end];
        let unsupported = || ModelError::UnsupportedTensorDtype {
            name: name.to_owned(),
            found: format!("{:?}", entry.dtype),
        };
        let tensor = match (entry.dtype, dtype) {
            (StDtype::F32, DType::F32)
            | (StDtype::BF16, DType::BF16)
            | (StDtype::F16, DType::F16) => {
                Tensor::from_raw_buffer(bytes, dtype, &entry.shape, device)?
            }
            (stored, wanted) => {
                let values = decode_floats(bytes, stored).ok_or_else(unsupported)?;
                match wanted {
                    DType::F32 => Tensor::from_vec(
                        values.collect::<Vec<f32>>(),
                        entry.shape.as_slice(),
                        device,
                    )?,
                    DType::BF16 => Tensor::from_vec(
                        values.map(half::bf16::from_f32).collect::<Vec<_>>(),
                        entry.shape.as_slice(),
                        device,
                    )?,
                    DType::F16 => Tensor::from_vec(
                        values.map(half::f16::from_f32).collect::<Vec<_>>(),
                        entry.shape.as_slice(),
                        device,
                    )?,
                    other => {
                        return Err(ModelError::UnsupportedTensorDtype {
                            name: name.to_owned(),
                            found: format!("requested {other:?}"),
                        });
                    }
                }
            }
        };
        self.release(entry);
        Ok(tensor)
    }

    /// Drop the resident pages of a tensor we have copied, so the map does not double the RSS.
    fn release(&self, entry: &TensorEntry) {
        #[cfg(unix)]
        {
            // SAFETY: the mapping is read-only and file-backed; after MADV_DONTNEED a later read
            // faults the same bytes back in from the file, so no reference observes changed data.
            let _ = unsafe {
                self.mmap.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    entry.start,
                    entry.end - entry.start,
                )
            };
        }
    }
}

/// Largest `data_offsets` end declared by a header (the data section size it promises).
fn declared_data_len(header: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(header).ok()?;
    value
        .as_object()?
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
}

/// Iterate the values of a float tensor stored little-endian as F32, BF16 or F16.
fn decode_floats(bytes: &[u8], dtype: StDtype) -> Option<Box<dyn Iterator<Item = f32> + '_>> {
    Some(match dtype {
        StDtype::F32 => Box::new(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        StDtype::BF16 => Box::new(
            bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        StDtype::F16 => Box::new(
            bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        _ => return None,
    })
}

/// Read the model config of a checkpoint: `config.json` when present, else the header metadata.
pub fn read_config(paths: &CheckpointPaths, file: &SafetensorsFile) -> Result<ModelConfig> {
    read_config_as(
        paths,
        file,
        ModelConfig::from_json_value,
        ModelConfig::from_metadata,
    )
}

/// Read a checkpoint's config of any kind (the core's, a tokenizer's): `config.json` beside the
/// weights when present, else the safetensors header metadata.
pub(crate) fn read_config_as<C>(
    paths: &CheckpointPaths,
    file: &SafetensorsFile,
    from_json: impl FnOnce(&serde_json::Value) -> Result<C>,
    from_metadata: impl FnOnce(&HashMap<String, String>) -> Result<C>,
) -> Result<C> {
    if let Some(config_path) = &paths.config_json {
        let text = std::fs::read_to_string(config_path).map_err(|source| ModelError::Io {
            path: config_path.clone(),
            source,
        })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::MissingConfig {
                reason: format!("{} is not valid JSON: {e}", config_path.display()),
            })?;
        return from_json(&value);
    }
    if file.metadata().is_empty() {
        return Err(ModelError::MissingConfig {
            reason: format!(
                "{} has no config.json beside it and no config in its header metadata",
                file.path().display()
            ),
        });
    }
    from_metadata(file.metadata())
}

/// Makes the tensors of a model that is created rather than read from a file (a random
/// initialisation for training), through the same construction code as loading.
pub trait ParameterInit {
    /// Shape of a tensor whose size the architecture leaves open (vocabulary tables, an untied
    /// head); `None` means the model has no such tensor.
    fn shape_of(&self, name: &str) -> Option<Vec<usize>>;
    /// Initial values of a learned tensor of `shape`, row-major.
    fn values(&mut self, name: &str, shape: &[usize]) -> Vec<f32>;
}

/// Where the tensors of a [`TensorSource`] come from.
enum Backing<'a> {
    File(&'a SafetensorsFile),
    Fresh(&'a mut dyn ParameterInit),
}

/// A model's tensors by checkpoint name, as built for training: learned parameters as
/// [`Var`]s (the model's tensors share their storage, so updating a `Var` updates the model) and
/// the fixed buffers the released layout also stores (sin-cos tables, zero biases of bias-free
/// norms).
#[derive(Debug, Clone, Default)]
pub struct Parameters {
    pub vars: BTreeMap<String, Var>,
    pub buffers: BTreeMap<String, Tensor>,
    /// Checkpoint keys that hold the same parameter as another key (the encoder `mod_emb` of a
    /// model sharing modality embeddings), key → the key that owns the `Var`.
    pub aliases: BTreeMap<String, String>,
}

impl Parameters {
    /// Number of learned scalars (aliases counted once).
    pub fn element_count(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// Every checkpoint key with its tensor: parameters, buffers and aliases.
    pub fn checkpoint_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut all: BTreeMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        all.extend(self.buffers.iter().map(|(k, t)| (k.clone(), t.clone())));
        for (alias, owner) in &self.aliases {
            let tensor = all
                .get(owner)
                .cloned()
                .ok_or_else(|| ModelError::MissingTensor {
                    name: owner.clone(),
                    expected: format!("the parameter aliased by {alias}"),
                })?;
            all.insert(alias.clone(), tensor);
        }
        Ok(all)
    }
}

/// Loads tensors by name with shape checks and records which ones were used, so that tensors the
/// architecture does not account for can be reported. In training mode every learned tensor is
/// wrapped in a [`Var`] and kept by name ([`TensorSource::into_parameters`]).
pub struct TensorSource<'a> {
    backing: Backing<'a>,
    dtype: DType,
    device: Device,
    used: BTreeSet<String>,
    /// `Some` in training mode.
    record: Option<Parameters>,
}

impl<'a> TensorSource<'a> {
    pub fn new(file: &'a SafetensorsFile, dtype: DType, device: Device) -> Self {
        Self {
            backing: Backing::File(file),
            dtype,
            device,
            used: BTreeSet::new(),
            record: None,
        }
    }

    /// Training mode over a checkpoint: learned tensors become `Var`s.
    pub fn trainable(file: &'a SafetensorsFile, dtype: DType, device: Device) -> Self {
        Self {
            record: Some(Parameters::default()),
            ..Self::new(file, dtype, device)
        }
    }

    /// Training mode over fresh tensors made by `init` (no file).
    pub fn fresh(init: &'a mut dyn ParameterInit, dtype: DType, device: Device) -> Self {
        Self {
            backing: Backing::Fresh(init),
            dtype,
            device,
            used: BTreeSet::new(),
            record: Some(Parameters::default()),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Whether learned tensors are being wrapped as `Var`s.
    pub fn is_trainable(&self) -> bool {
        self.record.is_some()
    }

    /// Shape of a tensor, if the checkpoint has it (does not mark it used).
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        match &self.backing {
            Backing::File(file) => file.entries().get(name).map(|e| e.shape.clone()),
            Backing::Fresh(init) => init.shape_of(name),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.shape_of(name).is_some()
    }

    /// Check a tensor's existence and shape without loading it. Fresh tensors exist in whatever
    /// shape the architecture asks for, unless the initialiser fixes another one.
    pub fn check(&self, name: &str, expected: &[usize]) -> Result<()> {
        let found = match (&self.backing, self.shape_of(name)) {
            (_, Some(found)) => found,
            (Backing::Fresh(_), None) => return Ok(()),
            (Backing::File(_), None) => {
                return Err(ModelError::MissingTensor {
                    name: name.to_owned(),
                    expected: format!("{expected:?}"),
                });
            }
        };
        if found != expected {
            return Err(ModelError::ShapeMismatch {
                name: name.to_owned(),
                expected: expected.to_vec(),
                found,
            });
        }
        Ok(())
    }

    /// Load a learned tensor of exactly `expected` shape in the model dtype.
    pub fn get(&mut self, name: &str, expected: &[usize]) -> Result<Tensor> {
        self.get_as(name, expected, self.dtype)
    }

    /// Load a learned tensor of exactly `expected` shape in a given dtype.
    pub fn get_as(&mut self, name: &str, expected: &[usize], dtype: DType) -> Result<Tensor> {
        self.check(name, expected)?;
        let tensor = match &mut self.backing {
            Backing::File(file) => file.load(name, dtype, &self.device)?,
            Backing::Fresh(init) => {
                let values = init.values(name, expected);
                Tensor::from_vec(values, expected, &self.device)?.to_dtype(dtype)?
            }
        };
        self.used.insert(name.to_owned());
        Ok(match &mut self.record {
            Some(record) => {
                let var = Var::from_tensor(&tensor)?;
                let tensor = var.as_tensor().clone();
                record.vars.insert(name.to_owned(), var);
                tensor
            }
            None => tensor,
        })
    }

    /// Load a fixed buffer (never a `Var`): from the file, or `fresh()` when creating a model.
    pub fn get_buffer(
        &mut self,
        name: &str,
        expected: &[usize],
        dtype: DType,
        fresh: impl FnOnce() -> Vec<f32>,
    ) -> Result<Tensor> {
        self.check(name, expected)?;
        let tensor = match &self.backing {
            Backing::File(file) => file.load(name, dtype, &self.device)?,
            Backing::Fresh(_) => {
                Tensor::from_vec(fresh(), expected, &self.device)?.to_dtype(dtype)?
            }
        };
        self.used.insert(name.to_owned());
        if let Some(record) = &mut self.record {
            record.buffers.insert(name.to_owned(), tensor.clone());
        }
        Ok(tensor)
    }

    /// Mark a tensor as accounted for without loading it (a zero bias buffer, an unused table).
    pub fn skip(&mut self, name: &str, expected: &[usize]) -> Result<()> {
        self.check(name, expected)?;
        if let Backing::File(file) = &self.backing {
            let entry = &file.entries()[name];
            if decode_floats(&[], entry.dtype).is_none() {
                return Err(ModelError::UnsupportedTensorDtype {
                    name: name.to_owned(),
                    found: format!("{:?}", entry.dtype),
                });
            }
        }
        self.used.insert(name.to_owned());
        Ok(())
    }

    /// Like [`skip`](Self::skip) for a key that stores the same parameter as `owner` (a shared
    /// modality embedding); a saved checkpoint writes it again under this key.
    pub fn alias(&mut self, name: &str, expected: &[usize], owner: &str) -> Result<()> {
        self.skip(name, expected)?;
        if let Some(record) = &mut self.record {
            record.aliases.insert(name.to_owned(), owner.to_owned());
        }
        Ok(())
    }

    /// Mark every tensor whose name starts with `prefix` as accounted for without loading it (the
    /// parts of a checkpoint a caller deliberately does not build); returns how many.
    pub fn skip_prefix(&mut self, prefix: &str) -> usize {
        let Backing::File(file) = &self.backing else {
            return 0;
        };
        let names: Vec<String> = file
            .entries()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        let count = names.len();
        self.used.extend(names);
        count
    }

    /// The recorded parameters of a training-mode source (empty otherwise).
    pub fn into_parameters(self) -> Parameters {
        self.record.unwrap_or_default()
    }

    /// Error if the file holds tensors that were neither loaded nor skipped.
    pub fn finish(&self) -> Result<()> {
        let Backing::File(file) = &self.backing else {
            return Ok(());
        };
        let mut extra: Vec<String> = file
            .entries()
            .keys()
            .filter(|k| !self.used.contains(*k))
            .cloned()
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        extra.sort();
        Err(ModelError::UnexpectedTensors { names: extra })
    }
}
