//! Character classes used by the BERT normaliser, the BERT pre-tokeniser and added-token matching.
//!
//! Each predicate mirrors the definition the reference HF `tokenizers` library uses (including
//! which Unicode table it consults), with an ASCII fast path because captions are mostly ASCII.

use unicode_categories::UnicodeCategories;

/// BERT's whitespace: tab, newline, carriage return and every Unicode `White_Space` character.
#[inline]
pub(crate) fn is_bert_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// BERT's "control" characters, removed by `clean_text`.
///
/// The reference uses the broad `Other` category (Cc, Cf, Cn, Co, Cs) of the `unicode_categories`
/// tables, but keeps tab, newline and carriage return (they become spaces instead).
#[inline]
pub(crate) fn is_bert_control(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r');
    }
    c.is_other()
}

/// The CJK ideograph blocks around which BERT inserts spaces (not Hangul or kana).
#[inline]
pub(crate) fn is_cjk_ideograph(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B920..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

/// BERT pre-tokeniser punctuation: ASCII punctuation (which includes symbols such as `$`, `^`,
/// `` ` ``) or any Unicode punctuation category (Pc, Pd, Ps, Pe, Pi, Pf, Po).
#[inline]
pub(crate) fn is_bert_punctuation(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    c.is_punctuation()
}

/// Regex `\w` as the reference's single-word check evaluates it: Alphabetic, marks, decimal digits,
/// connector punctuation and the join controls.
#[inline]
pub(crate) fn is_regex_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    c.is_alphabetic()
        || c.is_mark()
        || c.is_number_decimal_digit()
        || c.is_punctuation_connector()
        || matches!(c, '\u{200C}' | '\u{200D}')
}

/// Whether `text` ends with a `\w` character.
#[inline]
pub(crate) fn ends_with_word_char(text: &str) -> bool {
    text.chars().next_back().is_some_and(is_regex_word_char)
}

/// Whether `text` starts with a `\w` character.
#[inline]
pub(crate) fn starts_with_word_char(text: &str) -> bool {
    text.chars().next().is_some_and(is_regex_word_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_keeps_tab_newline_cr_and_drops_format_chars() {
        assert!(!is_bert_control('\t'));
        assert!(!is_bert_control('\n'));
        assert!(is_bert_control('\u{7}'));
        assert!(is_bert_control('\u{200B}')); // zero-width space is Cf
        assert!(!is_bert_control('a'));
    }

    #[test]
    fn punctuation_includes_ascii_symbols_and_unicode_dashes() {
        for c in ['$', '^', '`', '+', '—', '¿', '、'] {
            assert!(is_bert_punctuation(c), "{c:?}");
        }
        for c in ['a', '€', '😀', ' '] {
            assert!(!is_bert_punctuation(c), "{c:?}");
        }
    }

    #[test]
    fn word_chars_follow_regex_semantics() {
        assert!(is_regex_word_char('_'));
        assert!(is_regex_word_char('é'));
        assert!(is_regex_word_char('\u{0330}')); // combining mark
        assert!(!is_regex_word_char('-'));
        assert!(!is_regex_word_char(']'));
        assert!(ends_with_word_char("ab"));
        assert!(!starts_with_word_char(" x"));
        assert!(!starts_with_word_char(""));
    }

    #[test]
    fn cjk_blocks() {
        assert!(is_cjk_ideograph('東'));
        assert!(!is_cjk_ideograph('タ'));
        assert!(!is_cjk_ideograph('서'));
    }
}
