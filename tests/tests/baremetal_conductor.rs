//! The real `baremetal` CLI (python-ironicclient, from the venv `.ci/run` creates)
//! against the real Ferric conductor: every command an operator uses to enrol and operate
//! a node must exit 0 and leave the expected values in the conductor.

use std::time::Duration;

use ferric_conductor::config::ConductorConfig;
use ferric_conductor::service;
use ferric_tests::baremetal::{Baremetal, CliOutput};
use serde_json::{json, Value};

struct Conductor {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Conductor {
    async fn start() -> Conductor {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config =
            ConductorConfig { data_dir: dir.path().to_owned(), listen: addr, ..Default::default() };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            service::run_on(config, listener, service::default_drivers(), async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Conductor { url: format!("http://{addr}"), stop: Some(stop), task, _dir: dir }
    }

    /// The node as the conductor's API shows it.
    async fn node(&self, ident: &str) -> Option<Value> {
        let resp = http()
            .get(format!("{}/v1/nodes/{ident}", self.url))
            .header("X-OpenStack-Ironic-API-Version", "1.110")
            .send()
            .await
            .unwrap();
        (resp.status() == 200).then_some(resp.json().await.unwrap())
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap();
    }
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn ok(out: CliOutput, what: &str) -> CliOutput {
    out.ensure_success(what).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baremetal_cli_operates_the_real_conductor() {
    let c = Conductor::start().await;
    let bm = Baremetal::new(c.url.clone()).unwrap();

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
    assert_eq!(created["provision_state"], "enroll");
    assert_eq!(created["driver_info"]["ipmi_password"], "******");
    // The client JSON-decodes KEY=VALUE values: the numeric string arrived as a number.
    assert_eq!(c.node("n1").await.unwrap()["driver_info"]["ipmi_port"], json!(623));

    let list = bm.json(&["node", "list"]).await.unwrap();
    assert_eq!(list[0]["name"], "n1", "{list}");
    let long = bm.json(&["node", "list", "--long"]).await.unwrap();
    assert_eq!(long[0]["driver"], "fake-hardware", "{long}");
    let shown = bm.json(&["node", "show", "n1"]).await.unwrap();
    assert_eq!(shown["uuid"], uuid.as_str());

    ok(
        bm.run(&["node", "set", "n1", "--instance-info", "image_source=http://img/x.raw"])
            .await
            .unwrap(),
        "set",
    );
    assert_eq!(c.node("n1").await.unwrap()["instance_info"]["image_source"], "http://img/x.raw");
    ok(bm.run(&["node", "unset", "n1", "--property", "cpus"]).await.unwrap(), "unset");
    assert_eq!(c.node("n1").await.unwrap()["properties"], json!({}));

    let validate = bm.json(&["node", "validate", "n1"]).await.unwrap();
    let power_row =
        validate.as_array().unwrap().iter().find(|r| r["Interface"] == "power").unwrap();
    assert_eq!(power_row["Result"], true, "{validate}");

    ok(bm.run(&["node", "manage", "n1", "--wait", "60"]).await.unwrap(), "manage");
    let node = c.node("n1").await.unwrap();
    assert_eq!(node["provision_state"], "manageable");
    assert_eq!(node["power_state"], "power off");

    for (verb, state) in [("on", "power on"), ("off", "power off")] {
        ok(bm.run(&["node", "power", verb, "n1"]).await.unwrap(), verb);
        // The power change is carried out after the 202; wait for the BMC's answer.
        let mut seen = Value::Null;
        for _ in 0..100 {
            seen = c.node("n1").await.unwrap()["power_state"].clone();
            if seen == state {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(seen, state);
    }

    ok(bm.run(&["node", "maintenance", "set", "n1", "--reason", "fan"]).await.unwrap(), "maint");
    let node = c.node("n1").await.unwrap();
    assert_eq!(
        (node["maintenance"].clone(), node["maintenance_reason"].clone()),
        (json!(true), json!("fan"))
    );
    ok(bm.run(&["node", "maintenance", "unset", "n1"]).await.unwrap(), "unmaint");
    assert_eq!(c.node("n1").await.unwrap()["maintenance"], false);

    ok(
        bm.run(&["node", "boot", "device", "set", "n1", "pxe", "--persistent"]).await.unwrap(),
        "boot device",
    );
    let boot = bm.json(&["node", "boot", "device", "show", "n1"]).await.unwrap();
    assert_eq!(boot["boot_device"], "pxe", "{boot}");

    let port = bm.json(&["port", "create", "52:54:00:12:34:56", "--node", &uuid]).await.unwrap();
    assert_eq!(port["node_uuid"], uuid.as_str());
    let ports = bm.json(&["port", "list", "--node", "n1"]).await.unwrap();
    assert_eq!(ports[0]["address"], "52:54:00:12:34:56", "{ports}");

    ok(bm.run(&["node", "delete", "n1"]).await.unwrap(), "delete");
    assert!(c.node("n1").await.is_none());
    let ports = bm.json(&["port", "list"]).await.unwrap();
    assert_eq!(ports, json!([]));
    c.stop().await;
}

/// python-ironicclient asks for its newest microversion (1.115), above the conductor's
/// 1.110: the conductor refuses it with a 406 naming its range, and the client negotiates
/// down so that `node list` and `node show` still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baremetal_negotiates_down_from_a_newer_client_version() {
    let c = ferric_tests::conductor::InProcessConductor::start(|_| {}).await.unwrap();
    let refused = http()
        .get(format!("{}/v1/nodes", c.url))
        .header("X-OpenStack-Ironic-API-Version", "1.115")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 406);
    let max = refused.headers().get("X-OpenStack-Ironic-API-Maximum-Version").unwrap();
    assert_eq!(max.to_str().unwrap(), "1.110");

    let bm = Baremetal::new(c.url.clone()).unwrap();
    ok(
        bm.run(&["node", "create", "--driver", "fake-hardware", "--name", "rack1-u07"])
            .await
            .unwrap(),
        "node create",
    );
    let rows = bm.json(&["node", "list"]).await.unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "rack1-u07");
    assert_eq!(rows[0]["provision_state"], "enroll");
    assert_eq!(rows[0]["maintenance"], false);
    let shown = bm.json(&["node", "show", "rack1-u07"]).await.unwrap();
    assert_eq!(shown["driver"], "fake-hardware");
    assert_eq!(shown["uuid"], rows[0]["uuid"]);
    c.stop().await;
}
