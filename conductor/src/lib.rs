//! `ferric-conductor`: the host side of Ferric — the Ironic-compatible API service
//! (`ferric conductor`) and the operator CLI (`ferric node …`, `ferric port …`).

pub mod agent_client;
pub mod api;
pub mod bmc;
pub mod boot;
pub mod cli;
pub mod config;
pub mod configdrive;
pub mod images;
pub mod inspection;
pub mod orchestrate;
pub mod periodic;
pub mod service;
pub mod store;

/// The conductor's version, as reported by `ferric --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An error and all its sources joined with ": ", for logs and `last_error` (each
/// error's `Display` names only its own layer).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !next.is_empty() && !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}
