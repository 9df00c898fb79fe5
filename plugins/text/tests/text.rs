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
            eprintln!(
                "skipping: fixture {} not found ({error}); set TESSERA_FIXTURES",
                path.display()
            );
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
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_u64().unwrap() as u32)
            .collect()
    }

    #[test]
    fn every_encode_case_matches_the_reference_ids() {
        let (Some(tokenizer), Some(cases)) = (tokenizer(), cases()) else {
            return;
        };
        let encode = cases["encode"].as_array().unwrap();
        assert!(encode.len() >= 40, "expected the full case list");
        let mut failures = Vec::new();
        for case in encode {
            let text = case["text"].as_str().unwrap();
            let expected = ids_of(&case["ids"]);
            let actual = tokenizer.encode(text);
            if actual != expected {
                failures.push(format!(
                    "{text:?}\n  expected {expected:?}\n  actual   {actual:?}"
                ));
            }
            let tokens: Vec<&str> = actual
                .iter()
                .map(|&id| tokenizer.id_to_token(id).unwrap())
                .collect();
            let expected_tokens: Vec<&str> = case["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            if actual == expected {
                assert_eq!(tokens, expected_tokens, "{text:?}");
            }
        }
        assert!(
            failures.is_empty(),
            "{} mismatches:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn every_decode_case_matches_the_reference_text() {
        let (Some(tokenizer), Some(cases)) = (tokenizer(), cases()) else {
            return;
        };
        let decode = cases["decode"].as_array().unwrap();
        assert!(decode.len() >= 10);
        for case in decode {
            let ids = ids_of(&case["ids"]);
            assert_eq!(
                tokenizer.decode(&ids),
                case["text"].as_str().unwrap(),
                "{ids:?}"
            );
        }
    }

    #[test]
    fn special_ids_come_from_the_file() {
        let Some(tokenizer) = tokenizer() else { return };
        let layout = tokenizer.layout();
        assert_eq!(
            (
                layout.pad_id(),
                layout.unk_id(),
                layout.sos_id(),
                layout.eos_id()
            ),
            (0, 1, Some(2), 3)
        );
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
        assert_eq!(
            error,
            tessera_text::TextError::InvalidUtf8 { valid_up_to: 3 }
        );
    }
}

mod det {
    use super::*;
    use tessera_text::det::{det_to_ids, det_to_text, ids_to_det, parse_boxes_json};
    use tessera_text::{DetOptions, DetectionBox, TextError};

    fn boxed(label: &str, xmin: f64, ymin: f64, xmax: f64, ymax: f64, score: f64) -> DetectionBox {
        DetectionBox {
            label: label.into(),
            xmin,
            ymin,
            xmax,
            ymax,
            score: Some(score),
        }
    }

    #[test]
    fn serialises_like_the_reference_and_encodes_identically() {
        let Some(tokenizer) = tokenizer() else { return };
        let boxes = vec![
            boxed("boat", 0.35, 0.25, 0.7, 0.35, 0.9),
            boxed("Potted Plant", 0.0, 0.25, 0.42, 1.0, 0.95),
            boxed("dog", 0.1, 0.1, 0.2, 0.2, 0.59), // below the threshold
            boxed("dining table", 0.4, 0.75, 0.95, 1.0, 0.6), // exactly at the threshold: kept
        ];
        let text = det_to_text(tokenizer, &boxes, DetOptions::default()).unwrap();
        assert_eq!(
            text,
            "v0=0 v1=250 v2=420 v3=999 potted plant v0=350 v1=250 v2=699 v3=350 boat \
             v0=400 v1=749 v2=949 v3=999 dining table"
        );
        let ids = det_to_ids(tokenizer, &boxes, DetOptions::default()).unwrap();
        assert_eq!(ids, tokenizer.encode(&text));
        assert_eq!(&ids[..5], &[204, 1454, 2624, 4203, 4255]);
    }

    #[test]
    fn round_trips_boxes_through_ids() {
        let Some(tokenizer) = tokenizer() else { return };
        let boxes = vec![
            boxed("person", 0.0, 0.0, 1.0, 1.0, 1.0),
            boxed("teddy bear", 0.5, 0.5, 0.75, 0.9, 0.8),
        ];
        let ids = det_to_ids(tokenizer, &boxes, DetOptions::default()).unwrap();
        let decoded = ids_to_det(tokenizer, &ids);
        assert!(decoded.skipped.is_empty(), "{:?}", decoded.skipped);
        assert_eq!(decoded.boxes.len(), 2);
        for (original, back) in boxes.iter().zip(&decoded.boxes) {
            assert_eq!(back.label, original.label);
            for (a, b) in [
                (original.xmin, back.xmin),
                (original.ymin, back.ymin),
                (original.xmax, back.xmax),
                (original.ymax, back.ymax),
            ] {
                assert!((a - b).abs() <= 0.5 / 999.0 + 1e-12, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn no_boxes_give_no_ids_and_back() {
        let Some(tokenizer) = tokenizer() else { return };
        let ids = det_to_ids(tokenizer, &[], DetOptions::default()).unwrap();
        assert!(ids.is_empty());
        let decoded = ids_to_det(tokenizer, &ids);
        assert!(decoded.boxes.is_empty() && decoded.skipped.is_empty());
        let all_low = [boxed("cat", 0.1, 0.1, 0.2, 0.2, 0.1)];
        assert!(
            det_to_ids(tokenizer, &all_low, DetOptions::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn generated_streams_with_junk_keep_good_boxes_and_report_the_rest() {
        let Some(tokenizer) = tokenizer() else { return };
        let stream = "[S_1] v0=10 v1=20 v2=30 v3=40 cat v0=1 v1=2 dog v1=5 \
                      v0=100 v1=200 v2=300 v3=400 potted plant [PAD] a v0=7 [S_2] [EOS] v0=1";
        let ids = tokenizer.encode(stream);
        let decoded = ids_to_det(tokenizer, &ids);
        let labels: Vec<&str> = decoded.boxes.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(labels, ["cat", "potted plant"]);
        assert!((decoded.boxes[1].xmax - 300.0 / 999.0).abs() < 1e-12);
        let reasons: Vec<(usize, usize, &str)> = decoded
            .skipped
            .iter()
            .map(|s| (s.start, s.end, s.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 5, "{reasons:#?}");
        assert_eq!((reasons[0].0, reasons[0].1), (6, 9)); // v0=1 v1=2 dog
        assert!(reasons[0].2.contains("2 of 4"));
        assert!(reasons[1].2.contains("outside a box"));
        assert!(reasons[2].2.contains("unexpected token \"a\""));
        assert!(reasons[3].2.contains("sentinel"));
        assert!(reasons[4].2.contains("after [EOS]"));
    }

    #[test]
    fn bad_boxes_are_rejected_with_what_and_where() {
        let Some(tokenizer) = tokenizer() else { return };
        let opts = DetOptions::default();
        let error = det_to_ids(
            tokenizer,
            &[
                boxed("cat", 0.1, 0.1, 0.2, 0.2, 0.9),
                boxed("cat", -0.1, 0.0, 0.2, 0.2, 0.9),
            ],
            opts,
        )
        .unwrap_err();
        assert_eq!(
            error,
            TextError::BoxCoordinate {
                index: 1,
                field: "xmin",
                value: -0.1
            }
        );
        let error = det_to_ids(
            tokenizer,
            &[boxed("cat", 0.1, f64::NAN, 0.2, 0.2, 0.9)],
            opts,
        )
        .unwrap_err();
        assert!(matches!(
            error,
            TextError::BoxCoordinate {
                index: 0,
                field: "ymin",
                ..
            }
        ));
        let error =
            det_to_ids(tokenizer, &[boxed("cat", 0.1, 0.1, 0.2, 1.5, 0.9)], opts).unwrap_err();
        assert!(matches!(
            error,
            TextError::BoxCoordinate { field: "ymax", .. }
        ));
        let error =
            det_to_ids(tokenizer, &[boxed("cat", 0.5, 0.1, 0.2, 0.2, 0.9)], opts).unwrap_err();
        assert!(matches!(
            error,
            TextError::BoxInverted {
                index: 0,
                min_field: "xmin",
                ..
            }
        ));
        let error = det_to_ids(
            tokenizer,
            &[boxed("unicorn", 0.1, 0.1, 0.2, 0.2, 0.9)],
            opts,
        )
        .unwrap_err();
        assert_eq!(
            error,
            TextError::UnknownClass {
                index: 0,
                label: "unicorn".into()
            }
        );
        let error =
            det_to_ids(tokenizer, &[boxed("cat", 0.1, 0.1, 0.2, 0.2, 1.5)], opts).unwrap_err();
        assert!(matches!(error, TextError::BoxScore { index: 0, .. }));
        let error = parse_boxes_json(b"[{\"label\": \"cat\",\n \"xmin\": }]").unwrap_err();
        assert!(
            matches!(error, TextError::InputJson { line: 2, .. }),
            "{error}"
        );
        assert!(
            parse_boxes_json(b"[{\"label\":\"cat\",\"xmin\":0,\"ymin\":0,\"xmax\":1,\"ymax\":1}]")
                .is_ok()
        );
    }
}

mod metadata {
    use super::*;
    use tessera_text::metadata::{
        ids_to_metadata, metadata_to_ids, metadata_to_text, parse_metadata_json,
    };
    use tessera_text::{MetadataValue, TextError};

    #[test]
    fn bins_like_the_reference_and_matches_the_fixture_string() {
        let Some(tokenizer) = tokenizer() else { return };
        let chunks = parse_metadata_json(
            br#"{"semantic_diversity": 2, "original_width": 640, "original_height": 480}"#,
        )
        .unwrap();
        let text = metadata_to_text(&chunks);
        assert_eq!(text, "v1=0 v0=20 v1=1 v0=15 v1=16 v0=2");
        let ids = metadata_to_ids(tokenizer, &chunks).unwrap();
        assert_eq!(ids, [1204, 224, 1205, 219, 1220, 206]);
        assert_eq!(ids, tokenizer.encode(&text));
    }

    #[test]
    fn round_trips_with_reference_clipping_and_bin_centres() {
        let Some(tokenizer) = tokenizer() else { return };
        let json = br#"{"original_width": 100000, "original_height": -50, "n_humans": 1234,
            "caption_n_words": 7, "brightness": 300.0, "contrast": -3, "entropy": 5.0,
            "geometric_complexity": 0.5, "watermark_score": 0.5, "aesthetic_score": 5.0,
            "walkability": 1.0}"#;
        let ids = metadata_to_ids(tokenizer, &parse_metadata_json(json).unwrap()).unwrap();
        let decoded = ids_to_metadata(tokenizer, &ids);
        assert!(decoded.skipped.is_empty());
        let get = |name: &str| {
            decoded
                .values
                .iter()
                .find(|(field, _)| *field == name)
                .unwrap()
                .1
        };
        assert_eq!(get("original_width"), MetadataValue::Int(999 * 32)); // clipped to bin 999
        assert_eq!(get("original_height"), MetadataValue::Int(0)); // negative clipped to 0
        assert_eq!(get("n_humans"), MetadataValue::Int(999));
        assert_eq!(get("caption_n_words"), MetadataValue::Int(7));
        assert_eq!(
            get("brightness"),
            MetadataValue::Float(255.0 * (49.0 / 50.0))
        ); // clipped to vmax
        assert_eq!(get("contrast"), MetadataValue::Float(0.0));
        assert_eq!(get("entropy"), MetadataValue::Float(10.0 * (24.0 / 50.0))); // int(0.5 * 49) = 24
        assert_eq!(
            get("geometric_complexity"),
            MetadataValue::Float(0.75 * (32.0 / 50.0))
        );
        assert_eq!(get("watermark_score"), MetadataValue::Int(1));
        assert_eq!(get("aesthetic_score"), MetadataValue::Int(1));
        assert_eq!(get("walkability"), MetadataValue::Float(49.0 / 50.0));
        let names: Vec<&str> = decoded.values.iter().map(|(field, _)| *field).collect();
        assert_eq!(names[0], "original_width", "type-id order");
        let json = serde_json::to_string(&decoded).unwrap();
        assert!(
            json.starts_with(r#"{"values":{"original_width":31968,"original_height":0"#),
            "{json}"
        );
    }

    #[test]
    fn generated_streams_skip_malformed_groups() {
        let Some(tokenizer) = tokenizer() else { return };
        let ids = tokenizer.encode(
            "[S_1] v1=5 v0=3 v1=9 v1=30 v0=1 v1=2 v0=4 v0=5 v1=7 dog v1=20 v0=2 [EOS] [PAD]",
        );
        let decoded = ids_to_metadata(tokenizer, &ids);
        assert_eq!(
            decoded.values,
            vec![
                ("n_humans", MetadataValue::Int(3)),
                ("aesthetic_score", MetadataValue::Int(2))
            ]
        );
        let reasons: Vec<&str> = decoded.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(reasons[1].contains("unknown metadata type v1=30"));
        assert_eq!((decoded.skipped[0].start, decoded.skipped[0].end), (3, 4));
    }

    #[test]
    fn bad_metadata_is_rejected() {
        assert_eq!(
            parse_metadata_json(br#"{"n_humans": 1, "mood": 3}"#).unwrap_err(),
            TextError::UnknownMetadataKey { key: "mood".into() }
        );
        assert!(matches!(
            parse_metadata_json(br#"{"n_humans": 1.5}"#).unwrap_err(),
            TextError::MetadataValue {
                problem: "must be an integer",
                ..
            }
        ));
        assert!(matches!(
            parse_metadata_json(br#"{"brightness": "high"}"#).unwrap_err(),
            TextError::MetadataValue {
                problem: "must be a number",
                ..
            }
        ));
        assert!(matches!(
            parse_metadata_json(b"[1, 2]").unwrap_err(),
            TextError::InputJson { .. }
        ));
        assert!(parse_metadata_json(b"{}").unwrap().is_empty());
    }
}

mod palette {
    use super::*;
    use tessera_text::palette::{
        ids_to_palette, palette_swatch_png, palette_to_ids, palette_to_text, parse_palette_json,
    };
    use tessera_text::{Rgb, TextError};

    #[test]
    fn matches_the_fixture_string() {
        let Some(tokenizer) = tokenizer() else { return };
        let colours = parse_palette_json(br##"[[255, 0, 0], "#0cc822", [90, 90, 89.5]]"##).unwrap();
        let text = palette_to_text(&colours).unwrap();
        assert_eq!(
            text,
            "v1=3 v0=255 v0=0 v0=0 v0=12 v0=200 v0=34 v0=90 v0=90 v0=90"
        );
        let ids = palette_to_ids(tokenizer, &colours).unwrap();
        assert_eq!(ids, [1207, 459, 204, 204, 216, 404, 238, 294, 294, 294]);
    }

    #[test]
    fn seven_colours_round_trip() {
        let Some(tokenizer) = tokenizer() else { return };
        let colours: Vec<Rgb> = (0..7u8).map(|i| Rgb([i * 36, 255 - i, i])).collect();
        let mut ids = palette_to_ids(tokenizer, &colours).unwrap();
        assert_eq!(ids.len(), 22);
        ids.push(tokenizer.layout().eos_id());
        let decoded = ids_to_palette(tokenizer, &ids);
        assert_eq!(decoded.colours, colours);
        assert_eq!(decoded.declared_count, Some(7));
        assert!(decoded.skipped.is_empty());
    }

    #[test]
    fn generated_streams_are_parsed_gracefully() {
        let Some(tokenizer) = tokenizer() else { return };
        let ids = tokenizer
            .encode("[S_1] v1=2 v0=1 v0=2 v0=3 v0=999 v0=4 v0=5 v0=6 v0=7 cat v0=8 [EOS] v0=9");
        let decoded = ids_to_palette(tokenizer, &ids);
        assert_eq!(decoded.colours, vec![Rgb([1, 2, 3]), Rgb([4, 5, 6])]);
        let reasons: Vec<&str> = decoded.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "channel v0=999 is above 255",
                "channel beyond the declared colours",
                "unexpected token \"cat\" (id 4224) in a palette",
                "channel beyond the declared colours",
                "tokens after [EOS]",
            ]
        );
    }

    #[test]
    fn bad_palettes_are_rejected() {
        assert_eq!(
            parse_palette_json(b"[]").unwrap_err(),
            TextError::PaletteSize { count: 0, max: 7 }
        );
        let eight = format!("[{}]", ["[1,2,3]"; 8].join(","));
        assert_eq!(
            parse_palette_json(eight.as_bytes()).unwrap_err(),
            TextError::PaletteSize { count: 8, max: 7 }
        );
        assert_eq!(
            parse_palette_json(b"[[1,2,3],[0,256,0]]").unwrap_err(),
            TextError::PaletteChannel {
                index: 1,
                channel: "g",
                value: 256.0
            }
        );
        assert!(matches!(
            parse_palette_json(b"[[1,2]]").unwrap_err(),
            TextError::PaletteColour { index: 0, .. }
        ));
        assert!(matches!(
            parse_palette_json(br##"["#12345"]"##).unwrap_err(),
            TextError::PaletteColour { .. }
        ));
        assert!(matches!(
            parse_palette_json(b"[[1,2,3]").unwrap_err(),
            TextError::InputJson { line: 1, .. }
        ));
        assert!(palette_to_text(&[]).is_err());
    }

    #[test]
    fn swatch_is_a_png_of_the_right_size() {
        let png = palette_swatch_png(&[Rgb([255, 0, 0]), Rgb([0, 0, 255])], 25);
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!((width, height), (50, 25));
        // Stored deflate: the first scanline's pixels appear verbatim after the filter byte.
        let idat = png.windows(4).position(|w| w == b"IDAT").unwrap() + 4;
        let first_pixels = &png[idat + 2 + 5 + 1..idat + 2 + 5 + 1 + 6];
        assert_eq!(first_pixels, &[255, 0, 0, 255, 0, 0]);
    }
}

mod one_step_json {
    use super::*;
    use tessera_text::{DetOptions, TextError};

    #[test]
    fn json_in_ids_out_for_every_domain() {
        let Some(tokenizer) = tokenizer() else { return };
        let ids = tessera_text::det::encode_boxes_json(
            tokenizer,
            br#"[{"label":"boat","xmin":0.35,"ymin":0.25,"xmax":0.7,"ymax":0.35,"score":0.9}]"#,
            DetOptions::default(),
        )
        .unwrap();
        assert_eq!(ids, [554, 1454, 2903, 3554, 4215]);
        let ids =
            tessera_text::metadata::encode_metadata_json(tokenizer, br#"{"n_humans": 2}"#).unwrap();
        assert_eq!(tokenizer.decode(&ids), "v1=5 v0=2");
        let ids = tessera_text::palette::encode_palette_json(tokenizer, b"[[1,2,3]]").unwrap();
        assert_eq!(tokenizer.decode(&ids), "v1=1 v0=1 v0=2 v0=3");
        let error = tessera_text::det::encode_boxes_json(
            tokenizer,
            b"[{\"label\": \"cat\", \"xmin\": NaN}]",
            DetOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(error, TextError::InputJson { line: 1, .. }),
            "{error}"
        );
    }
}
