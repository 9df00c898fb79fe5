//! Forward-pass benchmark of a 4M-21-sized model with random weights on CPU.
//!
//! Writes a random checkpoint in the released layout (`config.json` + `model.safetensors`, F32,
//! config as string metadata, every state-dict entry including sin-cos buffers) to a temporary
//! directory, then, each in a fresh child process so that peak RSS is per measurement:
//! * B (dim 768, 12+12 layers, 12 heads, SwiGLU): load + one forward with 196 `rgb@224` input
//!   tokens and 196 `tok_depth@224` mask-token queries, f32, best of N; then the same in bf16;
//! * XL (dim 2048, 24+24 layers, 32 heads): load in bf16 and report memory (must fit 24 GB).
//!
//! Usage: `cargo run --release -p tessera-model --example bench_forward -- [--reps N] [--skip-xl]
//! [--bf16-reps N] [--dir TMPDIR]`. Threads: `RAYON_NUM_THREADS` (default here: 2).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use tessera_model::modality::{FOURM21_DOMAINS, ModalityKind, modality_info};
use tessera_model::posemb::{sincos_1d, sincos_2d};
use tessera_model::{DomainState, DomainValues, FourM, LoadOptions, Mask};

/// Released 4M-21 vocabulary sizes (section 2.3 of the reference notes).
fn vocab_size(domain: &str) -> usize {
    match domain {
        "tok_rgb@224" => 16384,
        "tok_semseg@224" => 4096,
        d if d.starts_with("tok_") => 8192,
        _ => 30000,
    }
}

struct Size {
    name: &'static str,
    dim: usize,
    depth: usize,
    heads: usize,
}

const B: Size = Size {
    name: "4M-21 B",
    dim: 768,
    depth: 12,
    heads: 12,
};
const XL: Size = Size {
    name: "4M-21 XL",
    dim: 2048,
    depth: 24,
    heads: 32,
};

enum Init {
    Random(f32),
    Ones,
    Zeros,
    Table(Vec<f32>),
}

struct Spec {
    name: String,
    shape: Vec<usize>,
    init: Init,
}

fn state_dict(size: &Size) -> Vec<Spec> {
    let d = size.dim;
    let hidden = 2 * 4 * d / 3;
    let mut specs = Vec::new();
    let mut push =
        |name: String, shape: Vec<usize>, init: Init| specs.push(Spec { name, shape, init });
    let grid_table = |domain: &str| -> (usize, Init) {
        let info = modality_info(domain).unwrap();
        match info.kind {
            ModalityKind::ImageTokens {
                learned_positions: true,
                ..
            } => (16, Init::Random(0.02)),
            ModalityKind::ImageTokens { patch_size, .. } => {
                let side = 224 / patch_size.unwrap();
                (side * side, Init::Table(sincos_2d(side, side, d)))
            }
            ModalityKind::Pixels { .. } => (196, Init::Table(sincos_2d(14, 14, d))),
            _ => (512, Init::Table(sincos_1d(512, d))),
        }
    };
    for &domain in FOURM21_DOMAINS {
        let info = modality_info(domain).unwrap();
        let p = format!("encoder_embeddings.{domain}");
        match info.kind {
            ModalityKind::Sequence { .. } | ModalityKind::ImageTokens { .. } => push(
                format!("{p}.token_emb.weight"),
                vec![vocab_size(domain), d],
                Init::Random(0.02),
            ),
            ModalityKind::Pixels { .. } => {
                push(format!("{p}.proj.weight"), vec![d, 768], Init::Random(0.03))
            }
            ModalityKind::SequenceEmbedding { .. } => {
                push(
                    format!("{p}.emb_proj.weight"),
                    vec![d, 4096],
                    Init::Random(0.02),
                );
                push(format!("{p}.emb_proj.bias"), vec![d], Init::Zeros);
            }
        }
        let (rows, table) = grid_table(domain);
        push(format!("{p}.pos_emb"), vec![1, rows, d], table);
        push(format!("{p}.mod_emb"), vec![1, 1, d], Init::Random(0.02));
        if info.has_decoder {
            let p = format!("decoder_embeddings.{domain}");
            push(
                format!("{p}.token_emb.weight"),
                vec![vocab_size(domain), d],
                Init::Random(0.02),
            );
            push(
                format!("{p}.to_logits.weight"),
                vec![vocab_size(domain), d],
                Init::Random(0.02),
            );
            let (rows, table) = grid_table(domain);
            push(format!("{p}.pos_emb"), vec![1, rows, d], table);
            push(format!("{p}.mod_emb"), vec![1, 1, d], Init::Random(0.02));
        }
    }
    let norm = |push: &mut dyn FnMut(String, Vec<usize>, Init), name: String| {
        push(format!("{name}.weight"), vec![d], Init::Ones);
        push(format!("{name}.bias"), vec![d], Init::Zeros);
    };
    let mlp = |push: &mut dyn FnMut(String, Vec<usize>, Init), p: String| {
        push(
            format!("{p}.fc1.weight"),
            vec![hidden, d],
            Init::Random(0.03),
        );
        push(
            format!("{p}.fc3.weight"),
            vec![hidden, d],
            Init::Random(0.03),
        );
        push(
            format!("{p}.fc2.weight"),
            vec![d, hidden],
            Init::Random(0.02),
        );
    };
    for i in 0..size.depth {
        let p = format!("encoder.{i}");
        norm(&mut push, format!("{p}.norm1"));
        push(
            format!("{p}.attn.qkv.weight"),
            vec![3 * d, d],
            Init::Random(0.03),
        );
        push(
            format!("{p}.attn.proj.weight"),
            vec![d, d],
            Init::Random(0.03),
        );
        norm(&mut push, format!("{p}.norm2"));
        mlp(&mut push, format!("{p}.mlp"));
    }
    norm(&mut push, "encoder_norm".into());
    push(
        "decoder_proj_context.weight".into(),
        vec![d, d],
        Init::Random(0.03),
    );
    push("decoder_proj_context.bias".into(), vec![d], Init::Zeros);
    for i in 0..size.depth {
        let p = format!("decoder.{i}");
        norm(&mut push, format!("{p}.norm1"));
        push(
            format!("{p}.self_attn.qkv.weight"),
            vec![3 * d, d],
            Init::Random(0.03),
        );
        push(
            format!("{p}.self_attn.proj.weight"),
            vec![d, d],
            Init::Random(0.03),
        );
        norm(&mut push, format!("{p}.query_norm"));
        norm(&mut push, format!("{p}.context_norm"));
        push(
            format!("{p}.cross_attn.q.weight"),
            vec![d, d],
            Init::Random(0.03),
        );
        push(
            format!("{p}.cross_attn.kv.weight"),
            vec![2 * d, d],
            Init::Random(0.03),
        );
        push(
            format!("{p}.cross_attn.proj.weight"),
            vec![d, d],
            Init::Random(0.03),
        );
        norm(&mut push, format!("{p}.norm2"));
        mlp(&mut push, format!("{p}.mlp"));
    }
    norm(&mut push, "decoder_norm".into());
    push("mask_token".into(), vec![1, 1, d], Init::Random(0.02));
    specs
}

fn config_entries(size: &Size) -> Vec<(&'static str, serde_json::Value, String)> {
    let list = |domains: &[&str]| {
        format!(
            "[{}]",
            domains
                .iter()
                .map(|d| format!("'{d}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let outs: Vec<&str> = FOURM21_DOMAINS
        .iter()
        .copied()
        .filter(|d| *d != "rgb@224")
        .collect();
    vec![
        ("act_layer", "SiLU".into(), "SiLU".into()),
        ("decoder_depth", size.depth.into(), size.depth.to_string()),
        ("dim", size.dim.into(), size.dim.to_string()),
        ("domains_in", FOURM21_DOMAINS.into(), list(FOURM21_DOMAINS)),
        ("domains_out", outs.clone().into(), list(&outs)),
        ("encoder_depth", size.depth.into(), size.depth.to_string()),
        ("gated_mlp", true.into(), "True".into()),
        ("image_size", 224.into(), "224".into()),
        ("mlp_bias", false.into(), "False".into()),
        ("mlp_ratio", 4.into(), "4".into()),
        ("norm_bias", false.into(), "False".into()),
        ("num_heads", size.heads.into(), size.heads.to_string()),
        ("patch_size", 16.into(), "16".into()),
        ("proj_bias", false.into(), "False".into()),
        ("qkv_bias", false.into(), "False".into()),
        ("share_modality_embeddings", false.into(), "False".into()),
    ]
}

/// Stream a random checkpoint to `dir` without holding it in memory. Returns (elements, bytes).
fn write_checkpoint(size: &Size, dir: &Path) -> std::io::Result<(usize, u64)> {
    std::fs::create_dir_all(dir)?;
    let specs = state_dict(size);
    let config = config_entries(size);
    let json_config: serde_json::Map<String, serde_json::Value> = config
        .iter()
        .map(|(k, v, _)| (k.to_string(), v.clone()))
        .collect();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&json_config)?,
    )?;
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        config
            .iter()
            .map(|(k, _, s)| (k.to_string(), serde_json::Value::from(s.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    );
    let mut offset = 0usize;
    let mut elements = 0usize;
    for spec in &specs {
        let n: usize = spec.shape.iter().product();
        elements += n;
        header.insert(spec.name.clone(), serde_json::json!({"dtype": "F32", "shape": spec.shape, "data_offsets": [offset, offset + 4 * n]}));
        offset += 4 * n;
    }
    let mut header_bytes = serde_json::to_vec(&header)?;
    while header_bytes.len() % 8 != 0 {
        header_bytes.push(b' ');
    }
    let mut out = BufWriter::with_capacity(1 << 22, File::create(dir.join("model.safetensors"))?);
    out.write_all(&(header_bytes.len() as u64).to_le_bytes())?;
    out.write_all(&header_bytes)?;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut chunk: Vec<u8> = Vec::with_capacity(1 << 22);
    for spec in &specs {
        let n: usize = spec.shape.iter().product();
        let mut written = 0;
        while written < n {
            let take = (n - written).min(1 << 20);
            chunk.clear();
            for i in written..written + take {
                let value = match &spec.init {
                    Init::Ones => 1.0,
                    Init::Zeros => 0.0,
                    Init::Table(t) => t[i],
                    Init::Random(scale) => {
                        // xorshift64*: fast, deterministic, good enough for benchmark weights.
                        state ^= state >> 12;
                        state ^= state << 25;
                        state ^= state >> 27;
                        let bits = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
                        ((bits >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
                    }
                };
                chunk.extend_from_slice(&value.to_le_bytes());
            }
            out.write_all(&chunk)?;
            written += take;
        }
    }
    out.flush()?;
    Ok((
        elements,
        std::fs::metadata(dir.join("model.safetensors"))?.len(),
    ))
}

/// (current RSS, peak RSS) in bytes from /proc/self/status.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

fn parse_dtype(name: &str) -> DType {
    match name {
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        _ => DType::F32,
    }
}

/// The benchmark input: 196 rgb@224 tokens in, 196 tok_depth@224 queries.
fn rgb_to_depth_states() -> candle_core::Result<Vec<DomainState>> {
    let pixels = Tensor::randn(0f32, 1f32, (1, 3, 224, 224), &Device::Cpu)?;
    Ok(vec![
        DomainState {
            domain: "rgb@224".into(),
            values: DomainValues::Pixels(pixels),
            input_mask: Mask::all_present(1, 196),
            target_mask: Mask::all_ignored(1, 196),
        },
        DomainState {
            domain: "tok_depth@224".into(),
            values: DomainValues::Tokens(Tensor::zeros((1, 196), DType::I64, &Device::Cpu)?),
            input_mask: Mask::all_ignored(1, 196),
            target_mask: Mask::all_present(1, 196),
        },
    ])
}

fn child(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let (mode, dir, dtype, reps) = (
        &args[0],
        PathBuf::from(&args[1]),
        parse_dtype(&args[2]),
        args[3].parse::<usize>()?,
    );
    let file_size = std::fs::metadata(dir.join("model.safetensors"))?.len();
    let start = Instant::now();
    let model = FourM::load(
        &dir,
        &LoadOptions {
            dtype,
            device: Device::Cpu,
        },
    )?;
    let load_s = start.elapsed().as_secs_f64();
    let (rss, peak) = memory();
    println!(
        "  load {:?}: {load_s:.1} s, RSS {:.2} GB, peak RSS {:.2} GB ({:.2}x the {:.2} GB weights file)",
        dtype,
        gb(rss),
        gb(peak),
        peak as f64 / file_size as f64,
        gb(file_size)
    );
    if mode == "forward" {
        let states = rgb_to_depth_states()?;
        let mut times = Vec::new();
        for _ in 0..reps {
            let start = Instant::now();
            let out = model.forward_masked_target(&states, "tok_depth@224")?;
            let _ = out
                .logits
                .sum_all()?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()?;
            times.push(start.elapsed().as_secs_f64());
        }
        let best = times.iter().copied().fold(f64::INFINITY, f64::min);
        let (_, peak) = memory();
        let shown: Vec<String> = times.iter().map(|t| format!("{t:.2}")).collect();
        println!(
            "  forward {:?} (196 rgb@224 in, 196 tok_depth@224 queries): best of {reps} {best:.2} s [{}], peak RSS {:.2} GB ({:.2}x weights file)",
            dtype,
            shown.join(", "),
            gb(peak),
            peak as f64 / file_size as f64
        );
    }
    Ok(())
}

fn run_child(args: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("--child").args(args);
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        command.env("RAYON_NUM_THREADS", "2");
    }
    let status = command.status()?;
    if !status.success() {
        return Err(format!("child {args:?} failed: {status}").into());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child(&args[1..]);
    }
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let reps = flag("--reps").unwrap_or_else(|| "4".into());
    let bf16_reps = flag("--bf16-reps").unwrap_or_else(|| "2".into());
    let skip_xl = args.iter().any(|a| a == "--skip-xl");
    let base = flag("--dir")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("tessera-bench-{}", std::process::id()));
    println!(
        "threads: RAYON_NUM_THREADS={}",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "2".into())
    );

    let b_dir = base.join("b");
    let start = Instant::now();
    let (elements, bytes) = write_checkpoint(&B, &b_dir)?;
    println!(
        "{}: {elements} stored elements, {:.2} GB file (written in {:.0} s)",
        B.name,
        gb(bytes),
        start.elapsed().as_secs_f64()
    );
    let b = b_dir.to_string_lossy().into_owned();
    let result = run_child(&["forward", &b, "f32", &reps])
        .and_then(|_| run_child(&["forward", &b, "bf16", &bf16_reps]));
    std::fs::remove_dir_all(&b_dir)?;
    result?;

    if !skip_xl {
        let xl_dir = base.join("xl");
        let start = Instant::now();
        let (elements, bytes) = write_checkpoint(&XL, &xl_dir)?;
        println!(
            "{}: {elements} stored elements, {:.2} GB file (written in {:.0} s)",
            XL.name,
            gb(bytes),
            start.elapsed().as_secs_f64()
        );
        let xl = xl_dir.to_string_lossy().into_owned();
        let result = run_child(&["load", &xl, "bf16", "0"]);
        std::fs::remove_dir_all(&xl_dir)?;
        result?;
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
