//! The real `baremetal` CLI and the `ferric` CLI against the fake node API.

use serde_json::json;

use super::fake_api::{FakeIronicApi, RecordedRequest};
use super::*;
use ferric_shared::api_version::ApiVersion;

/// Below python-ironicclient 6.3.0's newest version (1.115), so it must negotiate down.
const FAKE_MAX: ApiVersion = ApiVersion::new(1, 99);

fn summary(requests: &[RecordedRequest]) -> Vec<(String, String, Option<String>, u16)> {
    requests
        .iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.version.clone(), r.status))
        .collect()
}

fn req(
    method: &str,
    path: &str,
    version: Option<&str>,
    status: u16,
) -> (String, String, Option<String>, u16) {
    (method.to_owned(), path.to_owned(), version.map(str::to_owned), status)
}

#[test]
fn a_missing_venv_is_an_error_that_says_how_to_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = baremetal_binary_in(&dir.path().join("no-venv")).unwrap_err().to_string();
    assert!(err.contains("tests/peers/setup-venv.sh"), "{err}");
    assert!(err.contains(VENV_ENV), "{err}");
    assert!(err.contains("no-venv"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baremetal_negotiates_down_after_406_for_list_and_show() {
    let api = FakeIronicApi::start(FAKE_MAX).await.unwrap();
    let bm = Baremetal::new(api.url()).unwrap();
    bm.run(&["node", "create", "--driver", "fake-hardware", "--name", "rack1-u07"])
        .await
        .unwrap()
        .ensure_success("node create")
        .unwrap();

    api.clear_requests();
    let list = bm.json(&["node", "list"]).await.unwrap();
    assert_eq!(
        summary(&api.requests()),
        [
            req("GET", "/v1/nodes", Some("1.115"), 406),
            req("GET", "/v1", None, 200),
            req("GET", "/v1/nodes", Some("1.99"), 200),
        ]
    );
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "rack1-u07");
    assert_eq!(rows[0]["provision_state"], "enroll");
    assert_eq!(rows[0]["maintenance"], false);

    api.clear_requests();
    let shown = bm.json(&["node", "show", "rack1-u07"]).await.unwrap();
    assert_eq!(
        summary(&api.requests()),
        [
            req("GET", "/v1/nodes/rack1-u07", Some("1.115"), 406),
            req("GET", "/v1", None, 200),
            req("GET", "/v1/nodes/rack1-u07", Some("1.99"), 200),
        ]
    );
    assert_eq!(shown["driver"], "fake-hardware");
    assert_eq!(shown["uuid"], rows[0]["uuid"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baremetal_operator_flow_against_the_fake() {
    let api = FakeIronicApi::start(FAKE_MAX).await.unwrap();
    api.set_steps_per_read(usize::MAX);
    let bm = Baremetal::new(api.url()).unwrap();
    let ok = |out: CliOutput, what: &str| {
        out.ensure_success(what).unwrap();
        out
    };

    let created = bm
        .json(&[
            "node",
            "create",
            "--driver",
            "fake-hardware",
            "--name",
            "n1",
            "--driver-info",
            "ipmi_port=623",
            "--driver-info",
            "ipmi_password=s3cret",
            "--property",
            "cpus=4",
        ])
        .await
        .unwrap();
    let uuid = created["uuid"].as_str().unwrap().to_owned();
    assert_eq!(created["driver_info"]["ipmi_password"], "******");
    // The peer JSON-decodes KEY=VALUE values: numeric strings arrive as numbers.
    let post = api.requests().into_iter().find(|r| r.method == "POST" && r.status == 201).unwrap();
    assert_eq!(post.body.unwrap()["driver_info"]["ipmi_port"], json!(623));

    let long = bm.json(&["node", "list", "--long"]).await.unwrap();
    assert_eq!(long[0]["driver"], "fake-hardware");

    ok(
        bm.run(&["node", "set", "n1", "--instance-info", "image_source=http://img/x.raw"])
            .await
            .unwrap(),
        "set",
    );
    assert_eq!(api.node("n1").unwrap()["instance_info"]["image_source"], "http://img/x.raw");
    ok(bm.run(&["node", "unset", "n1", "--property", "cpus"]).await.unwrap(), "unset");
    assert_eq!(api.node("n1").unwrap()["properties"], json!({}));

    let validate = bm.json(&["node", "validate", "n1"]).await.unwrap();
    let deploy_row =
        validate.as_array().unwrap().iter().find(|r| r["Interface"] == "deploy").unwrap();
    assert_eq!(deploy_row["Result"], true);

    for (verb, state) in [("manage", "manageable"), ("provide", "available"), ("deploy", "active")]
    {
        ok(bm.run(&["node", verb, "n1", "--wait", "60"]).await.unwrap(), verb);
        assert_eq!(api.node("n1").unwrap()["provision_state"], state, "{verb}");
    }

    ok(bm.run(&["node", "power", "off", "n1"]).await.unwrap(), "power off");
    assert_eq!(api.node("n1").unwrap()["power_state"], "power off");
    ok(bm.run(&["node", "power", "on", "n1"]).await.unwrap(), "power on");
    assert_eq!(api.node("n1").unwrap()["power_state"], "power on");
    ok(bm.run(&["node", "maintenance", "set", "n1", "--reason", "fan"]).await.unwrap(), "maint");
    assert_eq!(api.node("n1").unwrap()["maintenance_reason"], "fan");
    ok(bm.run(&["node", "maintenance", "unset", "n1"]).await.unwrap(), "unmaint");
    assert_eq!(api.node("n1").unwrap()["maintenance"], false);
    ok(
        bm.run(&["node", "boot", "device", "set", "n1", "pxe", "--persistent"]).await.unwrap(),
        "boot",
    );
    assert_eq!(api.boot_device(&uuid).unwrap(), json!({"boot_device": "pxe", "persistent": true}));

    let port = bm.json(&["port", "create", "52:54:00:12:34:56", "--node", &uuid]).await.unwrap();
    assert_eq!(port["node_uuid"], uuid.as_str());
    let ports = bm.json(&["port", "list", "--node", "n1"]).await.unwrap();
    assert_eq!(ports[0]["address"], "52:54:00:12:34:56", "{ports}");

    ok(bm.run(&["node", "undeploy", "n1", "--wait", "60"]).await.unwrap(), "undeploy");
    assert_eq!(api.node("n1").unwrap()["provision_state"], "available");
    ok(bm.run(&["node", "delete", "n1"]).await.unwrap(), "delete");
    assert!(api.node("n1").is_none());
    assert!(api.ports().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baremetal_wait_reports_a_failed_deploy() {
    let api = FakeIronicApi::start(FAKE_MAX).await.unwrap();
    api.set_steps_per_read(usize::MAX);
    let bm = Baremetal::new(api.url()).unwrap();
    bm.run(&["node", "create", "--driver", "fake-hardware", "--name", "n1"]).await.unwrap();
    for verb in ["manage", "provide"] {
        bm.run(&["node", verb, "n1", "--wait", "60"]).await.unwrap().ensure_success(verb).unwrap();
    }
    api.fail_next_operation("n1", "write_image is not supported yet");
    let out = bm.run(&["node", "deploy", "n1", "--wait", "60"]).await.unwrap();
    assert!(!out.success());
    assert!(out.stderr.contains("deploy failed"), "{}", out.stderr);
    assert!(out.stderr.contains("write_image is not supported yet"), "{}", out.stderr);
}

// ---- the ferric CLI ----------------------------------------------------------------

async fn ferric(api: &FakeIronicApi, args: &[&str]) -> CliOutput {
    run_ferric(&api.url(), args).await.unwrap()
}

async fn ferric_ok(api: &FakeIronicApi, args: &[&str]) -> CliOutput {
    let out = ferric(api, args).await;
    out.ensure_success(&format!("ferric {}", args.join(" "))).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferric_create_list_show_set_unset_delete() {
    let api = FakeIronicApi::start(FAKE_MAX).await.unwrap();
    let created = ferric_ok(
        &api,
        &[
            "node",
            "create",
            "--driver",
            "fake-hardware",
            "--name",
            "rack1-u07",
            "--driver-info",
            "ipmi_port=623",
            "--driver-info",
            "ipmi_password=1234",
            "--property",
            r#"root_device={"size": 40}"#,
            "--resource-class",
            "gold",
            "-f",
            "json",
        ],
    )
    .await
    .json()
    .unwrap();
    let uuid = created["uuid"].as_str().unwrap().to_owned();
    let post = api.requests().into_iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(post.version.as_deref(), Some("1.73"));
    let body = post.body.unwrap();
    // ferric keeps numeric-looking values as strings, decodes only JSON objects/lists.
    assert_eq!(body["driver_info"], json!({"ipmi_port": "623", "ipmi_password": "1234"}));
    assert_eq!(body["properties"]["root_device"], json!({"size": 40}));
    assert_eq!(body["resource_class"], "gold");

    ferric_ok(&api, &["node", "create", "--driver", "fake-hardware", "--name", "rack1-u08"]).await;
    let table = ferric_ok(&api, &["node", "list"]).await.stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "{table}");
    assert!(
        lines[1].starts_with("| UUID ") && lines[1].contains("| Provisioning State |"),
        "{table}"
    );
    assert!(lines[3].starts_with(&format!("| {uuid} | rack1-u07 ")), "{table}");
    assert!(lines[3].contains("| enroll ") && lines[3].ends_with("| False       |"), "{table}");
    assert!(lines.iter().all(|l| l.chars().count() == lines[0].chars().count()), "{table}");

    // Paging: the server pages by one node; ferric follows `next` to the end unless a
    // `--limit` asks for one page.
    api.set_max_limit(1);
    api.clear_requests();
    let all = ferric_ok(&api, &["node", "list", "-f", "json"]).await.json().unwrap();
    let names: Vec<&str> =
        all.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["rack1-u07", "rack1-u08"]);
    let lists: Vec<_> = api.requests().into_iter().filter(|r| r.path == "/v1/nodes").collect();
    assert_eq!(lists.len(), 3, "two full pages and an empty one: {lists:?}");
    assert!(lists[1].query.as_deref().unwrap_or_default().contains("marker="), "{lists:?}");
    let one =
        ferric_ok(&api, &["node", "list", "-f", "json", "--limit", "1"]).await.json().unwrap();
    assert_eq!(one.as_array().unwrap().len(), 1);

    let shown = ferric_ok(&api, &["node", "show", "rack1-u07", "-f", "json"]).await.json().unwrap();
    assert_eq!(shown["driver_info"]["ipmi_password"], "******");
    let shown_table = ferric_ok(&api, &["node", "show", "rack1-u07"]).await.stdout;
    assert!(shown_table.contains("| provision_state        | enroll "), "{shown_table}");

    ferric_ok(
        &api,
        &[
            "node",
            "set",
            "rack1-u07",
            "--instance-info",
            "image_source=http://img/x.raw",
            "--extra",
            "rack=1",
        ],
    )
    .await;
    let node = api.node("rack1-u07").unwrap();
    assert_eq!(node["instance_info"]["image_source"], "http://img/x.raw");
    assert_eq!(node["extra"]["rack"], "1");
    ferric_ok(&api, &["node", "unset", "rack1-u07", "--extra", "rack"]).await;
    assert_eq!(api.node("rack1-u07").unwrap()["extra"], json!({}));

    let missing = ferric(&api, &["node", "show", "nope"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        missing.stderr.contains("Node nope could not be found. (HTTP 404)"),
        "{}",
        missing.stderr
    );

    let out = ferric_ok(&api, &["node", "delete", "rack1-u07", "rack1-u08"]).await;
    assert!(out.stderr.contains("Deleted node rack1-u07"), "{}", out.stderr);
    assert!(api.node("rack1-u08").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferric_provisioning_with_wait() {
    let api = FakeIronicApi::start(FAKE_MAX).await.unwrap();
    ferric_ok(&api, &["node", "create", "--driver", "fake-hardware", "--name", "n1"]).await;
    for (verb, state) in [("manage", "manageable"), ("provide", "available"), ("deploy", "active")]
    {
        let out = ferric_ok(&api, &["node", verb, "n1", "--wait", "30"]).await;
        assert_eq!(api.node("n1").unwrap()["provision_state"], state, "{verb}");
        // Not a terminal: one plain line per report, the last one at the goal.
        let last = out.stderr.lines().last().unwrap_or_default().to_owned();
        assert!(last.starts_with(&format!("n1: {state} -> None, ")), "{verb}: {}", out.stderr);
    }
    let puts: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/states/provision"))
        .map(|r| r.body.unwrap()["target"].clone())
        .collect();
    assert_eq!(puts, [json!("manage"), json!("provide"), json!("active")]);

    api.set_last_heartbeat("n1", "2000-01-01T00:00:00.000001");
    api.fail_next_operation("n1", "Timeout reached while cleaning the node");
    let out = ferric(&api, &["node", "undeploy", "n1", "--wait"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("node n1 ended in clean failed: Timeout reached while cleaning the node"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("last heartbeat "), "{}", out.stderr);

    // The JSON form reports the final states for scripts.
    let steps = r#"[{"interface": "deploy", "step": "erase_devices_metadata", "args": {}}]"#;
    ferric_ok(&api, &["node", "manage", "n1", "--wait", "30"]).await;
    let done = ferric_ok(
        &api,
        &["node", "clean", "n1", "--clean-steps", steps, "--wait", "30", "-f", "json"],
    )
    .await
    .json()
    .unwrap();
    assert_eq!(done["provision_state"], "manageable");
    let clean_put =
        api.requests().into_iter().rev().find(|r| r.path.ends_with("/states/provision")).unwrap();
    assert_eq!(clean_put.body.unwrap()["clean_steps"][0]["step"], "erase_devices_metadata");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferric_wait_times_out() {
    let api = FakeIronicApi::start(FAKE_MAX).await.unwrap();
    ferric_ok(&api, &["node", "create", "--driver", "fake-hardware", "--name", "n1"]).await;
    ferric_ok(&api, &["node", "manage", "n1", "--wait", "30"]).await;
    // No simulated work: the node stays in `cleaning`.
    api.freeze();
    let out = ferric(&api, &["node", "provide", "n1", "--wait", "1"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr
            .contains("gave up waiting for node n1 after 1s: it is in cleaning, not available"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferric_power_maintenance_boot_device_validate_ports() {
    let api = FakeIronicApi::start(FAKE_MAX).await.unwrap();
    let created = ferric_ok(
        &api,
        &["node", "create", "--driver", "fake-hardware", "--name", "n1", "-f", "json"],
    )
    .await
    .json()
    .unwrap();
    let uuid = created["uuid"].as_str().unwrap().to_owned();

    ferric_ok(&api, &["node", "power", "on", "n1"]).await;
    assert_eq!(api.node("n1").unwrap()["power_state"], "power on");
    api.clear_requests();
    ferric_ok(&api, &["node", "power", "off", "n1", "--soft", "--power-timeout", "30"]).await;
    let put = &api.requests()[0];
    assert_eq!(put.body, Some(json!({"target": "soft power off", "timeout": 30})));
    assert_eq!(api.node("n1").unwrap()["power_state"], "power off");
    ferric_ok(&api, &["node", "reboot", "n1"]).await;
    assert_eq!(api.node("n1").unwrap()["power_state"], "power on");

    ferric_ok(&api, &["node", "maintenance", "set", "n1", "--reason", "fan"]).await;
    assert_eq!(api.node("n1").unwrap()["maintenance_reason"], "fan");
    ferric_ok(&api, &["node", "maintenance", "unset", "n1"]).await;
    assert_eq!(api.node("n1").unwrap()["maintenance"], false);
    ferric_ok(&api, &["node", "boot-device", "set", "n1", "disk", "--persistent"]).await;
    assert_eq!(api.boot_device(&uuid).unwrap(), json!({"boot_device": "disk", "persistent": true}));

    let validate = ferric(&api, &["node", "validate", "n1"]).await;
    assert!(validate.success());
    assert!(
        validate.stdout.contains("| deploy     | False  | Missing instance_info/image_source |"),
        "{}",
        validate.stdout
    );

    // A node name is resolved to the UUID ports need.
    let port =
        ferric_ok(&api, &["port", "create", "52:54:00:AB:CD:EF", "--node", "n1", "-f", "json"])
            .await
            .json()
            .unwrap();
    assert_eq!(port["node_uuid"], uuid.as_str());
    let port_uuid = port["uuid"].as_str().unwrap().to_owned();
    let dup = ferric(&api, &["port", "create", "52:54:00:ab:cd:ef", "--node", &uuid]).await;
    assert_eq!(dup.status.code(), Some(1));
    assert!(dup.stderr.contains("already exists"), "{}", dup.stderr);
    let bad = ferric(&api, &["port", "create", "not-a-mac", "--node", &uuid]).await;
    assert!(bad.stderr.contains("Expected a MAC address"), "{}", bad.stderr);

    let list = ferric_ok(&api, &["port", "list", "--node", "n1"]).await.stdout;
    assert!(list.contains(&format!("| {port_uuid} | 52:54:00:ab:cd:ef |")), "{list}");
    let shown = ferric_ok(&api, &["port", "show", &port_uuid, "-f", "json"]).await.json().unwrap();
    assert_eq!(shown["address"], "52:54:00:ab:cd:ef");
    ferric_ok(&api, &["port", "delete", &port_uuid]).await;
    assert!(api.ports().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferric_reads_the_api_url_from_the_environment() {
    let api = FakeIronicApi::start(FAKE_MAX).await.unwrap();
    let mut command = tokio::process::Command::new(ferric_binary().unwrap());
    command.args(["node", "list", "-f", "json"]).env("FERRIC_URL", api.url());
    let out = run_child(command, "ferric node list").await.unwrap();
    out.ensure_success("ferric node list").unwrap();
    assert_eq!(out.json().unwrap(), json!([]));
    assert_eq!(api.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferric_negotiates_with_older_servers() {
    // The server is older than ferric's preferred 1.73: one 406, then the server's max.
    let api = FakeIronicApi::start(ApiVersion::new(1, 60)).await.unwrap();
    ferric_ok(&api, &["node", "create", "--driver", "fake-hardware", "--name", "n1"]).await;
    assert_eq!(
        summary(&api.requests()),
        [req("POST", "/v1/nodes", Some("1.73"), 406), req("POST", "/v1/nodes", Some("1.60"), 201)]
    );
    // A dict configdrive needs 1.56: fine here.
    ferric_ok(&api, &["node", "manage", "n1"]).await;

    let older = FakeIronicApi::start(ApiVersion::new(1, 50)).await.unwrap();
    ferric_ok(&older, &["node", "create", "--driver", "fake-hardware", "--name", "n1"]).await;
    for verb in ["manage", "provide"] {
        ferric_ok(&older, &["node", verb, "n1", "--wait", "30"]).await;
    }
    let out =
        ferric(&older, &["node", "deploy", "n1", "--config-drive", r#"{"meta_data": {}}"#]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("speaks microversions up to 1.50; this command needs at least 1.56"),
        "{}",
        out.stderr
    );
}
