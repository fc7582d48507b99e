//! The `ipmi` driver against pyghmi's BMC server, a second independent IPMI 2.0 stack:
//! power and boot device, checked in the state the pyghmi BMC records.

mod ipmi_support;

use std::time::Duration;

use ferric_conductor::bmc::ipmi::{IpmiDriver, IpmiOptions};
use ferric_conductor::bmc::{Bmc, BootDevice, PowerAction, PowerState};
use ipmi_support::{driver_info, pyghmi_python, PyghmiBmc};
use serde_json::Value;

fn options() -> IpmiOptions {
    IpmiOptions {
        request_timeout: Duration::from_millis(1000),
        retries: 2,
        idle_close: Duration::from_secs(5),
        power_poll_interval: Duration::from_millis(100),
        power_timeout: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn power_and_boot_device_against_pyghmi() {
    if !ipmi_support::skip_unless(&["ipmitool", "timeout", "flock"]) {
        return;
    }
    let Some(python) = pyghmi_python() else { return };
    let peer = PyghmiBmc::start(&python);
    let driver = IpmiDriver::with_options(options());
    let bmc = driver.connect_ipmi("node-1", &driver_info(peer.port)).unwrap();

    // pyghmi negotiates whatever suite it supports; the session must work either way.
    let suite = bmc.cipher_suite().await.unwrap();
    assert!(suite == 3 || suite == 17, "{suite}");

    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    bmc.set_power(PowerAction::On, None).await.unwrap();
    assert_eq!(peer.state()["power"], "on");
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    bmc.set_power(PowerAction::Reboot, None).await.unwrap();
    assert_eq!(peer.state()["resets"], 1);
    bmc.set_power(PowerAction::Off, None).await.unwrap();
    assert_eq!(peer.state()["power"], "off");

    // pyghmi names the devices it was given: network, hd, optical, setup.
    let table = [
        (BootDevice::Pxe, "network"),
        (BootDevice::Disk, "hd"),
        (BootDevice::Cdrom, "optical"),
        (BootDevice::Bios, "setup"),
    ];
    for (device, name) in table {
        bmc.set_boot_device(device, true, None).await.unwrap();
        assert_eq!(peer.state()["bootdev"], Value::from(name), "{device:?}");
        let read = bmc.boot_device().await.unwrap();
        assert_eq!(read.device, Some(device), "{name}");
    }
}
