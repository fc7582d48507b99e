//! Power and network lockdown of the server the agent runs on.
//!
//! [`PowerControl`] is the narrow seam between commands and irreversible host actions:
//! [`HostPower`] flushes disks with `sync(2)`, restarts or powers off with `reboot(2)`,
//! and takes non-loopback interfaces down with `SIOCSIFFLAGS`; [`FakePower`] records
//! what was asked so tests can check it without touching the machine.

use std::fmt::Debug;
use std::io;

use crate::host::HostRoot;

/// An irreversible action on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerAction {
    SyncDisks,
    Reboot,
    PowerOff,
    Lockdown,
}

impl PowerAction {
    fn describe(self) -> &'static str {
        match self {
            PowerAction::SyncDisks => "sync disks",
            PowerAction::Reboot => "reboot",
            PowerAction::PowerOff => "power off",
            PowerAction::Lockdown => "lock down the network",
        }
    }
}

/// Why a power or lockdown action failed.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error("refusing to {}: the host root is not /", .0.describe())]
    NotRealHost(PowerAction),
    #[error("{} through reboot(2) failed", .action.describe())]
    Reboot {
        action: PowerAction,
        #[source]
        source: io::Error,
    },
    #[error("listing network interfaces")]
    ListInterfaces(#[source] io::Error),
    #[error("bringing network interface {name} down")]
    InterfaceDown {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("{} failed (simulated)", .0.describe())]
    Simulated(PowerAction),
}

/// The host's power and network switches.
pub trait PowerControl: Send + Sync + Debug {
    /// Flushes file-system buffers to the disks (`sync(2)`).
    fn sync_disks(&self);
    /// Restarts the machine. Returns only on failure on a real host.
    fn reboot(&self) -> Result<(), PowerError>;
    /// Powers the machine off. Returns only on failure on a real host.
    fn power_off(&self) -> Result<(), PowerError>;
    /// Takes every non-loopback network interface down, so the node can no longer be
    /// reached or reach anything.
    fn lockdown(&self) -> Result<(), PowerError>;
}

/// The real implementation. It acts only when its [`HostRoot`] is `/`: with a fake tree
/// the kernel calls would hit the machine running the tests.
#[derive(Debug, Clone)]
pub struct HostPower {
    host: HostRoot,
}

impl HostPower {
    pub fn new(host: HostRoot) -> Self {
        Self { host }
    }

    fn reboot_with(&self, action: PowerAction, cmd: libc::c_int) -> Result<(), PowerError> {
        if !self.host.is_real_root() {
            return Err(PowerError::NotRealHost(action));
        }
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        // SAFETY: reboot(2) takes a plain command constant; it either does not return or
        // returns -1 with errno set.
        let rc = unsafe { libc::reboot(cmd) };
        if rc == 0 {
            Ok(())
        } else {
            Err(PowerError::Reboot { action, source: io::Error::last_os_error() })
        }
    }
}

impl PowerControl for HostPower {
    fn sync_disks(&self) {
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
    }

    fn reboot(&self) -> Result<(), PowerError> {
        self.reboot_with(PowerAction::Reboot, libc::LINUX_REBOOT_CMD_RESTART)
    }

    fn power_off(&self) -> Result<(), PowerError> {
        self.reboot_with(PowerAction::PowerOff, libc::LINUX_REBOOT_CMD_POWER_OFF)
    }

    fn lockdown(&self) -> Result<(), PowerError> {
        if !self.host.is_real_root() {
            return Err(PowerError::NotRealHost(PowerAction::Lockdown));
        }
        let names = self.host.list_dir("/sys/class/net").map_err(PowerError::ListInterfaces)?;
        let mut first_error = None;
        for name in names {
            if is_loopback(&self.host, &name) {
                continue;
            }
            match interface_down(&name) {
                Ok(()) => tracing::info!(interface = %name, "interface down"),
                Err(source) => {
                    tracing::error!(interface = %name, error = %source, "interface stays up");
                    first_error.get_or_insert(PowerError::InterfaceDown { name, source });
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// `IFF_LOOPBACK` from `/sys/class/net/<name>/flags` (hex); `lo` by name as a fallback.
fn is_loopback(host: &HostRoot, name: &str) -> bool {
    let flags = host
        .read_attr(format!("/sys/class/net/{name}/flags"))
        .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok());
    match flags {
        Some(flags) => flags & (libc::IFF_LOOPBACK as u32) != 0,
        None => name == "lo",
    }
}

/// Clears `IFF_UP` on one interface through an `AF_INET` datagram socket.
fn interface_down(name: &str) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid interface name"));
    }
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let result = (|| {
        // SAFETY: `fd` is an open socket and `req` a valid, NUL-terminated ifreq.
        if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as libc::Ioctl, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags & !(libc::IFF_UP as libc::c_short);
        // SAFETY: as above.
        if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as libc::Ioctl, &req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })();
    // SAFETY: `fd` is owned here and closed once.
    unsafe { libc::close(fd) };
    result
}

/// Exit status of a simulated machine that was asked to reboot (power-off exits with 0),
/// so whatever plays its BMC can tell the two apart.
pub const PROCESS_REBOOT_EXIT_CODE: i32 = 10;

/// Power control for a simulated machine: an agent run against a fake host tree stands
/// for a whole server, so powering "it" off or rebooting ends this process — never the
/// machine the process runs on. Lockdown has no real interfaces to take down; the API
/// server still stops, which is what the conductor observes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessPower;

impl PowerControl for ProcessPower {
    fn sync_disks(&self) {
        // SAFETY: sync(2) has no preconditions; flushing is harmless on any machine.
        unsafe { libc::sync() };
    }

    fn reboot(&self) -> Result<(), PowerError> {
        tracing::warn!(code = PROCESS_REBOOT_EXIT_CODE, "simulated reboot: exiting");
        std::process::exit(PROCESS_REBOOT_EXIT_CODE)
    }

    fn power_off(&self) -> Result<(), PowerError> {
        tracing::warn!("simulated power off: exiting");
        std::process::exit(0)
    }

    fn lockdown(&self) -> Result<(), PowerError> {
        tracing::warn!("simulated lockdown: the host tree has no interfaces to take down");
        Ok(())
    }
}

/// Records every action instead of performing it. Actions can be made to fail.
#[derive(Debug)]
pub struct FakePower {
    actions: tokio::sync::watch::Sender<Vec<PowerAction>>,
    failing: std::sync::Mutex<Vec<PowerAction>>,
}

impl Default for FakePower {
    fn default() -> Self {
        Self::new()
    }
}

impl FakePower {
    pub fn new() -> Self {
        Self {
            actions: tokio::sync::watch::Sender::new(Vec::new()),
            failing: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Makes `action` fail from now on (it is still recorded).
    pub fn fail(&self, action: PowerAction) {
        self.failing.lock().unwrap_or_else(|e| e.into_inner()).push(action);
    }

    /// Everything asked so far, in order.
    pub fn actions(&self) -> Vec<PowerAction> {
        self.actions.borrow().clone()
    }

    /// Resolves once `action` has been asked for.
    pub async fn recorded(&self, action: PowerAction) {
        let mut rx = self.actions.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|actions| actions.contains(&action)).await;
    }

    fn record(&self, action: PowerAction) -> Result<(), PowerError> {
        self.actions.send_modify(|a| a.push(action));
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        if failing.contains(&action) {
            Err(PowerError::Simulated(action))
        } else {
            Ok(())
        }
    }
}

impl PowerControl for FakePower {
    fn sync_disks(&self) {
        // Sync has no failure mode to simulate.
        let _ = self.record(PowerAction::SyncDisks);
    }

    fn reboot(&self) -> Result<(), PowerError> {
        self.record(PowerAction::Reboot)
    }

    fn power_off(&self) -> Result<(), PowerError> {
        self.record(PowerAction::PowerOff)
    }

    fn lockdown(&self) -> Result<(), PowerError> {
        self.record(PowerAction::Lockdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_power_refuses_a_fake_root() {
        let dir = tempfile::tempdir().unwrap();
        let p = HostPower::new(HostRoot::new(dir.path()));
        for (result, action) in [
            (p.reboot(), PowerAction::Reboot),
            (p.power_off(), PowerAction::PowerOff),
            (p.lockdown(), PowerAction::Lockdown),
        ] {
            match result {
                Err(PowerError::NotRealHost(a)) => assert_eq!(a, action),
                other => panic!("expected NotRealHost, got {other:?}"),
            }
        }
    }

    #[test]
    fn loopback_is_recognised_by_flags_or_name() {
        let dir = tempfile::tempdir().unwrap();
        let h = HostRoot::new(dir.path());
        for (name, flags) in [("lo", Some("0x9")), ("eth0", Some("0x1003")), ("lo2", None)] {
            std::fs::create_dir_all(h.path(format!("/sys/class/net/{name}"))).unwrap();
            if let Some(f) = flags {
                std::fs::write(h.path(format!("/sys/class/net/{name}/flags")), f).unwrap();
            }
        }
        assert!(is_loopback(&h, "lo"));
        assert!(!is_loopback(&h, "eth0"));
        assert!(!is_loopback(&h, "lo2"));
    }

    #[test]
    fn interface_names_are_validated_before_any_ioctl() {
        for bad in ["", "a-name-longer-than-ifnamsiz", "nul\0"] {
            let err = interface_down(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn fake_records_in_order_and_can_fail() {
        let f = FakePower::new();
        f.sync_disks();
        f.fail(PowerAction::Reboot);
        assert!(matches!(f.reboot(), Err(PowerError::Simulated(PowerAction::Reboot))));
        assert!(f.power_off().is_ok());
        f.recorded(PowerAction::PowerOff).await;
        assert_eq!(
            f.actions(),
            vec![PowerAction::SyncDisks, PowerAction::Reboot, PowerAction::PowerOff]
        );
    }
}
