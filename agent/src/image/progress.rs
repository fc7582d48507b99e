//! Progress of a running image write, shared between the writer and whoever reports it
//! (the command's `command_result`, the log, the standalone progress bar).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;

/// A cheap, cloneable handle on one write's progress.
#[derive(Debug, Clone)]
pub struct Progress {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    started: Instant,
    phase: &'static str,
    done: u64,
    total: Option<u64>,
}

/// A point-in-time view, serialised into `command_result` as it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressSnapshot {
    /// What the write is doing: `downloading`, `verifying`, `finishing`, …
    pub phase: &'static str,
    /// Bytes of the decoded image processed so far.
    pub bytes_done: u64,
    /// The decoded image's size, once known.
    pub bytes_total: Option<u64>,
    pub elapsed_seconds: f64,
    pub rate_bytes_per_second: f64,
    /// Estimated seconds left, once the total is known and progress was made.
    pub eta_seconds: Option<f64>,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    pub fn new() -> Self {
        let state = State { started: Instant::now(), phase: "starting", done: 0, total: None };
        Self { inner: Arc::new(Mutex::new(state)) }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn set_phase(&self, phase: &'static str) {
        self.with(|s| s.phase = phase);
    }

    pub fn set_total(&self, total: u64) {
        self.with(|s| s.total = Some(total));
    }

    /// Records that the decoded image has been processed up to `done` bytes.
    pub fn set_done(&self, done: u64) {
        self.with(|s| s.done = done);
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        self.with(|s| {
            let elapsed = s.started.elapsed().as_secs_f64();
            let rate = if elapsed > 0.0 { s.done as f64 / elapsed } else { 0.0 };
            let eta = match s.total {
                Some(total) if rate > 0.0 => Some(total.saturating_sub(s.done) as f64 / rate),
                _ => None,
            };
            ProgressSnapshot {
                phase: s.phase,
                bytes_done: s.done,
                bytes_total: s.total,
                elapsed_seconds: elapsed,
                rate_bytes_per_second: rate,
                eta_seconds: eta,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reports_phase_totals_and_eta() {
        let p = Progress::new();
        assert_eq!(p.snapshot().eta_seconds, None);
        p.set_phase("downloading");
        p.set_total(1000);
        std::thread::sleep(std::time::Duration::from_millis(5));
        p.set_done(500);
        let s = p.snapshot();
        assert_eq!((s.phase, s.bytes_done, s.bytes_total), ("downloading", 500, Some(1000)));
        assert!(s.rate_bytes_per_second > 0.0);
        let eta = s.eta_seconds.unwrap();
        // Half done: the time left is about the time spent.
        assert!((eta - s.elapsed_seconds).abs() < s.elapsed_seconds, "{s:?}");
    }
}
