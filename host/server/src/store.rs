//! The run store: one directory per run under `<data dir>/runs/<id>/` holding the run record
//! (`run.json`, rewritten atomically at every state change), the event log (`events.jsonl`,
//! appended as events happen), the workflow source and the step outputs (`out/<step>/`). A
//! restarted server reads it back, so finished runs and their outputs survive, and a run that was
//! queued or running when the server stopped is reported as failed with the reason.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Queued,
    Running,
    Finished,
    Cached,
    Failed,
    Skipped,
}

impl StepStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Finished | Self::Cached | Self::Failed | Self::Skipped
        )
    }
}

/// One step of a run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepRecord {
    pub id: String,
    /// The domain the step generates.
    pub generate: String,
    pub status: StepStatus,
    /// Fraction done, in [0, 1].
    pub progress: f64,
    /// Served from the step cache.
    pub cached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the step did not run (`upstream_failed: STEP`, `cancelled`, `interrupted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// Why the step was computed rather than served from the cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub not_cached: Option<serde_json::Value>,
}

/// A file of an output.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileRecord {
    /// The artifact's name (e.g. `boxes`, `text`, `tokens`).
    pub name: String,
    /// `text`, `json`, `image`, `tensor`, `bytes`, `raw-tokens` or `raw-tokens-preview`.
    pub kind: String,
    pub content_type: String,
    pub bytes: u64,
    /// Where to fetch it.
    pub url: String,
    /// Path inside the run's directory of the store.
    pub path: String,
}

/// A named output of the workflow.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutputRecord {
    pub name: String,
    /// `steps.ID` or `inputs.NAME`.
    pub from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The primary file's URL (`/v1/runs/{id}/outputs/{name}`), when files were written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub files: Vec<FileRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Everything the server knows about a run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunRecord {
    pub id: String,
    /// The workflow's name.
    pub workflow: String,
    pub state: RunState,
    /// Unix time in milliseconds.
    pub created_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// Why the run failed or was cancelled, when it is not a step's own failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub seed: u64,
    pub no_cache: bool,
    pub steps: Vec<StepRecord>,
    pub outputs: Vec<OutputRecord>,
    /// Links: `self`, `events`, `cancel`.
    pub links: RunLinks,
    /// Digest of the request that created the run (idempotent retries with a client run id).
    #[serde(default)]
    pub request_digest: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunLinks {
    #[serde(rename = "self")]
    pub this: String,
    pub events: String,
    pub cancel: String,
}

impl RunLinks {
    pub fn for_run(id: &str) -> Self {
        Self {
            this: format!("/v1/runs/{id}"),
            events: format!("/v1/runs/{id}/events"),
            cancel: format!("/v1/runs/{id}/cancel"),
        }
    }
}

impl RunRecord {
    /// Marks a run the server stopped during as failed; unfinished steps are skipped.
    pub fn mark_interrupted(&mut self, now_ms: u64) {
        let was = match self.state {
            RunState::Queued => "queued",
            _ => "running",
        };
        self.state = RunState::Failed;
        self.error = Some(format!(
            "interrupted: the server stopped while this run was {was}"
        ));
        self.finished_ms = Some(now_ms);
        for step in &mut self.steps {
            if !step.status.is_terminal() {
                step.status = StepStatus::Skipped;
                step.skip_reason = Some("interrupted".into());
            }
        }
    }
}

/// One event as stored and streamed: a per-run sequence number, its SSE event name and its JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    pub id: u64,
    pub kind: String,
    pub data: serde_json::Value,
}

/// Errors of the on-disk store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a run record: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The runs directory.
#[derive(Debug, Clone)]
pub struct RunStore {
    root: PathBuf,
}

impl RunStore {
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let root = data_dir.join("runs");
        std::fs::create_dir_all(&root).map_err(io("creating", &root))?;
        Ok(Self { root })
    }

    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Writes a run's record atomically (temporary file + rename). The records that must
    /// survive a crash — a new run, an ended one — are synced to disk first; the updates of a
    /// running run are not (after a crash it is reported interrupted whatever they said).
    pub fn save(&self, record: &RunRecord) -> Result<(), StoreError> {
        let dir = self.run_dir(&record.id);
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let path = dir.join("run.json");
        let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
        let durable = record.state == RunState::Queued || record.state.is_terminal();
        write_atomically(&path, &bytes, durable)
    }

    pub fn save_workflow(&self, id: &str, source: &str) -> Result<(), StoreError> {
        let dir = self.run_dir(id);
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let path = dir.join("workflow.toml");
        write_atomically(&path, source.as_bytes(), false)
    }

    /// Opens a run's event log for appending.
    pub fn event_log(&self, id: &str) -> Result<std::fs::File, StoreError> {
        let path = self.run_dir(id).join("events.jsonl");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("opening", &path))
    }

    /// Every stored run with its events, oldest first. Unreadable entries are reported and
    /// skipped, never deleted.
    pub fn load_all(&self) -> Result<Vec<(RunRecord, Vec<StoredEvent>)>, StoreError> {
        let mut runs = Vec::new();
        let entries = std::fs::read_dir(&self.root).map_err(io("reading", &self.root))?;
        for entry in entries.flatten() {
            let path = entry.path().join("run.json");
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let record: RunRecord = match serde_json::from_slice(&bytes) {
                Ok(record) => record,
                Err(source) => {
                    tracing::warn!(error = %StoreError::Corrupt { path: path.clone(), source }, "skipping a run");
                    continue;
                }
            };
            let events = read_events(&entry.path().join("events.jsonl"));
            runs.push((record, events));
        }
        runs.sort_by(|a, b| (a.0.created_ms, &a.0.id).cmp(&(b.0.created_ms, &b.0.id)));
        Ok(runs)
    }

    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        let dir = self.run_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("deleting", &dir)(e)),
        }
    }
}

/// The events of a log; a torn last line (the server died mid-write) is dropped.
fn read_events(path: &Path) -> Vec<StoredEvent> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map_while(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Appends one event as a JSON line.
pub fn append_event(log: &mut std::fs::File, event: &StoredEvent) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    log.write_all(&line)
}

fn write_atomically(path: &Path, bytes: &[u8], sync: bool) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temporary = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let mut file = std::fs::File::create(&temporary).map_err(io("creating", &temporary))?;
    file.write_all(bytes).map_err(io("writing", &temporary))?;
    if sync {
        file.sync_all().map_err(io("syncing", &temporary))?;
    }
    std::fs::rename(&temporary, path).map_err(io("renaming into", path))
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
