//! `image-bench [--dir DIR] [--runs N] [--agent PATH] [--ferric PATH]
//! [--only raw,qcow2,sparse] [--raw-mib M] [--qcow2-virtual-mib M] [--qcow2-data-mib M]
//! [--sparse-mib M] [--sparse-data-percent P]`: measures `ferric-agent write-image`
//! against the tools it replaces, in the same run, on the same machine:
//!
//! - **raw** (2 GiB of incompressible data, sha256 verified by the agent) against
//!   `curl -s URL | dd of=F bs=4M oflag=direct conv=fsync`; target: ≥ 0.95× dd's throughput.
//! - **qcow2** (4 GiB virtual, ~1 GiB data) against ironic-python-agent's method: download
//!   to a file while hashing, then `qemu-img convert -O raw -S 0 -t directsync`; target:
//!   ≤ 0.5× the time, and the agent's peak RSS ≤ 64 MiB.
//! - **sparse** raw (4 GiB, 10 % data) and its zstd form, against writing only its data
//!   (`curl | dd` of an image made of the data alone); target: ≤ 1.3× that time. The
//!   conductor lists the raw image's data (its data map), so the agent downloads only the
//!   data; the raw image is measured unverified and sha256-verified: verification must
//!   hash every byte of the 4 GiB, holes included, which no transfer saving can avoid.
//!
//! Images are served by the real `ferric conductor` from its image directory (the server
//! the agent downloads from in a deploy); targets are regular files on local disk under
//! `--dir`. Each run of a pair alternates tool order; medians are reported. The machine is
//! shared: this reports and judges figures, it asserts nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferric_tests::conductor_process::{proc_status_kib, ConductorProcess};

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Raw,
    Qcow2,
    Sparse,
}

impl Scenario {
    fn parse(name: &str) -> anyhow::Result<Scenario> {
        match name {
            "raw" => Ok(Scenario::Raw),
            "qcow2" => Ok(Scenario::Qcow2),
            "sparse" => Ok(Scenario::Sparse),
            other => bail!("unknown scenario {other:?} (expected raw, qcow2, sparse)"),
        }
    }
}

#[derive(Debug)]
struct Options {
    dir: Option<PathBuf>,
    runs: usize,
    agent: Option<PathBuf>,
    ferric: Option<PathBuf>,
    only: Vec<Scenario>,
    raw_mib: u64,
    qcow2_virtual_mib: u64,
    qcow2_data_mib: u64,
    sparse_mib: u64,
    sparse_data_percent: u64,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut options = Options {
        dir: None,
        runs: 3,
        agent: None,
        ferric: None,
        only: vec![Scenario::Raw, Scenario::Qcow2, Scenario::Sparse],
        raw_mib: 2048,
        qcow2_virtual_mib: 4096,
        qcow2_data_mib: 1024,
        sparse_mib: 4096,
        sparse_data_percent: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        let number = |v: String| -> anyhow::Result<u64> {
            v.parse().with_context(|| format!("{flag}: {v:?} is not a whole number"))
        };
        match flag.as_str() {
            "--dir" => options.dir = Some(value()?.into()),
            "--runs" => options.runs = number(value()?)?.max(1) as usize,
            "--agent" => options.agent = Some(value()?.into()),
            "--ferric" => options.ferric = Some(value()?.into()),
            "--only" => {
                options.only =
                    value()?.split(',').map(Scenario::parse).collect::<anyhow::Result<_>>()?
            }
            "--raw-mib" => options.raw_mib = number(value()?)?,
            "--qcow2-virtual-mib" => options.qcow2_virtual_mib = number(value()?)?,
            "--qcow2-data-mib" => options.qcow2_data_mib = number(value()?)?,
            "--sparse-mib" => options.sparse_mib = number(value()?)?,
            "--sparse-data-percent" => options.sparse_data_percent = number(value()?)?.min(100),
            "--help" | "-h" => {
                println!("{}", include_str!("image-bench.rs").lines().next().unwrap_or(""));
                std::process::exit(0);
            }
            other => bail!("unknown flag {other:?}"),
        }
    }
    if options.qcow2_data_mib > options.qcow2_virtual_mib {
        bail!("--qcow2-data-mib exceeds --qcow2-virtual-mib");
    }
    Ok(options)
}

/// A binary built next to this benchmark (`target/<profile>/<name>`), or the given path.
fn sibling_binary(given: &Option<PathBuf>, name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("locating this benchmark")?
            .parent()
            .context("this benchmark has no directory")?
            .join(name),
    };
    if !path.is_file() {
        bail!(
            "{} does not exist; build it with `cargo build --release -p {package}` or pass \
             --{}",
            path.display(),
            if name == "ferric" { "ferric" } else { "agent" }
        );
    }
    Ok(path)
}

/// Fills `buf` with fast pseudo-random bytes (xorshift64*): incompressible data, so no
/// tool can win by compressing or detecting zeros.
fn fill_random(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let word = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// Writes `size` bytes at `path`: random data in `data_mib` MiB spread evenly as 4 MiB
/// chunks, holes elsewhere. `data_only`, when given, receives the data chunks alone.
fn make_image(
    path: &Path,
    size_mib: u64,
    data_mib: u64,
    data_only: Option<&Path>,
) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    const CHUNK_MIB: u64 = 4;
    let file = std::fs::File::create(path).with_context(|| format!("creating {path:?}"))?;
    file.set_len(size_mib * MIB)?;
    let mut only = match data_only {
        Some(p) => Some(std::fs::File::create(p).with_context(|| format!("creating {p:?}"))?),
        None => None,
    };
    let chunks = data_mib.div_ceil(CHUNK_MIB).max(1);
    let stride_mib = (size_mib / chunks).max(CHUNK_MIB);
    let mut buf = vec![0u8; (CHUNK_MIB * MIB) as usize];
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ size_mib ^ (data_mib << 20);
    for i in 0..chunks {
        let at = i * stride_mib * MIB;
        if at + CHUNK_MIB * MIB > size_mib * MIB {
            break;
        }
        fill_random(&mut buf, &mut state);
        file.write_all_at(&buf, at)?;
        if let Some(only) = only.as_mut() {
            only.write_all(&buf)?;
        }
    }
    file.sync_all()?;
    Ok(())
}

fn run_tool(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let out = run_tool("sha256sum", &[&path.to_string_lossy()])?;
    out.split_whitespace().next().map(str::to_owned).context("sha256sum printed nothing")
}

/// An image served by the conductor, with its digest.
struct Served {
    name: String,
    sha256: String,
    /// Bytes after decoding (what lands on the disk).
    disk_bytes: u64,
}

/// Builds (or reuses, when a previous run left it with the same parameters) every image
/// the chosen scenarios need in `images`.
fn prepare_images(
    options: &Options,
    images: &Path,
) -> anyhow::Result<Vec<(Scenario, Vec<Served>)>> {
    std::fs::create_dir_all(images)?;
    let mut out = Vec::new();
    let made = |name: &str, params: &str, build: &dyn Fn() -> anyhow::Result<()>| {
        let stamp = images.join(format!("{name}.params"));
        let current = std::fs::read_to_string(&stamp).unwrap_or_default();
        if current != params || !images.join(name).is_file() {
            println!("making {name} ({params})");
            build()?;
            std::fs::write(&stamp, params)?;
        }
        anyhow::Ok(())
    };
    for &scenario in &options.only {
        let served = match scenario {
            Scenario::Raw => {
                let params = format!("raw {} MiB", options.raw_mib);
                made("raw.img", &params, &|| {
                    make_image(&images.join("raw.img"), options.raw_mib, options.raw_mib, None)
                })?;
                vec![served(images, "raw.img", options.raw_mib * MIB)?]
            }
            Scenario::Qcow2 => {
                let params =
                    format!("qcow2 {} / {} MiB", options.qcow2_virtual_mib, options.qcow2_data_mib);
                made("image.qcow2", &params, &|| {
                    let src = images.join("qcow2-source.raw.tmp");
                    make_image(&src, options.qcow2_virtual_mib, options.qcow2_data_mib, None)?;
                    let dst = images.join("image.qcow2");
                    run_tool(
                        "qemu-img",
                        &[
                            "convert",
                            "-f",
                            "raw",
                            "-O",
                            "qcow2",
                            &src.to_string_lossy(),
                            &dst.to_string_lossy(),
                        ],
                    )?;
                    std::fs::remove_file(&src)?;
                    Ok(())
                })?;
                vec![served(images, "image.qcow2", options.qcow2_virtual_mib * MIB)?]
            }
            Scenario::Sparse => {
                let data_mib = options.sparse_mib * options.sparse_data_percent / 100;
                let params = format!("sparse {} MiB, {} MiB data", options.sparse_mib, data_mib);
                made("sparse.img", &params, &|| {
                    let img = images.join("sparse.img");
                    make_image(
                        &img,
                        options.sparse_mib,
                        data_mib,
                        Some(&images.join("sparse-data.img")),
                    )?;
                    let zst = images.join("sparse.img.zst");
                    let _ = std::fs::remove_file(&zst);
                    run_tool(
                        "zstd",
                        &["-q", "-T0", "-3", &img.to_string_lossy(), "-o", &zst.to_string_lossy()],
                    )?;
                    Ok(())
                })?;
                let data_len = std::fs::metadata(images.join("sparse-data.img"))?.len();
                vec![
                    served(images, "sparse.img", options.sparse_mib * MIB)?,
                    served(images, "sparse.img.zst", options.sparse_mib * MIB)?,
                    served(images, "sparse-data.img", data_len)?,
                ]
            }
        };
        out.push((scenario, served));
    }
    Ok(out)
}

fn served(images: &Path, name: &str, disk_bytes: u64) -> anyhow::Result<Served> {
    // The digest is cached beside the image and trusted while it is newer than the image.
    let cache = images.join(format!("{name}.sha256"));
    let fresh = match (std::fs::metadata(&cache), std::fs::metadata(images.join(name))) {
        (Ok(c), Ok(i)) => c.modified()? >= i.modified()?,
        _ => false,
    };
    let sha256 = if fresh {
        std::fs::read_to_string(&cache)?.trim().to_owned()
    } else {
        let sum = sha256_of(&images.join(name))?;
        std::fs::write(&cache, &sum)?;
        sum
    };
    Ok(Served { name: name.to_owned(), sha256, disk_bytes })
}

/// One timed run of a command: wall time and the peak RSS of the process itself.
#[derive(Debug, Clone, Copy)]
struct Run {
    wall: Duration,
    max_rss_kib: u64,
}

/// Runs `command` to completion. The peak RSS is the process's own `VmHWM`, sampled until
/// it exits (the rusage of a forked child would also count the parent's pages).
fn timed(command: &mut Command) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning")?;
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            use std::io::Read;
            let _ = s.read_to_string(&mut text);
        }
        text
    });
    let mut max_rss_kib = 0;
    let status = loop {
        if let Ok(hwm) = proc_status_kib(child.id(), "VmHWM") {
            max_rss_kib = max_rss_kib.max(hwm);
        }
        if let Some(status) = child.try_wait().context("waiting")? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = started.elapsed();
    let stderr = reader.join().unwrap_or_default();
    if !status.success() {
        bail!("exited with {status}: {}", stderr.trim());
    }
    Ok(Run { wall, max_rss_kib })
}

/// A fresh target file of `size` bytes (sparse), as a disk of that size.
fn fresh_target(path: &Path, size: u64) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let file = std::fs::File::create(path)?;
    file.set_len(size)?;
    Ok(())
}

fn agent_write(agent: &Path, url: &str, sha256: &str, target: &Path) -> Command {
    let mut c = Command::new(agent);
    c.args(["write-image", "--url", url, "--target"]).arg(target).args([
        "--os-hash-algo",
        "sha256",
        "--os-hash-value",
        sha256,
    ]);
    c
}

fn shell(script: &str) -> Command {
    let mut c = Command::new("bash");
    c.args(["-c", &format!("set -euo pipefail; {script}")]);
    c
}

fn median(runs: &[Run]) -> Run {
    let mut walls: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
    walls.sort();
    let wall = walls[walls.len() / 2];
    let max_rss_kib = runs.iter().map(|r| r.max_rss_kib).max().unwrap_or(0);
    Run { wall, max_rss_kib }
}

/// Runs each contestant `runs` times, alternating which goes first, and returns the
/// medians in contestant order.
fn contest(
    runs: usize,
    contestants: &mut [(&str, &mut dyn FnMut() -> anyhow::Result<Run>)],
) -> anyhow::Result<Vec<Run>> {
    let mut results: Vec<Vec<Run>> = vec![Vec::new(); contestants.len()];
    for round in 0..runs {
        let n = contestants.len();
        for k in 0..n {
            let i = if round % 2 == 0 { k } else { n - 1 - k };
            let (name, run) = &mut contestants[i];
            let r = run().with_context(|| format!("{name}, run {}", round + 1))?;
            println!("  {name:<44} {:>8.2} s  peak RSS {:>7.1} MiB", secs(r.wall), mib(r));
            results[i].push(r);
        }
    }
    Ok(results.iter().map(|r| median(r)).collect())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn mib(r: Run) -> f64 {
    r.max_rss_kib as f64 / 1024.0
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn same_content(a: &Path, b: &Path) -> anyhow::Result<bool> {
    Ok(Command::new("cmp").arg("-s").arg(a).arg(b).status().context("running cmp")?.success())
}

async fn bench(options: Options) -> anyhow::Result<()> {
    let agent = sibling_binary(&options.agent, "ferric-agent", "ferric-agent")?;
    let ferric = sibling_binary(&options.ferric, "ferric", "ferric-conductor")?;
    let dir = match &options.dir {
        Some(d) => d.clone(),
        None => ferric_tests::workspace_bin::target_dir()?.join("image-bench"),
    };
    let data_dir = dir.join("conductor");
    let images = data_dir.join("images");
    let work = dir.join("work");
    std::fs::create_dir_all(&work)?;
    let prepared = prepare_images(&options, &images)?;

    let mut conductor = ConductorProcess::start(&ferric, &data_dir)?;
    let client = reqwest::Client::new();
    conductor.wait_ready(&client).await?;
    let base = format!("{}/images", conductor.base_url());
    println!("images served by ferric conductor (pid {}) at {base}/", conductor.pid());
    println!("agent: {}\n", agent.display());
    let runs = options.runs;
    let target_a = work.join("target-agent");
    let target_b = work.join("target-other");
    let tmp = work.join("download.tmp");
    let mut summary = Vec::new();

    for (scenario, served) in &prepared {
        match scenario {
            Scenario::Raw => {
                let img = &served[0];
                let url = format!("{base}/{}", img.name);
                println!("raw: {} MiB, sha256 verified by the agent", img.disk_bytes / MIB);
                let medians = contest(
                    runs,
                    &mut [
                        ("ferric-agent write-image", &mut || {
                            fresh_target(&target_a, img.disk_bytes)?;
                            timed(&mut agent_write(&agent, &url, &img.sha256, &target_a))
                        }),
                        ("curl | dd oflag=direct conv=fsync", &mut || {
                            let _ = std::fs::remove_file(&target_b);
                            timed(&mut shell(&format!(
                                "curl -sf '{url}' | dd of='{}' bs=4M oflag=direct conv=fsync \
                                 status=none iflag=fullblock",
                                target_b.display()
                            )))
                        }),
                    ],
                )?;
                let same = same_content(&target_a, &target_b)?;
                let mbps = |r: Run| img.disk_bytes as f64 / MIB as f64 / secs(r.wall);
                let ratio = mbps(medians[0]) / mbps(medians[1]);
                summary.push(format!(
                    "raw: agent {:.0} MiB/s, dd {:.0} MiB/s: {:.2}x dd's throughput \
                     (target >= 0.95x: {}); outputs identical: {same}",
                    mbps(medians[0]),
                    mbps(medians[1]),
                    ratio,
                    verdict(ratio >= 0.95)
                ));
            }
            Scenario::Qcow2 => {
                let img = &served[0];
                let url = format!("{base}/{}", img.name);
                let size = std::fs::metadata(images.join(&img.name))?.len();
                println!("qcow2: {} MiB virtual, {} MiB file", img.disk_bytes / MIB, size / MIB);
                let medians = contest(
                    runs,
                    &mut [
                        ("ferric-agent write-image", &mut || {
                            fresh_target(&target_a, img.disk_bytes)?;
                            timed(&mut agent_write(&agent, &url, &img.sha256, &target_a))
                        }),
                        ("download+sha256, qemu-img convert -S 0", &mut || {
                            fresh_target(&target_b, img.disk_bytes)?;
                            timed(&mut shell(&format!(
                                "curl -sf '{url}' | tee '{tmp}' | sha256sum >/dev/null; \
                                 qemu-img convert -f qcow2 -O raw -S 0 -t directsync -W \
                                 '{tmp}' '{out}'; rm -f '{tmp}'",
                                tmp = tmp.display(),
                                out = target_b.display()
                            )))
                        }),
                    ],
                )?;
                let same = same_content(&target_a, &target_b)?;
                let ratio = secs(medians[0].wall) / secs(medians[1].wall);
                summary.push(format!(
                    "qcow2: agent {:.2} s, IPA's method {:.2} s: {:.2}x the time (target <= \
                     0.5x: {}); agent peak RSS {:.1} MiB (target <= 64 MiB: {}); outputs \
                     identical: {same}",
                    secs(medians[0].wall),
                    secs(medians[1].wall),
                    ratio,
                    verdict(ratio <= 0.5),
                    mib(medians[0]),
                    verdict(medians[0].max_rss_kib <= 64 * 1024)
                ));
            }
            Scenario::Sparse => {
                let (sparse, zst, data) = (&served[0], &served[1], &served[2]);
                println!(
                    "sparse: {} MiB with {} MiB of data (and zstd)",
                    sparse.disk_bytes / MIB,
                    data.disk_bytes / MIB
                );
                let urls = [sparse, zst, data].map(|s| format!("{base}/{}", s.name));
                let medians = contest(
                    runs,
                    &mut [
                        ("ferric-agent write-image (sparse raw)", &mut || {
                            fresh_target(&target_a, sparse.disk_bytes)?;
                            let mut c = Command::new(&agent);
                            c.args(["write-image", "--no-verify", "--url", &urls[0], "--target"])
                                .arg(&target_a);
                            timed(&mut c)
                        }),
                        ("ferric-agent write-image (sparse raw, sha256)", &mut || {
                            fresh_target(&target_a, sparse.disk_bytes)?;
                            timed(&mut agent_write(&agent, &urls[0], &sparse.sha256, &target_a))
                        }),
                        ("ferric-agent write-image (sparse zstd)", &mut || {
                            fresh_target(&target_a, sparse.disk_bytes)?;
                            timed(&mut agent_write(&agent, &urls[1], &zst.sha256, &target_a))
                        }),
                        ("curl | dd of the data alone", &mut || {
                            let _ = std::fs::remove_file(&target_b);
                            timed(&mut shell(&format!(
                                "curl -sf '{}' | dd of='{}' bs=4M oflag=direct conv=fsync \
                                 status=none iflag=fullblock",
                                urls[2],
                                target_b.display()
                            )))
                        }),
                    ],
                )?;
                let same = same_content(&target_a, &images.join(&sparse.name))?;
                let base_s = secs(medians[3].wall);
                let ratio = |i: usize| secs(medians[i].wall) / base_s;
                summary.push(format!(
                    "sparse: raw {:.2} s ({:.2}x), zstd {:.2} s ({:.2}x) vs data alone {:.2} s \
                     (target <= 1.3x: raw {}, zstd {}); raw with sha256 over all {} MiB {:.2} s \
                     ({:.2}x); last output identical to the image: {same}",
                    secs(medians[0].wall),
                    ratio(0),
                    secs(medians[2].wall),
                    ratio(2),
                    base_s,
                    verdict(ratio(0) <= 1.3),
                    verdict(ratio(2) <= 1.3),
                    sparse.disk_bytes / MIB,
                    secs(medians[1].wall),
                    ratio(1),
                ));
            }
        }
        println!();
    }
    conductor.stop();
    for f in [&target_a, &target_b, &tmp] {
        let _ = std::fs::remove_file(f);
    }
    println!("summary ({} runs each, medians):", runs);
    for line in summary {
        println!("- {line}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = match parse_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("image-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("image-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("image-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
