//! Random initialisation of a 4M core for training, following the reference's `init_weights`
//! (MAE scheme): xavier-uniform linear layers with q/k/v (and k/v) treated as separate matrices,
//! zero biases, unit norm weights, and N(0, 0.02) for token tables, modality embeddings, learned
//! positions and the mask token; and of an image tokenizer ([`TokenizerInit`]).

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
        xavier_uniform(&mut self.rng, name, shape)
    }
}

/// Xavier-uniform values of a weight `(out, in, k…)` (a convolution counts `in·k…` inputs, as
/// its flattened matrix); `qkv` is three `(D, D)` matrices and `kv` two, each initialised as its
/// own layer (the MAE scheme 4M uses).
pub fn xavier_uniform(rng: &mut TrainRng, name: &str, shape: &[usize]) -> Vec<f32> {
    let count: usize = shape.iter().product();
    let out_dim = shape[0];
    let in_dim = count / out_dim.max(1);
    let fan_out = if name.contains(".qkv.") {
        out_dim / 3
    } else if name.contains(".kv.") {
        out_dim / 2
    } else {
        out_dim
    };
    let bound = (6.0 / (fan_out + in_dim) as f64).sqrt();
    (0..count)
        .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
        .collect()
}

/// Makes the tensors of a fresh image tokenizer (every shape is fixed by its config). Where the
/// reference states an initialisation it is followed: the cosine codebook is uniform then
/// L2-normalised rows, `cls_emb` is `nn.Embedding`'s N(0, 1), the ConvNeXt layer scale starts at
/// 1e-6; linear and convolution weights are xavier-uniform with zero biases, norms ones.
#[derive(Debug, Clone)]
pub struct TokenizerInit {
    pub rng: TrainRng,
}

impl ParameterInit for TokenizerInit {
    fn shape_of(&self, _name: &str) -> Option<Vec<usize>> {
        None
    }

    fn values(&mut self, name: &str, shape: &[usize]) -> Vec<f32> {
        let count: usize = shape.iter().product();
        if name == "quantize._codebook.embed" {
            let dim = shape[1];
            let bound = (6.0 / dim as f64).sqrt();
            let mut rows: Vec<f32> = (0..count)
                .map(|_| ((self.rng.uniform() * 2.0 - 1.0) * bound) as f32)
                .collect();
            for row in rows.chunks_mut(dim) {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                row.iter_mut().for_each(|v| *v /= norm);
            }
            return rows;
        }
        if name == "cls_emb.weight" {
            return (0..count).map(|_| self.rng.normal() as f32).collect();
        }
        if name.ends_with(".gamma") {
            return vec![1e-6; count];
        }
        if name.ends_with(".bias") {
            return vec![0.0; count];
        }
        if shape.len() == 1 {
            return vec![1.0; count];
        }
        if name.ends_with("dwconv.weight") {
            // ConvNeXt's trunc-normal(0.02) of its depthwise kernels (plain normal here).
            return (0..count)
                .map(|_| (self.rng.normal() * INIT_STD) as f32)
                .collect();
        }
        xavier_uniform(&mut self.rng, name, shape)
    }
}
