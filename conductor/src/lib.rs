//! `ferric-conductor`: the host side of Ferric — the Ironic-compatible API service
//! (`ferric conductor`) and the operator CLI (`ferric node …`, `ferric port …`).

pub mod api;
pub mod bmc;
pub mod boot;
pub mod config;
pub mod images;
pub mod orchestrate;
pub mod periodic;
pub mod store;

/// The conductor's version, as reported by `ferric --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
