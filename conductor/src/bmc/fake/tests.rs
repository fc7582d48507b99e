use std::sync::Mutex;

use serde_json::json;
use tokio::time::Instant;

use super::*;

const NODE: &str = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123";

fn info(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn connect(driver: &FakeDriver, driver_info: Value) -> Arc<dyn Bmc> {
    driver.connect(NODE, &info(driver_info)).unwrap()
}

/// Records every transition; answers soft power off as configured.
#[derive(Default)]
struct RecordingHook {
    seen: Mutex<Vec<(String, PowerState)>>,
    /// `None`: the OS shuts down at once; `Some(d)`: it needs `d`.
    os_shutdown_time: Option<Duration>,
}

impl RecordingHook {
    fn seen(&self) -> Vec<(String, PowerState)> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl PowerHook for RecordingHook {
    fn powered(&self, node: &str, state: PowerState) {
        self.seen.lock().unwrap().push((node.to_owned(), state));
    }

    async fn shutdown_os(&self, _node: &str, timeout: Duration) -> bool {
        match self.os_shutdown_time {
            None => true,
            Some(needed) if needed <= timeout => {
                tokio::time::sleep(needed).await;
                true
            }
            Some(_) => {
                tokio::time::sleep(timeout).await;
                false
            }
        }
    }
}

/// A hook that only implements `powered`: soft power off uses the default answer.
struct PlainHook(Mutex<u32>);

impl PowerHook for PlainHook {
    fn powered(&self, _node: &str, _state: PowerState) {
        *self.0.lock().unwrap() += 1;
    }
}

#[test]
fn registered_name_is_fake_hardware() {
    let driver: Arc<dyn Driver> = Arc::new(FakeDriver::new());
    let mut registry = super::super::DriverRegistry::new();
    registry.register(driver);
    assert_eq!(registry.get("fake-hardware").unwrap().name(), "fake-hardware");
}

#[test]
fn validate_accepts_empty_and_foreign_keys() {
    let driver = FakeDriver::new();
    driver.validate(&Map::new()).unwrap();
    driver.validate(&info(json!({"deploy_kernel": "k", "ipmi_address": "1.2.3.4"}))).unwrap();
}

#[test]
fn validate_accepts_documented_keys_in_both_number_forms() {
    let driver = FakeDriver::new();
    let ok = [
        json!({"fake_power_delay": 2}),
        json!({"fake_power_delay": "0.5"}),
        json!({"fake_soft_power_off_delay": 3600}),
        json!({"fake_fail": "set_power=timeout"}),
        json!({"fake_fail": "power_state=unreachable, boot_device=protocol"}),
        json!({"fake_fail": "*=auth_failed"}),
        json!({"fake_fail": ""}),
    ];
    for case in ok {
        assert_eq!(driver.validate(&info(case.clone())), Ok(()), "{case}");
    }
}

#[test]
fn validate_rejects_bad_values_naming_the_key() {
    let driver = FakeDriver::new();
    let bad = [
        (json!({"fake_power_delay": -1}), "fake_power_delay"),
        (json!({"fake_power_delay": "soon"}), "fake_power_delay"),
        (json!({"fake_power_delay": 3601}), "fake_power_delay"),
        (json!({"fake_power_delay": true}), "fake_power_delay"),
        (json!({"fake_soft_power_off_delay": "NaN"}), "fake_soft_power_off_delay"),
        (json!({"fake_fail": 3}), "fake_fail"),
        (json!({"fake_fail": "set_power"}), "fake_fail"),
        (json!({"fake_fail": "reboot=timeout"}), "unknown operation \"reboot\""),
        (json!({"fake_fail": "set_power=flaky"}), "unknown failure kind \"flaky\""),
        (json!({"fake_colour": "red"}), "unknown key fake_colour"),
    ];
    for (case, needle) in bad {
        let err = driver.validate(&info(case.clone())).unwrap_err();
        assert!(err.to_string().contains(needle), "{case}: {err}");
        assert!(driver.connect(NODE, &info(case)).is_err());
    }
}

#[tokio::test]
async fn power_on_off_and_state() {
    let driver = FakeDriver::new();
    let bmc = connect(&driver, json!({}));
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    bmc.set_power(PowerAction::On, None).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    bmc.set_power(PowerAction::Off, None).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
}

#[tokio::test]
async fn state_persists_across_connect_and_nodes_are_separate() {
    let driver = FakeDriver::new();
    let first = connect(&driver, json!({}));
    first.set_power(PowerAction::On, None).await.unwrap();
    first.set_boot_device(BootDevice::Pxe, true, None).await.unwrap();
    drop(first);

    let second = connect(&driver, json!({"fake_power_delay": 0}));
    assert_eq!(second.power_state().await.unwrap(), PowerState::On);
    assert_eq!(
        second.boot_device().await.unwrap(),
        BootDeviceSetting { device: Some(BootDevice::Pxe), persistent: Some(true) }
    );

    let other = driver.connect("other-node", &Map::new()).unwrap();
    assert_eq!(other.power_state().await.unwrap(), PowerState::Off);

    let state = driver.node(NODE).unwrap();
    assert_eq!(state.calls_of(Op::SetPower), 1);
    assert_eq!(state.calls_of(Op::SetBootDevice), 1);
    assert_eq!(state.calls_of(Op::PowerState), 1);
    assert_eq!(state.calls_of(Op::BootDevice), 1);
    assert_eq!(state.total_calls(), 4);
    assert!(driver.node("never-seen").is_none());
}

#[tokio::test]
async fn boot_device_persistent_and_one_time() {
    let driver = FakeDriver::new();
    let bmc = connect(&driver, json!({}));
    // A fresh server boots from its disk.
    assert_eq!(
        bmc.boot_device().await.unwrap(),
        BootDeviceSetting { device: Some(BootDevice::Disk), persistent: Some(true) }
    );

    bmc.set_boot_device(BootDevice::Pxe, false, None).await.unwrap();
    assert_eq!(
        bmc.boot_device().await.unwrap(),
        BootDeviceSetting { device: Some(BootDevice::Pxe), persistent: Some(false) }
    );
    bmc.set_power(PowerAction::On, None).await.unwrap();
    assert_eq!(driver.node(NODE).unwrap().booted_from, Some(BootDevice::Pxe));
    // The one-time device is used up by that boot.
    assert_eq!(
        bmc.boot_device().await.unwrap(),
        BootDeviceSetting { device: Some(BootDevice::Disk), persistent: Some(true) }
    );
    bmc.set_power(PowerAction::Reboot, None).await.unwrap();
    assert_eq!(driver.node(NODE).unwrap().booted_from, Some(BootDevice::Disk));

    bmc.set_boot_device(BootDevice::Cdrom, true, None).await.unwrap();
    bmc.set_power(PowerAction::Reboot, None).await.unwrap();
    bmc.set_power(PowerAction::Reboot, None).await.unwrap();
    assert_eq!(driver.node(NODE).unwrap().booted_from, Some(BootDevice::Cdrom));

    // A persistent setting replaces a pending one-time one.
    bmc.set_boot_device(BootDevice::Bios, false, None).await.unwrap();
    bmc.set_boot_device(BootDevice::Safe, true, None).await.unwrap();
    assert_eq!(
        bmc.boot_device().await.unwrap(),
        BootDeviceSetting { device: Some(BootDevice::Safe), persistent: Some(true) }
    );
}

#[tokio::test]
async fn hook_sees_every_transition_and_reboot_as_off_then_on() {
    let hook = Arc::new(RecordingHook::default());
    let driver = FakeDriver::builder().hook(hook.clone()).build();
    let bmc = connect(&driver, json!({}));

    bmc.set_power(PowerAction::On, None).await.unwrap();
    bmc.set_power(PowerAction::On, None).await.unwrap(); // already on: no transition
    bmc.set_power(PowerAction::Reboot, None).await.unwrap();
    bmc.set_power(PowerAction::Off, None).await.unwrap();
    bmc.set_power(PowerAction::Off, None).await.unwrap(); // already off
    bmc.set_power(PowerAction::Reboot, None).await.unwrap(); // from off: only on

    use PowerState::{Off, On};
    let expected: Vec<_> =
        [On, Off, On, Off, On].into_iter().map(|s| (NODE.to_owned(), s)).collect();
    assert_eq!(hook.seen(), expected);
}

#[tokio::test]
async fn soft_power_off_with_hook_whose_os_goes_down() {
    let hook = Arc::new(RecordingHook::default());
    let driver = FakeDriver::builder().hook(hook.clone()).build();
    let bmc = connect(&driver, json!({}));
    bmc.set_power(PowerAction::On, None).await.unwrap();
    bmc.set_power(PowerAction::SoftOff, Some(Duration::from_secs(30))).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(hook.seen().last(), Some(&(NODE.to_owned(), PowerState::Off)));

    bmc.set_power(PowerAction::SoftReboot, None).await.unwrap(); // from off: just on
    bmc.set_power(PowerAction::SoftReboot, None).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    use PowerState::{Off, On};
    let states: Vec<_> = hook.seen().into_iter().map(|(_, s)| s).collect();
    assert_eq!(states, [On, Off, On, Off, On]);
}

#[tokio::test(start_paused = true)]
async fn soft_power_off_with_hook_whose_os_hangs_times_out() {
    let hook = Arc::new(RecordingHook {
        os_shutdown_time: Some(Duration::from_secs(120)),
        ..RecordingHook::default()
    });
    let driver = FakeDriver::builder().hook(hook.clone()).build();
    let bmc = connect(&driver, json!({}));
    bmc.set_power(PowerAction::On, None).await.unwrap();

    let started = Instant::now();
    let err = bmc.set_power(PowerAction::SoftOff, Some(Duration::from_secs(60))).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(60));
    assert!(
        matches!(&err, BmcError::Timeout { operation, timeout, .. }
            if operation == "soft power off" && *timeout == Duration::from_secs(60)),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    assert_eq!(hook.seen(), [(NODE.to_owned(), PowerState::On)]);

    // Given long enough, the same OS goes down.
    bmc.set_power(PowerAction::SoftOff, Some(Duration::from_secs(300))).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
}

#[tokio::test]
async fn plain_hook_uses_default_shutdown_answer() {
    let hook = Arc::new(PlainHook(Mutex::new(0)));
    let driver = FakeDriver::builder().hook(hook.clone()).build();
    let bmc = connect(&driver, json!({}));
    bmc.set_power(PowerAction::On, None).await.unwrap();
    bmc.set_power(PowerAction::SoftOff, None).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(*hook.0.lock().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn soft_power_off_without_hook_waits_the_os_delay() {
    let driver = FakeDriver::builder().soft_power_off_delay(Duration::from_secs(10)).build();
    let bmc = connect(&driver, json!({}));
    bmc.set_power(PowerAction::On, None).await.unwrap();

    let started = Instant::now();
    bmc.set_power(PowerAction::SoftOff, Some(Duration::from_secs(30))).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);

    // driver_info overrides the driver's default; a delay beyond the timeout times out.
    let slow = connect(&driver, json!({"fake_soft_power_off_delay": "45"}));
    slow.set_power(PowerAction::On, None).await.unwrap();
    let started = Instant::now();
    let err =
        slow.set_power(PowerAction::SoftOff, Some(Duration::from_secs(30))).await.unwrap_err();
    assert!(matches!(err, BmcError::Timeout { .. }), "{err:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert_eq!(slow.power_state().await.unwrap(), PowerState::On);
    let err = slow.set_power(PowerAction::SoftReboot, Some(Duration::from_secs(1))).await;
    assert!(matches!(err, Err(BmcError::Timeout { .. })));
}

#[tokio::test(start_paused = true)]
async fn power_delay_applies_to_each_transition() {
    let driver = FakeDriver::builder().power_delay(Duration::from_secs(3)).build();
    let bmc = connect(&driver, json!({}));

    let started = Instant::now();
    bmc.set_power(PowerAction::On, None).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(3));

    let started = Instant::now();
    bmc.set_power(PowerAction::On, None).await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO, "no transition, no delay");

    let started = Instant::now();
    bmc.set_power(PowerAction::Reboot, None).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(6));

    // driver_info wins over the driver default.
    let quick = connect(&driver, json!({"fake_power_delay": 0.5}));
    let started = Instant::now();
    quick.set_power(PowerAction::Off, None).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn per_node_delays_set_from_tests_apply_to_live_connections() {
    let driver = FakeDriver::new();
    let bmc = connect(&driver, json!({}));
    driver.set_power_delay(NODE, Duration::from_secs(4));
    driver.set_soft_power_off_delay(NODE, Duration::from_secs(20));

    let started = Instant::now();
    bmc.set_power(PowerAction::On, None).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(4));
    let started = Instant::now();
    bmc.set_power(PowerAction::SoftOff, Some(Duration::from_secs(60))).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(24), "OS shutdown, then power off");

    // Another node keeps the driver default (none); driver_info beats the node setting.
    let other = driver.connect("other", &Map::new()).unwrap();
    let started = Instant::now();
    other.set_power(PowerAction::On, None).await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);
    let configured = connect(&driver, json!({"fake_power_delay": 1}));
    let started = Instant::now();
    configured.set_power(PowerAction::On, None).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn power_state_during_a_slow_transition_is_the_old_state() {
    let driver = Arc::new(FakeDriver::builder().power_delay(Duration::from_secs(5)).build());
    let bmc = connect(&driver, json!({}));
    let switching = {
        let bmc = Arc::clone(&bmc);
        tokio::spawn(async move { bmc.set_power(PowerAction::On, None).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    switching.await.unwrap().unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
}

fn expected_kind(err: &BmcError) -> FaultKind {
    match err {
        BmcError::Unreachable { .. } => FaultKind::Unreachable,
        BmcError::AuthFailed { .. } => FaultKind::AuthFailed,
        BmcError::Unsupported { .. } => FaultKind::Unsupported,
        BmcError::Timeout { .. } => FaultKind::Timeout,
        BmcError::Protocol { .. } => FaultKind::Protocol,
        other => panic!("the fake driver never produces {other:?}"),
    }
}

async fn call(bmc: &dyn Bmc, op: Op) -> Result<(), BmcError> {
    match op {
        Op::PowerState => bmc.power_state().await.map(|_| ()),
        Op::SetPower => bmc.set_power(PowerAction::On, None).await,
        Op::BootDevice => bmc.boot_device().await.map(|_| ()),
        Op::SetBootDevice => bmc.set_boot_device(BootDevice::Pxe, true, None).await,
        Op::BootFromVirtualMedia => {
            bmc.boot_from_virtual_media("http://192.0.2.9/a.iso", None).await
        }
        Op::EjectVirtualMedia => bmc.eject_virtual_media().await,
        Op::CleanStep => bmc.run_oob_step(OobStep::ResetBiosToDefault).await,
    }
}

#[tokio::test]
async fn out_of_band_steps_change_the_simulated_firmware() {
    let driver = FakeDriver::new();
    assert_eq!(driver.clean_steps().len(), 2);
    let bmc = connect(&driver, json!({}));
    bmc.run_oob_step(OobStep::SetSecureBoot { enable: true }).await.unwrap();
    bmc.run_oob_step(OobStep::ResetBiosToDefault).await.unwrap();
    bmc.run_oob_step(OobStep::ResetBiosToDefault).await.unwrap();
    let state = driver.node(NODE).unwrap();
    assert_eq!((state.secure_boot, state.bios_resets), (Some(true), 2));
    bmc.run_oob_step(OobStep::SetSecureBoot { enable: false }).await.unwrap();
    assert_eq!(driver.node(NODE).unwrap().secure_boot, Some(false));
    // A driver_info failure setting covers the steps too.
    let failing = connect(&driver, json!({"fake_fail": "clean_step=unsupported"}));
    let err = failing.run_oob_step(OobStep::ResetBiosToDefault).await.unwrap_err();
    assert!(matches!(err, BmcError::Unsupported { .. }), "{err}");
    assert_eq!(driver.node(NODE).unwrap().bios_resets, 2);
}

#[tokio::test]
async fn injected_failures_of_every_kind_on_every_op_then_recover() {
    for op in Op::ALL {
        for kind in FaultKind::ALL {
            let driver = FakeDriver::new();
            let bmc = connect(&driver, json!({}));
            driver.inject(NODE, op, kind, 2);
            for attempt in 0..2 {
                let err = call(bmc.as_ref(), op).await.unwrap_err();
                assert_eq!(expected_kind(&err), kind, "{op:?} attempt {attempt}: {err}");
            }
            call(bmc.as_ref(), op).await.unwrap();
            // The other operations were never affected.
            for other in Op::ALL.into_iter().filter(|o| *o != op) {
                call(bmc.as_ref(), other).await.unwrap();
            }
            assert_eq!(driver.node(NODE).unwrap().calls_of(op), 3);
        }
    }
}

#[tokio::test]
async fn boot_modes_are_kept_with_boot_device_changes_and_none_leaves_them() {
    let driver = FakeDriver::new();
    let bmc = connect(&driver, json!({}));
    assert_eq!(driver.node(NODE).map(|n| n.boot_mode), None);
    bmc.set_boot_device(BootDevice::Pxe, false, Some(BootMode::Bios)).await.unwrap();
    assert_eq!(driver.node(NODE).unwrap().boot_mode, Some(BootMode::Bios));
    bmc.set_boot_device(BootDevice::Disk, true, None).await.unwrap();
    assert_eq!(driver.node(NODE).unwrap().boot_mode, Some(BootMode::Bios));
    bmc.set_boot_device(BootDevice::Disk, true, Some(BootMode::Uefi)).await.unwrap();
    assert_eq!(driver.node(NODE).unwrap().boot_mode, Some(BootMode::Uefi));
}

#[tokio::test]
async fn virtual_media_boots_once_from_the_cd_and_eject_empties_it() {
    let driver = FakeDriver::new();
    let bmc = connect(&driver, json!({}));
    let url = "http://192.0.2.1:6385/images/deploy.iso";
    bmc.boot_from_virtual_media(url, Some(BootMode::Bios)).await.unwrap();
    let state = driver.node(NODE).unwrap();
    assert_eq!(state.virtual_media.as_deref(), Some(url));
    assert_eq!(state.next_boot, Some(BootDevice::Cdrom));
    assert_eq!(state.boot_mode, Some(BootMode::Bios));
    assert_eq!(
        bmc.boot_device().await.unwrap(),
        BootDeviceSetting { device: Some(BootDevice::Cdrom), persistent: Some(false) }
    );
    bmc.set_power(PowerAction::On, None).await.unwrap();
    let state = driver.node(NODE).unwrap();
    assert_eq!(state.booted_from, Some(BootDevice::Cdrom));
    // The media stays inserted after the boot it was for; the next boot is from disk.
    assert_eq!(state.virtual_media.as_deref(), Some(url));
    assert_eq!(state.next_boot, None);

    bmc.eject_virtual_media().await.unwrap();
    assert_eq!(driver.node(NODE).unwrap().virtual_media, None);
    // Ejecting an empty drive is fine.
    bmc.eject_virtual_media().await.unwrap();
    assert_eq!(driver.node(NODE).unwrap().calls_of(Op::EjectVirtualMedia), 2);
    assert!(driver.supports_virtual_media());
}

#[tokio::test]
async fn failed_set_power_changes_nothing_and_hook_is_silent() {
    let hook = Arc::new(RecordingHook::default());
    let driver = FakeDriver::builder().hook(hook.clone()).build();
    let bmc = connect(&driver, json!({}));
    driver.inject(NODE, Op::SetPower, FaultKind::Unreachable, 1);
    assert!(bmc.set_power(PowerAction::On, None).await.is_err());
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert!(hook.seen().is_empty());

    driver.inject(NODE, Op::SetBootDevice, FaultKind::Protocol, 1);
    assert!(bmc.set_boot_device(BootDevice::Pxe, true, None).await.is_err());
    assert_eq!(bmc.boot_device().await.unwrap().device, Some(BootDevice::Disk));
}

#[tokio::test]
async fn inject_survives_reconnect_and_clear_faults_drops_it() {
    let driver = FakeDriver::new();
    driver.inject(NODE, Op::PowerState, FaultKind::AuthFailed, 5);
    assert!(connect(&driver, json!({})).power_state().await.is_err());
    assert!(connect(&driver, json!({})).power_state().await.is_err());
    driver.clear_faults(NODE);
    connect(&driver, json!({})).power_state().await.unwrap();

    driver.inject(NODE, Op::PowerState, FaultKind::AuthFailed, 5);
    driver.inject(NODE, Op::PowerState, FaultKind::AuthFailed, 0);
    connect(&driver, json!({})).power_state().await.unwrap();
}

#[tokio::test]
async fn fake_fail_in_driver_info_fails_every_call() {
    let driver = FakeDriver::new();
    let bmc =
        connect(&driver, json!({"fake_fail": "power_state=unreachable,set_power=auth_failed"}));
    for _ in 0..3 {
        assert!(matches!(bmc.power_state().await, Err(BmcError::Unreachable { .. })));
        assert!(matches!(
            bmc.set_power(PowerAction::On, None).await,
            Err(BmcError::AuthFailed { .. })
        ));
    }
    bmc.boot_device().await.unwrap();

    let all = connect(&driver, json!({"fake_fail": "*=protocol"}));
    for op in Op::ALL {
        assert!(matches!(call(all.as_ref(), op).await, Err(BmcError::Protocol { .. })), "{op:?}");
    }
    // Without the key the same node works again.
    connect(&driver, json!({})).power_state().await.unwrap();
}

#[tokio::test]
async fn injected_timeout_reports_the_callers_timeout() {
    let driver = FakeDriver::new();
    let bmc = connect(&driver, json!({}));
    driver.inject(NODE, Op::SetPower, FaultKind::Timeout, 1);
    let err = bmc.set_power(PowerAction::SoftOff, Some(Duration::from_secs(7))).await.unwrap_err();
    assert!(
        matches!(err, BmcError::Timeout { timeout, .. } if timeout == Duration::from_secs(7)),
        "{err:?}"
    );
    assert!(err.to_string().contains("fake://"), "{err}");
}

#[test]
fn transient_kinds_are_unreachable_and_timeout() {
    let table = [
        (FaultKind::Unreachable, true),
        (FaultKind::AuthFailed, false),
        (FaultKind::Unsupported, false),
        (FaultKind::Timeout, true),
        (FaultKind::Protocol, false),
    ];
    for (kind, transient) in table {
        let err = kind.error("fake://n", Op::SetPower, Duration::from_secs(1));
        assert_eq!(expected_kind(&err), kind);
        assert_eq!(err.is_transient(), transient, "{kind:?}");
    }
}

#[tokio::test]
async fn os_powered_off_and_initial_power() {
    let hook = Arc::new(RecordingHook::default());
    let driver = FakeDriver::builder().hook(hook.clone()).build();
    driver.set_initial_power(NODE, PowerState::On);
    let bmc = connect(&driver, json!({}));
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    assert!(hook.seen().is_empty());

    driver.os_powered_off(NODE);
    driver.os_powered_off(NODE); // already off: no second transition
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(hook.seen(), [(NODE.to_owned(), PowerState::Off)]);
}
