//! Encode + decode benchmark of a ViT-B-sized 4M image tokenizer (VQ-VAE) with random weights.
//!
//! Writes a random checkpoint in the released tokenizer layout (`config.json` +
//! `model.safetensors`, F32): `vit_b_enc` / `vit_b_dec` (D 768, 12 layers, 12 heads, post-MLP),
//! RGB 224×224, patch 16, lucid codebook 16384 × 32 (the `rgb_16k` / `semseg_4k` VQ-VAE shape;
//! 14×14 = 196 tokens), to a temporary directory; loads it on CPU, then times `encode` (image →
//! token ids) and `decode_tokens` (ids → image) of a 1×3×224×224 input, best of N.
//!
//! Usage: `cargo run --release -p tessera-model --example bench_vq -- [--reps N] [--batch B]`.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use tessera_model::LoadOptions;
use tessera_model::vq::VqTokenizer;

const DIM: usize = 768;
const DEPTH: usize = 12;
const CHANNELS: usize = 3;
const PATCH: usize = 16;
const IMAGE: usize = 224;
const LATENT: usize = 32;
const CODES: usize = 16384;

fn random(shape: &[usize], std: f64) -> Tensor {
    Tensor::randn(0f32, std as f32, shape, &Device::Cpu).unwrap()
}

/// The state dict of one ViT (encoder or decoder) under `prefix`.
fn vit(prefix: &str, out: &mut HashMap<String, Tensor>) {
    let d = DIM;
    let grid = IMAGE / PATCH;
    let mut put = |name: String, t: Tensor| {
        out.insert(name, t);
    };
    put(
        format!("{prefix}.pos_emb"),
        random(&[1, d, grid, grid], 0.5),
    );
    let norm = |put: &mut dyn FnMut(String, Tensor), name: String| {
        put(
            format!("{name}.weight"),
            Tensor::ones(d, DType::F32, &Device::Cpu).unwrap(),
        );
        put(
            format!("{name}.bias"),
            Tensor::zeros(d, DType::F32, &Device::Cpu).unwrap(),
        );
    };
    let linear = |put: &mut dyn FnMut(String, Tensor), name: String, i: usize, o: usize| {
        put(
            format!("{name}.weight"),
            random(&[o, i], (1.0 / i as f64).sqrt()),
        );
        put(format!("{name}.bias"), random(&[o], 0.02));
    };
    for i in 0..DEPTH {
        let b = format!("{prefix}.blocks.{i}");
        norm(&mut put, format!("{b}.norm1"));
        linear(&mut put, format!("{b}.attn.qkv"), d, 3 * d);
        linear(&mut put, format!("{b}.attn.proj"), d, d);
        norm(&mut put, format!("{b}.norm2"));
        linear(&mut put, format!("{b}.mlp.fc1"), d, 4 * d);
        linear(&mut put, format!("{b}.mlp.fc2"), 4 * d, d);
    }
    norm(&mut put, format!("{prefix}.norm_mlp"));
    linear(&mut put, format!("{prefix}.post_mlp.fc1"), d, 4 * d);
    linear(&mut put, format!("{prefix}.post_mlp.fc2"), 4 * d, d);
}

fn write_checkpoint(dir: &std::path::Path) {
    let mut sd = HashMap::new();
    vit("encoder", &mut sd);
    vit("decoder", &mut sd);
    let fan_in = (CHANNELS * PATCH * PATCH) as f64;
    sd.insert(
        "encoder.proj.weight".into(),
        random(&[DIM, CHANNELS, PATCH, PATCH], fan_in.powf(-0.5)),
    );
    sd.insert("encoder.proj.bias".into(), random(&[DIM], 0.02));
    sd.insert(
        "decoder.out_proj.weight".into(),
        random(&[CHANNELS * PATCH * PATCH, DIM], (DIM as f64).powf(-0.5)),
    );
    sd.insert(
        "decoder.out_proj.bias".into(),
        random(&[CHANNELS * PATCH * PATCH], 0.02),
    );
    sd.insert(
        "quant_proj.weight".into(),
        random(&[LATENT, DIM, 1, 1], (DIM as f64).powf(-0.5)),
    );
    sd.insert("quant_proj.bias".into(), random(&[LATENT], 0.02));
    sd.insert(
        "post_quant_proj.weight".into(),
        random(&[DIM, LATENT, 1, 1], (LATENT as f64).powf(-0.5)),
    );
    sd.insert("post_quant_proj.bias".into(), random(&[DIM], 0.02));
    sd.insert(
        "quantize._codebook.embed".into(),
        random(&[CODES, LATENT], 1.0),
    );
    sd.insert(
        "quantize._codebook.cluster_size".into(),
        Tensor::ones(CODES, DType::F32, &Device::Cpu).unwrap(),
    );
    sd.insert(
        "quantize._codebook.initted".into(),
        Tensor::ones(1, DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&sd, dir.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "image_size": IMAGE, "n_channels": CHANNELS, "patch_size": PATCH, "patch_proj": true,
        "post_mlp": true, "enc_type": "vit_b_enc", "dec_type": "vit_b_dec", "quant_type": "lucid",
        "codebook_size": CODES, "latent_dim": LATENT, "norm_codes": true, "num_codebooks": 1,
        "out_conv": false, "n_labels": null, "undo_std": false
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn main() {
    let reps = arg("--reps", 3).max(1);
    let batch = arg("--batch", 1).max(1);
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    write_checkpoint(tmp.path());
    eprintln!(
        "wrote a random ViT-B VQ-VAE checkpoint in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let tokenizer = VqTokenizer::load(tmp.path(), &LoadOptions::default()).unwrap();
    println!("load: {:.2} s", started.elapsed().as_secs_f64());

    let image = Tensor::rand(-1f32, 1f32, (batch, CHANNELS, IMAGE, IMAGE), &Device::Cpu).unwrap();
    let (mut best_encode, mut best_decode) = (f64::MAX, f64::MAX);
    for rep in 0..reps {
        let t = Instant::now();
        let tokens = tokenizer.encode(&image).unwrap();
        let encode = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let recon = tokenizer.decode_tokens(&tokens).unwrap();
        let decode = t.elapsed().as_secs_f64();
        assert_eq!(tokens.dims(), &[batch, IMAGE / PATCH, IMAGE / PATCH]);
        assert_eq!(recon.dims(), image.dims());
        eprintln!("rep {rep}: encode {encode:.3} s, decode {decode:.3} s");
        best_encode = best_encode.min(encode);
        best_decode = best_decode.min(decode);
    }
    println!(
        "ViT-B VQ-VAE, {batch}x3x224x224, f32, CPU, best of {reps}: encode {best_encode:.3} s, \
         decode {best_decode:.3} s, encode+decode {:.3} s",
        best_encode + best_decode
    );
}
