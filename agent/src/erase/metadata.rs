//! Metadata erase of one device: find every signature `wipefs --all` would remove and zero
//! the sectors that hold them, leaving the data in between alone.
//!
//! Each probe below knows where one kind of metadata keeps its magic (the places libblkid
//! looks, plus the backup copies a tool could recover from: btrfs mirror superblocks,
//! both LUKS2 headers, all four ZFS labels, the FAT32 backup boot sector, every ISO 9660
//! volume descriptor). A probe reports the magic's offset and the byte range to zero,
//! which is the magic rounded out to whole logical sectors — or, for partition tables,
//! the header and its entry array. Probing is repeated after zeroing until nothing is
//! found, so a signature only visible once another is gone is caught too.
//!
//! Everything read from the device is untrusted: offsets computed from it are bounded by
//! the device's length and never index past a buffer.

mod probes;

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::disk::{self, Geometry, TableIoError};

pub use probes::{probe, Hit};

/// A signature found and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The name `wipefs`/`blkid` give it (`ext4`, `gpt`, `linux_raid_member`, …).
    pub name: &'static str,
    /// Byte offset of the magic on the device.
    pub offset: u64,
}

/// A partition found in the device's own table, probed as a window of the device so
/// that its signatures go even when the kernel has no node for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePartition {
    pub number: u32,
    pub bytes: Range<u64>,
}

/// What a metadata erase did to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataOutcome {
    /// Signatures removed, in the order found: inside the partitions of the device's
    /// table first (highest number first), then the device's own.
    pub removed: Vec<Signature>,
    /// Bytes written as zeros.
    pub bytes_zeroed: u64,
    /// Bytes read back from the medium (after flushing the cache) and found zero.
    pub bytes_verified: u64,
    /// Whether the kernel re-read the partition table (false for regular files and for
    /// devices without a table of their own, such as partitions).
    pub partition_table_reread: bool,
    /// Why re-reading the table failed, when it did; the erase itself is complete.
    pub reread_error: Option<String>,
}

/// Why a metadata erase failed.
#[derive(Debug, thiserror::Error)]
pub enum MetadataEraseError {
    #[error("cannot open {} for writing", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the size of the device")]
    Geometry(#[source] TableIoError),
    #[error("reading {len} bytes at byte {offset}")]
    Read {
        offset: u64,
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error("zeroing bytes {start}..{end}")]
    Write {
        start: u64,
        end: u64,
        #[source]
        source: io::Error,
    },
    #[error("flushing the zeroed sectors")]
    Sync(#[source] io::Error),
    #[error("bytes {start}..{end} do not read back as zeros after the erase")]
    NotZero { start: u64, end: u64 },
    #[error("signatures still found after {passes} passes: {names}")]
    Persistent { passes: u32, names: String },
}

/// Passes of probe-and-zero before a signature that keeps coming back is an error.
const MAX_PASSES: u32 = 4;

// <linux/fs.h>: _IO(0x12, 97).
const BLKFLSBUF: u64 = 0x1261;

/// Opens `path` (a block device or a regular file) and erases its metadata.
pub fn erase_path(path: &Path) -> Result<MetadataOutcome, MetadataEraseError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| MetadataEraseError::Open { path: path.to_owned(), source })?;
    erase_file(&file)
}

/// Erases the metadata of an open device or file.
pub fn erase_file(file: &File) -> Result<MetadataOutcome, MetadataEraseError> {
    let geometry = disk::geometry(file).map_err(MetadataEraseError::Geometry)?;
    // A partition written through its own node leaves stale pages in the whole disk's
    // cache (and the reverse); drop them so the probes see what is on the medium.
    drop_cached_pages(file);
    let mut windows: Vec<Range<u64>> =
        table_partitions(file, geometry).into_iter().rev().map(|p| p.bytes).collect();
    windows.push(0..geometry.len);
    let mut removed = Vec::new();
    let mut zeroed = Vec::new();
    for window in windows {
        let (found, ranges) = erase_window(file, geometry, window)?;
        removed.extend(found);
        zeroed.extend(ranges);
    }
    let zeroed = merge(zeroed, geometry.len);
    // One flush for the whole device: the probes above read the zeros back through the
    // page cache, the read-back below from the medium.
    if !zeroed.is_empty() {
        file.sync_all().map_err(MetadataEraseError::Sync)?;
    }
    let bytes_zeroed = zeroed.iter().map(|r| r.end - r.start).sum();
    let bytes_verified = verify_zeroed(file, &zeroed)?;
    let (partition_table_reread, reread_error) = if removed.is_empty() {
        (false, None)
    } else {
        match disk::reread_partition_table(file) {
            Ok(done) => (done, None),
            Err(e) => (false, Some(crate::erase::devices::error_chain(&e))),
        }
    };
    Ok(MetadataOutcome {
        removed,
        bytes_zeroed,
        bytes_verified,
        partition_table_reread,
        reread_error,
    })
}

/// Probes `window` and zeroes what it finds until a probe finds nothing.
fn erase_window(
    file: &File,
    geometry: Geometry,
    window: Range<u64>,
) -> Result<(Vec<Signature>, Vec<Range<u64>>), MetadataEraseError> {
    let mut removed = Vec::new();
    let mut zeroed = Vec::new();
    let mut passes = 0u32;
    loop {
        let hits = probe(file, geometry, window.clone())?;
        if hits.is_empty() {
            return Ok((removed, zeroed));
        }
        passes += 1;
        if passes > MAX_PASSES {
            let mut names: Vec<&str> = hits.iter().map(|h| h.signature.name).collect();
            names.dedup();
            return Err(MetadataEraseError::Persistent {
                passes: MAX_PASSES,
                names: names.join(", "),
            });
        }
        let ranges =
            merge(hits.iter().flat_map(|h| h.zero.iter().cloned()).collect(), geometry.len);
        for r in &ranges {
            zero_range(file, r)?;
        }
        zeroed.extend(ranges);
        removed.extend(hits.into_iter().map(|h| h.signature));
    }
}

/// Reads every zeroed range back from the medium and checks it is zero; returns the
/// bytes checked.
fn verify_zeroed(file: &File, ranges: &[Range<u64>]) -> Result<u64, MetadataEraseError> {
    drop_cached_pages(file);
    let mut checked = 0u64;
    for r in ranges {
        let mut at = r.start;
        while at < r.end {
            // Each read is at most 1 MiB, so the cast is lossless.
            let n = (r.end - at).min(1 << 20) as usize;
            let mut buf = vec![0u8; n];
            file.read_exact_at(&mut buf, at).map_err(|source| MetadataEraseError::Read {
                offset: at,
                len: n,
                source,
            })?;
            if buf.iter().any(|&b| b != 0) {
                return Err(MetadataEraseError::NotZero { start: r.start, end: r.end });
            }
            at += n as u64;
            checked += n as u64;
        }
    }
    Ok(checked)
}

/// The partitions of the device's GPT, or of its MBR (primary entries; the extended
/// container itself holds no filesystem). A damaged or absent table yields none: the
/// device's own probes still remove whatever table signatures are left.
pub fn table_partitions(file: &File, geometry: Geometry) -> Vec<TablePartition> {
    let sector = geometry.sector.max(512);
    if let Ok(Some(gpt)) = crate::disk::gpt::Gpt::read(file, geometry.len, sector) {
        return gpt
            .partitions()
            .iter()
            .map(|p| TablePartition {
                number: p.number,
                bytes: p.start_bytes(sector)..p.start_bytes(sector) + p.len_bytes(sector),
            })
            .filter(|p| p.bytes.end <= geometry.len)
            .collect();
    }
    match crate::disk::mbr::Mbr::read(file) {
        // A boot sector of a filesystem also ends in 0x55AA; its "entries" are code, which
        // validation (inside the disk, disjoint, a real boot flag) rejects.
        Ok(Some((mbr, _)))
            if !mbr.is_protective()
                && mbr.validate(geometry.len / sector).is_ok()
                && mbr.entries.iter().all(|e| e.boot == 0 || e.boot == 0x80) =>
        {
            mbr.partitions()
                .iter()
                .filter(|p| !p.entry.is_extended())
                .map(|p| TablePartition {
                    number: u32::from(p.number),
                    bytes: p.start_bytes(sector)..p.start_bytes(sector) + p.len_bytes(sector),
                })
                .filter(|p| p.bytes.start < p.bytes.end && p.bytes.end <= geometry.len)
                .collect()
        }
        _ => Vec::new(),
    }
}

fn drop_cached_pages(file: &File) {
    // SAFETY: BLKFLSBUF takes no argument; on anything but a block device the kernel
    // answers ENOTTY, which is ignored like any other failure: it only costs freshness.
    let _ = unsafe { libc::ioctl(file.as_raw_fd(), BLKFLSBUF as libc::Ioctl, 0) };
}

/// Sorts, clips to the device and merges overlapping or touching ranges.
fn merge(mut ranges: Vec<Range<u64>>, len: u64) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < len.min(r.end));
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        let r = r.start..r.end.min(len);
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

fn zero_range(file: &File, r: &Range<u64>) -> Result<(), MetadataEraseError> {
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK.min(r.end - r.start) as usize];
    let mut at = r.start;
    while at < r.end {
        // At most CHUNK, so the cast is lossless.
        let n = (r.end - at).min(CHUNK) as usize;
        file.write_all_at(&zeros[..n], at).map_err(|source| MetadataEraseError::Write {
            start: r.start,
            end: r.end,
            source,
        })?;
        at += n as u64;
    }
    Ok(())
}

/// Length and logical sector size of an open device or file, as the probes use them.
pub fn geometry_of(file: &File) -> Result<Geometry, MetadataEraseError> {
    disk::geometry(file).map_err(MetadataEraseError::Geometry)
}

#[cfg(test)]
mod tests;
