//! The DiVAE sampling loop: the DDIM scheduler of `fourm/vq/scheduling/scheduling_ddim.py`
//! (linear, scaled-linear or cosine betas, optional zero-terminal-SNR rescaling, `sample` / `epsilon` /
//! `v_prediction` outputs, eta 0) with its trailing / leading / linspace timestep spacings, and a
//! seeded Gaussian for the initial noise.

use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};

/// The diffusion settings of a DiVAE config (`scheduler`, `beta_schedule`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusionConfig {
    pub scheduler: String,
    pub beta_schedule: String,
    pub prediction_type: String,
    pub zero_terminal_snr: bool,
    pub clip_sample: bool,
    pub thresholding: bool,
    pub num_train_timesteps: usize,
}

/// What the network predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    /// x₀ (the released DiVAEs).
    Sample,
    Epsilon,
    VPrediction,
}

/// How `set_timesteps` spaces the inference steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestepSpacing {
    /// `arange(T, 0, −T div n) − 1` (the reference's default for the DiVAEs).
    #[default]
    Trailing,
    /// `arange(0, n)·(T div n)`, reversed.
    Leading,
    /// `round(linspace(T, 1, n)) − 1`.
    Linspace,
}

/// `DDIMScheduler` with `set_alpha_to_one`, `steps_offset 0` and eta 0.
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    alphas_cumprod: Vec<f32>,
    prediction: PredictionType,
    clip_sample: bool,
}

/// `torch.linspace(start, end, n, dtype=float32)`: both halves computed from their own end.
fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let halfway = n / 2;
    (0..n)
        .map(|i| {
            if i < halfway {
                start + step * i as f32
            } else {
                end - step * (n - i - 1) as f32
            }
        })
        .collect()
}

/// Cumulative product accumulated in double and stored in float, as torch's CPU `cumprod`.
fn cumprod(values: &[f32]) -> Vec<f32> {
    let mut acc = 1f64;
    values
        .iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// `betas_for_alpha_bar` (`squaredcos_cap_v2`): `ᾱ(t) = cos²((t + 0.008)/1.008 · π/2)`,
/// `β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), 0.999)` in double, stored as float.
fn cosine_betas(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// `enforce_zero_terminal_snr`: shift and scale `sqrt(ᾱ)` so the last is 0 and the first unchanged.
fn enforce_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut sqrt_bar: Vec<f32> = cumprod(&alphas).iter().map(|a| a.sqrt()).collect();
    let (first, last) = (sqrt_bar[0], sqrt_bar[sqrt_bar.len() - 1]);
    let scale = first / (first - last);
    for s in &mut sqrt_bar {
        *s -= last;
        *s *= scale;
    }
    let bar: Vec<f32> = sqrt_bar.iter().map(|s| s * s).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    for i in 1..bar.len() {
        out.push(1.0 - bar[i] / bar[i - 1]);
    }
    out
}

impl DdimScheduler {
    /// Build from a DiVAE config, or say which setting is not supported.
    pub fn from_config(config: &DiffusionConfig) -> std::result::Result<Self, String> {
        if config.scheduler != "ddim" {
            return Err(format!(
                "scheduler `{}` (only `ddim` is implemented)",
                config.scheduler
            ));
        }
        if config.thresholding {
            return Err("thresholding = true (dynamic thresholding)".into());
        }
        let n = config.num_train_timesteps;
        if n < 2 {
            return Err(format!("num_train_timesteps = {n}"));
        }
        let mut betas = match config.beta_schedule.as_str() {
            "linear" => linspace_f32(1e-4, 0.02, n),
            "scaled_linear" => linspace_f32(1e-4f32.sqrt(), 0.02f32.sqrt(), n)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            "squaredcos_cap_v2" => cosine_betas(n),
            other => return Err(format!("beta_schedule `{other}`")),
        };
        if config.zero_terminal_snr {
            betas = enforce_zero_terminal_snr(&betas);
        }
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        let prediction = match config.prediction_type.as_str() {
            "sample" => PredictionType::Sample,
            "epsilon" => PredictionType::Epsilon,
            "v_prediction" => PredictionType::VPrediction,
            other => return Err(format!("prediction_type `{other}`")),
        };
        Ok(Self {
            alphas_cumprod: cumprod(&alphas),
            prediction,
            clip_sample: config.clip_sample,
        })
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// ᾱ_t for every training timestep.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// The timesteps `set_timesteps(steps, mode)` visits, in order. Like the reference, a step count
    /// that does not divide the training steps can visit one extra timestep in trailing mode.
    pub fn timesteps(&self, steps: usize, spacing: TimestepSpacing) -> Result<Vec<usize>> {
        let total = self.num_train_timesteps();
        if steps == 0 || steps > total {
            return Err(ModelError::InvalidInput {
                domain: "diffusion steps".into(),
                reason: format!("{steps} steps requested; expected 1 to {total}"),
            });
        }
        let ratio = total / steps;
        Ok(match spacing {
            TimestepSpacing::Trailing => (1..=total).rev().step_by(ratio).map(|t| t - 1).collect(),
            TimestepSpacing::Leading => (0..steps).rev().map(|i| i * ratio).collect(),
            TimestepSpacing::Linspace => {
                let (start, end) = (total as f64, 1.0);
                (0..steps)
                    .map(|i| {
                        let x = if steps == 1 {
                            start
                        } else {
                            start + (end - start) * i as f64 / (steps - 1) as f64
                        };
                        x.round_ties_even() as usize - 1
                    })
                    .collect()
            }
        })
    }

    /// One DDIM update (eta 0): `model_output` at timestep `t` of a run with `steps` steps, from
    /// the current `sample` to the previous one.
    pub fn step(
        &self,
        model_output: &Tensor,
        t: usize,
        sample: &Tensor,
        steps: usize,
    ) -> Result<Tensor> {
        let total = self.num_train_timesteps();
        let alpha_t = *self
            .alphas_cumprod
            .get(t)
            .ok_or_else(|| ModelError::InvalidInput {
                domain: "diffusion timestep".into(),
                reason: format!("timestep {t} is not below {total}"),
            })?;
        let prev = t as i64 - (total / steps.max(1)) as i64;
        let alpha_prev = if prev >= 0 {
            self.alphas_cumprod[prev as usize]
        } else {
            1.0
        };
        let beta_t = 1.0 - alpha_t;
        let (sa, sb) = (alpha_t.sqrt() as f64, beta_t.sqrt() as f64);
        let (mut x0, eps) = match self.prediction {
            PredictionType::Sample => {
                let eps = ((sample - (model_output * sa)?)? / sb)?;
                (model_output.clone(), eps)
            }
            PredictionType::Epsilon => {
                let x0 = ((sample - (model_output * sb)?)? / sa)?;
                (x0, model_output.clone())
            }
            PredictionType::VPrediction => {
                let x0 = ((sample * sa)? - (model_output * sb)?)?;
                let eps = ((model_output * sa)? + (sample * sb)?)?;
                (x0, eps)
            }
        };
        if self.clip_sample {
            x0 = x0.clamp(-1f32, 1f32)?;
        }
        let direction = (eps * ((1.0 - alpha_prev).sqrt() as f64))?;
        Ok(((x0 * (alpha_prev.sqrt() as f64))? + direction)?)
    }
}

/// Standard-normal noise of `shape` from a seeded generator (SplitMix64 + Box–Muller), the same
/// on every device and platform.
pub fn seeded_noise(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let count: usize = shape.iter().product();
    let mut values = Vec::with_capacity(count + 1);
    while values.len() < count {
        // u1 in (0, 1], u2 in [0, 1).
        let u1 = ((next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (next() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        values.push((r * theta.cos()) as f32);
        values.push((r * theta.sin()) as f32);
    }
    values.truncate(count);
    Ok(Tensor::from_vec(values, shape, device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released() -> DiffusionConfig {
        DiffusionConfig {
            scheduler: "ddim".into(),
            beta_schedule: "linear".into(),
            prediction_type: "sample".into(),
            zero_terminal_snr: true,
            clip_sample: false,
            thresholding: false,
            num_train_timesteps: 1000,
        }
    }

    #[test]
    fn trailing_timesteps_match_the_reference() {
        let s = DdimScheduler::from_config(&released()).unwrap();
        assert_eq!(
            s.timesteps(4, TimestepSpacing::Trailing).unwrap(),
            [999, 749, 499, 249]
        );
        let fifty = s.timesteps(50, TimestepSpacing::Trailing).unwrap();
        assert_eq!(
            (fifty[0], fifty[1], fifty[49], fifty.len()),
            (999, 979, 19, 50)
        );
        // 3 does not divide 1000: arange(1000, 0, -333) has 4 entries.
        assert_eq!(
            s.timesteps(3, TimestepSpacing::Trailing).unwrap(),
            [999, 666, 333, 0]
        );
        assert_eq!(
            s.timesteps(4, TimestepSpacing::Leading).unwrap(),
            [750, 500, 250, 0]
        );
        assert_eq!(
            s.timesteps(4, TimestepSpacing::Linspace).unwrap(),
            [999, 666, 333, 0]
        );
        assert!(s.timesteps(0, TimestepSpacing::Trailing).is_err());
        assert!(s.timesteps(1001, TimestepSpacing::Trailing).is_err());
    }

    #[test]
    fn zero_terminal_snr_ends_at_zero() {
        let s = DdimScheduler::from_config(&released()).unwrap();
        let a = s.alphas_cumprod();
        assert_eq!(a[999], 0.0);
        assert!((a[0] - (1.0 - 1e-4)).abs() < 1e-6);
        assert!(a.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn cosine_schedule_follows_alpha_bar() {
        let mut c = released();
        c.beta_schedule = "squaredcos_cap_v2".into();
        c.zero_terminal_snr = false;
        let s = DdimScheduler::from_config(&c).unwrap();
        let a = s.alphas_cumprod();
        // Before the 0.999 cap, ᾱ_t = cos²(…(t+1)/T…) / cos²(…0…) (the product telescopes).
        let f = |t: f64| {
            ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                .cos()
                .powi(2)
        };
        for t in [0usize, 100, 500, 900] {
            let expected = f((t + 1) as f64 / 1000.0) / f(0.0);
            assert!(
                (a[t] as f64 - expected).abs() < 1e-5,
                "t {t}: {} vs {expected}",
                a[t]
            );
        }
        assert!(a[999] < 1e-6);
    }

    #[test]
    fn unsupported_settings_are_named() {
        let mut c = released();
        c.scheduler = "ddpm".into();
        assert!(DdimScheduler::from_config(&c).unwrap_err().contains("ddpm"));
        let mut c = released();
        c.beta_schedule = "shifted_cosine:0.5".into();
        assert!(
            DdimScheduler::from_config(&c)
                .unwrap_err()
                .contains("shifted_cosine")
        );
        let mut c = released();
        c.thresholding = true;
        assert!(
            DdimScheduler::from_config(&c)
                .unwrap_err()
                .contains("thresholding")
        );
    }

    #[test]
    fn seeded_noise_is_deterministic_and_standard() {
        let a = seeded_noise(&[4, 1000], 7, &Device::Cpu).unwrap();
        let b = seeded_noise(&[4, 1000], 7, &Device::Cpu).unwrap();
        let c = seeded_noise(&[4, 1000], 8, &Device::Cpu).unwrap();
        let v = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v, b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_ne!(v, c.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
