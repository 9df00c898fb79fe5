//! [`DiskCache`]: step results kept on disk between runs, keyed by the workflow crate's cache
//! keys. An entry is a directory holding the result's tokens and copies of its artifact files;
//! serving an entry copies the files back into the run's output directory (atomically).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tessera_workflow::{CacheContext, CacheKey, ExecutionPlan, StepCache, cache_keys};

use crate::artifacts::{ArtifactKind, WrittenArtifact, safe_name, write_atomic};
use crate::value::{Produced, StepValue};

/// A step cache in a directory (`entries/<digest>/`, `last/<step>.json`).
pub struct DiskCache {
    dir: PathBuf,
    out_dir: PathBuf,
    /// Cache key digest → ids of the run's steps with that key (keys cover what a step computes,
    /// not its id, so an entry stored by one workflow's step can serve another's).
    steps_by_digest: BTreeMap<String, Vec<String>>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    step: String,
    domain: String,
    ids: Vec<u32>,
    shape: Vec<u32>,
    warnings: Vec<String>,
    artifacts: Vec<RecordArtifact>,
}

#[derive(Serialize, Deserialize)]
struct RecordArtifact {
    name: String,
    kind: ArtifactKind,
    file: String,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    digest: String,
    model: String,
    plugins: String,
    inputs: String,
    parameters: String,
    seed: u64,
}

impl DiskCache {
    /// A cache in `dir` that restores served artifacts under `out_dir/<step id>/`.
    pub fn new(dir: impl Into<PathBuf>, out_dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            out_dir: out_dir.into(),
            steps_by_digest: BTreeMap::new(),
        }
    }

    /// Served entries are restored under the ids of `plan`'s steps whose key they match (rather
    /// than the id of the step that stored them).
    pub fn with_plan(mut self, plan: &ExecutionPlan, context: &CacheContext) -> Self {
        self.steps_by_digest.clear();
        for (step, key) in cache_keys(plan, context) {
            self.steps_by_digest
                .entry(key.digest)
                .or_default()
                .push(step);
        }
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_dir(&self, key: &CacheKey) -> Option<PathBuf> {
        // Digests are hex; anything else never names a path.
        key.digest
            .chars()
            .all(|c| c.is_ascii_hexdigit())
            .then(|| self.dir.join("entries").join(&key.digest))
    }

    fn load(&self, key: &CacheKey) -> Option<StepValue> {
        let entry = self.entry_dir(key)?;
        let record: Record =
            serde_json::from_slice(&std::fs::read(entry.join("record.json")).ok()?).ok()?;
        let steps = self
            .steps_by_digest
            .get(&key.digest)
            .cloned()
            .unwrap_or_else(|| vec![record.step.clone()]);
        let mut artifacts = Vec::with_capacity(record.artifacts.len());
        for artifact in record.artifacts {
            if artifact.file != safe_file(&artifact.file) {
                return None;
            }
            let bytes = std::fs::read(entry.join("files").join(&artifact.file)).ok()?;
            let mut first = None;
            for step in &steps {
                let path = self.out_dir.join(safe_name(step)).join(&artifact.file);
                write_atomic(&path, &bytes).ok()?;
                first.get_or_insert(path);
            }
            artifacts.push(WrittenArtifact {
                name: artifact.name,
                kind: artifact.kind,
                path: first?,
            });
        }
        Some(StepValue::Produced(Arc::new(Produced {
            step: steps.into_iter().next()?,
            domain: record.domain,
            ids: record.ids,
            shape: record.shape,
            artifacts,
            warnings: record.warnings,
        })))
    }

    fn store(&self, produced: &Produced, key: &CacheKey) -> std::io::Result<()> {
        let Some(entry) = self.entry_dir(key) else {
            return Ok(());
        };
        if entry.join("record.json").is_file() {
            return Ok(());
        }
        let entries = self.dir.join("entries");
        std::fs::create_dir_all(&entries)?;
        let staging = entries.join(format!(".{}.{}.tmp", key.digest, std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let result = (|| {
            std::fs::create_dir_all(staging.join("files"))?;
            let mut artifacts = Vec::new();
            for artifact in &produced.artifacts {
                let file = artifact
                    .path
                    .file_name()
                    .map(|n| safe_file(&n.to_string_lossy()))
                    .unwrap_or_else(|| safe_name(&artifact.name));
                std::fs::copy(&artifact.path, staging.join("files").join(&file))?;
                artifacts.push(RecordArtifact {
                    name: artifact.name.clone(),
                    kind: artifact.kind,
                    file,
                });
            }
            let record = Record {
                step: produced.step.clone(),
                domain: produced.domain.clone(),
                ids: produced.ids.clone(),
                shape: produced.shape.clone(),
                warnings: produced.warnings.clone(),
                artifacts,
            };
            std::fs::write(staging.join("record.json"), serde_json::to_vec(&record)?)?;
            std::fs::rename(&staging, &entry)
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        result
    }
}

/// A file name of safe characters (dots allowed, no leading dot).
fn safe_file(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    safe.trim_start_matches('.').to_owned()
}

impl StepCache<StepValue> for DiskCache {
    fn get(&self, key: &CacheKey) -> Option<StepValue> {
        self.load(key)
    }

    fn put(&self, step: &str, key: &CacheKey, value: &StepValue) {
        if let StepValue::Produced(produced) = value
            && let Err(error) = self.store(produced, key)
        {
            tracing::warn!(step, %error, "step result not cached");
        }
        let stored = StoredKey {
            digest: key.digest.clone(),
            model: key.model.clone(),
            plugins: key.plugins.clone(),
            inputs: key.inputs.clone(),
            parameters: key.parameters.clone(),
            seed: key.seed,
        };
        if let Ok(bytes) = serde_json::to_vec(&stored) {
            let path = self
                .dir
                .join("last")
                .join(format!("{}.json", safe_name(step)));
            if let Err(error) = write_atomic(&path, &bytes) {
                tracing::warn!(step, %error, "last cache key not recorded");
            }
        }
    }

    fn previous_key(&self, step: &str) -> Option<CacheKey> {
        let path = self
            .dir
            .join("last")
            .join(format!("{}.json", safe_name(step)));
        let stored: StoredKey = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        Some(CacheKey {
            digest: stored.digest,
            model: stored.model,
            plugins: stored.plugins,
            inputs: stored.inputs,
            parameters: stored.parameters,
            seed: stored.seed,
        })
    }
}
