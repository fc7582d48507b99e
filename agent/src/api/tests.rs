//! The API over real HTTP(S) on 127.0.0.1, with a fake host tree and [`FakePower`].

use std::future::Future;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ferric_shared::command::{CommandResult, CommandStatus};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use super::*;
use crate::host::HostRoot;
use crate::power::{FakePower, PowerAction};

const GUARD: Duration = Duration::from_secs(20);

fn token() -> String {
    "t".repeat(43)
}

struct Agent {
    base: String,
    client: reqwest::Client,
    handle: ApiHandle,
    session: Arc<Session>,
    power: Arc<FakePower>,
    logs: Arc<LogBuffer>,
    server: JoinHandle<std::io::Result<()>>,
    host: HostRoot,
    _dir: tempfile::TempDir,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client(trusted: Option<rustls::pki_types::CertificateDer<'static>>) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(cert) = trusted {
        roots.add(cert).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap()
}

fn fake_host() -> (tempfile::TempDir, HostRoot) {
    let dir = tempfile::tempdir().unwrap();
    // A complete generated host (cpuinfo, sysfs, …), then the files these tests read.
    let host = crate::fixtures::bios_vm().build(dir.path()).unwrap().host;
    std::fs::create_dir_all(host.path("/proc")).unwrap();
    std::fs::create_dir_all(host.path("/dev")).unwrap();
    std::fs::write(host.path("/proc/cmdline"), "BOOTIF=01-52-54-00-12-34-56 ipa-debug=1\n")
        .unwrap();
    std::fs::write(host.path("/proc/mounts"), "proc /proc proc rw 0 0\n").unwrap();
    std::fs::write(host.path("/proc/meminfo"), "MemTotal:        2048000 kB\n").unwrap();
    std::fs::write(
        host.path("/dev/kmsg"),
        "6,0,0,-;Linux version 6.1.0\n \
SUBSYSTEM=block\n4,1,2500000,-;sda: detected capacity change\n",
    )
    .unwrap();
    (dir, host)
}

/// Starts an agent API; `tls` is the server certificate and key, if any.
async fn start(
    held_token: Option<String>,
    tls: Option<&rcgen::CertifiedKey<rcgen::KeyPair>>,
) -> Agent {
    let (dir, host) = fake_host();
    let session = Arc::new(Session::new(held_token));
    let power = Arc::new(FakePower::new());
    let logs = Arc::new(LogBuffer::new(64 * 1024));
    let (app, handle) = build(ApiDeps {
        session: session.clone(),
        inventory: InventorySources::new(host.clone(), None),
        power: power.clone(),
        logs: logs.clone(),
        version: "0.1.0".into(),
        image_http: crate::image::source::HttpOptions::default(),
        erase: crate::erase::run::EraseConfig::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (scheme, server_tls, trusted) = match tls {
        None => ("http", None, None),
        Some(ck) => {
            let key =
                rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
            let config = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![ck.cert.der().clone()], key)
                .unwrap();
            ("https", Some(Arc::new(config)), Some(ck.cert.der().clone()))
        }
    };
    let server = tokio::spawn(serve(listener, server_tls, app, handle.stopped()));
    Agent {
        base: format!("{scheme}://127.0.0.1:{port}"),
        client: client(trusted),
        handle,
        session,
        power,
        logs,
        server,
        host,
        _dir: dir,
    }
}

struct Reply {
    status: StatusCode,
    content_type: String,
    body: Value,
}

impl Reply {
    fn result(&self) -> CommandResult {
        serde_json::from_value(self.body.clone()).unwrap()
    }

    fn assert_fault(&self, status: u16, faultcode: &str, faultstring: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.content_type, "application/json");
        assert_eq!(self.body, json!({"faultcode": faultcode, "faultstring": faultstring}));
    }
}

impl Agent {
    fn url(&self, path: &str, query: &str) -> String {
        if query.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{query}", self.base)
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = tokio::time::timeout(GUARD, req.send()).await.unwrap().unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, content_type, body }
    }

    async fn get(&self, path: &str, query: &str) -> Reply {
        self.send(self.client.get(self.url(path, query))).await
    }

    async fn post_raw(&self, path: &str, query: &str, body: impl Into<reqwest::Body>) -> Reply {
        self.send(self.client.post(self.url(path, query)).body(body)).await
    }

    async fn post(&self, path: &str, query: &str, body: Value) -> Reply {
        self.send(self.client.post(self.url(path, query)).json(&body)).await
    }

    /// POSTs a command with the right token.
    async fn command(&self, name: &str, params: Value, wait: bool) -> Reply {
        let query = format!("agent_token={}&wait={wait}", token());
        self.post("/v1/commands/", &query, json!({"name": name, "params": params})).await
    }

    async fn list(&self) -> Vec<CommandResult> {
        let r = self.get("/v1/commands/", &format!("agent_token={}", token())).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        serde_json::from_value(r.body["commands"].clone()).unwrap()
    }

    /// Waits (by asking the API, never by sleeping) until the list has `n` entries.
    async fn wait_for_entries(&self, n: usize) -> Vec<CommandResult> {
        tokio::time::timeout(GUARD, async {
            loop {
                let list = self.list().await;
                if list.len() >= n {
                    return list;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap()
    }
}

/// Whether the forced-heartbeat notification has fired (consuming it).
fn assert_heartbeat_forced(session: &Session, expected: bool) {
    // `notify_one` leaves a permit when nobody waits, so a fired notification makes the
    // first poll ready.
    let mut notified = std::pin::pin!(session.command_finished.notified());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert_eq!(notified.as_mut().poll(&mut cx).is_ready(), expected);
}

#[tokio::test]
async fn unauthenticated_routes_describe_the_api() {
    let a = start(None, None).await;
    let root = a.get("/", "").await;
    assert_eq!(root.status, StatusCode::OK);
    assert_eq!(root.content_type, "application/json");
    let v = json!({"id": "v1", "links": [{"href": format!("{}/v1/", a.base), "rel": "self"}]});
    assert_eq!(root.body["default_version"], v);
    assert_eq!(root.body["versions"], json!([v]));
    assert_eq!(root.body["name"], "OpenStack Ironic Python Agent API");

    for path in ["/v1", "/v1/"] {
        let r = a.get(path, "").await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.body["id"], "v1");
        assert_eq!(r.body["commands"][0]["href"], format!("{}/v1/commands/", a.base));
        assert_eq!(r.body["status"][1]["rel"], "bookmark");
        assert_eq!(
            r.body["media_types"][0]["type"],
            "application/vnd.openstack.ironic-python-agent.v1+json"
        );
    }
    for path in ["/v1/status", "/v1/status/", "/status"] {
        let r = a.get(path, "").await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.body["version"], "0.1.0");
        // serde_json's default float parsing may differ in the last bit.
        let started_at = r.body["started_at"].as_f64().unwrap();
        assert!((started_at - a.session.started_at).abs() < 1e-3, "{started_at}");
    }
}

#[tokio::test]
async fn command_routes_need_the_held_token() {
    let a = start(None, None).await;
    let body = json!({"name": "standby.sync", "params": {}});
    let unauthorized = "401 Unauthorized: Token invalid.";
    // No token held yet: even a well-formed token is refused.
    for query in [String::new(), format!("agent_token={}", token())] {
        a.get("/v1/commands/", &query).await.assert_fault(401, "Client", unauthorized);
        a.post("/v1/commands/", &query, body.clone()).await.assert_fault(
            401,
            "Client",
            unauthorized,
        );
        a.get("/v1/commands/some-id", &query).await.assert_fault(401, "Client", unauthorized);
    }
    a.session.set_token(token());
    for query in ["", "agent_token=", "agent_token=wrong", "wait=true"] {
        a.get("/v1/commands/", query).await.assert_fault(401, "Client", unauthorized);
        a.post("/commands/", query, body.clone()).await.assert_fault(401, "Client", unauthorized);
    }
    assert!(a.power.actions().is_empty(), "a refused command must not run");
    let ok = a.get("/v1/commands/", &format!("agent_token={}", token())).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body, json!({"commands": []}));
}

#[tokio::test]
async fn every_prefix_and_slash_form_works_and_results_stay_in_order() {
    let a = start(Some(token()), None).await;
    let q = format!("agent_token={}", token());
    let mut ids = Vec::new();
    for path in ["/v1/commands/", "/v1/commands", "/commands/", "/commands"] {
        let r = a.post(path, &q, json!({"name": "standby.sync", "params": {}})).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        let result = r.result();
        assert_eq!(result.command_name, "sync");
        assert_eq!(result.command_status, CommandStatus::Succeeded);
        assert_eq!(result.command_result, None);
        assert_eq!(r.body.as_object().unwrap().len(), 5);
        ids.push(result.id);
    }
    for path in ["/v1/commands/", "/v1/commands", "/commands/", "/commands"] {
        let r = a.get(path, &q).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let listed: Vec<String> = r.body["commands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(listed, ids, "{path}");
    }
    for prefix in ["/v1/commands/", "/commands/"] {
        let r = a.get(&format!("{prefix}{}", ids[2]), &q).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.result().id, ids[2]);
        a.get(&format!("{prefix}nope"), &q).await.assert_fault(
            404,
            "Client",
            "Not found: Command Result with id nope not found.",
        );
    }
    assert_eq!(a.power.actions(), vec![PowerAction::SyncDisks; 4]);
    // Sync commands do not force a heartbeat.
    assert_heartbeat_forced(&a.session, false);
}

#[tokio::test]
async fn refused_requests_use_ipa_codes_and_record_nothing() {
    let a = start(Some(token()), None).await;
    let q = format!("agent_token={}", token());
    let invalid = "Invalid request body: Missing or invalid name or params";
    let table: Vec<(Value, u16, &str)> = vec![
        (json!({"name": "standby.sync"}), 400, invalid),
        (json!({"params": {}}), 400, invalid),
        (json!({"name": "standby.sync", "params": []}), 400, invalid),
        (json!({"name": "standby.sync", "params": "x"}), 400, invalid),
        (json!({"name": 7, "params": {}}), 400, invalid),
        (json!([1, 2]), 400, invalid),
        (
            json!({"name": "sync", "params": {}}),
            400,
            "Invalid command: Command name must be of the form <extension>.<name>",
        ),
        (
            json!({"name": "bogus.sync", "params": {}}),
            404,
            "Not found: Extension with id bogus not found.",
        ),
        (
            json!({"name": "standby.bogus", "params": {}}),
            400,
            "Invalid command: Unknown command: bogus",
        ),
        (
            json!({"name": "rescue.finalize_rescue", "params": {}}),
            400,
            "Invalid command: Unknown command: finalize_rescue",
        ),
        (
            json!({"name": "service.execute_service_step", "params": {}}),
            400,
            "Invalid command parameters: missing parameter step",
        ),
        (
            json!({"name": "clean.execute_clean_step", "params": {}}),
            400,
            "Invalid command parameters: missing parameter step",
        ),
    ];
    for (body, code, text) in table {
        a.post("/v1/commands/", &q, body).await.assert_fault(code, "Client", text);
    }
    let bad_params = a.command("standby.sync", json!({"force": true}), false).await;
    assert_eq!(bad_params.status, StatusCode::BAD_REQUEST);
    let text = bad_params.body["faultstring"].as_str().unwrap();
    assert!(text.starts_with("Invalid command parameters: ") && text.contains("force"), "{text}");

    let malformed = a.post_raw("/v1/commands/", &q, "{not json").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.body["faultcode"], "Client");
    assert!(malformed.body["faultstring"]
        .as_str()
        .unwrap()
        .starts_with("400 Bad Request: Failed to decode JSON object"));

    assert!(a.list().await.is_empty());
    assert!(a.power.actions().is_empty());

    // JSON is parsed whatever the Content-Type says.
    let r = a
        .send(
            a.client
                .post(a.url("/v1/commands/", &q))
                .header("Content-Type", "text/plain")
                .body(r#"{"name": "standby.sync", "params": {}}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.result().command_status, CommandStatus::Succeeded);

    a.get("/v1/nothing", "").await.assert_fault(
        404,
        "Client",
        "404 Not Found: The requested URL was not found on the server. If you entered the URL \
         manually please check your spelling and try again.",
    );
    a.send(a.client.delete(a.url("/v1/commands/", &q))).await.assert_fault(
        405,
        "Client",
        "405 Method Not Allowed: The method is not allowed for the requested URL.",
    );
}

#[tokio::test]
async fn busy_while_an_async_command_runs_then_done_on_release() {
    let a = start(Some(token()), None).await;
    let q = format!("agent_token={}", token());
    let started = a.command("system.test_block", json!({}), false).await;
    assert_eq!(started.status, StatusCode::OK);
    let running = started.result();
    assert_eq!(running.command_status, CommandStatus::Running);
    assert_eq!(running.command_name, "test_block");
    // A running command may publish an interim result, which the list shows.
    let interim = Some(json!({"waiting": "for release"}));
    tokio::time::timeout(GUARD, async {
        while a.list().await[0].command_result != interim {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the interim result was never published");
    assert_eq!(a.list().await[0].command_status, CommandStatus::Running);

    a.command("standby.sync", json!({}), true).await.assert_fault(
        409,
        "Client",
        "Agent is busy: executing command test_block",
    );
    // Bad input is still refused by the earlier checks while busy.
    a.post("/v1/commands/", &q, json!({"name": "nodot", "params": {}})).await.assert_fault(
        400,
        "Client",
        "Invalid command: Command name must be of the form <extension>.<name>",
    );
    let list = a.list().await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].command_status, CommandStatus::Running);
    let not_waiting =
        a.get(&format!("/v1/commands/{}", running.id), &format!("{q}&wait=false")).await;
    assert_eq!(not_waiting.result().command_status, CommandStatus::Running);
    assert_heartbeat_forced(&a.session, false);

    // A waiting GET blocks until the command finishes.
    let waiter = {
        let client = a.client.clone();
        let url = a.url(&format!("/v1/commands/{}", running.id), &format!("{q}&wait=true"));
        tokio::spawn(
            async move { client.get(url).send().await.unwrap().json::<Value>().await.unwrap() },
        )
    };
    a.handle.release_test_block();
    let done: CommandResult =
        serde_json::from_value(tokio::time::timeout(GUARD, waiter).await.unwrap().unwrap())
            .unwrap();
    assert_eq!(done.id, running.id);
    assert_eq!(done.command_status, CommandStatus::Succeeded);
    assert_eq!(done.command_result, Some(json!({"result": "test_block: released"})));
    assert_heartbeat_forced(&a.session, true);

    let next = a.command("standby.sync", json!({}), false).await;
    assert_eq!(next.result().command_status, CommandStatus::Succeeded);
    let ids: Vec<String> = a.list().await.into_iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![running.id, next.result().id]);
}

#[tokio::test]
async fn post_with_wait_true_blocks_until_an_async_command_is_done() {
    let a = start(Some(token()), None).await;
    let poster = {
        let client = a.client.clone();
        let url = a.url("/v1/commands/", &format!("agent_token={}&wait=true", token()));
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"name": "system.test_block", "params": {}}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    let list = a.wait_for_entries(1).await;
    assert_eq!(list[0].command_status, CommandStatus::Running);
    assert!(!poster.is_finished());
    a.handle.release_test_block();
    let body = tokio::time::timeout(GUARD, poster).await.unwrap().unwrap();
    let result: CommandResult = serde_json::from_value(body).unwrap();
    assert_eq!(result.id, list[0].id);
    assert_eq!(result.command_status, CommandStatus::Succeeded);
}

#[tokio::test]
async fn a_failing_command_is_recorded_as_failed_with_http_200() {
    let a = start(Some(token()), None).await;
    let r = a.command("system.test_fail", json!({"message": "disk on fire"}), false).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body,
        json!({
            "id": r.body["id"],
            "command_name": "test_fail",
            "command_status": "FAILED",
            "command_error": {
                "type": "CommandExecutionError",
                "code": 500,
                "message": "Command execution failed",
                "details": "disk on fire"
            },
            "command_result": null
        })
    );
    assert_eq!(a.list().await.len(), 1);
}

#[tokio::test]
async fn a_panicking_command_fails_and_the_worker_keeps_going() {
    let a = start(Some(token()), None).await;
    let r = a.command("system.test_panic", json!({}), false).await;
    assert_eq!(r.status, StatusCode::OK);
    let result = r.result();
    assert_eq!(result.command_status, CommandStatus::Failed);
    let error = result.command_error.unwrap();
    assert_eq!(error.kind, "CommandExecutionError");
    assert!(error.details.contains("test_panic"), "{}", error.details);
    let next = a.command("standby.sync", json!({}), false).await;
    assert_eq!(next.result().command_status, CommandStatus::Succeeded);
}

#[tokio::test]
async fn a_failed_power_action_turns_the_record_into_a_failure() {
    let a = start(Some(token()), None).await;
    a.power.fail(PowerAction::PowerOff);
    let r = a.command("standby.power_off", json!({}), true).await;
    // Success is recorded before the power is cut, so the reply may show either.
    assert_eq!(r.status, StatusCode::OK);
    let failed = tokio::time::timeout(GUARD, async {
        loop {
            let list = a.list().await;
            if list[0].command_status == CommandStatus::Failed {
                return list[0].clone();
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert_eq!(failed.command_result, None);
    assert_eq!(failed.command_error.unwrap().details, "power off failed (simulated)");
}

#[tokio::test]
async fn a_body_over_one_mib_is_refused_and_the_server_keeps_serving() {
    let a = start(Some(token()), None).await;
    let q = format!("agent_token={}", token());
    let big = format!(
        r#"{{"name": "standby.sync", "params": {{"pad": "{}"}}}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let r = a.post_raw("/v1/commands/", &q, big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.content_type, "application/json");
    assert_eq!(r.body["faultcode"], "Client");
    assert!(r.body["faultstring"].as_str().unwrap().starts_with("413 "));
    assert!(a.list().await.is_empty());
    let ok = a.command("standby.sync", json!({}), false).await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn power_off_and_run_image_sync_then_act_through_power_control() {
    let table = [
        ("standby.power_off", "power_off", PowerAction::PowerOff),
        ("standby.run_image", "run_image", PowerAction::Reboot),
    ];
    for (wire, name, action) in table {
        let a = start(Some(token()), None).await;
        let r = a.command(wire, json!({}), true).await;
        assert_eq!(r.status, StatusCode::OK);
        let result = r.result();
        assert_eq!(result.command_name, name);
        assert_eq!(result.command_status, CommandStatus::Succeeded);
        assert_eq!(result.command_result, None);
        tokio::time::timeout(GUARD, a.power.recorded(action)).await.unwrap();
        assert_eq!(a.power.actions(), vec![PowerAction::SyncDisks, action], "{wire}");
        assert_heartbeat_forced(&a.session, true);
    }
}

#[tokio::test]
async fn lockdown_stops_the_server_after_replying() {
    let a = start(Some(token()), None).await;
    let r = a.command("system.lockdown", json!({}), false).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.result().command_status, CommandStatus::Succeeded);
    let status_url = a.url("/v1/status", "");
    tokio::time::timeout(GUARD, a.server).await.unwrap().unwrap().unwrap();
    assert!(a.handle.lockdown_requested());
    // The network is only taken down once the server is gone.
    assert!(a.power.actions().is_empty());
    a.handle.lock_down_host().unwrap();
    assert_eq!(a.power.actions(), vec![PowerAction::Lockdown]);
    assert!(a.client.get(status_url).send().await.is_err());
}

#[tokio::test]
async fn stop_is_graceful_without_lockdown() {
    let a = start(None, None).await;
    assert_eq!(a.get("/v1/status", "").await.status, StatusCode::OK);
    a.handle.stop();
    tokio::time::timeout(GUARD, a.server).await.unwrap().unwrap().unwrap();
    assert!(!a.handle.lockdown_requested());
}

#[tokio::test]
async fn step_commands_have_ipa_shapes() {
    let a = start(Some(token()), None).await;
    let versions = json!({"generic_hardware_manager": "1.2"});
    let clean = a.command("clean.get_clean_steps", json!({"node": {}, "ports": []}), true).await;
    assert_eq!(clean.status, StatusCode::OK);
    assert_eq!(clean.body["command_result"]["hardware_manager_version"], versions);
    let offered: Vec<&str> = clean.body["command_result"]["clean_steps"]["GenericHardwareManager"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        offered,
        [
            "erase_devices",
            "erase_devices_metadata",
            "erase_devices_express",
            "erase_pstore",
            "burnin_cpu",
            "burnin_disk",
            "burnin_memory"
        ]
    );
    assert_eq!(clean.body["command_name"], "get_clean_steps");
    let deploy = a.command("deploy.get_deploy_steps", json!({"node": {}, "ports": []}), true).await;
    assert_eq!(
        deploy.body["command_result"]["deploy_steps"]["GenericHardwareManager"][1]["step"],
        "write_image"
    );

    let write = json!({"interface": "deploy", "step": "write_image", "args": {}});
    let r = a
        .command(
            "deploy.execute_deploy_step",
            json!({"step": write, "node": {}, "ports": [], "deploy_version": versions}),
            true,
        )
        .await;
    assert_eq!(r.body["command_name"], "execute_deploy_step");
    assert_eq!(r.body["command_status"], "FAILED");
    assert_eq!(r.body["command_error"]["type"], "CommandExecutionError");
    assert_eq!(
        r.body["command_error"]["details"],
        "invalid write_image arguments: missing field `image_info`"
    );

    let erase = json!({"interface": "deploy", "step": "erase_devices"});
    let r = a
        .command("clean.execute_clean_step", json!({"step": erase, "clean_version": null}), true)
        .await;
    assert_eq!(r.body["command_status"], "FAILED");
    // The erase engine runs on the fixture host, whose disk has no device node: its own
    // error reaches the conductor as the command's error.
    let details = r.body["command_error"]["details"].as_str().unwrap();
    assert!(details.starts_with("cannot choose the devices to erase: "), "{details}");
    assert!(details.contains("/dev/vda"), "{details}");

    let nvram = json!({"interface": "deploy", "step": "clean_uefi_nvram"});
    let r = a.command("clean.execute_clean_step", json!({"step": nvram}), true).await;
    assert_eq!(r.body["command_status"], "FAILED");
    assert_eq!(
        r.body["command_error"]["details"],
        "clean step deploy.clean_uefi_nvram is not offered by this agent"
    );

    std::fs::create_dir_all(a.host.path("/sys/fs/pstore")).unwrap();
    std::fs::write(a.host.path("/sys/fs/pstore/dmesg-efi-1"), "Oops").unwrap();
    let pstore = json!({"interface": "deploy", "step": "erase_pstore", "args": {}});
    let r = a.command("clean.execute_clean_step", json!({"step": pstore}), true).await;
    assert_eq!(r.body["command_status"], "SUCCEEDED", "{}", r.body);
    assert_eq!(
        r.body["command_result"],
        json!({"clean_result": {"pstore_dir": "/sys/fs/pstore", "removed": ["dmesg-efi-1"]},
               "clean_step": pstore})
    );
    assert!(!a.host.path("/sys/fs/pstore/dmesg-efi-1").exists());

    // A burn-in reads its settings from the node sent with the step.
    let cpu = json!({"interface": "deploy", "step": "burnin_cpu", "args": {}});
    let node = json!({"driver_info": {"agent_burnin_cpu_timeout": "0.05",
                                      "agent_burnin_cpu_cpu": 1}});
    let r = a.command("clean.execute_clean_step", json!({"step": cpu, "node": node}), true).await;
    assert_eq!(r.body["command_status"], "SUCCEEDED", "{}", r.body);
    assert_eq!(r.body["command_result"]["clean_step"], cpu);
    assert_eq!(r.body["command_result"]["clean_result"]["workers"], 1);
    assert_eq!(r.body["command_result"]["clean_result"]["errors"], 0);
    let bad = json!({"driver_info": {"agent_burnin_cpu_timeout": "soon"}});
    let r = a.command("clean.execute_clean_step", json!({"step": cpu, "node": bad}), true).await;
    assert_eq!(r.body["command_status"], "FAILED");
    assert_eq!(
        r.body["command_error"]["details"],
        "driver_info agent_burnin_cpu_timeout is \"soon\", expected a non-negative number"
    );

    let stale = json!({"generic_hardware_manager": "0.1"});
    let r = a
        .command("clean.execute_clean_step", json!({"step": erase, "clean_version": stale}), true)
        .await;
    assert_eq!(r.body["command_status"], "CLEAN_VERSION_MISMATCH");
    assert_eq!(r.body["command_error"]["type"], "VersionMismatch");
    assert_eq!(r.body["command_error"]["code"], 409);

    let r = a.command("standby.get_partition_uuids", json!({}), true).await;
    assert_eq!(r.body["command_status"], "SUCCEEDED");
    assert_eq!(r.body["command_result"], json!({}));
    assert_eq!(a.list().await.len(), 10);
}

#[tokio::test]
async fn get_hardware_info_returns_the_inventory() {
    let a = start(Some(token()), None).await;
    let r = a.command("poll.get_hardware_info", json!({}), false).await;
    assert_eq!(r.status, StatusCode::OK);
    let result = r.result();
    assert_eq!(result.command_name, "get_hardware_info");
    assert_eq!(result.command_status, CommandStatus::Succeeded);
    let expected = crate::inventory::collect(&InventorySources::new(a.host.clone(), None)).unwrap();
    assert_eq!(result.command_result, Some(serde_json::to_value(expected).unwrap()));
}

fn unpack(system_logs: &str) -> std::collections::BTreeMap<String, String> {
    let gz = base64::engine::general_purpose::STANDARD.decode(system_logs).unwrap();
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice()).read_to_end(&mut tar_bytes).unwrap();
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut out = std::collections::BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        out.insert(name, text);
    }
    out
}

#[tokio::test]
async fn collect_system_logs_returns_a_gzipped_tar() {
    let a = start(Some(token()), None).await;
    a.logs.push(b"2026-01-01T00:00:00Z INFO lookup succeeded node=abc\n");
    let r = a.command("log.collect_system_logs", json!({}), true).await;
    assert_eq!(r.status, StatusCode::OK);
    let result = r.result();
    assert_eq!(result.command_name, "collect_system_logs");
    assert_eq!(result.command_status, CommandStatus::Succeeded);
    let payload = result.command_result.unwrap();
    assert_eq!(payload.as_object().unwrap().len(), 1);
    let files = unpack(payload["system_logs"].as_str().unwrap());
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["cmdline", "cpuinfo", "dmesg", "ferric-agent.log", "inventory.json", "meminfo", "mounts"]
    );
    assert!(files["cpuinfo"].contains("processor"));
    assert!(files["ferric-agent.log"].contains("lookup succeeded node=abc"));
    assert_eq!(
        files["dmesg"],
        "[    0.000000] Linux version 6.1.0\n[    2.500000] sda: detected capacity change\n"
    );
    assert_eq!(files["cmdline"], "BOOTIF=01-52-54-00-12-34-56 ipa-debug=1\n");
    assert!(files["meminfo"].starts_with("MemTotal:"));
    let inventory: Value = serde_json::from_str(&files["inventory.json"]).unwrap();
    assert!(inventory.is_object());
}

#[tokio::test]
async fn collect_system_logs_tolerates_a_missing_kmsg_and_reports_unreadable_files() {
    let a = start(Some(token()), None).await;
    std::fs::remove_file(a.host.path("/dev/kmsg")).unwrap();
    // A directory where a file is expected cannot be read as one.
    std::fs::create_dir_all(a.host.path("/proc/partitions")).unwrap();
    let r = a.command("log.collect_system_logs", json!({}), true).await;
    let result = r.result();
    assert_eq!(result.command_status, CommandStatus::Succeeded);
    let files = unpack(result.command_result.unwrap()["system_logs"].as_str().unwrap());
    assert!(!files.contains_key("dmesg"));
    assert!(!files.contains_key("partitions"));
    assert!(files["collection-errors"].starts_with("/proc/partitions: "), "{files:?}");
}

fn self_signed() -> rcgen::CertifiedKey<rcgen::KeyPair> {
    rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap()
}

#[tokio::test]
async fn the_api_works_over_tls_and_survives_a_failed_handshake() {
    let cert = self_signed();
    let a = start(Some(token()), Some(&cert)).await;
    assert!(a.base.starts_with("https://"));

    let v1 = a.get("/v1/", "").await;
    assert_eq!(v1.status, StatusCode::OK);
    assert_eq!(v1.body["links"][0]["href"], format!("{}/v1/", a.base));

    // A client speaking plain HTTP to the TLS port fails the handshake.
    let addr = a.base.trim_start_matches("https://").to_owned();
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(GUARD, tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut sink))
        .await
        .unwrap();
    // So does a client that does not trust the certificate.
    let untrusting = client(None);
    assert!(untrusting.get(a.url("/v1/status", "")).send().await.is_err());

    let r = a.command("standby.power_off", json!({}), true).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.result().command_status, CommandStatus::Succeeded);
    a.command("standby.sync", json!({}), false).await;
    assert_eq!(a.list().await.len(), 2);
    a.get("/v1/commands/", "agent_token=wrong").await.assert_fault(
        401,
        "Client",
        "401 Unauthorized: Token invalid.",
    );
}

#[tokio::test]
async fn image_commands_validate_refuse_and_explain() {
    let a = start(Some(token()), None).await;
    const SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";
    let uuids = a.command("standby.get_partition_uuids", json!({}), true).await;
    assert_eq!(uuids.body["command_result"], json!({}));

    let no_urls = json!({"image_info": {"id": "img", "urls": [], "checksum": SHA256}});
    a.command("standby.prepare_image", no_urls, true).await.assert_fault(
        400,
        "Client",
        "Invalid command parameters: invalid image_info: image_info field 'urls' must be a \
         list with at least one element",
    );
    // MD5 only once the conductor allows it.
    let md5 = json!({"image_info": {"id": "img", "urls": ["http://h/i"], "checksum": MD5},
                     "configdrive": null});
    let refused = a.command("standby.prepare_image", md5.clone(), true).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    a.session.set_lookup_config(ferric_shared::lookup::LookupConfig {
        agent_md5_checksum_enable: Some(true),
        ..Default::default()
    });
    // Accepted now; with hints no disk satisfies, it fails choosing the disk.
    a.session.set_node(json!({"uuid": "n1", "properties": {"root_device": {"name": "/dev/no"}}}));
    let r = a.command("standby.prepare_image", md5, true).await;
    assert_eq!(r.body["command_name"], "prepare_image");
    assert_eq!(r.body["command_status"], "FAILED", "{}", r.body);
    let details = r.body["command_error"]["details"].as_str().unwrap().to_owned();
    assert!(
        details.starts_with(
            "cannot choose the disk to write image img to: no suitable root disk for root \
             device hints {\"name\":\"/dev/no\"}: /dev/"
        ),
        "{details}"
    );
    assert!(details.contains("does not match the root device hints"), "{details}");

    let partition = json!({"image_info": {
        "id": "img", "urls": ["http://h/i"], "checksum": SHA256, "image_type": "partition",
        "root_mb": 1024, "swap_mb": 0, "ephemeral_mb": 0, "preserve_ephemeral": false}});
    let r = a.command("standby.prepare_image", partition, true).await;
    assert_eq!(r.body["command_status"], "FAILED");
    assert_eq!(
        r.body["command_error"]["details"],
        "partition images (image_type \"partition\") are not supported yet; use a whole-disk \
         image"
    );

    // The step's own node wins over lookup's: its hints are the ones reported.
    let step = json!({"interface": "deploy", "step": "write_image", "args": {
        "image_info": {"id": "img2", "urls": ["http://h/i"], "os_hash_algo": "sha256",
                       "os_hash_value": SHA256},
        "configdrive": null}});
    let node = json!({"uuid": "n1", "instance_info": {"root_device": {"serial": "none"}}});
    let r =
        a.command("deploy.execute_deploy_step", json!({"step": step, "node": node}), true).await;
    assert_eq!(r.body["command_status"], "FAILED");
    let details = r.body["command_error"]["details"].as_str().unwrap();
    assert!(details.contains("image img2"), "{details}");
    assert!(details.contains("hints {\"serial\":\"none\"}"), "{details}");

    let r = a
        .command(
            "image.install_bootloader",
            json!({"root_uuid": "0x1234abcd", "target_boot_mode": "uefi"}),
            true,
        )
        .await;
    assert_eq!(r.body["command_name"], "install_bootloader");
    assert_eq!(r.body["command_status"], "FAILED");
    assert_eq!(r.body["command_error"]["details"], "install_bootloader is not supported yet");

    // Nothing was written, so there is still nothing to report.
    let uuids = a.command("standby.get_partition_uuids", json!({}), true).await;
    assert_eq!(uuids.body["command_result"], json!({}));
}
