//! The 4M layout of the added tokens: specials, sentinels, `v0=`…`v3=` value tokens and class names.
//!
//! Nothing here is a constant: every id is read from the tokenizer file's `added_tokens`, so a
//! vocabulary trained by the project with the same naming scheme works unchanged.

use std::collections::HashMap;

use crate::error::TextError;

/// Number of value axes (`v0=` … `v3=`) in the 4M scheme.
pub const VALUE_AXES: usize = 4;

/// What a token id means to the 4M serialisers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `[PAD]`.
    Pad,
    /// `[UNK]`.
    Unk,
    /// `[SOS]`.
    Sos,
    /// `[EOS]`.
    Eos,
    /// Sentinel `[S_i]` with its index `i`.
    Sentinel(u32),
    /// Value token `v{axis}={value}`.
    Value {
        /// 0..=3.
        axis: u8,
        /// The integer after `=`.
        value: u32,
    },
    /// A class-name token (COCO class in 4M); the index is its position among the class tokens.
    Class(u32),
    /// Another added token that fits none of the above (e.g. a `[CLS]`-style special).
    OtherSpecial,
    /// An ordinary WordPiece vocabulary entry.
    Word,
    /// An id that no token has.
    Unused,
}

/// One added token as the layout needs it.
pub(crate) struct AddedTokenInfo<'a> {
    pub id: u32,
    pub content: &'a str,
}

/// Ids of the structural tokens of a 4M-style vocabulary, derived from its added tokens.
#[derive(Debug, Clone)]
pub struct VocabularyLayout {
    pad: u32,
    unk: u32,
    sos: Option<u32>,
    eos: u32,
    sentinels: Vec<u32>,
    values: [Vec<u32>; VALUE_AXES],
    classes: Vec<(Box<str>, u32)>,
    class_by_lowercase_name: HashMap<String, u32>,
    kinds: Vec<TokenKind>,
}

/// Parses `[S_<n>]` into `n`.
fn parse_sentinel(content: &str) -> Option<u32> {
    parse_canonical_number(content.strip_prefix("[S_")?.strip_suffix(']')?)
}

/// Parses `v<axis>=<n>` into `(axis, n)`.
fn parse_value_token(content: &str) -> Option<(u8, u32)> {
    let rest = content.strip_prefix('v')?;
    let (axis, number) = rest.split_once('=')?;
    let axis: u8 = match axis {
        "0" => 0,
        "1" => 1,
        "2" => 2,
        "3" => 3,
        _ => return None,
    };
    Some((axis, parse_canonical_number(number)?))
}

/// Decimal digits without sign or leading zeros (so `05` is not the number 5, as in the file).
fn parse_canonical_number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if text.len() > 1 && text.starts_with('0') {
        return None;
    }
    text.parse().ok()
}

/// Collects `index → id` pairs into a dense table, failing on gaps and duplicates.
fn dense_table(what: &str, mut entries: Vec<(u32, u32)>) -> Result<Vec<u32>, TextError> {
    entries.sort_unstable();
    for (expected, &(index, id)) in entries.iter().enumerate() {
        if index as usize != expected {
            return Err(TextError::VocabularyLayout {
                problem: format!(
                    "{what} are not numbered 0..{}: index {expected} is missing or duplicated (found {index} with id {id})",
                    entries.len()
                ),
            });
        }
    }
    Ok(entries.into_iter().map(|(_, id)| id).collect())
}

impl VocabularyLayout {
    /// Classifies the added tokens; `vocab_size` is one past the largest id of the vocabulary.
    pub(crate) fn from_added_tokens(
        added: &[AddedTokenInfo<'_>],
        vocab_size: usize,
    ) -> Result<Self, TextError> {
        let mut pad = None;
        let mut unk = None;
        let mut sos = None;
        let mut eos = None;
        let mut sentinels = Vec::new();
        let mut values: [Vec<(u32, u32)>; VALUE_AXES] = Default::default();
        let mut classes = Vec::new();
        let mut kinds = vec![TokenKind::Word; vocab_size];
        for token in added {
            let kind = match token.content {
                "[PAD]" => {
                    pad = Some(token.id);
                    TokenKind::Pad
                }
                "[UNK]" => {
                    unk = Some(token.id);
                    TokenKind::Unk
                }
                "[SOS]" => {
                    sos = Some(token.id);
                    TokenKind::Sos
                }
                "[EOS]" => {
                    eos = Some(token.id);
                    TokenKind::Eos
                }
                content => {
                    if let Some(index) = parse_sentinel(content) {
                        sentinels.push((index, token.id));
                        TokenKind::Sentinel(index)
                    } else if let Some((axis, value)) = parse_value_token(content) {
                        values[axis as usize].push((value, token.id));
                        TokenKind::Value { axis, value }
                    } else if content.starts_with('[') && content.ends_with(']') {
                        TokenKind::OtherSpecial
                    } else {
                        let index = classes.len() as u32;
                        classes.push((Box::<str>::from(content), token.id));
                        TokenKind::Class(index)
                    }
                }
            };
            kinds[token.id as usize] = kind;
        }
        let missing = |name: &str| TextError::VocabularyLayout {
            problem: format!("the added tokens have no {name}"),
        };
        let pad = pad.ok_or_else(|| missing("[PAD]"))?;
        let unk = unk.ok_or_else(|| missing("[UNK]"))?;
        let eos = eos.ok_or_else(|| missing("[EOS]"))?;
        let sentinels = dense_table("sentinels [S_i]", sentinels)?;
        let mut value_tables: [Vec<u32>; VALUE_AXES] = Default::default();
        for (axis, entries) in values.into_iter().enumerate() {
            value_tables[axis] = dense_table(&format!("value tokens v{axis}="), entries)?;
        }
        let bins = value_tables[0].len();
        if bins == 0 || value_tables.iter().any(|table| table.len() != bins) {
            return Err(TextError::VocabularyLayout {
                problem: format!(
                    "value tokens v0=..v3= must exist with the same count on every axis, found {:?}",
                    value_tables.iter().map(Vec::len).collect::<Vec<_>>()
                ),
            });
        }
        let class_by_lowercase_name = classes
            .iter()
            .enumerate()
            .map(|(index, (name, _))| (name.to_lowercase(), index as u32))
            .collect();
        Ok(VocabularyLayout {
            pad,
            unk,
            sos,
            eos,
            sentinels,
            values: value_tables,
            classes,
            class_by_lowercase_name,
            kinds,
        })
    }

    /// Id of `[PAD]`.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// Id of `[UNK]`.
    pub fn unk_id(&self) -> u32 {
        self.unk
    }

    /// Id of `[SOS]`, if the vocabulary has one.
    pub fn sos_id(&self) -> Option<u32> {
        self.sos
    }

    /// Id of `[EOS]`.
    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// Number of sentinels `[S_0]`, `[S_1]`, ….
    pub fn sentinel_count(&self) -> usize {
        self.sentinels.len()
    }

    /// Id of sentinel `[S_index]`.
    pub fn sentinel_id(&self, index: usize) -> Option<u32> {
        self.sentinels.get(index).copied()
    }

    /// All sentinel ids, in index order.
    pub fn sentinel_ids(&self) -> &[u32] {
        &self.sentinels
    }

    /// How many values each axis has (`v0=0` … `v0=<bins-1>`); 1000 in 4M.
    pub fn value_bins(&self) -> usize {
        self.values[0].len()
    }

    /// Id of `v{axis}={value}`.
    pub fn value_id(&self, axis: u8, value: u32) -> Result<u32, TextError> {
        self.values
            .get(axis as usize)
            .and_then(|table| table.get(value as usize))
            .copied()
            .ok_or(TextError::ValueOutOfVocabulary {
                axis,
                value,
                bins: self.value_bins(),
            })
    }

    /// Number of class-name tokens (80 COCO classes in 4M).
    pub fn class_count(&self) -> usize {
        self.classes.len()
    }

    /// Class names with their token ids, in file order.
    pub fn classes(&self) -> impl Iterator<Item = (&str, u32)> {
        self.classes.iter().map(|(name, id)| (&**name, *id))
    }

    /// Name of the class with the given class index.
    pub fn class_name(&self, class_index: u32) -> Option<&str> {
        self.classes
            .get(class_index as usize)
            .map(|(name, _)| &**name)
    }

    /// Token id of a class label; the match ignores case and surrounding whitespace, as the
    /// tokenizer does for these normalised tokens.
    pub fn class_id(&self, label: &str) -> Option<u32> {
        let index = *self
            .class_by_lowercase_name
            .get(&label.trim().to_lowercase())?;
        Some(self.classes[index as usize].1)
    }

    /// What `id` is, for parsing generated streams.
    pub fn kind(&self, id: u32) -> TokenKind {
        self.kinds
            .get(id as usize)
            .copied()
            .unwrap_or(TokenKind::Unused)
    }

    pub(crate) fn mark_unused(&mut self, id: u32) {
        if let Some(kind) = self.kinds.get_mut(id as usize) {
            *kind = TokenKind::Unused;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_shapes() {
        assert_eq!(parse_sentinel("[S_12]"), Some(12));
        assert_eq!(parse_sentinel("[S_012]"), None);
        assert_eq!(parse_sentinel("[s_1]"), None);
        assert_eq!(parse_value_token("v3=999"), Some((3, 999)));
        assert_eq!(parse_value_token("v4=1"), None);
        assert_eq!(parse_value_token("v0=05"), None);
        assert_eq!(parse_value_token("v0="), None);
    }

    fn small_layout(extra: &[(u32, &str)]) -> Result<VocabularyLayout, TextError> {
        let mut tokens = vec![
            (0, "[PAD]"),
            (1, "[UNK]"),
            (2, "[EOS]"),
            (3, "[S_0]"),
            (4, "[S_1]"),
        ];
        for axis in 0..4u32 {
            tokens.push((
                5 + 2 * axis,
                ["v0=0", "v1=0", "v2=0", "v3=0"][axis as usize],
            ));
            tokens.push((
                6 + 2 * axis,
                ["v0=1", "v1=1", "v2=1", "v3=1"][axis as usize],
            ));
        }
        tokens.extend_from_slice(extra);
        let infos: Vec<_> = tokens
            .iter()
            .map(|&(id, content)| AddedTokenInfo { id, content })
            .collect();
        VocabularyLayout::from_added_tokens(&infos, 20)
    }

    #[test]
    fn derives_ids_from_contents() {
        let layout = small_layout(&[(13, "traffic light")]).unwrap();
        assert_eq!(layout.eos_id(), 2);
        assert_eq!(layout.sos_id(), None);
        assert_eq!(layout.sentinel_id(1), Some(4));
        assert_eq!(layout.value_bins(), 2);
        assert_eq!(layout.value_id(2, 1).unwrap(), 10);
        assert!(matches!(
            layout.value_id(2, 2),
            Err(TextError::ValueOutOfVocabulary { .. })
        ));
        assert_eq!(layout.class_id(" Traffic Light "), Some(13));
        assert_eq!(layout.kind(13), TokenKind::Class(0));
        assert_eq!(layout.kind(12), TokenKind::Value { axis: 3, value: 1 });
        assert_eq!(layout.kind(19), TokenKind::Word);
        assert_eq!(layout.kind(500), TokenKind::Unused);
    }

    #[test]
    fn rejects_gaps() {
        let error = small_layout(&[(13, "[S_3]")]).unwrap_err();
        assert!(
            matches!(error, TextError::VocabularyLayout { .. }),
            "{error}"
        );
    }
}
