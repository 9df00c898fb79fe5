//! AdamW (decoupled weight decay, as `torch.optim.AdamW`), the learning-rate schedule (linear
//! warm-up then cosine decay) and gradient clipping by global norm. Own implementation rather than
//! candle-nn's so that the moments can be saved and restored for an exact resume.

use std::collections::BTreeMap;

use candle_core::{Tensor, Var, backprop::GradStore};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Optimiser and schedule settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    pub peak_lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Clip the global gradient norm to this (`None`: no clipping).
    pub clip_grad: Option<f64>,
}

impl Default for OptimConfig {
    /// 4M's settings (`cfgs/default/4m/models/*`): AdamW β = (0.9, 0.95), weight decay 0.05,
    /// clip 3.0; the learning rate suits small models.
    fn default() -> Self {
        Self {
            peak_lr: 1e-3,
            min_lr: 1e-5,
            warmup_steps: 20,
            weight_decay: 0.05,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            clip_grad: Some(3.0),
        }
    }
}

impl OptimConfig {
    /// Refuse settings AdamW or the schedule cannot use.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: &str| TrainError::InvalidConfig {
            field: "optim".into(),
            reason: reason.into(),
        };
        if !(self.peak_lr > 0.0 && self.min_lr >= 0.0 && self.min_lr <= self.peak_lr) {
            return Err(invalid("needs 0 ≤ min_lr ≤ peak_lr, peak_lr > 0"));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return Err(invalid("betas must lie in [0, 1)"));
        }
        Ok(())
    }
}

/// Learning rate at `step` (0-based) of `total`: linear warm-up to the peak, then cosine decay to
/// `min_lr` at the last step.
pub fn learning_rate(config: &OptimConfig, step: u64, total: u64) -> f64 {
    if step < config.warmup_steps {
        return config.peak_lr * (step + 1) as f64 / config.warmup_steps as f64;
    }
    let span = total.saturating_sub(config.warmup_steps).max(1) as f64;
    let progress = ((step - config.warmup_steps) as f64 / span).min(1.0);
    config.min_lr
        + 0.5 * (config.peak_lr - config.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Whether a parameter gets weight decay: not biases, norms, modality / positional embeddings or
/// the mask token (the timm rule 4M uses: rank ≤ 1, plus its `no_weight_decay` list).
pub fn decays(name: &str, var: &Var) -> bool {
    !(var.rank() <= 1
        || name.ends_with("mod_emb")
        || name.ends_with("pos_emb")
        || name == "mask_token")
}

/// AdamW state: the first and second moments of every parameter, and the step count.
#[derive(Debug)]
pub struct AdamW {
    pub config: OptimConfig,
    /// Updates applied so far (bias correction uses it).
    pub steps: u64,
    pub m: BTreeMap<String, Tensor>,
    pub v: BTreeMap<String, Tensor>,
}

impl AdamW {
    pub fn new(config: OptimConfig, vars: &BTreeMap<String, Var>) -> Result<Self> {
        let zeros = |var: &Var| var.as_tensor().zeros_like();
        Ok(Self {
            config,
            steps: 0,
            m: vars
                .iter()
                .map(|(k, v)| Ok((k.clone(), zeros(v)?)))
                .collect::<Result<_>>()?,
            v: vars
                .iter()
                .map(|(k, v)| Ok((k.clone(), zeros(v)?)))
                .collect::<Result<_>>()?,
        })
    }

    /// One update with learning rate `lr`; parameters without a gradient are left alone.
    pub fn step(&mut self, vars: &BTreeMap<String, Var>, grads: &GradStore, lr: f64) -> Result<()> {
        self.steps += 1;
        let c = &self.config;
        let correction1 = 1.0 - c.beta1.powi(self.steps as i32);
        let correction2 = 1.0 - c.beta2.powi(self.steps as i32);
        for (name, var) in vars {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let m = ((&self.m[name] * c.beta1)? + (grad * (1.0 - c.beta1))?)?;
            let v = ((&self.v[name] * c.beta2)? + (grad.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&m / correction1)? / ((&v / correction2)?.sqrt()? + c.eps)?)?;
            let mut theta = var.as_tensor().detach();
            if decays(name, var) {
                theta = (theta * (1.0 - lr * c.weight_decay))?;
            }
            var.set(&(theta - (update * lr)?)?)?;
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        Ok(())
    }
}

/// Global L2 norm of the gradients of `vars`.
pub fn grad_norm(vars: &BTreeMap<String, Var>, grads: &GradStore) -> Result<f64> {
    let mut sum = 0.0;
    for var in vars.values() {
        if let Some(grad) = grads.get(var.as_tensor()) {
            sum += grad
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    Ok(sum.sqrt())
}

/// Scale every gradient so that the global norm is at most `max_norm` (as
/// `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(
    vars: &BTreeMap<String, Var>,
    grads: &mut GradStore,
    max_norm: f64,
) -> Result<f64> {
    let norm = grad_norm(vars, grads)?;
    let scale = max_norm / (norm + 1e-6);
    if scale < 1.0 {
        for var in vars.values() {
            if let Some(grad) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), (grad * scale)?);
            }
        }
    }
    Ok(norm)
}
