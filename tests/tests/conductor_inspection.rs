//! In-band inspection through the conductor (in-process, `service::run_on`): `inspect`
//! boots the REAL `ferric-agent` on a fixture host tree behind the fake BMC, the node
//! waits in `inspect wait`, and the fixture's report (the inventory `ferric-agent
//! inventory` prints for that tree, in the body the agent posts) reaches
//! `/v1/continue_inspection`. The node ends `manageable` with the properties and ports the
//! fixture implies, powered off; a ramdisk error, an abort and a timeout end it in
//! `inspect failed` with Ironic's message; malformed reports change nothing.
//!
//! The happy path enrols the fixture NIC's port first, so the agent's report (posted
//! without a node UUID, as IPA does) finds the node by its MAC; when no report arrived
//! within a few seconds (an agent without an inspection mode only looks up and
//! heartbeats), the test posts the same body itself. The failure paths boot no agent: the
//! test alone decides what the "ramdisk" reports, and when.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use ferric_agent::fixtures;
use ferric_conductor::bmc::fake::{FakeDriver, PowerHook};
use ferric_conductor::bmc::{BootDevice, DriverRegistry, PowerState};
use ferric_conductor::config::ConductorConfig;
use ferric_conductor::service;
use ferric_tests::agent_process::{agent_binary, AgentArgs, AgentProcess};
use ferric_tests::baremetal::run_ferric;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// Longest any single step may take.
const STEP: Duration = Duration::from_secs(45);
/// How long the agent is given to post its own report before the test posts it.
const AGENT_REPORT_GRACE: Duration = Duration::from_secs(4);
const GIB: u64 = 1 << 30;

/// The machine behind the fake BMC: a PXE power on starts the agent (unless
/// `boot_agent` is off: the ramdisk never comes up), power off kills it.
struct Machine {
    binary: PathBuf,
    boot_agent: AtomicBool,
    /// Power-ons from PXE, agent or not.
    pxe_boots: AtomicUsize,
    tree: PathBuf,
    api_url: OnceLock<String>,
    driver: OnceLock<Weak<FakeDriver>>,
    running: Mutex<Option<AgentProcess>>,
    logs: Mutex<Vec<String>>,
}

impl Machine {
    fn start_agent(&self) {
        let Some(url) = self.api_url.get() else { return };
        let args = AgentArgs::new(url.as_str(), &self.tree)
            .arg("--ipa-inspection-callback-url")
            .arg(format!("{url}/v1/continue_inspection"));
        match AgentProcess::spawn(&self.binary, &args) {
            Ok(agent) => {
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
                    self.pxe_boots.fetch_add(1, Ordering::SeqCst);
                    if self.boot_agent.load(Ordering::SeqCst) {
                        self.start_agent();
                    }
                }
            }
        }
    }

    async fn shutdown_os(&self, _node: &str, _timeout: Duration) -> bool {
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
    /// The inventory `ferric-agent inventory` reports for the machine's tree.
    inventory: Value,
}

impl Lab {
    async fn start(boot_agent: bool, configure: impl FnOnce(&mut ConductorConfig)) -> Lab {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let binary = tokio::task::spawn_blocking(agent_binary).await.unwrap().unwrap();
        let tree = tempfile::tempdir().unwrap();
        fixtures::bios_vm().build(tree.path()).unwrap();
        let out = std::process::Command::new(&binary)
            .arg("inventory")
            .arg("--host-root")
            .arg(tree.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "inventory: {}", String::from_utf8_lossy(&out.stderr));
        let inventory: Value = serde_json::from_slice(&out.stdout).unwrap();
        let machine = Arc::new(Machine {
            binary,
            boot_agent: AtomicBool::new(boot_agent),
            pxe_boots: AtomicUsize::new(0),
            tree: tree.path().to_owned(),
            api_url: OnceLock::new(),
            driver: OnceLock::new(),
            running: Mutex::new(None),
            logs: Mutex::new(Vec::new()),
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
        config.conductor.name = "inspection-conductor".into();
        configure(&mut config);
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
            inventory,
        }
    }

    async fn call_as(
        &self,
        version: &str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("X-OpenStack-Ironic-API-Version", version)
            .timeout(Duration::from_secs(30));
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        self.call_as("1.110", method, path, body).await
    }

    async fn node(&self, uuid: &str) -> Value {
        let (status, node) = self.call(Method::GET, &format!("/v1/nodes/{uuid}"), None).await;
        assert_eq!(status, 200, "{node}");
        node
    }

    async fn ports(&self, uuid: &str) -> Vec<Value> {
        let (status, reply) =
            self.call(Method::GET, &format!("/v1/nodes/{uuid}/ports/detail"), None).await;
        assert_eq!(status, 200, "{reply}");
        reply["ports"].as_array().unwrap().clone()
    }

    async fn provision(&self, uuid: &str, target: &str) {
        let (status, reply) = self
            .call(
                Method::PUT,
                &format!("/v1/nodes/{uuid}/states/provision"),
                Some(json!({"target": target})),
            )
            .await;
        assert_eq!(status, 202, "{target}: {reply}");
    }

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

    async fn wait_agent_gone(&self) {
        let deadline = Instant::now() + STEP;
        while self.machine.agent_running() {
            assert!(Instant::now() < deadline, "agent still running:\n{}", self.machine.all_logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The body the agent posts for the fixture: its inventory, the root disk the no-hints
    /// rule picks (the smallest disk of at least 4 GiB), no BOOTIF, and `error`.
    fn report(&self, error: Option<&str>) -> Value {
        let root_disk = self.inventory["disks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["size"].as_u64().unwrap() >= 4 * GIB)
            .min_by_key(|d| d["size"].as_u64().unwrap())
            .cloned()
            .unwrap();
        json!({
            "inventory": self.inventory,
            "root_disk": root_disk,
            "boot_interface": null,
            "error": error,
            "configuration": {"collectors": ["default", "logs"], "managers": []},
            "logs": "H4sIAAAAAAAAA+3BAQ0AAADCoPdPbQ8HFAAAAAAAAAAAAAAA",
        })
    }

    /// Waits briefly for the agent's own report (the node leaves `inspect wait`), else
    /// posts `report` for the node.
    async fn deliver(&self, uuid: &str, report: Value) {
        let deadline = Instant::now() + AGENT_REPORT_GRACE;
        while Instant::now() < deadline {
            let node = self.node(uuid).await;
            if node["provision_state"] != "inspect wait" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (status, reply) = self
            .call(Method::POST, &format!("/v1/continue_inspection?node_uuid={uuid}"), Some(report))
            .await;
        assert_eq!(status, 202, "{reply}");
        assert_eq!(reply["node"]["uuid"], uuid, "{reply}");
    }

    async fn enrol(&self, name: &str) -> String {
        let (status, node) = self
            .call(Method::POST, "/v1/nodes", Some(json!({"driver": "fake-hardware", "name": name})))
            .await;
        assert_eq!(status, 201, "{node}");
        let uuid = node["uuid"].as_str().unwrap().to_owned();
        self.provision(&uuid, "manage").await;
        self.wait_state(&uuid, "manageable").await;
        uuid
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap();
        self.machine.stop_agent();
    }
}

/// The faultstring of an Ironic error body.
fn fault(reply: &Value) -> String {
    let inner: Value = serde_json::from_str(reply["error_message"].as_str().unwrap_or("{}"))
        .unwrap_or(Value::Null);
    inner["faultstring"].as_str().unwrap_or_default().to_owned()
}

/// A property as a number: Ironic's hooks store integers, ironic-inspector stored them
/// as strings; both mean the same to schedulers.
fn number(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspection_fills_properties_and_ports_and_the_inventory_endpoint() {
    let lab = Lab::start(true, |_| {}).await;
    let uuid = lab.enrol("inspect-1").await;
    let inv = lab.inventory.clone();
    let nic = &inv["interfaces"][0];
    let (status, enrolled) = lab
        .call(
            Method::POST,
            "/v1/ports",
            Some(json!({"node_uuid": uuid, "address": nic["mac_address"]})),
        )
        .await;
    assert_eq!(status, 201, "{enrolled}");
    let (status, reply) = lab.call(Method::GET, &format!("/v1/nodes/{uuid}/inventory"), None).await;
    assert_eq!(status, 404, "{reply}");
    let missing = format!("Node inventory record for node {uuid} could not be found.");
    assert_eq!(fault(&reply), missing);
    let out = run_ferric(&lab.url, &["node", "inventory", &uuid]).await.unwrap();
    assert!(!out.success(), "{}", out.stdout);
    assert!(out.stderr.contains(&missing), "{}", out.stderr);

    lab.provision(&uuid, "inspect").await;
    // An agent with an inspection mode reports within moments of booting, so the node may
    // already be past `inspect wait` when it is first seen.
    let deadline = Instant::now() + STEP;
    loop {
        let node = lab.node(&uuid).await;
        if node["provision_state"] == "inspect wait" || node["provision_state"] == "manageable" {
            assert!(node["inspection_started_at"].is_string(), "{node:#}");
            break;
        }
        assert!(Instant::now() < deadline, "inspection never started: {node:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lab.machine.pxe_boots.load(Ordering::SeqCst), 1, "the ramdisk booted over PXE");

    let report = lab.report(None);
    lab.deliver(&uuid, report.clone()).await;
    let node = lab.wait_state(&uuid, "manageable").await;
    assert_eq!(node["last_error"], Value::Null, "{node:#}");
    assert_eq!(node["power_state"], "power off", "[inspector] power_off: {node:#}");
    assert!(node["inspection_finished_at"].is_string(), "{node:#}");
    assert!(node["driver_internal_info"].get("agent_url").is_none(), "{node:#}");
    lab.wait_agent_gone().await;

    // Properties as the fixture implies them.
    let props = &node["properties"];
    assert_eq!(number(&props["cpus"]), inv["cpu"]["count"].as_u64(), "{props:#}");
    assert_eq!(props["cpu_arch"], inv["cpu"]["architecture"], "{props:#}");
    assert_eq!(number(&props["memory_mb"]), inv["memory"]["physical_mb"].as_u64(), "{props:#}");
    let root_gb = report["root_disk"]["size"].as_u64().unwrap() / GIB;
    assert_eq!(number(&props["local_gb"]), Some(root_gb - 1), "{props:#}");
    let caps = props["capabilities"].as_str().unwrap_or_default();
    assert!(caps.split(',').any(|c| c == "boot_mode:bios"), "{props:#}");

    // The fixture's only NIC, the one with an address, keeps its port, PXE-enabled.
    let ports = lab.ports(&uuid).await;
    assert_eq!(ports.len(), 1, "{ports:#?}");
    assert_eq!(ports[0]["uuid"], enrolled["uuid"], "{ports:#?}");
    assert_eq!(ports[0]["address"], nic["mac_address"], "{ports:#?}");
    assert_eq!(ports[0]["pxe_enabled"], true, "{ports:#?}");

    // The inventory endpoint: the inventory as posted, the rest as plugin data.
    let (status, reply) =
        lab.call_as("1.80", Method::GET, &format!("/v1/nodes/{uuid}/inventory"), None).await;
    assert_eq!(status, 404, "older versions have no inventory endpoint: {reply}");
    let (status, reply) = lab.call(Method::GET, &format!("/v1/nodes/{uuid}/inventory"), None).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["inventory"], inv);
    let plugin = reply["plugin_data"].as_object().unwrap();
    assert_eq!(plugin["root_disk"]["name"], report["root_disk"]["name"], "{plugin:#?}");
    assert_eq!(plugin["error"], Value::Null, "{plugin:#?}");
    for key in ["inventory", "logs"] {
        assert!(!plugin.contains_key(key), "{key} is not plugin data: {plugin:#?}");
    }

    // `ferric node inventory`: the reply as JSON, or a summary for people.
    let out =
        run_ferric(&lab.url, &["node", "inventory", "inspect-1", "-f", "json"]).await.unwrap();
    out.ensure_success("ferric node inventory -f json").unwrap();
    let printed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(printed, reply);
    let out = run_ferric(&lab.url, &["node", "inventory", "inspect-1"]).await.unwrap();
    out.ensure_success("ferric node inventory").unwrap();
    let cells = |needle: &str| -> Vec<String> {
        let line = out.stdout.lines().find(|l| l.contains(needle));
        let line = line.unwrap_or_else(|| panic!("no {needle:?} row:\n{}", out.stdout));
        line.split('|').map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect()
    };
    assert_eq!(cells("CPU count"), ["CPU count", &inv["cpu"]["count"].to_string()]);
    let disk = &report["root_disk"];
    let disk_row = cells(disk["name"].as_str().unwrap());
    assert_eq!(
        disk_row[1],
        format!("{:.1} GiB", disk["size"].as_u64().unwrap() as f64 / GIB as f64)
    );
    let nic_row = cells(nic["name"].as_str().unwrap());
    assert_eq!(nic_row[1], nic["mac_address"].as_str().unwrap(), "{}", out.stdout);
    assert_eq!(nic_row[2], nic["ipv4_address"].as_str().unwrap(), "{}", out.stdout);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reports_abort_and_ramdisk_errors_fail_inspection() {
    let lab = Lab::start(false, |_| {}).await;
    let uuid = lab.enrol("inspect-2").await;
    lab.provision(&uuid, "inspect").await;
    lab.wait_state(&uuid, "inspect wait").await;

    // Malformed reports are refused with the reason and change nothing.
    let with_uuid = format!("/v1/continue_inspection?node_uuid={uuid}");
    let cases: [(&str, Value, &str); 4] = [
        (with_uuid.as_str(), json!([1, 2]), "must be a JSON object"),
        (with_uuid.as_str(), json!({"error": null}), "no \"inventory\" object"),
        (with_uuid.as_str(), json!({"inventory": {"interfaces": []}}), "at least one interface"),
        (
            "/v1/continue_inspection",
            json!({"inventory": {"interfaces": [{"name": "eth0", "mac_address": "zz:zz"}]}}),
            "\"zz:zz\" is not a MAC address",
        ),
    ];
    for (path, body, reason) in cases {
        let (status, reply) = lab.call(Method::POST, path, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {reply}");
        assert!(fault(&reply).contains(reason), "{body}: {reply}");
    }
    let mut huge = serde_json::to_vec(&lab.report(None)).unwrap();
    let padding = format!(",\"padding\":\"{}\"}}", "x".repeat(5 << 20));
    huge.pop();
    huge.extend_from_slice(padding.as_bytes());
    let (status, reply) = lab.call_as("1.110", Method::POST, &with_uuid, Some(huge)).await;
    assert_eq!(status, 413, "{reply}");
    let node = lab.node(&uuid).await;
    assert_eq!(node["provision_state"], "inspect wait", "{node:#}");
    assert!(lab.ports(&uuid).await.is_empty());
    let (status, _) = lab.call(Method::GET, &format!("/v1/nodes/{uuid}/inventory"), None).await;
    assert_eq!(status, 404, "nothing was stored");

    // Abort: inspect failed with Ironic's message, powered off.
    lab.provision(&uuid, "abort").await;
    let node = lab.wait_state(&uuid, "inspect failed").await;
    assert_eq!(node["last_error"], "Inspection was aborted by request.", "{node:#}");
    let deadline = Instant::now() + STEP;
    while lab.node(&uuid).await["power_state"] != "power off" {
        assert!(Instant::now() < deadline, "never powered off");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lab.wait_agent_gone().await;

    // inspect again from inspect failed; the ramdisk reports an error.
    lab.provision(&uuid, "inspect").await;
    lab.wait_state(&uuid, "inspect wait").await;
    assert_eq!(lab.machine.pxe_boots.load(Ordering::SeqCst), 2);
    lab.deliver(&uuid, lab.report(Some("The following errors were encountered:\n* lldp failed")))
        .await;
    let node = lab.wait_state(&uuid, "inspect failed").await;
    assert_eq!(
        node["last_error"],
        "Ramdisk reported error: The following errors were encountered:\n* lldp failed",
        "{node:#}"
    );
    assert_eq!(node["power_state"], "power off", "{node:#}");
    assert!(lab.ports(&uuid).await.is_empty(), "a failed inspection creates no port");
    lab.wait_agent_gone().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inspection_without_a_report_times_out() {
    let lab = Lab::start(false, |config| config.conductor.inspect_wait_timeout = 2).await;
    let uuid = lab.enrol("inspect-3").await;
    lab.provision(&uuid, "inspect").await;
    lab.wait_state(&uuid, "inspect wait").await;
    let node = lab.wait_state(&uuid, "inspect failed").await;
    assert_eq!(node["last_error"], "timeout reached while inspecting the node", "{node:#}");
    assert!(node["inspection_finished_at"].is_null(), "{node:#}");
    // A late report is kept but changes nothing.
    let (status, _) = lab
        .call(
            Method::POST,
            &format!("/v1/continue_inspection?node_uuid={uuid}"),
            Some(lab.report(None)),
        )
        .await;
    assert_eq!(status, 404, "inspect failed does not take reports");
    let node = lab.node(&uuid).await;
    assert_eq!(node["provision_state"], "inspect failed", "{node:#}");
    assert!(lab.ports(&uuid).await.is_empty());
    lab.stop().await;
}

/// The nodes the API lists.
async fn node_uuids(lab: &Lab) -> Vec<String> {
    let (status, reply) = lab.call(Method::GET, "/v1/nodes", None).await;
    assert_eq!(status, 200, "{reply}");
    reply["nodes"].as_array().unwrap().iter().map(|n| n["uuid"].as_str().unwrap().into()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_discovery_enrolls_an_unknown_machine_once() {
    let lab = Lab::start(false, |config| {
        config.inspector.auto_discovery = true;
        config.inspector.discovery_driver = "fake-hardware".into();
        config.inspector.discovery_driver_info =
            json!({"fake_power_delay": 0}).as_object().unwrap().clone();
    })
    .await;
    let mut report = lab.report(None);
    report["inventory"]["bmc_address"] = json!("192.0.2.77");
    let mac = lab.inventory["interfaces"][0]["mac_address"].as_str().unwrap().to_owned();
    report["boot_interface"] = json!(format!("01-{}", mac.replace(':', "-")));

    // Off by default elsewhere; here the unknown machine is enrolled, in enroll.
    let (status, reply) = lab
        .call_as(
            "1.1",
            Method::POST,
            "/v1/continue_inspection",
            Some(serde_json::to_vec(&report).unwrap()),
        )
        .await;
    assert_eq!(status, 202, "{reply}");
    let uuid = reply["uuid"].as_str().unwrap().to_owned();
    assert_eq!(node_uuids(&lab).await, std::slice::from_ref(&uuid));
    let deadline = Instant::now() + STEP;
    let node = loop {
        let node = lab.node(&uuid).await;
        if node["properties"]["cpus"].is_number() || Instant::now() > deadline {
            break node;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(node["provision_state"], "enroll", "{node:#}");
    assert_eq!(node["driver"], "fake-hardware");
    assert_eq!(node["driver_info"]["fake_power_delay"], json!(0), "{node:#}");
    assert_eq!(node["driver_info"]["bmc_address"], json!("192.0.2.77"), "{node:#}");
    assert_eq!(
        node["properties"]["cpus"], lab.inventory["cpu"]["count"],
        "the hooks ran over the discovered machine's report: {node:#}"
    );
    let ports = lab.ports(&uuid).await;
    assert_eq!(ports.len(), 1, "{ports:#?}");
    assert_eq!(ports[0]["address"], json!(mac));
    let (status, stored) =
        lab.call(Method::GET, &format!("/v1/nodes/{uuid}/inventory"), None).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["plugin_data"]["auto_discovered"], json!(true), "{stored:#}");

    // The same machine again (by MAC): the same node, no second enrolment.
    let (status, reply) = lab
        .call_as(
            "1.1",
            Method::POST,
            "/v1/continue_inspection",
            Some(serde_json::to_vec(&report).unwrap()),
        )
        .await;
    assert_eq!((status, reply["uuid"].as_str()), (202, Some(uuid.as_str())), "{reply}");
    // A report naming only the BMC address (a NIC that has no port yet) finds it too.
    let mut by_bmc = report.clone();
    by_bmc["inventory"]["interfaces"] =
        json!([{"name": "eth9", "mac_address": "52:54:00:ab:cd:ef"}]);
    by_bmc["boot_interface"] = Value::Null;
    let (status, reply) = lab.call(Method::POST, "/v1/continue", Some(by_bmc)).await;
    assert_eq!((status, reply["uuid"].as_str()), (200, Some(uuid.as_str())), "{reply}");
    assert_eq!(
        node_uuids(&lab).await,
        std::slice::from_ref(&uuid),
        "exactly one node was enrolled"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discoverd_and_inspector_endpoints_for_old_ramdisks_and_scripts() {
    let lab = Lab::start(false, |_| {}).await;
    let uuid = lab.enrol("legacy").await;
    let mac = lab.inventory["interfaces"][0]["mac_address"].as_str().unwrap().to_owned();
    let (status, port) =
        lab.call(Method::POST, "/v1/ports", Some(json!({"address": mac, "node_uuid": uuid}))).await;
    assert_eq!(status, 201, "{port}");

    // Never inspected: discoverd's status is a 404 in inspector's error shape.
    let status_path = format!("/v1/introspection/{uuid}");
    let (status, reply) = lab.call_as("1.1", Method::GET, &status_path, None).await;
    assert_eq!(status, 404, "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains(&uuid), "{reply}");

    // discoverd's "introspect this node" is the inspect verb.
    let (status, reply) = lab.call_as("1.1", Method::POST, &status_path, None).await;
    assert_eq!(status, 202, "{reply}");
    lab.wait_state(&uuid, "inspect wait").await;
    let (status, reply) = lab.call_as("1.1", Method::GET, &status_path, None).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!((reply["finished"].clone(), reply["error"].clone()), (json!(false), Value::Null));

    // An old ramdisk posts to inspector's /v1/continue and gets {"uuid": ...}.
    let (status, reply) = lab
        .call_as(
            "1.1",
            Method::POST,
            "/v1/continue",
            Some(serde_json::to_vec(&lab.report(None)).unwrap()),
        )
        .await;
    assert_eq!((status, reply.clone()), (200, json!({"uuid": uuid})), "{reply}");
    let node = lab.wait_state(&uuid, "manageable").await;
    assert_eq!(node["properties"]["cpus"], lab.inventory["cpu"]["count"], "{node:#}");
    let (_, reply) = lab.call_as("1.1", Method::GET, &status_path, None).await;
    assert_eq!((reply["finished"].clone(), reply["error"].clone()), (json!(true), Value::Null));

    // A second introspection whose ramdisk reports an error: finished, with the error.
    let (status, _) = lab.call_as("1.1", Method::POST, &status_path, None).await;
    assert_eq!(status, 202);
    lab.wait_state(&uuid, "inspect wait").await;
    let (status, _) = lab
        .call_as(
            "1.1",
            Method::POST,
            "/v1/continue",
            Some(serde_json::to_vec(&lab.report(Some("no disks found"))).unwrap()),
        )
        .await;
    assert_eq!(status, 200);
    lab.wait_state(&uuid, "inspect failed").await;
    let (_, reply) = lab.call_as("1.1", Method::GET, &status_path, None).await;
    assert_eq!(reply["finished"], json!(true), "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("no disks found"), "{reply}");

    // Errors keep inspector's shape: an unknown node, a report nobody owns.
    let (status, reply) =
        lab.call_as("1.1", Method::POST, "/v1/introspection/no-such-node", None).await;
    assert_eq!(status, 404, "{reply}");
    assert!(reply["error"]["message"].is_string(), "{reply}");
    let stray = json!({"inventory": {"interfaces": [{"mac_address": "52:54:00:00:00:01"}]}});
    let (status, reply) = lab.call(Method::POST, "/v1/continue", Some(stray)).await;
    assert_eq!(status, 404, "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("could not be found"));
    assert_eq!(node_uuids(&lab).await, std::slice::from_ref(&uuid), "no auto-discovery by default");
    lab.stop().await;
}
