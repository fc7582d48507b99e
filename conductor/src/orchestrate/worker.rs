//! The conductor's worker: takes the tasks the API hands over (provision verbs, power
//! requests, heartbeats) and carries them out against the BMC, the agent and the store.
//!
//! Each task re-reads the node and acts on what the store says now, so a task that
//! arrives twice, late, or after a restart does the right thing or nothing.

use std::sync::Arc;
use std::time::Duration;

use ferric_shared::states::{Event, PowerState, PowerTarget, ProvisionState, ProvisionVerb};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::api::ConductorTask;
use crate::bmc::{self, Bmc, BmcError, DriverInfoError, DriverRegistry, PowerAction};
use crate::config::ConductorConfig;
use crate::store::{LastError, Node, Store, StoreError, Transition};

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
            other => {
                tracing::info!(task = ?other, "task recorded; this flow is carried out by the deploy and cleaning orchestration");
            }
        }
    }

    fn bmc_for(&self, node: &Node) -> Result<Arc<dyn Bmc>, TaskError> {
        let driver = self
            .drivers
            .get(&node.driver)
            .ok_or_else(|| TaskError::NoDriver { node: node.uuid, driver: node.driver.clone() })?;
        driver.validate(&node.driver_info)?;
        Ok(driver.connect(&node.uuid.to_string(), &node.driver_info)?)
    }

    /// enroll → verifying → manageable: the driver_info must be valid and the BMC must
    /// answer a power-state read; otherwise back to enroll with `last_error`.
    async fn manage(&self, uuid: Uuid) {
        let span = tracing::info_span!("manage", node = %uuid);
        let _enter = span.enter();
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

    /// Applies a power request, then records what the BMC reports.
    async fn power(&self, uuid: Uuid, target: PowerTarget, timeout: Option<Duration>) {
        let span = tracing::info_span!("power", node = %uuid, target = %target);
        let _enter = span.enter();
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

    async fn record_power(&self, uuid: Uuid, power: bmc::PowerState) -> Result<(), StoreError> {
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
