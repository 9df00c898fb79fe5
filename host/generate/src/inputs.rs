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

/// One branch of a guided step: a state, the embedding domains that are blanked to zeros, and
/// the dense values of its generation (branches of different generations batched together each
/// bring their own).
#[derive(Debug, Clone)]
pub(crate) struct Branch<'a> {
    pub state: &'a GenerationState,
    pub zeroed: Vec<String>,
    pub dense: &'a DenseInputs,
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

    fn rows(&self) -> usize {
        self.state.batch_size().unwrap_or(0)
    }
}

/// One encoder layout for branches whose layouts differ (e.g. the branches of a depth and of a
/// normal generation: `caption, tok_depth@224` and `caption, tok_normal@224`): every domain of
/// every branch once, in an order that keeps each branch's own order, so a branch's rows see their
/// valid tokens in the order they would alone and the domains they lack are fully masked (no
/// encoder token). `None` when no such order exists or a domain's width differs between branches.
pub(crate) fn union_layout(branches: &[Branch<'_>]) -> Option<Vec<(String, usize)>> {
    let layouts: Vec<Vec<(&str, usize)>> = branches.iter().map(Branch::layout).collect();
    let mut union: Vec<(String, usize)> = Vec::new();
    for layout in &layouts {
        for &(domain, width) in layout {
            match union.iter().find(|(d, _)| d == domain) {
                Some((_, known)) if *known != width => return None,
                Some(_) => {}
                None => union.push((domain.to_owned(), width)),
            }
        }
    }
    // First appearance can still contradict a later branch (`a, b` then `b, a`).
    let position = |domain: &str| union.iter().position(|(d, _)| d == domain);
    for layout in &layouts {
        let order: Vec<Option<usize>> = layout.iter().map(|(d, _)| position(d)).collect();
        if order.windows(2).any(|pair| pair[0] >= pair[1]) {
            return None;
        }
    }
    Some(union)
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

/// The encoder inputs of several branches, stacked row-wise (branch-major) in `layout` (their
/// common layout, or a [`union_layout`]): token domains from the states, dense domains from each
/// branch's dense values (zeros where a branch blanks them). A domain a branch lacks is fully
/// masked in its rows. Domains without any input in any row are left out (they contribute no
/// encoder token).
pub(crate) fn stacked_encoder_inputs(
    model: &FourM,
    branches: &[Branch<'_>],
    layout: &[(String, usize)],
) -> Result<Vec<EncoderInput>> {
    if branches.is_empty() {
        return Err(GenerateError::EmptyState);
    }
    let device = model.device();
    let masks = |domain: &str, width: usize| -> (Vec<bool>, usize) {
        let mut mask = Vec::new();
        let mut rows = 0;
        for branch in branches {
            match branch.state.get(domain) {
                Some(modality) => mask.extend(modality.flat_input_mask()),
                None => mask.extend(std::iter::repeat_n(true, branch.rows() * width)),
            }
            rows += branch.rows();
        }
        (mask, rows)
    };
    let mut inputs = Vec::new();
    let mut fallback = None;
    for (domain, width) in layout {
        let (mask, rows) = masks(domain, *width);
        let any_input = mask.iter().any(|&m| !m);
        if model.encoder_embedding(domain).is_none() {
            // Like the reference, the encoder only reads the domains it has embeddings for (e.g.
            // a generated output-only domain).
            continue;
        }
        let kind = value_kind(domain);
        if !any_input {
            if fallback.is_none() && kind == ValueKind::Tokens {
                fallback = Some((domain.clone(), *width));
            }
            continue;
        }
        let values = build_values(branches, domain, *width, kind, device)?;
        inputs.push(EncoderInput {
            domain: domain.clone(),
            values,
            input_mask: Mask::new(rows, *width, mask)?,
        });
    }
    if inputs.is_empty() {
        // Every branch is empty: the encoder still needs one (fully masked) domain for the batch.
        let Some((domain, width)) = fallback else {
            return Err(GenerateError::EmptyState);
        };
        let (mask, rows) = masks(&domain, width);
        inputs.push(EncoderInput {
            values: build_values(branches, &domain, width, ValueKind::Tokens, device)?,
            domain,
            input_mask: Mask::new(rows, width, mask)?,
        });
    }
    Ok(inputs)
}

fn build_values(
    branches: &[Branch<'_>],
    domain: &str,
    width: usize,
    kind: ValueKind,
    device: &Device,
) -> Result<DomainValues> {
    let candle = |e: candle_core::Error| GenerateError::Model(e.into());
    match kind {
        ValueKind::Tokens => {
            let mut tokens = Vec::new();
            let mut rows = 0;
            for branch in branches {
                match branch.state.get(domain) {
                    Some(modality) => tokens.extend(modality.flat_tokens()),
                    // Masked rows are never read; 0 is in every vocabulary.
                    None => tokens.extend(std::iter::repeat_n(0, branch.rows() * width)),
                }
                rows += branch.rows();
            }
            Ok(DomainValues::Tokens(
                Tensor::from_vec(tokens, (rows, width), device).map_err(candle)?,
            ))
        }
        ValueKind::Pixels | ValueKind::Embeddings { .. } => {
            let mut parts: Vec<Option<Tensor>> = Vec::with_capacity(branches.len());
            for branch in branches {
                let Some(modality) = branch.state.get(domain) else {
                    parts.push(None);
                    continue;
                };
                let zeroed = branch.zeroed.iter().any(|z| z == domain);
                let all_masked = modality.flat_input_mask().iter().all(|&m| m);
                let part = match (kind, zeroed || all_masked) {
                    (ValueKind::Embeddings { dim }, true) => Tensor::zeros(
                        (modality.batch_size(), modality.width(), dim),
                        DType::F32,
                        device,
                    )
                    .map_err(candle)?,
                    _ if all_masked && branch.dense.get(domain).is_none() => {
                        // Masked pixels are never read; borrow any branch's shape.
                        return Err(GenerateError::MissingDenseValues {
                            domain: domain.to_owned(),
                            kind: "pixel",
                        });
                    }
                    _ => dense_tensor(branch.dense, domain, kind)?
                        .to_device(device)
                        .map_err(candle)?
                        .to_dtype(DType::F32)
                        .map_err(candle)?,
                };
                parts.push(Some(part));
            }
            // Rows of branches without the domain are masked: zeros shaped like the others'.
            let template = parts
                .iter()
                .flatten()
                .next()
                .map(|t| t.dims().to_vec())
                .ok_or_else(|| GenerateError::MissingDenseValues {
                    domain: domain.to_owned(),
                    kind: "pixel",
                })?;
            let parts = parts
                .into_iter()
                .zip(branches)
                .map(|(part, branch)| match part {
                    Some(part) => Ok(part),
                    None => {
                        let mut shape = template.clone();
                        shape[0] = branch.rows();
                        Tensor::zeros(shape, DType::F32, device).map_err(candle)
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let stacked = Tensor::cat(&parts, 0).map_err(candle)?;
            Ok(match kind {
                ValueKind::Pixels => DomainValues::Pixels(stacked),
                _ => DomainValues::Embeddings(stacked),
            })
        }
    }
}
