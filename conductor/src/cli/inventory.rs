//! `ferric node inventory NODE`: what the node's last inspection found, for people: CPU,
//! memory, disks, NICs (with the switch port each is plugged into, when known) and the
//! BMC address. The JSON view is the API's reply as it is.
//!
//! The reply is outside data: a missing or odd field shows as empty, never fails.

use serde_json::Value;

use super::table::{cell, Table};

/// Bytes in the largest binary unit that keeps the number at least 1, one decimal.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

fn text<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// The switch and switch port of NIC `name` (MAC `mac`): from the parsed LLDP of the
/// inspection, else from the `local_link_connection` of the node's port with that MAC.
fn switch_port(plugin_data: &Value, ports: &[Value], name: &str, mac: &str) -> (String, String) {
    if let Some(lldp) = plugin_data.get("parsed_lldp").and_then(|p| p.get(name)) {
        let switch = text(lldp, "switch_system_name").or_else(|| text(lldp, "switch_chassis_id"));
        let port = text(lldp, "switch_port_id").or_else(|| text(lldp, "switch_port_description"));
        if switch.is_some() || port.is_some() {
            return (switch.unwrap_or_default().to_owned(), port.unwrap_or_default().to_owned());
        }
    }
    let llc = ports
        .iter()
        .find(|p| text(p, "address").is_some_and(|a| a.eq_ignore_ascii_case(mac)))
        .and_then(|p| p.get("local_link_connection"));
    match llc {
        Some(llc) => {
            let switch = text(llc, "switch_info").or_else(|| text(llc, "switch_id"));
            (
                switch.unwrap_or_default().to_owned(),
                text(llc, "port_id").unwrap_or_default().to_owned(),
            )
        }
        None => (String::new(), String::new()),
    }
}

/// The summary of an inventory reply (`{"inventory": …, "plugin_data": …}`), given the
/// node's ports (API objects with `address` and `local_link_connection`).
pub fn summary(reply: &Value, ports: &[Value]) -> String {
    let null = Value::Null;
    let inventory = reply.get("inventory").unwrap_or(&null);
    let plugin_data = reply.get("plugin_data").unwrap_or(&null);
    let cpu = inventory.get("cpu").unwrap_or(&null);
    let memory = inventory.get("memory").unwrap_or(&null);

    let mut out = String::new();
    let mut facts = Table::new(&["Field", "Value"]);
    facts.push(vec!["CPU count".into(), cell(cpu.get("count"))]);
    facts.push(vec!["CPU model".into(), cell(cpu.get("model_name"))]);
    facts.push(vec!["CPU architecture".into(), cell(cpu.get("architecture"))]);
    let memory_mib = memory
        .get("physical_mb")
        .and_then(Value::as_u64)
        .or_else(|| memory.get("total").and_then(Value::as_u64).map(|b| b / (1024 * 1024)));
    facts.push(vec!["Memory (MiB)".into(), memory_mib.map(|m| m.to_string()).unwrap_or_default()]);
    let bmc = [text(inventory, "bmc_address"), text(inventory, "bmc_v6address")]
        .into_iter()
        .flatten()
        .filter(|a| !matches!(*a, "0.0.0.0" | "::/0"))
        .collect::<Vec<_>>()
        .join(", ");
    facts.push(vec!["BMC address".into(), bmc]);
    out.push_str(&facts.render());

    let mut disks = Table::new(&["Disk", "Size", "Model", "Rotational"]);
    for disk in list(inventory, "disks") {
        let size = disk.get("size").and_then(Value::as_u64).map(human_bytes).unwrap_or_default();
        let rotational = match disk.get("rotational").and_then(Value::as_bool) {
            Some(true) => "yes".to_owned(),
            Some(false) => "no".to_owned(),
            None => String::new(),
        };
        let model = text(disk, "model").unwrap_or_default().to_owned();
        disks.push(vec![cell(disk.get("name")), size, model, rotational]);
    }
    out.push('\n');
    out.push_str(&disks.render());

    let mut nics = Table::new(&["NIC", "MAC", "IPv4", "Speed", "Switch", "Switch port"]);
    for nic in list(inventory, "interfaces") {
        let name = text(nic, "name").unwrap_or_default();
        let mac = text(nic, "mac_address").unwrap_or_default();
        let speed = nic
            .get("speed_mbps")
            .and_then(Value::as_u64)
            .map(|s| format!("{s} Mb/s"))
            .unwrap_or_default();
        let (switch, port) = switch_port(plugin_data, ports, name, mac);
        nics.push(vec![
            name.to_owned(),
            mac.to_owned(),
            text(nic, "ipv4_address").unwrap_or_default().to_owned(),
            speed,
            switch,
            port,
        ]);
    }
    out.push('\n');
    out.push_str(&nics.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn human_sizes() {
        for (bytes, want) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (8 << 30, "8.0 GiB"),
            (480_103_981_056, "447.1 GiB"),
            (4 << 40, "4.0 TiB"),
        ] {
            assert_eq!(human_bytes(bytes), want, "{bytes}");
        }
    }

    #[test]
    fn summary_rows() {
        let reply = json!({
            "inventory": {
                "cpu": {"count": 32, "model_name": "Xeon Gold", "architecture": "x86_64"},
                "memory": {"total": 1u64 << 36, "physical_mb": 65536},
                "disks": [
                    {"name": "/dev/sda", "size": 480_103_981_056u64, "model": "SSD 1",
                     "rotational": false},
                    {"name": "/dev/sdb", "size": 4u64 << 40, "rotational": true}
                ],
                "interfaces": [
                    {"name": "eno1", "mac_address": "52:54:00:00:00:01",
                     "ipv4_address": "10.0.0.5", "speed_mbps": 10000},
                    {"name": "eno2", "mac_address": "52:54:00:00:00:02", "ipv4_address": null},
                    {"name": "eno3", "mac_address": "52:54:00:00:00:03"}
                ],
                "bmc_address": "10.1.0.9", "bmc_v6address": "::/0"
            },
            "plugin_data": {"parsed_lldp": {"eno1": {"switch_system_name": "tor-1",
                "switch_port_id": "Ethernet1/7"}}}
        });
        let ports = [json!({"address": "52:54:00:00:00:02",
            "local_link_connection": {"switch_id": "aa:bb:cc:dd:ee:ff", "port_id": "xe-0/0/2"}})];
        let text = summary(&reply, &ports);
        let row = |needle: &str| {
            text.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle}:\n{text}"))
        };
        let words = |line: &str| line.split('|').map(str::trim).collect::<Vec<_>>().join("|");
        assert!(words(row("CPU count")).contains("|CPU count|32|"), "{text}");
        assert!(words(row("CPU model")).contains("|Xeon Gold|"), "{text}");
        assert!(words(row("Memory")).contains("|65536|"), "{text}");
        assert!(words(row("BMC address")).contains("|10.1.0.9|"), "{text}");
        assert!(words(row("/dev/sda")).contains("|447.1 GiB|SSD 1|no|"), "{text}");
        assert!(words(row("/dev/sdb")).contains("|4.0 TiB||yes|"), "{text}");
        assert!(
            words(row("eno1"))
                .contains("|52:54:00:00:00:01|10.0.0.5|10000 Mb/s|tor-1|Ethernet1/7|"),
            "{text}"
        );
        assert!(words(row("eno2")).contains("|aa:bb:cc:dd:ee:ff|xe-0/0/2|"), "{text}");
        assert!(words(row("eno3")).ends_with("|52:54:00:00:00:03|||||"), "{text}");
    }

    #[test]
    fn odd_replies_do_not_fail() {
        for reply in [json!(null), json!({"inventory": 5}), json!({"inventory": {"disks": 3}})] {
            let text = summary(&reply, &[]);
            assert!(text.contains("CPU count"), "{text}");
        }
    }
}
