//! The image path: an image is read once from its source, decoded (raw, qcow2, gzip, xz,
//! zstd), verified while it streams, and written to the target disk so that nothing on
//! the disk is bootable until the digest has matched.
//!
//! Each stage is its own module; [`pipeline`] connects them.

pub mod buffers;
pub mod decompress;
pub mod extent;
pub mod file_source;
pub mod format;
pub mod http;
pub mod pipeline;
pub mod progress;
pub mod qcow2;
pub mod sink;
pub mod source;
pub mod verify;
