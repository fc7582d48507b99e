//! The `ipmi` hardware type: IPMI 2.0 over LAN (RMCP+), spoken natively over UDP.
//!
//! Layers, bottom up: [`crypto`] (RAKP codes, key derivation, AES-CBC-128), [`packet`]
//! (RMCP, IPMI 1.5 and 2.0 session wrappers, IPMI messages), [`commands`] (payload bodies
//! and reply parsers), [`session`] (one task per BMC owning socket and session), and this
//! module (the [`Driver`] and the [`Bmc`] operations).
//!
//! # `driver_info` keys (Ironic's)
//!
//! | key | default | |
//! | --- | --- | --- |
//! | `ipmi_address` | required | host name or IP address of the BMC |
//! | `ipmi_port` | 623 | UDP port |
//! | `ipmi_username` | empty (anonymous) | at most 16 bytes |
//! | `ipmi_password` | empty | at most 20 bytes |
//! | `ipmi_priv_level` | `ADMINISTRATOR` | `ADMINISTRATOR`, `CALLBACK`, `OPERATOR`, `USER` |
//! | `ipmi_cipher_suite` | auto: 17, then 3 | 3 or 17 |
//! | `ipmi_protocol_version` | `2.0` | only `2.0` is spoken |
//!
//! Sessions are shared: every `connect()` for the same BMC and credentials talks through
//! the same session task, so concurrent callers queue and the BMC sees one request at a
//! time. At conductor shutdown [`Driver::close_all`] closes every open session.
//!
//! Boot device changes carry the boot mode as the EFI bit of the boot flags; without a
//! mode the bit the BMC holds is read and kept.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::limit::RequestLimiter;
use super::{
    Bmc, BmcError, BootDevice, BootDeviceSetting, Driver, DriverInfoError, PowerAction, PowerState,
};

pub mod commands;
pub mod crypto;
pub mod packet;
pub mod session;

use commands::{BootFlags, BootSelector, ChassisControl, DeviceId, PrivilegeLevel};
use session::{CipherChoice, Password, Request, SessionHandle, SessionInfo, SessionParams, Timing};

use crate::bmc::BootMode;

/// The name nodes use in their `driver` field.
pub const IPMI_DRIVER_NAME: &str = "ipmi";

/// The standard RMCP port.
pub const DEFAULT_PORT: u16 = 623;

/// How long a soft power off waits for the OS when the caller gives no timeout (Ironic's
/// `[conductor]soft_power_off_timeout`).
pub const DEFAULT_SOFT_POWER_OFF_TIMEOUT: Duration = Duration::from_secs(600);

/// Timing of the driver's BMC conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpmiOptions {
    /// Wait for one answer before retransmitting.
    pub request_timeout: Duration,
    /// Retransmissions after the first attempt; a request fails as unreachable after
    /// `request_timeout * (retries + 1)`.
    pub retries: u32,
    /// A session without requests for this long is closed.
    pub idle_close: Duration,
    /// How often power state is read while waiting for a power change.
    pub power_poll_interval: Duration,
    /// How long a hard power change may take to show in the chassis status.
    pub power_timeout: Duration,
}

impl Default for IpmiOptions {
    fn default() -> Self {
        IpmiOptions {
            request_timeout: Duration::from_secs(2),
            retries: 3,
            idle_close: Duration::from_secs(60),
            power_poll_interval: Duration::from_secs(1),
            power_timeout: Duration::from_secs(60),
        }
    }
}

/// The parsed `driver_info` of an `ipmi` node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiDriverInfo {
    pub address: String,
    pub port: u16,
    pub username: String,
    pub password: Password,
    pub priv_level: PrivilegeLevel,
    pub cipher: CipherChoice,
}

fn string_value(key: &str, value: &Value) -> Result<String, DriverInfoError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => {
            Err(DriverInfoError(format!("Invalid value for '{key}': {other} is not a string")))
        }
    }
}

fn integer_value(key: &str, value: &Value) -> Option<i64> {
    let _ = key;
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl IpmiDriverInfo {
    /// Parses and checks `driver_info`; errors use Ironic's wording where it has one.
    pub fn parse(driver_info: &Map<String, Value>) -> Result<IpmiDriverInfo, DriverInfoError> {
        let get = |key: &str| driver_info.get(key).filter(|v| !v.is_null());
        let address = match get("ipmi_address") {
            Some(value) => string_value("ipmi_address", value)?.trim().to_owned(),
            None => String::new(),
        };
        if address.is_empty() {
            return Err(DriverInfoError(
                "Missing 'ipmi_address' parameter in node's driver_info".to_owned(),
            ));
        }
        let port = match get("ipmi_port") {
            None => DEFAULT_PORT,
            Some(value) => integer_value("ipmi_port", value)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    DriverInfoError(format!("Invalid port {value} in ipmi_port of driver_info"))
                })?,
        };
        let username = match get("ipmi_username") {
            Some(value) => string_value("ipmi_username", value)?,
            None => String::new(),
        };
        if username.len() > 16 {
            return Err(DriverInfoError(
                "Value for ipmi_username is too long: IPMI user names have at most 16 bytes"
                    .to_owned(),
            ));
        }
        let password = match get("ipmi_password") {
            Some(value) => string_value("ipmi_password", value)?,
            None => String::new(),
        };
        if password.len() > 20 {
            return Err(DriverInfoError(
                "Value for ipmi_password is too long: IPMI 2.0 passwords have at most 20 bytes"
                    .to_owned(),
            ));
        }
        let priv_level = match get("ipmi_priv_level") {
            None => PrivilegeLevel::Administrator,
            Some(value) => {
                let name = string_value("ipmi_priv_level", value)?;
                PrivilegeLevel::from_name(&name).ok_or_else(|| {
                    DriverInfoError(format!(
                        "Invalid privilege level value:{name}, the valid value can be one of {}",
                        PrivilegeLevel::ALL.map(PrivilegeLevel::as_str).join(", ")
                    ))
                })?
            }
        };
        let cipher = match get("ipmi_cipher_suite") {
            None => CipherChoice::Auto,
            Some(value) => match integer_value("ipmi_cipher_suite", value) {
                Some(3) => CipherChoice::Fixed(3),
                Some(17) => CipherChoice::Fixed(17),
                _ => {
                    return Err(DriverInfoError(format!(
                        "Invalid value for ipmi_cipher_suite: {value}; this driver speaks \
                         cipher suites 3 and 17"
                    )))
                }
            },
        };
        if let Some(value) = get("ipmi_protocol_version") {
            let version = string_value("ipmi_protocol_version", value)?;
            if version != "2.0" {
                return Err(DriverInfoError(format!(
                    "Invalid IPMI protocol version value {version}, the valid value can be one \
                     of 2.0"
                )));
            }
        }
        let password = Password::new(password);
        Ok(IpmiDriverInfo { address, port, username, password, priv_level, cipher })
    }
}

/// The `ipmi` driver. Holds the session task of every BMC it talks to.
pub struct IpmiDriver {
    options: IpmiOptions,
    limiter: RequestLimiter,
    sessions: Arc<Mutex<HashMap<SessionParams, SessionHandle>>>,
}

impl fmt::Debug for IpmiDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sessions = self.sessions.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("IpmiDriver")
            .field("options", &self.options)
            .field("max_concurrent_requests", &self.limiter.limit())
            .field("sessions", &sessions)
            .finish()
    }
}

impl Default for IpmiDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl IpmiDriver {
    pub fn new() -> IpmiDriver {
        Self::with_options(IpmiOptions::default())
    }

    pub fn with_options(options: IpmiOptions) -> IpmiDriver {
        IpmiDriver {
            options,
            limiter: RequestLimiter::unbounded(),
            sessions: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Every BMC exchange takes a permit of `limiter` (shared with other drivers).
    pub fn with_limiter(mut self, limiter: RequestLimiter) -> IpmiDriver {
        self.limiter = limiter;
        self
    }

    /// How many BMC session tasks are alive.
    pub fn session_count(&self) -> usize {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, handle| handle.is_alive());
        sessions.len()
    }

    /// Like [`Driver::connect`], with the IPMI-only operations available.
    pub fn connect_ipmi(
        &self,
        node_uuid: &str,
        driver_info: &Map<String, Value>,
    ) -> Result<Arc<IpmiBmc>, DriverInfoError> {
        let info = IpmiDriverInfo::parse(driver_info)?;
        let params = SessionParams {
            address: info.address,
            port: info.port,
            username: info.username,
            password: info.password,
            privilege: info.priv_level,
            cipher: info.cipher,
            timing: Timing {
                request_timeout: self.options.request_timeout,
                retries: self.options.retries,
                idle_close: self.options.idle_close,
            },
        };
        Ok(Arc::new(IpmiBmc {
            node: node_uuid.to_owned(),
            params,
            options: self.options,
            limiter: self.limiter.clone(),
            sessions: Arc::clone(&self.sessions),
        }))
    }
}

#[async_trait::async_trait]
impl Driver for IpmiDriver {
    fn name(&self) -> &'static str {
        IPMI_DRIVER_NAME
    }

    /// Sends Close Session on every open session, all BMCs at once, and waits for them.
    async fn close_all(&self) {
        let handles: Vec<SessionHandle> = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.drain().map(|(_, handle)| handle).filter(SessionHandle::is_alive).collect()
        };
        if handles.is_empty() {
            return;
        }
        tracing::info!(sessions = handles.len(), "closing IPMI sessions");
        let mut closing = tokio::task::JoinSet::new();
        for handle in handles {
            closing.spawn(async move { handle.close().await });
        }
        while closing.join_next().await.is_some() {}
    }

    fn validate(&self, driver_info: &Map<String, Value>) -> Result<(), DriverInfoError> {
        IpmiDriverInfo::parse(driver_info).map(|_| ())
    }

    fn connect(
        &self,
        node_uuid: &str,
        driver_info: &Map<String, Value>,
    ) -> Result<Arc<dyn Bmc>, DriverInfoError> {
        let bmc: Arc<dyn Bmc> = self.connect_ipmi(node_uuid, driver_info)?;
        Ok(bmc)
    }
}

/// The BMC's LAN settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanInfo {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
}

/// One node's BMC, reached through the shared session of its address and credentials.
pub struct IpmiBmc {
    node: String,
    params: SessionParams,
    options: IpmiOptions,
    limiter: RequestLimiter,
    sessions: Arc<Mutex<HashMap<SessionParams, SessionHandle>>>,
}

impl fmt::Debug for IpmiBmc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpmiBmc").field("node", &self.node).field("params", &self.params).finish()
    }
}

impl IpmiBmc {
    fn address(&self) -> String {
        format!("{}:{}", self.params.address, self.params.port)
    }

    fn handle(&self, fresh: bool) -> SessionHandle {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if !fresh {
            if let Some(handle) = sessions.get(&self.params).filter(|h| h.is_alive()) {
                return handle.clone();
            }
        }
        // Forget the tasks that ended (idle) now and then, so the map does not grow with
        // dead entries; sweeping on every call would cost O(BMCs) per request.
        if sessions.len() >= 64 && sessions.len().is_power_of_two() {
            sessions.retain(|_, handle| handle.is_alive());
        }
        let handle = SessionHandle::spawn_limited(self.params.clone(), self.limiter.clone());
        sessions.insert(self.params.clone(), handle.clone());
        handle
    }

    /// Sends one command through the BMC's session and returns its response data.
    async fn call(
        &self,
        name: &'static str,
        netfn: u8,
        cmd: u8,
        data: Vec<u8>,
    ) -> Result<(Vec<u8>, SessionInfo), BmcError> {
        let request = Request { name, netfn, cmd, data };
        match self.handle(false).call(request.clone()).await {
            Ok(answer) => Ok(answer),
            Err(Some(error)) => Err(error),
            // The task closed its idle session just now: start a new one.
            Err(None) => match self.handle(true).call(request).await {
                Ok(answer) => Ok(answer),
                Err(Some(error)) => Err(error),
                Err(None) => Err(BmcError::Protocol {
                    address: self.address(),
                    detail: "the session task ended unexpectedly".to_owned(),
                }),
            },
        }
    }

    fn bad_reply(&self, error: commands::ReplyError) -> BmcError {
        BmcError::Protocol { address: self.address(), detail: error.to_string() }
    }

    /// Get Device ID: proves the BMC answers in an authenticated session.
    pub async fn device_id(&self) -> Result<DeviceId, BmcError> {
        let (data, _) = self
            .call("Get Device ID", commands::NETFN_APP, commands::CMD_GET_DEVICE_ID, Vec::new())
            .await?;
        commands::parse_device_id(&data).map_err(|e| self.bad_reply(e))
    }

    /// The BMC's own IPv4 address and MAC on the channel of the session.
    pub async fn lan_info(&self) -> Result<LanInfo, BmcError> {
        let (_, info) = self
            .call("Get Device ID", commands::NETFN_APP, commands::CMD_GET_DEVICE_ID, Vec::new())
            .await?;
        let (ip, _) = self
            .call(
                "Get LAN Configuration Parameters (IP address)",
                commands::NETFN_TRANSPORT,
                commands::CMD_GET_LAN_CONFIG,
                commands::get_lan_config_request(info.channel, commands::LAN_PARAM_IP),
            )
            .await?;
        let (mac, _) = self
            .call(
                "Get LAN Configuration Parameters (MAC address)",
                commands::NETFN_TRANSPORT,
                commands::CMD_GET_LAN_CONFIG,
                commands::get_lan_config_request(info.channel, commands::LAN_PARAM_MAC),
            )
            .await?;
        Ok(LanInfo {
            ip: commands::parse_lan_ip(&ip).map_err(|e| self.bad_reply(e))?,
            mac: commands::parse_lan_mac(&mac).map_err(|e| self.bad_reply(e))?,
        })
    }

    /// The cipher suite the session runs with (opening it if needed).
    pub async fn cipher_suite(&self) -> Result<u8, BmcError> {
        let (_, info) = self
            .call("Get Device ID", commands::NETFN_APP, commands::CMD_GET_DEVICE_ID, Vec::new())
            .await?;
        Ok(info.cipher_suite)
    }

    /// Sends one Chassis Control sub-command without waiting for its effect.
    pub async fn chassis_control(&self, control: ChassisControl) -> Result<(), BmcError> {
        self.call(
            "Chassis Control",
            commands::NETFN_CHASSIS,
            commands::CMD_CHASSIS_CONTROL,
            control.request(),
        )
        .await
        .map(|_| ())
    }

    /// The raw boot flags (parameter 5).
    pub async fn boot_flags(&self) -> Result<BootFlags, BmcError> {
        let (data, _) = self
            .call(
                "Get System Boot Options",
                commands::NETFN_CHASSIS,
                commands::CMD_GET_BOOT_OPTIONS,
                commands::get_boot_flags_request(),
            )
            .await?;
        commands::parse_boot_flags(&data).map_err(|e| self.bad_reply(e))
    }

    /// Sets the boot device, for the next boot or all of them, in EFI or legacy mode.
    pub async fn set_boot_flags(
        &self,
        device: BootDevice,
        persistent: bool,
        efi: bool,
    ) -> Result<(), BmcError> {
        let selector = match device {
            BootDevice::Pxe => BootSelector::Pxe,
            BootDevice::Disk => BootSelector::Disk,
            BootDevice::Safe => BootSelector::DiskSafeMode,
            BootDevice::Cdrom => BootSelector::Cdrom,
            BootDevice::Bios => BootSelector::BiosSetup,
        };
        let flags = BootFlags { valid: true, persistent, efi, device: selector };
        self.call(
            "Set System Boot Options",
            commands::NETFN_CHASSIS,
            commands::CMD_SET_BOOT_OPTIONS,
            commands::set_boot_flags_request(flags),
        )
        .await
        .map(|_| ())
    }

    /// Polls the chassis status until it shows `target` or `timeout` passes.
    async fn wait_for(
        &self,
        target: PowerState,
        timeout: Duration,
        operation: &str,
    ) -> Result<(), BmcError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.power_state().await? == target {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BmcError::Timeout {
                    address: self.address(),
                    operation: operation.to_owned(),
                    timeout,
                });
            }
            tokio::time::sleep(self.options.power_poll_interval).await;
        }
    }

    async fn power_to(
        &self,
        target: PowerState,
        control: ChassisControl,
        timeout: Duration,
        operation: &str,
    ) -> Result<(), BmcError> {
        if self.power_state().await? == target {
            return Ok(());
        }
        self.chassis_control(control).await?;
        self.wait_for(target, timeout, operation).await
    }
}

#[async_trait::async_trait]
impl Bmc for IpmiBmc {
    async fn power_state(&self) -> Result<PowerState, BmcError> {
        let (data, _) = self
            .call(
                "Get Chassis Status",
                commands::NETFN_CHASSIS,
                commands::CMD_GET_CHASSIS_STATUS,
                Vec::new(),
            )
            .await?;
        match commands::parse_chassis_status(&data) {
            Ok(true) => Ok(PowerState::On),
            Ok(false) => Ok(PowerState::Off),
            Err(e) => Err(self.bad_reply(e)),
        }
    }

    async fn set_power(
        &self,
        action: PowerAction,
        timeout: Option<Duration>,
    ) -> Result<(), BmcError> {
        let hard = self.options.power_timeout;
        let soft = timeout.unwrap_or(DEFAULT_SOFT_POWER_OFF_TIMEOUT);
        match action {
            PowerAction::On => {
                self.power_to(PowerState::On, ChassisControl::PowerOn, hard, "power on").await
            }
            PowerAction::Off => {
                self.power_to(PowerState::Off, ChassisControl::PowerOff, hard, "power off").await
            }
            PowerAction::Reboot => {
                // A hard reset keeps power on, so there is no state change to wait for; a
                // node that is off is simply powered on.
                if self.power_state().await? == PowerState::Off {
                    self.chassis_control(ChassisControl::PowerOn).await?;
                    self.wait_for(PowerState::On, hard, "reboot").await
                } else {
                    self.chassis_control(ChassisControl::HardReset).await
                }
            }
            PowerAction::SoftOff => {
                self.power_to(PowerState::Off, ChassisControl::SoftOff, soft, "soft power off")
                    .await
            }
            PowerAction::SoftReboot => {
                self.power_to(PowerState::Off, ChassisControl::SoftOff, soft, "soft power off")
                    .await?;
                self.power_to(PowerState::On, ChassisControl::PowerOn, hard, "power on").await
            }
        }
    }

    async fn boot_device(&self) -> Result<BootDeviceSetting, BmcError> {
        let flags = self.boot_flags().await?;
        // The selector is reported whatever the valid bit says, as Ironic does: BMCs
        // (ipmi_sim among them) keep the device but clear the bit. Without the bit the
        // persistence flag means nothing, so it is reported as unknown.
        let device = match flags.device {
            BootSelector::Pxe => Some(BootDevice::Pxe),
            BootSelector::Disk => Some(BootDevice::Disk),
            BootSelector::DiskSafeMode => Some(BootDevice::Safe),
            BootSelector::Cdrom => Some(BootDevice::Cdrom),
            BootSelector::BiosSetup => Some(BootDevice::Bios),
            BootSelector::NoOverride | BootSelector::Other(_) => None,
        };
        Ok(BootDeviceSetting { device, persistent: flags.valid.then_some(flags.persistent) })
    }

    /// With a mode, the EFI bit of the boot flags says it (set for UEFI, clear for BIOS);
    /// without, the bit the BMC holds is kept.
    async fn set_boot_device(
        &self,
        device: BootDevice,
        persistent: bool,
        mode: Option<BootMode>,
    ) -> Result<(), BmcError> {
        let efi = match mode {
            Some(mode) => mode == BootMode::Uefi,
            None => self.boot_flags().await?.efi,
        };
        self.set_boot_flags(device, persistent, efi).await
    }
}

#[cfg(test)]
mod tests;
