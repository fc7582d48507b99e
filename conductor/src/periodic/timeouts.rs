//! Wait-state timeouts: a node that waits for its agent longer than allowed fails.
//!
//! As Ironic's `_check_deploy_timeouts`, `_check_cleanwait_timeouts` and
//! `_check_inspect_wait_timeouts`: nodes in `wait call-back`, `clean wait` or `inspect wait`
//! whose `provision_updated_at` is older than the state's timeout, not in maintenance and
//! not reserved, take the `fail` event with Ironic's `last_error`:
//!
//! - `wait call-back` → `deploy failed`: "Timeout reached while waiting for callback for
//!   node <uuid>"; the deploy step and the agent's URL, token and cached steps are wiped.
//! - `clean wait` → `clean failed` (the target is kept): "Timeout reached while cleaning
//!   the node. Please check if the ramdisk responsible for the cleaning is running on the
//!   node. Failed on step <step>."; the clean step and the agent's URL and token are wiped,
//!   and when a step was running the node also goes to maintenance with
//!   `fault = "clean failure"`. Ironic powers the node off here only with
//!   `[conductor] poweroff_in_cleanfail`, which defaults to off; so does Ferric.
//! - `inspect wait` → `inspect failed`: "timeout reached while inspecting the node" (in
//!   Ironic's lower case), after `[conductor] inspect_wait_timeout`.
//!
//! Each node is reserved while it is failed, and the transition is conditional on the
//! node still being in the wait state: a heartbeat that moves the node at the same moment
//! either wins (the node left the wait state; nothing happens here) or loses (the node
//! fails and the late heartbeat is ignored as one from a state that expects none).
//! A timeout of 0 disables the check for that state.

use std::time::Duration;

use ferric_shared::states::{Event, ProvisionState};
use serde_json::Value;
use time::OffsetDateTime;
use tracing::Instrument;
use uuid::Uuid;

use super::Reconciler;
use crate::config::ConductorConfig;
use crate::store::{
    JsonMap, LastError, Node, NodeQuery, NodeSortKey, Store, StoreError, Transition,
    TransitionOutcome, UpdateError,
};

/// How often the timeouts are checked (Ironic's `check_provision_state_interval`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// `fault` of a node whose cleaning failed during a step.
pub const CLEAN_FAILURE: &str = "clean failure";

/// Nodes read from the store per page.
const PAGE_SIZE: u32 = 500;

/// `driver_internal_info` keys of the running agent, wiped when its operation fails
/// (the next ramdisk boot gets a new URL, token and certificate).
const AGENT_KEYS: [&str; 4] =
    ["agent_url", "agent_secret_token", "agent_secret_token_pregenerated", "agent_verify_ca"];

/// Deployment bookkeeping wiped when a deployment fails.
const DEPLOY_KEYS: [&str; 6] = [
    "agent_cached_deploy_steps",
    "deploy_step_index",
    "steps_validated",
    "deployment_reboot",
    "deployment_polling",
    "skip_current_deploy_step",
];

/// Cleaning bookkeeping wiped when cleaning fails.
const CLEAN_KEYS: [&str; 4] =
    ["clean_step_index", "cleaning_reboot", "cleaning_polling", "skip_current_clean_step"];

/// The wait states this reconciler watches, in the order they are checked.
const WATCHED: [ProvisionState; 3] =
    [ProvisionState::DeployWait, ProvisionState::CleanWait, ProvisionState::InspectWait];

/// The wait-state timeout reconciler.
#[derive(Debug, Clone)]
pub struct Timeouts {
    store: Store,
    holder: String,
    interval: Duration,
    deploy_callback: Option<Duration>,
    clean_callback: Option<Duration>,
    inspect_wait: Option<Duration>,
}

/// Why one node could not be failed.
#[derive(Debug, thiserror::Error)]
pub enum TimeoutError {
    #[error("failing node {node} after its {state} timeout")]
    Store {
        node: Uuid,
        state: ProvisionState,
        #[source]
        source: StoreError,
    },
}

/// What happened to one timed-out node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Failed,
    /// Reserved, moved on, or refreshed since it was listed.
    Skipped,
}

/// Seconds → a timeout, 0 meaning "disabled".
fn enabled(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// Ironic's `last_error` for a node that timed out in `state`.
pub fn timeout_message(node: &Node, state: ProvisionState) -> String {
    match state {
        ProvisionState::CleanWait => format!(
            "Timeout reached while cleaning the node. Please check if the ramdisk responsible \
             for the cleaning is running on the node. Failed on step {}.",
            Value::Object(node.clean_step.clone())
        ),
        ProvisionState::InspectWait => "timeout reached while inspecting the node".to_owned(),
        _ => format!("Timeout reached while waiting for callback for node {}", node.uuid),
    }
}

/// Whether `node` has waited longer than `timeout` at `now`. A node without a
/// `provision_updated_at` has no known start and is left alone.
fn expired(node: &Node, timeout: Duration, now: OffsetDateTime) -> bool {
    node.provision_updated_at.is_some_and(|since| now - since >= timeout)
}

impl Timeouts {
    /// A reconciler with every timeout disabled; enable them with the setters.
    pub fn new(store: Store, holder: impl Into<String>, interval: Duration) -> Timeouts {
        Timeouts {
            store,
            holder: holder.into(),
            interval,
            deploy_callback: None,
            clean_callback: None,
            inspect_wait: None,
        }
    }

    /// The reconciler the service runs: `[deploy] deploy_callback_timeout`,
    /// `[cleaning] clean_callback_timeout` and `[conductor] inspect_wait_timeout`, checked
    /// every [`DEFAULT_INTERVAL`] (or more often when a timeout is shorter).
    pub fn from_config(store: Store, config: &ConductorConfig) -> Timeouts {
        let shortest = [
            config.deploy.deploy_callback_timeout,
            config.cleaning.clean_callback_timeout,
            config.conductor.inspect_wait_timeout,
        ]
        .into_iter()
        .filter(|s| *s > 0)
        .min()
        .map_or(DEFAULT_INTERVAL, Duration::from_secs);
        Timeouts::new(store, config.conductor.name.clone(), DEFAULT_INTERVAL.min(shortest))
            .deploy_callback_timeout(config.deploy.deploy_callback_timeout)
            .clean_callback_timeout(config.cleaning.clean_callback_timeout)
            .inspect_wait_timeout(config.conductor.inspect_wait_timeout)
    }

    /// Seconds a node may stay in `wait call-back`; 0 disables.
    pub fn deploy_callback_timeout(mut self, seconds: u64) -> Timeouts {
        self.deploy_callback = enabled(seconds);
        self
    }

    /// Seconds a node may stay in `clean wait`; 0 disables.
    pub fn clean_callback_timeout(mut self, seconds: u64) -> Timeouts {
        self.clean_callback = enabled(seconds);
        self
    }

    /// Seconds a node may stay in `inspect wait`; 0 disables.
    pub fn inspect_wait_timeout(mut self, seconds: u64) -> Timeouts {
        self.inspect_wait = enabled(seconds);
        self
    }

    fn timeout_of(&self, state: ProvisionState) -> Option<Duration> {
        match state {
            ProvisionState::DeployWait => self.deploy_callback,
            ProvisionState::CleanWait => self.clean_callback,
            ProvisionState::InspectWait => self.inspect_wait,
            _ => None,
        }
    }

    /// Nodes in `state` past `timeout`, oldest first: the listing is sorted by
    /// `provision_updated_at`, so it stops at the first node still within its time.
    async fn expired_nodes(
        &self,
        state: ProvisionState,
        timeout: Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<Node>, StoreError> {
        let mut found = Vec::new();
        let mut marker = None;
        loop {
            let query = NodeQuery {
                provision_state: Some(state),
                maintenance: Some(false),
                sort_key: NodeSortKey::ProvisionUpdatedAt,
                limit: Some(PAGE_SIZE),
                marker,
                ..NodeQuery::default()
            };
            let page = self.store.list_nodes(&query).await?;
            let full_page = page.len() == PAGE_SIZE as usize;
            marker = page.last().map(|node| node.uuid);
            for node in page {
                if node.provision_updated_at.is_some() && !expired(&node, timeout, now) {
                    return Ok(found);
                }
                if expired(&node, timeout, now) && node.reservation.is_none() {
                    found.push(node);
                }
            }
            if !full_page {
                return Ok(found);
            }
        }
    }

    /// Fails one node under its reservation.
    async fn fail_node(
        &self,
        listed: &Node,
        state: ProvisionState,
        timeout: Duration,
    ) -> Result<Outcome, StoreError> {
        match self.store.reserve(listed.uuid, &self.holder).await {
            Ok(()) => {}
            Err(StoreError::Locked { .. } | StoreError::NodeNotFound(_)) => {
                return Ok(Outcome::Skipped)
            }
            Err(error) => return Err(error),
        }
        let result = self.fail_reserved(listed.uuid, state, timeout).await;
        if let Err(error) = self.store.release(listed.uuid, &self.holder).await {
            tracing::warn!(error = %crate::error_chain(&error), "cannot unlock node");
        }
        result
    }

    async fn fail_reserved(
        &self,
        uuid: Uuid,
        state: ProvisionState,
        timeout: Duration,
    ) -> Result<Outcome, StoreError> {
        // Re-read under the lock: the node may have moved or been refreshed since listed.
        let node = match self.store.get_node(&uuid.to_string()).await {
            Ok(node) => node,
            Err(StoreError::NodeNotFound(_)) => return Ok(Outcome::Skipped),
            Err(error) => return Err(error),
        };
        if node.provision_state != state
            || node.maintenance
            || !expired(&node, timeout, OffsetDateTime::now_utc())
        {
            return Ok(Outcome::Skipped);
        }
        let message = timeout_message(&node, state);
        let mut transition = Transition::new(Event::Fail)
            .only_from(&[state])
            .last_error(LastError::Set(message.clone()));
        let mut wiped: Vec<&str> = AGENT_KEYS.to_vec();
        match state {
            ProvisionState::DeployWait => {
                transition = transition.deploy_step(JsonMap::new());
                transition = transition.set_internal_info("deploy_steps", Value::Null);
                wiped.extend(DEPLOY_KEYS);
            }
            ProvisionState::CleanWait => {
                transition = transition.clean_step(JsonMap::new());
                wiped.extend(CLEAN_KEYS);
            }
            _ => {}
        }
        for key in wiped {
            transition = transition.remove_internal_info(key);
        }
        match self.store.transition(uuid, &transition).await {
            Ok(TransitionOutcome::Moved { to, .. }) => {
                tracing::error!(%message, to = %to, "wait-state timeout reached; node failed");
            }
            // The node left the wait state in between (a heartbeat won the race).
            Ok(TransitionOutcome::AlreadyThere { .. })
            | Err(StoreError::InvalidState { .. } | StoreError::NodeNotFound(_)) => {
                return Ok(Outcome::Skipped)
            }
            Err(error) => return Err(error),
        }
        if state == ProvisionState::CleanWait && !node.clean_step.is_empty() {
            // A step was running: as Ironic, maintenance with a clean-failure fault, so the
            // node is looked at before it is cleaned again.
            let marked = self
                .store
                .update_node(&uuid.to_string(), |n| {
                    n.maintenance = true;
                    n.fault = Some(CLEAN_FAILURE.to_owned());
                    if n.maintenance_reason.is_none() {
                        n.maintenance_reason = Some(message.clone());
                    }
                    Ok::<_, std::convert::Infallible>(())
                })
                .await;
            match marked {
                Ok(_) => {}
                Err(UpdateError::Store(error)) => return Err(error),
                Err(UpdateError::Rejected(never)) => match never {},
            }
        }
        Ok(Outcome::Failed)
    }
}

#[async_trait::async_trait]
impl Reconciler for Timeouts {
    fn name(&self) -> &'static str {
        "timeouts"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn run_once(&self) -> Result<String, String> {
        let now = OffsetDateTime::now_utc();
        let mut parts = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        for state in WATCHED {
            let Some(timeout) = self.timeout_of(state) else {
                parts.push(format!("{state}: disabled"));
                continue;
            };
            let nodes = self
                .expired_nodes(state, timeout, now)
                .await
                .map_err(|e| format!("listing nodes in {state}: {}", crate::error_chain(&e)))?;
            let mut failed = 0;
            for node in &nodes {
                let span = tracing::info_span!("timeouts", node = %node.uuid, state = %state);
                match self.fail_node(node, state, timeout).instrument(span).await {
                    Ok(Outcome::Failed) => failed += 1,
                    Ok(Outcome::Skipped) => {}
                    Err(source) => {
                        let error = TimeoutError::Store { node: node.uuid, state, source };
                        errors.push(crate::error_chain(&error));
                    }
                }
            }
            parts.push(format!("{state}: {failed} timed out"));
        }
        let summary = parts.join(", ");
        match errors.first() {
            None => Ok(summary),
            Some(first) => Err(format!(
                "{summary}; {} nodes could not be failed, first: {first}",
                errors.len()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_ironics() {
        let mut node = Node::new("fake-hardware");
        let uuid = node.uuid;
        assert_eq!(
            timeout_message(&node, ProvisionState::DeployWait),
            format!("Timeout reached while waiting for callback for node {uuid}")
        );
        node.clean_step.insert("step".into(), Value::from("erase_devices"));
        let clean = timeout_message(&node, ProvisionState::CleanWait);
        assert!(
            clean.starts_with(
                "Timeout reached while cleaning the node. Please check if the ramdisk \
                 responsible for the cleaning is running on the node. Failed on step "
            ),
            "{clean}"
        );
        assert!(clean.ends_with(r#"{"step":"erase_devices"}."#), "{clean}");
    }

    #[test]
    fn expiry_needs_a_start_and_a_full_timeout() {
        let now = OffsetDateTime::now_utc();
        let mut node = Node::new("fake-hardware");
        assert!(!expired(&node, Duration::from_secs(1), now));
        node.provision_updated_at = Some(now - Duration::from_secs(100));
        assert!(expired(&node, Duration::from_secs(100), now));
        assert!(!expired(&node, Duration::from_secs(101), now));
    }
}

#[cfg(test)]
mod race_tests {
    use super::*;
    use ferric_shared::states::Event;

    #[tokio::test]
    async fn a_node_that_moved_after_the_listing_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ferric.db")).await.unwrap();
        let mut node = Node::new("fake-hardware");
        node.provision_state = ProvisionState::DeployWait;
        node.target_provision_state = Some(ProvisionState::Active);
        node.provision_updated_at = Some(OffsetDateTime::now_utc() - Duration::from_secs(7200));
        let listed = store.create_node(&node).await.unwrap();
        let timeouts = Timeouts::new(store.clone(), "me", DEFAULT_INTERVAL);
        let timeout = Duration::from_secs(1800);
        let now = OffsetDateTime::now_utc();
        let found = timeouts.expired_nodes(ProvisionState::DeployWait, timeout, now).await.unwrap();
        assert_eq!(found.len(), 1);

        // A heartbeat resumes the deployment before the reconciler gets to the node.
        store.transition(listed.uuid, &Transition::new(Event::Resume)).await.unwrap();
        let outcome = timeouts.fail_node(&listed, ProvisionState::DeployWait, timeout).await;
        assert_eq!(outcome.unwrap(), Outcome::Skipped);
        let after = store.get_node(&listed.uuid.to_string()).await.unwrap();
        assert_eq!(after.provision_state, ProvisionState::Deploying);
        assert_eq!(after.last_error, None);
        assert_eq!(after.reservation, None, "the reconciler's lock was not released");

        // A node someone else holds is not failed (and their lock stays).
        store.transition(listed.uuid, &Transition::new(Event::Wait)).await.unwrap();
        store.reserve(listed.uuid, "worker").await.unwrap();
        let outcome = timeouts.fail_node(&listed, ProvisionState::DeployWait, Duration::ZERO).await;
        assert_eq!(outcome.unwrap(), Outcome::Skipped);
        let after = store.get_node(&listed.uuid.to_string()).await.unwrap();
        assert_eq!(after.provision_state, ProvisionState::DeployWait);
        assert_eq!(after.reservation.as_deref(), Some("worker"));
    }
}
