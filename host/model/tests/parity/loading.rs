//! Checkpoint loading: both layouts, config parsing, and clear errors for broken files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use tessera_model::{FourM, LoadOptions, ModelError, inspect};

use crate::support::{ModelFixture, fixtures_root, max_abs_diff, model_dirs};

/// The smallest fixture model (fewest bytes), to keep the rewrites cheap.
fn smallest_model(root: &Path) -> PathBuf {
    model_dirs(root)
        .into_iter()
        .min_by_key(|d| {
            std::fs::metadata(d.join("model.safetensors"))
                .unwrap()
                .len()
        })
        .unwrap()
}

/// One tensor of a rewritten file.
pub struct Entry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Rewrite `model.safetensors` through `edit` into a bare file in `out_dir`.
pub fn rewrite(
    model_dir: &Path,
    out_dir: &Path,
    keep_metadata: bool,
    edit: impl FnOnce(&mut Vec<Entry>),
) -> PathBuf {
    let bytes = std::fs::read(model_dir.join("model.safetensors")).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut entries: Vec<Entry> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| Entry {
            name,
            dtype: view.dtype(),
            shape: view.shape().to_vec(),
            data: view.data().to_vec(),
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    edit(&mut entries);
    let views: Vec<(String, TensorView)> = entries
        .iter()
        .map(|e| {
            (
                e.name.clone(),
                TensorView::new(e.dtype, e.shape.clone(), &e.data).unwrap(),
            )
        })
        .collect();
    let metadata: Option<HashMap<String, String>> = if keep_metadata {
        header.metadata().clone()
    } else {
        None
    };
    let path = out_dir.join("edited.safetensors");
    safetensors::serialize_to_file(views, metadata, &path).unwrap();
    path
}

fn load_err(path: &Path) -> ModelError {
    FourM::load(path, &LoadOptions::default()).expect_err("loading must fail")
}

#[test]
fn bare_safetensors_with_header_config_equals_directory_checkpoint() {
    let Some(root) = fixtures_root() else { return };
    for dir in model_dirs(&root) {
        let fixture = ModelFixture::open(&dir);
        let from_dir = FourM::load(&dir, &LoadOptions::default()).unwrap();
        // A bare file: the config comes from the string metadata ("False", "['caption', ...]").
        let from_file =
            FourM::load(dir.join("model.safetensors"), &LoadOptions::default()).unwrap();
        assert_eq!(
            from_dir.config(),
            from_file.config(),
            "{}: metadata config differs from config.json",
            fixture.name()
        );
        let case = &fixture.forward_cases()[0];
        let target = case["target"].as_str().unwrap();
        let a = from_dir
            .forward_masked_target(&fixture.states(case), target)
            .unwrap();
        let b = from_file
            .forward_masked_target(&fixture.states(case), target)
            .unwrap();
        assert_eq!(max_abs_diff(&a.logits, &b.logits, "bare vs dir"), 0.0);
        // Vocabulary sizes come from the tensor shapes (the fixtures use reduced vocabularies).
        let vocab = fixture.cases["model"]["modality_vocab_sizes"]
            .as_object()
            .unwrap();
        for (domain, size) in vocab {
            assert_eq!(
                from_dir.vocab_size(domain),
                Some(size.as_u64().unwrap() as usize),
                "{domain}"
            );
        }
    }
}

#[test]
fn inspect_reports_domains_vocabularies_and_parameters() {
    let Some(root) = fixtures_root() else { return };
    for dir in model_dirs(&root) {
        let fixture = ModelFixture::open(&dir);
        let summary = inspect(&dir).unwrap();
        assert_eq!(
            summary.parameter_count as u64,
            fixture.cases["model"]["num_params"].as_u64().unwrap()
        );
        for (name, info) in fixture.cases["model"]["modalities"].as_object().unwrap() {
            let domain = summary
                .domains
                .iter()
                .find(|d| &d.name == name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(
                domain.vocab_size.map(|v| v as u64),
                info["vocab_size"].as_u64(),
                "{name} vocab"
            );
            if let Some(n) = info["num_tokens"].as_u64().or(info["max_tokens"].as_u64()) {
                assert_eq!(domain.tokens as u64, n, "{name} tokens");
            }
        }
        let text = summary.to_string();
        assert!(
            text.contains(&format!("dim {}", summary.config.dim)) && text.contains("F32"),
            "{text}"
        );
    }
}

#[test]
fn corrupted_header_is_a_clear_error() {
    let Some(root) = fixtures_root() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(smallest_model(&root).join("model.safetensors")).unwrap();
    bytes[8] = b'#'; // the JSON header no longer starts with `{`
    let path = tmp.path().join("corrupt.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        load_err(&path),
        ModelError::InvalidSafetensors { .. }
    ));
    // A header length beyond the file.
    bytes[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        load_err(&path),
        ModelError::InvalidSafetensors { .. }
    ));
    std::fs::write(&path, b"abc").unwrap();
    assert!(matches!(
        load_err(&path),
        ModelError::InvalidSafetensors { .. }
    ));
}

#[test]
fn truncated_file_is_a_clear_error() {
    let Some(root) = fixtures_root() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(smallest_model(&root).join("model.safetensors")).unwrap();
    let path = tmp.path().join("truncated.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
    match load_err(&path) {
        ModelError::TruncatedFile {
            expected_bytes,
            found_bytes,
            ..
        } => assert_eq!(expected_bytes - found_bytes, 1000),
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn wrong_dtype_is_a_clear_error() {
    let Some(root) = fixtures_root() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let path = rewrite(&smallest_model(&root), tmp.path(), true, |entries| {
        let e = entries.iter_mut().find(|e| e.name == "mask_token").unwrap();
        e.dtype = Dtype::I32; // same byte size as F32
    });
    match load_err(&path) {
        ModelError::UnsupportedTensorDtype { name, found } => {
            assert_eq!((name.as_str(), found.as_str()), ("mask_token", "I32"))
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn misshaped_missing_and_extra_tensors_are_named() {
    let Some(root) = fixtures_root() else { return };
    let model_dir = smallest_model(&root);
    let tmp = tempfile::tempdir().unwrap();
    let dim = inspect(&model_dir).unwrap().config.dim;

    let path = rewrite(&model_dir, tmp.path(), true, |entries| {
        let e = entries
            .iter_mut()
            .find(|e| e.name == "decoder.1.cross_attn.kv.weight")
            .unwrap();
        e.shape = vec![dim, 2 * dim]; // transposed
    });
    match load_err(&path) {
        ModelError::ShapeMismatch {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "decoder.1.cross_attn.kv.weight");
            assert_eq!((expected, found), (vec![2 * dim, dim], vec![dim, 2 * dim]));
        }
        other => panic!("unexpected error {other}"),
    }

    let path = rewrite(&model_dir, tmp.path(), true, |entries| {
        entries.retain(|e| e.name != "encoder.0.mlp.fc3.weight")
    });
    let err = load_err(&path);
    assert!(
        matches!(&err, ModelError::MissingTensor { name, .. } if name == "encoder.0.mlp.fc3.weight"),
        "{err}"
    );

    let path = rewrite(&model_dir, tmp.path(), true, |entries| {
        entries.push(Entry {
            name: "encoder.9.attn.qkv.weight".into(),
            dtype: Dtype::F32,
            shape: vec![2],
            data: vec![0; 8],
        })
    });
    let err = load_err(&path);
    assert!(
        matches!(&err, ModelError::UnexpectedTensors { names } if names == &["encoder.9.attn.qkv.weight"]),
        "{err}"
    );

    // A vocabulary table whose width is not `dim`.
    let path = rewrite(&model_dir, tmp.path(), true, |entries| {
        let e = entries
            .iter_mut()
            .find(|e| e.name == "decoder_embeddings.caption.token_emb.weight")
            .unwrap();
        e.shape = vec![e.shape[0] * 2, e.shape[1] / 2];
    });
    assert!(
        matches!(load_err(&path), ModelError::ShapeMismatch { name, .. } if name == "decoder_embeddings.caption.token_emb.weight")
    );
}

#[test]
fn bare_file_without_config_is_refused() {
    let Some(root) = fixtures_root() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let path = rewrite(&smallest_model(&root), tmp.path(), false, |_| {});
    assert!(matches!(load_err(&path), ModelError::MissingConfig { .. }));
}

#[test]
fn wrong_sincos_table_is_detected() {
    let Some(root) = fixtures_root() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let path = rewrite(&smallest_model(&root), tmp.path(), true, |entries| {
        let e = entries
            .iter_mut()
            .find(|e| e.name == "encoder_embeddings.tok_rgb@224.pos_emb")
            .unwrap();
        // Swap the row and column halves of every token: the layout gotcha.
        let dim = e.shape[2];
        let mut values: Vec<f32> = e
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        for row in values.chunks_exact_mut(dim) {
            let (a, b) = row.split_at_mut(dim / 2);
            a.swap_with_slice(b);
        }
        e.data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    });
    assert!(
        matches!(load_err(&path), ModelError::PositionalTableMismatch { name, .. } if name == "encoder_embeddings.tok_rgb@224.pos_emb")
    );
}
