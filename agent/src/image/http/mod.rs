//! Images and checksum files over HTTP(S): a blocking [`ImageSource`] that survives a
//! flaky network without starting over.
//!
//! - **Retries:** connection errors, 5xx replies, cut connections and stalls (no byte for
//!   `stall_timeout`) are retried up to `retries` times, `retry_interval` apart (a fixed
//!   interval, as ironic-python-agent does). The count is of consecutive failures: an
//!   attempt that gets further into the image than any before resets it, so a long
//!   download on a network that drops now and then completes, while a dead server (or
//!   one that ignores Range and always cuts at the same point) still fails after
//!   `retries + 1` attempts. 4xx replies, rejected certificates and redirect loops are
//!   fatal at once.
//! - **Resume:** after a cut the stream continues with `Range: bytes=<received>-` (and
//!   `If-Range`), so no byte is fetched twice. The 206 must start exactly there and come
//!   from the same version of the resource (ETag, Last-Modified, length); otherwise, or
//!   when the server ignores Range and answers 200, the stream starts over from byte 0
//!   and the consumer is told with [`SourceEvent::Restart`].
//! - **Threading:** the HTTP client runs on a current-thread tokio runtime owned by a
//!   worker thread of each source; the blocking methods talk to it over channels. That
//!   works from any thread, including `spawn_blocking` threads of the agent's runtime,
//!   without nesting runtimes. The methods block, so they must not be called from an async
//!   task on a runtime worker thread (it would stall that worker, not panic).

mod client;
mod headers;
mod stream;
#[cfg(test)]
mod tests;

pub use client::redact_text as redact;

use std::sync::mpsc;
use std::thread::JoinHandle;

use super::source::{HttpOptions, ImageSource, SourceError, SourceEvent, SourceStats};
use stream::Stream;

/// Size of the [`SourceEvent::Data`] buffers [`HttpSource::open`] hands out (the last one
/// may be shorter).
pub const DEFAULT_CHUNK_SIZE: usize = 1 << 20;

/// An image on an HTTP(S) server. See the module documentation for its recovery rules.
#[derive(Debug)]
pub struct HttpSource {
    commands: Option<tokio::sync::mpsc::UnboundedSender<Command>>,
    worker: Option<JoinHandle<()>>,
    size: Option<u64>,
    stats: SourceStats,
}

type Reply<T> = mpsc::SyncSender<(Result<T, SourceError>, Option<u64>, SourceStats)>;

#[derive(Debug)]
enum Command {
    NextEvent(Reply<Option<SourceEvent>>),
    ReadRange { offset: u64, len: usize, reply: Reply<Vec<u8>> },
}

impl HttpSource {
    /// Starts the download of `url` (the first GET, retried as configured) and learns
    /// the image's size from its reply. Data is streamed in [`DEFAULT_CHUNK_SIZE`] pieces.
    /// A data map the server advertises is used: only the image's data is downloaded.
    pub fn open(url: &str, opts: &HttpOptions) -> Result<Self, SourceError> {
        Self::open_with(url, opts, DEFAULT_CHUNK_SIZE, true)
    }

    /// [`HttpSource::open`] with [`SourceEvent::Data`] pieces of `chunk_size` bytes (at
    /// least 1).
    pub fn open_with_chunk_size(
        url: &str,
        opts: &HttpOptions,
        chunk_size: usize,
    ) -> Result<Self, SourceError> {
        Self::open_with(url, opts, chunk_size, false)
    }

    /// [`HttpSource::open_with_chunk_size`], using the server's data map when
    /// `use_data_map` and the server offers one.
    pub fn open_with(
        url: &str,
        opts: &HttpOptions,
        chunk_size: usize,
        use_data_map: bool,
    ) -> Result<Self, SourceError> {
        let url = client::parse_url(url)?;
        let opts = opts.clone();
        let chunk_size = chunk_size.max(1);
        let (opened_tx, opened_rx) = mpsc::sync_channel(1);
        let (commands, mut command_rx) = tokio::sync::mpsc::unbounded_channel::<Command>();
        // The worker logs where the caller would: same subscriber, inside the caller's span.
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let span = tracing::Span::current();
        let worker = std::thread::Builder::new()
            .name("http-source".into())
            .spawn(move || {
                let _dispatch = tracing::dispatcher::set_default(&dispatch);
                let _span = span.enter();
                let runtime =
                    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = opened_tx.send(Err(SourceError::Runtime(e)));
                            return;
                        }
                    };
                runtime.block_on(async move {
                    let mut stream = match Stream::open(url, &opts, chunk_size, use_data_map).await
                    {
                        Ok(stream) => stream,
                        Err(e) => {
                            let _ = opened_tx.send(Err(e));
                            return;
                        }
                    };
                    if opened_tx.send(Ok((stream.size(), stream.stats()))).is_err() {
                        return;
                    }
                    while let Some(command) = command_rx.recv().await {
                        match command {
                            Command::NextEvent(reply) => {
                                let result = stream.next_event().await;
                                let _ = reply.send((result, stream.size(), stream.stats()));
                            }
                            Command::ReadRange { offset, len, reply } => {
                                let result = stream.read_range(offset, len).await;
                                let _ = reply.send((result, stream.size(), stream.stats()));
                            }
                        }
                    }
                });
            })
            .map_err(SourceError::Runtime)?;
        let mut source = Self {
            commands: Some(commands),
            worker: Some(worker),
            size: None,
            stats: SourceStats::default(),
        };
        match opened_rx.recv() {
            Ok(Ok((size, stats))) => {
                source.size = size;
                source.stats = stats;
                Ok(source)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SourceError::WorkerStopped),
        }
    }

    fn call<T>(&mut self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, SourceError> {
        let (reply, reply_rx) = mpsc::sync_channel(1);
        let sent = self.commands.as_ref().map(|c| c.send(command(reply)).is_ok());
        if sent != Some(true) {
            return Err(SourceError::WorkerStopped);
        }
        let (result, size, stats) = reply_rx.recv().map_err(|_| SourceError::WorkerStopped)?;
        self.size = size;
        self.stats = stats;
        result
    }
}

impl ImageSource for HttpSource {
    fn size(&self) -> Option<u64> {
        self.size
    }

    fn read_range(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, SourceError> {
        self.call(|reply| Command::ReadRange { offset, len, reply })
    }

    fn next_event(&mut self) -> Result<Option<SourceEvent>, SourceError> {
        self.call(Command::NextEvent)
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }
}

impl Drop for HttpSource {
    fn drop(&mut self) {
        // Closing the command channel ends the worker; no call is in flight (they all
        // take `&mut self`), so the join is short.
        self.commands = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Downloads a small text document (a checksum file) with the same TLS, authentication,
/// proxy and retry rules as images; more than `max_bytes` is an error.
pub fn fetch_text(url: &str, opts: &HttpOptions, max_bytes: u64) -> Result<String, SourceError> {
    let bytes = fetch_bytes(url, opts, max_bytes)?;
    String::from_utf8(bytes).map_err(|_| SourceError::NotText { url: shown(url) })
}

/// Downloads a small document (a config drive) whole, like [`fetch_text`].
pub fn fetch_bytes(url: &str, opts: &HttpOptions, max_bytes: u64) -> Result<Vec<u8>, SourceError> {
    let mut source = HttpSource::open_with_chunk_size(url, opts, 64 * 1024)?;
    let too_large = || SourceError::TooLarge { url: shown(url), limit: max_bytes };
    if source.size().is_some_and(|size| size > max_bytes) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(event) = source.next_event()? {
        match event {
            SourceEvent::Data(bytes) => {
                if body.len() as u64 + bytes.len() as u64 > max_bytes {
                    return Err(too_large());
                }
                body.extend_from_slice(&bytes);
            }
            SourceEvent::Hole(len) => {
                if body.len() as u64 + len > max_bytes {
                    return Err(too_large());
                }
                body.resize(body.len() + len as usize, 0);
            }
            SourceEvent::Restart => body.clear(),
        }
    }
    Ok(body)
}

/// `url` as errors show it (it parsed when the source opened).
fn shown(url: &str) -> String {
    client::parse_url(url).map(|u| client::redact(&u)).unwrap_or_default()
}
