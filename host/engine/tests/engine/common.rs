//! Fixture discovery, engine setup and a recording event sink.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tessera_engine::{Engine, EngineConfig, InputValue, StepValue};
use tessera_workflow::{
    ExecutionPlan, RunEvent, StepCache, ValidationContext, Workflow, plan, validate_source,
};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The fixtures directory and the built plugins, or `None` (skip) when missing outside CI.
pub fn setup() -> Option<(PathBuf, PathBuf)> {
    tessera_fixtures::fixture_model_with_plugins(&["caption", "det"])
}

pub fn engine(fixtures: &Path, plugins: &Path, out: &Path) -> Engine {
    Engine::load(&EngineConfig {
        model: fixtures.join(tessera_fixtures::FIXTURE_MODEL),
        plugins_dir: plugins.to_path_buf(),
        out_dir: out.to_path_buf(),
        tokenizers: Default::default(),
        asset_overrides: BTreeMap::from([(
            "vocab".to_owned(),
            fixtures.join(tessera_fixtures::FIXTURE_VOCAB),
        )]),
    })
    .expect("engine loads the fixture model and the plugins")
}

/// Validates a workflow against the engine's model and plugins, and plans all its outputs.
pub fn planned(engine: &Engine, text: &str) -> (Workflow, ExecutionPlan) {
    planned_with_tokens(engine, text, &[])
}

/// Like [`planned`], with inputs of `token_domains` given as token lists (no plugin needed).
pub fn planned_with_tokens(
    engine: &Engine,
    text: &str,
    token_domains: &[&str],
) -> (Workflow, ExecutionPlan) {
    let mut served = engine.served_domains();
    served.extend(token_domains.iter().map(|d| d.to_string()));
    let report = validate_source(
        "test.toml",
        text,
        &ValidationContext {
            catalog: Some(engine.catalog()),
            served_domains: Some(&served),
        },
    );
    let workflow = report
        .workflow
        .clone()
        .unwrap_or_else(|| panic!("invalid test workflow:\n{}", report.render_terminal(false)));
    let execution = plan(&workflow, None).expect("plans");
    (workflow, execution)
}

pub fn text_inputs(workflow: &Workflow, values: &[(&str, &str)]) -> BTreeMap<String, StepValue> {
    values
        .iter()
        .map(|(name, text)| {
            let domain = &workflow.inputs[*name].domain;
            (
                name.to_string(),
                StepValue::input(domain, InputValue::Text(text.to_string())),
            )
        })
        .collect()
}

/// Records every event.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<RunEvent>>);

impl Recorder {
    pub fn events(&self) -> Vec<RunEvent> {
        self.0.lock().unwrap().clone()
    }
}

impl tessera_workflow::EventSink for Recorder {
    fn emit(&self, event: RunEvent) {
        self.0.lock().unwrap().push(event);
    }
}

/// Every file under `dir` (relative path → bytes).
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[allow(dead_code)]
pub fn no_cache() -> impl StepCache<StepValue> {
    tessera_workflow::NoCache
}

/// A chained workflow on the fixture model's domains: caption → boxes → depth → caption again,
/// and an independent normal map from the caption.
pub const CHAIN: &str = r#"
workflow_version = 1

[workflow]
name = "test-chain"

[inputs.caption]
domain = "caption"

[[steps]]
id = "boxes"
generate = "det"
from = ["inputs.caption"]
scheme = "autoregressive"
temperature = 1.0
token_budget = 16

[[steps]]
id = "depth"
generate = "tok_depth@224"
from = ["inputs.caption", "steps.boxes"]
scheme = "maskgit"
decoding_steps = 4
temperature = 1.0

[[steps]]
id = "recaption"
generate = "caption"
from = ["steps.depth"]
scheme = "autoregressive"
temperature = 1.0
token_budget = 12

[[steps]]
id = "normal"
generate = "tok_normal@224"
from = ["inputs.caption"]
scheme = "roar"
decoding_steps = 4
temperature = 1.0
cfg_scale = 2.0

[outputs]
boxes = "steps.boxes"
depth = "steps.depth"
recaption = "steps.recaption"
normal = "steps.normal"
"#;
