//! Random initialisation of a 4M core for training, following the reference's `init_weights`
//! (MAE scheme): xavier-uniform linear layers with q/k/v (and k/v) treated as separate matrices,
//! zero biases, unit norm weights, and N(0, 0.02) for token tables, modality embeddings, learned
//! positions and the mask token; and of an image tokenizer ([`TokenizerInit`]). A core config
//! may depart from the reference where a small model on little data needs it ([`CoreInit`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use tessera_model::ParameterInit;
use tessera_model::posemb::frequencies;

use crate::rng::TrainRng;
use crate::vocab::VALUE_BINS;

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
    /// How many heads of each cross-attention start as position matchers (the first ones) when
    /// `positional_cross_attention` is set; the others keep the usual draw, free for lookups by
    /// content (a sequence target finding a word). All heads when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub positional_heads: Option<usize>,
    /// Factor on the draw of `decoder_proj_context`, which adds the encoder output to the context
    /// positions the cross-attention keys are made from.
    pub context_projection_scale: f64,
    /// When set, the value tokens (`v0=`…`v3=`) of these domains start as the image position they
    /// name rather than as unrelated random rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinate_tokens: Option<CoordinateTokens>,
}

/// Value tokens that start as image coordinates.
///
/// Why: a box coordinate is one of a thousand tokens per axis, and a random table gives
/// `v0=500` nothing in common with `v0=501`, so a small core on little data sees each value a
/// few dozen times and learns only the marginal of every slot (measured: the step-2000 core
/// emitted the same boxes for every image). Here row `v{a}=k` is the encoder's sin-cos position
/// of the grid coordinate `k / 999 · side − ½` along its axis (columns for `v0`/`v2`, rows for
/// `v1`/`v3`), at unit RMS, plus a random vector per axis (so `xmin` and `xmax` stay apart) and a
/// little noise. A decoder state that has copied an image token's position then scores the
/// values near that position highest, and neighbouring values share what they learn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinateTokens {
    /// Sequence domains whose value tokens are box coordinates (4M's `det`).
    pub domains: Vec<String>,
    /// RMS of a value token's row in the decoder's output table (its token tables use
    /// `token_std`); the output table's other rows start at xavier scale, a few hundredths.
    pub logit_scale: f64,
}

impl Default for CoreInit {
    fn default() -> Self {
        Self {
            token_std: INIT_STD,
            positional_cross_attention: None,
            positional_heads: None,
            context_projection_scale: 1.0,
            coordinate_tokens: None,
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
        if self.positional_heads == Some(0) {
            return Err(crate::TrainError::InvalidConfig {
                field: "init.positional_heads".into(),
                reason: "must be at least 1 (leave positional_cross_attention unset for none)"
                    .into(),
            });
        }
        if self
            .coordinate_tokens
            .as_ref()
            .is_some_and(|c| !positive(c.logit_scale))
        {
            return Err(invalid("coordinate_tokens.logit_scale"));
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
    /// Id of `v0=0`; the value tokens of the four axes follow it, [`VALUE_BINS`] each.
    pub value_base: usize,
    /// Image tokens per side of the grid the encoder's sin-cos positions describe.
    pub grid_side: usize,
}

impl FourMInit {
    /// `values` of a cross-attention query or key projection `(D, D)` (row-major, `out × in`)
    /// turned into a position matcher: head `h`'s output channels `4j..4j+4` read the four
    /// sin-cos channels of frequency `j` (`j < head_dim / 4`), the highest frequencies first.
    fn match_positions(&self, values: &mut [f32], scale: f64) {
        let d = self.dim;
        let head_dim = d / self.heads;
        let quarter = d / 4;
        let heads = self
            .options
            .positional_heads
            .unwrap_or(self.heads)
            .min(self.heads);
        values[..heads * head_dim * d]
            .iter_mut()
            .for_each(|v| *v *= 0.1);
        for head in 0..heads {
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

    /// Overwrites the value-token rows of a token table or output table `(V, D)` with image
    /// coordinates (see [`CoordinateTokens`]), at RMS `scale`.
    fn place_coordinates(&mut self, values: &mut [f32], scale: f64) {
        let d = self.dim;
        let quarter = d / 4;
        let omega = frequencies(quarter);
        let rows = values.len() / d;
        // A side stream (seeded from the main one without advancing it): turning coordinate
        // tokens on leaves every other tensor's draw as it was, so runs with and without them
        // differ only in these rows.
        let mut stream = TrainRng::seeded(self.rng.clone().next_u64() ^ COORDINATE_STREAM);
        for axis in 0..4 {
            let axis_vector: Vec<f64> = (0..d).map(|_| stream.normal()).collect();
            // Columns (x) are the second half of the 2-D table, rows (y) the first.
            let half = if axis % 2 == 0 { 2 * quarter } else { 0 };
            for bin in 0..VALUE_BINS {
                let id = self.value_base + axis * VALUE_BINS + bin;
                if id >= rows {
                    return;
                }
                let grid = bin as f64 / (VALUE_BINS - 1) as f64 * self.grid_side as f64 - 0.5;
                let mut row: Vec<f64> = axis_vector
                    .iter()
                    .map(|v| AXIS_SHARE * v + NOISE_SHARE * stream.normal())
                    .collect();
                for (j, w) in omega.iter().enumerate() {
                    // Half of the channels carry the position: doubled, they have unit RMS.
                    row[half + j] += 2.0 * (grid * w).sin();
                    row[half + quarter + j] += 2.0 * (grid * w).cos();
                }
                let rms = (row.iter().map(|v| v * v).sum::<f64>() / d as f64).sqrt();
                for (target, v) in values[id * d..(id + 1) * d].iter_mut().zip(&row) {
                    *target = (v / rms * scale) as f32;
                }
            }
        }
    }

    /// The scale of coordinate rows for this tensor, when it is a table of a coordinate domain.
    fn coordinate_scale(&self, name: &str) -> Option<f64> {
        let coordinates = self.options.coordinate_tokens.as_ref()?;
        let rest = name
            .strip_prefix("encoder_embeddings.")
            .or_else(|| name.strip_prefix("decoder_embeddings."))?;
        let (domain, tensor) = rest.split_once('.')?;
        if !coordinates.domains.iter().any(|d| d == domain) {
            return None;
        }
        match tensor {
            "token_emb.weight" => Some(self.options.token_std),
            "to_logits.weight" => Some(coordinates.logit_scale),
            _ => None,
        }
    }
}

/// Weight of the per-axis vector and of the per-row noise beside the unit-RMS position in a
/// coordinate row (before it is rescaled to unit RMS).
const AXIS_SHARE: f64 = 0.5;
const NOISE_SHARE: f64 = 0.05;

/// Mixed into the side stream's seed so that it does not repeat the main stream's next draws.
const COORDINATE_STREAM: u64 = 0xC00D_1A7E;

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
            (0..count)
                .map(|_| (rng.normal() * std) as f32)
                .collect::<Vec<f32>>()
        };
        if name.ends_with("token_emb.weight") {
            let mut values = normal(&mut self.rng, self.options.token_std);
            if let Some(scale) = self.coordinate_scale(name) {
                self.place_coordinates(&mut values, scale);
            }
            return values;
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
        if let Some(scale) = self.coordinate_scale(name) {
            self.place_coordinates(&mut values, scale);
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
            vocab: BTreeMap::from([("det".to_string(), VOCAB)]),
            options,
            value_base: VALUE_BASE,
            grid_side: SIDE,
        }
    }

    const VOCAB: usize = 4377;
    const VALUE_BASE: usize = 204;

    fn with_coordinates() -> CoreInit {
        CoreInit {
            coordinate_tokens: Some(CoordinateTokens {
                domains: vec!["det".into()],
                logit_scale: 0.05,
            }),
            ..CoreInit::default()
        }
    }

    /// The value of axis `axis` whose output row scores highest against `state`.
    fn best_value(table: &[f32], state: &[f32], axis: usize) -> usize {
        let score = |bin: usize| -> f32 {
            let id = VALUE_BASE + axis * VALUE_BINS + bin;
            table[id * DIM..(id + 1) * DIM]
                .iter()
                .zip(state)
                .map(|(w, h)| w * h)
                .sum()
        };
        (0..VALUE_BINS)
            .max_by(|a, b| score(*a).total_cmp(&score(*b)))
            .expect("bins")
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
    fn positional_heads_limits_the_matchers_to_the_first_heads() {
        let mut half = init(CoreInit {
            positional_cross_attention: Some(2.0),
            positional_heads: Some(HEADS / 2),
            ..CoreInit::default()
        });
        for (head, (hits, _)) in own_position_attention(&mut half).into_iter().enumerate() {
            if head < HEADS / 2 {
                assert_eq!(hits, 1.0, "head {head} matches positions");
            } else {
                assert!(hits < 0.2, "head {head}: own position best for {hits:.2}");
            }
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

    #[test]
    fn coordinate_rows_score_the_values_at_a_copied_position_highest() {
        let mut init = init(with_coordinates());
        let table = init.values("decoder_embeddings.det.to_logits.weight", &[VOCAB, DIM]);
        let grid = sincos_2d(SIDE, SIDE, DIM);
        // A decoder state that copied the position of image token (row 5, column 9).
        let (row, column) = (5, 9);
        let token = row * SIDE + column;
        let state = &grid[token * DIM..(token + 1) * DIM];
        let centre = |index: usize| ((index as f64 + 0.5) / SIDE as f64 * 999.0) as i64;
        // The best value lies inside the token's own grid cell (half a cell either side).
        let half_cell = 999 / (2 * SIDE as i64);
        for (axis, index) in [(0, column), (1, row), (2, column), (3, row)] {
            let best = best_value(&table, state, axis) as i64;
            assert!(
                (best - centre(index)).abs() <= half_cell,
                "axis {axis}: best value {best}, the token's centre is {}",
                centre(index)
            );
        }
        // Value rows are at the stated RMS; other rows keep the xavier draw.
        let rms = |id: usize| {
            let row = &table[id * DIM..(id + 1) * DIM];
            (row.iter().map(|v| v * v).sum::<f32>() / DIM as f32).sqrt()
        };
        assert!((rms(VALUE_BASE + 1234) - 0.05).abs() < 1e-4);
        assert!(rms(VALUE_BASE - 1) < 0.04);
        // xmin and xmax share the position but not the axis vector.
        let row = |id: usize| &table[id * DIM..(id + 1) * DIM];
        let cosine = |a: &[f32], b: &[f32]| {
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            dot / (a.iter().map(|v| v * v).sum::<f32>() * b.iter().map(|v| v * v).sum::<f32>())
                .sqrt()
        };
        let near = cosine(row(VALUE_BASE + 500), row(VALUE_BASE + 510));
        let far = cosine(row(VALUE_BASE + 500), row(VALUE_BASE + 900));
        let other_axis = cosine(
            row(VALUE_BASE + 500),
            row(VALUE_BASE + 2 * VALUE_BINS + 500),
        );
        assert!(
            near > 0.9 && far < near - 0.15 && other_axis < near - 0.1,
            "{near} {far} {other_axis}"
        );
    }

    #[test]
    fn coordinate_rows_leave_other_domains_and_the_reference_draw_alone() {
        let plain = init(CoreInit::default())
            .values("decoder_embeddings.det.to_logits.weight", &[VOCAB, DIM]);
        let mut with = init(with_coordinates());
        let caption = with.values("decoder_embeddings.caption.to_logits.weight", &[VOCAB, DIM]);
        assert_eq!(plain, caption, "caption is not a coordinate domain");
        let embedded = init(with_coordinates())
            .values("encoder_embeddings.det.token_emb.weight", &[VOCAB, DIM]);
        let reference = init(CoreInit::default())
            .values("encoder_embeddings.det.token_emb.weight", &[VOCAB, DIM]);
        assert_eq!(embedded[..VALUE_BASE * DIM], reference[..VALUE_BASE * DIM]);
        assert_ne!(
            embedded[VALUE_BASE * DIM..(VALUE_BASE + 1) * DIM],
            reference[VALUE_BASE * DIM..(VALUE_BASE + 1) * DIM]
        );
        // Coordinate rows draw from a side stream: the tensors after them start the same.
        let mut with = init(with_coordinates());
        let mut plain = init(CoreInit::default());
        for name in [
            "encoder_embeddings.det.token_emb.weight",
            "decoder_embeddings.det.to_logits.weight",
        ] {
            with.values(name, &[VOCAB, DIM]);
            plain.values(name, &[VOCAB, DIM]);
        }
        let next = "decoder_embeddings.caption.to_logits.weight";
        assert_eq!(
            with.values(next, &[VOCAB, DIM]),
            plain.values(next, &[VOCAB, DIM])
        );
    }
}
