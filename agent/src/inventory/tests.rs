//! Whole-inventory tests against generated host trees.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;
use crate::fixtures::{self, DiskSpec, HostBuilder};

fn inventory_json(builder: &HostBuilder) -> (tempfile::TempDir, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let built = builder.build(dir.path()).unwrap();
    let inv = collect(&built.sources()).unwrap();
    (dir, serde_json::to_value(inv).unwrap())
}

#[test]
fn dual_socket_server_inventory_is_exact() {
    let (_dir, got) = inventory_json(&fixtures::dual_socket_server());
    let intel = |name: &str, mac: &str, pci: &str| {
        json!({
            "name": name, "mac_address": mac, "ipv4_address": null, "ipv6_address": null,
            "has_carrier": true, "lldp": null, "vendor": "0x8086", "product": "0x1572",
            "client_id": null, "biosdevname": null, "speed_mbps": 10000,
            "pci_address": pci, "driver": "i40e"
        })
    };
    let mlx = |name: &str, mac: &str, pci: &str| {
        json!({
            "name": name, "mac_address": mac, "ipv4_address": null, "ipv6_address": null,
            "has_carrier": true, "lldp": null, "vendor": "0x15b3", "product": "0x1015",
            "client_id": null, "biosdevname": null, "speed_mbps": 25000,
            "pci_address": pci, "driver": "mlx5_core"
        })
    };
    let mut eno1 = intel("eno1", "3c:fd:fe:a0:00:01", "0000:19:00.0");
    eno1["ipv4_address"] = json!("10.10.0.21");
    eno1["ipv6_address"] = json!("2001:db8:10::21");
    let mut eno2 = intel("eno2", "3c:fd:fe:a0:00:02", "0000:19:00.1");
    eno2["has_carrier"] = json!(false);
    eno2["speed_mbps"] = json!(null);
    // Bond member: reported under its permanent MAC, without the bond's address.
    let ens3f0 = mlx("ens3f0", "b8:59:9f:c0:00:10", "0000:af:00.0");
    let mut ens3f1 = mlx("ens3f1", "b8:59:9f:c0:00:11", "0000:af:00.1");
    ens3f1["ipv6_address"] = json!("fe80::ba59:9fff:fec0:11");
    let pci = |bus: &str, v: &str, p: &str, class: &str, rev: &str| json!({"vendor_id": v, "product_id": p, "class": class, "revision": rev, "bus": bus});
    let expected = json!({
        "interfaces": [eno1, eno2, ens3f0, ens3f1],
        "cpu": {
            "model_name": "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz",
            "frequency": "3900.0000",
            "count": 16,
            "architecture": "x86_64",
            "flags": ["fpu", "vme", "sse2", "avx2", "vmx"],
            "socket_count": 2
        },
        "disks": [
            {
                "name": "/dev/nvme0n1", "model": "SAMSUNG MZQLB960HAJR-00007",
                "size": 960_197_124_096_u64, "rotational": false,
                "wwn": "eui.0025388b91b2c3d4", "serial": "S437NA0M123456", "vendor": null,
                "wwn_with_extension": "eui.0025388b91b2c3d4", "wwn_vendor_extension": null,
                "hctl": null, "by_path": "/dev/disk/by-path/pci-0000:5e:00.0-nvme-1",
                "logical_sectors": 512, "physical_sectors": 512, "tran": "nvme"
            },
            {
                "name": "/dev/sda", "model": "MZ7LH480HAHQ0D3",
                "size": 480_103_981_056_u64, "rotational": false,
                "wwn": "0x5002538e40a1b2c3", "serial": "S45PNA0M654321", "vendor": "ATA",
                "wwn_with_extension": "0x5002538e40a1b2c3", "wwn_vendor_extension": null,
                "hctl": "0:0:0:0", "by_path": "/dev/disk/by-path/pci-0000:00:17.0-ata-1",
                "logical_sectors": 512, "physical_sectors": 4096, "tran": "sata"
            },
            {
                "name": "/dev/sdb", "model": "ST2000NM0045",
                "size": 2_000_398_934_016_u64, "rotational": true,
                "wwn": "0x5000c500a1b2c3d5", "serial": "ZC20ABCD", "vendor": "SEAGATE",
                "wwn_with_extension": "0x5000c500a1b2c3d5", "wwn_vendor_extension": null,
                "hctl": "1:0:0:0",
                "by_path": "/dev/disk/by-path/pci-0000:3b:00.0-sas-0x5000c500a1b2c3d5-lun-0",
                "logical_sectors": 512, "physical_sectors": 4096, "tran": "sas"
            }
        ],
        "memory": {"total": 65_652_008_u64 * 1024, "physical_mb": 65536},
        "bmc_address": "10.20.0.5",
        "bmc_v6address": "2001:db8:20::5",
        "bmc_mac": "0c:c4:7a:00:11:22",
        "system_vendor": {
            "product_name": "ThinkSystem SR650",
            "serial_number": "J30012AB",
            "manufacturer": "Lenovo",
            "firmware": {"vendor": "Lenovo", "version": "IVE164L-3.10", "build_date": "05/12/2023"}
        },
        "boot": {"current_boot_mode": "uefi", "pxe_interface": "01-3c-fd-fe-a0-00-01"},
        "hostname": "ferric-ramdisk",
        "pci_devices": [
            pci("0000:00:00.0", "8086", "2020", "060000", "04"),
            pci("0000:00:17.0", "8086", "a352", "010601", "01"),
            pci("0000:19:00.0", "8086", "1572", "020000", "02"),
            pci("0000:19:00.1", "8086", "1572", "020000", "02"),
            pci("0000:3b:00.0", "1000", "0097", "010700", "01"),
            pci("0000:3d:00.0", "10de", "1eb8", "030200", "a1"),
            pci("0000:5e:00.0", "144d", "a808", "010802", "01"),
            pci("0000:af:00.0", "15b3", "1015", "020000", "01"),
            pci("0000:af:00.1", "15b3", "1015", "020000", "01"),
        ],
        "gpu_count": 1
    });
    assert_eq!(got, expected);
}

#[test]
fn bios_vm_inventory_is_exact() {
    let (_dir, got) = inventory_json(&fixtures::bios_vm());
    let expected = json!({
        "interfaces": [{
            "name": "eth0", "mac_address": "52:54:00:12:34:56",
            "ipv4_address": "10.0.2.15", "ipv6_address": "fe80::5054:ff:fe12:3456",
            "has_carrier": true, "lldp": null, "vendor": "0x1af4", "product": "0x0001",
            "client_id": null, "biosdevname": null, "speed_mbps": null,
            // virtio-net hangs below its PCI function, which is what is reported.
            "pci_address": "0000:00:03.0", "driver": "virtio_net"
        }],
        "cpu": {
            "model_name": "QEMU Virtual CPU version 2.5+",
            "frequency": "2399.9980",
            "count": 2,
            // No /proc/sys/kernel/arch in this tree: the agent's own architecture.
            "architecture": std::env::consts::ARCH,
            "flags": ["fpu", "sse2", "hypervisor"],
            "socket_count": 1
        },
        "disks": [{
            "name": "/dev/vda", "model": null, "size": 10_737_418_240_u64, "rotational": true,
            "wwn": null, "serial": null, "vendor": "0x1af4",
            "wwn_with_extension": null, "wwn_vendor_extension": null, "hctl": null,
            "by_path": "/dev/disk/by-path/pci-0000:00:05.0",
            "logical_sectors": 512, "physical_sectors": 512, "tran": null
        }],
        // 1966.75 MiB usable, no SMBIOS table: rounded up to the 128 MiB granule.
        "memory": {"total": 2_013_952_u64 * 1024, "physical_mb": 2048},
        "bmc_address": null,
        "bmc_v6address": null,
        "system_vendor": {
            "product_name": "Standard PC (i440FX + PIIX, 1996)",
            "serial_number": "",
            "manufacturer": "QEMU",
            "firmware": {
                "vendor": "SeaBIOS", "version": "1.16.3-debian-1.16.3-2", "build_date": "04/01/2014"
            }
        },
        "boot": {"current_boot_mode": "bios", "pxe_interface": null},
        "hostname": "localhost",
        "pci_devices": [
            {"vendor_id": "8086", "product_id": "1237", "class": "060000", "revision": "02",
             "bus": "0000:00:00.0"},
            {"vendor_id": "1af4", "product_id": "1000", "class": "020000", "revision": "01",
             "bus": "0000:00:03.0"},
            {"vendor_id": "1af4", "product_id": "1001", "class": "010000", "revision": "01",
             "bus": "0000:00:05.0"},
        ],
        "gpu_count": 0
    });
    assert_eq!(got, expected);
    assert!(!got.as_object().unwrap().contains_key("bmc_mac"));
}

#[test]
fn virtual_devices_only_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let built = fixtures::dual_socket_server().build(dir.path()).unwrap();
    let mut sources = built.sources();
    let names = |s: &InventorySources| -> Vec<String> {
        collect(s).unwrap().disks.into_iter().map(|d| d.name).collect()
    };
    assert_eq!(names(&sources), vec!["/dev/nvme0n1", "/dev/sda", "/dev/sdb"]);
    sources.include_virtual = true;
    assert_eq!(
        names(&sources),
        vec!["/dev/loop0", "/dev/nvme0n1", "/dev/sda", "/dev/sdb", "/dev/zram0"]
    );
}

#[test]
fn lookup_macs_and_interface_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let built = fixtures::dual_socket_server().build(dir.path()).unwrap();
    let host = &built.host;
    assert_eq!(
        lookup_macs(host),
        vec![
            "02:00:5e:10:00:01", // bond0: virtual, but it has a MAC
            "3c:fd:fe:a0:00:01",
            "3c:fd:fe:a0:00:02",
            "b8:59:9f:c0:00:10",
            "b8:59:9f:c0:00:11",
        ]
    );
    assert_eq!(interface_ipv4(host, "eno1"), Some(Ipv4Addr::new(10, 10, 0, 21)));
    assert_eq!(interface_ipv4(host, "bond0"), Some(Ipv4Addr::new(192, 168, 50, 10)));
    assert_eq!(interface_ipv4(host, "eno2"), None);
    assert_eq!(interface_ipv4(host, "nope"), None);
}

#[test]
fn for_host_without_ipmi_device_reports_no_bmc() {
    let dir = tempfile::tempdir().unwrap();
    let built = fixtures::dual_socket_server().build(dir.path()).unwrap();
    let sources = InventorySources::for_host(built.host.clone(), None);
    assert!(sources.ipmi.is_none());
    let inv = collect(&sources).unwrap();
    assert_eq!((inv.bmc_address, inv.bmc_v6address, inv.bmc_mac), (None, None, None));
}

#[test]
fn builders_compose() {
    let builder = fixtures::bios_vm()
        .add_disk(DiskSpec::virtio("vdb", "0000:00:06.0", 4 << 30).serial("data-1").backing_file())
        .add_disk(DiskSpec::usb("sda", "0000:00:14.0", 8 << 30).model("Flash").vendor("Generic"))
        // A hidden NVMe multipath node: present in /sys/block, never reported.
        .add_disk(DiskSpec::nvme("nvme0c0n1", "0000:00:07.0", 1 << 30))
        .file("/sys/block/nvme0c0n1/hidden", "1\n");
    let dir = tempfile::tempdir().unwrap();
    let built = builder.build(dir.path()).unwrap();
    let inv = collect(&built.sources()).unwrap();
    let summary: Vec<(String, Option<String>, Option<String>, u64)> = inv
        .disks
        .iter()
        .map(|d| (d.name.clone(), d.serial.clone(), d.tran.clone(), d.size))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("/dev/sda".to_owned(), None, Some("usb".to_owned()), 8 << 30),
            ("/dev/vda".to_owned(), None, None, 10 << 30),
            ("/dev/vdb".to_owned(), Some("data-1".to_owned()), None, 4 << 30),
        ]
    );
    assert_eq!(fs::metadata(built.host.path("/dev/vdb")).unwrap().len(), 4 << 30);
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, links: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let ty = entry.file_type().unwrap();
        if ty.is_symlink() {
            links.push(entry.path());
        } else if ty.is_dir() {
            walk(&entry.path(), files, links);
        } else {
            files.push(entry.path());
        }
    }
}

fn garbage(rng: &mut fastrand::Rng) -> Vec<u8> {
    match rng.u8(0..8) {
        0 => Vec::new(),
        1 => b"-1\n".to_vec(),
        2 => b"99999999999999999999999999\n".to_vec(),
        3 => b"0x\n".to_vec(),
        4 => b":::\n|-- \n/32 host LOCAL\n".to_vec(),
        5 => vec![0xff, 0xfe, 0x00, 0x80],
        6 => (0..rng.usize(1..64)).map(|_| rng.u8(..)).collect(),
        _ => {
            let mut v: Vec<u8> = (0..rng.usize(0..600)).map(|_| rng.u8(..)).collect();
            // SMBIOS-looking headers with hostile lengths.
            v.splice(0..0, [17u8, 0x28, 0, 0, 0xff, 0x7f]);
            v
        }
    }
}

#[test]
fn corrupted_trees_never_panic() {
    for seed in 0..24u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let dir = tempfile::tempdir().unwrap();
        let built = fixtures::dual_socket_server().build(dir.path()).unwrap();
        let (mut files, mut links) = (Vec::new(), Vec::new());
        walk(dir.path(), &mut files, &mut links);
        assert!(files.len() > 100, "fixture too small to be a useful fuzz target");
        for f in &files {
            // Even seeds corrupt every file; odd seeds about half of them.
            if seed % 2 == 0 || rng.bool() {
                fs::write(f, garbage(&mut rng)).unwrap();
            }
        }
        for l in &links {
            if rng.u8(0..4) == 0 {
                fs::remove_file(l).unwrap();
                std::os::unix::fs::symlink("../../nowhere/0000:zz:00.0", l).unwrap();
            }
        }
        let mut sources = built.sources();
        sources.include_virtual = seed % 3 == 0;
        // Corrupt content costs fields, never the inventory: only an unreadable
        // /proc/cpuinfo or an unlistable device directory fail, and neither happens here.
        let inv = collect(&sources).unwrap();
        serde_json::to_string(&inv).unwrap();
        let _ = lookup_macs(&built.host);
        let _ = interface_ipv4(&built.host, "eno1");
    }
}

#[test]
fn missing_cpuinfo_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let built = fixtures::bios_vm().build(dir.path()).unwrap();
    fs::remove_file(built.host.path("/proc/cpuinfo")).unwrap();
    let err = collect(&built.sources()).unwrap_err();
    assert!(matches!(&err, InventoryError::Read { path, .. } if path == "/proc/cpuinfo"), "{err}");
}

#[test]
fn character_device_without_ipmi_driver_reports_placeholders() {
    // /dev/null is a character device that rejects every ioctl: the real transport is
    // opened, each request fails, and the BMC counts as present but unconfigured.
    let dir = tempfile::tempdir().unwrap();
    let built = fixtures::bios_vm().build(dir.path()).unwrap();
    fs::create_dir_all(built.host.path("/dev")).unwrap();
    std::os::unix::fs::symlink("/dev/null", built.host.path("/dev/ipmi0")).unwrap();
    let sources = InventorySources::for_host(built.host.clone(), Some("52:54:00:12:34:56".into()));
    assert!(sources.ipmi.is_some());
    let inv = collect(&sources).unwrap();
    assert_eq!(inv.bmc_address.as_deref(), Some("0.0.0.0"));
    assert_eq!(inv.bmc_v6address.as_deref(), Some("::/0"));
    assert_eq!(inv.bmc_mac, None);
    assert_eq!(inv.boot.pxe_interface.as_deref(), Some("52:54:00:12:34:56"));
}
