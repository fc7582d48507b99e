//! Connects source, decoder, verifier and writer into one pass.

use std::path::PathBuf;

/// What a `write_image` run is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRequest {
    /// Image URLs, tried in order.
    pub urls: Vec<String>,
    /// The block device or regular file written.
    pub target: PathBuf,
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
    pub bytes_written: u64,
}

/// Writes the image. Blocking: call it from a thread that may block.
pub fn write_image(_request: &WriteRequest) -> Result<WriteReport, WriteError> {
    Err(WriteError::NotSupported)
}
