//! Random initialisation of a 4M core for training, following the reference's `init_weights`
//! (MAE scheme): xavier-uniform linear layers with q/k/v (and k/v) treated as separate matrices,
//! zero biases, unit norm weights, and N(0, 0.02) for token tables, modality embeddings, learned
//! positions and the mask token.

use std::collections::BTreeMap;

use tessera_model::ParameterInit;

use crate::rng::TrainRng;

/// The reference's `init_std`.
const INIT_STD: f64 = 0.02;

/// Makes the tensors of a fresh model; vocabulary sizes per domain fix the token tables.
#[derive(Debug, Clone)]
pub struct FourMInit {
    pub rng: TrainRng,
    pub dim: usize,
    pub vocab: BTreeMap<String, usize>,
}

impl ParameterInit for FourMInit {
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        let rest = name
            .strip_prefix("encoder_embeddings.")
            .or_else(|| name.strip_prefix("decoder_embeddings."))?;
        let (domain, tensor) = rest.split_once('.')?;
        let table = tensor == "token_emb.weight"
            || (name.starts_with("decoder_") && tensor == "to_logits.weight");
        table.then(|| vec![self.vocab.get(domain).copied().unwrap_or(0), self.dim])
    }

    fn values(&mut self, name: &str, shape: &[usize]) -> Vec<f32> {
        let count: usize = shape.iter().product();
        let normal = |rng: &mut TrainRng| {
            (0..count)
                .map(|_| (rng.normal() * INIT_STD) as f32)
                .collect()
        };
        if name.ends_with("token_emb.weight")
            || name.ends_with("mod_emb")
            || name.ends_with("pos_emb")
            || name == "mask_token"
        {
            return normal(&mut self.rng);
        }
        if name.ends_with(".bias") {
            return vec![0.0; count];
        }
        if shape.len() == 1 {
            // Norm weights.
            return vec![1.0; count];
        }
        let (out_dim, in_dim) = (shape[0], shape[1]);
        // `qkv` is three (D, D) matrices and `kv` two, each initialised as its own xavier layer.
        let fan_out = if name.contains(".qkv.") {
            out_dim / 3
        } else if name.contains(".kv.") {
            out_dim / 2
        } else {
            out_dim
        };
        let bound = (6.0 / (fan_out + in_dim) as f64).sqrt();
        (0..count)
            .map(|_| ((self.rng.uniform() * 2.0 - 1.0) * bound) as f32)
            .collect()
    }
}
