//! The conductor's step orchestration against a scripted ramdisk: steps that ask for a
//! reboot, aborting cleaning while a step runs, and transient BMC failures inside flows.
//!
//! The fake BMC's power hook plays the machine. Every PXE power on "boots" a new scripted
//! agent: an HTTP command API on a fresh port of 127.0.0.1 and a task that looks the node
//! up (taking the token the lookup issues) and then heartbeats every 150 ms. A power off
//! stops that boot, so a rebooted node comes back with a new URL that must look up again.
//! The agent answers commands from a script: the steps it offers, and which step keeps
//! running until the test releases it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use ferric_conductor::bmc::fake::{FakeDriver, FaultKind, Op, PowerHook};
use ferric_conductor::bmc::{BootDevice, PowerState};
use ferric_conductor::config::ConductorConfig;
use ferric_tests::conductor::InProcessConductor;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// Longest any single flow step may take.
const STEP: Duration = Duration::from_secs(30);
const MAC: &str = "52:54:00:12:34:56";
const HEARTBEAT_EVERY: Duration = Duration::from_millis(150);

/// One boot of the scripted ramdisk.
struct Boot {
    number: usize,
    commands: Mutex<Vec<Value>>,
    token: Mutex<Option<String>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Boot {
    fn token(&self) -> Option<String> {
        self.token.lock().unwrap().clone()
    }
}

/// The machine behind the fake BMC, and the script its agents follow.
#[derive(Default)]
struct Ramdisk {
    me: OnceLock<Weak<Ramdisk>>,
    conductor: OnceLock<String>,
    driver: OnceLock<Weak<FakeDriver>>,
    node: OnceLock<String>,
    /// Clean and deploy steps the agents offer (step dicts as IPA sends them).
    clean_steps: Mutex<Vec<Value>>,
    deploy_steps: Mutex<Vec<Value>>,
    /// Steps that keep running until [`Ramdisk::release`].
    held: Mutex<BTreeSet<String>>,
    current: Mutex<Option<Arc<Boot>>>,
    boots: AtomicUsize,
    /// `(boot, command, params)` of every command received.
    received: Mutex<Vec<(usize, String, Value)>>,
    /// `(boot, lookup reply)` of every successful lookup.
    lookups: Mutex<Vec<(usize, Value)>>,
    /// Commands refused for a wrong or missing token.
    refused: AtomicUsize,
}

impl Ramdisk {
    fn new() -> Arc<Ramdisk> {
        let ramdisk = Arc::new(Ramdisk::default());
        let _ = ramdisk.me.set(Arc::downgrade(&ramdisk));
        ramdisk
    }

    fn offer_clean(&self, steps: Value) {
        *self.clean_steps.lock().unwrap() = steps.as_array().cloned().unwrap_or_default();
    }

    fn offer_deploy(&self, steps: Value) {
        *self.deploy_steps.lock().unwrap() = steps.as_array().cloned().unwrap_or_default();
    }

    fn hold(&self, step: &str) {
        self.held.lock().unwrap().insert(step.to_owned());
    }

    fn release(&self, step: &str) {
        self.held.lock().unwrap().remove(step);
    }

    fn is_held(&self, step: &str) -> bool {
        self.held.lock().unwrap().contains(step)
    }

    /// `(boot, step name)` of every step execution received, in order.
    fn executed(&self) -> Vec<(usize, String)> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, name, _)| name.ends_with("_step") && name.contains("execute_"))
            .map(|(boot, _, params)| {
                (*boot, params["step"]["step"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    }

    fn command_names(&self) -> Vec<String> {
        self.received.lock().unwrap().iter().map(|(_, n, _)| n.clone()).collect()
    }

    fn boot(&self) {
        let Some(me) = self.me.get().and_then(Weak::upgrade) else { return };
        let number = self.boots.fetch_add(1, Ordering::SeqCst) + 1;
        let boot = Arc::new(Boot {
            number,
            commands: Mutex::new(Vec::new()),
            token: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let app = axum::Router::new()
            .route("/v1/commands/", axum::routing::post(command).get(list))
            .with_state((me.clone(), boot.clone()));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let life = tokio::spawn(live(me, boot.clone(), url));
        boot.tasks.lock().unwrap().extend([server, life]);
        let old = self.current.lock().unwrap().replace(boot);
        halt(old);
    }

    fn power_off(&self) {
        let old = self.current.lock().unwrap().take();
        halt(old);
    }

    fn running_boot(&self) -> Option<Arc<Boot>> {
        self.current.lock().unwrap().clone()
    }

    /// Answers a command at once: `(status, result)`.
    fn answer(&self, boot: &Boot, name: &str, params: &Value) -> (&'static str, Value) {
        let versions = json!({"scripted_hardware_manager": "1.0"});
        match name {
            "clean.get_clean_steps" => (
                "SUCCEEDED",
                json!({"clean_steps": {"ScriptedHardwareManager": *self.clean_steps.lock().unwrap()},
                       "hardware_manager_version": versions}),
            ),
            "deploy.get_deploy_steps" => (
                "SUCCEEDED",
                json!({"deploy_steps": {"ScriptedHardwareManager": *self.deploy_steps.lock().unwrap()},
                       "hardware_manager_version": versions}),
            ),
            "standby.get_partition_uuids" => {
                ("SUCCEEDED", json!({"root uuid": format!("root-of-boot-{}", boot.number)}))
            }
            "standby.power_off" => {
                let driver = self.driver.get().and_then(Weak::upgrade);
                let node = self.node.get().cloned();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let (Some(driver), Some(node)) = (driver, node) {
                        driver.os_powered_off(&node);
                    }
                });
                ("SUCCEEDED", Value::Null)
            }
            other => ("FAILED", json!({"unexpected": other, "params": params})),
        }
    }
}

fn halt(boot: Option<Arc<Boot>>) {
    if let Some(boot) = boot {
        for task in boot.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

#[async_trait::async_trait]
impl PowerHook for Ramdisk {
    fn powered(&self, node: &str, state: PowerState) {
        match state {
            PowerState::Off => self.power_off(),
            PowerState::On => {
                let driver = self.driver.get().and_then(Weak::upgrade);
                let booted = driver.and_then(|d| d.node(node)).and_then(|n| n.booted_from);
                if booted == Some(BootDevice::Pxe) {
                    self.boot();
                }
            }
        }
    }
}

/// The agent's life after boot: look up until a token comes, then heartbeat.
async fn live(ramdisk: Arc<Ramdisk>, boot: Arc<Boot>, callback_url: String) {
    let http = reqwest::Client::new();
    let Some(conductor) = ramdisk.conductor.get().cloned() else { return };
    let Some(node) = ramdisk.node.get().cloned() else { return };
    loop {
        let reply = http
            .get(format!("{conductor}/v1/lookup?addresses={MAC}"))
            .header("X-OpenStack-Ironic-API-Version", "1.68")
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Ok(reply) = reply {
            if reply.status().as_u16() == 200 {
                let body: Value = reply.json().await.unwrap_or(Value::Null);
                let token = body["config"]["agent_token"].as_str().unwrap_or_default();
                // As IPA: a masked token on a fresh boot is no token at all.
                if token.len() >= 32 && token != "******" {
                    *boot.token.lock().unwrap() = Some(token.to_owned());
                    ramdisk.lookups.lock().unwrap().push((boot.number, body));
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let body = json!({"callback_url": callback_url, "agent_token": boot.token(),
                          "agent_version": "13.0.0"});
        let _ = http
            .post(format!("{conductor}/v1/heartbeat/{node}"))
            .header("X-OpenStack-Ironic-API-Version", "1.68")
            .timeout(Duration::from_secs(5))
            .json(&body)
            .send()
            .await;
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
}

type AgentState = (Arc<Ramdisk>, Arc<Boot>);

fn token_ok(boot: &Boot, query: &std::collections::HashMap<String, String>) -> bool {
    boot.token().is_some_and(|t| query.get("agent_token") == Some(&t))
}

async fn list(
    axum::extract::State((ramdisk, boot)): axum::extract::State<AgentState>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    if !token_ok(&boot, &query) {
        ramdisk.refused.fetch_add(1, Ordering::SeqCst);
        return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({"faultstring": "token"})));
    }
    let commands = boot.commands.lock().unwrap().clone();
    (axum::http::StatusCode::OK, axum::Json(json!({"commands": commands})))
}

async fn command(
    axum::extract::State((ramdisk, boot)): axum::extract::State<AgentState>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
    axum::Json(body): axum::Json<Value>,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    if !token_ok(&boot, &query) {
        ramdisk.refused.fetch_add(1, Ordering::SeqCst);
        return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({"faultstring": "token"})));
    }
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    let params = body["params"].clone();
    ramdisk.received.lock().unwrap().push((boot.number, name.clone(), params.clone()));
    let short = name.split_once('.').map_or(name.as_str(), |(_, c)| c).to_owned();
    let id = format!("boot{}-cmd{}", boot.number, boot.commands.lock().unwrap().len());
    if let Some(kind) = short.strip_prefix("execute_").and_then(|k| k.strip_suffix("_step")) {
        // Asynchronous, as IPA: RUNNING now, the outcome later in the list.
        let entry = json!({"id": id, "command_name": short, "command_status": "RUNNING",
                           "command_error": null, "command_result": null});
        let position = {
            let mut commands = boot.commands.lock().unwrap();
            commands.push(entry.clone());
            commands.len() - 1
        };
        let step = params["step"].clone();
        let step_name = step["step"].as_str().unwrap_or_default().to_owned();
        let result =
            json!({format!("{kind}_result"): {"done": true}, format!("{kind}_step"): step});
        let (ramdisk, finishing) = (ramdisk.clone(), boot.clone());
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            while ramdisk.is_held(&step_name) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let mut commands = finishing.commands.lock().unwrap();
            if let Some(entry) = commands.get_mut(position) {
                entry["command_status"] = json!("SUCCEEDED");
                entry["command_result"] = result;
            }
        });
        boot.tasks.lock().unwrap().push(task);
        return (axum::http::StatusCode::OK, axum::Json(entry));
    }
    let (status, result) = ramdisk.answer(&boot, &name, &params);
    let error = if status == "FAILED" {
        json!({"type": "CommandExecutionError", "code": 500,
               "message": "Command execution failed", "details": result.to_string()})
    } else {
        Value::Null
    };
    let entry = json!({"id": id, "command_name": short, "command_status": status,
                       "command_error": error,
                       "command_result": if status == "FAILED" { Value::Null } else { result }});
    boot.commands.lock().unwrap().push(entry.clone());
    (axum::http::StatusCode::OK, axum::Json(entry))
}

/// A conductor, its scripted machine, and one enrolled node with a port.
struct Lab {
    conductor: InProcessConductor,
    ramdisk: Arc<Ramdisk>,
    driver: Arc<FakeDriver>,
    http: reqwest::Client,
    uuid: String,
    _images: tempfile::TempDir,
}

impl Lab {
    async fn start(tweak: impl FnOnce(&mut ConductorConfig)) -> Lab {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ramdisk = Ramdisk::new();
        let images = tempfile::tempdir().unwrap();
        std::fs::write(images.path().join("disk.img"), b"not really a disk").unwrap();
        let image_dir = images.path().to_owned();
        let driver = FakeDriver::builder().hook(ramdisk.clone()).build();
        let conductor = InProcessConductor::start_with_driver(driver, |config| {
            config.conductor.name = "steps-conductor".into();
            config.image_dir = Some(image_dir);
            config.agent.post_deploy_get_power_state_retries = 20;
            config.agent.post_deploy_get_power_state_retry_interval = 1;
            tweak(config);
        })
        .await
        .unwrap();
        let driver = conductor.driver.clone();
        let _ = ramdisk.driver.set(Arc::downgrade(&driver));
        let _ = ramdisk.conductor.set(conductor.url.clone());
        let node = conductor
            .create_node(&json!({"driver": "fake-hardware", "name": "stepper"}))
            .await
            .unwrap();
        let uuid = node["uuid"].as_str().unwrap().to_owned();
        let _ = ramdisk.node.set(uuid.clone());
        let lab =
            Lab { conductor, ramdisk, driver, http: reqwest::Client::new(), uuid, _images: images };
        let (status, port) = lab
            .call(
                reqwest::Method::POST,
                "/v1/ports",
                Some(json!({"node_uuid": lab.uuid, "address": MAC})),
            )
            .await;
        assert_eq!(status, 201, "{port}");
        lab.provision(json!({"target": "manage"})).await;
        lab.wait_state("manageable").await;
        lab
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.conductor.url))
            .header("X-OpenStack-Ironic-API-Version", "1.68")
            .timeout(Duration::from_secs(20));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn node(&self) -> Value {
        let (status, node) =
            self.call(reqwest::Method::GET, &format!("/v1/nodes/{}", self.uuid), None).await;
        assert_eq!(status, 200, "{node}");
        node
    }

    async fn provision(&self, body: Value) {
        let path = format!("/v1/nodes/{}/states/provision", self.uuid);
        let (status, reply) = self.call(reqwest::Method::PUT, &path, Some(body)).await;
        assert_eq!(status, 202, "{reply}");
    }

    /// Asks for an abort, again while a heartbeat being processed holds the node (409),
    /// as a client retries Ironic's NodeLocked.
    async fn abort(&self) {
        let path = format!("/v1/nodes/{}/states/provision", self.uuid);
        let deadline = Instant::now() + STEP;
        loop {
            let (status, reply) =
                self.call(reqwest::Method::PUT, &path, Some(json!({"target": "abort"}))).await;
            if status == 202 {
                return;
            }
            assert!(status == 409 && Instant::now() < deadline, "{status}: {reply}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until `done` holds for the node, with no lock held.
    async fn wait_until(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            let node = self.node().await;
            if done(&node) && node["reservation"].is_null() {
                return node;
            }
            assert!(
                Instant::now() < deadline,
                "never reached {what}: {node:#}\ncommands: {:?}",
                self.ramdisk.command_names()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_state(&self, state: &str) -> Value {
        self.wait_until(state, |n| n["provision_state"] == state).await
    }

    /// Waits until the agent runs `step` (held) and the node shows it as its clean step.
    async fn wait_running(&self, step: &str) -> Value {
        self.wait_until(&format!("{step} running"), |n| {
            n["provision_state"] == "clean wait"
                && n["clean_step"]["step"] == step
                && self.ramdisk.executed().iter().any(|(_, s)| s == step)
        })
        .await
    }

    fn calls(&self, op: Op) -> u64 {
        self.driver.node(&self.uuid).map_or(0, |s| s.calls_of(op))
    }
}

fn no_step(step: &Value) -> bool {
    step.is_null() || step.as_object().is_some_and(|m| m.is_empty())
}

fn step(name: &str, priority: i64, abortable: bool, reboot: bool) -> Value {
    json!({"step": name, "priority": priority, "interface": "deploy",
           "abortable": abortable, "reboot_requested": reboot})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_step_that_asks_for_a_reboot_reboots_and_cleaning_goes_on() {
    let lab = Lab::start(|_| {}).await;
    lab.ramdisk.offer_clean(json!([
        step("update_firmware", 90, true, true),
        step("erase_devices_metadata", 80, true, false),
    ]));
    lab.provide_and_check_reboot().await;
}

impl Lab {
    async fn provide_and_check_reboot(&self) {
        let pxe_before = self.ramdisk.boots.load(Ordering::SeqCst);
        self.provision(json!({"target": "provide"})).await;
        let node = self.wait_state("available").await;
        assert_eq!(node["last_error"], Value::Null, "{node:#}");
        assert_eq!(node["power_state"], "power off", "{node:#}");
        assert!(no_step(&node["clean_step"]), "{node:#}");
        let info = &node["driver_internal_info"];
        assert!(info.get("cleaning_reboot").is_none(), "{node:#}");
        assert!(info.get("clean_steps").is_none(), "{node:#}");

        // The step ran on the first boot, the next step on the boot after the reboot.
        let first = pxe_before + 1;
        assert_eq!(
            self.ramdisk.executed(),
            [
                (first, "update_firmware".to_owned()),
                (first + 1, "erase_devices_metadata".to_owned())
            ]
        );
        assert_eq!(self.ramdisk.boots.load(Ordering::SeqCst), first + 1);
        // The rebooted agent looked up again and was issued a new token (a masked one
        // would have kept it looking up); the node it saw was marked as rebooting.
        let lookups = self.ramdisk.lookups.lock().unwrap().clone();
        let (boot, reply) = lookups.last().unwrap();
        assert_eq!(*boot, first + 1);
        assert_eq!(reply["node"]["driver_internal_info"]["cleaning_reboot"], true, "{reply:#}");
        let before = lookups.iter().find(|(b, _)| *b == first).unwrap();
        assert!(before.1["node"]["driver_internal_info"].get("cleaning_reboot").is_none());
        assert_ne!(before.1["config"]["agent_token"], reply["config"]["agent_token"]);
        // Every command reached the agent with its own boot's token.
        assert_eq!(self.ramdisk.refused.load(Ordering::SeqCst), 0);
        // The steps were fetched once: the plan survives the reboot.
        let gets =
            self.ramdisk.command_names().iter().filter(|n| *n == "clean.get_clean_steps").count();
        assert_eq!(gets, 1, "{:?}", self.ramdisk.command_names());
        let bmc = self.driver.node(&self.uuid).unwrap();
        assert_eq!(bmc.power, PowerState::Off);
        assert_eq!(bmc.booted_from, Some(BootDevice::Pxe), "the reboot went back to the ramdisk");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_the_bmc_refuses_fails_cleaning_with_ironics_message() {
    let lab = Lab::start(|_| {}).await;
    lab.ramdisk.offer_clean(json!([
        step("update_firmware", 90, true, true),
        step("erase_devices_metadata", 80, true, false),
    ]));
    lab.ramdisk.hold("update_firmware");
    lab.provision(json!({"target": "provide"})).await;
    lab.wait_running("update_firmware").await;
    lab.driver.inject(&lab.uuid, Op::SetBootDevice, FaultKind::AuthFailed, 1);
    lab.ramdisk.release("update_firmware");
    let node = lab.wait_state("clean failed").await;
    let last_error = node["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.starts_with("Reboot requested by clean step {")
            && last_error.contains("\"update_firmware\"")
            && last_error.contains(&format!("failed for node {}: ", lab.uuid))
            && last_error.contains("rejected the credentials"),
        "{node:#}"
    );
    let info = &node["driver_internal_info"];
    assert!(info.get("cleaning_reboot").is_none(), "{node:#}");
    assert!(info.get("agent_secret_token").is_none(), "{node:#}");
    let executed: Vec<String> = lab.ramdisk.executed().into_iter().map(|(_, s)| s).collect();
    assert_eq!(executed, ["update_firmware"]);
    lab.wait_until("power off", |n| n["power_state"] == "power off").await;
    assert_eq!(lab.ramdisk.boots.load(Ordering::SeqCst), 1, "no second boot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_step_that_asks_for_a_reboot_reboots_before_the_deploy_finishes() {
    let lab = Lab::start(|config| config.cleaning.automated_clean = false).await;
    lab.ramdisk.offer_deploy(json!([
        {"step": "write_image", "priority": 0, "interface": "deploy", "reboot_requested": true}
    ]));
    lab.provision(json!({"target": "provide"})).await;
    lab.wait_state("available").await;
    let checksum = "c".repeat(64);
    let (status, patched) = lab
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/nodes/{}", lab.uuid),
            Some(json!([
                {"op": "add", "path": "/instance_info/image_source", "value": "disk.img"},
                {"op": "add", "path": "/instance_info/image_checksum", "value": checksum},
            ])),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    lab.provision(json!({"target": "active"})).await;

    let node = lab.wait_state("active").await;
    assert_eq!(node["last_error"], Value::Null, "{node:#}");
    assert_eq!(node["power_state"], "power on", "{node:#}");
    assert!(no_step(&node["deploy_step"]), "{node:#}");
    assert!(node["driver_internal_info"].get("deployment_reboot").is_none(), "{node:#}");
    assert_eq!(lab.ramdisk.executed(), [(1, "write_image".to_owned())], "written once, on boot 1");
    let sent = lab
        .ramdisk
        .received
        .lock()
        .unwrap()
        .iter()
        .find(|(_, n, _)| n == "deploy.execute_deploy_step")
        .map(|(_, _, p)| p.clone())
        .unwrap();
    assert_eq!(sent["step"]["reboot_requested"], true, "{sent:#}");
    // The deploy finished with the agent of the second boot.
    let names: Vec<(usize, String)> =
        lab.ramdisk.received.lock().unwrap().iter().map(|(b, n, _)| (*b, n.clone())).collect();
    assert_eq!(
        names,
        [
            (1, "deploy.get_deploy_steps".to_owned()),
            (1, "deploy.execute_deploy_step".to_owned()),
            (2, "standby.get_partition_uuids".to_owned()),
            (2, "standby.power_off".to_owned()),
        ]
    );
    assert_eq!(node["driver_internal_info"]["root_uuid_or_disk_id"], "root-of-boot-2");
    let bmc = lab.driver.node(&lab.uuid).unwrap();
    assert_eq!(bmc.persistent_device, BootDevice::Disk);
    assert_eq!(bmc.booted_from, Some(BootDevice::Disk));
    assert_eq!(lab.ramdisk.boots.load(Ordering::SeqCst), 2);
    assert!(lab.ramdisk.running_boot().is_none(), "the ramdisk still runs after the deploy");
    // The agent of the second boot found the node marked as rebooting after its step.
    let lookups = lab.ramdisk.lookups.lock().unwrap().clone();
    assert_eq!(lookups.len(), 2);
    assert!(lookups[0].1["node"]["driver_internal_info"].get("deployment_reboot").is_none());
    assert_eq!(lookups[1].1["node"]["driver_internal_info"]["deployment_reboot"], true);
    assert_ne!(lookups[0].1["config"]["agent_token"], lookups[1].1["config"]["agent_token"]);
    assert_eq!(lab.ramdisk.refused.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_waits_for_a_step_that_cannot_be_aborted() {
    let lab = Lab::start(|_| {}).await;
    let uuid = lab.uuid.clone();

    // A non-abortable step runs and another follows: the abort is accepted, marked on
    // the step, and carried out once the step is done; the next step never runs.
    lab.ramdisk.offer_clean(json!([
        step("slow_erase", 90, false, false),
        step("tidy_up", 50, true, false),
    ]));
    lab.ramdisk.hold("slow_erase");
    lab.provision(json!({"target": "provide"})).await;
    lab.wait_running("slow_erase").await;
    lab.abort().await;
    let node = lab.node().await;
    assert_eq!(node["provision_state"], "clean wait", "{node:#}");
    assert_eq!(node["clean_step"]["abort_after"], true, "{node:#}");
    assert_eq!(node["clean_step"]["step"], "slow_erase", "{node:#}");
    // A second abort changes nothing.
    lab.abort().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let node = lab.node().await;
    assert_eq!(node["provision_state"], "clean wait", "heartbeats went on: {node:#}");
    assert_eq!(node["last_error"], Value::Null, "{node:#}");
    lab.ramdisk.release("slow_erase");
    let node = lab.wait_state("clean failed").await;
    assert_eq!(
        node["last_error"],
        "By request, the clean operation was aborted during or after the completion of step \
         \"deploy.slow_erase\"",
        "{node:#}"
    );
    assert!(no_step(&node["clean_step"]), "{node:#}");
    assert_eq!(node["target_provision_state"], "available", "{node:#}");
    let executed: Vec<String> = lab.ramdisk.executed().into_iter().map(|(_, s)| s).collect();
    assert_eq!(executed, ["slow_erase"]);
    lab.wait_until("power off", |n| n["power_state"] == "power off").await;

    // An abortable step is aborted at once, while it still runs.
    lab.provision(json!({"target": "manage"})).await;
    lab.wait_state("manageable").await;
    lab.ramdisk.offer_clean(json!([step("long_wipe", 90, true, false)]));
    lab.ramdisk.hold("long_wipe");
    lab.provision(json!({"target": "provide"})).await;
    lab.wait_running("long_wipe").await;
    lab.abort().await;
    // The state changes with the request; the abort task then forgets the step.
    let node = lab
        .wait_until("the aborted step forgotten", |n| {
            n["provision_state"] == "clean failed" && no_step(&n["clean_step"])
        })
        .await;
    assert_eq!(node["last_error"], "Aborted by request while in \"clean wait\".", "{node:#}");
    assert!(lab.ramdisk.is_held("long_wipe"), "the step was still running");
    lab.ramdisk.release("long_wipe");
    lab.wait_until("power off", |n| n["power_state"] == "power off").await;

    // A non-abortable last step: nothing is left to skip, so cleaning completes.
    lab.provision(json!({"target": "manage"})).await;
    lab.wait_state("manageable").await;
    lab.ramdisk.offer_clean(json!([
        step("tidy_up", 90, true, false),
        step("slow_erase", 50, false, false),
    ]));
    lab.ramdisk.hold("slow_erase");
    lab.provision(json!({"target": "provide"})).await;
    lab.wait_running("slow_erase").await;
    lab.abort().await;
    assert_eq!(lab.node().await["clean_step"]["abort_after"], true);
    lab.ramdisk.release("slow_erase");
    let node = lab.wait_state("available").await;
    assert_eq!(node["last_error"], Value::Null, "{node:#}");
    let executed: Vec<String> = lab.ramdisk.executed().into_iter().map(|(_, s)| s).collect();
    assert_eq!(executed[executed.len() - 2..], ["tidy_up", "slow_erase"]);
    assert_eq!(lab.node().await["uuid"], uuid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_bmc_failures_inside_flows_are_retried_lasting_ones_are_not() {
    let lab = Lab::start(|config| {
        config.bmc.retries = 2;
        config.bmc.retry_interval = 0;
    })
    .await;
    lab.ramdisk.offer_clean(json!([step("erase_devices_metadata", 99, true, false)]));
    let node = lab.uuid.clone();

    // Two misses of each call are absorbed: cleaning completes.
    let (boot_calls, power_calls) = (lab.calls(Op::SetBootDevice), lab.calls(Op::SetPower));
    lab.driver.inject(&node, Op::SetBootDevice, FaultKind::Unreachable, 2);
    lab.driver.inject(&node, Op::SetPower, FaultKind::Timeout, 2);
    lab.provision(json!({"target": "provide"})).await;
    let done = lab.wait_state("available").await;
    assert_eq!(done["last_error"], Value::Null, "{done:#}");
    // One boot device setting in three tries; power on in three tries, power off in one.
    assert_eq!(lab.calls(Op::SetBootDevice), boot_calls + 3);
    assert_eq!(lab.calls(Op::SetPower), power_calls + 4);
    assert_eq!(lab.ramdisk.executed().len(), 1);

    // Rejected credentials are not retried: the flow fails at once.
    lab.provision(json!({"target": "manage"})).await;
    lab.wait_state("manageable").await;
    let boot_calls = lab.calls(Op::SetBootDevice);
    lab.driver.inject(&node, Op::SetBootDevice, FaultKind::AuthFailed, 1);
    lab.provision(json!({"target": "provide"})).await;
    let failed = lab.wait_state("clean failed").await;
    let last_error = failed["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.starts_with(&format!("Failed to prepare node {node} for cleaning: "))
            && last_error.contains("rejected the credentials"),
        "{failed:#}"
    );
    assert_eq!(lab.calls(Op::SetBootDevice), boot_calls + 1);

    // An unreachable BMC that stays unreachable fails the flow after the retries.
    lab.provision(json!({"target": "manage"})).await;
    lab.wait_state("manageable").await;
    let power_calls = lab.calls(Op::SetPower);
    lab.driver.inject(&node, Op::SetPower, FaultKind::Unreachable, 100);
    lab.provision(json!({"target": "provide"})).await;
    let failed = lab.wait_state("clean failed").await;
    let last_error = failed["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("is unreachable"), "{failed:#}");
    // Three tries to power on, then three to power off on the failure path.
    lab.wait_until("the power off attempts", |_| lab.calls(Op::SetPower) >= power_calls + 6).await;
    assert_eq!(lab.calls(Op::SetPower), power_calls + 6);
    lab.driver.clear_faults(&node);
    assert_eq!(lab.ramdisk.executed().len(), 1, "no step ran in the failed flows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_band_steps_run_through_the_bmc_between_agent_steps() {
    let lab = Lab::start(|_| {}).await;
    let node = lab.uuid.clone();
    lab.ramdisk.offer_clean(json!([step("erase_devices_metadata", 99, true, false)]));
    let clean = |steps: Value| json!({"target": "clean", "clean_steps": steps});

    lab.provision(clean(json!([
        {"interface": "management", "step": "set_secure_boot", "args": {"enable": true}},
        {"interface": "deploy", "step": "erase_devices_metadata"},
        {"interface": "management", "step": "reset_bios_to_default"},
    ])))
    .await;
    let done = lab.wait_state("manageable").await;
    assert_eq!(done["last_error"], Value::Null, "{done:#}");
    let bmc = lab.driver.node(&node).unwrap();
    assert_eq!((bmc.secure_boot, bmc.bios_resets), (Some(true), 1));
    // The agent ran its own step only; it never heard of the BMC's.
    let executed: Vec<String> = lab.ramdisk.executed().into_iter().map(|(_, s)| s).collect();
    assert_eq!(executed, ["erase_devices_metadata"]);

    // A step the BMC refuses fails cleaning with the BMC's words.
    lab.driver.inject(&node, Op::CleanStep, FaultKind::Unsupported, 1);
    lab.provision(clean(json!([
        {"interface": "management", "step": "set_secure_boot", "args": {"enable": false}},
    ])))
    .await;
    let failed = lab.wait_state("clean failed").await;
    let last_error = failed["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.starts_with(&format!("Node {node} failed step "))
            && last_error.contains("set_secure_boot")
            && last_error.contains("not supported"),
        "{failed:#}"
    );
    assert_eq!(lab.driver.node(&node).unwrap().secure_boot, Some(true), "unchanged");

    // Arguments are checked before anything runs.
    lab.provision(json!({"target": "manage"})).await;
    lab.wait_state("manageable").await;
    let resets = lab.driver.node(&node).unwrap().bios_resets;
    lab.provision(clean(json!([
        {"interface": "management", "step": "reset_bios_to_default"},
        {"interface": "management", "step": "set_secure_boot", "args": {"enable": "maybe"}},
    ])))
    .await;
    let failed = lab.wait_state("clean failed").await;
    assert_eq!(
        failed["last_error"],
        format!(
            "Cannot clean node {node}: clean step management.set_secure_boot: argument enable \
             must be a boolean, not \"maybe\""
        ),
        "{failed:#}"
    );
    assert_eq!(lab.driver.node(&node).unwrap().bios_resets, resets, "nothing ran");
}
