//! A qcow2 decoder built for streaming: no I/O of its own, and safe on hostile input.
//!
//! Decoding happens in two steps, so that an image never has to be staged in RAM or on
//! disk:
//!
//! 1. [`open`] reads the header, the L1 table and every L2 table through a caller-supplied
//!    `read_range(offset, len)` (HTTP Range requests, in the agent), validates them and
//!    builds a [`Plan`]: which host byte ranges hold which guest clusters, and which guest
//!    ranges read as zeros.
//! 2. [`Qcow2Decoder`] is then fed the whole file once, in file order from byte 0; it
//!    picks the clusters out as they pass by and hands the writer [`Extent`]s at guest
//!    offsets, covering every byte of the virtual size exactly once.
//!
//! Refused outright: backing files and external data files (the content would come from
//! elsewhere), encryption, extended L2 entries (subclusters), zstd-compressed clusters,
//! unknown incompatible features, and images marked corrupt. Refcounts are never read:
//! reading an image does not need them.
//!
//! [`Extent`]: super::extent::Extent

mod header;
mod plan;
mod stream;

#[cfg(test)]
mod tests;

pub use header::{Header, MAX_VIRTUAL_SIZE};
pub use plan::{open, Cluster, ClusterKind, Plan, MAX_ALLOCATED_CLUSTERS, MAX_L2_TABLES};
pub use stream::Qcow2Decoder;

/// Why a qcow2 image cannot be decoded. Every variant names the offending structure and
/// where it is, so an operator can tell a damaged image from an unsupported one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Qcow2Error {
    #[error("not a qcow2 image (bad magic)")]
    NotQcow2,
    #[error("qcow2 version {0} is not supported (only 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("qcow2 cluster_bits {0} is out of range (9..=21)")]
    ClusterBits(u32),
    #[error("qcow2 header length {0} is invalid")]
    HeaderLength(u32),
    #[error(
        "qcow2 image has a backing file; refused as unsafe: its content would come from \
         another file"
    )]
    BackingFile,
    #[error(
        "qcow2 image uses an external data file; refused as unsafe: its content would \
         come from another file"
    )]
    ExternalDataFile,
    #[error("qcow2 image is encrypted (method {0}); encrypted images are not supported")]
    Encrypted(u32),
    #[error("qcow2 image uses extended L2 entries (subclusters), which are not supported")]
    ExtendedL2,
    #[error("qcow2 image is marked corrupt by its header")]
    MarkedCorrupt,
    #[error("qcow2 image has unknown incompatible features {0:#x}")]
    UnknownIncompatibleFeatures(u64),
    #[error(
        "qcow2 image uses zstd-compressed clusters, which are not supported; \
         recompress it with compression_type=zlib"
    )]
    ZstdCompression,
    #[error("qcow2 image uses unknown compression type {0}")]
    UnknownCompression(u8),
    #[error("qcow2 virtual size {size} bytes exceeds the supported maximum of {max} bytes")]
    VirtualSizeTooLarge { size: u64, max: u64 },
    #[error("qcow2 L1 table would need {entries} entries, more than the maximum {max}")]
    L1TooLarge { entries: u64, max: u64 },
    #[error("qcow2 L1 table has {l1_size} entries but the virtual size needs {needed}")]
    L1TooSmall { l1_size: u32, needed: u64 },
    #[error("qcow2 image maps more than {max} clusters")]
    TooManyClusters { max: u64 },
    #[error("qcow2 image has more than {max} L2 tables")]
    TooManyL2Tables { max: u64 },
    #[error("qcow2 {what} at offset {offset:#x} is not aligned to a cluster")]
    Unaligned { what: &'static str, offset: u64 },
    #[error("qcow2 {what} at offset {offset:#x} ends at {end:#x}, past the end of the file ({file_len:#x})")]
    PastEnd { what: String, offset: u64, end: u64, file_len: u64 },
    #[error("qcow2 {what} at offset {offset:#x} lies beyond any possible file offset")]
    OffsetOverflow { what: String, offset: u64 },
    #[error("qcow2 file is truncated: reading the {what} at {offset:#x} wanted {wanted} bytes, got {got}")]
    Truncated { what: &'static str, offset: u64, wanted: u64, got: u64 },
    #[error("qcow2 {first} overlaps {second}")]
    Overlap { first: String, second: String },
    #[error(
        "qcow2 version 2 image has a zero-cluster flag in the L2 entry for guest offset \
         {guest:#x} (zero clusters exist only in version 3)"
    )]
    ZeroFlagInV2 { guest: u64 },
    #[error(
        "qcow2 compressed cluster for guest offset {guest:#x} has an invalid host offset {host:#x}"
    )]
    CompressedOffset { guest: u64, host: u64 },
    #[error("qcow2 compressed cluster for guest offset {guest:#x} at host {host:#x} is corrupt: {detail}")]
    Inflate { guest: u64, host: u64, detail: String },
    #[error(
        "qcow2 compressed cluster for guest offset {guest:#x} at host {host:#x} inflates past \
         the cluster size {cluster_size}"
    )]
    InflatesPastCluster { guest: u64, host: u64, cluster_size: u64 },
    #[error(
        "qcow2 compressed cluster for guest offset {guest:#x} at host {host:#x} inflates to \
         {got} bytes, short of the cluster size {cluster_size}"
    )]
    InflatesShort { guest: u64, host: u64, got: u64, cluster_size: u64 },
    #[error(
        "qcow2 stream ended at {stream_len:#x} but the cluster for guest offset {guest:#x} \
         needs host bytes up to {needed_end:#x}"
    )]
    StreamTruncated { stream_len: u64, guest: u64, needed_end: u64 },
    #[error("qcow2 decoder lost its place in the stream at file offset {offset:#x}")]
    LostPlace { offset: u64 },
}
