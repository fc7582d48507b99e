//! Inspection: what a ramdisk (or a BMC) reports about a machine, turned into the node's
//! properties, capabilities and ports by an ordered list of processing hooks (as
//! ironic-inspector's `processing_hooks`), and the enrolment of machines nobody enrolled.
//!
//! Processing is pure: [`hooks::process`] reads the report, the node and its ports and
//! returns an [`InspectionOutcome`]; the worker applies it to the store.

pub mod hooks;
pub mod lldp;

use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// A processing hook, by the name the configuration uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookName {
    /// Fails inspection with the ramdisk's `error`.
    RamdiskError,
    /// Decides which NICs count (`add_ports`), into `plugin_data.valid_interfaces`.
    ValidateInterfaces,
    /// Creates missing ports, sets `pxe_enabled`, deletes stale ones (`keep_ports`).
    Ports,
    /// `cpus`, `cpu_arch`, `memory_mb`, `local_gb`.
    Properties,
    /// `boot_mode`, `cpu_vt`, GPU count in `capabilities`.
    Capabilities,
    /// Records the root disk chosen with the node's hints.
    RootDevice,
    /// LLDP TLVs into the ports' `local_link_connection`.
    Lldp,
    /// PCI devices into `plugin_data.pci_devices`.
    PciDevices,
}

/// Every hook, in the order they run by default.
pub const DEFAULT_HOOKS: &[HookName] = &[
    HookName::RamdiskError,
    HookName::ValidateInterfaces,
    HookName::Ports,
    HookName::Properties,
    HookName::Capabilities,
    HookName::RootDevice,
    HookName::Lldp,
    HookName::PciDevices,
];

/// Which NICs get ports (ironic-inspector's `add_ports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddPorts {
    /// Every NIC with a MAC.
    All,
    /// NICs with an IP address.
    Active,
    /// The NIC the machine booted from (`boot_interface`), else the active ones.
    #[default]
    Pxe,
    /// None.
    Disabled,
}

/// Which existing ports survive inspection (ironic-inspector's `keep_ports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepPorts {
    /// Every port.
    #[default]
    All,
    /// Ports whose MAC the machine still has.
    Present,
    /// Only the ports the valid interfaces account for.
    Added,
}

/// A port inspection creates.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPort {
    /// Lower-case, colon-separated.
    pub address: String,
    pub pxe_enabled: bool,
    pub local_link_connection: Map<String, Value>,
}

/// A change to an existing port, found by its MAC.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PortUpdate {
    /// Lower-case, colon-separated.
    pub address: String,
    pub pxe_enabled: Option<bool>,
    /// Replaces the port's `local_link_connection` when set.
    pub local_link_connection: Option<Map<String, Value>>,
}

/// What processing decided, for the worker to apply.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InspectionOutcome {
    /// Keys set in the node's `properties` (others are left alone); `capabilities` is
    /// the merged `key:value,...` string.
    pub properties: Map<String, Value>,
    pub new_ports: Vec<NewPort>,
    pub port_updates: Vec<PortUpdate>,
    /// Ports to delete (the `keep_ports` policy).
    pub delete_ports: Vec<Uuid>,
    /// Stored beside the inventory and shown as `plugin_data` (`root_disk`,
    /// `valid_interfaces`, `all_interfaces`, `boot_interface`, `parsed_lldp`,
    /// `pci_devices`, `auto_discovered`, ...).
    pub plugin_data: Map<String, Value>,
}

/// Why processing failed: the message becomes the node's `last_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectionError {
    /// The ramdisk reported an error (`ramdisk_error` hook).
    #[error("Ramdisk reported error: {0}")]
    Ramdisk(String),
    /// The report lacks what a hook needs, or holds a value it cannot use.
    #[error("{hook}: {reason}")]
    Invalid { hook: &'static str, reason: String },
}
