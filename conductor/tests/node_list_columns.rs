//! Node lists that read only the columns their fields need give exactly what the full
//! read gives.

mod api_support;

use api_support::start;
use ferric_conductor::store::NodeQuery;
use ferric_shared::states::{Event, PowerState};
use serde_json::{json, Map, Value};

/// The detail list with only `fields` (and `links`) kept: what any field selection must
/// return.
fn project(detail: &Value, fields: &[&str]) -> Value {
    let nodes = detail["nodes"].as_array().unwrap();
    let kept: Vec<Value> = nodes
        .iter()
        .map(|node| {
            let map: Map<String, Value> = node
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k == "links" || fields.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Value::Object(map)
        })
        .collect();
    Value::Array(kept)
}

#[tokio::test]
async fn field_selections_match_the_full_documents() {
    let api = start().await;
    let mut uuids = Vec::new();
    for i in 0..7 {
        let uuid = api.create_node(&format!("node-{i}")).await;
        let reply = api
            .patch(
                &format!("/v1/nodes/{uuid}"),
                json!([
                    {"op": "add", "path": "/instance_info/image_source", "value": format!("img-{i}")},
                    {"op": "add", "path": "/instance_info/configdrive", "value": "H4sI"},
                    {"op": "add", "path": "/properties/cpus", "value": i},
                    {"op": "add", "path": "/extra/rack", "value": format!("r{i}")},
                    {"op": "add", "path": "/resource_class", "value": "gold"},
                    {"op": "replace", "path": "/maintenance", "value": i % 2 == 0},
                ]),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if i % 3 == 0 {
            api.force(&uuid, &[Event::Manage, Event::Done]).await;
        }
        if i % 2 == 1 {
            api.store
                .update_node(&uuid, |n| {
                    n.power_state = Some(PowerState::On);
                    n.instance_uuid = Some(format!("00000000-0000-4000-8000-00000000000{i}"));
                    Ok::<_, std::convert::Infallible>(())
                })
                .await
                .unwrap();
        }
        uuids.push(uuid);
    }

    let detail = api.get("/v1/nodes/detail").await;
    assert_eq!(detail.status, 200, "{}", detail.text);
    let all = detail.body["nodes"].as_array().unwrap();
    assert_eq!(all.len(), 7);
    assert!(all.iter().any(|n| n["power_state"] == "power on"), "{}", detail.text);
    assert!(all.iter().any(|n| n["power_state"].is_null()), "{}", detail.text);

    let selections: &[&[&str]] = &[
        &["uuid", "name"],
        &["uuid", "instance_info", "driver_info"],
        &["properties", "extra", "traits", "maintenance"],
        &["driver_internal_info", "clean_step", "deploy_step", "network_data"],
        &["provision_state", "power_state", "resource_class", "links", "ports"],
        &["power_state", "instance_uuid"],
        &["links", "maintenance"],
    ];
    for fields in selections {
        let path = format!("/v1/nodes?fields={}", fields.join(","));
        let reply = api.get(&path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert_eq!(reply.body["nodes"], project(&detail.body, fields), "{path}");
    }

    // The default (non-detail) list, and a filtered, sorted, paginated one.
    let default = api.get("/v1/nodes").await;
    let list_fields =
        ["uuid", "name", "instance_uuid", "maintenance", "power_state", "provision_state"];
    assert_eq!(default.body["nodes"], project(&detail.body, &list_fields));
    let page = api
        .get("/v1/nodes?fields=uuid,instance_info,extra&maintenance=true&sort_key=name&sort_dir=desc&limit=2")
        .await;
    let full =
        api.get("/v1/nodes/detail?maintenance=true&sort_key=name&sort_dir=desc&limit=2").await;
    assert_eq!(page.body["nodes"], project(&full.body, &["uuid", "instance_info", "extra"]));
    assert_eq!(page.body["nodes"].as_array().unwrap().len(), 2);
    assert!(page.body["next"].as_str().unwrap().contains("marker="), "{}", page.text);
    // The secrets stay masked on the column-limited path too.
    for node in page.body["nodes"].as_array().unwrap() {
        assert_eq!(node["instance_info"]["configdrive"], "******", "{node}");
    }
}

#[tokio::test]
async fn the_store_leaves_out_only_unwanted_documents() {
    let api = start().await;
    let uuid = api.create_node("docs").await;
    let reply = api
        .patch(
            &format!("/v1/nodes/{uuid}"),
            json!([{"op": "add", "path": "/extra/a", "value": 1},
                   {"op": "add", "path": "/properties/b", "value": 2}]),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let full = api.store.list_nodes(&NodeQuery::default()).await.unwrap();
    let some = api.store.list_nodes_with_columns(&NodeQuery::default(), &["extra"]).await.unwrap();
    assert_eq!(full.len(), 1);
    assert_eq!(some.len(), 1);
    let (full, some) = (&full[0], &some[0]);
    assert_eq!(some.extra, full.extra);
    assert!(!full.properties.is_empty() && !full.driver_info.is_empty());
    assert!(some.properties.is_empty() && some.driver_info.is_empty());
    // Scalars are always there.
    assert_eq!(
        (&some.uuid, &some.name, &some.driver, some.provision_state, some.version),
        (&full.uuid, &full.name, &full.driver, full.provision_state, full.version)
    );
    assert_eq!((some.created_at, some.updated_at), (full.created_at, full.updated_at));
    // Everything wanted: the same node.
    let all = [
        "driver_info",
        "driver_internal_info",
        "properties",
        "instance_info",
        "extra",
        "clean_step",
        "deploy_step",
        "network_data",
        "traits",
    ];
    let every = api.store.list_nodes_with_columns(&NodeQuery::default(), &all).await.unwrap();
    assert_eq!(&every[0], full);
}
