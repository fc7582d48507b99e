//! `system_vendor` from the kernel's DMI attributes (`/sys/class/dmi/id`).

use ferric_shared::inventory::{SystemFirmware, SystemVendor};

use super::attr;
use crate::host::HostRoot;

const DMI_ID: &str = "/sys/class/dmi/id";

/// Unknown or unreadable values are `""`, as IPA reports them. `product_serial` is
/// readable by root only, which the agent is.
pub fn system_vendor(host: &HostRoot) -> SystemVendor {
    let get = |name: &str| attr(host, &format!("{DMI_ID}/{name}")).unwrap_or_default();
    SystemVendor {
        product_name: get("product_name"),
        serial_number: get("product_serial"),
        manufacturer: get("sys_vendor"),
        firmware: SystemFirmware {
            vendor: get("bios_vendor"),
            version: get("bios_version"),
            build_date: get("bios_date"),
        },
    }
}
