//! The writer thread: executes write and zero jobs in order, and hands buffers back.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, Sender};

use super::target::{self, TargetKind};
use super::{SinkError, BLOCK};

/// A heap buffer whose usable part starts at an aligned address, as `O_DIRECT` requires.
/// The backing vector is never resized, so the alignment holds for its whole life.
#[derive(Debug)]
pub(super) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    capacity: usize,
}

impl AlignedBuf {
    pub(super) fn new(capacity: usize, align: usize) -> AlignedBuf {
        let raw = vec![0u8; capacity + align];
        let start = raw.as_ptr().align_offset(align).min(align);
        AlignedBuf { raw, start, capacity }
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.capacity]
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.capacity]
    }
}

/// One unit of work for the writer.
#[derive(Debug)]
pub(super) enum Job {
    /// Write the first `len` bytes of `buf` at `offset`, then return `buf`.
    Write { offset: u64, buf: AlignedBuf, len: usize },
    /// Make `len` bytes at `offset` read back as zeros.
    Zero { offset: u64, len: u64 },
    /// Signal once every earlier job is done.
    Barrier(Sender<()>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct WriterStats {
    pub(super) bytes_written: u64,
    pub(super) bytes_zeroed: u64,
}

#[derive(Debug)]
pub(super) struct Writer {
    file: File,
    direct: Option<File>,
    kind: TargetKind,
    stats: WriterStats,
}

impl Writer {
    pub(super) fn new(file: File, direct: Option<File>, kind: TargetKind) -> Writer {
        Writer { file, direct, kind, stats: WriterStats::default() }
    }

    /// Runs jobs until the queue closes or one fails; the first failure ends the thread,
    /// which the caller notices as a closed queue.
    pub(super) fn run(
        mut self,
        jobs: Receiver<Job>,
        free: Sender<AlignedBuf>,
    ) -> Result<WriterStats, SinkError> {
        for job in jobs {
            match job {
                Job::Write { offset, buf, len } => {
                    let bytes = buf.as_slice().get(..len).ok_or(SinkError::WriterStopped)?;
                    self.write(offset, bytes)?;
                    self.stats.bytes_written += len as u64;
                    // The caller may already be gone (abandoned write); nothing to return to.
                    let _ = free.send(buf);
                }
                Job::Zero { offset, len } => {
                    target::zero_range(&self.file, self.kind, offset, len)
                        .map_err(|source| SinkError::Zero { offset, len, source })?;
                    self.stats.bytes_zeroed += len;
                }
                Job::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
        Ok(self.stats)
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), SinkError> {
        let aligned = offset % BLOCK == 0 && bytes.len() as u64 % BLOCK == 0;
        if let (true, Some(direct)) = (aligned, &self.direct) {
            match direct.write_all_at(bytes, offset) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // The device wants a larger alignment than BLOCK: use the page cache
                    // from now on rather than fail the deployment.
                    tracing::warn!(error = %e, "O_DIRECT write refused; continuing without it");
                    self.direct = None;
                }
                Err(source) => {
                    return Err(SinkError::Write { offset, len: bytes.len() as u64, source })
                }
            }
        }
        self.file.write_all_at(bytes, offset).map_err(|source| SinkError::Write {
            offset,
            len: bytes.len() as u64,
            source,
        })
    }
}
