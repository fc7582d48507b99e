//! `ferric-lab`: try the agent by hand.
//!
//! - `ferric-lab fixture bios-vm|dual-socket DIR` writes a fake host tree into DIR.
//! - `ferric-lab conductor [--port N] [--max-version 1.NN]` runs the fake conductor in
//!   the foreground on 127.0.0.1, knowing the NICs of both fixtures, and logs each
//!   lookup and heartbeat until Ctrl-C.
//! - `ferric-lab demo --ferric BIN --ramdisk DIR [--dir DIR] [--cache DIR]` runs the VM
//!   lab's whole cycle (enroll, clean, deploy, boot from disk, undeploy) against a real
//!   conductor and narrates it (`./ferric-demo` builds everything and calls this).
//! - `ferric-lab chassis-control LABDIR MC get|set ...` is the lab BMC's chassis hook,
//!   run by `ipmi_sim` (see `ferric_tests::vm_lab::chassis`).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferric_agent::fixtures::{self, HostBuilder};
use ferric_shared::api_version::ApiVersion;
use ferric_tests::fake_conductor::{
    FakeConductor, FakeConductorConfig, LookupStep, RecordedRequest, TokenReply,
};
use ferric_tests::vm_lab::chassis;
use ferric_tests::vm_lab::cycle::{self, Narrator, Printer};
use ferric_tests::vm_lab::stack::{Stack, StackSpec};

const USAGE: &str = "usage:
  ferric-lab fixture bios-vm|dual-socket DIR
  ferric-lab conductor [--port N] [--max-version 1.NN]
  ferric-lab demo --ferric BIN --ramdisk DIR [--dir DIR] [--cache DIR]
  ferric-lab chassis-control LABDIR MC get|set WHAT [VALUE]";

fn fixture(name: &str) -> anyhow::Result<HostBuilder> {
    match name {
        "bios-vm" => Ok(fixtures::bios_vm()),
        "dual-socket" => Ok(fixtures::dual_socket_server()),
        other => bail!("unknown fixture {other:?}: bios-vm or dual-socket"),
    }
}

fn write_fixture(name: &str, dir: PathBuf) -> anyhow::Result<()> {
    let host = fixture(name)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} is not empty", dir.display());
    }
    host.build(&dir).with_context(|| format!("writing the tree into {}", dir.display()))?;
    let macs: Vec<&str> = host.nics.iter().map(|n| n.mac.as_str()).collect();
    println!("wrote {name} into {} (NIC MACs: {})", dir.display(), macs.join(", "));
    Ok(())
}

/// 43 URL-safe characters, like the tokens Ironic issues.
fn lab_token() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let state = RandomState::new();
    (0..43u32).map(|i| char::from(ALPHABET[(state.hash_one(i) % 64) as usize])).collect()
}

fn describe(r: &RecordedRequest) -> String {
    match r.path.as_str() {
        "/v1/lookup" => format!(
            "lookup addresses={} node_uuid={} -> {}",
            r.query_param("addresses").unwrap_or("-"),
            r.query_param("node_uuid").unwrap_or("-"),
            r.status
        ),
        "/" => format!("GET / -> {}", r.status),
        path => {
            let body = r.body.as_ref();
            let field = |name: &str| {
                body.and_then(|b| b.get(name)).and_then(|v| v.as_str()).unwrap_or("-").to_owned()
            };
            let tls = body.and_then(|b| b.get("agent_verify_ca")).is_some();
            format!(
                "{} {path} callback_url={} agent_version={} agent_verify_ca={} -> {}",
                r.method,
                field("callback_url"),
                field("agent_version"),
                if tls { "present" } else { "absent" },
                r.status
            )
        }
    }
}

async fn conductor(port: u16, max_version: ApiVersion) -> anyhow::Result<()> {
    let mut macs = Vec::new();
    for (name, host) in
        [("bios-vm", fixtures::bios_vm()), ("dual-socket", fixtures::dual_socket_server())]
    {
        macs.extend(host.nics.iter().map(|n| (name, n.mac.clone())));
    }
    let config = FakeConductorConfig {
        macs: macs.iter().map(|(_, m)| m.clone()).collect(),
        max_version,
        ..Default::default()
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let began = Instant::now();
    let fake = FakeConductor::start_at(config, addr).await.context("starting the conductor")?;
    let token = lab_token();
    // Revealed on every lookup (Ironic reveals it once), so the agent can be restarted.
    fake.script_lookups(std::iter::repeat_n(
        LookupStep::Found(TokenReply::Literal(token.clone())),
        100_000,
    ));

    println!("fake conductor at {} (API up to {max_version})", fake.url());
    println!("node {}", fake.node_uuid());
    for (name, mac) in &macs {
        println!("  port {mac} ({name})");
    }
    println!("agent token issued at lookup: {token}");
    println!(
        "try: ferric-agent --ipa-api-url {} --host-root DIR --ipa-listen-host 127.0.0.1 \
         --ipa-listen-port 9999 --ipa-advertise-host 127.0.0.1",
        fake.url().as_str().trim_end_matches('/')
    );
    let mut shown = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {}
        }
        let requests = fake.requests();
        for r in requests.iter().skip(shown) {
            let at = r.at.saturating_duration_since(began).as_secs_f64();
            println!("[{at:9.3}s] {}", describe(r));
        }
        shown = requests.len();
    }
    println!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The chassis hook runs for every BMC request and must answer at once: no runtime.
    if let [command, lab_dir, _mc, rest @ ..] = args.as_slice() {
        if command == "chassis-control" {
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            return match chassis::run(Path::new(lab_dir), &rest) {
                Ok(printed) => {
                    print!("{printed}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ferric-lab chassis-control: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ferric-lab: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(lab(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferric-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn lab(args: Vec<String>) -> anyhow::Result<()> {
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["fixture", name, dir] => write_fixture(name, PathBuf::from(dir)),
        ["conductor", rest @ ..] => {
            let mut port = 0u16;
            let mut max_version = FakeConductorConfig::default().max_version;
            let mut it = rest.iter();
            while let Some(flag) = it.next() {
                let value = it.next().with_context(|| format!("{flag} needs a value"))?;
                match *flag {
                    "--port" => port = value.parse().with_context(|| format!("--port {value}"))?,
                    "--max-version" => {
                        max_version = value.parse().map_err(|e| anyhow::anyhow!("{e}"))?
                    }
                    other => bail!("unknown flag {other:?}\n{USAGE}"),
                }
            }
            conductor(port, max_version).await
        }
        ["demo", rest @ ..] => demo(rest).await,
        _ => bail!("{USAGE}"),
    }
}

/// A stamp nobody could have put on the disk before this run.
fn fresh_stamp() -> String {
    let state = RandomState::new();
    format!("demo-{:016x}", state.hash_one(std::process::id()))
}

async fn demo(args: &[&str]) -> anyhow::Result<()> {
    let mut ferric = None;
    let mut ramdisk = None;
    let mut dir = None;
    let mut cache = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = PathBuf::from(it.next().with_context(|| format!("{flag} needs a value"))?);
        match *flag {
            "--ferric" => ferric = Some(value),
            "--ramdisk" => ramdisk = Some(value),
            "--dir" => dir = Some(value),
            "--cache" => cache = Some(value),
            other => bail!("unknown flag {other:?}\n{USAGE}"),
        }
    }
    let ferric = ferric.context("--ferric BIN is required")?;
    let ramdisk = ramdisk.context("--ramdisk DIR is required")?;
    let dir = match dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("ferric-demo-{}", std::process::id())),
    };
    let cache = cache.unwrap_or_else(|| std::env::temp_dir().join("ferric-demo-cache"));
    let spec = StackSpec {
        dir: std::path::absolute(&dir)?,
        ferric: std::path::absolute(&ferric)?,
        hook: std::env::current_exe().context("finding ferric-lab itself")?,
        ramdisk: std::path::absolute(&ramdisk)?,
        cache: std::path::absolute(&cache)?,
        stamp: fresh_stamp(),
    };
    let narrator = Printer(Instant::now());
    narrator
        .say(&format!("lab directory {} (consoles, logs, the server's disk)", spec.dir.display()));
    narrator
        .say("starting the conductor (SQLite store), the BMC (ipmi_sim) and building the image");
    let stack = Stack::start(&spec).await?;
    narrator.say(&format!(
        "conductor at {} (the server reaches it as http://10.0.2.100); BMC at 127.0.0.1:{} (IPMI)",
        stack.conductor.base_url(),
        stack.lab.ipmi_port
    ));
    narrator.say(&format!(
        "image {} with stamp {:?} (sha256 {})",
        stack.image.name, spec.stamp, stack.image.sha256
    ));
    let result = tokio::select! {
        result = cycle::run(stack.conductor.base_url(), &stack.lab, &stack.image, &narrator) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match result {
        Ok(timings) => {
            println!("\n{}", timings.table());
            println!("consoles and logs: {}", spec.dir.display());
            Ok(())
        }
        Err(e) => {
            eprintln!("{}", stack.report());
            Err(e.context(format!("the cycle failed (logs in {})", spec.dir.display())))
        }
    }
}
