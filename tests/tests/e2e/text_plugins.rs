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
    Some(
        PluginHarness::load_with(plugin_manifest(id), &options, Arc::new(NoGraphs))
            .expect("plugin loads"),
    )
}

fn text_cases() -> Option<Json> {
    let path = fixtures()?.join("text/cases.json");
    Some(
        serde_json::from_slice(&std::fs::read(&path).expect("text/cases.json"))
            .expect("valid JSON"),
    )
}

fn ids_of(value: &Json) -> Vec<u32> {
    value
        .as_array()
        .expect("ids array")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect()
}

#[test]
fn caption_encodes_every_fixture_case_exactly() {
    let (Some(h), Some(cases)) = (load("caption"), text_cases()) else {
        return;
    };
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
    let (Some(h), Some(cases)) = (load("caption"), text_cases()) else {
        return;
    };
    let decode = cases["decode"].as_array().expect("decode cases");
    assert!(!decode.is_empty());
    for case in decode {
        let ids = ids_of(&case["ids"]);
        let tokens = Tokens {
            domain: "caption".into(),
            shape: vec![ids.len() as u32],
            ids,
        };
        let out = h.detokenize(&tokens, &[]).unwrap();
        assert_eq!(
            out.artifacts[0].value,
            Value::Text(case["text"].as_str().unwrap().into()),
            "decode {:?}",
            case["ids"]
        );
    }
}

#[test]
fn caption_appends_eos_on_request() {
    let Some(h) = load("caption") else { return };
    let plain = h
        .tokenize("caption", &Value::Text("a cat".into()), &[])
        .unwrap()
        .ids;
    let with_eos = h
        .tokenize("caption", &Value::Text("a cat".into()), &[("eos", "true")])
        .unwrap()
        .ids;
    assert_eq!(with_eos[..plain.len()], plain[..]);
    assert_eq!(with_eos.last(), Some(&3));
    let err = h
        .tokenize("caption", &Value::Text("a".into()), &[("eos", "maybe")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`eos`"), "{err}");
}

#[test]
fn caption_refuses_bad_input_clearly() {
    let Some(h) = load("caption") else { return };
    let err = h
        .tokenize("caption", &Value::Bytes(vec![b'o', b'k', 0xC3, 0x28]), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("caption") && err.contains("UTF-8") && err.contains("offset 2"),
        "{err}"
    );
    let big = "a photo of a cat ".repeat(600_000);
    assert!(big.len() > 10_000_000);
    let tokens = h
        .tokenize_text("caption", &big)
        .expect("10 MB of text tokenizes");
    assert_eq!(tokens.ids.len(), 5 * 600_000);
    let err = h.tokenize(
        "caption",
        &Value::Image(tessera_runtime::types::Image {
            mime: "image/png".into(),
            data: vec![1],
        }),
        &[],
    );
    assert!(err.unwrap_err().to_string().contains("expected text"));
}

#[test]
fn a_missing_or_broken_vocabulary_is_reported_at_load() {
    let mut options = LoadOptions::default();
    options
        .asset_overrides
        .insert("vocab".into(), PathBuf::from("/nonexistent/vocab.json"));
    let err = PluginHarness::load_with(plugin_manifest("caption"), &options, Arc::new(NoGraphs))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("asset `vocab`") && err.contains("/nonexistent/vocab.json"),
        "{err}"
    );

    let broken = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(broken.path(), b"{\"model\": ").unwrap();
    options
        .asset_overrides
        .insert("vocab".into(), broken.path().to_path_buf());
    let err = PluginHarness::load_with(plugin_manifest("caption"), &options, Arc::new(NoGraphs))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("caption") && err.contains("line 1"), "{err}");
}

fn json(h: &PluginHarness, domain: &str, text: &str) -> Result<Vec<u32>, String> {
    h.tokenize(domain, &Value::Json(text.into()), &[])
        .map(|t| t.ids)
        .map_err(|e| e.to_string())
}

fn back(h: &PluginHarness, domain: &str, ids: Vec<u32>) -> (Json, Vec<String>) {
    let tokens = Tokens {
        domain: domain.into(),
        shape: vec![ids.len() as u32],
        ids,
    };
    let out = h.detokenize(&tokens, &[]).unwrap();
    let Value::Json(primary) = &out.artifacts[0].value else {
        panic!("primary artifact is not JSON")
    };
    (serde_json::from_str(primary).unwrap(), out.warnings)
}

#[test]
fn det_round_trips_boxes_through_the_sandbox() {
    let Some(h) = load("det") else { return };
    let input = r#"[{"label":"dog","xmin":0.5,"ymin":0.5,"xmax":0.9,"ymax":1.0,"score":0.9},
                   {"label":"potted plant","xmin":0.0,"ymin":0.1,"xmax":0.2,"ymax":0.3},
                   {"label":"cat","xmin":0.1,"ymin":0.1,"xmax":0.2,"ymax":0.2,"score":0.59}]"#;
    let ids = json(&h, "det", input).unwrap();
    // Low-score box dropped; nearest the origin first; one token per coordinate and per class.
    assert_eq!(ids.len(), 10);
    let (boxes, warnings) = back(&h, "det", ids);
    assert!(warnings.is_empty(), "{warnings:?}");
    let boxes = boxes.as_array().unwrap();
    assert_eq!(boxes.len(), 2);
    assert_eq!(boxes[0]["label"], "potted plant");
    assert_eq!(boxes[1]["label"], "dog");
    for (b, (xmin, ymax)) in boxes.iter().zip([(0.0, 0.3), (0.5, 1.0)]) {
        assert!((b["xmin"].as_f64().unwrap() - xmin).abs() <= 1.0 / 999.0);
        assert!((b["ymax"].as_f64().unwrap() - ymax).abs() <= 1.0 / 999.0);
    }
    // No boxes at all is a valid, empty sequence.
    assert_eq!(json(&h, "det", "[]").unwrap(), Vec::<u32>::new());
    assert_eq!(back(&h, "det", vec![]).0, serde_json::json!([]));
}

#[test]
fn det_skips_malformed_generated_groups_and_says_so() {
    let Some(h) = load("det") else { return };
    let good = json(
        &h,
        "det",
        r#"[{"label":"dog","xmin":0.1,"ymin":0.2,"xmax":0.3,"ymax":0.4}]"#,
    )
    .unwrap();
    // A truncated group (two coordinates, then a sentinel) before a good one, then [EOS].
    let mut ids = vec![good[0], good[1], 5];
    ids.extend(&good);
    ids.push(3);
    let (boxes, warnings) = back(&h, "det", ids);
    assert_eq!(boxes.as_array().unwrap().len(), 1);
    assert_eq!(boxes[0]["label"], "dog");
    assert!(
        !warnings.is_empty() && warnings[0].contains("0..2"),
        "{warnings:?}"
    );
}

#[test]
fn det_refuses_bad_boxes_naming_the_box_and_field() {
    let Some(h) = load("det") else { return };
    let cases = [
        (
            r#"[{"label":"dog","xmin":-0.1,"ymin":0.2,"xmax":0.3,"ymax":0.4}]"#,
            "box 0",
        ),
        (
            r#"[{"label":"dog","xmin":0.1,"ymin":0.2,"xmax":0.3,"ymax":0.4},{"label":"cat","xmin":0.5,"ymin":0.2,"xmax":0.3,"ymax":0.4}]"#,
            "box 1",
        ),
        (
            r#"[{"label":"dog","xmin":NaN,"ymin":0.2,"xmax":0.3,"ymax":0.4}]"#,
            "column",
        ),
        (
            r#"[{"label":"unicorn","xmin":0.1,"ymin":0.2,"xmax":0.3,"ymax":0.4}]"#,
            "unicorn",
        ),
        (r#"[{"label":"dog","xmin":0.1"#, "line 1"),
    ];
    for (input, expected) in cases {
        let err = json(&h, "det", input).unwrap_err();
        assert!(
            err.contains("det") && err.contains("invalid input") && err.contains(expected),
            "{input}: {err}"
        );
    }
    let err = h
        .tokenize("det", &Value::Bytes(vec![b'[', 0xff, b']']), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("UTF-8"), "{err}");
}

#[test]
fn metadata_round_trips_with_reference_binning_and_clipping() {
    let Some(h) = load("metadata") else { return };
    let ids = json(
        &h,
        "metadata",
        r#"{"original_width": 640, "n_humans": 3, "watermark_score": 0.7, "brightness": 255}"#,
    )
    .unwrap();
    let (values, warnings) = back(&h, "metadata", ids);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(values["original_width"], 640);
    assert_eq!(values["n_humans"], 3);
    assert_eq!(values["watermark_score"], 1);
    assert_eq!(values["brightness"], 249.9);
    // Out-of-range values are clipped, as the reference does: 1e6 humans -> 999, width -> 999 * 32.
    let ids = json(
        &h,
        "metadata",
        r#"{"n_humans": 1000000, "original_width": 1000000, "contrast": -5}"#,
    )
    .unwrap();
    let (values, _) = back(&h, "metadata", ids);
    assert_eq!(values["n_humans"], 999);
    assert_eq!(values["original_width"], 999 * 32);
    assert_eq!(values["contrast"], 0.0);
    let err = json(&h, "metadata", r#"{"shoe_size": 42}"#).unwrap_err();
    assert!(err.contains("shoe_size"), "{err}");
}

#[test]
fn palette_round_trips_one_to_seven_colours_and_renders_a_swatch() {
    let Some(h) = load("color-palette") else {
        return;
    };
    let seven = r##"[[0,0,0],[255,255,255],[255,0,0],[0,255,0],[0,0,255],"#808080",[12,34,56]]"##;
    let ids = json(&h, "color_palette", seven).unwrap();
    assert_eq!(ids.len(), 1 + 3 * 7);
    let (colours, warnings) = back(&h, "color_palette", ids.clone());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(colours[5], serde_json::json!([128, 128, 128]));
    assert_eq!(colours.as_array().unwrap().len(), 7);
    let tokens = Tokens {
        domain: "color_palette".into(),
        shape: vec![ids.len() as u32],
        ids,
    };
    let out = h.detokenize(&tokens, &[]).unwrap();
    let Value::Image(swatch) = &out.artifacts[1].value else {
        panic!("no swatch")
    };
    assert!(swatch.data.starts_with(b"\x89PNG"));
    for (input, expected) in [
        ("[]", "1"),
        (
            r#"[[1,2,3],[1,2,3],[1,2,3],[1,2,3],[1,2,3],[1,2,3],[1,2,3],[1,2,3]]"#,
            "8",
        ),
        ("[[1,2,300]]", "300"),
    ] {
        let err = json(&h, "color_palette", input).unwrap_err();
        assert!(
            err.contains("invalid input") && err.contains(expected),
            "{input}: {err}"
        );
    }
}

#[test]
fn ten_megabytes_of_garbage_get_an_error_not_a_crash_from_every_json_plugin() {
    let garbage = format!("[{}", "{\"label\": \"dog\", ".repeat(600_000));
    assert!(garbage.len() > 10_000_000);
    for (id, domain, valid) in [
        ("det", "det", "[]"),
        ("metadata", "metadata", "{}"),
        ("color-palette", "color_palette", "[[1,2,3]]"),
    ] {
        let Some(h) = load(id) else { return };
        let err = json(&h, domain, &garbage).unwrap_err();
        assert!(
            err.contains("invalid input") && err.contains("line 1"),
            "{id}: {err}"
        );
        let err = h
            .tokenize(domain, &Value::Bytes(vec![b'{', 0xfe]), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("UTF-8"), "{id}: {err}");
        assert!(json(&h, domain, valid).is_ok(), "{id} still answers");
    }
}
