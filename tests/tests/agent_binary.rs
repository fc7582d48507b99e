//! The real `ferric-agent` binary, started as a process on a fake host tree, against the
//! fake conductor: lookup, heartbeat, auto-TLS pinned by the PEM it sends, and the
//! command API driven the way Ironic drives it. Every wait has a deadline; a failing
//! test prints the agent's log.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferric_agent::fixtures;
use ferric_agent::host::HostRoot;
use ferric_agent::inventory::{self, InventorySources};
use ferric_agent::run::AGENT_VERSION;
use ferric_shared::api_version::ApiVersion;
use ferric_tests::agent_process::{agent_binary, AgentArgs, AgentProcess};
use ferric_tests::fake_conductor::{
    FakeConductor, FakeConductorConfig, LookupStep, RecordedRequest, TokenReply,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Generous: the agent is a debug build and the machine may be busy.
const START: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(10);
const PRODUCT_NAME: &str = "/sys/class/dmi/id/product_name";

/// A fake conductor, a fixture tree and the agent running against both.
struct Rig {
    conductor: FakeConductor,
    agent: AgentProcess,
    tree: tempfile::TempDir,
}

impl Rig {
    /// Writes a `bios_vm` tree, lets `prepare` alter it, and starts the agent on it with
    /// `extra` flags.
    async fn start(
        config: FakeConductorConfig,
        prepare: impl FnOnce(&Path),
        extra: &[&str],
    ) -> Rig {
        let binary = tokio::task::spawn_blocking(agent_binary).await.unwrap().unwrap();
        let tree = tempfile::tempdir().unwrap();
        fixtures::bios_vm().build(tree.path()).unwrap();
        prepare(tree.path());
        let conductor = FakeConductor::start(config).await.unwrap();
        let mut args = AgentArgs::new(conductor.url().as_str(), tree.path());
        args.extra = extra.iter().map(|s| s.to_string()).collect();
        // The agent's port was free when picked but may be taken before the agent binds
        // it; then the agent stops before looking up, and a fresh port is tried.
        for _ in 0..3 {
            let mut agent = AgentProcess::spawn(&binary, &args).unwrap();
            if listening(&conductor, &mut agent).await {
                return Rig { conductor, agent, tree };
            }
        }
        panic!("the agent could not listen on any of three ports");
    }

    async fn first_heartbeat(&self) -> RecordedRequest {
        match self.conductor.wait_for_heartbeats(1, START).await {
            Some(beats) => beats.into_iter().next().unwrap(),
            None => panic!("no heartbeat within {START:?}"),
        }
    }

    fn token(&self) -> String {
        self.conductor.token().expect("the conductor holds a token")
    }
}

/// Waits until the agent looks itself up, which it does only once its API listens.
/// `false` when it stopped because its port was taken.
async fn listening(conductor: &FakeConductor, agent: &mut AgentProcess) -> bool {
    let deadline = Instant::now() + START;
    while conductor.lookups().is_empty() {
        if let Ok(Some(status)) = agent.try_exit() {
            let log = agent.log();
            assert!(log.contains("listening on"), "the agent exited ({status}):\n{log}");
            return false;
        }
        assert!(Instant::now() < deadline, "no lookup within {START:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// The fixture's only NIC, which the conductor's node has as its port.
fn fixture_mac() -> String {
    fixtures::bios_vm().nics[0].mac.clone()
}

fn conductor_config() -> FakeConductorConfig {
    FakeConductorConfig { macs: vec![fixture_mac()], ..FakeConductorConfig::default() }
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder_with_roots(roots: rustls::RootCertStore) -> reqwest::ClientBuilder {
    let tls = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder().use_preconfigured_tls(tls).timeout(WAIT)
}

/// A client builder that trusts exactly the certificate in `pem` and nothing else.
fn pinned_builder(pem: &str) -> reqwest::ClientBuilder {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(parsed.contents)).unwrap();
    builder_with_roots(roots)
}

fn pinned_client(pem: &str) -> reqwest::Client {
    pinned_builder(pem).build().unwrap()
}

/// For plain HTTP: trusts nothing.
fn plain_client() -> reqwest::Client {
    builder_with_roots(rustls::RootCertStore::empty()).build().unwrap()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {body:?}"));
    (status, value)
}

fn fault(text: &str) -> Value {
    json!({"faultcode": "Client", "faultstring": text})
}

/// The agent's command API at `base`, with `token` for the calls that need it.
struct AgentApi {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AgentApi {
    fn commands_url(&self, token: Option<&str>, wait: Option<bool>) -> String {
        let mut url = format!("{}/v1/commands/", self.base);
        let mut query = vec![];
        if let Some(t) = token {
            query.push(format!("agent_token={t}"));
        }
        if let Some(w) = wait {
            query.push(format!("wait={w}"));
        }
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        url
    }

    async fn status(&self) -> (StatusCode, Value) {
        json_of(self.http.get(format!("{}/v1/status", self.base)).send().await.unwrap()).await
    }

    async fn list(&self) -> (StatusCode, Value) {
        let url = self.commands_url(Some(&self.token), None);
        json_of(self.http.get(url).send().await.unwrap()).await
    }

    async fn post_raw(&self, wait: bool, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let url = self.commands_url(Some(&self.token), Some(wait));
        let req = self.http.post(url).header("Content-Type", "application/json").body(body);
        json_of(req.send().await.unwrap()).await
    }

    async fn run(&self, name: &str, wait: bool) -> (StatusCode, Value) {
        self.post_raw(wait, json!({"name": name, "params": {}}).to_string()).await
    }

    /// Polls the command list until its last entry satisfies `want`.
    async fn wait_for_last(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, list) = self.list().await;
            assert_eq!(status, StatusCode::OK, "{list}");
            if let Some(last) = list["commands"].as_array().and_then(|c| c.last()) {
                if want(last) {
                    return last.clone();
                }
            }
            assert!(Instant::now() < deadline, "no {what} within {WAIT:?}: {list}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The inventory the library computes for the same tree the agent reads.
fn expected_inventory(tree: &Path) -> Value {
    let sources = InventorySources::for_host(HostRoot::new(tree), None);
    serde_json::to_value(inventory::collect(&sources).unwrap()).unwrap()
}

/// Replaces a file of the tree with a FIFO, so whoever opens it for reading blocks in
/// open(2) until a writer comes.
fn make_fifo(tree: &Path, host_path: &str) -> PathBuf {
    let path = HostRoot::new(tree).path(host_path);
    std::fs::remove_file(&path).unwrap();
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
    path
}

/// Opens the FIFO for writing once its reader is there (a non-blocking open fails with
/// ENXIO until then), writes `contents` and closes it.
fn feed_fifo(path: &Path, contents: &str) {
    use std::io::Write;
    let deadline = Instant::now() + WAIT;
    let mut fifo = loop {
        match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path) {
            Ok(f) => break f,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("opening {} for writing: {e}", path.display()),
        }
    };
    fifo.write_all(contents.as_bytes()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_heartbeat_and_pinned_tls() {
    let rig = Rig::start(conductor_config(), |_| {}, &[]).await;
    let beat = rig.first_heartbeat().await;
    let port = rig.agent.port();

    let lookups = rig.conductor.lookups();
    assert_eq!(lookups.first().map(|l| l.status), Some(200), "{lookups:?}");
    let addresses = lookups[0].query_param("addresses").unwrap_or_default();
    assert!(
        addresses.split(',').any(|m| m.eq_ignore_ascii_case(&fixture_mac())),
        "lookup addresses {addresses:?} lack {}",
        fixture_mac()
    );

    assert_eq!(beat.status, 202, "{:?}", beat.body);
    assert_eq!(beat.path, format!("/v1/heartbeat/{}", rig.conductor.node_uuid()));
    let body = beat.body.clone().unwrap();
    assert_eq!(body["agent_token"], json!(rig.token()));
    assert_eq!(rig.token().len(), 43);
    assert_eq!(body["agent_version"], json!(AGENT_VERSION));
    let callback = rig.conductor.last_callback().unwrap();
    assert_eq!(callback.callback_url, format!("https://127.0.0.1:{port}"));
    assert_eq!(body["callback_url"], json!(callback.callback_url));
    let pem = callback.agent_verify_ca.expect("auto-TLS sends agent_verify_ca");
    assert_eq!(body["agent_verify_ca"], json!(pem));

    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = parsed.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().expect("a SAN extension");
    assert!(san.critical, "the SAN must be critical");
    let ips: Vec<&[u8]> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::IPAddress(ip) => Some(*ip),
            _ => None,
        })
        .collect();
    assert_eq!(ips, [&[127u8, 0, 0, 1][..]]);

    // The handshake verifies against the pinned certificate, IP SAN included.
    let api = AgentApi {
        http: pinned_client(&pem),
        base: callback.callback_url.clone(),
        token: rig.token(),
    };
    let (status, body) = api.status().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["version"], json!(AGENT_VERSION));
    assert!(body["started_at"].as_f64().is_some_and(|t| t > 1.6e9), "{body}");
    // The same certificate does not vouch for a host name, only for the IP: the same
    // socket reached under a name fails verification.
    let agent_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let named = pinned_builder(&pem).resolve("agent.test", agent_addr).build().unwrap();
    let by_name = named.get(format!("https://agent.test:{port}/v1/status")).send().await;
    let err = by_name.expect_err("a name not in the certificate must fail verification");
    let text = error_chain(&err);
    assert!(text.contains("not valid for name"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_api_over_tls_as_ironic_drives_it() {
    let mut rig = Rig::start(conductor_config(), |_| {}, &[]).await;
    rig.first_heartbeat().await;
    let callback = rig.conductor.last_callback().unwrap();
    let api = AgentApi {
        http: pinned_client(callback.agent_verify_ca.as_deref().unwrap()),
        base: callback.callback_url.clone(),
        token: rig.token(),
    };

    let (status, _) = api.status().await;
    assert_eq!(status, StatusCode::OK);

    let unauthorized = fault("401 Unauthorized: Token invalid.");
    let no_token = api.http.get(api.commands_url(None, None)).send().await.unwrap();
    assert_eq!(json_of(no_token).await, (StatusCode::UNAUTHORIZED, unauthorized.clone()));
    let wrong = api.commands_url(Some("not-the-token-at-all-not-the-token-at-all"), None);
    let wrong_token = api.http.get(wrong).send().await.unwrap();
    assert_eq!(json_of(wrong_token).await, (StatusCode::UNAUTHORIZED, unauthorized.clone()));
    let wrong_post = api
        .http
        .post(api.commands_url(Some("x"), Some(true)))
        .body(json!({"name": "poll.get_hardware_info", "params": {}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(wrong_post).await, (StatusCode::UNAUTHORIZED, unauthorized));
    assert_eq!(api.list().await, (StatusCode::OK, json!({"commands": []})));

    let (status, first) = api.run("poll.get_hardware_info", true).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["command_name"], json!("get_hardware_info"));
    assert_eq!(first["command_status"], json!("SUCCEEDED"));
    assert_eq!(first["command_error"], Value::Null);
    assert_eq!(first["command_result"], expected_inventory(rig.tree.path()));
    let mut keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["command_error", "command_name", "command_result", "command_status", "id"]);

    let (status, body) = api.run("bogus.get_hardware_info", true).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, fault("Not found: Extension with id bogus not found."))
    );
    let (status, body) = api.post_raw(true, "{\"name\": \"poll.get_hardware_info\",").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["faultcode"], json!("Client"));
    let text = body["faultstring"].as_str().unwrap();
    assert!(text.starts_with("400 Bad Request: Failed to decode JSON object: "), "{text}");
    let huge = format!(
        "{{\"name\": \"poll.get_hardware_info\", \"params\": {{\"pad\": \"{}\"}}}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let (status, body) = api.post_raw(true, huge).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            fault(
                "413 Request Entity Too Large: The data value transmitted exceeds the \
                 capacity limit."
            )
        )
    );

    // Still serving; a second synchronous command (no wait) completes in the reply.
    let (status, second) = api.run("poll.get_hardware_info", false).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["command_status"], json!("SUCCEEDED"));
    assert_ne!(second["id"], first["id"]);
    let (status, _) = api.status().await;
    assert_eq!(status, StatusCode::OK);
    let (status, list) = api.list().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!({"commands": [first, second]}));
    assert!(rig.agent.try_exit().unwrap().is_none(), "the agent should still run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_command_is_refused_with_409_while_one_runs() {
    let mut fifo = PathBuf::new();
    let rig =
        Rig::start(conductor_config(), |tree| fifo = make_fifo(tree, PRODUCT_NAME), &[]).await;
    rig.first_heartbeat().await;
    let callback = rig.conductor.last_callback().unwrap();
    let api = Arc::new(AgentApi {
        http: pinned_client(callback.agent_verify_ca.as_deref().unwrap()),
        base: callback.callback_url.clone(),
        token: rig.token(),
    });

    let blocked = {
        let api = api.clone();
        tokio::spawn(async move { api.run("poll.get_hardware_info", true).await })
    };
    let running = api
        .wait_for_last("running get_hardware_info", |c| {
            c["command_name"] == "get_hardware_info" && c["command_status"] == "RUNNING"
        })
        .await;

    let (status, body) = api.run("poll.get_hardware_info", true).await;
    assert_eq!(
        (status, body),
        (StatusCode::CONFLICT, fault("Agent is busy: executing command get_hardware_info"))
    );
    assert!(!blocked.is_finished(), "the first command should still be blocked");

    tokio::task::spawn_blocking(move || feed_fifo(&fifo, "Blocked Machine 9000\n")).await.unwrap();
    let (status, done) = tokio::time::timeout(WAIT, blocked).await.unwrap().unwrap();
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["id"], running["id"]);
    assert_eq!(done["command_status"], json!("SUCCEEDED"));
    assert_eq!(
        done["command_result"]["system_vendor"]["product_name"],
        json!("Blocked Machine 9000")
    );
    // The refused request left no record.
    let (_, list) = api.list().await;
    assert_eq!(list, json!({"commands": [done]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withheld_token_without_a_preshared_one_stops_the_agent() {
    let conductor = conductor_config();
    let binary = tokio::task::spawn_blocking(agent_binary).await.unwrap().unwrap();
    let tree = tempfile::tempdir().unwrap();
    fixtures::bios_vm().build(tree.path()).unwrap();
    let conductor = FakeConductor::start(conductor).await.unwrap();
    conductor.script_lookups([LookupStep::Found(TokenReply::Masked)]);
    let args = AgentArgs::new(conductor.url().as_str(), tree.path());
    let mut agent = AgentProcess::spawn(&binary, &args).unwrap();

    let status = agent.wait_exit(START).await.expect("the agent should stop");
    assert!(!status.success(), "exit status {status}");
    assert_eq!(status.code(), Some(1));
    let log = agent.log();
    assert!(log.contains("withheld the agent token"), "{log}");
    assert_eq!(conductor.lookups().len(), 1);
    assert!(conductor.heartbeats().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preshared_token_is_used_when_lookup_masks_it() {
    let token = "pReShArEd-tOkEn_0123456789abcdefghijklmnopq";
    assert_eq!(token.len(), 43);
    let config =
        FakeConductorConfig { pregenerated_token: Some(token.into()), ..conductor_config() };
    let rig = Rig::start(config, |_| {}, &["--ipa-agent-token", token]).await;
    let beat = rig.first_heartbeat().await;

    let lookup_status = rig.conductor.lookups().first().map(|l| l.status);
    assert_eq!(lookup_status, Some(200));
    assert_eq!(beat.status, 202, "{:?}", beat.body);
    assert_eq!(beat.body.unwrap()["agent_token"], json!(token));

    let callback = rig.conductor.last_callback().unwrap();
    let api = AgentApi {
        http: pinned_client(callback.agent_verify_ca.as_deref().unwrap()),
        base: callback.callback_url,
        token: token.into(),
    };
    assert_eq!(api.list().await, (StatusCode::OK, json!({"commands": []})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_off_ends_the_process_cleanly() {
    let mut rig = Rig::start(conductor_config(), |_| {}, &[]).await;
    rig.first_heartbeat().await;
    let callback = rig.conductor.last_callback().unwrap();
    let api = AgentApi {
        http: pinned_client(callback.agent_verify_ca.as_deref().unwrap()),
        base: callback.callback_url,
        token: rig.token(),
    };

    let (status, accepted) = api.run("standby.power_off", false).await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    assert_eq!(accepted["command_name"], json!("power_off"));
    // The process may already be gone; if not, the command is recorded as done.
    if let Ok(resp) = api.http.get(api.commands_url(Some(&api.token), None)).send().await {
        let (status, list) = json_of(resp).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["commands"][0]["id"], accepted["id"]);
        let state = &list["commands"][0]["command_status"];
        assert!(state == "SUCCEEDED" || state == "RUNNING", "{list}");
    }
    let exit = rig.agent.wait_exit(WAIT).await.expect("power off should end the process");
    assert_eq!(exit.code(), Some(0), "exit status {exit}");
    assert!(rig.agent.log().contains("simulated power off"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_below_the_verify_ca_version() {
    let below = ApiVersion::new(1, ApiVersion::AGENT_VERIFY_CA.minor - 1);
    let config = FakeConductorConfig { max_version: below, ..conductor_config() };
    let rig = Rig::start(config, |_| {}, &[]).await;
    let beat = rig.first_heartbeat().await;

    assert_eq!(beat.status, 202, "{:?}", beat.body);
    assert_eq!(beat.api_version(), Some(below.to_string().as_str()));
    let body = beat.body.unwrap();
    let url = format!("http://127.0.0.1:{}", rig.agent.port());
    assert_eq!(body["callback_url"], json!(url));
    assert!(body.get("agent_verify_ca").is_none(), "{body}");
    assert_eq!(rig.conductor.last_callback().unwrap().agent_verify_ca, None);

    let api = AgentApi { http: plain_client(), base: url, token: rig.token() };
    let (status, _) = api.status().await;
    assert_eq!(status, StatusCode::OK);
    let (status, result) = api.run("poll.get_hardware_info", true).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["command_result"], expected_inventory(rig.tree.path()));
}
