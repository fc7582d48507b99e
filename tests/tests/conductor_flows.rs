//! The conductor (in-process, `service::run_on`) driving the REAL `ferric-agent` binary
//! through whole provisioning flows. The fake BMC's power hook plays the machine: a PXE
//! power on starts the agent process on a fixture host tree whose NIC is the node's port,
//! a power off kills it (by PID), and an agent that exits by itself (after
//! `standby.power_off`) powers the fake machine off.
//!
//! Every wait has a deadline; a failing wait prints the node and every agent's log.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use ferric_agent::fixtures::{self, DiskSpec};
use ferric_conductor::bmc::fake::{FakeDriver, PowerHook};
use ferric_conductor::bmc::{BootDevice, DriverRegistry, PowerState};
use ferric_conductor::config::ConductorConfig;
use ferric_conductor::service;
use ferric_tests::agent_process::{agent_binary, AgentArgs, AgentProcess};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// Longest any single flow step may take (agent start, heartbeats every 3–6 s).
const STEP: Duration = Duration::from_secs(45);

/// The fixture machine's only disk: sparse, and large enough for the no-hints rule
/// (smallest disk of at least 4 GiB).
const DISK_BYTES: u64 = 8 << 30;
/// The deployed image: small, so a deploy is quick.
const IMAGE_BYTES: usize = 4 << 20;
/// The GPT disk GUID given to the image, which the conductor must learn as
/// `root_uuid_or_disk_id`.
const IMAGE_DISK_GUID: &str = "5f3c2b1a-0d9e-4c8b-a7f6-e5d4c3b2a190";

/// A whole-disk raw image in the conductor's image directory.
struct Image {
    bytes: Vec<u8>,
    sha256: String,
}

/// Writes `name` into `image_dir`: every 512-byte sector carries its own number in text
/// (so a misplaced sector shows), under a GPT with one partition made by `sgdisk`.
fn make_image(image_dir: &std::path::Path, name: &str) -> Image {
    std::fs::create_dir_all(image_dir).unwrap();
    let path = image_dir.join(name);
    let mut bytes = Vec::with_capacity(IMAGE_BYTES);
    for sector in 0..IMAGE_BYTES / 512 {
        let label = format!("ferric image sector {sector:08}\n");
        bytes.extend(label.as_bytes().iter().cycle().take(512));
    }
    std::fs::write(&path, &bytes).unwrap();
    let status = std::process::Command::new("sgdisk")
        .args(["-o", "-n", "1:2048:6143", "-t", "1:8300", "-U", IMAGE_DISK_GUID])
        .arg(&path)
        .output()
        .expect("sgdisk (package gdisk) must be installed");
    assert!(status.status.success(), "sgdisk: {}", String::from_utf8_lossy(&status.stderr));
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), IMAGE_BYTES);
    assert_eq!(&bytes[512..520], b"EFI PART", "sgdisk wrote no GPT");
    let out = std::process::Command::new("sha256sum").arg(&path).output().unwrap();
    let sha256 = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned();
    assert_eq!(sha256.len(), 64, "{sha256}");
    Image { bytes, sha256 }
}

/// The machine behind the fake BMC: one agent process at a time.
struct Machine {
    binary: PathBuf,
    tree: PathBuf,
    api_url: OnceLock<String>,
    driver: OnceLock<Weak<FakeDriver>>,
    /// Whether a PXE power on starts the agent (off: the ramdisk "never comes up").
    boot_agent: AtomicBool,
    running: Mutex<Option<AgentProcess>>,
    /// Logs of agents that are gone, oldest first.
    logs: Mutex<Vec<String>>,
    boots: AtomicUsize,
}

impl Machine {
    fn start_agent(&self) {
        let Some(url) = self.api_url.get() else { return };
        let args = AgentArgs::new(url.as_str(), &self.tree);
        match AgentProcess::spawn(&self.binary, &args) {
            Ok(agent) => {
                self.boots.fetch_add(1, Ordering::SeqCst);
                let old = self.running.lock().unwrap().replace(agent);
                self.retire(old);
            }
            Err(e) => self.logs.lock().unwrap().push(format!("<agent did not start: {e:#}>")),
        }
    }

    fn stop_agent(&self) {
        let old = self.running.lock().unwrap().take();
        self.retire(old);
    }

    fn retire(&self, agent: Option<AgentProcess>) {
        if let Some(mut agent) = agent {
            agent.kill();
            self.logs.lock().unwrap().push(format!("pid {}:\n{}", agent.pid(), agent.log()));
        }
    }

    fn agent_running(&self) -> bool {
        let mut running = self.running.lock().unwrap();
        running.as_mut().is_some_and(|a| matches!(a.try_exit(), Ok(None)))
    }

    /// Every agent's log, for failure messages.
    fn all_logs(&self) -> String {
        let mut text = self.logs.lock().unwrap().join("\n---\n");
        if let Some(agent) = self.running.lock().unwrap().as_ref() {
            text.push_str(&format!("\n--- running pid {}:\n{}", agent.pid(), agent.log()));
        }
        text
    }

    /// Turns an agent that exited by itself into a powered-off machine.
    async fn watch(self: Arc<Self>, node: String) {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let exited = {
                let mut running = self.running.lock().unwrap();
                running.as_mut().is_some_and(|a| matches!(a.try_exit(), Ok(Some(_))))
            };
            if exited {
                match self.driver.get().and_then(Weak::upgrade) {
                    Some(driver) => driver.os_powered_off(&node),
                    None => return,
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl PowerHook for Machine {
    fn powered(&self, node: &str, state: PowerState) {
        match state {
            PowerState::Off => self.stop_agent(),
            PowerState::On => {
                let driver = self.driver.get().and_then(Weak::upgrade);
                let booted = driver.and_then(|d| d.node(node)).and_then(|n| n.booted_from);
                if booted == Some(BootDevice::Pxe) && self.boot_agent.load(Ordering::SeqCst) {
                    self.start_agent();
                }
            }
        }
    }

    async fn shutdown_os(&self, _node: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.agent_running() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }
}

struct Lab {
    url: String,
    http: reqwest::Client,
    machine: Arc<Machine>,
    _driver: Arc<FakeDriver>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    image_dir: PathBuf,
}

impl Lab {
    async fn start() -> Lab {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let binary = tokio::task::spawn_blocking(agent_binary).await.unwrap().unwrap();
        let tree = tempfile::tempdir().unwrap();
        let mut host = fixtures::bios_vm();
        host.disks = vec![DiskSpec::virtio("vda", "0000:00:05.0", DISK_BYTES).backing_file()];
        host.build(tree.path()).unwrap();
        let machine = Arc::new(Machine {
            binary,
            tree: tree.path().to_owned(),
            api_url: OnceLock::new(),
            driver: OnceLock::new(),
            boot_agent: AtomicBool::new(true),
            running: Mutex::new(None),
            logs: Mutex::new(Vec::new()),
            boots: AtomicUsize::new(0),
        });
        let driver = Arc::new(FakeDriver::builder().hook(machine.clone()).build());
        let _ = machine.driver.set(Arc::downgrade(&driver));
        let mut drivers = DriverRegistry::new();
        drivers.register(driver.clone());

        let data = tempfile::tempdir().unwrap();
        let image_dir = data.path().join("images");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = ConductorConfig {
            data_dir: data.path().to_owned(),
            listen: addr,
            ..Default::default()
        };
        config.conductor.name = "flow-conductor".into();
        config.agent.heartbeat_timeout = 10;
        config.agent.post_deploy_get_power_state_retries = 3;
        config.agent.post_deploy_get_power_state_retry_interval = 1;
        config.agent.command_timeout = 20;
        // These flows are about provisioning, not erasing: automated cleaning runs no
        // erase step here (tests/tests/conductor_clean.rs covers erasing).
        config.cleaning.erase_devices_priority = Some(0);
        config.cleaning.erase_devices_metadata_priority = Some(0);
        let url = format!("http://{addr}");
        let _ = machine.api_url.set(url.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            service::run_on(config, listener, drivers, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Lab {
            url,
            http: reqwest::Client::new(),
            machine,
            _driver: driver,
            stop: Some(stop),
            task,
            _dirs: (data, tree),
            image_dir,
        }
    }

    /// Puts a fresh image named `name` into the conductor's image directory.
    fn image(&self, name: &str) -> Image {
        make_image(&self.image_dir, name)
    }

    /// Checks that the machine's disk holds `image` at its start: every byte, except
    /// where moving the backup GPT to the end of the larger disk rewrites the tables:
    /// the protective MBR's partition entry (its size now covers the disk) and the
    /// primary GPT header (alternate LBA, last usable LBA, CRC), whose signature and disk
    /// GUID stay, and the old backup header.
    fn assert_disk_holds(&self, image: &Image) {
        use std::io::Read;
        let mut disk = std::fs::File::open(self.machine.tree.join("dev/vda")).unwrap();
        assert_eq!(disk.metadata().unwrap().len(), DISK_BYTES, "the disk changed size");
        let mut head = vec![0u8; image.bytes.len()];
        disk.read_exact(&mut head).unwrap();
        assert_eq!(&head[512..520], b"EFI PART");
        assert_eq!(&head[512 + 56..512 + 72], &image.bytes[512 + 56..512 + 72], "disk GUID");
        assert_eq!(&head[..446], &image.bytes[..446], "boot code of sector 0");
        assert_eq!(&head[510..512], &image.bytes[510..512], "MBR signature");
        assert_eq!(head[446 + 4], 0xee, "protective MBR partition type");
        // The image's own backup GPT header (its last sector) is cleared once the backup
        // lives at the disk's end, so that no stale copy is ever found.
        let last = image.bytes.len() / 512 - 1;
        assert!(head[last * 512..].iter().all(|&b| b == 0), "old backup GPT header left");
        for (sector, (got, want)) in head
            .chunks(512)
            .zip(image.bytes.chunks(512))
            .enumerate()
            .filter(|(i, _)| *i > 1 && *i != last)
        {
            assert!(
                got == want,
                "sector {sector} differs: {:?}",
                String::from_utf8_lossy(&got[..40])
            );
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

    async fn node(&self, uuid: &str) -> Value {
        let (status, node) =
            self.call(reqwest::Method::GET, &format!("/v1/nodes/{uuid}"), None).await;
        assert_eq!(status, 200, "{node}");
        node
    }

    async fn provision(&self, uuid: &str, body: Value) {
        let (status, reply) = self
            .call(reqwest::Method::PUT, &format!("/v1/nodes/{uuid}/states/provision"), Some(body))
            .await;
        assert_eq!(status, 202, "{reply}");
    }

    /// Polls until the node is in `state` with no lock held, then returns it. Panics with
    /// the node and the agents' logs when the deadline passes.
    async fn wait_state(&self, uuid: &str, state: &str) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            let node = self.node(uuid).await;
            if node["provision_state"] == state && node["reservation"].is_null() {
                return node;
            }
            if Instant::now() >= deadline {
                panic!(
                    "node never reached {state:?} within {STEP:?}: {node:#}\n---- agent logs \
                     ----\n{}",
                    self.machine.all_logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until no agent process runs (the machine is off).
    async fn wait_agent_gone(&self) {
        let deadline = Instant::now() + STEP;
        while self.machine.agent_running() {
            assert!(Instant::now() < deadline, "agent still running:\n{}", self.machine.all_logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap();
        self.machine.stop_agent();
    }
}

/// No step running: the API shows `null` or `{}`.
fn no_step(step: &Value) -> bool {
    step.is_null() || step.as_object().is_some_and(|m| m.is_empty())
}

fn fixture_mac() -> String {
    fixtures::bios_vm().nics[0].mac.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provide_deploy_undeploy_clean_and_abort_with_the_real_agent() {
    let lab = Lab::start().await;
    let (status, node) = lab
        .call(
            reqwest::Method::POST,
            "/v1/nodes",
            Some(json!({"driver": "fake-hardware", "name": "flow-1"})),
        )
        .await;
    assert_eq!(status, 201, "{node}");
    let uuid = node["uuid"].as_str().unwrap().to_owned();
    let (status, port) = lab
        .call(
            reqwest::Method::POST,
            "/v1/ports",
            Some(json!({"node_uuid": uuid, "address": fixture_mac()})),
        )
        .await;
    assert_eq!(status, 201, "{port}");
    tokio::spawn(lab.machine.clone().watch(uuid.clone()));

    // manage → manageable; provide → cleaning with the agent (no erase step runs here) →
    // available, powered off.
    lab.provision(&uuid, json!({"target": "manage"})).await;
    lab.wait_state(&uuid, "manageable").await;
    lab.provision(&uuid, json!({"target": "provide"})).await;
    let node = lab.wait_state(&uuid, "available").await;
    assert_eq!(lab.machine.boots.load(Ordering::SeqCst), 1, "one ramdisk boot for cleaning");
    assert_eq!(node["power_state"], "power off", "{node:#}");
    assert_eq!(node["last_error"], Value::Null, "{node:#}");
    assert!(no_step(&node["clean_step"]), "{node:#}");
    let info = &node["driver_internal_info"];
    assert!(info.get("agent_url").is_none(), "agent facts wiped on power off: {info:#}");
    assert!(info.get("clean_steps").is_none(), "{info:#}");
    assert!(info["agent_last_heartbeat"].is_string(), "the agent heartbeated: {info:#}");
    lab.wait_agent_gone().await;

    // deploy → wait call-back → the agent writes the image → active, booting from disk.
    let image = lab.image("disk.img");
    let (status, patched) = lab
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/nodes/{uuid}"),
            Some(json!([
                {"op": "add", "path": "/instance_info/image_source", "value": "disk.img"},
                {"op": "add", "path": "/instance_info/image_checksum", "value": image.sha256},
            ])),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    lab.provision(&uuid, json!({"target": "active"})).await;
    let node = lab.wait_state(&uuid, "active").await;
    assert_eq!(node["last_error"], Value::Null, "{node:#}");
    assert!(no_step(&node["deploy_step"]), "{node:#}");
    let info = &node["driver_internal_info"];
    assert_eq!(info["root_uuid_or_disk_id"], IMAGE_DISK_GUID, "{info:#}");
    assert!(info.get("deploy_step_progress").is_none(), "cleared when done: {info:#}");
    assert_eq!(lab.machine.boots.load(Ordering::SeqCst), 2);
    lab.wait_agent_gone().await;
    lab.assert_disk_holds(&image);

    // undeploy from active → tear down → automated cleaning → available, and the
    // instance is forgotten.
    lab.provision(&uuid, json!({"target": "deleted"})).await;
    let node = lab.wait_state(&uuid, "available").await;
    assert_eq!(node["instance_info"], json!({}), "{node:#}");
    assert_eq!(node["last_error"], Value::Null, "{node:#}");
    assert_eq!(lab.machine.boots.load(Ordering::SeqCst), 3);
    lab.wait_agent_gone().await;

    // Manual cleaning with a step the agent does not offer → clean failed, clearly.
    lab.provision(&uuid, json!({"target": "manage"})).await;
    lab.wait_state(&uuid, "manageable").await;
    lab.provision(
        &uuid,
        json!({"target": "clean",
               "clean_steps": [{"interface": "raid", "step": "delete_configuration"}]}),
    )
    .await;
    let node = lab.wait_state(&uuid, "clean failed").await;
    assert_eq!(node["target_provision_state"], "manageable", "{node:#}");
    assert_eq!(
        node["last_error"],
        format!(
            "Cannot clean node {uuid}: clean step raid.delete_configuration is not supported by \
             the agent"
        ),
        "{node:#}"
    );
    lab.wait_agent_gone().await;
    assert_eq!(lab.node(&uuid).await["power_state"], "power off");

    // Abort from clean wait: the ramdisk never comes up this time.
    lab.provision(&uuid, json!({"target": "manage"})).await;
    lab.wait_state(&uuid, "manageable").await;
    lab.machine.boot_agent.store(false, Ordering::SeqCst);
    lab.provision(&uuid, json!({"target": "provide"})).await;
    let node = lab.wait_state(&uuid, "clean wait").await;
    assert_eq!(node["power_state"], "power on", "{node:#}");
    lab.provision(&uuid, json!({"target": "abort"})).await;
    let node = lab.wait_state(&uuid, "clean failed").await;
    assert!(node["last_error"].as_str().unwrap_or_default().contains("Aborted"), "{node:#}");
    let deadline = Instant::now() + STEP;
    loop {
        let node = lab.node(&uuid).await;
        if node["power_state"] == "power off" {
            break;
        }
        assert!(Instant::now() < deadline, "abort did not power off: {node:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lab.stop().await;
}

/// An agent that follows a script instead of touching a machine: it offers one clean
/// step and `write_image`, and both succeed. It lets the conductor's success paths run:
/// clean step → next step → finish, and write_image → partition UUIDs → boot from disk
/// → agent power off → power on → active.
#[derive(Default)]
struct ScriptedAgent {
    commands: Mutex<Vec<Value>>,
    /// `(name, params)` of every command received.
    received: Mutex<Vec<(String, Value)>>,
    driver: OnceLock<Weak<FakeDriver>>,
    node: OnceLock<String>,
    /// Statuses the next `execute_clean_step` calls end with; then `SUCCEEDED`.
    clean_outcomes: Mutex<std::collections::VecDeque<&'static str>>,
    /// While set, `execute_deploy_step` stays RUNNING in the list, publishing this
    /// progress, until [`ScriptedAgent::finish_deploy`].
    deploy_progress: Mutex<Option<Value>>,
    /// The held deploy step: its index in the list and its final entry.
    held: Mutex<Option<(usize, Value)>>,
}

impl ScriptedAgent {
    fn names(&self) -> Vec<String> {
        self.received.lock().unwrap().iter().map(|(n, _)| n.clone()).collect()
    }

    /// Lets a held `execute_deploy_step` finish.
    fn finish_deploy(&self) {
        if let Some((index, entry)) = self.held.lock().unwrap().take() {
            self.commands.lock().unwrap()[index] = entry;
        }
    }

    fn params_of(&self, name: &str) -> Option<Value> {
        self.received.lock().unwrap().iter().rev().find(|(n, _)| n == name).map(|(_, p)| p.clone())
    }

    fn run(&self, name: &str, params: &Value) -> (String, Value, Value) {
        if name == "clean.execute_clean_step" {
            let outcome = self.clean_outcomes.lock().unwrap().pop_front();
            match outcome {
                Some("FAILED") => {
                    let error = json!({"type": "CommandExecutionError", "code": 500,
                        "message": "Command execution failed", "details": "disk on fire"});
                    return ("FAILED".into(), Value::Null, error);
                }
                Some("CLEAN_VERSION_MISMATCH") => {
                    let error = json!({"type": "VersionMismatch", "code": 409,
                        "message": "Hardware managers version mismatch", "details": "1.0 vs 1.1"});
                    return ("CLEAN_VERSION_MISMATCH".into(), Value::Null, error);
                }
                _ => {}
            }
        }
        let (status, result) = self.run_ok(name, params);
        (status, result, Value::Null)
    }

    fn run_ok(&self, name: &str, params: &Value) -> (String, Value) {
        let versions = json!({"scripted_manager": "1.0"});
        match name {
            "clean.get_clean_steps" => (
                "SUCCEEDED".into(),
                json!({
                "clean_steps": {"ScriptedManager": [
                    {"step": "erase_devices_metadata", "priority": 99, "interface": "deploy",
                     "reboot_requested": false, "abortable": true},
                    {"step": "erase_devices", "priority": 0, "interface": "deploy"}]},
                "hardware_manager_version": versions}),
            ),
            "deploy.get_deploy_steps" => (
                "SUCCEEDED".into(),
                json!({
                "deploy_steps": {"ScriptedManager": [
                    {"step": "write_image", "priority": 0, "interface": "deploy"}]},
                "hardware_manager_version": versions}),
            ),
            "clean.execute_clean_step" => {
                ("SUCCEEDED".into(), json!({"clean_result": null, "clean_step": params["step"]}))
            }
            "deploy.execute_deploy_step" => (
                "SUCCEEDED".into(),
                json!({"deploy_result": {"result": "written"}, "deploy_step": params["step"]}),
            ),
            "standby.get_partition_uuids" => {
                ("SUCCEEDED".into(), json!({"root uuid": "0x1234abcd"}))
            }
            "standby.power_off" => {
                let driver = self.driver.get().and_then(Weak::upgrade);
                let node = self.node.get().cloned();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if let (Some(driver), Some(node)) = (driver, node) {
                        driver.os_powered_off(&node);
                    }
                });
                ("SUCCEEDED".into(), Value::Null)
            }
            other => ("FAILED".into(), json!({"unexpected": other})),
        }
    }
}

async fn scripted_command(
    axum::extract::State(agent): axum::extract::State<Arc<ScriptedAgent>>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    let params = body["params"].clone();
    agent.received.lock().unwrap().push((name.clone(), params.clone()));
    let (status, result, error) = agent.run(&name, &params);
    let short = name.split_once('.').map_or(name.as_str(), |(_, c)| c).to_owned();
    let entry = json!({"id": format!("cmd-{}", agent.received.lock().unwrap().len()),
        "command_name": short, "command_status": status, "command_error": error,
        "command_result": if result.is_null() { Value::Null } else { result }});
    let progress = agent.deploy_progress.lock().unwrap().take();
    match progress {
        Some(progress) if name == "deploy.execute_deploy_step" => {
            let mut running = entry.clone();
            running["command_status"] = json!("RUNNING");
            running["command_result"] = json!({"progress": progress});
            let mut commands = agent.commands.lock().unwrap();
            *agent.held.lock().unwrap() = Some((commands.len(), entry.clone()));
            commands.push(running);
        }
        other => {
            *agent.deploy_progress.lock().unwrap() = other;
            agent.commands.lock().unwrap().push(entry.clone());
        }
    }
    // As ironic-python-agent: step commands are asynchronous, so the reply says RUNNING
    // and the outcome shows in the command list.
    if short.starts_with("execute_") {
        let mut running = entry;
        running["command_status"] = json!("RUNNING");
        running["command_error"] = Value::Null;
        running["command_result"] = Value::Null;
        return axum::Json(running);
    }
    axum::Json(entry)
}

async fn scripted_list(
    axum::extract::State(agent): axum::extract::State<Arc<ScriptedAgent>>,
) -> axum::Json<Value> {
    axum::Json(json!({"commands": *agent.commands.lock().unwrap()}))
}

/// Counts PXE boots, so the test's "ramdisk" looks itself up once per boot.
#[derive(Default)]
struct BootCounter {
    driver: OnceLock<Weak<FakeDriver>>,
    pxe_boots: AtomicUsize,
}

#[async_trait::async_trait]
impl PowerHook for BootCounter {
    fn powered(&self, node: &str, state: PowerState) {
        let driver = self.driver.get().and_then(Weak::upgrade);
        let booted = driver.and_then(|d| d.node(node)).and_then(|n| n.booted_from);
        if state == PowerState::On && booted == Some(BootDevice::Pxe) {
            self.pxe_boots.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_steps_clean_deploy_and_tear_down_with_a_scripted_agent() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let counter = Arc::new(BootCounter::default());
    let driver = Arc::new(FakeDriver::builder().hook(counter.clone()).build());
    let _ = counter.driver.set(Arc::downgrade(&driver));
    let mut drivers = DriverRegistry::new();
    drivers.register(driver.clone());

    let agent = Arc::new(ScriptedAgent::default());
    let _ = agent.driver.set(Arc::downgrade(&driver));
    let agent_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_url = format!("http://{}", agent_listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/v1/commands/", axum::routing::post(scripted_command).get(scripted_list))
        .with_state(agent.clone());
    tokio::spawn(async move { axum::serve(agent_listener, app).await.unwrap() });

    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(data.path().join("images")).unwrap();
    std::fs::write(data.path().join("images/disk.img"), b"not really a disk").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config =
        ConductorConfig { data_dir: data.path().to_owned(), listen: addr, ..Default::default() };
    config.agent.post_deploy_get_power_state_retries = 10;
    config.agent.post_deploy_get_power_state_retry_interval = 1;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(async move {
        service::run_on(config, listener, drivers, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let url = format!("http://{addr}");
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let mut req = http
            .request(method, format!("{url}{path}"))
            .header("X-OpenStack-Ironic-API-Version", "1.68")
            .timeout(Duration::from_secs(20));
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (status, serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)))
        }
    };

    let mac = "52:54:00:aa:bb:cc";
    let (status, node) = call(
        reqwest::Method::POST,
        "/v1/nodes".into(),
        Some(json!({"driver": "fake-hardware", "name": "scripted"})),
    )
    .await;
    assert_eq!(status, 201, "{node}");
    let uuid = node["uuid"].as_str().unwrap().to_owned();
    let _ = agent.node.set(uuid.clone());
    let (status, port) = call(
        reqwest::Method::POST,
        "/v1/ports".into(),
        Some(json!({"node_uuid": uuid, "address": mac})),
    )
    .await;
    assert_eq!(status, 201, "{port}");

    // Plays the ramdisk: after each PXE boot, one lookup for the token, then heartbeats
    // until the node is in `state`.
    let looked_up = AtomicUsize::new(0);
    let token = Mutex::new(String::new());
    type Goal = Box<dyn Fn(&Value) -> bool + Send + Sync>;
    let drive_until = |what: &'static str, goal: Goal| {
        let (call, counter, looked_up, token, agent_url, uuid) =
            (&call, &counter, &looked_up, &token, &agent_url, &uuid);
        async move {
            let deadline = Instant::now() + STEP;
            loop {
                let (_, node) = call(reqwest::Method::GET, format!("/v1/nodes/{uuid}"), None).await;
                if goal(&node) {
                    return node;
                }
                assert!(Instant::now() < deadline, "never reached {what}: {node:#}");
                let boots = counter.pxe_boots.load(Ordering::SeqCst);
                if boots > looked_up.load(Ordering::SeqCst) {
                    let (status, reply) =
                        call(reqwest::Method::GET, format!("/v1/lookup?addresses={mac}"), None)
                            .await;
                    if status == 200 {
                        if let Some(t) = reply["config"]["agent_token"].as_str() {
                            *token.lock().unwrap() = t.to_owned();
                            looked_up.store(boots, Ordering::SeqCst);
                        }
                    }
                } else if boots > 0 {
                    let sent = token.lock().unwrap().clone();
                    call(
                        reqwest::Method::POST,
                        format!("/v1/heartbeat/{uuid}"),
                        Some(json!({"callback_url": agent_url, "agent_token": sent,
                                    "agent_version": "13.0.0"})),
                    )
                    .await;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
    };
    let drive = |state: &'static str| {
        let goal: Goal =
            Box::new(move |n| n["provision_state"] == state && n["reservation"].is_null());
        drive_until(state, goal)
    };
    let provision = |body: Value| {
        let call = &call;
        let path = format!("/v1/nodes/{uuid}/states/provision");
        async move {
            let (status, reply) = call(reqwest::Method::PUT, path, Some(body)).await;
            assert_eq!(status, 202, "{reply}");
        }
    };

    provision(json!({"target": "manage"})).await;
    drive("manageable").await;
    provision(json!({"target": "provide"})).await;
    let node = drive("available").await;
    assert_eq!(
        agent.names(),
        ["clean.get_clean_steps", "clean.execute_clean_step"],
        "only the step with priority > 0 runs"
    );
    let sent = agent.params_of("clean.execute_clean_step").unwrap();
    assert_eq!(sent["step"]["step"], "erase_devices_metadata");
    assert_eq!(sent["clean_version"], json!({"scripted_manager": "1.0"}));
    assert_eq!(sent["node"]["uuid"], uuid);
    assert_eq!(sent["ports"][0]["address"], mac);
    assert_eq!(node["power_state"], "power off", "{node:#}");
    assert!(no_step(&node["clean_step"]), "{node:#}");

    let checksum = "b".repeat(64);
    let (status, patched) = call(
        reqwest::Method::PATCH,
        format!("/v1/nodes/{uuid}"),
        Some(json!([
            {"op": "add", "path": "/instance_info/image_source", "value": "disk.img"},
            {"op": "add", "path": "/instance_info/image_checksum", "value": checksum},
        ])),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    // The agent reports the write's progress while it runs; the conductor keeps the last
    // report until the step is done.
    let progress = json!({"phase": "downloading", "bytes_done": 1048576,
                          "bytes_total": 4194304, "elapsed_seconds": 1.0,
                          "rate_bytes_per_second": 1048576.0, "eta_seconds": 3.0});
    *agent.deploy_progress.lock().unwrap() = Some(progress.clone());
    provision(json!({"target": "active", "configdrive": "H4sIAAAA"})).await;
    let goal: Goal = Box::new(|n| !n["driver_internal_info"]["deploy_step_progress"].is_null());
    let node = drive_until("a stored deploy_step_progress", goal).await;
    assert_eq!(node["driver_internal_info"]["deploy_step_progress"], progress, "{node:#}");
    assert_eq!(node["provision_state"], "wait call-back", "{node:#}");
    agent.finish_deploy();
    let node = drive("active").await;
    assert!(
        node["driver_internal_info"].get("deploy_step_progress").is_none(),
        "cleared when the step is done: {node:#}"
    );
    let names = agent.names();
    assert_eq!(
        names[2..],
        [
            "deploy.get_deploy_steps",
            "deploy.execute_deploy_step",
            "standby.get_partition_uuids",
            "standby.power_off"
        ],
        "{names:?}"
    );
    let sent = agent.params_of("deploy.execute_deploy_step").unwrap();
    let image_info = &sent["step"]["args"]["image_info"];
    assert_eq!(image_info["urls"], json!([format!("{url}/images/disk.img")]), "{sent:#}");
    assert_eq!(image_info["checksum"], checksum);
    assert_eq!(sent["step"]["args"]["configdrive"], "H4sIAAAA");
    assert_eq!(sent["deploy_version"], json!({"scripted_manager": "1.0"}));
    assert_eq!(node["power_state"], "power on", "{node:#}");
    assert_eq!(node["last_error"], Value::Null, "{node:#}");
    assert!(no_step(&node["deploy_step"]), "{node:#}");
    assert_eq!(node["driver_internal_info"]["root_uuid_or_disk_id"], "0x1234abcd", "{node:#}");
    let bmc = driver.node(&uuid).unwrap();
    assert_eq!(bmc.persistent_device, BootDevice::Disk);
    assert_eq!(bmc.booted_from, Some(BootDevice::Disk));
    assert!(node["driver_internal_info"].get("agent_url").is_none(), "{node:#}");

    provision(json!({"target": "deleted"})).await;
    let node = drive("available").await;
    assert_eq!(node["instance_info"], json!({}), "{node:#}");
    assert!(node["driver_internal_info"].get("root_uuid_or_disk_id").is_none(), "{node:#}");
    assert_eq!(agent.names().len(), 8, "{:?}", agent.names());
    assert_eq!(counter.pxe_boots.load(Ordering::SeqCst), 3);

    // The agent's managers changed after the steps were fetched: the conductor fetches
    // them again and restarts the plan.
    provision(json!({"target": "manage"})).await;
    drive("manageable").await;
    agent.clean_outcomes.lock().unwrap().push_back("CLEAN_VERSION_MISMATCH");
    provision(json!({"target": "provide"})).await;
    drive("available").await;
    assert_eq!(
        agent.names()[8..],
        [
            "clean.get_clean_steps",
            "clean.execute_clean_step",
            "clean.get_clean_steps",
            "clean.execute_clean_step"
        ],
        "{:?}",
        agent.names()
    );

    // A failing step: clean failed, Ironic's wording, powered off.
    provision(json!({"target": "manage"})).await;
    drive("manageable").await;
    agent.clean_outcomes.lock().unwrap().push_back("FAILED");
    provision(json!({"target": "provide"})).await;
    let node = drive("clean failed").await;
    let last_error = node["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.starts_with("Agent returned error for clean step ")
            && last_error.contains("erase_devices_metadata")
            && last_error.ends_with(&format!("on node {uuid} : disk on fire")),
        "{node:#}"
    );
    assert_eq!(node["power_state"], "power off", "{node:#}");
    assert!(no_step(&node["clean_step"]), "{node:#}");
    assert!(node["driver_internal_info"].get("clean_steps").is_none(), "{node:#}");

    // Deploys refused before the ramdisk boots: an image missing from the image
    // directory, and a config drive in the (unrendered) dictionary form.
    provision(json!({"target": "manage"})).await;
    drive("manageable").await;
    provision(json!({"target": "provide"})).await;
    drive("available").await;
    let boots = counter.pxe_boots.load(Ordering::SeqCst);
    let (status, patched) = call(
        reqwest::Method::PATCH,
        format!("/v1/nodes/{uuid}"),
        Some(json!([{"op": "add", "path": "/instance_info/image_source",
                     "value": "missing.img"}])),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    provision(json!({"target": "active"})).await;
    let node = drive("deploy failed").await;
    assert_eq!(
        node["last_error"],
        format!(
            "Failed to deploy node {uuid}: image \"missing.img\" does not exist in the \
             conductor's image directory"
        ),
        "{node:#}"
    );
    provision(json!({"target": "deleted"})).await;
    drive("available").await;
    // Only the tear-down's cleaning booted the ramdisk; the failed deploy did not.
    assert_eq!(counter.pxe_boots.load(Ordering::SeqCst), boots + 1);

    let _ = stop.send(());
    service.await.unwrap();
}

/// The real `baremetal` CLI drives the flows with `--wait`, against the real conductor
/// and the real agent binary: it must exit 0 where the node reaches the verb's goal and
/// non-zero, naming the reason, where it lands in a failed state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baremetal_cli_waits_through_the_flows() {
    use ferric_tests::baremetal::Baremetal;
    let lab = Lab::start().await;
    let bm = Baremetal::new(lab.url.clone()).unwrap();
    let created =
        bm.json(&["node", "create", "--driver", "fake-hardware", "--name", "bm-1"]).await.unwrap();
    let uuid = created["uuid"].as_str().unwrap().to_owned();
    bm.run(&["port", "create", &fixture_mac(), "--node", &uuid])
        .await
        .unwrap()
        .ensure_success("port create")
        .unwrap();
    tokio::spawn(lab.machine.clone().watch(uuid.clone()));

    for (verb, state) in [("manage", "manageable"), ("provide", "available")] {
        bm.run(&["node", verb, "bm-1", "--wait", "120"])
            .await
            .unwrap()
            .ensure_success(verb)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.machine.all_logs()));
        assert_eq!(lab.node(&uuid).await["provision_state"], state, "{verb}");
    }
    let image = lab.image("bm.img");
    bm.run(&[
        "node",
        "set",
        "bm-1",
        "--instance-info",
        "image_source=bm.img",
        "--instance-info",
        &format!("image_checksum={}", image.sha256),
    ])
    .await
    .unwrap()
    .ensure_success("set")
    .unwrap();
    bm.run(&["node", "deploy", "bm-1", "--wait", "120"])
        .await
        .unwrap()
        .ensure_success("deploy")
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.machine.all_logs()));
    assert_eq!(lab.node(&uuid).await["provision_state"], "active");
    lab.assert_disk_holds(&image);
    bm.run(&["node", "undeploy", "bm-1", "--wait", "120"])
        .await
        .unwrap()
        .ensure_success("undeploy")
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.machine.all_logs()));
    assert_eq!(lab.node(&uuid).await["provision_state"], "available");
    bm.run(&["node", "delete", "bm-1"]).await.unwrap().ensure_success("delete").unwrap();
    lab.stop().await;
}

/// The `ferric` CLI drives the same flows with `--wait` against the real conductor and the
/// real agent binary: exit 0 at the verb's goal, exit 1 naming the failed state and its
/// reason otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferric_cli_waits_through_the_flows() {
    use ferric_tests::baremetal::run_ferric;
    let lab = Lab::start().await;
    let ferric = |args: &'static [&'static str]| run_ferric(&lab.url, args);
    let created =
        ferric(&["node", "create", "--driver", "fake-hardware", "--name", "f-1", "-f", "json"])
            .await
            .unwrap();
    created.ensure_success("create").unwrap();
    let uuid = created.json().unwrap()["uuid"].as_str().unwrap().to_owned();
    let mac = fixture_mac();
    run_ferric(&lab.url, &["port", "create", &mac, "--node", &uuid])
        .await
        .unwrap()
        .ensure_success("port create")
        .unwrap();
    tokio::spawn(lab.machine.clone().watch(uuid.clone()));

    for (verb, state) in [("manage", "manageable"), ("provide", "available")] {
        let out = run_ferric(&lab.url, &["node", verb, "f-1", "--wait", "120"]).await.unwrap();
        out.ensure_success(verb).unwrap_or_else(|e| panic!("{e:#}\n{}", lab.machine.all_logs()));
        assert_eq!(lab.node(&uuid).await["provision_state"], state, "{verb}");
        let last = out.stderr.lines().last().unwrap_or_default().to_owned();
        assert!(last.starts_with(&format!("f-1: {state} -> None, ")), "{verb}: {}", out.stderr);
    }
    let image = lab.image("f.img");
    let hash = format!("image_os_hash_value={}", image.sha256);
    run_ferric(
        &lab.url,
        &[
            "node",
            "set",
            "f-1",
            "--instance-info",
            "image_source=f.img",
            "--instance-info",
            "image_os_hash_algo=sha256",
            "--instance-info",
            &hash,
        ],
    )
    .await
    .unwrap()
    .ensure_success("set")
    .unwrap();
    let deploy = ferric(&["node", "deploy", "f-1", "--wait", "120"]).await.unwrap();
    deploy.ensure_success("deploy").unwrap_or_else(|e| panic!("{e:#}\n{}", lab.machine.all_logs()));
    let last = deploy.stderr.lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("f-1: active -> None, "), "{}", deploy.stderr);
    let node = lab.node(&uuid).await;
    assert_eq!(node["provision_state"], "active");
    assert_eq!(node["driver_internal_info"]["root_uuid_or_disk_id"], IMAGE_DISK_GUID);
    lab.assert_disk_holds(&image);

    // The JSON form reports the final states for scripts.
    let done = ferric(&["node", "undeploy", "f-1", "--wait", "120", "-f", "json"]).await.unwrap();
    done.ensure_success("undeploy").unwrap_or_else(|e| panic!("{e:#}\n{}", lab.machine.all_logs()));
    assert_eq!(done.json().unwrap()["provision_state"], "available");
    assert_eq!(lab.node(&uuid).await["provision_state"], "available");
    lab.wait_agent_gone().await;

    // Manual cleaning sends the steps given; one the agent does not offer fails, and the
    // CLI relays the conductor's reason.
    let manage = ferric(&["node", "manage", "f-1", "--wait", "120"]).await.unwrap();
    manage.ensure_success("manage").unwrap();
    let steps = r#"[{"interface": "raid", "step": "delete_configuration"}]"#;
    let clean =
        run_ferric(&lab.url, &["node", "clean", "f-1", "--clean-steps", steps, "--wait", "120"])
            .await
            .unwrap();
    assert_eq!(clean.status.code(), Some(1), "{}", clean.stderr);
    assert!(
        clean.stderr.contains(&format!(
            "node f-1 ended in clean failed: Cannot clean node {uuid}: clean step \
             raid.delete_configuration is not supported by the agent"
        )),
        "{}",
        clean.stderr
    );
    lab.wait_agent_gone().await;
    // A node in `clean failed` cannot be deleted; the API's reason reaches the operator.
    let refused = ferric(&["node", "delete", "f-1"]).await.unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("while it is in provision state \"clean failed\""),
        "{}",
        refused.stderr
    );
    ferric(&["node", "manage", "f-1", "--wait", "120"])
        .await
        .unwrap()
        .ensure_success("manage")
        .unwrap();
    ferric(&["node", "delete", "f-1"]).await.unwrap().ensure_success("delete").unwrap();
    assert_eq!(lab.call(reqwest::Method::GET, &format!("/v1/nodes/{uuid}"), None).await.0, 404);
    lab.stop().await;
}
