//! Shared pieces for parsing generated token streams back into values.

use serde::Serialize;

/// A run of tokens a parser could not use, with the reason, so a caller can report it instead of
/// failing the whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedTokens {
    /// Index of the first skipped token in the id list.
    pub start: usize,
    /// One past the index of the last skipped token.
    pub end: usize,
    /// Why the tokens were skipped.
    pub reason: String,
}

impl SkippedTokens {
    pub(crate) fn new(start: usize, end: usize, reason: impl Into<String>) -> Self {
        SkippedTokens {
            start,
            end,
            reason: reason.into(),
        }
    }
}

/// Python's `round()` (ties to even), which the reference serialisers use.
pub(crate) fn round_half_even(value: f64) -> f64 {
    value.round_ties_even()
}
