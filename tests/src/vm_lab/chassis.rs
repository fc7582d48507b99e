//! The lab machine's chassis: what `ipmi_sim`'s `chassis_control` hook does.
//!
//! `ipmi_sim` runs the hook (`ferric-lab chassis-control LABDIR MC ...`) for every
//! chassis request and waits for it, so every call returns at once: a power-on starts
//! QEMU detached (`-daemonize`, its own log files) and returns when the emulator runs.
//!
//! | call | effect |
//! | --- | --- |
//! | `get power` | prints `power:1` while this lab's QEMU runs, else `power:0` |
//! | `set power 1` | starts QEMU booting from the stored boot device (no-op if running) |
//! | `set power 0` | QMP `quit` (SIGKILL if QMP does not answer) |
//! | `set reset 1` | power off, then on: the firmware reads the boot device again |
//! | `set shutdown 1` | QMP `system_powerdown` (ACPI power button) |
//! | `set boot X` | stores X (`pxe`, `default`, `cdrom`, `bios`, `none`) |
//! | `get boot` | prints `boot:X` |
//!
//! Every call is appended to `chassis.log` with its time in milliseconds since the Unix
//! epoch, so the lab can time power-ons. Each power-on gets its own serial console file,
//! `console-NN-DEVICE.log`, numbered in boot order.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// How the lab machine is started; written by the lab, read by every hook call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineSpec {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// `LD_LIBRARY_PATH` for it.
    pub library_path: String,
    /// Everything but the boot order, serial console, QMP socket and daemonizing.
    pub args: Vec<String>,
}

pub const MACHINE_FILE: &str = "machine.json";
pub const LOG_FILE: &str = "chassis.log";
const BOOT_FILE: &str = "boot";
const PID_FILE: &str = "qemu.pid";
const QMP_SOCKET: &str = "qmp.sock";
const BOOT_COUNT_FILE: &str = "boot-count";

/// How long a QMP `quit` may take before the emulator is killed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one hook call (the arguments after the MC address) and returns what it prints.
pub fn run(lab: &Path, args: &[&str]) -> anyhow::Result<String> {
    log_call(lab, args)?;
    match args {
        ["get", "power"] => Ok(format!("power:{}\n", u8::from(running(lab).is_some()))),
        ["get", "boot"] => Ok(format!("boot:{}\n", boot_device(lab))),
        ["set", "boot", device] => {
            std::fs::write(lab.join(BOOT_FILE), device).context("storing the boot device")?;
            Ok(String::new())
        }
        ["set", "power", "1"] => power_on(lab).map(|()| String::new()),
        ["set", "power", "0"] => power_off(lab).map(|()| String::new()),
        ["set", "reset", _] => {
            power_off(lab)?;
            power_on(lab).map(|()| String::new())
        }
        ["set", "shutdown", _] => {
            if running(lab).is_some() {
                qmp(lab, "system_powerdown")?;
            }
            Ok(String::new())
        }
        // Requests this chassis has no notion of (identify, ...) change nothing.
        _ => Ok(String::new()),
    }
}

fn log_call(lab: &Path, args: &[&str]) -> anyhow::Result<()> {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(lab.join(LOG_FILE))
        .context("opening the chassis log")?;
    writeln!(log, "{ms} {}", args.join(" ")).context("writing the chassis log")
}

/// One line of `chassis.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChassisCall {
    pub at: SystemTime,
    pub args: Vec<String>,
}

/// Every call logged so far (lines that do not parse are skipped: the log is only ever
/// appended to whole lines, but a reader may see a line being written).
pub fn calls(lab: &Path) -> Vec<ChassisCall> {
    let text = std::fs::read_to_string(lab.join(LOG_FILE)).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let ms: u64 = words.next()?.parse().ok()?;
            Some(ChassisCall {
                at: UNIX_EPOCH + Duration::from_millis(ms),
                args: words.map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// The stored boot device; a chassis never told one boots from disk.
pub fn boot_device(lab: &Path) -> String {
    std::fs::read_to_string(lab.join(BOOT_FILE))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// QEMU's `-boot order` for an IPMI boot device.
fn boot_order(device: &str) -> &'static str {
    match device {
        "pxe" => "n",
        "cdrom" => "d",
        _ => "c",
    }
}

/// The PID of this lab's running QEMU. A PID file alone proves nothing (the emulator may
/// have exited, or its PID been reused): the process must exist, not be a zombie (an
/// exited daemon nobody reaped), and have this lab's directory on its command line.
pub fn running(lab: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(lab.join(PID_FILE)).ok()?.trim().parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let lab_text = lab.display().to_string();
    String::from_utf8_lossy(&cmdline).contains(&lab_text).then_some(pid)
}

fn power_on(lab: &Path) -> anyhow::Result<()> {
    if running(lab).is_some() {
        return Ok(());
    }
    let spec: MachineSpec = serde_json::from_slice(
        &std::fs::read(lab.join(MACHINE_FILE)).context("reading the machine description")?,
    )
    .context("parsing the machine description")?;
    let count_file = lab.join(BOOT_COUNT_FILE);
    let count: u32 =
        std::fs::read_to_string(&count_file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
            + 1;
    std::fs::write(&count_file, count.to_string()).context("counting boots")?;
    let device = boot_device(lab);
    let console = lab.join(format!("console-{count:02}-{device}.log"));
    let qemu_log = lab.join(format!("qemu-{count:02}.log"));
    let _ = std::fs::remove_file(lab.join(PID_FILE));
    let _ = std::fs::remove_file(lab.join(QMP_SOCKET));
    let log = std::fs::File::create(&qemu_log).context("creating the QEMU log")?;
    let status = Command::new(&spec.qemu)
        .env("LD_LIBRARY_PATH", &spec.library_path)
        .args(&spec.args)
        .args(["-boot", &format!("order={}", boot_order(&device))])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", lab.join(QMP_SOCKET).display()))
        .arg("-pidfile")
        .arg(lab.join(PID_FILE))
        .arg("-daemonize")
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the QEMU log")?)
        .stderr(log)
        .status()
        .with_context(|| format!("starting {}", spec.qemu.display()))?;
    if !status.success() {
        let text = std::fs::read_to_string(&qemu_log).unwrap_or_default();
        bail!("QEMU failed to start ({status}): {}", text.trim());
    }
    Ok(())
}

fn power_off(lab: &Path) -> anyhow::Result<()> {
    let Some(pid) = running(lab) else {
        return Ok(());
    };
    // A QMP failure (socket gone, emulator hung) falls through to the kill below.
    let asked = qmp(lab, "quit");
    let deadline = Instant::now() + QUIT_TIMEOUT;
    while Instant::now() < deadline {
        if running(lab).is_none() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let why = match asked {
        Ok(()) => "did not stop".to_owned(),
        Err(e) => format!("failed: {e:#}"),
    };
    log_call(lab, &["note:", "QMP", "quit", &why, "-", "killed", "QEMU"])?;
    kill(pid);
    Ok(())
}

/// SIGKILL to this lab's emulator.
pub fn kill(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) takes no memory; the PID was checked to be this lab's QEMU.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Sends one QMP command (after the capabilities handshake) and waits for its reply.
fn qmp(lab: &Path, command: &str) -> anyhow::Result<()> {
    let stream = UnixStream::connect(lab.join(QMP_SOCKET)).context("connecting to QMP")?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).context("reading the QMP greeting")?;
    for execute in ["qmp_capabilities", command] {
        writeln!(writer, "{{\"execute\": \"{execute}\"}}").context("writing to QMP")?;
        loop {
            line.clear();
            if reader.read_line(&mut line).context("reading QMP")? == 0 {
                // `quit` closes the socket before or instead of answering.
                return Ok(());
            }
            if line.contains("\"return\"") {
                break;
            }
            if line.contains("\"error\"") {
                bail!("QMP {execute}: {}", line.trim());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_devices_map_to_qemu_boot_orders() {
        for (device, order) in
            [("pxe", "n"), ("default", "c"), ("none", "c"), ("cdrom", "d"), ("bios", "c")]
        {
            assert_eq!(boot_order(device), order, "{device}");
        }
    }

    #[test]
    fn boot_device_and_power_state_without_a_machine() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(run(dir.path(), &["get", "boot"]).unwrap(), "boot:default\n");
        run(dir.path(), &["set", "boot", "pxe"]).unwrap();
        assert_eq!(run(dir.path(), &["get", "boot"]).unwrap(), "boot:pxe\n");
        assert_eq!(run(dir.path(), &["get", "power"]).unwrap(), "power:0\n");
        // A stale PID file naming a process that is not this lab's QEMU: still off.
        std::fs::write(dir.path().join(PID_FILE), std::process::id().to_string()).unwrap();
        assert_eq!(run(dir.path(), &["get", "power"]).unwrap(), "power:0\n");
        run(dir.path(), &["set", "power", "0"]).unwrap();
        let logged: Vec<String> = calls(dir.path()).iter().map(|c| c.args.join(" ")).collect();
        assert_eq!(
            logged,
            ["get boot", "set boot pxe", "get boot", "get power", "get power", "set power 0"]
        );
    }

    #[test]
    fn power_on_without_a_machine_description_fails_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let error = run(dir.path(), &["set", "power", "1"]).unwrap_err();
        assert!(format!("{error:#}").contains("machine description"), "{error:#}");
    }
}
