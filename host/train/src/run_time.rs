//! The time a training run has spent, kept beside each checkpoint so that a run stopped and
//! resumed (perhaps more than once) can still state what it cost as a whole.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// File of a checkpoint directory holding the run's [`SpentTime`] up to that checkpoint.
pub const SPENT_TIME_FILE: &str = "spent-time.json";

/// Wall and processor time a run spent up to a checkpoint, over every invocation that led to it:
/// each counted from its start (its setup and data included) to the checkpoint it last wrote.
/// Work an interrupted invocation did after its last checkpoint is redone on resume, so it is
/// counted once, by the invocation that kept it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SpentTime {
    pub seconds: f64,
    /// `None` where the platform does not report a process's processor time.
    pub cpu_seconds: Option<f64>,
}

/// When one invocation began: the wall instant and the process's processor time then.
#[derive(Debug, Clone, Copy)]
pub struct InvocationStart {
    at: Instant,
    cpu_seconds: Option<f64>,
}

impl InvocationStart {
    pub fn now() -> Self {
        Self {
            at: Instant::now(),
            cpu_seconds: process_cpu_seconds(),
        }
    }
}

/// A trainer's clock: what the checkpoint it resumed from had spent, plus this invocation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunClock {
    /// `None` when resumed from a checkpoint that does not say (written before this file
    /// existed): the run's total is then unknown, and no later checkpoint claims one.
    before: Option<SpentTime>,
    start: InvocationStart,
}

impl RunClock {
    /// A run starting from nothing, counted from now.
    pub(crate) fn fresh() -> Self {
        Self {
            before: Some(SpentTime {
                seconds: 0.0,
                cpu_seconds: Some(0.0),
            }),
            start: InvocationStart::now(),
        }
    }

    /// A run continuing from the checkpoint `dir`, counted from now.
    pub(crate) fn resumed(dir: &Path) -> Result<Self> {
        Ok(Self {
            before: read_spent_time(dir)?,
            start: InvocationStart::now(),
        })
    }

    /// Count this invocation from `start` (the process's start, so setup and data count).
    pub(crate) fn count_from(&mut self, start: InvocationStart) {
        self.start = start;
    }

    /// The run's time so far, if known.
    pub(crate) fn spent(&self) -> Option<SpentTime> {
        let before = self.before?;
        let cpu_now = process_cpu_seconds();
        Some(SpentTime {
            seconds: before.seconds + self.start.at.elapsed().as_secs_f64(),
            cpu_seconds: match (before.cpu_seconds, cpu_now, self.start.cpu_seconds) {
                (Some(before), Some(now), Some(then)) => Some(before + (now - then)),
                _ => None,
            },
        })
    }

    /// Write [`SPENT_TIME_FILE`] into the checkpoint `dir`, when the run's time is known.
    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let Some(spent) = self.spent() else {
            return Ok(());
        };
        let path = dir.join(SPENT_TIME_FILE);
        let json = serde_json::to_string_pretty(&spent).expect("spent time serialises");
        std::fs::write(&path, json).map_err(|source| TrainError::Io { path, source })
    }
}

/// The [`SpentTime`] recorded in the checkpoint `dir`; `None` if it has none.
pub fn read_spent_time(dir: &Path) -> Result<Option<SpentTime>> {
    let path = dir.join(SPENT_TIME_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(TrainError::Io { path, source }),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TrainError::BadCheckpoint {
            path: dir.to_owned(),
            reason: format!("{SPENT_TIME_FILE}: {e}"),
        })
}

/// Processor time (user + system, every thread) this process has used so far.
#[cfg(unix)]
fn process_cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `getrusage` only writes the struct it is given, which lives for the call.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

#[cfg(not(unix))]
fn process_cpu_seconds() -> Option<f64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_clock_adds_this_invocation_to_the_checkpoint_s_time() {
        let dir = tempfile::tempdir().unwrap();
        let earlier = SpentTime {
            seconds: 600.0,
            cpu_seconds: Some(900.0),
        };
        std::fs::write(
            dir.path().join(SPENT_TIME_FILE),
            serde_json::to_string(&earlier).unwrap(),
        )
        .unwrap();
        let clock = RunClock::resumed(dir.path()).unwrap();
        // Burn a little processor time so this invocation's share is measurably positive.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let spent = clock.spent().unwrap();
        assert!(spent.seconds > 600.0 && spent.seconds < 660.0, "{spent:?}");
        // Other tests' threads share the process's processor time: only a lower bound holds.
        if let Some(cpu) = spent.cpu_seconds {
            assert!(cpu > 900.0, "{spent:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_fresh_clock_reports_processor_time() {
        let spent = RunClock::fresh().spent().unwrap();
        assert!(spent.cpu_seconds.is_some_and(|cpu| cpu >= 0.0), "{spent:?}");
    }

    #[test]
    fn a_checkpoint_without_a_time_makes_the_run_s_total_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let clock = RunClock::resumed(dir.path()).unwrap();
        assert_eq!(clock.spent(), None);
        let out = tempfile::tempdir().unwrap();
        clock.write(out.path()).unwrap();
        assert!(!out.path().join(SPENT_TIME_FILE).exists());
    }

    #[test]
    fn a_damaged_time_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SPENT_TIME_FILE), "{ not json").unwrap();
        let err = RunClock::resumed(dir.path()).unwrap_err().to_string();
        assert!(err.contains(SPENT_TIME_FILE), "{err}");
    }

    #[test]
    fn counting_from_an_earlier_start_includes_the_setup() {
        let start = InvocationStart::now();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let mut clock = RunClock::fresh();
        let from_creation = clock.spent().unwrap().seconds;
        clock.count_from(start);
        let from_start = clock.spent().unwrap().seconds;
        assert!(
            from_start >= from_creation + 0.025,
            "{from_start} vs {from_creation}"
        );
    }
}
