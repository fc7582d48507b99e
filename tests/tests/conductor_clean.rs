//! Cleaning with the REAL `ferric-agent` binary, driven by the in-process conductor: the
//! erase steps of automated cleaning and the report they leave on the node, manual
//! cleaning with the conductor's `hold` and `wait` steps (`unhold`, `abort` from `clean
//! hold`), and an agent step that fails.
//!
//! The fake BMC's power hook plays the machine: a PXE power on starts the agent process
//! on a fixture host tree whose disks are sparse files, a power off kills it (by PID).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use ferric_agent::fixtures::{self, DiskSpec};
use ferric_conductor::bmc::fake::{FakeDriver, PowerHook};
use ferric_conductor::bmc::{BootDevice, DriverRegistry, PowerState};
use ferric_conductor::config::ConductorConfig;
use ferric_conductor::service;
use ferric_tests::agent_process::{agent_binary, AgentArgs, AgentProcess};
use ferric_tests::baremetal::run_ferric;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// Longest any single flow step may take (agent start, heartbeats every few seconds).
const STEP: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;
/// The fixture disks: small, so erasing them is quick.
const DISK_BYTES: u64 = 64 * MIB;
/// Written in the middle of each disk: a metadata erase must leave it.
const MARKER: &[u8] = b"ferric clean marker: data between the signatures stays";

/// The machine behind the fake BMC: one agent process at a time.
struct Machine {
    binary: PathBuf,
    tree: PathBuf,
    api_url: OnceLock<String>,
    driver: OnceLock<Weak<FakeDriver>>,
    running: Mutex<Option<AgentProcess>>,
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

    fn all_logs(&self) -> String {
        let mut text = self.logs.lock().unwrap().join("\n---\n");
        if let Some(agent) = self.running.lock().unwrap().as_ref() {
            text.push_str(&format!("\n--- running pid {}:\n{}", agent.pid(), agent.log()));
        }
        text
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
                if booted == Some(BootDevice::Pxe) {
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
    async fn start(tweak: impl FnOnce(&mut ConductorConfig)) -> Lab {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let binary = tokio::task::spawn_blocking(agent_binary).await.unwrap().unwrap();
        let tree = tempfile::tempdir().unwrap();
        let mut host = fixtures::bios_vm();
        host.disks = vec![
            DiskSpec::virtio("vda", "0000:00:05.0", DISK_BYTES).backing_file(),
            DiskSpec::virtio("vdb", "0000:00:06.0", DISK_BYTES).backing_file(),
        ];
        host.build(tree.path()).unwrap();
        let machine = Arc::new(Machine {
            binary,
            tree: tree.path().to_owned(),
            api_url: OnceLock::new(),
            driver: OnceLock::new(),
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
        config.conductor.name = "clean-conductor".into();
        config.agent.heartbeat_timeout = 10;
        config.agent.command_timeout = 20;
        tweak(&mut config);
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

    fn disk(&self, name: &str) -> PathBuf {
        self.machine.tree.join("dev").join(name)
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

    /// A manageable node with the fixture's NIC as its port and `driver_info`.
    async fn manageable_node(&self, name: &str, driver_info: Value) -> String {
        let body = json!({"driver": "fake-hardware", "name": name, "driver_info": driver_info});
        let (status, node) = self.call(reqwest::Method::POST, "/v1/nodes", Some(body)).await;
        assert_eq!(status, 201, "{node}");
        let uuid = node["uuid"].as_str().unwrap().to_owned();
        let mac = fixtures::bios_vm().nics[0].mac.clone();
        let port = json!({"node_uuid": uuid, "address": mac});
        let (status, port) = self.call(reqwest::Method::POST, "/v1/ports", Some(port)).await;
        assert_eq!(status, 201, "{port}");
        self.provision(&uuid, json!({"target": "manage"})).await;
        self.wait_state(&uuid, "manageable").await;
        uuid
    }

    async fn provision(&self, uuid: &str, body: Value) {
        let (status, reply) = self
            .call(reqwest::Method::PUT, &format!("/v1/nodes/{uuid}/states/provision"), Some(body))
            .await;
        assert_eq!(status, 202, "{reply}");
    }

    /// Polls until the node is in `state` with no lock held, then returns it.
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

    async fn wait_powered_off(&self, uuid: &str) {
        let deadline = Instant::now() + STEP;
        loop {
            let node = self.node(uuid).await;
            if node["power_state"] == "power off" && !self.machine.agent_running() {
                return;
            }
            assert!(Instant::now() < deadline, "never powered off: {node:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
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

/// Gives `disk` a GPT with two partitions (`sgdisk`) and writes [`MARKER`] in its middle.
fn seed_disk(disk: &Path) {
    let out = std::process::Command::new("sgdisk")
        .args(["-o", "-n", "1:2048:+16M", "-n", "2:0:+16M"])
        .arg(disk)
        .output()
        .expect("sgdisk (package gdisk) must be installed");
    assert!(out.status.success(), "sgdisk: {}", String::from_utf8_lossy(&out.stderr));
    write_at(disk, DISK_BYTES / 2, MARKER);
    assert_eq!(read_at(disk, 512, 8), b"EFI PART");
    assert_eq!(read_at(disk, DISK_BYTES - 512, 8), b"EFI PART");
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

fn no_step(step: &Value) -> bool {
    step.is_null() || step.as_object().is_some_and(|m| m.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provide_erases_the_disks_and_keeps_the_report_on_the_node() {
    // Only the metadata erase (99) runs in automated cleaning here; the full erase is
    // disabled by the operator's override, as `[deploy]erase_devices_priority = 0` does.
    let lab = Lab::start(|c| c.cleaning.erase_devices_priority = Some(0)).await;
    for disk in ["vda", "vdb"] {
        seed_disk(&lab.disk(disk));
    }
    let uuid = lab.manageable_node("erase-1", json!({})).await;
    lab.provision(&uuid, json!({"target": "provide"})).await;
    let node = lab.wait_state(&uuid, "available").await;
    assert_eq!(node["last_error"], Value::Null, "{node:#}");
    assert!(no_step(&node["clean_step"]), "{node:#}");
    lab.wait_powered_off(&uuid).await;

    let info = &node["driver_internal_info"];
    // The per-disk report of the metadata erase, and nothing for the disabled step.
    let report = &info["clean_erase_report"];
    assert_eq!(report.as_object().unwrap().len(), 1, "{report:#}");
    for disk in ["/dev/vda", "/dev/vdb"] {
        let entry = &report["erase_devices_metadata"][disk];
        assert_eq!(entry["device"], disk, "{report:#}");
        assert_eq!(entry["method"], "metadata", "{report:#}");
        assert!(entry["bytes"].as_u64().unwrap() > 0, "{report:#}");
        assert!(entry["duration_s"].is_number(), "{report:#}");
    }

    // Both GPT copies are gone; the data between them stays.
    for disk in ["vda", "vdb"] {
        let path = lab.disk(disk);
        assert_ne!(read_at(&path, 512, 8), b"EFI PART", "{disk}: primary GPT left");
        assert_ne!(read_at(&path, DISK_BYTES - 512, 8), b"EFI PART", "{disk}: backup GPT left");
        assert_eq!(read_at(&path, DISK_BYTES / 2, MARKER.len()), MARKER, "{disk}: data lost");
    }

    // `ferric node show` draws the report.
    let shown = run_ferric(&lab.url, &["node", "show", "erase-1"]).await.unwrap();
    shown.ensure_success("node show").unwrap();
    let row = shown
        .stdout
        .lines()
        .find(|l| l.contains("| erase_devices_metadata |") && l.contains("| /dev/vdb "))
        .unwrap_or_else(|| panic!("no report row:\n{}", shown.stdout));
    assert!(row.contains("| metadata "), "{row}");
    assert!(row.contains("| verified: "), "{row}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provide_with_both_erase_steps_zeroes_the_disks_and_reports_each_step() {
    let lab = Lab::start(|_| {}).await;
    for disk in ["vda", "vdb"] {
        seed_disk(&lab.disk(disk));
    }
    let uuid = lab.manageable_node("erase-2", json!({})).await;
    lab.provision(&uuid, json!({"target": "provide"})).await;
    let node = lab.wait_state(&uuid, "available").await;
    assert_eq!(node["last_error"], Value::Null, "{node:#}");
    lab.wait_powered_off(&uuid).await;

    // Metadata first (99), then the full erase (10); both reported per disk.
    let report = &node["driver_internal_info"]["clean_erase_report"];
    for disk in ["/dev/vda", "/dev/vdb"] {
        assert_eq!(report["erase_devices_metadata"][disk]["method"], "metadata", "{report:#}");
        let full = &report["erase_devices"][disk];
        assert_eq!(full["device"], disk, "{report:#}");
        // ironic-python-agent's defaults (agent_erase_devices_iterations 1,
        // agent_erase_devices_zeroize true): one random pass, then zeros.
        assert_eq!(full["method"], "overwrite", "{report:#}");
        assert_eq!(full["passes"], 2, "{report:#}");
        assert_eq!(full["bytes"], DISK_BYTES, "{report:#}");
        assert_eq!(full["verification"]["outcome"], "verified", "{report:#}");
        // A disk this small is read back whole.
        assert_eq!(full["verification"]["bytes_checked"], DISK_BYTES, "{report:#}");
    }

    // The whole disk reads back as zeros: tables, the marker, everything.
    for disk in ["vda", "vdb"] {
        let bytes = std::fs::read(lab.disk(disk)).unwrap();
        assert_eq!(bytes.len() as u64, DISK_BYTES);
        let first = bytes.iter().position(|&b| b != 0);
        assert_eq!(first, None, "{disk}: non-zero byte left");
    }

    let shown = run_ferric(&lab.url, &["node", "show", "erase-2"]).await.unwrap();
    shown.ensure_success("node show").unwrap();
    let row = shown
        .stdout
        .lines()
        .find(|l| l.contains("| erase_devices ") && l.contains("| /dev/vda "))
        .unwrap_or_else(|| panic!("no report row:\n{}", shown.stdout));
    assert!(row.contains("| overwrite (2 passes) "), "{row}");
    assert!(row.contains("| 64.0 MiB (67108864) "), "{row}");
    assert!(row.contains("| verified: "), "{row}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_cleaning_holds_waits_resumes_aborts_and_fails_with_the_agents_error() {
    let lab = Lab::start(|_| {}).await;
    let driver_info = json!({"agent_burnin_cpu_timeout": "0.2", "agent_burnin_cpu_cpu": 1,
                             "agent_burnin_vm_timeout": "0.2", "agent_burnin_vm_vm-bytes": "1M"});
    let uuid = lab.manageable_node("hold-1", driver_info).await;

    // burn-in → hold: the node rests in clean hold, the hold step shown as current.
    let steps = json!([
        {"interface": "deploy", "step": "burnin_cpu"},
        {"interface": "conductor", "step": "hold"},
        {"interface": "conductor", "step": "wait", "args": {"seconds": 1}},
        {"interface": "deploy", "step": "burnin_memory"},
    ]);
    lab.provision(&uuid, json!({"target": "clean", "clean_steps": steps})).await;
    let node = lab.wait_state(&uuid, "clean hold").await;
    assert_eq!(node["clean_step"]["interface"], "conductor", "{node:#}");
    assert_eq!(node["clean_step"]["step"], "hold", "{node:#}");
    assert_eq!(node["target_provision_state"], "manageable", "{node:#}");
    assert_eq!(node["driver_internal_info"]["clean_step_index"], 1, "{node:#}");
    // It stays there: heartbeats do not move a held node.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(lab.node(&uuid).await["provision_state"], "clean hold");

    // unhold needs API 1.85.
    let (status, reply) = lab
        .http
        .put(format!("{}/v1/nodes/{uuid}/states/provision", lab.url))
        .header("X-OpenStack-Ironic-API-Version", "1.84")
        .json(&json!({"target": "unhold"}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 406, "{:?}", reply.text().await);

    // `ferric node unhold` → the wait, then the memory burn-in, then manageable.
    let started = Instant::now();
    let unhold = run_ferric(&lab.url, &["node", "unhold", "hold-1"]).await.unwrap();
    unhold.ensure_success("node unhold").unwrap();
    let node = lab.wait_state(&uuid, "manageable").await;
    assert!(started.elapsed() >= Duration::from_secs(1), "the wait step did not wait");
    assert_eq!(node["last_error"], Value::Null, "{node:#}");
    assert!(no_step(&node["clean_step"]), "{node:#}");
    assert!(node["driver_internal_info"].get("clean_steps").is_none(), "{node:#}");
    lab.wait_powered_off(&uuid).await;

    // abort from clean hold → clean failed, powered off.
    let hold_only = json!([{"interface": "conductor", "step": "hold"}]);
    lab.provision(&uuid, json!({"target": "clean", "clean_steps": hold_only})).await;
    lab.wait_state(&uuid, "clean hold").await;
    lab.provision(&uuid, json!({"target": "abort"})).await;
    let node = lab.wait_state(&uuid, "clean failed").await;
    assert_eq!(node["last_error"], "Aborted by request while in \"clean hold\".", "{node:#}");
    lab.wait_powered_off(&uuid).await;

    // A step the agent fails → clean failed with the agent's own message.
    lab.provision(&uuid, json!({"target": "manage"})).await;
    lab.wait_state(&uuid, "manageable").await;
    let (status, patched) = lab
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/nodes/{uuid}"),
            Some(json!([{"op": "replace", "path": "/driver_info/agent_burnin_cpu_timeout",
                         "value": "soon"}])),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    let cpu = json!([{"interface": "deploy", "step": "burnin_cpu"}]);
    lab.provision(&uuid, json!({"target": "clean", "clean_steps": cpu})).await;
    let node = lab.wait_state(&uuid, "clean failed").await;
    let last_error = node["last_error"].as_str().unwrap_or_default();
    assert!(last_error.starts_with("Agent returned error for clean step "), "{last_error}");
    assert!(
        last_error.ends_with(&format!(
            "on node {uuid} : driver_info agent_burnin_cpu_timeout is \"soon\", expected a \
             non-negative number"
        )),
        "{last_error}"
    );
    lab.wait_powered_off(&uuid).await;
    lab.stop().await;
}
