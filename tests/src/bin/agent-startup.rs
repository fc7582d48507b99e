//! `agent-startup [--runs N] [--agent PATH]`: starts the agent binary N times against an
//! in-process fake conductor and a `bios_vm` host tree, and reports how long each run
//! took from spawn to its first lookup and first heartbeat, and its resident memory
//! while idle two seconds after that heartbeat.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferric_agent::fixtures;
use ferric_tests::agent_process::{agent_binary, AgentArgs, AgentProcess};
use ferric_tests::fake_conductor::{FakeConductor, FakeConductorConfig};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const IDLE_BEFORE_RSS: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Options {
    runs: usize,
    agent: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    to_lookup: Duration,
    to_heartbeat: Duration,
    rss_kib: u64,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut options = Options { runs: 10, agent: None };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                let n = args.next().context("--runs needs a number")?;
                options.runs = n.parse().with_context(|| format!("--runs {n}"))?;
                if options.runs == 0 {
                    bail!("--runs must be at least 1");
                }
            }
            "--agent" => options.agent = Some(args.next().context("--agent needs a path")?.into()),
            "-h" | "--help" => {
                println!("usage: agent-startup [--runs N] [--agent PATH]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(options)
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    let kib = line.trim().trim_end_matches("kB").trim();
    kib.parse().with_context(|| format!("VmRSS {line:?}"))
}

async fn one_run(agent: &std::path::Path, tree: &std::path::Path) -> anyhow::Result<Sample> {
    let macs = fixtures::bios_vm().nics.iter().map(|n| n.mac.clone()).collect();
    let conductor = FakeConductor::start(FakeConductorConfig { macs, ..Default::default() })
        .await
        .context("starting the fake conductor")?;
    let mut process = AgentProcess::spawn(agent, &AgentArgs::new(conductor.url().as_str(), tree))?;
    let started = process.spawned_at();
    let Some(beats) = conductor.wait_for_heartbeats(1, RUN_TIMEOUT).await else {
        bail!("no heartbeat within {RUN_TIMEOUT:?}; agent log:\n{}", process.log());
    };
    let heartbeat = beats.first().context("heartbeat list empty")?;
    let lookups = conductor.lookups();
    let lookup = lookups.first().context("a heartbeat came before any lookup")?;
    if heartbeat.status != 202 {
        bail!("heartbeat refused with {}: {:?}", heartbeat.status, heartbeat.body);
    }
    tokio::time::sleep(IDLE_BEFORE_RSS).await;
    if let Some(status) = process.try_exit()? {
        bail!("the agent exited ({status}); log:\n{}", process.log());
    }
    let rss_kib = rss_kib(process.pid())?;
    process.kill();
    Ok(Sample {
        to_lookup: lookup.at.saturating_duration_since(started),
        to_heartbeat: heartbeat.at.saturating_duration_since(started),
        rss_kib,
    })
}

/// The middle value; of an even count, the upper of the two middle ones.
fn median<T: Copy + Ord>(values: &[T]) -> T {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn summary<T: Copy + Ord>(name: &str, values: &[T], show: impl Fn(T) -> String) {
    let min = values.iter().copied().min().map(&show).unwrap_or_default();
    let max = values.iter().copied().max().map(&show).unwrap_or_default();
    println!("{name:<24} median {:>9}   min {min:>9}   max {max:>9}", show(median(values)));
}

#[tokio::main]
async fn main() -> ExitCode {
    match measure().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent-startup: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn measure() -> anyhow::Result<()> {
    let options = parse_options()?;
    let agent = match options.agent {
        Some(path) => path,
        None => agent_binary()?,
    };
    let size = std::fs::metadata(&agent).with_context(|| format!("{}", agent.display()))?.len();
    let tree = tempfile::tempdir()?;
    fixtures::bios_vm().build(tree.path()).context("writing the bios_vm tree")?;

    println!("agent: {} ({size} bytes, {:.2} MiB)", agent.display(), size as f64 / 1048576.0);
    println!("{:>4} {:>14} {:>17} {:>10}", "run", "to lookup ms", "to heartbeat ms", "RSS KiB");
    let began = Instant::now();
    let mut samples = Vec::with_capacity(options.runs);
    for run in 1..=options.runs {
        let s = one_run(&agent, tree.path()).await.with_context(|| format!("run {run}"))?;
        println!("{run:>4} {:>14} {:>17} {:>10}", ms(s.to_lookup), ms(s.to_heartbeat), s.rss_kib);
        samples.push(s);
    }
    println!("{} runs in {:.1} s", samples.len(), began.elapsed().as_secs_f64());
    let lookups: Vec<Duration> = samples.iter().map(|s| s.to_lookup).collect();
    let beats: Vec<Duration> = samples.iter().map(|s| s.to_heartbeat).collect();
    let rss: Vec<u64> = samples.iter().map(|s| s.rss_kib).collect();
    summary("spawn -> lookup (ms)", &lookups, ms);
    summary("spawn -> heartbeat (ms)", &beats, ms);
    summary("idle RSS (KiB)", &rss, |v| v.to_string());
    Ok(())
}
