//! The hardware inventory (`poll.get_hardware_info`), read from sysfs, procfs and SMBIOS
//! through a [`HostRoot`] — no lshw, lsblk or dmidecode.
//!
//! (Being written; the signature of [`collect`] is the contract other modules use.)

use crate::host::HostRoot;
use ferric_shared::inventory::Inventory;

/// Where the inventory is read from.
#[derive(Debug, Clone)]
pub struct InventorySources {
    pub host: HostRoot,
    /// The raw `BOOTIF` kernel parameter, reported as `boot.pxe_interface`.
    pub bootif: Option<String>,
}

/// Why the inventory could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Collects the whole inventory.
pub fn collect(_sources: &InventorySources) -> Result<Inventory, InventoryError> {
    Ok(Inventory::default())
}
