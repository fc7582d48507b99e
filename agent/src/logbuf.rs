//! An in-memory copy of the agent's own log, so `log.collect_system_logs` can hand it to
//! the conductor: a ramdisk has no persistent journal, and after a failure the operator
//! needs to see what the agent did.
//!
//! [`LogBuffer`] keeps the most recent formatted lines up to a byte budget; [`TeeWriter`]
//! is a `tracing_subscriber` writer that sends each event to stderr and to the buffer.
//!
//! ```no_run
//! use std::sync::Arc;
//! use ferric_agent::logbuf::{LogBuffer, TeeWriter};
//! let buffer = Arc::new(LogBuffer::new(LogBuffer::DEFAULT_CAPACITY));
//! // Without colour codes, so the copy handed to the operator reads as plain text.
//! tracing_subscriber::fmt()
//!     .with_writer(TeeWriter::new(buffer.clone()))
//!     .with_ansi(false)
//!     .init();
//! ```

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// The most recent log output, bounded in bytes. Whole chunks (one per event) are
/// evicted oldest first.
#[derive(Debug)]
pub struct LogBuffer {
    capacity: usize,
    inner: Mutex<Chunks>,
}

#[derive(Debug, Default)]
struct Chunks {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
    dropped: u64,
}

impl LogBuffer {
    /// 2 MiB: hours of normal agent logging, still small next to ramdisk memory.
    pub const DEFAULT_CAPACITY: usize = 2 * 1024 * 1024;

    pub fn new(capacity: usize) -> Self {
        Self { capacity, inner: Mutex::new(Chunks::default()) }
    }

    /// Appends one chunk (normally one formatted event). A chunk larger than the whole
    /// capacity keeps only its tail.
    pub fn push(&self, data: &[u8]) {
        if data.is_empty() || self.capacity == 0 {
            return;
        }
        let data = if data.len() > self.capacity {
            data.get(data.len() - self.capacity..).unwrap_or_default()
        } else {
            data
        };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while inner.bytes + data.len() > self.capacity {
            match inner.chunks.pop_front() {
                Some(old) => {
                    inner.bytes -= old.len();
                    inner.dropped += 1;
                }
                None => break,
            }
        }
        inner.bytes += data.len();
        inner.chunks.push_back(data.to_vec());
    }

    /// Everything currently held, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(inner.bytes);
        for chunk in &inner.chunks {
            out.extend_from_slice(chunk);
        }
        out
    }

    /// How many chunks were evicted to stay within the capacity.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).dropped
    }
}

/// A `MakeWriter` that tees every event to stderr and to a [`LogBuffer`].
#[derive(Debug, Clone)]
pub struct TeeWriter {
    buffer: Arc<LogBuffer>,
    stderr: bool,
}

impl TeeWriter {
    pub fn new(buffer: Arc<LogBuffer>) -> Self {
        Self { buffer, stderr: true }
    }

    /// Writes to the buffer only (tests, where stderr would be noise).
    pub fn buffer_only(buffer: Arc<LogBuffer>) -> Self {
        Self { buffer, stderr: false }
    }
}

impl<'a> MakeWriter<'a> for TeeWriter {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter { buffer: self.buffer.clone(), stderr: self.stderr, pending: Vec::new() }
    }
}

/// Collects one event's output and hands it on whole when dropped, so lines from
/// concurrent tasks never interleave in the buffer.
#[derive(Debug)]
pub struct EventWriter {
    buffer: Arc<LogBuffer>,
    stderr: bool,
    pending: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if self.stderr {
            // Nowhere to report a failed write to stderr; the buffer copy still counts.
            let _ = io::stderr().lock().write_all(&self.pending);
        }
        self.buffer.push(&self.pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_chunks_within_capacity() {
        let b = LogBuffer::new(10);
        b.push(b"aaaa\n");
        b.push(b"bbbb\n");
        assert_eq!(b.contents(), b"aaaa\nbbbb\n");
        b.push(b"cc\n");
        assert_eq!(b.contents(), b"bbbb\ncc\n");
        assert_eq!(b.dropped(), 1);
        b.push(b"0123456789abc");
        assert_eq!(b.contents(), b"3456789abc");
        assert_eq!(b.contents().len(), 10);
    }

    #[test]
    fn tracing_events_land_in_the_buffer() {
        let buffer = Arc::new(LogBuffer::new(4096));
        let subscriber = tracing_subscriber::fmt()
            .with_writer(TeeWriter::buffer_only(buffer.clone()))
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(node = "n1", "first event");
            tracing::warn!("second event");
        });
        let text = String::from_utf8(buffer.contents()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("INFO") && lines[0].contains("first event"));
        assert!(lines[0].contains("node=\"n1\""), "{}", lines[0]);
        assert!(lines[1].contains("WARN") && lines[1].contains("second event"));
    }
}
