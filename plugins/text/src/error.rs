//! The one error type of the crate: every rejected input says what was wrong and where.

use thiserror::Error;

/// Everything that can go wrong while loading a vocabulary or converting a value.
///
/// Variants carry structured fields (indices, field names, offending values) so a plugin can
/// turn them into typed errors without parsing messages.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TextError {
    /// The tokenizer file is not valid JSON or does not have the HF `tokenizers` shape.
    #[error("tokenizer file is malformed at line {line}, column {column}: {message}")]
    TokenizerJson {
        /// 1-based line reported by serde_json.
        line: usize,
        /// 1-based column reported by serde_json.
        column: usize,
        /// serde_json's description of the problem.
        message: String,
    },
    /// The tokenizer file is valid JSON but uses a component this crate does not implement.
    #[error("unsupported tokenizer configuration: {component} is {found}, expected {expected}")]
    UnsupportedTokenizer {
        /// Which part of the file (`model.type`, `normalizer`, ...).
        component: &'static str,
        /// What the file says.
        found: String,
        /// What this crate supports.
        expected: &'static str,
    },
    /// The added tokens do not have the 4M layout (specials, sentinels, value tokens, classes).
    #[error("vocabulary layout: {problem}")]
    VocabularyLayout {
        /// Description of the missing or inconsistent entry.
        problem: String,
    },
    /// Input bytes that should be UTF-8 text are not.
    #[error("input is not valid UTF-8: invalid byte at offset {valid_up_to}")]
    InvalidUtf8 {
        /// Length of the longest valid prefix, i.e. the offset of the first bad byte.
        valid_up_to: usize,
    },
    /// A JSON input (boxes, metadata, palette) could not be parsed.
    #[error("input JSON is malformed at line {line}, column {column}: {message}")]
    InputJson {
        /// 1-based line reported by serde_json.
        line: usize,
        /// 1-based column reported by serde_json.
        column: usize,
        /// serde_json's description of the problem.
        message: String,
    },
    /// A box coordinate is NaN, infinite, negative or above 1.
    #[error("box {index}: {field} = {value} is not a number in [0, 1]")]
    BoxCoordinate {
        /// Position of the box in the input list.
        index: usize,
        /// `xmin`, `ymin`, `xmax` or `ymax`.
        field: &'static str,
        /// The offending value.
        value: f64,
    },
    /// A box whose minimum lies beyond its maximum.
    #[error("box {index}: {min_field} = {min} is greater than {max_field} = {max}")]
    BoxInverted {
        /// Position of the box in the input list.
        index: usize,
        /// `xmin` or `ymin`.
        min_field: &'static str,
        /// Its value.
        min: f64,
        /// `xmax` or `ymax`.
        max_field: &'static str,
        /// Its value.
        max: f64,
    },
    /// A box score that is not a finite number in [0, 1].
    #[error("box {index}: score = {value} is not a number in [0, 1]")]
    BoxScore {
        /// Position of the box in the input list.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A box label that is not one of the vocabulary's class tokens.
    #[error("box {index}: unknown class label {label:?}")]
    UnknownClass {
        /// Position of the box in the input list.
        index: usize,
        /// The label as given.
        label: String,
    },
    /// A metadata key that is not one of the 21 4M metadata fields.
    #[error("unknown metadata key {key:?}")]
    UnknownMetadataKey {
        /// The key as given.
        key: String,
    },
    /// A metadata value of the wrong kind (not a number, or fractional for an integer field).
    #[error("metadata field {key}: {problem} (got {value})")]
    MetadataValue {
        /// The field name.
        key: String,
        /// The value as JSON text.
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A palette with no colours or more than the 4M maximum.
    #[error("palette has {count} colours; between 1 and {max} are allowed")]
    PaletteSize {
        /// Number of colours given.
        count: usize,
        /// Largest number allowed.
        max: usize,
    },
    /// A palette colour channel that is not a number in 0..=255.
    #[error("palette colour {index}: channel {channel} = {value} is not in 0..=255")]
    PaletteChannel {
        /// Position of the colour in the input list.
        index: usize,
        /// `r`, `g` or `b`.
        channel: &'static str,
        /// The offending value.
        value: f64,
    },
    /// A palette colour that is neither `[r, g, b]` nor `"#rrggbb"`.
    #[error("palette colour {index}: {problem}")]
    PaletteColour {
        /// Position of the colour in the input list.
        index: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// A token id that the vocabulary does not contain.
    #[error("token id {id} at position {position} is not in the vocabulary (size {vocab_size})")]
    UnknownTokenId {
        /// Index in the id list.
        position: usize,
        /// The id.
        id: u32,
        /// Number of ids the vocabulary has.
        vocab_size: usize,
    },
    /// A value that has no `v{axis}=` token in this vocabulary.
    #[error("value {value} has no v{axis}= token (the vocabulary has {bins} values per axis)")]
    ValueOutOfVocabulary {
        /// The value axis (0..=3).
        axis: u8,
        /// The value.
        value: u32,
        /// How many values per axis the vocabulary has.
        bins: usize,
    },
}

impl TextError {
    /// Wraps a serde_json error from a user input (boxes, metadata, palette).
    pub(crate) fn input_json(error: &serde_json::Error) -> Self {
        TextError::InputJson {
            line: error.line(),
            column: error.column(),
            message: error.to_string(),
        }
    }

    /// Wraps a serde_json error from the tokenizer file.
    pub(crate) fn tokenizer_json(error: &serde_json::Error) -> Self {
        TextError::TokenizerJson {
            line: error.line(),
            column: error.column(),
            message: error.to_string(),
        }
    }
}
