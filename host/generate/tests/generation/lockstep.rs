//! Cross-generation batching ([`Generator::run_lockstep`]): generations run together produce
//! exactly the tokens they produce alone with the same seeds (logits within 1e-4), on the fixture models
//! and on small random models; members of another shape run alone, a failing or cancelled member
//! leaves the others untouched, and shared passes are counted.

use std::ops::ControlFlow;

use tessera_generate::{
    DenseInputs, Generator, GeneratorOptions, LockstepMember, Progress, RunReport, lockstep_key,
};
use tessera_model::{FourM, LoadOptions};
use tessera_sampler::{
    GenerationPlan, GenerationState, GenerationStep, Guidance, ModalityState, Scheme, SeededRandom,
    TargetSpec, TemperatureSchedule, TokenScheduleKind, text_ids,
};

use crate::recompute::small_model;
use crate::support::{fixtures_root, model_dirs};

/// One generation: its conditions, target, schedule and seed.
#[derive(Clone)]
struct Job {
    state: GenerationState,
    steps: Vec<GenerationStep>,
    seed: u64,
    /// Cancel after this step (the progress callback breaks).
    stop_after: Option<usize>,
    /// Cancel after this autoregressive token.
    stop_at_token: Option<usize>,
}

#[allow(clippy::too_many_arguments)]
fn job(
    generator: &Generator<'_>,
    conditions: &[(&str, ModalityState)],
    target: &str,
    width: usize,
    scheme: Scheme,
    decoding_steps: usize,
    guidance: f64,
    seed: u64,
) -> Job {
    let mut state = GenerationState::new();
    for (domain, modality) in conditions {
        state.insert(*domain, modality.clone()).unwrap();
    }
    state
        .insert(target, ModalityState::empty_image_target(1, width).unwrap())
        .unwrap();
    let plan = GenerationPlan {
        condition_domains: conditions.iter().map(|(d, _)| d.to_string()).collect(),
        targets: vec![TargetSpec {
            domain: target.into(),
            scheme,
            num_tokens: width,
            decoding_steps,
            token_schedule: TokenScheduleKind::Linear,
            temperature: 2.0,
            temperature_schedule: TemperatureSchedule::OneOverX {
                min_temperature: 0.5,
                power: 0.5,
            },
            guidance: Guidance::Scale(guidance),
        }],
        grow_guidance_conditioning: false,
    };
    Job {
        state,
        steps: generator.prepare(&plan).unwrap(),
        seed,
        stop_after: None,
        stop_at_token: None,
    }
}

/// An autoregressive job: `target` decoded from `conditions` with up to `budget` tokens.
fn job_ar(
    generator: &Generator<'_>,
    conditions: &[(&str, ModalityState)],
    target: &str,
    budget: usize,
    guidance: f64,
    seed: u64,
) -> Job {
    let mut state = GenerationState::new();
    for (domain, modality) in conditions {
        state.insert(*domain, modality.clone()).unwrap();
    }
    state
        .insert(
            target,
            ModalityState::empty_sequence_target(1, budget).unwrap(),
        )
        .unwrap();
    let plan = GenerationPlan {
        condition_domains: conditions.iter().map(|(d, _)| d.to_string()).collect(),
        targets: vec![TargetSpec {
            domain: target.into(),
            scheme: Scheme::Autoregressive,
            num_tokens: budget,
            decoding_steps: 1,
            token_schedule: TokenScheduleKind::Linear,
            temperature: 1.0,
            temperature_schedule: TemperatureSchedule::Constant,
            guidance: Guidance::Scale(guidance),
        }],
        grow_guidance_conditioning: false,
    };
    Job {
        state,
        steps: generator.prepare(&plan).unwrap(),
        seed,
        stop_after: None,
        stop_at_token: None,
    }
}

type Callback<'a> = dyn FnMut(Progress<'_>) -> ControlFlow<()> + 'a;

/// A progress callback recording the steps (and tokens, as `1000 + token`) it is told about and
/// cancelling where the job says.
fn watcher<'s>(
    seen: &'s mut Vec<usize>,
    job: &Job,
) -> impl FnMut(Progress<'_>) -> ControlFlow<()> + 's {
    let (stop_after, stop_at_token) = (job.stop_after, job.stop_at_token);
    move |event: Progress<'_>| {
        match event {
            Progress::Step { step, .. } => {
                seen.push(step);
                if stop_after == Some(step) {
                    return ControlFlow::Break(());
                }
            }
            Progress::Token { token, .. } => {
                seen.push(1000 + token);
                if stop_at_token == Some(token) {
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// Runs `job` alone; the final state, its report and the steps the callback saw.
fn alone(generator: &Generator<'_>, job: &Job) -> (GenerationState, RunReport, Vec<usize>) {
    let mut state = job.state.clone();
    let mut seen = Vec::new();
    let mut progress = watcher(&mut seen, job);
    let report = generator
        .run_steps(
            &job.steps,
            &mut state,
            &DenseInputs::new(),
            &mut SeededRandom::new(job.seed),
            &mut progress,
        )
        .unwrap();
    drop(progress);
    (state, report, seen)
}

type Outcome = (
    GenerationState,
    tessera_generate::Result<RunReport>,
    Vec<usize>,
);

/// Runs `jobs` in one lockstep call: per job its final state, report and progress steps, and the
/// passes run / shared.
fn together(generator: &Generator<'_>, jobs: &[Job]) -> (Vec<Outcome>, usize, usize) {
    let dense = DenseInputs::new();
    let mut states: Vec<GenerationState> = jobs.iter().map(|j| j.state.clone()).collect();
    let mut rngs: Vec<SeededRandom> = jobs.iter().map(|j| SeededRandom::new(j.seed)).collect();
    let mut seen: Vec<Vec<usize>> = vec![Vec::new(); jobs.len()];
    let mut callbacks: Vec<Box<Callback<'_>>> = seen
        .iter_mut()
        .zip(jobs)
        .map(|(seen, job)| Box::new(watcher(seen, job)) as Box<Callback<'_>>)
        .collect();
    let mut members: Vec<LockstepMember<'_>> = jobs
        .iter()
        .zip(states.iter_mut())
        .zip(rngs.iter_mut())
        .zip(callbacks.iter_mut())
        .map(|(((job, state), rng), progress)| LockstepMember {
            steps: &job.steps,
            state,
            dense: &dense,
            rng,
            progress: progress.as_mut(),
        })
        .collect();
    let report = generator.run_lockstep(&mut members);
    drop(members);
    drop(callbacks);
    let outcomes = states
        .into_iter()
        .zip(report.members)
        .zip(seen)
        .map(|((state, result), seen)| (state, result, seen))
        .collect();
    (outcomes, report.passes, report.shared_passes)
}

/// Every job's lockstep result equals its result alone: state, commits, queries, logits,
/// progress and cancellation.
fn assert_same_as_alone(generator: &Generator<'_>, pairs: &[(&Job, &Outcome)]) {
    for (index, (job, (state, result, seen))) in pairs.iter().copied().enumerate() {
        let (alone_state, alone_report, alone_seen) = alone(generator, job);
        let report = result
            .as_ref()
            .unwrap_or_else(|e| panic!("job {index}: {e}"));
        assert_eq!(state, &alone_state, "job {index}: final state");
        assert_eq!(seen, &alone_seen, "job {index}: progress");
        assert_eq!(report.cancelled, alone_report.cancelled, "job {index}");
        assert_eq!(report.steps.len(), alone_report.steps.len(), "job {index}");
        assert_eq!(
            report.decoder_runs, alone_report.decoder_runs,
            "job {index}"
        );
        for (k, (step, alone_step)) in report.steps.iter().zip(&alone_report.steps).enumerate() {
            assert_eq!(
                step.commit, alone_step.commit,
                "job {index} step {k}: commit"
            );
            assert_eq!(
                step.stream, alone_step.stream,
                "job {index} step {k}: stream"
            );
            assert_eq!(step.queries, alone_step.queries, "job {index} step {k}");
            assert_eq!(step.branches, alone_step.branches, "job {index} step {k}");
            // A row's logits do not depend on the other rows of its batch, up to the summation
            // order of the batched matrix products (last bits, as with the conditional and
            // unconditional rows batched together).
            assert_eq!(step.branch_logits.len(), alone_step.branch_logits.len());
            for (branch, alone_branch) in step.branch_logits.iter().zip(&alone_step.branch_logits) {
                assert_eq!(branch.len(), alone_branch.len());
                let diff = branch
                    .iter()
                    .zip(alone_branch)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    diff <= 1e-4,
                    "job {index} step {k}: logits differ by {diff}"
                );
            }
        }
    }
}

fn recording(model: &FourM) -> Generator<'_> {
    Generator::with_options(
        model,
        GeneratorOptions {
            record_logits: true,
            ..GeneratorOptions::default()
        },
    )
}

fn caption(ids: &[u32]) -> ModalityState {
    let mut row = ids.to_vec();
    row.push(text_ids::EOS);
    row.resize(24, text_ids::PAD);
    ModalityState::full_input_sequence(vec![row]).unwrap()
}

/// Fixture models that have the dense domains used here.
fn fixture_models() -> Vec<(String, FourM)> {
    let Some(root) = fixtures_root() else {
        return Vec::new();
    };
    model_dirs(&root)
        .into_iter()
        .map(|dir| {
            let model = FourM::load(&dir, &LoadOptions::default()).unwrap();
            (dir.display().to_string(), model)
        })
        .filter(|(_, model)| {
            [
                "caption",
                "det",
                "tok_depth@224",
                "tok_normal@224",
                "tok_rgb@224",
            ]
            .iter()
            .all(|d| model.vocab_size(d).is_some())
        })
        .collect()
}

#[test]
fn depth_and_normal_from_one_caption_share_every_pass_and_equal_running_alone() {
    for (name, model) in fixture_models() {
        let generator = recording(&model);
        let text = caption(&[101, 2023, 3185, 1037, 2158]);
        let boxes =
            ModalityState::full_input_sequence(vec![vec![4, 101, 102, 103, 104, 105, 6, 0]])
                .unwrap();
        let jobs = vec![
            job(
                &generator,
                &[("caption", text.clone())],
                "tok_depth@224",
                196,
                Scheme::Roar,
                6,
                2.0,
                7,
            ),
            job(
                &generator,
                &[("caption", text.clone())],
                "tok_normal@224",
                196,
                Scheme::Roar,
                6,
                2.0,
                8,
            ),
            // Other conditions and no guidance: same shape, so it joins too.
            job(
                &generator,
                &[("caption", text.clone()), ("det", boxes)],
                "tok_rgb@224",
                196,
                Scheme::Roar,
                6,
                1.0,
                9,
            ),
        ];
        assert!(lockstep_key(&jobs[0].steps, generator.catalog()).is_some());
        let (outcomes, passes, shared) = together(&generator, &jobs);
        assert_same_as_alone(&generator, &jobs.iter().zip(&outcomes).collect::<Vec<_>>());
        // 6 steps, each one encoder and one decoder pass for all three generations.
        assert_eq!((passes, shared), (12, 12), "{name}");
        for (_, result, _) in &outcomes {
            let report = result.as_ref().unwrap();
            assert_eq!((report.encoder_runs, report.decoder_runs), (6, 6), "{name}");
            assert_eq!(report.shared_passes, 12, "{name}");
        }
    }
}

#[test]
fn maskgit_pairs_share_passes_and_other_shapes_run_alone() {
    for (name, model) in fixture_models() {
        let generator = recording(&model);
        let text = caption(&[2158, 999, 42]);
        let jobs = vec![
            job(
                &generator,
                &[("caption", text.clone())],
                "tok_depth@224",
                196,
                Scheme::MaskGit,
                4,
                2.0,
                1,
            ),
            // Another step count: its own key, run alone.
            job(
                &generator,
                &[("caption", text.clone())],
                "tok_rgb@224",
                196,
                Scheme::MaskGit,
                3,
                2.0,
                2,
            ),
            job(
                &generator,
                &[("caption", text.clone())],
                "tok_normal@224",
                196,
                Scheme::MaskGit,
                4,
                3.0,
                3,
            ),
        ];
        assert_ne!(
            lockstep_key(&jobs[0].steps, generator.catalog()),
            lockstep_key(&jobs[1].steps, generator.catalog())
        );
        let (outcomes, passes, shared) = together(&generator, &jobs);
        assert_same_as_alone(&generator, &jobs.iter().zip(&outcomes).collect::<Vec<_>>());
        // depth + normal: 4 shared steps of 2 passes; rgb alone: 3 steps of 2 passes.
        assert_eq!((passes, shared), (8 + 6, 8), "{name}");
        assert_eq!(outcomes[1].1.as_ref().unwrap().shared_passes, 0, "{name}");
    }
}

#[test]
fn a_failing_or_cancelled_member_leaves_its_partners_alone() {
    for (name, model) in fixture_models() {
        let generator = recording(&model);
        let text = caption(&[1037, 2158]);
        let depth = job(
            &generator,
            &[("caption", text.clone())],
            "tok_depth@224",
            196,
            Scheme::Roar,
            5,
            2.0,
            4,
        );
        let mut normal = job(
            &generator,
            &[("caption", text.clone())],
            "tok_normal@224",
            196,
            Scheme::Roar,
            5,
            2.0,
            5,
        );
        normal.stop_after = Some(1);
        // Its schedule targets a domain missing from its state: refused before any compute.
        let mut broken = job(
            &generator,
            &[("caption", text.clone())],
            "tok_rgb@224",
            196,
            Scheme::Roar,
            5,
            2.0,
            6,
        );
        broken.state.remove("tok_rgb@224");
        let jobs = vec![depth, broken, normal];
        let (outcomes, passes, shared) = together(&generator, &jobs);
        assert!(outcomes[1].1.is_err(), "{name}: the broken member fails");
        assert_same_as_alone(
            &generator,
            &[(&jobs[0], &outcomes[0]), (&jobs[2], &outcomes[2])],
        );
        let cancelled = outcomes[2]
            .1
            .as_ref()
            .unwrap()
            .cancelled
            .expect("cancelled");
        assert_eq!(cancelled.step, 2, "{name}");
        // Two shared steps, then depth alone for three (in the lockstep, so unshared passes).
        assert_eq!((passes, shared), (10, 4), "{name}");
    }
}

#[test]
fn random_models_equal_running_alone() {
    // Two 16-token global domains of the small random models, random seeds and schemes.
    for seed in 0..4u64 {
        let (_dir, model) = small_model(seed);
        let generator = recording(&model);
        let text =
            ModalityState::full_input_sequence(vec![vec![7 + seed as u32, 40, 41, text_ids::EOS]])
                .unwrap();
        let scheme = if seed % 2 == 0 {
            Scheme::Roar
        } else {
            Scheme::MaskGit
        };
        let jobs = vec![
            job(
                &generator,
                &[("caption", text.clone())],
                "tok_dinov2_global",
                16,
                scheme,
                4,
                2.5,
                seed,
            ),
            job(
                &generator,
                &[("caption", text.clone())],
                "tok_imagebind_global",
                16,
                scheme,
                4,
                1.0,
                seed + 100,
            ),
            job(
                &generator,
                &[],
                "tok_imagebind_global",
                16,
                scheme,
                4,
                1.0,
                seed + 200,
            ),
        ];
        let (outcomes, passes, shared) = together(&generator, &jobs);
        assert_same_as_alone(&generator, &jobs.iter().zip(&outcomes).collect::<Vec<_>>());
        assert_eq!((passes, shared), (8, 8), "seed {seed}");
    }
}

#[test]
fn autoregressive_members_share_one_kv_cache_and_equal_running_alone() {
    for (name, model) in fixture_models() {
        let generator = recording(&model);
        let text = caption(&[101, 2023, 3185]);
        let boxes = ModalityState::full_input_sequence(vec![vec![4, 101, 102, 103, 6, 0]]).unwrap();
        let mut cancelled = job_ar(&generator, &[("caption", text.clone())], "det", 24, 2.0, 13);
        cancelled.stop_at_token = Some(3);
        let jobs = vec![
            job_ar(&generator, &[("caption", text.clone())], "det", 24, 2.0, 11),
            job_ar(&generator, &[("det", boxes)], "caption", 16, 1.0, 12),
            cancelled,
            job_ar(&generator, &[], "det", 12, 1.0, 14),
        ];
        assert_eq!(
            lockstep_key(&jobs[0].steps, generator.catalog()),
            lockstep_key(&jobs[1].steps, generator.catalog())
        );
        let (outcomes, passes, shared) = together(&generator, &jobs);
        assert_same_as_alone(&generator, &jobs.iter().zip(&outcomes).collect::<Vec<_>>());
        let longest = outcomes
            .iter()
            .map(|(_, r, _)| r.as_ref().unwrap().decoder_runs)
            .max()
            .unwrap();
        // One encoder pass, then one decoder pass per token of the longest member.
        assert_eq!(passes, 1 + longest, "{name}");
        assert!(shared > 4, "{name}: {shared} shared passes");
        assert_eq!(
            outcomes[2].1.as_ref().unwrap().cancelled.unwrap().token,
            Some(3)
        );
    }
}

#[test]
fn autoregressive_members_on_random_models_equal_running_alone() {
    for seed in 0..3u64 {
        let (_dir, model) = small_model(seed);
        let generator = recording(&model);
        let text =
            ModalityState::full_input_sequence(vec![vec![7 + seed as u32, 40, text_ids::EOS]])
                .unwrap();
        let meta =
            ModalityState::full_input_sequence(vec![vec![3, 9 + seed as u32, 12, 6]]).unwrap();
        let jobs = vec![
            job_ar(
                &generator,
                &[("caption", text.clone())],
                "metadata",
                20,
                2.0,
                seed,
            ),
            job_ar(
                &generator,
                &[("metadata", meta)],
                "caption",
                30,
                1.5,
                seed + 50,
            ),
            job_ar(&generator, &[], "metadata", 10, 1.0, seed + 70),
        ];
        let (outcomes, _, shared) = together(&generator, &jobs);
        assert_same_as_alone(&generator, &jobs.iter().zip(&outcomes).collect::<Vec<_>>());
        assert!(shared >= 2, "seed {seed}");
    }
}
