//! The periodic reconcilers against a real SQLite store and the fake BMC with injected
//! faults: power-state sync (the DB follows the BMC, retries, maintenance, recovery,
//! skipped nodes, a fleet of 2,000), wait-state timeouts, and the status file with
//! `ferric conductor status`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferric_conductor::bmc::fake::{FakeDriver, FaultKind, Op};
use ferric_conductor::bmc::{self, DriverRegistry};
use ferric_conductor::config::ConductorConfig;
use ferric_conductor::periodic::power_sync::{PowerSync, FAILURES_KEY, POWER_FAILURE};
use ferric_conductor::periodic::timeouts::{Timeouts, CLEAN_FAILURE};
use ferric_conductor::periodic::{status_file_path, Reconciler, StatusFile};
use ferric_conductor::service;
use ferric_conductor::store::{Node, Store};
use ferric_shared::states::{PowerState, PowerTarget, ProvisionState};
use serde_json::{json, Value};
use time::OffsetDateTime;

struct Lab {
    _dir: tempfile::TempDir,
    store: Store,
    fake: Arc<FakeDriver>,
    drivers: Arc<DriverRegistry>,
}

impl Lab {
    async fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ferric.db")).await.unwrap();
        let fake = Arc::new(FakeDriver::new());
        let mut drivers = DriverRegistry::new();
        drivers.register(fake.clone());
        Lab { _dir: dir, store, fake, drivers: Arc::new(drivers) }
    }

    fn power_sync(&self) -> PowerSync {
        PowerSync::new(self.store.clone(), self.drivers.clone(), Duration::from_secs(60), 3)
    }

    /// A manageable node whose DB power state is `db` and whose BMC reports `bmc`.
    async fn node(&self, db: Option<PowerState>, bmc: bmc::PowerState) -> Node {
        let mut node = Node::new("fake-hardware");
        node.provision_state = ProvisionState::Manageable;
        node.power_state = db;
        let node = self.store.create_node(&node).await.unwrap();
        self.fake.set_initial_power(&node.uuid.to_string(), bmc);
        node
    }

    async fn create(&self, node: Node) -> Node {
        self.store.create_node(&node).await.unwrap()
    }

    async fn get(&self, node: &Node) -> Node {
        self.store.get_node(&node.uuid.to_string()).await.unwrap()
    }

    fn power_reads(&self, node: &Node) -> u64 {
        self.fake.node(&node.uuid.to_string()).map_or(0, |s| s.calls_of(Op::PowerState))
    }
}

fn failures(node: &Node) -> Option<u64> {
    node.driver_internal_info.get(FAILURES_KEY).and_then(Value::as_u64)
}

#[tokio::test]
async fn the_database_follows_the_bmc() {
    let lab = Lab::new().await;
    let stale = lab.node(Some(PowerState::Off), bmc::PowerState::On).await;
    let agreeing = lab.node(Some(PowerState::On), bmc::PowerState::On).await;
    let unknown = lab.node(None, bmc::PowerState::Off).await;
    let mut active = Node::new("fake-hardware");
    active.provision_state = ProvisionState::Active;
    active.power_state = Some(PowerState::On);
    let active = lab.create(active).await;
    lab.fake.set_initial_power(&active.uuid.to_string(), bmc::PowerState::Off);

    let summary = lab.power_sync().run_once().await.unwrap();
    assert_eq!(summary, "4 nodes checked, 3 changed, 0 failed, 0 recovered");
    assert_eq!(lab.get(&stale).await.power_state, Some(PowerState::On));
    assert_eq!(lab.get(&agreeing).await.power_state, Some(PowerState::On));
    assert_eq!(lab.get(&unknown).await.power_state, Some(PowerState::Off));
    assert_eq!(lab.get(&active).await.power_state, Some(PowerState::Off));
    // Nothing else was touched.
    let after = lab.get(&stale).await;
    assert!(!after.maintenance && after.last_error.is_none() && failures(&after).is_none());

    // Idempotent: a second run finds nothing to change.
    let summary = lab.power_sync().run_once().await.unwrap();
    assert_eq!(summary, "4 nodes checked, 0 changed, 0 failed, 0 recovered");
}

#[tokio::test]
async fn failed_reads_past_the_retries_put_the_node_in_maintenance() {
    let lab = Lab::new().await;
    let node = lab.node(Some(PowerState::On), bmc::PowerState::On).await;
    let healthy = lab.node(Some(PowerState::Off), bmc::PowerState::Off).await;
    let id = node.uuid.to_string();
    lab.fake.inject(&id, Op::PowerState, FaultKind::Unreachable, 100);
    let sync = lab.power_sync();

    // The first failure and the three retries allowed by sync_max_retries = 3 only count.
    for attempt in 1..=3u64 {
        let summary = sync.run_once().await.unwrap();
        assert_eq!(summary, "2 nodes checked, 0 changed, 1 failed, 0 recovered");
        let now = lab.get(&node).await;
        assert_eq!(failures(&now), Some(attempt));
        assert!(!now.maintenance, "in maintenance after {attempt} failures");
        assert_eq!(now.power_state, Some(PowerState::On));
        assert_eq!(now.last_error, None);
    }
    let summary = sync.run_once().await.unwrap();
    assert_eq!(summary, "2 nodes checked, 0 changed, 1 failed, 0 recovered");
    let now = lab.get(&node).await;
    assert!(now.maintenance);
    assert_eq!(now.fault.as_deref(), Some(POWER_FAILURE));
    assert_eq!(now.power_state, None);
    let expected_start = format!(
        "During sync_power_state, max retries exceeded for node {id}, node state None does \
         not match expected state 'power on'. Updating DB state to 'None' Switching node to \
         maintenance mode. Error: "
    );
    let last_error = now.last_error.clone().unwrap();
    assert!(last_error.starts_with(&expected_start), "{last_error}");
    assert!(last_error.contains("is unreachable"), "{last_error}");
    assert_eq!(now.maintenance_reason.as_deref(), Some(last_error.as_str()));
    assert_eq!(lab.power_reads(&node), 4);

    let other = lab.get(&healthy).await;
    assert!(!other.maintenance && failures(&other).is_none());
}

#[tokio::test]
async fn a_good_read_resets_the_failure_count() {
    let lab = Lab::new().await;
    let node = lab.node(Some(PowerState::Off), bmc::PowerState::Off).await;
    lab.fake.inject(&node.uuid.to_string(), Op::PowerState, FaultKind::Timeout, 3);
    let sync = lab.power_sync();
    for _ in 0..3 {
        sync.run_once().await.unwrap();
    }
    assert_eq!(failures(&lab.get(&node).await), Some(3));
    let summary = sync.run_once().await.unwrap();
    assert_eq!(summary, "1 nodes checked, 0 changed, 0 failed, 0 recovered");
    let now = lab.get(&node).await;
    assert_eq!(failures(&now), None);
    assert!(!now.maintenance);
    // So the next three failures again only count.
    lab.fake.inject(&node.uuid.to_string(), Op::PowerState, FaultKind::Timeout, 3);
    for _ in 0..3 {
        sync.run_once().await.unwrap();
    }
    assert!(!lab.get(&node).await.maintenance);
}

#[tokio::test]
async fn a_power_failure_clears_itself_when_the_bmc_answers_again() {
    let lab = Lab::new().await;
    let node = lab.node(Some(PowerState::Off), bmc::PowerState::Off).await;
    let id = node.uuid.to_string();
    lab.fake.inject(&id, Op::PowerState, FaultKind::Unreachable, 100);
    let sync = lab.power_sync();
    for _ in 0..4 {
        sync.run_once().await.unwrap();
    }
    assert!(lab.get(&node).await.maintenance);
    // Still failing: the node stays in maintenance and counts as failed.
    assert_eq!(sync.run_once().await.unwrap(), "1 nodes checked, 0 changed, 1 failed, 0 recovered");
    assert!(lab.get(&node).await.maintenance);

    lab.fake.clear_faults(&id);
    lab.fake.set_initial_power(&id, bmc::PowerState::On);
    assert_eq!(sync.run_once().await.unwrap(), "1 nodes checked, 0 changed, 0 failed, 1 recovered");
    let now = lab.get(&node).await;
    assert!(!now.maintenance);
    assert_eq!(now.fault, None);
    assert_eq!(now.maintenance_reason, None);
    assert_eq!(now.power_state, Some(PowerState::On));
    assert_eq!(failures(&now), None);
    // As Ironic, the record of what happened stays in last_error.
    assert!(now.last_error.unwrap().starts_with("During sync_power_state"));
}

#[tokio::test]
async fn busy_excluded_and_maintenance_nodes_are_left_alone() {
    let lab = Lab::new().await;
    let mut reserved = Node::new("fake-hardware");
    reserved.provision_state = ProvisionState::Manageable;
    reserved.power_state = Some(PowerState::Off);
    reserved.reservation = Some("another-task".into());
    let mut powering = reserved.clone();
    powering.uuid = uuid::Uuid::new_v4();
    powering.reservation = None;
    powering.target_power_state = Some(PowerTarget::On);
    let mut maintenance = powering.clone();
    maintenance.uuid = uuid::Uuid::new_v4();
    maintenance.target_power_state = None;
    maintenance.maintenance = true;
    maintenance.maintenance_reason = Some("replacing a DIMM".into());
    let mut waiting = powering.clone();
    waiting.uuid = uuid::Uuid::new_v4();
    waiting.target_power_state = None;
    waiting.provision_state = ProvisionState::DeployWait;
    let mut cleaning = waiting.clone();
    cleaning.uuid = uuid::Uuid::new_v4();
    cleaning.provision_state = ProvisionState::CleanWait;
    let mut enrolled = waiting.clone();
    enrolled.uuid = uuid::Uuid::new_v4();
    enrolled.provision_state = ProvisionState::Enroll;
    let mut left_alone = Vec::new();
    for node in [reserved, powering, maintenance, waiting, cleaning, enrolled] {
        let node = lab.create(node).await;
        lab.fake.set_initial_power(&node.uuid.to_string(), bmc::PowerState::On);
        left_alone.push(node);
    }
    let checked = lab.node(Some(PowerState::Off), bmc::PowerState::On).await;

    let summary = lab.power_sync().run_once().await.unwrap();
    assert_eq!(summary, "1 nodes checked, 1 changed, 0 failed, 0 recovered");
    for node in &left_alone {
        assert_eq!(lab.power_reads(node), 0, "{} was read", node.provision_state);
        let now = lab.get(node).await;
        assert_eq!(now.power_state, Some(PowerState::Off), "{} changed", node.provision_state);
        assert_eq!(now.version, node.version, "{} was written", node.provision_state);
    }
    assert_eq!(lab.get(&checked).await.power_state, Some(PowerState::On));
}

#[tokio::test]
async fn unusable_drivers_count_only_once_a_power_state_was_known() {
    let lab = Lab::new().await;
    let mut never_verified = Node::new("no-such-driver");
    never_verified.provision_state = ProvisionState::Manageable;
    let never_verified = lab.create(never_verified).await;
    let mut known = Node::new("fake-hardware");
    known.provision_state = ProvisionState::Manageable;
    known.power_state = Some(PowerState::On);
    known.driver_info.insert("fake_fail".into(), json!("power_state=not-a-kind"));
    let known = lab.create(known).await;

    let summary = lab.power_sync().run_once().await.unwrap();
    assert_eq!(summary, "1 nodes checked, 0 changed, 1 failed, 0 recovered");
    assert_eq!(failures(&lab.get(&never_verified).await), None);
    assert_eq!(failures(&lab.get(&known).await), Some(1));
}

#[tokio::test]
async fn a_run_over_two_thousand_nodes_completes() {
    let lab = Lab::new().await;
    let mut nodes = Vec::new();
    for i in 0..2000 {
        let bmc = if i % 2 == 0 { bmc::PowerState::On } else { bmc::PowerState::Off };
        nodes.push(lab.node(Some(PowerState::Off), bmc).await);
    }
    let sync = lab.power_sync();
    let started = Instant::now();
    let summary = sync.run_once().await.unwrap();
    println!("power sync over 2,000 nodes (1,000 changed) took {:?}", started.elapsed());
    assert_eq!(summary, "2000 nodes checked, 1000 changed, 0 failed, 0 recovered");
    let started = Instant::now();
    let summary = sync.run_once().await.unwrap();
    println!("power sync over 2,000 unchanged nodes took {:?}", started.elapsed());
    assert_eq!(summary, "2000 nodes checked, 0 changed, 0 failed, 0 recovered");
    // Every node was read exactly twice: no page was skipped or repeated.
    assert!(nodes.iter().all(|n| lab.power_reads(n) == 2));
    assert_eq!(lab.get(&nodes[1998]).await.power_state, Some(PowerState::On));
}

/// A node created directly in `state`, entered `age` ago.
async fn waiting_node(lab: &Lab, state: ProvisionState, age: Duration) -> Node {
    let mut node = Node::new("fake-hardware");
    node.provision_state = state;
    node.target_provision_state = state.possible_targets().first().copied();
    node.provision_updated_at = Some(OffsetDateTime::now_utc() - age);
    node.power_state = Some(PowerState::On);
    node.driver_internal_info.insert("agent_url".into(), json!("https://192.0.2.10:9999"));
    node.driver_internal_info.insert("agent_secret_token".into(), json!("x".repeat(43)));
    node.driver_internal_info.insert("agent_last_heartbeat".into(), json!(1_700_000_000));
    lab.create(node).await
}

const HOUR: Duration = Duration::from_secs(3600);

fn timeouts(lab: &Lab) -> Timeouts {
    Timeouts::new(lab.store.clone(), "test-conductor", Duration::from_secs(60))
        .deploy_callback_timeout(1800)
        .clean_callback_timeout(1800)
}

#[tokio::test]
async fn a_deploy_waiting_past_its_timeout_fails_with_ironics_message() {
    let lab = Lab::new().await;
    let mut old = Node::new("fake-hardware");
    old.provision_state = ProvisionState::DeployWait;
    old.target_provision_state = Some(ProvisionState::Active);
    old.provision_updated_at = Some(OffsetDateTime::now_utc() - HOUR);
    old.deploy_step.insert("step".into(), json!("write_image"));
    old.driver_internal_info.insert("agent_url".into(), json!("https://192.0.2.10:9999"));
    old.driver_internal_info.insert("agent_secret_token".into(), json!("t".repeat(43)));
    old.driver_internal_info.insert("deploy_step_index".into(), json!(0));
    old.driver_internal_info.insert("agent_last_heartbeat".into(), json!(1_700_000_000));
    let old = lab.create(old).await;
    let fresh = waiting_node(&lab, ProvisionState::DeployWait, Duration::from_secs(60)).await;

    let summary = timeouts(&lab).run_once().await.unwrap();
    assert_eq!(
        summary,
        "wait call-back: 1 timed out, clean wait: 0 timed out, inspect wait: disabled"
    );
    let failed = lab.get(&old).await;
    assert_eq!(failed.provision_state, ProvisionState::DeployFailed);
    assert_eq!(failed.target_provision_state, Some(ProvisionState::Active));
    assert_eq!(
        failed.last_error,
        Some(format!("Timeout reached while waiting for callback for node {}", old.uuid))
    );
    assert!(failed.deploy_step.is_empty());
    assert_eq!(failed.reservation, None);
    assert!(!failed.maintenance);
    let info = &failed.driver_internal_info;
    for wiped in ["agent_url", "agent_secret_token", "deploy_step_index"] {
        assert!(!info.contains_key(wiped), "{wiped} kept: {info:?}");
    }
    // What is history (the last heartbeat) stays.
    assert_eq!(info.get("agent_last_heartbeat"), Some(&json!(1_700_000_000)));
    assert!(failed.provision_updated_at > old.provision_updated_at);

    let untouched = lab.get(&fresh).await;
    assert_eq!(untouched.provision_state, ProvisionState::DeployWait);
    assert_eq!(untouched.version, fresh.version);

    // Idempotent: nothing left to fail.
    let summary = timeouts(&lab).run_once().await.unwrap();
    assert!(summary.starts_with("wait call-back: 0 timed out"), "{summary}");
}

#[tokio::test]
async fn cleaning_past_its_timeout_fails_and_a_running_step_means_maintenance() {
    let lab = Lab::new().await;
    let mut in_step = Node::new("fake-hardware");
    in_step.provision_state = ProvisionState::CleanWait;
    in_step.target_provision_state = Some(ProvisionState::Manageable);
    in_step.provision_updated_at = Some(OffsetDateTime::now_utc() - HOUR);
    in_step.power_state = Some(PowerState::On);
    in_step.clean_step.insert("interface".into(), json!("deploy"));
    in_step.clean_step.insert("step".into(), json!("erase_devices"));
    in_step.driver_internal_info.insert("clean_step_index".into(), json!(1));
    in_step.driver_internal_info.insert("agent_url".into(), json!("https://192.0.2.11:9999"));
    let in_step = lab.create(in_step).await;
    let before_steps = waiting_node(&lab, ProvisionState::CleanWait, HOUR).await;

    let summary = timeouts(&lab).run_once().await.unwrap();
    assert_eq!(
        summary,
        "wait call-back: 0 timed out, clean wait: 2 timed out, inspect wait: disabled"
    );

    let failed = lab.get(&in_step).await;
    assert_eq!(failed.provision_state, ProvisionState::CleanFailed);
    // Manual cleaning stays manual: the target is kept.
    assert_eq!(failed.target_provision_state, Some(ProvisionState::Manageable));
    let message = failed.last_error.clone().unwrap();
    assert!(
        message.starts_with(
            "Timeout reached while cleaning the node. Please check if the ramdisk responsible \
             for the cleaning is running on the node. Failed on step {"
        ),
        "{message}"
    );
    assert!(message.contains("erase_devices"), "{message}");
    assert!(failed.clean_step.is_empty());
    assert!(failed.maintenance);
    assert_eq!(failed.fault.as_deref(), Some(CLEAN_FAILURE));
    assert_eq!(failed.maintenance_reason.as_deref(), Some(message.as_str()));
    assert!(!failed.driver_internal_info.contains_key("clean_step_index"));
    assert!(!failed.driver_internal_info.contains_key("agent_url"));
    assert_eq!(failed.reservation, None);
    // Ironic leaves the power alone unless poweroff_in_cleanfail is set (off by default).
    assert_eq!(failed.power_state, Some(PowerState::On));
    assert_eq!(lab.power_reads(&in_step), 0);

    let no_step = lab.get(&before_steps).await;
    assert_eq!(no_step.provision_state, ProvisionState::CleanFailed);
    assert_eq!(no_step.target_provision_state, Some(ProvisionState::Available));
    assert!(no_step.last_error.unwrap().ends_with("Failed on step {}."));
    assert!(!no_step.maintenance);
    assert_eq!(no_step.fault, None);
}

#[tokio::test]
async fn reserved_maintenance_and_fresh_waiting_nodes_are_left_alone() {
    let lab = Lab::new().await;
    let mut reserved = Node::new("fake-hardware");
    reserved.provision_state = ProvisionState::DeployWait;
    reserved.target_provision_state = Some(ProvisionState::Active);
    reserved.provision_updated_at = Some(OffsetDateTime::now_utc() - HOUR);
    reserved.reservation = Some("heartbeat-handler".into());
    let mut maintenance = reserved.clone();
    maintenance.uuid = uuid::Uuid::new_v4();
    maintenance.reservation = None;
    maintenance.maintenance = true;
    let mut fresh = maintenance.clone();
    fresh.uuid = uuid::Uuid::new_v4();
    fresh.maintenance = false;
    fresh.provision_updated_at = Some(OffsetDateTime::now_utc() - Duration::from_secs(1790));
    let mut inspecting = fresh.clone();
    inspecting.uuid = uuid::Uuid::new_v4();
    inspecting.provision_state = ProvisionState::InspectWait;
    inspecting.target_provision_state = Some(ProvisionState::Manageable);
    inspecting.provision_updated_at = Some(OffsetDateTime::now_utc() - HOUR);
    let mut nodes = Vec::new();
    for node in [reserved, maintenance, fresh, inspecting] {
        nodes.push(lab.create(node).await);
    }

    timeouts(&lab).run_once().await.unwrap();
    for node in &nodes {
        let now = lab.get(node).await;
        assert_eq!(now.provision_state, node.provision_state);
        assert_eq!(now.last_error, None);
        assert_eq!(now.reservation, node.reservation);
    }

    // inspect wait has its own timeout, off unless set.
    let summary = Timeouts::new(lab.store.clone(), "test-conductor", Duration::from_secs(60))
        .inspect_wait_timeout(1800)
        .run_once()
        .await
        .unwrap();
    assert_eq!(
        summary,
        "wait call-back: disabled, clean wait: disabled, inspect wait: 1 timed out"
    );
    let inspected = lab.get(&nodes[3]).await;
    assert_eq!(inspected.provision_state, ProvisionState::InspectFailed);
    assert_eq!(inspected.last_error.as_deref(), Some("timeout reached while inspecting the node"));
}

#[tokio::test]
async fn a_zero_timeout_disables_the_check() {
    let lab = Lab::new().await;
    let deploying = waiting_node(&lab, ProvisionState::DeployWait, 100 * HOUR).await;
    let cleaning = waiting_node(&lab, ProvisionState::CleanWait, 100 * HOUR).await;
    let summary = Timeouts::new(lab.store.clone(), "test-conductor", Duration::from_secs(60))
        .deploy_callback_timeout(0)
        .clean_callback_timeout(0)
        .run_once()
        .await
        .unwrap();
    assert_eq!(summary, "wait call-back: disabled, clean wait: disabled, inspect wait: disabled");
    assert_eq!(lab.get(&deploying).await.provision_state, ProvisionState::DeployWait);
    assert_eq!(lab.get(&cleaning).await.provision_state, ProvisionState::CleanWait);

    // From the configuration too: 0 in the file is rejected, so `from_config` gets the
    // configured (positive) values and only the shortest decides the interval.
    let mut config = ConductorConfig::default();
    config.deploy.deploy_callback_timeout = 5;
    let reconciler = Timeouts::from_config(lab.store.clone(), &config);
    assert_eq!(reconciler.interval(), Duration::from_secs(5));
}

/// The real service with a fake BMC the test controls and a 1 s power sync.
struct Service {
    dir: tempfile::TempDir,
    url: String,
    fake: Arc<FakeDriver>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_service() -> Service {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config =
        ConductorConfig { data_dir: dir.path().to_owned(), listen: addr, ..Default::default() };
    config.power.sync_interval = 1;
    let fake = Arc::new(FakeDriver::new());
    let mut drivers = DriverRegistry::new();
    drivers.register(fake.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        service::run_on(config, listener, drivers, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Service { dir, url: format!("http://{addr}"), fake, stop, task }
}

/// Polls `check` every 50 ms for up to 15 s.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_syncs_power_and_publishes_its_runs_for_conductor_status() {
    let svc = start_service().await;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/v1/nodes", svc.url))
        .header("X-OpenStack-Ironic-API-Version", "1.110")
        .json(&json!({"driver": "fake-hardware"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uuid = created["uuid"].as_str().unwrap().to_owned();
    let put = http
        .put(format!("{}/v1/nodes/{uuid}/states/provision", svc.url))
        .header("X-OpenStack-Ironic-API-Version", "1.110")
        .json(&json!({"target": "manage"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 202);
    let node_url = format!("{}/v1/nodes/{uuid}", svc.url);
    let read = || async {
        http.get(&node_url)
            .header("X-OpenStack-Ironic-API-Version", "1.110")
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while read().await["power_state"] != "power off" {
        assert!(Instant::now() < deadline, "node never verified");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Someone powers the server on behind the conductor's back: the sync notices.
    svc.fake.set_initial_power(&uuid, bmc::PowerState::On);
    while read().await["power_state"] != "power on" {
        assert!(Instant::now() < deadline, "power sync never followed the BMC");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let path = status_file_path(svc.dir.path());
    let status = eventually("two power sync runs in the status file", || {
        let file = StatusFile::read(&path).ok()?;
        let runs = file.reconcilers.iter().find(|r| r.name == "power_sync")?.runs;
        (runs >= 2).then_some(file)
    })
    .await;
    assert_eq!(status.pid, std::process::id());
    let names: Vec<&str> = status.reconcilers.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["power_sync", "timeouts"]);
    assert!(status.reconcilers.iter().all(|r| r.ok), "{status:?}");
    let timeouts = &status.reconcilers[1];
    assert_eq!(
        timeouts.outcome,
        "wait call-back: 0 timed out, clean wait: 0 timed out, inspect wait: 0 timed out"
    );

    // The CLI reads the same file, also while the service is stopped.
    let _ = svc.stop.send(());
    svc.task.await.unwrap();
    let ferric = env!("CARGO_BIN_EXE_ferric");
    let dir = svc.dir.path().to_str().unwrap();
    let out = std::process::Command::new(ferric)
        .args(["conductor", "status", "--data-dir", dir])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("| power_sync |"), "{table}");
    assert!(table.contains("nodes checked"), "{table}");
    assert!(table.contains("| timeouts "), "{table}");

    let out = std::process::Command::new(ferric)
        .args(["-f", "json", "conductor", "status", "--data-dir", dir])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["reconcilers"][0]["name"], "power_sync");
    assert!(json["reconcilers"][0]["runs"].as_u64().unwrap() >= 2);
    assert!(json["reconcilers"][0]["outcome"].as_str().unwrap().starts_with("1 nodes checked"));
}

#[test]
fn conductor_status_without_a_status_file_explains_itself() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferric"))
        .args(["conductor", "status", "--data-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no status file at"), "{stderr}");
    assert!(stderr.contains("status.json"), "{stderr}");
}
