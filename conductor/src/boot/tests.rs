use axum::body::Body;
use axum::http::Request;
use serde_json::json;
use tower::ServiceExt;

use super::*;

const UUID: &str = "6f1c2d4e-8a9b-4c0d-9e1f-223344556677";
const MAC: MacAddress = MacAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

fn config() -> BootConfig {
    BootConfig {
        api_url: "http://10.0.2.100:6385".to_owned(),
        http_url: "http://10.0.2.100:8080/".to_owned(),
        deploy_kernel: Some("ferric.kernel".to_owned()),
        deploy_ramdisk: Some("ferric.initramfs".to_owned()),
        kernel_append_params: "nofb vga=normal".to_owned(),
        inspection_kernel_params: "ipa-collect-lldp=1".to_owned(),
    }
}

fn params(state: ProvisionState, driver_info: Value) -> BootParams {
    let Value::Object(driver_info) = driver_info else { panic!("not an object") };
    BootParams {
        node_uuid: UUID.to_owned(),
        provision_state: state,
        boot_device: Some(BootDevice::Pxe),
        driver_info,
    }
}

#[test]
fn mac_parsing_table() {
    let good = [
        ("52:54:00:12:34:56", MAC),
        ("52-54-00-12-34-56", MAC),
        ("AA:bb:CC:dd:EE:ff", MacAddress([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])),
    ];
    for (text, mac) in good {
        assert_eq!(text.parse::<MacAddress>(), Ok(mac), "{text}");
    }
    let bad = [
        "",
        "52:54:00:12:34",
        "52:54:00:12:34:56:78",
        "52:54-00:12:34:56",
        "525400123456",
        "52:54:00:12:34:5",
        "52:54:00:12:34:567",
        "52:54:00:12:34:5g",
        "52:54:00:12:34:+5",
        "52.54.00.12.34.56",
        "52:54:00:12:34:56:",
        "../../etc/passwd",
    ];
    for text in bad {
        let err = text.parse::<MacAddress>().unwrap_err();
        assert_eq!(err, InvalidMac(text.to_owned()));
    }
    assert_eq!(MAC.to_string(), "52:54:00:12:34:56");
    assert_eq!(MAC.hexhyp(), "52-54-00-12-34-56");
}

#[test]
fn chain_script_golden() {
    let expected = "#!ipxe
# Ferric: load this machine's own script, named after the MAC it booted from.
chain http://10.0.2.100:8080/boot/${mac:hexhyp}.ipxe || goto failed
exit
:failed
echo Ferric: no boot script for ${mac}, trying the next boot device in 10 seconds
sleep 10
exit
";
    assert_eq!(chain_script("http://10.0.2.100:8080/").unwrap(), expected);
    assert_eq!(chain_script("http://10.0.2.100:8080").unwrap(), expected);
    assert!(chain_script("http://h/$x").is_err());
    assert!(chain_script("tftp://h/").is_err());
}

#[test]
fn deploy_script_golden_with_defaults() {
    let script = script_for_node(&params(ProvisionState::CleanWait, json!({})), &config());
    let expected = "#!ipxe
# Ferric: deploy ramdisk of node 6f1c2d4e-8a9b-4c0d-9e1f-223344556677.
:deploy
imgfree
kernel http://10.0.2.100:8080/images/ferric.kernel ipa-api-url=http://10.0.2.100:6385 nofb vga=normal BOOTIF=${mac} initrd=ramdisk || goto retry
initrd --name ramdisk http://10.0.2.100:8080/images/ferric.initramfs || goto retry
boot
:retry
echo Ferric: loading the deploy kernel or ramdisk failed, retrying in 10 seconds
sleep 10
goto deploy
";
    assert_eq!(script, expected);
}

#[test]
fn deploy_script_golden_with_driver_info() {
    let info = json!({
        "deploy_kernel": "https://images.example/k?sig=a&exp=1",
        "deploy_ramdisk": "my-ramdisk.img",
        "kernel_append_params": "  console=ttyS0,115200n8\tipa-debug=1  ",
        "ipmi_address": "10.0.0.1",
    });
    let script = script_for_node(&params(ProvisionState::DeployWait, info), &config());
    let expected = "#!ipxe
# Ferric: deploy ramdisk of node 6f1c2d4e-8a9b-4c0d-9e1f-223344556677.
:deploy
imgfree
kernel https://images.example/k?sig=a&exp=1 ipa-api-url=http://10.0.2.100:6385 console=ttyS0,115200n8 ipa-debug=1 BOOTIF=${mac} initrd=ramdisk || goto retry
initrd --name ramdisk http://10.0.2.100:8080/images/my-ramdisk.img || goto retry
boot
:retry
echo Ferric: loading the deploy kernel or ramdisk failed, retrying in 10 seconds
sleep 10
goto deploy
";
    assert_eq!(script, expected);
}

#[test]
fn empty_kernel_append_params_adds_nothing() {
    let boot =
        plan(&params(ProvisionState::Cleaning, json!({"kernel_append_params": ""})), &config())
            .unwrap();
    let NodeBoot::Ramdisk { kernel_params, .. } = boot else { panic!("{boot:?}") };
    assert_eq!(kernel_params, ["ipa-api-url=http://10.0.2.100:6385"]);
}

#[test]
fn local_boot_golden_for_active_or_disk() {
    let expected = "#!ipxe
# Ferric: node 6f1c2d4e-8a9b-4c0d-9e1f-223344556677 boots from its local disk.
iseq ${platform} efi && goto efi || goto bios
:bios
sanboot --no-describe --drive 0x80 || goto efi
:efi
exit
";
    let active = params(ProvisionState::Active, json!({}));
    assert_eq!(script_for_node(&active, &config()), expected);
    let mut disk = params(ProvisionState::Deploying, json!({}));
    disk.boot_device = Some(BootDevice::Disk);
    assert_eq!(script_for_node(&disk, &config()), expected);
    // An active node needs no deploy images at all.
    let bare = BootConfig { deploy_kernel: None, deploy_ramdisk: None, ..config() };
    assert_eq!(plan(&active, &bare), Ok(NodeBoot::LocalDisk));
}

#[test]
fn ramdisk_for_non_active_states_and_other_devices() {
    for (state, device) in [
        (ProvisionState::CleanWait, Some(BootDevice::Pxe)),
        (ProvisionState::DeployWait, None),
        (ProvisionState::Available, Some(BootDevice::Pxe)),
        (ProvisionState::Inspecting, Some(BootDevice::Cdrom)),
    ] {
        let mut p = params(state, json!({}));
        p.boot_device = device;
        assert!(
            matches!(plan(&p, &config()), Ok(NodeBoot::Ramdisk { .. })),
            "{state:?} {device:?}"
        );
    }
}

#[test]
fn refused_values_table() {
    let cases: &[(Value, BootScriptError)] = &[
        (
            json!({"kernel_append_params": "a=1\nchain http://evil/x"}),
            BootScriptError::UnsafeValue {
                field: "kernel_append_params",
                what: "a line break or control character",
            },
        ),
        (
            json!({"kernel_append_params": "x=${net0/ip}"}),
            BootScriptError::UnsafeValue { field: "kernel_append_params", what: "'$'" },
        ),
        (
            json!({"kernel_append_params": "a || shell"}),
            BootScriptError::UnsafeValue { field: "kernel_append_params", what: "'|'" },
        ),
        (
            json!({"kernel_append_params": "a && shell"}),
            BootScriptError::UnsafeValue { field: "kernel_append_params", what: "'&&'" },
        ),
        (
            json!({"kernel_append_params": "a=\"b c\""}),
            BootScriptError::UnsafeValue { field: "kernel_append_params", what: "a quote" },
        ),
        (
            json!({"kernel_append_params": "#comment"}),
            BootScriptError::UnsafeValue { field: "kernel_append_params", what: "'#'" },
        ),
        (
            json!({"kernel_append_params": "caf\u{e9}"}),
            BootScriptError::UnsafeValue {
                field: "kernel_append_params",
                what: "a non-ASCII character",
            },
        ),
        (
            json!({"kernel_append_params": 5}),
            BootScriptError::NotAString { key: "kernel_append_params" },
        ),
        (
            json!({"deploy_kernel": "http://h/k x"}),
            BootScriptError::UnsafeValue { field: "deploy_kernel", what: "a space" },
        ),
        (
            json!({"deploy_kernel": "ftp://h/k"}),
            BootScriptError::UnsupportedScheme { key: "deploy_kernel" },
        ),
        (
            json!({"deploy_ramdisk": "../etc/shadow"}),
            BootScriptError::BadImageName {
                key: "deploy_ramdisk",
                source: images::ImageNameError::Separator("../etc/shadow".to_owned()),
            },
        ),
        (
            json!({"deploy_ramdisk": "ram$disk"}),
            BootScriptError::UnsafeValue { field: "deploy_ramdisk", what: "'$'" },
        ),
        (json!({"deploy_ramdisk": 7}), BootScriptError::NotAString { key: "deploy_ramdisk" }),
    ];
    for (info, expected) in cases {
        let result = plan(&params(ProvisionState::CleanWait, info.clone()), &config());
        assert_eq!(result.as_ref(), Err(expected), "{info}");
    }
}

#[test]
fn missing_images_without_defaults() {
    let bare = BootConfig { deploy_kernel: None, deploy_ramdisk: None, ..config() };
    let p = params(ProvisionState::CleanWait, json!({}));
    assert_eq!(plan(&p, &bare), Err(BootScriptError::MissingDeployImage { key: "deploy_kernel" }));
    let p =
        params(ProvisionState::CleanWait, json!({"deploy_kernel": "k", "deploy_ramdisk": null}));
    assert_eq!(plan(&p, &bare), Err(BootScriptError::MissingDeployImage { key: "deploy_ramdisk" }));
    let bad_api = BootConfig { api_url: "http://h:6385/$x".to_owned(), ..config() };
    let p = params(ProvisionState::CleanWait, json!({}));
    assert_eq!(
        plan(&p, &bad_api),
        Err(BootScriptError::UnsafeValue { field: "api_url", what: "'$'" })
    );
}

#[test]
fn refused_script_golden_and_never_carries_the_value() {
    let p = params(
        ProvisionState::CleanWait,
        json!({"kernel_append_params": "a\nchain http://evil/${x}"}),
    );
    let expected = "#!ipxe
echo Ferric: node 6f1c2d4e-8a9b-4c0d-9e1f-223344556677 cannot boot: kernel_append_params contains a line break or control character, which an iPXE script cannot carry safely
echo Ferric: fix the node, then power cycle it. Trying the next boot device in 10 seconds
sleep 10
exit
";
    assert_eq!(script_for_node(&p, &config()), expected);

    // Even a hostile node name cannot add a line or expand a setting.
    let mut evil = p.clone();
    evil.node_uuid = "x\nshell ${y}".to_owned();
    let script = script_for_node(&evil, &config());
    assert!(script.contains("node x_shell __y_ cannot boot"), "{script}");
    assert_eq!(script.lines().count(), 5);
}

#[test]
fn unknown_and_retry_scripts_golden() {
    assert_eq!(
        unknown_mac_script(&MAC),
        "#!ipxe
echo Ferric: no node has a port with MAC 52:54:00:12:34:56, trying the next boot device in 10 seconds
sleep 10
exit
"
    );
    assert_eq!(
        retry_script(&MAC, "http://10.0.2.100:8080/"),
        "#!ipxe
echo Ferric: the conductor could not look up MAC 52:54:00:12:34:56, retrying in 10 seconds
sleep 10
chain http://10.0.2.100:8080/boot/52-54-00-12-34-56.ipxe
"
    );
}

#[test]
fn kernel_append_params_check_splits_words() {
    assert_eq!(check_kernel_append_params(" a=1  b\tc ").unwrap(), ["a=1", "b", "c"]);
    assert_eq!(check_kernel_append_params("").unwrap(), Vec::<&str>::new());
    assert!(check_kernel_append_params("a\r\nb").is_err());
}

/// A store answering one node for `MAC`, failing for 02:…, unknown otherwise.
struct OneNode(BootParams);

#[async_trait::async_trait]
impl BootParamsSource for OneNode {
    async fn boot_params(&self, mac: &MacAddress) -> Result<Option<BootParams>, BootLookupError> {
        if *mac == MAC {
            Ok(Some(self.0.clone()))
        } else if mac.0[0] == 0x02 {
            Err(BootLookupError("database is locked".to_owned()))
        } else {
            Ok(None)
        }
    }
}

async fn get(router: Router, uri: &str) -> (StatusCode, String, String) {
    let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, content_type, String::from_utf8(body.to_vec()).unwrap())
}

fn test_router() -> Router {
    let node = params(ProvisionState::CleanWait, json!({}));
    router(config(), Arc::new(OneNode(node)))
}

#[tokio::test]
async fn router_serves_chain_and_node_scripts() {
    let (status, content_type, body) = get(test_router(), "/boot.ipxe").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/plain; charset=utf-8");
    assert_eq!(body, chain_script("http://10.0.2.100:8080").unwrap());

    let expected = script_for_node(&params(ProvisionState::CleanWait, json!({})), &config());
    for uri in [
        "/boot/52-54-00-12-34-56.ipxe",
        "/boot/52:54:00:12:34:56.ipxe",
        "/boot/52%3A54%3A00%3A12%3A34%3A56.ipxe",
    ] {
        let (status, _, body) = get(test_router(), uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(body, expected, "{uri}");
    }
}

#[tokio::test]
async fn router_unknown_and_failed_lookups_are_scripts() {
    let (status, _, body) = get(test_router(), "/boot/aa-bb-cc-dd-ee-ff.ipxe").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, unknown_mac_script(&"aa:bb:cc:dd:ee:ff".parse().unwrap()));

    let (status, _, body) = get(test_router(), "/boot/02-00-00-00-00-01.ipxe").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, retry_script(&"02:00:00:00:00:01".parse().unwrap(), "http://10.0.2.100:8080"));
}

#[tokio::test]
async fn router_rejects_bad_paths_with_400() {
    for uri in [
        "/boot/52-54-00-12-34.ipxe",
        "/boot/52-54-00-12-34-56",
        "/boot/52-54-00-12-34-56.cfg",
        "/boot/zz-54-00-12-34-56.ipxe",
        "/boot/%24%7Bmac%7D.ipxe",
        "/boot/..%2F..%2Fetc.ipxe",
    ] {
        let (status, _, body) = get(test_router(), uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(!body.starts_with("#!ipxe"), "{uri}");
    }
}

#[tokio::test]
async fn router_with_fn_source_and_refused_node() {
    let source = FnSource(|mac: &MacAddress| {
        (*mac == MAC)
            .then(|| params(ProvisionState::CleanWait, json!({"kernel_append_params": "a|b"})))
    });
    let router = router(config(), Arc::new(source));
    let (status, _, body) = get(router, "/boot/52-54-00-12-34-56.ipxe").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("#!ipxe\necho Ferric: node "), "{body}");
    assert!(body.contains("kernel_append_params contains ___, which"), "{body}");
    assert!(!body.contains("a|b"), "{body}");
}

#[test]
fn boot_interfaces_have_ironics_names_and_ipxe_is_the_default() {
    let table = [
        (None, Ok(BootInterface::Ipxe)),
        (Some(""), Ok(BootInterface::Ipxe)),
        (Some("ipxe"), Ok(BootInterface::Ipxe)),
        (Some("pxe"), Ok(BootInterface::Pxe)),
        (Some("redfish-virtual-media"), Ok(BootInterface::RedfishVirtualMedia)),
        (Some("fake"), Ok(BootInterface::Fake)),
        (Some("redfish_virtual_media"), Err(())),
        (Some("IPXE"), Err(())),
    ];
    for (name, want) in table {
        let got = BootInterface::of_node(name);
        assert_eq!(got.clone().map_err(|_| ()), want, "{name:?}");
        if let Ok(interface) = got {
            if name.is_some_and(|n| !n.is_empty()) {
                assert_eq!(Some(interface.as_str()), name);
            }
        }
    }
    let err = BootInterface::of_node(Some("http")).unwrap_err().to_string();
    assert_eq!(
        err,
        "Could not find the following interface in the 'ironic.hardware.interfaces.boot' \
         entrypoint: http. Valid interfaces are ['fake', 'ipxe', 'pxe', \
         'redfish-virtual-media']."
    );
}

#[test]
fn deploy_iso_is_a_url_or_a_served_file_and_every_problem_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("deploy.iso"), b"iso").unwrap();
    std::fs::create_dir(dir.path().join("folder")).unwrap();
    let base = "http://192.0.2.1:6385/";
    let iso = |info: Value, default: Option<&str>| {
        let info = info.as_object().unwrap().clone();
        virtual_media_iso("redfish", true, &info, default, base, dir.path())
    };
    let ok = [
        (json!({"deploy_iso": "deploy.iso"}), None, "http://192.0.2.1:6385/images/deploy.iso"),
        (json!({}), Some("deploy.iso"), "http://192.0.2.1:6385/images/deploy.iso"),
        (json!({"deploy_iso": "https://m/x.iso"}), Some("deploy.iso"), "https://m/x.iso"),
        (json!({"deploy_iso": "http://m/y.iso"}), None, "http://m/y.iso"),
    ];
    for (info, default, want) in ok {
        assert_eq!(iso(info.clone(), default).unwrap(), want, "{info} {default:?}");
    }
    let bad = [
        (json!({}), None, "Missing 'deploy_iso' parameter in node's driver_info"),
        (json!({"deploy_iso": null}), None, "Missing 'deploy_iso'"),
        (json!({"deploy_iso": 7}), None, "deploy_iso must be a string"),
        (json!({"deploy_iso": "ftp://m/x.iso"}), None, "only http:// and https://"),
        (json!({"deploy_iso": "../x.iso"}), None, "names no valid image file"),
        (json!({"deploy_iso": "absent.iso"}), None, "\"absent.iso\" does not exist"),
        (json!({}), Some("folder"), "\"folder\" does not exist"),
        (json!({"deploy_iso": "http://m/a b.iso"}), None, "a space"),
    ];
    for (info, default, fragment) in bad {
        let err = iso(info.clone(), default).unwrap_err();
        let text = crate::error_chain(&err);
        assert!(text.contains(fragment), "{info} {default:?}: {text}");
    }
    let info = json!({"deploy_iso": "deploy.iso"}).as_object().unwrap().clone();
    let err = virtual_media_iso("ipmi", false, &info, None, base, dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "boot interface implementation 'redfish-virtual-media' is not supported by hardware \
         type ipmi."
    );
}

#[test]
fn inspecting_nodes_get_the_callback_and_the_inspector_parameters() {
    let expected_inspection = [
        "ipa-inspection-callback-url=http://10.0.2.100:6385/v1/continue_inspection",
        "ipa-collect-lldp=1",
    ];
    for (state, inspecting) in [
        (ProvisionState::Inspecting, true),
        (ProvisionState::InspectWait, true),
        (ProvisionState::CleanWait, false),
        (ProvisionState::Manageable, false),
        (ProvisionState::InspectFailed, false),
    ] {
        let Ok(NodeBoot::Ramdisk { kernel_params, .. }) =
            plan(&params(state, json!({})), &config())
        else {
            panic!("{state:?}: no ramdisk");
        };
        assert_eq!(kernel_params[0], "ipa-api-url=http://10.0.2.100:6385", "{state:?}");
        for word in expected_inspection {
            assert_eq!(kernel_params.iter().any(|p| p == word), inspecting, "{state:?} {word}");
        }
        if inspecting {
            assert_eq!(kernel_params[kernel_params.len() - 2..], expected_inspection, "{state:?}");
        }
    }
    let bad = BootConfig { inspection_kernel_params: "a=$b".to_owned(), ..config() };
    let err = plan(&params(ProvisionState::InspectWait, json!({})), &bad).unwrap_err();
    assert_eq!(err, BootScriptError::UnsafeValue { field: "extra_kernel_params", what: "'$'" });
    assert!(plan(&params(ProvisionState::CleanWait, json!({})), &bad).is_ok());
}
