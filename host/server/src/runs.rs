//! Runs: the queue (at most N runs at once, the rest wait in order), the executor driving each run
//! on the shared engine, live event logs that SSE clients follow, cancellation, and the records
//! kept in the [`RunStore`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tessera_engine::{ArtifactKind, DiskCache, Engine, StepValue, WrittenArtifact};
use tessera_workflow::{
    CancellationToken, ExecuteOptions, ExecutionPlan, Reference, RunEvent, RunReport, SkipReason,
    StepOutcome, Workflow, execute,
};
use tokio::sync::{Notify, Semaphore, watch};

use crate::error::ApiError;
use crate::store::{
    FileRecord, OutputRecord, RunLinks, RunRecord, RunState, RunStore, StepRecord, StepStatus,
    StoredEvent, append_event, now_ms,
};

/// A validated run request, ready to queue.
pub struct PreparedRun {
    pub workflow: Workflow,
    pub source: String,
    pub plan: ExecutionPlan,
    pub inputs: BTreeMap<String, StepValue>,
    pub seed: u64,
    pub no_cache: bool,
    pub run_id: Option<String>,
    pub request_digest: String,
}

/// A run the server knows: its record, its event log, and the means to cancel it.
pub struct RunHandle {
    pub id: String,
    record: Mutex<RunRecord>,
    events: Mutex<Vec<StoredEvent>>,
    log: Mutex<Option<std::fs::File>>,
    changed: watch::Sender<u64>,
    cancel: CancellationToken,
    cancel_requested: Notify,
    store: RunStore,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl RunHandle {
    fn new(record: RunRecord, events: Vec<StoredEvent>, store: RunStore) -> Arc<Self> {
        let last = events.last().map_or(0, |e| e.id);
        let (changed, _) = watch::channel(last);
        Arc::new(Self {
            id: record.id.clone(),
            record: Mutex::new(record),
            events: Mutex::new(events),
            log: Mutex::new(None),
            changed,
            cancel: CancellationToken::new(),
            cancel_requested: Notify::new(),
            store,
        })
    }

    pub fn record(&self) -> RunRecord {
        lock(&self.record).clone()
    }

    pub fn state(&self) -> RunState {
        lock(&self.record).state
    }

    /// Events with an id above `after`, and whether the run has ended (no more will come).
    pub fn events_after(&self, after: u64) -> (Vec<StoredEvent>, bool) {
        let events = lock(&self.events);
        let start = events.partition_point(|e| e.id <= after);
        let batch = events[start..].to_vec();
        drop(events);
        (batch, self.state().is_terminal())
    }

    /// Wakes on every new event.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Waits until the run has ended or `timeout` passed.
    pub async fn wait_until_done(&self, timeout: Duration) {
        let mut changes = self.subscribe();
        let _ = tokio::time::timeout(timeout, async {
            while !self.state().is_terminal() {
                if changes.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
    }

    fn push_event(&self, kind: &str, data: serde_json::Value) {
        let mut events = lock(&self.events);
        let event = StoredEvent {
            id: events.last().map_or(1, |e| e.id + 1),
            kind: kind.to_owned(),
            data,
        };
        {
            let mut log = lock(&self.log);
            if log.is_none() {
                *log = self.store.event_log(&self.id).ok();
            }
            if let Some(file) = log.as_mut()
                && let Err(error) = append_event(file, &event)
            {
                tracing::warn!(run = %self.id, %error, "event not written to the log");
            }
        }
        let id = event.id;
        events.push(event);
        drop(events);
        self.changed.send_replace(id);
    }

    /// Applies `change` to the record and writes it to the store.
    fn update(&self, change: impl FnOnce(&mut RunRecord)) {
        let mut record = lock(&self.record);
        change(&mut record);
        if let Err(error) = self.store.save(&record) {
            tracing::error!(run = %self.id, %error, "run record not saved");
        }
    }

    fn on_step_event(&self, event: RunEvent) {
        let kind = match &event {
            RunEvent::Queued { .. } => "queued",
            RunEvent::Started { .. } => "started",
            RunEvent::Progress { .. } => "progress",
            RunEvent::Cached { .. } => "cached",
            RunEvent::Finished { .. } => "finished",
            RunEvent::Failed { .. } => "failed",
            RunEvent::Skipped { .. } => "skipped",
        };
        let apply = |record: &mut RunRecord| {
            let Some(step) = record.steps.iter_mut().find(|s| s.id == event.step()) else {
                return;
            };
            match &event {
                RunEvent::Queued { .. } => step.status = StepStatus::Queued,
                RunEvent::Started { .. } => step.status = StepStatus::Running,
                RunEvent::Progress { fraction, .. } => step.progress = *fraction,
                RunEvent::Cached { .. } => {
                    step.status = StepStatus::Cached;
                    step.cached = true;
                    step.progress = 1.0;
                }
                RunEvent::Finished {
                    elapsed_ms,
                    not_cached,
                    ..
                } => {
                    step.status = StepStatus::Finished;
                    step.progress = 1.0;
                    step.elapsed_ms = Some(*elapsed_ms);
                    step.not_cached = serde_json::to_value(not_cached).ok();
                }
                RunEvent::Failed { error, .. } => {
                    step.status = StepStatus::Failed;
                    step.error = Some(error.clone());
                }
                RunEvent::Skipped { reason, .. } => {
                    step.status = StepStatus::Skipped;
                    step.skip_reason = Some(match reason {
                        SkipReason::UpstreamFailed { step } => format!("upstream_failed: {step}"),
                        SkipReason::Cancelled => "cancelled".into(),
                    });
                }
            }
        };
        if event.is_terminal() || matches!(event, RunEvent::Started { .. }) {
            self.update(apply);
        } else {
            apply(&mut lock(&self.record));
        }
        let data = serde_json::to_value(&event).unwrap_or_default();
        self.push_event(kind, data);
    }

    fn set_state(&self, state: RunState, error: Option<String>) {
        self.update(|record| {
            record.state = state;
            let now = now_ms();
            match state {
                RunState::Running => record.started_ms = Some(now),
                RunState::Queued => {}
                _ => record.finished_ms = Some(now),
            }
            if error.is_some() {
                record.error = error.clone();
            }
            if state == RunState::Cancelled {
                for step in &mut record.steps {
                    if !step.status.is_terminal() {
                        step.status = StepStatus::Skipped;
                        step.skip_reason = Some("cancelled".into());
                    }
                }
            }
        });
        let mut data = serde_json::json!({ "event": "run", "state": state });
        if let Some(error) = error {
            data["error"] = error.into();
        }
        self.push_event("run", data);
    }

    /// Asks the run to stop: a queued run never starts; a running one stops between decoding
    /// steps.
    fn request_cancel(&self) {
        self.cancel.cancel();
        self.cancel_requested.notify_waiters();
    }

    async fn cancelled(&self) {
        loop {
            let notified = self.cancel_requested.notified();
            if self.cancel.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Settings of the run manager.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Runs executing at once; the others wait in order.
    pub max_concurrent_runs: usize,
    /// Steps of one run executing at once.
    pub steps_per_run: usize,
    /// The step cache directory.
    pub cache_dir: PathBuf,
    /// At most this many ended runs are kept (the most recently ended); older ones are deleted
    /// with their outputs when a run ends and at start. `None` keeps every run.
    pub keep_runs: Option<usize>,
}

/// Owns every run of the server.
pub struct RunManager {
    engine: Arc<Engine>,
    store: RunStore,
    settings: RunSettings,
    runs: Mutex<BTreeMap<String, Arc<RunHandle>>>,
    queue: Arc<Semaphore>,
    counter: AtomicU64,
    shutting_down: AtomicBool,
}

impl RunManager {
    /// Opens the store: finished runs come back as they were; runs that were queued or running
    /// when the server stopped are marked failed (interrupted).
    pub fn open(
        engine: Arc<Engine>,
        store: RunStore,
        settings: RunSettings,
    ) -> Result<Arc<Self>, crate::store::StoreError> {
        let mut runs = BTreeMap::new();
        for (mut record, events) in store.load_all()? {
            let interrupted = !record.state.is_terminal();
            if interrupted {
                record.mark_interrupted(now_ms());
                store.save(&record)?;
            }
            let handle = RunHandle::new(record, events, store.clone());
            if interrupted {
                let error = handle.record().error;
                handle.push_event(
                    "run",
                    serde_json::json!({ "event": "run", "state": RunState::Failed, "error": error }),
                );
            }
            runs.insert(handle.id.clone(), handle);
        }
        let manager = Arc::new(Self {
            engine,
            store,
            queue: Arc::new(Semaphore::new(settings.max_concurrent_runs.max(1))),
            settings,
            runs: Mutex::new(runs),
            counter: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
        });
        manager.prune(0);
        Ok(manager)
    }

    /// Applies the retention policy: deletes the ended runs beyond the `keep_runs` most recently
    /// ended ones, less `ending` places for runs about to end (so that a client told a run ended
    /// never sees more runs than the policy allows). Queued and running runs are never touched.
    /// Blocks on file deletion.
    fn prune(&self, ending: usize) {
        let Some(keep) = self.settings.keep_runs.map(|k| k.saturating_sub(ending)) else {
            return;
        };
        let mut runs = lock(&self.runs);
        let mut ended: Vec<(u64, String)> = runs
            .values()
            .map(|h| h.record())
            .filter(|r| r.state.is_terminal())
            .map(|r| (r.finished_ms.unwrap_or(r.created_ms), r.id))
            .collect();
        if ended.len() <= keep {
            return;
        }
        ended.sort_by(|a, b| b.cmp(a));
        for (_, id) in ended.drain(keep..) {
            match self.store.delete(&id) {
                Ok(()) => {
                    runs.remove(&id);
                    tracing::info!(run = %id, keep, "run deleted by the retention policy");
                }
                // Kept in the list, so that it stays visible and can be deleted by hand.
                Err(error) => tracing::warn!(run = %id, %error, "could not delete an old run"),
            }
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn get(&self, id: &str) -> Result<Arc<RunHandle>, ApiError> {
        lock(&self.runs)
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::unknown_run(id))
    }

    /// Every run, newest first.
    pub fn list(&self) -> Vec<RunRecord> {
        let mut records: Vec<RunRecord> = lock(&self.runs).values().map(|h| h.record()).collect();
        records.sort_by(|a, b| (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id)));
        records
    }

    /// Runs that have not ended.
    pub fn active(&self) -> usize {
        lock(&self.runs)
            .values()
            .filter(|h| !h.state().is_terminal())
            .count()
    }

    /// Queues a run. With a client run id already used by the same request, the existing run is
    /// returned (`false`: not created); used by a different request, it is a conflict.
    pub fn submit(
        self: &Arc<Self>,
        prepared: PreparedRun,
    ) -> Result<(Arc<RunHandle>, bool), ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down and takes no new runs",
            ));
        }
        let mut runs = lock(&self.runs);
        let id = match &prepared.run_id {
            Some(id) => {
                if let Some(existing) = runs.get(id) {
                    if existing.record().request_digest == prepared.request_digest {
                        return Ok((existing.clone(), false));
                    }
                    return Err(ApiError::conflict(
                        "run_id_conflict",
                        format!("run id `{id}` is already used by a different request"),
                    ));
                }
                id.clone()
            }
            None => loop {
                let candidate = format!(
                    "run-{:x}-{}",
                    now_ms(),
                    self.counter.fetch_add(1, Ordering::SeqCst)
                );
                if !runs.contains_key(&candidate) {
                    break candidate;
                }
            },
        };
        let record = RunRecord {
            id: id.clone(),
            workflow: prepared.workflow.name.clone(),
            state: RunState::Queued,
            created_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            error: None,
            seed: prepared.seed,
            no_cache: prepared.no_cache,
            steps: prepared
                .plan
                .steps
                .iter()
                .map(|planned| StepRecord {
                    id: planned.step.id.clone(),
                    generate: planned.step.generate.clone(),
                    status: StepStatus::Queued,
                    progress: 0.0,
                    cached: false,
                    elapsed_ms: None,
                    error: None,
                    skip_reason: None,
                    not_cached: None,
                })
                .collect(),
            outputs: Vec::new(),
            links: RunLinks::for_run(&id),
            request_digest: prepared.request_digest.clone(),
        };
        self.store
            .save_workflow(&id, &prepared.source)
            .and_then(|()| self.store.save(&record))
            .map_err(|e| ApiError::internal(format!("storing the run: {e}")))?;
        let handle = RunHandle::new(record, Vec::new(), self.store.clone());
        runs.insert(id, handle.clone());
        drop(runs);
        handle.push_event(
            "run",
            serde_json::json!({ "event": "run", "state": RunState::Queued }),
        );
        tokio::spawn(self.clone().drive(handle.clone(), prepared));
        Ok((handle, true))
    }

    async fn drive(self: Arc<Self>, handle: Arc<RunHandle>, prepared: PreparedRun) {
        // Record writes are synced to disk: every state change happens on a blocking thread.
        let cancelled_before_start = |handle: Arc<RunHandle>| async move {
            let _ = tokio::task::spawn_blocking(move || {
                handle.set_state(
                    RunState::Cancelled,
                    Some("cancelled before it started".into()),
                )
            })
            .await;
        };
        let permit = tokio::select! {
            permit = self.queue.clone().acquire_owned() => permit,
            () = handle.cancelled() => return cancelled_before_start(handle).await,
        };
        if handle.cancel.is_cancelled() {
            return cancelled_before_start(handle).await;
        }
        let manager = self.clone();
        let worker_handle = handle.clone();
        let finished = tokio::task::spawn_blocking(move || {
            worker_handle.set_state(RunState::Running, None);
            let (state, error) = match manager.execute_blocking(&worker_handle, &prepared) {
                Ok((report, outputs)) => {
                    worker_handle.update(|record| record.outputs = outputs);
                    ended_state(&report)
                }
                Err(error) => (RunState::Failed, Some(error)),
            };
            manager.prune(1);
            worker_handle.set_state(state, error);
            // Another run may have ended meanwhile.
            manager.prune(0);
        })
        .await;
        if let Err(join) = finished {
            let message = format!("internal error: the run's worker stopped ({join})");
            let _ = tokio::task::spawn_blocking(move || {
                handle.set_state(RunState::Failed, Some(message))
            })
            .await;
        }
        // Released only now, so the next run starts after this one is recorded as ended.
        drop(permit);
    }

    fn execute_blocking(
        &self,
        handle: &Arc<RunHandle>,
        prepared: &PreparedRun,
    ) -> Result<(RunReport<StepValue>, Vec<OutputRecord>), String> {
        let run_dir = self.store.run_dir(&handle.id);
        let out_dir = run_dir.join("out");
        let runner = self.engine.run_in(&out_dir);
        let options = ExecuteOptions {
            max_concurrency: self.settings.steps_per_run.max(1),
            cache_context: self.engine.cache_context(
                &prepared.inputs,
                prepared.seed,
                prepared.no_cache,
            ),
            cancel: handle.cancel.clone(),
        };
        let cache = DiskCache::new(&self.settings.cache_dir, &out_dir)
            .with_plan(&prepared.plan, &options.cache_context);
        let sink = |event: RunEvent| handle.on_step_event(event);
        let report = execute(
            &prepared.plan,
            &runner,
            &prepared.inputs,
            &cache,
            &options,
            &sink,
        )
        .map_err(|e| e.to_string())?;
        let outputs = output_records(&handle.id, &run_dir, &prepared.plan, &report);
        Ok((report, outputs))
    }

    /// Cancels a queued or running run; a finished one is a conflict.
    pub fn cancel(&self, id: &str) -> Result<Arc<RunHandle>, ApiError> {
        let handle = self.get(id)?;
        let state = handle.state();
        if state.is_terminal() {
            return Err(ApiError::conflict(
                "run_finished",
                format!("run `{id}` has already ended ({})", state_name(state)),
            ));
        }
        handle.request_cancel();
        Ok(handle)
    }

    /// Deletes an ended run and its outputs.
    pub fn delete(&self, id: &str) -> Result<(), ApiError> {
        let mut runs = lock(&self.runs);
        let handle = runs
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::unknown_run(id))?;
        if !handle.state().is_terminal() {
            return Err(ApiError::conflict(
                "run_active",
                format!(
                    "run `{id}` is still {}; cancel it first",
                    state_name(handle.state())
                ),
            ));
        }
        self.store
            .delete(id)
            .map_err(|e| ApiError::internal(format!("deleting the run: {e}")))?;
        runs.remove(id);
        Ok(())
    }

    /// Where a run's files live.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.store.run_dir(id)
    }

    /// Stops taking runs, cancels queued ones at once, lets running ones finish for `grace`, then
    /// cancels them and waits (bounded) for them to stop.
    pub async fn shutdown(&self, grace: Duration) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let handles: Vec<Arc<RunHandle>> = lock(&self.runs).values().cloned().collect();
        for handle in &handles {
            if handle.state() == RunState::Queued {
                handle.request_cancel();
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.active() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for handle in &handles {
            if !handle.state().is_terminal() {
                handle.request_cancel();
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.active() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// How an executed run ended, with the reason when it did not succeed.
fn ended_state(report: &RunReport<StepValue>) -> (RunState, Option<String>) {
    if report.cancelled {
        return (RunState::Cancelled, Some("cancelled".to_owned()));
    }
    if report.succeeded() {
        return (RunState::Succeeded, None);
    }
    let failed: Vec<&str> = report
        .outcomes
        .iter()
        .filter(|(_, outcome)| matches!(outcome, StepOutcome::Failed { .. }))
        .map(|(id, _)| id.as_str())
        .collect();
    (
        RunState::Failed,
        Some(format!("step(s) failed: {}", failed.join(", "))),
    )
}

pub fn state_name(state: RunState) -> &'static str {
    match state {
        RunState::Queued => "queued",
        RunState::Running => "running",
        RunState::Succeeded => "succeeded",
        RunState::Failed => "failed",
        RunState::Cancelled => "cancelled",
    }
}

fn output_records(
    run_id: &str,
    run_dir: &Path,
    plan: &ExecutionPlan,
    report: &RunReport<StepValue>,
) -> Vec<OutputRecord> {
    plan.outputs
        .iter()
        .map(|(name, reference)| {
            let produced = report.outputs.get(name).and_then(StepValue::produced);
            let files: Vec<FileRecord> = produced
                .map(|p| {
                    p.artifacts
                        .iter()
                        .map(|artifact| file_record(run_id, run_dir, name, artifact))
                        .collect()
                })
                .unwrap_or_default();
            OutputRecord {
                name: name.clone(),
                from: match reference {
                    Reference::Step(id) => format!("steps.{id}"),
                    Reference::Input(input) => format!("inputs.{input}"),
                },
                domain: report.outputs.get(name).map(|v| v.domain().to_owned()),
                url: (!files.is_empty()).then(|| format!("/v1/runs/{run_id}/outputs/{name}")),
                files,
                warnings: produced.map(|p| p.warnings.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

fn file_record(
    run_id: &str,
    run_dir: &Path,
    output: &str,
    artifact: &WrittenArtifact,
) -> FileRecord {
    let path = artifact
        .path
        .strip_prefix(run_dir)
        .unwrap_or(&artifact.path)
        .to_string_lossy()
        .into_owned();
    let bytes = std::fs::metadata(&artifact.path).map_or(0, |m| m.len());
    FileRecord {
        name: artifact.name.clone(),
        kind: serde_json::to_value(artifact.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "bytes".into()),
        content_type: content_type(&artifact.kind, &artifact.path).to_owned(),
        bytes,
        url: format!("/v1/runs/{run_id}/outputs/{output}/{}", artifact.name),
        path,
    }
}

/// The content type of an artifact file.
pub fn content_type(kind: &ArtifactKind, path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => match kind {
            ArtifactKind::Text => "text/plain; charset=utf-8",
            ArtifactKind::Json | ArtifactKind::RawTokens => "application/json",
            ArtifactKind::Image | ArtifactKind::RawTokensPreview => "image/png",
            ArtifactKind::Tensor | ArtifactKind::Bytes => "application/octet-stream",
        },
    }
}
