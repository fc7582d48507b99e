//! The store against real SQLite files in temporary directories.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferric_conductor::store::{
    LastError, Node, NodeQuery, NodeSortKey, Port, PortQuery, PortSortKey, Store, StoreError,
    Transition, TransitionOutcome, UpdateError,
};
use ferric_shared::states::{advance, Event, ProvisionState as S, TRANSITIONS};
use serde_json::json;
use uuid::Uuid;

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("data").join("ferric.db")
}

async fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&db_path(dir)).await.unwrap()
}

fn map(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn node_in(state: S, target: Option<S>) -> Node {
    let mut node = Node::new("fake-hardware");
    node.provision_state = state;
    node.target_provision_state = target;
    node
}

#[tokio::test]
async fn node_crud_round_trips_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let mut node = Node::new("fake-hardware");
    node.name = Some("node-1".into());
    node.driver_info = map(json!({"ipmi_address": "10.0.0.1", "ipmi_port": 623}));
    node.properties = map(json!({"cpus": 8, "capabilities": "boot_mode:uefi"}));
    node.instance_info = map(json!({"image_source": "http://img/x.qcow2"}));
    node.extra = map(json!({"rack": "r1"}));
    node.resource_class = Some("baremetal".into());
    node.power_state = Some(ferric_shared::states::PowerState::Off);
    node.boot_interface = Some("ipxe".into());
    node.traits = vec!["CUSTOM_GPU".into()];
    node.network_data = map(json!({"links": []}));
    node.automated_clean = Some(false);
    node.secure_boot = Some(true);
    node.description = Some("first".into());
    let created = store.create_node(&node).await.unwrap();
    assert_eq!(created.version, 0);
    assert_eq!(created.updated_at, None);

    let by_uuid = store.get_node(&node.uuid.to_string()).await.unwrap();
    assert_eq!(by_uuid, created);
    let by_name = store.get_node("node-1").await.unwrap();
    assert_eq!(by_name, created);
    assert_eq!(by_uuid.provision_state, S::Enroll);

    let mut edited = by_uuid.clone();
    edited.extra.insert("rack".into(), json!("r2"));
    edited.maintenance = true;
    edited.maintenance_reason = Some("fan".into());
    edited.clean_step = map(json!({"step": "erase_devices", "interface": "deploy"}));
    let saved = store.save_node(&edited).await.unwrap();
    assert_eq!(saved.version, 1);
    assert!(saved.updated_at.is_some());
    let read = store.get_node("node-1").await.unwrap();
    assert_eq!(read, saved);
    assert_eq!(read.extra["rack"], json!("r2"));
    assert_eq!(read.clean_step["step"], json!("erase_devices"));

    // A save based on the old read loses.
    let mut stale = by_uuid.clone();
    stale.description = Some("late".into());
    match store.save_node(&stale).await {
        Err(StoreError::Stale { uuid, .. }) => assert_eq!(uuid, node.uuid),
        other => panic!("expected Stale, got {other:?}"),
    }
    assert_eq!(store.get_node("node-1").await.unwrap().description.as_deref(), Some("first"));

    // The closure form re-reads and applies atomically.
    let updated = store
        .update_node::<String>("node-1", |n| {
            n.description = Some("patched".into());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(updated.description.as_deref(), Some("patched"));
    assert_eq!(updated.version, 2);
    let refused =
        store.update_node("node-1", |_| Err::<(), _>("no".to_string())).await.unwrap_err();
    assert!(matches!(refused, UpdateError::Rejected(ref why) if why == "no"));

    store.delete_node(node.uuid).await.unwrap();
    assert!(matches!(
        store.get_node("node-1").await,
        Err(StoreError::NodeNotFound(ref id)) if id == "node-1"
    ));
    assert!(matches!(store.delete_node(node.uuid).await, Err(StoreError::NodeNotFound(_))));
    let ghost = Node::new("fake-hardware");
    assert!(matches!(store.save_node(&ghost).await, Err(StoreError::NodeNotFound(_))));
}

#[tokio::test]
async fn unique_fields_conflict_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let mut a = Node::new("fake-hardware");
    a.name = Some("alpha".into());
    a.instance_uuid = Some(Uuid::new_v4().to_string());
    store.create_node(&a).await.unwrap();

    let mut same_name = Node::new("fake-hardware");
    same_name.name = Some("alpha".into());
    let mut same_uuid = Node::new("fake-hardware");
    same_uuid.uuid = a.uuid;
    let mut same_instance = Node::new("fake-hardware");
    same_instance.instance_uuid = a.instance_uuid.clone();
    let cases = [
        (same_name, "name", "alpha".to_string()),
        (same_uuid, "uuid", a.uuid.to_string()),
        (same_instance, "instance_uuid", a.instance_uuid.clone().unwrap()),
    ];
    for (node, field, value) in cases {
        match store.create_node(&node).await {
            Err(StoreError::Conflict { kind, field: got, value: v }) => {
                assert_eq!((kind, got, v.as_str()), ("node", field, value.as_str()));
            }
            other => panic!("{field}: expected Conflict, got {other:?}"),
        }
    }
    // Renaming another node onto a taken name conflicts too, and writes nothing.
    let mut b = Node::new("fake-hardware");
    b.name = Some("beta".into());
    let b = store.create_node(&b).await.unwrap();
    let mut renamed = b.clone();
    renamed.name = Some("alpha".into());
    renamed.description = Some("should not stick".into());
    assert!(matches!(
        store.save_node(&renamed).await,
        Err(StoreError::Conflict { field: "name", .. })
    ));
    let b_now = store.get_node("beta").await.unwrap();
    assert_eq!(b_now, b);
    // Names are unique, nameless nodes are not limited.
    for _ in 0..3 {
        store.create_node(&Node::new("fake-hardware")).await.unwrap();
    }
}

#[tokio::test]
async fn pagination_is_stable_under_every_sort_and_filters_apply() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let drivers = ["ipmi", "redfish", "fake-hardware"];
    let mut created = Vec::new();
    for i in 0..300usize {
        let mut node = Node::new(drivers[i % 3]);
        // Names deliberately not in creation order.
        node.name = Some(format!("n-{:03}", (i * 7) % 300));
        node.resource_class = (i % 4 != 0).then(|| format!("class-{}", i % 5));
        node.maintenance = i % 10 == 0;
        if i % 6 == 0 {
            node.provision_state = S::Available;
        }
        created.push(store.create_node(&node).await.unwrap());
    }

    type KeyFn = fn(&Node) -> String;
    let cases: [(NodeSortKey, KeyFn); 5] = [
        (NodeSortKey::Id, |_| String::new()),
        (NodeSortKey::Name, |n| n.name.clone().unwrap_or_default()),
        (NodeSortKey::Driver, |n| n.driver.clone()),
        (NodeSortKey::ResourceClass, |n| n.resource_class.clone().unwrap_or_default()),
        (NodeSortKey::Uuid, |n| n.uuid.to_string()),
    ];
    for (key, key_of) in cases {
        for descending in [false, true] {
            // Expected: by key, then by creation order; NULL as the smallest value.
            let mut expected: Vec<(String, usize, Uuid)> =
                created.iter().enumerate().map(|(i, n)| (key_of(n), i, n.uuid)).collect();
            expected.sort();
            if descending {
                expected.reverse();
            }
            let expected: Vec<Uuid> = expected.into_iter().map(|(_, _, u)| u).collect();

            let mut seen = Vec::new();
            let mut marker = None;
            loop {
                let page = store
                    .list_nodes(&NodeQuery {
                        limit: Some(37),
                        marker,
                        sort_key: key,
                        descending,
                        ..NodeQuery::default()
                    })
                    .await
                    .unwrap();
                assert!(page.len() <= 37);
                let Some(last) = page.last() else { break };
                marker = Some(last.uuid);
                seen.extend(page.iter().map(|n| n.uuid));
            }
            assert_eq!(seen, expected, "sort {key} descending={descending}");
        }
    }

    let count = |q: NodeQuery| {
        let store = store.clone();
        async move { store.list_nodes(&q).await.unwrap().len() }
    };
    assert_eq!(count(NodeQuery::default()).await, 300);
    assert_eq!(
        count(NodeQuery { provision_state: Some(S::Available), ..Default::default() }).await,
        50
    );
    assert_eq!(count(NodeQuery { maintenance: Some(true), ..Default::default() }).await, 30);
    assert_eq!(count(NodeQuery { maintenance: Some(false), ..Default::default() }).await, 270);
    assert_eq!(count(NodeQuery { driver: Some("ipmi".into()), ..Default::default() }).await, 100);
    let class_1 = created.iter().filter(|n| n.resource_class.as_deref() == Some("class-1")).count();
    assert_eq!(
        count(NodeQuery { resource_class: Some("class-1".into()), ..Default::default() }).await,
        class_1
    );
    assert_eq!(
        count(NodeQuery {
            driver: Some("ipmi".into()),
            provision_state: Some(S::Available),
            ..Default::default()
        })
        .await,
        created.iter().enumerate().filter(|(i, _)| i % 3 == 0 && i % 6 == 0).count()
    );

    let missing = Uuid::new_v4();
    assert!(matches!(
        store.list_nodes(&NodeQuery { marker: Some(missing), ..Default::default() }).await,
        Err(StoreError::MarkerNotFound(ref m)) if *m == missing.to_string()
    ));
    assert_eq!("driver".parse::<NodeSortKey>().unwrap(), NodeSortKey::Driver);
    assert!("driver_info".parse::<NodeSortKey>().is_err());
    assert!("name; DROP TABLE nodes".parse::<NodeSortKey>().is_err());
}

#[tokio::test]
async fn every_transition_of_the_table_applies_and_repeats_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    for row in TRANSITIONS {
        // Start with the default target of the source state (what reaching it would set).
        let start_target = row.from.possible_targets().first().copied();
        let node = store.create_node(&node_in(row.from, start_target)).await.unwrap();
        let expected = advance(row.from, row.event, start_target, None).unwrap();
        let before = Instant::now();
        let outcome = store.transition(node.uuid, &Transition::new(row.event)).await.unwrap();
        assert_eq!(
            outcome,
            TransitionOutcome::Moved {
                from: row.from,
                to: row.to,
                target: expected.target_provision_state
            },
            "{} --{}-->",
            row.from,
            row.event
        );
        let read = store.get_node(&node.uuid.to_string()).await.unwrap();
        assert_eq!(read.provision_state, row.to);
        assert_eq!(read.target_provision_state, expected.target_provision_state);
        assert!(read.provision_updated_at.is_some());
        assert!(before.elapsed() < Duration::from_secs(5));
        assert_eq!(read.version, 1);

        let again = store.transition(node.uuid, &Transition::new(row.event)).await.unwrap();
        match ferric_shared::states::next_state(row.to, row.event) {
            Some(next) => assert!(
                matches!(again, TransitionOutcome::Moved { to, .. } if to == next),
                "{again:?}"
            ),
            None => assert_eq!(again, TransitionOutcome::AlreadyThere { state: row.to }),
        }
    }
}

#[tokio::test]
async fn invalid_transitions_name_the_current_state_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let cases = [
        (S::Available, Event::Clean),
        (S::Enroll, Event::Deploy),
        (S::Enroll, Event::Provide),
        (S::Active, Event::Provide),
        (S::Manageable, Event::Deploy),
        (S::CleanWait, Event::Deploy),
        (S::Deploying, Event::Delete),
        (S::Verifying, Event::Abort),
        (S::Error, Event::Deploy),
    ];
    for (state, event) in cases {
        let node = store.create_node(&node_in(state, None)).await.unwrap();
        match store.transition(node.uuid, &Transition::new(event)).await {
            Err(StoreError::InvalidState { uuid, current, event: e }) => {
                assert_eq!((uuid, current, e), (node.uuid, state, event));
            }
            other => panic!("{state} --{event}-->: {other:?}"),
        }
        let read = store.get_node(&node.uuid.to_string()).await.unwrap();
        assert_eq!(read.version, 0, "{state} --{event}--> wrote something");
        assert_eq!(read.provision_state, state);
    }
    assert!(matches!(
        store.transition(Uuid::new_v4(), &Transition::new(Event::Manage)).await,
        Err(StoreError::NodeNotFound(_))
    ));
    // `only_from` narrows the sources: abort only from agent wait states.
    let node = store.create_node(&node_in(S::CleanHold, Some(S::Available))).await.unwrap();
    let waits = [S::CleanWait, S::DeployWait, S::InspectWait];
    assert!(matches!(
        store.transition(node.uuid, &Transition::new(Event::Abort).only_from(&waits)).await,
        Err(StoreError::InvalidState { current: S::CleanHold, .. })
    ));
    let waiting = store.create_node(&node_in(S::CleanWait, Some(S::Available))).await.unwrap();
    assert_eq!(
        store
            .transition(waiting.uuid, &Transition::new(Event::Abort).only_from(&waits))
            .await
            .unwrap(),
        TransitionOutcome::Moved {
            from: S::CleanWait,
            to: S::CleanFailed,
            target: Some(S::Available)
        }
    );
}

#[tokio::test]
async fn transitions_carry_targets_errors_and_steps() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    // Manual cleaning keeps `manageable` as its target through the wait and ends there.
    let node = store.create_node(&node_in(S::Manageable, None)).await.unwrap();
    let step = map(json!({"interface": "deploy", "step": "erase_devices_metadata"}));
    let t = Transition::new(Event::Clean)
        .target(S::Manageable)
        .clean_step(step.clone())
        .last_error(LastError::Clear);
    assert_eq!(
        store.transition(node.uuid, &t).await.unwrap(),
        TransitionOutcome::Moved {
            from: S::Manageable,
            to: S::Cleaning,
            target: Some(S::Manageable)
        }
    );
    let read = store.get_node(&node.uuid.to_string()).await.unwrap();
    assert_eq!(read.clean_step, step);
    assert_eq!(
        store.transition(node.uuid, &Transition::new(Event::Wait)).await.unwrap(),
        TransitionOutcome::Moved {
            from: S::Cleaning,
            to: S::CleanWait,
            target: Some(S::Manageable)
        }
    );
    let failed = Transition::new(Event::Fail)
        .last_error(LastError::Set("erase failed".into()))
        .clean_step(Default::default());
    assert_eq!(
        store.transition(node.uuid, &failed).await.unwrap(),
        TransitionOutcome::Moved {
            from: S::CleanWait,
            to: S::CleanFailed,
            target: Some(S::Manageable)
        }
    );
    let read = store.get_node(&node.uuid.to_string()).await.unwrap();
    assert_eq!(read.last_error.as_deref(), Some("erase failed"));
    assert!(read.clean_step.is_empty());
    let manage = Transition::new(Event::Manage).last_error(LastError::Clear);
    assert_eq!(
        store.transition(node.uuid, &manage).await.unwrap(),
        TransitionOutcome::Moved { from: S::CleanFailed, to: S::Manageable, target: None }
    );
    assert_eq!(store.get_node(&node.uuid.to_string()).await.unwrap().last_error, None);

    // A target the new state cannot have is refused, naming it.
    let available = store.create_node(&node_in(S::Available, None)).await.unwrap();
    match store
        .transition(available.uuid, &Transition::new(Event::Deploy).target(S::Manageable))
        .await
    {
        Err(StoreError::InvalidTarget { current, target, .. }) => {
            assert_eq!((current, target), (S::Available, S::Manageable));
        }
        other => panic!("expected InvalidTarget, got {other:?}"),
    }
    let deploy_step = map(json!({"step": "write_image", "interface": "deploy"}));
    let mut seeded = store.get_node(&available.uuid.to_string()).await.unwrap();
    seeded.driver_internal_info = map(json!({"agent_url": "https://old:9999", "keep": true}));
    store.save_node(&seeded).await.unwrap();
    let t = Transition::new(Event::Deploy)
        .deploy_step(deploy_step.clone())
        .remove_internal_info("agent_url")
        .set_internal_info("deploy_steps", json!([]));
    store.transition(available.uuid, &t).await.unwrap();
    let read = store.get_node(&available.uuid.to_string()).await.unwrap();
    assert_eq!(read.deploy_step, deploy_step);
    assert_eq!(
        serde_json::Value::Object(read.driver_internal_info.clone()),
        json!({"keep": true, "deploy_steps": []})
    );
    // A refused transition leaves driver_internal_info alone.
    let refused = Transition::new(Event::Manage).set_internal_info("x", json!(1));
    assert!(store.transition(available.uuid, &refused).await.is_err());
    let after = store.get_node(&available.uuid.to_string()).await.unwrap();
    assert_eq!(after.driver_internal_info, read.driver_internal_info);
    assert_eq!(read.target_provision_state, Some(S::Active));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transitions_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    // A second handle on the same file: a separate writer connection, as another process.
    let other = open(&dir).await;
    for round in 0..20 {
        let node = store.create_node(&node_in(S::Available, None)).await.unwrap();
        let (a, b) = (store.clone(), if round % 2 == 0 { store.clone() } else { other.clone() });
        let deploy =
            tokio::spawn(
                async move { a.transition(node.uuid, &Transition::new(Event::Deploy)).await },
            );
        let manage =
            tokio::spawn(
                async move { b.transition(node.uuid, &Transition::new(Event::Manage)).await },
            );
        let (deploy, manage) = (deploy.await.unwrap(), manage.await.unwrap());
        let winners = [deploy.is_ok(), manage.is_ok()].iter().filter(|ok| **ok).count();
        assert_eq!(winners, 1, "round {round}: {deploy:?} / {manage:?}");
        let read = store.get_node(&node.uuid.to_string()).await.unwrap();
        match (deploy, manage) {
            (
                Ok(TransitionOutcome::Moved { to, .. }),
                Err(StoreError::InvalidState { current, .. }),
            ) => {
                assert_eq!(
                    (to, current, read.provision_state),
                    (S::Deploying, S::Deploying, S::Deploying)
                );
            }
            (
                Err(StoreError::InvalidState { current, .. }),
                Ok(TransitionOutcome::Moved { to, .. }),
            ) => {
                assert_eq!(
                    (to, current, read.provision_state),
                    (S::Manageable, S::Manageable, S::Manageable)
                );
            }
            other => panic!("round {round}: {other:?}"),
        }
        assert_eq!(read.version, 1);
    }
    // The same event twice: one moves, the other finds the node already there.
    let node = store.create_node(&node_in(S::Available, None)).await.unwrap();
    let tasks: Vec<_> = [store.clone(), other.clone()]
        .into_iter()
        .map(|s| {
            tokio::spawn(
                async move { s.transition(node.uuid, &Transition::new(Event::Deploy)).await },
            )
        })
        .collect();
    let mut moved = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            TransitionOutcome::Moved { .. } => moved += 1,
            TransitionOutcome::AlreadyThere { state } => assert_eq!(state, S::Deploying),
        }
    }
    assert_eq!(moved, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_and_merges_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let other = open(&dir).await;
    let node = store.create_node(&Node::new("fake-hardware")).await.unwrap();
    let id = node.uuid.to_string();
    // Read-modify-write patches from two handles: every increment survives.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = if i % 2 == 0 { store.clone() } else { other.clone() };
            let id = id.clone();
            tokio::spawn(async move {
                store
                    .update_node::<String>(&id, |n| {
                        let count = n.extra.get("count").and_then(|v| v.as_i64()).unwrap_or(0);
                        n.extra.insert("count".into(), json!(count + 1));
                        Ok(())
                    })
                    .await
            })
        })
        .collect();
    // Heartbeat-style merges of distinct keys on the same node at the same time.
    let merges: Vec<_> = (0..40)
        .map(|i| {
            let store = if i % 2 == 0 { store.clone() } else { other.clone() };
            tokio::spawn(async move {
                store
                    .update_driver_internal_info(node.uuid, map(json!({format!("k{i}"): i})), &[])
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    for merge in merges {
        merge.await.unwrap().unwrap();
    }
    let read = store.get_node(&id).await.unwrap();
    assert_eq!(read.extra["count"], json!(20));
    for i in 0..40 {
        assert_eq!(read.driver_internal_info[&format!("k{i}")], json!(i), "k{i}");
    }
    assert_eq!(read.version, 20 + 40);
}

#[tokio::test]
async fn reservations_lock_nodes_for_one_holder() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let node = store.create_node(&Node::new("fake-hardware")).await.unwrap();
    store.reserve(node.uuid, "c1").await.unwrap();
    for holder in ["c1", "c2"] {
        match store.reserve(node.uuid, holder).await {
            Err(StoreError::Locked { uuid, holder: h }) => {
                assert_eq!((uuid, h.as_str()), (node.uuid, "c1"))
            }
            other => panic!("{holder}: {other:?}"),
        }
    }
    assert_eq!(
        store.get_node(&node.uuid.to_string()).await.unwrap().reservation.as_deref(),
        Some("c1")
    );
    // A save from a copy read before the lock does not undo the lock.
    let mut edited = node.clone();
    edited.description = Some("while locked".into());
    store.save_node(&edited).await.unwrap();
    assert_eq!(
        store.get_node(&node.uuid.to_string()).await.unwrap().reservation.as_deref(),
        Some("c1")
    );
    assert!(matches!(
        store.release(node.uuid, "c2").await,
        Err(StoreError::Locked { ref holder, .. }) if holder == "c1"
    ));
    store.release(node.uuid, "c1").await.unwrap();
    store.release(node.uuid, "c1").await.unwrap();
    assert_eq!(store.get_node(&node.uuid.to_string()).await.unwrap().reservation, None);
    store.reserve(node.uuid, "c2").await.unwrap();
    let missing = Uuid::new_v4();
    assert!(matches!(store.reserve(missing, "c1").await, Err(StoreError::NodeNotFound(_))));
    assert!(matches!(store.release(missing, "c1").await, Err(StoreError::NodeNotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_internal_info_merges_keys_and_is_fast() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let mut node = Node::new("fake-hardware");
    node.driver_internal_info = map(json!({"keep": 1, "agent_url": "https://old:9999"}));
    let node = store.create_node(&node).await.unwrap();
    store
        .update_driver_internal_info(
            node.uuid,
            map(json!({"agent_url": "https://10.0.0.5:9999", "agent_last_heartbeat": "t1"})),
            &["missing_key"],
        )
        .await
        .unwrap();
    store.update_driver_internal_info(node.uuid, Default::default(), &["keep"]).await.unwrap();
    let read = store.get_node(&node.uuid.to_string()).await.unwrap();
    assert_eq!(
        serde_json::Value::Object(read.driver_internal_info),
        json!({"agent_url": "https://10.0.0.5:9999", "agent_last_heartbeat": "t1"})
    );
    assert_eq!(read.version, 2);
    assert!(matches!(
        store.update_driver_internal_info(Uuid::new_v4(), Default::default(), &[]).await,
        Err(StoreError::NodeNotFound(_))
    ));

    // Rough heartbeat throughput: 50 concurrent writers over 200 nodes.
    let mut uuids = Vec::new();
    for _ in 0..200 {
        uuids.push(store.create_node(&Node::new("fake-hardware")).await.unwrap().uuid);
    }
    let total = 4000usize;
    let started = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|worker| {
            let store = store.clone();
            let uuids = uuids.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in (worker..total).step_by(50) {
                    let uuid = uuids[i % uuids.len()];
                    let at = Instant::now();
                    store
                        .update_driver_internal_info(
                            uuid,
                            map(json!({"agent_last_heartbeat": i, "agent_url": "https://x:9999"})),
                            &[],
                        )
                        .await
                        .unwrap();
                    latencies.push(at.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    assert_eq!(latencies.len(), total);
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "driver_internal_info merges: {total} in {elapsed:?} = {:.0}/s, p50 {:?}, p99 {:?} \
         (debug build, 50 concurrent writers)",
        total as f64 / elapsed.as_secs_f64(),
        p(0.5),
        p(0.99)
    );
    let sample = store.get_node(&uuids[0].to_string()).await.unwrap();
    assert_eq!(sample.driver_internal_info["agent_url"], json!("https://x:9999"));
}

#[tokio::test]
async fn ports_validate_macs_stay_unique_and_find_their_node() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let a = store.create_node(&Node::new("fake-hardware")).await.unwrap();
    let b = store.create_node(&Node::new("fake-hardware")).await.unwrap();

    let port = store.create_port(&Port::new(a.uuid, "52:54:00:AA:BB:01")).await.unwrap();
    assert_eq!(port.address, "52:54:00:aa:bb:01");
    assert_eq!(store.get_port(port.uuid).await.unwrap(), port);
    assert!(port.pxe_enabled);

    for bad in ["52:54:00:aa:bb", "zz:54:00:aa:bb:01", "", "52:54:00:aa:bb:01:02"] {
        assert!(
            matches!(store.create_port(&Port::new(a.uuid, bad)).await, Err(StoreError::InvalidMac(ref m)) if m == bad),
            "{bad:?}"
        );
    }
    match store.create_port(&Port::new(b.uuid, "52-54-00-aa-bb-01")).await {
        Err(StoreError::Conflict { kind, field, value }) => {
            assert_eq!((kind, field, value.as_str()), ("port", "address", "52:54:00:aa:bb:01"));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    let orphan = Uuid::new_v4();
    assert!(matches!(
        store.create_port(&Port::new(orphan, "52:54:00:aa:bb:09")).await,
        Err(StoreError::NodeNotFound(ref id)) if *id == orphan.to_string()
    ));

    let a2 = store.create_port(&Port::new(a.uuid, "52:54:00:aa:bb:02")).await.unwrap();
    let b1 = store.create_port(&Port::new(b.uuid, "52:54:00:aa:bb:03")).await.unwrap();

    let of_a = store
        .list_ports(&PortQuery { node_uuid: Some(a.uuid), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(of_a.iter().map(|p| p.uuid).collect::<Vec<_>>(), [port.uuid, a2.uuid]);
    let by_mac = store
        .list_ports(&PortQuery { address: Some("52:54:00:AA:BB:03".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(by_mac.iter().map(|p| p.uuid).collect::<Vec<_>>(), [b1.uuid]);
    let first = store
        .list_ports(&PortQuery {
            limit: Some(2),
            sort_key: PortSortKey::Address,
            descending: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(first.iter().map(|p| p.uuid).collect::<Vec<_>>(), [b1.uuid, a2.uuid]);
    let rest = store
        .list_ports(&PortQuery {
            marker: first.last().map(|p| p.uuid),
            sort_key: PortSortKey::Address,
            descending: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|p| p.uuid).collect::<Vec<_>>(), [port.uuid]);

    // Lookup by the MACs an agent reports, odd entries ignored.
    let macs = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        store.find_node_by_macs(&macs(&["not-a-mac", "52:54:00:AA:BB:02"])).await.unwrap(),
        [a.uuid]
    );
    assert_eq!(
        store.find_node_by_macs(&macs(&["52:54:00:aa:bb:01", "52:54:00:aa:bb:02"])).await.unwrap(),
        [a.uuid]
    );
    assert_eq!(
        store.find_node_by_macs(&macs(&["52:54:00:aa:bb:03", "52:54:00:aa:bb:01"])).await.unwrap(),
        [a.uuid, b.uuid]
    );
    assert!(store.find_node_by_macs(&macs(&["52:54:00:00:00:00"])).await.unwrap().is_empty());

    // Save: move a port to the other node, with optimistic concurrency.
    let mut moved = a2.clone();
    moved.node_uuid = b.uuid;
    moved.extra.insert("slot".into(), json!(2));
    let saved = store.save_port(&moved).await.unwrap();
    assert_eq!(saved.version, 1);
    assert_eq!(store.get_port(a2.uuid).await.unwrap(), saved);
    assert!(matches!(store.save_port(&moved).await, Err(StoreError::Stale { kind: "port", .. })));
    let mut clash = saved.clone();
    clash.address = "52:54:00:AA:BB:03".into();
    assert!(matches!(
        store.save_port(&clash).await,
        Err(StoreError::Conflict { field: "address", .. })
    ));

    store.delete_port(b1.uuid).await.unwrap();
    assert!(matches!(store.get_port(b1.uuid).await, Err(StoreError::PortNotFound(_))));
    assert!(matches!(store.delete_port(b1.uuid).await, Err(StoreError::PortNotFound(_))));
}

#[tokio::test]
async fn deleting_a_node_takes_its_ports_and_inspection_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let node = store.create_node(&Node::new("fake-hardware")).await.unwrap();
    let keep = store.create_node(&Node::new("fake-hardware")).await.unwrap();
    let p1 = store.create_port(&Port::new(node.uuid, "52:54:00:00:00:01")).await.unwrap();
    let p2 = store.create_port(&Port::new(node.uuid, "52:54:00:00:00:02")).await.unwrap();
    let kept = store.create_port(&Port::new(keep.uuid, "52:54:00:00:00:03")).await.unwrap();
    let data = json!({"inventory": {"cpu": {"count": 4}}, "root_disk": {"name": "/dev/sda"}});
    store.store_inspection_data(node.uuid, &data).await.unwrap();
    assert_eq!(store.get_inspection_data(node.uuid).await.unwrap(), Some(data));
    let newer = json!({"inventory": {"cpu": {"count": 8}}});
    store.store_inspection_data(node.uuid, &newer).await.unwrap();
    assert_eq!(store.get_inspection_data(node.uuid).await.unwrap(), Some(newer));
    assert!(matches!(
        store.store_inspection_data(Uuid::new_v4(), &json!({})).await,
        Err(StoreError::NodeNotFound(_))
    ));

    store.delete_node(node.uuid).await.unwrap();
    for port in [p1.uuid, p2.uuid] {
        assert!(matches!(store.get_port(port).await, Err(StoreError::PortNotFound(_))));
    }
    assert_eq!(store.get_inspection_data(node.uuid).await.unwrap(), None);
    assert_eq!(store.get_port(kept.uuid).await.unwrap(), kept);
    // The freed MAC can be used again.
    store.create_port(&Port::new(keep.uuid, "52:54:00:00:00:01")).await.unwrap();
}

#[tokio::test]
async fn takeover_fails_transient_nodes_and_clears_reservations_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // The failed state of every transient state, from the facts doc's transition list.
    let transient = [
        (S::Verifying, S::Enroll),
        (S::Inspecting, S::InspectFailed),
        (S::InspectWait, S::InspectFailed),
        (S::Cleaning, S::CleanFailed),
        (S::CleanWait, S::CleanFailed),
        (S::Deploying, S::DeployFailed),
        (S::DeployWait, S::DeployFailed),
        (S::Deleting, S::Error),
        (S::Adopting, S::AdoptFailed),
        (S::Rescuing, S::RescueFailed),
        (S::RescueWait, S::RescueFailed),
        (S::Unrescuing, S::UnrescueFailed),
        (S::Servicing, S::ServiceFailed),
        (S::ServiceWait, S::ServiceFailed),
    ];
    let mut transient_nodes = Vec::new();
    let mut steady_nodes = Vec::new();
    {
        let store = open(&dir).await;
        for state in S::ALL {
            let target = state.possible_targets().first().copied();
            let node = store.create_node(&node_in(*state, target)).await.unwrap();
            store.reserve(node.uuid, "old-conductor").await.unwrap();
            match transient.iter().find(|(from, _)| from == state) {
                Some((from, to)) => transient_nodes.push((node.uuid, *from, *to)),
                None => steady_nodes.push((node.uuid, *state)),
            }
        }
        store.close().await;
    }
    let store = open(&dir).await;
    let moved = store.takeover("conductor-7").await.unwrap();
    let mut got: Vec<_> = moved.iter().map(|m| (m.uuid, m.from, m.to)).collect();
    got.sort();
    let mut expected = transient_nodes.clone();
    expected.sort();
    assert_eq!(got, expected);
    for (uuid, from, to) in &transient_nodes {
        let node = store.get_node(&uuid.to_string()).await.unwrap();
        assert_eq!(node.provision_state, *to, "{from}");
        let error = node.last_error.unwrap_or_default();
        assert!(error.contains("conductor-7"), "{from}: {error}");
        assert!(error.contains(&format!("restarted while the node was in {from}")), "{error}");
        assert_eq!(node.reservation, None);
        let expected_target =
            if to.is_stable() { None } else { from.possible_targets().first().copied() };
        assert_eq!(node.target_provision_state, expected_target, "{from}");
    }
    for (uuid, state) in &steady_nodes {
        let node = store.get_node(&uuid.to_string()).await.unwrap();
        assert_eq!(node.provision_state, *state);
        assert_eq!(node.last_error, None);
        assert_eq!(node.reservation, None, "{state}");
    }
    assert!(store.takeover("conductor-7").await.unwrap().is_empty());
}

/// Env var that turns [`writer_child`] into the endless writer killed by the durability
/// test; its value is the database path.
const WRITER_ENV: &str = "FERRIC_STORE_TEST_WRITER_DB";

/// Creates nodes one by one, moving each through a transition and a heartbeat merge, and
/// prints `committed N` after each node is durable. Stops after `limit` nodes if given.
async fn write_nodes(path: &Path, limit: Option<usize>) -> usize {
    let store = Store::open(path).await.unwrap();
    let mut count = 0;
    while limit.is_none_or(|limit| count < limit) {
        let mut node = Node::new("fake-hardware");
        node.name = Some(format!("durable-{count}"));
        node.driver_info = map(json!({"padding": "x".repeat(512)}));
        let node = store.create_node(&node).await.unwrap();
        store.transition(node.uuid, &Transition::new(Event::Manage)).await.unwrap();
        store
            .update_driver_internal_info(
                node.uuid,
                map(json!({"agent_last_heartbeat": count})),
                &[],
            )
            .await
            .unwrap();
        count += 1;
        if limit.is_none() {
            println!("committed {count}");
        }
    }
    count
}

#[tokio::test]
async fn writer_child() {
    if let Ok(path) = std::env::var(WRITER_ENV) {
        write_nodes(Path::new(&path), None).await;
        return;
    }
    // Run directly: a bounded run of the same writer.
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(write_nodes(&db_path(&dir), Some(20)).await, 20);
    let store = open(&dir).await;
    let nodes = store.list_nodes(&NodeQuery::default()).await.unwrap();
    assert_eq!(nodes.len(), 20);
    assert!(nodes.iter().all(|n| n.provision_state == S::Verifying));
}

#[tokio::test]
async fn kill_9_mid_write_leaves_an_intact_database_with_every_committed_node() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
        .env(WRITER_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Drain the child's output on a thread so that it never blocks on (or dies of) a full
    // or closed pipe: only the kill may stop it.
    let stdout = child.stdout.take().unwrap();
    let (progress, counts) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut last = 0usize;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("committed ").and_then(|n| n.trim().parse().ok()) {
                last = n;
                let _ = progress.send(n);
            }
        }
        last
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match counts.recv_timeout(remaining) {
            Ok(n) if n >= 150 => break,
            Ok(_) => {}
            Err(err) => panic!("the writer stopped reporting: {err}"),
        }
    }
    // SIGKILL by PID, while the writer is in the middle of its next node.
    let status = Command::new("kill").args(["-9", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(!exit.success());
    let committed = reader.join().unwrap();
    assert!(committed >= 150, "the writer stopped after {committed} nodes");

    let store = Store::open(&path).await.unwrap();
    assert!(store.integrity_check().await.unwrap());
    for n in 0..committed {
        let node = store.get_node(&format!("durable-{n}")).await.unwrap();
        assert_eq!(node.provision_state, S::Verifying, "durable-{n}");
        assert_eq!(node.driver_internal_info["agent_last_heartbeat"], json!(n));
    }
    let all = store.list_nodes(&NodeQuery::default()).await.unwrap();
    assert!(all.len() >= committed && all.len() <= committed + 1, "{} nodes", all.len());
    // The store keeps working after the crash.
    store.create_node(&Node::new("fake-hardware")).await.unwrap();
}
