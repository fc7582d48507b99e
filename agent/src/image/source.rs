//! Where image bytes come from. The pipeline reads a source from a dedicated thread, so
//! the interface is blocking.

use std::path::PathBuf;
use std::time::Duration;

use ferric_shared::image_info::Proxies;

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
    /// Retries after connection errors, 5xx and stalls (`ipa-image-download-connection-retries`).
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

/// One step of a source's sequential stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// The next bytes of the image, following the previous ones.
    Data(Vec<u8>),
    /// The stream started over at byte 0 (e.g. the server ignored a Range request after a
    /// cut): everything received so far must be discarded and hashing restarted.
    Restart,
}

/// Counters a source keeps about its own recovery, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Retried requests (connection errors, 5xx, stalls).
    pub retries: u32,
    /// Streams resumed with a Range request after a cut.
    pub resumes: u32,
    /// Bytes received twice because of resumes.
    pub refetched_bytes: u64,
    /// Streams restarted from byte 0.
    pub restarts: u32,
}

/// Why a source could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Other(String),
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
