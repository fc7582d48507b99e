//! Building the inspection report: the JSON object ironic-python-agent's collectors
//! produce and Ironic's `continue_inspection` (or ironic-inspector's `/v1/continue`)
//! consumes.
//!
//! Collectors, by `ipa-inspection-collectors` name:
//! - `default`: `inventory`, `root_disk` (the disk the no-hints rule would deploy to,
//!   left out when none qualifies), `boot_interface` (the raw `BOOTIF`, which Ironic
//!   normalizes), `configuration`;
//! - `logs`: `logs`, a base64 gzipped tar of the agent log and system files;
//! - `lldp`: `lldp_raw`, also produced when `ipa-collect-lldp` is set, which additionally
//!   fills the inventory's `interfaces[].lldp`.
//!
//! A collector that fails does not stop the others: every failure is listed in `error`,
//! and the report is posted anyway, because on an unknown machine the partial data and
//! the logs are the only way to find out what went wrong.

use std::collections::BTreeMap;
use std::time::Duration;

use ferric_shared::inventory::{BlockDevice, Inventory};
use serde_json::{json, Map, Value};

use super::lldp::LldpCapture;
use crate::commands::system_logs;
use crate::config::AgentConfig;
use crate::executor::error_chain;
use crate::inventory::{self, InventoryError, InventorySources};
use crate::target_disk;

/// The hardware manager inspection reports in `configuration.managers`, as the command
/// API reports it.
pub const HARDWARE_MANAGER: (&str, &str) = ("generic_hardware_manager", "1.2");

/// What the report is built from.
#[derive(Debug)]
pub struct ReportInputs<'a> {
    pub sources: &'a InventorySources,
    /// `ipa-inspection-collectors`.
    pub collectors: &'a [String],
    /// `ipa-collect-lldp`.
    pub collect_lldp: bool,
    /// `ipa-lldp-timeout`.
    pub lldp_timeout: Duration,
    /// The agent's own log so far.
    pub agent_log: &'a [u8],
}

impl<'a> ReportInputs<'a> {
    /// The inputs `config` asks for.
    pub fn from_config(
        config: &'a AgentConfig,
        sources: &'a InventorySources,
        agent_log: &'a [u8],
    ) -> Self {
        Self {
            sources,
            collectors: &config.inspection_collectors,
            collect_lldp: config.collect_lldp,
            lldp_timeout: config.lldp_timeout,
            agent_log,
        }
    }

    fn wants(&self, collector: &str) -> bool {
        self.collectors.iter().any(|c| c == collector)
    }
}

/// Builds the report. `listen_lldp` is called at most once, with the inventory's NIC
/// names and the timeout, when LLDP is wanted.
pub fn build_report(
    inputs: &ReportInputs<'_>,
    listen_lldp: impl FnOnce(&[String], Duration) -> LldpCapture,
) -> Value {
    let mut data = Map::new();
    let mut failures: Vec<String> = Vec::new();

    let mut inventory = inventory::collect(inputs.sources);
    let wants_lldp_raw = inputs.collect_lldp || inputs.wants("lldp");
    let lldp = if wants_lldp_raw {
        let names: Vec<String> = match &inventory {
            Ok(inv) => inv.interfaces.iter().map(|i| i.name.clone()).collect(),
            Err(_) => Vec::new(),
        };
        let capture = listen_lldp(&names, inputs.lldp_timeout);
        for failure in &capture.failures {
            tracing::warn!(error = %error_chain(failure), "LLDP capture incomplete");
        }
        Some(capture.frames)
    } else {
        None
    };
    if let (true, Ok(inv), Some(frames)) = (inputs.collect_lldp, &mut inventory, &lldp) {
        for nic in &mut inv.interfaces {
            nic.lldp = frames.get(&nic.name).cloned();
        }
    }

    for name in inputs.collectors {
        match name.as_str() {
            "default" => collect_default(inputs, &inventory, &mut data, &mut failures),
            "logs" => match logs(inputs, &inventory) {
                Ok(archive) => {
                    data.insert("logs".into(), Value::String(archive));
                }
                Err(e) => tracing::warn!(error = %error_chain(&e), "cannot collect logs"),
            },
            // Reported below whether or not it was named: `ipa-collect-lldp` asks too.
            "lldp" => {}
            other => failures.push(format!("collector {other} is not supported")),
        }
    }
    if let Some(frames) = lldp {
        data.insert("lldp_raw".into(), lldp_raw(&frames));
    }
    let error = if failures.is_empty() {
        Value::Null
    } else {
        let mut text = String::from("The following errors were encountered:");
        for f in &failures {
            text.push_str("\n* ");
            text.push_str(f);
        }
        Value::String(text)
    };
    data.insert("error".into(), error);
    Value::Object(data)
}

fn collect_default(
    inputs: &ReportInputs<'_>,
    inventory: &Result<Inventory, InventoryError>,
    data: &mut Map<String, Value>,
    failures: &mut Vec<String>,
) {
    match inventory {
        Ok(inv) => match serde_json::to_value(inv) {
            Ok(v) => {
                data.insert("inventory".into(), v);
            }
            Err(e) => failures.push(format!("collector default failed: encoding: {e}")),
        },
        Err(e) => failures.push(format!("collector default failed: {}", error_chain(e))),
    }
    if let Ok(inv) = inventory {
        match root_disk(inputs, inv) {
            Some(disk) => match serde_json::to_value(disk) {
                Ok(v) => {
                    data.insert("root_disk".into(), v);
                }
                Err(e) => tracing::warn!(error = %e, "cannot encode the root disk"),
            },
            None => tracing::warn!("no suitable root device detected"),
        }
    }
    let boot_interface = match inventory {
        Ok(inv) => inv.boot.pxe_interface.clone(),
        Err(_) => inputs.sources.bootif.clone(),
    };
    data.insert("boot_interface".into(), json!(boot_interface));
    let (manager, version) = HARDWARE_MANAGER;
    data.insert(
        "configuration".into(),
        json!({
            "collectors": inputs.collectors,
            "managers": [{"name": manager, "version": version}],
        }),
    );
}

/// The inventory disk the no-hints rule would deploy to.
fn root_disk<'i>(inputs: &ReportInputs<'_>, inventory: &'i Inventory) -> Option<&'i BlockDevice> {
    match target_disk::select(&inputs.sources.host, &json!({})) {
        Ok(chosen) => inventory.disks.iter().find(|d| d.name == chosen.name),
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "no default root disk");
            None
        }
    }
}

fn logs(
    inputs: &ReportInputs<'_>,
    inventory: &Result<Inventory, InventoryError>,
) -> Result<String, system_logs::SystemLogsError> {
    let inventory = match inventory {
        Ok(inv) => Ok(inv.clone()),
        // The error is not cloneable; reading again reproduces it (or recovers).
        Err(_) => inventory::collect(inputs.sources),
    };
    system_logs::collect(&inputs.sources.host, inputs.agent_log, inventory)
}

fn lldp_raw(frames: &BTreeMap<String, super::lldp::Tlvs>) -> Value {
    let map: Map<String, Value> =
        frames.iter().map(|(name, tlvs)| (name.clone(), json!(tlvs))).collect();
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::host::HostRoot;
    use crate::inspect::lldp::LldpCapture;
    use std::io::Read;

    fn tree(builder: fixtures::HostBuilder) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        builder.build(dir.path()).unwrap();
        dir
    }

    fn sources(dir: &tempfile::TempDir, bootif: Option<&str>) -> InventorySources {
        InventorySources::new(HostRoot::new(dir.path()), bootif.map(str::to_owned))
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn no_lldp(_: &[String], _: Duration) -> LldpCapture {
        panic!("LLDP was not asked for")
    }

    fn archive_names(b64: &str) -> Vec<String> {
        use base64::Engine as _;
        let gz = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut tar_bytes).unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn inspect_default_and_logs_collectors_build_ipa_keys() {
        let dir = tree(fixtures::dual_socket_server());
        let sources = sources(&dir, Some("01-3c-fd-fe-aa-bb-01"));
        let collectors = names(&["default", "logs"]);
        let inputs = ReportInputs {
            sources: &sources,
            collectors: &collectors,
            collect_lldp: false,
            lldp_timeout: Duration::from_secs(30),
            agent_log: b"agent says hello\n",
        };
        let report = build_report(&inputs, no_lldp);
        let keys: Vec<&str> = report.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["boot_interface", "configuration", "error", "inventory", "logs", "root_disk"]
        );
        assert_eq!(report["error"], Value::Null);
        assert_eq!(report["boot_interface"], "01-3c-fd-fe-aa-bb-01");
        assert_eq!(report["inventory"]["boot"]["pxe_interface"], "01-3c-fd-fe-aa-bb-01");
        assert_eq!(
            report["configuration"],
            json!({"collectors": ["default", "logs"],
                   "managers": [{"name": "generic_hardware_manager", "version": "1.2"}]})
        );
        let chosen = target_disk::select(&sources.host, &json!({})).unwrap();
        assert_eq!(report["root_disk"]["name"], chosen.name.as_str());
        let disks = report["inventory"]["disks"].as_array().unwrap();
        assert!(disks.contains(&report["root_disk"]), "root_disk must be an inventory disk");
        let entries = archive_names(report["logs"].as_str().unwrap());
        assert!(entries.iter().any(|e| e == "ferric-agent.log"), "{entries:?}");
        assert!(report.get("lldp_raw").is_none());
    }

    #[test]
    fn inspect_lldp_fills_lldp_raw_and_the_inventory() {
        let dir = tree(fixtures::dual_socket_server());
        let sources = sources(&dir, None);
        let collectors = names(&["default"]);
        let inputs = ReportInputs {
            sources: &sources,
            collectors: &collectors,
            collect_lldp: true,
            lldp_timeout: Duration::from_millis(1234),
            agent_log: b"",
        };
        let mut asked = None;
        let report = build_report(&inputs, |nics, timeout| {
            asked = Some((nics.to_vec(), timeout));
            let first = nics[0].clone();
            LldpCapture {
                frames: BTreeMap::from([(first, vec![(1, "04aabbccddeeff".to_owned())])]),
                failures: vec![],
            }
        });
        let inventory_nics: Vec<String> = report["inventory"]["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect();
        let (nics, timeout) = asked.unwrap();
        assert_eq!(nics, inventory_nics);
        assert!(nics.len() >= 2, "the fixture has several NICs");
        assert_eq!(timeout, Duration::from_millis(1234));
        assert_eq!(report["lldp_raw"], json!({ nics[0].clone(): [[1, "04aabbccddeeff"]] }));
        let interfaces = report["inventory"]["interfaces"].as_array().unwrap();
        assert_eq!(interfaces[0]["lldp"], json!([[1, "04aabbccddeeff"]]));
        assert_eq!(interfaces[1]["lldp"], Value::Null);
        assert_eq!(report["boot_interface"], Value::Null);
        assert!(report.get("logs").is_none());
    }

    #[test]
    fn inspect_failures_are_reported_and_the_rest_still_collected() {
        let dir = tree(fixtures::bios_vm());
        // Without /proc/cpuinfo the inventory cannot be read.
        std::fs::remove_file(dir.path().join("proc/cpuinfo")).unwrap();
        let sources = sources(&dir, Some("52:54:00:12:34:56"));
        let collectors = names(&["default", "extra-hardware", "logs", "lldp"]);
        let inputs = ReportInputs {
            sources: &sources,
            collectors: &collectors,
            collect_lldp: false,
            lldp_timeout: Duration::from_secs(1),
            agent_log: b"log line\n",
        };
        let report = build_report(&inputs, |nics, _| {
            assert!(nics.is_empty());
            LldpCapture::default()
        });
        let error = report["error"].as_str().unwrap();
        assert!(error.starts_with("The following errors were encountered:\n* "), "{error}");
        assert!(error.contains("collector default failed: reading /proc/cpuinfo"), "{error}");
        assert!(error.contains("* collector extra-hardware is not supported"), "{error}");
        assert!(report.get("inventory").is_none());
        assert!(report.get("root_disk").is_none());
        assert_eq!(report["boot_interface"], "52:54:00:12:34:56");
        assert_eq!(report["lldp_raw"], json!({}));
        let entries = archive_names(report["logs"].as_str().unwrap());
        assert!(entries.iter().any(|e| e == "collection-errors"), "{entries:?}");
    }
}
