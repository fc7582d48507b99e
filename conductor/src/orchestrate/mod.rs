//! Deploy, clean and inspect flows driven by heartbeats. Every step is idempotent and
//! restartable: the node's state in the store says where a flow stands.

pub mod clean;
pub mod deploy;
pub mod inspect;
pub mod plan;
pub mod reboot;
pub mod retry;
pub mod worker;
