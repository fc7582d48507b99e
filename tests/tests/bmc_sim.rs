//! The BMC simulators against real clients: `ipmitool` and the conductor's `ipmi` and
//! `redfish` drivers; a power-sync sweep over 200 simulated BMCs; and the conductor-wide
//! cap on BMC requests in flight, as the simulators count them.

use std::sync::Arc;
use std::time::Duration;

use ferric_conductor::bmc::ipmi::{IpmiDriver, IpmiOptions};
use ferric_conductor::bmc::limit::RequestLimiter;
use ferric_conductor::bmc::redfish::RedfishDriver;
use ferric_conductor::bmc::{
    BmcError, BootDevice, Driver, DriverRegistry, PowerAction, PowerState as BmcPower,
};
use ferric_conductor::periodic::power_sync::PowerSync;
use ferric_conductor::periodic::Reconciler;
use ferric_conductor::store::{JsonMap, Node, NodeQuery, Store};
use ferric_shared::states::{PowerState, ProvisionState};
use ferric_tests::bmc_sim::ipmi::{IpmiSim, IpmiSimOptions};
use ferric_tests::bmc_sim::redfish::{RedfishSim, RedfishSimOptions};
use serde_json::{json, Value};

fn map(value: Value) -> JsonMap {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn ipmi_info(port: u16, suite: Option<u8>) -> JsonMap {
    let mut info = map(json!({
        "ipmi_address": "127.0.0.1", "ipmi_port": port,
        "ipmi_username": "admin", "ipmi_password": "password",
    }));
    if let Some(suite) = suite {
        info.insert("ipmi_cipher_suite".into(), json!(suite));
    }
    info
}

fn redfish_info(url: &str, id: &str, password: &str) -> JsonMap {
    map(json!({
        "redfish_address": url, "redfish_system_id": id, "redfish_username": "admin",
        "redfish_password": password, "redfish_auth_type": "basic",
    }))
}

fn fast_ipmi() -> IpmiOptions {
    IpmiOptions {
        request_timeout: Duration::from_millis(500),
        retries: 2,
        idle_close: Duration::from_secs(30),
        power_poll_interval: Duration::from_millis(20),
        power_timeout: Duration::from_secs(5),
    }
}

async fn ipmitool(port: u16, suite: &str, password: &str, args: &[&str]) -> (bool, String) {
    let port = port.to_string();
    let output = tokio::process::Command::new("ipmitool")
        .args(["-I", "lanplus", "-C", suite, "-H", "127.0.0.1", "-p", &port, "-U", "admin"])
        .args(["-P", password, "-R", "1", "-N", "2"])
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("ipmitool hung")
        .expect("running ipmitool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn have_ipmitool() -> bool {
    std::process::Command::new("ipmitool")
        .arg("-V")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

#[tokio::test]
async fn ipmitool_reads_and_sets_power_on_the_ipmi_simulator() {
    if !have_ipmitool() {
        println!("skipped: ipmitool is not installed (Debian package ipmitool)");
        return;
    }
    let sim =
        IpmiSim::start(IpmiSimOptions { bmcs: 2, ..IpmiSimOptions::default() }).await.unwrap();
    let port = sim.ports()[1];
    sim.set_power(1, false);

    let (ok, text) = ipmitool(port, "3", "password", &["power", "status"]).await;
    assert!(ok && text.contains("Chassis Power is off"), "{text}");
    let (ok, text) = ipmitool(port, "3", "password", &["power", "on"]).await;
    assert!(ok, "{text}");
    assert_eq!(sim.power(1), Some(true));
    // The other BMC is untouched.
    assert_eq!(sim.power(0), Some(false));
    // Suite 17 (HMAC-SHA256) too, where this ipmitool speaks it.
    let (ok, text) = ipmitool(port, "17", "password", &["power", "status"]).await;
    assert!(ok && text.contains("Chassis Power is on"), "{text}");
    let (ok, text) = ipmitool(port, "3", "password", &["power", "off"]).await;
    assert!(ok, "{text}");
    assert_eq!(sim.power(1), Some(false));
    let (ok, text) = ipmitool(port, "3", "password", &["mc", "info"]).await;
    assert!(ok && text.contains("IPMI Version              : 2.0"), "{text}");

    // A wrong password gets no session; ipmitool closed every session it opened.
    let (ok, text) = ipmitool(port, "3", "wrong", &["power", "on"]).await;
    assert!(!ok, "{text}");
    assert_eq!(sim.power(1), Some(false));
    assert_eq!(sim.open_sessions(1), 0);
    // A session at User level may read but not control the chassis.
    let (ok, text) = ipmitool(port, "3", "password", &["-L", "USER", "power", "on"]).await;
    assert!(!ok || text.contains("Insufficient privilege"), "{text}");
    assert_eq!(sim.power(1), Some(false));
}

#[tokio::test]
async fn the_ipmi_driver_reads_and_sets_power_with_suites_3_and_17() {
    let sim =
        IpmiSim::start(IpmiSimOptions { bmcs: 2, ..IpmiSimOptions::default() }).await.unwrap();
    let driver = IpmiDriver::with_options(fast_ipmi());
    for (index, suite) in [(0usize, 3u8), (1, 17)] {
        let bmc = driver.connect_ipmi("node", &ipmi_info(sim.ports()[index], Some(suite))).unwrap();
        assert_eq!(bmc.cipher_suite().await.unwrap(), suite);
        assert_eq!(bmc.device_id().await.unwrap().ipmi_version, (2, 0));
        let generic = driver.connect("node", &ipmi_info(sim.ports()[index], Some(suite))).unwrap();
        assert_eq!(generic.power_state().await.unwrap(), BmcPower::Off);
        generic.set_power(PowerAction::On, None).await.unwrap();
        assert_eq!(sim.power(index), Some(true), "suite {suite}");
        assert_eq!(generic.power_state().await.unwrap(), BmcPower::On);
        generic.set_power(PowerAction::Off, None).await.unwrap();
        assert_eq!(sim.power(index), Some(false), "suite {suite}");
        assert_eq!(sim.open_sessions(index), 1, "suite {suite}: the session is reused");
    }
    let stats = sim.stats();
    assert_eq!(stats.sessions_opened, 2);
    assert_eq!(stats.max_in_flight_per_bmc, 1);

    // A BMC that only speaks suite 3: auto falls back to it; a fixed 17 is refused.
    let old = IpmiSim::start(IpmiSimOptions { suites: vec![3], ..IpmiSimOptions::default() })
        .await
        .unwrap();
    let bmc = driver.connect_ipmi("old", &ipmi_info(old.ports()[0], None)).unwrap();
    assert_eq!(bmc.cipher_suite().await.unwrap(), 3);
    let bmc = driver.connect_ipmi("old", &ipmi_info(old.ports()[0], Some(17))).unwrap();
    let error = bmc.cipher_suite().await.unwrap_err();
    assert!(matches!(error, BmcError::Unsupported { .. }), "{error:?}");

    // The wrong password is a typed authentication failure.
    let mut info = ipmi_info(sim.ports()[0], Some(3));
    info.insert("ipmi_password".into(), json!("wrong"));
    let error = driver.connect("node", &info).unwrap().power_state().await.unwrap_err();
    assert!(matches!(error, BmcError::AuthFailed { .. }), "{error:?}");
}

#[tokio::test]
async fn the_redfish_driver_reads_and_sets_power_on_the_redfish_simulator() {
    let sim = RedfishSim::start(RedfishSimOptions {
        systems: 4,
        listeners: 2,
        ..RedfishSimOptions::default()
    })
    .await
    .unwrap();
    let driver = RedfishDriver::new();
    let (url, id) = sim.system(3).unwrap();
    let bmc = driver.connect("node", &redfish_info(url, &id, "password")).unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), BmcPower::Off);
    bmc.set_power(PowerAction::On, None).await.unwrap();
    assert_eq!(sim.power(3), Some(true));
    assert_eq!(bmc.power_state().await.unwrap(), BmcPower::On);
    bmc.set_power(PowerAction::Reboot, None).await.unwrap();
    assert_eq!(sim.power(3), Some(true));
    bmc.set_power(PowerAction::Off, None).await.unwrap();
    assert_eq!(sim.power(3), Some(false));
    bmc.set_boot_device(BootDevice::Pxe, false, None).await.unwrap();
    assert_eq!(sim.boot_override(3), Some(("Pxe".to_owned(), "Once".to_owned())));
    let boot = bmc.boot_device().await.unwrap();
    assert_eq!((boot.device, boot.persistent), (Some(BootDevice::Pxe), Some(false)));
    // Systems 1 and 3 share a listener; the other one was not touched.
    assert_eq!(sim.power(1), Some(false));
    assert_eq!(sim.boot_override(1), Some(("None".to_owned(), "Disabled".to_owned())));
    assert_eq!(sim.stats().max_in_flight_per_bmc, 1);

    // A system behind another listener is not found through this one.
    let (other_url, _) = sim.system(0).unwrap();
    let wrong_place = driver.connect("node", &redfish_info(other_url, &id, "password")).unwrap();
    let error = wrong_place.power_state().await.unwrap_err();
    assert!(matches!(error, BmcError::Unsupported { .. }), "{error:?}");
    let denied = driver.connect("node", &redfish_info(url, &id, "wrong")).unwrap();
    let error = denied.power_state().await.unwrap_err();
    assert!(matches!(error, BmcError::AuthFailed { .. }), "{error:?}");
}

#[tokio::test]
async fn a_power_sync_sweep_records_every_bmc_with_one_request_in_flight_each() {
    const BMCS: usize = 200;
    let sim = IpmiSim::start(IpmiSimOptions {
        bmcs: BMCS,
        latency: Duration::from_millis(1),
        ..IpmiSimOptions::default()
    })
    .await
    .unwrap();
    for index in 0..BMCS {
        sim.set_power(index, index % 3 == 0);
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("ferric.db")).await.unwrap();
    for (index, port) in sim.ports().iter().enumerate() {
        let mut node = Node::new("ipmi");
        node.name = Some(format!("bmc-{index}"));
        node.provision_state = ProvisionState::Available;
        node.driver_info = ipmi_info(*port, Some(3));
        store.create_node(&node).await.unwrap();
    }
    let mut registry = DriverRegistry::new();
    registry.register(Arc::new(
        IpmiDriver::with_options(fast_ipmi()).with_limiter(RequestLimiter::new(64)),
    ));
    let sync = PowerSync::new(store.clone(), Arc::new(registry), Duration::from_secs(60), 3)
        .with_concurrency(32);

    let summary = sync.run_once().await.unwrap();
    assert!(summary.starts_with(&format!("{BMCS} nodes checked, {BMCS} changed, 0 failed")));
    for node in store.list_nodes(&NodeQuery::default()).await.unwrap() {
        let index: usize = node.name.as_deref().unwrap()["bmc-".len()..].parse().unwrap();
        let expected = if index % 3 == 0 { PowerState::On } else { PowerState::Off };
        assert_eq!(node.power_state, Some(expected), "node {index}");
    }
    let cold = sim.stats();
    assert_eq!(cold.sessions_opened, BMCS as u64);
    assert_eq!(cold.max_in_flight_per_bmc, 1);
    assert!(cold.max_in_flight_total > 1, "the sweep ran BMCs in parallel: {cold:?}");
    assert!(cold.max_in_flight_total <= 32, "{cold:?}");

    // The second sweep reuses every session and sees what changed.
    sim.reset_stats();
    sim.set_power(1, true);
    let summary = sync.run_once().await.unwrap();
    assert!(summary.starts_with(&format!("{BMCS} nodes checked, 1 changed, 0 failed")));
    let warm = sim.stats();
    assert_eq!((warm.sessions_opened, warm.requests), (0, BMCS as u64));
    assert_eq!(warm.max_in_flight_per_bmc, 1);
    store.close().await;
}

/// Ten callers polling ten BMCs at once; the most requests the simulators saw in flight.
async fn concurrent_polls(drivers: Vec<(Arc<dyn Driver>, JsonMap)>) {
    let mut callers = tokio::task::JoinSet::new();
    for (index, (driver, info)) in drivers.into_iter().enumerate() {
        callers.spawn(async move {
            let bmc = driver.connect(&format!("node-{index}"), &info).unwrap();
            for _ in 0..5 {
                bmc.power_state().await.unwrap();
            }
        });
    }
    while let Some(done) = callers.join_next().await {
        done.unwrap();
    }
}

#[tokio::test]
async fn the_global_cap_bounds_ipmi_requests_in_flight_across_bmcs() {
    for (limit, bound) in [(Some(2), 2), (None, 10)] {
        // Fresh BMCs each time: the sessions of the previous driver close when it goes,
        // and those Close Session requests would count here.
        let sim = IpmiSim::start(IpmiSimOptions {
            bmcs: 10,
            latency: Duration::from_millis(5),
            ..IpmiSimOptions::default()
        })
        .await
        .unwrap();
        let driver = IpmiDriver::with_options(fast_ipmi());
        let driver: Arc<dyn Driver> = match limit {
            Some(limit) => Arc::new(driver.with_limiter(RequestLimiter::new(limit))),
            None => Arc::new(driver),
        };
        let work = sim.ports().iter().map(|p| (Arc::clone(&driver), ipmi_info(*p, Some(17))));
        concurrent_polls(work.collect()).await;
        let stats = sim.stats();
        assert_eq!(stats.max_in_flight_per_bmc, 1, "{limit:?}: {stats:?}");
        match limit {
            // Capped: never more than 2, and the cap was reached.
            Some(_) => assert_eq!(stats.max_in_flight_total, bound, "{stats:?}"),
            // Uncapped, the same load overlaps further: the count can tell.
            None => assert!(stats.max_in_flight_total > 2, "{stats:?}"),
        }
    }
}

#[tokio::test]
async fn the_global_cap_bounds_redfish_requests_in_flight_across_bmcs() {
    let sim = RedfishSim::start(RedfishSimOptions {
        systems: 10,
        listeners: 10,
        latency: Duration::from_millis(5),
        ..RedfishSimOptions::default()
    })
    .await
    .unwrap();
    for limit in [Some(2), None] {
        sim.reset_stats();
        let driver = match limit {
            Some(limit) => RedfishDriver::new().with_limiter(RequestLimiter::new(limit)),
            None => RedfishDriver::new(),
        };
        let driver: Arc<dyn Driver> = Arc::new(driver);
        let work = (0..10).map(|i| {
            let (url, id) = sim.system(i).unwrap();
            (Arc::clone(&driver), redfish_info(url, &id, "password"))
        });
        concurrent_polls(work.collect()).await;
        let stats = sim.stats();
        assert_eq!(stats.max_in_flight_per_bmc, 1, "{limit:?}: {stats:?}");
        match limit {
            Some(_) => assert_eq!(stats.max_in_flight_total, 2, "{stats:?}"),
            None => assert!(stats.max_in_flight_total > 2, "{stats:?}"),
        }
    }
}
