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
//! - Bodies are streamed from the file in 256 KiB chunks; memory does not grow with the
//!   file size. A file that shrinks while being sent ends the response with an error, so
//!   the client sees a short body rather than wrong data.

use std::io;
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
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncSeekExt, ReadBuf};

/// Size of one body chunk read from the file.
const CHUNK: usize = 256 * 1024;

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
    let mut file = tokio::fs::File::open(&path).await.map_err(io_err)?;
    let meta = file.metadata().await.map_err(io_err)?;
    if !meta.is_file() {
        return Err(ImageServeError::NotAFile(name));
    }
    let len = meta.len();
    let modified = meta.modified().ok();
    let etag = etag(len, modified);
    let last_modified = modified.and_then(http_date);

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
        .header(header::CONTENT_TYPE, "application/octet-stream");
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
        file.seek(io::SeekFrom::Start(start)).await.map_err(io_err)?;
        Body::new(FileBody { file, remaining: count, buf: Vec::new() })
    };
    builder
        .status(status)
        .header(header::CONTENT_LENGTH, count)
        .body(body)
        .map_err(|e| io_err(io::Error::other(e)))
}

/// Streams `remaining` bytes of `file` from its current position.
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: Vec<u8>,
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
        let want = usize::try_from(this.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        this.buf.resize(want, 0);
        let mut read_buf = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.file).poll_read(cx, &mut read_buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let filled = read_buf.filled();
                if filled.is_empty() {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("image file ended {} bytes early", this.remaining),
                    ))));
                }
                this.remaining -= filled.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(filled)))))
            }
        }
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
