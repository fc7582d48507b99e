//! `ferric-agent`: the deploy agent that runs in Ferric's ramdisk on the server being
//! provisioned. It looks itself up at the conductor (or a real Ironic), heartbeats,
//! serves the ironic-python-agent command API, and reports the hardware inventory.
//!
//! See `ARCHITECTURE.md` at the repository root for the code map.

pub mod config;
#[cfg(any(test, feature = "test-fixtures"))]
pub mod fixtures;
pub mod host;
pub mod inventory;
pub mod session;
