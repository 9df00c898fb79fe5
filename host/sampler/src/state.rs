//! The generation state (the reference's mod dict): per domain and batch row, token ids, an input
//! mask and a target mask, with the reference's initialisers, guidance blanking, token commits and
//! the span merge after autoregressive decoding.
//!
//! Mask convention as in the reference: `input_mask[i] == false` ⇒ token `i` is an encoder input;
//! `target_mask[i] == false` ⇒ token `i` still has to be predicted. Everything is plain `Vec`s,
//! batch-first, so the model crate can convert to tensors without this crate knowing candle.
//! For domains whose data is not token ids (pixels, embeddings) the token ids are zeros and the
//! model keeps the data; the masks are still authoritative.

use crate::error::{DomainRole, SamplerError};
use crate::validate::{DomainCatalog, DomainKind};

/// Special ids of the 4M text tokenizer that generation relies on.
pub mod text_ids {
    /// `[PAD]`.
    pub const PAD: u32 = 0;
    /// `[EOS]`.
    pub const EOS: u32 = 3;
    /// `[S_0]`, the first sentinel; sentinel `[S_i]` is `4 + i`.
    pub const FIRST_SENTINEL: u32 = 4;
    /// `[S_199]`, the last sentinel.
    pub const LAST_SENTINEL: u32 = 203;
    /// `[S_1]`: starts a span to generate.
    pub const S1: u32 = 5;
    /// `[S_2]`: ends an empty-initialised sequence target (its end token).
    pub const S2: u32 = 6;

    /// Whether `id` is a sentinel `[S_i]`.
    pub fn is_sentinel(id: u32) -> bool {
        (FIRST_SENTINEL..=LAST_SENTINEL).contains(&id)
    }
}

/// One batch row of one modality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModalityRow {
    pub tokens: Vec<u32>,
    /// `false` ⇒ encoder input.
    pub input_mask: Vec<bool>,
    /// `false` ⇒ still to be predicted.
    pub target_mask: Vec<bool>,
}

impl ModalityRow {
    /// A row whose three vectors have equal lengths.
    pub fn new(
        tokens: Vec<u32>,
        input_mask: Vec<bool>,
        target_mask: Vec<bool>,
    ) -> Result<Self, SamplerError> {
        if tokens.len() != input_mask.len() || tokens.len() != target_mask.len() {
            return Err(SamplerError::InvalidModalityState {
                reason: format!(
                    "row with {} tokens, {} input mask and {} target mask entries",
                    tokens.len(),
                    input_mask.len(),
                    target_mask.len()
                ),
            });
        }
        Ok(Self {
            tokens,
            input_mask,
            target_mask,
        })
    }

    fn uniform(tokens: Vec<u32>, input: bool, target: bool) -> Self {
        let length = tokens.len();
        Self {
            tokens,
            input_mask: vec![input; length],
            target_mask: vec![target; length],
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The encoder input tokens (input mask false), in position order.
    pub fn input_tokens(&self) -> Vec<u32> {
        self.tokens
            .iter()
            .zip(&self.input_mask)
            .filter(|(_, masked)| !**masked)
            .map(|(&t, _)| t)
            .collect()
    }

    /// Positions still to be predicted (target mask false), ascending.
    pub fn target_positions(&self) -> Vec<usize> {
        self.target_mask
            .iter()
            .enumerate()
            .filter(|(_, done)| !**done)
            .map(|(i, _)| i)
            .collect()
    }
}

/// One modality for the whole batch: at least one row, all rows of the same width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModalityState {
    rows: Vec<ModalityRow>,
}

fn check_batch(batch_size: usize) -> Result<(), SamplerError> {
    if batch_size == 0 {
        Err(SamplerError::EmptyBatch)
    } else {
        Ok(())
    }
}

impl ModalityState {
    /// Checks the rows: at least one, all of one width.
    pub fn from_rows(rows: Vec<ModalityRow>) -> Result<Self, SamplerError> {
        let Some(first) = rows.first() else {
            return Err(SamplerError::EmptyBatch);
        };
        let width = first.len();
        for (index, row) in rows.iter().enumerate() {
            if row.input_mask.len() != row.len() || row.target_mask.len() != row.len() {
                return Err(SamplerError::InvalidModalityState {
                    reason: format!(
                        "row {index} has {} tokens, {} input mask and {} target mask entries",
                        row.len(),
                        row.input_mask.len(),
                        row.target_mask.len()
                    ),
                });
            }
            if row.len() != width {
                return Err(SamplerError::InvalidModalityState {
                    reason: format!("row {index} has {} positions, row 0 has {width}", row.len()),
                });
            }
        }
        Ok(Self { rows })
    }

    pub fn rows(&self) -> &[ModalityRow] {
        &self.rows
    }

    pub fn batch_size(&self) -> usize {
        self.rows.len()
    }

    /// Positions per row.
    pub fn width(&self) -> usize {
        self.rows[0].len()
    }

    /// Token ids, row-major `batch × width` (for building a tensor).
    pub fn flat_tokens(&self) -> Vec<u32> {
        self.rows
            .iter()
            .flat_map(|row| row.tokens.iter().copied())
            .collect()
    }

    /// Input mask, row-major `batch × width`.
    pub fn flat_input_mask(&self) -> Vec<bool> {
        self.rows
            .iter()
            .flat_map(|row| row.input_mask.iter().copied())
            .collect()
    }

    /// Target mask, row-major `batch × width`.
    pub fn flat_target_mask(&self) -> Vec<bool> {
        self.rows
            .iter()
            .flat_map(|row| row.target_mask.iter().copied())
            .collect()
    }

    /// Whether nothing is left to predict (every target mask entry true).
    pub fn is_finished(&self) -> bool {
        self.rows
            .iter()
            .all(|row| row.target_mask.iter().all(|&done| done))
    }

    /// Image-like target to generate: `num_tokens` zeros, nothing input, everything to predict.
    /// `num_tokens` must be the domain's grid size (checked by plan validation).
    pub fn empty_image_target(batch_size: usize, num_tokens: usize) -> Result<Self, SamplerError> {
        check_batch(batch_size)?;
        Ok(Self {
            rows: vec![ModalityRow::uniform(vec![0; num_tokens], true, false); batch_size],
        })
    }

    /// Sequence target to generate, `max(num_tokens, 2)` long: `[S_1] [S_1] 0 … 0 [S_2]`, only the
    /// first `[S_1]` is input, every other position is a target (the leading target `[S_1]` starts
    /// decoding, the final `[S_2]` is the end token).
    pub fn empty_sequence_target(
        batch_size: usize,
        num_tokens: usize,
    ) -> Result<Self, SamplerError> {
        check_batch(batch_size)?;
        Ok(Self {
            rows: vec![empty_sequence_row(num_tokens.max(2)); batch_size],
        })
    }

    /// Empty sequence of embeddings (`seq_emb`), `max(length, 2)` long: zeros, only position 0 is
    /// input (one zero
    /// embedding, which the reference needs for guidance to work), nothing to predict.
    pub fn empty_sequence_embedding(
        batch_size: usize,
        length: usize,
    ) -> Result<Self, SamplerError> {
        check_batch(batch_size)?;
        // The reference gives every empty sequence-like target at least two positions.
        let length = length.max(2);
        Ok(Self {
            rows: vec![empty_sequence_embedding_row(length); batch_size],
        })
    }

    /// Image-like full input (tokens, or zeros for pixel domains): everything input, nothing to predict.
    pub fn full_input_image_like(token_rows: Vec<Vec<u32>>) -> Result<Self, SamplerError> {
        Self::from_rows(
            token_rows
                .into_iter()
                .map(|tokens| ModalityRow::uniform(tokens, false, true))
                .collect(),
        )
    }

    /// Pixel input (`rgb@*`) of `num_patches = (H / p) * (W / p)` positions: masks only.
    pub fn full_input_pixels(batch_size: usize, num_patches: usize) -> Result<Self, SamplerError> {
        check_batch(batch_size)?;
        Ok(Self {
            rows: vec![ModalityRow::uniform(vec![0; num_patches], false, true); batch_size],
        })
    }

    /// Sequence full input: tokens up to and including the first `[EOS]` are input (its column is
    /// the first occurrence in row-major order, applied to every row, as in the reference); without
    /// any `[EOS]` position 0 of every row is overwritten with `[EOS]` and is the only input.
    /// Nothing is to be predicted.
    pub fn full_input_sequence(token_rows: Vec<Vec<u32>>) -> Result<Self, SamplerError> {
        let mut state = Self::full_input_image_like(token_rows)?;
        if state.width() == 0 {
            return Err(SamplerError::InvalidModalityState {
                reason: "empty sequence input".into(),
            });
        }
        let eos_column = state
            .rows
            .iter()
            .find_map(|row| row.tokens.iter().position(|&t| t == text_ids::EOS));
        let eos_column = match eos_column {
            Some(column) => column,
            None => {
                for row in &mut state.rows {
                    row.tokens[0] = text_ids::EOS;
                }
                0
            }
        };
        for row in &mut state.rows {
            for (position, masked) in row.input_mask.iter_mut().enumerate() {
                *masked = position > eos_column;
            }
        }
        Ok(state)
    }

    /// Embedding sequence input (`t5_caption`): input where valid, nothing to predict.
    pub fn full_input_embedding(valid_rows: Vec<Vec<bool>>) -> Result<Self, SamplerError> {
        Self::from_rows(
            valid_rows
                .into_iter()
                .map(|valid| {
                    let length = valid.len();
                    ModalityRow {
                        tokens: vec![0; length],
                        input_mask: valid.iter().map(|&v| !v).collect(),
                        target_mask: vec![true; length],
                    }
                })
                .collect(),
        )
    }

    /// A text condition with a span to complete (the reference's `custom_text`), batch 1:
    /// `input_ids` (the encoded text, e.g. ending in `[S_1]`) are encoder inputs, followed by the
    /// target `start [PAD] … [PAD] end`, `max(target_length, 2)` ids, all to predict.
    pub fn custom_text(
        input_ids: &[u32],
        start_token: u32,
        end_token: u32,
        target_length: usize,
    ) -> Self {
        let target_length = target_length.max(2);
        let mut tokens = input_ids.to_vec();
        tokens.push(start_token);
        tokens.extend(std::iter::repeat_n(text_ids::PAD, target_length - 2));
        tokens.push(end_token);
        let input_length = input_ids.len();
        let input_mask = (0..tokens.len()).map(|i| i >= input_length).collect();
        let target_mask = (0..tokens.len()).map(|i| i < input_length).collect();
        Self {
            rows: vec![ModalityRow {
                tokens,
                input_mask,
                target_mask,
            }],
        }
    }

    /// Repeats a batch-1 state to `batch_size` rows (the reference's `expand_to_batch`).
    pub fn expand_to_batch(&self, batch_size: usize) -> Result<Self, SamplerError> {
        check_batch(batch_size)?;
        match self.batch_size() {
            size if size == batch_size => Ok(self.clone()),
            1 => Ok(Self {
                rows: vec![self.rows[0].clone(); batch_size],
            }),
            size => Err(SamplerError::InvalidModalityState {
                reason: format!("cannot expand batch size {size} to {batch_size}"),
            }),
        }
    }

    /// Commits decoded tokens: per row, writes `tokens[i]` at `positions[i]` and makes it an
    /// input that is no longer a target.
    pub fn commit(
        &mut self,
        positions: &[Vec<usize>],
        tokens: &[Vec<u32>],
    ) -> Result<(), SamplerError> {
        let batch_size = self.batch_size();
        for (what, len) in [
            ("commit positions", positions.len()),
            ("commit tokens", tokens.len()),
        ] {
            if len != batch_size {
                return Err(SamplerError::LengthMismatch {
                    what,
                    len,
                    expected: batch_size,
                });
            }
        }
        let width = self.width();
        for (row, (row_positions, row_tokens)) in positions.iter().zip(tokens).enumerate() {
            if row_positions.len() != row_tokens.len() {
                return Err(SamplerError::LengthMismatch {
                    what: "tokens committed to a row",
                    len: row_tokens.len(),
                    expected: row_positions.len(),
                });
            }
            if let Some(&outside) = row_positions.iter().find(|&&p| p >= width) {
                return Err(SamplerError::InvalidModalityState {
                    reason: format!("row {row}: commit position {outside} outside width {width}"),
                });
            }
        }
        for (row, (row_positions, row_tokens)) in
            self.rows.iter_mut().zip(positions.iter().zip(tokens))
        {
            for (&position, &token) in row_positions.iter().zip(row_tokens) {
                row.tokens[position] = token;
                row.input_mask[position] = false;
                row.target_mask[position] = true;
            }
        }
        Ok(())
    }

    /// The unconditional-pass version of this modality for guidance: image-like ⇒ nothing input
    /// (may leave zero encoder tokens); `seq` ⇒ `[S_1] [S_1] 0 … 0 [S_2]` at the same width with
    /// only the first `[S_1]` input; `seq_emb` ⇒ zeros with only position 0 input.
    /// `domain` only names the modality in errors.
    pub fn blanked(&self, domain: &str, kind: DomainKind) -> Result<Self, SamplerError> {
        let width = self.width();
        let cannot = |reason: String| SamplerError::CannotBlank {
            domain: domain.to_owned(),
            kind,
            reason,
        };
        let row = match kind {
            DomainKind::Image => {
                return Ok(Self {
                    rows: self
                        .rows
                        .iter()
                        .map(|row| ModalityRow {
                            tokens: row.tokens.clone(),
                            input_mask: vec![true; width],
                            target_mask: vec![false; width],
                        })
                        .collect(),
                });
            }
            DomainKind::Sequence | DomainKind::SequenceToken => {
                if width < 2 {
                    return Err(cannot(format!(
                        "an empty sequence needs 2 positions, this one has {width}"
                    )));
                }
                empty_sequence_row(width)
            }
            DomainKind::SequenceEmbedding => {
                if width < 1 {
                    return Err(cannot(
                        "an empty embedding sequence needs 1 position".into(),
                    ));
                }
                empty_sequence_embedding_row(width)
            }
        };
        Ok(Self {
            rows: vec![row; self.batch_size()],
        })
    }

    /// What autoregressive decoding of this (sequence) modality needs, from row 0 as in the
    /// reference: the start token (first target token), the end token (last target token: `[S_2]`
    /// for empty targets, `[EOS]` for `custom_text` targets) and the number of iterations,
    /// `min(max_tokens, number of target slots)`.
    pub fn autoregressive_target(
        &self,
        domain: &str,
        max_tokens: usize,
    ) -> Result<AutoregressiveTarget, SamplerError> {
        let row = &self.rows[0];
        let positions = row.target_positions();
        let (Some(&first), Some(&last)) = (positions.first(), positions.last()) else {
            return Err(SamplerError::NoTargetPositions {
                domain: domain.to_owned(),
            });
        };
        for (index, other) in self.rows.iter().enumerate().skip(1) {
            let count = other.target_positions().len();
            if count != positions.len() {
                return Err(SamplerError::InvalidModalityState {
                    reason: format!(
                        "row {index} has {count} target positions, row 0 has {}",
                        positions.len()
                    ),
                });
            }
        }
        Ok(AutoregressiveTarget {
            start_token: row.tokens[first],
            end_token: row.tokens[last],
            max_iterations: max_tokens.min(positions.len()),
            target_positions: positions,
        })
    }

    /// The modality after autoregressive decoding: per row, the decoded stream (starting with the
    /// leading `[S_1]`) is merged into the row's input tokens by sentinel spans (see
    /// [`merge_span_masking`]; `[S_1]` alone if the row has no input), rows are right-padded with
    /// `[PAD]` (input and target mask true). Valid tokens become inputs; the target mask equals the
    /// input mask (a reference quirk the fixtures keep) rather than all true.
    pub fn merged_after_autoregression(&self, streams: &[Vec<u32>]) -> Result<Self, SamplerError> {
        if streams.len() != self.batch_size() {
            return Err(SamplerError::LengthMismatch {
                what: "autoregressive streams",
                len: streams.len(),
                expected: self.batch_size(),
            });
        }
        let merged: Vec<Vec<u32>> = self
            .rows
            .iter()
            .zip(streams)
            .map(|(row, stream)| {
                let mut inputs = row.input_tokens();
                if inputs.is_empty() {
                    inputs.push(text_ids::S1);
                }
                merge_span_masking(&inputs, stream, text_ids::is_sentinel)
            })
            .collect();
        let width = merged.iter().map(Vec::len).max().unwrap_or(0);
        let rows = merged
            .into_iter()
            .map(|mut tokens| {
                let valid = tokens.len();
                tokens.resize(width, text_ids::PAD);
                let mask: Vec<bool> = (0..width).map(|i| i >= valid).collect();
                ModalityRow {
                    tokens,
                    input_mask: mask.clone(),
                    target_mask: mask,
                }
            })
            .collect();
        Ok(Self { rows })
    }
}

fn empty_sequence_row(length: usize) -> ModalityRow {
    let mut tokens = vec![0; length];
    tokens[0] = text_ids::S1;
    tokens[1] = text_ids::S1;
    tokens[length - 1] = text_ids::S2;
    let input_mask: Vec<bool> = (0..length).map(|i| i != 0).collect();
    let target_mask = input_mask.iter().map(|&m| !m).collect();
    ModalityRow {
        tokens,
        input_mask,
        target_mask,
    }
}

fn empty_sequence_embedding_row(length: usize) -> ModalityRow {
    ModalityRow {
        tokens: vec![0; length],
        input_mask: (0..length).map(|i| i != 0).collect(),
        target_mask: vec![true; length],
    }
}

/// What the autoregressive loop needs to know about its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoregressiveTarget {
    /// First token of the decoded stream (the leading target `[S_1]`).
    pub start_token: u32,
    /// Decoding stops once every row's stream contains it.
    pub end_token: u32,
    /// Upper bound on decoded tokens.
    pub max_iterations: usize,
    /// Target positions of row 0, ascending (their rank is the decoder position).
    pub target_positions: Vec<usize>,
}

/// Span merge (the reference's `merge_span_masking`): the decoded stream is split at sentinels;
/// each sentinel of `inputs` is replaced by every token that followed that sentinel anywhere in
/// the stream (a repeated sentinel appends to the same span); tokens before the first sentinel or
/// after a sentinel absent from `inputs` are dropped.
pub fn merge_span_masking(
    inputs: &[u32],
    stream: &[u32],
    is_sentinel: impl Fn(u32) -> bool,
) -> Vec<u32> {
    let mut spans: Vec<(u32, Vec<u32>)> = Vec::new();
    let mut current: Option<u32> = None;
    for &token in stream {
        if is_sentinel(token) {
            current = Some(token);
        } else if let Some(sentinel) = current {
            match spans.iter_mut().find(|(s, _)| *s == sentinel) {
                Some((_, span)) => span.push(token),
                None => spans.push((sentinel, vec![token])),
            }
        }
    }
    let mut merged = Vec::new();
    for &token in inputs {
        if is_sentinel(token) {
            if let Some((_, span)) = spans.iter().find(|(s, _)| *s == token) {
                merged.extend_from_slice(span);
            }
        } else {
            merged.push(token);
        }
    }
    merged
}

/// The generation state: modalities in insertion order (the order matters to the model, which
/// concatenates encoder inputs in this order), all with the same batch size.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GenerationState {
    modalities: Vec<(String, ModalityState)>,
}

impl GenerationState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a modality at the end, or replaces it in place; the batch size must match the others.
    pub fn insert(
        &mut self,
        domain: impl Into<String>,
        modality: ModalityState,
    ) -> Result<(), SamplerError> {
        let domain = domain.into();
        if let Some(expected) = self.batch_size() {
            let only_this = self.modalities.len() == 1 && self.modalities[0].0 == domain;
            if modality.batch_size() != expected && !only_this {
                return Err(SamplerError::BatchSizeMismatch {
                    domain,
                    found: modality.batch_size(),
                    expected,
                });
            }
        }
        match self.modalities.iter_mut().find(|(name, _)| *name == domain) {
            Some((_, existing)) => *existing = modality,
            None => self.modalities.push((domain, modality)),
        }
        Ok(())
    }

    /// The common batch size (`None` while empty).
    pub fn batch_size(&self) -> Option<usize> {
        self.modalities.first().map(|(_, m)| m.batch_size())
    }

    pub fn get(&self, domain: &str) -> Option<&ModalityState> {
        self.modalities
            .iter()
            .find(|(name, _)| name == domain)
            .map(|(_, m)| m)
    }

    pub fn get_mut(&mut self, domain: &str) -> Option<&mut ModalityState> {
        self.modalities
            .iter_mut()
            .find(|(name, _)| name == domain)
            .map(|(_, m)| m)
    }

    /// The modality, or an error naming it.
    pub fn require(&self, domain: &str) -> Result<&ModalityState, SamplerError> {
        self.get(domain)
            .ok_or_else(|| SamplerError::MissingModality {
                domain: domain.to_owned(),
            })
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &ModalityState)> {
        self.modalities.iter().map(|(name, m)| (name.as_str(), m))
    }

    pub fn remove(&mut self, domain: &str) -> Option<ModalityState> {
        let index = self
            .modalities
            .iter()
            .position(|(name, _)| name == domain)?;
        Some(self.modalities.remove(index).1)
    }

    /// The unconditional state for classifier-free guidance: every modality of
    /// `condition_domains` present in the state is blanked by its kind; others (including the
    /// current and future targets) are unchanged. Condition domains absent from the state are
    /// skipped, but they must be known to the catalog.
    pub fn unconditional(
        &self,
        condition_domains: &[String],
        catalog: &DomainCatalog,
    ) -> Result<Self, SamplerError> {
        let mut blanked = self.clone();
        for domain in condition_domains {
            let info = catalog.lookup(domain, DomainRole::GuidanceCondition)?;
            if let Some(modality) = blanked.get_mut(domain) {
                *modality = modality.blanked(domain, info.kind)?;
            }
        }
        Ok(blanked)
    }

    /// Checks every modality against the catalog (known domain).
    pub fn validate_domains(&self, catalog: &DomainCatalog) -> Result<(), SamplerError> {
        for (domain, _) in &self.modalities {
            catalog.lookup(domain, DomainRole::State)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::DomainInfo;

    #[test]
    fn empty_sequence_target_layout() {
        let state = ModalityState::empty_sequence_target(2, 6).unwrap();
        let row = &state.rows()[1];
        assert_eq!(row.tokens, vec![5, 5, 0, 0, 0, 6]);
        assert_eq!(row.input_mask, vec![false, true, true, true, true, true]);
        assert_eq!(
            row.target_mask,
            vec![true, false, false, false, false, false]
        );
        assert_eq!(
            ModalityState::empty_sequence_target(1, 1).unwrap().rows()[0].tokens,
            vec![5, 6]
        );
        let ar = state.autoregressive_target("caption", 256).unwrap();
        assert_eq!((ar.start_token, ar.end_token, ar.max_iterations), (5, 6, 5));
        assert_eq!(
            state
                .autoregressive_target("caption", 3)
                .unwrap()
                .max_iterations,
            3
        );
    }

    #[test]
    fn empty_image_target_layout() {
        let state = ModalityState::empty_image_target(1, 4).unwrap();
        assert_eq!(
            state.rows()[0],
            ModalityRow::uniform(vec![0; 4], true, false)
        );
        assert!(!state.is_finished());
        assert_eq!(
            ModalityState::empty_image_target(0, 4),
            Err(SamplerError::EmptyBatch)
        );
    }

    #[test]
    fn full_input_sequence_stops_at_first_eos() {
        let state = ModalityState::full_input_sequence(vec![
            vec![10, 11, 3, 12, 3],
            vec![20, 21, 22, 23, 24],
        ])
        .unwrap();
        for row in state.rows() {
            assert_eq!(row.input_mask, vec![false, false, false, true, true]);
            assert_eq!(row.target_mask, vec![true; 5]);
        }
        // The column comes from the first EOS in row-major order, here in row 1.
        let state =
            ModalityState::full_input_sequence(vec![vec![10, 11, 12], vec![20, 3, 22]]).unwrap();
        assert_eq!(state.rows()[0].input_mask, vec![false, false, true]);
    }

    #[test]
    fn full_input_sequence_without_eos_overwrites_position_zero() {
        let state = ModalityState::full_input_sequence(vec![vec![10, 11, 12]]).unwrap();
        assert_eq!(state.rows()[0].tokens, vec![3, 11, 12]);
        assert_eq!(state.rows()[0].input_mask, vec![false, true, true]);
    }

    #[test]
    fn custom_text_layout() {
        // "a photo [S_1]" encoded as three ids, then "[S_1] [PAD] [PAD] [EOS]".
        let state = ModalityState::custom_text(&[100, 101, 5], 5, 3, 4);
        let row = &state.rows()[0];
        assert_eq!(row.tokens, vec![100, 101, 5, 5, 0, 0, 3]);
        assert_eq!(
            row.input_mask,
            vec![false, false, false, true, true, true, true]
        );
        assert_eq!(
            row.target_mask,
            vec![true, true, true, false, false, false, false]
        );
        let ar = state.autoregressive_target("caption", 256).unwrap();
        assert_eq!((ar.start_token, ar.end_token, ar.max_iterations), (5, 3, 4));
        assert_eq!(ModalityState::custom_text(&[], 5, 3, 50).width(), 50);
    }

    #[test]
    fn merge_replaces_sentinels_with_their_spans() {
        // Sentinels are ids 4..=203, so content ids here are >= 1000.
        // Empty-initialised target: input [S_1]; everything after the end sentinel is dropped.
        assert_eq!(
            merge_span_masking(&[5], &[5, 1040, 1041, 6, 1042], text_ids::is_sentinel),
            vec![1040, 1041]
        );
        // Infilling: the span after [S_1] (ending in [EOS], not a sentinel) fills the input's [S_1].
        assert_eq!(
            merge_span_masking(&[1100, 5], &[5, 1040, 3], text_ids::is_sentinel),
            vec![1100, 1040, 3]
        );
        // A repeated sentinel appends to the same span; tokens before the first sentinel and
        // after an unknown sentinel are dropped; an input sentinel without a span vanishes.
        assert_eq!(
            merge_span_masking(&[5, 1100, 7], &[9, 5, 1, 8, 2, 5, 3], text_ids::is_sentinel),
            vec![1, 3, 1100]
        );
    }

    #[test]
    fn merged_rows_are_padded_and_become_inputs() {
        let state = ModalityState::empty_sequence_target(2, 5).unwrap();
        let merged = state
            .merged_after_autoregression(&[vec![5, 1040, 1041, 6], vec![5, 1050, 6, 7]])
            .unwrap();
        assert_eq!(merged.rows()[0].tokens, vec![1040, 1041]);
        assert_eq!(merged.rows()[1].tokens, vec![1050, 0]);
        assert_eq!(merged.rows()[1].input_mask, vec![false, true]);
        // Reference quirk: the target mask equals the input mask.
        assert_eq!(merged.rows()[1].target_mask, vec![false, true]);
    }

    #[test]
    fn commit_marks_positions_done() {
        let mut state = ModalityState::empty_image_target(1, 4).unwrap();
        state.commit(&[vec![2, 0]], &[vec![9, 8]]).unwrap();
        assert_eq!(state.rows()[0].tokens, vec![8, 0, 9, 0]);
        assert_eq!(state.rows()[0].input_mask, vec![false, true, false, true]);
        assert_eq!(state.rows()[0].target_mask, vec![true, false, true, false]);
        assert!(state.commit(&[vec![4]], &[vec![1]]).is_err());
    }

    #[test]
    fn unconditional_blanks_only_the_conditions() {
        let catalog = DomainCatalog::new()
            .with(
                "caption",
                DomainInfo {
                    kind: DomainKind::Sequence,
                    num_tokens: 256,
                    generatable: true,
                },
            )
            .with(
                "tok_rgb@224",
                DomainInfo {
                    kind: DomainKind::Image,
                    num_tokens: 4,
                    generatable: true,
                },
            )
            .with(
                "t5_caption",
                DomainInfo {
                    kind: DomainKind::SequenceEmbedding,
                    num_tokens: 3,
                    generatable: false,
                },
            );
        let mut state = GenerationState::new();
        state
            .insert(
                "caption",
                ModalityState::full_input_sequence(vec![vec![10, 11, 3, 0]]).unwrap(),
            )
            .unwrap();
        state
            .insert(
                "tok_rgb@224",
                ModalityState::empty_image_target(1, 4).unwrap(),
            )
            .unwrap();
        state
            .insert(
                "t5_caption",
                ModalityState::full_input_embedding(vec![vec![true, true, false]]).unwrap(),
            )
            .unwrap();
        let conditions = vec!["caption".to_owned(), "t5_caption".to_owned()];
        let blank = state.unconditional(&conditions, &catalog).unwrap();
        assert_eq!(
            blank.get("caption").unwrap().rows()[0].tokens,
            vec![5, 5, 0, 6]
        );
        assert_eq!(
            blank.get("caption").unwrap().rows()[0].input_mask,
            vec![false, true, true, true]
        );
        assert_eq!(
            blank.get("t5_caption").unwrap().rows()[0].input_mask,
            vec![false, true, true]
        );
        assert_eq!(blank.get("tok_rgb@224"), state.get("tok_rgb@224"));
        assert!(matches!(
            state.unconditional(&["nope".to_owned()], &catalog),
            Err(SamplerError::UnknownDomain { .. })
        ));
        let short = ModalityState::full_input_sequence(vec![vec![3]]).unwrap();
        assert!(matches!(
            short.blanked("caption", DomainKind::Sequence),
            Err(SamplerError::CannotBlank { .. })
        ));
        assert!(matches!(
            state.insert("other", ModalityState::empty_image_target(2, 4).unwrap()),
            Err(SamplerError::BatchSizeMismatch { .. })
        ));
    }
}
