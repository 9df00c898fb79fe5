//! Chained generation plans and the flat step list built from them (the reference's
//! `build_chained_generation_schedules`), driven by plain structs the workflow engine fills.

use std::str::FromStr;

use crate::error::SamplerError;
use crate::schedule::{TemperatureSchedule, TokenScheduleKind, linear_schedule};

/// How a target modality is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Parallel decoding; each step commits the most confident predictions.
    MaskGit,
    /// Random-order autoregression: each step decodes a random subset of the masked positions.
    Roar,
    /// Left-to-right decoding of sequence modalities.
    Autoregressive,
}

impl Scheme {
    /// The reference's name for the scheme.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::MaskGit => "maskgit",
            Scheme::Roar => "roar",
            Scheme::Autoregressive => "autoregressive",
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheme {
    type Err = SamplerError;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "maskgit" => Ok(Scheme::MaskGit),
            "roar" => Ok(Scheme::Roar),
            "autoregressive" => Ok(Scheme::Autoregressive),
            _ => Err(SamplerError::UnknownScheme {
                name: name.to_owned(),
            }),
        }
    }
}

/// Classifier-free guidance strength of a target (and of each of its steps).
#[derive(Debug, Clone, PartialEq)]
pub enum Guidance {
    /// `uncond + (cond - uncond) * scale`; 1.0 means no guidance.
    Scale(f64),
    /// Multi-condition guidance: `uncond + sum_i w_i (cond_i - uncond)`, one weight per
    /// conditional pass.
    Weights(Vec<f64>),
}

impl Guidance {
    /// Whether the reference would run the guided variant of a step with these conditions:
    /// a scale other than 1.0 (or any weight list) and at least one domain to blank.
    pub fn is_guided(&self, condition_domains: &[String]) -> bool {
        let scaled = match self {
            Guidance::Scale(scale) => *scale != 1.0,
            Guidance::Weights(_) => true,
        };
        scaled && !condition_domains.is_empty()
    }
}

/// One target of a chained plan.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    /// Modality to generate, e.g. `tok_rgb@224` or `caption`.
    pub domain: String,
    pub scheme: Scheme,
    /// Tokens to generate (image-like: the grid size; sequences: the number of target slots).
    pub num_tokens: usize,
    /// Decoding steps (MaskGIT / ROAR; ignored for autoregressive targets).
    pub decoding_steps: usize,
    /// Token schedule (MaskGIT; ROAR always uses linear, as the reference does; ignored for
    /// autoregressive targets).
    pub token_schedule: TokenScheduleKind,
    /// Start temperature; 0 means argmax.
    pub temperature: f64,
    /// Ignored for autoregressive targets (they use the raw temperature).
    pub temperature_schedule: TemperatureSchedule,
    pub guidance: Guidance,
}

/// A chained generation: targets processed in order on one generation state.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationPlan {
    /// Domains the unconditional guidance pass blanks from the start.
    pub condition_domains: Vec<String>,
    pub targets: Vec<TargetSpec>,
    /// After each MaskGIT/ROAR target, add it to the domains later guidance passes blank
    /// (autoregressive targets are never added, as in the reference).
    pub grow_guidance_conditioning: bool,
}

/// One step of the flat schedule the generation loop runs.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationStep {
    pub target_domain: String,
    pub scheme: Scheme,
    /// Tokens committed in this step; `None` for autoregressive steps (one step per target).
    pub num_tokens: Option<usize>,
    pub temperature: f64,
    pub guidance: Guidance,
    /// Domains the unconditional pass blanks in this step.
    pub guidance_condition_domains: Vec<String>,
}

impl GenerationStep {
    /// Whether this step runs the guided (conditional + unconditional) variant.
    pub fn is_guided(&self) -> bool {
        self.guidance.is_guided(&self.guidance_condition_domains)
    }
}

/// Expands a plan into the flat step list, like the reference's
/// `build_chained_generation_schedules`. This checks only what the arithmetic itself needs (see
/// [`crate::validate::validate_plan`] for the checks against the model's domains).
///
/// * Autoregressive target: one step, raw temperature and guidance, `num_tokens = None`.
/// * MaskGIT / ROAR target: one step per entry of the token schedule zipped with the temperature
///   schedule (so a trimmed linear schedule gives fewer steps).
pub fn build_chained_schedule(plan: &GenerationPlan) -> Result<Vec<GenerationStep>, SamplerError> {
    let mut condition_domains = plan.condition_domains.clone();
    let mut steps = Vec::new();
    for target in &plan.targets {
        if target.scheme == Scheme::Autoregressive {
            steps.push(GenerationStep {
                target_domain: target.domain.clone(),
                scheme: target.scheme,
                num_tokens: None,
                temperature: target.temperature,
                guidance: target.guidance.clone(),
                guidance_condition_domains: condition_domains.clone(),
            });
            // Deliberately not added to the growing conditioning list (reference behaviour).
            continue;
        }
        if target.decoding_steps == 0 {
            return Err(SamplerError::ZeroDecodingSteps {
                domain: target.domain.clone(),
                scheme: target.scheme,
            });
        }
        let token_schedule = match target.scheme {
            Scheme::MaskGit => target
                .token_schedule
                .tokens_per_step(target.decoding_steps, target.num_tokens),
            // The reference ignores the configured token schedule for ROAR.
            _ => linear_schedule(target.decoding_steps, target.num_tokens),
        };
        let temperatures = target.temperature_schedule.temperatures(
            target.temperature,
            target.decoding_steps,
            &token_schedule,
        );
        for (step_index, (&tokens, &temperature)) in
            token_schedule.iter().zip(&temperatures).enumerate()
        {
            let num_tokens =
                usize::try_from(tokens).map_err(|_| SamplerError::NegativeStepTokens {
                    domain: target.domain.clone(),
                    step: step_index,
                    tokens,
                })?;
            steps.push(GenerationStep {
                target_domain: target.domain.clone(),
                scheme: target.scheme,
                num_tokens: Some(num_tokens),
                temperature,
                guidance: target.guidance.clone(),
                guidance_condition_domains: condition_domains.clone(),
            });
        }
        if plan.grow_guidance_conditioning {
            condition_domains.push(target.domain.clone());
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(domain: &str, scheme: Scheme, steps: usize) -> TargetSpec {
        TargetSpec {
            domain: domain.to_owned(),
            scheme,
            num_tokens: 16,
            decoding_steps: steps,
            token_schedule: TokenScheduleKind::Cosine,
            temperature: 1.0,
            temperature_schedule: TemperatureSchedule::Constant,
            guidance: Guidance::Scale(2.0),
        }
    }

    #[test]
    fn autoregressive_targets_do_not_grow_the_conditioning() {
        let plan = GenerationPlan {
            condition_domains: vec!["rgb@224".into()],
            targets: vec![
                target("caption", Scheme::Autoregressive, 0),
                target("tok_depth@224", Scheme::Roar, 2),
                target("tok_rgb@224", Scheme::MaskGit, 1),
            ],
            grow_guidance_conditioning: true,
        };
        let steps = build_chained_schedule(&plan).unwrap();
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[0].num_tokens, None);
        assert_eq!(
            steps[1].guidance_condition_domains,
            vec!["rgb@224".to_owned()]
        );
        assert_eq!(
            steps[3].guidance_condition_domains,
            vec!["rgb@224".to_owned(), "tok_depth@224".to_owned()]
        );
        // ROAR ignores the configured cosine schedule and uses linear chunks.
        assert_eq!(steps[1].num_tokens, Some(8));
    }

    #[test]
    fn negative_cosine_chunks_are_refused() {
        let mut spec = target("tok_rgb@224", Scheme::MaskGit, 25);
        spec.num_tokens = 256;
        let plan = GenerationPlan {
            condition_domains: vec![],
            targets: vec![spec],
            grow_guidance_conditioning: false,
        };
        assert_eq!(
            build_chained_schedule(&plan),
            Err(SamplerError::NegativeStepTokens {
                domain: "tok_rgb@224".into(),
                step: 24,
                tokens: -1
            })
        );
    }

    #[test]
    fn zero_steps_are_refused() {
        let plan = GenerationPlan {
            condition_domains: vec![],
            targets: vec![target("tok_rgb@224", Scheme::Roar, 0)],
            grow_guidance_conditioning: false,
        };
        assert!(matches!(
            build_chained_schedule(&plan),
            Err(SamplerError::ZeroDecodingSteps { .. })
        ));
    }
}
