//! Random initialisation of a 4M core for training, following the reference's `init_weights`
//! (MAE scheme): xavier-uniform linear layers with q/k/v (and k/v) treated as separate matrices,
//! zero biases, unit norm weights, and N(0, 0.02) for token tables, modality embeddings, learned
//! positions and the mask token; and of an image tokenizer ([`TokenizerInit`]). A core config
//! may depart from the reference where a small model on little data needs it ([`CoreInit`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use tessera_model::ParameterInit;

use crate::rng::TrainRng;

/// The reference's `init_std`.
const INIT_STD: f64 = 0.02;

/// How a fresh core starts, where it may differ from the reference's `init_weights`. The
/// defaults are the reference's. Only the starting values change: the model, its checkpoint
/// layout and inference are the same either way.
///
/// Why a small core needs more: a target token of an image domain is predicted by a decoder
/// query that must find the encoder token at its own grid position among a few hundred. With
/// token tables at N(0, 0.02) beside sin-cos positions of RMS 0.71, and cross-attention that
/// starts blind to position, that search has almost no gradient, and a small core trained for a
/// few thousand steps learns each domain's marginal instead (measured: the ratio of a target's
/// loss given its own input to that given another sample's input stays at 1.00).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoreInit {
    /// Standard deviation of the encoder and decoder token tables.
    pub token_std: f64,
    /// When set, every decoder cross-attention head starts as a position matcher: its query and
    /// key projections are this value times a selection of the highest-frequency sin-cos channels
    /// (rows and columns of a grid, both halves of a sequence's table), plus a tenth of the usual
    /// draw, so a query attends to the context tokens at and around its own position.
    pub positional_cross_attention: Option<f64>,
    /// Factor on the draw of `decoder_proj_context`, which adds the encoder output to the context
    /// positions the cross-attention keys are made from.
    pub context_projection_scale: f64,
}

impl Default for CoreInit {
    fn default() -> Self {
        Self {
            token_std: INIT_STD,
            positional_cross_attention: None,
            context_projection_scale: 1.0,
        }
    }
}

impl CoreInit {
    pub fn validate(&self) -> crate::error::Result<()> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let invalid = |field: &str| crate::TrainError::InvalidConfig {
            field: format!("init.{field}"),
            reason: "must be positive and finite".into(),
        };
        if !positive(self.token_std) {
            return Err(invalid("token_std"));
        }
        if !positive(self.context_projection_scale) {
            return Err(invalid("context_projection_scale"));
        }
        if self
            .positional_cross_attention
            .is_some_and(|v| !positive(v))
        {
            return Err(invalid("positional_cross_attention"));
        }
        Ok(())
    }
}

/// Makes the tensors of a fresh model; vocabulary sizes per domain fix the token tables.
#[derive(Debug, Clone)]
pub struct FourMInit {
    pub rng: TrainRng,
    pub dim: usize,
    pub heads: usize,
    pub vocab: BTreeMap<String, usize>,
    pub options: CoreInit,
}

impl FourMInit {
    /// `values` of a cross-attention query or key projection `(D, D)` (row-major, `out × in`)
    /// turned into a position matcher: head `h`'s output channels `4j..4j+4` read the four
    /// sin-cos channels of frequency `j` (`j < head_dim / 4`), the highest frequencies first.
    fn match_positions(&self, values: &mut [f32], scale: f64) {
        let d = self.dim;
        let head_dim = d / self.heads;
        let quarter = d / 4;
        values.iter_mut().for_each(|v| *v *= 0.1);
        for head in 0..self.heads {
            for j in 0..head_dim / 4 {
                for (k, channel) in [j, quarter + j, 2 * quarter + j, 3 * quarter + j]
                    .into_iter()
                    .enumerate()
                {
                    let row = head * head_dim + 4 * j + k;
                    values[row * d + channel] += scale as f32;
                }
            }
        }
    }
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
        let normal = |rng: &mut TrainRng, std: f64| {
            (0..count).map(|_| (rng.normal() * std) as f32).collect()
        };
        if name.ends_with("token_emb.weight") {
            return normal(&mut self.rng, self.options.token_std);
        }
        if name.ends_with("mod_emb") || name.ends_with("pos_emb") || name == "mask_token" {
            return normal(&mut self.rng, INIT_STD);
        }
        if name.ends_with(".bias") {
            return vec![0.0; count];
        }
        if shape.len() == 1 {
            // Norm weights.
            return vec![1.0; count];
        }
        let mut values = xavier_uniform(&mut self.rng, name, shape);
        if name == "decoder_proj_context.weight" {
            let scale = self.options.context_projection_scale as f32;
            values.iter_mut().for_each(|v| *v *= scale);
        }
        if let Some(scale) = self.options.positional_cross_attention {
            // `kv` holds the keys in its first D rows.
            let d = self.dim;
            if name.ends_with("cross_attn.q.weight") || name.ends_with("cross_attn.kv.weight") {
                self.match_positions(&mut values[..d * d], scale);
            }
        }
        values
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

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_model::posemb::sincos_2d;

    const DIM: usize = 192;
    const HEADS: usize = 6;
    const SIDE: usize = 14;

    fn init(options: CoreInit) -> FourMInit {
        FourMInit {
            rng: TrainRng::seeded(11),
            dim: DIM,
            heads: HEADS,
            vocab: BTreeMap::new(),
            options,
        }
    }

    /// Per head, the fraction of grid positions whose query (the position's sin-cos row, at
    /// the unit RMS a layer norm gives it) scores its own position's key highest, and the mean
    /// attention weight it puts there.
    fn own_position_attention(init: &mut FourMInit) -> Vec<(f64, f64)> {
        let wq = init.values("decoder.0.cross_attn.q.weight", &[DIM, DIM]);
        let wk = init.values("decoder.0.cross_attn.kv.weight", &[2 * DIM, DIM]);
        let table: Vec<f32> = sincos_2d(SIDE, SIDE, DIM)
            .iter()
            .map(|v| v * std::f32::consts::SQRT_2)
            .collect();
        let project = |w: &[f32]| -> Vec<f32> {
            let mut out = vec![0f32; SIDE * SIDE * DIM];
            for n in 0..SIDE * SIDE {
                let x = &table[n * DIM..(n + 1) * DIM];
                for o in 0..DIM {
                    out[n * DIM + o] = w[o * DIM..(o + 1) * DIM]
                        .iter()
                        .zip(x)
                        .map(|(a, b)| a * b)
                        .sum();
                }
            }
            out
        };
        let (q, k) = (project(&wq), project(&wk[..DIM * DIM]));
        let head_dim = DIM / HEADS;
        let tokens = SIDE * SIDE;
        (0..HEADS)
            .map(|h| {
                let channels = h * head_dim..(h + 1) * head_dim;
                let (mut hits, mut weight) = (0usize, 0f64);
                for p in 0..tokens {
                    let scores: Vec<f64> = (0..tokens)
                        .map(|j| {
                            channels
                                .clone()
                                .map(|c| (q[p * DIM + c] * k[j * DIM + c]) as f64)
                                .sum::<f64>()
                                / (head_dim as f64).sqrt()
                        })
                        .collect();
                    let best = (0..tokens)
                        .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
                        .unwrap();
                    hits += usize::from(best == p);
                    let top = scores[best];
                    let total: f64 = scores.iter().map(|s| (s - top).exp()).sum();
                    weight += (scores[p] - top).exp() / total;
                }
                (hits as f64 / tokens as f64, weight / tokens as f64)
            })
            .collect()
    }

    #[test]
    fn positional_start_makes_every_head_attend_to_its_own_grid_position() {
        let mut matcher = init(CoreInit {
            positional_cross_attention: Some(2.0),
            ..CoreInit::default()
        });
        for (head, (hits, weight)) in own_position_attention(&mut matcher).into_iter().enumerate() {
            assert_eq!(hits, 1.0, "head {head}: own position best for {hits:.2}");
            assert!(
                weight > 0.3,
                "head {head}: weight on own position {weight:.3}"
            );
        }
        // The reference's start is blind to position: a query's own position is rarely its best.
        let mut reference = init(CoreInit::default());
        for (head, (hits, weight)) in own_position_attention(&mut reference)
            .into_iter()
            .enumerate()
        {
            assert!(hits < 0.2, "head {head}: own position best for {hits:.2}");
            assert!(
                weight < 0.05,
                "head {head}: weight on own position {weight:.3}"
            );
        }
    }

    #[test]
    fn token_tables_and_context_projection_follow_the_options() {
        let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        let mut reference = init(CoreInit::default());
        let mut scaled = init(CoreInit {
            token_std: 1.0,
            context_projection_scale: 0.3,
            ..CoreInit::default()
        });
        let table = "encoder_embeddings.tok_rgb@224.token_emb.weight";
        let a = rms(&reference.values(table, &[512, DIM]));
        let b = rms(&scaled.values(table, &[512, DIM]));
        assert!(
            (a - 0.02).abs() < 0.002 && (b - 1.0).abs() < 0.05,
            "{a} {b}"
        );
        // Same draw (the same seed, nothing drawn before), scaled.
        let mut reference = init(CoreInit::default());
        let mut scaled = init(CoreInit {
            context_projection_scale: 0.3,
            ..CoreInit::default()
        });
        let a = reference.values("decoder_proj_context.weight", &[DIM, DIM]);
        let b = scaled.values("decoder_proj_context.weight", &[DIM, DIM]);
        assert!(a.iter().zip(&b).all(|(x, y)| (x * 0.3 - y).abs() < 1e-7));
    }

    #[test]
    fn the_reference_start_is_the_default_and_bad_options_are_refused() {
        let parsed: CoreInit = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, CoreInit::default());
        assert!(serde_json::from_str::<CoreInit>(r#"{"token_sd": 1}"#).is_err());
        for (options, field) in [
            (
                CoreInit {
                    token_std: 0.0,
                    ..CoreInit::default()
                },
                "init.token_std",
            ),
            (
                CoreInit {
                    context_projection_scale: f64::NAN,
                    ..CoreInit::default()
                },
                "init.context_projection_scale",
            ),
            (
                CoreInit {
                    positional_cross_attention: Some(-1.0),
                    ..CoreInit::default()
                },
                "init.positional_cross_attention",
            ),
        ] {
            let err = options.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }
}
