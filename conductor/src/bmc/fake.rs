//! The `fake-hardware` driver: an in-memory BMC per node, for tests and for trying the
//! conductor without hardware.
//!
//! The simulated state of each node (power, boot device with its persistent flag, call
//! counters, pending injected failures) lives in the [`FakeDriver`], so it survives
//! `connect()` calls exactly as a real BMC outlives the conductor's connections to it.
//!
//! # `driver_info` keys
//!
//! Keys not starting with `fake_` belong to other interfaces and are ignored; an unknown
//! `fake_` key is rejected by name. Numbers may be JSON numbers or numeric strings (the
//! `baremetal` CLI sends numeric-looking values as numbers).
//!
//! | key | value | effect |
//! | --- | --- | --- |
//! | `fake_power_delay` | seconds (0–3600) | each power transition takes this long (a reboot takes it twice) |
//! | `fake_soft_power_off_delay` | seconds (0–3600) | without a [`PowerHook`], the simulated OS needs this long to shut down after a soft power off |
//! | `fake_fail` | `op=kind[,op=kind…]` | every call of `op` fails with `kind` |
//!
//! `op` is one of `power_state`, `set_power`, `boot_device`, `set_boot_device`,
//! `boot_from_virtual_media`, `eject_virtual_media`, `clean_step` (the out-of-band clean
//! steps, which it runs like a BMC would) or `*` (all of them); `kind` is one of
//! `unreachable`, `auth_failed`, `unsupported`,
//! `timeout`, `protocol` — one per [`BmcError`] variant. Tests inject bounded failures
//! with [`FakeDriver::inject`] instead.
//!
//! # Boot devices
//!
//! A persistent boot device stays; a one-time device applies to the next power on only,
//! after which the BMC reports the persistent device again. [`FakeNodeState::booted_from`]
//! records what the last power on booted, so a hook can tell a PXE boot (start the
//! ramdisk) from a disk boot. The boot mode given with the last boot device change is
//! kept in [`FakeNodeState::boot_mode`].
//!
//! # Virtual media
//!
//! The fake has a virtual CD/DVD: [`Bmc::boot_from_virtual_media`] records the ISO's URL
//! in [`FakeNodeState::virtual_media`] and sets a one-time `cdrom` boot, as a Redfish BMC
//! does; [`Bmc::eject_virtual_media`] empties it.
//!
//! # Power hook
//!
//! A [`PowerHook`] is told of every power transition, after the state changed. For a soft
//! power off the driver asks the hook to shut the "OS" down and waits for its answer; the
//! node powers off only if the OS went down within the timeout, else the call fails with
//! [`BmcError::Timeout`] and the node stays on, as a real server whose OS ignores ACPI.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value};

use super::oob_steps::OobStep;
use super::{
    Bmc, BmcError, BootDevice, BootDeviceSetting, BootMode, Driver, DriverInfoError, PowerAction,
    PowerState,
};

/// The name nodes use in their `driver` field.
pub const FAKE_DRIVER_NAME: &str = "fake-hardware";

/// How long a soft power off waits for the OS when the caller gives no timeout (Ironic's
/// `[conductor]soft_power_off_timeout`).
pub const DEFAULT_SOFT_POWER_OFF_TIMEOUT: Duration = Duration::from_secs(600);

/// The largest delay `driver_info` may ask for, so a typo cannot park an operation for days.
const MAX_DELAY_SECS: f64 = 3600.0;

/// Told of the fake BMC's power transitions; end-to-end tests start and stop a real agent
/// process from here.
#[async_trait::async_trait]
pub trait PowerHook: Send + Sync {
    /// The node's power changed to `state`. Called after the change, never with the
    /// driver's lock held, once per transition (not for "on" when already on).
    fn powered(&self, node: &str, state: PowerState);

    /// A soft power off asks the node's OS to shut down: return `true` once it went down,
    /// or `false` if it did not within `timeout`. The default is an OS that shuts down at
    /// once.
    async fn shutdown_os(&self, node: &str, timeout: Duration) -> bool {
        let _ = (node, timeout);
        true
    }
}

/// A fake BMC operation, the unit of failure injection and call counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    PowerState,
    SetPower,
    BootDevice,
    SetBootDevice,
    BootFromVirtualMedia,
    EjectVirtualMedia,
    /// An out-of-band clean step.
    CleanStep,
}

impl Op {
    pub const ALL: [Op; 7] = [
        Op::PowerState,
        Op::SetPower,
        Op::BootDevice,
        Op::SetBootDevice,
        Op::BootFromVirtualMedia,
        Op::EjectVirtualMedia,
        Op::CleanStep,
    ];

    /// The name used in `fake_fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::PowerState => "power_state",
            Op::SetPower => "set_power",
            Op::BootDevice => "boot_device",
            Op::SetBootDevice => "set_boot_device",
            Op::BootFromVirtualMedia => "boot_from_virtual_media",
            Op::EjectVirtualMedia => "eject_virtual_media",
            Op::CleanStep => "clean_step",
        }
    }

    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

/// Which [`BmcError`] variant an injected failure produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    Unreachable,
    AuthFailed,
    Unsupported,
    Timeout,
    Protocol,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Unreachable,
        FaultKind::AuthFailed,
        FaultKind::Unsupported,
        FaultKind::Timeout,
        FaultKind::Protocol,
    ];

    /// The name used in `fake_fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Unreachable => "unreachable",
            FaultKind::AuthFailed => "auth_failed",
            FaultKind::Unsupported => "unsupported",
            FaultKind::Timeout => "timeout",
            FaultKind::Protocol => "protocol",
        }
    }

    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    fn error(self, address: &str, op: Op, timeout: Duration) -> BmcError {
        let address = address.to_owned();
        match self {
            FaultKind::Unreachable => BmcError::Unreachable {
                address,
                detail: format!("injected failure of {}", op.as_str()),
            },
            FaultKind::AuthFailed => BmcError::AuthFailed { address },
            FaultKind::Unsupported => {
                BmcError::Unsupported { what: format!("{} (injected failure)", op.as_str()) }
            }
            FaultKind::Timeout => {
                BmcError::Timeout { address, operation: op.as_str().to_owned(), timeout }
            }
            FaultKind::Protocol => BmcError::Protocol {
                address,
                detail: format!("injected failure of {}", op.as_str()),
            },
        }
    }
}

/// A snapshot of one node's simulated BMC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeNodeState {
    pub power: PowerState,
    /// The device used on every boot unless a one-time device is pending.
    pub persistent_device: BootDevice,
    /// A one-time device for the next power on.
    pub next_boot: Option<BootDevice>,
    /// What the last power on booted from (`None` before the first power on).
    pub booted_from: Option<BootDevice>,
    /// The boot mode given with the last boot device change that named one.
    pub boot_mode: Option<BootMode>,
    /// The URL of the ISO in the virtual CD/DVD, if one is inserted.
    pub virtual_media: Option<String>,
    /// Calls of each operation, failed ones included.
    pub calls: BTreeMap<Op, u64>,
    /// Times the BIOS was reset to its defaults (out-of-band clean step).
    pub bios_resets: u64,
    /// UEFI secure boot as last set by the out-of-band step (`None`: never set).
    pub secure_boot: Option<bool>,
}

impl FakeNodeState {
    fn new() -> Self {
        FakeNodeState {
            power: PowerState::Off,
            persistent_device: BootDevice::Disk,
            next_boot: None,
            booted_from: None,
            boot_mode: None,
            virtual_media: None,
            calls: BTreeMap::new(),
            bios_resets: 0,
            secure_boot: None,
        }
    }

    /// Calls of `op` so far.
    pub fn calls_of(&self, op: Op) -> u64 {
        self.calls.get(&op).copied().unwrap_or(0)
    }

    /// All calls so far.
    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }
}

#[derive(Debug)]
struct NodeSim {
    state: FakeNodeState,
    /// Pending injected failures: each call of the op consumes one.
    faults: HashMap<Op, (FaultKind, u32)>,
    /// Delays set by [`FakeDriver::set_power_delay`] / `set_soft_power_off_delay`.
    power_delay: Option<Duration>,
    soft_power_off_delay: Option<Duration>,
}

#[derive(Default)]
struct Inner {
    nodes: Mutex<HashMap<String, NodeSim>>,
    hook: Option<Arc<dyn PowerHook>>,
    power_delay: Duration,
    soft_power_off_delay: Duration,
}

impl Inner {
    fn nodes(&self) -> MutexGuard<'_, HashMap<String, NodeSim>> {
        // A panic while holding the lock cannot leave a node half-updated: every update
        // is a single assignment, so the data is still consistent.
        self.nodes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with_node<R>(&self, node: &str, f: impl FnOnce(&mut NodeSim) -> R) -> R {
        let mut nodes = self.nodes();
        let sim = nodes.entry(node.to_owned()).or_insert_with(|| NodeSim {
            state: FakeNodeState::new(),
            faults: HashMap::new(),
            power_delay: None,
            soft_power_off_delay: None,
        });
        f(sim)
    }
}

/// The `fake-hardware` driver. Cheap to share: clone the `Arc` it lives in.
pub struct FakeDriver {
    inner: Arc<Inner>,
}

impl fmt::Debug for FakeDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeDriver")
            .field("nodes", &self.inner.nodes().len())
            .field("hook", &self.inner.hook.is_some())
            .field("power_delay", &self.inner.power_delay)
            .field("soft_power_off_delay", &self.inner.soft_power_off_delay)
            .finish()
    }
}

impl Default for FakeDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeDriver {
    /// A driver without hook and without delays.
    pub fn new() -> Self {
        FakeDriver { inner: Arc::new(Inner::default()) }
    }

    /// A driver built step by step.
    pub fn builder() -> FakeDriverBuilder {
        FakeDriverBuilder::default()
    }

    /// The current simulated state of `node`, if anything ever touched it.
    pub fn node(&self, node: &str) -> Option<FakeNodeState> {
        self.inner.nodes().get(node).map(|sim| sim.state.clone())
    }

    /// Makes the next `count` calls of `op` on `node` fail with `kind`.
    pub fn inject(&self, node: &str, op: Op, kind: FaultKind, count: u32) {
        self.inner.with_node(node, |sim| {
            if count == 0 {
                sim.faults.remove(&op);
            } else {
                sim.faults.insert(op, (kind, count));
            }
        });
    }

    /// Makes every power transition of `node` take `delay`, on current connections too.
    /// `driver_info.fake_power_delay` still wins where set.
    pub fn set_power_delay(&self, node: &str, delay: Duration) {
        self.inner.with_node(node, |sim| sim.power_delay = Some(delay));
    }

    /// How long the simulated OS of `node` takes to shut down on a soft power off (without
    /// a hook). `driver_info.fake_soft_power_off_delay` still wins where set.
    pub fn set_soft_power_off_delay(&self, node: &str, delay: Duration) {
        self.inner.with_node(node, |sim| sim.soft_power_off_delay = Some(delay));
    }

    /// Drops every pending injected failure of `node`.
    pub fn clear_faults(&self, node: &str) {
        self.inner.with_node(node, |sim| sim.faults.clear());
    }

    /// Sets a node's power without going through a BMC call, e.g. a server that was on
    /// before the conductor saw it. The hook is not called.
    pub fn set_initial_power(&self, node: &str, power: PowerState) {
        self.inner.with_node(node, |sim| sim.state.power = power);
    }

    /// The node's OS powered the machine off by itself (e.g. the agent ran
    /// `standby.power_off` and its process exited). The hook sees the transition.
    pub fn os_powered_off(&self, node: &str) {
        let changed = self.inner.with_node(node, |sim| {
            let was_on = sim.state.power == PowerState::On;
            sim.state.power = PowerState::Off;
            was_on
        });
        if changed {
            if let Some(hook) = &self.inner.hook {
                hook.powered(node, PowerState::Off);
            }
        }
    }
}

/// Builds a [`FakeDriver`] with a hook and default delays (which `driver_info` overrides).
#[derive(Default)]
pub struct FakeDriverBuilder {
    hook: Option<Arc<dyn PowerHook>>,
    power_delay: Duration,
    soft_power_off_delay: Duration,
}

impl fmt::Debug for FakeDriverBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeDriverBuilder")
            .field("hook", &self.hook.is_some())
            .field("power_delay", &self.power_delay)
            .field("soft_power_off_delay", &self.soft_power_off_delay)
            .finish()
    }
}

impl FakeDriverBuilder {
    pub fn hook(mut self, hook: Arc<dyn PowerHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    pub fn power_delay(mut self, delay: Duration) -> Self {
        self.power_delay = delay;
        self
    }

    pub fn soft_power_off_delay(mut self, delay: Duration) -> Self {
        self.soft_power_off_delay = delay;
        self
    }

    pub fn build(self) -> FakeDriver {
        FakeDriver {
            inner: Arc::new(Inner {
                nodes: Mutex::new(HashMap::new()),
                hook: self.hook,
                power_delay: self.power_delay,
                soft_power_off_delay: self.soft_power_off_delay,
            }),
        }
    }
}

/// What a node's `driver_info` asks of the fake.
#[derive(Debug, Clone, Default, PartialEq)]
struct FakeSettings {
    power_delay: Option<Duration>,
    soft_power_off_delay: Option<Duration>,
    fail: HashMap<Op, FaultKind>,
}

fn parse_delay(key: &str, value: &Value) -> Result<Duration, DriverInfoError> {
    let secs = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match secs {
        Some(secs) if secs.is_finite() && (0.0..=MAX_DELAY_SECS).contains(&secs) => {
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err(DriverInfoError(format!(
            "{key} must be a number of seconds between 0 and {MAX_DELAY_SECS}, got {value}"
        ))),
    }
}

fn parse_fail(value: &Value) -> Result<HashMap<Op, FaultKind>, DriverInfoError> {
    let Value::String(text) = value else {
        return Err(DriverInfoError(format!(
            "fake_fail must be a string like \"set_power=timeout\", got {value}"
        )));
    };
    let mut fail = HashMap::new();
    for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let Some((op, kind)) = item.split_once('=') else {
            return Err(DriverInfoError(format!(
                "fake_fail entry {item:?} is not of the form op=kind"
            )));
        };
        let (op, kind) = (op.trim(), kind.trim());
        let kind = FaultKind::from_name(kind).ok_or_else(|| {
            DriverInfoError(format!(
                "fake_fail: unknown failure kind {kind:?} (expected one of {})",
                FaultKind::ALL.map(FaultKind::as_str).join(", ")
            ))
        })?;
        if op == "*" {
            for op in Op::ALL {
                fail.insert(op, kind);
            }
        } else {
            let op = Op::from_name(op).ok_or_else(|| {
                DriverInfoError(format!(
                    "fake_fail: unknown operation {op:?} (expected *, {})",
                    Op::ALL.map(Op::as_str).join(", ")
                ))
            })?;
            fail.insert(op, kind);
        }
    }
    Ok(fail)
}

fn parse_settings(driver_info: &Map<String, Value>) -> Result<FakeSettings, DriverInfoError> {
    let mut settings = FakeSettings::default();
    for (key, value) in driver_info {
        match key.as_str() {
            "fake_power_delay" => settings.power_delay = Some(parse_delay(key, value)?),
            "fake_soft_power_off_delay" => {
                settings.soft_power_off_delay = Some(parse_delay(key, value)?)
            }
            "fake_fail" => settings.fail = parse_fail(value)?,
            other if other.starts_with("fake_") => {
                return Err(DriverInfoError(format!(
                    "unknown key {other} (the fake-hardware driver knows fake_power_delay, \
                     fake_soft_power_off_delay, fake_fail)"
                )))
            }
            _ => {}
        }
    }
    Ok(settings)
}

impl Driver for FakeDriver {
    fn name(&self) -> &'static str {
        FAKE_DRIVER_NAME
    }

    fn validate(&self, driver_info: &Map<String, Value>) -> Result<(), DriverInfoError> {
        parse_settings(driver_info).map(|_| ())
    }

    fn supports_virtual_media(&self) -> bool {
        true
    }

    fn connect(
        &self,
        node_uuid: &str,
        driver_info: &Map<String, Value>,
    ) -> Result<Arc<dyn Bmc>, DriverInfoError> {
        let settings = parse_settings(driver_info)?;
        Ok(Arc::new(FakeBmc {
            node: node_uuid.to_owned(),
            address: format!("fake://{node_uuid}"),
            settings,
            inner: Arc::clone(&self.inner),
        }))
    }

    fn clean_steps(&self) -> Vec<ferric_shared::steps::Step> {
        super::oob_steps::offered()
    }
}

/// One connection to a node's fake BMC.
struct FakeBmc {
    node: String,
    address: String,
    /// From `driver_info`; wins over the node's and the driver's delays.
    settings: FakeSettings,
    inner: Arc<Inner>,
}

impl fmt::Debug for FakeBmc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeBmc")
            .field("node", &self.node)
            .field("settings", &self.settings)
            .finish()
    }
}

impl FakeBmc {
    /// Counts the call and returns the failure it must produce, if any. `timeout` is what
    /// an injected timeout reports.
    fn begin(&self, op: Op, timeout: Duration) -> Result<(), BmcError> {
        let injected = self.inner.with_node(&self.node, |sim| {
            *sim.state.calls.entry(op).or_insert(0) += 1;
            let (kind, left) = sim.faults.get(&op).copied()?;
            if left <= 1 {
                sim.faults.remove(&op);
            } else {
                sim.faults.insert(op, (kind, left - 1));
            }
            Some(kind)
        });
        match injected.or_else(|| self.settings.fail.get(&op).copied()) {
            Some(kind) => Err(kind.error(&self.address, op, timeout)),
            None => Ok(()),
        }
    }

    fn power_delay(&self) -> Duration {
        let node = self.inner.with_node(&self.node, |sim| sim.power_delay);
        self.settings.power_delay.or(node).unwrap_or(self.inner.power_delay)
    }

    fn soft_power_off_delay(&self) -> Duration {
        let node = self.inner.with_node(&self.node, |sim| sim.soft_power_off_delay);
        self.settings.soft_power_off_delay.or(node).unwrap_or(self.inner.soft_power_off_delay)
    }

    fn power(&self) -> PowerState {
        self.inner.with_node(&self.node, |sim| sim.state.power)
    }

    /// Moves the node to `target` after the power delay; the hook sees real transitions.
    async fn transition(&self, target: PowerState) {
        if self.power() == target {
            return;
        }
        tokio::time::sleep(self.power_delay()).await;
        let changed = self.inner.with_node(&self.node, |sim| {
            if sim.state.power == target {
                return false;
            }
            sim.state.power = target;
            if target == PowerState::On {
                let device = sim.state.next_boot.take().unwrap_or(sim.state.persistent_device);
                sim.state.booted_from = Some(device);
            }
            true
        });
        if changed {
            tracing::debug!(node = %self.node, power = ?target, "fake BMC power transition");
            if let Some(hook) = &self.inner.hook {
                hook.powered(&self.node, target);
            }
        }
    }

    /// Asks the OS to shut down and powers off once it did; `Timeout` if it did not in time.
    async fn soft_off(&self, timeout: Duration) -> Result<(), BmcError> {
        if self.power() == PowerState::Off {
            return Ok(());
        }
        let os_delay = self.soft_power_off_delay();
        let went_down = match &self.inner.hook {
            Some(hook) => hook.shutdown_os(&self.node, timeout).await,
            None if os_delay <= timeout => {
                tokio::time::sleep(os_delay).await;
                true
            }
            None => {
                tokio::time::sleep(timeout).await;
                false
            }
        };
        if !went_down {
            return Err(BmcError::Timeout {
                address: self.address.clone(),
                operation: "soft power off".to_owned(),
                timeout,
            });
        }
        self.transition(PowerState::Off).await;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Bmc for FakeBmc {
    async fn power_state(&self) -> Result<PowerState, BmcError> {
        self.begin(Op::PowerState, Duration::ZERO)?;
        Ok(self.power())
    }

    async fn set_power(
        &self,
        action: PowerAction,
        timeout: Option<Duration>,
    ) -> Result<(), BmcError> {
        let timeout = timeout.unwrap_or(DEFAULT_SOFT_POWER_OFF_TIMEOUT);
        self.begin(Op::SetPower, timeout)?;
        match action {
            PowerAction::On => self.transition(PowerState::On).await,
            PowerAction::Off => self.transition(PowerState::Off).await,
            PowerAction::Reboot => {
                self.transition(PowerState::Off).await;
                self.transition(PowerState::On).await;
            }
            PowerAction::SoftOff => self.soft_off(timeout).await?,
            PowerAction::SoftReboot => {
                self.soft_off(timeout).await?;
                self.transition(PowerState::On).await;
            }
        }
        Ok(())
    }

    async fn boot_device(&self) -> Result<BootDeviceSetting, BmcError> {
        self.begin(Op::BootDevice, Duration::ZERO)?;
        Ok(self.inner.with_node(&self.node, |sim| match sim.state.next_boot {
            Some(device) => BootDeviceSetting { device: Some(device), persistent: Some(false) },
            None => BootDeviceSetting {
                device: Some(sim.state.persistent_device),
                persistent: Some(true),
            },
        }))
    }

    async fn set_boot_device(
        &self,
        device: BootDevice,
        persistent: bool,
        mode: Option<BootMode>,
    ) -> Result<(), BmcError> {
        self.begin(Op::SetBootDevice, Duration::ZERO)?;
        self.inner.with_node(&self.node, |sim| {
            if persistent {
                sim.state.persistent_device = device;
                sim.state.next_boot = None;
            } else {
                sim.state.next_boot = Some(device);
            }
            if mode.is_some() {
                sim.state.boot_mode = mode;
            }
        });
        Ok(())
    }

    async fn boot_from_virtual_media(
        &self,
        url: &str,
        mode: Option<BootMode>,
    ) -> Result<(), BmcError> {
        self.begin(Op::BootFromVirtualMedia, Duration::ZERO)?;
        self.inner.with_node(&self.node, |sim| {
            sim.state.virtual_media = Some(url.to_owned());
            sim.state.next_boot = Some(BootDevice::Cdrom);
            if mode.is_some() {
                sim.state.boot_mode = mode;
            }
        });
        Ok(())
    }

    async fn eject_virtual_media(&self) -> Result<(), BmcError> {
        self.begin(Op::EjectVirtualMedia, Duration::ZERO)?;
        self.inner.with_node(&self.node, |sim| sim.state.virtual_media = None);
        Ok(())
    }

    async fn run_oob_step(&self, step: OobStep) -> Result<(), BmcError> {
        self.begin(Op::CleanStep, Duration::ZERO)?;
        self.inner.with_node(&self.node, |sim| match step {
            OobStep::ResetBiosToDefault => sim.state.bios_resets += 1,
            OobStep::SetSecureBoot { enable } => sim.state.secure_boot = Some(enable),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests;
