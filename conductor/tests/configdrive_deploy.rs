//! A deploy with a config drive dictionary: the conductor (in-process, real service)
//! renders it and sends the agent a string that decodes to a `config-2` ISO 9660 image
//! with the node's defaults filled in. The agent is scripted: it records every command
//! and lets `write_image` succeed.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use ferric_conductor::bmc::fake::FakeDriver;
use ferric_conductor::bmc::DriverRegistry;
use ferric_conductor::config::ConductorConfig;
use ferric_conductor::service;
use ferric_conductor::store::{Store, Transition};
use ferric_shared::states::Event;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// Lookups hand out the agent token from 1.62 on; config drive vendor_data needs 1.59.
const VERSION: &str = "1.68";
const DEADLINE: Duration = Duration::from_secs(40);

#[derive(Default)]
struct ScriptedAgent {
    received: Mutex<Vec<(String, Value)>>,
    commands: Mutex<VecDeque<Value>>,
}

impl ScriptedAgent {
    fn params_of(&self, name: &str) -> Vec<Value> {
        let received = self.received.lock().unwrap();
        received.iter().filter(|(n, _)| n == name).map(|(_, p)| p.clone()).collect()
    }

    fn run(&self, name: &str, params: &Value) -> (&'static str, Value) {
        let versions = json!({"scripted_manager": "1.0"});
        match name {
            "deploy.get_deploy_steps" => (
                "SUCCEEDED",
                json!({"deploy_steps": {"ScriptedManager": [
                          {"step": "write_image", "priority": 0, "interface": "deploy"}]},
                       "hardware_manager_version": versions}),
            ),
            "deploy.execute_deploy_step" => (
                "SUCCEEDED",
                json!({"deploy_result": {"result": "written"}, "deploy_step": params["step"]}),
            ),
            "standby.get_partition_uuids" => ("SUCCEEDED", json!({"root uuid": "0xfeedbeef"})),
            "standby.power_off" => ("SUCCEEDED", Value::Null),
            other => ("FAILED", json!({"unexpected": other})),
        }
    }
}

async fn command(
    axum::extract::State(agent): axum::extract::State<Arc<ScriptedAgent>>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    let params = body["params"].clone();
    agent.received.lock().unwrap().push((name.clone(), params.clone()));
    let (status, result) = agent.run(&name, &params);
    let short = name.split_once('.').map_or(name.as_str(), |(_, c)| c).to_owned();
    let id = agent.received.lock().unwrap().len();
    let entry = json!({"id": format!("cmd-{id}"), "command_name": short,
        "command_status": status, "command_error": null, "command_result": result});
    agent.commands.lock().unwrap().push_back(entry.clone());
    if short.starts_with("execute_") {
        // Step commands are asynchronous: RUNNING now, the outcome in the list.
        let mut running = entry;
        running["command_status"] = json!("RUNNING");
        running["command_result"] = Value::Null;
        return axum::Json(running);
    }
    axum::Json(entry)
}

async fn list(
    axum::extract::State(agent): axum::extract::State<Arc<ScriptedAgent>>,
) -> axum::Json<Value> {
    axum::Json(json!({"commands": *agent.commands.lock().unwrap()}))
}

struct Lab {
    url: String,
    http: reqwest::Client,
    agent: Arc<ScriptedAgent>,
    agent_url: String,
    store: Store,
    dir: tempfile::TempDir,
    driver: Arc<FakeDriver>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    service: Option<tokio::task::JoinHandle<()>>,
}

impl Lab {
    async fn start() -> Lab {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let agent = Arc::new(ScriptedAgent::default());
        let agent_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent_url = format!("http://{}", agent_listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/v1/commands/", axum::routing::post(command).get(list))
            .with_state(agent.clone());
        tokio::spawn(async move { axum::serve(agent_listener, app).await.unwrap() });

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("images")).unwrap();
        std::fs::write(dir.path().join("images/disk.img"), b"not really a disk").unwrap();
        // Opened before the service so that nodes can be put in `available` directly.
        let store = Store::open(&dir.path().join("ferric.db")).await.unwrap();
        let driver = Arc::new(FakeDriver::new());
        let mut drivers = DriverRegistry::new();
        drivers.register(driver.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config =
            ConductorConfig { data_dir: dir.path().to_owned(), listen: addr, ..Default::default() };
        config.agent.post_deploy_get_power_state_retries = 1;
        config.agent.post_deploy_get_power_state_retry_interval = 1;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = tokio::spawn(async move {
            service::run_on(config, listener, drivers, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Lab {
            url: format!("http://{addr}"),
            http: reqwest::Client::new(),
            agent,
            agent_url,
            store,
            dir,
            driver,
            stop: Some(stop),
            service: Some(service),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("X-OpenStack-Ironic-API-Version", VERSION)
            .timeout(Duration::from_secs(20));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// An `available` node with a port and a deployable image.
    async fn available_node(&self, name: &str, mac: &str) -> String {
        let (status, node) = self
            .call(
                reqwest::Method::POST,
                "/v1/nodes",
                Some(json!({"driver": "fake-hardware", "name": name,
                    "instance_info": {"image_source": "disk.img",
                                      "image_checksum": "c".repeat(64)}})),
            )
            .await;
        assert_eq!(status, 201, "{node}");
        let uuid = node["uuid"].as_str().unwrap().to_owned();
        let (status, port) = self
            .call(
                reqwest::Method::POST,
                "/v1/ports",
                Some(json!({"node_uuid": uuid, "address": mac})),
            )
            .await;
        assert_eq!(status, 201, "{port}");
        let id = uuid.parse().unwrap();
        for event in [Event::Manage, Event::Done, Event::Provide, Event::Done] {
            self.store.transition(id, &Transition::new(event)).await.unwrap();
        }
        uuid
    }

    async fn node(&self, uuid: &str) -> Value {
        self.call(reqwest::Method::GET, &format!("/v1/nodes/{uuid}"), None).await.1
    }

    async fn provision(&self, uuid: &str, body: Value) {
        let path = format!("/v1/nodes/{uuid}/states/provision");
        let (status, reply) = self.call(reqwest::Method::PUT, &path, Some(body)).await;
        assert_eq!(status, 202, "{reply}");
    }

    /// Plays the ramdisk of `uuid` (one lookup, then heartbeats) until the node rests in
    /// `state`.
    async fn drive(&self, uuid: &str, mac: &str, state: &str) -> Value {
        let deadline = Instant::now() + DEADLINE;
        let mut token: Option<String> = None;
        loop {
            let node = self.node(uuid).await;
            if node["provision_state"] == state && node["reservation"].is_null() {
                return node;
            }
            assert!(Instant::now() < deadline, "never reached {state}: {node:#}");
            if node["provision_state"] == "wait call-back" {
                match &token {
                    None => {
                        let path = format!("/v1/lookup?addresses={mac}");
                        let (status, reply) = self.call(reqwest::Method::GET, &path, None).await;
                        if status == 200 {
                            token = reply["config"]["agent_token"].as_str().map(str::to_owned);
                        }
                    }
                    Some(t) => {
                        self.call(
                            reqwest::Method::POST,
                            &format!("/v1/heartbeat/{uuid}"),
                            Some(json!({"callback_url": self.agent_url, "agent_token": t,
                                        "agent_version": "13.0.0"})),
                        )
                        .await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(service) = self.service.take() {
            service.await.unwrap();
        }
    }
}

/// The ISO 9660 image a config drive string holds.
fn decode_drive(text: &str) -> Vec<u8> {
    let gz = base64::engine::general_purpose::STANDARD.decode(text).unwrap();
    let mut iso = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut iso).unwrap();
    iso
}

fn isoinfo(iso: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("isoinfo").arg("-i").arg(iso).args(args).output().unwrap();
    assert!(out.status.success(), "isoinfo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dictionary_config_drive_reaches_the_agent_as_a_config_2_image() {
    let lab = Lab::start().await;

    // From the provision request.
    let mac = "52:54:00:00:c0:01";
    let uuid = lab.available_node("cd-request", mac).await;
    let user_data = "#cloud-config\nruncmd: [\"echo \\u00e9\"]\n\u{0}\u{1}end";
    lab.provision(
        &uuid,
        json!({"target": "active", "configdrive": {
            "meta_data": {"hostname": "web-1"},
            "network_data": {"links": [{"id": "eth0"}]},
            "vendor_data": {"x": "y"},
            "user_data": user_data}}),
    )
    .await;
    let node = lab.drive(&uuid, mac, "active").await;
    assert_eq!(node["last_error"], Value::Null, "{node:#}");
    // The rendered drive is kept in instance_info and shown masked.
    assert_eq!(node["instance_info"]["configdrive"], "******", "{node:#}");

    let sent = lab.agent.params_of("deploy.execute_deploy_step");
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let args = &sent[0]["step"]["args"];
    let drive = args["configdrive"].as_str().expect("the config drive is sent as a string");
    assert_eq!(args["image_info"]["configdrive"], drive);
    let stored = lab.store.get_node(&uuid).await.unwrap();
    assert_eq!(stored.instance_info["configdrive"], drive);

    let iso = lab.dir.path().join("sent.iso");
    std::fs::write(&iso, decode_drive(drive)).unwrap();
    let info = String::from_utf8(isoinfo(&iso, &["-d"])).unwrap();
    assert!(info.contains("Volume id: config-2\n"), "{info}");
    for mode in ["-R", "-J"] {
        let meta: Value = serde_json::from_slice(&isoinfo(
            &iso,
            &[mode, "-x", "/openstack/latest/meta_data.json"],
        ))
        .unwrap();
        assert_eq!(meta, json!({"hostname": "web-1", "uuid": uuid, "name": "cd-request"}));
        let read = isoinfo(&iso, &[mode, "-x", "/openstack/2012-08-10/user_data"]);
        assert_eq!(read, user_data.as_bytes(), "{mode}");
    }
    let network: Value = serde_json::from_slice(&isoinfo(
        &iso,
        &["-R", "-x", "/openstack/latest/network_data.json"],
    ))
    .unwrap();
    assert_eq!(network, json!({"links": [{"id": "eth0"}]}));
    let vendor: Value = serde_json::from_slice(&isoinfo(
        &iso,
        &["-R", "-x", "/openstack/latest/vendor_data2.json"],
    ))
    .unwrap();
    assert_eq!(vendor, json!({"x": "y"}));

    // Set in instance_info with PATCH, no config drive in the request.
    let mac = "52:54:00:00:c0:02";
    let uuid = lab.available_node("cd-patched", mac).await;
    let (status, reply) = lab
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/nodes/{uuid}"),
            Some(json!([{"op": "add", "path": "/instance_info/configdrive",
                         "value": {"meta_data": {"uuid": "kept"}}}])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    lab.provision(&uuid, json!({"target": "active"})).await;
    lab.drive(&uuid, mac, "active").await;
    let sent = lab.agent.params_of("deploy.execute_deploy_step");
    let drive = sent.last().unwrap()["step"]["args"]["configdrive"].as_str().unwrap().to_owned();
    std::fs::write(&iso, decode_drive(&drive)).unwrap();
    let meta: Value =
        serde_json::from_slice(&isoinfo(&iso, &["-R", "-x", "/openstack/latest/meta_data.json"]))
            .unwrap();
    assert_eq!(meta, json!({"uuid": "kept", "name": "cd-patched"}));

    // An empty dictionary is no config drive, as in Ironic.
    let mac = "52:54:00:00:c0:03";
    let uuid = lab.available_node("cd-empty", mac).await;
    lab.provision(&uuid, json!({"target": "active", "configdrive": {}})).await;
    lab.drive(&uuid, mac, "active").await;
    let sent = lab.agent.params_of("deploy.execute_deploy_step");
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[2]["step"]["args"]["configdrive"], Value::Null, "{:#}", sent[2]);

    // A dictionary that cannot be rendered fails the deploy before the ramdisk boots.
    let mac = "52:54:00:00:c0:04";
    let uuid = lab.available_node("cd-bad", mac).await;
    let (status, reply) = lab
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/nodes/{uuid}"),
            Some(json!([{"op": "add", "path": "/instance_info/configdrive",
                         "value": {"meta_data": {}, "colour": "red"}}])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    lab.provision(&uuid, json!({"target": "active"})).await;
    let node = lab.drive(&uuid, mac, "deploy failed").await;
    let last_error = node["last_error"].as_str().unwrap_or_default();
    assert_eq!(
        last_error,
        format!(
            "Failed to deploy node {uuid}: unknown config drive key \"colour\"; only \
             meta_data, network_data, user_data and vendor_data are allowed"
        ),
        "{node:#}"
    );
    assert_eq!(lab.driver.node(&uuid).and_then(|n| n.booted_from), None, "never booted");

    lab.stop().await;
}
