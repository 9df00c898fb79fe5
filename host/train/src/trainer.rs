//! The core training loop: batches drawn in a seeded per-epoch order, the 4M objective, AdamW
//! with warm-up + cosine schedule and global-norm clipping, and checkpoints that resume exactly
//! (weights in the 4M layout, optimiser moments, step, RNG state and data position).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use tessera_model::{FourM, Parameters, save::save_tensors};

use crate::core_config::CoreTrainConfig;
use crate::data::TokenDataset;
use crate::error::{Result, TrainError};
use crate::init::FourMInit;
use crate::masking::{DomainPlan, mask_sample};
use crate::objective::{batch_loss, check_sample, domain_plans};
use crate::optim::{AdamW, clip_grad_norm, grad_norm, learning_rate};
use crate::rng::TrainRng;
use crate::run_time::{InvocationStart, RunClock};

/// What one step did.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// Steps completed (1-based).
    pub step: u64,
    pub total_steps: u64,
    pub loss: f32,
    /// Per target domain: (mean cross-entropy, predicted tokens).
    pub per_domain: BTreeMap<String, (f32, usize)>,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    pub seconds: f64,
}

/// Everything besides weights and moments that an exact resume needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub step: u64,
    /// Data position: epoch and index into that epoch's order.
    pub epoch: u64,
    pub position: usize,
    pub rng: TrainRng,
    pub losses: Vec<f32>,
    pub config: CoreTrainConfig,
}

/// A core training run in progress.
pub struct CoreTrainer<'a> {
    config: CoreTrainConfig,
    model: FourM,
    parameters: Parameters,
    optimizer: AdamW,
    plans: Vec<DomainPlan>,
    dataset: &'a dyn TokenDataset,
    state: TrainerState,
    order: Vec<usize>,
    clock: RunClock,
}

/// Checkpoint directory of `step` under `out`.
pub fn checkpoint_dir(out: &Path, step: u64) -> PathBuf {
    out.join("checkpoints").join(format!("step-{step:08}"))
}

/// The newest checkpoint under `out`, if any.
pub fn latest_checkpoint(out: &Path) -> Option<PathBuf> {
    complete_checkpoints(out).pop()
}

/// Complete checkpoints under `out` (those with their `trainer.json`), oldest first.
fn complete_checkpoints(out: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(out.join("checkpoints")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("trainer.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// Complete checkpoints a run keeps: the newest to resume from, and the one before in case the
/// newest is damaged. A long run would otherwise fill the disk with optimiser states.
pub const KEPT_CHECKPOINTS: usize = 2;

/// After `step`, every `every` steps (0: never), saves a checkpoint with `save` into its
/// directory under `out` and prunes the old ones.
pub(crate) fn checkpoint_if_due(
    out: &Path,
    step: u64,
    every: u64,
    save: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    if every > 0 && step.is_multiple_of(every) {
        save(&checkpoint_dir(out, step))?;
        prune_checkpoints(out)?;
    }
    Ok(())
}

/// Deletes all but the newest [`KEPT_CHECKPOINTS`] complete checkpoints under `out`.
fn prune_checkpoints(out: &Path) -> Result<()> {
    let dirs = complete_checkpoints(out);
    let stale = dirs.len().saturating_sub(KEPT_CHECKPOINTS);
    for dir in &dirs[..stale] {
        std::fs::remove_dir_all(dir).map_err(|source| crate::error::TrainError::Io {
            path: dir.clone(),
            source,
        })?;
    }
    Ok(())
}

impl<'a> CoreTrainer<'a> {
    /// Validate the config and the whole dataset, then initialise a fresh model.
    pub fn new(
        config: CoreTrainConfig,
        dataset: &'a dyn TokenDataset,
        device: &Device,
    ) -> Result<Self> {
        Self::new_with_dtype(config, dataset, device, DType::F32)
    }

    /// As [`new`](Self::new) in a given compute dtype (F64 for gradient checks).
    pub fn new_with_dtype(
        config: CoreTrainConfig,
        dataset: &'a dyn TokenDataset,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let plans = Self::check(&config, dataset)?;
        let model_config = config.model_config()?;
        let mut init = FourMInit {
            rng: TrainRng::seeded(config.seed),
            dim: model_config.dim,
            heads: model_config.num_heads,
            vocab: config.vocab.clone(),
            options: config.init.clone(),
            value_base: config.specials.value_base(),
            grid_side: model_config.image_size / model_config.patch_size,
        };
        let (model, parameters) = FourM::init_trainable(model_config, &mut init, dtype, device)?;
        let optimizer = AdamW::new(config.optim.clone(), &parameters.vars)?;
        let state = TrainerState {
            step: 0,
            epoch: 0,
            position: 0,
            // A separate stream from the initialisation's, so masks do not depend on model size.
            rng: TrainRng::seeded(config.seed ^ 0x6d61_736b),
            losses: Vec::new(),
            config: config.clone(),
        };
        let order = epoch_order(config.seed, 0, dataset.len());
        Ok(Self {
            config,
            model,
            parameters,
            optimizer,
            plans,
            dataset,
            state,
            order,
            clock: RunClock::fresh(),
        })
    }

    /// Continue from a checkpoint directory written by [`save`](Self::save); refused if it was
    /// written for another config.
    pub fn resume(
        config: CoreTrainConfig,
        dataset: &'a dyn TokenDataset,
        device: &Device,
        dir: &Path,
    ) -> Result<Self> {
        let plans = Self::check(&config, dataset)?;
        let state: TrainerState = read_state(dir)?;
        let differences = state.config.differences(&config);
        if !differences.is_empty() {
            return Err(TrainError::ConfigMismatch {
                path: dir.to_owned(),
                difference: format!("fields differ: {}", differences.join(", ")),
            });
        }
        let (model, parameters) = FourM::load_trainable(dir, DType::F32, device)?;
        if model.config() != &config.model_config()? {
            return Err(TrainError::ConfigMismatch {
                path: dir.to_owned(),
                difference: "config.json differs from the training config's model".into(),
            });
        }
        let optimizer = load_optimizer(
            dir,
            config.optim.clone(),
            &parameters.vars,
            state.step,
            device,
        )?;
        let order = epoch_order(config.seed, state.epoch, dataset.len());
        Ok(Self {
            config,
            model,
            parameters,
            optimizer,
            plans,
            dataset,
            state,
            order,
            clock: RunClock::resumed(dir)?,
        })
    }

    /// Refuse a config or dataset that cannot train, before any step.
    fn check(config: &CoreTrainConfig, dataset: &dyn TokenDataset) -> Result<Vec<DomainPlan>> {
        config.validate()?;
        let mut plans = domain_plans(&config.model_config()?)?;
        for plan in &mut plans {
            if let Some(&weight) = config.loss_weights.get(&plan.name) {
                plan.loss_weight = weight;
            }
        }
        if dataset.is_empty() {
            return Err(TrainError::EmptyDataset);
        }
        for index in 0..dataset.len() {
            check_sample(index, &dataset.sample(index)?, &plans, &config.vocab)?;
        }
        Ok(plans)
    }

    pub fn model(&self) -> &FourM {
        &self.model
    }

    pub fn parameters(&self) -> &Parameters {
        &self.parameters
    }

    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    /// Count this invocation's time from `start` rather than from the trainer's creation, so
    /// the checkpoints' [`SpentTime`](crate::run_time::SpentTime) include the setup before it
    /// (building the data).
    pub fn count_time_from(&mut self, start: InvocationStart) {
        self.clock.count_from(start);
    }

    pub fn config(&self) -> &CoreTrainConfig {
        &self.config
    }

    /// The optimiser (benchmarks drive the update themselves).
    pub fn optimizer_mut(&mut self) -> &mut AdamW {
        &mut self.optimizer
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

    /// The loss of the next batch without updating anything (for checks); advances data and RNG.
    pub fn next_loss(&mut self) -> Result<crate::objective::BatchLoss> {
        let indices = self.next_indices();
        let mut masked = Vec::with_capacity(indices.len());
        for index in indices {
            let sample = self.dataset.sample(index)?;
            let tokens: Vec<_> = self.plans.iter().map(|p| &sample[&p.name]).collect();
            masked.push(mask_sample(
                &self.plans,
                &tokens,
                &self.config.masking,
                &self.config.specials,
                &mut self.state.rng,
            ));
        }
        batch_loss(&self.model, &self.plans, &masked, self.config.specials.pad)
    }

    /// One optimisation step.
    pub fn step(&mut self) -> Result<StepReport> {
        let started = Instant::now();
        let batch = self.next_loss()?;
        let loss = batch.loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if !loss.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: self.state.step + 1,
            });
        }
        let mut grads = batch.loss.backward()?;
        let norm = match self.config.optim.clip_grad {
            Some(max) => clip_grad_norm(&self.parameters.vars, &mut grads, max)?,
            None => grad_norm(&self.parameters.vars, &grads)?,
        };
        let lr = learning_rate(&self.config.optim, self.state.step, self.config.steps);
        self.optimizer.step(&self.parameters.vars, &grads, lr)?;
        self.state.step += 1;
        self.state.losses.push(loss);
        Ok(StepReport {
            step: self.state.step,
            total_steps: self.config.steps,
            loss,
            per_domain: batch.per_domain,
            lr,
            grad_norm: norm,
            tokens: batch.tokens,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Write a resumable checkpoint to `dir`: `config.json` + `model.safetensors` (the 4M layout,
    /// loadable by `FourM::load`), `optimizer.safetensors` (moments), the run's time so far
    /// (`spent-time.json`) and `trainer.json`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        tessera_model::save_checkpoint(dir, self.model.config(), &self.parameters)?;
        save_optimizer(dir, &self.optimizer)?;
        self.clock.write(dir)?;
        // Written last: a directory with trainer.json is a complete checkpoint.
        write_state(dir, &self.state)
    }

    /// Train until `stop_at` steps (at most the configured total), checkpointing every
    /// `checkpoint_every` steps under `out/checkpoints/`, and at the end write the model to
    /// `out/model/` and the loss curve to `out/loss.png`. `on_step` sees every step.
    pub fn run(
        &mut self,
        out: &Path,
        stop_at: u64,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<()> {
        let stop_at = stop_at.min(self.config.steps);
        while self.state.step < stop_at {
            let report = self.step()?;
            on_step(&report);
            checkpoint_if_due(out, report.step, self.config.checkpoint_every, |dir| {
                self.save(dir)
            })?;
        }
        if self.state.step == self.config.steps {
            tessera_model::save_checkpoint(
                &out.join("model"),
                self.model.config(),
                &self.parameters,
            )?;
        }
        crate::plot::write_loss_png(&out.join("loss.png"), &self.state.losses)
    }
}

/// Write the AdamW moments of a checkpoint (`optimizer.safetensors`, `m.<name>` / `v.<name>`).
pub(crate) fn save_optimizer(dir: &Path, optimizer: &AdamW) -> Result<()> {
    let mut moments = BTreeMap::new();
    for (name, m) in &optimizer.m {
        moments.insert(format!("m.{name}"), m.clone());
        moments.insert(format!("v.{name}"), optimizer.v[name].clone());
    }
    save_tensors(&dir.join("optimizer.safetensors"), &moments, None)?;
    Ok(())
}

/// AdamW for `vars` with the moments saved by [`save_optimizer`], having taken `steps` updates.
pub(crate) fn load_optimizer(
    dir: &Path,
    config: crate::optim::OptimConfig,
    vars: &BTreeMap<String, candle_core::Var>,
    steps: u64,
    device: &Device,
) -> Result<AdamW> {
    let mut optimizer = AdamW::new(config, vars)?;
    let moments =
        tessera_model::checkpoint::SafetensorsFile::open(&dir.join("optimizer.safetensors"))?;
    for name in vars.keys() {
        let dtype = vars[name].dtype();
        let m = moments.load(&format!("m.{name}"), dtype, device)?;
        let v = moments.load(&format!("v.{name}"), dtype, device)?;
        optimizer.m.insert(name.clone(), m);
        optimizer.v.insert(name.clone(), v);
    }
    optimizer.steps = steps;
    Ok(optimizer)
}

/// Write a trainer's resumable state as `trainer.json` (through a temporary name).
pub(crate) fn write_state<S: Serialize>(dir: &Path, state: &S) -> Result<()> {
    let json = serde_json::to_string_pretty(state).expect("state serialises");
    let tmp = dir.join("trainer.json.tmp");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TrainError::Io { path, source }
    };
    std::fs::write(&tmp, json).map_err(io(&tmp))?;
    std::fs::rename(&tmp, dir.join("trainer.json")).map_err(io(dir))
}

/// Read the `trainer.json` of a checkpoint directory.
pub(crate) fn read_state<S: for<'de> Deserialize<'de>>(dir: &Path) -> Result<S> {
    let path = dir.join("trainer.json");
    let text = std::fs::read_to_string(&path).map_err(|source| TrainError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| TrainError::BadCheckpoint {
        path: dir.to_owned(),
        reason: format!("trainer.json: {e}"),
    })
}

/// The sample order of an epoch: a permutation seeded by the run's seed and the epoch number, so
/// a resumed run rebuilds it from the checkpoint's epoch alone.
pub(crate) fn epoch_order(seed: u64, epoch: u64, len: usize) -> Vec<usize> {
    let mut rng =
        TrainRng::seeded(seed.wrapping_mul(0x9E37_79B9).wrapping_add(epoch) ^ 0x6f72_6465);
    let mut order: Vec<usize> = (0..len).collect();
    rng.shuffle(&mut order);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_complete_checkpoints() {
        let out = tempfile::tempdir().unwrap();
        for step in 1..=4 {
            let dir = checkpoint_dir(out.path(), step);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("trainer.json"), "{}").unwrap();
        }
        // A checkpoint being written (no trainer.json yet) is not counted and not touched.
        std::fs::create_dir_all(checkpoint_dir(out.path(), 5)).unwrap();
        prune_checkpoints(out.path()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(out.path().join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["step-00000003", "step-00000004", "step-00000005"]);
        assert!(
            latest_checkpoint(out.path())
                .unwrap()
                .ends_with("step-00000004")
        );
    }
}
