//! The conductor's agent client against the real agent API, served in-process over
//! HTTPS (or plain HTTP behind a recording proxy) on 127.0.0.1 with a fake host tree.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ferric_agent::api::{ApiDeps, ApiHandle};
use ferric_agent::host::HostRoot;
use ferric_agent::inventory::InventorySources;
use ferric_agent::logbuf::LogBuffer;
use ferric_agent::power::{FakePower, PowerAction};
use ferric_agent::session::Session;
use ferric_agent::tls::{generate_self_signed, AgentCertificate};
use ferric_conductor::agent_client::{AgentClient, AgentClientConfig, AgentClientError};
use ferric_shared::command::{CommandResult, CommandStatus};
use ferric_shared::steps::{NodeStep, StepKind};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bounds every wait so a broken test fails instead of hanging.
const GUARD: Duration = Duration::from_secs(30);
const PRODUCT_NAME: &str = "/sys/class/dmi/id/product_name";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn token() -> String {
    "t".repeat(43)
}

fn fast_config() -> AgentClientConfig {
    AgentClientConfig {
        command_timeout: Duration::from_secs(20),
        retry_interval: Duration::from_millis(10),
        lockdown_check_interval: Duration::from_millis(50),
        lockdown_checks: 40,
        ..AgentClientConfig::default()
    }
}

async fn guard<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(GUARD, f).await.unwrap_or_else(|_| panic!("{what} took too long"))
}

struct Agent {
    addr: SocketAddr,
    /// The certificate served, when over HTTPS.
    cert: Option<AgentCertificate>,
    handle: ApiHandle,
    power: Arc<FakePower>,
    sources: InventorySources,
    /// The FIFO from [`install_fifo`], until it is fed.
    fifo: Option<PathBuf>,
    server: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// An agent holding [`token`], over HTTPS with `cert` or over plain HTTP.
    async fn start(cert: Option<AgentCertificate>) -> Agent {
        Self::start_with(cert, |_| {}).await
    }

    /// An agent whose inventory collection blocks until [`Agent::feed`].
    async fn start_blocked(cert: Option<AgentCertificate>) -> Agent {
        let mut fifo = None;
        let mut agent = Self::start_with(cert, |h| fifo = Some(install_fifo(h))).await;
        agent.fifo = fifo;
        agent
    }

    /// Writes `text` into the FIFO once the agent has opened it for reading.
    async fn feed(&mut self, text: &'static str) {
        let path = self.fifo.take().expect("a blocked agent");
        guard(
            "feeding the FIFO",
            tokio::task::spawn_blocking(move || {
                use std::io::Write;
                // Opening for writing only blocks until the reader is there.
                let mut fifo = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                fifo.write_all(text.as_bytes()).unwrap();
            }),
        )
        .await
        .unwrap();
    }

    async fn start_with(cert: Option<AgentCertificate>, prepare: impl FnOnce(&HostRoot)) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let built = ferric_agent::fixtures::bios_vm().build(dir.path()).unwrap();
        let host = built.host.clone();
        std::fs::create_dir_all(host.path("/dev")).unwrap();
        std::fs::write(host.path("/dev/kmsg"), "6,0,0,-;Linux version 6.1.0\n").unwrap();
        prepare(&host);
        let power = Arc::new(FakePower::new());
        let (app, handle) = ferric_agent::api::build(ApiDeps {
            session: Arc::new(Session::new(Some(token()))),
            inventory: built.sources(),
            power: power.clone(),
            logs: Arc::new(LogBuffer::new(64 * 1024)),
            version: "0.1.0".into(),
            image_http: Default::default(),
            erase: Default::default(),
        });
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = cert.as_ref().map(|c| c.server_config().unwrap());
        let server = tokio::spawn(ferric_agent::api::serve(listener, tls, app, handle.stopped()));
        Agent { addr, cert, handle, power, sources: built.sources(), fifo: None, server, _dir: dir }
    }

    fn url(&self) -> String {
        let scheme = if self.cert.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    fn pem(&self) -> Option<&str> {
        self.cert.as_ref().map(|c| c.cert_pem.as_str())
    }

    /// The client the conductor would build from the node's `driver_internal_info`.
    fn client(&self, config: AgentClientConfig) -> AgentClient {
        let mut info = Map::new();
        info.insert("agent_url".into(), json!(self.url()));
        info.insert("agent_secret_token".into(), json!(token()));
        if let Some(pem) = self.pem() {
            info.insert("agent_verify_ca".into(), json!(pem));
        }
        AgentClient::from_driver_internal_info(&info, config).unwrap()
    }

    fn list(&self) -> Vec<CommandResult> {
        self.handle.executor().list()
    }

    /// Waits until the agent's last command is `name` and running.
    async fn wait_running(&self, name: &str) -> CommandResult {
        guard("the command to start", async {
            loop {
                if let Some(last) = self.list().pop() {
                    if last.command_name == name && last.command_status == CommandStatus::Running {
                        return last;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }
}

/// Replaces the product-name file with a FIFO: collecting the inventory then blocks in
/// open(2) until [`Agent::feed`] writes to it.
fn install_fifo(host: &HostRoot) -> PathBuf {
    let path = host.path(PRODUCT_NAME);
    std::fs::remove_file(&path).unwrap();
    let status = std::process::Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
    path
}

/// A test that fails before feeding the FIFO must not leave the agent's reader blocked,
/// since the runtime waits for blocking tasks when it shuts down; and this must happen
/// before the tree is deleted. Opening a FIFO for reading and writing never blocks on
/// Linux and releases a waiting reader.
impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(path) = self.fifo.take() {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new().read(true).write(true).open(&path) {
                let _ = f.write_all(b"released\n");
            }
        }
    }
}

fn cert() -> AgentCertificate {
    generate_self_signed(LOCALHOST, "agent").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_https_runs_commands_and_lists_them() {
    let agent = Agent::start(Some(cert())).await;
    let client = agent.client(fast_config());

    let inventory = guard("get_hardware_info", client.get_hardware_info()).await.unwrap();
    let expected = ferric_agent::inventory::collect(&agent.sources).unwrap();
    assert_eq!(inventory, expected);
    assert_eq!(inventory.mac_addresses(), ["52:54:00:12:34:56"]);

    guard("sync", client.sync()).await.unwrap();
    assert_eq!(agent.power.actions(), [PowerAction::SyncDisks]);

    let logs = guard("collect_system_logs", client.collect_system_logs()).await.unwrap();
    let archive = base64::engine::general_purpose::STANDARD.decode(logs).unwrap();
    assert_eq!(archive.get(..2), Some(&[0x1f, 0x8b][..]), "a gzip stream");

    let commands = guard("commands", client.commands()).await.unwrap();
    let names: Vec<_> = commands.iter().map(|c| c.command_name.as_str()).collect();
    assert_eq!(names, ["get_hardware_info", "sync", "collect_system_logs"]);
    assert!(commands.iter().all(|c| c.command_status == CommandStatus::Succeeded));
    assert_eq!(commands, agent.list());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_certificate_is_a_tls_error_and_nothing_runs() {
    let agent = Agent::start(Some(cert())).await;
    let impostor_pin = cert();
    let client =
        AgentClient::new(&agent.url(), Some(&token()), Some(&impostor_pin.cert_pem), fast_config())
            .unwrap();
    let err = guard("sync", client.sync()).await.unwrap_err();
    assert!(matches!(err, AgentClientError::Tls { .. }), "{err:?}");
    let err = guard("commands", client.commands()).await.unwrap_err();
    assert!(matches!(err, AgentClientError::Tls { .. }), "{err:?}");
    assert!(agent.list().is_empty());
    assert!(agent.power.actions().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_certificate_for_another_address_is_refused() {
    // The pinned certificate is the one served, but it names 10.1.2.3, not 127.0.0.1:
    // the address check stays on.
    let agent =
        Agent::start(Some(generate_self_signed("10.1.2.3".parse().unwrap(), "agent").unwrap()))
            .await;
    let client = agent.client(fast_config());
    let err = guard("sync", client.sync()).await.unwrap_err();
    assert!(matches!(err, AgentClientError::Tls { .. }), "{err:?}");
    let chain = error_chain(&err);
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");
    assert!(agent.list().is_empty());
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_token_is_unauthorized() {
    let agent = Agent::start(Some(cert())).await;
    for presented in [Some("u".repeat(43)), None] {
        let client =
            AgentClient::new(&agent.url(), presented.as_deref(), agent.pem(), fast_config())
                .unwrap();
        let err = guard("sync", client.sync()).await.unwrap_err();
        match &err {
            AgentClientError::Unauthorized { faultstring, .. } => {
                assert_eq!(faultstring, "401 Unauthorized: Token invalid.");
            }
            other => panic!("{presented:?}: {other:?}"),
        }
        let err = guard("commands", client.commands()).await.unwrap_err();
        assert!(matches!(err, AgentClientError::Unauthorized { .. }), "{err:?}");
        // The token never shows in errors.
        assert!(!error_chain(&err).contains(&"u".repeat(43)));
    }
    assert!(agent.list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_commands_are_http_errors_with_the_faultstring() {
    let agent = Agent::start(Some(cert())).await;
    let client = agent.client(fast_config());
    let table = [
        ("standby.nope", 400, "Invalid command: Unknown command: nope"),
        ("nosuch.thing", 404, "Not found: Extension with id nosuch not found."),
    ];
    for (name, status, faultstring) in table {
        let err = guard(name, client.execute(name, Map::new(), true)).await.unwrap_err();
        match err {
            AgentClientError::Http { status: s, faultstring: f, .. } => {
                assert_eq!((s, f.as_str()), (status, faultstring), "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(agent.list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_command_is_command_failed_with_the_agents_error() {
    let agent = Agent::start_with(Some(cert()), |h| {
        std::fs::remove_file(h.path("/proc/cpuinfo")).unwrap();
    })
    .await;
    let client = agent.client(fast_config());
    let err = guard("get_hardware_info", client.get_hardware_info()).await.unwrap_err();
    let AgentClientError::CommandFailed { command, command_error } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(command, "poll.get_hardware_info");
    assert_eq!(command_error.kind, "CommandExecutionError");
    assert!(command_error.details.contains("/proc/cpuinfo"), "{command_error:?}");
    let listed = guard("commands", client.commands()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].command_status, CommandStatus::Failed);
    assert_eq!(listed[0].command_error.as_ref(), Some(command_error));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_off_reaches_the_power_control() {
    let agent = Agent::start(Some(cert())).await;
    let client = agent.client(fast_config());
    let accepted = guard("power_off", client.power_off()).await.unwrap();
    assert_eq!(accepted.command_name, "power_off");
    assert_ne!(accepted.command_status, CommandStatus::Failed);
    guard("the power-off", agent.power.recorded(PowerAction::PowerOff)).await;
    assert!(agent.power.actions().contains(&PowerAction::PowerOff));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_command_makes_the_agent_busy() {
    let mut agent = Agent::start_blocked(Some(cert())).await;
    let client = Arc::new(agent.client(fast_config()));
    let blocked = {
        let client = client.clone();
        tokio::spawn(async move { client.get_hardware_info().await })
    };
    let running = agent.wait_running("get_hardware_info").await;

    let err = guard("sync", client.sync()).await.unwrap_err();
    match &err {
        AgentClientError::Busy { faultstring, .. } => {
            assert_eq!(faultstring, "Agent is busy: executing command get_hardware_info");
        }
        other => panic!("{other:?}"),
    }
    assert!(!blocked.is_finished());

    agent.feed("Blocked Machine 9000\n").await;
    let inventory = guard("the blocked command", blocked).await.unwrap().unwrap();
    assert_eq!(inventory.system_vendor.product_name, "Blocked Machine 9000");
    let list = agent.list();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].id, running.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_retried_then_unreachable() {
    let port = {
        let listener = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = AgentClient::new(
        &format!("https://127.0.0.1:{port}"),
        Some(&token()),
        Some(&cert().cert_pem),
        fast_config(),
    )
    .unwrap();
    let err = guard("sync", client.sync()).await.unwrap_err();
    assert!(matches!(err, AgentClientError::Unreachable { attempts: 3, .. }), "{err:?}");
    assert!(err.is_connection_failure());
    let err = guard("commands", client.commands()).await.unwrap_err();
    assert!(matches!(err, AgentClientError::Unreachable { attempts: 3, .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failed_post_is_checked_against_the_list_before_retrying() {
    // Accepts and closes every connection at once: no request ever gets a reply.
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let slammer = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let client =
        AgentClient::new(&format!("http://{addr}"), Some(&token()), None, fast_config()).unwrap();
    let err = guard("sync", client.sync()).await.unwrap_err();
    assert!(matches!(err, AgentClientError::Unreachable { attempts: 3, .. }), "{err:?}");
    // Three POSTs, each followed by one look at the command list.
    assert_eq!(accepted.load(Ordering::SeqCst), 6);
    slammer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_post_that_the_agent_accepted_is_not_sent_again() {
    let mut agent = Agent::start_blocked(Some(cert())).await;
    let config = AgentClientConfig { command_timeout: Duration::from_millis(500), ..fast_config() };
    let client = agent.client(config);

    let accepted =
        guard("execute", client.execute("poll.get_hardware_info", Map::new(), false)).await;
    let accepted = accepted.unwrap();
    assert_eq!(accepted.command_name, "get_hardware_info");
    assert_eq!(accepted.command_status, CommandStatus::Running);
    assert_eq!(agent.list().len(), 1, "the command was posted once");
    assert_eq!(agent.list()[0].id, accepted.id);

    agent.feed("Late Machine\n").await;
    let done = guard("the command", agent.handle.executor().wait(&accepted.id)).await.unwrap();
    assert_eq!(done.command_status, CommandStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_whose_connection_drops_is_taken_from_the_list_and_awaited() {
    let mut agent = Agent::start_blocked(None).await;
    let proxy = Proxy::start(&agent, 1).await;
    let client =
        Arc::new(AgentClient::new(&proxy.url(), Some(&token()), None, fast_config()).unwrap());
    let call = {
        let client = client.clone();
        tokio::spawn(
            async move { client.execute("poll.get_hardware_info", Map::new(), true).await },
        )
    };
    let running = agent.wait_running("get_hardware_info").await;
    let wait_line = format!("GET /v1/commands/{}?wait=true&agent_token={}", running.id, token());
    guard("the client to wait on the command", async {
        while !proxy.request_lines().iter().any(|l| l.starts_with(&wait_line)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    agent.feed("Proxied Machine\n").await;
    let done = guard("the call", call).await.unwrap().unwrap();
    assert_eq!(done.id, running.id);
    assert_eq!(done.command_status, CommandStatus::Succeeded);
    assert_eq!(
        done.command_result.as_ref().unwrap()["system_vendor"]["product_name"],
        json!("Proxied Machine")
    );
    let lines = proxy.request_lines();
    let posts = lines.iter().filter(|l| l.starts_with("POST ")).count();
    assert_eq!(posts, 1, "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("GET /v1/commands/?agent_token=")), "{lines:?}");
    assert_eq!(agent.list().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_commands_carry_step_node_ports_and_version() {
    let agent = Agent::start(None).await;
    let proxy = Proxy::start(&agent, 0).await;
    let client = AgentClient::new(&proxy.url(), Some(&token()), None, fast_config()).unwrap();
    let step: NodeStep = serde_json::from_value(json!({"interface": "deploy",
        "step": "erase_devices_metadata", "priority": 99, "args": {}}))
    .unwrap();
    let node = json!({"uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123", "driver_info": {}});
    let ports = [json!({"address": "52:54:00:12:34:56"})];
    let versions = [("generic_hardware_manager".to_owned(), "1.2".to_owned())].into();

    // The agent accepts the step and runs it on its fixture host tree; what matters here is
    // what was sent.
    let running = guard(
        "execute_clean_step",
        client.execute_clean_step(&step, &node, &ports, Some(&versions)),
    )
    .await
    .unwrap();
    assert_eq!(running.command_name, "execute_clean_step");
    // Asked of the agent directly, so the proxy records only the two calls under test.
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.list().iter().any(|c| c.command_status == CommandStatus::Running) {
        assert!(Instant::now() < deadline, "the clean step never finished");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let offered =
        guard("get_deploy_steps", client.get_steps(StepKind::Deploy, &node, &ports)).await.unwrap();
    assert!(offered.all_steps().any(|s| s.step == "write_image"), "{offered:?}");

    let requests = proxy.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let (line, body) = &requests[0];
    assert!(
        line.starts_with(&format!("POST /v1/commands/?wait=false&agent_token={} ", token())),
        "{line}"
    );
    assert_eq!(
        body,
        &json!({"name": "clean.execute_clean_step", "params": {
            "step": {"interface": "deploy", "step": "erase_devices_metadata", "priority": 99,
                "args": {}},
            "node": node, "ports": ports,
            "clean_version": {"generic_hardware_manager": "1.2"}}})
    );
    let (line, body) = &requests[1];
    assert!(line.starts_with("POST /v1/commands/?wait=true&agent_token="), "{line}");
    assert_eq!(
        body,
        &json!({"name": "deploy.get_deploy_steps", "params": {"node": node, "ports": ports}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockdown_syncs_locks_down_and_sees_the_agent_go() {
    let mut agent = Agent::start(Some(cert())).await;
    let client = agent.client(fast_config());
    guard("lockdown", client.lockdown()).await.unwrap();
    assert!(agent.handle.lockdown_requested());
    assert_eq!(agent.power.actions(), [PowerAction::SyncDisks]);
    let names: Vec<_> = agent.list().into_iter().map(|c| c.command_name).collect();
    assert_eq!(names, ["sync", "lockdown"]);
    guard("the server to stop", &mut agent.server).await.unwrap().unwrap();
}

/// A recording HTTP/1.1 proxy in front of a plain-HTTP agent. The first `drop_posts`
/// POSTs are forwarded, and once the agent has recorded the command the client's
/// connection is closed without a reply.
struct Proxy {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    async fn start(agent: &Agent, drop_posts: u32) -> Proxy {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let drops = Arc::new(AtomicU32::new(drop_posts));
        let upstream = agent.addr;
        let executor = agent.handle.executor().clone();
        let log = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (log, drops, executor) = (log.clone(), drops.clone(), executor.clone());
                tokio::spawn(async move {
                    let _ = relay(client, upstream, log, drops, executor).await;
                });
            }
        });
        Proxy { addr, requests, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<(String, Value)> {
        self.requests.lock().unwrap().clone()
    }

    fn request_lines(&self) -> Vec<String> {
        self.requests().into_iter().map(|(line, _)| line).collect()
    }
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    log: Arc<Mutex<Vec<(String, Value)>>>,
    drops: Arc<AtomicU32>,
    executor: ferric_agent::executor::Executor,
) -> std::io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    let (mut from_client, mut from_server) = (Vec::new(), Vec::new());
    while let Some((head, body)) = read_message(&mut client, &mut from_client).await? {
        let line = head.lines().next().unwrap_or_default().to_owned();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        log.lock().unwrap().push((line.clone(), json));
        let recorded = executor.list().len();
        server.write_all(head.as_bytes()).await?;
        server.write_all(&body).await?;
        let drop_this = line.starts_with("POST ")
            && drops.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if drop_this {
            while executor.list().len() == recorded {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            return Ok(());
        }
        let Some((head, body)) = read_message(&mut server, &mut from_server).await? else {
            return Ok(());
        };
        client.write_all(head.as_bytes()).await?;
        client.write_all(&body).await?;
    }
    Ok(())
}

/// Reads one HTTP/1.1 message framed by `Content-Length` (all the agent and reqwest
/// send here). `None` at a clean end of stream.
async fn read_message(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.trim().parse::<usize>().unwrap());
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let message: Vec<u8> = buf.drain(..head_end + length).collect();
    Ok(Some((head, message[head_end..].to_vec())))
}
