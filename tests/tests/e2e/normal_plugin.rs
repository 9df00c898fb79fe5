//! The `normal` plugin in the real sandbox. It shares its implementation with `rgb` (a
//! three-channel [-1, 1] domain); this checks what differs: the domain and graph names, the
//! normal map's `(x - 0.5) / 0.5` input (the fixture RGB tokenizer stands in for the normal one),
//! the `normal` artifact, and that it serves only `tok_normal@224`.

use std::sync::Arc;

use tessera_model::LoadOptions as ModelLoadOptions;
use tessera_model::vq::VqTokenizer;
use tessera_runtime::types::Value;
use tessera_tests::{fixtures, plugin_manifest, plugin_with_tokenizer};

use crate::rgb_plugin::{decode_png, image_value, native_rgb_ids, picture, png_bytes};

const DOMAIN: &str = "tok_normal@224";

#[test]
fn normal_maps_tokenize_like_the_native_tokenizer_and_decode_to_a_normal_png() {
    let Some(root) = fixtures() else {
        return;
    };
    let tokenizer = Arc::new(
        VqTokenizer::load(
            root.join("vq/vqvae_rgb_vit_tiny"),
            &ModelLoadOptions::default(),
        )
        .unwrap(),
    );
    let h = plugin_with_tokenizer(plugin_manifest("normal"), DOMAIN, tokenizer.clone());
    assert_eq!(h.plugin().info().modalities[0].domain, DOMAIN);

    let map = picture(96, 96);
    let tokens = h
        .tokenize(
            DOMAIN,
            &image_value(png_bytes(96, 96, &map)),
            &[("image_size", "96")],
        )
        .expect("tokenize");
    assert_eq!(
        (tokens.domain.as_str(), tokens.shape.as_slice()),
        (DOMAIN, &[6, 6][..])
    );
    assert_eq!(tokens.ids, native_rgb_ids(&tokenizer, 96, &map));

    let out = h.detokenize(&tokens, &[]).expect("detokenize");
    assert_eq!(out.artifacts[0].name, "normal");
    let Value::Image(image) = &out.artifacts[0].value else {
        panic!("expected an image, got {:?}", out.artifacts[0].value);
    };
    assert_eq!(decode_png(&image.data), (96, 96, png::ColorType::Rgb));

    let err = h
        .tokenize(
            "tok_rgb@224",
            &image_value(png_bytes(96, 96, &map)),
            &[("image_size", "96")],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not serve domain `tok_rgb@224`"), "{err}");
}
