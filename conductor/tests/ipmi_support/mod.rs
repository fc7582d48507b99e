//! IPMI test peers on `127.0.0.1`: OpenIPMI's `ipmi_sim` with a `chassis_control` hook that
//! records power and boot device in files, `ipmitool` to cross-check, and a pyghmi
//! `Bmc` subclass run from a Python venv under the target directory.
//!
//! Each peer runs in its own temporary directory on a port picked at run time and is
//! killed by PID when dropped. A missing tool makes [`skip_unless`] print
//! `skipped: <reason>` so the test returns visibly instead of passing silently.

#![allow(dead_code)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

pub const USER: &str = "admin";
pub const PASSWORD: &str = "password";

/// Whether `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

/// Prints why the test does nothing and returns false when a tool is missing.
pub fn skip_unless(tools: &[&str]) -> bool {
    for tool in tools {
        if !have(tool) {
            println!("skipped: `{tool}` is not installed (Debian packages openipmi, ipmitool)");
            return false;
        }
    }
    true
}

/// A UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// `driver_info` for a BMC on `port` with the peers' credentials.
pub fn driver_info(port: u16) -> Map<String, Value> {
    let Value::Object(map) = json!({
        "ipmi_address": "127.0.0.1",
        "ipmi_port": port,
        "ipmi_username": USER,
        "ipmi_password": PASSWORD,
    }) else {
        unreachable!()
    };
    map
}

/// A child process killed and reaped on drop.
#[derive(Debug)]
pub struct Peer {
    child: Child,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `probe` until it succeeds or `timeout` passes.
fn wait_until(timeout: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if probe() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

const HOOK: &str = r#"#!/bin/sh
# chassis_control hook: HOOK <mc> get|set <what> [value]; state lives next to this script.
dir="$(dirname "$0")"
[ -f "$dir/power" ] || echo 0 > "$dir/power"
[ -f "$dir/boot" ] || echo default > "$dir/boot"
echo "$*" >> "$dir/hook.log"
case "$2" in
get)
  case "$3" in
    power) echo "power:$(cat "$dir/power")" ;;
    boot) echo "boot:$(cat "$dir/boot")" ;;
  esac ;;
set)
  case "$3" in
    power) echo "$4" > "$dir/power" ;;
    boot) echo "$4" > "$dir/boot" ;;
    shutdown) echo 0 > "$dir/power" ;;
  esac ;;
esac
"#;

const EMU: &str = "mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
";

/// `ipmi_sim` with the recording hook.
#[derive(Debug)]
pub struct IpmiSim {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _process: Peer,
}

impl IpmiSim {
    pub fn start() -> IpmiSim {
        let dir = tempfile::tempdir().unwrap();
        let hook = dir.path().join("hook.sh");
        std::fs::write(&hook, HOOK).unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::write(dir.path().join("bmc.emu"), EMU).unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        let port = free_udp_port();
        let lan = format!(
            "name \"ferric\"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control \"{} 0x20\"
  user 2 true \"{USER}\" \"{PASSWORD}\" admin 10 none md2 md5 straight
",
            hook.display()
        );
        std::fs::write(dir.path().join("lan.conf"), lan).unwrap();
        let log = std::fs::File::create(dir.path().join("ipmi_sim.log")).unwrap();
        let child = Command::new("ipmi_sim")
            .arg("-c")
            .arg(dir.path().join("lan.conf"))
            .arg("-f")
            .arg(dir.path().join("bmc.emu"))
            .arg("-s")
            .arg(dir.path().join("state"))
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let sim = IpmiSim { port, dir, _process: Peer { child } };
        let ready = wait_until(Duration::from_secs(10), || {
            sim.ipmitool(&["chassis", "power", "status"]).status.success()
        });
        assert!(ready, "ipmi_sim did not answer: {}", sim.file("ipmi_sim.log"));
        sim
    }

    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// The power the hook recorded: "0" or "1".
    pub fn recorded_power(&self) -> String {
        self.file("power").trim().to_owned()
    }

    /// The boot device the hook recorded (none, pxe, default, cdrom, bios).
    pub fn recorded_boot(&self) -> String {
        self.file("boot").trim().to_owned()
    }

    pub fn hook_log(&self) -> String {
        self.file("hook.log")
    }

    /// Runs `ipmitool -I lanplus -C 3` against the simulator.
    pub fn ipmitool(&self, args: &[&str]) -> Output {
        ipmitool(self.port, &["-C", "3"], args)
    }

    /// Runs ipmitool and returns its standard output, failing the test if it failed.
    pub fn ipmitool_ok(&self, args: &[&str]) -> String {
        let output = self.ipmitool(args);
        assert!(
            output.status.success(),
            "ipmitool {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// Runs `ipmitool -I lanplus` with the peers' credentials against `port`.
pub fn ipmitool(port: u16, extra: &[&str], args: &[&str]) -> Output {
    let port = port.to_string();
    Command::new("timeout")
        .args(["30", "ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", &port])
        .args(["-U", USER, "-P", PASSWORD, "-N", "1", "-R", "2"])
        .args(extra)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Where the pyghmi venv lives: `$FERRIC_IPMI_VENV`, else `<target>/ipmi-peers-venv`.
pub fn venv_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FERRIC_IPMI_VENV").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    target.join("ipmi-peers-venv")
}

/// The pinned PyPI packages of the venv.
pub const PYGHMI_REQUIREMENT: &str = "pyghmi==1.6.19";

/// The venv's python with pyghmi installed, creating the venv on first use; `None` (after
/// printing why) when Python's venv module or the package index is unavailable.
pub fn pyghmi_python() -> Option<PathBuf> {
    let venv = venv_dir();
    let python = venv.join("bin").join("python3");
    let works = |python: &Path| {
        Command::new(python)
            .args(["-c", "import pyghmi.ipmi.bmc"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.is_file() && works(&python) {
        return Some(python);
    }
    // Serialise creation between test binaries running at once.
    let lock_path = venv.with_extension("lock");
    let _ = std::fs::create_dir_all(venv.parent().unwrap_or(Path::new(".")));
    let created = Command::new("flock")
        .arg(&lock_path)
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "set -e; [ -x '{py}' ] && '{py}' -c 'import pyghmi.ipmi.bmc' 2>/dev/null && exit 0; \
             python3 -m venv '{venv}' && '{py}' -m pip install -q '{req}'",
            py = python.display(),
            venv = venv.display(),
            req = PYGHMI_REQUIREMENT
        ))
        .status();
    if !matches!(created, Ok(s) if s.success()) || !works(&python) {
        println!(
            "skipped: cannot create the pyghmi venv at {} (needs `python3 -m venv` and pip \
             access to {PYGHMI_REQUIREMENT})",
            venv.display()
        );
        return None;
    }
    Some(python)
}

const PYGHMI_BMC: &str = r#"
import json, sys
import pyghmi.ipmi.bmc as bmc

STATE = sys.argv[2]

def load():
    try:
        with open(STATE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"power": "off", "bootdev": "default", "persistent": False}

def save(state):
    with open(STATE + ".tmp", "w") as f:
        json.dump(state, f)
    import os
    os.replace(STATE + ".tmp", STATE)

class Recording(bmc.Bmc):
    def get_power_state(self):
        return load()["power"]

    def power_on(self):
        s = load(); s["power"] = "on"; save(s)

    def power_off(self):
        s = load(); s["power"] = "off"; save(s)

    def power_reset(self):
        s = load(); s["resets"] = s.get("resets", 0) + 1; save(s)

    def power_shutdown(self):
        s = load(); s["power"] = "off"; save(s)

    def get_boot_device(self):
        return load()["bootdev"]

    def set_boot_device(self, bootdevice):
        s = load(); s["bootdev"] = bootdevice; save(s)

Recording({"admin": "password"}, port=int(sys.argv[1]), address="127.0.0.1").listen(1)
"#;

/// A pyghmi BMC that keeps its power and boot device in a JSON file.
#[derive(Debug)]
pub struct PyghmiBmc {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _process: Peer,
}

impl PyghmiBmc {
    pub fn start(python: &Path) -> PyghmiBmc {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bmc.py"), PYGHMI_BMC).unwrap();
        let port = free_udp_port();
        let log = std::fs::File::create(dir.path().join("bmc.log")).unwrap();
        let child = Command::new(python)
            .arg(dir.path().join("bmc.py"))
            .arg(port.to_string())
            .arg(dir.path().join("state.json"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let bmc = PyghmiBmc { port, dir, _process: Peer { child } };
        let ready = wait_until(Duration::from_secs(20), || {
            ipmitool(port, &[], &["chassis", "power", "status"]).status.success()
        });
        assert!(ready, "pyghmi BMC did not answer: {:?}", bmc.state());
        bmc
    }

    pub fn state(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.path().join("state.json")).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}
