//! The target as the kernel sees it: a block device or a regular file, its size, and the
//! two ways a range is made to read back as zeros.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// `_IOR(0x12, 114, size_t)`: the device size in bytes.
const BLKGETSIZE64: u64 = (2 << 30) | (8 << 16) | (0x12 << 8) | 114;
/// `_IO(0x12, 127)`: zero a byte range; the kernel guarantees zeros (offloaded with
/// WRITE ZEROES where the device has it, written otherwise), unlike discard.
const BLKZEROOUT: u64 = (0x12 << 8) | 127;

/// BLKZEROOUT works in 512-byte sectors.
const SECTOR: u64 = 512;

/// What kind of thing the target is; it decides how zeros are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    BlockDevice,
    RegularFile,
}

/// Why the target could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot open target {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("target {path} is neither a block device nor a regular file")]
    NotADiskOrFile { path: PathBuf },
    #[error("cannot read the size of target {path}")]
    Size {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("target {path} is empty")]
    Empty { path: PathBuf },
}

/// An open target.
#[derive(Debug)]
pub struct Target {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) kind: TargetKind,
    pub(crate) size: u64,
}

impl Target {
    /// Opens `path` for writing. A block device is opened exclusively, so a mounted or
    /// otherwise claimed device is refused by the kernel.
    pub fn open(path: &Path) -> Result<Target, TargetError> {
        let open_err = |source| TargetError::Open { path: path.to_owned(), source };
        let meta = std::fs::metadata(path).map_err(open_err)?;
        let file_type = meta.file_type();
        let kind = if file_type.is_block_device() {
            TargetKind::BlockDevice
        } else if file_type.is_file() {
            TargetKind::RegularFile
        } else {
            return Err(TargetError::NotADiskOrFile { path: path.to_owned() });
        };
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if kind == TargetKind::BlockDevice {
            options.custom_flags(libc::O_EXCL | libc::O_CLOEXEC);
        } else {
            options.custom_flags(libc::O_CLOEXEC);
        }
        let file = options.open(path).map_err(open_err)?;
        let size = match kind {
            TargetKind::RegularFile => meta.len(),
            TargetKind::BlockDevice => block_device_size(&file)
                .map_err(|source| TargetError::Size { path: path.to_owned(), source })?,
        };
        if size == 0 {
            return Err(TargetError::Empty { path: path.to_owned() });
        }
        Ok(Target { path: path.to_owned(), file, kind, size })
    }

    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second descriptor on the same target with `O_DIRECT`, for aligned writes that
    /// bypass the page cache.
    pub(crate) fn open_direct(&self) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options.write(true).custom_flags(libc::O_DIRECT | libc::O_CLOEXEC);
        options.open(&self.path)
    }
}

fn block_device_size(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `size`.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Makes `[offset, offset + len)` of the target read back as zeros: `BLKZEROOUT` on a
/// block device (sector-aligned middle; the unaligned edges are written), a punched hole
/// on a regular file (written zeros where the filesystem cannot punch).
pub(crate) fn zero_range(file: &File, kind: TargetKind, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    match kind {
        TargetKind::RegularFile => match punch_hole(file, offset, len) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => write_zeros(file, offset, len),
            other => other,
        },
        TargetKind::BlockDevice => {
            let end = offset + len;
            let start_aligned = offset.div_ceil(SECTOR) * SECTOR;
            let end_aligned = end / SECTOR * SECTOR;
            if start_aligned >= end_aligned {
                return write_zeros(file, offset, len);
            }
            write_zeros(file, offset, start_aligned - offset)?;
            blkzeroout(file, start_aligned, end_aligned - start_aligned)?;
            write_zeros(file, end_aligned, end - end_aligned)
        }
    }
}

fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(off), Ok(length)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: fallocate takes plain integers; the descriptor is open for writing.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            length,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn blkzeroout(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKZEROOUT reads two u64 (start, length) through the pointer.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKZEROOUT as _, range.as_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `len` zero bytes at `offset`, in bounded pieces.
pub(crate) fn write_zeros(file: &File, offset: u64, len: u64) -> io::Result<()> {
    const PIECE: u64 = 1 << 20;
    if len == 0 {
        return Ok(());
    }
    let zeros = vec![0u8; PIECE.min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = PIECE.min(len - done) as usize;
        file.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        // linux/fs.h on x86_64 and aarch64.
        assert_eq!(BLKGETSIZE64, 0x8008_1272);
        assert_eq!(BLKZEROOUT, 0x127f);
    }

    #[test]
    fn refuses_directories_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = Target::open(dir.path()).unwrap_err();
        assert!(matches!(err, TargetError::NotADiskOrFile { .. }), "{err:?}");
        let empty = dir.path().join("empty");
        File::create(&empty).unwrap();
        assert!(matches!(Target::open(&empty).unwrap_err(), TargetError::Empty { .. }));
        let missing = dir.path().join("missing");
        assert!(matches!(Target::open(&missing).unwrap_err(), TargetError::Open { .. }));
    }

    #[test]
    fn zero_range_on_a_file_reads_back_zero_and_keeps_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![0xaau8; 1 << 20]).unwrap();
        let target = Target::open(&path).unwrap();
        assert_eq!((target.kind(), target.size()), (TargetKind::RegularFile, 1 << 20));
        zero_range(&target.file, target.kind, 4096 + 7, 200_000).unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), 1 << 20);
        assert!(back[..4103].iter().all(|&b| b == 0xaa));
        assert!(back[4103..4103 + 200_000].iter().all(|&b| b == 0));
        assert!(back[4103 + 200_000..].iter().all(|&b| b == 0xaa));
    }
}
