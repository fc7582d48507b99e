//! Direct deploy, driven by the agent's heartbeats, and tear-down.
//!
//! `deploying` → boot the ramdisk → `wait call-back`; on the agent's heartbeat the
//! `write_image` deploy step runs on the agent (`deploying` while it is sent, `wait
//! call-back` while it runs); when it succeeds the conductor reads the partition UUIDs,
//! makes the disk the persistent boot device, has the agent power the machine off (hard
//! off if it does not go down in time), powers it on → `active`.

use std::path::Path;
use tracing::Instrument;

use ferric_shared::node::{ConfigDrive, ProvisionRequest};
use ferric_shared::states::{Event, ProvisionState};
use ferric_shared::steps::{NodeStep, StepId, StepKind};
use serde_json::Value;
use uuid::Uuid;

use super::reboot::{reboot_requested, DEPLOYMENT_REBOOT};
use super::worker::{agent_failure_message, Orchestrator, TaskError, AGENT_BOOT_KEYS};
use crate::agent_client::{
    build_image_info, running_step_progress, step_progress, write_image_step, AgentClient,
    StepProgress,
};
use crate::bmc::{self, BootDevice, PowerAction};
use crate::configdrive::{self, DriveNode};
use crate::images;
use crate::store::{JsonMap, LastError, Node, Transition, UpdateError};

/// Where the root partition UUID (or the disk identifier) of the deployed image is kept.
pub const ROOT_UUID_KEY: &str = "root_uuid_or_disk_id";

/// Where the running deploy step's last reported progress is kept (bytes written, total,
/// rate, ETA), as the agent published it.
pub const DEPLOY_STEP_PROGRESS_KEY: &str = "deploy_step_progress";

/// The `image_url` for an `image_source` that is a plain file name, which means a file
/// of the conductor's image directory, served by the conductor itself. `None` when the
/// source is a URL, or `image_url` is already set.
pub fn local_image_url(
    instance_info: &JsonMap,
    image_dir: &Path,
    public_url: &str,
) -> Result<Option<String>, TaskError> {
    let Some(source) = instance_info.get("image_source").and_then(Value::as_str) else {
        return Ok(None);
    };
    let has_url =
        instance_info.get("image_url").and_then(Value::as_str).is_some_and(|u| !u.is_empty());
    if source.contains("://") || has_url || source.is_empty() {
        return Ok(None);
    }
    let path = images::image_path(image_dir, source)?;
    if !path.is_file() {
        return Err(TaskError::ImageMissing { name: source.to_owned() });
    }
    Ok(Some(images::image_url(public_url, source)))
}

/// The string form (base64 of the gzipped `config-2` image) of a config drive given as a
/// dictionary. Image times are the node's provisioning time, so that the same request
/// renders the same image. Compressing up to 64 MiB is CPU work: it runs off the
/// runtime's worker threads.
pub async fn render_config_drive(node: &Node, parts: JsonMap) -> Result<String, TaskError> {
    let uuid = node.uuid;
    let name = node.name.clone();
    let at = node.provision_updated_at.unwrap_or(node.created_at);
    let rendered = tokio::task::spawn_blocking(move || {
        configdrive::render(&parts, DriveNode { uuid, name: name.as_deref() }, at)
    })
    .await
    .map_err(TaskError::ConfigDriveTask)??;
    Ok(rendered)
}

impl Orchestrator {
    /// A provision task that moved the node to `deploying` (deploy, active, rebuild).
    pub(crate) async fn start_deploy(&self, uuid: Uuid, request: &ProvisionRequest) {
        let span = tracing::info_span!("deploy", node = %uuid);
        async move {
            if !self.lock(uuid, true).await {
                return;
            }
            match self.store.get_node(&uuid.to_string()).await {
                Ok(node) if node.provision_state == ProvisionState::Deploying => {
                    if let Err(e) = self.prepare_deploy(&node, request).await {
                        let message =
                            format!("Failed to deploy node {uuid}: {}", crate::error_chain(&e));
                        self.fail_deploy(&node, message).await;
                    }
                }
                Ok(node) => {
                    tracing::info!(state = %node.provision_state, "not deploying any more; nothing to do");
                }
                Err(e) => tracing::warn!(error = %crate::error_chain(&e), "cannot read node"),
            }
            self.unlock(uuid).await;
        }
        .instrument(span)
        .await
    }

    /// Validates and completes `instance_info`, boots the ramdisk, waits for the agent.
    async fn prepare_deploy(
        &self,
        node: &Node,
        request: &ProvisionRequest,
    ) -> Result<(), TaskError> {
        let mut instance_info = node.instance_info.clone();
        // A dictionary comes with the request or was set in instance_info by PATCH.
        let parts = match &request.configdrive {
            Some(ConfigDrive::Parts(parts)) => Some(parts.clone()),
            Some(ConfigDrive::Encoded(text)) => {
                instance_info.insert("configdrive".into(), Value::String(text.clone()));
                None
            }
            None => match instance_info.get("configdrive") {
                Some(Value::Object(parts)) => Some(parts.clone()),
                _ => None,
            },
        };
        match parts {
            // As Ironic, an empty dictionary means no config drive at all.
            Some(parts) if parts.is_empty() => {
                instance_info.remove("configdrive");
            }
            Some(parts) => {
                let rendered = render_config_drive(node, parts).await?;
                instance_info.insert("configdrive".into(), Value::String(rendered));
            }
            None => {}
        }
        if let Some(url) =
            local_image_url(&instance_info, &self.config.image_dir(), &self.config.public_url())?
        {
            instance_info.insert("image_url".into(), Value::String(url));
        }
        build_image_info(&instance_info, &node.uuid.to_string(), &self.image_info_config(node)?)?;
        if instance_info != node.instance_info {
            let saved = self
                .store
                .update_node(&node.uuid.to_string(), |n| {
                    n.instance_info = instance_info.clone();
                    Ok::<_, std::convert::Infallible>(())
                })
                .await;
            match saved {
                Ok(_) => {}
                Err(UpdateError::Store(e)) => return Err(e.into()),
                Err(UpdateError::Rejected(never)) => match never {},
            }
        }
        let stale = [ROOT_UUID_KEY, DEPLOYMENT_REBOOT, DEPLOY_STEP_PROGRESS_KEY];
        self.store.update_driver_internal_info(node.uuid, JsonMap::new(), &stale).await?;
        self.boot_ramdisk(node).await?;
        self.apply(
            node.uuid,
            Transition::new(Event::Wait)
                .only_from(&[ProvisionState::Deploying])
                .deploy_step(JsonMap::new()),
        )
        .await;
        Ok(())
    }

    /// A heartbeat of a node in `wait call-back`, its lock held.
    pub(crate) async fn deploy_heartbeat(&self, node: Node) -> Result<(), TaskError> {
        let agent = self.agent(&node)?;
        if node.deploy_step.is_empty() {
            return self.start_write_image(&node, &agent).await;
        }
        let current: NodeStep = serde_json::from_value(Value::Object(node.deploy_step.clone()))
            .map_err(|source| TaskError::CurrentStep { field: "deploy_step", source })?;
        let commands = match agent.commands().await {
            Ok(c) => c,
            Err(e) if e.is_connection_failure() => {
                tracing::info!(error = %crate::error_chain(&e), "agent unreachable; waiting for the next heartbeat");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let mut progress = step_progress(StepKind::Deploy, &commands, &current);
        if progress == StepProgress::FreshlyBooted
            && self.take_reboot_flag(&node, StepKind::Deploy).await?
        {
            // Back from the reboot the step asked for: the step is done.
            progress = StepProgress::Done(Value::Null);
        } else if matches!(progress, StepProgress::Done(_)) && reboot_requested(&current) {
            self.reboot_after_step(&node, &current, StepKind::Deploy).await;
            return Ok(());
        }
        match progress {
            StepProgress::Running => {
                if let Some(progress) = running_step_progress(StepKind::Deploy, &commands) {
                    let set = JsonMap::from_iter([(DEPLOY_STEP_PROGRESS_KEY.to_owned(), progress)]);
                    self.store.update_driver_internal_info(node.uuid, set, &[]).await?;
                }
                Ok(())
            }
            StepProgress::FreshlyBooted | StepProgress::VersionMismatch => {
                self.start_write_image(&node, &agent).await
            }
            StepProgress::Failed(message) => {
                let message = format!(
                    "Deploy step {}.{} failed on node {}. {message}",
                    current.interface(),
                    current.step_name(),
                    node.uuid
                );
                self.fail_deploy(&node, message).await;
                Ok(())
            }
            StepProgress::Done(_) => {
                if let Err(e) = self.finish_deploy(&node, &agent).await {
                    let message = format!(
                        "Failed to finish the deploy of node {}: {}",
                        node.uuid,
                        crate::error_chain(&e)
                    );
                    self.fail_deploy(&node, message).await;
                }
                Ok(())
            }
        }
    }

    /// Fetches the agent's deploy steps and sends `write_image`.
    async fn start_write_image(&self, node: &Node, agent: &AgentClient) -> Result<(), TaskError> {
        let sent = async {
            let (view, ports) = self.agent_view(node).await?;
            let offered = agent.get_deploy_steps(&view, &ports).await?;
            let image_info = build_image_info(
                &node.instance_info,
                &node.uuid.to_string(),
                &self.image_info_config(node)?,
            )?;
            let mut step = write_image_step(&image_info)
                .map_err(|source| TaskError::Encode { what: "the write_image step", source })?;
            let Some(offered_step) = offered.all_steps().find(|s| s.is_equivalent(&step)) else {
                return Err(TaskError::NoWriteImage);
            };
            // The agent tells whether its step needs a reboot once it is done.
            step.reboot_requested = offered_step.reboot_requested;
            let step_map = match serde_json::to_value(&step) {
                Ok(Value::Object(m)) => m,
                Ok(_) => JsonMap::new(),
                Err(source) => {
                    return Err(TaskError::Encode { what: "the write_image step", source })
                }
            };
            let versions = serde_json::to_value(&offered.hardware_manager_version)
                .map_err(|source| TaskError::Encode { what: "the manager versions", source })?;
            let cached = serde_json::to_value(&offered.steps)
                .map_err(|source| TaskError::Encode { what: "the offered steps", source })?;
            let moved = self
                .apply(
                    node.uuid,
                    Transition::new(Event::Resume)
                        .only_from(&[ProvisionState::DeployWait])
                        .deploy_step(step_map)
                        .set_internal_info("hardware_manager_version", versions)
                        .set_internal_info(StepKind::Deploy.cached_steps_key(), cached),
                )
                .await;
            if !moved {
                return Ok(());
            }
            tracing::info!("sending deploy step write_image");
            agent
                .execute_deploy_step(&step, &view, &ports, Some(&offered.hardware_manager_version))
                .await?;
            self.apply(
                node.uuid,
                Transition::new(Event::Wait).only_from(&[ProvisionState::Deploying]),
            )
            .await;
            Ok(())
        }
        .await;
        if let Err(e) = sent {
            if matches!(&e, TaskError::Agent(a) if a.is_connection_failure()) {
                tracing::info!(error = %crate::error_chain(&e), "agent unreachable; waiting for the next heartbeat");
                // Back to waiting, so the next heartbeat tries again.
                self.apply(
                    node.uuid,
                    Transition::new(Event::Wait)
                        .only_from(&[ProvisionState::Deploying])
                        .deploy_step(JsonMap::new()),
                )
                .await;
                return Ok(());
            }
            let message = format!(
                "Deploy step deploy.write_image failed on node {}. {}",
                node.uuid,
                agent_failure_message(&e)
            );
            self.fail_deploy(node, message).await;
        }
        Ok(())
    }

    /// After `write_image`: partition UUIDs, boot from disk, agent tear-down, power on.
    async fn finish_deploy(&self, node: &Node, agent: &AgentClient) -> Result<(), TaskError> {
        let uuid = node.uuid;
        self.apply(uuid, Transition::new(Event::Resume).only_from(&[ProvisionState::DeployWait]))
            .await;
        let partitions = agent.get_partition_uuids().await?;
        let mut set = JsonMap::new();
        if let Some(root) = partitions.root_uuid {
            set.insert(ROOT_UUID_KEY.into(), Value::String(root));
        }
        self.store.update_driver_internal_info(uuid, set, &[DEPLOY_STEP_PROGRESS_KEY]).await?;
        self.set_boot_device(node, BootDevice::Disk, true).await?;
        self.tear_down_agent(node, agent).await?;
        let bmc = self.bmc_for(node)?;
        self.eject_deploy_media(node, bmc.as_ref()).await;
        bmc.set_power(PowerAction::On, None).await?;
        self.record_power(uuid, bmc.power_state().await?).await?;
        let moved = self
            .apply(
                uuid,
                Transition::new(Event::Done)
                    .only_from(&[ProvisionState::Deploying])
                    .deploy_step(JsonMap::new())
                    .last_error(LastError::Clear),
            )
            .await;
        if moved {
            tracing::info!("deploy finished");
        }
        Ok(())
    }

    /// Asks the agent to power the machine off, waits for the BMC to confirm, and powers
    /// it off hard when it does not go down in time (Ironic's `tear_down_agent`).
    async fn tear_down_agent(&self, node: &Node, agent: &AgentClient) -> Result<(), TaskError> {
        let bmc = self.bmc_for(node)?;
        let mut off = false;
        match agent.power_off().await {
            Ok(_) => {
                let checks = self.config.agent.post_deploy_get_power_state_retries;
                let interval = self.config.agent.post_deploy_get_power_state_retry_interval();
                for check in 0..checks {
                    if check > 0 {
                        tokio::time::sleep(interval).await;
                    }
                    match bmc.power_state().await {
                        Ok(bmc::PowerState::Off) => {
                            off = true;
                            break;
                        }
                        Ok(bmc::PowerState::On) => {}
                        Err(e) => {
                            tracing::info!(error = %crate::error_chain(&e), "power state read failed")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "the agent did not take standby.power_off");
            }
        }
        if !off {
            tracing::warn!("the node did not power off by itself; powering off hard");
            bmc.set_power(PowerAction::Off, None).await?;
        }
        self.record_power(node.uuid, bmc.power_state().await?).await?;
        self.store.update_driver_internal_info(node.uuid, JsonMap::new(), AGENT_BOOT_KEYS).await?;
        Ok(())
    }

    /// Records the failure (`deploy failed` with `last_error`) and powers the node off.
    pub(crate) async fn fail_deploy(&self, node: &Node, message: String) {
        tracing::warn!(%message, "deploy failed");
        self.apply(
            node.uuid,
            Transition::new(Event::Fail)
                .only_from(&[ProvisionState::Deploying, ProvisionState::DeployWait])
                .deploy_step(JsonMap::new())
                .last_error(LastError::Set(message)),
        )
        .await;
        self.power_off_logged(node).await;
    }

    /// A provision task that moved the node to `deleting` (undeploy): power off, forget
    /// the instance as Ironic's tear-down does, then clean (or go straight to
    /// `available` when automated cleaning is off).
    pub(crate) async fn tear_down(&self, uuid: Uuid) {
        let span = tracing::info_span!("tear_down", node = %uuid);
        async move {
            if !self.lock(uuid, true).await {
                return;
            }
            match self.store.get_node(&uuid.to_string()).await {
                Ok(node) if node.provision_state == ProvisionState::Deleting => {
                    match self.tear_down_instance(&node).await {
                        Ok(()) => {
                            if self
                                .apply(
                                    uuid,
                                    Transition::new(Event::Clean)
                                        .only_from(&[ProvisionState::Deleting])
                                        .target(ProvisionState::Available),
                                )
                                .await
                            {
                                self.start_cleaning_locked(uuid, None).await;
                            }
                        }
                        Err(e) => {
                            let message =
                                format!("Failed to tear down node {uuid}: {}", crate::error_chain(&e));
                            tracing::warn!(%message, "tear-down failed");
                            self.apply(
                                uuid,
                                Transition::new(Event::Fail)
                                    .only_from(&[ProvisionState::Deleting])
                                    .last_error(LastError::Set(message)),
                            )
                            .await;
                        }
                    }
                }
                Ok(node) => {
                    tracing::info!(state = %node.provision_state, "not deleting any more; nothing to do");
                }
                Err(e) => tracing::warn!(error = %crate::error_chain(&e), "cannot read node"),
            }
            self.unlock(uuid).await;
        }
        .instrument(span)
        .await
    }

    async fn tear_down_instance(&self, node: &Node) -> Result<(), TaskError> {
        self.power_off(node).await?;
        let cleared = self
            .store
            .update_node(&node.uuid.to_string(), |n| {
                n.instance_info = JsonMap::new();
                n.instance_uuid = None;
                n.deploy_step = JsonMap::new();
                n.driver_internal_info.remove(ROOT_UUID_KEY);
                Ok::<_, std::convert::Infallible>(())
            })
            .await;
        match cleared {
            Ok(_) => Ok(()),
            Err(UpdateError::Store(e)) => Err(e.into()),
            Err(UpdateError::Rejected(never)) => match never {},
        }
    }

    /// The API moved the node from a wait state to its failed state; power it off and
    /// forget the step that was waiting.
    pub(crate) async fn abort(&self, uuid: Uuid) {
        let span = tracing::info_span!("abort", node = %uuid);
        async move {
            if !self.lock(uuid, true).await {
                return;
            }
            let result = async {
                let node = self.store.get_node(&uuid.to_string()).await?;
                if !matches!(
                    node.provision_state,
                    ProvisionState::CleanFailed | ProvisionState::DeployFailed
                ) {
                    tracing::info!(state = %node.provision_state, "nothing to abort");
                    return Ok(());
                }
                self.power_off(&node).await?;
                let cleared = self
                    .store
                    .update_node(&uuid.to_string(), |n| {
                        n.clean_step = JsonMap::new();
                        n.deploy_step = JsonMap::new();
                        for key in [
                            super::clean::PLAN_KEY,
                            super::clean::INDEX_KEY,
                            super::clean::REQUESTED_KEY,
                        ] {
                            n.driver_internal_info.remove(key);
                        }
                        Ok::<_, std::convert::Infallible>(())
                    })
                    .await;
                match cleared {
                    Ok(_) => Ok(()),
                    Err(UpdateError::Store(e)) => Err(TaskError::from(e)),
                    Err(UpdateError::Rejected(never)) => match never {},
                }
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(error = %crate::error_chain(&e), "abort clean-up failed");
            }
            self.unlock(uuid).await;
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn local_image_names_become_urls_of_the_image_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("disk.img"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("subdir")).unwrap();
        let base = "http://192.0.2.1:6385/";
        let info = |v: Value| v.as_object().unwrap().clone();
        let url = |v: Value| local_image_url(&info(v), dir.path(), base);

        assert_eq!(
            url(json!({"image_source": "disk.img"})).unwrap().as_deref(),
            Some("http://192.0.2.1:6385/images/disk.img")
        );
        for untouched in [
            json!({}),
            json!({"image_source": "https://example.com/disk.img"}),
            json!({"image_source": "disk.img", "image_url": "http://mirror/disk.img"}),
            json!({"image_source": ""}),
            json!({"image_source": 5}),
        ] {
            assert_eq!(url(untouched.clone()).unwrap(), None, "{untouched}");
        }
        for (bad, fragment) in [
            (json!({"image_source": "missing.img"}), "\"missing.img\" does not exist"),
            (json!({"image_source": "subdir"}), "\"subdir\" does not exist"),
            (json!({"image_source": "../etc/passwd"}), "no usable file"),
            (json!({"image_source": ".hidden"}), "no usable file"),
        ] {
            let err = url(bad.clone()).unwrap_err();
            assert!(crate::error_chain(&err).contains(fragment), "{bad}: {err}");
        }
    }
}
