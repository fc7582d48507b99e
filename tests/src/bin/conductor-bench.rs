//! `conductor-bench [--nodes N] [--clients C] [--seconds S] [--warmup W] [--ferric PATH]
//! [--workloads show,list,heartbeat]`: seeds N nodes into a fresh SQLite store, starts the
//! real `ferric conductor` binary on it, and drives each workload with C concurrent
//! keep-alive clients for W seconds of warm-up and S measured seconds. Prints requests,
//! requests per second, latency percentiles and errors per workload, and the conductor's
//! peak resident memory (`VmHWM`).
//!
//! The nodes are seeded in `clean hold` with an agent token, a recorded `agent_url` and a
//! recorded certificate: a state where heartbeats are checked in full (token, callback URL,
//! certificate), recorded and handed to the worker, and one the conductor's start-up
//! takeover leaves alone (it has no `fail` transition).
//!
//! Numbers from a shared machine are noisy; this reports them and asserts nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferric_conductor::store::{JsonMap, Node, Store};
use ferric_shared::api_version::{ApiVersion, VERSION_HEADER};
use ferric_shared::heartbeat::{HeartbeatFacts, HeartbeatRequest};
use ferric_shared::states::ProvisionState;
use ferric_tests::conductor_process::{proc_status_kib, ConductorProcess};
use serde_json::Value;

/// The version the agent sends its heartbeats with.
const HEARTBEAT_VERSION: ApiVersion = ApiVersion::HEARTBEAT_CAP;
/// The `driver_internal_info` key of the agent token.
const TOKEN_KEY: &str = "agent_secret_token";
/// A request slower than this counts as an error (the conductor is stuck, not slow).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A stand-in for the agent's auto-TLS certificate: the conductor stores and compares it
/// as text, so its size matters here, not its validity.
const AGENT_CA: &str = "-----BEGIN CERTIFICATE-----
MIIDCTCCAfGgAwIBAgIUQ2xtUjJ4bWZlcnJpYy1iZW5jaC1hZ2VudC1jYTANBgkq
hkiG9w0BAQsFADAUMRIwEAYDVQQDDAkxMC4wLjAuNTAeFw0yNjAxMDEwMDAwMDBa
Fw0zNjAxMDEwMDAwMDBaMBQxEjAQBgNVBAMMCTEwLjAuMC41MIIBIjANBgkqhkiG
9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu4ZzQ0Jt3q1b2Vuy2hUqZ0u3m1zq5o8n2xk7
bV1eYm9hcmQtbWFuYWdlbWVudC1jb250cm9sbGVyLWJlbmNobWFyay1jZXJ0aWZp
Y2F0ZS1wYWRkaW5nLXRvLXJlYWxpc3RpYy1zaXplLWZvci1hbi1yc2EtMjA0OC1r
ZXktMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJj
ZGVmMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJj
ZGVmMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJj
ZDAwIDAQABo1MwUTAdBgNVHQ4EFgQUmZlcnJpYy1iZW5jaC1jYS1rZXktaWQwHwYD
VR0jBBgwFoAUmZlcnJpYy1iZW5jaC1jYS1rZXktaWQwDwYDVR0TAQH/BAUwAwEB
/zANBgkqhkiG9w0BAQsFAAOCAQEAZmVycmljLWJlbmNoLXNpZ25hdHVyZS1wYWRk
aW5nLXRvLXJlYWxpc3RpYy1zaXplLTAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5
YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5
YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5
YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5
-----END CERTIFICATE-----
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// `GET /v1/nodes/{uuid}`.
    Show,
    /// `GET /v1/nodes?limit=100`.
    List,
    /// `POST /v1/heartbeat/{uuid}`.
    Heartbeat,
}

impl Workload {
    fn parse(name: &str) -> anyhow::Result<Workload> {
        Ok(match name {
            "show" => Workload::Show,
            "list" => Workload::List,
            "heartbeat" => Workload::Heartbeat,
            other => bail!("unknown workload {other:?} (show, list, heartbeat)"),
        })
    }

    fn label(self) -> &'static str {
        match self {
            Workload::Show => "GET /v1/nodes/{uuid}",
            Workload::List => "GET /v1/nodes?limit=100",
            Workload::Heartbeat => "POST /v1/heartbeat/{uuid}",
        }
    }

    fn expected_status(self) -> u16 {
        match self {
            Workload::Heartbeat => 202,
            Workload::Show | Workload::List => 200,
        }
    }
}

#[derive(Debug)]
struct Options {
    nodes: usize,
    clients: usize,
    seconds: u64,
    warmup: u64,
    ferric: Option<PathBuf>,
    workloads: Vec<Workload>,
}

const USAGE: &str = "usage: conductor-bench [--nodes N] [--clients C] [--seconds S] [--warmup W] \
                     [--ferric PATH] [--workloads show,list,heartbeat]";

fn parse_options() -> anyhow::Result<Options> {
    let mut options = Options {
        nodes: 10_000,
        clients: 50,
        seconds: 15,
        warmup: 3,
        ferric: None,
        workloads: vec![Workload::Show, Workload::List, Workload::Heartbeat],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--nodes" => options.nodes = number(&value("--nodes")?, "--nodes")?,
            "--clients" => options.clients = number(&value("--clients")?, "--clients")?,
            "--seconds" => options.seconds = number(&value("--seconds")?, "--seconds")? as u64,
            "--warmup" => options.warmup = value("--warmup")?.parse().context("--warmup")?,
            "--ferric" => options.ferric = Some(value("--ferric")?.into()),
            "--workloads" => {
                options.workloads = value("--workloads")?
                    .split(',')
                    .map(Workload::parse)
                    .collect::<Result<_, _>>()?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(options)
}

/// A positive whole number.
fn number(text: &str, name: &str) -> anyhow::Result<usize> {
    let n: usize = text.parse().with_context(|| format!("{name} {text}"))?;
    if n == 0 {
        bail!("{name} must be at least 1");
    }
    Ok(n)
}

/// The `ferric` binary: `--ferric`, else the one built next to this benchmark (both land
/// in the same `target/<profile>/`).
fn ferric_binary(options: &Options) -> anyhow::Result<PathBuf> {
    let path = match &options.ferric {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("locating this benchmark")?
            .parent()
            .context("this benchmark has no directory")?
            .join("ferric"),
    };
    if !path.is_file() {
        bail!(
            "{} does not exist; build it with `cargo build --release -p ferric-conductor` or \
             pass --ferric",
            path.display()
        );
    }
    Ok(path)
}

/// What the benchmark knows of one seeded node.
struct Seeded {
    uuid: String,
    /// The heartbeat body, serialised once: the same bytes every time, as a running agent
    /// sends.
    heartbeat: Vec<u8>,
}

/// Creates `count` nodes in `clean hold`, each with its own token and callback URL.
async fn seed(db: &Path, count: usize) -> anyhow::Result<Vec<Seeded>> {
    let store = Store::open(db).await.context("opening the store to seed it")?;
    let mut seeded = Vec::with_capacity(count);
    for i in 0..count {
        let mut node = Node::new("fake");
        // 43 URL-safe characters, the shape of a real token; only equality matters.
        let token = format!("{}-bench-tok", node.uuid.simple());
        let callback_url = format!("https://10.{}.{}.{}:9999", i / 65536, (i / 256) % 256, i % 256);
        node.name = Some(format!("bench-{i:05}"));
        node.provision_state = ProvisionState::CleanHold;
        node.target_provision_state = Some(ProvisionState::Available);
        let mut info = JsonMap::new();
        info.insert(TOKEN_KEY.into(), Value::String(token.clone()));
        info.insert("agent_url".into(), Value::String(callback_url.clone()));
        info.insert("agent_verify_ca".into(), Value::String(AGENT_CA.into()));
        info.insert("clean_steps".into(), serde_json::json!([]));
        node.driver_internal_info = info;
        let node = store.create_node(&node).await.context("seeding a node")?;
        let body = HeartbeatRequest::for_version(
            HEARTBEAT_VERSION,
            HeartbeatFacts {
                callback_url: &callback_url,
                agent_token: Some(&token),
                agent_version: "10.0.0",
                agent_verify_ca: Some(AGENT_CA),
                ..HeartbeatFacts::default()
            },
        );
        seeded.push(Seeded {
            uuid: node.uuid.to_string(),
            heartbeat: serde_json::to_vec(&body).context("encoding a heartbeat")?,
        });
    }
    store.close().await;
    Ok(seeded)
}

/// What one client saw in the measured window.
#[derive(Default)]
struct ClientResult {
    /// Latency of every measured request, in microseconds.
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

/// One request of `workload` for node `node`; `Ok(())` when it got the expected status.
async fn one_request(
    client: &reqwest::Client,
    base: &str,
    workload: Workload,
    node: &Seeded,
) -> Result<(), String> {
    let request = match workload {
        Workload::Show => client.get(format!("{base}/v1/nodes/{}", node.uuid)),
        Workload::List => client.get(format!("{base}/v1/nodes?limit=100")),
        Workload::Heartbeat => client
            .post(format!("{base}/v1/heartbeat/{}", node.uuid))
            .header(VERSION_HEADER, HEARTBEAT_VERSION.to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(node.heartbeat.clone()),
    };
    let reply = request.send().await.map_err(|e| format!("{e:#}"))?;
    let status = reply.status().as_u16();
    // The whole body is read so that the connection is reused and the time includes it.
    let body = reply.bytes().await.map_err(|e| format!("reading the reply: {e:#}"))?;
    if status != workload.expected_status() {
        let text = String::from_utf8_lossy(&body);
        return Err(format!("status {status}: {}", text.chars().take(300).collect::<String>()));
    }
    Ok(())
}

/// What every client of one workload shares.
struct Plan {
    base: String,
    workload: Workload,
    nodes: Arc<Vec<Seeded>>,
    clients: usize,
    /// Requests started before this are warm-up and not recorded.
    measure_from: Instant,
    /// No request starts at or after this.
    measure_until: Instant,
}

/// Client `index`: cycles through its share of the nodes (node i belongs to client
/// i mod clients, so no two clients heartbeat the same node at once, as with real agents),
/// recording requests that start inside the measured window.
async fn run_client(client: reqwest::Client, plan: Arc<Plan>, index: usize) -> ClientResult {
    let Plan { base, workload, nodes, clients, measure_from, measure_until } = &*plan;
    let (workload, clients, measure_from, measure_until) =
        (*workload, *clients, *measure_from, *measure_until);
    let mut result = ClientResult::default();
    let mut next = index % nodes.len();
    loop {
        let started = Instant::now();
        if started >= measure_until {
            return result;
        }
        let Some(node) = nodes.get(next) else { return result };
        let outcome = one_request(&client, base, workload, node).await;
        let elapsed = started.elapsed();
        next += clients;
        if next >= nodes.len() {
            next = index % nodes.len();
        }
        if started < measure_from {
            continue;
        }
        match outcome {
            Ok(()) => {
                result.latencies_us.push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX))
            }
            Err(message) => {
                result.errors += 1;
                result.first_error.get_or_insert(message);
            }
        }
    }
}

struct Report {
    workload: Workload,
    requests: usize,
    per_second: f64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    errors: u64,
    first_error: Option<String>,
    rss_hwm_kib: u64,
}

/// The value below which `fraction` of the sorted samples lie (nearest rank).
fn percentile(sorted_us: &[u32], fraction: f64) -> Duration {
    if sorted_us.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((fraction * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    Duration::from_micros(u64::from(sorted_us.get(rank - 1).copied().unwrap_or(0)))
}

async fn run_workload(
    client: &reqwest::Client,
    base: &str,
    workload: Workload,
    nodes: &Arc<Vec<Seeded>>,
    options: &Options,
    pid: u32,
) -> anyhow::Result<Report> {
    let measure_from = Instant::now() + Duration::from_secs(options.warmup);
    let plan = Arc::new(Plan {
        base: base.to_owned(),
        workload,
        nodes: nodes.clone(),
        clients: options.clients,
        measure_from,
        measure_until: measure_from + Duration::from_secs(options.seconds),
    });
    let tasks: Vec<_> = (0..options.clients)
        .map(|index| tokio::spawn(run_client(client.clone(), plan.clone(), index)))
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let result = task.await.context("a client task panicked")?;
        latencies.extend(result.latencies_us);
        errors += result.errors;
        if first_error.is_none() {
            first_error = result.first_error;
        }
    }
    // Requests still in flight at the end finish a little after `measure_until`; the rate
    // counts the window they were started in.
    latencies.sort_unstable();
    let window = Duration::from_secs(options.seconds).as_secs_f64();
    Ok(Report {
        workload,
        requests: latencies.len(),
        per_second: (latencies.len() as u64 + errors) as f64 / window,
        p50: percentile(&latencies, 0.50),
        p90: percentile(&latencies, 0.90),
        p99: percentile(&latencies, 0.99),
        max: percentile(&latencies, 1.0),
        errors,
        first_error,
        rss_hwm_kib: proc_status_kib(pid, "VmHWM")?,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

async fn bench(options: Options) -> anyhow::Result<()> {
    let ferric = ferric_binary(&options)?;
    let dir = tempfile::tempdir().context("creating the data directory")?;
    let started = Instant::now();
    let nodes = Arc::new(seed(&dir.path().join("ferric.db"), options.nodes).await?);
    println!("seeded {} nodes in {:.1} s", nodes.len(), started.elapsed().as_secs_f64());

    let mut conductor = ConductorProcess::start(&ferric, dir.path())?;
    let base = conductor.base_url().to_owned();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.clients)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    conductor.wait_ready(&client).await?;
    println!(
        "conductor pid {} on {base}; {} clients, {} s warm-up + {} s per workload",
        conductor.pid(),
        options.clients,
        options.warmup,
        options.seconds
    );

    let mut reports = Vec::new();
    for &workload in &options.workloads {
        let report =
            run_workload(&client, &base, workload, &nodes, &options, conductor.pid()).await?;
        if let Some(message) = &report.first_error {
            eprintln!("{}: first error: {message}", workload.label());
        }
        reports.push(report);
    }
    let peak_kib = proc_status_kib(conductor.pid(), "VmHWM")?;
    // A WAL that only grows means checkpoints cannot keep up with the writes.
    let wal_bytes = std::fs::metadata(dir.path().join("ferric.db-wal")).map_or(0, |m| m.len());
    let exited = conductor.exited();
    conductor.stop();
    if let Some(status) = exited {
        bail!("the conductor exited during the benchmark ({status}):\n{}", conductor.log_tail());
    }

    println!();
    println!(
        "{:<28} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9}",
        "workload",
        "requests",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "errors",
        "VmHWM MB"
    );
    for r in &reports {
        println!(
            "{:<28} {:>9} {:>9.0} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9.1}",
            r.workload.label(),
            r.requests,
            r.per_second,
            ms(r.p50),
            ms(r.p90),
            ms(r.p99),
            ms(r.max),
            r.errors,
            r.rss_hwm_kib as f64 / 1024.0
        );
    }
    println!();
    println!("conductor peak RSS (VmHWM): {:.1} MB", peak_kib as f64 / 1024.0);
    println!("WAL file at the end: {:.1} MB", wal_bytes as f64 / 1e6);
    if let Some(hb) = reports.iter().find(|r| r.workload == Workload::Heartbeat) {
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        println!(
            "targets: >= 5000 heartbeats/s: {:.0} ({}); heartbeat p99 <= 20 ms: {} ms ({}); \
             RSS <= 100 MB: {:.1} MB ({})",
            hb.per_second,
            verdict(hb.per_second >= 5000.0),
            ms(hb.p99),
            verdict(hb.p99 <= Duration::from_millis(20)),
            peak_kib as f64 / 1024.0,
            verdict(peak_kib <= 100 * 1024)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    // reqwest is built without a default TLS provider; the benchmark speaks plain HTTP, but
    // the client still needs one installed to build.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = match parse_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("conductor-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("conductor-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conductor-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
