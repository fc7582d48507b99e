//! Whole erase steps over the host's devices: which devices, in what order, with what
//! concurrency, and the step result keyed by device name.

use serde_json::Value;

use crate::host::HostRoot;

/// The agent's own erase settings (kernel command line / flags); the node's
/// `driver_internal_info` adds the per-node ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EraseConfig {
    /// `ipa-enable-discard-erase`: allow a verified secure discard before zero-fill.
    pub enable_discard_erase: bool,
    /// `ipa-guard-special-filesystems`: refuse disks holding special filesystems unless
    /// the node allows wiping them.
    pub guard_special_filesystems: bool,
}

impl Default for EraseConfig {
    fn default() -> Self {
        Self { enable_discard_erase: false, guard_special_filesystems: true }
    }
}

/// Why an erase step failed; the text becomes the command's error message.
#[derive(Debug, thiserror::Error)]
pub enum EraseStepError {
    #[error("erase steps are not available in this build")]
    NotAvailable,
}

/// Interim progress of a running step, published as the command's result.
pub type ProgressSink<'a> = &'a (dyn Fn(Value) + Sync);

/// `erase_devices_metadata` over every erasable device of `host`; the result is keyed by
/// device name.
pub fn erase_devices_metadata(
    _host: &HostRoot,
    _node: Option<&Value>,
    _config: &EraseConfig,
    _progress: ProgressSink<'_>,
) -> Result<Value, EraseStepError> {
    Err(EraseStepError::NotAvailable)
}

/// `erase_devices`: every erasable disk with the fastest verified method.
pub fn erase_devices(
    _host: &HostRoot,
    _node: Option<&Value>,
    _config: &EraseConfig,
    _progress: ProgressSink<'_>,
) -> Result<Value, EraseStepError> {
    Err(EraseStepError::NotAvailable)
}

/// `erase_devices_express`: hardware erase where the disk has one, metadata elsewhere.
pub fn erase_devices_express(
    _host: &HostRoot,
    _node: Option<&Value>,
    _config: &EraseConfig,
    _progress: ProgressSink<'_>,
) -> Result<Value, EraseStepError> {
    Err(EraseStepError::NotAvailable)
}
