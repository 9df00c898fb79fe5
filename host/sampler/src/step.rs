//! The model-independent end of a MaskGIT or ROAR step: from the (guided) logits of the decoder
//! queries to the tokens committed into the generation state.

use crate::error::SamplerError;
use crate::logits::{SamplingOptions, row_count};
use crate::random::RandomSource;
use crate::sample::{sample_rows, select_most_confident};
use crate::state::ModalityState;

/// Tokens to write into a modality, per batch row (positions and tokens pair up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepCommit {
    pub positions: Vec<Vec<usize>>,
    pub tokens: Vec<Vec<u32>>,
}

impl StepCommit {
    /// Writes the tokens and marks their positions as decoded inputs.
    pub fn apply(&self, modality: &mut ModalityState) -> Result<(), SamplerError> {
        modality.commit(&self.positions, &self.tokens)
    }
}

/// Samples `batch × queries` rows of logits (batch-major, like the reference's flatten of
/// `(B, N, V)`), checking the shape.
fn sample_queries(
    logits: &[f32],
    vocab: usize,
    batch_size: usize,
    queries: usize,
    temperature: f64,
    options: &SamplingOptions,
    source: &mut dyn RandomSource,
) -> Result<Vec<crate::sample::SampledToken>, SamplerError> {
    let rows = row_count(logits, vocab, "query logits")?;
    if rows != batch_size * queries {
        return Err(SamplerError::LengthMismatch {
            what: "query logit rows",
            len: rows,
            expected: batch_size * queries,
        });
    }
    sample_rows(logits, vocab, temperature, options, source)
}

/// MaskGIT: every masked position was a query (`query_positions[b]`, ascending, the same count in
/// every row); sample them all and commit the `num_select` most confident per row (confidence =
/// probability of the sampled token, no Gumbel noise; ties go to the earlier query).
pub fn maskgit_commit(
    logits: &[f32],
    vocab: usize,
    query_positions: &[Vec<usize>],
    num_select: usize,
    temperature: f64,
    options: &SamplingOptions,
    source: &mut dyn RandomSource,
) -> Result<StepCommit, SamplerError> {
    let batch_size = query_positions.len();
    let queries = query_positions.first().map_or(0, Vec::len);
    if let Some(row) = query_positions.iter().find(|row| row.len() != queries) {
        return Err(SamplerError::LengthMismatch {
            what: "MaskGIT queries of a row",
            len: row.len(),
            expected: queries,
        });
    }
    let sampled = sample_queries(
        logits,
        vocab,
        batch_size,
        queries,
        temperature,
        options,
        source,
    )?;
    let mut commit = StepCommit {
        positions: Vec::with_capacity(batch_size),
        tokens: Vec::with_capacity(batch_size),
    };
    for (row, row_positions) in query_positions.iter().enumerate() {
        let row_samples = &sampled[row * queries..(row + 1) * queries];
        let confidences: Vec<f32> = row_samples.iter().map(|s| s.confidence).collect();
        let chosen = select_most_confident(&confidences, num_select)?;
        commit
            .positions
            .push(chosen.iter().map(|&q| row_positions[q]).collect());
        commit
            .tokens
            .push(chosen.iter().map(|&q| row_samples[q].token).collect());
    }
    Ok(commit)
}

/// ROAR: the queries (from [`crate::random::roar_queries`], shared by every row) are all
/// committed with their sampled tokens.
pub fn roar_commit(
    logits: &[f32],
    vocab: usize,
    batch_size: usize,
    query_positions: &[usize],
    temperature: f64,
    options: &SamplingOptions,
    source: &mut dyn RandomSource,
) -> Result<StepCommit, SamplerError> {
    let queries = query_positions.len();
    let sampled = sample_queries(
        logits,
        vocab,
        batch_size,
        queries,
        temperature,
        options,
        source,
    )?;
    let tokens = if queries == 0 {
        vec![Vec::new(); batch_size]
    } else {
        sampled
            .chunks(queries)
            .map(|row| row.iter().map(|s| s.token).collect())
            .collect()
    };
    Ok(StepCommit {
        positions: vec![query_positions.to_vec(); batch_size],
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::{SeededRandom, roar_queries};

    #[test]
    fn maskgit_commits_the_most_confident_argmax_predictions() {
        let mut modality = ModalityState::empty_image_target(1, 4).unwrap();
        modality.commit(&[vec![1]], &[vec![7]]).unwrap();
        let queries = vec![modality.rows()[0].target_positions()];
        assert_eq!(queries[0], vec![0, 2, 3]);
        // Vocabulary of 2; at temperature 0 all confidences are 1, so the first queries win.
        let logits = [0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
        let commit = maskgit_commit(
            &logits,
            2,
            &queries,
            2,
            0.0,
            &SamplingOptions::default(),
            &mut SeededRandom::new(0),
        )
        .unwrap();
        assert_eq!(
            commit,
            StepCommit {
                positions: vec![vec![0, 2]],
                tokens: vec![vec![1, 0]]
            }
        );
        commit.apply(&mut modality).unwrap();
        assert_eq!(modality.rows()[0].target_positions(), vec![3]);
    }

    #[test]
    fn maskgit_prefers_confident_samples() {
        // Row 0 is nearly certain, row 1 uniform: with one token to commit the first query wins.
        let logits = [20.0, 0.0, 0.0, 0.0];
        let commit = maskgit_commit(
            &logits,
            2,
            &[vec![5, 6]],
            1,
            1.0,
            &SamplingOptions::default(),
            &mut SeededRandom::new(1),
        )
        .unwrap();
        assert_eq!(commit.positions, vec![vec![5]]);
        assert_eq!(commit.tokens, vec![vec![0]]);
    }

    #[test]
    fn maskgit_with_nothing_left_commits_nothing_per_row() {
        let commit = maskgit_commit(
            &[],
            3,
            &[vec![], vec![]],
            0,
            1.0,
            &SamplingOptions::default(),
            &mut SeededRandom::new(0),
        )
        .unwrap();
        assert_eq!(commit.positions, vec![Vec::<usize>::new(), Vec::new()]);
        assert!(matches!(
            maskgit_commit(
                &[],
                3,
                &[vec![]],
                1,
                1.0,
                &SamplingOptions::default(),
                &mut SeededRandom::new(0)
            ),
            Err(SamplerError::SelectionTooLarge { .. })
        ));
    }

    #[test]
    fn roar_commits_every_query_in_every_row() {
        let mut modality = ModalityState::empty_image_target(2, 5).unwrap();
        let mut source = SeededRandom::new(4);
        let queries = roar_queries(&mut source, 0, &modality.rows()[0].target_mask, 2).unwrap();
        let logits = [3.0, 0.0, 0.0, 3.0, 0.0, 3.0, 3.0, 0.0];
        let commit = roar_commit(
            &logits,
            2,
            2,
            &queries,
            0.0,
            &SamplingOptions::default(),
            &mut source,
        )
        .unwrap();
        assert_eq!(commit.tokens, vec![vec![0, 1], vec![1, 0]]);
        commit.apply(&mut modality).unwrap();
        for row in modality.rows() {
            assert_eq!(row.target_positions().len(), 3);
        }
        assert!(matches!(
            roar_commit(
                &logits,
                2,
                3,
                &queries,
                0.0,
                &SamplingOptions::default(),
                &mut source
            ),
            Err(SamplerError::LengthMismatch { .. })
        ));
    }
}
