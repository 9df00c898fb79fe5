//! Property tests: random workflows (cycles, dangling and malformed references, duplicate ids,
//! out-of-range parameters, arbitrary text) never panic the validator; every valid random DAG
//! executes each planned step exactly once, after all the steps it depends on.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tessera_workflow::{ExecuteOptions, NoCache, StepOutcome, execute, plan, validate_source};

use crate::executor::RecordingRunner;

#[derive(Debug, Clone)]
struct RandomStep {
    id: usize,
    /// Indices into the reference pool (see `reference`).
    from: Vec<usize>,
    scheme: usize,
    decoding_steps: Option<u32>,
    temperature: f64,
    top_p: Option<f64>,
    token_budget: Option<u32>,
}

/// References: the input, a missing input, a malformed one, then `steps.s0` ... (indices past the
/// step count dangle).
fn reference(index: usize) -> String {
    match index {
        0 => "inputs.caption".to_owned(),
        1 => "inputs.missing".to_owned(),
        2 => "not a reference".to_owned(),
        n => format!("steps.s{}", n - 3),
    }
}

fn random_step(max_steps: usize) -> impl Strategy<Value = RandomStep> {
    (
        0..max_steps + 1,
        prop::collection::vec(0..max_steps + 4, 0..4),
        0usize..5,
        prop::option::of(prop_oneof![1u32..6, 0u32..100_000]),
        prop_oneof![Just(1.0), -1.0f64..4.0],
        prop::option::of(-0.5f64..1.5),
        prop::option::of(prop_oneof![4u32..64, 0u32..100_000]),
    )
        .prop_map(
            |(id, from, scheme, decoding_steps, temperature, top_p, token_budget)| RandomStep {
                id,
                from,
                scheme,
                decoding_steps,
                temperature,
                top_p,
                token_budget,
            },
        )
}

fn workflow_text(steps: &[RandomStep], outputs: &[usize]) -> String {
    let schemes = ["roar", "maskgit", "roar", "autoregressive", "bogus"];
    let mut text = String::from(
        "workflow_version = 1\n[workflow]\nname = \"random\"\n[inputs.caption]\ndomain = \"caption\"\n",
    );
    for (index, step) in steps.iter().enumerate() {
        let from: Vec<String> = step
            .from
            .iter()
            .map(|&r| format!("{:?}", reference(r)))
            .collect();
        text.push_str(&format!(
            "[[steps]]\nid = \"s{}\"\ngenerate = \"tok_d{index}\"\nfrom = [{}]\nscheme = \"{}\"\ntemperature = {:?}\n",
            step.id,
            from.join(", "),
            schemes[step.scheme],
            step.temperature,
        ));
        if let Some(steps) = step.decoding_steps {
            text.push_str(&format!("decoding_steps = {steps}\n"));
        }
        if let Some(top_p) = step.top_p {
            text.push_str(&format!("top_p = {top_p:?}\n"));
        }
        if let Some(budget) = step.token_budget {
            text.push_str(&format!("token_budget = {budget}\n"));
        }
    }
    text.push_str("[outputs]\n");
    for output in outputs {
        text.push_str(&format!("o{output} = {:?}\n", reference(*output)));
    }
    text
}

/// Turns random steps into a valid DAG (unique ids, references only to the input and earlier
/// steps, sound parameters, at least one output) so the execution property is exercised often.
fn make_well_formed(
    mut steps: Vec<RandomStep>,
    mut outputs: Vec<usize>,
) -> (Vec<RandomStep>, Vec<usize>) {
    for (index, step) in steps.iter_mut().enumerate() {
        step.id = index;
        let mut from: Vec<usize> = step
            .from
            .iter()
            .map(|r| match r % (index + 1) {
                0 => 0,
                earlier => earlier - 1 + 3,
            })
            .collect();
        from.sort();
        from.dedup();
        step.from = from;
        step.scheme = step.scheme % 2 * 3; // roar or autoregressive
        step.decoding_steps = Some(step.decoding_steps.unwrap_or(1) % 4 + 1);
        step.temperature = step.temperature.abs();
        step.top_p = step.top_p.map(|p| p.abs().clamp(0.05, 1.0));
        step.token_budget = step.token_budget.map(|budget| budget % 60 + 4);
    }
    let choices = steps.len() + 1;
    for output in &mut outputs {
        *output = match *output % choices {
            0 => 0,
            step => step - 1 + 3,
        };
    }
    outputs.sort();
    outputs.dedup();
    if outputs.is_empty() {
        outputs.push(if steps.is_empty() {
            0
        } else {
            steps.len() - 1 + 3
        });
    }
    (steps, outputs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_the_validator(text in "\\PC{0,400}") {
        let report = validate_source("random.toml", &text, &Default::default());
        let _ = report.render_terminal(false);
        let _ = report.to_json();
    }

    #[test]
    fn random_workflows_validate_and_valid_ones_run_each_step_once_after_its_inputs(
        steps in prop::collection::vec(random_step(6), 0..7),
        outputs in prop::collection::vec(0usize..10, 0..4),
        well_formed in any::<bool>(),
    ) {
        let (steps, outputs) = if well_formed {
            make_well_formed(steps, outputs)
        } else {
            (steps, outputs)
        };
        let text = workflow_text(&steps, &outputs);
        let report = validate_source("random.toml", &text, &Default::default());
        let _ = report.render_terminal(false);
        for diagnostic in &report.diagnostics {
            // Every diagnostic is located inside the file.
            if let Some(span) = &diagnostic.span {
                prop_assert!(span.end <= text.len());
            }
        }
        let Some(workflow) = &report.workflow else {
            prop_assert!(!well_formed, "a well-formed workflow was refused:\n{}\n{}", text, report.render_terminal(false));
            return Ok(());
        };
        let plan = plan(workflow, None).expect("a valid workflow plans");
        let runner = RecordingRunner::new();
        let inputs = BTreeMap::from([("caption".to_owned(), "c".to_owned())]);
        let options = ExecuteOptions { max_concurrency: 3, ..Default::default() };
        let run = execute(&plan, &runner, &inputs, &NoCache, &options, &|_| {}).unwrap();
        prop_assert!(run.outcomes.values().all(|outcome| *outcome == StepOutcome::Finished));

        let starts = runner.recording.starts.lock().unwrap().clone();
        let finishes: BTreeMap<String, usize> =
            runner.recording.finishes.lock().unwrap().iter().cloned().collect();
        let mut started: Vec<String> = starts.iter().map(|(id, _)| id.clone()).collect();
        started.sort();
        let mut planned: Vec<String> = plan.steps.iter().map(|s| s.step.id.clone()).collect();
        planned.sort();
        prop_assert_eq!(started, planned, "each planned step runs exactly once");
        for (id, start) in &starts {
            let step = plan.step(id).expect("ran a planned step");
            for dependency in &step.depends_on {
                prop_assert!(finishes[dependency] < *start, "{} started before {} finished", id, dependency);
            }
        }
        prop_assert_eq!(run.outputs.len(), plan.outputs.len());
    }
}
