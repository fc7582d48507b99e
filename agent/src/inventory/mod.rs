//! The hardware inventory (`poll.get_hardware_info`), read from sysfs, procfs and SMBIOS
//! through a [`HostRoot`] — no lshw, lsblk or dmidecode.
//!
//! Every parser here reads outside data: malformed content degrades to `null`/defaults
//! for that one field instead of failing or panicking. [`collect`] fails only when a
//! file every Linux host has (`/proc/cpuinfo`) cannot be read, or when a device
//! directory exists but cannot be listed.

pub mod bmc;
pub mod boot;
pub mod cpu;
pub mod disks;
pub mod dmi;
pub mod memory;
pub mod net;
pub mod pci;
pub mod smbios;

use std::fmt;
use std::io;
use std::sync::Arc;

use crate::host::HostRoot;
use ferric_shared::inventory::Inventory;

pub use bmc::{IpmiError, IpmiTransport};
pub use net::{interface_ipv4, lookup_macs};

/// Where the inventory is read from.
#[derive(Clone)]
pub struct InventorySources {
    pub host: HostRoot,
    /// The raw `BOOTIF` kernel parameter, reported as `boot.pxe_interface`.
    pub bootif: Option<String>,
    /// In-band IPMI to the BMC; `None` reports `bmc_address: null` and no `bmc_mac`.
    pub ipmi: Option<Arc<dyn IpmiTransport>>,
    /// Also report loop, ram and zram devices (IPA never does).
    pub include_virtual: bool,
}

impl fmt::Debug for InventorySources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InventorySources")
            .field("host", &self.host)
            .field("bootif", &self.bootif)
            .field("ipmi", &self.ipmi.as_ref().map(|_| "IpmiTransport"))
            .field("include_virtual", &self.include_virtual)
            .finish()
    }
}

impl InventorySources {
    /// Sources without a BMC connection.
    pub fn new(host: HostRoot, bootif: Option<String>) -> Self {
        Self { host, bootif, ipmi: None, include_virtual: false }
    }

    /// Sources for a host, opening `<root>/dev/ipmi0` when it is a character device.
    /// A device that exists but cannot be opened is logged and treated as absent, as
    /// IPA does when ipmitool fails.
    pub fn for_host(host: HostRoot, bootif: Option<String>) -> Self {
        let ipmi = match bmc::LinuxIpmi::open(&host) {
            Ok(Some(dev)) => Some(Arc::new(dev) as Arc<dyn IpmiTransport>),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "in-band IPMI device present but unusable");
                None
            }
        };
        Self { host, bootif, ipmi, include_virtual: false }
    }

    pub fn with_ipmi(mut self, ipmi: Arc<dyn IpmiTransport>) -> Self {
        self.ipmi = Some(ipmi);
        self
    }
}

/// Why the inventory could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Collects the whole inventory.
pub fn collect(sources: &InventorySources) -> Result<Inventory, InventoryError> {
    let host = &sources.host;
    let cpu = cpu::collect(host)?;
    let memory = memory::collect(host);
    let disks = disks::collect(host, sources.include_virtual)?;
    let interfaces = net::collect(host)?;
    let bmc = match &sources.ipmi {
        Some(t) => bmc::query(t.as_ref()),
        None => bmc::BmcInfo::default(),
    };
    let pci_devices = pci::collect(host)?;
    let gpu_count = pci_devices.iter().filter(|d| d.is_display()).count();
    Ok(Inventory {
        interfaces,
        cpu,
        disks,
        memory,
        bmc_address: bmc.address,
        bmc_v6address: bmc.v6address,
        bmc_mac: bmc.mac,
        system_vendor: dmi::system_vendor(host),
        boot: boot::collect(host, sources.bootif.clone()),
        hostname: boot::hostname(host),
        pci_devices,
        gpu_count: u32::try_from(gpu_count).unwrap_or(u32::MAX),
    })
}

/// Reads a text file, replacing invalid UTF-8 rather than failing: procfs and sysfs are
/// ASCII in practice and one stray byte should cost a field, not the inventory.
pub(crate) fn read_text(host: &HostRoot, path: &str) -> io::Result<String> {
    host.read_bytes(path).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A one-value attribute, trimmed; `None` when missing, unreadable or empty.
pub(crate) fn attr(host: &HostRoot, path: &str) -> Option<String> {
    let s = read_text(host, path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// Lists a directory; a missing directory is an empty list (a host without network
/// devices, a fake tree without PCI), any other failure is an error.
pub(crate) fn list_dir_or_empty(
    host: &HostRoot,
    path: &str,
) -> Result<Vec<String>, InventoryError> {
    match host.list_dir(path) {
        Ok(names) => Ok(names),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(InventoryError::Read { path: path.to_owned(), source }),
    }
}

/// The last component of a symlink's stored target (`../../../0000:01:00.0` → the
/// address), which is how sysfs names the device a link points at.
pub(crate) fn link_basename(host: &HostRoot, path: &str) -> Option<String> {
    let target = host.read_link(path).ok()?;
    target.file_name().map(|n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests;
