//! `ferric-conductor`: the host side of Ferric — the Ironic-compatible API service
//! (`ferric conductor`) and the operator CLI (`ferric node …`, `ferric port …`).

pub mod agent_client;
pub mod bmc;

/// The conductor's version, as reported by `ferric --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
