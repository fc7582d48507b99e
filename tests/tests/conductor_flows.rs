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
}

impl Lab {
    async fn start() -> Lab {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let binary = tokio::task::spawn_blocking(agent_binary).await.unwrap().unwrap();
        let tree = tempfile::tempdir().unwrap();
        let mut host = fixtures::bios_vm();
        host.disks = vec![DiskSpec::virtio("vda", "0000:00:05.0", 1 << 30).backing_file()];
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

    // manage → manageable; provide → cleaning with the agent (it offers no clean step) →
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

    // deploy → wait call-back → the agent's write_image fails → deploy failed, off.
    let checksum = "a".repeat(64);
    let (status, patched) = lab
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/nodes/{uuid}"),
            Some(json!([
                {"op": "add", "path": "/instance_info/image_source",
                 "value": "http://127.0.0.1:9/images/disk.img"},
                {"op": "add", "path": "/instance_info/image_checksum", "value": checksum},
            ])),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    lab.provision(&uuid, json!({"target": "active"})).await;
    let node = lab.wait_state(&uuid, "deploy failed").await;
    let last_error = node["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.contains("write_image is not supported by this agent yet")
            && last_error
                .starts_with(&format!("Deploy step deploy.write_image failed on node {uuid}.")),
        "{node:#}"
    );
    assert!(no_step(&node["deploy_step"]), "{node:#}");
    assert_eq!(lab.machine.boots.load(Ordering::SeqCst), 2);
    lab.wait_agent_gone().await;
    assert_eq!(lab.node(&uuid).await["power_state"], "power off");

    // undeploy from deploy failed → tear down → automated cleaning → available, and the
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
               "clean_steps": [{"interface": "deploy", "step": "erase_devices"}]}),
    )
    .await;
    let node = lab.wait_state(&uuid, "clean failed").await;
    assert_eq!(node["target_provision_state"], "manageable", "{node:#}");
    assert_eq!(
        node["last_error"],
        format!(
            "Cannot clean node {uuid}: clean step deploy.erase_devices is not supported by the \
             agent"
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
