//! The executor's own cost per step: plans of 64 steps whose runner does no work, as a chain (each
//! step waits for the previous one) and as a fan-out (every step ready at once, 4 at a time).
//! Criterion reports steps per second; the overhead per step is its inverse.

use std::collections::BTreeMap;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tessera_workflow::{
    ExecuteOptions, ExecutionPlan, NoCache, PlannedStep, RunEvent, StepContext, StepError,
    StepInputs, StepRunner, execute, plan, validate_source,
};

const STEPS: usize = 64;

/// A runner that only counts its inputs.
struct Idle;

impl StepRunner for Idle {
    type Value = usize;
    fn run_step(
        &self,
        _step: &PlannedStep,
        inputs: &StepInputs<usize>,
        _context: &StepContext,
    ) -> Result<usize, StepError> {
        Ok(inputs.values.len())
    }
}

fn workflow(chained: bool) -> ExecutionPlan {
    let mut text = String::from(
        "workflow_version = 1\n[workflow]\nname = \"bench\"\n[inputs.caption]\ndomain = \"caption\"\n",
    );
    for index in 0..STEPS {
        let from = if chained && index > 0 {
            format!("steps.s{}", index - 1)
        } else {
            "inputs.caption".to_owned()
        };
        // Alternating domains: a step may not generate the domain it is given.
        let domain = ["tok_depth@224", "tok_normal@224"][index % 2];
        text.push_str(&format!(
            "[[steps]]\nid = \"s{index}\"\ngenerate = \"{domain}\"\nfrom = [\"{from}\"]\n\
             scheme = \"roar\"\ndecoding_steps = 1\n"
        ));
    }
    text.push_str("[outputs]\n");
    for index in 0..STEPS {
        text.push_str(&format!("o{index} = \"steps.s{index}\"\n"));
    }
    let report = validate_source("bench.toml", &text, &Default::default());
    match &report.workflow {
        Some(workflow) => plan(workflow, None).expect("plans"),
        None => panic!("{}", report.render_terminal(false)),
    }
}

fn executor(c: &mut Criterion) {
    let mut group = c.benchmark_group("executor");
    group.throughput(Throughput::Elements(STEPS as u64));
    let inputs = BTreeMap::from([("caption".to_owned(), 0usize)]);
    let options = ExecuteOptions::default();
    let events = |_: RunEvent| {};
    for (name, chained) in [("chain_64_steps", true), ("fan_out_64_steps", false)] {
        let plan = workflow(chained);
        group.bench_function(name, |b| {
            b.iter(|| {
                let report = execute(&plan, &Idle, &inputs, &NoCache, &options, &events).unwrap();
                assert!(report.succeeded());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, executor);
criterion_main!(benches);
