//! The VM lab: one virtual server behind a real BMC, reachable only through loopback.
//!
//! - **BMC**: OpenIPMI's `ipmi_sim` (IPMI 2.0 / RMCP+ on UDP `127.0.0.1:<free port>`). Its
//!   `chassis_control` hook is `ferric-lab chassis-control` ([`chassis`]), which starts
//!   and stops QEMU per power-on, booting from the boot device the BMC was last given.
//! - **Server**: QEMU (always TCG), 512 MiB, one vCPU, SeaBIOS, a sparse raw virtio
//!   disk and a virtio NIC with iPXE in its option ROM.
//! - **Network**: user networking with `restrict=on`: the guest reaches nothing but what
//!   is forwarded. Slirp's DHCP offers `boot.ipxe` over its TFTP server (a copy of the
//!   conductor's chain script); `http://10.0.2.100/` is forwarded (one `socat` per
//!   connection) to the conductor on `127.0.0.1`; the agent's port 9999 is forwarded
//!   from `127.0.0.1:<free port>`, which the agent advertises (`ipa-advertise-host`,
//!   `ipa-advertise-port` on the kernel command line).
//!
//! Every boot's serial console is kept (`console-NN-DEVICE.log`). Dropping the lab stops
//! `ipmi_sim` and the running QEMU by PID.

pub mod chassis;
pub mod cycle;
pub mod stack;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::qemu::UnpackedQemu;

/// The address the guest reaches the conductor at (forwarded to its loopback port).
pub const CONDUCTOR_GUEST_URL: &str = "http://10.0.2.100";
/// The lab machine's NIC.
pub const MAC: &str = "52:54:00:12:34:56";
pub const IPMI_USER: &str = "admin";
pub const IPMI_PASSWORD: &str = "password";
/// The lab machine's memory: the size a deploy ramdisk must work in.
pub const MEMORY_MIB: u32 = 512;

const EMU: &str = "mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
";

/// What the lab needs from its caller.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// The lab's working directory (must exist, and hold no spaces: `ipmi_sim` runs the
    /// hook through a shell).
    pub dir: PathBuf,
    /// The `ferric-lab` binary, run by `ipmi_sim` as the chassis hook.
    pub hook: PathBuf,
    pub qemu: UnpackedQemu,
    /// The conductor's loopback port (API, iPXE scripts and images).
    pub conductor_port: u16,
    /// The chain script served over TFTP (the conductor's `/boot.ipxe`).
    pub boot_script: String,
    /// Size of the server's disk.
    pub disk_bytes: u64,
}

/// A running lab: `ipmi_sim` answering, the server powered off.
#[derive(Debug)]
pub struct VmLab {
    dir: PathBuf,
    ipmi_sim: Child,
    pub ipmi_port: u16,
    pub agent_port: u16,
    pub disk: PathBuf,
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

impl VmLab {
    /// Writes the machine description, the TFTP root and the disk, starts `ipmi_sim` and
    /// waits until it answers `ipmitool`.
    pub fn start(spec: &LabSpec) -> anyhow::Result<VmLab> {
        let dir = spec.dir.clone();
        if dir.display().to_string().contains(char::is_whitespace) {
            bail!("the lab directory {} contains white space", dir.display());
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tftp = dir.join("tftp");
        std::fs::create_dir_all(&tftp).context("creating the TFTP root")?;
        std::fs::write(tftp.join("boot.ipxe"), &spec.boot_script).context("writing boot.ipxe")?;
        let disk = dir.join("disk.raw");
        std::fs::File::create(&disk)
            .and_then(|f| f.set_len(spec.disk_bytes))
            .context("creating the server's disk")?;
        let agent_port = free_tcp_port()?;
        let netdev = format!(
            "user,id=n0,restrict=on,tftp={},bootfile=boot.ipxe,\
             guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:{},\
             hostfwd=tcp:127.0.0.1:{agent_port}-:9999",
            tftp.display(),
            spec.conductor_port
        );
        let mut args = spec.qemu.base_args();
        args.extend(
            [
                "-machine",
                "pc",
                "-m",
                &MEMORY_MIB.to_string(),
                "-smp",
                "1",
                "-netdev",
                &netdev,
                "-device",
                &format!("virtio-net-pci,netdev=n0,mac={MAC}"),
                "-drive",
                &format!("file={},if=virtio,format=raw,cache=unsafe", disk.display()),
                "-name",
                "ferric-lab",
            ]
            .map(str::to_owned),
        );
        let machine = chassis::MachineSpec {
            qemu: spec.qemu.binary(),
            library_path: spec.qemu.library_path().to_owned(),
            args,
        };
        std::fs::write(dir.join(chassis::MACHINE_FILE), serde_json::to_vec_pretty(&machine)?)
            .context("writing the machine description")?;

        let ipmi_port = free_udp_port()?;
        let lan = format!(
            "name \"ferric-lab\"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {ipmi_port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control \"{} chassis-control {} 0x20\"
  user 2 true \"{IPMI_USER}\" \"{IPMI_PASSWORD}\" admin 10 none md2 md5 straight
",
            spec.hook.display(),
            dir.display()
        );
        std::fs::write(dir.join("lan.conf"), lan).context("writing lan.conf")?;
        std::fs::write(dir.join("bmc.emu"), EMU).context("writing bmc.emu")?;
        std::fs::create_dir_all(dir.join("ipmi-state"))?;
        let log = std::fs::File::create(dir.join("ipmi_sim.log"))?;
        let ipmi_sim = Command::new("ipmi_sim")
            .arg("-c")
            .arg(dir.join("lan.conf"))
            .arg("-f")
            .arg(dir.join("bmc.emu"))
            .arg("-s")
            .arg(dir.join("ipmi-state"))
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting ipmi_sim (Debian package openipmi)")?;
        let mut lab = VmLab { dir, ipmi_sim, ipmi_port, agent_port, disk };
        lab.wait_for_bmc()?;
        Ok(lab)
    }

    fn wait_for_bmc(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.ipmi_sim.try_wait()? {
                bail!("ipmi_sim exited with {status}: {}", self.file("ipmi_sim.log"));
            }
            let out = self.ipmitool(&["chassis", "power", "status"])?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "ipmi_sim did not answer ipmitool within 20 s: {}{}",
                    String::from_utf8_lossy(&out.stderr),
                    self.file("ipmi_sim.log")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `ipmitool -I lanplus -C 3` against the lab's BMC.
    pub fn ipmitool(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Command::new("ipmitool")
            .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
            .arg(self.ipmi_port.to_string())
            .args(["-U", IPMI_USER, "-P", IPMI_PASSWORD, "-N", "1", "-R", "2"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running ipmitool (Debian package ipmitool)")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join(name)).unwrap_or_default())
            .into_owned()
    }

    /// The node's `driver_info` for the `ipmi` driver, with the kernel parameters that
    /// make the agent advertise the host side of its port forward.
    pub fn driver_info(&self) -> serde_json::Value {
        serde_json::json!({
            "ipmi_address": "127.0.0.1",
            "ipmi_port": self.ipmi_port,
            "ipmi_username": IPMI_USER,
            "ipmi_password": IPMI_PASSWORD,
            "kernel_append_params": format!(
                "console=ttyS0,115200n8 ipa-advertise-host=127.0.0.1 ipa-advertise-port={}",
                self.agent_port
            ),
        })
    }

    /// Every chassis call so far.
    pub fn chassis_calls(&self) -> Vec<chassis::ChassisCall> {
        chassis::calls(&self.dir)
    }

    /// The serial console files, in boot order.
    pub fn console_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name().is_some_and(|n| {
                            let n = n.to_string_lossy();
                            n.starts_with("console-") && n.ends_with(".log")
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// The console of the latest boot.
    pub fn latest_console(&self) -> String {
        self.console_files()
            .last()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
            .unwrap_or_default()
    }

    /// Everything a failing run needs shown: the chassis log, every boot's console
    /// (the last `tail_lines` lines of each), QEMU's and ipmi_sim's own logs.
    pub fn report(&self, tail_lines: usize) -> String {
        let mut out = String::new();
        out.push_str(&format!("--- chassis calls ({})\n", self.dir.display()));
        out.push_str(&self.file(chassis::LOG_FILE));
        for file in self.console_files() {
            let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap_or_default())
                .replace('\r', "");
            let lines: Vec<&str> = text.lines().collect();
            let name = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
            out.push_str(&format!("--- {name} (last {tail_lines} of {} lines)\n", lines.len()));
            for line in &lines[lines.len().saturating_sub(tail_lines)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        // QEMU's own messages (one file per power-on) and the BMC's, when they said anything.
        let mut logs: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("qemu-") && n.ends_with(".log"))
                    .collect()
            })
            .unwrap_or_default();
        logs.sort();
        logs.push("ipmi_sim.log".to_owned());
        for name in logs {
            let text = self.file(&name);
            if !text.trim().is_empty() {
                out.push_str(&format!("--- {name}\n{text}"));
            }
        }
        out
    }

    /// Stops the server (SIGKILL to this lab's QEMU) and the BMC.
    pub fn stop(&mut self) {
        let _ = self.ipmi_sim.kill();
        let _ = self.ipmi_sim.wait();
        if let Some(pid) = chassis::running(&self.dir) {
            chassis::kill(pid);
        }
    }
}

impl Drop for VmLab {
    fn drop(&mut self) {
        self.stop();
    }
}
