//! Power-state sync: the database follows the BMC.
//!
//! Each run pages through every node and reads the BMC power state of each node nobody is
//! acting on, a bounded number at a time. The rules are Ironic's `_sync_power_states` with
//! `force_power_state_during_sync = False` (the issue asks the DB to follow the BMC):
//!
//! - skipped: reserved nodes (a task holds the lock), nodes with a `target_power_state`
//!   (a power action is under way), nodes in `wait call-back`, `clean wait`, `enroll` or
//!   `adopt failed`, and nodes in maintenance;
//! - a node with no recorded power state whose driver or `driver_info` is unusable is
//!   left alone (it was never verified), as Ironic does;
//! - a failed read increments `driver_internal_info.power_sync_failures` (persisted, so a
//!   conductor restart does not forgive a dead BMC); a good read resets it. When the count
//!   exceeds `[power] sync_max_retries` — the first failure is the attempt, the next
//!   `sync_max_retries` are the retries, exactly as Ironic counts — the node goes to
//!   maintenance with `fault = "power failure"`, its power state becomes unknown, and
//!   `maintenance_reason` and `last_error` carry Ironic's message;
//! - a node in maintenance because of `"power failure"` (and not in `enroll`) is read too:
//!   once its BMC answers, maintenance, its reason and the fault are cleared and the power
//!   state recorded (Ironic's `_power_failure_recovery`, folded into the same pass).
//!
//! Writes are conditional: the node is re-read and the change is dropped when someone
//! reserved it, started a power action, put it in maintenance or recorded another power
//! state since the BMC was read — that writer knows better, and the next run re-checks.

use std::sync::Arc;
use std::time::Duration;

use ferric_shared::states::{PowerState, ProvisionState};
use serde_json::Value;
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::Reconciler;
use crate::bmc::{BmcError, DriverInfoError, DriverRegistry};
use crate::orchestrate::worker::api_power_state;
use crate::store::{JsonMap, Node, NodeQuery, Store, StoreError, UpdateError};

/// `fault` (and the reason for maintenance) of a node whose BMC stopped answering.
pub const POWER_FAILURE: &str = "power failure";

/// `driver_internal_info` key counting consecutive failed power reads.
pub const FAILURES_KEY: &str = "power_sync_failures";

/// BMC reads in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Nodes read from the store per page.
const PAGE_SIZE: u32 = 500;

/// Provision states whose nodes are not synced: the agent may be calling back (a power
/// read must not race it), or the node has not been verified yet.
const EXCLUDED_STATES: [ProvisionState; 4] = [
    ProvisionState::DeployWait,
    ProvisionState::CleanWait,
    ProvisionState::Enroll,
    ProvisionState::AdoptFailed,
];

/// Why a node's power state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PowerReadError {
    #[error("node uses driver {0:?}, which this conductor does not have")]
    NoDriver(String),
    #[error(transparent)]
    DriverInfo(#[from] DriverInfoError),
    #[error(transparent)]
    Bmc(#[from] BmcError),
}

/// The power-state reconciler.
#[derive(Debug, Clone)]
pub struct PowerSync {
    store: Store,
    drivers: Arc<DriverRegistry>,
    interval: Duration,
    max_retries: u32,
    concurrency: usize,
}

/// What one node's sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Not looked at (reserved, power action running, excluded state, maintenance).
    Skipped,
    /// The BMC agrees with the database.
    Unchanged,
    /// The database now records what the BMC reports.
    Changed,
    /// The read failed (and, past the retries, the node went to maintenance).
    Failed,
    /// A node in maintenance for a power failure answered again and left maintenance.
    Recovered,
    /// The node changed between the read and the write; the next run looks again.
    Raced,
}

/// Counts of one run.
#[derive(Debug, Default)]
struct Tally {
    checked: u64,
    changed: u64,
    failed: u64,
    recovered: u64,
    store_errors: u64,
    first_store_error: Option<String>,
}

impl Tally {
    fn add(&mut self, result: Result<Outcome, String>) {
        match result {
            Ok(Outcome::Skipped) => return,
            Ok(Outcome::Unchanged | Outcome::Raced) => {}
            Ok(Outcome::Changed) => self.changed += 1,
            Ok(Outcome::Failed) => self.failed += 1,
            Ok(Outcome::Recovered) => self.recovered += 1,
            Err(error) => {
                self.store_errors += 1;
                self.first_store_error.get_or_insert(error);
            }
        }
        self.checked += 1;
    }

    fn summary(&self) -> String {
        format!(
            "{} nodes checked, {} changed, {} failed, {} recovered",
            self.checked, self.changed, self.failed, self.recovered
        )
    }
}

/// Why a conditional write was dropped.
#[derive(Debug)]
struct Moved;

/// The failure count recorded on `node` (garbage counts as none).
fn failures(node: &Node) -> u64 {
    node.driver_internal_info.get(FAILURES_KEY).and_then(Value::as_u64).unwrap_or(0)
}

/// Ironic's text for a power state in messages (`None` for unknown).
fn power_text(state: Option<PowerState>) -> &'static str {
    state.map_or("None", PowerState::as_str)
}

/// Ironic's `last_error` / `maintenance_reason` when the retries are exhausted; the read
/// failed, so the actual state is unknown (`None`).
pub fn max_retries_message(node: Uuid, expected: Option<PowerState>, error: &str) -> String {
    format!(
        "During sync_power_state, max retries exceeded for node {node}, node state None does \
         not match expected state '{}'. Updating DB state to 'None' Switching node to \
         maintenance mode. Error: {error}",
        power_text(expected)
    )
}

impl PowerSync {
    /// A reconciler running every `interval` that puts a node in maintenance once its
    /// failed reads exceed `max_retries`.
    pub fn new(
        store: Store,
        drivers: Arc<DriverRegistry>,
        interval: Duration,
        max_retries: u32,
    ) -> PowerSync {
        PowerSync { store, drivers, interval, max_retries, concurrency: DEFAULT_CONCURRENCY }
    }

    /// At most `concurrency` BMC reads at once (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> PowerSync {
        self.concurrency = concurrency.max(1);
        self
    }

    async fn read_power(&self, node: &Node) -> Result<PowerState, PowerReadError> {
        let driver = self
            .drivers
            .get(&node.driver)
            .ok_or_else(|| PowerReadError::NoDriver(node.driver.clone()))?;
        driver.validate(&node.driver_info)?;
        let bmc = driver.connect(&node.uuid.to_string(), &node.driver_info)?;
        Ok(api_power_state(bmc.power_state().await?))
    }

    /// One node, as listed at the start of its page.
    async fn sync_node(&self, node: Node) -> Result<Outcome, StoreError> {
        if node.reservation.is_some() || node.target_power_state.is_some() {
            return Ok(Outcome::Skipped);
        }
        if node.maintenance {
            let power_failure = node.fault.as_deref() == Some(POWER_FAILURE);
            if power_failure && node.provision_state != ProvisionState::Enroll {
                return self.recover(node).await;
            }
            return Ok(Outcome::Skipped);
        }
        if EXCLUDED_STATES.contains(&node.provision_state) {
            return Ok(Outcome::Skipped);
        }
        match self.read_power(&node).await {
            Ok(actual) => self.record_read(&node, actual).await,
            Err(PowerReadError::NoDriver(_) | PowerReadError::DriverInfo(_))
                if node.power_state.is_none() =>
            {
                Ok(Outcome::Skipped)
            }
            Err(error) => self.record_failure(&node, &error).await,
        }
    }

    async fn record_read(&self, listed: &Node, actual: PowerState) -> Result<Outcome, StoreError> {
        let had_failures = listed.driver_internal_info.contains_key(FAILURES_KEY);
        if listed.power_state == Some(actual) && !had_failures {
            return Ok(Outcome::Unchanged);
        }
        let expected = listed.power_state;
        let saved = self
            .update_if_untouched(listed, |node| {
                node.power_state = Some(actual);
                node.driver_internal_info.remove(FAILURES_KEY);
            })
            .await?;
        if !saved {
            return Ok(Outcome::Raced);
        }
        if expected == Some(actual) {
            return Ok(Outcome::Unchanged);
        }
        tracing::warn!(expected = power_text(expected), actual = actual.as_str(),
            "During sync_power_state, node state does not match expected state; updating recorded state");
        Ok(Outcome::Changed)
    }

    async fn record_failure(
        &self,
        listed: &Node,
        error: &PowerReadError,
    ) -> Result<Outcome, StoreError> {
        let count = failures(listed) + 1;
        let error_text = crate::error_chain(error);
        if count <= u64::from(self.max_retries) {
            tracing::warn!(attempt = count, retries = self.max_retries, error = %error_text,
                "During sync_power_state, could not get power state");
            let mut set = JsonMap::new();
            set.insert(FAILURES_KEY.to_owned(), Value::from(count));
            self.store.update_driver_internal_info(listed.uuid, set, &[]).await?;
            return Ok(Outcome::Failed);
        }
        let uuid = listed.uuid;
        let saved = self
            .update_if_untouched(listed, |node| {
                let message = max_retries_message(uuid, node.power_state, &error_text);
                node.power_state = None;
                node.maintenance = true;
                node.maintenance_reason = Some(message.clone());
                node.fault = Some(POWER_FAILURE.to_owned());
                node.last_error = Some(message);
                node.driver_internal_info.insert(FAILURES_KEY.to_owned(), Value::from(count));
            })
            .await?;
        if saved {
            tracing::error!(error = %error_text, failures = count,
                "During sync_power_state, max retries exceeded; node switched to maintenance");
            Ok(Outcome::Failed)
        } else {
            Ok(Outcome::Raced)
        }
    }

    async fn recover(&self, listed: Node) -> Result<Outcome, StoreError> {
        let actual = match self.read_power(&listed).await {
            Ok(actual) => actual,
            Err(error) => {
                tracing::debug!(error = %crate::error_chain(&error),
                    "During power_failure_recovery, could not get power state");
                return Ok(Outcome::Failed);
            }
        };
        let result = self
            .store
            .update_node(&listed.uuid.to_string(), |node| {
                let still_failed = node.maintenance
                    && node.fault.as_deref() == Some(POWER_FAILURE)
                    && node.reservation.is_none()
                    && node.target_power_state.is_none();
                if !still_failed {
                    return Err(Moved);
                }
                node.power_state = Some(actual);
                node.maintenance = false;
                node.maintenance_reason = None;
                node.fault = None;
                node.driver_internal_info.remove(FAILURES_KEY);
                Ok(())
            })
            .await;
        match result {
            Ok(_) => {
                tracing::info!(state = actual.as_str(), "node recovered from power failure");
                Ok(Outcome::Recovered)
            }
            Err(UpdateError::Rejected(Moved)) => Ok(Outcome::Raced),
            Err(UpdateError::Store(StoreError::NodeNotFound(_))) => Ok(Outcome::Raced),
            Err(UpdateError::Store(error)) => Err(error),
        }
    }

    /// Applies `change` unless the node was reserved, got a power action or maintenance, or
    /// had its power state recorded by someone else since it was listed. `Ok(false)` when
    /// the change was dropped (or the node is gone).
    async fn update_if_untouched(
        &self,
        listed: &Node,
        change: impl Fn(&mut Node),
    ) -> Result<bool, StoreError> {
        let result = self
            .store
            .update_node(&listed.uuid.to_string(), |node| {
                let untouched = node.reservation.is_none()
                    && node.target_power_state.is_none()
                    && !node.maintenance
                    && node.power_state == listed.power_state
                    && !EXCLUDED_STATES.contains(&node.provision_state);
                if !untouched {
                    return Err(Moved);
                }
                change(node);
                Ok(())
            })
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(UpdateError::Rejected(Moved)) => Ok(false),
            Err(UpdateError::Store(StoreError::NodeNotFound(_))) => Ok(false),
            Err(UpdateError::Store(error)) => Err(error),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for PowerSync {
    fn name(&self) -> &'static str {
        "power_sync"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn run_once(&self) -> Result<String, String> {
        let mut tally = Tally::default();
        let mut marker = None;
        loop {
            let query = NodeQuery { limit: Some(PAGE_SIZE), marker, ..NodeQuery::default() };
            let page = self
                .store
                .list_nodes(&query)
                .await
                .map_err(|e| format!("listing nodes: {}", crate::error_chain(&e)))?;
            let full_page = page.len() == PAGE_SIZE as usize;
            marker = page.last().map(|node| node.uuid);
            let mut running = JoinSet::new();
            for node in page {
                if running.len() >= self.concurrency {
                    if let Some(done) = running.join_next().await {
                        tally.add(flatten(done));
                    }
                }
                let this = self.clone();
                let uuid = node.uuid;
                let span = tracing::info_span!("power_sync", node = %uuid);
                running.spawn(
                    async move {
                        this.sync_node(node)
                            .await
                            .map_err(|e| format!("node {uuid}: {}", crate::error_chain(&e)))
                    }
                    .instrument(span),
                );
            }
            while let Some(done) = running.join_next().await {
                tally.add(flatten(done));
            }
            if !full_page {
                break;
            }
        }
        match &tally.first_store_error {
            None => Ok(tally.summary()),
            Some(first) => Err(format!(
                "{}; {} nodes could not be updated, first: {first}",
                tally.summary(),
                tally.store_errors
            )),
        }
    }
}

/// A node's result as error text; a panicked node task counts as an error of that node.
fn flatten(
    joined: Result<Result<Outcome, String>, tokio::task::JoinError>,
) -> Result<Outcome, String> {
    joined.unwrap_or_else(|error| Err(format!("power sync task failed: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_max_retries_message_is_ironics() {
        let uuid = Uuid::parse_str("4b2c920a-3f81-4c6e-9449-89fe6d438318").unwrap();
        assert_eq!(
            max_retries_message(uuid, Some(PowerState::Off), "BMC x is unreachable: gone"),
            "During sync_power_state, max retries exceeded for node \
             4b2c920a-3f81-4c6e-9449-89fe6d438318, node state None does not match expected \
             state 'power off'. Updating DB state to 'None' Switching node to maintenance \
             mode. Error: BMC x is unreachable: gone"
        );
        assert!(max_retries_message(uuid, None, "e").contains("expected state 'None'"));
    }

    #[test]
    fn a_garbage_counter_counts_as_none() {
        let mut node = Node::new("fake-hardware");
        assert_eq!(failures(&node), 0);
        node.driver_internal_info.insert(FAILURES_KEY.into(), Value::from("three"));
        assert_eq!(failures(&node), 0);
        node.driver_internal_info.insert(FAILURES_KEY.into(), Value::from(2));
        assert_eq!(failures(&node), 2);
    }
}
