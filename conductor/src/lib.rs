//! `ferric-conductor`: the host side of Ferric — the Ironic-compatible API service
//! (`ferric conductor`) and the operator CLI (`ferric node …`, `ferric port …`).
//!
//! The service itself is not built yet; this crate currently provides only the command
//! line entry point so the workspace layout is complete.

/// The conductor's version, as reported by `ferric --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
