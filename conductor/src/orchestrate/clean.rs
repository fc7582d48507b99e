//! Cleaning, automated (`provide`, and after tear-down) and manual (`clean` with steps),
//! driven by the agent's heartbeats.
//!
//! The node's state in the store says where cleaning stands: `cleaning` while the
//! conductor acts, `clean wait` while the agent runs a step or boots. The plan and the
//! position in it live in `driver_internal_info` (`clean_steps`, `clean_step_index`),
//! the running step in `clean_step`, so any heartbeat, even after a restart, knows what
//! to do next.
//!
//! Manual cleaning may list the conductor's own steps (`{"interface": "conductor",
//! "step": "hold"}` and `"wait"` with `args.seconds`), as Ironic 2023.2 does: `hold`
//! moves the node to `clean hold` until `unhold` (then the next step runs) or `abort`;
//! `wait` pauses before the next step. It may also list the driver's out-of-band steps
//! (`management.reset_bios_to_default`, `management.set_secure_boot`), which the conductor
//! runs through the BMC between the agent's steps.
//!
//! What the erase steps report (per disk: method, duration, bytes, verification) is kept
//! in `driver_internal_info.clean_erase_report`, keyed by step name, until the next
//! cleaning starts. Ironic keeps step results nowhere; this is Ferric's own record, which
//! `ferric node show` draws as a table.
//!
//! A step that asks for a reboot is followed by one (see [`super::reboot`]) before the
//! next step starts. An abort requested while a step that is not `abortable` runs only
//! marks the step (`clean_step.abort_after`); cleaning then stops once the step is done,
//! unless it was the last one, as in Ironic.

use ferric_shared::states::{completion_event, Event, ProvisionState};
use ferric_shared::steps::{NodeStep, Step, StepKind, UserStep};
use serde_json::Value;
use tracing::Instrument;
use uuid::Uuid;

use super::plan::{
    automated_clean_plan, manual_clean_plan, wait_seconds, PriorityOverrides, CONDUCTOR_INTERFACE,
    HOLD_STEP, WAIT_STEP,
};
use super::reboot::{reboot_requested, CLEANING_REBOOT};
use super::worker::{agent_failure_message, Orchestrator, TaskError};
use crate::agent_client::{step_progress, StepProgress};
use crate::bmc::oob_steps::OobStep;
use crate::store::{JsonMap, LastError, Node, Transition};

/// The planned steps, once the agent's steps are known.
pub const PLAN_KEY: &str = "clean_steps";
/// Index into the plan of the step that runs (or ran last).
pub const INDEX_KEY: &str = "clean_step_index";
/// The operator's steps of a manual clean, kept until the agent's steps are known.
pub const REQUESTED_KEY: &str = "requested_clean_steps";

/// The erase steps' results of the last cleaning, `{<step name>: {<device>: <report>}}`.
pub const ERASE_REPORT_KEY: &str = "clean_erase_report";

/// Agent steps whose result is a per-disk erase report.
const ERASE_STEPS: &[&str] = &["erase_devices", "erase_devices_metadata", "erase_devices_express"];

/// Set in the node's `clean_step` when an abort was asked for while a step that cannot
/// be aborted ran: cleaning stops once that step is done.
pub const ABORT_AFTER_KEY: &str = "abort_after";

/// Every cleaning key of `driver_internal_info`, wiped when cleaning ends either way.
const CLEANING_KEYS: &[&str] = &[PLAN_KEY, INDEX_KEY, REQUESTED_KEY, CLEANING_REBOOT];

/// Whether the node's current clean step may be interrupted: only a step that says so
/// (`abortable: true`), as Ironic decides it.
pub fn clean_step_abortable(clean_step: &JsonMap) -> bool {
    clean_step.get("abortable").and_then(Value::as_bool) == Some(true)
}

/// Ironic's `last_error` of a cleaning aborted by request, naming the step that ran
/// (`interface.step`), if any.
pub fn clean_abort_message(clean_step: &JsonMap) -> String {
    let text = |key| clean_step.get(key).and_then(Value::as_str);
    match (text("interface"), text("step")) {
        (Some(interface), Some(step)) => format!(
            "By request, the clean operation was aborted during or after the completion of \
             step \"{interface}.{step}\""
        ),
        _ => "By request, the clean operation was aborted".to_owned(),
    }
}

impl Orchestrator {
    /// The operator's priority overrides from `[cleaning]`.
    fn priority_overrides(&self) -> PriorityOverrides {
        let mut overrides = PriorityOverrides::new();
        let c = &self.config.cleaning;
        overrides.set("deploy", "erase_devices", c.erase_devices_priority.map(i64::from)).set(
            "deploy",
            "erase_devices_metadata",
            c.erase_devices_metadata_priority.map(i64::from),
        );
        overrides
    }

    /// A provision task that moved the node to `cleaning` (provide, clean, or tear-down
    /// finished): boot the ramdisk and wait for its agent.
    pub(crate) async fn start_cleaning(&self, uuid: Uuid, requested: Option<Vec<UserStep>>) {
        let span = tracing::info_span!("clean", node = %uuid);
        async move {
            if !self.lock(uuid, true).await {
                return;
            }
            self.start_cleaning_locked(uuid, requested).await;
            self.unlock(uuid).await;
        }
        .instrument(span)
        .await
    }

    /// [`Self::start_cleaning`] with the node's lock held.
    pub(crate) async fn start_cleaning_locked(&self, uuid: Uuid, requested: Option<Vec<UserStep>>) {
        let node = match self.store.get_node(&uuid.to_string()).await {
            Ok(n) if n.provision_state == ProvisionState::Cleaning => n,
            Ok(n) => {
                tracing::info!(state = %n.provision_state, "not cleaning any more; nothing to do");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "cannot read node");
                return;
            }
        };
        let manual = node.target_provision_state == Some(ProvisionState::Manageable);
        let automated_enabled =
            node.automated_clean.unwrap_or(self.config.cleaning.automated_clean);
        if !manual && !automated_enabled {
            tracing::info!("automated cleaning is disabled; skipping it");
            self.finish_cleaning(&node, false).await;
            return;
        }
        let started = async {
            let mut set = JsonMap::new();
            if let Some(steps) = &requested {
                let value = serde_json::to_value(steps)
                    .map_err(|source| TaskError::Encode { what: "the clean steps", source })?;
                set.insert(REQUESTED_KEY.into(), value);
            }
            self.store
                .update_driver_internal_info(
                    uuid,
                    set,
                    &[PLAN_KEY, INDEX_KEY, CLEANING_REBOOT, ERASE_REPORT_KEY],
                )
                .await?;
            self.boot_ramdisk(&node).await
        }
        .await;
        match started {
            Ok(()) => {
                self.apply(uuid, Transition::new(Event::Wait).clean_step(JsonMap::new())).await;
            }
            Err(e) => {
                let message = format!(
                    "Failed to prepare node {uuid} for cleaning: {}",
                    crate::error_chain(&e)
                );
                self.fail_cleaning(&node, message).await;
            }
        }
    }

    /// A heartbeat of a node in `clean wait`, its lock held.
    pub(crate) async fn cleaning_heartbeat(&self, node: Node) -> Result<(), TaskError> {
        let agent = self.agent(&node)?;
        let plan = match node.driver_internal_info.get(PLAN_KEY) {
            None | Some(Value::Null) => None,
            Some(value) => {
                Some(serde_json::from_value::<Vec<NodeStep>>(value.clone()).map_err(|e| {
                    TaskError::InternalInfo { key: PLAN_KEY, reason: e.to_string() }
                })?)
            }
        };
        let Some(plan) = plan else {
            return self.plan_and_start(&node, &agent).await;
        };
        let index = match node.driver_internal_info.get(INDEX_KEY) {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_u64().and_then(|i| usize::try_from(i).ok()).ok_or_else(|| {
                TaskError::InternalInfo { key: INDEX_KEY, reason: format!("{v} is not an index") }
            })?,
        };
        if node.clean_step.is_empty() {
            // The plan was stored but its step never sent (e.g. a restart in between).
            return self.run_clean_step(&node, &agent, &plan, index).await;
        }
        let current: NodeStep = serde_json::from_value(Value::Object(node.clean_step.clone()))
            .map_err(|source| TaskError::CurrentStep { field: "clean_step", source })?;
        if current.interface == CONDUCTOR_INTERFACE {
            // A conductor step in `clean wait`: a hold that was released (or a wait cut
            // short by a restart). Either way it is over.
            tracing::info!(step = %current.step, "conductor step over; going on");
            return self.continue_cleaning(&node, &agent, &plan, index).await;
        }
        let commands = match agent.commands().await {
            Ok(c) => c,
            Err(e) if e.is_connection_failure() => {
                tracing::info!(error = %crate::error_chain(&e), "agent unreachable; waiting for the next heartbeat");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        match step_progress(StepKind::Clean, &commands, &current) {
            StepProgress::Running => {
                tracing::debug!(step = %current.step, "clean step still running");
                Ok(())
            }
            StepProgress::Done(result) => {
                tracing::info!(step = %current.step, "clean step done");
                if ERASE_STEPS.contains(&current.step.as_str()) {
                    self.record_erase_report(&node, &current.step, result).await?;
                }
                if reboot_requested(&current) {
                    self.reboot_after_step(&node, &current, StepKind::Clean).await;
                    return Ok(());
                }
                self.continue_cleaning(&node, &agent, &plan, index).await
            }
            StepProgress::FreshlyBooted => {
                if self.take_reboot_flag(&node, StepKind::Clean).await? {
                    tracing::info!(step = %current.step, "the agent is back after the step's reboot");
                    self.continue_cleaning(&node, &agent, &plan, index).await
                } else {
                    self.run_clean_step(&node, &agent, &plan, index).await
                }
            }
            StepProgress::VersionMismatch => {
                tracing::info!("the agent's hardware managers changed; planning again");
                self.plan_and_start(&node, &agent).await
            }
            StepProgress::Failed(message) => {
                let step = serde_json::to_string(&current).unwrap_or_else(|_| current.step.clone());
                let message = format!(
                    "Agent returned error for clean step {step} on node {} : {message}",
                    node.uuid
                );
                self.fail_cleaning(&node, message).await;
                Ok(())
            }
        }
    }

    /// Fetches the agent's clean steps, plans, stores the plan and starts its first step.
    async fn plan_and_start(
        &self,
        node: &Node,
        agent: &crate::agent_client::AgentClient,
    ) -> Result<(), TaskError> {
        let (view, ports) = self.agent_view(node).await?;
        let offered = agent.get_clean_steps(&view, &ports).await?;
        // The driver's out-of-band steps are planned with the agent's; the agent never
        // hears of them.
        let mut planning = offered.clone();
        let driver_steps = self.driver_clean_steps(node);
        if !driver_steps.is_empty() {
            planning.steps.insert(format!("{} driver", node.driver), driver_steps);
        }
        let manual = node.target_provision_state == Some(ProvisionState::Manageable);
        let plan = if manual {
            let requested: Vec<UserStep> = match node.driver_internal_info.get(REQUESTED_KEY) {
                Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                    TaskError::InternalInfo { key: REQUESTED_KEY, reason: e.to_string() }
                })?,
                None => Vec::new(),
            };
            let checked = manual_clean_plan(&requested, &planning).and_then(|plan| {
                for step in &plan {
                    OobStep::parse(&step.interface, &step.step, &step.args)?;
                }
                Ok(plan)
            });
            match checked {
                Ok(plan) => plan,
                Err(e) => {
                    let message = format!("Cannot clean node {}: {e}", node.uuid);
                    self.fail_cleaning(node, message).await;
                    return Ok(());
                }
            }
        } else {
            automated_clean_plan(&planning, &self.priority_overrides())
        };
        tracing::info!(steps = plan.len(), manual, "clean plan ready");
        let encode = |what| move |source| TaskError::Encode { what, source };
        let mut set = JsonMap::new();
        set.insert(PLAN_KEY.into(), serde_json::to_value(&plan).map_err(encode("the plan"))?);
        set.insert(INDEX_KEY.into(), Value::from(0));
        set.insert(
            "hardware_manager_version".into(),
            serde_json::to_value(&offered.hardware_manager_version)
                .map_err(encode("the manager versions"))?,
        );
        set.insert(
            StepKind::Clean.cached_steps_key().into(),
            serde_json::to_value(&offered.steps).map_err(encode("the offered steps"))?,
        );
        self.store.update_driver_internal_info(node.uuid, set, &[]).await?;
        let node = self.store.get_node(&node.uuid.to_string()).await?;
        self.run_clean_step(&node, agent, &plan, 0).await
    }

    /// Step `index` of `plan` is done: stop here when an abort waited for it and steps
    /// remain (as Ironic: after the last step, cleaning simply completes), else start the
    /// next step.
    async fn continue_cleaning(
        &self,
        node: &Node,
        agent: &crate::agent_client::AgentClient,
        plan: &[NodeStep],
        index: usize,
    ) -> Result<(), TaskError> {
        let abort_after = node.clean_step.get(ABORT_AFTER_KEY).and_then(Value::as_bool);
        if abort_after == Some(true) {
            if index + 1 < plan.len() {
                tracing::info!("aborting cleaning, as requested, now that the step is done");
                self.fail_cleaning(node, clean_abort_message(&node.clean_step)).await;
                return Ok(());
            }
            tracing::info!("an abort was requested, but the finished step was the last one");
        }
        self.run_clean_step(node, agent, plan, index + 1).await
    }

    /// Starts step `index` of `plan`, or finishes cleaning when there is none left.
    async fn run_clean_step(
        &self,
        node: &Node,
        agent: &crate::agent_client::AgentClient,
        plan: &[NodeStep],
        index: usize,
    ) -> Result<(), TaskError> {
        let mut index = index;
        let mut node = node.clone();
        let step = loop {
            let Some(step) = plan.get(index) else {
                self.finish_cleaning(&node, true).await;
                return Ok(());
            };
            let done = if step.interface == CONDUCTOR_INTERFACE {
                self.run_conductor_step(&node, step, index).await?
            } else if let Some(oob) = self.oob_step(&node, step) {
                self.run_oob_clean_step(&node, step, oob, index).await?
            } else {
                break step;
            };
            if !done {
                return Ok(());
            }
            node = self.store.get_node(&node.uuid.to_string()).await?;
            index += 1;
        };
        let node = &node;
        if !self.enter_clean_step(node, step, index).await? {
            return Ok(());
        }
        let node = self.store.get_node(&node.uuid.to_string()).await?;
        let versions = node
            .driver_internal_info
            .get("hardware_manager_version")
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        let (view, ports) = self.agent_view(&node).await?;
        tracing::info!(step = %step.step, interface = %step.interface, index, "starting clean step");
        match agent.execute_clean_step(step, &view, &ports, versions.as_ref()).await {
            Ok(_) => {
                self.apply(node.uuid, Transition::new(Event::Wait)).await;
                Ok(())
            }
            Err(e) => {
                let message = format!(
                    "Agent returned error for clean step {} on node {} : {}",
                    serde_json::to_string(step).unwrap_or_else(|_| step.step.clone()),
                    node.uuid,
                    agent_failure_message(&TaskError::from(e))
                );
                self.fail_cleaning(&node, message).await;
                Ok(())
            }
        }
    }

    /// Carries out conductor step `index` of the plan. `Ok(true)` when cleaning goes on
    /// at once with the next step (`wait` is over), `Ok(false)` when the node now rests
    /// (`clean hold`) or moved elsewhere.
    async fn run_conductor_step(
        &self,
        node: &Node,
        step: &NodeStep,
        index: usize,
    ) -> Result<bool, TaskError> {
        if !self.enter_clean_step(node, step, index).await? {
            return Ok(false);
        }
        match step.step.as_str() {
            HOLD_STEP => {
                tracing::info!(index, "holding cleaning until unhold");
                self.apply(
                    node.uuid,
                    Transition::new(Event::Hold).only_from(&[ProvisionState::Cleaning]),
                )
                .await;
                Ok(false)
            }
            WAIT_STEP => {
                // The plan checked the argument; a plan stored by hand may still lack it.
                let seconds = wait_seconds(&step.args).unwrap_or(0.0);
                tracing::info!(index, seconds, "waiting before the next clean step");
                tokio::time::sleep(std::time::Duration::from_secs_f64(seconds)).await;
                Ok(self
                    .apply(
                        node.uuid,
                        Transition::new(Event::Wait).only_from(&[ProvisionState::Cleaning]),
                    )
                    .await)
            }
            other => {
                let message = format!(
                    "Cannot clean node {}: clean step conductor.{other} is not a conductor step",
                    node.uuid
                );
                let node = self.store.get_node(&node.uuid.to_string()).await?;
                self.fail_cleaning(&node, message).await;
                Ok(false)
            }
        }
    }

    /// Makes step `index` of the plan the node's current clean step (`clean wait` →
    /// `cleaning`); false when the node is no longer waiting.
    async fn enter_clean_step(
        &self,
        node: &Node,
        step: &NodeStep,
        index: usize,
    ) -> Result<bool, TaskError> {
        let step_map = match serde_json::to_value(step) {
            Ok(Value::Object(m)) => m,
            Ok(_) => JsonMap::new(),
            Err(source) => return Err(TaskError::Encode { what: "the clean step", source }),
        };
        Ok(self
            .apply(
                node.uuid,
                Transition::new(Event::Resume)
                    .only_from(&[ProvisionState::CleanWait])
                    .clean_step(step_map)
                    .set_internal_info(INDEX_KEY, Value::from(index)),
            )
            .await)
    }

    /// The out-of-band clean steps of the node's driver.
    fn driver_clean_steps(&self, node: &Node) -> Vec<Step> {
        self.drivers.get(&node.driver).map(|driver| driver.clean_steps()).unwrap_or_default()
    }

    /// `step` as an out-of-band step of the node's driver, if it is one. The plan checked
    /// the arguments; a step that fails the check here runs on the agent, which refuses
    /// what it does not offer.
    fn oob_step(&self, node: &Node, step: &NodeStep) -> Option<OobStep> {
        let offered = self.driver_clean_steps(node);
        if !offered.iter().any(|s| s.interface == step.interface && s.step == step.step) {
            return None;
        }
        OobStep::parse(&step.interface, &step.step, &step.args).ok().flatten()
    }

    /// Runs out-of-band step `index` of the plan through the BMC. `Ok(true)` when
    /// cleaning goes on at once with the next step, `Ok(false)` when the node failed or
    /// moved elsewhere.
    async fn run_oob_clean_step(
        &self,
        node: &Node,
        step: &NodeStep,
        oob: OobStep,
        index: usize,
    ) -> Result<bool, TaskError> {
        if !self.enter_clean_step(node, step, index).await? {
            return Ok(false);
        }
        tracing::info!(step = %step.step, interface = %step.interface, index,
            "running out-of-band clean step");
        let outcome = match self.bmc_for(node) {
            Ok(bmc) => bmc.run_oob_step(oob).await.map_err(TaskError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            let message = format!(
                "Node {} failed step {}: {}",
                node.uuid,
                serde_json::to_string(step).unwrap_or_else(|_| step.step.clone()),
                crate::error_chain(&e)
            );
            let node = self.store.get_node(&node.uuid.to_string()).await?;
            self.fail_cleaning(&node, message).await;
            return Ok(false);
        }
        Ok(self
            .apply(node.uuid, Transition::new(Event::Wait).only_from(&[ProvisionState::Cleaning]))
            .await)
    }

    /// `unhold` moved the node from `clean hold` to `clean wait`: go on with the next step
    /// at once rather than at the agent's next heartbeat.
    pub(crate) async fn unhold(&self, uuid: Uuid) {
        let span = tracing::info_span!("unhold", node = %uuid);
        async move {
            if !self.lock(uuid, true).await {
                return;
            }
            let result = async {
                let node = self.store.get_node(&uuid.to_string()).await?;
                match node.provision_state {
                    ProvisionState::CleanWait => self.cleaning_heartbeat(node).await,
                    other => {
                        tracing::info!(state = %other, "nothing to resume");
                        Ok(())
                    }
                }
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(error = %crate::error_chain(&e), "resuming after unhold failed");
            }
            self.unlock(uuid).await;
        }
        .instrument(span)
        .await
    }

    /// Keeps an erase step's per-disk result on the node, next to the other erase steps'
    /// of this cleaning.
    async fn record_erase_report(
        &self,
        node: &Node,
        step: &str,
        result: Value,
    ) -> Result<(), TaskError> {
        let mut report = match node.driver_internal_info.get(ERASE_REPORT_KEY) {
            Some(Value::Object(m)) => m.clone(),
            _ => JsonMap::new(),
        };
        report.insert(step.to_owned(), result);
        let mut set = JsonMap::new();
        set.insert(ERASE_REPORT_KEY.into(), Value::Object(report));
        self.store.update_driver_internal_info(node.uuid, set, &[]).await?;
        Ok(())
    }

    /// Powers off (when the ramdisk ran), clears the cleaning facts and moves the node to
    /// where it was heading (`available` after automated cleaning, `manageable` after
    /// manual).
    async fn finish_cleaning(&self, node: &Node, power_off: bool) {
        let uuid = node.uuid;
        if node.provision_state == ProvisionState::CleanWait {
            self.apply(
                uuid,
                Transition::new(Event::Resume).only_from(&[ProvisionState::CleanWait]),
            )
            .await;
        }
        let powered_off = if power_off { self.power_off(node).await } else { Ok(()) };
        if let Err(e) = powered_off {
            let message =
                format!("Failed to tear down cleaning on node {uuid}: {}", crate::error_chain(&e));
            self.fail_cleaning(node, message).await;
            return;
        }
        let Some(event) = completion_event(ProvisionState::Cleaning, node.target_provision_state)
        else {
            return;
        };
        let mut transition = Transition::new(event)
            .only_from(&[ProvisionState::Cleaning])
            .clean_step(JsonMap::new())
            .last_error(LastError::Clear);
        for key in CLEANING_KEYS {
            transition = transition.remove_internal_info(*key);
        }
        if self.apply(uuid, transition).await {
            tracing::info!("cleaning finished");
        }
    }

    /// Records the failure (`clean failed` with `last_error`) and powers the node off.
    pub(crate) async fn fail_cleaning(&self, node: &Node, message: String) {
        tracing::warn!(%message, "cleaning failed");
        let mut transition = Transition::new(Event::Fail)
            .only_from(&[ProvisionState::Cleaning, ProvisionState::CleanWait])
            .clean_step(JsonMap::new())
            .last_error(LastError::Set(message));
        for key in CLEANING_KEYS {
            transition = transition.remove_internal_info(*key);
        }
        self.apply(node.uuid, transition).await;
        self.power_off_logged(node).await;
    }
}
