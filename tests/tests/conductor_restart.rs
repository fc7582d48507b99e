//! `kill -9` of the real `ferric conductor` process in the middle of a deploy, then a
//! restart on the same data directory: the database is intact, no node is lost, and the
//! node left in `wait call-back` moves to `deploy failed` with a `last_error` saying the
//! conductor restarted (Ironic's takeover behaviour).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferric_tests::agent_process::free_port;
use ferric_tests::workspace_bin::workspace_binary;
use serde_json::{json, Value};

struct ConductorProcess {
    child: Child,
    url: String,
}

impl ConductorProcess {
    fn start(data_dir: &std::path::Path, config: &std::path::Path) -> ConductorProcess {
        let binary = workspace_binary("ferric-conductor", "ferric").unwrap();
        let port = free_port().unwrap();
        let log = std::fs::File::create(data_dir.join(format!("conductor-{port}.log"))).unwrap();
        let child = Command::new(binary)
            .args(["conductor", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        ConductorProcess { child, url: format!("http://127.0.0.1:{port}") }
    }

    /// SIGKILL: no shutdown code runs.
    fn kill_9(mut self) {
        // SAFETY: kill(2) on the PID of a child this test started and has not reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(rc, 0);
        let status = self.child.wait().unwrap();
        assert!(!status.success());
        std::mem::forget(self);
    }
}

impl Drop for ConductorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(
    http: &reqwest::Client,
    url: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http
        .request(method, format!("{url}{path}"))
        .header("X-OpenStack-Ironic-API-Version", "1.110");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls until the API answers, then until `done(node)` holds.
async fn wait_node(
    http: &reqwest::Client,
    url: &str,
    uuid: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = http
            .get(format!("{url}/v1/nodes/{uuid}"))
            .header("X-OpenStack-Ironic-API-Version", "1.110")
            .send()
            .await;
        if let Ok(resp) = reply {
            if resp.status() == 200 {
                let node: Value = resp.json().await.unwrap();
                if done(&node) {
                    return node;
                }
            }
        }
        assert!(Instant::now() < deadline, "node {uuid} never reached the expected state");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_deploy_then_restart_fails_the_deploy_and_loses_nothing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    // No agent will ever boot here, so the deploy waits in `wait call-back` until the
    // conductor is killed; automated cleaning is off so `provide` goes straight to
    // `available`.
    let config = dir.path().join("ferric.toml");
    std::fs::write(&config, "[cleaning]\nautomated_clean = false\n").unwrap();

    let first = ConductorProcess::start(dir.path(), &config);
    let url = first.url.clone();
    let mut uuids = Vec::new();
    for i in 0..20 {
        let body = json!({"driver": "fake-hardware", "name": format!("n{i}")});
        // The first requests may race the listener coming up.
        let uuid = loop {
            if let Ok(resp) = http
                .post(format!("{url}/v1/nodes"))
                .header("X-OpenStack-Ironic-API-Version", "1.110")
                .json(&body)
                .send()
                .await
            {
                assert_eq!(resp.status(), 201);
                let node: Value = resp.json().await.unwrap();
                break node["uuid"].as_str().unwrap().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        uuids.push(uuid);
    }
    let target = uuids[0].clone();
    for (verb, state) in [("manage", "manageable"), ("provide", "available")] {
        let (status, body) = call(
            &http,
            &url,
            reqwest::Method::PUT,
            &format!("/v1/nodes/{target}/states/provision"),
            Some(json!({"target": verb})),
        )
        .await;
        assert_eq!(status, 202, "{verb}: {body}");
        wait_node(&http, &url, &target, |n| n["provision_state"] == state).await;
    }
    let (status, body) = call(
        &http,
        &url,
        reqwest::Method::PATCH,
        &format!("/v1/nodes/{target}"),
        Some(json!([{"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1:9/img.raw"},
                    {"op": "add", "path": "/instance_info/image_checksum", "value": "a".repeat(64)}])),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &http,
        &url,
        reqwest::Method::PUT,
        &format!("/v1/nodes/{target}/states/provision"),
        Some(json!({"target": "active"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    wait_node(&http, &url, &target, |n| n["provision_state"] == "wait call-back").await;

    first.kill_9();

    let second = ConductorProcess::start(dir.path(), &config);
    let node = wait_node(&http, &second.url, &target, |_| true).await;
    assert_eq!(node["provision_state"], "deploy failed", "{node}");
    let last_error = node["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("restarted"), "{last_error}");
    assert_eq!(node["reservation"], Value::Null);
    let (status, list) =
        call(&http, &second.url, reqwest::Method::GET, "/v1/nodes?limit=100", None).await;
    assert_eq!(status, 200);
    let mut listed: Vec<String> = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["uuid"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    uuids.sort();
    assert_eq!(listed, uuids, "every node survived the kill");
    drop(second);

    let store = ferric_conductor::store::Store::open(&dir.path().join("ferric.db")).await.unwrap();
    assert!(store.integrity_check().await.unwrap());
    store.close().await;
}
