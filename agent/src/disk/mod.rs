//! Partition tables on the target disk: GPT and MBR parsing, moving the backup GPT to the
//! end of a disk larger than the image, the config-drive partition, the disk identifier
//! Ironic records, and the table areas wiped when a write fails.
//!
//! Everything works on a `std::fs::File` through positioned reads and writes, so the same
//! code runs on a block device and on a regular file used as a disk in tests. Offsets in
//! tables are logical blocks; the logical block size is always a parameter because a
//! 4Kn disk stores its GPT header at byte 4096, not 512.

pub mod configdrive;
pub mod gpt;
pub mod mbr;
pub mod uuids;

#[cfg(test)]
mod tool_tests;

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;

/// One mebibyte: partition alignment and the size of each wiped table area.
pub const MIB: u64 = 1024 * 1024;

/// A logical block size this module accepts: a power of two from 512 to 4096.
///
/// Anything else is refused rather than guessed, because every table offset depends on it.
pub fn check_sector_size(sector: u64) -> Result<(), TableIoError> {
    if sector.is_power_of_two() && (512..=4096).contains(&sector) {
        Ok(())
    } else {
        Err(TableIoError::SectorSize(sector))
    }
}

/// The byte ranges that hold partition tables: the first MiB (MBR, primary GPT, boot
/// loader gap) and the last MiB (backup GPT). Zeroing both makes the disk unbootable and
/// its table unrecognisable, which is what a failed or unverified write must leave.
///
/// The ranges are clipped to the disk and the second one starts on a sector boundary; on a
/// disk smaller than 2 MiB they overlap.
pub fn table_areas(disk_len: u64, sector: u64) -> [Range<u64>; 2] {
    let sector = sector.max(1);
    let head = 0..disk_len.min(MIB);
    let tail_start = disk_len.saturating_sub(MIB) / sector * sector;
    [head, tail_start..disk_len]
}

/// Writes zeros over both [`table_areas`] and flushes them to the device.
pub fn wipe_table_areas(file: &File, disk_len: u64, sector: u64) -> Result<(), TableIoError> {
    let zeros = vec![0u8; MIB as usize];
    for area in table_areas(disk_len, sector) {
        let mut offset = area.start;
        while offset < area.end {
            // Both values are at most one MiB apart, so the cast is lossless.
            let n = (area.end - offset).min(MIB) as usize;
            write_at(file, &zeros[..n], offset, "zeroing a partition-table area")?;
            offset += n as u64;
        }
    }
    file.sync_data().map_err(|source| TableIoError::Io {
        action: "flushing the wiped partition-table areas",
        offset: 0,
        source,
    })
}

/// Size and logical block size of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Length in bytes.
    pub len: u64,
    /// Logical block size in bytes.
    pub sector: u64,
}

// Linux ioctl numbers from <linux/fs.h>; `libc` does not export all of them.
const BLKRRPART: u64 = 0x125f;
const BLKSSZGET: u64 = 0x1268;
const BLKGETSIZE64: u64 = 0x8008_1272;

/// Length and logical block size of `file`: from the kernel for a block device, the file
/// length and 512-byte sectors for a regular file.
pub fn geometry(file: &File) -> Result<Geometry, TableIoError> {
    let meta = file.metadata().map_err(|source| TableIoError::Io {
        action: "reading the target's metadata",
        offset: 0,
        source,
    })?;
    if !meta.file_type().is_block_device() {
        return Ok(Geometry { len: meta.len(), sector: 512 });
    }
    let fd = file.as_raw_fd();
    let mut len: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `len`.
    let rc = unsafe { libc::ioctl(fd, BLKGETSIZE64 as libc::Ioctl, &mut len as *mut u64) };
    if rc != 0 {
        return Err(TableIoError::Ioctl {
            request: "BLKGETSIZE64",
            source: io::Error::last_os_error(),
        });
    }
    let mut sector: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points at `sector`.
    let rc = unsafe { libc::ioctl(fd, BLKSSZGET as libc::Ioctl, &mut sector as *mut libc::c_int) };
    if rc != 0 {
        return Err(TableIoError::Ioctl {
            request: "BLKSSZGET",
            source: io::Error::last_os_error(),
        });
    }
    let sector = u64::try_from(sector).map_err(|_| TableIoError::SectorSize(0))?;
    check_sector_size(sector)?;
    Ok(Geometry { len, sector })
}

/// Asks the kernel to re-read the partition table of `file` (`BLKRRPART`), so that new or
/// changed partitions get device nodes.
///
/// Returns `Ok(false)` when `file` is not a block device (a regular file used as a disk):
/// there is nothing to re-read. A device that stays busy (a partition is open) is an error.
pub fn reread_partition_table(file: &File) -> Result<bool, TableIoError> {
    let fd = file.as_raw_fd();
    // udev briefly opens partitions after a write; a few short retries ride that out.
    let mut attempts = 0;
    loop {
        // SAFETY: BLKRRPART takes no argument; an fd that is not a block device makes the
        // kernel return ENOTTY.
        let rc = unsafe { libc::ioctl(fd, BLKRRPART as libc::Ioctl, 0) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOTTY) | Some(libc::EINVAL) => return Ok(false),
            Some(libc::EBUSY) if attempts < 5 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            _ => return Err(TableIoError::Ioctl { request: "BLKRRPART", source: err }),
        }
    }
}

/// A failed read, write or ioctl on the disk, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum TableIoError {
    #[error("{action} at byte {offset}")]
    Io {
        action: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("the disk ends before byte {needed} ({action})")]
    ShortDisk { action: &'static str, needed: u64 },
    #[error("ioctl {request} failed")]
    Ioctl {
        request: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("logical block size {0} is not supported (expected a power of two from 512 to 4096)")]
    SectorSize(u64),
}

pub(crate) fn read_at(
    file: &File,
    len: usize,
    offset: u64,
    action: &'static str,
) -> Result<Vec<u8>, TableIoError> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset).map_err(|source| {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            TableIoError::ShortDisk { action, needed: offset.saturating_add(len as u64) }
        } else {
            TableIoError::Io { action, offset, source }
        }
    })?;
    Ok(buf)
}

pub(crate) fn write_at(
    file: &File,
    data: &[u8],
    offset: u64,
    action: &'static str,
) -> Result<(), TableIoError> {
    file.write_all_at(data, offset).map_err(|source| TableIoError::Io { action, offset, source })
}

pub(crate) fn le_u16(buf: &[u8], at: usize) -> u16 {
    let mut b = [0u8; 2];
    if let Some(s) = buf.get(at..at + 2) {
        b.copy_from_slice(s);
    }
    u16::from_le_bytes(b)
}

pub(crate) fn le_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = buf.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

pub(crate) fn le_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = buf.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_areas_cover_first_and_last_mib() {
        let gib = 1024 * MIB;
        assert_eq!(table_areas(gib, 512), [0..MIB, gib - MIB..gib]);
        // A disk length that is not a whole number of MiB still ends the tail at the end.
        let odd = gib + 3 * 4096;
        let [head, tail] = table_areas(odd, 4096);
        assert_eq!(head, 0..MIB);
        assert_eq!(tail.end, odd);
        assert_eq!(tail.start % 4096, 0);
        assert!(odd - tail.start >= MIB);
        // A tiny disk: both areas are clipped to the disk.
        assert_eq!(table_areas(4096, 512), [0..4096, 0..4096]);
    }

    #[test]
    fn sector_sizes() {
        for ok in [512, 1024, 2048, 4096] {
            assert!(check_sector_size(ok).is_ok(), "{ok}");
        }
        for bad in [0, 1, 256, 520, 8192] {
            assert!(check_sector_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wipe_zeroes_both_ends_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let len = 4 * MIB;
        std::fs::write(&path, vec![0xabu8; len as usize]).unwrap();
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        wipe_table_areas(&file, len, 512).unwrap();
        let data = std::fs::read(&path).unwrap();
        let mib = MIB as usize;
        assert!(data[..mib].iter().all(|&b| b == 0));
        assert!(data[mib..3 * mib].iter().all(|&b| b == 0xab));
        assert!(data[3 * mib..].iter().all(|&b| b == 0));
    }

    #[test]
    fn regular_file_geometry_and_reread() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(10 * MIB).unwrap();
        assert_eq!(geometry(&file).unwrap(), Geometry { len: 10 * MIB, sector: 512 });
        assert!(!reread_partition_table(&file).unwrap());
    }
}
