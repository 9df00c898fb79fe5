//! Training an image tokenizer (VQ-VAE with the lucid cosine quantizer) as the reference trains
//! it: the straight-through estimator through the quantizer, reconstruction loss (MSE, or
//! cross-entropy for semseg) plus the commitment term `‖sg(q) − z‖²`, the codebook updated by EMA
//! of the L2-normalised encoder outputs assigned to each code (no codebook gradient), codes whose
//! EMA usage falls below a threshold restarted from random encoder outputs of the batch; AdamW
//! with warm-up + cosine and clipping, exact resume, checkpoints in the released tokenizer layout.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use tessera_model::checkpoint::SafetensorsFile;
use tessera_model::save::save_tensors;
use tessera_model::{Parameters, VqTokenizer};

use crate::error::{Result, TrainError};
use crate::image_data::{ImageDataset, ImageSample};
use crate::init::TokenizerInit;
use crate::optim::{AdamW, clip_grad_norm, grad_norm, learning_rate};
use crate::rng::TrainRng;
use crate::run_time::{InvocationStart, RunClock};
use crate::tokenizer_config::{TokDomain, TokenizerTrainConfig};
use crate::trainer::{epoch_order, load_optimizer, read_state, save_optimizer, write_state};

/// Checkpoint key of the codebook rows (EMA-updated, never given to the optimiser).
pub const CODEBOOK: &str = "quantize._codebook.embed";
/// Checkpoint key of the per-code EMA usage.
pub const CLUSTER_SIZE: &str = "quantize._codebook.cluster_size";
/// Checkpoint key of the reference's "codebook initialised" flag.
pub const INITTED: &str = "quantize._codebook.initted";

/// What one step did.
#[derive(Debug, Clone)]
pub struct TokenizerStepReport {
    /// Steps completed (1-based).
    pub step: u64,
    pub total_steps: u64,
    pub loss: f32,
    /// MSE, or cross-entropy for semseg.
    pub reconstruction: f32,
    pub commitment: f32,
    /// `exp(entropy)` of the batch's code assignments.
    pub perplexity: f64,
    /// Distinct codes assigned in the batch.
    pub codes_in_batch: usize,
    /// Codes whose EMA usage is at or above the dead-code threshold after the update.
    pub live_codes: usize,
    /// Codes restarted from encoder outputs this step.
    pub restarted: usize,
    pub lr: f64,
    pub grad_norm: f64,
    pub images: usize,
    pub seconds: f64,
}

/// Everything besides weights, codebook and moments that an exact resume needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerTrainerState {
    pub step: u64,
    pub epoch: u64,
    pub position: usize,
    /// Dead-code restarts draw from it.
    pub rng: TrainRng,
    pub losses: Vec<f32>,
    pub config: TokenizerTrainConfig,
}

/// The quantizer's choice for a batch, held fixed to evaluate the straight-through surrogate at
/// other parameters (gradient checks): decoder input `z + offset`, commitment against `rows`.
#[derive(Debug, Clone)]
pub struct FrozenQuantization {
    /// `(N, C)` chosen codebook rows.
    pub rows: Tensor,
    /// `(N, C)` `q − z` at the point of freezing.
    pub offset: Tensor,
}

/// One forward pass of the training objective.
#[derive(Debug, Clone)]
pub struct TokenizerLoss {
    pub loss: Tensor,
    pub reconstruction: Tensor,
    pub commitment: Tensor,
    /// `(N)` code per latent position, row-major over `(B, h, w)`.
    pub codes: Vec<u32>,
    /// `(N, C)` encoder latents (after `quant_proj`), detached.
    pub latents: Tensor,
    /// The reconstruction `(B, C, H, W)` (semseg: logits), as the decoder gives it.
    pub reconstruction_map: Tensor,
    pub frozen: FrozenQuantization,
}

/// A tokenizer training run in progress.
pub struct TokenizerTrainer<'a> {
    config: TokenizerTrainConfig,
    tokenizer: VqTokenizer,
    parameters: Parameters,
    /// The optimised parameters: every `Var` but the codebook.
    trained: BTreeMap<String, Var>,
    codebook: Var,
    /// EMA usage per code.
    cluster_size: Vec<f64>,
    optimizer: AdamW,
    dataset: &'a ImageDataset,
    state: TokenizerTrainerState,
    order: Vec<usize>,
    dtype: DType,
    device: Device,
    clock: RunClock,
}

impl<'a> TokenizerTrainer<'a> {
    /// Validate config and data, then initialise a fresh tokenizer in F32.
    pub fn new(
        config: TokenizerTrainConfig,
        dataset: &'a ImageDataset,
        device: &Device,
    ) -> Result<Self> {
        Self::new_with_dtype(config, dataset, device, DType::F32)
    }

    /// As [`new`](Self::new) in a given dtype (F64 for gradient checks).
    pub fn new_with_dtype(
        config: TokenizerTrainConfig,
        dataset: &'a ImageDataset,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        Self::check(&config, dataset)?;
        let mut init = TokenizerInit {
            rng: TrainRng::seeded(config.seed),
        };
        let (tokenizer, parameters) =
            VqTokenizer::init_trainable(config.vq_config()?, &mut init, dtype, device)?;
        let codebook_size = config.codebook_size;
        let state = TokenizerTrainerState {
            step: 0,
            epoch: 0,
            position: 0,
            // A separate stream from the initialisation's.
            rng: TrainRng::seeded(config.seed ^ 0x636f_6465),
            losses: Vec::new(),
            config: config.clone(),
        };
        Self::assemble(
            config,
            tokenizer,
            parameters,
            vec![0.0; codebook_size],
            None,
            state,
            dataset,
            device,
            dtype,
        )
    }

    /// Continue from a checkpoint directory written by [`save`](Self::save); refused if it was
    /// written for another config.
    pub fn resume(
        config: TokenizerTrainConfig,
        dataset: &'a ImageDataset,
        device: &Device,
        dir: &Path,
    ) -> Result<Self> {
        Self::check(&config, dataset)?;
        let state: TokenizerTrainerState = read_state(dir)?;
        let differences = state.config.differences(&config);
        if !differences.is_empty() {
            return Err(TrainError::ConfigMismatch {
                path: dir.to_owned(),
                difference: format!("fields differ: {}", differences.join(", ")),
            });
        }
        let (tokenizer, parameters) = VqTokenizer::load_trainable(dir, DType::F32, device)?;
        if tokenizer.config() != &config.vq_config()? {
            return Err(TrainError::ConfigMismatch {
                path: dir.to_owned(),
                difference: "config.json differs from the training config's tokenizer".into(),
            });
        }
        let file = SafetensorsFile::open(&dir.join("model.safetensors"))?;
        // Stored as F32 like every tensor of the layout.
        let cluster_size = file
            .load(CLUSTER_SIZE, DType::F32, device)?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        Self::assemble(
            config,
            tokenizer,
            parameters,
            cluster_size,
            Some(dir),
            state,
            dataset,
            device,
            DType::F32,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        config: TokenizerTrainConfig,
        tokenizer: VqTokenizer,
        parameters: Parameters,
        cluster_size: Vec<f64>,
        moments_from: Option<&Path>,
        state: TokenizerTrainerState,
        dataset: &'a ImageDataset,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let mut trained = parameters.vars.clone();
        let codebook = trained
            .remove(CODEBOOK)
            .ok_or_else(|| TrainError::InvalidConfig {
                field: "quant_type".into(),
                reason: "the tokenizer has no lucid codebook".into(),
            })?;
        if cluster_size.len() != config.codebook_size {
            return Err(TrainError::InvalidConfig {
                field: "codebook_size".into(),
                reason: format!(
                    "{} usage counts for {} codes",
                    cluster_size.len(),
                    config.codebook_size
                ),
            });
        }
        let optimizer = match moments_from {
            Some(dir) => load_optimizer(dir, config.optim.clone(), &trained, state.step, device)?,
            None => AdamW::new(config.optim.clone(), &trained)?,
        };
        let order = epoch_order(config.seed, state.epoch, dataset.len());
        Ok(Self {
            config,
            tokenizer,
            parameters,
            trained,
            codebook,
            cluster_size,
            optimizer,
            dataset,
            state,
            order,
            dtype,
            device: device.clone(),
            clock: match moments_from {
                Some(dir) => RunClock::resumed(dir)?,
                None => RunClock::fresh(),
            },
        })
    }

    /// Refuse a config or dataset that cannot train, before any step.
    fn check(config: &TokenizerTrainConfig, dataset: &ImageDataset) -> Result<()> {
        config.validate()?;
        if dataset.is_empty() {
            return Err(TrainError::EmptyDataset);
        }
        let wrong = |index: usize, reason: String| TrainError::InvalidSample {
            index,
            domain: config.domain.name().into(),
            reason,
        };
        if dataset.domain != config.domain {
            return Err(wrong(0, format!("the data is `{}`", dataset.domain.name())));
        }
        if dataset.size != config.image_size {
            return Err(wrong(
                0,
                format!(
                    "images are {0}×{0}, the config trains at {1}×{1}",
                    dataset.size, config.image_size
                ),
            ));
        }
        let pixels = config.image_size * config.image_size;
        for (index, sample) in dataset.samples.iter().enumerate() {
            match (sample, config.domain) {
                (ImageSample::Classes(ids), TokDomain::Semseg) if ids.len() == pixels => {}
                (ImageSample::Image { channels, values }, d)
                    if d != TokDomain::Semseg
                        && *channels == config.n_channels()
                        && values.len() == channels * pixels
                        && values.iter().all(|v| v.is_finite()) => {}
                _ => {
                    return Err(wrong(
                        index,
                        "not a pre-processed image of this domain and size".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn tokenizer(&self) -> &VqTokenizer {
        &self.tokenizer
    }

    pub fn parameters(&self) -> &Parameters {
        &self.parameters
    }

    pub fn state(&self) -> &TokenizerTrainerState {
        &self.state
    }

    pub fn config(&self) -> &TokenizerTrainConfig {
        &self.config
    }

    pub fn cluster_size(&self) -> &[f64] {
        &self.cluster_size
    }

    /// Draw the next batch's sample indices, advancing the data position across epochs.
    fn next_indices(&mut self) -> Vec<usize> {
        (0..self.config.batch_size)
            .map(|_| {
                if self.state.position == self.order.len() {
                    self.state.epoch += 1;
                    self.state.position = 0;
                    self.order = epoch_order(self.config.seed, self.state.epoch, self.order.len());
                }
                self.state.position += 1;
                self.order[self.state.position - 1]
            })
            .collect()
    }

    /// The batch of `indices` as the model's input.
    pub fn batch(&self, indices: &[usize]) -> Result<Tensor> {
        self.dataset.batch(indices, self.dtype, &self.device)
    }

    /// The training objective on a batch (`(B, C, H, W)` images or `(B, H, W)` class ids). With
    /// `frozen`, the quantizer's choice is taken from there instead of being made.
    pub fn loss(
        &self,
        input: &Tensor,
        frozen: Option<&FrozenQuantization>,
    ) -> Result<TokenizerLoss> {
        let tok = &self.tokenizer;
        let x = tok.prepare_input(input)?;
        let z = tok.project_latents(&tok.encode_features(&x)?)?;
        let (b, c, h, w) = z.dims4()?;
        let rows = z.permute((0, 2, 3, 1))?.reshape((b * h * w, c))?;
        let (quant_rows, codes, ste) = match frozen {
            Some(f) => (f.rows.clone(), Vec::new(), (&rows + &f.offset)?),
            None => {
                let quantizer = tok
                    .lucid_quantizer()
                    .ok_or_else(|| TrainError::InvalidConfig {
                        field: "quant_type".into(),
                        reason: "only the lucid quantizer trains".into(),
                    })?;
                let ids = quantizer.scores(&rows)?.argmax(D::Minus1)?;
                let q = self.codebook.as_tensor().detach().index_select(&ids, 0)?;
                // Straight-through: the decoder sees q, the encoder gets the decoder's gradient.
                let ste = (&rows + (&q - &rows)?.detach())?;
                (q, ids.to_vec1::<u32>()?, ste)
            }
        };
        let zq = ste.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?;
        let dec = tok.decode_quant(&zq)?;
        let reconstruction = match self.config.domain {
            TokDomain::Semseg => cross_entropy(&dec, input)?,
            _ => (&dec - &x.detach())?.sqr()?.mean_all()?,
        };
        let commitment = (&quant_rows - &rows)?.sqr()?.mean_all()?;
        let loss = (&reconstruction + (&commitment * self.config.quantizer.commitment_weight)?)?;
        let offset = (&quant_rows - &rows.detach())?;
        Ok(TokenizerLoss {
            loss,
            reconstruction,
            commitment,
            codes,
            latents: rows.detach(),
            reconstruction_map: dec,
            frozen: FrozenQuantization {
                rows: quant_rows,
                offset,
            },
        })
    }

    /// One optimisation step, then the codebook's EMA update and dead-code restarts.
    pub fn step(&mut self) -> Result<TokenizerStepReport> {
        let started = Instant::now();
        let indices = self.next_indices();
        let input = self.batch(&indices)?;
        let out = self.loss(&input, None)?;
        let scalar =
            |t: &Tensor| -> Result<f32> { Ok(t.to_dtype(DType::F32)?.to_scalar::<f32>()?) };
        let loss = scalar(&out.loss)?;
        if !loss.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: self.state.step + 1,
            });
        }
        let mut grads = out.loss.backward()?;
        let norm = match self.config.optim.clip_grad {
            Some(max) => clip_grad_norm(&self.trained, &mut grads, max)?,
            None => grad_norm(&self.trained, &grads)?,
        };
        let lr = learning_rate(&self.config.optim, self.state.step, self.config.steps);
        self.optimizer.step(&self.trained, &grads, lr)?;
        let usage = self.update_codebook(&out.latents, &out.codes)?;
        self.state.step += 1;
        self.state.losses.push(loss);
        Ok(TokenizerStepReport {
            step: self.state.step,
            total_steps: self.config.steps,
            loss,
            reconstruction: scalar(&out.reconstruction)?,
            commitment: scalar(&out.commitment)?,
            perplexity: usage.perplexity,
            codes_in_batch: usage.codes_in_batch,
            live_codes: usage.live_codes,
            restarted: usage.restarted,
            lr,
            grad_norm: norm,
            images: indices.len(),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The cosine codebook's EMA step (the reference's `CosineSimCodebook` in training mode):
    /// usage `n_k ← d·n_k + (1−d)·count_k`; each used row moves toward the normalised mean of the
    /// normalised latents assigned to it, `e_k ← d·e_k + (1−d)·mean_k`; then every code with
    /// `n_k` below the threshold is replaced by a random normalised latent of the batch.
    fn update_codebook(&mut self, latents: &Tensor, codes: &[u32]) -> Result<CodeUsage> {
        let (n, c) = latents.dims2()?;
        let k = self.config.codebook_size;
        let decay = self.config.quantizer.ema_decay;
        let mut rows: Vec<f64> = latents.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        for row in rows.chunks_mut(c) {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v /= norm);
        }
        let mut counts = vec![0usize; k];
        let mut sums = vec![0f64; k * c];
        for (i, &code) in codes.iter().enumerate() {
            let code = code as usize;
            counts[code] += 1;
            for j in 0..c {
                sums[code * c + j] += rows[i * c + j];
            }
        }
        let mut embed: Vec<f64> = self
            .codebook
            .as_tensor()
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1()?;
        for code in 0..k {
            // Rounded to f32, the precision it is saved in, so that a resumed run continues
            // from exactly the values the uninterrupted one has.
            let updated = decay * self.cluster_size[code] + (1.0 - decay) * counts[code] as f64;
            self.cluster_size[code] = updated as f32 as f64;
            if counts[code] == 0 {
                continue;
            }
            let mean = &sums[code * c..(code + 1) * c];
            let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            for j in 0..c {
                let e = &mut embed[code * c + j];
                *e = decay * *e + (1.0 - decay) * mean[j] / norm;
            }
        }
        let threshold = self.config.quantizer.dead_code_threshold;
        let dead: Vec<usize> = (0..k)
            .filter(|&code| self.cluster_size[code] < threshold)
            .collect();
        if !dead.is_empty() && n > 0 {
            // Distinct latents when the batch has enough, else drawn with replacement.
            let picks: Vec<usize> = if n >= dead.len() {
                let mut all: Vec<usize> = (0..n).collect();
                self.state.rng.shuffle(&mut all);
                all.truncate(dead.len());
                all
            } else {
                dead.iter().map(|_| self.state.rng.below(n)).collect()
            };
            for (&code, &pick) in dead.iter().zip(&picks) {
                embed[code * c..(code + 1) * c].copy_from_slice(&rows[pick * c..(pick + 1) * c]);
            }
        }
        let dtype = self.codebook.dtype();
        self.codebook
            .set(&Tensor::from_vec(embed, (k, c), &self.device)?.to_dtype(dtype)?)?;
        let entropy: f64 = counts
            .iter()
            .filter(|&&m| m > 0)
            .map(|&m| {
                let p = m as f64 / codes.len().max(1) as f64;
                -p * p.ln()
            })
            .sum();
        Ok(CodeUsage {
            perplexity: entropy.exp(),
            codes_in_batch: counts.iter().filter(|&&m| m > 0).count(),
            live_codes: self
                .cluster_size
                .iter()
                .filter(|&&s| s >= threshold)
                .count(),
            restarted: dead.len(),
        })
    }

    /// Every tensor of the released layout: parameters, buffers, codebook usage and flag.
    fn checkpoint_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut tensors = self.parameters.checkpoint_tensors()?;
        let k = self.config.codebook_size;
        tensors.insert(
            CLUSTER_SIZE.into(),
            Tensor::from_vec(self.cluster_size.clone(), k, &self.device)?,
        );
        tensors.insert(INITTED.into(), Tensor::new(&[1f32], &self.device)?);
        Ok(tensors)
    }

    /// Write the tokenizer in the released layout to `dir`: `config.json` + `model.safetensors`,
    /// which `VqTokenizer::load` reads.
    pub fn save_tokenizer(&self, dir: &Path) -> Result<()> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| TrainError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        save_tensors(
            &dir.join("model.safetensors"),
            &self.checkpoint_tensors()?,
            None,
        )?;
        let json = serde_json::to_string_pretty(&self.config.tokenizer_json()).expect("JSON value");
        let tmp = dir.join("config.json.tmp");
        std::fs::write(&tmp, json).map_err(io(&tmp))?;
        std::fs::rename(&tmp, dir.join("config.json")).map_err(io(dir))
    }

    /// Count this invocation's time from `start` rather than from the trainer's creation, so
    /// the checkpoints' [`SpentTime`](crate::run_time::SpentTime) include the setup before it
    /// (rendering the images).
    pub fn count_time_from(&mut self, start: InvocationStart) {
        self.clock.count_from(start);
    }

    /// Write a resumable checkpoint: the tokenizer, `optimizer.safetensors`, the run's time so
    /// far (`spent-time.json`), `trainer.json`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.save_tokenizer(dir)?;
        save_optimizer(dir, &self.optimizer)?;
        self.clock.write(dir)?;
        // Written last: a directory with trainer.json is a complete checkpoint.
        write_state(dir, &self.state)
    }

    /// Train until `stop_at` steps (at most the configured total), checkpointing every
    /// `checkpoint_every` steps under `out/checkpoints/`; at the end write the tokenizer to
    /// `out/model/` and the loss curve to `out/loss.png`.
    pub fn run(
        &mut self,
        out: &Path,
        stop_at: u64,
        on_step: &mut dyn FnMut(&TokenizerStepReport),
    ) -> Result<()> {
        let stop_at = stop_at.min(self.config.steps);
        while self.state.step < stop_at {
            let report = self.step()?;
            on_step(&report);
            crate::trainer::checkpoint_if_due(
                out,
                report.step,
                self.config.checkpoint_every,
                |dir| self.save(dir),
            )?;
        }
        if self.state.step == self.config.steps {
            self.save_tokenizer(&out.join("model"))?;
        }
        crate::plot::write_loss_png(&out.join("loss.png"), &self.state.losses)
    }
}

struct CodeUsage {
    perplexity: f64,
    codes_in_batch: usize,
    live_codes: usize,
    restarted: usize,
}

/// Mean cross-entropy of logits `(B, K, H, W)` against class ids `(B, H, W)`.
fn cross_entropy(logits: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (b, k, h, w) = logits.dims4()?;
    let flat = logits.permute((0, 2, 3, 1))?.reshape((b * h * w, k))?;
    let max = flat.max_keepdim(D::Minus1)?.detach();
    let shifted = flat.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let log_probs = shifted.broadcast_sub(&log_sum)?;
    let targets = ids.flatten_all()?.to_dtype(DType::U32)?.unsqueeze(1)?;
    Ok(log_probs.gather(&targets, 1)?.neg()?.mean_all()?)
}
