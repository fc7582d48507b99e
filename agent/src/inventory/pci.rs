//! `pci_devices` (Ferric extension) from `/sys/bus/pci/devices`.

use ferric_shared::inventory::PciDevice;

use super::{attr, list_dir_or_empty, InventoryError};
use crate::host::HostRoot;

const PCI_DEVICES: &str = "/sys/bus/pci/devices";

/// A sysfs id (`0x8086`) without its `0x`, lowercased; `None` unless it is `0x`
/// followed by hex digits. IPA's collector also keeps only the part after the `x`.
pub fn strip_hex(value: &str) -> Option<String> {
    let hex = value.trim().strip_prefix("0x")?;
    (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// Every PCI function in bus-address order. A function whose vendor, device or class
/// is unreadable or malformed is skipped (as IPA does); a bad revision is `null`.
pub fn collect(host: &HostRoot) -> Result<Vec<PciDevice>, InventoryError> {
    let mut out = Vec::new();
    for bus in list_dir_or_empty(host, PCI_DEVICES)? {
        let get = |name: &str| attr(host, &format!("{PCI_DEVICES}/{bus}/{name}"));
        let (Some(vendor_id), Some(product_id), Some(class)) = (
            get("vendor").and_then(|v| strip_hex(&v)),
            get("device").and_then(|v| strip_hex(&v)),
            get("class").and_then(|v| strip_hex(&v)),
        ) else {
            continue;
        };
        let revision = get("revision").and_then(|v| strip_hex(&v));
        out.push(PciDevice { vendor_id, product_id, class, revision, bus });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids() {
        let cases = [
            ("0x8086", Some("8086")),
            ("0x030000\n", Some("030000")),
            ("0xABCD", Some("abcd")),
            ("8086", None),
            ("0x", None),
            ("0xzz", None),
            ("", None),
        ];
        for (raw, want) in cases {
            assert_eq!(strip_hex(raw).as_deref(), want, "{raw:?}");
        }
    }
}
