//! Wire types and pure logic shared by `ferric-agent` and `ferric` (the conductor).
//!
//! Everything here speaks the OpenStack Ironic / ironic-python-agent wire protocols:
//! field names, units and status strings match those projects exactly, so that the
//! Ferric agent can be driven by a real Ironic and the `baremetal` CLI can drive the
//! Ferric conductor. This crate does no I/O: no async runtime, no HTTP, no filesystem.

pub mod api_version;
pub mod command;
pub mod data_map;
pub mod error_body;
pub mod heartbeat;
pub mod hints;
pub mod image_info;
pub mod inventory;
pub mod lookup;
pub mod node;
pub mod partition_uuids;
pub mod port;
pub mod states;
pub mod steps;
