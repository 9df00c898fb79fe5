//! A synthetic tokenizer in the 4M layout (1000 value bins, three classes) for unit tests that
//! must run without the reference fixtures.

use crate::tokenizer::TextTokenizer;

/// Builds the synthetic tokenizer: specials 0–3, sentinels `[S_0]`–`[S_2]` 4–6, `v{a}={k}` from 7,
/// classes `cat`, `dog`, `potted plant`, then a handful of words.
pub(crate) fn synthetic_4m_tokenizer() -> TextTokenizer {
    let mut added = Vec::new();
    let mut push = |id: usize, content: &str, single_word: bool, normalized: bool| {
        added.push(serde_json::json!({
            "id": id, "content": content, "single_word": single_word, "lstrip": false,
            "rstrip": false, "normalized": normalized, "special": true
        }));
    };
    for (id, special) in ["[PAD]", "[UNK]", "[SOS]", "[EOS]"].iter().enumerate() {
        push(id, special, false, false);
    }
    for sentinel in 0..3 {
        push(4 + sentinel, &format!("[S_{sentinel}]"), true, false);
    }
    for axis in 0..4 {
        for value in 0..1000 {
            push(
                7 + axis * 1000 + value,
                &format!("v{axis}={value}"),
                true,
                false,
            );
        }
    }
    let first_class = 4007;
    for (offset, class) in ["cat", "dog", "potted plant"].iter().enumerate() {
        push(first_class + offset, class, true, true);
    }
    let mut vocab = serde_json::Map::new();
    for (id, word) in ["[PAD]", "[UNK]", "[SOS]", "[EOS]"].iter().enumerate() {
        vocab.insert((*word).into(), id.into());
    }
    for (offset, word) in ["a", "big", "red", "##s", ".", "="].iter().enumerate() {
        vocab.insert((*word).into(), (4010 + offset).into());
    }
    let file = serde_json::json!({
        "version": "1.0",
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                        "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    });
    TextTokenizer::from_json_bytes(file.to_string().as_bytes()).expect("synthetic tokenizer loads")
}
