//! Which model a command runs on: `--model`, else `$TESSERA_MODEL`, else tessera's own default
//! model in the checkout (`assets/model/`); and the image tokenizers that go with it, from
//! `--tokenizer` and the model directory's `tokenizers/<domain>/` folders.

use anyhow::{Result, bail};
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `--model` and `--tokenizer` options shared by the commands that load a model.
#[derive(Args, Debug, Clone)]
pub struct ModelChoice {
    /// The 4M checkpoint (directory with config.json + model.safetensors). Default: tessera's own
    /// model (`assets/model/`, see its model card). Image tokenizers in its `tokenizers/<domain>/`
    /// folders are offered to the plugins unless `--tokenizer` names that domain.
    #[arg(long, env = "TESSERA_MODEL")]
    pub model: Option<PathBuf>,
    /// A 4M tokenizer for a domain's plugin, as DOMAIN=DIR (e.g. `tok_rgb@224=path/to/tokenizer`);
    /// offered to plugins as the host-nn graphs `DOMAIN/encode` and `DOMAIN/decode`. Repeatable.
    #[arg(long = "tokenizer", value_name = "DOMAIN=DIR", value_parser = tessera_nn::parse_tokenizer_arg)]
    pub tokenizers: Vec<(String, PathBuf)>,
}

/// A model directory and the tokenizers offered with it.
#[derive(Debug, Clone)]
pub struct ChosenModel {
    pub dir: PathBuf,
    pub tokenizers: BTreeMap<String, PathBuf>,
}

/// tessera's own model, next to the sources this binary was built from.
pub fn default_model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/model")
}

impl ModelChoice {
    pub fn resolve(&self) -> Result<ChosenModel> {
        self.resolve_with_default(&default_model_dir())
    }

    /// [`Self::resolve`], with `default` standing for tessera's own model.
    fn resolve_with_default(&self, default: &Path) -> Result<ChosenModel> {
        let dir = match &self.model {
            Some(dir) => dir.clone(),
            None => {
                let dir = default.to_owned();
                if !dir.join("config.json").is_file() {
                    bail!(
                        "no --model given and tessera's default model is not at {}: pass --model DIR \
                         (or set TESSERA_MODEL), or train the default model with `cargo xtask default-model`",
                        dir.display()
                    );
                }
                dir
            }
        };
        let mut tokenizers = bundled_tokenizers(&dir)?;
        tokenizers.extend(self.tokenizers.iter().cloned());
        Ok(ChosenModel { dir, tokenizers })
    }
}

/// The `tokenizers/<domain>/` folders of a model directory that hold a tokenizer.
fn bundled_tokenizers(model: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let folder = model.join("tokenizers");
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return Ok(found);
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if path.join("config.json").is_file()
            && let Some(domain) = path.file_name().and_then(|n| n.to_str())
        {
            found.insert(domain.to_owned(), path.clone());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_tokenizers_override_bundled_ones() {
        let dir = tempfile::tempdir().unwrap();
        for domain in ["tok_rgb@224", "tok_depth@224"] {
            let t = dir.path().join("tokenizers").join(domain);
            std::fs::create_dir_all(&t).unwrap();
            std::fs::write(t.join("config.json"), "{}").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("tokenizers/empty")).unwrap();
        let choice = ModelChoice {
            model: Some(dir.path().to_owned()),
            tokenizers: vec![("tok_rgb@224".into(), PathBuf::from("/elsewhere"))],
        };
        let chosen = choice.resolve().unwrap();
        assert_eq!(chosen.dir, dir.path());
        assert_eq!(
            chosen.tokenizers.keys().collect::<Vec<_>>(),
            ["tok_depth@224", "tok_rgb@224"]
        );
        assert_eq!(
            chosen.tokenizers["tok_rgb@224"],
            PathBuf::from("/elsewhere")
        );
    }

    #[test]
    fn without_a_model_the_default_is_used_when_present() {
        let default = tempfile::tempdir().unwrap();
        let tokenizer = default.path().join("tokenizers/tok_depth@224");
        std::fs::create_dir_all(&tokenizer).unwrap();
        std::fs::write(tokenizer.join("config.json"), "{}").unwrap();
        let choice = ModelChoice {
            model: None,
            tokenizers: Vec::new(),
        };

        let missing = choice.resolve_with_default(default.path()).unwrap_err();
        let message = missing.to_string();
        assert!(
            message.contains(&default.path().display().to_string())
                && message.contains("--model")
                && message.contains("cargo xtask default-model"),
            "{message}"
        );

        std::fs::write(default.path().join("config.json"), "{}").unwrap();
        let chosen = choice.resolve_with_default(default.path()).unwrap();
        assert_eq!(chosen.dir, default.path());
        assert_eq!(chosen.tokenizers["tok_depth@224"], tokenizer);
    }
}
