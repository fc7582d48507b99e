//! The conductor's API over HTTP: version negotiation, the root documents, nodes and
//! ports, and every bad-input case for them (status, faultstring, nothing written).

mod api_support;

use api_support::{start, Api, DRIVER, LATEST};
use ferric_shared::states::Event;
use reqwest::Method;
use serde_json::{json, Value};

async fn node_count(api: &Api) -> usize {
    api.get("/v1/nodes").await.body["nodes"].as_array().unwrap().len()
}

#[tokio::test]
async fn version_negotiation_and_headers() {
    let api = start().await;
    // (header, expected status, expected version used)
    let table: &[(Option<&str>, u16, Option<&str>)] = &[
        (None, 200, Some("1.1")),
        (Some("1.68"), 200, Some("1.68")),
        (Some("latest"), 200, Some(LATEST)),
        (Some("1.115"), 406, None),
        (Some("1.0"), 406, None),
        (Some("2.1"), 406, None),
        (Some("banana"), 406, None),
    ];
    for &(header, status, used) in table {
        let reply = api.call_v(Method::GET, "/v1/nodes", header, None).await;
        assert_eq!(reply.status, status, "{header:?}: {}", reply.text);
        assert_eq!(reply.header("X-OpenStack-Ironic-API-Minimum-Version"), Some("1.1"));
        assert_eq!(reply.header("X-OpenStack-Ironic-API-Maximum-Version"), Some(LATEST));
        assert_eq!(reply.header("X-OpenStack-Ironic-API-Version"), used, "{header:?}");
        if status == 406 {
            assert!(!reply.fault().is_empty());
        }
    }
    let reply = api
        .http
        .get(format!("{}/v1/nodes", api.base))
        .header("OpenStack-API-Version", "baremetal 1.73")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["X-OpenStack-Ironic-API-Version"], "1.73");
    assert_eq!(reply.headers()["OpenStack-API-Version"], "baremetal 1.73");
    let reply = api.call_v(Method::GET, "/v1/nodes", Some("1.115"), None).await;
    reply.assert_error(406, "[1.1, 1.110]");
    let id = reply.header("X-OpenStack-Request-Id").unwrap();
    assert!(id.starts_with("req-") && id.len() == 40, "{id}");
}

#[tokio::test]
async fn root_documents_advertise_the_range() {
    let api = start().await;
    let root = api.call_v(Method::GET, "/", None, None).await;
    assert_eq!(root.status, 200);
    assert_eq!(root.body["default_version"]["version"], json!(LATEST));
    assert_eq!(root.body["default_version"]["min_version"], json!("1.1"));
    assert_eq!(root.body["versions"][0]["id"], json!("v1"));
    assert_eq!(
        root.body["default_version"]["links"][0]["href"],
        json!(format!("{}/v1/", api.base))
    );
    for path in ["/v1", "/v1/"] {
        let v1 = api.call_v(Method::GET, path, Some("1.115"), None).await;
        // Even a refused version gets the headers the CLI needs to retry.
        assert_eq!(v1.status, 406);
        assert_eq!(v1.header("X-OpenStack-Ironic-API-Maximum-Version"), Some(LATEST));
        let v1 = api.call_v(Method::GET, path, None, None).await;
        assert_eq!(v1.status, 200);
        assert_eq!(v1.body["id"], json!("v1"));
        assert_eq!(v1.body["version"]["version"], json!(LATEST));
        assert_eq!(v1.body["nodes"][0]["href"], json!(format!("{}/v1/nodes/", api.base)));
    }
    api.get("/v1/nothing-here").await.assert_error(404, "could not be found");
    let reply = api.call_v(Method::PUT, "/v1/nodes", Some(LATEST), Some(&json!({}))).await;
    reply.assert_error(405, "not allowed");
}

#[tokio::test]
async fn node_create_show_and_masking() {
    let api = start().await;
    let reply = api
        .post(
            "/v1/nodes",
            json!({
                "name": "node-1", "driver": DRIVER, "resource_class": "baremetal",
                "driver_info": {"test_address": "10.0.0.1", "ipmi_password": "hunter2",
                                "ipmi_port": 623},
                "properties": {"cpus": 8, "root_device": {"size": ">= 10"}},
                "instance_info": {"image_source": "http://u:pw@img/x.qcow2",
                                  "configdrive": "H4sIAAAA"},
                "extra": {"rack": "r1"}
            }),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let uuid = reply.body["uuid"].as_str().unwrap().to_owned();
    assert_eq!(reply.header("Location"), Some(format!("{}/v1/nodes/{uuid}", api.base).as_str()));
    let node = &reply.body;
    assert_eq!(node["provision_state"], json!("enroll"));
    assert_eq!(node["target_provision_state"], Value::Null);
    assert_eq!(node["power_state"], Value::Null);
    assert_eq!(node["driver_info"]["ipmi_password"], json!("******"));
    assert_eq!(node["driver_info"]["ipmi_port"], json!(623));
    assert_eq!(node["instance_info"]["configdrive"], json!("******"));
    assert_eq!(node["instance_info"]["image_source"], json!("http://u:******@img/x.qcow2"));
    assert_eq!(node["conductor"], json!("test-conductor"));
    assert_eq!(node["links"][0]["href"], json!(format!("{}/v1/nodes/{uuid}", api.base)));
    assert_eq!(node["ports"][0]["href"], json!(format!("{}/v1/nodes/{uuid}/ports", api.base)));
    for secret in ["hunter2", ":pw@", "H4sIAAAA"] {
        assert!(!reply.text.contains(secret), "{secret} leaked");
    }
    // The store keeps the real values; only responses are masked.
    let stored = api.store.get_node(&uuid).await.unwrap();
    assert_eq!(stored.driver_info["ipmi_password"], json!("hunter2"));

    for ident in [uuid.as_str(), "node-1"] {
        let shown = api.get(&format!("/v1/nodes/{ident}")).await;
        assert_eq!(shown.status, 200);
        assert_eq!(shown.body["uuid"], json!(uuid));
        assert!(!shown.text.contains("hunter2"));
    }
    let some = api.get(&format!("/v1/nodes/{uuid}?fields=name,driver")).await;
    let mut keys: Vec<&String> = some.body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["driver", "links", "name"]);
    api.get(&format!("/v1/nodes/{uuid}?fields=name,colour")).await.assert_error(400, "colour");
    let old_path = format!("/v1/nodes/{uuid}?fields=name");
    let old = api.call_v(Method::GET, &old_path, Some("1.7"), None).await;
    assert_eq!(old.status, 406);

    // Before 1.11 nodes start in `available`.
    let old =
        api.call_v(Method::POST, "/v1/nodes", Some("1.10"), Some(&json!({"driver": DRIVER}))).await;
    assert_eq!(old.status, 201);
    assert_eq!(old.body["provision_state"], json!("available"));
}

#[tokio::test]
async fn node_create_bad_input_writes_nothing() {
    let api = start().await;
    api.create_node("taken").await;
    let table: Vec<(&str, u16, &str)> = vec![
        ("{", 400, "Malformed JSON"),
        ("", 400, "empty"),
        (r#"{"driver": "fake-hardware", "colour": "red"}"#, 400, "unknown field `colour`"),
        (r#"{"driver": "fake-hardware", "provision_state": "active"}"#, 400, "provision_state"),
        (r#"{"name": "no-driver"}"#, 400, "missing field `driver`"),
        (r#"{"driver": "nope"}"#, 400, "driver nope"),
        (r#"{"driver": "fake-hardware", "uuid": "not-a-uuid"}"#, 400, "Expected a UUID"),
        (r#"{"driver": "fake-hardware", "name": "bad name"}"#, 400, "bad name"),
        (r#"{"driver": "fake-hardware", "name": "taken"}"#, 409, "A node with name taken"),
        (r#"[1, 2]"#, 400, "Invalid request body"),
    ];
    for (body, status, fragment) in table {
        let reply = api.call_raw(Method::POST, "/v1/nodes", body).await;
        reply.assert_error(status, fragment);
    }
    assert_eq!(node_count(&api).await, 1);
    let huge =
        format!(r#"{{"driver": "fake-hardware", "extra": {{"x": "{}"}}}}"#, "a".repeat(2 << 20));
    let reply = api.call_raw(Method::POST, "/v1/nodes", &huge).await;
    reply.assert_error(413, "larger");
    assert_eq!(node_count(&api).await, 1);
}

#[tokio::test]
async fn node_list_filters_pagination_and_sorting() {
    let api = start().await;
    let mut uuids = Vec::new();
    for i in 0..5 {
        uuids.push(api.create_node(&format!("n{i}")).await);
    }
    api.force(&uuids[1], &[Event::Manage, Event::Done]).await;
    api.force(&uuids[2], &[Event::Manage, Event::Done]).await;

    let list = api.get("/v1/nodes").await;
    let first = &list.body["nodes"][0];
    let mut keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["instance_uuid", "links", "maintenance", "name", "power_state", "provision_state", "uuid"]
    );
    assert!(list.body.get("next").is_none(), "a short page has no next link");

    let detail = api.get("/v1/nodes/detail").await;
    assert_eq!(detail.body["nodes"].as_array().unwrap().len(), 5);
    assert_eq!(detail.body["nodes"][0]["driver_info"]["test_password"], json!("******"));
    assert!(!detail.text.contains("s3cret"), "a list leaked a password");
    assert!(detail.body["nodes"][0].get("driver_info").is_some());
    let detail = api.get("/v1/nodes?detail=true").await;
    assert!(detail.body["nodes"][0].get("driver_internal_info").is_some());

    let managed = api.get("/v1/nodes?provision_state=manageable").await;
    let names: Vec<&str> = managed.body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["n1", "n2"]);
    assert_eq!(
        api.get(&format!("/v1/nodes?driver={DRIVER}")).await.body["nodes"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(api.get("/v1/nodes?driver=other").await.body["nodes"].as_array().unwrap().len(), 0);
    assert_eq!(
        api.get("/v1/nodes?maintenance=true").await.body["nodes"].as_array().unwrap().len(),
        0
    );

    // Pages of two, following `next` links, in creation order.
    let mut seen = Vec::new();
    let mut path = "/v1/nodes?limit=2&fields=uuid,name".to_owned();
    loop {
        let page = api.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.text);
        for node in page.body["nodes"].as_array().unwrap() {
            seen.push(node["uuid"].as_str().unwrap().to_owned());
            assert!(node.get("driver").is_none());
        }
        match page.body.get("next").and_then(Value::as_str) {
            Some(next) => {
                assert!(next.contains("fields=uuid%2Cname"), "{next}");
                path = next.strip_prefix(&api.base).unwrap().to_owned();
            }
            None => break,
        }
    }
    assert_eq!(seen, uuids);

    // The trailing-slash form python-ironicclient sends with a query string.
    let slash = api.get("/v1/nodes/?provision_state=manageable&limit=1").await;
    assert_eq!(slash.status, 200, "{}", slash.text);
    assert_eq!(slash.body["nodes"][0]["name"], json!("n1"));
    assert!(slash.body["next"].as_str().unwrap().contains("provision_state=manageable"));

    let desc = api.get("/v1/nodes?sort_key=name&sort_dir=desc").await;
    let names: Vec<&str> = desc.body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["n4", "n3", "n2", "n1", "n0"]);

    for (query, status, fragment) in [
        ("sort_key=driver_info", 400, "invalid field for sorting"),
        ("sort_dir=sideways", 400, "Invalid sort direction"),
        ("limit=-1", 400, "Limit must be positive"),
        ("limit=x", 400, "limit"),
        ("marker=nope", 400, "marker"),
        ("marker=1be26c0b-03f2-4d2e-ae87-c02d7f33c123", 404, "Marker"),
        ("provision_state=sleeping", 400, "sleeping"),
        ("maintenance=maybe", 400, "maintenance"),
        ("colour=red", 400, "colour"),
        ("fields=uuid&detail=true", 400, "detail"),
    ] {
        api.get(&format!("/v1/nodes?{query}")).await.assert_error(status, fragment);
    }
}

#[tokio::test]
async fn node_patch_rules_and_atomicity() {
    let api = start().await;
    let uuid = api.create_node("patchy").await;
    let path = format!("/v1/nodes/{uuid}");
    let reply = api
        .patch(
            &path,
            json!([
                {"op": "add", "path": "/driver_info/ipmi_address", "value": "10.9.9.9"},
                {"op": "add", "path": "/properties/root_device", "value": {"name": "/dev/sda"}},
                {"op": "add", "path": "/extra/foo", "value": "bar"},
                {"op": "replace", "path": "/name", "value": "renamed"},
                {"op": "add", "path": "/instance_info/image_source", "value": "http://i/x.img"},
                {"op": "replace", "path": "/maintenance", "value": true},
                {"op": "add", "path": "/maintenance_reason", "value": "broken fan"}
            ]),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let node = &reply.body;
    assert_eq!(node["driver_info"]["ipmi_address"], json!("10.9.9.9"));
    assert_eq!(node["driver_info"]["test_password"], json!("******"));
    assert_eq!(node["properties"]["root_device"], json!({"name": "/dev/sda"}));
    assert_eq!(node["extra"]["foo"], json!("bar"));
    assert_eq!(node["name"], json!("renamed"));
    assert_eq!(node["maintenance"], json!(true));
    assert_eq!(node["maintenance_reason"], json!("broken fan"));
    // The secret that was masked in the view is still intact in the store.
    let stored = api.store.get_node(&uuid).await.unwrap();
    assert_eq!(stored.driver_info["test_password"], json!("s3cret"));

    let reply = api
        .patch(
            &path,
            json!([{"op": "remove", "path": "/extra/foo"},
                             {"op": "replace", "path": "/maintenance", "value": false}]),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["extra"], json!({}));
    assert_eq!(reply.body["maintenance_reason"], Value::Null, "leaving maintenance clears it");

    api.create_node("other").await;
    let before = api.get(&path).await.body;
    let table: Vec<(Value, u16, &str)> = vec![
        (json!([{"op": "replace", "path": "/uuid", "value": "x"}]), 400, "'/uuid' is an internal"),
        (
            json!([{"op": "replace", "path": "/provision_state", "value": "active"}]),
            400,
            "'/provision_state' is an internal",
        ),
        (
            json!([{"op": "add", "path": "/driver_internal_info/agent_url", "value": "x"}]),
            400,
            "'/driver_internal_info' is an internal",
        ),
        (json!([{"op": "add", "path": "/colour", "value": 1}]), 400, "Adding a new attribute"),
        (json!([{"op": "replace", "path": "/maintenance", "value": "yes"}]), 400, "/maintenance"),
        (json!([{"op": "replace", "path": "/driver_info", "value": 5}]), 400, "/driver_info"),
        (json!([{"op": "replace", "path": "/driver", "value": "nope"}]), 400, "driver nope"),
        (json!([{"op": "replace", "path": "/name", "value": "other"}]), 409, "other"),
        (json!([{"op": "move", "path": "/name", "from": "/extra"}]), 400, "Invalid request body"),
        (json!([{"op": "replace", "path": "/extra/missing", "value": 1}]), 400, "non-existent"),
        (json!([{"op": "replace", "path": "/protected", "value": true}]), 400, "active"),
        // The first operation is valid; the second fails; neither is applied.
        (
            json!([{"op": "replace", "path": "/name", "value": "half"},
                {"op": "replace", "path": "/uuid", "value": "x"}]),
            400,
            "internal",
        ),
        (json!({"op": "replace"}), 400, "Invalid request body"),
    ];
    for (body, status, fragment) in table {
        api.patch(&path, body.clone()).await.assert_error(status, fragment);
    }
    let mut after = api.get(&path).await.body;
    // Identical apart from nothing: no refused patch changed the node.
    after["updated_at"] = before["updated_at"].clone();
    assert_eq!(after, before);
    api.patch("/v1/nodes/ghost", json!([{"op": "remove", "path": "/name"}]))
        .await
        .assert_error(404, "Node ghost could not be found");
}

#[tokio::test]
async fn node_delete_where_allowed() {
    let mut api = start().await;
    let uuid = api.create_node("doomed").await;
    let port = api.create_port(&uuid, "52:54:00:00:00:01").await;
    api.force(&uuid, &[Event::Manage, Event::Done, Event::Provide]).await;
    let path = format!("/v1/nodes/{uuid}");
    api.delete(&path).await.assert_error(400, "while it is in provision state \"cleaning\"");
    assert_eq!(api.get(&path).await.status, 200);
    api.force(&uuid, &[Event::Done]).await;
    let reply = api.delete(&path).await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    api.get(&path).await.assert_error(404, "could not be found");
    api.get(&format!("/v1/ports/{port}")).await.assert_error(404, "could not be found");
    api.delete(&path).await.assert_error(404, "could not be found");

    // A node in maintenance may be deleted whatever its state; a locked one may not.
    let uuid = api.create_node("held").await;
    api.force(&uuid, &[Event::Manage]).await;
    api.store.reserve(uuid.parse().unwrap(), "elsewhere").await.unwrap();
    api.patch(
        &format!("/v1/nodes/{uuid}"),
        json!([{"op": "replace", "path": "/maintenance", "value": true}]),
    )
    .await
    .assert_error(409, "locked by host elsewhere");
    api.store.release(uuid.parse().unwrap(), "elsewhere").await.unwrap();
    let reply = api
        .patch(
            &format!("/v1/nodes/{uuid}"),
            json!([{"op": "replace", "path": "/maintenance", "value": true}]),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(api.delete(&format!("/v1/nodes/{uuid}")).await.status, 204);
    api.assert_no_task();
}

#[tokio::test]
async fn ports_crud_and_bad_input() {
    let api = start().await;
    let node = api.create_node("with-ports").await;
    let other = api.create_node("other").await;
    let reply = api
        .post(
            "/v1/ports",
            json!({"node_uuid": node, "address": "52:54:00:AB:CD:EF",
                                  "extra": {"switch": "s1"}, "pxe_enabled": false}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let port = reply.body["uuid"].as_str().unwrap().to_owned();
    assert_eq!(reply.body["address"], json!("52:54:00:ab:cd:ef"));
    assert_eq!(reply.body["node_uuid"], json!(node));
    assert_eq!(reply.body["pxe_enabled"], json!(false));
    assert_eq!(reply.header("Location"), Some(format!("{}/v1/ports/{port}", api.base).as_str()));
    api.create_port(&other, "52:54:00:00:00:02").await;

    let table: Vec<(Value, u16, &str)> = vec![
        (
            json!({"node_uuid": node, "address": "52:54:00:ab:cd:ef"}),
            409,
            "A port with MAC address 52:54:00:ab:cd:ef already exists",
        ),
        (json!({"node_uuid": node, "address": "52-54-00-AB-CD-EF"}), 409, "already exists"),
        (
            json!({"node_uuid": node, "address": "not-a-mac"}),
            400,
            "Expected a MAC address but received not-a-mac",
        ),
        (json!({"node_uuid": node, "address": "52:54:00:ab:cd"}), 400, "MAC"),
        (
            json!({"node_uuid": "with-ports", "address": "52:54:00:00:00:09"}),
            400,
            "Expected a UUID but received with-ports",
        ),
        (
            json!({"node_uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
                "address": "52:54:00:00:00:09"}),
            400,
            "could not be found",
        ),
        (
            json!({"node_uuid": node, "address": "52:54:00:00:00:09", "vif": 1}),
            400,
            "unknown field `vif`",
        ),
        (json!({"address": "52:54:00:00:00:09"}), 400, "node_uuid"),
    ];
    for (body, status, fragment) in table {
        api.post("/v1/ports", body.clone()).await.assert_error(status, fragment);
    }
    assert_eq!(api.get("/v1/ports").await.body["ports"].as_array().unwrap().len(), 2);

    let list = api.get("/v1/ports").await;
    let mut keys: Vec<&String> = list.body["ports"][0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["address", "links", "uuid"]);
    let mine = api.get(&format!("/v1/nodes/{node}/ports")).await;
    assert_eq!(mine.body["ports"].as_array().unwrap().len(), 1);
    let by_name = api.get("/v1/nodes/with-ports/ports/detail").await;
    assert_eq!(by_name.body["ports"][0]["extra"], json!({"switch": "s1"}));
    let by_addr = api.get("/v1/ports?address=52:54:00:AB:CD:EF&fields=uuid,node_uuid").await;
    assert_eq!(by_addr.body["ports"][0]["node_uuid"], json!(node));
    let by_node = api.get("/v1/ports/?node=other&detail=true").await;
    assert_eq!(by_node.status, 200, "{}", by_node.text);
    assert_eq!(by_node.body["ports"][0]["node_uuid"], json!(other));
    let filtered = api.get(&format!("/v1/ports/detail?node_uuid={other}")).await;
    assert_eq!(filtered.body["ports"].as_array().unwrap().len(), 1);
    api.get("/v1/ports?address=zz").await.assert_error(400, "MAC");

    let path = format!("/v1/ports/{port}");
    let reply = api
        .patch(
            &path,
            json!([{"op": "replace", "path": "/address", "value": "52:54:00:00:00:03"},
                             {"op": "replace", "path": "/node_uuid", "value": other}]),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["address"], json!("52:54:00:00:00:03"));
    assert_eq!(reply.body["node_uuid"], json!(other));
    for (body, status, fragment) in [
        (
            json!([{"op": "replace", "path": "/address", "value": "52:54:00:00:00:02"}]),
            409,
            "already exists",
        ),
        (json!([{"op": "replace", "path": "/address", "value": "bogus"}]), 400, "MAC"),
        (json!([{"op": "replace", "path": "/uuid", "value": "x"}]), 400, "internal"),
        (json!([{"op": "replace", "path": "/node_uuid", "value": "name"}]), 400, "UUID"),
    ] {
        api.patch(&path, body.clone()).await.assert_error(status, fragment);
    }
    assert_eq!(api.get(&path).await.body["address"], json!("52:54:00:00:00:03"));
    assert_eq!(api.delete(&path).await.status, 204);
    api.get(&path).await.assert_error(404, "could not be found");
    api.get("/v1/ports/not-a-uuid").await.assert_error(404, "could not be found");
}
