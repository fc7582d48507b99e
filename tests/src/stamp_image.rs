//! A tiny BIOS-bootable whole-disk image that plays an installed operating system: it boots
//! through syslinux into a kernel whose initramfs prints one recognisable line,
//! `ferric-stamp: <stamp>`, on the serial console and then idles. Deploying it and seeing
//! that line proves the disk was written and boots.
//!
//! Built from files with `sfdisk`, `mkfs.vfat --offset`, mtools and `syslinux --offset`,
//! never with loop devices or mounts, and reproducibly: fixed identifiers derived from the
//! stamp, fixed file times, an initramfs whose every member has mtime 0.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;
/// The partition starts at 1 MiB, sector 2048, where partitioning tools align it.
const PARTITION_START: u64 = MIB;
/// Room beyond the files for FAT tables, directories, cluster slack and syslinux.
const SLACK: u64 = 4 * MIB;
/// File times in the FAT filesystem (mtools and syslinux honour `SOURCE_DATE_EPOCH`).
const SOURCE_DATE_EPOCH: &str = "1700000000";
const MBR_CANDIDATES: &[&str] = &["/usr/lib/syslinux/mbr/mbr.bin", "/usr/lib/SYSLINUX/mbr.bin"];

/// busybox from Debian's busybox-static, fetched into `cache` (reused when present).
pub fn busybox_static(cache: &Path) -> anyhow::Result<PathBuf> {
    let deb = crate::debs::fetch(cache, "busybox-static")?;
    let Some(stem) = deb.file_stem() else { bail!("{} has no file name", deb.display()) };
    let root = cache.join("unpacked").join(stem);
    let busybox = root.join("bin/busybox");
    if busybox.is_file() {
        return Ok(busybox);
    }
    let parent = cache.join("unpacked");
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = tempfile::Builder::new().prefix(".unpack-").tempdir_in(&parent)?;
    crate::debs::unpack(&deb, staging.path())?;
    if !staging.path().join("bin/busybox").is_file() {
        bail!("{} holds no bin/busybox", deb.display());
    }
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    std::fs::rename(staging.path(), &root)
        .with_context(|| format!("moving the unpacked busybox-static to {}", root.display()))?;
    Ok(busybox)
}

/// A built image: the raw disk, the same disk as qcow2, and what identifies it.
#[derive(Debug, Clone)]
pub struct StampImage {
    pub raw: PathBuf,
    pub qcow2: PathBuf,
    pub stamp: String,
    /// Lower-case hex SHA-256 of the qcow2 file.
    pub qcow2_sha256: String,
    /// The disk's size in bytes, a whole number of MiB.
    pub virtual_size: u64,
}

/// The console line the image prints.
pub fn stamp_line(stamp: &str) -> String {
    format!("ferric-stamp: {stamp}")
}

fn check_stamp(stamp: &str) -> anyhow::Result<()> {
    let valid = (1..=64).contains(&stamp.len())
        && stamp.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid {
        bail!("stamp {stamp:?} is not 1 to 64 characters of A-Z, a-z, 0-9 and '-'");
    }
    Ok(())
}

/// Builds in `dir` a BIOS-bootable disk image: MBR (syslinux mbr.bin), one bootable
/// FAT16 partition at 1 MiB holding syslinux, `kernel` (a bzImage), an initrd and
/// syslinux.cfg (serial console ttyS0 115200, no prompt, no timeout). The initrd runs
/// `busybox` (static) as `/init`'s shell; `/init` prints [`stamp_line`] and stays up.
/// Writes `stamp-image.raw` and `stamp-image.qcow2`; until both are complete they exist
/// only under temporary names.
pub fn build(dir: &Path, kernel: &Path, busybox: &Path, stamp: &str) -> anyhow::Result<StampImage> {
    check_stamp(stamp)?;
    let raw = dir.join("stamp-image.raw");
    let qcow2 = dir.join("stamp-image.qcow2");
    for stale in [&raw, &qcow2] {
        if stale.exists() {
            std::fs::remove_file(stale).with_context(|| format!("removing {}", stale.display()))?;
        }
    }
    let busybox_bytes =
        std::fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    let kernel_size =
        std::fs::metadata(kernel).with_context(|| format!("reading {}", kernel.display()))?.len();
    let work = tempfile::Builder::new().prefix(".stamp-image-").tempdir_in(dir)?;
    let initrd = initrd(&busybox_bytes, stamp)?;
    std::fs::write(work.path().join("initrd"), &initrd)?;
    std::fs::write(work.path().join("syslinux.cfg"), SYSLINUX_CFG)?;

    let files = kernel_size + initrd.len() as u64 + SYSLINUX_CFG.len() as u64;
    let partition = (files + SLACK).div_ceil(MIB) * MIB;
    let virtual_size = PARTITION_START + partition;
    let raw_tmp = work.path().join("disk.raw");
    std::fs::File::create(&raw_tmp)?.set_len(virtual_size)?;

    // One identifier for the disk and the filesystem, so equal inputs give equal bytes
    // while images with different stamps stay distinguishable; never 0, which an MBR
    // reads as "no disk signature".
    let digest = Sha256::digest(stamp.as_bytes());
    let id = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]).max(1);
    let layout = format!("label: dos\nlabel-id: 0x{id:08x}\nstart=2048, type=6, bootable\n");
    run(Command::new("sfdisk").arg("-q").arg(&raw_tmp), "fdisk", Some(layout.as_bytes()))?;
    run(
        Command::new("mkfs.vfat")
            .args(["-F", "16", "-i", &format!("{id:08x}"), "--invariant", "--offset"])
            .arg((PARTITION_START / 512).to_string())
            .arg(&raw_tmp)
            .arg((partition / 1024).to_string()),
        "dosfstools",
        None,
    )?;
    let image = format!("{}@@{PARTITION_START}", raw_tmp.display());
    let mut mcopy = Command::new("mcopy");
    mcopy.arg("-i").arg(&image).arg(kernel).arg("::/vmlinuz");
    run(reproducible(&mut mcopy), "mtools", None)?;
    let mut mcopy = Command::new("mcopy");
    mcopy.arg("-i").arg(&image).arg(work.path().join("initrd"));
    mcopy.arg(work.path().join("syslinux.cfg")).arg("::/");
    run(reproducible(&mut mcopy), "mtools", None)?;
    let mut syslinux = Command::new("syslinux");
    syslinux.args(["--offset", &PARTITION_START.to_string(), "--install"]).arg(&raw_tmp);
    run(reproducible(&mut syslinux), "syslinux", None)?;
    write_mbr(&raw_tmp)?;

    let qcow2_tmp = work.path().join("disk.qcow2");
    run(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw_tmp)
            .arg(&qcow2_tmp),
        "qemu-utils",
        None,
    )?;
    let qcow2_sha256 = sha256_hex(&qcow2_tmp)?;
    std::fs::rename(&raw_tmp, &raw).with_context(|| format!("creating {}", raw.display()))?;
    if let Err(e) = std::fs::rename(&qcow2_tmp, &qcow2) {
        let _ = std::fs::remove_file(&raw);
        return Err(e).with_context(|| format!("creating {}", qcow2.display()));
    }
    Ok(StampImage { raw, qcow2, stamp: stamp.to_owned(), qcow2_sha256, virtual_size })
}

const SYSLINUX_CFG: &str = "SERIAL 0 115200
PROMPT 0
TIMEOUT 0
DEFAULT stamp
LABEL stamp
  LINUX vmlinuz
  INITRD initrd
  APPEND console=ttyS0,115200
";

fn reproducible(command: &mut Command) -> &mut Command {
    command.env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH).env("TZ", "UTC")
}

/// Runs a build tool; its failure names the tool, what it printed and its Debian package.
fn run(command: &mut Command, package: &str, stdin: Option<&[u8]>) -> anyhow::Result<()> {
    let tool = command.get_program().to_string_lossy().into_owned();
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running `{tool}` (Debian package {package})"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).with_context(|| format!("writing to `{tool}`"))?;
    }
    let out = child.wait_with_output().with_context(|| format!("waiting for `{tool}`"))?;
    if !out.status.success() {
        bail!(
            "`{tool}` failed ({}; Debian package {package}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Puts syslinux's MBR boot code in front of the partition table, leaving the table as is.
fn write_mbr(raw: &Path) -> anyhow::Result<()> {
    let Some(path) = MBR_CANDIDATES.iter().map(Path::new).find(|p| p.is_file()) else {
        bail!(
            "no syslinux mbr.bin at {} (Debian package syslinux-common)",
            MBR_CANDIDATES.join(" or ")
        );
    };
    let code = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if code.len() > 440 {
        bail!("{} is {} bytes, more than the 440 of MBR boot code", path.display(), code.len());
    }
    let mut disk = std::fs::OpenOptions::new().write(true).open(raw)?;
    disk.seek(SeekFrom::Start(0))?;
    disk.write_all(&code).with_context(|| format!("writing the MBR of {}", raw.display()))?;
    Ok(())
}

fn sha256_hex(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `/init`: proc first, so the console log level can drop and no kernel message splits the
/// stamp line; then the line; then idling forever, as an installed system would.
fn init_script(stamp: &str) -> String {
    format!(
        "#!/bin/busybox sh\n\
         /bin/busybox mount -t proc proc /proc\n\
         echo 1 > /proc/sys/kernel/printk\n\
         echo '{}'\n\
         while :; do /bin/busybox sleep 3600; done\n",
        stamp_line(stamp)
    )
}

/// The initramfs: an uncompressed newc cpio archive.
fn initrd(busybox: &[u8], stamp: &str) -> anyhow::Result<Vec<u8>> {
    let init = init_script(stamp);
    let mut archive = Newc::default();
    for dir in ["bin", "dev", "proc", "sys"] {
        archive.member(dir, 0o040_755, 2, (0, 0), &[])?;
    }
    archive.member("dev/console", 0o020_600, 1, (5, 1), &[])?;
    archive.member("bin/busybox", 0o100_755, 1, (0, 0), busybox)?;
    archive.member("init", 0o100_755, 1, (0, 0), init.as_bytes())?;
    archive.finish()
}

/// A writer of the "newc" cpio format the kernel unpacks: a 110-byte ASCII header of
/// 8-digit hex fields, the NUL-terminated name and the data, each padded to 4 bytes.
/// Owner root, mtime 0.
#[derive(Debug, Default)]
struct Newc {
    out: Vec<u8>,
    inode: u32,
}

impl Newc {
    fn member(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        (rdev_major, rdev_minor): (u32, u32),
        data: &[u8],
    ) -> anyhow::Result<()> {
        let Ok(size) = u32::try_from(data.len()) else {
            bail!("{name} is too large for a newc cpio member ({} bytes)", data.len());
        };
        self.inode += 1;
        let name_size = name.len() as u32 + 1;
        let fields =
            [self.inode, mode, 0, 0, nlink, 0, size, 0, 0, rdev_major, rdev_minor, name_size, 0];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> anyhow::Result<Vec<u8>> {
        self.member("TRAILER!!!", 0, 1, (0, 0), &[])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have(tool: &str) -> bool {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    }

    fn cpio(archive: &Path, args: &[&str]) -> Vec<u8> {
        let out = Command::new("cpio")
            .args(args)
            .stdin(std::fs::File::open(archive).unwrap())
            .output()
            .unwrap();
        assert!(out.status.success(), "cpio {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    #[test]
    fn the_initrd_reads_back_with_cpio() {
        if !have("cpio") {
            println!("skipped: `cpio` is not installed (Debian package cpio)");
            return;
        }
        // Five bytes, so the member after it only reads back if the data was padded.
        let busybox = b"\x7fELF!";
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("initrd");
        std::fs::write(&archive, initrd(busybox, "rack-7").unwrap()).unwrap();

        let listing = String::from_utf8(cpio(&archive, &["-itv", "--quiet", "-n"])).unwrap();
        // (mode, owner, group, name): mode as `ls -l` prints it.
        let members: Vec<(String, String, String, String)> = listing
            .lines()
            .map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                (f[0].into(), f[2].into(), f[3].into(), f[f.len() - 1].into())
            })
            .collect();
        let expected = [
            ("drwxr-xr-x", "bin"),
            ("drwxr-xr-x", "dev"),
            ("drwxr-xr-x", "proc"),
            ("drwxr-xr-x", "sys"),
            ("crw-------", "dev/console"),
            ("-rwxr-xr-x", "bin/busybox"),
            ("-rwxr-xr-x", "init"),
        ];
        assert_eq!(members.len(), expected.len(), "{listing}");
        for ((mode, owner, group, name), (want_mode, want_name)) in members.iter().zip(expected) {
            assert_eq!((mode.as_str(), name.as_str()), (want_mode, want_name), "{listing}");
            assert_eq!((owner.as_str(), group.as_str()), ("0", "0"), "{listing}");
        }
        let console = listing.lines().find(|l| l.ends_with(" dev/console")).unwrap();
        let numbers: Vec<&str> = console.split_whitespace().collect();
        assert_eq!(numbers[4..6], ["5,", "1"], "{console}");

        let extracted = cpio(&archive, &["-i", "--quiet", "--to-stdout", "bin/busybox"]);
        assert_eq!(extracted, busybox);
        let init =
            String::from_utf8(cpio(&archive, &["-i", "--quiet", "--to-stdout", "init"])).unwrap();
        assert!(init.starts_with("#!/bin/busybox sh\n"), "{init}");
        assert!(init.lines().any(|l| l == "echo 'ferric-stamp: rack-7'"), "{init}");
        assert!(!init.contains("poweroff") && !init.contains("reboot"), "{init}");
    }

    #[test]
    fn stamps_outside_the_alphabet_or_length_are_refused_before_building() {
        let long = "a".repeat(65);
        for bad in ["", "two words", "x;reboot", "quote'd", "a/b", "a\nb", "ünï", &long] {
            let dir = tempfile::tempdir().unwrap();
            let err = build(dir.path(), Path::new("/no/kernel"), Path::new("/no/busybox"), bad)
                .unwrap_err();
            assert!(err.to_string().contains("stamp"), "{bad:?}: {err}");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{bad:?}");
        }
        for good in ["a", "Z", "0", "node-1-deploy-2", &"x".repeat(64)] {
            assert!(check_stamp(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn a_missing_tool_is_named_with_its_package() {
        let err = run(&mut Command::new("ferric-no-such-tool"), "some-package", None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("ferric-no-such-tool") && text.contains("some-package"), "{text}");
    }

    #[test]
    fn a_failing_tool_is_named_and_leaves_nothing_behind() {
        if !have("sfdisk") || !have("mkfs.vfat") {
            println!("skipped: `sfdisk` or `mkfs.vfat` is not installed (fdisk, dosfstools)");
            return;
        }
        // A sparse 8 GiB "kernel" asks for a partition larger than FAT16 can format.
        let inputs = tempfile::tempdir().unwrap();
        let kernel = inputs.path().join("vmlinuz");
        std::fs::File::create(&kernel).unwrap().set_len(8 << 30).unwrap();
        let busybox = inputs.path().join("busybox");
        std::fs::write(&busybox, b"busybox").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = build(dir.path(), &kernel, &busybox, "too-big").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("`mkfs.vfat` failed") && text.contains("dosfstools"), "{text}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{text}");
    }

    #[test]
    fn the_stamp_line_is_the_documented_text() {
        assert_eq!(stamp_line("abc-1"), "ferric-stamp: abc-1");
    }
}
