//! Bad schedules are refused before any compute (no step begins, the state is untouched);
//! cancellation from the progress callback stops cleanly; the encoder is not rerun when its
//! inputs did not change.

use std::ops::ControlFlow;

use tessera_generate::{
    Cancelled, DenseInputs, GenerateError, Generator, GeneratorOptions, Progress, no_progress,
};
use tessera_sampler::{
    GenerationPlan, GenerationState, GenerationStep, Guidance, RandomSource, SamplerError,
    SamplingOptions, Scheme, SeededRandom, TargetSpec, TemperatureSchedule, TokenScheduleKind,
    TopK,
};

use crate::recompute::{initial_state, small_model, small_model_with};

/// Counts the steps begun, to prove that nothing ran.
struct Counting {
    inner: SeededRandom,
    steps: usize,
}

impl RandomSource for Counting {
    fn begin_step(&mut self, step_index: usize) {
        self.steps += 1;
        self.inner.begin_step(step_index);
    }
    fn next_uniform(&mut self) -> f64 {
        self.inner.next_uniform()
    }
}

fn target(domain: &str, scheme: Scheme, num_tokens: usize, steps: usize) -> TargetSpec {
    TargetSpec {
        domain: domain.into(),
        scheme,
        num_tokens,
        decoding_steps: steps,
        token_schedule: TokenScheduleKind::Linear,
        temperature: 0.0,
        temperature_schedule: TemperatureSchedule::Constant,
        guidance: Guidance::Scale(2.0),
    }
}

fn plan(targets: Vec<TargetSpec>) -> GenerationPlan {
    GenerationPlan {
        condition_domains: vec!["metadata".into()],
        targets,
        grow_guidance_conditioning: true,
    }
}

#[test]
fn bad_schedules_are_refused_before_any_compute() {
    let (_dir, model) = small_model(7);
    let generator = Generator::new(&model);
    let initial = initial_state(1, 6, 3);
    let refuse = |generator: &Generator<'_>, plan: &GenerationPlan| -> GenerateError {
        let mut state = initial.clone();
        let mut rng = Counting {
            inner: SeededRandom::new(1),
            steps: 0,
        };
        let mut called = false;
        let mut callback = |_: Progress<'_>| {
            called = true;
            ControlFlow::Continue(())
        };
        let error = generator
            .generate(
                plan,
                &mut state,
                &DenseInputs::new(),
                &mut rng,
                &mut callback,
            )
            .expect_err("a bad plan must be refused");
        assert_eq!(rng.steps, 0, "a step began before the refusal: {error}");
        assert!(!called);
        assert_eq!(state, initial);
        error
    };
    let image = "tok_dinov2_global";
    assert!(matches!(
        refuse(&generator, &plan(vec![target(image, Scheme::Roar, 16, 17)])),
        GenerateError::Sampler(SamplerError::StepsExceedTokens {
            steps: 17,
            tokens: 16,
            ..
        })
    ));
    assert!(matches!(
        refuse(
            &generator,
            &plan(vec![target("tok_rgb@224", Scheme::Roar, 196, 1)])
        ),
        GenerateError::Sampler(SamplerError::UnknownDomain { .. })
    ));
    assert!(matches!(
        refuse(
            &generator,
            &plan(vec![target("caption", Scheme::MaskGit, 6, 2)])
        ),
        GenerateError::Sampler(SamplerError::SequenceDomainNeedsAutoregressive { .. })
    ));
    let mut negative = target(image, Scheme::Roar, 16, 2);
    negative.temperature = -1.0;
    assert!(matches!(
        refuse(&generator, &plan(vec![negative])),
        GenerateError::Sampler(SamplerError::InvalidTemperature { .. })
    ));
    assert!(matches!(
        refuse(&generator, &plan(vec![target(image, Scheme::Roar, 20, 2)])),
        GenerateError::Sampler(SamplerError::TokenCountMismatch { tokens: 20, .. })
    ));
    assert!(matches!(
        refuse(
            &generator,
            &plan(vec![target("caption", Scheme::Autoregressive, 300, 1)])
        ),
        GenerateError::Sampler(SamplerError::TokenCountMismatch { tokens: 300, .. })
    ));
    let top_p = Generator::with_options(
        &model,
        GeneratorOptions {
            sampling: SamplingOptions {
                top_k: TopK::Disabled,
                top_p: Some(1.5),
            },
            ..GeneratorOptions::default()
        },
    );
    assert!(matches!(
        refuse(&top_p, &plan(vec![target(image, Scheme::Roar, 16, 2)])),
        GenerateError::Sampler(SamplerError::TopPOutOfRange { .. })
    ));
    // The second target is bad: nothing of the first one runs either.
    assert!(matches!(
        refuse(
            &generator,
            &plan(vec![
                target("caption", Scheme::Autoregressive, 6, 1),
                target(image, Scheme::MaskGit, 16, 17)
            ])
        ),
        GenerateError::Sampler(SamplerError::StepsExceedTokens { .. })
    ));
}

fn step(domain: &str, scheme: Scheme, num_tokens: Option<usize>) -> GenerationStep {
    GenerationStep {
        target_domain: domain.into(),
        scheme,
        num_tokens,
        temperature: 0.0,
        guidance: Guidance::Scale(2.0),
        guidance_condition_domains: vec!["metadata".into()],
    }
}

#[test]
fn bad_flat_schedules_are_refused_before_any_compute() {
    let (_dir, model) = small_model(8);
    let generator = Generator::new(&model);
    let initial = initial_state(2, 6, 4);
    let refuse = |steps: &[GenerationStep], state: &GenerationState| -> GenerateError {
        let mut state = state.clone();
        let mut rng = Counting {
            inner: SeededRandom::new(1),
            steps: 0,
        };
        let error = generator
            .run_steps(
                steps,
                &mut state,
                &DenseInputs::new(),
                &mut rng,
                &mut no_progress,
            )
            .expect_err("a bad schedule must be refused");
        assert_eq!(rng.steps, 0, "a step began before the refusal: {error}");
        error
    };
    let image = "tok_dinov2_global";
    // MaskGIT cannot commit more tokens than remain masked (10 + 10 > 16).
    let too_many = [
        step(image, Scheme::MaskGit, Some(10)),
        step(image, Scheme::MaskGit, Some(10)),
    ];
    assert!(matches!(
        refuse(&too_many, &initial),
        GenerateError::Sampler(SamplerError::SelectionTooLarge { .. })
    ));
    assert!(matches!(
        refuse(&[step(image, Scheme::Roar, None)], &initial),
        GenerateError::MissingTokenCount { .. }
    ));
    let mut without_target = initial.clone();
    without_target.remove(image);
    assert!(matches!(
        refuse(&[step(image, Scheme::Roar, Some(16))], &without_target),
        GenerateError::TargetNotInState { .. }
    ));
    let mut weights = step(image, Scheme::Roar, Some(16));
    weights.guidance = Guidance::Weights(vec![1.0, 2.0]);
    assert!(matches!(
        refuse(&[weights], &initial),
        GenerateError::GuidanceWeightMismatch { .. }
    ));
    let mut own = step(image, Scheme::Roar, Some(16));
    own.guidance_condition_domains.push(image.into());
    assert!(matches!(
        refuse(&[own], &initial),
        GenerateError::TargetIsGuidanceCondition { .. }
    ));
    let mut unknown = step(image, Scheme::Roar, Some(16));
    unknown.guidance_condition_domains.push("nope".into());
    assert!(matches!(
        refuse(&[unknown], &initial),
        GenerateError::Sampler(SamplerError::UnknownDomain { .. })
    ));
    let ar = step("caption", Scheme::Autoregressive, None);
    assert!(matches!(
        refuse(&[ar.clone(), ar.clone()], &initial),
        GenerateError::Sampler(SamplerError::NoTargetPositions { .. })
    ));
    let mut metadata_target = ar;
    metadata_target.target_domain = "metadata".into();
    metadata_target.guidance_condition_domains = vec!["tok_imagebind_global".into()];
    assert!(matches!(
        refuse(&[metadata_target], &initial),
        GenerateError::Sampler(SamplerError::NoTargetPositions { .. })
    ));
    assert!(matches!(
        refuse(&[step("caption", Scheme::Roar, Some(4))], &initial),
        GenerateError::Sampler(SamplerError::SequenceDomainNeedsAutoregressive { .. })
    ));
}

#[test]
fn the_progress_callback_cancels_cleanly() {
    let (_dir, model) = small_model(9);
    let generator = Generator::new(&model);
    let steps = generator
        .prepare(&plan(vec![
            target("tok_dinov2_global", Scheme::Roar, 16, 2),
            target("caption", Scheme::Autoregressive, 8, 1),
        ]))
        .unwrap();
    assert_eq!(steps.len(), 3);
    let initial = initial_state(2, 8, 5);

    // Stop after the first step: exactly that step is in the state.
    let mut state = initial.clone();
    let mut after_first = None;
    let mut stop_after_first = |event: Progress<'_>| match event {
        Progress::Step { step: 0, state, .. } => {
            after_first = Some(state.clone());
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    };
    let report = generator
        .run_steps(
            &steps,
            &mut state,
            &DenseInputs::new(),
            &mut SeededRandom::new(1),
            &mut stop_after_first,
        )
        .unwrap();
    assert_eq!(
        report.cancelled,
        Some(Cancelled {
            step: 1,
            token: None
        })
    );
    assert_eq!(report.steps.len(), 1);
    assert_eq!(Some(&state), after_first.as_ref());
    assert_ne!(state, initial);

    // Stop in the middle of the autoregressive step: the caption is left as it was.
    let mut state = initial.clone();
    let mut tokens = 0;
    let mut stop_at_third_token = |event: Progress<'_>| match event {
        Progress::Token { token: 2, .. } => ControlFlow::Break(()),
        Progress::Token { .. } => {
            tokens += 1;
            ControlFlow::Continue(())
        }
        _ => ControlFlow::Continue(()),
    };
    let report = generator
        .run_steps(
            &steps,
            &mut state,
            &DenseInputs::new(),
            &mut SeededRandom::new(1),
            &mut stop_at_third_token,
        )
        .unwrap();
    assert_eq!(
        report.cancelled,
        Some(Cancelled {
            step: 2,
            token: Some(2)
        })
    );
    assert_eq!(tokens, 2);
    assert_eq!(state.get("caption"), initial.get("caption"));
    assert!(state.get("tok_dinov2_global").unwrap().is_finished());
}

#[test]
fn the_encoder_is_not_rerun_when_its_inputs_did_not_change() {
    // tok_dinov2_global is generated but not an encoder input here, so its ROAR steps leave the
    // encoder inputs (and the unconditional ones) unchanged: one batched pass serves all steps.
    let (_dir, model) = small_model_with(10, &["tok_dinov2_global"]);
    let image = "tok_dinov2_global";
    let steps = [
        step(image, Scheme::Roar, Some(6)),
        step(image, Scheme::Roar, Some(5)),
        step(image, Scheme::Roar, Some(5)),
    ];
    let initial = initial_state(1, 4, 6);
    let run = |options: GeneratorOptions| {
        let generator = Generator::with_options(&model, options);
        let mut state = initial.clone();
        let report = generator
            .run_steps(
                &steps,
                &mut state,
                &DenseInputs::new(),
                &mut SeededRandom::new(3),
                &mut no_progress,
            )
            .unwrap();
        (state, report)
    };
    let (fast, report) = run(GeneratorOptions::default());
    assert_eq!((report.encoder_runs, report.encoder_reuses), (1, 2));
    assert!(report.steps.iter().all(|s| s.branches == 2));
    let (slow, report) = run(GeneratorOptions {
        reuse_encoder: false,
        batch_guidance: false,
        ..GeneratorOptions::default()
    });
    assert_eq!((report.encoder_runs, report.encoder_reuses), (6, 0));
    assert_eq!(fast, slow);
    assert!(fast.get(image).unwrap().is_finished());
}

fn maskgit_plan(guidance: Guidance, targets: &[&str]) -> GenerationPlan {
    GenerationPlan {
        condition_domains: vec!["metadata".into()],
        targets: targets
            .iter()
            .map(|domain| TargetSpec {
                guidance: guidance.clone(),
                token_schedule: TokenScheduleKind::Cosine,
                ..target(domain, Scheme::MaskGit, 16, 3)
            })
            .collect(),
        grow_guidance_conditioning: false,
    }
}

#[test]
fn multi_condition_guidance_with_one_condition_equals_plain_guidance() {
    let (_dir, model) = small_model(11);
    let generator = Generator::new(&model);
    let initial = initial_state(2, 4, 8);
    let catalog = generator.catalog().clone();

    let mut plain = initial.clone();
    generator
        .generate(
            &maskgit_plan(Guidance::Scale(2.5), &["tok_dinov2_global"]),
            &mut plain,
            &DenseInputs::new(),
            &mut SeededRandom::new(1),
            &mut no_progress,
        )
        .unwrap();

    let mut unconditional = initial
        .unconditional(&["metadata".to_owned()], &catalog)
        .unwrap();
    let report = generator
        .generate_multi_guided(
            &maskgit_plan(Guidance::Weights(vec![2.5]), &["tok_dinov2_global"]),
            &mut unconditional,
            vec![initial.clone()],
            &DenseInputs::new(),
            &mut SeededRandom::new(1),
            &mut no_progress,
        )
        .unwrap();
    assert!(report.steps.iter().all(|s| s.branches == 2));
    assert_eq!(
        unconditional.get("tok_dinov2_global"),
        plain.get("tok_dinov2_global")
    );
}

#[test]
fn multi_condition_guidance_adds_one_condition_per_finished_target() {
    let (_dir, model) = small_model(12);
    let generator = Generator::new(&model);
    let mut initial = initial_state(1, 4, 9);
    initial
        .insert(
            "tok_imagebind_global",
            tessera_sampler::ModalityState::empty_image_target(1, 16).unwrap(),
        )
        .unwrap();
    let catalog = generator.catalog().clone();
    let mut metadata_only = GenerationState::new();
    metadata_only
        .insert("metadata", initial.get("metadata").unwrap().clone())
        .unwrap();
    let conditions = vec![metadata_only];
    let targets = ["tok_dinov2_global", "tok_imagebind_global"];

    // Two weights for the second target are one too few.
    let mut plan = maskgit_plan(Guidance::Weights(vec![2.0]), &targets);
    let mut unconditional = initial
        .unconditional(&["metadata".to_owned()], &catalog)
        .unwrap();
    let before = unconditional.clone();
    assert!(matches!(
        generator.generate_multi_guided(
            &plan,
            &mut unconditional,
            conditions.clone(),
            &DenseInputs::new(),
            &mut SeededRandom::new(1),
            &mut no_progress
        ),
        Err(GenerateError::Sampler(SamplerError::GuidanceWeightCount {
            weights: 1,
            conditions: 2
        }))
    ));
    assert_eq!(unconditional, before);

    plan.targets[1].guidance = Guidance::Weights(vec![2.0, 1.5]);
    let report = generator
        .generate_multi_guided(
            &plan,
            &mut unconditional,
            conditions,
            &DenseInputs::new(),
            &mut SeededRandom::new(1),
            &mut no_progress,
        )
        .unwrap();
    let branches: Vec<usize> = report.steps.iter().map(|s| s.branches).collect();
    assert_eq!(branches, vec![2, 2, 2, 3, 3, 3]);
    for domain in targets {
        let finished = unconditional.get(domain).unwrap();
        assert!(finished.is_finished());
        assert!(
            finished.rows()[0].input_mask.iter().all(|&m| !m),
            "{domain} is a full input at the end"
        );
    }
}
