//! Metadata erase against signatures written by the real tools.
//!
//! Disks are sparse files in a temp dir; the filesystems, swap, LVM, LUKS, bcache and ISO
//! images are made by their own tools on partition-sized files and placed at their
//! partition's offset; md superblocks (this kernel has no md driver for `mdadm --create`)
//! and ZFS labels are written here in the layouts blkid recognises. After the erase,
//! `wipefs --no-act` and `blkid -p` must find nothing on the disk and on a fresh loop
//! device over each former partition, and markers in the middle of each partition must
//! survive.
//!
//! Needs root (loop devices) and the tools; without them each test prints
//! `skipped: <reason>` and returns.
//!
//! Benchmark: `cargo test -p ferric-agent --test erase_metadata -- --nocapture
//! metadata_erase_of_eight_disks` prints the time `erase_devices_metadata` takes over eight
//! seeded loop-device disks.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ferric_agent::erase::metadata;
use ferric_agent::erase::run::{erase_devices, erase_devices_metadata, EraseConfig};
use ferric_agent::host::HostRoot;
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Why the environment cannot run these tests, if it cannot.
fn missing(tools: &[&str]) -> Option<String> {
    if !is_root() {
        return Some("needs root for loop devices".to_owned());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control".to_owned());
    }
    tools.iter().find(|t| !have(t)).map(|t| format!("{t} is not installed"))
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A loop device, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &Path, range: Option<(u64, u64)>, read_only: bool) -> Loop {
        let mut cmd = Command::new("losetup");
        cmd.args(["-f", "--show"]);
        if let Some((offset, len)) = range {
            cmd.arg(format!("--offset={offset}")).arg(format!("--sizelimit={len}"));
        }
        if read_only {
            cmd.arg("-r");
        }
        let out = run(cmd.arg(file));
        Loop(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn sparse(path: &Path, len: u64) {
    File::create(path).unwrap().set_len(len).unwrap();
}

/// Copies `image` into `disk` at `offset`, skipping zero blocks so the disk stays sparse.
fn place(disk: &Path, offset: u64, image: &Path) {
    let data = std::fs::read(image).unwrap();
    let f = OpenOptions::new().write(true).open(disk).unwrap();
    for (i, block) in data.chunks(64 * 1024).enumerate() {
        if block.iter().any(|&b| b != 0) {
            f.write_all_at(block, offset + (i as u64) * 64 * 1024).unwrap();
        }
    }
}

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    OpenOptions::new().write(true).open(path).unwrap().write_all_at(data, offset).unwrap();
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    File::open(path).unwrap().read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// An md superblock: 0.90 (`major` 0) or 1.x at `offset` of `image`.
fn md_superblock(image: &Path, offset: u64, major: u32) {
    let mut sb = vec![0u8; 512];
    sb[0..4].copy_from_slice(&0xa92b_4efcu32.to_le_bytes());
    sb[4..8].copy_from_slice(&major.to_le_bytes());
    if major == 0 {
        sb[8..12].copy_from_slice(&90u32.to_le_bytes());
    } else {
        // super_offset (sectors), which blkid checks against where it found the magic.
        sb[144..152].copy_from_slice(&(offset / 512).to_le_bytes());
        sb[16..32].copy_from_slice(&[0x5a; 16]);
    }
    write_at(image, offset, &sb);
}

/// Four ZFS labels, each with a nvlist header and 128 uberblocks (of which blkid needs 4).
fn zfs_labels(image: &Path, len: u64) {
    const LABEL: u64 = 256 * 1024;
    let end = len - len % LABEL;
    for label in [0, LABEL, end - 2 * LABEL, end - LABEL] {
        write_at(image, label + 16 * 1024, &[1, 1, 0, 0, 0, 0, 0, 0]);
        for slot in 0..128u64 {
            let mut ub = vec![0u8; 40];
            ub[0..8].copy_from_slice(&0x00ba_b10cu64.to_le_bytes());
            ub[8..16].copy_from_slice(&5000u64.to_le_bytes());
            ub[16..24].copy_from_slice(&(slot + 1).to_le_bytes());
            write_at(image, label + 128 * 1024 + slot * 1024, &ub);
        }
    }
}

/// A primary volume descriptor (type 1), a Joliet-style supplementary one (type 2) and
/// the set terminator (type 255), from sector 16 of 2 KiB sectors.
fn iso_descriptors(image: &Path) {
    for (i, kind) in [1u8, 2, 255].into_iter().enumerate() {
        let mut d = vec![0u8; 2048];
        d[0] = kind;
        d[1..6].copy_from_slice(b"CD001");
        d[6] = 1;
        if kind != 255 {
            d[40..48].copy_from_slice(b"FERRIC  ");
            // Logical block size 2048, both byte orders.
            d[128..130].copy_from_slice(&2048u16.to_le_bytes());
            d[130..132].copy_from_slice(&2048u16.to_be_bytes());
        }
        write_at(image, 0x8000 + i as u64 * 2048, &d);
    }
}

/// What `wipefs --no-act` and `blkid -p` find on `dev` (empty when nothing).
fn signatures_on(dev: &str) -> String {
    let wipefs = Command::new("wipefs").args(["--no-act", dev]).output().unwrap();
    let blkid = Command::new("blkid").args(["-p", dev]).output().unwrap();
    let mut found = String::from_utf8_lossy(&wipefs.stdout).trim().to_owned();
    // blkid exits 2 when it finds nothing.
    if blkid.status.code() != Some(2) {
        found.push_str(&format!(
            " blkid({:?}): {}{}",
            blkid.status.code(),
            String::from_utf8_lossy(&blkid.stdout).trim(),
            String::from_utf8_lossy(&blkid.stderr).trim()
        ));
    }
    found
}

struct Part {
    what: &'static str,
    start: u64,
    len: u64,
}

fn partition_ranges(disk: &Path) -> Vec<(u64, u64)> {
    let out = run(Command::new("sfdisk").arg("--json").arg(disk));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sector = v["partitiontable"]["sectorsize"].as_u64().unwrap_or(512);
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["start"].as_u64().unwrap() * sector, p["size"].as_u64().unwrap() * sector))
        .collect()
}

const TOOLS: &[&str] = &[
    "sgdisk",
    "sfdisk",
    "wipefs",
    "blkid",
    "losetup",
    "mkfs.ext4",
    "mkfs.xfs",
    "mkfs.btrfs",
    "mkfs.vfat",
    "mkswap",
    "pvcreate",
    "cryptsetup",
    "make-bcache",
    "genisoimage",
];

/// Builds the GPT disk with one signature kind per partition; returns its partitions.
fn seed_gpt_disk(dir: &Path, disk: &Path) -> Vec<Part> {
    let layout: &[(&'static str, u64)] = &[
        ("ext4", 32),
        ("xfs", 320),
        ("btrfs", 128),
        ("vfat32", 64),
        ("vfat16", 32),
        ("vfat12", 8),
        ("swap", 16),
        ("lvm2", 16),
        ("luks1", 16),
        ("luks2", 32),
        ("bcache", 16),
        ("md0.90", 16),
        ("md1.0", 16),
        ("md1.1", 16),
        ("md1.2", 16),
        ("zfs", 80),
        ("iso9660", 16),
    ];
    sparse(disk, 1024 * MIB);
    let mut sgdisk = Command::new("sgdisk");
    for (i, (_, mib)) in layout.iter().enumerate() {
        sgdisk.arg(format!("-n{}:0:+{mib}M", i + 1));
    }
    run(sgdisk.arg(disk));
    let ranges = partition_ranges(disk);
    assert_eq!(ranges.len(), layout.len());
    let mut parts = Vec::new();
    for (&(what, _), &(start, len)) in layout.iter().zip(&ranges) {
        let img = dir.join(format!("{what}.img"));
        sparse(&img, len);
        let i = img.to_str().unwrap();
        let key = |t: &str| {
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!(
                "printf pw | cryptsetup luksFormat --type {t} --pbkdf pbkdf2 \
                 --pbkdf-force-iterations 1000 --batch-mode --key-file - {i}"
            ));
            c
        };
        match what {
            "ext4" => drop(run(Command::new("mkfs.ext4").args(["-q", "-F", i]))),
            "xfs" => drop(run(Command::new("mkfs.xfs").args(["-q", "-f", i]))),
            "btrfs" => drop(run(Command::new("mkfs.btrfs").args(["-q", "-f", i]))),
            "vfat32" => drop(run(Command::new("mkfs.vfat").args(["-F", "32", i]))),
            "vfat16" => drop(run(Command::new("mkfs.vfat").args(["-F", "16", i]))),
            "vfat12" => drop(run(Command::new("mkfs.vfat").args(["-F", "12", i]))),
            "swap" => drop(run(Command::new("mkswap").arg(i))),
            "lvm2" => {
                let l = Loop::attach(&img, None, false);
                run(Command::new("pvcreate")
                    .args(["--config", "devices{use_devicesfile=0 filter=[\"a|.*|\"]}"])
                    .args(["-ff", "-y", &l.0]));
            }
            "luks1" => drop(run(&mut key("luks1"))),
            "luks2" => drop(run(&mut key("luks2"))),
            "bcache" => drop(run(Command::new("make-bcache").args(["-B", i]))),
            "md0.90" => md_superblock(&img, (len & !(64 * 1024 - 1)) - 64 * 1024, 0),
            "md1.0" => md_superblock(&img, (len & !4095) - 8192, 1),
            "md1.1" => md_superblock(&img, 0, 1),
            "md1.2" => md_superblock(&img, 4096, 1),
            "zfs" => zfs_labels(&img, len),
            "iso9660" if have("genisoimage") => {
                let tree = dir.join("iso");
                std::fs::create_dir_all(tree.join("docs")).unwrap();
                std::fs::write(tree.join("docs/readme.txt"), "ferric").unwrap();
                std::fs::write(tree.join("boot.img"), vec![0u8; 2048]).unwrap();
                let iso = dir.join("x.iso");
                run(Command::new("genisoimage")
                    .args(["-quiet", "-J", "-R", "-b", "boot.img", "-no-emul-boot", "-o"])
                    .arg(&iso)
                    .arg(&tree));
                std::fs::copy(&iso, &img).unwrap();
            }
            "iso9660" => {
                println!("genisoimage is not installed: writing the ISO 9660 descriptors here");
                iso_descriptors(&img);
            }
            other => panic!("no seeding for {other}"),
        }
        let found = signatures_on(i);
        assert!(!found.is_empty(), "{what}: blkid/wipefs do not see the seeded signature");
        place(disk, start, &img);
        parts.push(Part { what, start, len });
    }
    parts
}

fn marker(n: usize) -> Vec<u8> {
    format!("FERRIC-MARKER-{n:04}").into_bytes()
}

fn marker_offset(p: &Part) -> u64 {
    p.start + p.len / 2 + 64 * 1024 + 512
}

#[test]
fn every_signature_goes_and_the_data_between_stays() {
    if let Some(why) = missing(TOOLS) {
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("gpt-disk.img");
    let parts = seed_gpt_disk(dir.path(), &disk);
    for (n, p) in parts.iter().enumerate() {
        write_at(&disk, marker_offset(p), &marker(n));
    }
    let middle = 1024 * MIB / 2 + 12345 * 512;
    write_at(&disk, middle, b"FERRIC-DISK-MIDDLE");
    // Each partition's signature is visible through a loop device over its range.
    for p in &parts {
        let l = Loop::attach(&disk, Some((p.start, p.len)), true);
        assert!(!signatures_on(&l.0).is_empty(), "{} not visible before the erase", p.what);
    }

    let outcome = {
        let l = Loop::attach(&disk, None, false);
        metadata::erase_path(Path::new(&l.0)).unwrap()
    };
    let names: Vec<&str> = outcome.removed.iter().map(|s| s.name).collect();
    for want in [
        "ext4",
        "xfs",
        "btrfs",
        "vfat",
        "swap",
        "LVM2_member",
        "crypto_LUKS",
        "bcache",
        "linux_raid_member",
        "zfs_member",
        "iso9660",
        "PMBR",
        "gpt",
    ] {
        assert!(names.contains(&want), "{want} not reported removed: {names:?}");
    }
    // Both LUKS2 headers, all four md layouts, both GPT headers.
    let count = |n: &str| names.iter().filter(|&&x| x == n).count();
    assert!(count("crypto_LUKS") >= 3, "{names:?}");
    assert_eq!(count("linux_raid_member"), 4, "{names:?}");
    assert_eq!(count("gpt"), 2, "{names:?}");
    assert!(outcome.bytes_verified >= outcome.bytes_zeroed && outcome.bytes_zeroed > 0);
    // A metadata erase touches sectors, not the disk.
    assert!(outcome.bytes_zeroed < 4 * MIB, "zeroed {} bytes", outcome.bytes_zeroed);

    let l = Loop::attach(&disk, None, true);
    assert_eq!(signatures_on(&l.0), "", "whole disk");
    drop(l);
    for (n, p) in parts.iter().enumerate() {
        let l = Loop::attach(&disk, Some((p.start, p.len)), true);
        assert_eq!(signatures_on(&l.0), "", "former partition {} ({})", n + 1, p.what);
        assert_eq!(
            read_at(&disk, marker_offset(p), marker(n).len()),
            marker(n),
            "marker in {}",
            p.what
        );
    }
    assert_eq!(read_at(&disk, middle, 18), b"FERRIC-DISK-MIDDLE");
}

#[test]
fn mbr_disk_and_its_partitions_as_a_regular_file() {
    if let Some(why) = missing(&["sfdisk", "wipefs", "blkid", "mkfs.ext4", "mkfs.vfat"]) {
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("mbr.img");
    sparse(&disk, 128 * MIB);
    let mut sfdisk = Command::new("sfdisk");
    sfdisk.arg("--quiet").arg(&disk).stdin(std::process::Stdio::piped());
    let mut child = sfdisk.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"label: dos\n,32M,83\n,32M,c\n").unwrap();
    assert!(child.wait().unwrap().success());
    let ranges = partition_ranges(&disk);
    for (i, (start, len)) in ranges.iter().enumerate() {
        let img = dir.path().join(format!("p{i}.img"));
        sparse(&img, *len);
        let tool = if i == 0 { vec!["mkfs.ext4", "-q", "-F"] } else { vec!["mkfs.vfat"] };
        run(Command::new(tool[0]).args(&tool[1..]).arg(&img));
        place(&disk, *start, &img);
    }
    let tail = 100 * MIB;
    write_at(&disk, tail, b"FERRIC-TAIL");
    // Straight on the file: no loop device, no partition nodes.
    let outcome = metadata::erase_path(&disk).unwrap();
    let names: Vec<&str> = outcome.removed.iter().map(|s| s.name).collect();
    // Partitions from the table, highest number first, then the disk's own table.
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(names[0], "vfat");
    assert!(names[1].starts_with("ext"), "{names:?}");
    assert_eq!(names[2], "dos");
    assert!(!outcome.partition_table_reread, "a regular file has no table to re-read");
    assert_eq!(signatures_on(disk.to_str().unwrap()), "");
    for (start, len) in ranges {
        let l = Loop::attach(&disk, Some((start, len)), true);
        assert_eq!(signatures_on(&l.0), "");
    }
    assert_eq!(read_at(&disk, tail, 11), b"FERRIC-TAIL");
}

/// A host tree whose disks `sda`… are symlinks to loop devices over seeded disk images.
/// Each disk's `ro` attribute is the loop device's own.
fn loop_host(root: &Path, disks: &[(String, &Loop, u64)]) -> HostRoot {
    let host = HostRoot::new(root);
    for (name, l, len) in disks {
        let sys = host.path(format!("/sys/devices/virtual/test/block/{name}"));
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::write(sys.join("size"), format!("{}\n", len / 512)).unwrap();
        let kname = l.0.trim_start_matches("/dev/");
        let ro = std::fs::read_to_string(format!("/sys/block/{kname}/ro")).unwrap();
        std::fs::write(sys.join("ro"), ro).unwrap();
        std::fs::create_dir_all(host.path("/sys/block")).unwrap();
        std::os::unix::fs::symlink(&sys, host.path(format!("/sys/block/{name}"))).unwrap();
        std::fs::create_dir_all(host.path("/dev")).unwrap();
        std::os::unix::fs::symlink(&l.0, host.path(format!("/dev/{name}"))).unwrap();
    }
    host
}

/// Seeds a 256 MiB disk: GPT with ext4, swap and LUKS2 partitions.
fn seed_small(dir: &Path, disk: &Path, n: usize) {
    sparse(disk, 256 * MIB);
    run(Command::new("sgdisk").args(["-n1:0:+64M", "-n2:0:+16M", "-n3:0:+32M"]).arg(disk));
    let ranges = partition_ranges(disk);
    let img = |k: &str, len| {
        let p = dir.join(format!("{n}-{k}.img"));
        sparse(&p, len);
        p
    };
    let ext = img("ext4", ranges[0].1);
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&ext));
    place(disk, ranges[0].0, &ext);
    let swap = img("swap", ranges[1].1);
    run(Command::new("mkswap").arg(&swap));
    place(disk, ranges[1].0, &swap);
    let luks = img("luks", ranges[2].1);
    run(Command::new("sh").arg("-c").arg(format!(
        "printf pw | cryptsetup luksFormat --type luks2 --pbkdf pbkdf2 \
         --pbkdf-force-iterations 1000 --batch-mode --key-file - {}",
        luks.display()
    )));
    place(disk, ranges[2].0, &luks);
}

#[test]
fn metadata_erase_of_eight_disks() {
    if let Some(why) = missing(&["sgdisk", "sfdisk", "mkfs.ext4", "mkswap", "cryptsetup"]) {
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let images: Vec<PathBuf> = (0..8).map(|i| dir.path().join(format!("disk{i}.img"))).collect();
    for (i, img) in images.iter().enumerate() {
        seed_small(dir.path(), img, i);
    }
    let loops: Vec<Loop> = images.iter().map(|p| Loop::attach(p, None, false)).collect();
    let names: Vec<String> = (0..8).map(|i| format!("sd{}", (b'a' + i as u8) as char)).collect();
    let disks: Vec<(String, &Loop, u64)> =
        names.iter().zip(&loops).map(|(n, l)| (n.clone(), l, 256 * MIB)).collect();
    let root = tempfile::tempdir().unwrap();
    let host = loop_host(root.path(), &disks);
    let published = std::sync::Mutex::new(Vec::new());
    let sink = |v: Value| published.lock().unwrap().push(v);
    // The step as the conductor runs it: no node settings, the default concurrency.
    let started = Instant::now();
    let result = erase_devices_metadata(&host, None, &EraseConfig::default(), &sink).unwrap();
    let took = started.elapsed();
    println!("erase_devices_metadata over 8 seeded loop-device disks: {took:?}");
    for name in &names {
        let report = &result[format!("/dev/{name}")];
        assert_eq!(report["method"], "metadata", "{name}: {report}");
        assert_eq!(report["verification"]["outcome"], "verified", "{name}");
        let removed: Vec<&str> = report["signatures_removed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        for want in ["ext4", "swap", "crypto_LUKS", "PMBR", "gpt"] {
            assert!(removed.contains(&want), "{name}: {want} missing from {removed:?}");
        }
    }
    drop(loops);
    for img in &images {
        assert_eq!(signatures_on(img.to_str().unwrap()), "", "{}", img.display());
    }
    let last = published.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last["erasing"]["/dev/sda"]["done"], last["erasing"]["/dev/sda"]["total"]);
}

#[test]
fn read_only_loop_device_fails_or_is_skipped() {
    if let Some(why) = missing(&["losetup"]) {
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (rw_img, ro_img) = (dir.path().join("rw.img"), dir.path().join("ro.img"));
    for img in [&rw_img, &ro_img] {
        sparse(img, 8 * MIB);
        write_at(img, 0, b"XFSB");
    }
    let rw = Loop::attach(&rw_img, None, false);
    let ro = Loop::attach(&ro_img, None, true);
    let root = tempfile::tempdir().unwrap();
    let host = loop_host(
        root.path(),
        &[("sda".to_owned(), &rw, 8 * MIB), ("sdb".to_owned(), &ro, 8 * MIB)],
    );
    let sink = |_: Value| {};
    let err = erase_devices_metadata(&host, None, &EraseConfig::default(), &sink).unwrap_err();
    let text = ferric_agent::erase::devices::error_chain(&err);
    assert!(text.contains("read-only devices cannot be erased: /dev/sdb"), "{text}");
    assert_eq!(read_at(&rw_img, 0, 4), b"XFSB", "nothing is erased when the step fails");

    let node = json!({"driver_internal_info": {"agent_erase_skip_read_only": true}});
    let out = erase_devices_metadata(&host, Some(&node), &EraseConfig::default(), &sink).unwrap();
    assert_eq!(out["/dev/sda"]["signatures_removed"][0]["name"], "xfs");
    assert!(out["skipped_devices"]["/dev/sdb"].as_str().unwrap().starts_with("read-only"));
    drop((rw, ro));
    assert_eq!(read_at(&rw_img, 0, 4), [0u8; 4]);
    assert_eq!(read_at(&ro_img, 0, 4), b"XFSB");
}

#[test]
fn erase_devices_zero_fills_a_loop_device_and_verifies_it() {
    if let Some(why) = missing(&["losetup"]) {
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let len = 64 * MIB;
    std::fs::write(&img, vec![0x5au8; len as usize]).unwrap();
    let l = Loop::attach(&img, None, false);
    let root = tempfile::tempdir().unwrap();
    let host = loop_host(root.path(), &[("sda".to_owned(), &l, len)]);
    let node = json!({"driver_internal_info": {"agent_erase_devices_iterations": 0}});
    let sink = |_: Value| {};
    let out = erase_devices(&host, Some(&node), &EraseConfig::default(), &sink).unwrap();
    let report = &out["/dev/sda"];
    assert_eq!(report["method"], "zero_fill", "{report}");
    assert_eq!(report["verification"]["outcome"], "verified", "{report}");
    assert_eq!(report["bytes"], len);
    drop(l);
    let data = std::fs::read(&img).unwrap();
    assert!(data.iter().all(|&b| b == 0), "a byte survived the zero-fill");
}

#[test]
fn special_filesystems_inside_partitions_are_protected() {
    if let Some(why) = missing(&["sgdisk", "sfdisk"]) {
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ceph, bluestore) = (dir.path().join("ceph.img"), dir.path().join("bluestore.img"));
    for img in [&ceph, &bluestore] {
        sparse(img, 64 * MIB);
        run(Command::new("sgdisk").args(["-n1:0:+16M", "-n2:0:+16M"]).arg(img));
    }
    // A partition typed Ceph OSD, and a BlueStore label inside an untyped partition.
    run(Command::new("sgdisk").args(["-t2:4FBD7E29-9D25-41B8-AFD0-062C0CEFF05D"]).arg(&ceph));
    let p2 = partition_ranges(&bluestore)[1].0;
    write_at(&bluestore, p2, b"bluestore block device\n");
    let (l1, l2) = (Loop::attach(&ceph, None, false), Loop::attach(&bluestore, None, false));
    let root = tempfile::tempdir().unwrap();
    let host = loop_host(
        root.path(),
        &[("sda".to_owned(), &l1, 64 * MIB), ("sdb".to_owned(), &l2, 64 * MIB)],
    );
    let sink = |_: Value| {};
    let err = erase_devices_metadata(&host, None, &EraseConfig::default(), &sink).unwrap_err();
    let text = ferric_agent::erase::devices::error_chain(&err);
    assert!(text.contains("/dev/sda (partition 2 is typed Ceph OSD)"), "{text}");
    assert!(text.contains("/dev/sdb (ceph_bluestore on partition 2)"), "{text}");
    assert_eq!(read_at(&bluestore, p2, 9), b"bluestore");

    let allow = json!({"driver_internal_info": {"wipe_special_filesystems": "true"}});
    let out = erase_devices_metadata(&host, Some(&allow), &EraseConfig::default(), &sink).unwrap();
    assert_eq!(out["/dev/sdb"]["signatures_removed"][0]["name"], "ceph_bluestore");
    drop((l1, l2));
    assert_eq!(read_at(&bluestore, p2, 9), [0u8; 9]);
    assert_eq!(signatures_on(ceph.to_str().unwrap()), "");
}
