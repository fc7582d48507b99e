//! The writer: takes decoded extents, writes data through a bounded queue of large aligned
//! buffers on its own thread, turns zero runs into `BLKZEROOUT` or punched holes, and
//! keeps the first MiB (MBR, GPT header and entries) in memory until [`Sink::finish`] is
//! told the image was verified.
//!
//! Nothing bootable is ever left behind by a failed write: the partition-table areas at
//! both ends of the target are wiped when the sink is opened, and again when a write fails,
//! is not verified, or the sink is dropped without being finished.

mod target;
mod writer;

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

pub(crate) use target::zero_range;
pub use target::{Target, TargetError, TargetKind};

use super::extent::Extent;
use writer::{AlignedBuf, Job, Writer, WriterStats};

/// Bytes at the start of the target held back until the image is verified: the MBR, the
/// primary GPT header and a full 128-entry partition array fit in the first 17 KiB, and
/// 1 MiB also covers the gap where boot loaders keep their first stage.
pub const HOLDBACK_BYTES: u64 = 1 << 20;

/// Size of each partition-table area wiped on failure: the first and the last MiB (the
/// backup GPT lives in the last 33 sectors).
pub const TABLE_AREA_BYTES: u64 = 1 << 20;

/// Zero detection looks at blocks of this size, aligned to target offsets; it is also the
/// alignment `O_DIRECT` writes need.
const BLOCK: u64 = 4096;

/// Zero runs shorter than this are written as data: a hole or a zeroing call per few
/// blocks costs more than writing them.
const MIN_ZERO_RUN: u64 = 64 * 1024;

/// How the writer is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkOptions {
    /// `O_DIRECT` for aligned writes: no copy through the page cache, and no cache
    /// filling the ramdisk's memory. Where the target refuses it, writes fall back to the
    /// page cache.
    pub direct: bool,
    /// Buffers in flight between the caller and the writer thread.
    pub buffers: usize,
    /// Size of each buffer.
    pub buffer_size: usize,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self { direct: true, buffers: 4, buffer_size: 4 << 20 }
    }
}

/// What a sink did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkReport {
    pub target_size: u64,
    /// Data bytes written, the held-back first MiB included.
    pub bytes_written: u64,
    /// Bytes made zero without writing them (zeroing calls or holes).
    pub bytes_zeroed: u64,
    /// Whether the held-back start was written (the image is complete and bootable);
    /// `false` means the table areas were wiped instead.
    pub committed: bool,
}

/// Why the image could not be written to the target.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot use the target")]
    Target(#[from] TargetError),
    #[error(
        "image extent at offset {offset} ({len} bytes) lies beyond the end of the target \
         ({size} bytes)"
    )]
    BeyondEnd { offset: u64, len: u64, size: u64 },
    #[error("writing {len} bytes at offset {offset} of the target failed")]
    Write {
        offset: u64,
        len: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("zeroing {len} bytes at offset {offset} of the target failed")]
    Zero {
        offset: u64,
        len: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("flushing the target to stable storage failed")]
    Sync(#[source] std::io::Error),
    #[error("wiping the partition-table areas of the target failed")]
    Wipe(#[source] std::io::Error),
    #[error("the writer thread stopped unexpectedly")]
    WriterStopped,
}

/// Data bytes gathered for the next write job.
#[derive(Debug)]
struct PendingData {
    offset: u64,
    buf: AlignedBuf,
    len: usize,
}

/// An image being written to one target. See the module documentation.
#[derive(Debug)]
pub struct Sink {
    target: Target,
    options: SinkOptions,
    jobs: Option<SyncSender<Job>>,
    free: Receiver<AlignedBuf>,
    writer: Option<JoinHandle<Result<WriterStats, SinkError>>>,
    allocated: usize,
    current: Option<PendingData>,
    pending_zero: Option<(u64, u64)>,
    hold: Vec<u8>,
    /// One past the last held-back byte an extent covered.
    hold_end: u64,
    finished: bool,
}

impl Sink {
    /// Opens the target, wipes its partition-table areas (so an interrupted write never
    /// leaves the old system bootable alongside a partial new one) and starts the writer.
    pub fn open(path: &std::path::Path, options: SinkOptions) -> Result<Sink, SinkError> {
        let target = Target::open(path)?;
        wipe_table_areas(&target).map_err(SinkError::Wipe)?;
        let direct = match options.direct {
            true => match target.open_direct() {
                Ok(file) => Some(file),
                Err(e) => {
                    tracing::warn!(target = %path.display(), error = %e,
                        "O_DIRECT is not available on the target; writing through the page cache");
                    None
                }
            },
            false => None,
        };
        let file = target.file.try_clone().map_err(|source| {
            SinkError::Target(TargetError::Open { path: path.to_owned(), source })
        })?;
        let buffers = options.buffers.max(1);
        let (jobs_tx, jobs_rx) = mpsc::sync_channel(buffers);
        let (free_tx, free_rx) = mpsc::channel();
        let writer = Writer::new(file, direct, target.kind);
        let handle = std::thread::Builder::new()
            .name("image-writer".into())
            .spawn(move || writer.run(jobs_rx, free_tx))
            .map_err(|source| SinkError::Write { offset: 0, len: 0, source })?;
        let hold_len = HOLDBACK_BYTES.min(target.size) as usize;
        Ok(Sink {
            target,
            options: SinkOptions {
                buffers,
                buffer_size: options.buffer_size.max(BLOCK as usize),
                ..options
            },
            jobs: Some(jobs_tx),
            free: free_rx,
            writer: Some(handle),
            allocated: 0,
            current: None,
            pending_zero: None,
            hold: vec![0; hold_len],
            hold_end: 0,
            finished: false,
        })
    }

    /// The target's size in bytes.
    pub fn target_size(&self) -> u64 {
        self.target.size
    }

    pub fn target_kind(&self) -> TargetKind {
        self.target.kind
    }

    /// Queues one extent. Extents may come in any order; where they overlap, the later
    /// one wins. An extent reaching past the target's end is refused whole.
    pub fn submit(&mut self, extent: Extent<'_>) -> Result<(), SinkError> {
        let size = self.target.size;
        let beyond = || SinkError::BeyondEnd { offset: extent.offset(), len: extent.len(), size };
        let end = extent.end().ok_or_else(beyond)?;
        if end > size {
            return Err(beyond());
        }
        if extent.is_empty() {
            return Ok(());
        }
        let hold_len = self.hold.len() as u64;
        let offset = extent.offset();
        let held = end.min(hold_len).saturating_sub(offset);
        if held > 0 {
            // In range of `hold`: offset < hold_len <= 1 MiB and offset + held <= hold_len.
            let range = offset as usize..(offset + held) as usize;
            match extent {
                Extent::Data { bytes, .. } => {
                    self.hold[range].copy_from_slice(&bytes[..held as usize]);
                }
                Extent::Zero { .. } => self.hold[range].fill(0),
            }
            self.hold_end = self.hold_end.max(offset + held);
        }
        let rest_offset = offset + held;
        match extent {
            Extent::Data { bytes, .. } => self.data(rest_offset, &bytes[held as usize..]),
            Extent::Zero { len, .. } => self.zero(rest_offset, len - held),
        }
    }

    /// Finishes the write. With `verified`, everything queued is written, flushed, then the
    /// held-back start is written and flushed again: only then is the image bootable.
    /// Without it (or when that fails), the table areas at both ends are wiped instead.
    pub fn finish(mut self, verified: bool) -> Result<SinkReport, SinkError> {
        self.finished = true;
        if verified {
            match self.commit() {
                Ok(report) => Ok(report),
                Err(e) => {
                    if let Err(wipe) = wipe_table_areas(&self.target) {
                        tracing::error!(error = %wipe, target = %self.target.path.display(),
                            "wiping the partition-table areas after a failed write failed");
                    }
                    Err(e)
                }
            }
        } else {
            let stats = self.stop_writer().unwrap_or_default();
            wipe_table_areas(&self.target).map_err(SinkError::Wipe)?;
            Ok(SinkReport {
                target_size: self.target.size,
                bytes_written: stats.bytes_written,
                bytes_zeroed: stats.bytes_zeroed,
                committed: false,
            })
        }
    }

    /// Waits until everything submitted so far, except the held-back start, has been
    /// handed to the kernel.
    pub fn drain(&mut self) -> Result<(), SinkError> {
        self.flush_data()?;
        self.flush_zero()?;
        let (done_tx, done_rx) = mpsc::channel();
        self.send(Job::Barrier(done_tx))?;
        match done_rx.recv() {
            Ok(()) => Ok(()),
            Err(_) => Err(self.writer_failure()),
        }
    }

    fn commit(&mut self) -> Result<SinkReport, SinkError> {
        self.flush_data()?;
        self.flush_zero()?;
        let stats = self.stop_writer()?;
        // The rest of the image must be on stable storage before the partition table that
        // makes it bootable is.
        self.target.file.sync_all().map_err(SinkError::Sync)?;
        let held = &self.hold[..self.hold_end as usize];
        use std::os::unix::fs::FileExt;
        self.target.file.write_all_at(held, 0).map_err(|source| SinkError::Write {
            offset: 0,
            len: held.len() as u64,
            source,
        })?;
        self.target.file.sync_all().map_err(SinkError::Sync)?;
        Ok(SinkReport {
            target_size: self.target.size,
            bytes_written: stats.bytes_written + self.hold_end,
            bytes_zeroed: stats.bytes_zeroed,
            committed: true,
        })
    }

    /// Data outside the held-back start: zero runs become zero jobs, the rest is gathered
    /// into buffers.
    fn data(&mut self, offset: u64, bytes: &[u8]) -> Result<(), SinkError> {
        let mut run_start = 0usize;
        let mut run_zero = None::<bool>;
        let mut pos = 0usize;
        while pos < bytes.len() {
            let abs = offset + pos as u64;
            let block_len = ((BLOCK - abs % BLOCK) as usize).min(bytes.len() - pos);
            let is_zero = all_zero(&bytes[pos..pos + block_len]);
            if run_zero.is_some_and(|z| z != is_zero) {
                self.run(offset + run_start as u64, &bytes[run_start..pos], run_zero)?;
                run_start = pos;
            }
            run_zero = Some(is_zero);
            pos += block_len;
        }
        self.run(offset + run_start as u64, &bytes[run_start..], run_zero)
    }

    fn run(&mut self, offset: u64, bytes: &[u8], zero: Option<bool>) -> Result<(), SinkError> {
        match zero {
            None => Ok(()),
            Some(true) if bytes.len() as u64 >= MIN_ZERO_RUN => {
                self.zero(offset, bytes.len() as u64)
            }
            Some(_) => self.push_data(offset, bytes),
        }
    }

    fn push_data(&mut self, mut offset: u64, mut bytes: &[u8]) -> Result<(), SinkError> {
        self.flush_zero()?;
        while !bytes.is_empty() {
            let appendable = self.current.as_ref().is_some_and(|cur| {
                cur.offset + cur.len as u64 == offset && cur.len < cur.buf.capacity()
            });
            if !appendable {
                self.flush_data()?;
                let buf = self.take_buffer()?;
                self.current = Some(PendingData { offset, buf, len: 0 });
            }
            let Some(cur) = self.current.as_mut() else {
                return Err(SinkError::WriterStopped);
            };
            let n = (cur.buf.capacity() - cur.len).min(bytes.len());
            cur.buf.as_mut_slice()[cur.len..cur.len + n].copy_from_slice(&bytes[..n]);
            cur.len += n;
            offset += n as u64;
            bytes = &bytes[n..];
            if cur.len == cur.buf.capacity() {
                self.flush_data()?;
            }
        }
        Ok(())
    }

    fn zero(&mut self, offset: u64, len: u64) -> Result<(), SinkError> {
        if len == 0 {
            return Ok(());
        }
        self.flush_data()?;
        match &mut self.pending_zero {
            Some((start, pending)) if *start + *pending == offset => *pending += len,
            _ => {
                self.flush_zero()?;
                self.pending_zero = Some((offset, len));
            }
        }
        Ok(())
    }

    fn flush_data(&mut self) -> Result<(), SinkError> {
        match self.current.take() {
            Some(PendingData { offset, buf, len }) if len > 0 => {
                self.send(Job::Write { offset, buf, len })
            }
            Some(PendingData { buf, .. }) => {
                self.allocated -= 1;
                drop(buf);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn flush_zero(&mut self) -> Result<(), SinkError> {
        match self.pending_zero.take() {
            Some((offset, len)) => self.send(Job::Zero { offset, len }),
            None => Ok(()),
        }
    }

    fn send(&mut self, job: Job) -> Result<(), SinkError> {
        let sent = self.jobs.as_ref().is_some_and(|jobs| jobs.send(job).is_ok());
        if sent {
            Ok(())
        } else {
            Err(self.writer_failure())
        }
    }

    /// A free buffer: a recycled one, a new one while fewer than `buffers` exist, or else
    /// the next one the writer hands back (this is where a slow disk holds the caller).
    fn take_buffer(&mut self) -> Result<AlignedBuf, SinkError> {
        if let Ok(buf) = self.free.try_recv() {
            return Ok(buf);
        }
        if self.allocated < self.options.buffers {
            self.allocated += 1;
            return Ok(AlignedBuf::new(self.options.buffer_size, BLOCK as usize));
        }
        match self.free.recv() {
            Ok(buf) => Ok(buf),
            Err(_) => Err(self.writer_failure()),
        }
    }

    /// The error that stopped the writer thread.
    fn writer_failure(&mut self) -> SinkError {
        match self.stop_writer() {
            Err(e) => e,
            Ok(_) => SinkError::WriterStopped,
        }
    }

    /// Closes the queue and waits for the writer to drain it.
    fn stop_writer(&mut self) -> Result<WriterStats, SinkError> {
        self.jobs = None;
        match self.writer.take() {
            Some(handle) => handle.join().unwrap_or(Err(SinkError::WriterStopped)),
            None => Err(SinkError::WriterStopped),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.current = None;
        self.pending_zero = None;
        let _ = self.stop_writer();
        match wipe_table_areas(&self.target) {
            Ok(()) => tracing::warn!(target = %self.target.path.display(),
                "image write abandoned; partition-table areas wiped"),
            Err(e) => tracing::error!(target = %self.target.path.display(), error = %e,
                "image write abandoned and wiping the partition-table areas failed"),
        }
    }
}

/// Zeroes the first and the last [`TABLE_AREA_BYTES`] of the target and flushes.
fn wipe_table_areas(target: &Target) -> std::io::Result<()> {
    let head = TABLE_AREA_BYTES.min(target.size);
    target::zero_range(&target.file, target.kind, 0, head)?;
    let tail_start = target.size.saturating_sub(TABLE_AREA_BYTES).max(head);
    target::zero_range(&target.file, target.kind, tail_start, target.size - tail_start)?;
    target.file.sync_all()
}

/// Whether every byte is zero; compares 16 bytes at a time.
fn all_zero(bytes: &[u8]) -> bool {
    // Data usually shows in its first bytes: look there before scanning the block.
    if bytes.iter().take(16).any(|&b| b != 0) {
        return false;
    }
    // Four independent accumulators over 64-byte steps keep the vector units busy.
    let chunks = bytes.chunks_exact(64);
    let tail = chunks.remainder();
    let word = |c: &[u8], i: usize| {
        let mut w = [0u8; 16];
        w.copy_from_slice(&c[i..i + 16]);
        u128::from_ne_bytes(w)
    };
    let acc = chunks.fold([0u128; 4], |[a, b, c, d], chunk| {
        [a | word(chunk, 0), b | word(chunk, 16), c | word(chunk, 32), d | word(chunk, 48)]
    });
    acc.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests;
