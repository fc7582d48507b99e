//! `log.collect_system_logs`: a gzipped tar of what an operator needs to see why a
//! deployment failed, base64-encoded for the JSON reply.
//!
//! Entries: `ferric-agent.log` (the agent's own log), `dmesg` (the kernel log from
//! `/dev/kmsg`), `cmdline`, `inventory.json`, and a few procfs files. A source that is
//! absent is left out; one that cannot be read is named in `collection-errors`, because
//! a partial archive is worth more than none when something is already wrong.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::executor::error_chain;
use crate::host::HostRoot;
use crate::inventory::InventoryError;
use ferric_shared::inventory::Inventory;

/// procfs files copied verbatim: (host path, archive name).
const PROC_FILES: [(&str, &str); 6] = [
    ("/proc/cmdline", "cmdline"),
    ("/proc/mounts", "mounts"),
    ("/proc/meminfo", "meminfo"),
    ("/proc/partitions", "partitions"),
    ("/proc/cpuinfo", "cpuinfo"),
    ("/proc/modules", "modules"),
];

/// The kernel ring buffer is at most a few MiB; this bounds a misbehaving source.
const MAX_KMSG_BYTES: usize = 16 * 1024 * 1024;

/// Why the archive could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SystemLogsError {
    #[error("writing the log archive")]
    Archive(#[source] io::Error),
}

/// Builds the archive and returns it base64-encoded.
pub fn collect(
    host: &HostRoot,
    agent_log: &[u8],
    inventory: Result<Inventory, InventoryError>,
) -> Result<String, SystemLogsError> {
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut errors = Vec::new();

    entries.push(("ferric-agent.log".to_owned(), agent_log.to_vec()));

    match read_kmsg(host) {
        Ok(Some(raw)) => entries.push(("dmesg".to_owned(), format_kmsg(&raw).into_bytes())),
        Ok(None) => {}
        Err(e) => errors.push(format!("/dev/kmsg: {e}")),
    }

    for (path, name) in PROC_FILES {
        match host.read_bytes(path) {
            Ok(data) => entries.push((name.to_owned(), data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("{path}: {e}")),
        }
    }

    match inventory.map(|inv| serde_json::to_vec_pretty(&inv)) {
        Ok(Ok(json)) => entries.push(("inventory.json".to_owned(), json)),
        Ok(Err(e)) => errors.push(format!("inventory: encoding: {e}")),
        Err(e) => errors.push(format!("inventory: {}", error_chain(&e))),
    }

    if !errors.is_empty() {
        let mut text = errors.join("\n");
        text.push('\n');
        entries.push(("collection-errors".to_owned(), text.into_bytes()));
    }

    // A pre-shared token rides on the kernel command line, which also appears in the
    // kernel log; collected logs are stored by the conductor, so it must not leak there.
    for (_, data) in &mut entries {
        redact_agent_token(data);
    }
    let archive = build_archive(&entries).map_err(SystemLogsError::Archive)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(archive))
}

/// Replaces the value of every `ipa-agent-token=` parameter with `******`.
fn redact_agent_token(data: &mut Vec<u8>) {
    const KEY: &[u8] = b"ipa-agent-token=";
    let mut out = Vec::with_capacity(data.len());
    let mut rest: &[u8] = data;
    let mut changed = false;
    while let Some(at) = rest.windows(KEY.len()).position(|w| w == KEY) {
        let value_start = at + KEY.len();
        let value_len = rest[value_start..]
            .iter()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(rest.len() - value_start);
        out.extend_from_slice(&rest[..value_start]);
        out.extend_from_slice(b"******");
        rest = &rest[value_start + value_len..];
        changed = true;
    }
    if changed {
        out.extend_from_slice(rest);
        *data = out;
    }
}

fn build_archive(entries: &[(String, Vec<u8>)]) -> io::Result<Vec<u8>> {
    let mtime =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, data.as_slice())?;
    }
    tar.into_inner()?.finish()
}

/// Reads the kernel log without blocking. On a real host `/dev/kmsg` yields one record
/// per read and `EAGAIN` once the buffer is drained; in a fake tree it is a regular file
/// that ends with EOF. `Ok(None)` when it does not exist.
fn read_kmsg(host: &HostRoot) -> io::Result<Option<Vec<u8>>> {
    let file =
        OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(host.path("/dev/kmsg"));
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    // A kmsg record is at most 8 KiB with its prefix; a smaller buffer gets EINVAL.
    let mut buf = vec![0u8; 8192];
    while out.len() < MAX_KMSG_BYTES {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // The record we were about to read was overwritten; the next read resumes
            // at the oldest record still held.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(Some(out))
}

/// Turns kmsg records (`prio,seq,usec,flags;message`) into dmesg-style lines
/// (`[    1.234567] message`). Continuation lines (` KEY=value` device properties) are
/// dropped as dmesg drops them; lines that are not records are kept as they are.
fn format_kmsg(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.starts_with(' ') {
            continue;
        }
        match parse_record(line) {
            Some((usec, message)) => {
                out.push_str(&format!(
                    "[{:5}.{:06}] {message}\n",
                    usec / 1_000_000,
                    usec % 1_000_000
                ));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn parse_record(line: &str) -> Option<(u64, &str)> {
    let (prefix, message) = line.split_once(';')?;
    let mut fields = prefix.split(',');
    let _prio: u32 = fields.next()?.parse().ok()?;
    let _seq: u64 = fields.next()?.parse().ok()?;
    let usec: u64 = fields.next()?.parse().ok()?;
    Some((usec, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_tokens_are_redacted() {
        let cases: [(&str, &str); 4] = [
            (
                "BOOTIF=aa ipa-agent-token=s3cr3t ipa-debug=1\n",
                "BOOTIF=aa ipa-agent-token=****** ipa-debug=1\n",
            ),
            ("ipa-agent-token=s3cr3t", "ipa-agent-token=******"),
            (
                "a ipa-agent-token=x\nb ipa-agent-token=y\n",
                "a ipa-agent-token=******\nb ipa-agent-token=******\n",
            ),
            ("no token here\n", "no token here\n"),
        ];
        for (input, expected) in cases {
            let mut data = input.as_bytes().to_vec();
            redact_agent_token(&mut data);
            assert_eq!(String::from_utf8(data).unwrap(), expected, "{input:?}");
        }
    }

    #[test]
    fn kmsg_records_become_dmesg_lines() {
        let raw = b"6,1,0,-;Linux version 6.1\n \
SUBSYSTEM=cpu\n4,2,1234567,-,caller=T1;eth0: link down\nnot a record\n6,x,1,-;bad seq\n";
        assert_eq!(
            format_kmsg(raw),
            "[    0.000000] Linux version 6.1\n[    1.234567] eth0: link down\n\
not a record\n6,x,1,-;bad seq\n"
        );
    }

    #[test]
    fn reads_a_fake_kmsg_file_and_tolerates_absence() {
        let dir = tempfile::tempdir().unwrap();
        let h = HostRoot::new(dir.path());
        assert_eq!(read_kmsg(&h).unwrap(), None);
        std::fs::create_dir_all(h.path("/dev")).unwrap();
        let content = "6,1,5,-;hello\n".repeat(2000);
        std::fs::write(h.path("/dev/kmsg"), &content).unwrap();
        assert_eq!(read_kmsg(&h).unwrap().unwrap(), content.as_bytes());
    }
}
