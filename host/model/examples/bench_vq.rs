//! Encode + decode benchmark of a ViT-B-sized 4M image tokenizer (VQ-VAE) with random weights.
//!
//! Writes a random checkpoint in the released tokenizer layout (`config.json` +
//! `model.safetensors`, F32): `vit_b_enc` / `vit_b_dec` (D 768, 12 layers, 12 heads, post-MLP),
//! RGB 224×224, patch 16, lucid codebook 16384 × 32 (the `rgb_16k` / `semseg_4k` VQ-VAE shape;
//! 14×14 = 196 tokens), to a temporary directory; loads it on CPU, then times `encode` (image →
//! token ids) and `decode_tokens` (ids → image) of a 1×3×224×224 input, best of N.
//!
//! With `--divae`: the same encoder with the released DiVAE decoder shape instead (`unet_patched`:
//! patch 4, 256 channels, mult (1, 2, 2, 2), 3 res blocks, attention at 4 and 8; ≈196 M
//! parameters) and times encode plus `--steps` DDIM steps (default 2) at 224×224.
//!
//! Usage: `cargo run --release -p tessera-model --example bench_vq -- [--reps N] [--batch B]
//! [--divae] [--steps N]`.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use tessera_model::LoadOptions;
use tessera_model::vq::{DiffusionOptions, VqTokenizer};

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

/// The state dict of `unet_patched` (in/out 3 channels, 32 conditioning channels) under `decoder`.
fn unet(out: &mut HashMap<String, Tensor>) {
    let (mc, mult, blocks, attn) = (256usize, [1usize, 2, 2, 2], 3usize, [4usize, 8]);
    let emb = 4 * mc;
    let cpu = Device::Cpu;
    // k = 0: a Conv1d with kernel 1 (attention qkv / proj_out).
    let mut conv = |name: String, i: usize, o: usize, k: usize| {
        let w = if k == 0 {
            random(&[o, i, 1], (i as f64).powf(-0.5))
        } else {
            random(&[o, i, k, k], ((i * k * k) as f64).powf(-0.5))
        };
        out.insert(format!("decoder.{name}.weight"), w);
        out.insert(format!("decoder.{name}.bias"), random(&[o], 0.02));
    };
    let mut later: Vec<(String, Tensor)> = Vec::new();
    let mut norm = |name: String, c: usize| {
        later.push((
            format!("decoder.{name}.weight"),
            Tensor::ones(c, DType::F32, &cpu).unwrap(),
        ));
        later.push((
            format!("decoder.{name}.bias"),
            Tensor::zeros(c, DType::F32, &cpu).unwrap(),
        ));
    };
    let mut linears: Vec<(String, usize, usize)> = vec![
        ("time_embed.0".into(), mc, emb),
        ("time_embed.2".into(), emb, emb),
    ];
    let res = |conv: &mut dyn FnMut(String, usize, usize, usize),
               norm: &mut dyn FnMut(String, usize),
               linears: &mut Vec<(String, usize, usize)>,
               p: String,
               i: usize,
               o: usize| {
        norm(format!("{p}.in_layers.0"), i);
        conv(format!("{p}.in_layers.2"), i, o, 3);
        linears.push((format!("{p}.emb_layers.1"), emb, o));
        norm(format!("{p}.out_layers.0"), o);
        conv(format!("{p}.out_layers.3"), o, o, 3);
        if i != o {
            conv(format!("{p}.skip_connection"), i, o, 1);
        }
    };
    let attention = |conv: &mut dyn FnMut(String, usize, usize, usize),
                     norm: &mut dyn FnMut(String, usize),
                     p: String,
                     c: usize| {
        norm(format!("{p}.norm"), c);
        conv(format!("{p}.qkv"), c, 3 * c, 0);
        conv(format!("{p}.proj_out"), c, c, 0);
    };
    conv("input_blocks.0.0".into(), 3 * 16 + LATENT, mc, 3);
    let (mut ch, mut ds, mut skips, mut index) = (mc, 1, vec![mc], 1);
    for (level, m) in mult.iter().enumerate() {
        for _ in 0..blocks {
            res(
                &mut conv,
                &mut norm,
                &mut linears,
                format!("input_blocks.{index}.0"),
                ch,
                m * mc,
            );
            ch = m * mc;
            if attn.contains(&ds) {
                attention(&mut conv, &mut norm, format!("input_blocks.{index}.1"), ch);
            }
            skips.push(ch);
            index += 1;
        }
        if level + 1 != mult.len() {
            conv(format!("input_blocks.{index}.0.op"), ch, ch, 3);
            skips.push(ch);
            index += 1;
            ds *= 2;
        }
    }
    res(
        &mut conv,
        &mut norm,
        &mut linears,
        "middle_block.0".into(),
        ch,
        ch,
    );
    attention(&mut conv, &mut norm, "middle_block.1".into(), ch);
    res(
        &mut conv,
        &mut norm,
        &mut linears,
        "middle_block.2".into(),
        ch,
        ch,
    );
    let mut index = 0;
    for (level, m) in mult.iter().enumerate().rev() {
        for i in 0..=blocks {
            let skip = skips.pop().unwrap();
            res(
                &mut conv,
                &mut norm,
                &mut linears,
                format!("output_blocks.{index}.0"),
                ch + skip,
                m * mc,
            );
            ch = m * mc;
            let mut j = 1;
            if attn.contains(&ds) {
                attention(&mut conv, &mut norm, format!("output_blocks.{index}.1"), ch);
                j = 2;
            }
            if level > 0 && i == blocks {
                conv(format!("output_blocks.{index}.{j}.conv"), ch, ch, 3);
                ds /= 2;
            }
            index += 1;
        }
    }
    norm("out.0".into(), ch);
    conv("out.2".into(), mc, 3 * 16, 3);
    for (name, i, o) in linears {
        out.insert(
            format!("decoder.{name}.weight"),
            random(&[o, i], (i as f64).powf(-0.5)),
        );
        out.insert(format!("decoder.{name}.bias"), random(&[o], 0.02));
    }
    out.extend(later);
}

fn write_checkpoint(dir: &std::path::Path, divae: bool) {
    let mut sd = HashMap::new();
    vit("encoder", &mut sd);
    if divae {
        unet(&mut sd);
    } else {
        vit("decoder", &mut sd);
    }
    let fan_in = (CHANNELS * PATCH * PATCH) as f64;
    sd.insert(
        "encoder.proj.weight".into(),
        random(&[DIM, CHANNELS, PATCH, PATCH], fan_in.powf(-0.5)),
    );
    sd.insert("encoder.proj.bias".into(), random(&[DIM], 0.02));
    if !divae {
        sd.insert(
            "decoder.out_proj.weight".into(),
            random(&[CHANNELS * PATCH * PATCH, DIM], (DIM as f64).powf(-0.5)),
        );
        sd.insert(
            "decoder.out_proj.bias".into(),
            random(&[CHANNELS * PATCH * PATCH], 0.02),
        );
        sd.insert(
            "post_quant_proj.weight".into(),
            random(&[DIM, LATENT, 1, 1], (LATENT as f64).powf(-0.5)),
        );
        sd.insert("post_quant_proj.bias".into(), random(&[DIM], 0.02));
    }
    sd.insert(
        "quant_proj.weight".into(),
        random(&[LATENT, DIM, 1, 1], (DIM as f64).powf(-0.5)),
    );
    sd.insert("quant_proj.bias".into(), random(&[LATENT], 0.02));
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
    let mut config = serde_json::json!({
        "image_size": IMAGE, "n_channels": CHANNELS, "patch_size": PATCH, "patch_proj": true,
        "post_mlp": true, "enc_type": "vit_b_enc", "dec_type": "vit_b_dec", "quant_type": "lucid",
        "codebook_size": CODES, "latent_dim": LATENT, "norm_codes": true, "num_codebooks": 1,
        "out_conv": false, "n_labels": null, "undo_std": false
    });
    if divae {
        let extra = serde_json::json!({
            "dec_type": "unet_patched", "scheduler": "ddim", "beta_schedule": "linear",
            "prediction_type": "sample", "zero_terminal_snr": true, "thresholding": false,
            "clip_sample": false, "num_train_timesteps": 1000
        });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
    }
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
    let divae = std::env::args().any(|a| a == "--divae");
    let steps = arg("--steps", 2).max(1);
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    write_checkpoint(tmp.path(), divae);
    let kind = if divae { "DiVAE" } else { "VQ-VAE" };
    eprintln!(
        "wrote a random ViT-B {kind} checkpoint in {:.1} s",
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
        let options = DiffusionOptions {
            steps,
            ..DiffusionOptions::default()
        };
        let recon = tokenizer.decode_tokens_with(&tokens, &options).unwrap();
        let decode = t.elapsed().as_secs_f64();
        assert_eq!(tokens.dims(), &[batch, IMAGE / PATCH, IMAGE / PATCH]);
        assert_eq!(recon.dims(), image.dims());
        eprintln!("rep {rep}: encode {encode:.3} s, decode {decode:.3} s");
        best_encode = best_encode.min(encode);
        best_decode = best_decode.min(decode);
    }
    let decode = if divae {
        format!("decode ({steps} DDIM steps) {best_decode:.3} s")
    } else {
        format!("decode {best_decode:.3} s")
    };
    println!(
        "ViT-B {kind}, {batch}x3x224x224, f32, CPU, best of {reps}: encode {best_encode:.3} s, \
         {decode}, encode+decode {:.3} s",
        best_encode + best_decode
    );
}
