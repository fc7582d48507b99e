//! Checks against the reference tools: tables made by `sgdisk`/`sfdisk`, changed by this
//! module, then judged by `sfdisk --verify`, `sgdisk -v`, `blkid` and `isoinfo`. All disks
//! are sparse files in a temporary directory.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::configdrive::{self, ConfigDriveError, TableKind};
use super::gpt::{self, Gpt, GptError};
use super::mbr::MbrError;
use super::uuids::disk_identifier;
use super::MIB;

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed: {e}"));
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let (ok, text) = run(program, args);
    assert!(ok, "{program} {args:?} failed: {text}");
    text
}

fn sfdisk_script(path: &Path, script: &str) {
    let mut child = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk must be installed");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "sfdisk failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn sparse(path: &Path, len: u64) -> File {
    let f =
        OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).unwrap();
    f.set_len(len).unwrap();
    f
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(path).unwrap()
}

/// Copies an image file onto the start of a larger sparse disk, as a whole-disk image
/// write does. Only the first and last MiB carry table data, so only those are copied.
fn write_image_onto(image: &Path, disk: &Path, disk_len: u64) -> File {
    let img = std::fs::read(image).unwrap();
    let out = sparse(disk, disk_len);
    let m = MIB as usize;
    out.write_all_at(&img[..m], 0).unwrap();
    let tail = img.len() - m;
    out.write_all_at(&img[tail..], tail as u64).unwrap();
    out
}

fn sfdisk_json(path: &Path) -> serde_json::Value {
    let text = run_ok("sfdisk", &["--json", path.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["partitiontable"].clone()
}

fn assert_tables_clean(path: &Path, gpt: bool) {
    let p = path.to_str().unwrap();
    let verify = run_ok("sfdisk", &["--verify", p]);
    assert!(verify.contains("No errors detected"), "sfdisk --verify: {verify}");
    if gpt {
        let v = run_ok("sgdisk", &["-v", p]);
        assert!(v.contains("No problems found"), "sgdisk -v: {v}");
    }
}

/// GPT images of 64 MiB made by each tool.
fn gpt_images(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let a = dir.join("sgdisk.img");
    sparse(&a, 64 * MIB);
    run_ok(
        "sgdisk",
        &[
            "-n",
            "1:2048:+10M",
            "-t",
            "1:ef00",
            "-n",
            "2:0:+20M",
            "-t",
            "2:8300",
            a.to_str().unwrap(),
        ],
    );
    let b = dir.join("sfdisk.img");
    sparse(&b, 64 * MIB);
    sfdisk_script(&b, "label: gpt\n,10MiB,U\n,20MiB,L\n");
    vec![("sgdisk", a), ("sfdisk", b)]
}

#[test]
fn relocated_backup_gpt_verifies_with_sfdisk_and_sgdisk() {
    let dir = tempfile::tempdir().unwrap();
    let disk_len = 1024 * MIB;
    for (maker, image) in gpt_images(dir.path()) {
        let before = sfdisk_json(&image);
        let disk = dir.path().join(format!("{maker}-disk"));
        let file = write_image_onto(&image, &disk, disk_len);
        // The copied table is not valid for the larger disk yet: the test would prove
        // nothing otherwise.
        let (_, v) = run("sgdisk", &["-v", disk.to_str().unwrap()]);
        assert!(!v.contains("No problems found"), "{maker}: {v}");

        assert!(gpt::relocate_backup(&file, disk_len, 512).unwrap(), "{maker}");
        assert_tables_clean(&disk, true);
        let after = sfdisk_json(&disk);
        let last_lba = disk_len / 512 - 1;
        assert_eq!(after["lastlba"], last_lba - 33, "{maker}");
        assert_eq!(after["id"], before["id"], "{maker}");
        let parts = |t: &serde_json::Value| {
            t["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p["start"].clone(), p["size"].clone(), p["uuid"].clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(parts(&after), parts(&before), "{maker}");
        // Done once; the second call finds the backup at the end.
        assert!(!gpt::relocate_backup(&file, disk_len, 512).unwrap(), "{maker}");
    }
}

#[test]
fn mbr_disk_is_left_alone_by_relocation() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("mbr");
    let file = sparse(&disk, 64 * MIB);
    sfdisk_script(&disk, "label: dos\n,10MiB,L\n");
    let before = std::fs::read(&disk).unwrap();
    assert!(!gpt::relocate_backup(&file, 64 * MIB, 512).unwrap());
    assert_eq!(std::fs::read(&disk).unwrap(), before);
}

/// Makes an ISO with genisoimage holding `openstack/latest/meta_data.json`, and returns it
/// as Ironic sends it: base64(gzip(ISO)), made by the gzip and base64 tools.
fn make_config_drive(dir: &Path, name: &str, meta: &str) -> (PathBuf, String) {
    let root = dir.join(format!("{name}-root"));
    std::fs::create_dir_all(root.join("openstack/latest")).unwrap();
    std::fs::write(root.join("openstack/latest/meta_data.json"), meta).unwrap();
    let iso = dir.join(format!("{name}.iso"));
    run_ok(
        "genisoimage",
        &[
            "-quiet",
            "-o",
            iso.to_str().unwrap(),
            "-V",
            "config-2",
            "-r",
            "-J",
            root.to_str().unwrap(),
        ],
    );
    let script = format!("gzip -c '{}' | base64 -w0", iso.display());
    let encoded = run_ok("sh", &["-c", &script]);
    (iso, encoded)
}

/// `blkid` probing the partition's bytes in place must find the config drive.
fn assert_blkid_config_drive(disk: &Path, start: u64) {
    let offset = start.to_string();
    let text = run_ok("blkid", &["-p", "-O", &offset, disk.to_str().unwrap()]);
    assert!(text.contains("LABEL=\"config-2\""), "blkid: {text}");
    assert!(text.contains("TYPE=\"iso9660\""), "blkid: {text}");
}

/// Extracts the partition with plain reads and asks isoinfo for the metadata file.
fn read_meta_data(disk: &Path, dir: &Path, start: u64, len: u64) -> String {
    let file = File::open(disk).unwrap();
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, start).unwrap();
    let part = dir.join("extracted.iso");
    std::fs::write(&part, buf).unwrap();
    run_ok(
        "isoinfo",
        &["-J", "-i", part.to_str().unwrap(), "-x", "/openstack/latest/meta_data.json"],
    )
}

#[test]
fn config_drive_on_gpt_disk_new_then_reused() {
    let dir = tempfile::tempdir().unwrap();
    let disk_len = 1024 * MIB;
    let (_, image) = gpt_images(dir.path()).remove(0);
    let disk = dir.path().join("disk");
    let file = write_image_onto(&image, &disk, disk_len);
    let (iso, encoded) = make_config_drive(dir.path(), "one", r#"{"uuid": "first"}"#);
    let data = configdrive::decode(&encoded).unwrap();
    assert_eq!(data, std::fs::read(&iso).unwrap());

    let part = configdrive::install(&file, disk_len, 512, &data).unwrap();
    assert_eq!((part.table, part.number, part.reused), (TableKind::Gpt, 3, false));
    assert_eq!(part.label, "config-2");
    assert!(!part.reread, "a regular file has no partition table to re-read");
    assert_eq!(part.start % MIB, 0);
    assert_eq!(part.len, (data.len() as u64).div_ceil(MIB) * MIB);
    assert_tables_clean(&disk, true);
    let table = sfdisk_json(&disk);
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[2]["name"], "config-2");
    assert_eq!(parts[2]["start"], part.start / 512);
    assert_eq!(parts[2]["type"], "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    // At the end of the disk: no more than alignment slack after it.
    let end = parts[2]["start"].as_u64().unwrap() + parts[2]["size"].as_u64().unwrap();
    assert!(table["lastlba"].as_u64().unwrap() + 1 - end < MIB / 512);
    assert_blkid_config_drive(&disk, part.start);
    assert_eq!(read_meta_data(&disk, dir.path(), part.start, part.len), r#"{"uuid": "first"}"#);

    // A second config drive overwrites the first partition instead of adding one.
    let (_, encoded) = make_config_drive(dir.path(), "two", r#"{"uuid": "second"}"#);
    let data = configdrive::decode(&encoded).unwrap();
    let again = configdrive::install(&file, disk_len, 512, &data).unwrap();
    assert!(again.reused);
    assert_eq!((again.number, again.start, again.len), (part.number, part.start, part.len));
    assert_eq!(sfdisk_json(&disk)["partitions"].as_array().unwrap().len(), 3);
    assert_tables_clean(&disk, true);
    assert_eq!(read_meta_data(&disk, dir.path(), again.start, again.len), r#"{"uuid": "second"}"#);
}

#[test]
fn config_drive_on_mbr_disk() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let disk_len = 256 * MIB;
    let file = sparse(&disk, disk_len);
    sfdisk_script(&disk, "label: dos\nlabel-id: 0x5eedf00d\n,100MiB,L,*\n");
    let (_, encoded) = make_config_drive(dir.path(), "mbr", r#"{"uuid": "mbr"}"#);
    let data = configdrive::decode(&encoded).unwrap();
    let part = configdrive::install(&file, disk_len, 512, &data).unwrap();
    assert_eq!((part.table, part.number, part.reused), (TableKind::Mbr, 2, false));
    assert_tables_clean(&disk, false);
    let table = sfdisk_json(&disk);
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1]["type"], "83");
    assert_eq!(parts[1]["start"], part.start / 512);
    assert_eq!(parts[1]["size"], part.len / 512);
    // The bootable flag and the first partition survive.
    assert_eq!(parts[0]["bootable"], true);
    assert_eq!(table["id"], "0x5eedf00d");
    assert_blkid_config_drive(&disk, part.start);
    assert_eq!(read_meta_data(&disk, dir.path(), part.start, part.len), r#"{"uuid": "mbr"}"#);
    let again = configdrive::install(&file, disk_len, 512, &data).unwrap();
    assert!(again.reused);
    assert_eq!(again.number, 2);
}

#[test]
fn config_drive_without_room_leaves_the_table_alone() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("full");
    let file = sparse(&disk, 64 * MIB);
    run_ok("sgdisk", &["-n", "1:2048:0", disk.to_str().unwrap()]);
    let before = std::fs::read(&disk).unwrap();
    let (_, encoded) = make_config_drive(dir.path(), "full", "{}");
    let data = configdrive::decode(&encoded).unwrap();
    let err = configdrive::install(&file, 64 * MIB, 512, &data).unwrap_err();
    assert!(matches!(err, ConfigDriveError::Gpt(GptError::NoSpace { .. })), "{err:?}");
    assert_eq!(std::fs::read(&disk).unwrap(), before);
}

#[test]
fn disk_identifier_matches_blkid() {
    let dir = tempfile::tempdir().unwrap();
    let (_, image) = gpt_images(dir.path()).remove(1);
    let ptuuid =
        |p: &Path| run_ok("blkid", &["-p", "-o", "value", "-s", "PTUUID", p.to_str().unwrap()]);
    let id = disk_identifier(&File::open(&image).unwrap()).unwrap().unwrap();
    assert_eq!(id, ptuuid(&image).trim());
    assert_eq!(id.len(), 36);

    let mbr = dir.path().join("mbr");
    sparse(&mbr, 16 * MIB);
    sfdisk_script(&mbr, "label: dos\nlabel-id: 0x0badcafe\n,4MiB,L\n");
    let id = disk_identifier(&File::open(&mbr).unwrap()).unwrap().unwrap();
    assert_eq!(id, format!("0x{}", ptuuid(&mbr).trim()));
    assert_eq!(id, "0x0badcafe");
}

#[test]
fn damaged_tool_made_gpt_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, image) = gpt_images(dir.path()).remove(0);
    let file = open_rw(&image);
    // Flip one byte of the first entry: the entry array CRC no longer matches.
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, 1024 + 40).unwrap();
    file.write_all_at(&[b[0] ^ 0xff], 1024 + 40).unwrap();
    let err = Gpt::read(&file, 64 * MIB, 512).unwrap_err();
    assert!(matches!(err, GptError::EntriesCrc { .. }), "{err:?}");
    assert!(disk_identifier(&file).is_err());
    let (_, encoded) = make_config_drive(dir.path(), "x", "{}");
    let data = configdrive::decode(&encoded).unwrap();
    assert!(configdrive::install(&file, 64 * MIB, 512, &data).is_err());
}

/// `fdisk -b 4096` is the one reference tool here that handles 4096-byte logical blocks
/// in an image file; it prints its warnings on open and `v` verifies the table.
fn fdisk_4k(path: &Path, commands: &str) -> String {
    let mut child = Command::new("fdisk")
        .args(["-b", "4096"])
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("fdisk must be installed");
    child.stdin.take().unwrap().write_all(commands.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn fdisk_4k_details(path: &Path) -> String {
    run_ok("fdisk", &["-b", "4096", "-x", path.to_str().unwrap()])
}

#[test]
fn gpt_with_4096_byte_sectors_relocates_and_takes_a_config_drive() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("4k.img");
    sparse(&image, 64 * MIB);
    fdisk_4k(&image, "g\nn\n\n\n+10M\nw\n");
    let disk_len = 1024 * MIB;
    let disk = dir.path().join("4k-disk");
    let file = write_image_onto(&image, &disk, disk_len);
    let before = fdisk_4k_details(&disk);
    assert!(before.contains("not on the end of the device"), "{before}");

    assert!(gpt::relocate_backup(&file, disk_len, 4096).unwrap());
    let details = fdisk_4k_details(&disk);
    let sectors = disk_len / 4096;
    assert!(!details.contains("mismatch"), "{details}");
    assert!(!details.contains("not on the end"), "{details}");
    // 16 KiB of entries is 4 sectors of 4096 bytes.
    assert!(details.contains(&format!("Last usable LBA: {}", sectors - 6)), "{details}");
    assert!(details.contains(&format!("Alternative LBA: {}", sectors - 1)), "{details}");
    let verify = fdisk_4k(&disk, "v\nq\n");
    assert!(verify.contains("No errors detected"), "{verify}");

    let (_, encoded) = make_config_drive(dir.path(), "4k", r#"{"uuid": "4k"}"#);
    let data = configdrive::decode(&encoded).unwrap();
    let part = configdrive::install(&file, disk_len, 4096, &data).unwrap();
    assert_eq!((part.table, part.number), (TableKind::Gpt, 2));
    let details = fdisk_4k_details(&disk);
    let line = details
        .lines()
        .find(|l| l.contains("config-2"))
        .unwrap_or_else(|| panic!("no config-2 entry: {details}"));
    assert!(line.contains(&(part.start / 4096).to_string()), "{line}");
    let verify = fdisk_4k(&disk, "v\nq\n");
    assert!(verify.contains("No errors detected"), "{verify}");
    assert_blkid_config_drive(&disk, part.start);
    assert_eq!(read_meta_data(&disk, dir.path(), part.start, part.len), r#"{"uuid": "4k"}"#);
}

#[test]
fn config_drive_reuses_a_config_2_partition_the_image_carries() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let disk_len = 128 * MIB;
    let file = sparse(&disk, disk_len);
    // The image's own config-drive partition sits between two others.
    sfdisk_script(&disk, "label: gpt\n,10MiB,L\n,4MiB,L\n,20MiB,L\n");
    let table = sfdisk_json(&disk);
    let middle_start = table["partitions"][1]["start"].as_u64().unwrap() * 512;
    let (old_iso, _) = make_config_drive(dir.path(), "baked", r#"{"uuid": "baked"}"#);
    file.write_all_at(&std::fs::read(&old_iso).unwrap(), middle_start).unwrap();

    let (_, encoded) = make_config_drive(dir.path(), "new", r#"{"uuid": "new"}"#);
    let data = configdrive::decode(encoded.as_bytes()).unwrap();
    let part = configdrive::install(&file, disk_len, 512, &data).unwrap();
    assert!(part.reused);
    assert_eq!((part.number, part.start, part.len), (2, middle_start, 4 * MIB));
    assert_eq!(sfdisk_json(&disk)["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(read_meta_data(&disk, dir.path(), part.start, part.len), r#"{"uuid": "new"}"#);
    assert_tables_clean(&disk, true);
}

#[test]
fn config_drive_on_mbr_disk_with_an_extended_partition() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let disk_len = 128 * MIB;
    let file = sparse(&disk, disk_len);
    let (_, encoded) = make_config_drive(dir.path(), "ext", r#"{"uuid": "ext"}"#);
    let data = configdrive::decode(encoded.as_bytes()).unwrap();

    // Four primary entries in use: no slot for the config drive, nothing written.
    sfdisk_script(&disk, "label: dos\n,10MiB,L\n,40MiB,E\n,5MiB,L\n,5MiB,L\n");
    let before = std::fs::read(&disk).unwrap();
    let err = configdrive::install(&file, disk_len, 512, &data).unwrap_err();
    assert!(matches!(err, ConfigDriveError::Mbr(MbrError::NoFreeEntry)), "{err:?}");
    assert_eq!(std::fs::read(&disk).unwrap(), before);

    // Logical partitions 5 and 6 inside extended partition 2.
    let d = disk.to_str().unwrap();
    sfdisk_script(
        &disk,
        &format!(
            "label: dos\n{d}1 : size=10MiB, type=83\n{d}2 : size=40MiB, type=5\n\
             {d}5 : size=5MiB, type=83\n{d}6 : size=5MiB, type=83\n"
        ),
    );
    let part = configdrive::install(&file, disk_len, 512, &data).unwrap();
    // Slots 1 and 2 are taken by the primary and the extended partition; logical
    // partitions are numbered from 5, so the new primary is 3.
    assert_eq!((part.table, part.number, part.reused), (TableKind::Mbr, 3, false));
    assert_tables_clean(&disk, false);
    let parts = sfdisk_json(&disk)["partitions"].as_array().unwrap().clone();
    assert_eq!(parts.len(), 5, "{parts:?}");
    let node = |p: &serde_json::Value| p["node"].as_str().unwrap().to_owned();
    let config = parts.iter().find(|p| node(p).ends_with("disk3")).unwrap();
    assert_eq!(config["start"], part.start / 512);
    assert_blkid_config_drive(&disk, part.start);
}

#[test]
fn geometry_and_table_reread_on_real_loop_devices() {
    use crate::fixtures::loop_device::LoopDevice;
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("disk");
    sparse(&backing, 64 * MIB);
    sfdisk_script(&backing, "label: gpt\n,8M\n,8M\n");
    for (options, sector, partscan) in
        [(&["--partscan"][..], 512u64, true), (&["--sector-size", "4096"][..], 4096, false)]
    {
        let Some(dev) = LoopDevice::attach(&backing, options) else {
            return;
        };
        let file = open_rw(&dev.path);
        let geometry = super::geometry(&file).unwrap();
        assert_eq!(geometry, super::Geometry { len: 64 * MIB, sector }, "{options:?}");
        // BLKRRPART reaches the kernel on a device that scans partitions; one that does
        // not says so with EINVAL, which is "nothing to re-read", not an error.
        assert_eq!(super::reread_partition_table(&file).unwrap(), partscan, "{options:?}");
    }
    // A regular file has no table to re-read and 512-byte sectors.
    let file = open_rw(&backing);
    assert!(!super::reread_partition_table(&file).unwrap());
    assert_eq!(super::geometry(&file).unwrap().sector, 512);
}
