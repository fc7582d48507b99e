//! `erase-bench [--dir DIR] [--runs N] [--mib M]`: zero-fill throughput of the agent's
//! full erase against `dd if=/dev/zero of=DEV bs=4M oflag=direct conv=fsync`, on the same
//! loop device in the same run.
//!
//! Run as root (it creates a loop device over a sparse file under `--dir`, default a
//! temporary directory, and detaches it at the end):
//!
//! ```text
//! cargo run --release -p ferric-tests --bin erase-bench -- --runs 3
//! ```
//!
//! The device is `--mib` MiB (default 2048). Before every timed run the device is filled
//! with data, so both tools start from the same, fully allocated backing file. The agent
//! side is `erase_disk` with one zero pass (`BLKZEROOUT` in 256 MiB ranges, then a
//! flush); its time to the end of the zero pass and its time including the read-back
//! verification (first and last MiB and 256 random MiB) are both reported. Each run
//! alternates which tool goes first; medians are reported, with the throughput ratio
//! agent / dd (target ≥ 0.95×).
//!
//! On a loop device `BLKZEROOUT` becomes `fallocate(FALLOC_FL_ZERO_RANGE)` on the backing
//! file, so the agent is not writing the bytes dd writes; that is what a loop device
//! offers, and the figure says so. The machine is shared: this reports figures and
//! asserts nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferric_agent::erase::full::{erase_disk, FullEraseOptions};
use ferric_agent::erase::report::Verification;

const MIB: u64 = 1024 * 1024;

#[derive(Debug)]
struct Options {
    dir: Option<PathBuf>,
    runs: usize,
    mib: u64,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut options = Options { dir: None, runs: 3, mib: 2048 };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => options.dir = Some(value()?.into()),
            "--runs" => options.runs = value()?.parse().context("--runs")?,
            "--mib" => options.mib = value()?.parse().context("--mib")?,
            "--help" | "-h" => {
                println!("erase-bench [--dir DIR] [--runs N] [--mib M]");
                std::process::exit(0);
            }
            other => bail!("unknown flag {other:?}"),
        }
    }
    if options.runs == 0 || options.mib < 4 || options.mib % 4 != 0 {
        bail!("--runs must be at least 1 and --mib a multiple of 4, at least 4");
    }
    Ok(options)
}

/// A loop device over our backing file, detached on drop.
struct LoopDevice {
    path: PathBuf,
}

impl LoopDevice {
    fn attach(backing: &Path) -> anyhow::Result<LoopDevice> {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(backing)
            .output()
            .context("running losetup")?;
        if !out.status.success() {
            bail!("losetup failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(LoopDevice { path: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()) })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("--detach").arg(&self.path).status();
    }
}

fn dd(args: &[String]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = Command::new("dd")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running dd")?;
    if !status.success() {
        bail!("dd {args:?} failed: {status}");
    }
    Ok(started.elapsed())
}

/// Fills the device with non-zero data (not timed), so each run starts alike.
fn fill(dev: &Path, mib: u64) -> anyhow::Result<()> {
    dd(&[
        "if=/dev/urandom".into(),
        format!("of={}", dev.display()),
        "bs=4M".into(),
        format!("count={}", mib / 4),
        "oflag=direct".into(),
        "conv=fsync".into(),
    ])
    .map(|_| ())
}

fn run_dd(dev: &Path, mib: u64) -> anyhow::Result<Duration> {
    dd(&[
        "if=/dev/zero".into(),
        format!("of={}", dev.display()),
        "bs=4M".into(),
        format!("count={}", mib / 4),
        "oflag=direct".into(),
        "conv=fsync".into(),
    ])
}

/// The agent's zero-fill: time to the end of the zero pass, and in total.
fn run_agent(dev: &Path, size: u64) -> anyhow::Result<(Duration, Duration)> {
    let options = FullEraseOptions { iterations: 0, ..FullEraseOptions::default() };
    let started = Instant::now();
    let zeroed_at = Mutex::new(None);
    let report = erase_disk(&dev.display().to_string(), dev, &options, &|done, total| {
        if done == total {
            if let Ok(mut at) = zeroed_at.lock() {
                at.get_or_insert_with(|| started.elapsed());
            }
        }
    })
    .context("erase_disk")?;
    let total = started.elapsed();
    if !matches!(report.verification, Verification::Verified { .. }) {
        bail!("the erase was not verified: {report:?}");
    }
    if report.bytes != size {
        bail!("erased {} bytes, expected {size}", report.bytes);
    }
    let zeroed = zeroed_at.into_inner().ok().flatten().unwrap_or(total);
    Ok((zeroed, total))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn rate(size: u64, d: Duration) -> f64 {
    size as f64 / MIB as f64 / d.as_secs_f64().max(1e-9)
}

fn bench(options: &Options) -> anyhow::Result<()> {
    let tmp;
    let dir = match &options.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path().to_owned()
        }
    };
    let size = options.mib * MIB;
    let backing = dir.join("erase-bench.img");
    std::fs::File::create(&backing)
        .and_then(|f| f.set_len(size))
        .with_context(|| format!("creating {}", backing.display()))?;
    let result = (|| {
        let dev = LoopDevice::attach(&backing)?;
        println!(
            "erase-bench: {} MiB loop device {} over {}",
            options.mib,
            dev.path.display(),
            backing.display()
        );
        let mut dd_times = Vec::new();
        let mut zero_times = Vec::new();
        let mut total_times = Vec::new();
        for run in 0..options.runs {
            let order = if run % 2 == 0 { ["agent", "dd"] } else { ["dd", "agent"] };
            for tool in order {
                fill(&dev.path, options.mib)?;
                if tool == "dd" {
                    let t = run_dd(&dev.path, options.mib)?;
                    println!(
                        "run {run}: dd          {:>8.3} s  {:>9.1} MiB/s",
                        t.as_secs_f64(),
                        rate(size, t)
                    );
                    dd_times.push(t);
                } else {
                    let (zeroed, total) = run_agent(&dev.path, size)?;
                    println!(
                        "run {run}: agent zero  {:>8.3} s  {:>9.1} MiB/s  (with verification {:.3} s)",
                        zeroed.as_secs_f64(),
                        rate(size, zeroed),
                        total.as_secs_f64()
                    );
                    zero_times.push(zeroed);
                    total_times.push(total);
                }
            }
        }
        let dd_m = median(dd_times);
        let zero_m = median(zero_times);
        let total_m = median(total_times);
        println!(
            "median dd:                      {:>8.3} s  {:>9.1} MiB/s",
            dd_m.as_secs_f64(),
            rate(size, dd_m)
        );
        println!(
            "median agent zero-fill:         {:>8.3} s  {:>9.1} MiB/s",
            zero_m.as_secs_f64(),
            rate(size, zero_m)
        );
        println!(
            "median agent zero-fill+verify:  {:>8.3} s  {:>9.1} MiB/s",
            total_m.as_secs_f64(),
            rate(size, total_m)
        );
        let ratio = dd_m.as_secs_f64() / zero_m.as_secs_f64().max(1e-9);
        let ratio_verified = dd_m.as_secs_f64() / total_m.as_secs_f64().max(1e-9);
        println!(
            "throughput ratio agent/dd: {ratio:.2}x zero-fill, {ratio_verified:.2}x with verification (target >= 0.95x): {}",
            if ratio >= 0.95 { "met" } else { "NOT met" }
        );
        Ok(())
    })();
    let _ = std::fs::remove_file(&backing);
    result
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("erase-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/loop-control").exists() {
        println!("skipped: erase-bench needs root and /dev/loop-control for a loop device");
        return ExitCode::SUCCESS;
    }
    match bench(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("erase-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
