//! The text-sequence plugins in the sandbox: token parity with the reference tokenizer on every
//! fixture case, round trips, and bad input.

use serde_json::Value as Json;
use std::path::PathBuf;
use std::sync::Arc;
use tessera_plugin_test::PluginHarness;
use tessera_runtime::types::{Tokens, Value};
use tessera_runtime::{LoadOptions, NoGraphs};
use tessera_tests::{fixtures, plugin_manifest};

/// The reference vocabulary given explicitly, so the tests do not depend on the manifests' default path.
fn load(id: &str) -> Option<PluginHarness> {
    let vocab: PathBuf = fixtures()?.join("text/wordpiece_4m_30k.json");
    let mut options = LoadOptions::default();
    options.asset_overrides.insert("vocab".into(), vocab);
    Some(PluginHarness::load_with(plugin_manifest(id), &options, Arc::new(NoGraphs)).expect("plugin loads"))
}

fn text_cases() -> Option<Json> {
    let path = fixtures()?.join("text/cases.json");
    Some(serde_json::from_slice(&std::fs::read(&path).expect("text/cases.json")).expect("valid JSON"))
}

fn ids_of(value: &Json) -> Vec<u32> {
    value.as_array().expect("ids array").iter().map(|v| v.as_u64().expect("id") as u32).collect()
}

#[test]
fn caption_encodes_every_fixture_case_exactly() {
    let (Some(h), Some(cases)) = (load("caption"), text_cases()) else { return };
    let encode = cases["encode"].as_array().expect("encode cases");
    assert!(!encode.is_empty());
    for case in encode {
        let text = case["text"].as_str().unwrap();
        let got = h.tokenize_text("caption", text).unwrap().ids;
        assert_eq!(got, ids_of(&case["ids"]), "encode {text:?}");
    }
}

#[test]
fn caption_decodes_every_fixture_case_exactly() {
    let (Some(h), Some(cases)) = (load("caption"), text_cases()) else { return };
    let decode = cases["decode"].as_array().expect("decode cases");
    assert!(!decode.is_empty());
    for case in decode {
        let ids = ids_of(&case["ids"]);
        let tokens = Tokens { domain: "caption".into(), shape: vec![ids.len() as u32], ids };
        let out = h.detokenize(&tokens, &[]).unwrap();
        assert_eq!(out.artifacts[0].value, Value::Text(case["text"].as_str().unwrap().into()), "decode {:?}", case["ids"]);
    }
}

#[test]
fn caption_appends_eos_on_request() {
    let Some(h) = load("caption") else { return };
    let plain = h.tokenize("caption", &Value::Text("a cat".into()), &[]).unwrap().ids;
    let with_eos = h.tokenize("caption", &Value::Text("a cat".into()), &[("eos", "true")]).unwrap().ids;
    assert_eq!(with_eos[..plain.len()], plain[..]);
    assert_eq!(with_eos.last(), Some(&3));
    let err = h.tokenize("caption", &Value::Text("a".into()), &[("eos", "maybe")]).unwrap_err().to_string();
    assert!(err.contains("`eos`"), "{err}");
}

#[test]
fn caption_refuses_bad_input_clearly() {
    let Some(h) = load("caption") else { return };
    let err = h.tokenize("caption", &Value::Bytes(vec![b'o', b'k', 0xC3, 0x28]), &[]).unwrap_err().to_string();
    assert!(err.contains("caption") && err.contains("UTF-8") && err.contains("offset 2"), "{err}");
    let big = "a photo of a cat ".repeat(600_000);
    assert!(big.len() > 10_000_000);
    let tokens = h.tokenize_text("caption", &big).expect("10 MB of text tokenizes");
    assert_eq!(tokens.ids.len(), 5 * 600_000);
    let err = h.tokenize("caption", &Value::Image(tessera_runtime::types::Image { mime: "image/png".into(), data: vec![1] }), &[]);
    assert!(err.unwrap_err().to_string().contains("expected text"));
}

#[test]
fn a_missing_or_broken_vocabulary_is_reported_at_load() {
    let mut options = LoadOptions::default();
    options.asset_overrides.insert("vocab".into(), PathBuf::from("/nonexistent/vocab.json"));
    let err = PluginHarness::load_with(plugin_manifest("caption"), &options, Arc::new(NoGraphs)).err().unwrap().to_string();
    assert!(err.contains("asset `vocab`") && err.contains("/nonexistent/vocab.json"), "{err}");

    let broken = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(broken.path(), b"{\"model\": ").unwrap();
    options.asset_overrides.insert("vocab".into(), broken.path().to_path_buf());
    let err = PluginHarness::load_with(plugin_manifest("caption"), &options, Arc::new(NoGraphs)).err().unwrap().to_string();
    assert!(err.contains("caption") && err.contains("line 1"), "{err}");
}
