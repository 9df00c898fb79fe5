//! The SDK's example plugin (`sdk/examples/mask-patches`), built as a third party would build it
//! and loaded through the plugin test harness into the real sandbox.

use tessera_plugin_test::PluginHarness;
use tessera_runtime::types::{Image, ModalityKind, Tokens, Value};
use tessera_tests::plugin_manifest;

const DOMAIN: &str = "mask_patches@224";

#[test]
fn describes_itself_as_its_manifest_says() {
    let h = PluginHarness::load(plugin_manifest("mask-patches")).unwrap();
    let info = h.plugin().info();
    assert_eq!(info.modalities.len(), 1);
    assert_eq!(info.modalities[0].domain, DOMAIN);
    assert_eq!(info.modalities[0].kind, ModalityKind::ImageTokens);
    assert_eq!(info.modalities[0].max_tokens, Some(196));
}

#[test]
fn a_mask_survives_detokenize_then_tokenize_in_the_sandbox() {
    let h = PluginHarness::load(plugin_manifest("mask-patches")).unwrap();
    let ids: Vec<u32> = (0..196)
        .map(|i| u32::from((i / 14 + i % 14) % 4 == 0))
        .collect();
    let tokens = Tokens {
        domain: DOMAIN.into(),
        ids: ids.clone(),
        shape: vec![14, 14],
    };
    let out = h.detokenize(&tokens, &[]).unwrap();
    let Value::Image(image) = &out.artifacts[0].value else {
        panic!("expected an image")
    };
    assert_eq!(image.mime, "image/png");
    assert!(image.data.starts_with(b"\x89PNG"));
    let back = h.tokenize(DOMAIN, &out.artifacts[0].value, &[]).unwrap();
    assert_eq!(back.ids, ids);
}

#[test]
fn bad_input_gets_a_clear_error() {
    let h = PluginHarness::load(plugin_manifest("mask-patches")).unwrap();
    let err = h
        .tokenize(
            DOMAIN,
            &Value::Image(Image {
                mime: "image/png".into(),
                data: b"not a png".to_vec(),
            }),
            &[],
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mask-patches") && err.contains("not a PNG"),
        "{err}"
    );
    let err = h
        .tokenize(DOMAIN, &Value::Text("x".into()), &[("threshold", "high")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("threshold"), "{err}");
}
