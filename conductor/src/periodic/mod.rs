//! Periodic reconcilers: tasks with no input that compare the world with the store and
//! fix the difference (power-state sync, wait-state timeouts). Each run re-reads state,
//! is idempotent, and has no internal retry loop — the next run is the retry. The last
//! run of each is kept for `ferric conductor status` and logged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

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

/// The last run of every reconciler, shared with the status endpoint.
#[derive(Debug, Clone, Default)]
pub struct ReconcilerStatus {
    inner: Arc<Mutex<BTreeMap<&'static str, LastRun>>>,
}

impl ReconcilerStatus {
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
}
