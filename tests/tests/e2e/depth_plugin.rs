//! The `depth` plugin in the real sandbox. There is no one-channel tokenizer among the fixtures, so
//! the test derives one from `vqvae_rgb_vit_tiny` at run time (in a temporary directory): the
//! first input channel of the patch embedding and the first output channel of the decoder
//! projection, with `n_channels = 1`. Checks: the ids equal the tokenizer called natively on the
//! reference's depth standardisation of the same map, a 16-bit and a colour-mapped PNG come back,
//! bad input is refused.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use tessera_model::LoadOptions as ModelLoadOptions;
use tessera_model::vq::VqTokenizer;
use tessera_runtime::types::{Image, Value};
use tessera_tests::{fixtures, native_ids, plugin_manifest, plugin_with_tokenizer};

const DOMAIN: &str = "tok_depth@224";

fn one_channel_tokenizer(dir: &std::path::Path) -> Option<VqTokenizer> {
    let rgb = fixtures()?.join("vq/vqvae_rgb_vit_tiny");
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(rgb.join("model.safetensors"), &Device::Cpu).unwrap();
    let take =
        |t: &Tensor, dim: usize, len: usize| t.narrow(dim, 0, len).unwrap().contiguous().unwrap();
    let w = take(&tensors["encoder.proj.weight"], 1, 1);
    tensors.insert("encoder.proj.weight".into(), w);
    // Decoder rows are ordered (c, ph, pw): channel 0 is the first 16 * 16 rows.
    let w = take(&tensors["decoder.out_proj.weight"], 0, 256);
    let b = take(&tensors["decoder.out_proj.bias"], 0, 256);
    tensors.insert("decoder.out_proj.weight".into(), w);
    tensors.insert("decoder.out_proj.bias".into(), b);
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rgb.join("config.json")).unwrap()).unwrap();
    config["n_channels"] = 1.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    Some(VqTokenizer::load(dir, &ModelLoadOptions::default()).expect("derived tokenizer loads"))
}

fn grey16_png(width: u32, height: u32, samples: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Sixteen);
        let mut writer = encoder.write_header().unwrap();
        let bytes: Vec<u8> = samples.iter().flat_map(|v| v.to_be_bytes()).collect();
        writer.write_image_data(&bytes).unwrap();
    }
    out
}

/// A room-like depth map in 16-bit units: a slanted floor plus a box in front.
fn depth_map(width: u32, height: u32) -> Vec<u16> {
    let mut out = Vec::new();
    for y in 0..height {
        for x in 0..width {
            let floor = 20_000 + 300 * (height - y) + 17 * x;
            let near = (30..60).contains(&x) && (40..80).contains(&y);
            out.push(if near { 9_000 + 11 * x } else { floor } as u16);
        }
    }
    out
}

/// The reference's `TruncatedDepthStandardization` (threshold 0.1), written out independently.
fn standardise(values: &[f64]) -> Vec<f32> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let kept = &sorted[(0.1 * n as f64) as usize..(0.9 * n as f64) as usize];
    let mean = kept.iter().sum::<f64>() / kept.len() as f64;
    let var = kept.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (kept.len() - 1) as f64;
    values
        .iter()
        .map(|v| ((v - mean) / (var + 1e-6).sqrt()) as f32)
        .collect()
}

fn png_info(bytes: &[u8]) -> (u32, u32, png::ColorType, png::BitDepth, Vec<u8>) {
    let mut reader = png::Decoder::new(bytes).read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).expect("PNG data");
    buf.truncate(frame.buffer_size());
    (
        frame.width,
        frame.height,
        frame.color_type,
        frame.bit_depth,
        buf,
    )
}

fn image_value(data: Vec<u8>) -> Value {
    Value::Image(Image {
        mime: "image/png".into(),
        data,
    })
}

#[test]
fn depth_tokens_follow_the_reference_standardisation_and_render_two_pngs() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(tokenizer) = one_channel_tokenizer(tmp.path()) else {
        return;
    };
    let tokenizer = Arc::new(tokenizer);
    let h = plugin_with_tokenizer(plugin_manifest("depth"), DOMAIN, tokenizer.clone());

    let samples = depth_map(96, 96);
    let tokens = h
        .tokenize(
            DOMAIN,
            &image_value(grey16_png(96, 96, &samples)),
            &[("image_size", "96")],
        )
        .expect("tokenize");
    assert_eq!(tokens.shape, vec![6, 6]);
    assert!(
        tokens
            .ids
            .iter()
            .all(|&id| id < tokenizer.codebook_size() as u32)
    );

    let values: Vec<f64> = samples.iter().map(|&v| f64::from(v) / 65535.0).collect();
    let input = Tensor::from_vec(standardise(&values), (1, 1, 96, 96), &Device::Cpu).unwrap();
    assert_eq!(tokens.ids, native_ids(&tokenizer, &input));

    let out = h.detokenize(&tokens, &[]).expect("detokenize");
    let names: Vec<&str> = out.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, vec!["depth", "depth-turbo"]);
    let Value::Image(depth) = &out.artifacts[0].value else {
        panic!("depth is not an image");
    };
    let (w, hh, color, bits, buf) = png_info(&depth.data);
    assert_eq!(
        (w, hh, color, bits),
        (96, 96, png::ColorType::Grayscale, png::BitDepth::Sixteen)
    );
    let levels: Vec<u16> = buf
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(levels.iter().min(), Some(&0), "min-max normalised");
    assert_eq!(levels.iter().max(), Some(&65535), "min-max normalised");
    let Value::Image(turbo) = &out.artifacts[1].value else {
        panic!("depth-turbo is not an image");
    };
    let (w, hh, color, bits, _) = png_info(&turbo.data);
    assert_eq!(
        (w, hh, color, bits),
        (96, 96, png::ColorType::Rgb, png::BitDepth::Eight)
    );
}

#[test]
fn colour_and_broken_depth_inputs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(tokenizer) = one_channel_tokenizer(tmp.path()) else {
        return;
    };
    let h = plugin_with_tokenizer(plugin_manifest("depth"), DOMAIN, Arc::new(tokenizer));
    let mut rgb = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut rgb, 8, 8);
        encoder.set_color(png::ColorType::Rgb);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[50; 192]).unwrap();
    }
    let err = h
        .tokenize(DOMAIN, &image_value(rgb), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("depth") && err.contains("grey-scale image is expected"),
        "{err}"
    );
    let full = grey16_png(96, 96, &depth_map(96, 96));
    let err = h
        .tokenize(
            DOMAIN,
            &image_value(full[..full.len() / 3].to_vec()),
            &[("image_size", "96")],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot decode the PNG image"), "{err}");
}
