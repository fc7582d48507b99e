//! The `ipmi` driver against OpenIPMI's `ipmi_sim` (a real IPMI 2.0 / RMCP+ stack), every
//! operation cross-checked with `ipmitool -I lanplus -C 3` and the hook's recorded state.

mod ipmi_support;

use std::time::{Duration, Instant};

use ferric_conductor::bmc::ipmi::{IpmiDriver, IpmiOptions};
use ferric_conductor::bmc::{Bmc, BmcError, BootDevice, BootMode, Driver, PowerAction, PowerState};
use ipmi_support::{driver_info, skip_unless, IpmiSim};
use serde_json::Value;

fn options() -> IpmiOptions {
    IpmiOptions {
        request_timeout: Duration::from_millis(500),
        retries: 2,
        idle_close: Duration::from_secs(5),
        power_poll_interval: Duration::from_millis(100),
        power_timeout: Duration::from_secs(10),
    }
}

fn ready() -> bool {
    skip_unless(&["ipmi_sim", "ipmitool", "timeout"])
}

/// ipmitool's reading of the chassis power.
fn ipmitool_power(sim: &IpmiSim) -> String {
    sim.ipmitool_ok(&["chassis", "power", "status"]).trim().to_owned()
}

#[tokio::test]
async fn power_is_cross_checked_both_ways() {
    if !ready() {
        return;
    }
    let sim = IpmiSim::start();
    let driver = IpmiDriver::with_options(options());
    let bmc = driver.connect_ipmi("node-1", &driver_info(sim.port)).unwrap();

    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    bmc.set_power(PowerAction::On, None).await.unwrap();
    assert_eq!(sim.recorded_power(), "1");
    assert_eq!(ipmitool_power(&sim), "Chassis Power is on");

    bmc.set_power(PowerAction::Off, None).await.unwrap();
    assert_eq!(sim.recorded_power(), "0");
    assert_eq!(ipmitool_power(&sim), "Chassis Power is off");

    // The other way: ipmitool changes power, Ferric reads it.
    sim.ipmitool_ok(&["chassis", "power", "on"]);
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    sim.ipmitool_ok(&["chassis", "power", "off"]);
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);

    // Reboot of a node that is off powers it on; of one that is on, a hard reset.
    bmc.set_power(PowerAction::Reboot, None).await.unwrap();
    assert_eq!(sim.recorded_power(), "1");
    bmc.set_power(PowerAction::Reboot, None).await.unwrap();
    assert!(sim.hook_log().contains("set reset 1"), "{}", sim.hook_log());
    assert_eq!(ipmitool_power(&sim), "Chassis Power is on");

    // Soft power off is the ACPI request; the hook's "OS" goes down at once.
    bmc.set_power(PowerAction::SoftOff, Some(Duration::from_secs(10))).await.unwrap();
    assert!(sim.hook_log().contains("set shutdown 1"), "{}", sim.hook_log());
    assert_eq!(ipmitool_power(&sim), "Chassis Power is off");

    bmc.set_power(PowerAction::SoftReboot, Some(Duration::from_secs(10))).await.unwrap();
    assert_eq!(ipmitool_power(&sim), "Chassis Power is on");

    // Power cycle through the raw Chassis Control.
    bmc.chassis_control(ferric_conductor::bmc::ipmi::commands::ChassisControl::PowerCycle)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sim.hook_log().contains("set power 0") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sim.hook_log().lines().filter(|l| *l == "0x20 set power 0").count() >= 1);
}

/// ipmitool's "Boot Device Selector" line of `chassis bootparam get 5`.
fn ipmitool_boot_selector(sim: &IpmiSim) -> String {
    let out = sim.ipmitool_ok(&["chassis", "bootparam", "get", "5"]);
    out.lines()
        .find_map(|l| l.split_once("Boot Device Selector :").map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no boot device selector in {out}"))
}

#[tokio::test]
async fn boot_device_is_cross_checked_both_ways() {
    if !ready() {
        return;
    }
    let sim = IpmiSim::start();
    let driver = IpmiDriver::with_options(options());
    let bmc = driver.connect_ipmi("node-1", &driver_info(sim.port)).unwrap();

    // (Ferric device, hook's name, ipmitool's selector text, ipmitool bootdev name)
    let table = [
        (BootDevice::Pxe, "pxe", "Force PXE", "pxe"),
        (BootDevice::Disk, "default", "Force Boot from default Hard-Drive", "disk"),
        (BootDevice::Cdrom, "cdrom", "Force Boot from CD/DVD", "cdrom"),
        (BootDevice::Bios, "bios", "Force Boot into BIOS Setup", "bios"),
    ];
    for (device, hook_name, selector, _) in table {
        for persistent in [true, false] {
            bmc.set_boot_device(device, persistent, None).await.unwrap();
            assert_eq!(sim.recorded_boot(), hook_name, "{device:?}");
            assert_eq!(ipmitool_boot_selector(&sim), selector, "{device:?}");
            let read = bmc.boot_device().await.unwrap();
            assert_eq!(read.device, Some(device));
        }
    }
    // The other way round: ipmitool sets, Ferric reads. Each time from another device
    // than the one before, so a stale reading cannot pass.
    for (i, (device, hook_name, _, name)) in table.iter().enumerate() {
        let (previous, ..) = table[(i + 1) % table.len()];
        bmc.set_boot_device(previous, false, None).await.unwrap();
        sim.ipmitool_ok(&["chassis", "bootdev", name]);
        assert_eq!(sim.recorded_boot(), *hook_name);
        assert_eq!(bmc.boot_device().await.unwrap().device, Some(*device), "{name}");
    }
}

/// Boot device changes with a boot mode (which sets or clears the EFI bit of the boot
/// flags) are accepted by the real stack and land as the device asked for. ipmi_sim
/// itself keeps no EFI bit to read back: it answers the flags' first byte as 0 even after
/// ipmitool's own `chassis bootdev pxe options=efiboot` (checked below), so the bit is
/// verified against the simulated BMC of the driver's unit tests instead.
#[tokio::test]
async fn boot_device_with_a_boot_mode_lands_on_the_real_stack() {
    if !ready() {
        return;
    }
    let sim = IpmiSim::start();
    let driver = IpmiDriver::with_options(options());
    let bmc = driver.connect_ipmi("node-1", &driver_info(sim.port)).unwrap();

    let table = [
        (BootMode::Uefi, BootDevice::Pxe, "pxe", "Force PXE"),
        (BootMode::Bios, BootDevice::Cdrom, "cdrom", "Force Boot from CD/DVD"),
        (BootMode::Uefi, BootDevice::Disk, "default", "Force Boot from default Hard-Drive"),
        (BootMode::Bios, BootDevice::Pxe, "pxe", "Force PXE"),
    ];
    for (mode, device, hook_name, selector) in table {
        for persistent in [true, false] {
            bmc.set_boot_device(device, persistent, Some(mode)).await.unwrap();
            assert_eq!(sim.recorded_boot(), hook_name, "{mode:?} {device:?}");
            assert_eq!(ipmitool_boot_selector(&sim), selector, "{mode:?} {device:?}");
            assert_eq!(bmc.boot_device().await.unwrap().device, Some(device));
        }
    }
    // Without a mode the driver reads the flags first to keep the BMC's bit.
    bmc.set_boot_device(BootDevice::Cdrom, false, None).await.unwrap();
    assert_eq!(sim.recorded_boot(), "cdrom");

    sim.ipmitool_ok(&["chassis", "bootdev", "pxe", "options=efiboot"]);
    assert!(!bmc.boot_flags().await.unwrap().efi, "ipmi_sim now keeps the EFI bit");
}

#[tokio::test]
async fn device_id_and_lan_info_match_ipmitool() {
    if !ready() {
        return;
    }
    let sim = IpmiSim::start();
    let driver = IpmiDriver::with_options(options());
    let bmc = driver.connect_ipmi("node-1", &driver_info(sim.port)).unwrap();

    let id = bmc.device_id().await.unwrap();
    let info = sim.ipmitool_ok(&["mc", "info"]);
    let field = |name: &str| {
        info.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("{name} missing in {info}"))
    };
    assert_eq!(field("Device ID"), id.device_id.to_string());
    assert_eq!(field("Device Revision"), id.device_revision.to_string());
    assert_eq!(field("IPMI Version"), format!("{}.{}", id.ipmi_version.0, id.ipmi_version.1));
    assert_eq!(field("Manufacturer ID"), id.manufacturer_id.to_string());
    assert!(field("Product ID").starts_with(&id.product_id.to_string()), "{info}");
    assert_eq!(id.manufacturer_id, 0x1291);

    let lan = bmc.lan_info().await.unwrap();
    let print = sim.ipmitool_ok(&["lan", "print", "1"]);
    let lan_field = |name: &str| {
        print
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(" : ")?;
                (k.trim() == name).then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("{name} missing in {print}"))
    };
    assert_eq!(lan_field("IP Address"), lan.ip.to_string());
    let mac = lan.mac.map(|b| format!("{b:02x}")).join(":");
    assert_eq!(lan_field("MAC Address"), mac);
}

#[tokio::test]
async fn auto_cipher_suite_falls_back_to_3_and_17_alone_is_unsupported() {
    if !ready() {
        return;
    }
    let sim = IpmiSim::start();
    let driver = IpmiDriver::with_options(options());
    let bmc = driver.connect_ipmi("node-1", &driver_info(sim.port)).unwrap();
    assert_eq!(bmc.cipher_suite().await.unwrap(), 3);

    let mut info = driver_info(sim.port);
    info.insert("ipmi_cipher_suite".into(), Value::from(17));
    let only_17 = driver.connect_ipmi("node-2", &info).unwrap();
    let error = only_17.power_state().await.unwrap_err();
    assert!(matches!(error, BmcError::Unsupported { .. }), "{error:?}");
    assert!(error.to_string().contains("cipher suite 17"), "{error}");

    info.insert("ipmi_cipher_suite".into(), Value::from("3"));
    let only_3 = driver.connect_ipmi("node-3", &info).unwrap();
    assert_eq!(only_3.cipher_suite().await.unwrap(), 3);
}

#[tokio::test]
async fn wrong_credentials_are_auth_failures() {
    if !ready() {
        return;
    }
    let sim = IpmiSim::start();
    let driver = IpmiDriver::with_options(options());
    for (key, value) in [("ipmi_password", "s3cret-wrong"), ("ipmi_username", "nobody")] {
        let mut info = driver_info(sim.port);
        info.insert(key.into(), Value::from(value));
        let bmc = driver.connect_ipmi("node-1", &info).unwrap();
        let started = Instant::now();
        let error = bmc.power_state().await.unwrap_err();
        assert!(matches!(error, BmcError::AuthFailed { .. }), "{key}: {error:?}");
        assert!(!error.is_transient());
        assert!(started.elapsed() < Duration::from_secs(5), "{key}: {:?}", started.elapsed());
        let debug = format!("{bmc:?}");
        // The password never shows in Debug output.
        assert!(!debug.contains("s3cret-wrong"), "{debug}");
        assert!(!debug.contains(&format!("{:?}", ipmi_support::PASSWORD)), "{debug}");
        assert!(debug.contains("******"), "{debug}");
    }
}

#[tokio::test]
async fn a_user_level_session_gets_insufficient_privilege_for_chassis_control() {
    if !ready() {
        return;
    }
    let sim = IpmiSim::start();
    let driver = IpmiDriver::with_options(options());
    let mut info = driver_info(sim.port);
    info.insert("ipmi_priv_level".into(), Value::from("USER"));
    let bmc = driver.connect_ipmi("node-1", &info).unwrap();
    // Reading is allowed at User level...
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    // ...changing power is not.
    let error = bmc.set_power(PowerAction::On, None).await.unwrap_err();
    assert!(matches!(error, BmcError::InsufficientPrivilege { .. }), "{error:?}");
    assert_eq!(sim.recorded_power(), "0");
}

#[tokio::test]
async fn one_session_serves_every_connection_to_a_bmc() {
    if !ready() {
        return;
    }
    let sim = IpmiSim::start();
    let driver = IpmiDriver::with_options(options());
    let bmcs: Vec<_> = (0..8)
        .map(|i| driver.connect(&format!("node-{i}"), &driver_info(sim.port)).unwrap())
        .collect();
    let reads = bmcs.iter().map(|bmc| {
        let bmc = bmc.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                bmc.power_state().await?;
            }
            Ok::<_, BmcError>(())
        })
    });
    for read in reads.collect::<Vec<_>>() {
        read.await.unwrap().unwrap();
    }
    assert_eq!(driver.session_count(), 1);
}

#[tokio::test]
async fn an_idle_session_is_closed_and_reopened_on_demand() {
    if !ready() {
        return;
    }
    let sim = IpmiSim::start();
    let driver = IpmiDriver::with_options(IpmiOptions {
        idle_close: Duration::from_millis(300),
        ..options()
    });
    let bmc = driver.connect_ipmi("node-1", &driver_info(sim.port)).unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(driver.session_count(), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(driver.session_count(), 0, "the idle session task should have ended");
    sim.ipmitool_ok(&["chassis", "power", "on"]);
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
}

#[tokio::test]
async fn nothing_listening_fails_as_unreachable_within_the_bound() {
    let options = options();
    let bound = options.request_timeout * (options.retries + 1);
    let driver = IpmiDriver::with_options(options);

    // A closed port: the kernel answers "port unreachable".
    let closed = ipmi_support::free_udp_port();
    let bmc = driver.connect_ipmi("node-1", &driver_info(closed)).unwrap();
    let started = Instant::now();
    let error = bmc.power_state().await.unwrap_err();
    assert!(matches!(error, BmcError::Unreachable { .. }), "{error:?}");
    assert!(error.is_transient());
    assert!(started.elapsed() < bound + Duration::from_secs(1), "{:?}", started.elapsed());

    // A port that swallows every datagram: only the retransmission bound ends the wait.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let bmc = driver.connect_ipmi("node-2", &driver_info(port)).unwrap();
    let started = Instant::now();
    let error = bmc.power_state().await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(error, BmcError::Unreachable { .. }), "{error:?}");
    assert!(elapsed >= bound, "gave up after {elapsed:?}, before {bound:?}");
    assert!(elapsed < bound + Duration::from_secs(1), "took {elapsed:?}");
    // Every attempt reached the socket.
    silent.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    let mut datagrams = 0;
    while silent.recv(&mut buf).is_ok() {
        datagrams += 1;
    }
    assert_eq!(datagrams, 3);
}
