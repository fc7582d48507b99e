//! The conductor's worker: takes the tasks the API hands over (provision verbs, power
//! requests, heartbeats) and carries them out against the BMC, the agent and the store.
//!
//! Each task re-reads the node and acts on what the store says now, so a task that
//! arrives twice, late, or after a restart does the right thing or nothing.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use ferric_shared::states::{Event, PowerState, PowerTarget, ProvisionState, ProvisionVerb};
use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::agent_client::image::{node_boot_mode, UnknownBootMode};
use crate::agent_client::{
    AgentClient, AgentClientConfig, AgentClientError, ImageInfoBuildError, ImageInfoConfig,
};
use crate::api::ConductorTask;
use crate::bmc::{
    self, Bmc, BmcError, BootDevice, BootMode, DriverInfoError, DriverRegistry, PowerAction,
};
use crate::boot::{BootInterface, UnknownBootInterface, VirtualMediaError};
use crate::config::ConductorConfig;
use crate::configdrive::ConfigDriveError;
use crate::images::ImageNameError;
use crate::store::{JsonMap, LastError, Node, PortQuery, Store, StoreError, Transition};

use super::plan::PlanError;
use super::retry::{RetryPolicy, RetryingBmc};

/// `driver_internal_info` keys that belong to one boot of the ramdisk: wiped whenever the
/// node is powered off or rebooted into a new ramdisk, so that every boot gets a new
/// token and its own callback URL and certificate.
pub const AGENT_BOOT_KEYS: &[&str] = &[
    "agent_url",
    "agent_secret_token",
    "agent_verify_ca",
    "agent_cached_clean_steps",
    "agent_cached_deploy_steps",
    "hardware_manager_version",
];

/// How long a provision task waits for a node's lock held by another task (a heartbeat
/// being processed) before giving up.
const PROVISION_LOCK_WAIT: Duration = Duration::from_secs(60);
const LOCK_RETRY: Duration = Duration::from_millis(200);

/// Why a task could not be carried out. Recorded as the node's `last_error`.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("store")]
    Store(#[from] StoreError),
    #[error("node {node} uses driver {driver:?}, which this conductor does not have")]
    NoDriver { node: Uuid, driver: String },
    #[error(transparent)]
    DriverInfo(#[from] DriverInfoError),
    #[error(transparent)]
    Bmc(#[from] BmcError),
    #[error(transparent)]
    Agent(#[from] AgentClientError),
    #[error("cannot build the image_info for write_image")]
    ImageInfo(#[from] ImageInfoBuildError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("instance_info image_source names no usable file in the image directory")]
    ImageName(#[from] ImageNameError),
    #[error("image {name:?} does not exist in the conductor's image directory")]
    ImageMissing { name: String },
    #[error(transparent)]
    ConfigDrive(#[from] ConfigDriveError),
    #[error("the config drive rendering task did not finish")]
    ConfigDriveTask(#[source] tokio::task::JoinError),
    #[error("the agent offers no deploy.write_image step")]
    NoWriteImage,
    #[error(transparent)]
    BootMode(#[from] UnknownBootMode),
    #[error(transparent)]
    BootInterface(#[from] UnknownBootInterface),
    #[error(transparent)]
    VirtualMedia(#[from] VirtualMediaError),
    #[error("driver_internal_info {key} is unusable: {reason}")]
    InternalInfo { key: &'static str, reason: String },
    #[error("the node's {field} is unusable")]
    CurrentStep {
        field: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Everything a task needs.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    pub store: Store,
    pub drivers: Arc<DriverRegistry>,
    pub config: Arc<ConductorConfig>,
}

impl Orchestrator {
    /// Runs tasks as they arrive until the channel closes. Tasks for different nodes run
    /// concurrently; each takes the node's reservation while it acts.
    pub async fn run(self, mut tasks: mpsc::Receiver<ConductorTask>) {
        while let Some(task) = tasks.recv().await {
            let this = self.clone();
            tokio::spawn(async move { this.handle(task).await });
        }
    }

    /// Carries out one task; failures are logged and recorded on the node.
    pub async fn handle(&self, task: ConductorTask) {
        match task {
            ConductorTask::Provision { node, verb: ProvisionVerb::Manage, .. } => {
                self.manage(node).await
            }
            ConductorTask::Power { node, target, timeout } => {
                self.power(node, target, timeout).await
            }
            ConductorTask::Provision { node, verb, request, .. } => match verb {
                ProvisionVerb::Provide | ProvisionVerb::Clean => {
                    self.start_cleaning(node, request.clean_steps.clone()).await
                }
                ProvisionVerb::Active | ProvisionVerb::Deploy | ProvisionVerb::Rebuild => {
                    self.start_deploy(node, &request).await
                }
                ProvisionVerb::Deleted | ProvisionVerb::Undeploy => self.tear_down(node).await,
                ProvisionVerb::Inspect => self.start_inspection(node).await,
                ProvisionVerb::Abort => {
                    self.abort(node).await;
                    self.abort_inspection(node).await
                }
                ProvisionVerb::Unhold => self.unhold(node).await,
                other => {
                    tracing::info!(node = %node, verb = %other, "no orchestration for this verb");
                }
            },
            ConductorTask::Heartbeat { node } => self.heartbeat(node).await,
            ConductorTask::InspectionData { node } => self.inspection_data(node).await,
        }
    }

    /// Acts on a heartbeat of a node waiting for its agent. A node locked by another task
    /// is skipped: the agent heartbeats again soon, as with Ironic.
    async fn heartbeat(&self, uuid: Uuid) {
        let span = tracing::info_span!("heartbeat", node = %uuid);
        async move {
            if !self.lock(uuid, false).await {
                return;
            }
            let result = async {
                let node = self.store.get_node(&uuid.to_string()).await?;
                if node.maintenance {
                    // As Ironic with allow_provisioning_in_maintenance (its default): the
                    // heartbeat is recorded, and nothing is done until maintenance ends.
                    tracing::info!("heartbeat from a node in maintenance; not taking any action");
                    return Ok(());
                }
                match node.provision_state {
                    ProvisionState::CleanWait => self.cleaning_heartbeat(node).await,
                    ProvisionState::DeployWait => self.deploy_heartbeat(node).await,
                    other => {
                        tracing::debug!(state = %other, "no heartbeat action in this state");
                        Ok(())
                    }
                }
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(error = %crate::error_chain(&e), "heartbeat processing failed");
            }
            self.unlock(uuid).await;
        }
        .instrument(span)
        .await
    }

    /// Takes the node's lock. With `wait`, retries for a while when another task holds
    /// it; without, gives up at once. `false` when the lock was not taken.
    pub(crate) async fn lock(&self, uuid: Uuid, wait: bool) -> bool {
        let holder = &self.config.conductor.name;
        let deadline = tokio::time::Instant::now() + PROVISION_LOCK_WAIT;
        loop {
            match self.store.reserve(uuid, holder).await {
                Ok(()) => return true,
                Err(StoreError::Locked { holder: other, .. })
                    if wait && tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(holder = %other, "node locked; retrying");
                    tokio::time::sleep(LOCK_RETRY).await;
                }
                Err(e) => {
                    tracing::info!(error = %crate::error_chain(&e), "node not locked; skipping");
                    return false;
                }
            }
        }
    }

    pub(crate) async fn unlock(&self, uuid: Uuid) {
        if let Err(e) = self.store.release(uuid, &self.config.conductor.name).await {
            tracing::warn!(error = %crate::error_chain(&e), "cannot unlock node");
        }
    }

    /// The client for the node's current agent.
    pub(crate) fn agent(&self, node: &Node) -> Result<AgentClient, TaskError> {
        let config = AgentClientConfig {
            command_timeout: self.config.agent.command_timeout(),
            max_command_attempts: self.config.agent.max_command_attempts,
            ..AgentClientConfig::default()
        };
        Ok(AgentClient::from_driver_internal_info(&node.driver_internal_info, config)?)
    }

    /// The node as the agent is sent it (secrets masked, as the API shows it) and its
    /// ports.
    pub(crate) async fn agent_view(&self, node: &Node) -> Result<(Value, Vec<Value>), TaskError> {
        let base = self.config.public_url();
        let conductor = &self.config.conductor.name;
        let wire = crate::api::view::node(node, &base, conductor);
        let encode = |source| TaskError::Encode { what: "the node", source };
        let node_value = serde_json::to_value(&wire).map_err(encode)?;
        let query = PortQuery { node_uuid: Some(node.uuid), ..PortQuery::default() };
        let ports = self
            .store
            .list_ports(&query)
            .await?
            .iter()
            .map(|p| serde_json::to_value(crate::api::view::port(p, &base)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TaskError::Encode { what: "the ports", source })?;
        Ok((node_value, ports))
    }

    /// The `image_info` settings for `node`: its boot mode stands in for the default, so
    /// that a partition image is written for the mode the BMC boots it in.
    pub(crate) fn image_info_config(&self, node: &Node) -> Result<ImageInfoConfig, TaskError> {
        Ok(ImageInfoConfig {
            default_boot_mode: self.boot_mode(node)?.as_str().to_owned(),
            ..ImageInfoConfig::default()
        })
    }

    /// The node's boot mode: `instance_info.deploy_boot_mode`, else its `boot_mode`
    /// capability, else `[deploy] default_boot_mode`.
    pub(crate) fn boot_mode(&self, node: &Node) -> Result<BootMode, TaskError> {
        let default = self.config.deploy.default_boot_mode();
        Ok(node_boot_mode(&node.instance_info, &node.properties, default)?)
    }

    /// Sets the boot device (in the node's boot mode) and remembers it where the boot
    /// scripts look.
    pub(crate) async fn set_boot_device(
        &self,
        node: &Node,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), TaskError> {
        let mode = self.boot_mode(node)?;
        self.bmc_for(node)?.set_boot_device(device, persistent, Some(mode)).await?;
        self.record_boot_device(node, device).await
    }

    async fn record_boot_device(&self, node: &Node, device: BootDevice) -> Result<(), TaskError> {
        let mut set = JsonMap::new();
        set.insert("boot_device".into(), Value::String(device.as_str().to_owned()));
        self.store.update_driver_internal_info(node.uuid, set, &[]).await?;
        Ok(())
    }

    /// The URL of the deploy ISO of a node that boots over virtual media, checked as
    /// validation checks it.
    pub(crate) fn deploy_iso_url(&self, node: &Node) -> Result<String, TaskError> {
        let supported = self.drivers.get(&node.driver).is_some_and(|d| d.supports_virtual_media());
        Ok(crate::boot::virtual_media_iso(
            &node.driver,
            supported,
            &node.driver_info,
            self.config.deploy.deploy_iso.as_deref(),
            &self.config.public_url(),
            &self.config.image_dir(),
        )?)
    }

    /// Makes the next boot of the node boot the deploy ramdisk, as its boot interface
    /// does it: one-time PXE in the node's boot mode, or the deploy ISO inserted as
    /// virtual media with a one-time CD boot.
    pub(crate) async fn prepare_ramdisk_boot(
        &self,
        node: &Node,
        bmc: &dyn Bmc,
    ) -> Result<(), TaskError> {
        let mode = self.boot_mode(node)?;
        match BootInterface::of_node(node.boot_interface.as_deref())? {
            BootInterface::Ipxe | BootInterface::Pxe => {
                bmc.set_boot_device(BootDevice::Pxe, false, Some(mode)).await?;
                self.record_boot_device(node, BootDevice::Pxe).await
            }
            BootInterface::RedfishVirtualMedia => {
                let url = self.deploy_iso_url(node)?;
                tracing::info!(%url, "booting the deploy ISO over virtual media");
                bmc.boot_from_virtual_media(&url, Some(mode)).await?;
                self.record_boot_device(node, BootDevice::Cdrom).await
            }
            // As Ironic's fake boot interface: the boot device is left alone.
            BootInterface::Fake => Ok(()),
        }
    }

    /// Ejects the deploy ISO of a node that boots over virtual media, once the ramdisk is
    /// no longer needed. A failure is logged: the node is usable with the ISO inserted
    /// (its boot device says where it boots), and the next insert replaces it.
    pub(crate) async fn eject_deploy_media(&self, node: &Node, bmc: &dyn Bmc) {
        let interface = BootInterface::of_node(node.boot_interface.as_deref());
        if interface != Ok(BootInterface::RedfishVirtualMedia) {
            return;
        }
        match bmc.eject_virtual_media().await {
            Ok(()) => tracing::info!("deploy ISO ejected"),
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "cannot eject the deploy ISO")
            }
        }
    }

    /// Forgets the previous ramdisk (token, URL, certificate, cached steps), then boots the
    /// node into the ramdisk: the boot interface's one-time boot device, and power on (or
    /// reboot when on).
    pub(crate) async fn boot_ramdisk(&self, node: &Node) -> Result<(), TaskError> {
        self.store.update_driver_internal_info(node.uuid, JsonMap::new(), AGENT_BOOT_KEYS).await?;
        let bmc = self.bmc_for(node)?;
        self.prepare_ramdisk_boot(node, bmc.as_ref()).await?;
        let action = match bmc.power_state().await? {
            bmc::PowerState::On => PowerAction::Reboot,
            bmc::PowerState::Off => PowerAction::On,
        };
        bmc.set_power(action, None).await?;
        self.record_power(node.uuid, bmc.power_state().await?).await?;
        Ok(())
    }

    /// Powers the node off through the BMC and forgets its ramdisk (ejecting its deploy
    /// ISO when it booted one).
    pub(crate) async fn power_off(&self, node: &Node) -> Result<(), TaskError> {
        let bmc = self.bmc_for(node)?;
        let powered_off = async {
            bmc.set_power(PowerAction::Off, None).await?;
            self.record_power(node.uuid, bmc.power_state().await?).await?;
            Ok::<_, TaskError>(())
        }
        .await;
        self.eject_deploy_media(node, bmc.as_ref()).await;
        powered_off?;
        self.store.update_driver_internal_info(node.uuid, JsonMap::new(), AGENT_BOOT_KEYS).await?;
        Ok(())
    }

    /// Like [`Self::power_off`], logging instead of failing: used on paths that already
    /// record a failure.
    pub(crate) async fn power_off_logged(&self, node: &Node) {
        if let Err(e) = self.power_off(node).await {
            tracing::warn!(error = %crate::error_chain(&e), "cannot power the node off");
        }
    }

    /// Applies `transition`, logging a failure (the node moved meanwhile, or the store is
    /// unavailable); `true` when the node moved.
    pub(crate) async fn apply(&self, uuid: Uuid, transition: Transition) -> bool {
        match self.store.transition(uuid, &transition).await {
            Ok(crate::store::TransitionOutcome::Moved { from, to, .. }) => {
                tracing::info!(%from, %to, event = %transition.event, "provision state changed");
                true
            }
            Ok(outcome) => {
                tracing::info!(?outcome, event = %transition.event, "no state change");
                false
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), event = %transition.event,
                    "state change refused");
                false
            }
        }
    }

    /// The node's BMC, its calls retried on transient failures as `[bmc]` says.
    pub(crate) fn bmc_for(&self, node: &Node) -> Result<Arc<dyn Bmc>, TaskError> {
        let driver = self
            .drivers
            .get(&node.driver)
            .ok_or_else(|| TaskError::NoDriver { node: node.uuid, driver: node.driver.clone() })?;
        driver.validate(&node.driver_info)?;
        let bmc = driver.connect(&node.uuid.to_string(), &node.driver_info)?;
        Ok(Arc::new(RetryingBmc::new(bmc, RetryPolicy::from_config(&self.config.bmc))))
    }

    /// enroll → verifying → manageable: the driver_info must be valid and the BMC must
    /// answer a power-state read; otherwise back to enroll with `last_error`.
    async fn manage(&self, uuid: Uuid) {
        let span = tracing::info_span!("manage", node = %uuid);
        async move {
            let node = match self.store.get_node(&uuid.to_string()).await {
                Ok(n) if n.provision_state == ProvisionState::Verifying => n,
                Ok(n) => {
                    tracing::info!(state = %n.provision_state, "not verifying any more; nothing to do");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "cannot read node");
                    return;
                }
            };
            let verified = async {
                let bmc = self.bmc_for(&node)?;
                let power = bmc.power_state().await?;
                self.record_power(uuid, power).await?;
                Ok::<_, TaskError>(())
            }
            .await;
            let transition = match verified {
                Ok(()) => Transition::new(Event::Done).last_error(LastError::Clear),
                Err(e) => {
                    let message = format!("Failed to verify node {uuid}: {}", crate::error_chain(&e));
                    tracing::warn!(%message, "verification failed");
                    Transition::new(Event::Fail).last_error(LastError::Set(message))
                }
            };
            if let Err(e) = self.store.transition(uuid, &transition).await {
                tracing::warn!(error = %crate::error_chain(&e), "cannot finish verification");
            }
        }
        .instrument(span)
        .await
    }

    /// Applies a power request, then records what the BMC reports.
    async fn power(&self, uuid: Uuid, target: PowerTarget, timeout: Option<Duration>) {
        let span = tracing::info_span!("power", node = %uuid, target = %target);
        async move {
            let holder = self.config.conductor.name.clone();
            if let Err(e) = self.store.reserve(uuid, &holder).await {
                tracing::warn!(error = %crate::error_chain(&e), "cannot lock node for power change");
                return;
            }
            let result = async {
                let node = self.store.get_node(&uuid.to_string()).await?;
                let bmc = self.bmc_for(&node)?;
                let timeout = timeout.or(Some(self.config.power.soft_power_off_timeout()));
                bmc.set_power(power_action(target), timeout).await?;
                let now = bmc.power_state().await?;
                self.record_power(uuid, now).await?;
                Ok::<_, TaskError>(())
            }
            .await;
            let finish = self
                .store
                .update_node(&uuid.to_string(), |n| {
                    n.target_power_state = None;
                    match &result {
                        Ok(()) => n.last_error = None,
                        Err(e) => {
                            n.last_error = Some(format!(
                                "Failed to change power state to '{target}' of node {uuid}: {}",
                                crate::error_chain(e)
                            ))
                        }
                    }
                    Ok::<_, std::convert::Infallible>(())
                })
                .await;
            if let Err(e) = finish {
                tracing::warn!(error = %crate::error_chain(&e), "cannot record power result");
            }
            if let Err(e) = self.store.release(uuid, &holder).await {
                tracing::warn!(error = %crate::error_chain(&e), "cannot unlock node");
            }
            if let Err(e) = result {
                tracing::warn!(error = %crate::error_chain(&e), "power change failed");
            }
        }
        .instrument(span)
        .await
    }

    pub(crate) async fn record_power(
        &self,
        uuid: Uuid,
        power: bmc::PowerState,
    ) -> Result<(), StoreError> {
        let state = api_power_state(power);
        self.store
            .update_node(&uuid.to_string(), |n| {
                n.power_state = Some(state);
                Ok::<_, std::convert::Infallible>(())
            })
            .await
            .map_err(|e| match e {
                crate::store::UpdateError::Store(s) => s,
                crate::store::UpdateError::Rejected(never) => match never {},
            })?;
        Ok(())
    }
}

/// The text for `last_error` of a failed agent call: the agent's own message for a
/// command that ran and failed (as Ironic shows it), else the whole error chain.
pub fn agent_failure_message(error: &TaskError) -> String {
    match error {
        TaskError::Agent(AgentClientError::CommandFailed { command_error, .. }) => {
            crate::agent_client::command_error_message(Some(command_error))
        }
        other => crate::error_chain(other),
    }
}

/// The API's power state for what a BMC reports.
pub fn api_power_state(power: bmc::PowerState) -> PowerState {
    match power {
        bmc::PowerState::On => PowerState::On,
        bmc::PowerState::Off => PowerState::Off,
    }
}

/// The BMC action for an API power target.
pub fn power_action(target: PowerTarget) -> PowerAction {
    match target {
        PowerTarget::On => PowerAction::On,
        PowerTarget::Off => PowerAction::Off,
        PowerTarget::Rebooting => PowerAction::Reboot,
        PowerTarget::SoftRebooting => PowerAction::SoftReboot,
        PowerTarget::SoftPowerOff => PowerAction::SoftOff,
    }
}
