//! Where image bytes come from. The pipeline reads a source from a dedicated thread, so
//! the interface is blocking.

use std::path::PathBuf;
use std::time::Duration;

use ferric_shared::image_info::{ImageInfo, Proxies};

/// How image (and checksum-file) downloads are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// PEM bundle trusted in addition to nothing else (replaces the built-in roots).
    pub ca_file: Option<PathBuf>,
    /// Do not verify the server's certificate.
    pub insecure: bool,
    /// A full `Authorization` header value (`image_request_authorization`, decoded).
    pub authorization: Option<String>,
    /// HTTP basic auth (user, password), used when `authorization` is absent.
    pub basic_auth: Option<(String, String)>,
    pub proxies: Proxies,
    pub no_proxy: Option<String>,
    /// Retries after connection errors, 5xx, cuts and stalls
    /// (`ipa-image-download-connection-retries`); counted per run of failures without
    /// progress, so a long download survives more cuts than this as long as each attempt
    /// gets further.
    pub retries: u32,
    /// Pause between retries (`ipa-image-download-connection-retry-interval`).
    pub retry_interval: Duration,
    /// No byte for this long is a stall (`ipa-image-download-connection-timeout`).
    pub stall_timeout: Duration,
}

impl Default for HttpOptions {
    /// ironic-python-agent's defaults: 9 retries, 10 s apart, 60 s stall timeout.
    fn default() -> Self {
        Self {
            ca_file: None,
            insecure: false,
            authorization: None,
            basic_auth: None,
            proxies: Proxies::default(),
            no_proxy: None,
            retries: 9,
            retry_interval: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(60),
        }
    }
}

impl HttpOptions {
    /// Adds what a node's `image_info` says about reaching the image server: the
    /// decoded `image_request_authorization`, HTTP basic auth when
    /// `image_server_auth_strategy` is `http_basic`, `proxies` and `no_proxy`. TLS and
    /// retry settings stay as configured for the agent. Precedence follows
    /// ironic-python-agent: a full Authorization value wins over basic auth from
    /// `image_info`, which wins over basic auth already set from the agent's config.
    pub fn with_image_info(mut self, info: &ImageInfo) -> Result<Self, SourceError> {
        use base64::Engine as _;
        if let Some(encoded) = info.image_request_authorization.as_deref() {
            let bad = || SourceError::InvalidOption { what: "image_request_authorization" };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| bad())?;
            self.authorization = Some(String::from_utf8(decoded).map_err(|_| bad())?);
        }
        if info.image_server_auth_strategy.as_deref() == Some("http_basic") {
            match (&info.image_server_user, &info.image_server_password) {
                (Some(user), Some(password)) if !user.is_empty() => {
                    self.basic_auth = Some((user.clone(), password.clone()));
                }
                _ => {
                    return Err(SourceError::InvalidOption {
                        what: "http_basic credentials (image_server_user, image_server_password)",
                    })
                }
            }
        }
        if let Some(proxies) = &info.proxies {
            self.proxies = proxies.clone();
        }
        if info.no_proxy.is_some() {
            self.no_proxy = info.no_proxy.clone();
        }
        Ok(self)
    }
}

/// One step of a source's sequential stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// The next bytes of the image, following the previous ones.
    Data(Vec<u8>),
    /// The next `len` bytes of the image are zeros, known without receiving them (a hole
    /// listed by the server's data map).
    Hole(u64),
    /// The stream started over at byte 0 (e.g. the server ignored a Range request after a
    /// cut): everything received so far must be discarded and hashing restarted.
    Restart,
}

/// Counters a source keeps about its own recovery, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Retried requests (connection errors, 5xx, stalls, cuts).
    pub retries: u32,
    /// Streams resumed with a Range request after a cut.
    pub resumes: u32,
    /// Bytes received twice because of resumes.
    pub refetched_bytes: u64,
    /// Streams restarted from byte 0.
    pub restarts: u32,
    /// Bytes already handed out as [`SourceEvent::Data`] and then withdrawn by a
    /// [`SourceEvent::Restart`].
    pub discarded_bytes: u64,
}

/// Why a source could not deliver. URLs in these errors never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A source-specific failure without a dedicated variant (file sources, test fakes).
    #[error("{0}")]
    Other(String),
    #[error("cannot read {}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid image URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("the HTTP download worker stopped unexpectedly")]
    WorkerStopped,
    #[error("cannot start the HTTP download worker")]
    Runtime(#[source] std::io::Error),
    #[error("cannot set up TLS for image downloads")]
    Tls(#[source] crate::tls::TlsError),
    #[error("invalid {what} for image downloads")]
    InvalidOption { what: &'static str },
    #[error("invalid proxy URL {url:?}")]
    Proxy {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// 4xx and other replies that retrying cannot fix.
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("too many redirects from {url}")]
    TooManyRedirects { url: String },
    #[error("certificate of {url} rejected")]
    Certificate {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("giving up on {url} after {attempts} attempts")]
    RetriesExhausted {
        url: String,
        attempts: u32,
        #[source]
        last: TransientFailure,
    },
    #[error("{url} does not serve byte ranges (HTTP 200 to a Range request)")]
    RangeNotSupported { url: String },
    #[error("{url} answered a Range request with Content-Range {value:?}")]
    BadContentRange { url: String, value: String },
    #[error("{url} changed while it was being read")]
    ResourceChanged { url: String },
    #[error("{url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{url} is not UTF-8 text")]
    NotText { url: String },
}

/// A failure that is worth retrying; the last one is kept when retries run out.
#[derive(Debug, thiserror::Error)]
pub enum TransientFailure {
    #[error("connection failed")]
    Transport(#[source] reqwest::Error),
    #[error("server error HTTP {status}")]
    ServerError { status: u16 },
    #[error("no data for {0:?}")]
    Stall(std::time::Duration),
    #[error("connection closed after {received} of {expected} bytes")]
    Truncated { received: u64, expected: u64 },
}

/// A source of image bytes: random reads for metadata, then one sequential pass.
pub trait ImageSource: Send {
    /// The image's length in bytes, when the source knows it.
    fn size(&self) -> Option<u64>;
    /// Reads exactly `len` bytes at `offset` (fewer only at the end of the image).
    fn read_range(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, SourceError>;
    /// The next event of the sequential stream from byte 0; `None` at the end.
    fn next_event(&mut self) -> Result<Option<SourceEvent>, SourceError>;
    /// Recovery counters so far.
    fn stats(&self) -> SourceStats;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_info_sets_auth_and_proxies() {
        let info = ImageInfo {
            // base64("Bearer t0k")
            image_request_authorization: Some("QmVhcmVyIHQwaw==".into()),
            image_server_auth_strategy: Some("http_basic".into()),
            image_server_user: Some("u".into()),
            image_server_password: Some("p".into()),
            proxies: Some(Proxies { http: Some("http://proxy:3128".into()), https: None }),
            no_proxy: Some("10.0.0.0/8".into()),
            ..ImageInfo::default()
        };
        let base = HttpOptions { retries: 2, ..HttpOptions::default() };
        let opts = base.clone().with_image_info(&info).unwrap();
        assert_eq!(opts.authorization.as_deref(), Some("Bearer t0k"));
        assert_eq!(opts.basic_auth, Some(("u".into(), "p".into())));
        assert_eq!(opts.proxies.http.as_deref(), Some("http://proxy:3128"));
        assert_eq!(opts.no_proxy.as_deref(), Some("10.0.0.0/8"));
        assert_eq!(opts.retries, 2);

        // Nothing in image_info: the agent's own settings stay.
        let own = HttpOptions { basic_auth: Some(("a".into(), "b".into())), ..base.clone() };
        assert_eq!(own.clone().with_image_info(&ImageInfo::default()).unwrap(), own);

        let table = [
            ImageInfo {
                image_request_authorization: Some("not base64!".into()),
                ..ImageInfo::default()
            },
            // base64 of invalid UTF-8
            ImageInfo { image_request_authorization: Some("//79".into()), ..ImageInfo::default() },
            ImageInfo {
                image_server_auth_strategy: Some("http_basic".into()),
                image_server_user: Some("u".into()),
                ..ImageInfo::default()
            },
        ];
        for info in table {
            let err = base.clone().with_image_info(&info).unwrap_err();
            assert!(matches!(err, SourceError::InvalidOption { .. }), "{info:?}: {err:?}");
        }
    }
}
