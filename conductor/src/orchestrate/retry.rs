//! BMC calls made by the flows, retried when the failure may pass.
//!
//! A flow that powers a node or sets its boot device should not fail the node because a
//! BMC missed one request: [`RetryingBmc`] tries again, `[bmc] retries` times and
//! `[bmc] retry_interval` apart, when the BMC was unreachable or did not answer in time.
//! Rejected credentials, unsupported operations and answers the driver could not use are
//! returned at once: repeating them only delays the failure (and may lock the BMC
//! account). A soft power off that timed out is not repeated either: there the timeout is
//! the operating system's answer (it did not shut down), not a lost request.
//!
//! The power-state reconciler does not use this wrapper: it counts failed reads across
//! its own runs (`sync_max_retries`).

use std::sync::Arc;
use std::time::Duration;

use crate::bmc::oob_steps::OobStep;
use crate::bmc::{Bmc, BmcError, BootDevice, BootDeviceSetting, BootMode, PowerAction, PowerState};

/// How often and how far apart transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub retries: u32,
    pub interval: Duration,
}

impl RetryPolicy {
    /// From `[bmc]`.
    pub fn from_config(config: &crate::config::BmcConfig) -> RetryPolicy {
        RetryPolicy { retries: config.retries, interval: config.retry_interval() }
    }
}

/// A [`Bmc`] whose calls are retried on transient failures.
#[derive(Debug)]
pub struct RetryingBmc {
    inner: Arc<dyn Bmc>,
    policy: RetryPolicy,
}

impl RetryingBmc {
    pub fn new(inner: Arc<dyn Bmc>, policy: RetryPolicy) -> RetryingBmc {
        RetryingBmc { inner, policy }
    }

    /// Runs `call` until it succeeds, fails for good, or the retries are used up; the
    /// last error is returned as the BMC gave it.
    async fn retry<T, F, Fut>(
        &self,
        operation: &str,
        retryable: impl Fn(&BmcError) -> bool,
        mut call: F,
    ) -> Result<T, BmcError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, BmcError>>,
    {
        let mut attempt: u32 = 0;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(error) if attempt < self.policy.retries && retryable(&error) => {
                    attempt += 1;
                    tracing::warn!(
                        operation,
                        attempt,
                        of = self.policy.retries,
                        error = %error,
                        "BMC call failed; retrying"
                    );
                    tokio::time::sleep(self.policy.interval).await;
                }
                Err(error) => {
                    if attempt > 0 {
                        tracing::warn!(operation, attempts = attempt + 1, error = %error,
                            "BMC call failed after retries");
                    }
                    return Err(error);
                }
            }
        }
    }
}

/// Whether a failed `action` is worth repeating.
fn power_retryable(action: PowerAction, error: &BmcError) -> bool {
    match error {
        BmcError::Timeout { .. } => {
            !matches!(action, PowerAction::SoftOff | PowerAction::SoftReboot)
        }
        other => other.is_transient(),
    }
}

#[async_trait::async_trait]
impl Bmc for RetryingBmc {
    async fn power_state(&self) -> Result<PowerState, BmcError> {
        self.retry("power state", BmcError::is_transient, || self.inner.power_state()).await
    }

    async fn set_power(
        &self,
        action: PowerAction,
        timeout: Option<Duration>,
    ) -> Result<(), BmcError> {
        self.retry(
            "set power",
            |e| power_retryable(action, e),
            || self.inner.set_power(action, timeout),
        )
        .await
    }

    async fn boot_device(&self) -> Result<BootDeviceSetting, BmcError> {
        self.retry("boot device", BmcError::is_transient, || self.inner.boot_device()).await
    }

    async fn set_boot_device(
        &self,
        device: BootDevice,
        persistent: bool,
        mode: Option<BootMode>,
    ) -> Result<(), BmcError> {
        self.retry("set boot device", BmcError::is_transient, || {
            self.inner.set_boot_device(device, persistent, mode)
        })
        .await
    }

    async fn boot_from_virtual_media(
        &self,
        url: &str,
        mode: Option<BootMode>,
    ) -> Result<(), BmcError> {
        self.retry("boot from virtual media", BmcError::is_transient, || {
            self.inner.boot_from_virtual_media(url, mode)
        })
        .await
    }

    async fn eject_virtual_media(&self) -> Result<(), BmcError> {
        self.retry("eject virtual media", BmcError::is_transient, || {
            self.inner.eject_virtual_media()
        })
        .await
    }

    async fn inspect(&self) -> Result<crate::bmc::redfish::OobInspection, BmcError> {
        // Reads only: repeating them is harmless.
        self.retry("inspection", BmcError::is_transient, || self.inner.inspect()).await
    }

    async fn run_oob_step(&self, step: OobStep) -> Result<(), BmcError> {
        // Both steps set a state rather than toggle one: repeating them is harmless.
        self.retry("clean step", BmcError::is_transient, || self.inner.run_oob_step(step)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bmc::fake::{FakeDriver, FaultKind, Op};
    use crate::bmc::Driver;
    use serde_json::Map;

    const NODE: &str = "8f2c4a8e-0d8e-4f51-9a49-5b1a4b0c2d11";

    fn bmc(fake: &FakeDriver, retries: u32) -> RetryingBmc {
        let inner = fake.connect(NODE, &Map::new()).unwrap();
        RetryingBmc::new(inner, RetryPolicy { retries, interval: Duration::from_millis(1) })
    }

    fn calls(fake: &FakeDriver, op: Op) -> u64 {
        fake.node(NODE).map_or(0, |s| s.calls_of(op))
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_the_call_succeeds() {
        for kind in [FaultKind::Unreachable, FaultKind::Timeout] {
            let fake = FakeDriver::new();
            fake.inject(NODE, Op::SetPower, kind, 2);
            fake.inject(NODE, Op::SetBootDevice, kind, 3);
            let bmc = bmc(&fake, 3);
            bmc.set_power(PowerAction::On, None).await.unwrap();
            assert_eq!(calls(&fake, Op::SetPower), 3, "{kind:?}");
            assert_eq!(fake.node(NODE).unwrap().power, PowerState::On);
            bmc.set_boot_device(BootDevice::Pxe, true, Some(BootMode::Bios)).await.unwrap();
            assert_eq!(calls(&fake, Op::SetBootDevice), 4, "{kind:?}");
            assert_eq!(fake.node(NODE).unwrap().persistent_device, BootDevice::Pxe);
            assert_eq!(fake.node(NODE).unwrap().boot_mode, Some(BootMode::Bios));
            fake.inject(NODE, Op::BootFromVirtualMedia, kind, 2);
            fake.inject(NODE, Op::EjectVirtualMedia, kind, 1);
            bmc.boot_from_virtual_media("http://192.0.2.1/d.iso", None).await.unwrap();
            assert_eq!(calls(&fake, Op::BootFromVirtualMedia), 3, "{kind:?}");
            assert_eq!(
                fake.node(NODE).unwrap().virtual_media.as_deref(),
                Some("http://192.0.2.1/d.iso")
            );
            bmc.eject_virtual_media().await.unwrap();
            assert_eq!(calls(&fake, Op::EjectVirtualMedia), 2, "{kind:?}");
            assert_eq!(fake.node(NODE).unwrap().virtual_media, None);
        }
    }

    #[tokio::test]
    async fn retries_run_out_with_the_bmcs_last_error() {
        let fake = FakeDriver::new();
        fake.inject(NODE, Op::PowerState, FaultKind::Unreachable, 10);
        let error = bmc(&fake, 2).power_state().await.unwrap_err();
        assert!(matches!(error, BmcError::Unreachable { .. }), "{error:?}");
        assert_eq!(calls(&fake, Op::PowerState), 3);

        let fake = FakeDriver::new();
        fake.inject(NODE, Op::BootDevice, FaultKind::Timeout, 1);
        let error = bmc(&fake, 0).boot_device().await.unwrap_err();
        assert!(matches!(error, BmcError::Timeout { .. }), "{error:?}");
        assert_eq!(calls(&fake, Op::BootDevice), 1, "0 retries means one attempt");
    }

    #[tokio::test]
    async fn lasting_failures_are_not_retried() {
        for kind in [FaultKind::AuthFailed, FaultKind::Unsupported, FaultKind::Protocol] {
            let fake = FakeDriver::new();
            fake.inject(NODE, Op::SetPower, kind, 1);
            fake.inject(NODE, Op::SetBootDevice, kind, 1);
            let bmc = bmc(&fake, 5);
            assert!(bmc.set_power(PowerAction::Off, None).await.is_err());
            assert!(bmc.set_boot_device(BootDevice::Disk, false, None).await.is_err());
            assert_eq!(calls(&fake, Op::SetPower), 1, "{kind:?}");
            assert_eq!(calls(&fake, Op::SetBootDevice), 1, "{kind:?}");
            fake.inject(NODE, Op::BootFromVirtualMedia, kind, 1);
            assert!(bmc.boot_from_virtual_media("http://x/d.iso", None).await.is_err());
            assert_eq!(calls(&fake, Op::BootFromVirtualMedia), 1, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn a_soft_power_off_that_timed_out_is_not_repeated() {
        for action in [PowerAction::SoftOff, PowerAction::SoftReboot] {
            let fake = FakeDriver::new();
            fake.set_initial_power(NODE, PowerState::On);
            fake.inject(NODE, Op::SetPower, FaultKind::Timeout, 1);
            let error = bmc(&fake, 3).set_power(action, None).await.unwrap_err();
            assert!(matches!(error, BmcError::Timeout { .. }), "{error:?}");
            assert_eq!(calls(&fake, Op::SetPower), 1, "{action:?}");
        }
        // An unreachable BMC is still retried for a soft power off.
        let fake = FakeDriver::new();
        fake.set_initial_power(NODE, PowerState::On);
        fake.inject(NODE, Op::SetPower, FaultKind::Unreachable, 1);
        bmc(&fake, 3).set_power(PowerAction::SoftOff, None).await.unwrap();
        assert_eq!(calls(&fake, Op::SetPower), 2);
        assert_eq!(fake.node(NODE).unwrap().power, PowerState::Off);
    }
}
