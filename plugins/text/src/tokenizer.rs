//! WordPiece tokenizer loaded from an HF `tokenizers` JSON file, reproducing its encode and decode.
//!
//! Pipeline (as the reference library runs it, without post-processing):
//! 1. non-normalised added tokens are matched on the raw text (leftmost-longest, `single_word`
//!    boundaries checked with regex `\w` semantics);
//! 2. every remaining piece is normalised (BertNormalizer) and the normalised added tokens (the
//!    class names) are matched on it;
//! 3. the rest is split on whitespace and punctuation (BertPreTokenizer);
//! 4. each word goes through greedy longest-match WordPiece, `[UNK]` for unmatched or over-long words.
//!
//! Every step is linear in the input; lookups are precomputed when the file is loaded.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Deserialize;
use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

use crate::chars::{
    ends_with_word_char, is_bert_control, is_bert_punctuation, is_bert_whitespace,
    is_cjk_ideograph, starts_with_word_char,
};
use crate::error::TextError;
use crate::layout::{AddedTokenInfo, VocabularyLayout};
use crate::matcher::PatternTrie;

/// Multiply-rotate hash for the vocabulary maps: keys are a fixed vocabulary, so the DoS
/// resistance of SipHash buys nothing and would cost a large share of encode time.
#[derive(Default, Clone, Copy)]
struct VocabHasher(u64);

impl VocabHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for VocabHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("chunk of 8")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buffer = [0u8; 8];
            buffer[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buffer) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type VocabMap = HashMap<Box<str>, u32, BuildHasherDefault<VocabHasher>>;

// ---------------------------------------------------------------------------------------------
// File format
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct TokenizerFile {
    #[serde(default)]
    added_tokens: Vec<AddedTokenEntry>,
    normalizer: Option<serde_json::Value>,
    pre_tokenizer: Option<serde_json::Value>,
    decoder: Option<serde_json::Value>,
    model: ModelEntry,
}

#[derive(Deserialize)]
struct AddedTokenEntry {
    id: u32,
    content: String,
    #[serde(default)]
    single_word: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default = "default_true")]
    normalized: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
struct ModelEntry {
    #[serde(rename = "type")]
    kind: String,
    unk_token: String,
    #[serde(default = "default_prefix")]
    continuing_subword_prefix: String,
    #[serde(default = "default_max_chars")]
    max_input_chars_per_word: usize,
    vocab: HashMap<String, u32>,
}

fn default_prefix() -> String {
    "##".to_owned()
}

fn default_max_chars() -> usize {
    100
}

#[derive(Deserialize)]
struct BertNormalizerEntry {
    #[serde(default = "default_true")]
    clean_text: bool,
    #[serde(default = "default_true")]
    handle_chinese_chars: bool,
    #[serde(default)]
    strip_accents: Option<bool>,
    #[serde(default = "default_true")]
    lowercase: bool,
}

#[derive(Deserialize)]
struct WordPieceDecoderEntry {
    #[serde(default = "default_prefix")]
    prefix: String,
    #[serde(default = "default_true")]
    cleanup: bool,
}

fn component_type(value: &serde_json::Value) -> String {
    value
        .get("type")
        .and_then(|kind| kind.as_str())
        .unwrap_or("<no type>")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Components
// ---------------------------------------------------------------------------------------------

/// BertNormalizer switches; `strip_accents` already resolved (null means "as lowercase").
#[derive(Debug, Clone, Copy)]
struct NormalizerOptions {
    clean_text: bool,
    handle_chinese_chars: bool,
    strip_accents: bool,
    lowercase: bool,
}

impl NormalizerOptions {
    const IDENTITY: NormalizerOptions = NormalizerOptions {
        clean_text: false,
        handle_chinese_chars: false,
        strip_accents: false,
        lowercase: false,
    };

    /// Normalises `piece` into `out` (cleared first); `stage` is scratch space.
    ///
    /// ASCII runs take a byte fast path; only non-ASCII runs go through decomposition. Splitting
    /// there is exact: ASCII characters are canonical starters, so NFD never reorders across them.
    fn normalize_into(&self, piece: &str, stage: &mut String, out: &mut String) {
        out.clear();
        out.reserve(piece.len());
        let mut rest = piece;
        while !rest.is_empty() {
            let ascii_len = rest
                .bytes()
                .position(|b| !b.is_ascii())
                .unwrap_or(rest.len());
            self.push_ascii(&rest[..ascii_len], out);
            rest = &rest[ascii_len..];
            let other_len = rest
                .bytes()
                .position(|b| b.is_ascii())
                .unwrap_or(rest.len());
            if other_len > 0 {
                self.push_non_ascii(&rest[..other_len], stage, out);
                rest = &rest[other_len..];
            }
        }
    }

    /// ASCII never decomposes, has no CJK ideographs and lowercases to one byte.
    fn push_ascii(&self, run: &str, out: &mut String) {
        for byte in run.bytes() {
            let c = byte as char;
            if self.clean_text {
                if byte == 0 || is_bert_control(c) {
                    continue;
                }
                if is_bert_whitespace(c) {
                    out.push(' ');
                    continue;
                }
            }
            out.push(if self.lowercase {
                c.to_ascii_lowercase()
            } else {
                c
            });
        }
    }

    /// Full BertNormalizer on a run of non-ASCII characters.
    fn push_non_ascii(&self, run: &str, stage: &mut String, out: &mut String) {
        stage.clear();
        for c in run.chars() {
            let c = if self.clean_text {
                if c == '\u{FFFD}' || is_bert_control(c) {
                    continue;
                }
                if is_bert_whitespace(c) { ' ' } else { c }
            } else {
                c
            };
            if self.handle_chinese_chars && is_cjk_ideograph(c) {
                stage.push(' ');
                stage.push(c);
                stage.push(' ');
            } else {
                stage.push(c);
            }
        }
        let push_cased = |out: &mut String, c: char| {
            if self.lowercase {
                out.extend(c.to_lowercase());
            } else {
                out.push(c);
            }
        };
        if self.strip_accents {
            // Lowercasing comes after accent stripping, as in the reference (so the dot that
            // lowercasing `İ` produces survives).
            for (c, _) in stage.as_str().nfd() {
                if !c.is_mark_nonspacing() {
                    push_cased(out, c);
                }
            }
        } else {
            for c in stage.chars() {
                push_cased(out, c);
            }
        }
    }
}

/// Properties of one added token that matter for matching.
#[derive(Debug, Clone, Copy)]
struct AddedMatchRule {
    id: u32,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
}

/// Leftmost-longest matcher over one group of added tokens (raw or normalised).
#[derive(Debug, Clone)]
struct AddedTokenMatcher {
    trie: PatternTrie,
    rules: Vec<AddedMatchRule>,
}

/// A piece of a split: either an added token or text left for the next stage.
enum Split<'a> {
    Token(u32),
    Text(&'a str),
}

impl AddedTokenMatcher {
    fn new(patterns: &[String], rules: Vec<AddedMatchRule>) -> Self {
        AddedTokenMatcher {
            trie: PatternTrie::new(patterns),
            rules,
        }
    }

    /// Calls `each` for the consecutive pieces of `text`, empty pieces left out.
    fn for_each_split<'a>(&self, text: &'a str, mut each: impl FnMut(Split<'a>)) {
        let mut consumed = 0;
        // Discarded candidates are not retried at later offsets: the search resumes after them,
        // exactly as the reference's non-overlapping iteration does.
        for found in self.trie.find_iter(text.as_bytes()) {
            let rule = self.rules[found.pattern];
            let (mut start, mut stop) = (found.start, found.end);
            if rule.single_word
                && (ends_with_word_char(&text[..start]) || starts_with_word_char(&text[stop..]))
            {
                continue;
            }
            if rule.lstrip {
                let before = &text[..start];
                let trimmed = before.trim_end_matches(char::is_whitespace).len();
                start = trimmed.max(consumed);
            }
            if rule.rstrip {
                let after = &text[stop..];
                stop += after.len() - after.trim_start_matches(char::is_whitespace).len();
            }
            if consumed < start {
                each(Split::Text(&text[consumed..start]));
            }
            each(Split::Token(rule.id));
            consumed = stop;
        }
        if consumed < text.len() {
            each(Split::Text(&text[consumed..]));
        }
    }
}

/// How ids are turned back into text.
#[derive(Debug, Clone)]
enum DecoderKind {
    /// Tokens joined by single spaces (no decoder in the file).
    JoinWithSpaces,
    /// WordPiece decoder: continuation pieces glued, others space-separated, optional cleanup.
    WordPiece { prefix: String, cleanup: bool },
}

/// The reference's cleanup replacements, applied in this order to every decoded piece.
const CLEANUP_RULES: [(&str, &str); 11] = [
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" do not", " don't"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
];

/// Appends `piece` to `out` with the cleanup rules applied.
fn push_cleaned(out: &mut String, piece: &str) {
    let interior_space = piece.get(1..).is_some_and(|rest| rest.contains(' '));
    if !interior_space {
        // At most a leading space: only a rule matching at offset 0 can apply, and after it no
        // space is left for another rule, so one prefix check is the whole chain.
        if piece.starts_with(' ') {
            for (from, to) in CLEANUP_RULES {
                if let Some(rest) = piece.strip_prefix(from) {
                    out.push_str(to);
                    out.push_str(rest);
                    return;
                }
            }
        }
        out.push_str(piece);
        return;
    }
    let mut text = piece.to_owned();
    for (from, to) in CLEANUP_RULES {
        if text.contains(from) {
            text = text.replace(from, to);
        }
    }
    out.push_str(&text);
}

// ---------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------

/// The 4M WordPiece text tokenizer (or any BERT-style WordPiece tokenizer file).
///
/// Build it once from the JSON bytes with [`TextTokenizer::from_json_bytes`]; encoding and
/// decoding then only read it, so one instance can serve every call.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    normalizer: NormalizerOptions,
    raw_added: AddedTokenMatcher,
    normalized_added: AddedTokenMatcher,
    /// Every model vocabulary entry, for the first piece of a word.
    word_start_pieces: VocabMap,
    /// Entries starting with the continuation prefix, stored without it.
    continuation_pieces: VocabMap,
    longest_start_piece: usize,
    longest_continuation_piece: usize,
    max_chars_per_word: usize,
    unk_id: u32,
    /// Token text by id (added tokens override the model's entry for the same id).
    tokens_by_id: Vec<Option<Box<str>>>,
    /// Added tokens by content (they take precedence over the model vocabulary).
    added_by_content: HashMap<Box<str>, u32>,
    decoder: DecoderKind,
    layout: VocabularyLayout,
}

impl TextTokenizer {
    /// Loads a tokenizer from the bytes of an HF `tokenizers` JSON file.
    ///
    /// Supported components: model `WordPiece`, normalizer `BertNormalizer` or none,
    /// pre-tokenizer `BertPreTokenizer`, decoder `WordPiece` or none; the post-processor is
    /// ignored because 4M never adds special tokens automatically.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, TextError> {
        let file: TokenizerFile =
            serde_json::from_slice(bytes).map_err(|error| TextError::tokenizer_json(&error))?;
        if file.model.kind != "WordPiece" {
            return Err(TextError::UnsupportedTokenizer {
                component: "model.type",
                found: file.model.kind,
                expected: "WordPiece",
            });
        }
        let normalizer = match &file.normalizer {
            None => NormalizerOptions::IDENTITY,
            Some(value) if value.is_null() => NormalizerOptions::IDENTITY,
            Some(value) if component_type(value) == "BertNormalizer" => {
                let entry: BertNormalizerEntry = serde_json::from_value(value.clone())
                    .map_err(|error| TextError::tokenizer_json(&error))?;
                NormalizerOptions {
                    clean_text: entry.clean_text,
                    handle_chinese_chars: entry.handle_chinese_chars,
                    strip_accents: entry.strip_accents.unwrap_or(entry.lowercase),
                    lowercase: entry.lowercase,
                }
            }
            Some(value) => {
                return Err(TextError::UnsupportedTokenizer {
                    component: "normalizer",
                    found: component_type(value),
                    expected: "BertNormalizer or null",
                });
            }
        };
        match &file.pre_tokenizer {
            Some(value) if component_type(value) == "BertPreTokenizer" => {}
            other => {
                return Err(TextError::UnsupportedTokenizer {
                    component: "pre_tokenizer",
                    found: other.as_ref().map_or("null".to_owned(), component_type),
                    expected: "BertPreTokenizer",
                });
            }
        }
        let decoder = match &file.decoder {
            None => DecoderKind::JoinWithSpaces,
            Some(value) if value.is_null() => DecoderKind::JoinWithSpaces,
            Some(value) if component_type(value) == "WordPiece" => {
                let entry: WordPieceDecoderEntry = serde_json::from_value(value.clone())
                    .map_err(|error| TextError::tokenizer_json(&error))?;
                DecoderKind::WordPiece {
                    prefix: entry.prefix,
                    cleanup: entry.cleanup,
                }
            }
            Some(value) => {
                return Err(TextError::UnsupportedTokenizer {
                    component: "decoder",
                    found: component_type(value),
                    expected: "WordPiece or null",
                });
            }
        };

        let model = file.model;
        let prefix = model.continuing_subword_prefix.as_str();
        let unk_id =
            *model
                .vocab
                .get(&model.unk_token)
                .ok_or_else(|| TextError::VocabularyLayout {
                    problem: format!(
                        "unk_token {:?} is not in the model vocabulary",
                        model.unk_token
                    ),
                })?;
        let largest_id = model
            .vocab
            .values()
            .chain(file.added_tokens.iter().map(|token| &token.id))
            .copied()
            .max()
            .unwrap_or(0);
        // Guard against a hostile file making us allocate a table for a huge id.
        let id_limit = 4 * (model.vocab.len() + file.added_tokens.len()) + 1024;
        if largest_id as usize >= id_limit {
            return Err(TextError::VocabularyLayout {
                problem: format!("token id {largest_id} is far beyond the vocabulary size"),
            });
        }
        let vocab_size = largest_id as usize + 1;
        let mut tokens_by_id: Vec<Option<Box<str>>> = vec![None; vocab_size];
        let mut word_start_pieces = VocabMap::default();
        let mut continuation_pieces = VocabMap::default();
        let mut longest_start_piece = 0;
        let mut longest_continuation_piece = 0;
        for (token, &id) in &model.vocab {
            tokens_by_id[id as usize] = Some(token.as_str().into());
            longest_start_piece = longest_start_piece.max(token.len());
            word_start_pieces.insert(token.as_str().into(), id);
            if let Some(rest) = token.strip_prefix(prefix) {
                longest_continuation_piece = longest_continuation_piece.max(rest.len());
                continuation_pieces.insert(rest.into(), id);
            }
        }

        let mut raw_patterns = Vec::new();
        let mut raw_rules = Vec::new();
        let mut normalized_patterns = Vec::new();
        let mut normalized_rules = Vec::new();
        let mut added_by_content = HashMap::new();
        let (mut stage, mut normalized) = (String::new(), String::new());
        for token in &file.added_tokens {
            if token.content.is_empty() {
                continue;
            }
            tokens_by_id[token.id as usize] = Some(token.content.as_str().into());
            added_by_content.insert(token.content.as_str().into(), token.id);
            let rule = AddedMatchRule {
                id: token.id,
                single_word: token.single_word,
                lstrip: token.lstrip,
                rstrip: token.rstrip,
            };
            if token.normalized {
                // Normalised tokens are matched in normalised text, so their pattern is their
                // normalised content (this is what makes class names case-insensitive).
                normalizer.normalize_into(&token.content, &mut stage, &mut normalized);
                normalized_patterns.push(normalized.clone());
                normalized_rules.push(rule);
            } else {
                raw_patterns.push(token.content.clone());
                raw_rules.push(rule);
            }
        }
        let infos: Vec<AddedTokenInfo<'_>> = file
            .added_tokens
            .iter()
            .filter(|token| !token.content.is_empty())
            .map(|token| AddedTokenInfo {
                id: token.id,
                content: &token.content,
            })
            .collect();
        let mut layout = VocabularyLayout::from_added_tokens(&infos, vocab_size)?;
        for (id, token) in tokens_by_id.iter().enumerate() {
            if token.is_none() {
                layout.mark_unused(id as u32);
            }
        }

        Ok(TextTokenizer {
            normalizer,
            raw_added: AddedTokenMatcher::new(&raw_patterns, raw_rules),
            normalized_added: AddedTokenMatcher::new(&normalized_patterns, normalized_rules),
            word_start_pieces,
            continuation_pieces,
            longest_start_piece,
            longest_continuation_piece,
            max_chars_per_word: model.max_input_chars_per_word,
            unk_id,
            tokens_by_id,
            added_by_content,
            decoder,
            layout,
        })
    }

    /// Ids of `text`, exactly as the reference `Tokenizer.encode(text).ids` (no special tokens
    /// added).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 4 + 4);
        self.encode_into(text, &mut ids);
        ids
    }

    /// Like [`TextTokenizer::encode`] for bytes that must be UTF-8 (as a plugin receives them).
    pub fn encode_utf8(&self, bytes: &[u8]) -> Result<Vec<u32>, TextError> {
        let text = std::str::from_utf8(bytes).map_err(|error| TextError::InvalidUtf8 {
            valid_up_to: error.valid_up_to(),
        })?;
        Ok(self.encode(text))
    }

    /// Appends the ids of `text` to `ids`.
    pub fn encode_into(&self, text: &str, ids: &mut Vec<u32>) {
        let (mut stage, mut normalized) = (String::new(), String::new());
        self.raw_added.for_each_split(text, |split| match split {
            Split::Token(id) => ids.push(id),
            Split::Text(piece) => {
                self.normalizer
                    .normalize_into(piece, &mut stage, &mut normalized);
                self.normalized_added
                    .for_each_split(&normalized, |split| match split {
                        Split::Token(id) => ids.push(id),
                        Split::Text(rest) => self.encode_words(rest, ids),
                    });
            }
        });
    }

    /// BertPreTokenizer: drop whitespace, isolate punctuation, WordPiece everything else.
    fn encode_words(&self, text: &str, ids: &mut Vec<u32>) {
        let mut word_start: Option<usize> = None;
        for (offset, c) in text.char_indices() {
            let is_space = c.is_whitespace();
            if is_space || is_bert_punctuation(c) {
                if let Some(start) = word_start.take() {
                    self.encode_word(&text[start..offset], ids);
                }
                if !is_space {
                    self.encode_word(&text[offset..offset + c.len_utf8()], ids);
                }
            } else if word_start.is_none() {
                word_start = Some(offset);
            }
        }
        if let Some(start) = word_start {
            self.encode_word(&text[start..], ids);
        }
    }

    /// Greedy longest-match WordPiece of one word; `[UNK]` alone if any part fails.
    fn encode_word(&self, word: &str, ids: &mut Vec<u32>) {
        // Byte length bounds the char count, so the count is only taken for long words.
        if word.len() > self.max_chars_per_word && word.chars().count() > self.max_chars_per_word {
            ids.push(self.unk_id);
            return;
        }
        let first_new = ids.len();
        let mut start = 0;
        while start < word.len() {
            let (pieces, longest) = if start == 0 {
                (&self.word_start_pieces, self.longest_start_piece)
            } else {
                (&self.continuation_pieces, self.longest_continuation_piece)
            };
            let rest = &word[start..];
            let mut end = rest.len().min(longest);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            let mut matched = None;
            while end > 0 {
                if let Some(&id) = pieces.get(&rest[..end]) {
                    matched = Some((id, end));
                    break;
                }
                end -= 1;
                while !rest.is_char_boundary(end) {
                    end -= 1;
                }
            }
            match matched {
                Some((id, length)) => {
                    ids.push(id);
                    start += length;
                }
                None => {
                    ids.truncate(first_new);
                    ids.push(self.unk_id);
                    return;
                }
            }
        }
    }

    /// Text of `ids` as the reference `decode(ids, skip_special_tokens=False)`; ids that the
    /// vocabulary does not have are skipped, as the reference does.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut text = String::with_capacity(ids.len() * 6);
        let mut first = true;
        for &id in ids {
            let Some(token) = self.id_to_token(id) else {
                continue;
            };
            match &self.decoder {
                DecoderKind::JoinWithSpaces => {
                    if !first {
                        text.push(' ');
                    }
                    text.push_str(token);
                }
                DecoderKind::WordPiece { prefix, cleanup } => {
                    let mut spaced;
                    let piece: &str = if first {
                        token
                    } else if let Some(rest) = token.strip_prefix(prefix.as_str()) {
                        rest
                    } else {
                        spaced = String::with_capacity(token.len() + 1);
                        spaced.push(' ');
                        spaced.push_str(token);
                        &spaced
                    };
                    if *cleanup {
                        push_cleaned(&mut text, piece);
                    } else {
                        text.push_str(piece);
                    }
                }
            }
            first = false;
        }
        text
    }

    /// Like [`TextTokenizer::decode`] but fails on the first id the vocabulary does not have.
    pub fn decode_strict(&self, ids: &[u32]) -> Result<String, TextError> {
        if let Some(position) = ids.iter().position(|&id| self.id_to_token(id).is_none()) {
            return Err(TextError::UnknownTokenId {
                position,
                id: ids[position],
                vocab_size: self.vocab_size(),
            });
        }
        Ok(self.decode(ids))
    }

    /// Token text of `id`, if the vocabulary has it.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.tokens_by_id.get(id as usize)?.as_deref()
    }

    /// Id of an exact token text (added tokens first, then the WordPiece vocabulary).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.added_by_content
            .get(token)
            .or_else(|| self.word_start_pieces.get(token))
            .copied()
    }

    /// One past the largest id (30,000 for 4M).
    pub fn vocab_size(&self) -> usize {
        self.tokens_by_id.len()
    }

    /// The structural token ids (specials, sentinels, values, classes).
    pub fn layout(&self) -> &VocabularyLayout {
        &self.layout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny but complete tokenizer file in the 4M layout.
    pub(crate) fn tiny_tokenizer_json() -> String {
        let mut added = vec![
            r#"{"id":0,"content":"[PAD]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}"#.to_owned(),
            r#"{"id":1,"content":"[UNK]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}"#.to_owned(),
            r#"{"id":2,"content":"[EOS]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}"#.to_owned(),
            r#"{"id":3,"content":"[S_0]","single_word":true,"lstrip":false,"rstrip":false,"normalized":false,"special":true}"#.to_owned(),
        ];
        for axis in 0..4 {
            for value in 0..2 {
                added.push(format!(
                    r#"{{"id":{},"content":"v{axis}={value}","single_word":true,"lstrip":false,"rstrip":false,"normalized":false,"special":true}}"#,
                    4 + axis * 2 + value
                ));
            }
        }
        added.push(r#"{"id":12,"content":"Hot Dog","single_word":true,"lstrip":false,"rstrip":false,"normalized":true,"special":true}"#.to_owned());
        format!(
            r###"{{"version":"1.0","added_tokens":[{}],
            "normalizer":{{"type":"BertNormalizer","clean_text":true,"handle_chinese_chars":true,"strip_accents":null,"lowercase":true}},
            "pre_tokenizer":{{"type":"BertPreTokenizer"}},"post_processor":null,
            "decoder":{{"type":"WordPiece","prefix":"##","cleanup":true}},
            "model":{{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##","max_input_chars_per_word":8,
            "vocab":{{"[PAD]":0,"[UNK]":1,"a":13,"cafe":14,"un":15,"##able":16,"##s":17,".":18,"do":19,"n":20,"'":21,"t":22,"東":23}}}}}}"###,
            added.join(",")
        )
    }

    fn tiny() -> TextTokenizer {
        TextTokenizer::from_json_bytes(tiny_tokenizer_json().as_bytes()).unwrap()
    }

    #[test]
    fn greedy_longest_match_with_continuations() {
        let tokenizer = tiny();
        assert_eq!(tokenizer.encode("unables"), vec![15, 16, 17]);
        assert_eq!(tokenizer.encode("unx"), vec![1]);
        assert_eq!(
            tokenizer.encode("aaaaaaaaa"),
            vec![1],
            "over max_input_chars_per_word"
        );
    }

    #[test]
    fn normalises_accents_case_and_cjk() {
        let tokenizer = tiny();
        assert_eq!(tokenizer.encode("CAFÉ.東a"), vec![14, 18, 23, 13]);
        assert_eq!(tokenizer.encode("\u{7}a\u{200B}"), vec![13]);
    }

    #[test]
    fn added_tokens_respect_single_word_and_normalisation() {
        let tokenizer = tiny();
        assert_eq!(
            tokenizer.encode("[S_0]a"),
            vec![1, 1, 1, 1, 1, 13],
            "[S_0] glued to a word is not matched"
        );
        assert_eq!(tokenizer.encode("a [S_0] [EOS][EOS]"), vec![13, 3, 2, 2]);
        assert_eq!(
            tokenizer.encode("HOT  DOG"),
            vec![1, 1],
            "two spaces do not match"
        );
        assert_eq!(tokenizer.encode("hot dog v0=1 v0=11"), vec![12, 5, 1, 1, 1]);
    }

    #[test]
    fn decode_glues_pieces_and_cleans_up() {
        let tokenizer = tiny();
        assert_eq!(tokenizer.decode(&[15, 16, 17, 18]), "unables.");
        assert_eq!(tokenizer.decode(&[19, 20, 21, 22]), "do n ' t");
        assert_eq!(tokenizer.decode(&[16, 13, 999]), "##able a");
        assert!(matches!(
            tokenizer.decode_strict(&[13, 999]),
            Err(TextError::UnknownTokenId {
                position: 1,
                id: 999,
                ..
            })
        ));
    }

    #[test]
    fn rejects_other_models_and_bad_json() {
        let json =
            tiny_tokenizer_json().replace(r#""type":"WordPiece","unk"#, r#""type":"BPE","unk"#);
        assert!(matches!(
            TextTokenizer::from_json_bytes(json.as_bytes()),
            Err(TextError::UnsupportedTokenizer {
                component: "model.type",
                ..
            })
        ));
        assert!(matches!(
            TextTokenizer::from_json_bytes(b"{\n  \"model\": ["),
            Err(TextError::TokenizerJson { line: 2, .. })
        ));
    }
}
