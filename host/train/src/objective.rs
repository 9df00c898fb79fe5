//! The 4M training loss on a batch of masked samples: encoder inputs from every domain's visible
//! tokens, one joint decoder pass over every target domain (mask-token queries for grids,
//! teacher-forced shifted tokens for sequences) under the reference's training attention mask,
//! and a cross-entropy per domain averaged over the target domains (reference `forward_mod_loss`).

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use tessera_model::{
    DomainValues, EncoderInput, FourM, Mask, ModalityKind, ModelConfig, QueryContent, QuerySet,
    embeddings::image_grid, modality_info,
};

use crate::data::{DomainTokens, TokenSample};
use crate::error::{Result, TrainError};
use crate::masking::{DomainPlan, DomainShape, MaskedDomain, SequenceSpecials};

/// The domains of a model config that training covers, in `domains_in` then `domains_out`
/// order, with their shapes. Refuses domains that are not 4M modalities or cannot be token
/// trained (pixels, pre-computed embeddings).
pub fn domain_plans(config: &ModelConfig) -> Result<Vec<DomainPlan>> {
    let mut names: Vec<&String> = Vec::new();
    for name in config.domains_in.iter().chain(&config.domains_out) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let info = modality_info(name).ok_or_else(|| TrainError::UnknownDomain {
                domain: name.clone(),
            })?;
            let shape = match info.kind {
                ModalityKind::Sequence { max_tokens, .. } => DomainShape::Sequence { max_tokens },
                ModalityKind::ImageTokens { .. } => DomainShape::Grid {
                    tokens: image_grid(info, config)?.1,
                },
                ModalityKind::Pixels { .. } | ModalityKind::SequenceEmbedding { .. } => {
                    return Err(TrainError::UnsupportedDomain {
                        domain: name.clone(),
                        reason: "only token domains (sequences and token grids) are trained".into(),
                    });
                }
            };
            Ok(DomainPlan {
                name: name.clone(),
                shape,
                is_input: config.domains_in.contains(name),
                is_target: config.domains_out.contains(name),
                loss_weight: 1.0,
            })
        })
        .collect()
}

/// Check one sample against the plans: every domain present, of the right kind and size, ids
/// inside the vocabulary.
pub fn check_sample(
    index: usize,
    sample: &TokenSample,
    plans: &[DomainPlan],
    vocab: &BTreeMap<String, usize>,
) -> Result<()> {
    for plan in plans {
        let tokens = sample
            .get(&plan.name)
            .ok_or_else(|| TrainError::MissingDomain {
                index,
                domain: plan.name.clone(),
            })?;
        let invalid = |reason: String| TrainError::InvalidSample {
            index,
            domain: plan.name.clone(),
            reason,
        };
        let ids: Vec<u32> = match (plan.shape, tokens) {
            (DomainShape::Grid { tokens: n }, DomainTokens::Grid(ids)) => {
                if ids.len() != n {
                    return Err(invalid(format!(
                        "{} grid ids, the domain has {n}",
                        ids.len()
                    )));
                }
                ids.clone()
            }
            (DomainShape::Sequence { .. }, DomainTokens::Sequence(ids)) => ids.clone(),
            (DomainShape::Sequence { .. }, DomainTokens::Chunks(chunks)) => chunks.concat(),
            (DomainShape::Grid { .. }, _) => {
                return Err(invalid("an image-like domain needs a token grid".into()));
            }
            (DomainShape::Sequence { .. }, DomainTokens::Grid(_)) => {
                return Err(invalid("a sequence domain needs a token sequence".into()));
            }
        };
        let size = vocab[&plan.name];
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= size) {
            return Err(invalid(format!(
                "token id {bad} outside the vocabulary of {size}"
            )));
        }
    }
    Ok(())
}

/// Loss of one step and what it was made of.
#[derive(Debug)]
pub struct BatchLoss {
    /// Scalar: mean over target domains of each domain's mean token cross-entropy, weighted by
    /// the plans' `loss_weight`.
    pub loss: Tensor,
    /// Per target domain: (mean cross-entropy, predicted tokens); domains without target tokens in
    /// this batch are absent (they count as 0 in `loss`, as in the reference).
    pub per_domain: BTreeMap<String, (f32, usize)>,
    /// Encoder tokens fed plus decoder tokens predicted, for throughput.
    pub tokens: usize,
}

/// Forward the model on a batch of masked samples (`masked[row][i]` belongs to `plans[i]`) and
/// compute the loss.
pub fn batch_loss(
    model: &FourM,
    plans: &[DomainPlan],
    masked: &[Vec<MaskedDomain>],
    pad: u32,
) -> Result<BatchLoss> {
    let device = model.device().clone();
    let rows = masked.len();
    let mut tokens = 0;
    // Encoder inputs: grids as full grids with their input masks, sequences as their span-masked
    // inputs padded to the longest row.
    let mut inputs = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        if !plan.is_input {
            continue;
        }
        let width = masked
            .iter()
            .map(|m| m[i].encoder_ids.len())
            .max()
            .unwrap_or(0);
        if width == 0 {
            continue;
        }
        let mut ids = Vec::with_capacity(rows * width);
        let mut ignored = Vec::with_capacity(rows * width);
        for row in masked {
            let domain = &row[i];
            for c in 0..width {
                ids.push(domain.encoder_ids.get(c).copied().unwrap_or(pad));
                let present = domain.encoder_present.get(c).copied().unwrap_or(false);
                ignored.push(!present);
                tokens += usize::from(present);
            }
        }
        inputs.push(EncoderInput {
            domain: plan.name.clone(),
            values: DomainValues::Tokens(Tensor::from_vec(ids, (rows, width), &device)?),
            input_mask: Mask::new(rows, width, ignored)?,
        });
    }
    if inputs.is_empty() {
        // A batch whose every input budget is zero: one fully masked domain fixes the batch size.
        let first =
            plans
                .iter()
                .position(|p| p.is_input)
                .ok_or_else(|| TrainError::InvalidConfig {
                    field: "domains_in".into(),
                    reason: "no trainable input domain".into(),
                })?;
        inputs.push(EncoderInput {
            domain: plans[first].name.clone(),
            values: DomainValues::Tokens(Tensor::zeros((rows, 1), DType::U32, &device)?),
            input_mask: Mask::all_ignored(rows, 1),
        });
    }
    let context = model.encode(&inputs)?;

    // Decoder: one query set per target domain, padded per domain to the longest row. The
    // reference shuffles the order of the target domains; with attention confined to each domain
    // and every position carried by the embeddings, the result does not depend on that order, so
    // it is fixed here (plan order).
    struct Segment {
        domain: String,
        grid: bool,
        loss_weight: f64,
        /// Per row, (real queries, labels).
        valid: Vec<usize>,
        labels: Vec<Vec<u32>>,
    }
    let mut query_sets = Vec::new();
    let mut segments = Vec::new();
    let weight_sum: f64 = plans
        .iter()
        .filter(|p| p.is_target)
        .map(|p| p.loss_weight)
        .sum();
    for (i, plan) in plans.iter().enumerate() {
        if !plan.is_target {
            continue;
        }
        let grid = matches!(plan.shape, DomainShape::Grid { .. });
        // Sequences: T target ids give T - 1 teacher-forced queries.
        let count = |d: &MaskedDomain| {
            if grid {
                d.target_ids.len()
            } else {
                d.target_ids.len().saturating_sub(1)
            }
        };
        let len = masked.iter().map(|m| count(&m[i])).max().unwrap_or(0);
        if len == 0 {
            continue;
        }
        let mut positions = Vec::with_capacity(rows);
        let mut contents = Vec::with_capacity(rows);
        let mut labels = Vec::with_capacity(rows);
        let mut valid = Vec::with_capacity(rows);
        for row in masked {
            let d = &row[i];
            let n = count(d);
            valid.push(n);
            if grid {
                let mut p = d.target_positions.clone();
                p.resize(len, 0);
                positions.push(p);
                labels.push(d.target_ids.clone());
            } else {
                positions.push((0..len).collect());
                let mut fed = d.target_ids[..n].to_vec();
                fed.resize(len, pad);
                contents.push(fed);
                labels.push(d.target_ids.get(1..).unwrap_or_default().to_vec());
            }
        }
        query_sets.push(QuerySet {
            domain: plan.name.clone(),
            positions,
            content: if grid {
                QueryContent::MaskToken
            } else {
                QueryContent::Tokens(contents)
            },
        });
        segments.push(Segment {
            domain: plan.name.clone(),
            grid,
            loss_weight: plan.loss_weight,
            valid,
            labels,
        });
    }
    if segments.is_empty() {
        return Err(TrainError::InvalidConfig {
            field: "masking.target_tokens".into(),
            reason: "a batch without any target token".into(),
        });
    }
    // Reference training mask (`adapt_decoder_attention_mask` with `decoder_sep_mask`) in the
    // packed layout (each row's real queries, segment after segment): a query attends only to
    // real queries of its own domain, all of them for grids, the ones up to itself for sequences.
    // Padding slots attend to themselves only.
    let packed = (0..rows)
        .map(|r| segments.iter().map(|s| s.valid[r]).sum::<usize>())
        .max()
        .unwrap_or(0);
    let mut blocked = vec![1u8; rows * packed * packed];
    for r in 0..rows {
        let mut offset = 0;
        for s in &segments {
            let n = s.valid[r];
            for qi in 0..n {
                let row_base = (r * packed + offset + qi) * packed;
                let upto = if s.grid { n } else { qi + 1 };
                blocked[row_base + offset..row_base + offset + upto].fill(0);
            }
            offset += n;
        }
        for slot in offset..packed {
            blocked[(r * packed + slot) * packed + slot] = 0;
        }
    }
    let mask = Tensor::from_vec(blocked, (rows, 1, packed, packed), &device)?;
    let valid: Vec<Vec<usize>> = segments.iter().map(|s| s.valid.clone()).collect();
    let logits = model.decode_packed(&context, &query_sets, &valid, &mask)?;

    let mut loss: Option<Tensor> = None;
    let mut per_domain = BTreeMap::new();
    for (s, logits) in segments.iter().zip(logits) {
        // Logits come for the real queries only, row after row: the labels in the same order.
        let targets: Vec<u32> = (0..rows)
            .flat_map(|r| s.labels[r][..s.valid[r]].iter().copied())
            .collect();
        if targets.is_empty() {
            continue;
        }
        tokens += targets.len();
        let count = targets.len();
        let labels = Tensor::from_vec(targets, count, &device)?;
        let domain_loss = if tessera_model::fused::applies(&logits) {
            tessera_model::fused::cross_entropy(&logits, &labels)?
        } else {
            candle_nn::loss::cross_entropy(&logits, &labels)?
        };
        let value = domain_loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        per_domain.insert(s.domain.clone(), (value, count));
        let domain_loss = (domain_loss * s.loss_weight)?;
        loss = Some(match loss {
            None => domain_loss,
            Some(sum) => (sum + domain_loss)?,
        });
    }
    let loss = loss.expect("at least one segment has a target") / weight_sum;
    Ok(BatchLoss {
        loss: loss?,
        per_domain,
        tokens,
    })
}

/// Cross-entropy of the `target` domain when row `i` is given the whole `input` domain of sample
/// `input_of(i)` and nothing else, the whole target of sample `i` to predict. With `input_of` the
/// identity this is the model's conditional loss; pairing each target with another sample's input
/// shows what the input is worth: a model that reads its encoder scores the first far lower, one
/// that has learned only the domain's marginal scores both the same.
pub fn paired_loss(
    model: &FourM,
    plans: &[DomainPlan],
    samples: &[TokenSample],
    (input, target): (&str, &str),
    input_of: &dyn Fn(usize) -> usize,
    specials: &SequenceSpecials,
) -> Result<f32> {
    let missing = |domain: &str, index: usize| TrainError::MissingDomain {
        index,
        domain: domain.to_owned(),
    };
    for (domain, field, role, found) in [
        (
            input,
            "domains_in",
            "an input",
            plans.iter().any(|p| p.name == input && p.is_input),
        ),
        (
            target,
            "domains_out",
            "a target",
            plans.iter().any(|p| p.name == target && p.is_target),
        ),
    ] {
        if !found {
            return Err(TrainError::InvalidConfig {
                field: field.into(),
                reason: format!("{domain} is not {role} domain of the model"),
            });
        }
    }
    let nothing = MaskedDomain {
        encoder_ids: Vec::new(),
        encoder_present: Vec::new(),
        target_positions: Vec::new(),
        target_ids: Vec::new(),
    };
    let mut rows = Vec::with_capacity(samples.len());
    for index in 0..samples.len() {
        let source = input_of(index);
        let mut row = Vec::with_capacity(plans.len());
        for plan in plans {
            let domain = if plan.name == input {
                let tokens = samples
                    .get(source)
                    .and_then(|sample| sample.get(input))
                    .ok_or_else(|| missing(input, source))?;
                let ids = whole(tokens, plan, specials);
                MaskedDomain {
                    encoder_present: vec![true; ids.len()],
                    encoder_ids: ids,
                    ..nothing.clone()
                }
            } else if plan.name == target {
                let tokens = samples[index]
                    .get(target)
                    .ok_or_else(|| missing(target, index))?;
                let mut ids = whole(tokens, plan, specials);
                if matches!(plan.shape, DomainShape::Sequence { .. }) {
                    // As a fully masked sequence target: `[S_1] tokens [EOS] [S_2]`.
                    ids.insert(0, specials.sentinel(1));
                    ids.push(specials.sentinel(2));
                }
                MaskedDomain {
                    target_positions: (0..ids.len()).collect(),
                    target_ids: ids,
                    ..nothing.clone()
                }
            } else {
                nothing.clone()
            };
            row.push(domain);
        }
        rows.push(row);
    }
    let loss = batch_loss(model, plans, &rows, specials.pad)?;
    loss.per_domain
        .get(target)
        .map(|&(value, _)| value)
        .ok_or_else(|| TrainError::InvalidConfig {
            field: "samples".into(),
            reason: format!("no {target} tokens to predict in {} samples", samples.len()),
        })
}

/// A domain's whole token list as training feeds it: a grid as is, a sequence with `[EOS]`
/// (chunks in their stored order), cut to the domain's maximum.
fn whole(tokens: &DomainTokens, plan: &DomainPlan, specials: &SequenceSpecials) -> Vec<u32> {
    let mut ids = match tokens {
        DomainTokens::Grid(ids) => return ids.clone(),
        DomainTokens::Sequence(ids) => ids.clone(),
        DomainTokens::Chunks(chunks) => chunks.concat(),
    };
    ids.push(specials.eos);
    if let DomainShape::Sequence { max_tokens } = plan.shape {
        ids.truncate(max_tokens);
    }
    ids
}
