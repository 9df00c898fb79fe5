//! The `semseg` plugin in the real sandbox with the fixture semseg tokenizer
//! (`vqvae_semseg_vit_tiny`: 12 classes, 64 pixels, 4x4 tokens) registered as `tok_semseg@224`.
//! The installed plugin is copied with a 12-class list in its config. Checks: the ids equal the
//! tokenizer called natively on the label map, a colour map reads the same through the class
//! colours, the decoded palette PNG is the arg-max of the native decoder's logits with a legend,
//! and bad maps and a class list that does not fit the tokenizer are refused clearly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use tessera_model::LoadOptions as ModelLoadOptions;
use tessera_model::vq::VqTokenizer;
use tessera_plugin_test::PluginHarness;
use tessera_runtime::types::Value;
use tessera_tests::{fixtures, native_decode, native_ids, plugin_manifest, plugin_with_tokenizer};

use crate::rgb_plugin::{image_value, png_bytes};

const DOMAIN: &str = "tok_semseg@224";
const CLASSES: usize = 12;
const SIDE: u32 = 64;

fn colour(class: usize) -> [u8; 3] {
    [
        (class * 20) as u8,
        (255 - class * 20) as u8,
        (class * 7) as u8,
    ]
}

/// The installed plugin, copied into `dir` with the fixture tokenizer's 12 classes configured.
fn twelve_class_plugin(dir: &Path) -> PathBuf {
    let installed = plugin_manifest("semseg");
    for entry in std::fs::read_dir(installed.parent().unwrap()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let names: Vec<String> = (0..CLASSES).map(|c| format!("class{c}")).collect();
    let colours: Vec<String> = (0..CLASSES)
        .map(|c| {
            let [r, g, b] = colour(c);
            format!("#{r:02x}{g:02x}{b:02x}")
        })
        .collect();
    let manifest = dir.join("plugin.toml");
    let text: String = std::fs::read_to_string(&manifest)
        .unwrap()
        .lines()
        .map(|line| {
            if line.starts_with("classes =") {
                format!("classes = \"{}\"\n", names.join(","))
            } else if line.starts_with("colours =") {
                format!("colours = \"{}\"\n", colours.join(","))
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    std::fs::write(&manifest, text).unwrap();
    manifest
}

fn setup(
    manifest: impl Fn(&Path) -> PathBuf,
) -> Option<(PluginHarness, Arc<VqTokenizer>, tempfile::TempDir)> {
    let dir = fixtures()?.join("vq/vqvae_semseg_vit_tiny");
    let tokenizer = Arc::new(VqTokenizer::load(&dir, &ModelLoadOptions::default()).unwrap());
    let temp = tempfile::tempdir().unwrap();
    let harness = plugin_with_tokenizer(manifest(temp.path()), DOMAIN, tokenizer.clone());
    Some((harness, tokenizer, temp))
}

/// A label map of rectangular regions covering every class.
fn label_map() -> Vec<u8> {
    (0..SIDE * SIDE)
        .map(|i| (((i % SIDE) / 11 + 3 * ((i / SIDE) / 22)) as usize % CLASSES) as u8)
        .collect()
}

fn indexed_png(ids: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, SIDE, SIDE);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_palette((0..CLASSES).flat_map(colour).collect::<Vec<u8>>());
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(ids).unwrap();
    }
    out
}

/// The raw samples of a PNG (indices for an indexed one) and its colour type.
fn png_samples(bytes: &[u8]) -> (Vec<u8>, png::ColorType) {
    let mut decoder = png::Decoder::new(bytes);
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).unwrap();
    buf.truncate(frame.buffer_size());
    (buf, frame.color_type)
}

#[test]
fn label_maps_tokenize_natively_and_decode_to_the_argmax_palette_png_with_a_legend() {
    let Some((h, tokenizer, _dir)) = setup(twelve_class_plugin) else {
        return;
    };
    let ids = label_map();
    let size = [("image_size", "64")];
    let tokens = h
        .tokenize(DOMAIN, &image_value(indexed_png(&ids)), &size)
        .expect("tokenize");
    assert_eq!(tokens.shape, vec![4, 4]);
    let input = Tensor::from_vec(
        ids.iter().map(|&v| i64::from(v)).collect::<Vec<_>>(),
        (1, SIDE as usize, SIDE as usize),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(tokens.ids, native_ids(&tokenizer, &input));

    // The same map as colours reads through the class colours to the same tokens.
    let rgb: Vec<u8> = ids.iter().flat_map(|&c| colour(usize::from(c))).collect();
    let from_colours = h
        .tokenize(DOMAIN, &image_value(png_bytes(SIDE, SIDE, &rgb)), &size)
        .expect("tokenize a colour map");
    assert_eq!(from_colours.ids, tokens.ids);

    let out = h.detokenize(&tokens, &[]).expect("detokenize");
    assert_eq!(out.artifacts[0].name, "segmentation");
    let Value::Image(image) = &out.artifacts[0].value else {
        panic!("expected an image, got {:?}", out.artifacts[0].value);
    };
    let (decoded, colour_type) = png_samples(&image.data);
    assert_eq!(colour_type, png::ColorType::Indexed);
    let logits = native_decode(&tokenizer, &tokens.ids, (4, 4));
    let plane = (SIDE * SIDE) as usize;
    let expected: Vec<u8> = (0..plane)
        .map(|p| {
            (0..CLASSES)
                .max_by(|&a, &b| logits[a * plane + p].total_cmp(&logits[b * plane + p]))
                .unwrap() as u8
        })
        .collect();
    assert_eq!(decoded, expected);

    assert_eq!(out.artifacts[1].name, "legend");
    let Value::Json(legend) = &out.artifacts[1].value else {
        panic!("expected JSON, got {:?}", out.artifacts[1].value);
    };
    let legend: serde_json::Value = serde_json::from_str(legend).unwrap();
    let classes = legend["classes"].as_array().unwrap();
    assert_eq!(classes.len(), CLASSES);
    assert_eq!(classes[3]["name"], "class3");
    assert_eq!(classes[3]["colour"], "#3cc315");
    let counted: u64 = classes.iter().map(|c| c["pixels"].as_u64().unwrap()).sum();
    assert_eq!(counted, plane as u64);
    let threes = expected.iter().filter(|&&c| c == 3).count() as u64;
    assert_eq!(classes[3]["pixels"], threes);
}

#[test]
fn bad_maps_and_a_class_list_that_does_not_fit_the_tokenizer_are_refused() {
    let Some((h, _, _dir)) = setup(twelve_class_plugin) else {
        return;
    };
    let size = [("image_size", "64")];
    let mut ids = label_map();
    ids[5 * SIDE as usize + 7] = 12;
    let err = h
        .tokenize(DOMAIN, &image_value(indexed_png(&ids)), &size)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pixel (7, 5) of the resized map has id 12"),
        "{err}"
    );
    let err = h
        .tokenize(
            DOMAIN,
            &image_value(vec![0xff, 0xd8, 0xff, 0xe0, 0, 16]),
            &size,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("lossy"), "{err}");
    let mut rgb: Vec<u8> = label_map()
        .iter()
        .flat_map(|&c| colour(usize::from(c)))
        .collect();
    rgb[..3].copy_from_slice(&[1, 2, 3]);
    let err = h
        .tokenize(DOMAIN, &image_value(png_bytes(SIDE, SIDE, &rgb)), &size)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pixel (0, 0) has the colour #010203"), "{err}");

    // The installed plugin lists the shapes world's 6 classes: a 12-class tokenizer's logits
    // do not fit them, and the error says what to change.
    let Some((world, _, _dir)) = setup(|_| plugin_manifest("semseg")) else {
        return;
    };
    let ids: Vec<u8> = label_map().iter().map(|&c| c % 6).collect();
    let tokens = world
        .tokenize(DOMAIN, &image_value(indexed_png(&ids)), &size)
        .expect("ids below 6 fit both class lists");
    let err = world.detokenize(&tokens, &[]).unwrap_err().to_string();
    assert!(
        err.contains("12 channels, expected 6") && err.contains("config lists 6 classes"),
        "{err}"
    );
}
