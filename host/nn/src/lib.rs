//! tessera-nn: 4M tokenizer checkpoints exposed to plugins as `host-nn` graphs.
//!
//! Every tokenizer registered under a domain (`tok_rgb@224` → a checkpoint directory) becomes two
//! graphs a plugin may load by name, if its manifest allows them:
//!
//! * `<domain>/encode`: input `image`, the tokenizer's input already pre-processed — f32
//!   `(B, C, H, W)` (for RGB in `[-1, 1]`), or for a semseg tokenizer class ids `(B, H, W)` as
//!   u8, u32 or i64 — and output `tokens`, u32 `(B, h, w)` (`(B, heads, h, w)` for Memcodes).
//! * `<domain>/decode`: input `tokens` (u32 or i64, the shape `encode` returns), and for a DiVAE
//!   optionally `steps` and `seed` (one u32 or i64 each); output `image`, f32 `(B, C, H, W)` in the
//!   tokenizer's output space (`logits` `(B, n_labels, H, W)` for semseg). Only registered when the
//!   tokenizer can decode.
//!
//! [`TokenizerGraphs::load`] builds the registry from a domain → path map; bad paths, bad domain
//! names and checkpoints that do not load are [`TokenizerGraphError`]s, bad tensors given to a
//! graph are reported to the plugin as `invalid-input` with the graph, tensor and what was wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Tensor};
use tessera_model::LoadOptions;
use tessera_model::vq::{DiffusionOptions, VqTokenizer};
use tessera_runtime::types::{Dtype, NamedTensor, NnError, Tensor as WireTensor};
use tessera_runtime::{Graph, GraphRegistry};

/// Why the tokenizer registry could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerGraphError {
    #[error("tokenizer domain `{domain}` is not usable as a graph name prefix: {reason}")]
    BadDomain { domain: String, reason: String },
    #[error("tokenizer for `{domain}`: {path} does not exist")]
    MissingPath { domain: String, path: PathBuf },
    #[error("tokenizer for `{domain}` from {path}: {source}")]
    Load {
        domain: String,
        path: PathBuf,
        #[source]
        source: Box<tessera_model::ModelError>,
    },
}

/// Why a graph refused or failed a computation (reported to the plugin as an [`NnError`]).
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error("graph `{graph}`: missing input tensor `{name}`")]
    MissingInput { graph: String, name: String },
    #[error("graph `{graph}`: unexpected input tensor `{name}` (expected {expected})")]
    UnexpectedInput {
        graph: String,
        name: String,
        expected: String,
    },
    #[error("graph `{graph}`: tensor `{name}` is {found:?}, expected {expected}")]
    Dtype {
        graph: String,
        name: String,
        found: Dtype,
        expected: String,
    },
    #[error("graph `{graph}`: tensor `{name}` has shape {found:?}, expected {expected}")]
    Shape {
        graph: String,
        name: String,
        found: Vec<u32>,
        expected: String,
    },
    #[error("graph `{graph}`: tensor `{name}` has {found} data bytes, its shape needs {expected}")]
    DataLength {
        graph: String,
        name: String,
        found: usize,
        expected: usize,
    },
    #[error("graph `{graph}`: tensor `{name}` element {index} is {value}, {reason}")]
    Value {
        graph: String,
        name: String,
        index: usize,
        value: String,
        reason: String,
    },
    #[error("graph `{graph}`: {source}")]
    Model {
        graph: String,
        #[source]
        source: Box<tessera_model::ModelError>,
    },
}

impl From<ComputeError> for NnError {
    fn from(e: ComputeError) -> Self {
        match e {
            ComputeError::Model { .. } => NnError::Failed(e.to_string()),
            _ => NnError::InvalidInput(e.to_string()),
        }
    }
}

/// What a tokenizer graph does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphKind {
    Encode,
    Decode,
}

impl GraphKind {
    pub fn suffix(self) -> &'static str {
        match self {
            GraphKind::Encode => "encode",
            GraphKind::Decode => "decode",
        }
    }
}

/// The graph name of a domain's tokenizer half, e.g. `tok_rgb@224/encode`.
pub fn graph_name(domain: &str, kind: GraphKind) -> String {
    format!("{domain}/{}", kind.suffix())
}

/// One half of a tokenizer as a `host-nn` graph.
pub struct TokenizerGraph {
    name: String,
    kind: GraphKind,
    tokenizer: Arc<VqTokenizer>,
}

impl TokenizerGraph {
    pub fn new(domain: &str, kind: GraphKind, tokenizer: Arc<VqTokenizer>) -> Self {
        Self {
            name: graph_name(domain, kind),
            kind,
            tokenizer,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Computes on named tensors, with the structured error.
    pub fn run(&self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, ComputeError> {
        match self.kind {
            GraphKind::Encode => self.encode(inputs),
            GraphKind::Decode => self.decode(inputs),
        }
    }

    fn model_err(&self, source: tessera_model::ModelError) -> ComputeError {
        ComputeError::Model {
            graph: self.name.clone(),
            source: Box::new(source),
        }
    }

    fn candle_err(&self, e: candle_core::Error) -> ComputeError {
        self.model_err(tessera_model::ModelError::from(e))
    }

    /// Takes the tensors by name; every name must be in `known`, every name in `required` present.
    fn take(
        &self,
        inputs: Vec<NamedTensor>,
        required: &[&str],
        optional: &[&str],
    ) -> Result<BTreeMap<String, WireTensor>, ComputeError> {
        let expected = required
            .iter()
            .map(|n| format!("`{n}`"))
            .chain(optional.iter().map(|n| format!("`{n}` (optional)")))
            .collect::<Vec<_>>()
            .join(", ");
        let mut map = BTreeMap::new();
        for NamedTensor { name, tensor } in inputs {
            if !required.contains(&name.as_str()) && !optional.contains(&name.as_str()) {
                return Err(ComputeError::UnexpectedInput {
                    graph: self.name.clone(),
                    name,
                    expected,
                });
            }
            map.insert(name, tensor);
        }
        for name in required {
            if !map.contains_key(*name) {
                return Err(ComputeError::MissingInput {
                    graph: self.name.clone(),
                    name: (*name).to_string(),
                });
            }
        }
        Ok(map)
    }

    fn required(
        &self,
        map: &mut BTreeMap<String, WireTensor>,
        name: &str,
    ) -> Result<WireTensor, ComputeError> {
        map.remove(name).ok_or_else(|| ComputeError::MissingInput {
            graph: self.name.clone(),
            name: name.into(),
        })
    }

    fn shape_err(&self, name: &str, t: &WireTensor, expected: String) -> ComputeError {
        ComputeError::Shape {
            graph: self.name.clone(),
            name: name.into(),
            found: t.shape.clone(),
            expected,
        }
    }

    fn encode(&self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, ComputeError> {
        let mut map = self.take(inputs, &["image"], &[])?;
        let wire = self.required(&mut map, "image")?;
        let config = self.tokenizer.config();
        let patch = config.patch_size;
        let device = self.tokenizer.device();
        let (rank, channels_at) = if config.n_labels.is_some() {
            (3, None)
        } else {
            (4, Some(1))
        };
        let expected_shape = match config.n_labels {
            Some(_) => format!("(B, H, W) with H, W positive multiples of {patch}"),
            None => format!(
                "(B, {}, H, W) with H, W positive multiples of {patch}",
                config.n_channels
            ),
        };
        let shape = &wire.shape;
        let spatial_ok = shape.len() == rank
            && shape[0] > 0
            && shape[rank - 2..]
                .iter()
                .all(|&d| d > 0 && (d as usize).is_multiple_of(patch))
            && channels_at.is_none_or(|i| shape[i] as usize == config.n_channels);
        if !spatial_ok {
            return Err(self.shape_err("image", &wire, expected_shape));
        }
        let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let input = match config.n_labels {
            None => {
                let values = self.f32_values("image", &wire)?;
                if let Some(index) = values.iter().position(|v| !v.is_finite()) {
                    return Err(ComputeError::Value {
                        graph: self.name.clone(),
                        name: "image".into(),
                        index,
                        value: values[index].to_string(),
                        reason: "not a finite number".into(),
                    });
                }
                Tensor::from_vec(values, dims, device).map_err(|e| self.candle_err(e))?
            }
            Some(n_labels) => {
                let ids = self.int_values("image", &wire, &["u8", "u32", "i64"])?;
                let ids = self.check_range("image", ids, n_labels, "class ids must be")?;
                Tensor::from_vec(ids, dims, device).map_err(|e| self.candle_err(e))?
            }
        };
        let tokens = self
            .tokenizer
            .encode(&input)
            .map_err(|e| self.model_err(e))?;
        let out_shape: Vec<u32> = tokens.dims().iter().map(|&d| d as u32).collect();
        let ids = tokens
            .flatten_all()
            .and_then(|t| t.to_dtype(DType::I64))
            .and_then(|t| t.to_vec1::<i64>())
            .map_err(|e| self.candle_err(e))?;
        let data = ids
            .iter()
            .flat_map(|&id| (id as u32).to_le_bytes())
            .collect();
        Ok(vec![NamedTensor {
            name: "tokens".into(),
            tensor: WireTensor {
                dtype: Dtype::U32,
                shape: out_shape,
                data,
            },
        }])
    }

    fn decode(&self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, ComputeError> {
        let mut map = self.take(inputs, &["tokens"], &["steps", "seed"])?;
        let wire = self.required(&mut map, "tokens")?;
        let config = self.tokenizer.config();
        let heads = config.num_codebooks;
        let (rank, expected) = if heads > 1 {
            (4, format!("(B, {heads}, h, w)"))
        } else {
            (3, "(B, h, w)".to_string())
        };
        if wire.shape.len() != rank
            || wire.shape.contains(&0)
            || (heads > 1 && wire.shape[1] as usize != heads)
        {
            return Err(self.shape_err("tokens", &wire, expected));
        }
        let ids = self.int_values("tokens", &wire, &["u32", "i64"])?;
        let ids = self.check_range(
            "tokens",
            ids,
            self.tokenizer.codebook_size(),
            "token ids must be",
        )?;
        let dims: Vec<usize> = wire.shape.iter().map(|&d| d as usize).collect();
        let tokens =
            Tensor::from_vec(ids, dims, self.tokenizer.device()).map_err(|e| self.candle_err(e))?;
        let mut options = DiffusionOptions::default();
        if let Some(steps) = map.remove("steps") {
            let steps = self.scalar("steps", &steps)?;
            if !(1..=1000).contains(&steps) {
                return Err(ComputeError::Value {
                    graph: self.name.clone(),
                    name: "steps".into(),
                    index: 0,
                    value: steps.to_string(),
                    reason: "the step count must be in 1..=1000".into(),
                });
            }
            options.steps = steps as usize;
        }
        if let Some(seed) = map.remove("seed") {
            options.seed = self.scalar("seed", &seed)? as u64;
        }
        let dec = self
            .tokenizer
            .decode_tokens_with(&tokens, &options)
            .map_err(|e| self.model_err(e))?;
        let shape: Vec<u32> = dec.dims().iter().map(|&d| d as u32).collect();
        let values = dec
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| self.candle_err(e))?;
        let name = if config.n_labels.is_some() {
            "logits"
        } else {
            "image"
        };
        Ok(vec![NamedTensor {
            name: name.into(),
            tensor: WireTensor {
                dtype: Dtype::F32,
                shape,
                data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            },
        }])
    }

    fn check_len(&self, name: &str, t: &WireTensor, width: usize) -> Result<usize, ComputeError> {
        let count = t
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize));
        let expected = count.and_then(|c| c.checked_mul(width));
        match expected {
            Some(bytes) if bytes == t.data.len() => Ok(count.unwrap_or(0)),
            _ => Err(ComputeError::DataLength {
                graph: self.name.clone(),
                name: name.into(),
                found: t.data.len(),
                expected: expected.unwrap_or(usize::MAX),
            }),
        }
    }

    fn f32_values(&self, name: &str, t: &WireTensor) -> Result<Vec<f32>, ComputeError> {
        if t.dtype != Dtype::F32 {
            return Err(ComputeError::Dtype {
                graph: self.name.clone(),
                name: name.into(),
                found: t.dtype,
                expected: "f32".into(),
            });
        }
        self.check_len(name, t, 4)?;
        Ok(t.data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn int_values(
        &self,
        name: &str,
        t: &WireTensor,
        accepted: &[&str],
    ) -> Result<Vec<i64>, ComputeError> {
        let (width, label) = match t.dtype {
            Dtype::U8 => (1, "u8"),
            Dtype::U32 => (4, "u32"),
            Dtype::I32 => (4, "i32"),
            Dtype::I64 => (8, "i64"),
            _ => (0, ""),
        };
        if width == 0 || !accepted.contains(&label) {
            return Err(ComputeError::Dtype {
                graph: self.name.clone(),
                name: name.into(),
                found: t.dtype,
                expected: accepted.join(" or "),
            });
        }
        self.check_len(name, t, width)?;
        Ok(match t.dtype {
            Dtype::U8 => t.data.iter().map(|&b| i64::from(b)).collect(),
            Dtype::U32 => t
                .data
                .chunks_exact(4)
                .map(|c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            Dtype::I32 => t
                .data
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            _ => t
                .data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        })
    }

    fn check_range(
        &self,
        name: &str,
        values: Vec<i64>,
        bound: usize,
        what: &str,
    ) -> Result<Vec<i64>, ComputeError> {
        if let Some(index) = values
            .iter()
            .position(|&v| v < 0 || v as u64 >= bound as u64)
        {
            return Err(ComputeError::Value {
                graph: self.name.clone(),
                name: name.into(),
                index,
                value: values[index].to_string(),
                reason: format!("{what} in 0..{bound}"),
            });
        }
        Ok(values)
    }

    fn scalar(&self, name: &str, t: &WireTensor) -> Result<i64, ComputeError> {
        if t.shape.iter().product::<u32>() != 1 {
            return Err(self.shape_err(name, t, "one value ([] or [1])".into()));
        }
        let values = self.int_values(name, t, &["u32", "i64"])?;
        let value = values.first().copied().unwrap_or(0);
        if value < 0 {
            return Err(ComputeError::Value {
                graph: self.name.clone(),
                name: name.into(),
                index: 0,
                value: value.to_string(),
                reason: "must not be negative".into(),
            });
        }
        Ok(value)
    }
}

impl Graph for TokenizerGraph {
    fn compute(&self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, NnError> {
        let started = std::time::Instant::now();
        let result = self.run(inputs).map_err(NnError::from);
        tracing::debug!(graph = %self.name, elapsed_ms = started.elapsed().as_millis() as u64, ok = result.is_ok(), "tokenizer graph");
        result
    }
}

/// Tokenizers by domain, offered as `<domain>/encode` and `<domain>/decode` graphs.
#[derive(Default, Clone)]
pub struct TokenizerGraphs {
    tokenizers: BTreeMap<String, Arc<VqTokenizer>>,
    graphs: BTreeMap<String, Arc<TokenizerGraph>>,
}

impl TokenizerGraphs {
    /// Loads every tokenizer of `paths` (domain → checkpoint directory or `.safetensors`).
    pub fn load(
        paths: &BTreeMap<String, PathBuf>,
        options: &LoadOptions,
    ) -> Result<Self, TokenizerGraphError> {
        let mut registry = Self::default();
        for (domain, path) in paths {
            registry.add_path(domain, path, options)?;
        }
        Ok(registry)
    }

    /// Loads one tokenizer and registers its graphs under `domain`.
    pub fn add_path(
        &mut self,
        domain: &str,
        path: &Path,
        options: &LoadOptions,
    ) -> Result<(), TokenizerGraphError> {
        check_domain(domain)?;
        if !path.exists() {
            return Err(TokenizerGraphError::MissingPath {
                domain: domain.into(),
                path: path.into(),
            });
        }
        let tokenizer =
            VqTokenizer::load(path, options).map_err(|source| TokenizerGraphError::Load {
                domain: domain.into(),
                path: path.into(),
                source: Box::new(source),
            })?;
        self.add(domain, Arc::new(tokenizer))
    }

    /// Registers an already loaded tokenizer under `domain`.
    pub fn add(
        &mut self,
        domain: &str,
        tokenizer: Arc<VqTokenizer>,
    ) -> Result<(), TokenizerGraphError> {
        check_domain(domain)?;
        let mut kinds = vec![GraphKind::Encode];
        if tokenizer.can_decode() {
            kinds.push(GraphKind::Decode);
        }
        for kind in kinds {
            let graph = TokenizerGraph::new(domain, kind, tokenizer.clone());
            self.graphs
                .insert(graph.name().to_string(), Arc::new(graph));
        }
        self.tokenizers.insert(domain.into(), tokenizer);
        Ok(())
    }

    /// The tokenizer registered under `domain`.
    pub fn tokenizer(&self, domain: &str) -> Option<&Arc<VqTokenizer>> {
        self.tokenizers.get(domain)
    }

    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.tokenizers.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.tokenizers.is_empty()
    }
}

impl GraphRegistry for TokenizerGraphs {
    fn load(&self, name: &str) -> Option<Arc<dyn Graph>> {
        self.graphs.get(name).map(|g| g.clone() as Arc<dyn Graph>)
    }
    fn names(&self) -> Vec<String> {
        self.graphs.keys().cloned().collect()
    }
}

fn check_domain(domain: &str) -> Result<(), TokenizerGraphError> {
    let reason = if domain.is_empty() {
        Some("it is empty")
    } else if domain.contains('/') {
        Some("it contains `/`")
    } else if domain.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TokenizerGraphError::BadDomain {
            domain: domain.into(),
            reason: reason.into(),
        }),
        None => Ok(()),
    }
}

/// Parses a `DOMAIN=PATH` command-line value.
pub fn parse_tokenizer_arg(arg: &str) -> Result<(String, PathBuf), String> {
    let (domain, path) = arg.split_once('=').ok_or_else(|| {
        format!("`{arg}` is not DOMAIN=PATH (e.g. tok_rgb@224=path/to/tokenizer)")
    })?;
    if domain.is_empty() || path.is_empty() {
        return Err(format!(
            "`{arg}` is not DOMAIN=PATH: the domain and the path must not be empty"
        ));
    }
    check_domain(domain).map_err(|e| e.to_string())?;
    Ok((domain.to_string(), PathBuf::from(path)))
}
