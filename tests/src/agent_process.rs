//! The real `ferric-agent` binary as a child process: found (and built when needed),
//! started against a fake host tree on a `127.0.0.1` port picked at run time, its output
//! captured to a log file, and killed when dropped.
//!
//! The binary is `FERRIC_AGENT_BIN` when that is set. Otherwise it is
//! `<target dir>/debug/ferric-agent`, where the target directory is the one holding the
//! running executable, and `cargo build -p ferric-agent --bin ferric-agent` is run first
//! (once per process): cargo decides whether the sources changed, and does nothing when
//! they did not.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Environment variable naming a prebuilt agent binary; no build happens when it is set.
pub const AGENT_BIN_ENV: &str = "FERRIC_AGENT_BIN";

/// The agent binary to run, building it first unless [`AGENT_BIN_ENV`] names one.
/// The build runs once per process.
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(AGENT_BIN_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{AGENT_BIN_ENV}={} is not a file", path.display());
        }
        return Ok(path);
    }
    crate::workspace_bin::workspace_binary("ferric-agent", "ferric-agent")
}

/// A TCP port on `127.0.0.1` that was free a moment ago: bound, read, released.
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// How to start the agent. [`AgentArgs::new`] fills in the flags every run needs.
#[derive(Debug, Clone)]
pub struct AgentArgs {
    pub api_url: String,
    /// The fake host tree standing for `/`. Never the real root.
    pub host_root: PathBuf,
    /// Listen and advertise port; `None` picks a free one.
    pub port: Option<u16>,
    /// More flags, appended after the standard ones (later flags win).
    pub extra: Vec<String>,
}

impl AgentArgs {
    pub fn new(api_url: impl Into<String>, host_root: impl Into<PathBuf>) -> Self {
        Self { api_url: api_url.into(), host_root: host_root.into(), port: None, extra: vec![] }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra.push(arg.into());
        self
    }
}

/// A running agent. Dropping it kills the process (by PID) and, when the thread is
/// panicking, prints the agent's log.
#[derive(Debug)]
pub struct AgentProcess {
    child: Child,
    port: u16,
    spawned_at: Instant,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
    _log_dir: tempfile::TempDir,
}

impl AgentProcess {
    /// Starts `binary` listening on `127.0.0.1` and advertising `127.0.0.1`.
    pub fn spawn(binary: &Path, args: &AgentArgs) -> anyhow::Result<Self> {
        let root = args
            .host_root
            .canonicalize()
            .with_context(|| format!("host root {}", args.host_root.display()))?;
        if root == Path::new("/") {
            bail!("refusing to run the agent against the real root filesystem");
        }
        let port = match args.port {
            Some(p) => p,
            None => free_port().context("picking a port for the agent")?,
        };
        let log_dir = tempfile::tempdir().context("creating the log directory")?;
        let log_path = log_dir.path().join("ferric-agent.log");
        let log = File::create(&log_path).context("creating the agent log")?;
        let log_err = log.try_clone().context("duplicating the agent log handle")?;
        let port_text = port.to_string();
        let mut command = Command::new(binary);
        command
            .arg("--ipa-api-url")
            .arg(&args.api_url)
            .arg("--host-root")
            .arg(&root)
            .args(["--ipa-listen-host", "127.0.0.1", "--ipa-listen-port", &port_text])
            .args(["--ipa-advertise-host", "127.0.0.1", "--ipa-advertise-port", &port_text])
            .args(&args.extra)
            .env_remove("FERRIC_LOG")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let spawned_at = Instant::now();
        let child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self { child, port, spawned_at, log_path, exit: None, _log_dir: log_dir })
    }

    /// The port the agent listens on and advertises.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When the process was started (just before the spawn call).
    pub fn spawned_at(&self) -> Instant {
        self.spawned_at
    }

    /// Everything the agent has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path.display()))
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait()?;
        }
        Ok(self.exit)
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the process (if still running) and reaps it.
    pub fn kill(&mut self) {
        if matches!(self.try_exit(), Ok(None)) {
            // `Child::kill` sends SIGKILL to this child's PID only.
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- ferric-agent (pid {}) log ----\n{}\n---- end of log ----",
                self.child.id(),
                self.log()
            );
        }
    }
}
