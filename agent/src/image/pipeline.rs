//! Connects source, decoder, verifier and writer into one pass.

use std::path::PathBuf;

use ferric_shared::image_info::ChecksumSource;

use super::progress::Progress;
use super::source::HttpOptions;

/// The image format asked for; `Auto` detects it from the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatChoice {
    #[default]
    Auto,
    Raw,
    Qcow2,
    Gzip,
    Xz,
    Zstd,
}

/// What a `write_image` run is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRequest {
    /// Image URLs (`http://`, `https://`, `file://` or a path), tried in order.
    pub urls: Vec<String>,
    /// The block device or regular file written.
    pub target: PathBuf,
    /// How the image is verified; `None` only for an explicitly unverified standalone run.
    pub checksum: Option<ChecksumSource>,
    /// Whether an MD5 digest is acceptable (lookup's `agent_md5_checksum_enable`).
    pub md5_allowed: bool,
    pub format: FormatChoice,
    /// `image_info.disk_format`, which the detected format must agree with.
    pub declared_disk_format: Option<String>,
    /// Lookup's `permitted_image_formats`; `None` permits every supported format.
    pub permitted_formats: Option<Vec<String>>,
    /// base64(gzip(ISO 9660)) or an http(s) URL.
    pub configdrive: Option<String>,
    pub http: HttpOptions,
}

/// Why an image was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("write_image is not supported by this agent yet")]
    NotSupported,
}

/// What a successful run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// Bytes of image data written (zero runs not counted).
    pub bytes_written: u64,
    /// The size of the decoded image.
    pub image_size: u64,
}

/// Writes the image, reporting into `progress`. Blocking: call it from a thread that may
/// block.
pub fn write_image(
    _request: &WriteRequest,
    _progress: &Progress,
) -> Result<WriteReport, WriteError> {
    Err(WriteError::NotSupported)
}
