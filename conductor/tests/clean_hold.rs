//! `unhold` through the API: only a node in `clean hold` may be released, only from API
//! 1.85, and the release moves it to `clean wait` and queues the conductor's resume.

mod api_support;

use api_support::{start, Api};
use ferric_conductor::api::ConductorTask;
use ferric_shared::states::{Event, ProvisionVerb};
use reqwest::Method;
use serde_json::{json, Value};

/// A node in `clean hold` on a `conductor.hold` step.
async fn held_node(api: &Api, name: &str) -> String {
    let node = api.create_node(name).await;
    api.force(&node, &[Event::Manage, Event::Done, Event::Clean, Event::Wait, Event::Hold]).await;
    api.store
        .update_node(&node, |n| {
            n.clean_step = json!({"interface": "conductor", "step": "hold", "abortable": true})
                .as_object()
                .cloned()
                .unwrap_or_default();
            Ok::<_, std::convert::Infallible>(())
        })
        .await
        .unwrap();
    assert_eq!(api.state_of(&node).await, "clean hold");
    node
}

async fn unhold(api: &Api, node: &str, version: &str) -> api_support::Reply {
    let path = format!("/v1/nodes/{node}/states/provision");
    api.call_v(Method::PUT, &path, Some(version), Some(&json!({"target": "unhold"}))).await
}

#[tokio::test]
async fn unhold_releases_a_held_node_from_api_1_85() {
    let mut api = start().await;
    let node = held_node(&api, "held").await;

    let reply = unhold(&api, &node, "1.84").await;
    reply.assert_error(406, "unhold");
    api.assert_no_task();
    assert_eq!(api.state_of(&node).await, "clean hold");

    let reply = unhold(&api, &node, "1.85").await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    match api.next_task() {
        ConductorTask::Provision { node: n, verb, .. } => {
            assert_eq!(n.to_string(), node);
            assert_eq!(verb, ProvisionVerb::Unhold);
        }
        other => panic!("unexpected task {other:?}"),
    }
    let shown = api.get(&format!("/v1/nodes/{node}")).await.body;
    assert_eq!(shown["provision_state"], "clean wait", "{shown:#}");
    // The hold step stays current: the conductor goes on from the step after it.
    assert_eq!(shown["clean_step"]["step"], "hold", "{shown:#}");
    assert_eq!(shown["last_error"], Value::Null, "{shown:#}");

    // Nothing else can be released.
    let reply = unhold(&api, &node, "1.85").await;
    reply.assert_error(400, "clean wait");
    let manageable = api.create_node("idle").await;
    api.force(&manageable, &[Event::Manage, Event::Done]).await;
    unhold(&api, &manageable, "1.85").await.assert_error(400, "manageable");
    api.assert_no_task();
}

#[tokio::test]
async fn abort_of_a_held_node_fails_cleaning_at_once() {
    let mut api = start().await;
    let node = held_node(&api, "held").await;
    let path = format!("/v1/nodes/{node}/states/provision");
    let reply = api.put(&path, json!({"target": "abort"})).await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    match api.next_task() {
        ConductorTask::Provision { verb, .. } => assert_eq!(verb, ProvisionVerb::Abort),
        other => panic!("unexpected task {other:?}"),
    }
    let shown = api.get(&format!("/v1/nodes/{node}")).await.body;
    assert_eq!(shown["provision_state"], "clean failed", "{shown:#}");
    assert_eq!(shown["last_error"], "Aborted by request while in \"clean hold\".", "{shown:#}");
}
