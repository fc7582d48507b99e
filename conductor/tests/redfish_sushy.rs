//! The `redfish` driver against a real Redfish implementation: `sushy-emulator --fake`
//! (sushy-tools) with basic authentication on a free loopback port.
//!
//! The emulator applies power changes after a random 1–11 s delay, so every power test
//! depends on the driver polling until the change lands.

#[path = "redfish_support/sushy.rs"]
mod sushy;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferric_conductor::bmc::oob_steps::OobStep;
use ferric_conductor::bmc::redfish::{
    BootMode, BootTarget, RedfishBmc, RedfishDriver, RedfishOptions,
};
use ferric_conductor::bmc::{
    Bmc, BmcError, BootDevice, Driver, DriverRegistry, PowerAction, PowerState,
};
use ferric_conductor::config::ConductorConfig;
use serde_json::{json, Map, Value};
use sushy::{FakeSystem, Sushy};

const USER: &str = "admin";
const PASSWORD: &str = "redfish-pass";

fn options() -> RedfishOptions {
    RedfishOptions {
        request_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(2),
        // The emulator's delay is at most 11 s.
        power_timeout: Duration::from_secs(30),
        soft_power_off_timeout: Duration::from_secs(30),
        poll_interval: Duration::from_millis(200),
        transient_retries: 1,
        backoff: Duration::from_millis(100),
        ..RedfishOptions::default()
    }
}

fn system(uuid: &str, name: &str, power_on: bool) -> FakeSystem {
    FakeSystem { uuid: uuid.to_owned(), name: name.to_owned(), power_on }
}

fn info(address: &str, extra: Value) -> Map<String, Value> {
    let mut info = json!({
        "redfish_address": address,
        "redfish_username": USER,
        "redfish_password": PASSWORD,
    })
    .as_object()
    .unwrap()
    .clone();
    info.extend(extra.as_object().unwrap().clone());
    info
}

/// The emulator with one system (off), and a handle to it with `redfish_system_id` unset.
fn one_system(test: &str) -> Option<(Sushy, RedfishBmc)> {
    let bin = sushy::venv_or_skip(test)?;
    let sushy = Sushy::start(
        &bin,
        &[system("8fd2b3c6-3a44-4bd0-9a57-7c6b0a1b2c3d", "node-0", false)],
        USER,
        PASSWORD,
    );
    let driver = RedfishDriver::with_options(options());
    let bmc = driver.connect_redfish("node-0", &info(&sushy.address(), json!({}))).unwrap();
    Some((sushy, bmc))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_on_off_reboot_and_soft_off_land() {
    let Some((sushy, bmc)) = one_system("power_on_off_reboot_and_soft_off_land") else {
        return;
    };
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    let steps = [
        (PowerAction::On, PowerState::On),
        (PowerAction::Reboot, PowerState::On),
        (PowerAction::Off, PowerState::Off),
        // Reboot of a node that is off powers it on.
        (PowerAction::Reboot, PowerState::On),
        (PowerAction::SoftOff, PowerState::Off),
    ];
    for (action, landed) in steps {
        bmc.set_power(action, None).await.unwrap_or_else(|e| {
            panic!("{action:?}: {e}\nemulator log:\n{}", sushy.log());
        });
        assert_eq!(bmc.power_state().await.unwrap(), landed, "after {action:?}");
    }
    // The emulator saw the reset types the driver chose.
    let log = sushy.log();
    for reset in ["\"On\"", "\"ForceRestart\"", "\"ForceOff\"", "\"GracefulShutdown\""] {
        assert!(log.contains(&format!("power state set to {reset}")), "{reset} not in\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_override_set_and_read_back() {
    let Some((_sushy, bmc)) = one_system("boot_override_set_and_read_back") else { return };
    for device in [BootDevice::Pxe, BootDevice::Cdrom, BootDevice::Disk] {
        bmc.set_boot_device(device, true, None).await.unwrap();
        let read = bmc.boot_device().await.unwrap();
        assert_eq!(read.device, Some(device));
        // The emulator reports every override as continuous.
        assert_eq!(read.persistent, Some(true));
    }
    // The emulator does not list BiosSetup among the targets it allows.
    let err = bmc.set_boot_device(BootDevice::Bios, false, None).await.unwrap_err();
    assert!(
        matches!(err, BmcError::Unsupported { ref what } if what.contains("BiosSetup")),
        "{err}"
    );
    let err = bmc.set_boot_device(BootDevice::Safe, false, None).await.unwrap_err();
    assert!(matches!(err, BmcError::Unsupported { .. }), "{err}");

    bmc.set_boot_override(BootTarget::Pxe, false, Some(BootMode::Legacy)).await.unwrap();
    let read = bmc.boot_override().await.unwrap();
    assert_eq!(read.target.as_deref(), Some("Pxe"));
    assert_eq!(read.mode.as_deref(), Some("Legacy"));
    bmc.set_boot_override(BootTarget::Hdd, true, Some(BootMode::Uefi)).await.unwrap();
    let read = bmc.boot_override().await.unwrap();
    assert_eq!(read.target.as_deref(), Some("Hdd"));
    assert_eq!(read.mode.as_deref(), Some("UEFI"));

    // Through the Bmc trait: the node's boot mode goes with the device; none leaves it.
    let table = [
        (BootDevice::Pxe, Some(ferric_conductor::bmc::BootMode::Bios), "Pxe", "Legacy"),
        (BootDevice::Disk, None, "Hdd", "Legacy"),
        (BootDevice::Cdrom, Some(ferric_conductor::bmc::BootMode::Uefi), "Cd", "UEFI"),
        (BootDevice::Pxe, None, "Pxe", "UEFI"),
    ];
    for (device, mode, target, reported) in table {
        Bmc::set_boot_device(&bmc, device, false, mode).await.unwrap();
        let read = bmc.boot_override().await.unwrap();
        assert_eq!(read.target.as_deref(), Some(target), "{device:?} {mode:?}");
        assert_eq!(read.mode.as_deref(), Some(reported), "{device:?} {mode:?}");
    }
}

/// Serves a small "ISO" for the emulator to download on insert.
async fn image_server() -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/boot.iso", axum::routing::get(|| async { vec![0x42u8; 64 * 1024] }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://127.0.0.1:{port}/boot.iso"), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_media_insert_boot_and_eject_read_back() {
    let Some((sushy, bmc)) = one_system("virtual_media_insert_boot_and_eject_read_back") else {
        return;
    };
    let (url, server) = image_server().await;
    let before = bmc.virtual_media().await.unwrap();
    assert!(!before.inserted, "{before:?}");
    assert!(before.device.ends_with("/VirtualMedia/Cd"), "{before:?}");

    bmc.boot_from_virtual_media(&url)
        .await
        .unwrap_or_else(|e| panic!("{e}\nemulator log:\n{}", sushy.log()));
    let inserted = bmc.virtual_media().await.unwrap();
    assert!(inserted.inserted, "{inserted:?}");
    assert_eq!(inserted.image.as_deref(), Some(url.as_str()));
    assert_eq!(bmc.boot_device().await.unwrap().device, Some(BootDevice::Cdrom));

    // Inserting again replaces the media (eject first).
    bmc.insert_virtual_media(&url).await.unwrap();
    assert!(bmc.virtual_media().await.unwrap().inserted);

    bmc.eject_virtual_media().await.unwrap();
    let ejected = bmc.virtual_media().await.unwrap();
    assert!(!ejected.inserted, "{ejected:?}");
    // Ejecting an empty device is not an error.
    bmc.eject_virtual_media().await.unwrap();
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_auth_failed_for_every_auth_type() {
    let Some(bin) = sushy::venv_or_skip("wrong_password_is_auth_failed_for_every_auth_type") else {
        return;
    };
    let sushy = Sushy::start(&bin, &[system("1b0e7c8a-1", "n", false)], USER, PASSWORD);
    let driver = RedfishDriver::with_options(options());
    for auth in ["basic", "session", "auto"] {
        let mut info = info(&sushy.address(), json!({ "redfish_auth_type": auth }));
        info.insert("redfish_password".into(), json!("wrong"));
        let bmc = driver.connect("n", &info).unwrap();
        let err = bmc.power_state().await.unwrap_err();
        assert!(matches!(err, BmcError::AuthFailed { .. }), "{auth}: {err}");
        assert!(!err.is_transient());
    }
    // The right password works with basic and with auto (the emulator has no sessions).
    for auth in ["basic", "auto"] {
        let bmc = driver
            .connect("n", &info(&sushy.address(), json!({ "redfish_auth_type": auth })))
            .unwrap();
        assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off, "{auth}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_systems_need_a_system_id() {
    let Some(bin) = sushy::venv_or_skip("several_systems_need_a_system_id") else { return };
    let sushy = Sushy::start(
        &bin,
        &[system("aaaaaaaa-0001", "alpha", true), system("bbbbbbbb-0002", "beta", false)],
        USER,
        PASSWORD,
    );
    let driver = Arc::new(RedfishDriver::with_options(options()));
    let bmc = driver.connect("n", &info(&sushy.address(), json!({}))).unwrap();
    let err = bmc.power_state().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("2 systems")
            && text.contains("/redfish/v1/Systems/aaaaaaaa-0001")
            && text.contains("/redfish/v1/Systems/bbbbbbbb-0002")
            && text.contains("redfish_system_id"),
        "{text}"
    );
    for (id, power) in
        [("aaaaaaaa-0001", PowerState::On), ("/redfish/v1/Systems/bbbbbbbb-0002", PowerState::Off)]
    {
        let bmc = driver
            .connect("n", &info(&sushy.address(), json!({ "redfish_system_id": id })))
            .unwrap();
        assert_eq!(bmc.power_state().await.unwrap(), power, "{id}");
    }
}

#[tokio::test]
async fn nothing_listening_is_unreachable_within_the_bound() {
    let port = sushy::free_port();
    let driver = RedfishDriver::with_options(options());
    let bmc = driver
        .connect("n", &info(&format!("http://127.0.0.1:{port}"), json!({"redfish_system_id": "1"})))
        .unwrap();
    let started = Instant::now();
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, BmcError::Unreachable { .. }), "{err}");
    assert!(err.is_transient());
    // One retry after 100 ms of backoff, each attempt refused at once.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(100) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_band_inspection_and_secure_boot() {
    let Some((sushy, bmc)) = one_system("out_of_band_inspection_and_secure_boot") else {
        return;
    };
    let found = bmc.inspect().await.unwrap_or_else(|e| panic!("{e}\n{}", sushy.log()));
    let inventory = &found.inventory;
    assert_eq!(inventory.mac_addresses(), ["52:54:00:12:34:56"]);
    assert_eq!(inventory.system_vendor.manufacturer, "Sushy Emulator");
    assert_eq!(
        inventory.boot.current_boot_mode,
        ferric_shared::inventory::BootMode::Uefi,
        "the emulator's systems boot in UEFI mode"
    );
    assert_eq!(found.secure_boot, Some(false));

    bmc.set_secure_boot(true).await.unwrap();
    assert_eq!(bmc.inspect().await.unwrap().secure_boot, Some(true));
    bmc.set_secure_boot(false).await.unwrap();
    assert_eq!(bmc.inspect().await.unwrap().secure_boot, Some(false));
    // The same, as the conductor runs it: an out-of-band clean step.
    Bmc::run_oob_step(&bmc, OobStep::SetSecureBoot { enable: true }).await.unwrap();
    assert_eq!(bmc.inspect().await.unwrap().secure_boot, Some(true));

    // The fake systems have no BIOS resource.
    let err = bmc.reset_bios_to_default().await.unwrap_err();
    assert!(matches!(err, BmcError::Unsupported { .. }), "{err}");
    let err = Bmc::run_oob_step(&bmc, OobStep::ResetBiosToDefault).await.unwrap_err();
    assert!(matches!(err, BmcError::Unsupported { .. }), "{err}");
}

/// Polls the conductor until the node is in `state` with no task holding it.
async fn wait_provision_state(
    http: &reqwest::Client,
    url: &str,
    uuid: &str,
    state: &str,
    sushy: &Sushy,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let node: Value = http
            .get(format!("{url}/v1/nodes/{uuid}"))
            .header("X-OpenStack-Ironic-API-Version", "1.110")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if node["provision_state"] == state && node["reservation"].is_null() {
            return node;
        }
        assert!(
            Instant::now() < deadline,
            "node never reached {state:?}: {node:#}\nemulator log:\n{}",
            sushy.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The conductor boots a `redfish-virtual-media` node: the emulator fetches the deploy
/// ISO from the conductor's image URL and reports it inserted, with a one-time CD boot;
/// when cleaning is aborted the node is powered off and the ISO ejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conductor_boots_the_deploy_iso_over_virtual_media() {
    let Some((sushy, bmc)) = one_system("conductor_boots_the_deploy_iso_over_virtual_media") else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data = tempfile::tempdir().unwrap();
    let image_dir = data.path().join("images");
    std::fs::create_dir_all(&image_dir).unwrap();
    std::fs::write(image_dir.join("deploy.iso"), vec![0x17u8; 256 * 1024]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}");
    let mut config = ConductorConfig {
        data_dir: data.path().to_owned(),
        listen: addr,
        image_dir: Some(image_dir),
        ..ConductorConfig::default()
    };
    config.conductor.name = "vmedia-conductor".into();
    let mut drivers = DriverRegistry::new();
    drivers.register(Arc::new(RedfishDriver::with_options(options())));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(async move {
        ferric_conductor::service::run_on(config, listener, drivers, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });

    let http = reqwest::Client::new();
    let api = |method: reqwest::Method, path: String, body: Value| {
        http.request(method, format!("{url}{path}"))
            .header("X-OpenStack-Ironic-API-Version", "1.110")
            .json(&body)
            .send()
    };
    let mut driver_info = info(&sushy.address(), json!({"deploy_iso": "deploy.iso"}));
    driver_info.insert("redfish_auth_type".into(), json!("basic"));
    let reply = api(
        reqwest::Method::POST,
        "/v1/nodes".into(),
        json!({"driver": "redfish", "boot_interface": "redfish-virtual-media",
               "driver_info": driver_info,
               "properties": {"capabilities": "boot_mode:bios"}}),
    )
    .await
    .unwrap();
    assert_eq!(reply.status().as_u16(), 201);
    let node: Value = reply.json().await.unwrap();
    let uuid = node["uuid"].as_str().unwrap().to_owned();
    let provision = |target: &'static str| {
        api(
            reqwest::Method::PUT,
            format!("/v1/nodes/{uuid}/states/provision"),
            json!({"target": target}),
        )
    };
    assert_eq!(provision("manage").await.unwrap().status().as_u16(), 202);
    wait_provision_state(&http, &url, &uuid, "manageable", &sushy).await;
    assert_eq!(provision("provide").await.unwrap().status().as_u16(), 202);
    let node = wait_provision_state(&http, &url, &uuid, "clean wait", &sushy).await;
    assert_eq!(node["power_state"], json!("power on"), "{node:#}");
    assert_eq!(node["driver_internal_info"]["boot_device"], json!("cdrom"));

    let media = bmc.virtual_media().await.unwrap();
    assert!(media.inserted, "{media:?}");
    assert_eq!(media.image.as_deref(), Some(format!("{url}/images/deploy.iso").as_str()));
    let boot = bmc.boot_override().await.unwrap();
    assert_eq!(boot.target.as_deref(), Some("Cd"));
    // The node's capability, not the emulator's UEFI default.
    assert_eq!(boot.mode.as_deref(), Some("Legacy"));
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);

    assert_eq!(provision("abort").await.unwrap().status().as_u16(), 202);
    wait_provision_state(&http, &url, &uuid, "clean failed", &sushy).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while bmc.virtual_media().await.unwrap().inserted
        || bmc.power_state().await.unwrap() != PowerState::Off
    {
        assert!(Instant::now() < deadline, "not off and ejected:\n{}", sushy.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.send(()).unwrap();
    service.await.unwrap();
}

/// `inspect_interface: redfish` through the conductor: `inspect` reads the system from
/// the BMC, the processing hooks turn it into properties and a port per NIC, and the node
/// returns to `manageable` without being booted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_band_inspection_through_the_conductor() {
    let Some((sushy, bmc)) = one_system("out_of_band_inspection_through_the_conductor") else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reported = bmc.inspect().await.unwrap_or_else(|e| panic!("{e}\n{}", sushy.log()));
    let mut drivers = DriverRegistry::new();
    drivers.register(Arc::new(RedfishDriver::with_options(options())));
    let data = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = ConductorConfig {
        data_dir: data.path().to_owned(),
        listen: listener.local_addr().unwrap(),
        ..ConductorConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(async move {
        ferric_conductor::service::run_on(config, listener, drivers, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let mut request = http
            .request(method, format!("{url}{path}"))
            .header("X-OpenStack-Ironic-API-Version", "1.110");
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let reply = request.send().await.unwrap();
            let status = reply.status().as_u16();
            (status, reply.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, node) = call(
        reqwest::Method::POST,
        "/v1/nodes".into(),
        Some(json!({"driver": "redfish", "inspect_interface": "redfish",
            "driver_info": info(&sushy.address(), json!({}))})),
    )
    .await;
    assert_eq!(status, 201, "{node}");
    let uuid = node["uuid"].as_str().unwrap().to_owned();
    let wait_for = |state: &'static str| {
        let call = &call;
        let uuid = uuid.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let (_, node) = call(reqwest::Method::GET, format!("/v1/nodes/{uuid}"), None).await;
                if node["provision_state"] == state && node["reservation"].is_null() {
                    return node;
                }
                assert!(Instant::now() < deadline, "never {state}: {node:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let provision = |target: &'static str| {
        call(
            reqwest::Method::PUT,
            format!("/v1/nodes/{uuid}/states/provision"),
            Some(json!({"target": target})),
        )
    };
    assert_eq!(provision("manage").await.0, 202);
    wait_for("manageable").await;
    assert_eq!(provision("inspect").await.0, 202);
    let node = wait_for("manageable").await;

    let properties = &node["properties"];
    // What the BMC left out (the emulator reports no processor count) stays unset.
    let cpu = &reported.inventory.cpu;
    let cpus = if cpu.count > 0 { json!(cpu.count) } else { Value::Null };
    let arch = if cpu.architecture.is_empty() { Value::Null } else { json!(cpu.architecture) };
    assert_eq!((&properties["cpus"], &properties["cpu_arch"]), (&cpus, &arch), "{node:#}");
    let disk_gb = reported.inventory.disks.iter().map(|d| d.size >> 30).filter(|g| *g >= 4).min();
    assert_eq!(properties["local_gb"], json!(disk_gb.map_or(0, |g| g - 1)), "{node:#}");
    assert!(node["inspection_finished_at"].is_string(), "{node:#}");
    assert!(
        properties["capabilities"].as_str().unwrap_or("").contains("boot_mode:uefi"),
        "{node:#}"
    );
    let (_, ports) =
        call(reqwest::Method::GET, format!("/v1/nodes/{uuid}/ports/detail"), None).await;
    let macs: Vec<&str> =
        ports["ports"].as_array().unwrap().iter().map(|p| p["address"].as_str().unwrap()).collect();
    assert_eq!(macs, reported.inventory.mac_addresses(), "a port per NIC the BMC reports");
    let (status, stored) =
        call(reqwest::Method::GET, format!("/v1/nodes/{uuid}/inventory"), None).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["plugin_data"]["inspected_by"], "redfish", "{stored:#}");
    // Never booted: the emulator's system is still off.
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    stop.send(()).unwrap();
    service.await.unwrap();
}
