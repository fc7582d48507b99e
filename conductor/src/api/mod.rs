//! The Ironic-compatible REST API.

pub mod body;
pub mod error;
pub mod patch;
pub mod version;
