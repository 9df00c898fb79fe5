//! Run events: one for every transition of every step, in the shape the server streams (SSE) and
//! the CLI turns into progress bars.

use serde::Serialize;

use crate::plan::NotCachedReason;

/// Why a step did not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SkipReason {
    /// A step it (transitively) depends on failed.
    UpstreamFailed { step: String },
    /// The run was cancelled before or while the step ran.
    Cancelled,
}

/// A step's transition. Every planned step gets `queued`, then exactly one terminal event:
/// `cached`, `finished`, `failed` or `skipped` (`started` and `progress` come in between when it
/// runs).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    Queued {
        step: String,
    },
    Started {
        step: String,
    },
    /// `fraction` in [0, 1] (e.g. decoding steps done / total).
    Progress {
        step: String,
        fraction: f64,
    },
    /// Served from the step cache under `key` (the digest), without running.
    Cached {
        step: String,
        key: String,
    },
    Finished {
        step: String,
        elapsed_ms: f64,
        /// Why the result was computed rather than taken from the cache.
        not_cached: NotCachedReason,
    },
    Failed {
        step: String,
        error: String,
    },
    Skipped {
        step: String,
        #[serde(flatten)]
        reason: SkipReason,
    },
}

impl RunEvent {
    pub fn step(&self) -> &str {
        match self {
            RunEvent::Queued { step }
            | RunEvent::Started { step }
            | RunEvent::Progress { step, .. }
            | RunEvent::Cached { step, .. }
            | RunEvent::Finished { step, .. }
            | RunEvent::Failed { step, .. }
            | RunEvent::Skipped { step, .. } => step,
        }
    }

    /// Whether this is the step's last event.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            RunEvent::Cached { .. }
                | RunEvent::Finished { .. }
                | RunEvent::Failed { .. }
                | RunEvent::Skipped { .. }
        )
    }
}

/// Where events go: a channel to the server's stream, the CLI's progress bars, a test recorder.
/// Called from the executor's worker threads.
pub trait EventSink: Sync {
    fn emit(&self, event: RunEvent);
}

impl EventSink for std::sync::mpsc::Sender<RunEvent> {
    fn emit(&self, event: RunEvent) {
        // A receiver that went away (client disconnected) must not stop the run.
        let _ = self.send(event);
    }
}

impl EventSink for std::sync::mpsc::SyncSender<RunEvent> {
    fn emit(&self, event: RunEvent) {
        let _ = self.send(event);
    }
}

impl<F: Fn(RunEvent) + Sync> EventSink for F {
    fn emit(&self, event: RunEvent) {
        self(event)
    }
}
