//! The async core of [`super::HttpSource`]: one image URL, its sequential stream with
//! resume and restart, and ranged reads.

use std::time::Duration;

use ferric_shared::data_map::{self, DataMap};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, IF_RANGE, RANGE};
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
    /// The server's data map, when it offered one: only its data ranges are requested,
    /// its holes are handed out as [`SourceEvent::Hole`].
    map: Option<DataMap>,
    /// The end of the data range being received (map mode), kept across a cut so the
    /// next request is recognised as a resume.
    range_end: Option<u64>,
}

impl Stream {
    /// Sends the first GET (retried as configured) and keeps its reply for the stream.
    /// With `use_data_map`, a data map the server advertises is fetched and used.
    pub async fn open(
        url: Url,
        opts: &HttpOptions,
        chunk_size: usize,
        use_data_map: bool,
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
            map: None,
            range_end: None,
        };
        let mut failures = 0;
        loop {
            match stream.open_stream().await {
                Ok(()) => {
                    if use_data_map {
                        stream.try_data_map().await;
                    }
                    return Ok(stream);
                }
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
            if let Some(hole) = self.map_hole() {
                if !self.pending.is_empty() {
                    // The data before the hole goes first, even if short of a chunk.
                    return Ok(Some(SourceEvent::Data(self.take_chunk())));
                }
                if hole == 0 {
                    self.finished = true;
                    continue;
                }
                self.received += hole;
                self.delivered += hole;
                if self.received > self.high_water {
                    self.high_water = self.received;
                    self.failures = 0;
                }
                return Ok(Some(SourceEvent::Hole(hole)));
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
            if self.map.is_some() {
                self.open_map_range().await?;
            } else {
                self.open_stream().await?;
            }
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
                // A data range never yields more than was asked for.
                let room = match self.range_end.filter(|_| self.map.is_some()) {
                    Some(end) => {
                        usize::try_from(end.saturating_sub(self.received)).unwrap_or(usize::MAX)
                    }
                    None => usize::MAX,
                };
                let bytes = bytes.get(..room).unwrap_or(&bytes);
                if !bytes.is_empty() {
                    self.pending.extend_from_slice(bytes);
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
                if let Some(end) = self.range_end.filter(|_| self.map.is_some()) {
                    if self.received >= end {
                        self.range_end = None;
                        return Ok(());
                    }
                    return Err(Failure::Transient(TransientFailure::Truncated {
                        received: self.received,
                        expected: end,
                    }));
                }
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

    /// Fetches the data map the first reply advertises, and switches to map mode when it
    /// matches the image. Any problem only costs the map: the whole image is downloaded.
    async fn try_data_map(&mut self) {
        let advertised = self
            .response
            .as_ref()
            .is_some_and(|r| r.headers().contains_key(data_map::ADVERTISE_HEADER));
        let (Some(size), Some(etag)) = (self.size, self.validators.etag.clone()) else {
            return;
        };
        if !advertised {
            return;
        }
        match self.fetch_data_map().await {
            Ok(map) if map.size == size && map.etag == etag => {
                info!(url = %self.shown, data_bytes = map.data_bytes(), ranges = map.data.len(),
                    size, "the server lists the image's data: downloading only that");
                self.response = None;
                self.map = Some(map);
            }
            Ok(_) => warn!(url = %self.shown,
                "the image's data map is for another version of it; downloading the whole image"),
            Err(reason) => warn!(url = %self.shown, %reason,
                "the image's data map is unusable; downloading the whole image"),
        }
    }

    async fn fetch_data_map(&self) -> Result<DataMap, String> {
        let mut request = self.client.get(self.url.clone()).header(ACCEPT, data_map::MEDIA_TYPE);
        if let Some(value) = &self.authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        let fetch = async {
            let mut response = request.send().await.map_err(|e| e.to_string())?;
            if response.status() != StatusCode::OK {
                return Err(format!("HTTP {}", response.status().as_u16()));
            }
            let media = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
            if media.map(|m| m.split(';').next().unwrap_or("").trim()) != Some(data_map::MEDIA_TYPE)
            {
                return Err(format!("content type {media:?}"));
            }
            let mut body = Vec::new();
            while let Some(piece) = response.chunk().await.map_err(|e| e.to_string())? {
                if (body.len() + piece.len()) as u64 > data_map::MAX_BODY_BYTES {
                    return Err(format!("larger than {} bytes", data_map::MAX_BODY_BYTES));
                }
                body.extend_from_slice(&piece);
            }
            let map: DataMap = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            map.validate().map_err(|e| e.to_string())?;
            Ok(map)
        };
        tokio::time::timeout(self.stall_timeout, fetch)
            .await
            .map_err(|_| format!("no answer within {:?}", self.stall_timeout))?
    }

    /// The hole the stream stands in (map mode, between requests): its length, or 0 at
    /// the end of the image. `None` in a data range or without a map.
    fn map_hole(&self) -> Option<u64> {
        let map = self.map.as_ref()?;
        if self.response.is_some() {
            return None;
        }
        if self.received >= map.size {
            return Some(0);
        }
        match map.locate(self.received) {
            Err(next) => Some(next.saturating_sub(self.received)),
            Ok(_) => None,
        }
    }

    /// Requests the rest of the data range the stream stands in, guarded by the map's
    /// validator. An image that changed since the map was made is downloaded again from
    /// byte 0 without the map.
    async fn open_map_range(&mut self) -> Result<(), Failure> {
        let Some(map) = &self.map else {
            return self.open_stream().await;
        };
        let (pos, size, etag) = (self.received, map.size, map.etag.clone());
        let Ok(end) = map.locate(pos) else {
            return Ok(());
        };
        let range = format!("bytes={pos}-{}", end - 1);
        let response = self.send(Some(&range), Some(&etag)).await?;
        let status = response.status();
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let theirs = Validators::from_headers(response.headers());
                let got = content_range_text(response.headers()).and_then(ContentRange::parse);
                let exact = got.is_some_and(|r| {
                    r.first == pos && r.last == end - 1 && r.total.is_none_or(|t| t == size)
                });
                if exact && self.validators.compatible(&theirs) {
                    if self.range_end == Some(end) {
                        self.stats.resumes += 1;
                        info!(url = %self.shown, from = pos, "image download resumed");
                    }
                    self.range_end = Some(end);
                    self.response = Some(response);
                    return Ok(());
                }
            }
            StatusCode::OK | StatusCode::RANGE_NOT_SATISFIABLE => {}
            status => return Err(self.status_failure(status)),
        }
        warn!(url = %self.shown, at = pos,
            "the image changed since its data map was made; downloading it again from byte 0");
        self.map = None;
        self.range_end = None;
        self.restart();
        let response =
            if status == StatusCode::OK { response } else { self.send(None, None).await? };
        self.accept_full(response)
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
