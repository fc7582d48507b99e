//! `ferric-agent`: the deploy agent that runs in Ferric's ramdisk on the server being
//! provisioned. It looks itself up at the conductor (or a real Ironic), heartbeats,
//! serves the ironic-python-agent command API, and reports the hardware inventory.
//!
//! See `ARCHITECTURE.md` at the repository root for the code map.

pub mod api;
pub mod burnin;
pub mod cmdline;
pub mod commands;
pub mod config;
pub mod disk;
pub mod erase;
pub mod erase_cli;
pub mod executor;
#[cfg(any(test, feature = "test-fixtures"))]
pub mod fixtures;
pub mod host;
pub mod image;
pub mod inspect;
pub mod inventory;
pub mod ironic;
pub mod logbuf;
pub mod power;
pub mod run;
pub mod session;
pub mod target_disk;
pub mod tls;
pub mod write_image_cli;
