//! The built-in workflows in `workflows/` validate: structurally, and against a catalog shaped
//! like 4M-21's.

use tessera_workflow::{ValidationContext, plan, validate_file};

use crate::common::{repo_root, toml_files};
use crate::golden::test_catalog;

#[test]
fn builtin_workflows_validate() {
    let files = toml_files(&repo_root().join("workflows"));
    assert!(files.len() >= 5, "expected the five built-in workflows");
    let catalog = test_catalog();
    for path in files {
        for context in [
            ValidationContext::default(),
            ValidationContext {
                catalog: Some(&catalog),
                served_domains: None,
            },
        ] {
            let report = validate_file(&path, &context).expect("read workflow");
            assert!(
                report.diagnostics.is_empty(),
                "{}:\n{}",
                path.display(),
                report.render_terminal(false)
            );
            let workflow = report.workflow.expect("valid workflow");
            let plan = plan(&workflow, None).expect("plannable");
            assert_eq!(plan.steps.len(), workflow.steps.len(), "{}", path.display());
        }
    }
}
