//! The async core of [`super::HttpSource`]: one image URL, its sequential stream with
//! resume and restart, and ranged reads.

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, IF_RANGE, RANGE};
use reqwest::{Response, StatusCode, Url};
use tracing::{info, warn};

use super::client;
use super::headers::{content_range_text, ContentRange, Validators};
use crate::image::source::{HttpOptions, SourceError, SourceEvent, SourceStats, TransientFailure};

/// How one request attempt failed.
#[derive(Debug)]
enum Failure {
    Fatal(SourceError),
    Transient(TransientFailure),
}

impl From<SourceError> for Failure {
    fn from(e: SourceError) -> Self {
        Failure::Fatal(e)
    }
}

#[derive(Debug)]
pub(super) struct Stream {
    client: reqwest::Client,
    url: Url,
    /// `url` without credentials, for logs and errors.
    shown: String,
    authorization: Option<HeaderValue>,
    retries: u32,
    retry_interval: Duration,
    stall_timeout: Duration,
    chunk_size: usize,
    size: Option<u64>,
    /// The version of the resource the received bytes belong to.
    validators: Validators,
    /// The reply whose body is being read, if any.
    response: Option<Response>,
    /// Bytes of the image received since byte 0: delivered plus pending.
    received: u64,
    /// Bytes handed out as `Data` since byte 0.
    delivered: u64,
    pending: Vec<u8>,
    finished: bool,
    announce_restart: bool,
    /// The furthest the stream has got, across restarts.
    high_water: u64,
    /// Consecutive failed attempts of the sequential stream that did not get past
    /// `high_water`: re-receiving bytes after a restart is not progress, so a server that
    /// ignores Range and always cuts at the same point cannot loop forever.
    failures: u32,
    stats: SourceStats,
}

impl Stream {
    /// Sends the first GET (retried as configured) and keeps its reply for the stream.
    pub async fn open(
        url: Url,
        opts: &HttpOptions,
        chunk_size: usize,
    ) -> Result<Self, SourceError> {
        let mut stream = Self {
            client: client::build(opts)?,
            shown: client::redact(&url),
            url,
            authorization: client::authorization(opts)?,
            retries: opts.retries,
            retry_interval: opts.retry_interval,
            stall_timeout: opts.stall_timeout,
            chunk_size,
            size: None,
            validators: Validators::default(),
            response: None,
            received: 0,
            delivered: 0,
            pending: Vec::new(),
            finished: false,
            announce_restart: false,
            high_water: 0,
            failures: 0,
            stats: SourceStats::default(),
        };
        let mut failures = 0;
        loop {
            match stream.open_stream().await {
                Ok(()) => return Ok(stream),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(t)) => stream.recover(&mut failures, t).await?,
            }
        }
    }

    pub fn size(&self) -> Option<u64> {
        self.size
    }

    pub fn stats(&self) -> SourceStats {
        self.stats
    }

    pub async fn next_event(&mut self) -> Result<Option<SourceEvent>, SourceError> {
        loop {
            if self.announce_restart {
                self.announce_restart = false;
                return Ok(Some(SourceEvent::Restart));
            }
            if self.pending.len() >= self.chunk_size || (self.finished && !self.pending.is_empty())
            {
                return Ok(Some(SourceEvent::Data(self.take_chunk())));
            }
            if self.finished {
                return Ok(None);
            }
            match self.pull().await {
                Ok(()) => {}
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(t)) => {
                    let mut failures = self.failures;
                    let outcome = self.recover(&mut failures, t).await;
                    self.failures = failures;
                    outcome?;
                }
            }
        }
    }

    /// Hands out the first `chunk_size` pending bytes (all of them at the end).
    fn take_chunk(&mut self) -> Vec<u8> {
        let chunk = if self.pending.len() > self.chunk_size {
            let mut rest = crate::image::buffers::take_empty(self.chunk_size);
            rest.extend_from_slice(&self.pending[self.chunk_size..]);
            self.pending.truncate(self.chunk_size);
            std::mem::replace(&mut self.pending, rest)
        } else {
            std::mem::replace(&mut self.pending, crate::image::buffers::take_empty(self.chunk_size))
        };
        self.delivered += chunk.len() as u64;
        chunk
    }

    /// Receives the next piece of the body into `pending`, (re)connecting first if needed.
    async fn pull(&mut self) -> Result<(), Failure> {
        if self.response.is_none() {
            self.open_stream().await?;
        }
        let Some(response) = self.response.as_mut() else {
            return Err(Failure::Fatal(SourceError::WorkerStopped));
        };
        match tokio::time::timeout(self.stall_timeout, response.chunk()).await {
            Err(_) => {
                self.response = None;
                Err(Failure::Transient(TransientFailure::Stall(self.stall_timeout)))
            }
            Ok(Err(e)) => {
                self.response = None;
                Err(self.classify(e))
            }
            Ok(Ok(Some(bytes))) => {
                if !bytes.is_empty() {
                    self.pending.extend_from_slice(&bytes);
                    self.received += bytes.len() as u64;
                    if self.received > self.high_water {
                        self.high_water = self.received;
                        self.failures = 0;
                    }
                }
                Ok(())
            }
            Ok(Ok(None)) => {
                self.response = None;
                match self.size {
                    Some(size) if self.received < size => {
                        Err(Failure::Transient(TransientFailure::Truncated {
                            received: self.received,
                            expected: size,
                        }))
                    }
                    _ => {
                        self.size = Some(self.received);
                        self.finished = true;
                        Ok(())
                    }
                }
            }
        }
    }

    /// Sends the request that continues the stream at `received`: a plain GET from byte
    /// 0, or a resume with Range that falls back to a restart.
    async fn open_stream(&mut self) -> Result<(), Failure> {
        if self.received == 0 {
            let response = self.send(None, None).await?;
            return self.accept_full(response);
        }
        let range = format!("bytes={}-", self.received);
        let if_range = self.validators.if_range().map(str::to_owned);
        let response = self.send(Some(&range), if_range.as_deref()).await?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                let theirs = Validators::from_headers(response.headers());
                let range = content_range_text(response.headers()).and_then(ContentRange::parse);
                let resumable = range.is_some_and(|r| {
                    r.first == self.received
                        && (self.size.is_none() || r.total.is_none() || r.total == self.size)
                }) && self.validators.compatible(&theirs);
                if let (true, Some(range)) = (resumable, range) {
                    self.stats.resumes += 1;
                    self.size = self.size.or(range.total);
                    info!(url = %self.shown, from = self.received, "image download resumed");
                    self.response = Some(response);
                    return Ok(());
                }
                warn!(
                    url = %self.shown,
                    at = self.received,
                    "the image changed or the resume did not start where asked; \
                     restarting the download from byte 0"
                );
                drop(response);
                self.restart();
                let response = self.send(None, None).await?;
                self.accept_full(response)
            }
            StatusCode::OK => {
                warn!(
                    url = %self.shown,
                    at = self.received,
                    "the server ignored the Range request; restarting the download from byte 0"
                );
                self.restart();
                self.accept_full(response)
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                warn!(
                    url = %self.shown,
                    at = self.received,
                    "the image is shorter than what was received; restarting the download"
                );
                self.restart();
                let response = self.send(None, None).await?;
                self.accept_full(response)
            }
            status => Err(self.status_failure(status)),
        }
    }

    /// Takes a 200 reply as the stream from byte 0.
    fn accept_full(&mut self, response: Response) -> Result<(), Failure> {
        if response.status() != StatusCode::OK {
            return Err(self.status_failure(response.status()));
        }
        self.size = response.content_length();
        self.validators = Validators::from_headers(response.headers());
        self.response = Some(response);
        Ok(())
    }

    /// Forgets everything received; the consumer hears of it if it was given any.
    fn restart(&mut self) {
        self.stats.restarts += 1;
        if self.delivered > 0 {
            self.announce_restart = true;
            self.stats.discarded_bytes += self.delivered;
        }
        self.received = 0;
        self.delivered = 0;
        self.pending.clear();
        self.response = None;
    }

    /// Reads `len` bytes at `offset` with Range requests (fewer only at the end).
    pub async fn read_range(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, SourceError> {
        let mut want = u64::try_from(len).unwrap_or(u64::MAX).min(u64::MAX - offset);
        if let Some(size) = self.size {
            want = want.min(size.saturating_sub(offset));
        }
        let mut out = Vec::new();
        let mut failures = 0;
        while (out.len() as u64) < want {
            let first = offset + out.len() as u64;
            let last = offset + want - 1;
            match self.range_once(first, last).await {
                Ok(piece) if piece.is_empty() => break,
                Ok(piece) => {
                    out.extend_from_slice(&piece);
                    failures = 0;
                    if self.size.is_some_and(|size| offset + out.len() as u64 >= size) {
                        break;
                    }
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(t)) => self.recover(&mut failures, t).await?,
            }
        }
        Ok(out)
    }

    /// One ranged GET for `first..=last`; empty when the range lies past the end.
    async fn range_once(&mut self, first: u64, last: u64) -> Result<Vec<u8>, Failure> {
        let mut response = self.send(Some(&format!("bytes={first}-{last}")), None).await?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK => {
                return Err(Failure::Fatal(SourceError::RangeNotSupported {
                    url: self.shown.clone(),
                }))
            }
            StatusCode::RANGE_NOT_SATISFIABLE if self.size.is_none() => return Ok(Vec::new()),
            status => return Err(self.status_failure(status)),
        }
        let text = content_range_text(response.headers()).unwrap_or_default().to_owned();
        let range = match ContentRange::parse(&text) {
            Some(r) if r.first == first && r.last <= last => r,
            _ => {
                return Err(Failure::Fatal(SourceError::BadContentRange {
                    url: self.shown.clone(),
                    value: text,
                }))
            }
        };
        let changed = (self.size.is_some() && range.total.is_some() && range.total != self.size)
            || !self.validators.compatible(&Validators::from_headers(response.headers()));
        if changed {
            return Err(Failure::Fatal(SourceError::ResourceChanged { url: self.shown.clone() }));
        }
        self.size = self.size.or(range.total);
        // At most `last - first + 1` bytes, which came from a `usize` length.
        let expected = usize::try_from(range.len()).unwrap_or(usize::MAX);
        let mut body = Vec::with_capacity(expected.min(64 << 20));
        while body.len() < expected {
            match tokio::time::timeout(self.stall_timeout, response.chunk()).await {
                Err(_) => {
                    return Err(Failure::Transient(TransientFailure::Stall(self.stall_timeout)))
                }
                Ok(Err(e)) => return Err(self.classify(e)),
                Ok(Ok(None)) => {
                    return Err(Failure::Transient(TransientFailure::Truncated {
                        received: body.len() as u64,
                        expected: range.len(),
                    }))
                }
                Ok(Ok(Some(bytes))) => {
                    let room = expected - body.len();
                    body.extend_from_slice(bytes.get(..room).unwrap_or(&bytes));
                }
            }
        }
        Ok(body)
    }

    /// One GET with the configured authorization; 5xx is returned as a transient failure.
    async fn send(&self, range: Option<&str>, if_range: Option<&str>) -> Result<Response, Failure> {
        let mut request = self.client.get(self.url.clone());
        if let Some(value) = &self.authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        if let Some(range) = range {
            request = request.header(RANGE, range);
            if let Some(tag) = if_range {
                request = request.header(IF_RANGE, tag);
            }
        }
        let response = match tokio::time::timeout(self.stall_timeout, request.send()).await {
            Err(_) => return Err(Failure::Transient(TransientFailure::Stall(self.stall_timeout))),
            Ok(Err(e)) => return Err(self.classify(e)),
            Ok(Ok(response)) => response,
        };
        if response.status().is_server_error() {
            let status = response.status().as_u16();
            return Err(Failure::Transient(TransientFailure::ServerError { status }));
        }
        Ok(response)
    }

    fn classify(&self, e: reqwest::Error) -> Failure {
        let url = self.shown.clone();
        if e.is_redirect() {
            Failure::Fatal(SourceError::TooManyRedirects { url })
        } else if client::is_certificate_error(&e) {
            Failure::Fatal(SourceError::Certificate { url, source: e })
        } else if e.is_builder() {
            Failure::Fatal(SourceError::Client(e))
        } else {
            Failure::Transient(TransientFailure::Transport(e))
        }
    }

    fn status_failure(&self, status: StatusCode) -> Failure {
        Failure::Fatal(SourceError::Status { url: self.shown.clone(), status: status.as_u16() })
    }

    /// Waits `retry_interval` before another attempt, or gives up once `failures` has
    /// reached the configured number of retries.
    async fn recover(
        &mut self,
        failures: &mut u32,
        failure: TransientFailure,
    ) -> Result<(), SourceError> {
        self.response = None;
        if *failures >= self.retries {
            return Err(SourceError::RetriesExhausted {
                url: self.shown.clone(),
                attempts: *failures + 1,
                last: failure,
            });
        }
        *failures += 1;
        self.stats.retries += 1;
        warn!(
            url = %self.shown,
            error = %ErrorChain(&failure),
            attempt = *failures,
            of = self.retries,
            "image download failed; retrying in {:?}",
            self.retry_interval
        );
        tokio::time::sleep(self.retry_interval).await;
        Ok(())
    }
}

/// Displays an error with all its sources, for log lines.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}
