//! The `ferric` CLI against the real conductor, in-process with the `fake-hardware` driver:
//! every command must exit as documented and leave the expected values in the conductor.
//! The flows that need a booted agent (`provide`, `deploy`, `undeploy` with `--wait`) are
//! in `conductor_flows.rs`, next to the lab that boots one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use ferric_conductor::bmc::fake::FakeDriver;
use ferric_conductor::bmc::BootDevice;
use ferric_shared::api_version::ApiVersion;
use ferric_tests::baremetal::{ferric_binary, run_child, run_ferric, CliOutput};
use ferric_tests::conductor::InProcessConductor;
use serde_json::{json, Value};

async fn ferric(c: &InProcessConductor, args: &[&str]) -> CliOutput {
    run_ferric(&c.url, args).await.unwrap()
}

async fn ferric_ok(c: &InProcessConductor, args: &[&str]) -> CliOutput {
    let out = ferric(c, args).await;
    out.ensure_success(&format!("ferric {}", args.join(" "))).unwrap();
    out
}

async fn node(c: &InProcessConductor, ident: &str) -> Value {
    c.node(ident).await.unwrap().unwrap_or_else(|| panic!("node {ident} is gone"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferric_create_list_show_set_unset_delete() {
    let c = InProcessConductor::start(|_| {}).await.unwrap();
    let created = ferric_ok(
        &c,
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
    assert_eq!(created["driver_info"]["ipmi_password"], "******");
    // ferric keeps numeric-looking values as strings, decodes only JSON objects/lists.
    let stored = node(&c, &uuid).await;
    assert_eq!(stored["driver_info"]["ipmi_port"], json!("623"));
    assert_eq!(stored["properties"]["root_device"], json!({"size": 40}));
    assert_eq!(stored["resource_class"], "gold");

    ferric_ok(&c, &["node", "create", "--driver", "fake-hardware", "--name", "rack1-u08"]).await;
    let table = ferric_ok(&c, &["node", "list"]).await.stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "{table}");
    assert!(
        lines[1].starts_with("| UUID ") && lines[1].contains("| Provisioning State |"),
        "{table}"
    );
    let row = lines.iter().find(|l| l.contains("rack1-u07")).unwrap();
    assert!(row.starts_with(&format!("| {uuid} | rack1-u07 ")), "{table}");
    assert!(row.contains("| enroll ") && row.ends_with("| False       |"), "{table}");
    assert!(lines.iter().all(|l| l.chars().count() == lines[0].chars().count()), "{table}");

    let shown = ferric_ok(&c, &["node", "show", "rack1-u07", "-f", "json"]).await.json().unwrap();
    assert_eq!(shown["driver_info"]["ipmi_password"], "******");
    assert_eq!(shown["uuid"], uuid.as_str());
    let shown_table = ferric_ok(&c, &["node", "show", "rack1-u07"]).await.stdout;
    assert!(shown_table.contains("| provision_state        | enroll "), "{shown_table}");

    ferric_ok(
        &c,
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
    let stored = node(&c, "rack1-u07").await;
    assert_eq!(stored["instance_info"]["image_source"], "http://img/x.raw");
    assert_eq!(stored["extra"]["rack"], "1");
    ferric_ok(&c, &["node", "unset", "rack1-u07", "--extra", "rack"]).await;
    assert_eq!(node(&c, "rack1-u07").await["extra"], json!({}));

    let missing = ferric(&c, &["node", "show", "nope"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        missing.stderr.contains("Node nope could not be found. (HTTP 404)"),
        "{}",
        missing.stderr
    );

    let out = ferric_ok(&c, &["node", "delete", "rack1-u07", "rack1-u08"]).await;
    assert!(out.stderr.contains("Deleted node rack1-u07"), "{}", out.stderr);
    assert!(c.node("rack1-u07").await.unwrap().is_none());
    assert!(c.node("rack1-u08").await.unwrap().is_none());
    c.stop().await;
}

/// More nodes than the conductor's largest page (1000): ferric follows the `next` links
/// to the end unless `--limit` asks for one page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferric_list_follows_next_links_past_the_page_size() {
    let c = InProcessConductor::start(|_| {}).await.unwrap();
    let count = 1003;
    for i in 0..count {
        c.create_node(&json!({"driver": "fake-hardware", "name": format!("n{i:04}")}))
            .await
            .unwrap();
    }
    let all = ferric_ok(&c, &["node", "list", "-f", "json"]).await.json().unwrap();
    let mut names: Vec<&str> =
        all.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count, "every node exactly once");
    assert_eq!(names.last(), Some(&"n1002"));
    let one = ferric_ok(&c, &["node", "list", "-f", "json", "--limit", "7"]).await.json().unwrap();
    assert_eq!(one.as_array().unwrap().len(), 7);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferric_manage_waits_for_manageable() {
    let c = InProcessConductor::start(|_| {}).await.unwrap();
    ferric_ok(&c, &["node", "create", "--driver", "fake-hardware", "--name", "n1"]).await;
    let out = ferric_ok(&c, &["node", "manage", "n1", "--wait", "30"]).await;
    assert_eq!(node(&c, "n1").await["provision_state"], "manageable");
    // Not a terminal: one plain line per report, the last one at the goal.
    let last = out.stderr.lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("n1: manageable -> None, "), "{}", out.stderr);
    // Already manageable: a second manage is refused by the state machine, in Ironic's words.
    let again = ferric(&c, &["node", "manage", "n1", "--wait", "30"]).await;
    assert_eq!(again.status.code(), Some(1), "{}", again.stderr);
    assert!(again.stderr.contains("(HTTP 400)"), "{}", again.stderr);
    c.stop().await;
}

/// A `provide` whose agent never boots: the node sits in `clean wait` and `--wait 1` gives
/// up, naming the state it is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferric_wait_times_out() {
    let c = InProcessConductor::start_with_driver(FakeDriver::new(), |_| {}).await.unwrap();
    let created = ferric_ok(
        &c,
        &["node", "create", "--driver", "fake-hardware", "--name", "n1", "-f", "json"],
    )
    .await
    .json()
    .unwrap();
    let uuid = created["uuid"].as_str().unwrap().to_owned();
    ferric_ok(&c, &["port", "create", "52:54:00:00:00:01", "--node", &uuid]).await;
    ferric_ok(&c, &["node", "manage", "n1", "--wait", "30"]).await;
    let out = ferric(&c, &["node", "provide", "n1", "--wait", "1"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("gave up waiting for node n1 after 1s: it is in clean wait, not available"),
        "{}",
        out.stderr
    );
    assert_eq!(node(&c, "n1").await["provision_state"], "clean wait");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferric_power_maintenance_boot_device_validate_ports() {
    let c = InProcessConductor::start(|_| {}).await.unwrap();
    let created = ferric_ok(
        &c,
        &["node", "create", "--driver", "fake-hardware", "--name", "n1", "-f", "json"],
    )
    .await
    .json()
    .unwrap();
    let uuid = created["uuid"].as_str().unwrap().to_owned();
    let within = Duration::from_secs(10);

    ferric_ok(&c, &["node", "power", "on", "n1"]).await;
    // The power change is carried out after the 202; wait for the BMC's answer.
    let on = json!("power on");
    assert_eq!(c.wait_for("n1", "power_state", &on, within).await.unwrap(), on);
    ferric_ok(&c, &["node", "power", "off", "n1", "--soft", "--power-timeout", "30"]).await;
    let off = json!("power off");
    assert_eq!(c.wait_for("n1", "power_state", &off, within).await.unwrap(), off);
    ferric_ok(&c, &["node", "reboot", "n1"]).await;
    assert_eq!(c.wait_for("n1", "power_state", &on, within).await.unwrap(), on);

    ferric_ok(&c, &["node", "maintenance", "set", "n1", "--reason", "fan"]).await;
    assert_eq!(node(&c, "n1").await["maintenance_reason"], "fan");
    ferric_ok(&c, &["node", "maintenance", "unset", "n1"]).await;
    assert_eq!(node(&c, "n1").await["maintenance"], false);
    ferric_ok(&c, &["node", "boot-device", "set", "n1", "pxe", "--persistent"]).await;
    let bmc = c.driver.node(&uuid).unwrap();
    assert_eq!((bmc.persistent_device, bmc.next_boot), (BootDevice::Pxe, None));

    let validate = ferric(&c, &["node", "validate", "n1"]).await;
    assert!(validate.success(), "{}", validate.stderr);
    assert!(validate.stdout.contains("| power "), "{}", validate.stdout);
    let deploy_row = validate.stdout.lines().find(|l| l.starts_with("| deploy ")).unwrap();
    assert!(deploy_row.contains("| False "), "{}", validate.stdout);
    assert!(deploy_row.contains("image_source"), "{}", validate.stdout);

    // A node name is resolved to the UUID ports need.
    let port =
        ferric_ok(&c, &["port", "create", "52:54:00:AB:CD:EF", "--node", "n1", "-f", "json"])
            .await
            .json()
            .unwrap();
    assert_eq!(port["node_uuid"], uuid.as_str());
    let port_uuid = port["uuid"].as_str().unwrap().to_owned();
    let dup = ferric(&c, &["port", "create", "52:54:00:ab:cd:ef", "--node", &uuid]).await;
    assert_eq!(dup.status.code(), Some(1));
    assert!(dup.stderr.contains("already exists"), "{}", dup.stderr);
    let bad = ferric(&c, &["port", "create", "not-a-mac", "--node", &uuid]).await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(bad.stderr.contains("MAC address"), "{}", bad.stderr);

    let list = ferric_ok(&c, &["port", "list", "--node", "n1"]).await.stdout;
    assert!(list.contains(&format!("| {port_uuid} | 52:54:00:ab:cd:ef |")), "{list}");
    let shown = ferric_ok(&c, &["port", "show", &port_uuid, "-f", "json"]).await.json().unwrap();
    assert_eq!(shown["address"], "52:54:00:ab:cd:ef");
    ferric_ok(&c, &["port", "delete", &port_uuid]).await;
    assert!(c.ports().await.unwrap().is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferric_reads_the_api_url_from_the_environment() {
    let c = InProcessConductor::start(|_| {}).await.unwrap();
    let mut command = tokio::process::Command::new(ferric_binary().unwrap());
    command.args(["node", "list", "-f", "json"]).env("FERRIC_URL", &c.url);
    let out = run_child(command, "ferric node list").await.unwrap();
    out.ensure_success("ferric node list").unwrap();
    assert_eq!(out.json().unwrap(), json!([]));
    c.stop().await;
}

/// What the version stub saw: method, path and the version header of each request.
type Seen = Arc<Mutex<Vec<(String, String, Option<String>, u16)>>>;

/// A one-purpose stand-in for an Ironic older than ferric: every request above `max`
/// gets Ironic's 406 with the version headers; any other gets a fixed node, so that the
/// negotiation is all there is to observe. Returns the URL and the requests it saw.
async fn old_server(max: &'static str) -> (String, Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
        let log = log.clone();
        async move {
            let version = headers
                .get("X-OpenStack-Ironic-API-Version")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let wanted = version.as_deref().and_then(|v| v.parse::<ApiVersion>().ok());
            let too_new = wanted.is_some_and(|v| v > max.parse::<ApiVersion>().unwrap());
            let (status, body) = if too_new {
                let fault = json!({
                    "faultstring": format!("Version {} was requested but the minor version is \
                        not supported by this service. The supported version range is: \
                        [1.1, {max}].", version.clone().unwrap_or_default()),
                    "faultcode": "Client", "debuginfo": null
                });
                (StatusCode::NOT_ACCEPTABLE, json!({"error_message": fault.to_string()}))
            } else {
                let status =
                    if method == Method::POST { StatusCode::CREATED } else { StatusCode::OK };
                let node = json!({"uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123", "name": "n1",
                    "provision_state": "available", "power_state": "power off",
                    "maintenance": false, "instance_uuid": null});
                (status, node)
            };
            log.lock().unwrap().push((
                method.to_string(),
                uri.path().to_owned(),
                version,
                status.as_u16(),
            ));
            let headers = [
                ("X-OpenStack-Ironic-API-Minimum-Version", "1.1"),
                ("X-OpenStack-Ironic-API-Maximum-Version", max),
            ];
            (status, headers, axum::Json(body))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, seen, task)
}

fn req(
    method: &str,
    path: &str,
    version: &str,
    status: u16,
) -> (String, String, Option<String>, u16) {
    (method.to_owned(), path.to_owned(), Some(version.to_owned()), status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferric_negotiates_with_older_servers() {
    // The server is older than ferric's preferred 1.73: one 406, then the server's max.
    let (url, seen, task) = old_server("1.60").await;
    let out = run_ferric(&url, &["node", "create", "--driver", "fake-hardware", "--name", "n1"])
        .await
        .unwrap();
    out.ensure_success("ferric node create").unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [req("POST", "/v1/nodes", "1.73", 406), req("POST", "/v1/nodes", "1.60", 201)]
    );
    task.abort();

    // A dict configdrive needs 1.56: a 1.50 server cannot take it, and ferric says why.
    let (url, seen, task) = old_server("1.50").await;
    let out = run_ferric(&url, &["node", "deploy", "n1", "--config-drive", r#"{"meta_data": {}}"#])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("speaks microversions up to 1.50; this command needs at least 1.56"),
        "{}",
        out.stderr
    );
    assert!(
        seen.lock().unwrap().iter().all(|r| r.0 != "PUT" || r.3 == 406),
        "no provision request was accepted: {:?}",
        seen.lock().unwrap()
    );
    task.abort();
}
