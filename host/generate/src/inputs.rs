//! Conversion of generation states into the model's encoder inputs: token domains from the state,
//! pixel and embedding domains from [`DenseInputs`], rows of several states (the conditional and
//! unconditional branches of guidance) stacked into one batch.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use tessera_model::{DomainValues, EncoderInput, FourM, Mask, ModalityKind, modality_info};
use tessera_sampler::GenerationState;

use crate::error::{GenerateError, Result};

/// The data of domains whose values are not token ids (`rgb@*` pixels `(B, C, H, W)`,
/// `t5_caption` embeddings `(B, L, E)`); the generation state keeps only their masks.
#[derive(Debug, Clone, Default)]
pub struct DenseInputs {
    values: HashMap<String, DomainValues>,
}

impl DenseInputs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a domain's values (builder style).
    pub fn with(mut self, domain: impl Into<String>, values: DomainValues) -> Self {
        self.values.insert(domain.into(), values);
        self
    }

    pub fn insert(&mut self, domain: impl Into<String>, values: DomainValues) {
        self.values.insert(domain.into(), values);
    }

    pub fn get(&self, domain: &str) -> Option<&DomainValues> {
        self.values.get(domain)
    }
}

/// What kind of values a domain's encoder takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueKind {
    Tokens,
    Pixels,
    Embeddings { dim: usize },
}

pub(crate) fn value_kind(domain: &str) -> ValueKind {
    match modality_info(domain).map(|info| info.kind) {
        Some(ModalityKind::Pixels { .. }) => ValueKind::Pixels,
        Some(ModalityKind::SequenceEmbedding { embedding_dim, .. }) => {
            ValueKind::Embeddings { dim: embedding_dim }
        }
        _ => ValueKind::Tokens,
    }
}

/// One branch of a guided step: a state, and the embedding domains that are blanked to zeros.
#[derive(Debug, Clone)]
pub(crate) struct Branch<'a> {
    pub state: &'a GenerationState,
    pub zeroed: Vec<String>,
}

/// What the encoder sees of a branch: per domain its input mask and the tokens at input positions.
/// Equal keys give equal encoder outputs (the dense inputs are fixed for a run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BranchKey {
    domains: Vec<(String, Vec<bool>, Vec<u32>, bool)>,
}

impl Branch<'_> {
    /// The key of what `model`'s encoder reads of this branch.
    pub fn key(&self, model: &FourM) -> BranchKey {
        BranchKey {
            domains: self
                .state
                .iter()
                .filter(|(domain, _)| model.encoder_embedding(domain).is_some())
                .map(|(domain, modality)| {
                    let mask = modality.flat_input_mask();
                    let tokens = modality
                        .flat_tokens()
                        .into_iter()
                        .zip(&mask)
                        .map(|(t, &ignored)| if ignored { 0 } else { t })
                        .collect();
                    (
                        domain.to_owned(),
                        mask,
                        tokens,
                        self.zeroed.iter().any(|z| z == domain),
                    )
                })
                .collect(),
        }
    }

    /// Domain names and widths, in state order (branches with equal layouts can share a batch).
    pub fn layout(&self) -> Vec<(&str, usize)> {
        self.state.iter().map(|(d, m)| (d, m.width())).collect()
    }
}

fn dense_tensor<'v>(dense: &'v DenseInputs, domain: &str, kind: ValueKind) -> Result<&'v Tensor> {
    match (kind, dense.get(domain)) {
        (ValueKind::Pixels, Some(DomainValues::Pixels(t))) => Ok(t),
        (ValueKind::Embeddings { .. }, Some(DomainValues::Embeddings(t))) => Ok(t),
        (_, Some(_)) => Err(GenerateError::InvalidDenseValues {
            domain: domain.to_owned(),
            reason: "value kind does not match the domain".into(),
        }),
        (ValueKind::Pixels, None) => Err(GenerateError::MissingDenseValues {
            domain: domain.to_owned(),
            kind: "pixel",
        }),
        _ => Err(GenerateError::MissingDenseValues {
            domain: domain.to_owned(),
            kind: "embedding",
        }),
    }
}

/// Checks the dense values of every pixel / embedding domain of `state` that has encoder inputs.
pub(crate) fn check_dense(state: &GenerationState, dense: &DenseInputs) -> Result<()> {
    for (domain, modality) in state.iter() {
        let kind = value_kind(domain);
        if kind == ValueKind::Tokens || modality.flat_input_mask().iter().all(|&m| m) {
            continue;
        }
        let tensor = dense_tensor(dense, domain, kind)?;
        let dims = tensor.dims();
        let bad = |reason: String| GenerateError::InvalidDenseValues {
            domain: domain.to_owned(),
            reason,
        };
        if dims.first() != Some(&modality.batch_size()) {
            return Err(bad(format!(
                "shape {dims:?} but the state has {} rows",
                modality.batch_size()
            )));
        }
        if let ValueKind::Embeddings { dim } = kind
            && dims != [modality.batch_size(), modality.width(), dim]
        {
            return Err(bad(format!(
                "shape {dims:?}, expected [{}, {}, {dim}]",
                modality.batch_size(),
                modality.width()
            )));
        }
    }
    Ok(())
}

/// The encoder inputs of several branches with the same layout, stacked row-wise (branch-major):
/// token domains from the states, dense domains from `dense` (zeros where a branch blanks them).
/// Domains without any input in any row are left out (they contribute no encoder token).
pub(crate) fn stacked_encoder_inputs(
    model: &FourM,
    branches: &[Branch<'_>],
    dense: &DenseInputs,
) -> Result<Vec<EncoderInput>> {
    let first = branches.first().ok_or(GenerateError::EmptyState)?;
    let device = model.device();
    let mut inputs = Vec::new();
    let mut fallback = None;
    for (domain, first_modality) in first.state.iter() {
        let width = first_modality.width();
        let mut mask = Vec::new();
        let mut rows = 0;
        for branch in branches {
            let modality = branch.state.require(domain)?;
            mask.extend(modality.flat_input_mask());
            rows += modality.batch_size();
        }
        let any_input = mask.iter().any(|&m| !m);
        if model.encoder_embedding(domain).is_none() {
            // Like the reference, the encoder only reads the domains it has embeddings for (e.g.
            // a generated output-only domain).
            continue;
        }
        let kind = value_kind(domain);
        if !any_input {
            if fallback.is_none() && kind == ValueKind::Tokens {
                fallback = Some(domain.to_owned());
            }
            continue;
        }
        let values = build_values(branches, domain, kind, dense, device)?;
        inputs.push(EncoderInput {
            domain: domain.to_owned(),
            values,
            input_mask: Mask::new(rows, width, mask)?,
        });
    }
    if inputs.is_empty() {
        // Every branch is empty: the encoder still needs one (fully masked) domain for the batch.
        let Some(domain) = fallback else {
            return Err(GenerateError::EmptyState);
        };
        let mut mask = Vec::new();
        let mut rows = 0;
        for branch in branches {
            let modality = branch.state.require(&domain)?;
            mask.extend(modality.flat_input_mask());
            rows += modality.batch_size();
        }
        let width = first.state.require(&domain)?.width();
        inputs.push(EncoderInput {
            values: build_values(branches, &domain, ValueKind::Tokens, dense, device)?,
            domain,
            input_mask: Mask::new(rows, width, mask)?,
        });
    }
    Ok(inputs)
}

fn build_values(
    branches: &[Branch<'_>],
    domain: &str,
    kind: ValueKind,
    dense: &DenseInputs,
    device: &Device,
) -> Result<DomainValues> {
    let candle = |e: candle_core::Error| GenerateError::Model(e.into());
    match kind {
        ValueKind::Tokens => {
            let mut tokens = Vec::new();
            let mut rows = 0;
            let mut width = 0;
            for branch in branches {
                let modality = branch.state.require(domain)?;
                tokens.extend(modality.flat_tokens());
                rows += modality.batch_size();
                width = modality.width();
            }
            Ok(DomainValues::Tokens(
                Tensor::from_vec(tokens, (rows, width), device).map_err(candle)?,
            ))
        }
        ValueKind::Pixels | ValueKind::Embeddings { .. } => {
            let mut parts = Vec::with_capacity(branches.len());
            for branch in branches {
                let modality = branch.state.require(domain)?;
                let zeroed = branch.zeroed.iter().any(|z| z == domain);
                let all_masked = modality.flat_input_mask().iter().all(|&m| m);
                let part = match (kind, zeroed || all_masked) {
                    (ValueKind::Embeddings { dim }, true) => Tensor::zeros(
                        (modality.batch_size(), modality.width(), dim),
                        DType::F32,
                        device,
                    )
                    .map_err(candle)?,
                    _ if all_masked && dense.get(domain).is_none() => {
                        // Masked pixels are never read; borrow any branch's shape.
                        return Err(GenerateError::MissingDenseValues {
                            domain: domain.to_owned(),
                            kind: "pixel",
                        });
                    }
                    _ => dense_tensor(dense, domain, kind)?
                        .to_device(device)
                        .map_err(candle)?
                        .to_dtype(DType::F32)
                        .map_err(candle)?,
                };
                parts.push(part);
            }
            let stacked = Tensor::cat(&parts, 0).map_err(candle)?;
            Ok(match kind {
                ValueKind::Pixels => DomainValues::Pixels(stacked),
                _ => DomainValues::Embeddings(stacked),
            })
        }
    }
}
