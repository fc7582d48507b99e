//! The real `ferric conductor` binary as a child process on a free `127.0.0.1` port, for
//! benchmarks: started on a data directory, waited for, measured (`/proc/<pid>/status`),
//! and stopped with SIGTERM (then SIGKILL) when dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long the conductor may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the conductor may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The conductor child; stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct ConductorProcess {
    child: Child,
    log: PathBuf,
    base: String,
}

impl ConductorProcess {
    /// Starts `ferric conductor --data-dir <data_dir>` on a free port.
    pub fn start(ferric: &Path, data_dir: &Path) -> anyhow::Result<ConductorProcess> {
        Self::start_with_config(ferric, data_dir, None)
    }

    /// Starts `ferric conductor [--config <config>] --data-dir <data_dir>` on a free port.
    pub fn start_with_config(
        ferric: &Path,
        data_dir: &Path,
        config: Option<&Path>,
    ) -> anyhow::Result<ConductorProcess> {
        let port = crate::agent_process::free_port().context("picking a free port")?;
        let log = data_dir.join("conductor.log");
        let log_file = std::fs::File::create(&log).context("creating the conductor log")?;
        let mut command = Command::new(ferric);
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent. The
        // conductor gets SIGTERM when the thread that started it ends, so even an aborting
        // benchmark leaves no conductor behind.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.arg("conductor");
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let child = command
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", ferric.display()))?;
        Ok(ConductorProcess { child, log, base: format!("http://127.0.0.1:{port}") })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the conductor has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of the conductor's log, for error messages.
    pub fn log_tail(&self) -> String {
        self.log_lines(20)
    }

    /// The last `count` lines of the conductor's log.
    pub fn log_lines(&self, count: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(count)..].join("\n")
    }

    /// The conductor's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Waits until `GET /v1` succeeds, failing with the log when the conductor exits or
    /// does not answer in time.
    pub async fn wait_ready(&mut self, client: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.exited() {
                bail!("the conductor exited with {status}:\n{}", self.log_tail());
            }
            if let Ok(reply) = client.get(format!("{}/v1", self.base)).send().await {
                if reply.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the conductor did not answer within {START_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) with this process's own child's pid; no memory involved.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ConductorProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A field of /proc/<pid>/status in KiB (`VmHWM`, `VmRSS`).
pub fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    let kib = value.trim().trim_end_matches("kB").trim();
    kib.parse().with_context(|| format!("{field} {kib:?}"))
}
