//! `disks`: whole disks from `/sys/block`, enriched from the udev database and
//! `/dev/disk/by-path`, reported the way lsblk (and so IPA) reports them.

use std::collections::BTreeMap;

use ferric_shared::inventory::BlockDevice;

use super::{attr, link_basename, list_dir_or_empty, read_text, InventoryError};
use crate::host::HostRoot;

const SYS_BLOCK: &str = "/sys/block";
const BY_PATH: &str = "/dev/disk/by-path";

/// Kernel name prefixes of block devices that are never disks in lsblk's sense:
/// software RAID (`md`), device-mapper (`dm-`), optical drives (`sr`), floppies (`fd`).
const NEVER_DISKS: [&str; 4] = ["md", "dm-", "sr", "fd"];
/// Memory-backed devices, only reported on request.
const VIRTUAL: [&str; 3] = ["loop", "ram", "zram"];

/// Whether a `/sys/block` entry is reported as a disk.
pub fn is_reported(name: &str, include_virtual: bool) -> bool {
    if NEVER_DISKS.iter().any(|p| name.starts_with(p)) {
        return false;
    }
    include_virtual || !VIRTUAL.iter().any(|p| name.starts_with(p))
}

/// Parses a udev database file (`/run/udev/data/b8:0`) into its `E:` properties.
pub fn parse_udev_db(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("E:"))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `H:C:T:L` when the name is four colon-separated decimal numbers.
pub fn hctl_from_name(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split(':').collect();
    let ok = parts.len() == 4
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok.then(|| name.to_owned())
}

/// The transport lsblk would print, from the sysfs path of the block device (the
/// target of `/sys/block/<name>`), first rule that matches:
/// - an `nvme` component (the NVMe class device) or a `nvme*` kernel name → `nvme`;
/// - a `usbN` component (a USB bus) → `usb`;
/// - an `end_device-*` or `port-*` component (SAS transport class) → `sas`;
/// - an `ataN` component (libata port) → `sata`;
/// - anything else (virtio, loop, …) → `null`.
pub fn tran_from_sysfs_path(name: &str, sysfs_path: &str) -> Option<&'static str> {
    let comps: Vec<&str> = sysfs_path.split('/').collect();
    let numbered = |c: &str, prefix: &str| {
        c.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    if name.starts_with("nvme") || comps.contains(&"nvme") {
        Some("nvme")
    } else if comps.iter().any(|c| numbered(c, "usb")) {
        Some("usb")
    } else if comps.iter().any(|c| c.starts_with("end_device-") || c.starts_with("port-")) {
        Some("sas")
    } else if comps.iter().any(|c| numbered(c, "ata")) {
        Some("sata")
    } else {
        None
    }
}

/// lsblk's WWN form for a sysfs `wwid`: NAA identifiers as `0x…`, others (`eui.…`,
/// `t10.…`) as the kernel prints them.
pub fn wwn_from_wwid(wwid: &str) -> String {
    match wwid.strip_prefix("naa.") {
        Some(hex) => format!("0x{}", hex.to_ascii_lowercase()),
        None => wwid.to_owned(),
    }
}

/// `by-path` links to whole disks, keyed by the disk's kernel name; the first link in
/// name order wins when a disk has several.
fn by_path_links(host: &HostRoot) -> Result<BTreeMap<String, String>, InventoryError> {
    let mut links = BTreeMap::new();
    for link in list_dir_or_empty(host, BY_PATH)? {
        if link.contains("-part") {
            continue;
        }
        if let Some(target) = link_basename(host, &format!("{BY_PATH}/{link}")) {
            links.entry(target).or_insert_with(|| format!("{BY_PATH}/{link}"));
        }
    }
    Ok(links)
}

fn parse_u32(s: Option<String>) -> Option<u32> {
    s?.parse().ok()
}

fn disk(host: &HostRoot, name: &str, by_path: &BTreeMap<String, String>) -> Option<BlockDevice> {
    let dir = format!("{SYS_BLOCK}/{name}");
    // Per-path NVMe multipath nodes (`nvme0c0n1`) are hidden; lsblk skips them too.
    if attr(host, &format!("{dir}/hidden")).as_deref() == Some("1") {
        return None;
    }
    // A device whose size is unreadable is not something we can report (or deploy to).
    let sectors: u64 = attr(host, &format!("{dir}/size"))?.parse().ok()?;
    let udev = attr(host, &format!("{dir}/dev"))
        .and_then(|dev| read_text(host, &format!("/run/udev/data/b{dev}")).ok())
        .map(|t| parse_udev_db(&t))
        .unwrap_or_default();
    let udev_get = |key: &str| udev.get(key).filter(|v| !v.is_empty()).cloned();
    let sysfs_path = host.read_link(&dir).map(|p| p.to_string_lossy().into_owned());
    let sysfs_path = sysfs_path.unwrap_or_default();
    let device_attr = |a: &str| attr(host, &format!("{dir}/device/{a}"));
    let wwid = attr(host, &format!("{dir}/wwid")).or_else(|| device_attr("wwid"));
    Some(BlockDevice {
        name: format!("/dev/{name}"),
        model: device_attr("model").or_else(|| udev_get("ID_MODEL")),
        size: sectors.checked_mul(512)?,
        rotational: attr(host, &format!("{dir}/queue/rotational")).as_deref() == Some("1"),
        wwn: udev_get("ID_WWN").or_else(|| wwid.as_deref().map(wwn_from_wwid)),
        serial: udev_get("ID_SERIAL_SHORT").or_else(|| device_attr("serial")),
        vendor: device_attr("vendor").or_else(|| udev_get("ID_VENDOR")),
        wwn_with_extension: udev_get("ID_WWN_WITH_EXTENSION"),
        wwn_vendor_extension: udev_get("ID_WWN_VENDOR_EXTENSION"),
        hctl: link_basename(host, &format!("{dir}/device")).and_then(|b| hctl_from_name(&b)),
        by_path: by_path
            .get(name)
            .cloned()
            .or_else(|| udev_get("ID_PATH").map(|p| format!("{BY_PATH}/{p}"))),
        logical_sectors: parse_u32(attr(host, &format!("{dir}/queue/logical_block_size"))),
        physical_sectors: parse_u32(attr(host, &format!("{dir}/queue/physical_block_size"))),
        tran: tran_from_sysfs_path(name, &sysfs_path).map(str::to_owned),
    })
}

/// All whole disks, sorted by name. Partitions never appear in `/sys/block`.
pub fn collect(host: &HostRoot, include_virtual: bool) -> Result<Vec<BlockDevice>, InventoryError> {
    let by_path = by_path_links(host)?;
    let mut disks: Vec<BlockDevice> = list_dir_or_empty(host, SYS_BLOCK)?
        .into_iter()
        .filter(|n| is_reported(n, include_virtual))
        .filter_map(|n| disk(host, &n, &by_path))
        .collect();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(disks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_names_are_disks() {
        let cases = [
            ("sda", false, true),
            ("nvme0n1", false, true),
            ("vda", false, true),
            ("loop0", false, false),
            ("loop0", true, true),
            ("zram0", false, false),
            ("zram0", true, true),
            ("ram3", false, false),
            ("md0", true, false),
            ("dm-0", true, false),
            ("sr0", false, false),
        ];
        for (name, virt, want) in cases {
            assert_eq!(is_reported(name, virt), want, "{name} include_virtual={virt}");
        }
    }

    #[test]
    fn udev_db_properties() {
        let text = "S:disk/by-id/wwn-0x5000\nW:5\nE:ID_SERIAL_SHORT=S3Z9NB0K\n\
E:ID_WWN=0x5002538e40a1b2c3\nE:ID_PATH=pci-0000:00:17.0-ata-1\nE:BROKEN\nG:systemd\n\
E:ID_EMPTY=\n";
        let db = parse_udev_db(text);
        assert_eq!(db.len(), 4);
        assert_eq!(db["ID_SERIAL_SHORT"], "S3Z9NB0K");
        assert_eq!(db["ID_WWN"], "0x5002538e40a1b2c3");
        assert_eq!(db["ID_PATH"], "pci-0000:00:17.0-ata-1");
        assert_eq!(db["ID_EMPTY"], "");
    }

    #[test]
    fn hctl_rule() {
        let cases = [
            ("0:0:0:0", Some("0:0:0:0")),
            ("10:2:33:1", Some("10:2:33:1")),
            ("nvme0", None),
            ("virtio3", None),
            ("0:0:0", None),
            ("0:0::0", None),
            ("a:0:0:0", None),
        ];
        for (name, want) in cases {
            assert_eq!(hctl_from_name(name).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn tran_rule() {
        let cases = [
            ("nvme0n1", "../devices/pci0000:00/0000:5e:00.0/nvme/nvme0/nvme0n1", Some("nvme")),
            (
                "sda",
                "../devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda",
                Some("sata"),
            ),
            (
                "sdb",
                "../devices/pci0000:00/0000:3b:00.0/host1/port-1:0/end_device-1:0/\
target1:0:0/1:0:0:0/block/sdb",
                Some("sas"),
            ),
            (
                "sdc",
                "../devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/\
6:0:0:0/block/sdc",
                Some("usb"),
            ),
            ("vda", "../devices/pci0000:00/0000:00:04.0/virtio1/block/vda", None),
            ("loop0", "../devices/virtual/block/loop0", None),
            ("sdd", "", None),
            ("sde", "../devices/platform/data/host2/target2:0:0/2:0:0:0/block/sde", None),
        ];
        for (name, path, want) in cases {
            assert_eq!(tran_from_sysfs_path(name, path), want, "{name}");
        }
    }

    #[test]
    fn wwid_to_wwn() {
        assert_eq!(wwn_from_wwid("naa.5000C500A1B2C3D5"), "0x5000c500a1b2c3d5");
        assert_eq!(wwn_from_wwid("eui.0025388b91b2c3d4"), "eui.0025388b91b2c3d4");
    }
}
