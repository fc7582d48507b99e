//! Serves the files of the conductor's image directory at `/images/{name}`: deploy
//! kernels and ramdisks for iPXE, and instance images for the agent's `write_image`.
//!
//! - Names are single path components: no `/` or `\`, no `..`, no NUL or other control
//!   character, no leading `.` (so no hidden files either), at most 255 bytes. The name is
//!   checked after percent-decoding, so `%2F` cannot smuggle a separator in. Symbolic links
//!   inside the directory are followed: putting one there is the operator's choice.
//! - `GET` and `HEAD`; `Content-Length`, `Accept-Ranges: bytes`, `Last-Modified` and a
//!   strong `ETag` (size and modification time) on every file reply.
//! - One `Range: bytes=a-b`, `a-` or `-n` → 206 with `Content-Range`; a range that no
//!   byte of the file satisfies → 416 with `Content-Range: bytes */len`. A request for
//!   several ranges gets the whole file with 200: ironic-python-agent only ever asks for
//!   one range (to resume a download), and multipart bodies would buy nothing here. A
//!   Range header that does not parse, or of another unit, is ignored (RFC 9110 §14.2).
//!   `If-Range` with a different validator than the current one also gets the whole file.
//! - Bodies are read by a blocking task in 1 MiB chunks, a few chunks ahead of the
//!   socket, each read straight into the buffer that is sent; memory does not grow with
//!   the file size. Holes of a sparse file (`SEEK_DATA`) are sent from one shared zero
//!   buffer without reading, so a mostly empty raw image costs the server only its data.
//!   A file that shrinks while being sent ends the response with an error, so the client
//!   sees a short body rather than wrong data.

use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ferric_shared::data_map::{self, DataMap};
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// Size of one body chunk read from the file.
const CHUNK: usize = 1 << 20;

/// Chunks read ahead of the socket for one response.
const READ_AHEAD: usize = 4;

/// The bytes of every hole chunk.
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// The longest accepted image name (the usual file-name limit).
const MAX_NAME_LEN: usize = 255;

/// Why a requested image name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageNameError {
    #[error("image name is empty")]
    Empty,
    #[error("image name is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    #[error("image name {0:?} contains a path separator")]
    Separator(String),
    #[error("image name {0:?} contains \"..\"")]
    DotDot(String),
    #[error("image name {0:?} starts with \".\"")]
    LeadingDot(String),
    #[error("image name {0:?} contains a NUL or control character")]
    ControlCharacter(String),
}

/// Checks that `name` names a file directly inside the image directory.
pub fn validate_name(name: &str) -> Result<(), ImageNameError> {
    if name.is_empty() {
        return Err(ImageNameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ImageNameError::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(ImageNameError::ControlCharacter(name.to_owned()));
    }
    if name.contains(['/', '\\']) {
        return Err(ImageNameError::Separator(name.to_owned()));
    }
    if name.contains("..") {
        return Err(ImageNameError::DotDot(name.to_owned()));
    }
    if name.starts_with('.') {
        return Err(ImageNameError::LeadingDot(name.to_owned()));
    }
    Ok(())
}

/// The path of image `name` inside `image_dir`, after checking the name.
pub fn image_path(image_dir: &Path, name: &str) -> Result<PathBuf, ImageNameError> {
    validate_name(name)?;
    Ok(image_dir.join(name))
}

/// The URL under which [`router`] serves image `name`, given the base URL of the HTTP
/// server it is mounted on (with or without a trailing `/`).
pub fn image_url(http_base_url: &str, name: &str) -> String {
    format!("{}/images/{name}", http_base_url.trim_end_matches('/'))
}

/// What a `Range` header asks of a file of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No (usable) range: send the whole file with 200.
    Full,
    /// Send bytes `start..=end` with 206.
    Partial { start: u64, end: u64 },
    /// No byte of the file is in the range: 416.
    Unsatisfiable,
}

/// A decimal byte position; values beyond `u64` saturate, which keeps them "beyond the
/// end" rather than making the header unparseable.
fn parse_pos(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        text.bytes().fold(0u64, |acc, digit| {
            acc.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
        }),
    )
}

/// Interprets a `Range` header value for a file of `len` bytes (RFC 9110 §14.1.2).
pub fn parse_range(header: &str, len: u64) -> RangeRequest {
    let Some((unit, set)) = header.trim().split_once('=') else {
        return RangeRequest::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeRequest::Full;
    }
    let specs: Vec<&str> = set.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let [spec] = specs.as_slice() else {
        // None, or several ranges: the whole file.
        return RangeRequest::Full;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix range: the last `n` bytes.
        let Some(n) = parse_pos(last) else {
            return RangeRequest::Full;
        };
        if n == 0 || len == 0 {
            return RangeRequest::Unsatisfiable;
        }
        return RangeRequest::Partial { start: len.saturating_sub(n), end: len - 1 };
    }
    let Some(start) = parse_pos(first) else {
        return RangeRequest::Full;
    };
    let end = if last.is_empty() {
        None
    } else {
        match parse_pos(last) {
            Some(end) if end >= start => Some(end),
            // Invalid (last < first or garbage): ignored as the RFC allows.
            _ => return RangeRequest::Full,
        }
    };
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    let end = end.map_or(len - 1, |end| end.min(len - 1));
    RangeRequest::Partial { start, end }
}

/// `Last-Modified` / `If-Range` date form (IMF-fixdate).
fn http_date(time: SystemTime) -> Option<String> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::from(time).format(&format).ok()
}

/// A strong validator from size and modification time: changes whenever the file is
/// replaced or rewritten.
fn etag(len: u64, modified: Option<SystemTime>) -> String {
    let nanos = modified
        .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("\"{len:x}-{nanos:x}\"")
}

/// Why an image request failed.
#[derive(Debug, thiserror::Error)]
enum ImageServeError {
    #[error(transparent)]
    BadName(#[from] ImageNameError),
    #[error("no image named {0:?}")]
    NotFound(String),
    #[error("{0:?} is not a regular file")]
    NotAFile(String),
    #[error("reading image {name:?} failed")]
    Io {
        name: String,
        #[source]
        source: io::Error,
    },
}

impl IntoResponse for ImageServeError {
    fn into_response(self) -> Response {
        let status = match &self {
            ImageServeError::BadName(_) => StatusCode::BAD_REQUEST,
            ImageServeError::NotFound(_) | ImageServeError::NotAFile(_) => StatusCode::NOT_FOUND,
            ImageServeError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            let source = std::error::Error::source(&self).map(ToString::to_string);
            tracing::error!(error = %self, source, "image request failed");
        } else {
            tracing::info!(error = %self, "image request refused");
        }
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{self}\n"))
            .into_response()
    }
}

/// The `/images/{name}` routes (GET and HEAD) serving files of `image_dir`.
pub fn router(image_dir: impl Into<PathBuf>) -> Router {
    let dir: Arc<PathBuf> = Arc::new(image_dir.into());
    Router::new().route("/images/{name}", get(serve)).with_state(dir)
}

async fn serve(
    State(dir): State<Arc<PathBuf>>,
    UrlPath(name): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ImageServeError> {
    let path = image_path(&dir, &name)?;
    let io_err = |source: io::Error| ImageServeError::Io { name: name.clone(), source };
    // Checked before opening: opening a FIFO or device someone left there could block.
    match tokio::fs::metadata(&path).await {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(ImageServeError::NotAFile(name)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ImageServeError::NotFound(name))
        }
        Err(e) => return Err(io_err(e)),
    }
    let file = tokio::fs::File::open(&path).await.map_err(io_err)?;
    let meta = file.metadata().await.map_err(io_err)?;
    if !meta.is_file() {
        return Err(ImageServeError::NotAFile(name));
    }
    let len = meta.len();
    let modified = meta.modified().ok();
    let etag = etag(len, modified);
    let last_modified = modified.and_then(http_date);

    if wants_data_map(&headers) {
        let std_file = file.into_std().await;
        let map = tokio::task::spawn_blocking(move || data_map(&std_file, len, etag))
            .await
            .map_err(|e| io_err(io::Error::other(e)))?
            .map_err(io_err)?;
        let body = serde_json::to_vec(&map).map_err(|e| io_err(io::Error::other(e)))?;
        let count = body.len();
        let body = if method == Method::HEAD { Body::empty() } else { Body::from(body) };
        return Response::builder()
            .header(header::CONTENT_TYPE, data_map::MEDIA_TYPE)
            .header(header::ETAG, &map.etag)
            .header(header::VARY, "accept")
            .header(header::CONTENT_LENGTH, count)
            .body(body)
            .map_err(|e| io_err(io::Error::other(e)));
    }

    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let validator_matches = match headers.get(header::IF_RANGE).map(HeaderValue::to_str) {
        None => true,
        Some(Ok(value)) => {
            let value = value.trim();
            value == etag || last_modified.as_deref() == Some(value)
        }
        Some(Err(_)) => false,
    };
    let range = match range_header {
        Some(value) if validator_matches => parse_range(value, len),
        _ => RangeRequest::Full,
    };

    let mut builder = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::VARY, "accept")
        .header(data_map::ADVERTISE_HEADER, "available");
    if let Some(date) = &last_modified {
        builder = builder.header(header::LAST_MODIFIED, date);
    }
    let (status, start, count) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, len),
        RangeRequest::Partial { start, end } => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            let response = builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .header(header::CONTENT_LENGTH, 0)
                .body(Body::empty());
            return response.map_err(|e| io_err(io::Error::other(e)));
        }
    };
    let body = if method == Method::HEAD || count == 0 {
        Body::empty()
    } else {
        Body::new(FileBody {
            chunks: spawn_reader(file.into_std().await, start, count),
            remaining: count,
        })
    };
    builder
        .status(status)
        .header(header::CONTENT_LENGTH, count)
        .body(body)
        .map_err(|e| io_err(io::Error::other(e)))
}

/// Reads `count` bytes of `file` from `start` on a blocking thread, a few chunks ahead of
/// the receiver. The reader stops as soon as the receiver is gone (client disconnected).
fn spawn_reader(file: std::fs::File, start: u64, count: u64) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let end = start + count;
        let mut holes = Holes::new(&file);
        let mut pos = start;
        while pos < end {
            let want = usize::try_from(end - pos).map_or(CHUNK, |r| r.min(CHUNK));
            let chunk = if holes.is_hole(pos, want as u64) {
                Ok(Bytes::from_static(&ZEROS[..want]))
            } else {
                read_chunk(&file, pos, want, end - pos)
            };
            let failed = chunk.is_err();
            if let Ok(bytes) = &chunk {
                pos += bytes.len() as u64;
            }
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// Up to `want` bytes at `pos`, read into the buffer that will be sent.
fn read_chunk(file: &std::fs::File, pos: u64, want: usize, remaining: u64) -> io::Result<Bytes> {
    let mut buf = vec![0u8; want];
    let n = loop {
        match file.read_at(&mut buf, pos) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("image file ended {remaining} bytes early"),
        ));
    }
    buf.truncate(n);
    Ok(Bytes::from(buf))
}

/// Where a file's next data starts, from `SEEK_DATA`, cached while reading forward.
struct Holes<'a> {
    file: &'a std::fs::File,
    /// The first data byte at or after the last position asked about; `u64::MAX` when
    /// only a hole follows. `None` when the file system cannot tell (then nothing is
    /// treated as a hole).
    next_data: Option<u64>,
    asked_at: u64,
    supported: bool,
}

impl<'a> Holes<'a> {
    fn new(file: &'a std::fs::File) -> Self {
        Holes { file, next_data: None, asked_at: 0, supported: true }
    }

    /// Whether `len` bytes at `pos` are all inside a hole.
    fn is_hole(&mut self, pos: u64, len: u64) -> bool {
        if !self.supported {
            return false;
        }
        let stale = match self.next_data {
            None => true,
            // Moved past the data found last time, or asked about an earlier position.
            Some(next) => next < pos || pos < self.asked_at,
        };
        if stale {
            self.next_data = self.seek_data(pos);
            self.asked_at = pos;
        }
        match self.next_data {
            Some(next) => next >= pos.saturating_add(len),
            None => false,
        }
    }

    fn seek_data(&mut self, pos: u64) -> Option<u64> {
        let Ok(offset) = libc::off_t::try_from(pos) else {
            self.supported = false;
            return None;
        };
        // SAFETY: lseek on a file descriptor this struct borrows; it moves only the file
        // offset, which the reads (pread) do not use.
        let found = unsafe { libc::lseek(self.file.as_raw_fd(), offset, libc::SEEK_DATA) };
        if found >= 0 {
            return u64::try_from(found).ok();
        }
        match io::Error::last_os_error().raw_os_error() {
            // No data at or after `pos`: the rest of the file is a hole.
            Some(libc::ENXIO) => Some(u64::MAX),
            _ => {
                self.supported = false;
                None
            }
        }
    }
}

/// Whether the request asks for the image's data map instead of the image.
fn wants_data_map(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|item| {
            item.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(data_map::MEDIA_TYPE))
        })
    })
}

/// The data map of `file` from `SEEK_DATA`/`SEEK_HOLE`. A file system that cannot tell
/// gets one range over the whole file, which is still a correct map.
fn data_map(file: &std::fs::File, len: u64, etag: String) -> io::Result<DataMap> {
    // Past this many extents the rest of the file is listed as one range: the map stays
    // bounded however fragmented the file is.
    const MAX_EXTENTS: usize = 4 * data_map::MAX_RANGES;
    let whole = || vec![(0, len)];
    let mut extents = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let Some(data) = seek(file, pos, libc::SEEK_DATA)? else {
            break;
        };
        if data >= len {
            break;
        }
        let Some(hole) = seek(file, data, libc::SEEK_HOLE)? else {
            extents = whole();
            break;
        };
        let hole = hole.clamp(data, len);
        if extents.len() == MAX_EXTENTS || hole == data {
            extents.push((data, len - data));
            break;
        }
        extents.push((data, hole - data));
        pos = hole;
    }
    let data = if extents.is_empty() && len > 0 && pos == 0 && !holes_supported(file) {
        vec![[0, len]]
    } else {
        data_map::coalesce(&extents, data_map::MIN_HOLE)
    };
    Ok(DataMap { size: len, etag, data })
}

/// `lseek` with `whence`; `None` when no data follows (`ENXIO`) or the file system does
/// not support `whence` (`EINVAL`), which callers treat as "no holes known".
fn seek(file: &std::fs::File, pos: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let offset = libc::off_t::try_from(pos).map_err(io::Error::other)?;
    // SAFETY: lseek on a descriptor owned by `file`; reads use pread, not the offset.
    let found = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if found >= 0 {
        return Ok(u64::try_from(found).ok());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        Some(libc::EINVAL) if whence == libc::SEEK_DATA => Ok(None),
        _ => Err(err),
    }
}

/// Whether `SEEK_DATA` works on `file` at all (an empty map then really means all holes).
fn holes_supported(file: &std::fs::File) -> bool {
    // SAFETY: as in `seek`.
    let found = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_DATA) };
    found >= 0 || io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO)
}

/// Streams the chunks a reader task sends.
struct FileBody {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    remaining: u64,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        this.chunks.poll_recv(cx).map(|chunk| match chunk {
            Some(Ok(bytes)) => {
                this.remaining = this.remaining.saturating_sub(bytes.len() as u64);
                Some(Ok(Frame::data(bytes)))
            }
            Some(Err(e)) => Some(Err(e)),
            None => Some(Err(io::Error::other("the image reader stopped early"))),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests;
