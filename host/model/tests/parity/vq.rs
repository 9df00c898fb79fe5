//! The 4M tokenizers (`vq/<tokenizer>/`) against the reference: every case of every VQ-VAE
//! fixture (token ids exact, codebook look-ups exact, float tensors within the fixture README's
//! 1e-4), the DiVAE (encoder, quantizer, UNet and DDIM sampling), both checkpoint layouts, and
//! clear errors for bad input.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use tessera_fixtures::{ModelFixture, max_abs_diff};
use tessera_model::vq::{DiffusionOptions, Encoding, TimestepSpacing, VqTokenizer};
use tessera_model::{LoadOptions, ModelError};

use crate::loading::rewrite;

/// Float tensors: the fixture README's tolerance (max abs diff).
const TOLERANCE: f32 = 1e-4;

fn vq_root() -> Option<PathBuf> {
    tessera_fixtures::fixtures_root_with("vq").map(|root| root.join("vq"))
}

/// Every tokenizer directory under `vq/` with a `cases.json` whose `class` is `class`, sorted.
fn tokenizer_dirs(root: &Path, class: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .expect("read vq/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            std::fs::read_to_string(p.join("cases.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["class"] == class)
        })
        .collect();
    dirs.sort();
    dirs
}

fn load(dir: &Path) -> VqTokenizer {
    VqTokenizer::load(dir, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Largest differences seen for one tokenizer, for the report line.
#[derive(Default)]
struct Worst {
    by_name: Vec<(String, f32)>,
}

impl Worst {
    fn check(&mut self, what: &str, case: &str, actual: &Tensor, expected: &Tensor, tol: f32) {
        let diff = max_abs_diff(actual, expected, &format!("{case} {what}"));
        assert!(
            diff <= tol,
            "{case}: {what} differs by {diff} (tolerance {tol})"
        );
        match self.by_name.iter_mut().find(|(n, _)| n == what) {
            Some((_, worst)) => *worst = worst.max(diff),
            None => self.by_name.push((what.to_owned(), diff)),
        }
    }

    fn report(&self) -> String {
        self.by_name
            .iter()
            .map(|(n, d)| format!("{n} {d:.1e}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn assert_tokens_equal(actual: &Tensor, expected: &Tensor, case: &str) {
    assert_eq!(actual.dtype(), DType::I64, "{case}: token dtype");
    assert_eq!(actual.dims(), expected.dims(), "{case}: token shape");
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<i64>().unwrap();
    let (a, e) = (flat(actual), flat(expected));
    let wrong = a.iter().zip(&e).filter(|(x, y)| x != y).count();
    assert_eq!(wrong, 0, "{case}: {wrong} of {} tokens differ", e.len());
}

/// Run every case of one VQ-VAE fixture directory; returns the number of cases checked.
fn check_vqvae(dir: &Path) -> usize {
    let fixture = ModelFixture::open(dir);
    let tokenizer = load(dir);
    let cases = fixture.cases_of("cases");
    assert!(!cases.is_empty(), "{}: no cases", fixture.name());
    let mut worst = Worst::default();
    for case in &cases {
        let name = format!("{}/{}", fixture.name(), case["name"].as_str().unwrap());
        let expected = &case["expected"];
        let input = fixture.tensor(&case["input"]);
        let expected_input: Vec<usize> = case["input_shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(
            input.dims(),
            expected_input.as_slice(),
            "{name}: input shape"
        );
        let tokens = match case["kind"].as_str().unwrap() {
            "roundtrip" => {
                let Encoding {
                    enc_out,
                    pre_quant,
                    quant,
                    tokens,
                    token_margins,
                } = tokenizer
                    .encode_detailed(input)
                    .unwrap_or_else(|e| panic!("{name}: encode: {e}"));
                let want = |key: &str| fixture.tensor(&expected[key]);
                assert_tokens_equal(&tokens, want("tokens"), &name);
                worst.check("enc_out", &name, &enc_out, want("enc_out"), TOLERANCE);
                worst.check("pre_quant", &name, &pre_quant, want("pre_quant"), TOLERANCE);
                // With equal tokens the quantizer output is a gather of the same rows: exact.
                worst.check("quant", &name, &quant, want("quant"), 0.0);
                worst.check(
                    "token_margins",
                    &name,
                    &token_margins,
                    want("token_margins"),
                    TOLERANCE,
                );
                // `encode` alone gives the same ids.
                assert_tokens_equal(&tokenizer.encode(input).unwrap(), &tokens, &name);
                tokens
            }
            "decode" => input.clone(),
            other => panic!("{name}: unknown case kind {other}"),
        };
        let decoded = tokenizer
            .decode_tokens_detailed(&tokens)
            .unwrap_or_else(|e| panic!("{name}: decode: {e}"));
        let want = |key: &str| fixture.tensor(&expected[key]);
        worst.check("quant", &name, &decoded.quant, want("quant"), 0.0);
        worst.check(
            "post_quant",
            &name,
            &decoded.post_quant,
            want("post_quant"),
            TOLERANCE,
        );
        worst.check("dec", &name, &decoded.dec, want("dec"), TOLERANCE);
        let dec = tokenizer.decode_tokens(&tokens).unwrap();
        assert_eq!(
            max_abs_diff(&dec, &decoded.dec, &name),
            0.0,
            "{name}: decode_tokens"
        );
    }
    eprintln!(
        "{}: {} cases ok; max abs diff: {}",
        fixture.name(),
        cases.len(),
        worst.report()
    );
    cases.len()
}

/// The named fixture, or `None` when fixtures are absent (skip; fails under CI).
fn fixture_dir(name: &str) -> Option<PathBuf> {
    let dir = vq_root()?.join(name);
    assert!(dir.is_dir(), "fixture {} missing", dir.display());
    Some(dir)
}

#[test]
fn rgb_vit_tokenizer_matches_the_reference() {
    let Some(dir) = fixture_dir("vqvae_rgb_vit_tiny") else {
        return;
    };
    assert!(check_vqvae(&dir) >= 5);
}

#[test]
fn semseg_tokenizer_matches_the_reference() {
    let Some(dir) = fixture_dir("vqvae_semseg_vit_tiny") else {
        return;
    };
    assert!(check_vqvae(&dir) >= 3);
}

#[test]
fn feature_map_tokenizer_matches_the_reference() {
    let Some(dir) = fixture_dir("vqvae_featmap_vit_tiny") else {
        return;
    };
    assert!(check_vqvae(&dir) >= 3);
}

#[test]
fn global_memcodes_tokenizer_matches_the_reference() {
    let Some(dir) = fixture_dir("vqvae_global_mlp_memcodes") else {
        return;
    };
    assert!(check_vqvae(&dir) >= 2);
}

/// Any further VQ-VAE fixture directory is checked the same way.
#[test]
fn every_other_vqvae_fixture_matches_the_reference() {
    let Some(root) = vq_root() else { return };
    let named = [
        "vqvae_rgb_vit_tiny",
        "vqvae_semseg_vit_tiny",
        "vqvae_featmap_vit_tiny",
        "vqvae_global_mlp_memcodes",
    ];
    let all = tokenizer_dirs(&root, "VQVAE");
    assert!(all.len() >= named.len(), "VQVAE fixtures: {all:?}");
    for dir in all {
        if !named.iter().any(|n| dir.ends_with(n)) {
            check_vqvae(&dir);
        }
    }
}

/// The DiVAE: encoder and quantizer, the DDIM schedule, every UNet evaluation of every sampling
/// step (fed the reference's own `x_t`), every scheduler update, and the whole sampling loop from
/// the reference's initial noise.
#[test]
fn divae_matches_the_reference() {
    let Some(root) = vq_root() else { return };
    let dirs = tokenizer_dirs(&root, "DiVAE");
    assert!(
        !dirs.is_empty(),
        "no DiVAE fixtures under {}",
        root.display()
    );
    for dir in dirs {
        let fixture = ModelFixture::open(&dir);
        let tokenizer = load(&dir);
        assert!(tokenizer.can_decode() && tokenizer.is_diffusion());
        let scheduler = tokenizer.diffusion_scheduler().unwrap();
        let mut worst = Worst::default();
        let expected_alphas = fixture.tensor(&fixture.cases["scheduler"]["alphas_cumprod"]);
        let alphas = Tensor::new(scheduler.alphas_cumprod(), &Device::Cpu).unwrap();
        worst.check(
            "alphas_cumprod",
            &fixture.name(),
            &alphas,
            expected_alphas,
            1e-6,
        );
        let mut checked = 0;
        for case in fixture.cases_of("cases") {
            let name = format!("{}/{}", fixture.name(), case["name"].as_str().unwrap());
            let want = |key: &str| fixture.tensor(&case["expected"][key]);
            match case["kind"].as_str().unwrap() {
                "encode" => {
                    let out = tokenizer
                        .encode_detailed(fixture.tensor(&case["input"]))
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_tokens_equal(&out.tokens, want("tokens"), &name);
                    worst.check("enc_out", &name, &out.enc_out, want("enc_out"), TOLERANCE);
                    worst.check(
                        "pre_quant",
                        &name,
                        &out.pre_quant,
                        want("pre_quant"),
                        TOLERANCE,
                    );
                    worst.check("quant", &name, &out.quant, want("quant"), 0.0);
                    if case["expected"].get("token_margins").is_some() {
                        worst.check(
                            "token_margins",
                            &name,
                            &out.token_margins,
                            want("token_margins"),
                            TOLERANCE,
                        );
                    }
                }
                "diffusion_decode" => {
                    assert_eq!(case["timestep_mode"], "trailing", "{name}");
                    let steps = case["num_steps"].as_u64().unwrap() as usize;
                    let timesteps: Vec<usize> = case["timesteps"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t.as_u64().unwrap() as usize)
                        .collect();
                    assert_eq!(
                        scheduler
                            .timesteps(steps, TimestepSpacing::Trailing)
                            .unwrap(),
                        timesteps,
                        "{name}: timesteps"
                    );
                    // The conditioning is the raw codebook look-up.
                    let tokens = fixture.tensor(&case["tokens"]);
                    let cond = tokenizer.tokens_to_embedding(tokens).unwrap();
                    worst.check(
                        "cond_quant",
                        &name,
                        &cond,
                        fixture.tensor(&case["cond_quant"]),
                        0.0,
                    );
                    let noise = fixture.tensor(&case["noise"]);
                    let step_cases = case["steps"].as_array().unwrap();
                    assert_eq!(step_cases.len(), timesteps.len(), "{name}: steps");
                    for (i, step) in step_cases.iter().enumerate() {
                        let t = step["t"].as_u64().unwrap() as usize;
                        let model_in = fixture.tensor(&step["model_in"]);
                        if i == 0 {
                            worst.check("model_in[0] = noise", &name, model_in, noise, 0.0);
                        }
                        let out = tokenizer
                            .diffusion_model_output(model_in, t, &cond)
                            .unwrap_or_else(|e| panic!("{name} step {i}: {e}"));
                        let expected_out = fixture.tensor(&step["model_out"]);
                        worst.check("model_out", &name, &out, expected_out, TOLERANCE);
                        // The scheduler update from the reference's own tensors.
                        let next = scheduler.step(expected_out, t, model_in, steps).unwrap();
                        let expected_next = match step_cases.get(i + 1) {
                            Some(s) => fixture.tensor(&s["model_in"]),
                            None => want("dec"),
                        };
                        worst.check("ddim_step", &name, &next, expected_next, TOLERANCE);
                    }
                    let options = DiffusionOptions {
                        steps,
                        spacing: TimestepSpacing::Trailing,
                        noise: Some(noise.clone()),
                        ..DiffusionOptions::default()
                    };
                    let dec = tokenizer
                        .decode_tokens_with(tokens, &options)
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    worst.check("dec", &name, &dec, want("dec"), TOLERANCE);
                }
                other => panic!("{name}: unknown case kind {other}"),
            }
            checked += 1;
        }
        assert!(checked >= 3);
        eprintln!(
            "{}: {checked} cases ok; max abs diff: {}",
            fixture.name(),
            worst.report()
        );
    }
}

#[test]
fn bare_safetensors_with_header_config_gives_the_same_tokens() {
    let Some(root) = vq_root() else { return };
    for dir in tokenizer_dirs(&root, "VQVAE") {
        let fixture = ModelFixture::open(&dir);
        let from_dir = load(&dir);
        let from_file = VqTokenizer::load(dir.join("model.safetensors"), &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", fixture.name()));
        assert_eq!(from_dir.config(), from_file.config(), "{}", fixture.name());
        let case = fixture
            .cases_of("cases")
            .into_iter()
            .find(|c| c["kind"] == "roundtrip")
            .expect("a roundtrip case");
        let input = fixture.tensor(&case["input"]);
        assert_tokens_equal(
            &from_file.encode(input).unwrap(),
            &from_dir.encode(input).unwrap(),
            &fixture.name(),
        );
    }
}

fn load_err(path: &Path) -> ModelError {
    VqTokenizer::load(path, &LoadOptions::default()).expect_err("loading must fail")
}

#[test]
fn broken_checkpoints_are_refused_by_tensor_name() {
    let Some(dir) = fixture_dir("vqvae_semseg_vit_tiny") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();

    let path = rewrite(&dir, tmp.path(), true, |entries| {
        entries.retain(|e| e.name != "decoder.out_conv.1.gamma")
    });
    let err = load_err(&path);
    assert!(
        matches!(&err, ModelError::MissingTensor { name, .. } if name == "decoder.out_conv.1.gamma"),
        "{err}"
    );

    let path = rewrite(&dir, tmp.path(), true, |entries| {
        let e = entries
            .iter_mut()
            .find(|e| e.name == "quantize._codebook.embed")
            .unwrap();
        e.shape = vec![64, 16]; // same bytes, wrong shape
    });
    let err = load_err(&path);
    assert!(
        matches!(&err, ModelError::ShapeMismatch { name, found, .. }
            if name == "quantize._codebook.embed" && found == &vec![64, 16]),
        "{err}"
    );

    let path = rewrite(&dir, tmp.path(), true, |entries| {
        let mut extra = entries
            .iter()
            .find(|e| e.name == "cls_emb.weight")
            .map(|e| crate::loading::Entry {
                name: "cls_emb.extra".into(),
                dtype: e.dtype,
                shape: e.shape.clone(),
                data: e.data.clone(),
            })
            .unwrap();
        extra.shape = vec![extra.data.len() / 4];
        entries.push(extra);
    });
    let err = load_err(&path);
    assert!(
        matches!(&err, ModelError::UnexpectedTensors { names } if names == &vec!["cls_emb.extra".to_owned()]),
        "{err}"
    );

    let path = rewrite(&dir, tmp.path(), false, |_| {});
    let err = load_err(&path);
    assert!(matches!(err, ModelError::MissingConfig { .. }), "{err}");

    // A config value the implementation does not know.
    let config_dir = tmp.path().join("unknown_quantizer");
    std::fs::create_dir_all(&config_dir).unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["quant_type"] = "fsq".into();
    std::fs::write(config_dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        rewrite(&dir, tmp.path(), false, |_| {}),
        config_dir.join("model.safetensors"),
    )
    .unwrap();
    let err = load_err(&config_dir);
    assert!(
        matches!(err, ModelError::UnsupportedConfig { .. }) && err.to_string().contains("fsq"),
        "{err}"
    );
}

#[test]
fn bad_inputs_are_refused_with_clear_errors() {
    let Some(root) = vq_root() else { return };
    let cpu = Device::Cpu;
    let rgb = load(&root.join("vqvae_rgb_vit_tiny"));
    let invalid = |r: tessera_model::Result<Tensor>, needle: &str| {
        let err = r.expect_err("must fail");
        assert!(
            matches!(
                err,
                ModelError::InvalidInput { .. } | ModelError::TokenOutOfRange { .. }
            ) && err.to_string().contains(needle),
            "expected an input error mentioning `{needle}`, got: {err}"
        );
    };
    invalid(
        rgb.encode(&Tensor::zeros((1, 3, 50, 64), DType::F32, &cpu).unwrap()),
        "patch size",
    );
    invalid(
        rgb.encode(&Tensor::zeros((1, 4, 64, 64), DType::F32, &cpu).unwrap()),
        "3 channels",
    );
    invalid(
        rgb.encode(&Tensor::zeros((3, 64, 64), DType::F32, &cpu).unwrap()),
        "(B, 3, H, W)",
    );
    invalid(
        rgb.encode(&Tensor::zeros((1, 3, 64, 64), DType::I64, &cpu).unwrap()),
        "floating",
    );
    invalid(
        rgb.encode(&Tensor::zeros((0, 3, 64, 64), DType::F32, &cpu).unwrap()),
        "empty",
    );
    invalid(
        rgb.decode_tokens(&Tensor::new(&[[[0i64, 256]]], &cpu).unwrap()),
        "out of range",
    );
    invalid(
        rgb.decode_tokens(&Tensor::new(&[[[-1i64, 2]]], &cpu).unwrap()),
        "-1",
    );
    invalid(
        rgb.decode_tokens(&Tensor::new(&[[0i64, 2]], &cpu).unwrap()),
        "(B, h, w)",
    );
    invalid(
        rgb.decode_tokens(&Tensor::new(&[[[0.5f32]]], &cpu).unwrap()),
        "integer",
    );
    invalid(
        rgb.decode_quant(&Tensor::zeros((1, 8, 2, 2), DType::F32, &cpu).unwrap()),
        "(B, 16, h, w)",
    );

    let semseg = load(&root.join("vqvae_semseg_vit_tiny"));
    invalid(
        semseg.encode(&Tensor::zeros((1, 16, 32, 32), DType::F32, &cpu).unwrap()),
        "class ids (B, H, W)",
    );
    let ids = Tensor::full(12i64, (1, 32, 32), &cpu).unwrap();
    invalid(semseg.encode(&ids), "out of range");

    let memcodes = load(&root.join("vqvae_global_mlp_memcodes"));
    invalid(
        memcodes.decode_tokens(&Tensor::zeros((1, 3, 1, 1), DType::I64, &cpu).unwrap()),
        "(B, 4, h, w)",
    );
    invalid(
        memcodes.decode_tokens(&Tensor::full(128i64, (1, 4, 1, 1), &cpu).unwrap()),
        "out of range",
    );
    // U32 and U8 ids are accepted as well as I64.
    let ids = Tensor::zeros((1, 4, 1, 1), DType::U32, &cpu).unwrap();
    assert_eq!(memcodes.decode_tokens(&ids).unwrap().dims(), &[1, 48, 1, 1]);
}

#[test]
fn divae_bad_sampling_requests_are_refused() {
    let Some(root) = vq_root() else { return };
    let cpu = Device::Cpu;
    let divae = load(&root.join("divae_unet_tiny"));
    let tokens = Tensor::zeros((1, 2, 2), DType::I64, &cpu).unwrap();
    let with = |options: DiffusionOptions| divae.decode_tokens_with(&tokens, &options);
    let invalid = |r: tessera_model::Result<Tensor>, needle: &str| {
        let err = r.expect_err("must fail");
        assert!(
            matches!(err, ModelError::InvalidInput { .. }) && err.to_string().contains(needle),
            "expected an input error mentioning `{needle}`, got: {err}"
        );
    };
    invalid(
        with(DiffusionOptions {
            steps: 0,
            ..DiffusionOptions::default()
        }),
        "0 steps",
    );
    invalid(
        with(DiffusionOptions {
            image_size: Some((30, 32)),
            ..DiffusionOptions::default()
        }),
        "multiple of 8",
    );
    invalid(
        with(DiffusionOptions {
            noise: Some(Tensor::zeros((1, 3, 16, 16), DType::F32, &cpu).unwrap()),
            ..DiffusionOptions::default()
        }),
        "initial noise",
    );
    let sample = Tensor::zeros((1, 3, 32, 32), DType::F32, &cpu).unwrap();
    let quant = divae.tokens_to_embedding(&tokens).unwrap();
    invalid(
        divae.diffusion_model_output(&sample, 1000, &quant),
        "timestep 1000",
    );
    invalid(
        divae.diffusion_model_output(&sample.narrow(1, 0, 2).unwrap(), 999, &quant),
        "(1, 3, H, W)",
    );
    // Default options: 50 seeded steps at the token grid × patch size; deterministic.
    let a = with(DiffusionOptions {
        steps: 2,
        ..DiffusionOptions::default()
    })
    .unwrap();
    let b = with(DiffusionOptions {
        steps: 2,
        ..DiffusionOptions::default()
    })
    .unwrap();
    assert_eq!(a.dims(), &[1, 3, 32, 32]);
    assert_eq!(max_abs_diff(&a, &b, "seeded"), 0.0);
}

/// A DiVAE whose sampler settings are not implemented still tokenizes; decoding says why not.
#[test]
fn divae_with_an_unsupported_sampler_encodes_but_refuses_to_decode() {
    let Some(dir) = fixture_dir("divae_unet_tiny") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["thresholding"] = true.into();
    std::fs::write(tmp.path().join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        rewrite(&dir, tmp.path(), false, |_| {}),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    let tokenizer = load(tmp.path());
    assert!(!tokenizer.can_decode());
    let fixture = ModelFixture::open(&dir);
    let case = &fixture.cases_of("cases")[0];
    let tokens = tokenizer.encode(fixture.tensor(&case["input"])).unwrap();
    assert_tokens_equal(
        &tokens,
        fixture.tensor(&case["expected"]["tokens"]),
        "thresholding",
    );
    let err = tokenizer.decode_tokens(&tokens).unwrap_err();
    assert!(
        matches!(err, ModelError::UnsupportedConfig { .. })
            && err.to_string().contains("thresholding"),
        "{err}"
    );
}

/// Reduced-precision compute (weights converted while loading; scores, post-MLP and GroupNorm in
/// float32): every VQ-VAE fixture case and every DiVAE sampling case runs end to end in BF16 and
/// F16, keeps nearly all token ids and stays close to the float32 reference.
#[test]
fn reduced_precision_tokenizers_stay_close_to_the_reference() {
    let Some(root) = vq_root() else { return };
    for dtype in [DType::BF16, DType::F16] {
        for dir in tokenizer_dirs(&root, "DiVAE") {
            let fixture = ModelFixture::open(&dir);
            let options = LoadOptions {
                dtype,
                device: Device::Cpu,
            };
            let tokenizer = VqTokenizer::load(&dir, &options).unwrap();
            for case in fixture.cases_of("cases") {
                if case["kind"] != "diffusion_decode" {
                    continue;
                }
                let name = format!(
                    "{}/{} {dtype:?}",
                    fixture.name(),
                    case["name"].as_str().unwrap()
                );
                let sampling = DiffusionOptions {
                    steps: case["num_steps"].as_u64().unwrap() as usize,
                    noise: Some(fixture.tensor(&case["noise"]).clone()),
                    ..DiffusionOptions::default()
                };
                let dec = tokenizer
                    .decode_tokens_with(fixture.tensor(&case["tokens"]), &sampling)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(dec.dtype(), dtype, "{name}");
                let want = fixture.tensor(&case["expected"]["dec"]);
                let diff = max_abs_diff(&dec, want, &name);
                let peak = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                let peak = peak.to_scalar::<f32>().unwrap();
                eprintln!("{name}: dec max abs diff {diff:.2e} (max |dec| {peak:.2})");
                // 8 mantissa bits (BF16) through a UNet and the DDIM updates vs 11 (F16).
                let relative = if dtype == DType::BF16 { 0.05 } else { 0.01 };
                assert!(diff <= relative * peak, "{name}: dec differs by {diff}");
            }
        }
        for dir in tokenizer_dirs(&root, "VQVAE") {
            let fixture = ModelFixture::open(&dir);
            let options = LoadOptions {
                dtype,
                device: Device::Cpu,
            };
            let tokenizer = VqTokenizer::load(&dir, &options)
                .unwrap_or_else(|e| panic!("{} {dtype:?}: {e}", fixture.name()));
            let (mut same, mut total, mut worst_dec, mut scale) = (0usize, 0usize, 0f32, 0f32);
            for case in fixture.cases_of("cases") {
                let name = format!(
                    "{}/{} {dtype:?}",
                    fixture.name(),
                    case["name"].as_str().unwrap()
                );
                let input = fixture.tensor(&case["input"]);
                let expected = &case["expected"];
                if case["kind"] == "roundtrip" {
                    let tokens = tokenizer
                        .encode(input)
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    let want = fixture.tensor(&expected["tokens"]);
                    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<i64>().unwrap();
                    let (a, e) = (flat(&tokens), flat(want));
                    same += a.iter().zip(&e).filter(|(x, y)| x == y).count();
                    total += e.len();
                }
                // Decoding the reference tokens isolates the decoder's precision.
                let tokens = match case["kind"].as_str().unwrap() {
                    "roundtrip" => fixture.tensor(&expected["tokens"]),
                    _ => input,
                };
                let dec = tokenizer
                    .decode_tokens(tokens)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(dec.dtype(), dtype, "{name}");
                let want = fixture.tensor(&expected["dec"]);
                worst_dec = worst_dec.max(max_abs_diff(&dec, want, &name));
                let peak = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                scale = scale.max(peak.to_scalar::<f32>().unwrap());
            }
            let agreement = same as f64 / total.max(1) as f64;
            eprintln!(
                "{} {dtype:?}: {same}/{total} tokens equal, dec max abs diff {worst_dec:.2e} (max |dec| {scale:.2})",
                fixture.name()
            );
            assert!(
                agreement >= 0.9,
                "{} {dtype:?}: only {same}/{total} tokens equal",
                fixture.name()
            );
            assert!(
                worst_dec <= 0.02 * scale,
                "{} {dtype:?}: dec differs by {worst_dec} (max |dec| {scale})",
                fixture.name()
            );
        }
    }
}
