//! The tokenizer graphs against `VqTokenizer` called directly, on the reference fixtures
//! (`$TESSERA_FIXTURES/vq/`), and every refusal of a bad path, domain or tensor.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use tessera_fixtures::{ModelFixture, fixtures_root_with};
use tessera_model::LoadOptions;
use tessera_model::vq::VqTokenizer;
use tessera_nn::{TokenizerGraphError, TokenizerGraphs, parse_tokenizer_arg};
use tessera_runtime::GraphRegistry;
use tessera_runtime::types::{Dtype, NamedTensor, NnError, Tensor as WireTensor};

fn fixture_dir(name: &str) -> Option<PathBuf> {
    fixtures_root_with("vq").map(|root| root.join("vq").join(name))
}

fn wire_f32(t: &Tensor) -> WireTensor {
    let shape = t.dims().iter().map(|&d| d as u32).collect();
    let values = t
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    WireTensor {
        dtype: Dtype::F32,
        shape,
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn wire_u32(shape: &[u32], ids: &[u32]) -> WireTensor {
    WireTensor {
        dtype: Dtype::U32,
        shape: shape.to_vec(),
        data: ids.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn named(name: &str, tensor: WireTensor) -> NamedTensor {
    NamedTensor {
        name: name.into(),
        tensor,
    }
}

fn u32s(t: &WireTensor) -> Vec<u32> {
    assert_eq!(t.dtype, Dtype::U32);
    t.data
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn f32s(t: &WireTensor) -> Vec<f32> {
    assert_eq!(t.dtype, Dtype::F32);
    t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn registry(domain: &str, fixture: &str) -> Option<(TokenizerGraphs, PathBuf)> {
    let dir = fixture_dir(fixture)?;
    let paths = BTreeMap::from([(domain.to_string(), dir.clone())]);
    Some((
        TokenizerGraphs::load(&paths, &LoadOptions::default()).expect("load the fixture"),
        dir,
    ))
}

#[test]
fn rgb_graphs_match_the_tokenizer_called_directly() {
    let Some((graphs, dir)) = registry("tok_rgb@224", "vqvae_rgb_vit_tiny") else {
        return;
    };
    assert_eq!(
        graphs.names(),
        vec![
            "tok_rgb@224/decode".to_string(),
            "tok_rgb@224/encode".to_string()
        ]
    );
    let direct = VqTokenizer::load(&dir, &LoadOptions::default()).unwrap();
    let fixture = ModelFixture::open(&dir);
    let mut checked = 0;
    for case in fixture.cases["cases"].as_array().unwrap() {
        if case["kind"] != "roundtrip" {
            continue;
        }
        let image = fixture.tensor(&case["input"]);
        let encode = graphs.load("tok_rgb@224/encode").unwrap();
        let out = encode
            .compute(vec![named("image", wire_f32(image))])
            .expect("encode");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].name, "tokens");
        let expected = direct.encode(image).unwrap();
        let expected_shape: Vec<u32> = expected.dims().iter().map(|&d| d as u32).collect();
        assert_eq!(out[0].tensor.shape, expected_shape);
        let expected_ids: Vec<u32> = expected
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|&v| v as u32)
            .collect();
        let ids = u32s(&out[0].tensor);
        assert_eq!(ids, expected_ids, "{}", case["name"]);
        // ... and the reference's own tokens.
        let reference: Vec<u32> = fixture
            .tensor(&case["expected"]["tokens"])
            .to_dtype(DType::I64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|&v| v as u32)
            .collect();
        assert_eq!(ids, reference, "{} vs the reference", case["name"]);

        // Decode the graph's tokens and compare with decode_tokens.
        let decode = graphs.load("tok_rgb@224/decode").unwrap();
        let dec = decode
            .compute(vec![named("tokens", out[0].tensor.clone())])
            .expect("decode");
        assert_eq!(dec[0].name, "image");
        let direct_dec = direct.decode_tokens(&expected).unwrap();
        let direct_shape: Vec<u32> = direct_dec.dims().iter().map(|&d| d as u32).collect();
        assert_eq!(dec[0].tensor.shape, direct_shape);
        let direct_values = direct_dec.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(f32s(&dec[0].tensor), direct_values);
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} roundtrip cases");
}

#[test]
fn semseg_encode_takes_class_ids() {
    let Some((graphs, dir)) = registry("tok_semseg@224", "vqvae_semseg_vit_tiny") else {
        return;
    };
    let direct = VqTokenizer::load(&dir, &LoadOptions::default()).unwrap();
    let n_labels = direct.config().n_labels.unwrap();
    let ids: Vec<u8> = (0..64 * 64).map(|i| (i * 7 % n_labels) as u8).collect();
    let wire = WireTensor {
        dtype: Dtype::U8,
        shape: vec![1, 64, 64],
        data: ids.clone(),
    };
    let out = graphs
        .load("tok_semseg@224/encode")
        .unwrap()
        .compute(vec![named("image", wire)])
        .unwrap();
    let input = Tensor::from_vec(ids, (1, 64, 64), &Device::Cpu).unwrap();
    let expected: Vec<u32> = direct
        .encode(&input)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&v| v as u32)
        .collect();
    assert_eq!(u32s(&out[0].tensor), expected);
    let logits = graphs
        .load("tok_semseg@224/decode")
        .unwrap()
        .compute(vec![named("tokens", out[0].tensor.clone())])
        .unwrap();
    assert_eq!(logits[0].name, "logits");
    assert_eq!(logits[0].tensor.shape, vec![1, n_labels as u32, 64, 64]);
}

fn invalid(result: Result<Vec<NamedTensor>, NnError>) -> String {
    match result {
        Err(NnError::InvalidInput(m)) => m,
        Err(other) => panic!("expected invalid-input, got {other:?}"),
        Ok(_) => panic!("expected invalid-input, got a result"),
    }
}

#[test]
fn bad_tensors_are_refused_with_what_and_where() {
    let Some((graphs, _)) = registry("tok_rgb@224", "vqvae_rgb_vit_tiny") else {
        return;
    };
    let encode = graphs.load("tok_rgb@224/encode").unwrap();
    let decode = graphs.load("tok_rgb@224/decode").unwrap();
    let image = |shape: &[u32]| {
        let n: u32 = shape.iter().product();
        WireTensor {
            dtype: Dtype::F32,
            shape: shape.to_vec(),
            data: vec![0; n as usize * 4],
        }
    };

    let m = invalid(encode.compute(vec![]));
    assert!(
        m.contains("tok_rgb@224/encode") && m.contains("missing input tensor `image`"),
        "{m}"
    );
    let m = invalid(encode.compute(vec![named("pixels", image(&[1, 3, 96, 96]))]));
    assert!(m.contains("unexpected input tensor `pixels`"), "{m}");
    let m = invalid(encode.compute(vec![named("image", image(&[1, 1, 96, 96]))]));
    assert!(
        m.contains("shape [1, 1, 96, 96]") && m.contains("(B, 3, H, W)"),
        "{m}"
    );
    let m = invalid(encode.compute(vec![named("image", image(&[1, 3, 90, 96]))]));
    assert!(m.contains("multiples of 16"), "{m}");
    let m = invalid(encode.compute(vec![named("image", image(&[3, 96, 96]))]));
    assert!(m.contains("shape [3, 96, 96]"), "{m}");
    let mut short = image(&[1, 3, 32, 32]);
    short.data.truncate(10);
    let m = invalid(encode.compute(vec![named("image", short)]));
    assert!(m.contains("10 data bytes") && m.contains("12288"), "{m}");
    let m = invalid(encode.compute(vec![named("image", wire_u32(&[1, 3, 16, 16], &[0; 768]))]));
    assert!(m.contains("U32") && m.contains("expected f32"), "{m}");
    let mut nan = image(&[1, 3, 16, 16]);
    nan.data[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
    let m = invalid(encode.compute(vec![named("image", nan)]));
    assert!(
        m.contains("element 10") && m.contains("not a finite number"),
        "{m}"
    );

    let m = invalid(decode.compute(vec![named("tokens", wire_u32(&[1, 2, 2], &[0, 1, 256, 3]))]));
    assert!(
        m.contains("element 2 is 256") && m.contains("0..256"),
        "{m}"
    );
    let m = invalid(decode.compute(vec![named("tokens", wire_u32(&[4], &[0, 1, 2, 3]))]));
    assert!(m.contains("(B, h, w)"), "{m}");
    let m = invalid(decode.compute(vec![
        named("tokens", wire_u32(&[1, 1, 1], &[0])),
        named("steps", wire_u32(&[2], &[1, 2])),
    ]));
    assert!(m.contains("`steps`") && m.contains("one value"), "{m}");
    assert!(graphs.load("tok_rgb@224/other").is_none());
    assert!(graphs.load("tok_depth@224/encode").is_none());
}

#[test]
fn bad_paths_and_domains_are_refused() {
    let missing = BTreeMap::from([(
        "tok_rgb@224".to_string(),
        PathBuf::from("/nonexistent/tokenizer"),
    )]);
    let err = TokenizerGraphs::load(&missing, &LoadOptions::default())
        .err()
        .expect("a missing path fails");
    assert!(
        matches!(&err, TokenizerGraphError::MissingPath { domain, .. } if domain == "tok_rgb@224"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("/nonexistent/tokenizer does not exist")
    );

    let dir = tempfile_dir();
    let not_a_checkpoint = BTreeMap::from([("tok_rgb@224".to_string(), dir.clone())]);
    let err = TokenizerGraphs::load(&not_a_checkpoint, &LoadOptions::default())
        .err()
        .expect("an empty directory fails");
    assert!(
        matches!(&err, TokenizerGraphError::Load { domain, .. } if domain == "tok_rgb@224"),
        "{err:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    let bad = BTreeMap::from([("a/b".to_string(), PathBuf::from("."))]);
    let err = TokenizerGraphs::load(&bad, &LoadOptions::default())
        .err()
        .expect("a domain with / fails");
    assert!(
        matches!(err, TokenizerGraphError::BadDomain { .. }),
        "{err:?}"
    );

    assert_eq!(
        parse_tokenizer_arg("tok_rgb@224=/x/y").unwrap(),
        ("tok_rgb@224".to_string(), PathBuf::from("/x/y"))
    );
    assert!(
        parse_tokenizer_arg("tok_rgb@224")
            .unwrap_err()
            .contains("DOMAIN=PATH")
    );
    assert!(parse_tokenizer_arg("=x").is_err());
    assert!(parse_tokenizer_arg("a b=x").is_err());
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-nn-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
