//! `inspect`: summarise a checkpoint from its header and config, without loading the weights.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::checkpoint::{CheckpointPaths, SafetensorsFile, read_config};
use crate::config::ModelConfig;
use crate::embeddings::{SEQUENCE_TABLE_LEN, image_grid};
use crate::error::{ModelError, Result};
use crate::modality::{ModalityKind, modality_info};

/// One domain of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSummary {
    pub name: String,
    /// `pixels`, `image tokens`, `sequence` or `sequence embedding`.
    pub kind: &'static str,
    pub encoder: bool,
    pub decoder: bool,
    /// From the token table's shape; `None` for pixels and embeddings.
    pub vocab_size: Option<usize>,
    /// Grid tokens of image-like domains, the token budget of sequences.
    pub tokens: usize,
}

/// What `tessera model inspect` prints.
#[derive(Debug, Clone)]
pub struct CheckpointSummary {
    pub weights_path: PathBuf,
    pub file_size: u64,
    pub config: ModelConfig,
    pub domains: Vec<DomainSummary>,
    /// Learned parameters, counted like the reference's `model.parameters()`: without the sin-cos
    /// and zero-bias buffers and counting a shared modality embedding once.
    pub parameter_count: usize,
    /// Elements of every stored tensor (parameters and buffers).
    pub stored_elements: usize,
    /// Stored dtypes with their tensor counts.
    pub dtypes: BTreeMap<String, usize>,
}

/// Summarise a checkpoint (directory or bare `.safetensors`).
pub fn inspect(path: impl AsRef<Path>) -> Result<CheckpointSummary> {
    let paths = CheckpointPaths::resolve(path.as_ref())?;
    let file = SafetensorsFile::open(&paths.weights)?;
    let config = read_config(&paths, &file)?;
    let mut names: Vec<&String> = config.domains_in.iter().collect();
    for d in &config.domains_out {
        if !names.contains(&d) {
            names.push(d);
        }
    }
    let mut domains = Vec::new();
    for name in names {
        let info = modality_info(name).ok_or_else(|| ModelError::UnknownDomain {
            domain: name.clone(),
        })?;
        let encoder = info.has_encoder && config.domains_in.contains(name);
        let decoder = info.has_decoder && config.domains_out.contains(name);
        let table = |side: &str| {
            file.entries()
                .get(&format!("{side}_embeddings.{name}.token_emb.weight"))
                .map(|e| e.shape[0])
        };
        let vocab_size = if decoder {
            table("decoder")
        } else {
            table("encoder")
        };
        let (kind, tokens) = match info.kind {
            ModalityKind::Pixels { .. } => ("pixels", image_grid(info, &config)?.1),
            ModalityKind::ImageTokens { .. } => ("image tokens", image_grid(info, &config)?.1),
            ModalityKind::Sequence { max_tokens, .. } => ("sequence", max_tokens),
            ModalityKind::SequenceEmbedding { max_length, .. } => {
                ("sequence embedding", max_length.min(SEQUENCE_TABLE_LEN))
            }
        };
        domains.push(DomainSummary {
            name: name.clone(),
            kind,
            encoder,
            decoder,
            vocab_size,
            tokens,
        });
    }
    let mut dtypes = BTreeMap::new();
    for entry in file.entries().values() {
        *dtypes.entry(format!("{:?}", entry.dtype)).or_insert(0) += 1;
    }
    Ok(CheckpointSummary {
        weights_path: paths.weights,
        file_size: file.file_size(),
        parameter_count: count_parameters(&config, &file),
        stored_elements: file
            .entries()
            .values()
            .map(|e| e.shape.iter().product::<usize>())
            .sum(),
        config,
        domains,
        dtypes,
    })
}

/// Whether a stored tensor is a buffer (or a duplicate of a shared parameter) rather than a
/// learned parameter of its own.
fn is_buffer_or_duplicate(name: &str, config: &ModelConfig) -> bool {
    let mut parts = name.split('.');
    let first = parts.next().unwrap_or_default();
    if first == "encoder_embeddings" || first == "decoder_embeddings" {
        let domain = parts.next().unwrap_or_default();
        let field = parts.next().unwrap_or_default();
        let learned_positions = matches!(
            modality_info(domain).map(|m| m.kind),
            Some(ModalityKind::ImageTokens {
                learned_positions: true,
                ..
            })
        );
        if field == "pos_emb" {
            return !learned_positions;
        }
        if field == "mod_emb" && first == "encoder_embeddings" && config.share_modality_embeddings {
            return config.domains_out.iter().any(|d| d == domain)
                && modality_info(domain).is_some_and(|m| m.has_decoder);
        }
        return false;
    }
    // Bias-free LayerNorms keep a zero `bias` buffer: `norm1`, `query_norm`, `encoder_norm`, `q_norm`, ...
    let layer = name
        .strip_suffix(".bias")
        .and_then(|n| n.rsplit('.').next());
    !config.norm_bias && layer.is_some_and(|l| l.contains("norm"))
}

/// Learned parameters of a checkpoint (see [`CheckpointSummary::parameter_count`]).
pub fn count_parameters(config: &ModelConfig, file: &SafetensorsFile) -> usize {
    file.entries()
        .iter()
        .filter(|(name, _)| !is_buffer_or_duplicate(name, config))
        .map(|(_, e)| e.shape.iter().product::<usize>())
        .sum()
}

impl fmt::Display for CheckpointSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let size = if self.file_size >= 1_000_000_000 {
            format!("{:.2} GB", self.file_size as f64 / 1e9)
        } else {
            format!("{:.1} MB", self.file_size as f64 / 1e6)
        };
        writeln!(f, "checkpoint   {} ({size})", self.weights_path.display())?;
        writeln!(
            f,
            "model        dim {}, depth {} enc / {} dec, {} heads (head dim {}), MLP {} hidden {}",
            c.dim,
            c.encoder_depth,
            c.decoder_depth,
            c.num_heads,
            c.head_dim(),
            if c.gated_mlp {
                format!("gated {}", c.act_layer.torch_name())
            } else {
                c.act_layer.torch_name().to_owned()
            },
            c.mlp_hidden_dim()
        )?;
        writeln!(
            f,
            "switches     qkv_bias {}, proj_bias {}, mlp_bias {}, norm_bias {}, qk_norm {}, shared modality embeddings {}",
            c.qkv_bias,
            c.proj_bias,
            c.mlp_bias,
            c.norm_bias,
            c.qk_norm,
            c.share_modality_embeddings
        )?;
        writeln!(
            f,
            "image        {} px, patch {}",
            c.image_size, c.patch_size
        )?;
        let dtypes: Vec<String> = self
            .dtypes
            .iter()
            .map(|(d, n)| format!("{d} ({n} tensors)"))
            .collect();
        writeln!(
            f,
            "parameters   {} ({:.1} M; {} stored elements with buffers), dtype {}",
            self.parameter_count,
            self.parameter_count as f64 / 1e6,
            self.stored_elements,
            dtypes.join(", ")
        )?;
        writeln!(
            f,
            "domains      {} ({} in, {} out)",
            self.domains.len(),
            c.domains_in.len(),
            c.domains_out.len()
        )?;
        writeln!(
            f,
            "  {:<22} {:<18} {:>4} {:>4} {:>7} {:>7}",
            "domain", "kind", "enc", "dec", "vocab", "tokens"
        )?;
        for d in &self.domains {
            let mark = |b: bool| if b { "yes" } else { "-" };
            let vocab = d.vocab_size.map_or("-".to_owned(), |v| v.to_string());
            writeln!(
                f,
                "  {:<22} {:<18} {:>4} {:>4} {:>7} {:>7}",
                d.name,
                d.kind,
                mark(d.encoder),
                mark(d.decoder),
                vocab,
                d.tokens
            )?;
        }
        Ok(())
    }
}
