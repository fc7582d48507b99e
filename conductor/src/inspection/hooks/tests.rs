//! Recorded reports and helpers shared by the hooks' tests, and the tests of
//! [`process`] itself.
//!
//! The reports under `testdata/` were recorded by running `ferric-agent inventory
//! --host-root` over the trees `ferric-lab fixture bios-vm|dual-socket` writes, wrapped as
//! the ramdisk posts them: `boot_interface` is the fixture's `BOOTIF` (none for bios-vm)
//! and `root_disk` the disk the no-hints rule picks (bios-vm: vda, dual-socket: sda).

use serde_json::{json, Value};

use super::process;
use crate::config::InspectorConfig;
use crate::inspection::{HookName, InspectionError, InspectionOutcome, DEFAULT_HOOKS};
use crate::store::{Node, Port};

pub(super) fn bios_vm() -> Value {
    serde_json::from_str(include_str!("../testdata/bios-vm.json")).unwrap()
}

pub(super) fn dual_socket() -> Value {
    serde_json::from_str(include_str!("../testdata/dual-socket.json")).unwrap()
}

pub(super) fn config(hooks: &[HookName]) -> InspectorConfig {
    InspectorConfig { hooks: hooks.to_vec(), ..InspectorConfig::default() }
}

pub(super) fn node(properties: Value) -> Node {
    let mut node = Node::new("fake-hardware");
    node.properties = properties.as_object().cloned().unwrap_or_default();
    node
}

pub(super) fn port(node: &Node, address: &str, pxe_enabled: bool) -> Port {
    Port { pxe_enabled, ..Port::new(node.uuid, address) }
}

pub(super) fn run_hooks(
    config: &InspectorConfig,
    node: &Node,
    ports: &[Port],
    data: &Value,
) -> Result<InspectionOutcome, InspectionError> {
    process(config, node, ports, data)
}

#[test]
fn ramdisk_error_table() {
    let with_error = |error: Value| {
        let mut data = bios_vm();
        data["error"] = error;
        data
    };
    let cases = [
        (bios_vm(), None),
        (with_error(Value::Null), None),
        (with_error(json!("")), None),
        (with_error(json!("  ")), None),
        (with_error(json!(false)), None),
        (with_error(json!([])), None),
        (with_error(json!({})), None),
        (with_error(json!(0)), None),
        (with_error(json!(true)), Some("Ramdisk reported error: true")),
        (
            with_error(json!("collector lldp failed: no such device")),
            Some("Ramdisk reported error: collector lldp failed: no such device"),
        ),
        (with_error(json!(["disk", "nic"])), Some("Ramdisk reported error: [\"disk\",\"nic\"]")),
        // The ramdisk's error wins even when it sent no inventory.
        (json!({"error": "no inventory"}), Some("Ramdisk reported error: no inventory")),
    ];
    for (data, want) in cases {
        let got = process(&config(&[HookName::RamdiskError]), &node(json!({})), &[], &data);
        match want {
            None => assert_eq!(got, Ok(InspectionOutcome::default()), "{data}"),
            Some(message) => {
                let err = got.unwrap_err();
                assert!(matches!(err, InspectionError::Ramdisk(_)));
                assert_eq!(err.to_string(), message);
            }
        }
    }
}

#[test]
fn process_runs_the_configured_hooks_only() {
    let out = process(&config(&[]), &node(json!({})), &[], &dual_socket()).unwrap();
    assert_eq!(out, InspectionOutcome::default());

    let out =
        process(&config(&[HookName::Properties]), &node(json!({})), &[], &dual_socket()).unwrap();
    assert!(out.plugin_data.is_empty());
    assert!(out.new_ports.is_empty());
    assert_eq!(out.properties["cpus"], 16);
}

#[test]
fn process_default_hooks_over_the_dual_socket_report() {
    let node = node(json!({"capabilities": "profile:compute"}));
    let stale = port(&node, "aa:aa:aa:aa:aa:aa", true);
    let config = InspectorConfig::default();
    assert_eq!(config.hooks, DEFAULT_HOOKS);
    let mut data = dual_socket();
    data["lldp_raw"] = serde_json::from_str(include_str!("../testdata/lldp-raw.json")).unwrap();
    let out = process(&config, &node, &[stale], &data).unwrap();
    assert_eq!(out.properties["cpus"], 16);
    assert_eq!(out.properties["memory_mb"], 65536);
    assert_eq!(out.properties["local_gb"], 446);
    assert_eq!(out.properties["cpu_arch"], "x86_64");
    assert_eq!(
        out.properties["capabilities"],
        "profile:compute,boot_mode:uefi,cpu_vt:true,pci_gpu_devices:1"
    );
    assert_eq!(out.new_ports.len(), 1);
    assert_eq!(out.new_ports[0].address, "3c:fd:fe:a0:00:01");
    assert!(out.new_ports[0].pxe_enabled);
    assert_eq!(out.new_ports[0].local_link_connection["switch_id"], "00:1c:73:aa:bb:cc");
    assert_eq!(out.new_ports[0].local_link_connection["port_id"], "Ethernet1/7");
    // keep_ports defaults to "all": the stale port stays but no longer boots.
    assert!(out.delete_ports.is_empty());
    assert_eq!(out.port_updates.len(), 1);
    assert_eq!(out.port_updates[0].pxe_enabled, Some(false));
    for key in [
        "all_interfaces",
        "valid_interfaces",
        "boot_interface",
        "root_disk",
        "pci_devices",
        "parsed_lldp",
    ] {
        assert!(out.plugin_data.contains_key(key), "{key}");
    }
    assert_eq!(out.plugin_data["root_disk"]["name"], "/dev/sda");
}

#[test]
fn process_refuses_a_report_that_is_not_an_object() {
    for data in [json!(null), json!([1]), json!("inventory")] {
        let err = process(&InspectorConfig::default(), &node(json!({})), &[], &data).unwrap_err();
        assert!(matches!(err, InspectionError::Invalid { hook: "process", .. }), "{err:?}");
    }
}

#[test]
fn a_failing_hook_stops_processing() {
    let data = dual_socket();
    let config = config(&[HookName::Properties, HookName::Ports]);
    let node = node(json!({"root_device": {"size": ">= 30000"}}));
    let err = process(&config, &node, &[], &data).unwrap_err();
    let InspectionError::Invalid { hook, reason } = &err else { panic!("{err:?}") };
    assert_eq!(*hook, "properties");
    assert!(reason.contains("No disks satisfied root device hints"), "{reason}");
}
