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

#[test]
fn a_tokenizer_whose_codebook_does_not_fit_the_model_is_reported() {
    let Some((fixtures, plugins)) = tessera_fixtures::fixture_model_with_plugins(&["rgb"]) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    // The fixture model predicts 1024 tok_rgb@224 tokens; the fixture tokenizer has 256 codes
    // (and the rgb plugin accepts ids up to 4M's 16384, which is not what must match).
    let engine = tessera_engine::Engine::load(&tessera_engine::EngineConfig {
        model: fixtures.join(tessera_fixtures::FIXTURE_MODEL),
        plugins_dir: plugins,
        out_dir: out.path().to_path_buf(),
        tokenizers: std::collections::BTreeMap::from([(
            "tok_rgb@224".to_owned(),
            fixtures.join("vq/vqvae_rgb_vit_tiny"),
        )]),
        asset_overrides: Default::default(),
    })
    .expect("the engine loads");
    let warnings: Vec<&String> = engine
        .warnings()
        .iter()
        .filter(|w| w.starts_with("`tok_rgb@224`"))
        .collect();
    assert_eq!(warnings.len(), 1, "{:?}", engine.warnings());
    assert!(
        warnings[0].contains("1024 tokens") && warnings[0].contains("256 codes"),
        "{}",
        warnings[0]
    );
    assert!(!warnings[0].contains("16384"), "{}", warnings[0]);
}
