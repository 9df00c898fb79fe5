//! Checks a plan and the sampling options against the model's domains before any compute, so a
//! bad workflow fails with an error naming the problem instead of midway through generation.

use std::collections::BTreeMap;

use crate::error::{DomainRole, SamplerError};
use crate::logits::{SamplingOptions, TopK};
use crate::plan::{GenerationPlan, GenerationStep, Guidance, Scheme, build_chained_schedule};

/// The reference's modality types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainKind {
    /// `img`: a fixed grid of tokens (or pixels / features for pure inputs).
    Image,
    /// `seq`: a text-like token sequence with sentinels.
    Sequence,
    /// `seq_token`: a sequence of tokens handled like `seq`.
    SequenceToken,
    /// `seq_emb`: a sequence of embeddings (e.g. `t5_caption`), input only.
    SequenceEmbedding,
}

impl DomainKind {
    /// Sequences of token ids, decoded autoregressively.
    pub fn is_token_sequence(self) -> bool {
        matches!(self, DomainKind::Sequence | DomainKind::SequenceToken)
    }
}

impl std::fmt::Display for DomainKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DomainKind::Image => "img",
            DomainKind::Sequence => "seq",
            DomainKind::SequenceToken => "seq_token",
            DomainKind::SequenceEmbedding => "seq_emb",
        })
    }
}

/// What the model knows about one domain.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainInfo {
    pub kind: DomainKind,
    /// Image-like: the number of grid tokens; sequences: the maximum number of tokens.
    pub num_tokens: usize,
    /// Whether the model has a decoder (output head) for it, i.e. whether it can be a target.
    pub generatable: bool,
}

/// The domains a model accepts, provided by the model crate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DomainCatalog {
    pub domains: BTreeMap<String, DomainInfo>,
}

impl DomainCatalog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a domain (builder style).
    pub fn with(mut self, name: impl Into<String>, info: DomainInfo) -> Self {
        self.domains.insert(name.into(), info);
        self
    }

    pub fn get(&self, name: &str) -> Option<&DomainInfo> {
        self.domains.get(name)
    }

    /// The domain's info, or an error naming where the unknown name was used.
    pub fn lookup(&self, name: &str, role: DomainRole) -> Result<&DomainInfo, SamplerError> {
        self.get(name).ok_or_else(|| SamplerError::UnknownDomain {
            domain: name.to_owned(),
            role,
        })
    }
}

/// Checks the sampling options: `top_p` in (0, 1], a top-k fraction in (0, 1].
pub fn validate_sampling_options(options: &SamplingOptions) -> Result<(), SamplerError> {
    let in_unit_interval = |value: f64| value > 0.0 && value <= 1.0;
    if let Some(top_p) = options.top_p
        && !in_unit_interval(top_p)
    {
        return Err(SamplerError::TopPOutOfRange { top_p });
    }
    if let TopK::Fraction(fraction) = options.top_k
        && !in_unit_interval(fraction)
    {
        return Err(SamplerError::TopKFractionOutOfRange { fraction });
    }
    Ok(())
}

/// Checks a plan against the model's domains and the sampling options, then builds its steps.
/// This is the entry point of plain (single-condition) generation: nothing is computed on a bad
/// plan. Per-condition weight lists belong to [`prepare_multi_guided_schedule`] and are refused.
pub fn prepare_schedule(
    plan: &GenerationPlan,
    catalog: &DomainCatalog,
    options: &SamplingOptions,
) -> Result<Vec<GenerationStep>, SamplerError> {
    validate_plan(plan, catalog)?;
    for target in &plan.targets {
        if let Guidance::Weights(weights) = &target.guidance {
            return Err(SamplerError::GuidanceWeightCount {
                weights: weights.len(),
                conditions: 1,
            });
        }
    }
    checked_steps(plan, options)
}

/// [`prepare_schedule`] for multi-condition guidance with `condition_sets` conditional states
/// (see [`validate_multi_guided_plan`]).
pub fn prepare_multi_guided_schedule(
    plan: &GenerationPlan,
    catalog: &DomainCatalog,
    options: &SamplingOptions,
    condition_sets: usize,
) -> Result<Vec<GenerationStep>, SamplerError> {
    validate_multi_guided_plan(plan, catalog, condition_sets)?;
    checked_steps(plan, options)
}

fn checked_steps(
    plan: &GenerationPlan,
    options: &SamplingOptions,
) -> Result<Vec<GenerationStep>, SamplerError> {
    validate_sampling_options(options)?;
    let steps = build_chained_schedule(plan)?;
    // Schedules can still produce unusable temperatures (e.g. `onex` over a single token
    // divides 0 by 0); refuse them here rather than in the sampler.
    for step in &steps {
        check_temperature(&step.target_domain, step.temperature)?;
    }
    Ok(steps)
}

fn check_temperature(domain: &str, temperature: f64) -> Result<(), SamplerError> {
    if temperature.is_finite() && temperature >= 0.0 {
        Ok(())
    } else {
        Err(SamplerError::InvalidTemperature {
            domain: domain.to_owned(),
            temperature,
        })
    }
}

/// Checks every target and condition of a plan against the catalog.
pub fn validate_plan(plan: &GenerationPlan, catalog: &DomainCatalog) -> Result<(), SamplerError> {
    for domain in &plan.condition_domains {
        catalog.lookup(domain, DomainRole::GuidanceCondition)?;
    }
    for target in &plan.targets {
        let domain = target.domain.as_str();
        let info = catalog.lookup(domain, DomainRole::Target)?;
        if !info.generatable || info.kind == DomainKind::SequenceEmbedding {
            return Err(SamplerError::DomainNotGeneratable {
                domain: domain.to_owned(),
                kind: info.kind,
            });
        }
        match (info.kind.is_token_sequence(), target.scheme) {
            (true, Scheme::MaskGit | Scheme::Roar) => {
                return Err(SamplerError::SequenceDomainNeedsAutoregressive {
                    domain: domain.to_owned(),
                    scheme: target.scheme,
                });
            }
            (false, Scheme::Autoregressive) => {
                return Err(SamplerError::ImageDomainNotAutoregressive {
                    domain: domain.to_owned(),
                });
            }
            _ => {}
        }
        if info.kind.is_token_sequence() {
            if target.num_tokens == 0 || target.num_tokens > info.num_tokens {
                return Err(SamplerError::TokenCountMismatch {
                    domain: domain.to_owned(),
                    tokens: target.num_tokens,
                    requirement: format!("a sequence target needs 1 to {} slots", info.num_tokens),
                });
            }
        } else if target.num_tokens != info.num_tokens {
            return Err(SamplerError::TokenCountMismatch {
                domain: domain.to_owned(),
                tokens: target.num_tokens,
                requirement: format!(
                    "an image-like target has exactly {} tokens",
                    info.num_tokens
                ),
            });
        }
        if target.scheme != Scheme::Autoregressive {
            if target.decoding_steps == 0 {
                return Err(SamplerError::ZeroDecodingSteps {
                    domain: domain.to_owned(),
                    scheme: target.scheme,
                });
            }
            if target.decoding_steps > target.num_tokens {
                return Err(SamplerError::StepsExceedTokens {
                    domain: domain.to_owned(),
                    steps: target.decoding_steps,
                    tokens: target.num_tokens,
                });
            }
        }
        check_temperature(domain, target.temperature)?;
        match &target.guidance {
            Guidance::Scale(scale) => check_guidance_value(domain, *scale)?,
            Guidance::Weights(weights) => {
                if weights.is_empty() {
                    return Err(SamplerError::EmptyGuidanceWeights {
                        domain: domain.to_owned(),
                    });
                }
                for &weight in weights {
                    check_guidance_value(domain, weight)?;
                }
            }
        }
    }
    Ok(())
}

/// Checks a plan for multi-condition guidance (the reference's `generate_multi_guided`) run with
/// `condition_sets` conditional states: on top of [`validate_plan`], every target must be an
/// image-like MaskGIT/ROAR target with a list of weights, and — because each finished target joins
/// the guidance as one more condition — the `k`-th target (counting changes of target domain)
/// needs exactly `condition_sets + k` weights.
pub fn validate_multi_guided_plan(
    plan: &GenerationPlan,
    catalog: &DomainCatalog,
    condition_sets: usize,
) -> Result<(), SamplerError> {
    validate_plan(plan, catalog)?;
    let mut finished_targets = 0usize;
    let mut previous: Option<&str> = None;
    for target in &plan.targets {
        if target.scheme == Scheme::Autoregressive {
            return Err(SamplerError::ImageDomainNotAutoregressive {
                domain: target.domain.clone(),
            });
        }
        if let Some(previous) = previous
            && previous != target.domain
        {
            finished_targets += 1;
        }
        previous = Some(&target.domain);
        let conditions = condition_sets + finished_targets;
        let weights = match &target.guidance {
            Guidance::Weights(weights) => weights.len(),
            Guidance::Scale(_) => 0,
        };
        if weights != conditions {
            return Err(SamplerError::GuidanceWeightCount {
                weights,
                conditions,
            });
        }
    }
    Ok(())
}

fn check_guidance_value(domain: &str, value: f64) -> Result<(), SamplerError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(SamplerError::InvalidGuidanceScale {
            domain: domain.to_owned(),
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::TargetSpec;
    use crate::schedule::{TemperatureSchedule, TokenScheduleKind};

    fn catalog() -> DomainCatalog {
        let image = |n| DomainInfo {
            kind: DomainKind::Image,
            num_tokens: n,
            generatable: true,
        };
        DomainCatalog::new()
            .with(
                "rgb@224",
                DomainInfo {
                    kind: DomainKind::Image,
                    num_tokens: 196,
                    generatable: false,
                },
            )
            .with("tok_rgb@224", image(196))
            .with("tok_dinov2_global", image(16))
            .with("tok_single", image(1))
            .with(
                "caption",
                DomainInfo {
                    kind: DomainKind::Sequence,
                    num_tokens: 256,
                    generatable: true,
                },
            )
            .with(
                "t5_caption",
                DomainInfo {
                    kind: DomainKind::SequenceEmbedding,
                    num_tokens: 77,
                    generatable: false,
                },
            )
    }

    fn plan(domain: &str, scheme: Scheme, num_tokens: usize, steps: usize) -> GenerationPlan {
        GenerationPlan {
            condition_domains: vec!["caption".into()],
            targets: vec![TargetSpec {
                domain: domain.into(),
                scheme,
                num_tokens,
                decoding_steps: steps,
                token_schedule: TokenScheduleKind::Linear,
                temperature: 1.0,
                temperature_schedule: TemperatureSchedule::Constant,
                guidance: Guidance::Scale(2.0),
            }],
            grow_guidance_conditioning: true,
        }
    }

    fn prepare(plan: &GenerationPlan) -> Result<Vec<GenerationStep>, SamplerError> {
        prepare_schedule(plan, &catalog(), &SamplingOptions::default())
    }

    #[test]
    fn a_good_plan_passes() {
        assert_eq!(
            prepare(&plan("tok_rgb@224", Scheme::Roar, 196, 25))
                .unwrap()
                .len(),
            25
        );
        assert_eq!(
            prepare(&plan("caption", Scheme::Autoregressive, 256, 0))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn each_bad_plan_is_named() {
        assert_eq!(
            prepare(&plan("tok_rgb@224", Scheme::Roar, 196, 197)),
            Err(SamplerError::StepsExceedTokens {
                domain: "tok_rgb@224".into(),
                steps: 197,
                tokens: 196
            })
        );
        assert_eq!(
            prepare(&plan("tok_nope", Scheme::Roar, 196, 1)),
            Err(SamplerError::UnknownDomain {
                domain: "tok_nope".into(),
                role: DomainRole::Target
            })
        );
        let mut unknown_condition = plan("tok_rgb@224", Scheme::Roar, 196, 1);
        unknown_condition.condition_domains.push("nope".into());
        assert_eq!(
            prepare(&unknown_condition),
            Err(SamplerError::UnknownDomain {
                domain: "nope".into(),
                role: DomainRole::GuidanceCondition
            })
        );
        assert_eq!(
            prepare(&plan("caption", Scheme::MaskGit, 256, 8)),
            Err(SamplerError::SequenceDomainNeedsAutoregressive {
                domain: "caption".into(),
                scheme: Scheme::MaskGit
            })
        );
        assert!(matches!(
            prepare(&plan("tok_rgb@224", Scheme::Autoregressive, 196, 1)),
            Err(SamplerError::ImageDomainNotAutoregressive { .. })
        ));
        assert!(matches!(
            prepare(&plan("rgb@224", Scheme::Roar, 196, 1)),
            Err(SamplerError::DomainNotGeneratable { .. })
        ));
        assert!(matches!(
            prepare(&plan("t5_caption", Scheme::Autoregressive, 77, 1)),
            Err(SamplerError::DomainNotGeneratable { .. })
        ));
        assert!(matches!(
            prepare(&plan("tok_rgb@224", Scheme::Roar, 256, 1)),
            Err(SamplerError::TokenCountMismatch { tokens: 256, .. })
        ));
        assert!(matches!(
            prepare(&plan("caption", Scheme::Autoregressive, 300, 1)),
            Err(SamplerError::TokenCountMismatch { tokens: 300, .. })
        ));
        let mut negative = plan("tok_rgb@224", Scheme::Roar, 196, 1);
        negative.targets[0].temperature = -0.5;
        assert_eq!(
            prepare(&negative),
            Err(SamplerError::InvalidTemperature {
                domain: "tok_rgb@224".into(),
                temperature: -0.5
            })
        );
        for top_p in [0.0, -0.1, 1.5, f64::NAN] {
            let options = SamplingOptions {
                top_k: TopK::Disabled,
                top_p: Some(top_p),
            };
            assert!(matches!(
                prepare_schedule(
                    &plan("tok_rgb@224", Scheme::Roar, 196, 1),
                    &catalog(),
                    &options
                ),
                Err(SamplerError::TopPOutOfRange { .. })
            ));
        }
    }

    #[test]
    fn multi_guidance_needs_one_more_weight_per_finished_target() {
        let mut chained = plan("tok_rgb@224", Scheme::Roar, 196, 4);
        chained.targets[0].guidance = Guidance::Weights(vec![1.0, 2.0]);
        let mut second = chained.targets[0].clone();
        second.domain = "tok_dinov2_global".into();
        second.num_tokens = 16;
        second.guidance = Guidance::Weights(vec![1.0, 2.0, 0.5]);
        chained.targets.push(second);
        assert_eq!(validate_multi_guided_plan(&chained, &catalog(), 2), Ok(()));
        assert_eq!(
            validate_multi_guided_plan(&chained, &catalog(), 1),
            Err(SamplerError::GuidanceWeightCount {
                weights: 2,
                conditions: 1
            })
        );
        chained.targets[1].guidance = Guidance::Scale(3.0);
        assert_eq!(
            validate_multi_guided_plan(&chained, &catalog(), 2),
            Err(SamplerError::GuidanceWeightCount {
                weights: 0,
                conditions: 3
            })
        );
    }

    #[test]
    fn weight_lists_need_the_multi_guided_entry_point() {
        let mut weighted = plan("tok_rgb@224", Scheme::Roar, 196, 2);
        weighted.targets[0].guidance = Guidance::Weights(vec![1.5, 2.0]);
        assert_eq!(
            prepare(&weighted),
            Err(SamplerError::GuidanceWeightCount {
                weights: 2,
                conditions: 1
            })
        );
        let steps =
            prepare_multi_guided_schedule(&weighted, &catalog(), &SamplingOptions::default(), 2)
                .unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[1].guidance, Guidance::Weights(vec![1.5, 2.0]));
    }

    #[test]
    fn onex_over_one_token_is_refused_before_compute() {
        let onex = TemperatureSchedule::OneOverX {
            min_temperature: 0.5,
            power: 0.5,
        };
        let mut sixteen = plan("tok_dinov2_global", Scheme::Roar, 16, 1);
        sixteen.targets[0].temperature_schedule = onex;
        assert!(prepare(&sixteen).is_ok());
        // A 1/x curve over a single token normalises 0 by 0.
        let mut single = plan("tok_single", Scheme::Roar, 1, 1);
        single.targets[0].temperature_schedule = onex;
        assert!(
            matches!(prepare(&single), Err(SamplerError::InvalidTemperature { temperature, .. }) if temperature.is_nan())
        );
    }
}
