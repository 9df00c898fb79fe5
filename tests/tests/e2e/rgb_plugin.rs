//! The `rgb` plugin in the real sandbox, with the fixture RGB tokenizer (`vqvae_rgb_vit_tiny`,
//! image size 96, patch 16, 256 codes) registered as the host-nn graphs `tok_rgb@224/encode` and
//! `tok_rgb@224/decode`: token grids equal to the tokenizer called natively, PNG out, bad input.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use tessera_model::LoadOptions as ModelLoadOptions;
use tessera_model::vq::VqTokenizer;
use tessera_plugin_test::PluginHarness;
use tessera_runtime::types::{Image, Tokens, Value};
use tessera_runtime::{LoadOptions, NoGraphs, RuntimeError};
use tessera_tests::{fixtures, native_decode, plugin_manifest, plugin_with_tokenizer};

const DOMAIN: &str = "tok_rgb@224";

fn setup() -> Option<(PluginHarness, Arc<VqTokenizer>)> {
    let dir = fixtures()?.join("vq/vqvae_rgb_vit_tiny");
    let tokenizer = Arc::new(VqTokenizer::load(&dir, &ModelLoadOptions::default()).unwrap());
    let harness = plugin_with_tokenizer(plugin_manifest("rgb"), DOMAIN, tokenizer.clone());
    Some((harness, tokenizer))
}

/// A deterministic, structured test picture (RGB8, row-major).
pub(crate) fn picture(width: u32, height: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity(3 * (width * height) as usize);
    for y in 0..height {
        for x in 0..width {
            let r = (x * 255 / width.max(1)) as u8;
            let g = (y * 255 / height.max(1)) as u8;
            let b = if (x / 8 + y / 8) % 2 == 0 { 220 } else { 30 };
            data.extend_from_slice(&[r, g, b]);
        }
    }
    data
}

pub(crate) fn png_bytes(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(rgb).unwrap();
    }
    out
}

pub(crate) fn image_value(bytes: Vec<u8>) -> Value {
    Value::Image(Image {
        mime: "image/png".into(),
        data: bytes,
    })
}

/// The tokenizer called natively on `(x / 255 - 0.5) / 0.5`, channels first.
pub(crate) fn native_rgb_ids(tokenizer: &VqTokenizer, size: u32, rgb: &[u8]) -> Vec<u32> {
    let n = (size * size) as usize;
    let mut chw = vec![0f32; 3 * n];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            chw[c * n + i] = (f32::from(px[c]) / 255.0 - 0.5) / 0.5;
        }
    }
    let input = Tensor::from_vec(chw, (1, 3, size as usize, size as usize), &Device::Cpu).unwrap();
    tessera_tests::native_ids(tokenizer, &input)
}

pub(crate) fn decode_png(bytes: &[u8]) -> (u32, u32, png::ColorType) {
    let decoder = png::Decoder::new(bytes);
    let mut reader = decoder.read_info().expect("a valid PNG header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).expect("valid PNG data");
    (frame.width, frame.height, frame.color_type)
}

#[test]
fn rgb_tokens_equal_the_native_tokenizer_and_detokenize_gives_a_png() {
    let Some((h, tokenizer)) = setup() else {
        return;
    };
    // A 96x96 picture: the crop and resize are the identity, so the plugin's input to the graph
    // is exactly the normalised picture and the ids must equal the native tokenizer's.
    let rgb = picture(96, 96);
    let tokens = h
        .tokenize(
            DOMAIN,
            &image_value(png_bytes(96, 96, &rgb)),
            &[("image_size", "96")],
        )
        .expect("tokenize");
    assert_eq!(tokens.domain, DOMAIN);
    assert_eq!(tokens.shape, vec![6, 6]);
    assert_eq!(tokens.ids.len(), 36);
    let codebook = tokenizer.codebook_size() as u32;
    assert!(
        tokens.ids.iter().all(|&id| id < codebook),
        "{:?}",
        tokens.ids
    );
    assert_eq!(tokens.ids, native_rgb_ids(&tokenizer, 96, &rgb));
    // Not a constant grid: the picture has structure.
    assert!(tokens.ids.iter().any(|&id| id != tokens.ids[0]));

    let out = h.detokenize(&tokens, &[]).expect("detokenize");
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(out.artifacts[0].name, "image");
    let Value::Image(image) = &out.artifacts[0].value else {
        panic!("expected an image, got {:?}", out.artifacts[0].value);
    };
    assert_eq!(image.mime, "image/png");
    assert_eq!(decode_png(&image.data), (96, 96, png::ColorType::Rgb));

    // A flat sequence of 36 ids (as `tessera detokenize` sends) is the same 6x6 grid.
    let flat = Tokens {
        domain: DOMAIN.into(),
        ids: tokens.ids.clone(),
        shape: vec![36],
    };
    let again = h.detokenize(&flat, &[]).expect("detokenize a flat square");
    assert_eq!(again.artifacts[0].value, out.artifacts[0].value);

    // The decoded pixels are the native decoder's, de-normalised.
    let dec = native_decode(&tokenizer, &tokens.ids, (6, 6));
    let mut reader = png::Decoder::new(&image.data[..]).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    reader.next_frame(&mut buf).unwrap();
    let n = 96 * 96;
    for (i, px) in buf.chunks_exact(3).enumerate().step_by(97) {
        for c in 0..3 {
            let expected = (((dec[c * n + i] + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).round() as u8;
            assert_eq!(px[c], expected, "pixel {i} channel {c}");
        }
    }
}

#[test]
fn other_sizes_are_cropped_and_resized_to_the_grid() {
    let Some((h, tokenizer)) = setup() else {
        return;
    };
    let codebook = tokenizer.codebook_size() as u32;
    for (w, hgt) in [(200, 150), (64, 130), (96, 97)] {
        let tokens = h
            .tokenize(
                DOMAIN,
                &image_value(png_bytes(w, hgt, &picture(w, hgt))),
                &[("image_size", "96")],
            )
            .unwrap_or_else(|e| panic!("{w}x{hgt}: {e}"));
        assert_eq!(tokens.shape, vec![6, 6], "{w}x{hgt}");
        assert!(tokens.ids.iter().all(|&id| id < codebook));
    }
    // A larger side gives a larger grid from the same tokenizer (its positions are resized).
    let tokens = h
        .tokenize(
            DOMAIN,
            &image_value(png_bytes(50, 50, &picture(50, 50))),
            &[("image_size", "128")],
        )
        .unwrap();
    assert_eq!(tokens.shape, vec![8, 8]);
    // Grey-scale PNGs are accepted too.
    let mut grey = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut grey, 40, 40);
        encoder.set_color(png::ColorType::Grayscale);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[128; 1600]).unwrap();
    }
    let tokens = h
        .tokenize(DOMAIN, &image_value(grey), &[("image_size", "96")])
        .unwrap();
    assert_eq!(tokens.shape, vec![6, 6]);
}

fn invalid_input(result: Result<impl std::fmt::Debug, RuntimeError>) -> String {
    let err = result.expect_err("bad input must fail");
    let message = err.to_string();
    assert!(message.contains("rgb"), "{message}");
    message
}

#[test]
fn bad_input_is_refused_clearly() {
    let Some((h, _)) = setup() else {
        return;
    };
    let m = invalid_input(h.tokenize(DOMAIN, &Value::Text("a cat".into()), &[]));
    assert!(m.contains("expected an image, got a text value"), "{m}");
    let m = invalid_input(h.tokenize(DOMAIN, &image_value(b"GIF89a....".to_vec()), &[]));
    assert!(m.contains("not a PNG or JPEG image"), "{m}");
    let full = png_bytes(96, 96, &picture(96, 96));
    let m = invalid_input(h.tokenize(
        DOMAIN,
        &image_value(full[..full.len() / 2].to_vec()),
        &[("image_size", "96")],
    ));
    assert!(m.contains("cannot decode the PNG image"), "{m}");
    let m = invalid_input(h.tokenize(DOMAIN, &image_value(full.clone()), &[("image_size", "100")]));
    assert!(
        m.contains("image_size") && m.contains("multiple of 16"),
        "{m}"
    );
    let m = invalid_input(h.tokenize(DOMAIN, &image_value(full.clone()), &[("size", "96")]));
    assert!(m.contains("unknown parameter `size`"), "{m}");

    let grid = |ids: Vec<u32>, shape: Vec<u32>| Tokens {
        domain: DOMAIN.into(),
        ids,
        shape,
    };
    let m = invalid_input(h.detokenize(&grid(vec![1, 2, 3], vec![2, 2]), &[]));
    assert!(m.contains("3 ids do not fill the grid [2, 2]"), "{m}");
    let m = invalid_input(h.detokenize(&grid(vec![1, 2, 3, 4, 5], vec![5]), &[]));
    assert!(
        m.contains("5 ids in a flat sequence are not a square grid"),
        "{m}"
    );
    let m = invalid_input(h.detokenize(&grid(vec![1, 2], vec![1, 1, 2]), &[]));
    assert!(m.contains("expected a grid [h, w]"), "{m}");
    // An id inside the domain's vocabulary but outside this tokenizer's 256 codes: the host
    // graph refuses it, naming the tensor and element.
    let m = invalid_input(h.detokenize(&grid(vec![0, 1, 300, 2], vec![2, 2]), &[]));
    assert!(
        m.contains("tok_rgb@224/decode") && m.contains("element 2 is 300"),
        "{m}"
    );
    let m = invalid_input(h.detokenize(&grid(vec![0, 1, 20000, 2], vec![2, 2]), &[]));
    assert!(m.contains("token 2 is 20000"), "{m}");
    // The plugin still works after refusing all of that.
    assert!(
        h.tokenize(DOMAIN, &image_value(full), &[("image_size", "96")])
            .is_ok()
    );
}

#[test]
fn without_the_tokenizer_the_plugin_says_which_graph_is_missing() {
    let Some(_) = fixtures() else {
        return;
    };
    let h = PluginHarness::load_with(
        plugin_manifest("rgb"),
        &LoadOptions::default(),
        Arc::new(NoGraphs),
    )
    .expect("rgb plugin loads without graphs");
    let png = png_bytes(32, 32, &picture(32, 32));
    let m = invalid_input(h.tokenize(DOMAIN, &image_value(png), &[("image_size", "96")]));
    assert!(
        m.contains("no graph named `tok_rgb@224/encode` is registered"),
        "{m}"
    );
}

#[test]
fn a_divae_tokenizer_decodes_with_steps_and_seed() {
    let Some(root) = fixtures() else {
        return;
    };
    let dir = root.join("vq/divae_unet_tiny");
    let tokenizer = Arc::new(VqTokenizer::load(&dir, &ModelLoadOptions::default()).unwrap());
    assert!(tokenizer.is_diffusion());
    let h = plugin_with_tokenizer(plugin_manifest("rgb"), DOMAIN, tokenizer.clone());
    let tokens = h
        .tokenize(
            DOMAIN,
            &image_value(png_bytes(48, 40, &picture(48, 40))),
            &[("image_size", "32")],
        )
        .unwrap();
    assert_eq!(tokens.shape, vec![2, 2]);
    assert!(
        tokens
            .ids
            .iter()
            .all(|&id| id < tokenizer.codebook_size() as u32)
    );
    let params = [("steps", "2"), ("seed", "7")];
    let a = h.detokenize(&tokens, &params).unwrap();
    let b = h.detokenize(&tokens, &params).unwrap();
    assert_eq!(
        a.artifacts[0].value, b.artifacts[0].value,
        "same seed, same image"
    );
    let Value::Image(image) = &a.artifacts[0].value else {
        panic!("expected an image");
    };
    let ids = Tensor::from_vec(
        tokens.ids.iter().map(|&v| i64::from(v)).collect::<Vec<_>>(),
        (1, 2, 2),
        &Device::Cpu,
    )
    .unwrap();
    let options = tessera_model::vq::DiffusionOptions {
        steps: 2,
        seed: 7,
        ..Default::default()
    };
    let native = tokenizer.decode_tokens_with(&ids, &options).unwrap();
    let (_, _, hh, ww) = native.dims4().unwrap();
    assert_eq!(
        decode_png(&image.data),
        (ww as u32, hh as u32, png::ColorType::Rgb)
    );
    let m = invalid_input(h.detokenize(&tokens, &[("steps", "0")]));
    assert!(m.contains("`steps` = 0"), "{m}");
}
