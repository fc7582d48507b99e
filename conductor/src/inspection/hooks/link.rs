//! `lldp`: the switch each NIC is cabled to, from LLDP, into `plugin_data.parsed_lldp`
//! and the ports' `local_link_connection`.

use serde_json::{json, Map, Value};

use super::interfaces::{interfaces, port_mac};
use super::{port_update, str_field, Ctx};
use crate::inspection::lldp::{self, IdValue, LldpInfo};
use crate::inspection::{HookName, InspectionError, InspectionOutcome};
use crate::store::normalize_mac;

/// One LLDPDU comes per physical link, so more interfaces than this are not real NICs
/// worth the parsing (Ironic applies the same cap).
const MAX_INTERFACES: usize = 64;

/// Chassis ID subtype of a MAC address: the only form Ironic accepts as `switch_id`.
const CHASSIS_SUBTYPE_MAC: u8 = 4;

/// The `local_link_connection` keys LLDP can fill: `switch_id` (chassis MAC),
/// `port_id`, `switch_info` (system name).
fn link_fields(info: &LldpInfo) -> Vec<(&'static str, String)> {
    let mut fields = Vec::new();
    if let Some(chassis) = &info.chassis_id {
        if chassis.subtype == CHASSIS_SUBTYPE_MAC {
            if let IdValue::Mac(_) = chassis.value {
                fields.push(("switch_id", chassis.value.to_string()));
            }
        }
    }
    if let Some(port) = &info.port_id {
        fields.push(("port_id", port.value.to_string()));
    }
    if let Some(name) = &info.system_name {
        fields.push(("switch_info", name.clone()));
    }
    fields
}

/// Adds the fields a connection lacks; values already there (set by the operator or an
/// earlier inspection) are kept. True when something was added.
fn fill(connection: &mut Map<String, Value>, fields: &[(&'static str, String)]) -> bool {
    let mut changed = false;
    for (key, value) in fields {
        if !connection.contains_key(*key) {
            connection.insert((*key).to_owned(), json!(value));
            changed = true;
        }
    }
    changed
}

/// `lldp`: parses each NIC's TLVs (`lldp_raw[name]`, else the inventory's
/// `interfaces[].lldp`) and fills `local_link_connection` of the NIC's port, existing
/// or created by `ports`.
pub(super) fn lldp(ctx: &Ctx<'_>, out: &mut InspectionOutcome) -> Result<(), InspectionError> {
    let hook = HookName::Lldp;
    let raw = ctx.data.get("lldp_raw").and_then(Value::as_object);
    let listed = ctx.inventory(hook)?.get("interfaces").and_then(Value::as_array);
    let mut parsed = Map::new();
    let mut links: Vec<(String, Vec<(&'static str, String)>)> = Vec::new();
    for iface in listed.into_iter().flatten().filter_map(Value::as_object).take(MAX_INTERFACES) {
        let Some(name) = str_field(iface, "name") else { continue };
        let from_raw = raw.and_then(|r| r.get(name)).and_then(Value::as_array);
        let Some(tlvs) = from_raw
            .filter(|t| !t.is_empty())
            .or_else(|| iface.get("lldp").and_then(Value::as_array))
        else {
            continue;
        };
        let (info, errors) = lldp::parse_reported(tlvs);
        for err in &errors {
            tracing::warn!(node = %ctx.node.uuid, interface = name, error = %err,
                "ignoring an LLDP TLV");
        }
        if info.is_empty() {
            continue;
        }
        parsed.insert(name.to_owned(), Value::Object(info.to_json()));
        let mac = str_field(iface, "mac_address").and_then(|m| normalize_mac(m).ok());
        if let Some(mac) = mac {
            links.push((mac, link_fields(&info)));
        }
    }
    if !parsed.is_empty() {
        out.plugin_data.insert("parsed_lldp".into(), Value::Object(parsed));
    }
    if links.is_empty() {
        return Ok(());
    }

    // Only NICs that count as interfaces (valid MAC, not loopback) get connections,
    // whatever `add_ports` selected.
    let known = match interfaces(ctx, hook) {
        Ok(ifaces) => ifaces.all.into_iter().map(|nic| nic.mac).collect::<Vec<_>>(),
        // add_ports found nothing suitable: that is `validate_interfaces`' verdict to
        // give, not this hook's; no port will be made anyway.
        Err(_) => return Ok(()),
    };
    for (mac, fields) in links.iter().filter(|(mac, _)| known.contains(mac)) {
        if fields.is_empty() {
            continue;
        }
        if let Some(new_port) = out.new_ports.iter_mut().find(|p| p.address == *mac) {
            fill(&mut new_port.local_link_connection, fields);
            continue;
        }
        let existing = ctx.ports.iter().find(|p| port_mac(&p.address) == *mac);
        let Some(port) = existing else { continue };
        if out.delete_ports.contains(&port.uuid) {
            continue;
        }
        let mut connection = port.local_link_connection.clone();
        if fill(&mut connection, fields) {
            port_update(out, mac).local_link_connection = Some(connection);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{bios_vm, config, dual_socket, node, port, run_hooks};
    use super::*;
    use crate::inspection::AddPorts;

    /// The dual-socket report with hand-written LLDP TLVs (testdata/lldp-raw.json):
    ///
    /// eno1, a ToR switch:
    /// - chassis ID `04 00:1c:73:aa:bb:cc` (subtype 4, MAC);
    /// - port ID `05 "Ethernet1/7"` (subtype 5, interface name); TTL `00 78` (120 s);
    /// - port description "server-07 eno1", system name "tor-a1.example.net";
    /// - system capabilities `0014 0014` (bridge, router: bits 2 and 4);
    /// - management address `05 01 0a000001 02 00000001 00` (IPv4 10.0.0.1, ifIndex 1);
    /// - 802.1 (`00 80 c2`) subtype 1 PVID `0064` (100); subtype 3 VLAN names
    ///   `0064 04 "prov"` and `00c8 07 "storage"`; 802.3 (`00 12 0f`) subtype 4 maximum
    ///   frame size `2328` (9000);
    /// - then a PVID TLV cut short, a port ID that is not hex, and End.
    ///
    /// ens3f0, a switch naming itself locally: chassis ID `07 "SW-B"` (subtype 7, not a
    /// MAC, so no `switch_id`), port ID `03 00:1c:73:00:00:31` (subtype 3, MAC), no
    /// system name.
    fn with_lldp(mut data: Value) -> Value {
        data["lldp_raw"] = serde_json::from_str(include_str!("../testdata/lldp-raw.json")).unwrap();
        data
    }

    fn eno1_link() -> Value {
        json!({"switch_id": "00:1c:73:aa:bb:cc", "port_id": "Ethernet1/7",
               "switch_info": "tor-a1.example.net"})
    }

    #[test]
    fn parsed_lldp_of_the_recorded_tlvs() {
        let out =
            run_hooks(&config(&[HookName::Lldp]), &node(json!({})), &[], &with_lldp(dual_socket()))
                .unwrap();
        let parsed = &out.plugin_data["parsed_lldp"];
        assert_eq!(
            parsed["eno1"],
            json!({
                "switch_chassis_id": "00:1c:73:aa:bb:cc",
                "switch_port_id": "Ethernet1/7",
                "switch_port_description": "server-07 eno1",
                "switch_system_name": "tor-a1.example.net",
                "switch_capabilities_support": ["Bridge", "Router"],
                "switch_capabilities_enabled": ["Bridge", "Router"],
                "switch_mgmt_addresses": ["10.0.0.1"],
                "switch_port_untagged_vlan_id": 100,
                "switch_port_vlans": [{"id": 100, "name": "prov"}, {"id": 200, "name": "storage"}],
                "switch_port_mtu": 9000
            })
        );
        assert_eq!(
            parsed["ens3f0"],
            json!({"switch_chassis_id": "SW-B", "switch_port_id": "00:1c:73:00:00:31"})
        );
        assert_eq!(parsed.as_object().unwrap().len(), 2);
        // No port exists and `ports` did not run: nothing to connect.
        assert!(out.port_updates.is_empty() && out.new_ports.is_empty());
    }

    /// Which port gets which `local_link_connection`.
    #[test]
    fn local_link_connection_table() {
        let n = node(json!({}));
        let eno1_bare = port(&n, "3c:fd:fe:a0:00:01", true);
        let mut eno1_operator = eno1_bare.clone();
        eno1_operator.local_link_connection =
            json!({"port_id": "Eth1/7"}).as_object().cloned().unwrap();
        let mut eno1_done = eno1_bare.clone();
        eno1_done.local_link_connection = eno1_link().as_object().cloned().unwrap();
        let ens3f0 = port(&n, "B8:59:9F:C0:00:10", false);
        type Want<'a> = &'a [(&'a str, Value)];
        let cases: [(&str, AddPorts, Vec<crate::store::Port>, Want, Want); 5] = [
            (
                "new ports from `ports`",
                AddPorts::All,
                vec![],
                &[
                    ("3c:fd:fe:a0:00:01", eno1_link()),
                    ("3c:fd:fe:a0:00:02", json!({})),
                    ("b8:59:9f:c0:00:10", json!({"port_id": "00:1c:73:00:00:31"})),
                    ("b8:59:9f:c0:00:11", json!({})),
                ],
                &[],
            ),
            (
                "existing bare port",
                AddPorts::Pxe,
                vec![eno1_bare],
                &[],
                &[("3c:fd:fe:a0:00:01", eno1_link())],
            ),
            (
                "operator's port_id kept",
                AddPorts::Pxe,
                vec![eno1_operator],
                &[],
                &[(
                    "3c:fd:fe:a0:00:01",
                    json!({"switch_id": "00:1c:73:aa:bb:cc",
                    "port_id": "Eth1/7", "switch_info": "tor-a1.example.net"}),
                )],
            ),
            ("already connected: no update", AddPorts::Pxe, vec![eno1_done], &[], &[]),
            (
                "existing port of a NIC `ports` did not add",
                AddPorts::Pxe,
                vec![ens3f0],
                &[],
                &[("b8:59:9f:c0:00:10", json!({"port_id": "00:1c:73:00:00:31"}))],
            ),
        ];
        for (label, add_ports, ports, want_new, want_updates) in cases {
            let mut cfg = config(&[HookName::Ports, HookName::Lldp]);
            cfg.add_ports = add_ports;
            let out = run_hooks(&cfg, &n, &ports, &with_lldp(dual_socket())).unwrap();
            let new: Vec<(&str, Value)> = out
                .new_ports
                .iter()
                .map(|p| (p.address.as_str(), Value::Object(p.local_link_connection.clone())))
                .collect();
            if add_ports == AddPorts::All {
                assert_eq!(new, want_new, "{label}");
            }
            let updates: Vec<(&str, Value)> = out
                .port_updates
                .iter()
                .filter_map(|u| {
                    u.local_link_connection.clone().map(|c| (u.address.as_str(), Value::Object(c)))
                })
                .collect();
            assert_eq!(updates, want_updates, "{label}");
        }
    }

    #[test]
    fn lldp_from_the_inventory_and_garbage() {
        let mut data = bios_vm();
        data["inventory"]["interfaces"][0]["lldp"] =
            json!([[1, "04525400aabbcc"], [2, "0565746830"]]);
        let out = run_hooks(&config(&[HookName::Lldp]), &node(json!({})), &[], &data).unwrap();
        assert_eq!(
            out.plugin_data["parsed_lldp"]["eth0"],
            json!({"switch_chassis_id": "52:54:00:aa:bb:cc", "switch_port_id": "eth0"})
        );

        let mut garbage = bios_vm();
        garbage["lldp_raw"] =
            json!({"eth0": [["x"], [300, "00"], [1, "0"], "no"], "ghost": [[1, "04"]]});
        let out = run_hooks(&config(&[HookName::Lldp]), &node(json!({})), &[], &garbage).unwrap();
        assert!(!out.plugin_data.contains_key("parsed_lldp"));

        let mut not_a_map = bios_vm();
        not_a_map["lldp_raw"] = json!("eth0");
        let out = run_hooks(&config(&[HookName::Lldp]), &node(json!({})), &[], &not_a_map).unwrap();
        assert_eq!(out, InspectionOutcome::default());
    }
}
