//! The whole life of a server, driven through the conductor's API as an operator would:
//! enroll (`ipmi` driver, the lab's BMC) → manage → inspect (the ramdisk reports the
//! hardware; properties and ports must match the VM) → provide (automated cleaning in
//! the ramdisk) → deploy a whole-disk qcow2 → the server boots it from its own disk →
//! the disk equals the image → undeploy (cleaning again) → available.
//!
//! Each state change, step and the image write's progress is reported through a
//! [`Narrator`]; the result holds the timings.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::{VmLab, CONDUCTOR_GUEST_URL, MAC};

const API_VERSION: &str = "1.110";
/// How long one provisioning phase may take under TCG before the cycle fails.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the deployed disk may take to boot and print its stamp.
const STAMP_TIMEOUT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(250);

/// Where the cycle's messages go.
pub trait Narrator: Send + Sync {
    fn say(&self, line: &str);
}

/// Prints each line with the time since the narrator was made.
#[derive(Debug)]
pub struct Printer(pub Instant);

impl Narrator for Printer {
    fn say(&self, line: &str) {
        println!("[{:7.1}s] {line}", self.0.elapsed().as_secs_f64());
    }
}

/// The image the cycle deploys: a file in the conductor's image directory.
#[derive(Debug, Clone)]
pub struct DeployImage {
    /// The file name (served at `/images/<name>`).
    pub name: String,
    pub sha256: String,
    /// The qcow2 on the host, for `qemu-img compare`.
    pub path: PathBuf,
    /// The line the deployed system prints on its console once booted.
    pub stamp_line: String,
}

/// How long each part of the cycle took.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub manage: Duration,
    /// inspect → manageable (power-on, ramdisk boot, report, processing, power-off).
    pub inspect: Duration,
    /// provide → available (power-on, ramdisk boot, erase, power-off).
    pub clean: Duration,
    /// deploy → active.
    pub deploy: Duration,
    /// The agent's `write_image` step (as the heartbeats show it).
    pub write_image: Option<Duration>,
    /// Power-on of the disk boot → the stamp on the console.
    pub disk_boot: Duration,
    /// deleted → available.
    pub undeploy: Duration,
    /// Each ramdisk boot: the BMC's power-on → the agent's first heartbeat.
    pub power_on_to_heartbeat: Vec<Duration>,
    /// Enroll → available again.
    pub whole: Duration,
}

impl Timings {
    /// The table the test and the demo print.
    pub fn table(&self) -> String {
        let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
        let heartbeats: Vec<String> = self.power_on_to_heartbeat.iter().map(|d| secs(*d)).collect();
        let mut rows = vec![
            ("power-on → first heartbeat (each ramdisk boot)", heartbeats.join(", ")),
            ("manage (BMC credentials checked)", secs(self.manage)),
            ("inspect: inspect → manageable", secs(self.inspect)),
            ("clean: provide → available", secs(self.clean)),
            ("deploy: deploy → active (qcow2)", secs(self.deploy)),
        ];
        if let Some(write) = self.write_image {
            rows.push(("  of which the write_image step", secs(write)));
        }
        rows.extend([
            ("disk boot: power-on → stamp on the console", secs(self.disk_boot)),
            ("undeploy: deleted → available", secs(self.undeploy)),
            ("whole cycle: enroll → available again", secs(self.whole)),
        ]);
        let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
        let mut out = String::new();
        for (key, value) in rows {
            let pad = width - key.chars().count();
            out.push_str(&format!("{key}{}  {value}\n", " ".repeat(pad)));
        }
        out
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("X-OpenStack-Ironic-API-Version", API_VERSION);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = request.send().await.with_context(|| format!("{method} {path}"))?;
        let status = reply.status();
        let text = reply.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: reply {text:?}"))
    }

    async fn node(&self, uuid: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, &format!("/v1/nodes/{uuid}"), None).await
    }

    async fn provision(&self, uuid: &str, target: &str) -> anyhow::Result<()> {
        let path = format!("/v1/nodes/{uuid}/states/provision");
        self.call(reqwest::Method::PUT, &path, Some(json!({"target": target}))).await.map(|_| ())
    }
}

fn text(node: &Value, key: &str) -> String {
    match &node[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn step_name(step: &Value) -> Option<String> {
    let interface = step.get("interface")?.as_str()?;
    let name = step.get("step")?.as_str()?;
    Some(format!("{interface}.{name}"))
}

/// What waiting for a state saw along the way.
#[derive(Default)]
struct Watch {
    heartbeat_after_power_on: Vec<Duration>,
    step_durations: Vec<(String, Duration)>,
}

/// Polls the node until it reaches `target`, narrating state changes, steps, image-write
/// progress and first heartbeats; fails on a failed state or when `timeout` passes.
async fn wait_for(
    api: &Api,
    lab: &VmLab,
    uuid: &str,
    target: &str,
    narrator: &dyn Narrator,
) -> anyhow::Result<Watch> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut watch = Watch::default();
    let mut last_state = String::new();
    let mut last_step: Option<(String, Instant)> = None;
    let mut last_heartbeat =
        api.node(uuid).await?["driver_internal_info"]["agent_last_heartbeat"].clone();
    let mut power_ons_seen = power_ons(lab).len();
    let mut power_offs_seen =
        lab.chassis_calls().iter().filter(|c| c.args == ["set", "power", "0"]).count();
    let mut waiting_heartbeat: Option<SystemTime> = None;
    let mut last_progress = String::new();
    loop {
        let node = api.node(uuid).await?;
        let state = text(&node, "provision_state");
        if state != last_state {
            let target_state = text(&node, "target_provision_state");
            narrator.say(&format!("provision state: {state} (target {target_state})"));
            last_state = state.clone();
        }
        let offs = lab.chassis_calls().iter().filter(|c| c.args == ["set", "power", "0"]).count();
        if offs > power_offs_seen {
            narrator.say("BMC: power off");
            power_offs_seen = offs;
        }
        let ons = power_ons(lab);
        if ons.len() > power_ons_seen {
            let device = lab_boot_device(lab);
            narrator.say(&format!("BMC: power on (boot device {device})"));
            power_ons_seen = ons.len();
            waiting_heartbeat = ons.last().copied().filter(|_| device == "pxe");
        }
        let heartbeat = node["driver_internal_info"]["agent_last_heartbeat"].clone();
        if heartbeat != last_heartbeat && !heartbeat.is_null() {
            if let Some(on) = waiting_heartbeat.take() {
                let after = SystemTime::now().duration_since(on).unwrap_or_default();
                narrator.say(&format!(
                    "agent: first heartbeat, {:.1} s after power-on",
                    after.as_secs_f64()
                ));
                watch.heartbeat_after_power_on.push(after);
            }
            last_heartbeat = heartbeat;
        }
        let step = ["clean_step", "deploy_step"].iter().find_map(|k| step_name(&node[*k]));
        if step.as_deref() != last_step.as_ref().map(|(s, _)| s.as_str()) {
            if let Some((done, began)) = last_step.take() {
                watch.step_durations.push((done, began.elapsed()));
            }
            if let Some(step) = &step {
                narrator.say(&format!("step {step} started"));
            }
            last_step = step.map(|s| (s, Instant::now()));
        }
        let progress = &node["driver_internal_info"]["deploy_step_progress"];
        if let (Some(done), Some(total)) =
            (progress["bytes_done"].as_u64(), progress["bytes_total"].as_u64())
        {
            let line = format!(
                "image write: {} {:.1} / {:.1} MiB",
                progress["phase"].as_str().unwrap_or("writing"),
                done as f64 / 1048576.0,
                total as f64 / 1048576.0
            );
            if line != last_progress {
                narrator.say(&line);
                last_progress = line;
            }
        }
        if state == target {
            if let Some((done, began)) = last_step.take() {
                watch.step_durations.push((done, began.elapsed()));
            }
            return Ok(watch);
        }
        if state.ends_with("failed") || (state == "enroll" && target != "enroll") {
            bail!("the node went to {state}: {}", text(&node, "last_error"));
        }
        if Instant::now() > deadline {
            bail!("the node is still {state} after {PHASE_TIMEOUT:?} (waiting for {target})");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The times of the server's power-ons (a reset is one too).
fn power_ons(lab: &VmLab) -> Vec<SystemTime> {
    lab.chassis_calls()
        .into_iter()
        .filter(|c| c.args == ["set", "power", "1"] || c.args.get(1).is_some_and(|a| a == "reset"))
        .map(|c| c.at)
        .collect()
}

fn lab_boot_device(lab: &VmLab) -> String {
    super::chassis::boot_device(lab.dir())
}

/// Runs the whole cycle against the conductor at `conductor_url` (its loopback address).
pub async fn run(
    conductor_url: &str,
    lab: &VmLab,
    image: &DeployImage,
    narrator: &dyn Narrator,
) -> anyhow::Result<Timings> {
    let api =
        Api { http: reqwest::Client::new(), base: conductor_url.trim_end_matches('/').to_owned() };
    let mut timings = Timings::default();
    let began = Instant::now();

    let node = api
        .call(
            reqwest::Method::POST,
            "/v1/nodes",
            Some(json!({
                "name": "lab-0",
                "driver": "ipmi",
                "driver_info": lab.driver_info(),
                "properties": {"capabilities": "boot_mode:bios"},
            })),
        )
        .await?;
    let uuid = text(&node, "uuid");
    narrator
        .say(&format!("enrolled node lab-0 ({uuid}), driver ipmi at 127.0.0.1:{}", lab.ipmi_port));
    api.call(reqwest::Method::POST, "/v1/ports", Some(json!({"address": MAC, "node_uuid": uuid})))
        .await?;
    narrator.say(&format!("port {MAC} (the server's NIC; iPXE boots from it)"));

    let at = Instant::now();
    api.provision(&uuid, "manage").await?;
    wait_for(&api, lab, &uuid, "manageable", narrator).await?;
    timings.manage = at.elapsed();

    let at = Instant::now();
    api.provision(&uuid, "inspect").await?;
    let watch = wait_for(&api, lab, &uuid, "manageable", narrator).await?;
    timings.inspect = at.elapsed();
    timings.power_on_to_heartbeat.extend(watch.heartbeat_after_power_on);
    check_inspection(&api, &uuid, narrator).await?;

    let at = Instant::now();
    api.provision(&uuid, "provide").await?;
    let watch = wait_for(&api, lab, &uuid, "available", narrator).await?;
    timings.clean = at.elapsed();
    timings.power_on_to_heartbeat.extend(watch.heartbeat_after_power_on);
    narrator.say(&format!("cleaned in {:.1} s", timings.clean.as_secs_f64()));

    let url = format!("{CONDUCTOR_GUEST_URL}/images/{}", image.name);
    let patch = json!([
        {"op": "add", "path": "/instance_info/image_source", "value": url},
        {"op": "add", "path": "/instance_info/image_os_hash_algo", "value": "sha256"},
        {"op": "add", "path": "/instance_info/image_os_hash_value", "value": image.sha256},
    ]);
    api.call(reqwest::Method::PATCH, &format!("/v1/nodes/{uuid}"), Some(patch)).await?;
    narrator.say(&format!("instance_info: image_source {url} (sha256 {})", image.sha256));
    let at = Instant::now();
    api.provision(&uuid, "active").await?;
    let watch = wait_for(&api, lab, &uuid, "active", narrator).await?;
    timings.deploy = at.elapsed();
    timings.power_on_to_heartbeat.extend(watch.heartbeat_after_power_on);
    timings.write_image =
        watch.step_durations.iter().find(|(s, _)| s == "deploy.write_image").map(|(_, d)| *d);
    narrator.say(&format!("deployed in {:.1} s", timings.deploy.as_secs_f64()));

    // The server now boots from its own disk.
    let boot_device = lab_boot_device(lab);
    if boot_device != "default" {
        bail!("after the deploy the BMC's boot device is {boot_device}, not the disk");
    }
    let disk_on = power_ons(lab).last().copied().context("the server was never powered on")?;
    let deadline = Instant::now() + STAMP_TIMEOUT;
    loop {
        if lab.latest_console().contains(&image.stamp_line) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the deployed system did not print {:?} within {STAMP_TIMEOUT:?}",
                image.stamp_line
            );
        }
        tokio::time::sleep(POLL).await;
    }
    timings.disk_boot = SystemTime::now().duration_since(disk_on).unwrap_or_default();
    narrator.say(&format!(
        "the server booted its disk: {:?} on its console, {:.1} s after power-on",
        image.stamp_line,
        timings.disk_boot.as_secs_f64()
    ));
    compare(&lab.disk, &image.path)?;
    narrator.say("qemu-img compare: the server's disk holds exactly the image");

    let at = Instant::now();
    api.provision(&uuid, "deleted").await?;
    let watch = wait_for(&api, lab, &uuid, "available", narrator).await?;
    timings.undeploy = at.elapsed();
    timings.power_on_to_heartbeat.extend(watch.heartbeat_after_power_on);
    timings.whole = began.elapsed();
    narrator.say(&format!(
        "undeployed and cleaned in {:.1} s; whole cycle {:.1} s",
        timings.undeploy.as_secs_f64(),
        timings.whole.as_secs_f64()
    ));
    Ok(timings)
}

/// What inspection must have found: the lab machine itself.
async fn check_inspection(api: &Api, uuid: &str, narrator: &dyn Narrator) -> anyhow::Result<()> {
    let node = api.node(uuid).await?;
    let properties = &node["properties"];
    narrator.say(&format!(
        "inspected: cpus {}, cpu_arch {}, memory_mb {}, local_gb {}, capabilities {}",
        properties["cpus"],
        properties["cpu_arch"],
        properties["memory_mb"],
        properties["local_gb"],
        properties["capabilities"]
    ));
    let expected_gb = super::stack::DISK_BYTES / (1 << 30) - 1;
    let memory = properties["memory_mb"].as_u64().unwrap_or(0);
    if properties["cpus"] != json!(1)
        || properties["cpu_arch"] != json!("x86_64")
        || properties["local_gb"] != json!(expected_gb)
        || !(u64::from(super::MEMORY_MIB) - 64..=u64::from(super::MEMORY_MIB)).contains(&memory)
    {
        bail!(
            "inspection does not describe the lab machine (1 CPU, x86_64, {} MiB, {expected_gb} \
             GiB after the 1 GiB Ironic keeps): {properties}",
            super::MEMORY_MIB
        );
    }
    let ports =
        api.call(reqwest::Method::GET, &format!("/v1/ports/detail?node={uuid}"), None).await?;
    let ports = ports["ports"].as_array().cloned().unwrap_or_default();
    let macs: Vec<(&str, bool)> = ports
        .iter()
        .map(|p| (p["address"].as_str().unwrap_or(""), p["pxe_enabled"] == json!(true)))
        .collect();
    if macs != [(MAC, true)] {
        bail!("after inspection the node's ports are {macs:?}, not the VM's NIC {MAC} (PXE)");
    }
    let inventory =
        api.call(reqwest::Method::GET, &format!("/v1/nodes/{uuid}/inventory"), None).await?;
    let disks = inventory["inventory"]["disks"].as_array().map_or(0, Vec::len);
    if disks == 0 || inventory["plugin_data"].is_null() {
        bail!("GET /v1/nodes/{uuid}/inventory lacks the disks or plugin_data: {inventory}");
    }
    Ok(())
}

/// `qemu-img compare` of the server's disk (raw, possibly in use: `-U`) and the image.
fn compare(disk: &std::path::Path, image: &std::path::Path) -> anyhow::Result<()> {
    let out = Command::new("qemu-img")
        .args(["compare", "-U", "-f", "raw", "-F", "qcow2"])
        .arg(disk)
        .arg(image)
        .output()
        .context("running qemu-img (Debian package qemu-utils)")?;
    if !out.status.success() {
        bail!(
            "qemu-img compare: the server's disk differs from the image: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
