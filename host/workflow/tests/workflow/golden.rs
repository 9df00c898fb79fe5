//! Golden files: `golden/invalid/*.toml` with their rendered diagnostics (`*.expected`), and
//! `golden/valid/*.toml` with their plan (`*.expected`). A first line `# context: model` validates
//! against the test model's catalog and plugin set; otherwise only structure and parameters.

use std::collections::BTreeSet;
use std::path::Path;

use tessera_sampler::{DomainCatalog, DomainInfo, DomainKind};
use tessera_workflow::{ValidationContext, ValidationReport, plan, validate_source};

use crate::common::{compare_or_bless, crate_dir, toml_files};

/// A catalog shaped like 4M-21's: image-token domains of 196 tokens, sequences, input-only pixels.
pub fn test_catalog() -> DomainCatalog {
    let image = |num_tokens, generatable| DomainInfo {
        kind: DomainKind::Image,
        num_tokens,
        generatable,
    };
    let sequence = |num_tokens| DomainInfo {
        kind: DomainKind::Sequence,
        num_tokens,
        generatable: true,
    };
    DomainCatalog::new()
        .with("rgb@224", image(196, false))
        .with("tok_rgb@224", image(196, true))
        .with("tok_depth@224", image(196, true))
        .with("tok_normal@224", image(196, true))
        .with("tok_semseg@224", image(196, true))
        .with("tok_clip@224", image(196, true))
        .with("caption", sequence(256))
        .with("det", sequence(256))
        .with("metadata", sequence(40))
        .with("color_palette", sequence(23))
        .with(
            "t5_caption",
            DomainInfo {
                kind: DomainKind::SequenceEmbedding,
                num_tokens: 77,
                generatable: false,
            },
        )
}

/// Plugins of the test host: text and pixels, but no depth detokenizer.
pub fn test_served_domains() -> BTreeSet<String> {
    [
        "caption",
        "det",
        "rgb@224",
        "tok_rgb@224",
        "metadata",
        "color_palette",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

fn validate_golden(path: &Path) -> ValidationReport {
    let text = std::fs::read_to_string(path).expect("read golden input");
    let parent = path.parent().and_then(Path::file_name).unwrap_or_default();
    let name = format!(
        "{}/{}",
        parent.to_string_lossy(),
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    let catalog = test_catalog();
    let served = test_served_domains();
    let with_model = text.starts_with("# context: model");
    let context = if with_model {
        ValidationContext {
            catalog: Some(&catalog),
            served_domains: Some(&served),
        }
    } else {
        ValidationContext::default()
    };
    validate_source(&name, &text, &context)
}

fn run_goldens(kind: &str, render: impl Fn(&ValidationReport, &Path) -> Result<String, String>) {
    let dir = crate_dir().join("tests/golden").join(kind);
    let files = toml_files(&dir);
    assert!(!files.is_empty(), "no golden files in {}", dir.display());
    let mut failures = Vec::new();
    for path in files {
        let report = validate_golden(&path);
        match render(&report, &path) {
            Ok(actual) => {
                if let Some(mismatch) = compare_or_bless(&path.with_extension("expected"), &actual)
                {
                    failures.push(mismatch);
                }
            }
            Err(problem) => failures.push(format!("{}: {problem}", path.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn invalid_workflows_render_their_diagnostics() {
    run_goldens("invalid", |report, _| {
        if !report.has_errors() {
            return Err("expected at least one error".to_owned());
        }
        let json = serde_json::to_string_pretty(&report.to_json()).expect("json");
        Ok(format!(
            "{}\n--- json\n{json}\n",
            report.render_terminal(false)
        ))
    });
}

#[test]
fn valid_workflows_give_their_plan() {
    run_goldens("valid", |report, _| {
        let Some(workflow) = &report.workflow else {
            return Err(report.render_terminal(false));
        };
        let plan = plan(workflow, None).map_err(|error| error.to_string())?;
        let warnings = report.render_terminal(false);
        let json = serde_json::to_string_pretty(&plan).expect("json");
        Ok(format!("{warnings}--- plan\n{json}\n"))
    });
}
