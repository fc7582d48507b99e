//! Where image bytes come from. The pipeline reads a source from a dedicated thread, so
//! the interface is blocking.

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
