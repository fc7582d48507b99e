//! The only place that talks to BMCs.
//!
//! A [`Driver`] (registered by name in a [`DriverRegistry`], e.g. `fake-hardware`, later
//! `ipmi` and `redfish`) validates a node's `driver_info` and connects to its BMC; a
//! [`Bmc`] is one connected BMC. Errors stay typed ([`BmcError`]) because retry policy
//! depends on them: an unreachable BMC is retried, failed authentication is not.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

pub mod fake;
pub mod ipmi;
pub mod limit;
pub mod oob_steps;
pub mod redfish;

/// The power state a BMC reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerState {
    On,
    Off,
}

/// What the conductor asks a BMC to do with power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerAction {
    On,
    Off,
    /// Hard reset (or off + on where the BMC has no reset).
    Reboot,
    /// ACPI shutdown request; the OS powers off.
    SoftOff,
    /// ACPI shutdown request, then power on.
    SoftReboot,
}

/// Boot devices, with Ironic's API names (`pxe`, `disk`, `cdrom`, `bios`, `safe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootDevice {
    Pxe,
    Disk,
    Cdrom,
    Bios,
    Safe,
}

impl BootDevice {
    pub const ALL: [BootDevice; 5] =
        [BootDevice::Pxe, BootDevice::Disk, BootDevice::Cdrom, BootDevice::Bios, BootDevice::Safe];

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
            BootDevice::Cdrom => "cdrom",
            BootDevice::Bios => "bios",
            BootDevice::Safe => "safe",
        }
    }

    pub fn from_api(name: &str) -> Option<BootDevice> {
        BootDevice::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

/// The firmware mode a node boots in, with Ironic's names (`uefi`, `bios`). Passed with
/// boot device changes so that the BMC boots the device in the right mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootMode {
    Uefi,
    Bios,
}

impl BootMode {
    pub const ALL: [BootMode; 2] = [BootMode::Uefi, BootMode::Bios];

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Uefi => "uefi",
            BootMode::Bios => "bios",
        }
    }

    /// Parses a name as Ironic accepts it (any case, surrounding blanks ignored).
    pub fn from_name(name: &str) -> Option<BootMode> {
        let name = name.trim();
        BootMode::ALL.into_iter().find(|m| m.as_str().eq_ignore_ascii_case(name))
    }
}

/// The boot device a BMC reports. `persistent` is `None` when the BMC cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootDeviceSetting {
    pub device: Option<BootDevice>,
    pub persistent: Option<bool>,
}

/// Why a BMC operation failed. The variant decides the retry policy.
#[derive(Debug, thiserror::Error)]
pub enum BmcError {
    /// No answer (network, BMC down): worth retrying.
    #[error("BMC {address} is unreachable: {detail}")]
    Unreachable { address: String, detail: String },
    /// Credentials rejected: retrying will not help.
    #[error("BMC {address} rejected the credentials")]
    AuthFailed { address: String },
    /// The BMC (or this driver) cannot do that.
    #[error("not supported by this BMC: {what}")]
    Unsupported { what: String },
    /// The BMC accepted the request but the state did not change in time.
    #[error("BMC {address} did not complete {operation} within {timeout:?}")]
    Timeout { address: String, operation: String, timeout: Duration },
    /// The BMC answered something the driver could not use.
    #[error("BMC {address} answered unexpectedly: {detail}")]
    Protocol { address: String, detail: String },
    /// The credentials are valid but may not do this (a configuration problem: the user
    /// or `ipmi_priv_level`): retrying will not help.
    #[error("BMC {address} refused {operation} for lack of privilege: {detail}")]
    InsufficientPrivilege { address: String, operation: String, detail: String },
    /// The BMC said it is busy or initialising (HTTP 503, IPMI 0xC0): worth retrying
    /// later, after `retry_after` when the BMC said how long.
    #[error("BMC {address} is busy: {detail}{}", retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    Busy { address: String, detail: String, retry_after: Option<Duration> },
}

impl BmcError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BmcError::Unreachable { .. } | BmcError::Timeout { .. } | BmcError::Busy { .. }
        )
    }
}

/// A node's `driver_info` is missing or has a bad value. The message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("driver_info: {0}")]
pub struct DriverInfoError(pub String);

/// One connected BMC.
#[async_trait::async_trait]
pub trait Bmc: Send + Sync + Debug {
    async fn power_state(&self) -> Result<PowerState, BmcError>;
    /// Performs `action`; for `SoftOff`/`SoftReboot`, `timeout` bounds the wait for the
    /// OS to power off (drivers pick a default when `None`).
    async fn set_power(
        &self,
        action: PowerAction,
        timeout: Option<Duration>,
    ) -> Result<(), BmcError>;
    async fn boot_device(&self) -> Result<BootDeviceSetting, BmcError>;
    /// Sets the boot device for the next boot or, with `persistent`, for every boot. With
    /// a `mode`, the device boots in that firmware mode; `None` leaves the mode as it is.
    async fn set_boot_device(
        &self,
        device: BootDevice,
        persistent: bool,
        mode: Option<BootMode>,
    ) -> Result<(), BmcError>;
    /// Inserts the ISO at `url` as the virtual CD/DVD and makes the next boot (only) boot
    /// from it, in `mode` when given (as [`Bmc::set_boot_device`]).
    async fn boot_from_virtual_media(
        &self,
        url: &str,
        mode: Option<BootMode>,
    ) -> Result<(), BmcError> {
        let _ = (url, mode);
        Err(BmcError::Unsupported { what: "virtual media".to_owned() })
    }
    /// Empties the virtual CD/DVD; nothing to do when it is empty.
    async fn eject_virtual_media(&self) -> Result<(), BmcError> {
        Err(BmcError::Unsupported { what: "virtual media".to_owned() })
    }
    /// Out-of-band inspection: the hardware as the BMC describes it, in the inventory
    /// shape the agent reports (`inspect_interface: redfish`).
    async fn inspect(&self) -> Result<redfish::OobInspection, BmcError> {
        Err(BmcError::Unsupported { what: "out-of-band inspection".to_owned() })
    }
    /// Runs an out-of-band clean step; only drivers that list it in
    /// [`Driver::clean_steps`] can.
    async fn run_oob_step(&self, step: oob_steps::OobStep) -> Result<(), BmcError> {
        Err(BmcError::Unsupported { what: format!("clean step management.{}", step.name()) })
    }
}

/// A hardware type: validates `driver_info` and connects to a node's BMC.
#[async_trait::async_trait]
pub trait Driver: Send + Sync + Debug {
    /// The name nodes use in their `driver` field (e.g. `fake-hardware`).
    fn name(&self) -> &'static str;
    /// Checks `driver_info` without contacting the BMC.
    fn validate(&self, driver_info: &Map<String, Value>) -> Result<(), DriverInfoError>;
    /// A handle to the node's BMC (connections may be made lazily).
    fn connect(
        &self,
        node_uuid: &str,
        driver_info: &Map<String, Value>,
    ) -> Result<Arc<dyn Bmc>, DriverInfoError>;
    /// The out-of-band clean steps this driver's BMCs run (see [`oob_steps`]).
    fn clean_steps(&self) -> Vec<ferric_shared::steps::Step> {
        Vec::new()
    }
    /// Whether its BMCs can boot an ISO over virtual media (the `redfish-virtual-media`
    /// boot interface).
    fn supports_virtual_media(&self) -> bool {
        false
    }
    /// Ends every open BMC session (at conductor shutdown), so that BMCs with few session
    /// slots do not wait for them to time out.
    async fn close_all(&self) {}
}

/// The drivers this conductor offers, by name.
#[derive(Debug, Clone, Default)]
pub struct DriverRegistry {
    drivers: BTreeMap<&'static str, Arc<dyn Driver>>,
}

impl DriverRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, driver: Arc<dyn Driver>) {
        self.drivers.insert(driver.name(), driver);
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Driver>> {
        self.drivers.get(name).cloned()
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.drivers.keys().copied()
    }

    /// Closes every driver's BMC sessions, one driver after the other.
    pub async fn close_all(&self) {
        for (name, driver) in &self.drivers {
            tracing::debug!(driver = name, "closing BMC sessions");
            driver.close_all().await;
        }
    }
}
