//! `validate_interfaces` and `ports`: which NICs count, and the ports they become.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::{json, Map, Value};

use super::{invalid, kind, port_update, str_field, Ctx};
use crate::inspection::{
    AddPorts, HookName, InspectionError, InspectionOutcome, KeepPorts, NewPort,
};
use crate::store::normalize_mac;

/// One usable NIC of the report.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Nic<'a> {
    pub name: &'a str,
    /// Normalized: lower-case, colon-separated.
    pub mac: String,
    /// The IPv4 address, else the IPv6 one without its `%scope`.
    pub ip: Option<String>,
    /// Booted from this NIC; every NIC counts as such when the boot NIC is unknown.
    pub pxe: bool,
    raw: &'a Map<String, Value>,
    ipv6: Option<String>,
}

/// The report's NICs sorted out by the `add_ports` policy.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Interfaces<'a> {
    /// Every named NIC with a valid MAC, loopback left out, in report order.
    pub all: Vec<Nic<'a>>,
    /// Indexes into `all` of the NICs `add_ports` selects.
    pub valid: Vec<usize>,
    /// The NIC the machine booted from, normalized, when the report names a valid one.
    pub boot_mac: Option<String>,
}

impl<'a> Interfaces<'a> {
    pub fn valid(&self) -> impl Iterator<Item = &Nic<'a>> {
        self.valid.iter().filter_map(|&i| self.all.get(i))
    }
}

/// Normalizes a `BOOTIF` value: pxelinux's `01-aa-bb-cc-dd-ee-ff` (hardware type first)
/// or a plain MAC in either separator style.
pub(super) fn normalize_boot_mac(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let parts: Vec<&str> = raw.split('-').collect();
    if parts.len() == 7 {
        return normalize_mac(&parts[1..].join(":")).ok();
    }
    normalize_mac(raw).ok()
}

/// The boot NIC: the posted `boot_interface`, else the inventory's `boot.pxe_interface`.
fn boot_mac(ctx: &Ctx<'_>, hook: HookName) -> Result<Option<String>, InspectionError> {
    let from_inventory =
        ctx.section(hook, "boot")?.and_then(|boot| str_field(boot, "pxe_interface"));
    let Some(raw) = str_field(ctx.data, "boot_interface").or(from_inventory) else {
        return Ok(None);
    };
    let mac = normalize_boot_mac(raw);
    if mac.is_none() {
        tracing::warn!(node = %ctx.node.uuid, boot_interface = raw,
            "the boot interface is not a MAC address; treating it as unknown");
    }
    Ok(mac)
}

fn is_loopback(ip: &str) -> bool {
    let address = ip.split('/').next().unwrap_or(ip);
    address.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Sorts the report's NICs; fails when `add_ports` asks for ports and none qualifies.
pub(super) fn interfaces<'a>(
    ctx: &Ctx<'a>,
    hook: HookName,
) -> Result<Interfaces<'a>, InspectionError> {
    let inventory = ctx.inventory(hook)?;
    let listed = match inventory.get("interfaces") {
        Some(Value::Array(listed)) => listed,
        Some(other) => {
            return Err(invalid(
                hook,
                format!("inventory.interfaces is {}, not a list", kind(other)),
            ))
        }
        None => return Err(invalid(hook, "the inventory has no interfaces")),
    };
    let boot_mac = boot_mac(ctx, hook)?;
    let mut all = Vec::new();
    for raw in listed.iter().filter_map(Value::as_object) {
        let Some(name) = str_field(raw, "name") else { continue };
        let Some(mac) = str_field(raw, "mac_address").and_then(|m| normalize_mac(m).ok()) else {
            tracing::debug!(node = %ctx.node.uuid, interface = name, "no valid MAC; skipped");
            continue;
        };
        let ipv4 = str_field(raw, "ipv4_address").map(str::to_owned);
        // The agent may report a link-local address with its zone (`fe80::1%eth0`).
        let ipv6 =
            str_field(raw, "ipv6_address").map(|ip| ip.split('%').next().unwrap_or(ip).to_owned());
        let ip = ipv4.or_else(|| ipv6.clone());
        if name == "lo" || ip.as_deref().is_some_and(is_loopback) {
            continue;
        }
        let pxe = boot_mac.as_ref().is_none_or(|boot| *boot == mac);
        all.push(Nic { name, mac, ip, pxe, raw, ipv6 });
    }

    let policy = ctx.config.add_ports;
    let selected = |nic: &Nic<'_>| match policy {
        AddPorts::All => true,
        AddPorts::Active => nic.ip.is_some(),
        AddPorts::Pxe if boot_mac.is_some() => nic.pxe,
        AddPorts::Pxe => nic.ip.is_some(),
        AddPorts::Disabled => false,
    };
    let valid: Vec<usize> = (0..all.len()).filter(|&i| all.get(i).is_some_and(selected)).collect();
    if valid.is_empty() && policy != AddPorts::Disabled {
        return Err(invalid(hook, no_suitable_interfaces(&all, policy, boot_mac.as_deref())));
    }
    Ok(Interfaces { all, valid, boot_mac })
}

fn no_suitable_interfaces(all: &[Nic<'_>], policy: AddPorts, boot_mac: Option<&str>) -> String {
    if all.is_empty() {
        return "No suitable interfaces found in the inventory: no interface has a valid MAC \
                address"
            .to_owned();
    }
    let names: Vec<&str> = all.iter().map(|nic| nic.name).collect();
    let why = match (policy, boot_mac) {
        (AddPorts::Pxe, Some(boot)) => {
            format!("add_ports is \"pxe\" and none has the boot interface's MAC {boot}")
        }
        (AddPorts::Pxe, None) => {
            "add_ports is \"pxe\", the boot interface is unknown and none has an IP address"
                .to_owned()
        }
        _ => "add_ports is \"active\" and none has an IP address".to_owned(),
    };
    format!("No suitable interfaces found in [{}]: {why}", names.join(", "))
}

/// The plugin-data form of a NIC: the inventory record (MAC normalized, IPv6 without
/// zone) with Ironic's `pxe_enabled`, plus the short `mac`/`ip`/`pxe` keys.
fn nic_json(nic: &Nic<'_>) -> Value {
    let mut map = nic.raw.clone();
    map.insert("mac_address".into(), json!(nic.mac));
    if let Some(ipv6) = &nic.ipv6 {
        map.insert("ipv6_address".into(), json!(ipv6));
    }
    map.insert("pxe_enabled".into(), json!(nic.pxe));
    map.insert("mac".into(), json!(nic.mac));
    map.insert("ip".into(), json!(nic.ip));
    map.insert("pxe".into(), json!(nic.pxe));
    Value::Object(map)
}

/// `validate_interfaces`: records `all_interfaces`, `valid_interfaces`, `macs` and
/// `boot_interface` in plugin data.
pub(super) fn validate_interfaces(
    ctx: &Ctx<'_>,
    out: &mut InspectionOutcome,
) -> Result<(), InspectionError> {
    let ifaces = interfaces(ctx, HookName::ValidateInterfaces)?;
    let by_name = |nics: &mut dyn Iterator<Item = &Nic<'_>>| {
        Value::Object(nics.map(|nic| (nic.name.to_owned(), nic_json(nic))).collect())
    };
    let plugin = &mut out.plugin_data;
    plugin.insert("all_interfaces".into(), by_name(&mut ifaces.all.iter()));
    plugin.insert("valid_interfaces".into(), by_name(&mut ifaces.valid()));
    plugin.insert("macs".into(), json!(ifaces.valid().map(|nic| &nic.mac).collect::<Vec<_>>()));
    plugin.insert("boot_interface".into(), json!(ifaces.boot_mac));
    Ok(())
}

/// A stored port's MAC in normalized form (stored ones already are; this only guards).
pub(super) fn port_mac(address: &str) -> String {
    normalize_mac(address).unwrap_or_else(|_| address.to_ascii_lowercase())
}

/// `ports`: a port for each valid NIC that has none, `pxe_enabled` kept in line with the
/// boot NIC, and the ports `keep_ports` rejects deleted.
pub(super) fn ports(ctx: &Ctx<'_>, out: &mut InspectionOutcome) -> Result<(), InspectionError> {
    let ifaces = interfaces(ctx, HookName::Ports)?;
    let existing: BTreeSet<String> = ctx.ports.iter().map(|p| port_mac(&p.address)).collect();

    if ctx.config.add_ports != AddPorts::Disabled {
        for nic in ifaces.valid() {
            let known = existing.contains(&nic.mac)
                || out.new_ports.iter().any(|port| port.address == nic.mac);
            if !known {
                out.new_ports.push(NewPort {
                    address: nic.mac.clone(),
                    pxe_enabled: nic.pxe,
                    local_link_connection: Map::new(),
                });
            }
        }
    }

    let expected: Option<BTreeSet<&str>> = match ctx.config.keep_ports {
        KeepPorts::All => None,
        KeepPorts::Present => Some(ifaces.all.iter().map(|nic| nic.mac.as_str()).collect()),
        KeepPorts::Added => Some(ifaces.valid().map(|nic| nic.mac.as_str()).collect()),
    };
    // As in Ironic, an empty expectation (nothing valid) deletes nothing rather than
    // every port of the node.
    let expected = expected.filter(|macs| !macs.is_empty());

    for port in ctx.ports {
        let mac = port_mac(&port.address);
        if expected.as_ref().is_some_and(|macs| !macs.contains(mac.as_str())) {
            out.delete_ports.push(port.uuid);
            continue;
        }
        // Without a known boot NIC there is nothing to say which port boots.
        if let Some(boot) = &ifaces.boot_mac {
            let pxe = *boot == mac;
            if pxe != port.pxe_enabled {
                port_update(out, &mac).pxe_enabled = Some(pxe);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::super::tests::{bios_vm, config, dual_socket, node, port, run_hooks};
    use super::*;

    #[test]
    fn boot_mac_spellings() {
        let cases = [
            ("01-3c-fd-fe-a0-00-01", Some("3c:fd:fe:a0:00:01")),
            ("3C:FD:FE:A0:00:01", Some("3c:fd:fe:a0:00:01")),
            ("3c-fd-fe-a0-00-01", Some("3c:fd:fe:a0:00:01")),
            (" 01-3C-FD-FE-A0-00-01 ", Some("3c:fd:fe:a0:00:01")),
            ("01-3c-fd-fe-a0", None),
            ("01-3c-fd-fe-a0-00-01-02", None),
            ("not a mac", None),
            ("", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_boot_mac(raw).as_deref(), want, "{raw:?}");
        }
    }

    /// Which NICs count, per fixture, `add_ports` and boot interface. The dual-socket
    /// fixture booted from eno1 (`BOOTIF=01-3c-fd-fe-a0-00-01`); eno1 has an IPv4 and
    /// ens3f1 only a link-local IPv6 address; eno2 and ens3f0 have none.
    #[test]
    fn validate_interfaces_table() {
        let no_boot = |mut data: Value| {
            data["boot_interface"] = Value::Null;
            data
        };
        let boot_elsewhere = |mut data: Value| {
            data["boot_interface"] = json!("01-00-00-00-00-00-99");
            data
        };
        let keep = |data: Value| data;
        type Edit = fn(Value) -> Value;
        type Row =
            (&'static str, Value, Edit, AddPorts, &'static [&'static str], Option<&'static str>);
        let cases: [Row; 9] = [
            ("pxe", dual_socket(), keep, AddPorts::Pxe, &["eno1"], Some("3c:fd:fe:a0:00:01")),
            (
                "active",
                dual_socket(),
                keep,
                AddPorts::Active,
                &["eno1", "ens3f1"],
                Some("3c:fd:fe:a0:00:01"),
            ),
            (
                "all",
                dual_socket(),
                keep,
                AddPorts::All,
                &["eno1", "eno2", "ens3f0", "ens3f1"],
                Some("3c:fd:fe:a0:00:01"),
            ),
            ("disabled", dual_socket(), keep, AddPorts::Disabled, &[], Some("3c:fd:fe:a0:00:01")),
            ("pxe, unknown boot", dual_socket(), no_boot, AddPorts::Pxe, &["eno1", "ens3f1"], None),
            ("pxe, vm without BOOTIF", bios_vm(), keep, AddPorts::Pxe, &["eth0"], None),
            ("all, vm", bios_vm(), keep, AddPorts::All, &["eth0"], None),
            (
                "disabled, boot elsewhere",
                dual_socket(),
                boot_elsewhere,
                AddPorts::Disabled,
                &[],
                Some("00:00:00:00:00:99"),
            ),
            (
                "all, boot elsewhere",
                dual_socket(),
                boot_elsewhere,
                AddPorts::All,
                &["eno1", "eno2", "ens3f0", "ens3f1"],
                Some("00:00:00:00:00:99"),
            ),
        ];
        for (label, data, edit, add_ports, want_valid, want_boot) in cases {
            let mut cfg = config(&[HookName::ValidateInterfaces]);
            cfg.add_ports = add_ports;
            let out = run_hooks(&cfg, &node(json!({})), &[], &edit(data)).unwrap();
            let valid = out.plugin_data["valid_interfaces"].as_object().unwrap();
            let names: Vec<&str> = valid.keys().map(String::as_str).collect();
            let mut want: Vec<&str> = want_valid.to_vec();
            want.sort();
            assert_eq!(names, want, "{label}");
            assert_eq!(out.plugin_data["boot_interface"], json!(want_boot), "{label}");
            let all = out.plugin_data["all_interfaces"].as_object().unwrap();
            assert_eq!(all.len(), if label.contains("vm") { 1 } else { 4 }, "{label}");
            let mut macs: Vec<&str> = valid.values().map(|v| v["mac"].as_str().unwrap()).collect();
            let mut listed: Vec<&str> = out.plugin_data["macs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap())
                .collect();
            macs.sort();
            listed.sort();
            assert_eq!(listed, macs, "{label}");
        }
    }

    #[test]
    fn interface_records_keep_the_inventory_and_add_the_short_keys() {
        let out = run_hooks(
            &config(&[HookName::ValidateInterfaces]),
            &node(json!({})),
            &[],
            &dual_socket(),
        )
        .unwrap();
        let eno1 = &out.plugin_data["valid_interfaces"]["eno1"];
        assert_eq!(eno1["mac"], "3c:fd:fe:a0:00:01");
        assert_eq!(eno1["ip"], "10.10.0.21");
        assert_eq!(eno1["pxe"], true);
        assert_eq!(eno1["pxe_enabled"], true);
        assert_eq!(eno1["driver"], "i40e");
        let ens3f1 = &out.plugin_data["all_interfaces"]["ens3f1"];
        assert_eq!(ens3f1["ip"], "fe80::ba59:9fff:fec0:11");
        assert_eq!(ens3f1["pxe"], false);
        assert_eq!(out.plugin_data["all_interfaces"]["eno2"]["ip"], Value::Null);
    }

    #[test]
    fn bad_records_loopback_and_zones() {
        let mut data = bios_vm();
        let ifaces = data["inventory"]["interfaces"].as_array_mut().unwrap();
        ifaces.push(
            json!({"name": "lo", "mac_address": "00:00:00:00:00:00", "ipv4_address": "127.0.0.1"}),
        );
        ifaces.push(json!({"name": "dummy0", "mac_address": "02:00:00:00:00:01", "ipv4_address": "127.0.0.2"}));
        ifaces.push(json!({"name": "ib0", "mac_address": "a0:00:02:20:fe:80:00:00"}));
        ifaces.push(json!({"name": "", "mac_address": "02:00:00:00:00:02"}));
        ifaces.push(json!("not an object"));
        ifaces.push(json!({"name": "eth1", "mac_address": "02-00-00-00-00-03",
            "ipv4_address": null, "ipv6_address": "fe80::3%eth1"}));
        let mut cfg = config(&[HookName::ValidateInterfaces]);
        cfg.add_ports = AddPorts::All;
        let out = run_hooks(&cfg, &node(json!({})), &[], &data).unwrap();
        let all = out.plugin_data["all_interfaces"].as_object().unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["eth0", "eth1"]);
        assert_eq!(all["eth1"]["mac_address"], "02:00:00:00:00:03");
        assert_eq!(all["eth1"]["ipv6_address"], "fe80::3");
        assert_eq!(all["eth1"]["ip"], "fe80::3");
    }

    #[test]
    fn no_suitable_interface_fails_with_the_reason() {
        let mut no_ip = bios_vm();
        no_ip["inventory"]["interfaces"][0]["ipv4_address"] = Value::Null;
        no_ip["inventory"]["interfaces"][0]["ipv6_address"] = Value::Null;
        let mut boot_elsewhere = dual_socket();
        boot_elsewhere["boot_interface"] = json!("00:00:00:00:00:99");
        let mut no_macs = bios_vm();
        no_macs["inventory"]["interfaces"][0]["mac_address"] = json!("zz");
        let mut no_list = bios_vm();
        no_list["inventory"]["interfaces"] = json!({});
        let cases = [
            (
                no_ip.clone(),
                AddPorts::Active,
                "No suitable interfaces found in [eth0]: add_ports is \"active\"",
            ),
            (no_ip, AddPorts::Pxe, "the boot interface is unknown and none has an IP address"),
            (boot_elsewhere, AddPorts::Pxe, "none has the boot interface's MAC 00:00:00:00:00:99"),
            (no_macs, AddPorts::All, "no interface has a valid MAC address"),
            (no_list, AddPorts::All, "inventory.interfaces is an object, not a list"),
        ];
        for (data, add_ports, want) in cases {
            let mut cfg = config(&[HookName::ValidateInterfaces]);
            cfg.add_ports = add_ports;
            let err = run_hooks(&cfg, &node(json!({})), &[], &data).unwrap_err();
            let InspectionError::Invalid { hook, reason } = &err else { panic!("{err:?}") };
            assert_eq!(*hook, "validate_interfaces");
            assert!(reason.contains(want), "{reason:?} lacks {want:?}");
        }
    }

    /// New ports, `pxe_enabled` updates and deletions for each policy, over the
    /// dual-socket report (boot NIC eno1) unless the case drops the boot interface.
    #[test]
    fn ports_table() {
        let node = node(json!({}));
        let stale = port(&node, "aa:aa:aa:aa:aa:aa", true);
        let eno2 = port(&node, "3c:fd:fe:a0:00:02", true);
        let eno1_off = port(&node, "3c:fd:fe:a0:00:01", false);
        struct Case<'a> {
            label: &'a str,
            boot_known: bool,
            add: AddPorts,
            keep: KeepPorts,
            ports: Vec<crate::store::Port>,
            new: &'a [(&'a str, bool)],
            updates: &'a [(&'a str, bool)],
            deleted: Vec<Uuid>,
        }
        let cases = [
            Case {
                label: "pxe, fresh node",
                boot_known: true,
                add: AddPorts::Pxe,
                keep: KeepPorts::All,
                ports: vec![],
                new: &[("3c:fd:fe:a0:00:01", true)],
                updates: &[],
                deleted: vec![],
            },
            Case {
                label: "all, fresh node: only eno1 boots",
                boot_known: true,
                add: AddPorts::All,
                keep: KeepPorts::All,
                ports: vec![],
                new: &[
                    ("3c:fd:fe:a0:00:01", true),
                    ("3c:fd:fe:a0:00:02", false),
                    ("b8:59:9f:c0:00:10", false),
                    ("b8:59:9f:c0:00:11", false),
                ],
                updates: &[],
                deleted: vec![],
            },
            Case {
                label: "all, boot unknown: every new port boots",
                boot_known: false,
                add: AddPorts::All,
                keep: KeepPorts::All,
                ports: vec![eno2.clone()],
                new: &[
                    ("3c:fd:fe:a0:00:01", true),
                    ("b8:59:9f:c0:00:10", true),
                    ("b8:59:9f:c0:00:11", true),
                ],
                updates: &[],
                deleted: vec![],
            },
            Case {
                label: "keep all: other ports stop booting, none deleted",
                boot_known: true,
                add: AddPorts::Pxe,
                keep: KeepPorts::All,
                ports: vec![stale.clone(), eno2.clone()],
                new: &[("3c:fd:fe:a0:00:01", true)],
                updates: &[("aa:aa:aa:aa:aa:aa", false), ("3c:fd:fe:a0:00:02", false)],
                deleted: vec![],
            },
            Case {
                label: "keep present: the vanished NIC's port goes",
                boot_known: true,
                add: AddPorts::Pxe,
                keep: KeepPorts::Present,
                ports: vec![stale.clone(), eno2.clone()],
                new: &[("3c:fd:fe:a0:00:01", true)],
                updates: &[("3c:fd:fe:a0:00:02", false)],
                deleted: vec![stale.uuid],
            },
            Case {
                label: "keep added: only the valid NIC's port stays",
                boot_known: true,
                add: AddPorts::Pxe,
                keep: KeepPorts::Added,
                ports: vec![stale.clone(), eno2.clone(), eno1_off.clone()],
                new: &[],
                updates: &[("3c:fd:fe:a0:00:01", true)],
                deleted: vec![stale.uuid, eno2.uuid],
            },
            Case {
                label: "disabled: nothing added; empty valid set deletes nothing",
                boot_known: true,
                add: AddPorts::Disabled,
                keep: KeepPorts::Added,
                ports: vec![stale.clone(), eno1_off.clone()],
                new: &[],
                updates: &[("aa:aa:aa:aa:aa:aa", false), ("3c:fd:fe:a0:00:01", true)],
                deleted: vec![],
            },
        ];
        for case in cases {
            let mut data = dual_socket();
            if !case.boot_known {
                data["boot_interface"] = Value::Null;
            }
            let mut cfg = config(&[HookName::Ports]);
            cfg.add_ports = case.add;
            cfg.keep_ports = case.keep;
            let out = run_hooks(&cfg, &node, &case.ports, &data).unwrap();
            let new: Vec<(&str, bool)> =
                out.new_ports.iter().map(|p| (p.address.as_str(), p.pxe_enabled)).collect();
            assert_eq!(new, case.new, "{}", case.label);
            assert!(out.new_ports.iter().all(|p| p.local_link_connection.is_empty()));
            let updates: Vec<(&str, bool)> = out
                .port_updates
                .iter()
                .map(|u| (u.address.as_str(), u.pxe_enabled.unwrap()))
                .collect();
            assert_eq!(updates, case.updates, "{}", case.label);
            assert_eq!(out.delete_ports, case.deleted, "{}", case.label);
        }
    }
}
