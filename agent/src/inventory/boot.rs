//! `boot` and `hostname`.

use ferric_shared::inventory::{BootInfo, BootMode};

use super::attr;
use crate::host::HostRoot;

/// The kernel creates `/sys/firmware/efi` only when it was started by UEFI firmware.
pub fn boot_mode(host: &HostRoot) -> BootMode {
    if host.exists("/sys/firmware/efi") {
        BootMode::Uefi
    } else {
        BootMode::Bios
    }
}

/// `pxe_interface` is the raw `BOOTIF` value; Ironic normalizes it on its side.
pub fn collect(host: &HostRoot, bootif: Option<String>) -> BootInfo {
    BootInfo { current_boot_mode: boot_mode(host), pxe_interface: bootif }
}

pub fn hostname(host: &HostRoot) -> String {
    attr(host, "/proc/sys/kernel/hostname").unwrap_or_default()
}
