//! Periodic reconcilers: tasks with no input that compare the world with the store and
//! fix the difference (power-state sync, wait-state timeouts). Each run re-reads state,
//! is idempotent, and has no internal retry loop — the next run is the retry. The last
//! run of each is kept for `ferric conductor status` and logged.
//!
//! `ferric conductor status` reads the last runs from `<data_dir>/status.json`, which the
//! service rewrites (temp file + rename, so a reader never sees half a file) after every
//! run. A file rather than an API endpoint, so the command works while the API is down or
//! wedged — exactly when an operator wants to know whether the reconcilers still run.

pub mod power_sync;
pub mod timeouts;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One reconciler.
#[async_trait::async_trait]
pub trait Reconciler: Send + Sync {
    /// A stable name (`power_sync`, `timeouts`), used in logs and status.
    fn name(&self) -> &'static str;
    /// How long to wait between the end of one run and the start of the next.
    fn interval(&self) -> Duration;
    /// One pass. The returned text summarises what it did ("3 nodes checked, 1 fixed").
    async fn run_once(&self) -> Result<String, String>;
}

/// What happened in a reconciler's last run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRun {
    pub started: SystemTime,
    pub took: Duration,
    /// `Ok(summary)` or `Err(error text)`.
    pub outcome: Result<String, String>,
    /// Runs since the conductor started.
    pub runs: u64,
}

/// The last run of every reconciler, optionally mirrored to a status file.
#[derive(Debug, Clone, Default)]
pub struct ReconcilerStatus {
    inner: Arc<Mutex<BTreeMap<&'static str, LastRun>>>,
    file: Option<Arc<StatusFileTarget>>,
}

/// Where [`ReconcilerStatus`] writes its snapshots.
#[derive(Debug)]
struct StatusFileTarget {
    path: PathBuf,
    conductor: String,
}

impl ReconcilerStatus {
    /// A status that rewrites `path` (see [`status_file_path`]) after every recorded run;
    /// `conductor` names the writer in the file.
    pub fn with_file(path: PathBuf, conductor: impl Into<String>) -> Self {
        ReconcilerStatus {
            inner: Arc::default(),
            file: Some(Arc::new(StatusFileTarget { path, conductor: conductor.into() })),
        }
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, LastRun> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(
        &self,
        name: &'static str,
        started: SystemTime,
        took: Duration,
        outcome: Result<String, String>,
    ) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let runs = map.get(name).map_or(0, |r| r.runs) + 1;
        map.insert(name, LastRun { started, took, outcome, runs });
        if let Some(target) = &self.file {
            // Written under the lock so that two reconcilers finishing together cannot
            // interleave their temp files or rename an older snapshot over a newer one.
            let file = StatusFile::from_runs(&target.conductor, &map);
            if let Err(error) = file.write_atomically(&target.path) {
                tracing::warn!(path = %target.path.display(), error = %crate::error_chain(&error),
                    "cannot write the reconciler status file");
            }
        }
    }
}

/// The status file's name inside the data directory.
pub const STATUS_FILE_NAME: &str = "status.json";

/// `<data_dir>/status.json`.
pub fn status_file_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATUS_FILE_NAME)
}

/// The contents of the status file: a Ferric file, not an Ironic wire type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusFile {
    /// The conductor (`[conductor] name`) that wrote the file.
    pub conductor: String,
    /// Process id of the writer.
    pub pid: u32,
    /// When the file was written (RFC 3339, UTC).
    pub written_at: String,
    /// One entry per reconciler that has run, by name.
    pub reconcilers: Vec<StatusEntry>,
}

/// One reconciler's last run in the status file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEntry {
    pub name: String,
    /// When the last run started (RFC 3339, UTC).
    pub started_at: String,
    /// How long it took, in seconds.
    pub took_seconds: f64,
    /// `true` when the run completed, `false` when it failed.
    pub ok: bool,
    /// The run's summary, or its error.
    pub outcome: String,
    /// Runs since the conductor started.
    pub runs: u64,
}

/// Why the status file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StatusFileError {
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no status file at {path}: no conductor using this data directory has completed a \
         periodic run (is it running, with this --data-dir or --config?)"
    )]
    Missing { path: PathBuf },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a status file")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn rfc3339(at: OffsetDateTime) -> String {
    // Formatting a valid UTC date as RFC 3339 cannot fail for years 0..=9999.
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

impl StatusFile {
    fn from_runs(conductor: &str, runs: &BTreeMap<&'static str, LastRun>) -> StatusFile {
        let reconcilers = runs
            .iter()
            .map(|(name, run)| {
                let (ok, outcome) = match &run.outcome {
                    Ok(summary) => (true, summary.clone()),
                    Err(error) => (false, error.clone()),
                };
                StatusEntry {
                    name: (*name).to_owned(),
                    started_at: rfc3339(OffsetDateTime::from(run.started)),
                    took_seconds: run.took.as_secs_f64(),
                    ok,
                    outcome,
                    runs: run.runs,
                }
            })
            .collect();
        StatusFile {
            conductor: conductor.to_owned(),
            pid: std::process::id(),
            written_at: rfc3339(OffsetDateTime::now_utc()),
            reconcilers,
        }
    }

    /// Writes the file next to `path` under a temporary name, then renames it over `path`.
    pub fn write_atomically(&self, path: &Path) -> Result<(), StatusFileError> {
        let write_err = |source| StatusFileError::Write { path: path.to_owned(), source };
        let mut text =
            serde_json::to_string_pretty(self).map_err(|e| write_err(std::io::Error::other(e)))?;
        text.push('\n');
        let mut temp = path.as_os_str().to_owned();
        temp.push(format!(".{}.tmp", std::process::id()));
        let temp = PathBuf::from(temp);
        std::fs::write(&temp, text).map_err(write_err)?;
        std::fs::rename(&temp, path).map_err(|source| {
            let _ = std::fs::remove_file(&temp);
            write_err(source)
        })
    }

    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<StatusFile, StatusFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                StatusFileError::Missing { path: path.to_owned() }
            } else {
                StatusFileError::Read { path: path.to_owned(), source }
            }
        })?;
        serde_json::from_str(&text)
            .map_err(|source| StatusFileError::Parse { path: path.to_owned(), source })
    }
}

/// Runs `reconciler` forever (until `shutdown` resolves): one pass, then `interval`.
pub async fn run_periodically(
    reconciler: Arc<dyn Reconciler>,
    status: ReconcilerStatus,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let name = reconciler.name();
    tokio::pin!(shutdown);
    loop {
        let started = SystemTime::now();
        let clock = tokio::time::Instant::now();
        let outcome = tokio::select! {
            outcome = reconciler.run_once() => outcome,
            () = &mut shutdown => return,
        };
        let took = clock.elapsed();
        match &outcome {
            Ok(summary) => tracing::info!(reconciler = name, ?took, %summary, "periodic run"),
            Err(error) => tracing::warn!(reconciler = name, ?took, %error, "periodic run failed"),
        }
        status.record(name, started, took, outcome);
        tokio::select! {
            () = tokio::time::sleep(reconciler.interval()) => {}
            () = &mut shutdown => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Counting {
        calls: AtomicU32,
    }

    #[async_trait::async_trait]
    impl Reconciler for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn interval(&self) -> Duration {
            Duration::from_secs(10)
        }
        async fn run_once(&self) -> Result<String, String> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n % 2 == 0 {
                Err(format!("run {n} failed"))
            } else {
                Ok(format!("run {n} fine"))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn runs_on_its_interval_and_records_the_last_outcome() {
        let status = ReconcilerStatus::default();
        let rec = Arc::new(Counting { calls: AtomicU32::new(0) });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_periodically(rec.clone(), status.clone(), async move {
            let _ = stop_rx.await;
        }));
        // Paused time: sleeping 25 s lets exactly runs at t=0, 10 and 20 happen.
        tokio::time::sleep(Duration::from_secs(25)).await;
        let last = status.snapshot()["counting"].clone();
        assert_eq!(last.runs, 3);
        assert_eq!(last.outcome, Ok("run 3 fine".to_owned()));
        tokio::time::sleep(Duration::from_secs(10)).await;
        let last = status.snapshot()["counting"].clone();
        assert_eq!((last.runs, last.outcome), (4, Err("run 4 failed".to_owned())));
        stop_tx.send(()).unwrap();
        task.await.unwrap();
        assert_eq!(rec.calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn every_recorded_run_rewrites_the_status_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = status_file_path(dir.path());
        let status = ReconcilerStatus::with_file(path.clone(), "conductor-1");
        let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        status.record("power_sync", started, Duration::from_millis(1500), Ok("3 fine".into()));
        status.record("timeouts", started, Duration::ZERO, Err("store down".into()));
        status.record("power_sync", started, Duration::from_millis(250), Ok("4 fine".into()));

        let file = StatusFile::read(&path).unwrap();
        assert_eq!(file.conductor, "conductor-1");
        assert_eq!(file.pid, std::process::id());
        let power = StatusEntry {
            name: "power_sync".into(),
            started_at: "2023-11-14T22:13:20Z".into(),
            took_seconds: 0.25,
            ok: true,
            outcome: "4 fine".into(),
            runs: 2,
        };
        let timeouts = StatusEntry {
            name: "timeouts".into(),
            took_seconds: 0.0,
            ok: false,
            outcome: "store down".into(),
            runs: 1,
            ..power.clone()
        };
        assert_eq!(file.reconcilers, vec![power, timeouts]);
        // Only the file itself is left: the temporary copies were renamed over it.
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [STATUS_FILE_NAME]);
    }

    #[test]
    fn a_damaged_status_file_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = status_file_path(dir.path());
        assert!(matches!(StatusFile::read(&path), Err(StatusFileError::Missing { .. })));
        std::fs::write(&path, "{\"conductor\": 1").unwrap();
        assert!(matches!(StatusFile::read(&path), Err(StatusFileError::Parse { .. })));
    }
}
