//! The sampler's [`DomainCatalog`] derived from a loaded model: every domain the checkpoint can
//! take as input or generate, with its kind and token count, so plans are checked against the
//! model before any compute.

use tessera_model::{FourM, ModalityKind, modality_info};
use tessera_sampler::{DomainCatalog, DomainInfo, DomainKind};

/// Domains of `model` (inputs and outputs), their kinds, token counts and whether the model has a
/// head for them.
pub fn domain_catalog(model: &FourM) -> DomainCatalog {
    let config = model.config();
    let mut catalog = DomainCatalog::new();
    for name in config.domains_in.iter().chain(&config.domains_out) {
        if catalog.get(name).is_some() {
            continue;
        }
        let Some(info) = modality_info(name) else {
            continue;
        };
        let decoder = model.decoder_embedding(name);
        let encoder = model.encoder_embedding(name);
        if decoder.is_none() && encoder.is_none() {
            continue;
        }
        let (kind, num_tokens) = match info.kind {
            ModalityKind::Sequence { max_tokens, .. } => (DomainKind::Sequence, max_tokens),
            ModalityKind::SequenceEmbedding { max_length, .. } => {
                (DomainKind::SequenceEmbedding, max_length)
            }
            ModalityKind::Pixels { .. } | ModalityKind::ImageTokens { .. } => {
                let tokens = decoder
                    .map(|d| d.num_positions())
                    .or_else(|| encoder.map(|e| e.table_len()))
                    .unwrap_or(0);
                (DomainKind::Image, tokens)
            }
        };
        catalog = catalog.with(
            name.clone(),
            DomainInfo {
                kind,
                num_tokens,
                generatable: decoder.is_some(),
            },
        );
    }
    catalog
}
