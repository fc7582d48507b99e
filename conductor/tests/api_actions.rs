//! Node actions (states, provision, power, maintenance, boot device, validate) and the
//! ramdisk endpoints (lookup, heartbeat, continue_inspection) over HTTP, including the
//! real agent's lookup and heartbeat client against this server.

mod api_support;

use std::sync::Arc;
use std::time::Duration;

use api_support::{start, start_with, Api, LATEST};
use ferric_agent::config::AgentConfig;
use ferric_agent::ironic::client::ConductorClient;
use ferric_agent::ironic::heartbeat::{HeartbeatTiming, Heartbeater};
use ferric_agent::ironic::lookup::{lookup_node, LookupBackoff, LookupQuery};
use ferric_agent::session::Session;
use ferric_conductor::api::ConductorTask;
use ferric_conductor::bmc::fake::{FaultKind, Op};
use ferric_conductor::bmc::BootDevice;
use ferric_shared::states::{Event, PowerTarget, ProvisionVerb};
use reqwest::Method;
use serde_json::{json, Value};

const MAC: &str = "52:54:00:12:34:56";
const CALLBACK: &str = "http://127.0.0.1:9999";

fn provision_path(node: &str) -> String {
    format!("/v1/nodes/{node}/states/provision")
}

async fn provision_at(api: &Api, node: &str, version: &str, body: Value) -> api_support::Reply {
    api.call_v(Method::PUT, &provision_path(node), Some(version), Some(&body)).await
}

#[tokio::test]
async fn provision_verbs_follow_the_state_machine() {
    let mut api = start().await;
    let node = api.create_node("n1").await;

    // Invalid in `enroll`: 400 naming the state, nothing changed, no task.
    let reply = api.put(&provision_path(&node), json!({"target": "provide"})).await;
    reply.assert_error(400, "while it is in state \"enroll\"");
    assert_eq!(api.state_of(&node).await, "enroll");
    api.assert_no_task();
    // Verb newer than the request's version: 406.
    provision_at(&api, &node, "1.3", json!({"target": "manage"})).await.assert_error(406, "1.4");
    for (body, fragment) in [
        (json!({"target": "explode"}), "explode"),
        (json!({"target": "manage", "colour": 1}), "colour"),
        (json!({}), "target"),
    ] {
        api.put(&provision_path(&node), body.clone()).await.assert_error(400, fragment);
    }
    api.put(&provision_path("ghost"), json!({"target": "manage"}))
        .await
        .assert_error(404, "Node ghost could not be found");
    api.assert_no_task();

    let reply = api.put(&provision_path(&node), json!({"target": "manage"})).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.text, "");
    assert_eq!(
        reply.header("Location"),
        Some(format!("{}/v1/nodes/{node}/states", api.base).as_str())
    );
    match api.next_task() {
        ConductorTask::Provision { node: n, verb, event, .. } => {
            assert_eq!(n.to_string(), node);
            assert_eq!(verb, ProvisionVerb::Manage);
            assert_eq!(event, Event::Manage);
        }
        other => panic!("unexpected task {other:?}"),
    }
    let states = api.get(&format!("/v1/nodes/{node}/states")).await.body;
    assert_eq!(states["provision_state"], json!("verifying"));
    assert_eq!(states["target_provision_state"], json!("manageable"));
    assert_eq!(states.as_object().unwrap().len(), 11);
    assert!(states["provision_updated_at"].is_string());

    api.force(&node, &[Event::Done]).await;
    api.put(&provision_path(&node), json!({"target": "clean"}))
        .await
        .assert_error(400, "clean_steps");
    assert_eq!(api.state_of(&node).await, "manageable");
    let steps = json!([{"interface": "deploy", "step": "erase_devices_metadata", "args": {}}]);
    let reply =
        api.put(&provision_path(&node), json!({"target": "clean", "clean_steps": steps})).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    match api.next_task() {
        ConductorTask::Provision { request, .. } => {
            assert_eq!(request.clean_steps.unwrap()[0].step, "erase_devices_metadata");
        }
        other => panic!("unexpected task {other:?}"),
    }
    let states = api.get(&format!("/v1/nodes/{node}/states")).await.body;
    assert_eq!(states["provision_state"], json!("cleaning"));
    assert_eq!(states["target_provision_state"], json!("manageable"));

    // To `available`, then deploy: `deploy` needs 1.73, `active` does not.
    api.force(&node, &[Event::Manage, Event::Provide, Event::Done]).await;
    assert_eq!(api.state_of(&node).await, "available");
    provision_at(&api, &node, "1.72", json!({"target": "deploy"})).await.assert_error(406, "1.73");
    // In maintenance nothing is deployed.
    api.put(&format!("/v1/nodes/{node}/maintenance"), json!({"reason": "fan"})).await;
    api.put(&provision_path(&node), json!({"target": "active"}))
        .await
        .assert_error(400, "maintenance");
    api.delete(&format!("/v1/nodes/{node}/maintenance")).await;
    let reply =
        provision_at(&api, &node, "1.72", json!({"target": "active", "configdrive": "H4sI"})).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let task = api.next_task();
    assert!(!format!("{task:?}").contains("H4sI"), "the config drive leaked into Debug");
    assert_eq!(api.state_of(&node).await, "deploying");

    // Aborting a deployment that waits for its agent needs 1.110.
    api.force(&node, &[Event::Wait]).await;
    provision_at(&api, &node, "1.109", json!({"target": "abort"})).await.assert_error(406, "1.110");
    let reply = provision_at(&api, &node, "1.110", json!({"target": "abort"})).await;
    assert_eq!(reply.status, 202);
    api.next_task();
    let shown = api.get(&format!("/v1/nodes/{node}")).await.body;
    assert_eq!(shown["provision_state"], json!("deploy failed"));
    assert!(shown["last_error"].as_str().unwrap().contains("Aborted"));

    // A protected node is neither rebuilt nor torn down.
    api.force(&node, &[Event::Deploy, Event::Done]).await;
    let protect = json!([{"op": "replace", "path": "/protected", "value": true}]);
    assert_eq!(api.patch(&format!("/v1/nodes/{node}"), protect).await.status, 200);
    for verb in ["rebuild", "deleted", "undeploy"] {
        api.put(&provision_path(&node), json!({"target": verb}))
            .await
            .assert_error(403, "protected");
    }
    api.delete(&format!("/v1/nodes/{node}")).await.assert_error(403, "protected");
    let unprotect = json!([{"op": "replace", "path": "/protected", "value": false}]);
    assert_eq!(api.patch(&format!("/v1/nodes/{node}"), unprotect).await.status, 200);
    assert_eq!(api.state_of(&node).await, "active");
    api.assert_no_task();

    // A node held by a conductor operation is busy.
    api.store.reserve(node.parse().unwrap(), "worker").await.unwrap();
    api.put(&provision_path(&node), json!({"target": "deleted"}))
        .await
        .assert_error(409, "locked by host worker");
    assert_eq!(api.state_of(&node).await, "active");
    api.assert_no_task();
}

#[tokio::test]
async fn a_full_task_queue_refuses_without_writing() {
    let mut api = start_with(|_| {}, 1).await;
    let a = api.create_node("a").await;
    let b = api.create_node("b").await;
    assert_eq!(api.put(&provision_path(&a), json!({"target": "manage"})).await.status, 202);
    api.put(&provision_path(&b), json!({"target": "manage"})).await.assert_error(503, "busy");
    assert_eq!(api.state_of(&b).await, "enroll");
    api.next_task();
    assert_eq!(api.put(&provision_path(&b), json!({"target": "manage"})).await.status, 202);
}

#[tokio::test]
async fn power_requests() {
    let mut api = start().await;
    let node = api.create_node("p").await;
    let path = format!("/v1/nodes/{node}/states/power");
    let reply = api.put(&path, json!({"target": "power on"})).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert!(reply.header("Location").unwrap().ends_with(&format!("/v1/nodes/{node}/states")));
    match api.next_task() {
        ConductorTask::Power { target, timeout, .. } => {
            assert_eq!(target, PowerTarget::On);
            assert_eq!(timeout, None);
        }
        other => panic!("unexpected task {other:?}"),
    }
    let reply = api.put(&path, json!({"target": "soft power off", "timeout": 30})).await;
    assert_eq!(reply.status, 202);
    match api.next_task() {
        ConductorTask::Power { target, timeout, .. } => {
            assert_eq!(target, PowerTarget::SoftPowerOff);
            assert_eq!(timeout, Some(Duration::from_secs(30)));
        }
        other => panic!("unexpected task {other:?}"),
    }
    for (version, body, status, fragment) in [
        (LATEST, json!({"target": "power sideways"}), 400, "power sideways"),
        (LATEST, json!({"target": "power on", "timeout": 0}), 400, "at least 1"),
        ("1.26", json!({"target": "soft rebooting"}), 406, "1.27"),
        ("1.26", json!({"target": "rebooting", "timeout": 5}), 406, "1.27"),
    ] {
        let reply = api.call_v(Method::PUT, &path, Some(version), Some(&body)).await;
        reply.assert_error(status, fragment);
    }
    api.force(&node, &[Event::Manage, Event::Done, Event::Provide]).await;
    api.put(&path, json!({"target": "power off"}))
        .await
        .assert_error(400, "while it is in state \"cleaning\"");
    api.assert_no_task();
}

#[tokio::test]
async fn maintenance_boot_device_and_validate() {
    let api = start().await;
    let node = api.create_node("m").await;
    let maint = format!("/v1/nodes/{node}/maintenance");
    assert_eq!(api.put(&maint, json!({"reason": "disk swap"})).await.status, 202);
    let shown = api.get(&format!("/v1/nodes/{node}")).await.body;
    assert_eq!(shown["maintenance"], json!(true));
    assert_eq!(shown["maintenance_reason"], json!("disk swap"));
    api.put(&maint, json!({"why": "x"})).await.assert_error(400, "why");
    assert_eq!(api.delete(&maint).await.status, 202);
    let shown = api.get(&format!("/v1/nodes/{node}")).await.body;
    assert_eq!(shown["maintenance"], json!(false));
    assert_eq!(shown["maintenance_reason"], Value::Null);
    let reply = api.call_v(Method::PUT, &maint, Some(LATEST), None).await;
    assert_eq!(reply.status, 202, "an empty body is allowed: {}", reply.text);
    api.delete("/v1/nodes/ghost/maintenance").await.assert_error(404, "ghost");

    let boot = format!("/v1/nodes/{node}/management/boot_device");
    let reply = api.get(&boot).await;
    assert_eq!(reply.body, json!({"boot_device": "disk", "persistent": true}));
    let reply = api.put(&boot, json!({"boot_device": "pxe", "persistent": true})).await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert_eq!(api.bmc.node(&node).unwrap().persistent_device, BootDevice::Pxe);
    assert_eq!(api.get(&boot).await.body, json!({"boot_device": "pxe", "persistent": true}));
    api.put(&boot, json!({"boot_device": "floppy"})).await.assert_error(400, "floppy");
    let supported = api.get(&format!("{boot}/supported")).await.body;
    assert_eq!(
        supported["supported_boot_devices"],
        json!(["pxe", "disk", "cdrom", "bios", "safe"])
    );
    api.bmc.inject(&node, Op::SetBootDevice, FaultKind::Unreachable, 1);
    api.put(&boot, json!({"boot_device": "disk"})).await.assert_error(503, "unreachable");
    let bmc = api.bmc.node(&node).unwrap();
    assert_eq!(bmc.persistent_device, BootDevice::Pxe, "a failed call changed the device");
    assert_eq!(bmc.calls_of(Op::SetBootDevice), 2);

    let validate = api.get(&format!("/v1/nodes/{node}/validate")).await.body;
    assert_eq!(validate["power"], json!({"result": true, "reason": null}));
    assert_eq!(validate["management"]["result"], json!(true));
    assert_eq!(validate["boot"]["result"], json!(false));
    assert!(validate["boot"]["reason"].as_str().unwrap().contains("deploy_kernel"));
    assert_eq!(validate["deploy"]["result"], json!(false));
    assert!(validate["deploy"]["reason"].as_str().unwrap().contains("image_source"));
    assert_eq!(validate["console"]["result"], Value::Null);
    assert_eq!(validate.as_object().unwrap().len(), 12);

    // With driver_info the driver rejects, power fails validation and the BMC is unusable.
    api.patch(
        &format!("/v1/nodes/{node}"),
        json!([
            {"op": "add", "path": "/driver_info/fake_colour", "value": "red"},
            {"op": "add", "path": "/driver_info/deploy_kernel", "value": "k"},
            {"op": "add", "path": "/driver_info/deploy_ramdisk", "value": "r"},
            {"op": "add", "path": "/instance_info/image_source", "value": "http://i/x.img"}
        ]),
    )
    .await;
    let validate = api.get(&format!("/v1/nodes/{node}/validate")).await.body;
    assert_eq!(validate["power"]["result"], json!(false));
    assert!(validate["power"]["reason"].as_str().unwrap().contains("fake_colour"));
    assert_eq!(validate["boot"]["result"], json!(true));
    assert_eq!(validate["deploy"]["result"], json!(true));
    api.get(&boot).await.assert_error(400, "fake_colour");
}

/// A node in `clean wait` with one port.
async fn waiting_node(api: &Api) -> String {
    let node = api.create_node("agent-node").await;
    api.create_port(&node, MAC).await;
    api.force(&node, &[Event::Manage, Event::Done, Event::Provide, Event::Wait]).await;
    node
}

async fn lookup_at(api: &Api, version: Option<&str>, query: &str) -> api_support::Reply {
    api.call_v(Method::GET, &format!("/v1/lookup?{query}"), version, None).await
}

#[tokio::test]
async fn lookup_rules_and_token_issue_once() {
    let api = start().await;
    let node = api.create_node("idle").await;
    api.create_port(&node, MAC).await;
    let by_mac = format!("addresses={MAC}");
    // Known MAC, but the node waits for no agent: the same 404 as an unknown node.
    let idle = lookup_at(&api, Some("1.62"), &by_mac).await;
    idle.assert_error(404, "could not be found");
    let unknown = lookup_at(&api, Some("1.62"), "addresses=52:54:00:99:99:99").await;
    unknown.assert_error(404, "could not be found");
    assert_eq!(idle.fault(), unknown.fault());
    lookup_at(&api, Some("1.62"), "").await.assert_error(400, "Incomplete lookup");
    lookup_at(&api, Some("1.62"), "addresses=bogus,,").await.assert_error(400, "Incomplete");
    lookup_at(&api, Some("1.21"), &by_mac).await.assert_error(404, "");

    api.force(&node, &[Event::Manage, Event::Done, Event::Provide, Event::Wait]).await;
    let query = "addresses=bogus,52:54:00:12:34:56,aa:bb:cc:dd:ee:ff".to_string();
    let first = lookup_at(&api, Some("1.62"), &query).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["node"]["uuid"], json!(node));
    let config = &first.body["config"];
    let token = config["agent_token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 43);
    assert_eq!(config["agent_token_required"], json!(true));
    assert_eq!(config["heartbeat_timeout"], json!(300));
    assert!(config["metrics"].is_object() && config["metrics_statsd"].is_object());
    assert!(first.body["node"]["links"].is_array());
    let info = &first.body["node"]["driver_internal_info"];
    assert_eq!(first.text.matches(token.as_str()).count(), 1, "the token shows only once");
    assert_eq!(info["agent_secret_token"], json!("******"));

    let again = lookup_at(&api, Some("1.62"), "addresses=52-54-00-12-34-56").await;
    assert_eq!(again.body["config"]["agent_token"], json!("******"));
    let by_uuid = lookup_at(&api, Some("1.62"), &format!("node_uuid={node}")).await;
    assert_eq!(by_uuid.status, 200);
    assert_eq!(by_uuid.body["config"]["agent_token"], json!("******"));
    let old = lookup_at(&api, Some("1.31"), &by_mac).await;
    assert_eq!(old.status, 200);
    assert!(old.body["config"].get("agent_token").is_none());
    lookup_at(&api, Some("1.62"), "node_uuid=abc").await.assert_error(400, "UUID");
    // The stored token is the one handed out, and the node view masks it.
    let stored = api.store.get_node(&node).await.unwrap();
    assert_eq!(stored.driver_internal_info["agent_secret_token"], json!(token));
    let shown = api.get(&format!("/v1/nodes/{node}")).await;
    assert!(!shown.text.contains(&token));
}

#[tokio::test]
async fn concurrent_lookups_reveal_the_token_once() {
    let api = start().await;
    let node = waiting_node(&api).await;
    let lookups = (0..8).map(|_| lookup_at(&api, Some("1.62"), "addresses=52:54:00:12:34:56"));
    let replies = futures_join(lookups).await;
    let tokens: Vec<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text);
            r.body["config"]["agent_token"].as_str().unwrap().to_owned()
        })
        .collect();
    let revealed: Vec<&String> = tokens.iter().filter(|t| t.as_str() != "******").collect();
    assert_eq!(revealed.len(), 1, "{tokens:?}");
    let stored = api.store.get_node(&node).await.unwrap();
    assert_eq!(stored.driver_internal_info["agent_secret_token"], json!(revealed[0]));
}

/// Runs the futures concurrently on this task and collects their outputs in order.
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, fut) in out.iter_mut().zip(set.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

async fn heartbeat_at(api: &Api, node: &str, version: &str, body: Value) -> api_support::Reply {
    api.call_v(Method::POST, &format!("/v1/heartbeat/{node}"), Some(version), Some(&body)).await
}

#[tokio::test]
async fn heartbeat_checks_and_records() {
    let mut api = start().await;
    let node = waiting_node(&api).await;
    let first = lookup_at(&api, Some("1.62"), &format!("addresses={MAC}")).await;
    let token = first.body["config"]["agent_token"].as_str().unwrap().to_owned();
    let good = json!({"callback_url": CALLBACK, "agent_token": token, "agent_version": "13.0.0"});
    let table: Vec<(&str, Value, u16, &str)> = vec![
        (
            "1.68",
            json!({"callback_url": CALLBACK, "agent_version": "13.0.0"}),
            400,
            "Agent token is required",
        ),
        (
            "1.68",
            json!({"callback_url": CALLBACK, "agent_token": "x".repeat(43),
            "agent_version": "13.0.0"}),
            400,
            "Invalid or missing agent token",
        ),
        ("1.35", good.clone(), 400, "agent_version"),
        (
            "1.67",
            json!({"callback_url": CALLBACK, "agent_token": token, "agent_version": "1",
            "agent_verify_ca": "PEM"}),
            400,
            "agent_verify_ca",
        ),
        (
            "1.68",
            json!({"callback_url": "ftp://x:1", "agent_token": token,
            "agent_version": "1"}),
            400,
            "callback_url",
        ),
        (
            "1.68",
            json!({"callback_url": CALLBACK, "agent_token": token, "agent_version": "1",
            "colour": 1}),
            400,
            "colour",
        ),
        (
            "1.68",
            json!({"callback_url": CALLBACK, "agent_token": token}),
            400,
            "neither agent_version",
        ),
        ("1.21", good.clone(), 404, ""),
    ];
    for (version, body, status, fragment) in table {
        heartbeat_at(&api, &node, version, body.clone()).await.assert_error(status, fragment);
    }
    heartbeat_at(&api, "ghost", "1.68", good.clone()).await.assert_error(404, "ghost");
    api.assert_no_task();
    let stored = api.store.get_node(&node).await.unwrap();
    assert!(stored.driver_internal_info.get("agent_url").is_none(), "nothing recorded yet");
    assert!(stored.provision_state.is_agent_wait(), "{:?}", stored.provision_state);
    let waiting_since = stored.provision_updated_at.expect("a waiting node has a state time");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let reply = heartbeat_at(&api, &node, "1.68", good.clone()).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    // A heartbeat in a wait state touches the provisioning time (the wait's timeout
    // counts from the last sign of life).
    let touched = api.store.get_node(&node).await.unwrap().provision_updated_at.unwrap();
    assert!(touched > waiting_since, "{touched} !> {waiting_since}");
    assert_eq!(reply.text, "");
    match api.next_task() {
        ConductorTask::Heartbeat { node: n } => assert_eq!(n.to_string(), node),
        other => panic!("unexpected task {other:?}"),
    }
    let info = api.store.get_node(&node).await.unwrap().driver_internal_info;
    assert_eq!(info["agent_url"], json!(CALLBACK));
    assert_eq!(info["agent_version"], json!("13.0.0"));
    assert!(info["agent_last_heartbeat"].as_str().unwrap().ends_with("+00:00"));
    // A changed callback URL is refused while one is recorded.
    let moved = json!({"callback_url": "http://127.0.0.1:9998", "agent_token": token,
                       "agent_version": "13.0.0"});
    heartbeat_at(&api, &node, "1.68", moved).await.assert_error(400, "callback_url");
    // By name too; in a state that expects no heartbeat it is recorded and not processed.
    api.force(&node, &[Event::Resume, Event::Done]).await;
    let settled = api.store.get_node(&node).await.unwrap().provision_updated_at;
    let reply = heartbeat_at(&api, "agent-node", "1.68", good).await;
    assert_eq!(reply.status, 202);
    api.assert_no_task();
    let after = api.store.get_node(&node).await.unwrap().provision_updated_at;
    assert_eq!(after, settled, "a heartbeat outside the wait states leaves the state time");
}

#[tokio::test]
async fn heartbeat_requires_tls_when_configured() {
    let api = start_with(|c| c.agent.require_tls = true, 8).await;
    let node = waiting_node(&api).await;
    let first = lookup_at(&api, Some("1.62"), &format!("addresses={MAC}")).await;
    let token = first.body["config"]["agent_token"].as_str().unwrap().to_owned();
    let body = json!({"callback_url": CALLBACK, "agent_token": token, "agent_version": "1"});
    heartbeat_at(&api, &node, "1.68", body).await.assert_error(400, "TLS");
    let body = json!({"callback_url": "https://127.0.0.1:9999", "agent_token": token,
                      "agent_version": "1", "agent_verify_ca": "-----BEGIN CERTIFICATE-----"});
    assert_eq!(heartbeat_at(&api, &node, "1.68", body).await.status, 202);
    let info = api.store.get_node(&node).await.unwrap().driver_internal_info;
    assert_eq!(info["agent_verify_ca"], json!("-----BEGIN CERTIFICATE-----"));
    let other_cert = json!({"callback_url": "https://127.0.0.1:9999", "agent_token": token,
                      "agent_version": "1", "agent_verify_ca": "-----OTHER-----"});
    heartbeat_at(&api, &node, "1.68", other_cert).await.assert_error(400, "certificate");
}

#[tokio::test]
async fn the_real_agent_client_looks_up_and_heartbeats() {
    let mut api = start().await;
    let node = waiting_node(&api).await;
    let config =
        AgentConfig { api_urls: vec![api.base.parse().unwrap()], ..AgentConfig::default() };
    let client = Arc::new(ConductorClient::new(&config, None).unwrap());
    let session = Arc::new(Session::new(None));
    let backoff = LookupBackoff {
        min_wait: Duration::from_millis(10),
        unit: Duration::from_millis(10),
        max_wait: Duration::from_millis(50),
        budget: Duration::from_secs(5),
        conflict_waits: vec![Duration::from_millis(10)],
    };
    let query = LookupQuery {
        addresses: vec!["aa:bb:cc:dd:ee:ff".into(), MAC.to_uppercase()],
        node_uuid: None,
    };
    let outcome = lookup_node(&client, &session, &query, &backoff).await.unwrap();
    assert_eq!(outcome.node_uuid, node);
    assert_eq!(outcome.heartbeat_timeout, Duration::from_secs(300));
    // The agent negotiated from `GET /` (1.110) and capped lookup at 1.62.
    assert_eq!(outcome.api_version.to_string(), "1.62");
    let token = session.token().expect("the agent adopted the issued token");
    let stored = api.store.get_node(&node).await.unwrap();
    assert_eq!(stored.driver_internal_info["agent_secret_token"], json!(token));

    let heartbeater = Heartbeater {
        client: client.clone(),
        session: session.clone(),
        node_uuid: outcome.node_uuid.clone(),
        callback_url: CALLBACK.into(),
        agent_version: "13.0.0".into(),
        agent_verify_ca: None,
        heartbeat_timeout: outcome.heartbeat_timeout,
        timing: HeartbeatTiming::default(),
    };
    heartbeater.heartbeat_once().await.unwrap();
    assert!(matches!(api.next_task(), ConductorTask::Heartbeat { .. }));
    heartbeater.heartbeat_once().await.unwrap();
    let info = api.store.get_node(&node).await.unwrap().driver_internal_info;
    assert_eq!(info["agent_url"], json!(CALLBACK));

    // A second agent with another token is refused.
    let impostor =
        Heartbeater { session: Arc::new(Session::new(Some("y".repeat(43)))), ..heartbeater };
    let err = impostor.heartbeat_once().await.unwrap_err().to_string();
    assert!(err.contains("400") && err.contains("agent token"), "{err}");
}

fn inspection_body() -> Value {
    json!({
        "inventory": {"interfaces": [{"name": "eth0", "mac_address": MAC}],
                      "bmc_address": "0.0.0.0", "cpu": {"count": 4}},
        "root_disk": {"name": "/dev/sda"},
        "error": null
    })
}

#[tokio::test]
async fn continue_inspection_matches_stores_and_answers_by_version() {
    let mut api = start().await;
    let node = api.create_node("inspected").await;
    api.create_port(&node, MAC).await;
    let path = "/v1/continue_inspection";
    // Not inspecting: not found, and nothing stored.
    api.call_v(Method::POST, path, None, Some(&inspection_body()))
        .await
        .assert_error(404, "could not be found");
    api.force(&node, &[Event::Manage, Event::Done, Event::Inspect, Event::Wait]).await;

    let legacy = api.call_v(Method::POST, path, None, Some(&inspection_body())).await;
    assert_eq!(legacy.status, 202, "{}", legacy.text);
    assert_eq!(legacy.body, json!({"uuid": node}));
    assert!(matches!(api.next_task(), ConductorTask::InspectionData { .. }));
    let stored = api.store.get_inspection_data(node.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(stored["inventory"]["cpu"]["count"], json!(4));
    assert!(api
        .store
        .get_node(&node)
        .await
        .unwrap()
        .driver_internal_info
        .get("agent_secret_token")
        .is_none());

    let modern = api.call_v(Method::POST, path, Some("1.84"), Some(&inspection_body())).await;
    assert_eq!(modern.status, 202);
    assert_eq!(modern.body["node"]["uuid"], json!(node));
    assert_eq!(modern.body["config"]["agent_token"].as_str().unwrap().len(), 43);
    api.next_task();
    let by_uuid = format!("{path}?node_uuid={node}");
    let body = json!({"inventory": {"interfaces": [{"mac_address": "52:54:00:99:99:99"}]}});
    let reply = api.call_v(Method::POST, &by_uuid, Some("1.84"), Some(&body)).await;
    assert_eq!(reply.status, 202);
    assert_eq!(reply.body["config"]["agent_token"], json!("******"));
    api.next_task();
    // Matched by the BMC address in driver_info when no MAC is known.
    let by_bmc = json!({"inventory": {"interfaces": [{"mac_address": "52:54:00:99:99:98"}],
                                      "bmc_address": "10.1.1.1"}});
    let reply = api.call_v(Method::POST, path, None, Some(&by_bmc)).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    api.next_task();

    // Reports may carry compressed logs: more than the general 1 MiB limit is accepted.
    let mut big = inspection_body();
    big["logs"] = json!("A".repeat(3 << 20));
    let reply = api.call_v(Method::POST, path, None, Some(&big)).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    api.next_task();
    let stored = api.store.get_inspection_data(node.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(stored["logs"].as_str().unwrap().len(), 3 << 20);
    big["logs"] = json!("A".repeat(5 << 20));
    let reply = api.call_v(Method::POST, path, None, Some(&big)).await;
    reply.assert_error(413, "larger");

    for (version, query, body, status, fragment) in [
        (Some("1.50"), "", inspection_body(), 404, "1.84"),
        (None, "?node_uuid=x", inspection_body(), 400, "1.84"),
        (None, "", json!({"inventory": {"interfaces": []}}), 400, "at least one"),
        (None, "", json!({"interfaces": []}), 400, "inventory"),
        (
            None,
            "",
            json!({"inventory": {"interfaces": [{"mac_address": "52:54:00:99:99:97"}]}}),
            404,
            "could not be found",
        ),
        (
            None,
            "",
            json!({"inventory": {"interfaces": [{"mac_address": "bogus"}]}}),
            400,
            "no interface with a valid MAC address",
        ),
    ] {
        let reply = api.call_v(Method::POST, &format!("{path}{query}"), version, Some(&body)).await;
        reply.assert_error(status, fragment);
    }
    api.assert_no_task();
}

#[tokio::test]
async fn inspect_is_refused_where_no_inspection_can_work() {
    let mut api = start().await;
    for (patch, fragment) in [
        (json!([{"op": "add", "path": "/inspect_interface", "value": "no-inspect"}]), "no-inspect"),
        (
            json!([{"op": "add", "path": "/inspect_interface", "value": "redfish"}]),
            "needs the redfish driver",
        ),
        (
            json!([{"op": "add", "path": "/boot_interface", "value": "redfish-virtual-media"}]),
            "cannot carry the inspection callback",
        ),
    ] {
        let node = api.create_node(&format!("insp-{}", name_from(fragment))).await;
        let reply = api.patch(&format!("/v1/nodes/{node}"), patch.clone()).await;
        assert_eq!(reply.status, 200, "{patch}: {}", reply.text);
        api.force(&node, &[Event::Manage, Event::Done]).await;
        let reply = api.put(&provision_path(&node), json!({"target": "inspect"})).await;
        reply.assert_error(400, fragment);
        assert_eq!(api.state_of(&node).await, "manageable");
        api.assert_no_task();
    }
}

/// A node name from a message fragment (letters and digits only).
fn name_from(fragment: &str) -> String {
    fragment.chars().filter(char::is_ascii_alphanumeric).take(12).collect()
}
