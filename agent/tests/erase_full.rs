//! Full erase on loop devices made here over sparse files, and on regular files: the
//! disk reads back as zeros, the report says how and that it was verified, read-only
//! devices are refused, and verification catches a byte that is not zero. Also the
//! `ferric-agent erase` binary end to end.
//!
//! Tests that need loop devices print "skipped: <reason>" and return when they cannot
//! be created (not root, no /dev/loop-control).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferric_agent::erase::full::{erase_disk, FullEraseError, FullEraseOptions};
use ferric_agent::erase::report::{EraseMethod, Verification};
use ferric_agent::erase::verify::verify_zeros;

const MIB: u64 = 1 << 20;

/// A loop device over a file of ours, detached on drop (also when a test fails).
struct LoopDevice {
    path: PathBuf,
}

impl LoopDevice {
    fn attach(backing: &Path, read_only: bool) -> Option<LoopDevice> {
        if !Path::new("/dev/loop-control").exists() {
            eprintln!("skipped: /dev/loop-control does not exist");
            return None;
        }
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show"]);
        if read_only {
            cmd.arg("--read-only");
        }
        match cmd.arg(backing).output() {
            Ok(out) if out.status.success() => {
                let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                Some(LoopDevice { path: PathBuf::from(path) })
            }
            Ok(out) => {
                eprintln!("skipped: losetup failed: {}", String::from_utf8_lossy(&out.stderr));
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run losetup: {e}");
                None
            }
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("--detach").arg(&self.path).status();
    }
}

/// A file of `size` bytes holding a non-zero pattern everywhere.
fn patterned(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let file = File::create(&path).unwrap();
    let chunk: Vec<u8> = (0..MIB).map(|i| (i % 253) as u8 | 0x80).collect();
    let mut at = 0;
    while at < size {
        let n = MIB.min(size - at) as usize;
        file.write_all_at(&chunk[..n], at).unwrap();
        at += n as u64;
    }
    file.sync_all().unwrap();
    path
}

fn all_zero(path: &Path) -> bool {
    std::fs::read(path).unwrap().iter().all(|b| *b == 0)
}

fn zero_fill() -> FullEraseOptions {
    FullEraseOptions { iterations: 0, ..FullEraseOptions::default() }
}

#[test]
fn zero_fill_of_a_loop_device_is_verified_and_reads_zero() {
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * MIB;
    let backing = patterned(dir.path(), "disk", size);
    let Some(dev) = LoopDevice::attach(&backing, false) else { return };
    let name = dev.path.display().to_string();
    let report = erase_disk(&name, &dev.path, &zero_fill(), &|_, _| {}).unwrap();
    assert_eq!(report.device, name);
    assert_eq!(report.method, EraseMethod::ZeroFill);
    assert_eq!((report.bytes, report.passes), (size, 1));
    match &report.verification {
        // 64 MiB is smaller than 258 samples: the whole disk was read back.
        Verification::Verified { bytes_checked, .. } => assert_eq!(*bytes_checked, size),
        other => panic!("{other:?}"),
    }
    // A loop device has no hardware erase: both were passed over, with the reason.
    assert!(report.fallbacks.iter().any(|f| f.starts_with("ata secure erase: unavailable")));
    assert!(report.fallbacks.iter().any(|f| f.starts_with("secure discard")));
    drop(dev);
    assert!(all_zero(&backing));
}

#[test]
fn default_options_overwrite_then_zero_a_loop_device() {
    let dir = tempfile::tempdir().unwrap();
    let size = 16 * MIB;
    let backing = patterned(dir.path(), "disk", size);
    let Some(dev) = LoopDevice::attach(&backing, false) else { return };
    let options = FullEraseOptions::default();
    let name = dev.path.display().to_string();
    let report = erase_disk(&name, &dev.path, &options, &|_, _| {}).unwrap();
    assert_eq!((report.method, report.passes), (EraseMethod::Overwrite, 2));
    assert!(matches!(report.verification, Verification::Verified { .. }));
    drop(dev);
    assert!(all_zero(&backing));
}

#[test]
fn a_large_loop_device_is_sampled_not_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let size = 1024 * MIB;
    // Sparse except for markers: the erase must zero them.
    let backing = dir.path().join("big");
    let file = File::create(&backing).unwrap();
    file.set_len(size).unwrap();
    for at in [0, size / 3, size - 4096] {
        file.write_all_at(&[0xee; 4096], at).unwrap();
    }
    let Some(dev) = LoopDevice::attach(&backing, false) else { return };
    let name = dev.path.display().to_string();
    let report = erase_disk(&name, &dev.path, &zero_fill(), &|_, _| {}).unwrap();
    match report.verification {
        Verification::Verified { samples, bytes_checked } => {
            assert_eq!(samples, 258);
            assert_eq!(bytes_checked, 258 * MIB);
        }
        other => panic!("{other:?}"),
    }
    drop(dev);
    let file = File::open(&backing).unwrap();
    for at in [0, size / 3, size - 4096] {
        let mut buf = [1u8; 4096];
        file.read_exact_at(&mut buf, at).unwrap();
        assert!(buf.iter().all(|b| *b == 0), "marker at {at} survived");
    }
}

#[test]
fn discard_that_the_device_lacks_falls_back_to_zero_fill() {
    let dir = tempfile::tempdir().unwrap();
    let backing = patterned(dir.path(), "disk", 8 * MIB);
    let Some(dev) = LoopDevice::attach(&backing, false) else { return };
    let options = FullEraseOptions { enable_discard_erase: true, ..zero_fill() };
    let report = erase_disk("loop", &dev.path, &options, &|_, _| {}).unwrap();
    // Loop devices do not implement secure discard.
    assert_eq!(report.method, EraseMethod::ZeroFill, "{report:?}");
    let discard = report.fallbacks.iter().find(|f| f.starts_with("secure discard")).unwrap();
    assert_ne!(discard, "secure discard: not enabled");
    drop(dev);
    assert!(all_zero(&backing));
}

#[test]
fn a_regular_file_is_zero_filled_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let size = 10 * MIB + 512;
    let path = patterned(dir.path(), "disk.img", size);
    let report = erase_disk("disk.img", &path, &zero_fill(), &|_, _| {}).unwrap();
    assert_eq!(report.method, EraseMethod::ZeroFill);
    assert!(matches!(report.verification, Verification::Verified { .. }));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    assert!(all_zero(&path));
}

#[test]
fn a_read_only_loop_device_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let backing = patterned(dir.path(), "disk", 4 * MIB);
    let Some(dev) = LoopDevice::attach(&backing, true) else { return };
    let err = erase_disk("/dev/ro", &dev.path, &zero_fill(), &|_, _| {}).unwrap_err();
    assert!(matches!(err, FullEraseError::ReadOnly { .. }), "{err:?}");
    assert_eq!(err.to_string(), "/dev/ro is read-only");
    drop(dev);
    assert!(std::fs::read(&backing).unwrap().iter().all(|b| *b != 0));
}

#[test]
fn verification_finds_a_byte_written_after_the_erase() {
    let dir = tempfile::tempdir().unwrap();
    let size = 512 * MIB;
    let backing = dir.path().join("disk");
    File::create(&backing).unwrap().set_len(size).unwrap();
    let Some(dev) = LoopDevice::attach(&backing, false) else { return };
    erase_disk("loop", &dev.path, &zero_fill(), &|_, _| {}).unwrap();
    let disk = OpenOptions::new().write(true).open(&dev.path).unwrap();

    // In the last MiB, which is always read.
    let at = size - 12_345;
    disk.write_all_at(&[0x01], at).unwrap();
    disk.sync_all().unwrap();
    match verify_zeros(&dev.path, size, 256, 42).unwrap() {
        Verification::Failed { offset, .. } => assert_eq!(offset, at),
        other => panic!("{other:?}"),
    }
    disk.write_all_at(&[0x00], at).unwrap();
    disk.sync_all().unwrap();
    assert!(matches!(
        verify_zeros(&dev.path, size, 256, 42).unwrap(),
        Verification::Verified { .. }
    ));

    // A stretch of 1/64 of the disk in the middle covers whole sample stretches, so some
    // sample lands in it whatever the seed.
    let start = size / 2;
    let len = size / 64;
    let junk = vec![0x5au8; len as usize];
    disk.write_all_at(&junk, start).unwrap();
    disk.sync_all().unwrap();
    for seed in [1, 2, 3] {
        match verify_zeros(&dev.path, size, 256, seed).unwrap() {
            Verification::Failed { offset, detail } => {
                assert!((start..start + len).contains(&offset), "{offset}");
                assert!(detail.contains("0x5a"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }
}

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferric-agent"))
}

#[test]
fn cli_erases_a_loop_device_and_a_file_with_a_json_report() {
    let dir = tempfile::tempdir().unwrap();
    let file = patterned(dir.path(), "file.img", 3 * MIB);
    let backing = patterned(dir.path(), "disk", 32 * MIB);
    let Some(dev) = LoopDevice::attach(&backing, false) else { return };
    let out =
        agent().args(["erase", "--full", "--json"]).arg(&dev.path).arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (path, size) in [(&dev.path, 32 * MIB), (&file, 3 * MIB)] {
        let r = &report[path.display().to_string()];
        assert_eq!(r["method"], "zero_fill", "{report}");
        assert_eq!(r["bytes"], size);
        assert_eq!(r["verification"]["outcome"], "verified");
    }
    // Not a terminal: plain progress lines.
    assert!(stderr.contains(&format!("erasing {}", dev.path.display())), "{stderr}");
    assert!(!stderr.contains('\r'), "{stderr}");
    drop(dev);
    assert!(all_zero(&backing));
    assert!(all_zero(&file));
}

#[test]
fn cli_table_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let file = patterned(dir.path(), "file.img", MIB);
    let missing = dir.path().join("missing");
    let out = agent().arg("erase").arg(&file).arg(&missing).output().unwrap();
    assert!(!out.status.success(), "one device failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("DEVICE"), "{stdout}");
    assert!(stdout.contains("zero_fill") && stdout.contains("verified"), "{stdout}");
    assert!(stdout.contains("ERROR") && stdout.contains("missing"), "{stdout}");
    assert!(all_zero(&file), "the good device was still erased");

    let out = agent().args(["erase", "--full", "--metadata", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only one of"));
}

#[test]
fn cli_refuses_a_read_only_loop_device() {
    let dir = tempfile::tempdir().unwrap();
    let backing = patterned(dir.path(), "disk", 2 * MIB);
    let Some(dev) = LoopDevice::attach(&backing, true) else { return };
    let out = agent().args(["erase", "--json"]).arg(&dev.path).output().unwrap();
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = report[dev.path.display().to_string()]["error"].as_str().unwrap().to_owned();
    assert!(error.contains("read-only"), "{error}");
}

#[test]
fn cli_metadata_erase_removes_a_filesystem_signature_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fs.img");
    File::create(&file).unwrap().set_len(64 * MIB).unwrap();
    match Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&file).status() {
        Ok(s) if s.success() => {}
        other => {
            eprintln!("skipped: mkfs.ext4 unavailable ({other:?})");
            return;
        }
    }
    let marker_at = 40 * MIB + 7;
    OpenOptions::new().write(true).open(&file).unwrap().write_all_at(b"MARKER", marker_at).unwrap();
    let out = agent().args(["erase", "--metadata", "--json"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[file.display().to_string()]["method"], "metadata", "{report}");
    let probe = Command::new("blkid").arg("-p").arg(&file).output();
    if let Ok(probe) = probe {
        assert!(!probe.status.success(), "{}", String::from_utf8_lossy(&probe.stdout));
    }
    let mut buf = [0u8; 6];
    File::open(&file).unwrap().read_exact_at(&mut buf, marker_at).unwrap();
    assert_eq!(&buf, b"MARKER");
}
