//! The hardware inventory JSON (`poll.get_hardware_info`, inspection `inventory`).
//!
//! Key names, units and nullability follow ironic-python-agent exactly: sizes are bytes
//! except `memory.physical_mb` (MiB), `cpu.frequency` is a *string* of MHz, and `bmc_mac`
//! is left out entirely when unknown. Two additive extensions ride along (Ironic keeps
//! unknown keys): `pci_devices`, shaped like IPA's `pci-devices` collector output, and
//! `gpu_count`. Both default when absent so inventories from a real IPA still parse.

use serde::{Deserialize, Serialize};

/// The whole inventory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub interfaces: Vec<NetworkInterface>,
    pub cpu: Cpu,
    pub disks: Vec<BlockDevice>,
    pub memory: Memory,
    /// `null`: no in-band IPMI device; `"0.0.0.0"`: a device but no configured address.
    pub bmc_address: Option<String>,
    /// `null`: no in-band IPMI device; `"::/0"`: a device but no configured address.
    pub bmc_v6address: Option<String>,
    /// IPA omits the key (rather than sending `null`) when the MAC is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc_mac: Option<String>,
    pub system_vendor: SystemVendor,
    pub boot: BootInfo,
    pub hostname: String,
    /// Ferric extension: every PCI function, in IPA `pci-devices` collector form.
    #[serde(default)]
    pub pci_devices: Vec<PciDevice>,
    /// Ferric extension: PCI functions of the display class (`0x03xxxx`).
    #[serde(default)]
    pub gpu_count: u32,
}

impl Inventory {
    /// The MAC addresses of all reported interfaces, in report order.
    pub fn mac_addresses(&self) -> Vec<String> {
        self.interfaces.iter().map(|i| i.mac_address.clone()).collect()
    }
}

/// One network interface (`interfaces[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkInterface {
    pub name: String,
    pub mac_address: String,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
    pub has_carrier: bool,
    /// `[[tlv_type, "hex"]…]`, only when LLDP collection was asked for.
    pub lldp: Option<Vec<(u8, String)>>,
    /// sysfs PCI vendor id as the kernel prints it, e.g. `"0x8086"`.
    pub vendor: Option<String>,
    /// sysfs PCI device id as the kernel prints it, e.g. `"0x1572"`.
    pub product: Option<String>,
    /// InfiniBand DHCP client id.
    pub client_id: Option<String>,
    pub biosdevname: Option<String>,
    /// Link speed; `null` when unknown (never `0`).
    pub speed_mbps: Option<u32>,
    pub pci_address: Option<String>,
    pub driver: Option<String>,
}

/// `cpu`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    pub model_name: Option<String>,
    /// MHz as a string with four decimals (`"2400.0000"`), the form lscpu prints.
    pub frequency: Option<String>,
    /// Logical CPUs.
    pub count: u32,
    pub architecture: String,
    pub flags: Vec<String>,
    #[serde(default = "one")]
    pub socket_count: u32,
}

fn one() -> u32 {
    1
}

/// One whole disk (`disks[]`), IPA's `BlockDevice`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockDevice {
    /// Full device path, `/dev/sda`.
    pub name: String,
    pub model: Option<String>,
    /// Bytes.
    pub size: u64,
    pub rotational: bool,
    pub wwn: Option<String>,
    pub serial: Option<String>,
    pub vendor: Option<String>,
    pub wwn_with_extension: Option<String>,
    pub wwn_vendor_extension: Option<String>,
    /// SCSI `host:channel:target:lun`.
    pub hctl: Option<String>,
    pub by_path: Option<String>,
    pub logical_sectors: Option<u32>,
    pub physical_sectors: Option<u32>,
    /// Transport as lsblk names it: `nvme`, `sata`, `sas`, `usb`, or `null`.
    pub tran: Option<String>,
}

/// `memory`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Usable memory in bytes.
    pub total: Option<u64>,
    /// Installed memory in MiB.
    pub physical_mb: Option<u64>,
}

/// `system_vendor`. Unknown strings are `""`, as IPA sends them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemVendor {
    pub product_name: String,
    pub serial_number: String,
    pub manufacturer: String,
    #[serde(default)]
    pub firmware: SystemFirmware,
}

/// `system_vendor.firmware`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemFirmware {
    pub vendor: String,
    pub version: String,
    pub build_date: String,
}

/// `boot`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BootInfo {
    pub current_boot_mode: BootMode,
    /// The raw `BOOTIF` kernel parameter (`01-aa-bb-…` or `aa:bb:…`), unnormalized.
    pub pxe_interface: Option<String>,
}

/// `boot.current_boot_mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    Uefi,
    #[default]
    Bios,
}

/// One PCI function (`pci_devices[]`). Ids are lowercase hex *without* the `0x` that
/// sysfs prints, exactly as IPA's `pci-devices` collector reports them (unlike
/// `interfaces[].vendor`, which keeps the `0x`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDevice {
    /// `"8086"`.
    pub vendor_id: String,
    /// `"1572"`.
    pub product_id: String,
    /// Six hex digits: class, subclass, programming interface, e.g. `"020000"`.
    pub class: String,
    /// `"01"`, or `null` when the kernel exposes no revision.
    pub revision: Option<String>,
    /// The PCI address, `"0000:01:00.0"`.
    pub bus: String,
}

impl PciDevice {
    /// PCI base class 0x03: display controllers (VGA, 3D, other display).
    pub fn is_display(&self) -> bool {
        self.class.len() == 6 && self.class.starts_with("03")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The facts reference's example inventory with one concrete value per field.
    fn facts_example() -> serde_json::Value {
        json!({
            "interfaces": [{
                "name": "eth0",
                "mac_address": "aa:bb:cc:dd:ee:ff",
                "ipv4_address": "10.0.0.5",
                "ipv6_address": "fe80::aabb:ccff:fedd:eeff",
                "has_carrier": true,
                "lldp": [[1, "04aabbccddeeff"]],
                "vendor": "0x8086",
                "product": "0x1572",
                "client_id": null,
                "biosdevname": "em1",
                "speed_mbps": 10000,
                "pci_address": "0000:01:00.0",
                "driver": "i40e"
            }],
            "cpu": {
                "model_name": "Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz",
                "frequency": "2400.0000",
                "count": 32,
                "architecture": "x86_64",
                "flags": ["fpu", "vme"],
                "socket_count": 2
            },
            "disks": [{
                "name": "/dev/sda",
                "model": "SSD 860",
                "size": 480103981056_u64,
                "rotational": false,
                "wwn": "0x5002538e40a1b2c3",
                "serial": "S3Z9NB0K123456",
                "vendor": "ATA",
                "wwn_with_extension": "0x5002538e40a1b2c3",
                "wwn_vendor_extension": null,
                "hctl": "0:0:0:0",
                "by_path": "/dev/disk/by-path/pci-0000:00:17.0-ata-1",
                "logical_sectors": 512,
                "physical_sectors": 4096,
                "tran": "sata"
            }],
            "memory": {"total": 67219357696_u64, "physical_mb": 65536},
            "bmc_address": "192.168.1.10",
            "bmc_v6address": "::/0",
            "bmc_mac": "aa:bb:cc:00:11:22",
            "system_vendor": {
                "product_name": "PowerEdge R640",
                "serial_number": "ABC1234",
                "manufacturer": "Dell Inc.",
                "firmware": {"vendor": "Dell Inc.", "version": "2.11.2", "build_date": "06/28/2021"}
            },
            "boot": {"current_boot_mode": "uefi", "pxe_interface": "01-aa-bb-cc-dd-ee-ff"},
            "hostname": "localhost.localdomain",
            "pci_devices": [{
                "vendor_id": "8086", "product_id": "1572", "class": "020000",
                "revision": "01", "bus": "0000:01:00.0"
            }],
            "gpu_count": 0
        })
    }

    #[test]
    fn facts_example_round_trips_exactly() {
        let value = facts_example();
        let inv: Inventory = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(inv.cpu.frequency.as_deref(), Some("2400.0000"));
        assert_eq!(inv.memory.physical_mb, Some(65536));
        assert_eq!(inv.boot.current_boot_mode, BootMode::Uefi);
        assert_eq!(inv.interfaces[0].lldp, Some(vec![(1, "04aabbccddeeff".to_owned())]));
        assert_eq!(serde_json::to_value(&inv).unwrap(), value);
    }

    #[test]
    fn bmc_mac_key_is_omitted_when_unknown_but_nulls_stay() {
        let mut inv: Inventory = serde_json::from_value(facts_example()).unwrap();
        inv.bmc_mac = None;
        inv.bmc_address = None;
        let v = serde_json::to_value(&inv).unwrap();
        let obj = v.as_object().unwrap();
        assert!(!obj.contains_key("bmc_mac"));
        assert_eq!(obj["bmc_address"], serde_json::Value::Null);
        assert_eq!(obj["bmc_v6address"], json!("::/0"));
    }

    #[test]
    fn ipa_inventory_without_extensions_parses() {
        let mut value = facts_example();
        let obj = value.as_object_mut().unwrap();
        obj.remove("pci_devices");
        obj.remove("gpu_count");
        obj.remove("bmc_mac");
        let inv: Inventory = serde_json::from_value(value).unwrap();
        assert!(inv.pci_devices.is_empty());
        assert_eq!(inv.gpu_count, 0);
        assert_eq!(inv.bmc_mac, None);
        assert_eq!(inv.mac_addresses(), vec!["aa:bb:cc:dd:ee:ff"]);
    }

    #[test]
    fn boot_mode_spellings() {
        assert_eq!(serde_json::to_value(BootMode::Bios).unwrap(), json!("bios"));
        assert_eq!(serde_json::to_value(BootMode::Uefi).unwrap(), json!("uefi"));
        assert!(serde_json::from_value::<BootMode>(json!("UEFI")).is_err());
    }

    #[test]
    fn display_class_detection() {
        let dev = |class: &str| PciDevice { class: class.to_owned(), ..PciDevice::default() };
        assert!(dev("030000").is_display());
        assert!(dev("030200").is_display());
        assert!(!dev("020000").is_display());
        assert!(!dev("0300").is_display());
    }
}
