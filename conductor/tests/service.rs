//! The whole conductor service (`service::run_on`): the API, the worker, the fake BMC,
//! the iPXE scripts and restart takeover, over a real SQLite store in a temp dir.

use std::time::{Duration, Instant};

use ferric_conductor::config::ConductorConfig;
use ferric_conductor::service;
use ferric_conductor::store::{Node, Store, Transition};
use ferric_shared::states::Event;
use serde_json::{json, Value};
use tokio::net::TcpListener;

struct Conductor {
    url: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Conductor {
    async fn start_in(dir: tempfile::TempDir) -> Conductor {
        // reqwest is built without a default TLS provider; plain HTTP still needs one set.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = ConductorConfig {
            data_dir: dir.path().to_owned(),
            listen: addr,
            ..ConductorConfig::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            service::run_on(config, listener, service::default_drivers(), async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Conductor {
            url: format!("http://{addr}"),
            http: reqwest::Client::new(),
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap();
        let Conductor { _dir, .. } = self;
        _dir
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("X-OpenStack-Ironic-API-Version", "1.110");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Polls the node until `done` holds (10 s at most).
    async fn wait_node(&self, uuid: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, node) =
                self.call(reqwest::Method::GET, &format!("/v1/nodes/{uuid}"), None).await;
            assert_eq!(status, 200, "{node}");
            if done(&node) {
                return node;
            }
            assert!(Instant::now() < deadline, "node never reached the expected state: {node}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn create_node(c: &Conductor, driver_info: Value) -> String {
    let (status, node) = c
        .call(
            reqwest::Method::POST,
            "/v1/nodes",
            Some(json!({"driver": "fake-hardware", "name": "node-0", "driver_info": driver_info})),
        )
        .await;
    assert_eq!(status, 201, "{node}");
    assert_eq!(node["provision_state"], "enroll");
    node["uuid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn manage_verifies_through_the_bmc_and_power_follows_the_bmc() {
    let c = Conductor::start_in(tempfile::tempdir().unwrap()).await;
    let uuid = create_node(&c, json!({})).await;

    let (status, body) = c
        .call(
            reqwest::Method::PUT,
            &format!("/v1/nodes/{uuid}/states/provision"),
            Some(json!({"target": "manage"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let node = c.wait_node(&uuid, |n| n["provision_state"] == "manageable").await;
    assert_eq!(node["power_state"], "power off");
    assert_eq!(node["last_error"], Value::Null);

    let (status, body) = c
        .call(
            reqwest::Method::PUT,
            &format!("/v1/nodes/{uuid}/states/power"),
            Some(json!({"target": "power on"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let node = c
        .wait_node(&uuid, |n| n["power_state"] == "power on" && n["target_power_state"].is_null())
        .await;
    assert_eq!(node["reservation"], Value::Null);

    let (status, body) = c
        .call(
            reqwest::Method::PUT,
            &format!("/v1/nodes/{uuid}/states/power"),
            Some(json!({"target": "rebooting"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    c.wait_node(&uuid, |n| n["power_state"] == "power on" && n["target_power_state"].is_null())
        .await;
    c.stop().await;
}

#[tokio::test]
async fn a_bmc_that_rejects_credentials_sends_the_node_back_to_enroll() {
    let c = Conductor::start_in(tempfile::tempdir().unwrap()).await;
    let uuid = create_node(&c, json!({"fake_fail": "power_state=auth_failed"})).await;
    let (status, _) = c
        .call(
            reqwest::Method::PUT,
            &format!("/v1/nodes/{uuid}/states/provision"),
            Some(json!({"target": "manage"})),
        )
        .await;
    assert_eq!(status, 202);
    let node = c
        .wait_node(&uuid, |n| n["provision_state"] == "enroll" && !n["last_error"].is_null())
        .await;
    let error = node["last_error"].as_str().unwrap();
    assert!(error.contains("rejected the credentials"), "{error}");
    c.stop().await;
}

#[tokio::test]
async fn restart_moves_transient_nodes_to_their_failed_states() {
    let dir = tempfile::tempdir().unwrap();
    // A previous run left one node mid-deploy and one mid-cleaning.
    let store = Store::open(&dir.path().join("ferric.db")).await.unwrap();
    let mut uuids = Vec::new();
    for events in [
        &[Event::Manage, Event::Done, Event::Provide][..],
        &[Event::Manage, Event::Done, Event::Provide, Event::Done, Event::Deploy, Event::Wait],
    ] {
        let node = store.create_node(&Node::new("fake-hardware")).await.unwrap();
        for e in events {
            store.transition(node.uuid, &Transition::new(*e)).await.unwrap();
        }
        uuids.push(node.uuid.to_string());
    }
    store.close().await;

    let c = Conductor::start_in(dir).await;
    let cleaning = c.wait_node(&uuids[0], |_| true).await;
    assert_eq!(cleaning["provision_state"], "clean failed");
    assert!(cleaning["last_error"].as_str().unwrap().contains("restarted"), "{cleaning}");
    let deploying = c.wait_node(&uuids[1], |_| true).await;
    assert_eq!(deploying["provision_state"], "deploy failed");
    assert!(deploying["last_error"].as_str().unwrap().contains("restarted"), "{deploying}");
    c.stop().await;
}

#[tokio::test]
async fn ipxe_scripts_are_served_for_known_macs() {
    let c = Conductor::start_in(tempfile::tempdir().unwrap()).await;
    let uuid = create_node(
        &c,
        json!({"deploy_kernel": "http://images.example/k", "deploy_ramdisk": "http://images.example/r"}),
    )
    .await;
    let (status, port) = c
        .call(
            reqwest::Method::POST,
            "/v1/ports",
            Some(json!({"address": "52:54:00:12:34:56", "node_uuid": uuid})),
        )
        .await;
    assert_eq!(status, 201, "{port}");
    let script = c
        .http
        .get(format!("{}/boot/52-54-00-12-34-56.ipxe", c.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(script.starts_with("#!ipxe"), "{script}");
    assert!(script.contains(&format!("ipa-api-url={}", c.url)), "{script}");
    assert!(script.contains("http://images.example/k"), "{script}");
    let unknown =
        c.http.get(format!("{}/boot/52-54-00-00-00-01.ipxe", c.url)).send().await.unwrap();
    assert_eq!(unknown.status().as_u16(), 200);
    assert!(!unknown.text().await.unwrap().contains("ipa-api-url"));
    c.stop().await;
}
