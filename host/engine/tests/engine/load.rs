//! What loading the engine reports about its parts.

use crate::common::{engine, setup};

#[test]
fn a_vocabulary_that_does_not_fit_the_model_is_reported() {
    let Some((fixtures, plugins)) = setup() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    // The fixture model keeps 6144 caption tokens; the 4M vocabulary has 30000.
    let engine = engine(&fixtures, &plugins, out.path());
    let warning = engine
        .warnings()
        .iter()
        .find(|w| w.starts_with("`caption`"))
        .unwrap_or_else(|| panic!("no caption warning in {:?}", engine.warnings()));
    assert!(
        warning.contains("30000-token vocabulary") && warning.contains("the model 6144"),
        "{warning}"
    );
    assert!(warning.contains("--vocab"), "{warning}");
}
