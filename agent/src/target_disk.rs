//! Which local disk receives the image.
//!
//! The node's root-device hints (`instance_info.root_device` over
//! `properties.root_device`) choose among the host's whole disks, after the disks named
//! by `properties.skip_block_devices` and the disks that must never be written are set
//! aside. Without hints the smallest disk of at least 4 GiB wins (ties by name), as in
//! ironic-python-agent.
//!
//! Never written, whatever the hints say:
//! - a read-only disk (sysfs `ro` is 1);
//! - the disk the running system uses: one with itself or a partition mounted
//!   (`/proc/mounts`), or named by the kernel command line's `root=` (a `/dev` path, or
//!   `UUID=`/`PARTUUID=`/`LABEL=`/`PARTLABEL=` resolved through `/dev/disk/by-*`);
//! - the virtual-media device the ramdisk may have been booted from: the disk carrying
//!   the `ir-vfd-dev` label (Ironic's parameters floppy/ISO). A ramdisk booted over the
//!   network (`BOOTIF` set) has no such device and nothing mounted from a disk, so these
//!   rules then exclude nothing, as they should.
//!
//! When no disk qualifies, the error lists every disk and why it was passed over, so the
//! operator can fix the hints instead of guessing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use ferric_shared::hints::{
    find_root_device, HintDevice, HintError, HintTarget, RootDeviceHints, SkipList,
    MIN_DEFAULT_ROOT_BYTES,
};
use ferric_shared::inventory::BlockDevice;
use serde_json::Value;

use crate::cmdline::parse_cmdline;
use crate::host::HostRoot;
use crate::inventory::{disks, InventoryError};

/// The label of the virtual-media device that carries the ramdisk's parameters.
pub const VMEDIA_LABEL: &str = "ir-vfd-dev";

/// The chosen disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetDisk {
    /// The device as the host names it (`/dev/sda`); what results report.
    pub name: String,
    /// The device node to open: `name` under the host root.
    pub path: PathBuf,
    pub size_bytes: u64,
}

/// Why a disk was not chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    ReadOnly,
    /// In use by the running system; the text says how (what is mounted, `root=`, …).
    InUse(String),
    /// Matched an entry of `skip_block_devices`.
    Skipped,
    /// Does not satisfy the root-device hints.
    HintMismatch,
    /// Below the 4 GiB floor of the no-hints rule.
    TooSmall,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::ReadOnly => f.write_str("read-only"),
            Rejection::InUse(how) => write!(f, "in use by the running system ({how})"),
            Rejection::Skipped => f.write_str("listed in skip_block_devices"),
            Rejection::HintMismatch => f.write_str("does not match the root device hints"),
            Rejection::TooSmall => f.write_str("smaller than 4 GiB"),
        }
    }
}

/// A disk that was considered, and why it was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedDisk {
    pub name: String,
    pub size_bytes: u64,
    pub reason: Rejection,
}

/// Why no target disk could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum TargetDiskError {
    #[error("cannot list the host's disks")]
    Inventory(#[source] InventoryError),
    #[error("the node's root device hints are invalid")]
    Hints(#[source] HintError),
    #[error("the node's skip_block_devices is invalid")]
    SkipList(#[source] HintError),
    #[error("no suitable root disk{}: {}", hints_text(.hints), RejectedList(.rejected))]
    NoMatch {
        /// The hints as the node gave them, when there were any.
        hints: Option<String>,
        rejected: Vec<RejectedDisk>,
    },
}

fn hints_text(hints: &Option<String>) -> String {
    hints.as_ref().map(|h| format!(" for root device hints {h}")).unwrap_or_default()
}

struct RejectedList<'a>(&'a [RejectedDisk]);

impl fmt::Display for RejectedList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("the host has no disks");
        }
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            let gib = d.size_bytes as f64 / f64::from(1u32 << 30);
            write!(f, "{} ({gib:.1} GiB) {}", d.name, d.reason)?;
        }
        Ok(())
    }
}

/// A disk seen through the hint matcher.
pub(crate) struct Candidate<'a>(pub(crate) &'a BlockDevice);

impl HintTarget for Candidate<'_> {
    fn hint_device(&self) -> HintDevice<'_> {
        let d = self.0;
        HintDevice {
            name: &d.name,
            size_bytes: d.size,
            model: (&d.model).into(),
            vendor: (&d.vendor).into(),
            serial: (&d.serial).into(),
            wwn: (&d.wwn).into(),
            wwn_with_extension: (&d.wwn_with_extension).into(),
            wwn_vendor_extension: (&d.wwn_vendor_extension).into(),
            hctl: (&d.hctl).into(),
            by_path: (&d.by_path).into(),
            tran: (&d.tran).into(),
            rotational: Some(d.rotational),
        }
    }
}

/// Chooses the target disk for `node` (the node object as the conductor sent it, or as
/// lookup cached it) among the disks of `host`.
pub fn select(host: &HostRoot, node: &Value) -> Result<TargetDisk, TargetDiskError> {
    let null = Value::Null;
    let instance_info = node.get("instance_info").unwrap_or(&null);
    let properties = node.get("properties").unwrap_or(&null);
    let hints =
        RootDeviceHints::for_node(instance_info, properties).map_err(TargetDiskError::Hints)?;
    let skip = SkipList::from_json(properties.get("skip_block_devices").unwrap_or(&null))
        .map_err(TargetDiskError::SkipList)?;
    let all = disks::collect(host, false).map_err(TargetDiskError::Inventory)?;
    let in_use = in_use_disks(host, &all);

    let mut rejected = Vec::new();
    let mut eligible = Vec::new();
    for disk in &all {
        let kernel_name = kernel_name(&disk.name);
        let reason = if is_read_only(host, kernel_name) {
            Some(Rejection::ReadOnly)
        } else if let Some(how) = in_use.get(kernel_name) {
            Some(Rejection::InUse(how.clone()))
        } else if skip.skips(&Candidate(disk)) {
            Some(Rejection::Skipped)
        } else {
            None
        };
        match reason {
            Some(reason) => rejected.push(RejectedDisk {
                name: disk.name.clone(),
                size_bytes: disk.size,
                reason,
            }),
            None => eligible.push(Candidate(disk)),
        }
    }

    if let Some(Candidate(chosen)) = find_root_device(hints.as_ref(), &eligible) {
        return Ok(TargetDisk {
            name: chosen.name.clone(),
            path: host.path(&chosen.name),
            size_bytes: chosen.size,
        });
    }
    for Candidate(disk) in eligible {
        let reason = match &hints {
            Some(_) => Rejection::HintMismatch,
            // Without hints, the only way an eligible disk loses is being too small.
            None if disk.size < MIN_DEFAULT_ROOT_BYTES => Rejection::TooSmall,
            None => Rejection::HintMismatch,
        };
        rejected.push(RejectedDisk { name: disk.name.clone(), size_bytes: disk.size, reason });
    }
    rejected.sort_by(|a, b| a.name.cmp(&b.name));
    let hints_json = hints.as_ref().map(|_| {
        let from_instance = instance_info.get("root_device").filter(|v| is_set(v));
        from_instance.or_else(|| properties.get("root_device")).unwrap_or(&null).to_string()
    });
    Err(TargetDiskError::NoMatch { hints: hints_json, rejected })
}

fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Object(m) => !m.is_empty(),
        _ => true,
    }
}

/// `sda` for `/dev/sda`.
pub(crate) fn kernel_name(device: &str) -> &str {
    device.rsplit('/').next().unwrap_or(device)
}

pub(crate) fn is_read_only(host: &HostRoot, kernel_name: &str) -> bool {
    host.read_attr(format!("/sys/block/{kernel_name}/ro")).as_deref() == Some("1")
}

/// Disks the running system uses, by kernel name, with how they are used.
pub(crate) fn in_use_disks(host: &HostRoot, all: &[BlockDevice]) -> BTreeMap<String, String> {
    // Every whole-disk and partition kernel name, mapped to its disk.
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for disk in all {
        let name = kernel_name(&disk.name).to_owned();
        for entry in host.list_dir(format!("/sys/block/{name}")).unwrap_or_default() {
            if host.exists(format!("/sys/block/{name}/{entry}/partition")) {
                owner.insert(entry, name.clone());
            }
        }
        owner.insert(name.clone(), name);
    }
    let mut used = BTreeMap::new();
    let mut mark = |device: &str, how: String| {
        if let Some(disk) = resolve_device(host, device).and_then(|k| owner.get(&k)) {
            used.entry(disk.clone()).or_insert(how);
        }
    };
    if let Ok(mounts) = host.read_to_string("/proc/mounts") {
        for line in mounts.lines() {
            let mut fields = line.split_whitespace();
            if let (Some(source), Some(target)) = (fields.next(), fields.next()) {
                if source.starts_with("/dev/") {
                    mark(source, format!("{source} is mounted at {}", unescape_mount(target)));
                }
            }
        }
    }
    if let Ok(raw) = host.read_bytes("/proc/cmdline") {
        if let Some(root) = parse_cmdline(&raw).get("root") {
            if let Some(device) = root_device_path(root) {
                mark(&device, format!("root={root} on the kernel command line"));
            }
        }
    }
    let vmedia = format!("/dev/disk/by-label/{VMEDIA_LABEL}");
    mark(&vmedia, format!("virtual media labelled {VMEDIA_LABEL}"));
    used
}

/// The `/dev` path a `root=` value names, if it names a block device.
fn root_device_path(root: &str) -> Option<String> {
    if root.starts_with("/dev/") {
        return Some(root.to_owned());
    }
    let (kind, value) = root.split_once('=')?;
    let dir = match kind {
        "UUID" => "by-uuid",
        "PARTUUID" => "by-partuuid",
        "LABEL" => "by-label",
        "PARTLABEL" => "by-partlabel",
        _ => return None,
    };
    (!value.is_empty()).then(|| format!("/dev/disk/{dir}/{value}"))
}

/// The kernel name behind a `/dev` path: the path's own name, or for a `/dev/disk/by-*`
/// symlink the name it points at. `None` when a symlink is missing.
fn resolve_device(host: &HostRoot, device: &str) -> Option<String> {
    if device.starts_with("/dev/disk/") {
        let target = host.read_link(device).ok()?;
        return target.file_name().map(|n| n.to_string_lossy().into_owned());
    }
    Some(kernel_name(device).to_owned())
}

/// `/proc/mounts` writes spaces and other specials in paths as `\ooo` octal escapes.
fn unescape_mount(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{tree, DiskSpec, HostBuilder};
    use serde_json::json;

    const GIB: u64 = 1 << 30;

    /// sda 8 GiB (SATA, serial S-A), sdb 2 GiB, nvme0n1 16 GiB (NVMe), vda 6 GiB (virtio).
    fn base() -> HostBuilder {
        HostBuilder::new()
            .add_disk(DiskSpec::sata("sda", "0000:00:17.0", 8 * GIB).serial("S-A").partition(GIB))
            .add_disk(DiskSpec::sata("sdb", "0000:00:17.0", 2 * GIB).serial("S-B"))
            .add_disk(DiskSpec::nvme("nvme0n1", "0000:5e:00.0", 16 * GIB).partition(GIB))
            .add_disk(DiskSpec::virtio("vda", "0000:00:04.0", 6 * GIB))
    }

    fn choose(host: HostBuilder, node: Value) -> Result<TargetDisk, TargetDiskError> {
        let dir = tempfile::tempdir().unwrap();
        let built = host.build(dir.path()).unwrap();
        select(&built.host, &node)
    }

    #[test]
    fn chosen_disks() {
        let table: Vec<(&str, HostBuilder, Value, &str)> = vec![
            ("default: smallest >= 4 GiB", base(), json!({}), "/dev/vda"),
            (
                "instance_info hints win over properties",
                base(),
                json!({"instance_info": {"root_device": {"serial": "s-a"}},
                       "properties": {"root_device": {"name": "/dev/nvme0n1"}}}),
                "/dev/sda",
            ),
            (
                "empty instance_info hints fall back to properties",
                base(),
                json!({"instance_info": {"root_device": {}},
                       "properties": {"root_device": {"size": ">= 10"}}}),
                "/dev/nvme0n1",
            ),
            (
                "hints may pick a disk below the default floor",
                base(),
                json!({"properties": {"root_device": {"name": "/dev/sdb"}}}),
                "/dev/sdb",
            ),
            (
                "skip list by name",
                base(),
                json!({"properties": {"skip_block_devices": [{"name": "/dev/vda"}]}}),
                "/dev/sda",
            ),
            (
                "skip list by hint dict, volume entries ignored",
                base(),
                json!({"properties": {"skip_block_devices": [
                    {"volume_name": "root"}, {"size": 6}, {"serial": "S-A"}]}}),
                "/dev/nvme0n1",
            ),
            (
                "read-only disk never chosen",
                base().add_disk(DiskSpec::sata("sdc", "0000:00:17.0", 5 * GIB).read_only()),
                json!({}),
                "/dev/vda",
            ),
            (
                "disk with a mounted partition never chosen",
                base().file("/proc/mounts", "/dev/vda /run/media ext4 rw 0 0\n"),
                json!({}),
                "/dev/sda",
            ),
            (
                "root= partition excludes its disk",
                base().cmdline("console=ttyS0 root=/dev/sda1 ro"),
                json!({"properties": {"root_device": {"size": ">= 8"}}}),
                "/dev/nvme0n1",
            ),
        ];
        for (what, host, node, want) in table {
            match choose(host, node) {
                Ok(disk) => {
                    assert_eq!(disk.name, want, "{what}");
                    assert!(disk.path.ends_with(want.trim_start_matches('/')), "{what}");
                }
                Err(e) => panic!("{what}: {e}"),
            }
        }
    }

    fn rejections(host: HostBuilder, node: Value) -> (String, Vec<(String, Rejection)>) {
        match choose(host, node) {
            Err(e @ TargetDiskError::NoMatch { .. }) => {
                let text = e.to_string();
                let TargetDiskError::NoMatch { rejected, .. } = e else { unreachable!() };
                (text, rejected.into_iter().map(|r| (r.name, r.reason)).collect())
            }
            other => panic!("expected NoMatch, got {other:?}"),
        }
    }

    #[test]
    fn nothing_matches_lists_every_disk_and_why() {
        let host = base()
            .add_disk(DiskSpec::sata("sdc", "0000:00:17.0", 5 * GIB).read_only())
            .file(
                "/proc/mounts",
                "proc /proc proc rw 0 0\n/dev/nvme0n1p1 /mnt/my\\040disk vfat rw 0 0\n",
            )
            .cmdline("root=/dev/ram0");
        let node = json!({"properties": {"root_device": {"model": "NoSuchModel"},
                                         "skip_block_devices": [{"name": "/dev/vda"}]}});
        let (text, got) = rejections(host, node);
        assert_eq!(
            got,
            vec![
                (
                    "/dev/nvme0n1".to_owned(),
                    Rejection::InUse("/dev/nvme0n1p1 is mounted at /mnt/my disk".into())
                ),
                ("/dev/sda".to_owned(), Rejection::HintMismatch),
                ("/dev/sdb".to_owned(), Rejection::HintMismatch),
                ("/dev/sdc".to_owned(), Rejection::ReadOnly),
                ("/dev/vda".to_owned(), Rejection::Skipped),
            ]
        );
        for needle in [
            "root device hints {\"model\":\"NoSuchModel\"}",
            "/dev/sdc (5.0 GiB) read-only",
            "/dev/vda (6.0 GiB) listed in skip_block_devices",
            "/dev/sda (8.0 GiB) does not match the root device hints",
        ] {
            assert!(text.contains(needle), "{needle:?} not in {text:?}");
        }

        // Without hints, small disks are named as such.
        let small = HostBuilder::new()
            .add_disk(DiskSpec::sata("sda", "0000:00:17.0", 2 * GIB))
            .add_disk(DiskSpec::sata("sdb", "0000:00:17.0", 3 * GIB));
        let (text, got) = rejections(small, json!({}));
        assert_eq!(
            got,
            vec![
                ("/dev/sda".to_owned(), Rejection::TooSmall),
                ("/dev/sdb".to_owned(), Rejection::TooSmall)
            ]
        );
        assert!(text.starts_with("no suitable root disk: /dev/sda (2.0 GiB) smaller"), "{text}");

        let (text, got) = rejections(HostBuilder::new(), json!({}));
        assert!(got.is_empty());
        assert_eq!(text, "no suitable root disk: the host has no disks");
    }

    #[test]
    fn boot_devices_by_uuid_label_and_vmedia() {
        let dir = tempfile::tempdir().unwrap();
        let built = base().cmdline("root=UUID=1234-abcd").build(dir.path()).unwrap();
        let host = &built.host;
        tree::symlink(host, "/dev/disk/by-uuid/1234-abcd", "/dev/nvme0n1p1").unwrap();
        tree::symlink(host, "/dev/disk/by-label/ir-vfd-dev", "/dev/vda").unwrap();
        let err = select(host, &json!({"properties": {"root_device": {"size": ">= 10"}}}));
        let Err(TargetDiskError::NoMatch { rejected, .. }) = err else { panic!("{err:?}") };
        let reason = |n: &str| rejected.iter().find(|r| r.name == n).map(|r| r.reason.clone());
        assert_eq!(
            reason("/dev/nvme0n1"),
            Some(Rejection::InUse("root=UUID=1234-abcd on the kernel command line".into()))
        );
        assert_eq!(
            reason("/dev/vda"),
            Some(Rejection::InUse("virtual media labelled ir-vfd-dev".into()))
        );
        assert_eq!(reason("/dev/sda"), Some(Rejection::HintMismatch));
        // The first disk in name order that is free and matches: nvme0n1 is in use.
        let chosen = select(host, &json!({"properties": {"root_device": {"size": ">= 6"}}}));
        assert_eq!(chosen.unwrap().name, "/dev/sda");
    }

    #[test]
    fn bad_hints_and_skip_lists_are_errors_naming_them() {
        let err =
            choose(base(), json!({"properties": {"root_device": {"colour": "red"}}})).unwrap_err();
        assert!(matches!(err, TargetDiskError::Hints(HintError::UnknownHint { .. })), "{err:?}");
        let err = choose(base(), json!({"properties": {"skip_block_devices": "sda"}})).unwrap_err();
        assert!(matches!(err, TargetDiskError::SkipList(_)), "{err:?}");
    }

    #[test]
    fn mount_escapes_and_root_values() {
        assert_eq!(unescape_mount("/a\\040b\\011c"), "/a b\tc");
        assert_eq!(unescape_mount("/trailing\\04"), "/trailing\\04");
        assert_eq!(unescape_mount("/\\999"), "/\\999");
        let table = [
            ("/dev/sda2", Some("/dev/sda2")),
            ("UUID=abc", Some("/dev/disk/by-uuid/abc")),
            ("PARTUUID=1-2", Some("/dev/disk/by-partuuid/1-2")),
            ("LABEL=root", Some("/dev/disk/by-label/root")),
            ("PARTLABEL=p", Some("/dev/disk/by-partlabel/p")),
            ("UUID=", None),
            ("/dev/nfs", Some("/dev/nfs")),
            ("tmpfs", None),
            ("ZFS=pool/root", None),
        ];
        for (root, want) in table {
            assert_eq!(root_device_path(root).as_deref(), want, "{root}");
        }
    }
}
