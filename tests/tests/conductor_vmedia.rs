//! The conductor (in-process, `service::run_on`) booting a `fake-hardware` node whose
//! boot interface is `redfish-virtual-media`: cleaning inserts the conductor-served deploy
//! ISO with a one-time CD boot instead of setting PXE, and ejects it once cleaning is
//! done; an eject the BMC refuses is logged and does not fail cleaning; a step that asks
//! for a reboot boots the ISO again; a deploy ejects it once the node boots from its disk. The test plays the ramdisk (lookup, heartbeats)
//! and a scripted agent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferric_conductor::bmc::fake::{FakeDriver, FaultKind, Op};
use ferric_conductor::bmc::{BootDevice, BootMode, DriverRegistry, PowerState};
use ferric_conductor::config::ConductorConfig;
use ferric_conductor::service;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const MAC: &str = "52:54:00:7e:11:01";
const STEP: Duration = Duration::from_secs(30);

/// An agent with no clean steps whose `write_image` succeeds at once; `power_off` powers
/// the fake machine off, as the real agent's exit would.
#[derive(Default)]
struct Agent {
    commands: Mutex<Vec<Value>>,
    driver: std::sync::OnceLock<Arc<FakeDriver>>,
    node: std::sync::OnceLock<String>,
}

async fn agent_command(
    axum::extract::State(agent): axum::extract::State<Arc<Agent>>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    let versions = json!({"generic": "1.0"});
    let result = match name.as_str() {
        // One step, run only when asked for (priority 0), that needs a reboot after it.
        "clean.get_clean_steps" => json!({
            "clean_steps": {"GenericHardwareManager": [
                {"step": "update_firmware", "priority": 0, "interface": "deploy",
                 "reboot_requested": true, "abortable": false}]},
            "hardware_manager_version": versions}),
        "clean.execute_clean_step" => {
            json!({"clean_result": null, "clean_step": body["params"]["step"]})
        }
        "deploy.get_deploy_steps" => json!({
            "deploy_steps": {"GenericHardwareManager": [
                {"step": "write_image", "priority": 0, "interface": "deploy"}]},
            "hardware_manager_version": versions}),
        "deploy.execute_deploy_step" => {
            json!({"deploy_result": null, "deploy_step": body["params"]["step"]})
        }
        "standby.get_partition_uuids" => json!({"root uuid": "0x1234abcd"}),
        "standby.power_off" => {
            if let (Some(driver), Some(node)) = (agent.driver.get(), agent.node.get()) {
                driver.os_powered_off(node);
            }
            Value::Null
        }
        _ => Value::Null,
    };
    let short = name.split_once('.').map_or(name.as_str(), |(_, c)| c).to_owned();
    let mut commands = agent.commands.lock().unwrap();
    let entry = json!({"id": format!("cmd-{}", commands.len()), "command_name": short,
        "command_status": "SUCCEEDED", "command_error": null, "command_result": result});
    commands.push(entry.clone());
    if short.starts_with("execute_") {
        // Asynchronous, as the real agent: the outcome shows in the command list.
        let mut running = entry;
        running["command_status"] = json!("RUNNING");
        running["command_result"] = Value::Null;
        return axum::Json(running);
    }
    axum::Json(entry)
}

async fn agent_list(
    axum::extract::State(agent): axum::extract::State<Arc<Agent>>,
) -> axum::Json<Value> {
    axum::Json(json!({"commands": *agent.commands.lock().unwrap()}))
}

struct Lab {
    url: String,
    http: reqwest::Client,
    driver: Arc<FakeDriver>,
    agent: Arc<Agent>,
    agent_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _data: tempfile::TempDir,
}

impl Lab {
    async fn start() -> Lab {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let driver = Arc::new(FakeDriver::new());
        let mut drivers = DriverRegistry::new();
        drivers.register(driver.clone());

        let agent = Arc::new(Agent::default());
        let _ = agent.driver.set(driver.clone());
        let agent_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent_url = format!("http://{}", agent_listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/v1/commands/", axum::routing::post(agent_command).get(agent_list))
            .with_state(agent.clone());
        tokio::spawn(async move { axum::serve(agent_listener, app).await.unwrap() });

        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join("images")).unwrap();
        std::fs::write(data.path().join("images/ferric-deploy.iso"), b"an ISO").unwrap();
        std::fs::write(data.path().join("images/disk.img"), b"not really a disk").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = ConductorConfig {
            data_dir: data.path().to_owned(),
            listen: addr,
            ..Default::default()
        };
        config.conductor.name = "vmedia-conductor".into();
        config.bmc.retries = 0;
        config.agent.post_deploy_get_power_state_retries = 10;
        config.agent.post_deploy_get_power_state_retry_interval = 1;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            service::run_on(config, listener, drivers, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Lab {
            url: format!("http://{addr}"),
            http: reqwest::Client::new(),
            driver,
            agent,
            agent_url,
            stop: Some(stop),
            task,
            _data: data,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("X-OpenStack-Ironic-API-Version", "1.110")
            .timeout(Duration::from_secs(20));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn provision(&self, uuid: &str, target: &str) {
        let path = format!("/v1/nodes/{uuid}/states/provision");
        let (status, reply) =
            self.call(reqwest::Method::PUT, &path, Some(json!({"target": target}))).await;
        assert_eq!(status, 202, "{target}: {reply}");
    }

    /// Polls until the node is in `state` with no lock held; while it waits for its
    /// agent, plays the ramdisk: one lookup per boot, then heartbeats.
    async fn drive_to(&self, uuid: &str, state: &str) -> Value {
        let deadline = Instant::now() + STEP;
        let mut token: Option<String> = None;
        let mut booted = 0;
        loop {
            let (_, node) =
                self.call(reqwest::Method::GET, &format!("/v1/nodes/{uuid}"), None).await;
            if node["provision_state"] == state && node["reservation"].is_null() {
                return node;
            }
            assert!(Instant::now() < deadline, "never reached {state}: {node:#}");
            if node["provision_state"] == "clean wait"
                || node["provision_state"] == "wait call-back"
            {
                // Each insert of the ISO is a new boot of the ramdisk, which looks up anew.
                let boots =
                    self.driver.node(uuid).map_or(0, |n| n.calls_of(Op::BootFromVirtualMedia));
                if boots != booted {
                    booted = boots;
                    token = None;
                    // A freshly booted agent has run no command yet.
                    self.agent.commands.lock().unwrap().clear();
                }
                match &token {
                    None => {
                        let path = format!("/v1/lookup?addresses={MAC}");
                        let (status, reply) = self.call(reqwest::Method::GET, &path, None).await;
                        if status == 200 {
                            token = reply["config"]["agent_token"].as_str().map(str::to_owned);
                        }
                    }
                    Some(token) => {
                        let body = json!({"callback_url": self.agent_url, "agent_token": token,
                            "agent_version": "13.0.0"});
                        let path = format!("/v1/heartbeat/{uuid}");
                        self.call(reqwest::Method::POST, &path, Some(body)).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleaning_boots_the_deploy_iso_over_virtual_media_and_ejects_it() {
    let lab = Lab::start().await;
    let (status, node) = lab
        .call(
            reqwest::Method::POST,
            "/v1/nodes",
            Some(json!({"driver": "fake-hardware", "name": "vm-1",
                "boot_interface": "redfish-virtual-media",
                "driver_info": {"deploy_iso": "ferric-deploy.iso"},
                "properties": {"capabilities": "boot_mode:bios"}})),
        )
        .await;
    assert_eq!(status, 201, "{node}");
    let uuid = node["uuid"].as_str().unwrap().to_owned();
    let _ = lab.agent.node.set(uuid.clone());
    let (status, port) = lab
        .call(reqwest::Method::POST, "/v1/ports", Some(json!({"node_uuid": uuid, "address": MAC})))
        .await;
    assert_eq!(status, 201, "{port}");
    lab.provision(&uuid, "manage").await;
    lab.drive_to(&uuid, "manageable").await;

    lab.provision(&uuid, "provide").await;
    let deadline = Instant::now() + STEP;
    let waiting = loop {
        let (_, node) = lab.call(reqwest::Method::GET, &format!("/v1/nodes/{uuid}"), None).await;
        if node["provision_state"] == "clean wait" {
            break node;
        }
        assert!(Instant::now() < deadline, "never waited for the agent: {node:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(waiting["driver_internal_info"]["boot_device"], json!("cdrom"));
    let bmc = lab.driver.node(&uuid).unwrap();
    let iso_url = format!("{}/images/ferric-deploy.iso", lab.url);
    assert_eq!(bmc.virtual_media.as_deref(), Some(iso_url.as_str()));
    assert_eq!(bmc.booted_from, Some(BootDevice::Cdrom), "the ramdisk came from the CD");
    assert_eq!(bmc.boot_mode, Some(BootMode::Bios));
    assert_eq!(bmc.power, PowerState::On);
    assert_eq!(bmc.calls_of(Op::BootFromVirtualMedia), 1);
    // The conductor serves the ISO it inserted.
    let iso = lab.http.get(&iso_url).send().await.unwrap();
    assert_eq!(iso.status().as_u16(), 200);
    assert_eq!(iso.bytes().await.unwrap().as_ref(), b"an ISO");

    lab.drive_to(&uuid, "available").await;
    let bmc = lab.driver.node(&uuid).unwrap();
    assert_eq!(bmc.virtual_media, None, "the ISO stayed in after cleaning");
    assert_eq!(bmc.power, PowerState::Off);
    assert_eq!(bmc.calls_of(Op::SetBootDevice), 0, "no PXE boot was set");

    // A BMC that refuses to eject does not fail cleaning.
    lab.provision(&uuid, "manage").await;
    lab.drive_to(&uuid, "manageable").await;
    lab.driver.inject(&uuid, Op::EjectVirtualMedia, FaultKind::Protocol, 100);
    lab.provision(&uuid, "provide").await;
    let node = lab.drive_to(&uuid, "available").await;
    assert!(node["last_error"].is_null(), "{node:#}");
    let bmc = lab.driver.node(&uuid).unwrap();
    assert!(bmc.calls_of(Op::EjectVirtualMedia) >= 2, "{bmc:?}");
    assert_eq!(bmc.virtual_media.as_deref(), Some(iso_url.as_str()));
    assert_eq!(bmc.power, PowerState::Off);

    // A clean step that asks for a reboot: the node reboots into the ISO again, and the
    // ISO is ejected when cleaning is over.
    lab.driver.clear_faults(&uuid);
    lab.provision(&uuid, "manage").await;
    lab.drive_to(&uuid, "manageable").await;
    let inserts = lab.driver.node(&uuid).unwrap().calls_of(Op::BootFromVirtualMedia);
    let path = format!("/v1/nodes/{uuid}/states/provision");
    let body = json!({"target": "clean",
        "clean_steps": [{"interface": "deploy", "step": "update_firmware"}]});
    let (status, reply) = lab.call(reqwest::Method::PUT, &path, Some(body)).await;
    assert_eq!(status, 202, "{reply}");
    let node = lab.drive_to(&uuid, "manageable").await;
    assert!(node["last_error"].is_null(), "{node:#}");
    let bmc = lab.driver.node(&uuid).unwrap();
    assert_eq!(bmc.calls_of(Op::BootFromVirtualMedia), inserts + 2, "boot and step reboot");
    assert_eq!(bmc.calls_of(Op::SetBootDevice), 0, "no PXE boot was set");
    assert_eq!(bmc.virtual_media, None);
    assert_eq!(bmc.power, PowerState::Off);
    lab.provision(&uuid, "provide").await;
    lab.drive_to(&uuid, "available").await;

    // Deploying boots the ISO again; once the image is written the node boots from its
    // disk and the ISO is ejected.
    let checksum = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let (status, reply) = lab
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/nodes/{uuid}"),
            Some(json!([
                {"op": "add", "path": "/instance_info/image_source", "value": "disk.img"},
                {"op": "add", "path": "/instance_info/image_checksum", "value": checksum}])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let inserts = lab.driver.node(&uuid).unwrap().calls_of(Op::BootFromVirtualMedia);
    lab.provision(&uuid, "active").await;
    let node = lab.drive_to(&uuid, "active").await;
    assert!(node["last_error"].is_null(), "{node:#}");
    let bmc = lab.driver.node(&uuid).unwrap();
    assert_eq!(bmc.calls_of(Op::BootFromVirtualMedia), inserts + 1);
    assert_eq!(bmc.virtual_media, None, "the ISO stayed in after the deploy");
    assert_eq!(bmc.persistent_device, BootDevice::Disk);
    assert_eq!(bmc.booted_from, Some(BootDevice::Disk));
    assert_eq!(bmc.power, PowerState::On);
    lab.stop().await;
}
