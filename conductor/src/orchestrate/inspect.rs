//! In-band inspection: `inspect` boots the ramdisk with an inspection callback URL and
//! the node waits (`inspect wait`) for the report the agent posts to
//! `/v1/continue_inspection`. The report is processed by the configured hooks and the
//! outcome applied to the node and its ports; the machine is then powered off (with
//! `[inspector] power_off`) and the node is `manageable` again. A report the hooks refuse
//! (a ramdisk error among them) leaves the node `inspect failed` with the reason.
//!
//! A report for a node that does not wait for one (fast-track, or a stray ramdisk) is
//! kept, as the API stored it, and changes nothing else.

use ferric_shared::states::{Event, ProvisionState};
use serde_json::{json, Value};
use tracing::Instrument;
use uuid::Uuid;

use super::worker::{Orchestrator, TaskError, AGENT_BOOT_KEYS};
use crate::config::InspectorConfig;
use crate::inspection::{hooks, AddPorts, InspectionError};
use crate::store::{JsonMap, LastError, Node, PortQuery, StoreError, Transition, UpdateError};

/// Ironic's `last_error` of an inspection aborted by request.
pub const INSPECTION_ABORTED: &str = "Inspection was aborted by request.";

/// Top-level keys of a report that are not kept in the plugin data: the inventory is
/// shown on its own, and the ramdisk's logs are large and for the operator's eyes only.
const NOT_PLUGIN_DATA: &[&str] = &["inventory", "logs"];

/// The plugin data of a report before processing: everything the ramdisk posted but the
/// inventory and its logs.
pub fn unprocessed_plugin_data(data: &Value) -> JsonMap {
    match data {
        Value::Object(map) => map
            .iter()
            .filter(|(key, _)| !NOT_PLUGIN_DATA.contains(&key.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        _ => JsonMap::new(),
    }
}

/// Why processing a report could not finish.
#[derive(Debug, thiserror::Error)]
enum ProcessError {
    /// The hooks refused the report: the node fails inspection with this text.
    #[error(transparent)]
    Refused(#[from] InspectionError),
    /// The conductor could not carry the outcome out.
    #[error(transparent)]
    Task(#[from] TaskError),
}

impl From<StoreError> for ProcessError {
    fn from(e: StoreError) -> Self {
        ProcessError::Task(e.into())
    }
}

impl Orchestrator {
    /// A provision task that moved the node to `inspecting`: record the start, boot the
    /// ramdisk for inspection and wait for its report.
    pub(crate) async fn start_inspection(&self, uuid: Uuid) {
        let span = tracing::info_span!("inspect", node = %uuid);
        async move {
            if !self.lock(uuid, true).await {
                return;
            }
            self.start_inspection_locked(uuid).await;
            self.unlock(uuid).await;
        }
        .instrument(span)
        .await
    }

    async fn start_inspection_locked(&self, uuid: Uuid) {
        let node = match self.store.get_node(&uuid.to_string()).await {
            Ok(n) if n.provision_state == ProvisionState::Inspecting => n,
            Ok(n) => {
                tracing::info!(state = %n.provision_state, "not inspecting any more; nothing to do");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "cannot read node");
                return;
            }
        };
        let started = async {
            let stamped = self
                .store
                .update_node(&uuid.to_string(), |n| {
                    n.inspection_started_at = Some(time::OffsetDateTime::now_utc());
                    n.inspection_finished_at = None;
                    Ok::<_, std::convert::Infallible>(())
                })
                .await;
            let node = match stamped {
                Ok(node) => node,
                Err(UpdateError::Store(e)) => return Err(TaskError::from(e)),
                Err(UpdateError::Rejected(never)) => match never {},
            };
            self.boot_ramdisk(&node).await
        };
        if out_of_band(&node) {
            self.inspect_out_of_band(&node).await;
            return;
        }
        let started = started.await;
        match started {
            Ok(()) => {
                self.apply(
                    uuid,
                    Transition::new(Event::Wait).only_from(&[ProvisionState::Inspecting]),
                )
                .await;
            }
            Err(e) => {
                let message = format!(
                    "Failed to prepare node {uuid} for inspection: {}",
                    crate::error_chain(&e)
                );
                self.fail_inspection(&node, message).await;
            }
        }
    }

    /// The API stored a report for the node: process it when the node waits for one.
    pub(crate) async fn inspection_data(&self, uuid: Uuid) {
        let span = tracing::info_span!("inspection_data", node = %uuid);
        async move {
            if !self.lock(uuid, true).await {
                return;
            }
            if let Err(e) = self.inspection_data_locked(uuid).await {
                tracing::warn!(error = %crate::error_chain(&e), "inspection processing failed");
            }
            self.unlock(uuid).await;
        }
        .instrument(span)
        .await
    }

    async fn inspection_data_locked(&self, uuid: Uuid) -> Result<(), TaskError> {
        let node = self.store.get_node(&uuid.to_string()).await?;
        if node.provision_state == ProvisionState::Enroll && auto_discovered(&node) {
            // Auto-discovery enrolled it: its report fills in properties and ports, and
            // the node stays in enroll for the operator (as Ironic's discovery does).
            return match self.process_report(&node).await {
                Ok(()) => Ok(()),
                Err(ProcessError::Refused(e)) => {
                    tracing::warn!(error = %e, "the discovered machine's report was refused");
                    Ok(())
                }
                Err(ProcessError::Task(e)) => Err(e),
            };
        }
        if node.provision_state != ProvisionState::InspectWait {
            tracing::info!(state = %node.provision_state,
                "inspection report kept; the node was not waiting for one");
            return Ok(());
        }
        let resumed = Transition::new(Event::Resume).only_from(&[ProvisionState::InspectWait]);
        if !self.apply(uuid, resumed).await {
            return Ok(());
        }
        let node = self.store.get_node(&uuid.to_string()).await?;
        match self.process_report(&node).await {
            Ok(()) => self.finish_inspection(&node).await,
            Err(ProcessError::Refused(e)) => {
                self.fail_inspection(&node, e.to_string()).await;
                Ok(())
            }
            Err(ProcessError::Task(e)) => {
                let message = format!(
                    "Failed to process inspection data of node {uuid}: {}",
                    crate::error_chain(&e)
                );
                self.fail_inspection(&node, message).await;
                Ok(())
            }
        }
    }

    /// `inspect_interface: redfish`: the BMC describes the hardware; the same hooks turn
    /// it into properties and ports. The machine is neither booted nor powered off.
    async fn inspect_out_of_band(&self, node: &Node) {
        let uuid = node.uuid;
        let inspected = async {
            self.store
                .update_node(&uuid.to_string(), |n| {
                    n.inspection_started_at = Some(time::OffsetDateTime::now_utc());
                    n.inspection_finished_at = None;
                    Ok::<_, std::convert::Infallible>(())
                })
                .await
                .map_err(|e| match e {
                    UpdateError::Store(e) => ProcessError::from(e),
                    UpdateError::Rejected(never) => match never {},
                })?;
            let bmc = self.bmc_for(node).map_err(ProcessError::Task)?;
            let found = bmc.inspect().await.map_err(|e| ProcessError::Task(e.into()))?;
            let report = json!({
                "inventory": found.inventory,
                "inspected_by": "redfish",
                "secure_boot": found.secure_boot,
            });
            self.store.store_inspection_data(uuid, &report).await?;
            // The BMC knows neither the boot NIC nor addresses: every NIC gets a port
            // unless ports are disabled altogether.
            let mut config = self.config.inspector.clone();
            if config.add_ports != AddPorts::Disabled {
                config.add_ports = AddPorts::All;
            }
            self.process_report_with(node, &config).await
        }
        .await;
        let message = match inspected {
            Ok(()) => {
                let done = Transition::new(Event::Done)
                    .only_from(&[ProvisionState::Inspecting])
                    .last_error(LastError::Clear);
                if self.apply(uuid, done).await {
                    tracing::info!("out-of-band inspection finished");
                }
                return;
            }
            Err(ProcessError::Refused(e)) => e.to_string(),
            Err(ProcessError::Task(e)) => {
                format!("Failed to inspect node {uuid} out of band: {}", crate::error_chain(&e))
            }
        };
        tracing::warn!(%message, "out-of-band inspection failed");
        let failed = Transition::new(Event::Fail)
            .only_from(&[ProvisionState::Inspecting])
            .last_error(LastError::Set(message));
        self.apply(uuid, failed).await;
    }

    /// Runs the hooks over the stored report and applies what they decided.
    async fn process_report(&self, node: &Node) -> Result<(), ProcessError> {
        self.process_report_with(node, &self.config.inspector).await
    }

    async fn process_report_with(
        &self,
        node: &Node,
        config: &InspectorConfig,
    ) -> Result<(), ProcessError> {
        let data = self.store.get_inspection_data(node.uuid).await?.unwrap_or(Value::Null);
        let query = PortQuery { node_uuid: Some(node.uuid), ..PortQuery::default() };
        let ports = self.store.list_ports(&query).await?;
        let outcome = hooks::process(config, node, &ports, &data)?;
        let mut plugin_data = unprocessed_plugin_data(&data);
        plugin_data.extend(outcome.plugin_data.clone());
        if auto_discovered(node) {
            plugin_data.insert("auto_discovered".into(), Value::Bool(true));
        }
        let applied = self.store.apply_inspection(node.uuid, &outcome, &plugin_data).await?;
        tracing::info!(created = ?applied.created, updated = ?applied.updated,
            deleted = ?applied.deleted, properties = ?outcome.properties.keys().collect::<Vec<_>>(),
            "inspection results applied");
        for mac in &applied.taken_macs {
            tracing::warn!(%mac, "a port with this MAC already exists; not creating it");
        }
        for mac in &applied.missing_macs {
            tracing::warn!(%mac, "no port of the node has this MAC any more; not updating it");
        }
        Ok(())
    }

    /// Powers off (with `[inspector] power_off`) and moves the node to `manageable`.
    async fn finish_inspection(&self, node: &Node) -> Result<(), TaskError> {
        let uuid = node.uuid;
        let finished = if self.config.inspector.power_off {
            self.power_off(node).await
        } else {
            self.store
                .update_driver_internal_info(uuid, JsonMap::new(), AGENT_BOOT_KEYS)
                .await
                .map_err(TaskError::from)
        };
        if let Err(e) = finished {
            let message = format!(
                "Failed to tear down inspection on node {uuid}: {}",
                crate::error_chain(&e)
            );
            self.fail_inspection(node, message).await;
            return Ok(());
        }
        let done = Transition::new(Event::Done)
            .only_from(&[ProvisionState::Inspecting])
            .last_error(LastError::Clear);
        if self.apply(uuid, done).await {
            tracing::info!("inspection finished");
        }
        Ok(())
    }

    /// Records the failure (`inspect failed` with `last_error`) and powers the node off.
    pub(crate) async fn fail_inspection(&self, node: &Node, message: String) {
        tracing::warn!(%message, "inspection failed");
        let transition = Transition::new(Event::Fail)
            .only_from(&[ProvisionState::Inspecting, ProvisionState::InspectWait])
            .last_error(LastError::Set(message));
        self.apply(node.uuid, transition).await;
        self.power_off_logged(node).await;
    }

    /// `abort` moved the node from `inspect wait` to `inspect failed`: the ramdisk is no
    /// longer needed.
    pub(crate) async fn abort_inspection(&self, uuid: Uuid) {
        let span = tracing::info_span!("abort_inspection", node = %uuid);
        async move {
            if !self.lock(uuid, true).await {
                return;
            }
            match self.store.get_node(&uuid.to_string()).await {
                Ok(node) if node.provision_state == ProvisionState::InspectFailed => {
                    tracing::info!("inspection aborted; powering the node off");
                    self.power_off_logged(&node).await;
                }
                Ok(node) => {
                    tracing::debug!(state = %node.provision_state, "no inspection to abort");
                }
                Err(e) => tracing::warn!(error = %crate::error_chain(&e), "cannot read node"),
            }
            self.unlock(uuid).await;
        }
        .instrument(span)
        .await
    }
}

/// Whether the node is inspected through its BMC rather than a ramdisk.
fn out_of_band(node: &Node) -> bool {
    node.inspect_interface.as_deref() == Some("redfish")
}

/// Whether auto-discovery enrolled the node.
fn auto_discovered(node: &Node) -> bool {
    node.driver_internal_info.get(crate::api::inspection::AUTO_DISCOVERED_KEY)
        == Some(&Value::Bool(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plugin_data_is_the_report_without_inventory_and_logs() {
        let data = json!({"inventory": {"interfaces": []}, "logs": "H4sI", "error": null,
            "boot_interface": "01-52-54-00-12-34-56", "root_disk": {"name": "/dev/sda"}});
        let plugin = unprocessed_plugin_data(&data);
        let mut keys: Vec<&str> = plugin.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["boot_interface", "error", "root_disk"]);
        assert_eq!(plugin["root_disk"], json!({"name": "/dev/sda"}));
        assert!(unprocessed_plugin_data(&json!([1])).is_empty());
    }
}
