//! The BottleneckMLP of `fourm/vq/models/mlp_models.py` (`BottleneckMLP/B_n-Wi_w`), applied
//! point-wise to `(B, C, H, W)` maps (the global-feature and pose tokenizers use `H = W = 1`).

use candle_core::Tensor;

use crate::checkpoint::TensorSource;
use crate::error::Result;
use crate::layers::Linear;
use crate::vq::config::MlpArch;
use crate::vq::nn::{LayerNorm, map_to_tokens, tokens_to_map};

/// LayerNorm epsilon of the MLP blocks (`nn.LayerNorm` default).
const MLP_NORM_EPS: f32 = 1e-5;

/// One residual block `x + Linear(wide → thin)(GELU(Linear(thin → wide)(LayerNorm(x))))`.
#[derive(Debug, Clone)]
struct BottleneckBlock {
    norm: LayerNorm,
    up: Linear,
    down: Linear,
}

/// `linear_in`, `n` bottleneck blocks, `linear_out`.
#[derive(Debug, Clone)]
pub struct BottleneckMlp {
    linear_in: Linear,
    blocks: Vec<BottleneckBlock>,
    linear_out: Linear,
}

impl BottleneckMlp {
    pub fn load(
        source: &mut TensorSource,
        prefix: &str,
        arch: &MlpArch,
        dim_in: usize,
        dim_out: usize,
    ) -> Result<Self> {
        let (thin, wide) = (arch.width, arch.width * arch.expansion);
        let blocks = (0..arch.blocks)
            .map(|i| {
                Ok(BottleneckBlock {
                    norm: LayerNorm::load(
                        source,
                        &format!("{prefix}.layernorms.{i}"),
                        thin,
                        MLP_NORM_EPS,
                    )?,
                    up: Linear::load(
                        source,
                        &format!("{prefix}.blocks.{i}.block.0"),
                        thin,
                        wide,
                        true,
                    )?,
                    down: Linear::load(
                        source,
                        &format!("{prefix}.blocks.{i}.block.2"),
                        wide,
                        thin,
                        true,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            linear_in: Linear::load(source, &format!("{prefix}.linear_in"), dim_in, thin, true)?,
            blocks,
            linear_out: Linear::load(source, &format!("{prefix}.linear_out"), thin, dim_out, true)?,
        })
    }

    pub fn dim_in(&self) -> usize {
        self.linear_in.weight().dims()[1]
    }

    pub fn dim_out(&self) -> usize {
        self.linear_out.out_dim()
    }

    /// `(B, C_in, H, W)` → `(B, C_out, H, W)`, every pixel independently.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let mut z = self.linear_in.forward(&map_to_tokens(x)?)?;
        for block in &self.blocks {
            let y = block.up.forward(&block.norm.forward(&z)?)?.gelu_erf()?;
            z = (&z + block.down.forward(&y)?)?;
        }
        tokens_to_map(&self.linear_out.forward(&z)?, h, w)
    }
}
