//! `[conductor] inspect_wait_timeout` drives the wait-state reconciler the service runs:
//! a node waiting in `inspect wait` longer than that fails with Ironic's message.

use std::time::Duration;

use ferric_conductor::config::ConductorConfig;
use ferric_conductor::periodic::timeouts::Timeouts;
use ferric_conductor::periodic::Reconciler;
use ferric_conductor::store::{Node, Store};
use ferric_shared::states::ProvisionState;
use time::OffsetDateTime;

async fn inspecting(store: &Store, waited: Duration) -> Node {
    let mut node = Node::new("fake-hardware");
    node.provision_state = ProvisionState::InspectWait;
    node.target_provision_state = Some(ProvisionState::Manageable);
    node.provision_updated_at = Some(OffsetDateTime::now_utc() - waited);
    store.create_node(&node).await.unwrap()
}

async fn state(store: &Store, node: &Node) -> (ProvisionState, Option<String>) {
    let now = store.get_node(&node.uuid.to_string()).await.unwrap();
    (now.provision_state, now.last_error)
}

#[tokio::test]
async fn the_configured_inspect_wait_timeout_fails_nodes_that_waited_longer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("ferric.db")).await.unwrap();
    let config =
        ConductorConfig::from_toml("[conductor]\nname = \"c1\"\ninspect_wait_timeout = 120\n")
            .unwrap();
    let reconciler = Timeouts::from_config(store.clone(), &config);
    // Longer than the default check interval, which therefore stays.
    assert_eq!(reconciler.interval(), Duration::from_secs(60));

    let late = inspecting(&store, Duration::from_secs(180)).await;
    let fresh = inspecting(&store, Duration::from_secs(60)).await;
    let summary = reconciler.run_once().await.unwrap();
    assert!(summary.ends_with("inspect wait: 1 timed out"), "{summary}");
    assert_eq!(
        state(&store, &late).await,
        (
            ProvisionState::InspectFailed,
            Some("timeout reached while inspecting the node".to_owned())
        )
    );
    assert_eq!(state(&store, &fresh).await, (ProvisionState::InspectWait, None));
}

#[tokio::test]
async fn the_default_is_ironics_1800_seconds_and_0_disables_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("ferric.db")).await.unwrap();
    let within = inspecting(&store, Duration::from_secs(1700)).await;
    let beyond = inspecting(&store, Duration::from_secs(1900)).await;

    let mut disabled = ConductorConfig::default();
    disabled.conductor.inspect_wait_timeout = 0;
    let summary = Timeouts::from_config(store.clone(), &disabled).run_once().await.unwrap();
    assert!(summary.ends_with("inspect wait: disabled"), "{summary}");
    assert_eq!(state(&store, &beyond).await.0, ProvisionState::InspectWait);

    let defaults = ConductorConfig::default();
    assert_eq!(defaults.conductor.inspect_wait_timeout, 1800);
    Timeouts::from_config(store.clone(), &defaults).run_once().await.unwrap();
    assert_eq!(state(&store, &within).await.0, ProvisionState::InspectWait);
    assert_eq!(state(&store, &beyond).await.0, ProvisionState::InspectFailed);
}
