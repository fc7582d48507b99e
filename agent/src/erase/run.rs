//! Whole erase steps over the host's devices: which devices, in what order, with what
//! concurrency, and the step result keyed by device name.
//!
//! The result of every step maps each erased device (`/dev/sda`) to its [`DiskReport`]
//! (with the signatures a metadata erase removed under `signatures_removed`); devices set
//! aside by [`devices::select`] are listed under `skipped_devices` with their reason.
//! While a step runs, `{"erasing": {"/dev/sda": {"done": n, "total": m}, ...}}` is
//! published through the progress sink about every two seconds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::devices::{self, DeviceSelectionError, EraseDevice, Selection};
use super::full::{self, FullEraseError, FullEraseOptions};
use super::metadata::{self, MetadataEraseError};
use super::report::{DiskReport, EraseMethod, Verification};
use crate::host::HostRoot;

/// The agent's own erase settings (kernel command line / flags); the node's
/// `driver_internal_info` adds the per-node ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EraseConfig {
    /// `ipa-enable-discard-erase`: allow a verified secure discard before zero-fill.
    pub enable_discard_erase: bool,
    /// `ipa-guard-special-filesystems`: refuse disks holding special filesystems unless
    /// the node allows wiping them.
    pub guard_special_filesystems: bool,
}

impl Default for EraseConfig {
    fn default() -> Self {
        Self { enable_discard_erase: false, guard_special_filesystems: true }
    }
}

/// Why an erase step failed; the text becomes the command's error message.
#[derive(Debug, thiserror::Error)]
pub enum EraseStepError {
    #[error("erase steps are not available in this build")]
    NotAvailable,
    #[error("cannot choose the devices to erase")]
    Devices(#[source] DeviceSelectionError),
    #[error("invalid erase options")]
    Options(#[source] FullEraseError),
    #[error("driver_internal_info.disk_erasure_concurrency must be a positive integer, not {0}")]
    Concurrency(String),
    /// One or more devices failed; each is named with its error chain.
    #[error("failed to erase the following devices: {}", FailureList(.0))]
    Failed(Vec<(String, String)>),
    #[error("cannot empty the persistent store {path}")]
    Pstore {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<DeviceSelectionError> for EraseStepError {
    fn from(e: DeviceSelectionError) -> Self {
        EraseStepError::Devices(e)
    }
}

struct FailureList<'a>(&'a [(String, String)]);

impl std::fmt::Display for FailureList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (dev, why)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{dev}: {why}")?;
        }
        Ok(())
    }
}

/// Interim progress of a running step, published as the command's result.
pub type ProgressSink<'a> = &'a (dyn Fn(Value) + Sync);

/// How often progress is published while disks are being erased.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// `erase_devices_metadata` over every erasable device of `host`; the result is keyed by
/// device name. Disks are done [`METADATA_CONCURRENCY`] at a time unless the node's
/// `disk_erasure_concurrency` says otherwise.
pub fn erase_devices_metadata(
    host: &HostRoot,
    node: Option<&Value>,
    config: &EraseConfig,
    progress: ProgressSink<'_>,
) -> Result<Value, EraseStepError> {
    let selection = devices::select(host, node, config)?;
    let concurrency = node_concurrency(node)?.unwrap_or(METADATA_CONCURRENCY);
    let results =
        erase_each(&selection.devices, concurrency, progress, PROGRESS_INTERVAL, |dev, p| {
            metadata_erase_device(dev, p).map_err(|e| devices::error_chain(&e))
        });
    finish(&selection, results)
}

/// `erase_devices`: every erasable disk with the fastest verified method.
pub fn erase_devices(
    host: &HostRoot,
    node: Option<&Value>,
    config: &EraseConfig,
    progress: ProgressSink<'_>,
) -> Result<Value, EraseStepError> {
    let options = FullEraseOptions::from_node(node, config).map_err(EraseStepError::Options)?;
    let selection = devices::select(host, node, config)?;
    let concurrency = erasure_concurrency(node)?;
    let results =
        erase_each(&selection.devices, concurrency, progress, PROGRESS_INTERVAL, |dev, p| {
            full::erase_disk(&dev.name, &dev.path, &options, p)
                .map(|report| (report, json!({})))
                .map_err(|e| devices::error_chain(&e))
        });
    finish(&selection, results)
}

/// `erase_devices_express`: hardware erase where the disk has one, metadata elsewhere.
pub fn erase_devices_express(
    host: &HostRoot,
    node: Option<&Value>,
    config: &EraseConfig,
    progress: ProgressSink<'_>,
) -> Result<Value, EraseStepError> {
    let options = FullEraseOptions::from_node(node, config).map_err(EraseStepError::Options)?;
    let selection = devices::select(host, node, config)?;
    let concurrency = erasure_concurrency(node)?;
    let results =
        erase_each(&selection.devices, concurrency, progress, PROGRESS_INTERVAL, |dev, p| {
            match full::express_erase_disk(&dev.name, &dev.path, &options, p) {
                Ok(Some(report)) => Ok((report, json!({}))),
                Ok(None) => {
                    let (mut report, extra) =
                        metadata_erase_device(dev, p).map_err(|e| devices::error_chain(&e))?;
                    report.fallbacks.push("hardware erase: none available or usable".to_owned());
                    Ok((report, extra))
                }
                Err(e) => Err(devices::error_chain(&e)),
            }
        });
    finish(&selection, results)
}

/// Disks whose metadata is erased at once when the node does not say: a metadata erase
/// is a few dozen small reads and writes per disk, bound by each disk's latency, so
/// disks are best done side by side.
pub const METADATA_CONCURRENCY: usize = 8;

/// `driver_internal_info.disk_erasure_concurrency`: how many disks are erased at once
/// (default 1, as in IPA). Accepts a positive integer or a string holding one.
pub fn erasure_concurrency(node: Option<&Value>) -> Result<usize, EraseStepError> {
    Ok(node_concurrency(node)?.unwrap_or(1))
}

/// `disk_erasure_concurrency` when the node sets it.
fn node_concurrency(node: Option<&Value>) -> Result<Option<usize>, EraseStepError> {
    let Some(v) = node
        .and_then(|n| n.get("driver_internal_info"))
        .and_then(|d| d.get("disk_erasure_concurrency"))
        .filter(|v| !v.is_null())
    else {
        return Ok(None);
    };
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match n.and_then(|n| usize::try_from(n).ok()) {
        Some(n) if n >= 1 => Ok(Some(n)),
        _ => Err(EraseStepError::Concurrency(v.to_string())),
    }
}

/// Metadata erase of one device: its partitions in reverse name order (a partition's
/// node goes away once the disk's table is gone), then the device itself.
pub fn metadata_erase_device(
    dev: &EraseDevice,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(DiskReport, Value), MetadataEraseError> {
    let started = Instant::now();
    let mut parts: Vec<_> = dev.partitions.iter().collect();
    parts.sort_by(|a, b| b.name.cmp(&a.name));
    let total = parts.len() as u64 + 1;
    // Progress is in the device's bytes, like the other methods: each node erased counts
    // for an equal share.
    let size = dev.size_bytes;
    let share = |done: u64| {
        u64::try_from(u128::from(size) * u128::from(done) / u128::from(total)).unwrap_or(size)
    };
    let mut targets: Vec<(&str, &std::path::Path)> =
        parts.iter().map(|p| (p.name.as_str(), p.path.as_path())).collect();
    targets.push((&dev.name, &dev.path));
    let mut bytes = 0u64;
    let mut checked = 0u64;
    let mut removed = Vec::new();
    let mut reread = Vec::new();
    progress(0, size);
    for (done, (name, path)) in (1u64..).zip(targets) {
        let outcome = metadata::erase_path(path)?;
        bytes += outcome.bytes_zeroed;
        checked += outcome.bytes_verified;
        for s in &outcome.removed {
            removed.push(json!({"device": name, "name": s.name, "offset": s.offset}));
        }
        if let Some(e) = outcome.reread_error {
            reread.push(json!({"device": name, "error": e}));
        }
        progress(share(done), size);
    }
    let report = DiskReport {
        device: dev.name.clone(),
        method: EraseMethod::Metadata,
        duration_s: started.elapsed().as_secs_f64(),
        bytes,
        passes: 1,
        verification: Verification::Verified {
            samples: u32::try_from(total).unwrap_or(u32::MAX),
            bytes_checked: checked,
        },
        fallbacks: Vec::new(),
    };
    let mut extra = json!({"signatures_removed": removed});
    if !reread.is_empty() {
        extra["partition_table_reread_failed"] = Value::Array(reread);
    }
    Ok((report, extra))
}

/// What one device's erase produced: its report and extra keys merged into it.
pub type DeviceResult = Result<(DiskReport, Value), String>;

/// Runs `erase` over `devices` on `concurrency` threads, publishing
/// `{"erasing": {name: {"done", "total"}}}` every `interval` and once at the start and
/// the end. Results come back in the order of `devices`.
pub fn erase_each<F>(
    devices: &[EraseDevice],
    concurrency: usize,
    progress: ProgressSink<'_>,
    interval: Duration,
    erase: F,
) -> Vec<(String, DeviceResult)>
where
    F: Fn(&EraseDevice, &(dyn Fn(u64, u64) + Sync)) -> DeviceResult + Sync,
{
    let state: Mutex<BTreeMap<String, (u64, u64)>> =
        Mutex::new(devices.iter().map(|d| (d.name.clone(), (0, d.size_bytes))).collect());
    let publish = || {
        let snapshot = match state.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let erasing: Map<String, Value> = snapshot
            .into_iter()
            .map(|(k, (done, total))| (k, json!({"done": done, "total": total})))
            .collect();
        progress(json!({"erasing": erasing}));
    };
    let results: Vec<Mutex<Option<DeviceResult>>> =
        devices.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let workers = concurrency.clamp(1, devices.len().max(1));
    publish();
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let (state, results, next, erase) = (&state, &results, &next, &erase);
            scope.spawn(move || {
                // Dropping the sender on exit (normal or panic) tells the publisher.
                let _done = done_tx;
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(dev) = devices.get(i) else { break };
                    let update = |done: u64, total: u64| {
                        if let Ok(mut s) = state.lock() {
                            s.insert(dev.name.clone(), (done, total));
                        }
                    };
                    let result = erase(dev, &update);
                    if let Some(Ok(mut slot)) = results.get(i).map(|m| m.lock()) {
                        *slot = Some(result);
                    }
                }
            });
        }
        drop(done_tx);
        // Publish on a timer until every worker has hung up.
        while done_rx.recv_timeout(interval) == Err(mpsc::RecvTimeoutError::Timeout) {
            publish();
        }
    });
    publish();
    devices
        .iter()
        .zip(results)
        .map(|(d, slot)| {
            let result = slot
                .into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err("the erase thread stopped without a result".to_owned()));
            (d.name.clone(), result)
        })
        .collect()
}

/// The step result, or the aggregated failure naming every failed device.
fn finish(
    selection: &Selection,
    results: Vec<(String, DeviceResult)>,
) -> Result<Value, EraseStepError> {
    let mut out = Map::new();
    let mut failures = Vec::new();
    for (name, result) in results {
        match result {
            Ok((report, extra)) => {
                let mut v = serde_json::to_value(&report).unwrap_or(Value::Null);
                if let (Value::Object(obj), Value::Object(extra)) = (&mut v, extra) {
                    obj.extend(extra);
                }
                out.insert(name, v);
            }
            Err(why) => failures.push((name, why)),
        }
    }
    if !failures.is_empty() {
        return Err(EraseStepError::Failed(failures));
    }
    if !selection.excluded.is_empty() {
        let skipped: Map<String, Value> = selection
            .excluded
            .iter()
            .map(|e| (e.name.clone(), Value::String(e.reason.to_string())))
            .collect();
        out.insert("skipped_devices".to_owned(), Value::Object(skipped));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests;
