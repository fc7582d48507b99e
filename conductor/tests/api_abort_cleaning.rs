//! `abort` while cleaning waits for its agent, as Ironic decides it: a running step that
//! is not `abortable` is marked `abort_after` (202, the node keeps waiting, nothing is
//! queued); an abortable step, or no step yet, is aborted at once.

mod api_support;

use api_support::{start, Api};
use ferric_conductor::api::ConductorTask;
use ferric_shared::states::{Event, ProvisionVerb};
use serde_json::{json, Value};

/// A node in `clean wait` whose current clean step is `step` (`{}` for none yet).
async fn cleaning_node(api: &Api, name: &str, step: Value) -> String {
    let node = api.create_node(name).await;
    api.force(&node, &[Event::Manage, Event::Done, Event::Provide, Event::Wait]).await;
    let Value::Object(step) = step else { panic!("a step is an object") };
    api.store
        .update_node(&node, |n| {
            n.clean_step = step.clone();
            Ok::<_, std::convert::Infallible>(())
        })
        .await
        .unwrap();
    assert_eq!(api.state_of(&node).await, "clean wait");
    node
}

async fn abort(api: &Api, node: &str) -> u16 {
    let reply =
        api.put(&format!("/v1/nodes/{node}/states/provision"), json!({"target": "abort"})).await;
    reply.status
}

#[tokio::test]
async fn a_step_that_cannot_be_aborted_is_marked_and_keeps_running() {
    let mut api = start().await;
    for (name, step) in [
        ("explicit", json!({"interface": "deploy", "step": "erase_devices", "abortable": false})),
        ("unsaid", json!({"interface": "raid", "step": "create_configuration"})),
    ] {
        let node = cleaning_node(&api, name, step.clone()).await;
        assert_eq!(abort(&api, &node).await, 202);
        api.assert_no_task();
        let shown = api.get(&format!("/v1/nodes/{node}")).await.body;
        assert_eq!(shown["provision_state"], "clean wait", "{shown:#}");
        assert_eq!(shown["last_error"], Value::Null, "{shown:#}");
        assert_eq!(shown["clean_step"]["abort_after"], true, "{shown:#}");
        assert_eq!(shown["clean_step"]["step"], step["step"], "{shown:#}");
        // Asking again changes nothing.
        assert_eq!(abort(&api, &node).await, 202);
        api.assert_no_task();
        assert_eq!(api.state_of(&node).await, "clean wait");
    }

    // In clean hold too, as Ironic.
    let node = cleaning_node(
        &api,
        "held",
        json!({"interface": "deploy", "step": "erase_devices", "abortable": false}),
    )
    .await;
    api.force(&node, &[Event::Hold]).await;
    assert_eq!(abort(&api, &node).await, 202);
    api.assert_no_task();
    let shown = api.get(&format!("/v1/nodes/{node}")).await.body;
    assert_eq!(shown["provision_state"], "clean hold", "{shown:#}");
    assert_eq!(shown["clean_step"]["abort_after"], true, "{shown:#}");

    // A node a task holds is busy; nothing is marked.
    let node = cleaning_node(
        &api,
        "locked",
        json!({"interface": "deploy", "step": "erase_devices", "abortable": false}),
    )
    .await;
    api.store.reserve(node.parse().unwrap(), "worker").await.unwrap();
    assert_eq!(abort(&api, &node).await, 409);
    let stored = api.store.get_node(&node).await.unwrap();
    assert!(!stored.clean_step.contains_key("abort_after"));
}

#[tokio::test]
async fn an_abortable_step_or_no_step_is_aborted_at_once() {
    let mut api = start().await;
    for (name, step) in [
        ("abortable", json!({"interface": "deploy", "step": "erase_devices", "abortable": true})),
        ("booting", json!({})),
    ] {
        let node = cleaning_node(&api, name, step).await;
        assert_eq!(abort(&api, &node).await, 202);
        match api.next_task() {
            ConductorTask::Provision { verb, .. } => assert_eq!(verb, ProvisionVerb::Abort),
            other => panic!("unexpected task {other:?}"),
        }
        let shown = api.get(&format!("/v1/nodes/{node}")).await.body;
        assert_eq!(shown["provision_state"], "clean failed", "{shown:#}");
        assert!(shown["clean_step"].get("abort_after").is_none(), "{shown:#}");
    }
}
