//! `ferric-agent write-image`: the agent's image pipeline run from a shell, writing one
//! image to a block device or a regular file.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use ferric_shared::image_info::checksum::UnknownHashAlgorithm;
use ferric_shared::image_info::{ChecksumSource, DigestLengthError, ExpectedDigest, HashAlgorithm};

use crate::config::Invocation;
use crate::image::pipeline::{
    self, FormatChoice, WriteError, WriteOptions, WriteReport, WriteRequest,
};
use crate::image::progress::{Progress, ProgressSnapshot};
use crate::image::sink::SinkOptions;
use crate::image::source::HttpOptions;

/// What `write-image` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteImageArgs {
    pub request: WriteRequest,
    /// Aligned writes bypass the page cache (`O_DIRECT`) unless `--buffered` was given.
    pub direct: bool,
}

/// What is wrong with the `write-image` arguments.
#[derive(Debug, thiserror::Error)]
pub enum WriteImageArgsError {
    #[error("unknown write-image flag {0:?} (see write-image --help)")]
    UnknownFlag(String),
    #[error("unexpected argument {0:?} (see write-image --help)")]
    UnexpectedArgument(String),
    #[error("flag --{0} needs a value")]
    MissingValue(String),
    #[error("--{0} is required")]
    Required(&'static str),
    #[error(
        "no checksum given: pass --checksum or --os-hash-algo/--os-hash-value, or \
         --no-verify to write an unverified image"
    )]
    NoChecksum,
    #[error("--no-verify cannot be combined with a checksum")]
    VerifyConflict,
    #[error("--os-hash-algo and --os-hash-value must be given together")]
    IncompleteOsHash,
    #[error("--os-hash-algo is not usable")]
    Algorithm(#[source] UnknownHashAlgorithm),
    #[error("--{flag} value {value:?} is neither a hex digest, a URL nor an existing file")]
    NotAChecksum { flag: &'static str, value: String },
    #[error("--os-hash-value has {len} hex digits but a {algorithm} digest has {expected}")]
    DigestLength { algorithm: HashAlgorithm, len: usize, expected: usize },
    #[error("--checksum digest is unusable")]
    ChecksumLength(#[source] DigestLengthError),
    #[error("--format {0:?} is not one of auto, raw, qcow2, gzip, xz, zstd")]
    Format(String),
}

/// The `write-image --help` text.
pub fn usage() -> String {
    "Usage: ferric-agent write-image --url URL --target PATH [OPTIONS]\n\
     \n\
     Streams a disk image to a block device or a regular file, verifying it in the same\n\
     pass. The first MiB of the target is written only after the digest matched; when\n\
     anything fails, the partition-table areas at both ends of the target are wiped.\n\
     \n\
     Options:\n  \
     --url URL\n      image location: http(s)://, file:// or a path; repeat to give fallbacks\n  \
     --target PATH\n      block device or existing regular file to write\n  \
     --checksum VALUE\n      hex digest (md5, sha256 or sha512 by length), or the URL or path\n      \
     of a checksum file listing the image's file name\n  \
     --os-hash-algo ALGO --os-hash-value VALUE\n      \
     md5, sha1, sha224, sha256, sha384 or sha512 with its hex digest\n      \
     (or a checksum-file URL); used before --checksum\n  \
     --no-verify\n      write without verifying; required when no checksum is given\n  \
     --format auto|raw|qcow2|gzip|xz|zstd\n      image format (default: auto, from the content)\n  \
     --configdrive FILE-or-URL\n      config drive: base64(gzip(ISO 9660)) in a file, or a URL\n  \
     --insecure\n      do not verify the image server's TLS certificate\n  \
     --ca-file FILE\n      CA certificates (PEM) the image server's certificate must chain to\n  \
     --buffered\n      write through the page cache instead of with O_DIRECT\n  \
     --help, -h\n      print this text\n\
     \n\
     Progress goes to stderr: a bar on a terminal, plain lines otherwise.\n"
        .to_owned()
}

/// Parses the arguments after `write-image`.
pub fn parse_invocation<I: IntoIterator<Item = String>>(
    args: I,
) -> Result<Invocation, WriteImageArgsError> {
    let mut urls = Vec::new();
    let mut target = None;
    let mut checksum = None;
    let mut os_algo = None;
    let mut os_value = None;
    let mut no_verify = false;
    let mut format = FormatChoice::Auto;
    let mut configdrive = None;
    let mut http = HttpOptions::default();
    let mut direct = true;

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| (arg == "-h").then_some("help")) else {
            return Err(WriteImageArgsError::UnexpectedArgument(arg));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (flag.to_owned(), None),
        };
        let mut value = || -> Result<String, WriteImageArgsError> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args.next().ok_or_else(|| WriteImageArgsError::MissingValue(name.clone())),
            }
        };
        match name.as_str() {
            "help" => return Ok(Invocation::Help(usage())),
            "url" => urls.push(value()?),
            "target" => target = Some(PathBuf::from(value()?)),
            "checksum" => checksum = Some(value()?),
            "os-hash-algo" => os_algo = Some(value()?),
            "os-hash-value" => os_value = Some(value()?),
            "format" => format = parse_format(&value()?)?,
            "configdrive" => configdrive = Some(configdrive_value(value()?)),
            "ca-file" => http.ca_file = Some(PathBuf::from(value()?)),
            "insecure" => http.insecure = true,
            "no-verify" => no_verify = true,
            "buffered" => direct = false,
            _ => return Err(WriteImageArgsError::UnknownFlag(arg)),
        }
    }
    if urls.is_empty() {
        return Err(WriteImageArgsError::Required("url"));
    }
    let target = target.ok_or(WriteImageArgsError::Required("target"))?;
    let checksum = checksum_source(checksum, os_algo, os_value)?;
    match (&checksum, no_verify) {
        (None, false) => return Err(WriteImageArgsError::NoChecksum),
        (Some(_), true) => return Err(WriteImageArgsError::VerifyConflict),
        _ => {}
    }
    let request = WriteRequest {
        urls,
        target,
        checksum,
        // The operator typed the digest: an MD5 one is their choice.
        md5_allowed: true,
        format,
        declared_disk_format: None,
        permitted_formats: None,
        configdrive,
        http,
    };
    Ok(Invocation::WriteImage(Box::new(WriteImageArgs { request, direct })))
}

fn parse_format(value: &str) -> Result<FormatChoice, WriteImageArgsError> {
    Ok(match value {
        "auto" => FormatChoice::Auto,
        "raw" => FormatChoice::Raw,
        "qcow2" => FormatChoice::Qcow2,
        "gzip" => FormatChoice::Gzip,
        "xz" => FormatChoice::Xz,
        "zstd" => FormatChoice::Zstd,
        other => return Err(WriteImageArgsError::Format(other.to_owned())),
    })
}

/// A config drive is given as a URL or as a file holding the base64 text; the pipeline
/// takes URLs (`file://` included) and inline text, so a plain path becomes a file URL.
fn configdrive_value(value: String) -> String {
    if value.contains("://") || value.starts_with("file:") {
        value
    } else {
        format!("file://{}", absolute(Path::new(&value)).display())
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn is_url(value: &str) -> bool {
    value.starts_with("http://") || value.starts_with("https://") || value.starts_with("file:")
}

fn hex(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| value.to_ascii_lowercase())
}

/// The `os_hash` pair first, as the agent does for `image_info`; then `--checksum`.
fn checksum_source(
    checksum: Option<String>,
    os_algo: Option<String>,
    os_value: Option<String>,
) -> Result<Option<ChecksumSource>, WriteImageArgsError> {
    match (os_algo, os_value) {
        (Some(algo), Some(value)) => {
            let algorithm: HashAlgorithm =
                algo.trim().to_ascii_lowercase().parse().map_err(WriteImageArgsError::Algorithm)?;
            if let Some(hex) = hex(&value) {
                if hex.len() != algorithm.hex_len() {
                    return Err(WriteImageArgsError::DigestLength {
                        algorithm,
                        len: hex.len(),
                        expected: algorithm.hex_len(),
                    });
                }
                return Ok(Some(ChecksumSource::Digest(ExpectedDigest { algorithm, hex })));
            }
            let url = checksum_file_url("os-hash-value", value)?;
            return Ok(Some(ChecksumSource::File { url, algorithm: Some(algorithm) }));
        }
        (None, None) => {}
        _ => return Err(WriteImageArgsError::IncompleteOsHash),
    }
    let Some(value) = checksum else {
        return Ok(None);
    };
    if let Some(hex) = hex(&value) {
        let algorithm = HashAlgorithm::from_digest_len(hex.len(), true)
            .map_err(WriteImageArgsError::ChecksumLength)?;
        return Ok(Some(ChecksumSource::Digest(ExpectedDigest { algorithm, hex })));
    }
    let url = checksum_file_url("checksum", value)?;
    Ok(Some(ChecksumSource::File { url, algorithm: None }))
}

fn checksum_file_url(flag: &'static str, value: String) -> Result<String, WriteImageArgsError> {
    if is_url(&value) {
        Ok(value)
    } else if Path::new(&value).is_file() {
        Ok(absolute(Path::new(&value)).display().to_string())
    } else {
        Err(WriteImageArgsError::NotAChecksum { flag, value })
    }
}

/// Runs the write, showing progress on stderr; returns the one-line summary to print.
pub fn run(args: &WriteImageArgs) -> Result<WriteReport, WriteError> {
    let progress = Progress::new();
    let options = WriteOptions {
        sink: SinkOptions { direct: args.direct, ..SinkOptions::default() },
        ..WriteOptions::default()
    };
    let terminal = std::io::stderr().is_terminal();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let shown = progress.clone();
    let display = std::thread::Builder::new().name("progress".into()).spawn(move || {
        let interval = if terminal { Duration::from_millis(200) } else { Duration::from_secs(2) };
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
    let result = pipeline::write_image_with(&args.request, &progress, &options);
    drop(stop_tx);
    if let Ok(handle) = display {
        let _ = handle.join();
    }
    result
}

/// One progress line; with `bar`, a bar first.
pub fn progress_line(s: &ProgressSnapshot, bar: bool) -> String {
    let mut line = String::new();
    let fraction = s.bytes_total.filter(|t| *t > 0).map(|t| s.bytes_done as f64 / t as f64);
    if bar {
        const WIDTH: usize = 30;
        let filled = fraction.map_or(0, |f| ((f.clamp(0.0, 1.0)) * WIDTH as f64) as usize);
        line.push('[');
        line.push_str(&"#".repeat(filled));
        line.push_str(&"-".repeat(WIDTH - filled));
        line.push_str("] ");
    }
    line.push_str(s.phase);
    line.push(' ');
    line.push_str(&human_bytes(s.bytes_done));
    if let Some(total) = s.bytes_total {
        line.push_str(&format!(" of {}", human_bytes(total)));
    }
    if let Some(f) = fraction {
        line.push_str(&format!(" ({:.0}%)", f * 100.0));
    }
    line.push_str(&format!(", {}/s", human_bytes(s.rate_bytes_per_second as u64)));
    if let Some(eta) = s.eta_seconds.filter(|_| s.phase == "downloading") {
        line.push_str(&format!(", ETA {}s", eta.round()));
    }
    line
}

/// The summary printed on success.
pub fn summary(report: &WriteReport, target: &Path) -> String {
    let verified = match &report.verified {
        Some(v) => format!("{} verified ({})", v.algorithm, v.hex),
        None => "NOT verified".to_owned(),
    };
    format!(
        "wrote {} {} image from {} to {}: {} written, {} zeroed; {}",
        human_bytes(report.image_size),
        report.format,
        report.url,
        target.display(),
        human_bytes(report.bytes_written),
        human_bytes(report.bytes_zeroed),
        verified
    )
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

    fn parse(args: &[&str]) -> Result<Invocation, WriteImageArgsError> {
        parse_invocation(args.iter().map(|a| a.to_string()))
    }

    fn request(args: &[&str]) -> WriteRequest {
        match parse(args).unwrap() {
            Invocation::WriteImage(a) => a.request,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn full_command_line() {
        let r = request(&[
            "--url",
            "http://h/a.qcow2",
            "--url=file:///b.qcow2",
            "--target",
            "/dev/sdz",
            "--checksum",
            &SHA256.to_uppercase(),
            "--format",
            "qcow2",
            "--insecure",
            "--ca-file",
            "/ca.pem",
            "--configdrive",
            "http://h/cd",
        ]);
        assert_eq!(r.urls, ["http://h/a.qcow2", "file:///b.qcow2"]);
        assert_eq!(r.target, PathBuf::from("/dev/sdz"));
        assert_eq!(
            r.checksum,
            Some(ChecksumSource::Digest(ExpectedDigest {
                algorithm: HashAlgorithm::Sha256,
                hex: SHA256.into()
            }))
        );
        assert_eq!(r.format, FormatChoice::Qcow2);
        assert!(r.http.insecure);
        assert_eq!(r.http.ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(r.configdrive.as_deref(), Some("http://h/cd"));
    }

    #[test]
    fn direct_io_unless_buffered() {
        let direct = |extra: &[&str]| {
            let mut args = vec!["--url", "/i", "--target", "/t", "--no-verify"];
            args.extend_from_slice(extra);
            match parse(&args).unwrap() {
                Invocation::WriteImage(a) => a.direct,
                other => panic!("{other:?}"),
            }
        };
        assert!(direct(&[]));
        assert!(!direct(&["--buffered"]));
    }

    #[test]
    fn checksum_forms() {
        let base = ["--url", "/i.raw", "--target", "/t"];
        let with = |extra: &[&str]| {
            let mut args = base.to_vec();
            args.extend_from_slice(extra);
            request(&args).checksum
        };
        let digest = |algorithm, hex: &str| {
            Some(ChecksumSource::Digest(ExpectedDigest { algorithm, hex: hex.into() }))
        };
        assert_eq!(with(&["--checksum", MD5]), digest(HashAlgorithm::Md5, MD5));
        assert_eq!(
            with(&["--checksum", "https://h/SHA256SUMS"]),
            Some(ChecksumSource::File { url: "https://h/SHA256SUMS".into(), algorithm: None })
        );
        let sha1 = "a9993e364706816aba3e25717850c26c9cd0d89d";
        assert_eq!(
            with(&["--os-hash-algo", "SHA1", "--os-hash-value", sha1, "--checksum", MD5]),
            digest(HashAlgorithm::Sha1, sha1)
        );
        assert_eq!(
            with(&["--os-hash-algo", "sha512", "--os-hash-value", "file:///sums"]),
            Some(ChecksumSource::File {
                url: "file:///sums".into(),
                algorithm: Some(HashAlgorithm::Sha512)
            })
        );
        let dir = tempfile::tempdir().unwrap();
        let sums = dir.path().join("SUMS");
        std::fs::write(&sums, "x").unwrap();
        assert_eq!(
            with(&["--checksum", sums.to_str().unwrap()]),
            Some(ChecksumSource::File { url: sums.display().to_string(), algorithm: None })
        );
        assert_eq!(with(&["--no-verify"]), None);
    }

    #[test]
    fn refused_command_lines() {
        use WriteImageArgsError as E;
        type Check = fn(&WriteImageArgsError) -> bool;
        let cases: Vec<(Vec<&str>, Check)> = vec![
            (vec!["--target", "/t", "--no-verify"], |e| matches!(e, E::Required("url"))),
            (vec!["--url", "/i", "--no-verify"], |e| matches!(e, E::Required("target"))),
            (vec!["--url", "/i", "--target", "/t"], |e| matches!(e, E::NoChecksum)),
            (vec!["--url", "/i", "--target", "/t", "--no-verify", "--checksum", SHA256], |e| {
                matches!(e, E::VerifyConflict)
            }),
            (vec!["--url", "/i", "--target", "/t", "--os-hash-algo", "sha256"], |e| {
                matches!(e, E::IncompleteOsHash)
            }),
            (
                vec![
                    "--url",
                    "/i",
                    "--target",
                    "/t",
                    "--os-hash-algo",
                    "crc",
                    "--os-hash-value",
                    "ab",
                ],
                |e| matches!(e, E::Algorithm(_)),
            ),
            (
                vec![
                    "--url",
                    "/i",
                    "--target",
                    "/t",
                    "--os-hash-algo",
                    "sha256",
                    "--os-hash-value",
                    MD5,
                ],
                |e| matches!(e, E::DigestLength { len: 32, expected: 64, .. }),
            ),
            (vec!["--url", "/i", "--target", "/t", "--checksum", "abc"], |e| {
                matches!(e, E::ChecksumLength(DigestLengthError::UnknownLength(3)))
            }),
            (vec!["--url", "/i", "--target", "/t", "--checksum", "/no/such/sums"], |e| {
                matches!(e, E::NotAChecksum { flag: "checksum", .. })
            }),
            (
                vec!["--url", "/i", "--target", "/t", "--format", "vmdk"],
                |e| matches!(e, E::Format(f) if f == "vmdk"),
            ),
            (vec!["--url"], |e| matches!(e, E::MissingValue(f) if f == "url")),
            (vec!["--bogus"], |e| matches!(e, E::UnknownFlag(f) if f == "--bogus")),
            (vec!["stray"], |e| matches!(e, E::UnexpectedArgument(a) if a == "stray")),
        ];
        for (args, check) in cases {
            let err = parse(&args).unwrap_err();
            assert!(check(&err), "{args:?}: {err:?}");
        }
    }

    #[test]
    fn help_mentions_no_verify() {
        match parse(&["--url", "x", "-h"]).unwrap() {
            Invocation::Help(text) => {
                assert_eq!(text, usage());
                assert!(text.contains("--no-verify"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn progress_lines() {
        let snapshot = ProgressSnapshot {
            phase: "downloading",
            bytes_done: 512 << 20,
            bytes_total: Some(2 << 30),
            elapsed_seconds: 4.0,
            rate_bytes_per_second: 128.0 * 1048576.0,
            eta_seconds: Some(12.0),
        };
        assert_eq!(
            progress_line(&snapshot, false),
            "downloading 512.0 MiB of 2.0 GiB (25%), 128.0 MiB/s, ETA 12s"
        );
        let bar = progress_line(&snapshot, true);
        assert!(bar.starts_with("[#######-----------------------] downloading"), "{bar}");
        let unknown = ProgressSnapshot { bytes_total: None, eta_seconds: None, ..snapshot };
        assert_eq!(progress_line(&unknown, false), "downloading 512.0 MiB, 128.0 MiB/s");
        assert_eq!(human_bytes(1023), "1023 B");
    }
}
