//! Random 4M checkpoints in the released layout (config.json + model.safetensors, F32, every
//! state-dict entry including the sin-cos buffers), for tests and the benchmark.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use tessera_model::modality::{ModalityKind, modality_info};
use tessera_model::posemb::{sincos_1d, sincos_2d};

/// Shape and contents of a random model.
pub struct RandomModel<'a> {
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    /// 4M domain names; pixels / embeddings domains are inputs only.
    pub domains: &'a [&'a str],
    /// Domains of `domains` the model generates but does not take as input.
    pub output_only: &'a [&'a str],
    pub vocab: &'a dyn Fn(&str) -> usize,
    pub seed: u64,
    /// Scale of embeddings (token, modality, mask token, learned positions); linear weights use
    /// `weight_scale / sqrt(fan_in)`.
    pub embedding_scale: f32,
    pub weight_scale: f32,
}

enum Init {
    Embedding,
    Linear(usize),
    Ones,
    Zeros,
    Table(Vec<f32>),
}

fn entries(spec: &RandomModel<'_>) -> Vec<(String, Vec<usize>, Init)> {
    let d = spec.dim;
    let hidden = 2 * 4 * d / 3;
    let mut out: Vec<(String, Vec<usize>, Init)> = Vec::new();
    let positions = |domain: &str| -> (usize, Init) {
        match modality_info(domain).expect("4M domain").kind {
            ModalityKind::ImageTokens {
                learned_positions: true,
                ..
            } => (16, Init::Embedding),
            ModalityKind::ImageTokens { patch_size, .. } => {
                let side = 224 / patch_size.unwrap_or(16);
                (side * side, Init::Table(sincos_2d(side, side, d)))
            }
            ModalityKind::Pixels { .. } => (196, Init::Table(sincos_2d(14, 14, d))),
            _ => (512, Init::Table(sincos_1d(512, d))),
        }
    };
    for &domain in spec.domains {
        let info = modality_info(domain).expect("4M domain");
        let p = format!("encoder_embeddings.{domain}");
        if spec.output_only.contains(&domain) {
            let p = format!("decoder_embeddings.{domain}");
            let vocab = (spec.vocab)(domain);
            out.push((
                format!("{p}.token_emb.weight"),
                vec![vocab, d],
                Init::Embedding,
            ));
            out.push((
                format!("{p}.to_logits.weight"),
                vec![vocab, d],
                Init::Linear(d),
            ));
            let (rows, table) = positions(domain);
            out.push((format!("{p}.pos_emb"), vec![1, rows, d], table));
            out.push((format!("{p}.mod_emb"), vec![1, 1, d], Init::Embedding));
            continue;
        }
        match info.kind {
            ModalityKind::Sequence { .. } | ModalityKind::ImageTokens { .. } => out.push((
                format!("{p}.token_emb.weight"),
                vec![(spec.vocab)(domain), d],
                Init::Embedding,
            )),
            ModalityKind::Pixels { .. } => {
                out.push((format!("{p}.proj.weight"), vec![d, 768], Init::Linear(768)))
            }
            ModalityKind::SequenceEmbedding { .. } => {
                out.push((
                    format!("{p}.emb_proj.weight"),
                    vec![d, 4096],
                    Init::Linear(4096),
                ));
                out.push((format!("{p}.emb_proj.bias"), vec![d], Init::Zeros));
            }
        }
        let (rows, table) = positions(domain);
        out.push((format!("{p}.pos_emb"), vec![1, rows, d], table));
        out.push((format!("{p}.mod_emb"), vec![1, 1, d], Init::Embedding));
        if info.has_decoder {
            let p = format!("decoder_embeddings.{domain}");
            let vocab = (spec.vocab)(domain);
            out.push((
                format!("{p}.token_emb.weight"),
                vec![vocab, d],
                Init::Embedding,
            ));
            out.push((
                format!("{p}.to_logits.weight"),
                vec![vocab, d],
                Init::Linear(d),
            ));
            let (rows, table) = positions(domain);
            out.push((format!("{p}.pos_emb"), vec![1, rows, d], table));
            out.push((format!("{p}.mod_emb"), vec![1, 1, d], Init::Embedding));
        }
    }
    let norm = |out: &mut Vec<(String, Vec<usize>, Init)>, name: String| {
        out.push((format!("{name}.weight"), vec![d], Init::Ones));
        out.push((format!("{name}.bias"), vec![d], Init::Zeros));
    };
    let mlp = |out: &mut Vec<(String, Vec<usize>, Init)>, p: String| {
        out.push((format!("{p}.fc1.weight"), vec![hidden, d], Init::Linear(d)));
        out.push((format!("{p}.fc3.weight"), vec![hidden, d], Init::Linear(d)));
        out.push((
            format!("{p}.fc2.weight"),
            vec![d, hidden],
            Init::Linear(hidden),
        ));
    };
    for i in 0..spec.depth {
        let p = format!("encoder.{i}");
        norm(&mut out, format!("{p}.norm1"));
        out.push((
            format!("{p}.attn.qkv.weight"),
            vec![3 * d, d],
            Init::Linear(d),
        ));
        out.push((format!("{p}.attn.proj.weight"), vec![d, d], Init::Linear(d)));
        norm(&mut out, format!("{p}.norm2"));
        mlp(&mut out, format!("{p}.mlp"));
    }
    norm(&mut out, "encoder_norm".into());
    out.push((
        "decoder_proj_context.weight".into(),
        vec![d, d],
        Init::Linear(d),
    ));
    out.push(("decoder_proj_context.bias".into(), vec![d], Init::Zeros));
    for i in 0..spec.depth {
        let p = format!("decoder.{i}");
        norm(&mut out, format!("{p}.norm1"));
        out.push((
            format!("{p}.self_attn.qkv.weight"),
            vec![3 * d, d],
            Init::Linear(d),
        ));
        out.push((
            format!("{p}.self_attn.proj.weight"),
            vec![d, d],
            Init::Linear(d),
        ));
        norm(&mut out, format!("{p}.query_norm"));
        norm(&mut out, format!("{p}.context_norm"));
        out.push((
            format!("{p}.cross_attn.q.weight"),
            vec![d, d],
            Init::Linear(d),
        ));
        out.push((
            format!("{p}.cross_attn.kv.weight"),
            vec![2 * d, d],
            Init::Linear(d),
        ));
        out.push((
            format!("{p}.cross_attn.proj.weight"),
            vec![d, d],
            Init::Linear(d),
        ));
        norm(&mut out, format!("{p}.norm2"));
        mlp(&mut out, format!("{p}.mlp"));
    }
    norm(&mut out, "decoder_norm".into());
    out.push(("mask_token".into(), vec![1, 1, d], Init::Embedding));
    out
}

/// Writes the checkpoint to `dir` (streamed, never held in memory).
pub fn write_random_model(spec: &RandomModel<'_>, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let outputs: Vec<&str> = spec
        .domains
        .iter()
        .copied()
        .filter(|d| modality_info(d).is_some_and(|i| i.has_decoder))
        .collect();
    let config = serde_json::json!({
        "act_layer": "SiLU",
        "decoder_depth": spec.depth,
        "dim": spec.dim,
        "domains_in": spec.domains.iter().filter(|d| !spec.output_only.contains(d)).collect::<Vec<_>>(),
        "domains_out": outputs,
        "encoder_depth": spec.depth,
        "gated_mlp": true,
        "image_size": 224,
        "mlp_bias": false,
        "mlp_ratio": 4,
        "norm_bias": false,
        "num_heads": spec.heads,
        "patch_size": 16,
        "proj_bias": false,
        "qkv_bias": false,
        "share_modality_embeddings": false,
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let specs = entries(spec);
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, _) in &specs {
        let n: usize = shape.iter().product();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * n]}),
        );
        offset += 4 * n;
    }
    let mut header_bytes = serde_json::to_vec(&header)?;
    while header_bytes.len() % 8 != 0 {
        header_bytes.push(b' ');
    }
    let mut out = BufWriter::with_capacity(1 << 22, File::create(dir.join("model.safetensors"))?);
    out.write_all(&(header_bytes.len() as u64).to_le_bytes())?;
    out.write_all(&header_bytes)?;
    let mut state = spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        // xorshift64*: deterministic per seed, plenty for random weights.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let bits = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (bits >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let mut chunk: Vec<u8> = Vec::with_capacity(1 << 22);
    for (_, shape, init) in &specs {
        let n: usize = shape.iter().product();
        chunk.clear();
        for i in 0..n {
            let value = match init {
                Init::Ones => 1.0,
                Init::Zeros => 0.0,
                Init::Table(t) => t[i],
                Init::Embedding => uniform() * spec.embedding_scale,
                Init::Linear(fan_in) => uniform() * spec.weight_scale / (*fan_in as f32).sqrt(),
            };
            chunk.extend_from_slice(&value.to_le_bytes());
            if chunk.len() >= 1 << 22 {
                out.write_all(&chunk)?;
                chunk.clear();
            }
        }
        out.write_all(&chunk)?;
    }
    out.flush()
}
