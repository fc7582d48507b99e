//! `properties` (`cpus`, `cpu_arch`, `memory_mb`, `local_gb`) and `root_device`.

use ferric_shared::hints::{find_root_device, HintDevice, HintTarget, RootDeviceHints, SkipList};
use serde_json::{json, Map, Value};

use super::{invalid, kind, str_field, Ctx};
use crate::inspection::{HookName, InspectionError, InspectionOutcome};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// An inventory disk, borrowed for the hint matcher.
struct Disk<'a> {
    raw: &'a Map<String, Value>,
    name: &'a str,
    size: u64,
}

impl<'a> Disk<'a> {
    /// `None` for a record without a name or a byte size: no hint can judge it.
    fn from_json(value: &'a Value) -> Option<Disk<'a>> {
        let raw = value.as_object()?;
        let name = str_field(raw, "name")?;
        let size = raw.get("size")?.as_u64()?;
        Some(Disk { raw, name, size })
    }
}

impl HintTarget for Disk<'_> {
    fn hint_device(&self) -> HintDevice<'_> {
        let attr = |key: &str| str_field(self.raw, key).into();
        HintDevice {
            name: self.name,
            size_bytes: self.size,
            model: attr("model"),
            vendor: attr("vendor"),
            serial: attr("serial"),
            wwn: attr("wwn"),
            wwn_with_extension: attr("wwn_with_extension"),
            wwn_vendor_extension: attr("wwn_vendor_extension"),
            hctl: attr("hctl"),
            by_path: attr("by_path"),
            tran: attr("tran"),
            rotational: self.raw.get("rotational").and_then(Value::as_bool),
        }
    }
}

/// The root disk: with `properties.root_device` hints, the first inventory disk that
/// matches them (an error when none does); without, the `root_disk` the ramdisk chose,
/// else the smallest disk of at least 4 GiB. `properties.skip_block_devices` is applied
/// before choosing. `None` when the machine has no usable disk.
fn root_disk<'a>(
    ctx: &Ctx<'a>,
    hook: HookName,
) -> Result<Option<&'a Map<String, Value>>, InspectionError> {
    let properties = &ctx.node.properties;
    let hints = RootDeviceHints::from_json(properties.get("root_device").unwrap_or(&Value::Null))
        .map_err(|err| invalid(hook, format!("invalid root device hints: {err}")))?;
    let skip = SkipList::from_json(properties.get("skip_block_devices").unwrap_or(&Value::Null))
        .map_err(|err| invalid(hook, format!("invalid skip_block_devices: {err}")))?;

    if hints.is_none() {
        match ctx.data.get("root_disk") {
            None | Some(Value::Null) => {}
            Some(posted) => match Disk::from_json(posted) {
                Some(disk) if !skip.skips(&disk) => return Ok(Some(disk.raw)),
                Some(_) => {}
                None => {
                    return Err(invalid(
                        hook,
                        format!(
                            "root_disk is {}, not a disk with a name and a size in bytes",
                            kind(posted)
                        ),
                    ))
                }
            },
        }
    }

    let disks: Vec<Disk<'a>> = match ctx.inventory(hook)?.get("disks") {
        Some(Value::Array(disks)) => disks.iter().filter_map(Disk::from_json).collect(),
        None | Some(Value::Null) => Vec::new(),
        Some(other) => {
            return Err(invalid(hook, format!("inventory.disks is {}, not a list", kind(other))))
        }
    };
    let candidates = skip.retain(&disks);
    match (find_root_device(hints.as_ref(), &candidates), &hints) {
        (Some(disk), _) => Ok(Some(disk.raw)),
        (None, Some(_)) => {
            let root_device = properties.get("root_device").cloned().unwrap_or_default();
            Err(invalid(hook, format!("No disks satisfied root device hints {root_device}")))
        }
        (None, None) => Ok(None),
    }
}

/// `local_gb` of a root disk: whole GiB, less the 1 GiB Ironic leaves for partitioning
/// (`disk_partitioning_spacing`); 0 for no disk or one under 1 GiB.
fn local_gb(root: Option<&Map<String, Value>>) -> u64 {
    let gib = root.and_then(|disk| disk.get("size")).and_then(Value::as_u64).unwrap_or(0) / GIB;
    gib.saturating_sub(1)
}

/// `properties`: `cpus`, `cpu_arch`, `memory_mb`, `local_gb`, as integers.
pub(super) fn properties(
    ctx: &Ctx<'_>,
    out: &mut InspectionOutcome,
) -> Result<(), InspectionError> {
    let hook = HookName::Properties;
    if let Some(cpu) = ctx.section(hook, "cpu")? {
        match cpu.get("count").and_then(Value::as_u64) {
            Some(count) if count > 0 => {
                out.properties.insert("cpus".into(), json!(count));
            }
            _ => tracing::warn!(node = %ctx.node.uuid, "no CPU count in the inventory"),
        }
        match str_field(cpu, "architecture") {
            Some(arch) => {
                out.properties.insert("cpu_arch".into(), json!(arch));
            }
            None => tracing::warn!(node = %ctx.node.uuid, "no CPU architecture in the inventory"),
        }
    }

    let memory = ctx.section(hook, "memory")?;
    let field = |key: &str| memory.and_then(|m| m.get(key)).and_then(Value::as_u64);
    match (field("physical_mb"), field("total")) {
        (Some(mb), _) if mb > 0 => {
            out.properties.insert("memory_mb".into(), json!(mb));
        }
        (_, Some(bytes)) if bytes > 0 => {
            out.properties.insert("memory_mb".into(), json!(bytes / MIB));
        }
        // Many BMCs publish no memory summary; the other properties are still worth having
        // and an operator can set memory_mb by hand.
        _ => tracing::warn!(node = %ctx.node.uuid,
            "no memory size in the inventory (memory.physical_mb or memory.total); memory_mb \
             left as it was"),
    }

    let root = root_disk(ctx, hook)?;
    out.properties.insert("local_gb".into(), json!(local_gb(root)));
    Ok(())
}

/// `root_device`: records the chosen disk as `plugin_data.root_disk` (null when the
/// machine has none) and its `local_gb`.
pub(super) fn root_device(
    ctx: &Ctx<'_>,
    out: &mut InspectionOutcome,
) -> Result<(), InspectionError> {
    let root = root_disk(ctx, HookName::RootDevice)?;
    out.plugin_data.insert("root_disk".into(), root.cloned().map_or(Value::Null, Value::Object));
    out.plugin_data.insert("local_gb".into(), json!(local_gb(root)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{bios_vm, config, dual_socket, node, run_hooks};
    use super::*;

    fn without_root_disk(mut data: Value) -> Value {
        data.as_object_mut().unwrap().remove("root_disk");
        data
    }

    fn diskless(mut data: Value) -> Value {
        data["inventory"]["disks"] = json!([]);
        without_root_disk(data)
    }

    fn no_physical_mb(mut data: Value) -> Value {
        data["inventory"]["memory"]["physical_mb"] = Value::Null;
        data
    }

    /// Expected values from the fixture definitions: bios-vm is 1 socket x 2 cores, a
    /// 10 GiB virtio disk and 2 GiB of RAM reported as 2048 MiB; dual-socket is
    /// 2 x 4 cores x 2 threads, DIMMs of 16 + 32 + 16 GiB, and disks nvme0n1
    /// 960197124096 B (894 GiB), sda 480103981056 B (447 GiB) and sdb (rotational)
    /// 2000398934016 B (1863 GiB).
    #[test]
    fn properties_table() {
        type Edit = fn(Value) -> Value;
        let keep: Edit = |d| d;
        type Row = (&'static str, Value, Edit, Value, (u64, &'static str, u64, u64));
        let cases: [Row; 9] = [
            ("vm", bios_vm(), keep, json!({}), (2, "x86_64", 2048, 9)),
            ("vm, default rule", bios_vm(), without_root_disk, json!({}), (2, "x86_64", 2048, 9)),
            ("vm, diskless", bios_vm(), diskless, json!({}), (2, "x86_64", 2048, 0)),
            (
                "server, posted root disk",
                dual_socket(),
                keep,
                json!({}),
                (16, "x86_64", 65536, 446),
            ),
            (
                "server, default rule",
                dual_socket(),
                without_root_disk,
                json!({}),
                (16, "x86_64", 65536, 446),
            ),
            (
                "server, rotational hint",
                dual_socket(),
                keep,
                json!({"root_device": {"rotational": true}}),
                (16, "x86_64", 65536, 1862),
            ),
            (
                "server, name hint",
                dual_socket(),
                keep,
                json!({"root_device": {"name": "/dev/nvme0n1"}}),
                (16, "x86_64", 65536, 893),
            ),
            (
                "server, skip list",
                dual_socket(),
                without_root_disk,
                json!({"skip_block_devices": [{"name": "/dev/sda"}]}),
                (16, "x86_64", 65536, 893),
            ),
            // 67227656192 B of usable memory is 64113 MiB.
            (
                "server, no physical_mb",
                dual_socket(),
                no_physical_mb,
                json!({}),
                (16, "x86_64", 64113, 446),
            ),
        ];
        for (label, data, edit, props, (cpus, arch, mem, gb)) in cases {
            let out = run_hooks(&config(&[HookName::Properties]), &node(props), &[], &edit(data))
                .unwrap();
            let want = json!({"cpus": cpus, "cpu_arch": arch, "memory_mb": mem, "local_gb": gb});
            assert_eq!(Value::Object(out.properties), want, "{label}");
        }
    }

    #[test]
    fn properties_failures() {
        let mut no_memory = bios_vm();
        no_memory["inventory"]["memory"] = json!({"total": null, "physical_mb": null});
        let cases = [
            (
                bios_vm(),
                json!({"root_device": {"size": ">= 3000"}}),
                "No disks satisfied root device hints",
            ),
            (bios_vm(), json!({"root_device": {"colour": "blue"}}), "invalid root device hints"),
            (bios_vm(), json!({"skip_block_devices": "vda"}), "invalid skip_block_devices"),
            (json!({"root_disk": null}), json!({}), "the report has no inventory"),
        ];
        // No memory size: the rest is still recorded, memory_mb is left alone.
        let out =
            run_hooks(&config(&[HookName::Properties]), &node(json!({})), &[], &no_memory).unwrap();
        assert!(out.properties.get("memory_mb").is_none(), "{:?}", out.properties);
        assert!(out.properties.contains_key("cpus") && out.properties.contains_key("local_gb"));
        for (data, props, want) in cases {
            let err =
                run_hooks(&config(&[HookName::Properties]), &node(props), &[], &data).unwrap_err();
            let InspectionError::Invalid { hook, reason } = &err else { panic!("{err:?}") };
            assert_eq!(*hook, "properties");
            assert!(reason.contains(want), "{reason:?} lacks {want:?}");
        }
    }

    #[test]
    fn root_device_table() {
        type Edit = fn(Value) -> Value;
        let keep: Edit = |d| d;
        type Row = (&'static str, Value, Edit, Value, Option<&'static str>, u64);
        let cases: [Row; 5] = [
            ("vm", bios_vm(), keep, json!({}), Some("/dev/vda"), 9),
            ("vm, diskless", bios_vm(), diskless, json!({}), None, 0),
            ("server", dual_socket(), keep, json!({}), Some("/dev/sda"), 446),
            (
                "server, serial hint",
                dual_socket(),
                keep,
                json!({"root_device": {"serial": "zc20abcd"}}),
                Some("/dev/sdb"),
                1862,
            ),
            (
                "server, size hint",
                dual_socket(),
                without_root_disk,
                json!({"root_device": {"size": ">= 800"}}),
                Some("/dev/nvme0n1"),
                893,
            ),
        ];
        for (label, data, edit, props, want_name, want_gb) in cases {
            let out = run_hooks(&config(&[HookName::RootDevice]), &node(props), &[], &edit(data))
                .unwrap();
            let root = &out.plugin_data["root_disk"];
            assert_eq!(root.get("name").and_then(Value::as_str), want_name, "{label}");
            if want_name.is_some() {
                assert!(root["size"].as_u64().unwrap() > 0, "{label}: the whole record is kept");
            }
            assert_eq!(out.plugin_data["local_gb"], json!(want_gb), "{label}");
            assert!(out.properties.is_empty(), "{label}");
        }
    }
}
