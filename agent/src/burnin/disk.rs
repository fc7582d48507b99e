//! `burnin_disk`: every disk read from end to end in a scattered order, all disks at
//! once, `agent_burnin_fio_disk_loops` times (default 4) or, when
//! `agent_burnin_fio_disk_runtime` is above 0, over and over until that many seconds
//! have passed (as `fio --time_based` does).
//!
//! ironic-python-agent runs `fio --rw=readwrite --verify=crc32c` here, which overwrites
//! the disks. This pass only reads, through `O_DIRECT` where the device allows it so
//! that the medium is read rather than the page cache: a disk that cannot return every
//! block fails the step, and no disk content changes, so the step is safe on any disk
//! the host has, including the one the ramdisk came from.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::host::HostRoot;
use crate::inventory::disks;

use super::{count_setting, number_setting, BurninError};

/// Bytes per read.
pub const BLOCK: u64 = 1 << 20;
/// `O_DIRECT` buffers must be aligned to the logical block size; a page covers every
/// size Linux supports.
const ALIGN: usize = 4096;

/// Where and why one disk's burn-in stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFailure {
    pub device: String,
    pub offset: u64,
    pub reason: String,
}

impl std::fmt::Display for DiskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}: {}", self.device, self.offset, self.reason)
    }
}

/// One disk's pass record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskReport {
    pub bytes_read: u64,
    pub passes: u64,
    pub duration_s: f64,
    /// Whether the reads bypassed the page cache.
    pub direct_io: bool,
}

/// When to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Loops(u64),
    Runtime(Duration),
}

/// Block `i` of a pass over `blocks` blocks, in a scattered order that still visits
/// every block once: a step coprime with the count walks the whole ring.
pub fn scattered(i: u64, blocks: u64, stride: u64) -> u64 {
    ((u128::from(i) * u128::from(stride)) % u128::from(blocks.max(1))) as u64
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A stride coprime with `blocks`, near the golden ratio of it so neighbours in the
/// walk are far apart on the disk.
pub fn stride_for(blocks: u64) -> u64 {
    if blocks <= 2 {
        return 1;
    }
    let mut s = ((blocks as f64) * 0.618_033_988_7) as u64 | 1;
    while gcd(s, blocks) != 1 {
        s += 2;
    }
    s
}

fn open(path: &Path) -> io::Result<(File, bool)> {
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(path);
    match direct {
        Ok(f) => Ok((f, true)),
        // Some file systems (tmpfs) refuse O_DIRECT; read through the cache there.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            Ok((std::fs::OpenOptions::new().read(true).open(path)?, false))
        }
        Err(e) => Err(e),
    }
}

/// Reads the disk at `path` (`device` is its host name, for messages) under `limit`.
pub fn read_disk(device: &str, path: &Path, limit: Limit) -> Result<DiskReport, DiskFailure> {
    let fail =
        |offset: u64, reason: String| DiskFailure { device: device.to_owned(), offset, reason };
    let (file, direct_io) = open(path).map_err(|e| fail(0, format!("cannot open: {e}")))?;
    let size =
        crate::disk::geometry(&file).map_err(|e| fail(0, crate::executor::error_chain(&e)))?.len;
    let blocks = size.div_ceil(BLOCK);
    let stride = stride_for(blocks);
    let mut raw = vec![0u8; BLOCK as usize + ALIGN];
    let skew = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
    let Some(buf) = raw.get_mut(skew..skew + BLOCK as usize) else {
        return Err(fail(0, "cannot align the read buffer".to_owned()));
    };
    let started = Instant::now();
    let mut passes = 0u64;
    let mut bytes_read = 0u64;
    'passes: loop {
        match limit {
            Limit::Loops(n) if passes >= n => break,
            Limit::Runtime(d) if started.elapsed() >= d => break,
            _ => {}
        }
        for i in 0..blocks {
            let offset = scattered(i, blocks, stride) * BLOCK;
            let want = (size - offset).min(BLOCK) as usize;
            let Some(target) = buf.get_mut(..want) else { break };
            let mut done = 0usize;
            while done < want {
                let Some(rest) = target.get_mut(done..) else { break };
                match file.read_at(rest, offset + done as u64) {
                    Ok(0) => {
                        return Err(fail(
                            offset + done as u64,
                            format!("the disk ended early (expected {size} bytes)"),
                        ))
                    }
                    Ok(n) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(fail(offset + done as u64, format!("read failed: {e}"))),
                }
            }
            bytes_read += want as u64;
            if let Limit::Runtime(d) = limit {
                if started.elapsed() >= d {
                    passes += 1;
                    break 'passes;
                }
            }
        }
        passes += 1;
    }
    Ok(DiskReport { bytes_read, passes, duration_s: started.elapsed().as_secs_f64(), direct_io })
}

/// The `burnin_disk` step over every disk of `host`, all at once; the result is keyed by
/// device name.
pub fn burnin_disk(host: &HostRoot, node: Option<&Value>) -> Result<Value, BurninError> {
    let loops = count_setting(node, "agent_burnin_fio_disk_loops", 4)?;
    let runtime = number_setting(node, "agent_burnin_fio_disk_runtime", 0.0)?;
    let limit = if runtime > 0.0 {
        Limit::Runtime(Duration::from_secs_f64(runtime))
    } else {
        Limit::Loops(loops)
    };
    let all = disks::collect(host, false).map_err(BurninError::Inventory)?;
    if all.is_empty() {
        return Err(BurninError::NoDisks);
    }
    let outcomes: Vec<(String, Result<DiskReport, DiskFailure>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = all
            .iter()
            .map(|d| {
                let path = host.path(&d.name);
                let name = d.name.clone();
                (name.clone(), scope.spawn(move || read_disk(&name, &path, limit)))
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| {
                let outcome = h.join().unwrap_or_else(|_| {
                    Err(DiskFailure {
                        device: name.clone(),
                        offset: 0,
                        reason: "the reader thread panicked".to_owned(),
                    })
                });
                (name, outcome)
            })
            .collect()
    });
    let mut result = Map::new();
    let mut failures = Vec::new();
    for (name, outcome) in outcomes {
        match outcome {
            Ok(report) => {
                result.insert(name, serde_json::to_value(report).unwrap_or(Value::Null));
            }
            Err(f) => failures.push(f),
        }
    }
    if !failures.is_empty() {
        return Err(BurninError::Disks { failures });
    }
    Ok(Value::Object(result))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{DiskSpec, HostBuilder};
    use serde_json::json;

    #[test]
    fn a_scattered_pass_visits_every_block_once() {
        for blocks in [1u64, 2, 3, 10, 64, 97, 1000] {
            let stride = stride_for(blocks);
            let mut seen: Vec<u64> = (0..blocks).map(|i| scattered(i, blocks, stride)).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..blocks).collect::<Vec<_>>(), "{blocks} blocks");
        }
        // Neighbours in the walk are not neighbours on the disk.
        let stride = stride_for(1000);
        assert!(scattered(1, 1000, stride).abs_diff(scattered(0, 1000, stride)) > 100);
    }

    #[test]
    fn every_disk_is_read_whole_for_each_loop() {
        let dir = tempfile::tempdir().unwrap();
        let built = HostBuilder::new()
            .add_disk(DiskSpec::sata("sda", "0000:00:1f.2", 5 * BLOCK + 4096).backing_file())
            .add_disk(DiskSpec::sata("sdb", "0000:00:1f.2", 3 * BLOCK).backing_file())
            .build(dir.path())
            .unwrap();
        let node = json!({"driver_info": {"agent_burnin_fio_disk_loops": "2"}});
        let result = burnin_disk(&built.host, Some(&node)).unwrap();
        assert_eq!(result["/dev/sda"]["bytes_read"], 2 * (5 * BLOCK + 4096));
        assert_eq!(result["/dev/sda"]["passes"], 2);
        assert_eq!(result["/dev/sdb"]["bytes_read"], 2 * 3 * BLOCK);
        assert_eq!(result.as_object().unwrap().len(), 2);
        // Defaults: four loops.
        let result = burnin_disk(&built.host, None).unwrap();
        assert_eq!(result["/dev/sdb"]["passes"], 4);
    }

    #[test]
    fn a_runtime_repeats_passes_until_it_is_over() {
        let dir = tempfile::tempdir().unwrap();
        let built = HostBuilder::new()
            .add_disk(DiskSpec::sata("sda", "0000:00:1f.2", BLOCK).backing_file())
            .build(dir.path())
            .unwrap();
        let node = json!({"driver_info": {"agent_burnin_fio_disk_runtime": 0.2,
                                          "agent_burnin_fio_disk_loops": 1}});
        let result = burnin_disk(&built.host, Some(&node)).unwrap();
        assert!(result["/dev/sda"]["passes"].as_u64().unwrap() > 1, "{result}");
        assert!(result["/dev/sda"]["duration_s"].as_f64().unwrap() >= 0.2, "{result}");
    }

    #[test]
    fn a_disk_that_cannot_be_read_fails_the_step_by_name() {
        let dir = tempfile::tempdir().unwrap();
        // sdb is listed in sysfs but its device node is missing.
        let built = HostBuilder::new()
            .add_disk(DiskSpec::sata("sda", "0000:00:1f.2", BLOCK).backing_file())
            .add_disk(DiskSpec::sata("sdb", "0000:00:1f.2", BLOCK))
            .build(dir.path())
            .unwrap();
        let err = burnin_disk(&built.host, None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("disk burn-in failed on /dev/sdb at byte 0: cannot open"),
            "{text}"
        );
        assert!(!text.contains("/dev/sda"), "{text}");

        let empty = tempfile::tempdir().unwrap();
        let host = HostRoot::new(empty.path());
        assert!(matches!(burnin_disk(&host, None), Err(BurninError::NoDisks)));
    }
}
