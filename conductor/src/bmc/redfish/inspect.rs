//! Out-of-band inspection: the system's Redfish resources turned into the inventory
//! shape the agent reports, so the inspection flow treats both sources alike.
//!
//! BMCs fill these resources unevenly; anything missing or malformed is left at the
//! inventory's default rather than failing the inspection.

use ferric_shared::inventory::{
    BlockDevice, BootInfo, BootMode, Cpu, Inventory, Memory, NetworkInterface, SystemFirmware,
    SystemVendor,
};
use serde_json::{Map, Value};

/// What out-of-band inspection found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OobInspection {
    pub inventory: Inventory,
    /// `SecureBootEnable`, when the BMC exposes secure boot.
    pub secure_boot: Option<bool>,
    /// The current BIOS attributes (empty when the BMC exposes none).
    pub bios_attributes: Map<String, Value>,
}

/// The resources read from the BMC, as JSON.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub system: Value,
    pub processors: Vec<Value>,
    pub interfaces: Vec<Value>,
    /// `Storage/*/Drives/*` resources and `SimpleStorage/*/Devices[]` entries.
    pub drives: Vec<Value>,
    pub secure_boot: Option<Value>,
    pub bios: Option<Value>,
}

fn text(value: &Value, key: &str) -> Option<String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn number(value: &Value, key: &str) -> Option<f64> {
    value.get(key).and_then(Value::as_f64).filter(|n| n.is_finite() && *n >= 0.0)
}

/// Redfish `ProcessorArchitecture`/`InstructionSet` values in the kernel's words.
fn architecture(processor: &Value) -> Option<String> {
    let set =
        text(processor, "InstructionSet").or_else(|| text(processor, "ProcessorArchitecture"))?;
    Some(
        match set.as_str() {
            "x86-64" | "x86" => "x86_64",
            "IA-64" => "ia64",
            "ARM-A64" => "aarch64",
            "ARM-A32" => "armv7l",
            "PowerISA" | "Power" => "ppc64le",
            "MIPS64" => "mips64",
            other => other,
        }
        .to_owned(),
    )
}

fn is_cpu(processor: &Value) -> bool {
    text(processor, "ProcessorType").is_none_or(|t| t == "CPU")
}

fn cpu(collected: &Collected) -> Cpu {
    let summary = collected.system.get("ProcessorSummary").cloned().unwrap_or_default();
    let cpus: Vec<&Value> = collected.processors.iter().filter(|p| is_cpu(p)).collect();
    // Threads are what the kernel counts as CPUs, which is what the agent reports.
    let threads: f64 = cpus.iter().filter_map(|p| number(p, "TotalThreads")).sum();
    let count = if threads > 0.0 {
        threads as u32
    } else {
        number(&summary, "LogicalProcessorCount")
            .or_else(|| number(&summary, "Count"))
            .map(|n| n as u32)
            .unwrap_or(cpus.len() as u32)
    };
    let socket_count = if cpus.is_empty() {
        number(&summary, "Count").map(|n| n as u32).unwrap_or(0)
    } else {
        cpus.len() as u32
    };
    Cpu {
        model_name: cpus.iter().find_map(|p| text(p, "Model")).or_else(|| text(&summary, "Model")),
        frequency: cpus
            .iter()
            .find_map(|p| number(p, "MaxSpeedMHz"))
            .map(|mhz| format!("{}", mhz as u64)),
        count,
        architecture: cpus.iter().find_map(|p| architecture(p)).unwrap_or_default(),
        flags: Vec::new(),
        socket_count,
    }
}

fn interfaces(collected: &Collected) -> Vec<NetworkInterface> {
    collected
        .interfaces
        .iter()
        .filter_map(|nic| {
            let mac = text(nic, "MACAddress").or_else(|| text(nic, "PermanentMACAddress"))?;
            Some(NetworkInterface {
                name: text(nic, "Id").or_else(|| text(nic, "Name")).unwrap_or_else(|| mac.clone()),
                mac_address: mac.to_ascii_lowercase(),
                has_carrier: text(nic, "LinkStatus").is_some_and(|s| s == "LinkUp"),
                speed_mbps: number(nic, "SpeedMbps").map(|n| n as u32),
                ..NetworkInterface::default()
            })
        })
        .collect()
}

fn disks(collected: &Collected) -> Vec<BlockDevice> {
    collected
        .drives
        .iter()
        .filter_map(|drive| {
            let size = number(drive, "CapacityBytes")? as u64;
            Some(BlockDevice {
                name: text(drive, "Id").or_else(|| text(drive, "Name")).unwrap_or_default(),
                model: text(drive, "Model"),
                size,
                rotational: text(drive, "MediaType").is_some_and(|m| m == "HDD"),
                serial: text(drive, "SerialNumber"),
                vendor: text(drive, "Manufacturer"),
                tran: text(drive, "Protocol").map(|p| p.to_ascii_lowercase()),
                ..BlockDevice::default()
            })
        })
        .collect()
}

/// Builds the inspection result from what was read.
pub fn build(collected: &Collected) -> OobInspection {
    let system = &collected.system;
    let memory_gib = system.get("MemorySummary").and_then(|m| number(m, "TotalSystemMemoryGiB"));
    let boot_mode = system
        .get("Boot")
        .and_then(|b| text(b, "BootSourceOverrideMode"))
        .map(|m| if m == "UEFI" { BootMode::Uefi } else { BootMode::Bios })
        .unwrap_or_default();
    let inventory = Inventory {
        interfaces: interfaces(collected),
        cpu: cpu(collected),
        disks: disks(collected),
        memory: Memory {
            total: memory_gib.map(|g| (g * 1024.0 * 1024.0 * 1024.0) as u64),
            physical_mb: memory_gib.map(|g| (g * 1024.0) as u64),
        },
        system_vendor: SystemVendor {
            product_name: text(system, "Model").unwrap_or_default(),
            serial_number: text(system, "SerialNumber").unwrap_or_default(),
            manufacturer: text(system, "Manufacturer").unwrap_or_default(),
            firmware: SystemFirmware {
                version: text(system, "BiosVersion").unwrap_or_default(),
                ..SystemFirmware::default()
            },
        },
        boot: BootInfo { current_boot_mode: boot_mode, pxe_interface: None },
        hostname: text(system, "HostName").unwrap_or_default(),
        ..Inventory::default()
    };
    OobInspection {
        inventory,
        secure_boot: collected
            .secure_boot
            .as_ref()
            .and_then(|s| s.get("SecureBootEnable"))
            .and_then(Value::as_bool),
        bios_attributes: collected
            .bios
            .as_ref()
            .and_then(|b| b.get("Attributes"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_full_system_maps_to_the_agent_inventory_shape() {
        let collected = Collected {
            system: json!({
                "Manufacturer": "Contoso", "Model": "3500", "SerialNumber": "437XR1138R2",
                "BiosVersion": "P79 v1.45", "HostName": "web483",
                "ProcessorSummary": {"Count": 2, "LogicalProcessorCount": 16, "Model": "Multi-Core Intel(R) Xeon(R) processor 7xxx Series"},
                "MemorySummary": {"TotalSystemMemoryGiB": 96},
                "Boot": {"BootSourceOverrideMode": "UEFI"},
            }),
            processors: vec![
                json!({"ProcessorType": "CPU", "InstructionSet": "x86-64", "Model": "Xeon 7110",
                       "MaxSpeedMHz": 3700, "TotalThreads": 8}),
                json!({"ProcessorType": "CPU", "InstructionSet": "x86-64", "TotalThreads": 8}),
                json!({"ProcessorType": "GPU", "TotalThreads": 2048}),
            ],
            interfaces: vec![
                json!({"Id": "NIC.1", "MACAddress": "AA:BB:CC:00:11:22", "LinkStatus": "LinkUp", "SpeedMbps": 10000}),
                json!({"Id": "NIC.2", "PermanentMACAddress": "aa:bb:cc:00:11:23", "LinkStatus": "LinkDown"}),
                json!({"Id": "broken"}),
            ],
            drives: vec![
                json!({"Id": "Disk.1", "CapacityBytes": 899527000000u64, "MediaType": "HDD",
                       "Model": "ST9146802SS", "SerialNumber": "72D0A037FRD26", "Protocol": "SAS"}),
                json!({"Name": "nvme0", "CapacityBytes": 1.6e12, "MediaType": "SSD"}),
                json!({"Id": "no size"}),
            ],
            secure_boot: Some(json!({"SecureBootEnable": true})),
            bios: Some(json!({"Attributes": {"BootMode": "Uefi", "ProcTurboMode": "Enabled"}})),
        };
        let found = build(&collected);
        let inv = &found.inventory;
        assert_eq!(inv.cpu.count, 16);
        assert_eq!(inv.cpu.socket_count, 2);
        assert_eq!(inv.cpu.architecture, "x86_64");
        assert_eq!(inv.cpu.model_name.as_deref(), Some("Xeon 7110"));
        assert_eq!(inv.cpu.frequency.as_deref(), Some("3700"));
        assert_eq!(inv.memory.physical_mb, Some(96 * 1024));
        assert_eq!(inv.memory.total, Some(96 << 30));
        assert_eq!(inv.mac_addresses(), ["aa:bb:cc:00:11:22", "aa:bb:cc:00:11:23"]);
        assert!(inv.interfaces[0].has_carrier && !inv.interfaces[1].has_carrier);
        assert_eq!(inv.interfaces[0].speed_mbps, Some(10000));
        assert_eq!(inv.disks.len(), 2);
        assert_eq!((inv.disks[0].size, inv.disks[0].rotational), (899527000000, true));
        assert_eq!(inv.disks[0].tran.as_deref(), Some("sas"));
        assert_eq!((inv.disks[1].name.as_str(), inv.disks[1].size), ("nvme0", 1_600_000_000_000));
        assert_eq!(inv.system_vendor.manufacturer, "Contoso");
        assert_eq!(inv.system_vendor.product_name, "3500");
        assert_eq!(inv.system_vendor.serial_number, "437XR1138R2");
        assert_eq!(inv.system_vendor.firmware.version, "P79 v1.45");
        assert_eq!(inv.boot.current_boot_mode, BootMode::Uefi);
        assert_eq!(inv.hostname, "web483");
        assert_eq!(found.secure_boot, Some(true));
        assert_eq!(found.bios_attributes["ProcTurboMode"], "Enabled");
        // The agent's JSON shape: it serializes and parses back unchanged.
        let wire = serde_json::to_value(inv).unwrap();
        assert_eq!(&serde_json::from_value::<Inventory>(wire).unwrap(), inv);
    }

    #[test]
    fn sparse_or_malformed_resources_leave_defaults() {
        let collected = Collected {
            system: json!({"ProcessorSummary": {"Count": "two"}, "MemorySummary": [],
                           "Boot": {"BootSourceOverrideMode": "Legacy"}, "Model": 5}),
            processors: vec![json!("not an object"), json!({"TotalThreads": -4})],
            interfaces: vec![json!(null)],
            drives: vec![json!({"CapacityBytes": "lots"})],
            secure_boot: Some(json!({"SecureBootEnable": "yes"})),
            bios: Some(json!({"Attributes": []})),
        };
        let found = build(&collected);
        assert_eq!(found.inventory.cpu.count, 2);
        assert_eq!(found.inventory.cpu.architecture, "");
        assert_eq!(found.inventory.memory.total, None);
        assert!(found.inventory.interfaces.is_empty());
        assert!(found.inventory.disks.is_empty());
        assert_eq!(found.inventory.boot.current_boot_mode, BootMode::Bios);
        assert_eq!(found.inventory.system_vendor.product_name, "");
        assert_eq!(found.secure_boot, None);
        assert!(found.bios_attributes.is_empty());
    }
}
