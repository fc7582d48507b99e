//! Which block devices an erase step may touch.
//!
//! The candidates are the host's whole disks (as the inventory lists them: no loop, ram,
//! md or dm devices) with their partitions from sysfs. Set aside, each with its reason:
//! - disks the running system uses — mounted, named by `root=`, or the virtual-media
//!   device labelled `ir-vfd-dev` — by the same rules as [`crate::target_disk`];
//! - disks matching `properties.skip_block_devices`;
//! - disks that are, or have a partition that is, a member of an assembled software RAID
//!   array (a `md*` holder in sysfs). The member is left alone because rewriting it under
//!   a running array would corrupt the array rather than erase it; the array's own device
//!   (`/dev/md0`) is erased instead, so what the tenant stored on it still goes. Members
//!   of arrays that are not assembled are ordinary devices: their RAID superblocks are
//!   signatures like any other. Disks held by device-mapper (`dm-*`: LVM, dm-crypt) are
//!   in use and set aside too.
//! - read-only disks: the step fails naming them, unless the node's
//!   `driver_internal_info.agent_erase_skip_read_only` is true, when they are skipped.
//!
//! Disks holding special filesystems (a Ceph BlueStore label, VMFS, or a GPT partition
//! typed for Ceph or IBM Spectrum Scale/GPFS) make the step fail when
//! `ipa-guard-special-filesystems` is on, unless the node's
//! `driver_internal_info.wipe_special_filesystems` is true. Only the disk and its table's
//! partitions are read for this, never written.

use std::fmt;
use std::fs::File;
use std::path::PathBuf;

use ferric_shared::hints::{HintError, SkipList};
use serde_json::Value;
use uuid::Uuid;

use super::metadata::{self, MetadataEraseError};
use super::run::EraseConfig;
use crate::host::HostRoot;
use crate::inventory::{disks, InventoryError};
use crate::target_disk::{in_use_disks, is_read_only, kernel_name, Candidate};

/// A device an erase step will work on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EraseDevice {
    /// As the host names it (`/dev/sda`, `/dev/md0`); what results report.
    pub name: String,
    /// The device node to open: `name` under the host root.
    pub path: PathBuf,
    pub size_bytes: u64,
    /// Its partitions as the kernel knows them, in name order.
    pub partitions: Vec<PartitionDevice>,
}

/// A partition of an [`EraseDevice`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDevice {
    pub name: String,
    pub path: PathBuf,
}

/// Why a device is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// Used by the running system; the text says how.
    InUse(String),
    /// Matched an entry of `skip_block_devices`.
    Skipped,
    /// It or a partition of it belongs to an assembled md array (named).
    RaidMember(String),
    /// Read-only, and the node allows skipping such devices.
    ReadOnly,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::InUse(how) => write!(f, "in use by the running system ({how})"),
            Exclusion::Skipped => f.write_str("listed in skip_block_devices"),
            Exclusion::RaidMember(md) => {
                write!(f, "member of the software RAID array {md}, which is erased instead")
            }
            Exclusion::ReadOnly => {
                f.write_str("read-only (skipped: agent_erase_skip_read_only is set)")
            }
        }
    }
}

/// A device set aside, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExcludedDevice {
    pub name: String,
    pub reason: Exclusion,
}

/// The outcome of selection: what to erase, in name order, and what was set aside.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    pub devices: Vec<EraseDevice>,
    pub excluded: Vec<ExcludedDevice>,
}

/// The node's erase flags from `driver_internal_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeEraseFlags {
    /// `agent_erase_skip_read_only`.
    pub skip_read_only: bool,
    /// `wipe_special_filesystems`.
    pub wipe_special_filesystems: bool,
}

impl NodeEraseFlags {
    pub fn from_node(node: Option<&Value>) -> Self {
        Self {
            skip_read_only: node_flag(node, "agent_erase_skip_read_only").unwrap_or(false),
            wipe_special_filesystems: node_flag(node, "wipe_special_filesystems").unwrap_or(false),
        }
    }
}

/// A boolean from the node's `driver_internal_info`: JSON booleans, numbers (non-zero is
/// true) and the strings oslo accepts (`true`/`yes`/`on`/`1`/`y`/`t` and their negations,
/// any case). `None` when absent or not a recognisable boolean.
pub fn node_flag(node: Option<&Value>, key: &str) -> Option<bool> {
    let v = node?.get("driver_internal_info")?.get(key)?;
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|x| x != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
            "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Why the devices could not be chosen (the step fails with this).
#[derive(Debug, thiserror::Error)]
pub enum DeviceSelectionError {
    #[error("cannot list the host's disks")]
    Inventory(#[source] InventoryError),
    #[error("the node's skip_block_devices is invalid")]
    SkipList(#[source] HintError),
    #[error(
        "read-only devices cannot be erased: {} (set driver_internal_info.\
         agent_erase_skip_read_only to skip them)",
        .devices.join(", ")
    )]
    ReadOnly { devices: Vec<String> },
    #[error(
        "devices hold special filesystems and are protected: {} (set driver_internal_info.\
         wipe_special_filesystems to erase them)",
        ProtectedList(.devices)
    )]
    Protected { devices: Vec<(String, String)> },
    #[error("cannot check {device} for special filesystems")]
    Probe {
        device: String,
        #[source]
        source: MetadataEraseError,
    },
}

struct ProtectedList<'a>(&'a [(String, String)]);

impl fmt::Display for ProtectedList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (dev, what)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{dev} ({what})")?;
        }
        Ok(())
    }
}

/// Signatures of filesystems that belong to a storage cluster rather than to the tenant.
pub const PROTECTED_SIGNATURES: [&str; 3] = ["ceph_bluestore", "VMFS_volume_member", "VMFS"];

/// GPT partition types of the same, with a name for messages.
pub const PROTECTED_PARTITION_TYPES: [(Uuid, &str); 6] = [
    (Uuid::from_u128(0x37affc90_ef7d_4e96_91c3_2d7ae055b174), "IBM GPFS"),
    (Uuid::from_u128(0x4fbd7e29_9d25_41b8_afd0_062c0ceff05d), "Ceph OSD"),
    (Uuid::from_u128(0x45b0969e_9b03_4f30_b4c6_b4b80ceff106), "Ceph journal"),
    (Uuid::from_u128(0xcafecafe_9b03_4f30_b4c6_b4b80ceff106), "Ceph block"),
    (Uuid::from_u128(0x30cd0809_c2b2_499c_8879_2d6b78529876), "Ceph block DB"),
    (Uuid::from_u128(0x5ce17fce_4087_4169_b7ff_056cc58473f9), "Ceph block write-ahead log"),
];

/// The devices of `host` an erase step may touch, for `node` under `config`.
pub fn select(
    host: &HostRoot,
    node: Option<&Value>,
    config: &EraseConfig,
) -> Result<Selection, DeviceSelectionError> {
    let null = Value::Null;
    let flags = NodeEraseFlags::from_node(node);
    let skip_json = node
        .and_then(|n| n.get("properties"))
        .and_then(|p| p.get("skip_block_devices"))
        .unwrap_or(&null);
    let skip = SkipList::from_json(skip_json).map_err(DeviceSelectionError::SkipList)?;
    let all = disks::collect(host, false).map_err(DeviceSelectionError::Inventory)?;
    let in_use = in_use_disks(host, &all);

    let mut selection = Selection::default();
    let mut read_only = Vec::new();
    let mut arrays: Vec<String> = Vec::new();
    for disk in &all {
        let kname = kernel_name(&disk.name);
        let partitions = sysfs_partitions(host, kname);
        let raid = md_holder(host, &format!("/sys/block/{kname}"), kname).or_else(|| {
            partitions.iter().find_map(|p| {
                let pk = kernel_name(&p.name);
                md_holder(host, &format!("/sys/block/{kname}/{pk}"), pk)
            })
        });
        let dm = dm_holder(host, &format!("/sys/block/{kname}")).or_else(|| {
            partitions.iter().find_map(|p| {
                dm_holder(host, &format!("/sys/block/{kname}/{}", kernel_name(&p.name)))
            })
        });
        let reason = if let Some(how) = in_use.get(kname) {
            Some(Exclusion::InUse(how.clone()))
        } else if skip.skips(&Candidate(disk)) {
            Some(Exclusion::Skipped)
        } else if let Some(md) = raid {
            if !arrays.contains(&md) {
                arrays.push(md.clone());
            }
            Some(Exclusion::RaidMember(format!("/dev/{md}")))
        } else if let Some(dm) = dm {
            Some(Exclusion::InUse(format!("held by /dev/{dm}")))
        } else if is_read_only(host, kname) {
            if !flags.skip_read_only {
                read_only.push(disk.name.clone());
            }
            Some(Exclusion::ReadOnly)
        } else {
            None
        };
        match reason {
            Some(reason) => {
                selection.excluded.push(ExcludedDevice { name: disk.name.clone(), reason })
            }
            None => selection.devices.push(EraseDevice {
                name: disk.name.clone(),
                path: host.path(&disk.name),
                size_bytes: disk.size,
                partitions,
            }),
        }
    }
    if !read_only.is_empty() {
        return Err(DeviceSelectionError::ReadOnly { devices: read_only });
    }
    for md in arrays {
        let name = format!("/dev/{md}");
        if is_read_only(host, &md) {
            if !flags.skip_read_only {
                return Err(DeviceSelectionError::ReadOnly { devices: vec![name] });
            }
            selection.excluded.push(ExcludedDevice { name, reason: Exclusion::ReadOnly });
            continue;
        }
        let sectors: u64 = host
            .read_attr(format!("/sys/block/{md}/size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        selection.devices.push(EraseDevice {
            path: host.path(&name),
            name,
            size_bytes: sectors.saturating_mul(512),
            partitions: Vec::new(),
        });
    }
    selection.devices.sort_by(|a, b| a.name.cmp(&b.name));
    if config.guard_special_filesystems && !flags.wipe_special_filesystems {
        // Each check is a few latency-bound reads of one disk: the disks are read side by
        // side, a bounded number at a time.
        let mut checks = Vec::with_capacity(selection.devices.len());
        for batch in selection.devices.chunks(8) {
            std::thread::scope(|scope| {
                let handles: Vec<_> =
                    batch.iter().map(|dev| scope.spawn(move || special_filesystem(dev))).collect();
                for (dev, h) in batch.iter().zip(handles) {
                    let result = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
                    checks.push((dev, result));
                }
            });
        }
        let mut protected = Vec::new();
        for (dev, result) in checks {
            if let Some(what) = result? {
                protected.push((dev.name.clone(), what));
            }
        }
        if !protected.is_empty() {
            return Err(DeviceSelectionError::Protected { devices: protected });
        }
    }
    Ok(selection)
}

/// Partitions of disk `kname` from sysfs (`/sys/block/sda/sda1/partition` exists).
fn sysfs_partitions(host: &HostRoot, kname: &str) -> Vec<PartitionDevice> {
    let dir = format!("/sys/block/{kname}");
    host.list_dir(&dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| host.exists(format!("{dir}/{e}/partition")))
        .map(|e| {
            let name = format!("/dev/{e}");
            PartitionDevice { path: host.path(&name), name }
        })
        .collect()
}

/// The md array holding `dir` (a disk or partition directory in sysfs): a `holders/md*`
/// entry, or the `md/` directory the kernel adds to members of a running array.
fn md_holder(host: &HostRoot, dir: &str, kname: &str) -> Option<String> {
    let held = host.list_dir(format!("{dir}/holders")).unwrap_or_default();
    if let Some(md) = held.into_iter().find(|h| h.starts_with("md")) {
        return Some(md);
    }
    // Without a holders link, the array names its members under /sys/block/mdX/md/dev-*.
    host.list_dir("/sys/block")
        .unwrap_or_default()
        .into_iter()
        .filter(|b| b.starts_with("md"))
        .find(|md| host.exists(format!("/sys/block/{md}/md/dev-{kname}")))
}

fn dm_holder(host: &HostRoot, dir: &str) -> Option<String> {
    host.list_dir(format!("{dir}/holders"))
        .unwrap_or_default()
        .into_iter()
        .find(|h| h.starts_with("dm-"))
}

/// What special filesystem `dev` holds, if any: a protected signature on the device or
/// inside a partition of its table, or a protected GPT partition type.
fn special_filesystem(dev: &EraseDevice) -> Result<Option<String>, DeviceSelectionError> {
    let probe_err = |source| DeviceSelectionError::Probe { device: dev.name.clone(), source };
    let file = File::open(&dev.path)
        .map_err(|source| probe_err(MetadataEraseError::Open { path: dev.path.clone(), source }))?;
    let geometry = metadata::geometry_of(&file).map_err(probe_err)?;
    let sector = geometry.sector.max(512);
    if let Ok(Some(gpt)) = crate::disk::gpt::Gpt::read(&file, geometry.len, sector) {
        for p in gpt.partitions() {
            if let Some((_, what)) =
                PROTECTED_PARTITION_TYPES.iter().find(|(t, _)| *t == p.type_guid)
            {
                return Ok(Some(format!("partition {} is typed {what}", p.number)));
            }
        }
    }
    let mut windows = vec![(None, 0..geometry.len)];
    windows.extend(
        metadata::table_partitions(&file, geometry).into_iter().map(|p| (Some(p.number), p.bytes)),
    );
    for (number, window) in windows {
        let hits = metadata::probe(&file, geometry, window).map_err(probe_err)?;
        if let Some(hit) = hits.iter().find(|h| PROTECTED_SIGNATURES.contains(&h.signature.name)) {
            let name = hit.signature.name;
            return Ok(Some(match number {
                Some(n) => format!("{name} on partition {n}"),
                None => name.to_owned(),
            }));
        }
    }
    Ok(None)
}

/// The error and its sources, joined with ": ".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{tree, DiskSpec, HostBuilder};
    use serde_json::json;

    const GIB: u64 = 1 << 30;

    /// sda (boot medium candidate, one partition), sdb (two partitions), nvme0n1, all
    /// with backing files so the special-filesystem guard can read them.
    fn base() -> HostBuilder {
        HostBuilder::new()
            .add_disk(DiskSpec::sata("sda", "0000:00:17.0", GIB).partition(GIB / 4).backing_file())
            .add_disk(
                DiskSpec::sata("sdb", "0000:00:17.0", 2 * GIB)
                    .serial("S-B")
                    .partition(GIB / 4)
                    .partition(GIB / 4)
                    .backing_file(),
            )
            .add_disk(DiskSpec::nvme("nvme0n1", "0000:5e:00.0", GIB).backing_file())
    }

    fn names(sel: &Selection) -> Vec<&str> {
        sel.devices.iter().map(|d| d.name.as_str()).collect()
    }

    fn excluded(sel: &Selection) -> Vec<(&str, Exclusion)> {
        sel.excluded.iter().map(|e| (e.name.as_str(), e.reason.clone())).collect()
    }

    #[test]
    fn all_disks_with_their_partitions_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let built = base().build(dir.path()).unwrap();
        let sel = select(&built.host, None, &EraseConfig::default()).unwrap();
        assert_eq!(names(&sel), ["/dev/nvme0n1", "/dev/sda", "/dev/sdb"]);
        assert!(sel.excluded.is_empty());
        let sdb = &sel.devices[2];
        let parts: Vec<&str> = sdb.partitions.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(parts, ["/dev/sdb1", "/dev/sdb2"]);
        assert_eq!(sdb.path, built.host.path("/dev/sdb"));
        assert_eq!(sdb.size_bytes, 2 * GIB);
    }

    #[test]
    fn boot_medium_in_use_and_skipped_disks_are_set_aside_with_reasons() {
        type Case =
            (&'static str, HostBuilder, Value, Vec<&'static str>, (&'static str, Exclusion));
        let table: Vec<Case> = vec![
            (
                "root= names a partition",
                base().cmdline("root=/dev/sda1 ro"),
                json!({}),
                vec!["/dev/nvme0n1", "/dev/sdb"],
                ("/dev/sda", Exclusion::InUse("root=/dev/sda1 on the kernel command line".into())),
            ),
            (
                "a mounted partition",
                base().file("/proc/mounts", "/dev/sdb2 /mnt ext4 rw 0 0\n"),
                json!({}),
                vec!["/dev/nvme0n1", "/dev/sda"],
                ("/dev/sdb", Exclusion::InUse("/dev/sdb2 is mounted at /mnt".into())),
            ),
            (
                "skip_block_devices by serial",
                base(),
                json!({"properties": {"skip_block_devices": [{"serial": "S-B"}]}}),
                vec!["/dev/nvme0n1", "/dev/sda"],
                ("/dev/sdb", Exclusion::Skipped),
            ),
            (
                "skip_block_devices by name",
                base(),
                json!({"properties": {"skip_block_devices": [{"name": "/dev/nvme0n1"}]}}),
                vec!["/dev/sda", "/dev/sdb"],
                ("/dev/nvme0n1", Exclusion::Skipped),
            ),
        ];
        for (what, host, node, want, want_excluded) in table {
            let dir = tempfile::tempdir().unwrap();
            let built = host.build(dir.path()).unwrap();
            let sel = select(&built.host, Some(&node), &EraseConfig::default())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(names(&sel), want, "{what}");
            assert_eq!(excluded(&sel), vec![want_excluded], "{what}");
        }
    }

    #[test]
    fn virtual_media_device_is_never_erased() {
        let dir = tempfile::tempdir().unwrap();
        let built = base().build(dir.path()).unwrap();
        tree::symlink(&built.host, "/dev/disk/by-label/ir-vfd-dev", "/dev/nvme0n1").unwrap();
        let sel = select(&built.host, None, &EraseConfig::default()).unwrap();
        assert_eq!(names(&sel), ["/dev/sda", "/dev/sdb"]);
        let (name, reason) = excluded(&sel).remove(0);
        assert_eq!(name, "/dev/nvme0n1");
        assert!(reason.to_string().contains("ir-vfd-dev"), "{reason}");
    }

    #[test]
    fn read_only_fails_the_step_unless_the_node_skips_it() {
        let host = base().add_disk(DiskSpec::sata("sdc", "0000:00:17.0", GIB).read_only());
        let dir = tempfile::tempdir().unwrap();
        let built = host.build(dir.path()).unwrap();
        let err = select(&built.host, None, &EraseConfig::default()).unwrap_err();
        assert!(
            matches!(&err, DeviceSelectionError::ReadOnly { devices } if devices == &["/dev/sdc"]),
            "{err:?}"
        );
        assert!(err.to_string().contains("agent_erase_skip_read_only"), "{err}");
        for flag in [json!(true), json!("True"), json!(1)] {
            let node = json!({"driver_internal_info": {"agent_erase_skip_read_only": flag}});
            let sel = select(&built.host, Some(&node), &EraseConfig::default()).unwrap();
            assert_eq!(names(&sel), ["/dev/nvme0n1", "/dev/sda", "/dev/sdb"], "{flag}");
            assert_eq!(excluded(&sel), vec![("/dev/sdc", Exclusion::ReadOnly)]);
        }
        let no = json!({"driver_internal_info": {"agent_erase_skip_read_only": "no"}});
        assert!(select(&built.host, Some(&no), &EraseConfig::default()).is_err());
    }

    #[test]
    fn md_members_go_through_the_array_and_dm_holders_are_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let built = base().build(dir.path()).unwrap();
        let host = &built.host;
        tree::mkdir(host, "/sys/block/sdb/sdb2/holders/md127").unwrap();
        tree::attr(host, "/sys/devices/virtual/block/md127/size", 1024).unwrap();
        tree::attr(host, "/sys/devices/virtual/block/md127/ro", 0).unwrap();
        tree::symlink(host, "/sys/block/md127", "/sys/devices/virtual/block/md127").unwrap();
        tree::write(host, "/dev/md127", vec![0u8; 4096]).unwrap();
        tree::mkdir(host, "/sys/block/nvme0n1/holders/dm-0").unwrap();
        let sel = select(host, None, &EraseConfig::default()).unwrap();
        assert_eq!(names(&sel), ["/dev/md127", "/dev/sda"]);
        assert_eq!(sel.devices[0].size_bytes, 1024 * 512);
        assert_eq!(
            excluded(&sel),
            vec![
                ("/dev/nvme0n1", Exclusion::InUse("held by /dev/dm-0".into())),
                ("/dev/sdb", Exclusion::RaidMember("/dev/md127".into())),
            ]
        );
    }

    #[test]
    fn special_filesystems_are_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let built = base().build(dir.path()).unwrap();
        let host = &built.host;
        let disk = std::fs::OpenOptions::new().write(true).open(host.path("/dev/sdb")).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&disk, b"bluestore block device\nabc", 0).unwrap();
        let vmfs = std::fs::OpenOptions::new().write(true).open(host.path("/dev/sda")).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&vmfs, &[0x0d, 0xd0, 0x01, 0xc0], 1 << 20)
            .unwrap();
        let err = select(host, None, &EraseConfig::default()).unwrap_err();
        let DeviceSelectionError::Protected { devices } = &err else { panic!("{err:?}") };
        assert_eq!(
            devices,
            &[
                ("/dev/sda".to_owned(), "VMFS_volume_member".to_owned()),
                ("/dev/sdb".to_owned(), "ceph_bluestore".to_owned())
            ]
        );
        assert!(err.to_string().contains("/dev/sdb (ceph_bluestore)"), "{err}");
        let allow = json!({"driver_internal_info": {"wipe_special_filesystems": true}});
        assert_eq!(names(&select(host, Some(&allow), &EraseConfig::default()).unwrap()).len(), 3);
        let unguarded = EraseConfig { guard_special_filesystems: false, ..EraseConfig::default() };
        assert_eq!(names(&select(host, None, &unguarded).unwrap()).len(), 3);
    }

    #[test]
    fn invalid_skip_list_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let built = base().build(dir.path()).unwrap();
        let node = json!({"properties": {"skip_block_devices": "sda"}});
        let err = select(&built.host, Some(&node), &EraseConfig::default()).unwrap_err();
        assert!(matches!(err, DeviceSelectionError::SkipList(_)), "{err:?}");
    }

    #[test]
    fn node_flags_accept_oslo_booleans() {
        let cases = [
            (json!(true), Some(true)),
            (json!("yes"), Some(true)),
            (json!("ON"), Some(true)),
            (json!(0), Some(false)),
            (json!("false"), Some(false)),
            (json!("maybe"), None),
            (json!([1]), None),
        ];
        for (v, want) in cases {
            let node = json!({"driver_internal_info": {"k": v}});
            assert_eq!(node_flag(Some(&node), "k"), want, "{v}");
        }
        assert_eq!(node_flag(None, "k"), None);
        assert_eq!(node_flag(Some(&json!({})), "k"), None);
    }
}
