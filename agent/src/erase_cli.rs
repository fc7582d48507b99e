//! `ferric-agent erase`: the erase steps run from a shell over named devices (or regular
//! files standing in for disks), with a progress display and the per-disk report the
//! steps return.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::erase::full::{self, FullEraseOptions};
use crate::erase::metadata;
use crate::erase::report::{DiskReport, EraseMethod, Verification};
use crate::host::HostRoot;
use crate::image::progress::Progress;
use crate::write_image_cli::progress_line;

/// Which erase to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraseMode {
    /// Signatures and partition tables only (`erase_devices_metadata`).
    Metadata,
    /// The whole disk, fastest verified method (`erase_devices`).
    Full,
    /// Hardware erase where the disk has one, metadata elsewhere
    /// (`erase_devices_express`).
    Express,
}

/// What `erase` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EraseArgs {
    pub mode: EraseMode,
    pub devices: Vec<PathBuf>,
    /// Print the reports as JSON (keyed by device) instead of a table.
    pub json: bool,
    pub options: FullEraseOptions,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EraseCommand {
    Help(String),
    Erase(EraseArgs),
}

/// What is wrong with the `erase` arguments.
#[derive(Debug, thiserror::Error)]
pub enum EraseArgsError {
    #[error("unknown erase flag {0:?} (see erase --help)")]
    UnknownFlag(String),
    #[error("flag --{0} needs a value")]
    MissingValue(String),
    #[error("--iterations value {0:?} is not a non-negative integer")]
    Iterations(String),
    #[error("only one of --metadata, --full and --express may be given")]
    Modes,
    #[error("no device given")]
    NoDevice,
}

/// The `erase --help` text.
pub fn usage() -> String {
    "Usage: ferric-agent erase [--metadata|--full|--express] [OPTIONS] DEVICE...\n\
     \n\
     Erases each DEVICE (a block device, or a regular file standing in for a disk) and\n\
     prints a per-disk report. Devices that are mounted, hold swap, are used by another\n\
     device (LVM, RAID) or carry the running system are refused.\n\
     \n\
     Modes:\n  \
     --full      the whole disk with the fastest verified method (default): NVMe Format\n              \
     secure erase, ATA security erase, secure discard (with --discard), else\n              \
     zero-fill; then samples are read back\n  \
     --metadata  remove every signature and partition table, leave the data\n  \
     --express   hardware erase where the disk has one, metadata erase elsewhere\n\
     \n\
     Options:\n  \
     --iterations N\n      random passes before the zero pass (default 0: one zero-fill pass)\n  \
     --no-zeroize\n      no final zero pass (needs --iterations 1 or more; nothing to verify)\n  \
     --discard\n      try a verified secure discard before overwriting\n  \
     --no-nvme-secure-erase, --no-ata-secure-erase\n      skip that hardware erase\n  \
     --continue-if-secure-erase-failed\n      overwrite when a hardware erase fails\n  \
     --json\n      print the reports as JSON keyed by device\n  \
     --help, -h\n      print this text\n\
     \n\
     Progress goes to stderr: a bar on a terminal, plain lines otherwise.\n\
     The exit status is non-zero when any device failed.\n"
        .to_owned()
}

/// Parses the arguments after `erase`.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<EraseCommand, EraseArgsError> {
    let mut mode = None;
    let mut devices = Vec::new();
    let mut json = false;
    // Standalone use defaults to one zero pass: the fastest verified overwrite.
    let mut options = FullEraseOptions { iterations: 0, ..FullEraseOptions::default() };
    let mut args = args.into_iter();
    let set_mode = |m: EraseMode, current: &mut Option<EraseMode>| {
        if current.is_some_and(|c| c != m) {
            return Err(EraseArgsError::Modes);
        }
        *current = Some(m);
        Ok(())
    };
    let mut only_devices = false;
    while let Some(arg) = args.next() {
        if only_devices || !arg.starts_with('-') || arg == "-" {
            devices.push(PathBuf::from(arg));
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        match name.as_str() {
            "--" => only_devices = true,
            "--help" | "-h" => return Ok(EraseCommand::Help(usage())),
            "--metadata" => set_mode(EraseMode::Metadata, &mut mode)?,
            "--full" => set_mode(EraseMode::Full, &mut mode)?,
            "--express" => set_mode(EraseMode::Express, &mut mode)?,
            "--json" => json = true,
            "--iterations" => {
                let value = match inline {
                    Some(v) => v,
                    None => args
                        .next()
                        .ok_or_else(|| EraseArgsError::MissingValue("iterations".into()))?,
                };
                options.iterations =
                    value.trim().parse().map_err(|_| EraseArgsError::Iterations(value))?;
            }
            "--no-zeroize" => options.zeroize = false,
            "--discard" => options.enable_discard_erase = true,
            "--no-nvme-secure-erase" => options.enable_nvme_secure_erase = false,
            "--no-ata-secure-erase" => options.enable_ata_secure_erase = false,
            "--continue-if-secure-erase-failed" => options.continue_if_secure_erase_failed = true,
            _ => return Err(EraseArgsError::UnknownFlag(arg)),
        }
    }
    if devices.is_empty() {
        return Err(EraseArgsError::NoDevice);
    }
    Ok(EraseCommand::Erase(EraseArgs {
        mode: mode.unwrap_or(EraseMode::Full),
        devices,
        json,
        options,
    }))
}

/// Why a device was not erased.
#[derive(Debug, thiserror::Error)]
pub enum EraseCliError {
    #[error("{} does not exist or cannot be read", .0.display())]
    Missing(PathBuf, #[source] std::io::Error),
    #[error("{} is neither a block device nor a regular file", .0.display())]
    NotADisk(PathBuf),
    #[error("{} is in use: {reason}", .path.display())]
    InUse { path: PathBuf, reason: String },
    #[error("full erase failed")]
    Full(#[from] full::FullEraseError),
    #[error("metadata erase failed")]
    Metadata(#[from] metadata::MetadataEraseError),
}

/// One device's outcome.
#[derive(Debug)]
pub struct DeviceOutcome {
    pub device: String,
    pub result: Result<DiskReport, EraseCliError>,
}

/// A block device's `major:minor`, and those of its partitions (from sysfs).
fn device_numbers(host: &HostRoot, rdev: u64) -> Vec<String> {
    let major = libc::major(rdev);
    let minor = libc::minor(rdev);
    let own = format!("{major}:{minor}");
    let mut out = vec![own.clone()];
    let dir = format!("/sys/dev/block/{own}");
    for entry in host.list_dir(&dir).unwrap_or_default() {
        let sub = format!("{dir}/{entry}");
        if host.exists(format!("{sub}/partition")) {
            if let Some(dev) = host.read_attr(format!("{sub}/dev")) {
                out.push(dev);
            }
        }
    }
    out
}

/// Refuses a block device that the running system uses: mounted (itself or a
/// partition), active swap, claimed by another block device (`holders/`), or holding `/`.
pub fn check_not_in_use(host: &HostRoot, path: &Path) -> Result<(), EraseCliError> {
    let meta = std::fs::metadata(path).map_err(|e| EraseCliError::Missing(path.to_owned(), e))?;
    if meta.file_type().is_file() {
        return Ok(());
    }
    if !meta.file_type().is_block_device() {
        return Err(EraseCliError::NotADisk(path.to_owned()));
    }
    let in_use = |reason: String| EraseCliError::InUse { path: path.to_owned(), reason };
    let numbers = device_numbers(host, meta.rdev());
    let root = std::fs::metadata(host.path("/")).map(|m| m.dev()).ok();
    if let Some(root) = root {
        let root = format!("{}:{}", libc::major(root), libc::minor(root));
        if numbers.contains(&root) {
            return Err(in_use("it holds the running system's root filesystem".to_owned()));
        }
    }
    let mountinfo = host.read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        let mut fields = line.split_whitespace();
        let (Some(dev), Some(mount_point)) = (fields.nth(2), fields.nth(1)) else {
            continue;
        };
        if numbers.iter().any(|n| n == dev) {
            return Err(in_use(format!("device {dev} is mounted on {mount_point}")));
        }
    }
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let swaps = host.read_to_string("/proc/swaps").unwrap_or_default();
    for line in swaps.lines().skip(1) {
        let Some(swap) = line.split_whitespace().next() else { continue };
        let swap = std::fs::canonicalize(host.path(swap)).unwrap_or_else(|_| swap.into());
        let same = std::fs::metadata(&swap).map(|m| m.rdev()).ok();
        if swap == canonical || same.is_some_and(|r| numbers.contains(&rdev_text(r))) {
            return Err(in_use(format!("{} is active swap", swap.display())));
        }
    }
    for number in &numbers {
        let holders = host.list_dir(format!("/sys/dev/block/{number}/holders"));
        if let Some(holder) = holders.unwrap_or_default().first() {
            return Err(in_use(format!("device {number} is used by {holder}")));
        }
    }
    Ok(())
}

fn rdev_text(rdev: u64) -> String {
    format!("{}:{}", libc::major(rdev), libc::minor(rdev))
}

/// Erases one device in `mode`, reporting progress to `progress`.
pub fn erase_one(
    host: &HostRoot,
    mode: EraseMode,
    path: &Path,
    options: &FullEraseOptions,
    progress: &Progress,
) -> Result<DiskReport, EraseCliError> {
    check_not_in_use(host, path)?;
    let name = path.display().to_string();
    let report_progress = |done: u64, total: u64| {
        progress.set_total(total);
        progress.set_done(done);
    };
    match mode {
        EraseMode::Full => {
            progress.set_phase("erasing");
            Ok(full::erase_disk(&name, path, options, &report_progress)?)
        }
        EraseMode::Express => {
            progress.set_phase("hardware erase");
            if let Some(report) = full::express_erase_disk(&name, path, options, &report_progress)?
            {
                return Ok(report);
            }
            progress.set_phase("metadata erase");
            metadata_report(&name, path)
        }
        EraseMode::Metadata => {
            progress.set_phase("metadata erase");
            metadata_report(&name, path)
        }
    }
}

fn metadata_report(name: &str, path: &Path) -> Result<DiskReport, EraseCliError> {
    let started = Instant::now();
    let outcome = metadata::erase_path(path)?;
    let mut fallbacks = Vec::new();
    if let Some(e) = &outcome.reread_error {
        fallbacks.push(format!("re-reading the partition table failed: {e}"));
    }
    Ok(DiskReport {
        device: name.to_owned(),
        method: EraseMethod::Metadata,
        duration_s: started.elapsed().as_secs_f64(),
        bytes: outcome.bytes_zeroed,
        passes: 1,
        verification: Verification::Verified {
            samples: u32::try_from(outcome.removed.len()).unwrap_or(u32::MAX),
            bytes_checked: outcome.bytes_verified,
        },
        fallbacks,
    })
}

/// Erases every device in turn, showing progress on stderr.
pub fn run(host: &HostRoot, args: &EraseArgs) -> Vec<DeviceOutcome> {
    let terminal = std::io::stderr().is_terminal();
    let mut outcomes = Vec::new();
    for path in &args.devices {
        let progress = Progress::new();
        eprintln!("erasing {} ({:?})", path.display(), args.mode);
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let shown = progress.clone();
        let display = std::thread::Builder::new().name("progress".into()).spawn(move || {
            let interval =
                if terminal { Duration::from_millis(200) } else { Duration::from_secs(2) };
            let mut stderr = std::io::stderr();
            loop {
                let stopped =
                    !matches!(stop_rx.recv_timeout(interval), Err(mpsc::RecvTimeoutError::Timeout));
                let line = progress_line(&shown.snapshot(), terminal);
                let _ = if terminal {
                    write!(stderr, "\r{line}\x1b[K{}", if stopped { "\n" } else { "" })
                } else {
                    writeln!(stderr, "{line}")
                };
                if stopped {
                    break;
                }
            }
        });
        let result = erase_one(host, args.mode, path, &args.options, &progress);
        drop(stop_tx);
        if let Ok(handle) = display {
            let _ = handle.join();
        }
        outcomes.push(DeviceOutcome { device: path.display().to_string(), result });
    }
    outcomes
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn method_name(m: EraseMethod) -> String {
    serde_json::to_value(m).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn verification_text(v: &Verification) -> String {
    match v {
        Verification::Verified { samples, bytes_checked } => {
            format!("verified ({samples} samples, {bytes_checked} bytes)")
        }
        Verification::NotApplicable { reason } => format!("not applicable: {reason}"),
        Verification::Failed { offset, detail } => format!("FAILED at byte {offset}: {detail}"),
    }
}

/// The reports as a table, one line per device (plus its fallbacks).
pub fn table(outcomes: &[DeviceOutcome]) -> String {
    let width = outcomes.iter().map(|o| o.device.len()).max().unwrap_or(6).max(6);
    let mut out = format!(
        "{:<width$}  {:<28}  {:>14}  {:>6}  {:>9}  VERIFICATION\n",
        "DEVICE", "METHOD", "BYTES", "PASSES", "SECONDS"
    );
    for o in outcomes {
        match &o.result {
            Ok(r) => {
                out.push_str(&format!(
                    "{:<width$}  {:<28}  {:>14}  {:>6}  {:>9.2}  {}\n",
                    o.device,
                    method_name(r.method),
                    r.bytes,
                    r.passes,
                    r.duration_s,
                    verification_text(&r.verification)
                ));
                for f in &r.fallbacks {
                    out.push_str(&format!("{:<width$}    passed over: {f}\n", ""));
                }
            }
            Err(e) => out.push_str(&format!("{:<width$}  ERROR: {}\n", o.device, chain(e))),
        }
    }
    out
}

/// The reports as JSON keyed by device; a failed device has `{"error": "..."}`.
pub fn to_json(outcomes: &[DeviceOutcome]) -> Value {
    let mut map = serde_json::Map::new();
    for o in outcomes {
        let value = match &o.result {
            Ok(r) => serde_json::to_value(r).unwrap_or_else(|e| json!({"error": e.to_string()})),
            Err(e) => json!({"error": chain(e)}),
        };
        map.insert(o.device.clone(), value);
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<EraseCommand, EraseArgsError> {
        parse_args(args.iter().map(|a| a.to_string()))
    }

    fn erase(args: &[&str]) -> EraseArgs {
        match parse(args).unwrap() {
            EraseCommand::Erase(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn modes_and_defaults() {
        let a = erase(&["/dev/sdz"]);
        assert_eq!(a.mode, EraseMode::Full);
        assert_eq!(a.devices, [PathBuf::from("/dev/sdz")]);
        assert_eq!((a.options.iterations, a.options.zeroize), (0, true));
        assert!(!a.json);
        assert_eq!(erase(&["--metadata", "a", "b"]).mode, EraseMode::Metadata);
        assert_eq!(erase(&["a", "--express"]).mode, EraseMode::Express);
        assert_eq!(erase(&["--full", "--full", "a"]).mode, EraseMode::Full);
        assert!(matches!(parse(&["--full", "--metadata", "a"]), Err(EraseArgsError::Modes)));
        assert!(matches!(parse(&["--full"]), Err(EraseArgsError::NoDevice)));
        assert!(matches!(parse(&["--help"]), Ok(EraseCommand::Help(_))));
        assert!(matches!(parse(&["--bogus", "a"]), Err(EraseArgsError::UnknownFlag(_))));
        assert_eq!(erase(&["--", "--odd-name"]).devices, [PathBuf::from("--odd-name")]);
    }

    #[test]
    fn option_flags() {
        let a = erase(&[
            "--iterations=2",
            "--no-zeroize",
            "--discard",
            "--no-nvme-secure-erase",
            "--no-ata-secure-erase",
            "--continue-if-secure-erase-failed",
            "--json",
            "d",
        ]);
        assert_eq!(
            a.options,
            FullEraseOptions {
                iterations: 2,
                zeroize: false,
                continue_if_secure_erase_failed: true,
                enable_nvme_secure_erase: false,
                enable_ata_secure_erase: false,
                enable_discard_erase: true,
            }
        );
        assert!(a.json);
        assert_eq!(erase(&["--iterations", "3", "d"]).options.iterations, 3);
        assert!(matches!(parse(&["--iterations", "x", "d"]), Err(EraseArgsError::Iterations(_))));
        assert!(matches!(parse(&["--iterations"]), Err(EraseArgsError::MissingValue(_))));
    }

    #[test]
    fn table_and_json_show_reports_and_errors() {
        let outcomes = vec![
            DeviceOutcome {
                device: "/dev/loop7".into(),
                result: Ok(DiskReport {
                    device: "/dev/loop7".into(),
                    method: EraseMethod::ZeroFill,
                    duration_s: 1.5,
                    bytes: 1 << 30,
                    passes: 1,
                    verification: Verification::Verified { samples: 258, bytes_checked: 9 },
                    fallbacks: vec!["secure discard: not enabled".into()],
                }),
            },
            DeviceOutcome {
                device: "/x".into(),
                result: Err(EraseCliError::NotADisk("/x".into())),
            },
        ];
        let t = table(&outcomes);
        assert!(t.contains("zero_fill") && t.contains("1073741824"), "{t}");
        assert!(t.contains("verified (258 samples"), "{t}");
        assert!(t.contains("passed over: secure discard: not enabled"), "{t}");
        assert!(t.contains("/x") && t.contains("ERROR: /x is neither"), "{t}");
        let j = to_json(&outcomes);
        assert_eq!(j["/dev/loop7"]["method"], "zero_fill");
        assert_eq!(j["/dev/loop7"]["verification"]["outcome"], "verified");
        assert!(j["/x"]["error"].as_str().unwrap().contains("neither"));
    }

    #[test]
    fn regular_files_pass_the_in_use_check_and_directories_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let host = HostRoot::new("/");
        check_not_in_use(&host, &file).unwrap();
        assert!(matches!(check_not_in_use(&host, dir.path()), Err(EraseCliError::NotADisk(_))));
        assert!(matches!(
            check_not_in_use(&host, &dir.path().join("none")),
            Err(EraseCliError::Missing(..))
        ));
    }
}
