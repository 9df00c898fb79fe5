//! Integration tests of tessera-text against the reference fixtures and through its public API.
//!
//! Fixtures come from `$TESSERA_FIXTURES` (default: the repository's `../shared/fixtures`). When
//! they are missing the fixture tests fail under `CI` and are skipped with a message otherwise.

use std::path::PathBuf;
use std::sync::OnceLock;

use tessera_text::TextTokenizer;

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("TESSERA_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"),
    }
}

/// Reads `text/<name>` from the fixtures, or `None` (skip) when absent outside CI.
fn fixture_bytes(name: &str) -> Option<Vec<u8>> {
    let path = fixtures_dir().join("text").join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            if std::env::var_os("CI").is_some() {
                panic!("fixture {} is required under CI: {error}", path.display());
            }
            eprintln!("skipping: fixture {} not found ({error}); set TESSERA_FIXTURES", path.display());
            None
        }
    }
}

/// The 4M tokenizer, loaded once per test binary.
fn tokenizer() -> Option<&'static TextTokenizer> {
    static TOKENIZER: OnceLock<Option<TextTokenizer>> = OnceLock::new();
    TOKENIZER
        .get_or_init(|| {
            let bytes = fixture_bytes("wordpiece_4m_30k.json")?;
            Some(TextTokenizer::from_json_bytes(&bytes).expect("the 4M tokenizer loads"))
        })
        .as_ref()
}

mod parity {
    use super::*;
    use serde_json::Value;

    fn cases() -> Option<Value> {
        let bytes = fixture_bytes("cases.json")?;
        Some(serde_json::from_slice(&bytes).expect("cases.json parses"))
    }

    fn ids_of(value: &Value) -> Vec<u32> {
        value.as_array().unwrap().iter().map(|id| id.as_u64().unwrap() as u32).collect()
    }

    #[test]
    fn every_encode_case_matches_the_reference_ids() {
        let (Some(tokenizer), Some(cases)) = (tokenizer(), cases()) else { return };
        let encode = cases["encode"].as_array().unwrap();
        assert!(encode.len() >= 40, "expected the full case list");
        let mut failures = Vec::new();
        for case in encode {
            let text = case["text"].as_str().unwrap();
            let expected = ids_of(&case["ids"]);
            let actual = tokenizer.encode(text);
            if actual != expected {
                failures.push(format!("{text:?}\n  expected {expected:?}\n  actual   {actual:?}"));
            }
            let tokens: Vec<&str> =
                actual.iter().map(|&id| tokenizer.id_to_token(id).unwrap()).collect();
            let expected_tokens: Vec<&str> =
                case["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
            if actual == expected {
                assert_eq!(tokens, expected_tokens, "{text:?}");
            }
        }
        assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    }

    #[test]
    fn every_decode_case_matches_the_reference_text() {
        let (Some(tokenizer), Some(cases)) = (tokenizer(), cases()) else { return };
        let decode = cases["decode"].as_array().unwrap();
        assert!(decode.len() >= 10);
        for case in decode {
            let ids = ids_of(&case["ids"]);
            assert_eq!(tokenizer.decode(&ids), case["text"].as_str().unwrap(), "{ids:?}");
        }
    }

    #[test]
    fn special_ids_come_from_the_file() {
        let Some(tokenizer) = tokenizer() else { return };
        let layout = tokenizer.layout();
        assert_eq!((layout.pad_id(), layout.unk_id(), layout.sos_id(), layout.eos_id()), (0, 1, Some(2), 3));
        assert_eq!(layout.sentinel_count(), 200);
        assert_eq!(layout.sentinel_id(1), Some(5));
        assert_eq!(layout.value_bins(), 1000);
        assert_eq!(layout.value_id(2, 7).unwrap(), 204 + 2000 + 7);
        assert_eq!(layout.class_count(), 80);
        assert_eq!(layout.class_id("Potted Plant"), Some(4255));
        assert_eq!(tokenizer.vocab_size(), 30000);
    }

    #[test]
    fn ten_megabytes_of_text_encode_in_linear_time() {
        let Some(tokenizer) = tokenizer() else { return };
        let sentence = "A Lake-house, with a Boat! [S_1] Café 東京 v0=12 potted plant ";
        let text = sentence.repeat(10 * 1024 * 1024 / sentence.len());
        let ids = tokenizer.encode(&text);
        let one = tokenizer.encode(sentence);
        assert_eq!(ids.len(), one.len() * (text.len() / sentence.len()));
        // One enormous word: rejected as [UNK] without quadratic work.
        let word = "x".repeat(10 * 1024 * 1024);
        assert_eq!(tokenizer.encode(&word), vec![1]);
    }

    #[test]
    fn invalid_utf8_is_a_clear_error() {
        let Some(tokenizer) = tokenizer() else { return };
        let error = tokenizer.encode_utf8(b"ok \xff\xfe").unwrap_err();
        assert_eq!(error, tessera_text::TextError::InvalidUtf8 { valid_up_to: 3 });
    }
}
