//! QEMU for tests, unpacked from Debian's packages into a directory under `target/` rather
//! than installed: on this machine kind the packaged `qemu-system-x86` (bookworm) cannot
//! be installed beside the newer `qemu-utils` the image tests use (`qemu-utils` breaks
//! `qemu-system-common` older than 8.0). The emulator runs from the unpacked tree with
//! `LD_LIBRARY_PATH` pointing at the unpacked libraries; the firmware (SeaBIOS, iPXE
//! option ROMs, OVMF) comes from the same tree.
//!
//! Always TCG: this machine kind's `/dev/kvm` cannot run a stock kernel.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::debs;

/// The emulator, its firmware and the libraries it links that a base system lacks.
const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "seabios",
    "ipxe-qemu",
    "ovmf",
    "libcapstone4",
    "libfdt1",
    "libpmem1",
    "librdmacm1",
    "libibverbs1",
    "libslirp0",
    "libvdeplug2",
    "libndctl6",
    "libdaxctl1",
    "libnl-3-200",
    "libnl-route-3-200",
];

/// An unpacked QEMU.
#[derive(Debug, Clone)]
pub struct UnpackedQemu {
    root: PathBuf,
    library_path: String,
}

impl UnpackedQemu {
    /// Unpacks QEMU into `dir` (downloading its packages with `apt-get download`), or
    /// reuses what an earlier call unpacked there.
    pub fn prepare(dir: &Path) -> anyhow::Result<UnpackedQemu> {
        let root = dir.join("root");
        let deb_dir = dir.join("debs");
        if !root.join("usr/bin/qemu-system-x86_64").is_file() {
            for package in PACKAGES {
                let deb = debs::fetch(&deb_dir, package)?;
                debs::unpack(&deb, &root)?;
            }
        }
        let mut library_dirs: Vec<String> = Vec::new();
        for dir in ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"] {
            let path = root.join(dir);
            if path.is_dir() {
                library_dirs.push(path.display().to_string());
            }
        }
        let qemu = UnpackedQemu { root, library_path: library_dirs.join(":") };
        let out = Command::new("ldd")
            .arg(qemu.binary())
            .env("LD_LIBRARY_PATH", &qemu.library_path)
            .output()
            .context("running ldd")?;
        let missing: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("not found"))
            .map(|l| l.trim().to_owned())
            .collect();
        if !missing.is_empty() {
            bail!("the unpacked qemu-system-x86_64 lacks libraries: {}", missing.join("; "));
        }
        Ok(qemu)
    }

    pub fn binary(&self) -> PathBuf {
        self.root.join("usr/bin/qemu-system-x86_64")
    }

    /// OVMF's code and a template of its variable store, for UEFI guests.
    pub fn ovmf(&self) -> (PathBuf, PathBuf) {
        let dir = self.root.join("usr/share/OVMF");
        (dir.join("OVMF_CODE_4M.fd"), dir.join("OVMF_VARS_4M.fd"))
    }

    /// `LD_LIBRARY_PATH` for the unpacked emulator.
    pub fn library_path(&self) -> &str {
        &self.library_path
    }

    /// The arguments every lab machine starts with: the unpacked firmware directories,
    /// TCG and no display.
    pub fn base_args(&self) -> Vec<String> {
        vec![
            "-L".to_owned(),
            self.root.join("usr/share/qemu").display().to_string(),
            "-L".to_owned(),
            self.root.join("usr/share/seabios").display().to_string(),
            "-accel".to_owned(),
            "tcg".to_owned(),
            "-display".to_owned(),
            "none".to_owned(),
        ]
    }

    /// A `qemu-system-x86_64` command with [`UnpackedQemu::base_args`] and `-no-reboot`
    /// (a guest reboot ends the process); the caller adds the machine.
    pub fn command(&self) -> Command {
        let mut c = Command::new(self.binary());
        c.env("LD_LIBRARY_PATH", &self.library_path).args(self.base_args()).arg("-no-reboot");
        c
    }
}
