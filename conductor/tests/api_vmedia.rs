//! The API side of booting over virtual media and of boot modes: `boot_interface` values,
//! `validate` of `redfish-virtual-media` nodes, provisioning refused while the boot
//! interface cannot work, and the boot mode passed with `management/boot_device`.

mod api_support;

use api_support::{start, start_with};
use ferric_conductor::bmc::BootMode;
use ferric_shared::states::Event;
use serde_json::json;

#[tokio::test]
async fn only_known_boot_interfaces_are_accepted() {
    let api = start().await;
    for name in ["ipxe", "pxe", "redfish-virtual-media", "fake"] {
        let reply =
            api.post("/v1/nodes", json!({"driver": "fake-hardware", "boot_interface": name})).await;
        assert_eq!(reply.status, 201, "{name}: {}", reply.text);
        assert_eq!(reply.body["boot_interface"], json!(name));
    }
    api.post("/v1/nodes", json!({"driver": "fake-hardware", "boot_interface": "http"}))
        .await
        .assert_error(400, "entrypoint: http. Valid interfaces are ['fake', 'ipxe'");
    let node = api.create_node("n").await;
    let path = format!("/v1/nodes/{node}");
    let patch = |value| json!([{"op": "add", "path": "/boot_interface", "value": value}]);
    api.patch(&path, patch("virtual-media")).await.assert_error(400, "virtual-media");
    let reply = api.patch(&path, patch("redfish-virtual-media")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["boot_interface"], json!("redfish-virtual-media"));
    let reply = api.patch(&path, json!([{"op": "remove", "path": "/boot_interface"}])).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["boot_interface"], json!(null));
}

#[tokio::test]
async fn virtual_media_needs_a_deploy_iso_before_validate_and_provide_pass() {
    let images = tempfile::tempdir().unwrap();
    let image_dir = images.path().to_owned();
    let mut api = start_with(move |c| c.image_dir = Some(image_dir), 64).await;
    let node = api.create_node("vm").await;
    let path = format!("/v1/nodes/{node}");
    let reply = api
        .patch(
            &path,
            json!([{"op": "add", "path": "/boot_interface", "value": "redfish-virtual-media"}]),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    api.force(&node, &[Event::Manage, Event::Done]).await;

    let validate = api.get(&format!("{path}/validate")).await.body;
    assert_eq!(validate["boot"]["result"], json!(false), "{validate}");
    let reason = validate["boot"]["reason"].as_str().unwrap();
    assert!(reason.contains("Missing 'deploy_iso' parameter in node's driver_info"), "{reason}");
    // The power and management interfaces do not depend on the boot interface.
    assert_eq!(validate["power"]["result"], json!(true));

    let provision = format!("{path}/states/provision");
    for target in ["provide", "clean"] {
        let mut body = json!({"target": target});
        if target == "clean" {
            body["clean_steps"] = json!([]);
        }
        api.put(&provision, body).await.assert_error(400, "Missing 'deploy_iso'");
        api.assert_no_task();
    }
    assert_eq!(api.state_of(&node).await, "manageable");

    // A name of a file the conductor does not serve is refused too.
    let set_iso =
        |value: &str| json!([{"op": "add", "path": "/driver_info/deploy_iso", "value": value}]);
    assert_eq!(api.patch(&path, set_iso("deploy.iso")).await.status, 200);
    let validate = api.get(&format!("{path}/validate")).await.body;
    let reason = validate["boot"]["reason"].as_str().unwrap();
    assert!(reason.contains("\"deploy.iso\" does not exist"), "{reason}");
    api.put(&provision, json!({"target": "provide"})).await.assert_error(400, "deploy.iso");

    std::fs::write(images.path().join("deploy.iso"), b"an ISO").unwrap();
    let validate = api.get(&format!("{path}/validate")).await.body;
    assert_eq!(validate["boot"], json!({"result": true, "reason": null}), "{validate}");
    let reply = api.put(&provision, json!({"target": "provide"})).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    api.next_task();

    // A URL needs no file.
    let other = api.create_node("vm-url").await;
    let reply = api
        .patch(
            &format!("/v1/nodes/{other}"),
            json!([{"op": "add", "path": "/boot_interface", "value": "redfish-virtual-media"},
                   {"op": "add", "path": "/driver_info/deploy_iso",
                    "value": "https://mirror.example/ferric.iso"}]),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let validate = api.get(&format!("/v1/nodes/{other}/validate")).await.body;
    assert_eq!(validate["boot"]["result"], json!(true), "{validate}");
}

#[tokio::test]
async fn the_configured_deploy_iso_is_the_default() {
    let images = tempfile::tempdir().unwrap();
    std::fs::write(images.path().join("ferric.iso"), b"an ISO").unwrap();
    let image_dir = images.path().to_owned();
    let api = start_with(
        move |c| {
            c.image_dir = Some(image_dir);
            c.deploy.deploy_iso = Some("ferric.iso".into());
        },
        64,
    )
    .await;
    let reply = api
        .post(
            "/v1/nodes",
            json!({"driver": "fake-hardware", "boot_interface": "redfish-virtual-media"}),
        )
        .await;
    let node = reply.body["uuid"].as_str().unwrap().to_owned();
    let validate = api.get(&format!("/v1/nodes/{node}/validate")).await.body;
    assert_eq!(validate["boot"]["result"], json!(true), "{validate}");
}

#[tokio::test]
async fn the_boot_device_is_set_in_the_nodes_boot_mode() {
    let api = start_with(|c| c.deploy.default_boot_mode = "bios".into(), 64).await;
    let node = api.create_node("mode").await;
    let path = format!("/v1/nodes/{node}");
    let boot = format!("{path}/management/boot_device");
    // (patch making the node's boot mode, the mode the BMC gets)
    let table = [
        (json!([]), BootMode::Bios),
        (
            json!([{"op": "add", "path": "/properties/capabilities", "value": "boot_mode:uefi"}]),
            BootMode::Uefi,
        ),
        (
            json!([{"op": "add", "path": "/instance_info/deploy_boot_mode", "value": "bios"}]),
            BootMode::Bios,
        ),
    ];
    for (patch, mode) in table {
        if patch.as_array().is_some_and(|p| !p.is_empty()) {
            let reply = api.patch(&path, patch.clone()).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
        }
        let reply = api.put(&boot, json!({"boot_device": "pxe"})).await;
        assert_eq!(reply.status, 204, "{}", reply.text);
        assert_eq!(api.bmc.node(&node).unwrap().boot_mode, Some(mode), "{patch}");
    }
    let reply = api
        .patch(
            &path,
            json!([{"op": "add", "path": "/instance_info/deploy_boot_mode", "value": "efi"}]),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    api.put(&boot, json!({"boot_device": "disk"}))
        .await
        .assert_error(400, "instance_info/deploy_boot_mode names boot mode \"efi\"");
}
