//! The 4M masking objective for one sample (reference `UnifiedMasking`, `fourm/data/masking.py`):
//! draw the input and target token budgets, split them across domains with a Dirichlet sample
//! (one component of a mixture, chosen per sample), then mask image-like grids randomly and
//! sequences T5-style with sentinels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tessera_model::{ModalityInfo, modality_info};

use crate::data::DomainTokens;
use crate::error::{Result, TrainError};
use crate::rng::TrainRng;

/// Token ids of the 4M text layout the span masking needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceSpecials {
    pub pad: u32,
    pub eos: u32,
    /// Id of `[S_0]`; `[S_i]` = `sentinel_base + i`.
    pub sentinel_base: u32,
    pub sentinel_count: u32,
}

impl Default for SequenceSpecials {
    /// The 4M layout (tessera's vocabulary uses it too): `[PAD]` 0, `[EOS]` 3, `[S_0]` 4, 200 sentinels.
    fn default() -> Self {
        Self {
            pad: 0,
            eos: 3,
            sentinel_base: 4,
            sentinel_count: 200,
        }
    }
}

impl SequenceSpecials {
    /// Id of `v0=0`: the value tokens follow the sentinels in the 4M layout.
    pub fn value_base(&self) -> usize {
        (self.sentinel_base + self.sentinel_count) as usize
    }

    pub(crate) fn sentinel(&self, i: usize) -> u32 {
        // Span counts are bounded by the sequence length, far below the 200 sentinels for the
        // 4M budgets; past the last one the highest is reused rather than leaving the layout.
        self.sentinel_base + (i as u32).min(self.sentinel_count - 1)
    }

    fn is_sentinel(&self, id: u32) -> bool {
        (self.sentinel_base..self.sentinel_base + self.sentinel_count).contains(&id)
    }
}

/// One component of the Dirichlet mixture: an alpha for every eligible domain, the same unless
/// `domains` says otherwise (the reference's per-modality `input_alphas` / `target_alphas`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirichletAlphas {
    pub input: f64,
    pub target: f64,
    /// Relative frequency of this component (the reference's `sampling_weights`); 1 if unset.
    #[serde(default = "unit_weight", skip_serializing_if = "is_unit_weight")]
    pub weight: f64,
    /// Per-domain overrides: a domain given alpha 0 never takes part on that side, so a
    /// component can bias the mixture towards a task (caption -> everything else, for example).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub domains: BTreeMap<String, DomainAlphas>,
}

/// One domain's alphas within a mixture component.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainAlphas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// A sequence given input tokens starts whole rather than span-masked (the reference's
    /// `keep: 'all'`); it is still cut down if it does not fit its budget.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_all: bool,
}

fn unit_weight() -> f64 {
    1.0
}

fn is_unit_weight(weight: &f64) -> bool {
    *weight == 1.0
}

impl DirichletAlphas {
    /// The same alphas for every domain, weight 1.
    pub fn symmetric(input: f64, target: f64) -> Self {
        Self {
            input,
            target,
            weight: 1.0,
            domains: BTreeMap::new(),
        }
    }

    fn input_alpha(&self, domain: &str) -> f64 {
        self.domains
            .get(domain)
            .and_then(|d| d.input)
            .unwrap_or(self.input)
    }

    fn target_alpha(&self, domain: &str) -> f64 {
        self.domains
            .get(domain)
            .and_then(|d| d.target)
            .unwrap_or(self.target)
    }

    fn keeps_all(&self, domain: &str) -> bool {
        self.domains.get(domain).is_some_and(|d| d.keep_all)
    }
}

/// Budgets and Dirichlet mixture of the objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskingConfig {
    /// Encoder tokens per sample, drawn uniformly from this inclusive range.
    pub input_tokens: [usize; 2],
    /// Decoder tokens per sample, drawn uniformly from this inclusive range.
    pub target_tokens: [usize; 2],
    /// Mixture components, one chosen per sample in proportion to its weight.
    pub alphas: Vec<DirichletAlphas>,
}

impl Default for MaskingConfig {
    /// 4M-21's all-to-all part of the mixture: symmetric alphas 0.01, 0.1, 1 and 10 for inputs
    /// and targets (`cfgs/default/4m/alphas_mixture/main/mix_mod21_all2allmix_*.yaml`), with the
    /// released 256 + 256 token budgets.
    fn default() -> Self {
        Self {
            input_tokens: [256, 256],
            target_tokens: [256, 256],
            alphas: [0.01, 0.1, 1.0, 10.0]
                .into_iter()
                .map(|a| DirichletAlphas::symmetric(a, a))
                .collect(),
        }
    }
}

impl MaskingConfig {
    pub fn validate(&self) -> Result<()> {
        let invalid = |field: &str, reason: &str| TrainError::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        };
        if self.input_tokens[0] > self.input_tokens[1] {
            return Err(invalid(
                "masking.input_tokens",
                "lower bound above upper bound",
            ));
        }
        if self.target_tokens[0] > self.target_tokens[1] || self.target_tokens[1] == 0 {
            return Err(invalid(
                "masking.target_tokens",
                "needs 0 < tokens and lower ≤ upper",
            ));
        }
        if self.alphas.is_empty() {
            return Err(invalid("masking.alphas", "needs at least one component"));
        }
        for (i, component) in self.alphas.iter().enumerate() {
            let alphas = std::iter::once(("input", component.input))
                .chain(std::iter::once(("target", component.target)))
                .map(|(side, alpha)| (format!("masking.alphas[{i}].{side}"), alpha))
                .chain(component.domains.iter().flat_map(|(domain, d)| {
                    [("input", d.input), ("target", d.target)]
                        .into_iter()
                        .filter_map(move |(side, alpha)| {
                            alpha.map(|a| {
                                (format!("masking.alphas[{i}].domains.{domain}.{side}"), a)
                            })
                        })
                }));
            for (field, alpha) in alphas {
                if !(alpha >= 0.0 && alpha.is_finite()) {
                    return Err(invalid(&field, "must be finite and not negative"));
                }
            }
            if !(component.weight > 0.0 && component.weight.is_finite()) {
                return Err(invalid(
                    &format!("masking.alphas[{i}].weight"),
                    "must be positive and finite",
                ));
            }
        }
        Ok(())
    }

    /// Refuse components that name domains the model lacks on that side, or that leave no domain
    /// to draw inputs or targets from.
    pub fn validate_domains(&self, inputs: &[String], targets: &[String]) -> Result<()> {
        for (i, component) in self.alphas.iter().enumerate() {
            let field = format!("masking.alphas[{i}]");
            for (domain, alphas) in &component.domains {
                let is_input = inputs.contains(domain);
                let is_target = targets.contains(domain);
                let misplaced = if !is_input && !is_target {
                    Some("is not a domain of the model")
                } else if !is_input && (alphas.input.is_some() || alphas.keep_all) {
                    Some("is not an input domain of the model")
                } else if !is_target && alphas.target.is_some() {
                    Some("is not a target domain of the model")
                } else if alphas.keep_all
                    && !modality_info(domain).is_some_and(ModalityInfo::is_sequence)
                {
                    // Image-like inputs are sampled token by token; there is no span to keep.
                    Some("keep_all applies only to sequence domains")
                } else {
                    None
                };
                if let Some(reason) = misplaced {
                    return Err(TrainError::InvalidConfig {
                        field: format!("{field}.domains.{domain}"),
                        reason: reason.into(),
                    });
                }
            }
            let has_input = inputs.iter().any(|d| component.input_alpha(d) > 0.0);
            let has_target = targets.iter().any(|d| component.target_alpha(d) > 0.0);
            for (side, present) in [("inputs", has_input), ("targets", has_target)] {
                if !present {
                    return Err(TrainError::InvalidConfig {
                        field: field.clone(),
                        reason: format!("gives no domain a positive alpha for {side}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Draw a component with probability proportional to its weight.
    fn choose_component(&self, rng: &mut TrainRng) -> &DirichletAlphas {
        let first = self.alphas[0].weight;
        if self.alphas.iter().all(|c| c.weight == first) {
            // Equal weights draw exactly as configs without weights always have, so their runs
            // (and resumed checkpoints) keep their random streams.
            return &self.alphas[rng.below(self.alphas.len())];
        }
        let total: f64 = self.alphas.iter().map(|c| c.weight).sum();
        let mut point = rng.uniform() * total;
        for component in &self.alphas {
            if point < component.weight {
                return component;
            }
            point -= component.weight;
        }
        self.alphas.last().expect("validated non-empty")
    }
}

/// How a domain is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainShape {
    /// Text-like, at most `max_tokens` tokens (with `[EOS]`).
    Sequence { max_tokens: usize },
    /// Image-like grid of exactly `tokens` ids.
    Grid { tokens: usize },
}

/// A domain taking part in the objective.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainPlan {
    pub name: String,
    pub shape: DomainShape,
    /// In the model's `domains_in` / `domains_out`.
    pub is_input: bool,
    pub is_target: bool,
    /// Weight of this domain's mean cross-entropy in the loss (see
    /// [`CoreTrainConfig::loss_weights`](crate::CoreTrainConfig::loss_weights)).
    pub loss_weight: f64,
}

impl DomainPlan {
    fn max_tokens(&self) -> usize {
        match self.shape {
            DomainShape::Sequence { max_tokens } => max_tokens,
            DomainShape::Grid { tokens } => tokens,
        }
    }
}

/// One domain of a masked sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedDomain {
    /// Encoder side: the whole grid for image-like domains, the span-masked input for sequences.
    pub encoder_ids: Vec<u32>,
    /// Which `encoder_ids` are fed to the encoder (every one for sequences).
    pub encoder_present: Vec<bool>,
    /// Decoder side. Grids: the target slots (ascending) and their ids. Sequences: positions are
    /// ranks `0..T` and the ids are the target sequence `[S_1] span [S_2] …`, of which the decoder
    /// is fed `ids[..T-1]` and predicts `ids[1..]` (teacher forcing).
    pub target_positions: Vec<usize>,
    pub target_ids: Vec<u32>,
}

/// Split `total` tokens with a Dirichlet sample (reference `input_token_budget`): floor the
/// proportional shares, give the remainder one token at a time to the argmax of fresh samples
/// (so domains with alpha 0 never get any), then clamp to each domain's maximum.
fn split_budget(rng: &mut TrainRng, alphas: &[f64], total: usize, max: &[usize]) -> Vec<usize> {
    if alphas.iter().all(|&a| a <= 0.0) {
        return vec![0; alphas.len()];
    }
    let shares = rng.dirichlet(alphas);
    let mut budget: Vec<usize> = shares
        .iter()
        .map(|s| (s * total as f64).floor() as usize)
        .collect();
    let assigned: usize = budget.iter().sum();
    for _ in assigned..total {
        let sample = rng.dirichlet(alphas);
        let best = (0..sample.len())
            .max_by(|&a, &b| sample[a].total_cmp(&sample[b]))
            .expect("at least one domain");
        budget[best] += 1;
    }
    budget.iter().zip(max).map(|(&b, &m)| b.min(m)).collect()
}

/// Reference `simple_span_masking` / `chunk_span_masking`: each chunk is kept with `keep_prob`;
/// every run of masked chunks becomes one sentinel in the input and `sentinel + chunks` in the
/// target, which ends with one more sentinel.
fn span_mask(
    chunks: &[Vec<u32>],
    keep_prob: f64,
    specials: &SequenceSpecials,
    rng: &mut TrainRng,
) -> (Vec<u32>, Vec<u32>) {
    let (mut input, mut target) = (Vec::new(), Vec::new());
    let mut previous_masked = false;
    let mut sentinels = 0;
    for chunk in chunks {
        // Reference: `rand <= keep_prob` keeps.
        let masked = rng.uniform() > keep_prob;
        if masked {
            if !previous_masked {
                sentinels += 1;
                input.push(specials.sentinel(sentinels));
                target.push(specials.sentinel(sentinels));
            }
            target.extend_from_slice(chunk);
        } else {
            input.extend_from_slice(chunk);
        }
        previous_masked = masked;
    }
    target.push(specials.sentinel(sentinels + 1));
    (input, target)
}

/// What one sequence domain gets of a sample's budgets.
struct SequenceBudget {
    input: usize,
    target: usize,
    /// Start from the whole sequence rather than a random keep probability.
    keep_all: bool,
}

/// Mask one sequence domain (reference `sequence_mask`).
fn mask_sequence(
    tokens: &DomainTokens,
    max_tokens: usize,
    budget: SequenceBudget,
    specials: &SequenceSpecials,
    rng: &mut TrainRng,
) -> MaskedDomain {
    // `[EOS]` is appended, then the sequence truncated to the domain's maximum (whole chunks).
    let chunks: Vec<Vec<u32>> = match tokens {
        DomainTokens::Sequence(ids) => {
            let mut ids = ids.clone();
            ids.push(specials.eos);
            ids.truncate(max_tokens);
            ids.into_iter().map(|id| vec![id]).collect()
        }
        DomainTokens::Chunks(chunks) => {
            // Chunk order carries no meaning (metadata fields); the reference's
            // `MetadataTransform(shuffle=True)` shuffles it for every sample in training.
            let mut chunks = chunks.clone();
            rng.shuffle(&mut chunks);
            let mut kept = Vec::new();
            let mut count = 0;
            for chunk in chunks.into_iter().chain([vec![specials.eos]]) {
                count += chunk.len();
                if count <= max_tokens {
                    kept.push(chunk);
                }
            }
            kept
        }
        DomainTokens::Grid(_) => unreachable!("checked before masking"),
    };
    let (input_budget, target_budget) = (budget.input, budget.target);
    let (input, mut target) = if input_budget == 0 {
        (Vec::new(), span_mask(&chunks, 0.0, specials, rng).1)
    } else {
        let mut keep_prob = if budget.keep_all { 1.0 } else { rng.uniform() };
        let mut masked = span_mask(&chunks, keep_prob, specials, rng);
        // Reference: lower the keep probability by 0.9 until the input fits its budget.
        while masked.0.len() > input_budget {
            keep_prob *= 0.9;
            masked = span_mask(&chunks, keep_prob, specials, rng);
        }
        masked
    };
    if target.len() > target_budget {
        // Reference: start at a random sentinel (not the final one when there are several) and cut
        // to the budget, or, if what follows it already fits, at the earliest sentinel that fits.
        let sentinel_at: Vec<usize> = (0..target.len())
            .filter(|&i| specials.is_sentinel(target[i]))
            .collect();
        let chosen = sentinel_at[rng.below(sentinel_at.len().saturating_sub(1).max(1))];
        target = if target.len() - chosen >= target_budget {
            target[chosen..chosen + target_budget].to_vec()
        } else {
            let start = sentinel_at
                .iter()
                .copied()
                .find(|&i| target.len() - i <= target_budget)
                .expect("the final sentinel always fits a non-zero budget");
            target[start..].to_vec()
        };
    }
    MaskedDomain {
        encoder_present: vec![true; input.len()],
        encoder_ids: input,
        target_positions: (0..target.len()).collect(),
        target_ids: target,
    }
}

/// Mask one grid (reference `image_mask`): a random permutation; its first `input_budget` slots
/// are inputs, the next `target_budget` targets.
fn mask_grid(
    ids: &[u32],
    input_budget: usize,
    target_budget: usize,
    rng: &mut TrainRng,
) -> MaskedDomain {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    rng.shuffle(&mut order);
    let mut encoder_present = vec![false; ids.len()];
    for &slot in &order[..input_budget] {
        encoder_present[slot] = true;
    }
    let mut target_positions = order[input_budget..input_budget + target_budget].to_vec();
    target_positions.sort_unstable();
    MaskedDomain {
        encoder_ids: ids.to_vec(),
        encoder_present,
        target_ids: target_positions.iter().map(|&p| ids[p]).collect(),
        target_positions,
    }
}

/// Mask one sample: `tokens[i]` belongs to `plans[i]`. Returns one masked domain per plan.
pub fn mask_sample(
    plans: &[DomainPlan],
    tokens: &[&DomainTokens],
    config: &MaskingConfig,
    specials: &SequenceSpecials,
    rng: &mut TrainRng,
) -> Vec<MaskedDomain> {
    let component = config.choose_component(rng);
    let input_total = rng.range_inclusive(config.input_tokens[0], config.input_tokens[1]);
    let target_total = rng.range_inclusive(config.target_tokens[0], config.target_tokens[1]);
    let max: Vec<usize> = plans.iter().map(DomainPlan::max_tokens).collect();
    let input_alphas: Vec<f64> = plans
        .iter()
        .map(|p| {
            if p.is_input {
                component.input_alpha(&p.name)
            } else {
                0.0
            }
        })
        .collect();
    let input_budget = split_budget(rng, &input_alphas, input_total, &max);
    // Reference `target_token_budget`: image targets only come from slots that are not inputs;
    // sequences are not reduced (their targets are the masked spans).
    let target_max: Vec<usize> = plans
        .iter()
        .zip(&input_budget)
        .map(|(p, &used)| match p.shape {
            DomainShape::Grid { tokens } => tokens - used,
            DomainShape::Sequence { max_tokens } => max_tokens,
        })
        .collect();
    let target_alphas: Vec<f64> = plans
        .iter()
        .map(|p| {
            if p.is_target {
                component.target_alpha(&p.name)
            } else {
                0.0
            }
        })
        .collect();
    let target_budget = split_budget(rng, &target_alphas, target_total, &target_max);
    plans
        .iter()
        .zip(tokens)
        .enumerate()
        .map(|(i, (plan, tokens))| match (plan.shape, tokens) {
            (DomainShape::Grid { .. }, DomainTokens::Grid(ids)) => {
                mask_grid(ids, input_budget[i], target_budget[i], rng)
            }
            (DomainShape::Sequence { max_tokens }, tokens) => mask_sequence(
                tokens,
                max_tokens,
                SequenceBudget {
                    input: input_budget[i],
                    target: target_budget[i],
                    keep_all: component.keeps_all(&plan.name),
                },
                specials,
                rng,
            ),
            _ => unreachable!("sample shapes are checked before masking"),
        })
        .collect()
}
