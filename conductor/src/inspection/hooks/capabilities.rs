//! `capabilities` (boot mode, CPU features, GPU count) and `pci_devices`.

use serde_json::{json, Map, Value};

use super::{invalid, kind, str_field, Ctx};
use crate::inspection::{HookName, InspectionError, InspectionOutcome};

/// CPU flag → capability set to `"true"`, in Ironic's default `cpu_capabilities` order.
const CPU_CAPABILITIES: &[(&str, &str)] = &[
    ("vmx", "cpu_vt"),
    ("svm", "cpu_vt"),
    ("aes", "cpu_aes"),
    ("pse", "cpu_hugepages"),
    ("pdpe1gb", "cpu_hugepages_1g"),
    ("smx", "cpu_txt"),
];

/// PCI vendors whose display controllers count as GPUs: NVIDIA and AMD/ATI.
const GPU_VENDORS: &[&str] = &["10de", "1002"];

/// The capability Ironic's documentation names for the number of GPUs.
const GPU_CAPABILITY: &str = "pci_gpu_devices";

/// A `key:value,key:value` capabilities string, in order.
fn parse_capabilities(
    hook: HookName,
    value: &Value,
) -> Result<Vec<(String, String)>, InspectionError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::String(text) if text.trim().is_empty() => Ok(Vec::new()),
        Value::String(text) => text
            .split(',')
            .map(|pair| match pair.split_once(':') {
                Some((key, value)) => Ok((key.trim().to_owned(), value.trim().to_owned())),
                None => Err(invalid(
                    hook,
                    format!("capabilities {text:?}: {pair:?} is not of the form key:value"),
                )),
            })
            .collect(),
        // Some tools set capabilities as an object; keep its entries.
        Value::Object(map) => Ok(map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect()),
        other => Err(invalid(
            hook,
            format!("capabilities is {}, not a key:value,... string", kind(other)),
        )),
    }
}

/// Sets `key` (replacing its value in place, else appending), as Ironic's
/// `get_updated_capabilities`.
fn set_capability(caps: &mut Vec<(String, String)>, key: &str, value: String) {
    match caps.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => caps.push((key.to_owned(), value)),
    }
}

/// The report's PCI devices: the `pci-devices` collector's `pci_devices`, else the
/// inventory's. `None` when the report carries neither.
fn pci_list<'a>(ctx: &Ctx<'a>, hook: HookName) -> Result<Option<&'a Vec<Value>>, InspectionError> {
    if let Some(Value::Array(list)) = ctx.data.get("pci_devices") {
        return Ok(Some(list));
    }
    Ok(ctx.inventory(hook)?.get("pci_devices").and_then(Value::as_array))
}

/// A PCI id as IPA's collector spells it: lower-case hex without `0x`.
fn pci_id(device: &Map<String, Value>, key: &str) -> Option<String> {
    let id = str_field(device, key)?.to_ascii_lowercase();
    Some(id.strip_prefix("0x").map(str::to_owned).unwrap_or(id))
}

/// A display controller (class `03xxxx`) from a GPU vendor; by vendor alone when the
/// record has no class.
fn is_gpu(device: &Map<String, Value>) -> bool {
    let vendor_matches =
        pci_id(device, "vendor_id").is_some_and(|vendor| GPU_VENDORS.contains(&vendor.as_str()));
    let display = pci_id(device, "class").is_none_or(|class| class.starts_with("03"));
    vendor_matches && display
}

/// `capabilities`: merges `boot_mode`, the CPU capabilities and `pci_gpu_devices` into the
/// node's `capabilities` string, keeping what the operator set.
pub(super) fn capabilities(
    ctx: &Ctx<'_>,
    out: &mut InspectionOutcome,
) -> Result<(), InspectionError> {
    let hook = HookName::Capabilities;
    let current = out
        .properties
        .get("capabilities")
        .or_else(|| ctx.node.properties.get("capabilities"))
        .unwrap_or(&Value::Null);
    let mut caps = parse_capabilities(hook, current)?;

    if let Some(boot) = ctx.section(hook, "boot")? {
        let mode =
            if str_field(boot, "current_boot_mode") == Some("uefi") { "uefi" } else { "bios" };
        set_capability(&mut caps, "boot_mode", mode.to_owned());
    }

    let flags: Vec<&str> = ctx
        .section(hook, "cpu")?
        .and_then(|cpu| cpu.get("flags"))
        .and_then(Value::as_array)
        .map(|flags| flags.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (flag, capability) in CPU_CAPABILITIES {
        if flags.contains(flag) {
            set_capability(&mut caps, capability, "true".to_owned());
        }
    }

    if let Some(devices) = pci_list(ctx, hook)? {
        let gpus = devices.iter().filter_map(Value::as_object).filter(|d| is_gpu(d)).count();
        set_capability(&mut caps, GPU_CAPABILITY, gpus.to_string());
    }

    let joined: Vec<String> = caps.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    out.properties.insert("capabilities".into(), json!(joined.join(",")));
    Ok(())
}

/// `pci_devices`: `plugin_data.pci_devices`, one `{vendor_id, product_id, class, ...}`
/// per PCI function (an empty list when the report has none).
pub(super) fn pci_devices(
    ctx: &Ctx<'_>,
    out: &mut InspectionOutcome,
) -> Result<(), InspectionError> {
    let hook = HookName::PciDevices;
    let devices: Vec<Value> = pci_list(ctx, hook)?
        .map(|list| {
            list.iter()
                .filter_map(Value::as_object)
                .filter_map(|device| {
                    let mut record = Map::new();
                    record.insert("vendor_id".into(), json!(pci_id(device, "vendor_id")?));
                    record.insert("product_id".into(), json!(pci_id(device, "product_id")?));
                    for key in ["class", "revision", "bus"] {
                        if let Some(value) = str_field(device, key) {
                            record.insert(key.into(), json!(value));
                        }
                    }
                    Some(Value::Object(record))
                })
                .collect()
        })
        .unwrap_or_default();
    out.plugin_data.insert("pci_devices".into(), Value::Array(devices));
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{bios_vm, config, dual_socket, node, run_hooks};
    use super::*;

    fn with_flags(mut data: Value, flags: Value) -> Value {
        data["inventory"]["cpu"]["flags"] = flags;
        data
    }

    fn with_pci(mut data: Value, pci: Value) -> Value {
        data["inventory"]["pci_devices"] = pci;
        data
    }

    /// Fixture facts: bios-vm boots BIOS, its CPU flags are fpu/sse2/hypervisor and it has
    /// no display device; dual-socket boots UEFI, has `vmx` and one NVIDIA 10de:1eb8
    /// (class 030200).
    #[test]
    fn capabilities_table() {
        let amd_gpu_and_audio = json!([
            {"vendor_id": "1002", "product_id": "73bf", "class": "030000"},
            {"vendor_id": "1002", "product_id": "ab28", "class": "040300"},
            {"vendor_id": "0x10DE", "product_id": "2204"},
            {"vendor_id": "8086", "product_id": "56a0", "class": "030000"},
            "garbage"
        ]);
        let cases = [
            ("vm", bios_vm(), Value::Null, "boot_mode:bios,pci_gpu_devices:0"),
            ("server", dual_socket(), Value::Null, "boot_mode:uefi,cpu_vt:true,pci_gpu_devices:1"),
            (
                "server, operator capabilities kept and updated in place",
                dual_socket(),
                json!("profile:compute,boot_mode:bios,cpu_vt:false"),
                "profile:compute,boot_mode:uefi,cpu_vt:true,pci_gpu_devices:1",
            ),
            (
                "vm, every mapped flag",
                with_flags(bios_vm(), json!(["svm", "aes", "pse", "pdpe1gb", "smx", "vmx"])),
                Value::Null,
                "boot_mode:bios,cpu_vt:true,cpu_aes:true,cpu_hugepages:true,\
                 cpu_hugepages_1g:true,cpu_txt:true,pci_gpu_devices:0",
            ),
            (
                "vm, GPUs by class, and by vendor when class is missing",
                with_pci(bios_vm(), amd_gpu_and_audio),
                json!(""),
                "boot_mode:bios,pci_gpu_devices:2",
            ),
            (
                "capabilities given as an object",
                bios_vm(),
                json!({"profile": "small"}),
                "profile:small,boot_mode:bios,pci_gpu_devices:0",
            ),
        ];
        for (label, data, current, want) in cases {
            let props = match current {
                Value::Null => json!({}),
                caps => json!({"capabilities": caps}),
            };
            let out =
                run_hooks(&config(&[HookName::Capabilities]), &node(props), &[], &data).unwrap();
            assert_eq!(out.properties["capabilities"], want, "{label}");
            assert_eq!(out.properties.len(), 1, "{label}");
        }
    }

    #[test]
    fn capabilities_without_pci_data_leave_gpus_out() {
        let mut data = bios_vm();
        data["inventory"].as_object_mut().unwrap().remove("pci_devices");
        let out =
            run_hooks(&config(&[HookName::Capabilities]), &node(json!({})), &[], &data).unwrap();
        assert_eq!(out.properties["capabilities"], "boot_mode:bios");
    }

    #[test]
    fn malformed_capabilities_fail() {
        for caps in [json!("profile"), json!("a:b,,c:d"), json!(7)] {
            let props = json!({"capabilities": caps});
            let err = run_hooks(&config(&[HookName::Capabilities]), &node(props), &[], &bios_vm())
                .unwrap_err();
            assert!(
                matches!(err, InspectionError::Invalid { hook: "capabilities", .. }),
                "{err:?}"
            );
        }
    }

    #[test]
    fn pci_devices_table() {
        let mut collector = bios_vm();
        collector["pci_devices"] = json!([
            {"vendor_id": "8086", "product_id": "1572", "class": "020000", "revision": "01",
             "bus": "0000:01:00.0"},
            {"vendor_id": "15b3"},
            {"vendor_id": "0x10DE", "product_id": "0x1EB8"}
        ]);
        let mut none = bios_vm();
        none["inventory"].as_object_mut().unwrap().remove("pci_devices");
        let cases = [
            // bios-vm's fixture: host bridge 8086:1237, virtio-net 1af4:1000, virtio-blk
            // 1af4:1001.
            (
                bios_vm(),
                json!([
                    {"vendor_id": "8086", "product_id": "1237", "class": "060000",
                     "revision": "02", "bus": "0000:00:00.0"},
                    {"vendor_id": "1af4", "product_id": "1000", "class": "020000",
                     "revision": "01", "bus": "0000:00:03.0"},
                    {"vendor_id": "1af4", "product_id": "1001", "class": "010000",
                     "revision": "01", "bus": "0000:00:05.0"}
                ]),
            ),
            (
                collector,
                json!([
                    {"vendor_id": "8086", "product_id": "1572", "class": "020000",
                     "revision": "01", "bus": "0000:01:00.0"},
                    {"vendor_id": "10de", "product_id": "1eb8"}
                ]),
            ),
            (none, json!([])),
        ];
        for (data, want) in cases {
            let out =
                run_hooks(&config(&[HookName::PciDevices]), &node(json!({})), &[], &data).unwrap();
            assert_eq!(out.plugin_data["pci_devices"], want);
        }
        let out =
            run_hooks(&config(&[HookName::PciDevices]), &node(json!({})), &[], &dual_socket())
                .unwrap();
        let devices = out.plugin_data["pci_devices"].as_array().unwrap();
        assert_eq!(devices.len(), 9);
        assert!(devices.contains(&json!({"vendor_id": "10de", "product_id": "1eb8",
            "class": "030200", "revision": "a1", "bus": "0000:3d:00.0"})));
    }
}
