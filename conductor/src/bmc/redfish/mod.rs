//! The `redfish` hardware type: a BMC spoken to over the DMTF Redfish REST API.
//!
//! # `driver_info` keys (as Ironic's)
//!
//! | key | value |
//! | --- | --- |
//! | `redfish_address` | `https://host[:port]`, `http://host[:port]`, or a bare host (HTTPS) — required |
//! | `redfish_system_id` | the system's Id or path; optional when the BMC has exactly one system |
//! | `redfish_username`, `redfish_password` | credentials; none means no authentication |
//! | `redfish_verify_ca` | `true` (system CAs, the default), `false`, or a CA file/directory path |
//! | `redfish_auth_type` | `basic`, `session` or `auto` (the default: session, else basic) |
//!
//! # Behaviour
//!
//! The driver keeps one [`client::Endpoint`] per BMC across `connect()` calls, so a
//! session is created once and reused, and every request to that BMC waits for the
//! previous one (one request in flight per BMC). Power changes go through
//! `ComputerSystem.Reset` with a reset type the BMC allows, then the driver polls
//! `PowerState` until the change landed (BMCs apply resets asynchronously). Writes send
//! `If-Match` with the resource's ETag when the BMC gives one, and a 202 answer with a
//! task monitor is followed until the task ends.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::LOCATION;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::limit::RequestLimiter;
use super::{
    Bmc, BmcError, BootDevice, BootDeviceSetting, Driver, DriverInfoError, PowerAction, PowerState,
};
use crate::bmc;

pub mod client;
pub mod inspect;
pub mod settings;
pub mod tls;
pub mod wire;

pub use client::RedfishOptions;
use client::{Endpoint, Reply};
pub use inspect::OobInspection;
pub use settings::{AuthType, RedfishSettings, VerifyCa};

/// The name nodes use in their `driver` field.
pub const REDFISH_DRIVER_NAME: &str = "redfish";

const RESET_ACTION: &str = "#ComputerSystem.Reset";
const INSERT_MEDIA_ACTION: &str = "#VirtualMedia.InsertMedia";
const EJECT_MEDIA_ACTION: &str = "#VirtualMedia.EjectMedia";

/// A `BootSourceOverrideTarget` the driver sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootTarget {
    Pxe,
    Hdd,
    Cd,
    BiosSetup,
    UefiHttp,
}

impl BootTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            BootTarget::Pxe => "Pxe",
            BootTarget::Hdd => "Hdd",
            BootTarget::Cd => "Cd",
            BootTarget::BiosSetup => "BiosSetup",
            BootTarget::UefiHttp => "UefiHttp",
        }
    }

    /// The Redfish target for an Ironic boot device; `safe` has none.
    pub fn from_device(device: BootDevice) -> Option<BootTarget> {
        match device {
            BootDevice::Pxe => Some(BootTarget::Pxe),
            BootDevice::Disk => Some(BootTarget::Hdd),
            BootDevice::Cdrom => Some(BootTarget::Cd),
            BootDevice::Bios => Some(BootTarget::BiosSetup),
            BootDevice::Safe => None,
        }
    }
}

/// The Ironic boot device a reported target stands for (`UefiHttp` has none).
fn device_of_target(target: &str) -> Option<BootDevice> {
    match target {
        "Pxe" => Some(BootDevice::Pxe),
        "Hdd" => Some(BootDevice::Disk),
        "Cd" => Some(BootDevice::Cdrom),
        "BiosSetup" => Some(BootDevice::Bios),
        _ => None,
    }
}

/// `BootSourceOverrideMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootMode {
    Uefi,
    Legacy,
}

impl BootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Uefi => "UEFI",
            BootMode::Legacy => "Legacy",
        }
    }

    /// The Redfish mode of an Ironic boot mode (`bios` is `Legacy`).
    pub fn from_mode(mode: bmc::BootMode) -> BootMode {
        match mode {
            bmc::BootMode::Uefi => BootMode::Uefi,
            bmc::BootMode::Bios => BootMode::Legacy,
        }
    }
}

/// What to do with a boot mode the system does not report (so cannot take).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModeSupport {
    /// Fail with `Unsupported`: the caller asked for the mode explicitly.
    Required,
    /// Set the target alone: the mode is only passed along with boot device changes.
    IfSupported,
}

/// What a BMC reports of its boot override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOverride {
    pub target: Option<String>,
    pub enabled: Option<String>,
    pub mode: Option<String>,
}

/// The state of the CD/DVD virtual media device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualMediaStatus {
    /// The device's resource path.
    pub device: String,
    pub image: Option<String>,
    pub inserted: bool,
}

/// The first reset type of `candidates` the BMC allows; with no list, the first one.
fn choose_reset<'a>(allowed: Option<&[String]>, candidates: &[&'a str]) -> Option<&'a str> {
    match allowed {
        None | Some([]) => candidates.first().copied(),
        Some(allowed) => candidates.iter().copied().find(|c| allowed.iter().any(|a| a == c)),
    }
}

/// Ironic's mapping: a state in transition counts as where it is heading.
fn power_of(state: &str) -> Option<PowerState> {
    match state {
        "On" | "PoweringOn" => Some(PowerState::On),
        "Off" | "PoweringOff" => Some(PowerState::Off),
        _ => None,
    }
}

fn odata_id(link: &Value) -> Option<String> {
    link.get("@odata.id").and_then(Value::as_str).map(str::to_owned)
}

/// The `@odata.id` of `resource[key]`.
fn link_of(resource: &Value, key: &str) -> Option<String> {
    resource.get(key).and_then(odata_id)
}

fn member_links(collection: &Value) -> Vec<String> {
    collection
        .get("Members")
        .and_then(Value::as_array)
        .map(|m| m.iter().filter_map(odata_id).collect())
        .unwrap_or_default()
}

/// Endpoints are shared by BMC address and user; the rest of the settings must match
/// too, or the endpoint is replaced (the old one logs out when dropped).
type EndpointKey = (String, Option<String>);

/// The `redfish` driver. Share it in an `Arc`: it holds every BMC's endpoint.
pub struct RedfishDriver {
    options: RedfishOptions,
    limiter: RequestLimiter,
    endpoints: Mutex<HashMap<EndpointKey, (RedfishSettings, Arc<Endpoint>)>>,
}

impl fmt::Debug for RedfishDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedfishDriver")
            .field("options", &self.options)
            .field("endpoints", &self.endpoints.lock().map(|e| e.len()).unwrap_or_default())
            .finish()
    }
}

impl Default for RedfishDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl RedfishDriver {
    pub fn new() -> Self {
        Self::with_options(RedfishOptions::default())
    }

    pub fn with_options(options: RedfishOptions) -> Self {
        RedfishDriver {
            options,
            limiter: RequestLimiter::unbounded(),
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    /// Every HTTP request to a BMC takes a permit of `limiter` (shared with other drivers).
    pub fn with_limiter(mut self, limiter: RequestLimiter) -> Self {
        self.limiter = limiter;
        self
    }

    fn endpoint(&self, settings: &RedfishSettings) -> Result<Arc<Endpoint>, DriverInfoError> {
        let mut shared = settings.clone();
        shared.system_path = None;
        let key = (shared.base.to_string(), shared.username.clone());
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, endpoint)) = endpoints.get(&key) {
            if *known == shared {
                return Ok(Arc::clone(endpoint));
            }
        }
        let endpoint = Endpoint::new(&shared, self.options.clone()).map_err(|e| {
            DriverInfoError(format!("redfish_verify_ca: {}", crate::error_chain(&e)))
        })?;
        let endpoint = Arc::new(endpoint.with_limiter(self.limiter.clone()));
        endpoints.insert(key, (shared, Arc::clone(&endpoint)));
        Ok(endpoint)
    }

    /// A handle with the Redfish-only operations (virtual media, boot mode).
    pub fn connect_redfish(
        &self,
        node_uuid: &str,
        driver_info: &Map<String, Value>,
    ) -> Result<RedfishBmc, DriverInfoError> {
        let settings = settings::parse(driver_info)?;
        let endpoint = self.endpoint(&settings)?;
        Ok(RedfishBmc { node: node_uuid.to_owned(), endpoint, system_path: settings.system_path })
    }

    /// Logs out of every session (at conductor shutdown).
    pub async fn close(&self) {
        let endpoints: Vec<Arc<Endpoint>> = {
            let endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
            endpoints.values().map(|(_, e)| Arc::clone(e)).collect()
        };
        for endpoint in endpoints {
            endpoint.logout().await;
        }
    }
}

#[async_trait::async_trait]
impl Driver for RedfishDriver {
    fn name(&self) -> &'static str {
        REDFISH_DRIVER_NAME
    }

    fn supports_virtual_media(&self) -> bool {
        true
    }

    async fn close_all(&self) {
        self.close().await;
    }

    fn validate(&self, driver_info: &Map<String, Value>) -> Result<(), DriverInfoError> {
        settings::parse(driver_info).map(|_| ())
    }

    fn connect(
        &self,
        node_uuid: &str,
        driver_info: &Map<String, Value>,
    ) -> Result<Arc<dyn Bmc>, DriverInfoError> {
        Ok(Arc::new(self.connect_redfish(node_uuid, driver_info)?))
    }

    fn clean_steps(&self) -> Vec<ferric_shared::steps::Step> {
        super::oob_steps::offered()
    }
}

/// One node's Redfish system.
pub struct RedfishBmc {
    node: String,
    endpoint: Arc<Endpoint>,
    system_path: Option<String>,
}

impl fmt::Debug for RedfishBmc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedfishBmc")
            .field("node", &self.node)
            .field("address", &self.endpoint.address())
            .field("system_path", &self.system_path)
            .finish()
    }
}

impl RedfishBmc {
    fn address(&self) -> String {
        self.endpoint.address().to_owned()
    }

    fn protocol(&self, detail: impl Into<String>) -> BmcError {
        BmcError::Protocol { address: self.address(), detail: detail.into() }
    }

    /// Logs out of this BMC's session (other handles to the BMC log in again when used).
    pub async fn close(&self) {
        self.endpoint.logout().await;
    }

    /// Whether a session is open with this BMC.
    pub async fn has_session(&self) -> bool {
        self.endpoint.has_session().await
    }

    /// The system's path: `redfish_system_id`, else the BMC's only system.
    pub async fn system_path(&self) -> Result<String, BmcError> {
        if let Some(path) = &self.system_path {
            return Ok(path.clone());
        }
        if let Some(path) = self.endpoint.cached_default_system() {
            return Ok(path);
        }
        let (root, _) =
            self.endpoint.get::<wire::ServiceRoot>("/redfish/v1/", "read the service root").await?;
        let systems =
            root.systems.map(|l| l.odata_id).unwrap_or_else(|| settings::SYSTEMS_PATH.to_owned());
        let (collection, _) =
            self.endpoint.get::<wire::Collection>(&systems, "list the systems").await?;
        match collection.members.as_slice() {
            [only] => {
                self.endpoint.cache_default_system(&only.odata_id);
                Ok(only.odata_id.clone())
            }
            [] => Err(self.protocol("the BMC lists no systems")),
            many => Err(self.protocol(format!(
                "the BMC has {} systems ({}); set driver_info/redfish_system_id to one of them",
                many.len(),
                many.iter().map(|l| l.odata_id.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    async fn system(&self) -> Result<(String, wire::ComputerSystem, Option<String>), BmcError> {
        let path = self.system_path().await?;
        let (system, etag) =
            self.endpoint.get::<wire::ComputerSystem>(&path, "read the system").await?;
        let etag = wire::etag(etag.as_deref(), system.odata_etag.as_deref());
        Ok((path, system, etag))
    }

    fn power_from(&self, system: &wire::ComputerSystem) -> Result<PowerState, BmcError> {
        let state = system
            .power_state
            .as_deref()
            .ok_or_else(|| self.protocol("the system reports no PowerState"))?;
        power_of(state).ok_or_else(|| self.protocol(format!("unknown PowerState {state:?}")))
    }

    /// Follows a 202 task monitor to its end; other replies are final as they are.
    async fn finish(&self, reply: Reply, operation: &str) -> Result<(), BmcError> {
        if reply.status != StatusCode::ACCEPTED {
            return Ok(());
        }
        let Some(monitor) = reply.header(LOCATION.as_str()).map(str::to_owned) else {
            return Ok(());
        };
        let timeout = self.endpoint.options().task_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let reply = self.endpoint.send(Method::GET, &monitor, None, None, operation).await?;
            match reply.status {
                StatusCode::ACCEPTED => {}
                status if status.is_success() => {
                    let task: wire::Task = serde_json::from_slice(&reply.body).unwrap_or_default();
                    if task.is_finished() && task.failed() {
                        return Err(self.protocol(format!(
                            "{operation}: the BMC task ended in {}: {}",
                            task.task_state.as_deref().unwrap_or("failure"),
                            task.message_text().unwrap_or_else(|| "no message".to_owned())
                        )));
                    }
                    // A task resource (rather than the operation's result) still running.
                    if task.task_state.is_none() || task.is_finished() {
                        return Ok(());
                    }
                }
                status => return Err(self.endpoint.status_error(&reply, status, operation)),
            }
            if Instant::now() >= deadline {
                return Err(BmcError::Timeout {
                    address: self.address(),
                    operation: operation.to_owned(),
                    timeout,
                });
            }
            tokio::time::sleep(self.endpoint.options().poll_interval).await;
        }
    }

    async fn reset_types(&self, action: &wire::Action) -> Result<Option<Vec<String>>, BmcError> {
        if action.reset_types.is_some() {
            return Ok(action.reset_types.clone());
        }
        let Some(info) = &action.action_info else { return Ok(None) };
        match self.endpoint.get::<wire::ActionInfo>(info, "read the reset action info").await {
            Ok((info, _)) => Ok(info.allowable_values("ResetType")),
            // An unreadable ActionInfo says nothing about the reset itself.
            Err(BmcError::Unsupported { .. } | BmcError::Protocol { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Posts `ComputerSystem.Reset` with the first of `candidates` the BMC allows;
    /// `Ok(false)` when it allows none of them.
    async fn reset(
        &self,
        path: &str,
        system: &wire::ComputerSystem,
        candidates: &[&str],
    ) -> Result<bool, BmcError> {
        let action = system.actions.get(RESET_ACTION).cloned().unwrap_or_default();
        let allowed = self.reset_types(&action).await?;
        let Some(reset_type) = choose_reset(allowed.as_deref(), candidates) else {
            return Ok(false);
        };
        let target =
            action.target.unwrap_or_else(|| format!("{path}/Actions/ComputerSystem.Reset"));
        let operation = format!("reset ({reset_type})");
        tracing::debug!(node = %self.node, reset_type, "Redfish reset");
        let body = serde_json::json!({ "ResetType": reset_type });
        let reply =
            self.endpoint.call(Method::POST, &target, Some(&body), None, &operation).await?;
        self.finish(reply, &operation).await?;
        Ok(true)
    }

    async fn reset_or_unsupported(
        &self,
        path: &str,
        system: &wire::ComputerSystem,
        candidates: &[&str],
    ) -> Result<(), BmcError> {
        if self.reset(path, system, candidates).await? {
            return Ok(());
        }
        let action = system.actions.get(RESET_ACTION).cloned().unwrap_or_default();
        let allowed = self.reset_types(&action).await?.unwrap_or_default();
        Err(BmcError::Unsupported {
            what: format!(
                "reset type {} on {} (it allows {})",
                candidates.join(" or "),
                self.address(),
                allowed.join(", ")
            ),
        })
    }

    /// Polls `PowerState` until it is `target`, at most `timeout`.
    async fn wait_power(
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
            tokio::time::sleep(self.endpoint.options().poll_interval).await;
        }
    }

    async fn power_on(&self, path: &str, system: &wire::ComputerSystem) -> Result<(), BmcError> {
        self.reset_or_unsupported(path, system, &["On", "ForceOn"]).await?;
        self.wait_power(PowerState::On, self.endpoint.options().power_timeout, "power on").await
    }

    /// Reads the boot override.
    pub async fn boot_override(&self) -> Result<BootOverride, BmcError> {
        let (_, system, _) = self.system().await?;
        let boot = system.boot.unwrap_or_default();
        Ok(BootOverride { target: boot.target, enabled: boot.enabled, mode: boot.mode })
    }

    /// Sets the boot override: `target` once or for every boot, and the boot mode when
    /// given (only on BMCs that report one).
    pub async fn set_boot_override(
        &self,
        target: BootTarget,
        persistent: bool,
        mode: Option<BootMode>,
    ) -> Result<(), BmcError> {
        self.boot_override_with(target, persistent, mode, ModeSupport::Required).await
    }

    async fn boot_override_with(
        &self,
        target: BootTarget,
        persistent: bool,
        mode: Option<BootMode>,
        support: ModeSupport,
    ) -> Result<(), BmcError> {
        let operation = format!("set boot override {}", target.as_str());
        let mut precondition_retried = false;
        loop {
            let (path, system, etag) = self.system().await?;
            let boot = system.boot.unwrap_or_default();
            if let Some(allowed) = &boot.allowed_targets {
                if !allowed.is_empty() && !allowed.iter().any(|t| t == target.as_str()) {
                    return Err(BmcError::Unsupported {
                        what: format!(
                            "boot target {} on {} (it allows {})",
                            target.as_str(),
                            self.address(),
                            allowed.join(", ")
                        ),
                    });
                }
            }
            let mut mode = mode;
            if mode.is_some() && boot.mode.is_none() {
                if support == ModeSupport::Required {
                    return Err(BmcError::Unsupported {
                        what: format!("setting the boot mode on {}", self.address()),
                    });
                }
                tracing::debug!(node = %self.node, "the system reports no boot mode; leaving it");
                mode = None;
            }
            let patch = wire::BootPatch {
                target: Some(target.as_str().to_owned()),
                enabled: Some(if persistent { "Continuous" } else { "Once" }.to_owned()),
                mode: mode.map(|m| m.as_str().to_owned()),
            };
            let body = serde_json::json!({ "Boot": patch });
            let reply = self
                .endpoint
                .send(Method::PATCH, &path, Some(&body), etag.as_deref(), &operation)
                .await?;
            if reply.status == StatusCode::PRECONDITION_FAILED && !precondition_retried {
                // Someone changed the system between our read and write: read it again.
                tracing::debug!(node = %self.node, "ETag mismatch; retrying the boot override once");
                precondition_retried = true;
                continue;
            }
            if !reply.status.is_success() {
                return Err(self.endpoint.status_error(&reply, reply.status, &operation));
            }
            return self.finish(reply, &operation).await;
        }
    }

    /// Finds the CD/DVD virtual media device: under the system (newer BMCs), else under
    /// the managers of the system (iLO/iDRAC style).
    async fn cd_device(&self) -> Result<(String, wire::VirtualMedia, Option<String>), BmcError> {
        let (_, system, _) = self.system().await?;
        let mut collections: Vec<String> =
            system.virtual_media.into_iter().map(|l| l.odata_id).collect();
        let mut managers: Vec<String> =
            system.links.managed_by.into_iter().map(|l| l.odata_id).collect();
        if managers.is_empty() && collections.is_empty() {
            let (root, _) = self
                .endpoint
                .get::<wire::ServiceRoot>("/redfish/v1/", "read the service root")
                .await?;
            if let Some(link) = root.managers {
                let (list, _) = self
                    .endpoint
                    .get::<wire::Collection>(&link.odata_id, "list the managers")
                    .await?;
                managers = list.members.into_iter().map(|l| l.odata_id).collect();
            }
        }
        for manager in managers {
            let (manager, _) =
                self.endpoint.get::<wire::Manager>(&manager, "read the manager").await?;
            collections.extend(manager.virtual_media.map(|l| l.odata_id));
        }
        for collection in collections {
            let (list, _) = match self
                .endpoint
                .get::<wire::Collection>(&collection, "list virtual media")
                .await
            {
                Ok(found) => found,
                Err(BmcError::Unsupported { .. }) => continue,
                Err(e) => return Err(e),
            };
            for member in list.members {
                let (media, etag) = self
                    .endpoint
                    .get::<wire::VirtualMedia>(&member.odata_id, "read virtual media")
                    .await?;
                if media.is_optical() {
                    let etag = wire::etag(etag.as_deref(), media.odata_etag.as_deref());
                    return Ok((member.odata_id, media, etag));
                }
            }
        }
        Err(BmcError::Unsupported {
            what: format!("virtual media on {}: no CD/DVD device found", self.address()),
        })
    }

    /// The CD/DVD virtual media device's state.
    pub async fn virtual_media(&self) -> Result<VirtualMediaStatus, BmcError> {
        let (device, media, _) = self.cd_device().await?;
        Ok(VirtualMediaStatus {
            device,
            inserted: media.has_media(),
            image: media.image.filter(|i| !i.is_empty()),
        })
    }

    async fn eject_device(
        &self,
        device: &str,
        media: &wire::VirtualMedia,
        etag: Option<&str>,
    ) -> Result<(), BmcError> {
        let operation = "eject virtual media";
        let reply = match media.actions.get(EJECT_MEDIA_ACTION).and_then(|a| a.target.clone()) {
            Some(target) => {
                let body = serde_json::json!({});
                self.endpoint.call(Method::POST, &target, Some(&body), None, operation).await?
            }
            None => {
                let body = serde_json::json!({ "Image": null, "Inserted": false });
                self.endpoint.call(Method::PATCH, device, Some(&body), etag, operation).await?
            }
        };
        self.finish(reply, operation).await
    }

    /// Puts the ISO at `url` into the CD/DVD device (ejecting what was there).
    pub async fn insert_virtual_media(&self, url: &str) -> Result<(), BmcError> {
        let (device, media, etag) = self.cd_device().await?;
        let mut etag = etag;
        if media.has_media() {
            self.eject_device(&device, &media, etag.as_deref()).await?;
            etag = None;
        }
        let operation = "insert virtual media";
        let body = wire::insert_media_body(url);
        let reply = match media.actions.get(INSERT_MEDIA_ACTION).and_then(|a| a.target.clone()) {
            Some(target) => {
                self.endpoint.call(Method::POST, &target, Some(&body), None, operation).await?
            }
            None => {
                // Older BMCs take a PATCH of the device; its ETag changed if we ejected.
                let etag = match etag {
                    Some(etag) => Some(etag),
                    None => {
                        let (media, etag) = self
                            .endpoint
                            .get::<wire::VirtualMedia>(&device, "read virtual media")
                            .await?;
                        wire::etag(etag.as_deref(), media.odata_etag.as_deref())
                    }
                };
                let body = serde_json::json!({ "Image": url, "Inserted": true });
                self.endpoint
                    .call(Method::PATCH, &device, Some(&body), etag.as_deref(), operation)
                    .await?
            }
        };
        self.finish(reply, operation).await
    }

    /// Empties the CD/DVD device; nothing to do when it is empty.
    pub async fn eject_virtual_media(&self) -> Result<(), BmcError> {
        let (device, media, etag) = self.cd_device().await?;
        if !media.has_media() {
            return Ok(());
        }
        self.eject_device(&device, &media, etag.as_deref()).await
    }

    /// GETs an optional resource: absent or unreadable (404, bad JSON, a BMC error) is
    /// `None`; the BMC being unreachable, busy or refusing credentials is an error.
    async fn optional(&self, path: Option<&str>, what: &str) -> Result<Option<Value>, BmcError> {
        let Some(path) = path else { return Ok(None) };
        match self.endpoint.get::<Value>(path, what).await {
            Ok((value, _)) => Ok(Some(value)),
            Err(e @ (BmcError::Unsupported { .. } | BmcError::Protocol { .. })) => {
                tracing::debug!(node = %self.node, error = %e, "optional Redfish resource skipped");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The members of an optional collection, each read.
    async fn members(&self, path: Option<&str>, what: &str) -> Result<Vec<Value>, BmcError> {
        let Some(collection) = self.optional(path, what).await? else { return Ok(Vec::new()) };
        let mut found = Vec::new();
        for link in member_links(&collection) {
            found.extend(self.optional(Some(&link), what).await?);
        }
        Ok(found)
    }

    /// Reads processors, memory, NICs, drives, BIOS attributes, boot mode and secure
    /// boot into the agent's inventory shape.
    pub async fn inspect(&self) -> Result<OobInspection, BmcError> {
        let path = self.system_path().await?;
        let (system, _) = self.endpoint.get::<Value>(&path, "read the system").await?;
        let processors =
            self.members(link_of(&system, "Processors").as_deref(), "read processors").await?;
        let interfaces =
            self.members(link_of(&system, "EthernetInterfaces").as_deref(), "read NICs").await?;
        let mut drives = Vec::new();
        for storage in self.members(link_of(&system, "Storage").as_deref(), "read storage").await? {
            let links: Vec<String> = storage
                .get("Drives")
                .and_then(Value::as_array)
                .map(|d| d.iter().filter_map(odata_id).collect())
                .unwrap_or_default();
            for link in links {
                drives.extend(self.optional(Some(&link), "read a drive").await?);
            }
        }
        if drives.is_empty() {
            for simple in self
                .members(link_of(&system, "SimpleStorage").as_deref(), "read simple storage")
                .await?
            {
                if let Some(devices) = simple.get("Devices").and_then(Value::as_array) {
                    drives.extend(devices.iter().cloned());
                }
            }
        }
        let secure_boot =
            self.optional(link_of(&system, "SecureBoot").as_deref(), "read secure boot").await?;
        let bios = self.optional(link_of(&system, "Bios").as_deref(), "read BIOS").await?;
        Ok(inspect::build(&inspect::Collected {
            system,
            processors,
            interfaces,
            drives,
            secure_boot,
            bios,
        }))
    }

    /// Out-of-band clean step `reset_bios_to_default`: `Bios.ResetBios`.
    pub async fn reset_bios_to_default(&self) -> Result<(), BmcError> {
        let path = self.system_path().await?;
        let (system, _) = self.endpoint.get::<Value>(&path, "read the system").await?;
        let bios_path = link_of(&system, "Bios").ok_or_else(|| BmcError::Unsupported {
            what: format!("BIOS settings on {}", self.address()),
        })?;
        let (bios, _) = self.endpoint.get::<Value>(&bios_path, "read BIOS").await?;
        let target = bios
            .get("Actions")
            .and_then(|a| a.get("#Bios.ResetBios"))
            .and_then(|a| a.get("target"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{bios_path}/Actions/Bios.ResetBios"));
        let operation = "reset BIOS to default";
        let body = serde_json::json!({});
        let reply = self.endpoint.call(Method::POST, &target, Some(&body), None, operation).await?;
        self.finish(reply, operation).await
    }

    /// Out-of-band clean step `set_secure_boot`: PATCH `SecureBootEnable`.
    pub async fn set_secure_boot(&self, enabled: bool) -> Result<(), BmcError> {
        let path = self.system_path().await?;
        let (system, _) = self.endpoint.get::<Value>(&path, "read the system").await?;
        let secure_path = link_of(&system, "SecureBoot").ok_or_else(|| BmcError::Unsupported {
            what: format!("secure boot on {}", self.address()),
        })?;
        let operation = "set secure boot";
        let body = serde_json::json!({ "SecureBootEnable": enabled });
        let mut retried = false;
        loop {
            let (current, etag) = self.endpoint.get::<Value>(&secure_path, operation).await?;
            let body_etag = current.get("@odata.etag").and_then(Value::as_str);
            let etag = wire::etag(etag.as_deref(), body_etag);
            let reply = self
                .endpoint
                .send(Method::PATCH, &secure_path, Some(&body), etag.as_deref(), operation)
                .await?;
            if reply.status == StatusCode::PRECONDITION_FAILED && !retried {
                retried = true;
                continue;
            }
            if !reply.status.is_success() {
                return Err(self.endpoint.status_error(&reply, reply.status, operation));
            }
            return self.finish(reply, operation).await;
        }
    }

    /// Inserts the ISO and makes the next boot (only) boot from it.
    pub async fn boot_from_virtual_media(&self, url: &str) -> Result<(), BmcError> {
        self.insert_virtual_media(url).await?;
        self.set_boot_override(BootTarget::Cd, false, None).await
    }
}

#[async_trait::async_trait]
impl Bmc for RedfishBmc {
    async fn power_state(&self) -> Result<PowerState, BmcError> {
        let (_, system, _) = self.system().await?;
        self.power_from(&system)
    }

    async fn set_power(
        &self,
        action: PowerAction,
        timeout: Option<Duration>,
    ) -> Result<(), BmcError> {
        let options = self.endpoint.options().clone();
        let (path, system, _) = self.system().await?;
        let current = self.power_from(&system)?;
        tracing::info!(node = %self.node, ?action, ?current, "Redfish power action");
        match (action, current) {
            (PowerAction::On, PowerState::On)
            | (PowerAction::Off | PowerAction::SoftOff, PowerState::Off) => Ok(()),
            (PowerAction::On | PowerAction::Reboot | PowerAction::SoftReboot, PowerState::Off) => {
                self.power_on(&path, &system).await
            }
            (PowerAction::Off, PowerState::On) => {
                self.reset_or_unsupported(&path, &system, &["ForceOff"]).await?;
                self.wait_power(PowerState::Off, options.power_timeout, "power off").await
            }
            (PowerAction::Reboot, PowerState::On) => {
                if self.reset(&path, &system, &["ForceRestart", "PowerCycle"]).await? {
                    return self.wait_power(PowerState::On, options.power_timeout, "reboot").await;
                }
                // No restart: off, then on.
                self.reset_or_unsupported(&path, &system, &["ForceOff"]).await?;
                self.wait_power(PowerState::Off, options.power_timeout, "reboot (power off)")
                    .await?;
                self.power_on(&path, &system).await
            }
            (PowerAction::SoftOff, PowerState::On) => {
                let timeout = timeout.unwrap_or(options.soft_power_off_timeout);
                self.reset_or_unsupported(&path, &system, &["GracefulShutdown"]).await?;
                self.wait_power(PowerState::Off, timeout, "soft power off").await
            }
            (PowerAction::SoftReboot, PowerState::On) => {
                let timeout = timeout.unwrap_or(options.soft_power_off_timeout);
                if self.reset(&path, &system, &["GracefulRestart"]).await? {
                    return self.wait_power(PowerState::On, timeout, "soft reboot").await;
                }
                self.reset_or_unsupported(&path, &system, &["GracefulShutdown"]).await?;
                self.wait_power(PowerState::Off, timeout, "soft reboot (soft power off)").await?;
                self.power_on(&path, &system).await
            }
        }
    }

    async fn boot_device(&self) -> Result<BootDeviceSetting, BmcError> {
        let boot = self.boot_override().await?;
        let enabled = boot.enabled.as_deref();
        let device = match enabled {
            Some("Disabled") => None,
            _ => boot.target.as_deref().and_then(device_of_target),
        };
        let persistent = match enabled {
            Some("Continuous") => Some(true),
            Some("Once") => Some(false),
            _ => None,
        };
        Ok(BootDeviceSetting { device, persistent })
    }

    async fn set_boot_device(
        &self,
        device: BootDevice,
        persistent: bool,
        mode: Option<bmc::BootMode>,
    ) -> Result<(), BmcError> {
        let target = BootTarget::from_device(device).ok_or_else(|| BmcError::Unsupported {
            what: format!("boot device {} over Redfish", device.as_str()),
        })?;
        let mode = mode.map(BootMode::from_mode);
        self.boot_override_with(target, persistent, mode, ModeSupport::IfSupported).await
    }

    async fn boot_from_virtual_media(
        &self,
        url: &str,
        mode: Option<bmc::BootMode>,
    ) -> Result<(), BmcError> {
        self.insert_virtual_media(url).await?;
        let mode = mode.map(BootMode::from_mode);
        self.boot_override_with(BootTarget::Cd, false, mode, ModeSupport::IfSupported).await
    }

    async fn eject_virtual_media(&self) -> Result<(), BmcError> {
        RedfishBmc::eject_virtual_media(self).await
    }

    async fn inspect(&self) -> Result<OobInspection, BmcError> {
        RedfishBmc::inspect(self).await
    }

    async fn run_oob_step(&self, step: super::oob_steps::OobStep) -> Result<(), BmcError> {
        match step {
            super::oob_steps::OobStep::ResetBiosToDefault => self.reset_bios_to_default().await,
            super::oob_steps::OobStep::SetSecureBoot { enable } => {
                self.set_secure_boot(enable).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_type_choice() {
        let all = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let sushy = all(&[
            "On",
            "ForceOff",
            "GracefulShutdown",
            "GracefulRestart",
            "ForceRestart",
            "Nmi",
            "ForceOn",
        ]);
        let only_cycle = all(&["On", "ForceOff", "PowerCycle"]);
        type Case<'a> = (Option<&'a [String]>, &'a [&'a str], Option<&'a str>);
        let cases: [Case; 6] = [
            (Some(&sushy), &["ForceRestart", "PowerCycle"], Some("ForceRestart")),
            (Some(&only_cycle), &["ForceRestart", "PowerCycle"], Some("PowerCycle")),
            (Some(&only_cycle), &["GracefulRestart"], None),
            (None, &["On", "ForceOn"], Some("On")),
            (Some(&[]), &["ForceOff"], Some("ForceOff")),
            (Some(&all(&["ForceOn"])), &["On", "ForceOn"], Some("ForceOn")),
        ];
        for (allowed, candidates, want) in cases {
            assert_eq!(choose_reset(allowed, candidates), want, "{allowed:?} {candidates:?}");
        }
    }

    #[test]
    fn power_states_in_transition_count_as_their_target() {
        let cases = [
            ("On", Some(PowerState::On)),
            ("PoweringOn", Some(PowerState::On)),
            ("Off", Some(PowerState::Off)),
            ("PoweringOff", Some(PowerState::Off)),
            ("Paused", None),
        ];
        for (state, want) in cases {
            assert_eq!(power_of(state), want, "{state}");
        }
    }

    #[test]
    fn boot_devices_map_both_ways() {
        let cases = [
            (BootDevice::Pxe, Some("Pxe")),
            (BootDevice::Disk, Some("Hdd")),
            (BootDevice::Cdrom, Some("Cd")),
            (BootDevice::Bios, Some("BiosSetup")),
            (BootDevice::Safe, None),
        ];
        for (device, target) in cases {
            assert_eq!(BootTarget::from_device(device).map(BootTarget::as_str), target);
            if let Some(target) = target {
                assert_eq!(device_of_target(target), Some(device));
            }
        }
        assert_eq!(device_of_target("UefiHttp"), None);
        assert_eq!(device_of_target("None"), None);
    }

    #[test]
    fn driver_reuses_endpoints_per_bmc_and_replaces_them_when_settings_change() {
        let driver = RedfishDriver::new();
        let info = |system: &str, password: &str| {
            serde_json::json!({"redfish_address": "http://127.0.0.1:1", "redfish_system_id": system,
                "redfish_username": "u", "redfish_password": password})
            .as_object()
            .unwrap()
            .clone()
        };
        let a = driver.connect_redfish("n1", &info("1", "p")).unwrap();
        let b = driver.connect_redfish("n2", &info("2", "p")).unwrap();
        assert!(Arc::ptr_eq(&a.endpoint, &b.endpoint));
        assert_eq!(b.system_path.as_deref(), Some("/redfish/v1/Systems/2"));
        let c = driver.connect_redfish("n1", &info("1", "other")).unwrap();
        assert!(!Arc::ptr_eq(&a.endpoint, &c.endpoint));
        let err = driver.validate(&Map::new()).unwrap_err();
        assert_eq!(err.0, "Missing 'redfish_address' parameter in node's driver_info");
    }
}
