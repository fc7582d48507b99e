//! `bmc-bench [--bmcs N] [--subset N] [--runs N] [--only ipmi|redfish] [--concurrency C]
//! [--max-requests M] [--latency-us U] [--listeners L]`: the power-state sweep over
//! thousands of simulated BMCs.
//!
//! The simulators (`ferric_tests::bmc_sim`) run in a child process (this binary in its
//! hidden `serve` mode), so the CPU time of this process is the conductor's alone: the
//! real store (a temporary SQLite file), the real drivers and the real power-sync pass
//! (`PowerSync::run_once`, `C` nodes at once, every BMC request under a conductor-wide
//! cap of `M`).
//!
//! Per protocol it reports the cold sweep (IPMI: every session opened; Redfish: every
//! connection made), the warm sweep (sessions and connections reused), the conductor's
//! CPU seconds per 1,000 polls and the most requests any one BMC saw in flight at once.
//! Then, on the first `--subset` BMCs, the Ironic way — one `ipmitool -I lanplus -C 3 …
//! power status` process per BMC, 16 at a time (`xargs -P16`), or `curl` for Redfish —
//! against Ferric's cold and warm sweeps of the same BMCs, as ratios. Medians over
//! `--runs` runs. Numbers from a shared machine are noisy.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferric_conductor::bmc::ipmi::IpmiDriver;
use ferric_conductor::bmc::limit::RequestLimiter;
use ferric_conductor::bmc::redfish::RedfishDriver;
use ferric_conductor::bmc::DriverRegistry;
use ferric_conductor::periodic::power_sync::PowerSync;
use ferric_conductor::periodic::Reconciler;
use ferric_conductor::store::{JsonMap, Node, NodeQuery, Store};
use ferric_shared::states::{PowerState, ProvisionState};
use ferric_tests::bmc_sim::ipmi::{IpmiSim, IpmiSimOptions};
use ferric_tests::bmc_sim::redfish::{RedfishSim, RedfishSimOptions};
use ferric_tests::bmc_sim::SimStats;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const USAGE: &str = "usage: bmc-bench [--bmcs N] [--subset N] [--runs N] [--only ipmi|redfish] \
                     [--concurrency C] [--max-requests M] [--latency-us U] [--listeners L]";
const USERNAME: &str = "admin";
const PASSWORD: &str = "password";
/// The sweep target of the issue.
const TARGET: Duration = Duration::from_secs(30);
/// How many `ipmitool`/`curl` processes the Ironic-style comparison runs at once.
const PEER_PARALLEL: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Only {
    Both,
    Ipmi,
    Redfish,
}

#[derive(Debug, Clone)]
struct Options {
    bmcs: usize,
    subset: usize,
    runs: usize,
    only: Only,
    concurrency: usize,
    max_requests: usize,
    latency_us: u64,
    listeners: usize,
}

fn number(text: &str, name: &str) -> anyhow::Result<usize> {
    text.parse().with_context(|| format!("{name} wants a number, not {text:?}"))
}

fn parse_options(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        bmcs: 10_000,
        subset: 1_000,
        runs: 1,
        only: Only::Both,
        concurrency: 16,
        max_requests: ferric_conductor::bmc::limit::DEFAULT_MAX_CONCURRENT_REQUESTS,
        latency_us: 1_000,
        listeners: 100,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--bmcs" => options.bmcs = number(value("--bmcs")?, "--bmcs")?,
            "--subset" => options.subset = number(value("--subset")?, "--subset")?,
            "--runs" => options.runs = number(value("--runs")?, "--runs")?.max(1),
            "--concurrency" => {
                options.concurrency = number(value("--concurrency")?, "--concurrency")?.max(1)
            }
            "--max-requests" => {
                options.max_requests = number(value("--max-requests")?, "--max-requests")?.max(1)
            }
            "--latency-us" => {
                options.latency_us = number(value("--latency-us")?, "--latency-us")? as u64
            }
            "--listeners" => {
                options.listeners = number(value("--listeners")?, "--listeners")?.max(1)
            }
            "--only" => {
                options.only = match value("--only")?.as_str() {
                    "ipmi" => Only::Ipmi,
                    "redfish" => Only::Redfish,
                    other => bail!("--only takes ipmi or redfish, not {other:?}"),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    options.subset = options.subset.min(options.bmcs);
    Ok(options)
}

/// Raises the soft open-file limit to the hard one: each simulated BMC is a socket in the
/// simulator, and each BMC session one in the conductor.
fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        // SAFETY: as above.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    }
    limit.rlim_cur
}

/// CPU seconds (user + system) of this process, or of its reaped children.
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct it is given.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds of another process, from `/proc/PID/stat` (utime + stime).
fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are space separated.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}

// ---------------------------------------------------------------------------------------
// The simulator process.

/// What the simulator process announces once it listens.
#[derive(Debug, Serialize, Deserialize)]
struct Announce {
    ipmi_ports: Vec<u16>,
    /// (base URL, system id) per Redfish system.
    redfish: Vec<(String, String)>,
    open_files: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ChildStats {
    ipmi: SimStats,
    redfish: SimStats,
}

/// Whether BMC `index` starts powered on in the simulators (a third of them).
fn starts_on(index: usize) -> bool {
    index % 3 == 0
}

async fn serve(args: &[String]) -> anyhow::Result<()> {
    let (mut ipmi, mut redfish, mut listeners, mut latency_us) = (0, 0, 1, 0u64);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = args.next().with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--ipmi" => ipmi = number(value, arg)?,
            "--redfish" => redfish = number(value, arg)?,
            "--listeners" => listeners = number(value, arg)?,
            "--latency-us" => latency_us = number(value, arg)? as u64,
            other => bail!("serve: unknown argument {other:?}"),
        }
    }
    let open_files = raise_open_file_limit();
    let latency = Duration::from_micros(latency_us);
    let ipmi_sim = IpmiSim::start(IpmiSimOptions {
        bmcs: ipmi,
        username: USERNAME.into(),
        password: PASSWORD.into(),
        latency,
        ..IpmiSimOptions::default()
    })
    .await
    .context("starting the IPMI simulator")?;
    let redfish_sim = RedfishSim::start(RedfishSimOptions {
        systems: redfish,
        listeners,
        username: USERNAME.into(),
        password: PASSWORD.into(),
        latency,
    })
    .await
    .context("starting the Redfish simulator")?;
    for index in 0..ipmi.max(redfish) {
        ipmi_sim.set_power(index, starts_on(index));
        redfish_sim.set_power(index, starts_on(index));
    }
    let announce = Announce {
        ipmi_ports: ipmi_sim.ports().to_vec(),
        redfish: (0..redfish)
            .filter_map(|i| redfish_sim.system(i).map(|(url, id)| (url.to_owned(), id)))
            .collect(),
        open_files,
    };
    say(&serde_json::to_string(&announce)?)?;
    // Commands on stdin, one per line, until the parent closes it.
    let (tx, mut commands) = tokio::sync::mpsc::channel::<String>(4);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = commands.recv().await {
        let reply = match line.trim() {
            "stats" => serde_json::to_string(&ChildStats {
                ipmi: ipmi_sim.stats(),
                redfish: redfish_sim.stats(),
            })?,
            "sessions" => ipmi_sim.open_sessions_total().to_string(),
            "reset" => {
                ipmi_sim.reset_stats();
                redfish_sim.reset_stats();
                "{}".to_owned()
            }
            other => bail!("serve: unknown command {other:?}"),
        };
        say(&reply)?;
    }
    Ok(())
}

/// One line to the parent.
fn say(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}

/// The simulator child process; killed when dropped.
struct Simulators {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    announce: Announce,
}

impl Simulators {
    async fn start(options: &Options, ipmi: usize, redfish: usize) -> anyhow::Result<Simulators> {
        let exe = std::env::current_exe().context("finding this binary")?;
        let mut child = Command::new(exe)
            .arg("serve")
            .args(["--ipmi", &ipmi.to_string(), "--redfish", &redfish.to_string()])
            .args(["--listeners", &options.listeners.to_string()])
            .args(["--latency-us", &options.latency_us.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the simulator process")?;
        let stdin = child.stdin.take().context("simulator stdin")?;
        let stdout = child.stdout.take().context("simulator stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .context("the simulators did not start within 120 s")??
            .context("the simulator process exited before listening")?;
        let announce: Announce = serde_json::from_str(&first).context("simulator announce")?;
        if announce.ipmi_ports.len() != ipmi || announce.redfish.len() != redfish {
            bail!(
                "the simulators announced {} IPMI and {} Redfish BMCs, not {ipmi} and {redfish}",
                announce.ipmi_ports.len(),
                announce.redfish.len()
            );
        }
        Ok(Simulators { child, stdin, lines, announce })
    }

    async fn command(&mut self, command: &str) -> anyhow::Result<String> {
        self.stdin.write_all(format!("{command}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        self.lines.next_line().await?.context("the simulator process exited")
    }

    async fn stats(&mut self) -> anyhow::Result<ChildStats> {
        Ok(serde_json::from_str(&self.command("stats").await?)?)
    }

    async fn reset(&mut self) -> anyhow::Result<()> {
        self.command("reset").await.map(|_| ())
    }

    /// Waits until the BMCs hold no IPMI session: a dropped driver closes its sessions
    /// (Close Session) in the background, which must not overlap the next measurement.
    async fn wait_sessions_closed(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let open: usize = self.command("sessions").await?.trim().parse()?;
            if open == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{open} IPMI sessions still open 60 s after their driver was dropped");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn cpu_seconds(&self) -> f64 {
        self.child.id().and_then(process_cpu_seconds).unwrap_or(0.0)
    }
}

// ---------------------------------------------------------------------------------------
// The conductor side.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Ipmi,
    Redfish,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Ipmi => "IPMI",
            Protocol::Redfish => "Redfish",
        }
    }
}

/// Creates one node per BMC, named by its index, in `available` with no power state.
async fn seed(path: &Path, infos: Vec<(&str, JsonMap)>) -> anyhow::Result<Store> {
    let store = Store::open(path).await.context("opening the store")?;
    for (index, (driver, info)) in infos.into_iter().enumerate() {
        let mut node = Node::new(driver);
        node.name = Some(format!("bmc-{index:05}"));
        node.provision_state = ProvisionState::Available;
        node.driver_info = info;
        store.create_node(&node).await.context("seeding a node")?;
    }
    Ok(store)
}

fn ipmi_info(port: u16) -> JsonMap {
    let value = json!({
        "ipmi_address": "127.0.0.1", "ipmi_port": port, "ipmi_username": USERNAME,
        "ipmi_password": PASSWORD, "ipmi_cipher_suite": 3,
    });
    value.as_object().cloned().unwrap_or_default()
}

fn redfish_info(url: &str, id: &str) -> JsonMap {
    let value = json!({
        "redfish_address": url, "redfish_system_id": id, "redfish_username": USERNAME,
        "redfish_password": PASSWORD, "redfish_auth_type": "basic",
    });
    value.as_object().cloned().unwrap_or_default()
}

/// Fresh drivers (no sessions, no connections) sharing one limiter.
fn drivers(options: &Options) -> Arc<DriverRegistry> {
    let limiter = RequestLimiter::new(options.max_requests);
    let mut registry = DriverRegistry::new();
    registry.register(Arc::new(IpmiDriver::new().with_limiter(limiter.clone())));
    registry.register(Arc::new(RedfishDriver::new().with_limiter(limiter)));
    Arc::new(registry)
}

/// One timed sweep.
#[derive(Debug, Clone, Copy)]
struct Sweep {
    wall: Duration,
    cpu: f64,
}

/// One power-sync pass over every node of `store`; fails unless every BMC answered.
async fn sweep(
    store: &Store,
    drivers: &Arc<DriverRegistry>,
    options: &Options,
) -> anyhow::Result<Sweep> {
    let sync = PowerSync::new(store.clone(), Arc::clone(drivers), Duration::from_secs(3600), 3)
        .with_concurrency(options.concurrency);
    let cpu = cpu_seconds(libc::RUSAGE_SELF);
    let started = Instant::now();
    let summary = sync.run_once().await.map_err(|e| anyhow::anyhow!("power sync: {e}"))?;
    let wall = started.elapsed();
    let cpu = cpu_seconds(libc::RUSAGE_SELF) - cpu;
    if !summary.contains(" 0 failed") {
        bail!("power sync could not read every BMC: {summary}");
    }
    Ok(Sweep { wall, cpu })
}

/// How many nodes of `store` disagree with the power the simulators started with.
async fn mismatches(store: &Store) -> anyhow::Result<usize> {
    let nodes = store.list_nodes(&NodeQuery::default()).await?;
    let mut wrong = 0;
    for node in &nodes {
        let index: usize = node
            .name
            .as_deref()
            .and_then(|n| n.strip_prefix("bmc-"))
            .and_then(|n| n.parse().ok())
            .context("a seeded node lost its name")?;
        let expected = if starts_on(index) { PowerState::On } else { PowerState::Off };
        if node.power_state != Some(expected) {
            wrong += 1;
        }
    }
    Ok(wrong)
}

/// One peer process per BMC (`ipmitool` or `curl`), `PEER_PARALLEL` at a time; the wall
/// time, the failures and the peers' CPU seconds.
async fn peer_sweep(commands: Vec<Vec<String>>, expect: &'static str) -> (Duration, usize, f64) {
    let cpu = cpu_seconds(libc::RUSAGE_CHILDREN);
    let started = Instant::now();
    let slots = Arc::new(tokio::sync::Semaphore::new(PEER_PARALLEL));
    let mut running = tokio::task::JoinSet::new();
    for argv in commands {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { break };
        running.spawn(async move {
            let _permit = permit;
            let Some((program, args)) = argv.split_first() else { return false };
            let output =
                Command::new(program).args(args).stdin(Stdio::null()).kill_on_drop(true).output();
            match tokio::time::timeout(Duration::from_secs(60), output).await {
                Ok(Ok(out)) => {
                    out.status.success() && String::from_utf8_lossy(&out.stdout).contains(expect)
                }
                _ => false,
            }
        });
    }
    let mut failures = 0;
    while let Some(done) = running.join_next().await {
        if !matches!(done, Ok(true)) {
            failures += 1;
        }
    }
    (started.elapsed(), failures, cpu_seconds(libc::RUSAGE_CHILDREN) - cpu)
}

fn have(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Medians of one protocol's runs.
#[derive(Debug, Default)]
struct Results {
    cold: Vec<f64>,
    warm: Vec<f64>,
    cpu_per_1000_cold: Vec<f64>,
    cpu_per_1000_warm: Vec<f64>,
    max_in_flight_per_bmc: usize,
    max_in_flight_total: usize,
    sessions_opened_warm: u64,
    mismatches: usize,
    subset_ferric_cold: Vec<f64>,
    subset_ferric_warm: Vec<f64>,
    subset_peer: Vec<f64>,
    subset_peer_failures: usize,
    subset_peer_cpu_per_1000: Vec<f64>,
    sim_cpu: f64,
}

async fn bench_protocol(options: &Options, protocol: Protocol) -> anyhow::Result<Results> {
    let n = options.bmcs;
    let (ipmi, redfish) = match protocol {
        Protocol::Ipmi => (n, 0),
        Protocol::Redfish => (0, n),
    };
    let mut sims = Simulators::start(options, ipmi, redfish).await?;
    let infos = |range: std::ops::Range<usize>| -> Vec<(&'static str, JsonMap)> {
        range
            .map(|i| match protocol {
                Protocol::Ipmi => ("ipmi", ipmi_info(sims.announce.ipmi_ports[i])),
                Protocol::Redfish => {
                    let (url, id) = &sims.announce.redfish[i];
                    ("redfish", redfish_info(url, id))
                }
            })
            .collect()
    };
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let seeding = Instant::now();
    let full = seed(&dir.path().join("full.db"), infos(0..n)).await?;
    let subset = seed(&dir.path().join("subset.db"), infos(0..options.subset)).await?;
    println!(
        "{}: {n} simulated BMCs in a child process (open-file limit {}); {} + {} nodes \
         seeded in {:.1} s",
        protocol.name(),
        sims.announce.open_files,
        n,
        options.subset,
        seeding.elapsed().as_secs_f64()
    );

    let mut results = Results::default();
    for run in 1..=options.runs {
        sims.reset().await?;
        let registry = drivers(options);
        let cold = sweep(&full, &registry, options).await?;
        if run == 1 {
            results.mismatches = mismatches(&full).await?;
        }
        let after_cold = sims.stats().await?;
        sims.reset().await?;
        let warm = sweep(&full, &registry, options).await?;
        let after_warm = sims.stats().await?;
        let stats = match protocol {
            Protocol::Ipmi => [after_cold.ipmi, after_warm.ipmi],
            Protocol::Redfish => [after_cold.redfish, after_warm.redfish],
        };
        for s in &stats {
            results.max_in_flight_per_bmc =
                results.max_in_flight_per_bmc.max(s.max_in_flight_per_bmc);
            results.max_in_flight_total = results.max_in_flight_total.max(s.max_in_flight_total);
        }
        results.sessions_opened_warm += stats[1].sessions_opened;
        println!(
            "  run {run}: cold {:.2} s ({} requests, {} sessions opened), warm {:.2} s \
             ({} requests, {} sessions opened); conductor CPU {:.2} s + {:.2} s",
            cold.wall.as_secs_f64(),
            stats[0].requests,
            stats[0].sessions_opened,
            warm.wall.as_secs_f64(),
            stats[1].requests,
            stats[1].sessions_opened,
            cold.cpu,
            warm.cpu
        );
        let per_1000 = |s: Sweep| s.cpu / n as f64 * 1000.0;
        results.cold.push(cold.wall.as_secs_f64());
        results.warm.push(warm.wall.as_secs_f64());
        results.cpu_per_1000_cold.push(per_1000(cold));
        results.cpu_per_1000_warm.push(per_1000(warm));
        drop(registry);
        sims.wait_sessions_closed().await?;

        // The same first `subset` BMCs: Ferric (fresh drivers) and the peer tool.
        let registry = drivers(options);
        let subset_cold = sweep(&subset, &registry, options).await?;
        let subset_warm = sweep(&subset, &registry, options).await?;
        drop(registry);
        sims.wait_sessions_closed().await?;
        results.subset_ferric_cold.push(subset_cold.wall.as_secs_f64());
        results.subset_ferric_warm.push(subset_warm.wall.as_secs_f64());
        let (program, expect) = match protocol {
            Protocol::Ipmi => ("ipmitool", "Chassis Power is"),
            Protocol::Redfish => ("curl", "\"PowerState\""),
        };
        if !have(program) {
            println!("  {program} comparison skipped: {program} is not installed");
            continue;
        }
        let commands: Vec<Vec<String>> = (0..options.subset)
            .map(|i| match protocol {
                Protocol::Ipmi => [
                    "ipmitool",
                    "-I",
                    "lanplus",
                    "-C",
                    "3",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &sims.announce.ipmi_ports[i].to_string(),
                    "-U",
                    USERNAME,
                    "-P",
                    PASSWORD,
                    "power",
                    "status",
                ]
                .map(str::to_owned)
                .to_vec(),
                Protocol::Redfish => {
                    let (url, id) = &sims.announce.redfish[i];
                    [
                        "curl".to_owned(),
                        "-s".to_owned(),
                        "-f".to_owned(),
                        "-u".to_owned(),
                        format!("{USERNAME}:{PASSWORD}"),
                        format!("{url}/redfish/v1/Systems/{id}"),
                    ]
                    .to_vec()
                }
            })
            .collect();
        let (wall, failures, cpu) = peer_sweep(commands, expect).await;
        println!(
            "  run {run}: {} BMCs: {program} x{PEER_PARALLEL} {:.2} s ({failures} failed, \
             {:.2} CPU s); ferric cold {:.3} s, warm {:.3} s",
            options.subset,
            wall.as_secs_f64(),
            cpu,
            subset_cold.wall.as_secs_f64(),
            subset_warm.wall.as_secs_f64()
        );
        results.subset_peer.push(wall.as_secs_f64());
        results.subset_peer_failures += failures;
        results.subset_peer_cpu_per_1000.push(cpu / options.subset.max(1) as f64 * 1000.0);
    }
    results.sim_cpu = sims.cpu_seconds();
    full.close().await;
    subset.close().await;
    Ok(results)
}

fn report(options: &Options, protocol: Protocol, r: &mut Results) -> bool {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let cold = median(&mut r.cold);
    let warm = median(&mut r.warm);
    let name = protocol.name();
    println!();
    println!(
        "{name} sweep of {} BMCs ({} at once, at most {} requests in flight, BMC latency {} us), \
         median of {} run(s):",
        options.bmcs, options.concurrency, options.max_requests, options.latency_us, options.runs
    );
    println!("  cold sweep:  {cold:.2} s ({:.0} polls/s)", options.bmcs as f64 / cold);
    println!("  warm sweep:  {warm:.2} s ({:.0} polls/s)", options.bmcs as f64 / warm);
    println!(
        "  conductor CPU per 1,000 polls: cold {:.3} s, warm {:.3} s",
        median(&mut r.cpu_per_1000_cold),
        median(&mut r.cpu_per_1000_warm)
    );
    println!(
        "  max requests in flight: per BMC {}, all BMCs {}; sessions opened by warm sweeps {}",
        r.max_in_flight_per_bmc, r.max_in_flight_total, r.sessions_opened_warm
    );
    println!("  nodes whose recorded power state is wrong after the first sweep: {}", r.mismatches);
    println!("  simulator process CPU (all runs): {:.2} s", r.sim_cpu);
    let ferric_cold = median(&mut r.subset_ferric_cold);
    let ferric_warm = median(&mut r.subset_ferric_warm);
    if !r.subset_peer.is_empty() {
        let peer = median(&mut r.subset_peer);
        let program = match protocol {
            Protocol::Ipmi => "ipmitool -I lanplus -C 3",
            Protocol::Redfish => "curl",
        };
        println!(
            "  {} BMCs, {program} x{PEER_PARALLEL}: {peer:.2} s ({} failed, {:.2} CPU s per \
             1,000 polls); ferric: cold {ferric_cold:.3} s, warm {ferric_warm:.3} s; ferric is \
             {:.1}x (cold) / {:.1}x (warm) faster",
            options.subset,
            r.subset_peer_failures,
            median(&mut r.subset_peer_cpu_per_1000),
            peer / ferric_cold,
            peer / ferric_warm
        );
    }
    let in_time = cold <= TARGET.as_secs_f64() && warm <= TARGET.as_secs_f64();
    let one_each = r.max_in_flight_per_bmc <= 1;
    let capped = r.max_in_flight_total <= options.max_requests;
    println!(
        "  targets: sweep <= {} s: {} ({}); <= 1 request in flight per BMC: {} ({}); \
         <= {} in flight overall: {} ({}); every state recorded: {} ({})",
        TARGET.as_secs(),
        if in_time { "yes" } else { "no" },
        verdict(in_time),
        r.max_in_flight_per_bmc,
        verdict(one_each),
        options.max_requests,
        r.max_in_flight_total,
        verdict(capped),
        r.mismatches == 0,
        verdict(r.mismatches == 0)
    );
    in_time && one_each && capped && r.mismatches == 0
}

async fn bench(options: Options) -> anyhow::Result<bool> {
    let open_files = raise_open_file_limit();
    println!(
        "bmc-bench: {} BMCs, subset {}, {} run(s); conductor open-file limit {open_files}",
        options.bmcs, options.subset, options.runs
    );
    let mut protocols = Vec::new();
    if options.only != Only::Redfish {
        protocols.push(Protocol::Ipmi);
    }
    if options.only != Only::Ipmi {
        protocols.push(Protocol::Redfish);
    }
    let mut all_met = true;
    let mut reports = Vec::new();
    for protocol in protocols {
        let mut results = bench_protocol(&options, protocol).await?;
        reports.push((protocol, std::mem::take(&mut results)));
    }
    for (protocol, results) in &mut reports {
        all_met &= report(&options, *protocol, results);
    }
    Ok(all_met)
}

fn main() -> ExitCode {
    // reqwest is built without a default TLS provider; the Redfish driver still needs one
    // installed to build its client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let serving = args.first().is_some_and(|a| a == "serve");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bmc-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if serving {
        return match runtime.block_on(serve(&args[1..])) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bmc-bench serve: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let options = match parse_options(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("bmc-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(bench(options)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("bmc-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn options_parse_and_reject_unknown_flags() {
        let args = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let o = parse_options(&args("--bmcs 200 --subset 500 --only redfish --runs 0")).unwrap();
        assert_eq!((o.bmcs, o.subset, o.only, o.runs), (200, 200, Only::Redfish, 1));
        assert!(parse_options(&args("--only snmp")).is_err());
        assert!(parse_options(&args("--bmcs")).is_err());
        assert!(parse_options(&args("--fast")).is_err());
    }
}
