//! The stamp image built for real from Debian's kernel and busybox-static (fetched with
//! apt into `target/vm-lab/debs`): its partition table, MBR and files, that its qcow2
//! holds the same disk, that a second build gives the same bytes, and that QEMU (TCG,
//! SeaBIOS, virtio disk) boots the qcow2 to the stamp line on the serial console and
//! stays up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferric_tests::qemu::UnpackedQemu;
use ferric_tests::{debs, stamp_image};
use serde_json::Value;
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;
const MBR: &[&str] = &["/usr/lib/syslinux/mbr/mbr.bin", "/usr/lib/SYSLINUX/mbr.bin"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn preconditions() -> Result<PathBuf, String> {
    let tools = [
        ("apt-get", "apt"),
        ("dpkg-deb", "dpkg"),
        ("tar", "tar"),
        ("sfdisk", "fdisk"),
        ("mkfs.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("syslinux", "syslinux"),
        ("qemu-img", "qemu-utils"),
    ];
    for (tool, package) in tools {
        if !have(tool) {
            return Err(format!("`{tool}` is not installed (Debian package {package})"));
        }
    }
    MBR.iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| "no syslinux mbr.bin (Debian package syslinux-common)".into())
}

/// The bzImage of the kernel package `linux-image-amd64` depends on, taken out of its
/// `.deb` alone (the package's modules are not needed).
fn debian_kernel(cache: &Path) -> PathBuf {
    let out = Command::new("apt-cache").args(["depends", "linux-image-amd64"]).output().unwrap();
    let depends = String::from_utf8_lossy(&out.stdout);
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .unwrap_or_else(|| panic!("no kernel package in `apt-cache depends`: {depends}"))
        .to_owned();
    let deb = debs::fetch(cache, &package).unwrap();
    let dir = cache.join("unpacked").join(deb.file_stem().unwrap());
    let kernel = |dir: &Path| {
        std::fs::read_dir(dir.join("boot"))
            .ok()?
            .filter_map(Result::ok)
            .find_map(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-").then(|| e.path()))
    };
    if let Some(found) = kernel(&dir) {
        return found;
    }
    let staging = tempfile::tempdir_in(cache).unwrap();
    let mut tarball = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = Command::new("tar")
        .arg("-C")
        .arg(staging.path())
        .args(["-x", "--wildcards", "./boot/vmlinuz-*"])
        .stdin(tarball.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(status.success() && tarball.wait().unwrap().success(), "extracting {deb:?}");
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    std::fs::rename(staging.path(), &dir).unwrap();
    kernel(&dir).unwrap()
}

fn sha256(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}

fn tool(program: &str, args: &[&str], path: &Path) -> String {
    let out = Command::new(program).args(args).arg(path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{program} {args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// A QEMU process killed and reaped on drop.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_stamp_image_is_a_reproducible_disk_that_boots_to_its_stamp() {
    let mbr = match preconditions() {
        Ok(mbr) => mbr,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let cache = workspace().join("target/vm-lab/debs");
    let kernel = debian_kernel(&cache);
    let busybox = stamp_image::busybox_static(&cache).unwrap();
    let stamp = format!("t-{:016x}", fastrand::u64(..));
    let work = tempfile::tempdir().unwrap();
    let (first, second) = (work.path().join("first"), work.path().join("second"));
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();

    let started = Instant::now();
    let image = stamp_image::build(&first, &kernel, &busybox, &stamp).unwrap();
    println!("built {} MiB in {:.1?}", image.virtual_size / MIB, started.elapsed());

    // Exactly the two outputs: the work files are gone.
    let mut left: Vec<PathBuf> =
        std::fs::read_dir(&first).unwrap().map(|e| e.unwrap().path()).collect();
    left.sort();
    assert_eq!(left, [image.qcow2.clone(), image.raw.clone()]);
    assert_eq!(image.stamp, stamp);

    // Size: the files plus slack, in whole MiB, far below what a real disk image is.
    let payload =
        std::fs::metadata(&kernel).unwrap().len() + std::fs::metadata(&busybox).unwrap().len();
    assert_eq!(std::fs::metadata(&image.raw).unwrap().len(), image.virtual_size);
    assert_eq!(image.virtual_size % MIB, 0);
    assert!(image.virtual_size > payload && image.virtual_size < payload + 16 * MIB);

    // The qcow2: its digest, its virtual size, and the same disk as the raw file.
    assert_eq!(sha256(&image.qcow2), image.qcow2_sha256);
    let info: Value =
        serde_json::from_str(&tool("qemu-img", &["info", "--output=json"], &image.qcow2)).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], image.virtual_size);
    let compare = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(&image.raw)
        .arg(&image.qcow2)
        .output()
        .unwrap();
    assert!(compare.status.success(), "{}", String::from_utf8_lossy(&compare.stdout));
    assert!(String::from_utf8_lossy(&compare.stdout).contains("identical"));

    // One bootable FAT16 (type 6) partition from sector 2048 to the end of the disk.
    let table: Value = serde_json::from_str(&tool("sfdisk", &["--json"], &image.raw)).unwrap();
    let table = &table["partitiontable"];
    assert_eq!(table["label"], "dos");
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 1, "{table}");
    assert_eq!(parts[0]["start"], 2048);
    assert_eq!(parts[0]["size"], image.virtual_size / 512 - 2048);
    assert_eq!(parts[0]["type"], "6");
    assert_eq!(parts[0]["bootable"], true);
    let dump = tool("sfdisk", &["--dump"], &image.raw);
    assert!(dump.contains("start=        2048") && dump.contains("type=6, bootable"), "{dump}");

    // syslinux's MBR code in front of the table; the boot files in the partition.
    let disk = std::fs::read(&image.raw).unwrap();
    let code = std::fs::read(&mbr).unwrap();
    assert_eq!(disk[..code.len()], code[..]);
    assert_eq!(disk[510..512], [0x55, 0xaa]);
    let fat = format!("{}@@1M", image.raw.display());
    let listing = tool("mdir", &["-a", "-b", "-i", &fat], Path::new("::/"));
    let mut files: Vec<&str> = listing.lines().collect();
    files.sort();
    let expected =
        ["::/initrd", "::/ldlinux.c32", "::/ldlinux.sys", "::/syslinux.cfg", "::/vmlinuz"];
    assert_eq!(files, expected, "{listing}");
    let config = tool("mtype", &["-i", &fat], Path::new("::/syslinux.cfg"));
    for line in ["SERIAL 0 115200", "PROMPT 0", "TIMEOUT 0", "APPEND console=ttyS0,115200"] {
        assert!(config.lines().any(|l| l.trim() == line), "{line:?} in {config}");
    }
    let vmlinuz = work.path().join("vmlinuz");
    Command::new("mcopy").args(["-i", &fat, "::/vmlinuz"]).arg(&vmlinuz).status().unwrap();
    assert_eq!(sha256(&vmlinuz), sha256(&kernel));

    // Same inputs and stamp, same bytes.
    let again = stamp_image::build(&second, &kernel, &busybox, &stamp).unwrap();
    assert!(std::fs::read(&again.raw).unwrap() == disk, "the raw images differ");
    assert_eq!(again.qcow2_sha256, image.qcow2_sha256);

    // Boot the qcow2 the way a deployed disk boots: BIOS, disk first, virtio-blk.
    let qemu = match UnpackedQemu::prepare(&workspace().join("target/vm-lab/qemu")) {
        Ok(qemu) => qemu,
        Err(e) => {
            println!("skipped: booting the image: no QEMU ({e:#})");
            return;
        }
    };
    let console = work.path().join("console.log");
    let started = Instant::now();
    let mut vm = Vm(qemu
        .command()
        .args(["-m", "256", "-boot", "order=c", "-drive"])
        .arg(format!("file={},if=virtio,format=qcow2,snapshot=on", image.qcow2.display()))
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.path().join("qemu.stderr")).unwrap())
        .spawn()
        .unwrap());
    let line = stamp_image::stamp_line(&stamp);
    let read =
        || String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).into_owned();
    let seen = loop {
        if read().lines().any(|l| l.trim_end_matches('\r') == line) {
            break started.elapsed();
        }
        if let Some(status) = vm.0.try_wait().unwrap() {
            panic!("QEMU exited ({status}) before the stamp line; console:\n{}", read());
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no stamp line; console:\n{}",
            read()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("QEMU printed the stamp line after {seen:.1?}");
    // It stays up, as an installed system does: no power-off, no panic, no reboot.
    std::thread::sleep(Duration::from_secs(3));
    assert!(vm.0.try_wait().unwrap().is_none(), "the VM stopped; console:\n{}", read());
    assert!(!read().contains("Kernel panic"), "{}", read());
    drop(vm);
    assert_eq!(sha256(&image.qcow2), image.qcow2_sha256, "booting changed the image");
}
