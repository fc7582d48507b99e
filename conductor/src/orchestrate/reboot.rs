//! Reboots asked for by a step (`reboot_requested: true`), as Ironic's `_post_step_reboot`.
//!
//! When such a step has finished, the conductor boots the node into the ramdisk again
//! (one-time PXE or the deploy ISO, as its boot interface does it; reboot through the BMC) and keeps it in its wait state with the finished
//! step as current step. It marks `cleaning_reboot` / `deployment_reboot` in
//! `driver_internal_info` and forgets the old agent's URL, token and certificate, so
//! that the rebooted agent looks up again and is issued a new token. The first heartbeat
//! of the new agent finds an empty command list and the mark: the step before the reboot
//! is done, and the flow continues with what follows it. Without the mark, an empty
//! command list means the agent restarted on its own while a step ran.

use ferric_shared::steps::{NodeStep, StepKind};
use serde_json::Value;

use super::worker::{Orchestrator, TaskError};
use crate::bmc::{self, PowerAction};
use crate::store::{JsonMap, Node};

/// Set while a node reboots after a clean step that asked for it.
pub const CLEANING_REBOOT: &str = "cleaning_reboot";
/// Set while a node reboots after a deploy step that asked for it.
pub const DEPLOYMENT_REBOOT: &str = "deployment_reboot";
/// Set while a node reboots after a service step that asked for it.
pub const SERVICING_REBOOT: &str = "servicing_reboot";

/// What belongs to the agent that is rebooted away: the next one reports its own URL and
/// certificate and gets a new token at lookup. The cached steps and the hardware manager
/// versions stay: the flow goes on with the plan made from them (a changed agent answers
/// with a version mismatch, and the flow plans again).
const AGENT_SESSION_KEYS: [&str; 3] = ["agent_url", "agent_secret_token", "agent_verify_ca"];

/// The `driver_internal_info` mark of a step reboot for `kind`.
pub fn reboot_flag(kind: StepKind) -> &'static str {
    match kind {
        StepKind::Clean => CLEANING_REBOOT,
        StepKind::Deploy => DEPLOYMENT_REBOOT,
        StepKind::Service => SERVICING_REBOOT,
    }
}

/// Whether `step` asked for a reboot once it finished.
pub fn reboot_requested(step: &NodeStep) -> bool {
    step.reboot_requested == Some(true)
}

/// Ironic's `last_error` when the reboot after `step` failed.
pub fn reboot_failed_message(kind: StepKind, step: &NodeStep, node: &Node, error: &str) -> String {
    let step = serde_json::to_string(step).unwrap_or_else(|_| step.step.clone());
    let kind = match kind {
        StepKind::Clean => "clean",
        StepKind::Deploy => "deploy",
        StepKind::Service => "service",
    };
    format!("Reboot requested by {kind} step {step} failed for node {}: {error}", node.uuid)
}

impl Orchestrator {
    /// Reboots `node` into the ramdisk after `step` finished; on failure the mark is
    /// removed and the flow fails with Ironic's message.
    pub(crate) async fn reboot_after_step(&self, node: &Node, step: &NodeStep, kind: StepKind) {
        tracing::info!(step = %step.step, "the step asked for a reboot; rebooting into the ramdisk");
        if let Err(e) = self.reboot_into_ramdisk(node, kind).await {
            let message = reboot_failed_message(kind, step, node, &crate::error_chain(&e));
            let flag = [reboot_flag(kind)];
            if let Err(e) =
                self.store.update_driver_internal_info(node.uuid, JsonMap::new(), &flag).await
            {
                tracing::warn!(error = %crate::error_chain(&e), "cannot clear the reboot mark");
            }
            match kind {
                StepKind::Clean => self.fail_cleaning(node, message).await,
                // Servicing has no flow of its own yet, so no service step comes here.
                StepKind::Deploy | StepKind::Service => self.fail_deploy(node, message).await,
            }
        }
    }

    async fn reboot_into_ramdisk(&self, node: &Node, kind: StepKind) -> Result<(), TaskError> {
        // The old agent loses its token before the machine goes down, so that nothing can
        // use it any more, and the mark is set before the new agent can heartbeat.
        let mut set = JsonMap::new();
        set.insert(reboot_flag(kind).into(), Value::Bool(true));
        self.store.update_driver_internal_info(node.uuid, set, &AGENT_SESSION_KEYS).await?;
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

    /// Whether the node came back from a step reboot of `kind`: `true` once, removing the
    /// mark.
    pub(crate) async fn take_reboot_flag(
        &self,
        node: &Node,
        kind: StepKind,
    ) -> Result<bool, TaskError> {
        let flag = reboot_flag(kind);
        if node.driver_internal_info.get(flag) != Some(&Value::Bool(true)) {
            return Ok(false);
        }
        self.store.update_driver_internal_info(node.uuid, JsonMap::new(), &[flag]).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_and_messages_are_ironics() {
        assert_eq!(reboot_flag(StepKind::Clean), "cleaning_reboot");
        assert_eq!(reboot_flag(StepKind::Deploy), "deployment_reboot");
        assert_eq!(reboot_flag(StepKind::Service), "servicing_reboot");
        let step: NodeStep = serde_json::from_value(json!({
            "interface": "deploy", "step": "update_firmware", "reboot_requested": true}))
        .unwrap();
        assert!(reboot_requested(&step));
        let plain: NodeStep =
            serde_json::from_value(json!({"interface": "deploy", "step": "x"})).unwrap();
        assert!(!reboot_requested(&plain));
        let node = Node::new("fake-hardware");
        let message = reboot_failed_message(StepKind::Clean, &step, &node, "BMC down");
        assert!(message.starts_with("Reboot requested by clean step {"), "{message}");
        assert!(message.contains("\"step\":\"update_firmware\""), "{message}");
        assert!(message.ends_with(&format!("failed for node {}: BMC down", node.uuid)));
    }
}
